//! Work per request (issue 14, item 8) against a real `weft up`: spans whose start times
//! lie outside `[collector.receiver] accept_past_secs` / `accept_future_secs` are refused
//! through partial success, so one request cannot make a flush write a file for each of
//! thousands of hours.

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;

use crate::common::{PROTOBUF, manifest_rows, parquet_files};
use crate::server::TestServer;

const HOUR_NS: u64 = 3_600_000_000_000;
const PAST_SECS: u64 = 7 * 24 * 3600;

/// The request: 20,000 spans, each in its own hour going back from now, plus ten
/// spans two to eleven hours in the future.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_over_twenty_thousand_hours_are_windowed_and_files_stay_bounded() {
    let mut server = TestServer::start(&[
        "--set",
        &format!("collector.receiver.accept_past_secs={PAST_SECS}"),
        "--set",
        "collector.receiver.accept_future_secs=3600",
    ]);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    // Half an hour off every boundary, so the server's later clock cannot move one.
    let mut starts: Vec<u64> = (0..20_000u64)
        .map(|i| now - i * HOUR_NS - HOUR_NS / 2)
        .collect();
    starts.extend((2..12u64).map(|i| now + i * HOUR_NS));
    let in_window = starts
        .iter()
        .filter(|t| **t >= now - PAST_SECS * 1_000_000_000 && **t <= now + HOUR_NS)
        .count() as u64;
    assert_eq!(in_window, 168);
    let spans = starts
        .iter()
        .enumerate()
        .map(|(i, start)| {
            let mut trace_id = [7u8; 16];
            trace_id[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut span_id = [9u8; 8];
            span_id[..4].copy_from_slice(&(i as u32).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: "hourly".into(),
                start_time_unix_nano: *start,
                end_time_unix_nano: start + 1_000,
                ..Span::default()
            }
        })
        .collect();
    let request = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    };
    let reply = server
        .otlp_post("/v1/traces", PROTOBUF, request.encode_to_vec())
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let partial = ExportTraceServiceResponse::decode(reply.body.as_slice())
        .unwrap()
        .partial_success
        .expect("partial success");
    assert_eq!(partial.rejected_spans as u64, 20_010 - in_window);
    assert!(
        partial
            .error_message
            .contains("604800s before to 3600s after")
            && partial.error_message.contains("accept_past_secs"),
        "the message names the window: {}",
        partial.error_message
    );
    assert_eq!(
        server.sql_count("SELECT count(*) AS n FROM spans").await,
        in_window
    );

    // The graceful stop flushes: one file per hour that holds an accepted span.
    let dir = server.data_dir.clone();
    assert!(server.stop().success());
    let files = parquet_files(&dir, "spans").len() as u64;
    assert!(
        files <= in_window + 2,
        "{files} files for {in_window} accepted spans"
    );
    assert_eq!(manifest_rows(&dir, "spans"), in_window);
    let again = TestServer::start_in(&dir, &[]);
    assert_eq!(
        again.sql_count("SELECT count(*) AS n FROM spans").await,
        in_window
    );
    drop(again);
    drop(server);
}
