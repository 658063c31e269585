//! Weft's storage: what a collector node keeps on its disk, and how it reads it back.
//!
//! ```text
//!  append(record) ──> wal::Wal  group commit, fsync, one thread; segments <data>/wal/*.wal
//!                        │ on durable (sequence order)          │ replay on start: torn tails
//!                        ▼                                      │ cut, corruption skipped and
//!                  store::Store live buffers  <─────────────────┘ reported (incidents)
//!                        │ flush (size / age): sort (hour, key) → Parquet per hour
//!                        │   + <file>.tids trace-ID filter (trace_index)
//!                        ▼
//!                  manifest.json (atomic rename) = commit point; WAL segments it covers are
//!                  kept up to wal.retain_flushed_bytes, then deleted
//!  queries ──> Store::snapshot(table): committed files + live rows, never both, never neither
//!  unreadable file ──> Store::quarantine: moved aside, rebuilt from retained WAL records
//!  damage of either kind ──> incidents::Incidents (<data>/incidents.jsonl)
//! ```
//!
//! Storage layout of one data directory:
//! `wal/<first seq>.wal`, `wal/quarantine/`, `manifest.json`,
//! `<table>/tenant=<t>/date=<d>/hour=<h>/<uuid>.parquet` (+ `.tids` for spans),
//! `quarantine/<same path>`, `incidents.jsonl`.
//! What the records mean (OTLP requests, tail decisions) is the collector's business: the
//! WAL stores kinds and bytes, the store stores Arrow batches.

pub mod config;
pub mod error;
pub mod incidents;
pub mod object;
pub mod store;
pub mod trace_index;
pub mod wal;

pub use config::{SyncPolicy, WalConfig};
pub use error::{Error, Result};
pub use object::{ObjectStorage, RetentionConfig, StorageConfig};
pub use store::{FileMeta, FlushStats, RowSource, Store, StoreOptions, TableSnapshot, WalRecords};
