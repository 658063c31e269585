//! Criterion benches of Weft's hot paths, the baseline later performance work measures
//! itself against (README "Benchmarks"). One binary, one group per path:
//!
//! ```text
//!  otlp_to_arrow     protobuf export bytes ─prost─▶ request ─from_otlp─▶ Arrow batch
//!  parquet_write     Arrow batch ─Store::apply_durable + Store::flush─▶ Parquet file + .tids
//!  trace_id_filter   TraceIdFilter: build over a file's ids; lookups of present/absent ids
//!  dedup_merge       two nodes' copies of the same files ─sort-preserving merge + dedup─▶ rows
//!  tail_policy       PolicySet::evaluate over whole held traces
//! ```
//!
//! Inputs come from the load generator (`weft_load_test::generator`), seeded, so every run
//! measures the same shapes. `cargo bench --workspace --bench hot_paths` (add `-- --quick`
//! for a short run).

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message as _;
use weft_load_test::TraceGenerator;
use weft_sampling::HeldSpan;
use weft_sampling::policy::{NamedPolicy, PolicyConfig, PolicySet, default_policies};
use weft_schemas::Table;
use weft_schemas::parquet_settings::ParquetSettings;
use weft_schemas::sampling::Randomness;
use weft_storage::Store;
use weft_storage::incidents::Incidents;
use weft_storage::store::StoreOptions;
use weft_storage::trace_index::TraceIdFilter;
use weft_telemetry::Telemetry;

const SEED: u64 = 15;
const SERVICES: usize = 20;

/// An export of about `spans` spans from a 20-service shop, 2% of traces failing.
fn traces_request(spans: usize) -> ExportTraceServiceRequest {
    TraceGenerator::new(SERVICES, 0.02, SEED).next_request(spans)
}

fn span_count(request: &ExportTraceServiceRequest) -> usize {
    weft_load_test::span_count(request)
}

fn spans_batch(spans: usize) -> arrow::array::RecordBatch {
    let converted = weft_schemas::spans::from_otlp(&traces_request(spans));
    assert_eq!(converted.rejected, 0, "{:?}", converted.rejection_message);
    converted.batch
}

fn open_store(dir: &Path) -> Store {
    let options = StoreOptions {
        tenant: "default".into(),
        parquet: ParquetSettings::default(),
        max_file_rows: 4_000_000,
        max_partitions_per_flush: 32,
        incidents: Arc::new(Incidents::open(dir).expect("incidents file")),
        telemetry: Telemetry::new(),
        row_source: None,
        objects: None,
        prefix: String::new(),
    };
    Store::open(dir, options).expect("open store")
}

fn otlp_to_arrow(c: &mut Criterion) {
    let mut group = c.benchmark_group("otlp_to_arrow");
    let traces = traces_request(4_096);
    let bytes = traces.encode_to_vec();
    group.throughput(Throughput::Elements(span_count(&traces) as u64));
    group.bench_function("traces_4k_spans", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(black_box(bytes.as_slice()))
                .expect("generated request decodes");
            weft_schemas::spans::from_otlp(&request)
        })
    });
    group.throughput(Throughput::Bytes(bytes.len() as u64));
    group.bench_function("traces_4k_spans_bytes", |b| {
        b.iter(|| {
            let request = ExportTraceServiceRequest::decode(black_box(bytes.as_slice()))
                .expect("generated request decodes");
            weft_schemas::spans::from_otlp(&request)
        })
    });
    // Metrics cover the pods that served requests: generate traffic first, or there are none.
    let mut generator = TraceGenerator::new(SERVICES, 0.02, SEED);
    generator.next_request(4_096);
    let metrics = generator.metrics_request();
    let metric_bytes = metrics.encode_to_vec();
    let points = weft_schemas::metrics::from_otlp(&metrics).batch.num_rows();
    assert!(points > 0, "the metrics request holds points");
    group.throughput(Throughput::Elements(points as u64));
    group.bench_function("metrics", |b| {
        b.iter(|| {
            let request = ExportMetricsServiceRequest::decode(black_box(metric_bytes.as_slice()))
                .expect("generated request decodes");
            weft_schemas::metrics::from_otlp(&request)
        })
    });
    group.finish();
}

fn parquet_write(c: &mut Criterion) {
    let mut group = c.benchmark_group("parquet_write");
    group.sample_size(10);
    let batch = spans_batch(16_384);
    group.throughput(Throughput::Elements(batch.num_rows() as u64));
    group.bench_function("flush_16k_spans", |b| {
        b.iter_batched(
            || {
                let dir = tempfile::tempdir().expect("tempdir");
                let store = open_store(dir.path());
                (dir, store)
            },
            |(dir, store)| {
                store.apply_durable(vec![(1, (Table::Spans, batch.clone()))]);
                let stats = store.flush(Table::Spans).expect("flush");
                (dir, store, stats)
            },
            BatchSize::PerIteration,
        )
    });
    group.finish();
}

fn trace_id_filter(c: &mut Criterion) {
    let mut group = c.benchmark_group("trace_id_filter");
    let ids: Vec<[u8; 16]> = (0..100_000u64)
        .map(|i| {
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
            id[8..].copy_from_slice(&i.to_le_bytes());
            id
        })
        .collect();
    group.throughput(Throughput::Elements(ids.len() as u64));
    group.bench_function("build_100k", |b| {
        b.iter(|| TraceIdFilter::build(ids.len(), ids.iter().map(|id| id.as_slice())))
    });
    let filter = TraceIdFilter::build(ids.len(), ids.iter().map(|id| id.as_slice()));
    let absent: Vec<[u8; 16]> = ids
        .iter()
        .map(|id| {
            let mut other = *id;
            other[15] ^= 0xA5;
            other
        })
        .collect();
    group.bench_function("lookup_100k_present", |b| {
        b.iter(|| {
            ids.iter()
                .filter(|id| filter.may_contain(id.as_slice()))
                .count()
        })
    });
    group.bench_function("lookup_100k_absent", |b| {
        b.iter(|| {
            absent
                .iter()
                .filter(|id| filter.may_contain(id.as_slice()))
                .count()
        })
    });
    group.finish();
}

fn dedup_merge(c: &mut Criterion) {
    let mut group = c.benchmark_group("dedup_merge");
    group.sample_size(10);
    // Replication 2: two nodes flushed the same rows, so every row is read twice.
    let batch = spans_batch(32_768);
    let root = tempfile::tempdir().expect("tempdir");
    let mut files = Vec::new();
    for node in ["a", "b"] {
        let dir = root.path().join(node);
        let store = open_store(&dir);
        store.apply_durable(vec![(1, (Table::Spans, batch.clone()))]);
        store.flush(Table::Spans).expect("flush");
        for file in store.snapshot(Table::Spans).files {
            files.push((dir.join(&file.path), file.bytes, file.min_time_ns));
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let scan = || {
        runtime
            .block_on(weft_query::cluster::dedup_scan(
                Table::Spans,
                files.clone(),
                Vec::new(),
            ))
            .expect("dedup scan")
    };
    let rows: usize = scan().iter().map(|b| b.num_rows()).sum();
    assert_eq!(rows, batch.num_rows(), "each copied row comes out once");
    group.throughput(Throughput::Elements(2 * batch.num_rows() as u64));
    group.bench_function("two_copies_32k_spans", |b| b.iter(scan));
    group.finish();
}

/// The generated spans as held traces, the tail sampler's unit of decision.
fn held_traces(request: &ExportTraceServiceRequest) -> Vec<Vec<HeldSpan>> {
    let mut traces: BTreeMap<Vec<u8>, Vec<HeldSpan>> = BTreeMap::new();
    for rs in &request.resource_spans {
        let resource = Arc::new(opentelemetry_proto::tonic::trace::v1::ResourceSpans {
            scope_spans: Vec::new(),
            ..rs.clone()
        });
        for ss in &rs.scope_spans {
            let scope = Arc::new(opentelemetry_proto::tonic::trace::v1::ScopeSpans {
                spans: Vec::new(),
                ..ss.clone()
            });
            for span in &ss.spans {
                traces
                    .entry(span.trace_id.clone())
                    .or_default()
                    .push(HeldSpan {
                        resource: Arc::clone(&resource),
                        scope: Arc::clone(&scope),
                        span: span.clone(),
                    });
            }
        }
    }
    traces.into_values().collect()
}

fn tail_policy(c: &mut Criterion) {
    let mut group = c.benchmark_group("tail_policy");
    let traces = held_traces(&traces_request(8_192));
    let mut policies = default_policies();
    policies.push(NamedPolicy::new(
        "checkout",
        PolicyConfig::StringAttribute {
            key: "http.route".into(),
            values: vec!["/checkout.*".into(), "/cart/.*".into()],
            regex: true,
            invert: false,
        },
    ));
    policies.push(NamedPolicy::new(
        "big",
        PolicyConfig::SpanCount {
            min: Some(50),
            max: None,
        },
    ));
    let set = PolicySet::compile(&policies).expect("policies compile");
    group.throughput(Throughput::Elements(traces.len() as u64));
    group.bench_function("default_plus_regex_and_span_count", |b| {
        b.iter(|| {
            let now = Instant::now();
            traces
                .iter()
                .map(|t| set.evaluate(t, Randomness::from_value(0), now).threshold)
                .min()
        })
    });
    group.finish();
}

criterion_group!(
    hot_paths,
    otlp_to_arrow,
    parquet_write,
    trace_id_filter,
    dedup_merge,
    tail_policy
);
criterion_main!(hot_paths);
