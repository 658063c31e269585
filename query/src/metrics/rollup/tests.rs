//! Rollups of a real collector's store: gauges, delta and cumulative sums (with a reset
//! and a restart), explicit and exponential histograms (cumulative with a restart, and
//! delta), summaries held as live rows; six hours of points in the past, `now` passed in.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{Float64Type, UInt64Type};
use bytes::Bytes;
use weft_collector::config::{BufferConfig, SyncPolicy, WalConfig};
use weft_collector::{Collector, CollectorConfig, Format};

use super::*;
use crate::QueryConfig;
use crate::metrics::query::{Agg, Label, RangeQuery, ResolutionMode, range};

const S: i64 = 1_000_000_000;
const M: i64 = 60 * S;
const H: i64 = 3_600 * S;
/// 2023-11-14T22:00:00Z.
const H0: i64 = 472_222 * H;
/// Points every 50 s for six hours: minutes with one point and minutes with two.
const PERIOD: i64 = 50 * S;
const HOURS: i64 = 6;

fn now() -> SystemTime {
    // Two-hour delay: hours 0..=4 are closed, hour 5 is not.
    SystemTime::UNIX_EPOCH + Duration::from_nanos((H0 + 7 * H + 30 * M) as u64)
}

fn open(dir: &Path) -> Arc<Collector> {
    Collector::open(CollectorConfig {
        data_dir: dir.to_path_buf(),
        wal: WalConfig {
            sync: SyncPolicy::Os,
            ..Default::default()
        },
        buffer: BufferConfig {
            flush_age_secs: 86_400,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

fn service(collector: &Arc<Collector>, enabled: bool) -> QueryService {
    let mut config = QueryConfig::default();
    config.rollups.enabled = enabled;
    QueryService::new(std::sync::Arc::clone(collector.store()), config).unwrap()
}

/// xorshift: the same data every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

/// A number point: (time, start time, value).
#[derive(Debug, Clone, Copy)]
struct Num {
    t: i64,
    start: i64,
    v: f64,
}

/// A histogram point: counts per bucket of bounds 1, 5, 10 and +Inf, its sum.
#[derive(Debug, Clone)]
struct HistPoint {
    t: i64,
    start: i64,
    counts: Vec<u64>,
    sum: f64,
}

/// Everything written, per metric and host, in time order.
#[derive(Default)]
struct Data {
    gauges: BTreeMap<&'static str, Vec<Num>>,
    deltas: BTreeMap<&'static str, Vec<Num>>,
    totals: BTreeMap<&'static str, Vec<Num>>,
    hists: BTreeMap<&'static str, Vec<HistPoint>>,
    delta_hists: BTreeMap<&'static str, Vec<HistPoint>>,
}

fn times(offset: i64) -> impl Iterator<Item = (usize, i64)> {
    (0..)
        .map(move |k| (k, H0 + offset + k as i64 * PERIOD))
        .take_while(|(_, t)| *t < H0 + HOURS * H)
}

fn generate() -> Data {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut data = Data::default();
    for (host, offset) in [("a", 3 * S), ("b", 11 * S)] {
        let gauge = times(offset)
            .map(|(_, t)| Num {
                t,
                start: 0,
                v: rng.next(10_000) as f64 / 100.0,
            })
            .collect();
        data.gauges.insert(host, gauge);
        let delta = times(offset)
            .map(|(_, t)| Num {
                t,
                start: t - PERIOD,
                v: rng.next(10) as f64 + 0.25,
            })
            .collect();
        data.deltas.insert(host, delta);
        // Host a drops (a reset, same start time) at k = 200 and restarts (new start
        // time) at k = 300.
        let mut total = 0.0;
        let mut start = H0 - H;
        let mut points = Vec::new();
        for (k, t) in times(offset) {
            if host == "a" && k == 200 {
                total = 1.0;
            } else if host == "a" && k == 300 {
                total = 0.5;
                start = t - S;
            } else {
                total += rng.next(20) as f64 * 0.5;
            }
            points.push(Num { t, start, v: total });
        }
        data.totals.insert(host, points);
        // Cumulative histograms; host a restarts at k = 250.
        let mut counts = vec![0u64; 4];
        let mut sum = 0.0;
        let mut start = H0 - H;
        let mut points = Vec::new();
        for (k, t) in times(offset) {
            if host == "a" && k == 250 {
                counts = vec![0; 4];
                sum = 0.0;
                start = t - S;
            }
            for c in counts.iter_mut() {
                let add = rng.next(4);
                *c += add;
                sum += add as f64 * 2.0;
            }
            points.push(HistPoint {
                t,
                start,
                counts: counts.clone(),
                sum,
            });
        }
        data.hists.insert(host, points);
        let points = times(offset)
            .map(|(_, t)| HistPoint {
                t,
                start: t - PERIOD,
                counts: (0..4).map(|_| rng.next(5)).collect(),
                sum: 1.5,
            })
            .collect();
        data.delta_hists.insert(host, points);
    }
    data
}

fn attrs(host: &str) -> String {
    format!(r#"[{{"key":"host","value":{{"stringValue":"{host}"}}}}]"#)
}

fn number_points(points: &[Num], host: &str, with_start: bool) -> String {
    points
        .iter()
        .map(|p| {
            let start = if with_start {
                format!(r#""startTimeUnixNano":"{}","#, p.start)
            } else {
                String::new()
            };
            format!(
                r#"{{"attributes":{},{start}"timeUnixNano":"{}","asDouble":{}}}"#,
                attrs(host),
                p.t,
                p.v
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn hist_points(points: &[HistPoint], host: &str) -> String {
    points
        .iter()
        .map(|p| {
            let counts: Vec<String> = p.counts.iter().map(|c| format!(r#""{c}""#)).collect();
            format!(
                r#"{{"attributes":{},"startTimeUnixNano":"{}","timeUnixNano":"{}","count":"{}","sum":{},"bucketCounts":[{}],"explicitBounds":[1,5,10],"min":0.5,"max":12}}"#,
                attrs(host),
                p.start,
                p.t,
                p.counts.iter().sum::<u64>(),
                p.sum,
                counts.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Exponential histograms (scale 0, buckets (1,2], (2,4], (4,8]) from the explicit ones'
/// counts: zero bucket = first count, positive = the other three.
fn exp_points(points: &[HistPoint], host: &str) -> String {
    points
        .iter()
        .map(|p| {
            let positive: Vec<String> = p.counts[1..].iter().map(|c| format!(r#""{c}""#)).collect();
            format!(
                r#"{{"attributes":{},"startTimeUnixNano":"{}","timeUnixNano":"{}","count":"{}","sum":{},"scale":0,"zeroCount":"{}","positive":{{"offset":0,"bucketCounts":[{}]}}}}"#,
                attrs(host),
                p.start,
                p.t,
                p.counts.iter().sum::<u64>(),
                p.sum,
                p.counts[0],
                positive.join(",")
            )
        })
        .collect::<Vec<_>>()
        .join(",")
}

fn body(metrics: &[String]) -> Bytes {
    Bytes::from(format!(
        r#"{{"resourceMetrics":[{{"resource":{{"attributes":[{{"key":"service.name","value":{{"stringValue":"svc"}}}}]}},"scopeMetrics":[{{"metrics":[{}]}}]}}]}}"#,
        metrics.join(",")
    ))
}

/// Writes `data` (flushed to Parquet) plus a summary that stays in live rows.
async fn write(collector: &Collector, data: &Data) {
    let mut metrics = Vec::new();
    for (host, points) in &data.gauges {
        metrics.push(format!(
            r#"{{"name":"temp","unit":"Cel","gauge":{{"dataPoints":[{}]}}}}"#,
            number_points(points, host, false)
        ));
    }
    for (host, points) in &data.deltas {
        metrics.push(format!(
            r#"{{"name":"req_delta","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{}]}}}}"#,
            number_points(points, host, true)
        ));
    }
    for (host, points) in &data.totals {
        metrics.push(format!(
            r#"{{"name":"req_total","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{}]}}}}"#,
            number_points(points, host, true)
        ));
    }
    for (host, points) in &data.hists {
        metrics.push(format!(
            r#"{{"name":"latency","histogram":{{"aggregationTemporality":2,"dataPoints":[{}]}}}}"#,
            hist_points(points, host)
        ));
        metrics.push(format!(
            r#"{{"name":"latency_exp","exponentialHistogram":{{"aggregationTemporality":2,"dataPoints":[{}]}}}}"#,
            exp_points(points, host)
        ));
    }
    for (host, points) in &data.delta_hists {
        metrics.push(format!(
            r#"{{"name":"latency_delta","histogram":{{"aggregationTemporality":1,"dataPoints":[{}]}}}}"#,
            hist_points(points, host)
        ));
    }
    let outcome = collector
        .export_metrics(body(&metrics), Format::Json)
        .await
        .unwrap();
    assert_eq!(outcome.rejected, 0);
    collector.flush_all().await.unwrap();
    // A cumulative summary, left unflushed: rollups read live rows too.
    let summary: Vec<String> = data.totals["b"]
        .iter()
        .map(|p| {
            format!(
                r#"{{"attributes":{},"startTimeUnixNano":"{}","timeUnixNano":"{}","count":"{}","sum":{},"quantileValues":[{{"quantile":0.5,"value":1}}]}}"#,
                attrs("b"),
                p.start,
                p.t,
                (p.v * 2.0) as u64,
                p.v
            )
        })
        .collect();
    let summary = format!(
        r#"{{"name":"rpc","summary":{{"dataPoints":[{}]}}}}"#,
        summary.join(",")
    );
    collector
        .export_metrics(body(&[summary]), Format::Json)
        .await
        .unwrap();
}

async fn setup() -> (tempfile::TempDir, Arc<Collector>, Data) {
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path());
    let data = generate();
    write(&collector, &data).await;
    (dir, collector, data)
}

async fn sql(service: &QueryService, sql: &str) -> Vec<RecordBatch> {
    service.sql(sql).await.unwrap().batches
}

/// `(host, bucket start)` -> row values, from a rollup table.
type Rows = BTreeMap<(String, i64), HashMap<&'static str, Option<f64>>>;

async fn rollup_rows(service: &QueryService, table: &str, metric: &str) -> Rows {
    const COLUMNS: [&str; 11] = [
        "points",
        "min",
        "max",
        "sum",
        "first_value",
        "last_value",
        "increase",
        "count",
        "first_count",
        "last_count",
        "first_start_time",
    ];
    let batches = sql(
        service,
        &format!(
            "SELECT attributes['host'] AS host, CAST(time AS BIGINT) AS t, \
             CAST(points AS DOUBLE) AS points, min, max, sum, first_value, last_value, increase, \
             CAST(count AS DOUBLE) AS count, CAST(first_count AS DOUBLE) AS first_count, \
             CAST(last_count AS DOUBLE) AS last_count, \
             CAST(CAST(first_start_time AS BIGINT) AS DOUBLE) AS first_start_time \
             FROM {table} WHERE metric_name = '{metric}' ORDER BY host, t"
        ),
    )
    .await;
    let mut out = Rows::new();
    for batch in &batches {
        let hosts =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let hosts = hosts.as_string::<i32>();
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        for row in 0..batch.num_rows() {
            let mut values = HashMap::new();
            for (i, name) in COLUMNS.iter().enumerate() {
                let c = batch.column(i + 2).as_primitive::<Float64Type>();
                values.insert(*name, (!c.is_null(row)).then(|| c.value(row)));
            }
            let key = (hosts.value(row).to_owned(), ts.value(row));
            assert!(
                out.insert(key, values).is_none(),
                "one row per series and bucket"
            );
        }
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0)
}

fn check(got: &Rows, host: &str, bucket: i64, column: &str, want: Option<f64>) {
    let row = got
        .get(&(host.to_owned(), bucket))
        .unwrap_or_else(|| panic!("no row for {host} at {bucket}"));
    let value = row[column];
    match (value, want) {
        (Some(a), Some(b)) if close(a, b) => {}
        (None, None) => {}
        _ => panic!("{host} at {bucket}, {column}: got {value:?}, want {want:?}"),
    }
}

/// Points of closed hours (0..=4) grouped by bucket start.
fn buckets<T: Clone>(points: &[T], time: fn(&T) -> i64, width: i64) -> BTreeMap<i64, Vec<T>> {
    let mut out: BTreeMap<i64, Vec<T>> = BTreeMap::new();
    for p in points {
        let t = time(p);
        if t < H0 + 5 * H {
            out.entry(t.div_euclid(width) * width)
                .or_default()
                .push(p.clone());
        }
    }
    out
}

/// The cumulative increase inside a bucket, written out plainly.
fn inner_increase(points: &[Num]) -> f64 {
    points
        .windows(2)
        .map(|w| {
            if w[1].start != w[0].start || w[1].v < w[0].v {
                w[1].v
            } else {
                w[1].v - w[0].v
            }
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollup_rows_match_the_raw_points() {
    let (_dir, collector, data) = setup().await;
    let service = service(&collector, true);
    let stats = run_rollups(&service, now()).await.unwrap();
    assert_eq!(stats.closed_hours, 5, "{stats:?}");
    assert_eq!(stats.hours_written, 5, "{stats:?}");

    for (table, width) in [("metrics_1m", M), ("metrics_1h", H)] {
        let gauges = rollup_rows(&service, table, "temp").await;
        let deltas = rollup_rows(&service, table, "req_delta").await;
        let totals = rollup_rows(&service, table, "req_total").await;
        let hists = rollup_rows(&service, table, "latency").await;
        let delta_hists = rollup_rows(&service, table, "latency_delta").await;
        for host in ["a", "b"] {
            let expected = buckets(&data.gauges[host], |p| p.t, width);
            assert_eq!(
                gauges.keys().filter(|(h, _)| h == host).count(),
                expected.len(),
                "{table}: one row per bucket with points"
            );
            for (bucket, points) in &expected {
                let values: Vec<f64> = points.iter().map(|p| p.v).collect();
                check(&gauges, host, *bucket, "points", Some(points.len() as f64));
                check(
                    &gauges,
                    host,
                    *bucket,
                    "min",
                    values.iter().copied().reduce(f64::min),
                );
                check(
                    &gauges,
                    host,
                    *bucket,
                    "max",
                    values.iter().copied().reduce(f64::max),
                );
                check(&gauges, host, *bucket, "sum", Some(values.iter().sum()));
                check(
                    &gauges,
                    host,
                    *bucket,
                    "first_value",
                    values.first().copied(),
                );
                check(&gauges, host, *bucket, "last_value", values.last().copied());
                check(&gauges, host, *bucket, "increase", None);
            }
            for (bucket, points) in buckets(&data.deltas[host], |p| p.t, width) {
                let total: f64 = points.iter().map(|p| p.v).sum();
                check(&deltas, host, bucket, "sum", Some(total));
                check(&deltas, host, bucket, "increase", Some(total));
            }
            for (bucket, points) in buckets(&data.totals[host], |p| p.t, width) {
                check(
                    &totals,
                    host,
                    bucket,
                    "increase",
                    Some(inner_increase(&points)),
                );
                check(&totals, host, bucket, "first_value", Some(points[0].v));
                check(
                    &totals,
                    host,
                    bucket,
                    "last_value",
                    points.last().map(|p| p.v),
                );
                check(
                    &totals,
                    host,
                    bucket,
                    "first_start_time",
                    Some(points[0].start as f64),
                );
            }
            for (bucket, points) in buckets(&data.hists[host], |p| p.t, width) {
                let totals: Vec<Num> = points
                    .iter()
                    .map(|p| Num {
                        t: p.t,
                        start: p.start,
                        v: p.counts.iter().sum::<u64>() as f64,
                    })
                    .collect();
                check(&hists, host, bucket, "count", Some(inner_increase(&totals)));
                check(&hists, host, bucket, "first_count", Some(totals[0].v));
                check(
                    &hists,
                    host,
                    bucket,
                    "last_count",
                    totals.last().map(|p| p.v),
                );
                check(&hists, host, bucket, "min", Some(0.5));
                check(&hists, host, bucket, "max", Some(12.0));
            }
            for (bucket, points) in buckets(&data.delta_hists[host], |p| p.t, width) {
                let count: u64 = points.iter().map(|p| p.counts.iter().sum::<u64>()).sum();
                check(&delta_hists, host, bucket, "count", Some(count as f64));
                check(
                    &delta_hists,
                    host,
                    bucket,
                    "sum",
                    Some(1.5 * points.len() as f64),
                );
            }
        }
    }

    // Merged bucket counts of the delta histogram, and the increase of the cumulative
    // one, per hour.
    let batches = sql(
        &service,
        "SELECT metric_name, CAST(time AS BIGINT) AS t, hist_bounds, hist_counts FROM metrics_1h \
         WHERE attributes['host'] = 'b' AND metric_name IN ('latency', 'latency_delta') \
         ORDER BY metric_name, t",
    )
    .await;
    let mut seen = 0;
    for batch in &batches {
        let names =
            arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8).unwrap();
        let names = names.as_string::<i32>();
        let ts = batch
            .column(1)
            .as_primitive::<arrow::datatypes::Int64Type>();
        let bounds = batch.column(2).as_list::<i32>();
        let counts = batch.column(3).as_list::<i32>();
        for row in 0..batch.num_rows() {
            let hour = ts.value(row);
            let b: Vec<f64> = bounds
                .value(row)
                .as_primitive::<Float64Type>()
                .values()
                .to_vec();
            assert_eq!(b, vec![1.0, 5.0, 10.0, f64::INFINITY]);
            let got: Vec<u64> = counts
                .value(row)
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec();
            let want: Vec<u64> = if names.value(row) == "latency_delta" {
                let points = &buckets(&data.delta_hists["b"], |p| p.t, H)[&hour];
                (0..4)
                    .map(|i| points.iter().map(|p| p.counts[i]).sum())
                    .collect()
            } else {
                let points = &buckets(&data.hists["b"], |p| p.t, H)[&hour];
                let (first, last) = (&points[0].counts, &points[points.len() - 1].counts);
                (0..4).map(|i| last[i] - first[i]).collect()
            };
            assert_eq!(got, want, "{} at {hour}", names.value(row));
            seen += 1;
        }
    }
    assert_eq!(seen, 10);

    // The summary was only in live rows: it is rolled up too.
    let rows = rollup_rows(&service, "metrics_1h", "rpc").await;
    assert_eq!(rows.len(), 5);
}

fn range_query(
    metric: &str,
    agg: Agg,
    start: i64,
    end: i64,
    step: i64,
    by_host: bool,
) -> RangeQuery {
    RangeQuery {
        metric: metric.to_owned(),
        matchers: Vec::new(),
        start,
        end,
        step,
        agg,
        group_by: if by_host {
            vec![Label::Attribute("host".into())]
        } else {
            Vec::new()
        },
        resolution: ResolutionMode::Auto,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn range_queries_read_rollups_and_answer_as_raw_points_do() {
    let (_dir, collector, _data) = setup().await;
    let rolled = service(&collector, true);
    let raw = service(&collector, false);
    run_rollups(&rolled, now()).await.unwrap();

    let values = [Agg::Sum, Agg::Avg, Agg::Min, Agg::Max, Agg::Count];
    let mut cases: Vec<(&str, Agg)> = Vec::new();
    for metric in ["temp", "req_delta", "req_total"] {
        cases.extend(values.iter().map(|agg| (metric, *agg)));
    }
    for metric in [
        "req_delta",
        "req_total",
        "latency",
        "latency_delta",
        "latency_exp",
        "rpc",
    ] {
        cases.push((metric, Agg::Rate));
    }
    for metric in ["latency", "latency_delta", "latency_exp"] {
        for q in [0.1, 0.5, 0.9, 0.99] {
            cases.push((metric, Agg::HistogramQuantile(q)));
        }
    }
    let end = H0 + HOURS * H;
    let misaligned = H0 + 17 * M + 20 * S;
    // (start, step, sources expected for a query without lookback)
    let windows: [(i64, i64, &[&str]); 5] = [
        (H0, H, &["1h", "raw"]),
        (H0 + H, 2 * H, &["1h", "raw"]),
        (misaligned, H, &["1m", "raw"]),
        (H0, 5 * M, &["1m", "raw"]),
        (H0, 90 * S, &["1m", "raw"]),
    ];
    let mut compared = 0;
    for (metric, agg) in cases {
        for &(start, step, sources) in &windows {
            for by_host in [false, true] {
                let mut query = range_query(metric, agg, start, end, step, by_host);
                let fast = range(&rolled, &query).await.unwrap();
                let slow = range(&raw, &query).await.unwrap();
                query.resolution = ResolutionMode::Raw;
                let forced = range(&rolled, &query).await.unwrap();
                let what = format!("{metric} {agg:?} start {start} step {step} by_host {by_host}");
                assert_eq!(slow.resolution, ["raw"], "{what}");
                assert_eq!(forced, slow, "{what}");
                assert_eq!(fast.resolution, sources, "{what}");
                assert_eq!(fast.metric_type, slow.metric_type, "{what}");
                assert_eq!(fast.series.len(), slow.series.len(), "{what}");
                for ((g1, p1), (g2, p2)) in fast.series.iter().zip(&slow.series) {
                    assert_eq!(g1, g2, "{what}");
                    assert!(!p2.is_empty(), "{what}");
                    let t1: Vec<i64> = p1.iter().map(|p| p.0).collect();
                    let t2: Vec<i64> = p2.iter().map(|p| p.0).collect();
                    assert_eq!(t1, t2, "{what}");
                    for (a, b) in p1.iter().zip(p2) {
                        assert!(close(a.1, b.1), "{what} at {}: {} vs {}", a.0, a.1, b.1);
                    }
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heatmaps_read_rollups_and_answer_as_raw_points_do() {
    use crate::metrics::query::heatmap::heatmap;
    let (_dir, collector, _data) = setup().await;
    let rolled = service(&collector, true);
    let raw = service(&collector, false);
    run_rollups(&rolled, now()).await.unwrap();
    let end = H0 + HOURS * H;
    let mut compared = 0;
    for metric in ["latency", "latency_delta", "latency_exp"] {
        for (start, step) in [(H0, H), (H0 + 17 * M + 20 * S, H), (H0, 5 * M)] {
            let query = range_query(metric, Agg::Buckets, start, end, step, false);
            let fast = heatmap(&rolled, &query).await.unwrap();
            let slow = heatmap(&raw, &query).await.unwrap();
            let what = format!("{metric} start {start} step {step}");
            assert_eq!(slow.resolution, ["raw"], "{what}");
            assert_ne!(fast.resolution, ["raw"], "{what}: rollups read");
            assert_eq!(fast.bounds, slow.bounds, "{what}");
            assert!(!slow.columns.is_empty(), "{what}");
            assert_eq!(fast.columns.len(), slow.columns.len(), "{what}");
            for (a, b) in fast.columns.iter().zip(&slow.columns) {
                assert_eq!(a.time, b.time, "{what}");
                assert!(
                    a.counts.iter().zip(&b.counts).all(|(x, y)| close(*x, *y)),
                    "{what} at {}: {:?} vs {:?}",
                    a.time,
                    a.counts,
                    b.counts
                );
            }
            compared += 1;
        }
    }
    assert_eq!(compared, 9);
}

fn rollup_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.join("rollups")];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                let name = path
                    .strip_prefix(dir)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned();
                out.insert(name, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passes_are_idempotent_and_late_points_are_rolled_up_again() {
    let (dir, collector, _data) = setup().await;
    let service = service(&collector, true);

    // Nothing is closed an hour after the data ends... with a day's delay.
    let mut waiting = QueryConfig::default();
    waiting.rollups.delay_secs = 86_400;
    let waiting = QueryService::new(std::sync::Arc::clone(collector.store()), waiting).unwrap();
    let stats = run_rollups(&waiting, now()).await.unwrap();
    assert_eq!((stats.closed_hours, stats.hours_written), (0, 0));
    assert!(!dir.path().join("rollups").exists());

    let first = run_rollups(&service, now()).await.unwrap();
    assert_eq!(first.hours_written, 5);
    assert!(
        first.points > 0 && first.rows_1m > first.rows_1h,
        "{first:?}"
    );
    let files = rollup_files(dir.path());
    // Five closed hours, two resolutions; hour 5 (not closed) has none.
    assert_eq!(files.len(), 10, "{:?}", files.keys().collect::<Vec<_>>());
    let named = |prefix: &str| -> String {
        let found: Vec<&String> = files.keys().filter(|n| n.starts_with(prefix)).collect();
        assert_eq!(found.len(), 1, "{prefix}: {found:?}");
        found[0].clone()
    };
    assert!(
        files.keys().all(|name| !name.contains("/2023-11-15/03-")),
        "hour 5 is 2023-11-15T03"
    );
    named("rollups/v1/1h/2023-11-15/02-");
    named("rollups/v1/1m/2023-11-14/22-");

    // Again: nothing to do, same files.
    let second = run_rollups(&service, now()).await.unwrap();
    assert_eq!(
        (second.hours_written, second.hours_current),
        (0, 5),
        "{second:?}"
    );
    assert_eq!(rollup_files(dir.path()), files);

    // Another query node (or a lost file) computes the same bytes.
    let hour_file = dir.path().join(named("rollups/v1/1h/2023-11-14/23-"));
    std::fs::remove_file(&hour_file).unwrap();
    let other = QueryService::new(
        std::sync::Arc::clone(collector.store()),
        QueryConfig::default(),
    )
    .unwrap();
    let third = run_rollups(&other, now()).await.unwrap();
    assert_eq!(third.hours_written, 1);
    assert_eq!(rollup_files(dir.path()), files);

    // A late point in a rolled-up hour: once flushed, that hour is computed again and the
    // range query sees the point.
    let query = range_query("req_delta", Agg::Sum, H0, H0 + 5 * H, H, false);
    let before = range(&service, &query).await.unwrap();
    let late = format!(
        r#"{{"name":"req_delta","sum":{{"aggregationTemporality":1,"isMonotonic":true,"dataPoints":[{{"attributes":{},"startTimeUnixNano":"{}","timeUnixNano":"{}","asDouble":1000}}]}}}}"#,
        attrs("c"),
        H0 + H,
        H0 + H + 30 * M
    );
    collector
        .export_metrics(body(&[late]), Format::Json)
        .await
        .unwrap();
    collector.flush_all().await.unwrap();
    let stale = range(&service, &query).await.unwrap();
    assert_eq!(
        stale.series, before.series,
        "the rollup does not have it yet"
    );
    let fourth = run_rollups(&service, now()).await.unwrap();
    // Hour 1 has a new file; the summary's live rows were flushed too, so every hour's
    // inputs changed.
    assert!(fourth.hours_written >= 1, "{fourth:?}");
    let after = range(&service, &query).await.unwrap();
    assert_eq!(after.resolution, ["1h"]);
    let raw = range(
        &service,
        &RangeQuery {
            resolution: ResolutionMode::Raw,
            ..query.clone()
        },
    )
    .await
    .unwrap();
    assert_eq!(after.series, raw.series);
    let hour1 = |answer: &crate::metrics::query::RangeAnswer| {
        answer.series[0].1.iter().find(|p| p.0 == H0 + H).unwrap().1
    };
    assert!(close(hour1(&after), hour1(&before) + 1000.0));
    // The replaced versions stay while a query may read them, then go; no temporaries
    // are left behind.
    let now_files = rollup_files(dir.path());
    assert_eq!(now_files.len(), 10 + 2 * fourth.hours_written);
    assert!(now_files.keys().all(|name| !name.ends_with(".tmp")));
    let later = SystemTime::now() + Duration::from_secs(3_600);
    files_of(&service).remove_stale(later, Duration::from_secs(600));
    assert_eq!(rollup_files(dir.path()).len(), 10);
    assert_eq!(range(&service, &query).await.unwrap(), after);
}

#[tokio::test]
async fn disabled_rollups_write_nothing_and_sql_sees_empty_tables() {
    let (dir, collector, _data) = setup().await;
    let service = service(&collector, false);
    let stats = run_rollups(&service, now()).await.unwrap();
    assert_eq!(stats.hours_written, 5, "run_rollups itself always runs");
    let off = QueryService::new(std::sync::Arc::clone(collector.store()), {
        let mut c = QueryConfig::default();
        c.rollups.enabled = false;
        c
    })
    .unwrap();
    let handle = spawn_rollup_loop(Arc::new(off));
    handle.await.unwrap();
    std::fs::remove_dir_all(dir.path().join("rollups")).unwrap();
    let batches = sql(&service, "SELECT count(*) AS n FROM metrics_1h").await;
    assert_eq!(
        batches[0]
            .column(0)
            .as_primitive::<arrow::datatypes::Int64Type>()
            .value(0),
        0
    );
}

mod cluster {
    use std::net::SocketAddr;

    use tokio::sync::watch;
    use weft_cluster::{ClusterView, Member, MemberState, node_data_dir};

    use super::*;
    use crate::ClusterSource;

    async fn serve(collector: Arc<Collector>) -> (SocketAddr, tokio::task::JoinHandle<()>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            axum::serve(listener, weft_collector::snapshot_server::router(collector))
                .await
                .unwrap();
        });
        (addr, server)
    }

    fn member(id: &str, addr: &str) -> Member {
        Member {
            node_id: id.to_owned(),
            grpc_addr: String::new(),
            http_addr: addr.to_owned(),
            state: MemberState::Up,
        }
    }

    fn cluster_service(root: &Path, members: Vec<Member>, enabled: bool) -> QueryService {
        let (tx, rx) = watch::channel(Arc::new(ClusterView::new(members, 16, 2, 1)));
        // The view stays as built: the sender may go.
        drop(tx);
        let source =
            ClusterSource::new(root.to_path_buf(), rx, Duration::from_millis(500)).unwrap();
        let mut config = QueryConfig::default();
        config.rollups.enabled = enabled;
        QueryService::new_cluster(source, config).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_are_rolled_up_once_and_partial_hours_wait() {
        let dir = tempfile::tempdir().unwrap();
        let data = generate();
        let m1 = open(&node_data_dir(dir.path(), "m1"));
        let m2 = open(&node_data_dir(dir.path(), "m2"));
        // Both replicas store everything; m1 flushes its summary too, m2 keeps it live.
        write(&m1, &data).await;
        m1.flush_all().await.unwrap();
        write(&m2, &data).await;
        let (a1, s1) = serve(std::sync::Arc::clone(&m1)).await;
        let (a2, s2) = serve(std::sync::Arc::clone(&m2)).await;
        let members = vec![member("m1", &a1.to_string()), member("m2", &a2.to_string())];

        // A member that does not answer: its live rows could be missing, so no hour is
        // written.
        let mut with_down = members.clone();
        with_down.push(member("m3", "127.0.0.1:1"));
        let partial = cluster_service(dir.path(), with_down, true);
        let stats = run_rollups(&partial, now()).await.unwrap();
        assert_eq!(
            (stats.hours_written, stats.hours_partial),
            (0, 5),
            "{stats:?}"
        );
        assert!(rollup_files(dir.path()).is_empty(), "no file, no temporary");

        let service = cluster_service(dir.path(), members.clone(), true);
        let stats = run_rollups(&service, now()).await.unwrap();
        assert_eq!(stats.hours_written, 5, "{stats:?}");
        assert!(
            rollup_files(dir.path())
                .keys()
                .any(|name| name.starts_with("rollups/v1/1h/2023-11-14/22-"))
        );

        // Each point once: the gauge rows count the points written, not twice that.
        let gauges = rollup_rows(&service, "metrics_1h", "temp").await;
        for host in ["a", "b"] {
            for (hour, points) in buckets(&data.gauges[host], |p| p.t, H) {
                check(&gauges, host, hour, "points", Some(points.len() as f64));
            }
        }
        let raw = cluster_service(dir.path(), members, false);
        for (metric, agg) in [
            ("req_delta", Agg::Sum),
            ("req_total", Agg::Rate),
            ("latency", Agg::HistogramQuantile(0.9)),
            ("rpc", Agg::Rate),
        ] {
            let query = range_query(metric, agg, H0, H0 + HOURS * H, H, true);
            let fast = range(&service, &query).await.unwrap();
            let slow = range(&raw, &query).await.unwrap();
            assert_eq!(fast.resolution, ["1h", "raw"], "{metric}");
            assert_eq!(fast.series.len(), slow.series.len(), "{metric}");
            for ((g1, p1), (g2, p2)) in fast.series.iter().zip(&slow.series) {
                assert_eq!(g1, g2);
                assert_eq!(p1.len(), p2.len(), "{metric}");
                for (a, b) in p1.iter().zip(p2) {
                    assert_eq!(a.0, b.0);
                    assert!(close(a.1, b.1), "{metric} at {}: {} vs {}", a.0, a.1, b.1);
                }
            }
        }
        s1.abort();
        s2.abort();
    }
}

/// One pass over `WEFT_ROLLUP_BENCH_SERIES` series (default 1,000: 40% gauges, 30%
/// cumulative sums, 30% cumulative histograms with 10 buckets) × two hours at 10 s.
/// Not a test: `cargo test -p weft-query --release --lib rollup::tests::rollup_pass_speed
/// -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement, run by hand in release"]
async fn rollup_pass_speed() {
    let series: usize = std::env::var("WEFT_ROLLUP_BENCH_SERIES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000);
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path());
    let step = 10 * S;
    let points_per_series = (2 * H / step) as usize;
    let bounds = "[1,2,5,10,20,50,100,200,500,1000]";
    let began = std::time::Instant::now();
    for chunk in (0..series).collect::<Vec<_>>().chunks(50) {
        let mut metrics = Vec::new();
        for &i in chunk {
            let host = format!("h{i}");
            let mut dps = Vec::with_capacity(points_per_series);
            for k in 0..points_per_series {
                let t = H0 + k as i64 * step + (i as i64 % 7) * S;
                let a = attrs(&host);
                dps.push(match i % 10 {
                    0..4 => format!(r#"{{"attributes":{a},"timeUnixNano":"{t}","asDouble":{}}}"#, (k * 7 + i) % 100),
                    4..7 => format!(r#"{{"attributes":{a},"startTimeUnixNano":"{}","timeUnixNano":"{t}","asDouble":{}}}"#, H0 - H, k * 3),
                    _ => {
                        let counts: Vec<String> = (0..11).map(|b| format!(r#""{}""#, k * (b % 3 + 1))).collect();
                        let total: usize = (0..11).map(|b| k * (b % 3 + 1)).sum();
                        format!(r#"{{"attributes":{a},"startTimeUnixNano":"{}","timeUnixNano":"{t}","count":"{total}","sum":{},"bucketCounts":[{}],"explicitBounds":{bounds}}}"#, H0 - H, k * 10, counts.join(","))
                    }
                });
            }
            let dps = dps.join(",");
            metrics.push(match i % 10 {
                0..4 => format!(r#"{{"name":"bench_gauge","gauge":{{"dataPoints":[{dps}]}}}}"#),
                4..7 => format!(r#"{{"name":"bench_total","sum":{{"aggregationTemporality":2,"isMonotonic":true,"dataPoints":[{dps}]}}}}"#),
                _ => format!(r#"{{"name":"bench_latency","histogram":{{"aggregationTemporality":2,"dataPoints":[{dps}]}}}}"#),
            });
        }
        collector
            .export_metrics(body(&metrics), Format::Json)
            .await
            .unwrap();
    }
    collector.flush_all().await.unwrap();
    println!(
        "wrote {} points in {:?}",
        series * points_per_series,
        began.elapsed()
    );
    let service = service(&collector, true);
    let stats = run_rollups(&service, now()).await.unwrap();
    println!(
        "rollup pass: {} hours, {} points -> {} 1m rows + {} 1h rows, {} bytes, {:?} ({:.0} points/s)",
        stats.hours_written,
        stats.points,
        stats.rows_1m,
        stats.rows_1h,
        stats.bytes,
        stats.elapsed,
        stats.points as f64 / stats.elapsed.as_secs_f64()
    );
    let raw_bytes: u64 = collector
        .snapshot(weft_schemas::Table::Metrics)
        .files
        .iter()
        .map(|f| f.bytes)
        .sum();
    println!("raw parquet bytes: {raw_bytes}");
    for (metric, agg) in [
        ("bench_gauge", Agg::Avg),
        ("bench_total", Agg::Rate),
        ("bench_latency", Agg::HistogramQuantile(0.99)),
    ] {
        let query = range_query(metric, agg, H0, H0 + 2 * H, H, false);
        let t = std::time::Instant::now();
        let fast = range(&service, &query).await.unwrap();
        let fast_time = t.elapsed();
        let t = std::time::Instant::now();
        let raw_query = RangeQuery {
            resolution: ResolutionMode::Raw,
            ..query
        };
        // The raw path may exceed the memory limit (it sorts every point) where the
        // rollup path does not.
        let slow = match range(&service, &raw_query).await {
            Ok(_) => format!("{:?}", t.elapsed()),
            Err(e) => format!("failed after {:?}: {e}", t.elapsed()),
        };
        println!(
            "{metric} {agg:?} step 1h: rollups {:?} {fast_time:?} ({} series), raw {slow}",
            fast.resolution,
            fast.series.len()
        );
    }
}
