//! End-to-end tests of the ingest tier against real collectors on loopback: three
//! `Collector`s serving the OTLP gRPC services (and the HTTP router for remote-write), an
//! `Ingest` following a hand-built `ClusterView`.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, FixedSizeBinaryArray};
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use weft_schemas::Table;

use super::*;
use weft_cluster::{Member, MemberState};
use weft_collector::config::{CollectorConfig, SyncPolicy, WalConfig};
use weft_collector::{Collector, Error, Format};
use weft_receiver::{grpc, http};

const WAIT: Duration = Duration::from_secs(15);

/// Polls `done` until it holds; fails the test after `WAIT`.
async fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < until, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Server {
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct TestCollector {
    id: String,
    collector: Arc<Collector>,
    _dir: tempfile::TempDir,
    grpc_addr: SocketAddr,
    http_addr: SocketAddr,
    grpc: Option<Server>,
    _http: JoinHandle<()>,
}

impl TestCollector {
    async fn start(id: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let collector = Collector::open(CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            wal: WalConfig {
                sync: SyncPolicy::Os,
                ..Default::default()
            },
            ..Default::default()
        })
        .unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc_addr = listener.local_addr().unwrap();
        let grpc = serve_grpc(std::sync::Arc::clone(&collector), listener);
        let http_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_addr = http_listener.local_addr().unwrap();
        let router = http::router(std::sync::Arc::clone(&collector));
        let http = tokio::spawn(async move {
            let _ = axum::serve(http_listener, router).await;
        });
        Self {
            id: id.to_owned(),
            collector,
            _dir: dir,
            grpc_addr,
            http_addr,
            grpc: Some(grpc),
            _http: http,
        }
    }

    fn member(&self, state: MemberState) -> Member {
        Member {
            node_id: self.id.clone(),
            grpc_addr: self.grpc_addr.to_string(),
            http_addr: self.http_addr.to_string(),
            state,
        }
    }

    /// Stops the gRPC server (graceful: open connections are told to go away).
    async fn stop_grpc(&mut self) {
        let server = self.grpc.take().expect("running");
        let _ = server.stop.send(());
        tokio::time::timeout(WAIT, server.task)
            .await
            .expect("server stops")
            .unwrap();
    }

    async fn restart_grpc(&mut self) {
        let listener = TcpListener::bind(self.grpc_addr).await.unwrap();
        self.grpc = Some(serve_grpc(std::sync::Arc::clone(&self.collector), listener));
    }

    /// Span rows per trace ID in the live buffers.
    fn spans_by_trace(&self) -> HashMap<Vec<u8>, usize> {
        let mut rows = HashMap::new();
        for batch in self.collector.snapshot(Table::Spans).live {
            let ids = batch
                .column_by_name(weft_schemas::columns::TRACE_ID)
                .unwrap()
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .unwrap()
                .clone();
            for i in 0..ids.len() {
                *rows.entry(ids.value(i).to_vec()).or_insert(0) += 1;
            }
        }
        rows
    }

    fn metric_rows(&self) -> usize {
        self.collector
            .snapshot(Table::Metrics)
            .live
            .iter()
            .map(|b| b.num_rows())
            .sum()
    }
}

fn serve_grpc(collector: Arc<Collector>, listener: TcpListener) -> Server {
    let (stop, stopped) = oneshot::channel::<()>();
    let (traces, metrics, logs) = grpc::services(collector);
    let task = tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(traces)
            .add_service(metrics)
            .add_service(logs)
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            )
            .await
            .unwrap();
    });
    Server { stop, task }
}

async fn three() -> Vec<TestCollector> {
    vec![
        TestCollector::start("c1").await,
        TestCollector::start("c2").await,
        TestCollector::start("c3").await,
    ]
}

fn view_of(members: Vec<Member>, version: u64) -> Arc<ClusterView> {
    Arc::new(ClusterView::new(members, 64, 2, version))
}

fn all_up(collectors: &[TestCollector], version: u64) -> Arc<ClusterView> {
    view_of(
        collectors
            .iter()
            .map(|c| c.member(MemberState::Up))
            .collect(),
        version,
    )
}

/// Small numbers so failure paths finish quickly.
fn test_config(dir: &std::path::Path) -> IngestConfig {
    IngestConfig {
        spool_dir: dir.to_path_buf(),
        request_timeout_ms: 200,
        delivery_budget_ms: 1_000,
        backoff_base_ms: 10,
        backoff_max_ms: 50,
        breaker_failures: 3,
        breaker_open_ms: 300,
        batch_linger_ms: 1,
        ..Default::default()
    }
}

fn start_ingest(
    dir: &std::path::Path,
    view: Arc<ClusterView>,
) -> (Arc<Ingest>, watch::Sender<Arc<ClusterView>>) {
    start_ingest_with(test_config(dir), view)
}

fn start_ingest_with(
    config: IngestConfig,
    view: Arc<ClusterView>,
) -> (Arc<Ingest>, watch::Sender<Arc<ClusterView>>) {
    let (tx, rx) = watch::channel(view);
    // The tests send fixed historical times: a window wide enough for them.
    let receiver = ReceiverConfig {
        accept_past_secs: 100 * 365 * 24 * 3600,
        ..ReceiverConfig::default()
    };
    let ingest = Ingest::start(config, receiver, rx).unwrap();
    (ingest, tx)
}

fn trace_id(n: u32) -> Vec<u8> {
    let mut id = vec![0xab; 16];
    id[..4].copy_from_slice(&n.to_be_bytes());
    id
}

fn span(trace: &[u8], n: u8) -> Span {
    Span {
        trace_id: trace.to_vec(),
        span_id: vec![n.max(1); 8],
        name: format!("op-{n}"),
        start_time_unix_nano: 1_700_000_000_000_000_000,
        end_time_unix_nano: 1_700_000_000_000_001_000,
        ..Default::default()
    }
}

fn service(name: &str) -> Option<Resource> {
    Some(Resource {
        attributes: vec![KeyValue {
            key: "service.name".into(),
            value: Some(AnyValue {
                value: Some(any_value::Value::StringValue(name.into())),
            }),
            key_strindex: 0,
        }],
        ..Default::default()
    })
}

/// `spans_per_trace` spans of each trace, spread over two resources.
fn traces_request(traces: &[Vec<u8>], spans_per_trace: u8) -> Bytes {
    let mut resource_spans = Vec::new();
    for (r, name) in ["frontend", "backend"].iter().enumerate() {
        let spans = traces
            .iter()
            .flat_map(|t| {
                (0..spans_per_trace)
                    .filter(move |s| usize::from(*s) % 2 == r)
                    .map(|s| span(t, s + 1))
            })
            .collect();
        resource_spans.push(ResourceSpans {
            resource: service(name),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        });
    }
    Bytes::from(ExportTraceServiceRequest { resource_spans }.encode_to_vec())
}

fn targets(view: &ClusterView, trace: &[u8]) -> BTreeSet<String> {
    view.targets(trace)
        .into_iter()
        .map(|m| m.node_id.clone())
        .collect()
}

/// Every trace has `spans` rows on each of `expected(trace)` and none elsewhere.
fn assert_placement(
    collectors: &[TestCollector],
    traces: &[Vec<u8>],
    spans: usize,
    expected: impl Fn(&[u8]) -> BTreeSet<String>,
) {
    let rows: Vec<(String, HashMap<Vec<u8>, usize>)> = collectors
        .iter()
        .map(|c| (c.id.clone(), c.spans_by_trace()))
        .collect();
    for trace in traces {
        let holders: BTreeSet<String> = rows
            .iter()
            .filter(|(_, r)| r.contains_key(trace))
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(holders, expected(trace), "trace {}", hex::encode(trace));
        for (id, r) in &rows {
            if let Some(n) = r.get(trace) {
                assert!(*n >= spans, "{id} has {n} of {spans} spans");
            }
        }
    }
}

fn node<'a>(status: &'a IngestStatus, id: &str) -> &'a NodeStatus {
    status
        .nodes
        .iter()
        .find(|n| n.node_id == id)
        .unwrap_or_else(|| panic!("no status for {id}"))
}

#[tokio::test]
async fn every_span_lands_on_exactly_its_targets() {
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, _view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));

    let traces: Vec<Vec<u8>> = (0..40).map(trace_id).collect();
    let outcome = ingest
        .export_traces(traces_request(&traces, 3), Format::Protobuf)
        .await
        .unwrap();
    assert_eq!((outcome.accepted, outcome.rejected), (120, 0));
    assert_placement(&collectors, &traces, 3, |t| targets(&view, t));
    let pairs: BTreeSet<BTreeSet<String>> = traces.iter().map(|t| targets(&view, t)).collect();
    assert!(pairs.len() > 1, "40 traces exercise several target sets");

    let status = ingest.status();
    assert_eq!(status.totals.spool_hints, 0);
    assert!(status.totals.delivered >= 2);
    assert_eq!(status.totals.queue_bytes, 0);
    for c in &collectors {
        assert_eq!(node(&status, &c.id).circuit, CircuitState::Closed);
    }
    ingest.shutdown().await;
    assert!(matches!(
        ingest
            .export_traces(traces_request(&traces, 1), Format::Protobuf)
            .await,
        Err(Error::ShuttingDown)
    ));
}

#[tokio::test]
async fn invalid_spans_are_rejected_like_the_collector_does() {
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, _view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));
    let good = trace_id(7);
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service("svc"),
            scope_spans: vec![ScopeSpans {
                spans: vec![span(&good, 1), span(&[0; 16], 2), span(&good, 3)],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = Bytes::from(request.encode_to_vec());
    let outcome = ingest
        .export_traces(body.clone(), Format::Protobuf)
        .await
        .unwrap();
    let direct = collectors[0]
        .collector
        .export_traces(body, Format::Protobuf)
        .await
        .unwrap();
    assert_eq!(outcome, direct);
    assert_eq!(outcome.rejected, 1);
    assert!(matches!(
        ingest
            .export_traces(Bytes::from_static(b"\xff\xff"), Format::Protobuf)
            .await,
        Err(Error::InvalidProtobuf(_))
    ));
    assert!(matches!(
        ingest
            .export_traces(Bytes::from_static(b"{"), Format::Json)
            .await,
        Err(Error::InvalidJson(_))
    ));
}

/// Issue 14 item 8: the ingest tier applies the same time window as `weft up`, with the
/// same partial-success answer, and forwards only what it accepted.
#[tokio::test]
async fn spans_outside_the_time_window_are_refused_like_weft_up_does() {
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let replicas = targets(&view, &trace_id(1)).len();
    let (tx, rx) = watch::channel(view);
    let ingest = Ingest::start(test_config(spool.path()), ReceiverConfig::default(), rx).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let at = |trace: u32, t: u64| Span {
        start_time_unix_nano: t,
        end_time_unix_nano: t + 1,
        ..span(&trace_id(trace), 1)
    };
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: service("svc"),
            scope_spans: vec![ScopeSpans {
                spans: vec![
                    at(1, now),
                    at(2, 1_700_000_000_000_000_000),
                    at(3, now + 3 * 3_600_000_000_000),
                ],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let body = Bytes::from(request.encode_to_vec());
    let outcome = ingest
        .export_traces(body.clone(), Format::Protobuf)
        .await
        .unwrap();
    assert_eq!((outcome.accepted, outcome.rejected), (1, 2));
    let message = outcome.rejection_message.clone().unwrap();
    assert!(message.contains("accept_past_secs"), "{message}");

    let dir = tempfile::tempdir().unwrap();
    let weft_up = Collector::open_with(
        CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        },
        weft_collector::CollectorOptions {
            time_window: true,
            ..Default::default()
        },
    )
    .unwrap();
    let direct = weft_up.export_traces(body, Format::Protobuf).await.unwrap();
    assert_eq!(outcome, direct);
    // Only the accepted span reached a collector.
    eventually("the accepted span stored", || {
        collectors
            .iter()
            .map(|c| {
                c.collector
                    .snapshot(Table::Spans)
                    .live
                    .iter()
                    .map(|b| b.num_rows())
                    .sum::<usize>()
            })
            .sum::<usize>()
            >= replicas
    })
    .await;
    let stored: usize = collectors
        .iter()
        .map(|c| {
            c.collector
                .snapshot(Table::Spans)
                .live
                .iter()
                .map(|b| b.num_rows())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(stored, replicas, "one span, on each of its replicas");
    drop(tx);
}

#[tokio::test]
async fn the_http_receiver_serves_an_ingest_like_a_collector() {
    use tower::ServiceExt as _;
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, _view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));
    // The gRPC services build for an ingest too.
    let _services = grpc::services(std::sync::Arc::clone(&ingest));
    let router = http::router(std::sync::Arc::clone(&ingest));

    let json = format!(
        r#"{{"resourceSpans":[{{"scopeSpans":[{{"spans":[
            {{"traceId":"{}","spanId":"0102030405060708","name":"ok",
              "startTimeUnixNano":"1700000000000000000","endTimeUnixNano":"1700000000000001000"}},
            {{"traceId":"00000000000000000000000000000000","spanId":"0102030405060708","name":"bad"}}
        ]}}]}}]}}"#,
        hex::encode(trace_id(99))
    );
    let request = ::http::Request::post("/v1/traces")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(json))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), ::http::StatusCode::OK);
    let body = http_body_util::BodyExt::collect(response.into_body())
        .await
        .unwrap()
        .to_bytes();
    let answer: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], "1");

    let request = ::http::Request::post("/v1/traces")
        .header("content-type", "text/plain")
        .body(axum::body::Body::from("x"))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    assert_eq!(
        response.status(),
        ::http::StatusCode::UNSUPPORTED_MEDIA_TYPE
    );
    assert_placement(&collectors, &[trace_id(99)], 1, |t| targets(&view, t));
}

#[tokio::test]
async fn a_stopped_collector_gets_its_hints_after_restart() {
    let mut collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, _view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));

    collectors[2].stop_grpc().await;
    let traces: Vec<Vec<u8>> = (100..130).map(trace_id).collect();
    assert!(traces.iter().any(|t| targets(&view, t).contains("c3")));
    let outcome = ingest
        .export_traces(traces_request(&traces, 2), Format::Protobuf)
        .await
        .expect("acknowledged: spooled for the stopped node");
    assert_eq!(outcome.accepted, 60);
    let status = ingest.status();
    let c3 = node(&status, "c3");
    assert!(c3.spool_hints > 0 && c3.spool_bytes > 0, "{c3:?}");
    assert!(c3.spooled > 0);
    assert_eq!(node(&status, "c1").spool_hints, 0);
    // Nothing reached c3 yet; the others have their share.
    assert!(collectors[2].spans_by_trace().is_empty());

    collectors[2].restart_grpc().await;
    eventually("c3's hints replayed", || {
        let s = ingest.status();
        let c3 = node(&s, "c3");
        c3.spool_hints == 0 && c3.replay.last_drain_finished_ms.is_some()
    })
    .await;
    assert_placement(&collectors, &traces, 2, |t| targets(&view, t));
    let status = ingest.status();
    let c3 = node(&status, "c3");
    assert!(c3.replay.hints_replayed > 0, "{:?}", c3.replay);
    assert!(c3.replay.last_drain_secs.is_some());
    assert_eq!(status.totals.spool_hints, 0);
    ingest.shutdown().await;
}

#[tokio::test]
async fn with_no_owner_up_data_is_spooled_for_the_owners() {
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let down = view_of(
        collectors
            .iter()
            .map(|c| c.member(MemberState::Down))
            .collect(),
        1,
    );
    let (ingest, view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&down));
    let traces: Vec<Vec<u8>> = (200..210).map(trace_id).collect();
    ingest
        .export_traces(traces_request(&traces, 1), Format::Protobuf)
        .await
        .expect("acknowledged from the spool");
    let status = ingest.status();
    assert!(status.totals.spool_hints > 0);
    assert_eq!(status.totals.delivered, 0);

    let up = all_up(&collectors, 2);
    view_tx.send_replace(std::sync::Arc::clone(&up));
    eventually("spool drained once the owners are up", || {
        ingest.status().totals.spool_hints == 0
    })
    .await;
    // The owners of the down view are the targets of the up view (same ring).
    assert_placement(&collectors, &traces, 1, |t| targets(&up, t));
}

#[tokio::test]
async fn hints_of_a_removed_node_are_rerouted_to_current_targets() {
    let mut collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));

    collectors[2].stop_grpc().await;
    let traces: Vec<Vec<u8>> = (300..330).map(trace_id).collect();
    ingest
        .export_traces(traces_request(&traces, 2), Format::Protobuf)
        .await
        .unwrap();
    assert!(node(&ingest.status(), "c3").spool_hints > 0);

    // c3 leaves the ring for good: its share now belongs to c1 and c2.
    let smaller = view_of(
        collectors[..2]
            .iter()
            .map(|c| c.member(MemberState::Up))
            .collect(),
        2,
    );
    view_tx.send_replace(std::sync::Arc::clone(&smaller));
    eventually("c3's hints re-routed", || {
        ingest.status().totals.spool_hints == 0
    })
    .await;
    // Every trace c3 should have had is now on its current targets (both remaining
    // nodes); c3 itself got nothing.
    assert!(collectors[2].spans_by_trace().is_empty());
    let c3_traces: Vec<Vec<u8>> = traces
        .iter()
        .filter(|t| targets(&view, t).contains("c3"))
        .cloned()
        .collect();
    assert!(!c3_traces.is_empty());
    assert_placement(&collectors[..2], &c3_traces, 2, |t| targets(&smaller, t));
    eventually("the removed node's worker is retired", || {
        ingest.status().nodes.iter().all(|n| n.node_id != "c3")
    })
    .await;
}

/// Accepts TCP connections and never answers: a hung collector.
async fn black_hole() -> (SocketAddr, JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    (addr, task)
}

fn lone_member(id: &str, grpc_addr: SocketAddr) -> Arc<ClusterView> {
    view_of(
        vec![Member {
            node_id: id.into(),
            grpc_addr: grpc_addr.to_string(),
            http_addr: grpc_addr.to_string(),
            state: MemberState::Up,
        }],
        1,
    )
}

#[tokio::test]
async fn a_full_queue_refuses_the_whole_request() {
    let (addr, _hole) = black_hole().await;
    let spool = tempfile::tempdir().unwrap();
    let config = IngestConfig {
        queue_max_bytes: 64,
        ..test_config(spool.path())
    };
    let (ingest, _view_tx) = start_ingest_with(config, lone_member("hung", addr));

    let first = {
        let ingest = std::sync::Arc::clone(&ingest);
        tokio::spawn(async move {
            ingest
                .export_traces(traces_request(&[trace_id(1)], 1), Format::Protobuf)
                .await
        })
    };
    eventually("the first request holds the hung node's queue", || {
        ingest.status().totals.queue_bytes > 0
    })
    .await;
    let refused = ingest
        .export_traces(traces_request(&[trace_id(2)], 1), Format::Protobuf)
        .await;
    let err = refused.expect_err("queue full");
    assert!(matches!(err, Error::Overloaded { .. }), "{err}");
    assert_eq!(err.http_status(), ::http::StatusCode::SERVICE_UNAVAILABLE);
    assert!(err.retry_after().is_some());
    assert!(ingest.status().totals.refused >= 1);
    // The first one is not lost: after the budget it is spooled and acknowledged.
    tokio::time::timeout(WAIT, first)
        .await
        .unwrap()
        .unwrap()
        .expect("spooled");
    assert!(ingest.status().totals.spool_hints > 0);
}

#[tokio::test]
async fn the_breaker_opens_for_a_dead_node_and_batches_go_straight_to_the_spool() {
    let dead = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let spool = tempfile::tempdir().unwrap();
    let config = IngestConfig {
        breaker_open_ms: 60_000,
        ..test_config(spool.path())
    };
    let (ingest, _view_tx) = start_ingest_with(config, lone_member("dead", dead));
    ingest
        .export_traces(traces_request(&[trace_id(1)], 1), Format::Protobuf)
        .await
        .expect("spooled");
    let status = ingest.status();
    let n = node(&status, "dead");
    assert_eq!(n.circuit, CircuitState::Open);
    assert!(n.circuit_opened >= 1);
    assert!(n.retried >= 2, "{n:?}");
    assert_eq!(n.spool_hints, 1);
    let (retried, opened) = (n.retried, n.circuit_opened);

    // While open, the node is not called: the next batch goes straight to the spool, with
    // no call and so no retry (the status an operator reads says so).
    ingest
        .export_traces(traces_request(&[trace_id(2)], 1), Format::Protobuf)
        .await
        .expect("spooled");
    let status = ingest.status();
    let n = node(&status, "dead");
    assert_eq!(n.circuit, CircuitState::Open);
    assert_eq!(n.retried, retried, "an open circuit makes no call");
    assert_eq!(n.circuit_opened, opened);
    assert_eq!(n.in_flight, 0);
    assert_eq!(n.spool_hints, 2);
    assert_eq!(n.delivered, 0);
    assert!(n.spool_bytes > 0);
}

fn gauge_request(name: &str, points: u64) -> Bytes {
    let data_points = (0..points)
        .map(|i| NumberDataPoint {
            time_unix_nano: 1_700_000_000_000_000_000 + i,
            value: Some(number_data_point::Value::AsDouble(i as f64)),
            ..Default::default()
        })
        .collect();
    let request = ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: service("svc"),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: name.into(),
                    data: Some(metric::Data::Gauge(Gauge { data_points })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    Bytes::from(request.encode_to_vec())
}

#[tokio::test]
async fn metrics_and_remote_write_go_whole_to_the_targets_of_their_bytes() {
    use weft_schemas::prometheus::{Label, Sample, TimeSeries, WriteRequest};
    let collectors = three().await;
    let spool = tempfile::tempdir().unwrap();
    let view = all_up(&collectors, 1);
    let (ingest, _view_tx) = start_ingest(spool.path(), std::sync::Arc::clone(&view));

    let body = gauge_request("queue_depth", 5);
    let outcome = ingest
        .export_metrics(body.clone(), Format::Protobuf)
        .await
        .unwrap();
    assert_eq!(outcome.accepted, 5);
    let expected: BTreeSet<String> = view
        .targets(&split::content_key(&body))
        .into_iter()
        .map(|m| m.node_id.clone())
        .collect();
    assert_eq!(expected.len(), 2);
    for c in &collectors {
        let rows = c.metric_rows();
        assert_eq!(
            rows,
            if expected.contains(&c.id) { 5 } else { 0 },
            "{}",
            c.id
        );
    }

    let write = WriteRequest {
        timeseries: vec![TimeSeries {
            labels: vec![
                Label {
                    name: "__name__".into(),
                    value: "up".into(),
                },
                Label {
                    name: "job".into(),
                    value: "api".into(),
                },
            ],
            samples: vec![Sample {
                value: 1.0,
                timestamp: 1_700_000_000_000,
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    let snappy = Bytes::from(
        snap::raw::Encoder::new()
            .compress_vec(&write.encode_to_vec())
            .unwrap(),
    );
    let outcome = ingest.export_prometheus(snappy.clone()).await.unwrap();
    assert_eq!(outcome.accepted, 1);
    let prom_targets: BTreeSet<String> = view
        .targets(&split::content_key(&snappy))
        .into_iter()
        .map(|m| m.node_id.clone())
        .collect();
    for c in &collectors {
        let metric = usize::from(expected.contains(&c.id)) * 5;
        let prom = usize::from(prom_targets.contains(&c.id));
        assert_eq!(c.metric_rows(), metric + prom, "{}", c.id);
    }
    // A request with nothing valid is answered and not forwarded.
    let empty = Bytes::from(
        snap::raw::Encoder::new()
            .compress_vec(
                &WriteRequest {
                    timeseries: vec![TimeSeries {
                        samples: vec![Sample {
                            value: 1.0,
                            timestamp: 1,
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }
                .encode_to_vec(),
            )
            .unwrap(),
    );
    let outcome = ingest.export_prometheus(empty).await.unwrap();
    assert_eq!((outcome.accepted, outcome.rejected), (0, 1));
}

#[tokio::test]
async fn shutdown_spools_what_it_cannot_deliver_and_a_restart_replays_it() {
    let (addr, _hole) = black_hole().await;
    let spool = tempfile::tempdir().unwrap();
    let (ingest, _view_tx) = start_ingest(spool.path(), lone_member("c1", addr));
    let pending = {
        let ingest = std::sync::Arc::clone(&ingest);
        tokio::spawn(async move {
            ingest
                .export_traces(traces_request(&[trace_id(5)], 1), Format::Protobuf)
                .await
        })
    };
    eventually("queued", || ingest.status().totals.queue_bytes > 0).await;
    tokio::time::timeout(WAIT, ingest.shutdown())
        .await
        .expect("bounded");
    tokio::time::timeout(WAIT, pending)
        .await
        .unwrap()
        .unwrap()
        .expect("spooled on shutdown");
    drop(ingest);

    // A new process on the same spool delivers it once the node is reachable.
    let mut collectors = three().await;
    collectors.truncate(1);
    let member = Member {
        node_id: "c1".into(),
        ..collectors[0].member(MemberState::Up)
    };
    let (ingest, _view_tx) = start_ingest(spool.path(), view_of(vec![member], 1));
    eventually("hint from the previous run replayed", || {
        ingest.status().totals.spool_hints == 0
    })
    .await;
    assert_eq!(collectors[0].spans_by_trace().get(&trace_id(5)), Some(&1));
}
