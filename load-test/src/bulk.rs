//! The bulk loader: realistic stored data written straight through Weft's storage writer,
//! with no network, WAL or server in between, so benchmarks can start from 100 million
//! spans in minutes.
//!
//! ```text
//!  TraceGenerator ─request─> spans::from_otlp ─Arrow batch─> Store::apply_durable
//!        (times spread over `hours` hours before now)          │ every `flush_spans`
//!                                                              ▼
//!                                     Store::flush ─> Parquet + trace-ID filters + manifest
//!                                                     in the data dir or `storage.url`
//! ```
//!
//! The result is what a collector with that data would have committed: a server started on
//! the same data directory (and `storage.url`) serves it. Rows are not in any WAL, so it
//! must be a fresh directory (the manifest's flush marks are the loader's own).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use weft_schemas::Table;
use weft_storage::Store;

use crate::TraceGenerator;

/// What to write.
#[derive(Debug, Clone)]
pub struct BulkConfig {
    /// Spans to write (whole traces, so a little more).
    pub spans: u64,
    /// Spans per generated batch.
    pub batch_spans: usize,
    /// Spans held before a flush writes them as files.
    pub flush_spans: u64,
    pub services: usize,
    pub error_rate: f64,
    pub seed: u64,
    /// Span times are spread evenly over this many hours before now (at least 1).
    pub hours: u64,
}

impl Default for BulkConfig {
    fn default() -> Self {
        Self {
            spans: 1_000_000,
            batch_spans: 4_096,
            flush_spans: 2_000_000,
            services: 20,
            error_rate: 0.02,
            seed: 16,
            hours: 24,
        }
    }
}

/// Figures of one bulk load.
#[derive(Debug, Clone, Default)]
pub struct BulkReport {
    pub spans: u64,
    pub files: usize,
    pub bytes: u64,
    pub elapsed: Duration,
}

impl BulkReport {
    pub fn spans_per_second(&self) -> f64 {
        self.spans as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn bytes_per_span(&self) -> f64 {
        self.bytes as f64 / (self.spans.max(1)) as f64
    }
}

/// Writes `config.spans` generated spans into `store` (blocking; run it on a blocking
/// thread or outside a runtime).
pub fn load(store: &Store, config: &BulkConfig) -> anyhow::Result<BulkReport> {
    let started = Instant::now();
    let mut generator = TraceGenerator::new(config.services, config.error_rate, config.seed);
    let now_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let span_ns = config.hours.max(1) * 3_600_000_000_000;
    let batches = config
        .spans
        .div_ceil(config.batch_spans.max(1) as u64)
        .max(1);
    let mut report = BulkReport::default();
    let mut held = 0u64;
    // Sequence numbers stand in for WAL records: the manifest's flush marks need them.
    let mut seq = store.durable_seq();
    for batch_index in 0..batches {
        if report.spans >= config.spans {
            break;
        }
        let mut request = generator.next_request(config.batch_spans.max(1));
        // Batch k of n lands `(n - k) / n` of the span before now, so hours fill evenly.
        let shift = span_ns - span_ns * batch_index / batches;
        let generated_at = now_ns;
        for resource in &mut request.resource_spans {
            for scope in &mut resource.scope_spans {
                for span in &mut scope.spans {
                    let age = generated_at.saturating_sub(span.start_time_unix_nano);
                    let duration = span
                        .end_time_unix_nano
                        .saturating_sub(span.start_time_unix_nano);
                    span.start_time_unix_nano = now_ns.saturating_sub(shift + age);
                    span.end_time_unix_nano = span.start_time_unix_nano + duration;
                }
            }
        }
        let converted = weft_schemas::spans::from_otlp(&request);
        anyhow::ensure!(
            converted.rejected == 0,
            "generated spans were rejected: {:?}",
            converted.rejection_message
        );
        let rows = converted.batch.num_rows() as u64;
        seq += 1;
        store.apply_durable(vec![(seq, (Table::Spans, converted.batch))]);
        report.spans += rows;
        held += rows;
        if held >= config.flush_spans {
            flush_all(store, &mut report)?;
            held = 0;
        }
    }
    flush_all(store, &mut report)?;
    report.elapsed = started.elapsed();
    Ok(report)
}

fn flush_all(store: &Store, report: &mut BulkReport) -> anyhow::Result<()> {
    // A flush takes at most `max_partitions_per_flush` hours: repeat until nothing is live.
    while store.live_status(Table::Spans).0 > 0 {
        let stats = store.flush(Table::Spans)?;
        report.files += stats.files;
        report.bytes += stats.bytes;
    }
    Ok(())
}

/// Opens the store a collector would open on `data_dir` with `objects` (`None`: the data
/// directory itself), for [`load`].
pub fn open_store(
    data_dir: &std::path::Path,
    objects: Option<Arc<weft_storage::ObjectStorage>>,
    prefix: &str,
) -> anyhow::Result<Store> {
    let options = weft_storage::StoreOptions {
        tenant: "default".into(),
        parquet: weft_schemas::parquet_settings::ParquetSettings::default(),
        max_file_rows: 4_000_000,
        max_partitions_per_flush: 32,
        incidents: Arc::new(weft_storage::incidents::Incidents::open(data_dir)?),
        telemetry: weft_telemetry::Telemetry::new(),
        row_source: None,
        objects,
        prefix: prefix.to_owned(),
    };
    Ok(Store::open(data_dir, options)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bulk_load_commits_every_span_across_the_hours() {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path(), None, "").unwrap();
        let config = BulkConfig {
            spans: 20_000,
            batch_spans: 1_000,
            flush_spans: 7_000,
            hours: 5,
            ..BulkConfig::default()
        };
        let report = load(&store, &config).unwrap();
        assert!(report.spans >= 20_000);
        let files = store.snapshot(Table::Spans).files;
        assert_eq!(files.len(), report.files);
        assert_eq!(files.iter().map(|f| f.rows).sum::<u64>(), report.spans);
        let hours: std::collections::BTreeSet<i64> = files
            .iter()
            .map(|f| f.min_time_ns.div_euclid(3_600_000_000_000))
            .collect();
        assert!(hours.len() >= 5, "spread over the hours: {hours:?}");
        drop(store);
        // What a server would open: the same rows.
        let store = open_store(dir.path(), None, "").unwrap();
        let rows: u64 = store
            .snapshot(Table::Spans)
            .files
            .iter()
            .map(|f| f.rows)
            .sum();
        assert_eq!(rows, report.spans);
    }
}
