//! The receivers' one error type and its single mapping to HTTP and gRPC statuses.
//!
//! OTLP clients decide whether to retry from the status alone, so this mapping is the
//! contract: back-pressure and transient failures are retryable (HTTP 429/503 with
//! `Retry-After`, gRPC UNAVAILABLE with `RetryInfo`); bad input is permanent (4xx,
//! INVALID_ARGUMENT, RESOURCE_EXHAUSTED for oversized bodies).

use std::time::Duration;

use http::StatusCode;
use prost::Message as _;

/// Every way a sink (collector or ingest node) can refuse or fail a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid protobuf body: {0}")]
    InvalidProtobuf(#[from] prost::DecodeError),
    #[error("invalid json body: {0}")]
    InvalidJson(String),
    #[error("request body exceeds the limit of {limit} bytes (measured after decompression)")]
    TooLarge { limit: usize },
    #[error("unsupported content type {0:?}: use application/x-protobuf or application/json")]
    UnsupportedMediaType(String),
    #[error("unsupported content encoding {0:?}: use gzip or none")]
    UnsupportedEncoding(String),
    #[error("invalid compressed body: {0}")]
    InvalidCompression(String),
    #[error("error reading request body: {0}")]
    BodyRead(String),
    /// The client sent its body too slowly (`listen.body_idle_timeout_secs` /
    /// `listen.body_timeout_secs`).
    #[error("{0}")]
    BodyTimeout(String),
    #[error(
        "request holds {items} spans and data points, more than \
         receiver.max_items_per_request = {limit}; send smaller batches"
    )]
    TooManyItems { items: u64, limit: u64 },
    #[error(
        "request would take about {decoded} bytes once decoded, more than \
         receiver.max_inflight_bytes = {limit}; send smaller batches"
    )]
    DecodesTooLarge { decoded: u64, limit: usize },
    #[error("{what} is not supported by weft: {hint}")]
    NotSupported {
        what: &'static str,
        hint: &'static str,
    },
    /// Weft cannot take the data right now; the client should retry later.
    #[error("weft is overloaded ({reason}); retry after {}s", retry_after.as_secs())]
    Overloaded {
        reason: &'static str,
        retry_after: Duration,
        /// `true` for "too many requests from you" (429), `false` for "server full" (503).
        too_many_requests: bool,
    },
    #[error("write-ahead log unavailable: {0}")]
    Wal(String),
    #[error("weft is shutting down")]
    ShuttingDown,
    #[error("storage error: {0}")]
    Storage(String),
    /// A configuration value is invalid (at start, or in a reload that was refused).
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Schema(#[from] weft_schemas::Error),
    /// A collector node refused forwarded data outright (not a transient failure). Ingest
    /// validates first, so this means a version mismatch or a misconfigured node.
    #[error("collector node {node} refused the data ({code:?}): {message}")]
    Forward {
        node: String,
        code: tonic::Code,
        message: String,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Storage failures keep their meaning for clients: an unavailable WAL and a failed write
/// are retryable server errors, shutdown is shutdown.
impl From<weft_storage::Error> for Error {
    fn from(e: weft_storage::Error) -> Self {
        match e {
            weft_storage::Error::Wal(message) => Self::Wal(message),
            weft_storage::Error::ShuttingDown => Self::ShuttingDown,
            weft_storage::Error::Storage(message) => Self::Storage(message),
            weft_storage::Error::WalWrite { step, error } => Self::Wal(format!("{step}: {error}")),
            other => Self::Storage(other.to_string()),
        }
    }
}

/// How long clients are told to wait when the server itself is the problem.
const SERVER_RETRY_AFTER: Duration = Duration::from_secs(1);

impl Error {
    /// The HTTP status an OTLP/HTTP client receives for this error.
    pub fn http_status(&self) -> StatusCode {
        match self {
            Error::InvalidProtobuf(_)
            | Error::InvalidJson(_)
            | Error::InvalidCompression(_)
            | Error::BodyRead(_)
            | Error::Schema(_) => StatusCode::BAD_REQUEST,
            Error::TooLarge { .. } | Error::TooManyItems { .. } | Error::DecodesTooLarge { .. } => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            Error::BodyTimeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::UnsupportedMediaType(_) | Error::UnsupportedEncoding(_) => {
                StatusCode::UNSUPPORTED_MEDIA_TYPE
            }
            Error::NotSupported { .. } => StatusCode::NOT_IMPLEMENTED,
            Error::Overloaded {
                too_many_requests: true,
                ..
            } => StatusCode::TOO_MANY_REQUESTS,
            Error::Overloaded { .. } | Error::Wal(_) | Error::ShuttingDown | Error::Storage(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Error::Forward { code, .. } if *code == tonic::Code::InvalidArgument => {
                StatusCode::BAD_REQUEST
            }
            Error::Forward { .. } => StatusCode::BAD_GATEWAY,
            Error::Config(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// When set, the client should retry after this long (HTTP `Retry-After`, gRPC `RetryInfo`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Error::Overloaded { retry_after, .. } => Some(*retry_after),
            Error::Wal(_) | Error::ShuttingDown | Error::Storage(_) => Some(SERVER_RETRY_AFTER),
            Error::Forward { code, .. } if *code != tonic::Code::InvalidArgument => {
                Some(SERVER_RETRY_AFTER)
            }
            _ => None,
        }
    }

    /// The gRPC status an OTLP/gRPC client receives for this error.
    ///
    /// Retryable errors carry `RetryInfo` twice: inside `grpc-status-details-bin` (read by
    /// the Go and Java SDKs) and as `google.rpc.retryinfo-bin` metadata (read by others).
    pub fn to_grpc_status(&self) -> tonic::Status {
        use tonic::Code;
        let code = match self {
            Error::InvalidProtobuf(_)
            | Error::InvalidJson(_)
            | Error::InvalidCompression(_)
            | Error::BodyRead(_)
            | Error::UnsupportedMediaType(_)
            | Error::UnsupportedEncoding(_)
            | Error::Schema(_) => Code::InvalidArgument,
            Error::TooLarge { .. } | Error::TooManyItems { .. } | Error::DecodesTooLarge { .. } => {
                Code::ResourceExhausted
            }
            Error::BodyTimeout(_) => Code::DeadlineExceeded,
            Error::NotSupported { .. } => Code::Unimplemented,
            Error::Overloaded { .. } | Error::Wal(_) | Error::ShuttingDown | Error::Storage(_) => {
                Code::Unavailable
            }
            Error::Forward { code, .. } if *code == Code::InvalidArgument => Code::InvalidArgument,
            Error::Forward { .. } => Code::Unavailable,
            Error::Config(_) => Code::Internal,
        };
        let message = self.to_string();
        match self.retry_after() {
            Some(delay) => retryable_grpc_status(code, message, delay),
            None => tonic::Status::new(code, message),
        }
    }
}

/// Builds a gRPC status that carries `RetryInfo` in both places SDKs look for it.
pub fn retryable_grpc_status(code: tonic::Code, message: String, delay: Duration) -> tonic::Status {
    use tonic_types::{ErrorDetails, StatusExt};
    let details = ErrorDetails::with_retry_info(Some(delay));
    let mut status = tonic::Status::with_error_details(code, message, details);
    let retry_info = tonic_types::pb::RetryInfo {
        retry_delay: Some(prost_types::Duration {
            seconds: delay.as_secs() as i64,
            nanos: delay.subsec_nanos() as i32,
        }),
    };
    status.metadata_mut().insert_bin(
        "google.rpc.retryinfo-bin",
        tonic::metadata::MetadataValue::from_bytes(&retry_info.encode_to_vec()),
    );
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overload_is_retryable_on_both_transports() {
        let err = Error::Overloaded {
            reason: "buffer full",
            retry_after: Duration::from_secs(2),
            too_many_requests: false,
        };
        assert_eq!(err.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)));
        let status = err.to_grpc_status();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert!(
            status
                .metadata()
                .get_bin("google.rpc.retryinfo-bin")
                .is_some()
        );
        use tonic_types::StatusExt;
        let delay = status.get_details_retry_info().and_then(|r| r.retry_delay);
        assert_eq!(delay, Some(Duration::from_secs(2)));
    }

    #[test]
    fn bad_input_is_permanent() {
        let err = Error::TooLarge { limit: 10 };
        assert_eq!(err.http_status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(err.to_grpc_status().code(), tonic::Code::ResourceExhausted);
        assert_eq!(err.retry_after(), None);
    }
}
