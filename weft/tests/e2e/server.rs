//! A real `weft up` process for tests: started on free loopback ports with its own data
//! directory, ready when it prints `weft: ready`, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// `collector.receiver.accept_past_secs` the harness starts servers with (100 years):
/// recorded fixtures and conformance data carry fixed historical times. Tests of the
/// window pass their own `--set`, which wins (later overrides win).
pub(crate) const HISTORICAL_WINDOW_SECS: u64 = 100 * 365 * 24 * 3600;

/// How long a server may take to start (WAL replay included) before the test fails.
const START_TIMEOUT: Duration = Duration::from_secs(60);

pub(crate) struct TestServer {
    child: Option<Child>,
    pub data_dir: PathBuf,
    pub otlp_grpc: String,
    pub otlp_http: String,
    pub query_http: String,
    /// `host:port` of the Postgres wire protocol listener.
    pub postgres: String,
    _tempdir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// Starts a server with a fresh data directory.
    pub(crate) fn start(extra: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::start_in(tempdir.path(), extra);
        server._tempdir = Some(tempdir);
        server
    }

    /// Starts a server with a fresh data directory under a wrapper command that execs it,
    /// e.g. `["prlimit", "--nofile=256:256", "--"]` (the pid stays the server's).
    pub(crate) fn start_wrapped(wrapper: &[&str], extra: &[&str]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::spawn(wrapper, tempdir.path(), extra, &[]);
        server._tempdir = Some(tempdir);
        server
    }

    /// Starts a server on an existing data directory (e.g. after a crash).
    pub(crate) fn start_in(data_dir: &Path, extra: &[&str]) -> Self {
        Self::spawn(&[], data_dir, extra, &[])
    }

    /// Starts a server on an existing data directory with extra environment variables.
    pub(crate) fn start_in_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        Self::spawn(&[], data_dir, extra, env)
    }

    /// Starts a server with a fresh data directory and extra environment variables.
    pub(crate) fn start_with_env(extra: &[&str], env: &[(&str, &str)]) -> Self {
        let tempdir = tempfile::tempdir().expect("tempdir");
        let mut server = Self::spawn(&[], tempdir.path(), extra, env);
        server._tempdir = Some(tempdir);
        server
    }

    fn spawn(wrapper: &[&str], data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = match wrapper.split_first() {
            Some((program, args)) => {
                let mut cmd = Command::new(program);
                cmd.args(args).arg(env!("CARGO_BIN_EXE_weft"));
                cmd
            }
            None => Command::new(env!("CARGO_BIN_EXE_weft")),
        };
        cmd.arg("up")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--otlp-grpc", "127.0.0.1:0"])
            .args(["--otlp-http", "127.0.0.1:0"])
            .args(["--query-http", "127.0.0.1:0"])
            .args(["--postgres", "127.0.0.1:0"])
            .arg("--set")
            .arg(format!(
                "collector.receiver.accept_past_secs={HISTORICAL_WINDOW_SECS}"
            ))
            // Fixtures are years old: no retention unless a test sets its own (later wins).
            .args(["--set", "storage.retention.spans_hours=0"])
            .args(["--set", "storage.retention.metrics_hours=0"])
            .args(extra)
            .env("WEFT_LOG", "warn")
            .env_remove("WEFT_CONFIG")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd.spawn().expect("spawn weft");
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
        let mut server = Self {
            child: Some(child),
            data_dir: data_dir.to_path_buf(),
            otlp_grpc: String::new(),
            otlp_http: String::new(),
            query_http: String::new(),
            postgres: String::new(),
            _tempdir: None,
        };
        loop {
            let line = rx
                .recv_timeout(START_TIMEOUT)
                .expect("weft did not print `weft: ready` in time (or exited)");
            if let Some(addr) = line.strip_prefix("weft: otlp-grpc listening on ") {
                server.otlp_grpc = format!("http://{addr}");
            } else if let Some(url) = line.strip_prefix("weft: otlp-http listening on ") {
                server.otlp_http = url.to_owned();
            } else if let Some(url) = line.strip_prefix("weft: query-http listening on ") {
                server.query_http = url.to_owned();
            } else if let Some(addr) = line.strip_prefix("weft: postgres listening on ") {
                server.postgres = addr.to_owned();
            } else if line == "weft: ready" {
                break;
            }
        }
        server
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// A `kB` line of `/proc/<pid>/status` (`VmRSS`, `VmHWM` = peak RSS), in bytes.
    pub(crate) fn proc_status_bytes(&self, key: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))
            .expect("read /proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .unwrap_or_else(|| panic!("no {key} in /proc/<pid>/status"))
    }

    /// Sends a signal by name (`-HUP`) with `kill(1)`.
    pub(crate) fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.pid().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} failed");
    }

    /// SIGKILL: no shutdown code runs, buffered data is only in the WAL.
    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait: the graceful path (drain, flush). `kill(1)` keeps the tests free
    /// of unsafe code.
    pub(crate) fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("server running");
        let status = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM failed");
        child.wait().expect("wait for weft")
    }

    pub(crate) fn query_url(&self, path: &str) -> String {
        format!("{}{path}", self.query_http)
    }

    pub(crate) fn http_url(&self, path: &str) -> String {
        format!("{}{path}", self.otlp_http)
    }

    /// Runs SQL through the HTTP endpoint and returns the rows as JSON objects.
    pub(crate) async fn sql(&self, sql: &str) -> Vec<serde_json::Value> {
        let response = reqwest::Client::new()
            .post(self.query_url("/api/v1/sql"))
            .json(&serde_json::json!({ "sql": sql }))
            .send()
            .await
            .expect("sql request");
        let status = response.status();
        let body = response.text().await.expect("sql body");
        assert!(status.is_success(), "sql {sql:?} failed: {status} {body}");
        serde_json::from_str(&body).expect("sql json")
    }

    /// Fetches a trace as OTLP/JSON; `None` on 404.
    pub(crate) async fn trace(&self, trace_id: &str) -> Option<serde_json::Value> {
        let response = reqwest::get(self.query_url(&format!("/api/v1/traces/{trace_id}")))
            .await
            .expect("trace request");
        match response.status().as_u16() {
            404 => None,
            200 => Some(response.json().await.expect("trace json")),
            other => panic!("trace {trace_id}: unexpected status {other}"),
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}
