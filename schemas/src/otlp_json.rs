//! OTLP/JSON (the `application/json` encoding of OTLP/HTTP) to and from the prost types.
//!
//! Why not `opentelemetry-proto`'s `with-serde` derives: in 0.33 they reject valid OTLP/JSON
//! (enum names such as `"SPAN_KIND_SERVER"`, `"NaN"`/`"Infinity"` for `asDouble`, `sum`, `min`,
//! `max`, `explicitBounds`, `doubleValue`; `{"arrayValue":{}}` without `values`; `null` for any
//! scalar field; snake_case field names) and serialize NaN/infinite doubles as `null`. This is a
//! small walker over `serde_json::Value` instead, written against the spec
//! (<https://opentelemetry.io/docs/specs/otlp/#json-protobuf-encoding>):
//!
//! * trace and span ids are hex (either case); as a courtesy to old clients that followed the
//!   generic proto3 mapping, a value that is not hex is tried as base64;
//! * enums as integers or as their proto names;
//! * 64-bit integers as decimal strings or JSON numbers; doubles as numbers or the strings
//!   `"NaN"`, `"Infinity"`, `"-Infinity"` (or a decimal string);
//! * lowerCamelCase keys, with the original snake_case proto names accepted too;
//! * `null` means "absent"; unknown fields are ignored.
//!
//! Encoding writes lowerCamelCase keys, hex ids, 64-bit integers as strings and enums as
//! integers, and omits fields that hold their default value (as the proto3 mapping does),
//! except a few identity fields (`traceId`, `spanId`, `name`, times) that are always written.
//!
//! Serde's recursion limit (128) bounds nesting, so the recursive walk cannot overflow the
//! stack on hostile input.
//!
//! Decoding never holds a `Value` tree of the whole body (about 25x the body for typical
//! spans): the levels down to spans, metrics and data points are read as raw slices of the
//! body, and each span or data point becomes a tree only while it is converted.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    AnyValue, ArrayValue, EntityRef, InstrumentationScope, KeyValue, KeyValueList, any_value,
};
use opentelemetry_proto::tonic::metrics::v1::{
    Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Histogram,
    HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, Summary,
    SummaryDataPoint, exemplar, exponential_histogram_data_point::Buckets, metric,
    number_data_point, summary_data_point::ValueAtQuantile,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde_json::value::RawValue;
use serde_json::{Map, Number, Value};

use crate::{Error, Result};

type Obj = Map<String, Value>;

/// Base64 as the proto3 JSON mapping allows it: standard or URL-safe alphabet, padded or not.
const B64_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);
const B64_URL: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const SPAN_KIND_NAMES: &[&str] = &[
    "SPAN_KIND_UNSPECIFIED",
    "SPAN_KIND_INTERNAL",
    "SPAN_KIND_SERVER",
    "SPAN_KIND_CLIENT",
    "SPAN_KIND_PRODUCER",
    "SPAN_KIND_CONSUMER",
];
const STATUS_CODE_NAMES: &[&str] = &["STATUS_CODE_UNSET", "STATUS_CODE_OK", "STATUS_CODE_ERROR"];
const TEMPORALITY_NAMES: &[&str] = &[
    "AGGREGATION_TEMPORALITY_UNSPECIFIED",
    "AGGREGATION_TEMPORALITY_DELTA",
    "AGGREGATION_TEMPORALITY_CUMULATIVE",
];

// =============================================================================================
// Public API
// =============================================================================================

/// Decodes an OTLP/JSON `ExportTraceServiceRequest` body.
///
/// Only one span at a time is held as a `serde_json::Value` tree: the levels above spans are
/// read as raw JSON slices of the body (a tree of the whole body costs ~25x its size).
pub fn decode_traces(body: &[u8]) -> Result<ExportTraceServiceRequest> {
    let root = parse_raw(body)?;
    let top = split(root, "request", &[("resourceSpans", "resource_spans")])?;
    Ok(ExportTraceServiceRequest {
        resource_spans: each(top.lazy[0], "resourceSpans", resource_spans)?,
    })
}

/// Decodes an OTLP/JSON `ExportMetricsServiceRequest` body (one data point at a time as a
/// `Value` tree, like [`decode_traces`]).
pub fn decode_metrics(body: &[u8]) -> Result<ExportMetricsServiceRequest> {
    let root = parse_raw(body)?;
    let top = split(root, "request", &[("resourceMetrics", "resource_metrics")])?;
    Ok(ExportMetricsServiceRequest {
        resource_metrics: each(top.lazy[0], "resourceMetrics", resource_metrics)?,
    })
}

/// `{"resourceSpans":[...]}` in OTLP/JSON form.
pub fn encode_resource_spans(rs: &[ResourceSpans]) -> Value {
    let mut o = Obj::new();
    o.insert(
        "resourceSpans".into(),
        Value::Array(rs.iter().map(enc_resource_spans).collect()),
    );
    Value::Object(o)
}

/// `{"resourceMetrics":[...]}` in OTLP/JSON form.
pub fn encode_resource_metrics(rm: &[ResourceMetrics]) -> Value {
    let mut o = Obj::new();
    o.insert(
        "resourceMetrics".into(),
        Value::Array(rm.iter().map(enc_resource_metrics).collect()),
    );
    Value::Object(o)
}

/// `ExportTraceServiceResponse` as OTLP/JSON: `{}` on full success, else
/// `{"partialSuccess":{"rejectedSpans":"2","errorMessage":"..."}}`.
pub fn encode_trace_response(rejected: u64, message: Option<&str>) -> Vec<u8> {
    encode_response("rejectedSpans", rejected, message)
}

/// `ExportMetricsServiceResponse` as OTLP/JSON (`rejectedDataPoints`).
pub fn encode_metrics_response(rejected: u64, message: Option<&str>) -> Vec<u8> {
    encode_response("rejectedDataPoints", rejected, message)
}

fn encode_response(count_key: &str, rejected: u64, message: Option<&str>) -> Vec<u8> {
    let message = message.filter(|m| !m.is_empty());
    if rejected == 0 && message.is_none() {
        return b"{}".to_vec();
    }
    let mut partial = Obj::new();
    if rejected > 0 {
        partial.insert(count_key.into(), Value::String(rejected.to_string()));
    }
    if let Some(m) = message {
        partial.insert("errorMessage".into(), Value::String(m.to_owned()));
    }
    let mut o = Obj::new();
    o.insert("partialSuccess".into(), Value::Object(partial));
    Value::Object(o).to_string().into_bytes()
}

/// One `AnyValue` as OTLP/JSON (`{"stringValue":"x"}`, `{"intValue":"5"}`, `{}` when empty).
/// Also the stored rendering of array and kvlist attribute values.
pub fn any_value_to_json(v: &AnyValue) -> Value {
    enc_any_value(v)
}

/// Inverse of [`any_value_to_json`].
pub fn any_value_from_json(v: &Value) -> Result<AnyValue> {
    any_value(v)
}

// =============================================================================================
// Decoding helpers
// =============================================================================================

/// The body as one raw JSON value (syntax checked, nothing built).
fn parse_raw(body: &[u8]) -> Result<&RawValue> {
    serde_json::from_slice(body).map_err(|e| Error::Json(e.to_string()))
}

fn value(raw: &RawValue) -> Result<Value> {
    serde_json::from_str(raw.get()).map_err(|e| Error::Json(e.to_string()))
}

/// An object whose big list fields are kept as raw JSON, to be decoded element by element.
struct Split<'a> {
    /// Every other field, parsed.
    obj: Obj,
    /// Per `(camel, snake)` pair asked for: the camelCase value unless absent or `null`,
    /// else the snake_case one (the same rule as [`get`]).
    lazy: Vec<Option<&'a RawValue>>,
}

fn split<'a>(raw: &'a RawValue, what: &str, lazy: &[(&str, &str)]) -> Result<Split<'a>> {
    if !raw.get().starts_with('{') {
        return Err(Error::Json(format!("{what}: expected a json object")));
    }
    // A map, so a repeated key keeps its last value, as in a `Value` tree.
    let fields: std::collections::BTreeMap<String, &'a RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| Error::Json(e.to_string()))?;
    let mut obj = Obj::new();
    let mut camel = vec![None; lazy.len()];
    let mut snake = vec![None; lazy.len()];
    for (key, raw) in fields {
        let present = raw.get() != "null";
        if let Some(i) = lazy.iter().position(|(c, _)| *c == key) {
            camel[i] = present.then_some(raw);
        } else if let Some(i) = lazy.iter().position(|(_, s)| *s == key) {
            snake[i] = present.then_some(raw);
        } else {
            obj.insert(key, value(raw)?);
        }
    }
    Ok(Split {
        obj,
        lazy: camel.into_iter().zip(snake).map(|(c, s)| c.or(s)).collect(),
    })
}

/// Decodes every element of a raw JSON array (absent: none).
fn each<'a, T>(
    raw: Option<&'a RawValue>,
    camel: &str,
    item: impl Fn(&'a RawValue) -> Result<T>,
) -> Result<Vec<T>> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    if !raw.get().starts_with('[') {
        return Err(err(camel, "expected an array"));
    }
    let items: Vec<&'a RawValue> =
        serde_json::from_str(raw.get()).map_err(|e| Error::Json(e.to_string()))?;
    items.into_iter().map(item).collect()
}

fn err(field: &str, what: &str) -> Error {
    Error::Json(format!("field {field}: {what}"))
}

fn as_obj<'a>(v: &'a Value, what: &str) -> Result<&'a Obj> {
    v.as_object()
        .ok_or_else(|| Error::Json(format!("{what}: expected a json object")))
}

/// The value of a field by its lowerCamelCase or its snake_case name; `null` counts as absent.
fn get<'a>(o: &'a Obj, camel: &str, snake: &str) -> Option<&'a Value> {
    match o.get(camel) {
        Some(Value::Null) | None if camel != snake => match o.get(snake) {
            Some(Value::Null) | None => None,
            v => v,
        },
        Some(Value::Null) | None => None,
        v => v,
    }
}

fn list<T>(
    o: &Obj,
    camel: &str,
    snake: &str,
    item: impl Fn(&Value) -> Result<T>,
) -> Result<Vec<T>> {
    match get(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::Array(items)) => items.iter().map(item).collect(),
        Some(_) => Err(err(camel, "expected an array")),
    }
}

fn obj_field<'a>(o: &'a Obj, camel: &str, snake: &str) -> Result<Option<&'a Obj>> {
    match get(o, camel, snake) {
        None => Ok(None),
        Some(Value::Object(m)) => Ok(Some(m)),
        Some(_) => Err(err(camel, "expected an object")),
    }
}

fn string(o: &Obj, camel: &str, snake: &str) -> Result<String> {
    match get(o, camel, snake) {
        None => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(err(camel, "expected a string")),
    }
}

fn boolean(o: &Obj, camel: &str, snake: &str) -> Result<bool> {
    match get(o, camel, snake) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(_) => Err(err(camel, "expected a boolean")),
    }
}

/// Any JSON integer form (number, or decimal string; an integral float is accepted because
/// some encoders write `1e3`) widened to i128 so every proto integer type fits before the range
/// check.
fn integer_value(v: &Value, field: &str) -> Result<i128> {
    fn from_float(f: f64, field: &str) -> Result<i128> {
        // 2^64 bounds every proto integer type; the range check happens in the caller.
        if f.is_finite() && f.fract() == 0.0 && f.abs() < 18_446_744_073_709_551_616.0 {
            Ok(f as i128)
        } else {
            Err(err(field, "expected an integer"))
        }
    }
    match v {
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                Ok(i128::from(u))
            } else if let Some(i) = n.as_i64() {
                Ok(i128::from(i))
            } else {
                from_float(n.as_f64().unwrap_or(f64::NAN), field)
            }
        }
        Value::String(s) => match s.trim().parse::<i128>() {
            Ok(i) => Ok(i),
            Err(_) => from_float(
                s.trim()
                    .parse::<f64>()
                    .map_err(|_| err(field, "expected an integer"))?,
                field,
            ),
        },
        _ => Err(err(field, "expected an integer (number or string)")),
    }
}

fn int<T: TryFrom<i128>>(o: &Obj, camel: &str, snake: &str) -> Result<T> {
    let wide = match get(o, camel, snake) {
        None => 0,
        Some(v) => integer_value(v, camel)?,
    };
    T::try_from(wide).map_err(|_| err(camel, "integer out of range"))
}

fn float_value(v: &Value, field: &str) -> Result<f64> {
    match v {
        Value::Number(n) => n
            .as_f64()
            .ok_or_else(|| err(field, "expected a floating point number")),
        Value::String(s) => match s.as_str() {
            "NaN" => Ok(f64::NAN),
            "Infinity" => Ok(f64::INFINITY),
            "-Infinity" => Ok(f64::NEG_INFINITY),
            other => other
                .trim()
                .parse::<f64>()
                .map_err(|_| err(field, "expected a floating point number")),
        },
        _ => Err(err(field, "expected a floating point number")),
    }
}

fn float(o: &Obj, camel: &str, snake: &str) -> Result<f64> {
    Ok(opt_float(o, camel, snake)?.unwrap_or(0.0))
}

fn opt_float(o: &Obj, camel: &str, snake: &str) -> Result<Option<f64>> {
    get(o, camel, snake)
        .map(|v| float_value(v, camel))
        .transpose()
}

fn enumeration(o: &Obj, camel: &str, snake: &str, names: &[&str]) -> Result<i32> {
    match get(o, camel, snake) {
        Some(Value::String(s)) => match names.iter().position(|n| n == s) {
            // The name tables are tiny; their positions are their proto values.
            Some(i) => i32::try_from(i).map_err(|_| err(camel, "enum out of range")),
            None => s
                .trim()
                .parse::<i32>()
                .map_err(|_| err(camel, "unknown enum value")),
        },
        _ => int::<i32>(o, camel, snake),
    }
}

/// Trace / span id: hex per the OTLP spec, base64 accepted as a fallback.
fn id(o: &Obj, camel: &str, snake: &str) -> Result<Vec<u8>> {
    match get(o, camel, snake) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) => hex::decode(s)
            .or_else(|_| B64_STD.decode(s))
            .map_err(|_| err(camel, "expected a hex-encoded id")),
        Some(_) => Err(err(camel, "expected a hex string")),
    }
}

fn uint_list(o: &Obj, camel: &str, snake: &str) -> Result<Vec<u64>> {
    list(o, camel, snake, |v| {
        u64::try_from(integer_value(v, camel)?).map_err(|_| err(camel, "integer out of range"))
    })
}

fn float_list(o: &Obj, camel: &str, snake: &str) -> Result<Vec<f64>> {
    list(o, camel, snake, |v| float_value(v, camel))
}

// ---- common ---------------------------------------------------------------------------------

fn attributes(o: &Obj, camel: &str, snake: &str) -> Result<Vec<KeyValue>> {
    list(o, camel, snake, key_value)
}

fn key_value(v: &Value) -> Result<KeyValue> {
    let o = as_obj(v, "attribute")?;
    Ok(KeyValue {
        key: string(o, "key", "key")?,
        value: get(o, "value", "value").map(any_value).transpose()?,
        key_strindex: 0,
    })
}

fn any_value(v: &Value) -> Result<AnyValue> {
    use any_value::Value as V;
    let o = as_obj(v, "attribute value")?;
    let value = if let Some(s) = get(o, "stringValue", "string_value") {
        match s {
            Value::String(s) => Some(V::StringValue(s.clone())),
            _ => return Err(err("stringValue", "expected a string")),
        }
    } else if get(o, "boolValue", "bool_value").is_some() {
        Some(V::BoolValue(boolean(o, "boolValue", "bool_value")?))
    } else if get(o, "intValue", "int_value").is_some() {
        Some(V::IntValue(int(o, "intValue", "int_value")?))
    } else if get(o, "doubleValue", "double_value").is_some() {
        Some(V::DoubleValue(float(o, "doubleValue", "double_value")?))
    } else if let Some(a) = obj_field(o, "arrayValue", "array_value")? {
        Some(V::ArrayValue(ArrayValue {
            values: list(a, "values", "values", any_value)?,
        }))
    } else if let Some(kv) = obj_field(o, "kvlistValue", "kvlist_value")? {
        Some(V::KvlistValue(KeyValueList {
            values: list(kv, "values", "values", key_value)?,
        }))
    } else if let Some(b) = get(o, "bytesValue", "bytes_value") {
        let s = b
            .as_str()
            .ok_or_else(|| err("bytesValue", "expected a base64 string"))?;
        Some(V::BytesValue(
            B64_STD
                .decode(s)
                .or_else(|_| B64_URL.decode(s))
                .map_err(|_| err("bytesValue", "invalid base64"))?,
        ))
    } else {
        // `{}` (or only unknown fields) is a valid, empty AnyValue.
        None
    };
    Ok(AnyValue { value })
}

fn resource(o: &Obj) -> Result<Option<Resource>> {
    let Some(r) = obj_field(o, "resource", "resource")? else {
        return Ok(None);
    };
    Ok(Some(Resource {
        attributes: attributes(r, "attributes", "attributes")?,
        dropped_attributes_count: int(r, "droppedAttributesCount", "dropped_attributes_count")?,
        entity_refs: list(r, "entityRefs", "entity_refs", entity_ref)?,
    }))
}

fn entity_ref(v: &Value) -> Result<EntityRef> {
    let o = as_obj(v, "entityRef")?;
    let strings = |camel, snake| {
        list(o, camel, snake, |s| {
            s.as_str()
                .map(str::to_owned)
                .ok_or_else(|| err(camel, "expected a string"))
        })
    };
    Ok(EntityRef {
        schema_url: string(o, "schemaUrl", "schema_url")?,
        r#type: string(o, "type", "type")?,
        id_keys: strings("idKeys", "id_keys")?,
        description_keys: strings("descriptionKeys", "description_keys")?,
    })
}

fn scope(o: &Obj) -> Result<Option<InstrumentationScope>> {
    let Some(s) = obj_field(o, "scope", "scope")? else {
        return Ok(None);
    };
    Ok(Some(InstrumentationScope {
        name: string(s, "name", "name")?,
        version: string(s, "version", "version")?,
        attributes: attributes(s, "attributes", "attributes")?,
        dropped_attributes_count: int(s, "droppedAttributesCount", "dropped_attributes_count")?,
    }))
}

// ---- traces ---------------------------------------------------------------------------------

fn resource_spans(raw: &RawValue) -> Result<ResourceSpans> {
    let s = split(raw, "resourceSpans", &[("scopeSpans", "scope_spans")])?;
    Ok(ResourceSpans {
        resource: resource(&s.obj)?,
        scope_spans: each(s.lazy[0], "scopeSpans", scope_spans)?,
        schema_url: string(&s.obj, "schemaUrl", "schema_url")?,
    })
}

fn scope_spans(raw: &RawValue) -> Result<ScopeSpans> {
    let s = split(raw, "scopeSpans", &[("spans", "spans")])?;
    Ok(ScopeSpans {
        scope: scope(&s.obj)?,
        spans: each(s.lazy[0], "spans", |r| decode_span(&value(r)?))?,
        schema_url: string(&s.obj, "schemaUrl", "schema_url")?,
    })
}

fn decode_span(v: &Value) -> Result<Span> {
    let o = as_obj(v, "span")?;
    let status = obj_field(o, "status", "status")?
        .map(|s| -> Result<Status> {
            Ok(Status {
                message: string(s, "message", "message")?,
                code: enumeration(s, "code", "code", STATUS_CODE_NAMES)?,
            })
        })
        .transpose()?;
    Ok(Span {
        trace_id: id(o, "traceId", "trace_id")?,
        span_id: id(o, "spanId", "span_id")?,
        trace_state: string(o, "traceState", "trace_state")?,
        parent_span_id: id(o, "parentSpanId", "parent_span_id")?,
        flags: int(o, "flags", "flags")?,
        name: string(o, "name", "name")?,
        kind: enumeration(o, "kind", "kind", SPAN_KIND_NAMES)?,
        start_time_unix_nano: int(o, "startTimeUnixNano", "start_time_unix_nano")?,
        end_time_unix_nano: int(o, "endTimeUnixNano", "end_time_unix_nano")?,
        attributes: attributes(o, "attributes", "attributes")?,
        dropped_attributes_count: int(o, "droppedAttributesCount", "dropped_attributes_count")?,
        events: list(o, "events", "events", decode_event)?,
        dropped_events_count: int(o, "droppedEventsCount", "dropped_events_count")?,
        links: list(o, "links", "links", decode_link)?,
        dropped_links_count: int(o, "droppedLinksCount", "dropped_links_count")?,
        status,
    })
}

fn decode_event(v: &Value) -> Result<span::Event> {
    let o = as_obj(v, "event")?;
    Ok(span::Event {
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        name: string(o, "name", "name")?,
        attributes: attributes(o, "attributes", "attributes")?,
        dropped_attributes_count: int(o, "droppedAttributesCount", "dropped_attributes_count")?,
    })
}

fn decode_link(v: &Value) -> Result<span::Link> {
    let o = as_obj(v, "link")?;
    Ok(span::Link {
        trace_id: id(o, "traceId", "trace_id")?,
        span_id: id(o, "spanId", "span_id")?,
        trace_state: string(o, "traceState", "trace_state")?,
        attributes: attributes(o, "attributes", "attributes")?,
        dropped_attributes_count: int(o, "droppedAttributesCount", "dropped_attributes_count")?,
        flags: int(o, "flags", "flags")?,
    })
}

// ---- metrics --------------------------------------------------------------------------------

fn resource_metrics(raw: &RawValue) -> Result<ResourceMetrics> {
    let s = split(raw, "resourceMetrics", &[("scopeMetrics", "scope_metrics")])?;
    Ok(ResourceMetrics {
        resource: resource(&s.obj)?,
        scope_metrics: each(s.lazy[0], "scopeMetrics", scope_metrics)?,
        schema_url: string(&s.obj, "schemaUrl", "schema_url")?,
    })
}

fn scope_metrics(raw: &RawValue) -> Result<ScopeMetrics> {
    let s = split(raw, "scopeMetrics", &[("metrics", "metrics")])?;
    Ok(ScopeMetrics {
        scope: scope(&s.obj)?,
        metrics: each(s.lazy[0], "metrics", decode_metric)?,
        schema_url: string(&s.obj, "schemaUrl", "schema_url")?,
    })
}

/// The data variants of a metric, in the order the first present one is taken.
const METRIC_DATA: [(&str, &str); 5] = [
    ("gauge", "gauge"),
    ("sum", "sum"),
    ("histogram", "histogram"),
    ("exponentialHistogram", "exponential_histogram"),
    ("summary", "summary"),
];

fn decode_metric(raw: &RawValue) -> Result<Metric> {
    let s = split(raw, "metric", &METRIC_DATA)?;
    let o = &s.obj;
    let temporality = |d: &Obj| {
        enumeration(
            d,
            "aggregationTemporality",
            "aggregation_temporality",
            TEMPORALITY_NAMES,
        )
    };
    // The variant's object, with its data points left raw.
    let variant = |i: usize| -> Result<Option<Split<'_>>> {
        s.lazy[i]
            .map(|d| split(d, METRIC_DATA[i].0, &[("dataPoints", "data_points")]))
            .transpose()
    };
    let data = if let Some(d) = variant(0)? {
        Some(metric::Data::Gauge(Gauge {
            data_points: each(d.lazy[0], "dataPoints", |r| number_point(&value(r)?))?,
        }))
    } else if let Some(d) = variant(1)? {
        Some(metric::Data::Sum(Sum {
            data_points: each(d.lazy[0], "dataPoints", |r| number_point(&value(r)?))?,
            aggregation_temporality: temporality(&d.obj)?,
            is_monotonic: boolean(&d.obj, "isMonotonic", "is_monotonic")?,
        }))
    } else if let Some(d) = variant(2)? {
        Some(metric::Data::Histogram(Histogram {
            data_points: each(d.lazy[0], "dataPoints", |r| histogram_point(&value(r)?))?,
            aggregation_temporality: temporality(&d.obj)?,
        }))
    } else if let Some(d) = variant(3)? {
        Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
            data_points: each(d.lazy[0], "dataPoints", |r| exp_histogram_point(&value(r)?))?,
            aggregation_temporality: temporality(&d.obj)?,
        }))
    } else if let Some(d) = variant(4)? {
        Some(metric::Data::Summary(Summary {
            data_points: each(d.lazy[0], "dataPoints", |r| summary_point(&value(r)?))?,
        }))
    } else {
        None
    };
    Ok(Metric {
        name: string(o, "name", "name")?,
        description: string(o, "description", "description")?,
        unit: string(o, "unit", "unit")?,
        metadata: attributes(o, "metadata", "metadata")?,
        data,
    })
}

fn number_point(v: &Value) -> Result<NumberDataPoint> {
    let o = as_obj(v, "dataPoint")?;
    let value = if get(o, "asDouble", "as_double").is_some() {
        Some(number_data_point::Value::AsDouble(float(
            o,
            "asDouble",
            "as_double",
        )?))
    } else if get(o, "asInt", "as_int").is_some() {
        Some(number_data_point::Value::AsInt(int(o, "asInt", "as_int")?))
    } else {
        None
    };
    Ok(NumberDataPoint {
        attributes: attributes(o, "attributes", "attributes")?,
        start_time_unix_nano: int(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        exemplars: list(o, "exemplars", "exemplars", decode_exemplar)?,
        flags: int(o, "flags", "flags")?,
        value,
    })
}

fn histogram_point(v: &Value) -> Result<HistogramDataPoint> {
    let o = as_obj(v, "dataPoint")?;
    Ok(HistogramDataPoint {
        attributes: attributes(o, "attributes", "attributes")?,
        start_time_unix_nano: int(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        count: int(o, "count", "count")?,
        sum: opt_float(o, "sum", "sum")?,
        bucket_counts: uint_list(o, "bucketCounts", "bucket_counts")?,
        explicit_bounds: float_list(o, "explicitBounds", "explicit_bounds")?,
        exemplars: list(o, "exemplars", "exemplars", decode_exemplar)?,
        flags: int(o, "flags", "flags")?,
        min: opt_float(o, "min", "min")?,
        max: opt_float(o, "max", "max")?,
    })
}

fn buckets(o: &Obj, camel: &str, snake: &str) -> Result<Option<Buckets>> {
    obj_field(o, camel, snake)?
        .map(|b| -> Result<Buckets> {
            Ok(Buckets {
                offset: int(b, "offset", "offset")?,
                bucket_counts: uint_list(b, "bucketCounts", "bucket_counts")?,
            })
        })
        .transpose()
}

fn exp_histogram_point(v: &Value) -> Result<ExponentialHistogramDataPoint> {
    let o = as_obj(v, "dataPoint")?;
    Ok(ExponentialHistogramDataPoint {
        attributes: attributes(o, "attributes", "attributes")?,
        start_time_unix_nano: int(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        count: int(o, "count", "count")?,
        sum: opt_float(o, "sum", "sum")?,
        scale: int(o, "scale", "scale")?,
        zero_count: int(o, "zeroCount", "zero_count")?,
        positive: buckets(o, "positive", "positive")?,
        negative: buckets(o, "negative", "negative")?,
        flags: int(o, "flags", "flags")?,
        exemplars: list(o, "exemplars", "exemplars", decode_exemplar)?,
        min: opt_float(o, "min", "min")?,
        max: opt_float(o, "max", "max")?,
        zero_threshold: float(o, "zeroThreshold", "zero_threshold")?,
    })
}

fn summary_point(v: &Value) -> Result<SummaryDataPoint> {
    let o = as_obj(v, "dataPoint")?;
    Ok(SummaryDataPoint {
        attributes: attributes(o, "attributes", "attributes")?,
        start_time_unix_nano: int(o, "startTimeUnixNano", "start_time_unix_nano")?,
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        count: int(o, "count", "count")?,
        sum: float(o, "sum", "sum")?,
        quantile_values: list(o, "quantileValues", "quantile_values", |q| {
            let q = as_obj(q, "quantileValue")?;
            Ok(ValueAtQuantile {
                quantile: float(q, "quantile", "quantile")?,
                value: float(q, "value", "value")?,
            })
        })?,
        flags: int(o, "flags", "flags")?,
    })
}

fn decode_exemplar(v: &Value) -> Result<Exemplar> {
    let o = as_obj(v, "exemplar")?;
    let value = if get(o, "asDouble", "as_double").is_some() {
        Some(exemplar::Value::AsDouble(float(
            o,
            "asDouble",
            "as_double",
        )?))
    } else if get(o, "asInt", "as_int").is_some() {
        Some(exemplar::Value::AsInt(int(o, "asInt", "as_int")?))
    } else {
        None
    };
    Ok(Exemplar {
        filtered_attributes: attributes(o, "filteredAttributes", "filtered_attributes")?,
        time_unix_nano: int(o, "timeUnixNano", "time_unix_nano")?,
        span_id: id(o, "spanId", "span_id")?,
        trace_id: id(o, "traceId", "trace_id")?,
        value,
    })
}

// =============================================================================================
// Encoding
// =============================================================================================

/// Object under construction; the `opt_*` setters skip default values like the proto3 mapping.
#[derive(Default)]
struct Out(Obj);

impl Out {
    fn set(&mut self, k: &str, v: Value) -> &mut Self {
        self.0.insert(k.to_owned(), v);
        self
    }
    fn opt_str(&mut self, k: &str, s: &str) -> &mut Self {
        if !s.is_empty() {
            self.set(k, Value::String(s.to_owned()));
        }
        self
    }
    fn opt_u32(&mut self, k: &str, v: u32) -> &mut Self {
        if v != 0 {
            self.set(k, Value::from(v));
        }
        self
    }
    fn opt_i32(&mut self, k: &str, v: i32) -> &mut Self {
        if v != 0 {
            self.set(k, Value::from(v));
        }
        self
    }
    /// 64-bit integers are strings in OTLP/JSON (JavaScript loses precision past 2^53).
    fn u64_str(&mut self, k: &str, v: u64) -> &mut Self {
        self.set(k, Value::String(v.to_string()))
    }
    fn opt_u64_str(&mut self, k: &str, v: u64) -> &mut Self {
        if v != 0 {
            self.u64_str(k, v);
        }
        self
    }
    fn opt_f64(&mut self, k: &str, v: f64) -> &mut Self {
        // -0.0 is kept: it is not the default value bit-for-bit.
        if v != 0.0 || v.is_sign_negative() {
            self.set(k, enc_f64(v));
        }
        self
    }
    fn opt_attrs(&mut self, k: &str, kvs: &[KeyValue]) -> &mut Self {
        if !kvs.is_empty() {
            self.set(k, Value::Array(kvs.iter().map(enc_key_value).collect()));
        }
        self
    }
    fn opt_list(&mut self, k: &str, items: Vec<Value>) -> &mut Self {
        if !items.is_empty() {
            self.set(k, Value::Array(items));
        }
        self
    }
    fn id(&mut self, k: &str, bytes: &[u8]) -> &mut Self {
        self.set(k, Value::String(hex::encode(bytes)))
    }
    fn opt_id(&mut self, k: &str, bytes: &[u8]) -> &mut Self {
        if !bytes.is_empty() {
            self.id(k, bytes);
        }
        self
    }
    fn done(&mut self) -> Value {
        Value::Object(std::mem::take(&mut self.0))
    }
}

/// JSON numbers cannot hold NaN or infinities; proto3 JSON uses these strings for them.
fn enc_f64(v: f64) -> Value {
    if v.is_nan() {
        Value::String("NaN".into())
    } else if v.is_infinite() {
        Value::String(if v > 0.0 { "Infinity" } else { "-Infinity" }.into())
    } else {
        Number::from_f64(v).map_or(Value::Null, Value::Number)
    }
}

fn enc_u64_list(v: &[u64]) -> Vec<Value> {
    v.iter().map(|c| Value::String(c.to_string())).collect()
}

fn enc_any_value(v: &AnyValue) -> Value {
    use any_value::Value as V;
    let mut o = Out::default();
    match &v.value {
        None => {}
        Some(V::StringValue(s)) => {
            o.set("stringValue", Value::String(s.clone()));
        }
        Some(V::BoolValue(b)) => {
            o.set("boolValue", Value::Bool(*b));
        }
        Some(V::IntValue(i)) => {
            o.set("intValue", Value::String(i.to_string()));
        }
        Some(V::DoubleValue(d)) => {
            o.set("doubleValue", enc_f64(*d));
        }
        Some(V::ArrayValue(a)) => {
            let values = a.values.iter().map(enc_any_value).collect();
            let mut inner = Obj::new();
            inner.insert("values".into(), Value::Array(values));
            o.set("arrayValue", Value::Object(inner));
        }
        Some(V::KvlistValue(kv)) => {
            let values = kv.values.iter().map(enc_key_value).collect();
            let mut inner = Obj::new();
            inner.insert("values".into(), Value::Array(values));
            o.set("kvlistValue", Value::Object(inner));
        }
        Some(V::BytesValue(b)) => {
            o.set("bytesValue", Value::String(B64_STD.encode(b)));
        }
        // Profiles-only string-table reference: meaningless without the profile's dictionary.
        Some(V::StringValueStrindex(_)) => {}
    }
    o.done()
}

fn enc_key_value(kv: &KeyValue) -> Value {
    let mut o = Out::default();
    o.set("key", Value::String(kv.key.clone()));
    if let Some(v) = &kv.value {
        o.set("value", enc_any_value(v));
    }
    o.done()
}

fn enc_resource(r: &Resource) -> Value {
    let mut o = Out::default();
    // Always an attributes array, even empty: readers look here for service.name.
    o.set(
        "attributes",
        Value::Array(r.attributes.iter().map(enc_key_value).collect()),
    );
    o.opt_u32("droppedAttributesCount", r.dropped_attributes_count);
    let refs = r
        .entity_refs
        .iter()
        .map(|e| {
            let strings = |v: &[String]| v.iter().map(|s| Value::String(s.clone())).collect();
            Out::default()
                .opt_str("schemaUrl", &e.schema_url)
                .opt_str("type", &e.r#type)
                .opt_list("idKeys", strings(&e.id_keys))
                .opt_list("descriptionKeys", strings(&e.description_keys))
                .done()
        })
        .collect();
    o.opt_list("entityRefs", refs);
    o.done()
}

fn enc_scope(s: &InstrumentationScope) -> Value {
    Out::default()
        .set("name", Value::String(s.name.clone()))
        .opt_str("version", &s.version)
        .opt_attrs("attributes", &s.attributes)
        .opt_u32("droppedAttributesCount", s.dropped_attributes_count)
        .done()
}

fn enc_resource_spans(rs: &ResourceSpans) -> Value {
    let mut o = Out::default();
    if let Some(r) = &rs.resource {
        o.set("resource", enc_resource(r));
    }
    let scopes = rs
        .scope_spans
        .iter()
        .map(|ss| {
            let mut so = Out::default();
            if let Some(s) = &ss.scope {
                so.set("scope", enc_scope(s));
            }
            so.set(
                "spans",
                Value::Array(ss.spans.iter().map(enc_span).collect()),
            )
            .opt_str("schemaUrl", &ss.schema_url)
            .done()
        })
        .collect();
    o.set("scopeSpans", Value::Array(scopes))
        .opt_str("schemaUrl", &rs.schema_url)
        .done()
}

fn enc_span(s: &Span) -> Value {
    let mut o = Out::default();
    o.id("traceId", &s.trace_id)
        .id("spanId", &s.span_id)
        .opt_str("traceState", &s.trace_state)
        .opt_id("parentSpanId", &s.parent_span_id)
        .opt_u32("flags", s.flags)
        .set("name", Value::String(s.name.clone()))
        .set("kind", Value::from(s.kind))
        .u64_str("startTimeUnixNano", s.start_time_unix_nano)
        .u64_str("endTimeUnixNano", s.end_time_unix_nano)
        .opt_attrs("attributes", &s.attributes)
        .opt_u32("droppedAttributesCount", s.dropped_attributes_count);
    let events = s
        .events
        .iter()
        .map(|e| {
            Out::default()
                .u64_str("timeUnixNano", e.time_unix_nano)
                .set("name", Value::String(e.name.clone()))
                .opt_attrs("attributes", &e.attributes)
                .opt_u32("droppedAttributesCount", e.dropped_attributes_count)
                .done()
        })
        .collect();
    o.opt_list("events", events)
        .opt_u32("droppedEventsCount", s.dropped_events_count);
    let links = s
        .links
        .iter()
        .map(|l| {
            Out::default()
                .id("traceId", &l.trace_id)
                .id("spanId", &l.span_id)
                .opt_str("traceState", &l.trace_state)
                .opt_attrs("attributes", &l.attributes)
                .opt_u32("droppedAttributesCount", l.dropped_attributes_count)
                .opt_u32("flags", l.flags)
                .done()
        })
        .collect();
    o.opt_list("links", links)
        .opt_u32("droppedLinksCount", s.dropped_links_count);
    if let Some(st) = &s.status {
        let status = Out::default()
            .opt_str("message", &st.message)
            .opt_i32("code", st.code)
            .done();
        o.set("status", status);
    }
    o.done()
}

fn enc_resource_metrics(rm: &ResourceMetrics) -> Value {
    let mut o = Out::default();
    if let Some(r) = &rm.resource {
        o.set("resource", enc_resource(r));
    }
    let scopes = rm
        .scope_metrics
        .iter()
        .map(|sm| {
            let mut so = Out::default();
            if let Some(s) = &sm.scope {
                so.set("scope", enc_scope(s));
            }
            so.set(
                "metrics",
                Value::Array(sm.metrics.iter().map(enc_metric).collect()),
            )
            .opt_str("schemaUrl", &sm.schema_url)
            .done()
        })
        .collect();
    o.set("scopeMetrics", Value::Array(scopes))
        .opt_str("schemaUrl", &rm.schema_url)
        .done()
}

fn enc_metric(m: &Metric) -> Value {
    let mut o = Out::default();
    o.set("name", Value::String(m.name.clone()))
        .opt_str("description", &m.description)
        .opt_str("unit", &m.unit)
        .opt_attrs("metadata", &m.metadata);
    match &m.data {
        None => {}
        Some(metric::Data::Gauge(g)) => {
            let d = Out::default()
                .set("dataPoints", points(&g.data_points, enc_number_point))
                .done();
            o.set("gauge", d);
        }
        Some(metric::Data::Sum(s)) => {
            let d = Out::default()
                .set("dataPoints", points(&s.data_points, enc_number_point))
                .opt_i32("aggregationTemporality", s.aggregation_temporality)
                .set("isMonotonic", Value::Bool(s.is_monotonic))
                .done();
            o.set("sum", d);
        }
        Some(metric::Data::Histogram(h)) => {
            let d = Out::default()
                .set("dataPoints", points(&h.data_points, enc_histogram_point))
                .opt_i32("aggregationTemporality", h.aggregation_temporality)
                .done();
            o.set("histogram", d);
        }
        Some(metric::Data::ExponentialHistogram(h)) => {
            let d = Out::default()
                .set("dataPoints", points(&h.data_points, enc_exp_point))
                .opt_i32("aggregationTemporality", h.aggregation_temporality)
                .done();
            o.set("exponentialHistogram", d);
        }
        Some(metric::Data::Summary(s)) => {
            let d = Out::default()
                .set("dataPoints", points(&s.data_points, enc_summary_point))
                .done();
            o.set("summary", d);
        }
    }
    o.done()
}

fn points<T>(items: &[T], f: fn(&T) -> Value) -> Value {
    Value::Array(items.iter().map(f).collect())
}

fn enc_point_common(
    o: &mut Out,
    attrs: &[KeyValue],
    start: u64,
    time: u64,
    flags: u32,
    exemplars: &[Exemplar],
) {
    o.opt_attrs("attributes", attrs)
        .opt_u64_str("startTimeUnixNano", start)
        .u64_str("timeUnixNano", time)
        .opt_u32("flags", flags)
        .opt_list("exemplars", exemplars.iter().map(enc_exemplar).collect());
}

fn enc_number_point(p: &NumberDataPoint) -> Value {
    let mut o = Out::default();
    enc_point_common(
        &mut o,
        &p.attributes,
        p.start_time_unix_nano,
        p.time_unix_nano,
        p.flags,
        &p.exemplars,
    );
    match p.value {
        Some(number_data_point::Value::AsDouble(d)) => o.set("asDouble", enc_f64(d)),
        Some(number_data_point::Value::AsInt(i)) => o.set("asInt", Value::String(i.to_string())),
        None => &mut o,
    };
    o.done()
}

fn enc_histogram_point(p: &HistogramDataPoint) -> Value {
    let mut o = Out::default();
    enc_point_common(
        &mut o,
        &p.attributes,
        p.start_time_unix_nano,
        p.time_unix_nano,
        p.flags,
        &p.exemplars,
    );
    o.u64_str("count", p.count)
        .opt_list("bucketCounts", enc_u64_list(&p.bucket_counts))
        .opt_list(
            "explicitBounds",
            p.explicit_bounds.iter().map(|b| enc_f64(*b)).collect(),
        );
    for (k, v) in [("sum", p.sum), ("min", p.min), ("max", p.max)] {
        if let Some(v) = v {
            o.set(k, enc_f64(v));
        }
    }
    o.done()
}

fn enc_buckets(b: &Buckets) -> Value {
    Out::default()
        .opt_i32("offset", b.offset)
        .opt_list("bucketCounts", enc_u64_list(&b.bucket_counts))
        .done()
}

fn enc_exp_point(p: &ExponentialHistogramDataPoint) -> Value {
    let mut o = Out::default();
    enc_point_common(
        &mut o,
        &p.attributes,
        p.start_time_unix_nano,
        p.time_unix_nano,
        p.flags,
        &p.exemplars,
    );
    o.u64_str("count", p.count)
        .opt_i32("scale", p.scale)
        .opt_u64_str("zeroCount", p.zero_count)
        .opt_f64("zeroThreshold", p.zero_threshold);
    if let Some(b) = &p.positive {
        o.set("positive", enc_buckets(b));
    }
    if let Some(b) = &p.negative {
        o.set("negative", enc_buckets(b));
    }
    for (k, v) in [("sum", p.sum), ("min", p.min), ("max", p.max)] {
        if let Some(v) = v {
            o.set(k, enc_f64(v));
        }
    }
    o.done()
}

fn enc_summary_point(p: &SummaryDataPoint) -> Value {
    let mut o = Out::default();
    enc_point_common(
        &mut o,
        &p.attributes,
        p.start_time_unix_nano,
        p.time_unix_nano,
        p.flags,
        &[],
    );
    let quantiles = p
        .quantile_values
        .iter()
        .map(|q| {
            Out::default()
                .opt_f64("quantile", q.quantile)
                .opt_f64("value", q.value)
                .done()
        })
        .collect();
    o.u64_str("count", p.count)
        .opt_f64("sum", p.sum)
        .opt_list("quantileValues", quantiles)
        .done()
}

fn enc_exemplar(e: &Exemplar) -> Value {
    let mut o = Out::default();
    o.opt_attrs("filteredAttributes", &e.filtered_attributes)
        .u64_str("timeUnixNano", e.time_unix_nano)
        .opt_id("spanId", &e.span_id)
        .opt_id("traceId", &e.trace_id);
    match e.value {
        Some(exemplar::Value::AsDouble(d)) => o.set("asDouble", enc_f64(d)),
        Some(exemplar::Value::AsInt(i)) => o.set("asInt", Value::String(i.to_string())),
        None => &mut o,
    };
    o.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/testdata");

    /// Vendored in testdata/, so a missing fixture is a failure, never a skip.
    fn fixture(path: &str) -> Vec<u8> {
        std::fs::read(format!("{FIXTURES}/{path}"))
            .unwrap_or_else(|e| panic!("fixture {path} not readable: {e}"))
    }

    fn attr<'a>(kvs: &'a [KeyValue], key: &str) -> Option<&'a any_value::Value> {
        kvs.iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    #[test]
    fn spec_example_trace() {
        let body = fixture("otlp-proto-examples/trace.json");
        let req = decode_traces(&body).unwrap();
        let rs = &req.resource_spans[0];
        assert_eq!(
            attr(&rs.resource.as_ref().unwrap().attributes, "service.name"),
            Some(&any_value::Value::StringValue("my.service".into()))
        );
        let ss = &rs.scope_spans[0];
        let scope = ss.scope.as_ref().unwrap();
        assert_eq!(
            (scope.name.as_str(), scope.version.as_str()),
            ("my.library", "1.0.0")
        );
        let s = &ss.spans[0];
        assert_eq!(hex::encode(&s.trace_id), "5b8efff798038103d269b633813fc60c");
        assert_eq!(hex::encode(&s.span_id), "eee19b7ec3c1b174");
        assert_eq!(hex::encode(&s.parent_span_id), "eee19b7ec3c1b173");
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.end_time_unix_nano, 1_544_712_661_000_000_000);
        assert_eq!(s.kind, 2);
        assert_eq!(s.name, "I'm a server span");
        assert_eq!(
            attr(&s.attributes, "my.span.attr"),
            Some(&any_value::Value::StringValue("some value".into()))
        );
        let converted = crate::spans::from_otlp(&req);
        assert_eq!((converted.batch.num_rows(), converted.rejected), (1, 0));
    }

    #[test]
    fn spec_example_metrics() {
        let body = fixture("otlp-proto-examples/metrics.json");
        let req = decode_metrics(&body).unwrap();
        let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
        assert_eq!(metrics.len(), 4);
        let Some(metric::Data::Sum(sum)) = &metrics[0].data else {
            panic!("sum expected")
        };
        assert!(sum.is_monotonic);
        assert_eq!(sum.aggregation_temporality, 1);
        assert_eq!(
            sum.data_points[0].value,
            Some(number_data_point::Value::AsDouble(5.0))
        );
        assert_eq!(sum.data_points[0].time_unix_nano, 1_544_712_660_300_000_000);
        let Some(metric::Data::Histogram(h)) = &metrics[2].data else {
            panic!("histogram expected")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (p.count, p.sum, p.min, p.max),
            (2, Some(2.0), Some(0.0), Some(2.0))
        );
        assert_eq!(p.bucket_counts, vec![1, 1]);
        assert_eq!(p.explicit_bounds, vec![1.0]);
        let Some(metric::Data::ExponentialHistogram(e)) = &metrics[3].data else {
            panic!("exponential histogram expected")
        };
        let p = &e.data_points[0];
        assert_eq!((p.count, p.zero_count, p.scale), (3, 1, 0));
        assert_eq!(
            p.positive,
            Some(Buckets {
                offset: 1,
                bucket_counts: vec![0, 2]
            })
        );
        assert_eq!(p.negative, None);
    }

    /// Each SDK's JSON capture decodes to the same request as its protobuf capture where both
    /// exist in spirit (same span names, kinds, attribute types).
    #[test]
    fn real_client_json_captures() {
        for name in ["node-http-json", "rust-http-json"] {
            let body = fixture(&format!("real-client-captures/{name}.traces.json"));
            let req = decode_traces(&body).unwrap();
            let converted = crate::spans::from_otlp(&req);
            assert_eq!(
                (converted.batch.num_rows(), converted.rejected),
                (3, 0),
                "{name}"
            );
            let spans = &req.resource_spans[0].scope_spans[0].spans;
            assert_eq!(spans.len(), 3, "{name}");
            let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
            assert_eq!(root.name, "GET /checkout");
            assert_eq!(root.kind, 2);
            assert_eq!(root.trace_id.len(), 16);
            assert_eq!(root.span_id.len(), 8);
            assert_eq!(root.flags, 257);
            assert!(root.end_time_unix_nano > root.start_time_unix_nano);
            assert!(root.start_time_unix_nano > 1_700_000_000_000_000_000);
            assert_eq!(
                attr(&root.attributes, "http.request.method"),
                Some(&any_value::Value::StringValue("GET".into()))
            );
            for child in spans.iter().filter(|s| !s.parent_span_id.is_empty()) {
                assert_eq!(child.parent_span_id, root.span_id);
                assert_eq!(child.trace_id, root.trace_id);
            }

            let body = fixture(&format!("real-client-captures/{name}.metrics.json"));
            let req = decode_metrics(&body).unwrap();
            let converted = crate::metrics::from_otlp(&req);
            assert_eq!(converted.rejected, 0, "{name}");
            assert!(converted.batch.num_rows() >= 2, "{name}");
            let metrics = &req.resource_metrics[0].scope_metrics[0].metrics;
            let counter = metrics.iter().find(|m| m.name == "requests_total").unwrap();
            let Some(metric::Data::Sum(sum)) = &counter.data else {
                panic!("{name}: counter is a sum")
            };
            assert!(sum.is_monotonic);
            assert_eq!(
                attr(&sum.data_points[0].attributes, "route"),
                Some(&any_value::Value::StringValue("/checkout".into()))
            );
            let hist = metrics
                .iter()
                .find(|m| m.name == "request_duration_seconds")
                .unwrap();
            let Some(metric::Data::Histogram(h)) = &hist.data else {
                panic!("{name}: histogram")
            };
            let p = &h.data_points[0];
            assert_eq!(p.count, 1, "{name}: count given as a JSON number or string");
            assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
            assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        }
    }

    #[test]
    fn lenient_forms() {
        let body = br#"{"resource_spans":[{"scopeSpans":[{"spans":[{
            "traceId":"5B8EFFF798038103D269B633813FC60C","span_id":"eee19b7ec3c1b174",
            "kind":"SPAN_KIND_CLIENT","startTimeUnixNano":1544712660000000000,
            "endTimeUnixNano":"1544712661000000000","traceState":null,
            "status":{"code":"STATUS_CODE_ERROR","message":"boom"},
            "someFutureField":{"x":1},
            "attributes":[
              {"key":"i","value":{"intValue":5}},
              {"key":"s","value":{"intValue":"-7"}},
              {"key":"d","value":{"doubleValue":"NaN"}},
              {"key":"a","value":{"arrayValue":{}}},
              {"key":"e","value":{}},
              {"key":"n"},
              {"key":"b","value":{"bytes_value":"aGk"}}
            ]}]}]}]}"#;
        let req = decode_traces(body).unwrap();
        let s = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(s.kind, 3);
        assert_eq!(s.status.as_ref().unwrap().code, 2);
        assert_eq!(s.start_time_unix_nano, 1_544_712_660_000_000_000);
        assert_eq!(s.span_id, hex::decode("eee19b7ec3c1b174").unwrap());
        use any_value::Value as V;
        assert_eq!(attr(&s.attributes, "i"), Some(&V::IntValue(5)));
        assert_eq!(attr(&s.attributes, "s"), Some(&V::IntValue(-7)));
        assert!(matches!(attr(&s.attributes, "d"), Some(V::DoubleValue(d)) if d.is_nan()));
        assert_eq!(
            attr(&s.attributes, "a"),
            Some(&V::ArrayValue(ArrayValue { values: vec![] }))
        );
        assert_eq!(attr(&s.attributes, "e"), None);
        assert_eq!(s.attributes[5].value, None);
        assert_eq!(
            attr(&s.attributes, "b"),
            Some(&V::BytesValue(b"hi".to_vec()))
        );
    }

    #[test]
    fn rejects_malformed() {
        for body in [
            &b"not json"[..],
            br#"[]"#,
            br#"{"resourceSpans":{}}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz"}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"startTimeUnixNano":"-1"}]}]}]}"#,
            br#"{"resourceSpans":[{"scopeSpans":[{"spans":[{"kind":"SPAN_KIND_NOPE"}]}]}]}"#,
        ] {
            assert!(
                decode_traces(body).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    /// Encoding follows OTLP/JSON and decodes back to the same message.
    #[test]
    fn encode_then_decode_is_identity() {
        let body = fixture("otlp-proto-examples/metrics.json");
        let req = decode_metrics(&body).unwrap();
        let json = encode_resource_metrics(&req.resource_metrics);
        let again = decode_metrics(json.to_string().as_bytes()).unwrap();
        assert_eq!(again, req);
        let text = json.to_string();
        assert!(
            text.contains(r#""timeUnixNano":"1544712660300000000""#),
            "{text}"
        );
        assert!(text.contains(r#""bucketCounts":["1","1"]"#), "{text}");

        let body = fixture("real-client-captures/python-grpc.traces.pb");
        let req = ExportTraceServiceRequest::decode(&body[..]).unwrap();
        let json = encode_resource_spans(&req.resource_spans);
        let text = json.to_string();
        let again = decode_traces(text.as_bytes()).unwrap();
        assert_eq!(again, req);
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert!(text.contains(&format!(r#""traceId":"{}""#, hex::encode(&span.trace_id))));
        assert!(text.contains(r#""resourceSpans""#) && text.contains(r#""scopeSpans""#));
    }

    #[test]
    fn special_doubles_are_strings() {
        let v = any_value_to_json(&AnyValue {
            value: Some(any_value::Value::DoubleValue(f64::NEG_INFINITY)),
        });
        assert_eq!(v.to_string(), r#"{"doubleValue":"-Infinity"}"#);
        let back = any_value_from_json(&v).unwrap();
        assert_eq!(
            back.value,
            Some(any_value::Value::DoubleValue(f64::NEG_INFINITY))
        );
    }

    #[test]
    fn responses() {
        assert_eq!(encode_trace_response(0, None), b"{}");
        assert_eq!(encode_trace_response(0, Some("")), b"{}");
        let v: Value =
            serde_json::from_slice(&encode_trace_response(2, Some("2 spans rejected: x"))).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"partialSuccess":{"rejectedSpans":"2","errorMessage":"2 spans rejected: x"}})
        );
        let v: Value = serde_json::from_slice(&encode_metrics_response(3, None)).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"partialSuccess":{"rejectedDataPoints":"3"}})
        );
    }
}
