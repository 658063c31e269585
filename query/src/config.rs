//! Query service settings (`[query]` in the `weft` config file).

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A SQL query is cancelled after this many seconds.
    pub timeout_secs: u64,
    /// Memory one query may hold (sorts, joins, aggregations); beyond it the query fails.
    pub memory_limit_bytes: usize,
    /// Most rows one SQL response carries; the rest is cut off and the response says so.
    pub max_result_rows: usize,
    /// Longest SQL text, on every protocol (HTTP body, Postgres simple and extended query).
    pub max_sql_bytes: usize,
    /// Deepest nesting of expressions and subqueries in one SQL statement (`1+1+…`,
    /// `a OR b OR …`, nested function calls). Planning and evaluation recurse on it.
    pub max_expression_depth: usize,
    /// Most `UNION` / `INTERSECT` / `EXCEPT` branches in one query.
    pub max_set_operation_branches: usize,
    /// Most expressions in one SQL statement.
    pub max_sql_nodes: usize,
    /// Most conditions (attributes, tags) in one search or Jaeger request.
    pub max_search_conditions: usize,
    /// Largest value one function may produce (`repeat`, `lpad`, `array_repeat`, `||`,
    /// `string_agg`, …); a larger one fails the query with an error naming this limit.
    pub max_value_bytes: usize,
    /// Largest output of one function over one batch of rows (the sum of its values).
    pub max_batch_bytes: usize,
    /// Queries that run at once; the rest wait up to `queue_timeout_ms`, then get 503.
    pub max_concurrent_queries: usize,
    /// How long a query waits for a free slot before it is refused with 503.
    pub queue_timeout_ms: u64,
    /// Threads of the query runtime (0: one per CPU, plus two). Queries run there, never
    /// on the threads that serve ingest and health checks.
    pub threads: usize,
    /// Traces up to this many spans are returned sorted by start time; larger ones are
    /// streamed in storage order so memory stays bounded.
    pub trace_sort_max_spans: usize,
    /// Host names the query port answers to besides loopback names and IP literals
    /// (`Host` header; a defence against DNS rebinding). `"*"` answers any name;
    /// `".example.com"` any subdomain of example.com. See [`crate::http::AllowedHosts`].
    pub allowed_hosts: Vec<String>,
    /// Downsampled metrics (`[query.rollups]`, see [`crate::metrics::rollup`]).
    pub rollups: RollupConfig,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            memory_limit_bytes: 512 << 20,
            max_result_rows: 100_000,
            max_sql_bytes: 1 << 20,
            max_expression_depth: 256,
            max_set_operation_branches: 256,
            max_sql_nodes: 100_000,
            max_search_conditions: 64,
            max_value_bytes: 16 << 20,
            max_batch_bytes: 128 << 20,
            max_concurrent_queries: 8,
            queue_timeout_ms: 5_000,
            threads: 0,
            trace_sort_max_spans: 20_000,
            allowed_hosts: Vec::new(),
            rollups: RollupConfig::default(),
        }
    }
}

impl QueryConfig {
    /// Checks values serde accepts but Weft cannot use.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, value) in [
            ("timeout_secs", self.timeout_secs as usize),
            ("max_sql_bytes", self.max_sql_bytes),
            ("max_expression_depth", self.max_expression_depth),
            (
                "max_set_operation_branches",
                self.max_set_operation_branches,
            ),
            ("max_sql_nodes", self.max_sql_nodes),
            ("max_search_conditions", self.max_search_conditions),
            ("max_value_bytes", self.max_value_bytes),
            ("max_batch_bytes", self.max_batch_bytes),
            ("max_concurrent_queries", self.max_concurrent_queries),
        ] {
            if value == 0 {
                return Err(ConfigError::Zero { key: name });
            }
        }
        if self.max_batch_bytes < self.max_value_bytes {
            return Err(ConfigError::BatchBelowValue {
                max_batch_bytes: self.max_batch_bytes,
                max_value_bytes: self.max_value_bytes,
            });
        }
        self.rollups.validate()
    }
}

/// 1-minute and 1-hour rollups of the `metrics` table (`[query.rollups]`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RollupConfig {
    /// Compute rollups of closed hours in the background, and let metrics range queries
    /// read them. `false`: no rollup is written and range queries read raw points only.
    pub enabled: bool,
    /// An hour is rolled up once it ended this many seconds ago. Points of an hour that
    /// become visible later make the hour be rolled up again (see [`crate::metrics::rollup`]).
    pub delay_secs: u64,
    /// Seconds between two passes of the background job.
    pub interval_secs: u64,
    /// Hours of 1-minute and 1-hour rollups kept (0: forever); each pass deletes whole
    /// hours past that.
    pub keep_1m_hours: u64,
    pub keep_1h_hours: u64,
}

impl Default for RollupConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            delay_secs: 7_200,
            interval_secs: 60,
            keep_1m_hours: 90 * 24,
            keep_1h_hours: 400 * 24,
        }
    }
}

/// Longest `delay_secs`: a week (longer would keep long-range queries on raw points).
const MAX_DELAY_SECS: u64 = 7 * 86_400;
/// Longest `interval_secs`: a day.
const MAX_INTERVAL_SECS: u64 = 86_400;

impl RollupConfig {
    /// `delay_secs` in [60, 604800] (points of the last minute may still be in flight),
    /// `interval_secs` in [1, 86400].
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(60..=MAX_DELAY_SECS).contains(&self.delay_secs) {
            return Err(ConfigError::OutOfRange {
                key: "query.rollups.delay_secs",
                value: self.delay_secs,
                min: 60,
                max: MAX_DELAY_SECS,
            });
        }
        if !(1..=MAX_INTERVAL_SECS).contains(&self.interval_secs) {
            return Err(ConfigError::OutOfRange {
                key: "query.rollups.interval_secs",
                value: self.interval_secs,
                min: 1,
                max: MAX_INTERVAL_SECS,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollup_settings_are_checked() {
        assert_eq!(QueryConfig::default().validate(), Ok(()));
        for bad in [
            RollupConfig {
                delay_secs: 0,
                ..Default::default()
            },
            RollupConfig {
                delay_secs: MAX_DELAY_SECS + 1,
                ..Default::default()
            },
            RollupConfig {
                interval_secs: 0,
                ..Default::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        let parsed: QueryConfig =
            serde_json::from_str(r#"{"rollups": {"delay_secs": 600}}"#).unwrap();
        assert_eq!(parsed.rollups.delay_secs, 600);
        assert!(parsed.rollups.enabled);
        assert!(serde_json::from_str::<QueryConfig>(r#"{"rollups": {"delay": 1}}"#).is_err());
    }
}
