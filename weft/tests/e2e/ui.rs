//! The web viewer in headless Chromium: a real `weft up` loaded with the demo dataset
//! (`weft_load_test::demo`: generated traffic, a 50,000-span trace, a trace with a known
//! critical path, metrics), then the Playwright tests in `ui/web/e2e/*.test.mjs` run against
//! it with the facts of what was sent. Screenshots land in `ui/web/e2e-artifacts/`.
//!
//! Needs Node.js (it also builds the viewer) and Chromium at /usr/bin/chromium (or
//! `$CHROMIUM`); `scripts/test.sh` installs Debian's chromium when it is missing.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use crate::server::TestServer;

/// Bounds the whole browser run; the tests themselves take about a minute.
const BROWSER_RUN_TIMEOUT: Duration = Duration::from_secs(900);

fn web_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../ui/web")
}

fn chromium() -> String {
    std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn viewer_pages_work_in_headless_chromium() {
    let browser = chromium();
    assert!(
        Path::new(&browser).exists(),
        "no Chromium at {browser}: run ./scripts/test.sh (it installs Debian's chromium) or set CHROMIUM"
    );
    let web = web_dir();
    let mut tests: Vec<PathBuf> = std::fs::read_dir(web.join("e2e"))
        .expect("ui/web/e2e")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.to_string_lossy().ends_with(".test.mjs"))
        .collect();
    tests.sort();
    assert!(!tests.is_empty(), "no viewer tests in ui/web/e2e");

    let server = TestServer::start(&[]);
    let facts = weft_load_test::demo::load(&server.http_url(""), 7)
        .await
        .expect("loading the demo dataset");
    let facts_file = server.data_dir.join("demo-facts.json");
    std::fs::write(&facts_file, serde_json::to_vec_pretty(&facts).unwrap()).unwrap();

    let artifacts = web.join("e2e-artifacts");
    let mut command = tokio::process::Command::new("node");
    command
        .arg("--test")
        .arg("--test-concurrency=1")
        .args(&tests)
        .current_dir(&web)
        .env("WEFT_URL", server.query_url(""))
        .env("WEFT_FACTS", &facts_file)
        .env("WEFT_E2E_ARTIFACTS", &artifacts)
        .env("CHROMIUM", &browser)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command
        .spawn()
        .expect("starting node (Node.js >= 20 is needed)");
    let output = tokio::time::timeout(BROWSER_RUN_TIMEOUT, child.wait_with_output())
        .await
        .expect("viewer tests did not finish in time")
        .expect("waiting for node");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "viewer tests failed ({}); screenshots in {}",
        output.status,
        artifacts.display()
    );
    // node --test prints a summary; make sure tests really ran.
    let passed = stdout
        .lines()
        .find_map(|l| l.strip_prefix("# pass "))
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    assert!(passed > 0, "no viewer test passed:\n{stdout}");
}
