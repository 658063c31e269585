//! What the dependency graph (`crate::graph`) and the latency reports (`crate::latency`)
//! share, so neither depends on the other: partitioned column scans of the `spans` table
//! over a time range, the small helpers both use to read string columns quickly, the
//! weighted duration sketch ([`sketch`]) and the slowest-call examples (`examples`).
//!
//! ```text
//!  the session's `spans` table ── TableProvider::scan(projection, start_time >= s AND < e, …)
//!     └ one stream per partition (groups of whole Parquet files, then the live rows)
//!         └ one tokio task per partition: rows outside [s, e) dropped ─> Worker::batch
//!  Worker::finish per partition ──> outputs in partition order ──> merged by the caller
//! ```
//!
//! The provider's `scan` is called directly instead of planning a DataFrame: the physical
//! optimizer would cut files into byte ranges and deal batches round-robin, and the graph
//! relies on each partition reading whole files in storage order (sorted by trace). The
//! time filter is pushed into the Parquet reader (row-group statistics, page index, row
//! filter); live rows are filtered here, which is also why `start_time` is always read.
//!
//! In a cluster (`crate::cluster`) a partition is a series of merges instead: each one hour
//! (or trace-id range of an hour) of every node's files and live rows, sorted by trace and
//! without copies, so a trace's spans of one hour form one run there and every span is seen
//! once across partitions, which is all the graph and latency workers rely on.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, DictionaryArray, RecordBatch, TimestampNanosecondArray,
};
use arrow::datatypes::{DataType, Int32Type};
use datafusion::catalog::{Session, TableProvider};
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::execute_stream_partitioned;
use datafusion::prelude::{Expr, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use weft_schemas::Table;
use weft_schemas::columns::START_TIME;

use crate::{Error, Result};

pub(crate) mod examples;
pub mod sketch;

/// Spans starting in `[start_ns, end_ns)`.
pub use crate::params::TimeRange;

/// OTLP `StatusCode` ERROR.
pub(crate) const STATUS_ERROR: i8 = 2;

/// Consumes the batches of one partition; runs in its own task.
pub(crate) trait Worker: Send + 'static {
    type Output: Send + 'static;
    fn batch(&mut self, batch: &RecordBatch) -> Result<()>;
    fn finish(self) -> Result<Self::Output>;
}

/// The session's `spans` table.
pub(crate) async fn spans_table(session: &dyn Session) -> Result<Arc<dyn TableProvider>> {
    let options = &session.config_options().catalog;
    let missing = || Error::Execution("the spans table is not registered in this session".into());
    let schema = session
        .catalog_list()
        .catalog(&options.default_catalog)
        .and_then(|c| c.schema(&options.default_schema))
        .ok_or_else(missing)?;
    schema.table(Table::Spans.name()).await?.ok_or_else(missing)
}

/// A `start_time` literal.
pub(crate) fn time_lit(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// Scans `columns` of the spans starting in `range` that also pass `filters`, one worker
/// per partition, and returns the workers' outputs in partition order.
///
/// `filters` are pushed into the Parquet reader only (pruning and late materialisation);
/// workers must still check them on the live rows.
pub(crate) async fn scan<W: Worker>(
    session: &dyn Session,
    columns: &[&str],
    range: TimeRange,
    filters: Vec<Expr>,
    mut make_worker: impl FnMut() -> W,
) -> Result<Vec<W::Output>> {
    if range.start_ns >= range.end_ns {
        return Ok(Vec::new());
    }
    let provider = spans_table(session).await?;
    let schema = provider.schema();
    let mut projection = Vec::with_capacity(columns.len() + 1);
    for name in columns.iter().copied().chain([START_TIME]) {
        let index = schema
            .index_of(name)
            .map_err(|e| Error::Execution(format!("spans column {name}: {e}")))?;
        if !projection.contains(&index) {
            projection.push(index);
        }
    }
    let mut all_filters = vec![
        col(START_TIME).gt_eq(time_lit(range.start_ns)),
        col(START_TIME).lt(time_lit(range.end_ns)),
    ];
    all_filters.extend(filters);
    let plan = provider
        .scan(session, Some(&projection), &all_filters, None)
        .await?;
    let streams = execute_stream_partitioned(plan, session.task_ctx())?;

    // Dropping the JoinSet (an error here, or the caller's future being cancelled by a
    // timeout) aborts every partition task.
    let mut tasks = tokio::task::JoinSet::new();
    for (partition, stream) in streams.into_iter().enumerate() {
        let worker = make_worker();
        tasks.spawn(async move { (partition, run_partition(stream, range, worker).await) });
    }
    let mut outputs = Vec::with_capacity(tasks.len());
    while let Some(joined) = tasks.join_next().await {
        let (partition, output) =
            joined.map_err(|e| Error::Execution(format!("scan task failed: {e}")))?;
        outputs.push((partition, output?));
    }
    outputs.sort_by_key(|(partition, _)| *partition);
    Ok(outputs.into_iter().map(|(_, output)| output).collect())
}

async fn run_partition<W: Worker>(
    mut stream: SendableRecordBatchStream,
    range: TimeRange,
    mut worker: W,
) -> Result<W::Output> {
    while let Some(batch) = stream.next().await {
        let batch = within(batch?, range)?;
        if batch.num_rows() > 0 {
            worker.batch(&batch)?;
        }
    }
    worker.finish()
}

/// Drops rows whose start time is outside `range` (only live rows can have any: Parquet
/// rows were filtered by the reader), without copying when every row is inside.
fn within(batch: RecordBatch, range: TimeRange) -> Result<RecordBatch> {
    let times = batch
        .column_by_name(START_TIME)
        .and_then(|c| c.as_any().downcast_ref::<TimestampNanosecondArray>())
        .ok_or_else(|| Error::Execution("spans scan without start_time".into()))?;
    if times.values().iter().all(|t| range.contains(*t)) {
        return Ok(batch);
    }
    let keep: BooleanArray = times
        .values()
        .iter()
        .map(|t| Some(range.contains(*t)))
        .collect();
    arrow::compute::filter_record_batch(&batch, &keep).map_err(|e| Error::Execution(e.to_string()))
}

/// A column of `batch` by name, or an error naming it.
pub(crate) fn column<'a>(batch: &'a RecordBatch, name: &str) -> Result<&'a ArrayRef> {
    batch
        .column_by_name(name)
        .ok_or_else(|| Error::Execution(format!("spans scan without {name}")))
}

/// A typed column of `batch` by name.
pub(crate) fn typed<T: Array + Clone + 'static>(batch: &RecordBatch, name: &str) -> Result<T> {
    column(batch, name)?
        .as_any()
        .downcast_ref::<T>()
        .cloned()
        .ok_or_else(|| Error::Execution(format!("spans column {name} has an unexpected type")))
}

/// Read access to a string column whatever its physical type (the schema says `Utf8` or
/// `Dictionary(Int32, Utf8)`, but a reader may hand back views).
#[derive(Debug, Clone)]
pub(crate) enum StrColumn {
    Utf8(arrow::array::StringArray),
    Large(arrow::array::LargeStringArray),
    View(arrow::array::StringViewArray),
    Dict(DictionaryArray<Int32Type>, Box<StrColumn>),
}

impl StrColumn {
    pub(crate) fn new(array: &ArrayRef) -> Result<Self> {
        Ok(match array.data_type() {
            DataType::Utf8 => StrColumn::Utf8(array.as_string::<i32>().clone()),
            DataType::LargeUtf8 => StrColumn::Large(array.as_string::<i64>().clone()),
            DataType::Utf8View => StrColumn::View(array.as_string_view().clone()),
            DataType::Dictionary(key, _) if **key == DataType::Int32 => {
                let dict = array.as_dictionary::<Int32Type>().clone();
                let values = StrColumn::new(dict.values())?;
                StrColumn::Dict(dict, Box::new(values))
            }
            other => {
                return Err(Error::Execution(format!(
                    "expected a string column, found {other}"
                )));
            }
        })
    }

    /// The value of row `i`; `None` when null.
    pub(crate) fn get(&self, i: usize) -> Option<&str> {
        match self {
            StrColumn::Utf8(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::Large(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::View(a) => a.is_valid(i).then(|| a.value(i)),
            StrColumn::Dict(d, values) => {
                if d.is_valid(i) {
                    values.get(d.keys().value(i) as usize)
                } else {
                    None
                }
            }
        }
    }
}

/// Strings seen by one worker, numbered densely so hot loops compare `u32`s.
#[derive(Debug, Default)]
pub(crate) struct Interner {
    ids: HashMap<Arc<str>, u32>,
    names: Vec<Arc<str>>,
}

impl Interner {
    pub(crate) fn intern(&mut self, name: &str) -> u32 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        let id = self.names.len() as u32;
        let name: Arc<str> = Arc::from(name);
        self.names.push(std::sync::Arc::clone(&name));
        self.ids.insert(name, id);
        id
    }

    pub(crate) fn name(&self, id: u32) -> &Arc<str> {
        &self.names[id as usize]
    }

    pub(crate) fn len(&self) -> usize {
        self.names.len()
    }
}

const UNMAPPED: u32 = u32::MAX;

/// Turns a string column into interned ids, one per row. For a dictionary column each
/// dictionary entry is interned once, the first time a row uses it, and the mapping is
/// kept while the reader keeps handing out the same dictionary (one per column chunk), so
/// the per-row cost is an array index.
#[derive(Debug, Default)]
pub(crate) struct NameIds {
    dictionary: Option<ArrayRef>,
    mapping: Vec<u32>,
}

impl NameIds {
    /// Fills `out` with the id of every row's value (`""` for nulls).
    pub(crate) fn ids(
        &mut self,
        array: &ArrayRef,
        names: &mut Interner,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        out.clear();
        if let Some(dict) = array.as_any().downcast_ref::<DictionaryArray<Int32Type>>() {
            let values = dict.values();
            if !self
                .dictionary
                .as_ref()
                .is_some_and(|d| Arc::ptr_eq(d, values))
            {
                self.dictionary = Some(std::sync::Arc::clone(values));
                self.mapping.clear();
                self.mapping.resize(values.len(), UNMAPPED);
            }
            let strings = StrColumn::new(values)?;
            let keys = dict.keys();
            for i in 0..dict.len() {
                if !keys.is_valid(i) {
                    out.push(names.intern(""));
                    continue;
                }
                let key = keys.value(i) as usize;
                let id = match self.mapping.get(key) {
                    Some(&id) if id != UNMAPPED => id,
                    Some(_) => {
                        let id = names.intern(strings.get(key).unwrap_or(""));
                        self.mapping[key] = id;
                        id
                    }
                    None => {
                        return Err(Error::Execution(
                            "dictionary key out of range in a spans column".into(),
                        ));
                    }
                };
                out.push(id);
            }
        } else {
            let strings = StrColumn::new(array)?;
            for i in 0..array.len() {
                out.push(names.intern(strings.get(i).unwrap_or("")));
            }
        }
        Ok(())
    }
}

/// Hashes span ids (already uniformly random) with one multiplication instead of SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, n: u8) {
        self.write_u64(u64::from(n));
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }

    fn write_isize(&mut self, n: isize) {
        self.write_u64(n as u64);
    }

    fn write_u64(&mut self, n: u64) {
        // Fibonacci hashing folds the bits so tables of any power-of-two size spread
        // ids that differ only in their high bits.
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

pub(crate) type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;
pub(crate) type IdSet<K> = std::collections::HashSet<K, BuildHasherDefault<IdHasher>>;

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::StringArray;

    #[test]
    fn name_ids_map_dictionaries_and_plain_strings_alike() {
        let mut names = Interner::default();
        let mut ids = NameIds::default();
        let mut out = Vec::new();
        let dict: DictionaryArray<Int32Type> = vec!["a", "b", "a", "c"].into_iter().collect();
        let dict: ArrayRef = Arc::new(dict);
        ids.ids(&dict, &mut names, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 0, 2]);
        // The same dictionary again: served from the mapping.
        ids.ids(&dict, &mut names, &mut out).unwrap();
        assert_eq!(out, vec![0, 1, 0, 2]);
        let plain: ArrayRef = Arc::new(StringArray::from(vec![Some("c"), None, Some("d")]));
        ids.ids(&plain, &mut names, &mut out).unwrap();
        assert_eq!(out, vec![2, 3, 4]);
        assert_eq!(&**names.name(3), "");
        assert_eq!(&**names.name(4), "d");
    }
}
