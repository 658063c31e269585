//! The `metrics` table: one row per data point, all five OTLP point types in one wide table.
//!
//! ```text
//!  ExportMetricsServiceRequest
//!   └ ResourceMetrics ─ resource ───────────────┐
//!      └ ScopeMetrics ─ scope ──────────────────┤ repeated on every row
//!         └ Metric ─ name, unit, type, … ───────┤
//!            └ data point ── validate ─┬─ ok ─▶ one row (+ series_id)
//!                                      └─ bad ▶ Converted::rejected
//! ```
//!
//! Columns that do not apply to a point type are null:
//!
//! | column                                   | gauge/sum | histogram | exp. histogram | summary |
//! |------------------------------------------|-----------|-----------|----------------|---------|
//! | `value_double` / `value_int`             | one of    |           |                |         |
//! | `count`, `sum`                           |           | ✓ (sum optional) | ✓ (sum optional) | ✓ |
//! | `min`, `max`                             |           | optional  | optional       |         |
//! | `bucket_counts`, `explicit_bounds`       |           | ✓         |                |         |
//! | `exp_*`                                  |           |           | ✓ (offset/counts null when the buckets message is absent) | |
//! | `quantiles`                              |           |           |                | ✓       |
//! | `exemplars` (empty list when none)       | ✓         | ✓         | ✓              | (empty) |
//!
//! `aggregation_temporality` is set for sums and both histograms, `is_monotonic` for sums;
//! `start_time` is null when the point has none (0). A `Metric` with zero data points (or with
//! no data at all) stores nothing and is not counted as rejected: there is nothing to reject.
//!
//! **Validation.** A point is rejected when its metric name is empty, its time, start time or
//! an exemplar's time is above `i64::MAX` ns, or an exemplar's trace id / span id is neither
//! empty nor 16 / 8 bytes long. As for spans, a request whose repeated attributes (resource,
//! scope, metric metadata on every row) would exceed 8 388 608 map entries is rejected whole.
//!
//! **`series_id`** identifies a series: a stable 64-bit hash of the metric name, the resource
//! attributes, the scope name and version and the point attributes (see [`series_id`]).

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, BooleanArray, BooleanBuilder, FixedSizeBinaryArray, Float64Array,
    Float64Builder, Int8Array, Int8Builder, Int32Array, Int32Builder, Int64Array, Int64Builder,
    ListArray, ListBuilder, MapArray, RecordBatch, StringArray, StringBuilder,
    StringDictionaryBuilder, StructArray, TimestampNanosecondArray, TimestampNanosecondBuilder,
    UInt32Array, UInt32Builder, UInt64Array, UInt64Builder,
};
use arrow::datatypes::{DataType, Field, Fields, Int32Type, Schema};
use arrow::error::ArrowError;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};

use crate::arrow_util::{
    DictStr, IdBuilder, InternedDict, ListOffsets, Rejections, dict_type, downcast, finish_batch,
    list_item, list_type, opt_str, str_or_empty, table_column, ts_type,
};
use crate::attributes::{AttrsBuilder, AttrsReader, map_type, types_type};
use crate::columns::exemplar as excol;
use crate::columns::*;
use crate::resource_scope::{
    self, Grouper, Origin, ResourceScopeBuilder, ResourceScopeColumns, ResourceScopeReader, Sizes,
    TOO_MANY_REPEATED,
};
use crate::{Converted, Error, Result, Table};

/// `metric_type` values.
pub mod metric_type {
    /// Gauge.
    pub const GAUGE: i8 = 1;
    /// Sum.
    pub const SUM: i8 = 2;
    /// Explicit-bucket histogram.
    pub const HISTOGRAM: i8 = 3;
    /// Exponential histogram.
    pub const EXPONENTIAL_HISTOGRAM: i8 = 4;
    /// Summary.
    pub const SUMMARY: i8 = 5;
}

pub(crate) const EMPTY_NAME: &str = "empty metric name";
pub(crate) const BAD_TIME: &str =
    "timestamp out of range (must be below 2^63 nanoseconds since 1970)";
const BAD_EXEMPLAR: &str =
    "invalid exemplar (trace_id must be empty or 16 bytes, span_id empty or 8 bytes)";

fn quantile_fields() -> Fields {
    Fields::from(vec![
        Field::new(quantile::QUANTILE, DataType::Float64, false),
        Field::new(quantile::VALUE, DataType::Float64, false),
    ])
}

fn exemplar_fields() -> Fields {
    Fields::from(vec![
        Field::new(excol::TIME, ts_type(), false),
        Field::new(excol::VALUE_DOUBLE, DataType::Float64, true),
        Field::new(excol::VALUE_INT, DataType::Int64, true),
        Field::new(excol::SPAN_ID, DataType::FixedSizeBinary(8), true),
        Field::new(excol::TRACE_ID, DataType::FixedSizeBinary(16), true),
        Field::new(excol::FILTERED_ATTRIBUTES, map_type(), false),
        Field::new(excol::FILTERED_ATTRIBUTE_TYPES, types_type(), true),
    ])
}

/// The table schema; use [`Table::schema`] (cached) rather than calling this.
pub(crate) fn schema() -> Schema {
    use DataType::*;
    let mut fields = vec![
        Field::new(METRIC_NAME, dict_type(), false),
        Field::new(METRIC_DESCRIPTION, Utf8, true),
        Field::new(METRIC_UNIT, Utf8, true),
        Field::new(METRIC_TYPE, Int8, false),
        Field::new(AGGREGATION_TEMPORALITY, Int8, true),
        Field::new(IS_MONOTONIC, Boolean, true),
        Field::new(METRIC_METADATA, map_type(), false),
        Field::new(METRIC_METADATA_TYPES, types_type(), true),
        Field::new(SERVICE_NAME, dict_type(), false),
        Field::new(SERIES_ID, UInt64, false),
    ];
    fields.extend(resource_scope::fields());
    fields.extend([
        Field::new(ATTRIBUTES, map_type(), false),
        Field::new(ATTRIBUTE_TYPES, types_type(), true),
        Field::new(START_TIME, ts_type(), true),
        Field::new(TIME, ts_type(), false),
        Field::new(FLAGS, UInt32, false),
        Field::new(VALUE_DOUBLE, Float64, true),
        Field::new(VALUE_INT, Int64, true),
        Field::new(COUNT, UInt64, true),
        Field::new(SUM, Float64, true),
        Field::new(MIN, Float64, true),
        Field::new(MAX, Float64, true),
        Field::new(BUCKET_COUNTS, list_type(UInt64), true),
        Field::new(EXPLICIT_BOUNDS, list_type(Float64), true),
        Field::new(EXP_SCALE, Int32, true),
        Field::new(EXP_ZERO_COUNT, UInt64, true),
        Field::new(EXP_ZERO_THRESHOLD, Float64, true),
        Field::new(EXP_POSITIVE_OFFSET, Int32, true),
        Field::new(EXP_POSITIVE_BUCKET_COUNTS, list_type(UInt64), true),
        Field::new(EXP_NEGATIVE_OFFSET, Int32, true),
        Field::new(EXP_NEGATIVE_BUCKET_COUNTS, list_type(UInt64), true),
        Field::new(QUANTILES, list_type(Struct(quantile_fields())), true),
        Field::new(EXEMPLARS, list_type(Struct(exemplar_fields())), false),
    ]);
    Schema::new(fields)
}

// =============================================================================================
// series_id
// =============================================================================================

/// Bumped if the hash input ever changes, so old and new ids never collide by accident.
const SERIES_HASH_VERSION: u8 = 1;

/// FNV-1a 64: tiny, dependency-free and fixed forever (unlike `std`'s `DefaultHasher`, whose
/// algorithm may change between Rust releases).
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
    fn bytes(&mut self, b: &[u8]) {
        for byte in b {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
    /// Length-prefixed so ("ab","c") and ("a","bc") differ.
    fn str(&mut self, s: &str) {
        self.u64(s.len() as u64);
        self.bytes(s.as_bytes());
    }
}

/// MurmurHash3's 64-bit finalizer: spreads FNV's weak high bits before values are combined.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn hash_value(h: &mut Fnv, v: Option<&AnyValue>) {
    use any_value::Value as V;
    match v.and_then(|v| v.value.as_ref()) {
        None | Some(V::StringValueStrindex(_)) => h.bytes(&[0]),
        Some(V::StringValue(s)) => {
            h.bytes(&[1]);
            h.str(s);
        }
        Some(V::BoolValue(b)) => h.bytes(&[2, u8::from(*b)]),
        Some(V::IntValue(i)) => {
            h.bytes(&[3]);
            h.bytes(&i.to_le_bytes());
        }
        Some(V::DoubleValue(d)) => {
            h.bytes(&[4]);
            h.u64(d.to_bits());
        }
        Some(V::BytesValue(b)) => {
            h.bytes(&[5]);
            h.u64(b.len() as u64);
            h.bytes(b);
        }
        Some(V::ArrayValue(a)) => {
            h.bytes(&[6]);
            h.u64(a.values.len() as u64);
            for item in &a.values {
                hash_value(h, Some(item));
            }
        }
        Some(V::KvlistValue(kv)) => {
            h.bytes(&[7]);
            h.u64(attributes_hash(&kv.values));
        }
    }
}

/// Order-independent hash of an attribute list: attribute order is not part of a series'
/// identity (SDKs do not promise a stable order), so entries are hashed separately and summed.
fn attributes_hash(kvs: &[KeyValue]) -> u64 {
    kvs.iter().fold(0u64, |acc, kv| {
        let mut h = Fnv::new();
        h.str(&kv.key);
        hash_value(&mut h, kv.value.as_ref());
        acc.wrapping_add(fmix64(h.0))
    })
}

fn series_id_from_parts(
    metric_name: &str,
    resource_hash: u64,
    scope_name: &str,
    scope_version: &str,
    attributes_hash: u64,
) -> u64 {
    let mut h = Fnv::new();
    h.bytes(&[SERIES_HASH_VERSION]);
    h.str(metric_name);
    h.u64(resource_hash);
    h.str(scope_name);
    h.str(scope_version);
    h.u64(attributes_hash);
    fmix64(h.0)
}

/// The `series_id` of a point: a stable 64-bit hash (FNV-1a 64 with a murmur finalizer,
/// implemented here and pinned by a golden test) of the metric name, the resource attributes,
/// the scope name and version and the point attributes. Attribute order does not matter;
/// attribute value types do (`5` and `"5"` are different series).
pub fn series_id(
    metric_name: &str,
    resource_attributes: &[KeyValue],
    scope_name: &str,
    scope_version: &str,
    attributes: &[KeyValue],
) -> u64 {
    series_id_from_parts(
        metric_name,
        attributes_hash(resource_attributes),
        scope_name,
        scope_version,
        attributes_hash(attributes),
    )
}

// =============================================================================================
// OTLP -> Arrow
// =============================================================================================

/// Converts one export request into a `metrics` batch. Invalid points are counted and
/// described in the result; the rest are kept. Never panics.
pub fn from_otlp(req: &ExportMetricsServiceRequest) -> Converted {
    let mut rejections = Rejections::default();
    convert(req, &mut rejections)
}

/// [`from_otlp`] with rejections already counted by a caller (Prometheus remote write).
pub(crate) fn convert(req: &ExportMetricsServiceRequest, rejections: &mut Rejections) -> Converted {
    let mut sizes = Sizes::default();
    for rm in &req.resource_metrics {
        let resource_attrs = rm.resource.as_ref().map_or(0, |r| r.attributes.len());
        for sm in &rm.scope_metrics {
            let scope_attrs = sm.scope.as_ref().map_or(0, |s| s.attributes.len());
            for m in &sm.metrics {
                let (points, attrs) = point_sizes(m);
                sizes.add(points, attrs, resource_attrs, scope_attrs, m.metadata.len());
            }
        }
    }
    let columns = if sizes.too_large() {
        rejections.add(TOO_MANY_REPEATED, sizes.rows as u64);
        MetricsBuilder::with_capacity(&Sizes::default()).finish()
    } else {
        let mut b = MetricsBuilder::with_capacity(&sizes);
        append_request(&mut b, req, rejections).and_then(|()| b.finish())
    };
    finish_batch(
        Table::Metrics.schema(),
        columns,
        sizes.rows,
        std::mem::take(rejections),
        "data point",
        "data points",
    )
}

/// Number of points of a metric and their attribute entries in total.
fn point_sizes(m: &Metric) -> (usize, usize) {
    fn sum<T>(points: &[T], attrs: impl Fn(&T) -> usize) -> (usize, usize) {
        (points.len(), points.iter().map(attrs).sum())
    }
    match &m.data {
        None => (0, 0),
        Some(metric::Data::Gauge(g)) => sum(&g.data_points, |p| p.attributes.len()),
        Some(metric::Data::Sum(s)) => sum(&s.data_points, |p| p.attributes.len()),
        Some(metric::Data::Histogram(h)) => sum(&h.data_points, |p| p.attributes.len()),
        Some(metric::Data::ExponentialHistogram(h)) => sum(&h.data_points, |p| p.attributes.len()),
        Some(metric::Data::Summary(s)) => sum(&s.data_points, |p| p.attributes.len()),
    }
}

fn point_count(m: &Metric) -> usize {
    point_sizes(m).0
}

/// Everything shared by the points of one metric, computed once per metric.
struct MetricCtx<'a> {
    metric: &'a Metric,
    metric_type: i8,
    temporality: Option<i8>,
    monotonic: Option<bool>,
    service_name_key: i32,
    origin: Origin<'a>,
    resource_hash: u64,
}

/// The type-specific values of one point; `None`/empty for columns that do not apply.
#[derive(Default)]
struct PointValues<'a> {
    value_double: Option<f64>,
    value_int: Option<i64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    bucket_counts: Option<&'a [u64]>,
    explicit_bounds: Option<&'a [f64]>,
    exp_scale: Option<i32>,
    exp_zero_count: Option<u64>,
    exp_zero_threshold: Option<f64>,
    positive: Option<&'a Buckets>,
    negative: Option<&'a Buckets>,
    quantiles: Option<&'a [ValueAtQuantile]>,
    exemplars: &'a [Exemplar],
}

/// The fields every point type shares.
struct PointCommon<'a> {
    attributes: &'a [KeyValue],
    start: u64,
    time: u64,
    flags: u32,
}

fn append_request(
    b: &mut MetricsBuilder,
    req: &ExportMetricsServiceRequest,
    rejections: &mut Rejections,
) -> Result<(), ArrowError> {
    for rm in &req.resource_metrics {
        let res_attrs = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes);
        let service_name_key = b
            .service_name
            .intern(resource_scope::service_name(res_attrs))?;
        let resource_hash = attributes_hash(res_attrs);
        for sm in &rm.scope_metrics {
            let origin = Origin {
                resource: rm.resource.as_ref(),
                resource_schema_url: &rm.schema_url,
                scope: sm.scope.as_ref(),
                scope_schema_url: &sm.schema_url,
                scope_name_key: b.resource_scope.intern_scope_name(sm.scope.as_ref())?,
            };
            for m in &sm.metrics {
                if m.name.is_empty() {
                    rejections.add(EMPTY_NAME, point_count(m) as u64);
                    continue;
                }
                let (metric_type, temporality, monotonic) = match &m.data {
                    None => continue,
                    Some(metric::Data::Gauge(_)) => (metric_type::GAUGE, None, None),
                    Some(metric::Data::Sum(s)) => (
                        metric_type::SUM,
                        Some(s.aggregation_temporality),
                        Some(s.is_monotonic),
                    ),
                    Some(metric::Data::Histogram(h)) => (
                        metric_type::HISTOGRAM,
                        Some(h.aggregation_temporality),
                        None,
                    ),
                    Some(metric::Data::ExponentialHistogram(h)) => (
                        metric_type::EXPONENTIAL_HISTOGRAM,
                        Some(h.aggregation_temporality),
                        None,
                    ),
                    Some(metric::Data::Summary(_)) => (metric_type::SUMMARY, None, None),
                };
                let ctx = MetricCtx {
                    metric: m,
                    metric_type,
                    // Values outside i8 are not valid OTLP; stored as 0 (unspecified).
                    temporality: temporality.map(|t| i8::try_from(t).unwrap_or(0)),
                    monotonic,
                    service_name_key,
                    origin,
                    resource_hash,
                };
                append_metric(b, &ctx, rejections)?;
            }
        }
    }
    Ok(())
}

fn append_metric(
    b: &mut MetricsBuilder,
    ctx: &MetricCtx<'_>,
    rejections: &mut Rejections,
) -> Result<(), ArrowError> {
    let mut point = |common: PointCommon<'_>, values: PointValues<'_>| match validate(
        &common,
        values.exemplars,
    ) {
        Ok(()) => b.append(ctx, &common, &values),
        Err(reason) => {
            rejections.add(reason, 1);
            Ok(())
        }
    };
    match &ctx.metric.data {
        None => {}
        Some(metric::Data::Gauge(Gauge { data_points }))
        | Some(metric::Data::Sum(Sum { data_points, .. })) => {
            for p in data_points {
                point(
                    common(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                    ),
                    {
                        let (value_double, value_int) = match p.value {
                            Some(number_data_point::Value::AsDouble(d)) => (Some(d), None),
                            Some(number_data_point::Value::AsInt(i)) => (None, Some(i)),
                            None => (None, None),
                        };
                        PointValues {
                            value_double,
                            value_int,
                            exemplars: &p.exemplars,
                            ..Default::default()
                        }
                    },
                )?;
            }
        }
        Some(metric::Data::Histogram(h)) => {
            for p in &h.data_points {
                point(
                    common(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                    ),
                    PointValues {
                        count: Some(p.count),
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        bucket_counts: Some(&p.bucket_counts),
                        explicit_bounds: Some(&p.explicit_bounds),
                        exemplars: &p.exemplars,
                        ..Default::default()
                    },
                )?;
            }
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            for p in &h.data_points {
                point(
                    common(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                    ),
                    PointValues {
                        count: Some(p.count),
                        sum: p.sum,
                        min: p.min,
                        max: p.max,
                        exp_scale: Some(p.scale),
                        exp_zero_count: Some(p.zero_count),
                        exp_zero_threshold: Some(p.zero_threshold),
                        positive: p.positive.as_ref(),
                        negative: p.negative.as_ref(),
                        exemplars: &p.exemplars,
                        ..Default::default()
                    },
                )?;
            }
        }
        Some(metric::Data::Summary(s)) => {
            for p in &s.data_points {
                point(
                    common(
                        &p.attributes,
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        p.flags,
                    ),
                    PointValues {
                        count: Some(p.count),
                        sum: Some(p.sum),
                        quantiles: Some(&p.quantile_values),
                        ..Default::default()
                    },
                )?;
            }
        }
    }
    Ok(())
}

fn common(attributes: &[KeyValue], start: u64, time: u64, flags: u32) -> PointCommon<'_> {
    PointCommon {
        attributes,
        start,
        time,
        flags,
    }
}

fn valid_time(t: u64) -> bool {
    i64::try_from(t).is_ok()
}

fn validate(c: &PointCommon<'_>, exemplars: &[Exemplar]) -> Result<(), &'static str> {
    if !valid_time(c.start) || !valid_time(c.time) {
        return Err(BAD_TIME);
    }
    for e in exemplars {
        if !valid_time(e.time_unix_nano) {
            return Err(BAD_TIME);
        }
        if !(e.trace_id.is_empty() || e.trace_id.len() == 16)
            || !(e.span_id.is_empty() || e.span_id.len() == 8)
        {
            return Err(BAD_EXEMPLAR);
        }
    }
    Ok(())
}

fn append_opt_str(b: &mut StringBuilder, s: &str) {
    if s.is_empty() {
        b.append_null();
    } else {
        b.append_value(s);
    }
}

fn append_list<T: Copy>(
    b: &mut ListBuilder<
        arrow::array::PrimitiveBuilder<impl arrow::datatypes::ArrowPrimitiveType<Native = T>>,
    >,
    v: Option<&[T]>,
) {
    match v {
        Some(items) => {
            b.values().append_slice(items);
            b.append(true);
        }
        None => b.append(false),
    }
}

fn u64_list_builder(rows: usize) -> ListBuilder<UInt64Builder> {
    ListBuilder::with_capacity(UInt64Builder::new(), rows).with_field(list_item(DataType::UInt64))
}

struct QuantilesBuilder {
    list: ListOffsets,
    len: usize,
    quantile: Float64Builder,
    value: Float64Builder,
}

impl QuantilesBuilder {
    fn append(&mut self, q: Option<&[ValueAtQuantile]>) -> Result<(), ArrowError> {
        let Some(q) = q else {
            self.list.push_null();
            return Ok(());
        };
        for v in q {
            self.quantile.append_value(v.quantile);
            self.value.append_value(v.value);
        }
        self.len += q.len();
        self.list.push(self.len)
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let fields = quantile_fields();
        let values = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(self.quantile.finish()),
                Arc::new(self.value.finish()),
            ],
            None,
        )?;
        let (offsets, nulls) = self.list.finish();
        Ok(Arc::new(ListArray::try_new(
            list_item(DataType::Struct(fields)),
            offsets,
            Arc::new(values),
            nulls,
        )?))
    }
}

struct ExemplarsBuilder {
    list: ListOffsets,
    len: usize,
    time: TimestampNanosecondBuilder,
    value_double: Float64Builder,
    value_int: Int64Builder,
    span_id: IdBuilder,
    trace_id: IdBuilder,
    attrs: AttrsBuilder,
}

impl ExemplarsBuilder {
    fn append(&mut self, exemplars: &[Exemplar]) -> Result<(), ArrowError> {
        for e in exemplars {
            // Validated: fits in i64; ids empty or of the right length.
            self.time.append_value(e.time_unix_nano as i64);
            let (d, i) = match e.value {
                Some(exemplar::Value::AsDouble(d)) => (Some(d), None),
                Some(exemplar::Value::AsInt(i)) => (None, Some(i)),
                None => (None, None),
            };
            self.value_double.append_option(d);
            self.value_int.append_option(i);
            if e.span_id.is_empty() {
                self.span_id.push_null();
            } else {
                self.span_id.push(&e.span_id);
            }
            if e.trace_id.is_empty() {
                self.trace_id.push_null();
            } else {
                self.trace_id.push(&e.trace_id);
            }
            self.attrs.append(&e.filtered_attributes)?;
        }
        self.len += exemplars.len();
        self.list.push(self.len)
    }

    fn finish(&mut self) -> Result<ArrayRef, ArrowError> {
        let fields = exemplar_fields();
        let (attrs, types) = self.attrs.finish();
        let values = StructArray::try_new(
            fields.clone(),
            vec![
                Arc::new(self.time.finish()),
                Arc::new(self.value_double.finish()),
                Arc::new(self.value_int.finish()),
                self.span_id.finish()?,
                self.trace_id.finish()?,
                attrs,
                types,
            ],
            None,
        )?;
        let (offsets, nulls) = self.list.finish();
        Ok(Arc::new(ListArray::try_new(
            list_item(DataType::Struct(fields)),
            offsets,
            Arc::new(values),
            nulls,
        )?))
    }
}

struct MetricsBuilder {
    name: StringDictionaryBuilder<Int32Type>,
    description: StringBuilder,
    unit: StringBuilder,
    metric_type: Int8Builder,
    temporality: Int8Builder,
    monotonic: BooleanBuilder,
    metadata: AttrsBuilder,
    service_name: InternedDict,
    series_id: UInt64Builder,
    resource_scope: ResourceScopeBuilder,
    attrs: AttrsBuilder,
    start_time: TimestampNanosecondBuilder,
    time: TimestampNanosecondBuilder,
    flags: UInt32Builder,
    value_double: Float64Builder,
    value_int: Int64Builder,
    count: UInt64Builder,
    sum: Float64Builder,
    min: Float64Builder,
    max: Float64Builder,
    bucket_counts: ListBuilder<UInt64Builder>,
    explicit_bounds: ListBuilder<Float64Builder>,
    exp_scale: Int32Builder,
    exp_zero_count: UInt64Builder,
    exp_zero_threshold: Float64Builder,
    exp_positive_offset: Int32Builder,
    exp_positive_counts: ListBuilder<UInt64Builder>,
    exp_negative_offset: Int32Builder,
    exp_negative_counts: ListBuilder<UInt64Builder>,
    quantiles: QuantilesBuilder,
    exemplars: ExemplarsBuilder,
}

impl MetricsBuilder {
    fn with_capacity(sizes: &Sizes) -> Self {
        let rows = sizes.rows;
        let ts = || TimestampNanosecondBuilder::with_capacity(rows).with_timezone("UTC");
        Self {
            name: StringDictionaryBuilder::with_capacity(rows, 64, 2048),
            description: StringBuilder::with_capacity(rows, 0),
            unit: StringBuilder::with_capacity(rows, 0),
            metric_type: Int8Builder::with_capacity(rows),
            temporality: Int8Builder::with_capacity(rows),
            monotonic: BooleanBuilder::with_capacity(rows),
            metadata: AttrsBuilder::with_capacity(rows, 0),
            service_name: InternedDict::with_capacity(rows),
            series_id: UInt64Builder::with_capacity(rows),
            resource_scope: ResourceScopeBuilder::with_capacity(sizes),
            attrs: AttrsBuilder::with_capacity(rows, sizes.attrs),
            start_time: ts(),
            time: ts(),
            flags: UInt32Builder::with_capacity(rows),
            value_double: Float64Builder::with_capacity(rows),
            value_int: Int64Builder::with_capacity(rows),
            count: UInt64Builder::with_capacity(rows),
            sum: Float64Builder::with_capacity(rows),
            min: Float64Builder::with_capacity(rows),
            max: Float64Builder::with_capacity(rows),
            bucket_counts: u64_list_builder(rows),
            explicit_bounds: ListBuilder::with_capacity(Float64Builder::new(), rows)
                .with_field(list_item(DataType::Float64)),
            exp_scale: Int32Builder::with_capacity(rows),
            exp_zero_count: UInt64Builder::with_capacity(rows),
            exp_zero_threshold: Float64Builder::with_capacity(rows),
            exp_positive_offset: Int32Builder::with_capacity(rows),
            exp_positive_counts: u64_list_builder(rows),
            exp_negative_offset: Int32Builder::with_capacity(rows),
            exp_negative_counts: u64_list_builder(rows),
            quantiles: QuantilesBuilder {
                list: ListOffsets::with_capacity(rows),
                len: 0,
                quantile: Float64Builder::new(),
                value: Float64Builder::new(),
            },
            exemplars: ExemplarsBuilder {
                list: ListOffsets::with_capacity(rows),
                len: 0,
                time: TimestampNanosecondBuilder::new().with_timezone("UTC"),
                value_double: Float64Builder::new(),
                value_int: Int64Builder::new(),
                span_id: IdBuilder::with_capacity(8, 0),
                trace_id: IdBuilder::with_capacity(16, 0),
                attrs: AttrsBuilder::with_capacity(0, 0),
            },
        }
    }

    /// Appends a point that passed [`validate`].
    fn append(
        &mut self,
        ctx: &MetricCtx<'_>,
        c: &PointCommon<'_>,
        v: &PointValues<'_>,
    ) -> Result<(), ArrowError> {
        let m = ctx.metric;
        self.name.append_value(&m.name);
        append_opt_str(&mut self.description, &m.description);
        append_opt_str(&mut self.unit, &m.unit);
        self.metric_type.append_value(ctx.metric_type);
        self.temporality.append_option(ctx.temporality);
        self.monotonic.append_option(ctx.monotonic);
        self.metadata.append(&m.metadata)?;
        self.service_name.push(ctx.service_name_key);
        let scope = ctx.origin.scope;
        self.series_id.append_value(series_id_from_parts(
            &m.name,
            ctx.resource_hash,
            scope.map_or("", |s| s.name.as_str()),
            scope.map_or("", |s| s.version.as_str()),
            attributes_hash(c.attributes),
        ));
        self.resource_scope.append(&ctx.origin)?;
        self.attrs.append(c.attributes)?;
        // Validated: both fit in i64.
        if c.start == 0 {
            self.start_time.append_null();
        } else {
            self.start_time.append_value(c.start as i64);
        }
        self.time.append_value(c.time as i64);
        self.flags.append_value(c.flags);
        self.value_double.append_option(v.value_double);
        self.value_int.append_option(v.value_int);
        self.count.append_option(v.count);
        self.sum.append_option(v.sum);
        self.min.append_option(v.min);
        self.max.append_option(v.max);
        append_list(&mut self.bucket_counts, v.bucket_counts);
        append_list(&mut self.explicit_bounds, v.explicit_bounds);
        self.exp_scale.append_option(v.exp_scale);
        self.exp_zero_count.append_option(v.exp_zero_count);
        self.exp_zero_threshold.append_option(v.exp_zero_threshold);
        self.exp_positive_offset
            .append_option(v.positive.map(|b| b.offset));
        append_list(
            &mut self.exp_positive_counts,
            v.positive.map(|b| &b.bucket_counts[..]),
        );
        self.exp_negative_offset
            .append_option(v.negative.map(|b| b.offset));
        append_list(
            &mut self.exp_negative_counts,
            v.negative.map(|b| &b.bucket_counts[..]),
        );
        self.quantiles.append(v.quantiles)?;
        self.exemplars.append(v.exemplars)
    }

    fn finish(&mut self) -> Result<Vec<ArrayRef>, ArrowError> {
        let (md, mdt) = self.metadata.finish();
        let mut cols: Vec<ArrayRef> = vec![
            Arc::new(self.name.finish()),
            Arc::new(self.description.finish()),
            Arc::new(self.unit.finish()),
            Arc::new(self.metric_type.finish()),
            Arc::new(self.temporality.finish()),
            Arc::new(self.monotonic.finish()),
            md,
            mdt,
            self.service_name.finish()?,
            Arc::new(self.series_id.finish()),
        ];
        cols.extend(self.resource_scope.finish()?);
        let (attrs, types) = self.attrs.finish();
        cols.extend([
            attrs,
            types,
            Arc::new(self.start_time.finish()),
            Arc::new(self.time.finish()),
            Arc::new(self.flags.finish()),
            Arc::new(self.value_double.finish()),
            Arc::new(self.value_int.finish()),
            Arc::new(self.count.finish()),
            Arc::new(self.sum.finish()),
            Arc::new(self.min.finish()),
            Arc::new(self.max.finish()),
            Arc::new(self.bucket_counts.finish()),
            Arc::new(self.explicit_bounds.finish()),
            Arc::new(self.exp_scale.finish()),
            Arc::new(self.exp_zero_count.finish()),
            Arc::new(self.exp_zero_threshold.finish()),
            Arc::new(self.exp_positive_offset.finish()),
            Arc::new(self.exp_positive_counts.finish()),
            Arc::new(self.exp_negative_offset.finish()),
            Arc::new(self.exp_negative_counts.finish()),
        ]);
        cols.push(self.quantiles.finish()?);
        cols.push(self.exemplars.finish()?);
        Ok(cols)
    }
}

// =============================================================================================
// Arrow -> OTLP
// =============================================================================================

/// Converts `metrics` batches back to OTLP. Consecutive rows with identical resource, scope and
/// metric (name, description, unit, metadata, type, temporality, monotonicity) are grouped into
/// one `ResourceMetrics` / `ScopeMetrics` / `Metric`, also across batch boundaries.
pub fn to_otlp(batches: &[RecordBatch]) -> Result<Vec<ResourceMetrics>> {
    let schema = Table::Metrics.schema();
    let mut grouper: Grouper<ResourceMetrics, ScopeMetrics> = Grouper::new(
        |resource, schema_url| ResourceMetrics {
            resource: Some(resource),
            scope_metrics: Vec::new(),
            schema_url,
        },
        |r| (r.resource.as_ref(), r.schema_url.as_str()),
        |r| &mut r.scope_metrics,
        |scope, schema_url| ScopeMetrics {
            scope: Some(scope),
            metrics: Vec::new(),
            schema_url,
        },
        |s| (s.scope.as_ref(), s.schema_url.as_str()),
    );
    for batch in batches {
        if batch.num_rows() == 0 {
            continue;
        }
        let cols = MetricColumns::new(batch, &schema)?;
        let r = cols.reader()?;
        let rs_cols = ResourceScopeColumns::new(batch, &schema)?;
        let rs: ResourceScopeReader<'_> = rs_cols.reader()?;
        for row in 0..batch.num_rows() {
            let (scope, opened_scope) = grouper.group_for(&rs, row, row == 0)?;
            let continues = if opened_scope {
                false
            } else if row == 0 {
                let header = r.header(row)?;
                scope
                    .metrics
                    .last()
                    .is_some_and(|last| same_header(last, &header))
            } else {
                !scope.metrics.is_empty() && r.same_metric(row - 1, row)
            };
            if !continues {
                scope.metrics.push(r.header(row)?);
            }
            let Some(metric) = scope.metrics.last_mut() else {
                return Err(Error::InvalidData("no metric group".into()));
            };
            r.push_point(row, metric)?;
        }
    }
    Ok(grouper.out)
}

fn same_header(a: &Metric, b: &Metric) -> bool {
    let kind = |m: &Metric| match &m.data {
        None => (0, 0, false),
        Some(metric::Data::Gauge(_)) => (1, 0, false),
        Some(metric::Data::Sum(s)) => (2, s.aggregation_temporality, s.is_monotonic),
        Some(metric::Data::Histogram(h)) => (3, h.aggregation_temporality, false),
        Some(metric::Data::ExponentialHistogram(h)) => (4, h.aggregation_temporality, false),
        Some(metric::Data::Summary(_)) => (5, 0, false),
    };
    a.name == b.name
        && a.description == b.description
        && a.unit == b.unit
        && a.metadata == b.metadata
        && kind(a) == kind(b)
}

/// Point-level and metric-level columns `to_otlp` reads, in [`MetricColumns`] order.
const READ_COLUMNS: [&str; 30] = [
    METRIC_NAME,
    METRIC_DESCRIPTION,
    METRIC_UNIT,
    METRIC_TYPE,
    AGGREGATION_TEMPORALITY,
    IS_MONOTONIC,
    METRIC_METADATA,
    METRIC_METADATA_TYPES,
    ATTRIBUTES,
    ATTRIBUTE_TYPES,
    START_TIME,
    TIME,
    FLAGS,
    VALUE_DOUBLE,
    VALUE_INT,
    COUNT,
    SUM,
    MIN,
    MAX,
    BUCKET_COUNTS,
    EXPLICIT_BOUNDS,
    EXP_SCALE,
    EXP_ZERO_COUNT,
    EXP_ZERO_THRESHOLD,
    EXP_POSITIVE_OFFSET,
    EXP_POSITIVE_BUCKET_COUNTS,
    EXP_NEGATIVE_OFFSET,
    EXP_NEGATIVE_BUCKET_COUNTS,
    QUANTILES,
    EXEMPLARS,
];

struct MetricColumns(Vec<ArrayRef>);

impl MetricColumns {
    fn new(batch: &RecordBatch, schema: &Schema) -> Result<Self> {
        READ_COLUMNS
            .iter()
            .map(|name| table_column(batch, schema, name))
            .collect::<Result<Vec<_>>>()
            .map(Self)
    }

    fn reader(&self) -> Result<MetricReader<'_>> {
        let c = |i: usize| self.0[i].as_ref();
        let (exemplar_list, ex) = struct_values(c(29), EXEMPLARS)?;
        let (quantile_list, q) = struct_values(c(28), QUANTILES)?;
        Ok(MetricReader {
            name: DictStr::new(c(0), METRIC_NAME)?,
            description: downcast(c(1), METRIC_DESCRIPTION)?,
            unit: downcast(c(2), METRIC_UNIT)?,
            metric_type: downcast(c(3), METRIC_TYPE)?,
            temporality: downcast(c(4), AGGREGATION_TEMPORALITY)?,
            monotonic: downcast(c(5), IS_MONOTONIC)?,
            metadata: AttrsReader::new(c(6), c(7), METRIC_METADATA)?,
            attrs: AttrsReader::new(c(8), c(9), ATTRIBUTES)?,
            start_time: downcast(c(10), START_TIME)?,
            time: downcast(c(11), TIME)?,
            flags: downcast(c(12), FLAGS)?,
            value_double: downcast(c(13), VALUE_DOUBLE)?,
            value_int: downcast(c(14), VALUE_INT)?,
            count: downcast(c(15), COUNT)?,
            sum: downcast(c(16), SUM)?,
            min: downcast(c(17), MIN)?,
            max: downcast(c(18), MAX)?,
            bucket_counts: downcast(c(19), BUCKET_COUNTS)?,
            explicit_bounds: downcast(c(20), EXPLICIT_BOUNDS)?,
            exp_scale: downcast(c(21), EXP_SCALE)?,
            exp_zero_count: downcast(c(22), EXP_ZERO_COUNT)?,
            exp_zero_threshold: downcast(c(23), EXP_ZERO_THRESHOLD)?,
            exp_positive_offset: downcast(c(24), EXP_POSITIVE_OFFSET)?,
            exp_positive_counts: downcast(c(25), EXP_POSITIVE_BUCKET_COUNTS)?,
            exp_negative_offset: downcast(c(26), EXP_NEGATIVE_OFFSET)?,
            exp_negative_counts: downcast(c(27), EXP_NEGATIVE_BUCKET_COUNTS)?,
            quantile_list,
            quantile: struct_child(q, quantile::QUANTILE)?,
            quantile_value: struct_child(q, quantile::VALUE)?,
            exemplar_list,
            ex_time: struct_child(ex, excol::TIME)?,
            ex_double: struct_child(ex, excol::VALUE_DOUBLE)?,
            ex_int: struct_child(ex, excol::VALUE_INT)?,
            ex_span_id: struct_child(ex, excol::SPAN_ID)?,
            ex_trace_id: struct_child(ex, excol::TRACE_ID)?,
            ex_attrs: AttrsReader::new(
                struct_child::<MapArray>(ex, excol::FILTERED_ATTRIBUTES)?,
                struct_child::<ListArray>(ex, excol::FILTERED_ATTRIBUTE_TYPES)?,
                excol::FILTERED_ATTRIBUTES,
            )?,
        })
    }
}

fn struct_child<'a, T: Array + 'static>(s: &'a StructArray, name: &str) -> Result<&'a T> {
    let col = s
        .column_by_name(name)
        .ok_or_else(|| Error::InvalidData(format!("missing struct field {name}")))?;
    downcast(col.as_ref(), name)
}

fn struct_values<'a>(list: &'a dyn Array, name: &str) -> Result<(&'a ListArray, &'a StructArray)> {
    let list: &ListArray = downcast(list, name)?;
    let values: &StructArray = downcast(list.values().as_ref(), name)?;
    Ok((list, values))
}

fn list_range(list: &ListArray, row: usize) -> std::ops::Range<usize> {
    let offsets = list.value_offsets();
    offsets[row] as usize..offsets[row + 1] as usize
}

struct MetricReader<'a> {
    name: DictStr<'a>,
    description: &'a StringArray,
    unit: &'a StringArray,
    metric_type: &'a Int8Array,
    temporality: &'a Int8Array,
    monotonic: &'a BooleanArray,
    metadata: AttrsReader<'a>,
    attrs: AttrsReader<'a>,
    start_time: &'a TimestampNanosecondArray,
    time: &'a TimestampNanosecondArray,
    flags: &'a UInt32Array,
    value_double: &'a Float64Array,
    value_int: &'a Int64Array,
    count: &'a UInt64Array,
    sum: &'a Float64Array,
    min: &'a Float64Array,
    max: &'a Float64Array,
    bucket_counts: &'a ListArray,
    explicit_bounds: &'a ListArray,
    exp_scale: &'a Int32Array,
    exp_zero_count: &'a UInt64Array,
    exp_zero_threshold: &'a Float64Array,
    exp_positive_offset: &'a Int32Array,
    exp_positive_counts: &'a ListArray,
    exp_negative_offset: &'a Int32Array,
    exp_negative_counts: &'a ListArray,
    quantile_list: &'a ListArray,
    quantile: &'a Float64Array,
    quantile_value: &'a Float64Array,
    exemplar_list: &'a ListArray,
    ex_time: &'a TimestampNanosecondArray,
    ex_double: &'a Float64Array,
    ex_int: &'a Int64Array,
    ex_span_id: &'a FixedSizeBinaryArray,
    ex_trace_id: &'a FixedSizeBinaryArray,
    ex_attrs: AttrsReader<'a>,
}

fn opt<T: arrow::datatypes::ArrowPrimitiveType>(
    a: &arrow::array::PrimitiveArray<T>,
    i: usize,
) -> Option<T::Native> {
    (!a.is_null(i)).then(|| a.value(i))
}

fn to_unix_nanos(t: i64) -> Result<u64> {
    u64::try_from(t).map_err(|_| Error::InvalidData(format!("negative timestamp {t}")))
}

/// The values of a `List<primitive>` row; empty for null.
fn prim_list<T: arrow::datatypes::ArrowPrimitiveType>(
    list: &ListArray,
    row: usize,
    name: &str,
) -> Result<Vec<T::Native>> {
    if list.is_null(row) {
        return Ok(Vec::new());
    }
    let values: &arrow::array::PrimitiveArray<T> = downcast(list.values().as_ref(), name)?;
    Ok(values.values()[list_range(list, row)].to_vec())
}

impl MetricReader<'_> {
    fn same_metric(&self, a: usize, b: usize) -> bool {
        self.name.get(a) == self.name.get(b)
            && opt_str(self.description, a) == opt_str(self.description, b)
            && opt_str(self.unit, a) == opt_str(self.unit, b)
            && self.metric_type.value(a) == self.metric_type.value(b)
            && opt(self.temporality, a) == opt(self.temporality, b)
            && (self.monotonic.is_null(a), self.monotonic.value(a))
                == (self.monotonic.is_null(b), self.monotonic.value(b))
            && self.metadata.row_eq(a, b)
    }

    /// The metric of `row` with an empty point list of the right type.
    fn header(&self, row: usize) -> Result<Metric> {
        let temporality = i32::from(opt(self.temporality, row).unwrap_or(0));
        let data = match self.metric_type.value(row) {
            metric_type::GAUGE => metric::Data::Gauge(Gauge::default()),
            metric_type::SUM => metric::Data::Sum(Sum {
                data_points: Vec::new(),
                aggregation_temporality: temporality,
                is_monotonic: !self.monotonic.is_null(row) && self.monotonic.value(row),
            }),
            metric_type::HISTOGRAM => metric::Data::Histogram(Histogram {
                data_points: Vec::new(),
                aggregation_temporality: temporality,
            }),
            metric_type::EXPONENTIAL_HISTOGRAM => {
                metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: Vec::new(),
                    aggregation_temporality: temporality,
                })
            }
            metric_type::SUMMARY => metric::Data::Summary(Summary::default()),
            other => return Err(Error::InvalidData(format!("unknown metric_type {other}"))),
        };
        Ok(Metric {
            name: self.name.get(row).to_owned(),
            description: str_or_empty(self.description, row).to_owned(),
            unit: str_or_empty(self.unit, row).to_owned(),
            metadata: self.metadata.read(row)?,
            data: Some(data),
        })
    }

    fn start(&self, row: usize) -> Result<u64> {
        opt(self.start_time, row).map_or(Ok(0), to_unix_nanos)
    }

    fn exemplars(&self, row: usize) -> Result<Vec<Exemplar>> {
        list_range(self.exemplar_list, row)
            .map(|i| {
                let value = match (opt(self.ex_double, i), opt(self.ex_int, i)) {
                    (Some(d), _) => Some(exemplar::Value::AsDouble(d)),
                    (None, Some(v)) => Some(exemplar::Value::AsInt(v)),
                    (None, None) => None,
                };
                let id = |a: &FixedSizeBinaryArray| {
                    if a.is_null(i) {
                        Vec::new()
                    } else {
                        a.value(i).to_vec()
                    }
                };
                Ok(Exemplar {
                    filtered_attributes: self.ex_attrs.read(i)?,
                    time_unix_nano: to_unix_nanos(self.ex_time.value(i))?,
                    span_id: id(self.ex_span_id),
                    trace_id: id(self.ex_trace_id),
                    value,
                })
            })
            .collect()
    }

    fn buckets(
        &self,
        offset: &Int32Array,
        counts: &ListArray,
        row: usize,
        name: &str,
    ) -> Result<Option<Buckets>> {
        opt(offset, row)
            .map(|offset| {
                Ok(Buckets {
                    offset,
                    bucket_counts: prim_list::<arrow::datatypes::UInt64Type>(counts, row, name)?,
                })
            })
            .transpose()
    }

    /// Appends the point of `row` to `metric` (whose type came from the same row's header).
    fn push_point(&self, row: usize, metric: &mut Metric) -> Result<()> {
        use arrow::datatypes::{Float64Type, UInt64Type};
        let attributes = self.attrs.read(row)?;
        let start_time_unix_nano = self.start(row)?;
        let time_unix_nano = to_unix_nanos(self.time.value(row))?;
        let flags = self.flags.value(row);
        match &mut metric.data {
            Some(metric::Data::Gauge(Gauge { data_points }))
            | Some(metric::Data::Sum(Sum { data_points, .. })) => {
                let value = match (opt(self.value_double, row), opt(self.value_int, row)) {
                    (Some(d), _) => Some(number_data_point::Value::AsDouble(d)),
                    (None, Some(i)) => Some(number_data_point::Value::AsInt(i)),
                    (None, None) => None,
                };
                data_points.push(NumberDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    exemplars: self.exemplars(row)?,
                    flags,
                    value,
                });
            }
            Some(metric::Data::Histogram(h)) => h.data_points.push(HistogramDataPoint {
                attributes,
                start_time_unix_nano,
                time_unix_nano,
                count: opt(self.count, row).unwrap_or(0),
                sum: opt(self.sum, row),
                bucket_counts: prim_list::<UInt64Type>(self.bucket_counts, row, BUCKET_COUNTS)?,
                explicit_bounds: prim_list::<Float64Type>(
                    self.explicit_bounds,
                    row,
                    EXPLICIT_BOUNDS,
                )?,
                exemplars: self.exemplars(row)?,
                flags,
                min: opt(self.min, row),
                max: opt(self.max, row),
            }),
            Some(metric::Data::ExponentialHistogram(h)) => {
                h.data_points.push(ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count: opt(self.count, row).unwrap_or(0),
                    sum: opt(self.sum, row),
                    scale: opt(self.exp_scale, row).unwrap_or(0),
                    zero_count: opt(self.exp_zero_count, row).unwrap_or(0),
                    positive: self.buckets(
                        self.exp_positive_offset,
                        self.exp_positive_counts,
                        row,
                        EXP_POSITIVE_BUCKET_COUNTS,
                    )?,
                    negative: self.buckets(
                        self.exp_negative_offset,
                        self.exp_negative_counts,
                        row,
                        EXP_NEGATIVE_BUCKET_COUNTS,
                    )?,
                    flags,
                    exemplars: self.exemplars(row)?,
                    min: opt(self.min, row),
                    max: opt(self.max, row),
                    zero_threshold: opt(self.exp_zero_threshold, row).unwrap_or(0.0),
                })
            }
            Some(metric::Data::Summary(s)) => {
                let quantile_values = if self.quantile_list.is_null(row) {
                    Vec::new()
                } else {
                    list_range(self.quantile_list, row)
                        .map(|i| ValueAtQuantile {
                            quantile: self.quantile.value(i),
                            value: self.quantile_value.value(i),
                        })
                        .collect()
                };
                s.data_points.push(SummaryDataPoint {
                    attributes,
                    start_time_unix_nano,
                    time_unix_nano,
                    count: opt(self.count, row).unwrap_or(0),
                    sum: opt(self.sum, row).unwrap_or(0.0),
                    quantile_values,
                    flags,
                });
            }
            None => return Err(Error::InvalidData("metric without data".into())),
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::AsArray;
    use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use prost::Message;

    fn kv(k: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: k.into(),
            value: Some(AnyValue { value: Some(v) }),
            key_strindex: 0,
        }
    }

    fn s(v: &str) -> any_value::Value {
        any_value::Value::StringValue(v.into())
    }

    /// Pinned forever: changing the hash would split every stored series in two.
    #[test]
    fn series_id_golden() {
        let resource = [kv("service.name", s("checkout")), kv("host.name", s("h1"))];
        let attrs = [
            kv("route", s("/checkout")),
            kv("code", any_value::Value::IntValue(200)),
        ];
        let id = series_id("http.server.duration", &resource, "lib", "1.0", &attrs);
        assert_eq!(id, 0x72bf_3914_74d3_5f19, "got {id:#x}");
        // Attribute order does not matter; values, types, names and scope do.
        let reordered = [attrs[1].clone(), attrs[0].clone()];
        assert_eq!(
            series_id("http.server.duration", &resource, "lib", "1.0", &reordered),
            id
        );
        let string_code = [kv("route", s("/checkout")), kv("code", s("200"))];
        assert_ne!(
            series_id(
                "http.server.duration",
                &resource,
                "lib",
                "1.0",
                &string_code
            ),
            id
        );
        assert_ne!(
            series_id("http.server.duration", &resource, "lib", "1.1", &attrs),
            id
        );
        assert_ne!(series_id("other", &resource, "lib", "1.0", &attrs), id);
        assert_ne!(
            series_id("http.server.duration", &[], "lib", "1.0", &attrs),
            id
        );
        assert_eq!(series_id("", &[], "", "", &[]), 0x52e4_f625_73b8_0f19);
    }

    fn request(metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
        ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(Resource {
                    attributes: vec![kv("service.name", s("svc"))],
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: "lib".into(),
                        version: "1".into(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        }
    }

    fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
        Metric {
            name: name.into(),
            data: Some(metric::Data::Gauge(Gauge {
                data_points: points,
            })),
            ..Default::default()
        }
    }

    fn point(time: u64) -> NumberDataPoint {
        NumberDataPoint {
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsInt(7)),
            ..Default::default()
        }
    }

    #[test]
    fn rejects_bad_points_and_keeps_good_ones() {
        let bad_exemplar = NumberDataPoint {
            exemplars: vec![Exemplar {
                trace_id: vec![1; 3],
                ..Default::default()
            }],
            ..point(5)
        };
        let req = request(vec![
            gauge("ok", vec![point(1), point(u64::MAX), bad_exemplar]),
            gauge("", vec![point(1), point(2)]),
            gauge("empty", vec![]),
            Metric {
                name: "nodata".into(),
                ..Default::default()
            },
        ]);
        let c = from_otlp(&req);
        assert_eq!(c.batch.schema(), Table::Metrics.schema());
        assert_eq!(c.batch.num_rows(), 1);
        assert_eq!(c.rejected, 4);
        let msg = c.rejection_message.unwrap();
        assert!(msg.starts_with("4 data points rejected: "), "{msg}");
        assert!(msg.contains("empty metric name [2]"), "{msg}");
        assert!(msg.contains("timestamp out of range"), "{msg}");
        assert!(msg.contains("invalid exemplar"), "{msg}");
    }

    #[test]
    fn zero_start_time_is_null() {
        let c = from_otlp(&request(vec![gauge("g", vec![point(10)])]));
        assert!(c.batch.column_by_name(START_TIME).unwrap().is_null(0));
        let ids = c.batch.column_by_name(SERIES_ID).unwrap();
        let ids: &UInt64Array = ids.as_primitive();
        let resource = [kv("service.name", s("svc"))];
        assert_eq!(ids.value(0), series_id("g", &resource, "lib", "1", &[]));
    }

    #[test]
    fn spec_example_converts() {
        let body = std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/otlp-proto-examples/metrics.json"
        ))
        .expect("fixture");
        let req = crate::otlp_json::decode_metrics(&body).unwrap();
        let c = from_otlp(&req);
        assert_eq!((c.batch.num_rows(), c.rejected), (4, 0));
        let types: &Int8Array = c.batch.column_by_name(METRIC_TYPE).unwrap().as_primitive();
        assert_eq!(types.values().to_vec(), vec![2, 1, 3, 4]);
        assert_eq!(to_otlp(&[c.batch]).unwrap(), req.resource_metrics);
    }

    #[test]
    fn real_client_protobuf_captures_convert() {
        for name in [
            "node-http-proto",
            "python-grpc",
            "python-http-proto",
            "rust-http-proto",
        ] {
            let path = format!(
                "{}/testdata/real-client-captures/{name}.metrics.pb",
                env!("CARGO_MANIFEST_DIR")
            );
            let body = std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
            let req = ExportMetricsServiceRequest::decode(&body[..]).unwrap();
            let c = from_otlp(&req);
            assert_eq!(c.rejected, 0, "{name}: {:?}", c.rejection_message);
            assert!(c.batch.num_rows() >= 2, "{name}");
            let names = arrow::compute::cast(
                c.batch.column_by_name(METRIC_NAME).unwrap(),
                &DataType::Utf8,
            )
            .unwrap();
            let names: Vec<_> = names.as_string::<i32>().iter().flatten().collect();
            assert!(names.contains(&"requests_total"), "{name}: {names:?}");
            let back = to_otlp(&[c.batch]).unwrap();
            let again = from_otlp(&ExportMetricsServiceRequest {
                resource_metrics: back,
            });
            assert_eq!(again.rejected, 0);
        }
    }
}
