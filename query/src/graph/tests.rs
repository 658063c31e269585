//! Graph tests on a real collector (WAL, live rows, Parquet files) in a temporary directory:
//! the vendored golden fixtures (Jaeger dependency links, the OpenTelemetry servicegraph
//! connector's edges), Zipkin traces with expectations worked out by hand from the JSON,
//! sample weights, and traces split across files and live rows.
//!
//! The helpers here are shared with the latency tests.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use weft_collector::config::SyncPolicy;
use weft_collector::{Collector, CollectorConfig, Format};

use super::*;
use crate::{QueryConfig, QueryService};

/// A collector and a query service over a fresh data directory.
pub(crate) struct Harness {
    _dir: tempfile::TempDir,
    pub collector: Arc<Collector>,
    pub service: QueryService,
}

impl Harness {
    pub(crate) async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            wal: weft_collector::config::WalConfig {
                sync: SyncPolicy::Os,
                ..Default::default()
            },
            ..Default::default()
        };
        let collector = Collector::open(config).unwrap();
        let service = QueryService::new(
            std::sync::Arc::clone(collector.store()),
            QueryConfig::default(),
        )
        .unwrap();
        Self {
            _dir: dir,
            collector,
            service,
        }
    }

    /// Exports an OTLP/JSON body; every span must be accepted.
    pub(crate) async fn ingest(&self, body: &[u8]) {
        let outcome = self
            .collector
            .export_traces(Bytes::copy_from_slice(body), Format::Json)
            .await
            .unwrap();
        assert_eq!(outcome.rejected, 0, "{:?}", outcome.rejection_message);
        assert!(outcome.accepted > 0);
    }

    /// Converts a Zipkin fixture and exports it.
    pub(crate) async fn ingest_zipkin(&self, name: &str) {
        let conversion =
            weft_schemas::zipkin::to_otlp(&testdata(&format!("zipkin-v2/{name}"))).unwrap();
        let body =
            weft_schemas::otlp_json::encode_resource_spans(&conversion.request.resource_spans);
        self.ingest(body.to_string().as_bytes()).await;
    }

    /// Moves every live row into Parquet.
    pub(crate) async fn flush(&self) {
        self.collector.flush_all().await.unwrap();
    }
}

/// A file under `schemas/testdata`.
pub(crate) fn testdata(relative: &str) -> Vec<u8> {
    let path = format!(
        "{}/../schemas/testdata/{relative}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// 2023-11-14T22:13:20Z, the base of generated spans.
pub(crate) const T0: i64 = 1_700_000_000_000_000_000;
pub(crate) const SECOND: i64 = 1_000_000_000;
pub(crate) const MS: i64 = 1_000_000;

pub(crate) const INTERNAL: i64 = 1;
pub(crate) const SERVER: i64 = 2;
pub(crate) const CLIENT: i64 = 3;

/// An OTLP/JSON span; `parent` 0 for a root.
pub(crate) fn span(
    trace: u128,
    id: u64,
    parent: u64,
    name: &str,
    kind: i64,
    start: i64,
    duration: i64,
) -> Value {
    json!({
        "traceId": format!("{trace:032x}"),
        "spanId": format!("{id:016x}"),
        "parentSpanId": if parent == 0 { String::new() } else { format!("{parent:016x}") },
        "name": name,
        "kind": kind,
        "startTimeUnixNano": start.to_string(),
        "endTimeUnixNano": (start + duration).to_string(),
        "attributes": [],
    })
}

pub(crate) fn with_attr(mut span: Value, key: &str, value: &str) -> Value {
    span["attributes"]
        .as_array_mut()
        .unwrap()
        .push(json!({"key": key, "value": {"stringValue": value}}));
    span
}

pub(crate) fn with_error(mut span: Value) -> Value {
    span["status"] = json!({"code": 2});
    span
}

/// Sets the W3C trace state; `ot=th:8` gives sample weight 2, `ot=th:c` weight 4.
pub(crate) fn with_trace_state(mut span: Value, state: &str) -> Value {
    span["traceState"] = json!(state);
    span
}

/// An export request with one resource per `(service, spans)`.
pub(crate) fn request(resources: Vec<(&str, Vec<Value>)>) -> Vec<u8> {
    let resource_spans: Vec<Value> = resources
        .into_iter()
        .map(|(service, spans)| {
            json!({
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": service}}
                ]},
                "scopeSpans": [{"scope": {"name": "test"}, "spans": spans}],
            })
        })
        .collect();
    json!({ "resourceSpans": resource_spans })
        .to_string()
        .into_bytes()
}

/// Asserts `got` is within the sketch's relative error of `exact`.
pub(crate) fn assert_close(got: i64, exact: i64, what: &str) {
    let bound = exact as f64 * crate::span_scan::sketch::RELATIVE_ERROR;
    assert!(
        (got - exact).abs() as f64 <= bound,
        "{what}: {got} is not within {bound} of {exact}"
    );
}

fn link(parent: &str, child: &str, call_count: u64) -> DependencyLink {
    DependencyLink {
        parent: parent.into(),
        child: child.into(),
        call_count,
    }
}

fn expected_links(v: &Value) -> Vec<DependencyLink> {
    let mut links: Vec<DependencyLink> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            link(
                l["parent"].as_str().unwrap(),
                l["child"].as_str().unwrap(),
                l["callCount"].as_u64().unwrap(),
            )
        })
        .collect();
    links.sort_by(|a, b| (&a.parent, &a.child).cmp(&(&b.parent, &b.child)));
    links
}

/// Edges as `(client, server, kind, virtual node, calls, errors)`, for compact asserts.
type EdgeRow = (String, String, EdgeKind, Option<VirtualNode>, f64, f64);

fn edge_rows(graph: &ServiceGraph) -> Vec<EdgeRow> {
    graph
        .edges
        .iter()
        .map(|e| {
            (
                e.client.clone(),
                e.server.clone(),
                e.kind,
                e.virtual_node,
                e.calls,
                e.errors,
            )
        })
        .collect()
}

fn row(
    client: &str,
    server: &str,
    kind: EdgeKind,
    virtual_node: Option<VirtualNode>,
    calls: f64,
    errors: f64,
) -> EdgeRow {
    (
        client.into(),
        server.into(),
        kind,
        virtual_node,
        calls,
        errors,
    )
}

fn edge<'a>(graph: &'a ServiceGraph, client: &str, server: &str) -> &'a Edge {
    graph
        .edges
        .iter()
        .find(|e| e.client == client && e.server == server)
        .unwrap_or_else(|| panic!("no edge {client} -> {server}: {:?}", edge_rows(graph)))
}

const EVERYTHING: (i64, i64) = (0, i64::MAX);

/// Where the golden inputs sit when they are queried.
#[derive(Debug, Clone, Copy)]
enum Layout {
    /// Never flushed: live rows only (unsorted batches).
    Live,
    /// Flushed after every ingest: Parquet only.
    Files,
    /// Flushed after the first ingest only: a trace split between a file and live rows.
    FirstStepInFile,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jaeger_links_match_the_derived_golden_in_every_layout() {
    let golden: Value =
        serde_json::from_slice(&testdata("derived-dependency-golden/expected-links.json")).unwrap();
    for layout in [Layout::Live, Layout::Files, Layout::FirstStepInFile] {
        for case in golden["cases"].as_array().unwrap() {
            let harness = Harness::new().await;
            let steps: Vec<Value> = match case.get("steps") {
                Some(steps) => steps.as_array().unwrap().clone(),
                None => vec![case.clone()],
            };
            for (n, step) in steps.iter().enumerate() {
                let input = step["ingest"].as_str().unwrap();
                harness
                    .ingest(&testdata(&format!("derived-dependency-golden/{input}")))
                    .await;
                match (layout, n) {
                    (Layout::Files, _) | (Layout::FirstStepInFile, 0) => harness.flush().await,
                    _ => {}
                }
                let (start, end) = match step.get("query") {
                    Some(q) => (
                        q["startTime_ns"].as_i64().unwrap(),
                        q["endTime_ns"].as_i64().unwrap(),
                    ),
                    None => EVERYTHING,
                };
                let links = jaeger_dependency_links(&harness.service, start, end)
                    .await
                    .unwrap();
                assert_eq!(
                    links,
                    expected_links(&step["expected_links"]),
                    "{layout:?} {} step {n}",
                    case["upstream"]
                );
            }
        }
    }
}

#[tokio::test]
async fn links_need_the_parent_inside_the_range() {
    // jaeger-memory-deps-part1: op-1 and op-2 (service-x, starting at 1700000000 s and
    // 1700000001 s) are children of op-3 (service-y, starting at 1699999998 s).
    let harness = Harness::new().await;
    harness
        .ingest(&testdata(
            "derived-dependency-golden/jaeger-memory-deps-part1.otlp.json",
        ))
        .await;
    let from_children =
        jaeger_dependency_links(&harness.service, 1_699_999_999 * SECOND, T0 + 5 * SECOND)
            .await
            .unwrap();
    assert_eq!(from_children, vec![]);
    let with_parent =
        jaeger_dependency_links(&harness.service, 1_699_999_998 * SECOND, T0 + SECOND)
            .await
            .unwrap();
    assert_eq!(
        with_parent,
        vec![link("service-y", "service-x", 1)],
        "op-2 starts at the end"
    );
    assert_eq!(
        jaeger_dependency_links(&harness.service, T0, T0)
            .await
            .unwrap(),
        vec![],
        "an empty range"
    );
}

#[tokio::test]
async fn service_graph_matches_the_otelcol_golden_edges() {
    let golden: Value = serde_json::from_slice(&testdata(
        "otelcol-contrib-servicegraph/expected-edges.json",
    ))
    .unwrap();
    for case in golden["cases"].as_array().unwrap() {
        let input = case["input"]
            .as_str()
            .unwrap()
            .replace(".yaml", ".otlp.json");
        for flushed in [false, true] {
            let harness = Harness::new().await;
            harness
                .ingest(&testdata(&format!("otelcol-contrib-servicegraph/{input}")))
                .await;
            if flushed {
                harness.flush().await;
            }
            let graph = service_graph(&harness.service, EVERYTHING.0, EVERYTHING.1)
                .await
                .unwrap();
            let mut expected: Vec<(String, String, bool, bool, f64)> = case["edges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["client"].as_str().unwrap().to_owned(),
                        e["server"].as_str().unwrap().to_owned(),
                        e["connection_type"] == "virtual_node",
                        e["failed"].as_bool().unwrap(),
                        e["request_total"].as_f64().unwrap(),
                    )
                })
                .collect();
            expected.sort_by(|a, b| a.partial_cmp(b).unwrap());
            let mut actual: Vec<(String, String, bool, bool, f64)> = graph
                .edges
                .iter()
                .map(|e| {
                    (
                        e.client.clone(),
                        e.server.clone(),
                        e.is_virtual,
                        e.errors > 0.0,
                        e.calls,
                    )
                })
                .collect();
            actual.sort_by(|a, b| a.partial_cmp(b).unwrap());
            assert_eq!(actual, expected, "{input} flushed={flushed}");
            // Upstream's histogram sums for the one-call edges: 1 µs on each side.
            for e in case["edges"].as_array().unwrap() {
                let found = edge(
                    &graph,
                    e["client"].as_str().unwrap(),
                    e["server"].as_str().unwrap(),
                );
                if let Some(sum) = e.get("client_seconds_sum").and_then(Value::as_f64) {
                    let p50 = found.client_latency_ns.unwrap().p50;
                    assert_eq!(p50, (sum * 1e9).round() as i64, "{input}");
                }
                if let Some(sum) = e.get("server_seconds_sum").and_then(Value::as_f64) {
                    let p50 = found.server_latency_ns.unwrap().p50;
                    assert_eq!(p50, (sum * 1e9).round() as i64, "{input}");
                }
            }
            // Virtual names are nodes of their own, marked as such.
            for node in &graph.nodes {
                let virtual_name = node.service == "user" || node.service == "unknown";
                assert_eq!(node.is_virtual, virtual_name, "{input}: {node:?}");
            }
        }
    }
}

/// Two traces into `backend`, one to an uninstrumented redis, with sample weights 1, 4, 2.
fn weighted_request() -> Vec<u8> {
    let w4 = "ot=th:c";
    let w2 = "ot=th:8";
    let frontend = vec![
        with_attr(
            span(1, 1, 0, "GET /a", CLIENT, T0, MS),
            "peer.service",
            "backend",
        ),
        with_trace_state(span(2, 1, 0, "GET /b", CLIENT, T0 + SECOND, 100 * MS), w4),
        with_trace_state(
            with_error(with_attr(
                span(3, 1, 0, "GET", CLIENT, T0 + 2 * SECOND, 2 * MS),
                "db.system",
                "redis",
            )),
            w2,
        ),
    ];
    let backend = vec![
        span(1, 2, 1, "GET /a", SERVER, T0 + MS / 10, MS / 2),
        with_trace_state(
            with_error(span(2, 2, 1, "GET /b", SERVER, T0 + SECOND + MS, 90 * MS)),
            w4,
        ),
    ];
    request(vec![("frontend", frontend), ("backend", backend)])
}

#[tokio::test]
async fn counts_and_percentiles_are_weighted_by_sample_weight() {
    let harness = Harness::new().await;
    harness.ingest(&weighted_request()).await;
    let graph = service_graph(&harness.service, T0, T0 + 10 * SECOND)
        .await
        .unwrap();
    assert_eq!(
        edge_rows(&graph),
        vec![
            row("frontend", "backend", EdgeKind::Request, None, 5.0, 4.0),
            row(
                "frontend",
                "redis",
                EdgeKind::Request,
                Some(VirtualNode::Server),
                2.0,
                2.0
            ),
        ]
    );
    let calls = edge(&graph, "frontend", "backend");
    // 1 ms with weight 1 and 100 ms with weight 4: the weighted median is 100 ms (the
    // unweighted one would be 1 ms).
    let client = calls.client_latency_ns.unwrap();
    assert_eq!((client.p50, client.p99), (100 * MS, 100 * MS));
    assert_close(calls.server_latency_ns.unwrap().p50, 90 * MS, "server p50");
    assert_eq!(
        calls.example_trace_ids,
        vec![format!("{:032x}", 2), format!("{:032x}", 1)],
        "slowest first"
    );
    let node = |name: &str| {
        graph
            .nodes
            .iter()
            .find(|n| n.service == name)
            .unwrap()
            .clone()
    };
    assert_eq!(node("frontend").spans, 7.0);
    assert_eq!(node("backend").spans, 5.0);
    assert_eq!(
        (node("backend").calls_in, node("backend").errors_in),
        (5.0, 4.0)
    );
    assert_eq!(
        (node("frontend").calls_out, node("frontend").errors_out),
        (7.0, 6.0)
    );
    assert!(node("redis").is_virtual && !node("backend").is_virtual);
    let links = jaeger_dependency_links(&harness.service, T0, T0 + 10 * SECOND)
        .await
        .unwrap();
    assert_eq!(links, vec![link("frontend", "backend", 5)]);
}

/// The frontend's and the backend's spans of one trace.
type TraceSpans = (Vec<Value>, Vec<Value>);

/// `traces` traces of frontend → backend → postgres, with per-trace durations.
fn chain(traces: u128) -> Vec<TraceSpans> {
    (1..=traces)
        .map(|t| {
            let start = T0 + t as i64 * MS;
            let d = (t as i64 % 17 + 1) * MS;
            let frontend = vec![
                span(t, 1, 0, "GET /", SERVER, start, 10 * d),
                with_attr(
                    span(t, 2, 1, "call", CLIENT, start + 1, 8 * d),
                    "peer.service",
                    "backend",
                ),
            ];
            let mut server = span(t, 3, 2, "handle", SERVER, start + 2, 6 * d);
            if t % 5 == 0 {
                server = with_error(server);
            }
            let backend = vec![
                server,
                with_attr(
                    span(t, 4, 3, "SELECT", CLIENT, start + 3, 2 * d),
                    "db.system",
                    "postgresql",
                ),
                span(t, 5, 3, "work", INTERNAL, start + 4, d),
            ];
            (frontend, backend)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traces_split_across_files_and_live_rows_resolve_like_whole_ones() {
    const N: u128 = 60;
    let range = (T0, T0 + 10 * SECOND);
    let traces = chain(N);
    let all = |pick: &dyn Fn(&TraceSpans) -> Vec<Value>| -> Vec<Value> {
        traces.iter().flat_map(pick).collect()
    };

    // Whole: one request, queried live (unsorted) and then from one Parquet file.
    let whole = Harness::new().await;
    whole
        .ingest(&request(vec![
            ("frontend", all(&|t| t.0.clone())),
            ("backend", all(&|t| t.1.clone())),
        ]))
        .await;
    let live_graph = service_graph(&whole.service, range.0, range.1)
        .await
        .unwrap();
    let live_links = jaeger_dependency_links(&whole.service, range.0, range.1)
        .await
        .unwrap();
    whole.flush().await;
    let file_graph = service_graph(&whole.service, range.0, range.1)
        .await
        .unwrap();
    assert_eq!(file_graph, live_graph);

    // Split: the backend (which finishes first) in one file, the frontends of even traces
    // in a second file, the odd ones still live. Every frontend CLIENT span first looks
    // like a call to a virtual `backend` peer; the second pass must turn it into a call.
    let split = Harness::new().await;
    split
        .ingest(&request(vec![("backend", all(&|t| t.1.clone()))]))
        .await;
    split.flush().await;
    let (even, odd): (Vec<_>, Vec<_>) = traces.iter().enumerate().partition(|(i, _)| i % 2 == 0);
    let frontends = |part: Vec<(usize, &TraceSpans)>| -> Vec<u8> {
        request(vec![(
            "frontend",
            part.into_iter().flat_map(|(_, t)| t.0.clone()).collect(),
        )])
    };
    split.ingest(&frontends(even)).await;
    split.flush().await;
    split.ingest(&frontends(odd)).await;
    let split_graph = service_graph(&split.service, range.0, range.1)
        .await
        .unwrap();
    let split_links = jaeger_dependency_links(&split.service, range.0, range.1)
        .await
        .unwrap();

    assert_eq!(split_graph, live_graph);
    assert_eq!(split_links, live_links);
    let n = N as f64;
    assert_eq!(
        edge_rows(&live_graph),
        vec![
            row(
                "backend",
                "postgresql",
                EdgeKind::Request,
                Some(VirtualNode::Server),
                n,
                0.0
            ),
            row("frontend", "backend", EdgeKind::Request, None, n, n / 5.0),
            row(
                "user",
                "frontend",
                EdgeKind::Request,
                Some(VirtualNode::Client),
                n,
                0.0
            ),
        ]
    );
    assert_eq!(
        live_links,
        vec![
            link("backend", "backend", 2 * N as u64),
            link("frontend", "backend", N as u64),
            link("frontend", "frontend", N as u64),
        ]
    );
    // Durations 1..=17 ms, client 8x and server 6x: the exact weighted p50 of 60 calls.
    let mut client: Vec<i64> = (1..=N as i64).map(|t| 8 * (t % 17 + 1) * MS).collect();
    client.sort();
    let p50 = client[29];
    let got = edge(&live_graph, "frontend", "backend")
        .client_latency_ns
        .unwrap()
        .p50;
    assert_close(got, p50, "client p50");
}

#[tokio::test]
async fn sql_table_functions_return_the_graph_links_and_latency() {
    let harness = Harness::new().await;
    harness.ingest(&weighted_request()).await;
    harness.flush().await;
    let rows = |sql: &'static str| {
        let service = &harness.service;
        async move {
            let result = service.sql(sql).await.unwrap();
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            writer
                .write_batches(&result.batches.iter().collect::<Vec<_>>())
                .unwrap();
            writer.finish().unwrap();
            let bytes = writer.into_inner();
            if bytes.is_empty() {
                return Vec::new();
            }
            serde_json::from_slice::<Vec<Value>>(&bytes).unwrap()
        }
    };
    let graph = rows(
        "SELECT client, server, kind, virtual_node, calls, errors, client_p50_ns, \
         server_p50_ns IS NOT NULL AS has_server, \
         cardinality(example_trace_ids) AS examples \
         FROM service_graph('2023-11-14T22:13:20Z', '2023-11-14T22:13:30Z') ORDER BY server",
    )
    .await;
    assert_eq!(
        graph,
        vec![
            json!({"client": "frontend", "server": "backend", "kind": "request", "calls": 5.0,
                   "errors": 4.0, "client_p50_ns": 100 * MS, "has_server": true, "examples": 2}),
            json!({"client": "frontend", "server": "redis", "kind": "request", "virtual_node": "server",
                   "calls": 2.0, "errors": 2.0, "client_p50_ns": 2 * MS, "has_server": false,
                   "examples": 1}),
        ]
    );
    let links =
        rows("SELECT * FROM dependency_links(1700000000000000000, 1700000010000000000)").await;
    assert_eq!(
        links,
        vec![json!({"parent": "frontend", "child": "backend", "call_count": 5})]
    );
    let latency = rows(
        "SELECT service_name, span_name, count, errors, max_ns FROM \
         span_latency('2023-11-14T22:13:20Z', '2023-11-14T22:13:30Z') ORDER BY service_name, span_name",
    )
    .await;
    assert_eq!(
        latency,
        vec![
            json!({"service_name": "backend", "span_name": "GET /a", "count": 1.0, "errors": 0.0, "max_ns": MS / 2}),
            json!({"service_name": "backend", "span_name": "GET /b", "count": 4.0, "errors": 4.0, "max_ns": 90 * MS}),
            json!({"service_name": "frontend", "span_name": "GET", "count": 2.0, "errors": 2.0, "max_ns": 2 * MS}),
            json!({"service_name": "frontend", "span_name": "GET /a", "count": 1.0, "errors": 0.0, "max_ns": MS}),
            json!({"service_name": "frontend", "span_name": "GET /b", "count": 4.0, "errors": 0.0, "max_ns": 100 * MS}),
        ]
    );
    for bad in [
        "SELECT * FROM service_graph('yesterday', '2023-11-14T22:13:30Z')",
        "SELECT * FROM service_graph('2023-11-14T22:13:30Z', '2023-11-14T22:13:20Z')",
        "SELECT * FROM service_graph(1, 2, 3)",
        "SELECT * FROM dependency_links(now(), 5)",
    ] {
        let err = harness.service.sql(bad).await.unwrap_err();
        assert!(matches!(err, crate::Error::BadRequest(_)), "{bad}: {err:?}");
    }
}

// ---- Zipkin traces, expectations worked out by hand from the JSON --------------------------

#[tokio::test]
async fn zipkin_yelp_graph_and_links() {
    // yelp.json, 16 spans of one trace. Shared-id pairs (client → server):
    //   mobile_api 7a77… → spectre, yelp-main f5f2… → mobile_api,
    //   "unknown" (envoy) 668e… → yelp_main/api_proxy.
    // Client spans without a server: mobile_api → blt (1), mobile_api → memcache (2),
    //   yelp-main → memcache (3), yelp-main → mysql (2), named by remoteEndpoint.
    // The root SERVER span of `routing` is called by `user`.
    let harness = Harness::new().await;
    harness.ingest_zipkin("yelp.json").await;
    let graph = service_graph(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    let r = EdgeKind::Request;
    let server = Some(VirtualNode::Server);
    assert_eq!(
        edge_rows(&graph),
        vec![
            row("mobile_api", "blt", r, server, 1.0, 0.0),
            row("mobile_api", "memcache", r, server, 2.0, 0.0),
            row("mobile_api", "spectre", r, None, 1.0, 0.0),
            row("unknown", "yelp_main/api_proxy", r, None, 1.0, 0.0),
            row("user", "routing", r, Some(VirtualNode::Client), 1.0, 0.0),
            row("yelp-main", "memcache", r, server, 3.0, 0.0),
            row("yelp-main", "mobile_api", r, None, 1.0, 0.0),
            row("yelp-main", "mysql", r, server, 2.0, 0.0),
        ]
    );
    // yelp-main's client span lasted 56000 µs, mobile_api's server span 41740 µs.
    let e = edge(&graph, "yelp-main", "mobile_api");
    assert_eq!(e.client_latency_ns.unwrap().p50, 56_000_000);
    assert_eq!(e.server_latency_ns.unwrap().p50, 41_740_000);
    // Parent → child for the 15 non-root spans (shared servers hang under their client,
    // and children of a shared id under the server of their own service):
    //   mobile_api's 4 client spans under its server; 4 yelp-main spans under the
    //   "txn" span; "txn" and one memcache call under yelp_main/api_proxy.
    let links = jaeger_dependency_links(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    assert_eq!(
        links,
        vec![
            link("mobile_api", "mobile_api", 4),
            link("mobile_api", "spectre", 1),
            link("routing", "unknown", 1),
            link("routing", "yelp-main", 1),
            link("unknown", "yelp_main/api_proxy", 1),
            link("yelp-main", "mobile_api", 1),
            link("yelp-main", "yelp-main", 4),
            link("yelp_main/api_proxy", "yelp-main", 2),
        ]
    );
    assert_eq!(links.iter().map(|l| l.call_count).sum::<u64>(), 15);
}

#[tokio::test]
async fn zipkin_kafka_producer_consumer_edges() {
    // messaging-kafka.json: servicea's PRODUCER spans 2e22…, 5133… and 085a… each have
    // two CONSUMER children, one in serviceb and one in servicea (fan-out: 3 + 3 calls).
    // The six other PRODUCERs (topics central.messages and command-messages) have no
    // consumer: calls to the virtual `kafka` (remoteEndpoint). The root CONSUMER `poll`
    // of servicea is called by `user`. Errors are on INTERNAL on-message spans only.
    let harness = Harness::new().await;
    harness.ingest_zipkin("messaging-kafka.json").await;
    harness.flush().await;
    let graph = service_graph(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    let m = EdgeKind::Messaging;
    assert_eq!(
        edge_rows(&graph),
        vec![
            row("servicea", "kafka", m, Some(VirtualNode::Server), 6.0, 0.0),
            row("servicea", "servicea", m, None, 3.0, 0.0),
            row("servicea", "serviceb", m, None, 3.0, 0.0),
            row("user", "servicea", m, Some(VirtualNode::Client), 1.0, 0.0),
        ]
    );
    // Producer durations of the three fanned-out sends: 1471, 1035 and 1259 µs, each
    // counted once per consumer; consumers took 1 µs each.
    let e = edge(&graph, "servicea", "serviceb");
    assert_close(e.client_latency_ns.unwrap().p50, 1_259_000, "producer p50");
    assert_close(e.client_latency_ns.unwrap().p99, 1_471_000, "producer p99");
    assert_eq!(e.server_latency_ns.unwrap().p99, 1_000, "one value: exact");
    // 27 spans have a parent: 3 serviceb consumers under servicea producers, 3 serviceb
    // on-message spans under them, 21 servicea → servicea.
    let links = jaeger_dependency_links(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    assert_eq!(
        links,
        vec![
            link("servicea", "servicea", 21),
            link("servicea", "serviceb", 3),
            link("serviceb", "serviceb", 3),
        ]
    );
}

#[tokio::test]
async fn zipkin_skew_shared_span() {
    // skew.json: servicea's root SERVER `get` calls serviceb through the shared id
    // 74280ae0c10d8062; serviceb's `async` span (parent = the shared id) belongs under
    // serviceb's server span.
    let harness = Harness::new().await;
    harness.ingest_zipkin("skew.json").await;
    let graph = service_graph(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    let r = EdgeKind::Request;
    assert_eq!(
        edge_rows(&graph),
        vec![
            row("servicea", "serviceb", r, None, 1.0, 0.0),
            row("user", "servicea", r, Some(VirtualNode::Client), 1.0, 0.0),
        ]
    );
    let links = jaeger_dependency_links(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    assert_eq!(
        links,
        vec![
            link("servicea", "servicea", 1),
            link("servicea", "serviceb", 1),
            link("serviceb", "serviceb", 1),
        ]
    );
}

#[tokio::test]
async fn zipkin_oauth_edges() {
    // smartthings-oauth-authorization.json, 175 spans of one trace, counted from the JSON:
    // SERVER spans sharing a CLIENT span's id give 45 calls (bouncer → pusher 5 fanned
    // out, datamgmt → auth 20, datamgmt → datamgmt 8, datamgmt → account 5, datamgmt →
    // stlogin 2, stlogin → auth 2, datamgmt → bouncer 1, pusher → dove 1, pusher →
    // paperboy 1); SERVER spans with their own id under a CLIENT parent 19 more (datamgmt →
    // datamgmt 17, datamgmt → stlogin 2); one root SERVER (datamgmt). The 54 CLIENT spans
    // without a server are named by remoteEndpoint (auth's 50 calls to `auth`) or `unknown`.
    let harness = Harness::new().await;
    harness
        .ingest_zipkin("smartthings-oauth-authorization.json")
        .await;
    let graph = service_graph(&harness.service, EVERYTHING.0, EVERYTHING.1)
        .await
        .unwrap();
    let r = EdgeKind::Request;
    let peer = Some(VirtualNode::Server);
    assert_eq!(
        edge_rows(&graph)
            .into_iter()
            .map(|(c, s, k, v, calls, _)| (c, s, k, v, calls))
            .collect::<Vec<_>>(),
        vec![
            ("auth".into(), "auth".into(), r, peer, 50.0),
            ("auth".into(), "unknown".into(), r, peer, 1.0),
            ("bouncer".into(), "pusher".into(), r, None, 5.0),
            ("datamgmt".into(), "account".into(), r, None, 5.0),
            ("datamgmt".into(), "auth".into(), r, None, 20.0),
            ("datamgmt".into(), "bouncer".into(), r, None, 1.0),
            ("datamgmt".into(), "datamgmt".into(), r, None, 25.0),
            ("datamgmt".into(), "stlogin".into(), r, None, 4.0),
            ("datamgmt".into(), "unknown".into(), r, peer, 1.0),
            ("pusher".into(), "dove".into(), r, None, 1.0),
            ("pusher".into(), "paperboy".into(), r, None, 1.0),
            ("pusher".into(), "unknown".into(), r, peer, 1.0),
            ("stlogin".into(), "auth".into(), r, None, 2.0),
            ("stlogin".into(), "unknown".into(), r, peer, 1.0),
            (
                "user".into(),
                "datamgmt".into(),
                r,
                Some(VirtualNode::Client),
                1.0
            ),
        ]
    );
}

#[tokio::test]
async fn no_spans_no_graph() {
    let harness = Harness::new().await;
    let graph = service_graph(&harness.service, T0, T0 + SECOND)
        .await
        .unwrap();
    assert!(graph.nodes.is_empty() && graph.edges.is_empty());
    harness.ingest(&weighted_request()).await;
    let before = service_graph(&harness.service, T0 - SECOND, T0)
        .await
        .unwrap();
    assert!(before.edges.is_empty(), "{:?}", edge_rows(&before));
    let counts: BTreeMap<String, f64> = service_graph(&harness.service, T0, T0 + SECOND)
        .await
        .unwrap()
        .nodes
        .into_iter()
        .map(|n| (n.service, n.spans))
        .collect();
    // Only trace 1 (weight 1) starts in the first second.
    assert_eq!(
        counts,
        BTreeMap::from([("backend".into(), 1.0), ("frontend".into(), 1.0)])
    );
}
