//! Trace by ID for huge traces: a 100,000-span trace, half in Parquet and half in live rows,
//! comes back complete (every span exactly once) under a query memory pool far too small to
//! hold it, with the span count in a header before the body streams.

use std::collections::HashSet;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::Value;

use crate::common::{PROTOBUF, get, post};
use crate::server::TestServer;

const HUGE_SPANS: u64 = 100_000;
const SPANS_PER_REQUEST: u64 = 5_000;
/// Small enough that sorting the huge trace in the pool fails (checked below), so the
/// lookup can only succeed by streaming.
const MEMORY_LIMIT: &str = "query.memory_limit_bytes=8388608";

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue { value: Some(value) }),
        ..Default::default()
    }
}

fn span_id(index: u64) -> Vec<u8> {
    (index + 1).to_be_bytes().to_vec()
}

/// Spans `range` of one trace: span i's parent is span (i - 1) / 8, so the tree is wide and
/// deep; start times go backwards so storage order differs from start-time order.
fn request(trace_id: &[u8], service: &str, range: std::ops::Range<u64>) -> Vec<u8> {
    let base = 1_700_000_000_000_000_000u64;
    let spans = range
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: span_id(i),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                span_id((i - 1) / 8)
            },
            name: format!("op-{}", i % 17),
            kind: 1,
            start_time_unix_nano: base + (HUGE_SPANS - i) * 1_000,
            end_time_unix_nano: base + (HUGE_SPANS - i) * 1_000 + 500,
            attributes: vec![
                kv("span.index", any_value::Value::IntValue(i as i64)),
                kv("payload", any_value::Value::StringValue("x".repeat(64))),
            ],
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv(
                    "service.name",
                    any_value::Value::StringValue(service.to_owned()),
                )],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "e2e-huge".to_owned(),
                    ..Default::default()
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
    .encode_to_vec()
}

async fn send(server: &TestServer, body: Vec<u8>) {
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", PROTOBUF)],
        body,
    )
    .await;
    assert_eq!(reply.status, 200, "export failed: {}", reply.text());
}

/// Every span in an OTLP/JSON trace body, as (span id hex, start time).
fn spans_of(body: &Value) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for rs in body["resourceSpans"].as_array().expect("resourceSpans") {
        for ss in rs["scopeSpans"].as_array().expect("scopeSpans") {
            for span in ss["spans"].as_array().expect("spans") {
                let start = span["startTimeUnixNano"]
                    .as_str()
                    .expect("start as string")
                    .parse()
                    .expect("start number");
                out.push((span["spanId"].as_str().expect("spanId").to_owned(), start));
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_trace_streams_every_span_once_within_a_small_memory_pool() {
    let huge_id = [0x5au8; 16];
    let small_id = [0x17u8; 16];
    let mut first_run = TestServer::start(&["--set", MEMORY_LIMIT]);
    let half = HUGE_SPANS / 2;
    for start in (0..half).step_by(SPANS_PER_REQUEST as usize) {
        send(
            &first_run,
            request(&huge_id, "huge", start..start + SPANS_PER_REQUEST),
        )
        .await;
    }
    // A graceful stop flushes the first half to Parquet; the second half stays live.
    assert!(first_run.stop().success());
    // `first` owns the temporary data directory: it must outlive the restarted server.
    let first = first_run;
    let data_dir = first.data_dir.clone();
    let server = TestServer::start_in(&data_dir, &["--set", MEMORY_LIMIT]);
    assert!(
        !crate::common::parquet_files(&data_dir, "spans").is_empty(),
        "the first half must be in parquet"
    );
    for start in (half..HUGE_SPANS).step_by(SPANS_PER_REQUEST as usize) {
        send(
            &server,
            request(&huge_id, "huge", start..start + SPANS_PER_REQUEST),
        )
        .await;
    }
    send(&server, request(&small_id, "small", 0..50)).await;

    let reply = get(&server.query_url(&format!("/api/v1/traces/{}", hex::encode(huge_id)))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("x-weft-span-count").as_deref(), Some("100000"));
    assert_eq!(
        reply.header("x-weft-span-order").as_deref(),
        Some("storage")
    );
    let spans = spans_of(&reply.json());
    assert_eq!(spans.len() as u64, HUGE_SPANS);
    let distinct: HashSet<&str> = spans.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(distinct.len() as u64, HUGE_SPANS, "a span came back twice");
    let expected: HashSet<String> = (0..HUGE_SPANS).map(|i| hex::encode(span_id(i))).collect();
    assert!(distinct.iter().all(|id| expected.contains(*id)));

    // The same rows sorted inside the pool do not fit: the lookup above had to stream.
    let sorted = post(
        &server.query_url("/api/v1/sql"),
        &[("content-type", "application/json")],
        serde_json::to_vec(&serde_json::json!({
            "sql": format!(
                "SELECT * FROM spans WHERE trace_id = trace_id_from_hex('{}') ORDER BY start_time",
                hex::encode(huge_id)
            )
        }))
        .expect("json"),
    )
    .await;
    assert_eq!(sorted.status, 422, "{}", sorted.text());

    // A small trace comes back whole, sorted by start time.
    let reply = get(&server.query_url(&format!("/api/v1/traces/{}", hex::encode(small_id)))).await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("x-weft-span-count").as_deref(), Some("50"));
    assert_eq!(
        reply.header("x-weft-span-order").as_deref(),
        Some("start_time")
    );
    let starts: Vec<u64> = spans_of(&reply.json())
        .into_iter()
        .map(|(_, t)| t)
        .collect();
    assert_eq!(starts.len(), 50);
    assert!(
        starts.windows(2).all(|w| w[0] <= w[1]),
        "not sorted: {starts:?}"
    );
}
