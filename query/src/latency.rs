//! Latency reports per service and operation, computed from the stored spans.
//!
//! `GET /api/v1/latency?service=&operation=&start=&end=&step=&compare_start=&compare_end=`
//!
//! * With `service`: one report (see [`LatencyReport`]) for the service, or for one of its
//!   operations: weighted count, rate per second, errors and error rate, p50/p90/p95/p99
//!   and the exact min and max, a power-of-two histogram with the trace ids of the slowest
//!   spans of each bucket, a series per `step` (count, errors, p50/p95/p99), and the
//!   service's slowest operations by p99. With `compare_start`/`compare_end`, the same
//!   report for that window too (same step), for before/after comparisons.
//! * Without `service`: every (service, operation) with its percentiles
//!   ([`OperationStats`]); SQL has the same table as `span_latency(start, end)`.
//!
//! ```text
//!  spans in [start, end) (service_name = s pushed into Parquet when given)
//!    │ service_name, span_name, duration_ns, status_code, sample_weight (+ start_time,
//!    │ trace_id for a report); one task per partition (graph::scan)
//!    ▼
//!  per partition: Stats = weighted count, errors, LogSketch  ──merge──> report / table
//! ```
//!
//! Percentiles come from [`sketch::LogSketch`], a mergeable log-linear histogram weighted
//! by `sample_weight`: **relative error at most 1/128 (0.78 %)** against the weighted
//! nearest-rank percentile; min and max are exact. Times are RFC 3339 or unix nanoseconds
//! (`start`/`end` default to the last hour), `step` a duration such as `30s` (default: the
//! window in 60 steps, at least 1 s; at most 11,000 steps).

mod report;
pub mod sketch;

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::catalog::Session;
use datafusion::prelude::{col, lit};
use serde::{Deserialize, Serialize};
use weft_schemas::columns::SERVICE_NAME;

pub use report::{HistogramBucket, LatencyReport, OperationStats, Quantiles, StepPoint};

use crate::graph::params::{now_ns, parse_duration, time_range};
use crate::graph::scan::{TimeRange, scan};
use crate::{Error, QueryService, Result};

/// Most points a series may have.
const MAX_STEPS: i64 = 11_000;
/// Steps the series has when `step` is not given.
const DEFAULT_STEPS: i64 = 60;

/// A latency request, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct LatencyQuery {
    /// `None`: the table of every (service, operation).
    pub service: Option<String>,
    /// Only with `service`.
    pub operation: Option<String>,
    pub range: TimeRange,
    /// Series step; `None` for the default.
    pub step_ns: Option<i64>,
    /// A second window to report on the same way.
    pub compare: Option<TimeRange>,
}

/// The answer to `GET /api/v1/latency`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum LatencyResponse {
    Service(Box<ServiceLatency>),
    Operations(OperationTable),
}

/// A service (or operation) report, and the same for the comparison window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServiceLatency {
    pub service: String,
    pub operation: Option<String>,
    pub step_ns: i64,
    pub current: LatencyReport,
    pub compare: Option<LatencyReport>,
}

/// Every (service, operation) of a window, sorted by service then operation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationTable {
    pub current: OperationList,
    pub compare: Option<OperationList>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OperationList {
    pub start_ns: i64,
    pub end_ns: i64,
    pub operations: Vec<OperationStats>,
}

/// Computes a latency response within the query time limit.
pub async fn latency(service: &QueryService, query: &LatencyQuery) -> Result<LatencyResponse> {
    let timeout = service.config().timeout_secs;
    let ctx = service.session()?;
    let state = ctx.state();
    tokio::time::timeout(Duration::from_secs(timeout), compute(&state, query))
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

async fn compute(session: &dyn Session, query: &LatencyQuery) -> Result<LatencyResponse> {
    let Some(service) = &query.service else {
        if query.operation.is_some() {
            return Err(Error::BadRequest("operation needs service".into()));
        }
        let current = operation_list(session, query.range).await?;
        let compare = match query.compare {
            Some(range) => Some(operation_list(session, range).await?),
            None => None,
        };
        return Ok(LatencyResponse::Operations(OperationTable {
            current,
            compare,
        }));
    };
    let step_ns = match query.step_ns {
        Some(step) => step,
        None => default_step(query.range),
    };
    let longest = query
        .compare
        .map_or(0, |c| c.end_ns - c.start_ns)
        .max(query.range.end_ns - query.range.start_ns);
    let steps = (longest - 1) / step_ns + 1;
    if steps > MAX_STEPS {
        return Err(Error::BadRequest(format!(
            "step {step_ns}ns gives {steps} points; at most {MAX_STEPS} are allowed"
        )));
    }
    let report = |range: TimeRange| {
        service_report(
            session,
            report::ReportSpec {
                service: service.clone(),
                operation: query.operation.clone(),
                range,
                step_ns,
                steps: ((range.end_ns - range.start_ns - 1) / step_ns + 1) as usize,
            },
        )
    };
    let current = report(query.range).await?;
    let compare = match query.compare {
        Some(range) => Some(report(range).await?),
        None => None,
    };
    Ok(LatencyResponse::Service(Box::new(ServiceLatency {
        service: service.clone(),
        operation: query.operation.clone(),
        step_ns,
        current,
        compare,
    })))
}

/// The window in [`DEFAULT_STEPS`] steps, rounded up to whole seconds.
fn default_step(range: TimeRange) -> i64 {
    const SECOND: i64 = 1_000_000_000;
    let raw = (range.end_ns - range.start_ns) / DEFAULT_STEPS;
    ((raw + SECOND - 1) / SECOND).max(1) * SECOND
}

async fn service_report(session: &dyn Session, spec: report::ReportSpec) -> Result<LatencyReport> {
    let filter = col(SERVICE_NAME).eq(lit(spec.service.as_str()));
    let spec = Arc::new(spec);
    let outputs = scan(
        session,
        &report::REPORT_COLUMNS,
        spec.range,
        vec![filter],
        || report::ReportWorker::new(spec.clone()),
    )
    .await?;
    Ok(report::build_report(&spec, outputs))
}

async fn operation_list(session: &dyn Session, range: TimeRange) -> Result<OperationList> {
    Ok(OperationList {
        start_ns: range.start_ns,
        end_ns: range.end_ns,
        operations: operation_rows(session, range).await?,
    })
}

/// Every (service, operation) starting in `range`, sorted.
pub(crate) async fn operation_rows(
    session: &dyn Session,
    range: TimeRange,
) -> Result<Vec<OperationStats>> {
    let outputs = scan(
        session,
        &report::OPS_COLUMNS,
        range,
        Vec::new(),
        report::OpsWorker::new,
    )
    .await?;
    Ok(report::merge_ops(outputs)
        .iter()
        .map(|((service, operation), stats)| {
            report::operation_stats(service, operation, stats, range)
        })
        .collect())
}

/// Schema of the SQL table function `span_latency(start, end)`.
pub(crate) fn operation_schema() -> SchemaRef {
    let ns = |name: &str| Field::new(name, DataType::Int64, true);
    let f64 = |name: &str| Field::new(name, DataType::Float64, false);
    Arc::new(Schema::new(vec![
        Field::new("service_name", DataType::Utf8, false),
        Field::new("span_name", DataType::Utf8, false),
        f64("count"),
        f64("rate_per_sec"),
        f64("errors"),
        f64("error_rate"),
        ns("p50_ns"),
        ns("p90_ns"),
        ns("p95_ns"),
        ns("p99_ns"),
        ns("max_ns"),
    ]))
}

/// Rows of `span_latency(start, end)`.
pub(crate) async fn operation_batch(
    session: &dyn Session,
    range: TimeRange,
) -> Result<RecordBatch> {
    let rows = operation_rows(session, range).await?;
    let text = |f: fn(&OperationStats) -> &str| -> ArrayRef {
        Arc::new(rows.iter().map(|r| Some(f(r))).collect::<StringArray>())
    };
    let float = |f: fn(&OperationStats) -> f64| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Float64Array>())
    };
    let ns = |f: fn(&OperationStats) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<Int64Array>())
    };
    let columns = vec![
        text(|r| &r.service),
        text(|r| &r.operation),
        float(|r| r.count),
        float(|r| r.rate_per_sec),
        float(|r| r.errors),
        float(|r| r.error_rate),
        ns(|r| r.p50_ns),
        ns(|r| r.p90_ns),
        ns(|r| r.p95_ns),
        ns(|r| r.p99_ns),
        ns(|r| r.max_ns),
    ];
    RecordBatch::try_new(operation_schema(), columns).map_err(|e| Error::Execution(e.to_string()))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LatencyParams {
    service: Option<String>,
    operation: Option<String>,
    start: Option<String>,
    end: Option<String>,
    step: Option<String>,
    compare_start: Option<String>,
    compare_end: Option<String>,
}

impl LatencyParams {
    pub(crate) fn parse(self, now_ns: i64) -> Result<LatencyQuery> {
        let non_empty = |v: Option<String>| v.filter(|s| !s.is_empty());
        let service = non_empty(self.service);
        let operation = non_empty(self.operation);
        if operation.is_some() && service.is_none() {
            return Err(Error::BadRequest("operation needs service".into()));
        }
        let range = time_range(self.start.as_deref(), self.end.as_deref(), now_ns)?;
        let compare = match (self.compare_start, self.compare_end) {
            (None, None) => None,
            (Some(start), Some(end)) => Some(time_range(Some(&start), Some(&end), now_ns)?),
            _ => {
                return Err(Error::BadRequest(
                    "compare_start and compare_end go together".into(),
                ));
            }
        };
        let step_ns = self.step.map(|s| parse_duration("step", &s)).transpose()?;
        Ok(LatencyQuery {
            service,
            operation,
            range,
            step_ns,
            compare,
        })
    }
}

/// `GET /api/v1/latency`.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/latency", get(latency_handler))
        .with_state(service)
}

async fn latency_handler(
    State(service): State<Arc<QueryService>>,
    params: Result<Query<LatencyParams>, QueryRejection>,
) -> Result<Json<LatencyResponse>> {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let query = params.parse(now_ns())?;
    Ok(Json(latency(&service, &query).await?))
}

#[cfg(test)]
mod tests;
