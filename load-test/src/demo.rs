//! The viewer's demo dataset: generated multi-service traffic, one 50,000-span trace, one
//! small hand-made trace whose critical path is known, and metrics — sent over OTLP/HTTP
//! (protobuf) to a running Weft. It returns [`DemoFacts`]: what was sent, computed from the
//! requests themselves, so tests can check the viewer against the truth rather than against
//! the API it draws from.
//!
//! ```text
//!  TraceGenerator ──┐
//!  big_trace()     ─┼─> POST /v1/traces ─┐
//!  critical_trace() ┘                    ├─> weft     facts (edges, ids, counts) ──> tests
//!  metrics_request() ─> POST /v1/metrics ┘
//! ```
//! `weft-load demo --otlp-http … --facts facts.json` runs it from the command line.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::span::{Event, Link, SpanKind};
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use serde::Serialize;

use crate::generator::TraceGenerator;

/// Spans in the big trace.
pub const BIG_TRACE_SPANS: usize = 50_000;
/// Spans of generated traffic (whole traces, so slightly more).
const GENERATED_SPANS: usize = 20_000;
const SPANS_PER_REQUEST: usize = 2_000;

#[derive(Debug, Clone, Serialize)]
pub struct DemoFacts {
    pub generated: GeneratedFacts,
    pub big_trace: TraceFacts,
    pub critical_trace: CriticalTraceFacts,
    pub metrics: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct GeneratedFacts {
    pub traces: usize,
    pub spans: usize,
    pub services: Vec<String>,
    /// (parent service, child service) for every parent/child pair that crosses services.
    pub edges: Vec<(String, String)>,
    /// A trace with several spans and at least one error, when the traffic has one.
    pub sample_trace: TraceFacts,
    /// Root span start of the earliest and end of the latest generated trace (RFC 3339).
    pub start: String,
    pub end: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceFacts {
    pub id: String,
    pub span_count: usize,
    pub root_service: String,
    pub root_operation: String,
    pub error_spans: usize,
    pub duration_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriticalTraceFacts {
    pub trace: TraceFacts,
    /// Span names on the critical path, root first.
    pub critical_path: Vec<String>,
    /// Span names that are not on it.
    pub off_path: Vec<String>,
    /// A span attribute the span panel must show: (span name, key, value).
    pub attribute: (String, String, String),
    /// An event on that span: (name, offset from the trace start in ns).
    pub event: (String, u64),
    /// The span with an error status and its message.
    pub error: (String, String),
    /// The trace the `charge` span links to (the generated sample trace).
    pub link_to: String,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_nanos() as u64
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn rfc3339(ns: u64) -> String {
    // Civil-from-days (H. Hinnant), so no date crate is needed for one format.
    let secs = ns / 1_000_000_000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ns % 1_000_000_000
    )
}

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// One ResourceSpans per service, in first-seen order.
fn request_of(spans: Vec<(String, Span)>) -> ExportTraceServiceRequest {
    let mut by_service: Vec<(String, Vec<Span>)> = Vec::new();
    for (service, span) in spans {
        match by_service.iter_mut().find(|(s, _)| *s == service) {
            Some((_, list)) => list.push(span),
            None => by_service.push((service, vec![span])),
        }
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![
                        kv("service.name", &service),
                        kv("deployment.environment", "demo"),
                    ],
                    ..Default::default()
                }),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "weft-demo".into(),
                        version: "1".into(),
                        ..Default::default()
                    }),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            })
            .collect(),
    }
}

fn service_of(rs: &ResourceSpans) -> String {
    rs.resource
        .as_ref()
        .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
        .and_then(|a| a.value.as_ref())
        .and_then(|v| match &v.value {
            Some(any_value::Value::StringValue(s)) => Some(s.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

/// A 50,000-span trace: a tree 7 levels deep across 12 services, every child inside its
/// parent's window, one span in 500 an error.
pub fn big_trace(trace_id: [u8; 16], start_ns: u64) -> Vec<(String, Span)> {
    const SERVICES: [&str; 12] = [
        "edge-proxy",
        "web",
        "catalog",
        "search",
        "pricing",
        "inventory",
        "cart",
        "checkout",
        "payments",
        "shipping",
        "recommendations",
        "user-profile",
    ];
    struct Node {
        id: [u8; 8],
        start: u64,
        end: u64,
        depth: usize,
    }
    let span_id = |i: usize| -> [u8; 8] { ((i as u64) + 1).to_be_bytes() };
    let mut spans = Vec::with_capacity(BIG_TRACE_SPANS);
    let mut queue = std::collections::VecDeque::new();
    let root = Node {
        id: span_id(0),
        start: start_ns,
        end: start_ns + 4_000_000_000,
        depth: 0,
    };
    let mut next = 1usize;
    let emit =
        |node: &Node, parent: Option<[u8; 8]>, index: usize, spans: &mut Vec<(String, Span)>| {
            let service = SERVICES[(index * 7 + node.depth) % SERVICES.len()];
            let error = index % 500 == 499;
            spans.push((
                service.to_owned(),
                Span {
                    trace_id: trace_id.to_vec(),
                    span_id: node.id.to_vec(),
                    parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                    name: format!("{service} op-{}", index % 40),
                    kind: if parent.is_none() {
                        SpanKind::Server as i32
                    } else {
                        SpanKind::Internal as i32
                    },
                    start_time_unix_nano: node.start,
                    end_time_unix_nano: node.end,
                    attributes: vec![kv("demo.index", &index.to_string())],
                    status: Some(Status {
                        code: if error {
                            StatusCode::Error as i32
                        } else {
                            StatusCode::Ok as i32
                        },
                        message: if error {
                            "demo failure".into()
                        } else {
                            String::new()
                        },
                    }),
                    ..Default::default()
                },
            ));
        };
    emit(&root, None, 0, &mut spans);
    queue.push_back(root);
    while let Some(parent) = queue.pop_front() {
        if next >= BIG_TRACE_SPANS {
            break;
        }
        // Branching shrinks with depth so the tree is wide near the root and ends 7 deep.
        let children = [12, 10, 8, 6, 5, 4, 0][parent.depth.min(6)];
        let width = (parent.end - parent.start) / (children as u64 + 1).max(1);
        for c in 0..children {
            if next >= BIG_TRACE_SPANS {
                break;
            }
            let start = parent.start + width / 2 + c as u64 * width;
            let node = Node {
                id: span_id(next),
                start,
                end: start + width * 3 / 4,
                depth: parent.depth + 1,
            };
            emit(&node, Some(parent.id), next, &mut spans);
            next += 1;
            queue.push_back(node);
        }
    }
    assert_eq!(
        spans.len(),
        BIG_TRACE_SPANS,
        "the tree shape yields enough spans"
    );
    spans
}

/// Six spans whose critical path is known: the root's time is spent mostly in `charge`,
/// which waits on `db.query`; `auth.verify` and `cache.get` overlap something that ends later.
fn critical_trace(
    trace_id: [u8; 16],
    t0: u64,
    link_to: (&[u8], &[u8]),
) -> (Vec<(String, Span)>, CriticalTraceFacts) {
    let ms = 1_000_000u64;
    let sid = |n: u8| vec![0xc0, 0, 0, 0, 0, 0, 0, n];
    let span = |n: u8, parent: Option<u8>, name: &str, kind: SpanKind, from: u64, to: u64| Span {
        trace_id: trace_id.to_vec(),
        span_id: sid(n),
        parent_span_id: parent.map(sid).unwrap_or_default(),
        name: name.to_owned(),
        kind: kind as i32,
        start_time_unix_nano: t0 + from * ms,
        end_time_unix_nano: t0 + to * ms,
        ..Default::default()
    };
    let root = span(1, None, "GET /checkout", SpanKind::Server, 0, 100);
    let auth = span(2, Some(1), "auth.verify", SpanKind::Client, 2, 30);
    let mut charge = span(3, Some(1), "charge", SpanKind::Client, 25, 95);
    charge.attributes.push(kv("payment.provider", "acme-pay"));
    charge.events.push(Event {
        time_unix_nano: t0 + 60 * ms,
        name: "card.authorized".into(),
        attributes: vec![kv("card.brand", "visa")],
        ..Default::default()
    });
    charge.links.push(Link {
        trace_id: link_to.0.to_vec(),
        span_id: link_to.1.to_vec(),
        ..Default::default()
    });
    let cache = span(4, Some(3), "cache.get", SpanKind::Client, 32, 40);
    let mut db = span(5, Some(3), "db.query", SpanKind::Client, 30, 90);
    db.status = Some(Status {
        code: StatusCode::Error as i32,
        message: "deadlock detected".into(),
    });
    db.attributes.push(kv("db.system", "postgresql"));
    let render = span(6, Some(1), "render", SpanKind::Internal, 96, 99);
    let spans = vec![
        ("shop-web".to_owned(), root),
        ("auth-svc".to_owned(), auth),
        ("payment-svc".to_owned(), charge),
        ("payment-svc".to_owned(), cache),
        ("payments-db".to_owned(), db),
        ("shop-web".to_owned(), render),
    ];
    let facts = CriticalTraceFacts {
        trace: TraceFacts {
            id: hex(&trace_id),
            span_count: spans.len(),
            root_service: "shop-web".into(),
            root_operation: "GET /checkout".into(),
            error_spans: 1,
            duration_ns: 100 * ms,
        },
        // render (96–99) starts after charge (25–95) ends, so the path ends with it; cache.get
        // (32–40) runs inside db.query (30–90) and auth.verify (2–30) overlaps charge.
        critical_path: vec![
            "GET /checkout".into(),
            "charge".into(),
            "db.query".into(),
            "render".into(),
        ],
        off_path: vec!["auth.verify".into(), "cache.get".into()],
        attribute: (
            "charge".into(),
            "payment.provider".into(),
            "acme-pay".into(),
        ),
        event: ("card.authorized".into(), 60 * ms),
        error: ("db.query".into(), "deadlock detected".into()),
        link_to: hex(link_to.0),
    };
    (spans, facts)
}

/// Moves every timestamp of a generated request `by_ns` into the past.
fn shift_spans(request: &mut ExportTraceServiceRequest, by_ns: u64) {
    let spans = request
        .resource_spans
        .iter_mut()
        .flat_map(|rs| &mut rs.scope_spans)
        .flat_map(|ss| &mut ss.spans);
    for span in spans {
        span.start_time_unix_nano -= by_ns;
        span.end_time_unix_nano -= by_ns;
        for event in &mut span.events {
            event.time_unix_nano -= by_ns;
        }
    }
}

/// Gives every point of a cumulative metrics request one series start and time `at`.
fn retime_metrics(request: &mut ExportMetricsServiceRequest, series_start: u64, at: u64) {
    let metrics = request
        .resource_metrics
        .iter_mut()
        .flat_map(|rm| &mut rm.scope_metrics)
        .flat_map(|sm| &mut sm.metrics);
    for metric in metrics {
        match &mut metric.data {
            Some(metric::Data::Sum(sum)) => sum.data_points.iter_mut().for_each(|p| {
                p.start_time_unix_nano = series_start;
                p.time_unix_nano = at;
            }),
            Some(metric::Data::Histogram(h)) => h.data_points.iter_mut().for_each(|p| {
                p.start_time_unix_nano = series_start;
                p.time_unix_nano = at;
            }),
            _ => {}
        }
    }
}

/// Per-trace summary of generated traffic, for picking a sample trace and the edges.
#[derive(Default)]
struct TraceAcc {
    spans: usize,
    errors: usize,
    root: Option<(String, String)>,
    root_span_id: Vec<u8>,
    start: u64,
    end: u64,
}

async fn post(client: &reqwest::Client, url: &str, body: Vec<u8>) -> anyhow::Result<()> {
    let reply = client
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .await
        .with_context(|| format!("POST {url}"))?;
    let status = reply.status();
    let body = reply.bytes().await.unwrap_or_default();
    if !status.is_success() {
        bail!("POST {url}: {status}: {}", String::from_utf8_lossy(&body));
    }
    // Both export responses carry partial_success as field 1 with the rejected count as
    // its field 1, so one decode checks traces and metrics alike.
    let response = ExportTraceServiceResponse::decode(body.as_ref())
        .with_context(|| format!("POST {url}: undecodable response"))?;
    if let Some(partial) = response.partial_success
        && partial.rejected_spans > 0
    {
        bail!(
            "POST {url}: {} rejected: {}",
            partial.rejected_spans,
            partial.error_message
        );
    }
    Ok(())
}

/// Sends the demo dataset to `otlp_http` (e.g. `http://127.0.0.1:4318`) and returns what
/// was sent. `seed` fixes the generated traffic.
pub async fn load(otlp_http: &str, seed: u64) -> anyhow::Result<DemoFacts> {
    let client = reqwest::Client::new();
    let traces_url = format!("{}/v1/traces", otlp_http.trim_end_matches('/'));
    let metrics_url = format!("{}/v1/metrics", otlp_http.trim_end_matches('/'));

    let mut generator = TraceGenerator::new(10, 0.05, seed);
    let services: Vec<String> = generator.service_names().map(str::to_owned).collect();
    let mut traces: HashMap<Vec<u8>, TraceAcc> = HashMap::new();
    let mut edges = BTreeSet::new();
    let mut sent = 0usize;
    let mut metric_names: BTreeSet<String> = BTreeSet::new();
    // Traffic is spread over the last ~50 minutes (one request per 5-minute step, oldest
    // first) so charts over time have something to draw; metrics follow the same clock.
    let steps = GENERATED_SPANS.div_ceil(SPANS_PER_REQUEST) as u64;
    let step_ns = 300_000_000_000u64;
    let series_start = now_ns() - (steps + 1) * step_ns;
    let mut step = 0u64;
    while sent < GENERATED_SPANS {
        let mut request = generator.next_request(SPANS_PER_REQUEST);
        let shift = (steps - step.min(steps)) * step_ns;
        step += 1;
        shift_spans(&mut request, shift);
        let mut owner: HashMap<(Vec<u8>, Vec<u8>), String> = HashMap::new();
        for rs in &request.resource_spans {
            let service = service_of(rs);
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                owner.insert(
                    (span.trace_id.clone(), span.span_id.clone()),
                    service.clone(),
                );
            }
        }
        for rs in &request.resource_spans {
            let service = service_of(rs);
            for span in rs.scope_spans.iter().flat_map(|s| &s.spans) {
                let acc = traces.entry(span.trace_id.clone()).or_default();
                acc.spans += 1;
                if span
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32)
                {
                    acc.errors += 1;
                }
                if span.parent_span_id.is_empty() {
                    acc.root = Some((service.clone(), span.name.clone()));
                    acc.root_span_id = span.span_id.clone();
                    acc.start = span.start_time_unix_nano;
                    acc.end = span.end_time_unix_nano;
                } else if let Some(parent) =
                    owner.get(&(span.trace_id.clone(), span.parent_span_id.clone()))
                    && *parent != service
                {
                    edges.insert((parent.clone(), service.clone()));
                }
            }
        }
        sent += crate::generator::span_count(&request);
        post(&client, &traces_url, request.encode_to_vec()).await?;
        let mut metrics = generator.metrics_request();
        retime_metrics(&mut metrics, series_start, now_ns() - shift);
        for rm in &metrics.resource_metrics {
            for sm in &rm.scope_metrics {
                metric_names.extend(sm.metrics.iter().map(|m| m.name.clone()));
            }
        }
        post(&client, &metrics_url, metrics.encode_to_vec()).await?;
    }
    let complete: BTreeMap<&Vec<u8>, &TraceAcc> =
        traces.iter().filter(|(_, t)| t.root.is_some()).collect();
    let (sample_id, sample) = complete
        .iter()
        .filter(|(_, t)| t.spans >= 5)
        .max_by_key(|(_, t)| (t.errors > 0, std::cmp::Reverse(t.spans.abs_diff(20))))
        .context("generated traffic has no complete trace")?;
    let (root_service, root_operation) = sample.root.clone().unwrap_or_default();
    let generated = GeneratedFacts {
        traces: traces.len(),
        spans: sent,
        services,
        edges: edges.into_iter().collect(),
        sample_trace: TraceFacts {
            id: hex(sample_id),
            span_count: sample.spans,
            root_service,
            root_operation,
            error_spans: sample.errors,
            duration_ns: sample.end - sample.start,
        },
        start: rfc3339(complete.values().map(|t| t.start).min().unwrap_or(0)),
        end: rfc3339(complete.values().map(|t| t.end).max().unwrap_or(0)),
    };

    let now = now_ns();
    let big_id: [u8; 16] = *b"weft-demo-big-tr";
    let big = big_trace(big_id, now - 60_000_000_000);
    let big_facts = TraceFacts {
        id: hex(&big_id),
        span_count: big.len(),
        root_service: big[0].0.clone(),
        root_operation: big[0].1.name.clone(),
        error_spans: big
            .iter()
            .filter(|(_, s)| {
                s.status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32)
            })
            .count(),
        duration_ns: big[0].1.end_time_unix_nano - big[0].1.start_time_unix_nano,
    };
    for chunk in big.chunks(5_000) {
        post(
            &client,
            &traces_url,
            request_of(chunk.to_vec()).encode_to_vec(),
        )
        .await?;
    }

    let critical_id: [u8; 16] = *b"weft-demo-critic";
    let (critical, critical_facts) = critical_trace(
        critical_id,
        now - 30_000_000_000,
        (sample_id, &sample.root_span_id),
    );
    post(&client, &traces_url, request_of(critical).encode_to_vec()).await?;

    Ok(DemoFacts {
        generated,
        big_trace: big_facts,
        critical_trace: critical_facts,
        metrics: metric_names.into_iter().collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn big_trace_is_one_tree_with_children_inside_parents() {
        let spans = big_trace([1; 16], 1_000);
        let by_id: HashMap<&[u8], &Span> = spans
            .iter()
            .map(|(_, s)| (s.span_id.as_slice(), s))
            .collect();
        assert_eq!(by_id.len(), BIG_TRACE_SPANS, "span ids are unique");
        let roots = spans
            .iter()
            .filter(|(_, s)| s.parent_span_id.is_empty())
            .count();
        assert_eq!(roots, 1);
        for (_, s) in &spans[1..] {
            let parent = by_id[s.parent_span_id.as_slice()];
            assert!(parent.start_time_unix_nano <= s.start_time_unix_nano);
            assert!(s.end_time_unix_nano <= parent.end_time_unix_nano);
        }
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(
            rfc3339(1_571_896_375_123_000_000),
            "2019-10-24T05:52:55.123000000Z"
        );
        assert_eq!(
            rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00.000000000Z"
        );
    }
}
