//! The slowest spans of a service (or one of its operations) in a window, one per trace:
//! `GET /api/v1/latency/slowest?service=&operation=&start=&end=&limit=`.
//!
//! ```text
//!  spans WHERE service_name = ? [AND span_name = ?] AND start_time IN [start, end)
//!    GROUP BY trace_id: the longest span (its name, status, start)     (DataFrame API)
//!    ORDER BY duration_ns DESC, trace_id LIMIT limit
//! ```
//!
//! Every value the user gives is a literal of a DataFusion `Expr`: nothing becomes SQL text.

use arrow::array::{Array, AsArray, FixedSizeBinaryArray, Int8Array, Int64Array};
use arrow::datatypes::{DataType, TimestampNanosecondType};
use datafusion::functions_aggregate::expr_fn::{first_value, max};
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{col, lit};
use datafusion::scalar::ScalarValue;
use serde::{Deserialize, Serialize};
use ts_rs::TS;
use weft_schemas::Table;
use weft_schemas::columns::{
    DURATION_NS, SERVICE_NAME, SPAN_NAME, START_TIME, STATUS_CODE, TRACE_ID,
};

use crate::params::TimeRange;
use crate::{Error, QueryService, Result};

/// `limit` when none is given.
pub const DEFAULT_LIMIT: usize = 10;
/// The most spans one request may ask for.
pub const MAX_LIMIT: usize = 1_000;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowestQuery {
    pub service: String,
    pub operation: Option<String>,
    pub range: TimeRange,
    pub limit: usize,
}

/// Query parameters of `GET /api/v1/latency/slowest`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SlowestParams {
    service: Option<String>,
    operation: Option<String>,
    start: Option<String>,
    end: Option<String>,
    limit: Option<String>,
}

impl SlowestParams {
    pub(super) fn parse(self, now_ns: i64) -> Result<SlowestQuery> {
        let service = self
            .service
            .filter(|s| !s.is_empty())
            .ok_or_else(|| Error::BadRequest("service is required".into()))?;
        let range = crate::params::time_range(self.start.as_deref(), self.end.as_deref(), now_ns)?;
        let limit = match self.limit {
            None => DEFAULT_LIMIT,
            Some(text) => text
                .trim()
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| {
                    Error::BadRequest(format!(
                        "limit={text:?} must be an integer from 1 to {MAX_LIMIT}"
                    ))
                })?,
        };
        Ok(SlowestQuery {
            service,
            operation: self.operation.filter(|s| !s.is_empty()),
            range,
            limit,
        })
    }
}

/// The longest span of one trace.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct SlowSpan {
    /// Lowercase hex.
    pub trace_id: String,
    pub span_name: String,
    pub duration_ns: i64,
    /// OTLP status code: 0 unset, 1 ok, 2 error.
    pub status_code: i8,
    /// RFC 3339 with nanoseconds.
    pub start_time: String,
}

/// The answer to `GET /api/v1/latency/slowest`: slowest first.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct SlowestSpans {
    pub start_ns: i64,
    pub end_ns: i64,
    pub spans: Vec<SlowSpan>,
}

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// Runs `query` within the query time limit.
pub async fn slowest(service: &QueryService, query: &SlowestQuery) -> Result<SlowestSpans> {
    let timeout = service.config().timeout_secs;
    let run = async {
        let ctx = service.session()?;
        let mut df = ctx
            .table(Table::Spans.name())
            .await?
            .filter(col(START_TIME).gt_eq(ts(query.range.start_ns)))?
            .filter(col(START_TIME).lt(ts(query.range.end_ns)))?
            .filter(cast(col(SERVICE_NAME), DataType::Utf8).eq(lit(query.service.as_str())))?;
        if let Some(operation) = &query.operation {
            df = df.filter(cast(col(SPAN_NAME), DataType::Utf8).eq(lit(operation.as_str())))?;
        }
        let longest = || vec![col(DURATION_NS).sort(false, false)];
        let batches = df
            .aggregate(
                vec![col(TRACE_ID)],
                vec![
                    max(col(DURATION_NS)).alias(DURATION_NS),
                    first_value(cast(col(SPAN_NAME), DataType::Utf8), longest()).alias(SPAN_NAME),
                    first_value(col(STATUS_CODE), longest()).alias(STATUS_CODE),
                    first_value(col(START_TIME), longest()).alias(START_TIME),
                ],
            )?
            .sort(vec![
                col(DURATION_NS).sort(false, false),
                col(TRACE_ID).sort(true, true),
            ])?
            .limit(0, Some(query.limit))?
            .collect()
            .await?;
        let mut spans = Vec::new();
        for batch in &batches {
            let column = |name: &str| {
                batch
                    .column_by_name(name)
                    .ok_or_else(|| Error::Execution(format!("missing column {name}")))
            };
            let bad = |name: &str| Error::Execution(format!("unexpected type of column {name}"));
            let ids = column(TRACE_ID)?
                .as_any()
                .downcast_ref::<FixedSizeBinaryArray>()
                .ok_or_else(|| bad(TRACE_ID))?;
            let durations = column(DURATION_NS)?
                .as_any()
                .downcast_ref::<Int64Array>()
                .ok_or_else(|| bad(DURATION_NS))?;
            let names = column(SPAN_NAME)?
                .as_string_opt::<i32>()
                .ok_or_else(|| bad(SPAN_NAME))?;
            let statuses = column(STATUS_CODE)?
                .as_any()
                .downcast_ref::<Int8Array>()
                .ok_or_else(|| bad(STATUS_CODE))?;
            let starts = column(START_TIME)?
                .as_primitive_opt::<TimestampNanosecondType>()
                .ok_or_else(|| bad(START_TIME))?;
            for row in 0..batch.num_rows() {
                spans.push(SlowSpan {
                    trace_id: hex::encode(ids.value(row)),
                    span_name: names.value(row).to_owned(),
                    duration_ns: durations.value(row),
                    status_code: if statuses.is_null(row) {
                        0
                    } else {
                        statuses.value(row)
                    },
                    start_time: crate::params::format_instant(starts.value(row)),
                });
            }
        }
        Ok::<_, Error>(SlowestSpans {
            start_ns: query.range.start_ns,
            end_ns: query.range.end_ns,
            spans,
        })
    };
    tokio::time::timeout(std::time::Duration::from_secs(timeout), run)
        .await
        .map_err(|_| Error::Timeout(timeout))?
}
