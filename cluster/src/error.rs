//! The cluster crate's error.
//!
//! Messages carry their cause in their own text (an Arrow or JSON error is written after a
//! colon), so they read the same however they are printed; the cause is not repeated as a
//! `source`.

/// What can fail setting up membership, or in a snapshot request or answer
/// ([`crate::snapshot`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("membership: {0}")]
    Membership(String),

    /// A snapshot query string naming a table weft does not have.
    #[error("unknown table {name:?}")]
    UnknownTable { name: String },
    /// A snapshot query string with a parameter the endpoint does not take.
    #[error("unknown parameter {name:?}")]
    UnknownParameter { name: String },
    /// A snapshot query string without a parameter it must have.
    #[error("parameter {name} is required")]
    MissingParameter { name: &'static str },
    /// A snapshot parameter whose value does not parse (`trace_id "x" is not 32 hex digits`).
    #[error("{name} {value:?} is not {expected}")]
    InvalidParameter {
        name: String,
        value: String,
        expected: &'static str,
    },
    /// Trace ids asked of a table other than spans.
    #[error("trace_id applies to the spans table only")]
    TraceIdOutsideSpans,

    /// Live rows without a column the request filters on (`live rows without start_time`).
    #[error("live {rows} without {column}")]
    LiveColumnMissing {
        rows: &'static str,
        column: &'static str,
    },
    /// A live-row column of another type than its table's.
    #[error("{column} is not {expected}")]
    LiveColumnType {
        column: &'static str,
        expected: &'static str,
    },
    /// An Arrow step of encoding or decoding a snapshot failed (`ipc stream: …`).
    #[error("{step}: {error}")]
    Arrow {
        step: &'static str,
        error: arrow::error::ArrowError,
    },
    /// The JSON header of a snapshot could not be written or read.
    #[error("{step}: {error}")]
    Header {
        step: &'static str,
        error: serde_json::Error,
    },

    /// A snapshot answer that does not start with the snapshot magic.
    #[error("not a weft snapshot (bad magic)")]
    BadMagic,
    /// A snapshot answer shorter than its header says.
    #[error("truncated snapshot header")]
    TruncatedHeader,
    /// A snapshot header longer than [`crate::snapshot`] accepts.
    #[error("snapshot header of {length} bytes is too large")]
    HeaderTooLarge { length: usize },
    /// A snapshot of a format version this reader does not know.
    #[error("snapshot version {version} is not supported (expected {expected})")]
    UnsupportedVersion { version: u32, expected: u32 },
    /// A snapshot of another table than the one asked for.
    #[error("asked for {asked} but the snapshot is of {got}")]
    WrongTable { asked: &'static str, got: String },
    /// Live rows whose columns do not fit the table's schema.
    #[error("snapshot rows do not match the {table} schema: {error}")]
    RowsSchema {
        table: &'static str,
        error: arrow::error::ArrowError,
    },
    /// A snapshot whose live rows are not as many as its header announced.
    #[error("snapshot announced {announced} live rows but carried {carried}")]
    RowCount { announced: u64, carried: u64 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
