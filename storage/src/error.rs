//! The storage crate's error: what can fail reading or writing the WAL and the files.

/// Every way storage can fail.
#[derive(Debug, thiserror::Error)]
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
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
