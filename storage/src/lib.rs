//! Weft's storage: what a collector node keeps (WAL on its local disk; files and manifests
//! in the object store that `storage.url` names), and how it reads it back.
//!
//! ```text
//!  append(record) ──> wal::Wal  group commit, fsync, one thread; segments <data>/wal/*.wal
//!                        │ on durable (sequence order)          │ replay on start: torn tails
//!                        ▼                                      │ cut, corruption skipped and
//!                  store::Store live buffers  <─────────────────┘ reported (incidents)
//!                        │ flush (size / age): sort (hour, key) → Parquet per hour
//!                        │   + <file>.tids trace-ID filter (trace_index), put through
//!                        ▼   object::ObjectStorage (local disk, S3, GCS, Azure)
//!                  manifests/<version>.json created if absent = commit point; WAL segments
//!                  it covers are kept up to wal.retain_flushed_bytes, then deleted
//!  retention ──> Store::apply_retention: whole expired hours out of the manifest, their
//!                objects deleted after a grace period
//!  queries ──> Store::snapshot(table): committed files + live rows, never both, never neither
//!  unreadable file ──> Store::quarantine: moved aside, rebuilt from retained WAL records
//!  damage of either kind ──> incidents::Incidents (<data>/incidents.jsonl)
//! ```
//!
//! Layout: the local data directory holds `wal/<first seq>.wal`, `wal/quarantine/` and
//! `incidents.jsonl`; the node's prefix in the storage holds `manifests/<version>.json`,
//! `<table>/tenant=<t>/date=<d>/hour=<h>/<uuid>.parquet` (+ `.tids` for spans) and
//! `quarantine/<same path>` (ARCHITECTURE.md "Storage layout").
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
