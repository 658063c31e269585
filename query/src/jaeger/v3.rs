//! Jaeger's API v3 over HTTP/JSON (its `api_v3` gRPC-gateway): OTLP/JSON traces wrapped as
//! `{"result": {"resourceSpans": […]}}`, `{"services": […]}`, `{"operations": [{"name",
//! "spanKind"}]}`, and errors as `{"error": {"httpCode": 400, "message": "…"}}`.
//!
//! Search parameters take Jaeger's canonical camelCase names and their older snake_case
//! aliases: `query.serviceName` / `query.service_name`, `query.operationName`,
//! `query.startTimeMin` and `query.startTimeMax` (RFC 3339, both required),
//! `query.durationMin` / `query.durationMax` (Go durations), `query.attributes` (a JSON
//! object of tags), `query.searchDepth` (most traces, default 100), `query.rawTraces`.
//! As in Jaeger, a search or lookup that finds nothing is a 404.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::{operations as service_operations_of, service_names};
use crate::params::Params;
use crate::params::jaeger::{v3_duration, v3_time};
use crate::search::{SearchRequest, SpanConditions, SpanKind};
use crate::{Error, QueryService, Result};

/// Traces per search when `query.searchDepth` is absent.
const DEFAULT_SEARCH_DEPTH: usize = 100;
/// Most traces per search (each is sent whole).
const MAX_SEARCH_DEPTH: usize = 1500;
const NOT_FOUND: &str = "No traces found";

/// An [`Error`] in the gateway's error shape.
pub(super) struct V3Error(Error);

impl From<Error> for V3Error {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl From<crate::params::ParamError> for V3Error {
    fn from(err: crate::params::ParamError) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for V3Error {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "jaeger api v3 request failed");
        }
        let body = json!({"error": {"httpCode": status.as_u16(), "message": self.0.to_string()}});
        (status, Json(body)).into_response()
    }
}

type Reply = std::result::Result<Json<Value>, V3Error>;

fn params(
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Params> {
    query
        .map(|Query(pairs)| Params(pairs))
        .map_err(|e| Error::BadRequest(format!("malformed query string: {}", e.body_text())))
}

/// `GET /api/v3/services`.
pub(super) async fn services(State(service): State<Arc<QueryService>>) -> Reply {
    Ok(Json(json!({ "services": service_names(&service).await? })))
}

/// `GET /api/v3/operations?service=&span_kind=`.
pub(super) async fn operations(
    State(service): State<Arc<QueryService>>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply {
    let params = params(query)?;
    let name = params
        .one("service")?
        .ok_or_else(|| Error::BadRequest("parameter service is required".into()))?;
    let kind = params
        .first_of(&["spanKind", "span_kind"])?
        .map(|(_, text)| super::v1::parse_kind(text))
        .transpose()?;
    let operations: Vec<Value> = service_operations_of(&service, name, kind)
        .await?
        .into_iter()
        .map(|(name, kind)| {
            // The gateway reports an unspecified kind as internal.
            let kind = match kind {
                SpanKind::Unspecified => SpanKind::Internal,
                other => other,
            };
            json!({"name": name, "spanKind": kind.name()})
        })
        .collect();
    Ok(Json(json!({ "operations": operations })))
}

/// `GET /api/v3/traces`.
pub(super) async fn find_traces(
    State(service): State<Arc<QueryService>>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply {
    let params = params(query)?;
    let Some(request) = search_request(&params)? else {
        return Err(Error::NotFound(NOT_FOUND.into()).into());
    };
    let traces = super::find_traces(&service, &request).await?;
    if traces.is_empty() {
        return Err(Error::NotFound(NOT_FOUND.into()).into());
    }
    let mut resource_spans = Vec::new();
    for (_, spans) in &traces {
        resource_spans.extend(
            weft_schemas::spans::to_otlp(std::slice::from_ref(spans)).map_err(Error::from)?,
        );
    }
    Ok(Json(result(&resource_spans)))
}

fn result(resource_spans: &[opentelemetry_proto::tonic::trace::v1::ResourceSpans]) -> Value {
    json!({ "result": weft_schemas::otlp_json::encode_resource_spans(resource_spans) })
}

/// The search a v3 query string asks for; `None` when its attributes contradict each other.
pub(crate) fn search_request(params: &Params) -> Result<Option<SearchRequest>> {
    let text = |names: &[&str]| -> Result<Option<String>> {
        Ok(params.first_of(names)?.map(|(_, value)| value.to_owned()))
    };
    let time = |names: &[&str]| -> Result<Option<i64>> {
        params
            .first_of(names)?
            .map(|(name, value)| Ok(v3_time(name, value)?))
            .transpose()
    };
    let duration = |names: &[&str]| -> Result<Option<i64>> {
        params
            .first_of(names)?
            .map(|(name, value)| Ok(v3_duration(name, value)?))
            .transpose()
    };
    let start_min = time(&["query.startTimeMin", "query.start_time_min"])?;
    let start_max = time(&["query.startTimeMax", "query.start_time_max"])?;
    let (Some(start_min), Some(start_max)) = (start_min, start_max) else {
        return Err(Error::BadRequest(
            "query.start_time_min and query.start_time_max are required".into(),
        ));
    };
    let limit = match params.first_of(&[
        "query.searchDepth",
        "query.search_depth",
        "query.num_traces",
    ])? {
        None => DEFAULT_SEARCH_DEPTH,
        Some((name, value)) => match value.trim().parse::<usize>() {
            Ok(0) => DEFAULT_SEARCH_DEPTH,
            Ok(n) if n <= MAX_SEARCH_DEPTH => n,
            _ => {
                return Err(Error::BadRequest(format!(
                    "malformed parameter {name}: {value:?} is not a count up to {MAX_SEARCH_DEPTH}"
                )));
            }
        },
    };
    if let Some((name, value)) = params.first_of(&["query.rawTraces", "query.raw_traces"])?
        && super::parse_go_bool(value).is_none()
    {
        // Weft never adjusts traces, so raw or not reads the same; the value is still checked.
        return Err(Error::BadRequest(format!(
            "malformed parameter {name}: {value:?} is not a bool"
        )));
    }
    let mut tags = BTreeMap::new();
    if let Some(json) = params.one("query.attributes")? {
        super::parse_tags_json("query.attributes", json, &mut tags)?;
    }
    let mut spans = SpanConditions {
        start_min_ns: Some(start_min),
        start_max_ns: Some(start_max),
        service: text(&["query.serviceName", "query.service_name"])?,
        operation: text(&["query.operationName", "query.operation_name"])?,
        min_duration_ns: duration(&["query.durationMin", "query.duration_min"])?
            .filter(|d| *d != 0),
        max_duration_ns: duration(&["query.durationMax", "query.duration_max"])?
            .filter(|d| *d != 0),
        ..Default::default()
    };
    if !super::tag_conditions(&tags, &mut spans)? {
        return Ok(None);
    }
    Ok(Some(SearchRequest {
        spans,
        limit,
        ..Default::default()
    }))
}

/// `GET /api/v3/traces/{trace_id}`.
pub(super) async fn trace(
    State(service): State<Arc<QueryService>>,
    Path(id): Path<String>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply {
    let params = params(query)?;
    let trace_id = super::parse_trace_id(&id)
        .map_err(|e| Error::BadRequest(format!("malformed parameter trace_id: {e}")))?;
    // The time hints are optional; the trace id alone finds the trace. They are still read
    // so a malformed one is reported.
    for names in [["startTime", "start_time"], ["endTime", "end_time"]] {
        if let Some((name, value)) = params.first_of(&names)? {
            v3_time(name, value)?;
        }
    }
    let Some(batches) = service.trace(trace_id).await? else {
        return Err(Error::NotFound(NOT_FOUND.into()).into());
    };
    let resource_spans = weft_schemas::spans::to_otlp(&batches).map_err(Error::from)?;
    Ok(Json(result(&resource_spans)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    #[test]
    fn canonical_and_legacy_names_both_work() {
        let legacy = search_request(&params(&[
            ("query.service_name", "web"),
            ("query.operation_name", "GET /"),
            ("query.start_time_min", "2017-01-26T15:46:31.639875Z"),
            ("query.start_time_max", "2017-01-26T17:46:31.639875Z"),
            ("query.duration_min", "2us"),
            ("query.duration_max", "1s"),
            ("query.search_depth", "7"),
            ("query.attributes", r#"{"a":"b"}"#),
        ]))
        .unwrap()
        .unwrap();
        let canonical = search_request(&params(&[
            ("query.serviceName", "web"),
            ("query.operationName", "GET /"),
            ("query.startTimeMin", "2017-01-26T15:46:31.639875Z"),
            ("query.startTimeMax", "2017-01-26T17:46:31.639875Z"),
            ("query.durationMin", "2000ns"),
            ("query.durationMax", "1000ms"),
            ("query.searchDepth", "7"),
            ("query.attributes", r#"{"a":"b"}"#),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(legacy, canonical);
        assert_eq!(legacy.spans.min_duration_ns, Some(2_000));
        assert_eq!(legacy.limit, 7);
        assert_eq!(legacy.spans.attributes.len(), 1);
    }

    #[test]
    fn times_are_required_and_checked() {
        let min = ("query.start_time_min", "2017-01-26T15:46:31Z");
        let max = ("query.start_time_max", "2017-01-26T16:46:31Z");
        for (query, needle) in [
            (vec![min], "required"),
            (
                vec![min, ("query.start_time_max", "later")],
                "query.start_time_max",
            ),
            (
                vec![min, max, ("query.duration_min", "5")],
                "query.duration_min",
            ),
            (
                vec![min, max, ("query.search_depth", "-1")],
                "query.search_depth",
            ),
            (
                vec![min, max, ("query.raw_traces", "perhaps")],
                "query.raw_traces",
            ),
            (
                vec![min, max, ("query.attributes", "[]")],
                "query.attributes",
            ),
        ] {
            match search_request(&params(&query)) {
                Err(Error::BadRequest(message)) => {
                    assert!(message.contains(needle), "{query:?}: {message}")
                }
                other => panic!("{query:?} must be refused, got {other:?}"),
            }
        }
    }

    #[test]
    fn errors_use_the_gateway_shape() {
        let response = V3Error(Error::NotFound(NOT_FOUND.into())).into_response();
        assert_eq!(response.status(), 404);
    }
}
