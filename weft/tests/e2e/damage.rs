//! Damaged storage (issue 14, items 1–3) against a real `weft up`: a torn WAL segment, a
//! flipped byte in the middle of the WAL, an unreadable Parquet file. Acknowledged data is
//! never silently lost, the rest keeps being served, and the damage is visible (incidents
//! over HTTP, `/metrics`, `x-weft-warnings`).

use std::fs;
use std::path::{Path, PathBuf};

use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message as _;
use serde_json::Value;

use crate::common::{PROTOBUF, get, newest_manifest, post};
use crate::server::TestServer;

/// WAL frame header: `len u32 | crc u32 | seq u64 | kind u8`.
const FRAME_HEADER: usize = 17;

fn now_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_nanos() as u64
}

/// `count` spans named `name`, trace and span ids derived from `batch` and the index.
fn request(batch: u32, count: u32, name: &str) -> ExportTraceServiceRequest {
    let now = now_ns();
    let spans = (0..count)
        .map(|i| {
            let mut trace_id = [0u8; 16];
            trace_id[..4].copy_from_slice(&batch.to_be_bytes());
            trace_id[4..8].copy_from_slice(&i.to_be_bytes());
            trace_id[15] = 1;
            let mut span_id = [0u8; 8];
            span_id[..4].copy_from_slice(&batch.to_be_bytes());
            span_id[4..].copy_from_slice(&(i + 1).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: span_id.to_vec(),
                name: name.to_owned(),
                start_time_unix_nano: now,
                end_time_unix_nano: now + 1_000,
                ..Span::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("damage".into())),
                    }),
                    ..KeyValue::default()
                }],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            ..ResourceSpans::default()
        }],
    }
}

/// Sends a request over OTLP/HTTP and checks every span was acknowledged.
async fn send(server: &TestServer, request: &ExportTraceServiceRequest) {
    let reply = server
        .otlp_post("/v1/traces", PROTOBUF, request.encode_to_vec())
        .await;
    assert_eq!(reply.status, 200, "export failed: {}", reply.text());
    let answer = ExportTraceServiceResponse::decode(reply.body.as_slice()).expect("response");
    let rejected = answer.partial_success.map_or(0, |p| p.rejected_spans);
    assert_eq!(rejected, 0, "spans rejected");
}

async fn count_named(server: &TestServer, name: &str) -> u64 {
    server
        .sql_count(&format!(
            "SELECT count(*) AS n FROM spans WHERE span_name = '{name}'"
        ))
        .await
}

/// `.wal` segment files, oldest first.
fn segments(data_dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = fs::read_dir(data_dir.join("wal"))
        .expect("wal dir")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .collect();
    out.sort();
    out
}

/// `(offset, len, seq)` of every frame of a segment (walked by the length fields).
fn frames(segment: &Path) -> Vec<(usize, usize, u64)> {
    let data = fs::read(segment).expect("read segment");
    let mut out = Vec::new();
    let mut offset = 0;
    while offset + FRAME_HEADER <= data.len() && out.len() < 100_000 {
        let len = u32::from_le_bytes(data[offset..offset + 4].try_into().unwrap()) as usize;
        let seq = u64::from_le_bytes(data[offset + 8..offset + 16].try_into().unwrap());
        if offset + FRAME_HEADER + len > data.len() {
            break;
        }
        out.push((offset, FRAME_HEADER + len, seq));
        offset += FRAME_HEADER + len;
    }
    out
}

async fn incidents(server: &TestServer) -> Value {
    let reply = get(&server.query_url("/api/v1/status/incidents")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    reply.json()
}

async fn own_metrics(server: &TestServer) -> String {
    let reply = get(&server.http_url("/metrics")).await;
    assert_eq!(reply.status, 200);
    reply.text()
}

/// The value of an unlabelled series in a Prometheus text page (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Item 1: the first frame of a fresh segment torn by a crash; the restarted server must
/// not append after it, so what it acknowledges survives the next crash.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_spans_after_a_torn_segment_survive_the_next_crash() {
    let mut first = TestServer::start(&[]);
    let dir = first.data_dir.clone();
    send(&first, &request(1, 10, "before")).await;
    first.kill();
    // The newest segment holds that one record: cut it mid-frame, as a crash would.
    let newest = segments(&dir).pop().expect("a segment");
    assert_eq!(frames(&newest).len(), 1, "one record in the fresh segment");
    let len = fs::metadata(&newest).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&newest)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let mut second = TestServer::start_in(&dir, &[]);
    let torn_repairs = metric(
        &own_metrics(&second).await,
        "weft_wal_torn_tail_repairs_total",
    );
    for batch in 0..5 {
        send(&second, &request(100 + batch, 100, "after")).await;
    }
    second.kill();

    let third = TestServer::start_in(&dir, &[]);
    assert_eq!(
        count_named(&third, "after").await,
        500,
        "every span acknowledged after the torn write is back"
    );
    assert_eq!(
        third.sql_count("SELECT count(*) AS n FROM spans").await,
        500
    );
    assert_eq!(torn_repairs, 1.0, "the repair is counted");
    let found = incidents(&third).await;
    assert_eq!(
        found["unacknowledged"], 0,
        "a torn tail is no incident: {found}"
    );
    let quarantine: Vec<_> = fs::read_dir(dir.join("wal/quarantine"))
        .expect("torn bytes kept aside")
        .flatten()
        .collect();
    assert_eq!(quarantine.len(), 1);
    drop(third);
    drop(second);
    drop(first); // owns the data directory
}

/// Item 2: one flipped byte in record 10 of 60 costs that record only, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipped_byte_mid_wal_loses_one_record_loudly() {
    let mut first = TestServer::start(&[]);
    let dir = first.data_dir.clone();
    for batch in 0..60 {
        send(&first, &request(batch, 50, &format!("r{batch}"))).await;
    }
    first.kill();
    let segment = segments(&dir).pop().expect("a segment");
    let frames = frames(&segment);
    assert_eq!(frames.len(), 60, "one record per request");
    let (offset, len, seq) = frames[9];
    let mut data = fs::read(&segment).unwrap();
    data[offset + FRAME_HEADER + (len - FRAME_HEADER) / 2] ^= 0x01;
    fs::write(&segment, &data).unwrap();

    // `weft wal check` reports it without changing anything.
    let check = std::process::Command::new(env!("CARGO_BIN_EXE_weft"))
        .args(["wal", "check"])
        .arg(&dir)
        .output()
        .expect("run weft wal check");
    let printed = String::from_utf8_lossy(&check.stdout);
    assert!(
        !check.status.success(),
        "corruption fails the check: {printed}"
    );
    assert!(printed.contains("\"kind\":\"corrupt\""), "{printed}");
    assert!(printed.contains("59 records readable"), "{printed}");
    assert_eq!(fs::read(&segment).unwrap(), data, "check changes nothing");

    let second = TestServer::start_in(&dir, &[]);
    assert_eq!(
        second.sql_count("SELECT count(*) AS n FROM spans").await,
        59 * 50,
        "every record after the damaged one is back"
    );
    assert_eq!(count_named(&second, "r9").await, 0);
    assert_eq!(count_named(&second, "r10").await, 50);
    assert_eq!(count_named(&second, "r59").await, 50);

    let found = incidents(&second).await;
    assert_eq!(found["unacknowledged"], 1, "{found}");
    let incident = &found["incidents"][0];
    assert_eq!(incident["kind"], "wal_corruption");
    assert_eq!(incident["details"]["offset"], offset as u64);
    assert_eq!(incident["details"]["bytes"], len as u64);
    assert_eq!(incident["details"]["missing"]["first"], seq);
    assert_eq!(incident["details"]["missing"]["last"], seq);
    let kept = incident["details"]["quarantined"].as_str().expect("kept");
    assert_eq!(fs::read(kept).unwrap(), data[offset..offset + len]);

    let metrics = own_metrics(&second).await;
    assert_eq!(metric(&metrics, "weft_wal_corrupt_records_total"), 1.0);
    assert_eq!(metric(&metrics, "weft_wal_corrupt_bytes_total"), len as f64);

    // Every answer warns until an operator acknowledges the incident.
    let reply = second.sql_reply("SELECT count(*) AS n FROM spans").await;
    let warnings = reply.header("x-weft-warnings").expect("warning header");
    assert!(warnings.contains("data incident 1"), "{warnings}");
    let id = incident["id"].as_u64().unwrap();
    let ack = post(
        &second.query_url(&format!("/api/v1/status/incidents/{id}/ack")),
        &[],
        Vec::new(),
    )
    .await;
    assert_eq!(ack.status, 200, "{}", ack.text());
    let reply = second.sql_reply("SELECT count(*) AS n FROM spans").await;
    assert_eq!(reply.header("x-weft-warnings"), None);
    drop(second);

    // The incident (and its acknowledgement) survive a restart; the repaired log is clean.
    let third = TestServer::start_in(&dir, &[]);
    let found = incidents(&third).await;
    assert_eq!(found["incidents"].as_array().unwrap().len(), 1, "{found}");
    assert_eq!(found["unacknowledged"], 0);
    assert_eq!(
        third.sql_count("SELECT count(*) AS n FROM spans").await,
        59 * 50
    );
    drop(third);
    drop(first);
}

/// Overwrites everything between the `PAR1` magic and the footer: every page is garbage,
/// the footer still parses, the size is unchanged.
fn garble_pages(file: &Path) {
    let mut data = fs::read(file).unwrap();
    let n = data.len();
    let footer_len = u32::from_le_bytes(data[n - 8..n - 4].try_into().unwrap()) as usize;
    let footer_start = n - 8 - footer_len;
    for byte in &mut data[4..footer_start] {
        *byte = 0xAB;
    }
    fs::write(file, data).unwrap();
}

fn manifest_files(dir: &Path) -> Vec<String> {
    let manifest: Value = newest_manifest(dir).expect("a manifest");
    manifest["tables"]["spans"]["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_owned())
        .collect()
}

/// Item 3: an unreadable Parquet file is quarantined; queries answer from the rest with a
/// warning instead of a 500 — found by a query, or at start when the file was cut short.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_parquet_file_is_quarantined_and_the_rest_answers() {
    let mut first = TestServer::start(&[]);
    let dir = first.data_dir.clone();
    send(&first, &request(1, 100, "a")).await;
    assert!(first.stop().success());
    let mut second = TestServer::start_in(&dir, &[]);
    send(&second, &request(2, 100, "b")).await;
    assert!(second.stop().success());
    let files = manifest_files(&dir);
    assert_eq!(files.len(), 2, "one file per graceful stop");
    garble_pages(&dir.join(&files[1]));
    // The WAL no longer holds those records (as once `wal.retain_flushed_bytes` is used
    // up): the rows cannot be rebuilt (the next test covers rebuilding).
    fs::remove_dir_all(dir.join("wal")).unwrap();

    let third = TestServer::start_in(&dir, &[]);
    let reply = third
        .sql_reply("SELECT span_name, span_id FROM spans")
        .await;
    assert_eq!(
        reply.status,
        200,
        "answered from the other file: {}",
        reply.text()
    );
    assert_eq!(reply.json().as_array().unwrap().len(), 100);
    let warnings = reply.header("x-weft-warnings").expect("warned");
    assert!(warnings.contains("moved to"), "{warnings}");
    assert_eq!(count_named(&third, "a").await, 100);
    assert_eq!(manifest_files(&dir), [files[0].clone()]);
    assert!(!dir.join(&files[1]).exists());
    assert!(dir.join("quarantine").join(&files[1]).exists());
    let found = incidents(&third).await;
    assert_eq!(
        found["incidents"][0]["kind"], "parquet_quarantined",
        "{found}"
    );
    assert!(
        own_metrics(&third)
            .await
            .contains("weft_parquet_quarantined_files_total{table=\"spans\"} 1")
    );
    drop(third);

    // A file cut short is found at start, before any query.
    let kept = dir.join(&files[0]);
    let len = fs::metadata(&kept).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&kept)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let fourth = TestServer::start_in(&dir, &[]);
    assert!(manifest_files(&dir).is_empty());
    let reply = fourth.sql_reply("SELECT count(*) AS n FROM spans").await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(incidents(&fourth).await["unacknowledged"], 2);
    drop(fourth);
    drop(first);
}

/// Item 3, rebuild: while the WAL still holds a quarantined file's records (flushed segments
/// are kept up to `collector.wal.retain_flushed_bytes`), its rows are written again, so the
/// answer is complete; the rebuilt file survives restarts and nothing is stored twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_parquet_file_is_rebuilt_from_the_wal() {
    let mut first = TestServer::start(&[]);
    let dir = first.data_dir.clone();
    send(&first, &request(1, 100, "a")).await;
    assert!(first.stop().success());
    let mut second = TestServer::start_in(&dir, &[]);
    send(&second, &request(2, 150, "b")).await;
    assert!(second.stop().success());
    let files = manifest_files(&dir);
    assert_eq!(files.len(), 2, "one file per graceful stop");
    garble_pages(&dir.join(&files[1]));

    // Found by a query: the query is answered in full after the rebuild.
    let mut third = TestServer::start_in(&dir, &[]);
    let reply = third
        .sql_reply("SELECT span_name, span_id FROM spans")
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.json().as_array().unwrap().len(), 250);
    let warnings = reply.header("x-weft-warnings").expect("warned");
    assert!(warnings.contains("rebuilt from the WAL"), "{warnings}");
    assert_eq!(count_named(&third, "b").await, 150);
    let now = manifest_files(&dir);
    assert_eq!(now.len(), 2, "{now:?}");
    assert!(
        now.contains(&files[0]) && !now.contains(&files[1]),
        "{now:?}"
    );
    assert!(dir.join("quarantine").join(&files[1]).exists());
    let found = incidents(&third).await;
    let incident = &found["incidents"][0];
    assert_eq!(incident["kind"], "parquet_quarantined", "{found}");
    assert_eq!(incident["details"]["rebuilt"]["rows"], 150, "{found}");
    let metrics = own_metrics(&third).await;
    assert!(metrics.contains("weft_parquet_quarantined_files_total{table=\"spans\"} 1"));
    assert!(metrics.contains("weft_parquet_rebuilt_files_total{table=\"spans\"} 1"));
    assert!(third.stop().success());

    // Found at start (cut short): rebuilt before the server is ready; nothing doubled.
    let rebuilt = now.iter().find(|f| **f != files[0]).unwrap();
    let path = dir.join(rebuilt);
    let len = fs::metadata(&path).unwrap().len();
    fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len / 2)
        .unwrap();
    let fourth = TestServer::start_in(&dir, &[]);
    assert_eq!(
        fourth.sql_count("SELECT count(*) AS n FROM spans").await,
        250
    );
    assert_eq!(count_named(&fourth, "a").await, 100);
    assert_eq!(count_named(&fourth, "b").await, 150);
    let found = incidents(&fourth).await;
    assert_eq!(
        found["incidents"][1]["details"]["rebuilt"]["rows"], 150,
        "{found}"
    );
    drop(fourth);
    drop(first);
}
