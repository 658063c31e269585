//! OTLP spans → the Jaeger UI's JSON trace model, as Jaeger's query service produces it:
//! the OpenTelemetry Collector's `ProtoFromTraces` translator, then Jaeger's UI model
//! converter (`uimodel/converter/v1/json`), without adjusters (like Jaeger's
//! `/api/transform` and raw traces).
//!
//! ```text
//!  ResourceSpans ── resource ──▶ process {serviceName, tags = resource attrs − service.name}
//!   └ ScopeSpans ── scope ────▶ tags otel.scope.name, otel.scope.version
//!      └ Span ──▶ span {traceID, spanID, operationName, references, startTime µs,
//!                       duration µs, tags, logs (events), processID, warnings}
//!  tags: scope tags, span attributes, span.kind, otel.status_code, error,
//!        otel.status_description, w3c.tracestate — in that order
//!  processes: identical (serviceName, tags) share one id, p1, p2, … in order of first use
//! ```
//!
//! One deliberate difference: a resource without a string `service.name` is shown as
//! `unknown_service` (the name Weft stores and lists in `/api/services`) instead of
//! Jaeger's `OTLPResourceNoServiceName` or an empty name.

use std::collections::{BTreeMap, HashMap};

use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span, span};
use serde::Serialize;
use serde_json::Value;

use crate::search::attribute::UNKNOWN_SERVICE;

/// Largest integer a JavaScript number holds exactly; Jaeger sends larger ones as strings.
const JS_MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;

#[derive(Debug, Serialize)]
pub(crate) struct Trace {
    #[serde(rename = "traceID")]
    trace_id: String,
    spans: Vec<JaegerSpan>,
    processes: BTreeMap<String, Process>,
    warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct JaegerSpan {
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
    operation_name: String,
    references: Vec<Reference>,
    start_time: u64,
    duration: u64,
    tags: Vec<Tag>,
    logs: Vec<Log>,
    #[serde(rename = "processID")]
    process_id: String,
    warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
struct Reference {
    #[serde(rename = "refType")]
    ref_type: &'static str,
    #[serde(rename = "traceID")]
    trace_id: String,
    #[serde(rename = "spanID")]
    span_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    service_name: String,
    tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
struct Tag {
    key: String,
    #[serde(rename = "type")]
    kind: &'static str,
    value: Value,
}

#[derive(Debug, Serialize)]
struct Log {
    timestamp: u64,
    fields: Vec<Tag>,
}

impl Tag {
    fn text(key: &str, value: &str) -> Self {
        Tag {
            key: key.to_owned(),
            kind: "string",
            value: Value::String(value.to_owned()),
        }
    }

    /// `attributeToJaegerProtoTag` + the UI converter's value rendering.
    fn from_attribute(kv: &KeyValue) -> Self {
        use any_value::Value as V;
        let (kind, value) = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(V::StringValue(s)) => ("string", Value::from(s.as_str())),
            Some(V::BoolValue(b)) => ("bool", Value::from(*b)),
            Some(V::IntValue(i)) if (-JS_MAX_SAFE_INTEGER..=JS_MAX_SAFE_INTEGER).contains(i) => {
                ("int64", Value::from(*i))
            }
            Some(V::IntValue(i)) => ("int64", Value::from(i.to_string())),
            // JSON has no NaN or infinity (Jaeger's encoder would fail the whole reply);
            // they are sent as their text.
            Some(V::DoubleValue(f)) => (
                "float64",
                serde_json::Number::from_f64(*f)
                    .map_or_else(|| Value::from(f.to_string()), Value::Number),
            ),
            Some(V::BytesValue(_)) => ("binary", rendered(kv.value.as_ref())),
            Some(V::ArrayValue(_) | V::KvlistValue(_)) => {
                let raw = kv.value.as_ref().map_or(Value::Null, raw_json);
                ("string", Value::String(raw.to_string()))
            }
            // An empty value becomes Jaeger's zero KeyValue: an empty string.
            None | Some(V::StringValueStrindex(_)) => ("string", Value::from("")),
        };
        Tag {
            key: kv.key.clone(),
            kind,
            value,
        }
    }
}

/// Weft's stored rendering (base64 for bytes), as a JSON string.
fn rendered(value: Option<&AnyValue>) -> Value {
    Value::from(
        value
            .and_then(weft_schemas::attributes::render_value)
            .unwrap_or_default(),
    )
}

/// `pcommon.Value.AsRaw()` as JSON: what `AsString()` prints for arrays and kvlists.
fn raw_json(value: &AnyValue) -> Value {
    use any_value::Value as V;
    match &value.value {
        None | Some(V::StringValueStrindex(_)) => Value::Null,
        Some(V::StringValue(s)) => Value::from(s.as_str()),
        Some(V::BoolValue(b)) => Value::from(*b),
        Some(V::IntValue(i)) => Value::from(*i),
        Some(V::DoubleValue(f)) => {
            serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number)
        }
        Some(V::BytesValue(_)) => rendered(Some(value)),
        Some(V::ArrayValue(array)) => Value::Array(array.values.iter().map(raw_json).collect()),
        Some(V::KvlistValue(list)) => {
            // Go marshals maps with sorted keys; inserting in that order gives the same
            // text whether or not serde_json preserves insertion order.
            let mut entries: Vec<(&str, Value)> = list
                .values
                .iter()
                .map(|kv| {
                    (
                        kv.key.as_str(),
                        kv.value.as_ref().map_or(Value::Null, raw_json),
                    )
                })
                .collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v))
                    .collect(),
            )
        }
    }
}

/// Jaeger's trace id text: 16 hex digits when the high half is zero, else 32.
pub(crate) fn trace_id_text(id: &[u8]) -> String {
    match id {
        [0, 0, 0, 0, 0, 0, 0, 0, low @ ..] => hex::encode(low),
        _ => hex::encode(id),
    }
}

fn span_id_text(id: &[u8]) -> String {
    hex::encode(id)
}

/// Converts the resource spans of one trace (as [`weft_schemas::spans::to_otlp`] returns
/// them) to a Jaeger trace.
pub(crate) fn trace(resource_spans: &[ResourceSpans]) -> Trace {
    let mut processes = Processes::default();
    let mut spans = Vec::new();
    for rs in resource_spans {
        let process_id = processes.id_of(process(rs.resource.as_ref()));
        for ss in &rs.scope_spans {
            let scope_tags = scope_tags(ss.scope.as_ref());
            for span in &ss.spans {
                spans.push(jaeger_span(span, &scope_tags, &process_id));
            }
        }
    }
    Trace {
        trace_id: spans
            .first()
            .map(|s| s.trace_id.clone())
            .unwrap_or_default(),
        spans,
        processes: processes.into_map(),
        warnings: None,
    }
}

fn process(resource: Option<&Resource>) -> Process {
    let attributes = resource.map_or(&[][..], |r| r.attributes.as_slice());
    // The first `service.name` decides, and only a string one (as `spans.service_name`).
    let service_name = attributes
        .iter()
        .find(|kv| kv.key == "service.name")
        .and_then(
            |kv| match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                _ => None,
            },
        )
        .unwrap_or_else(|| UNKNOWN_SERVICE.to_owned());
    let tags = attributes
        .iter()
        .filter(|kv| kv.key != "service.name")
        .map(Tag::from_attribute)
        .collect();
    Process { service_name, tags }
}

fn scope_tags(scope: Option<&InstrumentationScope>) -> Vec<Tag> {
    let mut tags = Vec::new();
    if let Some(scope) = scope {
        if !scope.name.is_empty() {
            tags.push(Tag::text("otel.scope.name", &scope.name));
        }
        if !scope.version.is_empty() {
            tags.push(Tag::text("otel.scope.version", &scope.version));
        }
    }
    tags
}

/// Assigns `p1`, `p2`, … to distinct processes in order of first use.
#[derive(Default)]
struct Processes {
    ids: HashMap<String, String>,
    by_id: BTreeMap<String, Process>,
}

impl Processes {
    fn id_of(&mut self, process: Process) -> String {
        // Equal processes serialise equally (tags keep their order, as Jaeger compares them).
        let identity = serde_json::to_string(&process).unwrap_or_default();
        if let Some(id) = self.ids.get(&identity) {
            return id.clone();
        }
        let id = format!("p{}", self.ids.len() + 1);
        self.ids.insert(identity, id.clone());
        self.by_id.insert(id.clone(), process);
        id
    }

    fn into_map(self) -> BTreeMap<String, Process> {
        self.by_id
    }
}

fn jaeger_span(span: &Span, scope_tags: &[Tag], process_id: &str) -> JaegerSpan {
    let start = span.start_time_unix_nano;
    // Go: end.Sub(start) as a signed duration, clamped at zero by the UI converter.
    let duration_ns = (span.end_time_unix_nano as i64)
        .saturating_sub(start as i64)
        .max(0) as u64;
    JaegerSpan {
        trace_id: trace_id_text(&span.trace_id),
        span_id: span_id_text(&span.span_id),
        operation_name: span.name.clone(),
        references: references(span),
        start_time: start / 1_000,
        duration: duration_ns / 1_000,
        tags: span_tags(span, scope_tags),
        logs: span.events.iter().map(log).collect(),
        process_id: process_id.to_owned(),
        warnings: None,
    }
}

fn span_tags(span: &Span, scope_tags: &[Tag]) -> Vec<Tag> {
    let mut tags = scope_tags.to_vec();
    tags.extend(span.attributes.iter().map(Tag::from_attribute));
    let kind = match span.kind {
        1 => Some("internal"),
        2 => Some("server"),
        3 => Some("client"),
        4 => Some("producer"),
        5 => Some("consumer"),
        _ => None,
    };
    if let Some(kind) = kind {
        tags.push(Tag::text("span.kind", kind));
    }
    let status = span.status.as_ref();
    match status.map_or(0, |s| s.code) {
        1 => tags.push(Tag::text("otel.status_code", "OK")),
        2 => {
            tags.push(Tag::text("otel.status_code", "ERROR"));
            tags.push(Tag {
                key: "error".into(),
                kind: "bool",
                value: Value::Bool(true),
            });
        }
        _ => {}
    }
    if let Some(message) = status.map(|s| s.message.as_str()).filter(|m| !m.is_empty()) {
        tags.push(Tag::text("otel.status_description", message));
    }
    if !span.trace_state.is_empty() {
        tags.push(Tag::text("w3c.tracestate", &span.trace_state));
    }
    tags
}

/// The parent as `CHILD_OF` first, then one reference per link: `CHILD_OF` when the link's
/// `opentracing.ref_type` says `child_of`, else `FOLLOWS_FROM`. A link to the parent itself
/// only sets the parent reference's type.
fn references(span: &Span) -> Vec<Reference> {
    let trace_id = trace_id_text(&span.trace_id);
    let parent = (!span.parent_span_id.is_empty() && span.parent_span_id.iter().any(|b| *b != 0))
        .then(|| span_id_text(&span.parent_span_id));
    let mut refs: Vec<Reference> = parent
        .iter()
        .map(|parent| Reference {
            ref_type: "CHILD_OF",
            trace_id: trace_id.clone(),
            span_id: parent.clone(),
        })
        .collect();
    for link in &span.links {
        let ref_type = link_ref_type(link);
        let link_trace = trace_id_text(&link.trace_id);
        let link_span = span_id_text(&link.span_id);
        if parent.as_ref() == Some(&link_span) && link_trace == trace_id {
            refs[0].ref_type = ref_type;
            continue;
        }
        refs.push(Reference {
            ref_type,
            trace_id: link_trace,
            span_id: link_span,
        });
    }
    refs
}

fn link_ref_type(link: &span::Link) -> &'static str {
    let child_of = link
        .attributes
        .iter()
        .find(|kv| kv.key == "opentracing.ref_type")
        .is_some_and(|kv| {
            matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::StringValue(s)) if s == "child_of"
            )
        });
    if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" }
}

fn log(event: &span::Event) -> Log {
    let mut fields = Vec::with_capacity(event.attributes.len() + 1);
    if !event.name.is_empty() && !event.attributes.iter().any(|kv| kv.key == "event") {
        fields.push(Tag::text("event", &event.name));
    }
    fields.extend(event.attributes.iter().map(Tag::from_attribute));
    Log {
        timestamp: event.time_unix_nano / 1_000,
        fields,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{ArrayValue, KeyValueList};
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};
    use serde_json::json;

    fn kv(key: &str, value: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn text(s: &str) -> any_value::Value {
        any_value::Value::StringValue(s.into())
    }

    fn resource(attributes: Vec<KeyValue>, spans: Vec<Span>) -> ResourceSpans {
        ResourceSpans {
            resource: Some(Resource {
                attributes,
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn span(id: u8) -> Span {
        let mut trace_id = vec![0u8; 16];
        trace_id[15] = 1;
        Span {
            trace_id,
            span_id: vec![0, 0, 0, 0, 0, 0, 0, id],
            name: format!("op-{id}"),
            start_time_unix_nano: 1_485_467_191_639_875_123,
            end_time_unix_nano: 1_485_467_191_639_880_999,
            ..Default::default()
        }
    }

    #[test]
    fn tags_follow_jaegers_order_and_types() {
        let mut s = span(2);
        s.kind = 3;
        s.trace_state = "k=v".into();
        s.status = Some(Status {
            code: 2,
            message: "boom".into(),
        });
        s.attributes = vec![
            kv("s", text("x")),
            kv("i", any_value::Value::IntValue(7)),
            kv("big", any_value::Value::IntValue(9_223_372_036_854_775_222)),
            kv("f", any_value::Value::DoubleValue(72.5)),
            kv("nan", any_value::Value::DoubleValue(f64::NAN)),
            kv("b", any_value::Value::BoolValue(false)),
            kv("blob", any_value::Value::BytesValue(vec![0, 0, 0x30, 0x39])),
            kv(
                "arr",
                any_value::Value::ArrayValue(ArrayValue {
                    values: vec![
                        AnyValue {
                            value: Some(text("a")),
                        },
                        AnyValue {
                            value: Some(any_value::Value::IntValue(1)),
                        },
                    ],
                }),
            ),
            kv(
                "map",
                any_value::Value::KvlistValue(KeyValueList {
                    values: vec![
                        kv("z", any_value::Value::BoolValue(true)),
                        kv("a", text("b")),
                    ],
                }),
            ),
            KeyValue {
                key: "none".into(),
                ..Default::default()
            },
        ];
        let trace = serde_json::to_value(trace(&[resource(
            vec![kv("service.name", text("svc"))],
            vec![s],
        )]))
        .unwrap();
        assert_eq!(
            trace["spans"][0]["tags"],
            json!([
                {"key": "otel.scope.name", "type": "string", "value": "lib"},
                {"key": "otel.scope.version", "type": "string", "value": "1.2"},
                {"key": "s", "type": "string", "value": "x"},
                {"key": "i", "type": "int64", "value": 7},
                {"key": "big", "type": "int64", "value": "9223372036854775222"},
                {"key": "f", "type": "float64", "value": 72.5},
                {"key": "nan", "type": "float64", "value": "NaN"},
                {"key": "b", "type": "bool", "value": false},
                {"key": "blob", "type": "binary", "value": "AAAwOQ=="},
                {"key": "arr", "type": "string", "value": "[\"a\",1]"},
                {"key": "map", "type": "string", "value": "{\"a\":\"b\",\"z\":true}"},
                {"key": "none", "type": "string", "value": ""},
                {"key": "span.kind", "type": "string", "value": "client"},
                {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                {"key": "error", "type": "bool", "value": true},
                {"key": "otel.status_description", "type": "string", "value": "boom"},
                {"key": "w3c.tracestate", "type": "string", "value": "k=v"},
            ])
        );
        // 64-bit trace ids print as 16 digits; times truncate to microseconds.
        assert_eq!(trace["traceID"], "0000000000000001");
        assert_eq!(trace["spans"][0]["startTime"], 1_485_467_191_639_875u64);
        assert_eq!(trace["spans"][0]["duration"], 5);
        assert_eq!(trace["spans"][0]["warnings"], Value::Null);
        assert_eq!(trace["warnings"], Value::Null);
    }

    #[test]
    fn references_and_logs_translate_like_jaeger() {
        let mut s = span(4);
        s.parent_span_id = vec![0, 0, 0, 0, 0, 0, 0, 2];
        let link = |trace: u8, span: u8, ref_type: Option<&str>| span::Link {
            trace_id: {
                let mut t = vec![0u8; 16];
                t[15] = trace;
                t
            },
            span_id: vec![0, 0, 0, 0, 0, 0, 0, span],
            attributes: ref_type
                .map(|r| vec![kv("opentracing.ref_type", text(r))])
                .unwrap_or_default(),
            ..Default::default()
        };
        s.links = vec![
            link(0xff, 0xff, Some("child_of")),
            link(1, 2, Some("follows_from")),
            link(1, 3, None),
        ];
        s.events = vec![
            span::Event {
                time_unix_nano: 1_000_999,
                name: "some-event".into(),
                ..Default::default()
            },
            span::Event {
                time_unix_nano: 2_000,
                name: "named".into(),
                attributes: vec![kv("event", text("own")), kv("x", text("y"))],
                ..Default::default()
            },
            span::Event {
                time_unix_nano: 3_000,
                ..Default::default()
            },
        ];
        let trace = serde_json::to_value(trace(&[resource(vec![], vec![s])])).unwrap();
        let span = &trace["spans"][0];
        assert_eq!(
            span["references"],
            json!([
                // The link to the parent changed the parent reference's type.
                {"refType": "FOLLOWS_FROM", "traceID": "0000000000000001", "spanID": "0000000000000002"},
                {"refType": "CHILD_OF", "traceID": "00000000000000ff", "spanID": "00000000000000ff"},
                {"refType": "FOLLOWS_FROM", "traceID": "0000000000000001", "spanID": "0000000000000003"},
            ])
        );
        assert_eq!(
            span["logs"],
            json!([
                {"timestamp": 1_000, "fields": [{"key": "event", "type": "string", "value": "some-event"}]},
                {"timestamp": 2, "fields": [
                    {"key": "event", "type": "string", "value": "own"},
                    {"key": "x", "type": "string", "value": "y"},
                ]},
                {"timestamp": 3, "fields": []},
            ])
        );
        assert_eq!(trace["processes"]["p1"]["serviceName"], UNKNOWN_SERVICE);
    }

    #[test]
    fn equal_processes_share_an_id() {
        let web = || vec![kv("service.name", text("web")), kv("host", text("a"))];
        let trace = serde_json::to_value(trace(&[
            resource(web(), vec![span(1)]),
            resource(
                vec![kv("host", text("b")), kv("service.name", text("db"))],
                vec![span(2)],
            ),
            resource(web(), vec![span(3)]),
        ]))
        .unwrap();
        let ids: Vec<&Value> = trace["spans"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| &s["processID"])
            .collect();
        assert_eq!(ids, ["p1", "p2", "p1"]);
        assert_eq!(
            trace["processes"],
            json!({
                "p1": {"serviceName": "web", "tags": [{"key": "host", "type": "string", "value": "a"}]},
                "p2": {"serviceName": "db", "tags": [{"key": "host", "type": "string", "value": "b"}]},
            })
        );
    }

    #[test]
    fn trace_ids_print_like_jaeger() {
        assert_eq!(trace_id_text(&[0; 16]), "0000000000000000");
        let mut id = [0u8; 16];
        id[7] = 1;
        assert_eq!(trace_id_text(&id), "00000000000000010000000000000000");
    }
}
