//! Write-ahead log: an export is acknowledged only after its record is durable here.
//!
//! ```text
//!  receivers --append(kind, payload, item)--> channel --> WAL thread
//!                                                        | drain everything queued (group)
//!                                                        | assign consecutive sequence numbers
//!                                                        | write frames, one fdatasync per group
//!                                                        | on_durable(group)  (in sequence order)
//!                                                        v
//!                                              acks resolve: the client gets its answer
//! ```
//!
//! Records hold the request as received (OTLP protobuf bytes, or the decoded Prometheus
//! write request), so the hot path copies nothing; replay decodes them again.
//! The log is a directory of segment files named by the first sequence number they hold.
//! Each frame is `len u32 | crc32 u32 | seq u64 | kind u8 | payload`, little endian, with
//! the CRC over `seq | kind | payload`. A frame that is cut short or fails its CRC ends the
//! segment (a torn write from a crash); what follows it is never read.
//! Because `on_durable` runs on the WAL thread in sequence order, whatever consumes it sees
//! a gap-free prefix of the log: flushed-through sequence numbers are always exact.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use crate::config::{SyncPolicy, WalConfig};
use crate::error::{Error, Result};

const HEADER_LEN: usize = 4 + 4 + 8 + 1;
const SEGMENT_SUFFIX: &str = ".wal";
/// Frames larger than this are treated as corruption on replay.
const MAX_FRAME_PAYLOAD: usize = 1 << 30;

/// What a record's payload is, so replay knows how to decode it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum RecordKind {
    /// An `ExportTraceServiceRequest`, protobuf encoded.
    OtlpTraces = 1,
    /// An `ExportMetricsServiceRequest`, protobuf encoded.
    OtlpMetrics = 2,
    /// A Prometheus remote-write `WriteRequest`, protobuf encoded (not snappy-compressed).
    PrometheusWrite = 3,
    /// An `ExportTraceServiceRequest` held for tail sampling: its spans are stored only
    /// through a later [`RecordKind::TailDecision`] record.
    OtlpTracesHeld = 4,
    /// Tail-sampling decisions: decided trace IDs and the kept spans
    /// (`sampling::tail::decode_decision`).
    TailDecision = 5,
}

impl RecordKind {
    fn from_u8(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(Self::OtlpTraces),
            2 => Some(Self::OtlpMetrics),
            3 => Some(Self::PrometheusWrite),
            4 => Some(Self::OtlpTracesHeld),
            5 => Some(Self::TailDecision),
            _ => None,
        }
    }
}

/// One record read back from the log.
#[derive(Debug)]
pub struct WalRecord {
    pub seq: u64,
    pub kind: RecordKind,
    pub payload: Bytes,
}

struct Append<T> {
    kind: RecordKind,
    payload: Bytes,
    item: T,
    done: oneshot::Sender<Result<u64, String>>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
}

/// Handle to the log; cheap to share behind an `Arc`.
pub struct Wal<T> {
    tx: mpsc::UnboundedSender<Append<T>>,
    segments: Arc<Mutex<Vec<Segment>>>,
    pending_bytes: Arc<AtomicUsize>,
}

impl<T> std::fmt::Debug for Wal<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wal")
            .field("segments", &self.segments.lock().len())
            .field("pending_bytes", &self.pending_bytes.load(Ordering::Relaxed))
            .finish()
    }
}

/// Reads every record in `dir` in sequence order, calling `on_record` for each.
/// Returns the sequence number the next record must get.
pub fn replay(dir: &Path, mut on_record: impl FnMut(WalRecord) -> Result<()>) -> Result<u64> {
    fs::create_dir_all(dir).map_err(|e| Error::Wal(format!("create {}: {e}", dir.display())))?;
    let mut next_seq = 1;
    for segment in list_segments(dir)? {
        next_seq = next_seq.max(segment.first_seq);
        let mut data = Vec::new();
        File::open(&segment.path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| Error::Wal(format!("read {}: {e}", segment.path.display())))?;
        let data = Bytes::from(data);
        let mut offset = 0;
        while let Some((record, len)) = parse_frame(&data, offset) {
            offset += len;
            next_seq = next_seq.max(record.seq + 1);
            on_record(record)?;
        }
        if offset < data.len() {
            tracing::warn!(
                segment = %segment.path.display(),
                valid_bytes = offset,
                ignored_bytes = data.len() - offset,
                "wal segment ends with a torn or corrupt frame; ignoring the rest of it"
            );
        }
    }
    Ok(next_seq)
}

fn parse_frame(data: &Bytes, offset: usize) -> Option<(WalRecord, usize)> {
    let header = data.get(offset..offset + HEADER_LEN)?;
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let kind = RecordKind::from_u8(header[16])?;
    if len > MAX_FRAME_PAYLOAD {
        return None;
    }
    let start = offset + HEADER_LEN;
    let payload = data.get(start..start + len)?;
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..17]);
    hasher.update(payload);
    if hasher.finalize() != crc {
        return None;
    }
    let record = WalRecord {
        seq,
        kind,
        payload: data.slice(start..start + len),
    };
    Some((record, HEADER_LEN + len))
}

fn encode_frame(out: &mut Vec<u8>, seq: u64, kind: RecordKind, payload: &[u8]) {
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&seq.to_le_bytes());
    hasher.update(&[kind as u8]);
    hasher.update(payload);
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&hasher.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.push(kind as u8);
    out.extend_from_slice(payload);
}

fn list_segments(dir: &Path) -> Result<Vec<Segment>> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::Wal(format!("list {}: {e}", dir.display())))?;
    let mut segments = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Error::Wal(e.to_string()))?;
        let name = entry.file_name();
        let Some(first_seq) = name
            .to_str()
            .and_then(|n| n.strip_suffix(SEGMENT_SUFFIX))
            .and_then(|n| n.parse::<u64>().ok())
        else {
            continue;
        };
        segments.push(Segment {
            first_seq,
            path: entry.path(),
        });
    }
    segments.sort_by_key(|s| s.first_seq);
    Ok(segments)
}

fn segment_path(dir: &Path, first_seq: u64) -> PathBuf {
    dir.join(format!("{first_seq:020}{SEGMENT_SUFFIX}"))
}

/// Makes a directory entry (a created or renamed file) durable.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

impl<T: Send + 'static> Wal<T> {
    /// Starts the WAL thread, appending to a new segment that begins at `next_seq`.
    /// `on_durable` receives each durable group, in sequence order, before acks are sent.
    pub fn start(
        dir: &Path,
        config: &WalConfig,
        next_seq: u64,
        on_durable: impl FnMut(Vec<(u64, T)>) + Send + 'static,
    ) -> Result<Self> {
        let mut segments = list_segments(dir)?;
        let (file, segment) = open_segment(dir, next_seq)?;
        segments.push(segment);
        let segments = Arc::new(Mutex::new(segments));
        let pending_bytes = Arc::new(AtomicUsize::new(0));
        let (tx, rx) = mpsc::unbounded_channel();
        let writer = WalWriter {
            dir: dir.to_path_buf(),
            config: config.clone(),
            file,
            file_len: 0,
            next_seq,
            segments: segments.clone(),
            pending_bytes: pending_bytes.clone(),
            rx,
        };
        std::thread::Builder::new()
            .name("weft-wal".into())
            .spawn(move || writer.run(on_durable))
            .map_err(|e| Error::Wal(format!("spawn wal thread: {e}")))?;
        Ok(Self {
            tx,
            segments,
            pending_bytes,
        })
    }

    /// Appends a record and waits until it is durable under the configured policy.
    /// Returns its sequence number.
    pub async fn append(&self, kind: RecordKind, payload: Bytes, item: T) -> Result<u64> {
        let (done, wait) = oneshot::channel();
        let len = payload.len();
        self.pending_bytes.fetch_add(len, Ordering::Relaxed);
        let append = Append {
            kind,
            payload,
            item,
            done,
        };
        if self.tx.send(append).is_err() {
            self.pending_bytes.fetch_sub(len, Ordering::Relaxed);
            return Err(Error::ShuttingDown);
        }
        match wait.await {
            Ok(Ok(seq)) => Ok(seq),
            Ok(Err(message)) => Err(Error::Wal(message)),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    /// Bytes handed to the log and not yet durable: part of the memory the server holds.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Deletes segments whose records all have sequence numbers `<= seq`
    /// (they are in Parquet files now). The active segment is never deleted.
    pub fn truncate_through(&self, seq: u64) -> Result<usize> {
        let mut segments = self.segments.lock();
        let mut removed = 0;
        while segments.len() > 1 && segments[1].first_seq <= seq + 1 {
            let segment = segments.remove(0);
            fs::remove_file(&segment.path)
                .map_err(|e| Error::Wal(format!("remove {}: {e}", segment.path.display())))?;
            removed += 1;
        }
        Ok(removed)
    }

    /// Number of segment files on disk.
    pub fn segment_count(&self) -> usize {
        self.segments.lock().len()
    }
}

fn open_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment)> {
    let path = segment_path(dir, first_seq);
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| Error::Wal(format!("open {}: {e}", path.display())))?;
    sync_dir(dir).map_err(|e| Error::Wal(format!("sync {}: {e}", dir.display())))?;
    Ok((file, Segment { first_seq, path }))
}

struct WalWriter<T> {
    dir: PathBuf,
    config: WalConfig,
    file: File,
    file_len: u64,
    next_seq: u64,
    segments: Arc<Mutex<Vec<Segment>>>,
    pending_bytes: Arc<AtomicUsize>,
    rx: mpsc::UnboundedReceiver<Append<T>>,
}

impl<T> WalWriter<T> {
    fn run(mut self, mut on_durable: impl FnMut(Vec<(u64, T)>)) {
        let mut frames = Vec::new();
        while let Some(first) = self.rx.blocking_recv() {
            let mut group = vec![first];
            let mut group_bytes = group[0].payload.len();
            while group_bytes < self.config.max_group_bytes {
                match self.rx.try_recv() {
                    Ok(append) => {
                        group_bytes += append.payload.len();
                        group.push(append);
                    }
                    Err(_) => break,
                }
            }
            let first_seq = self.next_seq;
            frames.clear();
            for (i, append) in group.iter().enumerate() {
                encode_frame(
                    &mut frames,
                    first_seq + i as u64,
                    append.kind,
                    &append.payload,
                );
            }
            self.next_seq += group.len() as u64;
            let written = self.write_group(&frames, first_seq);
            self.pending_bytes.fetch_sub(group_bytes, Ordering::Relaxed);
            match written {
                Ok(()) => {
                    let mut acks = Vec::with_capacity(group.len());
                    let mut items = Vec::with_capacity(group.len());
                    for (i, append) in group.into_iter().enumerate() {
                        items.push((first_seq + i as u64, append.item));
                        acks.push((first_seq + i as u64, append.done));
                    }
                    on_durable(items);
                    for (seq, done) in acks {
                        let _ = done.send(Ok(seq));
                    }
                }
                Err(message) => {
                    tracing::error!(error = %message, "wal write failed; refusing this group");
                    for append in group {
                        let _ = append.done.send(Err(message.clone()));
                    }
                    // A failed write may have left a partial frame: continue in a fresh
                    // segment so replay never has to read past it.
                    if let Err(e) = self.rotate() {
                        tracing::error!(error = %e, "wal rotation after a failed write failed");
                    }
                }
            }
        }
        if let Err(e) = self.file.sync_data() {
            tracing::error!(error = %e, "final wal sync failed");
        }
    }

    fn write_group(&mut self, frames: &[u8], first_seq: u64) -> Result<(), String> {
        if self.file_len >= self.config.segment_bytes {
            self.rotate_at(first_seq)?;
        }
        self.file
            .write_all(frames)
            .map_err(|e| format!("write: {e}"))?;
        self.file_len += frames.len() as u64;
        if self.config.sync == SyncPolicy::Fsync {
            self.file.sync_data().map_err(|e| format!("fsync: {e}"))?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), String> {
        self.rotate_at(self.next_seq)
    }

    fn rotate_at(&mut self, first_seq: u64) -> Result<(), String> {
        self.file
            .sync_data()
            .map_err(|e| format!("fsync before rotation: {e}"))?;
        let (file, segment) = open_segment(&self.dir, first_seq).map_err(|e| e.to_string())?;
        self.file = file;
        self.file_len = 0;
        let mut segments = self.segments.lock();
        // A rotation after a failed write can reuse the name of an empty segment.
        if segments.last().map(|s| s.first_seq) != Some(first_seq) {
            segments.push(segment);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WalConfig {
        WalConfig {
            segment_bytes: 64,
            ..WalConfig::default()
        }
    }

    #[tokio::test]
    async fn appended_records_replay_in_order_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_in_wal = seen.clone();
        let wal = Wal::start(dir.path(), &config(), 1, move |group: Vec<(u64, u32)>| {
            seen_in_wal.lock().extend(group)
        })
        .unwrap();
        let mut seqs = Vec::new();
        for i in 0..10u32 {
            let payload = Bytes::from(vec![i as u8; 40]);
            seqs.push(
                wal.append(RecordKind::OtlpTraces, payload, i)
                    .await
                    .unwrap(),
            );
        }
        assert_eq!(seqs, (1..=10).collect::<Vec<_>>());
        assert_eq!(seen.lock().len(), 10);
        assert!(wal.segment_count() > 2, "small segments must rotate");

        let mut replayed = Vec::new();
        let next = replay(dir.path(), |r| {
            replayed.push((r.seq, r.payload[0]));
            Ok(())
        })
        .unwrap();
        assert_eq!(next, 11);
        assert_eq!(
            replayed,
            (1..=10).map(|i| (i, (i - 1) as u8)).collect::<Vec<_>>()
        );

        wal.truncate_through(6).unwrap();
        let mut after = Vec::new();
        replay(dir.path(), |r| {
            after.push(r.seq);
            Ok(())
        })
        .unwrap();
        assert!(after.contains(&7) && after.contains(&10), "{after:?}");
        assert!(!after.contains(&1), "{after:?}");
    }

    #[test]
    fn torn_tail_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        encode_frame(&mut data, 1, RecordKind::OtlpMetrics, b"first");
        encode_frame(&mut data, 2, RecordKind::OtlpMetrics, b"second");
        let full = data.len();
        data.truncate(full - 3);
        fs::write(segment_path(dir.path(), 1), &data).unwrap();
        let mut got = Vec::new();
        let next = replay(dir.path(), |r| {
            got.push(r.payload);
            Ok(())
        })
        .unwrap();
        assert_eq!(got, vec![Bytes::from_static(b"first")]);
        assert_eq!(next, 2);
    }

    #[test]
    fn corrupt_frame_is_not_returned() {
        let mut data = Vec::new();
        encode_frame(&mut data, 5, RecordKind::OtlpTraces, b"payload");
        let last = data.len() - 1;
        data[last] ^= 0xff;
        assert!(parse_frame(&Bytes::from(data), 0).is_none());
    }
}
