//! Run results: the [`Report`] of a load run and the [`DryRunReport`] of a
//! generator self-check, both printable and serialisable to JSON.

use std::collections::BTreeMap;
use std::fmt;

use serde::Serialize;

/// Export latency distribution, in milliseconds, over acknowledged attempts.
#[derive(Clone, Debug, Default, Serialize)]
pub struct LatencySummary {
    /// Attempts measured (successful export round trips).
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Metrics exports made alongside the traces (`--metrics`).
#[derive(Clone, Debug, Default, Serialize)]
pub struct MetricsSummary {
    pub requests: u64,
    pub requests_ok: u64,
    pub errors: u64,
    pub retried: u64,
    pub data_points_sent: u64,
    pub data_points_rejected: u64,
}

/// Resource use of the server process (`--server-pid`, Linux only).
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServerStats {
    pub pid: u32,
    /// User + system CPU time the server used during the run.
    pub cpu_seconds: Option<f64>,
    /// Server CPU time per accepted span, in microseconds.
    pub cpu_us_per_accepted_span: Option<f64>,
    /// Server CPU time as a share of one core over the run (1.0 = one core busy).
    pub cpu_cores: Option<f64>,
    /// Peak resident set size of the server (`VmHWM`: since it started, not
    /// just during the run).
    pub peak_rss_bytes: Option<u64>,
    /// Why some figure is missing (process gone, not Linux, ...).
    pub note: Option<String>,
}

/// Outcome of a load run.
///
/// Spans are counted per export request: `spans_sent` were handed to the
/// transport; of those, `spans_accepted` were acknowledged and not rejected,
/// `rejected` were acknowledged but refused (OTLP partial success) and
/// `spans_failed` were in requests that failed for good.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub protocol: String,
    pub endpoint: String,
    pub gzip: bool,
    /// Generator seed (rerun with `--seed` to regenerate the same ids).
    pub seed: u64,
    /// Requested spans/s; `None` means as fast as possible.
    pub target_rate: Option<u64>,
    pub concurrency: usize,
    /// Wall time from the first request to the last response.
    pub duration_secs: f64,
    pub spans_sent: u64,
    /// Spans acknowledged by the server and not rejected.
    pub spans_accepted: u64,
    pub spans_failed: u64,
    pub spans_per_sec_accepted: f64,
    /// Spans handed to the transport per second of sending time.
    pub spans_per_sec_offered: f64,
    /// Export requests made (retries of a request are not counted again).
    pub requests: u64,
    pub requests_ok: u64,
    /// Requests that failed for good (after any retries).
    pub errors: u64,
    /// Spans refused through OTLP partial success.
    pub rejected: u64,
    /// Retry attempts made after back-pressure or transient errors.
    pub retried: u64,
    /// Encoded payload bytes of all requests (after gzip for HTTP; before
    /// compression for gRPC, which tonic compresses itself).
    pub payload_bytes: u64,
    /// Average protobuf-encoded size of a span, request overhead included.
    pub avg_encoded_span_bytes: f64,
    pub latency: LatencySummary,
    /// Failure reasons and how often each was seen (attempt-level).
    pub error_kinds: BTreeMap<String, u64>,
    /// Rate mode only (and not stopped early): whether the offered rate
    /// reached 95% of the target.
    pub kept_up: Option<bool>,
    /// Rate mode only: how often a request was due while all
    /// `concurrency` requests were still in flight.
    pub concurrency_stalls: u64,
    /// Why the run ended before its duration or span budget, if it did.
    pub stopped_early: Option<String>,
    pub metrics: Option<MetricsSummary>,
    pub server: Option<ServerStats>,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = match self.target_rate {
            Some(r) => format!("{r} spans/s"),
            None => "as fast as possible".to_owned(),
        };
        writeln!(
            f,
            "weft-load: {} -> {}{} | {} | concurrency {}",
            self.protocol,
            self.endpoint,
            if self.gzip { " (gzip)" } else { "" },
            rate,
            self.concurrency
        )?;
        writeln!(
            f,
            "  duration        {:.2} s (seed {})",
            self.duration_secs, self.seed
        )?;
        writeln!(
            f,
            "  spans           sent {}  accepted {}  rejected {}  failed {}",
            self.spans_sent, self.spans_accepted, self.rejected, self.spans_failed
        )?;
        writeln!(
            f,
            "  throughput      {:.0} spans/s accepted ({:.0} spans/s offered)",
            self.spans_per_sec_accepted, self.spans_per_sec_offered
        )?;
        writeln!(
            f,
            "  requests        {}  ok {}  errors {}  retried {}",
            self.requests, self.requests_ok, self.errors, self.retried
        )?;
        writeln!(
            f,
            "  payload         {:.1} MiB, {:.0} B/span encoded",
            self.payload_bytes as f64 / (1024.0 * 1024.0),
            self.avg_encoded_span_bytes
        )?;
        let l = &self.latency;
        writeln!(
            f,
            "  export latency  p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  max {:.1} ms  (n={})",
            l.p50_ms, l.p90_ms, l.p99_ms, l.max_ms, l.count
        )?;
        if let Some(kept_up) = self.kept_up {
            if kept_up {
                writeln!(f, "  rate            target met")?;
            } else {
                writeln!(
                    f,
                    "  rate            SERVER COULD NOT KEEP UP: offered {:.0} of {} spans/s ({} stalls at the concurrency limit)",
                    self.spans_per_sec_offered,
                    self.target_rate.unwrap_or(0),
                    self.concurrency_stalls
                )?;
            }
        }
        if let Some(m) = &self.metrics {
            writeln!(
                f,
                "  metrics         requests {}  ok {}  errors {}  retried {}  points {} (rejected {})",
                m.requests,
                m.requests_ok,
                m.errors,
                m.retried,
                m.data_points_sent,
                m.data_points_rejected
            )?;
        }
        if let Some(s) = &self.server {
            let cpu = match (s.cpu_seconds, s.cpu_us_per_accepted_span, s.cpu_cores) {
                (Some(secs), per_span, cores) => format!(
                    "cpu {:.2} s ({:.2} cores), {} µs/accepted span",
                    secs,
                    cores.unwrap_or(0.0),
                    per_span.map_or("n/a".to_owned(), |v| format!("{v:.2}"))
                ),
                _ => "cpu n/a".to_owned(),
            };
            let rss = s.peak_rss_bytes.map_or("n/a".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
            });
            writeln!(f, "  server pid {}  {}  peak RSS {}", s.pid, cpu, rss)?;
            if let Some(note) = &s.note {
                writeln!(f, "                  ({note})")?;
            }
        }
        if !self.error_kinds.is_empty() {
            writeln!(f, "  failures seen")?;
            for (kind, n) in &self.error_kinds {
                writeln!(f, "    {n:>8}  {kind}")?;
            }
        }
        if let Some(reason) = &self.stopped_early {
            writeln!(f, "  STOPPED EARLY: {reason}")?;
        }
        Ok(())
    }
}

/// Outcome of `--dry-run`: generation and encoding only, nothing is sent.
#[derive(Clone, Debug, Default, Serialize)]
pub struct DryRunReport {
    pub protocol: String,
    pub gzip: bool,
    pub services: usize,
    pub seconds: f64,
    pub requests: u64,
    pub traces: u64,
    pub spans: u64,
    /// Spans generated and encoded per second (the figure that matters).
    pub spans_per_sec: f64,
    /// Spans per second of generation alone.
    pub generate_spans_per_sec: f64,
    /// Spans per second of encoding alone (plus gzip when enabled).
    pub encode_spans_per_sec: f64,
    pub avg_spans_per_trace: f64,
    /// Average payload bytes per span in the chosen encoding, before gzip.
    pub avg_encoded_span_bytes: f64,
    /// Average payload bytes per span after gzip, when enabled.
    pub avg_compressed_span_bytes: Option<f64>,
}

impl fmt::Display for DryRunReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "weft-load dry run: {} services, {} encoding{}, {:.2} s",
            self.services,
            self.protocol,
            if self.gzip { " + gzip" } else { "" },
            self.seconds
        )?;
        writeln!(
            f,
            "  generated       {} spans in {} traces, {} requests ({:.1} spans/trace)",
            self.spans, self.traces, self.requests, self.avg_spans_per_trace
        )?;
        writeln!(
            f,
            "  rate            {:.0} spans/s (generate + encode)",
            self.spans_per_sec
        )?;
        writeln!(
            f,
            "                  generate {:.0} spans/s, encode {:.0} spans/s",
            self.generate_spans_per_sec, self.encode_spans_per_sec
        )?;
        write!(
            f,
            "  size            {:.0} B/span encoded",
            self.avg_encoded_span_bytes
        )?;
        if let Some(c) = self.avg_compressed_span_bytes {
            write!(f, ", {c:.0} B/span gzipped")?;
        }
        writeln!(f)
    }
}
