//! SIGKILL under load loses nothing acknowledged and stores nothing twice.
//!
//! The load generator sends realistic traces over gRPC and records every request the server
//! acknowledged. Once enough acknowledgements have arrived (counted, not timed) the server
//! is killed; a new server on the same data directory must hold every acknowledged span
//! exactly once — with or without a Parquet flush before the kill (replay must skip what is
//! already in Parquet). A graceful stop and restart then shows the same data again.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{
    Acked, DEADLINE, MAX_POLLS, POLL_EVERY, SpanKey, assert_acked_stored, grpc_load, manifest_rows,
    parquet_files,
};
use crate::server::TestServer;

/// Polls `done` (bounded in count and time) until it holds.
async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if done() {
            return;
        }
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("gave up waiting for {what}");
}

fn server_args(flush_age_secs: Option<u64>) -> Vec<String> {
    let mut args = vec![
        "--set".to_owned(),
        "query.max_result_rows=10000000".to_owned(),
    ];
    if let Some(secs) = flush_age_secs {
        args.push("--set".to_owned());
        args.push(format!("collector.buffer.flush_age_secs={secs}"));
    }
    args
}

fn start_in(dir: &Path, args: &[String]) -> TestServer {
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    TestServer::start_in(dir, &args)
}

/// Every stored (trace id, span id); fails if any is stored twice.
pub(crate) async fn stored_spans(server: &TestServer) -> HashSet<SpanKey> {
    let duplicates = server
        .sql_rows(
            "SELECT hex_id(trace_id) AS t, hex_id(span_id) AS s, count(*) AS n FROM spans \
             GROUP BY 1, 2 HAVING count(*) > 1",
        )
        .await;
    assert!(
        duplicates.is_empty(),
        "{} spans are stored more than once, e.g. {:?}",
        duplicates.len(),
        &duplicates[..duplicates.len().min(5)]
    );
    let by_span_id = server
        .sql_rows(
            "SELECT hex_id(span_id) AS s, count(*) AS n FROM spans GROUP BY 1 HAVING count(*) > 1",
        )
        .await;
    assert!(
        by_span_id.is_empty(),
        "span ids stored twice: {by_span_id:?}"
    );
    let rows = server
        .sql_rows("SELECT hex_id(trace_id) AS t, hex_id(span_id) AS s FROM spans")
        .await;
    let total = server.sql_count("SELECT count(*) AS n FROM spans").await;
    let set: HashSet<SpanKey> = rows
        .iter()
        .map(|r| {
            (
                r["t"].as_str().expect("t").to_owned(),
                r["s"].as_str().expect("s").to_owned(),
            )
        })
        .collect();
    assert_eq!(set.len() as u64, total, "rows returned == count(*)");
    set
}

/// Kills the server after `kill_after` acknowledged requests (and, if `flush_first`, only
/// once a Parquet flush has been committed and more acknowledgements followed it), then
/// checks exactly-once on restart, and again after a graceful stop and restart.
async fn kill_under_load(flush_age_secs: Option<u64>) {
    const KILL_AFTER_REQUESTS: u64 = 60; // 100-span requests: ~2 s at 3000 spans/s
    let args = server_args(flush_age_secs);
    let mut first = {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        TestServer::start(&args)
    };
    let data_dir = first.data_dir.clone();

    let acked = Arc::new(Acked::default());
    let config = grpc_load(&first, 3_000, Duration::from_secs(8));
    let load = tokio::spawn(weft_load_test::run(config, Some(acked.callback())));

    wait_until("acknowledged requests before the kill", || {
        acked.requests() >= KILL_AFTER_REQUESTS
    })
    .await;
    let mut flushed_rows = 0;
    if flush_age_secs.is_some() {
        wait_until("a committed parquet flush", || {
            manifest_rows(&data_dir, "spans") > 0
        })
        .await;
        flushed_rows = manifest_rows(&data_dir, "spans");
        let more = acked.requests() + 10;
        wait_until("acknowledgements after the flush", || {
            acked.requests() >= more
        })
        .await;
    }
    first.kill();
    let report = load
        .await
        .expect("load task")
        .expect("load run ends cleanly when the server goes away");
    let acked_spans = acked.spans();
    eprintln!(
        "crash: {} requests / {} spans acknowledged, {} spans sent, {} flushed before the kill, \
         stopped early: {:?}",
        acked.requests(),
        acked_spans.len(),
        report.spans_sent,
        flushed_rows,
        report.stopped_early
    );
    assert_eq!(report.rejected, 0, "the generator's spans are all valid");
    assert_eq!(
        report.spans_accepted,
        acked_spans.len() as u64,
        "every acknowledged span recorded once"
    );
    assert!(acked.requests() >= KILL_AFTER_REQUESTS);
    if flush_age_secs.is_some() {
        assert!(!parquet_files(&data_dir, "spans").is_empty());
    }

    // Restart on the same data: everything acknowledged, nothing twice.
    let mut second = start_in(&data_dir, &args);
    let stored = stored_spans(&second).await;
    assert_acked_stored(&acked_spans, &stored);
    assert!(
        stored.len() as u64 <= report.spans_sent,
        "{} spans stored but only {} were ever sent",
        stored.len(),
        report.spans_sent
    );
    // Graceful stop flushes everything; the next start shows the same data, from Parquet.
    let status = second.stop();
    assert!(status.success(), "graceful stop exited with {status}");
    assert_eq!(
        manifest_rows(&data_dir, "spans"),
        stored.len() as u64,
        "after a graceful stop every span is in parquet, once"
    );
    let third = start_in(&data_dir, &args);
    let again = stored_spans(&third).await;
    assert_eq!(
        again.len(),
        stored.len(),
        "same span count after a graceful restart"
    );
    assert!(again == stored, "same spans after a graceful restart");
    drop(third);
    drop(first); // owns the temporary data directory
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_keeps_every_acknowledged_span_once() {
    kill_under_load(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_after_a_parquet_flush_replays_only_the_rest() {
    kill_under_load(Some(1)).await;
}
