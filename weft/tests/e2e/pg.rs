//! The Postgres wire protocol and the metrics API against a real `weft up`: the upstream
//! OTLP examples and generated data are ingested over OTLP/HTTP, then read back with the
//! real `psql` binary (rows compared exactly), with a hand-written extended-protocol
//! client (bound parameters, binary results) and over `GET /api/v1/metrics...` (values
//! computed by hand from what was sent). Writes, COPY and file access are refused with
//! SQLSTATE 42501 and the same session keeps working.
//!
//! `psql` must be installed (`scripts/test.sh` installs Debian's postgresql-client).

use std::path::PathBuf;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::common::{DEADLINE, JSON, MAX_POLLS, POLL_EVERY, Reply, fixtures_dir, get};
use crate::server::TestServer;

/// The `psql` binary, or a failure that says how to get it.
fn psql_binary() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("psql"))
        .find(|p| p.is_file())
        .expect(
            "psql is not installed: the postgres tests drive the real client \
             (apt-get install postgresql-client; scripts/test.sh does it)",
        )
}

/// What one psql run printed.
#[derive(Debug)]
struct PsqlRun {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs psql against the server: unaligned, tuples only, no psqlrc, never a password
/// prompt. `args` come after the connection options.
async fn psql(server: &TestServer, args: &[&str]) -> PsqlRun {
    let (host, port) = server.postgres.rsplit_once(':').expect("host:port");
    let output = tokio::time::timeout(
        DEADLINE,
        tokio::process::Command::new(psql_binary())
            .args(["-h", host, "-p", port, "-U", "weft", "-d", "weft"])
            .args(["-X", "-w", "-A", "-t", "-q"])
            .args(args)
            .env("PGCONNECT_TIMEOUT", "10")
            .env_remove("PGPASSWORD")
            .env_remove("PGSERVICE")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("psql finished within the deadline")
    .expect("run psql");
    PsqlRun {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Rows of one query (`psql -At -c`); fails on any error.
async fn rows(server: &TestServer, sql: &str) -> Vec<String> {
    let run = psql(server, &["-v", "ON_ERROR_STOP=1", "-c", sql]).await;
    assert_eq!(run.code, 0, "psql -c {sql:?} failed: {}", run.stderr);
    assert_eq!(run.stderr, "", "psql -c {sql:?} warned");
    run.stdout.lines().map(str::to_owned).collect()
}

async fn post_fixture(server: &TestServer, path: &str, file: &str) {
    let body = std::fs::read(fixtures_dir().join("otlp-proto-examples").join(file))
        .unwrap_or_else(|e| panic!("fixture {file}: {e}"));
    let reply = server.otlp_post(path, JSON, body).await;
    assert_eq!(reply.status, 200, "{file}: {}", reply.text());
}

async fn post_json(server: &TestServer, path: &str, body: &Value) {
    let reply = server
        .otlp_post(path, JSON, serde_json::to_vec(body).expect("json"))
        .await;
    assert_eq!(reply.status, 200, "{path}: {}", reply.text());
    assert!(
        !reply.text().contains("rejected"),
        "{path}: partial success {}",
        reply.text()
    );
}

/// Unix seconds where the generated data starts (2023-11-14T22:13:20Z).
const BASE: u64 = 1_700_000_000;

fn ns(seconds: u64) -> String {
    (seconds * 1_000_000_000).to_string()
}

fn attr(key: &str, value: &str) -> Value {
    json!({ "key": key, "value": { "stringValue": value } })
}

/// Two services: `web` GET /checkout (root) calls `db` query (error); `web` also has an
/// internal child, which is no edge.
fn generated_traces() -> Value {
    let span =
        |id: &str, parent: Option<&str>, name: &str, kind: u8, start: u64, ms: u64, error: bool| {
            let mut span = json!({
                "traceId": "0af7651916cd43dd8448eb211c80319c",
                "spanId": id,
                "name": name,
                "kind": kind,
                "startTimeUnixNano": ns(start),
                "endTimeUnixNano": (start * 1_000_000_000 + ms * 1_000_000).to_string(),
            });
            if let Some(parent) = parent {
                span["parentSpanId"] = json!(parent);
            }
            if error {
                span["status"] = json!({ "code": 2 });
            }
            span
        };
    let resource = |service: &str, spans: Vec<Value>| {
        json!({
            "resource": { "attributes": [attr("service.name", service)] },
            "scopeSpans": [{ "spans": spans }],
        })
    };
    json!({ "resourceSpans": [
        resource("web", vec![
            span("b7ad6b7169203331", None, "GET /checkout", 2, BASE, 300, false),
            span("b7ad6b7169203332", Some("b7ad6b7169203331"), "render", 1, BASE, 10, false),
        ]),
        resource("db", vec![
            span("b7ad6b7169203333", Some("b7ad6b7169203331"), "query", 2, BASE, 120, true),
        ]),
    ]})
}

/// A cumulative counter `requests` in two series (route /a and /b). Route /a drops from
/// 25 to 5 at BASE+130: a reset.
fn generated_metrics() -> Value {
    let point = |route: &str, t: u64, v: i64| {
        json!({
            "asInt": v.to_string(),
            "startTimeUnixNano": ns(BASE),
            "timeUnixNano": ns(BASE + t),
            "attributes": [attr("route", route)],
        })
    };
    json!({ "resourceMetrics": [{
        "resource": { "attributes": [attr("service.name", "web")] },
        "scopeMetrics": [{ "metrics": [{
            "name": "requests",
            "unit": "1",
            "description": "requests served",
            "sum": {
                "aggregationTemporality": 2,
                "isMonotonic": true,
                "dataPoints": [
                    point("/a", 10, 10), point("/a", 70, 25), point("/a", 130, 5),
                    point("/a", 190, 20), point("/b", 10, 100), point("/b", 70, 160),
                ],
            },
        }]}],
    }]})
}

async fn loaded_server() -> TestServer {
    let server = TestServer::start(&[]);
    post_fixture(&server, "/v1/traces", "trace.json").await;
    post_fixture(&server, "/v1/metrics", "metrics.json").await;
    post_json(&server, "/v1/traces", &generated_traces()).await;
    post_json(&server, "/v1/metrics", &generated_metrics()).await;
    server
}

#[tokio::test]
async fn psql_reads_tables_and_views() {
    let server = loaded_server().await;

    assert_eq!(
        rows(
            &server,
            "SELECT hex_id(trace_id), span_name, service_name, kind, duration_ns, attributes \
             FROM spans WHERE service_name = 'my.service'"
        )
        .await,
        vec![
            "5b8efff798038103d269b633813fc60c|I'm a server span|my.service|2|1000000000|\
             {\"my.span.attr\":\"some value\"}"
        ]
    );
    // Binary ids are bytea (hex output), timestamps timestamptz.
    assert_eq!(
        rows(
            &server,
            "SELECT trace_id, span_id, start_time FROM spans WHERE service_name = 'my.service'"
        )
        .await,
        vec![
            "\\x5b8efff798038103d269b633813fc60c|\\xeee19b7ec3c1b174|2018-12-13 14:51:00.000000+00"
        ]
    );
    assert_eq!(
        rows(
            &server,
            "SELECT metric_name, metric_type, unit, value, count, sum FROM metric_points \
             WHERE service_name = 'my.service' ORDER BY metric_name"
        )
        .await,
        vec![
            "my.counter|sum|1|5.0||",
            "my.exponential.histogram|exponential_histogram|1||3|10.0",
            "my.gauge|gauge|1|10.0||",
            "my.histogram|histogram|1||2|2.0",
        ]
    );
    assert_eq!(
        rows(
            &server,
            "SELECT hex_id(trace_id), root_service, root_operation, duration_ns, span_count, \
             error_count, services FROM traces ORDER BY start_time"
        )
        .await,
        vec![
            "5b8efff798038103d269b633813fc60c|my.service|I'm a server span|1000000000|1|0|\
             {my.service}",
            "0af7651916cd43dd8448eb211c80319c|web|GET /checkout|300000000|3|1|{db,web}",
        ]
    );
    assert_eq!(
        rows(
            &server,
            "SELECT parent_service, parent_operation, child_service, child_operation, \
             child_kind, duration_ns, is_error FROM span_edges"
        )
        .await,
        vec!["web|GET /checkout|db|query|2|120000000|t"]
    );
    assert_eq!(
        rows(
            &server,
            "SELECT service, operation, count, errors, max_ns FROM latency \
             WHERE service IN ('web', 'db') ORDER BY service, operation"
        )
        .await,
        vec![
            "db|query|1.0|1.0|120000000",
            "web|GET /checkout|1.0|0|300000000",
            "web|render|1.0|0|10000000",
        ]
    );
    // Several statements in one -c run in order; client-parameter SHOW and version().
    assert_eq!(
        rows(
            &server,
            "SELECT count(*) FROM spans; SHOW server_version; SELECT 1 + 1"
        )
        .await,
        vec!["4", "16.6", "2"]
    );
    let version = rows(&server, "SELECT version()").await;
    assert!(version[0].contains("DataFusion"), "{version:?}");
}

#[tokio::test]
async fn psql_refuses_writes_and_file_access_and_keeps_the_session() {
    let server = loaded_server().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let secret = dir.path().join("secret.csv");
    std::fs::write(&secret, "never,read\n").expect("write secret");
    let copy_to = dir.path().join("copy.csv");
    let script = dir.path().join("script.sql");
    let refused = [
        "CREATE TABLE t (a INT);".to_owned(),
        "INSERT INTO spans SELECT * FROM spans;".to_owned(),
        "DELETE FROM spans;".to_owned(),
        "DROP TABLE spans;".to_owned(),
        format!("COPY spans TO '{}';", copy_to.display()),
        format!("COPY spans FROM '{}';", secret.display()),
        format!(
            "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '{}';",
            secret.display()
        ),
        "SET datafusion.execution.batch_size = 1;".to_owned(),
    ];
    let mut text = String::from("\\set VERBOSITY verbose\nSELECT 'before';\n");
    for statement in &refused {
        text.push_str(statement);
        text.push_str("\nSELECT count(*) FROM spans;\n");
    }
    // A URL table (a file path as a table name) is no table here.
    text.push_str(&format!(
        "SELECT * FROM '{}';\nSELECT 'after';\n",
        secret.display()
    ));
    std::fs::write(&script, text).expect("write script");
    let script_arg = script.to_str().expect("utf-8 path");

    // Without ON_ERROR_STOP psql reports each error and goes on, on the same connection.
    let run = psql(&server, &["-f", script_arg]).await;
    let mut expected = vec!["before".to_owned()];
    expected.extend(std::iter::repeat_n("4".to_owned(), refused.len()));
    expected.push("after".to_owned());
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        expected,
        "{}",
        run.stderr
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let errors: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| l.contains("ERROR:"))
        .collect();
    assert_eq!(errors.len(), refused.len() + 1, "{}", run.stderr);
    for (statement, error) in refused.iter().zip(&errors) {
        assert!(
            error.contains("ERROR:  42501: weft's sql endpoint is read-only"),
            "{statement}: {error}"
        );
    }
    assert!(
        !errors[refused.len()].contains("never,read"),
        "{}",
        run.stderr
    );
    assert!(!copy_to.exists(), "COPY TO wrote a file");

    // With ON_ERROR_STOP the script ends at the first refusal (psql exit code 3).
    let run = psql(&server, &["-v", "ON_ERROR_STOP=1", "-f", script_arg]).await;
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), vec!["before"]);

    // -c repeated: one session, a refusal in the middle, the next command still runs.
    let run = psql(
        &server,
        &[
            "-c",
            "DROP TABLE metrics",
            "-c",
            "SELECT count(*) FROM metrics",
        ],
    )
    .await;
    assert_eq!(run.stdout.trim(), "10", "{}", run.stderr);
    assert!(run.stderr.contains("read-only"), "{}", run.stderr);
}

// ---- a minimal extended-protocol client -----------------------------------------------------

/// One backend message: type byte and body.
async fn read_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut head = [0u8; 5];
    tokio::time::timeout(DEADLINE, stream.read_exact(&mut head))
        .await
        .expect("backend message within the deadline")
        .expect("read message");
    let len = u32::from_be_bytes(head[1..5].try_into().expect("4 bytes")) as usize;
    let mut body = vec![0u8; len - 4];
    stream.read_exact(&mut body).await.expect("read body");
    (head[0], body)
}

/// Reads messages up to ReadyForQuery, returning them without it.
async fn until_ready(stream: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    loop {
        let message = read_message(stream).await;
        if message.0 == b'Z' {
            return out;
        }
        out.push(message);
    }
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![kind];
    out.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
    out.extend_from_slice(body);
    out
}

fn cstr(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(s.as_bytes());
    out.push(0);
}

/// The fields of a DataRow: `None` for NULL.
fn data_row(body: &[u8]) -> Vec<Option<Vec<u8>>> {
    let count = u16::from_be_bytes([body[0], body[1]]) as usize;
    let mut at = 2;
    (0..count)
        .map(|_| {
            let len = i32::from_be_bytes(body[at..at + 4].try_into().expect("4 bytes"));
            at += 4;
            (len >= 0).then(|| {
                let value = body[at..at + len as usize].to_vec();
                at += len as usize;
                value
            })
        })
        .collect()
}

/// The SQLSTATE field of an ErrorResponse.
fn sqlstate(body: &[u8]) -> String {
    body.split(|b| *b == 0)
        .find_map(|field| field.strip_prefix(b"C"))
        .map(|code| String::from_utf8_lossy(code).into_owned())
        .unwrap_or_default()
}

/// Opens a session (protocol 3.0, no password) and returns it with the startup replies.
async fn connect(server: &TestServer) -> (TcpStream, Vec<(u8, Vec<u8>)>) {
    let mut stream = TcpStream::connect(&server.postgres).await.expect("connect");
    let mut startup = Vec::new();
    startup.extend_from_slice(&196_608u32.to_be_bytes()); // protocol 3.0
    for s in ["user", "weft", "database", "weft", ""] {
        cstr(&mut startup, s);
    }
    let mut first = ((startup.len() + 4) as u32).to_be_bytes().to_vec();
    first.extend_from_slice(&startup);
    stream.write_all(&first).await.expect("startup");
    let replies = until_ready(&mut stream).await;
    (stream, replies)
}

#[tokio::test]
async fn extended_protocol_binds_parameters() {
    let server = loaded_server().await;
    let (mut stream, startup_reply) = connect(&server).await;
    assert_eq!(startup_reply[0].0, b'R', "authentication ok first");
    let read_only = startup_reply.iter().any(|(kind, body)| {
        *kind == b'S' && body.starts_with(b"default_transaction_read_only\0on\0")
    });
    assert!(read_only, "the server says it is read-only");

    // $1 untyped, sent as text; $2 declared int8, sent binary; results: text, binary.
    let sql = "SELECT span_name, duration_ns FROM spans \
               WHERE service_name = $1 AND duration_ns > $2 ORDER BY duration_ns";
    let mut parse = Vec::new();
    cstr(&mut parse, "");
    cstr(&mut parse, sql);
    parse.extend_from_slice(&2u16.to_be_bytes());
    parse.extend_from_slice(&0u32.to_be_bytes());
    parse.extend_from_slice(&20u32.to_be_bytes());
    let mut bind = Vec::new();
    cstr(&mut bind, "");
    cstr(&mut bind, "");
    for v in [2u16, 0, 1] {
        bind.extend_from_slice(&v.to_be_bytes());
    }
    bind.extend_from_slice(&2u16.to_be_bytes());
    bind.extend_from_slice(&3u32.to_be_bytes());
    bind.extend_from_slice(b"web");
    bind.extend_from_slice(&8u32.to_be_bytes());
    bind.extend_from_slice(&5_000_000i64.to_be_bytes());
    for v in [2u16, 0, 1] {
        bind.extend_from_slice(&v.to_be_bytes());
    }
    let mut requests = message(b'P', &parse);
    requests.extend(message(b'B', &bind));
    requests.extend(message(b'D', b"P\0"));
    requests.extend(message(b'E', &[0, 0, 0, 0, 0]));
    requests.extend(message(b'S', &[]));
    stream.write_all(&requests).await.expect("extended query");
    let replies = until_ready(&mut stream).await;
    let kinds: Vec<u8> = replies.iter().map(|m| m.0).collect();
    assert_eq!(kinds, b"12TDDC".to_vec(), "{replies:?}");
    let got: Vec<Vec<Option<Vec<u8>>>> = replies
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|m| data_row(&m.1))
        .collect();
    assert_eq!(
        got,
        vec![
            vec![
                Some(b"render".to_vec()),
                Some(10_000_000i64.to_be_bytes().to_vec())
            ],
            vec![
                Some(b"GET /checkout".to_vec()),
                Some(300_000_000i64.to_be_bytes().to_vec())
            ],
        ]
    );

    // A refused statement fails at Parse with 42501; after Sync the session goes on.
    let mut parse = Vec::new();
    cstr(&mut parse, "");
    cstr(&mut parse, "DROP TABLE spans");
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut requests = message(b'P', &parse);
    requests.extend(message(b'S', &[]));
    stream.write_all(&requests).await.expect("refused parse");
    let replies = until_ready(&mut stream).await;
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0, b'E');
    assert_eq!(sqlstate(&replies[0].1), "42501");

    let mut query = Vec::new();
    cstr(&mut query, "SELECT count(*) FROM spans");
    stream
        .write_all(&message(b'Q', &query))
        .await
        .expect("query");
    let replies = until_ready(&mut stream).await;
    let rows: Vec<_> = replies
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|m| data_row(&m.1))
        .collect();
    assert_eq!(rows, vec![vec![Some(b"4".to_vec())]]);
    stream
        .write_all(&message(b'X', &[]))
        .await
        .expect("terminate");
}

// ---- metrics over HTTP ----------------------------------------------------------------------

async fn metrics_get(server: &TestServer, path_and_query: &str) -> Reply {
    get(&server.query_url(path_and_query)).await
}

async fn metrics_json(server: &TestServer, path_and_query: &str) -> Value {
    let reply = metrics_get(server, path_and_query).await;
    assert_eq!(reply.status, 200, "{path_and_query}: {}", reply.text());
    reply.json()
}

/// `(time, value)` of every point of every series, by group.
fn points(body: &Value) -> Vec<(Value, Vec<(String, f64)>)> {
    body["series"]
        .as_array()
        .expect("series")
        .iter()
        .map(|s| {
            let points = s["points"]
                .as_array()
                .expect("points")
                .iter()
                .map(|p| {
                    (
                        p["time"].as_str().expect("time").to_owned(),
                        p["value"].as_f64().expect("value"),
                    )
                })
                .collect();
            (s["group"].clone(), points)
        })
        .collect()
}

fn assert_close(got: &[(Value, Vec<(String, f64)>)], want: &[(Value, Vec<(&str, f64)>)]) {
    assert_eq!(got.len(), want.len(), "{got:?}");
    for ((g_group, g_points), (w_group, w_points)) in got.iter().zip(want) {
        assert_eq!(g_group, w_group);
        assert_eq!(g_points.len(), w_points.len(), "{got:?}");
        for ((gt, gv), (wt, wv)) in g_points.iter().zip(w_points) {
            assert_eq!(gt, wt);
            assert!((gv - wv).abs() < 1e-9, "{gt}: {gv} != {wv}");
        }
    }
}

#[tokio::test]
async fn metrics_http_endpoints() {
    let server = loaded_server().await;

    let list = metrics_json(&server, "/api/v1/metrics").await;
    assert_eq!(
        list["metrics"],
        json!([
            {"name": "my.counter", "type": "sum", "unit": "1", "description": "I am a Counter",
             "series": 1, "points": 1},
            {"name": "my.exponential.histogram", "type": "exponential_histogram", "unit": "1",
             "description": "I am an Exponential Histogram", "series": 1, "points": 1},
            {"name": "my.gauge", "type": "gauge", "unit": "1", "description": "I am a Gauge",
             "series": 1, "points": 1},
            {"name": "my.histogram", "type": "histogram", "unit": "1",
             "description": "I am a Histogram", "series": 1, "points": 1},
            {"name": "requests", "type": "sum", "unit": "1", "description": "requests served",
             "series": 2, "points": 6},
        ])
    );

    let series = metrics_json(
        &server,
        "/api/v1/metrics/series?metric=requests&match[route]=/b",
    )
    .await;
    let series = series["series"].as_array().expect("series");
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series[0]["attributes"], json!({"route": "/b"}));
    assert_eq!(series[0]["service_name"], json!("web"));
    assert_eq!(series[0]["points"], json!(2));
    assert_eq!(series[0]["first_time"], json!("2023-11-14T22:13:30Z"));

    // The fixture's delta counter: 5 at 14:51:00.3 -> the [14:51, 14:52) bucket.
    let range = "start=2018-12-13T14:50:00Z&end=2018-12-13T14:53:00Z&step=60";
    let sum = metrics_json(
        &server,
        &format!("/api/v1/metrics/query_range?metric=my.counter&{range}&agg=sum"),
    )
    .await;
    assert_eq!(sum["type"], json!("sum"));
    assert_close(
        &points(&sum),
        &[(json!({}), vec![("2018-12-13T14:51:00Z", 5.0)])],
    );
    let rate = metrics_json(
        &server,
        &format!("/api/v1/metrics/query_range?metric=my.counter&{range}&agg=rate"),
    )
    .await;
    assert_close(
        &points(&rate),
        &[(json!({}), vec![("2018-12-13T14:51:00Z", 5.0 / 60.0)])],
    );
    // Histogram (bounds [1], counts [1, 1]): the median interpolates to 1 within (0, 1].
    let p50 = metrics_json(
        &server,
        &format!(
            "/api/v1/metrics/query_range?metric=my.histogram&{range}&agg=histogram_quantile&q=0.5"
        ),
    )
    .await;
    assert_close(
        &points(&p50),
        &[(json!({}), vec![("2018-12-13T14:51:00Z", 1.0)])],
    );
    // Exponential (scale 0): zero bucket 1, (4, 8] 2 -> median 4 + 4 * (0.5 / 2) = 5.
    let p50 = metrics_json(
        &server,
        &format!(
            "/api/v1/metrics/query_range?metric=my.exponential.histogram&{range}\
             &agg=histogram_quantile&q=0.5"
        ),
    )
    .await;
    assert_close(
        &points(&p50),
        &[(json!({}), vec![("2018-12-13T14:51:00Z", 5.0)])],
    );

    // The generated cumulative counter, per route, steps of 60s from BASE+60:
    // /a: 10 (BASE+10, the lookback) -> 25 -> 5 (reset: +5) -> 20;  /b: 100 -> 160.
    let range = format!("start={}&end={}&step=1m", BASE + 60, BASE + 240);
    let rate = metrics_json(
        &server,
        &format!("/api/v1/metrics/query_range?metric=requests&{range}&agg=rate&group_by=route"),
    )
    .await;
    assert_close(
        &points(&rate),
        &[
            (
                json!({"route": "/a"}),
                vec![
                    ("2023-11-14T22:14:20Z", 15.0 / 60.0),
                    ("2023-11-14T22:15:20Z", 5.0 / 60.0),
                    ("2023-11-14T22:16:20Z", 15.0 / 60.0),
                ],
            ),
            (json!({"route": "/b"}), vec![("2023-11-14T22:14:20Z", 1.0)]),
        ],
    );
    // sum of each series' last value per step: 25 + 160, then 5, then 20.
    let sum = metrics_json(
        &server,
        &format!(
            "/api/v1/metrics/query_range?metric=requests&{range}&agg=sum&match[service_name]=web"
        ),
    )
    .await;
    assert_close(
        &points(&sum),
        &[(
            json!({}),
            vec![
                ("2023-11-14T22:14:20Z", 185.0),
                ("2023-11-14T22:15:20Z", 5.0),
                ("2023-11-14T22:16:20Z", 20.0),
            ],
        )],
    );
    // The same numbers through SQL over the Postgres protocol.
    assert_eq!(
        rows(
            &server,
            "SELECT sum(value) FROM metric_points WHERE metric_name = 'requests'"
        )
        .await,
        vec!["320.0"]
    );

    for bad in [
        "/api/v1/metrics/query_range",
        "/api/v1/metrics/query_range?metric=requests&agg=median",
        "/api/v1/metrics/query_range?metric=requests&step=0",
        "/api/v1/metrics/query_range?metric=requests&start=2020-01-01&end=2019-01-01",
        "/api/v1/metrics/query_range?metric=my.gauge&agg=rate&start=1544712600&end=1544712720",
        "/api/v1/metrics/query_range?metric=requests&agg=histogram_quantile&q=2",
        "/api/v1/metrics/series",
        "/api/v1/metrics?bogus=1",
    ] {
        let reply = metrics_get(&server, bad).await;
        assert_eq!(reply.status, 400, "{bad}: {}", reply.text());
        assert!(reply.json()["error"].is_string(), "{bad}: {}", reply.text());
    }
}

/// The HTTP endpoint's limits hold over the Postgres protocol too: a query over its
/// memory budget fails with SQLSTATE 53200, a result over `max_result_rows` is cut with a
/// NOTICE, and the session goes on after both.
#[tokio::test]
async fn psql_queries_keep_the_query_limits() {
    let server = TestServer::start(&[
        "--set",
        "query.memory_limit_bytes=1000000",
        "--set",
        "query.max_result_rows=3",
    ]);
    let run = psql(
        &server,
        &[
            "-v",
            "VERBOSITY=verbose",
            "-c",
            "SELECT count(DISTINCT x) FROM generate_series(1, 2000000) AS t(x)",
            "-c",
            "SELECT x FROM generate_series(1, 10) AS t(x) ORDER BY x",
        ],
    )
    .await;
    assert!(
        run.stderr
            .contains("ERROR:  53200: query exceeded its memory limit"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("NOTICE:  01000: result truncated to 3 rows"),
        "{}",
        run.stderr
    );
    assert_eq!(run.stdout.lines().collect::<Vec<_>>(), vec!["1", "2", "3"]);
}

/// A CancelRequest (what psql sends on Ctrl-C) stops the running query with SQLSTATE
/// 57014 and the session stays usable. The query would run for hours, so only the cancel
/// ends it; cancels are re-sent in a bounded poll because one that arrives before the
/// query has started cancels nothing.
#[tokio::test]
async fn cancel_request_stops_a_running_query() {
    let server = TestServer::start(&[]);
    let (mut stream, startup_reply) = connect(&server).await;
    let key = startup_reply
        .iter()
        .find(|(kind, _)| *kind == b'K')
        .map(|(_, body)| body.clone())
        .expect("BackendKeyData");
    let mut query = Vec::new();
    cstr(
        &mut query,
        "SELECT sum(x) FROM generate_series(1, 1000000000000) AS t(x)",
    );
    stream
        .write_all(&message(b'Q', &query))
        .await
        .expect("query");
    let reader = tokio::spawn(async move {
        let replies = until_ready(&mut stream).await;
        (stream, replies)
    });
    let mut cancel = 16u32.to_be_bytes().to_vec();
    cancel.extend_from_slice(&80_877_102u32.to_be_bytes()); // the cancel request code
    cancel.extend_from_slice(&key);
    for _ in 0..MAX_POLLS {
        if reader.is_finished() {
            break;
        }
        let mut side = TcpStream::connect(&server.postgres)
            .await
            .expect("connect for cancel");
        side.write_all(&cancel).await.expect("cancel request");
        tokio::time::sleep(POLL_EVERY).await;
    }
    let (mut stream, replies) = tokio::time::timeout(DEADLINE, reader)
        .await
        .expect("the query ended after the cancel")
        .expect("reader task");
    assert_eq!(replies.len(), 1, "{replies:?}");
    assert_eq!(replies[0].0, b'E');
    assert_eq!(sqlstate(&replies[0].1), "57014");

    let mut query = Vec::new();
    cstr(&mut query, "SELECT 41 + 1");
    stream
        .write_all(&message(b'Q', &query))
        .await
        .expect("query");
    let replies = until_ready(&mut stream).await;
    let rows: Vec<_> = replies
        .iter()
        .filter(|m| m.0 == b'D')
        .map(|m| data_row(&m.1))
        .collect();
    assert_eq!(rows, vec![vec![Some(b"42".to_vec())]]);
}

/// Statements too deep or too long, SQL text over `query.max_sql_bytes` (simple and
/// extended protocol) and functions that amplify their input get an ERROR with a SQLSTATE
/// and the limit's name; the session goes on after each; the process's peak memory stays
/// bounded and the server keeps taking data.
#[tokio::test]
async fn psql_refuses_deep_huge_and_amplifying_statements() {
    use crate::bad_input::{AMPLIFYING, or_chain_sql, peak_rss, sum_sql, union_sql};
    let server = TestServer::start(&[]);
    let scratch = tempfile::tempdir().expect("tempdir");
    let big = scratch.path().join("big.sql");
    let mut text = String::from("SELECT 1 AS x /*");
    text.push_str(&"x".repeat(64 << 20));
    text.push_str("*/;\n");
    std::fs::write(&big, text).expect("write big.sql");
    let big = big.to_str().expect("utf-8 path").to_owned();

    let (at_limit, deep, ors, unions) = (
        sum_sql(255),
        sum_sql(2_000),
        or_chain_sql(2_000),
        union_sql(5_000),
    );
    let mut args = vec!["-v", "VERBOSITY=verbose"];
    for sql in [&at_limit, &deep, &ors, &unions] {
        args.extend(["-c", sql.as_str()]);
    }
    args.extend(["-f", big.as_str()]);
    for (sql, _) in AMPLIFYING {
        args.extend(["-c", sql]);
    }
    args.extend(["-c", "SELECT 42"]);
    let run = psql(&server, &args).await;
    assert_eq!(
        run.stdout.lines().collect::<Vec<_>>(),
        vec!["255", "42"],
        "{}",
        run.stderr
    );
    for expected in [
        "ERROR:  42000: the statement nests expressions or subqueries more than 256 deep (query.max_expression_depth)",
        "ERROR:  42000: the statement has more than 256 UNION / INTERSECT / EXCEPT branches (query.max_set_operation_branches)",
        "(query.max_sql_bytes)",
    ] {
        assert!(run.stderr.contains(expected), "{expected}: {}", run.stderr);
    }
    assert_eq!(
        run.stderr.matches("query.max_expression_depth").count(),
        2,
        "{}",
        run.stderr
    );
    let errors_53200 = run.stderr.matches("ERROR:  53200:").count();
    assert_eq!(errors_53200, AMPLIFYING.len(), "{}", run.stderr);
    for (_, limit) in AMPLIFYING {
        assert!(run.stderr.contains(limit), "{limit}: {}", run.stderr);
    }

    // Extended protocol: a Parse over the limit is an error, and the session goes on.
    let (mut stream, _) = connect(&server).await;
    let mut parse = Vec::new();
    cstr(&mut parse, "");
    cstr(&mut parse, &format!("SELECT 1 /*{}*/", "x".repeat(2 << 20)));
    parse.extend_from_slice(&0u16.to_be_bytes());
    let mut batch = message(b'P', &parse);
    batch.extend(message(b'S', &[]));
    stream.write_all(&batch).await.expect("parse");
    let replies = until_ready(&mut stream).await;
    let error = replies
        .iter()
        .find(|(kind, _)| *kind == b'E')
        .expect("an ErrorResponse");
    assert_eq!(sqlstate(&error.1), "42000");
    assert!(
        String::from_utf8_lossy(&error.1).contains("query.max_sql_bytes"),
        "{}",
        String::from_utf8_lossy(&error.1)
    );
    let mut query = Vec::new();
    cstr(&mut query, "SELECT 5 AS five");
    stream
        .write_all(&message(b'Q', &query))
        .await
        .expect("query");
    let replies = until_ready(&mut stream).await;
    let row = replies
        .iter()
        .find(|(kind, _)| *kind == b'D')
        .expect("a DataRow");
    assert_eq!(data_row(&row.1), vec![Some(b"5".to_vec())]);

    let peak = peak_rss(server.pid());
    assert!(peak < 1536 << 20, "peak RSS {} MiB", peak >> 20);
    crate::bad_input::assert_keeps_serving(&server).await;
}
