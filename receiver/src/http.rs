//! OTLP/HTTP receiver (`:4318`): `POST /v1/traces`, `/v1/metrics`, `/v1/logs`, plus
//! Prometheus remote-write at `POST /api/v1/write`.
//!
//! ```text
//!  request ─> Content-Type (protobuf | json, else 415) ─> Content-Encoding (gzip | identity, else 415)
//!          ─> stream the body (chunked or not) against the in-flight budget (429) and the cap (413);
//!             memory follows the bytes that arrive, never the announced Content-Length;
//!             a body cut by the listener's timeouts gets 408 and its budget back
//!          ─> gunzip with the cap applied to the *decompressed* size (413)
//!          ─> admit_decoded: scan, item cap and decoded size (413), budget for it (429)
//!          ─> OtlpSink::export_* ─> 200 + Export*ServiceResponse (partial success) in the
//!             request's encoding, or an error status with a google.rpc.Status body
//! ```
//! Other methods get 405 (axum's method router). Retryable errors carry `Retry-After`.
//! The router is generic over [`OtlpSink`], so collector and ingest nodes answer alike.

use std::io::Read as _;
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::{Bytes, BytesMut};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use http_body_util::BodyExt as _;
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsPartialSuccess, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceResponse,
};
use prost::Message as _;
use tokio::sync::OwnedSemaphorePermit;

use super::{BodyKind, OtlpSink, admit_decoded, overloaded};
use crate::{Error, ExportOutcome, Format};

const PROTOBUF: &str = "application/x-protobuf";
const JSON: &str = "application/json";

/// The OTLP/HTTP routes, delivering to `sink` (a collector or an ingest node).
pub fn router<K: OtlpSink>(sink: Arc<K>) -> Router {
    Router::new()
        .route("/v1/traces", post(traces::<K>))
        .route("/v1/metrics", post(metrics::<K>))
        .route("/v1/logs", post(logs))
        .route("/api/v1/write", post(prometheus_write::<K>))
        .with_state(sink)
}

async fn traces<K: OtlpSink>(State(c): State<Arc<K>>, headers: HeaderMap, body: Body) -> Response {
    export(&*c, &headers, body, Signal::Traces).await
}

async fn metrics<K: OtlpSink>(State(c): State<Arc<K>>, headers: HeaderMap, body: Body) -> Response {
    export(&*c, &headers, body, Signal::Metrics).await
}

#[derive(Debug, Clone, Copy)]
enum Signal {
    Traces,
    Metrics,
}

async fn export<K: OtlpSink>(c: &K, headers: &HeaderMap, body: Body, signal: Signal) -> Response {
    let format = match request_format(headers) {
        Ok(f) => f,
        Err(e) => return error_response(&e, Format::Json),
    };
    let (body, mut permit) = match read_body(c, headers, body).await {
        Ok(b) => b,
        Err(e) => return error_response(&e, format),
    };
    let kind = match signal {
        Signal::Traces => BodyKind::Traces(format),
        Signal::Metrics => BodyKind::Metrics(format),
    };
    if let Err(e) = admit_decoded(c, &body, kind, &mut permit).await {
        return error_response(&e, format);
    }
    let result = match signal {
        Signal::Traces => c.export_traces(body, format).await,
        Signal::Metrics => c.export_metrics(body, format).await,
    };
    match result {
        Ok(outcome) => success_response(format, encode_outcome(signal, format, &outcome)),
        Err(e) => error_response(&e, format),
    }
}

/// The `Export*ServiceResponse`, with partial success when something was rejected.
fn encode_outcome(signal: Signal, format: Format, outcome: &ExportOutcome) -> Vec<u8> {
    let rejected = i64::try_from(outcome.rejected).unwrap_or(i64::MAX);
    let message = outcome.rejection_message.as_deref();
    match (signal, format) {
        (Signal::Traces, Format::Protobuf) => ExportTraceServiceResponse {
            partial_success: (outcome.rejected > 0).then(|| ExportTracePartialSuccess {
                rejected_spans: rejected,
                error_message: message.unwrap_or_default().to_owned(),
            }),
        }
        .encode_to_vec(),
        (Signal::Metrics, Format::Protobuf) => ExportMetricsServiceResponse {
            partial_success: (outcome.rejected > 0).then(|| ExportMetricsPartialSuccess {
                rejected_data_points: rejected,
                error_message: message.unwrap_or_default().to_owned(),
            }),
        }
        .encode_to_vec(),
        (Signal::Traces, Format::Json) => {
            weft_schemas::otlp_json::encode_trace_response(outcome.rejected, message)
        }
        (Signal::Metrics, Format::Json) => {
            weft_schemas::otlp_json::encode_metrics_response(outcome.rejected, message)
        }
    }
}

/// Logs are not stored: answered 501 with an explanation, never silently dropped.
async fn logs(headers: HeaderMap) -> Response {
    let format = request_format(&headers).unwrap_or(Format::Json);
    error_response(&super::grpc::logs_not_supported(), format)
}

/// Prometheus remote-write 1.0: snappy-compressed protobuf `WriteRequest`; 204 on success.
async fn prometheus_write<K: OtlpSink>(
    State(c): State<Arc<K>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let encoding = header_str(&headers, header::CONTENT_ENCODING).unwrap_or("snappy");
    if !encoding.eq_ignore_ascii_case("snappy") {
        return plain_error(&Error::UnsupportedEncoding(encoding.to_owned()));
    }
    let limit = c.receiver_config().max_request_bytes;
    let (body, mut permit) = match read_raw(&*c, &headers, body, limit).await {
        Ok(b) => b,
        Err(e) => return plain_error(&e),
    };
    if let Err(e) = admit_remote_write(&*c, &body, limit, &mut permit).await {
        return plain_error(&e);
    }
    match c.export_prometheus(body).await {
        Ok(outcome) if outcome.rejected > 0 && outcome.accepted == 0 => (
            StatusCode::BAD_REQUEST,
            outcome.rejection_message.unwrap_or_default(),
        )
            .into_response(),
        Ok(_) => StatusCode::NO_CONTENT.into_response(),
        Err(e) => plain_error(&e),
    }
}

/// Checks the snappy body's decompressed size against the cap, then decompresses it once
/// (charged to the budget) to scan it; the sink decodes the compressed body itself.
async fn admit_remote_write<K: OtlpSink>(
    c: &K,
    body: &[u8],
    limit: usize,
    permit: &mut OwnedSemaphorePermit,
) -> Result<(), Error> {
    let len = match snap::raw::decompress_len(body) {
        Ok(len) if len > limit => return Err(Error::TooLarge { limit }),
        Ok(len) => len,
        Err(e) => return Err(Error::InvalidCompression(format!("snappy: {e}"))),
    };
    let more = std::sync::Arc::clone(c.inflight())
        .try_acquire_many_owned(u32::try_from(len.max(1)).unwrap_or(u32::MAX))
        .map_err(|_| overloaded(c))?;
    permit.merge(more);
    let raw = snap::raw::Decoder::new()
        .decompress_vec(body)
        .map_err(|e| Error::InvalidCompression(format!("snappy: {e}")))?;
    admit_decoded(c, &Bytes::from(raw), BodyKind::RemoteWrite, permit)
        .await
        .map(|_| ())
}

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Protobuf or JSON, from Content-Type (parameters such as `charset` are ignored).
fn request_format(headers: &HeaderMap) -> Result<Format, Error> {
    let content_type = header_str(headers, header::CONTENT_TYPE).unwrap_or("");
    let media_type = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match media_type.as_str() {
        "application/x-protobuf" | "application/protobuf" => Ok(Format::Protobuf),
        "application/json" => Ok(Format::Json),
        _ => Err(Error::UnsupportedMediaType(content_type.to_owned())),
    }
}

/// A body error: the listener's timeouts (408) or a broken connection (400).
fn body_error(error: axum::Error) -> Error {
    if crate::listen::is_body_timeout(&error) {
        Error::BodyTimeout(error.to_string())
    } else {
        Error::BodyRead(error.to_string())
    }
}

/// Reads the body as sent (possibly chunked), holding its bytes against the in-flight
/// budget; refuses it once it passes `limit`.
async fn read_raw<K: OtlpSink>(
    c: &K,
    headers: &HeaderMap,
    mut body: Body,
    limit: usize,
) -> Result<(Bytes, OwnedSemaphorePermit), Error> {
    let declared =
        header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(Error::TooLarge { limit });
    }
    let mut permit = std::sync::Arc::clone(c.inflight())
        .try_acquire_many_owned(1)
        .map_err(|_| overloaded(c))?;
    // Never sized from the announced Content-Length: memory follows the bytes that arrive
    // (2,000 requests announcing 16 MB and sending one byte must not reserve 32 GB).
    let mut buf = BytesMut::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(body_error)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if buf.len() + data.len() > limit {
            return Err(Error::TooLarge { limit });
        }
        let more = std::sync::Arc::clone(c.inflight())
            .try_acquire_many_owned(u32::try_from(data.len()).unwrap_or(u32::MAX))
            .map_err(|_| overloaded(c))?;
        permit.merge(more);
        buf.extend_from_slice(&data);
    }
    Ok((buf.freeze(), permit))
}

/// Reads and decompresses an OTLP body; the cap applies after decompression.
async fn read_body<K: OtlpSink>(
    c: &K,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Bytes, OwnedSemaphorePermit), Error> {
    let limit = c.receiver_config().max_request_bytes;
    let encoding = header_str(headers, header::CONTENT_ENCODING)
        .unwrap_or("identity")
        .to_ascii_lowercase();
    match encoding.as_str() {
        "" | "identity" | "none" => read_raw(c, headers, body, limit).await,
        "gzip" | "x-gzip" => {
            let (compressed, mut permit) = read_raw(c, headers, body, limit).await?;
            let mut decoder = flate2::read::MultiGzDecoder::new(&compressed[..]);
            let mut out = Vec::with_capacity((compressed.len() * 4).min(limit));
            decoder
                .by_ref()
                .take(limit as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| Error::InvalidCompression(format!("gzip: {e}")))?;
            if out.len() > limit {
                return Err(Error::TooLarge { limit });
            }
            let more = std::sync::Arc::clone(c.inflight())
                .try_acquire_many_owned(u32::try_from(out.len().max(1)).unwrap_or(u32::MAX))
                .map_err(|_| overloaded(c))?;
            permit.merge(more);
            Ok((Bytes::from(out), permit))
        }
        other => Err(Error::UnsupportedEncoding(other.to_owned())),
    }
}

fn success_response(format: Format, body: Vec<u8>) -> Response {
    let content_type = match format {
        Format::Protobuf => PROTOBUF,
        Format::Json => JSON,
    };
    ([(header::CONTENT_TYPE, content_type)], body).into_response()
}

/// An OTLP/HTTP error: the status code, `Retry-After` when retryable, and a
/// `google.rpc.Status` body in the request's encoding.
pub fn error_response(error: &Error, format: Format) -> Response {
    let status = error.http_status();
    let grpc_code = error.to_grpc_status().code() as i32;
    let message = error.to_string();
    let (content_type, body) = match format {
        Format::Protobuf => (
            PROTOBUF,
            tonic_types::pb::Status {
                code: grpc_code,
                message,
                details: Vec::new(),
            }
            .encode_to_vec(),
        ),
        Format::Json => (
            JSON,
            serde_json::to_vec(&serde_json::json!({ "code": grpc_code, "message": message }))
                .unwrap_or_default(),
        ),
    };
    let mut response = (status, [(header::CONTENT_TYPE, content_type)], body).into_response();
    add_retry_after(error, &mut response);
    if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
        tracing::warn!(status = status.as_u16(), error = %error, "export refused");
    } else {
        tracing::debug!(status = status.as_u16(), error = %error, "export refused");
    }
    response
}

fn plain_error(error: &Error) -> Response {
    let mut response = (error.http_status(), error.to_string()).into_response();
    add_retry_after(error, &mut response);
    response
}

fn add_retry_after(error: &Error, response: &mut Response) {
    if let Some(delay) = error.retry_after() {
        let secs = delay.as_secs().max(1);
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn content_types_are_recognised() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/json; charset=utf-8".parse().unwrap(),
        );
        assert_eq!(request_format(&headers).unwrap(), Format::Json);
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-protobuf".parse().unwrap(),
        );
        assert_eq!(request_format(&headers).unwrap(), Format::Protobuf);
        headers.insert(header::CONTENT_TYPE, "text/plain".parse().unwrap());
        assert!(matches!(
            request_format(&headers),
            Err(Error::UnsupportedMediaType(_))
        ));
    }

    #[test]
    fn retryable_errors_carry_retry_after() {
        let err = Error::Overloaded {
            reason: "test",
            retry_after: Duration::from_secs(3),
            too_many_requests: true,
        };
        let response = error_response(&err, Format::Protobuf);
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(response.headers()[header::RETRY_AFTER], "3");
    }
}
