//! Pass 2 of the graph: the spans whose parent was not in their trace run.
//!
//! ```text
//!  Pending (few: traces split across files, partitions or live rows)
//!    ├─ wanted parents  {(trace, parent_span_id)}
//!    ├─ pending spans   {(trace, span_id)}
//!    └─ their traces ──> scan again, `trace_id IN (…)` pushed into Parquet (bloom filters,
//!                         statistics) when the list is short enough
//!  per row: a wanted parent?                      ─> its service, kind, duration, peer
//!           a callee child of a wanted parent that
//!           was resolved in pass 1 (not pending)? ─> that parent was matched in pass 1
//!  then per pending span with its parent found:
//!     Jaeger link; callee child of a caller parent ─> edge, and if pass 1 had counted the
//!     parent as a call to a virtual peer (no callee child in its own run), take it back.
//! ```
//!
//! A pending span whose parent is not stored in the range (a parent outside the window, or
//! one never exported) adds nothing, as in Jaeger and the servicegraph connector.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::catalog::Session;
use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use weft_schemas::columns::{SERVICE_NAME, TRACE_ID};

use super::model::{EdgeKey, EdgeKind, Partial, Side, VirtualNode, is_callee, is_caller};
use super::runs::{COLUMNS, Cols};
use crate::Result;
use crate::span_scan::{IdSet, Interner, NameIds, TimeRange, Worker, column, scan};

/// Longest trace-id list pushed into the Parquet reader; beyond it the rows are matched
/// here only (a huge IN list costs more to plan than it saves).
const IN_LIST_MAX: usize = 20_000;

type SpanKey = ([u8; 16], u64);

/// What the second scan looks for.
#[derive(Debug, Default)]
struct Lookup {
    traces: IdSet<[u8; 16]>,
    parents: IdSet<SpanKey>,
    pending: IdSet<SpanKey>,
}

/// A wanted parent span.
#[derive(Debug, Clone)]
struct Parent {
    service: Arc<str>,
    peer: Arc<str>,
    kind: i8,
    side: Side,
}

struct StitchWorker {
    lookup: Arc<Lookup>,
    names: Interner,
    service_ids: NameIds,
    ids: Vec<u32>,
    found: Vec<(SpanKey, u32, u32, i8, Side)>,
    served: Vec<SpanKey>,
}

struct StitchOutput {
    found: Vec<(SpanKey, Parent)>,
    served: Vec<SpanKey>,
}

impl Worker for StitchWorker {
    type Output = StitchOutput;

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let cols = Cols::new(batch)?;
        self.service_ids
            .ids(column(batch, SERVICE_NAME)?, &mut self.names, &mut self.ids)?;
        for i in 0..batch.num_rows() {
            let trace = cols.trace(i);
            if !self.lookup.traces.contains(&trace) {
                continue;
            }
            let span = cols.span(i);
            let kind = cols.kind(i);
            if self.lookup.parents.contains(&(trace, span)) {
                let peer = self.names.intern(cols.peer(i));
                self.found
                    .push(((trace, span), self.ids[i], peer, kind, cols.side(i)));
            }
            let parent = cols.parent(i);
            if parent != 0
                && is_callee(kind)
                && self.lookup.parents.contains(&(trace, parent))
                && !self.lookup.pending.contains(&(trace, span))
            {
                self.served.push((trace, parent));
            }
        }
        Ok(())
    }

    fn finish(self) -> Result<StitchOutput> {
        let names = &self.names;
        let found = self
            .found
            .into_iter()
            .map(|(key, service, peer, kind, side)| {
                let parent = Parent {
                    service: std::sync::Arc::clone(names.name(service)),
                    peer: std::sync::Arc::clone(names.name(peer)),
                    kind,
                    side,
                };
                (key, parent)
            })
            .collect();
        Ok(StitchOutput {
            found,
            served: self.served,
        })
    }
}

/// Resolves `partial.pending` (see the module docs) and folds the result into `partial`.
pub(super) async fn stitch(
    session: &dyn Session,
    range: TimeRange,
    partial: &mut Partial,
) -> Result<()> {
    if partial.pending.is_empty() {
        return Ok(());
    }
    let pending = std::mem::take(&mut partial.pending);
    let mut lookup = Lookup::default();
    for p in &pending {
        lookup.traces.insert(p.trace);
        lookup.parents.insert((p.trace, p.parent));
        lookup.pending.insert((p.trace, p.span));
    }
    let mut filters: Vec<Expr> = Vec::new();
    if lookup.traces.len() <= IN_LIST_MAX {
        let mut traces: Vec<&[u8; 16]> = lookup.traces.iter().collect();
        traces.sort();
        let list = traces
            .into_iter()
            .map(|t| lit(ScalarValue::FixedSizeBinary(16, Some(t.to_vec()))))
            .collect();
        filters.push(col(TRACE_ID).in_list(list, false));
    }
    let lookup = Arc::new(lookup);
    let outputs = scan(session, &COLUMNS, range, filters, || StitchWorker {
        lookup: std::sync::Arc::clone(&lookup),
        names: Interner::default(),
        service_ids: NameIds::default(),
        ids: Vec::new(),
        found: Vec::new(),
        served: Vec::new(),
    })
    .await?;

    let mut parents: HashMap<SpanKey, Parent> = HashMap::new();
    let mut served: HashSet<SpanKey> = HashSet::new();
    for output in outputs {
        for (key, parent) in output.found {
            parents.entry(key).or_insert(parent);
        }
        served.extend(output.served);
    }

    let mut retracted: HashSet<SpanKey> = HashSet::new();
    for child in pending {
        let key = (child.trace, child.parent);
        let Some(parent) = parents.get(&key) else {
            continue;
        };
        *partial
            .links
            .entry((
                std::sync::Arc::clone(&parent.service),
                std::sync::Arc::clone(&child.service),
            ))
            .or_default() += child.side.weight;
        if !(is_callee(child.kind) && is_caller(parent.kind)) {
            continue;
        }
        let edge = EdgeKey {
            client: std::sync::Arc::clone(&parent.service),
            server: std::sync::Arc::clone(&child.service),
            kind: EdgeKind::of(parent.kind),
            virtual_node: None,
        };
        partial
            .edges
            .entry(edge)
            .or_default()
            .pair(parent.side, child.side, &child.trace);
        // Pass 1 saw this parent without a callee child in its run, so it counted the
        // call as going to a virtual peer. Take that back, once per parent.
        if !served.contains(&key) && retracted.insert(key) {
            let counted = EdgeKey {
                client: std::sync::Arc::clone(&parent.service),
                server: std::sync::Arc::clone(&parent.peer),
                kind: EdgeKind::of(parent.kind),
                virtual_node: Some(VirtualNode::Server),
            };
            if let Some(agg) = partial.edges.get_mut(&counted) {
                agg.retract_client_only(parent.side, &child.trace);
                if agg.calls <= 0.0 {
                    partial.edges.remove(&counted);
                }
            }
        }
    }
    Ok(())
}
