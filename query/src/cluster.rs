//! The query service of a cluster (`weft query`): tables over every collector node's files on
//! shared storage plus the rows each collector has not flushed yet, with duplicates removed.
//!
//! ```text
//!  scan(table, filters) ─> ClusterSource::gather
//!     ├─ every member of the current ClusterView (up or down: a down node may be back
//!     │  before membership notices), concurrently, each with a deadline:
//!     │    GET http://<node>/internal/v1/snapshot?table=&trace_id=&min_time_ns=&max_time_ns=
//!     │    answered ─> its file list + its live rows, one consistent snapshot
//!     │    no answer ─> warning "collector c2 did not answer (…)", its newest manifest
//!     ├─ prefixes under <storage.url>/nodes/ of nodes no longer members ─> their manifests
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
use std::time::Duration;

use arrow::array::RecordBatch;
use parking_lot::Mutex;
use tokio::sync::watch;
use weft_cluster::snapshot::{self, Snapshot, SnapshotRequest};
use weft_cluster::{ClusterView, Member, NODES_DIR, node_prefix};
use weft_schemas::Table;
use weft_storage::store::CommittedFiles;
use weft_storage::trace_index::TraceIdFilter;
use weft_storage::{FileMeta, ObjectStorage};

pub use merge::dedup_scan;
pub use table::ClusterTable;

use crate::warnings::RequestState;
use crate::{Error, Result};

/// Where the tables of a cluster come from: shared storage plus the collectors named by
/// membership. One per `weft query` process; see the module docs.
pub struct ClusterSource {
    objects: Arc<ObjectStorage>,
    /// Local directory of this query node (rollup files).
    local_root: PathBuf,
    view: watch::Receiver<Arc<ClusterView>>,
    fanout_timeout: Duration,
    client: reqwest::Client,
    /// Trace-id filters of span files read from storage, by object key (files never
    /// change once committed). `None`: no filter could be read or built; always scanned.
    filters: Mutex<HashMap<String, Option<Arc<TraceIdFilter>>>>,
    /// The newest manifest read of each node prefix; replaced when a newer one is listed.
    manifests: Mutex<HashMap<String, CommittedFiles>>,
    tuning: merge::Tuning,
}

impl std::fmt::Debug for ClusterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSource")
            .field("objects", &self.objects)
            .field("fanout_timeout", &self.fanout_timeout)
            .finish()
    }
}

/// One collector node's part of a scan.
#[derive(Debug)]
pub(crate) struct NodeData {
    pub node_id: String,
    /// `nodes/<node_id>` in the storage: file paths are relative to it.
    pub prefix: String,
    pub files: Vec<FileMeta>,
    /// Rows not yet flushed (empty for nodes read from storage).
    pub live: Vec<RecordBatch>,
}

impl ClusterSource {
    /// Reads the node directories under `<storage_root>/nodes/` on local (or network) disk;
    /// see [`ClusterSource::with_objects`].
    pub fn new(
        storage_root: PathBuf,
        view: watch::Receiver<Arc<ClusterView>>,
        fanout_timeout: Duration,
    ) -> Result<Self> {
        let objects =
            ObjectStorage::local(&storage_root).map_err(|e| Error::Execution(e.to_string()))?;
        Ok(Self::with_objects(
            objects,
            storage_root,
            view,
            fanout_timeout,
        ))
    }

    /// Reads `nodes/*` of `objects` and asks the collectors in `view` for their unflushed
    /// rows, waiting at most `fanout_timeout` for each (`[cluster] fanout_timeout_ms`).
    /// `local_root` is this node's own directory (rollups).
    pub fn with_objects(
        objects: Arc<ObjectStorage>,
        local_root: PathBuf,
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
            objects,
            local_root,
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

    /// This query node's own directory (rollup files).
    pub fn local_root(&self) -> &Path {
        &self.local_root
    }

    /// Where the collectors' files and manifests are.
    pub fn objects(&self) -> &Arc<ObjectStorage> {
        &self.objects
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
        let (listing, answers) = futures::future::join(
            node_prefixes(self.objects.store().as_ref()),
            futures::future::join_all(asked.iter().map(|member| self.ask(member, request))),
        )
        .await;

        let mut nodes = Vec::new();
        let mut from_storage: Vec<String> = skipped.iter().map(|m| m.node_id.clone()).collect();
        for (member, answer) in asked.iter().zip(answers) {
            match answer {
                Ok(snapshot) => nodes.push(NodeData {
                    node_id: member.node_id.clone(),
                    prefix: node_prefix(&member.node_id),
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
        let directories =
            listing.map_err(|e| Error::Execution(format!("listing node directories: {e}")))?;
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
            let prefix = node_prefix(&node_id);
            match self.committed_files(&prefix).await {
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
                        prefix,
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

    /// The committed files of a node prefix, from its newest manifest: one LIST of the
    /// manifests newer than the one already read, so a reader is never staler than its
    /// previous scan.
    async fn committed_files(&self, prefix: &str) -> Result<Arc<HashMap<Table, Vec<FileMeta>>>> {
        let known = self.manifests.lock().get(prefix).cloned();
        let store = self.objects.store();
        let mut newer =
            weft_storage::store::read_newer_manifest(store.as_ref(), prefix, known.as_ref()).await;
        if newer.is_err() {
            // A manifest deleted between the LIST and the GET: two commits went by; the
            // second listing finds the newest.
            newer =
                weft_storage::store::read_newer_manifest(store.as_ref(), prefix, known.as_ref())
                    .await;
        }
        match newer.map_err(|e| Error::Execution(e.to_string()))? {
            Some(read) => {
                let tables = Arc::clone(&read.tables);
                self.manifests.lock().insert(prefix.to_owned(), read);
                Ok(tables)
            }
            None => Ok(known.map(|k| k.tables).unwrap_or_default()),
        }
    }

    /// The trace-id filters of span files (object keys), read or rebuilt once per file.
    pub(crate) async fn trace_filters(
        &self,
        keys: &[String],
    ) -> Result<Vec<Option<Arc<TraceIdFilter>>>> {
        let missing: Vec<String> = {
            let cache = self.filters.lock();
            keys.iter()
                .filter(|k| !cache.contains_key(*k))
                .cloned()
                .collect()
        };
        if !missing.is_empty() {
            let store = self.objects.store();
            let loaded = futures::future::join_all(missing.into_iter().map(|key| async move {
                // Another node's file: read, never written; unreadable means always
                // scanned (the owning collector quarantines it on its next start).
                let filter = match object_store::path::Path::parse(&key) {
                    Ok(path) => match TraceIdFilter::load(store.as_ref(), &path).await {
                        Ok(filter) => Some(Arc::new(filter)),
                        Err(e) => {
                            tracing::warn!(error = %e, "no trace id filter");
                            None
                        }
                    },
                    Err(_) => None,
                };
                (key, filter)
            }))
            .await;
            self.filters.lock().extend(loaded);
        }
        let cache = self.filters.lock();
        Ok(keys
            .iter()
            .map(|k| cache.get(k).cloned().flatten())
            .collect())
    }
}

/// Names of the node prefixes under `nodes/` (none if there is none yet).
async fn node_prefixes(store: &dyn object_store::ObjectStore) -> Result<Vec<String>> {
    let listed = store
        .list_with_delimiter(Some(&object_store::path::Path::from(NODES_DIR)))
        .await;
    let listed = match listed {
        Ok(listed) => listed,
        Err(object_store::Error::NotFound { .. }) => return Ok(Vec::new()),
        Err(e) => return Err(Error::Execution(e.to_string())),
    };
    let mut names: Vec<String> = listed
        .common_prefixes
        .iter()
        .filter_map(|p| p.filename().map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
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
