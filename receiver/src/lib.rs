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
//!
//! Admission counts memory, not only encoded bytes: body bytes are charged to the in-flight
//! budget as they arrive (a stalled upload is cut by the listener's body timeouts, which
//! releases them), then [`admit_decoded`] scans the body without decoding it
//! ([`weft_schemas::shape`]) and charges what decoding will build. Too many items, or more
//! than the whole budget: 413 / RESOURCE_EXHAUSTED; not enough budget left right now: 429 /
//! UNAVAILABLE with a retry delay.

pub mod config;
pub mod error;
pub mod grpc;
pub mod http;
pub mod listen;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_schemas::shape::{self, Shape};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use prost::Message as _;

pub use crate::config::ReceiverConfig;
pub use crate::error::{Error, Result};

/// What a body holds, for [`admit_decoded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    Traces(Format),
    Metrics(Format),
    /// An uncompressed remote-write `WriteRequest`.
    RemoteWrite,
}

/// Scans `body` (decompressed) and charges its decoded size to the in-flight budget,
/// adding to `permit`. Refuses, before anything is decoded: a malformed body (400), more
/// than `max_items_per_request` items or a decoded size over the whole budget (413), a
/// decoded size that does not fit in what is left of the budget now (429 + retry).
pub async fn admit_decoded<K: OtlpSink>(
    sink: &K,
    body: &Bytes,
    kind: BodyKind,
    permit: &mut OwnedSemaphorePermit,
) -> Result<Shape> {
    // A big body's scan (tens of ms) runs off the async workers, so small exports beside it
    // are not held up.
    let shape = if body.len() > SCAN_INLINE_BYTES {
        let body = body.clone();
        tokio::task::spawn_blocking(move || scan(&body, kind))
            .await
            .map_err(|e| Error::BodyRead(format!("scanning the body: {e}")))?
    } else {
        scan(body, kind)
    }?;
    let config = sink.receiver_config();
    if shape.items() > config.max_items_per_request {
        return Err(Error::TooManyItems {
            items: shape.items(),
            limit: config.max_items_per_request,
        });
    }
    let budget = config.max_inflight_bytes.min(Semaphore::MAX_PERMITS);
    let decoded = shape.decoded_bytes.max(1);
    let permits = match u32::try_from(decoded) {
        Ok(p) if decoded <= budget as u64 => p,
        _ => {
            return Err(Error::DecodesTooLarge {
                decoded,
                limit: budget,
            });
        }
    };
    let more = std::sync::Arc::clone(sink.inflight())
        .try_acquire_many_owned(permits)
        .map_err(|_| overloaded(sink))?;
    permit.merge(more);
    Ok(shape)
}

/// Bodies up to this size are scanned on the async worker.
const SCAN_INLINE_BYTES: usize = 256 << 10;

fn scan(body: &[u8], kind: BodyKind) -> weft_schemas::Result<Shape> {
    match kind {
        BodyKind::Traces(Format::Protobuf) => shape::scan_traces(body),
        BodyKind::Traces(Format::Json) => shape::scan_traces_json(body),
        BodyKind::Metrics(Format::Protobuf) => shape::scan_metrics(body),
        BodyKind::Metrics(Format::Json) => shape::scan_metrics_json(body),
        BodyKind::RemoteWrite => shape::scan_remote_write(body),
    }
}

/// The back-pressure answer when the in-flight budget is spent.
pub(crate) fn overloaded<K: OtlpSink>(sink: &K) -> Error {
    Error::Overloaded {
        reason: "too many request bytes in flight",
        retry_after: std::time::Duration::from_secs(sink.receiver_config().retry_after_secs),
        too_many_requests: true,
    }
}

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

/// A metrics export body as a request, plus the protobuf bytes to store or forward (the
/// body itself when it is protobuf; JSON is re-encoded once).
pub fn decode_metrics_body(
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
