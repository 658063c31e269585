//! Every shared client fixture is accepted and its content is queryable afterwards:
//! the upstream OTLP/JSON examples, request bodies recorded from real SDKs (Python, Node,
//! Rust; JSON and protobuf; HTTP and gRPC) and a Prometheus remote-write body.
//!
//! Expectations are read from the fixture files themselves (serde_json for JSON, prost for
//! protobuf), never from Weft's own decoders.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_client::MetricsServiceClient;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message as _;
use serde_json::Value;

use crate::common::{
    JSON, MetricCounts, PROTOBUF, Reply, assert_spans_stored, field, fixtures_dir, json_u64,
    metric_counts_from_json, metric_counts_from_proto, post, spans_from_json, spans_from_proto,
    stored_metric_counts,
};
use crate::server::TestServer;

/// The files of one fixture directory, sorted by name.
fn files(dir: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(fixtures_dir().join(dir))
        .unwrap_or_else(|e| panic!("fixture directory {dir}: {e}"))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no fixtures in {dir}");
    out
}

fn name_of(path: &std::path::Path) -> String {
    path.file_name()
        .expect("file name")
        .to_string_lossy()
        .into_owned()
}

/// A 200 with an OTLP/JSON response body that rejects nothing.
fn assert_accepted_json(reply: &Reply, what: &str) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some(JSON),
        "{what}: response content type"
    );
    let body = reply.json();
    let rejected = field(&body, "partialSuccess")
        .and_then(|p| field(p, "rejectedSpans").or_else(|| field(p, "rejectedDataPoints")))
        .map(|n| json_u64(n).expect("rejected count"))
        .unwrap_or(0);
    assert_eq!(rejected, 0, "{what}: partial success {body}");
}

/// A 200 with a protobuf response body that rejects nothing.
fn assert_accepted_proto(reply: &Reply, what: &str, traces: bool) {
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    assert_eq!(
        reply.header("content-type").as_deref(),
        Some(PROTOBUF),
        "{what}: response content type"
    );
    let rejected = if traces {
        ExportTraceServiceResponse::decode(reply.body.as_slice())
            .expect("ExportTraceServiceResponse")
            .partial_success
            .map_or(0, |p| p.rejected_spans)
    } else {
        ExportMetricsServiceResponse::decode(reply.body.as_slice())
            .expect("ExportMetricsServiceResponse")
            .partial_success
            .map_or(0, |p| p.rejected_data_points)
    };
    assert_eq!(rejected, 0, "{what}: partial success");
}

/// Checks the `metrics` table holds exactly `expected` (it is the only metric data sent).
async fn assert_metrics_stored(server: &TestServer, expected: &MetricCounts) {
    assert_eq!(
        &stored_metric_counts(server).await,
        expected,
        "(service, metric) -> (metric_type, data points)"
    );
    let names: BTreeSet<String> = server
        .sql_rows("SELECT DISTINCT metric_name FROM metrics")
        .await
        .iter()
        .map(|r| r["metric_name"].as_str().expect("metric_name").to_owned())
        .collect();
    let want: BTreeSet<String> = expected.keys().map(|(_, name)| name.clone()).collect();
    assert_eq!(names, want, "SELECT DISTINCT metric_name FROM metrics");
}

/// opentelemetry-proto's `examples/`: traces and metrics are stored, logs are refused with
/// 501 and an explanation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_proto_examples() {
    let server = TestServer::start(&[]);
    let mut spans = Vec::new();
    let mut metrics = MetricCounts::new();
    let mut logs = 0;
    for path in files("otlp-proto-examples") {
        let name = name_of(&path);
        let body = std::fs::read(&path).expect("read fixture");
        let doc: Value = serde_json::from_slice(&body).expect("fixture is json");
        if field(&doc, "resourceSpans").is_some() {
            let reply = server.otlp_post("/v1/traces", JSON, body).await;
            assert_accepted_json(&reply, &name);
            spans.extend(spans_from_json(&doc));
        } else if field(&doc, "resourceMetrics").is_some() {
            let reply = server.otlp_post("/v1/metrics", JSON, body).await;
            assert_accepted_json(&reply, &name);
            metric_counts_from_json(&doc, &mut metrics);
        } else if field(&doc, "resourceLogs").is_some() {
            let reply = server.otlp_post("/v1/logs", JSON, body).await;
            assert_eq!(reply.status, 501, "{name}: {}", reply.text());
            let status = reply.json();
            assert_eq!(
                status["code"], 12,
                "{name}: google.rpc.Status code UNIMPLEMENTED"
            );
            let message = status["message"].as_str().unwrap_or_default();
            assert!(message.contains("logs"), "{name}: explanation {message:?}");
            logs += 1;
        } else {
            panic!("{name}: not an OTLP request");
        }
    }
    assert!(logs >= 1 && !spans.is_empty() && !metrics.is_empty());
    assert_eq!(spans.len(), 1, "trace.json holds one span");
    assert_eq!(metrics.len(), 4, "metrics.json holds four metrics");
    assert_spans_stored(&server, &spans).await;
    assert_metrics_stored(&server, &metrics).await;
}

/// Bodies recorded from the Python, Node and Rust SDKs, sent as recorded over OTLP/HTTP
/// (`*.json` as JSON, `*.pb` as protobuf; `traces`/`metrics` in the name picks the path).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_client_captures_over_http() {
    let server = TestServer::start(&[]);
    let mut spans = Vec::new();
    let mut metrics = MetricCounts::new();
    let mut sent = 0;
    for path in files("real-client-captures") {
        let name = name_of(&path);
        if name.starts_with("prometheus") {
            continue; // remote-write: see `prometheus_remote_write`
        }
        let body = std::fs::read(&path).expect("read fixture");
        let traces = if name.contains("traces") {
            true
        } else if name.contains("metrics") {
            false
        } else {
            panic!("{name}: neither traces nor metrics");
        };
        let route = if traces { "/v1/traces" } else { "/v1/metrics" };
        if name.ends_with(".json") {
            let doc: Value = serde_json::from_slice(&body).expect("fixture is json");
            let reply = server.otlp_post(route, JSON, body).await;
            assert_accepted_json(&reply, &name);
            if traces {
                spans.extend(spans_from_json(&doc));
            } else {
                metric_counts_from_json(&doc, &mut metrics);
            }
        } else if name.ends_with(".pb") {
            if traces {
                let req = ExportTraceServiceRequest::decode(body.as_slice()).expect("protobuf");
                spans.extend(spans_from_proto(&req));
            } else {
                let req = ExportMetricsServiceRequest::decode(body.as_slice()).expect("protobuf");
                metric_counts_from_proto(&req, &mut metrics);
            }
            let reply = server.otlp_post(route, PROTOBUF, body).await;
            assert_accepted_proto(&reply, &name, traces);
        } else {
            panic!("{name}: unknown fixture kind");
        }
        sent += 1;
    }
    assert_eq!(sent, 12, "every capture but the remote-write one");
    assert_eq!(spans.len(), 6 * 3, "six trace captures of three spans");
    assert_spans_stored(&server, &spans).await;
    assert_metrics_stored(&server, &metrics).await;
}

/// The Python SDK's gRPC captures, decoded and sent through the generated OTLP gRPC client
/// (traces plain, metrics gzip-compressed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpc_captures_over_grpc() {
    let server = TestServer::start(&[]);
    let dir = fixtures_dir().join("real-client-captures");
    let traces = std::fs::read(dir.join("python-grpc.traces.pb")).expect("fixture");
    let metrics = std::fs::read(dir.join("python-grpc.metrics.pb")).expect("fixture");
    let traces = ExportTraceServiceRequest::decode(traces.as_slice()).expect("protobuf");
    let metrics = ExportMetricsServiceRequest::decode(metrics.as_slice()).expect("protobuf");
    let spans = spans_from_proto(&traces);
    let mut points = MetricCounts::new();
    metric_counts_from_proto(&metrics, &mut points);
    assert_eq!(spans.len(), 3);

    let channel = tonic::transport::Endpoint::from_shared(server.otlp_grpc.clone())
        .expect("endpoint")
        .connect()
        .await
        .expect("grpc connect");
    let response = TraceServiceClient::new(channel.clone())
        .export(traces)
        .await
        .expect("trace export")
        .into_inner();
    assert_eq!(response.partial_success.map_or(0, |p| p.rejected_spans), 0);
    let response = MetricsServiceClient::new(channel)
        .send_compressed(tonic::codec::CompressionEncoding::Gzip)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip)
        .export(metrics)
        .await
        .expect("metrics export")
        .into_inner();
    assert_eq!(
        response
            .partial_success
            .map_or(0, |p| p.rejected_data_points),
        0
    );

    assert_spans_stored(&server, &spans).await;
    assert_metrics_stored(&server, &points).await;
}

// ---- Prometheus remote-write 1.0, decoded here with our own message definitions ----------

/// Distinct label sets (each a sorted list of name/value pairs) = series.
type LabelSets = BTreeSet<Vec<(String, String)>>;

#[derive(Clone, PartialEq, prost::Message)]
struct WriteRequest {
    #[prost(message, repeated, tag = "1")]
    timeseries: Vec<TimeSeries>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct TimeSeries {
    #[prost(message, repeated, tag = "1")]
    labels: Vec<Label>,
    #[prost(message, repeated, tag = "2")]
    samples: Vec<Sample>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Label {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(string, tag = "2")]
    value: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(double, tag = "1")]
    value: f64,
    #[prost(int64, tag = "2")]
    timestamp: i64,
}

/// Prometheus 2.42's own remote-write body: 204, then one row per sample with `metric_name`
/// from `__name__`, `service_name` from `job`, and one series per label set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_remote_write() {
    let server = TestServer::start(&[]);
    let body = std::fs::read(
        fixtures_dir().join("real-client-captures/prometheus-2.42-remote-write.snappy.pb"),
    )
    .expect("fixture");
    let raw = snap::raw::Decoder::new()
        .decompress_vec(&body)
        .expect("snappy block format");
    let request = WriteRequest::decode(raw.as_slice()).expect("WriteRequest");

    // (job, name) -> (samples, label sets)
    let mut expected: BTreeMap<(String, String), (u64, LabelSets)> = BTreeMap::new();
    for ts in &request.timeseries {
        if ts.samples.is_empty() {
            continue;
        }
        let label = |n: &str| {
            ts.labels
                .iter()
                .find(|l| l.name == n)
                .map(|l| l.value.clone())
        };
        let name = label("__name__").expect("every series has a name");
        let job = label("job").unwrap_or_else(|| "unknown_service".to_owned());
        let mut labels: Vec<(String, String)> = ts
            .labels
            .iter()
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        labels.sort();
        let entry = expected.entry((job, name)).or_default();
        entry.0 += ts.samples.len() as u64;
        entry.1.insert(labels);
    }
    assert!(expected.len() > 10, "the fixture holds many metrics");

    let reply = post(
        &server.http_url("/api/v1/write"),
        &[
            ("content-type", PROTOBUF),
            ("content-encoding", "snappy"),
            ("x-prometheus-remote-write-version", "0.1.0"),
        ],
        body,
    )
    .await;
    assert_eq!(reply.status, 204, "remote write: {}", reply.text());
    assert!(reply.body.is_empty(), "204 has no body");

    let rows = server
        .sql_rows(
            "SELECT service_name, metric_name, count(*) AS n, count(DISTINCT series_id) AS series \
             FROM metrics GROUP BY service_name, metric_name",
        )
        .await;
    let got: BTreeMap<(String, String), (u64, u64)> = rows
        .iter()
        .map(|r| {
            (
                (
                    r["service_name"].as_str().expect("service_name").to_owned(),
                    r["metric_name"].as_str().expect("metric_name").to_owned(),
                ),
                (
                    json_u64(&r["n"]).expect("n"),
                    json_u64(&r["series"]).expect("series"),
                ),
            )
        })
        .collect();
    let want: BTreeMap<(String, String), (u64, u64)> = expected
        .iter()
        .map(|(k, (samples, sets))| (k.clone(), (*samples, sets.len() as u64)))
        .collect();
    assert_eq!(got, want, "(job, metric) -> (samples, series)");
}
