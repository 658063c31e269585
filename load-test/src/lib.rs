//! Load generator for Weft: realistic multi-service traces sent over OTLP.
//!
//! # What it does
//!
//! Simulates an online shop of `services` microservices (frontend →
//! api-gateway → checkout → {cart → redis, inventory → postgres, payment,
//! shipping, currency}, catalog → postgres, recommendation, ad, and a Kafka
//! hop from checkout to notifications; extra generic services hang off the
//! mid tier when more are asked for) and exports the traces it produces to
//! one OTLP endpoint, over gRPC, HTTP/protobuf or HTTP/JSON, at a fixed rate
//! or as fast as the server acknowledges them. It then reports what the
//! server accepted, how fast, with what export latency, and — given the
//! server's pid — how much CPU and memory the server spent doing it.
//!
//! # How data flows
//!
//! 1. [`TraceGenerator`] (one, owned by the dispatcher) builds whole traces
//!    top-down — span trees across services with SERVER / CLIENT / INTERNAL
//!    / PRODUCER / CONSUMER spans, semantic-convention attributes, nested
//!    timings, occasional failures with `exception` events — and groups
//!    about `batch_spans` spans per `ExportTraceServiceRequest`, one
//!    `ResourceSpans` per pod and one `ScopeSpans` per instrumentation
//!    library.
//! 2. The dispatcher paces requests (`rate` spans/s on a steady clock, or
//!    back to back when `rate` is 0), each taking one of `concurrency`
//!    permits, until `duration` elapses, `max_spans` have been sent, or the
//!    server stops answering.
//! 3. An export task per request encodes it once (protobuf or OTLP/JSON,
//!    gzip optional) and sends it, retrying back-pressure responses (HTTP
//!    429/502/503/504 honouring `Retry-After`; gRPC UNAVAILABLE,
//!    RESOURCE_EXHAUSTED, … honouring `RetryInfo`, otherwise exponential
//!    back-off with jitter). Acknowledgements update shared counters and a
//!    latency histogram, and are handed to the optional `on_ack` callback.
//! 4. [`run`] drains in-flight exports (bounded) and returns a [`Report`].
//!
//! [`dry_run`] runs step 1 plus encoding only, to show the generator is not
//! the bottleneck. Nothing is ever sent anywhere but `LoadConfig::endpoint`.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use std::time::Duration;
//! use weft_load_test::{LoadConfig, Protocol, run};
//!
//! let cfg = LoadConfig {
//!     endpoint: "http://127.0.0.1:4318".into(),
//!     protocol: Protocol::HttpProto,
//!     duration: Duration::from_secs(2),
//!     max_spans: Some(10_000),
//!     quiet: true,
//!     ..LoadConfig::default()
//! };
//! let report = run(cfg, None).await?;
//! assert_eq!(report.errors, 0);
//! # Ok(()) }
//! ```
//!
//! [`demo`] loads the web viewer's demo dataset (generated traffic, a 50,000-span trace, a
//! trace with a known critical path, metrics) and returns the facts of what it sent; the
//! `weft-demo-data` binary and the viewer's e2e tests use it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

pub mod bulk;
pub mod demo;
mod generator;
mod procfs;
mod report;
mod runner;
mod topology;
mod transport;

pub use generator::{MAX_TRACE_SPANS, TraceGenerator, span_count};
pub use report::{DryRunReport, LatencySummary, MetricsSummary, Report, ServerStats};

/// Called with every trace export request the server acknowledged (possibly
/// with a partial-success rejection, reflected in [`Report::rejected`]).
pub type AckCallback = Arc<dyn Fn(&ExportTraceServiceRequest) + Send + Sync>;

/// OTLP transport.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// OTLP/gRPC (`TraceService/Export`).
    #[default]
    Grpc,
    /// OTLP/HTTP with protobuf bodies, POSTed to `{endpoint}/v1/traces`.
    HttpProto,
    /// OTLP/HTTP with JSON bodies, POSTed to `{endpoint}/v1/traces`.
    HttpJson,
}

impl Protocol {
    /// `grpc`, `http-proto` or `http-json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Grpc => "grpc",
            Protocol::HttpProto => "http-proto",
            Protocol::HttpJson => "http-json",
        }
    }

    /// The usual local OTLP endpoint for this protocol.
    pub fn default_endpoint(self) -> &'static str {
        match self {
            Protocol::Grpc => "http://127.0.0.1:4317",
            Protocol::HttpProto | Protocol::HttpJson => "http://127.0.0.1:4318",
        }
    }
}

/// Settings of a load run (see the field docs; [`Default`] gives the CLI defaults).
#[derive(Clone, Debug)]
pub struct LoadConfig {
    /// Base URL of the OTLP receiver (`http://` only). HTTP exports go to
    /// `{endpoint}/v1/traces` (and `/v1/metrics`).
    pub endpoint: String,
    pub protocol: Protocol,
    /// Compress requests with gzip.
    pub gzip: bool,
    /// Target spans per second; 0 sends as fast as the server acknowledges.
    pub rate: u64,
    /// How long to send for.
    pub duration: Duration,
    /// Stop after this many spans (whichever of this and `duration` comes first).
    pub max_spans: Option<u64>,
    /// Export requests in flight at most.
    pub concurrency: usize,
    /// Spans per export request (whole traces, so approximately).
    pub batch_spans: usize,
    /// Services in the simulated shop.
    pub services: usize,
    /// Fraction of traces that fail (status ERROR along the failing path,
    /// an `exception` event where it started, HTTP 500 / gRPC INTERNAL).
    pub error_rate: f64,
    /// Generator seed; ids and shapes repeat for the same seed.
    pub seed: u64,
    /// Also export a counter and a histogram per pod, once a second.
    pub metrics: bool,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    pub quiet: bool,
    /// Timeout of one export attempt.
    pub request_timeout: Duration,
    /// Retries of one export after back-pressure or transient errors.
    pub max_retries: u32,
    /// Linux pid of the server, to report its CPU time and peak RSS.
    pub server_pid: Option<u32>,
}

impl Default for LoadConfig {
    fn default() -> Self {
        LoadConfig {
            endpoint: Protocol::Grpc.default_endpoint().to_owned(),
            protocol: Protocol::Grpc,
            gzip: false,
            rate: 0,
            duration: Duration::from_secs(10),
            max_spans: None,
            concurrency: 8,
            batch_spans: 500,
            services: 10,
            error_rate: 0.01,
            seed: time_seed(),
            metrics: false,
            quiet: false,
            request_timeout: Duration::from_secs(10),
            max_retries: 5,
            server_pid: None,
        }
    }
}

/// A seed that differs between runs, so that separate runs do not resend
/// the same trace ids.
pub fn time_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x5eed)
}

impl LoadConfig {
    /// Checks the settings are usable.
    pub fn validate(&self) -> anyhow::Result<()> {
        ensure!(!self.endpoint.is_empty(), "endpoint is empty");
        ensure!(self.concurrency >= 1, "concurrency must be at least 1");
        ensure!(self.batch_spans >= 1, "batch_spans must be at least 1");
        ensure!(self.services >= 1, "services must be at least 1");
        ensure!(
            (0.0..=1.0).contains(&self.error_rate),
            "error_rate must be within 0..=1"
        );
        ensure!(!self.duration.is_zero(), "duration must be positive");
        ensure!(
            !self.request_timeout.is_zero(),
            "request_timeout must be positive"
        );
        if self.max_spans == Some(0) {
            bail!("max_spans must be at least 1");
        }
        Ok(())
    }
}

/// Runs a load test against `cfg.endpoint` and reports the outcome.
///
/// Fails up front if the configuration is invalid or nothing accepts
/// connections at the endpoint. Once running, failures are counted rather
/// than returned: if the server goes away (connection refused / reset /
/// timed out, at least 5 times in a row over more than 2 s) the run stops
/// early and cleanly, with [`Report::stopped_early`] saying why.
///
/// `on_ack`, if given, is called from the export task with every trace
/// request the server acknowledged, so a test can record exactly which
/// spans were accepted.
pub async fn run(cfg: LoadConfig, on_ack: Option<AckCallback>) -> anyhow::Result<Report> {
    runner::run(cfg, on_ack).await
}

/// Generates and encodes (in `cfg.protocol`'s encoding, gzipped if
/// `cfg.gzip`) for `cfg.duration` or `cfg.max_spans`, sending nothing, and
/// reports how fast that went.
pub fn dry_run(cfg: &LoadConfig) -> anyhow::Result<DryRunReport> {
    cfg.validate()?;
    let json = cfg.protocol == Protocol::HttpJson;
    let mut generator = TraceGenerator::new(cfg.services, cfg.error_rate, cfg.seed);
    let start = Instant::now();
    let deadline = start + cfg.duration;
    let mut remaining = cfg.max_spans.unwrap_or(u64::MAX);
    let (mut gen_time, mut enc_time) = (Duration::ZERO, Duration::ZERO);
    let (mut requests, mut spans, mut encoded, mut compressed) = (0u64, 0u64, 0u64, 0u64);
    // Each request holds at least one span; this bounds the loop by count.
    let cap = cfg.max_spans.unwrap_or(u64::MAX);
    for _ in 0..cap {
        if remaining == 0 || Instant::now() >= deadline {
            break;
        }
        let t0 = Instant::now();
        let limit = usize::try_from(remaining).unwrap_or(usize::MAX);
        let req = generator.next_request_limited(cfg.batch_spans, limit);
        let t1 = Instant::now();
        let n = span_count(&req) as u64;
        let body = transport::encode_payload(&req, json, false)?;
        encoded += body.len() as u64;
        if cfg.gzip {
            compressed += transport::gzip_bytes(&body)?.len() as u64;
        }
        drop(req);
        let t2 = Instant::now();
        gen_time += t1 - t0;
        enc_time += t2 - t1;
        requests += 1;
        spans += n;
        remaining = remaining.saturating_sub(n);
    }
    let seconds = start.elapsed().as_secs_f64();
    let per_sec = |t: Duration| spans as f64 / t.as_secs_f64().max(1e-9);
    let traces = generator.generated().0;
    Ok(DryRunReport {
        protocol: cfg.protocol.as_str().to_owned(),
        gzip: cfg.gzip,
        services: cfg.services,
        seconds,
        requests,
        traces,
        spans,
        spans_per_sec: spans as f64 / seconds.max(1e-9),
        generate_spans_per_sec: per_sec(gen_time),
        encode_spans_per_sec: per_sec(enc_time),
        avg_spans_per_trace: spans as f64 / traces.max(1) as f64,
        avg_encoded_span_bytes: encoded as f64 / spans.max(1) as f64,
        avg_compressed_span_bytes: cfg.gzip.then(|| compressed as f64 / spans.max(1) as f64),
    })
}
