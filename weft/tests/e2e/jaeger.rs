//! The Jaeger-compatible API and the native trace search, against a real `weft up`.
//!
//! * **Jaeger's storage conformance suite** (`schemas/testdata/jaeger-storage-integration`):
//!   every fixture trace is ingested over OTLP/HTTP, then every query of `queries.json` runs
//!   through the v1 API (`/api/traces`, as the Jaeger UI and Grafana send it) and the v3 API
//!   and must return exactly the expected traces, each whole; once as first read and again
//!   once every span is in Parquet. As in Jaeger's `integration.go`, `DurationMin`/`Max` are
//!   Go `time.Duration`s in JSON (nanoseconds) and tag values are compared as text (`123`,
//!   `72.5`, `true`).
//! * **Jaeger's golden translations**: `/api/traces/{id}` of `otlp2jaeger-in.json` equals
//!   `otlp2jaeger-out.json`; the Jaeger UI's multi-resource golden matches field by field.
//! * Services and operations, dependencies, and errors in Jaeger's envelopes.
//! * **Native search** (`/api/v1/search`) over a generated shop of 40 traces: every span and
//!   trace condition against expectations computed from what was sent, and pagination that
//!   returns every match exactly once, in order.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};

use crate::common::{JSON, fixtures_dir, get, post, wait_for_parquet_rows};
use crate::server::TestServer;

fn read_json(path: &Path) -> Value {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Posts an OTLP/JSON export request and checks that every span was accepted.
async fn ingest(server: &TestServer, body: &Value, what: &str) {
    let reply = post(
        &server.http_url("/v1/traces"),
        &[("content-type", JSON)],
        serde_json::to_vec(body).expect("json"),
    )
    .await;
    assert_eq!(reply.status, 200, "{what}: {}", reply.text());
    let response = reply.json();
    let rejected = response["partialSuccess"]["rejectedSpans"]
        .as_str()
        .map_or(0, |n| n.parse::<u64>().expect("rejectedSpans"))
        + response["partialSuccess"]["rejectedSpans"]
            .as_u64()
            .unwrap_or(0);
    assert_eq!(rejected, 0, "{what}: {response}");
}

/// `server.query_url(path)` with a query string.
fn url(server: &TestServer, path: &str, params: &[(&str, String)]) -> String {
    reqwest::Url::parse_with_params(&server.query_url(path), params)
        .expect("url")
        .to_string()
}

/// Every span of an OTLP/JSON document (`resourceSpans` at the top).
fn otlp_spans(doc: &Value) -> Vec<&Value> {
    let mut spans = Vec::new();
    for rs in doc["resourceSpans"].as_array().into_iter().flatten() {
        for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
            spans.extend(ss["spans"].as_array().into_iter().flatten());
        }
    }
    spans
}

/// Trace id (as a number, so 16- and 32-digit spellings compare equal) → span count.
fn otlp_traces(doc: &Value) -> BTreeMap<u128, usize> {
    let mut traces = BTreeMap::new();
    for span in otlp_spans(doc) {
        *traces.entry(id_number(&span["traceId"])).or_default() += 1;
    }
    traces
}

/// The same for the `data` of a Jaeger v1 reply.
fn jaeger_traces(reply: &Value) -> BTreeMap<u128, usize> {
    let mut traces = BTreeMap::new();
    for trace in reply["data"].as_array().expect("data array") {
        let spans = trace["spans"].as_array().expect("spans");
        assert!(
            spans.iter().all(|s| s["traceID"] == trace["traceID"]),
            "one trace per entry: {trace}"
        );
        traces.insert(id_number(&trace["traceID"]), spans.len());
    }
    traces
}

fn id_number(hex: &Value) -> u128 {
    let text = hex
        .as_str()
        .unwrap_or_else(|| panic!("id {hex} is not a string"));
    u128::from_str_radix(text, 16).unwrap_or_else(|e| panic!("id {text:?}: {e}"))
}

fn unix_ns(rfc3339: &str) -> i64 {
    arrow::compute::kernels::cast_utils::string_to_timestamp_nanos(rfc3339)
        .unwrap_or_else(|e| panic!("{rfc3339}: {e}"))
}

// ---- Jaeger storage conformance ---------------------------------------------------------------

const CONFORMANCE_DIR: &str = "jaeger-storage-integration";

/// Fixture name (file stem) → OTLP/JSON document.
fn conformance_traces() -> BTreeMap<String, Value> {
    let dir = fixtures_dir().join(CONFORMANCE_DIR).join("traces");
    let mut out = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("fixture dir") {
        let path = entry.expect("entry").path();
        let stem = path
            .file_stem()
            .expect("stem")
            .to_string_lossy()
            .into_owned();
        out.insert(stem, read_json(&path));
    }
    assert_eq!(out.len(), 32, "the vendored suite has 32 traces");
    out
}

/// A tag map as the Jaeger UI sends it: every value a string.
fn tags_json(tags: &Value) -> Option<String> {
    let tags = tags.as_object()?;
    let text: serde_json::Map<String, Value> = tags
        .iter()
        .map(|(k, v)| {
            let value = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(value))
        })
        .collect();
    Some(Value::Object(text).to_string())
}

/// A Go `time.Duration` from the fixture (nanoseconds) as a parameter; 0 means unset.
fn duration_param(query: &Value, field: &str) -> Option<String> {
    let ns = query[field].as_i64().expect("duration");
    (ns != 0).then(|| format!("{ns}ns"))
}

fn v1_search_url(server: &TestServer, query: &Value) -> String {
    let micros = |field: &str| (unix_ns(query[field].as_str().expect("time")) / 1_000).to_string();
    let mut params = vec![
        (
            "service",
            query["ServiceName"].as_str().expect("service").to_owned(),
        ),
        ("start", micros("StartTimeMin")),
        ("end", micros("StartTimeMax")),
        ("limit", query["NumTraces"].to_string()),
    ];
    if let Some(op) = query["OperationName"].as_str().filter(|s| !s.is_empty()) {
        params.push(("operation", op.to_owned()));
    }
    if let Some(tags) = tags_json(&query["Tags"]) {
        params.push(("tags", tags));
    }
    if let Some(d) = duration_param(query, "DurationMin") {
        params.push(("minDuration", d));
    }
    if let Some(d) = duration_param(query, "DurationMax") {
        params.push(("maxDuration", d));
    }
    url(server, "/api/traces", &params)
}

fn v3_search_url(server: &TestServer, query: &Value) -> String {
    let text = |field: &str| query[field].as_str().expect(field).to_owned();
    let mut params = vec![
        ("query.service_name", text("ServiceName")),
        ("query.start_time_min", text("StartTimeMin")),
        ("query.start_time_max", text("StartTimeMax")),
        ("query.search_depth", query["NumTraces"].to_string()),
    ];
    if let Some(op) = query["OperationName"].as_str().filter(|s| !s.is_empty()) {
        params.push(("query.operation_name", op.to_owned()));
    }
    if let Some(tags) = tags_json(&query["Tags"]) {
        params.push(("query.attributes", tags));
    }
    if let Some(d) = duration_param(query, "DurationMin") {
        params.push(("query.duration_min", d));
    }
    if let Some(d) = duration_param(query, "DurationMax") {
        params.push(("query.duration_max", d));
    }
    url(server, "/api/v3/traces", &params)
}

async fn run_conformance_queries(
    server: &TestServer,
    traces: &BTreeMap<String, Value>,
    when: &str,
) {
    let queries = read_json(&fixtures_dir().join(CONFORMANCE_DIR).join("queries.json"));
    let queries = queries.as_array().expect("queries");
    assert_eq!(queries.len(), 25, "the vendored suite has 25 queries");
    for case in queries {
        let caption = case["Caption"].as_str().expect("caption");
        let query = &case["Query"];
        let mut expected = BTreeMap::new();
        for name in case["ExpectedFixtures"].as_array().expect("expected") {
            let fixture = &traces[name.as_str().expect("fixture name")];
            expected.extend(otlp_traces(fixture));
        }

        let reply = get(&v1_search_url(server, query)).await;
        assert_eq!(reply.status, 200, "{caption} v1 ({when}): {}", reply.text());
        let body = reply.json();
        assert_eq!(body["errors"], Value::Null, "{caption} v1 ({when})");
        assert_eq!(
            jaeger_traces(&body),
            expected,
            "{caption}: /api/traces ({when}) must return exactly these traces, whole"
        );

        let reply = get(&v3_search_url(server, query)).await;
        assert_eq!(reply.status, 200, "{caption} v3 ({when}): {}", reply.text());
        assert_eq!(
            otlp_traces(&reply.json()["result"]),
            expected,
            "{caption}: /api/v3/traces ({when}) must return exactly these traces, whole"
        );
    }

    // Three traces of query22-service start at the same instant: a limit keeps the highest
    // trace ids, newest-first order breaking the tie, the same every time.
    let window = [
        ("start", "1485445591639875".to_owned()),
        ("end", "1485452791639875".to_owned()),
    ];
    let mut params = vec![
        ("service", "query22-service".to_owned()),
        ("limit", "2".to_owned()),
    ];
    params.extend(window);
    let reply = get(&url(server, "/api/traces", &params)).await;
    let ids: Vec<u128> = reply.json()["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|t| id_number(&t["traceID"]))
        .collect();
    assert_eq!(ids, [0x223, 0x222], "limit and order ({when})");
}

#[tokio::test]
async fn jaeger_storage_conformance_queries_find_exactly_the_expected_traces() {
    let server = TestServer::start(&["--set", "collector.buffer.flush_age_secs=1"]);
    let traces = conformance_traces();
    let mut spans = 0;
    for (name, doc) in &traces {
        ingest(&server, doc, name).await;
        spans += otlp_spans(doc).len() as u64;
    }
    run_conformance_queries(&server, &traces, "first read").await;
    wait_for_parquet_rows(&server.data_dir, "spans", spans).await;
    run_conformance_queries(&server, &traces, "from parquet").await;
}

// ---- golden translations ------------------------------------------------------------------------

/// The fields a Jaeger server sends, from the Jaeger UI's golden (which adds derived fields
/// such as `depth` and embedded `process`, and predates the `otel.library.*` →
/// `otel.scope.*` rename), spans ordered by id.
fn core_fields(trace: &Value) -> Value {
    let rename = |key: &Value| match key.as_str() {
        Some("otel.library.name") => json!("otel.scope.name"),
        Some("otel.library.version") => json!("otel.scope.version"),
        _ => key.clone(),
    };
    let mut spans: Vec<Value> = trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .map(|s| {
            json!({
                "traceID": s["traceID"],
                "spanID": s["spanID"],
                "operationName": s["operationName"],
                "references": s["references"].as_array().expect("references").iter().map(|r| json!({
                    "refType": r["refType"], "traceID": r["traceID"], "spanID": r["spanID"],
                })).collect::<Vec<_>>(),
                "startTime": s["startTime"],
                "duration": s["duration"],
                "tags": s["tags"].as_array().expect("tags").iter().map(|t| json!({
                    "key": rename(&t["key"]), "type": t["type"], "value": t["value"],
                })).collect::<Vec<_>>(),
                "logs": s["logs"],
                "processID": s["processID"],
            })
        })
        .collect();
    spans.sort_by_key(|s| s["spanID"].as_str().expect("span id").to_owned());
    let processes: serde_json::Map<String, Value> = trace["processes"]
        .as_object()
        .expect("processes")
        .iter()
        .map(|(id, p)| {
            (
                id.clone(),
                json!({"serviceName": p["serviceName"], "tags": p["tags"]}),
            )
        })
        .collect();
    json!({"traceID": trace["traceID"], "spans": spans, "processes": processes})
}

#[tokio::test]
async fn traces_by_id_match_jaegers_golden_translations() {
    let server = TestServer::start(&[]);
    let golden = fixtures_dir().join("jaeger-query-golden");
    ingest(
        &server,
        &read_json(&golden.join("otlp2jaeger-in.json")),
        "otlp2jaeger-in",
    )
    .await;
    let expected = read_json(&golden.join("otlp2jaeger-out.json"));
    let id = "83a9efd15c1c98a977e0711cc93ee28b";

    let reply = get(&server.query_url(&format!("/api/traces/{id}"))).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        expected,
        "/api/traces/{{id}} vs otlp2jaeger-out.json"
    );

    // A search serves the same translation.
    let reply = get(&url(
        &server,
        "/api/traces",
        &[
            ("service", "telemetrygen".into()),
            ("start", "1706678909209000".into()),
            ("end", "1706678909210000".into()),
        ],
    ))
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        expected,
        "/api/traces?service= vs otlp2jaeger-out.json"
    );

    // v3: the OTLP/JSON trace the native endpoint returns, wrapped in `result`.
    let v3 = get(&server.query_url(&format!("/api/v3/traces/{id}"))).await;
    assert_eq!(v3.status, 200, "{}", v3.text());
    let native = get(&server.query_url(&format!("/api/v1/traces/{id}"))).await;
    assert_eq!(v3.json(), json!({ "result": native.json() }));

    // The Jaeger UI's golden: four resources with equal attributes share process p1.
    let ui = fixtures_dir().join("jaeger-ui");
    ingest(
        &server,
        &read_json(&ui.join("otlp2jaeger-multi-in-combined.json")),
        "multi",
    )
    .await;
    let expected = read_json(&ui.join("oltp2jaeger-multi-out.json"));
    let reply = get(&server.query_url("/api/traces/c620759e5d60fafb8ee0922b30e06bc6")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let body = reply.json();
    assert_eq!(body["data"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        core_fields(&body["data"][0]),
        core_fields(&expected["data"][0])
    );
}

// ---- services, operations, dependencies -----------------------------------------------------

#[tokio::test]
async fn services_operations_and_dependencies_list_what_was_ingested() {
    let server = TestServer::start(&[]);
    let example = fixtures_dir()
        .join(CONFORMANCE_DIR)
        .join("traces/example_trace.json");
    ingest(&server, &read_json(&example), "example_trace").await;

    let services = json!([
        "example-service-1",
        "example-service-2",
        "example-service-3"
    ]);
    let reply = get(&server.query_url("/api/services")).await;
    assert_eq!(
        reply.json(),
        json!({"data": services, "total": 3, "limit": 0, "offset": 0, "errors": null})
    );
    let reply = get(&server.query_url("/api/v3/services")).await;
    assert_eq!(reply.json(), json!({ "services": services }));

    // What Jaeger's GetOperations conformance test expects of example-service-1.
    let reply = get(&server.query_url("/api/operations?service=example-service-1")).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json()["data"],
        json!([
            {"name": "example-operation-1", "spanKind": ""},
            {"name": "example-operation-3", "spanKind": "server"},
            {"name": "example-operation-4", "spanKind": "client"},
        ])
    );
    assert_eq!(reply.json()["total"], 3);
    let reply =
        get(&server.query_url("/api/operations?service=example-service-1&spanKind=client")).await;
    assert_eq!(
        reply.json()["data"],
        json!([{"name": "example-operation-4", "spanKind": "client"}])
    );
    let reply = get(&server.query_url("/api/services/example-service-1/operations")).await;
    assert_eq!(
        reply.json(),
        json!({
            "data": ["example-operation-1", "example-operation-3", "example-operation-4"],
            "total": 3, "limit": 0, "offset": 0, "errors": null,
        })
    );
    let reply = get(&server.query_url("/api/operations?service=nobody")).await;
    assert_eq!(reply.json()["data"], json!([]));
    // v3 reports the unspecified kind as internal, like Jaeger's gateway.
    let reply = get(&server.query_url("/api/v3/operations?service=example-service-1")).await;
    assert_eq!(
        reply.json(),
        json!({"operations": [
            {"name": "example-operation-1", "spanKind": "internal"},
            {"name": "example-operation-3", "spanKind": "server"},
            {"name": "example-operation-4", "spanKind": "client"},
        ]})
    );
    let reply =
        get(&server.query_url("/api/v3/operations?service=example-service-1&span_kind=server"))
            .await;
    assert_eq!(
        reply.json(),
        json!({"operations": [{"name": "example-operation-3", "spanKind": "server"}]})
    );

    // Dependencies: the first step of the Jaeger memory store's dependency test.
    let deps = fixtures_dir().join("derived-dependency-golden");
    ingest(
        &server,
        &read_json(&deps.join("jaeger-memory-deps-part1.otlp.json")),
        "deps",
    )
    .await;
    let case = &read_json(&deps.join("expected-links.json"))["cases"][0]["steps"][0];
    let start_ms = case["query"]["startTime_ns"].as_i64().expect("start") / 1_000_000;
    let end_ms = case["query"]["endTime_ns"].as_i64().expect("end") / 1_000_000;
    let window = |extra: Option<&str>| {
        let mut params = vec![
            ("endTs", end_ms.to_string()),
            ("lookback", (end_ms - start_ms).to_string()),
        ];
        if let Some(service) = extra {
            params.push(("service", service.to_owned()));
        }
        url(&server, "/api/dependencies", &params)
    };
    let reply = get(&window(None)).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(
        reply.json(),
        json!({"data": case["expected_links"], "total": 0, "limit": 0, "offset": 0, "errors": null})
    );
    assert_eq!(
        get(&window(Some("service-x"))).await.json()["data"],
        case["expected_links"]
    );
    assert_eq!(
        get(&window(Some("service-z"))).await.json()["data"],
        json!([])
    );
}

// ---- bad input ------------------------------------------------------------------------------

#[tokio::test]
async fn bad_parameters_get_a_clear_error_in_each_apis_shape() {
    let server = TestServer::start(&[]);

    // Native: {"error": "..."} naming the parameter.
    for (query, needle) in [
        ("min_duration=fast", "min_duration"),
        ("servce=web", "servce"),
        ("limit=0", "limit"),
        ("cursor=abc", "cursor"),
        ("attr=code%3Eabc", "code>abc"),
        ("start=2&end=1", "start"),
        ("kind=sideways", "kind"),
    ] {
        let reply = get(&server.query_url(&format!("/api/v1/search?{query}"))).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text());
        let message = reply.json()["error"]
            .as_str()
            .expect("error message")
            .to_owned();
        assert!(message.contains(needle), "{query}: {message}");
    }

    // Jaeger v1: the envelope, with the status as `code`.
    for (path, status, needle) in [
        ("/api/traces", 400, "service"),
        ("/api/traces?service=web&tags=%7Bbad", 400, "tags"),
        ("/api/traces?service=web&minDuration=10", 400, "minDuration"),
        ("/api/traces?service=web&start=soon", 400, "start"),
        ("/api/traces?service=web&tag=novalue", 400, "tag"),
        ("/api/traces/not-hex", 400, "hex"),
        (
            "/api/traces/00000000000000000000000000000abc",
            404,
            "trace not found",
        ),
        ("/api/operations", 400, "service"),
        ("/api/dependencies?endTs=later", 400, "endTs"),
    ] {
        let reply = get(&server.query_url(path)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["data"], Value::Null, "{path}");
        assert_eq!(body["errors"][0]["code"], status, "{path}");
        let message = body["errors"][0]["msg"].as_str().expect("msg");
        assert!(message.contains(needle), "{path}: {message}");
    }

    // Jaeger v3: the gateway's error object.
    for (path, status, needle) in [
        ("/api/v3/traces?query.service_name=web", 400, "required"),
        (
            "/api/v3/traces?query.start_time_min=2017-01-26T15:46:31Z&query.start_time_max=then",
            400,
            "query.start_time_max",
        ),
        (
            "/api/v3/traces?query.start_time_min=2017-01-26T15:46:31Z&query.start_time_max=2017-01-26T16:46:31Z",
            404,
            "No traces found",
        ),
        (
            "/api/v3/traces/00000000000000000000000000000abc",
            404,
            "No traces found",
        ),
        ("/api/v3/operations", 400, "service"),
    ] {
        let reply = get(&server.query_url(path)).await;
        assert_eq!(reply.status, status, "{path}: {}", reply.text());
        let body = reply.json();
        assert_eq!(body["error"]["httpCode"], status, "{path}");
        let message = body["error"]["message"].as_str().expect("message");
        assert!(message.contains(needle), "{path}: {message}");
    }
}

// ---- native search over a generated shop --------------------------------------------------

const T0: i64 = 1_767_225_600_000_000_000; // 2026-01-01T00:00:00Z
const MS: i64 = 1_000_000;

struct ShopSpan {
    id: [u8; 8],
    parent: Option<[u8; 8]>,
    service: &'static str,
    pod: String,
    name: &'static str,
    kind: i32,
    start: i64,
    end: i64,
    error: bool,
    /// (key, OTLP/JSON AnyValue)
    attributes: Vec<(&'static str, Value)>,
    event_attributes: Vec<(&'static str, Value)>,
}

struct ShopTrace {
    id: [u8; 16],
    spans: Vec<ShopSpan>,
}

impl ShopTrace {
    fn start(&self) -> i64 {
        self.spans.iter().map(|s| s.start).min().expect("spans")
    }

    /// Search order: newest start first, ties by highest id.
    fn search_order(&self) -> std::cmp::Reverse<(i64, [u8; 16])> {
        std::cmp::Reverse((self.start(), self.id))
    }

    fn root(&self) -> Option<&ShopSpan> {
        self.spans.iter().find(|s| s.parent.is_none())
    }

    /// The summary `/api/v1/search` should report.
    fn summary(&self) -> Value {
        let end = self.spans.iter().map(|s| s.end).max().expect("spans");
        let mut services: BTreeMap<&str, u64> = BTreeMap::new();
        for span in &self.spans {
            *services.entry(span.service).or_default() += 1;
        }
        let mut services: Vec<(&str, u64)> = services.into_iter().collect();
        services.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        json!({
            "trace_id": hex::encode(self.id),
            "root_service": self.root().map(|r| r.service),
            "root_operation": self.root().map(|r| r.name),
            "start_time_unix_nano": self.start().to_string(),
            "duration_ns": end - self.start(),
            "span_count": self.spans.len(),
            "error_count": self.spans.iter().filter(|s| s.error).count(),
            "services": services.iter().map(|(s, n)| json!({"service": s, "span_count": n})).collect::<Vec<_>>(),
        })
    }
}

/// 40 traces, two starting at each second: a root (`web` or `mobile`, route and status code
/// attributes, every fifth one failing) with 0 to 3 `shop` children (row counts, cache
/// hits, an event on the second child); some roots were never sent.
fn shop() -> Vec<ShopTrace> {
    (0..40u8)
        .map(|i| {
            let mut id = [0u8; 16];
            id[0] = i.wrapping_mul(53);
            id[15] = i + 1;
            let start = T0 + i64::from(i / 2) * 1_000 * MS;
            let root_id = [i + 1, 1, 0, 0, 0, 0, 0, 0];
            let children = i % 4;
            let rootless = i % 7 == 6 && children > 0;
            let failing = i % 5 == 0;
            let service = if i % 3 == 0 { "mobile" } else { "web" };
            let (name, route) = if i % 2 == 0 {
                ("GET /cart/{id}", "/cart/{id}")
            } else {
                ("POST /checkout", "/checkout")
            };
            let mut spans = Vec::new();
            if !rootless {
                spans.push(ShopSpan {
                    id: root_id,
                    parent: None,
                    service,
                    pod: format!("{service}-{}", i % 3),
                    name,
                    kind: 2,
                    start,
                    end: start + (10 + i64::from(i)) * MS,
                    error: failing,
                    attributes: vec![
                        ("http.route", json!({"stringValue": route})),
                        (
                            "http.response.status_code",
                            json!({"intValue": if failing { "503" } else { "200" }}),
                        ),
                    ],
                    event_attributes: Vec::new(),
                });
            }
            for c in 0..children {
                let offset = i64::from(c) + 1;
                spans.push(ShopSpan {
                    id: [i + 1, c + 2, 0, 0, 0, 0, 0, 0],
                    parent: Some(root_id),
                    service: "shop",
                    pod: format!("shop-{}", (i + c) % 3),
                    name: if c == 0 { "load-cart" } else { "price" },
                    kind: if c == 0 { 3 } else { 1 },
                    start: start + offset * MS,
                    end: start + 3 * offset * MS,
                    error: false,
                    attributes: vec![
                        (
                            "db.rows",
                            json!({"intValue": (i64::from(i) * 10 + i64::from(c)).to_string()}),
                        ),
                        ("cache.hit", json!({"boolValue": c % 2 == 1})),
                    ],
                    event_attributes: if c == 1 {
                        vec![("exception.type", json!({"stringValue": "Timeout"}))]
                    } else {
                        Vec::new()
                    },
                });
            }
            ShopTrace { id, spans }
        })
        .collect()
}

fn otlp_attributes(list: &[(&str, Value)]) -> Value {
    list.iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect()
}

fn shop_request(shop: &[ShopTrace]) -> Value {
    let mut resource_spans = Vec::new();
    for trace in shop {
        for span in &trace.spans {
            resource_spans.push(json!({
                "resource": {"attributes": [
                    {"key": "service.name", "value": {"stringValue": span.service}},
                    {"key": "k8s.pod.name", "value": {"stringValue": span.pod}},
                ]},
                "scopeSpans": [{"scope": {"name": "shop-lib"}, "spans": [{
                    "traceId": hex::encode(trace.id),
                    "spanId": hex::encode(span.id),
                    "parentSpanId": span.parent.map(hex::encode).unwrap_or_default(),
                    "name": span.name,
                    "kind": span.kind,
                    "startTimeUnixNano": span.start.to_string(),
                    "endTimeUnixNano": span.end.to_string(),
                    "attributes": otlp_attributes(&span.attributes),
                    "events": if span.event_attributes.is_empty() { json!([]) } else { json!([{
                        "timeUnixNano": (span.start + 1).to_string(),
                        "name": "retry",
                        "attributes": otlp_attributes(&span.event_attributes),
                    }]) },
                    "status": {"code": if span.error { 2 } else { 0 }},
                }]}],
            }));
        }
    }
    json!({ "resourceSpans": resource_spans })
}

fn int_attr(span: &ShopSpan, key: &str) -> Option<i64> {
    span.attributes
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v["intValue"].as_str())
        .map(|s| s.parse().expect("int"))
}

fn text_attr<'a>(span: &'a ShopSpan, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v["stringValue"].as_str())
}

/// Ids of the traces with a span satisfying `span` and satisfying `trace`, in the order
/// search must return them: newest start first, ties by highest id.
fn expected(
    shop: &[ShopTrace],
    span: impl Fn(&ShopSpan) -> bool,
    trace: impl Fn(&ShopTrace) -> bool,
) -> Vec<String> {
    let mut hits: Vec<&ShopTrace> = shop
        .iter()
        .filter(|t| t.spans.iter().any(&span) && trace(t))
        .collect();
    hits.sort_by_key(|t| t.search_order());
    hits.iter().map(|t| hex::encode(t.id)).collect()
}

/// Follows `next_cursor` to the end; every page but the last is full.
async fn search_all(server: &TestServer, query: &[(&str, &str)], page: usize) -> Vec<Value> {
    let mut cursor: Option<String> = None;
    let mut traces = Vec::new();
    // Bounded: the shop has 40 traces.
    for _ in 0..=40 {
        let mut params: Vec<(&str, String)> =
            query.iter().map(|(k, v)| (*k, (*v).to_owned())).collect();
        params.push(("limit", page.to_string()));
        if let Some(cursor) = &cursor {
            params.push(("cursor", cursor.clone()));
        }
        let reply = get(&url(server, "/api/v1/search", &params)).await;
        assert_eq!(reply.status, 200, "{query:?}: {}", reply.text());
        let body = reply.json();
        let batch = body["traces"].as_array().expect("traces").clone();
        assert!(batch.len() <= page, "{query:?}: page of {}", batch.len());
        let full = batch.len() == page;
        traces.extend(batch);
        match body["next_cursor"].as_str() {
            Some(next) => {
                assert!(full, "{query:?}: a cursor after a short page");
                cursor = Some(next.to_owned());
            }
            None => return traces,
        }
    }
    panic!("{query:?}: pagination did not end");
}

fn ids(traces: &[Value]) -> Vec<String> {
    traces
        .iter()
        .map(|t| t["trace_id"].as_str().expect("trace_id").to_owned())
        .collect()
}

/// Query parameters, and which spans and traces they select.
type SearchCase<'a> = (
    Vec<(&'a str, &'a str)>,
    Box<dyn Fn(&ShopSpan) -> bool>,
    Box<dyn Fn(&ShopTrace) -> bool>,
);

async fn check_search(server: &TestServer, shop: &[ShopTrace], when: &str) {
    let all = |_: &ShopTrace| true;

    // Everything, in pages of 7: each trace once, in order, with the right summary.
    let everything = search_all(server, &[], 7).await;
    assert_eq!(
        ids(&everything),
        expected(shop, |_| true, all),
        "all traces ({when})"
    );
    let summaries: Vec<Value> = everything
        .iter()
        .map(|t| {
            let mut t = t.clone();
            t.as_object_mut().expect("object").remove("start_time");
            t
        })
        .collect();
    let mut by_order: Vec<&ShopTrace> = shop.iter().collect();
    by_order.sort_by_key(|t| t.search_order());
    let model: Vec<Value> = by_order.iter().map(|t| t.summary()).collect();
    assert_eq!(summaries, model, "summaries ({when})");

    // Span conditions (all on one span) and trace conditions, each against the model.
    let window_start = T0 + 5_000 * MS;
    let window_end = T0 + 9_000 * MS;
    let start_text = window_start.to_string();
    let end_text = "2026-01-01T00:00:09Z";
    let cases: Vec<SearchCase> = vec![
        (
            vec![("service", "shop")],
            Box::new(|s| s.service == "shop"),
            Box::new(all),
        ),
        (
            vec![
                ("service", "shop"),
                ("operation", "load-cart"),
                ("kind", "client"),
            ],
            Box::new(|s| s.service == "shop" && s.name == "load-cart" && s.kind == 3),
            Box::new(all),
        ),
        (
            vec![("status", "error")],
            Box::new(|s| s.error),
            Box::new(all),
        ),
        (
            vec![("attr", "http.response.status_code>=500")],
            Box::new(|s| int_attr(s, "http.response.status_code").is_some_and(|c| c >= 500)),
            Box::new(all),
        ),
        (
            vec![("attr", "http.route=/cart/{id}")],
            Box::new(|s| text_attr(s, "http.route") == Some("/cart/{id}")),
            Box::new(all),
        ),
        (
            vec![("attr", "http.route!=/cart/{id}")],
            Box::new(|s| text_attr(s, "http.route").is_some_and(|r| r != "/cart/{id}")),
            Box::new(all),
        ),
        (
            vec![("attr", "db.rows>=200"), ("attr", "cache.hit=true")],
            Box::new(|s| {
                int_attr(s, "db.rows").is_some_and(|n| n >= 200)
                    && s.attributes
                        .iter()
                        .any(|(k, v)| *k == "cache.hit" && v["boolValue"] == true)
            }),
            Box::new(all),
        ),
        // Route and row count never sit on the same span.
        (
            vec![("attr", "http.route"), ("attr", "db.rows")],
            Box::new(|_| false),
            Box::new(all),
        ),
        (
            vec![("resource_attr", "k8s.pod.name=shop-1")],
            Box::new(|s| s.pod == "shop-1"),
            Box::new(all),
        ),
        (
            vec![("tag", "exception.type=Timeout")],
            Box::new(|s| !s.event_attributes.is_empty()),
            Box::new(all),
        ),
        (
            vec![
                ("operation", "price"),
                ("min_duration", "5ms"),
                ("max_duration", "6ms"),
            ],
            Box::new(|s| s.name == "price" && (5 * MS..=6 * MS).contains(&(s.end - s.start))),
            Box::new(all),
        ),
        (
            vec![("start", start_text.as_str()), ("end", end_text)],
            Box::new(move |s| (window_start..=window_end).contains(&s.start)),
            Box::new(all),
        ),
        (
            vec![("min_spans", "3")],
            Box::new(|_| true),
            Box::new(|t| t.spans.len() >= 3),
        ),
        (
            vec![("root_service", "mobile"), ("max_spans", "2")],
            Box::new(|_| true),
            Box::new(|t| t.root().is_some_and(|r| r.service == "mobile") && t.spans.len() <= 2),
        ),
        (
            vec![("service", "shop"), ("root_operation", "POST /checkout")],
            Box::new(|s| s.service == "shop"),
            Box::new(|t| t.root().is_some_and(|r| r.name == "POST /checkout")),
        ),
        (
            vec![
                ("min_trace_duration", "40ms"),
                ("max_trace_duration", "45ms"),
            ],
            Box::new(|_| true),
            Box::new(|t| {
                let duration = t.spans.iter().map(|s| s.end).max().expect("spans") - t.start();
                (40 * MS..=45 * MS).contains(&duration)
            }),
        ),
    ];
    for (query, span, trace) in cases {
        let want = expected(shop, span, trace);
        assert!(
            want.len() < shop.len(),
            "{query:?} must exclude something to prove anything"
        );
        let found = ids(&search_all(server, &query, 4).await);
        assert_eq!(found, want, "{query:?} ({when})");
    }
}

#[tokio::test]
async fn native_search_is_exact_and_pages_return_every_match_once() {
    let server = TestServer::start(&["--set", "collector.buffer.flush_age_secs=1"]);
    let shop = shop();
    ingest(&server, &shop_request(&shop), "shop").await;
    check_search(&server, &shop, "first read").await;
    let spans: usize = shop.iter().map(|t| t.spans.len()).sum();
    wait_for_parquet_rows(&server.data_dir, "spans", spans as u64).await;
    check_search(&server, &shop, "from parquet").await;
}

/// 300 traces of five spans each, 10 ms apart: more matching spans than the first,
/// TopK round of a search reads, with the `rare` roots among the oldest.
fn bulk() -> Vec<ShopTrace> {
    (0..300u16)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..2].copy_from_slice(&i.to_be_bytes());
            id[15] = 1;
            let start = T0 + i64::from(i) * 10 * MS;
            let [hi, lo] = i.to_be_bytes();
            let span = |n: u8, parent: Option<[u8; 8]>, name: &'static str| ShopSpan {
                id: [hi, lo, n, 1, 0, 0, 0, 0],
                parent,
                service: "bulk",
                pod: "bulk-0".into(),
                name,
                kind: if parent.is_none() { 2 } else { 1 },
                start: start + i64::from(n) * MS,
                end: start + 5 * MS,
                error: false,
                attributes: Vec::new(),
                event_attributes: Vec::new(),
            };
            let root_name = if matches!(i, 0 | 1 | 2 | 150) {
                "rare"
            } else {
                "common"
            };
            let root = span(0, None, root_name);
            let root_id = root.id;
            let mut spans = vec![root];
            spans.extend((1..5).map(|n| span(n, Some(root_id), "step")));
            ShopTrace { id, spans }
        })
        .collect()
}

async fn check_bulk_search(server: &TestServer, bulk: &[ShopTrace], when: &str) {
    let rare = search_all(server, &[("root_operation", "rare")], 1).await;
    let want = expected(
        bulk,
        |_| true,
        |t| t.root().is_some_and(|r| r.name == "rare"),
    );
    assert_eq!(want.len(), 4);
    assert_eq!(ids(&rare), want, "rare roots, one per page ({when})");
    assert!(
        search_all(server, &[("min_spans", "6")], 20)
            .await
            .is_empty()
    );
    // Later pages start below the newest spans: each is found through the full round.
    let everything = search_all(server, &[("service", "bulk")], 50).await;
    assert_eq!(
        ids(&everything),
        expected(bulk, |_| true, |_| true),
        "every page ({when})"
    );
}

#[tokio::test]
async fn search_stays_exact_beyond_the_newest_matching_spans() {
    let server = TestServer::start(&["--set", "collector.buffer.flush_age_secs=1"]);
    let bulk = bulk();
    ingest(&server, &shop_request(&bulk), "bulk").await;
    check_bulk_search(&server, &bulk, "first read").await;
    wait_for_parquet_rows(&server.data_dir, "spans", 1_500).await;
    check_bulk_search(&server, &bulk, "from parquet").await;
}
