//! A real multi-process Weft cluster on loopback for tests: `weft collector`, `weft ingest`
//! and `weft query` processes sharing one storage directory, with gossip (or static)
//! membership, plus a fault-injecting TCP proxy that can cut a connection.
//!
//! ```text
//!  test ──OTLP──> ingest i1, i2 ──gRPC (maybe via FaultProxy)──> collectors c1..cN
//!                                                                   │ <dir>/storage/nodes/cN
//!  test ──SQL/HTTP──> query q1 ── reads storage + asks collectors ──┘
//! ```
//!
//! Processes print `weft: <listener> listening on <addr>` and `weft: ready`; the harness
//! reads those lines instead of guessing ports. Every wait is bounded.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};

use crate::common::{Acked, DEADLINE, MAX_POLLS, POLL_EVERY, SpanKey, http_client};

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// One `weft <role>` process.
pub(crate) struct Proc {
    child: Option<Child>,
    pub name: String,
    /// Listener name (`otlp-grpc`, `cluster-http`, ...) -> address as printed.
    pub addrs: HashMap<String, String>,
    pub gossip: String,
}

impl Proc {
    fn spawn(role: &str, name: &str, args: &[String]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_weft"))
            .arg(role)
            .args(args)
            // E2E_NODE_LOG=info (or any tracing filter) shows the nodes' logs when debugging.
            .env(
                "WEFT_LOG",
                std::env::var("E2E_NODE_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env_remove("WEFT_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn weft");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut addrs = HashMap::new();
        loop {
            let line = rx
                .recv_timeout(START_TIMEOUT)
                .unwrap_or_else(|_| panic!("{name} did not print `weft: ready` in time"));
            if line == "weft: ready" {
                break;
            }
            if let Some((listener, addr)) = line
                .strip_prefix("weft: ")
                .and_then(|rest| rest.split_once(" listening on "))
            {
                addrs.insert(listener.to_owned(), addr.to_owned());
            }
        }
        Proc {
            child: Some(child),
            name: name.to_owned(),
            addrs,
            gossip: String::new(),
        }
    }

    pub(crate) fn url(&self, listener: &str) -> String {
        let addr = self
            .addrs
            .get(listener)
            .unwrap_or_else(|| panic!("{} has no {listener} listener", self.name));
        if addr.starts_with("http://") {
            addr.clone()
        } else {
            format!("http://{addr}")
        }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} {} failed", self.name);
    }

    /// SIGKILL: nothing of the shutdown path runs.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: leave the cluster, drain, flush.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        self.child
            .take()
            .expect("running")
            .wait()
            .expect("wait for weft")
    }

    /// SIGSTOP: the process is frozen (no gossip, no answers) until `resume`.
    pub(crate) fn pause(&self) {
        self.signal("-STOP");
    }

    pub(crate) fn resume(&self) {
        self.signal("-CONT");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(child) = &self.child {
            // A stopped process cannot die of SIGKILL until it is continued.
            let _ = Command::new("kill")
                .args(["-CONT", &child.id().to_string()])
                .status();
        }
        self.kill();
    }
}

/// How the nodes find the collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Discovery {
    Gossip,
    /// Static list of collector HTTP addresses (collectors are started first).
    Static,
}

/// A cluster of real processes sharing `<dir>/storage`.
pub(crate) struct Cluster {
    pub dir: tempfile::TempDir,
    config: PathBuf,
    discovery: Discovery,
    pub collectors: Vec<Proc>,
    pub ingests: Vec<Proc>,
    pub query: Option<Proc>,
    seeds: Vec<String>,
}

/// A free UDP port on loopback for a gossip listener.
fn free_udp_addr() -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    socket.local_addr().expect("udp addr").to_string()
}

impl Cluster {
    /// Writes the shared config; `extra` is appended TOML (sections the test tunes).
    pub(crate) fn new(discovery: Discovery, dead_grace_secs: u64, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let storage = dir.path().join("storage");
        let config = dir.path().join("weft.toml");
        let mode = match discovery {
            Discovery::Gossip => "gossip",
            Discovery::Static => "static",
        };
        let text = format!(
            r#"
[collector.wal]
# Survives SIGKILL (the fault these tests inject); fsync would only slow the machine.
sync = "os"
[collector.buffer]
flush_age_secs = 3
[collector.receiver]
# Some tests send fixed historical times (e.g. sampling's T0 in 2023).
accept_past_secs = {HISTORICAL_WINDOW_SECS}
[query]
max_result_rows = 10000000
# Historical times must not be dropped by retention while a test runs.
[storage.retention]
spans_hours = 0
metrics_hours = 0
[cluster]
storage = {storage:?}
replication = 2
fanout_timeout_ms = 2000
[cluster.membership]
mode = "{mode}"
probe_interval_ms = 100
probe_timeout_ms = 300
down_after_failures = 3
gossip_interval_ms = 100
gossip_dead_grace_secs = {dead_grace_secs}
[ingest]
request_timeout_ms = 500
delivery_budget_ms = 1500
breaker_failures = 3
breaker_open_ms = 1000
{extra}
"#,
            storage = storage.display().to_string(),
            HISTORICAL_WINDOW_SECS = crate::server::HISTORICAL_WINDOW_SECS,
        );
        std::fs::write(&config, text).expect("write config");
        Cluster {
            dir,
            config,
            discovery,
            collectors: Vec::new(),
            ingests: Vec::new(),
            query: None,
            seeds: Vec::new(),
        }
    }

    pub(crate) fn storage(&self) -> PathBuf {
        self.dir.path().join("storage")
    }

    fn common_args(&mut self, node_id: &str) -> (Vec<String>, String) {
        let mut args = vec![
            "--config".to_owned(),
            self.config.display().to_string(),
            "--node-id".to_owned(),
            node_id.to_owned(),
        ];
        let mut gossip = String::new();
        match self.discovery {
            Discovery::Gossip => {
                gossip = free_udp_addr();
                args.push("--gossip-listen".to_owned());
                args.push(gossip.clone());
                let seeds: Vec<String> = if self.seeds.is_empty() {
                    vec![gossip.clone()]
                } else {
                    self.seeds.clone()
                };
                args.push("--gossip-seeds".to_owned());
                args.push(seeds.join(","));
            }
            Discovery::Static => {
                let list: Vec<String> = self
                    .collectors
                    .iter()
                    .map(|c| {
                        c.addrs["cluster-http"]
                            .trim_start_matches("http://")
                            .to_owned()
                    })
                    .collect();
                if !list.is_empty() {
                    args.push("--collectors".to_owned());
                    args.push(list.join(","));
                }
            }
        }
        (args, gossip)
    }

    /// Starts collector `node_id` (a restart when its directory exists). `extra`: flags.
    pub(crate) fn start_collector(&mut self, node_id: &str, extra: &[String]) -> usize {
        let (mut args, gossip) = self.common_args(node_id);
        args.extend([
            "--cluster-grpc".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--cluster-http".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]);
        args.extend(extra.iter().cloned());
        let mut proc = Proc::spawn("collector", node_id, &args);
        proc.gossip = gossip.clone();
        if !gossip.is_empty() {
            self.seeds.push(gossip);
        }
        self.collectors.push(proc);
        self.collectors.len() - 1
    }

    pub(crate) fn start_ingest(&mut self, node_id: &str) -> usize {
        let (mut args, gossip) = self.common_args(node_id);
        let spool = self.dir.path().join(format!("spool-{node_id}"));
        args.extend([
            "--otlp-grpc".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--otlp-http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--spool-dir".to_owned(),
            spool.display().to_string(),
        ]);
        let mut proc = Proc::spawn("ingest", node_id, &args);
        proc.gossip = gossip;
        self.ingests.push(proc);
        self.ingests.len() - 1
    }

    pub(crate) fn start_query(&mut self) {
        let (mut args, gossip) = self.common_args("q1");
        args.extend([
            "--query-http".to_owned(),
            "127.0.0.1:0".to_owned(),
            "--postgres".to_owned(),
            "127.0.0.1:0".to_owned(),
        ]);
        let mut proc = Proc::spawn("query", "q1", &args);
        proc.gossip = gossip;
        self.query = Some(proc);
    }

    /// The standard shape: `collectors` collectors c1.., two ingest nodes, one query node,
    /// and every ingest and query node seeing every collector up.
    pub(crate) async fn start(
        discovery: Discovery,
        collectors: usize,
        dead_grace_secs: u64,
        extra: &str,
    ) -> Self {
        let mut cluster = Cluster::new(discovery, dead_grace_secs, extra);
        for i in 1..=collectors {
            cluster.start_collector(&format!("c{i}"), &[]);
        }
        cluster.start_ingest("i1");
        cluster.start_ingest("i2");
        cluster.start_query();
        let want: Vec<String> = (1..=collectors).map(|i| format!("c{i}")).collect();
        cluster
            .wait_views("every collector up", |v| {
                up_members(v) == want && members(v) == want
            })
            .await;
        cluster
    }

    pub(crate) fn collector(&mut self, node_id: &str) -> &mut Proc {
        self.collectors
            .iter_mut()
            .find(|c| c.name == node_id)
            .unwrap_or_else(|| panic!("no collector {node_id}"))
    }

    pub(crate) fn query_url(&self, path: &str) -> String {
        format!(
            "{}{path}",
            self.query.as_ref().expect("query node").url("query-http")
        )
    }

    /// `/api/v1/cluster` of every ingest and query node.
    pub(crate) async fn views(&self) -> Vec<Value> {
        let mut urls: Vec<String> = self
            .ingests
            .iter()
            .map(|i| format!("{}/api/v1/cluster", i.url("otlp-http")))
            .collect();
        if let Some(q) = &self.query {
            urls.push(format!("{}/api/v1/cluster", q.url("query-http")));
        }
        let mut out = Vec::new();
        for url in urls {
            let response = http_client().get(&url).send().await.expect("cluster view");
            assert!(
                response.status().is_success(),
                "{url}: {}",
                response.status()
            );
            out.push(response.json().await.expect("cluster json"));
        }
        out
    }

    /// Polls every ingest and query node's view (bounded) until `done` holds for all.
    pub(crate) async fn wait_views(&self, what: &str, done: impl Fn(&Value) -> bool) -> Duration {
        let start = Instant::now();
        for _ in 0..MAX_POLLS {
            let views = self.views().await;
            if views.iter().all(&done) {
                return start.elapsed();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "timed out waiting for {what}; views: {views:#?}"
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!("gave up waiting for {what}");
    }

    /// Hinted hand-off data held by all ingest nodes together.
    pub(crate) async fn spooled_hints(&self) -> u64 {
        let mut total = 0;
        for view in self.views().await {
            total += view["forwarding"]["totals"]["spool_hints"]
                .as_u64()
                .unwrap_or(0);
        }
        total
    }

    /// Runs SQL on the query node; returns rows and the `x-weft-warnings` header.
    pub(crate) async fn sql(&self, sql: &str) -> (Vec<Value>, Option<String>) {
        let response = http_client()
            .post(self.query_url("/api/v1/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .expect("sql request");
        let status = response.status();
        let warnings = response
            .headers()
            .get("x-weft-warnings")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.expect("sql body");
        assert!(status.is_success(), "sql {sql:?}: {status} {body}");
        (serde_json::from_str(&body).expect("sql json"), warnings)
    }

    /// Every stored (trace id, span id) through the query node; fails on any duplicate.
    pub(crate) async fn stored_spans(&self) -> HashSet<SpanKey> {
        let (duplicates, _) = self
            .sql(
                "SELECT hex_id(trace_id) AS t, hex_id(span_id) AS s, count(*) AS n FROM spans \
                 GROUP BY 1, 2 HAVING count(*) > 1",
            )
            .await;
        assert!(
            duplicates.is_empty(),
            "{} spans are returned more than once, e.g. {:?}",
            duplicates.len(),
            &duplicates[..duplicates.len().min(5)]
        );
        let (rows, _) = self
            .sql("SELECT hex_id(trace_id) AS t, hex_id(span_id) AS s FROM spans")
            .await;
        let (count, _) = self.sql("SELECT count(*) AS n FROM spans").await;
        let set: HashSet<SpanKey> = rows
            .iter()
            .map(|r| {
                (
                    r["t"].as_str().expect("t").to_owned(),
                    r["s"].as_str().expect("s").to_owned(),
                )
            })
            .collect();
        assert_eq!(
            Some(set.len() as u64),
            count[0]["n"].as_u64(),
            "count(*) equals the distinct spans returned"
        );
        set
    }

    /// Waits (bounded) until every acknowledged span is visible, then checks exactly-once;
    /// returns how long visibility took.
    pub(crate) async fn assert_all_acked_stored_once(&self, acked: &Acked, sent: u64) -> Duration {
        let acked = acked.spans();
        let start = Instant::now();
        let mut stored;
        loop {
            stored = self.stored_spans().await;
            if acked.is_subset(&stored) {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "{} of {} acknowledged spans are missing, e.g. {:?}",
                acked.difference(&stored).count(),
                acked.len(),
                acked.difference(&stored).take(5).collect::<Vec<_>>()
            );
            tokio::time::sleep(POLL_EVERY).await;
        }
        assert!(
            stored.len() as u64 <= sent,
            "{} spans stored but only {sent} were sent",
            stored.len()
        );
        start.elapsed()
    }
}

pub(crate) fn members(view: &Value) -> Vec<String> {
    let mut out: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["node_id"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

pub(crate) fn up_members(view: &Value) -> Vec<String> {
    let mut out: Vec<String> = view["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["state"] == "up")
        .filter_map(|m| m["node_id"].as_str().map(str::to_owned))
        .collect();
    out.sort();
    out
}

/// A TCP proxy in the test process that can cut every connection through it.
///
/// `cut()` resets the open connections and makes new ones close at once (the far side sees
/// a connection failure, the way a broken network path or a firewall reset looks);
/// `restore()` lets traffic through again.
pub(crate) struct FaultProxy {
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    /// `true` while cut; connections watch it and die when it turns `true`.
    cut: tokio::sync::watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub(crate) async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let target: Arc<Mutex<Option<SocketAddr>>> = Arc::new(Mutex::new(None));
        let (cut, _) = tokio::sync::watch::channel(false);
        let task = {
            let (target, cut) = (std::sync::Arc::clone(&target), cut.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((inbound, _)) = listener.accept().await else {
                        return;
                    };
                    let to = *target.lock().expect("target");
                    let (Some(to), false) = (to, *cut.borrow()) else {
                        drop(inbound);
                        continue;
                    };
                    let mut cut_rx = cut.subscribe();
                    tokio::spawn(async move {
                        let Ok(outbound) = TcpStream::connect(to).await else {
                            return;
                        };
                        let (mut a, mut b) = (inbound, outbound);
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut a, &mut b) => {}
                            _ = cut_rx.wait_for(|cut| *cut) => {
                                // RST rather than FIN: a cut path, not a polite close.
                                let _ = a.set_zero_linger();
                                let _ = b.set_zero_linger();
                            }
                        }
                    });
                }
            })
        };
        FaultProxy {
            addr,
            target,
            cut,
            task,
        }
    }

    pub(crate) fn set_target(&self, to: SocketAddr) {
        *self.target.lock().expect("target") = Some(to);
    }

    pub(crate) fn cut(&self) {
        self.cut.send_replace(true);
    }

    pub(crate) fn restore(&self) {
        self.cut.send_replace(false);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Parquet files under a collector's directory in the shared storage.
pub(crate) fn node_files(storage: &Path, node_id: &str) -> usize {
    fn walk(dir: &Path, n: &mut usize) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(&path, n);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                *n += 1;
            }
        }
    }
    let mut n = 0;
    walk(&storage.join("nodes").join(node_id), &mut n);
    n
}
