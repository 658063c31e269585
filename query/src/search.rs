//! Exact trace search: every trace that has a span matching the span conditions and, as a
//! whole, matches the trace conditions, newest trace start first, a page at a time.
//!
//! ```text
//!  SearchRequest
//!    │ span conditions ─▶ one filter on `spans`: time, service, operation, kind, status,
//!    │                    duration, scope (pushed into the Parquet decoder, pruned by
//!    │                    statistics) AND attribute conditions (attribute::AttributeCondition)
//!    ▼
//!  phase 1  candidate traces in order of u = start of their newest matching span:
//!           first the newest ~1000 matching spans (TopK sort: one pass, no grouping);
//!           if that is not enough (see below), every matching trace (GROUP BY trace_id)
//!    ▼
//!  phase 2  summarise candidates in u order, a chunk at a time, chunks growing fourfold:
//!           spans of those traces (few ids: trace_id IN (…), pruned by bloom filters and
//!           statistics; many: a set lookup inside the Parquet decoder) ─▶ TraceSummary
//!           ─▶ trace conditions ─▶ cursor ─▶ keep the best limit+1 by (trace start, id)
//!    ▼
//!  stop when the worst kept trace starts after the next candidate's u: a trace starts no
//!  later than any of its spans, so no remaining candidate can rank higher.
//! ```
//!
//! The result is exact (not sampled, no trace missed or repeated across pages) because the
//! order is a total order on (trace start, trace id) and the cursor is the last key served.
//! A page usually costs one TopK scan plus one summary query. Trace conditions that reject
//! most candidates, and deep pages (the traces of earlier pages are summarised again, as
//! their matching spans are newer), cost a grouping scan and summaries of many traces.
//!
//! `GET /api/v1/search` (see `search/http.rs`) exposes this; the Jaeger API ([`crate::jaeger`]) builds
//! on [`search`] and [`trace_spans`].

pub mod attribute;
pub(crate) mod http;
pub use http::{SearchResponse, SearchTrace, ServiceSpans};
pub mod params;
mod summary;
mod trace_set;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::compute::SortColumn;
use arrow::datatypes::{DataType, Int64Type};
use axum::Router;
use datafusion::logical_expr::utils::conjunction;
use datafusion::prelude::{DataFrame, Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use weft_schemas::Table;
use weft_schemas::columns::{
    DURATION_NS, KIND, SCOPE_NAME, SCOPE_VERSION, SERVICE_NAME, SPAN_NAME, START_TIME, STATUS_CODE,
    TRACE_ID,
};

use futures::StreamExt;

use crate::{Error, QueryService, Result};

pub use attribute::{AttributeCondition, AttributeOp, AttributeScope, AttributeValue, Number};
pub use params::{Cursor, SpanKind, SpanStatus};
pub use summary::{RootSpan, TraceSummary};

/// Results per page when the caller does not say.
pub const DEFAULT_LIMIT: usize = 20;
/// Most results one page may ask for.
pub const MAX_LIMIT: usize = 10_000;

/// Phase 1 first reads at least this many matching spans (the newest).
const FIRST_SPAN_BUDGET: usize = 1024;
/// Most traces summarised by one query. Chunks grow fourfold from the page size: the first
/// is usually all a page needs, and a search whose trace conditions reject most candidates
/// reaches whole-table chunks after a few queries instead of scanning once per few thousand.
const MAX_CHUNK: usize = 65_536;
/// Traces fetched whole per query by [`trace_spans`].
const FULL_TRACE_CHUNK: usize = 256;

/// `GET /api/v1/search`.
pub fn router(service: Arc<QueryService>) -> Router {
    http::router(service)
}

/// What to search for. The default matches every trace.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchRequest {
    /// All must hold on one span of the trace.
    pub spans: SpanConditions,
    /// Must hold for the trace as a whole.
    pub traces: TraceConditions,
    /// Results per page, 1..=[`MAX_LIMIT`].
    pub limit: usize,
    /// Continue after this position (from [`SearchPage::next_cursor`]).
    pub cursor: Option<Cursor>,
}

impl Default for SearchRequest {
    fn default() -> Self {
        Self {
            spans: SpanConditions::default(),
            traces: TraceConditions::default(),
            limit: DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// Conditions on one span. Ranges are inclusive at both ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SpanConditions {
    /// Span start, nanoseconds since the Unix epoch.
    pub start_min_ns: Option<i64>,
    pub start_max_ns: Option<i64>,
    /// `service_name`.
    pub service: Option<String>,
    /// Span name.
    pub operation: Option<String>,
    pub kind: Option<SpanKind>,
    pub status: Option<SpanStatus>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    /// Instrumentation scope name and version; `""` matches an absent one.
    pub scope_name: Option<String>,
    pub scope_version: Option<String>,
    pub attributes: Vec<AttributeCondition>,
}

/// Conditions on a whole trace (see [`TraceSummary`]). Ranges are inclusive.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TraceConditions {
    pub root_service: Option<String>,
    pub root_operation: Option<String>,
    pub min_duration_ns: Option<i64>,
    pub max_duration_ns: Option<i64>,
    pub min_spans: Option<u64>,
    pub max_spans: Option<u64>,
}

/// One page of results.
#[derive(Debug, Clone, PartialEq)]
pub struct SearchPage {
    /// Newest trace start first; ties by trace id, highest first.
    pub traces: Vec<TraceSummary>,
    /// Set when more results follow.
    pub next_cursor: Option<Cursor>,
}

impl SearchRequest {
    fn validate(&self) -> Result<()> {
        if self.limit == 0 || self.limit > MAX_LIMIT {
            return Err(Error::BadRequest(format!(
                "limit must be between 1 and {MAX_LIMIT}, not {}",
                self.limit
            )));
        }
        let s = &self.spans;
        let t = &self.traces;
        ordered("start", s.start_min_ns, "end", s.start_max_ns)?;
        ordered(
            "min_duration",
            s.min_duration_ns,
            "max_duration",
            s.max_duration_ns,
        )?;
        ordered(
            "min_trace_duration",
            t.min_duration_ns,
            "max_trace_duration",
            t.max_duration_ns,
        )?;
        ordered("min_spans", t.min_spans, "max_spans", t.max_spans)
    }
}

fn ordered<T: PartialOrd + std::fmt::Display>(
    low_name: &str,
    low: Option<T>,
    high_name: &str,
    high: Option<T>,
) -> Result<()> {
    match (low, high) {
        (Some(low), Some(high)) if low > high => Err(Error::BadRequest(format!(
            "{low_name} ({low}) is after {high_name} ({high})"
        ))),
        _ => Ok(()),
    }
}

impl SpanConditions {
    /// The filter on `spans`, `None` when every span matches.
    fn filter(&self) -> Option<Expr> {
        let mut parts = Vec::new();
        if let Some(ns) = self.start_min_ns {
            parts.push(col(START_TIME).gt_eq(timestamp(ns)));
        }
        if let Some(ns) = self.start_max_ns {
            parts.push(col(START_TIME).lt_eq(timestamp(ns)));
        }
        if let Some(service) = &self.service {
            parts.push(col(SERVICE_NAME).eq(lit(service.as_str())));
        }
        if let Some(operation) = &self.operation {
            parts.push(col(SPAN_NAME).eq(lit(operation.as_str())));
        }
        if let Some(kind) = self.kind {
            parts.push(col(KIND).eq(lit(ScalarValue::Int8(Some(kind.code())))));
        }
        if let Some(status) = self.status {
            parts.push(col(STATUS_CODE).eq(lit(ScalarValue::Int8(Some(status.code())))));
        }
        if let Some(ns) = self.min_duration_ns {
            parts.push(col(DURATION_NS).gt_eq(lit(ns)));
        }
        if let Some(ns) = self.max_duration_ns {
            parts.push(col(DURATION_NS).lt_eq(lit(ns)));
        }
        if let Some(name) = &self.scope_name {
            parts.push(col(SCOPE_NAME).eq(lit(name.as_str())));
        }
        if let Some(version) = &self.scope_version {
            // An empty version is stored as null.
            parts.push(if version.is_empty() {
                col(SCOPE_VERSION).is_null()
            } else {
                col(SCOPE_VERSION).eq(lit(version.as_str()))
            });
        }
        // Attribute conditions last: the cheap filters above decide most rows first.
        parts.extend(self.attributes.iter().map(AttributeCondition::expr));
        conjunction(parts)
    }
}

impl TraceConditions {
    fn accepts(&self, trace: &TraceSummary) -> bool {
        let root = trace.root.as_ref();
        self.root_service
            .as_ref()
            .is_none_or(|s| root.is_some_and(|r| &r.service == s))
            && self
                .root_operation
                .as_ref()
                .is_none_or(|o| root.is_some_and(|r| &r.operation == o))
            && self.min_duration_ns.is_none_or(|d| trace.duration_ns >= d)
            && self.max_duration_ns.is_none_or(|d| trace.duration_ns <= d)
            && self.min_spans.is_none_or(|n| trace.span_count >= n)
            && self.max_spans.is_none_or(|n| trace.span_count <= n)
    }
}

fn timestamp(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// Runs `work` within the query time limit.
pub(crate) async fn within_time_limit<T>(
    service: &QueryService,
    work: impl Future<Output = Result<T>>,
) -> Result<T> {
    let secs = service.config().timeout_secs;
    tokio::time::timeout(Duration::from_secs(secs), work)
        .await
        .map_err(|_| Error::Timeout(secs))?
}

/// Runs a search (see the module docs).
pub async fn search(service: &QueryService, request: &SearchRequest) -> Result<SearchPage> {
    request.validate()?;
    // Each condition is a term of one filter expression; bound them like SQL's depth.
    let max = service.config().max_search_conditions;
    let conditions = request.spans.attributes.len();
    if conditions > max {
        return Err(Error::BadRequest(format!(
            "{conditions} attribute or tag conditions, over the limit of {max} per request \
             (query.max_search_conditions)"
        )));
    }
    within_time_limit(service, run_search(service, request)).await
}

async fn run_search(service: &QueryService, request: &SearchRequest) -> Result<SearchPage> {
    let ctx = service.session()?;
    let filter = request.spans.filter();
    let mut ranker = Ranker {
        ctx: &ctx,
        traces: &request.traces,
        ranking: Ranking::new(request.limit + 1, request.cursor),
        summarised: HashSet::new(),
        chunk_size: (request.limit + 1).clamp(32, MAX_CHUNK),
    };
    // Usually the newest few thousand matching spans hold the whole page.
    let budget = FIRST_SPAN_BUDGET.max(ranker.ranking.keep.saturating_mul(8));
    let newest = newest_matches(&ctx, filter.clone(), budget).await?;
    let settled = ranker.rank(&newest.candidates).await?;
    // Traces phase 1 did not reach have no matching span newer than its horizon.
    if !(settled || newest.exhausted || ranker.ranking.settled_above(newest.horizon)) {
        let all = all_matches(&ctx, filter).await?;
        ranker.rank(&all).await?;
    }
    Ok(ranker.ranking.into_page(request.limit))
}

/// Phase 2 over candidates in order of their newest matching span.
struct Ranker<'a> {
    ctx: &'a SessionContext,
    traces: &'a TraceConditions,
    ranking: Ranking,
    summarised: HashSet<[u8; 16]>,
    /// Grows fourfold per query, also from one candidate list to the next: needing more
    /// means candidates are being rejected.
    chunk_size: usize,
}

impl Ranker<'_> {
    /// Summarises `candidates` (newest match first) until no later one can rank; returns
    /// whether that point was reached.
    async fn rank(&mut self, candidates: &[([u8; 16], i64)]) -> Result<bool> {
        let mut next = 0;
        while let Some(&(_, newest_match)) = candidates.get(next) {
            if self.ranking.settled_above(newest_match) {
                return Ok(true);
            }
            let end = (next + self.chunk_size).min(candidates.len());
            let chunk: Vec<[u8; 16]> = candidates[next..end]
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| !self.summarised.contains(id))
                .collect();
            next = end;
            if chunk.is_empty() {
                continue;
            }
            self.chunk_size = (self.chunk_size * 4).min(MAX_CHUNK);
            self.summarised.extend(chunk.iter().copied());
            let started = Instant::now();
            for summary in summarise(self.ctx, &chunk).await?.into_values() {
                if self.traces.accepts(&summary) {
                    self.ranking.offer(summary);
                }
            }
            tracing::debug!(
                traces = chunk.len(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "search: candidates summarised"
            );
        }
        Ok(false)
    }
}

/// Matching spans read by phase 1, reduced to distinct traces.
struct Matches {
    /// Trace id and start of its newest matching span, newest first.
    candidates: Vec<([u8; 16], i64)>,
    /// Every matching span was read.
    exhausted: bool,
    /// Start of the oldest span read: unread matching spans start at or before it.
    horizon: i64,
}

/// The newest `budget` matching spans: a TopK sort, cheap for a page's worth.
async fn newest_matches(
    ctx: &SessionContext,
    filter: Option<Expr>,
    budget: usize,
) -> Result<Matches> {
    let started = Instant::now();
    let batches = matching_spans(ctx, filter)
        .await?
        .select(vec![col(TRACE_ID), col(START_TIME)])?
        .sort(vec![col(START_TIME).sort(false, true)])?
        .limit(0, Some(budget))?
        .collect()
        .await?;
    let mut seen = HashSet::new();
    let mut candidates = Vec::new();
    let mut rows = 0;
    let mut horizon = i64::MIN;
    for_each_row(&batches, |id, start| {
        horizon = start;
        rows += 1;
        if seen.insert(id) {
            candidates.push((id, start));
        }
    })?;
    tracing::debug!(
        budget,
        candidates = candidates.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "search: newest matching spans read"
    );
    Ok(Matches {
        candidates,
        exhausted: rows < budget,
        horizon,
    })
}

/// Every matching trace with the start of its newest matching span, newest first: one
/// aggregation, for searches whose first candidates were not enough (a TopK over millions
/// of spans costs more than grouping them).
async fn all_matches(ctx: &SessionContext, filter: Option<Expr>) -> Result<Vec<([u8; 16], i64)>> {
    const NEWEST: &str = "newest_match";
    let started = Instant::now();
    let batches = matching_spans(ctx, filter)
        .await?
        .aggregate(
            vec![col(TRACE_ID)],
            vec![datafusion::functions_aggregate::expr_fn::max(col(START_TIME)).alias(NEWEST)],
        )?
        .sort(vec![
            col(NEWEST).sort(false, true),
            col(TRACE_ID).sort(false, true),
        ])?
        .collect()
        .await?;
    let mut candidates = Vec::new();
    for_each_row(&batches, |id, start| candidates.push((id, start)))?;
    tracing::debug!(
        candidates = candidates.len(),
        elapsed_ms = started.elapsed().as_millis() as u64,
        "search: all matching traces read"
    );
    Ok(candidates)
}

async fn matching_spans(ctx: &SessionContext, filter: Option<Expr>) -> Result<DataFrame> {
    let spans = ctx.table(Table::Spans.name()).await?;
    Ok(match filter {
        Some(filter) => spans.filter(filter)?,
        None => spans,
    })
}

/// Calls `f(trace id, start)` for each row of (trace_id, timestamp) batches, in order.
fn for_each_row(batches: &[RecordBatch], mut f: impl FnMut([u8; 16], i64)) -> Result<()> {
    for batch in batches {
        let ids = batch.column(0).as_fixed_size_binary();
        let starts = arrow::compute::cast(batch.column(1), &DataType::Int64)
            .map_err(|e| Error::Execution(format!("span start times: {e}")))?;
        let starts = starts.as_primitive::<Int64Type>();
        for row in 0..batch.num_rows() {
            let id = ids
                .value(row)
                .try_into()
                .map_err(|_| Error::Execution("trace_id is not 16 bytes".into()))?;
            f(id, starts.value(row));
        }
    }
    Ok(())
}

async fn summarise(
    ctx: &SessionContext,
    ids: &[[u8; 16]],
) -> Result<HashMap<[u8; 16], TraceSummary>> {
    let columns: Vec<Expr> = summary::SUMMARY_COLUMNS.iter().map(|c| col(*c)).collect();
    // Streamed: a large chunk's rows are folded into summaries batch by batch.
    let mut rows = ctx
        .table(Table::Spans.name())
        .await?
        .filter(trace_set::spans_of(ids))?
        .select(columns)?
        .execute_stream()
        .await?;
    let mut builder = summary::SummaryBuilder::default();
    while let Some(batch) = rows.next().await {
        builder.add(&batch?)?;
    }
    Ok(builder.finish())
}

/// The best `keep` traces so far, best first, all after the cursor.
struct Ranking {
    keep: usize,
    cursor: Option<(i64, [u8; 16])>,
    best: Vec<TraceSummary>,
}

fn rank_key(trace: &TraceSummary) -> (i64, [u8; 16]) {
    (trace.start_ns, trace.trace_id)
}

impl Ranking {
    fn new(keep: usize, cursor: Option<Cursor>) -> Self {
        Self {
            keep,
            cursor: cursor.map(|c| (c.start_ns, c.trace_id)),
            best: Vec::with_capacity(keep.min(1024)),
        }
    }

    fn offer(&mut self, trace: TraceSummary) {
        let key = rank_key(&trace);
        if self.cursor.is_some_and(|cursor| key >= cursor) {
            return;
        }
        let at = self.best.partition_point(|b| rank_key(b) > key);
        if at < self.keep {
            self.best.insert(at, trace);
            self.best.truncate(self.keep);
        }
    }

    /// Whether no trace starting at or before `bound_ns` can still get in.
    fn settled_above(&self, bound_ns: i64) -> bool {
        self.best.len() == self.keep && self.best.last().is_some_and(|t| t.start_ns > bound_ns)
    }

    fn into_page(mut self, limit: usize) -> SearchPage {
        let more = self.best.len() > limit;
        self.best.truncate(limit);
        let next_cursor = if more {
            self.best.last().map(|t| Cursor {
                start_ns: t.start_ns,
                trace_id: t.trace_id,
            })
        } else {
            None
        };
        SearchPage {
            traces: self.best,
            next_cursor,
        }
    }
}

/// Every span of each trace in `ids`: one batch per trace, sorted by start time, in the
/// order of `ids`. Traces without spans are left out. One query per `FULL_TRACE_CHUNK`
/// traces rather than one per trace.
pub async fn trace_spans(
    service: &QueryService,
    ids: &[[u8; 16]],
) -> Result<Vec<([u8; 16], RecordBatch)>> {
    within_time_limit(service, async {
        let ctx = service.session()?;
        let mut by_id: HashMap<[u8; 16], RecordBatch> = HashMap::with_capacity(ids.len());
        for chunk in ids.chunks(FULL_TRACE_CHUNK) {
            let batches = ctx
                .table(Table::Spans.name())
                .await?
                .filter(trace_set::spans_of(chunk))?
                .collect()
                .await?;
            for (id, trace) in split_by_trace(&batches)? {
                by_id.insert(id, trace);
            }
        }
        Ok(ids
            .iter()
            .filter_map(|id| by_id.remove(id).map(|trace| (*id, trace)))
            .collect())
    })
    .await
}

/// Groups rows by trace id, each group sorted by start time.
fn split_by_trace(batches: &[RecordBatch]) -> Result<Vec<([u8; 16], RecordBatch)>> {
    let Some(first) = batches.first() else {
        return Ok(Vec::new());
    };
    let arrow_err = |e: arrow::error::ArrowError| Error::Execution(e.to_string());
    let all = arrow::compute::concat_batches(&first.schema(), batches).map_err(arrow_err)?;
    let column = |name: &str| {
        all.column_by_name(name)
            .cloned()
            .ok_or_else(|| Error::Execution(format!("spans without {name}")))
    };
    let order = arrow::compute::lexsort_to_indices(
        &[
            SortColumn {
                values: column(TRACE_ID)?,
                options: None,
            },
            SortColumn {
                values: column(START_TIME)?,
                options: None,
            },
        ],
        None,
    )
    .map_err(arrow_err)?;
    let sorted = arrow::compute::take_record_batch(&all, &order).map_err(arrow_err)?;
    let trace_ids = sorted
        .column_by_name(TRACE_ID)
        .ok_or_else(|| Error::Execution("spans without trace_id".into()))?
        .as_fixed_size_binary();
    let mut traces = Vec::new();
    let mut run_start = 0;
    for row in 1..=sorted.num_rows() {
        if row == sorted.num_rows() || trace_ids.value(row) != trace_ids.value(run_start) {
            let id = trace_ids
                .value(run_start)
                .try_into()
                .map_err(|_| Error::Execution("trace_id is not 16 bytes".into()))?;
            traces.push((id, sorted.slice(run_start, row - run_start)));
            run_start = row;
        }
    }
    Ok(traces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(start_ns: i64, id: u8) -> TraceSummary {
        TraceSummary {
            trace_id: [id; 16],
            root: None,
            start_ns,
            duration_ns: 0,
            span_count: 1,
            error_count: 0,
            services: Vec::new(),
        }
    }

    #[test]
    fn ranking_keeps_the_newest_after_the_cursor() {
        let mut ranking = Ranking::new(
            3,
            Some(Cursor {
                start_ns: 50,
                trace_id: [5; 16],
            }),
        );
        for (start, id) in [
            (10, 1),
            (60, 9),
            (50, 6),
            (50, 4),
            (40, 2),
            (30, 3),
            (50, 5),
        ] {
            ranking.offer(summary(start, id));
        }
        let keys: Vec<_> = ranking.best.iter().map(rank_key).collect();
        // (60, 9), (50, 6) and (50, 5) are not after the cursor (50, 5).
        assert_eq!(keys, [(50, [4; 16]), (40, [2; 16]), (30, [3; 16])]);
        assert!(ranking.settled_above(29));
        assert!(!ranking.settled_above(30));
        let page = ranking.into_page(2);
        assert_eq!(page.traces.len(), 2);
        assert_eq!(
            page.next_cursor,
            Some(Cursor {
                start_ns: 40,
                trace_id: [2; 16]
            })
        );
    }

    #[test]
    fn a_short_last_page_has_no_cursor() {
        let mut ranking = Ranking::new(3, None);
        ranking.offer(summary(1, 1));
        ranking.offer(summary(2, 2));
        assert!(!ranking.settled_above(i64::MIN));
        let page = ranking.into_page(2);
        assert_eq!(page.traces.len(), 2);
        assert_eq!(page.next_cursor, None);
    }

    #[test]
    fn trace_conditions_apply_to_the_summary() {
        let mut trace = summary(0, 1);
        trace.root = Some(RootSpan {
            service: "web".into(),
            operation: "GET /".into(),
        });
        trace.duration_ns = 500;
        trace.span_count = 4;
        let accepts = |c: TraceConditions| c.accepts(&trace);
        assert!(accepts(TraceConditions::default()));
        assert!(accepts(TraceConditions {
            root_service: Some("web".into()),
            root_operation: Some("GET /".into()),
            min_duration_ns: Some(500),
            max_duration_ns: Some(500),
            min_spans: Some(4),
            max_spans: Some(4),
        }));
        assert!(!accepts(TraceConditions {
            root_service: Some("db".into()),
            ..Default::default()
        }));
        assert!(!accepts(TraceConditions {
            min_spans: Some(5),
            ..Default::default()
        }));
        assert!(!accepts(TraceConditions {
            max_duration_ns: Some(499),
            ..Default::default()
        }));
        let rootless = summary(0, 2);
        let needs_root = TraceConditions {
            root_operation: Some("GET /".into()),
            ..Default::default()
        };
        assert!(!needs_root.accepts(&rootless));
    }

    #[test]
    fn requests_are_validated() {
        let ok = SearchRequest::default();
        assert!(ok.validate().is_ok());
        let mut bad = ok.clone();
        bad.limit = 0;
        assert!(bad.validate().is_err());
        bad.limit = MAX_LIMIT + 1;
        assert!(bad.validate().is_err());
        let mut bad = ok.clone();
        bad.spans.start_min_ns = Some(2);
        bad.spans.start_max_ns = Some(1);
        assert!(matches!(bad.validate(), Err(Error::BadRequest(m)) if m.contains("start")));
        let mut bad = ok;
        bad.traces.min_spans = Some(3);
        bad.traces.max_spans = Some(2);
        assert!(bad.validate().is_err());
    }
}
