//! The ingest tier (`weft ingest`): takes OTLP from applications and forwards every trace
//! to the R collector nodes that own it, without ever losing what it acknowledged.
//!
//! ```text
//!  app ─ OTLP/gRPC, OTLP/HTTP, remote-write ─> receiver::{grpc,http} (same code as collectors)
//!                                                  │ OtlpSink for Ingest
//!     traces: decode + validate (collector rules) ─> split by ClusterView::targets(trace_id)
//!     metrics, remote-write: whole request ──────> targets(xxhash64(bytes))
//!                                                  │ one encoded sub-request per target set
//!             ┌──────────────── every target ──────┴──────── nobody up ─────────┐
//!             ▼                                                                  ▼
//!   node queue (bulkhead, ≤ queue_max_bytes; full ─> 503 for the whole request)  spool for
//!             │ worker: batch, call with deadline, retry with backoff + jitter   the owners
//!             │ within delivery_budget_ms; circuit breaker per node               │
//!             ├─ acknowledged by the collector (in its WAL) ────────────────┐     │
//!             └─ budget spent / circuit open / node down ─> spool (fsync) ──┤ <───┘
//!                                                                           ▼
//!            client ack = every target of every sub-request acknowledged or spooled
//!
//!   spool ──replay per node (node up, breaker allows)──> node, hint removed after its ack
//!         └─node left the ring──> re-split by the current ring, removed after new owners ack
//! ```
//!
//! **Ack rule.** An export succeeds only when, for every sub-request, every target node
//! either acknowledged it (durable in that node's WAL) or it is durably in this node's
//! spool for that target (hinted hand-off). Fewer than R nodes up: the ones up get it.
//! None of a trace's owners up: it is spooled for its natural owners (`ring.owners`). A
//! full queue or spool refuses the whole request (503 / UNAVAILABLE + retry); parts that
//! were queued already may still be delivered, and duplicates are removed at query time.
//!
//! Membership comes from [`weft_cluster::membership`] as a `watch::Receiver<Arc<ClusterView>>`. New members get a
//! worker; a member that leaves has its queue spooled and its hints re-routed, then its
//! worker ends. Spooled hints survive restarts and are replayed by the next process.

pub mod breaker;
pub mod config;
pub mod spool;

mod error;
mod forward;
mod node;
mod split;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::future::join_all;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::Mutex;
use prost::Message as _;
use serde::Serialize;
use tokio::sync::{Semaphore, oneshot, watch};
use tokio::task::JoinHandle;

pub use breaker::CircuitState;
pub use node::{NodeStatus, ReplayStatus, RoutingState};

pub use crate::config::IngestConfig;
use node::{Delivery, Failure, Item, Node};
use split::Route;
use spool::{SignalKind, Spool};
use weft_cluster::ClusterView;
use weft_receiver::OtlpSink;
use weft_receiver::{Error, ExportOutcome, Format, ReceiverConfig, Result};

/// How often membership and the spool are reconciled with the set of node workers even
/// when the view did not change (e.g. to retire a removed node once its hints are gone).
const RECONCILE_EVERY: Duration = Duration::from_secs(1);

/// A running ingest node. Mount its receivers with `receiver::grpc::services(ingest)` and
/// `receiver::http::router(ingest)`.
pub struct Ingest {
    inner: Arc<Inner>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Ingest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ingest")
            .field("spool_dir", &self.inner.config.spool_dir)
            .finish()
    }
}

/// What node workers share with the ingest node.
pub(crate) struct Inner {
    pub config: IngestConfig,
    receiver: ReceiverConfig,
    inflight: Arc<Semaphore>,
    pub spool: Arc<Spool>,
    view: watch::Receiver<Arc<ClusterView>>,
    pub http: reqwest::Client,
    nodes: Mutex<HashMap<String, Arc<Node>>>,
    accepting: AtomicBool,
    stop: watch::Sender<bool>,
    requests: AtomicU64,
    refused: AtomicU64,
    /// Consistent head sampling before the split (`sampling.head`).
    head: weft_sampling::head::HeadSampler,
    telemetry: Arc<weft_telemetry::Telemetry>,
}

/// The ingest node's state for the operator view.
#[derive(Debug, Clone, Serialize)]
pub struct IngestStatus {
    /// `false` once shutdown started.
    pub accepting: bool,
    pub view_version: u64,
    pub replication: usize,
    pub members: usize,
    pub members_up: usize,
    /// Every collector node this ingest node knows: members, and former members whose
    /// hints are still being re-routed. Sorted by node id.
    pub nodes: Vec<NodeStatus>,
    pub totals: IngestTotals,
}

/// Sums over every node, plus request counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct IngestTotals {
    /// Exports handled (any outcome).
    pub requests: u64,
    /// Exports refused for back-pressure: a full queue or spool, or no collectors.
    pub refused: u64,
    pub queue_batches: u64,
    pub queue_bytes: u64,
    pub in_flight: u64,
    pub delivered: u64,
    pub delivered_bytes: u64,
    pub failed: u64,
    pub retried: u64,
    pub spooled: u64,
    pub spooled_bytes: u64,
    pub spool_hints: u64,
    pub spool_bytes: u64,
    pub spool_max_bytes: u64,
}

impl Ingest {
    /// Opens the spool (hints from a previous run are replayed) and starts following
    /// `view`. Must be called inside a tokio runtime.
    pub fn start(
        config: IngestConfig,
        receiver: ReceiverConfig,
        view: watch::Receiver<Arc<ClusterView>>,
    ) -> Result<Arc<Ingest>> {
        Self::start_with(
            config,
            receiver,
            view,
            &weft_sampling::HeadConfig::default(),
            weft_telemetry::Telemetry::new(),
        )
    }

    /// [`Ingest::start`] with head sampling and a shared telemetry.
    pub fn start_with(
        mut config: IngestConfig,
        receiver: ReceiverConfig,
        view: watch::Receiver<Arc<ClusterView>>,
        head: &weft_sampling::HeadConfig,
        telemetry: Arc<weft_telemetry::Telemetry>,
    ) -> Result<Arc<Ingest>> {
        let head = weft_sampling::head::HeadSampler::new(head, std::sync::Arc::clone(&telemetry))
            .map_err(|e| Error::Config(e.to_string()))?;
        // A batch must fit what a collector accepts in one request.
        config.batch_max_bytes = config
            .batch_max_bytes
            .min(receiver.max_request_bytes)
            .max(1);
        std::fs::create_dir_all(&config.spool_dir).map_err(|e| {
            Error::Storage(format!(
                "creating spool directory {}: {e}",
                config.spool_dir.display()
            ))
        })?;
        let spool = Arc::new(Spool::open(&config.spool_dir, config.spool_max_bytes)?);
        let http = reqwest::Client::builder()
            .connect_timeout(config.request_timeout())
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| Error::Storage(format!("http client: {e}")))?;
        let inflight = Arc::new(Semaphore::new(
            receiver.max_inflight_bytes.min(Semaphore::MAX_PERMITS),
        ));
        let (stop, _) = watch::channel(false);
        let hints = spool.stats();
        if hints.hints > 0 {
            tracing::info!(
                hints = hints.hints,
                bytes = hints.bytes,
                "spool holds hints from a previous run"
            );
        }
        let inner = Arc::new(Inner {
            config,
            receiver,
            inflight,
            spool,
            view: view.clone(),
            http,
            nodes: Mutex::new(HashMap::new()),
            accepting: AtomicBool::new(true),
            stop,
            requests: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            head,
            telemetry,
        });
        inner.reconcile();
        let supervisor = tokio::spawn(supervise(
            std::sync::Arc::clone(&inner),
            view,
            inner.stop.subscribe(),
        ));
        Ok(Arc::new(Ingest {
            inner,
            supervisor: Mutex::new(Some(supervisor)),
        }))
    }

    pub fn config(&self) -> &IngestConfig {
        &self.inner.config
    }

    /// Applies a new `[sampling]` section (head sampling is what an ingest node does).
    pub fn reload_sampling(&self, sampling: &weft_sampling::SamplingConfig) -> Result<()> {
        sampling
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        self.inner
            .head
            .reload(&sampling.head)
            .map_err(|e| Error::Config(e.to_string()))
    }

    /// This node's own metrics (served at `/metrics`).
    pub fn telemetry(&self) -> &Arc<weft_telemetry::Telemetry> {
        &self.inner.telemetry
    }

    /// Per-node queues, circuits, spool and replay progress, and totals.
    pub fn status(&self) -> IngestStatus {
        let inner = &self.inner;
        let now = Instant::now();
        let view = inner.current_view();
        let mut nodes: Vec<NodeStatus> = {
            let map = inner.nodes.lock();
            map.values().cloned().collect::<Vec<_>>()
        }
        .iter()
        .map(|n| n.status(inner, now))
        .collect();
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        let spool = inner.spool.stats();
        let mut totals = IngestTotals {
            requests: inner.requests.load(Ordering::Relaxed),
            refused: inner.refused.load(Ordering::Relaxed),
            spool_hints: spool.hints,
            spool_bytes: spool.bytes,
            spool_max_bytes: inner.spool.max_bytes(),
            ..Default::default()
        };
        for n in &nodes {
            totals.queue_batches += n.queue_batches;
            totals.queue_bytes += n.queue_bytes;
            totals.in_flight += n.in_flight;
            totals.delivered += n.delivered;
            totals.delivered_bytes += n.delivered_bytes;
            totals.failed += n.failed;
            totals.retried += n.retried;
            totals.spooled += n.spooled;
            totals.spooled_bytes += n.spooled_bytes;
        }
        IngestStatus {
            accepting: inner.accepting.load(Ordering::Relaxed),
            view_version: view.version,
            replication: view.ring.replication(),
            members: view.members.len(),
            members_up: view.up_count(),
            nodes,
            totals,
        }
    }

    /// Stops accepting exports (they get 503 / UNAVAILABLE), delivers or spools what is
    /// queued within one delivery budget, and stops replay. Spooled hints stay on disk
    /// for the next start.
    pub async fn shutdown(&self) {
        let inner = &self.inner;
        inner.accepting.store(false, Ordering::Release);
        inner.stop.send_replace(true);
        let nodes: Vec<Arc<Node>> = inner.nodes.lock().values().cloned().collect();
        let mut handles: Vec<JoinHandle<()>> = self.supervisor.lock().take().into_iter().collect();
        for node in &nodes {
            node.stop();
            handles.extend(node.take_tasks());
        }
        let limit = inner.config.delivery_budget() + Duration::from_secs(10);
        if tokio::time::timeout(limit, join_all(handles.iter_mut()))
            .await
            .is_err()
        {
            tracing::warn!("ingest shutdown: forwarding did not finish in time");
            for handle in &handles {
                handle.abort();
            }
        }
        let spool = inner.spool.stats();
        tracing::info!(
            spool_hints = spool.hints,
            spool_bytes = spool.bytes,
            "ingest stopped"
        );
    }
}

impl Drop for Ingest {
    fn drop(&mut self) {
        // Without shutdown(): tasks still end (they hold the shared state, not `Ingest`).
        self.inner.accepting.store(false, Ordering::Release);
        self.inner.stop.send_replace(true);
        for node in self.inner.nodes.lock().values() {
            node.stop();
        }
    }
}

impl Inner {
    pub(crate) fn current_view(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    fn retry_after(&self) -> Duration {
        Duration::from_secs(self.receiver.retry_after_secs)
    }

    fn overloaded(&self, reason: &'static str) -> Error {
        self.refused.fetch_add(1, Ordering::Relaxed);
        Error::Overloaded {
            reason,
            retry_after: self.retry_after(),
            too_many_requests: false,
        }
    }

    fn no_collectors(&self) -> Error {
        self.overloaded("no collector nodes are known")
    }

    fn admit(&self) -> Result<()> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        if self.accepting.load(Ordering::Acquire) {
            Ok(())
        } else {
            Err(Error::ShuttingDown)
        }
    }

    /// The worker for `id`, started on first use.
    fn node(self: &Arc<Self>, id: &str) -> Arc<Node> {
        let mut nodes = self.nodes.lock();
        if let Some(node) = nodes.get(id) {
            return std::sync::Arc::clone(node);
        }
        let node = Node::start(self, id);
        nodes.insert(id.to_owned(), std::sync::Arc::clone(&node));
        node
    }

    /// Starts workers for new members and for spooled nodes, wakes every replay (a node
    /// may be up again), and retires workers of former members with nothing left.
    fn reconcile(self: &Arc<Self>) {
        let view = self.current_view();
        for member in &view.members {
            self.node(&member.node_id);
        }
        for (id, stats) in self.spool.nodes() {
            if stats.hints > 0 {
                self.node(&id);
            }
        }
        let mut retired = Vec::new();
        self.nodes.lock().retain(|id, node| {
            node.wake_replay.notify_one();
            let keep = view.members.is_empty()
                || view.member(id).is_some()
                || !node.idle()
                || self.spool.node_stats(id).hints > 0;
            if !keep {
                retired.push(std::sync::Arc::clone(node));
            }
            keep
        });
        for node in retired {
            tracing::info!(node = %node.id, "collector node left the ring; forwarding to it stopped");
            node.stop();
        }
    }

    /// Hands every part to its targets and waits until each is acknowledged or spooled
    /// (the ack rule). Queue room is reserved on every target first, so a full queue
    /// refuses the request before anything of it is queued.
    async fn deliver(self: &Arc<Self>, parts: Vec<(Route, SignalKind, Bytes)>) -> Result<()> {
        let max = self.config.queue_max_bytes;
        let mut sends: Vec<(Arc<Node>, SignalKind, Bytes)> = Vec::new();
        let mut spools: Vec<(Arc<Node>, SignalKind, Bytes)> = Vec::new();
        for (route, signal, payload) in parts {
            match route {
                Route::Send(ids) => {
                    for id in ids {
                        let node = self.node(&id);
                        if !node.reserve(payload.len() as u64, max) {
                            for (node, _, payload) in &sends {
                                node.release(payload.len() as u64);
                            }
                            return Err(
                                self.overloaded("a collector node's forwarding queue is full")
                            );
                        }
                        sends.push((node, signal, payload.clone()));
                    }
                }
                Route::Spool(ids) => {
                    for id in ids {
                        spools.push((self.node(&id), signal, payload.clone()));
                    }
                }
            }
        }
        let queued_at = Instant::now();
        let waits: Vec<oneshot::Receiver<Result<Delivery, Failure>>> = sends
            .into_iter()
            .map(|(node, signal, payload)| {
                let (reply, wait) = oneshot::channel();
                node.push(Item {
                    signal,
                    payload,
                    queued_at,
                    reply,
                });
                wait
            })
            .collect();
        let spooled = spools
            .into_iter()
            .map(|(node, signal, payload)| async move {
                let bytes = payload.len() as u64;
                match self.spool.append_async(&node.id, signal, payload).await {
                    Ok(_) => {
                        node.note_spooled(bytes, "no owner of the data is up");
                        Ok(Delivery::Spooled)
                    }
                    Err(e) => Err(Failure::from_spool(&e)),
                }
            });
        let (sent, spooled) = futures::join!(join_all(waits), join_all(spooled));
        let outcomes = sent
            .into_iter()
            .map(|r| r.unwrap_or(Err(Failure::Stopped)))
            .chain(spooled);
        for outcome in outcomes {
            match outcome {
                Ok(_) => {}
                Err(Failure::Spool { full: true, .. }) => {
                    return Err(self.overloaded("hinted hand-off spool is full"));
                }
                // A worker that stopped while running means its node just left the ring:
                // nothing was acknowledged, and a retry is routed by the new view.
                Err(Failure::Stopped) if self.accepting.load(Ordering::Acquire) => {
                    return Err(self.overloaded("cluster membership changed"));
                }
                Err(failure) => return Err(failure.into_error(self.retry_after())),
            }
        }
        Ok(())
    }

    /// Sends spooled content of a node that left the ring to its current targets.
    pub(crate) async fn reroute(
        self: &Arc<Self>,
        signal: SignalKind,
        payload: Bytes,
    ) -> Result<()> {
        let view = self.current_view();
        let parts = match signal {
            SignalKind::Traces => {
                let request = ExportTraceServiceRequest::decode(payload.clone())?;
                split::split_traces(request, &view, Some(&payload))
                    .map_err(|()| self.no_collectors())?
                    .parts
                    .into_iter()
                    .map(|(route, bytes)| (route, signal, bytes))
                    .collect()
            }
            SignalKind::Metrics | SignalKind::Prometheus => {
                let route = split::route(&view, &split::content_key(&payload))
                    .ok_or_else(|| self.no_collectors())?;
                vec![(route, signal, payload)]
            }
        };
        self.deliver(parts).await
    }

    async fn export_traces(self: &Arc<Self>, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.admit()?;
        let (mut request, mut original) = match format {
            Format::Protobuf => (ExportTraceServiceRequest::decode(body.clone())?, Some(body)),
            Format::Json => (
                weft_schemas::otlp_json::decode_traces(&body)
                    .map_err(|e| Error::InvalidJson(e.to_string()))?,
                None,
            ),
        };
        // The same window as `weft up` (weft_schemas::window); collectors do not filter again.
        let window = self.receiver.time_window().now().retain_spans(&mut request);
        if window.count > 0 {
            original = None;
        }
        let sampled = self.head.apply(&mut request, Instant::now());
        if sampled.modified {
            original = None;
        }
        let view = self.current_view();
        let mut split = split::split_traces(request, &view, original.as_ref())
            .map_err(|()| self.no_collectors())?;
        weft_schemas::window::merge_rejections(
            &mut split.rejected,
            &mut split.rejection_message,
            window,
        );
        drop(view);
        let parts = split
            .parts
            .into_iter()
            .map(|(route, bytes)| (route, SignalKind::Traces, bytes))
            .collect::<Vec<_>>();
        if !parts.is_empty() {
            self.deliver(parts).await?;
        }
        Ok(ExportOutcome {
            // Spans sampled away were accepted: the client must not retry them.
            accepted: split.accepted + sampled.dropped,
            rejected: split.rejected,
            rejection_message: split.rejection_message,
        })
    }

    async fn export_metrics(
        self: &Arc<Self>,
        body: Bytes,
        format: Format,
    ) -> Result<ExportOutcome> {
        self.admit()?;
        let (mut request, mut payload) = weft_receiver::decode_metrics_body(body, format)?;
        let window = self
            .receiver
            .time_window()
            .now()
            .retain_metric_points(&mut request);
        if window.count > 0 {
            payload = Bytes::from(request.encode_to_vec());
        }
        // Converting is the only way to know which points the collector would reject
        // (metric validation has many rules); metrics are a small share of the volume.
        let converted = weft_schemas::metrics::from_otlp(&request);
        drop(request);
        self.forward_whole(SignalKind::Metrics, payload, converted, window)
            .await
    }

    async fn export_prometheus(self: &Arc<Self>, snappy_body: Bytes) -> Result<ExportOutcome> {
        self.admit()?;
        let mut request = weft_schemas::prometheus::decode_remote_write(&snappy_body)?;
        let window = self
            .receiver
            .time_window()
            .now()
            .retain_remote_write(&mut request);
        // Forwarded as received (still snappy-compressed) unless the window removed samples.
        let body = if window.count > 0 {
            let encoded = snap::raw::Encoder::new()
                .compress_vec(&request.encode_to_vec())
                .map_err(|e| Error::Storage(format!("snappy: {e}")))?;
            Bytes::from(encoded)
        } else {
            snappy_body
        };
        let converted = weft_schemas::prometheus::metrics_from_remote_write(&request);
        drop(request);
        self.forward_whole(SignalKind::Prometheus, body, converted, window)
            .await
    }

    /// Routes a request without trace IDs whole, by a hash of its bytes.
    async fn forward_whole(
        self: &Arc<Self>,
        signal: SignalKind,
        payload: Bytes,
        converted: weft_schemas::Converted,
        window: weft_schemas::window::WindowRejected,
    ) -> Result<ExportOutcome> {
        let mut outcome = ExportOutcome {
            accepted: converted.batch.num_rows() as u64,
            rejected: converted.rejected,
            rejection_message: converted.rejection_message,
        };
        weft_schemas::window::merge_rejections(
            &mut outcome.rejected,
            &mut outcome.rejection_message,
            window,
        );
        // Like the collector: a request with nothing valid is answered, not stored.
        if outcome.accepted > 0 {
            let route = split::route(&self.current_view(), &split::content_key(&payload))
                .ok_or_else(|| self.no_collectors())?;
            self.deliver(vec![(route, signal, payload)]).await?;
        }
        Ok(outcome)
    }
}

/// Follows the view: reconciles workers on every change and every second; ends on stop.
async fn supervise(
    inner: Arc<Inner>,
    mut view: watch::Receiver<Arc<ClusterView>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut view_open = true;
    loop {
        if *stop.borrow() {
            return;
        }
        inner.reconcile();
        tokio::select! {
            changed = view.changed(), if view_open => {
                if changed.is_err() {
                    view_open = false;
                } else {
                    let v = view.borrow().clone();
                    tracing::info!(version = v.version, members = v.members.len(),
                        up = v.up_count(), "cluster view changed");
                }
            }
            _ = tokio::time::sleep(RECONCILE_EVERY) => {}
            changed = stop.changed() => if changed.is_err() { return },
        }
    }
}

impl OtlpSink for Ingest {
    fn receiver_config(&self) -> &ReceiverConfig {
        &self.inner.receiver
    }

    fn inflight(&self) -> &Arc<Semaphore> {
        &self.inner.inflight
    }

    async fn export_traces(&self, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.inner.export_traces(body, format).await
    }

    async fn export_metrics(&self, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.inner.export_metrics(body, format).await
    }

    async fn export_prometheus(&self, snappy_body: Bytes) -> Result<ExportOutcome> {
        self.inner.export_prometheus(snappy_body).await
    }
}

#[cfg(test)]
mod tests;
