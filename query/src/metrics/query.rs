//! Metrics queries over HTTP: list metrics, list the series of one, and range queries that
//! turn points into one time series per group (sum, avg, min, max, count, rate over
//! counters with resets, histogram quantiles over merged buckets).
//!
//! ```text
//!  GET /api/v1/metrics               ─> metrics GROUP BY name, type      (DataFrame API)
//!  GET /api/v1/metrics/series        ─> metrics WHERE name, match[..] GROUP BY series_id
//!  GET /api/v1/metrics/query_range   ─> params ─> RangeQuery (400 on anything bad)
//!        ─> rollup::plan_sources: [start - lookback, end) cut into raw / 1m / 1h intervals
//!           (a rollup bucket is read only where it lies inside one step bucket)
//!        ─> metrics WHERE name = ?, time in raw intervals, match[..]
//!           ORDER BY series_id, time          (stream; session memory + time limits)
//!           + metrics_1m / metrics_1h WHERE the same, time in their intervals
//!             ORDER BY series_id, time        (one row per series and bucket)
//!           merged per series in time order
//!        ─> Engine: per series, per step bucket [t, t + step) (a rollup row adds what
//!           its points would have added):
//!              gauge, cumulative sum ─ last value      delta sum ─ sum of values
//!              rate ─ increase (resets: a drop or a new start_time restarts from 0)
//!              histogram_quantile ─ bucket-count increase, buckets keyed by upper bound
//!           then per group (group_by attributes) and bucket: sum/avg/min/max/count of
//!           the series' values, rate = summed increase / step, quantile of the merged
//!           histogram (Prometheus' linear interpolation)
//!        ─> {"resolution": ["1h", "raw"], "series": [{"group": {...},
//!                                                     "points": [{"time", "value"}]}]}
//!           (header x-weft-resolution: 1h,raw; resolution=raw reads raw points only)
//! ```
//!
//!  GET /api/v1/metrics/heatmap       ─> the same params and Engine, bucket increases per step
//!                                       instead of a quantile (see [`heatmap`])
//!
//! User input never becomes SQL text: every filter is a DataFusion `Expr` with literals.
//! `match[key]=value` and `group_by=key` name point attributes; the key `service_name`
//! means the resource's service. Times and `step` are the native grammar of
//! [`crate::params`].

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Float64Array, Int8Array, ListArray, MapArray, RecordBatch, StringArray,
    TimestampNanosecondArray, UInt64Array,
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
use weft_schemas::Table;
use weft_schemas::columns::*;
use weft_schemas::metrics::metric_type;

pub use weft_schemas::metrics_algebra::Histogram as Hist;
use weft_schemas::metrics_algebra::{counter_increase, histogram_increase};

pub(crate) use super::points::HistColumns;
use super::points::column;
use super::rollup;
use crate::params::{parse_instant, parse_positive_duration};
use crate::{Error, QueryService, Result};

pub mod heatmap;

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
        .route("/api/v1/metrics/heatmap", get(heatmap_handler))
        .with_state(service)
}

async fn heatmap_handler(
    State(service): State<Arc<QueryService>>,
    query: Pairs,
) -> Result<axum::Json<heatmap::Heatmap>> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let query = heatmap::parse_heatmap_query(&pairs(query)?, now)?;
    Ok(axum::Json(heatmap::heatmap(&service, &query).await?))
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
    /// The merged bucket-count increases themselves (the heatmap, [`heatmap`]): no
    /// scalar per bucket, read with [`Engine::finish_histograms`].
    Buckets,
}

impl Agg {
    /// Whether the engine reads histogram buckets for this aggregation.
    fn reads_histograms(self) -> bool {
        matches!(self, Agg::HistogramQuantile(_) | Agg::Buckets)
    }
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

/// Which data a range query may read (`resolution=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResolutionMode {
    /// Rollups where they give the same answer as raw points, raw points elsewhere.
    #[default]
    Auto,
    /// Raw points only.
    Raw,
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
    pub resolution: ResolutionMode,
}

impl RangeQuery {
    /// How far before `start` points are read: counters and cumulative histograms need
    /// the point before a bucket to know its increase, so those reads start one step early.
    pub fn lookback(&self) -> i64 {
        match self.agg {
            Agg::Rate | Agg::HistogramQuantile(_) | Agg::Buckets => self.step,
            _ => 0,
        }
    }
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
    selector.start = rest
        .remove("start")
        .map(|s| parse_instant("start", &s))
        .transpose()?;
    selector.end = rest
        .remove("end")
        .map(|s| parse_instant("end", &s))
        .transpose()?;
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
            "metric",
            "start",
            "end",
            "step",
            "agg",
            "q",
            "group_by",
            "match",
            "resolution",
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
        Some(s) => parse_positive_duration("step", &s)?,
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
    let resolution = match rest.remove("resolution").as_deref() {
        None | Some("auto") => ResolutionMode::Auto,
        Some("raw") => ResolutionMode::Raw,
        Some(other) => {
            return Err(Error::BadRequest(format!(
                "resolution={other:?}: expected auto or raw"
            )));
        }
    };
    Ok(RangeQuery {
        metric,
        matchers: selector.matchers,
        start,
        end,
        step,
        agg,
        group_by,
        resolution,
    })
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

fn map_row(map: &MapArray, row: usize) -> Result<Labels> {
    let entries = map.value(row);
    let keys = arrow::compute::cast(entries.column(0), &DataType::Utf8)
        .map_err(|e| Error::Execution(e.to_string()))?;
    let values = arrow::compute::cast(entries.column(1), &DataType::Utf8)
        .map_err(|e| Error::Execution(e.to_string()))?;
    let (keys, values) = (keys.as_string::<i32>(), values.as_string::<i32>());
    let mut out = Labels::new();
    for i in 0..keys.len() {
        let value = (!values.is_null(i)).then(|| values.value(i).to_owned());
        out.insert(keys.value(i).to_owned(), value);
    }
    Ok(out)
}

// ---- response types (their TypeScript twins are generated: see `crate::api_types`) ----------

/// Attribute (or group) names and values; `null` for a missing value.
pub type Labels = BTreeMap<String, Option<String>>;

/// The answer to `GET /api/v1/metrics`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct MetricList {
    pub metrics: Vec<MetricInfo>,
}

/// One metric (name and type) in [`MetricList`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct MetricInfo {
    pub name: String,
    /// `gauge`, `sum`, `histogram`, `exponential_histogram` or `summary`.
    #[serde(rename = "type")]
    pub metric_type: String,
    pub unit: Option<String>,
    pub description: Option<String>,
    pub series: i64,
    pub points: i64,
}

/// The answer to `GET /api/v1/metrics/series`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct SeriesList {
    pub series: Vec<SeriesInfo>,
    /// More series matched than `query.max_result_rows`.
    pub truncated: bool,
}

/// One series of a metric, with its latest attributes.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct SeriesInfo {
    /// A string: JSON numbers lose precision above 2^53.
    pub series_id: String,
    pub service_name: Option<String>,
    pub attributes: Labels,
    pub resource_attributes: Labels,
    /// RFC 3339.
    pub first_time: String,
    pub last_time: String,
    pub points: i64,
}

/// The answer to `GET /api/v1/metrics/query_range`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct RangeResponse {
    pub metric: String,
    /// The metric's type; `null` when nothing matched.
    #[serde(rename = "type")]
    pub metric_type: Option<String>,
    pub start: String,
    pub end: String,
    pub step_seconds: f64,
    /// The sources read, coarsest first (`1h`, `1m`, `raw`).
    pub resolution: Vec<String>,
    pub series: Vec<RangeSeries>,
}

/// One group of a range query: its `group_by` values and one point per non-empty bucket.
#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct RangeSeries {
    pub group: Labels,
    pub points: Vec<RangePoint>,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, ts_rs::TS)]
pub struct RangePoint {
    /// RFC 3339: the bucket's start.
    pub time: String,
    pub value: f64,
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
            metrics.push(MetricInfo {
                name: names.value(row).to_owned(),
                metric_type: metric_type_name(types.value(row)).to_owned(),
                unit: opt_string(&units, row),
                description: opt_string(&descriptions, row),
                series: series.value(row),
                points: points.value(row),
            });
        }
    }
    Ok(axum::Json(MetricList { metrics }).into_response())
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
            out.push(SeriesInfo {
                series_id: ids.value(row).to_string(),
                service_name: opt_string(&services, row),
                attributes: map_row(attributes, row)?,
                resource_attributes: map_row(resources, row)?,
                first_time: rfc3339(first.value(row)),
                last_time: rfc3339(last.value(row)),
                points: points.value(row),
            });
        }
    }
    let truncated = out.len() > limit;
    out.truncate(limit);
    Ok(axum::Json(SeriesList {
        series: out,
        truncated,
    })
    .into_response())
}

// ---- GET /api/v1/metrics/query_range --------------------------------------------------------

/// Response header naming the sources a range query read, coarsest first (`1h,1m,raw`).
pub const RESOLUTION_HEADER: &str = "x-weft-resolution";

async fn query_range(State(service): State<Arc<QueryService>>, query: Pairs) -> Result<Response> {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or(i64::MAX);
    let query = parse_range_query(&pairs(query)?, now)?;
    let answer = range(&service, &query).await?;
    let series = answer
        .series
        .into_iter()
        .map(|(group, points)| RangeSeries {
            group: query
                .group_by
                .iter()
                .zip(group)
                .map(|(label, value)| (label.name().to_owned(), value))
                .collect(),
            points: points
                .into_iter()
                .map(|(t, value)| RangePoint {
                    time: rfc3339(t),
                    value,
                })
                .collect(),
        })
        .collect();
    let mut response = axum::Json(RangeResponse {
        metric: query.metric.clone(),
        metric_type: answer.metric_type.map(|t| metric_type_name(t).to_owned()),
        start: rfc3339(query.start),
        end: rfc3339(query.end),
        step_seconds: query.step as f64 / 1e9,
        resolution: answer.resolution.iter().map(|r| (*r).to_owned()).collect(),
        series,
    })
    .into_response();
    if let Ok(value) = http::HeaderValue::from_str(&answer.resolution.join(",")) {
        response.headers_mut().insert(RESOLUTION_HEADER, value);
    }
    Ok(response)
}

/// What [`range`] found.
#[derive(Debug, Clone, PartialEq)]
pub struct RangeAnswer {
    /// The metric's type (of its first series), `None` when nothing matched.
    pub metric_type: Option<i8>,
    pub series: Series,
    /// The sources read, coarsest first: `"1h"`, `"1m"` (rollups, see [`super::rollup`])
    /// and `"raw"` (the `metrics` table).
    pub resolution: Vec<&'static str>,
}

/// Runs a range query within the query time limit. Hours with a rollup whose buckets fit
/// in the query's step buckets are read from the rollup, the rest from raw points; both
/// streams are merged per series in time order into one [`Engine`], so the answer is the
/// one raw points give (see [`super::rollup`]).
pub async fn range(service: &QueryService, query: &RangeQuery) -> Result<RangeAnswer> {
    let timeout_secs = service.config().timeout_secs;
    let max_points = service.config().max_result_rows;
    let run = async {
        let (engine, resolution) = run_engine(service, query).await?;
        let (metric_type, series) = engine.finish(max_points)?;
        Ok::<_, Error>(RangeAnswer {
            metric_type,
            series,
            resolution,
        })
    };
    tokio::time::timeout(Duration::from_secs(timeout_secs), run)
        .await
        .map_err(|_| Error::Timeout(timeout_secs))?
}

/// Reads the points (and rollup rows) of `query` into an [`Engine`]; returns it with the
/// sources read. The caller bounds the time.
async fn run_engine(
    service: &QueryService,
    query: &RangeQuery,
) -> Result<(Engine, Vec<&'static str>)> {
    let window = (query.start.saturating_sub(query.lookback()), query.end);
    let plan = match query.resolution {
        ResolutionMode::Raw => rollup::SourcePlan::raw_only(window),
        ResolutionMode::Auto => {
            rollup::plan_sources(service, window, query.start, query.step).await?
        }
    };
    let ctx = service.session()?;
    let quantile = query.agg.reads_histograms();
    let groups: Vec<Expr> = query
        .group_by
        .iter()
        .enumerate()
        .map(|(i, label)| label.expr().alias(format!("g{i}")))
        .collect();
    let mut inputs = Vec::new();
    if !plan.raw.is_empty() {
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
        if quantile {
            projection.extend(HIST_COLUMNS.map(col));
        }
        projection.extend(groups.iter().cloned());
        let df = matching(ctx.table(Table::Metrics.name()).await?, query)?;
        let stream = within(df, &plan.raw)?
            .select(projection)?
            .sort(vec![
                col(SERIES_ID).sort(true, true),
                col(TIME).sort(true, true),
            ])?
            .execute_stream()
            .await?;
        inputs.push(Input::new(stream, Source::Raw, plan.raw.clone()));
    }
    for source in &plan.rollups {
        let table =
            rollup::RollupTable::with_files(service, source.resolution, source.files.clone());
        let df = matching(ctx.read_table(Arc::new(table))?, query)?;
        let mut projection: Vec<Expr> = [
            SERIES_ID,
            METRIC_TYPE,
            AGGREGATION_TEMPORALITY,
            TIME,
            rollup::columns::FIRST_TIME,
            rollup::columns::LAST_TIME,
            rollup::columns::POINTS,
            rollup::columns::FIRST_START_TIME,
            rollup::columns::LAST_START_TIME,
            rollup::columns::SUM,
            rollup::columns::FIRST_VALUE,
            rollup::columns::LAST_VALUE,
            rollup::columns::INCREASE,
            rollup::columns::COUNT,
            rollup::columns::FIRST_COUNT,
            rollup::columns::LAST_COUNT,
        ]
        .map(col)
        .to_vec();
        if quantile {
            projection.extend(rollup::columns::HISTOGRAMS.map(col));
        }
        projection.extend(groups.iter().cloned());
        let stream = within(df, &source.intervals)?
            .select(projection)?
            .sort(vec![
                col(SERIES_ID).sort(true, true),
                col(TIME).sort(true, true),
                col(rollup::columns::FIRST_TIME).sort(true, true),
            ])?
            .execute_stream()
            .await?;
        inputs.push(Input::new(stream, Source::Rollup, source.intervals.clone()));
    }
    let mut engine = Engine::new(query);
    merge_into(&mut engine, inputs).await?;
    Ok((engine, plan.names()))
}

const HIST_COLUMNS: [&str; 9] = [
    BUCKET_COUNTS,
    EXPLICIT_BOUNDS,
    EXP_SCALE,
    EXP_ZERO_COUNT,
    EXP_ZERO_THRESHOLD,
    EXP_POSITIVE_OFFSET,
    EXP_POSITIVE_BUCKET_COUNTS,
    EXP_NEGATIVE_OFFSET,
    EXP_NEGATIVE_BUCKET_COUNTS,
];

/// `df` (the `metrics` table or a rollup table) restricted to the query's metric and
/// matchers.
fn matching(mut df: DataFrame, query: &RangeQuery) -> Result<DataFrame> {
    df = df.filter(col(METRIC_NAME).eq(lit(query.metric.as_str())))?;
    for (label, value) in &query.matchers {
        df = df.filter(label.expr().eq(lit(value.as_str())))?;
    }
    Ok(df)
}

/// Most time ranges sent to DataFusion as one OR (each costs two comparisons per row).
const MAX_OR_RANGES: usize = 16;
const HOUR_NS: i64 = 3_600_000_000_000;

/// `df` restricted to `time` in one of the sorted, disjoint `intervals` `[a, b)`:
/// * their bounding range as two conjuncts (the cluster's scan picks files and hours by it);
/// * few intervals: their exact OR (Parquet statistics prune by it);
/// * many (a step boundary in every hour): the hours they touch as an OR of a few ranges,
///   for pruning, and [`TimeIn`] (a binary search per row) for the exact cut, so the sort
///   above the scan only sees wanted rows.
fn within(mut df: DataFrame, intervals: &[(i64, i64)]) -> Result<DataFrame> {
    let (Some(first), Some(last)) = (intervals.first(), intervals.last()) else {
        return Ok(df.filter(lit(false))?);
    };
    df = df
        .filter(col(TIME).gt_eq(ts(first.0)))?
        .filter(col(TIME).lt(ts(last.1)))?;
    if intervals.len() == 1 {
        return Ok(df);
    }
    let any = |ranges: &[(i64, i64)]| {
        ranges
            .iter()
            .map(|&(a, b)| col(TIME).gt_eq(ts(a)).and(col(TIME).lt(ts(b))))
            .reduce(Expr::or)
            .expect("at least one range")
    };
    if intervals.len() <= MAX_OR_RANGES {
        return Ok(df.filter(any(intervals))?);
    }
    let mut hours: Vec<(i64, i64)> = Vec::new();
    for &(a, b) in intervals {
        let (a, b) = (
            a.div_euclid(HOUR_NS) * HOUR_NS,
            (b - 1).div_euclid(HOUR_NS) * HOUR_NS + HOUR_NS,
        );
        match hours.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => hours.push((a, b)),
        }
    }
    if hours.len() > 1 && hours.len() <= MAX_OR_RANGES {
        df = df.filter(any(&hours))?;
    }
    let exact = datafusion::logical_expr::ScalarUDF::new_from_impl(TimeIn::new(intervals));
    Ok(df.filter(exact.call(vec![col(TIME)]))?)
}

/// `weft_time_in(time)`: whether a timestamp lies in one of a sorted list of intervals
/// (built per query, never registered).
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimeIn {
    intervals: Vec<(i64, i64)>,
    signature: datafusion::logical_expr::Signature,
}

impl TimeIn {
    fn new(intervals: &[(i64, i64)]) -> Self {
        Self {
            intervals: intervals.to_vec(),
            signature: datafusion::logical_expr::Signature::any(
                1,
                datafusion::logical_expr::Volatility::Immutable,
            ),
        }
    }
}

impl datafusion::logical_expr::ScalarUDFImpl for TimeIn {
    fn name(&self) -> &str {
        "weft_time_in"
    }

    fn signature(&self) -> &datafusion::logical_expr::Signature {
        &self.signature
    }

    fn return_type(&self, _: &[DataType]) -> datafusion::common::Result<DataType> {
        Ok(DataType::Boolean)
    }

    fn invoke_with_args(
        &self,
        args: datafusion::logical_expr::ScalarFunctionArgs,
    ) -> datafusion::common::Result<datafusion::logical_expr::ColumnarValue> {
        let array = args.args[0].clone().into_array(args.number_rows)?;
        let times = array
            .as_primitive_opt::<arrow::datatypes::TimestampNanosecondType>()
            .ok_or_else(|| {
                datafusion::error::DataFusionError::Execution(format!(
                    "weft_time_in takes a nanosecond timestamp, not {}",
                    array.data_type()
                ))
            })?;
        let out: arrow::array::BooleanArray = times
            .iter()
            .map(|t| Some(t.is_some_and(|t| in_intervals(&self.intervals, t))))
            .collect();
        Ok(datafusion::logical_expr::ColumnarValue::Array(Arc::new(
            out,
        )))
    }
}

/// Whether `t` lies in one of the sorted, disjoint `intervals`.
pub(crate) fn in_intervals(intervals: &[(i64, i64)], t: i64) -> bool {
    let after = intervals.partition_point(|&(a, _)| a <= t);
    after > 0 && t < intervals[after - 1].1
}

/// Where an input's rows come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    /// The `metrics` table: one row per point.
    Raw,
    /// A rollup table: one row per series and bucket.
    Rollup,
}

/// One row of an input, as the engine takes it.
enum Item {
    Point(Point),
    Segment(Segment),
}

impl Item {
    /// Inputs are merged in this order: by series, then time (the intervals of the inputs
    /// are disjoint, so any time inside a segment orders it).
    fn key(&self) -> (u64, i64) {
        match self {
            Item::Point(p) => (p.series_id, p.time),
            Item::Segment(s) => (s.series_id, s.first_time),
        }
    }
}

/// A stream ordered by (series_id, time), decoded one batch at a time.
struct Input {
    stream: datafusion::execution::SendableRecordBatchStream,
    source: Source,
    /// Rows outside these are dropped (DataFusion may get only their bounding range).
    intervals: Vec<(i64, i64)>,
    items: std::vec::IntoIter<Item>,
    head: Option<Item>,
    done: bool,
}

impl Input {
    fn new(
        stream: datafusion::execution::SendableRecordBatchStream,
        source: Source,
        intervals: Vec<(i64, i64)>,
    ) -> Self {
        Self {
            stream,
            source,
            intervals,
            items: Vec::new().into_iter(),
            head: None,
            done: false,
        }
    }

    /// Makes `head` the next row, unless the input is exhausted.
    async fn fill(&mut self, engine: &Engine) -> Result<()> {
        while self.head.is_none() && !self.done {
            if let Some(item) = self.items.next() {
                self.head = Some(item);
                break;
            }
            match self.stream.next().await {
                Some(batch) => {
                    let batch = batch?;
                    let items = match self.source {
                        Source::Raw => engine.decode_points(&batch, &self.intervals)?,
                        Source::Rollup => engine.decode_segments(&batch, &self.intervals)?,
                    };
                    self.items = items.into_iter();
                }
                None => self.done = true,
            }
        }
        Ok(())
    }
}

/// Feeds the rows of every input to `engine` in (series_id, time) order.
async fn merge_into(engine: &mut Engine, mut inputs: Vec<Input>) -> Result<()> {
    loop {
        for input in &mut inputs {
            input.fill(engine).await?;
        }
        let next = inputs
            .iter()
            .enumerate()
            .filter_map(|(i, input)| input.head.as_ref().map(|item| (item.key(), i)))
            .min();
        let Some((_, i)) = next else {
            return Ok(());
        };
        match inputs[i].head.take() {
            Some(Item::Point(point)) => engine.push(point)?,
            Some(Item::Segment(segment)) => engine.push_segment(segment)?,
            None => {}
        }
    }
}

// ---- the range-query engine -----------------------------------------------------------------

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

/// One rollup row: what one series' points inside one rollup bucket add up to, for a
/// bucket that lies inside one step bucket of the query (see [`super::rollup`] for the
/// columns it comes from).
#[derive(Debug, Clone, Default)]
pub struct Segment {
    pub series_id: u64,
    pub group: Vec<Option<String>>,
    pub metric_type: i8,
    pub temporality: Option<i8>,
    pub first_time: i64,
    pub last_time: i64,
    /// Points in the bucket; with two or more, the increases between them are known.
    pub points: u64,
    pub first_start: Option<i64>,
    pub last_start: Option<i64>,
    /// Gauges and sums: the sum of the values (delta sums) and the last value.
    pub sum: Option<f64>,
    pub last_value: Option<f64>,
    /// The counter a rate reads (sums: the value; histograms and summaries: the count):
    /// its first and last value, and its increase inside the bucket (delta: the sum).
    pub counter_first: Option<f64>,
    pub counter_last: Option<f64>,
    pub counter_increase: Option<f64>,
    /// Histograms: merged counts (delta) or the increase inside the bucket (cumulative),
    /// and for cumulative ones the first and last point's histogram.
    pub hist: Option<Hist>,
    pub first_hist: Option<Hist>,
    pub last_hist: Option<Hist>,
}

impl Segment {
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
        Self {
            agg: query.agg,
            start: query.start,
            step: query.step,
            window_start: query.start.saturating_sub(query.lookback()),
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

    /// Starts a new cursor when `series_id` is not the current series.
    fn enter(&mut self, series_id: u64, group: &[Option<String>], metric_type: i8) -> Result<()> {
        self.metric_type.get_or_insert(metric_type);
        self.check_type(metric_type)?;
        if self
            .cursor
            .as_ref()
            .is_none_or(|c| c.series_id != series_id)
        {
            self.flush();
            self.cursor = Some(Cursor {
                series_id,
                group: group.to_vec(),
                prev_value: None,
                prev_hist: None,
                pending: None,
            });
        }
        Ok(())
    }

    fn cursor(&mut self) -> &mut Cursor {
        self.cursor.as_mut().expect("enter() sets the cursor")
    }

    /// Adds one point; points must come ordered by (series_id, time).
    pub fn push(&mut self, point: Point) -> Result<()> {
        self.enter(point.series_id, &point.group, point.metric_type)?;
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
                    let prev = self.cursor().prev_value.replace((point.start_time, v));
                    self.counter_increase(prev, point.start_time, v)
                };
                increase.map(Sample::Sum)
            }
            Agg::HistogramQuantile(_) | Agg::Buckets => {
                let delta = point.is_delta();
                let Some(hist) = point.hist else {
                    return Ok(());
                };
                let increase = if delta {
                    Some(hist)
                } else {
                    let prev = self
                        .cursor()
                        .prev_hist
                        .replace((point.start_time, hist.clone()));
                    self.hist_increase(prev, point.start_time, hist)
                };
                increase.map(Sample::Hist)
            }
        };
        self.add(bucket, sample);
        Ok(())
    }

    /// Adds one rollup row; with points, rows must come ordered by (series_id, time), and
    /// the row's bucket must lie inside one step bucket (or inside the lookback).
    pub fn push_segment(&mut self, s: Segment) -> Result<()> {
        self.enter(s.series_id, &s.group, s.metric_type)?;
        let bucket = (s.first_time - self.start).div_euclid(self.step);
        debug_assert_eq!(bucket, (s.last_time - self.start).div_euclid(self.step));
        let delta = s.is_delta();
        // Raw points add one sample each; a segment adds what its points add together.
        // Without a previous point, a cumulative segment's first point adds nothing
        // (unless the series began in the window) and the rest add the inner increase.
        let sample = match self.agg {
            Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Count => {
                if delta {
                    s.sum.map(Sample::Sum)
                } else {
                    s.last_value.map(Sample::Last)
                }
            }
            Agg::Rate => {
                if delta {
                    s.counter_increase.map(Sample::Sum)
                } else {
                    let (Some(first), Some(last)) = (s.counter_first, s.counter_last) else {
                        return Ok(());
                    };
                    let prev = self.cursor().prev_value.replace((s.last_start, last));
                    let inner = s.counter_increase.unwrap_or(0.0);
                    match self.counter_increase(prev, s.first_start, first) {
                        Some(boundary) => Some(Sample::Sum(boundary + inner)),
                        None => (s.points >= 2).then_some(Sample::Sum(inner)),
                    }
                }
            }
            Agg::HistogramQuantile(_) | Agg::Buckets => {
                if delta {
                    s.hist.map(Sample::Hist)
                } else {
                    let Some(first) = s.first_hist else {
                        return Ok(());
                    };
                    let last = s.last_hist.unwrap_or_else(|| first.clone());
                    let prev = self.cursor().prev_hist.replace((s.last_start, last));
                    let inner = s.hist.unwrap_or_default();
                    match self.hist_increase(prev, s.first_start, first) {
                        Some(mut boundary) => {
                            boundary.merge(&inner);
                            Some(Sample::Hist(boundary))
                        }
                        None => (s.points >= 2).then_some(Sample::Hist(inner)),
                    }
                }
            }
        };
        self.add(bucket, sample);
        Ok(())
    }

    /// Adds the current series' sample for `bucket` (none: nothing to add).
    fn add(&mut self, bucket: i64, sample: Option<Sample>) {
        // Points before `start` only served as "previous".
        let (Some(sample), true) = (sample, bucket >= 0) else {
            return;
        };
        let cursor = self.cursor();
        match cursor.pending.take() {
            Some((b, pending)) if b == bucket => {
                cursor.pending = Some((bucket, combine(pending, sample)));
            }
            earlier => {
                // A new bucket: the series' previous one is complete.
                cursor.pending = earlier;
                self.flush();
                self.cursor().pending = Some((bucket, sample));
            }
        }
    }

    fn began_in_window(&self, start_time: Option<i64>) -> bool {
        start_time.is_some_and(|s| s >= self.window_start)
    }

    /// The increase of a cumulative counter since its previous point (see
    /// [`counter_increase`]); without one, the whole value when the series began inside the
    /// read window, else unknown.
    fn counter_increase(
        &self,
        prev: Option<(Option<i64>, f64)>,
        start: Option<i64>,
        v: f64,
    ) -> Option<f64> {
        match prev {
            Some((prev_start, prev_value)) => {
                Some(counter_increase(prev_start, prev_value, start, v))
            }
            None => self.began_in_window(start).then_some(v),
        }
    }

    /// [`Engine::counter_increase`] for cumulative histograms (see [`histogram_increase`]).
    fn hist_increase(
        &self,
        prev: Option<(Option<i64>, Hist)>,
        start: Option<i64>,
        hist: Hist,
    ) -> Option<Hist> {
        match prev {
            Some((prev_start, prev)) => Some(histogram_increase(prev_start, &prev, start, hist)),
            None => self.began_in_window(start).then_some(hist),
        }
    }

    fn check_type(&self, t: i8) -> Result<()> {
        let ok = match self.agg {
            Agg::Sum | Agg::Avg | Agg::Min | Agg::Max | Agg::Count => {
                matches!(t, metric_type::GAUGE | metric_type::SUM)
            }
            Agg::Rate => t != metric_type::GAUGE,
            Agg::HistogramQuantile(_) | Agg::Buckets => {
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
            Agg::Buckets => "a heatmap needs a histogram",
            _ => {
                "sum, avg, min, max and count need a gauge or sum (use rate or histogram_quantile)"
            }
        };
        Err(Error::BadRequest(format!(
            "the metric is a {}: {hint}",
            metric_type_name(t)
        )))
    }

    /// The points of one batch of the raw projection whose time is in `intervals`.
    fn decode_points(&self, batch: &RecordBatch, intervals: &[(i64, i64)]) -> Result<Vec<Item>> {
        let ids: &UInt64Array = column(batch, SERIES_ID)?;
        let types: &Int8Array = column(batch, METRIC_TYPE)?;
        let temporality: &Int8Array = column(batch, AGGREGATION_TEMPORALITY)?;
        let starts: &TimestampNanosecondArray = column(batch, START_TIME)?;
        let times: &TimestampNanosecondArray = column(batch, TIME)?;
        let values: &Float64Array = column(batch, "value")?;
        let counts: &UInt64Array = column(batch, COUNT)?;
        let groups = self.group_columns(batch)?;
        let hist = self
            .agg
            .reads_histograms()
            .then(|| HistColumns::new(batch))
            .transpose()?;
        let mut items = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            let time = times.value(row);
            if !in_intervals(intervals, time) {
                continue;
            }
            let t = types.value(row);
            items.push(Item::Point(Point {
                series_id: ids.value(row),
                group: groups.iter().map(|g| opt_string(g, row)).collect(),
                metric_type: t,
                temporality: opt_i8(temporality, row),
                start_time: opt_ts(starts, row),
                time,
                value: (!values.is_null(row)).then(|| values.value(row)),
                count: (!counts.is_null(row)).then(|| counts.value(row)),
                hist: match &hist {
                    Some(h) => h.read(t, row),
                    None => None,
                },
            }));
        }
        Ok(items)
    }

    /// The segments of one batch of a rollup projection whose bucket start is in
    /// `intervals`.
    fn decode_segments(&self, batch: &RecordBatch, intervals: &[(i64, i64)]) -> Result<Vec<Item>> {
        use super::rollup::columns as rc;
        let ids: &UInt64Array = column(batch, SERIES_ID)?;
        let types: &Int8Array = column(batch, METRIC_TYPE)?;
        let temporality: &Int8Array = column(batch, AGGREGATION_TEMPORALITY)?;
        let times: &TimestampNanosecondArray = column(batch, TIME)?;
        let first_times: &TimestampNanosecondArray = column(batch, rc::FIRST_TIME)?;
        let last_times: &TimestampNanosecondArray = column(batch, rc::LAST_TIME)?;
        let points: &UInt64Array = column(batch, rc::POINTS)?;
        let first_starts: &TimestampNanosecondArray = column(batch, rc::FIRST_START_TIME)?;
        let last_starts: &TimestampNanosecondArray = column(batch, rc::LAST_START_TIME)?;
        let sums: &Float64Array = column(batch, rc::SUM)?;
        let first_values: &Float64Array = column(batch, rc::FIRST_VALUE)?;
        let last_values: &Float64Array = column(batch, rc::LAST_VALUE)?;
        let increases: &Float64Array = column(batch, rc::INCREASE)?;
        let counts: &UInt64Array = column(batch, rc::COUNT)?;
        let first_counts: &UInt64Array = column(batch, rc::FIRST_COUNT)?;
        let last_counts: &UInt64Array = column(batch, rc::LAST_COUNT)?;
        let groups = self.group_columns(batch)?;
        let hists = self
            .agg
            .reads_histograms()
            .then(|| {
                rc::HISTOGRAMS
                    .iter()
                    .map(|name| column::<ListArray>(batch, name))
                    .collect::<Result<Vec<_>>>()
            })
            .transpose()?;
        let hist = |pair: usize, row: usize| -> Option<Hist> {
            let lists = hists.as_ref()?;
            let (bounds, counts) = (lists[2 * pair], lists[2 * pair + 1]);
            if bounds.is_null(row) || counts.is_null(row) {
                return None;
            }
            let bounds = bounds.value(row);
            let counts = counts.value(row);
            let buckets = bounds
                .as_primitive::<Float64Type>()
                .values()
                .iter()
                .zip(counts.as_primitive::<UInt64Type>().values())
                .map(|(b, c)| (*b, *c as f64))
                .collect();
            Some(Hist::from_buckets(buckets))
        };
        let f64_of = |a: &Float64Array, row| (!a.is_null(row)).then(|| a.value(row));
        let u64_of = |a: &UInt64Array, row| (!a.is_null(row)).then(|| a.value(row) as f64);
        let mut items = Vec::with_capacity(batch.num_rows());
        for row in 0..batch.num_rows() {
            if !in_intervals(intervals, times.value(row)) {
                continue;
            }
            let t = types.value(row);
            let (counter_first, counter_last, counter_increase) = if t == metric_type::SUM {
                (
                    f64_of(first_values, row),
                    f64_of(last_values, row),
                    f64_of(increases, row),
                )
            } else {
                (
                    u64_of(first_counts, row),
                    u64_of(last_counts, row),
                    u64_of(counts, row),
                )
            };
            items.push(Item::Segment(Segment {
                series_id: ids.value(row),
                group: groups.iter().map(|g| opt_string(g, row)).collect(),
                metric_type: t,
                temporality: opt_i8(temporality, row),
                first_time: first_times.value(row),
                last_time: last_times.value(row),
                points: points.value(row),
                first_start: opt_ts(first_starts, row),
                last_start: opt_ts(last_starts, row),
                sum: f64_of(sums, row),
                last_value: f64_of(last_values, row),
                counter_first,
                counter_last,
                counter_increase,
                hist: hist(0, row),
                first_hist: hist(1, row),
                last_hist: hist(2, row),
            }));
        }
        Ok(items)
    }

    fn group_columns(&self, batch: &RecordBatch) -> Result<Vec<StringArray>> {
        (0..self.group_columns)
            .map(|i| strings(batch, &format!("g{i}")))
            .collect()
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
                            Agg::Buckets => None,
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

impl Engine {
    /// For [`Agg::Buckets`]: per group, the merged bucket-count increase of each
    /// non-empty step bucket, `(bucket start ns, histogram)`. Fails when the result would
    /// hold more than `max_cells` (bucket, histogram bucket) cells.
    pub fn finish_histograms(mut self, max_cells: usize) -> Result<(Option<i8>, HistSeries)> {
        self.flush();
        let cells: usize = self
            .groups
            .values()
            .flat_map(|b| b.values())
            .map(|acc| acc.hist.as_ref().map_or(0, |h| h.buckets.len()))
            .sum();
        if cells > max_cells {
            return Err(Error::BadRequest(format!(
                "the result would have {cells} cells, more than query.max_result_rows \
                 ({max_cells}): use a larger step or a shorter range"
            )));
        }
        let series = self
            .groups
            .into_iter()
            .map(|(group, buckets)| {
                let hists = buckets
                    .into_iter()
                    .filter_map(|(bucket, acc)| {
                        acc.hist.map(|h| (self.start + bucket * self.step, h))
                    })
                    .collect();
                (group, hists)
            })
            .collect();
        Ok((self.metric_type, series))
    }
}

/// Groups with their histograms: `(time ns, merged increase)` per non-empty bucket.
pub type HistSeries = Vec<(Vec<Option<String>>, Vec<(i64, Hist)>)>;

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

fn opt_i8(a: &Int8Array, row: usize) -> Option<i8> {
    (!a.is_null(row)).then(|| a.value(row))
}

fn opt_ts(a: &TimestampNanosecondArray, row: usize) -> Option<i64> {
    (!a.is_null(row)).then(|| a.value(row))
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
            (d.start, d.end, d.step, d.agg, d.resolution),
            (
                6_400 * S,
                10_000 * S,
                60 * S,
                Agg::Sum,
                ResolutionMode::Auto
            )
        );
        let raw = parse("metric=m&resolution=raw").unwrap();
        assert_eq!(raw.resolution, ResolutionMode::Raw);
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
            "metric=m&resolution=5m",                // unknown resolution
        ] {
            assert!(
                matches!(parse(bad), Err(Error::BadRequest(_))),
                "{bad:?} was accepted"
            );
        }
    }

    #[test]
    fn durations_and_times() {
        use crate::params::{parse_duration, parse_instant};
        assert_eq!(parse_duration("step", "1h30m").unwrap(), 5_400 * S);
        assert_eq!(parse_duration("step", "250ms").unwrap(), S / 4);
        assert_eq!(parse_duration("step", "0.5").unwrap(), S / 2);
        assert_eq!(parse_instant("start", "1.5").unwrap(), 3 * S / 2);
        assert_eq!(
            parse_instant("start", "1970-01-01T00:00:01+01:00").unwrap(),
            -3_599 * S
        );
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
            resolution: ResolutionMode::Auto,
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
