//! Collector settings: one serde tree, part of the `weft` config file (`[collector]`).
//! Every field has a default so an empty file is a working configuration.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
pub use weft_receiver::ReceiverConfig;
use weft_schemas::parquet_settings::ParquetSettings;
pub use weft_storage::config::{SyncPolicy, WalConfig};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CollectorConfig {
    /// Where the write-ahead log, the manifest and the Parquet files live.
    pub data_dir: PathBuf,
    /// Tenant that data without an explicit tenant is stored under.
    pub default_tenant: String,
    pub wal: WalConfig,
    pub buffer: BufferConfig,
    pub disk: DiskConfig,
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
            disk: DiskConfig::default(),
            receiver: ReceiverConfig::default(),
            parquet: ParquetSettings::default(),
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
    /// Most hour partitions one flush writes: a flush takes whole WAL records in sequence
    /// order and stops before the record that would go past this (one record always goes
    /// whole); the rest waits for the next flush. Keeps flushed-through marks exact.
    pub max_partitions_per_flush: usize,
}

/// `[collector.disk]`: watermarks of the data directory's filesystem (the WAL lives there).
/// At or above `high_water_percent` used, new data is refused with 503 / UNAVAILABLE and a
/// retry delay (never acknowledged when it might not be stored); once usage is back at or
/// below `low_water_percent`, data is taken again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DiskConfig {
    pub high_water_percent: f64,
    pub low_water_percent: f64,
    /// How often usage is measured.
    pub check_interval_ms: u64,
}

impl Default for DiskConfig {
    fn default() -> Self {
        Self {
            high_water_percent: 95.0,
            low_water_percent: 90.0,
            check_interval_ms: 1_000,
        }
    }
}

impl Default for BufferConfig {
    fn default() -> Self {
        Self {
            max_bytes: 1 << 30,
            flush_bytes: 256 << 20,
            flush_age_secs: 60,
            max_file_rows: 4_000_000,
            max_partitions_per_flush: 32,
        }
    }
}

impl BufferConfig {
    pub fn flush_age(&self) -> Duration {
        Duration::from_secs(self.flush_age_secs)
    }
}
