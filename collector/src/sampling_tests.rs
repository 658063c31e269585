//! Head and tail sampling through a real `Collector` (WAL, decision records, live rows):
//! whole traces kept, weights written, late spans, replicas agreeing, restart, eviction.
//! Time is moved with `decide_due_at` instead of being waited for.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, FixedSizeBinaryArray};
use arrow::datatypes::Float64Type;
use bytes::Bytes;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};
use prost::Message as _;
use weft_schemas::Table;
use weft_schemas::sampling::{Randomness, Threshold};

use crate::config::{CollectorConfig, SyncPolicy, WalConfig};
use crate::{Collector, CollectorOptions, Format};
use weft_sampling::SamplingConfig;
use weft_telemetry::Telemetry;

const SECOND: u64 = 1_000_000_000;
const T0: u64 = 1_700_000_000 * SECOND;

/// Tail sampling with the default policies (errors, over 1 s, 10 % of the rest) and a long
/// wait, so nothing is decided until a test moves time.
const TAIL: &str = r#"
[tail]
enabled = true
decision_wait_ms = 30000
max_trace_age_ms = 120000
"#;

fn sampling(toml_text: &str) -> SamplingConfig {
    toml::from_str(toml_text).unwrap()
}

fn open(dir: &std::path::Path, sampling: SamplingConfig) -> Arc<Collector> {
    Collector::open_with(
        CollectorConfig {
            data_dir: dir.to_path_buf(),
            wal: WalConfig {
                sync: SyncPolicy::Os,
                ..Default::default()
            },
            ..Default::default()
        },
        CollectorOptions {
            sampling,
            head_sampling: true,
            metrics_limits: true,
            time_window: false,
            telemetry: Telemetry::new(),
            ..CollectorOptions::default()
        },
    )
    .unwrap()
}

/// One synthetic trace: a root in `frontend` and three children in `backend`.
#[derive(Debug, Clone)]
struct TestTrace {
    id: u128,
    error: bool,
    slow: bool,
}

impl TestTrace {
    fn spans(&self) -> Vec<(String, Span)> {
        let root_ms = if self.slow { 2_000 } else { 100 };
        let mut out = vec![(
            "frontend".to_owned(),
            span(self.id, 1, 0, T0, root_ms, false),
        )];
        for child in 0..3u64 {
            let error = self.error && child == 1;
            out.push((
                "backend".to_owned(),
                span(self.id, 2 + child, 1, T0 + child, 20, error),
            ));
        }
        out
    }
}

fn span(trace: u128, id: u64, parent: u64, start: u64, ms: u64, error: bool) -> Span {
    Span {
        trace_id: trace.to_be_bytes().to_vec(),
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: if parent == 0 {
            Vec::new()
        } else {
            parent.to_be_bytes().to_vec()
        },
        name: format!("op{id}"),
        kind: 2,
        start_time_unix_nano: start,
        end_time_unix_nano: start + ms * 1_000_000,
        status: error.then(|| Status {
            code: 2,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn request(spans: Vec<(String, Span)>) -> ExportTraceServiceRequest {
    let mut by_service: BTreeMap<String, Vec<Span>> = BTreeMap::new();
    for (service, span) in spans {
        by_service.entry(service).or_default().push(span);
    }
    ExportTraceServiceRequest {
        resource_spans: by_service
            .into_iter()
            .map(|(service, spans)| ResourceSpans {
                resource: Some(Resource {
                    attributes: vec![KeyValue {
                        key: "service.name".into(),
                        value: Some(AnyValue {
                            value: Some(any_value::Value::StringValue(service)),
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
            })
            .collect(),
    }
}

async fn export(collector: &Collector, spans: Vec<(String, Span)>) -> u64 {
    let body = Bytes::from(request(spans).encode_to_vec());
    let outcome = collector
        .export_traces(body, Format::Protobuf)
        .await
        .unwrap();
    assert_eq!(outcome.rejected, 0);
    outcome.accepted
}

/// 400 traces; every 10th has an error, every 7th is slow. Trace IDs from a fixed LCG.
fn workload() -> Vec<TestTrace> {
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    (0..400)
        .map(|i| {
            let mut next = || {
                x = x
                    .wrapping_mul(6_364_136_223_846_793_005)
                    .wrapping_add(1_442_695_040_888_963_407);
                x
            };
            TestTrace {
                id: (u128::from(next()) << 64) | u128::from(next()),
                error: i % 10 == 3,
                slow: i % 7 == 5,
            }
        })
        .collect()
}

/// Stored spans: (trace, span id) -> sample_weight.
fn stored(collector: &Collector) -> BTreeMap<(u128, u64), f64> {
    let mut out = BTreeMap::new();
    for batch in collector.snapshot(Table::Spans).live {
        let trace = batch
            .column_by_name("trace_id")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap()
            .clone();
        let span = batch
            .column_by_name("span_id")
            .unwrap()
            .as_any()
            .downcast_ref::<FixedSizeBinaryArray>()
            .unwrap()
            .clone();
        let weight = batch
            .column_by_name("sample_weight")
            .unwrap()
            .as_primitive::<Float64Type>()
            .clone();
        for row in 0..batch.num_rows() {
            let t = u128::from_be_bytes(trace.value(row).try_into().unwrap());
            let s = u64::from_be_bytes(span.value(row).try_into().unwrap());
            assert!(
                out.insert((t, s), weight.value(row)).is_none(),
                "span stored twice"
            );
        }
    }
    out
}

/// Sends the workload in three exports (each trace's spans spread over all three).
async fn send_spread(collector: &Collector, traces: &[TestTrace]) -> u64 {
    let mut parts: [Vec<(String, Span)>; 3] = Default::default();
    for trace in traces {
        for (i, span) in trace.spans().into_iter().enumerate() {
            parts[i % 3].push(span);
        }
    }
    let mut accepted = 0;
    for part in parts {
        accepted += export(collector, part).await;
    }
    accepted
}

fn later(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

#[tokio::test]
async fn errors_and_slow_traces_are_kept_whole_and_the_rest_at_its_weight() {
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path(), sampling(TAIL));
    let traces = workload();
    assert_eq!(send_spread(&collector, &traces).await, 1_600);
    // Nothing is stored while traces wait.
    assert!(stored(&collector).is_empty());
    assert_eq!(collector.tail_sampler().pending().0, 400);
    assert_eq!(collector.decide_due_at(later(31)).await.unwrap(), 400);

    let rows = stored(&collector);
    let baseline = Threshold::from_ratio(0.1).unwrap();
    let mut expected_kept = 0;
    for trace in &traces {
        let weights: Vec<Option<f64>> = (1..=4u64)
            .map(|s| rows.get(&(trace.id, s)).copied())
            .collect();
        let must_keep = trace.error || trace.slow;
        let randomness = Randomness::from_trace_id(&trace.id.to_be_bytes()).unwrap();
        let sampled = baseline.keeps(randomness);
        if must_keep {
            assert!(
                weights.iter().all(|w| *w == Some(1.0)),
                "{trace:?}: {weights:?}"
            );
            expected_kept += 1;
        } else if sampled {
            // Kept by the 10 % policy: weight 2^56 / (2^56 - T) = 10.
            for w in &weights {
                let w = w.expect("a kept trace is whole");
                assert!((w - 10.0).abs() < 1e-9, "{w}");
            }
            expected_kept += 1;
        } else {
            assert!(
                weights.iter().all(Option::is_none),
                "{trace:?}: {weights:?}"
            );
        }
    }
    assert_eq!(rows.len(), expected_kept * 4);
    // The weighted count of normal traces estimates the 400 - errors - slow normal ones.
    let t = collector.telemetry();
    let traces_metric = "weft_tail_sampling_traces_total";
    assert_eq!(t.sum(traces_metric, &[]), 400.0);
    let errors = traces.iter().filter(|t| t.error).count() as f64;
    assert_eq!(
        t.sum(traces_metric, &[("decision", "kept"), ("policy", "errors")]),
        errors
    );
    assert!(collector.tail_sampler().is_idle());

    // Late spans follow the cached decision, with the same weight.
    let kept = traces.iter().find(|t| t.error).unwrap();
    let dropped = traces
        .iter()
        .find(|t| {
            !t.error
                && !t.slow
                && !baseline.keeps(Randomness::from_trace_id(&t.id.to_be_bytes()).unwrap())
        })
        .unwrap();
    export(
        &collector,
        vec![
            ("backend".into(), span(kept.id, 99, 1, T0 + 5, 10, false)),
            ("backend".into(), span(dropped.id, 99, 1, T0 + 5, 10, false)),
        ],
    )
    .await;
    collector.decide_due_at(later(1)).await.unwrap();
    let rows = stored(&collector);
    assert_eq!(rows.get(&(kept.id, 99)), Some(&1.0));
    assert_eq!(rows.get(&(dropped.id, 99)), None);
    assert_eq!(
        t.sum("weft_tail_sampling_late_spans_total", &[]),
        2.0,
        "{}",
        t.render()
    );
    // Once flushed, no WAL record holds undecided spans.
    collector.flush_all().await.unwrap();
    assert_eq!(collector.tail_sampler().wal_floor(), u64::MAX);
}

#[tokio::test]
async fn replicas_fed_in_different_orders_keep_the_same_spans() {
    let traces = workload();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(dir_a.path(), sampling(TAIL));
    let b = open(dir_b.path(), sampling(TAIL));
    send_spread(&a, &traces).await;
    // Replica b: traces reversed, one export per trace.
    for trace in traces.iter().rev() {
        export(&b, trace.spans().into_iter().rev().collect()).await;
    }
    a.decide_due_at(later(31)).await.unwrap();
    b.decide_due_at(later(31)).await.unwrap();
    let (ra, rb) = (stored(&a), stored(&b));
    assert!(!ra.is_empty());
    assert_eq!(ra, rb);
}

#[tokio::test]
async fn held_spans_survive_a_crash_and_are_decided_after_restart() {
    let traces = workload();
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path(), sampling(TAIL));
    send_spread(&collector, &traces[..200]).await;
    // Decide half before the "crash", so replay must skip decided traces and keep the rest.
    collector.decide_due_at(later(31)).await.unwrap();
    let decided_before = stored(&collector);
    send_spread(&collector, &traces[200..]).await;
    assert_eq!(collector.tail_sampler().pending().0, 200);

    // The data directory as a crash leaves it: every acknowledged record is in the WAL.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(dir.path(), copy.path());
    let restarted = open(copy.path(), sampling(TAIL));
    assert_eq!(restarted.tail_sampler().pending().0, 200);
    // Decided rows came back from their decision records.
    assert_eq!(stored(&restarted), decided_before);
    restarted.decide_due_at(later(31)).await.unwrap();
    collector.decide_due_at(later(31)).await.unwrap();
    // The same spans as the node that did not crash, each stored once.
    assert_eq!(stored(&restarted), stored(&collector));
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn pending_traces_are_bounded_and_evictions_counted() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = sampling(TAIL);
    config.tail.max_pending_traces = 50;
    let collector = open(dir.path(), config);
    let traces = workload();
    for trace in &traces[..120] {
        export(&collector, trace.spans()).await;
    }
    // Decisions are written as soon as the loop sees the bound exceeded; here, now.
    collector.decide_due_at(Instant::now()).await.unwrap();
    assert!(collector.tail_sampler().pending().0 <= 50);
    let evicted = collector
        .telemetry()
        .value("weft_tail_sampling_evicted_traces_total", &[]);
    assert_eq!(evicted, 70.0);
    // Evicted traces were decided with every span they had: errors among them are whole.
    let rows = stored(&collector);
    for trace in traces[..70].iter().filter(|t| t.error) {
        assert_eq!(
            (1..=4u64)
                .filter(|s| rows.contains_key(&(trace.id, *s)))
                .count(),
            4
        );
    }
}

#[tokio::test]
async fn head_sampling_in_weft_up_writes_thresholds_and_counts_dropped_as_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path(), sampling("[head]\nratio = 0.25\n"));
    let traces = workload();
    let mut spans = Vec::new();
    for trace in &traces {
        spans.extend(trace.spans());
    }
    assert_eq!(export(&collector, spans).await, 1_600);
    let rows = stored(&collector);
    let threshold = Threshold::from_ratio(0.25).unwrap();
    let expected: BTreeSet<u128> = traces
        .iter()
        .filter(|t| threshold.keeps(Randomness::from_trace_id(&t.id.to_be_bytes()).unwrap()))
        .map(|t| t.id)
        .collect();
    let kept: BTreeSet<u128> = rows.keys().map(|(t, _)| *t).collect();
    assert_eq!(kept, expected);
    assert!(rows.values().all(|w| *w == 4.0));
    let dropped = collector
        .telemetry()
        .sum("weft_head_sampling_spans_total", &[("decision", "dropped")]);
    assert_eq!(dropped as usize, 1_600 - rows.len());
}

#[tokio::test]
async fn reload_switches_tail_sampling_and_refuses_bad_settings() {
    let dir = tempfile::tempdir().unwrap();
    let collector = open(dir.path(), SamplingConfig::default());
    let traces = workload();
    export(&collector, traces[0].spans()).await;
    assert_eq!(stored(&collector).len(), 4);
    collector.reload_sampling(&sampling(TAIL)).unwrap();
    export(&collector, traces[1].spans()).await;
    assert_eq!(
        stored(&collector).len(),
        4,
        "held while tail sampling is on"
    );
    let err = collector
        .reload_sampling(&sampling("[head]\nratio = -1.0\n"))
        .unwrap_err();
    assert!(err.to_string().contains("sampling.head.ratio"), "{err}");
    // Turning tail sampling off keeps what was held.
    collector
        .reload_sampling(&SamplingConfig::default())
        .unwrap();
    collector.decide_due_at(Instant::now()).await.unwrap();
    assert_eq!(stored(&collector).len(), 8);
}
