//! Jaeger-compatible HTTP API, at the root of the query port, so Grafana's Jaeger data source
//! and the Jaeger UI work with base URL `http://host:3200`.
//!
//! ```text
//!  v1 (Jaeger UI, Grafana)               v3 (Jaeger's api_v3 HTTP gateway)
//!  GET /api/services                     GET /api/v3/services
//!  GET /api/services/{service}/operations GET /api/v3/operations?service=&span_kind=
//!  GET /api/operations?service=&spanKind= GET /api/v3/traces?query.service_name=&…
//!  GET /api/traces?service=&tags=&…       GET /api/v3/traces/{trace_id}
//!  GET /api/traces/{id}
//!  GET /api/dependencies?endTs=&lookback=  ─▶ graph::jaeger_dependency_links
//!        │                                       │
//!        └──── query string ─▶ search::SearchRequest (tags by Jaeger's rules: tag_conditions)
//!                    ▼
//!        search::search ─▶ search::trace_spans ─▶ spans::to_otlp ─┬▶ model::trace ─▶ v1 JSON
//!                                                                └▶ OTLP/JSON ─────▶ v3 JSON
//! ```
//!
//! Search semantics are those of Jaeger's storage conformance suite (its in-memory store):
//! service, operation, time range, duration range and every tag must hold on one span; a
//! tag matches the span's, its scope's or its resource's attributes, or those of one of its
//! events or links, compared as text. Replies are not adjusted (no clock-skew correction or
//! span de-duplication), as with Jaeger's raw traces.

mod model;
pub(crate) mod v1;
pub(crate) mod v3;

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int8Type};
use axum::Router;
use axum::routing::get;
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use weft_schemas::Table;
use weft_schemas::columns::{KIND, SERVICE_NAME, SPAN_NAME};

use crate::search::{
    self, AttributeCondition, AttributeOp, AttributeScope, AttributeValue, SearchRequest,
    SpanConditions, SpanKind, SpanStatus,
};
use crate::{Error, QueryService, Result};

pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/services", get(v1::services))
        .route(
            "/api/services/{service}/operations",
            get(v1::service_operations),
        )
        .route("/api/operations", get(v1::operations))
        .route("/api/traces", get(v1::find_traces))
        .route("/api/traces/{trace_id}", get(v1::trace))
        .route("/api/dependencies", get(v1::dependencies))
        .route("/api/v3/services", get(v3::services))
        .route("/api/v3/operations", get(v3::operations))
        .route("/api/v3/traces", get(v3::find_traces))
        .route("/api/v3/traces/{trace_id}", get(v3::trace))
        .with_state(service)
}

/// Every service name ever stored, sorted.
async fn service_names(service: &QueryService) -> Result<Vec<String>> {
    search::within_time_limit(service, async {
        let batches = service
            .session()?
            .table(Table::Spans.name())
            .await?
            .select(vec![col(SERVICE_NAME)])?
            .distinct()?
            .collect()
            .await?;
        let mut names = Vec::new();
        for batch in &batches {
            let column = utf8(batch, 0)?;
            names.extend(
                column
                    .as_string::<i32>()
                    .iter()
                    .flatten()
                    .map(str::to_owned),
            );
        }
        names.sort_unstable();
        names.dedup();
        Ok(names)
    })
    .await
}

/// (span name, kind) pairs of a service, optionally of one kind, sorted.
async fn operations(
    service: &QueryService,
    service_name: &str,
    kind: Option<SpanKind>,
) -> Result<Vec<(String, SpanKind)>> {
    search::within_time_limit(service, async {
        let mut spans = service
            .session()?
            .table(Table::Spans.name())
            .await?
            .filter(col(SERVICE_NAME).eq(lit(service_name)))?;
        if let Some(kind) = kind {
            spans = spans.filter(col(KIND).eq(lit(ScalarValue::Int8(Some(kind.code())))))?;
        }
        let batches = spans
            .select(vec![col(SPAN_NAME), col(KIND)])?
            .distinct()?
            .collect()
            .await?;
        let mut operations = Vec::new();
        for batch in &batches {
            let names = utf8(batch, 0)?;
            let kinds = batch.column(1).as_primitive::<Int8Type>();
            for (name, kind) in names.as_string::<i32>().iter().zip(kinds.iter()) {
                if let (Some(name), Some(kind)) = (name, kind.and_then(SpanKind::from_code)) {
                    operations.push((name.to_owned(), kind));
                }
            }
        }
        operations.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(a.1.code().cmp(&b.1.code())));
        operations.dedup();
        Ok(operations)
    })
    .await
}

/// Column `index` as plain strings (stored dictionary-encoded).
fn utf8(batch: &RecordBatch, index: usize) -> Result<arrow::array::ArrayRef> {
    arrow::compute::cast(batch.column(index), &DataType::Utf8)
        .map_err(|e| Error::Execution(format!("string column: {e}")))
}

/// A trace id as Jaeger reads one (`model.TraceIDFromString`): 1 to 32 hex digits, the
/// missing high digits zero.
fn parse_trace_id(text: &str) -> Result<[u8; 16]> {
    let text = text.trim();
    if text.is_empty() || text.len() > 32 {
        return Err(Error::BadRequest(format!(
            "trace id {text:?} must be 1 to 32 hex digits"
        )));
    }
    let padded = format!("{text:0>32}");
    let mut id = [0u8; 16];
    hex::decode_to_slice(&padded, &mut id)
        .map_err(|_| Error::BadRequest(format!("trace id {text:?} is not hex")))?;
    Ok(id)
}

/// Tags from Jaeger's JSON form (`{"http.status_code":"500"}`). Jaeger reads string values
/// only; numbers and booleans are taken too, as their JSON text.
fn parse_tags_json(name: &str, text: &str, into: &mut BTreeMap<String, String>) -> Result<()> {
    Ok(crate::params::jaeger::tags_json(name, text, into)?)
}

/// Adds Jaeger tags to span conditions, with the meaning Jaeger's storage gives them:
///
/// | tag | condition |
/// | --- | --- |
/// | `error=true` / `false` | status ERROR / OK |
/// | `span.status`, `otel.status_code` = `ok` / `error` / other | status OK / ERROR / UNSET |
/// | `span.kind` | span kind (an unknown name: unspecified) |
/// | `scope.name`, `otel.scope.name`; `scope.version`, `otel.scope.version` | instrumentation scope |
/// | `resource.<key>` | resource attribute `<key>` equals the value |
/// | anything else | equals the value anywhere Jaeger looks (span, scope, resource, events, links) |
///
/// The `otel.*` spellings are the tags Jaeger shows for those fields, so a tag clicked in
/// the UI finds its span. Returns `false` when two tags contradict each other (nothing can
/// match).
fn tag_conditions(tags: &BTreeMap<String, String>, spans: &mut SpanConditions) -> Result<bool> {
    let mut consistent = true;
    for (key, value) in tags {
        match key.as_str() {
            "error" => {
                let error = parse_go_bool(value).ok_or_else(|| {
                    Error::BadRequest(format!("tag 'error' must be true or false, not {value:?}"))
                })?;
                let status = if error {
                    SpanStatus::Error
                } else {
                    SpanStatus::Ok
                };
                require(&mut spans.status, status, &mut consistent);
            }
            "span.status" | "otel.status_code" => {
                let status = SpanStatus::parse(value).unwrap_or(SpanStatus::Unset);
                require(&mut spans.status, status, &mut consistent);
            }
            "span.kind" => {
                let kind = SpanKind::parse(value).unwrap_or(SpanKind::Unspecified);
                require(&mut spans.kind, kind, &mut consistent);
            }
            "scope.name" | "otel.scope.name" => {
                require(&mut spans.scope_name, value.clone(), &mut consistent);
            }
            "scope.version" | "otel.scope.version" => {
                require(&mut spans.scope_version, value.clone(), &mut consistent);
            }
            _ => {
                let (scope, key) = match key.strip_prefix("resource.") {
                    Some(resource_key) => (AttributeScope::Resource, resource_key),
                    None => (AttributeScope::Anywhere, key.as_str()),
                };
                spans.attributes.push(AttributeCondition::new(
                    scope,
                    key,
                    AttributeOp::Eq(AttributeValue::Text(value.clone())),
                ));
            }
        }
    }
    Ok(consistent)
}

/// Sets a single-valued condition; a second, different value makes the search unsatisfiable.
fn require<T: PartialEq>(slot: &mut Option<T>, value: T, consistent: &mut bool) {
    match slot {
        Some(existing) if *existing != value => *consistent = false,
        _ => *slot = Some(value),
    }
}

/// Go's `strconv.ParseBool`.
fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Runs a search and returns the matching traces whole, newest first.
async fn find_traces(
    service: &QueryService,
    request: &SearchRequest,
) -> Result<Vec<([u8; 16], RecordBatch)>> {
    let page = search::search(service, request).await?;
    let ids: Vec<[u8; 16]> = page.traces.iter().map(|t| t.trace_id).collect();
    search::trace_spans(service, &ids).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn jaeger_trace_ids_are_left_padded() {
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(parse_trace_id("1").unwrap(), one);
        assert_eq!(parse_trace_id("0000000000000001").unwrap(), one);
        assert_eq!(
            parse_trace_id("00000000000000000000000000000001").unwrap(),
            one
        );
        assert!(parse_trace_id("").is_err());
        assert!(parse_trace_id("xyz").is_err());
        assert!(parse_trace_id(&"1".repeat(33)).is_err());
    }

    #[test]
    fn tags_json_takes_scalars_only() {
        let mut into = BTreeMap::new();
        parse_tags_json("tags", r#"{"a":"x","b":123,"c":72.5,"d":true}"#, &mut into).unwrap();
        assert_eq!(
            into,
            tags(&[("a", "x"), ("b", "123"), ("c", "72.5"), ("d", "true")])
        );
        for bad in ["[1]", "{", r#"{"a":null}"#, r#"{"a":{"b":1}}"#] {
            assert!(parse_tags_json("tags", bad, &mut into).is_err(), "{bad}");
        }
    }

    #[test]
    fn special_tags_become_span_fields() {
        let mut spans = SpanConditions::default();
        let ok = tag_conditions(
            &tags(&[
                ("error", "true"),
                ("span.kind", "server"),
                ("otel.scope.name", "lib"),
                ("scope.version", "1.0"),
                ("resource.k8s.pod.name", "web-1"),
                ("http.route", "/x"),
            ]),
            &mut spans,
        )
        .unwrap();
        assert!(ok);
        assert_eq!(spans.status, Some(SpanStatus::Error));
        assert_eq!(spans.kind, Some(SpanKind::Server));
        assert_eq!(spans.scope_name.as_deref(), Some("lib"));
        assert_eq!(spans.scope_version.as_deref(), Some("1.0"));
        let text = |v: &str| AttributeOp::Eq(AttributeValue::Text(v.into()));
        assert_eq!(
            spans.attributes,
            [
                AttributeCondition::new(AttributeScope::Anywhere, "http.route", text("/x")),
                AttributeCondition::new(AttributeScope::Resource, "k8s.pod.name", text("web-1")),
            ]
        );
    }

    #[test]
    fn contradicting_tags_match_nothing_and_bad_error_tags_are_refused() {
        let mut spans = SpanConditions::default();
        assert!(
            !tag_conditions(
                &tags(&[("error", "true"), ("otel.status_code", "OK")]),
                &mut spans
            )
            .unwrap()
        );
        let mut spans = SpanConditions::default();
        assert!(
            !tag_conditions(
                &tags(&[("scope.name", "a"), ("otel.scope.name", "b")]),
                &mut spans
            )
            .unwrap()
        );
        let mut spans = SpanConditions::default();
        assert!(tag_conditions(&tags(&[("error", "maybe")]), &mut spans).is_err());
    }
}
