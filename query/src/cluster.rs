//! The query service of a cluster (`weft query`): tables over every collector node's files on
//! shared storage plus the rows each collector has not flushed yet, with duplicates removed.
//!
//! ```text
//!  scan(table, filters) ─> ClusterSource::gather
//!     ├─ every member of the current ClusterView (up or down: a down node may be back
//!     │  before membership notices), concurrently, each with a deadline:
//!     │    GET http://<node>/internal/v1/snapshot?table=&trace_id=&min_time_ns=&max_time_ns=
//!     │    answered ─> its file list + its live rows, one consistent snapshot
//!     │    no answer ─> warning "collector c2 did not answer (…)", its manifest.json instead
//!     ├─ directories under <storage>/nodes/ of nodes no longer members ─> their manifest.json
//!     └─ trace_id = X: keep files whose trace-id filter (<file>.tids, cached) may hold X
//!  ─> table::ClusterTable: files + live rows by hour (and trace-id range) ─> merge::DedupMergeExec
//!       per unit: Parquet files (one per stream, sorted) + sorted live rows
//!                 ─> sort-preserving merge on the table's sort key ─> drop repeated rows
//! ```
//!
//! # Why duplicates exist and why they are removed at query time
//!
//! Ingest sends every trace to R = 2 collectors, and both store it; a retried export or a
//! hinted hand-off replay can store a span twice on one node. Removing them at write time
//! would need coordination between nodes (or a read before every write); removing them in a
//! later compaction would still leave them visible until it runs and would not cover live
//! rows. So every read removes them, exactly:
//!
//! * a span is identified by (trace_id, span_id, kind, start_time); a metric point by
//!   (metric_name, service_name, series_id, time, metric_type, start_time);
//! * every Parquet file is sorted by the table's sort key (spans: trace_id, start_time;
//!   metrics: metric_name, service_name, series_id, time) and all copies of a row sit in the
//!   same hour partition (the hour of its time), so a sort-preserving merge of one hour's
//!   files and the (sorted) live rows of that hour puts copies next to each other, within one
//!   run of equal sort keys; dropping a row whose identity was already seen in the current
//!   run needs memory for one run only (usually one row);
//! * memory of the merge is one buffered batch per file it reads at once; span hours with
//!   many bytes are cut into trace-id ranges (the range is pushed into the Parquet reader,
//!   whose page index skips the pages outside it), so each merge reads a slice of every file
//!   and the slices run one after another, in parallel across partitions.
//!
//! `weft up` (one node, [`crate::DataSource::Local`]) has no copies and keeps its own
//! provider: no HTTP, no merge.
//!
//! # Failures
//!
//! A collector that does not answer within `fanout_timeout` (or fails) only costs its live
//! rows: its flushed files are read from its manifest on storage. The answer says so (see
//! [`crate::warnings`]), and later scans of the same request do not wait for it again.

mod merge;
pub(crate) mod table;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use tokio::sync::watch;
use weft_cluster::snapshot::{self, Snapshot, SnapshotRequest};
use weft_cluster::{ClusterView, Member, NODES_DIR};
use weft_schemas::Table;
use weft_storage::FileMeta;
use weft_storage::trace_index::TraceIdFilter;

pub use merge::dedup_scan;
pub use table::ClusterTable;

use crate::warnings::RequestState;
use crate::{Error, Result};

/// Where the tables of a cluster come from: shared storage plus the collectors named by
/// membership. One per `weft query` process; see the module docs.
pub struct ClusterSource {
    storage_root: PathBuf,
    view: watch::Receiver<Arc<ClusterView>>,
    fanout_timeout: Duration,
    client: reqwest::Client,
    /// Trace-id filters of span files read from storage, by absolute path (files never
    /// change once committed). `None`: no filter could be read or built; always scanned.
    filters: Mutex<HashMap<PathBuf, Option<Arc<TraceIdFilter>>>>,
    /// Parsed manifests of node directories, reused while the file is unchanged.
    manifests: Mutex<HashMap<PathBuf, CachedManifest>>,
    tuning: merge::Tuning,
}

impl std::fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSource")
            .field("storage_root", &self.storage_root)
            .field("fanout_timeout", &self.fanout_timeout)
            .finish()
    }
}

#[derive(Clone)]
struct CachedManifest {
    stamp: FileStamp,
    tables: Arc<HashMap<Table, Vec<FileMeta>>>,
}

/// What identifies one version of a manifest: it is replaced by a rename, so a new version
/// is a new inode (and usually a new size and modification time).
#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl FileStamp {
    fn of(metadata: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(metadata);
        #[cfg(not(unix))]
        let inode = 0;
        Self {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            inode,
        }
    }
}

/// One collector node's part of a scan.
#[derive(Debug)]
pub(crate) struct NodeData {
    pub node_id: String,
    /// `<storage>/nodes/<node_id>`: file paths are relative to it.
    pub dir: PathBuf,
    pub files: Vec<FileMeta>,
    /// Rows not yet flushed (empty for nodes read from storage).
    pub live: Vec<RecordBatch>,
}

impl ClusterSource {
    /// Reads `<storage_root>/nodes/*` and asks the collectors in `view` for their unflushed
    /// rows, waiting at most `fanout_timeout` for each (`[cluster] fanout_timeout_ms`).
    pub fn new(
        storage_root: PathBuf,
        view: watch::Receiver<Arc<ClusterView>>,
        fanout_timeout: Duration,
    ) -> Self {
        let client = reqwest::Client::builder()
            // Internal traffic goes straight to the node, never through a proxy from the
            // environment.
            .no_proxy()
            .connect_timeout(fanout_timeout)
            .build()
            // Building fails only when a TLS backend or a resolver configuration cannot be
            // loaded; this client has neither (plain HTTP, the system resolver).
            .expect("a plain-HTTP client always builds");
        Self {
            storage_root,
            view,
            fanout_timeout,
            client,
            filters: Mutex::new(HashMap::new()),
            manifests: Mutex::new(HashMap::new()),
            tuning: merge::Tuning::default(),
        }
    }

    /// Cuts span hours into trace-id ranges at smaller sizes (tests exercise the ranges
    /// with a few kilobytes of data).
    #[cfg(test)]
    pub(crate) fn with_tuning(mut self, tuning: merge::Tuning) -> Self {
        self.tuning = tuning;
        self
    }

    pub(crate) fn tuning(&self) -> merge::Tuning {
        self.tuning
    }

    pub fn storage_root(&self) -> &Path {
        &self.storage_root
    }

    pub fn fanout_timeout(&self) -> Duration {
        self.fanout_timeout
    }

    /// The files and live rows of every node for one scan (see the module docs). Nodes that
    /// do not answer are recorded in `state` (a warning, and no second wait in this request).
    pub(crate) async fn gather(
        &self,
        request: &SnapshotRequest,
        state: &RequestState,
    ) -> Result<Vec<NodeData>> {
        let view = self.view.borrow().clone();
        let (asked, skipped): (Vec<&Member>, Vec<&Member>) = view
            .members
            .iter()
            .partition(|m| !state.is_unreachable(&m.node_id));
        let listing = {
            let root = self.storage_root.join(NODES_DIR);
            tokio::task::spawn_blocking(move || node_directories(&root))
        };
        let answers =
            futures::future::join_all(asked.iter().map(|member| self.ask(member, request))).await;

        let mut nodes = Vec::new();
        let mut from_storage: Vec<String> = skipped.iter().map(|m| m.node_id.clone()).collect();
        for (member, answer) in asked.iter().zip(answers) {
            match answer {
                Ok(snapshot) => nodes.push(NodeData {
                    node_id: member.node_id.clone(),
                    dir: self.node_dir(&member.node_id),
                    files: snapshot.header.files,
                    live: snapshot.live,
                }),
                Err(reason) => {
                    // Debug, not warn: while a node is down every query says so; the answer
                    // carries the warning and membership logs the node going down.
                    tracing::debug!(node = %member.node_id, %reason, "collector did not answer a snapshot");
                    state.mark_unreachable(
                        &member.node_id,
                        format!(
                            "collector {} did not answer ({reason}): its unflushed data is missing from this result",
                            member.node_id
                        ),
                    );
                    from_storage.push(member.node_id.clone());
                }
            }
        }
        let directories = listing
            .await
            .map_err(|e| Error::Execution(format!("listing node directories: {e}")))?;
        if view.members.is_empty() && !directories.is_empty() {
            // Membership has not found anyone yet (or lost everyone): every directory looks
            // like a removed node, but its owner may well be running with unflushed rows.
            state.add(
                "no collector is known (cluster membership is empty): unflushed data is missing from this result"
                    .to_owned(),
            );
        }
        let members: HashSet<&str> = view.members.iter().map(|m| m.node_id.as_str()).collect();
        from_storage.extend(
            directories
                .into_iter()
                .filter(|name| !members.contains(name.as_str())),
        );

        for node_id in from_storage {
            let dir = self.node_dir(&node_id);
            match self.committed_files(&dir).await {
                Ok(tables) => {
                    let files = tables
                        .get(&request.table)
                        .into_iter()
                        .flatten()
                        .filter(|f| request.may_match_file(f))
                        .cloned()
                        .collect();
                    nodes.push(NodeData {
                        node_id,
                        dir,
                        files,
                        live: Vec::new(),
                    });
                }
                Err(e) => state.add(format!(
                    "collector {node_id}: cannot read its manifest ({e}): its stored data is missing from this result"
                )),
            }
        }
        for node in &mut nodes {
            // A manifest or an answer naming a path outside the node's directory is not
            // followed (a corrupt or hostile node must not make the query read other files).
            let before = node.files.len();
            node.files.retain(|f| safe_relative(&f.path));
            if node.files.len() != before {
                state.add(format!(
                    "collector {}: {} file path(s) outside its directory were ignored",
                    node.node_id,
                    before - node.files.len()
                ));
            }
        }
        nodes.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        Ok(nodes)
    }

    fn node_dir(&self, node_id: &str) -> PathBuf {
        weft_cluster::node_data_dir(&self.storage_root, node_id)
    }

    /// One collector's snapshot, within the deadline.
    async fn ask(
        &self,
        member: &Member,
        request: &SnapshotRequest,
    ) -> std::result::Result<Snapshot, AskError> {
        let url = format!(
            "http://{}{}?{}",
            member.http_addr,
            snapshot::PATH,
            request.to_query_string()
        );
        let table = request.table;
        let work = async {
            let response = self
                .client
                .get(&url)
                .send()
                .await
                .map_err(describe_http_error)?;
            let status = response.status();
            if !status.is_success() {
                let text = response.text().await.unwrap_or_default();
                let text: String = text.chars().take(200).collect();
                return Err(AskError::Status {
                    status: status.as_u16(),
                    body: text.trim().to_owned(),
                });
            }
            let body = response.bytes().await.map_err(describe_http_error)?;
            tokio::task::spawn_blocking(move || snapshot::decode(table, &body))
                .await
                .map_err(AskError::DecodingTask)?
                .map_err(AskError::BadSnapshot)
        };
        match tokio::time::timeout(self.fanout_timeout, work).await {
            Ok(answer) => answer,
            Err(_) => Err(AskError::Timeout(self.fanout_timeout)),
        }
    }

    /// The committed files of a node directory, from its manifest (cached while unchanged).
    async fn committed_files(&self, dir: &Path) -> Result<Arc<HashMap<Table, Vec<FileMeta>>>> {
        let manifest = dir.join("manifest.json");
        let stamp = match tokio::fs::metadata(&manifest).await {
            Ok(metadata) => Some(FileStamp::of(&metadata)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(Error::Execution(format!("{}: {e}", manifest.display()))),
        };
        let Some(stamp) = stamp else {
            return Ok(Arc::new(HashMap::new()));
        };
        if let Some(cached) = self.manifests.lock().get(dir)
            && cached.stamp == stamp
        {
            return Ok(std::sync::Arc::clone(&cached.tables));
        }
        let read_dir = dir.to_path_buf();
        let tables = tokio::task::spawn_blocking(move || {
            weft_storage::store::read_committed_files(&read_dir)
        })
        .await
        .map_err(|e| Error::Execution(format!("manifest task: {e}")))?
        .map_err(|e| Error::Execution(e.to_string()))?;
        let tables = Arc::new(tables);
        self.manifests.lock().insert(
            dir.to_path_buf(),
            CachedManifest {
                stamp,
                tables: std::sync::Arc::clone(&tables),
            },
        );
        Ok(tables)
    }

    /// The trace-id filters of span files (absolute paths), read or rebuilt once per file.
    pub(crate) async fn trace_filters(
        &self,
        paths: &[PathBuf],
    ) -> Result<Vec<Option<Arc<TraceIdFilter>>>> {
        let missing: Vec<PathBuf> = {
            let cache = self.filters.lock();
            paths
                .iter()
                .filter(|p| !cache.contains_key(*p))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let loaded = tokio::task::spawn_blocking(move || {
                missing
                    .into_iter()
                    .map(|path| {
                        // Another node's file: read, never moved; unreadable means always
                        // scanned (the owning collector quarantines it on its next start).
                        let filter = match TraceIdFilter::load_or_rebuild(&path) {
                            Ok(filter) => Some(Arc::new(filter)),
                            Err(e) => {
                                tracing::warn!(error = %e, "no trace id filter");
                                None
                            }
                        };
                        (path, filter)
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| Error::Execution(format!("trace id filter task: {e}")))?;
            self.filters.lock().extend(loaded);
        }
        let cache = self.filters.lock();
        Ok(paths
            .iter()
            .map(|p| cache.get(p).cloned().flatten())
            .collect())
    }
}

/// Names of the node directories under `<storage>/nodes` (none if it does not exist yet).
fn node_directories(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    names
}

/// A manifest path must stay inside its node directory.
fn safe_relative(path: &str) -> bool {
    let path = Path::new(path);
    path.is_relative()
        && path
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

/// Why a collector's snapshot is missing from a query; the text goes into the answer's
/// warning (`collector a did not answer (timeout after 2s): …`).
#[derive(Debug, thiserror::Error)]
enum AskError {
    #[error("connection failed")]
    ConnectionFailed,
    #[error("timed out")]
    TimedOut,
    /// Another HTTP failure (its text without the URL).
    #[error("{0}")]
    Http(reqwest::Error),
    /// The collector answered with an error status; `body` is the first 200 characters.
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("decoding task: {0}")]
    DecodingTask(tokio::task::JoinError),
    #[error("bad snapshot: {0}")]
    BadSnapshot(weft_cluster::Error),
    /// No answer within `cluster.fanout_timeout`.
    #[error("timeout after {}", human_duration(*.0))]
    Timeout(Duration),
}

fn describe_http_error(e: reqwest::Error) -> AskError {
    if e.is_connect() {
        AskError::ConnectionFailed
    } else if e.is_timeout() {
        AskError::TimedOut
    } else {
        AskError::Http(e.without_url())
    }
}

/// `2s`, `1.5s`, `250ms`.
fn human_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1000 && ms.is_multiple_of(100) {
        let tenths = ms / 100;
        if tenths.is_multiple_of(10) {
            format!("{}s", tenths / 10)
        } else {
            format!("{}.{}s", tenths / 10, tenths % 10)
        }
    } else {
        format!("{ms}ms")
    }
}
