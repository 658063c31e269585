//! Tail sampling on the collector node that owns a trace: hold its spans until the trace is
//! quiet, let the policies decide, store the kept spans with their adjusted count.
//!
//! ```text
//!  export ─▶ WAL record "held" (acknowledged once durable) ─▶ hold(seq, spans)
//!                  pending: trace ID -> spans (+ the WAL seqs they came in)
//!                  late span of a decided trace ─▶ late list (follows the cached decision)
//!  decision loop (Collector): take_due(now)
//!     quiet >= decision_wait, or older than max_trace_age, or evicted (over the bounds)
//!     ─▶ PolicySet::evaluate ─▶ threshold T ─▶ keep iff R >= max(T, span's own th)
//!     ─▶ WAL record "decision" = decided trace IDs + kept spans (ot=th written)
//!     ─▶ store live rows (sample_weight from th) ─▶ covered(seqs)
//! ```
//!
//! **No acknowledged span is lost.** Held records stay in the WAL until every span in them
//! is covered by a durable decision record: [`TailSampler::wal_floor`] caps WAL truncation.
//! On start, replay rebuilds the pending set from held records whose traces have no later
//! decision record ([`Replay`]), so a crash only delays decisions. (A trace decided and
//! flushed whose decision record was not yet durable can be decided again: its kept spans
//! would then be stored twice; the window is one decision-loop tick.)
//!
//! **Bounded memory.** At most `max_pending_traces` traces and `max_pending_spans` spans
//! wait; past that the oldest are decided early (`eviction = decide_oldest`, counted in
//! `weft_tail_sampling_evicted_traces_total`) or kept whole (`keep_oldest`). Decisions are
//! remembered for `decision_cache_traces` traces, oldest forgotten first.
//!
//! **Replicas agree.** Each replica of a trace receives the same spans and evaluates the same
//! deterministic policies on the same randomness; only rate-limit steps (powers of two of
//! a locally measured rate) and evictions can make them differ.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{BufMut as _, Bytes, BytesMut};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans};
use parking_lot::{Mutex, RwLock};
use prost::Message as _;
use weft_schemas::sampling::{self, OtelTraceState, Randomness, Threshold};

use super::HeldSpan;
use super::config::{Eviction, TailConfig};
use super::policy::PolicySet;
use crate::Error;
use weft_telemetry::Telemetry;

pub type TraceId = [u8; 16];

const DECISION_MAGIC: &[u8; 4] = b"WTD1";
/// Allocator bookkeeping and rounding per heap block (glibc/mimalloc: 8-16 bytes).
const ALLOC_OVERHEAD_BYTES: usize = 16;
/// Per-trace memory: the map entry and two index entries.
const TRACE_OVERHEAD_BYTES: usize = 160;
/// Most traces decided into one WAL record.
const MAX_TRACES_PER_DECISION: usize = 2_048;

const TRACES_METRIC: &str = "weft_tail_sampling_traces_total";
const TRACES_HELP: &str =
    "Traces decided by tail sampling, by decision, deciding policy and cause.";
const SPANS_METRIC: &str = "weft_tail_sampling_spans_total";
const SPANS_HELP: &str =
    "Spans decided by tail sampling (late spans included), by decision and policy.";
const EVICTED_METRIC: &str = "weft_tail_sampling_evicted_traces_total";
const EVICTED_HELP: &str =
    "Traces decided before they were quiet because the pending set was full.";
const LATE_METRIC: &str = "weft_tail_sampling_late_spans_total";
const LATE_HELP: &str =
    "Spans that arrived after their trace was decided, by the decision they followed.";
const PENDING_TRACES: &str = "weft_tail_sampling_pending_traces";
const PENDING_SPANS: &str = "weft_tail_sampling_pending_spans";
const PENDING_BYTES: &str = "weft_tail_sampling_pending_bytes";
const PENDING_HELP: &str = "What tail sampling holds waiting for decisions (bytes are estimated).";

/// What was decided for a trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    pub threshold: Threshold,
    pub keep: bool,
}

/// Why a trace was decided now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Cause {
    Quiet,
    MaxAge,
    Evicted,
    /// Tail sampling is off (spans left from before it was turned off): keep.
    Disabled,
}

impl Cause {
    fn label(self) -> &'static str {
        match self {
            Cause::Quiet => "quiet",
            Cause::MaxAge => "max_age",
            Cause::Evicted => "evicted",
            Cause::Disabled => "disabled",
        }
    }
}

/// Decisions ready to be written: the WAL payload, the kept spans, and which held records
/// they cover.
#[derive(Debug)]
pub struct DecisionBatch {
    pub payload: Bytes,
    pub kept: ExportTraceServiceRequest,
    /// (held record seq, spans of it covered by this batch).
    pub covered: Vec<(u64, usize)>,
    pub traces: usize,
}

#[derive(Debug)]
struct Runtime {
    config: TailConfig,
    policies: PolicySet,
}

#[derive(Debug)]
struct PendingTrace {
    spans: Vec<HeldSpan>,
    /// The held record each span came in (parallel to `spans`).
    seqs: Vec<u64>,
    first_seen: Instant,
    last_seen: Instant,
    bytes: usize,
}

#[derive(Debug, Default)]
struct State {
    pending: HashMap<TraceId, PendingTrace>,
    by_last_seen: BTreeSet<(Instant, TraceId)>,
    by_first_seen: BTreeSet<(Instant, TraceId)>,
    pending_spans: usize,
    pending_bytes: usize,
    /// Spans of already decided traces, waiting to be written under their decision.
    late: Vec<(u64, HeldSpan, Decision)>,
    cache: HashMap<TraceId, Decision>,
    cache_order: VecDeque<TraceId>,
    /// Held record seq -> spans of it not yet covered by a durable decision record.
    uncovered: BTreeMap<u64, usize>,
}

/// The tail sampler of one collector node.
#[derive(Debug)]
pub struct TailSampler {
    runtime: RwLock<Arc<Runtime>>,
    state: Mutex<State>,
    telemetry: Arc<Telemetry>,
    wake: tokio::sync::Notify,
}

impl TailSampler {
    pub fn new(config: &TailConfig, telemetry: Arc<Telemetry>) -> Result<Self, Error> {
        Ok(Self {
            runtime: RwLock::new(Arc::new(compile(config)?)),
            state: Mutex::new(State::default()),
            telemetry,
            wake: tokio::sync::Notify::new(),
        })
    }

    /// Replaces the configuration (policies' rate-limit state starts afresh).
    pub fn reload(&self, config: &TailConfig) -> Result<(), Error> {
        let runtime = compile(config)?;
        *self.runtime.write() = Arc::new(runtime);
        self.wake.notify_one();
        Ok(())
    }

    pub fn enabled(&self) -> bool {
        self.runtime.read().config.enabled
    }

    /// How often the decision loop should look for due traces.
    pub fn tick(&self) -> Duration {
        let wait = self.runtime.read().config.decision_wait_ms;
        Duration::from_millis((wait / 10).clamp(10, 200))
    }

    /// Resolves when spans arrived over the bounds or the configuration changed.
    pub async fn woken(&self) {
        self.wake.notified().await
    }

    /// Adds the spans of a durable held record (seq `seq`). Spans of decided traces follow
    /// the cached decision; the others wait.
    pub fn hold(&self, seq: u64, spans: Vec<HeldSpan>, now: Instant) {
        if spans.is_empty() {
            return;
        }
        let runtime = self.runtime.read().clone();
        let mut state = self.state.lock();
        *state.uncovered.entry(seq).or_default() += spans.len();
        for held in spans {
            let Ok(id) = TraceId::try_from(held.span.trace_id.as_slice()) else {
                // Validated before the WAL; a malformed ID cannot get here.
                continue;
            };
            if let Some(decision) = state.cache.get(&id).copied() {
                state.late.push((seq, held, decision));
                continue;
            }
            let bytes = span_bytes(&held);
            state.pending_spans += 1;
            state.pending_bytes += bytes;
            match state.pending.get_mut(&id) {
                Some(trace) => {
                    let old = (trace.last_seen, id);
                    trace.last_seen = now;
                    trace.bytes += bytes;
                    trace.spans.push(held);
                    trace.seqs.push(seq);
                    state.by_last_seen.remove(&old);
                    state.by_last_seen.insert((now, id));
                }
                None => {
                    state.pending_bytes += TRACE_OVERHEAD_BYTES;
                    state.pending.insert(
                        id,
                        PendingTrace {
                            spans: vec![held],
                            seqs: vec![seq],
                            first_seen: now,
                            last_seen: now,
                            bytes: bytes + TRACE_OVERHEAD_BYTES,
                        },
                    );
                    state.by_last_seen.insert((now, id));
                    state.by_first_seen.insert((now, id));
                }
            }
        }
        let over = state.pending.len() > runtime.config.max_pending_traces
            || state.pending_spans > runtime.config.max_pending_spans;
        drop(state);
        if over {
            self.wake.notify_one();
        }
    }

    /// Decides what is due at `now` (at most a bounded number of traces; call again while
    /// it returns a batch). `None`: nothing to write.
    pub fn take_due(&self, now: Instant) -> Option<DecisionBatch> {
        let runtime = self.runtime.read().clone();
        let config = &runtime.config;
        let wait = Duration::from_millis(config.decision_wait_ms);
        let max_age = Duration::from_millis(config.max_trace_age_ms);
        let mut state = self.state.lock();
        let mut due: Vec<(TraceId, Cause)> = Vec::new();
        // Over the bounds: the oldest go first.
        let mut traces = state.pending.len();
        let mut spans = state.pending_spans;
        let mut oldest = state.by_first_seen.iter();
        while (traces > config.max_pending_traces || spans > config.max_pending_spans)
            && due.len() < MAX_TRACES_PER_DECISION
        {
            let Some(&(_, id)) = oldest.next() else { break };
            traces -= 1;
            spans -= state.pending[&id].spans.len();
            due.push((id, Cause::Evicted));
        }
        let cause_all = if config.enabled {
            None
        } else {
            Some(Cause::Disabled)
        };
        for &(first_seen, id) in oldest {
            if due.len() >= MAX_TRACES_PER_DECISION
                || (cause_all.is_none() && now.saturating_duration_since(first_seen) < max_age)
            {
                break;
            }
            due.push((id, cause_all.unwrap_or(Cause::MaxAge)));
        }
        for &(last_seen, id) in &state.by_last_seen {
            if due.len() >= MAX_TRACES_PER_DECISION
                || now.saturating_duration_since(last_seen) < wait
            {
                break;
            }
            if !due.iter().any(|(d, _)| *d == id) {
                due.push((id, Cause::Quiet));
            }
        }
        if due.is_empty() && state.late.is_empty() {
            self.publish_gauges(&state);
            return None;
        }

        let mut builder = KeptBuilder::default();
        let mut decided: Vec<(TraceId, Decision)> = Vec::with_capacity(due.len());
        let mut covered: BTreeMap<u64, usize> = BTreeMap::new();
        // (decision, policy, cause) -> (traces, spans)
        let mut counts: BTreeMap<(&'static str, String, &'static str), (u64, u64)> =
            BTreeMap::new();
        for (id, cause) in due {
            let Some(trace) = state.pending.remove(&id) else {
                continue;
            };
            state.by_last_seen.remove(&(trace.last_seen, id));
            state.by_first_seen.remove(&(trace.first_seen, id));
            state.pending_spans -= trace.spans.len();
            state.pending_bytes -= trace.bytes;
            let randomness = trace
                .spans
                .iter()
                .find_map(|s| OtelTraceState::parse(&s.span.trace_state).rv)
                .or_else(|| Randomness::from_trace_id(&id))
                .unwrap_or(Randomness::from_value(0));
            let (threshold, policy) = match cause {
                Cause::Disabled => (Threshold::ALWAYS, "disabled".to_owned()),
                Cause::Evicted if config.eviction == Eviction::KeepOldest => {
                    (Threshold::ALWAYS, "evicted".to_owned())
                }
                _ => {
                    let verdict = runtime.policies.evaluate(&trace.spans, randomness, now);
                    (
                        verdict.threshold,
                        verdict.policy.unwrap_or_else(|| "none".to_owned()),
                    )
                }
            };
            let decision = Decision {
                threshold,
                keep: threshold.keeps(randomness),
            };
            let label = if decision.keep { "kept" } else { "dropped" };
            let entry = counts.entry((label, policy, cause.label())).or_default();
            entry.0 += 1;
            entry.1 += trace.spans.len() as u64;
            if cause == Cause::Evicted {
                self.telemetry.add(EVICTED_METRIC, EVICTED_HELP, &[], 1.0);
            }
            for (seq, held) in trace.seqs.into_iter().zip(trace.spans) {
                *covered.entry(seq).or_default() += 1;
                if decision.keep {
                    builder.push(held, threshold);
                }
            }
            remember(&mut state, config.decision_cache_traces, id, decision);
            decided.push((id, decision));
        }
        // Late spans: written under the decision they follow, which is listed again so the
        // record covers them on replay.
        let late = std::mem::take(&mut state.late);
        let mut late_counts = [0u64; 2];
        for (seq, held, decision) in late {
            *covered.entry(seq).or_default() += 1;
            late_counts[usize::from(decision.keep)] += 1;
            if let Ok(id) = TraceId::try_from(held.span.trace_id.as_slice())
                && !decided.iter().any(|(d, _)| *d == id)
            {
                decided.push((id, decision));
            }
            if decision.keep {
                builder.push(held, decision.threshold);
            }
        }
        self.publish_gauges(&state);
        drop(state);

        for ((decision, policy, cause), (traces, spans)) in counts {
            let labels = [("decision", decision), ("policy", policy.as_str())];
            self.telemetry.add(
                TRACES_METRIC,
                TRACES_HELP,
                &[labels[0], labels[1], ("cause", cause)],
                traces as f64,
            );
            self.telemetry
                .add(SPANS_METRIC, SPANS_HELP, &labels, spans as f64);
        }
        for (keep, n) in late_counts.into_iter().enumerate() {
            if n > 0 {
                let decision = if keep == 1 { "kept" } else { "dropped" };
                self.telemetry
                    .add(LATE_METRIC, LATE_HELP, &[("decision", decision)], n as f64);
            }
        }
        let kept = builder.finish();
        Some(DecisionBatch {
            payload: encode_decision(&decided, &kept),
            traces: decided.len(),
            kept,
            covered: covered.into_iter().collect(),
        })
    }

    /// Marks held spans as covered by a durable decision record.
    pub fn covered(&self, covered: &[(u64, usize)]) {
        let mut state = self.state.lock();
        for &(seq, n) in covered {
            if let Some(left) = state.uncovered.get_mut(&seq) {
                *left = left.saturating_sub(n);
                if *left == 0 {
                    state.uncovered.remove(&seq);
                }
            }
        }
    }

    /// WAL records up to this sequence number may be truncated as far as tail sampling is
    /// concerned (`u64::MAX`: nothing held).
    pub fn wal_floor(&self) -> u64 {
        self.state
            .lock()
            .uncovered
            .keys()
            .next()
            .map_or(u64::MAX, |first| first - 1)
    }

    /// Traces and spans waiting, and their estimated bytes.
    pub fn pending(&self) -> (usize, usize, usize) {
        let state = self.state.lock();
        (
            state.pending.len(),
            state.pending_spans,
            state.pending_bytes,
        )
    }

    /// Nothing pending, no late span and every held record covered.
    pub fn is_idle(&self) -> bool {
        let state = self.state.lock();
        state.pending.is_empty() && state.late.is_empty() && state.uncovered.is_empty()
    }

    /// Restores what replay found: decisions (for late spans) and spans still undecided.
    pub fn restore(&self, mut replay: Replay, now: Instant) {
        {
            let runtime = self.runtime.read().clone();
            let mut state = self.state.lock();
            for (id, decision) in std::mem::take(&mut replay.decisions) {
                remember(
                    &mut state,
                    runtime.config.decision_cache_traces,
                    id,
                    decision,
                );
            }
        }
        for (seq, spans) in replay.undecided_by_seq() {
            self.hold(seq, spans, now);
        }
    }

    fn publish_gauges(&self, state: &State) {
        let t = &self.telemetry;
        t.set(
            PENDING_TRACES,
            PENDING_HELP,
            &[],
            state.pending.len() as f64,
        );
        t.set(PENDING_SPANS, PENDING_HELP, &[], state.pending_spans as f64);
        t.set(PENDING_BYTES, PENDING_HELP, &[], state.pending_bytes as f64);
    }
}

fn compile(config: &TailConfig) -> Result<Runtime, Error> {
    super::SamplingConfig {
        tail: config.clone(),
        ..Default::default()
    }
    .validate()?;
    Ok(Runtime {
        policies: PolicySet::compile(&config.effective_policies())?,
        config: config.clone(),
    })
}

fn remember(state: &mut State, capacity: usize, id: TraceId, decision: Decision) {
    if state.cache.insert(id, decision).is_none() {
        state.cache_order.push_back(id);
    }
    while state.cache_order.len() > capacity.max(1) {
        if let Some(old) = state.cache_order.pop_front() {
            state.cache.remove(&old);
        }
    }
}

/// Memory a held span takes: its decoded structs and every heap block they own. The encoded
/// size is 3-4x smaller than this (a benchmark measured 2,090 resident bytes per pending span
/// of the load generator's traces against 446 encoded bytes), so admission control and the
/// pending-bytes gauge use this structural estimate. Resources and scopes are shared by the
/// spans of one request and not counted per span.
fn span_bytes(held: &HeldSpan) -> usize {
    let span = &held.span;
    let blocks = [
        span.trace_id.capacity(),
        span.span_id.capacity(),
        span.parent_span_id.capacity(),
        span.name.capacity(),
        span.trace_state.capacity(),
    ];
    std::mem::size_of::<(u64, HeldSpan)>()
        + blocks.iter().map(|c| heap_block(*c)).sum::<usize>()
        + key_values_bytes(&span.attributes)
        + span
            .events
            .iter()
            .map(|e| {
                std::mem::size_of_val(e)
                    + heap_block(e.name.capacity())
                    + key_values_bytes(&e.attributes)
            })
            .sum::<usize>()
        + heap_block(
            span.events.capacity()
                * std::mem::size_of::<opentelemetry_proto::tonic::trace::v1::span::Event>(),
        )
        + span
            .links
            .iter()
            .map(|l| {
                std::mem::size_of_val(l)
                    + heap_block(l.trace_id.capacity())
                    + heap_block(l.span_id.capacity())
                    + heap_block(l.trace_state.capacity())
                    + key_values_bytes(&l.attributes)
            })
            .sum::<usize>()
        + span
            .status
            .as_ref()
            .map_or(0, |s| heap_block(s.message.capacity()))
}

fn heap_block(capacity: usize) -> usize {
    if capacity == 0 {
        0
    } else {
        capacity + ALLOC_OVERHEAD_BYTES
    }
}

fn key_values_bytes(list: &[opentelemetry_proto::tonic::common::v1::KeyValue]) -> usize {
    heap_block(std::mem::size_of_val(list))
        + list
            .iter()
            .map(|kv| heap_block(kv.key.capacity()) + any_value_bytes(kv.value.as_ref()))
            .sum::<usize>()
}

fn any_value_bytes(value: Option<&opentelemetry_proto::tonic::common::v1::AnyValue>) -> usize {
    use opentelemetry_proto::tonic::common::v1::any_value::Value;
    match value.and_then(|v| v.value.as_ref()) {
        Some(Value::StringValue(s)) => heap_block(s.capacity()),
        Some(Value::BytesValue(b)) => heap_block(b.capacity()),
        Some(Value::ArrayValue(a)) => {
            heap_block(std::mem::size_of_val(a.values.as_slice()))
                + a.values
                    .iter()
                    .map(|v| any_value_bytes(Some(v)))
                    .sum::<usize>()
        }
        Some(Value::KvlistValue(l)) => key_values_bytes(&l.values),
        _ => 0,
    }
}

/// Splits a request into held spans sharing their resource and scope.
pub fn hold_request(request: ExportTraceServiceRequest) -> Vec<HeldSpan> {
    let mut out = Vec::new();
    for mut resource_spans in request.resource_spans {
        let scopes = std::mem::take(&mut resource_spans.scope_spans);
        let resource = Arc::new(resource_spans);
        for mut scope_spans in scopes {
            let spans = std::mem::take(&mut scope_spans.spans);
            let scope = Arc::new(scope_spans);
            out.extend(spans.into_iter().map(|span| HeldSpan {
                resource: std::sync::Arc::clone(&resource),
                scope: std::sync::Arc::clone(&scope),
                span,
            }));
        }
    }
    out
}

/// Rebuilds a request from kept spans, writing each span's final threshold.
#[derive(Default)]
struct KeptBuilder {
    resources: Vec<ResourceSpans>,
    resource_index: HashMap<*const ResourceSpans, usize>,
    scope_index: HashMap<(*const ResourceSpans, *const ScopeSpans), usize>,
}

impl KeptBuilder {
    fn push(&mut self, held: HeldSpan, policy_threshold: Threshold) {
        let HeldSpan {
            resource,
            scope,
            mut span,
        } = held;
        // The stages nest on one randomness: the span's adjusted count is that of the
        // stricter of its head threshold and the tail's.
        let head = OtelTraceState::parse(&span.trace_state).th;
        let threshold = policy_threshold.max(head.unwrap_or(Threshold::ALWAYS));
        if head != Some(threshold) && threshold != Threshold::ALWAYS {
            span.trace_state = sampling::with_threshold(&span.trace_state, threshold);
        }
        let r_key = Arc::as_ptr(&resource);
        let r = *self.resource_index.entry(r_key).or_insert_with(|| {
            self.resources.push(ResourceSpans {
                resource: resource.resource.clone(),
                scope_spans: Vec::new(),
                schema_url: resource.schema_url.clone(),
            });
            self.resources.len() - 1
        });
        let s_key = (r_key, Arc::as_ptr(&scope));
        let scopes = &mut self.resources[r].scope_spans;
        let s = *self.scope_index.entry(s_key).or_insert_with(|| {
            scopes.push(ScopeSpans {
                scope: scope.scope.clone(),
                spans: Vec::new(),
                schema_url: scope.schema_url.clone(),
            });
            scopes.len() - 1
        });
        scopes[s].spans.push(span);
    }

    fn finish(self) -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: self.resources,
        }
    }
}

fn encode_decision(decided: &[(TraceId, Decision)], kept: &ExportTraceServiceRequest) -> Bytes {
    let mut out = BytesMut::with_capacity(8 + decided.len() * 25 + kept.encoded_len());
    out.put_slice(DECISION_MAGIC);
    out.put_u32_le(decided.len() as u32);
    for (id, decision) in decided {
        out.put_slice(id);
        out.put_u64_le(decision.threshold.value());
        out.put_u8(u8::from(decision.keep));
    }
    kept.encode(&mut out).expect("BytesMut grows");
    out.freeze()
}

/// A decision record: the decided traces and the kept spans.
pub fn decode_decision(
    payload: &Bytes,
) -> Result<(Vec<(TraceId, Decision)>, ExportTraceServiceRequest), Error> {
    let bad = Error::DecisionRecord;
    if payload.len() < 8 || &payload[..4] != DECISION_MAGIC {
        return Err(bad("bad header"));
    }
    let n = u32::from_le_bytes(payload[4..8].try_into().expect("4 bytes")) as usize;
    let body = 8 + n * 25;
    if payload.len() < body {
        return Err(bad("truncated"));
    }
    let decided = payload[8..body]
        .chunks_exact(25)
        .map(|c| {
            let id: TraceId = c[..16].try_into().expect("16 bytes");
            let threshold = u64::from_le_bytes(c[16..24].try_into().expect("8 bytes"));
            (
                id,
                Decision {
                    threshold: Threshold::from_value(threshold),
                    keep: c[24] == 1,
                },
            )
        })
        .collect();
    let kept = ExportTraceServiceRequest::decode(payload.slice(body..))?;
    Ok((decided, kept))
}

/// What WAL replay finds for tail sampling: spans of held records whose traces have no
/// later decision record, and the decisions seen.
#[derive(Debug, Default)]
pub struct Replay {
    undecided: HashMap<TraceId, Vec<(u64, HeldSpan)>>,
    decisions: Vec<(TraceId, Decision)>,
}

impl Replay {
    /// A held record, in WAL order.
    pub fn held(&mut self, seq: u64, request: ExportTraceServiceRequest) {
        for held in hold_request(request) {
            if let Ok(id) = TraceId::try_from(held.span.trace_id.as_slice()) {
                self.undecided.entry(id).or_default().push((seq, held));
            }
        }
    }

    /// A decision record, in WAL order: it covers every earlier held span of its traces.
    pub fn decided(&mut self, decided: &[(TraceId, Decision)]) {
        for (id, decision) in decided {
            self.undecided.remove(id);
            self.decisions.push((*id, *decision));
        }
    }

    pub fn undecided_spans(&self) -> usize {
        self.undecided.values().map(Vec::len).sum()
    }

    fn undecided_by_seq(self) -> BTreeMap<u64, Vec<HeldSpan>> {
        let mut by_seq: BTreeMap<u64, Vec<HeldSpan>> = BTreeMap::new();
        for (_, spans) in self.undecided {
            for (seq, held) in spans {
                by_seq.entry(seq).or_default().push(held);
            }
        }
        by_seq
    }
}
