//! The query service's error type and its HTTP mapping.

use axum::Json;
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    BadRequest(String),
    #[error("weft's sql endpoint is read-only: {0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("query did not finish within its time limit of {0}s")]
    Timeout(u64),
    #[error("query exceeded its memory limit: {0}")]
    ResourcesExhausted(String),
    #[error("{0}")]
    NotAcceptable(String),
    /// Too many queries at once (`query.max_concurrent_queries`): 503 with `Retry-After`.
    #[error("query service busy: {0}")]
    Overloaded(String),
    #[error("query failed: {0}")]
    Execution(String),
    /// A stored file could not be read (Parquet decode, I/O). The files the request read
    /// are then checked and an unreadable one is quarantined (`warnings`, `provider`).
    #[error("query failed reading stored data: {0}")]
    DataUnreadable(String),
    #[error(transparent)]
    Schema(#[from] weft_schemas::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A `[query]` setting serde accepts but weft cannot use ([`crate::config::QueryConfig::validate`]).
/// Separate from [`Error`]: it is refused at start, never answered over HTTP.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A limit that must be positive (`query.max_sql_bytes`).
    #[error("query.{key} must be at least 1")]
    Zero { key: &'static str },
    /// `query.max_batch_bytes` below `query.max_value_bytes`: no value could be produced.
    #[error(
        "query.max_batch_bytes = {max_batch_bytes} must be at least query.max_value_bytes = \
         {max_value_bytes}"
    )]
    BatchBelowValue {
        max_batch_bytes: usize,
        max_value_bytes: usize,
    },
    /// A setting outside its range (`query.rollups.delay_secs`).
    #[error("{key} = {value} must be between {min} and {max}")]
    OutOfRange {
        key: &'static str,
        value: u64,
        min: u64,
        max: u64,
    },
}

/// A parameter the client got wrong: 400, with the message naming it and its forms.
impl From<crate::params::ParamError> for Error {
    fn from(err: crate::params::ParamError) -> Self {
        Error::BadRequest(err.to_string())
    }
}

impl From<DataFusionError> for Error {
    fn from(err: DataFusionError) -> Self {
        use arrow::error::ArrowError;
        match err.find_root() {
            DataFusionError::ResourcesExhausted(m) => Error::ResourcesExhausted(m.clone()),
            DataFusionError::SQL(..)
            | DataFusionError::Plan(_)
            | DataFusionError::SchemaError(..)
            | DataFusionError::NotImplemented(_) => {
                let message = err.strip_backtrace();
                if is_read_only_refusal(&message) {
                    Error::Forbidden(message)
                } else {
                    Error::BadRequest(message)
                }
            }
            // Errors the query's own values cause (a bad cast, a malformed id given to
            // trace_id_from_hex, division by zero) are the client's to fix.
            // The time limit, noticed inside a function (see `udf::capped`).
            DataFusionError::Execution(m)
                if m.starts_with(crate::udf::capped::TIME_LIMIT_MESSAGE) =>
            {
                let secs = m[crate::udf::capped::TIME_LIMIT_MESSAGE.len()..]
                    .trim_end_matches('s')
                    .parse()
                    .unwrap_or(0);
                Error::Timeout(secs)
            }
            DataFusionError::Execution(_) => Error::BadRequest(err.strip_backtrace()),
            DataFusionError::ArrowError(arrow_err, _)
                if matches!(
                    **arrow_err,
                    ArrowError::CastError(_)
                        | ArrowError::ParseError(_)
                        | ArrowError::ComputeError(_)
                        | ArrowError::InvalidArgumentError(_)
                        | ArrowError::DivideByZero
                        | ArrowError::ArithmeticOverflow(_)
                ) =>
            {
                Error::BadRequest(err.strip_backtrace())
            }
            DataFusionError::ParquetError(_)
            | DataFusionError::ObjectStore(_)
            | DataFusionError::IoError(_) => Error::DataUnreadable(err.strip_backtrace()),
            DataFusionError::ArrowError(arrow_err, _)
                if matches!(
                    **arrow_err,
                    ArrowError::ParquetError(_)
                        | ArrowError::IoError(..)
                        | ArrowError::ExternalError(_)
                ) =>
            {
                Error::DataUnreadable(err.strip_backtrace())
            }
            DataFusionError::External(e)
                if e.downcast_ref::<parquet::errors::ParquetError>().is_some()
                    || e.downcast_ref::<std::io::Error>().is_some() =>
            {
                Error::DataUnreadable(err.strip_backtrace())
            }
            _ => Error::Execution(err.strip_backtrace()),
        }
    }
}

/// DataFusion's `SQLOptions` refusals ("DDL not supported: …") are plan errors.
fn is_read_only_refusal(message: &str) -> bool {
    [
        "DDL not supported",
        "DML not supported",
        "Statement not supported",
    ]
    .iter()
    .any(|needle| message.contains(needle))
}

impl Error {
    pub fn status(&self) -> StatusCode {
        match self {
            Error::BadRequest(_) => StatusCode::BAD_REQUEST,
            Error::Forbidden(_) => StatusCode::FORBIDDEN,
            Error::NotFound(_) => StatusCode::NOT_FOUND,
            Error::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            Error::ResourcesExhausted(_) => StatusCode::UNPROCESSABLE_ENTITY,
            Error::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            Error::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Error::Execution(_) | Error::DataUnreadable(_) | Error::Schema(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let status = self.status();
        if matches!(self, Error::DataUnreadable(_))
            && let Some(request) = crate::warnings::RequestState::current()
        {
            request.mark_data_unreadable();
        }
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %self, "query failed");
        }
        let body = Json(serde_json::json!({ "error": self.to_string() }));
        if matches!(self, Error::Overloaded(_)) {
            return (status, [(http::header::RETRY_AFTER, "1")], body).into_response();
        }
        (status, body).into_response()
    }
}
