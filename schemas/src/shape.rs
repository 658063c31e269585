//! What decoding a request would build, measured without building it.
//!
//! A 16 MB protobuf body can hold 8 million empty spans (two bytes each); prost turns each
//! into a ~250-byte `Span`, so the decoded request is ~150x the body. Admission therefore
//! needs the *decoded* size before decoding. [`scan_traces`], [`scan_metrics`] and
//! [`scan_remote_write`] walk the protobuf wire format once, allocate nothing, and return a
//! [`Shape`]: how many resources, scopes, spans, events, links, attributes, metrics, data
//! points, exemplars and series the body holds, and an upper bound of the heap bytes the
//! decoded prost message (plus, for remote write, the per-sample label copies made when it is
//! converted) takes. [`scan_traces_json`] / [`scan_metrics_json`] do the same for OTLP/JSON
//! with serde's streaming deserializer (no DOM), adding the cost of the `serde_json::Value`
//! tree that [`crate::otlp_json`] builds.
//!
//! ```text
//!  body ─scan_*─▶ Shape { spans, data_points, …, decoded_bytes } ─▶ admission (item cap,
//!                                                                   in-flight budget)
//!       ─prost / otlp_json─▶ request ─▶ from_otlp ─▶ rows
//! ```
//!
//! The protobuf scanner follows prost's merge rules, so when prost decodes a body the counts
//! are exactly those of the decoded message (repeated fields append, a repeated singular
//! message merges, a `oneof` replaced by another variant loses what the first held); see
//! [`counts_of_traces`] / [`counts_of_metrics`] and the property tests. It fails only where
//! prost fails (truncated or invalid wire data, nesting deeper than prost's recursion limit);
//! it is lenient where prost is strict (wrong wire types, invalid UTF-8), which prost then
//! reports. The JSON scanner's counts are an upper bound (duplicate keys, both spellings of a
//! key, several `AnyValue` variants are all counted).

use std::fmt;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogramDataPoint, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, SummaryDataPoint, metric, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, span};
use serde::de::{DeserializeSeed, MapAccess, SeqAccess, Visitor};

use crate::prometheus;
use crate::{Error, Result};

/// Deeper nesting than this is refused. prost's own recursion limit is 100, so a body this
/// scanner refuses for depth is one prost refuses too.
const MAX_DEPTH: u32 = 128;

/// What a request body decodes to, measured by a `scan_*` function.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shape {
    /// `ResourceSpans` / `ResourceMetrics`.
    pub resources: u64,
    /// `ScopeSpans` / `ScopeMetrics`.
    pub scopes: u64,
    pub spans: u64,
    pub events: u64,
    pub links: u64,
    /// Every `KeyValue` at any depth (nested `kvlistValue`s included), and remote-write labels.
    pub attributes: u64,
    pub metrics: u64,
    /// OTLP data points of every kind, and remote-write samples.
    pub data_points: u64,
    pub exemplars: u64,
    /// Remote-write time series.
    pub series: u64,
    /// Upper bound of the heap bytes of the decoded message (Vec growth included), plus for
    /// remote write the labels copied onto every sample, plus for JSON the `Value` tree.
    pub decoded_bytes: u64,
}

impl Shape {
    /// Items in the sense of `receiver.max_items_per_request`: spans plus data points.
    pub fn items(&self) -> u64 {
        self.spans.saturating_add(self.data_points)
    }

    fn add(&mut self, other: &Shape) {
        self.resources += other.resources;
        self.scopes += other.scopes;
        self.spans += other.spans;
        self.events += other.events;
        self.links += other.links;
        self.attributes += other.attributes;
        self.metrics += other.metrics;
        self.data_points += other.data_points;
        self.exemplars += other.exemplars;
        self.series += other.series;
        self.decoded_bytes = self.decoded_bytes.saturating_add(other.decoded_bytes);
    }

    /// The counts only (what the property tests compare with prost's result).
    fn counts(mut self) -> Shape {
        self.decoded_bytes = 0;
        self
    }

    fn count(&mut self, slot: Slot) {
        match slot {
            Slot::None => {}
            Slot::Resource => self.resources += 1,
            Slot::Scope => self.scopes += 1,
            Slot::Span => self.spans += 1,
            Slot::Event => self.events += 1,
            Slot::Link => self.links += 1,
            Slot::Attribute => self.attributes += 1,
            Slot::Metric => self.metrics += 1,
            Slot::Point => self.data_points += 1,
            Slot::Exemplar => self.exemplars += 1,
            Slot::Series => self.series += 1,
        }
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} spans, {} data points, {} attributes, ~{} bytes decoded",
            self.spans, self.data_points, self.attributes, self.decoded_bytes
        )
    }
}

/// Scans an `ExportTraceServiceRequest` in protobuf form.
pub fn scan_traces(body: &[u8]) -> Result<Shape> {
    scan_root(body, &TRACES_REQUEST)
}

/// Scans an `ExportMetricsServiceRequest` in protobuf form.
pub fn scan_metrics(body: &[u8]) -> Result<Shape> {
    scan_root(body, &METRICS_REQUEST)
}

/// Scans an uncompressed remote-write `WriteRequest`. `decoded_bytes` includes the labels
/// that conversion copies onto every sample (a series with many labels and many samples is
/// the remote-write decode bomb).
pub fn scan_remote_write(body: &[u8]) -> Result<Shape> {
    scan_root(body, &WRITE_REQUEST)
}

fn scan_root(body: &[u8], msg: &'static Msg) -> Result<Shape> {
    let mut shape = scan_message(body, msg, 0)?;
    shape.decoded_bytes = shape.decoded_bytes.saturating_add(msg.size as u64);
    Ok(shape)
}

/// `Vec`s grow by doubling, so their capacity is at most twice what they hold (strings and
/// bytes are allocated at their exact length).
const VEC_SLACK: u64 = 2;

// =============================================================================================
// The schema: just enough of each message to count and size it
// =============================================================================================

#[derive(Debug, Clone, Copy)]
enum Slot {
    None,
    Resource,
    Scope,
    Span,
    Event,
    Link,
    Attribute,
    Metric,
    Point,
    Exemplar,
    Series,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    /// A nested message (repeated: each element is a heap object of the child's size;
    /// singular: inline in the parent, so only its own heap counts).
    Msg(&'static Msg),
    /// A string or bytes field: its length is on the heap.
    Bytes,
    /// A scalar (varint / fixed); repeated ones may be packed.
    Scalar,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    number: u32,
    /// The proto (snake_case) name, accepted in JSON too.
    name: &'static str,
    /// The OTLP/JSON (lowerCamelCase) name.
    json: &'static str,
    kind: Kind,
    repeated: bool,
    /// Members of one `oneof` share a non-zero group number.
    oneof: u8,
}

#[derive(Debug)]
struct Msg {
    size: usize,
    slot: Slot,
    fields: &'static [Field],
    /// Remote write: `(labels, samples)` field numbers of a series whose labels conversion
    /// copies onto every sample.
    copies_per_sample: Option<(u32, u32)>,
}

impl Msg {
    fn field(&self, number: u32) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.number == number)
    }

    fn json_field(&self, key: &str) -> Option<&'static Field> {
        self.fields.iter().find(|f| f.json == key || f.name == key)
    }
}

const fn f(number: u32, name: &'static str, json: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        json,
        kind,
        repeated: false,
        oneof: 0,
    }
}

const fn rep(number: u32, name: &'static str, json: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        json,
        kind,
        repeated: true,
        oneof: 0,
    }
}

const fn one(number: u32, name: &'static str, json: &'static str, kind: Kind) -> Field {
    Field {
        number,
        name,
        json,
        kind,
        repeated: false,
        oneof: 1,
    }
}

const fn msg(size: usize, slot: Slot, fields: &'static [Field]) -> Msg {
    Msg {
        size,
        slot,
        fields,
        copies_per_sample: None,
    }
}

use Kind::{Bytes as B, Scalar as S};
use std::mem::size_of;

static TRACES_REQUEST: Msg = msg(
    size_of::<ExportTraceServiceRequest>(),
    Slot::None,
    &[rep(
        1,
        "resource_spans",
        "resourceSpans",
        Kind::Msg(&RESOURCE_SPANS),
    )],
);
static RESOURCE_SPANS: Msg = msg(
    size_of::<ResourceSpans>(),
    Slot::Resource,
    &[
        f(1, "resource", "resource", Kind::Msg(&RESOURCE)),
        rep(2, "scope_spans", "scopeSpans", Kind::Msg(&SCOPE_SPANS)),
        f(3, "schema_url", "schemaUrl", B),
    ],
);
static RESOURCE: Msg = msg(
    0,
    Slot::None,
    &[
        rep(1, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(2, "dropped_attributes_count", "droppedAttributesCount", S),
        rep(3, "entity_refs", "entityRefs", Kind::Msg(&ENTITY_REF)),
    ],
);
static ENTITY_REF: Msg = msg(
    size_of::<EntityRef>(),
    Slot::None,
    &[
        f(1, "schema_url", "schemaUrl", B),
        f(2, "type", "type", B),
        rep(3, "id_keys", "idKeys", B),
        rep(4, "description_keys", "descriptionKeys", B),
    ],
);
static SCOPE_SPANS: Msg = msg(
    size_of::<ScopeSpans>(),
    Slot::Scope,
    &[
        f(1, "scope", "scope", Kind::Msg(&SCOPE)),
        rep(2, "spans", "spans", Kind::Msg(&SPAN)),
        f(3, "schema_url", "schemaUrl", B),
    ],
);
static SCOPE: Msg = msg(
    size_of::<InstrumentationScope>(),
    Slot::None,
    &[
        f(1, "name", "name", B),
        f(2, "version", "version", B),
        rep(3, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(4, "dropped_attributes_count", "droppedAttributesCount", S),
    ],
);
static SPAN: Msg = msg(
    size_of::<Span>(),
    Slot::Span,
    &[
        f(1, "trace_id", "traceId", B),
        f(2, "span_id", "spanId", B),
        f(3, "trace_state", "traceState", B),
        f(4, "parent_span_id", "parentSpanId", B),
        f(16, "flags", "flags", S),
        f(5, "name", "name", B),
        f(6, "kind", "kind", S),
        f(7, "start_time_unix_nano", "startTimeUnixNano", S),
        f(8, "end_time_unix_nano", "endTimeUnixNano", S),
        rep(9, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(10, "dropped_attributes_count", "droppedAttributesCount", S),
        rep(11, "events", "events", Kind::Msg(&EVENT)),
        f(12, "dropped_events_count", "droppedEventsCount", S),
        rep(13, "links", "links", Kind::Msg(&LINK)),
        f(14, "dropped_links_count", "droppedLinksCount", S),
        f(15, "status", "status", Kind::Msg(&STATUS)),
    ],
);
static EVENT: Msg = msg(
    size_of::<span::Event>(),
    Slot::Event,
    &[
        f(1, "time_unix_nano", "timeUnixNano", S),
        f(2, "name", "name", B),
        rep(3, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(4, "dropped_attributes_count", "droppedAttributesCount", S),
    ],
);
static LINK: Msg = msg(
    size_of::<span::Link>(),
    Slot::Link,
    &[
        f(1, "trace_id", "traceId", B),
        f(2, "span_id", "spanId", B),
        f(3, "trace_state", "traceState", B),
        rep(4, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(5, "dropped_attributes_count", "droppedAttributesCount", S),
        f(6, "flags", "flags", S),
    ],
);
static STATUS: Msg = msg(
    0,
    Slot::None,
    &[f(2, "message", "message", B), f(3, "code", "code", S)],
);
static KEY_VALUE: Msg = msg(
    size_of::<KeyValue>(),
    Slot::Attribute,
    &[
        f(1, "key", "key", B),
        f(2, "value", "value", Kind::Msg(&ANY_VALUE)),
        f(3, "key_strindex", "keyStrindex", S),
    ],
);
static ANY_VALUE: Msg = msg(
    size_of::<AnyValue>(),
    Slot::None,
    &[
        one(1, "string_value", "stringValue", B),
        one(2, "bool_value", "boolValue", S),
        one(3, "int_value", "intValue", S),
        one(4, "double_value", "doubleValue", S),
        one(5, "array_value", "arrayValue", Kind::Msg(&ARRAY_VALUE)),
        one(6, "kvlist_value", "kvlistValue", Kind::Msg(&KEY_VALUE_LIST)),
        one(7, "bytes_value", "bytesValue", B),
        one(8, "string_value_strindex", "stringValueStrindex", S),
    ],
);
static ARRAY_VALUE: Msg = msg(
    size_of::<ArrayValue>(),
    Slot::None,
    &[rep(1, "values", "values", Kind::Msg(&ANY_VALUE))],
);
static KEY_VALUE_LIST: Msg = msg(
    size_of::<KeyValueList>(),
    Slot::None,
    &[rep(1, "values", "values", Kind::Msg(&KEY_VALUE))],
);

static METRICS_REQUEST: Msg = msg(
    size_of::<ExportMetricsServiceRequest>(),
    Slot::None,
    &[rep(
        1,
        "resource_metrics",
        "resourceMetrics",
        Kind::Msg(&RESOURCE_METRICS),
    )],
);
static RESOURCE_METRICS: Msg = msg(
    size_of::<ResourceMetrics>(),
    Slot::Resource,
    &[
        f(1, "resource", "resource", Kind::Msg(&RESOURCE)),
        rep(
            2,
            "scope_metrics",
            "scopeMetrics",
            Kind::Msg(&SCOPE_METRICS),
        ),
        f(3, "schema_url", "schemaUrl", B),
    ],
);
static SCOPE_METRICS: Msg = msg(
    size_of::<ScopeMetrics>(),
    Slot::Scope,
    &[
        f(1, "scope", "scope", Kind::Msg(&SCOPE)),
        rep(2, "metrics", "metrics", Kind::Msg(&METRIC)),
        f(3, "schema_url", "schemaUrl", B),
    ],
);
static METRIC: Msg = msg(
    size_of::<Metric>(),
    Slot::Metric,
    &[
        f(1, "name", "name", B),
        f(2, "description", "description", B),
        f(3, "unit", "unit", B),
        one(5, "gauge", "gauge", Kind::Msg(&POINTS_OF_NUMBERS)),
        one(7, "sum", "sum", Kind::Msg(&POINTS_OF_NUMBERS)),
        one(
            9,
            "histogram",
            "histogram",
            Kind::Msg(&POINTS_OF_HISTOGRAMS),
        ),
        one(
            10,
            "exponential_histogram",
            "exponentialHistogram",
            Kind::Msg(&POINTS_OF_EXP_HISTOGRAMS),
        ),
        one(11, "summary", "summary", Kind::Msg(&POINTS_OF_SUMMARIES)),
        rep(12, "metadata", "metadata", Kind::Msg(&KEY_VALUE)),
    ],
);
/// `Gauge` and `Sum` (the same fields for counting: `Sum`'s others are scalars).
static POINTS_OF_NUMBERS: Msg = msg(
    size_of::<metric::Data>(),
    Slot::None,
    &[
        rep(1, "data_points", "dataPoints", Kind::Msg(&NUMBER_POINT)),
        f(2, "aggregation_temporality", "aggregationTemporality", S),
        f(3, "is_monotonic", "isMonotonic", S),
    ],
);
static POINTS_OF_HISTOGRAMS: Msg = msg(
    0,
    Slot::None,
    &[
        rep(1, "data_points", "dataPoints", Kind::Msg(&HISTOGRAM_POINT)),
        f(2, "aggregation_temporality", "aggregationTemporality", S),
    ],
);
static POINTS_OF_EXP_HISTOGRAMS: Msg = msg(
    0,
    Slot::None,
    &[
        rep(
            1,
            "data_points",
            "dataPoints",
            Kind::Msg(&EXP_HISTOGRAM_POINT),
        ),
        f(2, "aggregation_temporality", "aggregationTemporality", S),
    ],
);
static POINTS_OF_SUMMARIES: Msg = msg(
    0,
    Slot::None,
    &[rep(
        1,
        "data_points",
        "dataPoints",
        Kind::Msg(&SUMMARY_POINT),
    )],
);
static NUMBER_POINT: Msg = msg(
    size_of::<NumberDataPoint>(),
    Slot::Point,
    &[
        rep(7, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(2, "start_time_unix_nano", "startTimeUnixNano", S),
        f(3, "time_unix_nano", "timeUnixNano", S),
        one(4, "as_double", "asDouble", S),
        one(6, "as_int", "asInt", S),
        rep(5, "exemplars", "exemplars", Kind::Msg(&EXEMPLAR)),
        f(8, "flags", "flags", S),
    ],
);
static HISTOGRAM_POINT: Msg = msg(
    size_of::<HistogramDataPoint>(),
    Slot::Point,
    &[
        rep(9, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(2, "start_time_unix_nano", "startTimeUnixNano", S),
        f(3, "time_unix_nano", "timeUnixNano", S),
        f(4, "count", "count", S),
        f(5, "sum", "sum", S),
        rep(6, "bucket_counts", "bucketCounts", S),
        rep(7, "explicit_bounds", "explicitBounds", S),
        rep(8, "exemplars", "exemplars", Kind::Msg(&EXEMPLAR)),
        f(10, "flags", "flags", S),
        f(11, "min", "min", S),
        f(12, "max", "max", S),
    ],
);
static EXP_HISTOGRAM_POINT: Msg = msg(
    size_of::<ExponentialHistogramDataPoint>(),
    Slot::Point,
    &[
        rep(1, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(2, "start_time_unix_nano", "startTimeUnixNano", S),
        f(3, "time_unix_nano", "timeUnixNano", S),
        f(4, "count", "count", S),
        f(5, "sum", "sum", S),
        f(6, "scale", "scale", S),
        f(7, "zero_count", "zeroCount", S),
        f(8, "positive", "positive", Kind::Msg(&BUCKETS)),
        f(9, "negative", "negative", Kind::Msg(&BUCKETS)),
        f(10, "flags", "flags", S),
        rep(11, "exemplars", "exemplars", Kind::Msg(&EXEMPLAR)),
        f(12, "min", "min", S),
        f(13, "max", "max", S),
        f(14, "zero_threshold", "zeroThreshold", S),
    ],
);
static BUCKETS: Msg = msg(
    0,
    Slot::None,
    &[
        f(1, "offset", "offset", S),
        rep(2, "bucket_counts", "bucketCounts", S),
    ],
);
static SUMMARY_POINT: Msg = msg(
    size_of::<SummaryDataPoint>(),
    Slot::Point,
    &[
        rep(7, "attributes", "attributes", Kind::Msg(&KEY_VALUE)),
        f(2, "start_time_unix_nano", "startTimeUnixNano", S),
        f(3, "time_unix_nano", "timeUnixNano", S),
        f(4, "count", "count", S),
        f(5, "sum", "sum", S),
        rep(6, "quantile_values", "quantileValues", Kind::Msg(&QUANTILE)),
        f(8, "flags", "flags", S),
    ],
);
static QUANTILE: Msg = msg(
    size_of::<ValueAtQuantile>(),
    Slot::None,
    &[f(1, "quantile", "quantile", S), f(2, "value", "value", S)],
);
static EXEMPLAR: Msg = msg(
    size_of::<Exemplar>(),
    Slot::Exemplar,
    &[
        rep(
            7,
            "filtered_attributes",
            "filteredAttributes",
            Kind::Msg(&KEY_VALUE),
        ),
        f(2, "time_unix_nano", "timeUnixNano", S),
        one(3, "as_double", "asDouble", S),
        one(6, "as_int", "asInt", S),
        f(4, "span_id", "spanId", B),
        f(5, "trace_id", "traceId", B),
    ],
);

static WRITE_REQUEST: Msg = msg(
    size_of::<prometheus::WriteRequest>(),
    Slot::None,
    &[
        rep(1, "timeseries", "timeseries", Kind::Msg(&TIME_SERIES)),
        rep(3, "metadata", "metadata", Kind::Msg(&PROM_METADATA)),
    ],
);
static TIME_SERIES: Msg = Msg {
    size: size_of::<prometheus::TimeSeries>(),
    slot: Slot::Series,
    fields: &[
        rep(1, "labels", "labels", Kind::Msg(&PROM_LABEL)),
        rep(2, "samples", "samples", Kind::Msg(&PROM_SAMPLE)),
        rep(3, "exemplars", "exemplars", Kind::Msg(&PROM_EXEMPLAR)),
        rep(4, "histograms", "histograms", B),
    ],
    copies_per_sample: Some((1, 2)),
};
static PROM_LABEL: Msg = msg(
    size_of::<prometheus::Label>(),
    Slot::Attribute,
    &[f(1, "name", "name", B), f(2, "value", "value", B)],
);
static PROM_SAMPLE: Msg = msg(
    size_of::<prometheus::Sample>(),
    Slot::Point,
    &[f(1, "value", "value", S), f(2, "timestamp", "timestamp", S)],
);
static PROM_EXEMPLAR: Msg = msg(
    size_of::<prometheus::Exemplar>(),
    Slot::Exemplar,
    &[
        rep(1, "labels", "labels", Kind::Msg(&PROM_LABEL)),
        f(2, "value", "value", S),
        f(3, "timestamp", "timestamp", S),
    ],
);
static PROM_METADATA: Msg = msg(
    size_of::<prometheus::MetricMetadata>(),
    Slot::None,
    &[
        f(1, "type", "type", S),
        f(2, "metric_family_name", "metricFamilyName", B),
        f(4, "help", "help", B),
        f(5, "unit", "unit", B),
    ],
);

/// What one label becomes on every sample of its series: a `KeyValue` holding two strings.
const LABEL_COPY_BYTES: u64 = (size_of::<KeyValue>() + size_of::<AnyValue>()) as u64;

// =============================================================================================
// Protobuf wire format
// =============================================================================================

fn malformed(what: &str) -> Error {
    Error::Malformed(what.to_owned())
}

fn varint(buf: &mut &[u8]) -> Result<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let Some((&byte, rest)) = buf.split_first() else {
            return Err(malformed("truncated varint"));
        };
        *buf = rest;
        value |= u64::from(byte & 0x7f) << (7 * i);
        if byte < 0x80 {
            return Ok(value);
        }
    }
    Err(malformed("varint longer than 10 bytes"))
}

fn take<'a>(buf: &mut &'a [u8], len: u64) -> Result<&'a [u8]> {
    let len = usize::try_from(len).map_err(|_| malformed("length out of range"))?;
    if len > buf.len() {
        return Err(malformed("length past the end of the message"));
    }
    let (head, rest) = buf.split_at(len);
    *buf = rest;
    Ok(head)
}

/// A field key: (field number, wire type), checked as prost checks it.
fn key(buf: &mut &[u8]) -> Result<(u32, u8)> {
    let key = varint(buf)?;
    if key > u64::from(u32::MAX) {
        return Err(malformed("field key out of range"));
    }
    let wire = (key & 7) as u8;
    let number = (key >> 3) as u32;
    if number == 0 {
        return Err(malformed("field number 0"));
    }
    if wire > 5 {
        return Err(malformed("invalid wire type"));
    }
    Ok((number, wire))
}

/// Skips one field's value; groups (wire type 3) are skipped to their end tag.
fn skip(buf: &mut &[u8], number: u32, wire: u8, depth: u32) -> Result<()> {
    match wire {
        0 => {
            varint(buf)?;
        }
        1 => {
            take(buf, 8)?;
        }
        2 => {
            let len = varint(buf)?;
            take(buf, len)?;
        }
        3 => {
            if depth >= MAX_DEPTH {
                return Err(malformed("nested too deeply"));
            }
            loop {
                let (inner, inner_wire) = key(buf)?;
                if inner_wire == 4 {
                    if inner != number {
                        return Err(malformed("unmatched end-group tag"));
                    }
                    break;
                }
                skip(buf, inner, inner_wire, depth + 1)?;
            }
        }
        4 => return Err(malformed("unexpected end-group tag")),
        5 => {
            take(buf, 4)?;
        }
        _ => return Err(malformed("invalid wire type")),
    }
    Ok(())
}

/// Counts and sizes one message body (without the message's own inline size, which the
/// parent accounts for).
fn scan_message(mut buf: &[u8], msg: &'static Msg, depth: u32) -> Result<Shape> {
    if depth >= MAX_DEPTH {
        return Err(malformed("nested too deeply"));
    }
    let mut total = Shape::default();
    // prost's oneof rule: the same variant again merges, another variant replaces.
    let mut oneof: Option<(u32, Shape)> = None;
    let mut label_bytes = 0u64;
    let mut samples = 0u64;
    while !buf.is_empty() {
        let (number, wire) = key(&mut buf)?;
        let Some(field) = msg.field(number) else {
            skip(&mut buf, number, wire, depth)?;
            continue;
        };
        let mut got = Shape::default();
        match (field.kind, wire) {
            (Kind::Msg(child), 2) => {
                let len = varint(&mut buf)?;
                let body = take(&mut buf, len)?;
                got = scan_message(body, child, depth + 1)?;
                if field.repeated {
                    got.count(child.slot);
                    got.decoded_bytes = got
                        .decoded_bytes
                        .saturating_add(child.size as u64 * VEC_SLACK);
                } else {
                    // Singular child: counted when it is itself a counted type.
                    got.count(child.slot);
                }
                if let Some((labels, sample_field)) = msg.copies_per_sample {
                    if number == labels {
                        label_bytes = label_bytes
                            .saturating_add(got.decoded_bytes)
                            .saturating_add(LABEL_COPY_BYTES);
                    } else if number == sample_field {
                        samples += 1;
                    }
                }
            }
            (Kind::Bytes, 2) => {
                let len = varint(&mut buf)?;
                take(&mut buf, len)?;
                got.decoded_bytes = len.saturating_add(if field.repeated {
                    size_of::<String>() as u64 * VEC_SLACK
                } else {
                    0
                });
            }
            (Kind::Scalar, 2) if field.repeated => {
                // Packed: at least one byte per element, each at most 8 bytes decoded.
                let len = varint(&mut buf)?;
                take(&mut buf, len)?;
                got.decoded_bytes = len.saturating_mul(8);
            }
            (Kind::Scalar, _) if field.repeated => {
                skip(&mut buf, number, wire, depth)?;
                got.decoded_bytes = 8 * VEC_SLACK;
            }
            // A scalar, or a wire type prost will refuse: skipped, nothing counted.
            _ => skip(&mut buf, number, wire, depth)?,
        }
        if field.oneof != 0 {
            total.decoded_bytes = total.decoded_bytes.saturating_add(got.decoded_bytes);
            match &mut oneof {
                Some((variant, shape))
                    if *variant == number && matches!(field.kind, Kind::Msg(_)) =>
                {
                    shape.add(&got.counts());
                }
                _ => oneof = Some((number, got.counts())),
            }
        } else {
            total.add(&got);
        }
    }
    if let Some((_, shape)) = oneof {
        total.add(&shape);
    }
    if msg.copies_per_sample.is_some() {
        total.decoded_bytes = total
            .decoded_bytes
            .saturating_add(label_bytes.saturating_mul(samples));
    }
    Ok(total)
}

// =============================================================================================
// OTLP/JSON
// =============================================================================================

/// Scans an OTLP/JSON `ExportTraceServiceRequest` (see the module docs).
pub fn scan_traces_json(body: &[u8]) -> Result<Shape> {
    scan_json(body, &TRACES_REQUEST)
}

/// Scans an OTLP/JSON `ExportMetricsServiceRequest`.
pub fn scan_metrics_json(body: &[u8]) -> Result<Shape> {
    scan_json(body, &METRICS_REQUEST)
}

/// What one JSON object node costs in a `serde_json::Value` tree: its map's first B-tree
/// node (11 key/value slots), allocated on the first insert.
const JSON_OBJECT_BYTES: u64 =
    (11 * (size_of::<String>() + size_of::<serde_json::Value>()) + 64) as u64;
const JSON_VALUE_BYTES: u64 = size_of::<serde_json::Value>() as u64;
/// A key/value entry beyond what the first node holds (nodes are about two-thirds full).
const JSON_ENTRY_BYTES: u64 = (2 * (size_of::<String>() + size_of::<serde_json::Value>())) as u64;

fn scan_json(body: &[u8], root: &'static Msg) -> Result<Shape> {
    let mut tally = JsonTally::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    JsonNode {
        msg: Some(root),
        element: false,
        tally: &mut tally,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end())
    .map_err(|e| Error::Json(e.to_string()))?;
    let mut shape = tally.shape;
    // Decoded messages (Vec slack), plus the `Value` trees the decoder holds at once: the
    // resource / scope / metric parts, and one span or data point (the largest).
    shape.decoded_bytes = shape
        .decoded_bytes
        .saturating_add(root.size as u64)
        .saturating_add(tally.dom)
        .saturating_add(tally.largest_unit_dom);
    Ok(shape)
}

#[derive(Debug, Default)]
struct JsonTally {
    /// Counts, and the decoded messages' heap bytes.
    shape: Shape,
    /// `Value`-tree bytes outside spans and data points.
    dom: u64,
    /// The largest `Value` tree of one span or data point (the decoder builds one at a time).
    largest_unit_dom: u64,
}

/// One JSON value; when `msg` is set, an object is that message and an array holds them.
struct JsonNode<'s> {
    msg: Option<&'static Msg>,
    /// This value is an element of a repeated field (its message is a heap object).
    element: bool,
    tally: &'s mut JsonTally,
}

impl<'de> DeserializeSeed<'de> for JsonNode<'_> {
    type Value = ();

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl JsonNode<'_> {
    fn dom(&mut self, bytes: u64) {
        self.tally.dom = self.tally.dom.saturating_add(bytes);
    }
}

/// A key of a JSON object, matched against the message's fields without allocating.
struct JsonKey(Option<&'static Msg>);

impl<'de> DeserializeSeed<'de> for JsonKey {
    type Value = (Option<&'static Field>, u64);

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for JsonKey {
    type Value = (Option<&'static Field>, u64);

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Self::Value, E> {
        Ok((self.0.and_then(|m| m.json_field(key)), key.len() as u64))
    }
}

impl<'de> Visitor<'de> for JsonNode<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }

    fn visit_str<E>(mut self, s: &str) -> Result<(), E> {
        // In the Value tree, and decoded (strings, ids, base64: never longer).
        self.dom(s.len() as u64);
        self.tally.shape.decoded_bytes = self
            .tally
            .shape
            .decoded_bytes
            .saturating_add(s.len() as u64);
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let msg = self.msg;
        while seq
            .next_element_seed(JsonNode {
                msg,
                element: true,
                tally: &mut *self.tally,
            })?
            .is_some()
        {
            self.dom(JSON_VALUE_BYTES);
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        // A span or data point is one `Value` tree at a time: measured on its own.
        let unit = self
            .msg
            .is_some_and(|m| matches!(m.slot, Slot::Span | Slot::Point));
        let outer_dom = if unit {
            std::mem::take(&mut self.tally.dom)
        } else {
            0
        };
        let mut any_key = false;
        while let Some((field, key_len)) = map.next_key_seed(JsonKey(self.msg))? {
            any_key = true;
            self.dom(key_len + JSON_ENTRY_BYTES);
            match field.map(|f| f.kind) {
                Some(Kind::Msg(child)) => map.next_value_seed(JsonNode {
                    msg: Some(child),
                    element: false,
                    tally: &mut *self.tally,
                })?,
                // Scalars, strings, and unknown fields: only their Value-tree cost.
                _ => map.next_value_seed(JsonNode {
                    msg: None,
                    element: false,
                    tally: &mut *self.tally,
                })?,
            }
        }
        if any_key {
            self.dom(JSON_OBJECT_BYTES);
        }
        if let Some(msg) = self.msg {
            self.tally.shape.count(msg.slot);
            if self.element {
                let shape = &mut self.tally.shape;
                shape.decoded_bytes = shape
                    .decoded_bytes
                    .saturating_add(msg.size as u64 * VEC_SLACK);
            }
        }
        if unit {
            let own = std::mem::replace(&mut self.tally.dom, outer_dom);
            self.tally.largest_unit_dom = self.tally.largest_unit_dom.max(own);
        }
        Ok(())
    }
}

// =============================================================================================
// Reference counts from decoded messages (tests, fuzzing)
// =============================================================================================

/// The counts of a decoded traces request, computed the slow way (for tests and the fuzz
/// target `otlp_protobuf_prescan`: [`scan_traces`] must agree with this when prost decodes).
pub fn counts_of_traces(req: &ExportTraceServiceRequest) -> Shape {
    let mut s = Shape::default();
    for rs in &req.resource_spans {
        s.resources += 1;
        if let Some(r) = &rs.resource {
            kvs(&mut s, &r.attributes);
        }
        for ss in &rs.scope_spans {
            s.scopes += 1;
            if let Some(scope) = &ss.scope {
                kvs(&mut s, &scope.attributes);
            }
            for span in &ss.spans {
                s.spans += 1;
                kvs(&mut s, &span.attributes);
                for e in &span.events {
                    s.events += 1;
                    kvs(&mut s, &e.attributes);
                }
                for l in &span.links {
                    s.links += 1;
                    kvs(&mut s, &l.attributes);
                }
            }
        }
    }
    s
}

/// The counts of a decoded metrics request (see [`counts_of_traces`]).
pub fn counts_of_metrics(req: &ExportMetricsServiceRequest) -> Shape {
    use metric::Data;
    let mut s = Shape::default();
    for rm in &req.resource_metrics {
        s.resources += 1;
        if let Some(r) = &rm.resource {
            kvs(&mut s, &r.attributes);
        }
        for sm in &rm.scope_metrics {
            s.scopes += 1;
            if let Some(scope) = &sm.scope {
                kvs(&mut s, &scope.attributes);
            }
            for m in &sm.metrics {
                s.metrics += 1;
                kvs(&mut s, &m.metadata);
                let exemplars = |s: &mut Shape, list: &[Exemplar]| {
                    for e in list {
                        s.exemplars += 1;
                        kvs(s, &e.filtered_attributes);
                    }
                };
                match &m.data {
                    Some(Data::Gauge(g)) => g.data_points.iter().for_each(|p| {
                        s.data_points += 1;
                        kvs(&mut s, &p.attributes);
                        exemplars(&mut s, &p.exemplars);
                    }),
                    Some(Data::Sum(g)) => g.data_points.iter().for_each(|p| {
                        s.data_points += 1;
                        kvs(&mut s, &p.attributes);
                        exemplars(&mut s, &p.exemplars);
                    }),
                    Some(Data::Histogram(g)) => g.data_points.iter().for_each(|p| {
                        s.data_points += 1;
                        kvs(&mut s, &p.attributes);
                        exemplars(&mut s, &p.exemplars);
                    }),
                    Some(Data::ExponentialHistogram(g)) => g.data_points.iter().for_each(|p| {
                        s.data_points += 1;
                        kvs(&mut s, &p.attributes);
                        exemplars(&mut s, &p.exemplars);
                    }),
                    Some(Data::Summary(g)) => g.data_points.iter().for_each(|p| {
                        s.data_points += 1;
                        kvs(&mut s, &p.attributes);
                    }),
                    None => {}
                }
            }
        }
    }
    s
}

/// The counts of a decoded remote-write request.
pub fn counts_of_remote_write(req: &prometheus::WriteRequest) -> Shape {
    let mut s = Shape::default();
    for ts in &req.timeseries {
        s.series += 1;
        s.attributes += ts.labels.len() as u64;
        s.data_points += ts.samples.len() as u64;
        for e in &ts.exemplars {
            s.exemplars += 1;
            s.attributes += e.labels.len() as u64;
        }
    }
    s
}

fn kvs(s: &mut Shape, list: &[KeyValue]) {
    for kv in list {
        s.attributes += 1;
        if let Some(v) = &kv.value {
            nested_kvs(s, v);
        }
    }
}

fn nested_kvs(s: &mut Shape, v: &AnyValue) {
    match &v.value {
        Some(any_value::Value::ArrayValue(a)) => a.values.iter().for_each(|v| nested_kvs(s, v)),
        Some(any_value::Value::KvlistValue(l)) => kvs(s, &l.values),
        _ => {}
    }
}

/// Fuzz and property-test entry point: scans `data` as a traces, metrics and remote-write
/// body and checks every scan against prost. Panics on a disagreement.
pub fn check_protobuf_prescan(data: &[u8]) {
    use prost::Message as _;
    let scanned = scan_traces(data);
    if let Ok(req) = ExportTraceServiceRequest::decode(data) {
        let scanned = scanned.expect("prost decoded a traces body the scanner refused");
        assert_eq!(scanned.counts(), counts_of_traces(&req), "traces counts");
    }
    let scanned = scan_metrics(data);
    if let Ok(req) = ExportMetricsServiceRequest::decode(data) {
        let scanned = scanned.expect("prost decoded a metrics body the scanner refused");
        assert_eq!(scanned.counts(), counts_of_metrics(&req), "metrics counts");
    }
    let scanned = scan_remote_write(data);
    if let Ok(req) = prometheus::WriteRequest::decode(data) {
        let scanned = scanned.expect("prost decoded a remote-write body the scanner refused");
        assert_eq!(
            scanned.counts(),
            counts_of_remote_write(&req),
            "remote-write counts"
        );
    }
}

/// Fuzz and property-test entry point: scans and decodes `data` as OTLP/JSON (traces when
/// `traces`, else metrics). Panics when the decoder accepts a body the scanner refused, or
/// when the scanner counts fewer items than were decoded.
pub fn check_json(data: &[u8], traces: bool) {
    if traces {
        let scanned = scan_traces_json(data);
        if let Ok(req) = crate::otlp_json::decode_traces(data) {
            let scanned = scanned.expect("decoder accepted a traces body the scanner refused");
            let decoded = counts_of_traces(&req);
            assert!(scanned.spans >= decoded.spans, "{scanned:?} vs {decoded:?}");
            assert!(scanned.attributes >= decoded.attributes);
            assert!(scanned.events >= decoded.events && scanned.links >= decoded.links);
            let _ = crate::spans::from_otlp(&req);
        }
    } else {
        let scanned = scan_metrics_json(data);
        if let Ok(req) = crate::otlp_json::decode_metrics(data) {
            let scanned = scanned.expect("decoder accepted a metrics body the scanner refused");
            let decoded = counts_of_metrics(&req);
            assert!(
                scanned.data_points >= decoded.data_points,
                "{scanned:?} vs {decoded:?}"
            );
            assert!(scanned.attributes >= decoded.attributes);
            let _ = crate::metrics::from_otlp(&req);
        }
    }
}

/// Fuzz entry point for remote write: `data` as a snappy body, and `data` compressed as the
/// protobuf inside one (so the fuzzer reaches the decoder without learning snappy).
pub fn check_remote_write_input(data: &[u8]) {
    check_remote_write(data);
    if let Ok(compressed) = snap::raw::Encoder::new().compress_vec(data) {
        check_remote_write(&compressed);
    }
}

/// Fuzz and property-test entry point for remote write: a snappy body through the scanner,
/// the decoder and the conversion; never panics.
pub fn check_remote_write(snappy_body: &[u8]) {
    if let Ok(req) = prometheus::decode_remote_write(snappy_body) {
        let raw = snap::raw::Decoder::new()
            .decompress_vec(snappy_body)
            .expect("decoded once already");
        let scanned = scan_remote_write(&raw).expect("prost decoded a body the scanner refused");
        assert_eq!(scanned.counts(), counts_of_remote_write(&req));
        // The conversion copies labels onto every sample: only run it where that is small.
        if scanned.decoded_bytes < 64 << 20 {
            let _ = prometheus::metrics_from_remote_write(&req);
        }
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::common::v1::KeyValueList;
    use opentelemetry_proto::tonic::metrics::v1::{Gauge, Histogram, Sum, Summary};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::Status;
    use proptest::prelude::*;
    use prost::Message as _;

    use super::*;

    fn kv(key: &str, value: Option<any_value::Value>) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value }),
            key_strindex: 0,
        }
    }

    /// Attribute lists with nested kvlists / arrays, `depth` levels deep at most.
    fn attrs(depth: u32) -> BoxedStrategy<Vec<KeyValue>> {
        let leaf = prop_oneof![
            Just(None),
            "[a-z]{0,4}".prop_map(|s| Some(any_value::Value::StringValue(s))),
            any::<i64>().prop_map(|i| Some(any_value::Value::IntValue(i))),
        ];
        let value = if depth == 0 {
            leaf.boxed()
        } else {
            prop_oneof![
                3 => leaf,
                1 => attrs(depth - 1).prop_map(|values| Some(any_value::Value::KvlistValue(
                    KeyValueList { values }
                ))),
                1 => attrs(depth - 1).prop_map(|values| Some(any_value::Value::ArrayValue(
                    ArrayValue { values: values.into_iter().filter_map(|kv| kv.value).collect() }
                ))),
            ]
            .boxed()
        };
        prop::collection::vec(("[a-z]{0,3}", value).prop_map(|(k, v)| kv(&k, v)), 0..4).boxed()
    }

    fn span() -> impl Strategy<Value = Span> {
        (
            attrs(2),
            prop::collection::vec(attrs(1), 0..3),
            prop::collection::vec(attrs(1), 0..3),
            any::<bool>(),
        )
            .prop_map(|(attributes, events, links, status)| Span {
                trace_id: vec![1; 16],
                name: "s".into(),
                attributes,
                events: events
                    .into_iter()
                    .map(|attributes| span::Event {
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                links: links
                    .into_iter()
                    .map(|attributes| span::Link {
                        attributes,
                        ..Default::default()
                    })
                    .collect(),
                status: status.then(|| Status {
                    message: "m".into(),
                    code: 2,
                }),
                ..Default::default()
            })
    }

    fn traces() -> impl Strategy<Value = ExportTraceServiceRequest> {
        prop::collection::vec(
            (
                attrs(1),
                prop::collection::vec(prop::collection::vec(span(), 0..4), 0..3),
            ),
            0..3,
        )
        .prop_map(|resources| ExportTraceServiceRequest {
            resource_spans: resources
                .into_iter()
                .map(|(attributes, scopes)| ResourceSpans {
                    resource: Some(Resource {
                        attributes,
                        ..Default::default()
                    }),
                    scope_spans: scopes
                        .into_iter()
                        .map(|spans| ScopeSpans {
                            spans,
                            ..Default::default()
                        })
                        .collect(),
                    schema_url: String::new(),
                })
                .collect(),
        })
    }

    fn metric() -> impl Strategy<Value = Metric> {
        (0..6u8, prop::collection::vec(attrs(1), 0..4)).prop_map(|(kind, points)| {
            let numbers = || {
                points
                    .iter()
                    .map(|a| NumberDataPoint {
                        attributes: a.clone(),
                        exemplars: vec![Exemplar::default()],
                        ..Default::default()
                    })
                    .collect::<Vec<_>>()
            };
            let data = match kind {
                0 => None,
                1 => Some(metric::Data::Gauge(Gauge {
                    data_points: numbers(),
                })),
                2 => Some(metric::Data::Sum(Sum {
                    data_points: numbers(),
                    ..Default::default()
                })),
                3 => Some(metric::Data::Histogram(Histogram {
                    data_points: points
                        .iter()
                        .map(|a| HistogramDataPoint {
                            attributes: a.clone(),
                            bucket_counts: vec![1, 2, 3],
                            explicit_bounds: vec![1.0, 2.0],
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                })),
                4 => Some(metric::Data::Summary(Summary {
                    data_points: points
                        .iter()
                        .map(|a| SummaryDataPoint {
                            attributes: a.clone(),
                            quantile_values: vec![ValueAtQuantile::default()],
                            ..Default::default()
                        })
                        .collect(),
                })),
                _ => Some(metric::Data::ExponentialHistogram(
                    opentelemetry_proto::tonic::metrics::v1::ExponentialHistogram {
                        data_points: points
                            .iter()
                            .map(|a| ExponentialHistogramDataPoint {
                                attributes: a.clone(),
                                ..Default::default()
                            })
                            .collect(),
                        ..Default::default()
                    },
                )),
            };
            Metric {
                name: "m".into(),
                data,
                ..Default::default()
            }
        })
    }

    fn metrics() -> impl Strategy<Value = ExportMetricsServiceRequest> {
        prop::collection::vec(prop::collection::vec(metric(), 0..4), 0..3).prop_map(|scopes| {
            ExportMetricsServiceRequest {
                resource_metrics: vec![ResourceMetrics {
                    scope_metrics: scopes
                        .into_iter()
                        .map(|metrics| ScopeMetrics {
                            metrics,
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
            }
        })
    }

    /// Damage that keeps some bodies decodable: truncation, a flipped byte, two bodies
    /// concatenated (protobuf's merge: repeated fields append, oneofs may be replaced).
    fn damaged(a: Vec<u8>, b: Vec<u8>, op: u8, at: usize, byte: u8) -> Vec<u8> {
        match op % 4 {
            0 => a,
            1 => a[..at % (a.len() + 1)].to_vec(),
            2 => {
                let mut a = a;
                if !a.is_empty() {
                    let i = at % a.len();
                    a[i] = byte;
                }
                a
            }
            _ => [a, b].concat(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(400))]

        #[test]
        fn scan_agrees_with_prost_on_traces(
            a in traces(), b in traces(), op: u8, at: usize, byte: u8,
        ) {
            let body = damaged(a.encode_to_vec(), b.encode_to_vec(), op, at, byte);
            check_protobuf_prescan(&body);
            if op % 4 == 0 {
                prop_assert_eq!(scan_traces(&body).unwrap().counts(), counts_of_traces(&a));
            }
        }

        #[test]
        fn scan_agrees_with_prost_on_metrics(
            a in metrics(), b in metrics(), op: u8, at: usize, byte: u8,
        ) {
            let body = damaged(a.encode_to_vec(), b.encode_to_vec(), op, at, byte);
            check_protobuf_prescan(&body);
        }

        #[test]
        fn scan_never_panics_on_bytes(body in prop::collection::vec(any::<u8>(), 0..256)) {
            check_protobuf_prescan(&body);
            check_json(&body, true);
            check_json(&body, false);
            check_remote_write_input(&body);
        }

        #[test]
        fn json_scan_bounds_the_decoder(a in traces(), m in metrics(), op: u8, at: usize) {
            let traces = crate::otlp_json::encode_resource_spans(&a.resource_spans).to_string();
            let metrics = crate::otlp_json::encode_resource_metrics(&m.resource_metrics).to_string();
            let traces = damaged(traces.into_bytes(), Vec::new(), op % 2, at, 0);
            check_json(&traces, true);
            check_json(metrics.as_bytes(), false);
            if op % 2 == 0 {
                let scanned = scan_traces_json(&traces).unwrap();
                prop_assert_eq!(scanned.counts(), counts_of_traces(&a));
            }
        }

        #[test]
        fn remote_write_scan_agrees(series in prop::collection::vec((0..5usize, 0..5usize), 0..5), op: u8, at: usize, byte: u8) {
            let req = prometheus::WriteRequest {
                timeseries: series.iter().map(|&(labels, samples)| prometheus::TimeSeries {
                    labels: (0..labels).map(|i| prometheus::Label { name: format!("l{i}"), value: "v".into() }).collect(),
                    samples: (0..samples).map(|i| prometheus::Sample { value: 1.0, timestamp: i as i64 }).collect(),
                    ..Default::default()
                }).collect(),
                metadata: Vec::new(),
            };
            let body = damaged(req.encode_to_vec(), req.encode_to_vec(), op, at, byte);
            check_protobuf_prescan(&body);
            let snappy = snap::raw::Encoder::new().compress_vec(&body).unwrap();
            check_remote_write(&snappy);
        }
    }

    #[test]
    fn empty_spans_are_counted_and_sized() {
        // The decode bomb of issue 14: empty spans, two bytes each.
        let body: Vec<u8> = [vec![0x0a, 0x00]; 1]
            .iter()
            .flatten()
            .copied()
            .collect::<Vec<_>>();
        assert_eq!(scan_traces(&body).unwrap().resources, 1);
        let n = 10_000;
        let scope: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], n).flatten().collect();
        let mut rs = vec![0x12];
        prost::encoding::encode_varint(scope.len() as u64, &mut rs);
        rs.extend(&scope);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(rs.len() as u64, &mut body);
        body.extend(&rs);
        let shape = scan_traces(&body).unwrap();
        assert_eq!(shape.spans, n as u64);
        assert_eq!(shape.items(), n as u64);
        // ~20 kB of body, but the decoded spans are at least n x size_of::<Span>().
        assert!(shape.decoded_bytes >= (n * size_of::<Span>()) as u64);
        assert!(shape.decoded_bytes <= (2 * n * size_of::<Span>()) as u64 + 4096);
        let decoded = ExportTraceServiceRequest::decode(body.as_slice()).unwrap();
        assert_eq!(counts_of_traces(&decoded), shape.counts());
    }

    /// `inner` as a length-delimited field whose key byte is `key`.
    fn wrap(key: u8, inner: &[u8]) -> Vec<u8> {
        let mut out = vec![key];
        prost::encoding::encode_varint(inner.len() as u64, &mut out);
        out.extend_from_slice(inner);
        out
    }

    #[test]
    fn deep_nesting_is_refused_like_prost() {
        // 10,000 nested kvlist values inside one span attribute.
        let mut kv: Vec<u8> = Vec::new();
        for _ in 0..10_000 {
            // KeyValue.value(2) = AnyValue { kvlist_value(6) = KeyValueList { values(1) } }
            kv = wrap(0x12, &wrap(0x32, &wrap(0x0a, &kv)));
        }
        let span = wrap(0x4a, &kv);
        let body = wrap(0x0a, &wrap(0x12, &wrap(0x12, &span)));
        assert!(scan_traces(&body).is_err());
        assert!(ExportTraceServiceRequest::decode(body.as_slice()).is_err());
        check_protobuf_prescan(&body);
    }

    #[test]
    fn oneof_replacement_and_merge_follow_prost() {
        let kvlist = AnyValue {
            value: Some(any_value::Value::KvlistValue(KeyValueList {
                values: vec![kv("a", None), kv("b", None)],
            })),
        }
        .encode_to_vec();
        let string = AnyValue {
            value: Some(any_value::Value::StringValue("s".into())),
        }
        .encode_to_vec();
        for (any, nested) in [
            ([&kvlist[..], &string[..]].concat(), 0),
            ([&string[..], &kvlist[..]].concat(), 2),
            ([&kvlist[..], &kvlist[..]].concat(), 4),
        ] {
            let attribute = wrap(0x4a, &wrap(0x12, &any));
            let body = wrap(0x0a, &wrap(0x12, &wrap(0x12, &attribute)));
            check_protobuf_prescan(&body);
            assert_eq!(scan_traces(&body).unwrap().attributes, 1 + nested);
        }
        let gauge = Metric {
            data: Some(metric::Data::Gauge(Gauge {
                data_points: vec![NumberDataPoint::default(); 3],
            })),
            ..Default::default()
        }
        .encode_to_vec();
        let sum = Metric {
            data: Some(metric::Data::Sum(Sum {
                data_points: vec![NumberDataPoint::default(); 2],
                ..Default::default()
            })),
            ..Default::default()
        }
        .encode_to_vec();
        for (metric, points) in [
            ([&gauge[..], &sum[..]].concat(), 2),
            ([&gauge[..], &gauge[..]].concat(), 6),
        ] {
            let body = wrap(0x0a, &wrap(0x12, &wrap(0x12, &metric)));
            check_protobuf_prescan(&body);
            assert_eq!(scan_metrics(&body).unwrap().data_points, points);
        }
    }

    #[test]
    fn remote_write_label_copies_are_sized() {
        let labels: Vec<_> = (0..100)
            .map(|i| prometheus::Label {
                name: format!("label_{i}"),
                value: "x".repeat(100),
            })
            .collect();
        let req = prometheus::WriteRequest {
            timeseries: vec![prometheus::TimeSeries {
                labels,
                samples: vec![prometheus::Sample::default(); 1000],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let body = req.encode_to_vec();
        let shape = scan_remote_write(&body).unwrap();
        assert_eq!(shape.data_points, 1000);
        // 1,000 samples x 100 labels of ~110 bytes each are copied at conversion.
        assert!(shape.decoded_bytes > 1000 * 100 * 110, "{shape:?}");
    }

    #[test]
    fn json_scan_counts_spans_without_a_dom() {
        let body = br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{},{},{"attributes":[{"key":"a","value":{"kvlistValue":{"values":[{"key":"b"}]}}}]}]}]}]}"#;
        let shape = scan_traces_json(body).unwrap();
        assert_eq!(shape.spans, 3);
        assert_eq!(shape.attributes, 2);
        assert!(scan_traces_json(b"{\"resourceSpans\":[").is_err());
    }
}
