//! Helpers shared by the end-to-end tests: HTTP requests with full replies, SQL with
//! truncation checks, waiting for Parquet flushes (bounded polls), and a canonical form of
//! OTLP spans so that what a client sent and what Weft returns can be compared field by
//! field whatever the encoding (OTLP/JSON from a file or the API, prost structs, the SDK).

use std::collections::{BTreeMap, HashSet};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use weft_load_test::AckCallback;

use crate::server::TestServer;

/// Upper bound of every wait on the server (polls, eventual visibility).
pub(crate) const DEADLINE: Duration = Duration::from_secs(60);
/// Interval between two polls of a bounded poll loop.
pub(crate) const POLL_EVERY: Duration = Duration::from_millis(100);
/// Most polls a loop makes (`DEADLINE / POLL_EVERY`, plus slack for slow polls).
pub(crate) const MAX_POLLS: usize = 700;

pub(crate) const PROTOBUF: &str = "application/x-protobuf";
pub(crate) const JSON: &str = "application/json";

/// The fixtures the tests use, vendored in `schemas/testdata` (see its MANIFEST.txt).
pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../schemas/testdata"))
}

pub(crate) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(120))
        .build()
        .expect("reqwest client")
}

/// A complete HTTP reply.
#[derive(Debug)]
pub(crate) struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("reply is not json ({e}): {} {}", self.status, self.text()))
    }

    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .map(|v| v.to_str().expect("ascii header").to_owned())
    }
}

/// Sends one request and reads the whole reply.
pub(crate) async fn request(
    method: reqwest::Method,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Reply {
    let mut builder = http_client().request(method.clone(), url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    if let Some(body) = body {
        builder = builder.body(body);
    }
    let response = builder
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: {e}"));
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.bytes().await.expect("reply body").to_vec();
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) async fn post(url: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Reply {
    request(reqwest::Method::POST, url, headers, Some(body)).await
}

pub(crate) async fn get(url: &str) -> Reply {
    request(reqwest::Method::GET, url, &[], None).await
}

pub(crate) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).expect("gzip");
    encoder.finish().expect("gzip")
}

/// Sends raw bytes over a fresh TCP connection to `base_url` (`http://host:port`) and
/// returns the status code and the rest of the reply. For what reqwest does not do, such as
/// a hand-made chunked body.
pub(crate) async fn raw_http(base_url: &str, request: &[u8]) -> (u16, String) {
    let addr = base_url.strip_prefix("http://").expect("http url");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request).await.expect("write request");
    let mut reply = Vec::new();
    tokio::time::timeout(DEADLINE, stream.read_to_end(&mut reply))
        .await
        .expect("reply within the deadline")
        .expect("read reply");
    let text = String::from_utf8_lossy(&reply).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no http status in reply {text:?}"));
    (status, text)
}

/// `body` as HTTP/1.1 chunks of `chunk` bytes (`Transfer-Encoding: chunked`).
pub(crate) fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + body.len() / chunk * 8 + 16);
    for part in body.chunks(chunk) {
        out.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        out.extend_from_slice(part);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

impl TestServer {
    /// POSTs `sql` to the SQL endpoint and returns the raw reply.
    pub(crate) async fn sql_reply(&self, sql: &str) -> Reply {
        let body = serde_json::to_vec(&serde_json::json!({ "sql": sql })).expect("json");
        post(
            &self.query_url("/api/v1/sql"),
            &[("content-type", JSON)],
            body,
        )
        .await
    }

    /// Runs SQL and returns every row; fails if the query failed or the result was cut off.
    pub(crate) async fn sql_rows(&self, sql: &str) -> Vec<Value> {
        let reply = self.sql_reply(sql).await;
        assert_eq!(reply.status, 200, "sql {sql:?} failed: {}", reply.text());
        assert_eq!(
            reply.header("x-weft-truncated"),
            None,
            "sql {sql:?}: result was truncated"
        );
        match reply.json() {
            Value::Array(rows) => rows,
            other => panic!("sql {sql:?}: expected an array of rows, got {other}"),
        }
    }

    /// The single number a `SELECT count(*) AS n ...` returns.
    pub(crate) async fn sql_count(&self, sql: &str) -> u64 {
        let rows = self.sql_rows(sql).await;
        assert_eq!(rows.len(), 1, "sql {sql:?}: expected one row, got {rows:?}");
        json_u64(rows[0].get("n").unwrap_or(&Value::Null))
            .unwrap_or_else(|| panic!("sql {sql:?}: no numeric `n` in {:?}", rows[0]))
    }

    /// `GET /api/v1/traces/{id}` as a raw reply.
    pub(crate) async fn trace_reply(&self, trace_id: &str) -> Reply {
        get(&self.query_url(&format!("/api/v1/traces/{trace_id}"))).await
    }

    /// POSTs an OTLP body to the OTLP/HTTP receiver.
    pub(crate) async fn otlp_post(&self, path: &str, content_type: &str, body: Vec<u8>) -> Reply {
        post(
            &self.http_url(path),
            &[("content-type", content_type)],
            body,
        )
        .await
    }
}

// ---- polling on the data directory ------------------------------------------------------

/// The newest committed manifest of a data directory on local storage: the highest
/// `manifests/<version>.json`, else the single `manifest.json` of older releases.
pub(crate) fn newest_manifest(data_dir: &Path) -> Option<Value> {
    let numbered = std::fs::read_dir(data_dir.join("manifests"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .max();
    let path = numbered.unwrap_or_else(|| data_dir.join("manifest.json"));
    let bytes = std::fs::read(path).ok()?;
    Some(serde_json::from_slice(&bytes).expect("a manifest is json"))
}

/// Rows the manifest lists as committed Parquet for `table` (0 when there is no manifest).
pub(crate) fn manifest_rows(data_dir: &Path, table: &str) -> u64 {
    let Some(manifest) = newest_manifest(data_dir) else {
        return 0;
    };
    manifest["tables"][table]["files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["rows"].as_u64()).sum())
        .unwrap_or(0)
}

/// Every `.parquet` file below `data_dir/table`.
pub(crate) fn parquet_files(data_dir: &Path, table: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![data_dir.join(table)];
    // Bounded by the directory tree; each directory is visited once.
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "parquet") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Polls (bounded in count and time) until the manifest lists at least `rows` committed
/// Parquet rows of `table` and the files are on disk.
pub(crate) async fn wait_for_parquet_rows(data_dir: &Path, table: &str, rows: u64) {
    let start = Instant::now();
    for _ in 0..MAX_POLLS {
        if manifest_rows(data_dir, table) >= rows && !parquet_files(data_dir, table).is_empty() {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{table}: only {} of {rows} rows flushed to parquet after {:?}",
            manifest_rows(data_dir, table),
            DEADLINE
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!("{table}: {rows} rows never reached parquet");
}

// ---- JSON scalars ---------------------------------------------------------------------------

/// A JSON number or decimal string as u64 (OTLP/JSON writes 64-bit integers as strings).
pub(crate) fn json_u64(v: &Value) -> Option<u64> {
    match v {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn json_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

pub(crate) fn json_f64(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.parse().ok(),
        },
        _ => None,
    }
}

/// `o[key]` unless absent or null.
pub(crate) fn field<'a>(o: &'a Value, key: &str) -> Option<&'a Value> {
    o.get(key).filter(|v| !v.is_null())
}

fn str_field(o: &Value, key: &str) -> String {
    field(o, key)
        .map(|v| {
            v.as_str()
                .unwrap_or_else(|| panic!("{key} is not a string: {v}"))
                .to_owned()
        })
        .unwrap_or_default()
}

fn u64_field(o: &Value, key: &str) -> u64 {
    field(o, key)
        .map(|v| json_u64(v).unwrap_or_else(|| panic!("{key} is not a u64: {v}")))
        .unwrap_or(0)
}

fn array_field<'a>(o: &'a Value, key: &str) -> &'a [Value] {
    field(o, key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// An enum field written as an integer or as its proto name.
fn enum_field(o: &Value, key: &str, names: &[&str]) -> i64 {
    match field(o, key) {
        None => 0,
        Some(Value::String(s)) => names
            .iter()
            .position(|n| n == s)
            .map(|p| p as i64)
            .or_else(|| s.parse().ok())
            .unwrap_or_else(|| panic!("{key}: unknown enum value {s}")),
        Some(v) => json_i64(v).unwrap_or_else(|| panic!("{key} is not an enum: {v}")),
    }
}

const SPAN_KINDS: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];

// ---- canonical OTLP values ------------------------------------------------------------------

/// An OTLP `AnyValue` in a form that compares equal however it was encoded.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Any {
    Empty,
    Str(String),
    Bool(bool),
    Int(i64),
    Double(f64),
    /// Raw bytes (base64 in OTLP/JSON).
    Bytes(Vec<u8>),
    Array(Vec<Any>),
    KvList(BTreeMap<String, Any>),
}

pub(crate) type Attrs = BTreeMap<String, Any>;

pub(crate) fn any_from_json(v: &Value) -> Any {
    if let Some(s) = field(v, "stringValue") {
        return Any::Str(s.as_str().expect("stringValue").to_owned());
    }
    if let Some(b) = field(v, "boolValue") {
        return Any::Bool(b.as_bool().expect("boolValue"));
    }
    if let Some(i) = field(v, "intValue") {
        return Any::Int(json_i64(i).expect("intValue"));
    }
    if let Some(d) = field(v, "doubleValue") {
        return Any::Double(json_f64(d).expect("doubleValue"));
    }
    if let Some(b) = field(v, "bytesValue") {
        return Any::Bytes(decode_base64(b.as_str().expect("bytesValue")));
    }
    if let Some(a) = field(v, "arrayValue") {
        return Any::Array(array_field(a, "values").iter().map(any_from_json).collect());
    }
    if let Some(kv) = field(v, "kvlistValue") {
        return Any::KvList(attrs_from_json(array_field(kv, "values")));
    }
    Any::Empty
}

pub(crate) fn attrs_from_json(list: &[Value]) -> Attrs {
    list.iter()
        .map(|kv| {
            let key = str_field(kv, "key");
            let value = field(kv, "value").map(any_from_json).unwrap_or(Any::Empty);
            (key, value)
        })
        .collect()
}

pub(crate) fn any_from_proto(v: Option<&AnyValue>) -> Any {
    match v.and_then(|v| v.value.as_ref()) {
        None => Any::Empty,
        Some(any_value::Value::StringValue(s)) => Any::Str(s.clone()),
        Some(any_value::Value::BoolValue(b)) => Any::Bool(*b),
        Some(any_value::Value::IntValue(i)) => Any::Int(*i),
        Some(any_value::Value::DoubleValue(d)) => Any::Double(*d),
        Some(any_value::Value::BytesValue(b)) => Any::Bytes(b.clone()),
        Some(any_value::Value::ArrayValue(a)) => {
            Any::Array(a.values.iter().map(|v| any_from_proto(Some(v))).collect())
        }
        Some(any_value::Value::KvlistValue(kv)) => Any::KvList(attrs_from_proto(&kv.values)),
        #[allow(unreachable_patterns)]
        Some(other) => panic!("unexpected AnyValue {other:?}"),
    }
}

pub(crate) fn attrs_from_proto(list: &[KeyValue]) -> Attrs {
    list.iter()
        .map(|kv| (kv.key.clone(), any_from_proto(kv.value.as_ref())))
        .collect()
}

/// Standard base64 (with or without padding), as OTLP/JSON writes `bytesValue`.
fn decode_base64(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in text.bytes().filter(|c| *c != b'=') {
        let v = ALPHABET
            .iter()
            .position(|a| *a == c)
            .unwrap_or_else(|| panic!("bad base64 {text:?}")) as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

/// One span event, canonical.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Event {
    pub time: u64,
    pub name: String,
    pub attributes: Attrs,
    pub dropped_attributes_count: u64,
}

/// One span link, canonical.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Link {
    pub trace_id: String,
    pub span_id: String,
    pub trace_state: String,
    pub attributes: Attrs,
    pub dropped_attributes_count: u64,
    pub flags: u64,
}

/// One span with its resource and scope, canonical: lowercase hex ids, "" for an absent
/// id or string, 0 for an absent number, attributes as sorted maps.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Span {
    pub resource: Attrs,
    pub scope_name: String,
    pub scope_version: String,
    pub scope_attributes: Attrs,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub trace_state: String,
    pub flags: u64,
    pub name: String,
    pub kind: i64,
    pub start: u64,
    pub end: u64,
    pub attributes: Attrs,
    pub dropped_attributes_count: u64,
    pub events: Vec<Event>,
    pub dropped_events_count: u64,
    pub links: Vec<Link>,
    pub dropped_links_count: u64,
    pub status_code: i64,
    pub status_message: String,
}

impl Span {
    pub(crate) fn service(&self) -> String {
        match self.resource.get("service.name") {
            Some(Any::Str(s)) => s.clone(),
            _ => "unknown_service".to_owned(),
        }
    }
}

/// Sorts spans by (trace id, span id, start) so two lists compare as multisets.
pub(crate) fn sorted(mut spans: Vec<Span>) -> Vec<Span> {
    spans.sort_by(|a, b| {
        (&a.trace_id, &a.span_id, a.start, &a.name).cmp(&(
            &b.trace_id,
            &b.span_id,
            b.start,
            &b.name,
        ))
    });
    spans
}

fn hex_id(o: &Value, key: &str) -> String {
    str_field(o, key).to_ascii_lowercase()
}

/// Every span of an OTLP/JSON `{"resourceSpans": [...]}` document.
pub(crate) fn spans_from_json(doc: &Value) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in array_field(doc, "resourceSpans") {
        let resource = field(rs, "resource")
            .map(|r| attrs_from_json(array_field(r, "attributes")))
            .unwrap_or_default();
        for ss in array_field(rs, "scopeSpans") {
            let scope = field(ss, "scope").cloned().unwrap_or(Value::Null);
            for s in array_field(ss, "spans") {
                let status = field(s, "status").cloned().unwrap_or(Value::Null);
                out.push(Span {
                    resource: resource.clone(),
                    scope_name: str_field(&scope, "name"),
                    scope_version: str_field(&scope, "version"),
                    scope_attributes: attrs_from_json(array_field(&scope, "attributes")),
                    trace_id: hex_id(s, "traceId"),
                    span_id: hex_id(s, "spanId"),
                    parent_span_id: hex_id(s, "parentSpanId"),
                    trace_state: str_field(s, "traceState"),
                    flags: u64_field(s, "flags"),
                    name: str_field(s, "name"),
                    kind: enum_field(s, "kind", SPAN_KINDS),
                    start: u64_field(s, "startTimeUnixNano"),
                    end: u64_field(s, "endTimeUnixNano"),
                    attributes: attrs_from_json(array_field(s, "attributes")),
                    dropped_attributes_count: u64_field(s, "droppedAttributesCount"),
                    events: array_field(s, "events")
                        .iter()
                        .map(|e| Event {
                            time: u64_field(e, "timeUnixNano"),
                            name: str_field(e, "name"),
                            attributes: attrs_from_json(array_field(e, "attributes")),
                            dropped_attributes_count: u64_field(e, "droppedAttributesCount"),
                        })
                        .collect(),
                    dropped_events_count: u64_field(s, "droppedEventsCount"),
                    links: array_field(s, "links")
                        .iter()
                        .map(|l| Link {
                            trace_id: hex_id(l, "traceId"),
                            span_id: hex_id(l, "spanId"),
                            trace_state: str_field(l, "traceState"),
                            attributes: attrs_from_json(array_field(l, "attributes")),
                            dropped_attributes_count: u64_field(l, "droppedAttributesCount"),
                            flags: u64_field(l, "flags"),
                        })
                        .collect(),
                    dropped_links_count: u64_field(s, "droppedLinksCount"),
                    status_code: enum_field(&status, "code", STATUS_CODES),
                    status_message: str_field(&status, "message"),
                });
            }
        }
    }
    out
}

/// Every span of a decoded protobuf export request.
pub(crate) fn spans_from_proto(req: &ExportTraceServiceRequest) -> Vec<Span> {
    let mut out = Vec::new();
    for rs in &req.resource_spans {
        let resource = rs
            .resource
            .as_ref()
            .map(|r| attrs_from_proto(&r.attributes))
            .unwrap_or_default();
        for ss in &rs.scope_spans {
            let scope = ss.scope.clone().unwrap_or_default();
            for s in &ss.spans {
                let status = s.status.clone().unwrap_or_default();
                out.push(Span {
                    resource: resource.clone(),
                    scope_name: scope.name.clone(),
                    scope_version: scope.version.clone(),
                    scope_attributes: attrs_from_proto(&scope.attributes),
                    trace_id: hex::encode(&s.trace_id),
                    span_id: hex::encode(&s.span_id),
                    parent_span_id: hex::encode(&s.parent_span_id),
                    trace_state: s.trace_state.clone(),
                    flags: u64::from(s.flags),
                    name: s.name.clone(),
                    kind: i64::from(s.kind),
                    start: s.start_time_unix_nano,
                    end: s.end_time_unix_nano,
                    attributes: attrs_from_proto(&s.attributes),
                    dropped_attributes_count: u64::from(s.dropped_attributes_count),
                    events: s
                        .events
                        .iter()
                        .map(|e| Event {
                            time: e.time_unix_nano,
                            name: e.name.clone(),
                            attributes: attrs_from_proto(&e.attributes),
                            dropped_attributes_count: u64::from(e.dropped_attributes_count),
                        })
                        .collect(),
                    dropped_events_count: u64::from(s.dropped_events_count),
                    links: s
                        .links
                        .iter()
                        .map(|l| Link {
                            trace_id: hex::encode(&l.trace_id),
                            span_id: hex::encode(&l.span_id),
                            trace_state: l.trace_state.clone(),
                            attributes: attrs_from_proto(&l.attributes),
                            dropped_attributes_count: u64::from(l.dropped_attributes_count),
                            flags: u64::from(l.flags),
                        })
                        .collect(),
                    dropped_links_count: u64::from(s.dropped_links_count),
                    status_code: i64::from(status.code),
                    status_message: status.message,
                });
            }
        }
    }
    out
}

// ---- metrics --------------------------------------------------------------------------------

/// (service name, metric name) -> (metric_type as in the `metrics` table, data points).
pub(crate) type MetricCounts = BTreeMap<(String, String), (i64, u64)>;

fn service_of(resource_attrs: &Attrs) -> String {
    match resource_attrs.get("service.name") {
        Some(Any::Str(s)) => s.clone(),
        _ => "unknown_service".to_owned(),
    }
}

/// Data points per metric of an OTLP/JSON `{"resourceMetrics": [...]}` document.
pub(crate) fn metric_counts_from_json(doc: &Value, into: &mut MetricCounts) {
    const TYPES: [(&str, i64); 5] = [
        ("gauge", 1),
        ("sum", 2),
        ("histogram", 3),
        ("exponentialHistogram", 4),
        ("summary", 5),
    ];
    for rm in array_field(doc, "resourceMetrics") {
        let service = service_of(
            &field(rm, "resource")
                .map(|r| attrs_from_json(array_field(r, "attributes")))
                .unwrap_or_default(),
        );
        for sm in array_field(rm, "scopeMetrics") {
            for m in array_field(sm, "metrics") {
                let name = str_field(m, "name");
                let (data, metric_type) = TYPES
                    .iter()
                    .find_map(|(key, t)| field(m, key).map(|d| (d, *t)))
                    .unwrap_or_else(|| panic!("metric {name} has no data"));
                let points = array_field(data, "dataPoints").len() as u64;
                let entry = into
                    .entry((service.clone(), name))
                    .or_insert((metric_type, 0));
                assert_eq!(entry.0, metric_type, "one metric name, one type");
                entry.1 += points;
            }
        }
    }
}

/// Data points per metric of a decoded protobuf metrics export.
pub(crate) fn metric_counts_from_proto(req: &ExportMetricsServiceRequest, into: &mut MetricCounts) {
    for rm in &req.resource_metrics {
        let service = service_of(
            &rm.resource
                .as_ref()
                .map(|r| attrs_from_proto(&r.attributes))
                .unwrap_or_default(),
        );
        for sm in &rm.scope_metrics {
            for m in &sm.metrics {
                let (metric_type, points) = match m.data.as_ref().expect("metric data") {
                    metric::Data::Gauge(g) => (1, g.data_points.len()),
                    metric::Data::Sum(s) => (2, s.data_points.len()),
                    metric::Data::Histogram(h) => (3, h.data_points.len()),
                    metric::Data::ExponentialHistogram(h) => (4, h.data_points.len()),
                    metric::Data::Summary(s) => (5, s.data_points.len()),
                };
                let entry = into
                    .entry((service.clone(), m.name.clone()))
                    .or_insert((metric_type, 0));
                assert_eq!(entry.0, metric_type, "one metric name, one type");
                entry.1 += points as u64;
            }
        }
    }
}

/// What the `metrics` table holds, in the shape of [`MetricCounts`].
pub(crate) async fn stored_metric_counts(server: &TestServer) -> MetricCounts {
    let rows = server
        .sql_rows(
            "SELECT service_name, metric_name, metric_type, count(*) AS n FROM metrics \
             GROUP BY service_name, metric_name, metric_type",
        )
        .await;
    let mut out = MetricCounts::new();
    for row in rows {
        let key = (
            row["service_name"]
                .as_str()
                .expect("service_name")
                .to_owned(),
            row["metric_name"].as_str().expect("metric_name").to_owned(),
        );
        let value = (
            json_i64(&row["metric_type"]).expect("metric_type"),
            json_u64(&row["n"]).expect("n"),
        );
        assert!(
            out.insert(key.clone(), value).is_none(),
            "{key:?} has two metric types"
        );
    }
    out
}

/// Checks every expected span is stored, with every field, and nothing else under those trace
/// ids: through the trace API (OTLP/JSON) and through SQL.
pub(crate) async fn assert_spans_stored(server: &TestServer, expected: &[Span]) {
    let mut by_trace: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for span in expected {
        by_trace
            .entry(span.trace_id.clone())
            .or_default()
            .push(span.clone());
    }
    for (trace_id, spans) in by_trace {
        let reply = server.trace_reply(&trace_id).await;
        assert_eq!(reply.status, 200, "GET trace {trace_id}: {}", reply.text());
        let got = spans_from_json(&reply.json());
        assert_eq!(
            reply.header("x-weft-span-count"),
            Some(spans.len().to_string()),
            "trace {trace_id}: x-weft-span-count"
        );
        assert_eq!(
            sorted(got),
            sorted(spans.clone()),
            "trace {trace_id} via the trace api"
        );

        let rows = server
            .sql_rows(&format!(
                "SELECT hex_id(span_id) AS span_id, span_name, service_name, kind, \
                 CAST(start_time AS BIGINT) AS start_ns, duration_ns FROM spans \
                 WHERE trace_id = trace_id_from_hex('{trace_id}')"
            ))
            .await;
        let mut got: Vec<(String, String, String, i64, i64, i64)> = rows
            .iter()
            .map(|r| {
                (
                    r["span_id"].as_str().expect("span_id").to_owned(),
                    r["span_name"].as_str().expect("span_name").to_owned(),
                    r["service_name"].as_str().expect("service_name").to_owned(),
                    json_i64(&r["kind"]).expect("kind"),
                    json_i64(&r["start_ns"]).expect("start_ns"),
                    json_i64(&r["duration_ns"]).expect("duration_ns"),
                )
            })
            .collect();
        let mut want: Vec<(String, String, String, i64, i64, i64)> = spans
            .iter()
            .map(|s| {
                (
                    s.span_id.clone(),
                    s.name.clone(),
                    s.service(),
                    s.kind,
                    s.start as i64,
                    s.end as i64 - s.start as i64,
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(got, want, "trace {trace_id} via sql");
    }
}

/// (trace id, span id), lowercase hex.
pub(crate) type SpanKey = (String, String);

/// Acknowledged requests and their spans, filled by the load generator's callback.
#[derive(Default)]
pub(crate) struct Acked {
    spans: Mutex<HashSet<SpanKey>>,
    requests: AtomicU64,
}

impl Acked {
    pub(crate) fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    pub(crate) fn spans(&self) -> HashSet<SpanKey> {
        self.spans.lock().expect("ack set").clone()
    }

    pub(crate) fn callback(self: &Arc<Self>) -> AckCallback {
        let acked = std::sync::Arc::clone(self);
        Arc::new(move |req| {
            let mut spans = acked.spans.lock().expect("ack set");
            for span in req
                .resource_spans
                .iter()
                .flat_map(|rs| &rs.scope_spans)
                .flat_map(|ss| &ss.spans)
            {
                spans.insert((hex::encode(&span.trace_id), hex::encode(&span.span_id)));
            }
            acked.requests.fetch_add(1, Ordering::SeqCst);
        })
    }

    /// Waits (bounded) until `n` more requests than now have been acknowledged.
    pub(crate) async fn wait_more(&self, n: u64) {
        let target = self.requests() + n;
        let start = Instant::now();
        for _ in 0..MAX_POLLS {
            if self.requests() >= target {
                return;
            }
            assert!(start.elapsed() < DEADLINE, "acknowledgements stopped");
            tokio::time::sleep(POLL_EVERY).await;
        }
        panic!("acknowledgements stopped");
    }
}

/// The load generator's realistic traces over gRPC at `rate` spans/s for `duration`, in
/// 100-span requests, recording what `server` acknowledges.
pub(crate) fn grpc_load(
    server: &TestServer,
    rate: u64,
    duration: Duration,
) -> weft_load_test::LoadConfig {
    weft_load_test::LoadConfig {
        endpoint: server.otlp_grpc.clone(),
        protocol: weft_load_test::Protocol::Grpc,
        rate,
        duration,
        concurrency: 4,
        batch_spans: 100,
        services: 10,
        error_rate: 0.02,
        quiet: true,
        request_timeout: Duration::from_secs(5),
        max_retries: 2,
        server_pid: Some(server.pid()),
        ..weft_load_test::LoadConfig::default()
    }
}

/// Fails unless every acknowledged span is among the stored ones (naming a few that are
/// not, and how many).
pub(crate) fn assert_acked_stored(acked: &HashSet<SpanKey>, stored: &HashSet<SpanKey>) {
    let missing: Vec<&SpanKey> = acked.difference(stored).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged spans are missing, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(5)]
    );
}
