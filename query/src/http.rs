//! HTTP API of the query service: `POST /api/v1/sql` and `GET /api/v1/traces/{trace_id}`,
//! plus the routers of search, graph, latency, metrics and Jaeger.
//!
//! Every answer whose data is partial (in a cluster: a collector did not answer) carries the
//! header `x-weft-warnings` (see [`crate::warnings`]); bodies stay as they are, except
//! search (`warnings`) and Jaeger v1 (`errors`), whose shapes have a place for them.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{HeaderMap, HeaderValue, header};
use serde::Deserialize;

use arrow::array::RecordBatch;
use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt;

use crate::{Error, QueryService, SqlResult, TraceRows, parse_trace_id};

/// Arrow IPC stream media type.
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

pub fn router(service: Arc<QueryService>) -> Router {
    let sql_limit = service.config().max_sql_bytes;
    Router::new()
        .route(
            "/api/v1/sql",
            post(sql).layer(DefaultBodyLimit::max(sql_limit)),
        )
        .route("/api/v1/traces/{trace_id}", get(trace))
        .route("/api/v1/status/incidents", get(incidents))
        .route("/api/v1/status/storage", get(storage_status))
        .route(
            "/api/v1/status/incidents/{id}/ack",
            post(acknowledge_incident),
        )
        .with_state(std::sync::Arc::clone(&service))
        .merge(crate::search::router(std::sync::Arc::clone(&service)))
        .merge(crate::graph::router(std::sync::Arc::clone(&service)))
        .merge(crate::latency::router(std::sync::Arc::clone(&service)))
        .merge(crate::metrics::router(std::sync::Arc::clone(&service)))
        .merge(crate::jaeger::router(std::sync::Arc::clone(&service)))
        // Every answer of every endpoint carries `x-weft-warnings` when it is partial.
        .layer(axum::middleware::from_fn(crate::warnings::layer))
        // Outermost: the whole handler (warnings scope included) runs on the query runtime.
        .layer(axum::middleware::from_fn_with_state(service, bulkhead))
}

/// Runs the request's handler in the query bulkhead ([`crate::bulkhead`]): on the query
/// runtime, once a slot is free (else 503), answered with 408 at the time limit.
async fn bulkhead(
    State(service): State<Arc<QueryService>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let handler = async move { Ok(next.run(request).await) };
    match service.bulkhead().run(handler).await {
        Ok(response) => response,
        Err(e) => e.into_response(),
    }
}

/// `GET /api/v1/status/incidents`: damage found in this node's stored data (WAL corruption,
/// quarantined Parquet files), oldest first, acknowledged or not. A cluster's incidents are
/// kept by each collector node (`<data_dir>/incidents.jsonl`): empty here.
async fn incidents(State(service): State<Arc<QueryService>>) -> Response {
    let list = match service.source() {
        crate::DataSource::Local(collector) => collector.incidents().list(),
        crate::DataSource::Cluster(_) => Vec::new(),
    };
    let unacknowledged = list.iter().filter(|i| !i.acknowledged).count();
    Json(serde_json::json!({ "incidents": list, "unacknowledged": unacknowledged })).into_response()
}

/// `GET /api/v1/status/storage`: where files live and what is kept. On one node: the
/// storage URL and prefix, per table its committed files, rows, bytes and oldest hour, and
/// the retention applied (hours per table, delete grace). In a cluster each collector
/// applies its own retention; this shows the storage URL.
async fn storage_status(State(service): State<Arc<QueryService>>) -> Response {
    let hours = |keep: Option<std::time::Duration>| keep.map_or(0, |k| k.as_secs() / 3600);
    let body = match service.source() {
        crate::DataSource::Local(store) => {
            let mut tables = serde_json::Map::new();
            for table in weft_schemas::Table::ALL {
                let (files, rows, bytes, oldest) = store.table_stats(table);
                tables.insert(
                    table.name().to_owned(),
                    serde_json::json!({
                        "files": files,
                        "rows": rows,
                        "bytes": bytes,
                        "oldest_time_ns": oldest,
                    }),
                );
            }
            let retention = store.retention().map(|(r, grace)| {
                serde_json::json!({
                    "spans_hours": hours(r.keep(weft_schemas::Table::Spans)),
                    "metrics_hours": hours(r.keep(weft_schemas::Table::Metrics)),
                    "delete_grace_secs": grace.as_secs(),
                })
            });
            serde_json::json!({
                "url": store.objects().url(),
                "prefix": store.prefix(),
                "tables": tables,
                "retention": retention,
                "rollups": {
                    "keep_1m_hours": service.config().rollups.keep_1m_hours,
                    "keep_1h_hours": service.config().rollups.keep_1h_hours,
                },
            })
        }
        crate::DataSource::Cluster(cluster) => serde_json::json!({
            "url": cluster.objects().url(),
            "rollups": {
                "keep_1m_hours": service.config().rollups.keep_1m_hours,
                "keep_1h_hours": service.config().rollups.keep_1h_hours,
            },
        }),
    };
    Json(body).into_response()
}

/// `POST /api/v1/status/incidents/{id}/ack`: an operator has seen it; query answers stop
/// warning about it.
async fn acknowledge_incident(
    State(service): State<Arc<QueryService>>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    let id: u64 = id
        .parse()
        .map_err(|_| Error::BadRequest(format!("incident id {id:?} is not a number")))?;
    let crate::DataSource::Local(collector) = service.source() else {
        return Err(Error::NotFound(format!("no incident {id} on this node")));
    };
    match collector.incidents().acknowledge(id) {
        Ok(true) => Ok(Json(serde_json::json!({ "acknowledged": id })).into_response()),
        Ok(false) => Err(Error::NotFound(format!("no incident {id}"))),
        Err(e) => Err(Error::Execution(e.to_string())),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SqlRequest {
    sql: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Json,
    Arrow,
    Csv,
}

fn output_format(headers: &HeaderMap) -> Result<Output, Error> {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("*/*");
    for candidate in accept.split(',') {
        let media = candidate.split(';').next().unwrap_or("").trim();
        match media {
            "*/*" | "application/*" | "application/json" => return Ok(Output::Json),
            ARROW_STREAM => return Ok(Output::Arrow),
            "text/csv" | "text/*" => return Ok(Output::Csv),
            _ => {}
        }
    }
    Err(Error::NotAcceptable(format!(
        "cannot produce {accept:?}: use application/json, {ARROW_STREAM} or text/csv"
    )))
}

async fn sql(
    State(service): State<Arc<QueryService>>,
    headers: HeaderMap,
    body: Result<Json<SqlRequest>, JsonRejection>,
) -> Result<Response, Error> {
    let Json(request) = body.map_err(|e| {
        Error::BadRequest(format!(
            "expected a json body {{\"sql\": \"...\"}}: {}",
            e.body_text()
        ))
    })?;
    let output = output_format(&headers)?;
    let result = service.sql(&request.sql).await?;
    let (content_type, bytes) = encode(&result, output)?;
    let mut response = ([(header::CONTENT_TYPE, content_type)], bytes).into_response();
    let rows: usize = result.batches.iter().map(|b| b.num_rows()).sum();
    let headers = response.headers_mut();
    headers.insert("x-weft-rows", HeaderValue::from(rows));
    if result.truncated {
        headers.insert("x-weft-truncated", HeaderValue::from_static("true"));
    }
    headers.insert(COLUMNS_HEADER, columns_header(&result.schema));
    Ok(response)
}

/// The result schema of every SQL answer, whatever the format: JSON rows drop columns that
/// are all null and do not keep column order, so clients that show tables read it here.
pub const COLUMNS_HEADER: &str = "x-weft-columns";

/// `[{"name": …, "type": …}]` (Arrow's type display) as JSON, percent-encoded so any
/// column name fits in a header (`decodeURIComponent` in a browser undoes it).
fn columns_header(schema: &arrow::datatypes::Schema) -> HeaderValue {
    let columns: Vec<serde_json::Value> = schema
        .fields()
        .iter()
        .map(|f| serde_json::json!({ "name": f.name(), "type": f.data_type().to_string() }))
        .collect();
    let json = serde_json::Value::Array(columns).to_string();
    let mut encoded = String::with_capacity(json.len() * 2);
    for byte in json.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    // Only unreserved ASCII and `%XX` remain: always a valid header value.
    HeaderValue::from_str(&encoded).unwrap_or_else(|_| HeaderValue::from_static("%5B%5D"))
}

fn encode(result: &SqlResult, output: Output) -> Result<(&'static str, Vec<u8>), Error> {
    let batches: Vec<&arrow::array::RecordBatch> = result.batches.iter().collect();
    match output {
        Output::Json => {
            let mut writer = arrow::json::ArrayWriter::new(Vec::new());
            writer
                .write_batches(&batches)
                .and_then(|_| writer.finish())
                .map_err(|e| Error::Execution(format!("json encoding: {e}")))?;
            let mut bytes = writer.into_inner();
            if bytes.is_empty() {
                bytes = b"[]".to_vec();
            }
            Ok(("application/json", bytes))
        }
        Output::Arrow => {
            let mut writer = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &result.schema)
                .map_err(|e| Error::Execution(format!("arrow encoding: {e}")))?;
            for batch in batches {
                writer
                    .write(batch)
                    .map_err(|e| Error::Execution(format!("arrow encoding: {e}")))?;
            }
            writer
                .finish()
                .map_err(|e| Error::Execution(format!("arrow encoding: {e}")))?;
            let bytes = writer
                .into_inner()
                .map_err(|e| Error::Execution(format!("arrow encoding: {e}")))?;
            Ok((ARROW_STREAM, bytes))
        }
        Output::Csv => {
            let mut writer = arrow::csv::Writer::new(Vec::new());
            for batch in batches {
                writer.write(batch).map_err(|e| {
                    Error::NotAcceptable(format!(
                        "csv cannot hold this result ({e}); select scalar columns or use json"
                    ))
                })?;
            }
            Ok(("text/csv", writer.into_inner()))
        }
    }
}

async fn trace(
    State(service): State<Arc<QueryService>>,
    Path(trace_id): Path<String>,
) -> Result<Response, Error> {
    let id = parse_trace_id(&trace_id)?;
    let Some(rows) = service.trace_rows(id).await? else {
        return Err(Error::NotFound(format!("trace {trace_id} not found")));
    };
    let span_count = rows.span_count();
    let (order, mut response) = match rows {
        TraceRows::Complete(batches) => {
            let resource_spans = weft_schemas::spans::to_otlp(&batches)?;
            let body = weft_schemas::otlp_json::encode_resource_spans(&resource_spans);
            ("start_time", Json(body).into_response())
        }
        TraceRows::Streaming { head, rest, .. } => {
            let body = Body::from_stream(on_query_runtime(otlp_json_stream(head, rest)));
            let response = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
            ("storage", response)
        }
    };
    let headers = response.headers_mut();
    headers.insert("x-weft-span-count", HeaderValue::from(span_count));
    headers.insert("x-weft-span-order", HeaderValue::from_static(order));
    Ok(response)
}

/// Polls `stream` on the query runtime (this handler runs there) and hands its items over a
/// small channel: the response body is written by the connection's task on the main
/// runtime, where decoding Parquet must not happen. The producer keeps the query's slot
/// and stops when the client goes away.
fn on_query_runtime<S>(stream: S) -> impl futures::Stream<Item = Result<Bytes, Error>> + Send
where
    S: futures::Stream<Item = Result<Bytes, Error>> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let slot = crate::bulkhead::Bulkhead::current_slot();
    tokio::spawn(async move {
        let _slot = slot;
        futures::pin_mut!(stream);
        while let Some(item) = stream.next().await {
            if tx.send(item).await.is_err() {
                break;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    })
}

/// `{"resourceSpans":[...]}` written batch by batch: each batch becomes its own
/// resourceSpans entries (a resource may repeat, which OTLP allows), so memory holds one
/// batch at a time however large the trace is.
fn otlp_json_stream(
    head: Vec<RecordBatch>,
    rest: datafusion::execution::SendableRecordBatchStream,
) -> impl futures::Stream<Item = Result<Bytes, Error>> + Send {
    let batches = futures::stream::iter(head.into_iter().map(Ok))
        .chain(rest.map(|batch| batch.map_err(Error::from)));
    // `wrote_any` decides the separators: empty batches must not leave a stray comma.
    let entries = batches.scan(false, |wrote_any, batch| {
        let chunk = (|| {
            let batch = batch?;
            let resource_spans = weft_schemas::spans::to_otlp(std::slice::from_ref(&batch))?;
            let encoded = weft_schemas::otlp_json::encode_resource_spans(&resource_spans);
            let mut out = Vec::new();
            for entry in encoded["resourceSpans"].as_array().into_iter().flatten() {
                if *wrote_any {
                    out.push(b',');
                }
                *wrote_any = true;
                serde_json::to_writer(&mut out, entry)
                    .map_err(|e| Error::Execution(format!("json encoding: {e}")))?;
            }
            Ok(Bytes::from(out))
        })();
        futures::future::ready(Some(chunk))
    });
    futures::stream::once(async { Ok(Bytes::from_static(b"{\"resourceSpans\":[")) })
        .chain(entries)
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"]}"))
        }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn decode(text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                out.push(u8::from_str_radix(&text[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(bytes[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn columns_header_lists_every_column_in_order_with_its_type() {
        let schema = Schema::new(vec![
            Field::new("zeta", DataType::Utf8, true),
            Field::new("all null", DataType::Int64, true),
            Field::new(
                "time",
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                false,
            ),
            Field::new("naïve \"quoted\", 100%", DataType::Float64, true),
        ]);
        let value = columns_header(&schema);
        let text = value.to_str().unwrap();
        assert!(
            text.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~%".contains(&b)),
            "{text}"
        );
        let columns: serde_json::Value = serde_json::from_str(&decode(text)).unwrap();
        assert_eq!(
            columns,
            serde_json::json!([
                {"name": "zeta", "type": "Utf8"},
                {"name": "all null", "type": "Int64"},
                {"name": "time", "type": DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())).to_string()},
                {"name": "naïve \"quoted\", 100%", "type": "Float64"},
            ])
        );
    }

    #[test]
    fn empty_schema_gives_an_empty_list() {
        let value = columns_header(&Schema::empty());
        assert_eq!(value.to_str().unwrap(), "%5B%5D");
    }

    /// Every answer — JSON, CSV, Arrow — carries the columns, including one that is all
    /// null (absent from the JSON rows), in select order.
    #[tokio::test]
    async fn sql_answers_carry_the_result_columns() {
        let dir = tempfile::tempdir().unwrap();
        let collector = weft_collector::Collector::open(weft_collector::CollectorConfig {
            data_dir: dir.path().to_path_buf(),
            ..Default::default()
        })
        .unwrap();
        let service = Arc::new(
            QueryService::new(
                std::sync::Arc::clone(collector.store()),
                crate::QueryConfig::default(),
            )
            .unwrap(),
        );
        for accept in ["application/json", "text/csv", ARROW_STREAM] {
            let mut headers = HeaderMap::new();
            headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
            let request = SqlRequest {
                sql: "SELECT 2 AS b, CAST(NULL AS DOUBLE) AS nothing, 'x' AS a".into(),
            };
            let response = sql(
                State(std::sync::Arc::clone(&service)),
                headers,
                Ok(Json(request)),
            )
            .await
            .unwrap();
            let value = response.headers().get(COLUMNS_HEADER).expect(accept);
            let columns: serde_json::Value =
                serde_json::from_str(&decode(value.to_str().unwrap())).unwrap();
            assert_eq!(
                columns,
                serde_json::json!([
                    {"name": "b", "type": "Int64"},
                    {"name": "nothing", "type": "Float64"},
                    {"name": "a", "type": "Utf8"},
                ]),
                "{accept}"
            );
        }
    }
}

/// The host names the query port answers to: a defence against DNS rebinding, where a web
/// page on another origin points its own DNS name at 127.0.0.1 and reads the local API.
/// A browser always sends the name it resolved in `Host` (`:authority` in HTTP/2), so
/// answering only names the operator chose keeps such pages out.
///
/// Always allowed: `localhost`, `*.localhost` and IP literals (a page whose origin is an IP
/// address is served by that address, so it is not a rebinding). Requests without a host
/// (HTTP/1.0 tools) are allowed: browsers always send one.
#[derive(Debug, Clone, Default)]
pub struct AllowedHosts {
    any: bool,
    exact: Vec<String>,
    /// Suffixes starting with `.`: `.example.com` allows `a.example.com`.
    suffixes: Vec<String>,
}

impl AllowedHosts {
    /// From `query.allowed_hosts`.
    pub fn new(configured: &[String]) -> Self {
        let mut allowed = Self::default();
        for name in configured {
            let name = name.trim().trim_end_matches('.').to_ascii_lowercase();
            if name == "*" {
                allowed.any = true;
            } else if let Some(domain) = name.strip_prefix("*.") {
                allowed.suffixes.push(format!(".{domain}"));
            } else if name.starts_with('.') {
                allowed.suffixes.push(name);
            } else if !name.is_empty() {
                allowed.exact.push(name);
            }
        }
        allowed
    }

    /// Whether a request naming `authority` (`host` or `host:port`) is answered.
    pub fn allows(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host_of(authority)
            .trim_end_matches('.')
            .to_ascii_lowercase();
        if host.parse::<std::net::IpAddr>().is_ok()
            || host == "localhost"
            || host.ends_with(".localhost")
        {
            return true;
        }
        self.exact.contains(&host) || self.suffixes.iter().any(|s| host.ends_with(s.as_str()))
    }
}

/// `host:port` -> `host`; `[::1]:3200` -> `::1`.
fn host_of(authority: &str) -> &str {
    let authority = authority.trim();
    if let Some(rest) = authority.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if port.bytes().all(|b| b.is_ascii_digit()) => host,
        _ => authority,
    }
}

/// Middleware: 403 for a request whose `Host` (or HTTP/2 authority) is not allowed.
pub async fn host_guard(
    State(allowed): State<Arc<AllowedHosts>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let authority = request
        .headers()
        .get(header::HOST)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    match authority {
        Some(name) if !allowed.allows(name) => (
            http::StatusCode::FORBIDDEN,
            format!(
                "host {name:?} is not allowed on this port; add it to query.allowed_hosts \
                 (a defence against DNS rebinding)\n"
            ),
        )
            .into_response(),
        _ => next.run(request).await,
    }
}

/// Wraps a router (API, viewer, health) in [`host_guard`] with `query.allowed_hosts`.
pub fn guard_hosts(router: Router, configured: &[String]) -> Router {
    let allowed = Arc::new(AllowedHosts::new(configured));
    router.layer(axum::middleware::from_fn_with_state(allowed, host_guard))
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn loopback_names_and_ip_literals_are_allowed_by_default() {
        let allowed = AllowedHosts::new(&[]);
        for host in [
            "localhost",
            "LOCALHOST:3200",
            "localhost.",
            "app.localhost:80",
            "127.0.0.1",
            "127.0.0.1:3200",
            "10.1.2.3:3200",
            "[::1]:3200",
            "[::1]",
        ] {
            assert!(allowed.allows(host), "{host}");
        }
        for host in [
            "evil.example",
            "evil.example:3200",
            "localhost.evil.example",
            "127.0.0.1.nip.io:3200",
            "",
            "\u{fffd}",
        ] {
            assert!(!allowed.allows(host), "{host}");
        }
    }

    #[test]
    fn configured_names_and_suffixes() {
        let allowed = AllowedHosts::new(&[
            "Weft.Example.com".to_owned(),
            ".internal".to_owned(),
            "*.corp.example".to_owned(),
        ]);
        assert!(allowed.allows("weft.example.com:3200"));
        assert!(allowed.allows("query-1.internal"));
        assert!(allowed.allows("a.b.corp.example"));
        assert!(!allowed.allows("example.com"));
        assert!(!allowed.allows("weft.example.com.evil"));
        assert!(!allowed.allows("corp.example.evil"));
        assert!(AllowedHosts::new(&["*".to_owned()]).allows("anything.at.all"));
    }
}
