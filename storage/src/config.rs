//! Write-ahead log settings (`[collector.wal]` in the `weft` config file).

use serde::{Deserialize, Serialize};

/// When an export is acknowledged relative to the disk.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SyncPolicy {
    /// Group commit: concurrent exports share one `fdatasync`; ack after it returns.
    /// Survives power loss.
    Fsync,
    /// Ack once the record is written to the OS (page cache). Survives a process crash
    /// (SIGKILL) but not a machine crash.
    Os,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WalConfig {
    pub sync: SyncPolicy,
    /// A new segment file is started once the current one reaches this size.
    pub segment_bytes: u64,
    /// Upper bound of records written by one group commit.
    pub max_group_bytes: usize,
    /// Segments whose records are all in Parquet files are kept, newest first, up to this
    /// many bytes: while they are, a Parquet file found unreadable is rebuilt from them.
    /// 0 deletes them as soon as they are flushed.
    pub retain_flushed_bytes: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::Fsync,
            segment_bytes: 64 << 20,
            max_group_bytes: 32 << 20,
            retain_flushed_bytes: 256 << 20,
        }
    }
}
