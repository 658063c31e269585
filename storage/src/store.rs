//! Live buffers, the Parquet files behind them, and the manifest that commits both.
//!
//! ```text
//!  WAL thread --apply_durable(seq, table, batch)--> live buffer (per table, seq order)
//!                                                     |
//!  flusher: snapshot live rows (seq <= S) ------------+
//!     sort (hour, table sort key) -> gather rows in chunks -> Parquet files (fsync)
//!                                      span files: + <file>.tids trace id filter (fsync)
//!     manifests/<version + 1>.json (files + flushed_through = S), created only if absent
//!                                                                    <- commit point
//!     drop live rows with seq <= S; WAL segments <= min(flushed_through) can go
//!
//!  queries: snapshot(table) = (committed files, live batches) taken under one lock,
//!           so a row is seen in exactly one of the two, never both, never neither.
//! ```
//!
//! The manifest is the catalog: only files it lists exist for queries. A crash between
//! writing files and committing the manifest leaves orphans, deleted on the next start,
//! and the WAL still holds their rows, so nothing is lost and nothing is stored twice.
//!
//! Files and manifests live in an [`ObjectStorage`] (local disk or an object store) under
//! this node's prefix (`""` for `weft up`, `nodes/<id>` in a cluster); no other node writes
//! there. A commit creates the next numbered manifest with a create-if-absent write (S3
//! `If-None-Match: *`, a hard link on local disk), so it is atomic, readers see whole
//! versions only, and a second process committing as the same node fails instead of
//! overwriting: the store then refuses to flush (the WAL keeps the rows) and says why.
//! The two newest versions are kept (a reader may have just listed the older one). Data
//! directories written before versioned manifests hold one `manifest.json`; it is read when
//! no numbered version exists and removed after the first commit.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use arrow::array::{Array, ArrayRef, AsArray, Int64Array, RecordBatch};
use arrow::compute::interleave_record_batch;
use arrow::datatypes::{DataType, TimestampNanosecondType};
use arrow::row::{RowConverter, SortField};
use parking_lot::Mutex;
use parquet::arrow::ArrowWriter;
use serde::{Deserialize, Serialize};
use weft_schemas::Table;
use weft_schemas::parquet_settings::{ParquetSettings, writer_properties};

use bytes::Bytes;
use object_store::path::Path as ObjectPath;

use crate::error::{Error, ReadError, Result};
use crate::incidents::{IncidentKind, Incidents};
use crate::object::{self, ObjectStorage};
use crate::trace_index::{TraceIdFilter, sidecar_key};
use weft_telemetry::Telemetry;

/// The one manifest of data directories written before manifests were numbered.
const LEGACY_MANIFEST: &str = "manifest.json";
/// Numbered manifests: `manifests/<version, 20 digits>.json`, so keys sort by version.
const MANIFESTS_DIR: &str = "manifests";
/// Where unreadable Parquet files go, under the data directory (same relative path).
pub const QUARANTINE_DIR: &str = "quarantine";
const MANIFEST_VERSION: u32 = 1;
const NANOS_PER_HOUR: i64 = 3_600_000_000_000;

/// One committed Parquet file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileMeta {
    /// Path relative to the data directory, `/`-separated.
    pub path: String,
    pub tenant: String,
    pub rows: u64,
    pub bytes: u64,
    /// Smallest and largest value of the table's time column, in ns since the epoch.
    pub min_time_ns: i64,
    pub max_time_ns: i64,
    /// Span files only: which trace ids the file may hold (kept in `<file>.tids`, not in
    /// the manifest; rebuilt from the file on start if missing). `None`: always scanned.
    #[serde(skip)]
    pub trace_ids: Option<Arc<TraceIdFilter>>,
    /// The WAL records (`first..=last` sequence numbers, this table's only) whose rows the
    /// flush that wrote this file took; every file of one flush has the same range. While the
    /// WAL still holds them, an unreadable file is rebuilt from them. `None` in manifests
    /// written before this was recorded (such files are quarantined, never rebuilt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wal_records: Option<WalRecords>,
}

/// A range of WAL sequence numbers, both ends included.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct WalRecords {
    pub first: u64,
    pub last: u64,
}

/// Reads back the rows that a table's WAL records `first..=last` held, in sequence order,
/// converted exactly as replay converts them. Implemented over the collector's WAL; the
/// store uses it to rebuild a quarantined file.
pub trait RowSource: Send + Sync {
    /// `Err` says why the rows cannot be read (for the incident).
    fn rows(&self, table: Table, records: WalRecords) -> Result<Vec<RecordBatch>>;
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct TableManifest {
    /// Every WAL record with a sequence number `<=` this is in `files`.
    flushed_through: u64,
    files: Vec<FileMeta>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Manifest {
    version: u32,
    tables: BTreeMap<String, TableManifest>,
    /// The store (one process's run) that committed it; see `commit_manifest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    writer: Option<String>,
}

/// What a query reads for one table: committed files plus not-yet-flushed rows.
#[derive(Debug, Clone)]
pub struct TableSnapshot {
    pub files: Vec<Arc<FileMeta>>,
    pub live: Vec<RecordBatch>,
}

/// Figures from one flush, for logs and tests.
#[derive(Debug, Clone, Default)]
pub struct FlushStats {
    pub rows: u64,
    pub files: usize,
    pub bytes: u64,
    pub flushed_through: u64,
}

#[derive(Default)]
struct TableState {
    live: Vec<(u64, RecordBatch)>,
    live_bytes: usize,
    oldest_live: Option<Instant>,
    files: Vec<Arc<FileMeta>>,
    flushed_through: u64,
}

struct State {
    tables: HashMap<Table, TableState>,
    /// Highest WAL sequence number applied.
    durable_seq: u64,
}

/// The collector's storage: see the module docs.
pub struct Store {
    /// Local directory of this node (WAL, incidents); files are in `objects`.
    data_dir: PathBuf,
    objects: Arc<ObjectStorage>,
    /// This node's prefix in `objects` (`""` or `nodes/<id>`); manifest paths are below it.
    prefix: String,
    /// Version of the newest committed manifest (0: none yet). Changed under `flush_lock`.
    manifest_version: Mutex<ManifestVersion>,
    /// Random id of this open store, written into its manifests.
    writer: String,
    tenant: String,
    parquet: ParquetSettings,
    max_file_rows: usize,
    max_partitions_per_flush: usize,
    state: Mutex<State>,
    /// One flush (or quarantine) at a time: the manifest is rewritten from the committed
    /// state.
    flush_lock: Mutex<()>,
    incidents: Arc<Incidents>,
    telemetry: Arc<Telemetry>,
    /// Files quarantined so far by this process: a query that failed retries once if this
    /// moved while it ran.
    quarantined: AtomicU64,
    /// Files read completely without error (files never change, so once is enough).
    verified: Mutex<std::collections::HashSet<String>>,
    /// Where a quarantined file's rows are read back from (the WAL), if anywhere.
    row_source: Option<Arc<dyn RowSource>>,
    /// Quarantined files whose rows could not be rebuilt: a later rebuild of the same flush
    /// and hour must restore them too.
    unrebuilt: Mutex<Vec<(Table, FileMeta)>>,
    /// Objects no manifest lists any more, deleted once their grace period is over.
    doomed: Mutex<Vec<(Instant, ObjectPath)>>,
    /// How long each table is kept and the grace before dropped files are deleted, as the
    /// owner (the collector's retention loop) applies it; `None`: forever.
    retention: Mutex<Option<(crate::RetentionConfig, Duration)>>,
}

/// What one retention pass dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionStats {
    pub files: usize,
    pub rows: u64,
    pub bytes: u64,
    /// Hour partitions dropped, as `spans/tenant=…/date=…/hour=…`.
    pub partitions: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default)]
struct ManifestVersion {
    version: u64,
    /// The store was opened from a `manifest.json` of an older release: removed after the
    /// first numbered commit.
    legacy: bool,
}

/// What a rebuild restored.
#[derive(Debug)]
struct Rebuilt {
    rows: u64,
    /// The new files.
    files: Vec<String>,
    /// Healthy files of the same flush and hour that the new files replace.
    replaced: Vec<String>,
}

/// How a store writes files, and where it reports damage.
#[derive(Clone)]
pub struct StoreOptions {
    pub tenant: String,
    pub parquet: ParquetSettings,
    pub max_file_rows: usize,
    pub max_partitions_per_flush: usize,
    pub incidents: Arc<Incidents>,
    pub telemetry: Arc<Telemetry>,
    /// Rebuilds quarantined files from the WAL when set.
    pub row_source: Option<Arc<dyn RowSource>>,
    /// Where files and manifests go; `None`: the data directory itself (local disk).
    pub objects: Option<Arc<ObjectStorage>>,
    /// This node's prefix in `objects` (`nodes/<id>` in a cluster, `""` for one node).
    pub prefix: String,
}

impl std::fmt::Debug for StoreOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreOptions")
            .field("tenant", &self.tenant)
            .field("max_file_rows", &self.max_file_rows)
            .field("rebuilds", &self.row_source.is_some())
            .field("objects", &self.objects)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.data_dir)
            .field("objects", &self.objects)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Store {
    /// Opens the store of `data_dir`: loads the newest manifest and deletes files it does
    /// not list. A listed file that is missing, has another size than when it was written,
    /// or (span files) cannot be read to rebuild its trace-ID filter is quarantined.
    pub fn open(data_dir: &Path, options: StoreOptions) -> Result<Self> {
        std::fs::create_dir_all(data_dir)
            .map_err(|e| Error::Storage(format!("create data dir {}: {e}", data_dir.display())))?;
        let objects = match options.objects {
            Some(objects) => objects,
            None => ObjectStorage::local(data_dir)?,
        };
        let prefix = options.prefix.trim_matches('/').to_owned();
        let (version, manifest) = match load_manifest(&objects, &prefix)? {
            Some(found) => found,
            None => (
                ManifestVersion::default(),
                Manifest {
                    version: MANIFEST_VERSION,
                    tables: BTreeMap::new(),
                    writer: None,
                },
            ),
        };
        let mut tables = HashMap::new();
        let mut damaged = Vec::new();
        for table in Table::ALL {
            let committed = manifest
                .tables
                .get(table.name())
                .cloned()
                .unwrap_or_default();
            let sizes = remove_orphans(&objects, &prefix, table, &committed.files)?;
            let mut files = Vec::with_capacity(committed.files.len());
            for mut file in committed.files {
                let key = object::key(&prefix, &file.path)?;
                let checked = match sizes.get(key.as_ref()) {
                    Some(&size) if size == file.bytes => Ok(()),
                    Some(&size) => Err(format!(
                        "{size} bytes stored, {} when it was written",
                        file.bytes
                    )),
                    None => Err("it is missing from storage".to_owned()),
                }
                .and_then(|()| {
                    if table == Table::Spans {
                        file.trace_ids = Some(Arc::new(
                            TraceIdFilter::load_or_rebuild(&objects, &key)
                                .map_err(|e| e.to_string())?,
                        ));
                    }
                    Ok(())
                });
                if let Err(reason) = checked {
                    damaged.push((table, file.path.clone(), reason));
                }
                files.push(Arc::new(file));
            }
            tables.insert(
                table,
                TableState {
                    files,
                    flushed_through: committed.flushed_through,
                    ..TableState::default()
                },
            );
        }
        let store = Self {
            data_dir: data_dir.to_path_buf(),
            objects,
            prefix,
            manifest_version: Mutex::new(version),
            writer: uuid::Uuid::new_v4().simple().to_string(),
            tenant: options.tenant,
            parquet: options.parquet,
            max_file_rows: options.max_file_rows.max(1),
            max_partitions_per_flush: options.max_partitions_per_flush.max(1),
            state: Mutex::new(State {
                tables,
                durable_seq: 0,
            }),
            flush_lock: Mutex::new(()),
            incidents: options.incidents,
            telemetry: options.telemetry,
            quarantined: AtomicU64::new(0),
            verified: Mutex::new(Default::default()),
            row_source: options.row_source,
            unrebuilt: Mutex::new(Vec::new()),
            doomed: Mutex::new(Vec::new()),
            retention: Mutex::new(None),
        };
        for (table, path, reason) in damaged {
            store.quarantine(table, &path, &reason)?;
        }
        Ok(store)
    }

    /// The object key of a manifest path (relative to this node's prefix).
    pub fn object_key(&self, relative: &str) -> Result<ObjectPath> {
        object::key(&self.prefix, relative)
    }

    /// Where this store's files and manifests are.
    pub fn objects(&self) -> &Arc<ObjectStorage> {
        &self.objects
    }

    /// This node's prefix in [`Store::objects`].
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Moves a committed file that cannot be read (and its trace-ID filter) to
    /// `<data_dir>/quarantine/<same path>`, removes it from the manifest, counts it, rebuilds
    /// its rows from the WAL when the WAL still holds them, and records an incident that says
    /// which. Queries from then on read every other file. `false` when the file is not (or no
    /// longer) committed.
    pub fn quarantine(&self, table: Table, relative: &str, reason: &str) -> Result<bool> {
        let _one_manifest_writer = self.flush_lock.lock();
        let Some(meta) = self.state.lock().tables[&table]
            .files
            .iter()
            .find(|f| f.path == relative)
            .cloned()
        else {
            return Ok(false);
        };
        let from = self.object_key(relative)?;
        let to = self.object_key(&format!("{QUARANTINE_DIR}/{relative}"))?;
        // Moved first, then dropped from the manifest: a crash in between leaves a listed
        // file that is missing, which the next start quarantines (nothing is deleted).
        for (from, to) in [
            (from.clone(), to.clone()),
            (sidecar_key(&from), sidecar_key(&to)),
        ] {
            self.objects.rename(&from, &to)?;
        }
        let manifest = {
            let state = self.state.lock();
            self.manifest_of(&state, |t, files| {
                if t == table {
                    files.retain(|f| f.path != relative);
                }
            })
        };
        self.commit_manifest(&manifest)?;
        self.state
            .lock()
            .tables
            .get_mut(&table)
            .expect("every table has state")
            .files
            .retain(|f| f.path != relative);
        self.quarantined.fetch_add(1, Ordering::Relaxed);
        self.telemetry.add(
            "weft_parquet_quarantined_files_total",
            "Committed Parquet files that could not be read, moved to <data_dir>/quarantine.",
            &[("table", table.name())],
            1.0,
        );
        tracing::error!(
            table = table.name(),
            file = %from,
            quarantined = %to,
            rows = meta.rows,
            reason,
            "unreadable parquet file moved to quarantine"
        );
        let rebuilt = self.rebuild_locked(table, &meta);
        let outcome = match &rebuilt {
            Ok(rebuilt) => {
                self.telemetry.add(
                    "weft_parquet_rebuilt_files_total",
                    "Quarantined Parquet files whose rows were rebuilt from the WAL.",
                    &[("table", table.name())],
                    1.0,
                );
                tracing::warn!(
                    table = table.name(),
                    file = relative,
                    rows = rebuilt.rows,
                    into = ?rebuilt.files,
                    "rebuilt the quarantined file's rows from the WAL; nothing is missing"
                );
                format!(
                    "all {} rows of its hour were rebuilt from the WAL; nothing is missing",
                    rebuilt.rows
                )
            }
            Err(why) => {
                self.unrebuilt.lock().push((table, (*meta).clone()));
                tracing::error!(
                    table = table.name(),
                    file = relative,
                    rows = meta.rows,
                    why = %why,
                    "cannot rebuild the quarantined file from the WAL; its rows are missing \
                     from queries"
                );
                format!("its rows are missing from queries: not rebuilt, {why}")
            }
        };
        let message = format!(
            "unreadable {} file {relative} ({} rows) moved to {}: {reason}; {outcome}",
            table.name(),
            meta.rows,
            self.display_key(&to)
        );
        let details = serde_json::json!({
            "table": table.name(),
            "file": relative,
            "quarantined": self.display_key(&to),
            "rows": meta.rows,
            "min_time_ns": meta.min_time_ns,
            "max_time_ns": meta.max_time_ns,
            "wal_records": meta.wal_records,
            "reason": reason,
            "rebuilt": rebuilt.as_ref().ok().map(|r| serde_json::json!({
                "rows": r.rows,
                "files": r.files,
                "replaced": r.replaced,
            })),
            "not_rebuilt": rebuilt.as_ref().err().map(ToString::to_string),
        });
        if let Err(e) = self
            .incidents
            .record(IncidentKind::ParquetQuarantined, message, details)
        {
            tracing::error!(error = %e, "could not record the quarantine incident");
        }
        Ok(true)
    }

    /// Rebuilds the rows of the quarantined file `lost` from the WAL records its flush took.
    /// A flush may have split one hour into several files, and files of that hour quarantined
    /// earlier may still be missing, so the unit rebuilt is the hour of that flush: every row
    /// of the table those records put in that hour is read back, checked against the rows the
    /// files held (the count must match exactly, so nothing is stored twice or left out), and
    /// written as new files that replace the whole group in one manifest commit. Healthy files
    /// replaced this way stay on disk until the next start (a query may be reading them) and
    /// are then removed as files the manifest does not list. Caller holds `flush_lock`.
    fn rebuild_locked(&self, table: Table, lost: &FileMeta) -> Result<Rebuilt> {
        let source = self.row_source.as_ref().ok_or(Error::NoWalToRebuild)?;
        let records = lost.wal_records.ok_or(Error::NoWalRecords)?;
        let dir = partition_dir(&lost.path);
        let hour = lost.min_time_ns.div_euclid(NANOS_PER_HOUR);
        let same_group =
            |f: &FileMeta| f.wal_records == Some(records) && partition_dir(&f.path) == dir;
        let siblings: Vec<String> = self.state.lock().tables[&table]
            .files
            .iter()
            .filter(|f| same_group(f))
            .map(|f| f.path.clone())
            .collect();
        let expected = {
            let state = self.state.lock();
            let committed: u64 = state.tables[&table]
                .files
                .iter()
                .filter(|f| same_group(f))
                .map(|f| f.rows)
                .sum();
            let earlier: u64 = self
                .unrebuilt
                .lock()
                .iter()
                .filter(|(t, f)| *t == table && same_group(f) && f.path != lost.path)
                .map(|(_, f)| f.rows)
                .sum();
            committed + earlier + lost.rows
        };
        let mut batches = Vec::new();
        let mut rows = 0u64;
        for batch in source.rows(table, records)? {
            let in_hour = rows_in_hour(table, &batch, hour)?;
            rows += in_hour.num_rows() as u64;
            if in_hour.num_rows() > 0 {
                batches.push(in_hour);
            }
        }
        if rows != expected {
            return Err(Error::WalRowsMissing {
                found: rows,
                expected,
                first: records.first,
                last: records.last,
            });
        }
        let mut new_files = self.write_files(table, &batches)?;
        for file in &mut new_files {
            file.wal_records = Some(records);
        }
        let manifest = {
            let state = self.state.lock();
            self.manifest_of(&state, |t, files| {
                if t == table {
                    files.retain(|f| !siblings.contains(&f.path));
                    files.extend(new_files.iter().cloned());
                }
            })
        };
        self.commit_manifest(&manifest)?;
        let paths: Vec<String> = new_files.iter().map(|f| f.path.clone()).collect();
        {
            let mut state = self.state.lock();
            let files = &mut state
                .tables
                .get_mut(&table)
                .expect("every table has state")
                .files;
            files.retain(|f| !siblings.contains(&f.path));
            files.extend(new_files.into_iter().map(Arc::new));
        }
        self.unrebuilt
            .lock()
            .retain(|(t, f)| !(*t == table && same_group(f)));
        Ok(Rebuilt {
            rows,
            files: paths,
            replaced: siblings,
        })
    }

    /// How many files this process has quarantined (moves when one more is).
    pub fn quarantine_count(&self) -> u64 {
        self.quarantined.load(Ordering::Relaxed)
    }

    /// Reads a committed file completely (footer, every page of every column) and checks its
    /// row count. Blocking. `Err` describes why the file cannot be used.
    pub fn verify_file(&self, file: &FileMeta) -> Result<()> {
        use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
        let key = self.object_key(&file.path)?;
        let bytes = self.objects.get(&key)?.ok_or_else(|| {
            Error::file_read("open")(ReadError::from(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "missing from storage",
            )))
        })?;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)
            .and_then(|b| b.build())
            .map_err(ReadError::from)
            .map_err(Error::file_read("footer"))?;
        let mut rows = 0u64;
        for batch in reader {
            rows += batch
                .map_err(ReadError::from)
                .map_err(Error::file_read("data"))?
                .num_rows() as u64;
        }
        if rows != file.rows {
            return Err(Error::RowCount {
                found: rows,
                written: file.rows,
            });
        }
        Ok(())
    }

    /// Verifies `files` of `table` and quarantines those that cannot be read. Blocking.
    /// Returns how many were quarantined.
    pub fn quarantine_unreadable(&self, table: Table, files: &[Arc<FileMeta>]) -> Result<usize> {
        let mut moved = 0;
        for file in files {
            if self.verified.lock().contains(&file.path) {
                continue;
            }
            match self.verify_file(file) {
                Ok(()) => {
                    self.verified.lock().insert(file.path.clone());
                }
                Err(reason) => {
                    if self.quarantine(table, &file.path, &reason.to_string())? {
                        moved += 1;
                    }
                }
            }
        }
        Ok(moved)
    }

    /// The manifest of the committed state, with `edit` applied to each table's files.
    fn manifest_of(
        &self,
        state: &State,
        mut edit: impl FnMut(Table, &mut Vec<FileMeta>),
    ) -> Manifest {
        let mut manifest = Manifest {
            version: MANIFEST_VERSION,
            tables: BTreeMap::new(),
            writer: Some(self.writer.clone()),
        };
        for t in Table::ALL {
            let ts = &state.tables[&t];
            let mut files: Vec<FileMeta> = ts.files.iter().map(|f| (**f).clone()).collect();
            edit(t, &mut files);
            manifest.tables.insert(
                t.name().to_owned(),
                TableManifest {
                    flushed_through: ts.flushed_through,
                    files,
                },
            );
        }
        manifest
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where this store records damage (queries warn about unacknowledged incidents).
    pub fn incidents(&self) -> &Arc<Incidents> {
        &self.incidents
    }

    /// Highest WAL sequence number applied to the live buffers.
    pub fn durable_seq(&self) -> u64 {
        self.state.lock().durable_seq
    }

    /// Whether a replayed WAL record is already in Parquet files.
    pub fn is_flushed(&self, table: Table, seq: u64) -> bool {
        self.state.lock().tables[&table].flushed_through >= seq
    }

    /// Adds durable rows to the live buffers; called in WAL sequence order.
    pub fn apply_durable(&self, group: Vec<(u64, (Table, RecordBatch))>) {
        let now = Instant::now();
        let mut state = self.state.lock();
        for (seq, (table, batch)) in group {
            state.durable_seq = state.durable_seq.max(seq);
            let table_state = state.tables.entry(table).or_default();
            if seq <= table_state.flushed_through || batch.num_rows() == 0 {
                continue;
            }
            table_state.live_bytes += batch.get_array_memory_size();
            table_state.oldest_live.get_or_insert(now);
            table_state.live.push((seq, batch));
        }
    }

    /// Files and live rows of `table`, consistent with each other.
    pub fn snapshot(&self, table: Table) -> TableSnapshot {
        let state = self.state.lock();
        let table_state = &state.tables[&table];
        TableSnapshot {
            files: table_state.files.clone(),
            live: table_state.live.iter().map(|(_, b)| b.clone()).collect(),
        }
    }

    /// Bytes of Arrow data held in live buffers, all tables.
    pub fn live_bytes(&self) -> usize {
        self.state
            .lock()
            .tables
            .values()
            .map(|t| t.live_bytes)
            .sum()
    }

    /// Live bytes and the age of the oldest live row of `table`.
    pub fn live_status(&self, table: Table) -> (usize, Option<Duration>) {
        let state = self.state.lock();
        let t = &state.tables[&table];
        (t.live_bytes, t.oldest_live.map(|i| i.elapsed()))
    }

    /// Drops every partition of `table` whose whole hour is older than `now - keep`: one
    /// manifest commit removes their files, and the objects are deleted `grace` later (see
    /// [`Store::delete_due`]), so a query that listed them just before still reads them.
    pub fn apply_retention(
        &self,
        table: Table,
        keep: Duration,
        now: SystemTime,
        grace: Duration,
    ) -> Result<RetentionStats> {
        let now_ns = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let keep_ns = i64::try_from(keep.as_nanos()).unwrap_or(i64::MAX);
        let horizon_ns = now_ns.saturating_sub(keep_ns);
        // A file holds one hour (partitions are by the hour of the time column).
        let expired = |f: &FileMeta| {
            let hour = f.min_time_ns.div_euclid(NANOS_PER_HOUR);
            hour.saturating_add(1).saturating_mul(NANOS_PER_HOUR) <= horizon_ns
        };
        let _one_manifest_writer = self.flush_lock.lock();
        let dropped: Vec<Arc<FileMeta>> = self.state.lock().tables[&table]
            .files
            .iter()
            .filter(|f| expired(f))
            .cloned()
            .collect();
        if dropped.is_empty() {
            return Ok(RetentionStats::default());
        }
        let gone: std::collections::HashSet<&str> =
            dropped.iter().map(|f| f.path.as_str()).collect();
        let manifest = {
            let state = self.state.lock();
            self.manifest_of(&state, |t, files| {
                if t == table {
                    files.retain(|f| !gone.contains(f.path.as_str()));
                }
            })
        };
        self.commit_manifest(&manifest)?;
        self.state
            .lock()
            .tables
            .get_mut(&table)
            .expect("every table has state")
            .files
            .retain(|f| !gone.contains(f.path.as_str()));
        let due = Instant::now() + grace;
        let mut stats = RetentionStats::default();
        {
            let mut doomed = self.doomed.lock();
            for file in &dropped {
                let key = self.object_key(&file.path)?;
                doomed.push((due, sidecar_key(&key)));
                doomed.push((due, key));
                stats.files += 1;
                stats.rows += file.rows;
                stats.bytes += file.bytes;
                let partition = partition_dir(&file.path).to_owned();
                if !stats.partitions.contains(&partition) {
                    stats.partitions.push(partition);
                }
            }
        }
        stats.partitions.sort();
        for (name, help, value) in [
            (
                "weft_retention_dropped_files_total",
                "Parquet files dropped by retention (whole hour partitions past their age).",
                stats.files as f64,
            ),
            (
                "weft_retention_dropped_rows_total",
                "Rows dropped by retention.",
                stats.rows as f64,
            ),
        ] {
            self.telemetry
                .add(name, help, &[("table", table.name())], value);
        }
        tracing::info!(
            table = table.name(),
            files = stats.files,
            rows = stats.rows,
            partitions = ?stats.partitions,
            "retention dropped partitions past their age"
        );
        Ok(stats)
    }

    /// Records the retention this store's owner applies (shown in the status view).
    pub fn set_retention(&self, retention: Option<(crate::RetentionConfig, Duration)>) {
        *self.retention.lock() = retention;
    }

    /// The retention applied to this store (`None`: data is kept forever).
    pub fn retention(&self) -> Option<(crate::RetentionConfig, Duration)> {
        self.retention.lock().clone()
    }

    /// Deletes the objects of dropped files whose grace period is over. Returns how many.
    pub fn delete_due(&self) -> Result<usize> {
        let now = Instant::now();
        let due: Vec<ObjectPath> = {
            let mut doomed = self.doomed.lock();
            let (due, later): (Vec<_>, Vec<_>) = doomed.drain(..).partition(|(at, _)| *at <= now);
            *doomed = later;
            due.into_iter().map(|(_, key)| key).collect()
        };
        for (i, key) in due.iter().enumerate() {
            if let Err(e) = self.objects.delete(key) {
                // Kept for the next pass; a restart removes them as unlisted files anyway.
                let mut doomed = self.doomed.lock();
                doomed.extend(due[i..].iter().map(|k| (now, k.clone())));
                return Err(e);
            }
        }
        Ok(due.len())
    }

    /// Committed files, rows and bytes of `table`, and the oldest hour it holds (ns).
    pub fn table_stats(&self, table: Table) -> (usize, u64, u64, Option<i64>) {
        let state = self.state.lock();
        let files = &state.tables[&table].files;
        (
            files.len(),
            files.iter().map(|f| f.rows).sum(),
            files.iter().map(|f| f.bytes).sum(),
            files.iter().map(|f| f.min_time_ns).min(),
        )
    }

    /// The highest flushed-through mark of any table: sequence numbers up to it must never
    /// be used for new records.
    pub fn flushed_through_max(&self) -> u64 {
        let state = self.state.lock();
        state
            .tables
            .values()
            .map(|t| t.flushed_through)
            .max()
            .unwrap_or(0)
    }

    /// Every WAL record `<=` the returned sequence number is in Parquet files.
    pub fn flushed_through_all(&self) -> u64 {
        let state = self.state.lock();
        state
            .tables
            .values()
            .map(|t| t.flushed_through)
            .min()
            .unwrap_or(0)
    }

    /// Writes the live rows of `table` to Parquet and commits them. Blocking: run it on a
    /// blocking thread.
    pub fn flush(&self, table: Table) -> Result<FlushStats> {
        let _one_flush_at_a_time = self.flush_lock.lock();
        let live = {
            let mut state = self.state.lock();
            let durable_seq = state.durable_seq;
            let table_state = state.tables.get_mut(&table).expect("every table has state");
            if table_state.live.is_empty() {
                // Nothing pending for this table: all of the WAL so far is accounted for.
                table_state.flushed_through = table_state.flushed_through.max(durable_seq);
                return Ok(FlushStats {
                    flushed_through: table_state.flushed_through,
                    ..FlushStats::default()
                });
            }
            table_state.live.clone()
        };
        // Whole records in sequence order, up to the partition bound: `through` stays exact.
        let take = records_within_partitions(table, &live, self.max_partitions_per_flush);
        let through = live[take - 1].0;
        let records = WalRecords {
            first: live[0].0,
            last: through,
        };
        let batches: Vec<RecordBatch> = live[..take].iter().map(|(_, b)| b.clone()).collect();
        drop(live);

        let mut new_files = self.write_files(table, &batches)?;
        for file in &mut new_files {
            file.wal_records = Some(records);
        }
        let stats = FlushStats {
            rows: new_files.iter().map(|f| f.rows).sum(),
            files: new_files.len(),
            bytes: new_files.iter().map(|f| f.bytes).sum(),
            flushed_through: through,
        };

        // Only flushes change files and flushed-through marks, and they run one at a time
        // (flush_lock), so the manifest can be built and made durable without blocking the
        // WAL thread or queries; the in-memory swap below is what they see, atomically.
        let manifest = {
            let state = self.state.lock();
            let mut manifest = self.manifest_of(&state, |t, files| {
                if t == table {
                    files.extend(new_files.iter().cloned());
                }
            });
            if let Some(m) = manifest.tables.get_mut(table.name()) {
                m.flushed_through = through;
            }
            manifest
        };
        self.commit_manifest(&manifest)?;
        let mut state = self.state.lock();
        let table_state = state.tables.get_mut(&table).expect("every table has state");
        table_state
            .files
            .extend(new_files.into_iter().map(Arc::new));
        table_state.flushed_through = through;
        table_state.live.retain(|(seq, _)| *seq > through);
        table_state.live_bytes = table_state
            .live
            .iter()
            .map(|(_, b)| b.get_array_memory_size())
            .sum();
        if table_state.live.is_empty() {
            table_state.oldest_live = None;
        }
        Ok(stats)
    }

    /// Writes `batches` as Parquet files sorted by (hour, table sort key): one sort over
    /// byte-comparable row keys, then rows are gathered straight from the live batches in
    /// bounded chunks, so a flush copies each row once and never holds a second full copy.
    fn write_files(&self, table: Table, batches: &[RecordBatch]) -> Result<Vec<FileMeta>> {
        let order = sorted_order(table, batches)?;
        let batch_refs: Vec<&RecordBatch> = batches.iter().collect();
        let mut files = Vec::new();
        for (hour, rows) in order.hour_ranges() {
            for file_rows in rows.chunks(self.max_file_rows) {
                let relative = partition_path(table, &self.tenant, hour);
                let name = format!("{}.parquet", uuid::Uuid::new_v4().simple());
                let path = format!("{relative}/{name}");
                let key = self.object_key(&path)?;
                let written = write_parquet(
                    &self.objects,
                    &key,
                    table,
                    &batch_refs,
                    file_rows,
                    &self.parquet,
                )?;
                files.push(FileMeta {
                    path,
                    tenant: self.tenant.clone(),
                    rows: file_rows.len() as u64,
                    bytes: written.bytes,
                    min_time_ns: written.min_time_ns,
                    max_time_ns: written.max_time_ns,
                    trace_ids: written.trace_ids.map(Arc::new),
                    wal_records: None,
                });
            }
        }
        Ok(files)
    }

    /// Commits `manifest` as the next numbered version. Caller holds `flush_lock`.
    fn commit_manifest(&self, manifest: &Manifest) -> Result<()> {
        let mut current = self.manifest_version.lock();
        let next = current.version + 1;
        let bytes = serde_json::to_vec(manifest)
            .map_err(|e| Error::Storage(format!("encode manifest: {e}")))?;
        let bytes = Bytes::from(bytes);
        let mut next = next;
        loop {
            let key = manifest_key(&self.prefix, next)?;
            if self.objects.create(&key, bytes.clone())? {
                break;
            }
            // Taken. A create of ours whose answer was lost (reset connection, timeout)
            // may have landed after all: that version carries our writer id and this
            // commit, made from the state it was computed from plus what came since,
            // supersedes it. Anyone else's means a second process commits as this node.
            let existing = self.objects.get(&key)?;
            let ours = existing
                .as_deref()
                .and_then(|b| serde_json::from_slice::<Manifest>(b).ok())
                .is_some_and(|m| m.writer.as_deref() == Some(self.writer.as_str()));
            if !ours {
                return Err(Error::Storage(format!(
                    "manifest {} already exists: another process is writing as this node \
                     (same node id or data directory); refusing to overwrite its commits",
                    self.display_key(&key)
                )));
            }
            next += 1;
        }
        let previous = *current;
        *current = ManifestVersion {
            version: next,
            legacy: false,
        };
        drop(current);
        // Readers may have just listed version next - 1: it stays; older ones go (those
        // since the previous commit's clean-up, skipped versions included).
        for stale in previous.version.saturating_sub(1).max(1)..next.saturating_sub(1) {
            let stale = manifest_key(&self.prefix, stale)?;
            if let Err(e) = self.objects.delete(&stale) {
                tracing::warn!(manifest = %stale, error = %e, "cannot delete an old manifest");
            }
        }
        if previous.legacy {
            self.objects
                .delete(&object::key(&self.prefix, LEGACY_MANIFEST)?)?;
        }
        Ok(())
    }

    /// `key` as operators find it: a local path, or the storage URL and the key.
    fn display_key(&self, key: &ObjectPath) -> String {
        match self.objects.local_path(key) {
            Some(path) => path.display().to_string(),
            None => format!("{}/{key}", self.objects.url().trim_end_matches('/')),
        }
    }
}

/// The key of manifest `version` below `prefix`.
fn manifest_key(prefix: &str, version: u64) -> Result<ObjectPath> {
    object::key(prefix, &format!("{MANIFESTS_DIR}/{version:020}.json"))
}

/// The newest manifest below `prefix` and its version, `None` when there is none yet.
fn load_manifest(
    objects: &ObjectStorage,
    prefix: &str,
) -> Result<Option<(ManifestVersion, Manifest)>> {
    let newest = objects
        .list(&object::key(prefix, MANIFESTS_DIR)?)?
        .into_iter()
        .filter_map(|meta| manifest_version_of(&meta.location).map(|v| (v, meta.location)))
        .max();
    let (version, key) = match newest {
        Some((version, key)) => (
            ManifestVersion {
                version,
                legacy: false,
            },
            key,
        ),
        None => (
            ManifestVersion {
                version: 0,
                legacy: true,
            },
            object::key(prefix, LEGACY_MANIFEST)?,
        ),
    };
    let Some(bytes) = objects.get(&key)? else {
        return Ok(None);
    };
    Ok(Some((version, parse_manifest(&key, &bytes)?)))
}

/// The version a key `.../manifests/<version>.json` names.
fn manifest_version_of(key: &ObjectPath) -> Option<u64> {
    key.filename()?.strip_suffix(".json")?.parse().ok()
}

fn parse_manifest(key: &ObjectPath, bytes: &[u8]) -> Result<Manifest> {
    let manifest: Manifest = serde_json::from_slice(bytes)
        .map_err(|e| Error::Storage(format!("corrupt manifest {key}: {e}")))?;
    if manifest.version != MANIFEST_VERSION {
        return Err(Error::Storage(format!(
            "manifest {key} has version {} (expected {MANIFEST_VERSION})",
            manifest.version
        )));
    }
    Ok(manifest)
}

fn tables_of(manifest: Manifest) -> HashMap<Table, Vec<FileMeta>> {
    let mut tables = manifest.tables;
    Table::ALL
        .into_iter()
        .map(|table| {
            let files = tables.remove(table.name()).unwrap_or_default().files;
            (table, files)
        })
        .collect()
}

/// The committed files of every table as the newest manifest below `prefix` lists them,
/// read without opening the store: nothing is written or deleted and no trace-ID filters
/// are loaded (`trace_ids` is `None`). No manifest yet means no files.
pub fn read_committed_files(
    objects: &ObjectStorage,
    prefix: &str,
) -> Result<HashMap<Table, Vec<FileMeta>>> {
    Ok(load_manifest(objects, prefix)?
        .map(|(_, manifest)| tables_of(manifest))
        .unwrap_or_default())
}

/// One node's committed files as a reader last saw them (see [`read_newer_manifest`]).
#[derive(Debug, Clone)]
pub struct CommittedFiles {
    /// The manifest read; `None`: an older release's `manifest.json`, or no manifest.
    pub manifest: Option<ObjectPath>,
    pub tables: Arc<HashMap<Table, Vec<FileMeta>>>,
}

/// For readers of other nodes' data (the query service): the committed files below
/// `prefix`, or `None` when `known` is still the newest manifest. One LIST request (of the
/// keys after `known`) and, when there is a newer manifest, one GET.
pub async fn read_newer_manifest(
    store: &dyn object_store::ObjectStore,
    prefix: &str,
    known: Option<&CommittedFiles>,
) -> Result<Option<CommittedFiles>> {
    let dir = object::key(prefix, MANIFESTS_DIR)?;
    let after = known.and_then(|k| k.manifest.as_ref());
    let newest = object::list(store, &dir, after)
        .await?
        .into_iter()
        .filter_map(|meta| manifest_version_of(&meta.location).map(|v| (v, meta.location)))
        .max();
    let numbered = newest.is_some();
    let key = match newest {
        Some((_, key)) => key,
        // Nothing newer than a numbered manifest already read.
        None if after.is_some() => return Ok(None),
        None => object::key(prefix, LEGACY_MANIFEST)?,
    };
    let tables = match object::get(store, &key).await? {
        Some(bytes) => tables_of(parse_manifest(&key, &bytes)?),
        // Deleted between the LIST and the GET (two newer commits): the caller asks again.
        None if numbered => {
            return Err(Error::Storage(format!("manifest {key} vanished; retry")));
        }
        None => HashMap::new(),
    };
    Ok(Some(CommittedFiles {
        manifest: numbered.then_some(key),
        tables: Arc::new(tables),
    }))
}

/// How many of `live` (whole WAL records, in sequence order) one flush takes: as many as fit
/// in `max_partitions` hour partitions, and at least one.
fn records_within_partitions(
    table: Table,
    live: &[(u64, RecordBatch)],
    max_partitions: usize,
) -> usize {
    let mut hours = BTreeSet::new();
    for (i, (_, batch)) in live.iter().enumerate() {
        let Some(times) = batch
            .column_by_name(table.time_column())
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        else {
            continue;
        };
        let batch_hours: BTreeSet<i64> = times
            .values()
            .iter()
            .map(|t| t.div_euclid(NANOS_PER_HOUR))
            .collect();
        let added = batch_hours.difference(&hours).count();
        if i > 0 && hours.len() + added > max_partitions {
            return i;
        }
        hours.extend(batch_hours);
    }
    live.len()
}

/// `spans/tenant=default/date=2026-11-24/hour=13` of a file path below it.
fn partition_dir(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

/// The rows of `batch` whose time falls in `hour` (ns / 1h).
fn rows_in_hour(table: Table, batch: &RecordBatch, hour: i64) -> Result<RecordBatch> {
    let times = batch
        .column_by_name(table.time_column())
        .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        .ok_or(Error::TimeColumnMissing {
            column: table.time_column(),
        })?;
    let mask: arrow::array::BooleanArray = times
        .values()
        .iter()
        .map(|t| Some(t.div_euclid(NANOS_PER_HOUR) == hour))
        .collect();
    arrow::compute::filter_record_batch(batch, &mask).map_err(|e| Error::Arrow(Arc::new(e)))
}

/// `spans/tenant=default/date=2026-11-24/hour=13`
fn partition_path(table: Table, tenant: &str, hour: i64) -> String {
    let start_ns = hour.saturating_mul(NANOS_PER_HOUR);
    let (date, hh) = match arrow::temporal_conversions::timestamp_ns_to_datetime(start_ns) {
        Some(dt) => (
            dt.format("%Y-%m-%d").to_string(),
            dt.format("%H").to_string(),
        ),
        None => ("1970-01-01".to_owned(), "00".to_owned()),
    };
    format!("{}/tenant={tenant}/date={date}/hour={hh}", table.name())
}

/// Rows of several batches in storage order, with the hour each belongs to.
struct SortedOrder {
    /// `(batch index, row index)` in storage order.
    rows: Vec<(usize, usize)>,
    /// Hour (ns / 1h) of each entry of `rows`.
    hours: Vec<i64>,
}

impl SortedOrder {
    /// Consecutive runs of rows that share an hour.
    fn hour_ranges(&self) -> Vec<(i64, &[(usize, usize)])> {
        let mut ranges = Vec::new();
        let mut start = 0;
        for i in 1..=self.rows.len() {
            if i == self.rows.len() || self.hours[i] != self.hours[start] {
                ranges.push((self.hours[start], &self.rows[start..i]));
                start = i;
            }
        }
        ranges
    }
}

/// Sorts the rows of `batches` by (hour of the time column, the table's sort columns).
/// The keys are arrow's byte-comparable row format, so the sort compares plain bytes
/// instead of calling a comparator per column.
fn sorted_order(table: Table, batches: &[RecordBatch]) -> Result<SortedOrder> {
    let schema = table.schema();
    let time_column = table.time_column();
    let mut fields = vec![SortField::new(DataType::Int64)];
    for name in table.sort_columns() {
        let field = schema
            .field_with_name(name)
            .map_err(|e| Error::Storage(format!("sort column {name}: {e}")))?;
        fields.push(SortField::new(field.data_type().clone()));
    }
    let converter =
        RowConverter::new(fields).map_err(|e| Error::Storage(format!("sort keys: {e}")))?;
    let total: usize = batches.iter().map(|b| b.num_rows()).sum();
    let mut keys = converter.empty_rows(total, total * 48);
    let mut rows = Vec::with_capacity(total);
    let mut hours = Vec::with_capacity(total);
    for (batch_index, batch) in batches.iter().enumerate() {
        let times = batch
            .column_by_name(time_column)
            .ok_or_else(|| Error::Storage(format!("time column {time_column} missing")))?
            .as_primitive::<TimestampNanosecondType>();
        let batch_hours: Vec<i64> = times
            .values()
            .iter()
            .map(|t| t.div_euclid(NANOS_PER_HOUR))
            .collect();
        hours.extend_from_slice(&batch_hours);
        let mut columns: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(batch_hours))];
        for name in table.sort_columns() {
            let column = batch
                .column_by_name(name)
                .ok_or_else(|| Error::Storage(format!("sort column {name} missing")))?;
            columns.push(std::sync::Arc::clone(column));
        }
        converter
            .append(&mut keys, &columns)
            .map_err(|e| Error::Storage(format!("sort keys: {e}")))?;
        rows.extend((0..batch.num_rows()).map(|row| (batch_index, row)));
    }
    let mut order: Vec<u32> = (0..total as u32).collect();
    order.sort_unstable_by(|a, b| keys.row(*a as usize).cmp(&keys.row(*b as usize)));
    Ok(SortedOrder {
        rows: order.iter().map(|&i| rows[i as usize]).collect(),
        hours: order.iter().map(|&i| hours[i as usize]).collect(),
    })
}

/// Rows gathered from the live batches per write: bounds the flush's extra memory.
const WRITE_CHUNK_ROWS: usize = 64 * 1024;

struct Written {
    bytes: u64,
    min_time_ns: i64,
    max_time_ns: i64,
    trace_ids: Option<TraceIdFilter>,
}

/// Writes the Parquet file (and, for spans, its trace-ID filter) at `key`. The file is
/// encoded in memory and written with one request: a flush's files are bounded by
/// `max_file_rows` and by the live buffer they come from, compressed.
fn write_parquet(
    objects: &ObjectStorage,
    key: &ObjectPath,
    table: Table,
    batches: &[&RecordBatch],
    rows: &[(usize, usize)],
    settings: &ParquetSettings,
) -> Result<Written> {
    let parquet_err =
        |e: parquet::errors::ParquetError| Error::Storage(format!("parquet {key}: {e}"));
    let props = writer_properties(table, settings, rows.len() as u64);
    let mut writer =
        ArrowWriter::try_new(Vec::new(), table.schema(), Some(props)).map_err(parquet_err)?;
    let mut min_time_ns = i64::MAX;
    let mut max_time_ns = i64::MIN;
    // Span rows arrive sorted by trace id, so distinct ids are runs of equal neighbours.
    let mut trace_ids: Vec<[u8; 16]> = Vec::new();
    for chunk in rows.chunks(WRITE_CHUNK_ROWS) {
        let batch = interleave_record_batch(batches, chunk)
            .map_err(|e| Error::Storage(format!("gather rows: {e}")))?;
        let times = batch
            .column_by_name(table.time_column())
            .ok_or_else(|| Error::Storage("time column missing".into()))?
            .as_primitive::<TimestampNanosecondType>();
        debug_assert_eq!(times.null_count(), 0, "time columns are not nullable");
        min_time_ns = min_time_ns.min(arrow::compute::min(times).unwrap_or(i64::MAX));
        max_time_ns = max_time_ns.max(arrow::compute::max(times).unwrap_or(i64::MIN));
        if table == Table::Spans {
            collect_distinct_trace_ids(&batch, &mut trace_ids)?;
        }
        writer.write(&batch).map_err(parquet_err)?;
    }
    let encoded = Bytes::from(writer.into_inner().map_err(parquet_err)?);
    let bytes = encoded.len() as u64;
    objects.put(key, encoded)?;
    let trace_ids = if table == Table::Spans {
        let filter = TraceIdFilter::build(trace_ids.len(), trace_ids.iter().map(|id| &id[..]));
        objects.put(&sidecar_key(key), Bytes::from(filter.to_bytes()))?;
        Some(filter)
    } else {
        None
    };
    Ok(Written {
        bytes,
        min_time_ns,
        max_time_ns,
        trace_ids,
    })
}

fn collect_distinct_trace_ids(batch: &RecordBatch, into: &mut Vec<[u8; 16]>) -> Result<()> {
    let ids = batch
        .column_by_name(weft_schemas::columns::TRACE_ID)
        .ok_or_else(|| Error::Storage("trace_id column missing".into()))?
        .as_fixed_size_binary();
    for id in ids.iter().flatten() {
        let Ok(id) = <[u8; 16]>::try_from(id) else {
            continue;
        };
        if into.last() != Some(&id) {
            into.push(id);
        }
    }
    Ok(())
}

/// Deletes Parquet files of `table` that the manifest does not list (crash leftovers), and
/// trace id filters whose Parquet file is not listed. Returns the size of every object kept,
/// by key, so that the caller checks the listed files without asking again.
fn remove_orphans(
    objects: &ObjectStorage,
    prefix: &str,
    table: Table,
    committed: &[FileMeta],
) -> Result<HashMap<String, u64>> {
    let keep: std::collections::HashSet<String> = committed
        .iter()
        .map(|f| object::key(prefix, &f.path).map(|k| k.to_string()))
        .collect::<Result<_>>()?;
    let mut sizes = HashMap::new();
    for meta in objects.list(&object::key(prefix, table.name())?)? {
        let key = meta.location.to_string();
        let orphan = match meta.location.extension() {
            Some("parquet") => !keep.contains(&key),
            Some("tids") => {
                let parquet = format!("{}.parquet", key.trim_end_matches(".tids"));
                !keep.contains(&parquet)
            }
            // Temporary files of the local backend, anything else: not ours to judge.
            _ => false,
        };
        if orphan {
            tracing::info!(file = %meta.location, "removing a file that no manifest lists");
            objects.delete(&meta.location)?;
        } else {
            sizes.insert(key, meta.size);
        }
    }
    Ok(sizes)
}

#[cfg(test)]
mod tests {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    use super::*;

    const HOUR: u64 = NANOS_PER_HOUR as u64;

    fn options(dir: &Path, max_partitions_per_flush: usize) -> StoreOptions {
        StoreOptions {
            tenant: "default".into(),
            parquet: ParquetSettings::default(),
            max_file_rows: 1_000,
            max_partitions_per_flush,
            incidents: Arc::new(Incidents::open(dir).unwrap()),
            telemetry: Telemetry::new(),
            row_source: None,
            objects: None,
            prefix: String::new(),
        }
    }

    /// One record's rows: a span in each of `hours` (hours since the epoch).
    fn record(seq: u64, hours: &[u64]) -> (u64, (Table, RecordBatch)) {
        let spans = hours
            .iter()
            .enumerate()
            .map(|(i, hour)| Span {
                trace_id: [seq as u8, i as u8, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1].to_vec(),
                span_id: [1, 2, 3, 4, 5, 6, seq as u8, i as u8 + 1].to_vec(),
                name: "op".into(),
                start_time_unix_nano: hour * HOUR + 1,
                end_time_unix_nano: hour * HOUR + 2,
                ..Span::default()
            })
            .collect();
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }],
        };
        let converted = weft_schemas::spans::from_otlp(&request);
        assert_eq!(converted.rejected, 0);
        (seq, (Table::Spans, converted.batch))
    }

    #[test]
    fn a_flush_writes_whole_records_up_to_the_partition_bound() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options(dir.path(), 4)).unwrap();
        // Record 1 spans 6 hours (taken whole, alone); records 2-4 three hours each.
        store.apply_durable(vec![
            record(1, &[490_000, 490_001, 490_002, 490_003, 490_004, 490_005]),
            record(2, &[490_100, 490_101, 490_102]),
            record(3, &[490_100, 490_101, 490_103]),
            record(4, &[490_200, 490_201, 490_202]),
        ]);
        let first = store.flush(Table::Spans).unwrap();
        assert_eq!((first.files, first.rows, first.flushed_through), (6, 6, 1));
        let second = store.flush(Table::Spans).unwrap();
        assert_eq!(
            (second.files, second.rows, second.flushed_through),
            (4, 6, 3),
            "records 2 and 3 share hours: 4 partitions; record 4 would make 7"
        );
        let third = store.flush(Table::Spans).unwrap();
        assert_eq!((third.files, third.rows, third.flushed_through), (3, 3, 4));
        assert!(store.snapshot(Table::Spans).live.is_empty());
        drop(store);
        // Flushed-through marks stayed exact: nothing would be replayed twice.
        let store = Store::open(dir.path(), options(dir.path(), 4)).unwrap();
        assert!(store.is_flushed(Table::Spans, 4));
        let rows: u64 = store
            .snapshot(Table::Spans)
            .files
            .iter()
            .map(|f| f.rows)
            .sum();
        assert_eq!(rows, 15);
    }

    /// Rows kept by sequence number, as the WAL would give them back.
    struct Records(Mutex<Vec<(u64, (Table, RecordBatch))>>);

    impl RowSource for Records {
        fn rows(&self, table: Table, records: WalRecords) -> Result<Vec<RecordBatch>> {
            Ok(self
                .0
                .lock()
                .iter()
                .filter(|(seq, (t, _))| *t == table && (records.first..=records.last).contains(seq))
                .map(|(_, (_, b))| b.clone())
                .collect())
        }
    }

    fn stored_rows(store: &Store) -> u64 {
        store
            .snapshot(Table::Spans)
            .files
            .iter()
            .map(|f| f.rows)
            .sum()
    }

    #[test]
    fn a_quarantined_file_is_rebuilt_with_its_hour_only_when_every_row_is_there() {
        let dir = tempfile::tempdir().unwrap();
        let written = vec![
            record(1, &[490_000, 490_000, 490_000, 490_001]),
            record(2, &[490_000, 490_000, 490_001]),
        ];
        let source = Arc::new(Records(Mutex::new(written.clone())));
        let open = |source: &Arc<Records>| {
            Store::open(
                dir.path(),
                StoreOptions {
                    max_file_rows: 2,
                    row_source: Some(std::sync::Arc::clone(source) as Arc<dyn RowSource>),
                    ..options(dir.path(), 32)
                },
            )
            .unwrap()
        };
        let store = open(&source);
        store.apply_durable(written);
        let stats = store.flush(Table::Spans).unwrap();
        // Hour 490000 holds 5 rows (3 files of at most 2), hour 490001 holds 2 (1 file).
        assert_eq!((stats.files, stats.rows), (4, 7));
        let files = store.snapshot(Table::Spans).files;
        assert!(
            files
                .iter()
                .all(|f| f.wal_records == Some(WalRecords { first: 1, last: 2 }))
        );
        let in_first_hour: Vec<_> = files
            .iter()
            .filter(|f| f.min_time_ns.div_euclid(NANOS_PER_HOUR) == 490_000)
            .collect();
        assert_eq!(in_first_hour.len(), 3);

        assert!(
            store
                .quarantine(Table::Spans, &in_first_hour[1].path, "test")
                .unwrap()
        );
        assert_eq!(stored_rows(&store), 7, "the whole hour was written again");
        let after = store.snapshot(Table::Spans).files;
        assert!(
            after
                .iter()
                .all(|f| !in_first_hour.iter().any(|old| old.path == f.path))
        );
        assert!(after.iter().any(|f| {
            f.path
                == files
                    .iter()
                    .find(|f| f.min_time_ns.div_euclid(NANOS_PER_HOUR) == 490_001)
                    .unwrap()
                    .path
        }));
        let incidents = store.incidents.list();
        assert_eq!(incidents[0].details["rebuilt"]["rows"], 5);
        assert_eq!(
            incidents[0].details["rebuilt"]["replaced"]
                .as_array()
                .unwrap()
                .len(),
            2
        );
        drop(store);

        // Replaced healthy files are removed at the next start; the rebuilt ones stay.
        let store = open(&source);
        assert_eq!(stored_rows(&store), 7);
        for old in &in_first_hour {
            assert!(!dir.path().join(&old.path).exists(), "{}", old.path);
        }

        // A record no longer in the WAL: the count does not match, nothing is written.
        source.0.lock().retain(|(seq, _)| *seq != 2);
        let second_hour = store
            .snapshot(Table::Spans)
            .files
            .iter()
            .find(|f| f.min_time_ns.div_euclid(NANOS_PER_HOUR) == 490_001)
            .cloned()
            .unwrap();
        assert!(
            store
                .quarantine(Table::Spans, &second_hour.path, "test")
                .unwrap()
        );
        assert_eq!(
            stored_rows(&store),
            5,
            "its 2 rows are missing, not half rebuilt"
        );
        let incident = store.incidents.list().pop().unwrap();
        assert!(incident.details["rebuilt"].is_null());
        assert!(
            incident.message.contains("holds 1 of the 2 rows"),
            "{}",
            incident.message
        );
    }

    #[test]
    fn retention_drops_whole_expired_hours_and_deletes_them_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), options(dir.path(), 32)).unwrap();
        store.apply_durable(vec![record(1, &[490_000, 490_001, 490_001, 490_005])]);
        store.flush(Table::Spans).unwrap();
        let before = store.snapshot(Table::Spans).files;
        assert_eq!(before.len(), 3);
        // Keep 4 h at 490_006:30: the horizon is 490_002:30, so hours 490_000 and 490_001
        // are wholly past it and 490_005 is not.
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(490_006 * 3600 + 1800);
        let keep = Duration::from_secs(4 * 3600);
        let stats = store
            .apply_retention(Table::Spans, keep, now, Duration::from_secs(3600))
            .unwrap();
        assert_eq!((stats.files, stats.rows, stats.partitions.len()), (2, 3, 2));
        let after = store.snapshot(Table::Spans).files;
        assert_eq!(after.len(), 1);
        assert_eq!(after[0].min_time_ns.div_euclid(NANOS_PER_HOUR), 490_005);
        // A query that listed the files before still reads every one during the grace.
        for file in &before {
            store.verify_file(file).unwrap();
        }
        assert_eq!(store.delete_due().unwrap(), 0, "nothing is due yet");
        assert_eq!(
            store
                .apply_retention(Table::Spans, keep, now, Duration::ZERO)
                .unwrap(),
            RetentionStats::default(),
            "a second pass finds nothing more"
        );

        // With no grace the last hour goes at once: file and trace-id filter.
        let later = now + Duration::from_secs(10 * 3600);
        let stats = store
            .apply_retention(Table::Spans, keep, later, Duration::ZERO)
            .unwrap();
        assert_eq!(stats.files, 1);
        assert_eq!(store.delete_due().unwrap(), 2);
        assert!(!dir.path().join(&after[0].path).exists());
        drop(store);
        // The commit holds across a restart: nothing comes back, flush marks stay.
        let store = Store::open(dir.path(), options(dir.path(), 32)).unwrap();
        assert!(store.snapshot(Table::Spans).files.is_empty());
        assert!(store.is_flushed(Table::Spans, 1));
    }

    #[test]
    fn a_second_process_committing_as_the_same_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let first = Store::open(dir.path(), options(dir.path(), 32)).unwrap();
        let second = Store::open(dir.path(), options(dir.path(), 32)).unwrap();
        first.apply_durable(vec![record(1, &[490_000])]);
        first.flush(Table::Spans).unwrap();
        second.apply_durable(vec![record(2, &[490_001])]);
        let refused = second.flush(Table::Spans).unwrap_err();
        assert!(
            refused
                .to_string()
                .contains("another process is writing as this node"),
            "{refused}"
        );
        // The first one goes on committing; only two manifest versions are kept.
        for seq in 3..6 {
            first.apply_durable(vec![record(seq, &[490_000])]);
            first.flush(Table::Spans).unwrap();
        }
        let versions = std::fs::read_dir(dir.path().join(MANIFESTS_DIR))
            .unwrap()
            .count();
        assert_eq!(versions, 2);
        drop((first, second));
        let reopened = Store::open(dir.path(), options(dir.path(), 32)).unwrap();
        assert_eq!(
            stored_rows(&reopened),
            4,
            "the refused flush left nothing behind"
        );
    }
}
