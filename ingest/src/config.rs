//! `[ingest]` settings of a `weft ingest` node.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[ingest]` settings of a `weft ingest` node: how it forwards to collector nodes, and the
/// spool (hinted hand-off) that holds what a collector could not take.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct IngestConfig {
    /// Directory of the hinted hand-off spool: batches acknowledged to clients but not yet
    /// acknowledged by their collector node. Must survive restarts (a persistent volume).
    pub spool_dir: PathBuf,
    /// Spool size limit; when it is full, exports that need it are refused (503 /
    /// UNAVAILABLE + retry).
    pub spool_max_bytes: u64,
    /// Bytes queued for one collector node (the bulkhead: a slow node fills its own queue,
    /// then exports that need it are refused, while the other nodes keep flowing).
    pub queue_max_bytes: u64,
    /// Largest batch sent in one call to a collector (queued requests of the same signal are
    /// concatenated). Keep it at or below the collectors' `receiver.max_request_bytes`.
    pub batch_max_bytes: usize,
    /// How long a worker waits for more queued requests before sending a batch that is not
    /// full. Requests queued while a call is in flight are batched without waiting.
    pub batch_linger_ms: u64,
    /// Deadline of one call to a collector node (`grpc-timeout` and a local timer).
    pub request_timeout_ms: u64,
    /// How long a batch is retried before it is spooled and its requests acknowledged from
    /// the spool. Bounds how long a client waits on a failing collector.
    pub delivery_budget_ms: u64,
    /// Retry delays grow exponentially from `backoff_base_ms` up to `backoff_max_ms`, with
    /// full jitter; a `RetryInfo` delay sent by the collector is used instead when present.
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    /// Failed calls in a row that open a node's circuit breaker (batches are then spooled
    /// at once, without calling the node)...
    pub breaker_failures: u32,
    /// ...for this long, before one trial call is let through.
    pub breaker_open_ms: u64,
    /// Hints (spooled batches) read per replay round when a node's spool is drained;
    /// consecutive hints of one signal are merged up to `batch_max_bytes` per call. Memory
    /// held by a draining node is at most this many hints (each up to a batch).
    pub replay_batch_hints: usize,
}

impl Default for IngestConfig {
    fn default() -> Self {
        Self {
            spool_dir: PathBuf::from("weft-ingest-spool"),
            spool_max_bytes: 4 << 30,
            queue_max_bytes: 64 << 20,
            batch_max_bytes: 4 << 20,
            batch_linger_ms: 2,
            request_timeout_ms: 2_000,
            delivery_budget_ms: 4_000,
            backoff_base_ms: 50,
            backoff_max_ms: 1_000,
            breaker_failures: 5,
            breaker_open_ms: 2_000,
            replay_batch_hints: 16,
        }
    }
}

impl IngestConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms.max(1))
    }

    pub fn delivery_budget(&self) -> Duration {
        Duration::from_millis(self.delivery_budget_ms)
    }

    pub fn batch_linger(&self) -> Duration {
        Duration::from_millis(self.batch_linger_ms)
    }

    pub fn backoff_base(&self) -> Duration {
        Duration::from_millis(self.backoff_base_ms.max(1))
    }

    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.backoff_max_ms.max(self.backoff_base_ms).max(1))
    }

    pub fn breaker_open(&self) -> Duration {
        Duration::from_millis(self.breaker_open_ms)
    }
}
