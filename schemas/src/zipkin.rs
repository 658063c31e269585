//! Zipkin v2 JSON (`POST /api/v2/spans` bodies, `/api/v2/trace` answers) to an OTLP
//! `ExportTraceServiceRequest`, so Zipkin data can be stored and queried like any other.
//!
//! ```text
//!  [span, …] or [[span, …], …]
//!    │ parse + validate (hex ids, 64-bit ids left-padded to 128 bits, known kinds)
//!    ▼
//!  merge fragments: same trace, id and local endpoint, kinds equal or one missing, one
//!    │ of them without a timestamp (reporters send late pieces of a span, e.g. a name and
//!    │ tags; two timed spans are two spans, like the receivers of one broadcast)
//!    ▼
//!  split shared spans: a SERVER span reusing a CLIENT span's id gets a fresh, deterministic
//!    │ id and the client span as parent; other children of the shared id follow the span
//!    │ of their own service (the server, unless they belong to the client's service),
//!    │ except SERVER/CONSUMER children, which stay under the client that called them
//!    ▼
//!  group by localEndpoint.serviceName ─> ResourceSpans { service.name } ─> Span
//! ```
//!
//! | Zipkin                          | OTLP                                                  |
//! |---------------------------------|-------------------------------------------------------|
//! | `traceId` (16 or 32 hex)        | `trace_id`, 64-bit ids zero-padded on the left        |
//! | `id`, `parentId`                | `span_id`, `parent_span_id`                           |
//! | `kind` CLIENT/SERVER/PRODUCER/CONSUMER, absent | kind 3/2/4/5, absent = INTERNAL (1)    |
//! | `name`                          | `name`                                                |
//! | `timestamp`, `duration` (µs)    | start, end = start + duration (ns); no duration: end = start |
//! | `localEndpoint.serviceName`     | resource `service.name`                               |
//! | `localEndpoint.ipv4/ipv6/port`  | `network.local.address`, `network.local.port`         |
//! | `remoteEndpoint.serviceName`    | `peer.service`                                        |
//! | `remoteEndpoint.ipv4/ipv6/port` | `network.peer.address`, `network.peer.port`           |
//! | `tags`                          | string attributes                                     |
//! | tag `error`                     | status ERROR, message = the tag's value (tag removed) |
//! | tags `otel.status_code`/`otel.status_description` | status (tags removed)               |
//! | `annotations`                   | events (name = value, time in ns)                     |
//!
//! Merging differs from Zipkin's own `Trace.merge`, which requires the same `shared` flag
//! but merges timed spans: real reporters send a server span's late fragment without the
//! flag (left separate, it would make two spans with one id), and several receivers of one
//! message on one host report timed spans with the same id (merged, calls would be lost). A span that still has no
//! timestamp after merging takes its first annotation's; without any it is skipped (and
//! listed in [`Conversion::skipped`]). `debug` is not kept.

use std::collections::{BTreeMap, HashMap, HashSet};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status, span};
use serde::Deserialize;
use serde_json::Value;

/// Why a body could not be converted.
#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    /// Not JSON, or not a list of spans.
    #[error("invalid zipkin json: {0}")]
    Json(String),
    /// One span (by position in the input, from 0) is malformed.
    #[error("zipkin span {index}: {reason}")]
    Span { index: usize, reason: SpanError },
}

/// What is wrong with one Zipkin span.
#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    /// Not an object of the span's shape (serde's message).
    #[error("{0}")]
    Shape(serde_json::Error),
    /// An id (`field`: `traceId`, `id`, `parentId`) that is empty or too long.
    #[error("{field} {text:?} must be 1 to {max_digits} hex digits")]
    IdLength {
        field: &'static str,
        text: String,
        max_digits: usize,
    },
    /// An id with a character that is not a hex digit.
    #[error("{field} {text:?} is not hex")]
    IdNotHex { field: &'static str, text: String },
    /// A `kind` other than CLIENT, SERVER, PRODUCER and CONSUMER.
    #[error("unknown kind {kind:?}")]
    UnknownKind { kind: String },
}

/// A converted body.
#[derive(Debug, Clone, PartialEq)]
pub struct Conversion {
    pub request: ExportTraceServiceRequest,
    /// Spans in `request`.
    pub spans: usize,
    /// Input spans merged into another one (fragments of the same span).
    pub merged: usize,
    /// Input spans left out, with the reason.
    pub skipped: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawSpan {
    trace_id: String,
    id: String,
    #[serde(default)]
    parent_id: Option<String>,
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    timestamp: Option<u64>,
    #[serde(default)]
    duration: Option<u64>,
    #[serde(default)]
    local_endpoint: Option<RawEndpoint>,
    #[serde(default)]
    remote_endpoint: Option<RawEndpoint>,
    #[serde(default)]
    annotations: Vec<RawAnnotation>,
    #[serde(default)]
    tags: BTreeMap<String, Value>,
    #[serde(default)]
    shared: Option<bool>,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawEndpoint {
    #[serde(default)]
    service_name: Option<String>,
    #[serde(default)]
    ipv4: Option<String>,
    #[serde(default)]
    ipv6: Option<String>,
    #[serde(default)]
    port: Option<i64>,
}

#[derive(Debug, Deserialize)]
struct RawAnnotation {
    timestamp: u64,
    value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Client,
    Server,
    Producer,
    Consumer,
}

impl Kind {
    fn otlp(kind: Option<Kind>) -> i32 {
        (match kind {
            None => span::SpanKind::Internal,
            Some(Kind::Client) => span::SpanKind::Client,
            Some(Kind::Server) => span::SpanKind::Server,
            Some(Kind::Producer) => span::SpanKind::Producer,
            Some(Kind::Consumer) => span::SpanKind::Consumer,
        }) as i32
    }
}

/// A validated Zipkin span.
#[derive(Debug, Clone)]
struct ZSpan {
    trace: [u8; 16],
    id: u64,
    parent: Option<u64>,
    kind: Option<Kind>,
    name: Option<String>,
    timestamp: Option<u64>,
    duration: Option<u64>,
    local: RawEndpoint,
    remote: Option<RawEndpoint>,
    annotations: Vec<(u64, String)>,
    tags: BTreeMap<String, String>,
    shared: bool,
}

impl ZSpan {
    fn service(&self) -> Option<&str> {
        self.local.service_name.as_deref().filter(|s| !s.is_empty())
    }

    /// Fills what `self` lacks from `other`, a fragment of the same span.
    fn absorb(&mut self, other: ZSpan) {
        if self
            .name
            .as_deref()
            .is_none_or(|n| n.is_empty() || n == "unknown")
            && other.name.is_some()
        {
            self.name = other.name;
        }
        self.kind = self.kind.or(other.kind);
        self.timestamp = match (self.timestamp, other.timestamp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.duration = match (self.duration, other.duration) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        self.parent = self.parent.or(other.parent);
        if self.remote.is_none() {
            self.remote = other.remote;
        }
        for (key, value) in other.tags {
            self.tags.entry(key).or_insert(value);
        }
        self.annotations.extend(other.annotations);
        self.annotations.sort();
        self.annotations.dedup();
        self.shared |= other.shared;
    }
}

/// Converts a Zipkin v2 JSON body (a list of spans, or a list of traces) to OTLP.
pub fn to_otlp(body: &[u8]) -> Result<Conversion, ZipkinError> {
    let root: Value = serde_json::from_slice(body).map_err(|e| ZipkinError::Json(e.to_string()))?;
    let Value::Array(items) = root else {
        return Err(ZipkinError::Json("expected a list of spans".into()));
    };
    let mut raw = Vec::new();
    for item in items {
        match item {
            Value::Array(trace) => raw.extend(trace),
            other => raw.push(other),
        }
    }
    let mut spans = Vec::with_capacity(raw.len());
    for (index, value) in raw.into_iter().enumerate() {
        let parsed: RawSpan = serde_json::from_value(value).map_err(|e| ZipkinError::Span {
            index,
            reason: SpanError::Shape(e),
        })?;
        spans.push(validate(parsed).map_err(|reason| ZipkinError::Span { index, reason })?);
    }
    let input = spans.len();
    let mut spans = merge_fragments(spans);
    let merged = input - spans.len();

    let mut skipped = Vec::new();
    spans.retain_mut(|s| {
        if s.timestamp.is_none() {
            s.timestamp = s.annotations.first().map(|(t, _)| *t);
        }
        if s.timestamp.is_none() {
            skipped.push(format!(
                "span {:016x} of trace {} has no timestamp and no annotations",
                s.id,
                hex::encode(s.trace)
            ));
        }
        s.timestamp.is_some()
    });
    split_shared(&mut spans);

    // One resource per service, in order of first appearance.
    let mut resources: Vec<(Option<String>, Vec<Span>)> = Vec::new();
    let mut by_service: HashMap<Option<String>, usize> = HashMap::new();
    let count = spans.len();
    for z in spans {
        let service = z.service().map(str::to_owned);
        let slot = *by_service.entry(service.clone()).or_insert_with(|| {
            resources.push((service, Vec::new()));
            resources.len() - 1
        });
        resources[slot].1.push(to_span(z));
    }
    let resource_spans = resources
        .into_iter()
        .map(|(service, spans)| ResourceSpans {
            resource: Some(Resource {
                attributes: service
                    .map(|s| vec![string_attr("service.name", s)])
                    .unwrap_or_default(),
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        })
        .collect();
    Ok(Conversion {
        request: ExportTraceServiceRequest { resource_spans },
        spans: count,
        merged,
        skipped,
    })
}

/// Hex of at most `bytes * 2` digits, zero-padded on the left to `bytes` bytes.
fn parse_id<const N: usize>(text: &str, field: &'static str) -> Result<[u8; N], SpanError> {
    let text = text.trim();
    if text.is_empty() || text.len() > N * 2 {
        return Err(SpanError::IdLength {
            field,
            text: text.to_owned(),
            max_digits: N * 2,
        });
    }
    let padded = format!("{text:0>width$}", width = N * 2);
    let mut id = [0u8; N];
    hex::decode_to_slice(&padded, &mut id).map_err(|_| SpanError::IdNotHex {
        field,
        text: text.to_owned(),
    })?;
    Ok(id)
}

fn validate(raw: RawSpan) -> Result<ZSpan, SpanError> {
    let trace = parse_id::<16>(&raw.trace_id, "traceId")?;
    let id = u64::from_be_bytes(parse_id::<8>(&raw.id, "id")?);
    let parent = match raw.parent_id.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(p) => Some(u64::from_be_bytes(parse_id::<8>(p, "parentId")?)).filter(|p| *p != 0),
    };
    let kind = match raw.kind.as_deref().map(str::to_ascii_uppercase).as_deref() {
        None | Some("") => None,
        Some("CLIENT") => Some(Kind::Client),
        Some("SERVER") => Some(Kind::Server),
        Some("PRODUCER") => Some(Kind::Producer),
        Some("CONSUMER") => Some(Kind::Consumer),
        Some(other) => {
            return Err(SpanError::UnknownKind {
                kind: other.to_owned(),
            });
        }
    };
    let tags = raw
        .tags
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s,
                other => other.to_string(),
            };
            (k, v)
        })
        .collect();
    let mut annotations: Vec<(u64, String)> = raw
        .annotations
        .into_iter()
        .map(|a| (a.timestamp, a.value))
        .collect();
    annotations.sort();
    Ok(ZSpan {
        trace,
        id,
        parent,
        kind,
        name: raw.name,
        timestamp: raw.timestamp.filter(|t| *t > 0),
        duration: raw.duration,
        local: raw.local_endpoint.unwrap_or_default(),
        remote: raw.remote_endpoint,
        annotations,
        tags,
        shared: raw.shared.unwrap_or(false),
    })
}

/// Merges fragments of one span (see the module docs), keeping input order.
fn merge_fragments(spans: Vec<ZSpan>) -> Vec<ZSpan> {
    let mut out: Vec<ZSpan> = Vec::with_capacity(spans.len());
    let mut groups: HashMap<([u8; 16], u64, Option<String>), Vec<usize>> = HashMap::new();
    for span in spans {
        let key = (span.trace, span.id, span.service().map(str::to_owned));
        let group = groups.entry(key).or_default();
        let compatible = group.iter().copied().find(|&i| {
            let k = out[i].kind;
            (k.is_none() || span.kind.is_none() || k == span.kind)
                && same_endpoint(&out[i].local, &span.local)
                && (out[i].timestamp.is_none() || span.timestamp.is_none())
        });
        match compatible {
            Some(i) => out[i].absorb(span),
            None => {
                group.push(out.len());
                out.push(span);
            }
        }
    }
    out
}

/// Could `a` and `b` be the same process? Fields one of them lacks do not count (as in
/// Zipkin's `EndpointTracker`): fragments often carry less than the full span.
fn same_endpoint(a: &RawEndpoint, b: &RawEndpoint) -> bool {
    fn agree<T: PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
        a.is_none() || b.is_none() || a == b
    }
    agree(&a.ipv4, &b.ipv4) && agree(&a.ipv6, &b.ipv6) && agree(&a.port, &b.port)
}

/// A split shared id: the client's service and the servers' (service, new id).
type Renamed = (Option<String>, Vec<(Option<String>, u64)>);

/// Gives SERVER spans that share a CLIENT span's id their own id (see the module docs).
fn split_shared(spans: &mut [ZSpan]) {
    let mut by_id: HashMap<([u8; 16], u64), Vec<usize>> = HashMap::new();
    let mut taken: HashSet<([u8; 16], u64)> = HashSet::new();
    for (i, s) in spans.iter().enumerate() {
        by_id.entry((s.trace, s.id)).or_default().push(i);
        taken.insert((s.trace, s.id));
    }
    let mut renamed: HashMap<([u8; 16], u64), Renamed> = HashMap::new();
    let mut groups: Vec<_> = by_id.into_iter().collect();
    groups.sort_by_key(|(_, members)| members[0]);
    for ((trace, id), members) in groups {
        let Some(&client) = members
            .iter()
            .find(|&&i| spans[i].kind == Some(Kind::Client))
        else {
            continue;
        };
        let servers: Vec<usize> = members
            .iter()
            .copied()
            .filter(|&i| spans[i].kind == Some(Kind::Server))
            .collect();
        if servers.is_empty() {
            continue;
        }
        let client_service = spans[client].service().map(str::to_owned);
        let mut new_servers = Vec::new();
        for (ordinal, &i) in servers.iter().enumerate() {
            let new_id = fresh_id(trace, id, ordinal as u32, &mut taken);
            let server = &mut spans[i];
            server.id = new_id;
            server.parent = Some(id);
            server.shared = false;
            new_servers.push((server.service().map(str::to_owned), new_id));
        }
        renamed.insert((trace, id), (client_service, new_servers));
    }
    if renamed.is_empty() {
        return;
    }
    let new_ids: HashSet<([u8; 16], u64)> = renamed
        .iter()
        .flat_map(|((trace, _), (_, servers))| servers.iter().map(move |(_, id)| (*trace, *id)))
        .collect();
    for s in spans.iter_mut() {
        let Some(parent) = s.parent else { continue };
        let Some((client_service, servers)) = renamed.get(&(s.trace, parent)) else {
            continue;
        };
        if new_ids.contains(&(s.trace, s.id)) {
            continue; // one of the servers: its parent is the client already
        }
        if matches!(s.kind, Some(Kind::Server | Kind::Consumer)) {
            continue; // a callee: the client side of the shared id called it
        }
        let service = s.service().map(str::to_owned);
        if let Some((_, id)) = servers.iter().find(|(svc, _)| *svc == service) {
            s.parent = Some(*id);
        } else if service != *client_service {
            s.parent = Some(servers[0].1);
        }
    }
}

/// A deterministic span id for the `ordinal`-th server sharing `id`, unused in the trace.
fn fresh_id(trace: [u8; 16], id: u64, ordinal: u32, taken: &mut HashSet<([u8; 16], u64)>) -> u64 {
    // FNV-1a: stable across Rust versions and platforms, unlike std's hasher.
    fn feed(hash: u64, bytes: &[u8]) -> u64 {
        bytes.iter().fold(hash, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
        })
    }
    let mut hash = feed(0xcbf2_9ce4_8422_2325, b"zipkin shared server");
    hash = feed(hash, &trace);
    hash = feed(hash, &id.to_be_bytes());
    hash = feed(hash, &ordinal.to_le_bytes());
    loop {
        if hash != 0 && taken.insert((trace, hash)) {
            return hash;
        }
        hash = feed(hash, &[0]);
    }
}

fn string_attr(key: &str, value: impl Into<String>) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..Default::default()
    }
}

fn int_attr(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(value)),
        }),
        ..Default::default()
    }
}

fn endpoint_attrs(e: &RawEndpoint, address: &str, port: &str, out: &mut Vec<KeyValue>) {
    if let Some(ip) = e
        .ipv4
        .as_deref()
        .or(e.ipv6.as_deref())
        .filter(|s| !s.is_empty())
    {
        out.push(string_attr(address, ip));
    }
    if let Some(p) = e.port.filter(|p| *p > 0) {
        out.push(int_attr(port, p));
    }
}

fn to_span(mut z: ZSpan) -> Span {
    let mut status = None;
    if let Some(message) = z.tags.remove("error") {
        status = Some(Status { code: 2, message });
    } else if let Some(code) = z.tags.remove("otel.status_code") {
        let message = z.tags.remove("otel.status_description").unwrap_or_default();
        let code = match code.to_ascii_uppercase().as_str() {
            "ERROR" => 2,
            "OK" => 1,
            _ => 0,
        };
        status = Some(Status { code, message });
    }
    let mut attributes: Vec<KeyValue> = Vec::with_capacity(z.tags.len() + 5);
    if let Some(remote) = &z.remote
        && let Some(peer) = remote.service_name.as_deref().filter(|s| !s.is_empty())
        && !z.tags.contains_key("peer.service")
    {
        attributes.push(string_attr("peer.service", peer));
    }
    attributes.extend(z.tags.into_iter().map(|(k, v)| string_attr(&k, v)));
    if let Some(remote) = &z.remote {
        endpoint_attrs(
            remote,
            "network.peer.address",
            "network.peer.port",
            &mut attributes,
        );
    }
    endpoint_attrs(
        &z.local,
        "network.local.address",
        "network.local.port",
        &mut attributes,
    );
    let start = z.timestamp.unwrap_or(0).saturating_mul(1_000);
    let end = start.saturating_add(z.duration.unwrap_or(0).saturating_mul(1_000));
    Span {
        trace_id: z.trace.to_vec(),
        span_id: z.id.to_be_bytes().to_vec(),
        parent_span_id: z
            .parent
            .map(|p| p.to_be_bytes().to_vec())
            .unwrap_or_default(),
        name: z.name.unwrap_or_default(),
        kind: Kind::otlp(z.kind),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        attributes,
        events: z
            .annotations
            .into_iter()
            .map(|(t, value)| span::Event {
                time_unix_nano: t.saturating_mul(1_000),
                name: value,
                ..Default::default()
            })
            .collect(),
        status,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn testdata(name: &str) -> Vec<u8> {
        let path = format!("{}/testdata/zipkin-v2/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn all_spans(c: &Conversion) -> Vec<(String, &Span)> {
        c.request
            .resource_spans
            .iter()
            .flat_map(|rs| {
                let service = rs
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.first())
                    .and_then(|a| a.value.as_ref())
                    .and_then(|v| match &v.value {
                        Some(any_value::Value::StringValue(s)) => Some(s.clone()),
                        _ => None,
                    })
                    .unwrap_or_default();
                rs.scope_spans
                    .iter()
                    .flat_map(|ss| ss.spans.iter())
                    .map(move |s| (service.clone(), s))
            })
            .collect()
    }

    fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a any_value::Value> {
        s.attributes
            .iter()
            .find(|a| a.key == key)
            .and_then(|a| a.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    fn id8(hex_id: &str) -> Vec<u8> {
        hex::decode(hex_id).unwrap()
    }

    #[test]
    fn fields_map_as_documented() {
        let body = br#"[{"traceId":"a03ee8fff1dcd9b9","parentId":"f5f268651b2a2b34",
            "id":"15fc03927f0f68df","kind":"CLIENT","name":"post","timestamp":1571896375322000,
            "duration":14000,"localEndpoint":{"serviceName":"mobile_api","ipv4":"10.0.0.1","port":31049},
            "remoteEndpoint":{"serviceName":"blt","port":31882},
            "annotations":[{"timestamp":1571896375323000,"value":"ws"}],
            "tags":{"http.path":"/visits","error":"boom","n":5}}]"#;
        let c = to_otlp(body).unwrap();
        assert_eq!((c.spans, c.merged, c.skipped.len()), (1, 0, 0));
        let spans = all_spans(&c);
        let (service, s) = &spans[0];
        assert_eq!(service, "mobile_api");
        let mut trace = vec![0u8; 8];
        trace.extend(id8("a03ee8fff1dcd9b9"));
        assert_eq!(s.trace_id, trace, "64-bit trace ids are left-padded");
        assert_eq!(s.span_id, id8("15fc03927f0f68df"));
        assert_eq!(s.parent_span_id, id8("f5f268651b2a2b34"));
        assert_eq!(s.kind, 3);
        assert_eq!(s.start_time_unix_nano, 1_571_896_375_322_000_000);
        assert_eq!(s.end_time_unix_nano - s.start_time_unix_nano, 14_000_000);
        let status = s.status.as_ref().unwrap();
        assert_eq!((status.code, status.message.as_str()), (2, "boom"));
        assert!(attr(s, "error").is_none());
        let str_value = |v: Option<&any_value::Value>| match v {
            Some(any_value::Value::StringValue(s)) => s.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(str_value(attr(s, "peer.service")), "blt");
        assert_eq!(str_value(attr(s, "http.path")), "/visits");
        assert_eq!(str_value(attr(s, "n")), "5");
        assert_eq!(str_value(attr(s, "network.local.address")), "10.0.0.1");
        assert_eq!(
            attr(s, "network.peer.port"),
            Some(&any_value::Value::IntValue(31882))
        );
        assert_eq!(
            attr(s, "network.local.port"),
            Some(&any_value::Value::IntValue(31049))
        );
        assert_eq!(s.events.len(), 1);
        assert_eq!(s.events[0].name, "ws");
        assert_eq!(s.events[0].time_unix_nano, 1_571_896_375_323_000_000);
    }

    #[test]
    fn shared_server_spans_get_their_own_id_under_the_client() {
        // yelp.json: yelp-main's CLIENT f5f268651b2a2b34 and mobile_api's shared SERVER with
        // the same id; mobile_api's own CLIENT spans are children of that id.
        let c = to_otlp(&testdata("yelp.json")).unwrap();
        assert_eq!((c.spans, c.merged, c.skipped.len()), (16, 0, 0));
        let spans = all_spans(&c);
        let find = |service: &str, kind: i32, id: &str| {
            spans
                .iter()
                .find(|(svc, s)| svc == service && s.kind == kind && s.name.contains(id))
                .map(|(_, s)| *s)
                .unwrap_or_else(|| panic!("{service} {kind} {id}"))
        };
        let client = find("yelp-main", 3, "post");
        assert_eq!(client.span_id, id8("f5f268651b2a2b34"));
        let server = find("mobile_api", 2, "post /location/update/v4");
        assert_ne!(server.span_id, client.span_id);
        assert_eq!(server.parent_span_id, client.span_id);
        // mobile_api's outgoing call to blt now hangs under mobile_api's server span.
        let to_blt = find("mobile_api", 3, "post");
        assert_eq!(to_blt.parent_span_id, server.span_id);
        // The root routing span is marked shared but no client has its id: unchanged.
        let routing = find("routing", 2, "post /location/update/v4");
        assert_eq!(routing.span_id, id8("2e8cfb154b59a41f"));
        assert!(routing.parent_span_id.is_empty());
        // Every span id is unique now, and the conversion is deterministic.
        let ids: HashSet<&Vec<u8>> = spans.iter().map(|(_, s)| &s.span_id).collect();
        assert_eq!(ids.len(), 16);
        assert_eq!(to_otlp(&testdata("yelp.json")).unwrap(), c);
    }

    #[test]
    fn callees_of_a_shared_id_stay_under_the_client() {
        // a's CLIENT 0a shares its id with b's SERVER; b's INTERNAL child of 0a belongs under
        // b's server, but a SERVER span under 0a was called by a's client.
        let body = br#"[
            {"traceId":"1","id":"a","kind":"CLIENT","timestamp":1,"localEndpoint":{"serviceName":"a"}},
            {"traceId":"1","id":"a","kind":"SERVER","timestamp":2,"shared":true,"localEndpoint":{"serviceName":"b"}},
            {"traceId":"1","id":"b","parentId":"a","timestamp":3,"localEndpoint":{"serviceName":"b"}},
            {"traceId":"1","id":"c","parentId":"a","kind":"SERVER","timestamp":4,"localEndpoint":{"serviceName":"b"}},
            {"traceId":"1","id":"a","kind":"SERVER","timestamp":5,"shared":true,"localEndpoint":{"serviceName":"b"}}
        ]"#;
        let c = to_otlp(body).unwrap();
        assert_eq!(
            (c.spans, c.merged),
            (5, 0),
            "two timed servers are two spans"
        );
        let spans = all_spans(&c);
        let by_start = |t: u64| {
            spans
                .iter()
                .find(|(_, s)| s.start_time_unix_nano == t * 1000)
                .unwrap()
                .1
        };
        let client = id8("000000000000000a");
        assert_eq!(by_start(2).parent_span_id, client);
        assert_eq!(by_start(5).parent_span_id, client);
        assert_ne!(by_start(2).span_id, by_start(5).span_id);
        assert_eq!(by_start(3).parent_span_id, by_start(2).span_id);
        assert_eq!(by_start(4).parent_span_id, client);
    }

    #[test]
    fn late_fragments_merge_into_their_span() {
        // smartthings-mobile-web-install.json has 84 name-only fragments (no kind, no
        // timestamp) of shared server spans, sent by the server's own endpoint.
        let c = to_otlp(&testdata("smartthings-mobile-web-install.json")).unwrap();
        assert_eq!(c.merged, 84);
        assert_eq!(c.spans, 1041 - 84);
        assert!(c.skipped.is_empty(), "{:?}", c.skipped);
        let spans = all_spans(&c);
        let mut ids = HashSet::new();
        for (_, s) in &spans {
            assert!(ids.insert((&s.trace_id, &s.span_id)), "duplicate span id");
        }
        // Five pusher servers shared one bouncer client id: five distinct ids under it.
        let client = spans
            .iter()
            .find(|(svc, s)| svc == "bouncer" && s.kind == 3 && s.name == "send iot-events360")
            .unwrap()
            .1;
        let under: Vec<_> = spans
            .iter()
            .filter(|(svc, s)| svc == "pusher" && s.kind == 2 && s.parent_span_id == client.span_id)
            .collect();
        assert_eq!(under.len(), 5);
    }

    #[test]
    fn every_fixture_converts() {
        for (name, input) in [
            ("messaging-kafka.json", 28),
            ("skew.json", 4),
            ("yelp.json", 16),
            ("smartthings-oauth-authorization.json", 175),
            ("smartthings-mobile-web-install.json", 1041),
        ] {
            let c = to_otlp(&testdata(name)).unwrap();
            assert_eq!(c.spans + c.merged + c.skipped.len(), input, "{name}");
            let converted = crate::spans::from_otlp(&c.request);
            assert_eq!(
                converted.rejected, 0,
                "{name}: {:?}",
                converted.rejection_message
            );
            assert_eq!(converted.batch.num_rows(), c.spans, "{name}");
        }
    }

    #[test]
    fn malformed_input_is_refused_with_the_span_position() {
        let err = to_otlp(br#"{"traceId":"1"}"#).unwrap_err();
        assert!(matches!(err, ZipkinError::Json(_)), "{err}");
        let err = to_otlp(br#"[{"traceId":"1","id":"2"},{"traceId":"xyz","id":"2"}]"#).unwrap_err();
        assert!(
            err.to_string().starts_with("zipkin span 1: traceId"),
            "{err}"
        );
        let err = to_otlp(br#"[{"traceId":"1","id":"2","kind":"SIDEWAYS"}]"#).unwrap_err();
        assert!(err.to_string().contains("unknown kind"), "{err}");
        let err = to_otlp(br#"[{"traceId":"1","id":"00000000000000001"}]"#).unwrap_err();
        assert!(err.to_string().contains("1 to 16 hex digits"), "{err}");
        let c = to_otlp(br#"[[{"traceId":"1","id":"2"}]]"#).unwrap();
        assert_eq!(c.spans, 0, "no timestamp and no annotation");
        assert_eq!(c.skipped.len(), 1);
    }
}
