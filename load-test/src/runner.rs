//! The load run: pacing, bounded concurrency, retries, accounting, progress.
//!
//! One dispatcher (the caller's task) owns the [`TraceGenerator`]. For each
//! request it waits for one of `concurrency` permits, generates the request
//! and spawns an export task holding the permit. The export task encodes the
//! request once, sends it with retries and records the outcome in
//! [`Shared`] counters. When the run ends (duration, span budget or the
//! server going away) the dispatcher stops and in-flight exports are
//! drained within a bounded time.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::{MissedTickBehavior, sleep, sleep_until};

use crate::generator::{TraceGenerator, span_count};
use crate::procfs;
use crate::report::{LatencySummary, MetricsSummary, Report, ServerStats};
use crate::transport::{MAX_RETRY_DELAY, Outcome, Signal, Transport};
use crate::{AckCallback, LoadConfig};

/// Connection-level failures in a row, lasting at least [`GONE_AFTER`], that
/// make the run conclude the server has gone away.
const GONE_AFTER_FAILURES: u64 = 5;
const GONE_AFTER: Duration = Duration::from_secs(2);
/// How long after the end of the run a back-off may still end in a retry.
const RETRY_GRACE: Duration = Duration::from_secs(5);
/// Exponential back-off: first delay and cap.
const BACKOFF_BASE: Duration = Duration::from_millis(100);
const BACKOFF_CAP: Duration = Duration::from_secs(5);
/// Distinct failure reasons kept in the report.
const MAX_ERROR_KINDS: usize = 32;
/// Upper bound on requests per second the dispatcher loop will ever make
/// (a safety bound on loop iterations, far above any real rate).
const MAX_REQUESTS_PER_SEC: u64 = 200_000;
/// Requests dispatched per pacing tick at most.
const MAX_REQUESTS_PER_TICK: usize = 256;
const METRICS_INTERVAL: Duration = Duration::from_secs(1);
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Highest latency the histogram tracks (µs); larger values are clamped.
const LATENCY_MAX_US: u64 = 600_000_000;

/// Counters shared between the dispatcher and export tasks.
struct Shared {
    start: Instant,
    spans_sent: AtomicU64,
    spans_accepted: AtomicU64,
    spans_failed: AtomicU64,
    rejected: AtomicU64,
    requests: AtomicU64,
    requests_ok: AtomicU64,
    errors: AtomicU64,
    retried: AtomicU64,
    payload_bytes: AtomicU64,
    proto_bytes: AtomicU64,
    metrics_requests: AtomicU64,
    metrics_ok: AtomicU64,
    metrics_errors: AtomicU64,
    metrics_retried: AtomicU64,
    metrics_points: AtomicU64,
    metrics_rejected: AtomicU64,
    latency_us: Mutex<Histogram<u64>>,
    error_kinds: Mutex<BTreeMap<String, u64>>,
    /// Consecutive connection-level failures and when the streak began
    /// (ms since start; `u64::MAX` when there is no streak).
    failure_streak: AtomicU64,
    streak_start_ms: AtomicU64,
    stop: AtomicBool,
    stop_reason: Mutex<Option<String>>,
}

impl Shared {
    fn new() -> anyhow::Result<Self> {
        Ok(Shared {
            start: Instant::now(),
            spans_sent: AtomicU64::new(0),
            spans_accepted: AtomicU64::new(0),
            spans_failed: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            requests: AtomicU64::new(0),
            requests_ok: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            payload_bytes: AtomicU64::new(0),
            proto_bytes: AtomicU64::new(0),
            metrics_requests: AtomicU64::new(0),
            metrics_ok: AtomicU64::new(0),
            metrics_errors: AtomicU64::new(0),
            metrics_retried: AtomicU64::new(0),
            metrics_points: AtomicU64::new(0),
            metrics_rejected: AtomicU64::new(0),
            latency_us: Mutex::new(Histogram::new_with_bounds(1, LATENCY_MAX_US, 3)?),
            error_kinds: Mutex::new(BTreeMap::new()),
            failure_streak: AtomicU64::new(0),
            streak_start_ms: AtomicU64::new(u64::MAX),
            stop: AtomicBool::new(false),
            stop_reason: Mutex::new(None),
        })
    }

    fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }

    fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    fn note_failure(&self, reason: &str) {
        let mut kinds = self
            .error_kinds
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = kinds.get_mut(reason) {
            *n += 1;
        } else if kinds.len() < MAX_ERROR_KINDS {
            kinds.insert(reason.to_owned(), 1);
        } else {
            *kinds.entry("(other failures)".to_owned()).or_default() += 1;
        }
    }

    fn record_latency(&self, d: Duration) {
        let us = (d.as_micros() as u64).clamp(1, LATENCY_MAX_US);
        let mut h = self
            .latency_us
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Cannot fail: the value is clamped into the histogram's range.
        let _ = h.record(us);
    }

    /// The server answered (whatever it said): it is still there.
    fn server_responded(&self) {
        self.failure_streak.store(0, Ordering::Relaxed);
        self.streak_start_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// No response at all (refused, reset, timed out).
    fn connection_failed(&self) {
        let now_ms = self.start.elapsed().as_millis() as u64;
        let n = self.failure_streak.fetch_add(1, Ordering::Relaxed) + 1;
        let _ = self.streak_start_ms.compare_exchange(
            u64::MAX,
            now_ms,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
        let since = now_ms.saturating_sub(self.streak_start_ms.load(Ordering::Relaxed));
        if n >= GONE_AFTER_FAILURES && since >= GONE_AFTER.as_millis() as u64 {
            self.request_stop(format!(
                "server unreachable: {n} consecutive connection failures over {:.1} s",
                since as f64 / 1000.0
            ));
        }
    }

    fn request_stop(&self, reason: String) {
        let mut r = self
            .stop_reason
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if r.is_none() {
            *r = Some(reason);
        }
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// What export tasks need.
struct TaskCtx {
    transport: Transport,
    shared: Arc<Shared>,
    on_ack: Option<AckCallback>,
    max_retries: u32,
    /// No retry is scheduled to happen after this instant.
    retry_deadline: Instant,
}

fn backoff(attempt: u32) -> Duration {
    let exp = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    // "Equal jitter": between half and all of the exponential delay.
    exp.mul_f64(0.5 + 0.5 * rand::random::<f64>())
}

/// Sends `body` with OTLP retry semantics. Returns the number of rejected
/// items once acknowledged, `None` when the export failed for good.
async fn send_with_retries(ctx: &TaskCtx, signal: Signal, body: Bytes) -> Option<u64> {
    let s = &ctx.shared;
    let retried = match signal {
        Signal::Traces => &s.retried,
        Signal::Metrics => &s.metrics_retried,
    };
    for attempt in 0..=ctx.max_retries {
        let sent_at = Instant::now();
        match ctx.transport.export(signal, body.clone()).await {
            Outcome::Accepted { rejected } => {
                s.server_responded();
                if signal == Signal::Traces {
                    s.record_latency(sent_at.elapsed());
                }
                return Some(rejected);
            }
            Outcome::Retryable { delay, reason } => {
                s.server_responded();
                s.note_failure(&reason);
                if attempt == ctx.max_retries {
                    s.note_failure("gave up: retries exhausted");
                    return None;
                }
                let delay = delay.map_or_else(|| backoff(attempt), |d| d.min(MAX_RETRY_DELAY));
                if s.stopped() || Instant::now() + delay > ctx.retry_deadline {
                    s.note_failure("gave up: run ended during back-off");
                    return None;
                }
                Shared::add(retried, 1);
                sleep(delay).await;
            }
            Outcome::Failed { reason, connection } => {
                if connection {
                    s.connection_failed();
                } else {
                    s.server_responded();
                }
                s.note_failure(&reason);
                return None;
            }
        }
    }
    None
}

async fn export_traces(
    ctx: Arc<TaskCtx>,
    req: ExportTraceServiceRequest,
    spans: u64,
    _permit: OwnedSemaphorePermit,
) {
    let s = &ctx.shared;
    Shared::add(&s.proto_bytes, req.encoded_len() as u64);
    let body = match ctx.transport.encode(&req) {
        Ok(body) => body,
        Err(e) => {
            s.note_failure(&format!("encoding failed: {e}"));
            Shared::add(&s.errors, 1);
            Shared::add(&s.spans_failed, spans);
            return;
        }
    };
    Shared::add(&s.payload_bytes, body.len() as u64);
    // Only keep the request in memory while in flight if someone wants it back.
    let req = ctx.on_ack.is_some().then_some(req);
    match send_with_retries(&ctx, Signal::Traces, body).await {
        Some(rejected) => {
            let rejected = rejected.min(spans);
            Shared::add(&s.requests_ok, 1);
            Shared::add(&s.spans_accepted, spans - rejected);
            Shared::add(&s.rejected, rejected);
            if let (Some(on_ack), Some(req)) = (&ctx.on_ack, &req) {
                on_ack(req);
            }
        }
        None => {
            Shared::add(&s.errors, 1);
            Shared::add(&s.spans_failed, spans);
        }
    }
}

async fn export_metrics(
    ctx: Arc<TaskCtx>,
    req: ExportMetricsServiceRequest,
    in_flight: Arc<AtomicBool>,
) {
    let s = &ctx.shared;
    let points: u64 = req
        .resource_metrics
        .iter()
        .flat_map(|rm| &rm.scope_metrics)
        .flat_map(|sm| &sm.metrics)
        .map(|m| match &m.data {
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Sum(sum)) => {
                sum.data_points.len() as u64
            }
            Some(opentelemetry_proto::tonic::metrics::v1::metric::Data::Histogram(h)) => {
                h.data_points.len() as u64
            }
            _ => 0,
        })
        .sum();
    Shared::add(&s.metrics_requests, 1);
    Shared::add(&s.metrics_points, points);
    let outcome = match ctx.transport.encode(&req) {
        Ok(body) => send_with_retries(&ctx, Signal::Metrics, body).await,
        Err(e) => {
            s.note_failure(&format!("metrics encoding failed: {e}"));
            None
        }
    };
    match outcome {
        Some(rejected) => {
            Shared::add(&s.metrics_ok, 1);
            Shared::add(&s.metrics_rejected, rejected);
        }
        None => Shared::add(&s.metrics_errors, 1),
    }
    in_flight.store(false, Ordering::Release);
}

struct Dispatcher {
    generator: TraceGenerator,
    ctx: Arc<TaskCtx>,
    tasks: JoinSet<()>,
    permits: Arc<Semaphore>,
    deadline: Instant,
    batch_spans: usize,
    /// Spans still allowed by `max_spans`.
    remaining: Option<u64>,
    metrics: bool,
    next_metrics: Instant,
    metrics_in_flight: Arc<AtomicBool>,
    stalls: u64,
}

impl Dispatcher {
    fn done(&self) -> bool {
        Instant::now() >= self.deadline || self.ctx.shared.stopped() || self.remaining == Some(0)
    }

    /// Waits for a free concurrency slot; `None` when the run ended meanwhile.
    async fn acquire(&mut self, count_stall: bool) -> Option<OwnedSemaphorePermit> {
        if let Ok(permit) = std::sync::Arc::clone(&self.permits).try_acquire_owned() {
            return Some(permit);
        }
        if count_stall {
            self.stalls += 1;
        }
        tokio::select! {
            permit = std::sync::Arc::clone(&self.permits).acquire_owned() => permit.ok(),
            _ = sleep_until(self.deadline.into()) => None,
        }
    }

    /// Generates a request of about `target` spans and starts exporting it.
    fn dispatch(&mut self, target: usize, permit: OwnedSemaphorePermit) -> u64 {
        let limit = self
            .remaining
            .map_or(usize::MAX, |r| usize::try_from(r).unwrap_or(usize::MAX));
        let req = self.generator.next_request_limited(target, limit);
        let spans = span_count(&req) as u64;
        let s = &self.ctx.shared;
        Shared::add(&s.requests, 1);
        Shared::add(&s.spans_sent, spans);
        if let Some(r) = &mut self.remaining {
            *r = r.saturating_sub(spans);
        }
        self.tasks.spawn(export_traces(
            std::sync::Arc::clone(&self.ctx),
            req,
            spans,
            permit,
        ));
        self.reap();
        self.maybe_send_metrics(false);
        spans
    }

    /// Collects finished export tasks so the join set stays small.
    fn reap(&mut self) {
        for _ in 0..self.tasks.len() {
            match self.tasks.try_join_next() {
                Some(Ok(())) => {}
                Some(Err(e)) => self
                    .ctx
                    .shared
                    .note_failure(&format!("export task failed: {e}")),
                None => break,
            }
        }
    }

    fn maybe_send_metrics(&mut self, last: bool) {
        if !self.metrics || (!last && Instant::now() < self.next_metrics) {
            return;
        }
        self.next_metrics = Instant::now() + METRICS_INTERVAL;
        if self.metrics_in_flight.swap(true, Ordering::AcqRel) {
            return;
        }
        let req = self.generator.metrics_request();
        self.tasks.spawn(export_metrics(
            std::sync::Arc::clone(&self.ctx),
            req,
            std::sync::Arc::clone(&self.metrics_in_flight),
        ));
    }

    /// `--rate 0`: keep `concurrency` requests in flight until done.
    async fn as_fast_as_possible(&mut self, duration: Duration) {
        let cap = duration
            .as_secs()
            .saturating_add(1)
            .saturating_mul(MAX_REQUESTS_PER_SEC);
        for _ in 0..cap {
            if self.done() {
                break;
            }
            let Some(permit) = self.acquire(false).await else {
                break;
            };
            if self.done() {
                break;
            }
            self.dispatch(self.batch_spans, permit);
        }
    }

    /// `--rate N`: release spans on a steady clock, whole traces at a time.
    async fn paced(&mut self, rate: u64, duration: Duration) {
        let rate = rate as f64;
        let batch = self.batch_spans as f64;
        let period = Duration::from_secs_f64((batch / rate).clamp(0.005, 1.0));
        // At most a second's worth (or one batch) of backlog: a server that
        // cannot keep up loses the excess, which shows in the offered rate.
        let max_credit = rate.max(batch);
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let ticks = (duration.as_secs_f64() / period.as_secs_f64()).ceil() as u64 + 2;
        let mut credit = 0.0f64;
        let mut last = Instant::now();
        for _ in 0..ticks {
            tokio::select! {
                _ = ticker.tick() => {}
                _ = sleep_until(self.deadline.into()) => break,
            }
            let now = Instant::now();
            credit = (credit + rate * (now - last).as_secs_f64()).min(max_credit);
            last = now;
            for _ in 0..MAX_REQUESTS_PER_TICK {
                if credit <= 0.0 || self.done() {
                    break;
                }
                let Some(permit) = self.acquire(true).await else {
                    break;
                };
                if self.done() {
                    break;
                }
                let target = (credit.ceil() as usize).clamp(1, self.batch_spans);
                credit -= self.dispatch(target, permit) as f64;
            }
            if self.done() {
                break;
            }
            self.maybe_send_metrics(false);
        }
    }

    /// Waits for in-flight exports until `until`, then abandons the rest.
    async fn drain(&mut self, until: Instant) {
        let pending = self.tasks.len();
        for _ in 0..pending {
            tokio::select! {
                joined = self.tasks.join_next() => match joined {
                    Some(Ok(())) => {}
                    Some(Err(e)) => self.ctx.shared.note_failure(&format!("export task failed: {e}")),
                    None => break,
                },
                _ = sleep_until(until.into()) => break,
            }
        }
        let abandoned = self.tasks.len();
        if abandoned > 0 {
            self.ctx.shared.note_failure(&format!(
                "abandoned {abandoned} in-flight exports at shutdown"
            ));
            self.tasks.shutdown().await;
        }
    }
}

/// Progress bar on stderr, refreshed from the shared counters.
struct Progress {
    bar: ProgressBar,
    stop: watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(cfg: &LoadConfig, shared: Arc<Shared>) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let bar = if cfg.quiet {
            ProgressBar::hidden()
        } else {
            ProgressBar::with_draw_target(Some(1000), ProgressDrawTarget::stderr())
        };
        if bar.is_hidden() {
            return Progress {
                bar,
                stop,
                task: None,
            };
        }
        if let Ok(style) = ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] [{bar:30}] {percent:>3}% {msg}",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        let (duration, max_spans) = (cfg.duration, cfg.max_spans);
        let bar2 = bar.clone();
        let max_ticks = ((duration + RETRY_GRACE + cfg.request_timeout).as_millis()
            / PROGRESS_INTERVAL.as_millis()) as u64
            + 40;
        let task = tokio::spawn(async move {
            let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
            let (mut last_acked, mut last_at) = (0u64, Instant::now());
            for _ in 0..max_ticks {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stopped.changed() => break,
                }
                let sent = Shared::get(&shared.spans_sent);
                let acked = Shared::get(&shared.spans_accepted);
                let now = Instant::now();
                let rate = (acked - last_acked.min(acked)) as f64
                    / (now - last_at).as_secs_f64().max(1e-3);
                (last_acked, last_at) = (acked, now);
                let by_time = shared.start.elapsed().as_secs_f64() / duration.as_secs_f64();
                let by_spans = max_spans.map_or(0.0, |m| sent as f64 / m.max(1) as f64);
                bar2.set_position((by_time.max(by_spans).min(1.0) * 1000.0) as u64);
                bar2.set_message(format!(
                    "sent {sent} acked {acked} ({rate:.0}/s) err {} retried {} rejected {}",
                    Shared::get(&shared.errors),
                    Shared::get(&shared.retried),
                    Shared::get(&shared.rejected),
                ));
            }
        });
        Progress {
            bar,
            stop,
            task: Some(task),
        }
    }

    async fn finish(self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task {
            // The task exits at its next select; a panic there is not ours to report.
            let _ = tokio::time::timeout(Duration::from_secs(1), task).await;
        }
        self.bar.finish_and_clear();
    }
}

fn latency_summary(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        count: h.len(),
        mean_ms: h.mean() / 1000.0,
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        max_ms: ms(h.max()),
    }
}

fn server_stats(
    pid: u32,
    before: std::io::Result<procfs::ProcSample>,
    elapsed: Duration,
    accepted: u64,
) -> ServerStats {
    let mut stats = ServerStats {
        pid,
        ..Default::default()
    };
    let mut notes = Vec::new();
    match (before, procfs::sample(pid)) {
        (Ok(before), Ok(after)) => {
            let cpu_us = after.cpu_micros.saturating_sub(before.cpu_micros);
            stats.cpu_seconds = Some(cpu_us as f64 / 1e6);
            stats.cpu_cores = Some(cpu_us as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9));
            stats.cpu_us_per_accepted_span =
                (accepted > 0).then(|| cpu_us as f64 / accepted as f64);
        }
        (Err(e), _) => notes.push(format!("cpu: reading /proc/{pid}/stat at start: {e}")),
        (_, Err(e)) => notes.push(format!("cpu: reading /proc/{pid}/stat at end: {e}")),
    }
    match procfs::peak_rss_bytes(pid) {
        Ok(bytes) => stats.peak_rss_bytes = Some(bytes),
        Err(e) => notes.push(format!("peak RSS: {e}")),
    }
    if !notes.is_empty() {
        stats.note = Some(notes.join("; "));
    }
    stats
}

pub(crate) async fn run(cfg: LoadConfig, on_ack: Option<AckCallback>) -> anyhow::Result<Report> {
    cfg.validate()?;
    let transport =
        Transport::connect(cfg.protocol, &cfg.endpoint, cfg.gzip, cfg.request_timeout).await?;
    let server_before = cfg.server_pid.map(procfs::sample);
    let shared = Arc::new(Shared::new()?);
    let start = shared.start;
    let deadline = start + cfg.duration;
    let ctx = Arc::new(TaskCtx {
        transport,
        shared: std::sync::Arc::clone(&shared),
        on_ack,
        max_retries: cfg.max_retries,
        retry_deadline: deadline + RETRY_GRACE,
    });
    let progress = Progress::start(&cfg, std::sync::Arc::clone(&shared));
    let mut dispatcher = Dispatcher {
        generator: TraceGenerator::new(cfg.services, cfg.error_rate, cfg.seed),
        ctx,
        tasks: JoinSet::new(),
        permits: Arc::new(Semaphore::new(cfg.concurrency)),
        deadline,
        batch_spans: cfg.batch_spans,
        remaining: cfg.max_spans,
        metrics: cfg.metrics,
        next_metrics: start,
        metrics_in_flight: Arc::new(AtomicBool::new(false)),
        stalls: 0,
    };

    if cfg.rate == 0 {
        dispatcher.as_fast_as_possible(cfg.duration).await;
    } else {
        dispatcher.paced(cfg.rate, cfg.duration).await;
    }
    let send_elapsed = start.elapsed();
    if !shared.stopped() {
        dispatcher.maybe_send_metrics(true);
    }
    dispatcher
        .drain(Instant::now().max(deadline) + RETRY_GRACE + cfg.request_timeout)
        .await;
    let elapsed = start.elapsed();
    progress.finish().await;

    let s = &shared;
    let spans_sent = Shared::get(&s.spans_sent);
    let spans_accepted = Shared::get(&s.spans_accepted);
    let offered = spans_sent as f64 / send_elapsed.as_secs_f64().max(1e-9);
    let latency = latency_summary(&s.latency_us.lock().unwrap_or_else(PoisonError::into_inner));
    let stopped_early = s
        .stop_reason
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let error_kinds = s
        .error_kinds
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let target_rate = (cfg.rate > 0).then_some(cfg.rate);
    Ok(Report {
        protocol: cfg.protocol.as_str().to_owned(),
        endpoint: cfg.endpoint.clone(),
        gzip: cfg.gzip,
        seed: cfg.seed,
        target_rate,
        concurrency: cfg.concurrency,
        duration_secs: elapsed.as_secs_f64(),
        spans_sent,
        spans_accepted,
        spans_failed: Shared::get(&s.spans_failed),
        spans_per_sec_accepted: spans_accepted as f64 / elapsed.as_secs_f64().max(1e-9),
        spans_per_sec_offered: offered,
        requests: Shared::get(&s.requests),
        requests_ok: Shared::get(&s.requests_ok),
        errors: Shared::get(&s.errors),
        rejected: Shared::get(&s.rejected),
        retried: Shared::get(&s.retried),
        payload_bytes: Shared::get(&s.payload_bytes),
        avg_encoded_span_bytes: Shared::get(&s.proto_bytes) as f64 / spans_sent.max(1) as f64,
        latency,
        error_kinds,
        kept_up: target_rate
            .filter(|_| stopped_early.is_none())
            .map(|r| offered >= 0.95 * r as f64),
        concurrency_stalls: dispatcher.stalls,
        stopped_early,
        metrics: cfg.metrics.then(|| MetricsSummary {
            requests: Shared::get(&s.metrics_requests),
            requests_ok: Shared::get(&s.metrics_ok),
            errors: Shared::get(&s.metrics_errors),
            retried: Shared::get(&s.metrics_retried),
            data_points_sent: Shared::get(&s.metrics_points),
            data_points_rejected: Shared::get(&s.metrics_rejected),
        }),
        server: cfg
            .server_pid
            .zip(server_before)
            .map(|(pid, before)| server_stats(pid, before, elapsed, spans_accepted)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for attempt in 0..20 {
            let d = backoff(attempt);
            let full = BACKOFF_BASE
                .saturating_mul(1 << attempt.min(16))
                .min(BACKOFF_CAP);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
    }

    #[test]
    fn failure_streak_needs_count_and_time() {
        let s = Shared::new().unwrap();
        for _ in 0..100 {
            s.connection_failed();
        }
        assert!(!s.stopped(), "many failures in no time are not enough");
        s.streak_start_ms.store(0, Ordering::Relaxed);
        // Pretend the streak started more than GONE_AFTER ago.
        let s = Shared {
            start: Instant::now() - GONE_AFTER - Duration::from_millis(10),
            ..s
        };
        s.connection_failed();
        assert!(s.stopped());
        s.server_responded();
        assert_eq!(s.failure_streak.load(Ordering::Relaxed), 0);
    }
}
