//! The two latency scans and the shapes they produce.
//!
//! ```text
//!  OpsWorker     (no service):  (service, operation) ─> count, errors, sketch
//!  ReportWorker  (one service, `service_name = s` pushed into Parquet):
//!      every operation of s ─> count, errors, sketch             (slowest operations)
//!      rows of the selected operation (all when none):
//!          ─> overall count, errors, sketch
//!          ─> step (start_time − start) / step ─> count, errors, sketch   (series)
//!          ─> power of two of the duration ─> slowest trace ids            (exemplars)
//! ```
//!
//! Every worker handles one partition; the outputs merge by adding counts and sketches.

use std::sync::Arc;

use arrow::array::{
    FixedSizeBinaryArray, Float64Array, Int8Array, Int64Array, RecordBatch,
    TimestampNanosecondArray,
};
use serde::Serialize;
use weft_schemas::columns::{
    DURATION_NS, SAMPLE_WEIGHT, SERVICE_NAME, SPAN_NAME, START_TIME, STATUS_CODE, TRACE_ID,
};

use crate::Result;
use crate::span_scan::examples::Examples;
use crate::span_scan::sketch::LogSketch;
use crate::span_scan::{IdMap, Interner, NameIds, STATUS_ERROR, TimeRange, Worker, column, typed};

/// Columns of the operations table.
pub(super) const OPS_COLUMNS: [&str; 5] = [
    SERVICE_NAME,
    SPAN_NAME,
    DURATION_NS,
    STATUS_CODE,
    SAMPLE_WEIGHT,
];
/// Columns of a service report.
pub(super) const REPORT_COLUMNS: [&str; 7] = [
    SERVICE_NAME,
    SPAN_NAME,
    DURATION_NS,
    STATUS_CODE,
    SAMPLE_WEIGHT,
    START_TIME,
    TRACE_ID,
];

/// How many operations a service report lists as slowest.
const SLOWEST: usize = 20;
/// Power-of-two histogram buckets: zero, then `[2^k, 2^(k+1))` for k = 0..=62.
const OCTAVES: usize = 64;

/// Weighted count, errors and durations of a set of spans.
#[derive(Debug, Clone, Default)]
pub(super) struct Stats {
    count: f64,
    errors: f64,
    sketch: LogSketch,
}

impl Stats {
    #[inline]
    fn add(&mut self, duration: i64, weight: f64, error: bool) {
        self.count += weight;
        if error {
            self.errors += weight;
        }
        self.sketch.add(duration, weight);
    }

    fn merge(&mut self, other: &Stats) {
        self.count += other.count;
        self.errors += other.errors;
        self.sketch.merge(&other.sketch);
    }

    fn error_rate(&self) -> f64 {
        if self.count > 0.0 {
            self.errors / self.count
        } else {
            0.0
        }
    }
}

/// The per-row columns both workers read.
struct Rows {
    duration: Int64Array,
    status: Int8Array,
    weight: Float64Array,
}

impl Rows {
    fn new(batch: &RecordBatch) -> Result<Self> {
        Ok(Self {
            duration: typed(batch, DURATION_NS)?,
            status: typed(batch, STATUS_CODE)?,
            weight: typed(batch, SAMPLE_WEIGHT)?,
        })
    }
}

/// Stats per (service, operation) of one partition.
pub(super) struct OpsWorker {
    names: Interner,
    services: NameIds,
    operations: NameIds,
    service_ids: Vec<u32>,
    operation_ids: Vec<u32>,
    groups: IdMap<(u32, u32), Stats>,
}

impl OpsWorker {
    pub(super) fn new() -> Self {
        Self {
            names: Interner::default(),
            services: NameIds::default(),
            operations: NameIds::default(),
            service_ids: Vec::new(),
            operation_ids: Vec::new(),
            groups: IdMap::default(),
        }
    }
}

pub(super) type OpsOutput = Vec<((Arc<str>, Arc<str>), Stats)>;

impl Worker for OpsWorker {
    type Output = OpsOutput;

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = Rows::new(batch)?;
        self.services.ids(
            column(batch, SERVICE_NAME)?,
            &mut self.names,
            &mut self.service_ids,
        )?;
        self.operations.ids(
            column(batch, SPAN_NAME)?,
            &mut self.names,
            &mut self.operation_ids,
        )?;
        for i in 0..batch.num_rows() {
            let key = (self.service_ids[i], self.operation_ids[i]);
            self.groups.entry(key).or_default().add(
                rows.duration.value(i),
                rows.weight.value(i),
                rows.status.value(i) == STATUS_ERROR,
            );
        }
        Ok(())
    }

    fn finish(self) -> Result<OpsOutput> {
        let names = &self.names;
        Ok(self
            .groups
            .into_iter()
            .map(|((s, o), stats)| {
                (
                    (
                        std::sync::Arc::clone(names.name(s)),
                        std::sync::Arc::clone(names.name(o)),
                    ),
                    stats,
                )
            })
            .collect())
    }
}

/// Merges operation stats of every partition.
pub(super) fn merge_ops(outputs: Vec<OpsOutput>) -> OpsOutput {
    let mut all: std::collections::BTreeMap<(Arc<str>, Arc<str>), Stats> = Default::default();
    for output in outputs {
        for (key, stats) in output {
            all.entry(key).or_default().merge(&stats);
        }
    }
    all.into_iter().collect()
}

/// One row of the operations table.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct OperationStats {
    pub service: String,
    pub operation: String,
    /// Weighted number of spans.
    pub count: f64,
    pub rate_per_sec: f64,
    pub errors: f64,
    pub error_rate: f64,
    pub p50_ns: Option<i64>,
    pub p90_ns: Option<i64>,
    pub p95_ns: Option<i64>,
    pub p99_ns: Option<i64>,
    /// Exact.
    pub max_ns: Option<i64>,
}

pub(super) fn operation_stats(
    service: &str,
    operation: &str,
    stats: &Stats,
    range: TimeRange,
) -> OperationStats {
    let q = |q| stats.sketch.quantile(q);
    OperationStats {
        service: service.to_owned(),
        operation: operation.to_owned(),
        count: stats.count,
        rate_per_sec: stats.count / range.seconds(),
        errors: stats.errors,
        error_rate: stats.error_rate(),
        p50_ns: q(0.5),
        p90_ns: q(0.9),
        p95_ns: q(0.95),
        p99_ns: q(0.99),
        max_ns: stats.sketch.max(),
    }
}

/// What a service report is asked for.
#[derive(Debug, Clone)]
pub(super) struct ReportSpec {
    pub service: String,
    pub operation: Option<String>,
    pub range: TimeRange,
    pub step_ns: i64,
    pub steps: usize,
}

/// One partition's share of a service report.
pub(super) struct ReportWorker {
    spec: Arc<ReportSpec>,
    names: Interner,
    services: NameIds,
    operations: NameIds,
    service_ids: Vec<u32>,
    operation_ids: Vec<u32>,
    service: u32,
    operation: Option<u32>,
    by_operation: IdMap<u32, Stats>,
    overall: Stats,
    steps: Vec<Stats>,
    exemplars: Vec<Examples>,
}

impl ReportWorker {
    pub(super) fn new(spec: Arc<ReportSpec>) -> Self {
        let mut names = Interner::default();
        let service = names.intern(&spec.service);
        let operation = spec.operation.as_deref().map(|o| names.intern(o));
        let steps = vec![Stats::default(); spec.steps];
        Self {
            spec,
            names,
            services: NameIds::default(),
            operations: NameIds::default(),
            service_ids: Vec::new(),
            operation_ids: Vec::new(),
            service,
            operation,
            by_operation: IdMap::default(),
            overall: Stats::default(),
            steps,
            exemplars: vec![Examples::default(); OCTAVES],
        }
    }
}

/// Index of the power-of-two bucket of a duration (0 holds zero and negatives).
#[inline]
fn octave_index(duration: i64) -> usize {
    if duration <= 0 {
        0
    } else {
        64 - (duration as u64).leading_zeros() as usize
    }
}

pub(super) struct ReportOutput {
    by_operation: Vec<(Arc<str>, Stats)>,
    overall: Stats,
    steps: Vec<Stats>,
    exemplars: Vec<Examples>,
}

impl Worker for ReportWorker {
    type Output = ReportOutput;

    fn batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let rows = Rows::new(batch)?;
        let start: TimestampNanosecondArray = typed(batch, START_TIME)?;
        let trace: FixedSizeBinaryArray = typed(batch, TRACE_ID)?;
        self.services.ids(
            column(batch, SERVICE_NAME)?,
            &mut self.names,
            &mut self.service_ids,
        )?;
        self.operations.ids(
            column(batch, SPAN_NAME)?,
            &mut self.names,
            &mut self.operation_ids,
        )?;
        let spec = &self.spec;
        for i in 0..batch.num_rows() {
            // Parquet rows are already filtered by service; live rows are not.
            if self.service_ids[i] != self.service {
                continue;
            }
            let operation = self.operation_ids[i];
            let duration = rows.duration.value(i);
            let weight = rows.weight.value(i);
            let error = rows.status.value(i) == STATUS_ERROR;
            self.by_operation
                .entry(operation)
                .or_default()
                .add(duration, weight, error);
            if self.operation.is_some_and(|o| o != operation) {
                continue;
            }
            self.overall.add(duration, weight, error);
            let step = ((start.value(i) - spec.range.start_ns) / spec.step_ns) as usize;
            if let Some(stats) = self.steps.get_mut(step) {
                stats.add(duration, weight, error);
            }
            let mut id = [0u8; 16];
            id.copy_from_slice(trace.value(i));
            self.exemplars[octave_index(duration)].offer(duration, &id);
        }
        Ok(())
    }

    fn finish(self) -> Result<ReportOutput> {
        let names = &self.names;
        Ok(ReportOutput {
            by_operation: self
                .by_operation
                .into_iter()
                .map(|(o, stats)| (std::sync::Arc::clone(names.name(o)), stats))
                .collect(),
            overall: self.overall,
            steps: self.steps,
            exemplars: self.exemplars,
        })
    }
}

/// The latency of one service (or one of its operations) over one window.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct LatencyReport {
    pub start_ns: i64,
    pub end_ns: i64,
    /// Weighted number of spans.
    pub count: f64,
    pub rate_per_sec: f64,
    pub errors: f64,
    pub error_rate: f64,
    /// `null` when there are no spans.
    pub latency_ns: Option<Quantiles>,
    /// Power-of-two buckets between the fastest and the slowest span.
    pub histogram: Vec<HistogramBucket>,
    /// One point per step, empty steps included.
    pub series: Vec<StepPoint>,
    /// The service's operations by descending p99 (at most 20), whatever `operation` is.
    pub slowest_operations: Vec<OperationStats>,
}

/// Weighted percentiles (relative error ≤ 1/128) and the exact extremes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct Quantiles {
    pub p50: i64,
    pub p90: i64,
    pub p95: i64,
    pub p99: i64,
    pub max: i64,
    pub min: i64,
}

impl Quantiles {
    fn of(sketch: &LogSketch) -> Option<Self> {
        Some(Self {
            p50: sketch.quantile(0.5)?,
            p90: sketch.quantile(0.9)?,
            p95: sketch.quantile(0.95)?,
            p99: sketch.quantile(0.99)?,
            max: sketch.max()?,
            min: sketch.min()?,
        })
    }
}

/// Spans with a duration in `[lower_ns, upper_ns)`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct HistogramBucket {
    pub lower_ns: i64,
    pub upper_ns: i64,
    pub count: f64,
    /// Up to three traces of the slowest spans in the bucket (hex).
    pub exemplar_trace_ids: Vec<String>,
}

/// One step of the series: spans starting in `[start_ns, start_ns + step)`.
#[derive(Debug, Clone, PartialEq, Serialize, ts_rs::TS)]
pub struct StepPoint {
    pub start_ns: i64,
    pub count: f64,
    pub errors: f64,
    pub p50_ns: Option<i64>,
    pub p95_ns: Option<i64>,
    pub p99_ns: Option<i64>,
}

/// Merges the partitions of a service report and shapes it.
pub(super) fn build_report(spec: &ReportSpec, outputs: Vec<ReportOutput>) -> LatencyReport {
    let mut by_operation: std::collections::BTreeMap<Arc<str>, Stats> = Default::default();
    let mut overall = Stats::default();
    let mut steps = vec![Stats::default(); spec.steps];
    let mut exemplars = vec![Examples::default(); OCTAVES];
    for output in outputs {
        for (operation, stats) in output.by_operation {
            by_operation.entry(operation).or_default().merge(&stats);
        }
        overall.merge(&output.overall);
        for (all, part) in steps.iter_mut().zip(&output.steps) {
            all.merge(part);
        }
        for (all, part) in exemplars.iter_mut().zip(&output.exemplars) {
            all.merge(part);
        }
    }
    let range = spec.range;
    let mut slowest: Vec<OperationStats> = by_operation
        .iter()
        .map(|(operation, stats)| operation_stats(&spec.service, operation, stats, range))
        .collect();
    slowest.sort_by(|a, b| {
        b.p99_ns
            .cmp(&a.p99_ns)
            .then(b.count.total_cmp(&a.count))
            .then_with(|| a.operation.cmp(&b.operation))
    });
    slowest.truncate(SLOWEST);
    let histogram = overall
        .sketch
        .octaves()
        .into_iter()
        .map(|(lower, upper, count)| HistogramBucket {
            lower_ns: lower,
            upper_ns: upper,
            count,
            exemplar_trace_ids: exemplars[octave_index(lower)].hex(),
        })
        .collect();
    let series = steps
        .iter()
        .enumerate()
        .map(|(i, stats)| StepPoint {
            start_ns: range.start_ns + i as i64 * spec.step_ns,
            count: stats.count,
            errors: stats.errors,
            p50_ns: stats.sketch.quantile(0.5),
            p95_ns: stats.sketch.quantile(0.95),
            p99_ns: stats.sketch.quantile(0.99),
        })
        .collect();
    LatencyReport {
        start_ns: range.start_ns,
        end_ns: range.end_ns,
        count: overall.count,
        rate_per_sec: overall.count / range.seconds(),
        errors: overall.errors,
        error_rate: overall.error_rate(),
        latency_ns: Quantiles::of(&overall.sketch),
        histogram,
        series,
        slowest_operations: slowest,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::span_scan::sketch::octave_of;

    #[test]
    fn octave_index_agrees_with_the_sketch_octaves() {
        for d in [0i64, 1, 2, 3, 4, 1023, 1024, 1 << 40, i64::MAX] {
            let (lower, _) = octave_of(d);
            assert_eq!(octave_index(d), octave_index(lower), "{d}");
        }
        assert_eq!(octave_index(-3), 0);
        assert_eq!(octave_index(1), 1);
        assert_eq!(octave_index(i64::MAX), 63);
    }
}
