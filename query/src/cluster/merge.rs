//! The duplicate-free scan of a cluster table: units of sorted inputs merged on the table's
//! sort key, repeated rows dropped as they stream past.
//!
//! ```text
//!  files + live rows of every node
//!    │ by hour of the time column (copies of a row always share its hour)
//!    │ span hours with many bytes: also by trace-id range (pushed into Parquet)
//!    ▼
//!  unit = SortPreservingMergeExec(sort key) over
//!           DataSourceExec(Parquet: one file per stream, declared sorted, predicate)
//!           + DataSourceExec(memory: this unit's live rows, sorted here)
//!    ▼
//!  DedupMergeExec partition p: its units one after another
//!    per unit: Dedup (fresh state) ─> drop rows whose identity the current run of equal
//!              sort keys already had ─> project away columns only dedup needed
//! ```
//!
//! The units are hidden from the optimizer (`children()` is empty): the merge is only
//! correct when every copy of a row reaches the same Dedup, and an optimizer that sees a
//! per-partition ordering requirement could legally split one merge into several sorted
//! streams. EXPLAIN shows one line with the unit, file and live row counts.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, RecordBatch, RecordBatchOptions, UInt32Array,
};
use arrow::compute::{SortColumn, lexsort_to_indices, take_record_batch};
use arrow::datatypes::{SchemaRef, TimestampNanosecondType};
use arrow::error::ArrowError;
use arrow::row::{RowConverter, SortField};
use datafusion::catalog::Session;
use datafusion::common::Result as DfResult;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::DataFusionError;
use datafusion::execution::TaskContext;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, LexOrdering, PhysicalSortExpr};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::sorts::sort_preserving_merge::SortPreservingMergeExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::union::UnionExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PhysicalExpr, PlanProperties,
    SendableRecordBatchStream,
};
use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use weft_schemas::{Table, columns};

use crate::provider::{parquet_source, storage_url, stored_file};

const NANOS_PER_HOUR: i64 = 3_600_000_000_000;
/// Compressed file bytes one span unit aims to read: above it an hour is cut into trace-id
/// ranges, each read as its own merge.
const UNIT_BYTES: u64 = 32 << 20;
/// Most trace-id ranges per hour (each range opens every file of the hour once).
const MAX_RANGES: u64 = 256;
/// Hours smaller than this are never cut just to use more cores.
const MIN_SPLIT_BYTES: u64 = 4 << 20;
/// Rows buffered across all inputs of one merge, roughly: the batch size of each input is
/// this divided by the number of inputs, so many files do not mean many full batches.
const MERGE_BUFFER_ROWS: usize = 64 * 1024;
const MIN_MERGE_BATCH: usize = 256;
/// Identities of one run kept in a list before switching to a hash set.
const LINEAR_SEEN: usize = 16;

/// What identifies a row beyond the table's sort key (which is part of the identity too).
pub(crate) fn extra_identity_columns(table: Table) -> &'static [&'static str] {
    match table {
        // (trace_id, start_time) + (span_id, kind): a span, whichever node stored it.
        Table::Spans => &[columns::SPAN_ID, columns::KIND],
        // (metric_name, service_name, series_id, time) + (metric_type, start_time): a data
        // point of one series (series_id hashes the resource, scope and point attributes).
        Table::Metrics => &[columns::METRIC_TYPE, columns::START_TIME],
    }
}

/// One Parquet file of the scan.
#[derive(Debug, Clone)]
pub(crate) struct ScanFile {
    /// Object key in the storage (see [`crate::provider::STORAGE_URL`]).
    pub key: String,
    pub bytes: u64,
    pub min_time_ns: i64,
}

/// When an hour of spans is cut into trace-id ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tuning {
    /// Compressed file bytes one unit aims to read.
    pub unit_bytes: u64,
    /// Hours below this are not cut just to use more cores.
    pub min_split_bytes: u64,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            unit_bytes: UNIT_BYTES,
            min_split_bytes: MIN_SPLIT_BYTES,
        }
    }
}

/// Everything [`plan`] needs.
pub(crate) struct MergeInput<'a> {
    pub table: Table,
    pub files: Vec<ScanFile>,
    pub live: Vec<RecordBatch>,
    pub projection: Option<&'a Vec<usize>>,
    pub filters: &'a [Expr],
    /// The scan is restricted to a few trace ids: no range cutting (one range holds them).
    pub few_traces: bool,
    pub tuning: Tuning,
}

/// A trace-id range `[lo, hi)` of 128-bit big-endian ids; `hi = None` is open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    lo: u128,
    hi: Option<u128>,
}

/// One merge: the inputs of one (hour, range).
struct Unit {
    plan: Arc<dyn ExecutionPlan>,
    weight: u64,
}

/// Builds the duplicate-free scan (see the module docs).
pub(crate) fn plan(
    session: &dyn Session,
    input: MergeInput<'_>,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let table = input.table;
    let schema = table.schema();
    let wanted: Vec<usize> = match input.projection {
        Some(p) => p.clone(),
        None => (0..schema.fields().len()).collect(),
    };
    let output_schema = Arc::new(schema.project(&wanted)?);
    if input.files.is_empty() && input.live.iter().all(|b| b.num_rows() == 0) {
        return Ok(MemorySourceConfig::try_new_exec(
            &[Vec::new()],
            schema,
            Some(wanted),
        )?);
    }

    // The scan reads what the query wants plus what dedup needs.
    let sort_columns = table.sort_columns();
    let mut inner = wanted.clone();
    let mut key_index = |name: &str| -> DfResult<usize> {
        let index = schema.index_of(name)?;
        Ok(match inner.iter().position(|&i| i == index) {
            Some(position) => position,
            None => {
                inner.push(index);
                inner.len() - 1
            }
        })
    };
    let group: Vec<usize> = sort_columns
        .iter()
        .map(|name| key_index(name))
        .collect::<DfResult<_>>()?;
    let rest: Vec<usize> = extra_identity_columns(table)
        .iter()
        .map(|name| key_index(name))
        .collect::<DfResult<_>>()?;
    let inner_schema = Arc::new(schema.project(&inner)?);
    let key = DedupKey {
        group_fields: group
            .iter()
            .map(|&i| SortField::new(inner_schema.field(i).data_type().clone()))
            .collect(),
        rest_fields: rest
            .iter()
            .map(|&i| SortField::new(inner_schema.field(i).data_type().clone()))
            .collect(),
        group,
        rest,
    };
    let table_ordering = ordering(&schema, sort_columns)?;
    let inner_ordering = ordering(&inner_schema, sort_columns)?;

    // Hours of the files and of the live rows; span hours may be cut into ranges.
    let mut hours: BTreeMap<i64, Vec<ScanFile>> = BTreeMap::new();
    for file in input.files {
        hours
            .entry(file.min_time_ns.div_euclid(NANOS_PER_HOUR))
            .or_default()
            .push(file);
    }
    let live = live_by_hour(table, &input.live)?;
    for hour in live.keys() {
        hours.entry(*hour).or_default();
    }
    let target = session.config().target_partitions().max(1);
    let per_hour_for_cores = target.div_ceil(hours.len().max(1)) as u64;

    let mut units = Vec::new();
    let mut file_count = 0;
    let mut live_rows = 0;
    for (hour, files) in hours {
        let bytes: u64 = files.iter().map(|f| f.bytes).sum();
        let ranges = if table == Table::Spans && !input.few_traces {
            let mut count = bytes.div_ceil(input.tuning.unit_bytes.max(1));
            if bytes >= input.tuning.min_split_bytes {
                count = count.max(per_hour_for_cores);
            }
            split_ranges(count.clamp(1, MAX_RANGES))
        } else {
            vec![Range { lo: 0, hi: None }]
        };
        let hour_live = live.get(&hour);
        for range in &ranges {
            let unit_live = match hour_live {
                Some(batch) if ranges.len() == 1 => batch.clone(),
                Some(batch) => rows_in_range(batch, *range)?,
                None => RecordBatch::new_empty(std::sync::Arc::clone(&schema)),
            };
            let unit_live = sort_rows(table, &unit_live)?;
            file_count += files.len();
            live_rows += unit_live.num_rows();
            let mut filters = input.filters.to_vec();
            filters.extend(range_filters(*range));
            let plan = unit_plan(
                session,
                &schema,
                &files,
                unit_live,
                &inner,
                &filters,
                &table_ordering,
                &inner_ordering,
            )?;
            units.push(Unit {
                plan,
                weight: bytes / ranges.len() as u64 + 1,
            });
        }
    }
    // The units are spread over the partitions by weight; each partition keeps them in
    // (hour, range) order.
    let partitions = target.min(units.len()).max(1);
    let mut groups: Vec<(u64, Vec<Arc<dyn ExecutionPlan>>)> = vec![(0, Vec::new()); partitions];
    for unit in units {
        let lightest = groups
            .iter_mut()
            .min_by_key(|(weight, _)| *weight)
            .expect("at least one partition");
        lightest.0 += unit.weight;
        lightest.1.push(unit.plan);
    }
    let partitions: Vec<Vec<Arc<dyn ExecutionPlan>>> = groups
        .into_iter()
        .map(|(_, plans)| plans)
        .filter(|plans| !plans.is_empty())
        .collect();
    Ok(Arc::new(DedupMergeExec::new(
        table,
        partitions,
        key,
        (0..wanted.len()).collect(),
        output_schema,
        Summary {
            files: file_count,
            live_rows,
        },
    )))
}

/// Benchmark entry point (`load-test/benches/hot_paths.rs`): the duplicate-free scan of
/// sorted Parquet `files` of `table` (absolute local path, size, smallest time value) and
/// unsorted `live` rows, unfiltered, as a query over a cluster table runs it.
pub async fn dedup_scan(
    table: Table,
    files: Vec<(std::path::PathBuf, u64, i64)>,
    live: Vec<RecordBatch>,
) -> DfResult<Vec<RecordBatch>> {
    let ctx = datafusion::prelude::SessionContext::new();
    crate::provider::register_storage(
        ctx.runtime_env().as_ref(),
        Arc::new(object_store::local::LocalFileSystem::new()),
    )?;
    let files = files
        .into_iter()
        .map(|(path, bytes, min_time_ns)| {
            let key = object_store::path::Path::from_absolute_path(&path)
                .map_err(|e| DataFusionError::External(Box::new(e)))?;
            Ok(ScanFile {
                key: key.to_string(),
                bytes,
                min_time_ns,
            })
        })
        .collect::<DfResult<_>>()?;
    let input = MergeInput {
        table,
        files,
        live,
        projection: None,
        filters: &[],
        few_traces: false,
        tuning: Tuning::default(),
    };
    let plan = plan(&ctx.state(), input)?;
    datafusion::physical_plan::collect(plan, ctx.task_ctx()).await
}

/// `sort_columns` ascending, nulls first (how the flusher's row keys sort), in `schema`.
fn ordering(schema: &SchemaRef, sort_columns: &[&str]) -> DfResult<LexOrdering> {
    let exprs = sort_columns
        .iter()
        .map(|name| {
            Ok(PhysicalSortExpr::new_default(Arc::new(Column::new(
                name,
                schema.index_of(name)?,
            ))))
        })
        .collect::<DfResult<Vec<_>>>()?;
    LexOrdering::new(exprs).ok_or_else(|| DataFusionError::Internal("empty sort key".into()))
}

/// One merge: every file its own stream (declared sorted) plus the sorted live rows.
#[allow(clippy::too_many_arguments)]
fn unit_plan(
    session: &dyn Session,
    schema: &SchemaRef,
    files: &[ScanFile],
    live: RecordBatch,
    projection: &[usize],
    filters: &[Expr],
    table_ordering: &LexOrdering,
    inner_ordering: &LexOrdering,
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
    let fan_in = files.len() + usize::from(live.num_rows() > 0);
    if !files.is_empty() {
        let source = parquet_source(session, schema, filters)?;
        let groups = files
            .iter()
            .map(|f| FileGroup::new(vec![stored_file(&f.key, f.bytes)]))
            .collect::<Vec<_>>();
        let batch_size = (MERGE_BUFFER_ROWS / fan_in.max(1)).clamp(
            MIN_MERGE_BATCH,
            session.config().batch_size().max(MIN_MERGE_BATCH),
        );
        let config = FileScanConfigBuilder::new(storage_url()?, Arc::new(source))
            .with_file_groups(groups)
            .with_projection_indices(Some(projection.to_vec()))?
            // One file per stream, each sorted: this also keeps every file in its own
            // stream (no work stealing between streams).
            .with_output_ordering(vec![table_ordering.clone()])
            .with_batch_size(Some(batch_size))
            .build();
        inputs.push(DataSourceExec::from_data_source(config));
    }
    if live.num_rows() > 0 || inputs.is_empty() {
        let source = MemorySourceConfig::try_new(
            &[vec![live]],
            std::sync::Arc::clone(schema),
            Some(projection.to_vec()),
        )?
        .try_with_sort_information(vec![table_ordering.clone()])?;
        inputs.push(DataSourceExec::from_data_source(source));
    }
    let input = if inputs.len() == 1 {
        inputs.pop().expect("one input")
    } else {
        UnionExec::try_new(inputs)?
    };
    Ok(Arc::new(SortPreservingMergeExec::new(
        inner_ordering.clone(),
        input,
    )))
}

/// `count` ranges of equal width over the 128-bit id space.
fn split_ranges(count: u64) -> Vec<Range> {
    if count <= 1 {
        return vec![Range { lo: 0, hi: None }];
    }
    let step = u128::MAX / u128::from(count) + 1;
    (0..count)
        .map(|i| {
            let lo = step * u128::from(i);
            let hi = (i + 1 < count).then(|| step * u128::from(i + 1));
            Range { lo, hi }
        })
        .collect()
}

/// `trace_id >= lo AND trace_id < hi` (the parts that restrict anything).
fn range_filters(range: Range) -> Vec<Expr> {
    let id = |v: u128| {
        lit(ScalarValue::FixedSizeBinary(
            16,
            Some(v.to_be_bytes().to_vec()),
        ))
    };
    let mut filters = Vec::new();
    if range.lo > 0 {
        filters.push(col(columns::TRACE_ID).gt_eq(id(range.lo)));
    }
    if let Some(hi) = range.hi {
        filters.push(col(columns::TRACE_ID).lt(id(hi)));
    }
    filters
}

fn trace_value(ids: &arrow::array::FixedSizeBinaryArray, i: usize) -> u128 {
    let mut bytes = [0u8; 16];
    let value = ids.value(i);
    let n = value.len().min(16);
    bytes[..n].copy_from_slice(&value[..n]);
    u128::from_be_bytes(bytes)
}

fn rows_in_range(batch: &RecordBatch, range: Range) -> DfResult<RecordBatch> {
    let ids = batch
        .column_by_name(columns::TRACE_ID)
        .and_then(|c| c.as_fixed_size_binary_opt())
        .ok_or_else(|| DataFusionError::Internal("live spans without trace_id".into()))?;
    let keep: BooleanArray = (0..ids.len())
        .map(|i| {
            let v = trace_value(ids, i);
            Some(v >= range.lo && range.hi.is_none_or(|hi| v < hi))
        })
        .collect();
    Ok(arrow::compute::filter_record_batch(batch, &keep)?)
}

/// The live rows of every node, one batch per hour of the time column.
fn live_by_hour(table: Table, live: &[RecordBatch]) -> DfResult<BTreeMap<i64, RecordBatch>> {
    let schema = table.schema();
    let mut rows: BTreeMap<i64, Vec<(usize, usize)>> = BTreeMap::new();
    for (b, batch) in live.iter().enumerate() {
        let times = batch
            .column_by_name(table.time_column())
            .and_then(|c| c.as_primitive_opt::<TimestampNanosecondType>())
            .ok_or_else(|| DataFusionError::Internal("live rows without a time column".into()))?;
        for (i, t) in times.values().iter().enumerate() {
            rows.entry(t.div_euclid(NANOS_PER_HOUR))
                .or_default()
                .push((b, i));
        }
    }
    let batches: Vec<&RecordBatch> = live.iter().collect();
    rows.into_iter()
        .map(|(hour, indices)| {
            let batch = if batches.len() == 1 && indices.len() == batches[0].num_rows() {
                batches[0].clone()
            } else {
                arrow::compute::interleave_record_batch(&batches, &indices)?
            };
            // Same columns, the table's own schema `Arc`.
            let batch =
                RecordBatch::try_new(std::sync::Arc::clone(&schema), batch.columns().to_vec())?;
            Ok((hour, batch))
        })
        .collect()
}

/// `batch` sorted by the table's sort key (as the flusher sorts files).
fn sort_rows(table: Table, batch: &RecordBatch) -> DfResult<RecordBatch> {
    if batch.num_rows() <= 1 {
        return Ok(batch.clone());
    }
    let columns = table
        .sort_columns()
        .iter()
        .map(|name| {
            let values = batch
                .column_by_name(name)
                .cloned()
                .ok_or_else(|| DataFusionError::Internal(format!("live rows without {name}")))?;
            Ok(SortColumn {
                values,
                options: None,
            })
        })
        .collect::<DfResult<Vec<_>>>()?;
    let order: UInt32Array = lexsort_to_indices(&columns, None)?;
    Ok(take_record_batch(batch, &order)?)
}

/// Which columns of the merged stream make up a row's identity.
#[derive(Debug, Clone)]
struct DedupKey {
    /// The sort key: copies of a row are in one run of equal values.
    group: Vec<usize>,
    group_fields: Vec<SortField>,
    /// The rest of the identity.
    rest: Vec<usize>,
    rest_fields: Vec<SortField>,
}

#[derive(Debug, Clone, Copy)]
struct Summary {
    files: usize,
    live_rows: usize,
}

/// See the module docs.
pub(crate) struct DedupMergeExec {
    table: Table,
    /// Per output partition, its units (each a one-partition sorted plan).
    partitions: Vec<Vec<Arc<dyn ExecutionPlan>>>,
    key: DedupKey,
    /// Columns of the merged stream that leave this node, in order.
    output: Vec<usize>,
    schema: SchemaRef,
    summary: Summary,
    properties: Arc<PlanProperties>,
}

impl std::fmt::Debug for DedupMergeExec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DedupMergeExec")
            .field("table", &self.table.name())
            .field("partitions", &self.partitions.len())
            .finish()
    }
}

impl DedupMergeExec {
    fn new(
        table: Table,
        partitions: Vec<Vec<Arc<dyn ExecutionPlan>>>,
        key: DedupKey,
        output: Vec<usize>,
        schema: SchemaRef,
        summary: Summary,
    ) -> Self {
        // No output ordering is declared: a partition runs several merges in a row.
        let properties = PlanProperties::new(
            EquivalenceProperties::new(std::sync::Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Self {
            table,
            partitions,
            key,
            output,
            schema,
            summary,
            properties: Arc::new(properties),
        }
    }

    fn units(&self) -> usize {
        self.partitions.iter().map(Vec::len).sum()
    }
}

impl DisplayAs for DedupMergeExec {
    fn fmt_as(&self, t: DisplayFormatType, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match t {
            DisplayFormatType::Default | DisplayFormatType::Verbose => write!(
                f,
                "DedupMergeExec: table={}, partitions={}, units={}, files={}, live_rows={}",
                self.table.name(),
                self.partitions.len(),
                self.units(),
                self.summary.files,
                self.summary.live_rows
            ),
            DisplayFormatType::TreeRender => write!(
                f,
                "table={}\nunits={}\nfiles={}",
                self.table.name(),
                self.units(),
                self.summary.files
            ),
        }
    }
}

impl ExecutionPlan for DedupMergeExec {
    fn name(&self) -> &str {
        "DedupMergeExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> DfResult<TreeNodeRecursion>,
    ) -> DfResult<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> DfResult<SendableRecordBatchStream> {
        let schema = std::sync::Arc::clone(&self.schema);
        let units = match self.partitions.get(partition) {
            Some(units) => units.clone(),
            None if partition == 0 => Vec::new(),
            None => {
                return Err(DataFusionError::Internal(format!(
                    "DedupMergeExec has no partition {partition}"
                )));
            }
        };
        let key = self.key.clone();
        let output = self.output.clone();
        let out_schema = std::sync::Arc::clone(&schema);
        // Units start one after another, when the previous one is done: one merge (and its
        // open files) per partition at a time.
        let stream = futures::stream::iter(units)
            .map(move |unit| {
                let start = || -> DfResult<_> {
                    let input = unit.execute(0, std::sync::Arc::clone(&context))?;
                    let mut dedup = Dedup::new(&key)?;
                    let output = output.clone();
                    let schema = std::sync::Arc::clone(&out_schema);
                    Ok(input.map(move |batch| {
                        let kept = dedup.apply(&batch?)?;
                        let columns: Vec<ArrayRef> = output
                            .iter()
                            .map(|&i| std::sync::Arc::clone(kept.column(i)))
                            .collect();
                        let options =
                            RecordBatchOptions::new().with_row_count(Some(kept.num_rows()));
                        Ok(RecordBatch::try_new_with_options(
                            std::sync::Arc::clone(&schema),
                            columns,
                            &options,
                        )?)
                    }))
                };
                match start() {
                    Ok(stream) => stream.boxed(),
                    Err(e) => futures::stream::once(async move { Err(e) }).boxed(),
                }
            })
            .flatten()
            .filter(|batch| futures::future::ready(!matches!(batch, Ok(b) if b.num_rows() == 0)));
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, stream)))
    }
}

/// Drops rows whose identity the current run of equal sort keys already had.
struct Dedup {
    key: DedupKey,
    group_converter: RowConverter,
    rest_converter: RowConverter,
    /// Sort key of the current run (row format; equal values encode to equal bytes).
    current: Vec<u8>,
    in_run: bool,
    /// Identities seen in the current run: a short list, a set when the run is long.
    seen: Vec<Vec<u8>>,
    seen_set: HashSet<Vec<u8>>,
}

impl Dedup {
    fn new(key: &DedupKey) -> Result<Self, ArrowError> {
        Ok(Self {
            key: key.clone(),
            group_converter: RowConverter::new(key.group_fields.clone())?,
            rest_converter: RowConverter::new(key.rest_fields.clone())?,
            current: Vec::new(),
            in_run: false,
            seen: Vec::new(),
            seen_set: HashSet::new(),
        })
    }

    fn apply(&mut self, batch: &RecordBatch) -> Result<RecordBatch, ArrowError> {
        let rows = batch.num_rows();
        if rows == 0 {
            return Ok(batch.clone());
        }
        let pick = |indices: &[usize]| -> Vec<ArrayRef> {
            indices
                .iter()
                .map(|&i| std::sync::Arc::clone(batch.column(i)))
                .collect()
        };
        let groups = self
            .group_converter
            .convert_columns(&pick(&self.key.group))?;
        let rests = self.rest_converter.convert_columns(&pick(&self.key.rest))?;
        let mut keep = Vec::with_capacity(rows);
        let mut dropped = 0usize;
        for i in 0..rows {
            let group = groups.row(i);
            let identity = rests.row(i);
            let new_run = !self.in_run || self.current.as_slice() != group.as_ref();
            let fresh = if new_run {
                self.in_run = true;
                self.current.clear();
                self.current.extend_from_slice(group.as_ref());
                self.seen.clear();
                self.seen_set.clear();
                self.seen.push(identity.as_ref().to_vec());
                true
            } else if self.seen_set.is_empty() {
                if self.seen.iter().any(|s| s.as_slice() == identity.as_ref()) {
                    false
                } else {
                    self.seen.push(identity.as_ref().to_vec());
                    if self.seen.len() > LINEAR_SEEN {
                        self.seen_set.extend(self.seen.drain(..));
                    }
                    true
                }
            } else {
                self.seen_set.insert(identity.as_ref().to_vec())
            };
            if !fresh {
                dropped += 1;
            }
            keep.push(fresh);
        }
        if dropped == 0 {
            return Ok(batch.clone());
        }
        arrow::compute::filter_record_batch(batch, &BooleanArray::from(keep))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{FixedSizeBinaryArray, Int8Array, TimestampNanosecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};

    fn batch(rows: &[(u8, i64, u8, i8)]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("trace_id", DataType::FixedSizeBinary(16), false),
            Field::new(
                "start_time",
                DataType::Timestamp(TimeUnit::Nanosecond, None),
                false,
            ),
            Field::new("span_id", DataType::FixedSizeBinary(8), false),
            Field::new("kind", DataType::Int8, false),
        ]));
        let traces = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.0; 16])).unwrap();
        let spans = FixedSizeBinaryArray::try_from_iter(rows.iter().map(|r| [r.2; 8])).unwrap();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(traces),
                Arc::new(TimestampNanosecondArray::from(
                    rows.iter().map(|r| r.1).collect::<Vec<_>>(),
                )),
                Arc::new(spans),
                Arc::new(Int8Array::from(
                    rows.iter().map(|r| r.3).collect::<Vec<_>>(),
                )),
            ],
        )
        .unwrap()
    }

    fn key() -> DedupKey {
        DedupKey {
            group: vec![0, 1],
            group_fields: vec![
                SortField::new(DataType::FixedSizeBinary(16)),
                SortField::new(DataType::Timestamp(TimeUnit::Nanosecond, None)),
            ],
            rest: vec![2, 3],
            rest_fields: vec![
                SortField::new(DataType::FixedSizeBinary(8)),
                SortField::new(DataType::Int8),
            ],
        }
    }

    #[test]
    fn repeated_identities_within_a_run_are_dropped_across_batches() {
        let mut dedup = Dedup::new(&key()).unwrap();
        let first = dedup
            .apply(&batch(&[
                (1, 5, 1, 2),
                (1, 5, 2, 2),
                (1, 5, 1, 2),
                (1, 6, 1, 2),
            ]))
            .unwrap();
        assert_eq!(first.num_rows(), 3);
        // The run (1, 6) continues into the next batch; same span id, other kind is
        // another span.
        let second = dedup
            .apply(&batch(&[
                (1, 6, 1, 2),
                (1, 6, 1, 3),
                (2, 6, 1, 2),
                (2, 6, 1, 2),
            ]))
            .unwrap();
        assert_eq!(second.num_rows(), 2);
        // Long runs switch to a set and stay exact.
        let rows: Vec<(u8, i64, u8, i8)> = (0..40u8).chain(0..40u8).map(|s| (3, 1, s, 1)).collect();
        assert_eq!(dedup.apply(&batch(&rows)).unwrap().num_rows(), 40);
    }

    #[test]
    fn ranges_cover_the_id_space_without_overlap() {
        assert_eq!(split_ranges(1), vec![Range { lo: 0, hi: None }]);
        let ranges = split_ranges(7);
        assert_eq!(ranges.len(), 7);
        assert_eq!(ranges[0].lo, 0);
        for pair in ranges.windows(2) {
            assert_eq!(pair[0].hi, Some(pair[1].lo));
        }
        assert_eq!(ranges[6].hi, None);
        assert!(ranges[6].lo < u128::MAX);
    }
}
