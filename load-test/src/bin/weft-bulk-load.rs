//! `weft-bulk-load`: writes generated traces straight through Weft's storage writer into a
//! fresh data directory (and, with `--storage-url`, a bucket), for benchmarks that need
//! many stored spans fast. See `weft_load_test::bulk`.
//!
//! ```sh
//! weft-bulk-load --data-dir /tmp/weft-100m --spans 100000000 --hours 48
//! weft up --data-dir /tmp/weft-100m          # serves them
//! ```

// A binary: its output is what it prints.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use weft_load_test::bulk::{BulkConfig, load, open_store};

/// Write generated traces as stored Parquet files, no server involved.
#[derive(Debug, Parser)]
#[command(name = "weft-bulk-load", version)]
struct Args {
    /// Data directory a `weft up` (or collector) will then open; must hold no WAL.
    #[arg(long)]
    data_dir: PathBuf,
    /// `storage.url` for the files (s3://bucket/prefix, ...); default: the data directory.
    #[arg(long, default_value = "")]
    storage_url: String,
    /// Node prefix in the storage (`nodes/<id>` for a cluster collector).
    #[arg(long, default_value = "")]
    prefix: String,
    #[arg(long, default_value_t = 1_000_000)]
    spans: u64,
    /// Span times are spread over this many hours before now.
    #[arg(long, default_value_t = 24)]
    hours: u64,
    #[arg(long, default_value_t = 4_096)]
    batch_spans: usize,
    /// Spans held in memory before they are flushed to files.
    #[arg(long, default_value_t = 2_000_000)]
    flush_spans: u64,
    #[arg(long, default_value_t = 20)]
    services: usize,
    #[arg(long, default_value_t = 16)]
    seed: u64,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::ensure!(
        !args.data_dir.join("wal").exists(),
        "{} already has a WAL: bulk loads go into a fresh data directory",
        args.data_dir.display()
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let storage = weft_storage::StorageConfig {
        url: args.storage_url.clone(),
        ..weft_storage::StorageConfig::default()
    };
    let objects = weft_storage::ObjectStorage::open(&storage, &args.data_dir)?;
    let store = open_store(&args.data_dir, Some(objects), &args.prefix)?;
    let report = load(
        &store,
        &BulkConfig {
            spans: args.spans,
            batch_spans: args.batch_spans,
            flush_spans: args.flush_spans,
            services: args.services,
            seed: args.seed,
            hours: args.hours,
            ..BulkConfig::default()
        },
    )?;
    println!(
        "wrote {} spans in {} files, {} bytes ({:.1} bytes/span) in {:.1} s: {:.0} spans/s",
        report.spans,
        report.files,
        report.bytes,
        report.bytes_per_span(),
        report.elapsed.as_secs_f64(),
        report.spans_per_second()
    );
    Ok(())
}
