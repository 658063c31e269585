//! Pass 1 of the graph: parent → child resolution inside trace runs.
//!
//! ```text
//!  batch (sorted by trace_id?) ──no──> held back; sorted together at the end (live rows)
//!        │ yes
//!        ▼
//!  rows ─> current run (consecutive rows of one trace, carried across batches)
//!             │ trace changes
//!             ▼
//!  finish_run: span_id → row map of this run only
//!     child with parent in run ─> Jaeger link parent svc → child svc
//!                                 CLIENT/PRODUCER parent + SERVER/CONSUMER child ─> edge
//!     child with parent not in run ─> Pending (second pass)
//!     root SERVER/CONSUMER ─> edge user → service
//!     CLIENT/PRODUCER without callee child ─> edge service → peer (virtual)
//! ```
//!
//! Parquet files are sorted by trace, so a run is usually a whole trace and the map holds
//! one trace's spans at a time. The only per-span state kept beyond a run is `Pending`,
//! for the few spans whose parent lives in another file, another partition or the live
//! rows.

use std::collections::VecDeque;

use arrow::array::{
    Array, FixedSizeBinaryArray, Float64Array, Int8Array, Int64Array, RecordBatch, UInt32Array,
};
use weft_schemas::columns::{
    DB_SYSTEM, DURATION_NS, KIND, MESSAGING_SYSTEM, PARENT_SPAN_ID, PEER_SERVICE, SAMPLE_WEIGHT,
    SERVER_ADDRESS, SERVICE_NAME, SPAN_ID, STATUS_CODE, TRACE_ID,
};

use super::model::{
    EdgeAgg, EdgeKey, EdgeKind, Partial, Pending, STATUS_ERROR, Side, UNKNOWN, USER, VirtualNode,
    is_callee, is_caller,
};
use crate::span_scan::{IdMap, Interner, NameIds, StrColumn, Worker, column, typed};
use crate::{Error, Result};

/// Columns both graph passes read.
pub(super) const COLUMNS: [&str; 12] = [
    TRACE_ID,
    SPAN_ID,
    PARENT_SPAN_ID,
    SERVICE_NAME,
    KIND,
    DURATION_NS,
    STATUS_CODE,
    SAMPLE_WEIGHT,
    PEER_SERVICE,
    DB_SYSTEM,
    MESSAGING_SYSTEM,
    SERVER_ADDRESS,
];

/// Unsorted rows (live data) held back before they are sorted and processed: bounds the
/// memory of one sort. Live rows are bounded by the collector's buffer anyway.
const UNSORTED_MAX_ROWS: usize = 1 << 21;

/// Capacity of the per-run map and row buffer kept between runs.
const INDEX_KEEP_CAPACITY: usize = 1 << 12;

/// The graph columns of one batch.
#[derive(Debug, Clone)]
pub(super) struct Cols {
    pub trace: FixedSizeBinaryArray,
    span: FixedSizeBinaryArray,
    parent: FixedSizeBinaryArray,
    kind: Int8Array,
    duration: Int64Array,
    status: Int8Array,
    weight: Float64Array,
    /// `peer_service`, `db_system`, `messaging_system`, `server_address`: the order in
    /// which they name a virtual peer.
    peers: [StrColumn; 4],
}

impl Cols {
    pub(super) fn new(batch: &RecordBatch) -> Result<Self> {
        let trace: FixedSizeBinaryArray = typed(batch, TRACE_ID)?;
        let span: FixedSizeBinaryArray = typed(batch, SPAN_ID)?;
        let parent: FixedSizeBinaryArray = typed(batch, PARENT_SPAN_ID)?;
        if trace.value_length() != 16 || span.value_length() != 8 || parent.value_length() != 8 {
            return Err(Error::Execution(
                "unexpected id widths in the spans table".into(),
            ));
        }
        let peer = |name| StrColumn::new(column(batch, name)?);
        Ok(Self {
            trace,
            span,
            parent,
            kind: typed(batch, KIND)?,
            duration: typed(batch, DURATION_NS)?,
            status: typed(batch, STATUS_CODE)?,
            weight: typed(batch, SAMPLE_WEIGHT)?,
            peers: [
                peer(PEER_SERVICE)?,
                peer(DB_SYSTEM)?,
                peer(MESSAGING_SYSTEM)?,
                peer(SERVER_ADDRESS)?,
            ],
        })
    }

    #[inline]
    pub(super) fn trace(&self, i: usize) -> [u8; 16] {
        let mut id = [0u8; 16];
        id.copy_from_slice(self.trace.value(i));
        id
    }

    #[inline]
    pub(super) fn span(&self, i: usize) -> u64 {
        id8(self.span.value(i))
    }

    /// The parent span id, 0 for a root (the all-zero id is stored as null).
    #[inline]
    pub(super) fn parent(&self, i: usize) -> u64 {
        if self.parent.is_null(i) {
            0
        } else {
            id8(self.parent.value(i))
        }
    }

    #[inline]
    pub(super) fn kind(&self, i: usize) -> i8 {
        self.kind.value(i)
    }

    #[inline]
    pub(super) fn side(&self, i: usize) -> Side {
        Side {
            duration: self.duration.value(i),
            weight: self.weight.value(i),
            error: self.status.value(i) == STATUS_ERROR,
        }
    }

    /// The name of the peer a client span called: `peer.service`, else `db.system`, else
    /// `messaging.system`, else `server.address`, else `unknown`.
    pub(super) fn peer(&self, i: usize) -> &str {
        self.peers
            .iter()
            .find_map(|c| c.get(i).filter(|s| !s.is_empty()))
            .unwrap_or(UNKNOWN)
    }
}

#[inline]
fn id8(bytes: &[u8]) -> u64 {
    let mut id = [0u8; 8];
    id.copy_from_slice(bytes);
    u64::from_be_bytes(id)
}

/// Is `trace` in non-decreasing order?
pub(super) fn sorted_by_trace(trace: &FixedSizeBinaryArray) -> bool {
    (1..trace.len()).all(|i| trace.value(i - 1) <= trace.value(i))
}

/// One span of the current run.
#[derive(Debug, Clone, Copy)]
struct RunRow {
    span: u64,
    parent: u64,
    service: u32,
    kind: i8,
    /// A callee child was found in the run.
    matched: bool,
    side: Side,
    /// Where the row is, to read its peer columns only if it turns out to need them.
    slot: u32,
    row: u32,
}

/// A [`Pending`] with the service still as an id of this worker.
#[derive(Debug)]
struct PendingRow {
    trace: [u8; 16],
    span: u64,
    parent: u64,
    service: u32,
    kind: i8,
    side: Side,
}

/// Pass-1 worker of one partition; see the module docs.
pub(super) struct RunWorker {
    names: Interner,
    service_ids: NameIds,
    ids: Vec<u32>,
    user: u32,
    // The current run.
    trace: Option<[u8; 16]>,
    rows: Vec<RunRow>,
    index: IdMap<u64, u32>,
    /// Batches the current run has rows in; `held[0]` is batch number `held_first`.
    held: VecDeque<Cols>,
    held_first: u32,
    next_slot: u32,
    unsorted: Vec<RecordBatch>,
    unsorted_rows: usize,
    // Results, names as ids of `names`.
    links: IdMap<(u32, u32), f64>,
    edges: IdMap<EdgeKey<u32>, EdgeAgg>,
    span_weight: Vec<f64>,
    seen: Vec<bool>,
    pending: Vec<PendingRow>,
}

impl RunWorker {
    pub(super) fn new() -> Self {
        let mut names = Interner::default();
        let user = names.intern(USER);
        Self {
            names,
            service_ids: NameIds::default(),
            ids: Vec::new(),
            user,
            trace: None,
            rows: Vec::new(),
            index: IdMap::default(),
            held: VecDeque::new(),
            held_first: 0,
            next_slot: 0,
            unsorted: Vec::new(),
            unsorted_rows: 0,
            links: IdMap::default(),
            edges: IdMap::default(),
            span_weight: Vec::new(),
            seen: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Cuts a sorted batch into runs, carrying the last run over to the next batch.
    fn runs(&mut self, batch: &RecordBatch) -> Result<()> {
        let cols = Cols::new(batch)?;
        let mut ids = std::mem::take(&mut self.ids);
        self.service_ids
            .ids(column(batch, SERVICE_NAME)?, &mut self.names, &mut ids)?;
        let slot = self.next_slot;
        self.next_slot += 1;
        self.held.push_back(cols.clone());
        for (i, &service) in ids.iter().enumerate() {
            let trace = cols.trace.value(i);
            if self.trace.as_ref().is_none_or(|t| t[..] != *trace) {
                self.finish_run(true);
                self.trace = Some(cols.trace(i));
            }
            self.rows.push(RunRow {
                span: cols.span(i),
                parent: cols.parent(i),
                service,
                kind: cols.kind(i),
                matched: false,
                side: cols.side(i),
                slot,
                row: i as u32,
            });
        }
        self.ids = ids;
        Ok(())
    }

    /// Resolves the current run; keeps only the newest held batch when `keep_current`
    /// (the next run starts in it).
    fn finish_run(&mut self, keep_current: bool) {
        if let Some(trace) = self.trace.take() {
            if self.span_weight.len() < self.names.len() {
                self.span_weight.resize(self.names.len(), 0.0);
                self.seen.resize(self.names.len(), false);
            }
            let rows = &mut self.rows;
            if rows.len() > 1 {
                self.index.clear();
                for (i, r) in rows.iter().enumerate() {
                    self.index.insert(r.span, i as u32);
                }
            }
            for i in 0..rows.len() {
                let r = rows[i];
                self.span_weight[r.service as usize] += r.side.weight;
                self.seen[r.service as usize] = true;
                if r.parent != 0 {
                    let parent = if rows.len() > 1 {
                        self.index.get(&r.parent).copied()
                    } else {
                        None
                    };
                    let Some(q) = parent else {
                        self.pending.push(PendingRow {
                            trace,
                            span: r.span,
                            parent: r.parent,
                            service: r.service,
                            kind: r.kind,
                            side: r.side,
                        });
                        continue;
                    };
                    let p = rows[q as usize];
                    *self.links.entry((p.service, r.service)).or_default() += r.side.weight;
                    if is_callee(r.kind) && is_caller(p.kind) {
                        rows[q as usize].matched = true;
                        let key = EdgeKey {
                            client: p.service,
                            server: r.service,
                            kind: EdgeKind::of(p.kind),
                            virtual_node: None,
                        };
                        self.edges
                            .entry(key)
                            .or_default()
                            .pair(p.side, r.side, &trace);
                    }
                } else if is_callee(r.kind) {
                    let key = EdgeKey {
                        client: self.user,
                        server: r.service,
                        kind: EdgeKind::of(r.kind),
                        virtual_node: Some(VirtualNode::Client),
                    };
                    self.edges
                        .entry(key)
                        .or_default()
                        .server_only(r.side, &trace);
                }
            }
            for r in rows.iter().filter(|r| is_caller(r.kind) && !r.matched) {
                let cols = &self.held[(r.slot - self.held_first) as usize];
                let peer = self.names.intern(cols.peer(r.row as usize));
                let key = EdgeKey {
                    client: r.service,
                    server: peer,
                    kind: EdgeKind::of(r.kind),
                    virtual_node: Some(VirtualNode::Server),
                };
                self.edges
                    .entry(key)
                    .or_default()
                    .client_only(r.side, &trace);
            }
            rows.clear();
            // Clearing a hash map costs its capacity: after one huge trace, start small
            // again so the many small runs that follow stay cheap.
            if self.index.capacity() > INDEX_KEEP_CAPACITY {
                self.index = IdMap::default();
            }
            if self.rows.capacity() > INDEX_KEEP_CAPACITY {
                self.rows = Vec::new();
            }
        }
        let keep = usize::from(keep_current);
        while self.held.len() > keep {
            self.held.pop_front();
            self.held_first += 1;
        }
    }

    /// Sorts the held-back unsorted batches together by trace and processes them.
    fn flush_unsorted(&mut self) -> Result<()> {
        if self.unsorted.is_empty() {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.unsorted);
        self.unsorted_rows = 0;
        let all = arrow::compute::concat_batches(&batches[0].schema(), &batches)
            .map_err(|e| Error::Execution(e.to_string()))?;
        let trace: FixedSizeBinaryArray = typed(&all, TRACE_ID)?;
        let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
        // Order within a trace does not matter: a run's map is complete before it is used.
        order.sort_unstable_by(|a, b| trace.value(*a as usize).cmp(trace.value(*b as usize)));
        let sorted = arrow::compute::take_record_batch(&all, &UInt32Array::from(order))
            .map_err(|e| Error::Execution(e.to_string()))?;
        self.runs(&sorted)
    }
}

impl Worker for RunWorker {
    type Output = Partial;

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let trace: FixedSizeBinaryArray = typed(batch, TRACE_ID)?;
        if sorted_by_trace(&trace) {
            return self.runs(batch);
        }
        self.unsorted_rows += batch.num_rows();
        self.unsorted.push(batch.clone());
        if self.unsorted_rows >= UNSORTED_MAX_ROWS {
            self.flush_unsorted()?;
        }
        Ok(())
    }

    fn finish(mut self) -> Result<Partial> {
        self.flush_unsorted()?;
        self.finish_run(false);
        let names = &self.names;
        let name = |id: u32| std::sync::Arc::clone(names.name(id));
        let mut out = Partial::default();
        for ((parent, child), weight) in self.links {
            out.links.insert((name(parent), name(child)), weight);
        }
        for (key, agg) in self.edges {
            let key = EdgeKey {
                client: name(key.client),
                server: name(key.server),
                kind: key.kind,
                virtual_node: key.virtual_node,
            };
            out.edges.insert(key, agg);
        }
        for (id, weight) in self.span_weight.iter().enumerate() {
            if self.seen[id] {
                out.services.insert(name(id as u32), *weight);
            }
        }
        out.pending = self
            .pending
            .into_iter()
            .map(|p| Pending {
                trace: p.trace,
                span: p.span,
                parent: p.parent,
                service: name(p.service),
                kind: p.kind,
                side: p.side,
            })
            .collect();
        Ok(out)
    }
}
