//! A DataFusion table over one Weft table of a cluster: every node's files and live rows,
//! each row once.
//!
//! ```text
//!  scan(projection, filters)
//!    filters ─> trace_id = X / IN (…), bounds on the time column ─> SnapshotRequest
//!    ClusterSource::gather ─> per node: files (+ live rows when it answered)
//!    trace ids known? keep files whose trace-id filter may hold one (cached per file)
//!    ─> merge::plan ─> DedupMergeExec   (FilterExec above re-applies every filter)
//! ```

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::Result as DfResult;
use datafusion::datasource::TableType;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use weft_cluster::snapshot::SnapshotRequest;
use weft_schemas::Table;

use super::ClusterSource;
use super::merge::{self, MergeInput, ScanFile};
use crate::provider::{inexact_pushdown, wanted_trace_ids};
use crate::warnings::RequestState;

/// Most trace ids sent to collectors in a snapshot request (they go in the URL); with more,
/// the collectors send all their live rows of the time range and the filter applies here.
const URL_MAX_TRACE_IDS: usize = 256;

/// See the module docs.
#[derive(Debug)]
pub struct ClusterTable {
    table: Table,
    source: Arc<ClusterSource>,
    /// The request this table's session serves: warnings go there.
    request: RequestState,
}

impl ClusterTable {
    pub fn new(table: Table, source: Arc<ClusterSource>, request: RequestState) -> Self {
        Self {
            table,
            source,
            request,
        }
    }
}

#[async_trait]
impl TableProvider for ClusterTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        inexact_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        // Not passed down: a limit below the dedup could stop before enough distinct rows;
        // the LimitExec above stops the stream instead.
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let wanted: Option<Vec<[u8; 16]>> = if self.table == Table::Spans {
            wanted_trace_ids(filters).map(|ids| {
                ids.iter()
                    .filter_map(|id| <[u8; 16]>::try_from(id.as_slice()).ok())
                    .collect()
            })
        } else {
            None
        };
        let (min_time_ns, max_time_ns) = time_bounds(filters, self.table.time_column());
        let mut request = SnapshotRequest::all(self.table);
        request.min_time_ns = min_time_ns;
        request.max_time_ns = max_time_ns;
        if let Some(ids) = &wanted
            && ids.len() <= URL_MAX_TRACE_IDS
        {
            request.trace_ids = ids.clone();
        }
        let nodes = self
            .source
            .gather(&request, &self.request)
            .await
            .map_err(|e| DataFusionError::External(Box::new(e)))?;

        let mut files = Vec::new();
        let mut live = Vec::new();
        for node in nodes {
            files.extend(node.files.into_iter().map(|f| ScanFile {
                key: format!("{}/{}", node.prefix, f.path),
                bytes: f.bytes,
                min_time_ns: f.min_time_ns,
            }));
            live.extend(node.live);
        }
        if let Some(ids) = &wanted {
            let paths: Vec<_> = files.iter().map(|f| f.key.clone()).collect();
            let filters = self
                .source
                .trace_filters(&paths)
                .await
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            let mut keep = filters.iter().map(|filter| match filter {
                Some(filter) => ids.iter().any(|id| filter.may_contain(id)),
                None => true,
            });
            files.retain(|_| keep.next().unwrap_or(true));
        }
        merge::plan(
            state,
            MergeInput {
                table: self.table,
                files,
                live,
                projection,
                filters,
                // A short list of traces sits in one range; a long one (the graph's second
                // pass) may touch every file, so big hours are still cut.
                few_traces: wanted
                    .as_ref()
                    .is_some_and(|ids| ids.len() <= URL_MAX_TRACE_IDS),
                tuning: self.source.tuning(),
            },
        )
    }
}

/// Inclusive bounds on `column` (a nanosecond timestamp) implied by the ANDed `filters`:
/// `column >= / > / <= / < literal` either way round and `column BETWEEN a AND b`. Anything
/// else leaves a bound open (the filters are applied again above the scan).
pub(crate) fn time_bounds(filters: &[Expr], column: &str) -> (Option<i64>, Option<i64>) {
    let mut min: Option<i64> = None;
    let mut max: Option<i64> = None;
    let mut lower = |v: i64| min = Some(min.map_or(v, |m| m.max(v)));
    let mut upper = |v: i64| max = Some(max.map_or(v, |m| m.min(v)));
    let is_column = |e: &Expr| matches!(e, Expr::Column(c) if c.name == column);
    for filter in filters {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (op, value) = if is_column(left) {
                    (*op, timestamp_ns(right))
                } else if is_column(right) {
                    match op.swap() {
                        Some(swapped) => (swapped, timestamp_ns(left)),
                        None => continue,
                    }
                } else {
                    continue;
                };
                let Some(v) = value else { continue };
                match op {
                    Operator::GtEq => lower(v),
                    Operator::Gt => lower(v.saturating_add(1)),
                    Operator::LtEq => upper(v),
                    Operator::Lt => upper(v.saturating_sub(1)),
                    Operator::Eq => {
                        lower(v);
                        upper(v);
                    }
                    _ => {}
                }
            }
            Expr::Between(Between {
                expr,
                negated: false,
                low,
                high,
            }) if is_column(expr) => {
                if let Some(v) = timestamp_ns(low) {
                    lower(v);
                }
                if let Some(v) = timestamp_ns(high) {
                    upper(v);
                }
            }
            _ => {}
        }
    }
    (min, max)
}

/// A timestamp literal in nanoseconds. Coarser units are exact multiples, so `>= x` and
/// `<= x` keep their meaning; values out of range give no bound.
fn timestamp_ns(expr: &Expr) -> Option<i64> {
    let Expr::Literal(value, _) = expr else {
        return None;
    };
    match value {
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn ts(ns: i64) -> Expr {
        lit(ScalarValue::TimestampNanosecond(
            Some(ns),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn time_bounds_come_from_comparisons_either_way_round() {
        let c = || col("start_time");
        assert_eq!(time_bounds(&[], "start_time"), (None, None));
        assert_eq!(
            time_bounds(&[c().gt_eq(ts(10)), c().lt(ts(20))], "start_time"),
            (Some(10), Some(19))
        );
        assert_eq!(
            time_bounds(&[ts(10).lt(c()), ts(20).gt_eq(c())], "start_time"),
            (Some(11), Some(20))
        );
        assert_eq!(
            time_bounds(&[c().between(ts(3), ts(4)), c().gt(ts(0))], "start_time"),
            (Some(3), Some(4))
        );
        let millis = lit(ScalarValue::TimestampMillisecond(Some(2), None));
        assert_eq!(
            time_bounds(&[c().gt_eq(millis)], "start_time"),
            (Some(2_000_000), None)
        );
        // Other columns, other shapes: no bound.
        assert_eq!(
            time_bounds(&[col("time").gt(ts(1)), c().not_eq(ts(1))], "start_time"),
            (None, None)
        );
    }
}
