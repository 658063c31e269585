//! The wire format of `GET /internal/v1/snapshot` (served by the collector crate): one collector node's view of a table for the query service of
//! a cluster — its committed files and the rows it has not flushed yet, from one consistent
//! `Store::snapshot` (so a row is in exactly one of the two).
//!
//! ```text
//!  weft query ── GET /internal/v1/snapshot?table=spans&trace_id=…&min_time_ns=…&max_time_ns=…
//!      │                          │
//!      │                          ▼ Store::snapshot(table): files + live rows, one lock
//!      │              files: drop those whose time range or trace-id filter cannot match
//!      │              live rows: keep only matching rows (trace id, time range)
//!      ▼                          │
//!  "WSNP" | u32 LE header length | header JSON | Arrow IPC stream (LZ4) of the live rows
//!      │
//!      └─> decode(): SnapshotHeader { files (paths relative to the node's data dir) } + rows
//! ```
//!
//! The filters only make the answer smaller; the query re-applies every condition, so they
//! may keep more than they must (files whose filter may hold a trace) but never less.
//!
//! # Wire format (`application/vnd.weft.snapshot`, version 1)
//!
//! | bytes | content |
//! | --- | --- |
//! | 4 | magic `WSNP` |
//! | 4 | length `n` of the header, unsigned little-endian |
//! | n | header, JSON: `{"version": 1, "table": "spans", "live_rows": 12, "files": [{"path": "spans/tenant=default/date=…/hour=13/<uuid>.parquet", "tenant": "default", "rows": 1000, "bytes": 52311, "min_time_ns": …, "max_time_ns": …}]}` |
//! | rest | Arrow IPC stream (schema, record batches compressed with LZ4 frames, end-of-stream marker): the live rows, in the table's schema |
//!
//! Query parameters: `table` (`spans` or `metrics`, required); `trace_id` (32 hex digits,
//! repeatable or comma-separated; spans only); `min_time_ns`, `max_time_ns` (inclusive bounds
//! on the table's time column). Errors are `400` with a plain-text reason.
//!
//! The body is streamed: the header first, then one IPC message per live batch, so the node
//! never holds a second copy of its live rows. Encoding runs on the request's task; live
//! batches are export-request sized, so each step is short.

use std::collections::HashSet;
use std::io::Cursor;

use arrow::array::{Array, AsArray, BooleanArray, RecordBatch};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::ipc::CompressionType;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use axum::body::Body;
use bytes::Bytes;
use futures::StreamExt as _;
use serde::{Deserialize, Serialize};
use weft_schemas::{Table, columns};

use weft_storage::store::{FileMeta, TableSnapshot};

use crate::Error;

/// Path of the snapshot endpoint on a collector's internal HTTP listener.
pub const PATH: &str = "/internal/v1/snapshot";
/// Media type of a snapshot answer.
pub const CONTENT_TYPE: &str = "application/vnd.weft.snapshot";
/// Version of the header; a reader refuses others.
pub const FORMAT_VERSION: u32 = 1;
const MAGIC: &[u8; 4] = b"WSNP";
/// Longest header accepted by [`decode`]: a manifest of ~100k files.
const MAX_HEADER_BYTES: usize = 64 << 20;

/// What a query asks one node for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRequest {
    pub table: Table,
    /// Only these traces (spans only); empty: every trace.
    pub trace_ids: Vec<[u8; 16]>,
    /// Inclusive bounds on the table's time column.
    pub min_time_ns: Option<i64>,
    pub max_time_ns: Option<i64>,
}

impl SnapshotRequest {
    /// Everything of `table`.
    pub fn all(table: Table) -> Self {
        Self {
            table,
            trace_ids: Vec::new(),
            min_time_ns: None,
            max_time_ns: None,
        }
    }

    /// The query string (without `?`) that [`SnapshotRequest::parse`] reads back.
    pub fn to_query_string(&self) -> String {
        let mut out = format!("table={}", self.table.name());
        for id in &self.trace_ids {
            out.push_str("&trace_id=");
            out.push_str(&hex_encode(id));
        }
        if let Some(min) = self.min_time_ns {
            out.push_str(&format!("&min_time_ns={min}"));
        }
        if let Some(max) = self.max_time_ns {
            out.push_str(&format!("&max_time_ns={max}"));
        }
        out
    }

    /// Reads a query string. Values are hex, decimal or table names, so nothing is
    /// percent-encoded; anything else is refused with a reason.
    pub fn parse(query: &str) -> Result<Self, Error> {
        let mut table = None;
        let mut request = Self::all(Table::Spans);
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "table" => {
                    table = Some(
                        Table::ALL
                            .into_iter()
                            .find(|t| t.name() == value)
                            .ok_or_else(|| Error::UnknownTable {
                                name: value.to_owned(),
                            })?,
                    );
                }
                "trace_id" => {
                    for text in value.split(',').filter(|t| !t.is_empty()) {
                        request.trace_ids.push(hex_decode(text).ok_or_else(|| {
                            Error::InvalidParameter {
                                name: "trace_id".to_owned(),
                                value: text.to_owned(),
                                expected: "32 hex digits",
                            }
                        })?);
                    }
                }
                "min_time_ns" | "max_time_ns" => {
                    let ns: i64 = value.parse().map_err(|_| Error::InvalidParameter {
                        name: key.to_owned(),
                        value: value.to_owned(),
                        expected: "an integer",
                    })?;
                    if key == "min_time_ns" {
                        request.min_time_ns = Some(ns);
                    } else {
                        request.max_time_ns = Some(ns);
                    }
                }
                other => {
                    return Err(Error::UnknownParameter {
                        name: other.to_owned(),
                    });
                }
            }
        }
        request.table = table.ok_or(Error::MissingParameter { name: "table" })?;
        if request.table != Table::Spans && !request.trace_ids.is_empty() {
            return Err(Error::TraceIdOutsideSpans);
        }
        Ok(request)
    }

    /// Whether a committed file may hold rows this request wants.
    pub fn may_match_file(&self, file: &FileMeta) -> bool {
        if self.min_time_ns.is_some_and(|min| file.max_time_ns < min)
            || self.max_time_ns.is_some_and(|max| file.min_time_ns > max)
        {
            return false;
        }
        match (&file.trace_ids, self.trace_ids.is_empty()) {
            (_, true) | (None, false) => true,
            (Some(filter), false) => self.trace_ids.iter().any(|id| filter.may_contain(id)),
        }
    }

    /// The rows of `batch` this request wants (`batch` itself when all are wanted).
    pub fn filter_rows(&self, batch: &RecordBatch) -> Result<RecordBatch, Error> {
        let rows = batch.num_rows();
        let mut keep = vec![true; rows];
        if self.min_time_ns.is_some() || self.max_time_ns.is_some() {
            let name = self.table.time_column();
            let times = batch
                .column_by_name(name)
                .ok_or(Error::LiveColumnMissing {
                    rows: "rows",
                    column: name,
                })?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or(Error::LiveColumnType {
                    column: name,
                    expected: "a nanosecond timestamp",
                })?;
            let min = self.min_time_ns.unwrap_or(i64::MIN);
            let max = self.max_time_ns.unwrap_or(i64::MAX);
            for (i, keep) in keep.iter_mut().enumerate() {
                *keep = times.is_valid(i) && (min..=max).contains(&times.value(i));
            }
        }
        if !self.trace_ids.is_empty() {
            let wanted: HashSet<&[u8]> = self.trace_ids.iter().map(|id| &id[..]).collect();
            let ids = batch
                .column_by_name(columns::TRACE_ID)
                .ok_or(Error::LiveColumnMissing {
                    rows: "spans",
                    column: columns::TRACE_ID,
                })?
                .as_fixed_size_binary_opt()
                .ok_or(Error::LiveColumnType {
                    column: columns::TRACE_ID,
                    expected: "fixed-size binary",
                })?;
            for (i, keep) in keep.iter_mut().enumerate() {
                *keep = *keep && ids.is_valid(i) && wanted.contains(ids.value(i));
            }
        }
        if keep.iter().all(|k| *k) {
            return Ok(batch.clone());
        }
        arrow::compute::filter_record_batch(batch, &BooleanArray::from(keep)).map_err(|error| {
            Error::Arrow {
                step: "filter live rows",
                error,
            }
        })
    }
}

/// The JSON header of a snapshot answer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SnapshotHeader {
    pub version: u32,
    /// `spans` or `metrics`.
    pub table: String,
    /// Committed files that may match, paths relative to the node's data directory.
    pub files: Vec<FileMeta>,
    /// Rows in the Arrow IPC stream that follows.
    pub live_rows: u64,
}

/// A decoded snapshot answer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub header: SnapshotHeader,
    /// The live rows, in the table's schema.
    pub live: Vec<RecordBatch>,
}

/// The answer body for `request` from one consistent snapshot of the node's table: the
/// header, then the live rows as an Arrow IPC stream, produced batch by batch.
pub fn encode(snapshot: &TableSnapshot, request: &SnapshotRequest) -> Result<Body, Error> {
    let files: Vec<FileMeta> = snapshot
        .files
        .iter()
        .filter(|f| request.may_match_file(f))
        .map(|f| (**f).clone())
        .collect();
    // Filtering first gives the row count for the header; unfiltered batches are shared,
    // not copied, and filtered ones are small (that is what the filter is for).
    let mut live = Vec::with_capacity(snapshot.live.len());
    for batch in &snapshot.live {
        let batch = request.filter_rows(batch)?;
        if batch.num_rows() > 0 {
            live.push(batch);
        }
    }
    let header = SnapshotHeader {
        version: FORMAT_VERSION,
        table: request.table.name().to_owned(),
        files,
        live_rows: live.iter().map(|b| b.num_rows() as u64).sum(),
    };
    let header = serde_json::to_vec(&header).map_err(|error| Error::Header {
        step: "encode header",
        error,
    })?;
    let mut first = Vec::with_capacity(header.len() + 8);
    first.extend_from_slice(MAGIC);
    first.extend_from_slice(&(header.len() as u32).to_le_bytes());
    first.extend_from_slice(&header);
    let mut writer = ipc_writer(first, &request.table.schema())?;
    let head = Bytes::from(std::mem::take(writer.get_mut()));
    let body = futures::stream::unfold(
        (Some(writer), live.into_iter()),
        |(writer, mut batches)| async move {
            let mut writer = writer?;
            let chunk = match batches.next() {
                Some(batch) => writer.write(&batch).map(|_| None),
                None => writer.finish().map(|_| Some(())),
            };
            match chunk {
                Ok(done) => {
                    let bytes = Bytes::from(std::mem::take(writer.get_mut()));
                    let next = if done.is_some() { None } else { Some(writer) };
                    Some((Ok::<_, std::io::Error>(bytes), (next, batches)))
                }
                Err(e) => Some((Err(std::io::Error::other(e)), (None, batches))),
            }
        },
    );
    let stream = futures::stream::once(async move { Ok(head) }).chain(body);
    Ok(Body::from_stream(stream))
}

fn ipc_writer(into: Vec<u8>, schema: &SchemaRef) -> Result<StreamWriter<Vec<u8>>, Error> {
    // LZ4: live rows are mostly repeated strings (resource attributes on every row), and
    // LZ4 runs at memory speed, so it costs less than the bytes it saves on a network.
    let options = IpcWriteOptions::default()
        .try_with_compression(Some(CompressionType::LZ4_FRAME))
        .map_err(|error| Error::Arrow {
            step: "ipc options",
            error,
        })?;
    StreamWriter::try_new_with_options(into, schema, options).map_err(|error| Error::Arrow {
        step: "ipc stream",
        error,
    })
}

/// Reads a snapshot answer of `table` (see the module docs for the format). The live rows
/// come back in `table`'s schema.
pub fn decode(table: Table, body: &[u8]) -> Result<Snapshot, Error> {
    let rest = body.strip_prefix(MAGIC).ok_or(Error::BadMagic)?;
    let length = rest
        .get(..4)
        .ok_or(Error::TruncatedHeader)?
        .try_into()
        .map(u32::from_le_bytes)
        .map_err(|_| Error::TruncatedHeader)? as usize;
    if length > MAX_HEADER_BYTES {
        return Err(Error::HeaderTooLarge { length });
    }
    let header_bytes = rest.get(4..4 + length).ok_or(Error::TruncatedHeader)?;
    let header: SnapshotHeader =
        serde_json::from_slice(header_bytes).map_err(|error| Error::Header {
            step: "snapshot header",
            error,
        })?;
    if header.version != FORMAT_VERSION {
        return Err(Error::UnsupportedVersion {
            version: header.version,
            expected: FORMAT_VERSION,
        });
    }
    if header.table != table.name() {
        return Err(Error::WrongTable {
            asked: table.name(),
            got: header.table,
        });
    }
    let rows_error = |error| Error::Arrow {
        step: "snapshot rows",
        error,
    };
    let reader =
        StreamReader::try_new(Cursor::new(&rest[4 + length..]), None).map_err(rows_error)?;
    let schema = table.schema();
    let mut live = Vec::new();
    for batch in reader {
        let batch = batch.map_err(rows_error)?;
        // The IPC schema equals the table's; re-wrapping makes it the very same `Arc`.
        let batch = RecordBatch::try_new(std::sync::Arc::clone(&schema), batch.columns().to_vec())
            .map_err(|error| Error::RowsSchema {
                table: table.name(),
                error,
            })?;
        live.push(batch);
    }
    let rows: u64 = live.iter().map(|b| b.num_rows() as u64).sum();
    if rows != header.live_rows {
        return Err(Error::RowCount {
            announced: header.live_rows,
            carried: rows,
        });
    }
    Ok(Snapshot { header, live })
}

fn hex_encode(id: &[u8; 16]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for byte in id {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0xf)]));
    }
    out
}

fn hex_decode(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut id = [0u8; 16];
    for (i, pair) in text.as_bytes().chunks_exact(2).enumerate() {
        let digit = |c: u8| char::from(c).to_digit(16);
        id[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_bad_ones_are_refused() {
        let request = SnapshotRequest {
            table: Table::Spans,
            trace_ids: vec![[0xab; 16], [1; 16]],
            min_time_ns: Some(-5),
            max_time_ns: Some(99),
        };
        assert_eq!(
            SnapshotRequest::parse(&request.to_query_string()).unwrap(),
            request
        );
        assert_eq!(
            SnapshotRequest::parse("table=metrics").unwrap(),
            SnapshotRequest::all(Table::Metrics)
        );
        for bad in [
            "",
            "table=logs",
            "table=spans&trace_id=12",
            "table=spans&min_time_ns=x",
            "table=spans&colour=red",
            "table=metrics&trace_id=abababababababababababababababab",
        ] {
            assert!(SnapshotRequest::parse(bad).is_err(), "{bad:?}");
        }
        // The reasons are the 400 answer's text.
        let reason = |q: &str| SnapshotRequest::parse(q).unwrap_err().to_string();
        assert_eq!(reason(""), "parameter table is required");
        assert_eq!(reason("table=logs"), "unknown table \"logs\"");
        assert_eq!(
            reason("table=spans&trace_id=12"),
            "trace_id \"12\" is not 32 hex digits"
        );
        assert_eq!(
            reason("table=spans&min_time_ns=x"),
            "min_time_ns \"x\" is not an integer"
        );
        assert_eq!(
            reason("table=spans&colour=red"),
            "unknown parameter \"colour\""
        );
        assert_eq!(
            decode(Table::Spans, b"nope").unwrap_err().to_string(),
            "not a weft snapshot (bad magic)"
        );
    }
}
