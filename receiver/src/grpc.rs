//! OTLP/gRPC receiver (`:4317`): TraceService/Export and MetricsService/Export.
//!
//! These are hand-written tonic services rather than the generated ones so the request
//! arrives as raw bytes: the WAL stores those bytes unchanged (no re-encoding) and the
//! decoder sees exactly what the client sent. tonic does framing, gzip, and the size cap
//! (measured after decompression); the cap is reported as RESOURCE_EXHAUSTED.
//!
//! Memory: the request body's bytes are charged to the in-flight budget frame by frame as
//! they arrive (`ChargedBody`), so unfinished messages count too; a stalled stream is cut
//! by the listener's body timeouts (DEADLINE_EXCEEDED) and its charge released. The handler
//! then charges the decompressed message and its decoded size ([`super::admit_decoded`]).
//!
//! The services are generic over [`OtlpSink`]: a collector node stores what it receives,
//! an ingest node forwards it to the owning collectors; the protocol handling is the same.

use std::convert::Infallible;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::{Buf, Bytes};
use opentelemetry_proto::tonic::collector::logs::v1::logs_service_server::SERVICE_NAME as LOGS_SERVICE;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::SERVICE_NAME as METRICS_SERVICE;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME as TRACE_SERVICE;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tonic::codec::{Codec, CompressionEncoding, DecodeBuf, Decoder};
use tonic::server::{Grpc, NamedService, UnaryService};

use super::{BodyKind, OtlpSink};
use crate::{Error, ExportOutcome, Format};

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'static>>;

/// The three OTLP services, ready for `tonic::transport::Server::add_service`.
pub fn services<K: OtlpSink>(
    sink: Arc<K>,
) -> (
    OtlpService<TraceSignal, K>,
    OtlpService<MetricsSignal, K>,
    OtlpService<LogsSignal, K>,
) {
    (
        OtlpService::new(std::sync::Arc::clone(&sink)),
        OtlpService::new(std::sync::Arc::clone(&sink)),
        OtlpService::new(sink),
    )
}

/// One OTLP signal: its service name, response type and how to export it.
pub trait Signal: Send + Sync + 'static {
    const SERVICE: &'static str;
    type Response: prost::Message + Default + Send + 'static;
    fn export<K: OtlpSink>(
        sink: Arc<K>,
        body: Bytes,
    ) -> impl Future<Output = Result<Self::Response, tonic::Status>> + Send;
}

#[derive(Debug)]
pub struct TraceSignal;
#[derive(Debug)]
pub struct MetricsSignal;
#[derive(Debug)]
pub struct LogsSignal;

impl Signal for TraceSignal {
    const SERVICE: &'static str = TRACE_SERVICE;
    type Response = ExportTraceServiceResponse;
    async fn export<K: OtlpSink>(
        sink: Arc<K>,
        body: Bytes,
    ) -> Result<Self::Response, tonic::Status> {
        let outcome = sink
            .export_traces(body, Format::Protobuf)
            .await
            .map_err(|e| e.to_grpc_status())?;
        Ok(ExportTraceServiceResponse {
            partial_success: partial(&outcome).map(|(rejected, message)| {
                ExportTracePartialSuccess {
                    rejected_spans: rejected,
                    error_message: message,
                }
            }),
        })
    }
}

impl Signal for MetricsSignal {
    const SERVICE: &'static str = METRICS_SERVICE;
    type Response = ExportMetricsServiceResponse;
    async fn export<K: OtlpSink>(
        sink: Arc<K>,
        body: Bytes,
    ) -> Result<Self::Response, tonic::Status> {
        let outcome = sink
            .export_metrics(body, Format::Protobuf)
            .await
            .map_err(|e| e.to_grpc_status())?;
        Ok(ExportMetricsServiceResponse {
            partial_success: partial(&outcome).map(|(rejected, message)| {
                ExportMetricsPartialSuccess {
                    rejected_data_points: rejected,
                    error_message: message,
                }
            }),
        })
    }
}

impl Signal for LogsSignal {
    const SERVICE: &'static str = LOGS_SERVICE;
    type Response = ExportTraceServiceResponse;
    async fn export<K: OtlpSink>(_: Arc<K>, _: Bytes) -> Result<Self::Response, tonic::Status> {
        Err(logs_not_supported().to_grpc_status())
    }
}

/// The documented answer to an OTLP logs export.
pub fn logs_not_supported() -> Error {
    Error::NotSupported {
        what: "otlp logs",
        hint: "weft stores traces and metrics; send logs to a log store",
    }
}

fn partial(outcome: &ExportOutcome) -> Option<(i64, String)> {
    (outcome.rejected > 0).then(|| {
        (
            i64::try_from(outcome.rejected).unwrap_or(i64::MAX),
            outcome.rejection_message.clone().unwrap_or_default(),
        )
    })
}

/// A tonic service for one OTLP signal, delivering to a `K` (a collector or an ingest node).
pub struct OtlpService<S, K> {
    sink: Arc<K>,
    signal: PhantomData<fn() -> S>,
}

impl<S, K> std::fmt::Debug for OtlpService<S, K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OtlpService")
    }
}

impl<S, K> Clone for OtlpService<S, K> {
    fn clone(&self) -> Self {
        Self {
            sink: std::sync::Arc::clone(&self.sink),
            signal: PhantomData,
        }
    }
}

impl<S, K> OtlpService<S, K> {
    fn new(sink: Arc<K>) -> Self {
        Self {
            sink,
            signal: PhantomData,
        }
    }
}

impl<S: Signal, K> NamedService for OtlpService<S, K> {
    const NAME: &'static str = S::SERVICE;
}

impl<S, K, B> tower::Service<http::Request<B>> for OtlpService<S, K>
where
    S: Signal,
    K: OtlpSink,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let sink = std::sync::Arc::clone(&self.sink);
        let is_export = req.uri().path() == format!("/{}/Export", S::SERVICE);
        Box::pin(async move {
            if !is_export {
                return Ok(tonic::Status::unimplemented("unknown method").into_http());
            }
            let limit = sink.receiver_config().max_request_bytes;
            let mut grpc = Grpc::new(RawRequestCodec::<S::Response>::default())
                .accept_compressed(CompressionEncoding::Gzip)
                .send_compressed(CompressionEncoding::Gzip)
                .max_decoding_message_size(limit)
                .max_encoding_message_size(usize::MAX);
            let charge = Charge::default();
            let req = req.map(|body| ChargedBody {
                inner: Box::pin(body),
                inflight: std::sync::Arc::clone(sink.inflight()),
                retry_after: Duration::from_secs(sink.receiver_config().retry_after_secs),
                charge: std::sync::Arc::clone(&charge),
            });
            let mut response = grpc.unary(ExportCall::<S, K>::new(sink, charge), req).await;
            too_large_is_resource_exhausted(&mut response);
            Ok(response)
        })
    }
}

/// tonic reports an uncompressed message over the cap as OUT_OF_RANGE (a compressed one
/// that inflates past it as RESOURCE_EXHAUSTED); OTLP clients expect RESOURCE_EXHAUSTED for
/// both, so the status is rewritten. Our own handler never returns OUT_OF_RANGE.
fn too_large_is_resource_exhausted(response: &mut http::Response<tonic::body::Body>) {
    let headers = response.headers_mut();
    if headers.get("grpc-status").map(|v| v.as_bytes()) == Some(b"11") {
        headers.insert(
            "grpc-status",
            http::HeaderValue::from(tonic::Code::ResourceExhausted as i32),
        );
    }
}

/// The budget charged for one request's wire bytes, handed from the body to the handler.
type Charge = Arc<parking_lot::Mutex<Option<OwnedSemaphorePermit>>>;

/// A request body that charges every data frame to the in-flight budget as it arrives.
struct ChargedBody<B> {
    inner: Pin<Box<B>>,
    inflight: Arc<Semaphore>,
    retry_after: Duration,
    charge: Charge,
}

impl<B> http_body::Body for ChargedBody<B>
where
    B: http_body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        match self.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let permits = u32::try_from(data.len()).unwrap_or(u32::MAX);
                    match std::sync::Arc::clone(&self.inflight).try_acquire_many_owned(permits) {
                        Ok(more) => {
                            let mut charge = self.charge.lock();
                            match charge.as_mut() {
                                Some(held) => held.merge(more),
                                None => *charge = Some(more),
                            }
                        }
                        Err(_) => {
                            let status = Error::Overloaded {
                                reason: "too many request bytes in flight",
                                retry_after: self.retry_after,
                                too_many_requests: true,
                            }
                            .to_grpc_status();
                            return Poll::Ready(Some(Err(Box::new(status))));
                        }
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                let e: Box<dyn std::error::Error + Send + Sync> = e.into();
                if crate::listen::is_body_timeout(&*e) {
                    let status = Error::BodyTimeout(e.to_string()).to_grpc_status();
                    return Poll::Ready(Some(Err(Box::new(status))));
                }
                Poll::Ready(Some(Err(e)))
            }
            other => other.map(|f| f.map(|r| r.map_err(Into::into))),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

struct ExportCall<S, K> {
    sink: Arc<K>,
    charge: Charge,
    signal: PhantomData<fn() -> S>,
}

impl<S, K> ExportCall<S, K> {
    fn new(sink: Arc<K>, charge: Charge) -> Self {
        Self {
            sink,
            charge,
            signal: PhantomData,
        }
    }
}

impl<S: Signal, K: OtlpSink> UnaryService<Bytes> for ExportCall<S, K> {
    type Response = S::Response;
    type Future = BoxFuture<tonic::Response<S::Response>, tonic::Status>;

    fn call(&mut self, request: tonic::Request<Bytes>) -> Self::Future {
        let sink = std::sync::Arc::clone(&self.sink);
        let wire = self.charge.lock().take();
        Box::pin(async move {
            let body = request.into_inner();
            // The message's bytes stay charged while it is processed: the wire bytes
            // already are (the same memory when it was not compressed); a compressed one
            // is charged what it grew to. Then its decoded size is charged too.
            let held = wire.as_ref().map_or(0, OwnedSemaphorePermit::num_permits);
            let grown = body.len().max(1).saturating_sub(held);
            let mut permit = match wire {
                Some(wire) if grown == 0 => wire,
                wire => {
                    let mut more = std::sync::Arc::clone(sink.inflight())
                        .try_acquire_many_owned(u32::try_from(grown).unwrap_or(u32::MAX))
                        .map_err(|_| super::overloaded(&*sink).to_grpc_status())?;
                    if let Some(wire) = wire {
                        more.merge(wire);
                    }
                    more
                }
            };
            let kind = match S::SERVICE {
                TRACE_SERVICE => Some(BodyKind::Traces(Format::Protobuf)),
                METRICS_SERVICE => Some(BodyKind::Metrics(Format::Protobuf)),
                _ => None,
            };
            if let Some(kind) = kind {
                super::admit_decoded(&*sink, &body, kind, &mut permit)
                    .await
                    .map_err(|e| e.to_grpc_status())?;
            }
            S::export(std::sync::Arc::clone(&sink), body)
                .await
                .map(tonic::Response::new)
        })
    }
}

/// Decodes nothing: hands the (decompressed) message bytes to the handler.
struct RawRequestCodec<R>(PhantomData<fn() -> R>);

impl<R> Default for RawRequestCodec<R> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<R: prost::Message + Send + 'static> Codec for RawRequestCodec<R> {
    type Encode = R;
    type Decode = Bytes;
    type Encoder = tonic_prost::ProstEncoder<R>;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        tonic_prost::ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawDecoder;

impl Decoder for RawDecoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        let len = buf.remaining();
        Ok(Some(buf.copy_to_bytes(len)))
    }
}
