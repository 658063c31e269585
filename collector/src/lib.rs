//! Weft's collector: OTLP in, durable Parquet out, live data for queries.
//!
//! ```text
//!  OTLP/gRPC :4317 ─┐   receiver::grpc / receiver::http: size caps, gzip, media types
//!  OTLP/HTTP :4318 ─┤
//!  Prom remote-write┘
//!        │ decode (prost or OTLP/JSON) ─> weft_schemas: validate + convert to Arrow
//!        │ admission: live + pending bytes over the cap? -> 503 / UNAVAILABLE + retry
//!        ▼
//!   wal::Wal  (group commit, fsync) ──on durable──> store::Store live buffers
//!        │ ack (partial success if spans were rejected)        │ flusher (size / age)
//!        ▼                                                     ▼
//!   client                                   sorted, hour-partitioned Parquet + manifest
//!                                                              │
//!   weft-query reads Store::snapshot(): committed files + live rows
//! ```
//!
//! Nothing is acknowledged before it is in the write-ahead log; on start the log is
//! replayed into the live buffers, skipping what the manifest says is already in Parquet.
//!
//! In a cluster the same crate holds the other roles' parts: `ring` (the trace-ID hash
//! ring), `cluster` (the view of the collector nodes: membership by static list, DNS or
//! chitchat gossip; node info; the `/internal/v1/snapshot` endpoint query nodes read
//! unflushed rows from) and `ingest` (`weft ingest`: split by trace ID, forward to R owners
//! with deadlines, retries, circuit breakers, bounded queues and a durable hand-off spool).
//! The receivers serve any [`receiver::OtlpSink`]: a `Collector` or an `Ingest`.

pub mod cluster;
pub mod config;
pub mod error;
pub mod ingest;
pub mod receiver;
pub mod ring;
pub mod store;
pub mod trace_index;
pub mod wal;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::RecordBatch;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use tokio::sync::{Notify, Semaphore};
use weft_schemas::{Converted, Table};

pub use config::CollectorConfig;
pub use error::{Error, Result};
pub use store::{FileMeta, FlushStats, Store, TableSnapshot};
use wal::{RecordKind, Wal};

/// How a request body is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Protobuf,
    Json,
}

/// The answer to one export: what was kept and what was refused.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExportOutcome {
    pub accepted: u64,
    pub rejected: u64,
    pub rejection_message: Option<String>,
}

/// A running collector node: WAL, live buffers, flusher.
pub struct Collector {
    config: CollectorConfig,
    store: Arc<Store>,
    wal: Wal<(Table, RecordBatch)>,
    /// Bytes of request bodies being processed (memory bound for receivers).
    inflight: Arc<Semaphore>,
    /// Wakes the flusher early (buffer over its flush size, or admission refused).
    flush_now: Arc<Notify>,
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
        let store = Arc::new(Store::open(
            &config.data_dir,
            &config.default_tenant,
            config.parquet.clone(),
            config.buffer.max_file_rows,
        )?);
        let wal_dir = config.data_dir.join("wal");
        let mut replayed = 0u64;
        let next_seq = wal::replay(&wal_dir, |record| {
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
        let applier = store.clone();
        let wal = Wal::start(&wal_dir, &config.wal, next_seq, move |group| {
            applier.apply_durable(group)
        })?;
        let inflight = Arc::new(Semaphore::new(
            config
                .receiver
                .max_inflight_bytes
                .min(Semaphore::MAX_PERMITS),
        ));
        let collector = Arc::new(Self {
            config,
            store,
            wal,
            inflight,
            flush_now: Arc::new(Notify::new()),
        });
        tokio::spawn(flush_loop(
            Arc::downgrade(&collector),
            collector.flush_now.clone(),
        ));
        Ok(collector)
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

    /// Refuses new data while unflushed data is at its cap (bounded memory).
    fn admit(&self) -> Result<()> {
        let held = self.store.live_bytes() + self.wal.pending_bytes();
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
        let (request, payload) = match format {
            Format::Protobuf => (ExportTraceServiceRequest::decode(body.clone())?, body),
            Format::Json => {
                let request = weft_schemas::otlp_json::decode_traces(&body)
                    .map_err(|e| Error::InvalidJson(e.to_string()))?;
                let payload = Bytes::from(request.encode_to_vec());
                (request, payload)
            }
        };
        let converted = weft_schemas::spans::from_otlp(&request);
        self.commit(RecordKind::OtlpTraces, payload, converted)
            .await
    }

    /// Accepts an OTLP metrics export. `body` is the decompressed request body.
    pub async fn export_metrics(&self, body: Bytes, format: Format) -> Result<ExportOutcome> {
        self.admit()?;
        let (request, payload) = decode_metrics_body(body, format)?;
        let converted = weft_schemas::metrics::from_otlp(&request);
        self.commit(RecordKind::OtlpMetrics, payload, converted)
            .await
    }

    /// Accepts a Prometheus remote-write body (snappy-compressed `WriteRequest`).
    pub async fn export_prometheus(&self, snappy_body: Bytes) -> Result<ExportOutcome> {
        self.admit()?;
        let request = weft_schemas::prometheus::decode_remote_write(&snappy_body)?;
        let payload = Bytes::from(request.encode_to_vec());
        let converted = weft_schemas::prometheus::metrics_from_remote_write(&request);
        self.commit(RecordKind::PrometheusWrite, payload, converted)
            .await
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
                .append(kind, payload, (table, converted.batch))
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
        for table in Table::ALL {
            let store = self.store.clone();
            let stats = tokio::task::spawn_blocking(move || store.flush(table))
                .await
                .map_err(|e| Error::Storage(format!("flush task: {e}")))??;
            all.push(stats);
        }
        self.wal
            .truncate_through(self.store.flushed_through_all())?;
        Ok(all)
    }

    /// Flushes what is buffered so a restart has nothing to replay. Acknowledged data is
    /// safe without this (it is in the WAL); it only makes the next start faster.
    pub async fn shutdown(&self) -> Result<()> {
        self.flush_all().await.map(|_| ())
    }
}

/// A metrics export body as a request, plus the protobuf bytes to store or forward (the
/// body itself when it is protobuf; JSON is re-encoded once).
pub(crate) fn decode_metrics_body(
    body: Bytes,
    format: Format,
) -> Result<(ExportMetricsServiceRequest, Bytes)> {
    Ok(match format {
        Format::Protobuf => (ExportMetricsServiceRequest::decode(body.clone())?, body),
        Format::Json => {
            let request = weft_schemas::otlp_json::decode_metrics(&body)
                .map_err(|e| Error::InvalidJson(e.to_string()))?;
            let payload = Bytes::from(request.encode_to_vec());
            (request, payload)
        }
    })
}

fn record_table(kind: RecordKind) -> Table {
    match kind {
        RecordKind::OtlpTraces => Table::Spans,
        RecordKind::OtlpMetrics | RecordKind::PrometheusWrite => Table::Metrics,
    }
}

/// Decodes a WAL record again; conversion is deterministic, so the same rows come back.
fn convert_record(kind: RecordKind, payload: &Bytes) -> Result<Converted> {
    Ok(match kind {
        RecordKind::OtlpTraces => {
            weft_schemas::spans::from_otlp(&ExportTraceServiceRequest::decode(payload.clone())?)
        }
        RecordKind::OtlpMetrics => {
            weft_schemas::metrics::from_otlp(&ExportMetricsServiceRequest::decode(payload.clone())?)
        }
        RecordKind::PrometheusWrite => weft_schemas::prometheus::metrics_from_remote_write(
            &weft_schemas::prometheus::WriteRequest::decode(payload.clone())?,
        ),
    })
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
            let store = c.store.clone();
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
            if let Err(e) = c.wal.truncate_through(c.store.flushed_through_all()) {
                tracing::error!(error = %e, "wal truncation failed");
            }
        }
    }
}
