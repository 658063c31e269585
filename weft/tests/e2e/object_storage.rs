//! `storage.url = s3://...`: Parquet files, trace-ID filters and manifests in a real
//! S3-compatible server (moto's server, its own process on a loopback port, installed by
//! `scripts/s3-server.sh`), the WAL on local disk.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use weft_load_test::LoadConfig;

use crate::common::{
    Acked, DEADLINE, MAX_POLLS, POLL_EVERY, assert_acked_stored, grpc_load, parquet_files,
};
use crate::crash::stored_spans;
use crate::sdk::{Case, check, observe, send};
use crate::server::TestServer;

const BUCKET: &str = "weft-e2e";

/// An S3-compatible server process on a free loopback port, killed when dropped.
pub(crate) struct S3Server {
    child: Child,
    pub endpoint: String,
}

impl S3Server {
    /// Starts the server `scripts/s3-server.sh install` put in place (or `$WEFT_S3_SERVER`)
    /// and creates [`BUCKET`].
    pub(crate) async fn start() -> Self {
        let program = std::env::var("WEFT_S3_SERVER").unwrap_or_else(|_| {
            let home = std::env::var("HOME").unwrap_or_default();
            format!("{home}/.cache/weft-moto/bin/moto_server")
        });
        assert!(
            Path::new(&program).exists(),
            "no S3-compatible server at {program}: run ./scripts/s3-server.sh install \
             (./scripts/test.sh does)"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        let server = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let client = reqwest::Client::new();
        let started = Instant::now();
        let mut created = false;
        for _ in 0..MAX_POLLS {
            // Creating the bucket is also the readiness probe.
            if let Ok(response) = client
                .put(format!("{}/{BUCKET}", server.endpoint))
                .send()
                .await
                && response.status().is_success()
            {
                created = true;
                break;
            }
            assert!(started.elapsed() < DEADLINE, "the S3 server did not start");
            tokio::time::sleep(POLL_EVERY).await;
        }
        assert!(created, "could not create the bucket");
        server
    }

    /// The standard AWS variables that point a client at this server.
    pub(crate) fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "weft-test".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "weft-test-secret".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
        ]
    }

    /// The bucket through Weft's own storage client (requests are signed, as the server
    /// wants for reading objects).
    fn bucket(&self) -> std::sync::Arc<weft_storage::ObjectStorage> {
        let config = weft_storage::StorageConfig {
            url: format!("s3://{BUCKET}"),
            endpoint: self.endpoint.clone(),
            region: "us-east-1".into(),
            access_key_id: "weft-test".into(),
            secret_access_key: "weft-test-secret".into(),
            ..weft_storage::StorageConfig::default()
        };
        weft_storage::ObjectStorage::open(&config, Path::new("/nonexistent")).expect("bucket")
    }

    /// Keys of the bucket below `prefix`.
    pub(crate) async fn keys(&self, prefix: &str) -> Vec<String> {
        let bucket = self.bucket();
        let prefix = weft_storage::object::key(prefix, "").expect("key");
        tokio::task::spawn_blocking(move || bucket.list(&prefix))
            .await
            .expect("list task")
            .expect("list objects")
            .into_iter()
            .map(|meta| meta.location.to_string())
            .collect()
    }

    /// Rows of `table` the newest manifest below `prefix` lists (0 without a manifest), as
    /// a query node reads them.
    pub(crate) async fn manifest_rows(&self, prefix: &str, table: &str) -> u64 {
        let bucket = self.bucket();
        let prefix = prefix.to_owned();
        let tables = tokio::task::spawn_blocking(move || {
            weft_storage::store::read_committed_files(&bucket, &prefix)
        })
        .await
        .expect("manifest task")
        .expect("manifest");
        tables
            .iter()
            .filter(|(t, _)| t.name() == table)
            .flat_map(|(_, files)| files)
            .map(|f| f.rows)
            .sum()
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `done` (bounded in count and time) until it holds.
async fn wait_for(what: &str, mut done: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if done().await {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("gave up waiting for {what}");
}

fn s3_args(prefix: &str) -> Vec<String> {
    [
        format!("storage.url=s3://{BUCKET}/{prefix}"),
        "collector.buffer.flush_age_secs=1".to_owned(),
        "query.max_result_rows=10000000".to_owned(),
    ]
    .into_iter()
    .flat_map(|set| ["--set".to_owned(), set])
    .collect()
}

fn start(s3: &S3Server, dir: Option<&Path>, args: &[String]) -> TestServer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let env = s3.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    match dir {
        Some(dir) => TestServer::start_in_with_env(dir, &args, &env),
        None => TestServer::start_with_env(&args, &env),
    }
}

/// The OTel SDK's data, read back from live rows and again once it is in Parquet files in
/// the bucket (none on local disk), is what was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_on_s3_round_trips_sdk_data() {
    let s3 = S3Server::start().await;
    let server = start(&s3, None, &s3_args("round-trip"));
    let mut sent = Vec::new();
    let mut live = Vec::new();
    for case in [Case::GRPC, Case::HTTP_JSON] {
        let one = send(&server, case).await;
        live.push(observe(&server, &one).await);
        sent.push(one);
    }
    for (one, observed) in sent.iter().zip(&live) {
        check(one, observed);
    }
    let spans: u64 = sent.iter().map(|s| s.spans.len() as u64).sum();
    wait_for("the spans in parquet files in the bucket", async || {
        s3.manifest_rows("round-trip", "spans").await >= spans
    })
    .await;
    assert_eq!(s3.manifest_rows("round-trip", "spans").await, spans);
    let objects = s3.keys("round-trip/spans").await;
    assert!(
        objects.iter().any(|k| k.ends_with(".parquet"))
            && objects.iter().any(|k| k.ends_with(".tids")),
        "span files and their trace-id filters are in the bucket: {objects:?}"
    );
    assert!(
        parquet_files(&server.data_dir, "spans").is_empty(),
        "no parquet file on local disk"
    );
    for (one, before) in sent.iter().zip(&live) {
        let after = observe(&server, one).await;
        check(one, &after);
        assert_eq!(&after, before, "parquet in S3 answers as the live rows did");
    }
    for one in sent {
        one.shutdown().await;
    }
}

/// SIGKILL under load with files in the bucket: on restart (same local WAL, same bucket)
/// every acknowledged span is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weft_up_on_s3_keeps_every_acknowledged_span_through_sigkill() {
    const KILL_AFTER_REQUESTS: u64 = 60;
    let s3 = S3Server::start().await;
    let args = s3_args("crash");
    let mut first = start(&s3, None, &args);
    let data_dir = first.data_dir.clone();
    let acked = Arc::new(Acked::default());
    let config = grpc_load(&first, 3_000, Duration::from_secs(10));
    let load = tokio::spawn(weft_load_test::run(config, Some(acked.callback())));
    wait_for(
        "acknowledged requests and a flush to the bucket",
        async || {
            acked.requests() >= KILL_AFTER_REQUESTS && s3.manifest_rows("crash", "spans").await > 0
        },
    )
    .await;
    let more = acked.requests() + 10;
    wait_for("acknowledgements after the flush", async || {
        acked.requests() >= more
    })
    .await;
    first.kill();
    let report = load.await.expect("load task").expect("load run ends");
    let acked_spans = acked.spans();
    assert_eq!(report.spans_accepted, acked_spans.len() as u64);

    let second = start(&s3, Some(&data_dir), &args);
    let stored = stored_spans(&second).await;
    assert_acked_stored(&acked_spans, &stored);
    assert!(stored.len() as u64 <= report.spans_sent);
    drop(second);
    drop(first); // owns the local data directory
}

/// One span of its own trace, `age` before now, as OTLP/JSON.
fn span_aged(trace: u8, age: Duration) -> Value {
    let start = std::time::SystemTime::now() - age;
    let start_ns = start
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    serde_json::json!({
        "traceId": format!("{trace:02x}").repeat(16),
        "spanId": format!("{trace:02x}").repeat(8),
        "name": format!("aged-{trace}"),
        "kind": 2,
        "startTimeUnixNano": start_ns.to_string(),
        "endTimeUnixNano": (start_ns + 1_000_000).to_string(),
    })
}

/// Retention drops exactly the hour partitions past their age: from queries at the next
/// pass, from storage after the grace period; queries asked all along keep answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_drops_exactly_the_partitions_past_their_age() {
    let server = TestServer::start(&[
        "--set",
        "collector.buffer.flush_age_secs=1",
        "--set",
        "storage.retention.spans_hours=3",
        "--set",
        "storage.retention.check_interval_secs=1",
        "--set",
        "storage.delete_grace_secs=2",
    ]);
    let hours = |h: u64| Duration::from_secs(h * 3600);
    // Ages chosen away from the 3 h boundary: 30 h, 10 h and 5 h are wholly past it (their
    // hour ends at least 4 h ago); 2 h and 1 minute are not, and always fall in two
    // different hours. One file per hour.
    let aged = [
        (1u8, hours(30), false),
        (2, hours(10), false),
        (3, hours(5), false),
        (4, hours(2), true),
        (5, Duration::from_secs(60), true),
    ];
    let body = serde_json::json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "aged"}}]},
        "scopeSpans": [{"spans": aged.iter().map(|(t, age, _)| span_aged(*t, *age)).collect::<Vec<_>>()}],
    }]});
    let reply = server
        .otlp_post(
            "/v1/traces",
            crate::common::JSON,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    // The old hours are flushed to files first (5 files), then dropped.
    wait_for("the old spans in parquet files", async || {
        crate::common::manifest_rows(&server.data_dir, "spans") > 0
    })
    .await;
    let kept: Vec<String> = aged
        .iter()
        .filter(|(_, _, keep)| *keep)
        .map(|(t, _, _)| format!("{t:02x}").repeat(16))
        .collect();
    let mut answers = 0;
    wait_for("retention to drop the expired hours", async || {
        let rows = server
            .sql_rows(
                "SELECT hex_id(trace_id) AS t FROM spans WHERE span_name LIKE 'aged-%' ORDER BY t",
            )
            .await;
        answers += 1;
        let mut ids: Vec<String> = rows
            .iter()
            .map(|r| r["t"].as_str().unwrap().to_owned())
            .collect();
        ids.sort();
        ids == kept
    })
    .await;
    assert!(answers >= 1);
    // Only the kept hours' files remain listed, and the dropped ones leave the disk once
    // the grace is over.
    assert_eq!(crate::common::manifest_rows(&server.data_dir, "spans"), 2);
    wait_for("the dropped files to be deleted", async || {
        parquet_files(&server.data_dir, "spans").len() == 2
    })
    .await;
    let files = parquet_files(&server.data_dir, "spans");
    assert_eq!(files.len(), 2, "{files:?}");
    let metrics = crate::common::get(&server.http_url("/metrics"))
        .await
        .text();
    let dropped: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("weft_retention_dropped_files_total{table=\"spans\"}"))
        .collect();
    assert_eq!(dropped.len(), 1, "{metrics}");
    assert_eq!(dropped[0].rsplit(' ').next(), Some("3"), "{metrics}");
}

/// The bucket unreachable for a while under load (every connection to the S3 server reset,
/// new ones refused, by a proxy in between): flushes fail and are retried, exports go on
/// being acknowledged from the WAL, and once the path is back every acknowledged span
/// reaches the bucket; after a SIGKILL and restart each is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_bucket_delays_flushes_and_loses_nothing() {
    let s3 = S3Server::start().await;
    let proxy = crate::cluster_harness::FaultProxy::start().await;
    proxy.set_target(
        s3.endpoint
            .trim_start_matches("http://")
            .parse()
            .expect("s3 address"),
    );
    let mut args = s3_args("outage");
    for set in [
        format!("storage.endpoint=http://{}", proxy.addr),
        "storage.request_timeout_secs=2".to_owned(),
        "storage.connect_timeout_secs=1".to_owned(),
        "storage.retry_timeout_secs=5".to_owned(),
    ] {
        args.push("--set".to_owned());
        args.push(set);
    }
    let mut first = start(&s3, None, &args);
    let data_dir = first.data_dir.clone();
    let acked = Arc::new(Acked::default());
    let config = LoadConfig {
        max_retries: 5,
        ..grpc_load(&first, 2_000, Duration::from_secs(12))
    };
    let load = tokio::spawn(weft_load_test::run(config, Some(acked.callback())));
    wait_for("a first flush to the bucket", async || {
        s3.manifest_rows("outage", "spans").await > 0
    })
    .await;
    proxy.cut();
    let during = acked.requests();
    wait_for(
        "acknowledgements while the bucket is unreachable",
        async || acked.requests() >= during + 30,
    )
    .await;
    let stuck = s3.manifest_rows("outage", "spans").await;
    proxy.restore();
    let report = load.await.expect("load task").expect("load run ends");
    let acked_spans = acked.spans();
    assert_eq!(report.spans_accepted, acked_spans.len() as u64);
    wait_for("every acknowledged span in the bucket", async || {
        s3.manifest_rows("outage", "spans").await >= acked_spans.len() as u64
    })
    .await;
    assert!(
        s3.manifest_rows("outage", "spans").await > stuck,
        "flushes resumed after the outage"
    );
    first.kill();
    let second = start(&s3, Some(&data_dir), &args);
    let stored = stored_spans(&second).await;
    assert_acked_stored(&acked_spans, &stored);
    drop(second);
    drop(first);
}

/// A data directory written by the bulk loader opens in `weft up` with every span, and
/// spans sent afterwards survive a SIGKILL: new WAL records never reuse the sequence
/// numbers the loader's manifest counts as flushed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_loaded_directory_serves_its_spans_and_keeps_new_ones() {
    use weft_load_test::bulk::{BulkConfig, load, open_store};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().to_path_buf();
    let report = tokio::task::spawn_blocking(move || {
        let store = open_store(&path, None, "").unwrap();
        load(
            &store,
            &BulkConfig {
                spans: 30_000,
                batch_spans: 1_000,
                flush_spans: 10_000,
                hours: 6,
                ..BulkConfig::default()
            },
        )
        .unwrap()
    })
    .await
    .unwrap();
    let mut server = TestServer::start_in(dir.path(), &[]);
    let count = "SELECT count(*) AS n FROM spans";
    assert_eq!(server.sql_count(count).await, report.spans);
    let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
        span_aged(9, Duration::from_secs(60)),
    ]}]}]});
    let reply = server
        .otlp_post(
            "/v1/traces",
            crate::common::JSON,
            serde_json::to_vec(&body).unwrap(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    server.kill();
    let server = TestServer::start_in(dir.path(), &[]);
    assert_eq!(server.sql_count(count).await, report.spans + 1);
}

/// A small tmpfs this test mounts (root only), unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(megabytes: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={megabytes}m"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("run mount");
        assert!(
            status.success(),
            "mounting a tmpfs needs root (the test machines run the suite as root)"
        );
        Self { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// The data directory's disk above its high-water mark: exports get 503 with Retry-After
/// (nothing is acknowledged that might not be stored), the server says why on /metrics,
/// and once space returns it takes data again; every acknowledged span is stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_refuses_with_503_and_recovers() {
    let tmpfs = Tmpfs::mount(64);
    let data_dir = tmpfs.path().join("data");
    let mut server = TestServer::start_in(
        &data_dir,
        &[
            "--set",
            "collector.disk.high_water_percent=50",
            "--set",
            "collector.disk.low_water_percent=40",
            "--set",
            "collector.disk.check_interval_ms=50",
            "--set",
            "collector.wal.segment_bytes=4194304",
        ],
    );
    let mut acknowledged = 0u8;
    let send = async |server: &TestServer, trace: u8| {
        let body = serde_json::json!({"resourceSpans": [{"scopeSpans": [{"spans": [
            span_aged(trace, Duration::from_secs(60)),
        ]}]}]});
        server
            .otlp_post(
                "/v1/traces",
                crate::common::JSON,
                serde_json::to_vec(&body).unwrap(),
            )
            .await
    };
    let reply = send(&server, 1).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    acknowledged += 1;

    // Fill the filesystem to ~70%.
    let filler = tmpfs.path().join("filler");
    std::fs::write(&filler, vec![0xA5u8; 45 << 20]).unwrap();
    let mut refused = None;
    let mut trace = 2u8;
    wait_for("a 503 at the high-water mark", async || {
        let reply = send(&server, trace).await;
        if reply.status == 200 {
            acknowledged += 1;
            trace += 1;
            false
        } else {
            refused = Some(reply);
            true
        }
    })
    .await;
    let refused = refused.unwrap();
    assert_eq!(refused.status, 503, "{}", refused.text());
    assert!(
        refused.header("retry-after").is_some(),
        "503 carries Retry-After"
    );
    assert!(
        refused.text().contains("high-water mark"),
        "the answer says why: {}",
        refused.text()
    );
    let metrics = crate::common::get(&server.http_url("/metrics"))
        .await
        .text();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("weft_disk_used_percent ")),
        "{metrics}"
    );

    // Space returns: data is taken again.
    std::fs::remove_file(&filler).unwrap();
    wait_for(
        "exports accepted again below the low-water mark",
        async || {
            let reply = send(&server, trace).await;
            if reply.status == 200 {
                acknowledged += 1;
                trace += 1;
                true
            } else {
                false
            }
        },
    )
    .await;
    server.kill();
    let server = TestServer::start_in(&data_dir, &[]);
    assert_eq!(
        server
            .sql_count("SELECT count(*) AS n FROM spans WHERE span_name LIKE 'aged-%'")
            .await,
        u64::from(acknowledged),
        "every acknowledged span is stored, once"
    );
    drop(server);
}

/// An HTTP proxy in front of the S3 server that misbehaves on a fixed schedule: every 5th
/// request gets 503 SlowDown without reaching the server, every 7th waits 300 ms first,
/// and every 11th reaches the server but its answer is replaced by a 500 (the client
/// cannot know the request took effect: a commit's create then meets its own object).
struct ErraticS3 {
    addr: std::net::SocketAddr,
    injected: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl ErraticS3 {
    async fn start(upstream: String) -> Self {
        use axum::body::Body;
        use axum::http::{Response, StatusCode};
        let injected = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let seen = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // Bodies pass through untouched: no decompression on the way.
        let client = reqwest::Client::builder().no_gzip().build().unwrap();
        let (count, faults) = (Arc::clone(&seen), Arc::clone(&injected));
        let handler = move |request: axum::extract::Request| {
            let (client, upstream) = (client.clone(), upstream.clone());
            let (count, faults) = (Arc::clone(&count), Arc::clone(&faults));
            async move {
                let n = count.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
                let fault = |status: StatusCode, code: &str| {
                    faults.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    Response::builder()
                        .status(status)
                        .body(Body::from(format!(
                            "<?xml version=\"1.0\"?><Error><Code>{code}</Code></Error>"
                        )))
                        .unwrap()
                };
                if n % 5 == 0 {
                    return fault(StatusCode::SERVICE_UNAVAILABLE, "SlowDown");
                }
                if n % 7 == 0 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let (parts, body) = request.into_parts();
                let body = axum::body::to_bytes(body, usize::MAX).await.unwrap();
                let path = parts
                    .uri
                    .path_and_query()
                    .map_or("/", |p| p.as_str())
                    .to_owned();
                let mut forward = client.request(parts.method.clone(), format!("{upstream}{path}"));
                for (name, value) in &parts.headers {
                    if name != axum::http::header::HOST {
                        forward = forward.header(name, value);
                    }
                }
                let Ok(answer) = forward.body(body).send().await else {
                    return fault(StatusCode::BAD_GATEWAY, "ProxyUpstream");
                };
                if n % 11 == 0 {
                    return fault(StatusCode::INTERNAL_SERVER_ERROR, "InternalError");
                }
                let mut response = Response::builder().status(answer.status().as_u16());
                // Framing headers are the proxy's own business (the body is whole here).
                let framing = [
                    "transfer-encoding",
                    "connection",
                    "keep-alive",
                    "content-length",
                ];
                for (name, value) in answer.headers() {
                    if !framing.contains(&name.as_str()) {
                        response = response.header(name.as_str(), value.as_bytes());
                    }
                }
                let bytes = answer.bytes().await.unwrap_or_default();
                response.body(Body::from(bytes)).unwrap()
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new().fallback(handler);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            addr,
            injected,
            task,
        }
    }
}

impl Drop for ErraticS3 {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Through an S3 endpoint that answers 503, 500 and late on a schedule, under load: the
/// client sees only acknowledgements (or retryable back-pressure), every acknowledged span
/// reaches the bucket, and after a SIGKILL each is stored exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erratic_bucket_loses_and_doubles_nothing() {
    let s3 = S3Server::start().await;
    let erratic = ErraticS3::start(s3.endpoint.clone()).await;
    let mut args = s3_args("erratic");
    for set in [
        format!("storage.endpoint=http://{}", erratic.addr),
        "storage.request_timeout_secs=5".to_owned(),
        "storage.retry_timeout_secs=20".to_owned(),
    ] {
        args.push("--set".to_owned());
        args.push(set);
    }
    let mut first = start(&s3, None, &args);
    let data_dir = first.data_dir.clone();
    let acked = Arc::new(Acked::default());
    let config = grpc_load(&first, 2_000, Duration::from_secs(8));
    let load = tokio::spawn(weft_load_test::run(config, Some(acked.callback())));
    let report = load.await.expect("load task").expect("load run ends");
    let acked_spans = acked.spans();
    assert_eq!(report.spans_accepted, acked_spans.len() as u64);
    assert!(!acked_spans.is_empty());
    wait_for("every acknowledged span in the bucket", async || {
        s3.manifest_rows("erratic", "spans").await >= acked_spans.len() as u64
    })
    .await;
    let injected = erratic.injected.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 0, "the proxy injected faults");
    first.kill();
    let second = start(&s3, Some(&data_dir), &args);
    let stored = stored_spans(&second).await;
    assert_acked_stored(&acked_spans, &stored);
    eprintln!(
        "erratic bucket: {} spans acknowledged and stored once through {injected} injected faults",
        acked_spans.len()
    );
    drop(second);
    drop(first);
}
