//! A Weft collector node (`weft up`, `weft collector`): the receivers' sink that makes data
//! durable and queryable.
//!
//! ```text
//!  weft_receiver (listeners, size caps, decoded-size admission) ─> sink::OtlpSink for Collector
//!        │ admission: live + pending bytes over the cap, or the disk over its high-water
//!        │   mark ([collector.disk])? -> 503 / UNAVAILABLE + retry
//!        │ time window, head sampling (weft up), metrics limits (weft_sampling)
//!        │ decode (prost or OTLP/JSON) ─> weft_schemas: validate + convert to Arrow
//!        ▼
//!   weft_storage::wal::Wal (group commit, fsync) ──on durable──> weft_storage::Store live rows
//!        │ ack (partial success if spans were rejected)   │ flush_loop (size / age)
//!        │ held spans ─> weft_sampling::tail ─> decision records ─> WAL ─> live rows
//!        ▼                                                ▼
//!   client                          sorted, hour-partitioned Parquet + manifest in the
//!                                   storage (storage.url); retention_loop drops old hours
//!
//!   weft-query reads Store::snapshot() (weft up), or GET /internal/v1/snapshot
//!   (snapshot_server, in a cluster): committed files + live rows
//! ```
//!
//! Nothing is acknowledged before it is in the write-ahead log; on start the log is
//! replayed into the live buffers, skipping what the manifest says is already in Parquet.
//! Replay repairs a torn tail and skips past corruption (reported as incidents); an
//! unreadable Parquet file is quarantined and rebuilt from the WAL records this crate
//! decodes for the store (`WalRows`). Spans and points outside the accepted time window are
//! refused before the WAL, so replay gives back what was acked.

pub mod config;
#[cfg(test)]
mod sampling_tests;
pub mod sink;
pub mod snapshot_server;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::sync::{Notify, Semaphore};
use weft_schemas::{Converted, Table};

pub use config::CollectorConfig;
use sampling::head::HeadSampler;
use sampling::tail::{self as tail, TailSampler};
use wal::{DamageKind, RecordKind, Wal};
pub use weft_receiver::{Error, ExportOutcome, Format, Result, decode_metrics_body};
use weft_sampling::{self as sampling, SamplingConfig, metrics_limits};
use weft_storage::incidents::{IncidentKind, Incidents};
pub use weft_storage::store::{FileMeta, FlushStats, Store, TableSnapshot};
use weft_storage::{store, wal};
use weft_telemetry::Telemetry;

/// What a durable WAL record becomes: rows for the live buffers, or spans for tail sampling.
enum Durable {
    Rows(Table, RecordBatch),
    Held(Vec<sampling::HeldSpan>),
}

/// Sampling and own-metrics settings of a collector node.
#[derive(Debug, Clone)]
pub struct CollectorOptions {
    pub sampling: SamplingConfig,
    /// Apply `sampling.head` here: `weft up`, where the collector is also the ingest tier.
    /// Collectors behind `weft ingest` get spans the ingest node already head-sampled.
    pub head_sampling: bool,
    /// Apply `sampling.metrics` (rules and cardinality limits). Exact only where one node
    /// sees every point of a series: `weft up`. In a cluster, ingest spreads a series'
    /// requests over collectors by body hash, so per-node limits would disagree.
    pub metrics_limits: bool,
    /// Refuse items whose time is outside `receiver.accept_past_secs` /
    /// `accept_future_secs` (`weft up`). Collectors behind `weft ingest` take what the
    /// ingest node accepted: it applied the window when the client sent the data, and a
    /// spooled batch may arrive much later.
    pub time_window: bool,
    pub telemetry: Arc<Telemetry>,
    /// Where Parquet files and manifests go (`storage.url`); `None`: the data directory.
    pub objects: Option<Arc<weft_storage::ObjectStorage>>,
    /// This node's prefix in `objects` (`nodes/<id>` in a cluster, `""` for `weft up`).
    pub objects_prefix: String,
    /// `storage.retention` and `storage.delete_grace_secs`; `None`: data is kept forever
    /// (embedders and tests that replay fixed historical times).
    pub retention: Option<(weft_storage::RetentionConfig, Duration)>,
}

impl Default for CollectorOptions {
    fn default() -> Self {
        Self {
            sampling: SamplingConfig::default(),
            head_sampling: true,
            metrics_limits: true,
            // Off for embedders and tests that replay fixed historical times; `weft up`
            // turns it on.
            time_window: false,
            telemetry: Telemetry::new(),
            objects: None,
            objects_prefix: String::new(),
            retention: None,
        }
    }
}

/// A running collector node: WAL, live buffers, flusher.
pub struct Collector {
    config: CollectorConfig,
    store: Arc<Store>,
    wal: Wal<Durable>,
    incidents: Arc<Incidents>,
    telemetry: Arc<Telemetry>,
    head: Option<HeadSampler>,
    tail: Arc<TailSampler>,
    metrics_limiter: Option<metrics_limits::MetricsLimiter>,
    time_window: Option<weft_schemas::window::TimeWindow>,
    /// Bytes of request bodies being processed (memory bound for receivers).
    inflight: Arc<Semaphore>,
    /// Wakes the flusher early (buffer over its flush size, or admission refused).
    flush_now: Arc<Notify>,
    /// The data directory's filesystem is above its high-water mark (`[collector.disk]`).
    disk_full: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Collector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Collector")
            .field("data_dir", &self.config.data_dir)
            .finish()
    }
}

impl Collector {
    /// Opens the data directory, replays the WAL and starts the WAL thread and the flusher.
    /// Must be called inside a tokio runtime.
    pub fn open(config: CollectorConfig) -> Result<Arc<Self>> {
        Self::open_with(config, CollectorOptions::default())
    }

    /// [`Collector::open`] with sampling settings (validated here) and a shared telemetry.
    pub fn open_with(config: CollectorConfig, options: CollectorOptions) -> Result<Arc<Self>> {
        options
            .sampling
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        let telemetry = options.telemetry;
        let head = options
            .head_sampling
            .then(|| HeadSampler::new(&options.sampling.head, std::sync::Arc::clone(&telemetry)))
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        let tail = Arc::new(
            TailSampler::new(&options.sampling.tail, std::sync::Arc::clone(&telemetry))
                .map_err(|e| Error::Config(e.to_string()))?,
        );
        let metrics_limiter = options
            .metrics_limits
            .then(|| {
                metrics_limits::MetricsLimiter::new(
                    &options.sampling.metrics,
                    std::sync::Arc::clone(&telemetry),
                )
            })
            .transpose()
            .map_err(|e| Error::Config(e.to_string()))?;
        let incidents = Arc::new(Incidents::open(&config.data_dir)?);
        let wal_dir = config.data_dir.join("wal");
        let store = Arc::new(Store::open(
            &config.data_dir,
            store::StoreOptions {
                tenant: config.default_tenant.clone(),
                parquet: config.parquet.clone(),
                max_file_rows: config.buffer.max_file_rows,
                max_partitions_per_flush: config.buffer.max_partitions_per_flush,
                incidents: std::sync::Arc::clone(&incidents),
                telemetry: std::sync::Arc::clone(&telemetry),
                row_source: Some(Arc::new(WalRows {
                    dir: wal_dir.clone(),
                })),
                objects: options.objects,
                prefix: options.objects_prefix,
            },
        )?);
        let mut replayed = 0u64;
        let mut held = tail::Replay::default();
        let report = wal::replay(&wal_dir, |record| -> Result<()> {
            match record.kind {
                // Held spans are covered by later decision records, not by flush marks.
                RecordKind::OtlpTracesHeld => {
                    held.held(
                        record.seq,
                        ExportTraceServiceRequest::decode(record.payload.clone())?,
                    );
                    return Ok(());
                }
                RecordKind::TailDecision => {
                    let (decided, _) = decode_decision(&record.payload)?;
                    held.decided(&decided);
                }
                _ => {}
            }
            let table = record_table(record.kind);
            if store.is_flushed(table, record.seq) {
                return Ok(());
            }
            let converted = convert_record(record.kind, &record.payload)?;
            replayed += converted.batch.num_rows() as u64;
            store.apply_durable(vec![(record.seq, (table, converted.batch))]);
            Ok(())
        })?;
        if replayed > 0 {
            tracing::info!(rows = replayed, "replayed write-ahead log");
        }
        if held.undecided_spans() > 0 {
            tracing::info!(
                spans = held.undecided_spans(),
                "replayed spans waiting for tail-sampling decisions"
            );
        }
        tail.restore(held, Instant::now());
        report_wal_damage(&report, &telemetry, &incidents);
        // Never reuse a sequence number the manifest already counts as flushed (a data
        // directory written by the bulk loader, or one whose WAL was removed): such records
        // would be taken for flushed ones and dropped.
        let next_seq = report.next_seq.max(store.flushed_through_max() + 1);
        let applier = std::sync::Arc::clone(&store);
        let holder = std::sync::Arc::clone(&tail);
        let wal = Wal::start(&wal_dir, &config.wal, next_seq, move |group| {
            let mut rows = Vec::with_capacity(group.len());
            for (seq, item) in group {
                match item {
                    Durable::Rows(table, batch) => rows.push((seq, (table, batch))),
                    Durable::Held(spans) => holder.hold(seq, spans, Instant::now()),
                }
            }
            applier.apply_durable(rows)
        })?;
        let inflight = Arc::new(Semaphore::new(
            config
                .receiver
                .max_inflight_bytes
                .min(Semaphore::MAX_PERMITS),
        ));
        let time_window = options.time_window.then(|| config.receiver.time_window());
        store.set_retention(options.retention);
        let collector = Arc::new(Self {
            config,
            store,
            wal,
            incidents,
            telemetry,
            head,
            tail,
            metrics_limiter,
            time_window,
            inflight,
            flush_now: Arc::new(Notify::new()),
            disk_full: std::sync::atomic::AtomicBool::new(false),
        });
        collector.check_disk();
        tokio::spawn(disk_loop(Arc::downgrade(&collector)));
        tokio::spawn(retention_loop(Arc::downgrade(&collector)));
        tokio::spawn(flush_loop(
            Arc::downgrade(&collector),
            std::sync::Arc::clone(&collector.flush_now),
        ));
        tokio::spawn(decision_loop(Arc::downgrade(&collector)));
        Ok(collector)
    }

    /// Applies a new `[sampling]` section; on an invalid one nothing changes.
    pub fn reload_sampling(&self, sampling: &SamplingConfig) -> Result<()> {
        sampling
            .validate()
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(head) = &self.head {
            head.reload(&sampling.head)
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        self.tail
            .reload(&sampling.tail)
            .map_err(|e| Error::Config(e.to_string()))?;
        if let Some(limiter) = &self.metrics_limiter {
            limiter
                .reload(&sampling.metrics)
                .map_err(|e| Error::Config(e.to_string()))?;
        }
        Ok(())
    }

    /// Applies a new `storage.retention` (and grace); the next pass uses it.
    pub fn reload_retention(&self, retention: &weft_storage::RetentionConfig, grace: Duration) {
        if self.store.retention().is_some() {
            self.store.set_retention(Some((retention.clone(), grace)));
        }
    }

    /// The retention this node applies (`None`: keeps everything).
    pub fn retention(&self) -> Option<(weft_storage::RetentionConfig, Duration)> {
        self.store.retention()
    }

    /// This node's own metrics (served at `/metrics`).
    pub fn telemetry(&self) -> &Arc<Telemetry> {
        &self.telemetry
    }

    /// Damage found in this node's stored data (WAL corruption, quarantined files).
    pub fn incidents(&self) -> &Arc<Incidents> {
        &self.incidents
    }

    /// The tail sampler (pending traces, WAL floor).
    pub fn tail_sampler(&self) -> &Arc<TailSampler> {
        &self.tail
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Committed files and live rows of `table`, for the query service.
    pub fn snapshot(&self, table: Table) -> TableSnapshot {
        self.store.snapshot(table)
    }

    pub(crate) fn inflight(&self) -> &Arc<Semaphore> {
        &self.inflight
    }

    /// Measures the data directory's filesystem and moves the disk-full state across the
    /// watermarks (with hysteresis, so it does not flap at the mark).
    fn check_disk(&self) {
        let used = match rustix::fs::statvfs(&self.config.data_dir) {
            Ok(s) if s.f_blocks > 0 => 100.0 * (1.0 - s.f_bavail as f64 / s.f_blocks as f64),
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot measure the data directory's disk");
                return;
            }
        };
        self.telemetry.set(
            "weft_disk_used_percent",
            "Used space of the data directory's filesystem, percent.",
            &[],
            used,
        );
        let disk = &self.config.disk;
        let full = self.disk_full.load(std::sync::atomic::Ordering::Relaxed);
        if !full && used >= disk.high_water_percent {
            self.disk_full
                .store(true, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                used_percent = used,
                high_water_percent = disk.high_water_percent,
                data_dir = %self.config.data_dir.display(),
                "disk above its high-water mark: refusing new data (503) until it is back \
                 at the low-water mark"
            );
        } else if full && used <= disk.low_water_percent {
            self.disk_full
                .store(false, std::sync::atomic::Ordering::Relaxed);
            tracing::warn!(
                used_percent = used,
                low_water_percent = disk.low_water_percent,
                "disk back at its low-water mark: taking new data again"
            );
        }
    }

    /// Refuses new data while unflushed data is at its cap (bounded memory) or the disk is
    /// above its high-water mark.
    fn admit(&self) -> Result<()> {
        if self.disk_full.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(Error::Overloaded {
                reason: "disk above its high-water mark",
                retry_after: Duration::from_secs(self.config.receiver.retry_after_secs),
                too_many_requests: false,
            });
        }
        let held = self.store.live_bytes() + self.wal.pending_bytes() + self.tail.pending().2;
        if held >= self.config.buffer.max_bytes {
            self.flush_now.notify_one();
            return Err(Error::Overloaded {
                reason: "unflushed data at its limit",
                retry_after: Duration::from_secs(self.config.receiver.retry_after_secs),
                too_many_requests: false,
            });
        }
        Ok(())
    }

    /// Accepts an OTLP trace export. `body` is the decompressed request body.
    pub async fn export_traces(&self, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.admit()?;
        let (mut request, mut payload) = match format {
            Format::Protobuf => (ExportTraceServiceRequest::decode(body.clone())?, Some(body)),
            Format::Json => {
                let request = weft_schemas::otlp_json::decode_traces(&body)
                    .map_err(|e| Error::InvalidJson(e.to_string()))?;
                (request, None)
            }
        };
        let window = self.window_spans(&mut request);
        if window.count > 0 {
            payload = None;
        }
        let mut sampled_out = 0;
        if let Some(head) = self.head.as_ref().filter(|h| !h.is_noop()) {
            let outcome = head.apply(&mut request, Instant::now());
            sampled_out = outcome.dropped;
            if outcome.modified {
                payload = None;
            }
        }
        let mut outcome = if self.tail.enabled() {
            self.hold_traces(request, payload).await?
        } else {
            let payload = payload.unwrap_or_else(|| Bytes::from(request.encode_to_vec()));
            let converted = weft_schemas::spans::from_otlp(&request);
            self.commit(RecordKind::OtlpTraces, payload, converted)
                .await?
        };
        weft_schemas::window::merge_rejections(
            &mut outcome.rejected,
            &mut outcome.rejection_message,
            window,
        );
        // Spans sampled away were accepted: the client must not retry them.
        outcome.accepted += sampled_out;
        Ok(outcome)
    }

    /// Tail sampling on: valid spans go to the WAL as a held record, then wait for their
    /// trace's decision.
    async fn hold_traces(
        &self,
        mut request: ExportTraceServiceRequest,
        payload: Option<Bytes>,
    ) -> Result<ExportOutcome> {
        let mut outcome = ExportOutcome::default();
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                scope
                    .spans
                    .retain(|span| match weft_schemas::spans::validate_span(span) {
                        Ok(()) => true,
                        Err(reason) => {
                            outcome.rejected += 1;
                            outcome
                                .rejection_message
                                .get_or_insert_with(|| reason.to_owned());
                            false
                        }
                    });
                outcome.accepted += scope.spans.len() as u64;
            }
        }
        if outcome.accepted == 0 {
            return Ok(outcome);
        }
        let payload = match payload {
            Some(p) if outcome.rejected == 0 => p,
            _ => Bytes::from(request.encode_to_vec()),
        };
        let spans = tail::hold_request(request);
        self.wal
            .append(RecordKind::OtlpTracesHeld, payload, Durable::Held(spans))
            .await?;
        Ok(outcome)
    }

    /// Accepts an OTLP metrics export. `body` is the decompressed request body.
    pub async fn export_metrics(&self, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.admit()?;
        let (mut request, mut payload) = decode_metrics_body(body, format)?;
        let window = match self.time_window {
            Some(w) => w.now().retain_metric_points(&mut request),
            None => Default::default(),
        };
        if window.count > 0 {
            payload = Bytes::from(request.encode_to_vec());
        }
        if let Some(limiter) = self.metrics_limiter.as_ref().filter(|l| !l.is_noop())
            && limiter.apply_otlp(&mut request).changed
        {
            // The WAL stores the rewritten request, so replay gives back the same rows.
            payload = Bytes::from(request.encode_to_vec());
        }
        let converted = weft_schemas::metrics::from_otlp(&request);
        let mut outcome = self
            .commit(RecordKind::OtlpMetrics, payload, converted)
            .await?;
        weft_schemas::window::merge_rejections(
            &mut outcome.rejected,
            &mut outcome.rejection_message,
            window,
        );
        Ok(outcome)
    }

    /// Accepts a Prometheus remote-write body (snappy-compressed `WriteRequest`).
    pub async fn export_prometheus(&self, snappy_body: Bytes) -> Result<ExportOutcome> {
        self.admit()?;
        let mut request = weft_schemas::prometheus::decode_remote_write(&snappy_body)?;
        let window = match self.time_window {
            Some(w) => w.now().retain_remote_write(&mut request),
            None => Default::default(),
        };
        if let Some(limiter) = self.metrics_limiter.as_ref().filter(|l| !l.is_noop()) {
            limiter.apply_remote_write(&mut request);
        }
        let payload = Bytes::from(request.encode_to_vec());
        let converted = weft_schemas::prometheus::metrics_from_remote_write(&request);
        let mut outcome = self
            .commit(RecordKind::PrometheusWrite, payload, converted)
            .await?;
        weft_schemas::window::merge_rejections(
            &mut outcome.rejected,
            &mut outcome.rejection_message,
            window,
        );
        Ok(outcome)
    }

    /// Removes spans outside the accepted time window (when this node applies it).
    fn window_spans(
        &self,
        request: &mut ExportTraceServiceRequest,
    ) -> weft_schemas::window::WindowRejected {
        match self.time_window {
            Some(w) => w.now().retain_spans(request),
            None => Default::default(),
        }
    }

    async fn commit(
        &self,
        kind: RecordKind,
        payload: Bytes,
        converted: Converted,
    ) -> Result<ExportOutcome> {
        let accepted = converted.batch.num_rows() as u64;
        let outcome = ExportOutcome {
            accepted,
            rejected: converted.rejected,
            rejection_message: converted.rejection_message,
        };
        if accepted > 0 {
            let table = record_table(kind);
            self.wal
                .append(kind, payload, Durable::Rows(table, converted.batch))
                .await?;
            let (live_bytes, _) = self.store.live_status(table);
            if live_bytes >= self.config.buffer.flush_bytes {
                self.flush_now.notify_one();
            }
        }
        Ok(outcome)
    }

    /// Flushes every table now and drops WAL segments that are fully in Parquet.
    pub async fn flush_all(&self) -> Result<Vec<FlushStats>> {
        let mut all = Vec::new();
        // Everything durable now gets flushed; what arrives meanwhile may wait.
        let target = self.store.durable_seq();
        for table in Table::ALL {
            // One flush writes a bounded number of partitions: repeat until done.
            loop {
                let store = std::sync::Arc::clone(&self.store);
                let stats = tokio::task::spawn_blocking(move || store.flush(table))
                    .await
                    .map_err(|e| Error::Storage(format!("flush task: {e}")))??;
                let done = stats.rows == 0 || stats.flushed_through >= target;
                all.push(stats);
                if done {
                    break;
                }
            }
        }
        self.wal.truncate_through(self.wal_floor())?;
        Ok(all)
    }

    /// WAL records up to here are in Parquet, and none holds spans still waiting for a
    /// tail-sampling decision.
    fn wal_floor(&self) -> u64 {
        self.store.flushed_through_all().min(self.tail.wal_floor())
    }

    /// Writes the decisions that are due, until none is (tail sampling).
    pub async fn decide_due(&self) -> Result<usize> {
        self.decide_due_at(Instant::now()).await
    }

    /// [`Collector::decide_due`] as if the clock read `now` (tests move time forward
    /// instead of waiting for it).
    pub async fn decide_due_at(&self, now: Instant) -> Result<usize> {
        let mut traces = 0;
        while let Some(batch) = self.tail.take_due(now) {
            traces += batch.traces;
            let converted = weft_schemas::spans::from_otlp(&batch.kept);
            self.wal
                .append(
                    RecordKind::TailDecision,
                    batch.payload,
                    Durable::Rows(Table::Spans, converted.batch),
                )
                .await?;
            self.tail.covered(&batch.covered);
            let (live_bytes, _) = self.store.live_status(Table::Spans);
            if live_bytes >= self.config.buffer.flush_bytes {
                self.flush_now.notify_one();
            }
        }
        Ok(traces)
    }

    /// Flushes what is buffered so a restart has nothing to replay. Acknowledged data is
    /// safe without this (it is in the WAL); it only makes the next start faster.
    pub async fn shutdown(&self) -> Result<()> {
        self.flush_all().await.map(|_| ())
    }
}

/// Logs, counts and records (as incidents) what WAL replay found damaged. Torn tails are
/// the expected trace of a crash mid-write: a WARN and a counter. Corruption may have cost
/// acknowledged records: an ERROR, counters and a persistent incident.
fn report_wal_damage(report: &wal::ReplayReport, telemetry: &Telemetry, incidents: &Incidents) {
    for damage in &report.damage {
        let segment = damage.segment.display().to_string();
        let quarantined = damage.quarantined.as_ref().map(|p| p.display().to_string());
        match damage.kind {
            DamageKind::TornTail => {
                tracing::warn!(
                    segment,
                    offset = damage.offset,
                    bytes = damage.bytes,
                    quarantined,
                    "wal segment ended in a torn write (a record cut short by a crash, never \
                     acknowledged); cut off the incomplete frame"
                );
                telemetry.add(
                    "weft_wal_torn_tail_repairs_total",
                    "Torn WAL tails (writes cut short by a crash) cut off at replay.",
                    &[],
                    1.0,
                );
            }
            DamageKind::Corrupt => {
                let missing = match damage.missing {
                    Some(m) if m.exact => format!("sequence numbers {}..={}", m.first, m.last),
                    Some(m) => format!("up to sequence numbers {}..={}", m.first, m.last),
                    None => "no sequence number missing".to_owned(),
                };
                let records = damage.missing.map_or(0, |m| m.count());
                tracing::error!(
                    segment,
                    offset = damage.offset,
                    bytes = damage.bytes,
                    missing,
                    quarantined,
                    "wal corruption: skipped damaged bytes and kept every good record after \
                     them; acknowledged records in the damaged bytes are lost"
                );
                telemetry.add(
                    "weft_wal_corrupt_records_total",
                    "WAL records lost to corruption found at replay (upper bound when the damage ends the log).",
                    &[],
                    records as f64,
                );
                telemetry.add(
                    "weft_wal_corrupt_bytes_total",
                    "Corrupt WAL bytes skipped at replay (copied to wal/quarantine).",
                    &[],
                    damage.bytes as f64,
                );
                let message = format!(
                    "WAL corruption in {segment} at offset {}: {} bytes skipped, {missing} lost; damaged bytes kept in {}",
                    damage.offset,
                    damage.bytes,
                    quarantined.as_deref().unwrap_or("(not kept)")
                );
                let details = serde_json::json!({
                    "segment": segment,
                    "offset": damage.offset,
                    "bytes": damage.bytes,
                    "missing": damage.missing,
                    "quarantined": quarantined,
                });
                if let Err(e) = incidents.record(IncidentKind::WalCorruption, message, details) {
                    tracing::error!(error = %e, "could not record the wal corruption incident");
                }
            }
        }
    }
}

fn record_table(kind: RecordKind) -> Table {
    match kind {
        RecordKind::OtlpTraces | RecordKind::OtlpTracesHeld | RecordKind::TailDecision => {
            Table::Spans
        }
        RecordKind::OtlpMetrics | RecordKind::PrometheusWrite => Table::Metrics,
    }
}

/// A table's rows read back from the WAL, for rebuilding a quarantined Parquet file.
struct WalRows {
    dir: std::path::PathBuf,
}

impl store::RowSource for WalRows {
    fn rows(
        &self,
        table: Table,
        records: store::WalRecords,
    ) -> weft_storage::Result<Vec<arrow::array::RecordBatch>> {
        let mut batches = Vec::new();
        wal::read_range(&self.dir, records.first, records.last, |record| {
            // Held spans reach the table only through the decision records that keep them.
            if record.kind == RecordKind::OtlpTracesHeld || record_table(record.kind) != table {
                return Ok(());
            }
            let converted = convert_record(record.kind, &record.payload).map_err(|e| {
                weft_storage::Error::Wal(format!("record {} cannot be decoded: {e}", record.seq))
            })?;
            batches.push(converted.batch);
            Ok(())
        })?;
        Ok(batches)
    }
}

/// A tail-decision WAL record; damage is a storage failure (as any unreadable WAL record).
fn decode_decision(
    payload: &Bytes,
) -> Result<(
    Vec<(weft_sampling::tail::TraceId, weft_sampling::tail::Decision)>,
    ExportTraceServiceRequest,
)> {
    tail::decode_decision(payload).map_err(|e| Error::Storage(e.to_string()))
}

/// Decodes a WAL record again; conversion is deterministic, so the same rows come back.
fn convert_record(kind: RecordKind, payload: &Bytes) -> Result<Converted> {
    Ok(match kind {
        RecordKind::OtlpTraces | RecordKind::OtlpTracesHeld => {
            weft_schemas::spans::from_otlp(&ExportTraceServiceRequest::decode(payload.clone())?)
        }
        RecordKind::TailDecision => weft_schemas::spans::from_otlp(&decode_decision(payload)?.1),
        RecordKind::OtlpMetrics => {
            weft_schemas::metrics::from_otlp(&ExportMetricsServiceRequest::decode(payload.clone())?)
        }
        RecordKind::PrometheusWrite => weft_schemas::prometheus::metrics_from_remote_write(
            &weft_schemas::prometheus::WriteRequest::decode(payload.clone())?,
        ),
    })
}

/// Measures the data directory's disk every `[collector.disk] check_interval_ms`; stops
/// with the collector.
async fn disk_loop(collector: std::sync::Weak<Collector>) {
    loop {
        let wait = {
            let Some(c) = collector.upgrade() else { return };
            let check = std::sync::Arc::clone(&c);
            let _ = tokio::task::spawn_blocking(move || check.check_disk()).await;
            Duration::from_millis(c.config.disk.check_interval_ms.max(10))
        };
        tokio::time::sleep(wait).await;
    }
}

/// Drops partitions past their age (`storage.retention`) and deletes dropped files once
/// their grace is over; stops with the collector.
async fn retention_loop(collector: std::sync::Weak<Collector>) {
    loop {
        let wait = {
            let Some(c) = collector.upgrade() else { return };
            let Some((retention, grace)) = c.retention() else {
                return;
            };
            for table in Table::ALL {
                let Some(keep) = retention.keep(table) else {
                    continue;
                };
                let store = std::sync::Arc::clone(&c.store);
                let now = std::time::SystemTime::now();
                match tokio::task::spawn_blocking(move || {
                    store.apply_retention(table, keep, now, grace)
                })
                .await
                {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(table = table.name(), error = %e, "retention pass failed")
                    }
                    Err(e) => tracing::error!(error = %e, "retention task failed"),
                }
            }
            let store = std::sync::Arc::clone(&c.store);
            match tokio::task::spawn_blocking(move || store.delete_due()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "deleting dropped files failed; retried next pass")
                }
                Err(e) => tracing::error!(error = %e, "deletion task failed"),
            }
            Duration::from_secs(retention.check_interval_secs.max(1))
        };
        tokio::time::sleep(wait).await;
    }
}

/// Flushes a table when its live data is big or old enough; stops with the collector.
async fn flush_loop(collector: std::sync::Weak<Collector>, flush_now: Arc<Notify>) {
    const CHECK_EVERY: Duration = Duration::from_millis(500);
    loop {
        // No strong reference is held while waiting, so dropping the collector ends the loop.
        let _ = tokio::time::timeout(CHECK_EVERY, flush_now.notified()).await;
        let Some(c) = collector.upgrade() else { return };
        let mut flushed = false;
        for table in Table::ALL {
            let (bytes, age) = c.store.live_status(table);
            let due = bytes >= c.config.buffer.flush_bytes
                || age.is_some_and(|a| a >= c.config.buffer.flush_age());
            if !due {
                continue;
            }
            let store = std::sync::Arc::clone(&c.store);
            match tokio::task::spawn_blocking(move || store.flush(table)).await {
                Ok(Ok(stats)) => {
                    flushed = true;
                    tracing::debug!(
                        table = table.name(),
                        rows = stats.rows,
                        files = stats.files,
                        bytes = stats.bytes,
                        "flushed"
                    );
                }
                Ok(Err(e)) => tracing::error!(table = table.name(), error = %e, "flush failed"),
                Err(e) => tracing::error!(table = table.name(), error = %e, "flush task failed"),
            }
        }
        if flushed {
            // Tables with nothing live advance to the WAL head, so old segments can go.
            for table in Table::ALL {
                if c.store.live_status(table).0 == 0
                    && let Err(e) = c.store.flush(table)
                {
                    tracing::error!(table = table.name(), error = %e, "flush failed");
                }
            }
            if let Err(e) = c.wal.truncate_through(c.wal_floor()) {
                tracing::error!(error = %e, "wal truncation failed");
            }
        }
    }
}

/// Writes tail-sampling decisions as traces become due; stops with the collector.
async fn decision_loop(collector: std::sync::Weak<Collector>) {
    loop {
        let (tail, tick) = match collector.upgrade() {
            Some(c) => (std::sync::Arc::clone(&c.tail), c.tail.tick()),
            None => return,
        };
        let _ = tokio::time::timeout(tick, tail.woken()).await;
        drop(tail);
        let Some(c) = collector.upgrade() else { return };
        if let Err(e) = c.decide_due().await {
            // The held records stay in the WAL (not covered), so a restart decides again.
            tracing::error!(error = %e, "writing tail-sampling decisions failed");
            if matches!(e, Error::ShuttingDown) {
                return;
            }
        }
    }
}
