//! `GET /api/v1/search`: the query string becomes a [`SearchRequest`], the page becomes JSON.
//!
//! | parameter | meaning |
//! | --- | --- |
//! | `start`, `end` | span start range, inclusive; RFC 3339 or unix nanoseconds (default: unbounded) |
//! | `service`, `operation` | service name, span name |
//! | `kind` | `server`, `client`, `producer`, `consumer`, `internal`, `unspecified` |
//! | `status` | `ok`, `error`, `unset` |
//! | `min_duration`, `max_duration` | span duration: `250ms`, `1.5s`, … or integer nanoseconds |
//! | `attr` (repeatable) | span attribute condition: `key`, `key=v`, `key!=v`, `key<n`, `key<=n`, `key>n`, `key>=n` |
//! | `resource_attr` (repeatable) | the same on resource attributes |
//! | `tag` (repeatable) | the same anywhere Jaeger looks: span, scope and resource attributes, event and link attributes |
//! | `scope_name`, `scope_version` | instrumentation scope |
//! | `root_service`, `root_operation` | the trace's root span |
//! | `min_trace_duration`, `max_trace_duration` | the trace's duration |
//! | `min_spans`, `max_spans` | the trace's span count |
//! | `limit` | results per page (default 20, at most 10000) |
//! | `cursor` | `next_cursor` of the previous page |
//!
//! Span conditions must all hold on one span; trace conditions on the trace. Unknown
//! parameters are refused, so a misspelt condition cannot silently widen the search.
//!
//! ```json
//! {"traces": [{"trace_id": "5b8e…", "root_service": "web", "root_operation": "GET /",
//!              "start_time": "2026-11-24T13:00:00.000000000Z",
//!              "start_time_unix_nano": "1795…", "duration_ns": 1200000, "span_count": 7,
//!              "error_count": 0, "services": [{"service": "web", "span_count": 4}, …]}],
//!  "next_cursor": "01…" | null}
//! ```
//!
//! When the answer is partial (in a cluster, a collector did not answer) the body also has
//! `"warnings": ["collector c2 did not answer (…): …"]`, as does the `x-weft-warnings` header.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{Value, json};

use super::params::{Params, parse_duration, parse_time};
use super::{
    AttributeCondition, AttributeScope, Cursor, DEFAULT_LIMIT, SearchPage, SearchRequest, SpanKind,
    SpanStatus, TraceSummary, search,
};
use crate::{Error, QueryService, Result};

const PARAMETERS: [&str; 21] = [
    "start",
    "end",
    "service",
    "operation",
    "kind",
    "status",
    "min_duration",
    "max_duration",
    "attr",
    "resource_attr",
    "tag",
    "scope_name",
    "scope_version",
    "root_service",
    "root_operation",
    "min_trace_duration",
    "max_trace_duration",
    "min_spans",
    "max_spans",
    "limit",
    "cursor",
];

pub(super) fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/search", get(handle))
        .with_state(service)
}

async fn handle(
    State(service): State<Arc<QueryService>>,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Json<Value>> {
    let Query(pairs) = query
        .map_err(|e| Error::BadRequest(format!("malformed query string: {}", e.body_text())))?;
    let request = request_from(&Params(pairs))?;
    let page = search(&service, &request).await?;
    let mut body = page_json(&page);
    let warnings = crate::warnings::current();
    if !warnings.is_empty() {
        body["warnings"] = json!(warnings);
    }
    Ok(Json(body))
}

pub(crate) fn request_from(params: &Params) -> Result<SearchRequest> {
    params.reject_unknown(&PARAMETERS)?;
    let text = |name| params.one(name).map(|v| v.map(str::to_owned));
    let time = |name| params.one(name)?.map(|v| parse_time(name, v)).transpose();
    let duration = |name| {
        params
            .one(name)?
            .map(|v| parse_duration(name, v))
            .transpose()
    };
    let count = |name| params.one(name)?.map(|v| parse_count(name, v)).transpose();

    let mut request = SearchRequest::default();
    let spans = &mut request.spans;
    spans.start_min_ns = time("start")?;
    spans.start_max_ns = time("end")?;
    spans.service = text("service")?;
    spans.operation = text("operation")?;
    spans.kind = params
        .one("kind")?
        .map(|v| {
            SpanKind::parse(v).ok_or_else(|| {
                Error::BadRequest(format!(
                    "kind {v:?} is not one of unspecified, internal, server, client, producer, consumer"
                ))
            })
        })
        .transpose()?;
    spans.status = params
        .one("status")?
        .map(|v| {
            SpanStatus::parse(v).ok_or_else(|| {
                Error::BadRequest(format!("status {v:?} is not one of ok, error, unset"))
            })
        })
        .transpose()?;
    spans.min_duration_ns = duration("min_duration")?;
    spans.max_duration_ns = duration("max_duration")?;
    spans.scope_name = text("scope_name")?;
    spans.scope_version = text("scope_version")?;
    for (name, scope) in [
        ("attr", AttributeScope::Span),
        ("resource_attr", AttributeScope::Resource),
        ("tag", AttributeScope::Anywhere),
    ] {
        for condition in params.all(name) {
            spans
                .attributes
                .push(AttributeCondition::parse(scope, condition)?);
        }
    }

    let traces = &mut request.traces;
    traces.root_service = text("root_service")?;
    traces.root_operation = text("root_operation")?;
    traces.min_duration_ns = duration("min_trace_duration")?;
    traces.max_duration_ns = duration("max_trace_duration")?;
    traces.min_spans = count("min_spans")?;
    traces.max_spans = count("max_spans")?;

    request.limit = match count("limit")? {
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX),
        None => DEFAULT_LIMIT,
    };
    request.cursor = params.one("cursor")?.map(Cursor::decode).transpose()?;
    Ok(request)
}

fn parse_count(name: &str, text: &str) -> Result<u64> {
    text.trim()
        .parse()
        .map_err(|_| Error::BadRequest(format!("{name}: {text:?} is not a non-negative integer")))
}

fn page_json(page: &SearchPage) -> Value {
    json!({
        "traces": page.traces.iter().map(trace_json).collect::<Vec<_>>(),
        "next_cursor": page.next_cursor.map(|c| c.encode()),
    })
}

fn trace_json(trace: &TraceSummary) -> Value {
    let root = trace.root.as_ref();
    json!({
        "trace_id": hex::encode(trace.trace_id),
        "root_service": root.map(|r| r.service.as_str()),
        "root_operation": root.map(|r| r.operation.as_str()),
        "start_time": super::params::format_rfc3339(trace.start_ns),
        // A string, as in OTLP/JSON: nanosecond timestamps exceed JavaScript's safe integers.
        "start_time_unix_nano": trace.start_ns.to_string(),
        "duration_ns": trace.duration_ns,
        "span_count": trace.span_count,
        "error_count": trace.error_count,
        "services": trace.services.iter().map(|(service, spans)| json!({
            "service": service,
            "span_count": spans,
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{AttributeOp, RootSpan};

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    #[test]
    fn every_parameter_lands_in_the_request() {
        let request = request_from(&params(&[
            ("start", "2017-01-26T15:46:31Z"),
            ("end", "1485449191000000000"),
            ("service", "web"),
            ("operation", "GET /"),
            ("kind", "server"),
            ("status", "error"),
            ("min_duration", "1ms"),
            ("max_duration", "2s"),
            ("attr", "http.route=/x"),
            ("attr", "retries"),
            ("resource_attr", "k8s.pod.name=web-1"),
            ("tag", "error=true"),
            ("scope_name", "lib"),
            ("scope_version", "1.0"),
            ("root_service", "gw"),
            ("root_operation", "main"),
            ("min_trace_duration", "5ms"),
            ("max_trace_duration", "10s"),
            ("min_spans", "2"),
            ("max_spans", "900"),
            ("limit", "7"),
            (
                "cursor",
                &Cursor {
                    start_ns: 5,
                    trace_id: [1; 16],
                }
                .encode(),
            ),
        ]))
        .unwrap();
        let s = &request.spans;
        assert_eq!(s.start_min_ns, Some(1_485_445_591_000_000_000));
        assert_eq!(s.start_max_ns, Some(1_485_449_191_000_000_000));
        assert_eq!(s.kind, Some(SpanKind::Server));
        assert_eq!(s.status, Some(SpanStatus::Error));
        assert_eq!(
            (s.min_duration_ns, s.max_duration_ns),
            (Some(1_000_000), Some(2_000_000_000))
        );
        assert_eq!(s.attributes.len(), 4);
        assert_eq!(s.attributes[1].op, AttributeOp::Exists);
        assert_eq!(s.attributes[2].scope, AttributeScope::Resource);
        assert_eq!(s.attributes[3].scope, AttributeScope::Anywhere);
        assert_eq!(s.scope_version.as_deref(), Some("1.0"));
        let t = &request.traces;
        assert_eq!(t.root_service.as_deref(), Some("gw"));
        assert_eq!((t.min_spans, t.max_spans), (Some(2), Some(900)));
        assert_eq!(t.max_duration_ns, Some(10_000_000_000));
        assert_eq!(request.limit, 7);
        assert_eq!(request.cursor.map(|c| c.start_ns), Some(5));
    }

    #[test]
    fn bad_parameters_are_refused_with_their_name() {
        for (query, needle) in [
            (vec![("servce", "x")], "servce"),
            (vec![("kind", "sideways")], "kind"),
            (vec![("status", "fine")], "status"),
            (vec![("min_duration", "fast")], "min_duration"),
            (vec![("start", "yesterday")], "start"),
            (vec![("limit", "-1")], "limit"),
            (vec![("min_spans", "many")], "min_spans"),
            (vec![("cursor", "abc")], "cursor"),
            (vec![("attr", "k>x")], "k>x"),
            (vec![("service", "a"), ("service", "b")], "service"),
        ] {
            match request_from(&params(&query)) {
                Err(Error::BadRequest(message)) => {
                    assert!(message.contains(needle), "{query:?}: {message}")
                }
                other => panic!("{query:?} must be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn pages_render_as_documented() {
        let page = SearchPage {
            traces: vec![TraceSummary {
                trace_id: [0xab; 16],
                root: Some(RootSpan {
                    service: "web".into(),
                    operation: "GET /".into(),
                }),
                start_ns: 1_485_445_591_639_875_000,
                duration_ns: 42,
                span_count: 3,
                error_count: 1,
                services: vec![("web".into(), 2), ("db".into(), 1)],
            }],
            next_cursor: None,
        };
        assert_eq!(
            page_json(&page),
            json!({
                "traces": [{
                    "trace_id": "abababababababababababababababab",
                    "root_service": "web",
                    "root_operation": "GET /",
                    "start_time": "2017-01-26T15:46:31.639875000Z",
                    "start_time_unix_nano": "1485445591639875000",
                    "duration_ns": 42,
                    "span_count": 3,
                    "error_count": 1,
                    "services": [
                        {"service": "web", "span_count": 2},
                        {"service": "db", "span_count": 1},
                    ],
                }],
                "next_cursor": null,
            })
        );
    }
}
