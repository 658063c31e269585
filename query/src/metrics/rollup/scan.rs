//! What the rollup job reads: which closed hours have raw data (and a fingerprint of it),
//! and one hour of `metrics` sorted by the table's sort key.
//!
//! ```text
//!  weft up   Collector::snapshot ─> files of the hour: one sorted stream each (declared)
//!                                 + live rows of the hour, sorted here
//!            ─> SortPreservingMergeExec (metric_name, service_name, series_id, time)
//!  cluster   the `metrics` table's own scan of the hour: per hour one sort-preserving
//!            merge of every node's files and live rows with copies dropped (one unit,
//!            sorted, see crate::cluster); its partitions are read one after another
//! ```
//!
//! Both are checked while folded (a series must not come back, its times must not go
//! down), so a change of those scans cannot silently produce wrong rollups.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{AsArray, RecordBatch, UInt32Array};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::union::UnionExec;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use weft_cluster::snapshot::SnapshotRequest;
use weft_schemas::{Table, columns};

use super::store::{LAYOUT, hours_of};
use super::{HOUR_NS, fold};
use crate::provider::{parquet_source, partitioned_file_at};
use crate::warnings::RequestState;
use crate::{DataSource, Error, QueryService, Result};

/// The raw inputs of one hour, as text lines hashed into its fingerprint.
#[derive(Debug, Default)]
struct Inputs {
    lines: Vec<String>,
}

/// FNV-1a 64 (fixed forever: fingerprints are compared across processes and versions).
fn fnv(text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in text.bytes() {
        h ^= u64::from(byte);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

impl Inputs {
    fn fingerprint(mut self) -> String {
        self.lines.sort();
        let text = format!("{LAYOUT}\n{}", self.lines.join("\n"));
        format!("{:016x}", fnv(&text))
    }
}

fn add_live(hours: &mut BTreeMap<i64, Inputs>, node: &str, live: &[RecordBatch], last: i64) {
    let mut counts: BTreeMap<i64, u64> = BTreeMap::new();
    for batch in live {
        let Some(times) = batch
            .column_by_name(columns::TIME)
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
        else {
            continue;
        };
        for t in times.values().iter() {
            let hour = t.div_euclid(HOUR_NS);
            if hour <= last {
                *counts.entry(hour).or_default() += 1;
            }
        }
    }
    for (hour, n) in counts {
        hours
            .entry(hour)
            .or_default()
            .lines
            .push(format!("live {node} {n}"));
    }
}

/// Closed hours (`<= last`, hours since 1970) that have raw metrics, with a fingerprint
/// of their inputs: the files (node, path, rows) and the number of live rows.
pub(crate) async fn closed_hours(
    service: &QueryService,
    last: i64,
) -> Result<BTreeMap<i64, String>> {
    let mut hours: BTreeMap<i64, Inputs> = BTreeMap::new();
    let mut add_file = |node: &str, path: &str, rows: u64, min: i64, max: i64| {
        for hour in hours_of(min, max) {
            if hour <= last {
                hours
                    .entry(hour)
                    .or_default()
                    .lines
                    .push(format!("file {node} {path} {rows}"));
            }
        }
    };
    match service.source() {
        DataSource::Local(collector) => {
            let snapshot = collector.snapshot(Table::Metrics);
            for f in &snapshot.files {
                add_file("", &f.path, f.rows, f.min_time_ns, f.max_time_ns);
            }
            add_live(&mut hours, "", &snapshot.live, last);
        }
        DataSource::Cluster(source) => {
            let mut request = SnapshotRequest::all(Table::Metrics);
            request.max_time_ns = Some(
                last.saturating_add(1)
                    .saturating_mul(HOUR_NS)
                    .saturating_sub(1),
            );
            let state = RequestState::default();
            let nodes = source.gather(&request, &state).await?;
            for node in &nodes {
                for f in &node.files {
                    add_file(&node.node_id, &f.path, f.rows, f.min_time_ns, f.max_time_ns);
                }
            }
            for node in &nodes {
                add_live(&mut hours, &node.node_id, &node.live, last);
            }
        }
    }
    Ok(hours
        .into_iter()
        .map(|(hour, inputs)| (hour, inputs.fingerprint()))
        .collect())
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// `sort_columns` ascending, nulls first (how the flusher sorts files), in `schema`.
fn ordering(schema: &SchemaRef) -> Result<LexOrdering> {
    let exprs = Table::Metrics
        .sort_columns()
        .iter()
        .map(|name| {
            Ok(PhysicalSortExpr::new_default(Arc::new(Column::new(
                name,
                schema
                    .index_of(name)
                    .map_err(|e| Error::Execution(e.to_string()))?,
            ))))
        })
        .collect::<Result<Vec<_>>>()?;
    LexOrdering::new(exprs).ok_or_else(|| Error::Execution("empty sort key".into()))
}

/// The live rows of `[start, end)`, sorted by the table's sort key.
fn sorted_live(live: &[RecordBatch], start: i64, end: i64) -> Result<RecordBatch> {
    let schema = Table::Metrics.schema();
    let mut parts = Vec::new();
    for batch in live {
        let times = batch
            .column_by_name(columns::TIME)
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| Error::Execution("live rows without time".into()))?;
        let keep: arrow::array::BooleanArray = times
            .values()
            .iter()
            .map(|t| Some(*t >= start && *t < end))
            .collect();
        let part = arrow::compute::filter_record_batch(batch, &keep)
            .map_err(|e| Error::Execution(e.to_string()))?;
        if part.num_rows() > 0 {
            parts.push(part);
        }
    }
    let batch = arrow::compute::concat_batches(&schema, &parts)
        .map_err(|e| Error::Execution(e.to_string()))?;
    if batch.num_rows() <= 1 {
        return Ok(batch);
    }
    let sort_columns = Table::Metrics
        .sort_columns()
        .iter()
        .map(|name| {
            Ok(SortColumn {
                values: batch
                    .column_by_name(name)
                    .cloned()
                    .ok_or_else(|| Error::Execution(format!("live rows without {name}")))?,
                options: None,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let order: UInt32Array =
        lexsort_to_indices(&sort_columns, None).map_err(|e| Error::Execution(e.to_string()))?;
    take_record_batch(&batch, &order).map_err(|e| Error::Execution(e.to_string()))
}

/// The hour `hour` of `metrics` (columns [`fold::INPUT_COLUMNS`]) as streams to read one
/// after another, each sorted by the table's sort key (see the module docs).
pub(crate) async fn hour_streams(
    service: &QueryService,
    ctx: &SessionContext,
    hour: i64,
) -> Result<Vec<SendableRecordBatchStream>> {
    let schema = Table::Metrics.schema();
    let projection = fold::INPUT_COLUMNS
        .iter()
        .map(|name| schema.index_of(name))
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Execution(e.to_string()))?;
    let (start, end) = (hour * HOUR_NS, hour * HOUR_NS + HOUR_NS);
    let filters = vec![
        col(columns::TIME).gt_eq(ts(start)),
        col(columns::TIME).lt(ts(end)),
    ];
    let state = ctx.state();
    let task = ctx.task_ctx();
    match service.source() {
        DataSource::Local(store) => {
            let snapshot = store.snapshot(Table::Metrics);
            let data_dir = store.data_dir();
            let files = snapshot
                .files
                .iter()
                .filter(|f| f.min_time_ns < end && f.max_time_ns >= start)
                .map(|f| {
                    Ok(FileGroup::new(vec![partitioned_file_at(
                        &data_dir.join(&f.path),
                        f.bytes,
                    )?]))
                })
                .collect::<datafusion::common::Result<Vec<_>>>()?;
            let live = sorted_live(&snapshot.live, start, end)?;
            let table_ordering = ordering(&schema)?;
            let projected = Arc::new(
                schema
                    .project(&projection)
                    .map_err(|e| Error::Execution(e.to_string()))?,
            );
            let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
            if !files.is_empty() {
                let source = parquet_source(&state, &schema, &filters)?;
                let config = FileScanConfigBuilder::new(
                    ObjectStoreUrl::local_filesystem(),
                    Arc::new(source),
                )
                .with_file_groups(files)
                .with_projection_indices(Some(projection.clone()))?
                // Every file is sorted and read as its own stream.
                .with_output_ordering(vec![table_ordering.clone()])
                .build();
                inputs.push(DataSourceExec::from_data_source(config));
            }
            if live.num_rows() > 0 || inputs.is_empty() {
                let source = MemorySourceConfig::try_new(
                    &[vec![live]],
                    std::sync::Arc::clone(&schema),
                    Some(projection.clone()),
                )?
                .try_with_sort_information(vec![table_ordering])?;
                inputs.push(DataSourceExec::from_data_source(source));
            }
            let input = if inputs.len() == 1 {
                inputs.pop().expect("one input")
            } else {
                UnionExec::try_new(inputs)?
            };
            let merge = SortPreservingMergeExec::new(ordering(&projected)?, input);
            Ok(vec![merge.execute(0, task)?])
        }
        DataSource::Cluster(_) => {
            let provider = ctx.table_provider(Table::Metrics.name()).await?;
            let plan = provider
                .scan(&state, Some(&projection), &filters, None)
                .await?;
            let partitions = plan.properties().partitioning.partition_count();
            (0..partitions)
                .map(|p| Ok(plan.execute(p, std::sync::Arc::clone(&task))?))
                .collect()
        }
    }
}
