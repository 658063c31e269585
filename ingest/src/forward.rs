//! One call from an ingest node to a collector node, and how its failure is classified.
//!
//! ```text
//!  traces / metrics ── raw-bytes tonic client ──> <grpc_addr> TraceService|MetricsService/Export
//!                      (the body is already an encoded Export*ServiceRequest: no re-encoding)
//!  remote-write ────── HTTP POST (snappy, x-protobuf) ──> <http_addr>/api/v1/write
//!
//!  every call: deadline = min(request_timeout, what is left of the delivery budget),
//!              sent as `grpc-timeout` and enforced by a local timer as well
//!  outcome:  Ok ─ acknowledged (durable in the collector's WAL)
//!            Retryable ─ UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, transport
//!                        errors, HTTP 429/5xx; carries the server's RetryInfo/Retry-After
//!            Permanent ─ anything else (INVALID_ARGUMENT, HTTP 4xx): retrying cannot help
//! ```

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use http::uri::PathAndQuery;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::SERVICE_NAME as METRICS_SERVICE;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::SERVICE_NAME as TRACE_SERVICE;
use rand::Rng as _;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::transport::{Channel, Endpoint};

use super::error::ClientError;
use super::spool::SignalKind;
use weft_cluster::Member;

/// Why a call did not succeed.
#[derive(Debug, Clone)]
pub(crate) enum CallError {
    /// Worth another try; `retry_after` is the server's own hint when it gave one.
    Retryable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// The collector refused the data itself; trying again will not change that.
    Permanent { code: tonic::Code, message: String },
}

impl CallError {
    fn retryable(message: impl Into<String>) -> Self {
        CallError::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// Connections to one collector node, for its current addresses.
#[derive(Debug, Clone)]
pub(crate) struct NodeClient {
    pub grpc_addr: String,
    pub http_addr: String,
    channel: Channel,
    http: reqwest::Client,
}

impl NodeClient {
    /// Connects lazily: nothing happens until the first call, and a broken connection is
    /// re-established by the channel on the next call.
    pub(crate) fn new(
        member: &Member,
        http: reqwest::Client,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let endpoint = Endpoint::from_shared(format!("http://{}", member.grpc_addr))
            .map_err(|error| ClientError::BadGrpcAddress {
                addr: member.grpc_addr.clone(),
                error,
            })?
            .connect_timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5));
        Ok(Self {
            grpc_addr: member.grpc_addr.clone(),
            http_addr: member.http_addr.clone(),
            channel: endpoint.connect_lazy(),
            http,
        })
    }

    pub(crate) fn matches(&self, member: &Member) -> bool {
        self.grpc_addr == member.grpc_addr && self.http_addr == member.http_addr
    }

    /// Sends one batch with a deadline of `timeout`.
    pub(crate) async fn send(
        &self,
        signal: SignalKind,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let call = async {
            match signal {
                SignalKind::Traces => self.grpc(TRACE_SERVICE, payload, timeout).await,
                SignalKind::Metrics => self.grpc(METRICS_SERVICE, payload, timeout).await,
                SignalKind::Prometheus => self.remote_write(payload, timeout).await,
            }
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(CallError::retryable(format!(
                "no answer within {}ms",
                timeout.as_millis()
            ))),
        }
    }

    async fn grpc(
        &self,
        service: &'static str,
        payload: Bytes,
        timeout: Duration,
    ) -> Result<(), CallError> {
        let mut grpc = tonic::client::Grpc::new(self.channel.clone())
            .max_decoding_message_size(1 << 20)
            .max_encoding_message_size(usize::MAX);
        grpc.ready()
            .await
            .map_err(|e| CallError::retryable(format!("connecting to {}: {e}", self.grpc_addr)))?;
        let path = PathAndQuery::try_from(format!("/{service}/Export"))
            .map_err(|e| CallError::retryable(format!("bad path: {e}")))?;
        let mut request = tonic::Request::new(payload);
        request.set_timeout(timeout);
        match grpc.unary(request, path, RawCodec).await {
            Ok(_response) => Ok(()),
            Err(status) => Err(classify_status(&status)),
        }
    }

    async fn remote_write(&self, snappy_body: Bytes, timeout: Duration) -> Result<(), CallError> {
        let url = format!("http://{}/api/v1/write", self.http_addr);
        let response = self
            .http
            .post(&url)
            .timeout(timeout)
            .header(http::header::CONTENT_TYPE, "application/x-protobuf")
            .header(http::header::CONTENT_ENCODING, "snappy")
            .header("X-Prometheus-Remote-Write-Version", "0.1.0")
            .body(snappy_body)
            .send()
            .await
            .map_err(|e| CallError::retryable(format!("POST {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.unwrap_or_default();
        let message = format!("POST {url}: {status}: {}", text.trim());
        if status == http::StatusCode::TOO_MANY_REQUESTS
            || status == http::StatusCode::REQUEST_TIMEOUT
            || status.is_server_error()
        {
            Err(CallError::Retryable {
                message,
                retry_after,
            })
        } else {
            Err(CallError::Permanent {
                code: tonic::Code::InvalidArgument,
                message,
            })
        }
    }
}

/// Transient: the node is down, overloaded, slow, or the connection broke (tonic reports
/// transport failures as UNAVAILABLE, UNKNOWN or INTERNAL). Everything else is the node
/// refusing the data itself.
fn classify_status(status: &tonic::Status) -> CallError {
    use tonic::Code;
    let message = format!("{:?}: {}", status.code(), status.message());
    match status.code() {
        Code::Unavailable
        | Code::ResourceExhausted
        | Code::DeadlineExceeded
        | Code::Aborted
        | Code::Cancelled
        | Code::Unknown
        | Code::Internal => CallError::Retryable {
            message,
            retry_after: retry_info(status),
        },
        code => CallError::Permanent { code, message },
    }
}

/// The `RetryInfo` delay of a status, wherever the server put it.
fn retry_info(status: &tonic::Status) -> Option<Duration> {
    use prost::Message as _;
    use tonic_types::StatusExt as _;
    if let Some(delay) = status.get_details_retry_info().and_then(|r| r.retry_delay) {
        return Some(delay);
    }
    let raw = status.metadata().get_bin("google.rpc.retryinfo-bin")?;
    let bytes = raw.to_bytes().ok()?;
    let info = tonic_types::pb::RetryInfo::decode(bytes).ok()?;
    let d = info.retry_delay?;
    Some(Duration::new(
        u64::try_from(d.seconds).ok()?,
        u32::try_from(d.nanos).unwrap_or(0),
    ))
}

/// Exponential backoff with full jitter: uniform in `[0, min(max, base * 2^attempt))`, so
/// ingest nodes retrying the same collector spread out instead of arriving in waves.
pub(crate) fn backoff(base: Duration, max: Duration, attempt: u32) -> Duration {
    let cap = base
        .saturating_mul(1u32.checked_shl(attempt.min(20)).unwrap_or(u32::MAX))
        .min(max);
    let nanos = u64::try_from(cap.as_nanos()).unwrap_or(u64::MAX).max(1);
    Duration::from_nanos(rand::rng().random_range(0..nanos))
}

/// Sends a message that is already encoded and returns the response bytes undecoded
/// (the client-side mirror of the receiver's raw codec).
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawEncoder;
    type Decoder = RawDecoder;

    fn encoder(&mut self) -> Self::Encoder {
        RawEncoder
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawDecoder
    }
}

struct RawEncoder;

impl Encoder for RawEncoder {
    type Item = Bytes;
    type Error = tonic::Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        dst.put(item);
        Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use weft_receiver::Error;

    #[test]
    fn backoff_is_jittered_below_its_cap() {
        let (base, max) = (Duration::from_millis(10), Duration::from_millis(100));
        for attempt in 0..30 {
            let cap = (base * 2u32.pow(attempt.min(10))).min(max);
            for _ in 0..20 {
                assert!(backoff(base, max, attempt) < cap);
            }
        }
    }

    #[test]
    fn collector_answers_are_classified() {
        let overloaded = Error::Overloaded {
            reason: "test",
            retry_after: Duration::from_secs(3),
            too_many_requests: false,
        }
        .to_grpc_status();
        match classify_status(&overloaded) {
            CallError::Retryable { retry_after, .. } => {
                assert_eq!(retry_after, Some(Duration::from_secs(3)))
            }
            other => panic!("{other:?}"),
        }
        let bad = Error::InvalidJson("x".into()).to_grpc_status();
        assert!(matches!(
            classify_status(&bad),
            CallError::Permanent {
                code: tonic::Code::InvalidArgument,
                ..
            }
        ));
        let refused = tonic::Status::unavailable("tcp connect error");
        assert!(matches!(
            classify_status(&refused),
            CallError::Retryable {
                retry_after: None,
                ..
            }
        ));
    }
}
