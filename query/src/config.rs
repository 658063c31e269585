//! Query service settings (`[query]` in the `weft` config file).

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A SQL query is cancelled after this many seconds.
    pub timeout_secs: u64,
    /// Memory one query may hold (sorts, joins, aggregations); beyond it the query fails.
    pub memory_limit_bytes: usize,
    /// Most rows one SQL response carries; the rest is cut off and the response says so.
    pub max_result_rows: usize,
    /// Largest SQL request body.
    pub max_sql_bytes: usize,
    /// Traces up to this many spans are returned sorted by start time; larger ones are
    /// streamed in storage order so memory stays bounded.
    pub trace_sort_max_spans: usize,
}

impl Default for QueryConfig {
    fn default() -> Self {
        Self {
            timeout_secs: 30,
            memory_limit_bytes: 512 << 20,
            max_result_rows: 100_000,
            max_sql_bytes: 1 << 20,
            trace_sort_max_spans: 20_000,
        }
    }
}
