//! The limiter against real OTLP and remote-write requests.

use std::sync::atomic::{AtomicU64, Ordering};

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int8Type, TimestampNanosecondType, UInt64Type};
use opentelemetry_proto::tonic::metrics::v1::exponential_histogram_data_point::Buckets;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use weft_schemas::columns;
use weft_schemas::prometheus::MetricMetadata;

use super::*;

const T0: u64 = 1_700_000_000_000_000_000;
const SEC: u64 = 1_000_000_000;
const CUM: i32 = AggregationTemporality::Cumulative as i32;

// --- builders --------------------------------------------------------------------------

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        key_strindex: 0,
    }
}

fn kv_int(k: &str, v: i64) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::IntValue(v)),
        }),
        key_strindex: 0,
    }
}

fn attr(i: usize) -> Vec<KeyValue> {
    vec![kv("k", &format!("v{i}"))]
}

struct Harness {
    limiter: MetricsLimiter,
    telemetry: Arc<Telemetry>,
    clock: Arc<AtomicU64>,
}

impl Harness {
    fn new(config: &MetricsLimitsConfig) -> Self {
        let clock = Arc::new(AtomicU64::new(T0));
        let telemetry = Telemetry::new();
        let limiter = MetricsLimiter::with_clock(
            config,
            std::sync::Arc::clone(&telemetry),
            Clock::Manual(std::sync::Arc::clone(&clock)),
        )
        .unwrap();
        Self {
            limiter,
            telemetry,
            clock,
        }
    }

    fn at(&self, t: u64) -> &Self {
        self.clock.store(t, Ordering::Relaxed);
        self
    }

    fn otlp(
        &self,
        mut req: ExportMetricsServiceRequest,
    ) -> (ExportMetricsServiceRequest, LimitOutcome) {
        let outcome = self.limiter.apply_otlp(&mut req);
        (req, outcome)
    }
}

fn limited(n: usize) -> MetricsLimitsConfig {
    MetricsLimitsConfig {
        max_series_per_metric: n,
        ..Default::default()
    }
}

fn resource(service: &str, instance: &str, metrics: Vec<Metric>) -> ResourceMetrics {
    ResourceMetrics {
        resource: Some(Resource {
            attributes: vec![
                kv("service.name", service),
                kv("service.instance.id", instance),
            ],
            ..Default::default()
        }),
        scope_metrics: vec![ScopeMetrics {
            scope: Some(InstrumentationScope {
                name: "lib".into(),
                version: "1".into(),
                ..Default::default()
            }),
            metrics,
            schema_url: String::new(),
        }],
        schema_url: String::new(),
    }
}

fn request(resources: Vec<ResourceMetrics>) -> ExportMetricsServiceRequest {
    ExportMetricsServiceRequest {
        resource_metrics: resources,
    }
}

fn one(service: &str, metrics: Vec<Metric>) -> ExportMetricsServiceRequest {
    request(vec![resource(service, "i1", metrics)])
}

fn num(attrs: Vec<KeyValue>, start: u64, time: u64, v: Num) -> NumberDataPoint {
    number(attrs, start, time, v, Vec::new())
}

fn metric(name: &str, data: metric::Data) -> Metric {
    Metric {
        name: name.into(),
        description: "d".into(),
        unit: "1".into(),
        metadata: Vec::new(),
        data: Some(data),
    }
}

fn gauge(name: &str, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        metric::Data::Gauge(Gauge {
            data_points: points,
        }),
    )
}

fn sum(name: &str, temporality: i32, monotonic: bool, points: Vec<NumberDataPoint>) -> Metric {
    metric(
        name,
        metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: temporality,
            is_monotonic: monotonic,
        }),
    )
}

fn hist(name: &str, temporality: i32, points: Vec<HistogramDataPoint>) -> Metric {
    metric(
        name,
        metric::Data::Histogram(Histogram {
            data_points: points,
            aggregation_temporality: temporality,
        }),
    )
}

fn hpoint(
    attrs: Vec<KeyValue>,
    start: u64,
    time: u64,
    buckets: Vec<u64>,
    sum: f64,
) -> HistogramDataPoint {
    HistogramDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        count: buckets.iter().sum(),
        sum: Some(sum),
        explicit_bounds: vec![1.0, 5.0, 10.0][..buckets.len() - 1].to_vec(),
        bucket_counts: buckets,
        exemplars: Vec::new(),
        flags: 0,
        min: Some(0.5),
        max: Some(9.0),
    }
}

/// A number point: (service, scope, attributes, start, time, value, temporality).
type NumRow = (String, String, Vec<KeyValue>, u64, u64, f64, Option<i32>);

/// Every number point of `name`.
fn numbers(req: &ExportMetricsServiceRequest, name: &str) -> Vec<NumRow> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        let service = rm
            .resource
            .as_ref()
            .and_then(service_kv)
            .and_then(|kv| any_value_text(kv.value.as_ref()))
            .unwrap_or_default();
        for sm in &rm.scope_metrics {
            let scope = sm
                .scope
                .as_ref()
                .map(|s| s.name.clone())
                .unwrap_or_default();
            for m in sm.metrics.iter().filter(|m| m.name == name) {
                let (points, temporality) = match &m.data {
                    Some(metric::Data::Gauge(g)) => (&g.data_points, None),
                    Some(metric::Data::Sum(s)) => (&s.data_points, Some(s.aggregation_temporality)),
                    _ => continue,
                };
                for p in points {
                    let v = Num::from_value(p.value).map_or(f64::NAN, Num::f);
                    out.push((
                        service.clone(),
                        scope.clone(),
                        p.attributes.clone(),
                        p.start_time_unix_nano,
                        p.time_unix_nano,
                        v,
                        temporality,
                    ));
                }
            }
        }
    }
    out
}

fn overflowed(points: &[NumRow]) -> Vec<NumRow> {
    points
        .iter()
        .filter(|p| p.2 == vec![overflow_kv()])
        .cloned()
        .collect()
}

fn hists(req: &ExportMetricsServiceRequest, name: &str) -> Vec<(i32, HistogramDataPoint)> {
    let mut out = Vec::new();
    for rm in &req.resource_metrics {
        for sm in &rm.scope_metrics {
            for m in sm.metrics.iter().filter(|m| m.name == name) {
                if let Some(metric::Data::Histogram(h)) = &m.data {
                    out.extend(
                        h.data_points
                            .iter()
                            .map(|p| (h.aggregation_temporality, p.clone())),
                    );
                }
            }
        }
    }
    out
}

// --- configuration ---------------------------------------------------------------------

#[test]
fn globs_match_star_question_mark_and_escapes() {
    let m = |p: &str, s: &str| Glob::parse(p).unwrap().matches(s);
    assert!(m("http.*", "http.server.duration"));
    assert!(!m("http.*", "https"));
    assert!(m("*.duration", "a.b.duration"));
    assert!(m("a?c", "abc"));
    assert!(m("a?c", "aéc"));
    assert!(!m("a?c", "ac"));
    assert!(m("*", ""));
    assert!(m("a\\*b", "a*b"));
    assert!(!m("a\\*b", "axb"));
    assert!(m("*a*b*", "xxaxxbxx"));
    assert!(!m("a*a*a", "aa"));
    assert!(m("a**b", "ab"));
    assert!(m("process.cpu.time", "process.cpu.time"));
    assert!(!m("process.cpu.time", "process.cpu.times"));
    assert!(Glob::parse("").is_err());
    assert!(
        Glob::parse("a[b]")
            .unwrap_err()
            .to_string()
            .contains("not supported")
    );
    assert!(Glob::parse("a\\").unwrap_err().to_string().contains("lone"));
    assert!(m("a\\[b", "a[b"));
}

#[test]
fn validation_names_the_key() {
    let err = |c: MetricsLimitsConfig| c.validate().unwrap_err().to_string();
    let c = MetricsLimitsConfig {
        limits: BTreeMap::from([("x".to_owned(), 0)]),
        ..Default::default()
    };
    assert!(
        err(c.clone()).starts_with("limits.\"x\": must be > 0"),
        "{}",
        err(c.clone())
    );
    let sampling = crate::SamplingConfig {
        metrics: c,
        ..Default::default()
    };
    assert!(
        sampling
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("sampling.metrics: limits.\"x\": must be > 0")
    );
    let c = MetricsLimitsConfig {
        include: vec!["ok.*".into(), "bad[".into()],
        ..Default::default()
    };
    assert!(err(c).starts_with("include[1]: \"bad[\": '[' is not supported"));
    let drop = |r: DropRule| MetricsLimitsConfig {
        drop: vec![
            DropRule {
                metric: "debug.*".into(),
                attribute: None,
                value: None,
            },
            r,
        ],
        ..Default::default()
    };
    let every = DropRule {
        metric: "*".into(),
        attribute: None,
        value: None,
    };
    assert_eq!(
        err(drop(every)),
        "drop[1]: metric = \"*\" without attribute drops every metric"
    );
    let value_only = DropRule {
        metric: "x".into(),
        attribute: None,
        value: Some("y".into()),
    };
    assert_eq!(err(drop(value_only)), "drop[1].value: needs an attribute");
    let empty_metric = DropRule {
        metric: String::new(),
        attribute: Some("a".into()),
        value: None,
    };
    assert_eq!(err(drop(empty_metric)), "drop[1].metric: empty pattern");
    let c = MetricsLimitsConfig {
        drop_attributes: vec![DropAttributeRule {
            metric: "*".into(),
            key: String::new(),
        }],
        ..Default::default()
    };
    assert_eq!(err(c), "drop_attributes[0].key: empty pattern");
    let c = MetricsLimitsConfig {
        max_metrics: 0,
        ..Default::default()
    };
    assert_eq!(err(c.clone()), "max_metrics: must be > 0");
    assert!(MetricsLimiter::new(&c, Telemetry::new()).is_err());
    let c = MetricsLimitsConfig {
        max_cumulative_series: 0,
        ..Default::default()
    };
    assert_eq!(err(c), "max_cumulative_series: must be > 0");
}

#[test]
fn config_keys_and_defaults() {
    let c: MetricsLimitsConfig = serde_json::from_value(serde_json::json!({})).unwrap();
    assert_eq!(c, MetricsLimitsConfig::default());
    assert_eq!(c.series_ttl_secs, 3600);
    let c: MetricsLimitsConfig = serde_json::from_value(serde_json::json!({
        "max_series_per_metric": 1000,
        "limits": { "http.server.duration": 50 },
        "include": ["http.*", "process.*"],
        "drop": [{ "metric": "debug.*" }, { "attribute": "env", "value": "test" }],
        "drop_attributes": [{ "key": "user.id" }],
    }))
    .unwrap();
    assert_eq!(c.drop[1].metric, "*");
    assert_eq!(c.drop_attributes[0].metric, "*");
    c.validate().unwrap();
    assert!(
        serde_json::from_value::<MetricsLimitsConfig>(serde_json::json!({ "nope": 1 })).is_err()
    );
    assert!(
        serde_json::from_value::<MetricsLimitsConfig>(
            serde_json::json!({ "drop": [{ "metric": "x", "atribute": "a" }] })
        )
        .is_err()
    );
}

#[test]
fn limiter_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<MetricsLimiter>();
}

#[test]
fn the_default_changes_nothing() {
    let h = Harness::new(&MetricsLimitsConfig::default());
    assert!(h.limiter.is_noop());
    let req = one(
        "a",
        vec![gauge(
            "g",
            (0..5).map(|i| num(attr(i), 0, T0, Num::Int(1))).collect(),
        )],
    );
    let (out, outcome) = h.otlp(req.clone());
    assert_eq!(out, req);
    assert_eq!(outcome, LimitOutcome::default());
    let mut rw = WriteRequest {
        timeseries: vec![prom_series(
            &[("__name__", "x_total"), ("job", "j")],
            &[(1, 1.0)],
        )],
        metadata: Vec::new(),
    };
    let before = rw.clone();
    assert!(!h.limiter.apply_remote_write(&mut rw).changed);
    assert_eq!(rw, before);
    assert!(
        !MetricsLimiter::new(&limited(1), Telemetry::new())
            .unwrap()
            .is_noop()
    );
}

// --- rules -----------------------------------------------------------------------------

#[test]
fn include_and_drop_rules() {
    let config = MetricsLimitsConfig {
        include: vec!["http.*".into(), "process.*".into(), "debug.*".into()],
        drop: vec![
            DropRule {
                metric: "debug.*".into(),
                attribute: None,
                value: None,
            },
            DropRule {
                metric: "*".into(),
                attribute: Some("env".into()),
                value: Some("test".into()),
            },
            DropRule {
                metric: "http.*".into(),
                attribute: Some("code".into()),
                value: Some("5??".into()),
            },
        ],
        ..Default::default()
    };
    let h = Harness::new(&config);
    let p = |attrs: Vec<KeyValue>| num(attrs, 0, T0, Num::Int(1));
    let mut test_resource = resource("b", "i1", vec![gauge("http.a", vec![p(vec![]), p(vec![])])]);
    test_resource
        .resource
        .as_mut()
        .unwrap()
        .attributes
        .push(kv("env", "test"));
    let req = request(vec![
        resource(
            "a",
            "i1",
            vec![
                gauge(
                    "http.a",
                    vec![
                        p(vec![kv("env", "test")]),
                        p(vec![kv("env", "prod")]),
                        p(vec![kv_int("code", 503)]),
                        p(vec![kv_int("code", 200)]),
                    ],
                ),
                gauge("process.b", vec![p(vec![])]),
                gauge("debug.c", vec![p(vec![]), p(vec![])]),
                gauge("other.d", vec![p(vec![])]),
            ],
        ),
        test_resource,
    ]);
    let (out, outcome) = h.otlp(req);
    assert!(outcome.changed);
    // env=test, code=503, debug.c (2), other.d, both points of the test resource.
    assert_eq!(outcome.points_dropped, 7);
    let http = numbers(&out, "http.a");
    let attrs: Vec<_> = http.iter().map(|p| p.2.clone()).collect();
    assert_eq!(
        attrs,
        vec![vec![kv("env", "prod")], vec![kv_int("code", 200)]]
    );
    assert_eq!(numbers(&out, "process.b").len(), 1);
    assert!(numbers(&out, "debug.c").is_empty());
    assert!(numbers(&out, "other.d").is_empty());
    // The metric whose every point was dropped is gone from the request.
    assert!(out.resource_metrics[1].scope_metrics[0].metrics.is_empty());
    assert_eq!(
        h.telemetry.value(DROPPED_METRIC, &[("reason", "rule")]),
        7.0
    );
}

#[test]
fn drop_attributes_merges_series_that_become_equal() {
    let config = MetricsLimitsConfig {
        drop_attributes: vec![DropAttributeRule {
            metric: "*".into(),
            key: "user.*".into(),
        }],
        ..Default::default()
    };
    let h = Harness::new(&config);
    let a = |route: &str, user: Option<&str>| {
        let mut v = vec![kv("route", route)];
        if let Some(u) = user {
            v.push(kv("user.id", u));
        }
        v
    };
    let (s, t) = (T0 + SEC, T0 + 10 * SEC);
    let req = one(
        "a",
        vec![
            sum(
                "req",
                DELTA,
                true,
                vec![
                    num(a("/a", Some("1")), s, t, Num::Int(2)),
                    num(a("/a", Some("2")), s, t, Num::Int(3)),
                    num(a("/b", Some("1")), s, t, Num::Int(5)),
                ],
            ),
            gauge(
                "inflight",
                vec![
                    num(a("/a", Some("1")), 0, t, Num::Double(1.5)),
                    num(a("/a", None), 0, t, Num::Double(2.0)),
                ],
            ),
            sum(
                "total",
                CUM,
                true,
                vec![
                    num(a("/a", Some("1")), s, t, Num::Int(10)),
                    num(a("/a", Some("2")), s, t, Num::Int(20)),
                    num(a("/a", None), s, t, Num::Int(7)),
                ],
            ),
        ],
    );
    let (out, outcome) = h.otlp(req);
    assert!(outcome.changed);
    let req_points = numbers(&out, "req");
    let got: Vec<_> = req_points
        .iter()
        .map(|p| (p.2.clone(), p.5, p.3, p.4))
        .collect();
    assert_eq!(
        got,
        vec![(a("/a", None), 5.0, s, t), (a("/b", None), 5.0, s, t)]
    );
    let inflight = numbers(&out, "inflight");
    assert_eq!(inflight.len(), 1);
    assert_eq!((inflight[0].2.clone(), inflight[0].5), (a("/a", None), 3.5));
    // Cumulative: the point without the key stays cumulative; the others become one
    // delta point (they started after the limiter, so their whole value counts).
    let total = numbers(&out, "total");
    let mut got: Vec<_> = total.iter().map(|p| (p.5, p.6)).collect();
    got.sort_by(|x, y| x.0.total_cmp(&y.0));
    assert_eq!(got, vec![(7.0, Some(CUM)), (30.0, Some(DELTA))]);
    assert_eq!(outcome.points_reaggregated, 3 + 2 + 2);
}

// --- limits per type -------------------------------------------------------------------

#[test]
fn gauges_over_the_limit_share_one_overflow_series() {
    let h = Harness::new(&limited(2));
    let t = T0 + 10 * SEC;
    let req = request(vec![
        resource(
            "a",
            "i1",
            vec![gauge(
                "mem",
                (0..3)
                    .map(|i| num(attr(i), 0, t, Num::Int(10 + i as i64)))
                    .collect(),
            )],
        ),
        resource(
            "a",
            "i2",
            vec![gauge(
                "mem",
                (3..5)
                    .map(|i| num(attr(i), 0, t, Num::Double(0.5)))
                    .collect(),
            )],
        ),
    ]);
    let (out, outcome) = h.otlp(req);
    assert_eq!(outcome.series_admitted, 2);
    assert_eq!(outcome.points_overflowed, 3);
    let points = numbers(&out, "mem");
    let kept: Vec<_> = points
        .iter()
        .filter(|p| p.2 != vec![overflow_kv()])
        .collect();
    assert_eq!(kept.len(), 2);
    let over = overflowed(&points);
    assert_eq!(over.len(), 1, "{over:?}");
    assert_eq!(over[0].0, "a");
    assert_eq!(over[0].1, OVERFLOW_SCOPE);
    assert_eq!(over[0].5, 12.0 + 0.5 + 0.5);
    assert_eq!(over[0].4, t);
    // The overflow resource holds only the service name.
    let last = out.resource_metrics.last().unwrap();
    assert_eq!(
        last.resource.as_ref().unwrap().attributes,
        vec![kv("service.name", "a")]
    );
    // The same series are admitted next time.
    let (_, outcome) = h.otlp(one(
        "a",
        vec![gauge(
            "mem",
            (0..3)
                .map(|i| num(attr(i), 0, t + SEC, Num::Int(1)))
                .collect(),
        )],
    ));
    assert_eq!((outcome.series_admitted, outcome.points_overflowed), (0, 1));
}

#[test]
fn delta_sums_merge_and_stay_unique_across_requests() {
    let h = Harness::new(&limited(1));
    let (s, t) = (T0 + SEC, T0 + 10 * SEC);
    let batch = |range: std::ops::Range<usize>| {
        one(
            "a",
            vec![sum(
                "req",
                DELTA,
                true,
                range
                    .map(|i| num(attr(i), s, t, Num::Int(i as i64 + 1)))
                    .collect(),
            )],
        )
    };
    let (out1, _) = h.otlp(batch(0..3));
    let over1 = overflowed(&numbers(&out1, "req"));
    assert_eq!(over1.len(), 1);
    assert_eq!(
        (over1[0].3, over1[0].4, over1[0].5, over1[0].6),
        (s, t, 2.0 + 3.0, Some(DELTA))
    );
    // The rest of the same collection in another request: same identity, other content,
    // so it is written 1 ns later rather than being deduplicated away.
    let (out2, _) = h.otlp(batch(3..5));
    let over2 = overflowed(&numbers(&out2, "req"));
    assert_eq!((over2[0].4, over2[0].5), (t + 1, 4.0 + 5.0));
    // A retry of the first request keeps its identity, so queries drop it as a copy.
    let (out3, _) = h.otlp(batch(0..3));
    let over3 = overflowed(&numbers(&out3, "req"));
    assert_eq!((over3[0].4, over3[0].5), (t, 5.0));
}

#[test]
fn cumulative_sums_become_deltas_and_survive_resets() {
    let h = Harness::new(&limited(1));
    let s = T0 + SEC;
    let t = |i: u64| T0 + i * 10 * SEC;
    let round = |time: u64, points: Vec<(usize, u64, f64)>| {
        one(
            "a",
            vec![sum(
                "c",
                CUM,
                true,
                points
                    .into_iter()
                    .map(|(i, start, v)| num(attr(i), start, time, Num::Double(v)))
                    .collect(),
            )],
        )
    };
    let mut deltas = Vec::new();
    let mut run = |req| {
        let (out, outcome) = h.otlp(req);
        let over = overflowed(&numbers(&out, "c"));
        assert!(over.iter().all(|p| p.6 == Some(DELTA)));
        deltas.extend(over.iter().map(|p| (p.3, p.4, p.5)));
        outcome
    };
    run(round(t(1), vec![(0, s, 1.0), (1, s, 10.0), (2, s, 5.0)]));
    run(round(t(2), vec![(0, s, 2.0), (1, s, 12.0), (2, s, 9.0)]));
    // Series 1 restarts (new start time); series 2 keeps counting.
    let s2 = t(2) + 1;
    run(round(t(3), vec![(0, s, 3.0), (1, s2, 3.0), (2, s, 10.0)]));
    // A retry adds nothing.
    let outcome = run(round(t(3), vec![(0, s, 3.0), (1, s2, 3.0), (2, s, 10.0)]));
    assert_eq!(outcome.points_duplicate, 2);
    // A counter that went down without a new start time is a reset too.
    run(round(t(4), vec![(1, s2, 1.0), (2, s, 11.0)]));
    assert_eq!(
        deltas,
        vec![
            (s, t(1), 15.0),
            (t(1), t(2), 6.0),
            (s2, t(3), 3.0),
            (t(2), t(3), 1.0),
            (t(3), t(4), 1.0 + 1.0),
        ]
    );
    // 15 + 6 + 3 + 1 + 2: what series 1 and 2 counted (10+2+3+1, 5+4+1+1).
    assert_eq!(deltas.iter().map(|d| d.2).sum::<f64>(), 27.0);
    assert_eq!(
        h.telemetry
            .value(DROPPED_METRIC, &[("reason", "duplicate")]),
        2.0
    );
}

#[test]
fn a_cumulative_series_older_than_the_limiter_starts_with_a_baseline() {
    let h = Harness::new(&limited(1));
    let old = T0 - 100 * SEC;
    let req = |time: u64, v: i64| {
        one(
            "a",
            vec![sum(
                "c",
                CUM,
                true,
                vec![
                    num(attr(0), old, time, Num::Int(1)),
                    num(attr(1), old, time, Num::Int(v)),
                ],
            )],
        )
    };
    let (out, _) = h.otlp(req(T0 + SEC, 100));
    // It may have been counted before this process started: only a baseline.
    assert!(overflowed(&numbers(&out, "c")).is_empty());
    let (out, _) = h.otlp(req(T0 + 2 * SEC, 104));
    let over = overflowed(&numbers(&out, "c"));
    assert_eq!(
        (over[0].3, over[0].4, over[0].5),
        (T0 + SEC, T0 + 2 * SEC, 4.0)
    );
}

#[test]
fn non_monotonic_cumulative_sums_add_up_levels() {
    let h = Harness::new(&limited(1));
    let t = T0 + 10 * SEC;
    let (out, _) = h.otlp(one(
        "a",
        vec![sum(
            "queue",
            CUM,
            false,
            vec![
                num(attr(0), T0 + 1, t, Num::Int(4)),
                num(attr(1), T0 + 2, t, Num::Int(-3)),
                num(attr(2), T0 + 3, t, Num::Int(10)),
            ],
        )],
    ));
    let over = overflowed(&numbers(&out, "queue"));
    assert_eq!(over.len(), 1);
    assert_eq!((over[0].3, over[0].5, over[0].6), (T0 + 2, 7.0, Some(CUM)));
}

#[test]
fn histograms_merge_buckets_and_cumulative_ones_become_deltas() {
    let h = Harness::new(&limited(1));
    let s = T0 + SEC;
    let (t1, t2) = (T0 + 10 * SEC, T0 + 20 * SEC);
    let (out, _) = h.otlp(one(
        "a",
        vec![
            hist(
                "lat",
                CUM,
                vec![
                    hpoint(attr(0), s, t1, vec![1, 0, 0, 0], 0.5),
                    hpoint(attr(1), s, t1, vec![1, 2, 3, 4], 60.0),
                    hpoint(attr(2), s, t1, vec![0, 1, 0, 1], 12.0),
                ],
            ),
            hist(
                "dlat",
                DELTA,
                vec![
                    hpoint(attr(0), s, t1, vec![1, 0, 0, 0], 0.5),
                    hpoint(attr(1), s, t1, vec![1, 1, 0, 0], 3.0),
                    hpoint(attr(2), s, t1, vec![0, 0, 2, 0], 14.0),
                    // Other bounds: a separate point of the same series, 1 ns later.
                    hpoint(attr(3), s, t1, vec![5, 5], 10.0),
                ],
            ),
        ],
    ));
    let lat: Vec<_> = hists(&out, "lat")
        .into_iter()
        .filter(|(_, p)| p.attributes == vec![overflow_kv()])
        .collect();
    assert_eq!(lat.len(), 1);
    let (temporality, p) = &lat[0];
    assert_eq!(*temporality, DELTA);
    assert_eq!(
        (p.count, p.sum, p.bucket_counts.clone()),
        (12, Some(72.0), vec![1, 3, 3, 5])
    );
    assert_eq!(
        (p.start_time_unix_nano, p.min, p.max),
        (s, Some(0.5), Some(9.0))
    );
    let mut dlat: Vec<_> = hists(&out, "dlat")
        .into_iter()
        .filter(|(_, p)| p.attributes == vec![overflow_kv()])
        .map(|(_, p)| (p.time_unix_nano, p.count, p.sum, p.bucket_counts, p.min))
        .collect();
    dlat.sort_by_key(|d| d.0);
    assert_eq!(
        dlat,
        vec![
            (t1, 4, Some(17.0), vec![1, 1, 2, 0], Some(0.5)),
            (t1 + 1, 10, Some(10.0), vec![5, 5], Some(0.5)),
        ]
    );
    // Next round: increases; a histogram whose buckets went down restarted.
    let (out, _) = h.otlp(one(
        "a",
        vec![hist(
            "lat",
            CUM,
            vec![
                hpoint(attr(1), s, t2, vec![2, 2, 3, 4], 61.0),
                hpoint(attr(2), s, t2, vec![0, 0, 1, 0], 6.0),
            ],
        )],
    ));
    let lat: Vec<_> = hists(&out, "lat")
        .into_iter()
        .map(|(_, p)| {
            (
                p.start_time_unix_nano,
                p.count,
                p.sum,
                p.bucket_counts,
                p.min,
            )
        })
        .collect();
    assert_eq!(
        lat,
        vec![
            // Both cover (t1, t2]: the restart happened after t1.
            (t1, 2, Some(7.0), vec![1, 0, 1, 0], None),
        ]
    );
}

#[test]
fn exponential_histograms_merge_at_a_common_scale() {
    let e = |scale: i32, offset: i64, counts: Vec<u64>| ExpVal {
        count: counts.iter().sum(),
        sum: Some(1.0),
        min: None,
        max: None,
        scale,
        zero_count: 1,
        zero_threshold: 0.0,
        positive: ExpBuckets { offset, counts },
        negative: ExpBuckets::default(),
    };
    let mut a = e(1, 0, vec![1, 2, 3, 4]);
    a.merge(e(0, 1, vec![5]));
    assert_eq!(a.scale, 0);
    assert_eq!(
        a.positive,
        ExpBuckets {
            offset: 0,
            counts: vec![3, 12]
        }
    );
    assert_eq!((a.count, a.zero_count, a.sum), (15, 2, Some(2.0)));
    // A cumulative histogram that lowered its scale: compared at the coarser one.
    let prev = e(1, 0, vec![1, 2, 3, 4]);
    let cur = e(0, 0, vec![3, 12]);
    let d = cur.increase(&prev).unwrap();
    assert_eq!(
        (d.scale, d.positive.counts.clone(), d.count),
        (0, vec![0, 5], 5)
    );
    assert!(prev.increase(&e(1, 0, vec![1, 3])).is_none());
    // Far-apart buckets are merged at a scale where they fit.
    let mut far = e(5, -1000, vec![1]);
    far.merge(e(5, 100_000, vec![1]));
    assert!(far.positive.counts.len() as u64 <= MAX_EXP_BUCKETS);
    assert_eq!(far.positive.counts.iter().sum::<u64>(), 2);
    // Negative indices round down when downscaled.
    let neg = ExpBuckets {
        offset: -3,
        counts: vec![1, 1, 1],
    }
    .downscale(1);
    assert_eq!(
        neg,
        ExpBuckets {
            offset: -2,
            counts: vec![1, 2]
        }
    );
}

#[test]
fn summaries_grow_one_running_total_without_quantiles() {
    let h = Harness::new(&limited(1));
    let s = T0 + SEC;
    let sp = |i: usize, time: u64, count: u64, sum: f64| SummaryDataPoint {
        attributes: attr(i),
        start_time_unix_nano: s,
        time_unix_nano: time,
        count,
        sum,
        quantile_values: vec![summary_data_point_q()],
        flags: 0,
    };
    let req = |time: u64, v: [(u64, f64); 3]| {
        one(
            "a",
            vec![metric(
                "rpc",
                metric::Data::Summary(Summary {
                    data_points: (0..3).map(|i| sp(i, time, v[i].0, v[i].1)).collect(),
                }),
            )],
        )
    };
    let summary = |out: &ExportMetricsServiceRequest| {
        let rm = out.resource_metrics.last().unwrap();
        match &rm.scope_metrics[0].metrics[0].data {
            Some(metric::Data::Summary(s)) => s.data_points.clone(),
            other => panic!("{other:?}"),
        }
    };
    let (t1, t2) = (T0 + 10 * SEC, T0 + 20 * SEC);
    let (out, _) = h.otlp(req(t1, [(1, 1.0), (10, 100.0), (5, 50.0)]));
    let p = summary(&out);
    assert_eq!(p.len(), 1);
    assert_eq!(
        (p[0].count, p[0].sum, p[0].start_time_unix_nano),
        (15, 150.0, t1 - 1)
    );
    assert!(p[0].quantile_values.is_empty());
    assert_eq!(p[0].attributes, vec![overflow_kv()]);
    let (out, _) = h.otlp(req(t2, [(2, 2.0), (12, 120.0), (6, 70.0)]));
    let p = summary(&out);
    assert_eq!(
        (p[0].count, p[0].sum, p[0].start_time_unix_nano),
        (18, 190.0, t1 - 1)
    );
}

fn summary_data_point_q()
-> opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile {
    opentelemetry_proto::tonic::metrics::v1::summary_data_point::ValueAtQuantile {
        quantile: 0.5,
        value: 1.0,
    }
}

#[test]
fn an_sdk_overflow_series_joins_the_overflow() {
    let h = Harness::new(&limited(10));
    let mut sdk_overflow = vec![overflow_kv()];
    sdk_overflow[0].value = Some(AnyValue {
        value: Some(any_value::Value::BoolValue(true)),
    });
    let t = T0 + SEC;
    let (out, outcome) = h.otlp(one(
        "a",
        vec![sum(
            "req",
            DELTA,
            true,
            vec![
                num(attr(0), T0, t, Num::Int(1)),
                num(sdk_overflow, T0, t, Num::Int(9)),
            ],
        )],
    ));
    assert_eq!(outcome.points_overflowed, 1);
    let over = overflowed(&numbers(&out, "req"));
    assert_eq!((over[0].1.as_str(), over[0].5), (OVERFLOW_SCOPE, 9.0));
}

// --- memory bounds, expiry, reload -----------------------------------------------------

#[test]
fn idle_admitted_series_free_their_slot() {
    let config = MetricsLimitsConfig {
        max_series_per_metric: 1,
        series_ttl_secs: 10,
        ..Default::default()
    };
    let h = Harness::new(&config);
    let req = |i: usize, time: u64| {
        one(
            "a",
            vec![sum(
                "req",
                DELTA,
                true,
                vec![num(attr(i), T0, time, Num::Int(1))],
            )],
        )
    };
    assert_eq!(h.at(T0 + SEC).otlp(req(0, T0 + SEC)).1.series_admitted, 1);
    assert_eq!(
        h.at(T0 + 2 * SEC)
            .otlp(req(1, T0 + 2 * SEC))
            .1
            .points_overflowed,
        1
    );
    // Series 0 sends nothing for longer than the TTL: series 1 gets its slot.
    let (_, outcome) = h.at(T0 + 30 * SEC).otlp(req(1, T0 + 30 * SEC));
    assert_eq!((outcome.series_admitted, outcome.points_overflowed), (1, 0));
    assert_eq!(h.telemetry.value(ADMITTED_METRIC, &[]), 1.0);
}

#[test]
fn metrics_beyond_max_metrics_overflow_whole() {
    let config = MetricsLimitsConfig {
        max_series_per_metric: 5,
        max_metrics: 1,
        ..Default::default()
    };
    let h = Harness::new(&config);
    let t = T0 + SEC;
    let (out, outcome) = h.otlp(one(
        "a",
        vec![
            gauge("m1", vec![num(attr(0), 0, t, Num::Int(1))]),
            gauge(
                "m2",
                (0..3).map(|i| num(attr(i), 0, t, Num::Int(2))).collect(),
            ),
        ],
    ));
    assert_eq!(outcome.points_overflowed, 3);
    assert_eq!(overflowed(&numbers(&out, "m2"))[0].5, 6.0);
    assert_eq!(
        h.telemetry
            .value(OVERFLOWED_METRIC, &[("metric", OTHER_METRIC)]),
        3.0
    );
}

#[test]
fn cumulative_state_is_bounded() {
    let config = MetricsLimitsConfig {
        max_series_per_metric: 1,
        max_cumulative_series: 1,
        ..Default::default()
    };
    let h = Harness::new(&config);
    let t = T0 + 10 * SEC;
    let (_, outcome) = h.otlp(one(
        "a",
        vec![sum(
            "c",
            CUM,
            true,
            (0..3)
                .map(|i| num(attr(i), T0 + 1, t, Num::Int(5)))
                .collect(),
        )],
    ));
    assert_eq!(
        (outcome.points_overflowed, outcome.points_state_full),
        (2, 1)
    );
    assert_eq!(
        h.telemetry
            .value(DROPPED_METRIC, &[("reason", "state_full")]),
        1.0
    );
    assert_eq!(h.telemetry.value(STATE_METRIC, &[]), 1.0);
}

#[test]
fn reload_keeps_admitted_series() {
    let h = Harness::new(&limited(2));
    let req = |i: usize, time: u64| {
        one(
            "a",
            vec![sum(
                "req",
                DELTA,
                true,
                vec![num(attr(i), T0, time, Num::Int(1))],
            )],
        )
    };
    h.at(T0 + SEC).otlp(req(0, T0 + SEC));
    h.at(T0 + 2 * SEC).otlp(req(1, T0 + 2 * SEC));
    assert_eq!(h.otlp(req(2, T0 + 3 * SEC)).1.points_overflowed, 1);
    h.limiter.reload(&limited(3)).unwrap();
    let (_, outcome) = h.otlp(req(0, T0 + 4 * SEC));
    assert_eq!((outcome.series_admitted, outcome.points_overflowed), (0, 0));
    assert_eq!(h.otlp(req(2, T0 + 5 * SEC)).1.series_admitted, 1);
    // Lowered: the most recently seen series stay (2, then 0).
    h.limiter.reload(&limited(2)).unwrap();
    assert_eq!(h.otlp(req(1, T0 + 6 * SEC)).1.points_overflowed, 1);
    assert_eq!(h.otlp(req(0, T0 + 7 * SEC)).1.points_overflowed, 0);
    // A bad configuration is refused and the old one stays.
    assert!(h.limiter.reload(&limited(1).with_limit("x", 0)).is_err());
    assert_eq!(h.otlp(req(1, T0 + 8 * SEC)).1.points_overflowed, 1);
    h.limiter.reload(&MetricsLimitsConfig::default()).unwrap();
    assert!(h.limiter.is_noop());
    assert_eq!(h.otlp(req(1, T0 + 9 * SEC)).1, LimitOutcome::default());
}

impl MetricsLimitsConfig {
    fn with_limit(mut self, name: &str, limit: usize) -> Self {
        self.limits.insert(name.to_owned(), limit);
        self
    }
}

#[test]
fn per_metric_limits_override_the_default() {
    let h = Harness::new(&limited(1).with_limit("big", 3));
    let t = T0 + SEC;
    let (_, outcome) = h.otlp(one(
        "a",
        vec![
            gauge(
                "big",
                (0..4).map(|i| num(attr(i), 0, t, Num::Int(1))).collect(),
            ),
            gauge(
                "small",
                (0..4).map(|i| num(attr(i), 0, t, Num::Int(1))).collect(),
            ),
        ],
    ));
    assert_eq!(
        (outcome.series_admitted, outcome.points_overflowed),
        (4, 1 + 3)
    );
    assert_eq!(
        h.telemetry.value(OVERFLOWED_METRIC, &[("metric", "big")]),
        1.0
    );
    assert_eq!(
        h.telemetry.value(OVERFLOWED_METRIC, &[("metric", "small")]),
        3.0
    );
}

// --- through the schema ----------------------------------------------------------------

#[test]
fn overflow_rows_through_the_schema() {
    let h = Harness::new(&limited(2));
    let (s, t) = (T0 + SEC, T0 + 10 * SEC);
    let (out, _) = h.otlp(one(
        "checkout",
        vec![
            gauge(
                "mem",
                (0..4).map(|i| num(attr(i), 0, t, Num::Int(10))).collect(),
            ),
            sum(
                "req",
                DELTA,
                true,
                (0..5).map(|i| num(attr(i), s, t, Num::Int(1))).collect(),
            ),
        ],
    ));
    let converted = weft_schemas::metrics::from_otlp(&out);
    assert_eq!(converted.rejected, 0);
    assert_eq!(converted.batch.num_rows(), 2 + 1 + 2 + 1);
    let back = weft_schemas::metrics::to_otlp(&[converted.batch]).unwrap();
    let over: Vec<_> = back
        .iter()
        .flat_map(|rm| rm.scope_metrics.iter().map(move |sm| (rm, sm)))
        .filter(|(_, sm)| sm.scope.as_ref().is_some_and(|s| s.name == OVERFLOW_SCOPE))
        .collect();
    assert_eq!(over.len(), 1);
    let (rm, sm) = over[0];
    assert_eq!(
        rm.resource.as_ref().unwrap().attributes,
        vec![kv("service.name", "checkout")]
    );
    let mut got: Vec<_> = sm
        .metrics
        .iter()
        .map(|m| match &m.data {
            Some(metric::Data::Gauge(g)) => (m.name.clone(), g.data_points.clone()),
            Some(metric::Data::Sum(x)) => (m.name.clone(), x.data_points.clone()),
            _ => panic!("{m:?}"),
        })
        .collect();
    got.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(got.len(), 2);
    for (name, points) in &got {
        assert_eq!(points.len(), 1, "{name}");
        assert_eq!(points[0].attributes, vec![overflow_kv()], "{name}");
    }
    assert_eq!(got[0].1[0].value, Some(number_data_point::Value::AsInt(20)));
    assert_eq!(got[1].1[0].value, Some(number_data_point::Value::AsInt(3)));
}

// --- remote write ----------------------------------------------------------------------

fn prom_series(labels: &[(&str, &str)], samples: &[(i64, f64)]) -> TimeSeries {
    TimeSeries {
        labels: labels
            .iter()
            .map(|(n, v)| Label {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        samples: samples
            .iter()
            .map(|(t, v)| Sample {
                value: *v,
                timestamp: *t,
            })
            .collect(),
        exemplars: Vec::new(),
        histograms: Vec::new(),
    }
}

fn find<'a>(req: &'a WriteRequest, labels: &[(&str, &str)]) -> Option<&'a TimeSeries> {
    req.timeseries.iter().find(|ts| {
        ts.labels.len() == labels.len()
            && labels
                .iter()
                .all(|(n, v)| ts.labels.iter().any(|l| l.name == *n && l.value == *v))
    })
}

fn samples(ts: &TimeSeries) -> Vec<(i64, f64)> {
    ts.samples.iter().map(|s| (s.timestamp, s.value)).collect()
}

#[test]
fn remote_write_limits_per_metric_name() {
    let h = Harness::new(&limited(2));
    let counter = |path: &str, t: i64, v: f64| {
        prom_series(
            &[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "i1"),
                ("path", path),
            ],
            &[(t, v)],
        )
    };
    let temp = |sensor: &str, t: i64, v: f64| {
        prom_series(
            &[
                ("__name__", "temp"),
                ("job", "api"),
                ("instance", "i1"),
                ("sensor", sensor),
            ],
            &[(t, v)],
        )
    };
    let bucket = |path: &str, t: i64, v: f64| {
        prom_series(
            &[
                ("__name__", "lat_bucket"),
                ("job", "api"),
                ("path", path),
                ("le", "0.5"),
            ],
            &[(t, v)],
        )
    };
    let round = |t: i64, c: [f64; 4]| WriteRequest {
        timeseries: vec![
            counter("/a", t, c[0]),
            counter("/b", t, c[1]),
            counter("/c", t, c[2]),
            counter("/d", t, c[3]),
            temp("1", t, 1.0),
            temp("2", t, 2.0),
            temp("3", t, 3.0),
            temp("4", t, 4.5),
            bucket("/a", t, 1.0),
            bucket("/b", t, 1.0),
            bucket("/c", t, c[2]),
        ],
        metadata: Vec::new(),
    };
    let overflow_counter = [
        ("__name__", "http_requests_total"),
        ("job", "api"),
        (OVERFLOW_LABEL, "true"),
    ];
    let mut seen = Vec::new();
    for (t, c) in [
        (1000, [10.0, 20.0, 30.0, 40.0]),
        (2000, [11.0, 22.0, 33.0, 44.0]),
        // /c restarted.
        (3000, [12.0, 23.0, 3.0, 45.0]),
    ] {
        let mut req = round(t, c);
        let outcome = h.limiter.apply_remote_write(&mut req);
        assert!(outcome.changed);
        assert_eq!(outcome.points_overflowed, 2 + 2 + 1);
        let kept = find(
            &req,
            &[
                ("__name__", "http_requests_total"),
                ("job", "api"),
                ("instance", "i1"),
                ("path", "/a"),
            ],
        );
        assert_eq!(samples(kept.unwrap()), vec![(t, c[0])]);
        seen.extend(samples(find(&req, &overflow_counter).unwrap()));
        let temp_over = find(
            &req,
            &[
                ("__name__", "temp"),
                ("job", "api"),
                (OVERFLOW_LABEL, "true"),
            ],
        )
        .unwrap();
        assert_eq!(samples(temp_over), vec![(t, 7.5)]);
        // Bucket bounds stay apart in the overflow.
        assert!(
            find(
                &req,
                &[
                    ("__name__", "lat_bucket"),
                    ("job", "api"),
                    ("le", "0.5"),
                    (OVERFLOW_LABEL, "true")
                ]
            )
            .is_some()
        );
        let converted = weft_schemas::prometheus::metrics_from_remote_write(&req);
        assert_eq!(converted.rejected, 0);
        assert_eq!(converted.batch.num_rows(), 3 + 3 + 3);
    }
    // One cumulative counter: 0 at first (baselines), then the increases: 3 + 4, then
    // 1 + 3 (the restarted /c counts its whole value).
    assert_eq!(seen, vec![(1000, 0.0), (2000, 7.0), (3000, 11.0)]);
}

#[test]
fn remote_write_rules_and_label_removal() {
    let config = MetricsLimitsConfig {
        drop: vec![
            DropRule {
                metric: "debug_*".into(),
                attribute: None,
                value: None,
            },
            DropRule {
                metric: "*".into(),
                attribute: Some("env".into()),
                value: Some("test".into()),
            },
        ],
        drop_attributes: vec![DropAttributeRule {
            metric: "up_*".into(),
            key: "instance".into(),
        }],
        ..Default::default()
    };
    let h = Harness::new(&config);
    let up = |instance: &str, t: i64, v: f64| {
        prom_series(
            &[
                ("__name__", "up_total"),
                ("job", "j"),
                ("instance", instance),
            ],
            &[(t, v)],
        )
    };
    let mut total = Vec::new();
    for (t, a, b) in [(1000, 5.0, 7.0), (2000, 6.0, 9.0), (3000, 8.0, 9.0)] {
        let mut req = WriteRequest {
            timeseries: vec![
                up("i1", t, a),
                up("i2", t, b),
                prom_series(&[("__name__", "debug_x"), ("job", "j")], &[(t, 1.0)]),
                prom_series(
                    &[("__name__", "g"), ("job", "j"), ("env", "test")],
                    &[(t, 1.0)],
                ),
                prom_series(
                    &[("__name__", "g"), ("job", "j"), ("env", "prod")],
                    &[(t, 1.0)],
                ),
            ],
            metadata: vec![MetricMetadata {
                r#type: MetricType::Counter as i32,
                metric_family_name: "up_total".into(),
                help: String::new(),
                unit: String::new(),
            }],
        };
        let outcome = h.limiter.apply_remote_write(&mut req);
        assert_eq!(
            (outcome.points_dropped, outcome.points_reaggregated),
            (2, 2)
        );
        assert_eq!(req.timeseries.len(), 2);
        total.extend(samples(
            find(&req, &[("__name__", "up_total"), ("job", "j")]).unwrap(),
        ));
    }
    assert_eq!(total, vec![(1000, 0.0), (2000, 3.0), (3000, 5.0)]);
}

// --- property: totals and identities ---------------------------------------------------

#[derive(Debug, Default, Clone, PartialEq)]
struct Totals {
    value: f64,
    count: u64,
    sum: f64,
    buckets: Vec<u64>,
}

impl Totals {
    fn add_hist(&mut self, count: u64, sum: f64, buckets: &[u64]) {
        self.count += count;
        self.sum += sum;
        if self.buckets.len() < buckets.len() {
            self.buckets.resize(buckets.len(), 0);
        }
        for (a, b) in self.buckets.iter_mut().zip(buckets) {
            *a += b;
        }
    }
}

struct Sim {
    attrs: Vec<KeyValue>,
    start: u64,
    cum: f64,
    hist: Vec<u64>,
    hist_sum: f64,
    exp_scale: i32,
    exp: Vec<u64>,
    exp_sum: f64,
}

/// What queries add up, read from stored points: delta values; increases of cumulative
/// series (a new start time or a drop restarts; the first point counts when the series
/// started after the limiter); gauge values; histogram counts, sums and buckets.
#[derive(Default)]
struct Reader {
    totals: HashMap<String, Totals>,
    prev_num: HashMap<u64, (u64, f64)>,
    prev_hist: HashMap<u64, (u64, u64, f64, Vec<u64>)>,
    admitted: HashMap<String, HashSet<u64>>,
    overflow: HashMap<String, HashSet<u64>>,
    identities: HashSet<(String, String, u64, i64, i8, Option<i64>)>,
}

impl Reader {
    fn read(&mut self, req: &ExportMetricsServiceRequest) {
        for rm in &req.resource_metrics {
            let res = rm.resource.as_ref().map_or(&[][..], |r| &r.attributes[..]);
            for sm in &rm.scope_metrics {
                let scope = sm.scope.clone().unwrap_or_default();
                for m in &sm.metrics {
                    let totals = self.totals.entry(m.name.clone()).or_default();
                    let id = |attrs: &[KeyValue]| {
                        series_id(&m.name, res, &scope.name, &scope.version, attrs)
                    };
                    let mut series = |attrs: &[KeyValue]| {
                        let set = if attrs == [overflow_kv()] {
                            &mut self.overflow
                        } else {
                            &mut self.admitted
                        };
                        set.entry(m.name.clone()).or_default().insert(id(attrs));
                    };
                    match &m.data {
                        Some(metric::Data::Gauge(g)) => {
                            for p in &g.data_points {
                                series(&p.attributes);
                                totals.value += Num::from_value(p.value).unwrap().f();
                            }
                        }
                        Some(metric::Data::Sum(s)) => {
                            for p in &s.data_points {
                                series(&p.attributes);
                                let v = Num::from_value(p.value).unwrap().f();
                                if s.aggregation_temporality == DELTA {
                                    totals.value += v;
                                    continue;
                                }
                                let prev = self
                                    .prev_num
                                    .insert(id(&p.attributes), (p.start_time_unix_nano, v));
                                totals.value += match prev {
                                    None if p.start_time_unix_nano > T0 => v,
                                    None => 0.0,
                                    Some((ps, pv)) if ps != p.start_time_unix_nano || v < pv => v,
                                    Some((_, pv)) => v - pv,
                                };
                            }
                        }
                        Some(metric::Data::Histogram(hh)) => {
                            for p in &hh.data_points {
                                series(&p.attributes);
                                let sum = p.sum.unwrap();
                                if hh.aggregation_temporality == DELTA {
                                    totals.add_hist(p.count, sum, &p.bucket_counts);
                                    continue;
                                }
                                let cur = (
                                    p.start_time_unix_nano,
                                    p.count,
                                    sum,
                                    p.bucket_counts.clone(),
                                );
                                match self.prev_hist.insert(id(&p.attributes), cur) {
                                    Some((ps, pc, psum, pb))
                                        if ps == p.start_time_unix_nano && p.count >= pc =>
                                    {
                                        let b: Vec<u64> = p
                                            .bucket_counts
                                            .iter()
                                            .zip(&pb)
                                            .map(|(a, b)| a - b)
                                            .collect();
                                        totals.add_hist(p.count - pc, sum - psum, &b);
                                    }
                                    None if p.start_time_unix_nano <= T0 => {}
                                    _ => totals.add_hist(p.count, sum, &p.bucket_counts),
                                }
                            }
                        }
                        Some(metric::Data::ExponentialHistogram(e)) => {
                            for p in &e.data_points {
                                series(&p.attributes);
                                let sum = p.sum.unwrap();
                                if e.aggregation_temporality == DELTA {
                                    totals.add_hist(p.count, sum, &[]);
                                    continue;
                                }
                                let cur = (p.start_time_unix_nano, p.count, sum, Vec::new());
                                match self.prev_hist.insert(id(&p.attributes), cur) {
                                    Some((ps, pc, psum, _))
                                        if ps == p.start_time_unix_nano && p.count >= pc =>
                                    {
                                        totals.add_hist(p.count - pc, sum - psum, &[]);
                                    }
                                    None if p.start_time_unix_nano <= T0 => {}
                                    _ => totals.add_hist(p.count, sum, &[]),
                                }
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
        // Rows as stored: no two share the identity queries deduplicate on.
        let converted = weft_schemas::metrics::from_otlp(req);
        assert_eq!(converted.rejected, 0, "{:?}", converted.rejection_message);
        let b = &converted.batch;
        let text = |name: &str| {
            arrow::compute::cast(b.column_by_name(name).unwrap(), &DataType::Utf8).unwrap()
        };
        let (names, services) = (text(columns::METRIC_NAME), text(columns::SERVICE_NAME));
        let (names, services) = (names.as_string::<i32>(), services.as_string::<i32>());
        let series = b
            .column_by_name(columns::SERIES_ID)
            .unwrap()
            .as_primitive::<UInt64Type>();
        let time = b
            .column_by_name(columns::TIME)
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        let start = b
            .column_by_name(columns::START_TIME)
            .unwrap()
            .as_primitive::<TimestampNanosecondType>();
        let mtype = b
            .column_by_name(columns::METRIC_TYPE)
            .unwrap()
            .as_primitive::<Int8Type>();
        for i in 0..b.num_rows() {
            let identity = (
                names.value(i).to_owned(),
                services.value(i).to_owned(),
                series.value(i),
                time.value(i),
                mtype.value(i),
                (!start.is_null(i)).then(|| start.value(i)),
            );
            assert!(
                self.identities.insert(identity.clone()),
                "duplicate identity {identity:?}"
            );
        }
    }
}

#[test]
fn totals_across_the_overflow_series_equal_the_totals_sent() {
    check_totals(&limited(LIMIT), 0x5eed);
}

/// With `user` removed, series of one `k` merge: the one without `user` stays cumulative,
/// the others become deltas of the same series.
#[test]
fn totals_stay_exact_when_attributes_are_dropped_too() {
    let config = MetricsLimitsConfig {
        drop_attributes: vec![DropAttributeRule {
            metric: "*".into(),
            key: "user".into(),
        }],
        ..limited(LIMIT)
    };
    check_totals(&config, 7);
}

const LIMIT: usize = 25;

fn check_totals(config: &MetricsLimitsConfig, seed: u64) {
    let h = Harness::new(config);
    let mut rng = StdRng::seed_from_u64(seed);
    let resources = [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1")];
    let mut sims: Vec<Vec<Sim>> = resources
        .iter()
        .enumerate()
        .map(|(r, _)| {
            (0..rng.random_range(20..40))
                .map(|i| Sim {
                    attrs: if i % 3 == 0 {
                        vec![kv("k", &format!("r{r}-s{}", i / 3))]
                    } else {
                        vec![
                            kv("k", &format!("r{r}-s{}", i / 3)),
                            kv("user", &format!("u{i}")),
                        ]
                    },
                    start: T0 + SEC + r as u64,
                    cum: 0.0,
                    hist: vec![0; 4],
                    hist_sum: 0.0,
                    exp_scale: 2,
                    exp: vec![0; 8],
                    exp_sum: 0.0,
                })
                .collect()
        })
        .collect();
    let mut sent: HashMap<String, Totals> = HashMap::new();
    let mut reader = Reader::default();
    let mut overflowed_points = 0;
    for round in 0..12u64 {
        let time = T0 + (round + 1) * 10 * SEC;
        h.at(time + 1_000_000);
        let mut chunks: Vec<ResourceMetrics> = Vec::new();
        for (r, (service, instance)) in resources.iter().enumerate() {
            let mut metrics: [Vec<Metric>; 2] = Default::default();
            let split = rng.random_bool(0.4);
            let mut parts: [[Vec<NumberDataPoint>; 3]; 2] = Default::default();
            let mut hparts: [[Vec<HistogramDataPoint>; 2]; 2] = Default::default();
            let mut eparts: [Vec<ExponentialHistogramDataPoint>; 2] = Default::default();
            for sim in sims[r].iter_mut() {
                let part = usize::from(split && rng.random_bool(0.5));
                // Delta sum.
                let d = rng.random_range(0..20i64);
                sent.entry("d.sum".into()).or_default().value += d as f64;
                parts[part][0].push(num(sim.attrs.clone(), time - 10 * SEC, time, Num::Int(d)));
                // Cumulative sum, histogram and exponential histogram; sometimes restarted.
                if round > 0 && rng.random_bool(0.05) {
                    sim.start = time - 5 * SEC;
                    sim.cum = 0.0;
                    sim.hist = vec![0; 4];
                    sim.hist_sum = 0.0;
                    sim.exp = vec![0; 8];
                    sim.exp_sum = 0.0;
                }
                let inc = f64::from(rng.random_range(0..40u32)) * 0.25;
                sim.cum += inc;
                sent.entry("c.sum".into()).or_default().value += inc;
                parts[part][1].push(num(
                    sim.attrs.clone(),
                    sim.start,
                    time,
                    Num::Double(sim.cum),
                ));
                // Gauge.
                let g = rng.random_range(-5..50i64);
                sent.entry("g".into()).or_default().value += g as f64;
                parts[part][2].push(num(sim.attrs.clone(), 0, time, Num::Int(g)));
                // Histograms.
                let mut delta = vec![0u64; 4];
                let mut delta_sum = 0.0;
                let mut inc = vec![0u64; 4];
                let mut inc_sum = 0.0;
                for _ in 0..rng.random_range(0..4) {
                    let b = rng.random_range(0..4usize);
                    inc[b] += 1;
                    inc_sum += b as f64 + 0.5;
                }
                for (a, b) in sim.hist.iter_mut().zip(&inc) {
                    *a += b;
                }
                sim.hist_sum += inc_sum;
                sent.entry("c.hist".into())
                    .or_default()
                    .add_hist(inc.iter().sum(), inc_sum, &inc);
                for _ in 0..rng.random_range(0..4) {
                    let b = rng.random_range(0..4usize);
                    delta[b] += 1;
                    delta_sum += b as f64 + 0.5;
                }
                hparts[part][0].push(hpoint(
                    sim.attrs.clone(),
                    sim.start,
                    time,
                    sim.hist.clone(),
                    sim.hist_sum,
                ));
                hparts[part][1].push(hpoint(
                    sim.attrs.clone(),
                    time - 10 * SEC,
                    time,
                    delta.clone(),
                    delta_sum,
                ));
                sent.entry("d.hist".into()).or_default().add_hist(
                    delta.iter().sum(),
                    delta_sum,
                    &delta,
                );
                // Exponential: the SDK lowers the scale halfway through.
                if round == 6 && sim.exp_scale == 2 {
                    let down = ExpBuckets {
                        offset: 0,
                        counts: sim.exp.clone(),
                    }
                    .downscale(1);
                    sim.exp = down.counts;
                    sim.exp.resize(8, 0);
                    sim.exp_scale = 1;
                }
                let n = rng.random_range(0..3u64);
                for _ in 0..n {
                    sim.exp[rng.random_range(0..4usize)] += 1;
                    sim.exp_sum += 1.0;
                }
                sent.entry("c.exp".into())
                    .or_default()
                    .add_hist(n, n as f64, &[]);
                eparts[part].push(ExponentialHistogramDataPoint {
                    attributes: sim.attrs.clone(),
                    start_time_unix_nano: sim.start,
                    time_unix_nano: time,
                    count: sim.exp.iter().sum(),
                    sum: Some(sim.exp_sum),
                    scale: sim.exp_scale,
                    zero_count: 0,
                    positive: Some(Buckets {
                        offset: 0,
                        bucket_counts: sim.exp.clone(),
                    }),
                    negative: None,
                    flags: 0,
                    exemplars: Vec::new(),
                    min: None,
                    max: None,
                    zero_threshold: 0.0,
                });
            }
            for part in 0..2 {
                let [d, c, g] = std::mem::take(&mut parts[part]);
                let [ch, dh] = std::mem::take(&mut hparts[part]);
                metrics[part] = vec![
                    sum("d.sum", DELTA, true, d),
                    sum("c.sum", CUM, true, c),
                    gauge("g", g),
                    hist("c.hist", CUM, ch),
                    hist("d.hist", DELTA, dh),
                    metric(
                        "c.exp",
                        metric::Data::ExponentialHistogram(ExponentialHistogram {
                            data_points: std::mem::take(&mut eparts[part]),
                            aggregation_temporality: CUM,
                        }),
                    ),
                ];
            }
            for m in metrics {
                if m.iter().any(|m| point_count(m.data.as_ref()) > 0) {
                    chunks.push(resource(service, instance, m));
                }
            }
        }
        // Chunks go out alone or together, in order.
        let mut requests: Vec<ExportMetricsServiceRequest> = Vec::new();
        for chunk in chunks {
            match requests.last_mut() {
                Some(req) if rng.random_bool(0.5) => req.resource_metrics.push(chunk),
                _ => requests.push(request(vec![chunk])),
            }
        }
        for req in requests {
            let (out, outcome) = h.otlp(req);
            overflowed_points += outcome.points_overflowed;
            assert_eq!(outcome.points_state_full + outcome.points_duplicate, 0);
            reader.read(&out);
        }
    }
    assert!(overflowed_points > 1000, "{overflowed_points}");
    // Cumulative series count fully: they all started after the limiter.
    for name in ["d.sum", "c.sum", "g", "c.hist", "d.hist", "c.exp"] {
        assert_eq!(reader.totals[name], sent[name], "{name}");
    }
    for (name, set) in &reader.admitted {
        assert!(set.len() <= LIMIT, "{name}: {} admitted series", set.len());
    }
    for name in ["d.sum", "c.sum", "g", "c.hist", "d.hist", "c.exp"] {
        let services = reader.overflow[name].len();
        assert!(
            (1..=3).contains(&services),
            "{name}: one overflow series per service"
        );
    }
}
