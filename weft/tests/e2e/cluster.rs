//! A real cluster (2 `weft ingest`, 3 `weft collector`, 1 `weft query`, separate processes on
//! loopback, shared storage) under load from the load generator and the OpenTelemetry SDK,
//! with faults injected: SIGKILL, SIGSTOP for 10 s, a collector added and one removed, and
//! a cut ingest -> collector connection. After every scenario each acknowledged span is
//! queryable exactly once. Figures (detection, drain, latency, movement) are printed with
//! `cluster:` prefixes for the closing notes, never asserted as timings.
//!
//! The scenarios run one at a time (`SERIAL`): each starts six or seven processes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry::trace::{Span as _, TraceContextExt as _, Tracer as _, TracerProvider as _};
use opentelemetry_otlp::{SpanExporter, WithExportConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;
use prost::Message as _;
use serde_json::Value;
use weft_cluster::ring::HashRing;
use weft_load_test::{LoadConfig, Protocol, Report};

use crate::cluster_harness::{Cluster, Discovery, FaultProxy, members, node_files, up_members};
use crate::common::{Acked, DEADLINE, MAX_POLLS, POLL_EVERY, http_client};

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn load(endpoint: String, protocol: Protocol, rate: u64, secs: u64, seed: u64) -> LoadConfig {
    LoadConfig {
        endpoint,
        protocol,
        gzip: false,
        rate,
        duration: Duration::from_secs(secs),
        concurrency: 4,
        batch_spans: 60,
        services: 10,
        error_rate: 0.02,
        seed,
        quiet: true,
        request_timeout: Duration::from_secs(10),
        // Back-pressure is answered with retries, as SDKs do; nothing may fail for good.
        max_retries: 20,
        ..LoadConfig::default()
    }
}

/// Starts a load through each ingest node (gRPC through i1, HTTP/protobuf through i2).
fn start_loads(
    cluster: &Cluster,
    acked: &Arc<Acked>,
    rate: u64,
    secs: u64,
) -> Vec<tokio::task::JoinHandle<anyhow::Result<Report>>> {
    let seed = weft_load_test::time_seed();
    vec![
        tokio::spawn(weft_load_test::run(
            load(
                cluster.ingests[0].url("otlp-grpc"),
                Protocol::Grpc,
                rate,
                secs,
                seed,
            ),
            Some(acked.callback()),
        )),
        tokio::spawn(weft_load_test::run(
            load(
                cluster.ingests[1].url("otlp-http"),
                Protocol::HttpProto,
                rate,
                secs,
                seed.wrapping_add(1),
            ),
            Some(acked.callback()),
        )),
    ]
}

/// Waits for the loads; every request must have been acknowledged in the end.
async fn finish_loads(
    loads: Vec<tokio::task::JoinHandle<anyhow::Result<Report>>>,
    what: &str,
) -> (u64, Vec<Report>) {
    let mut sent = 0;
    let mut reports = Vec::new();
    for load in loads {
        let report = load.await.expect("load task").expect("load run");
        eprintln!(
            "cluster: {what}: {} via {}: {} spans acked of {} sent, {} retries, export latency \
             p50 {:.1} ms p99 {:.1} ms max {:.1} ms, errors {:?}",
            report.protocol,
            report.endpoint,
            report.spans_accepted,
            report.spans_sent,
            report.retried,
            report.latency.p50_ms,
            report.latency.p99_ms,
            report.latency.max_ms,
            report.error_kinds
        );
        assert_eq!(report.rejected, 0, "{what}: generator spans are valid");
        assert_eq!(
            report.errors, 0,
            "{what}: no request may fail for good (only retried back-pressure)"
        );
        assert!(
            report.stopped_early.is_none(),
            "{what}: {:?}",
            report.stopped_early
        );
        sent += report.spans_sent;
        reports.push(report);
    }
    (sent, reports)
}

/// The per-collector forwarding entry of an ingest node's view.
fn forwarding<'a>(view: &'a Value, node_id: &str) -> Option<&'a Value> {
    view["forwarding"]["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node_id"] == node_id)
}

/// Fraction of `ids` whose owner set differs between two rings.
fn moved_fraction(before: &[&str], after: &[&str], replication: usize) -> (f64, f64) {
    let a = HashRing::new(before.iter().copied(), 256, replication);
    let b = HashRing::new(after.iter().copied(), 256, replication);
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let (mut primary_moved, mut owners_moved) = (0u64, 0u64);
    const SAMPLES: u64 = 100_000;
    for _ in 0..SAMPLES {
        // splitmix64: a fixed, uniform stream of trace ids.
        rng_state = rng_state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        id[8..].copy_from_slice(&z.to_be_bytes());
        if a.primary(&id) != b.primary(&id) {
            primary_moved += 1;
        }
        let mut oa = a.owners(&id);
        let mut ob = b.owners(&id);
        oa.sort();
        ob.sort();
        if oa != ob {
            owners_moved += 1;
        }
    }
    (
        primary_moved as f64 / SAMPLES as f64,
        owners_moved as f64 / SAMPLES as f64,
    )
}

/// Exports `traces` small traces with the OpenTelemetry SDK's gRPC exporter through
/// `endpoint`; returns their trace ids (hex) once the SDK reports them exported.
async fn sdk_traces(endpoint: String, traces: usize) -> Vec<(String, usize)> {
    let exporter = SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(30))
        .build()
        .expect("grpc span exporter");
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            Resource::builder()
                .with_service_name("e2e-cluster-sdk")
                .build(),
        )
        .build();
    let tracer = provider.tracer("cluster-e2e");
    let mut ids = Vec::new();
    for t in 0..traces {
        let root = tracer.start(format!("root-{t}"));
        let cx = opentelemetry::Context::current_with_span(root);
        let trace_id = cx.span().span_context().trace_id().to_string();
        for c in 0..3 {
            let mut child = tracer.start_with_context(format!("child-{c}"), &cx);
            child.end();
        }
        cx.span().end();
        ids.push((trace_id, 4));
    }
    // force_flush blocks on the exporter; run it off the async workers.
    let flushed = tokio::task::spawn_blocking(move || {
        let result = provider.force_flush();
        let _ = provider.shutdown();
        result
    })
    .await
    .expect("flush task");
    flushed.expect("the SDK's export was acknowledged");
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_stores_every_acknowledged_span_exactly_once() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(Discovery::Gossip, 3, 60, "").await;
    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1500, 6);
    let sdk = sdk_traces(cluster.ingests[1].url("otlp-grpc"), 20).await;
    let (sent, _) = finish_loads(loads, "steady").await;
    let sdk_spans: usize = sdk.iter().map(|(_, n)| n).sum();
    let visible_after = cluster
        .assert_all_acked_stored_once(&acked, sent + sdk_spans as u64)
        .await;
    eprintln!(
        "cluster: steady: all {} acknowledged spans visible {:.2} s after the last ack",
        acked.spans().len(),
        visible_after.as_secs_f64()
    );
    // The SDK's traces come back whole, once, through the trace API of the query node.
    for (trace_id, spans) in &sdk {
        let response = http_client()
            .get(cluster.query_url(&format!("/api/v1/traces/{trace_id}")))
            .send()
            .await
            .expect("trace");
        assert_eq!(response.status(), 200, "trace {trace_id}");
        let count = response
            .headers()
            .get("x-weft-span-count")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<usize>().ok());
        assert_eq!(count, Some(*spans), "trace {trace_id} has every span once");
    }
    // Every collector took part; after their flush every one has Parquet files.
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if ["c1", "c2", "c3"]
            .iter()
            .all(|c| node_files(&cluster.storage(), c) > 0)
        {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "every collector flushes its share"
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    // Flushed or live, the answer is the same and still exactly once.
    let again = cluster.stored_spans().await;
    assert!(acked.spans().is_subset(&again));
    // `weft ring` prints the operator view of an ingest node as a table.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["ring", "--url", &cluster.ingests[0].url("otlp-http")])
        .env_remove("WEFT_CONFIG")
        .output()
        .expect("run weft ring");
    assert!(output.status.success(), "weft ring: {output:?}");
    let table = String::from_utf8_lossy(&output.stdout);
    eprintln!("cluster: weft ring:\n{table}");
    for node in ["c1", "c2", "c3"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(node) && l.contains(" up ") && l.contains("closed")),
            "{node} listed up with a closed circuit:\n{table}"
        );
    }
    // The operator view of every node shows the same ring.
    let views = cluster.views().await;
    for view in &views {
        assert_eq!(members(view), ["c1", "c2", "c3"]);
        assert_eq!(view["replication"], 2);
        let share: f64 = view["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|m| m["ring_share"].as_f64().expect("share"))
            .sum();
        assert!(
            (share - 1.0).abs() < 1e-6,
            "ring shares add up to 1: {share}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_a_collector_under_load_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(Discovery::Gossip, 3, 60, "").await;
    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1500, 10);
    acked.wait_more(40).await;
    let killed_at = Instant::now();
    cluster.collector("c2").kill();
    let detected = cluster
        .wait_views("c2 marked down", |v| {
            !up_members(v).contains(&"c2".to_owned())
        })
        .await;
    eprintln!(
        "cluster: sigkill: every ingest and query node marked c2 down {:.2} s after SIGKILL",
        detected.as_secs_f64()
    );
    // A query while c2 is a member that cannot answer is partial and says so.
    let (_, warnings) = cluster.sql("SELECT count(*) AS n FROM spans").await;
    let warnings = warnings.expect("a partial result carries x-weft-warnings");
    assert!(
        warnings.contains("c2"),
        "warning names the node: {warnings}"
    );
    acked.wait_more(20).await;
    let (sent, _) = finish_loads(loads, "sigkill").await;
    eprintln!(
        "cluster: sigkill: load ran {:.1} s past the kill",
        killed_at.elapsed().as_secs_f64()
    );
    // R = 2: every acknowledged span has a copy on a live node or in c2's flushed files.
    cluster.assert_all_acked_stored_once(&acked, sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigstop_of_a_collector_opens_its_circuit_and_it_catches_up() {
    let _serial = SERIAL.lock().await;
    let cluster = Cluster::start(Discovery::Gossip, 3, 60, "").await;
    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1000, 16);
    acked.wait_more(20).await;

    // Single-trace probes whose owners are c1 and c2 only: their latency must not depend
    // on the frozen c3.
    let ring = HashRing::new(["c1", "c2", "c3"], 256, 2);
    let probe_ids: Vec<[u8; 16]> = (0u64..)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&(i + 1).to_be_bytes());
            id[8..].copy_from_slice(&0x5eed_u64.wrapping_mul(i + 7).to_be_bytes());
            id
        })
        .filter(|id| !ring.owners(id).contains(&"c3"))
        .take(100)
        .collect();

    cluster.collectors[2].pause();
    let paused_at = Instant::now();
    let before = acked.requests();
    let mut probe_latencies = Vec::new();
    let client = http_client();
    let probe_url = format!("{}/v1/traces", cluster.ingests[0].url("otlp-http"));
    for id in &probe_ids {
        if paused_at.elapsed() >= Duration::from_secs(10) {
            break;
        }
        let body = probe_request(id).encode_to_vec();
        let sent_at = Instant::now();
        let response = client
            .post(&probe_url)
            .header("content-type", "application/x-protobuf")
            .body(body)
            .send()
            .await
            .expect("probe");
        assert!(
            response.status().is_success(),
            "probe: {}",
            response.status()
        );
        probe_latencies.push(sent_at.elapsed());
        // Paced, so the probes spread over the whole pause.
        tokio::time::sleep(Duration::from_millis(80)).await;
    }
    // The freeze lasts 10 s whatever the probes did (it is the fault, not a wait).
    let remaining = Duration::from_secs(10).saturating_sub(paused_at.elapsed());
    tokio::time::sleep(remaining).await;
    let acked_while_paused = acked.requests() - before;
    let views = cluster.views().await;
    cluster.collectors[2].resume();
    let resumed_at = Instant::now();

    probe_latencies.sort();
    let p99 = probe_latencies[(probe_latencies.len() * 99 / 100).min(probe_latencies.len() - 1)];
    eprintln!(
        "cluster: sigstop: {} probes owned by c1/c2 during the 10 s freeze of c3: p50 {:.1} ms \
         p99 {:.1} ms max {:.1} ms; {} load requests acknowledged meanwhile",
        probe_latencies.len(),
        probe_latencies[probe_latencies.len() / 2].as_secs_f64() * 1000.0,
        p99.as_secs_f64() * 1000.0,
        probe_latencies.last().expect("probes").as_secs_f64() * 1000.0,
        acked_while_paused
    );
    assert!(
        acked_while_paused > 0,
        "ingest kept acknowledging while c3 was frozen"
    );
    // Each ingest node stopped calling c3: its circuit opened or it was routed around.
    for view in views.iter().filter(|v| v["role"] == "ingest") {
        let c3 = forwarding(view, "c3").expect("ingest reports c3");
        let opened = c3["circuit_opened"].as_u64().unwrap_or(0);
        let down = !up_members(view).contains(&"c3".to_owned());
        assert!(
            opened > 0 || down,
            "c3's circuit opened or c3 marked down on {}: {c3}",
            view["node_id"]
        );
    }
    cluster
        .wait_views("c3 up again", |v| up_members(v).contains(&"c3".to_owned()))
        .await;
    wait_spool_empty(&cluster).await;
    eprintln!(
        "cluster: sigstop: c3 up and every hint delivered {:.2} s after SIGCONT",
        resumed_at.elapsed().as_secs_f64()
    );
    let (sent, _) = finish_loads(loads, "sigstop").await;
    cluster
        .assert_all_acked_stored_once(&acked, sent + 400)
        .await;
}

/// One trace of 4 spans with the given id, as an OTLP request.
fn probe_request(
    trace_id: &[u8; 16],
) -> opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64;
    let spans = (0..4u64)
        .map(|i| Span {
            trace_id: trace_id.to_vec(),
            span_id: (i + 1).to_be_bytes().to_vec(),
            parent_span_id: if i == 0 {
                Vec::new()
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("probe-{i}"),
            start_time_unix_nano: now + i * 1000,
            end_time_unix_nano: now + i * 1000 + 500,
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".to_owned(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("e2e-probe".to_owned())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

async fn wait_spool_empty(cluster: &Cluster) -> Duration {
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if cluster.spooled_hints().await == 0 {
            return start.elapsed();
        }
        assert!(start.elapsed() < DEADLINE, "the hand-off spool drains");
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("the hand-off spool did not drain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_and_removing_collectors_under_load_moves_about_one_nth() {
    let _serial = SERIAL.lock().await;
    let mut cluster = Cluster::start(Discovery::Gossip, 3, 3, "").await;
    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1000, 20);
    acked.wait_more(20).await;

    cluster.start_collector("c4", &[]);
    let joined = cluster
        .wait_views("c4 joined", |v| up_members(v) == ["c1", "c2", "c3", "c4"])
        .await;
    let (primary, owners) = moved_fraction(&["c1", "c2", "c3"], &["c1", "c2", "c3", "c4"], 2);
    eprintln!(
        "cluster: add c4: every node routes to it {:.2} s after start; moved: primary {:.4} \
         (ideal 0.25), owner set {:.4}",
        joined.as_secs_f64(),
        primary,
        owners
    );
    assert!((primary - 0.25).abs() < 0.05, "primary moved {primary}");
    acked.wait_more(20).await;

    let status = cluster.collector("c1").stop();
    assert!(status.success(), "c1 leaves cleanly: {status}");
    let left = cluster
        .wait_views("c1 removed from the ring", |v| {
            members(v) == ["c2", "c3", "c4"]
        })
        .await;
    let (primary, owners) = moved_fraction(&["c1", "c2", "c3", "c4"], &["c2", "c3", "c4"], 2);
    eprintln!(
        "cluster: remove c1: out of every ring {:.2} s after SIGTERM; moved: primary {:.4} \
         (ideal 0.25), owner set {:.4}",
        left.as_secs_f64(),
        primary,
        owners
    );
    assert!((primary - 0.25).abs() < 0.05, "primary moved {primary}");
    let (sent, _) = finish_loads(loads, "add/remove").await;
    wait_spool_empty(&cluster).await;
    cluster.assert_all_acked_stored_once(&acked, sent).await;
    // c1 flushed everything when it left: its files stay readable from storage.
    assert!(node_files(&cluster.storage(), "c1") > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_connection_is_handed_off_through_the_spool() {
    let _serial = SERIAL.lock().await;
    let proxy = FaultProxy::start().await;
    // Static membership: c3 is probed over its HTTP port (not cut), so it stays "up" while
    // the forwarding path to its gRPC port, through the proxy, is cut.
    let mut cluster = Cluster::new(Discovery::Static, 60, "");
    cluster.start_collector("c1", &[]);
    cluster.start_collector("c2", &[]);
    cluster.start_collector(
        "c3",
        &[
            "--set".to_owned(),
            format!("listen.advertise_cluster_grpc=\"{}\"", proxy.addr),
        ],
    );
    let c3_grpc = cluster.collector("c3").addrs["cluster-grpc"].clone();
    proxy.set_target(c3_grpc.parse().expect("c3 grpc addr"));
    cluster.start_ingest("i1");
    cluster.start_ingest("i2");
    cluster.start_query();
    cluster
        .wait_views("every collector up", |v| {
            up_members(v) == ["c1", "c2", "c3"]
        })
        .await;

    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1000, 14);
    acked.wait_more(20).await;
    proxy.cut();
    let cut_at = Instant::now();
    // Spooled hints appear, and the clients keep getting acknowledgements.
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if cluster.spooled_hints().await > 0 {
            break;
        }
        assert!(start.elapsed() < DEADLINE, "hints are spooled for c3");
        tokio::time::sleep(POLL_EVERY).await;
    }
    // Keep the path cut for a while (~3 s of load) with acknowledgements flowing.
    acked.wait_more(100).await;
    let views = cluster.views().await;
    for view in views.iter().filter(|v| v["role"] == "ingest") {
        assert!(
            up_members(view).contains(&"c3".to_owned()),
            "membership still sees c3 (only the data path is cut)"
        );
    }
    let spooled = cluster.spooled_hints().await;
    let cut_for = cut_at.elapsed();
    proxy.restore();
    let drained = wait_spool_empty(&cluster).await;
    eprintln!(
        "cluster: cut: {spooled} hints spooled for c3 during a {:.1} s cut; spool drained {:.2} s \
         after the connection came back",
        cut_for.as_secs_f64(),
        drained.as_secs_f64()
    );
    let (sent, _) = finish_loads(loads, "cut").await;
    cluster.assert_all_acked_stored_once(&acked, sent).await;
}

/// The same cluster with `storage.url` on one bucket of a real S3-compatible server: every
/// collector commits under its own `nodes/<id>/` prefix, the query node reads them all, and
/// a collector SIGKILLed under load loses nothing acknowledged (its flushed files are read
/// from the bucket, its unflushed rows come back with it or from the replica).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_on_one_bucket_loses_nothing_through_a_collector_sigkill() {
    let _serial = SERIAL.lock().await;
    let s3 = crate::object_storage::S3Server::start().await;
    let storage = format!(
        "[storage]\nurl = \"s3://weft-e2e/cluster\"\nendpoint = \"{}\"\nregion = \"us-east-1\"\n\
         access_key_id = \"weft-test\"\nsecret_access_key = \"weft-test-secret\"\n",
        s3.endpoint
    );
    let mut cluster = Cluster::start(Discovery::Gossip, 3, 60, &storage).await;
    let acked = Arc::new(Acked::default());
    let loads = start_loads(&cluster, &acked, 1500, 10);
    acked.wait_more(40).await;
    // Wait for c2 to have committed files to the bucket, then kill it.
    let start = Instant::now();
    while s3.manifest_rows("cluster/nodes/c2", "spans").await == 0 {
        assert!(start.elapsed() < DEADLINE, "c2 commits to the bucket");
        tokio::time::sleep(POLL_EVERY).await;
    }
    cluster.collector("c2").kill();
    acked.wait_more(20).await;
    let (sent, _) = finish_loads(loads, "sigkill on s3").await;
    cluster.assert_all_acked_stored_once(&acked, sent).await;
    for node in ["c1", "c2", "c3"] {
        let keys = s3.keys(&format!("cluster/nodes/{node}/spans")).await;
        assert!(
            keys.iter().any(|k| k.ends_with(".parquet")),
            "{node} wrote its files to the bucket: {keys:?}"
        );
        assert_eq!(
            node_files(&cluster.storage(), node),
            0,
            "{node} has no parquet file on local disk"
        );
    }
}
