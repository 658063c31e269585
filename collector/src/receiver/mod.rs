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

pub mod grpc;
pub mod http;

use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use weft_schemas::shape::{self, Shape};

use crate::config::ReceiverConfig;
use crate::{Collector, Error, ExportOutcome, Format, Result};

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
    let more = sink
        .inflight()
        .clone()
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

#[cfg(test)]
mod tests {
    use prost::Message as _;
    use weft_schemas::prometheus::{Label, Sample, TimeSeries, WriteRequest};

    use super::*;
    use crate::CollectorConfig;

    fn collector(dir: &std::path::Path) -> Arc<Collector> {
        Collector::open(CollectorConfig {
            data_dir: dir.to_path_buf(),
            ..CollectorConfig::default()
        })
        .unwrap()
    }

    fn permit(c: &Collector) -> OwnedSemaphorePermit {
        c.inflight().clone().try_acquire_many_owned(1).unwrap()
    }

    #[tokio::test]
    async fn decode_bombs_are_refused_before_decoding() {
        let dir = tempfile::tempdir().unwrap();
        let c = collector(dir.path());
        let budget = c.inflight().available_permits();

        // 600k empty spans: over max_items_per_request.
        let spans: Vec<u8> = std::iter::repeat_n([0x12u8, 0x00], 600_000)
            .flatten()
            .collect();
        let mut scope = vec![0x12];
        prost::encoding::encode_varint(spans.len() as u64, &mut scope);
        scope.extend(spans);
        let mut body = vec![0x0a];
        prost::encoding::encode_varint(scope.len() as u64, &mut body);
        body.extend(scope);
        let mut p = permit(&c);
        let body = Bytes::from(body);
        let err = admit_decoded(&*c, &body, BodyKind::Traces(Format::Protobuf), &mut p)
            .await
            .unwrap_err();
        assert!(
            matches!(err, Error::TooManyItems { items: 600_000, .. }),
            "{err}"
        );
        assert_eq!(err.http_status(), ::http::StatusCode::PAYLOAD_TOO_LARGE);

        // Remote write: one series with 1 MB of labels and 50k samples becomes 50 GB once
        // the labels are copied onto every sample.
        let req = WriteRequest {
            timeseries: vec![TimeSeries {
                labels: (0..10_000)
                    .map(|i| Label {
                        name: format!("l{i}"),
                        value: "v".repeat(100),
                    })
                    .collect(),
                samples: vec![Sample::default(); 50_000],
                ..Default::default()
            }],
            metadata: Vec::new(),
        };
        let err = admit_decoded(
            &*c,
            &Bytes::from(req.encode_to_vec()),
            BodyKind::RemoteWrite,
            &mut p,
        )
        .await
        .unwrap_err();
        assert!(matches!(err, Error::DecodesTooLarge { .. }), "{err}");
        assert_eq!(err.to_grpc_status().code(), tonic::Code::ResourceExhausted);

        // Truncated protobuf: 400 before decoding.
        let err = admit_decoded(
            &*c,
            &body.slice(..body.len() - 1),
            BodyKind::Traces(Format::Protobuf),
            &mut p,
        )
        .await
        .unwrap_err();
        assert_eq!(err.http_status(), ::http::StatusCode::BAD_REQUEST, "{err}");

        // Nothing was charged by the refusals; a normal request is charged its decoded size.
        assert_eq!(c.inflight().available_permits(), budget - 1);
        let shape = admit_decoded(
            &*c,
            &Bytes::from_static(b"{}"),
            BodyKind::Traces(Format::Json),
            &mut p,
        )
        .await
        .unwrap();
        assert_eq!(shape.items(), 0);
        assert!(c.inflight().available_permits() < budget - 1);
        drop(p);
        assert_eq!(c.inflight().available_permits(), budget);
    }
}
