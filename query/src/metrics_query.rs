//! Metrics queries over HTTP: list metrics, list the series of one, and range queries that
//! turn points into one time series per group (sum, avg, min, max, count, rate over
//! counters with resets, histogram quantiles over merged buckets).
//!
//! ```text
//!  GET /api/v1/metrics               ─> metrics GROUP BY name, type      (DataFrame API)
//!  GET /api/v1/metrics/series        ─> metrics WHERE name, match[..] GROUP BY series_id
//!  GET /api/v1/metrics/query_range   ─> params ─> RangeQuery (400 on anything bad)
//!        ─> metrics WHERE name = ?, time in [start - lookback, end), match[..]
//!           ORDER BY series_id, time          (stream; session memory + time limits)
//!        ─> Engine: per series, per step bucket [t, t + step):
//!              gauge, cumulative sum ─ last value      delta sum ─ sum of values
//!              rate ─ increase (resets: a drop or a new start_time restarts from 0)
//!              histogram_quantile ─ bucket-count increase, buckets keyed by upper bound
//!           then per group (group_by attributes) and bucket: sum/avg/min/max/count of
//!           the series' values, rate = summed increase / step, quantile of the merged
//!           histogram (Prometheus' linear interpolation)
//!        ─> {"series": [{"group": {...}, "points": [{"time", "value"}]}]}
//! ```
//!
//! User input never becomes SQL text: every filter is a DataFusion `Expr` with literals.
//! `match[key]=value` and `group_by=key` name point attributes; the key `service_name`
//! means the resource's service. Times are RFC 3339 or Unix seconds; durations are
//! seconds or Prometheus-style (`90s`, `5m`, `1h30m`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Array, Int8Array, Int32Array, ListArray, MapArray, RecordBatch,
    StringArray, TimestampNanosecondArray, UInt64Array,
};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use axum::Router;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use datafusion::functions::core::expr_fn::{coalesce, get_field};
use datafusion::functions_aggregate::expr_fn::{count, count_distinct, first_value, max, min};
use datafusion::logical_expr::{Expr, cast};
use datafusion::prelude::{DataFrame, SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use futures::StreamExt;
use serde_json::{Value, json};
use weft_schemas::Table;
use weft_schemas::columns::*;
use weft_schemas::metrics::metric_type;

use crate::{Error, QueryService, Result};

/// Most buckets one range query may ask for (as Prometheus).
pub const MAX_STEPS: i64 = 11_000;
/// Default range when `start` is absent: one hour before `end`.
const DEFAULT_RANGE_NS: i64 = 3_600 * 1_000_000_000;
/// Default `step`.
const DEFAULT_STEP_NS: i64 = 60 * 1_000_000_000;

/// `GET /api/v1/metrics...`.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/metrics", get(list))
        .route("/api/v1/metrics/series", get(series))
        .route("/api/v1/metrics/query_range", get(query_range))
        .with_state(service)
}

type Pairs = std::result::Result<Query<Vec<(String, String)>>, QueryRejection>;

fn pairs(query: Pairs) -> Result<Vec<(String, String)>> {
    query
        .map(|Query(p)| p)
        .map_err(|e| Error::BadRequest(format!("bad query string: {}", e.body_text())))
}

// ---- parameters -----------------------------------------------------------------------------

/// What a `match[..]` or `group_by` key names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Label {
    /// `service_name`: the resource's service.
    Service,
    /// A point attribute.
    Attribute(String),
}

impl Label {
    fn parse(key: &str) -> Result<Self> {
        match key {
            "" => Err(Error::BadRequest("empty attribute name".into())),
            "service_name" => Ok(Label::Service),
            other => Ok(Label::Attribute(other.to_owned())),
        }
    }

    fn name(&self) -> &str {
        match self {
            Label::Service => SERVICE_NAME,
            Label::Attribute(key) => key,
        }
    }

    fn expr(&self) -> Expr {
        match self {
            Label::Service => cast(col(SERVICE_NAME), DataType::Utf8),
            Label::Attribute(key) => get_field(col(ATTRIBUTES), key.as_str()),
        }
    }
}

/// How a range query combines points.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Agg {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Rate,
    HistogramQuantile(f64),
}

/// The parameters every endpoint shares.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    pub metric: Option<String>,
    pub matchers: Vec<(Label, String)>,
    /// Nanoseconds since 1970, `[start, end)`; `None` is unbounded.
    pub start: Option<i64>,
    pub end: Option<i64>,
}

/// A parsed `query_range` request.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeQuery {
    pub metric: String,
    pub matchers: Vec<(Label, String)>,
    pub start: i64,
    pub end: i64,
    pub step: i64,
    pub agg: Agg,
    pub group_by: Vec<Label>,
}

/// Parses `pairs` accepting only the keys in `allowed` (and `match[..]` when listed).
fn selector(
    pairs: &[(String, String)],
    allowed: &[&str],
) -> Result<(Selector, HashMap<String, String>)> {
    let mut selector = Selector {
        metric: None,
        matchers: Vec::new(),
        start: None,
        end: None,
    };
    let mut rest = HashMap::new();
    for (key, value) in pairs {
        if let Some(attr) = key.strip_prefix("match[").and_then(|k| k.strip_suffix(']')) {
            if !allowed.contains(&"match") {
                return Err(Error::BadRequest(format!("unknown parameter {key:?}")));
            }
            selector.matchers.push((Label::parse(attr)?, value.clone()));
            continue;
        }
        if !allowed.contains(&key.as_str()) {
            return Err(Error::BadRequest(format!(
                "unknown parameter {key:?} (expected {})",
                allowed.join(", ")
            )));
        }
        if rest.insert(key.clone(), value.clone()).is_some() {
            return Err(Error::BadRequest(format!("parameter {key:?} given twice")));
        }
    }
    if let Some(metric) = rest.remove("metric") {
        if metric.is_empty() {
            return Err(Error::BadRequest("metric must not be empty".into()));
        }
        selector.metric = Some(metric);
    }
    selector.start = rest.remove("start").map(|s| parse_time(&s)).transpose()?;
    selector.end = rest.remove("end").map(|s| parse_time(&s)).transpose()?;
    if let (Some(start), Some(end)) = (selector.start, selector.end)
        && start >= end
    {
        return Err(Error::BadRequest("start must be before end".into()));
    }
    Ok((selector, rest))
}

/// Parses a `query_range` request; `now` (ns) is the default `end`.
pub fn parse_range_query(pairs: &[(String, String)], now: i64) -> Result<RangeQuery> {
    let (selector, mut rest) = selector(
        pairs,
        &[
            "metric", "start", "end", "step", "agg", "q", "group_by", "match",
        ],
    )?;
    let metric = selector
        .metric
        .ok_or_else(|| Error::BadRequest("metric is required".into()))?;
    let end = selector.end.unwrap_or(now);
    let start = selector
        .start
        .unwrap_or(end.saturating_sub(DEFAULT_RANGE_NS));
    if start >= end {
        return Err(Error::BadRequest("start must be before end".into()));
    }
    let step = match rest.remove("step") {
        Some(s) => parse_duration(&s)?,
        None => DEFAULT_STEP_NS,
    };
    // i128: `end - start` can exceed i64 for extreme (but valid) times.
    let steps = (i128::from(end) - i128::from(start) + i128::from(step) - 1) / i128::from(step);
    if steps > i128::from(MAX_STEPS) {
        return Err(Error::BadRequest(format!(
            "{steps} steps exceed the limit of {MAX_STEPS}: use a larger step or a shorter range"
        )));
    }
    let q = rest
        .remove("q")
        .map(|q| {
            q.parse::<f64>()
                .ok()
                .filter(|q| (0.0..=1.0).contains(q))
                .ok_or_else(|| Error::BadRequest(format!("q={q:?} must be a number in [0, 1]")))
        })
        .transpose()?;
    let agg = match rest.remove("agg").as_deref().unwrap_or("sum") {
        "sum" => Agg::Sum,
        "avg" => Agg::Avg,
        "min" => Agg::Min,
        "max" => Agg::Max,
        "count" => Agg::Count,
        "rate" => Agg::Rate,
        "histogram_quantile" => Agg::HistogramQuantile(
            q.ok_or_else(|| Error::BadRequest("histogram_quantile needs q".into()))?,
        ),
        other => {
            return Err(Error::BadRequest(format!(
                "agg={other:?}: expected sum, avg, min, max, count, rate or histogram_quantile"
            )));
        }
    };
    if q.is_some() && !matches!(agg, Agg::HistogramQuantile(_)) {
        return Err(Error::BadRequest(
            "q only applies to histogram_quantile".into(),
        ));
    }
    let group_by = match rest.remove("group_by") {
        None => Vec::new(),
        Some(list) => list
            .split(',')
            .map(|k| Label::parse(k.trim()))
            .collect::<Result<Vec<_>>>()?,
    };
    Ok(RangeQuery {
        metric,
        matchers: selector.matchers,
        start,
        end,
        step,
        agg,
        group_by,
    })
}

/// RFC 3339 (`2018-12-13T14:51:00Z`) or Unix seconds (`1544712660.3`), as ns since 1970.
pub fn parse_time(text: &str) -> Result<i64> {
    let bad = || Error::BadRequest(format!("time {text:?}: expected RFC 3339 or Unix seconds"));
    if let Ok(seconds) = text.parse::<f64>() {
        let ns = seconds * 1e9;
        // Timestamps are i64 nanoseconds: about years 1677 to 2262.
        if !ns.is_finite() || ns.abs() >= 9.2e18 {
            return Err(bad());
        }
        return Ok(ns.round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .and_then(|t| t.timestamp_nanos_opt())
        .ok_or_else(bad)
}

/// Seconds (`30`, `0.5`) or Prometheus-style units (`250ms`, `90s`, `5m`, `1h30m`, `1d`,
/// `1w`), as ns; must be positive.
pub fn parse_duration(text: &str) -> Result<i64> {
    let bad = || Error::BadRequest(format!("duration {text:?}: expected e.g. 60, 30s, 5m, 1h"));
    let ns = if let Ok(seconds) = text.parse::<f64>() {
        let ns = seconds * 1e9;
        if !ns.is_finite() || ns >= 9.2e18 {
            return Err(bad());
        }
        ns.round() as i64
    } else {
        let mut total: i64 = 0;
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.chars().take_while(char::is_ascii_digit).count();
            let number: i64 = rest[..digits].parse().map_err(|_| bad())?;
            rest = &rest[digits..];
            let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
            let unit: i64 = match &rest[..unit_len] {
                "ms" => 1_000_000,
                "s" => 1_000_000_000,
                "m" => 60_000_000_000,
                "h" => 3_600_000_000_000,
                "d" => 86_400_000_000_000,
                "w" => 604_800_000_000_000,
                _ => return Err(bad()),
            };
            rest = &rest[unit_len..];
            total = number
                .checked_mul(unit)
                .and_then(|n| total.checked_add(n))
                .ok_or_else(bad)?;
        }
        total
    };
    if ns <= 0 {
        return Err(Error::BadRequest(format!(
            "duration {text:?} must be positive"
        )));
    }
    Ok(ns)
}

// ---- running queries ------------------------------------------------------------------------

fn ts(ns: i64) -> Expr {
    lit(ScalarValue::TimestampNanosecond(
        Some(ns),
        Some("UTC".into()),
    ))
}

/// `metrics` filtered by the selector.
async fn selected(ctx: &SessionContext, selector: &Selector, lookback: i64) -> Result<DataFrame> {
    let mut df = ctx.table(Table::Metrics.name()).await?;
    if let Some(metric) = &selector.metric {
        df = df.filter(col(METRIC_NAME).eq(lit(metric.as_str())))?;
    }
    if let Some(start) = selector.start {
        df = df.filter(col(TIME).gt_eq(ts(start.saturating_sub(lookback))))?;
    }
    if let Some(end) = selector.end {
        df = df.filter(col(TIME).lt(ts(end)))?;
    }
    for (label, value) in &selector.matchers {
        df = df.filter(label.expr().eq(lit(value.as_str())))?;
    }
    Ok(df)
}

/// Runs `query` in a fresh session within the query time limit and collects its rows.
async fn collect<F, Fut>(service: &QueryService, query: F) -> Result<Vec<RecordBatch>>
where
    F: FnOnce(SessionContext) -> Fut,
    Fut: Future<Output = Result<DataFrame>>,
{
    let timeout_secs = service.config().timeout_secs;
    let run = async {
        let ctx = service.session()?;
        let df = query(ctx).await?;
        Ok::<_, Error>(df.collect().await?)
    };
    tokio::time::timeout(Duration::from_secs(timeout_secs), run)
        .await
        .map_err(|_| Error::Timeout(timeout_secs))?
}

fn column<'a, T: Array + 'static>(batch: &'a RecordBatch, name: &str) -> Result<&'a T> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<T>())
        .ok_or_else(|| Error::Execution(format!("unexpected type of column {name}")))
}

/// A string-like column as `StringArray` (dictionaries and views are cast).
fn strings(batch: &RecordBatch, name: &str) -> Result<StringArray> {
    let array = batch
        .column_by_name(name)
        .ok_or_else(|| Error::Execution(format!("missing column {name}")))?;
    let cast = arrow::compute::cast(array, &DataType::Utf8)
        .map_err(|e| Error::Execution(format!("column {name}: {e}")))?;
    Ok(cast.as_string::<i32>().clone())
}

fn opt_string(a: &StringArray, row: usize) -> Option<String> {
    (!a.is_null(row)).then(|| a.value(row).to_owned())
}

fn rfc3339(ns: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(ns).to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
}

fn map_row(map: &MapArray, row: usize) -> Result<Value> {
    let entries = map.value(row);
    let keys = arrow::compute::cast(entries.column(0), &DataType::Utf8)
        .map_err(|e| Error::Execution(e.to_string()))?;
    let values = arrow::compute::cast(entries.column(1), &DataType::Utf8)
        .map_err(|e| Error::Execution(e.to_string()))?;
    let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
    let mut out = serde_json::Map::new();
    for i in 0..keys.len() {
        let value = if values.is_null(i) {
            Value::Null
        } else {
            Value::from(values.value(i))
        };
        out.insert(keys.value(i).to_owned(), value);
    }
    Ok(Value::Object(out))
}

/// The name of a `metric_type` value.
pub fn metric_type_name(t: i8) -> &'static str {
    match t {
        metric_type::GAUGE => "gauge",
        metric_type::SUM => "sum",
        metric_type::HISTOGRAM => "histogram",
        metric_type::EXPONENTIAL_HISTOGRAM => "exponential_histogram",
        metric_type::SUMMARY => "summary",
        _ => "unknown",
    }
}

// ---- GET /api/v1/metrics ----------------------------------------------------------------------

async fn list(State(service): State<Arc<QueryService>>, query: Pairs) -> Result<Response> {
    let (selector, _) = selector(&pairs(query)?, &["start", "end", "match"])?;
    let batches = collect(&service, |ctx| async move {
        Ok(selected(&ctx, &selector, 0)
            .await?
            .aggregate(
                vec![col(METRIC_NAME), col(METRIC_TYPE)],
                vec![
                    max(col(METRIC_UNIT)).alias("unit"),
                    max(col(METRIC_DESCRIPTION)).alias("description"),
                    count_distinct(col(SERIES_ID)).alias("series"),
                    count(lit(1)).alias("points"),
                ],
            )?
            .sort(vec![
                col(METRIC_NAME).sort(true, true),
                col(METRIC_TYPE).sort(true, true),
            ])?)
    })
    .await?;
    let mut metrics = Vec::new();
    for batch in &batches {
        let names = strings(batch, METRIC_NAME)?;
        let types: &Int8Array = column(batch, METRIC_TYPE)?;
        let units = strings(batch, "unit")?;
        let descriptions = strings(batch, "description")?;
        let series: &arrow::array::Int64Array = column(batch, "series")?;
        let points: &arrow::array::Int64Array = column(batch, "points")?;
        for row in 0..batch.num_rows() {
            metrics.push(json!({
                "name": names.value(row),
                "type": metric_type_name(types.value(row)),
                "unit": opt_string(&units, row),
                "description": opt_string(&descriptions, row),
                "series": series.value(row),
                "points": points.value(row),
            }));
        }
    }
    Ok(axum::Json(json!({ "metrics": metrics })).into_response())
}

// ---- GET /api/v1/metrics/series -------------------------------------------------------------

async fn series(State(service): State<Arc<QueryService>>, query: Pairs) -> Result<Response> {
    let (selector, _) = selector(&pairs(query)?, &["metric", "start", "end", "match"])?;
    if selector.metric.is_none() {
        return Err(Error::BadRequest("metric is required".into()));
    }
    let limit = service.config().max_result_rows;
    let batches = collect(&service, |ctx| async move {
        let latest = || vec![col(TIME).sort(false, false)];
        Ok(selected(&ctx, &selector, 0)
            .await?
            .aggregate(
                vec![col(SERIES_ID)],
                vec![
                    first_value(cast(col(SERVICE_NAME), DataType::Utf8), latest())
                        .alias(SERVICE_NAME),
                    first_value(col(ATTRIBUTES), latest()).alias(ATTRIBUTES),
                    first_value(col(RESOURCE_ATTRIBUTES), latest()).alias(RESOURCE_ATTRIBUTES),
                    min(col(TIME)).alias("first_time"),
                    max(col(TIME)).alias("last_time"),
                    count(lit(1)).alias("points"),
                ],
            )?
            .sort(vec![col(SERIES_ID).sort(true, true)])?
            .limit(0, Some(limit + 1))?)
    })
    .await?;
    let mut out = Vec::new();
    for batch in &batches {
        let ids: &UInt64Array = column(batch, SERIES_ID)?;
        let services = strings(batch, SERVICE_NAME)?;
        let attributes: &MapArray = column(batch, ATTRIBUTES)?;
        let resources: &MapArray = column(batch, RESOURCE_ATTRIBUTES)?;
        let first: &TimestampNanosecondArray = column(batch, "first_time")?;
        let last: &TimestampNanosecondArray = column(batch, "last_time")?;
        let points: &arrow::array::Int64Array = column(batch, "points")?;
        for row in 0..batch.num_rows() {
            out.push(json!({
                // A string: JSON numbers lose precision above 2^53.
                "series_id": ids.value(row).to_string(),
                "service_name": opt_string(&services, row),
                "attributes": map_row(attributes, row)?,
                "resource_attributes": map_row(resources, row)?,
                "first_time": rfc3339(first.value(row)),
                "last_time": rfc3339(last.value(row)),
                "points": points.value(row),
            }));
        }
    }
    let truncated = out.len() > limit;
    out.truncate(limit);
    Ok(axum::Json(json!({ "series": out, "truncated": truncated })).into_response())
}

// ---- GET /api/v1/metrics/query_range --------------------------------------------------------

async fn query_range(State(service): State<Arc<QueryService>>, query: Pairs) -> Result<Response> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let query = parse_range_query(&pairs(query)?, now)?;
    let timeout_secs = service.config().timeout_secs;
    let max_points = service.config().max_result_rows;
    let run = async {
        let ctx = service.session()?;
        let mut engine = Engine::new(&query);
        let selector = Selector {
            metric: Some(query.metric.clone()),
            matchers: query.matchers.clone(),
            start: Some(query.start),
            end: Some(query.end),
        };
        // Counters and cumulative histograms need the point before a bucket to know its
        // increase, so those reads start one step early.
        let lookback = match query.agg {
            Agg::Rate | Agg::HistogramQuantile(_) => query.step,
            _ => 0,
        };
        let mut projection = vec![
            col(SERIES_ID),
            col(METRIC_TYPE),
            col(AGGREGATION_TEMPORALITY),
            col(START_TIME),
            col(TIME),
            coalesce(vec![
                col(VALUE_DOUBLE),
                cast(col(VALUE_INT), DataType::Float64),
            ])
            .alias("value"),
            col(COUNT),
        ];
        if matches!(query.agg, Agg::HistogramQuantile(_)) {
            projection.extend(
                [
                    BUCKET_COUNTS,
                    EXPLICIT_BOUNDS,
                    EXP_SCALE,
                    EXP_ZERO_COUNT,
                    EXP_ZERO_THRESHOLD,
                    EXP_POSITIVE_OFFSET,
                    EXP_POSITIVE_BUCKET_COUNTS,
                    EXP_NEGATIVE_OFFSET,
                    EXP_NEGATIVE_BUCKET_COUNTS,
                ]
                .map(col),
            );
        }
        for (i, label) in query.group_by.iter().enumerate() {
            projection.push(label.expr().alias(format!("g{i}")));
        }
        let mut stream = selected(&ctx, &selector, lookback)
            .await?
            .select(projection)?
            .sort(vec![
                col(SERIES_ID).sort(true, true),
                col(TIME).sort(true, true),
            ])?
            .execute_stream()
            .await?;
        while let Some(batch) = stream.next().await {
            engine.push_batch(&batch?)?;
        }
        engine.finish(max_points)
    };
    let (metric_type, series) = tokio::time::timeout(Duration::from_secs(timeout_secs), run)
        .await
        .map_err(|_| Error::Timeout(timeout_secs))??;
    let series: Vec<Value> = series
        .into_iter()
        .map(|(group, points)| {
            let group: serde_json::Map<String, Value> = query
                .group_by
                .iter()
                .zip(group)
                .map(|(label, value)| (label.name().to_owned(), Value::from(value)))
                .collect();
            let points: Vec<Value> = points
                .into_iter()
                .map(|(t, v)| json!({ "time": rfc3339(t), "value": v }))
                .collect();
            json!({ "group": group, "points": points })
        })
        .collect();
    Ok(axum::Json(json!({
        "metric": query.metric,
        "type": metric_type.map(metric_type_name),
        "start": rfc3339(query.start),
        "end": rfc3339(query.end),
        "step_seconds": query.step as f64 / 1e9,
        "series": series,
    }))
    .into_response())
}

// ---- the range-query engine -----------------------------------------------------------------

/// A histogram as (upper bound, count) buckets sorted by bound; the last may be +Inf.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hist {
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
}

impl Hist {
    /// Explicit bounds `b`, counts `c` (`c.len() == b.len() + 1`; the last is +Inf).
    pub fn explicit(bounds: &[f64], counts: &[u64]) -> Self {
        let buckets = counts
            .iter()
            .enumerate()
            .map(|(i, c)| (bounds.get(i).copied().unwrap_or(f64::INFINITY), *c as f64))
            .collect::<Vec<_>>();
        Self::from_buckets(buckets)
    }

    /// An exponential histogram: bucket `i` of scale `s` covers `(base^i, base^(i+1)]`
    /// with `base = 2^(2^-s)`; negative buckets mirror it; the zero bucket ends at the
    /// zero threshold.
    pub fn exponential(
        scale: i32,
        zero_count: u64,
        zero_threshold: f64,
        positive: Option<(i32, &[u64])>,
        negative: Option<(i32, &[u64])>,
    ) -> Self {
        let factor = (-f64::from(scale)).exp2();
        let bound = |index: i64| (index as f64 * factor).exp2();
        let mut buckets = vec![(zero_threshold, zero_count as f64)];
        if let Some((offset, counts)) = positive {
            for (j, c) in counts.iter().enumerate() {
                buckets.push((bound(i64::from(offset) + j as i64 + 1), *c as f64));
            }
        }
        if let Some((offset, counts)) = negative {
            for (j, c) in counts.iter().enumerate() {
                buckets.push((-bound(i64::from(offset) + j as i64), *c as f64));
            }
        }
        Self::from_buckets(buckets)
    }

    fn from_buckets(mut buckets: Vec<(f64, f64)>) -> Self {
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        let count = buckets.iter().map(|b| b.1).sum();
        Self { buckets, count }
    }

    /// Adds `other`'s counts bucket by bucket (matched by upper bound).
    fn merge(&mut self, other: &Hist) {
        let mut merged: BTreeMap<u64, (f64, f64)> = BTreeMap::new();
        for (bound, count) in self.buckets.iter().chain(&other.buckets) {
            merged.entry(bound.to_bits()).or_insert((*bound, 0.0)).1 += count;
        }
        *self = Self::from_buckets(merged.into_values().collect());
    }

    /// The increase from `prev` to `self` (both cumulative), or `None` after a reset
    /// (fewer observations, or a bucket that went down: new layout or restarted series).
    fn increase_since(&self, prev: &Hist) -> Option<Hist> {
        if self.count < prev.count {
            return None;
        }
        let before: HashMap<u64, f64> = prev
            .buckets
            .iter()
            .map(|(b, c)| (b.to_bits(), *c))
            .collect();
        let mut buckets = Vec::with_capacity(self.buckets.len());
        for (bound, count) in &self.buckets {
            let delta = count - before.get(&bound.to_bits()).copied().unwrap_or(0.0);
            if delta < 0.0 {
                return None;
            }
            buckets.push((*bound, delta));
        }
        Some(Self::from_buckets(buckets))
    }

    /// Prometheus' `histogram_quantile`: linear interpolation inside the bucket holding the
    /// rank; the +Inf bucket answers the largest finite bound. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total: f64 = self.buckets.iter().map(|b| b.1).sum();
        if total <= 0.0 || self.buckets.is_empty() {
            return None;
        }
        let rank = q * total;
        let mut cumulative = 0.0;
        for (i, (upper, count)) in self.buckets.iter().enumerate() {
            let below = cumulative;
            cumulative += count;
            if cumulative < rank || *count == 0.0 && cumulative < total {
                continue;
            }
            if upper.is_infinite() {
                return if i == 0 {
                    None
                } else {
                    Some(self.buckets[i - 1].0)
                };
            }
            if i == 0 && *upper <= 0.0 {
                return Some(*upper);
            }
            let lower = if i == 0 { 0.0 } else { self.buckets[i - 1].0 };
            return Some(lower + (upper - lower) * ((rank - below) / count));
        }
        self.buckets.last().map(|b| b.0)
    }
}

/// One stored point, as the engine sees it.
#[derive(Debug, Clone)]
pub struct Point {
    pub series_id: u64,
    pub group: Vec<Option<String>>,
    pub metric_type: i8,
    /// 1 delta, 2 cumulative; `None` (gauges, summaries) counts as cumulative.
    pub temporality: Option<i8>,
    pub start_time: Option<i64>,
    pub time: i64,
    pub value: Option<f64>,
    pub count: Option<u64>,
    pub hist: Option<Hist>,
}

impl Point {
    fn is_delta(&self) -> bool {
        self.temporality == Some(1)
    }
}

/// What one series contributes to one bucket.
#[derive(Debug, Clone)]
enum Sample {
    /// Gauge or cumulative sum: the last value wins.
    Last(f64),
    /// Delta sums and increases: values add up.
    Sum(f64),
    Hist(Hist),
}

/// One group's bucket: the series' samples combined.
#[derive(Debug, Clone, Default)]
struct Acc {
    sum: f64,
    n: u64,
    min: f64,
    max: f64,
    hist: Option<Hist>,
}

impl Acc {
    fn add(&mut self, sample: Sample) {
        match sample {
            Sample::Last(v) | Sample::Sum(v) => {
                if self.n == 0 {
                    (self.min, self.max) = (v, v);
                } else {
                    self.min = self.min.min(v);
                    self.max = self.max.max(v);
                }
                self.sum += v;
                self.n += 1;
            }
            Sample::Hist(h) => match &mut self.hist {
                Some(acc) => acc.merge(&h),
                None => self.hist = Some(h),
            },
        }
    }
}

/// The series being read (points arrive ordered by series, then time).
struct Cursor {
    series_id: u64,
    group: Vec<Option<String>>,
    /// The previous point's (start_time, counter value), for increases.
    prev_value: Option<(Option<i64>, f64)>,
    prev_hist: Option<(Option<i64>, Hist)>,
    /// This series' sample for bucket `.0`, not yet added to its group.
    pending: Option<(i64, Sample)>,
}

/// Turns ordered points into per-group, per-bucket values; see the module docs.
pub struct Engine {
    agg: Agg,
    start: i64,
    step: i64,
    /// Points before this only serve as the previous point of an increase; a cumulative
    /// series whose start_time is at or after it began inside the read window.
    window_start: i64,
    metric_type: Option<i8>,
    cursor: Option<Cursor>,
    groups: BTreeMap<Vec<Option<String>>, BTreeMap<i64, Acc>>,
    group_columns: usize,
}

/// Groups with their points: `(time ns, value)` per non-empty bucket.
pub type Series = Vec<(Vec<Option<String>>, Vec<(i64, f64)>)>;

impl Engine {
    pub fn new(query: &RangeQuery) -> Self {
        let lookback = match query.agg {
            Agg::Rate | Agg::HistogramQuantile(_) => query.step,
            _ => 0,
        };
        Self {
            agg: query.agg,
            start: query.start,
            step: query.step,
            window_start: query.start.saturating_sub(lookback),
            metric_type: None,
            cursor: None,
            groups: BTreeMap::new(),
            group_columns: query.group_by.len(),
        }
    }

    fn flush(&mut self) {
        if let Some(cursor) = &mut self.cursor
            && let Some((bucket, sample)) = cursor.pending.take()
        {
            self.groups
                .entry(cursor.group.clone())
                .or_default()
                .entry(bucket)
                .or_default()
                .add(sample);
        }
    }

    /// Adds one point; points must come ordered by (series_id, time).
    pub fn push(&mut self, point: Point) -> Result<()> {
        self.metric_type.get_or_insert(point.metric_type);
        self.check_type(point.metric_type)?;
        if self
            .cursor
            .as_ref()
            .is_none_or(|c| c.series_id != point.series_id)
        {
            self.flush();
            self.cursor = Some(Cursor {
                series_id: point.series_id,
                group: point.group.clone(),
                prev_value: None,
                prev_hist: None,
                pending: None,
            });
        }
        let bucket = (point.time - self.start).div_euclid(self.step);
        let sample = match self.agg {
            Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Count => {
                let Some(v) = point.value else { return Ok(()) };
                if point.is_delta() {
                    Some(Sample::Sum(v))
                } else {
                    Some(Sample::Last(v))
                }
            }
            Agg::Rate => {
                let value = match point.metric_type {
                    metric_type::SUM => point.value,
                    _ => point.count.map(|c| c as f64),
                };
                let Some(v) = value else { return Ok(()) };
                let increase = if point.is_delta() {
                    Some(v)
                } else {
                    let cursor = self.cursor.as_mut().expect("cursor set above");
                    let prev = cursor.prev_value.replace((point.start_time, v));
                    self.counter_increase(prev, point.start_time, v)
                };
                increase.map(Sample::Sum)
            }
            Agg::HistogramQuantile(_) => {
                let delta = point.is_delta();
                let Some(hist) = point.hist else {
                    return Ok(());
                };
                let increase = if delta {
                    Some(hist)
                } else {
                    let cursor = self.cursor.as_mut().expect("cursor set above");
                    let prev = cursor.prev_hist.replace((point.start_time, hist.clone()));
                    match prev {
                        Some((prev_start, prev)) => {
                            let restarted = prev_start.is_some()
                                && point.start_time.is_some()
                                && prev_start != point.start_time;
                            if restarted {
                                Some(hist)
                            } else {
                                Some(hist.increase_since(&prev).unwrap_or(hist))
                            }
                        }
                        None => self.began_in_window(point.start_time).then_some(hist),
                    }
                };
                increase.map(Sample::Hist)
            }
        };
        // Points before `start` only served as "previous".
        let (Some(sample), true) = (sample, bucket >= 0) else {
            return Ok(());
        };
        let cursor = self.cursor.as_mut().expect("cursor set above");
        match cursor.pending.take() {
            Some((b, pending)) if b == bucket => {
                cursor.pending = Some((bucket, combine(pending, sample)));
            }
            earlier => {
                // A new bucket: the series' previous one is complete.
                cursor.pending = earlier;
                self.flush();
                self.cursor.as_mut().expect("cursor set above").pending = Some((bucket, sample));
            }
        }
        Ok(())
    }

    fn began_in_window(&self, start_time: Option<i64>) -> bool {
        start_time.is_some_and(|s| s >= self.window_start)
    }

    /// The increase of a cumulative counter since its previous point. A value below the
    /// previous one, or a new start time, is a reset: the counter restarted from zero, so
    /// the whole value is the increase.
    fn counter_increase(
        &self,
        prev: Option<(Option<i64>, f64)>,
        start: Option<i64>,
        v: f64,
    ) -> Option<f64> {
        match prev {
            Some((prev_start, prev_value)) => {
                let restarted = prev_start.is_some() && start.is_some() && prev_start != start;
                Some(if restarted || v < prev_value {
                    v
                } else {
                    v - prev_value
                })
            }
            None => self.began_in_window(start).then_some(v),
        }
    }

    fn check_type(&self, t: i8) -> Result<()> {
        let ok = match self.agg {
            Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Count => {
                matches!(t, metric_type::GAUGE | metric_type::SUM)
            }
            Agg::Rate => t != metric_type::GAUGE,
            Agg::HistogramQuantile(_) => {
                matches!(
                    t,
                    metric_type::HISTOGRAM | metric_type::EXPONENTIAL_HISTOGRAM
                )
            }
        };
        if ok {
            return Ok(());
        }
        let hint = match self.agg {
            Agg::Rate => "rate needs a sum, histogram or summary",
            Agg::HistogramQuantile(_) => "histogram_quantile needs a histogram",
            _ => {
                "sum, avg, min, max and count need a gauge or sum (use rate or histogram_quantile)"
            }
        };
        Err(Error::BadRequest(format!(
            "the metric is a {}: {hint}",
            metric_type_name(t)
        )))
    }

    /// Reads the rows of one batch of the range query's projection.
    fn push_batch(&mut self, batch: &RecordBatch) -> Result<()> {
        let ids: &UInt64Array = column(batch, SERIES_ID)?;
        let types: &Int8Array = column(batch, METRIC_TYPE)?;
        let temporality: &Int8Array = column(batch, AGGREGATION_TEMPORALITY)?;
        let starts: &TimestampNanosecondArray = column(batch, START_TIME)?;
        let times: &TimestampNanosecondArray = column(batch, TIME)?;
        let values: &Float64Array = column(batch, "value")?;
        let counts: &UInt64Array = column(batch, COUNT)?;
        let groups = (0..self.group_columns)
            .map(|i| strings(batch, &format!("g{i}")))
            .collect::<Result<Vec<_>>>()?;
        let hist = matches!(self.agg, Agg::HistogramQuantile(_))
            .then(|| HistColumns::new(batch))
            .transpose()?;
        let opt_i64 = |a: &TimestampNanosecondArray, row| (!a.is_null(row)).then(|| a.value(row));
        for row in 0..batch.num_rows() {
            let t = types.value(row);
            let point = Point {
                series_id: ids.value(row),
                group: groups.iter().map(|g| opt_string(g, row)).collect(),
                metric_type: t,
                temporality: (!temporality.is_null(row)).then(|| temporality.value(row)),
                start_time: opt_i64(starts, row),
                time: times.value(row),
                value: (!values.is_null(row)).then(|| values.value(row)),
                count: (!counts.is_null(row)).then(|| counts.value(row)),
                hist: match &hist {
                    Some(h) => h.read(t, row),
                    None => None,
                },
            };
            self.push(point)?;
        }
        Ok(())
    }

    /// The metric's type and the result, non-empty buckets only. Fails when the result
    /// would hold more than `max_points` points.
    pub fn finish(mut self, max_points: usize) -> Result<(Option<i8>, Series)> {
        self.flush();
        let total: usize = self.groups.values().map(|b| b.len()).sum();
        if total > max_points {
            return Err(Error::BadRequest(format!(
                "the result would have {total} points, more than query.max_result_rows \
                 ({max_points}): use a larger step, a shorter range or fewer group_by keys"
            )));
        }
        let step_secs = self.step as f64 / 1e9;
        let series = self
            .groups
            .into_iter()
            .map(|(group, buckets)| {
                let points = buckets
                    .into_iter()
                    .filter_map(|(bucket, acc)| {
                        let value = match self.agg {
                            Agg::Sum => Some(acc.sum),
                            Agg::Avg => Some(acc.sum / acc.n as f64),
                            Agg::Min => Some(acc.min),
                            Agg::Max => Some(acc.max),
                            Agg::Count => Some(acc.n as f64),
                            Agg::Rate => Some(acc.sum / step_secs),
                            Agg::HistogramQuantile(q) => acc.hist.and_then(|h| h.quantile(q)),
                        }?;
                        // JSON has no NaN or infinity.
                        value
                            .is_finite()
                            .then(|| (self.start + bucket * self.step, value))
                    })
                    .collect();
                (group, points)
            })
            .collect();
        Ok((self.metric_type, series))
    }
}

fn combine(a: Sample, b: Sample) -> Sample {
    match (a, b) {
        (Sample::Sum(x), Sample::Sum(y)) => Sample::Sum(x + y),
        (Sample::Hist(mut x), Sample::Hist(y)) => {
            x.merge(&y);
            Sample::Hist(x)
        }
        (_, later) => later,
    }
}

/// The histogram columns of the range query's projection.
struct HistColumns<'a> {
    counts: &'a ListArray,
    bounds: &'a ListArray,
    scale: &'a Int32Array,
    zero_count: &'a UInt64Array,
    zero_threshold: &'a Float64Array,
    pos_offset: &'a Int32Array,
    pos_counts: &'a ListArray,
    neg_offset: &'a Int32Array,
    neg_counts: &'a ListArray,
}

impl<'a> HistColumns<'a> {
    fn new(batch: &'a RecordBatch) -> Result<Self> {
        Ok(Self {
            counts: column(batch, BUCKET_COUNTS)?,
            bounds: column(batch, EXPLICIT_BOUNDS)?,
            scale: column(batch, EXP_SCALE)?,
            zero_count: column(batch, EXP_ZERO_COUNT)?,
            zero_threshold: column(batch, EXP_ZERO_THRESHOLD)?,
            pos_offset: column(batch, EXP_POSITIVE_OFFSET)?,
            pos_counts: column(batch, EXP_POSITIVE_BUCKET_COUNTS)?,
            neg_offset: column(batch, EXP_NEGATIVE_OFFSET)?,
            neg_counts: column(batch, EXP_NEGATIVE_BUCKET_COUNTS)?,
        })
    }

    fn u64s(list: &ListArray, row: usize) -> Vec<u64> {
        if list.is_null(row) {
            return Vec::new();
        }
        list.value(row)
            .as_primitive::<UInt64Type>()
            .values()
            .to_vec()
    }

    fn read(&self, metric_type: i8, row: usize) -> Option<Hist> {
        match metric_type {
            metric_type::HISTOGRAM => {
                let counts = Self::u64s(self.counts, row);
                let bounds = if self.bounds.is_null(row) {
                    Vec::new()
                } else {
                    self.bounds
                        .value(row)
                        .as_primitive::<Float64Type>()
                        .values()
                        .to_vec()
                };
                Some(Hist::explicit(&bounds, &counts))
            }
            metric_type::EXPONENTIAL_HISTOGRAM => {
                let side = |offset: &Int32Array, counts: &ListArray| {
                    (!offset.is_null(row)).then(|| (offset.value(row), Self::u64s(counts, row)))
                };
                let positive = side(self.pos_offset, self.pos_counts);
                let negative = side(self.neg_offset, self.neg_counts);
                Some(Hist::exponential(
                    self.scale.value(row),
                    self.zero_count.value(row),
                    self.zero_threshold.value(row),
                    positive.as_ref().map(|(o, c)| (*o, c.as_slice())),
                    negative.as_ref().map(|(o, c)| (*o, c.as_slice())),
                ))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .filter(|p| !p.is_empty())
            .map(|p| {
                let (k, v) = p.split_once('=').unwrap_or((p, ""));
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn parse(query: &str) -> Result<RangeQuery> {
        parse_range_query(&pairs(query), 10_000 * S)
    }

    #[test]
    fn range_query_parameters() {
        let q = parse(
            "metric=http.duration&start=2018-12-13T14:51:00Z&end=1544712720&step=30s\
             &agg=histogram_quantile&q=0.99&group_by=http.route,service_name&match[code]=200",
        )
        .unwrap();
        assert_eq!(q.metric, "http.duration");
        assert_eq!(q.start, 1_544_712_660 * S);
        assert_eq!(q.end, 1_544_712_720 * S);
        assert_eq!(q.step, 30 * S);
        assert_eq!(q.agg, Agg::HistogramQuantile(0.99));
        assert_eq!(
            q.group_by,
            vec![Label::Attribute("http.route".into()), Label::Service]
        );
        assert_eq!(
            q.matchers,
            vec![(Label::Attribute("code".into()), "200".into())]
        );

        // Defaults: the hour before now, one-minute steps, sum.
        let d = parse("metric=m").unwrap();
        assert_eq!(
            (d.start, d.end, d.step, d.agg),
            (6_400 * S, 10_000 * S, 60 * S, Agg::Sum)
        );
    }

    #[test]
    fn bad_range_query_parameters_are_rejected() {
        for bad in [
            "",                                      // metric missing
            "metric=",                               // empty metric
            "metric=m&agg=median",                   // unknown agg
            "metric=m&agg=histogram_quantile",       // q missing
            "metric=m&agg=histogram_quantile&q=1.5", // q out of range
            "metric=m&agg=sum&q=0.5",                // q without quantile
            "metric=m&step=0s",                      // zero step
            "metric=m&step=-5",                      // negative step
            "metric=m&step=5parsecs",                // unknown unit
            "metric=m&start=yesterday",              // bad time
            "metric=m&start=20&end=10",              // empty range
            "metric=m&start=0&end=100000&step=1",    // too many steps
            "metric=m&group_by=a,,b",                // empty key
            "metric=m&matc[a]=b",                    // unknown parameter
            "metric=m&metric=n",                     // repeated
            "metric=m&start=1e300",                  // out of range
        ] {
            assert!(
                matches!(parse(bad), Err(Error::BadRequest(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn durations_and_times() {
        assert_eq!(parse_duration("1h30m").unwrap(), 5_400 * S);
        assert_eq!(parse_duration("250ms").unwrap(), S / 4);
        assert_eq!(parse_duration("0.5").unwrap(), S / 2);
        assert_eq!(parse_time("1.5").unwrap(), 3 * S / 2);
        assert_eq!(parse_time("1970-01-01T00:00:01+01:00").unwrap(), -3_599 * S);
    }

    fn query(agg: Agg, start: i64, end: i64, step: i64) -> RangeQuery {
        RangeQuery {
            metric: "m".into(),
            matchers: Vec::new(),
            start,
            end,
            step,
            agg,
            group_by: vec![Label::Attribute("a".into())],
        }
    }

    fn point(
        series: u64,
        group: &str,
        t: i64,
        start: Option<i64>,
        v: f64,
        cumulative: bool,
    ) -> Point {
        Point {
            series_id: series,
            group: vec![Some(group.to_owned())],
            metric_type: metric_type::SUM,
            temporality: Some(if cumulative { 2 } else { 1 }),
            start_time: start,
            time: t,
            value: Some(v),
            count: None,
            hist: None,
        }
    }

    fn run(q: &RangeQuery, points: Vec<Point>) -> Series {
        let mut engine = Engine::new(q);
        for p in points {
            engine.push(p).unwrap();
        }
        engine.finish(1_000).unwrap().1
    }

    #[test]
    fn rate_handles_counter_resets() {
        // One cumulative counter, steps of 10s from t=100s; the point at 95s is the
        // lookback. 10 -> 16 -> 4 (reset: +4) -> 9 ; then a new start time (reset).
        let q = query(Agg::Rate, 100 * S, 130 * S, 10 * S);
        let points = vec![
            point(1, "x", 95 * S, Some(0), 10.0, true),
            point(1, "x", 101 * S, Some(0), 16.0, true),
            point(1, "x", 105 * S, Some(0), 4.0, true),
            point(1, "x", 112 * S, Some(0), 9.0, true),
            point(1, "x", 121 * S, Some(120 * S), 3.0, true),
        ];
        let got = run(&q, points);
        assert_eq!(
            got,
            vec![(
                vec![Some("x".to_owned())],
                vec![
                    (100 * S, (6.0 + 4.0) / 10.0),
                    (110 * S, 0.5),
                    (120 * S, 0.3)
                ]
            )]
        );
    }

    #[test]
    fn rate_sums_series_of_a_group_and_deltas() {
        let q = query(Agg::Rate, 0, 20 * S, 10 * S);
        let points = vec![
            point(1, "x", S, None, 5.0, false),
            point(1, "x", 2 * S, None, 5.0, false),
            point(2, "x", 3 * S, None, 10.0, false),
            point(3, "y", 15 * S, None, 2.0, false),
        ];
        let got = run(&q, points);
        assert_eq!(
            got,
            vec![
                (vec![Some("x".to_owned())], vec![(0, 2.0)]),
                (vec![Some("y".to_owned())], vec![(10 * S, 0.2)]),
            ]
        );
    }

    #[test]
    fn value_aggregations_take_each_series_last_value() {
        let gauge = |series, group: &str, t, v| Point {
            metric_type: metric_type::GAUGE,
            temporality: None,
            ..point(series, group, t, None, v, true)
        };
        let points = || {
            vec![
                gauge(1, "x", S, 1.0),
                gauge(1, "x", 2 * S, 3.0), // the last value of series 1 in [0, 10s)
                gauge(2, "x", 4 * S, 7.0),
                gauge(2, "x", 11 * S, 8.0),
            ]
        };
        let x = |points: Vec<(i64, f64)>| vec![(vec![Some("x".to_owned())], points)];
        for (agg, want) in [
            (Agg::Sum, x(vec![(0, 10.0), (10 * S, 8.0)])),
            (Agg::Avg, x(vec![(0, 5.0), (10 * S, 8.0)])),
            (Agg::Min, x(vec![(0, 3.0), (10 * S, 8.0)])),
            (Agg::Max, x(vec![(0, 7.0), (10 * S, 8.0)])),
            (Agg::Count, x(vec![(0, 2.0), (10 * S, 1.0)])),
        ] {
            assert_eq!(
                run(&query(agg, 0, 20 * S, 10 * S), points()),
                want,
                "{agg:?}"
            );
        }
        let mut engine = Engine::new(&query(Agg::Rate, 0, 20 * S, 10 * S));
        assert!(matches!(
            engine.push(gauge(1, "x", S, 1.0)),
            Err(Error::BadRequest(_))
        ));
    }

    #[test]
    fn quantiles_follow_prometheus() {
        // Bounds [1, 2, 4]: counts 1, 1, 2 and none above 4.
        let h = Hist::explicit(&[1.0, 2.0, 4.0], &[1, 1, 2, 0]);
        assert_eq!(h.quantile(0.25), Some(1.0));
        assert_eq!(h.quantile(0.5), Some(2.0));
        assert_eq!(h.quantile(0.75), Some(3.0));
        assert_eq!(h.quantile(1.0), Some(4.0));
        // Observations above the last bound: the largest finite bound.
        let h = Hist::explicit(&[1.0], &[1, 1]);
        assert_eq!(h.quantile(0.5), Some(1.0));
        assert_eq!(h.quantile(0.99), Some(1.0));
        assert_eq!(Hist::explicit(&[1.0], &[0, 0]).quantile(0.5), None);
        // Exponential, scale 0: zero bucket 1, (2,4] 0, (4,8] 2.
        let e = Hist::exponential(0, 1, 0.0, Some((1, &[0, 2])), None);
        assert_eq!(e.buckets, vec![(0.0, 1.0), (4.0, 0.0), (8.0, 2.0)]);
        assert_eq!(e.quantile(0.5), Some(5.0));
    }

    #[test]
    fn cumulative_histograms_merge_increases() {
        let hist = |series, t, counts: &[u64]| Point {
            metric_type: metric_type::HISTOGRAM,
            hist: Some(Hist::explicit(&[10.0], counts)),
            ..point(series, "x", t, Some(0), 0.0, true)
        };
        let q = query(Agg::HistogramQuantile(0.5), 10 * S, 20 * S, 10 * S);
        // Series 1 gains (1, 0) in the bucket; series 2 gains (0, 3) — merged: 1 below 10,
        // 3 above, so the median is in +Inf: the largest finite bound.
        let points = vec![
            hist(1, 5 * S, &[4, 4]),
            hist(1, 15 * S, &[5, 4]),
            hist(2, 6 * S, &[0, 1]),
            hist(2, 16 * S, &[0, 4]),
        ];
        assert_eq!(
            run(&q, points),
            vec![(vec![Some("x".to_owned())], vec![(10 * S, 10.0)])]
        );
        let q = query(Agg::HistogramQuantile(0.2), 10 * S, 20 * S, 10 * S);
        let points = vec![hist(1, 5 * S, &[4, 4]), hist(1, 15 * S, &[9, 4])];
        assert_eq!(
            run(&q, points),
            vec![(vec![Some("x".to_owned())], vec![(10 * S, 2.0)])]
        );
    }
}
