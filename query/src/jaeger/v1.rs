//! Jaeger query API v1, the one the Jaeger UI and Grafana's Jaeger data source call.
//!
//! Every reply, error or not, is Jaeger's envelope
//! `{"data": …, "total": n, "limit": 0, "offset": 0, "errors": null | [{"code", "msg"}]}`
//! with the HTTP status of the error (400 for bad parameters, 404 for an unknown trace).
//! When the data may be incomplete (a collector of the cluster did not answer), each warning
//! is one more `errors` entry `{"msg": …}` next to the data.
//!
//! Parameters as Jaeger reads them: `start`/`end` in unix microseconds (default: the last
//! 48 hours, or `lookback` as a Go duration), `minDuration`/`maxDuration` as Go durations
//! (`1.2s`, `500ms`, `10us`), `tags` as a JSON object and `tag=key:value`, `limit` (default
//! 100), `endTs` and `lookback` of `/api/dependencies` in milliseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

use super::{model, operations as service_operations_of, service_names};
use crate::graph::DependencyLink;
use crate::params::jaeger::{duration as jaeger_duration, epoch, go_duration, tag_pair};
use crate::params::{Params, now_ns};
use crate::search::{self, SearchRequest, SpanConditions, SpanKind};
use crate::{Error, QueryService, Result};

/// Results when `limit` is absent or not positive (Jaeger's default).
const DEFAULT_LIMIT: usize = 100;
/// Most traces one reply carries (each is sent whole); the Jaeger UI offers up to 1500.
const MAX_LIMIT: usize = 1500;
/// Search window when `start` is absent (Jaeger's default lookback).
const DEFAULT_LOOKBACK_NS: i64 = 48 * 3_600_000_000_000;
/// Dependency window when `lookback` is absent.
const DEFAULT_DEPENDENCY_LOOKBACK_NS: i64 = 24 * 3_600_000_000_000;
const MICROSECOND_NS: i64 = 1_000;
const MILLISECOND_NS: i64 = 1_000_000;

/// Jaeger's answer envelope (`/api/services`, `/api/operations`, …).
#[derive(Debug, Serialize, ts_rs::TS)]
pub(crate) struct Envelope<T> {
    data: T,
    total: usize,
    limit: usize,
    offset: usize,
    errors: Option<Vec<EnvelopeError>>,
}

#[derive(Debug, Serialize, ts_rs::TS)]
pub(crate) struct EnvelopeError {
    #[serde(skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    code: Option<u16>,
    msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none")]
    #[ts(optional)]
    trace_id: Option<String>,
}

impl<T> Envelope<T> {
    /// Data with `total` 0, as Jaeger sends traces.
    fn data(data: T) -> Self {
        Self {
            data,
            total: 0,
            limit: 0,
            offset: 0,
            errors: None,
        }
    }
}

impl<T> Envelope<Vec<T>> {
    /// A list with its length as `total`, as Jaeger sends services and operations.
    fn counted(data: Vec<T>) -> Self {
        let total = data.len();
        Self {
            total,
            ..Self::data(data)
        }
    }
}

/// An [`Error`] in Jaeger's envelope.
pub(super) struct V1Error(Error);

impl From<Error> for V1Error {
    fn from(err: Error) -> Self {
        Self(err)
    }
}

impl From<crate::params::ParamError> for V1Error {
    fn from(err: crate::params::ParamError) -> Self {
        Self(err.into())
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let status = self.0.status();
        if status.is_server_error() {
            tracing::error!(error = %self.0, "jaeger api request failed");
        }
        let mut body = Envelope {
            errors: Some(vec![EnvelopeError {
                code: Some(status.as_u16()),
                msg: self.0.to_string(),
                trace_id: None,
            }]),
            ..Envelope::data(Value::Null)
        };
        add_warnings(&mut body.errors);
        (status, Json(body)).into_response()
    }
}

type Reply<T> = std::result::Result<Json<Envelope<T>>, V1Error>;

/// `envelope` with the request's warnings (a collector of the cluster did not answer, so
/// the data may be incomplete) added to `errors`, where Jaeger clients show problems.
fn reply<T>(mut envelope: Envelope<T>) -> Json<Envelope<T>> {
    add_warnings(&mut envelope.errors);
    Json(envelope)
}

fn add_warnings(errors: &mut Option<Vec<EnvelopeError>>) {
    let warnings = crate::warnings::current();
    if warnings.is_empty() {
        return;
    }
    errors
        .get_or_insert_with(Vec::new)
        .extend(warnings.into_iter().map(|msg| EnvelopeError {
            code: None,
            msg,
            trace_id: None,
        }));
}

fn params(
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Result<Params> {
    query
        .map(|Query(pairs)| Params(pairs))
        .map_err(|e| Error::BadRequest(format!("malformed query string: {}", e.body_text())))
}

/// `GET /api/services`.
pub(super) async fn services(State(service): State<Arc<QueryService>>) -> Reply<Vec<String>> {
    Ok(reply(Envelope::counted(service_names(&service).await?)))
}

/// `GET /api/services/{service}/operations`: distinct operation names (the UI's older call).
pub(super) async fn service_operations(
    State(service): State<Arc<QueryService>>,
    Path(name): Path<String>,
) -> Reply<Vec<String>> {
    let mut names: Vec<String> = service_operations_of(&service, &name, None)
        .await?
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.dedup();
    Ok(reply(Envelope::counted(names)))
}

/// One operation of `GET /api/operations`.
#[derive(Debug, Serialize, ts_rs::TS)]
pub(crate) struct Operation {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: &'static str,
}

/// Jaeger's span kind text; unspecified is the empty string.
fn kind_text(kind: SpanKind) -> &'static str {
    match kind {
        SpanKind::Unspecified => "",
        other => other.name(),
    }
}

/// `GET /api/operations?service=&spanKind=`.
pub(super) async fn operations(
    State(service): State<Arc<QueryService>>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply<Vec<Operation>> {
    let params = params(query)?;
    let name = params
        .one("service")?
        .ok_or_else(|| Error::BadRequest("parameter 'service' is required".into()))?;
    let kind = params.one("spanKind")?.map(parse_kind).transpose()?;
    let operations = service_operations_of(&service, name, kind)
        .await?
        .into_iter()
        .map(|(name, kind)| Operation {
            name,
            span_kind: kind_text(kind),
        })
        .collect();
    Ok(reply(Envelope::counted(operations)))
}

pub(super) fn parse_kind(text: &str) -> Result<SpanKind> {
    SpanKind::parse(text).ok_or_else(|| {
        Error::BadRequest(format!(
            "unsupported span kind {text:?}: use server, client, producer, consumer, internal or unspecified"
        ))
    })
}

/// `GET /api/traces`: a search, or `traceID=…` (repeatable) to fetch traces by id.
pub(super) async fn find_traces(
    State(service): State<Arc<QueryService>>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply<Vec<model::Trace>> {
    let params = params(query)?;
    let ids: Vec<&str> = params.all("traceID").collect();
    if !ids.is_empty() {
        return traces_by_id(&service, &ids).await;
    }
    let Some(request) = search_request(&params, now_ns())? else {
        return Ok(reply(Envelope::data(Vec::new())));
    };
    let traces = super::find_traces(&service, &request).await?;
    let data = traces
        .iter()
        .map(|(_, spans)| jaeger_trace(spans))
        .collect::<Result<Vec<_>>>()?;
    Ok(reply(Envelope::data(data)))
}

async fn traces_by_id(service: &QueryService, texts: &[&str]) -> Reply<Vec<model::Trace>> {
    let ids = texts
        .iter()
        .map(|text| {
            super::parse_trace_id(text)
                .map_err(|e| Error::BadRequest(format!("cannot parse traceID param: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let found = search::trace_spans(service, &ids).await?;
    let mut errors = Vec::new();
    for id in &ids {
        if !found.iter().any(|(f, _)| f == id) {
            errors.push(EnvelopeError {
                code: None,
                msg: "trace not found".into(),
                trace_id: Some(model::trace_id_text(id)),
            });
        }
    }
    let data = found
        .iter()
        .map(|(_, spans)| jaeger_trace(spans))
        .collect::<Result<Vec<_>>>()?;
    Ok(reply(Envelope {
        errors: (!errors.is_empty()).then_some(errors),
        ..Envelope::data(data)
    }))
}

fn jaeger_trace(spans: &arrow::array::RecordBatch) -> Result<model::Trace> {
    let resource_spans = weft_schemas::spans::to_otlp(std::slice::from_ref(spans))?;
    Ok(model::trace(&resource_spans))
}

/// The search a v1 query string asks for; `None` when its tags contradict each other.
pub(crate) fn search_request(params: &Params, now_ns: i64) -> Result<Option<SearchRequest>> {
    let service = params
        .one("service")?
        .ok_or_else(|| Error::BadRequest("parameter 'service' is required".into()))?;
    let end = match params.one("end")? {
        Some(text) => epoch("end", text, MICROSECOND_NS)?,
        None => now_ns,
    };
    let start = match params.one("start")? {
        Some(text) => epoch("start", text, MICROSECOND_NS)?,
        // The UI also sends `lookback=1h` (or `custom`); it only matters without `start`.
        None => {
            let lookback = params.one("lookback")?.and_then(go_duration);
            end.saturating_sub(lookback.unwrap_or(DEFAULT_LOOKBACK_NS))
        }
    };
    let duration = |name: &str| -> Result<Option<i64>> {
        let Some(text) = params.one(name)? else {
            return Ok(None);
        };
        let ns = jaeger_duration(name, text)?;
        // Jaeger treats a zero duration as "no bound".
        Ok((ns != 0).then_some(ns))
    };
    let min_duration = duration("minDuration")?;
    let max_duration = duration("maxDuration")?;
    if let (Some(min), Some(max)) = (min_duration, max_duration)
        && max < min
    {
        return Err(Error::BadRequest(
            "'maxDuration' should be greater than 'minDuration'".into(),
        ));
    }
    let limit = match params.one("limit")? {
        None => DEFAULT_LIMIT,
        Some(text) => match text.trim().parse::<i64>() {
            Ok(n) if n <= 0 => DEFAULT_LIMIT,
            Ok(n) if n as u64 <= MAX_LIMIT as u64 => n as usize,
            Ok(n) => {
                return Err(Error::BadRequest(format!(
                    "limit {n} is above the maximum of {MAX_LIMIT}"
                )));
            }
            Err(_) => {
                return Err(Error::BadRequest(format!(
                    "unable to parse param 'limit': {text:?} is not an integer"
                )));
            }
        },
    };

    let mut tags = BTreeMap::new();
    for tag in params.all("tag") {
        let (key, value) = tag_pair(tag)?;
        tags.insert(key, value);
    }
    for json in params.all("tags") {
        super::parse_tags_json("tags", json, &mut tags)?;
    }

    let mut spans = SpanConditions {
        start_min_ns: Some(start),
        start_max_ns: Some(end),
        service: Some(service.to_owned()),
        operation: params.one("operation")?.map(str::to_owned),
        min_duration_ns: min_duration,
        max_duration_ns: max_duration,
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

/// `GET /api/traces/{id}`.
pub(super) async fn trace(
    State(service): State<Arc<QueryService>>,
    Path(id): Path<String>,
) -> Reply<Vec<model::Trace>> {
    let trace_id = super::parse_trace_id(&id)?;
    let Some(batches) = service.trace(trace_id).await? else {
        return Err(Error::NotFound("trace not found".into()).into());
    };
    let resource_spans = weft_schemas::spans::to_otlp(&batches).map_err(Error::from)?;
    Ok(reply(Envelope::data(vec![model::trace(&resource_spans)])))
}

/// `GET /api/dependencies?endTs=<ms>&lookback=<ms>[&service=]`.
pub(super) async fn dependencies(
    State(service): State<Arc<QueryService>>,
    query: std::result::Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Reply<Vec<DependencyLink>> {
    let params = params(query)?;
    let end = match params.one("endTs")? {
        Some(text) => epoch("endTs", text, MILLISECOND_NS)?,
        None => now_ns(),
    };
    let lookback = match params.one("lookback")? {
        Some(text) => epoch("lookback", text, MILLISECOND_NS)?,
        None => DEFAULT_DEPENDENCY_LOOKBACK_NS,
    };
    if lookback < 0 {
        return Err(Error::BadRequest("lookback must not be negative".into()).into());
    }
    let links =
        crate::graph::jaeger_dependency_links(&service, end.saturating_sub(lookback), end).await?;
    let focus = params.one("service")?;
    // Jaeger merges duplicate (parent, child) pairs; the sorted map also fixes the order.
    let mut merged: BTreeMap<(String, String), u64> = BTreeMap::new();
    for link in links {
        if focus.is_none_or(|s| link.parent == s || link.child == s) {
            *merged.entry((link.parent, link.child)).or_default() += link.call_count;
        }
    }
    let data = merged
        .into_iter()
        .map(|((parent, child), call_count)| DependencyLink {
            parent,
            child,
            call_count,
        })
        .collect();
    Ok(reply(Envelope::data(data)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::{AttributeScope, SpanStatus};

    fn params(query: &[(&str, &str)]) -> Params {
        Params::from_pairs(query)
    }

    const NOW: i64 = 1_700_000_000_000_000_000;

    #[test]
    fn search_parameters_translate_like_jaeger() {
        let request = search_request(
            &params(&[
                ("service", "web"),
                ("operation", "GET /"),
                ("start", "1485445591639875"),
                ("end", "1485452791639875"),
                ("minDuration", "1.2s"),
                ("maxDuration", "0"),
                ("limit", "20"),
                ("tags", r#"{"http.status_code":"500","error":"true"}"#),
                ("tag", "peer:host:1"),
                ("lookback", "custom"),
            ]),
            NOW,
        )
        .unwrap()
        .unwrap();
        let s = &request.spans;
        assert_eq!(s.service.as_deref(), Some("web"));
        assert_eq!(s.operation.as_deref(), Some("GET /"));
        assert_eq!(s.start_min_ns, Some(1_485_445_591_639_875_000));
        assert_eq!(s.start_max_ns, Some(1_485_452_791_639_875_000));
        assert_eq!(
            (s.min_duration_ns, s.max_duration_ns),
            (Some(1_200_000_000), None)
        );
        assert_eq!(s.status, Some(SpanStatus::Error));
        let keys: Vec<_> = s
            .attributes
            .iter()
            .map(|a| (a.scope, a.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [
                (AttributeScope::Anywhere, "http.status_code"),
                (AttributeScope::Anywhere, "peer")
            ]
        );
        assert_eq!(s.attributes[1].to_string(), r#"peer="host:1""#);
        assert_eq!(request.limit, 20);
    }

    #[test]
    fn defaults_cover_the_last_two_days_or_the_lookback() {
        let request = search_request(&params(&[("service", "web")]), NOW)
            .unwrap()
            .unwrap();
        assert_eq!(request.spans.start_max_ns, Some(NOW));
        assert_eq!(request.spans.start_min_ns, Some(NOW - DEFAULT_LOOKBACK_NS));
        assert_eq!(request.limit, DEFAULT_LIMIT);
        let request = search_request(
            &params(&[("service", "web"), ("lookback", "1h"), ("limit", "0")]),
            NOW,
        )
        .unwrap()
        .unwrap();
        assert_eq!(request.spans.start_min_ns, Some(NOW - 3_600_000_000_000));
        assert_eq!(request.limit, DEFAULT_LIMIT);
    }

    #[test]
    fn bad_search_parameters_are_refused() {
        for (query, needle) in [
            (vec![], "service"),
            (vec![("service", "a"), ("start", "yesterday")], "start"),
            (vec![("service", "a"), ("minDuration", "10")], "minDuration"),
            (
                vec![
                    ("service", "a"),
                    ("minDuration", "2s"),
                    ("maxDuration", "1s"),
                ],
                "maxDuration",
            ),
            (vec![("service", "a"), ("limit", "many")], "limit"),
            (vec![("service", "a"), ("limit", "100000")], "limit"),
            (vec![("service", "a"), ("tags", "{oops")], "tags"),
            (vec![("service", "a"), ("tag", "novalue")], "tag"),
        ] {
            match search_request(&params(&query), NOW) {
                Err(Error::BadRequest(message)) => {
                    assert!(message.contains(needle), "{query:?}: {message}")
                }
                other => panic!("{query:?} must be refused, got {other:?}"),
            }
        }
        // Contradicting tags are not an error: nothing matches.
        let none = search_request(
            &params(&[
                ("service", "a"),
                ("tags", r#"{"error":"true","span.status":"ok"}"#),
            ]),
            NOW,
        )
        .unwrap();
        assert!(none.is_none());
    }

    #[test]
    fn errors_use_jaegers_envelope() {
        let response =
            V1Error(Error::BadRequest("parameter 'service' is required".into())).into_response();
        assert_eq!(response.status(), 400);
        let body = Envelope {
            errors: Some(vec![EnvelopeError {
                code: Some(404),
                msg: "trace not found".into(),
                trace_id: None,
            }]),
            ..Envelope::data(Value::Null)
        };
        assert_eq!(
            serde_json::to_value(body).unwrap(),
            serde_json::json!({"data": null, "total": 0, "limit": 0, "offset": 0,
                               "errors": [{"code": 404, "msg": "trace not found"}]})
        );
    }
}
