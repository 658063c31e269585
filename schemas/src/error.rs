//! The crate's one error type.
//!
//! Invalid *rows* (bad ids, out-of-range times) are not errors: they are counted in
//! [`crate::Converted::rejected`] and the rest of the request is kept. [`Error`] is for a body
//! that cannot be decoded at all, and for stored data that does not have the expected shape.

/// Everything that can go wrong in this crate. Messages are lowercase.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An OTLP/JSON body that is not valid JSON or does not have the OTLP shape.
    #[error("invalid otlp/json: {0}")]
    Json(String),

    /// A protobuf body that prost could not decode.
    #[error("invalid protobuf: {0}")]
    Protobuf(#[from] prost::DecodeError),

    /// A protobuf body whose wire format is broken (found by [`crate::shape`] before decoding).
    #[error("invalid protobuf: {0}")]
    Malformed(String),

    /// A remote-write body that is not valid snappy (block format).
    #[error("invalid snappy body: {0}")]
    Snappy(#[from] snap::Error),

    /// A compressed body whose decompressed size is over the limit.
    #[error("decompressed body too large: {size} bytes (limit {limit})")]
    BodyTooLarge {
        /// Declared decompressed size.
        size: usize,
        /// The limit it exceeded.
        limit: usize,
    },

    /// Stored data (a record batch read back from Parquet or a query) that does not match the
    /// table schema closely enough to be converted back to OTLP.
    #[error("invalid stored data: {0}")]
    InvalidData(String),

    /// An Arrow error while assembling or casting arrays.
    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// Parquet settings out of range (see [`crate::parquet_settings::ParquetSettings::validate`]).
    #[error("invalid parquet settings: {0}")]
    InvalidSettings(String),
}

/// Result with this crate's [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
