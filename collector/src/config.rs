//! Collector settings: one serde tree, part of the `weft` config file (`[collector]`).
//! Every field has a default so an empty file is a working configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use weft_schemas::parquet_settings::ParquetSettings;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the write-ahead log, the manifest and the Parquet files live.
    pub data_dir: PathBuf,
    /// Tenant that data without an explicit tenant is stored under.
    pub default_tenant: String,
    pub wal: WalConfig,
    pub buffer: BufferConfig,
    pub receiver: ReceiverConfig,
    pub parquet: ParquetSettings,
}

impl Default for CollectorConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("weft-data"),
            default_tenant: "default".to_owned(),
            wal: WalConfig::default(),
            buffer: BufferConfig::default(),
            receiver: ReceiverConfig::default(),
            parquet: ParquetSettings::default(),
        }
    }
}

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
}

impl Default for WalConfig {
    fn default() -> Self {
        Self {
            sync: SyncPolicy::Fsync,
            segment_bytes: 64 << 20,
            max_group_bytes: 32 << 20,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// Unflushed data (Arrow bytes) above which exports are refused with 503 / UNAVAILABLE.
    pub max_bytes: usize,
    /// A table is flushed to Parquet once its unflushed data reaches this size...
    pub flush_bytes: usize,
    /// ...or once its oldest unflushed data is this many seconds old.
    pub flush_age_secs: u64,
    /// Most rows in one Parquet file; bigger flushes are split.
    pub max_file_rows: usize,
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            flush_bytes: 256 << 20,
            flush_age_secs: 60,
            max_file_rows: 4_000_000,
        }
    }
}

impl BufferConfig {
    pub fn flush_age(&self) -> Duration {
        Duration::from_secs(self.flush_age_secs)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Largest accepted request body, measured after decompression (413 / RESOURCE_EXHAUSTED).
    pub max_request_bytes: usize,
    /// Request bytes held by requests being processed at once; beyond it, 429 / UNAVAILABLE.
    pub max_inflight_bytes: usize,
    /// `Retry-After` sent with 429 / 503 answers.
    pub retry_after_secs: u64,
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            retry_after_secs: 1,
        }
    }
}
