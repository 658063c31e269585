//! Downsampled metrics: 1-minute and 1-hour rollups of closed hours, computed by the query
//! side from the duplicate-free `metrics` table, read by range queries over long ranges
//! and open to SQL as the tables `metrics_1m` and `metrics_1h`.
//!
//! ```text
//!  spawn_rollup_loop ─ every interval_secs ─> run_rollups(now)
//!    hours with raw data: weft up   ─ the collector's files + live rows
//!                         cluster   ─ every node's files (manifests / snapshots) + live rows
//!    closed hour (ended > delay_secs ago) whose inputs changed since its rollup was
//!    written (fingerprint of the raw files and live rows, part of the rollup's name)
//!      ─> scan: that hour of `metrics`, sorted by (metric_name, service_name, series_id,
//!               time); weft up: per-file sorted streams merged; cluster: the dedup merge
//!      ─> fold: per series, per 1m and 1h bucket: one row (streamed, nothing collected)
//!      ─> <root>/rollups/v1/1m/<YYYY-MM-DD>/<HH>-<fingerprint>.parquet
//!         <root>/rollups/v1/1h/<YYYY-MM-DD>/<HH>-<fingerprint>.parquet
//!         (tmp + fsync + rename; readers take an hour's newest version; replaced
//!          versions are deleted after a grace period)
//!
//!  GET /api/v1/metrics/query_range (metrics::query::range)
//!    plan_sources: per hour of [start - lookback, end): the 1h rollup if the hour lies in
//!      one step bucket; else per minute the 1m rollup if the minute does; else raw points
//!    ─> raw stream + rollup streams, each sorted by (series_id, time), merged per series
//!    ─> one Engine: raw points and rollup rows add the same samples
//!    ─> "resolution": ["1h", "1m", "raw"] (the sources read), header x-weft-resolution
//! ```
//!
//! `<root>` is the collector's data directory (`weft up`) or the shared storage root (a
//! cluster). Rollups are computed from the same duplicate-free table queries read, so a
//! point stored by two replicas counts once. Any query node may compute any hour: the
//! result and the file name only depend on the raw data, so nodes racing on an hour write
//! the same file twice, which is harmless (the rename is atomic), and a file never
//! changes under a reader (see `store`).
//!
//! # Same answers as raw points
//!
//! A range query reads a rollup bucket only when the bucket lies inside one of its step
//! buckets (or inside its lookback step): a 1h rollup needs a step that is a multiple of an
//! hour and a `start` on an hour; otherwise the 1m rollup is used minute by minute where
//! the minute fits, and raw points elsewhere (e.g. the minute a step boundary falls in). A
//! rollup row carries what the engine needs to add, for that bucket, exactly what its raw
//! points would have added: the last value (gauges, cumulative sums), the sum (delta sums),
//! the first and last counter value with their start times and the increase between them
//! (rates over cumulative counters: the increase across the bucket boundary is computed
//! at query time from the previous row or raw point, resets included), and the same for
//! histogram buckets. Results equal raw results up to floating-point rounding (sums are
//! added in a different order).
//!
//! # When rollups are (not) there
//!
//! An hour is rolled up once it ended more than `delay_secs` ago. Until then, and for any
//! hour without both rollup files, queries read raw points. Points that arrive later than
//! that are in the raw table at once, but in the rollup only after the next pass notices
//! that the hour's raw files changed (a new file, e.g. from a late flush, changes the
//! fingerprint and the hour is computed again); until then a query using the rollup
//! misses them. Points that never reach a file of their hour (e.g. a collector whose WAL
//! is lost) are, of course, never rolled up. In a cluster an hour is not written while a
//! collector does not answer (its unflushed rows would be missing); it is tried again on
//! the next pass, as is an hour that failed.
//!
//! # Tables `metrics_1m` and `metrics_1h`
//!
//! One row per series, rollup bucket (`time`) and run of one metric type and temporality
//! (a series that changes them inside a bucket has one row per run). Identity columns as
//! in `metrics`: `metric_name`, `metric_unit`, `metric_type`, `aggregation_temporality`,
//! `is_monotonic`, `service_name`, `series_id`, `scope_name`, `scope_version`,
//! `resource_attributes`, `attributes`. Then:
//!
//! | column | meaning |
//! |---|---|
//! | `time` | bucket start (UTC; minute or hour) |
//! | `first_time`, `last_time` | time of the bucket's first and last point |
//! | `points` | points in the bucket (gauge and sum points without a value are skipped) |
//! | `first_start_time`, `last_start_time` | `start_time` of the first and last point |
//! | `min`, `max` | gauges, sums: of the values; histograms: of the points' `min` / `max` |
//! | `sum` | gauges, sums: of the values (delta sums: the total); histograms, summaries: delta — total of `sum`, cumulative — increase of `sum` inside the bucket |
//! | `first_value`, `last_value` | gauges, sums: the first and last value |
//! | `increase` | sums: delta — the total; cumulative — the increase from the first to the last point, resets counted from zero (add the step from the previous bucket's `last_value` for the bucket's whole increase) |
//! | `count` | histograms, summaries: delta — total count; cumulative — increase of `count` inside the bucket, as `increase` |
//! | `first_count`, `last_count` | histograms, summaries: `count` of the first and last point |
//! | `hist_bounds`, `hist_counts` | histograms: upper bounds (the last may be +Inf) and counts; delta — merged; cumulative — increase inside the bucket (null with one point) |
//! | `first_hist_bounds`, `first_hist_counts` | cumulative histograms: the first point's buckets |
//! | `last_hist_bounds`, `last_hist_counts` | cumulative histograms: the last point's buckets (null with one point: the first) |
//!
//! Histograms are stored as (upper bound, count) buckets, the form range queries merge
//! them in: explicit-bucket histograms as their bounds plus +Inf, exponential ones as the
//! bounds of their buckets (zero bucket: up to the zero threshold; negative buckets by
//! their lower edge), so two layouts in one bucket merge by bound as raw queries merge
//! them. Summaries keep `count` and `sum` only (quantiles do not merge).

mod fold;
mod plan;
mod scan;
mod store;
mod table;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use datafusion::prelude::SessionContext;
use futures::StreamExt;
use tokio::task::JoinHandle;

pub(crate) use plan::plan_sources;
pub use plan::{RollupSource, SourcePlan};
pub use store::RollupFile;
pub use table::RollupTable;

use crate::{DataSource, Error, QueryService, Result};

/// Column names of the rollup tables (besides those shared with `metrics`).
pub mod columns {
    pub const FIRST_TIME: &str = "first_time";
    pub const LAST_TIME: &str = "last_time";
    pub const POINTS: &str = "points";
    pub const FIRST_START_TIME: &str = "first_start_time";
    pub const LAST_START_TIME: &str = "last_start_time";
    pub const MIN: &str = "min";
    pub const MAX: &str = "max";
    pub const SUM: &str = "sum";
    pub const FIRST_VALUE: &str = "first_value";
    pub const LAST_VALUE: &str = "last_value";
    pub const INCREASE: &str = "increase";
    pub const COUNT: &str = "count";
    pub const FIRST_COUNT: &str = "first_count";
    pub const LAST_COUNT: &str = "last_count";
    pub const HIST_BOUNDS: &str = "hist_bounds";
    pub const HIST_COUNTS: &str = "hist_counts";
    pub const FIRST_HIST_BOUNDS: &str = "first_hist_bounds";
    pub const FIRST_HIST_COUNTS: &str = "first_hist_counts";
    pub const LAST_HIST_BOUNDS: &str = "last_hist_bounds";
    pub const LAST_HIST_COUNTS: &str = "last_hist_counts";
    /// The three histograms as (bounds, counts) pairs: inner, first, last.
    pub const HISTOGRAMS: [&str; 6] = [
        HIST_BOUNDS,
        HIST_COUNTS,
        FIRST_HIST_BOUNDS,
        FIRST_HIST_COUNTS,
        LAST_HIST_BOUNDS,
        LAST_HIST_COUNTS,
    ];
}

/// A replaced rollup version is kept at least this long (queries may still read it).
const REPLACED_GRACE: Duration = Duration::from_secs(600);

pub(crate) const MINUTE_NS: i64 = 60_000_000_000;
pub(crate) const HOUR_NS: i64 = 3_600_000_000_000;

/// A rollup's bucket width.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resolution {
    Minute,
    Hour,
}

impl Resolution {
    /// Coarsest first.
    pub const ALL: [Resolution; 2] = [Resolution::Hour, Resolution::Minute];

    pub fn nanos(self) -> i64 {
        match self {
            Resolution::Minute => MINUTE_NS,
            Resolution::Hour => HOUR_NS,
        }
    }

    /// `1m`, `1h`: in paths and in a range query's `resolution`.
    pub fn name(self) -> &'static str {
        match self {
            Resolution::Minute => "1m",
            Resolution::Hour => "1h",
        }
    }

    /// The SQL table.
    pub fn table_name(self) -> &'static str {
        match self {
            Resolution::Minute => "metrics_1m",
            Resolution::Hour => "metrics_1h",
        }
    }
}

/// What one pass of [`run_rollups`] did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RollupStats {
    /// Closed hours that have raw data.
    pub closed_hours: usize,
    /// Hours whose rollups were (re)computed and written.
    pub hours_written: usize,
    /// Hours whose rollups were up to date.
    pub hours_current: usize,
    /// Hours not written because a collector did not answer (tried again next pass).
    pub hours_partial: usize,
    /// Hours that failed (logged; tried again next pass).
    pub hours_failed: usize,
    /// Raw points read.
    pub points: u64,
    /// Rows written to 1m and 1h files.
    pub rows_1m: u64,
    pub rows_1h: u64,
    /// Bytes of the files written.
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Where rollup files of `service` live: `<root>/rollups/v1`.
pub(crate) fn files_of(service: &QueryService) -> store::RollupFiles {
    let root = match service.source() {
        DataSource::Local(store) => store.data_dir().to_path_buf(),
        DataSource::Cluster(source) => source.local_root().to_path_buf(),
    };
    store::RollupFiles::new(&root)
}

/// One pass: every closed hour with raw data whose rollups are missing or were computed
/// from other inputs is rolled up (newest first). An hour that fails is logged and
/// counted; the pass goes on with the others.
pub async fn run_rollups(service: &QueryService, now: SystemTime) -> Result<RollupStats> {
    let began = Instant::now();
    let mut stats = RollupStats::default();
    let now_ns = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|_| Error::BadRequest("now is before 1970".into()))?
        .as_nanos();
    let now_ns = i64::try_from(now_ns).unwrap_or(i64::MAX);
    let delay_ns = i64::try_from(service.config().rollups.delay_secs)
        .unwrap_or(i64::MAX / 1_000_000_000)
        .saturating_mul(1_000_000_000);
    // Hour h is closed when (h + 1) * HOUR + delay <= now.
    let last_closed = (now_ns.saturating_sub(delay_ns)).div_euclid(HOUR_NS) - 1;
    let files = files_of(service);
    let hours: BTreeMap<i64, String> = scan::closed_hours(service, last_closed).await?;
    stats.closed_hours = hours.len();
    // The fingerprints of the current rollups, one listing per resolution.
    let written: Vec<BTreeMap<i64, String>> = match (hours.keys().next(), hours.keys().last()) {
        (Some(&first), Some(&last)) => {
            let files = files.clone();
            tokio::task::spawn_blocking(move || {
                Resolution::ALL
                    .iter()
                    .map(|&res| {
                        files
                            .list(res, Some((first, last)))
                            .into_iter()
                            .map(|f| (f.hour, f.fingerprint))
                            .collect()
                    })
                    .collect()
            })
            .await
            .map_err(|e| Error::Execution(format!("listing rollups: {e}")))?
        }
        _ => Vec::new(),
    };
    for (&hour, fingerprint) in hours.iter().rev() {
        if written.iter().all(|w| w.get(&hour) == Some(fingerprint)) {
            stats.hours_current += 1;
            continue;
        }
        match roll_up_hour(service, &files, hour, fingerprint).await {
            Ok(Some(hour_stats)) => {
                stats.hours_written += 1;
                stats.points += hour_stats.points;
                stats.rows_1m += hour_stats.rows_1m;
                stats.rows_1h += hour_stats.rows_1h;
                stats.bytes += hour_stats.bytes;
            }
            Ok(None) => stats.hours_partial += 1,
            Err(e) => {
                tracing::warn!(hour = %store::hour_label(hour), error = %e, "rollup failed");
                stats.hours_failed += 1;
            }
        }
    }
    // Replaced versions go once no query that may have listed them can still run.
    let grace = REPLACED_GRACE.max(Duration::from_secs(
        service.config().timeout_secs.saturating_mul(2),
    ));
    let keep = [
        (Resolution::Minute, service.config().rollups.keep_1m_hours),
        (Resolution::Hour, service.config().rollups.keep_1h_hours),
    ];
    let cleanup = move || {
        files.remove_stale(SystemTime::now(), grace);
        for (resolution, hours) in keep {
            if hours > 0 {
                let keep = Duration::from_secs(hours.saturating_mul(3600));
                // The pass's own clock, as for which hours are closed.
                files.drop_expired(resolution, keep, now);
            }
        }
    };
    if let Err(e) = tokio::task::spawn_blocking(cleanup).await {
        tracing::debug!(error = %e, "rollup temporary cleanup task failed");
    }
    stats.elapsed = began.elapsed();
    Ok(stats)
}

/// Figures of one hour.
#[derive(Debug, Default)]
struct HourStats {
    points: u64,
    rows_1m: u64,
    rows_1h: u64,
    bytes: u64,
}

/// Computes and writes the 1m and 1h rollups of `hour` (hours since 1970). `None`: not
/// written because the data was partial (a collector did not answer).
async fn roll_up_hour(
    service: &QueryService,
    files: &store::RollupFiles,
    hour: i64,
    fingerprint: &str,
) -> Result<Option<HourStats>> {
    let mut minute =
        store::HourWriter::create(files, Resolution::Minute, hour, fingerprint).await?;
    let mut hourly = store::HourWriter::create(files, Resolution::Hour, hour, fingerprint).await?;
    let work = async {
        let ctx = service.session()?;
        let streams = scan::hour_streams(service, &ctx, hour).await?;
        let mut fold = fold::Fold::new(hour * HOUR_NS);
        for mut stream in streams {
            while let Some(batch) = stream.next().await {
                fold.push_batch(&batch?)?;
                write_ready(&mut fold, &mut minute, &mut hourly, false).await?;
            }
        }
        fold.finish();
        write_ready(&mut fold, &mut minute, &mut hourly, true).await?;
        Ok::<_, Error>(fold.points())
    };
    let (outcome, warnings) = crate::warnings::collect(work).await;
    let points = match outcome {
        Ok(points) if warnings.is_empty() => points,
        Ok(_) => {
            tracing::info!(hour = %store::hour_label(hour), warnings = ?warnings, "rollup postponed: partial data");
            minute.abort().await;
            hourly.abort().await;
            return Ok(None);
        }
        Err(e) => {
            minute.abort().await;
            hourly.abort().await;
            return Err(e);
        }
    };
    let rows_1m = minute.rows();
    let rows_1h = hourly.rows();
    // The hour is complete once both are renamed into place; a crash between leaves the
    // hour incomplete, so it is computed again.
    let bytes = minute.commit().await? + hourly.commit().await?;
    tracing::debug!(hour = %store::hour_label(hour), points, rows_1m, rows_1h, bytes, "rolled up");
    Ok(Some(HourStats {
        points,
        rows_1m,
        rows_1h,
        bytes,
    }))
}

async fn write_ready(
    fold: &mut fold::Fold,
    minute: &mut store::HourWriter,
    hourly: &mut store::HourWriter,
    all: bool,
) -> Result<()> {
    while let Some(batch) = fold.take_batch(Resolution::Minute, all)? {
        minute.write(&batch).await?;
    }
    while let Some(batch) = fold.take_batch(Resolution::Hour, all)? {
        hourly.write(&batch).await?;
    }
    Ok(())
}

/// Runs [`run_rollups`] every `rollups.interval_secs` (the first pass at once) until the
/// handle is aborted; does nothing when rollups are disabled. Aborting mid-pass is safe:
/// files are renamed into place only when complete (leftover temporaries are removed by
/// later passes).
///
/// Runs on the query runtime ([`crate::bulkhead`]), away from ingest, without a query slot.
pub fn spawn_rollup_loop(service: Arc<QueryService>) -> JoinHandle<()> {
    let runner = std::sync::Arc::clone(&service);
    runner.bulkhead().spawn(async move {
        let config = service.config().rollups.clone();
        if !config.enabled {
            return;
        }
        let mut ticker = tokio::time::interval(Duration::from_secs(config.interval_secs.max(1)));
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            match run_rollups(&service, SystemTime::now()).await {
                Ok(stats) if stats.hours_written > 0 || stats.hours_failed > 0 => {
                    tracing::info!(
                        written = stats.hours_written,
                        failed = stats.hours_failed,
                        partial = stats.hours_partial,
                        points = stats.points,
                        rows_1m = stats.rows_1m,
                        rows_1h = stats.rows_1h,
                        bytes = stats.bytes,
                        elapsed_ms = stats.elapsed.as_millis() as u64,
                        "metrics rollup pass"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "metrics rollup pass failed"),
            }
        }
    })
}

/// Registers `metrics_1m` and `metrics_1h` in a session (no I/O: files are listed when a
/// query scans them).
pub fn register(ctx: &SessionContext, service: &QueryService) -> Result<()> {
    for resolution in Resolution::ALL {
        ctx.register_table(
            resolution.table_name(),
            Arc::new(RollupTable::new(service, resolution)),
        )?;
    }
    Ok(())
}
