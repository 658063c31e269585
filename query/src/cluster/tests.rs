//! Cluster tests with real collectors in `<tmp>/nodes/<id>/`, their snapshot routers served
//! on loopback, and cluster views built by hand: copies on two replicas, retries stored
//! twice, flushed and live rows, a node that does not answer, one that refuses, and a node
//! directory that is no longer a member.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use bytes::Bytes;
use datafusion::physical_plan::displayable;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use weft_cluster::{ClusterView, Member, MemberState, node_data_dir};
use weft_collector::config::{SyncPolicy, WalConfig};
use weft_collector::{Collector, CollectorConfig, Format};
use weft_schemas::{Table, columns};

use super::merge::Tuning;
use super::*;
use crate::search::{SearchRequest, search};
use crate::{QueryConfig, QueryService};

/// Start of the test data: 2023-11-14T22:13:20Z, early in its hour.
const T0: i64 = 1_700_000_000_000_000_000;
const HOUR: i64 = 3_600_000_000_000;
const FANOUT: Duration = Duration::from_millis(300);

fn open(root: &Path, id: &str) -> Arc<Collector> {
    Collector::open(CollectorConfig {
        data_dir: node_data_dir(root, id),
        wal: WalConfig {
            sync: SyncPolicy::Os,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

/// Serves `collector`'s snapshot endpoint on a loopback port.
async fn serve(collector: Arc<Collector>) -> (SocketAddr, JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, weft_collector::snapshot_server::router(collector))
            .await
            .unwrap();
    });
    (addr, server)
}

fn member(id: &str, addr: SocketAddr) -> Member {
    Member {
        node_id: id.to_owned(),
        grpc_addr: String::new(),
        http_addr: addr.to_string(),
        state: MemberState::Up,
    }
}

fn view(members: Vec<Member>, version: u64) -> Arc<ClusterView> {
    Arc::new(ClusterView::new(members, 16, 2, version))
}

/// One span: trace id `[trace; 16]`, span id `span`, parent span id `parent` (0: root).
#[derive(Clone, Copy)]
struct S {
    trace: u8,
    span: u64,
    parent: u64,
    kind: u8,
    service: &'static str,
    start: i64,
}

fn trace_id(trace: u8) -> [u8; 16] {
    [trace; 16]
}

fn spans_body(spans: &[S]) -> Bytes {
    let mut by_service: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for s in spans {
        let parent = if s.parent == 0 {
            String::new()
        } else {
            format!(r#","parentSpanId":"{:016x}""#, s.parent)
        };
        by_service.entry(s.service).or_default().push(format!(
            r#"{{"traceId":"{}","spanId":"{:016x}"{parent},"name":"op{}","kind":{},"startTimeUnixNano":"{}","endTimeUnixNano":"{}"}}"#,
            hex::encode(trace_id(s.trace)),
            s.span,
            s.span,
            s.kind,
            s.start,
            s.start + 1_000_000,
        ));
    }
    let resources: Vec<String> = by_service
        .iter()
        .map(|(service, spans)| {
            format!(
                r#"{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"{service}"}}}}]}},"scopeSpans":[{{"spans":[{}]}}]}}"#,
                spans.join(",")
            )
        })
        .collect();
    Bytes::from(format!(r#"{{"resourceSpans":[{}]}}"#, resources.join(",")))
}

async fn export(collector: &Collector, spans: &[S]) {
    let outcome = collector
        .export_traces(spans_body(spans), Format::Json)
        .await
        .unwrap();
    assert_eq!(outcome.rejected, 0, "{:?}", outcome.rejection_message);
}

const SERVER: u8 = 2;
const CLIENT: u8 = 3;
const INTERNAL: u8 = 1;

/// A: front SERVER -> front CLIENT -> back SERVER (one call front -> back).
fn trace_a() -> Vec<S> {
    vec![
        S {
            trace: 0x1a,
            span: 1,
            parent: 0,
            kind: SERVER,
            service: "front",
            start: T0,
        },
        S {
            trace: 0x1a,
            span: 2,
            parent: 1,
            kind: CLIENT,
            service: "front",
            start: T0 + 10,
        },
        S {
            trace: 0x1a,
            span: 3,
            parent: 2,
            kind: SERVER,
            service: "back",
            start: T0 + 20,
        },
    ]
}

fn pair(trace: u8, start: i64) -> Vec<S> {
    vec![
        S {
            trace,
            span: 1,
            parent: 0,
            kind: INTERNAL,
            service: "batch",
            start,
        },
        S {
            trace,
            span: 2,
            parent: 1,
            kind: INTERNAL,
            service: "batch",
            start: start + 5,
        },
    ]
}

fn single(trace: u8, start: i64) -> Vec<S> {
    vec![S {
        trace,
        span: 1,
        parent: 0,
        kind: INTERNAL,
        service: "solo",
        start,
    }]
}

/// Distinct spans per trace across the cluster.
fn expected() -> BTreeMap<[u8; 16], i64> {
    [
        (0x1a, 3), // A: c1 (flushed) and c2 (live)
        (0x5b, 2), // B: c2 and c3, both flushed
        (0x9c, 2), // C: c3 only, flushed and again live (a retry)
        (0xdd, 2), // D: c1 only, stored twice before its flush, two hours later
        (0xe1, 1), // E: node "old", no longer a member
        (0x2f, 1), // F: c2 only, flushed
        (0x67, 1), // G: c2 only, live
    ]
    .into_iter()
    .map(|(t, n)| (trace_id(t), n))
    .collect()
}

struct Cluster {
    dir: tempfile::TempDir,
    nodes: Vec<(String, Arc<Collector>, SocketAddr, JoinHandle<()>)>,
    view: watch::Sender<Arc<ClusterView>>,
}

impl Cluster {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();

        // A node that left the cluster: only its directory remains.
        let old = open(root, "old");
        export(&old, &single(0xe1, T0 + 30)).await;
        old.flush_all().await.unwrap();
        drop(old);

        let c1 = open(root, "c1");
        let c2 = open(root, "c2");
        let c3 = open(root, "c3");
        export(&c1, &trace_a()).await;
        export(&c1, &pair(0xdd, T0 + 2 * HOUR)).await;
        export(&c1, &pair(0xdd, T0 + 2 * HOUR)).await;
        c1.flush_all().await.unwrap();

        export(&c2, &pair(0x5b, T0 + 40)).await;
        export(&c2, &single(0x2f, T0 + 50)).await;
        c2.flush_all().await.unwrap();
        export(&c2, &trace_a()).await;
        export(&c2, &single(0x67, T0 + 60)).await;

        export(&c3, &pair(0x5b, T0 + 40)).await;
        export(&c3, &pair(0x9c, T0 + 70)).await;
        c3.flush_all().await.unwrap();
        export(&c3, &pair(0x9c, T0 + 70)).await;

        let mut nodes = Vec::new();
        for (id, collector) in [("c1", c1), ("c2", c2), ("c3", c3)] {
            let (addr, server) = serve(std::sync::Arc::clone(&collector)).await;
            nodes.push((id.to_owned(), collector, addr, server));
        }
        let members = nodes
            .iter()
            .map(|(id, _, addr, _)| member(id, *addr))
            .collect();
        let (view, _) = watch::channel(view(members, 1));
        Self { dir, nodes, view }
    }

    fn source(&self) -> ClusterSource {
        ClusterSource::new(self.dir.path().to_path_buf(), self.view.subscribe(), FANOUT).unwrap()
    }

    fn service(&self, tuning: Option<Tuning>) -> QueryService {
        let mut source = self.source();
        if let Some(tuning) = tuning {
            source = source.with_tuning(tuning);
        }
        QueryService::new_cluster(source, QueryConfig::default()).unwrap()
    }

    /// Points member `id` at `addr` (a node that stopped, or never answers).
    fn redirect(&self, id: &str, addr: SocketAddr) {
        let current = self.view.borrow().clone();
        let members = current
            .members
            .iter()
            .map(|m| {
                if m.node_id == id {
                    member(id, addr)
                } else {
                    m.clone()
                }
            })
            .collect();
        self.view.send_replace(view(members, current.version + 1));
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for (_, _, _, server) in &self.nodes {
            server.abort();
        }
    }
}

fn int(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

async fn count(service: &QueryService, sql: &str) -> (i64, Vec<String>) {
    let result = service.sql(sql).await.unwrap();
    (int(&result.batches), result.warnings)
}

async fn per_trace(service: &QueryService) -> BTreeMap<[u8; 16], i64> {
    let result = service
        .sql("SELECT trace_id, count(*) AS n FROM spans GROUP BY trace_id")
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for batch in &result.batches {
        let ids = batch.column(0).as_fixed_size_binary();
        let counts = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            out.insert(ids.value(i).try_into().unwrap(), counts.value(i));
        }
    }
    out
}

/// What the scan of `trace_id = id` would read, from its plan's one-line summary.
async fn plan_summary(service: &QueryService, id: [u8; 16]) -> String {
    let ctx = service.session().unwrap();
    let table = ctx.table_provider(Table::Spans.name()).await.unwrap();
    let filter =
        col(columns::TRACE_ID).eq(lit(ScalarValue::FixedSizeBinary(16, Some(id.to_vec()))));
    let plan = table
        .scan(&ctx.state(), None, &[filter], None)
        .await
        .unwrap();
    displayable(plan.as_ref()).one_line().to_string()
}

async fn check_everything_once(service: &QueryService) {
    let total: i64 = expected().values().sum();
    let (n, warnings) = count(service, "SELECT count(*) FROM spans").await;
    assert_eq!(n, total);
    assert!(warnings.is_empty(), "{warnings:?}");
    let (n, _) = count(
        service,
        "SELECT count(*) FROM (SELECT service_name, span_name FROM spans)",
    )
    .await;
    assert_eq!(n, total, "a projection without the identity columns");
    assert_eq!(per_trace(service).await, expected());
    let (n, _) = count(service, "SELECT count(*) FROM traces").await;
    assert_eq!(n, expected().len() as i64, "the traces view");

    for (id, spans) in expected() {
        let batches = service.trace(id).await.unwrap().expect("trace found");
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows as i64, spans, "trace {}", hex::encode(id));
    }

    let page = search(service, &SearchRequest::default()).await.unwrap();
    let found: BTreeMap<[u8; 16], i64> = page
        .traces
        .iter()
        .map(|t| (t.trace_id, t.span_count as i64))
        .collect();
    assert_eq!(found, expected());

    let graph = crate::graph::service_graph(service, T0 - HOUR, T0 + 3 * HOUR)
        .await
        .unwrap();
    let calls = |client: &str, server: &str| {
        graph
            .edges
            .iter()
            .find(|e| e.client == client && e.server == server)
            .map(|e| e.calls)
    };
    assert_eq!(calls("front", "back"), Some(1.0), "{:?}", graph.edges);
    assert_eq!(calls("user", "front"), Some(1.0), "{:?}", graph.edges);
    let links = crate::graph::jaeger_dependency_links(service, T0 - HOUR, T0 + 3 * HOUR)
        .await
        .unwrap();
    let batch_links = links
        .iter()
        .find(|l| l.parent == "batch" && l.child == "batch")
        .map(|l| l.call_count);
    assert_eq!(batch_links, Some(3), "B, C, D: one parent -> child each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_span_is_seen_once_across_replicas_retries_and_removed_nodes() {
    let cluster = Cluster::new().await;
    check_everything_once(&cluster.service(None)).await;

    // Hours cut into trace-id ranges (as big hours are) give the same answers.
    let ranged = cluster.service(Some(Tuning {
        unit_bytes: 1024,
        min_split_bytes: 0,
    }));
    check_everything_once(&ranged).await;
    let summary = plan_summary(&ranged, trace_id(0x1a)).await;
    assert!(
        summary.contains("units=1,")
            && summary.contains("files=1,")
            && summary.contains("live_rows=3"),
        "one range holds a trace: {summary}"
    );
    let ctx = ranged.session().unwrap();
    let plan = ctx
        .sql("SELECT * FROM spans")
        .await
        .unwrap()
        .create_physical_plan()
        .await
        .unwrap();
    let text = displayable(plan.as_ref()).indent(true).to_string();
    let units: usize = text
        .split("units=")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(units > 2, "more units than hours: {text}");

    // A trace too big to sort in memory streams, still without copies.
    let streaming = QueryService::new_cluster(
        cluster.source(),
        QueryConfig {
            trace_sort_max_spans: 1,
            ..QueryConfig::default()
        },
    )
    .unwrap();
    match streaming.trace_rows(trace_id(0x1a)).await.unwrap() {
        Some(crate::TraceRows::Streaming {
            span_count,
            head,
            mut rest,
        }) => {
            assert_eq!(span_count, 3);
            let mut rows: usize = head.iter().map(|b| b.num_rows()).sum();
            while let Some(batch) = futures::StreamExt::next(&mut rest).await {
                rows += batch.unwrap().num_rows();
            }
            assert_eq!(rows, 3);
        }
        _ => panic!("trace A streams when the sort limit is 1 span"),
    }

    // Trace lookups open only files whose trace-id filter may hold the trace.
    let service = cluster.service(None);
    assert!(
        plan_summary(&service, trace_id(0x2f))
            .await
            .contains("files=1,")
    );
    assert!(
        plan_summary(&service, trace_id(0x5b))
            .await
            .contains("files=2,"),
        "B is in a file of c2 and one of c3"
    );
    let nothing = plan_summary(&service, [0x42; 16]).await;
    assert!(
        !nothing.contains("DedupMergeExec") && !nothing.contains(".parquet"),
        "{nothing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_does_not_answer_costs_only_its_live_rows_and_says_so() {
    let cluster = Cluster::new().await;
    let service = cluster.service(None);
    // c2 "hangs": connections are accepted by the kernel, nothing ever answers.
    let black_hole = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    cluster.redirect("c2", black_hole.local_addr().unwrap());
    // c3 stopped: nothing listens on its port any more.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cluster.redirect("c3", closed);

    let started = Instant::now();
    let (n, warnings) = count(&service, "SELECT count(*) FROM spans").await;
    let took = started.elapsed();
    // G was only in c2's live rows; C's live copy has a flushed twin on c3's storage.
    assert_eq!(n, expected().values().sum::<i64>() - 1);
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert_eq!(
        warnings,
        [
            "collector c2 did not answer (timeout after 300ms): its unflushed data is missing from this result",
            "collector c3 did not answer (connection failed): its unflushed data is missing from this result",
        ]
    );
    // F is only in c2's files: read from storage, found through its trace-id filter.
    let f = service.trace(trace_id(0x2f)).await.unwrap().unwrap();
    assert_eq!(f.iter().map(|b| b.num_rows()).sum::<usize>(), 1);
    assert!(service.trace(trace_id(0x67)).await.unwrap().is_none());
    let mut with_g = expected();
    with_g.remove(&trace_id(0x67));
    assert_eq!(per_trace(&service).await, with_g);

    // One request waits for a silent node once, however many scans it makes (three
    // searches are at least six scans: six waits would be six seconds).
    let service = QueryService::new_cluster(
        ClusterSource::new(
            cluster.dir.path().to_path_buf(),
            cluster.view.subscribe(),
            Duration::from_secs(1),
        )
        .unwrap(),
        QueryConfig::default(),
    )
    .unwrap();
    let started = Instant::now();
    let ((), warnings) = crate::warnings::collect(async {
        for _ in 0..3 {
            let page = search(&service, &SearchRequest::default()).await.unwrap();
            assert_eq!(page.traces.len(), with_g.len());
        }
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    drop(black_hole);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warnings_reach_every_http_answer() {
    let cluster = Cluster::new().await;
    let service = Arc::new(cluster.service(None));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, crate::http::router(service))
            .await
            .unwrap();
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let url = |path: &str| format!("http://{addr}{path}");
    let a = hex::encode(trace_id(0x1a));
    let sql = || {
        client
            .post(url("/api/v1/sql"))
            .json(&serde_json::json!({"sql": "SELECT count(*) AS n FROM spans"}))
            .send()
    };

    // All answer: bodies as on one node, no warning header.
    let healthy = sql().await.unwrap();
    assert!(healthy.headers().get(crate::warnings::HEADER).is_none());
    assert_eq!(healthy.text().await.unwrap(), r#"[{"n":12}]"#);

    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    cluster.redirect("c2", closed);
    let warning = "collector c2 did not answer (connection failed): its unflushed data is missing from this result";
    let header_of = |response: &reqwest::Response| -> Vec<String> {
        let value = response
            .headers()
            .get(crate::warnings::HEADER)
            .unwrap_or_else(|| panic!("no warnings on {}", response.url()));
        serde_json::from_str(value.to_str().unwrap()).unwrap()
    };

    let partial = sql().await.unwrap();
    assert_eq!(header_of(&partial), [warning]);
    assert_eq!(
        partial.text().await.unwrap(),
        r#"[{"n":11}]"#,
        "body unchanged"
    );

    for path in [
        format!("/api/v1/traces/{a}"),
        format!("/api/v3/traces/{a}"),
        format!("/api/v1/dependencies?start={}&end={}", T0 - HOUR, T0 + HOUR),
        format!("/api/v1/latency?start={}&end={}", T0 - HOUR, T0 + HOUR),
    ] {
        let response = client.get(url(&path)).send().await.unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        assert_eq!(header_of(&response), [warning], "{path}");
    }

    let response = client.get(url("/api/v1/search")).send().await.unwrap();
    assert_eq!(header_of(&response), [warning]);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["warnings"], serde_json::json!([warning]));
    assert_eq!(body["traces"].as_array().unwrap().len(), 6);

    let response = client
        .get(url(&format!("/api/traces/{a}")))
        .send()
        .await
        .unwrap();
    assert_eq!(header_of(&response), [warning]);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errors"], serde_json::json!([{"msg": warning}]));
    assert_eq!(body["data"][0]["spans"].as_array().unwrap().len(), 3);
    server.abort();
}

fn metrics_body(points: &[(&str, &str, i64, f64)]) -> Bytes {
    let metrics: Vec<String> = points
        .iter()
        .map(|(name, host, time, value)| {
            format!(
                r#"{{"name":"{name}","gauge":{{"dataPoints":[{{"attributes":[{{"key":"host","value":{{"stringValue":"{host}"}}}}],"timeUnixNano":"{time}","asDouble":{value}}}]}}}}"#
            )
        })
        .collect();
    Bytes::from(format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeMetrics":[{{"metrics":[{}]}}]}}]}}"#,
        metrics.join(",")
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_points_are_seen_once() {
    let dir = tempfile::tempdir().unwrap();
    let m1 = open(dir.path(), "m1");
    let m2 = open(dir.path(), "m2");
    let shared = [
        ("temp", "a", T0, 1.5),
        ("temp", "a", T0 + 1_000_000_000, 2.5),
        ("temp", "b", T0, 7.0),
    ];
    for node in [&m1, &m2] {
        node.export_metrics(metrics_body(&shared), Format::Json)
            .await
            .unwrap();
    }
    m1.flush_all().await.unwrap();
    // A retry: the same delta-sum point twice on m2 (live), which only m2 has.
    let delta = Bytes::from(format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeMetrics":[{{"metrics":[{{"name":"load","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"startTimeUnixNano":"{}","timeUnixNano":"{T0}","asDouble":0.5}}]}}}}]}}]}}]}}"#,
        T0 - 1_000_000_000
    ));
    for _ in 0..2 {
        let outcome = m2
            .export_metrics(delta.clone(), Format::Json)
            .await
            .unwrap();
        assert_eq!(outcome.accepted, 1);
    }
    let (a1, s1) = serve(std::sync::Arc::clone(&m1)).await;
    let (a2, s2) = serve(std::sync::Arc::clone(&m2)).await;
    let (_view_tx, view_rx) = watch::channel(view(vec![member("m1", a1), member("m2", a2)], 1));
    let source = ClusterSource::new(dir.path().to_path_buf(), view_rx, FANOUT).unwrap();
    let service = QueryService::new_cluster(source, QueryConfig::default()).unwrap();
    let (n, warnings) = count(&service, "SELECT count(*) FROM metrics").await;
    assert_eq!(n, 4);
    assert!(warnings.is_empty());
    let result = service
        .sql("SELECT sum(value_double) AS total FROM metrics WHERE metric_name = 'temp'")
        .await
        .unwrap();
    let total = result.batches[0]
        .column(0)
        .as_primitive::<arrow::datatypes::Float64Type>()
        .value(0);
    assert_eq!(total, 11.0);
    // Different hosts are different series at the same time: both kept.
    let (n, _) = count(
        &service,
        &format!("SELECT count(*) FROM metrics WHERE time = to_timestamp_nanos({T0})"),
    )
    .await;
    assert_eq!(n, 3);

    // The metrics API reads the same table: the delta point counts once.
    let service = Arc::new(service);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        axum::serve(listener, crate::http::router(service))
            .await
            .unwrap();
    });
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let start = T0 / 1_000_000_000;
    let body: serde_json::Value = client
        .get(format!(
            "http://{addr}/api/v1/metrics/query_range?metric=load&agg=sum&start={start}&end={}&step=1s",
            start + 1
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let points = &body["series"][0]["points"];
    assert_eq!(points[0]["value"], serde_json::json!(0.5), "{body}");
    server.abort();
    s1.abort();
    s2.abort();
}

#[test]
fn durations_read_like_people_write_them() {
    assert_eq!(human_duration(Duration::from_secs(2)), "2s");
    assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
    assert_eq!(human_duration(Duration::from_millis(300)), "300ms");
    assert!(safe_relative("spans/tenant=default/x.parquet"));
    assert!(!safe_relative("../c2/spans/x.parquet"));
    assert!(!safe_relative("/etc/passwd"));
}
