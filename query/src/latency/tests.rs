//! Latency reports on a real collector: generated spans whose exact weighted percentiles
//! are computed here and compared within the sketch's stated error, counts that must be
//! exact, Zipkin traces checked against values read off the JSON by hand, and parameter
//! validation.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;
use crate::graph::tests::{
    Harness, MS, SECOND, SERVER, T0, assert_close, request, span, with_error, with_trace_state,
};

/// One generated span.
#[derive(Debug, Clone)]
struct Sample {
    trace: u128,
    operation: &'static str,
    start: i64,
    duration: i64,
    weight: f64,
    error: bool,
}

impl Sample {
    fn json(&self) -> Value {
        let state = match self.weight as i64 {
            1 => "",
            2 => "ot=th:8",
            4 => "ot=th:c",
            w => panic!("weight {w}"),
        };
        let mut s = span(
            self.trace,
            1,
            0,
            self.operation,
            SERVER,
            self.start,
            self.duration,
        );
        if self.error {
            s = with_error(s);
        }
        with_trace_state(s, state)
    }
}

/// 3000 checkout spans over [T0, T0 + 60 s): durations from 10 µs to ~1 s, weights 1, 2
/// and 4, every 7th an error; a third are `cart`, the rest `pay`.
fn samples() -> Vec<Sample> {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    (0..3000u64)
        .map(|i| {
            let (a, b) = (next(), next());
            Sample {
                trace: u128::from(i) + 1,
                operation: if i % 3 == 0 { "cart" } else { "pay" },
                start: T0 + (i as i64 * 7919) % 60_000 * MS + i as i64,
                duration: 10_000 + (a % 1_000_000_000) as i64 / (1 + (b % 1000) as i64),
                weight: [1.0, 2.0, 4.0][(i / 3 % 3) as usize],
                error: i % 7 == 0,
            }
        })
        .collect()
}

/// The weighted nearest-rank quantile the sketch is measured against.
fn exact(samples: &[&Sample], q: f64) -> i64 {
    let mut sorted: Vec<(i64, f64)> = samples.iter().map(|s| (s.duration, s.weight)).collect();
    sorted.sort_by_key(|(d, _)| *d);
    let total: f64 = sorted.iter().map(|(_, w)| w).sum();
    let target = q * total;
    let mut cumulative = 0.0;
    for (d, w) in &sorted {
        cumulative += w;
        if cumulative >= target {
            return *d;
        }
    }
    sorted.last().unwrap().0
}

fn check_quantiles(got: &Quantiles, samples: &[&Sample], what: &str) {
    for (q, value) in [
        (0.5, got.p50),
        (0.9, got.p90),
        (0.95, got.p95),
        (0.99, got.p99),
    ] {
        assert_close(value, exact(samples, q), &format!("{what} p{}", q * 100.0));
    }
    assert_eq!(
        got.max,
        samples.iter().map(|s| s.duration).max().unwrap(),
        "{what} max"
    );
    assert_eq!(
        got.min,
        samples.iter().map(|s| s.duration).min().unwrap(),
        "{what} min"
    );
}

fn weight(samples: &[&Sample]) -> f64 {
    samples.iter().map(|s| s.weight).sum()
}

fn errors(samples: &[&Sample]) -> f64 {
    samples.iter().filter(|s| s.error).map(|s| s.weight).sum()
}

/// 100 `pay` spans of 5 ms an hour earlier, for the comparison window.
fn earlier() -> Vec<Sample> {
    (0..100)
        .map(|i| Sample {
            trace: 1_000_000 + i as u128,
            operation: "pay",
            start: T0 - 3600 * SECOND + i * 100 * MS,
            duration: 5 * MS,
            weight: 1.0,
            error: false,
        })
        .collect()
}

/// The samples in Parquet (first half, plus the comparison window) and live (second half),
/// plus spans of another service that must not count.
async fn loaded(samples: &[Sample]) -> Harness {
    let harness = Harness::new().await;
    let (first, second) = samples.split_at(samples.len() / 2);
    let json = |part: &[Sample]| part.iter().map(Sample::json).collect::<Vec<_>>();
    let noise = vec![span(9_999_999, 1, 0, "pay", SERVER, T0 + SECOND, 123 * MS)];
    harness
        .ingest(&request(vec![
            ("checkout", json(first)),
            ("inventory", noise),
        ]))
        .await;
    harness
        .ingest(&request(vec![("checkout", json(&earlier()))]))
        .await;
    harness.flush().await;
    harness
        .ingest(&request(vec![("checkout", json(second))]))
        .await;
    harness
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_report_matches_exact_values() {
    let all = samples();
    let harness = loaded(&all).await;
    let range = TimeRange {
        start_ns: T0,
        end_ns: T0 + 60 * SECOND,
    };
    let compare = TimeRange {
        start_ns: T0 - 3600 * SECOND,
        end_ns: T0 - 3540 * SECOND,
    };
    let query = LatencyQuery {
        service: Some("checkout".into()),
        operation: Some("pay".into()),
        range,
        step_ns: Some(10 * SECOND),
        compare: Some(compare),
    };
    let LatencyResponse::Service(report) = latency(&harness.service, &query).await.unwrap() else {
        panic!("a service report");
    };
    assert_eq!(report.step_ns, 10 * SECOND);
    let current = &report.current;
    let pay: Vec<&Sample> = all.iter().filter(|s| s.operation == "pay").collect();
    assert_eq!(current.count, weight(&pay));
    assert_eq!(current.errors, errors(&pay));
    assert_eq!(current.error_rate, errors(&pay) / weight(&pay));
    assert_eq!(current.rate_per_sec, weight(&pay) / 60.0);
    check_quantiles(&current.latency_ns.unwrap(), &pay, "pay");

    // Series: six 10 s steps, counts exact, percentiles within the bound.
    assert_eq!(current.series.len(), 6);
    for (i, point) in current.series.iter().enumerate() {
        let from = T0 + i as i64 * 10 * SECOND;
        assert_eq!(point.start_ns, from);
        let in_step: Vec<&Sample> = pay
            .iter()
            .copied()
            .filter(|s| s.start >= from && s.start < from + 10 * SECOND)
            .collect();
        assert_eq!(point.count, weight(&in_step), "step {i}");
        assert_eq!(point.errors, errors(&in_step), "step {i}");
        assert_close(point.p95_ns.unwrap(), exact(&in_step, 0.95), "step p95");
    }

    // Histogram: powers of two, counts exact, exemplars the slowest three of each bucket.
    let mut buckets: BTreeMap<i64, Vec<&Sample>> = BTreeMap::new();
    for s in &pay {
        buckets
            .entry(1 << (63 - s.duration.leading_zeros()))
            .or_default()
            .push(s);
    }
    assert_eq!(current.histogram.len(), buckets.len());
    for (bucket, (lower, members)) in current.histogram.iter().zip(&buckets) {
        assert_eq!((bucket.lower_ns, bucket.upper_ns), (*lower, 2 * lower));
        assert_eq!(bucket.count, weight(members));
        let mut slowest: Vec<(i64, u128)> =
            members.iter().map(|s| (-s.duration, s.trace)).collect();
        slowest.sort();
        let expected: Vec<String> = slowest
            .iter()
            .take(3)
            .map(|(_, t)| format!("{t:032x}"))
            .collect();
        assert_eq!(bucket.exemplar_trace_ids, expected, "bucket {lower}");
    }

    // Both operations of the service, slowest p99 first, whatever `operation` selects.
    let cart: Vec<&Sample> = all.iter().filter(|s| s.operation == "cart").collect();
    let mut expected = vec![
        ("pay", exact(&pay, 0.99), weight(&pay)),
        ("cart", exact(&cart, 0.99), weight(&cart)),
    ];
    expected.sort_by_key(|(_, p99, _)| -p99);
    assert_eq!(current.slowest_operations.len(), 2);
    for (row, (name, p99, count)) in current.slowest_operations.iter().zip(expected) {
        assert_eq!(
            (row.service.as_str(), row.operation.as_str(), row.count),
            ("checkout", name, count)
        );
        assert_close(row.p99_ns.unwrap(), p99, name);
    }

    // The comparison window: 100 spans of exactly 5 ms.
    let before = report.compare.as_ref().unwrap();
    assert_eq!(
        (before.start_ns, before.end_ns),
        (compare.start_ns, compare.end_ns)
    );
    assert_eq!((before.count, before.errors), (100.0, 0.0));
    let q = before.latency_ns.unwrap();
    assert_eq!((q.p50, q.p99, q.max), (5 * MS, 5 * MS, 5 * MS));
    assert_eq!(before.series.len(), 6);
    assert_eq!(before.series.iter().map(|p| p.count).sum::<f64>(), 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operation_table_matches_exact_values() {
    let all = samples();
    let harness = loaded(&all).await;
    let query = LatencyQuery {
        service: None,
        operation: None,
        range: TimeRange {
            start_ns: T0,
            end_ns: T0 + 60 * SECOND,
        },
        step_ns: None,
        compare: None,
    };
    let LatencyResponse::Operations(table) = latency(&harness.service, &query).await.unwrap()
    else {
        panic!("an operations table");
    };
    assert!(table.compare.is_none());
    let keys: Vec<(&str, &str)> = table
        .current
        .operations
        .iter()
        .map(|r| (r.service.as_str(), r.operation.as_str()))
        .collect();
    assert_eq!(
        keys,
        vec![
            ("checkout", "cart"),
            ("checkout", "pay"),
            ("inventory", "pay")
        ]
    );
    for row in &table.current.operations[..2] {
        let members: Vec<&Sample> = all
            .iter()
            .filter(|s| s.operation == row.operation)
            .collect();
        assert_eq!(row.count, weight(&members));
        assert_eq!(row.errors, errors(&members));
        for (q, got) in [
            (0.5, row.p50_ns),
            (0.9, row.p90_ns),
            (0.95, row.p95_ns),
            (0.99, row.p99_ns),
        ] {
            assert_close(got.unwrap(), exact(&members, q), &row.operation);
        }
        assert_eq!(row.max_ns, members.iter().map(|s| s.duration).max());
    }
    let noise = &table.current.operations[2];
    assert_eq!(
        (noise.count, noise.max_ns, noise.p50_ns),
        (1.0, Some(123 * MS), Some(123 * MS))
    );
}

#[tokio::test]
async fn zipkin_reports_match_the_json() {
    // yelp.json, mobile_api: four CLIENT spans of 14000, 3000, 1026 and 1066 µs and its
    // SERVER span of 41740 µs; no errors.
    let harness = Harness::new().await;
    harness.ingest_zipkin("yelp.json").await;
    harness.ingest_zipkin("messaging-kafka.json").await;
    let report = |service: &str, start_s: i64| LatencyQuery {
        service: Some(service.into()),
        operation: None,
        range: TimeRange {
            start_ns: start_s * SECOND,
            end_ns: (start_s + 1) * SECOND,
        },
        step_ns: None,
        compare: None,
    };
    let LatencyResponse::Service(yelp) =
        latency(&harness.service, &report("mobile_api", 1_571_896_375))
            .await
            .unwrap()
    else {
        panic!("a service report");
    };
    let r = &yelp.current;
    assert_eq!((r.count, r.errors), (5.0, 0.0));
    let q = r.latency_ns.unwrap();
    assert_close(q.p50, 3_000_000, "mobile_api p50");
    assert_eq!((q.min, q.max), (1_026_000, 41_740_000));
    assert_eq!(
        r.slowest_operations[0].operation,
        "post /location/update/v4"
    );
    assert_eq!(
        yelp.step_ns, SECOND,
        "a one-second window has one-second steps"
    );

    // messaging-kafka.json, serviceb: three CONSUMER polls of 1 µs and three on-message
    // spans of 310, 265 and 251 µs, all three tagged `error`.
    let LatencyResponse::Service(kafka) =
        latency(&harness.service, &report("serviceb", 1_541_405_397))
            .await
            .unwrap()
    else {
        panic!("a service report");
    };
    let r = &kafka.current;
    assert_eq!((r.count, r.errors, r.error_rate), (6.0, 3.0, 0.5));
    let q = r.latency_ns.unwrap();
    assert_close(q.p50, 1_000, "serviceb p50");
    assert_close(q.p90, 310_000, "serviceb p90");
    assert_eq!((q.min, q.max), (1_000, 310_000));
    let ops: BTreeMap<&str, f64> = r
        .slowest_operations
        .iter()
        .map(|o| (o.operation.as_str(), o.count))
        .collect();
    assert_eq!(ops, BTreeMap::from([("on-message", 3.0), ("poll", 3.0)]));
}

fn params(pairs: &[(&str, &str)]) -> Result<LatencyQuery> {
    let map: serde_json::Map<String, Value> = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    let parsed: LatencyParams =
        serde_json::from_value(Value::Object(map)).map_err(|e| Error::BadRequest(e.to_string()))?;
    parsed.parse(10 * 3600 * SECOND)
}

#[test]
fn parameters_are_checked() {
    let q = params(&[
        ("service", "a"),
        ("start", "5ns"),
        ("end", "2000000000ns"),
        ("step", "1s"),
    ])
    .unwrap();
    assert_eq!(
        q.range,
        TimeRange {
            start_ns: 5,
            end_ns: 2_000_000_000
        }
    );
    assert_eq!(q.step_ns, Some(SECOND));
    let q = params(&[]).unwrap();
    assert_eq!(
        q.range,
        TimeRange {
            start_ns: 9 * 3600 * SECOND,
            end_ns: 10 * 3600 * SECOND
        }
    );
    assert_eq!(q.service, None);
    let q = params(&[
        ("service", "a"),
        ("compare_start", "1ns"),
        ("compare_end", "2ns"),
    ])
    .unwrap();
    assert_eq!(
        q.compare,
        Some(TimeRange {
            start_ns: 1,
            end_ns: 2
        })
    );
    for bad in [
        vec![("operation", "x")],
        vec![("compare_start", "1")],
        vec![("service", "a"), ("step", "fast")],
        vec![("start", "tomorrow")],
        vec![("start", "9"), ("end", "3")],
        vec![("servce", "typo")],
    ] {
        assert!(matches!(params(&bad), Err(Error::BadRequest(_))), "{bad:?}");
    }
}

#[tokio::test]
async fn too_many_steps_are_refused() {
    let harness = Harness::new().await;
    let query = LatencyQuery {
        service: Some("a".into()),
        operation: None,
        range: TimeRange {
            start_ns: 0,
            end_ns: 3600 * SECOND,
        },
        step_ns: Some(MS),
        compare: None,
    };
    let err = latency(&harness.service, &query).await.unwrap_err();
    assert!(matches!(err, Error::BadRequest(_)), "{err:?}");
    let default_step = LatencyQuery {
        step_ns: None,
        ..query
    };
    let LatencyResponse::Service(report) = latency(&harness.service, &default_step).await.unwrap()
    else {
        panic!("a service report");
    };
    assert_eq!(report.step_ns, 60 * SECOND);
    assert_eq!(report.current.series.len(), 60);
    assert_eq!(report.current.count, 0.0);
    assert_eq!(report.current.latency_ns, None);
}
