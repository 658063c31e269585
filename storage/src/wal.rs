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
//! the CRC over `seq | kind | payload`. Sequence numbers are consecutive within a segment.
//! Because `on_durable` runs on the WAL thread in sequence order, whatever consumes it sees
//! a gap-free prefix of the log: flushed-through sequence numbers are always exact.
//!
//! ## Damage: what replay does (issue 14)
//!
//! Replay reads every segment to its end and never stops early. Bytes that hold no good
//! frame are a damaged range; the scan resynchronises on the next offset holding a frame
//! with a good CRC and a plausible next sequence number ([`scan_segment`]), and keeps
//! every record after it. Each damaged range is classified by the sequence numbers around
//! it ([`DamageKind`]):
//!
//! - **Torn tail**: the incomplete end of the log (the last segment ends in a partial
//!   frame), or a damaged segment end followed by a segment that continues without a gap
//!   (a restarted writer reuses the number of a record it never acknowledged). A crash cut
//!   a write short; nothing acknowledged is missing. Logged at WARN and counted.
//! - **Corruption**: damage followed by good records, a whole frame at the end that fails
//!   its CRC, or sequence numbers missing before the next segment. Acknowledged records
//!   may be lost; the report names the segment, offset, byte count and the missing
//!   sequence range, and the collector turns it into an ERROR log, counters and a
//!   persistent incident (`crate::incidents`) that queries warn about until acknowledged.
//!
//! The one case bytes cannot decide: the log's very last record with two damaged header
//! fields (its length made to run past the end and its checksum changed) looks exactly like
//! a write cut short; it is treated as a torn tail. A single damaged byte anywhere is
//! always told apart (a length that runs past the end is checked against every shorter
//! payload's checksum).
//!
//! Either way the damaged bytes are first copied to `<wal dir>/quarantine/` (fsynced), then
//! the segment is repaired (cut to its last good frame, or rewritten without the damaged
//! range) before anything is appended: the writer only appends to a segment it creates or
//! an empty one, so a new record never sits behind bytes replay did not validate.
//! Corruption is skipped rather than refusing to start because the rest of the log is
//! intact and refusing would stop ingest for every client; the loss is not silent
//! (incident, counters, query warnings) and the damaged bytes are kept for an operator.
//! [`check`] runs the same analysis without changing anything (`weft wal check`).

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
    done: oneshot::Sender<Result<u64>>,
}

#[derive(Debug, Clone)]
struct Segment {
    first_seq: u64,
    path: PathBuf,
}

/// Handle to the log; cheap to share behind an `Arc`.
pub struct Wal<T> {
    tx: mpsc::UnboundedSender<Append<T>>,
    retain_flushed_bytes: u64,
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

/// What kind of damage replay found in a segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DamageKind {
    /// The incomplete end of the log: a record whose write a crash cut short. Such a record
    /// was never acknowledged (acks follow the write and its fsync), so nothing is lost.
    TornTail,
    /// Damage that may hold acknowledged records: bad bytes followed by good records, or a
    /// whole-looking frame that fails its checksum, or sequence numbers missing before the
    /// next segment.
    Corrupt,
}

/// Sequence numbers of records replay could not read, `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct SeqRange {
    pub first: u64,
    pub last: u64,
    /// `false`: `last` is an upper bound (the damage ends the log, so the count of records
    /// it held is estimated from its size).
    pub exact: bool,
}

impl SeqRange {
    pub fn count(&self) -> u64 {
        self.last.saturating_sub(self.first).saturating_add(1)
    }

    pub fn contains(&self, seq: u64) -> bool {
        (self.first..=self.last).contains(&seq)
    }
}

/// One damaged byte range of a segment, as replay found (and, repairing, removed) it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Damage {
    pub segment: PathBuf,
    pub offset: u64,
    pub bytes: u64,
    pub kind: DamageKind,
    /// Records that were in the damaged bytes (`None`: none, e.g. a torn tail).
    pub missing: Option<SeqRange>,
    /// Where the damaged bytes were copied before the segment was repaired.
    pub quarantined: Option<PathBuf>,
}

/// What one replay read, skipped and repaired.
#[derive(Debug, Clone, Default)]
pub struct ReplayReport {
    /// The sequence number the next record must get.
    pub next_seq: u64,
    /// Records handed to the callback.
    pub records: u64,
    pub damage: Vec<Damage>,
}

impl ReplayReport {
    /// Damage that may have held acknowledged records.
    pub fn corruption(&self) -> impl Iterator<Item = &Damage> {
        self.damage.iter().filter(|d| d.kind == DamageKind::Corrupt)
    }
}

/// One well-formed frame found by [`scan_segment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameInfo {
    pub offset: usize,
    /// Header plus payload.
    pub len: usize,
    pub seq: u64,
    pub kind: RecordKind,
}

/// A byte range of a segment that holds no readable frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DamagedRange {
    pub offset: usize,
    pub len: usize,
    /// Sequence number of the last good frame before it (or the scan's `after_seq`).
    pub after_seq: u64,
    /// Sequence number of the first good frame after it in this segment, if any.
    pub next_seq: Option<u64>,
    /// At the end of the segment and shaped like a write cut short: a partial header, a
    /// header whose length runs past the end (and no shorter prefix matches its checksum),
    /// or zeros.
    pub incomplete: bool,
}

/// Good frames and damaged ranges of one segment, in offset order; together they cover
/// the segment's bytes exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SegmentScan {
    pub frames: Vec<FrameInfo>,
    pub damaged: Vec<DamagedRange>,
}

impl SegmentScan {
    /// End of the last good frame: the segment's length once a damaged tail is cut off.
    pub fn valid_len(&self) -> usize {
        self.frames.last().map_or(0, |f| f.offset + f.len)
    }
}

/// Reads every record in `dir` in sequence order, calling `on_record` for each, and repairs
/// what it finds damaged (see the module docs): torn tails are cut off, corrupt ranges are
/// copied to `quarantine/` and removed, so appending after replay never follows bytes that
/// were not validated.
pub fn replay<E: From<Error>>(
    dir: &Path,
    on_record: impl FnMut(WalRecord) -> Result<(), E>,
) -> Result<ReplayReport, E> {
    replay_with(dir, true, on_record)
}

/// The analysis of [`replay`] without changing any file (for `weft wal check`).
pub fn check(dir: &Path) -> Result<ReplayReport> {
    replay_with(dir, false, |_| Ok::<_, Error>(()))
}

fn replay_with<E: From<Error>>(
    dir: &Path,
    repair: bool,
    mut on_record: impl FnMut(WalRecord) -> Result<(), E>,
) -> Result<ReplayReport, E> {
    if repair {
        fs::create_dir_all(dir)
            .map_err(|e| Error::Wal(format!("create {}: {e}", dir.display())))?;
        remove_repair_leftovers(dir)?;
    } else if !dir.exists() {
        return Ok(ReplayReport {
            next_seq: 1,
            ..ReplayReport::default()
        });
    }
    let segments = list_segments(dir)?;
    let mut report = ReplayReport {
        next_seq: 1,
        ..ReplayReport::default()
    };
    let mut last_seq = 0u64;
    for (index, segment) in segments.iter().enumerate() {
        report.next_seq = report.next_seq.max(segment.first_seq);
        let mut data = Vec::new();
        File::open(&segment.path)
            .and_then(|mut f| f.read_to_end(&mut data))
            .map_err(|e| Error::Wal(format!("read {}: {e}", segment.path.display())))?;
        let data = Bytes::from(data);
        let after = last_seq.max(segment.first_seq.saturating_sub(1));
        let scan = scan_segment(&data, after);
        let next_segment = segments.get(index + 1).map(|s| s.first_seq);
        let mut found = Vec::new();
        for range in &scan.damaged {
            let (kind, missing) = classify(range, next_segment);
            if let Some(missing) = missing {
                // Never hand out the sequence numbers of records that may have existed.
                report.next_seq = report.next_seq.max(missing.last.saturating_add(1));
            }
            found.push(Damage {
                segment: segment.path.clone(),
                offset: range.offset as u64,
                bytes: range.len as u64,
                kind,
                missing,
                quarantined: None,
            });
        }
        if repair && !found.is_empty() {
            repair_segment(dir, segment, &data, &scan, &mut found)?;
        }
        report.damage.extend(found);
        for frame in &scan.frames {
            let start = frame.offset + HEADER_LEN;
            let record = WalRecord {
                seq: frame.seq,
                kind: frame.kind,
                payload: data.slice(start..frame.offset + frame.len),
            };
            last_seq = frame.seq;
            report.next_seq = report.next_seq.max(frame.seq + 1);
            report.records += 1;
            on_record(record)?;
        }
    }
    Ok(report)
}

/// Calls `on_record` for each record with a sequence number in `first..=last`, in order,
/// reading only the segments that can hold them and changing nothing (the writer may be
/// appending to the newest segment meanwhile; records in the range are older and whole).
/// Records lost to damage or to segment deletion are simply not there: the caller counts.
pub fn read_range<E: From<Error>>(
    dir: &Path,
    first: u64,
    last: u64,
    mut on_record: impl FnMut(WalRecord) -> Result<(), E>,
) -> Result<(), E> {
    let segments = list_segments(dir)?;
    for (index, segment) in segments.iter().enumerate() {
        if segment.first_seq > last {
            break;
        }
        if segments
            .get(index + 1)
            .is_some_and(|next| next.first_seq <= first)
        {
            continue;
        }
        let mut data = Vec::new();
        match File::open(&segment.path).and_then(|mut f| f.read_to_end(&mut data)) {
            Ok(_) => {}
            // Deleted since it was listed: its records are gone.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::Wal(format!("read {}: {e}", segment.path.display())).into());
            }
        }
        let data = Bytes::from(data);
        let scan = scan_segment(&data, segment.first_seq.saturating_sub(1));
        for frame in scan.frames {
            if frame.seq < first || frame.seq > last {
                continue;
            }
            let start = frame.offset + HEADER_LEN;
            on_record(WalRecord {
                seq: frame.seq,
                kind: frame.kind,
                payload: data.slice(start..frame.offset + frame.len),
            })?;
        }
    }
    Ok(())
}

/// Torn tail or corruption, and which sequence numbers the damaged bytes may have held.
/// Sequence numbers are consecutive within a segment, and a segment is named by its first
/// one; a writer restarted after a torn write reuses the torn record's number (it was never
/// acknowledged). So damage is harmless exactly when no number is missing after it.
fn classify(range: &DamagedRange, next_segment: Option<u64>) -> (DamageKind, Option<SeqRange>) {
    let first = range.after_seq.saturating_add(1);
    if let Some(next) = range.next_seq {
        let missing = (next > first).then(|| SeqRange {
            first,
            last: next - 1,
            exact: true,
        });
        return (DamageKind::Corrupt, missing);
    }
    match next_segment {
        Some(next) if next <= first => (DamageKind::TornTail, None),
        Some(next) => (
            DamageKind::Corrupt,
            Some(SeqRange {
                first,
                last: next - 1,
                exact: true,
            }),
        ),
        None if range.incomplete => (DamageKind::TornTail, None),
        // The end of the log, but a whole frame that fails its checksum: it was written
        // completely, so it may have been acknowledged. At most one record per header size.
        None => (
            DamageKind::Corrupt,
            Some(SeqRange {
                first,
                last: first.saturating_add((range.len / HEADER_LEN).max(1) as u64 - 1),
                exact: false,
            }),
        ),
    }
}

/// Splits one segment's bytes into good frames and damaged ranges. A good frame parses, its
/// checksum matches and its sequence number is above the previous one (`after_seq` for the
/// first). After a bad frame the scan resynchronises on the next offset that holds a good
/// frame whose sequence number is plausible: above the previous one, and at most one more
/// per header's worth of skipped bytes (each lost record took at least a header). A random
/// offset passes that test with odds of about 2^-32 per plausible header. Pure and total:
/// never panics, always ends (every step moves forward), for the fuzzer and tests.
pub fn scan_segment(data: &[u8], after_seq: u64) -> SegmentScan {
    let mut scan = SegmentScan::default();
    let mut offset = 0;
    let mut last = after_seq;
    while offset < data.len() {
        if let Some(frame) = check_frame(data, offset, last, u64::MAX) {
            last = frame.seq;
            offset += frame.len;
            scan.frames.push(frame);
            continue;
        }
        let start = offset;
        let resync = (start + 1..data.len()).find_map(|p| {
            let most = last
                .saturating_add(1)
                .saturating_add(((p - start) / HEADER_LEN) as u64);
            check_frame(data, p, last, most)
        });
        match resync {
            Some(frame) => {
                scan.damaged.push(DamagedRange {
                    offset: start,
                    len: frame.offset - start,
                    after_seq: last,
                    next_seq: Some(frame.seq),
                    incomplete: false,
                });
                offset = frame.offset;
            }
            None => {
                scan.damaged.push(DamagedRange {
                    offset: start,
                    len: data.len() - start,
                    after_seq: last,
                    next_seq: None,
                    incomplete: looks_torn(&data[start..], last),
                });
                break;
            }
        }
    }
    scan
}

/// A good frame at `offset` with `after < seq <= most`.
fn check_frame(data: &[u8], offset: usize, after: u64, most: u64) -> Option<FrameInfo> {
    let header = data.get(offset..offset.checked_add(HEADER_LEN)?)?;
    let kind = RecordKind::from_u8(header[16])?;
    let seq = u64::from_le_bytes(header[8..16].try_into().ok()?);
    if seq <= after || seq > most {
        return None;
    }
    let len = u32::from_le_bytes(header[0..4].try_into().ok()?) as usize;
    if len > MAX_FRAME_PAYLOAD {
        return None;
    }
    let start = offset + HEADER_LEN;
    let payload = data.get(start..start.checked_add(len)?)?;
    let crc = u32::from_le_bytes(header[4..8].try_into().ok()?);
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&header[8..17]);
    hasher.update(payload);
    (hasher.finalize() == crc).then_some(FrameInfo {
        offset,
        len: HEADER_LEN + len,
        seq,
        kind,
    })
}

/// Whether the last bytes of a segment look like a write that a crash cut short rather than
/// a written record that was damaged afterwards.
fn looks_torn(tail: &[u8], after: u64) -> bool {
    if tail.len() < HEADER_LEN || tail.iter().all(|b| *b == 0) {
        return true;
    }
    let len = u32::from_le_bytes(tail[0..4].try_into().expect("4 bytes")) as usize;
    if HEADER_LEN.saturating_add(len) <= tail.len() {
        // The whole frame is there and fails its checksum: damaged after it was written.
        return false;
    }
    // The length runs past the end. If a shorter payload matches the checksum, the record
    // is complete and only its length field is damaged: corruption, not a torn write.
    let crc = u32::from_le_bytes(tail[4..8].try_into().expect("4 bytes"));
    let seq = u64::from_le_bytes(tail[8..16].try_into().expect("8 bytes"));
    if RecordKind::from_u8(tail[16]).is_none() || seq <= after {
        return true;
    }
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(&tail[8..17]);
    if hasher.clone().finalize() == crc {
        return false;
    }
    for byte in &tail[HEADER_LEN..] {
        hasher.update(std::slice::from_ref(byte));
        if hasher.clone().finalize() == crc {
            return false;
        }
    }
    true
}

/// Checks what replay relies on, for arbitrary bytes read as a segment (the `wal_replay`
/// fuzz target and a property test call it): the scan never panics and ends; its frames
/// and damaged ranges tile the input in order; frames are well formed with rising sequence
/// numbers; classification gives sane ranges; and the repaired segment (the good frames
/// alone) scans clean to the same records. Panics on a violation.
pub fn check_replay_invariants(data: &[u8]) {
    let after = data
        .get(..2)
        .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])) % 4);
    let scan = scan_segment(data, after);
    let mut pieces: Vec<(usize, usize)> = scan
        .frames
        .iter()
        .map(|f| (f.offset, f.len))
        .chain(scan.damaged.iter().map(|d| (d.offset, d.len)))
        .collect();
    pieces.sort_unstable();
    let mut end = 0;
    for (offset, len) in pieces {
        assert_eq!(offset, end, "pieces must tile the segment");
        assert!(len > 0, "empty piece at {offset}");
        end = offset + len;
    }
    assert_eq!(end, data.len(), "pieces must cover the segment");
    let mut last = after;
    for frame in &scan.frames {
        assert!(frame.seq > last, "sequence numbers rise");
        assert_eq!(
            check_frame(data, frame.offset, last, u64::MAX),
            Some(*frame)
        );
        last = frame.seq;
    }
    for (i, range) in scan.damaged.iter().enumerate() {
        let before = scan.frames.iter().rev().find(|f| f.offset < range.offset);
        assert_eq!(range.after_seq, before.map_or(after, |f| f.seq));
        let next = scan.frames.iter().find(|f| f.offset > range.offset);
        assert_eq!(range.next_seq, next.map(|f| f.seq));
        if range.next_seq.is_none() {
            assert_eq!(
                i + 1,
                scan.damaged.len(),
                "only the last range ends the segment"
            );
        }
        for next_segment in [None, Some(range.after_seq + 1), Some(range.after_seq + 9)] {
            let (kind, missing) = classify(range, next_segment);
            if let Some(m) = missing {
                assert!(m.first <= m.last && m.first > range.after_seq);
            }
            if kind == DamageKind::TornTail {
                assert!(missing.is_none());
            }
        }
    }
    let repaired: Vec<u8> = scan
        .frames
        .iter()
        .flat_map(|f| &data[f.offset..f.offset + f.len])
        .copied()
        .collect();
    let again = scan_segment(&repaired, after);
    assert!(again.damaged.is_empty(), "a repaired segment scans clean");
    let seqs = |s: &SegmentScan| s.frames.iter().map(|f| f.seq).collect::<Vec<_>>();
    assert_eq!(seqs(&again), seqs(&scan));
}

/// Name of the directory (inside the WAL directory) that keeps damaged bytes.
pub const QUARANTINE_DIR: &str = "quarantine";
const REPAIR_SUFFIX: &str = ".repair";

/// Copies the damaged ranges to `quarantine/` (fsynced), then makes the segment hold only
/// its good frames: a damaged tail is cut off, damage in the middle is removed by writing
/// the good frames to a new file renamed over the segment.
fn repair_segment(
    dir: &Path,
    segment: &Segment,
    data: &[u8],
    scan: &SegmentScan,
    damage: &mut [Damage],
) -> Result<()> {
    let wal_err = |what: &str, path: &Path, e: std::io::Error| {
        Error::Wal(format!("{what} {}: {e}", path.display()))
    };
    let quarantine = dir.join(QUARANTINE_DIR);
    fs::create_dir_all(&quarantine).map_err(|e| wal_err("create", &quarantine, e))?;
    let name = segment
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for d in damage.iter_mut() {
        let kind = match d.kind {
            DamageKind::TornTail => "torn",
            DamageKind::Corrupt => "corrupt",
        };
        let path = quarantine.join(format!(
            "{name}.{:020}-{:020}.{kind}",
            d.offset,
            d.offset + d.bytes
        ));
        let bytes = &data[d.offset as usize..(d.offset + d.bytes) as usize];
        let mut file = File::create(&path).map_err(|e| wal_err("create", &path, e))?;
        file.write_all(bytes)
            .and_then(|()| file.sync_all())
            .map_err(|e| wal_err("write", &path, e))?;
        d.quarantined = Some(path);
    }
    sync_dir(&quarantine).map_err(|e| wal_err("sync", &quarantine, e))?;

    let only_tail = scan.damaged.len() == 1 && scan.damaged[0].next_seq.is_none();
    if only_tail {
        let file = OpenOptions::new()
            .write(true)
            .open(&segment.path)
            .map_err(|e| wal_err("open", &segment.path, e))?;
        file.set_len(scan.valid_len() as u64)
            .and_then(|()| file.sync_all())
            .map_err(|e| wal_err("truncate", &segment.path, e))?;
    } else {
        let tmp = PathBuf::from(format!("{}{REPAIR_SUFFIX}", segment.path.display()));
        let mut file = File::create(&tmp).map_err(|e| wal_err("create", &tmp, e))?;
        for frame in &scan.frames {
            file.write_all(&data[frame.offset..frame.offset + frame.len])
                .map_err(|e| wal_err("write", &tmp, e))?;
        }
        file.sync_all().map_err(|e| wal_err("sync", &tmp, e))?;
        fs::rename(&tmp, &segment.path).map_err(|e| wal_err("rename", &tmp, e))?;
    }
    sync_dir(dir).map_err(|e| wal_err("sync", dir, e))
}

/// A crash during a repair leaves `<segment>.repair`; the segment itself is still whole.
fn remove_repair_leftovers(dir: &Path) -> Result<()> {
    let entries =
        fs::read_dir(dir).map_err(|e| Error::Wal(format!("list {}: {e}", dir.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(REPAIR_SUFFIX))
        {
            fs::remove_file(&path)
                .map_err(|e| Error::Wal(format!("remove {}: {e}", path.display())))?;
        }
    }
    Ok(())
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
            segments: std::sync::Arc::clone(&segments),
            pending_bytes: std::sync::Arc::clone(&pending_bytes),
            rx,
        };
        std::thread::Builder::new()
            .name("weft-wal".into())
            .spawn(move || writer.run(on_durable))
            .map_err(|e| Error::Wal(format!("spawn wal thread: {e}")))?;
        Ok(Self {
            tx,
            retain_flushed_bytes: config.retain_flushed_bytes,
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
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::ShuttingDown),
        }
    }

    /// Bytes handed to the log and not yet durable: part of the memory the server holds.
    pub fn pending_bytes(&self) -> usize {
        self.pending_bytes.load(Ordering::Relaxed)
    }

    /// Deletes segments whose records all have sequence numbers `<= seq` (they are in
    /// Parquet files now), oldest first, except the newest of them that fit in
    /// `wal.retain_flushed_bytes` (kept to rebuild unreadable Parquet files). The active
    /// segment is never deleted.
    pub fn truncate_through(&self, seq: u64) -> Result<usize> {
        let mut segments = self.segments.lock();
        let flushed = segments
            .windows(2)
            .take_while(|pair| pair[1].first_seq <= seq + 1)
            .count();
        // Walk back from the newest flushed segment while the budget holds.
        let mut retained_bytes = 0u64;
        let mut keep_from = flushed;
        while keep_from > 0 {
            let len = fs::metadata(&segments[keep_from - 1].path).map_or(0, |m| m.len());
            if retained_bytes + len > self.retain_flushed_bytes {
                break;
            }
            retained_bytes += len;
            keep_from -= 1;
        }
        let mut removed = 0;
        while removed < keep_from {
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

/// Opens the segment named `first_seq` for appending. Appending is allowed only to a file
/// this call creates or to an empty one: replay repairs every segment it reads, so a
/// non-empty file here holds bytes nobody validated, and writing after them could put
/// acknowledged records behind a damaged frame.
fn open_segment(dir: &Path, first_seq: u64) -> Result<(File, Segment)> {
    let path = segment_path(dir, first_seq);
    let file = match OpenOptions::new().create_new(true).append(true).open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| Error::Wal(format!("open {}: {e}", path.display())))?;
            let len = file
                .metadata()
                .map_err(|e| Error::Wal(format!("stat {}: {e}", path.display())))?
                .len();
            if len != 0 {
                return Err(Error::Wal(format!(
                    "segment {} already holds {len} bytes that replay did not validate; \
                     refusing to append after them",
                    path.display()
                )));
            }
            file
        }
        Err(e) => return Err(Error::Wal(format!("open {}: {e}", path.display()))),
    };
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
                Err(e) => {
                    tracing::error!(error = %e, "wal write failed; refusing this group");
                    for append in group {
                        let _ = append.done.send(Err(e.clone()));
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

    fn write_group(&mut self, frames: &[u8], first_seq: u64) -> Result<()> {
        if self.file_len >= self.config.segment_bytes {
            self.rotate_at(first_seq)?;
        }
        self.file.write_all(frames).map_err(write_error("write"))?;
        self.file_len += frames.len() as u64;
        if self.config.sync == SyncPolicy::Fsync {
            self.file.sync_data().map_err(write_error("fsync"))?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        self.rotate_at(self.next_seq)
    }

    fn rotate_at(&mut self, first_seq: u64) -> Result<()> {
        self.file
            .sync_data()
            .map_err(write_error("fsync before rotation"))?;
        let (file, segment) = open_segment(&self.dir, first_seq)?;
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

/// An [`Error::WalWrite`] at `step`.
fn write_error(step: &'static str) -> impl FnOnce(std::io::Error) -> Error {
    move |e| Error::WalWrite {
        step,
        error: Arc::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WalConfig {
        WalConfig {
            segment_bytes: 64,
            retain_flushed_bytes: 0,
            ..WalConfig::default()
        }
    }

    #[tokio::test]
    async fn flushed_segments_are_kept_within_the_budget_and_read_by_range() {
        let dir = tempfile::tempdir().unwrap();
        // 40-byte payloads: 57-byte frames, so every segment holds one or two records.
        let config = WalConfig {
            retain_flushed_bytes: 200,
            ..config()
        };
        let wal = Wal::start(dir.path(), &config, 1, |_: Vec<(u64, u32)>| {}).unwrap();
        for i in 0..20u32 {
            wal.append(RecordKind::OtlpTraces, Bytes::from(vec![i as u8; 40]), i)
                .await
                .unwrap();
        }
        let sizes = |dir: &Path| -> Vec<(u64, u64)> {
            list_segments(dir)
                .unwrap()
                .iter()
                .map(|s| (s.first_seq, fs::metadata(&s.path).unwrap().len()))
                .collect()
        };
        let before = sizes(dir.path());
        wal.truncate_through(15).unwrap();
        let after = sizes(dir.path());
        let flushed: Vec<_> = after
            .windows(2)
            .filter(|pair| pair[1].0 <= 16)
            .map(|pair| pair[0])
            .collect();
        let retained: u64 = flushed.iter().map(|(_, len)| len).sum();
        assert!(retained <= 200, "{after:?}");
        // The oldest segment that was deleted would have gone past the budget.
        let oldest_kept = after[0].0;
        let deleted_last = before.iter().rev().find(|(seq, _)| *seq < oldest_kept);
        let (_, deleted_len) = deleted_last.expect("something was deleted");
        assert!(retained + deleted_len > 200, "{before:?} -> {after:?}");
        assert!(
            !flushed.is_empty(),
            "flushed segments within the budget are kept"
        );

        // read_range gives exactly the records asked for that are still there.
        let mut seen = Vec::new();
        read_range(dir.path(), 1, 17, |r| -> Result<()> {
            seen.push((r.seq, r.payload[0]));
            Ok(())
        })
        .unwrap();
        let expected: Vec<(u64, u8)> = (oldest_kept..=17).map(|s| (s, (s - 1) as u8)).collect();
        assert_eq!(seen, expected);
        wal.truncate_through(20).unwrap();
        assert!(
            list_segments(dir.path()).unwrap()[0].first_seq > oldest_kept,
            "older flushed segments go as newer ones take the budget"
        );
    }

    #[tokio::test]
    async fn appended_records_replay_in_order_and_truncate() {
        let dir = tempfile::tempdir().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen_in_wal = std::sync::Arc::clone(&seen);
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
        let next = replay(dir.path(), |r| -> Result<()> {
            replayed.push((r.seq, r.payload[0]));
            Ok(())
        })
        .unwrap()
        .next_seq;
        assert_eq!(next, 11);
        assert_eq!(
            replayed,
            (1..=10).map(|i| (i, (i - 1) as u8)).collect::<Vec<_>>()
        );

        wal.truncate_through(6).unwrap();
        let mut after = Vec::new();
        replay(dir.path(), |r| -> Result<()> {
            after.push(r.seq);
            Ok(())
        })
        .unwrap();
        assert!(after.contains(&7) && after.contains(&10), "{after:?}");
        assert!(!after.contains(&1), "{after:?}");
    }

    fn replay_all(dir: &Path) -> (Vec<(u64, Bytes)>, ReplayReport) {
        let mut got = Vec::new();
        let report = replay(dir, |r| -> Result<()> {
            got.push((r.seq, r.payload));
            Ok(())
        })
        .unwrap();
        (got, report)
    }

    #[test]
    fn torn_tail_is_cut_off_and_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        encode_frame(&mut data, 1, RecordKind::OtlpMetrics, b"first");
        encode_frame(&mut data, 2, RecordKind::OtlpMetrics, b"second");
        let full = data.len();
        data.truncate(full - 3);
        let path = segment_path(dir.path(), 1);
        fs::write(&path, &data).unwrap();
        let (got, report) = replay_all(dir.path());
        assert_eq!(got, vec![(1, Bytes::from_static(b"first"))]);
        assert_eq!(report.next_seq, 2);
        assert_eq!(report.damage.len(), 1);
        let damage = &report.damage[0];
        assert_eq!(damage.kind, DamageKind::TornTail);
        assert_eq!(damage.missing, None);
        let kept = fs::read(damage.quarantined.as_ref().unwrap()).unwrap();
        assert_eq!(kept, data[HEADER_LEN + 5..]);
        assert_eq!(
            fs::metadata(&path).unwrap().len() as usize,
            HEADER_LEN + 5,
            "segment cut to its last good frame"
        );
        // Repaired: the next replay finds nothing wrong.
        let (again, report) = replay_all(dir.path());
        assert_eq!(again.len(), 1);
        assert!(report.damage.is_empty());
    }

    /// Issue 14 item 1: a torn first frame of a fresh segment, then a writer started on it.
    #[tokio::test]
    async fn a_writer_never_appends_after_a_torn_frame() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        encode_frame(&mut data, 7, RecordKind::OtlpTraces, &[1u8; 100]);
        data.truncate(60);
        fs::write(segment_path(dir.path(), 7), &data).unwrap();
        let (got, report) = replay_all(dir.path());
        assert!(got.is_empty());
        assert_eq!(report.next_seq, 7);
        let wal = Wal::start(
            dir.path(),
            &WalConfig::default(),
            report.next_seq,
            |_: Vec<(u64, ())>| {},
        )
        .unwrap();
        for i in 0..5u8 {
            wal.append(RecordKind::OtlpTraces, Bytes::from(vec![i; 10]), ())
                .await
                .unwrap();
        }
        drop(wal);
        let (got, report) = replay_all(dir.path());
        assert_eq!(
            got.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
            vec![7, 8, 9, 10, 11]
        );
        assert!(report.damage.is_empty(), "{:?}", report.damage);
    }

    #[test]
    fn the_writer_refuses_a_segment_with_unvalidated_bytes() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 3), b"garbage").unwrap();
        let err =
            Wal::start(dir.path(), &WalConfig::default(), 3, |_: Vec<(u64, ())>| {}).unwrap_err();
        assert!(err.to_string().contains("did not validate"), "{err}");
    }

    /// Issue 14 item 2: one flipped byte in record 10 of 60.
    #[test]
    fn corruption_in_the_middle_is_skipped_reported_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let mut data = Vec::new();
        let mut offsets = Vec::new();
        for seq in 1..=60u64 {
            offsets.push(data.len());
            encode_frame(&mut data, seq, RecordKind::OtlpTraces, &[seq as u8; 50]);
        }
        data[offsets[9] + HEADER_LEN + 20] ^= 0x10;
        let path = segment_path(dir.path(), 1);
        fs::write(&path, &data).unwrap();
        let report = check(dir.path()).unwrap();
        assert_eq!(report.damage.len(), 1);
        assert_eq!(fs::read(&path).unwrap(), data, "check changes nothing");

        let (got, report) = replay_all(dir.path());
        let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
        assert_eq!(seqs, (1..=60).filter(|s| *s != 10).collect::<Vec<_>>());
        assert_eq!(report.next_seq, 61);
        let damage = &report.damage[0];
        assert_eq!(damage.kind, DamageKind::Corrupt);
        assert_eq!(damage.offset, offsets[9] as u64);
        assert_eq!(damage.bytes, (HEADER_LEN + 50) as u64);
        assert_eq!(
            damage.missing,
            Some(SeqRange {
                first: 10,
                last: 10,
                exact: true
            })
        );
        assert_eq!(
            fs::read(damage.quarantined.as_ref().unwrap()).unwrap(),
            data[offsets[9]..offsets[10]]
        );
        let (again, report) = replay_all(dir.path());
        assert_eq!(again, got, "the repaired segment holds every good record");
        assert!(report.damage.is_empty());
    }

    #[test]
    fn a_damaged_last_record_is_corruption_not_a_torn_tail() {
        for flip in [2usize, HEADER_LEN + 3] {
            let dir = tempfile::tempdir().unwrap();
            let mut data = Vec::new();
            encode_frame(&mut data, 1, RecordKind::OtlpTraces, &[1; 30]);
            let last = data.len();
            encode_frame(&mut data, 2, RecordKind::OtlpTraces, &[2; 30]);
            // A length byte raised (runs past the end) or a payload byte changed.
            data[last + flip] ^= 0x40;
            fs::write(segment_path(dir.path(), 1), &data).unwrap();
            let (got, report) = replay_all(dir.path());
            assert_eq!(got.len(), 1);
            assert_eq!(report.damage[0].kind, DamageKind::Corrupt, "flip at {flip}");
            assert!(report.damage[0].missing.unwrap().contains(2));
            assert!(report.next_seq > 2);
        }
    }

    #[test]
    fn a_torn_tail_before_the_next_segment_is_harmless_a_gap_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let mut first = Vec::new();
        encode_frame(&mut first, 1, RecordKind::OtlpTraces, b"a");
        encode_frame(&mut first, 2, RecordKind::OtlpTraces, b"bbbbbbbb");
        first.truncate(first.len() - 2);
        fs::write(segment_path(dir.path(), 1), &first).unwrap();
        let mut second = Vec::new();
        encode_frame(&mut second, 2, RecordKind::OtlpTraces, b"again");
        fs::write(segment_path(dir.path(), 2), &second).unwrap();
        let (got, report) = replay_all(dir.path());
        assert_eq!(got.iter().map(|(s, _)| *s).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(report.damage[0].kind, DamageKind::TornTail);

        let dir = tempfile::tempdir().unwrap();
        fs::write(segment_path(dir.path(), 1), &first).unwrap();
        let mut third = Vec::new();
        encode_frame(&mut third, 3, RecordKind::OtlpTraces, b"later");
        fs::write(segment_path(dir.path(), 3), &third).unwrap();
        let (_, report) = replay_all(dir.path());
        assert_eq!(report.damage[0].kind, DamageKind::Corrupt);
        assert_eq!(
            report.damage[0].missing.map(|m| (m.first, m.last)),
            Some((2, 2))
        );
    }

    mod crash_restart {
        //! Property: through random crashes (a group write cut at a random byte), random
        //! flipped bytes anywhere in the log and several restarts with appends in between,
        //! every acknowledged record is replayed exactly once on every restart or reported
        //! missing by a replay: never silently dropped, never duplicated, never altered.
        use std::collections::{BTreeMap, BTreeSet};

        use proptest::prelude::*;

        use super::*;

        #[derive(Debug, Clone)]
        struct Round {
            appends: Vec<u16>,
            /// A group of records whose write a crash cuts short at `cut` (fraction of 1000).
            tear: Option<(Vec<u16>, u16)>,
            /// (segment index, position, bit). At most one between restarts: two damaged
            /// header fields of the log's last record are indistinguishable from a torn
            /// write (see the module docs).
            flips: Vec<(u8, u32, u8)>,
        }

        fn round() -> impl Strategy<Value = Round> {
            (
                proptest::collection::vec(1u16..120, 0..12),
                proptest::option::of((proptest::collection::vec(1u16..120, 1..4), 0u16..1000)),
                proptest::collection::vec((any::<u8>(), any::<u32>(), 0u8..8), 0..2),
            )
                .prop_map(|(appends, tear, flips)| Round {
                    appends,
                    tear,
                    flips,
                })
        }

        fn payload(id: u64, len: u16) -> Bytes {
            let mut bytes = id.to_le_bytes().to_vec();
            bytes.extend((0..len).map(|i| (i as u8).wrapping_mul(31) ^ id as u8));
            Bytes::from(bytes)
        }

        fn run(rounds: Vec<Round>) -> Result<(), TestCaseError> {
            let dir = tempfile::tempdir().unwrap();
            let config = WalConfig {
                sync: SyncPolicy::Os,
                segment_bytes: 400,
                ..WalConfig::default()
            };
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let mut acked: BTreeMap<u64, Bytes> = BTreeMap::new();
            let mut unacked: BTreeMap<u64, Bytes> = BTreeMap::new();
            let mut reported: Vec<SeqRange> = Vec::new();
            let mut next_id = 0u64;
            for round in rounds.iter().chain(std::iter::once(&Round {
                appends: Vec::new(),
                tear: None,
                flips: Vec::new(),
            })) {
                // Restart: replay and check.
                let (got, report) = replay_all(dir.path());
                reported.extend(report.damage.iter().filter_map(|d| d.missing));
                let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
                prop_assert!(seqs.windows(2).all(|w| w[0] < w[1]), "order/dups {seqs:?}");
                for (seq, bytes) in &got {
                    let expected = acked.get(seq).or_else(|| unacked.get(seq));
                    prop_assert_eq!(Some(bytes), expected, "seq {} altered or invented", seq);
                }
                let replayed: BTreeSet<u64> = seqs.iter().copied().collect();
                for seq in acked.keys() {
                    prop_assert!(
                        replayed.contains(seq) || reported.iter().any(|r| r.contains(*seq)),
                        "acknowledged record {} silently dropped; report {:?}",
                        seq,
                        report.damage
                    );
                }
                prop_assert!(report.next_seq > replayed.last().copied().unwrap_or(0));
                // Records replayed once stay: what was reported never comes back and numbers
                // are never reused.
                let wal = Wal::start(dir.path(), &config, report.next_seq, |_: Vec<(u64, ())>| {})
                    .unwrap();
                let mut last = report.next_seq - 1;
                for len in &round.appends {
                    next_id += 1;
                    let bytes = payload(next_id, *len);
                    let seq = runtime
                        .block_on(wal.append(RecordKind::OtlpTraces, bytes.clone(), ()))
                        .unwrap();
                    prop_assert!(
                        !acked.contains_key(&seq) && !reported.iter().any(|r| r.contains(seq))
                    );
                    acked.insert(seq, bytes);
                    last = seq;
                }
                drop(wal);
                let mut segments = list_segments(dir.path()).unwrap();
                if let Some((lens, cut)) = &round.tear {
                    let newest = segments.last().unwrap();
                    let mut group = Vec::new();
                    for (i, len) in lens.iter().enumerate() {
                        next_id += 1;
                        let bytes = payload(next_id, *len);
                        let seq = last + 1 + i as u64;
                        encode_frame(&mut group, seq, RecordKind::OtlpTraces, &bytes);
                        unacked.insert(seq, bytes);
                    }
                    group.truncate(group.len() * *cut as usize / 1000);
                    let mut file = OpenOptions::new().append(true).open(&newest.path).unwrap();
                    file.write_all(&group).unwrap();
                }
                segments.retain(|s| fs::metadata(&s.path).map(|m| m.len() > 0).unwrap_or(false));
                for (segment, pos, bit) in &round.flips {
                    if segments.is_empty() {
                        break;
                    }
                    let path = &segments[*segment as usize % segments.len()].path;
                    let mut data = fs::read(path).unwrap();
                    let at = *pos as usize % data.len();
                    data[at] ^= 1 << bit;
                    fs::write(path, data).unwrap();
                }
            }
            Ok(())
        }

        /// Frames of random payloads with random damage, for the fuzz target's checks.
        fn damaged_log() -> impl Strategy<Value = Vec<u8>> {
            (
                proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..40), 0..8),
                proptest::collection::vec((any::<u16>(), any::<u8>()), 0..4),
                any::<u16>(),
            )
                .prop_map(|(payloads, flips, cut)| {
                    let mut data = Vec::new();
                    for (i, p) in payloads.iter().enumerate() {
                        encode_frame(&mut data, 2 + i as u64, RecordKind::OtlpTraces, p);
                    }
                    for (at, value) in flips {
                        if !data.is_empty() {
                            let at = at as usize % data.len();
                            data[at] = value;
                        }
                    }
                    let keep = data.len().saturating_sub(cut as usize % 8);
                    data.truncate(keep);
                    data
                })
        }

        proptest! {
            #[test]
            fn the_fuzz_targets_checks_hold_for_damaged_logs(data in damaged_log()) {
                check_replay_invariants(&data);
            }

            #[test]
            fn the_fuzz_targets_checks_hold_for_arbitrary_bytes(
                data in proptest::collection::vec(any::<u8>(), 0..300)
            ) {
                check_replay_invariants(&data);
            }
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
            #[test]
            fn acknowledged_records_are_replayed_once_or_reported(
                rounds in proptest::collection::vec(round(), 1..6)
            ) {
                run(rounds)?;
            }
        }
    }
}
