//! Prometheus remote-write 1.0 (`Content-Encoding: snappy`, `Content-Type:
//! application/x-protobuf`) into the `metrics` table.
//!
//! ```text
//!  body ─snappy block─▶ protobuf WriteRequest ─▶ OTLP metrics ─metrics::convert─▶ rows
//!                                     ▲
//!                   metadata (type, help, unit) per metric family
//! ```
//!
//! Mapping (close to the OpenTelemetry Collector's Prometheus receivers):
//!
//! * one row per sample; `metric_name` = the `__name__` label;
//! * resource = `service.name` from `job` and `service.instance.id` from `instance` (when
//!   present), so `service_name` = `job` or `"unknown_service"`; `job` and `instance` are
//!   not repeated as point attributes; every other label becomes a string point attribute;
//! * scope is empty; `start_time` is null (remote write does not carry it);
//! * counters become monotonic cumulative sums: a series is a counter when its family's
//!   metadata says `COUNTER` (or `HISTOGRAM`/`SUMMARY` for the `_bucket`, `_count`, `_sum`
//!   series). Without metadata (the usual case: Prometheus sends it in separate requests) a
//!   series is a counter when its name ends in `_total`, or when it is the `_bucket`, `_count`
//!   or `_sum` of a family that the same request shows to be a classic histogram
//!   (`_bucket{le=…}`) or summary (`{quantile=…}`). Everything else is a gauge. Classic
//!   histograms and summaries stay one series per bucket/quantile (as Prometheus stores them);
//!   they are not reassembled into OTLP histogram points;
//! * `help` → `metric_description`, `unit` → `metric_unit` (from metadata when sent);
//! * Prometheus staleness markers (a special NaN) keep their exact bits in `value_double` and
//!   get the OTLP `NO_RECORDED_VALUE` flag;
//! * exemplars are attached to the series' latest sample; `trace_id` / `span_id` labels with
//!   valid hex ids become the exemplar's ids.
//!
//! Not supported: **native histograms** (`TimeSeries.histograms`). They are counted as
//! rejected so the sender's operator can see data was dropped. Samples without `__name__` or
//! with a timestamp outside what nanoseconds since 1970 can hold are rejected too.

use std::collections::{HashMap, HashSet};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, DataPointFlags, Exemplar as OtlpExemplar, Gauge, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exemplar, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use crate::arrow_util::Rejections;
use crate::{Converted, Error, Result};

/// Largest decompressed body accepted, so a small snappy body cannot make us allocate
/// gigabytes. Prometheus sends at most a few MiB per request by default.
pub const MAX_DECOMPRESSED_BYTES: usize = 64 * 1024 * 1024;

/// Bit pattern Prometheus uses to mark a series stale.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

const NO_NAME: &str = "missing __name__ label";
const BAD_TIMESTAMP: &str = "timestamp out of range";
const NATIVE_HISTOGRAM: &str = "native histograms are not supported";

/// `prometheus.WriteRequest`.
#[derive(Clone, PartialEq, Message)]
pub struct WriteRequest {
    /// The series.
    #[prost(message, repeated, tag = "1")]
    pub timeseries: Vec<TimeSeries>,
    /// Metric family metadata (Prometheus sends it periodically, often in its own request).
    #[prost(message, repeated, tag = "3")]
    pub metadata: Vec<MetricMetadata>,
}

/// `prometheus.TimeSeries`.
#[derive(Clone, PartialEq, Message)]
pub struct TimeSeries {
    /// Labels, including `__name__`.
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// Samples, oldest first.
    #[prost(message, repeated, tag = "2")]
    pub samples: Vec<Sample>,
    /// Exemplars.
    #[prost(message, repeated, tag = "3")]
    pub exemplars: Vec<Exemplar>,
    /// Native histograms, kept encoded (not decoded) only to count them as rejected.
    #[prost(bytes = "vec", repeated, tag = "4")]
    pub histograms: Vec<Vec<u8>>,
}

/// `prometheus.Label`.
#[derive(Clone, PartialEq, Message)]
pub struct Label {
    /// Label name.
    #[prost(string, tag = "1")]
    pub name: String,
    /// Label value.
    #[prost(string, tag = "2")]
    pub value: String,
}

/// `prometheus.Sample`.
#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// The value.
    #[prost(double, tag = "1")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "2")]
    pub timestamp: i64,
}

/// `prometheus.Exemplar`.
#[derive(Clone, PartialEq, Message)]
pub struct Exemplar {
    /// Labels (often `trace_id`, `span_id`).
    #[prost(message, repeated, tag = "1")]
    pub labels: Vec<Label>,
    /// The value.
    #[prost(double, tag = "2")]
    pub value: f64,
    /// Milliseconds since the Unix epoch.
    #[prost(int64, tag = "3")]
    pub timestamp: i64,
}

/// `prometheus.MetricMetadata`.
#[derive(Clone, PartialEq, Message)]
pub struct MetricMetadata {
    /// Family type.
    #[prost(enumeration = "MetricType", tag = "1")]
    pub r#type: i32,
    /// Family name (series names may add `_total`, `_bucket`, … to it).
    #[prost(string, tag = "2")]
    pub metric_family_name: String,
    /// HELP text.
    #[prost(string, tag = "4")]
    pub help: String,
    /// UNIT.
    #[prost(string, tag = "5")]
    pub unit: String,
}

/// `prometheus.MetricMetadata.MetricType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Enumeration)]
#[repr(i32)]
pub enum MetricType {
    /// Unknown.
    Unknown = 0,
    /// Counter.
    Counter = 1,
    /// Gauge.
    Gauge = 2,
    /// Classic histogram.
    Histogram = 3,
    /// Gauge histogram.
    Gaugehistogram = 4,
    /// Summary.
    Summary = 5,
    /// Info.
    Info = 6,
    /// State set.
    Stateset = 7,
}

/// Decompresses (snappy block format, as remote write uses) and decodes a remote-write body.
pub fn decode_remote_write(snappy_body: &[u8]) -> Result<WriteRequest> {
    let size = snap::raw::decompress_len(snappy_body)?;
    if size > MAX_DECOMPRESSED_BYTES {
        return Err(Error::BodyTooLarge {
            size,
            limit: MAX_DECOMPRESSED_BYTES,
        });
    }
    let raw = snap::raw::Decoder::new().decompress_vec(snappy_body)?;
    Ok(WriteRequest::decode(raw.as_slice())?)
}

fn string_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        key_strindex: 0,
    }
}

fn ms_to_ns(ms: i64) -> Option<u64> {
    u64::try_from(ms).ok()?.checked_mul(1_000_000)
}

fn name_of(ts: &TimeSeries) -> &str {
    ts.labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str())
}

/// Families that, judging by the series of this request, are classic histograms
/// (`<family>_bucket{le=...}`) or summaries (`<family>{quantile=...}`). Used when metadata is
/// absent, which is the usual case: Prometheus sends metadata in separate requests.
fn inferred_families(req: &WriteRequest) -> HashSet<&str> {
    let mut families = HashSet::new();
    for ts in &req.timeseries {
        let name = name_of(ts);
        let has = |label: &str| ts.labels.iter().any(|l| l.name == label);
        if let Some(family) = name.strip_suffix("_bucket")
            && has("le")
        {
            families.insert(family);
        } else if has("quantile") {
            families.insert(name);
        }
    }
    families
}

/// Whether a series is a counter, and its family's metadata if any.
fn classify<'a>(
    name: &str,
    metadata: &HashMap<&str, &'a MetricMetadata>,
    inferred: &HashSet<&str>,
) -> (bool, Option<&'a MetricMetadata>) {
    if let Some(md) = metadata.get(name) {
        return (md.r#type == MetricType::Counter as i32, Some(md));
    }
    for suffix in ["_total", "_bucket", "_count", "_sum", "_created"] {
        let Some(family) = name.strip_suffix(suffix) else {
            continue;
        };
        if let Some(md) = metadata.get(family) {
            let counter = match MetricType::try_from(md.r#type) {
                Ok(MetricType::Counter) => suffix == "_total",
                Ok(MetricType::Histogram) | Ok(MetricType::Summary) => {
                    matches!(suffix, "_bucket" | "_count" | "_sum")
                }
                _ => false,
            };
            return (counter, Some(md));
        }
    }
    let histogram_part = ["_bucket", "_count", "_sum"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|f| inferred.contains(f))
    });
    (name.ends_with("_total") || histogram_part, None)
}

/// Converts a remote-write request to rows of the `metrics` table (see the module docs).
pub fn metrics_from_remote_write(req: &WriteRequest) -> Converted {
    let mut rejections = Rejections::default();
    let metadata: HashMap<&str, &MetricMetadata> = req
        .metadata
        .iter()
        .map(|m| (m.metric_family_name.as_str(), m))
        .collect();
    let inferred = inferred_families(req);

    // Series are grouped by (job, instance) into one resource each, in first-seen order.
    let mut resources: Vec<ResourceMetrics> = Vec::new();
    let mut resource_index: HashMap<(&str, &str), usize> = HashMap::new();

    for ts in &req.timeseries {
        rejections.add(NATIVE_HISTOGRAM, ts.histograms.len() as u64);
        if ts.samples.is_empty() {
            continue;
        }
        let mut name = "";
        let mut job = None;
        let mut instance = None;
        for l in &ts.labels {
            match l.name.as_str() {
                "__name__" => name = &l.value,
                "job" => job = Some(l.value.as_str()),
                "instance" => instance = Some(l.value.as_str()),
                _ => {}
            }
        }
        if name.is_empty() {
            rejections.add(NO_NAME, ts.samples.len() as u64);
            continue;
        }
        let attributes: Vec<KeyValue> = ts
            .labels
            .iter()
            .filter(|l| !matches!(l.name.as_str(), "__name__" | "job" | "instance"))
            .map(|l| string_kv(&l.name, &l.value))
            .collect();

        let mut points = Vec::with_capacity(ts.samples.len());
        for s in &ts.samples {
            let Some(time) = ms_to_ns(s.timestamp) else {
                rejections.add(BAD_TIMESTAMP, 1);
                continue;
            };
            let stale = s.value.to_bits() == STALE_NAN_BITS;
            points.push(NumberDataPoint {
                attributes: attributes.clone(),
                start_time_unix_nano: 0,
                time_unix_nano: time,
                exemplars: Vec::new(),
                flags: if stale {
                    DataPointFlags::NoRecordedValueMask as u32
                } else {
                    0
                },
                value: Some(number_data_point::Value::AsDouble(s.value)),
            });
        }
        if let Some(latest) = points.iter_mut().max_by_key(|p| p.time_unix_nano) {
            latest.exemplars = ts.exemplars.iter().filter_map(convert_exemplar).collect();
        }
        if points.is_empty() {
            continue;
        }

        let (counter, md) = classify(name, &metadata, &inferred);
        let data = if counter {
            metric::Data::Sum(Sum {
                data_points: points,
                aggregation_temporality: AggregationTemporality::Cumulative as i32,
                is_monotonic: true,
            })
        } else {
            metric::Data::Gauge(Gauge {
                data_points: points,
            })
        };
        let metric = Metric {
            name: name.to_owned(),
            description: md.map(|m| m.help.clone()).unwrap_or_default(),
            unit: md.map(|m| m.unit.clone()).unwrap_or_default(),
            metadata: Vec::new(),
            data: Some(data),
        };

        let key = (job.unwrap_or(""), instance.unwrap_or(""));
        let idx = *resource_index.entry(key).or_insert_with(|| {
            let mut attrs = Vec::with_capacity(2);
            if let Some(job) = job {
                attrs.push(string_kv("service.name", job));
            }
            if let Some(instance) = instance {
                attrs.push(string_kv("service.instance.id", instance));
            }
            resources.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: attrs,
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope::default()),
                    metrics: Vec::new(),
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
            resources.len() - 1
        });
        if let Some(scope) = resources
            .get_mut(idx)
            .and_then(|r| r.scope_metrics.first_mut())
        {
            scope.metrics.push(metric);
        }
    }

    crate::metrics::convert(
        &ExportMetricsServiceRequest {
            resource_metrics: resources,
        },
        &mut rejections,
    )
}

fn convert_exemplar(e: &Exemplar) -> Option<OtlpExemplar> {
    let time_unix_nano = ms_to_ns(e.timestamp)?;
    let mut trace_id = Vec::new();
    let mut span_id = Vec::new();
    let mut filtered_attributes = Vec::new();
    for l in &e.labels {
        match (l.name.as_str(), hex::decode(&l.value)) {
            ("trace_id", Ok(id)) if id.len() == 16 => trace_id = id,
            ("span_id", Ok(id)) if id.len() == 8 => span_id = id,
            _ => filtered_attributes.push(string_kv(&l.name, &l.value)),
        }
    }
    Some(OtlpExemplar {
        filtered_attributes,
        time_unix_nano,
        span_id,
        trace_id,
        value: Some(exemplar::Value::AsDouble(e.value)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columns::*;
    use arrow::array::{Array, AsArray, BooleanArray, Float64Array, UInt32Array};
    use arrow::datatypes::DataType;

    fn label(n: &str, v: &str) -> Label {
        Label {
            name: n.into(),
            value: v.into(),
        }
    }

    fn names(c: &Converted) -> Vec<String> {
        let col = arrow::compute::cast(
            c.batch.column_by_name(METRIC_NAME).unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        col.as_string::<i32>()
            .iter()
            .map(|s| s.unwrap_or_default().to_owned())
            .collect()
    }

    #[test]
    fn prometheus_fixture_converts() {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/testdata/real-client-captures/prometheus-2.42-remote-write.snappy.pb"
        );
        let body = std::fs::read(path).unwrap_or_else(|e| panic!("fixture {path}: {e}"));
        let req = decode_remote_write(&body).unwrap();
        assert!(!req.timeseries.is_empty());
        let c = metrics_from_remote_write(&req);
        assert_eq!(c.rejected, 0, "{:?}", c.rejection_message);
        let samples: usize = req.timeseries.iter().map(|t| t.samples.len()).sum();
        assert_eq!(c.batch.num_rows(), samples);
        let names = names(&c);
        assert!(
            names
                .iter()
                .any(|n| n.starts_with("prometheus_") || n == "up"),
            "{names:?}"
        );
        let monotonic: &BooleanArray = c.batch.column_by_name(IS_MONOTONIC).unwrap().as_boolean();
        let mut counters = 0;
        for (i, n) in names.iter().enumerate() {
            // The fixture has no metadata: counters are recognised by name, histogram parts by
            // their `_bucket{le}` siblings (e.g. prometheus_http_request_duration_seconds).
            if n.ends_with("_total") || n.starts_with("prometheus_http_request_duration_seconds_") {
                assert!(
                    monotonic.is_valid(i) && monotonic.value(i),
                    "{n} is a counter"
                );
                counters += 1;
            }
        }
        assert!(counters > 0, "fixture has *_total counters");
        let services = arrow::compute::cast(
            c.batch.column_by_name(SERVICE_NAME).unwrap(),
            &DataType::Utf8,
        )
        .unwrap();
        assert!(services.as_string::<i32>().iter().all(|s| s != Some("")));
    }

    #[test]
    fn mapping() {
        let req = WriteRequest {
            timeseries: vec![
                TimeSeries {
                    labels: vec![
                        label("__name__", "http_requests"),
                        label("job", "api"),
                        label("instance", "10.0.0.1:9090"),
                        label("code", "200"),
                    ],
                    samples: vec![
                        Sample {
                            value: 5.0,
                            timestamp: 1_700_000_000_000,
                        },
                        Sample {
                            value: f64::from_bits(STALE_NAN_BITS),
                            timestamp: 1_700_000_015_000,
                        },
                    ],
                    exemplars: vec![Exemplar {
                        labels: vec![
                            label("trace_id", "5b8efff798038103d269b633813fc60c"),
                            label("user", "x"),
                        ],
                        value: 1.0,
                        timestamp: 1_700_000_014_000,
                    }],
                    histograms: vec![],
                },
                TimeSeries {
                    labels: vec![label("__name__", "temp")],
                    samples: vec![Sample {
                        value: 1.5,
                        timestamp: -1,
                    }],
                    ..Default::default()
                },
                TimeSeries {
                    labels: vec![label("job", "x")],
                    samples: vec![Sample::default()],
                    histograms: vec![vec![]],
                    ..Default::default()
                },
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "http_requests".into(),
                help: "Requests.".into(),
                unit: String::new(),
            }],
        };
        let c = metrics_from_remote_write(&req);
        assert_eq!(c.batch.num_rows(), 2);
        assert_eq!(c.rejected, 3);
        let msg = c.rejection_message.unwrap();
        assert!(
            msg.contains("native histograms are not supported [1]"),
            "{msg}"
        );
        assert!(msg.contains("missing __name__ label [1]"), "{msg}");
        assert!(msg.contains("timestamp out of range [1]"), "{msg}");

        let flags: &UInt32Array = c.batch.column_by_name(FLAGS).unwrap().as_primitive();
        assert_eq!(flags.values().to_vec(), vec![0, 1]);
        let values: &Float64Array = c.batch.column_by_name(VALUE_DOUBLE).unwrap().as_primitive();
        assert_eq!(values.value(1).to_bits(), STALE_NAN_BITS);
        let back = crate::metrics::to_otlp(&[c.batch]).unwrap();
        let rm = &back[0];
        let res = &rm.resource.as_ref().unwrap().attributes;
        assert_eq!(res[0], string_kv("service.name", "api"));
        assert_eq!(res[1], string_kv("service.instance.id", "10.0.0.1:9090"));
        let m = &rm.scope_metrics[0].metrics[0];
        assert_eq!(m.description, "Requests.");
        let Some(metric::Data::Sum(sum)) = &m.data else {
            panic!("counter by metadata")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 2);
        assert_eq!(
            sum.data_points[0].attributes,
            vec![string_kv("code", "200")]
        );
        assert_eq!(sum.data_points[0].time_unix_nano, 1_700_000_000_000_000_000);
        let ex = &sum.data_points[1].exemplars[0];
        assert_eq!(ex.trace_id.len(), 16);
        assert_eq!(ex.filtered_attributes, vec![string_kv("user", "x")]);
    }

    #[test]
    fn classification() {
        let md = MetricMetadata {
            r#type: MetricType::Histogram as i32,
            metric_family_name: "lat".into(),
            ..Default::default()
        };
        let map: HashMap<&str, &MetricMetadata> = [("lat", &md)].into_iter().collect();
        let none = HashSet::new();
        assert!(classify("lat_bucket", &map, &none).0);
        assert!(classify("lat_count", &map, &none).0);
        assert!(!classify("lat", &map, &none).0);
        assert!(classify("x_total", &HashMap::new(), &none).0);
        assert!(!classify("x", &HashMap::new(), &none).0);
        assert!(!classify("x_count", &HashMap::new(), &none).0);
        // Without metadata, a family seen with `_bucket{le}` or `{quantile}` in the request.
        let inferred: HashSet<&str> = ["lat"].into_iter().collect();
        assert!(classify("lat_count", &HashMap::new(), &inferred).0);
        assert!(classify("lat_sum", &HashMap::new(), &inferred).0);
        assert!(!classify("lat", &HashMap::new(), &inferred).0);
    }

    #[test]
    fn decode_errors() {
        assert!(decode_remote_write(b"\xff\xff\xff\xff\xff\xff").is_err());
        // Declares a 1 GiB decompressed size.
        assert!(matches!(
            decode_remote_write(&[0x80, 0x80, 0x80, 0x80, 0x04, 0x00]),
            Err(Error::BodyTooLarge { .. })
        ));
    }
}
