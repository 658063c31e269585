//! The hinted hand-off spool: batches an ingest node could not deliver to a collector node
//! wait here, on local disk, until that node can take them again.
//!
//! ```text
//!  forwarder: node X down / breaker open / send failed
//!      │ append(X, signal, payload)  (spawn_blocking or append_async)
//!      │   reserve room under max_bytes, take the next id
//!      │   write <dir>/n-<hex X>/<id>.hint.tmp, fsync, rename to <id>.hint, fsync the dir
//!      ▼
//!  Ok(id) ──> the client is acknowledged (the batch is durable here)
//!
//!  replay: for each node in nodes() that is up again
//!      peek(X, max) ──> oldest-first hints (payloads read from disk, CRC checked)
//!      deliver each ──> remove(id)  (idempotent)
//! ```
//!
//! One file per hint keeps every operation simple and independent: an append is durable
//! once its rename is, a delivery deletes one file, and a torn write can only ever leave a
//! `.tmp` file (discarded on open). Each file is self-describing: a fixed header with
//! magic, version, signal, id, node-id length, payload length and a CRC32 over header,
//! node id and payload, followed by the node id and the payload. Recovery trusts only what
//! the CRC vouches for; directory names merely group a node's files and are never parsed
//! back into node ids, so a node id can never become a path.
//!
//! Memory holds an index (id, size, path per hint; totals per node), never
//! payloads. `bytes` everywhere (stats and `max_bytes`) is the exact size of the hint files:
//! `HEADER_LEN + node_id.len() + payload.len()` per hint, see [`Spool::hint_size`].
//!
//! Delivery is at-least-once: a removal is not fsynced, so after a power loss (not after a
//! process crash) a delivered hint can come back and be sent again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{self, File, OpenOptions};
use std::hash::Hasher as _;
use std::io::{self, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use twox_hash::XxHash64;

use weft_receiver::{Error, Result};
use weft_storage::wal::sync_dir;

/// Size of the fixed header that starts every hint file.
pub const HEADER_LEN: usize = 36;
const MAGIC: [u8; 8] = *b"WEFTHINT";
const VERSION: u16 = 1;
const HINT_SUFFIX: &str = ".hint";
const TMP_SUFFIX: &str = ".tmp";
/// Held with an exclusive lock while a `Spool` is open: two processes allocating ids in
/// one directory would overwrite each other's hints.
const LOCK_FILE: &str = "LOCK";
/// Node directories: `n-<hex of the node id>`, or `h-<xxhash64>` for ids too long to make
/// a file name (the header, not the directory, says which node a hint is for).
const HEX_DIR_PREFIX: &str = "n-";
const HASH_DIR_PREFIX: &str = "h-";
const MAX_HEX_NODE_ID: usize = 100;
const FULL_RETRY_AFTER: Duration = Duration::from_secs(1);

/// What a hint's payload is, so replay sends it to the right endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SignalKind {
    /// An OTLP `ExportTraceServiceRequest`, protobuf encoded.
    Traces,
    /// An OTLP `ExportMetricsServiceRequest`, protobuf encoded.
    Metrics,
    /// A Prometheus remote-write body, snappy compressed as received.
    Prometheus,
}

impl SignalKind {
    fn to_u8(self) -> u8 {
        match self {
            SignalKind::Traces => 1,
            SignalKind::Metrics => 2,
            SignalKind::Prometheus => 3,
        }
    }

    fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(SignalKind::Traces),
            2 => Some(SignalKind::Metrics),
            3 => Some(SignalKind::Prometheus),
            _ => None,
        }
    }
}

/// One spooled batch for one collector node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hint {
    pub id: u64,
    pub node_id: String,
    pub signal: SignalKind,
    pub payload: Bytes,
}

/// How many hints and how many bytes (hint-file sizes) are spooled.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct SpoolStats {
    pub hints: u64,
    pub bytes: u64,
}

impl SpoolStats {
    fn add(&mut self, size: u64) {
        self.hints += 1;
        self.bytes += size;
    }

    fn sub(&mut self, size: u64) {
        self.hints -= 1;
        self.bytes -= size;
    }
}

/// Where one hint is and what it holds, without its payload.
#[derive(Debug, Clone)]
struct HintMeta {
    size: u64,
    path: PathBuf,
}

#[derive(Debug, Default)]
struct NodeIndex {
    stats: SpoolStats,
    /// Ordered by id, which is also the order hints were appended in.
    hints: BTreeMap<u64, HintMeta>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// Bytes of appends being written: counted against `max_bytes` so concurrent appends
    /// cannot overshoot it, but not in the stats until they are durable.
    reserved: u64,
    totals: SpoolStats,
    nodes: HashMap<Arc<str>, NodeIndex>,
    by_id: HashMap<u64, Arc<str>>,
    /// Node directories known to exist (and whose creation was made durable).
    ready_dirs: HashSet<PathBuf>,
}

impl State {
    fn insert(&mut self, id: u64, node_id: &str, meta: HintMeta) {
        let key = match self.nodes.get_key_value(node_id) {
            Some((key, _)) => std::sync::Arc::clone(key),
            None => Arc::from(node_id),
        };
        let node = self.nodes.entry(std::sync::Arc::clone(&key)).or_default();
        node.stats.add(meta.size);
        self.totals.add(meta.size);
        if let Some(old) = node.hints.insert(id, meta) {
            // Ids are unique by construction; keep the accounting exact regardless.
            node.stats.sub(old.size);
            self.totals.sub(old.size);
        }
        self.by_id.insert(id, key);
    }

    fn take(&mut self, id: u64) -> Option<(Arc<str>, HintMeta)> {
        let key = self.by_id.remove(&id)?;
        let node = self.nodes.get_mut(&key)?;
        let meta = node.hints.remove(&id)?;
        node.stats.sub(meta.size);
        self.totals.sub(meta.size);
        if node.hints.is_empty() {
            self.nodes.remove(&key);
        }
        Some((key, meta))
    }
}

/// The durable hinted hand-off spool of one ingest node. `Send + Sync`; share it behind an
/// `Arc`. All methods but the `_async` ones do blocking file I/O.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    state: Mutex<State>,
    /// Keeps the directory's exclusive lock for as long as the spool is open.
    _lock: File,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.state.lock();
        f.debug_struct("Spool")
            .field("dir", &self.dir)
            .field("max_bytes", &self.max_bytes)
            .field("hints", &state.totals.hints)
            .field("bytes", &state.totals.bytes)
            .field("nodes", &state.nodes.len())
            .finish()
    }
}

impl Spool {
    /// Opens (creating) the directory and recovers every hint left by a previous process.
    /// A torn or corrupt hint file (bad length, magic or CRC) is discarded with a warning,
    /// as are `.tmp` files of appends that never returned. Fails if another `Spool` (in
    /// this process or another) has the directory open.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Self> {
        let existed = dir.is_dir();
        fs::create_dir_all(dir).map_err(|e| storage("create", dir, e))?;
        if !existed {
            // Make the new directory's own entry durable.
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent).map_err(|e| storage("sync", parent, e))?;
            }
        }
        let lock_path = dir.join(LOCK_FILE);
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(|e| storage("open", &lock_path, e))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                return Err(Error::Storage(format!(
                    "spool directory {} is in use by another spool",
                    dir.display()
                )));
            }
            Err(fs::TryLockError::Error(e)) => return Err(storage("lock", &lock_path, e)),
        }

        let mut state = State::default();
        let mut highest_id = 0;
        let mut discarded = 0u64;
        let entries = fs::read_dir(dir).map_err(|e| storage("list", dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| storage("list", dir, e))?;
            let name = entry.file_name();
            let is_node_dir = name
                .to_str()
                .is_some_and(|n| n.starts_with(HEX_DIR_PREFIX) || n.starts_with(HASH_DIR_PREFIX));
            let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
            if !is_node_dir || !is_dir {
                continue;
            }
            let node_dir = entry.path();
            let found = recover_node_dir(&node_dir, &mut state, &mut highest_id)?;
            discarded += found.discarded;
            if found.kept == 0 {
                // Best effort: an empty directory is recreated by the next append to it.
                let _ = fs::remove_dir(&node_dir);
            } else {
                state.ready_dirs.insert(node_dir);
            }
        }
        state.next_id = highest_id + 1;
        if state.totals.hints > 0 || discarded > 0 {
            tracing::info!(
                dir = %dir.display(),
                hints = state.totals.hints,
                bytes = state.totals.bytes,
                nodes = state.nodes.len(),
                discarded,
                "recovered hinted hand-off spool"
            );
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            max_bytes,
            state: Mutex::new(state),
            _lock: lock,
        })
    }

    /// Durably stores a hint: when this returns `Ok(id)` the hint file and its directory
    /// entry are fsynced. `Err(Error::Overloaded)` when it would take the spool over
    /// `max_bytes`; `Err(Error::Storage)` on I/O errors (nothing is left behind then).
    /// Blocking: call it from `spawn_blocking`, or use [`Spool::append_async`].
    pub fn append(&self, node_id: &str, signal: SignalKind, payload: Bytes) -> Result<u64> {
        let size = Self::hint_size(node_id, payload.len());
        let node_dir = self.dir.join(node_dir_name(node_id));
        let (id, dir_ready) = {
            let mut state = self.state.lock();
            let held = state.totals.bytes + state.reserved;
            if held.saturating_add(size) > self.max_bytes {
                return Err(Error::Overloaded {
                    reason: "hinted hand-off spool is full",
                    retry_after: FULL_RETRY_AFTER,
                    too_many_requests: false,
                });
            }
            state.reserved += size;
            let id = state.next_id;
            state.next_id += 1;
            (id, state.ready_dirs.contains(&node_dir))
        };
        let written = self.write_hint(&node_dir, dir_ready, id, node_id, signal, &payload);
        let mut state = self.state.lock();
        state.reserved -= size;
        let path = written?;
        if !dir_ready {
            state.ready_dirs.insert(node_dir);
        }
        state.insert(id, node_id, HintMeta { size, path });
        Ok(id)
    }

    /// [`Spool::append`] on tokio's blocking pool. If this future is dropped the append
    /// still completes, so the hint may be stored without the caller learning its id.
    pub async fn append_async(
        self: &Arc<Self>,
        node_id: &str,
        signal: SignalKind,
        payload: Bytes,
    ) -> Result<u64> {
        let spool = std::sync::Arc::clone(self);
        let node_id = node_id.to_owned();
        tokio::task::spawn_blocking(move || spool.append(&node_id, signal, payload))
            .await
            .map_err(|e| Error::Storage(format!("spool append task: {e}")))?
    }

    /// Oldest-first hints for one node, at most `max` of them, payloads read from disk.
    /// A hint whose file fails its CRC is discarded (with a warning) and skipped, so fewer
    /// than `max` means there are no more hints for the node right now.
    pub fn peek(&self, node_id: &str, max: usize) -> Result<Vec<Hint>> {
        let mut hints = Vec::new();
        let mut after = Bound::Unbounded;
        while hints.len() < max {
            let batch: Vec<(u64, PathBuf)> = {
                let state = self.state.lock();
                let Some(node) = state.nodes.get(node_id) else {
                    break;
                };
                node.hints
                    .range((after, Bound::Unbounded))
                    .take(max - hints.len())
                    .map(|(id, meta)| (*id, meta.path.clone()))
                    .collect()
            };
            if batch.is_empty() {
                break;
            }
            for (id, path) in batch {
                after = Bound::Excluded(id);
                let data = match read_file(&path) {
                    Ok(data) => data,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        // Removed meanwhile (then it is gone from the index already), or
                        // deleted behind our back: either way it cannot be delivered.
                        if self.state.lock().take(id).is_some() {
                            tracing::warn!(path = %path.display(), "spooled hint vanished");
                        }
                        continue;
                    }
                    Err(e) => return Err(storage("read", &path, e)),
                };
                match decode_hint(Bytes::from(data)) {
                    Ok(hint) if hint.id == id && hint.node_id == node_id => hints.push(hint),
                    Ok(_) => self.discard(id, &path, "id or node id differs from its index"),
                    Err(reason) => self.discard(id, &path, reason),
                }
            }
        }
        Ok(hints)
    }

    /// [`Spool::peek`] on tokio's blocking pool.
    pub async fn peek_async(self: &Arc<Self>, node_id: &str, max: usize) -> Result<Vec<Hint>> {
        let spool = std::sync::Arc::clone(self);
        let node_id = node_id.to_owned();
        tokio::task::spawn_blocking(move || spool.peek(&node_id, max))
            .await
            .map_err(|e| Error::Storage(format!("spool peek task: {e}")))?
    }

    /// Deletes a delivered hint. Idempotent: unknown or already removed ids are `Ok`.
    pub fn remove(&self, id: u64) -> Result<()> {
        let Some((node_id, meta)) = self.state.lock().take(id) else {
            return Ok(());
        };
        match fs::remove_file(&meta.path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => {
                let err = storage("remove", &meta.path, e);
                // Still on disk, so still in the spool: keep the accounting exact.
                self.state.lock().insert(id, &node_id, meta);
                Err(err)
            }
        }
    }

    /// [`Spool::remove`] on tokio's blocking pool.
    pub async fn remove_async(self: &Arc<Self>, id: u64) -> Result<()> {
        let spool = std::sync::Arc::clone(self);
        tokio::task::spawn_blocking(move || spool.remove(id))
            .await
            .map_err(|e| Error::Storage(format!("spool remove task: {e}")))?
    }

    /// Node ids that have hints, sorted, with their counts and bytes.
    pub fn nodes(&self) -> Vec<(String, SpoolStats)> {
        let state = self.state.lock();
        let mut nodes: Vec<(String, SpoolStats)> = state
            .nodes
            .iter()
            .map(|(id, node)| (id.to_string(), node.stats.clone()))
            .collect();
        drop(state);
        nodes.sort_by(|a, b| a.0.cmp(&b.0));
        nodes
    }

    /// Totals over every node (durable hints only, not appends in progress).
    pub fn stats(&self) -> SpoolStats {
        self.state.lock().totals.clone()
    }

    pub fn node_stats(&self, node_id: &str) -> SpoolStats {
        self.state
            .lock()
            .nodes
            .get(node_id)
            .map(|node| node.stats.clone())
            .unwrap_or_default()
    }

    /// The bytes one hint counts for, in the stats and against `max_bytes`: its file size.
    pub fn hint_size(node_id: &str, payload_len: usize) -> u64 {
        (HEADER_LEN + node_id.len() + payload_len) as u64
    }

    pub fn max_bytes(&self) -> u64 {
        self.max_bytes
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes `<id>.hint.tmp`, fsyncs it, renames it to `<id>.hint` and fsyncs the
    /// directory. On failure removes what it wrote, so a failed append leaves nothing.
    fn write_hint(
        &self,
        node_dir: &Path,
        dir_ready: bool,
        id: u64,
        node_id: &str,
        signal: SignalKind,
        payload: &[u8],
    ) -> Result<PathBuf> {
        if !dir_ready {
            fs::create_dir_all(node_dir).map_err(|e| storage("create", node_dir, e))?;
            sync_dir(&self.dir).map_err(|e| storage("sync", &self.dir, e))?;
        }
        let path = node_dir.join(format!("{id:020}{HINT_SUFFIX}"));
        let tmp = node_dir.join(format!("{id:020}{HINT_SUFFIX}{TMP_SUFFIX}"));
        let header = encode_header(id, node_id, signal, payload);
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(|e| storage("create", &tmp, e))?;
            file.write_all(&header)
                .and_then(|()| file.write_all(node_id.as_bytes()))
                .and_then(|()| file.write_all(payload))
                .and_then(|()| file.sync_all())
                .map_err(|e| storage("write", &tmp, e))?;
            drop(file);
            fs::rename(&tmp, &path).map_err(|e| storage("rename", &tmp, e))?;
            sync_dir(node_dir).map_err(|e| storage("sync", node_dir, e))
        })();
        match result {
            Ok(()) => Ok(path),
            Err(e) => {
                // Not acknowledged, so it must not come back on recovery either.
                let _ = fs::remove_file(&tmp);
                let _ = fs::remove_file(&path);
                Err(e)
            }
        }
    }

    /// Drops a hint that can never be delivered (corrupt on disk).
    fn discard(&self, id: u64, path: &Path, reason: &str) {
        tracing::warn!(path = %path.display(), reason, "discarding corrupt spooled hint");
        let indexed = self.state.lock().take(id).is_some();
        if indexed
            && let Err(e) = fs::remove_file(path)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), error = %e, "could not delete corrupt hint");
        }
    }
}

#[derive(Debug, Default)]
struct Recovered {
    kept: u64,
    discarded: u64,
}

/// Indexes the valid hints of one node directory; deletes `.tmp` leftovers and corrupt
/// hint files. Every id seen in a file name counts towards `highest_id`, so ids of
/// discarded hints are not handed out again.
fn recover_node_dir(dir: &Path, state: &mut State, highest_id: &mut u64) -> Result<Recovered> {
    let mut found = Recovered::default();
    let entries = fs::read_dir(dir).map_err(|e| storage("list", dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| storage("list", dir, e))?;
        let path = entry.path();
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if let Some(id) = name
            .split('.')
            .next()
            .and_then(|stem| stem.parse::<u64>().ok())
        {
            *highest_id = (*highest_id).max(id);
        }
        if name.ends_with(TMP_SUFFIX) {
            // An append that crashed before its rename; it was never acknowledged.
            tracing::debug!(path = %path.display(), "removing unfinished spool write");
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "could not remove");
            }
            continue;
        }
        if !name.ends_with(HINT_SUFFIX) {
            continue;
        }
        let data = match read_file(&path) {
            Ok(data) => data,
            Err(e) => {
                // Left in place for the operator; it is not part of the spool.
                tracing::warn!(path = %path.display(), error = %e, "cannot read spooled hint");
                continue;
            }
        };
        let size = data.len() as u64;
        let hint = match decode_hint(Bytes::from(data)) {
            Ok(hint) if !state.by_id.contains_key(&hint.id) => hint,
            Ok(hint) => {
                tracing::warn!(path = %path.display(), id = hint.id, "duplicate hint id; ignored");
                continue;
            }
            Err(reason) => {
                tracing::warn!(
                    path = %path.display(),
                    reason,
                    "discarding torn or corrupt spooled hint"
                );
                found.discarded += 1;
                if let Err(e) = fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "could not remove");
                }
                continue;
            }
        };
        *highest_id = (*highest_id).max(hint.id);
        found.kept += 1;
        state.insert(hint.id, &hint.node_id, HintMeta { size, path });
    }
    Ok(found)
}

/// `magic[8] | version u16 | signal u8 | 0u8 | id u64 | node_len u32 | payload_len u64 |
/// crc32 u32`, little endian; the CRC covers the 32 bytes before it, the node id and the
/// payload.
fn encode_header(id: u64, node_id: &str, signal: SignalKind, payload: &[u8]) -> [u8; HEADER_LEN] {
    let mut header = [0u8; HEADER_LEN];
    header[0..8].copy_from_slice(&MAGIC);
    header[8..10].copy_from_slice(&VERSION.to_le_bytes());
    header[10] = signal.to_u8();
    header[12..20].copy_from_slice(&id.to_le_bytes());
    header[20..24].copy_from_slice(&(node_id.len() as u32).to_le_bytes());
    header[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..32]);
    hasher.update(node_id.as_bytes());
    hasher.update(payload);
    header[32..36].copy_from_slice(&hasher.finalize().to_le_bytes());
    header
}

/// Parses and verifies one hint file; the error says why it is unusable.
fn decode_hint(data: Bytes) -> std::result::Result<Hint, &'static str> {
    let header = data.get(..HEADER_LEN).ok_or("shorter than its header")?;
    let u32_at = |at: usize| {
        u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
    };
    let u64_at = |at: usize| {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(bytes)
    };
    if header[0..8] != MAGIC {
        return Err("bad magic");
    }
    if u16::from_le_bytes([header[8], header[9]]) != VERSION {
        return Err("unsupported version");
    }
    let signal = SignalKind::from_u8(header[10]).ok_or("unknown signal")?;
    let id = u64_at(12);
    let node_len = u32_at(20) as u64;
    let payload_len = u64_at(24);
    let crc = u32_at(32);
    let expected = (HEADER_LEN as u64)
        .checked_add(node_len)
        .and_then(|n| n.checked_add(payload_len));
    if expected != Some(data.len() as u64) {
        return Err("length does not match its header (torn write)");
    }
    let node_end = HEADER_LEN + node_len as usize;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[..32]);
    hasher.update(&data[HEADER_LEN..]);
    if hasher.finalize() != crc {
        return Err("crc mismatch");
    }
    let node_id = std::str::from_utf8(&data[HEADER_LEN..node_end])
        .map_err(|_| "node id is not utf-8")?
        .to_owned();
    Ok(Hint {
        id,
        node_id,
        signal,
        payload: data.slice(node_end..),
    })
}

/// The directory that groups a node's hints. Hex keeps any node id (`/`, `..`, NUL) a
/// plain file name; very long ids are hashed to stay under file-name limits.
fn node_dir_name(node_id: &str) -> String {
    if node_id.len() <= MAX_HEX_NODE_ID {
        let mut name = String::with_capacity(HEX_DIR_PREFIX.len() + 2 * node_id.len());
        name.push_str(HEX_DIR_PREFIX);
        for byte in node_id.as_bytes() {
            name.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
            name.push(char::from(HEX_DIGITS[usize::from(byte & 0xf)]));
        }
        name
    } else {
        let mut hasher = XxHash64::with_seed(0);
        hasher.write(node_id.as_bytes());
        format!("{HASH_DIR_PREFIX}{:016x}", hasher.finish())
    }
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

fn read_file(path: &Path) -> io::Result<Vec<u8>> {
    let mut data = Vec::new();
    File::open(path)?.read_to_end(&mut data)?;
    Ok(data)
}

fn storage(what: &str, path: &Path, e: io::Error) -> Error {
    Error::Storage(format!("spool {what} {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BIG: u64 = 1 << 30;

    fn payload(tag: &str) -> Bytes {
        Bytes::from(format!("payload of {tag}").into_bytes())
    }

    /// Every file under `root`, recursively, sorted.
    fn files_under(root: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for entry in fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    out.push(path);
                }
            }
        }
        out.sort();
        out
    }

    fn hint_files(root: &Path) -> Vec<PathBuf> {
        files_under(root)
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(HINT_SUFFIX))
            .collect()
    }

    #[test]
    fn append_peek_remove_keep_order_per_node() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), BIG).unwrap();
        let a1 = spool
            .append("a", SignalKind::Traces, payload("a1"))
            .unwrap();
        let b1 = spool
            .append("b", SignalKind::Metrics, payload("b1"))
            .unwrap();
        let a2 = spool
            .append("a", SignalKind::Prometheus, payload("a2"))
            .unwrap();
        let a3 = spool
            .append("a", SignalKind::Traces, payload("a3"))
            .unwrap();
        assert!(a1 < b1 && b1 < a2 && a2 < a3);

        let hints = spool.peek("a", 10).unwrap();
        let got: Vec<_> = hints.iter().map(|h| (h.id, h.signal)).collect();
        assert_eq!(
            got,
            vec![
                (a1, SignalKind::Traces),
                (a2, SignalKind::Prometheus),
                (a3, SignalKind::Traces)
            ]
        );
        assert_eq!(hints[1].payload, payload("a2"));
        assert!(hints.iter().all(|h| h.node_id == "a"));
        assert_eq!(spool.peek("a", 2).unwrap().len(), 2);
        assert_eq!(spool.peek("a", 0).unwrap(), vec![]);
        assert_eq!(spool.peek("nobody", 5).unwrap(), vec![]);

        let size = |tag: &str| Spool::hint_size("a", payload(tag).len());
        assert_eq!(
            spool.node_stats("a"),
            SpoolStats {
                hints: 3,
                bytes: size("a1") + size("a2") + size("a3")
            }
        );
        assert_eq!(spool.stats().hints, 4);
        let nodes: Vec<_> = spool
            .nodes()
            .into_iter()
            .map(|(n, s)| (n, s.hints))
            .collect();
        assert_eq!(nodes, vec![("a".to_owned(), 3), ("b".to_owned(), 1)]);

        spool.remove(a1).unwrap();
        spool.remove(a1).unwrap();
        spool.remove(9999).unwrap();
        let next = spool.peek("a", 1).unwrap();
        assert_eq!(next[0].id, a2);
        assert_eq!(next[0].payload, payload("a2"));
        assert_eq!(spool.node_stats("a").hints, 2);

        for id in [a2, a3, b1] {
            spool.remove(id).unwrap();
        }
        assert!(spool.nodes().is_empty());
        assert_eq!(spool.stats(), SpoolStats::default());
        assert_eq!(hint_files(tmp.path()), Vec::<PathBuf>::new());
    }

    #[test]
    fn reopen_recovers_every_hint_and_continues_ids() {
        let tmp = tempfile::tempdir().unwrap();
        let (ids, stats) = {
            let spool = Spool::open(tmp.path(), BIG).unwrap();
            let ids: Vec<u64> = (0..5)
                .map(|i| {
                    let node = if i % 2 == 0 { "even" } else { "odd" };
                    spool
                        .append(node, SignalKind::Metrics, payload(&i.to_string()))
                        .unwrap()
                })
                .collect();
            spool.remove(ids[1]).unwrap();
            (ids, spool.stats())
        };
        let spool = Spool::open(tmp.path(), BIG).unwrap();
        assert_eq!(spool.stats(), stats);
        let even: Vec<_> = spool.peek("even", 10).unwrap();
        assert_eq!(
            even.iter().map(|h| h.id).collect::<Vec<_>>(),
            vec![ids[0], ids[2], ids[4]]
        );
        assert_eq!(even[2].payload, payload("4"));
        assert_eq!(even[2].signal, SignalKind::Metrics);
        let odd: Vec<_> = spool.peek("odd", 10).unwrap();
        assert_eq!(odd.iter().map(|h| h.id).collect::<Vec<_>>(), vec![ids[3]]);
        let next = spool
            .append("odd", SignalKind::Traces, payload("x"))
            .unwrap();
        assert!(
            next > ids[4],
            "ids continue after the highest recovered one"
        );
    }

    #[test]
    fn torn_and_corrupt_hints_are_discarded_and_the_rest_recovered() {
        let tmp = tempfile::tempdir().unwrap();
        let (good, flipped, torn) = {
            let spool = Spool::open(tmp.path(), BIG).unwrap();
            let good = spool
                .append("n", SignalKind::Traces, payload("good"))
                .unwrap();
            let flipped = spool
                .append("n", SignalKind::Traces, payload("flipped"))
                .unwrap();
            let torn = spool
                .append("n", SignalKind::Traces, payload("torn"))
                .unwrap();
            (good, flipped, torn)
        };
        let files = hint_files(tmp.path());
        assert_eq!(files.len(), 3);
        let find = |id: u64| {
            files
                .iter()
                .find(|p| p.ends_with(format!("{id:020}{HINT_SUFFIX}")))
                .unwrap()
                .clone()
        };
        let mut data = fs::read(find(flipped)).unwrap();
        let last = data.len() - 1;
        data[last] ^= 0x40;
        fs::write(find(flipped), &data).unwrap();
        let data = fs::read(find(torn)).unwrap();
        fs::write(find(torn), &data[..data.len() - 3]).unwrap();
        // An append that died before its rename.
        let stray = find(good).with_file_name(format!("{:020}{HINT_SUFFIX}{TMP_SUFFIX}", 77));
        fs::write(&stray, b"half").unwrap();

        let spool = Spool::open(tmp.path(), BIG).unwrap();
        let hints = spool.peek("n", 10).unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].id, good);
        assert_eq!(hints[0].payload, payload("good"));
        assert_eq!(
            spool.stats(),
            SpoolStats {
                hints: 1,
                bytes: Spool::hint_size("n", payload("good").len())
            }
        );
        assert_eq!(hint_files(tmp.path()), vec![find(good)]);
        assert!(!stray.exists());
        let next = spool
            .append("n", SignalKind::Traces, payload("new"))
            .unwrap();
        assert!(next > 77, "ids seen in discarded files are not reused");
    }

    #[test]
    fn corruption_found_by_peek_is_discarded_and_accounted() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Spool::open(tmp.path(), BIG).unwrap();
        let first = spool.append("n", SignalKind::Traces, payload("1")).unwrap();
        let second = spool.append("n", SignalKind::Traces, payload("2")).unwrap();
        let path = hint_files(tmp.path())
            .into_iter()
            .find(|p| p.ends_with(format!("{first:020}{HINT_SUFFIX}")))
            .unwrap();
        let mut data = fs::read(&path).unwrap();
        data[HEADER_LEN] ^= 1;
        fs::write(&path, &data).unwrap();
        let hints = spool.peek("n", 1).unwrap();
        assert_eq!(
            hints.len(),
            1,
            "peek skips the bad hint and still fills `max`"
        );
        assert_eq!(hints[0].id, second);
        assert_eq!(spool.stats().hints, 1);
        assert!(!path.exists());
    }

    #[test]
    fn full_spool_refuses_and_remove_makes_room() {
        let tmp = tempfile::tempdir().unwrap();
        let body = Bytes::from(vec![7u8; 100]);
        let size = Spool::hint_size("node", body.len());
        let spool = Spool::open(tmp.path(), 2 * size + size / 2).unwrap();
        let first = spool
            .append("node", SignalKind::Traces, body.clone())
            .unwrap();
        spool
            .append("node", SignalKind::Traces, body.clone())
            .unwrap();
        match spool.append("node", SignalKind::Traces, body.clone()) {
            Err(Error::Overloaded {
                retry_after,
                too_many_requests,
                ..
            }) => {
                assert_eq!(retry_after, Duration::from_secs(1));
                assert!(!too_many_requests);
            }
            other => panic!("expected Overloaded, got {other:?}"),
        }
        assert_eq!(
            spool.stats(),
            SpoolStats {
                hints: 2,
                bytes: 2 * size
            }
        );
        assert_eq!(
            hint_files(tmp.path()).len(),
            2,
            "a refused append writes nothing"
        );

        spool.remove(first).unwrap();
        assert_eq!(
            spool.stats(),
            SpoolStats {
                hints: 1,
                bytes: size
            }
        );
        spool
            .append("other", SignalKind::Metrics, Bytes::from(vec![1u8; 99]))
            .unwrap();
        let held = spool.stats();
        assert_eq!(held.bytes, size + Spool::hint_size("other", 99));
        drop(spool);

        let spool = Spool::open(tmp.path(), held.bytes).unwrap();
        assert_eq!(spool.stats(), held, "accounting is exact after recovery");
        assert!(matches!(
            spool.append("x", SignalKind::Traces, Bytes::new()),
            Err(Error::Overloaded { .. })
        ));
        let empty = tempfile::tempdir().unwrap();
        let tiny = Spool::open(empty.path(), size - 1).unwrap();
        assert!(matches!(
            tiny.append("node", SignalKind::Traces, body),
            Err(Error::Overloaded { .. })
        ));
    }

    #[test]
    fn hostile_node_ids_stay_inside_the_directory() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("spool");
        let long = "x/".repeat(200);
        let node_ids = [
            "a/b",
            "../escape",
            "..",
            ".",
            "/etc/passwd",
            "",
            "nul\0byte",
            "ünï/../..",
            long.as_str(),
        ];
        {
            let spool = Spool::open(&root, BIG).unwrap();
            for node in node_ids {
                spool
                    .append(node, SignalKind::Traces, payload(node))
                    .unwrap();
            }
        }
        let names: Vec<_> = fs::read_dir(outer.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("spool")]);
        for file in files_under(&root) {
            let parent = file.parent().unwrap();
            assert!(
                parent == root || parent.parent() == Some(root.as_path()),
                "{} escaped",
                file.display()
            );
        }
        let spool = Spool::open(&root, BIG).unwrap();
        let mut expected: Vec<String> = node_ids.iter().map(|s| s.to_string()).collect();
        expected.sort();
        let nodes: Vec<_> = spool.nodes().into_iter().map(|(n, _)| n).collect();
        assert_eq!(nodes, expected);
        for node in node_ids {
            let hints = spool.peek(node, 10).unwrap();
            assert_eq!(hints.len(), 1, "{node:?}");
            assert_eq!(hints[0].payload, payload(node));
        }
    }

    #[test]
    fn concurrent_appends_keep_every_hint() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(tmp.path(), BIG).unwrap());
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let spool = std::sync::Arc::clone(&spool);
                std::thread::spawn(move || {
                    (0..25)
                        .map(|i| {
                            let node = format!("node-{}", (t + i) % 3);
                            let body = payload(&format!("{t}-{i}"));
                            let id = spool.append(&node, SignalKind::Traces, body.clone());
                            (id.unwrap(), node, body)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut appended: Vec<(u64, String, Bytes)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        appended.sort_by_key(|(id, _, _)| *id);
        appended.dedup_by_key(|(id, _, _)| *id);
        assert_eq!(appended.len(), 200, "ids are unique");
        let bytes: u64 = appended
            .iter()
            .map(|(_, node, body)| Spool::hint_size(node, body.len()))
            .sum();
        assert_eq!(spool.stats(), SpoolStats { hints: 200, bytes });

        let check = |spool: &Spool| {
            let mut seen = Vec::new();
            for (node, stats) in spool.nodes() {
                let hints = spool.peek(&node, 1000).unwrap();
                assert_eq!(hints.len() as u64, stats.hints);
                assert!(hints.windows(2).all(|w| w[0].id < w[1].id), "oldest first");
                seen.extend(hints.into_iter().map(|h| (h.id, h.node_id, h.payload)));
            }
            seen.sort_by_key(|(id, _, _)| *id);
            assert_eq!(seen, appended);
        };
        check(&spool);
        drop(spool);
        check(&Spool::open(tmp.path(), BIG).unwrap());
    }

    #[test]
    fn a_directory_is_opened_by_one_spool_at_a_time() {
        let tmp = tempfile::tempdir().unwrap();
        let first = Spool::open(tmp.path(), BIG).unwrap();
        assert!(matches!(
            Spool::open(tmp.path(), BIG),
            Err(Error::Storage(_))
        ));
        drop(first);
        Spool::open(tmp.path(), BIG).unwrap();
    }

    #[tokio::test]
    async fn async_wrappers_run_on_the_blocking_pool() {
        let tmp = tempfile::tempdir().unwrap();
        let spool = Arc::new(Spool::open(tmp.path(), BIG).unwrap());
        let id = spool
            .append_async("n", SignalKind::Prometheus, payload("p"))
            .await
            .unwrap();
        let hints = spool.peek_async("n", 10).await.unwrap();
        assert_eq!(hints.len(), 1);
        assert_eq!(hints[0].signal, SignalKind::Prometheus);
        spool.remove_async(id).await.unwrap();
        assert_eq!(spool.stats(), SpoolStats::default());
    }

    #[test]
    fn header_round_trips_and_rejects_garbage() {
        let header = encode_header(42, "node", SignalKind::Metrics, b"body");
        let mut file = header.to_vec();
        file.extend_from_slice(b"node");
        file.extend_from_slice(b"body");
        let hint = decode_hint(Bytes::from(file.clone())).unwrap();
        assert_eq!(
            (
                hint.id,
                hint.node_id.as_str(),
                hint.signal,
                &hint.payload[..]
            ),
            (42, "node", SignalKind::Metrics, &b"body"[..])
        );
        assert!(decode_hint(Bytes::from_static(b"short")).is_err());
        let mut wrong_magic = file.clone();
        wrong_magic[0] = b'X';
        assert_eq!(decode_hint(Bytes::from(wrong_magic)), Err("bad magic"));
        let mut longer = file;
        longer.push(0);
        assert!(decode_hint(Bytes::from(longer)).is_err());
    }
}
