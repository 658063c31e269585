//! The real OpenTelemetry Rust SDK (0.33) exports traces and metrics to Weft over OTLP/gRPC,
//! OTLP/HTTP protobuf and OTLP/HTTP JSON, each with and without gzip. The spans the SDK
//! recorded (an `InMemorySpanExporter` on the same provider) must come back field for field
//! from the trace API and from SQL; the metric values from SQL — from live rows and, after
//! a flush, from Parquet, identically.

use std::future::Future;
use std::pin::Pin;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::metrics::MeterProvider as _;
use opentelemetry::trace::{
    Link as OtelLink, Span as _, SpanContext, SpanKind, Status, TraceContextExt as _, TraceState,
    Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, Value as OtelValue};
use opentelemetry_otlp::{
    Compression, MetricExporter, Protocol, SpanExporter, WithExportConfig as _,
    WithHttpConfig as _, WithTonicConfig as _,
};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider};
use opentelemetry_sdk::trace::{
    InMemorySpanExporter, SamplingDecision, SamplingResult, SdkTracerProvider, ShouldSample,
    SpanData,
};
use serde_json::Value;

use crate::common::{
    Any, Attrs, Event, Link, Span, field, json_f64, json_i64, manifest_rows, sorted,
    spans_from_json, wait_for_parquet_rows,
};
use crate::server::TestServer;

/// How the SDK talks to Weft.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Grpc,
    HttpProto,
    HttpJson,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Case {
    transport: Transport,
    gzip: bool,
}

impl Case {
    const ALL: [Case; 6] = [
        Case::new(Transport::Grpc, false),
        Case::new(Transport::Grpc, true),
        Case::new(Transport::HttpProto, false),
        Case::new(Transport::HttpProto, true),
        Case::new(Transport::HttpJson, false),
        Case::new(Transport::HttpJson, true),
    ];

    pub(crate) const GRPC: Case = Case::new(Transport::Grpc, false);
    pub(crate) const HTTP_JSON: Case = Case::new(Transport::HttpJson, false);

    const fn new(transport: Transport, gzip: bool) -> Self {
        Self { transport, gzip }
    }

    /// One `service.name` per combination, so cases never see each other's data.
    fn service(self) -> String {
        let transport = match self.transport {
            Transport::Grpc => "grpc",
            Transport::HttpProto => "http-proto",
            Transport::HttpJson => "http-json",
        };
        let encoding = if self.gzip { "gzip" } else { "plain" };
        format!("e2e-sdk-{transport}-{encoding}")
    }
}

/// The trace state every span carries (set by [`TraceStateSampler`]).
const TRACE_STATE: &str = "weft=e2e,vendor=x1";

/// Samples everything and gives root spans a non-empty W3C trace state (children inherit
/// their parent's): the API has no other way to put one on a root span.
#[derive(Debug, Clone)]
struct TraceStateSampler;

impl ShouldSample for TraceStateSampler {
    fn should_sample(
        &self,
        parent_context: Option<&Context>,
        _trace_id: opentelemetry::trace::TraceId,
        _name: &str,
        _span_kind: &SpanKind,
        _attributes: &[KeyValue],
        _links: &[OtelLink],
    ) -> SamplingResult {
        let trace_state = parent_context
            .filter(|cx| cx.has_active_span())
            .map(|cx| cx.span().span_context().trace_state().clone())
            .unwrap_or_else(|| {
                TraceState::from_key_value([("weft", "e2e"), ("vendor", "x1")])
                    .expect("valid trace state")
            });
        SamplingResult {
            decision: SamplingDecision::RecordAndSample,
            attributes: Vec::new(),
            trace_state,
        }
    }
}

/// The SDK's default processors export from their own OS threads, where an async reqwest
/// client has no runtime. This client hands each request to the test's tokio runtime and
/// waits for the answer, so the exporter's own encoding, compression and headers are used
/// unchanged.
#[derive(Debug, Clone)]
struct RuntimeHttpClient {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

type HttpResult =
    Result<opentelemetry_http::Response<opentelemetry_http::Bytes>, opentelemetry_http::HttpError>;

impl opentelemetry_http::HttpClient for RuntimeHttpClient {
    fn send_bytes<'life0, 'async_trait>(
        &'life0 self,
        request: opentelemetry_http::Request<opentelemetry_http::Bytes>,
    ) -> Pin<Box<dyn Future<Output = HttpResult> + Send + 'async_trait>>
    where
        'life0: 'async_trait,
        Self: 'async_trait,
    {
        let client = self.client.clone();
        let task = self.runtime.spawn(async move {
            let request = reqwest::Request::try_from(request)?;
            let response = client.execute(request).await?;
            let status = response.status();
            let headers = response.headers().clone();
            let body = response.bytes().await?;
            let mut out = opentelemetry_http::Response::new(body);
            *out.status_mut() = status;
            *out.headers_mut() = headers;
            Ok::<_, opentelemetry_http::HttpError>(out)
        });
        Box::pin(async move {
            task.await
                .map_err(|e| Box::new(e) as opentelemetry_http::HttpError)?
        })
    }
}

fn http_client() -> RuntimeHttpClient {
    RuntimeHttpClient {
        client: crate::common::http_client(),
        runtime: tokio::runtime::Handle::current(),
    }
}

fn span_exporter(server: &TestServer, case: Case) -> SpanExporter {
    let timeout = Duration::from_secs(30);
    match case.transport {
        Transport::Grpc => {
            let mut builder = SpanExporter::builder()
                .with_tonic()
                .with_endpoint(server.otlp_grpc.clone())
                .with_timeout(timeout);
            if case.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build().expect("grpc span exporter")
        }
        Transport::HttpProto | Transport::HttpJson => {
            let protocol = if case.transport == Transport::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            let mut builder = SpanExporter::builder()
                .with_http()
                .with_endpoint(server.http_url("/v1/traces"))
                .with_protocol(protocol)
                .with_timeout(timeout)
                .with_http_client(http_client());
            if case.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build().expect("http span exporter")
        }
    }
}

fn metric_exporter(server: &TestServer, case: Case) -> MetricExporter {
    let timeout = Duration::from_secs(30);
    match case.transport {
        Transport::Grpc => {
            let mut builder = MetricExporter::builder()
                .with_tonic()
                .with_endpoint(server.otlp_grpc.clone())
                .with_timeout(timeout);
            if case.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build().expect("grpc metric exporter")
        }
        Transport::HttpProto | Transport::HttpJson => {
            let protocol = if case.transport == Transport::HttpJson {
                Protocol::HttpJson
            } else {
                Protocol::HttpBinary
            };
            let mut builder = MetricExporter::builder()
                .with_http()
                .with_endpoint(server.http_url("/v1/metrics"))
                .with_protocol(protocol)
                .with_timeout(timeout)
                .with_http_client(http_client());
            if case.gzip {
                builder = builder.with_compression(Compression::Gzip);
            }
            builder.build().expect("http metric exporter")
        }
    }
}

/// What one case sent, as the SDK recorded it.
pub(crate) struct Sent {
    case: Case,
    service: String,
    pub(crate) spans: Vec<Span>,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
}

impl Sent {
    /// Shuts the providers down (their final export is not part of the checks).
    pub(crate) async fn shutdown(self) {
        let Sent {
            tracer_provider,
            meter_provider,
            ..
        } = self;
        tokio::task::spawn_blocking(move || {
            let _ = tracer_provider.shutdown();
            let _ = meter_provider.shutdown();
        })
        .await
        .expect("shutdown task");
    }
}

fn nanos(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).expect("after 1970").as_nanos() as u64
}

fn any_from_otel(v: &OtelValue) -> Any {
    match v {
        OtelValue::Bool(b) => Any::Bool(*b),
        OtelValue::I64(i) => Any::Int(*i),
        OtelValue::F64(f) => Any::Double(*f),
        OtelValue::String(s) => Any::Str(s.as_str().to_owned()),
        OtelValue::Array(Array::Bool(v)) => Any::Array(v.iter().map(|b| Any::Bool(*b)).collect()),
        OtelValue::Array(Array::I64(v)) => Any::Array(v.iter().map(|i| Any::Int(*i)).collect()),
        OtelValue::Array(Array::F64(v)) => Any::Array(v.iter().map(|f| Any::Double(*f)).collect()),
        OtelValue::Array(Array::String(v)) => {
            Any::Array(v.iter().map(|s| Any::Str(s.as_str().to_owned())).collect())
        }
        other => panic!("attribute value not used by these tests: {other:?}"),
    }
}

fn attrs_from_otel<'a>(kvs: impl IntoIterator<Item = &'a KeyValue>) -> Attrs {
    kvs.into_iter()
        .map(|kv| (kv.key.as_str().to_owned(), any_from_otel(&kv.value)))
        .collect()
}

fn kind_code(kind: &SpanKind) -> i64 {
    match kind {
        SpanKind::Internal => 1,
        SpanKind::Server => 2,
        SpanKind::Client => 3,
        SpanKind::Producer => 4,
        SpanKind::Consumer => 5,
    }
}

/// OTLP span flags as the spec defines them: W3C trace flags, bit 8 "has is_remote",
/// bit 9 "is_remote".
fn otlp_flags(trace_flags: u8, remote: bool) -> u64 {
    u64::from(trace_flags) | 0x100 | if remote { 0x200 } else { 0 }
}

/// The canonical form of what the SDK recorded, computed independently of the exporter.
fn canonical(span: &SpanData, resource: &Resource) -> Span {
    let (status_code, status_message) = match &span.status {
        Status::Unset => (0, String::new()),
        Status::Ok => (1, String::new()),
        Status::Error { description } => (2, description.to_string()),
    };
    let parent = span.parent_span_id;
    Span {
        resource: resource
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), any_from_otel(v)))
            .collect(),
        scope_name: span.instrumentation_scope.name().to_owned(),
        scope_version: span
            .instrumentation_scope
            .version()
            .unwrap_or("")
            .to_owned(),
        scope_attributes: attrs_from_otel(span.instrumentation_scope.attributes()),
        trace_id: span.span_context.trace_id().to_string(),
        span_id: span.span_context.span_id().to_string(),
        parent_span_id: if parent == opentelemetry::trace::SpanId::INVALID {
            String::new()
        } else {
            parent.to_string()
        },
        trace_state: span.span_context.trace_state().header(),
        flags: otlp_flags(
            span.span_context.trace_flags().to_u8(),
            span.parent_span_is_remote,
        ),
        name: span.name.to_string(),
        kind: kind_code(&span.span_kind),
        start: nanos(span.start_time),
        end: nanos(span.end_time),
        attributes: attrs_from_otel(&span.attributes),
        dropped_attributes_count: u64::from(span.dropped_attributes_count),
        events: span
            .events
            .iter()
            .map(|e| Event {
                time: nanos(e.timestamp),
                name: e.name.to_string(),
                attributes: attrs_from_otel(&e.attributes),
                dropped_attributes_count: u64::from(e.dropped_attributes_count),
            })
            .collect(),
        dropped_events_count: u64::from(span.events.dropped_count),
        links: span
            .links
            .iter()
            .map(|l| Link {
                trace_id: l.span_context.trace_id().to_string(),
                span_id: l.span_context.span_id().to_string(),
                trace_state: l.span_context.trace_state().header(),
                attributes: attrs_from_otel(&l.attributes),
                dropped_attributes_count: u64::from(l.dropped_attributes_count),
                flags: otlp_flags(
                    l.span_context.trace_flags().to_u8(),
                    l.span_context.is_remote(),
                ),
            })
            .collect(),
        dropped_links_count: u64::from(span.links.dropped_count),
        status_code,
        status_message,
    }
}

/// Records the span tree and the metrics of one case through the SDK and waits until both
/// exports are acknowledged (`force_flush` returned Ok).
pub(crate) async fn send(server: &TestServer, case: Case) -> Sent {
    let service = case.service();
    let resource = Resource::builder()
        .with_service_name(service.clone())
        .with_attribute(KeyValue::new("deployment.environment.name", "e2e"))
        .build();
    let memory = InMemorySpanExporter::default();
    let tracer_provider = SdkTracerProvider::builder()
        .with_resource(resource.clone())
        .with_sampler(TraceStateSampler)
        .with_simple_exporter(memory.clone())
        .with_batch_exporter(span_exporter(server, case))
        .build();
    let tracer = tracer_provider.tracer_with_scope(
        InstrumentationScope::builder("weft-e2e")
            .with_version("0.1.0")
            .with_attributes([KeyValue::new("e2e.scope", "yes")])
            .build(),
    );

    // Explicit times with odd nanoseconds, a few seconds in the past.
    let base = nanos(SystemTime::now()) - 5_000_000_000;
    let at = |offset_ns: u64| UNIX_EPOCH + Duration::from_nanos(base + offset_ns);

    // A span in another trace, for the link.
    let mut linked = tracer
        .span_builder("e2e.enqueue")
        .with_kind(SpanKind::Producer)
        .with_start_time(at(0))
        .with_attributes([KeyValue::new("messaging.system", "kafka")])
        .start_with_context(&tracer, &Context::new());
    let linked_context: SpanContext = linked.span_context().clone();
    linked.end_with_timestamp(at(1_000_001));

    let mut root = tracer
        .span_builder("GET /checkout/{id}")
        .with_kind(SpanKind::Server)
        .with_start_time(at(2_000_003))
        .with_attributes([
            KeyValue::new("http.request.method", "GET"),
            KeyValue::new("http.route", "/checkout/{id}"),
            KeyValue::new("http.response.status_code", 500i64),
            KeyValue::new("e2e.str", "hello wörld"),
            KeyValue::new("e2e.count", 42i64),
            KeyValue::new("e2e.ratio", 0.25f64),
            KeyValue::new("e2e.cached", true),
            KeyValue::new(
                "e2e.tags",
                OtelValue::Array(Array::String(vec!["a".into(), "b c".into()])),
            ),
        ])
        .start_with_context(&tracer, &Context::new());
    root.add_event_with_timestamp(
        "cache.miss",
        at(2_500_007),
        vec![
            KeyValue::new("e2e.key", "k1"),
            KeyValue::new("e2e.size", 128i64),
        ],
    );
    root.set_status(Status::error("boom: upstream failed"));
    let root_cx = Context::new().with_span(root);

    let mut client = tracer
        .span_builder("POST payment.Charge")
        .with_kind(SpanKind::Client)
        .with_start_time(at(3_000_011))
        .with_attributes([
            KeyValue::new("rpc.system", "grpc"),
            KeyValue::new("server.address", "payment"),
            KeyValue::new("e2e.retries", 2i64),
        ])
        .with_links(vec![OtelLink::new(
            linked_context,
            vec![KeyValue::new("e2e.link", "related")],
            0,
        )])
        .start_with_context(&tracer, &root_cx);
    client.set_status(Status::Ok);
    let client_cx = root_cx.with_span(client);

    let mut inner = tracer
        .span_builder("compute.fee")
        .with_kind(SpanKind::Internal)
        .with_start_time(at(3_500_013))
        .with_attributes([
            KeyValue::new("e2e.depth", 2i64),
            KeyValue::new("e2e.note", "inner"),
        ])
        .start_with_context(&tracer, &client_cx);
    inner.end_with_timestamp(at(4_500_017));
    client_cx.span().end_with_timestamp(at(6_000_019));
    root_cx.span().end_with_timestamp(at(9_876_543));

    // Metrics: a counter, a histogram with explicit bounds, a gauge.
    let meter_provider = SdkMeterProvider::builder()
        .with_resource(resource.clone())
        .with_reader(
            PeriodicReader::builder(metric_exporter(server, case))
                .with_interval(Duration::from_secs(3600))
                .build(),
        )
        .build();
    let meter = meter_provider.meter("weft-e2e");
    let route = [KeyValue::new("route", "/a")];
    let counter = meter.u64_counter("e2e.requests").build();
    counter.add(3, &route);
    counter.add(4, &route);
    let histogram = meter
        .f64_histogram("e2e.latency")
        .with_unit("s")
        .with_boundaries(vec![1.0, 5.0])
        .build();
    for v in [0.5, 1.5, 7.0] {
        histogram.record(v, &route);
    }
    let gauge = meter.f64_gauge("e2e.temperature").build();
    gauge.record(21.5, &[KeyValue::new("room", "lab")]);

    let (tp, mp) = (tracer_provider.clone(), meter_provider.clone());
    let (traces, metrics) =
        tokio::task::spawn_blocking(move || (tp.force_flush(), mp.force_flush()))
            .await
            .expect("flush task");
    traces.unwrap_or_else(|e| panic!("{case:?}: span export not acknowledged: {e:?}"));
    metrics.unwrap_or_else(|e| panic!("{case:?}: metric export not acknowledged: {e:?}"));

    let recorded = memory.get_finished_spans().expect("recorded spans");
    assert_eq!(recorded.len(), 4, "the sdk recorded the four spans");
    let spans = recorded.iter().map(|s| canonical(s, &resource)).collect();
    Sent {
        case,
        service,
        spans,
        tracer_provider,
        meter_provider,
    }
}

/// What Weft answers about one case: the traces (OTLP/JSON, by trace id), the span rows and
/// the metric rows. Compared raw between the live and the flushed read.
#[derive(Debug, PartialEq)]
pub(crate) struct Observed {
    traces: Vec<(String, Value)>,
    span_rows: Vec<Value>,
    metric_rows: Vec<Value>,
}

const SPAN_SQL: &str = "SELECT hex_id(trace_id) AS trace_id, hex_id(span_id) AS span_id, \
    hex_id(parent_span_id) AS parent_span_id, trace_state, flags, service_name, span_name, kind, \
    CAST(start_time AS BIGINT) AS start_ns, duration_ns, status_code, status_message, \
    scope_name, scope_version, \
    attributes['e2e.str'] AS e2e_str, attributes['e2e.count'] AS e2e_count, \
    attributes['e2e.ratio'] AS e2e_ratio, attributes['e2e.cached'] AS e2e_cached, \
    attributes['e2e.depth'] AS e2e_depth, attributes['e2e.note'] AS e2e_note, \
    http_method, http_route, http_status_code, rpc_system, server_address, messaging_system, \
    dropped_attributes_count, dropped_events_count, dropped_links_count, sample_weight, \
    events[1]['name'] AS event_name, events[1]['attributes']['e2e.key'] AS event_key, \
    hex_id(links[1]['span_id']) AS link_span_id, links[1]['attributes']['e2e.link'] AS link_attr, \
    resource_attributes['deployment.environment.name'] AS environment \
    FROM spans WHERE service_name = '{service}' ORDER BY span_id";

const METRIC_SQL: &str = "SELECT metric_name, metric_type, metric_unit, aggregation_temporality, \
    is_monotonic, value_int, value_double, \"count\", \"sum\", \"min\", \"max\", bucket_counts, \
    explicit_bounds, attributes['route'] AS route, attributes['room'] AS room \
    FROM metrics WHERE service_name = '{service}' ORDER BY metric_name";

pub(crate) async fn observe(server: &TestServer, sent: &Sent) -> Observed {
    let mut trace_ids: Vec<String> = sent.spans.iter().map(|s| s.trace_id.clone()).collect();
    trace_ids.sort();
    trace_ids.dedup();
    let mut traces = Vec::new();
    for id in trace_ids {
        let reply = server.trace_reply(&id).await;
        assert_eq!(
            reply.status,
            200,
            "{:?}: GET trace {id}: {}",
            sent.case,
            reply.text()
        );
        let count = sent.spans.iter().filter(|s| s.trace_id == id).count();
        assert_eq!(
            reply.header("x-weft-span-count"),
            Some(count.to_string()),
            "{:?}: x-weft-span-count of {id}",
            sent.case
        );
        traces.push((id, reply.json()));
    }
    Observed {
        traces,
        span_rows: server
            .sql_rows(&SPAN_SQL.replace("{service}", &sent.service))
            .await,
        metric_rows: server
            .sql_rows(&METRIC_SQL.replace("{service}", &sent.service))
            .await,
    }
}

/// Expected value of one column in a row: `None` = SQL NULL (absent from the JSON row).
#[derive(Debug, Clone, PartialEq)]
enum Cell {
    Null,
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Ints(Vec<i64>),
    Floats(Vec<f64>),
}

fn s(v: &str) -> Cell {
    Cell::Str(v.to_owned())
}

fn actual_cell(v: Option<&Value>, like: &Cell) -> Cell {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Cell::Null;
    };
    let list = |v: &Value| v.as_array().cloned().unwrap_or_default();
    match like {
        Cell::Int(_) => json_i64(v).map_or_else(|| Cell::Str(v.to_string()), Cell::Int),
        Cell::Float(_) => json_f64(v).map_or_else(|| Cell::Str(v.to_string()), Cell::Float),
        Cell::Bool(_) => v
            .as_bool()
            .map_or_else(|| Cell::Str(v.to_string()), Cell::Bool),
        Cell::Ints(_) => Cell::Ints(
            list(v)
                .iter()
                .map(|x| json_i64(x).unwrap_or(i64::MIN))
                .collect(),
        ),
        Cell::Floats(_) => Cell::Floats(
            list(v)
                .iter()
                .map(|x| json_f64(x).unwrap_or(f64::NAN))
                .collect(),
        ),
        Cell::Str(_) | Cell::Null => match v {
            Value::String(text) => Cell::Str(text.clone()),
            other => Cell::Str(other.to_string()),
        },
    }
}

fn assert_row(what: &str, row: &Value, expected: &[(&str, Cell)]) {
    for (column, want) in expected {
        let got = actual_cell(field(row, column), want);
        assert_eq!(&got, want, "{what}: column {column} of row {row}");
    }
}

/// Checks everything Weft answered against what the SDK recorded.
pub(crate) fn check(sent: &Sent, observed: &Observed) {
    let case = sent.case;
    // (a) The trace API: every field of every span, plus resource and scope.
    let mut from_api = Vec::new();
    for (id, doc) in &observed.traces {
        let spans = spans_from_json(doc);
        assert!(
            spans.iter().all(|s| &s.trace_id == id),
            "{case:?}: trace {id} holds only its spans"
        );
        from_api.extend(spans);
    }
    assert_eq!(
        sorted(from_api),
        sorted(sent.spans.clone()),
        "{case:?}: spans from GET /api/v1/traces/{{id}} differ from what the sdk recorded"
    );

    // (b) SQL: one row per span with the typed, promoted and mapped columns.
    let mut expected_spans = sent.spans.clone();
    expected_spans.sort_by(|a, b| a.span_id.cmp(&b.span_id));
    assert_eq!(
        observed.span_rows.len(),
        expected_spans.len(),
        "{case:?}: span rows {:?}",
        observed.span_rows
    );
    for (row, span) in observed.span_rows.iter().zip(&expected_spans) {
        let attr_text = |key: &str| match span.attributes.get(key) {
            None => Cell::Null,
            Some(Any::Str(v)) => s(v),
            Some(Any::Int(v)) => s(&v.to_string()),
            Some(Any::Double(v)) => s(&v.to_string()),
            Some(Any::Bool(v)) => s(&v.to_string()),
            Some(other) => panic!("not a scalar: {other:?}"),
        };
        let opt = |v: &str| if v.is_empty() { Cell::Null } else { s(v) };
        let is_root = span.name == "GET /checkout/{id}";
        let is_client = span.name == "POST payment.Charge";
        let mut expected = vec![
            ("trace_id", s(&span.trace_id)),
            ("span_id", s(&span.span_id)),
            ("parent_span_id", opt(&span.parent_span_id)),
            ("trace_state", s(TRACE_STATE)),
            ("flags", Cell::Int(span.flags as i64)),
            ("service_name", s(&sent.service)),
            ("span_name", s(&span.name)),
            ("kind", Cell::Int(span.kind)),
            ("start_ns", Cell::Int(span.start as i64)),
            ("duration_ns", Cell::Int((span.end - span.start) as i64)),
            ("status_code", Cell::Int(span.status_code)),
            ("status_message", opt(&span.status_message)),
            ("scope_name", s("weft-e2e")),
            ("scope_version", s("0.1.0")),
            ("e2e_str", attr_text("e2e.str")),
            ("e2e_count", attr_text("e2e.count")),
            ("e2e_ratio", attr_text("e2e.ratio")),
            ("e2e_cached", attr_text("e2e.cached")),
            ("e2e_depth", attr_text("e2e.depth")),
            ("e2e_note", attr_text("e2e.note")),
            ("http_method", if is_root { s("GET") } else { Cell::Null }),
            (
                "http_route",
                if is_root {
                    s("/checkout/{id}")
                } else {
                    Cell::Null
                },
            ),
            (
                "http_status_code",
                if is_root { Cell::Int(500) } else { Cell::Null },
            ),
            ("rpc_system", if is_client { s("grpc") } else { Cell::Null }),
            (
                "server_address",
                if is_client { s("payment") } else { Cell::Null },
            ),
            (
                "messaging_system",
                if span.name == "e2e.enqueue" {
                    s("kafka")
                } else {
                    Cell::Null
                },
            ),
            ("dropped_attributes_count", Cell::Int(0)),
            ("dropped_events_count", Cell::Int(0)),
            ("dropped_links_count", Cell::Int(0)),
            ("sample_weight", Cell::Float(1.0)),
            ("environment", s("e2e")),
        ];
        expected.push((
            "event_name",
            span.events.first().map_or(Cell::Null, |e| s(&e.name)),
        ));
        expected.push(("event_key", if is_root { s("k1") } else { Cell::Null }));
        expected.push((
            "link_span_id",
            span.links.first().map_or(Cell::Null, |l| s(&l.span_id)),
        ));
        expected.push((
            "link_attr",
            if is_client { s("related") } else { Cell::Null },
        ));
        // Sanity of the expectation itself: the recorded values are the ones set above.
        if is_root {
            assert_eq!(attr_text("e2e.count"), s("42"));
            assert_eq!(attr_text("e2e.ratio"), s("0.25"));
            assert_eq!(attr_text("e2e.cached"), s("true"));
            assert_eq!(span.status_message, "boom: upstream failed");
        }
        assert_row(&format!("{case:?} span {}", span.name), row, &expected);
    }

    // (c) Metrics: one point per instrument with the recorded values.
    let rows = &observed.metric_rows;
    assert_eq!(rows.len(), 3, "{case:?}: metric rows {rows:?}");
    assert_row(
        &format!("{case:?} e2e.latency"),
        &rows[0],
        &[
            ("metric_name", s("e2e.latency")),
            ("metric_type", Cell::Int(3)),
            ("metric_unit", s("s")),
            ("aggregation_temporality", Cell::Int(2)),
            ("count", Cell::Int(3)),
            ("sum", Cell::Float(9.0)),
            ("min", Cell::Float(0.5)),
            ("max", Cell::Float(7.0)),
            ("bucket_counts", Cell::Ints(vec![1, 1, 1])),
            ("explicit_bounds", Cell::Floats(vec![1.0, 5.0])),
            ("value_int", Cell::Null),
            ("value_double", Cell::Null),
            ("route", s("/a")),
        ],
    );
    assert_row(
        &format!("{case:?} e2e.requests"),
        &rows[1],
        &[
            ("metric_name", s("e2e.requests")),
            ("metric_type", Cell::Int(2)),
            ("aggregation_temporality", Cell::Int(2)),
            ("is_monotonic", Cell::Bool(true)),
            ("value_int", Cell::Int(7)),
            ("value_double", Cell::Null),
            ("count", Cell::Null),
            ("route", s("/a")),
        ],
    );
    assert_row(
        &format!("{case:?} e2e.temperature"),
        &rows[2],
        &[
            ("metric_name", s("e2e.temperature")),
            ("metric_type", Cell::Int(1)),
            ("value_double", Cell::Float(21.5)),
            ("value_int", Cell::Null),
            ("aggregation_temporality", Cell::Null),
            ("room", s("lab")),
            ("route", Cell::Null),
        ],
    );
}

async fn live_case(case: Case) {
    let server = TestServer::start(&[]);
    let sent = send(&server, case).await;
    let observed = observe(&server, &sent).await;
    check(&sent, &observed);
    sent.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc() {
    live_case(Case::new(Transport::Grpc, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_grpc_gzip() {
    live_case(Case::new(Transport::Grpc, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf() {
    live_case(Case::new(Transport::HttpProto, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_protobuf_gzip() {
    live_case(Case::new(Transport::HttpProto, true)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_json() {
    live_case(Case::new(Transport::HttpJson, false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_http_json_gzip() {
    live_case(Case::new(Transport::HttpJson, true)).await;
}

/// All six combinations against one server that flushes after a second: what is read right
/// after the acknowledgement (live rows) and what is read once everything is in Parquet must
/// both match the SDK and be identical to each other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdk_live_and_parquet_reads_are_identical() {
    let server = TestServer::start(&["--set", "collector.buffer.flush_age_secs=1"]);
    let mut sent = Vec::new();
    let mut live = Vec::new();
    let mut flushed_before_read = 0;
    for case in Case::ALL {
        let one = send(&server, case).await;
        flushed_before_read = flushed_before_read.max(manifest_rows(&server.data_dir, "spans"));
        live.push(observe(&server, &one).await);
        sent.push(one);
    }
    for (one, observed) in sent.iter().zip(&live) {
        check(one, observed);
    }

    let spans: u64 = sent.iter().map(|s| s.spans.len() as u64).sum();
    let points = 3 * sent.len() as u64;
    wait_for_parquet_rows(&server.data_dir, "spans", spans).await;
    wait_for_parquet_rows(&server.data_dir, "metrics", points).await;
    assert_eq!(
        manifest_rows(&server.data_dir, "spans"),
        spans,
        "each span flushed once"
    );
    assert_eq!(
        manifest_rows(&server.data_dir, "metrics"),
        points,
        "each point flushed once"
    );
    if flushed_before_read > 0 {
        eprintln!("note: {flushed_before_read} spans were flushed before a live read");
    }

    for (one, before) in sent.iter().zip(&live) {
        let after = observe(&server, one).await;
        check(one, &after);
        assert_eq!(
            &after, before,
            "{:?}: the answer from parquet differs from the answer from live rows",
            one.case
        );
    }
    for one in sent {
        one.shutdown().await;
    }
}
