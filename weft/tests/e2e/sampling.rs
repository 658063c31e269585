//! Sampling through the real binary: head decisions identical on two ingest nodes and equal
//! to the specification's threshold arithmetic, tail sampling on the collectors keeping
//! error traces whole with the right adjusted counts, SIGHUP reloads, `/metrics`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use weft_schemas::sampling::{Randomness, Threshold};

use crate::cluster_harness::{Cluster, Discovery};
use crate::common::{get, post};
use crate::server::TestServer;

const PROTOBUF: &str = "application/x-protobuf";
const T0: u64 = 1_700_000_000_000_000_000;
const WAIT: Duration = Duration::from_secs(60);

/// `n` trace IDs from a fixed LCG, starting at `seed`.
fn trace_ids(seed: u64, n: usize) -> Vec<u128> {
    let mut x = seed;
    let mut next = move || {
        x = x
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        x
    };
    (0..n)
        .map(|_| (u128::from(next()) << 64) | u128::from(next()))
        .collect()
}

fn randomness(trace: u128) -> Randomness {
    Randomness::from_trace_id(&trace.to_be_bytes()).expect("16 bytes")
}

/// One span per trace, all in `service`; `error` marks which traces fail.
fn body(service: &str, traces: &[u128], span_id: u64, error: impl Fn(u128) -> bool) -> Vec<u8> {
    let spans = traces
        .iter()
        .map(|&t| Span {
            trace_id: t.to_be_bytes().to_vec(),
            span_id: span_id.to_be_bytes().to_vec(),
            name: "GET /item".into(),
            kind: 2,
            start_time_unix_nano: T0,
            end_time_unix_nano: T0 + 5_000_000,
            status: error(t).then(|| Status {
                code: 2,
                ..Default::default()
            }),
            ..Default::default()
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(service.into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

async fn export(url: &str, body: Vec<u8>) {
    let reply = post(url, &[("content-type", PROTOBUF)], body).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
}

/// The value of one series in a Prometheus text exposition (0 when absent).
fn metric(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Every span of `service` on the query node: trace ID -> sample_weight.
async fn stored(cluster: &Cluster, service: &str) -> BTreeMap<u128, f64> {
    let (rows, _) = cluster
        .sql(&format!(
            "SELECT hex_id(trace_id) AS t, sample_weight AS w FROM spans \
             WHERE service_name = '{service}'"
        ))
        .await;
    let map: BTreeMap<u128, f64> = rows
        .iter()
        .map(|r| {
            let t = u128::from_str_radix(r["t"].as_str().expect("hex"), 16).expect("trace id");
            (t, r["w"].as_f64().expect("weight"))
        })
        .collect();
    assert_eq!(map.len(), rows.len(), "a span of {service} is stored twice");
    map
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_ingest_nodes_decide_alike_and_tail_sampling_keeps_errors_whole() {
    // Head 25 % on the ingest nodes; tail sampling on the collectors with the default
    // policies (errors; over 1 s; 10 % of the rest).
    let mut cluster = Cluster::start(
        Discovery::Static,
        3,
        3600,
        "[sampling.head]\nratio = 0.25\n[sampling.tail]\nenabled = true\ndecision_wait_ms = 500\n",
    )
    .await;
    let traces = trace_ids(0x5eed, 4_000);
    // Every 20th trace fails in its second span only.
    let failing: BTreeSet<u128> = traces.iter().copied().step_by(20).collect();
    // The same trace IDs through both ingest nodes: span 1 (service a) through i1, span 2
    // (service b) through i2.
    let (i1, i2) = (
        cluster.ingests[0].url("otlp-http"),
        cluster.ingests[1].url("otlp-http"),
    );
    for chunk in traces.chunks(500) {
        export(&format!("{i1}/v1/traces"), body("a", chunk, 1, |_| false)).await;
        export(
            &format!("{i2}/v1/traces"),
            body("b", chunk, 2, |t| failing.contains(&t)),
        )
        .await;
    }

    // The specification's arithmetic, computed here: head keeps R >= T(0.25); the tail
    // keeps failing traces whole (weight 4 = 1/0.25) and others when R >= T(0.1)
    // (T(0.1) > T(0.25), so weight 10).
    let head = Threshold::from_ratio_with_precision(0.25, 4).unwrap();
    let baseline = Threshold::from_ratio(0.1).unwrap();
    let mut expected = BTreeMap::new();
    for &t in &traces {
        let r = randomness(t);
        if failing.contains(&t) && head.keeps(r) {
            expected.insert(t, 4.0);
        } else if baseline.keeps(r) {
            expected.insert(t, baseline.adjusted_count());
        }
    }
    assert!(expected.len() > 300, "{}", expected.len());

    let until = Instant::now() + WAIT;
    let (a, b) = loop {
        let (a, b) = (stored(&cluster, "a").await, stored(&cluster, "b").await);
        if a.len() >= expected.len() && b.len() >= expected.len() || Instant::now() > until {
            break (a, b);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Identical decisions on both ingest nodes, and whole traces: span a and span b of
    // every kept trace, with the same weight, each stored once.
    assert_eq!(
        a.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>()
    );
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (t, w) in &expected {
        assert!(
            (a[t] - w).abs() < 1e-9 && (b[t] - w).abs() < 1e-9,
            "{t:x}: {w}"
        );
    }
    let errors_kept = failing
        .iter()
        .filter(|t| head.keeps(randomness(**t)))
        .count();
    assert!(errors_kept > 20, "{errors_kept}");
    // Estimated from the stored weights: 8,000 spans were sent.
    let estimate: f64 = a.values().chain(b.values()).sum();
    assert!((estimate - 8_000.0).abs() < 1_000.0, "{estimate}");

    // Both ingest nodes dropped the same number of spans, as the arithmetic says.
    let head_kept = traces
        .iter()
        .filter(|t| head.keeps(randomness(**t)))
        .count();
    for ingest in &cluster.ingests {
        let text = get(&format!("{}/metrics", ingest.url("otlp-http")))
            .await
            .text();
        let dropped = metric(
            &text,
            "weft_head_sampling_spans_total{decision=\"dropped\",rule=\"default\"}",
        );
        assert_eq!(dropped as usize, traces.len() - head_kept, "{text}");
    }
    // Each collector counts its tail decisions by policy; with R = 2 the kept error traces
    // are counted twice in total.
    let mut kept_by_errors = 0.0;
    for i in 0..3 {
        let url = cluster
            .collector(&format!("c{}", i + 1))
            .url("cluster-http");
        let text = get(&format!("{url}/metrics")).await.text();
        kept_by_errors += metric(
            &text,
            "weft_tail_sampling_traces_total{decision=\"kept\",policy=\"errors\",cause=\"quiet\"}",
        );
    }
    assert_eq!(kept_by_errors as usize, 2 * errors_kept);
}

#[tokio::test]
async fn sighup_reloads_sampling_and_refuses_a_bad_file() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("weft.toml");
    std::fs::write(&config, "[sampling.head]\nratio = 1.0\n").unwrap();
    let server = TestServer::start(&["--config", config.to_str().unwrap()]);
    let traces_url = server.http_url("/v1/traces");
    let metrics_url = server.http_url("/metrics");
    let first = trace_ids(1, 300);
    export(&traces_url, body("s", &first, 1, |_| false)).await;
    assert_eq!(
        server.sql("SELECT count(*) AS n FROM spans").await[0]["n"],
        300
    );

    std::fs::write(&config, "[sampling.head]\nratio = 0.25\n").unwrap();
    server.signal("-HUP");
    wait_metric(
        &metrics_url,
        "weft_config_reloads_total{result=\"ok\"}",
        1.0,
    )
    .await;
    let second = trace_ids(2, 2_000);
    export(&traces_url, body("s", &second, 1, |_| false)).await;
    let head = Threshold::from_ratio_with_precision(0.25, 4).unwrap();
    let kept = second
        .iter()
        .filter(|t| head.keeps(randomness(**t)))
        .count();
    let rows = server
        .sql("SELECT count(*) AS n, sum(sample_weight) AS w FROM spans")
        .await;
    assert_eq!(rows[0]["n"].as_u64().unwrap() as usize, 300 + kept);
    assert_eq!(rows[0]["w"].as_f64().unwrap(), 300.0 + 4.0 * kept as f64);

    // A bad file is refused; the running settings stay.
    std::fs::write(&config, "[sampling.head]\nratio = 7\n").unwrap();
    server.signal("-HUP");
    wait_metric(
        &metrics_url,
        "weft_config_reloads_total{result=\"error\"}",
        1.0,
    )
    .await;
    let third = trace_ids(3, 1_000);
    export(&traces_url, body("s", &third, 1, |_| false)).await;
    let kept_third = third.iter().filter(|t| head.keeps(randomness(**t))).count();
    let text = get(&metrics_url).await.text();
    let dropped = metric(
        &text,
        "weft_head_sampling_spans_total{decision=\"dropped\",rule=\"default\"}",
    );
    assert_eq!(dropped as usize, 3_000 - kept - kept_third, "{text}");
}

/// Polls `/metrics` until `series` reaches `value`.
async fn wait_metric(url: &str, series: &str, value: f64) {
    let until = Instant::now() + WAIT;
    loop {
        let text = get(url).await.text();
        if metric(&text, series) >= value {
            return;
        }
        assert!(
            Instant::now() < until,
            "{series} never reached {value}: {text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A delta counter `requests` with one point per `user` series at `time`.
fn counter_body(users: std::ops::Range<u64>, time: u64) -> Vec<u8> {
    use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
    use opentelemetry_proto::tonic::metrics::v1::{
        AggregationTemporality, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
        metric, number_data_point,
    };
    let points = users
        .map(|u| NumberDataPoint {
            attributes: vec![KeyValue {
                key: "user".into(),
                value: Some(AnyValue {
                    value: Some(any_value::Value::StringValue(format!("u{u}"))),
                }),
                ..Default::default()
            }],
            start_time_unix_nano: time - 10_000_000_000,
            time_unix_nano: time,
            value: Some(number_data_point::Value::AsDouble(u as f64 + 0.5)),
            ..Default::default()
        })
        .collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource {
                attributes: vec![KeyValue {
                    key: "service.name".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("api".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "requests".into(),
                    data: Some(metric::Data::Sum(Sum {
                        data_points: points,
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                        is_monotonic: true,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
    .encode_to_vec()
}

#[tokio::test]
async fn cardinality_limit_keeps_totals_in_the_overflow_series() {
    let server = TestServer::start(&["--set", "sampling.metrics.max_series_per_metric=10"]);
    let url = server.http_url("/v1/metrics");
    let mut sent = 0.0;
    // 40 series, twice, in requests of 10 series each.
    for (round, time) in [T0, T0 + 10_000_000_000].into_iter().enumerate() {
        for start in (0..40).step_by(10) {
            export(&url, counter_body(start..start + 10, time + round as u64)).await;
            sent += (start..start + 10).map(|u| u as f64 + 0.5).sum::<f64>();
        }
    }
    let rows = server
        .sql(
            "SELECT count(DISTINCT series_id) AS series, sum(value) AS total, \
             sum(CASE WHEN attributes['otel.metric.overflow'] = 'true' THEN 1 ELSE 0 END) \
             AS overflow_points FROM metric_points WHERE metric_name = 'requests'",
        )
        .await;
    assert_eq!(rows[0]["series"], 11, "10 admitted + the overflow series");
    assert_eq!(rows[0]["total"].as_f64().unwrap(), sent);
    // The 30 series over the limit became one point per request of them (merged).
    assert_eq!(rows[0]["overflow_points"], 6, "{rows:?}");
    let text = get(&server.http_url("/metrics")).await.text();
    assert_eq!(
        metric(
            &text,
            "weft_metrics_points_overflowed_total{metric=\"requests\"}"
        ),
        60.0,
        "{text}"
    );
}
