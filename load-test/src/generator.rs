//! Trace (and metric) generation over the [`Topology`](crate::topology).
//!
//! A trace is produced top-down in pre-order: a span's time window is fixed
//! before its children are planned, and every child is placed inside its
//! parent's window. Because parents are always emitted before their
//! children, any prefix of a generated trace is itself a well-formed tree,
//! which is how a trace is cut down when it must fit a span budget.

use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
    ResourceMetrics, ScopeMetrics, Sum, metric, number_data_point,
};
use opentelemetry_proto::tonic::trace::v1::span::{Event, SpanKind};
use opentelemetry_proto::tonic::trace::v1::{
    ResourceSpans, ScopeSpans, Span, Status, status::StatusCode,
};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::topology::{
    Action, NUM_SCOPES, SCHEMA_URL, StatusAttr, Tmpl, Topology, kv, kv_int, kv_str,
};

/// Hard cap on spans in one trace (bounds recursion together with `MAX_DEPTH`).
pub const MAX_TRACE_SPANS: usize = 256;
/// Maximum service-call depth below the root.
const MAX_DEPTH: usize = 10;
/// Maximum children planned under one span.
const MAX_CHILDREN: usize = 24;
/// W3C "sampled" flag plus "has is_remote" (bit 8); bit 9 marks a remote parent.
const FLAGS_LOCAL: u32 = 0x101;
const FLAGS_REMOTE: u32 = 0x301;
/// Explicit bucket bounds (seconds) of the request-duration histogram.
const DURATION_BOUNDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

/// One generated span plus where it goes in a request.
struct SpanRec {
    instance: u32,
    scope: u8,
    span: Span,
}

/// Cumulative request metrics of one pod.
#[derive(Clone, Default)]
struct InstanceMetrics {
    ok: u64,
    failed: u64,
    buckets: [u64; DURATION_BOUNDS.len() + 1],
    sum: f64,
    min: f64,
    max: f64,
}

impl InstanceMetrics {
    fn record(&mut self, seconds: f64, failed: bool) {
        if self.ok + self.failed == 0 {
            self.min = seconds;
            self.max = seconds;
        } else {
            self.min = self.min.min(seconds);
            self.max = self.max.max(seconds);
        }
        if failed {
            self.failed += 1;
        } else {
            self.ok += 1;
        }
        self.sum += seconds;
        let bucket = DURATION_BOUNDS.partition_point(|b| *b < seconds);
        self.buckets[bucket] += 1;
    }
}

/// Generates realistic multi-service traces as OTLP export requests.
///
/// Cheap by construction: a [`SmallRng`], pre-built attribute templates that
/// are cloned rather than formatted, and reusable scratch buffers. One
/// request holds whole traces; spans are grouped per pod (resource) and
/// instrumentation scope, as a collector batching many services would send
/// them.
pub struct TraceGenerator {
    topo: Topology,
    rng: SmallRng,
    error_rate: f64,
    /// Spans of the trace being generated (pre-order).
    scratch: Vec<SpanRec>,
    /// Spans of the request being assembled, by pod and scope.
    buckets: Vec<[Vec<Span>; NUM_SCOPES]>,
    metrics: Vec<InstanceMetrics>,
    start_unix_nano: u64,
    traces: u64,
    spans: u64,
}

impl std::fmt::Debug for TraceGenerator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TraceGenerator")
            .field("services", &self.topo.services.len())
            .field("error_rate", &self.error_rate)
            .field("traces", &self.traces)
            .field("spans", &self.spans)
            .finish_non_exhaustive()
    }
}

fn now_unix_nano() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or_default()
}

impl TraceGenerator {
    /// A generator for a shop of `services` services (at least 1) where a
    /// fraction `error_rate` (clamped to 0..=1) of traces fail, seeded with
    /// `seed` (same seed, same traces — except timestamps, which follow the
    /// wall clock).
    pub fn new(services: usize, error_rate: f64, seed: u64) -> Self {
        let topo = Topology::new(services);
        let instances = topo.instances.len();
        TraceGenerator {
            topo,
            rng: SmallRng::seed_from_u64(seed),
            error_rate: if error_rate.is_nan() {
                0.0
            } else {
                error_rate.clamp(0.0, 1.0)
            },
            scratch: Vec::with_capacity(MAX_TRACE_SPANS),
            buckets: (0..instances).map(|_| Default::default()).collect(),
            metrics: vec![InstanceMetrics::default(); instances],
            start_unix_nano: now_unix_nano(),
            traces: 0,
            spans: 0,
        }
    }

    /// Names of the simulated services, in topology order.
    pub fn service_names(&self) -> impl Iterator<Item = &str> {
        self.topo.services.iter().map(|s| s.name.as_str())
    }

    /// Traces and spans generated so far.
    pub fn generated(&self) -> (u64, u64) {
        (self.traces, self.spans)
    }

    /// A request of whole traces holding about `target_spans` spans: traces
    /// are added while the total is below `target_spans`, so it holds at
    /// least that many (at least one trace) and overshoots by less than one
    /// trace.
    pub fn next_request(&mut self, target_spans: usize) -> ExportTraceServiceRequest {
        self.next_request_limited(target_spans, usize::MAX)
    }

    /// Like [`next_request`](Self::next_request) but never more than `limit`
    /// spans (`limit` ≥ 1): the trace that would cross the limit is cut to a
    /// pre-order prefix, which keeps it a well-formed tree.
    pub fn next_request_limited(
        &mut self,
        target_spans: usize,
        limit: usize,
    ) -> ExportTraceServiceRequest {
        let limit = limit.max(1);
        let target = target_spans.clamp(1, limit);
        let mut total = 0usize;
        // Every iteration adds at least one span, so `target` bounds the loop.
        for _ in 0..target {
            if total >= target {
                break;
            }
            self.generate_trace();
            let take = self.scratch.len().min(limit - total);
            total += take;
            for rec in self.scratch.drain(..take) {
                self.buckets[rec.instance as usize][rec.scope as usize].push(rec.span);
            }
            self.scratch.clear();
            if total >= limit {
                break;
            }
        }
        self.spans += total as u64;
        self.assemble()
    }

    /// Cumulative metrics for every pod that has served requests so far: a
    /// monotonic counter `app.requests` (split by `error`) and a histogram
    /// `app.request.duration` (seconds), both derived from the generated
    /// SERVER/CONSUMER spans.
    pub fn metrics_request(&self) -> ExportMetricsServiceRequest {
        let now = now_unix_nano();
        let mut resource_metrics = Vec::new();
        for (i, m) in self.metrics.iter().enumerate() {
            let count = m.ok + m.failed;
            if count == 0 {
                continue;
            }
            let inst = &self.topo.instances[i];
            let counter_point = |failed: bool, value: u64| NumberDataPoint {
                attributes: vec![kv("error", Value::BoolValue(failed))],
                start_time_unix_nano: self.start_unix_nano,
                time_unix_nano: now,
                value: Some(number_data_point::Value::AsInt(value as i64)),
                ..Default::default()
            };
            let counter = Metric {
                name: "app.requests".to_owned(),
                description: "Requests served".to_owned(),
                unit: "{request}".to_owned(),
                data: Some(metric::Data::Sum(Sum {
                    data_points: vec![counter_point(false, m.ok), counter_point(true, m.failed)],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                    is_monotonic: true,
                })),
                ..Default::default()
            };
            let histogram = Metric {
                name: "app.request.duration".to_owned(),
                description: "Duration of requests served".to_owned(),
                unit: "s".to_owned(),
                data: Some(metric::Data::Histogram(Histogram {
                    data_points: vec![HistogramDataPoint {
                        start_time_unix_nano: self.start_unix_nano,
                        time_unix_nano: now,
                        count,
                        sum: Some(m.sum),
                        bucket_counts: m.buckets.to_vec(),
                        explicit_bounds: DURATION_BOUNDS.to_vec(),
                        min: Some(m.min),
                        max: Some(m.max),
                        ..Default::default()
                    }],
                    aggregation_temporality: AggregationTemporality::Cumulative as i32,
                })),
                ..Default::default()
            };
            resource_metrics.push(ResourceMetrics {
                resource: Some(inst.resource.clone()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(inst.scopes[crate::topology::SCOPE_APP as usize].clone()),
                    metrics: vec![counter, histogram],
                    schema_url: SCHEMA_URL.to_owned(),
                }],
                schema_url: SCHEMA_URL.to_owned(),
            });
        }
        ExportMetricsServiceRequest { resource_metrics }
    }

    /// Moves the bucketed spans into a request, one `ResourceSpans` per pod.
    fn assemble(&mut self) -> ExportTraceServiceRequest {
        let mut resource_spans = Vec::new();
        for (i, scopes) in self.buckets.iter_mut().enumerate() {
            if scopes.iter().all(Vec::is_empty) {
                continue;
            }
            let inst = &self.topo.instances[i];
            let scope_spans = scopes
                .iter_mut()
                .enumerate()
                .filter(|(_, spans)| !spans.is_empty())
                .map(|(s, spans)| ScopeSpans {
                    scope: Some(inst.scopes[s].clone()),
                    spans: std::mem::take(spans),
                    schema_url: SCHEMA_URL.to_owned(),
                })
                .collect();
            resource_spans.push(ResourceSpans {
                resource: Some(inst.resource.clone()),
                scope_spans,
                schema_url: SCHEMA_URL.to_owned(),
            });
        }
        ExportTraceServiceRequest { resource_spans }
    }

    /// Generates one trace into `self.scratch`.
    fn generate_trace(&mut self) {
        self.traces += 1;
        let rng = &mut self.rng;
        let mut trace_id = [0u8; 16];
        trace_id.copy_from_slice(&nonzero_u128(rng).to_be_bytes());
        let fail = self.error_rate > 0.0 && rng.random::<f64>() < self.error_rate;
        // Log-uniform root duration between 10 ms and 800 ms.
        let (lo, hi) = (10e6f64.ln(), 800e6f64.ln());
        let duration = (lo + rng.random::<f64>() * (hi - lo)).exp() as u64;
        let end = now_unix_nano().saturating_sub(rng.random_range(0..2_000_000));
        let start = end.saturating_sub(duration);
        let root_op = rng.random_range(0..self.topo.services[0].ops.len());
        let path_idx = rng.random_range(0..64usize);

        let mut emitter = Emitter {
            topo: &self.topo,
            rng: &mut self.rng,
            out: &mut self.scratch,
            metrics: &mut self.metrics,
            trace_id,
            budget: MAX_TRACE_SPANS,
        };
        emitter.operation(Invocation {
            service: 0,
            op: root_op,
            parent: 0,
            start,
            end,
            fail,
            depth: 0,
            path_idx,
        });
    }
}

fn pick<'v>(rng: &mut SmallRng, values: &'v [String]) -> &'v str {
    &values[rng.random_range(0..values.len())]
}

fn nonzero_u128(rng: &mut SmallRng) -> u128 {
    let v: u128 = rng.random();
    if v == 0 { 1 } else { v }
}

fn nonzero_u64(rng: &mut SmallRng) -> u64 {
    let v: u64 = rng.random();
    if v == 0 { 1 } else { v }
}

/// One invocation of a service operation within a trace.
#[derive(Clone, Copy)]
struct Invocation {
    service: usize,
    op: usize,
    /// Parent span id, 0 for the root.
    parent: u64,
    start: u64,
    end: u64,
    /// This invocation fails (and must propagate the failure up).
    fail: bool,
    depth: usize,
    /// Which of the operation's concrete paths was requested.
    path_idx: usize,
}

/// Attributes of one span that vary per span.
struct SpanArgs {
    span_id: u64,
    parent: u64,
    start: u64,
    end: u64,
    fail: bool,
    /// The failure originates here: record the exception event.
    origin: bool,
    path_idx: usize,
    remote_parent: bool,
    root: bool,
}

struct Emitter<'a> {
    topo: &'a Topology,
    rng: &'a mut SmallRng,
    out: &'a mut Vec<SpanRec>,
    metrics: &'a mut [InstanceMetrics],
    trace_id: [u8; 16],
    /// Spans this trace may still emit.
    budget: usize,
}

impl Emitter<'_> {
    /// Emits the entry span of an operation and, recursively, its children.
    /// Returns without emitting anything once the span budget is exhausted.
    fn operation(&mut self, inv: Invocation) {
        if self.budget == 0 {
            return;
        }
        let topo = self.topo;
        let service = &topo.services[inv.service];
        let op = &service.ops[inv.op];
        let instance = service.first_instance + self.rng.random_range(0..service.instances);

        // Plan the children: (step index, fails).
        let mut plan = [(0u16, false); MAX_CHILDREN];
        let mut planned = 0;
        if inv.depth < MAX_DEPTH {
            for (i, step) in op.steps.iter().enumerate() {
                if step.prob < 1.0 && self.rng.random::<f64>() >= step.prob {
                    continue;
                }
                let repeat = self.rng.random_range(step.min..=step.max);
                for _ in 0..repeat {
                    if planned < MAX_CHILDREN {
                        plan[planned] = (i as u16, false);
                        planned += 1;
                    }
                }
            }
        }
        // A failing operation fails in one of its children (the rest are
        // never reached) or, without children, in itself.
        let mut origin = false;
        if inv.fail {
            if planned == 0 {
                origin = true;
            } else {
                planned = self.rng.random_range(0..planned) + 1;
                plan[planned - 1].1 = true;
            }
        }

        let span_id = nonzero_u64(self.rng);
        let args = SpanArgs {
            span_id,
            parent: inv.parent,
            start: inv.start,
            end: inv.end,
            fail: inv.fail,
            origin,
            path_idx: inv.path_idx,
            remote_parent: inv.parent != 0,
            root: inv.parent == 0,
        };
        self.emit(&op.entry, instance, &args);
        self.metrics[instance].record((inv.end - inv.start) as f64 / 1e9, inv.fail);

        // Lay the children out sequentially inside the parent's window.
        let window = inv.end - inv.start;
        let mut weights = [0f64; MAX_CHILDREN];
        let mut total_weight = 0.0;
        for (w, (step, _)) in weights.iter_mut().zip(&plan[..planned]) {
            let base = match &op.steps[*step as usize].action {
                Action::Leaf(t) => t.weight,
                Action::Call { client, .. } => client.weight,
                Action::Publish { producer, .. } => producer.weight,
            };
            *w = base * (0.5 + self.rng.random::<f64>());
            total_weight += *w;
        }
        let busy = 0.55 + 0.4 * self.rng.random::<f64>();
        let gap = (window as f64 * (1.0 - busy) / (planned + 1) as f64) as u64;
        let mut cursor = inv.start;
        for (i, &(step, fail)) in plan[..planned].iter().enumerate() {
            if self.budget == 0 {
                return;
            }
            let share = (window as f64 * busy * weights[i] / total_weight) as u64;
            let cs = (cursor + gap).min(inv.end);
            let ce = (cs + share.max(1)).min(inv.end);
            cursor = ce;
            match &op.steps[step as usize].action {
                Action::Leaf(t) => {
                    let span_id = nonzero_u64(self.rng);
                    self.emit(
                        t,
                        instance,
                        &SpanArgs {
                            span_id,
                            parent: args.span_id,
                            start: cs,
                            end: ce,
                            fail,
                            origin: fail,
                            path_idx: 0,
                            remote_parent: false,
                            root: false,
                        },
                    );
                }
                Action::Call {
                    client,
                    service,
                    op,
                } => {
                    let path_idx = self.rng.random_range(0..64usize);
                    let client_id = nonzero_u64(self.rng);
                    self.emit(
                        client,
                        instance,
                        &SpanArgs {
                            span_id: client_id,
                            parent: args.span_id,
                            start: cs,
                            end: ce,
                            fail,
                            origin: false,
                            path_idx,
                            remote_parent: false,
                            root: false,
                        },
                    );
                    let net = ((ce - cs) / 10).min(500_000);
                    self.operation(Invocation {
                        service: *service,
                        op: *op,
                        parent: client_id,
                        start: cs + net,
                        end: ce - net,
                        fail,
                        depth: inv.depth + 1,
                        path_idx,
                    });
                }
                Action::Publish {
                    producer,
                    service,
                    op,
                } => {
                    // A failed publish never reaches the consumer.
                    let producer_id = nonzero_u64(self.rng);
                    self.emit(
                        producer,
                        instance,
                        &SpanArgs {
                            span_id: producer_id,
                            parent: args.span_id,
                            start: cs,
                            end: ce,
                            fail,
                            origin: fail,
                            path_idx: 0,
                            remote_parent: false,
                            root: false,
                        },
                    );
                    if !fail {
                        let d = ce - cs;
                        self.operation(Invocation {
                            service: *service,
                            op: *op,
                            parent: producer_id,
                            start: cs + d / 4,
                            end: ce - d / 10,
                            fail: false,
                            depth: inv.depth + 1,
                            path_idx: 0,
                        });
                    }
                }
            }
        }
    }

    /// Builds one span from a template and appends it to the trace.
    fn emit(&mut self, t: &Tmpl, instance: usize, a: &SpanArgs) {
        if self.budget == 0 {
            return;
        }
        self.budget -= 1;
        let mut attributes = Vec::with_capacity(t.attrs.len() + t.ints.len() + 6);
        attributes.extend_from_slice(&t.attrs);
        for &(key, lo, hi) in &t.ints {
            attributes.push(kv_int(key, self.rng.random_range(lo..=hi)));
        }
        if !t.paths.is_empty() {
            attributes.push(kv_str(t.path_key, &t.paths[a.path_idx % t.paths.len()]));
        }
        match t.status {
            StatusAttr::Http => attributes.push(kv_int(
                "http.response.status_code",
                if a.fail { 500 } else { 200 },
            )),
            StatusAttr::Grpc => {
                attributes.push(kv_int("rpc.grpc.status_code", if a.fail { 13 } else { 0 }))
            }
            StatusAttr::None => {}
        }
        if a.fail {
            attributes.push(kv_str("error.type", t.exception.0));
        }
        if a.root {
            let topo = self.topo;
            attributes.push(kv_str("user.id", pick(self.rng, &topo.user_ids)));
            attributes.push(kv_str(
                "user_agent.original",
                pick(self.rng, &topo.user_agents),
            ));
            attributes.push(kv_str("client.address", pick(self.rng, &topo.client_addrs)));
        }
        let mut events = Vec::new();
        if t.message_events {
            // Request then response: a client sends first, a server receives first.
            let (first, second) = if t.kind == SpanKind::Client as i32 {
                ("SENT", "RECEIVED")
            } else {
                ("RECEIVED", "SENT")
            };
            let d = a.end - a.start;
            events.reserve(3);
            for (ty, at) in [(first, a.start + d / 50), (second, a.end - d / 50)] {
                events.push(Event {
                    time_unix_nano: at,
                    name: "message".to_owned(),
                    attributes: vec![
                        kv_str("message.type", ty),
                        kv_int("message.id", 1),
                        kv_int(
                            "message.uncompressed_size",
                            self.rng.random_range(20..4_000),
                        ),
                    ],
                    dropped_attributes_count: 0,
                });
            }
        }
        if a.origin {
            events.push(Event {
                time_unix_nano: a.end - (a.end - a.start) / 10,
                name: "exception".to_owned(),
                attributes: vec![
                    kv_str("exception.type", t.exception.0),
                    kv_str("exception.message", t.exception.1),
                ],
                dropped_attributes_count: 0,
            });
        }
        let status = a.fail.then(|| Status {
            message: t.exception.1.to_owned(),
            code: StatusCode::Error as i32,
        });
        let span = Span {
            trace_id: self.trace_id.to_vec(),
            span_id: a.span_id.to_be_bytes().to_vec(),
            trace_state: String::new(),
            parent_span_id: if a.parent == 0 {
                Vec::new()
            } else {
                a.parent.to_be_bytes().to_vec()
            },
            flags: if a.remote_parent {
                FLAGS_REMOTE
            } else {
                FLAGS_LOCAL
            },
            name: t.name.clone(),
            kind: t.kind,
            start_time_unix_nano: a.start,
            end_time_unix_nano: a.end,
            attributes,
            dropped_attributes_count: 0,
            events,
            dropped_events_count: 0,
            links: Vec::new(),
            dropped_links_count: 0,
            status,
        };
        self.out.push(SpanRec {
            instance: instance as u32,
            scope: t.scope,
            span,
        });
    }
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .map(|ss| ss.spans.len())
        .sum()
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use prost::Message;

    use super::*;

    fn spans_by_trace(req: &ExportTraceServiceRequest) -> HashMap<Vec<u8>, Vec<&Span>> {
        let mut traces: HashMap<Vec<u8>, Vec<&Span>> = HashMap::new();
        for rs in &req.resource_spans {
            assert!(rs.resource.is_some());
            for ss in &rs.scope_spans {
                assert!(!ss.scope.as_ref().unwrap().name.is_empty());
                for s in &ss.spans {
                    traces.entry(s.trace_id.clone()).or_default().push(s);
                }
            }
        }
        traces
    }

    #[test]
    fn traces_are_well_formed_trees() {
        for services in [1, 3, 10, 12, 40] {
            let mut g = TraceGenerator::new(services, 0.2, 42);
            for _ in 0..20 {
                let req = g.next_request(500);
                let n = span_count(&req);
                assert!(n >= 500, "{n} spans");
                for (trace_id, spans) in spans_by_trace(&req) {
                    assert_eq!(trace_id.len(), 16);
                    assert!(trace_id.iter().any(|b| *b != 0));
                    let by_id: HashMap<&[u8], &Span> =
                        spans.iter().map(|s| (s.span_id.as_slice(), *s)).collect();
                    assert_eq!(by_id.len(), spans.len(), "duplicate span ids");
                    let mut roots = 0;
                    for s in &spans {
                        assert_eq!(s.span_id.len(), 8);
                        assert!(s.span_id.iter().any(|b| *b != 0));
                        assert!(s.start_time_unix_nano <= s.end_time_unix_nano);
                        assert!(!s.name.is_empty());
                        if s.parent_span_id.is_empty() {
                            roots += 1;
                            continue;
                        }
                        let parent = by_id
                            .get(s.parent_span_id.as_slice())
                            .expect("parent in the same trace");
                        assert!(s.start_time_unix_nano >= parent.start_time_unix_nano);
                        assert!(s.end_time_unix_nano <= parent.end_time_unix_nano);
                    }
                    assert_eq!(roots, 1, "exactly one root per trace");
                }
            }
        }
    }

    #[test]
    fn uses_all_span_kinds_and_services() {
        let mut g = TraceGenerator::new(12, 0.0, 7);
        let mut kinds = HashSet::new();
        let mut services = HashSet::new();
        for _ in 0..20 {
            let req = g.next_request(500);
            for rs in &req.resource_spans {
                let name = rs.resource.as_ref().unwrap().attributes[0].clone();
                services.insert(format!("{:?}", name.value));
                for ss in &rs.scope_spans {
                    for s in &ss.spans {
                        kinds.insert(s.kind);
                        assert!(s.status.is_none(), "no errors at error rate 0");
                    }
                }
            }
        }
        for kind in [
            SpanKind::Server,
            SpanKind::Client,
            SpanKind::Internal,
            SpanKind::Producer,
            SpanKind::Consumer,
        ] {
            assert!(kinds.contains(&(kind as i32)), "{kind:?} missing");
        }
        assert_eq!(services.len(), 12);
    }

    #[test]
    fn error_rate_is_roughly_honoured() {
        let mut g = TraceGenerator::new(10, 0.05, 1234);
        let (mut traces, mut failed) = (0, 0);
        let mut exceptions = 0;
        for _ in 0..100 {
            let req = g.next_request(500);
            for spans in spans_by_trace(&req).values() {
                traces += 1;
                let root = spans.iter().find(|s| s.parent_span_id.is_empty()).unwrap();
                if root
                    .status
                    .as_ref()
                    .is_some_and(|s| s.code == StatusCode::Error as i32)
                {
                    failed += 1;
                    let events: usize = spans
                        .iter()
                        .flat_map(|s| &s.events)
                        .filter(|e| e.name == "exception")
                        .count();
                    exceptions += usize::from(events > 0);
                }
            }
        }
        let rate = failed as f64 / traces as f64;
        assert!(
            (0.035..0.065).contains(&rate),
            "rate {rate} over {traces} traces"
        );
        assert_eq!(
            exceptions, failed,
            "every failed trace records an exception"
        );
    }

    #[test]
    fn limited_requests_never_exceed_the_limit() {
        let mut g = TraceGenerator::new(10, 0.0, 3);
        for limit in [1, 2, 5, 17, 100] {
            let req = g.next_request_limited(500, limit);
            assert_eq!(span_count(&req), limit);
            for spans in spans_by_trace(&req).values() {
                let ids: HashSet<&[u8]> = spans.iter().map(|s| s.span_id.as_slice()).collect();
                for s in spans {
                    assert!(
                        s.parent_span_id.is_empty() || ids.contains(s.parent_span_id.as_slice())
                    );
                }
            }
        }
    }

    #[test]
    fn same_seed_same_ids_and_sane_span_size() {
        let a = TraceGenerator::new(10, 0.01, 9).next_request(500);
        let b = TraceGenerator::new(10, 0.01, 9).next_request(500);
        let ids = |r: &ExportTraceServiceRequest| {
            spans_by_trace(r).keys().cloned().collect::<HashSet<_>>()
        };
        assert_eq!(ids(&a), ids(&b));
        let per_span = a.encoded_len() / span_count(&a);
        assert!((250..700).contains(&per_span), "{per_span} bytes per span");
    }

    #[test]
    fn json_uses_hex_ids() {
        let req = TraceGenerator::new(3, 0.0, 5).next_request(1);
        let json = serde_json::to_value(&req).unwrap();
        let span = &json["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        let trace_id = span["traceId"].as_str().unwrap();
        assert_eq!(trace_id.len(), 32);
        assert!(trace_id.chars().all(|c| c.is_ascii_hexdigit()));
        assert_eq!(span["spanId"].as_str().unwrap().len(), 16);
    }

    #[test]
    fn metrics_follow_generated_requests() {
        let mut g = TraceGenerator::new(10, 0.1, 11);
        assert!(g.metrics_request().resource_metrics.is_empty());
        g.next_request(1000);
        let m = g.metrics_request();
        assert!(!m.resource_metrics.is_empty());
        for rm in &m.resource_metrics {
            let metrics = &rm.scope_metrics[0].metrics;
            assert_eq!(metrics.len(), 2);
            let Some(metric::Data::Histogram(h)) = &metrics[1].data else {
                panic!("histogram expected")
            };
            let p = &h.data_points[0];
            assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
            assert_eq!(p.bucket_counts.len(), p.explicit_bounds.len() + 1);
        }
    }
}
