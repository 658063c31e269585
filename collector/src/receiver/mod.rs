//! OTLP receivers: protocol handling only (framing, compression, size caps, media types).
//!
//! ```text
//!  OTLP/gRPC ─> grpc::services(sink) ─┐
//!  OTLP/HTTP ─> http::router(sink) ───┤ in-flight byte budget, size cap, decompression
//!                                     ▼
//!                           OtlpSink::export_{traces,metrics,prometheus}
//!                             ├─ Collector (`weft up`, `weft collector`): WAL + buffers
//!                             └─ Ingest (`weft ingest`): split by trace ID, forward to owners
//! ```
//!
//! Both receivers are generic over [`OtlpSink`] so the status codes, `Retry-After`,
//! `RetryInfo`, partial success and 405/413/415 answers are the same code for every role.

pub mod grpc;
pub mod http;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Semaphore;

use crate::config::ReceiverConfig;
use crate::{Collector, ExportOutcome, Format, Result};

/// Where the receivers hand what they accepted. `body` is always the decompressed request
/// body, already checked against `receiver_config().max_request_bytes`.
pub trait OtlpSink: Send + Sync + 'static {
    /// Size cap, in-flight budget and `Retry-After` the receivers apply.
    fn receiver_config(&self) -> &ReceiverConfig;

    /// Permits are request bytes: the receivers hold a body's bytes against this semaphore
    /// while it is processed and answer 429 / UNAVAILABLE when it is exhausted.
    fn inflight(&self) -> &Arc<Semaphore>;

    /// An OTLP `ExportTraceServiceRequest` (protobuf or OTLP/JSON).
    fn export_traces(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send;

    /// An OTLP `ExportMetricsServiceRequest` (protobuf or OTLP/JSON).
    fn export_metrics(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send;

    /// A Prometheus remote-write body, still snappy-compressed.
    fn export_prometheus(
        &self,
        snappy_body: Bytes,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send;
}

impl OtlpSink for Collector {
    fn receiver_config(&self) -> &ReceiverConfig {
        &self.config().receiver
    }

    fn inflight(&self) -> &Arc<Semaphore> {
        Collector::inflight(self)
    }

    fn export_traces(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_traces(self, body, format)
    }

    fn export_metrics(
        &self,
        body: Bytes,
        format: Format,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_metrics(self, body, format)
    }

    fn export_prometheus(
        &self,
        snappy_body: Bytes,
    ) -> impl Future<Output = Result<ExportOutcome>> + Send {
        Collector::export_prometheus(self, snappy_body)
    }
}
