//! The storage crate's error: what can fail reading or writing the WAL and the files.
//!
//! Messages carry their cause in their own text, so they read the same however they are
//! printed. The error is `Clone` (causes are shared by `Arc`): one failed WAL write is the
//! answer to every append of its group.

use std::sync::Arc;

/// Every way storage can fail.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("write-ahead log unavailable: {0}")]
    Wal(String),
    /// The WAL thread has stopped (the process is shutting down).
    #[error("weft is shutting down")]
    ShuttingDown,
    #[error("storage error: {0}")]
    Storage(String),
    /// `[storage]` settings that cannot work (a bad URL, an unknown scheme).
    #[error("{0}")]
    Config(String),
    /// Writing a group of WAL records failed at `step` (`write`, `fsync`,
    /// `fsync before rotation`); every append of the group gets this answer.
    #[error("write-ahead log unavailable: {step}: {error}")]
    WalWrite {
        step: &'static str,
        error: Arc<std::io::Error>,
    },
    /// A committed Parquet file could not be read at `step` (`open`, `footer`, `data`).
    #[error("{step}: {error}")]
    FileRead {
        step: &'static str,
        error: ReadError,
    },
    /// A committed Parquet file that reads back with another row count than it was written with.
    #[error("{found} rows, {written} when it was written")]
    RowCount { found: u64, written: u64 },
    /// A quarantined file cannot be rebuilt: the store has no WAL.
    #[error("this store has no WAL to rebuild from")]
    NoWalToRebuild,
    /// A quarantined file cannot be rebuilt: its manifest entry predates `wal_records`.
    #[error(
        "the manifest does not say which WAL records it came from (written by an older release)"
    )]
    NoWalRecords,
    /// A quarantined file cannot be rebuilt: the WAL no longer holds all of its hour's rows.
    #[error(
        "the WAL holds {found} of the {expected} rows that records {first}..={last} put in this \
         hour (older records are deleted once wal.retain_flushed_bytes is used up)"
    )]
    WalRowsMissing {
        found: u64,
        expected: u64,
        first: u64,
        last: u64,
    },
    /// Rows read back from the WAL without their table's time column.
    #[error("time column {column} missing")]
    TimeColumnMissing { column: &'static str },
    /// An Arrow computation over stored rows failed.
    #[error("{0}")]
    Arrow(Arc<arrow::error::ArrowError>),
}

/// Why a Parquet file could not be read: the I/O, Parquet or Arrow error as it is.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(Arc<std::io::Error>),
    #[error("{0}")]
    Parquet(Arc<parquet::errors::ParquetError>),
    #[error("{0}")]
    Arrow(Arc<arrow::error::ArrowError>),
}

impl From<std::io::Error> for ReadError {
    fn from(e: std::io::Error) -> Self {
        ReadError::Io(Arc::new(e))
    }
}

impl From<parquet::errors::ParquetError> for ReadError {
    fn from(e: parquet::errors::ParquetError) -> Self {
        ReadError::Parquet(Arc::new(e))
    }
}

impl From<arrow::error::ArrowError> for ReadError {
    fn from(e: arrow::error::ArrowError) -> Self {
        ReadError::Arrow(Arc::new(e))
    }
}

impl Error {
    /// An [`Error::FileRead`] at `step`.
    pub(crate) fn file_read(step: &'static str) -> impl FnOnce(ReadError) -> Error {
        move |error| Error::FileRead { step, error }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
