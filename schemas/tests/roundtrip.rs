//! Property tests for the whole storage path, and checks of the written Parquet files:
//!
//! ```text
//!  arbitrary OTLP request ─from_otlp─▶ RecordBatch ─sort─▶ Parquet (writer_properties)
//!        ▲                                                     │ read back
//!        └──── equal after normalisation ◀──to_otlp─── RecordBatch
//! ```
//!
//! Normalisation: requests are flattened to (resource, scope, span) / (resource, scope,
//! metric, point) tuples, compared as protobuf bytes (so doubles compare bit for bit: -0.0,
//! infinities and NaN payloads count) and sorted; the documented equivalences are applied
//! first (absent resource/scope/status == default, empty `AnyValue` == no value).

// Helpers of tests may unwrap: a failed step is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use parquet::basic::Compression;
use proptest::prelude::*;
use prost::Message;
use weft_schemas::parquet_settings::{ParquetSettings, writer_properties};
use weft_schemas::{Table, metrics, spans};

// =============================================================================================
// Parquet helpers
// =============================================================================================

/// Sorts like the collector does before writing.
fn sort(table: Table, batch: &RecordBatch) -> RecordBatch {
    let columns: Vec<SortColumn> = table
        .sort_columns()
        .iter()
        .map(|c| SortColumn {
            values: Arc::clone(batch.column_by_name(c).unwrap()),
            options: None,
        })
        .collect();
    let indices = lexsort_to_indices(&columns, None).unwrap();
    take_record_batch(batch, &indices).unwrap()
}

fn write_parquet(table: Table, batch: &RecordBatch, settings: &ParquetSettings) -> Bytes {
    let props = writer_properties(table, settings, batch.num_rows() as u64);
    let mut out = Vec::new();
    let mut w = ArrowWriter::try_new(&mut out, table.schema(), Some(props)).unwrap();
    w.write(&sort(table, batch)).unwrap();
    w.close().unwrap();
    Bytes::from(out)
}

fn read_parquet(file: Bytes) -> Vec<RecordBatch> {
    ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .with_batch_size(7) // several batches: exercises grouping across batch boundaries
        .build()
        .unwrap()
        .map(|b| b.unwrap())
        .collect()
}

// =============================================================================================
// Strategies
// =============================================================================================

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[a-z.]{0,12}",
        1 => any::<String>(),
        1 => Just(String::new()),
    ]
}

fn double() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>().prop_filter("finite", |d| d.is_finite()),
        1 => Just(-0.0),
        1 => Just(f64::INFINITY),
        1 => Just(f64::NEG_INFINITY),
        // Only the canonical NaN: attribute values are stored as text ("NaN").
        1 => Just(f64::NAN),
    ]
}

fn any_value() -> impl Strategy<Value = AnyValue> {
    use any_value::Value as V;
    let leaf = prop_oneof![
        text().prop_map(|s| Some(V::StringValue(s))),
        any::<bool>().prop_map(|b| Some(V::BoolValue(b))),
        any::<i64>().prop_map(|i| Some(V::IntValue(i))),
        double().prop_map(|d| Some(V::DoubleValue(d))),
        prop::collection::vec(any::<u8>(), 0..8).prop_map(|b| Some(V::BytesValue(b))),
        Just(None),
    ]
    .prop_map(|value| AnyValue { value });
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|values| AnyValue {
                value: Some(V::ArrayValue(ArrayValue { values })),
            }),
            prop::collection::vec((text(), prop::option::of(inner)), 0..4).prop_map(|kvs| {
                AnyValue {
                    value: Some(V::KvlistValue(KeyValueList {
                        values: kvs
                            .into_iter()
                            .map(|(key, value)| KeyValue {
                                key,
                                value,
                                key_strindex: 0,
                            })
                            .collect(),
                    })),
                }
            }),
        ]
    })
}

fn attributes() -> impl Strategy<Value = Vec<KeyValue>> {
    let kv = (text(), prop::option::of(any_value())).prop_map(|(key, value)| KeyValue {
        key,
        value,
        key_strindex: 0,
    });
    prop_oneof![
        // Mostly all-string lists, the common case (attribute_types NULL).
        2 => prop::collection::vec((text(), text()), 0..4).prop_map(|kvs| kvs
            .into_iter()
            .map(|(key, s)| KeyValue {
                key,
                value: Some(AnyValue { value: Some(any_value::Value::StringValue(s)) }),
                key_strindex: 0,
            })
            .collect()),
        1 => prop::collection::vec(kv, 0..5),
    ]
}

fn id(len: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), len)
        .prop_filter("non-zero id", |v| v.iter().any(|b| *b != 0))
}

fn time() -> impl Strategy<Value = u64> {
    prop_oneof![0..=i64::MAX as u64, Just(0), Just(i64::MAX as u64)]
}

fn resource() -> impl Strategy<Value = Option<Resource>> {
    prop::option::weighted(
        0.9,
        (attributes(), any::<u32>(), any::<bool>()).prop_map(|(mut attributes, dropped, svc)| {
            if svc {
                attributes.insert(
                    0,
                    KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue("svc".into())),
                        }),
                        key_strindex: 0,
                    },
                );
            }
            Resource {
                attributes,
                dropped_attributes_count: dropped,
                entity_refs: Vec::new(),
            }
        }),
    )
}

fn scope() -> impl Strategy<Value = Option<InstrumentationScope>> {
    prop::option::weighted(
        0.9,
        (text(), text(), attributes(), any::<u32>()).prop_map(
            |(name, version, attributes, dropped_attributes_count)| InstrumentationScope {
                name,
                version,
                attributes,
                dropped_attributes_count,
            },
        ),
    )
}

fn span_strategy() -> impl Strategy<Value = Span> {
    let event = (time(), text(), attributes(), any::<u32>()).prop_map(
        |(time_unix_nano, name, attributes, dropped_attributes_count)| span::Event {
            time_unix_nano,
            name,
            attributes,
            dropped_attributes_count,
        },
    );
    let link = (
        id(16),
        id(8),
        text(),
        attributes(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(trace_id, span_id, trace_state, attributes, dropped_attributes_count, flags)| {
                span::Link {
                    trace_id,
                    span_id,
                    trace_state,
                    attributes,
                    dropped_attributes_count,
                    flags,
                }
            },
        );
    let status =
        prop::option::of((text(), 0..3i32).prop_map(|(message, code)| Status { message, code }));
    (
        (id(16), id(8), prop::option::of(id(8)), text(), any::<u32>()),
        (text(), 0..6i32, time(), time()),
        (attributes(), any::<u32>()),
        (prop::collection::vec(event, 0..3), any::<u32>()),
        (prop::collection::vec(link, 0..3), any::<u32>()),
        status,
    )
        .prop_map(
            |(
                (trace_id, span_id, parent, trace_state, flags),
                (name, kind, start, end),
                (attributes, dropped_attributes_count),
                (events, dropped_events_count),
                (links, dropped_links_count),
                status,
            )| Span {
                trace_id,
                span_id,
                trace_state,
                parent_span_id: parent.unwrap_or_default(),
                flags,
                name,
                kind,
                start_time_unix_nano: start,
                end_time_unix_nano: end,
                attributes,
                dropped_attributes_count,
                events,
                dropped_events_count,
                links,
                dropped_links_count,
                status,
            },
        )
}

fn trace_request() -> impl Strategy<Value = ExportTraceServiceRequest> {
    let scope_spans = (
        scope(),
        prop::collection::vec(span_strategy(), 0..4),
        text(),
    )
        .prop_map(|(scope, spans, schema_url)| ScopeSpans {
            scope,
            spans,
            schema_url,
        });
    let resource_spans = (resource(), prop::collection::vec(scope_spans, 0..3), text()).prop_map(
        |(resource, scope_spans, schema_url)| ResourceSpans {
            resource,
            scope_spans,
            schema_url,
        },
    );
    prop::collection::vec(resource_spans, 0..3)
        .prop_map(|resource_spans| ExportTraceServiceRequest { resource_spans })
}

fn exemplar_strategy() -> impl Strategy<Value = Exemplar> {
    (
        attributes(),
        time(),
        prop::option::of(id(8)),
        prop::option::of(id(16)),
        prop_oneof![
            any::<f64>().prop_map(|d| Some(exemplar::Value::AsDouble(d))),
            any::<i64>().prop_map(|i| Some(exemplar::Value::AsInt(i))),
            Just(None),
        ],
    )
        .prop_map(
            |(filtered_attributes, time_unix_nano, span_id, trace_id, value)| Exemplar {
                filtered_attributes,
                time_unix_nano,
                span_id: span_id.unwrap_or_default(),
                trace_id: trace_id.unwrap_or_default(),
                value,
            },
        )
}

/// (attributes, start, time, flags): what every point type shares.
fn point_common() -> impl Strategy<Value = (Vec<KeyValue>, u64, u64, u32)> {
    (attributes(), time(), time(), any::<u32>())
}

fn exemplars() -> impl Strategy<Value = Vec<Exemplar>> {
    prop::collection::vec(exemplar_strategy(), 0..3)
}

fn number_points() -> impl Strategy<Value = Vec<NumberDataPoint>> {
    let value = prop_oneof![
        any::<f64>().prop_map(|d| Some(number_data_point::Value::AsDouble(d))),
        any::<i64>().prop_map(|i| Some(number_data_point::Value::AsInt(i))),
        Just(None),
    ];
    prop::collection::vec(
        (point_common(), exemplars(), value).prop_map(
            |((attributes, start, time, flags), exemplars, value)| NumberDataPoint {
                attributes,
                start_time_unix_nano: start,
                time_unix_nano: time,
                exemplars,
                flags,
                value,
            },
        ),
        0..3,
    )
}

fn buckets() -> impl Strategy<Value = Option<Buckets>> {
    prop::option::of(
        (any::<i32>(), prop::collection::vec(any::<u64>(), 0..4)).prop_map(
            |(offset, bucket_counts)| Buckets {
                offset,
                bucket_counts,
            },
        ),
    )
}

fn metric_data() -> impl Strategy<Value = Option<metric::Data>> {
    let opt_f64 = || prop::option::of(any::<f64>());
    let histogram = prop::collection::vec(
        (
            point_common(),
            exemplars(),
            (any::<u64>(), opt_f64(), opt_f64(), opt_f64()),
            prop::collection::vec(any::<u64>(), 0..4),
            prop::collection::vec(any::<f64>(), 0..4),
        )
            .prop_map(
                |((attributes, start, time, flags), exemplars, (count, sum, min, max), bc, eb)| {
                    HistogramDataPoint {
                        attributes,
                        start_time_unix_nano: start,
                        time_unix_nano: time,
                        count,
                        sum,
                        bucket_counts: bc,
                        explicit_bounds: eb,
                        exemplars,
                        flags,
                        min,
                        max,
                    }
                },
            ),
        0..3,
    );
    let exp = prop::collection::vec(
        (
            point_common(),
            exemplars(),
            (any::<u64>(), opt_f64(), opt_f64(), opt_f64()),
            (
                any::<i32>(),
                any::<u64>(),
                any::<f64>(),
                buckets(),
                buckets(),
            ),
        )
            .prop_map(
                |(
                    (attributes, start, time, flags),
                    exemplars,
                    (count, sum, min, max),
                    (scale, zero_count, zero_threshold, positive, negative),
                )| ExponentialHistogramDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    scale,
                    zero_count,
                    positive,
                    negative,
                    flags,
                    exemplars,
                    min,
                    max,
                    zero_threshold,
                },
            ),
        0..3,
    );
    let summary = prop::collection::vec(
        (
            point_common(),
            any::<u64>(),
            any::<f64>(),
            prop::collection::vec((any::<f64>(), any::<f64>()), 0..4),
        )
            .prop_map(|((attributes, start, time, flags), count, sum, q)| {
                SummaryDataPoint {
                    attributes,
                    start_time_unix_nano: start,
                    time_unix_nano: time,
                    count,
                    sum,
                    quantile_values: q
                        .into_iter()
                        .map(|(quantile, value)| ValueAtQuantile { quantile, value })
                        .collect(),
                    flags,
                }
            }),
        0..3,
    );
    prop_oneof![
        number_points().prop_map(|data_points| Some(metric::Data::Gauge(Gauge { data_points }))),
        (number_points(), 0..3i32, any::<bool>()).prop_map(|(data_points, t, m)| Some(
            metric::Data::Sum(Sum {
                data_points,
                aggregation_temporality: t,
                is_monotonic: m,
            })
        )),
        (histogram, 0..3i32).prop_map(|(data_points, t)| Some(metric::Data::Histogram(
            Histogram {
                data_points,
                aggregation_temporality: t,
            }
        ))),
        (exp, 0..3i32).prop_map(|(data_points, t)| Some(metric::Data::ExponentialHistogram(
            ExponentialHistogram {
                data_points,
                aggregation_temporality: t,
            }
        ))),
        summary.prop_map(|data_points| Some(metric::Data::Summary(Summary { data_points }))),
        Just(None),
    ]
}

fn metrics_request() -> impl Strategy<Value = ExportMetricsServiceRequest> {
    let metric = ("[a-z_.]{1,10}", text(), text(), attributes(), metric_data()).prop_map(
        |(name, description, unit, metadata, data)| Metric {
            name,
            description,
            unit,
            metadata,
            data,
        },
    );
    let scope_metrics = (scope(), prop::collection::vec(metric, 0..4), text()).prop_map(
        |(scope, metrics, schema_url)| ScopeMetrics {
            scope,
            metrics,
            schema_url,
        },
    );
    let resource_metrics = (
        resource(),
        prop::collection::vec(scope_metrics, 0..3),
        text(),
    )
        .prop_map(|(resource, scope_metrics, schema_url)| ResourceMetrics {
            resource,
            scope_metrics,
            schema_url,
        });
    prop::collection::vec(resource_metrics, 0..3)
        .prop_map(|resource_metrics| ExportMetricsServiceRequest { resource_metrics })
}

// =============================================================================================
// Normalisation
// =============================================================================================

/// An empty `AnyValue` and a missing value are the same stored value (type code 0).
fn norm_attrs(kvs: &mut [KeyValue]) {
    for kv in kvs {
        if kv.value.as_ref().is_some_and(|v| v.value.is_none()) {
            kv.value = None;
        }
    }
}

fn norm_resource(r: Option<Resource>) -> Option<Resource> {
    let mut r = r.unwrap_or_default();
    norm_attrs(&mut r.attributes);
    Some(r)
}

fn norm_scope(s: Option<InstrumentationScope>) -> Option<InstrumentationScope> {
    let mut s = s.unwrap_or_default();
    norm_attrs(&mut s.attributes);
    Some(s)
}

fn flatten_spans(rs: Vec<ResourceSpans>) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for r in rs {
        let resource = norm_resource(r.resource);
        for ss in r.scope_spans {
            let scope = norm_scope(ss.scope);
            for mut s in ss.spans {
                norm_attrs(&mut s.attributes);
                s.events
                    .iter_mut()
                    .for_each(|e| norm_attrs(&mut e.attributes));
                s.links
                    .iter_mut()
                    .for_each(|l| norm_attrs(&mut l.attributes));
                s.status = Some(s.status.unwrap_or_default());
                if s.parent_span_id.iter().all(|b| *b == 0) {
                    s.parent_span_id.clear();
                }
                let tuple = ResourceSpans {
                    resource: resource.clone(),
                    scope_spans: vec![ScopeSpans {
                        scope: scope.clone(),
                        spans: vec![s],
                        schema_url: ss.schema_url.clone(),
                    }],
                    schema_url: r.schema_url.clone(),
                };
                out.push(tuple.encode_to_vec());
            }
        }
    }
    out.sort();
    out
}

fn flatten_metrics(rm: Vec<ResourceMetrics>) -> Vec<Vec<u8>> {
    fn tuple(
        resource: &Option<Resource>,
        r_url: &str,
        scope: &Option<InstrumentationScope>,
        s_url: &str,
        m: &Metric,
        data: metric::Data,
    ) -> Vec<u8> {
        let mut metadata = m.metadata.clone();
        norm_attrs(&mut metadata);
        ResourceMetrics {
            resource: resource.clone(),
            scope_metrics: vec![ScopeMetrics {
                scope: scope.clone(),
                metrics: vec![Metric {
                    name: m.name.clone(),
                    description: m.description.clone(),
                    unit: m.unit.clone(),
                    metadata,
                    data: Some(data),
                }],
                schema_url: s_url.to_owned(),
            }],
            schema_url: r_url.to_owned(),
        }
        .encode_to_vec()
    }
    fn norm_exemplars(ex: &mut [Exemplar]) {
        ex.iter_mut()
            .for_each(|e| norm_attrs(&mut e.filtered_attributes));
    }
    let mut out = Vec::new();
    for r in rm {
        let resource = norm_resource(r.resource);
        for sm in r.scope_metrics {
            let scope = norm_scope(sm.scope);
            for m in sm.metrics {
                let t = |data| tuple(&resource, &r.schema_url, &scope, &sm.schema_url, &m, data);
                match m.data.clone() {
                    None => {}
                    Some(metric::Data::Gauge(g)) => {
                        for mut p in g.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                            out.push(t(metric::Data::Gauge(Gauge {
                                data_points: vec![p],
                            })));
                        }
                    }
                    Some(metric::Data::Sum(s)) => {
                        for mut p in s.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                            out.push(t(metric::Data::Sum(Sum {
                                data_points: vec![p],
                                ..s
                            })));
                        }
                    }
                    Some(metric::Data::Histogram(h)) => {
                        for mut p in h.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                            out.push(t(metric::Data::Histogram(Histogram {
                                data_points: vec![p],
                                ..h
                            })));
                        }
                    }
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        for mut p in h.data_points {
                            norm_attrs(&mut p.attributes);
                            norm_exemplars(&mut p.exemplars);
                            out.push(t(metric::Data::ExponentialHistogram(
                                ExponentialHistogram {
                                    data_points: vec![p],
                                    ..h
                                },
                            )));
                        }
                    }
                    Some(metric::Data::Summary(s)) => {
                        for mut p in s.data_points {
                            norm_attrs(&mut p.attributes);
                            out.push(t(metric::Data::Summary(Summary {
                                data_points: vec![p],
                            })));
                        }
                    }
                }
            }
        }
    }
    out.sort();
    out
}

// =============================================================================================
// Properties
// =============================================================================================

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn spans_survive_parquet(req in trace_request()) {
        let converted = spans::from_otlp(&req);
        prop_assert_eq!(converted.rejected, 0, "{:?}", converted.rejection_message);
        prop_assert_eq!(converted.batch.schema(), Table::Spans.schema());
        let file = write_parquet(Table::Spans, &converted.batch, &ParquetSettings::default());
        let back = spans::to_otlp(&read_parquet(file)).unwrap();
        prop_assert_eq!(flatten_spans(back), flatten_spans(req.resource_spans));
    }

    #[test]
    fn metrics_survive_parquet(req in metrics_request()) {
        let converted = metrics::from_otlp(&req);
        prop_assert_eq!(converted.rejected, 0, "{:?}", converted.rejection_message);
        prop_assert_eq!(converted.batch.schema(), Table::Metrics.schema());
        let file = write_parquet(Table::Metrics, &converted.batch, &ParquetSettings::default());
        let back = metrics::to_otlp(&read_parquet(file)).unwrap();
        prop_assert_eq!(flatten_metrics(back), flatten_metrics(req.resource_metrics));
    }

    /// Without Parquet in between, the conversion also keeps the grouping: converting the
    /// output again gives the same batch.
    #[test]
    fn spans_conversion_is_stable(req in trace_request()) {
        let first = spans::from_otlp(&req).batch;
        let again = spans::from_otlp(&ExportTraceServiceRequest {
            resource_spans: spans::to_otlp(std::slice::from_ref(&first)).unwrap(),
        }).batch;
        prop_assert_eq!(first, again);
    }

    /// Arbitrary bytes never panic the decoders or the conversions.
    #[test]
    fn decoders_never_panic(body in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Ok(req) = ExportTraceServiceRequest::decode(&body[..]) {
            let _ = spans::from_otlp(&req);
        }
        if let Ok(req) = ExportMetricsServiceRequest::decode(&body[..]) {
            let _ = metrics::from_otlp(&req);
        }
        let _ = weft_schemas::otlp_json::decode_traces(&body);
        let _ = weft_schemas::otlp_json::decode_metrics(&body);
        if let Ok(req) = weft_schemas::prometheus::decode_remote_write(&body) {
            let _ = weft_schemas::prometheus::metrics_from_remote_write(&req);
        }
    }
}

// =============================================================================================
// The written file
// =============================================================================================

fn spans_batch(n: u8) -> RecordBatch {
    let spans = (1..=n)
        .map(|i| Span {
            trace_id: vec![i; 16],
            span_id: vec![i; 8],
            name: format!("op{}", i % 3),
            start_time_unix_nano: 1_700_000_000_000_000_000 + u64::from(i),
            end_time_unix_nano: 1_700_000_000_000_000_100 + u64::from(i),
            ..Default::default()
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    spans::from_otlp(&req).batch
}

#[test]
fn written_spans_file_has_bloom_filter_page_index_zstd_and_sort_order() {
    let batch = spans_batch(50);
    let file = write_parquet(Table::Spans, &batch, &ParquetSettings::default());
    let options = ArrowReaderOptions::new()
        .with_page_index_policy(parquet::file::metadata::PageIndexPolicy::Required);
    let reader = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options).unwrap();
    let meta = std::sync::Arc::clone(reader.metadata());

    let kv = meta.file_metadata().key_value_metadata().unwrap();
    assert!(
        kv.iter()
            .any(|k| k.key == "weft.schema_version" && k.value.as_deref() == Some("1"))
    );

    let rg = meta.row_group(0);
    let trace_idx = rg
        .columns()
        .iter()
        .position(|c| c.column_path().string() == "trace_id")
        .unwrap();
    assert!(matches!(
        rg.column(trace_idx).compression(),
        Compression::ZSTD(_)
    ));

    let sorting = rg.sorting_columns().expect("sorting_columns written");
    assert_eq!(sorting.len(), 2);
    assert_eq!(sorting[0].column_idx as usize, trace_idx);
    assert_eq!(
        rg.column(sorting[1].column_idx as usize)
            .column_path()
            .string(),
        "start_time"
    );

    assert!(meta.column_index().is_some(), "column index written");
    assert!(meta.offset_index().is_some(), "offset index written");
    assert!(rg.column(trace_idx).column_index_offset().is_some());

    let bloom = reader
        .get_row_group_column_bloom_filter(0, trace_idx)
        .unwrap()
        .expect("trace_id bloom filter");
    assert!(bloom.check(&[7u8; 16][..]));
    let misses = (0..200u8)
        .filter(|i| bloom.check(&[*i, 0xee, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14][..]))
        .count();
    assert!(misses < 20, "{misses} false positives of 200");
    let span_idx = rg
        .columns()
        .iter()
        .position(|c| c.column_path().string() == "span_id")
        .unwrap();
    assert!(
        reader
            .get_row_group_column_bloom_filter(0, span_idx)
            .unwrap()
            .is_none()
    );

    // And the content reads back.
    let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
    assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 50);
    assert_eq!(batches[0].schema(), Table::Spans.schema());
}

#[test]
fn written_metrics_file_has_no_bloom_filter_and_four_sort_columns() {
    let body = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/testdata/otlp-proto-examples/metrics.json"
    ));
    let body = body.expect("fixture");
    let req = weft_schemas::otlp_json::decode_metrics(&body).unwrap();
    let batch = metrics::from_otlp(&req).batch;
    let file = write_parquet(Table::Metrics, &batch, &ParquetSettings::default());
    let reader = ParquetRecordBatchReaderBuilder::try_new(file).unwrap();
    let rg = reader.metadata().row_group(0);
    assert_eq!(rg.sorting_columns().unwrap().len(), 4);
    for i in 0..rg.num_columns() {
        assert!(rg.column(i).bloom_filter_offset().is_none());
    }
}
