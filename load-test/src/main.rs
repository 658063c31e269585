//! `weft-load`: command-line front end of [`weft_load_test`].
//!
//! Parses flags into a [`LoadConfig`], runs the load (or `--dry-run`), prints
//! the human-readable report to stdout and optionally writes it as JSON.

// A binary: its output is what it prints.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use weft_load_test::{LoadConfig, Protocol, dry_run, run, time_seed};

/// Send realistic multi-service OTLP traces to a Weft server (or any OTLP
/// receiver) and report throughput, export latency and server cost.
#[derive(Debug, Parser)]
#[command(name = "weft-load", version)]
struct Args {
    /// OTLP transport.
    #[arg(long, value_enum, default_value_t = Protocol::Grpc)]
    protocol: Protocol,
    /// Receiver URL [default: http://127.0.0.1:4317 for grpc,
    /// http://127.0.0.1:4318 for http-*; HTTP posts to {endpoint}/v1/traces].
    #[arg(long)]
    endpoint: Option<String>,
    /// Gzip-compress requests.
    #[arg(long)]
    gzip: bool,
    /// Target spans per second; 0 = as fast as the server acknowledges.
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Seconds to send for.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Stop after this many spans (whichever of this and --duration first).
    #[arg(long)]
    max_spans: Option<u64>,
    /// Export requests in flight at most.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Spans per export request (whole traces, so approximately).
    #[arg(long, default_value_t = 500)]
    batch_spans: usize,
    /// Services in the simulated shop (12 hand-written; more adds generic ones).
    #[arg(long, default_value_t = 10)]
    services: usize,
    /// Fraction of traces that fail.
    #[arg(long, default_value_t = 0.01)]
    error_rate: f64,
    /// Generator seed [default: derived from the clock].
    #[arg(long)]
    seed: Option<u64>,
    /// Also export a counter and a histogram per service pod every second.
    #[arg(long)]
    metrics: bool,
    /// No progress bar.
    #[arg(long, short)]
    quiet: bool,
    /// Seconds before one export attempt times out.
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Retries of one export after back-pressure or transient errors.
    #[arg(long, default_value_t = 5)]
    max_retries: u32,
    /// Pid of the server process: report its CPU time per accepted span and peak RSS (Linux).
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    report_json: Option<PathBuf>,
    /// Only generate and encode for --duration, send nothing, and print the generation rate.
    #[arg(long)]
    dry_run: bool,
}

fn seconds(name: &str, v: f64) -> anyhow::Result<Duration> {
    Duration::try_from_secs_f64(v)
        .ok()
        .filter(|d| !d.is_zero())
        .with_context(|| format!("--{name} must be a positive number of seconds"))
}

impl Args {
    fn config(&self) -> anyhow::Result<LoadConfig> {
        Ok(LoadConfig {
            endpoint: self
                .endpoint
                .clone()
                .unwrap_or_else(|| self.protocol.default_endpoint().to_owned()),
            protocol: self.protocol,
            gzip: self.gzip,
            rate: self.rate,
            duration: seconds("duration", self.duration)?,
            max_spans: self.max_spans,
            concurrency: self.concurrency,
            batch_spans: self.batch_spans,
            services: self.services,
            error_rate: self.error_rate,
            seed: self.seed.unwrap_or_else(time_seed),
            metrics: self.metrics,
            quiet: self.quiet,
            request_timeout: seconds("timeout", self.timeout)?,
            max_retries: self.max_retries,
            server_pid: self.server_pid,
        })
    }
}

fn write_json(path: &PathBuf, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let json = serde_json::to_vec_pretty(value).context("serialising report")?;
    std::fs::write(path, json).with_context(|| format!("writing {}", path.display()))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let cfg = args.config()?;
    if args.dry_run {
        let report = dry_run(&cfg)?;
        print!("{report}");
        if let Some(path) = &args.report_json {
            write_json(path, &report)?;
        }
        return Ok(());
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime.block_on(run(cfg, None))?;
    print!("{report}");
    if let Some(path) = &args.report_json {
        write_json(path, &report)?;
    }
    Ok(())
}
