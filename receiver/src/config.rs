//! Receiver settings (`[collector.receiver]` in the `weft` config file).

use std::time::Duration;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ReceiverConfig {
    /// Largest accepted request body, measured after decompression (413 / RESOURCE_EXHAUSTED).
    pub max_request_bytes: usize,
    /// Memory held by requests being received and decoded at once: body bytes as they
    /// arrive, then the decoded size (estimated before decoding from a scan of the body).
    /// A request that does not fit gets 429 / UNAVAILABLE + retry; one that could never fit
    /// gets 413 / RESOURCE_EXHAUSTED.
    pub max_inflight_bytes: usize,
    /// Most spans plus data points (remote-write samples) in one request; more is refused
    /// with 413 / RESOURCE_EXHAUSTED before anything is decoded.
    pub max_items_per_request: u64,
    /// `Retry-After` sent with 429 / 503 answers.
    pub retry_after_secs: u64,
    /// Span start times and metric point times older than this many seconds before the
    /// server's clock are refused (partial success). Bounds the hour partitions, so the
    /// Parquet files, one request can create. 7 days: late batches and replays from a
    /// buffering agent fit (Loki's `reject_old_samples_max_age` default is the same).
    pub accept_past_secs: u64,
    /// ...and times more than this many seconds ahead of it (clock skew allowance).
    pub accept_future_secs: u64,
}

impl ReceiverConfig {
    /// The accepted window of item times.
    pub fn time_window(&self) -> weft_schemas::window::TimeWindow {
        weft_schemas::window::TimeWindow {
            past: Duration::from_secs(self.accept_past_secs),
            future: Duration::from_secs(self.accept_future_secs),
        }
    }
}

impl Default for ReceiverConfig {
    fn default() -> Self {
        Self {
            max_request_bytes: 16 << 20,
            max_inflight_bytes: 256 << 20,
            max_items_per_request: 500_000,
            retry_after_secs: 1,
            accept_past_secs: 7 * 24 * 3600,
            accept_future_secs: 3600,
        }
    }
}
