//! One hour of raw points, sorted by series then time, folded into 1-minute and 1-hour
//! rows as they stream past.
//!
//! ```text
//!  point ─ new series? finish its open buckets; identity row copied once per series
//!        ─ step from the series' previous point of the same run (type, temporality):
//!          counter increase (resets from zero), count / sum increase, histogram increase
//!        ─ minute bucket (key: run + minute) ─┐ a key change finishes the bucket's row
//!        ─ hour bucket   (key: run + hour)   ─┘
//!  finished rows ─ take_batch ─> Parquet writer (batches of BATCH_ROWS)
//! ```
//!
//! Memory: the open buckets of one series, the identity row of each series whose rows are
//! not written yet, and the set of series ids seen (to check the input order: a series
//! must not come back, its times must not go down).

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use arrow::array::{
    Array, ArrayRef, Float64Array, Float64Builder, Int8Array, ListBuilder, RecordBatch,
    TimestampNanosecondArray, UInt32Array, UInt64Array, UInt64Builder,
};
use arrow::compute::{interleave, take_record_batch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use weft_schemas::Table;
use weft_schemas::columns::*;
use weft_schemas::metrics::metric_type;

use super::columns as rc;
use super::{HOUR_NS, Resolution};
use weft_schemas::metrics_algebra::Histogram as Hist;
use weft_schemas::metrics_algebra::{counter_increase, histogram_increase, restarted};

use crate::metrics::points::{HistColumns, column};
use crate::{Error, Result};

/// Rows per output batch.
const BATCH_ROWS: usize = 8_192;

/// Columns copied from the series' first point of the hour.
const IDENTITY: [&str; 9] = [
    METRIC_NAME,
    METRIC_UNIT,
    IS_MONOTONIC,
    SERVICE_NAME,
    SERIES_ID,
    SCOPE_NAME,
    SCOPE_VERSION,
    RESOURCE_ATTRIBUTES,
    ATTRIBUTES,
];

/// Columns of `metrics` the fold reads (the scan's projection).
pub(crate) const INPUT_COLUMNS: [&str; 28] = [
    METRIC_NAME,
    METRIC_UNIT,
    IS_MONOTONIC,
    SERVICE_NAME,
    SERIES_ID,
    SCOPE_NAME,
    SCOPE_VERSION,
    RESOURCE_ATTRIBUTES,
    ATTRIBUTES,
    METRIC_TYPE,
    AGGREGATION_TEMPORALITY,
    START_TIME,
    TIME,
    VALUE_DOUBLE,
    VALUE_INT,
    COUNT,
    SUM,
    MIN,
    MAX,
    BUCKET_COUNTS,
    EXPLICIT_BOUNDS,
    EXP_SCALE,
    EXP_ZERO_COUNT,
    EXP_ZERO_THRESHOLD,
    EXP_POSITIVE_OFFSET,
    EXP_POSITIVE_BUCKET_COUNTS,
    EXP_NEGATIVE_OFFSET,
    EXP_NEGATIVE_BUCKET_COUNTS,
];

fn list_of(item: DataType) -> DataType {
    DataType::List(Arc::new(Field::new(LIST_ITEM, item, false)))
}

/// The schema of the rollup tables (see the module docs of [`crate::metrics::rollup`]).
pub(super) fn schema() -> SchemaRef {
    static SCHEMA: OnceLock<SchemaRef> = OnceLock::new();
    std::sync::Arc::clone(SCHEMA.get_or_init(|| {
        let metrics = Table::Metrics.schema();
        let same = |name: &str| {
            metrics
                .field_with_name(name)
                .expect("a metrics column")
                .clone()
        };
        let ts = metrics
            .field_with_name(TIME)
            .expect("time")
            .data_type()
            .clone();
        let mut fields = vec![
            same(METRIC_NAME),
            same(METRIC_UNIT),
            same(METRIC_TYPE),
            same(AGGREGATION_TEMPORALITY),
            same(IS_MONOTONIC),
            same(SERVICE_NAME),
            same(SERIES_ID),
            same(SCOPE_NAME),
            same(SCOPE_VERSION),
            same(RESOURCE_ATTRIBUTES),
            same(ATTRIBUTES),
            Field::new(TIME, ts.clone(), false),
            Field::new(rc::FIRST_TIME, ts.clone(), false),
            Field::new(rc::LAST_TIME, ts.clone(), false),
            Field::new(rc::POINTS, DataType::UInt64, false),
            Field::new(rc::FIRST_START_TIME, ts.clone(), true),
            Field::new(rc::LAST_START_TIME, ts, true),
        ];
        for name in [
            rc::MIN,
            rc::MAX,
            rc::SUM,
            rc::FIRST_VALUE,
            rc::LAST_VALUE,
            rc::INCREASE,
        ] {
            fields.push(Field::new(name, DataType::Float64, true));
        }
        for name in [rc::COUNT, rc::FIRST_COUNT, rc::LAST_COUNT] {
            fields.push(Field::new(name, DataType::UInt64, true));
        }
        for pair in rc::HISTOGRAMS.chunks(2) {
            fields.push(Field::new(pair[0], list_of(DataType::Float64), true));
            fields.push(Field::new(pair[1], list_of(DataType::UInt64), true));
        }
        Arc::new(Schema::new(fields))
    }))
}

/// One input point.
#[derive(Debug, Clone)]
struct RawPoint {
    metric_type: i8,
    temporality: Option<i8>,
    start: Option<i64>,
    time: i64,
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    hist: Option<Hist>,
}

impl RawPoint {
    fn is_delta(&self) -> bool {
        self.temporality == Some(1)
    }

    fn has_value(&self) -> bool {
        matches!(self.metric_type, metric_type::GAUGE | metric_type::SUM)
    }
}

/// What a cumulative point adds over the previous point of its run.
#[derive(Debug, Default)]
struct Step {
    value: Option<f64>,
    count: Option<u64>,
    sum: Option<f64>,
    hist: Option<Hist>,
}

fn step(prev: &RawPoint, p: &RawPoint) -> Step {
    let mut out = Step::default();
    if p.metric_type == metric_type::SUM
        && let (Some(pv), Some(v)) = (prev.value, p.value)
    {
        out.value = Some(counter_increase(prev.start, pv, p.start, v));
    }
    if let (Some(pc), Some(c)) = (prev.count, p.count) {
        let reset = restarted(prev.start, p.start) || c < pc;
        out.count = Some(if reset { c } else { c - pc });
        if let (Some(ps), Some(s)) = (prev.sum, p.sum) {
            out.sum = Some(if reset { s } else { s - ps });
        }
    }
    if let (Some(ph), Some(h)) = (&prev.hist, &p.hist) {
        out.hist = Some(histogram_increase(prev.start, ph, p.start, h.clone()));
    }
    out
}

/// What makes a row: one run of (type, temporality) of a series in one bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Key {
    metric_type: i8,
    temporality: Option<i8>,
    start: i64,
}

/// One output row being built.
#[derive(Debug, Clone)]
struct Acc {
    key: Key,
    identity: Arc<RecordBatch>,
    points: u64,
    first_time: i64,
    last_time: i64,
    first_start: Option<i64>,
    last_start: Option<i64>,
    min: Option<f64>,
    max: Option<f64>,
    sum: Option<f64>,
    first_value: Option<f64>,
    last_value: Option<f64>,
    increase: Option<f64>,
    count: Option<u64>,
    first_count: Option<u64>,
    last_count: Option<u64>,
    hist: Option<Hist>,
    first_hist: Option<Hist>,
    last_hist: Option<Hist>,
}

fn add_f64(acc: &mut Option<f64>, v: f64) {
    *acc = Some(match *acc {
        Some(total) => total + v,
        None => v,
    });
}

fn merge_hist(acc: &mut Option<Hist>, h: &Hist) {
    match acc {
        Some(total) => total.merge(h),
        None => *acc = Some(h.clone()),
    }
}

impl Acc {
    fn new(key: Key, identity: Arc<RecordBatch>, time: i64) -> Self {
        Self {
            key,
            identity,
            points: 0,
            first_time: time,
            last_time: time,
            first_start: None,
            last_start: None,
            min: None,
            max: None,
            sum: None,
            first_value: None,
            last_value: None,
            increase: None,
            count: None,
            first_count: None,
            last_count: None,
            hist: None,
            first_hist: None,
            last_hist: None,
        }
    }

    /// Adds `p`; `step` (cumulative runs) is what `p` adds over the run's previous point,
    /// used only when that point is in this bucket too.
    fn push(&mut self, p: &RawPoint, step: Option<&Step>) {
        let first = self.points == 0;
        let step = if first { None } else { step };
        self.points += 1;
        if first {
            self.first_time = p.time;
            self.first_start = p.start;
        }
        self.last_time = p.time;
        self.last_start = p.start;
        let delta = p.is_delta();
        let min_max = |acc: &mut Self, lo: f64, hi: f64| {
            acc.min = Some(acc.min.map_or(lo, |m| m.min(lo)));
            acc.max = Some(acc.max.map_or(hi, |m| m.max(hi)));
        };
        if p.has_value() {
            let Some(v) = p.value else { return };
            min_max(self, v, v);
            add_f64(&mut self.sum, v);
            if first {
                self.first_value = Some(v);
            }
            self.last_value = Some(v);
            if p.metric_type == metric_type::SUM {
                if delta {
                    add_f64(&mut self.increase, v);
                } else {
                    // Zero with one point; then the increases between points.
                    let inc = step.and_then(|s| s.value);
                    add_f64(&mut self.increase, inc.unwrap_or(0.0));
                }
            }
            return;
        }
        // Histograms and summaries.
        if let Some(lo) = p.min {
            self.min = Some(self.min.map_or(lo, |m| m.min(lo)));
        }
        if let Some(hi) = p.max {
            self.max = Some(self.max.map_or(hi, |m| m.max(hi)));
        }
        if let Some(c) = p.count {
            let add = if delta {
                c
            } else {
                step.and_then(|s| s.count).unwrap_or(0)
            };
            self.count = Some(self.count.unwrap_or(0).saturating_add(add));
            if first {
                self.first_count = Some(c);
            }
            self.last_count = Some(c);
        }
        if delta {
            if let Some(s) = p.sum {
                add_f64(&mut self.sum, s);
            }
        } else if p.sum.is_some() {
            add_f64(&mut self.sum, step.and_then(|s| s.sum).unwrap_or(0.0));
        }
        if let Some(h) = &p.hist {
            if delta {
                merge_hist(&mut self.hist, h);
            } else if first {
                self.first_hist = Some(h.clone());
            } else {
                self.last_hist = Some(h.clone());
                if let Some(inc) = step.and_then(|s| s.hist.as_ref()) {
                    merge_hist(&mut self.hist, inc);
                } else {
                    self.hist.get_or_insert_with(Hist::default);
                }
            }
        }
    }
}

/// The series being read.
struct Current {
    series_id: u64,
    identity: Arc<RecordBatch>,
    last_time: i64,
    run: (i8, Option<i8>),
    /// The previous point of the current run.
    prev: Option<RawPoint>,
}

/// See the module docs.
pub(crate) struct Fold {
    hour_start: i64,
    current: Option<Current>,
    seen: HashSet<u64>,
    minute: Option<Acc>,
    hour: Option<Acc>,
    rows_1m: Vec<Acc>,
    rows_1h: Vec<Acc>,
    points: u64,
}

fn bucket_start(hour_start: i64, time: i64, width: i64) -> i64 {
    hour_start + (time - hour_start).div_euclid(width) * width
}

impl Fold {
    pub(super) fn new(hour_start: i64) -> Self {
        Self {
            hour_start,
            current: None,
            seen: HashSet::new(),
            minute: None,
            hour: None,
            rows_1m: Vec::new(),
            rows_1h: Vec::new(),
            points: 0,
        }
    }

    /// Points folded so far.
    pub(super) fn points(&self) -> u64 {
        self.points
    }

    /// Folds one batch of the scan (columns [`INPUT_COLUMNS`]); rows outside the hour
    /// are skipped. Fails when the input is not sorted by series, then time.
    pub(super) fn push_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let ids: &UInt64Array = column(batch, SERIES_ID)?;
        let types: &Int8Array = column(batch, METRIC_TYPE)?;
        let temporality: &Int8Array = column(batch, AGGREGATION_TEMPORALITY)?;
        let starts: &TimestampNanosecondArray = column(batch, START_TIME)?;
        let times: &TimestampNanosecondArray = column(batch, TIME)?;
        let doubles: &Float64Array = column(batch, VALUE_DOUBLE)?;
        let ints: &arrow::array::Int64Array = column(batch, VALUE_INT)?;
        let counts: &UInt64Array = column(batch, COUNT)?;
        let sums: &Float64Array = column(batch, SUM)?;
        let mins: &Float64Array = column(batch, MIN)?;
        let maxs: &Float64Array = column(batch, MAX)?;
        let hists = HistColumns::new(batch)?;
        let identity_columns = IDENTITY
            .iter()
            .map(|name| batch.schema().index_of(name))
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::Execution(format!("rollup input: {e}")))?;
        let identity_batch = batch
            .project(&identity_columns)
            .map_err(|e| Error::Execution(format!("rollup input: {e}")))?;
        let hour_end = self.hour_start + HOUR_NS;
        let f = |a: &Float64Array, row| (!a.is_null(row)).then(|| a.value(row));
        for row in 0..batch.num_rows() {
            let time = times.value(row);
            if time < self.hour_start || time >= hour_end {
                continue;
            }
            let series_id = ids.value(row);
            match &mut self.current {
                Some(c) if c.series_id == series_id => {
                    if time < c.last_time {
                        return Err(unsorted(series_id));
                    }
                    c.last_time = time;
                }
                _ => {
                    self.end_series();
                    if !self.seen.insert(series_id) {
                        return Err(unsorted(series_id));
                    }
                    let identity =
                        take_record_batch(&identity_batch, &UInt32Array::from(vec![row as u32]))
                            .map_err(|e| Error::Execution(format!("rollup identity: {e}")))?;
                    self.current = Some(Current {
                        series_id,
                        identity: Arc::new(identity),
                        last_time: time,
                        run: (0, None),
                        prev: None,
                    });
                }
            }
            let t = types.value(row);
            let point = RawPoint {
                metric_type: t,
                temporality: (!temporality.is_null(row)).then(|| temporality.value(row)),
                start: (!starts.is_null(row)).then(|| starts.value(row)),
                time,
                value: f(doubles, row)
                    .or_else(|| (!ints.is_null(row)).then(|| ints.value(row) as f64)),
                count: (!counts.is_null(row)).then(|| counts.value(row)),
                sum: f(sums, row),
                min: f(mins, row),
                max: f(maxs, row),
                hist: hists.read(t, row),
            };
            // Range queries skip gauge and sum points without a value: so do rollups.
            if point.has_value() && point.value.is_none() {
                continue;
            }
            self.points += 1;
            let current = self.current.as_mut().expect("set above");
            let run = (point.metric_type, point.temporality);
            if current.run != run {
                current.run = run;
                current.prev = None;
            }
            let step = match (&current.prev, point.is_delta()) {
                (Some(prev), false) => Some(step(prev, &point)),
                _ => None,
            };
            let identity = std::sync::Arc::clone(&current.identity);
            self.add(Resolution::Minute, &point, step.as_ref(), &identity);
            self.add(Resolution::Hour, &point, step.as_ref(), &identity);
            self.current.as_mut().expect("set above").prev = Some(point);
        }
        Ok(())
    }

    fn add(
        &mut self,
        resolution: Resolution,
        point: &RawPoint,
        step: Option<&Step>,
        identity: &Arc<RecordBatch>,
    ) {
        let key = Key {
            metric_type: point.metric_type,
            temporality: point.temporality,
            start: bucket_start(self.hour_start, point.time, resolution.nanos()),
        };
        let (slot, rows) = match resolution {
            Resolution::Minute => (&mut self.minute, &mut self.rows_1m),
            Resolution::Hour => (&mut self.hour, &mut self.rows_1h),
        };
        if slot.as_ref().is_none_or(|acc| acc.key != key) {
            rows.extend(slot.take());
            *slot = Some(Acc::new(key, std::sync::Arc::clone(identity), point.time));
        }
        slot.as_mut().expect("set above").push(point, step);
    }

    fn end_series(&mut self) {
        self.rows_1m.extend(self.minute.take());
        self.rows_1h.extend(self.hour.take());
        self.current = None;
    }

    /// Ends the input: the last series' rows are finished.
    pub(super) fn finish(&mut self) {
        self.end_series();
    }

    /// A batch of finished rows: a full one, or with `all` whatever is left.
    pub(super) fn take_batch(
        &mut self,
        resolution: Resolution,
        all: bool,
    ) -> Result<Option<RecordBatch>> {
        let rows = match resolution {
            Resolution::Minute => &mut self.rows_1m,
            Resolution::Hour => &mut self.rows_1h,
        };
        if rows.is_empty() || (!all && rows.len() < BATCH_ROWS) {
            return Ok(None);
        }
        let take = rows.len().min(BATCH_ROWS);
        let batch: Vec<Acc> = rows.drain(..take).collect();
        to_batch(&batch).map(Some)
    }
}

fn unsorted(series_id: u64) -> Error {
    Error::Execution(format!(
        "rollup input is not sorted by series and time (series {series_id})"
    ))
}

fn hist_lists(rows: &[Acc], get: impl Fn(&Acc) -> Option<&Hist>) -> (ArrayRef, ArrayRef) {
    let item = |t| Arc::new(Field::new(LIST_ITEM, t, false));
    let mut bounds = ListBuilder::new(Float64Builder::new()).with_field(item(DataType::Float64));
    let mut counts = ListBuilder::new(UInt64Builder::new()).with_field(item(DataType::UInt64));
    for row in rows {
        match get(row) {
            Some(h) => {
                for (bound, count) in &h.buckets {
                    bounds.values().append_value(*bound);
                    // Counts and their increases are whole numbers.
                    counts.values().append_value(*count as u64);
                }
                bounds.append(true);
                counts.append(true);
            }
            None => {
                bounds.append(false);
                counts.append(false);
            }
        }
    }
    (Arc::new(bounds.finish()), Arc::new(counts.finish()))
}

/// Finished rows as a batch of [`schema`].
fn to_batch(rows: &[Acc]) -> Result<RecordBatch> {
    let schema = schema();
    // Identity: one row per series, shared by that series' rows.
    let mut sources: Vec<&RecordBatch> = Vec::new();
    let mut indices = Vec::with_capacity(rows.len());
    let mut last: Option<&Arc<RecordBatch>> = None;
    for row in rows {
        if last.is_none_or(|l| !Arc::ptr_eq(l, &row.identity)) {
            sources.push(&row.identity);
            last = Some(&row.identity);
        }
        indices.push((sources.len() - 1, 0));
    }
    let identity = |name: &str| -> Result<ArrayRef> {
        let arrays: Vec<&dyn Array> = sources
            .iter()
            .map(|b| {
                b.column_by_name(name)
                    .map(|c| c.as_ref())
                    .ok_or_else(|| Error::Execution(format!("identity without {name}")))
            })
            .collect::<Result<_>>()?;
        interleave(&arrays, &indices).map_err(|e| Error::Execution(format!("rollup rows: {e}")))
    };
    let ts = |values: Vec<Option<i64>>| -> ArrayRef {
        Arc::new(TimestampNanosecondArray::from(values).with_timezone("UTC"))
    };
    let floats = |get: fn(&Acc) -> Option<f64>| -> ArrayRef {
        Arc::new(rows.iter().map(get).collect::<Float64Array>())
    };
    let ints = |get: fn(&Acc) -> Option<u64>| -> ArrayRef {
        Arc::new(rows.iter().map(get).collect::<UInt64Array>())
    };
    let (hist_b, hist_c) = hist_lists(rows, |r| r.hist.as_ref());
    let (first_b, first_c) = hist_lists(rows, |r| r.first_hist.as_ref());
    let (last_b, last_c) = hist_lists(rows, |r| r.last_hist.as_ref());
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let name = field.name().as_str();
        let array: ArrayRef = match name {
            METRIC_TYPE => Arc::new(
                rows.iter()
                    .map(|r| Some(r.key.metric_type))
                    .collect::<Int8Array>(),
            ),
            AGGREGATION_TEMPORALITY => Arc::new(
                rows.iter()
                    .map(|r| r.key.temporality)
                    .collect::<Int8Array>(),
            ),
            TIME => ts(rows.iter().map(|r| Some(r.key.start)).collect()),
            rc::FIRST_TIME => ts(rows.iter().map(|r| Some(r.first_time)).collect()),
            rc::LAST_TIME => ts(rows.iter().map(|r| Some(r.last_time)).collect()),
            rc::POINTS => ints(|r| Some(r.points)),
            rc::FIRST_START_TIME => ts(rows.iter().map(|r| r.first_start).collect()),
            rc::LAST_START_TIME => ts(rows.iter().map(|r| r.last_start).collect()),
            rc::MIN => floats(|r| r.min),
            rc::MAX => floats(|r| r.max),
            rc::SUM => floats(|r| r.sum),
            rc::FIRST_VALUE => floats(|r| r.first_value),
            rc::LAST_VALUE => floats(|r| r.last_value),
            rc::INCREASE => floats(|r| r.increase),
            rc::COUNT => ints(|r| r.count),
            rc::FIRST_COUNT => ints(|r| r.first_count),
            rc::LAST_COUNT => ints(|r| r.last_count),
            rc::HIST_BOUNDS => std::sync::Arc::clone(&hist_b),
            rc::HIST_COUNTS => std::sync::Arc::clone(&hist_c),
            rc::FIRST_HIST_BOUNDS => std::sync::Arc::clone(&first_b),
            rc::FIRST_HIST_COUNTS => std::sync::Arc::clone(&first_c),
            rc::LAST_HIST_BOUNDS => std::sync::Arc::clone(&last_b),
            rc::LAST_HIST_COUNTS => std::sync::Arc::clone(&last_c),
            _ => identity(name)?,
        };
        columns.push(array);
    }
    RecordBatch::try_new(schema, columns).map_err(|e| Error::Execution(format!("rollup rows: {e}")))
}
