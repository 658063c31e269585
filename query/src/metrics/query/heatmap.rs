//! `GET /api/v1/metrics/heatmap`: a histogram metric as time × bucket counts, for the
//! viewer's heatmap.
//!
//! ```text
//!  metric, start, end, step, match[..], resolution   (query_range's grammar; no agg, q, group_by)
//!    ─> RangeQuery { agg: Buckets } ─> the range-query Engine, as histogram_quantile reads:
//!       per series, per step bucket, the bucket-count increase (cumulative: since the
//!       previous point, a reset or new start_time restarts from zero; delta: the counts)
//!    ─> every series merged per step bucket (buckets keyed by upper bound)
//!    ─> {"bounds": [0.005, …, null], "columns": [{"time", "counts": [per bound]}]}
//! ```
//!
//! The counts are exactly what `histogram_quantile` interpolates in, so a heatmap and the
//! percentile lines of the same step never disagree.

use std::collections::BTreeMap;

use serde::Serialize;
use ts_rs::TS;

use super::{Agg, Hist, RangeQuery, metric_type_name, parse_range_query, rfc3339};
use crate::{Error, QueryService, Result};

/// The answer to `GET /api/v1/metrics/heatmap`.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct Heatmap {
    pub metric: String,
    /// `histogram` or `exponential_histogram`; `null` when no point matched.
    #[serde(rename = "type")]
    pub metric_type: Option<String>,
    /// RFC 3339; `[start, end)`.
    pub start: String,
    pub end: String,
    pub step_seconds: f64,
    /// The sources read, coarsest first (`1h`, `1m`, `raw`), as query_range reports them.
    pub resolution: Vec<String>,
    /// The buckets' upper bounds, ascending (the rows of the heatmap); `null` is +Inf.
    pub bounds: Vec<Option<f64>>,
    /// The step buckets that saw observations, in time order.
    pub columns: Vec<HeatmapColumn>,
}

/// One step bucket `[time, time + step)`.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct HeatmapColumn {
    /// RFC 3339: the bucket's start.
    pub time: String,
    /// Observations per bucket of [`Heatmap::bounds`] (same order and length).
    pub counts: Vec<f64>,
}

/// Parses a heatmap request: query_range's parameters without `agg`, `q` and `group_by`
/// (a heatmap merges every selected series).
pub fn parse_heatmap_query(pairs: &[(String, String)], now: i64) -> Result<RangeQuery> {
    if let Some((key, _)) = pairs
        .iter()
        .find(|(k, _)| matches!(k.as_str(), "agg" | "q" | "group_by"))
    {
        return Err(Error::BadRequest(format!(
            "unknown parameter {key:?} (expected metric, start, end, step, match[..], \
             resolution): a heatmap merges every selected series"
        )));
    }
    let mut query = parse_range_query(pairs, now)?;
    query.agg = Agg::Buckets;
    Ok(query)
}

/// Runs a heatmap query within the query time limit.
pub async fn heatmap(service: &QueryService, query: &RangeQuery) -> Result<Heatmap> {
    let timeout_secs = service.config().timeout_secs;
    let max_cells = service.config().max_result_rows;
    let run = async {
        let (engine, resolution) = super::run_engine(service, query).await?;
        let (metric_type, series) = engine.finish_histograms(max_cells)?;
        // No group_by: one group holds every series.
        let columns: Vec<(i64, Hist)> = series.into_iter().flat_map(|(_, h)| h).collect();
        Ok::<_, Error>(layout(query, metric_type, resolution, columns))
    };
    tokio::time::timeout(std::time::Duration::from_secs(timeout_secs), run)
        .await
        .map_err(|_| Error::Timeout(timeout_secs))?
}

/// Lays the merged histograms of each step bucket out on the union of their bounds.
fn layout(
    query: &RangeQuery,
    metric_type: Option<i8>,
    resolution: Vec<&'static str>,
    columns: Vec<(i64, Hist)>,
) -> Heatmap {
    // Bounds by their bit pattern (as Hist merges them), ordered by value.
    let mut bounds: Vec<f64> = columns
        .iter()
        .flat_map(|(_, h)| h.buckets.iter().map(|(b, _)| *b))
        .collect();
    bounds.sort_by(f64::total_cmp);
    bounds.dedup_by(|a, b| a.to_bits() == b.to_bits());
    let row: BTreeMap<u64, usize> = bounds
        .iter()
        .enumerate()
        .map(|(i, b)| (b.to_bits(), i))
        .collect();
    let columns = columns
        .into_iter()
        .filter(|(_, h)| h.buckets.iter().any(|(_, c)| *c > 0.0))
        .map(|(time, hist)| {
            let mut counts = vec![0.0; bounds.len()];
            for (bound, count) in hist.buckets {
                if let Some(&i) = row.get(&bound.to_bits()) {
                    counts[i] += count;
                }
            }
            HeatmapColumn {
                time: rfc3339(time),
                counts,
            }
        })
        .collect();
    Heatmap {
        metric: query.metric.clone(),
        metric_type: metric_type.map(|t| metric_type_name(t).to_owned()),
        start: rfc3339(query.start),
        end: rfc3339(query.end),
        step_seconds: query.step as f64 / 1e9,
        resolution: resolution.into_iter().map(str::to_owned).collect(),
        bounds: bounds
            .into_iter()
            .map(|b| b.is_finite().then_some(b))
            .collect(),
        columns,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Engine, Point};
    use super::*;
    use weft_schemas::metrics::metric_type;

    const S: i64 = 1_000_000_000;
    const T0: i64 = 1_700_000_000 * S;
    const CUMULATIVE: Option<i8> = Some(2);
    const DELTA: Option<i8> = Some(1);

    fn pairs(query: &str) -> Vec<(String, String)> {
        query
            .split('&')
            .map(|kv| {
                let (k, v) = kv.split_once('=').unwrap();
                (k.to_owned(), v.to_owned())
            })
            .collect()
    }

    fn point(
        series_id: u64,
        temporality: Option<i8>,
        start: i64,
        time: i64,
        counts: &[u64],
    ) -> Point {
        Point {
            series_id,
            group: Vec::new(),
            metric_type: metric_type::HISTOGRAM,
            temporality,
            start_time: Some(start),
            time,
            value: None,
            count: Some(counts.iter().sum()),
            hist: Some(Hist::explicit(&[0.1, 1.0], counts)),
        }
    }

    fn run(query: &RangeQuery, points: Vec<Point>) -> Heatmap {
        let mut engine = Engine::new(query);
        for p in points {
            engine.push(p).unwrap();
        }
        let (metric_type, series) = engine.finish_histograms(1_000).unwrap();
        let columns = series.into_iter().flat_map(|(_, h)| h).collect();
        layout(query, metric_type, vec!["raw"], columns)
    }

    fn counts(map: &Heatmap) -> Vec<(String, Vec<f64>)> {
        map.columns
            .iter()
            .map(|c| (c.time.clone(), c.counts.clone()))
            .collect()
    }

    #[test]
    fn parameters_are_query_ranges_without_aggregation() {
        let q = parse_heatmap_query(&pairs("metric=lat&start=10&end=70&step=30s"), 0).unwrap();
        assert_eq!(
            (q.agg, q.start, q.end, q.step),
            (Agg::Buckets, 10 * S, 70 * S, 30 * S)
        );
        assert_eq!(
            q.lookback(),
            30 * S,
            "one step before start for the first increase"
        );
        for bad in [
            "metric=lat&agg=sum",
            "metric=lat&q=0.5",
            "metric=lat&group_by=a",
            "start=10&end=70",
            "metric=lat&step=0s",
            "metric=lat&start=70&end=10",
            "metric=lat&colour=blue",
        ] {
            assert!(
                matches!(
                    parse_heatmap_query(&pairs(bad), 100 * S),
                    Err(Error::BadRequest(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn cumulative_increases_restart_after_a_reset_and_series_merge() {
        let q = parse_heatmap_query(
            &pairs(&format!(
                "metric=lat&start={}&end={}&step=60s",
                T0 / S,
                T0 / S + 180
            )),
            0,
        )
        .unwrap();
        let heat = run(
            &q,
            vec![
                // Series 1 began long before the window: its first point (in the lookback)
                // only serves as "previous".
                point(1, CUMULATIVE, T0 - 3_600 * S, T0 - 30 * S, &[10, 10, 10]),
                point(1, CUMULATIVE, T0 - 3_600 * S, T0 + 30 * S, &[12, 15, 10]),
                // A reset (counts went down): the whole histogram is the increase.
                point(1, CUMULATIVE, T0 - 3_600 * S, T0 + 90 * S, &[1, 0, 2]),
                point(1, CUMULATIVE, T0 - 3_600 * S, T0 + 150 * S, &[1, 4, 2]),
                // Series 2 is a delta histogram: its counts add up as they are.
                point(2, DELTA, T0, T0 + 40 * S, &[0, 1, 0]),
                point(2, DELTA, T0, T0 + 50 * S, &[3, 0, 0]),
            ],
        );
        assert_eq!(heat.metric_type.as_deref(), Some("histogram"));
        assert_eq!(heat.bounds, vec![Some(0.1), Some(1.0), None]);
        assert_eq!(
            counts(&heat),
            vec![
                (rfc3339(T0), vec![2.0 + 3.0, 5.0 + 1.0, 0.0]),
                (rfc3339(T0 + 60 * S), vec![1.0, 0.0, 2.0]),
                (rfc3339(T0 + 120 * S), vec![0.0, 4.0, 0.0]),
            ]
        );
    }

    #[test]
    fn a_series_that_starts_inside_the_window_counts_from_zero() {
        let q = parse_heatmap_query(
            &pairs(&format!(
                "metric=lat&start={}&end={}&step=60s",
                T0 / S,
                T0 / S + 120
            )),
            0,
        )
        .unwrap();
        let heat = run(
            &q,
            vec![
                point(7, CUMULATIVE, T0 + 5 * S, T0 + 10 * S, &[1, 2, 0]),
                // A new start_time is a restart even though no count went down.
                point(7, CUMULATIVE, T0 + 70 * S, T0 + 75 * S, &[4, 2, 1]),
            ],
        );
        assert_eq!(
            counts(&heat),
            vec![
                (rfc3339(T0), vec![1.0, 2.0, 0.0]),
                (rfc3339(T0 + 60 * S), vec![4.0, 2.0, 1.0]),
            ]
        );
    }

    #[test]
    fn a_gauge_is_refused() {
        let q = parse_heatmap_query(&pairs("metric=temp&start=0&end=60"), 0).unwrap();
        let mut engine = Engine::new(&q);
        let mut p = point(1, None, 0, S, &[1, 1, 1]);
        p.metric_type = metric_type::GAUGE;
        assert!(matches!(engine.push(p), Err(Error::BadRequest(_))));
    }
}
