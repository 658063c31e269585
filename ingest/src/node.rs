//! One collector node as the ingest tier sees it: its forwarding queue and worker, its
//! circuit breaker, and the replay of its spooled hints.
//!
//! ```text
//!  Ingest::deliver ── reserve bytes (≤ queue_max_bytes, else Overloaded) ──> queue
//!                                                                              │
//!  worker: take a batch (same signal, ≤ batch_max_bytes, linger batch_linger_ms)
//!     │ send_with_retries: node up? breaker allows? call (deadline) ─ ok ──> ack requests
//!     │     retryable failure: backoff (full jitter, or the server's RetryInfo) while the
//!     │     delivery budget lasts (counted from when the oldest request was queued);
//!     │     breaker counts failures
//!     │ permanent refusal of a batch: each request is retried alone, so one bad request
//!     │     cannot fail the others merged with it
//!     └ gave up (budget spent, circuit open, node down or removed):
//!           spool.append(node, batch) ─ fsynced ──> ack requests "spooled"
//!                                    └ spool full ──> Overloaded to the clients
//!
//!  replay (per node, woken by spooling, view changes and a 200ms tick):
//!     node up:      peek oldest hints ─> batch ─> send_with_retries ─ ok ─> remove hints
//!     node removed: each hint re-split / re-routed by the current ring (Ingest::reroute),
//!                   removed once its new targets acknowledged (or spooled it for theirs)
//! ```
//!
//! Both the worker and the replay share the breaker, so a node that fails is left alone
//! for `breaker_open_ms`, and one trial call (whichever comes first) decides whether it
//! is back.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use serde::Serialize;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::Inner;
use super::breaker::{CircuitBreaker, CircuitState};
use super::error::ClientError;
use super::forward::{CallError, NodeClient, backoff};
use super::spool::{Hint, SignalKind};
use weft_cluster::MemberState;
use weft_receiver::Error;

/// How often a node's replay looks at its spool even when nothing woke it.
const REPLAY_TICK: Duration = Duration::from_millis(200);

/// One queued sub-request and whoever waits for its fate.
pub(crate) struct Item {
    pub signal: SignalKind,
    pub payload: Bytes,
    /// When it was queued: the delivery budget runs from here, so time spent waiting
    /// behind a slow batch counts and a client's wait stays bounded.
    pub queued_at: Instant,
    pub reply: oneshot::Sender<Result<Delivery, Failure>>,
}

/// How a queued sub-request was made safe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Delivery {
    /// The collector node acknowledged it (it is in that node's WAL).
    Acked,
    /// It is durably in this ingest node's spool, for replay to that node.
    Spooled,
}

/// Why a queued sub-request was neither delivered nor spooled. Cloneable, since one
/// outcome completes every request of a batch.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The spool refused it (full) or failed (I/O).
    Spool { full: bool, message: String },
    /// The collector refused it permanently.
    Rejected {
        node: String,
        code: tonic::Code,
        message: String,
    },
    /// The worker stopped before taking it (shutdown, or the node was retired).
    Stopped,
}

impl Failure {
    pub(crate) fn into_error(self, retry_after: Duration) -> Error {
        match self {
            Failure::Spool { full: true, .. } => Error::Overloaded {
                reason: "hinted hand-off spool is full",
                retry_after,
                too_many_requests: false,
            },
            Failure::Spool { message, .. } => Error::Storage(format!("spool: {message}")),
            Failure::Rejected {
                node,
                code,
                message,
            } => Error::Forward {
                node,
                code,
                message,
            },
            Failure::Stopped => Error::ShuttingDown,
        }
    }

    pub(crate) fn from_spool(error: &Error) -> Self {
        Failure::Spool {
            full: matches!(error, Error::Overloaded { .. }),
            message: error.to_string(),
        }
    }
}

/// What `send_with_retries` ended with.
enum Sent {
    Acked,
    Permanent {
        code: tonic::Code,
        message: String,
    },
    /// Not delivered, and not worth waiting for any longer: spool it.
    GaveUp(String),
}

#[derive(Debug, Default)]
struct Counters {
    delivered: AtomicU64,
    delivered_bytes: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    spooled: AtomicU64,
    spooled_bytes: AtomicU64,
    hints_replayed: AtomicU64,
    hints_rerouted: AtomicU64,
}

/// Drain progress of a node's spool, for the operator view and for measuring how long a
/// spool takes to drain.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReplayStatus {
    /// Hints are being replayed now.
    pub draining: bool,
    /// When the current or last drain started / finished (Unix milliseconds).
    pub last_drain_started_ms: Option<u64>,
    pub last_drain_finished_ms: Option<u64>,
    /// Seconds the last finished drain took.
    pub last_drain_secs: Option<f64>,
    /// Hints delivered (or re-routed) by the current or last drain.
    pub last_drain_hints: u64,
    /// Hints delivered to this node since start.
    pub hints_replayed: u64,
    /// Hints of this node re-routed to other nodes since start (it left the ring).
    pub hints_rerouted: u64,
}

#[derive(Debug, Default)]
struct Drain {
    started: Option<(Instant, SystemTime)>,
    last_started: Option<SystemTime>,
    last_finished: Option<SystemTime>,
    last_secs: Option<f64>,
    hints: u64,
    /// After a permanent refusal of spooled hints, replay pauses until then.
    hold_until: Option<Instant>,
}

/// How routing currently sees a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RoutingState {
    Up,
    Down,
    /// Not a ring member any more: nothing is routed to it and its hints are re-routed.
    Removed,
}

/// A collector node's status on this ingest node.
#[derive(Debug, Clone, Serialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub state: RoutingState,
    pub grpc_addr: Option<String>,
    pub http_addr: Option<String>,
    pub circuit: CircuitState,
    /// Times the circuit breaker opened since start.
    pub circuit_opened: u64,
    /// Sub-requests waiting in the queue, and bytes held for the node (queued or being
    /// delivered or spooled).
    pub queue_batches: u64,
    pub queue_bytes: u64,
    /// Calls to the node in progress (forwarding and replay).
    pub in_flight: u64,
    /// Batches the node acknowledged (forwarded or replayed), and their bytes.
    pub delivered: u64,
    pub delivered_bytes: u64,
    /// Batches that could be neither delivered nor spooled, or that the node refused.
    pub failed: u64,
    /// Calls retried after a transient failure.
    pub retried: u64,
    /// Batches spooled for the node (hinted hand-off), and their bytes.
    pub spooled: u64,
    pub spooled_bytes: u64,
    /// What the spool holds for the node now.
    pub spool_hints: u64,
    pub spool_bytes: u64,
    pub replay: ReplayStatus,
}

pub(crate) struct Node {
    pub id: String,
    tx: mpsc::UnboundedSender<Item>,
    /// Bytes reserved by queued sub-requests until they are delivered or spooled.
    queued_bytes: AtomicU64,
    queued_items: AtomicU64,
    in_flight: AtomicU64,
    pub breaker: CircuitBreaker,
    client: Mutex<Option<NodeClient>>,
    counters: Counters,
    /// Set while batches are being spooled instead of delivered (for state-change logs).
    spooling: AtomicBool,
    circuit_open: AtomicBool,
    drain: Mutex<Drain>,
    pub wake_replay: Notify,
    stop: watch::Sender<bool>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.id).finish()
    }
}

impl Node {
    /// Creates the node and starts its worker and replay tasks.
    pub(crate) fn start(inner: &Arc<Inner>, id: &str) -> Arc<Node> {
        let (tx, rx) = mpsc::unbounded_channel();
        let (stop, _) = watch::channel(false);
        let node = Arc::new(Node {
            id: id.to_owned(),
            tx,
            queued_bytes: AtomicU64::new(0),
            queued_items: AtomicU64::new(0),
            in_flight: AtomicU64::new(0),
            breaker: CircuitBreaker::new(
                inner.config.breaker_failures,
                inner.config.breaker_open(),
            ),
            client: Mutex::new(None),
            counters: Counters::default(),
            spooling: AtomicBool::new(false),
            circuit_open: AtomicBool::new(false),
            drain: Mutex::new(Drain::default()),
            wake_replay: Notify::new(),
            stop,
            tasks: Mutex::new(Vec::new()),
        });
        let worker = tokio::spawn(run_worker(
            std::sync::Arc::clone(inner),
            std::sync::Arc::clone(&node),
            rx,
            node.stop.subscribe(),
        ));
        let replay = tokio::spawn(run_replay(
            std::sync::Arc::clone(inner),
            std::sync::Arc::clone(&node),
            node.stop.subscribe(),
        ));
        node.tasks.lock().extend([worker, replay]);
        node
    }

    /// Reserves room for `bytes` in the queue (bulkhead). An empty queue takes any one
    /// sub-request, so a request bigger than the limit is not refused for ever.
    pub(crate) fn reserve(&self, bytes: u64, max: u64) -> bool {
        self.queued_bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                (held == 0 || held.saturating_add(bytes) <= max).then(|| held + bytes)
            })
            .is_ok()
    }

    pub(crate) fn release(&self, bytes: u64) {
        self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
    }

    /// Queues an item whose bytes were reserved. If the worker is gone the reservation is
    /// released and the item dropped, which completes its waiter with `Failure::Stopped`.
    pub(crate) fn push(&self, item: Item) {
        let bytes = item.payload.len() as u64;
        self.queued_items.fetch_add(1, Ordering::AcqRel);
        if self.tx.send(item).is_err() {
            self.queued_items.fetch_sub(1, Ordering::AcqRel);
            self.release(bytes);
        }
    }

    /// Nothing queued, being sent or being spooled for the node.
    pub(crate) fn idle(&self) -> bool {
        self.queued_bytes.load(Ordering::Acquire) == 0
            && self.in_flight.load(Ordering::Acquire) == 0
    }

    /// Asks the worker to deliver or spool what is queued and stop, and the replay to stop.
    pub(crate) fn stop(&self) {
        self.stop.send_replace(true);
    }

    pub(crate) fn take_tasks(&self) -> Vec<JoinHandle<()>> {
        std::mem::take(&mut *self.tasks.lock())
    }

    pub(crate) fn note_spooled(&self, bytes: u64, reason: &str) {
        self.counters.spooled.fetch_add(1, Ordering::Relaxed);
        self.counters
            .spooled_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if !self.spooling.swap(true, Ordering::AcqRel) {
            tracing::warn!(node = %self.id, reason, "spooling batches for collector node (hinted hand-off)");
        }
        self.wake_replay.notify_one();
    }

    fn note_delivered(&self, bytes: u64) {
        self.counters.delivered.fetch_add(1, Ordering::Relaxed);
        self.counters
            .delivered_bytes
            .fetch_add(bytes, Ordering::Relaxed);
        if self.spooling.swap(false, Ordering::AcqRel) {
            tracing::info!(node = %self.id, "delivering to collector node directly again");
        }
    }

    fn client(
        &self,
        inner: &Inner,
        member: &weft_cluster::Member,
    ) -> Result<NodeClient, ClientError> {
        let mut cached = self.client.lock();
        if let Some(client) = cached.as_ref().filter(|c| c.matches(member)) {
            return Ok(client.clone());
        }
        let client = NodeClient::new(member, inner.http.clone(), inner.config.request_timeout())?;
        *cached = Some(client.clone());
        Ok(client)
    }

    pub(crate) fn status(&self, inner: &Inner, now: Instant) -> NodeStatus {
        let view = inner.current_view();
        let member = view.member(&self.id);
        let state = match member.map(|m| m.state) {
            Some(MemberState::Up) => RoutingState::Up,
            Some(MemberState::Down) => RoutingState::Down,
            None => RoutingState::Removed,
        };
        let spool = inner.spool.node_stats(&self.id);
        let drain = self.drain.lock();
        let c = &self.counters;
        NodeStatus {
            node_id: self.id.clone(),
            state,
            grpc_addr: member.map(|m| m.grpc_addr.clone()),
            http_addr: member.map(|m| m.http_addr.clone()),
            circuit: self.breaker.state(now),
            circuit_opened: self.breaker.opened_count(),
            queue_batches: self.queued_items.load(Ordering::Relaxed),
            queue_bytes: self.queued_bytes.load(Ordering::Relaxed),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            delivered: c.delivered.load(Ordering::Relaxed),
            delivered_bytes: c.delivered_bytes.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            retried: c.retried.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            spooled_bytes: c.spooled_bytes.load(Ordering::Relaxed),
            spool_hints: spool.hints,
            spool_bytes: spool.bytes,
            replay: ReplayStatus {
                draining: drain.started.is_some(),
                last_drain_started_ms: drain.last_started.map(unix_ms),
                last_drain_finished_ms: drain.last_finished.map(unix_ms),
                last_drain_secs: drain.last_secs,
                last_drain_hints: drain.hints,
                hints_replayed: c.hints_replayed.load(Ordering::Relaxed),
                hints_rerouted: c.hints_rerouted.load(Ordering::Relaxed),
            },
        }
    }

    fn start_drain(&self, hints: u64) {
        let mut drain = self.drain.lock();
        if drain.started.is_none() {
            let wall = SystemTime::now();
            drain.started = Some((Instant::now(), wall));
            drain.last_started = Some(wall);
            drain.hints = 0;
            tracing::info!(node = %self.id, hints, "replaying spooled hints");
        }
    }

    fn drained(&self, hints: u64) {
        self.drain.lock().hints += hints;
    }

    /// A drain that has not delivered anything yet is forgotten when it stalls (the node
    /// is still unreachable), so the drain clock starts when the node actually takes data
    /// again and `last_drain_secs` measures the drain, not the outage.
    fn stall_drain(&self) {
        let mut drain = self.drain.lock();
        if drain.hints == 0 {
            drain.started = None;
        }
    }

    fn finish_drain(&self) {
        let mut drain = self.drain.lock();
        if let Some((started, _)) = drain.started.take() {
            let secs = started.elapsed().as_secs_f64();
            drain.last_finished = Some(SystemTime::now());
            drain.last_secs = Some(secs);
            tracing::info!(node = %self.id, hints = drain.hints, secs, "spool drained");
        }
    }
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

fn concat<'a>(parts: impl Iterator<Item = &'a Bytes> + Clone) -> Bytes {
    let mut it = parts.clone();
    match (it.next(), it.next()) {
        (None, _) => Bytes::new(),
        (Some(one), None) => one.clone(),
        _ => {
            let len = parts.clone().map(Bytes::len).sum();
            let mut out = BytesMut::with_capacity(len);
            for p in parts {
                out.extend_from_slice(p);
            }
            out.freeze()
        }
    }
}

/// Sends one batch to `node`, retrying transient failures until `deadline`.
async fn send_with_retries(
    inner: &Inner,
    node: &Node,
    signal: SignalKind,
    payload: &Bytes,
    deadline: Instant,
) -> Sent {
    let mut attempt = 0u32;
    loop {
        let now = Instant::now();
        let member = {
            let view = inner.current_view();
            match view.member(&node.id) {
                None => return Sent::GaveUp("not a ring member any more".into()),
                Some(m) if m.state != MemberState::Up => {
                    return Sent::GaveUp("node is down".into());
                }
                Some(m) => m.clone(),
            }
        };
        let remaining = deadline.saturating_duration_since(now);
        if remaining.is_zero() {
            return Sent::GaveUp("delivery budget spent".into());
        }
        if !node.breaker.allow(now) {
            return Sent::GaveUp("circuit open".into());
        }
        let client = match node.client(inner, &member) {
            Ok(c) => c,
            Err(e) => {
                node.breaker.on_failure(now);
                return Sent::GaveUp(e.to_string());
            }
        };
        let timeout = inner.config.request_timeout().min(remaining);
        node.in_flight.fetch_add(1, Ordering::AcqRel);
        let result = client.send(signal, payload.clone(), timeout).await;
        node.in_flight.fetch_sub(1, Ordering::AcqRel);
        match result {
            Ok(()) => {
                node.breaker.on_success();
                if node.circuit_open.swap(false, Ordering::AcqRel) {
                    tracing::info!(node = %node.id, "circuit closed: collector node answers again");
                }
                return Sent::Acked;
            }
            Err(CallError::Permanent { code, message }) => {
                // The node answered, so it is healthy as far as the breaker is concerned.
                node.breaker.on_success();
                return Sent::Permanent { code, message };
            }
            Err(CallError::Retryable {
                message,
                retry_after,
            }) => {
                let opened = node.breaker.opened_count();
                node.breaker.on_failure(Instant::now());
                if node.breaker.opened_count() > opened
                    && !node.circuit_open.swap(true, Ordering::AcqRel)
                {
                    tracing::warn!(node = %node.id, error = %message, "circuit opened: collector node keeps failing");
                }
                let delay = retry_after.unwrap_or_else(|| {
                    backoff(
                        inner.config.backoff_base(),
                        inner.config.backoff_max(),
                        attempt,
                    )
                });
                attempt = attempt.saturating_add(1);
                if Instant::now() + delay >= deadline {
                    return Sent::GaveUp(message);
                }
                node.counters.retried.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Takes batches off the queue and delivers or spools them until stopped; on stop,
/// delivers or spools what is queued within one delivery budget, then ends.
async fn run_worker(
    inner: Arc<Inner>,
    node: Arc<Node>,
    mut rx: mpsc::UnboundedReceiver<Item>,
    mut stop: watch::Receiver<bool>,
) {
    let max = inner.config.batch_max_bytes as u64;
    let linger = inner.config.batch_linger();
    let mut carry: Option<Item> = None;
    // Set once stopping: every batch must be done (delivered or spooled) by then.
    let mut drain_by: Option<Instant> = None;
    loop {
        if drain_by.is_none() && *stop.borrow() {
            drain_by = Some(Instant::now() + inner.config.delivery_budget());
        }
        let first = match carry.take() {
            Some(item) => item,
            None if drain_by.is_some() => match rx.try_recv() {
                Ok(item) => item,
                Err(_) => break,
            },
            None => {
                tokio::select! {
                    item = rx.recv() => match item {
                        Some(item) => item,
                        None => break,
                    },
                    changed = stop.changed() => {
                        if changed.is_err() {
                            drain_by = Some(Instant::now() + inner.config.delivery_budget());
                        }
                        continue;
                    }
                }
            }
        };
        node.queued_items.fetch_sub(1, Ordering::AcqRel);
        let signal = first.signal;
        let mut bytes = first.payload.len() as u64;
        let mut batch = vec![first];
        // A remote-write body is snappy-compressed as a whole: it is never merged.
        if signal != SignalKind::Prometheus {
            let linger_until = tokio::time::Instant::now() + linger;
            while bytes < max {
                let next = match rx.try_recv() {
                    Ok(item) => item,
                    Err(TryRecvError::Empty) if !linger.is_zero() && drain_by.is_none() => {
                        match tokio::time::timeout_at(linger_until, rx.recv()).await {
                            Ok(Some(item)) => item,
                            _ => break,
                        }
                    }
                    Err(_) => break,
                };
                node.queued_items.fetch_sub(1, Ordering::AcqRel);
                let len = next.payload.len() as u64;
                if next.signal != signal || bytes + len > max {
                    carry = Some(next);
                    // Counted again when it is taken from `carry`.
                    node.queued_items.fetch_add(1, Ordering::AcqRel);
                    break;
                }
                bytes += len;
                batch.push(next);
            }
        }
        let oldest = batch
            .iter()
            .map(|i| i.queued_at)
            .min()
            .unwrap_or_else(Instant::now);
        let budget_end = oldest + inner.config.delivery_budget();
        let deadline = drain_by.map_or(budget_end, |d| d.min(budget_end));
        deliver_batch(&inner, &node, signal, batch, deadline).await;
    }
    // Anything left (a carried item when the channel closed) is dropped: its waiter sees
    // `Failure::Stopped`, so nothing is acknowledged that was not delivered or spooled.
    drop(carry);
}

/// Delivers one batch, or spools it, and completes its requests.
async fn deliver_batch(
    inner: &Inner,
    node: &Node,
    signal: SignalKind,
    batch: Vec<Item>,
    deadline: Instant,
) {
    let reserved: u64 = batch.iter().map(|i| i.payload.len() as u64).sum();
    let payload = concat(batch.iter().map(|i| &i.payload));
    match send_with_retries(inner, node, signal, &payload, deadline).await {
        Sent::Acked => {
            node.note_delivered(payload.len() as u64);
            for item in batch {
                let _ = item.reply.send(Ok(Delivery::Acked));
            }
        }
        Sent::Permanent { code, message } if batch.len() == 1 => {
            node.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %node.id, ?code, error = %message, "collector node refused forwarded data");
            for item in batch {
                let _ = item.reply.send(Err(Failure::Rejected {
                    node: node.id.clone(),
                    code,
                    message: message.clone(),
                }));
            }
        }
        Sent::Permanent { .. } => {
            // Merged requests stand or fall alone: find the one the node refuses.
            for item in batch {
                let result = deliver_one(inner, node, signal, &item.payload, deadline).await;
                let _ = item.reply.send(result);
            }
        }
        Sent::GaveUp(reason) => {
            let result = spool(inner, node, signal, payload, &reason).await;
            for item in batch {
                let _ = item.reply.send(result.clone());
            }
        }
    }
    node.release(reserved);
}

async fn deliver_one(
    inner: &Inner,
    node: &Node,
    signal: SignalKind,
    payload: &Bytes,
    deadline: Instant,
) -> Result<Delivery, Failure> {
    match send_with_retries(inner, node, signal, payload, deadline).await {
        Sent::Acked => {
            node.note_delivered(payload.len() as u64);
            Ok(Delivery::Acked)
        }
        Sent::Permanent { code, message } => {
            node.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %node.id, ?code, error = %message, "collector node refused forwarded data");
            Err(Failure::Rejected {
                node: node.id.clone(),
                code,
                message,
            })
        }
        Sent::GaveUp(reason) => spool(inner, node, signal, payload.clone(), &reason).await,
    }
}

async fn spool(
    inner: &Inner,
    node: &Node,
    signal: SignalKind,
    payload: Bytes,
    reason: &str,
) -> Result<Delivery, Failure> {
    let bytes = payload.len() as u64;
    match inner.spool.append_async(&node.id, signal, payload).await {
        Ok(_) => {
            node.note_spooled(bytes, reason);
            Ok(Delivery::Spooled)
        }
        Err(e) => {
            node.counters.failed.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(node = %node.id, error = %e, "could not spool a batch; refusing its requests");
            Err(Failure::from_spool(&e))
        }
    }
}

/// Replays the node's hints whenever it can take them; ends when stopped.
async fn run_replay(inner: Arc<Inner>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        replay_round(&inner, &node, &stop).await;
        tokio::select! {
            _ = node.wake_replay.notified() => {}
            _ = tokio::time::sleep(REPLAY_TICK) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

/// Replays until the node's spool is empty or something stands in the way.
async fn replay_round(inner: &Arc<Inner>, node: &Node, stop: &watch::Receiver<bool>) {
    loop {
        if *stop.borrow() {
            return;
        }
        let stats = inner.spool.node_stats(&node.id);
        if stats.hints == 0 {
            node.finish_drain();
            return;
        }
        let now = Instant::now();
        if node.drain.lock().hold_until.is_some_and(|t| now < t) {
            return;
        }
        let view = inner.current_view();
        let removed = match view.member(&node.id) {
            // An empty view is "membership not known yet", not "everyone was removed".
            None if view.members.is_empty() => return,
            None => true,
            Some(m) if m.state != MemberState::Up => return,
            Some(_) if node.breaker.state(now) == CircuitState::Open => return,
            Some(_) => false,
        };
        drop(view);
        node.start_drain(stats.hints);
        let hints = match inner
            .spool
            .peek_async(&node.id, inner.config.replay_batch_hints.max(1))
            .await
        {
            Ok(hints) => hints,
            Err(e) => {
                tracing::warn!(node = %node.id, error = %e, "reading spooled hints failed");
                return;
            }
        };
        if hints.is_empty() {
            continue;
        }
        let progressed = if removed {
            reroute_hints(inner, node, hints).await
        } else {
            replay_hints(inner, node, hints).await
        };
        if !progressed {
            node.stall_drain();
            return;
        }
    }
}

/// Sends hints to their node, oldest first, batched; `false` when it stopped short.
async fn replay_hints(inner: &Inner, node: &Node, hints: Vec<Hint>) -> bool {
    let max = inner.config.batch_max_bytes;
    let mut start = 0;
    while start < hints.len() {
        let signal = hints[start].signal;
        let mut end = start + 1;
        let mut bytes = hints[start].payload.len();
        if signal != SignalKind::Prometheus {
            while end < hints.len()
                && hints[end].signal == signal
                && bytes + hints[end].payload.len() <= max
            {
                bytes += hints[end].payload.len();
                end += 1;
            }
        }
        let group = &hints[start..end];
        let payload = concat(group.iter().map(|h| &h.payload));
        let deadline = Instant::now() + inner.config.delivery_budget();
        match send_with_retries(inner, node, signal, &payload, deadline).await {
            Sent::Acked => {
                node.note_delivered(payload.len() as u64);
                for hint in group {
                    if let Err(e) = inner.spool.remove_async(hint.id).await {
                        tracing::warn!(node = %node.id, error = %e, "removing a replayed hint failed");
                        return false;
                    }
                }
                let n = group.len() as u64;
                node.counters.hints_replayed.fetch_add(n, Ordering::Relaxed);
                node.drained(n);
            }
            Sent::Permanent { code, message } => {
                // Never dropped (the client was acknowledged): kept and tried again later,
                // and reported, since it needs an operator.
                node.counters.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(node = %node.id, ?code, error = %message, hints = group.len(),
                    "collector node refuses spooled hints; keeping them");
                node.drain.lock().hold_until =
                    Some(Instant::now() + inner.config.backoff_max() * 10);
                return false;
            }
            Sent::GaveUp(_) => return false,
        }
        start = end;
    }
    true
}

/// Re-routes the hints of a node that left the ring to their current owners.
async fn reroute_hints(inner: &Arc<Inner>, node: &Node, hints: Vec<Hint>) -> bool {
    for hint in hints {
        match inner.reroute(hint.signal, hint.payload.clone()).await {
            Ok(()) => {}
            Err(Error::InvalidProtobuf(e)) => {
                // Cannot happen for what ingest spooled (it encoded it); a hint nobody can
                // decode cannot be stored anywhere either.
                tracing::error!(node = %node.id, hint = hint.id, error = %e, "dropping an undecodable hint");
            }
            Err(e) => {
                tracing::debug!(node = %node.id, error = %e, "re-routing hints deferred");
                return false;
            }
        }
        if let Err(e) = inner.spool.remove_async(hint.id).await {
            tracing::warn!(node = %node.id, error = %e, "removing a re-routed hint failed");
            return false;
        }
        node.counters.hints_rerouted.fetch_add(1, Ordering::Relaxed);
        node.drained(1);
    }
    true
}
