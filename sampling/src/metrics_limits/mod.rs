//! Metrics limits (`[sampling.metrics]`): include/drop rules, attribute removal and a
//! cardinality limit per metric with one overflow series, applied by the collector to an
//! export request **before** it is encoded into the write-ahead log.
//!
//! ```text
//!  OTLP export / remote write, decoded (Collector::export_metrics / export_prometheus)
//!    │ MetricsLimiter::apply_otlp / apply_remote_write
//!    │  1. rules  include globs; drop {metric, attribute, value} ─▶ points removed
//!    │            drop_attributes {metric, key} ─▶ keys removed; series that became
//!    │                                            equal are merged (as in 3.)
//!    │  2. limit  per metric (name + type) the first N series are admitted (64-bit
//!    │            hashes); points of any other series ─▶ the metric's overflow series
//!    │  3. merge  moved points of one target series and time (and start) become one
//!    │            point; cumulative sums/histograms become deltas (state per source series)
//!    ▼
//!  rewritten request ─▶ protobuf ─▶ WAL payload ─▶ rows
//!        (replay decodes the stored bytes, so it reproduces exactly the stored rows)
//! ```
//!
//! **Series.** As in `weft_schemas::metrics::series_id`: metric name, resource attributes,
//! scope name and version, point attributes (after `drop_attributes`). Limits count series per
//! metric name *and* type across all resources, on one node.
//!
//! **Overflow series.** One per metric and `service.name`: resource `{service.name}` only,
//! scope `weft.metrics_limits`, attributes `{otel.metric.overflow: true}` (the OpenTelemetry
//! SDK convention). Points of a limited metric that already carry exactly that attribute
//! (an SDK's own overflow series) always go there. Remote write: labels `{__name__, job,
//! otel_metric_overflow="true"}` plus `le` / `quantile` when present, so classic histogram
//! buckets and summary quantiles of the overflow stay apart; `job` is the service.
//!
//! **What stays exact** (the totals users query; "moved" = overflowed or re-aggregated):
//!
//! | input                         | moved points become                                   |
//! |-------------------------------|-------------------------------------------------------|
//! | gauge                         | one point per target and time, value = sum of values  |
//! | sum, delta                    | one point per target, time and start: sum of deltas   |
//! | sum, cumulative, monotonic    | **delta** points: the increase since that source      |
//! |                               | series' previous point (a drop or new start time is a |
//! |                               | reset: the whole value), summed per target/time/start |
//! | sum, cumulative, not monotonic| like a gauge (sum of the current values per time),    |
//! |                               | stays cumulative: the total level is what is queried  |
//! | histogram / exp. histogram    | delta points, counts, sums and buckets added (delta:  |
//! |                               | as sent; cumulative: increases as for sums; exp.      |
//! |                               | buckets downscaled to a common scale; min/max kept    |
//! |                               | only for delta inputs)                                |
//! | summary                       | a cumulative summary whose count and sum grow by the  |
//! |                               | sources' increases; quantiles are dropped             |
//!
//! So sums of deltas, counter increases (`rate`), histogram counts/sums/buckets and the sum
//! of gauge values at one time are the same over "admitted + overflow" as over what was sent.
//! A cumulative source series seen for the first time contributes its whole value when it
//! started (`start_time`) after the limiter last forgot anything about its metric (start, an
//! expired series, a full reset); otherwise its first point is only a baseline, like the
//! first point of a series in a `rate()` window. Points without a value (the OTLP
//! no-recorded-value flag, NaN, Prometheus stale markers) are moved but add nothing.
//!
//! **drop_attributes.** Points of a matching metric are merged into the series of their
//! remaining attributes as in the table. Gauges, delta points, non-monotonic sums and
//! summaries all go through the merge (so two points can never share an identity);
//! cumulative sums and histograms only when a key was actually removed (they need state per
//! source series), so such a reduced series can hold both the cumulative points of a series
//! that never had the key and delta points of those that had (queries read temporality per
//! point). Remote write merges every series of a matching metric: two cumulative sequences
//! in one Prometheus series would read as resets.
//!
//! **No duplicate identities.** Queries in a cluster drop rows with the same (metric,
//! service, series, time, type, start time). Moved points of one target with that identity
//! in one request are merged into one point; across requests a bounded map of recently
//! written identities (with a hash of what contributed) moves a colliding point's time 1 ns
//! (remote write: 1 ms) later, while an identical retry keeps its identity and so is still
//! removed as a duplicate. A cumulative source point at or before the last time seen for
//! its series (a retry, out of order) adds nothing: its increase is already counted.
//!
//! **Memory.** Per limited metric at most N admitted series (hash + last-seen time); at most
//! `max_metrics` metrics (beyond that, points of new limited metrics all overflow, counted
//! under `metric="_other"`); at most `max_cumulative_series` source series whose last value
//! is kept for delta conversion (beyond that their points are dropped and counted,
//! `reason="state_full"`); 131 072 recently written identities. An admitted series that
//! sends nothing for `series_ttl_secs` frees its slot (0 = never); idle state goes the same
//! way. Admission is sticky: a series that keeps sending stays admitted, and a cumulative
//! series in overflow stays there while its state lives, so no live series flips between
//! its own series and the overflow (a flip would count an increase twice). Forgetting runs
//! under the limiter's lock at most every `series_ttl_secs / 8` (1-60 s) and costs time
//! proportional to the state.
//!
//! **Limitations.** State is per node, so the guarantees above hold for what one node sees
//! of a series: exact in `weft up`. In a cluster, `weft ingest` spreads metrics requests by
//! a hash of the body, so one series' points can reach different collectors: admission may
//! differ between nodes, and increases of a moved cumulative series computed on two nodes
//! over interleaved points overlap (counted more than once). Exact cluster-wide limits need
//! series-consistent routing (e.g. by resource) of limited metrics. Gauge values at the
//! same time are summed only within one request (across requests they become separate
//! points 1 ns apart). Time comparisons of `start_time` use the collector's clock.
//! Exemplars of moved points are kept (at most 8 per point); remote-write exemplars of
//! moved series are dropped. Remote write has no start times and no types: counters are
//! recognised as the schema crate does (metadata, `_total`, histogram/summary parts), and
//! their moved samples become one cumulative counter per target, starting at 0 when the
//! limiter first writes it. Dropping attributes from cumulative series needs state per
//! source series; cutting cardinality in the SDK (views) is cheaper.

use std::collections::hash_map::{DefaultHasher, Entry};
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, Exemplar, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge,
    Histogram, HistogramDataPoint, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum,
    Summary, SummaryDataPoint, metric, number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use parking_lot::{Mutex, RwLock};
use weft_schemas::metrics::{metric_type, series_id};
use weft_schemas::metrics_algebra::{
    ExpBuckets, add_bucket_counts, bucket_counts_increase, scale_diff,
};
use weft_schemas::prometheus::{Label, MetricType, Sample, TimeSeries, WriteRequest};

use weft_telemetry::Telemetry;

use crate::Error;

/// Attribute of every OTLP overflow point (value `true`).
mod config;

pub use config::{DropAttributeRule, DropRule, MetricsLimitsConfig};

pub const OVERFLOW_ATTRIBUTE: &str = "otel.metric.overflow";
/// Label of every remote-write overflow series (value `"true"`).
pub const OVERFLOW_LABEL: &str = "otel_metric_overflow";
/// Scope name of the OTLP overflow series.
pub const OVERFLOW_SCOPE: &str = "weft.metrics_limits";
/// `metric` label of overflow counts for metrics beyond `max_metrics` (or not limited).
pub const OTHER_METRIC: &str = "_other";

const DROPPED_METRIC: &str = "weft_metrics_points_dropped_total";
const DROPPED_HELP: &str = concat!(
    "Metric data points the metrics limiter did not store, by reason: rule (include/drop), ",
    "state_full (no room for a cumulative series' state), ",
    "duplicate (a cumulative point not newer than its series' last)."
);
const OVERFLOWED_METRIC: &str = "weft_metrics_points_overflowed_total";
const OVERFLOWED_HELP: &str =
    "Metric data points moved to their metric's overflow series (otel.metric.overflow=true).";
const REAGGREGATED_METRIC: &str = "weft_metrics_points_reaggregated_total";
const REAGGREGATED_HELP: &str =
    "Metric data points merged into another series after drop_attributes removed keys.";
const ADMITTED_METRIC: &str = "weft_metrics_series_admitted";
const ADMITTED_HELP: &str = "Series currently admitted under a metrics cardinality limit.";
const STATE_METRIC: &str = "weft_metrics_limiter_state_series";
const STATE_HELP: &str =
    "Series whose last cumulative value the metrics limiter keeps to write increases.";

/// Recently written identities remembered to keep moved points unique (~5 MB).
const EMITTED_CAP: usize = 1 << 17;
/// Most 1 ns steps tried to find a free identity (then the point is written anyway).
const MAX_NUDGES: u32 = 1024;
/// Exemplars kept per merged point.
const MAX_EXEMPLARS: usize = 8;
/// Buckets per sign of a merged exponential histogram (the SDK default is 160).
const MAX_EXP_BUCKETS: u64 = 160;
/// The OTLP `FLAG_NO_RECORDED_VALUE` bit.
const NO_RECORDED_VALUE: u32 = 1;
const DELTA: i32 = AggregationTemporality::Delta as i32;

// =============================================================================================
// Globs
// =============================================================================================

#[derive(Debug, Clone, PartialEq, Eq)]
enum Tok {
    Lit(String),
    One,
    Star,
}

/// `*` (any run of characters), `?` (one character), `\x` (the character x).
#[derive(Debug, Clone)]
struct Glob {
    toks: Vec<Tok>,
}

impl Glob {
    fn parse(pattern: &str) -> Result<Self, Error> {
        if pattern.is_empty() {
            return Err(Error::EmptyPattern);
        }
        let mut toks = Vec::new();
        let mut lit = String::new();
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some(e) => lit.push(e),
                    None => {
                        return Err(Error::LoneBackslash {
                            pattern: pattern.to_owned(),
                        });
                    }
                },
                '*' | '?' => {
                    if !lit.is_empty() {
                        toks.push(Tok::Lit(std::mem::take(&mut lit)));
                    }
                    if c == '?' {
                        toks.push(Tok::One);
                    } else if toks.last() != Some(&Tok::Star) {
                        toks.push(Tok::Star);
                    }
                }
                '[' | ']' | '{' | '}' => {
                    return Err(Error::UnsupportedGlobChar {
                        pattern: pattern.to_owned(),
                        character: c,
                    });
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            toks.push(Tok::Lit(lit));
        }
        Ok(Self { toks })
    }

    fn matches(&self, s: &str) -> bool {
        match self.toks.as_slice() {
            [Tok::Star] => return true,
            [Tok::Lit(l)] => return l == s,
            _ => {}
        }
        // Two pointers; on a mismatch, the last `*` takes one more character.
        let (mut t, mut i) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        loop {
            match self.toks.get(t) {
                Some(Tok::Star) => {
                    star = Some((t + 1, i));
                    t += 1;
                    continue;
                }
                Some(Tok::One) if i < s.len() => {
                    i += s[i..].chars().next().map_or(1, char::len_utf8);
                    t += 1;
                    continue;
                }
                Some(Tok::Lit(l)) if s[i..].starts_with(l.as_str()) => {
                    i += l.len();
                    t += 1;
                    continue;
                }
                None if i == s.len() => return true,
                _ => {}
            }
            let Some((after, from)) = star else {
                return false;
            };
            let Some(c) = s[from..].chars().next() else {
                return false;
            };
            star = Some((after, from + c.len_utf8()));
            t = after;
            i = from + c.len_utf8();
        }
    }
}

// =============================================================================================
// Compiled rules
// =============================================================================================

#[derive(Debug)]
struct DropMatch {
    metric: Glob,
    attribute: Option<String>,
    value: Option<Glob>,
}

impl DropMatch {
    fn matches_value(&self, value: Option<&AnyValue>) -> bool {
        match &self.value {
            None => true,
            Some(g) => any_value_text(value).is_some_and(|text| g.matches(&text)),
        }
    }

    fn matches_otlp(&self, attrs: &[KeyValue], resource: &[KeyValue]) -> bool {
        let Some(key) = &self.attribute else {
            return true;
        };
        let found = attrs
            .iter()
            .find(|kv| &kv.key == key)
            .or_else(|| resource.iter().find(|kv| &kv.key == key));
        found.is_some_and(|kv| self.matches_value(kv.value.as_ref()))
    }

    fn matches_labels(&self, labels: &[Label]) -> bool {
        let Some(key) = &self.attribute else {
            return true;
        };
        labels.iter().find(|l| &l.name == key).is_some_and(|l| {
            self.value
                .as_ref()
                .is_none_or(|g| g.matches(l.value.as_str()))
        })
    }
}

fn any_value_text(v: Option<&AnyValue>) -> Option<String> {
    use any_value::Value as V;
    Some(match v?.value.as_ref()? {
        V::StringValue(s) => s.clone(),
        V::BoolValue(b) => b.to_string(),
        V::IntValue(i) => i.to_string(),
        V::DoubleValue(d) => d.to_string(),
        _ => return None,
    })
}

#[derive(Debug)]
struct Rules {
    /// Nothing to do (the default configuration).
    noop: bool,
    default_limit: usize,
    limits: HashMap<String, usize>,
    include: Vec<Glob>,
    drop: Vec<DropMatch>,
    drop_attributes: Vec<(Glob, Glob)>,
    ttl_ns: u64,
    max_metrics: usize,
    max_cumulative_series: usize,
}

/// What the rules say about one metric name.
struct Plan<'r> {
    keep: bool,
    limit: usize,
    value_rules: Vec<&'r DropMatch>,
    drop_keys: Vec<&'r Glob>,
}

impl Rules {
    fn compile(c: &MetricsLimitsConfig) -> Result<Self, Error> {
        for (name, limit) in &c.limits {
            if name.is_empty() {
                return Err(Error::config("limits", "a metric name is empty"));
            }
            if *limit == 0 {
                return Err(Error::config(
                    format!("limits.{name:?}"),
                    "must be > 0 (remove the entry to use max_series_per_metric)",
                ));
            }
        }
        if c.max_metrics == 0 {
            return Err(Error::config("max_metrics", "must be > 0"));
        }
        if c.max_cumulative_series == 0 {
            return Err(Error::config("max_cumulative_series", "must be > 0"));
        }
        let include = c
            .include
            .iter()
            .enumerate()
            .map(|(i, p)| Glob::parse(p).map_err(|e| e.in_section(format!("include[{i}]"))))
            .collect::<Result<Vec<_>, _>>()?;
        let mut drop = Vec::with_capacity(c.drop.len());
        for (i, r) in c.drop.iter().enumerate() {
            let metric =
                Glob::parse(&r.metric).map_err(|e| e.in_section(format!("drop[{i}].metric")))?;
            if r.attribute.as_deref() == Some("") {
                return Err(Error::config(
                    format!("drop[{i}].attribute"),
                    "must not be empty",
                ));
            }
            if r.value.is_some() && r.attribute.is_none() {
                return Err(Error::config(
                    format!("drop[{i}].value"),
                    "needs an attribute",
                ));
            }
            if r.attribute.is_none() && r.metric == "*" {
                return Err(Error::config(
                    format!("drop[{i}]"),
                    "metric = \"*\" without attribute drops every metric",
                ));
            }
            let value = r
                .value
                .as_deref()
                .map(|v| {
                    // An empty value matches an empty attribute value.
                    if v.is_empty() {
                        Ok(Glob {
                            toks: vec![Tok::Lit(String::new())],
                        })
                    } else {
                        Glob::parse(v).map_err(|e| e.in_section(format!("drop[{i}].value")))
                    }
                })
                .transpose()?;
            drop.push(DropMatch {
                metric,
                attribute: r.attribute.clone(),
                value,
            });
        }
        let drop_attributes = c
            .drop_attributes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok((
                    Glob::parse(&r.metric)
                        .map_err(|e| e.in_section(format!("drop_attributes[{i}].metric")))?,
                    Glob::parse(&r.key)
                        .map_err(|e| e.in_section(format!("drop_attributes[{i}].key")))?,
                ))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let noop = c.max_series_per_metric == 0
            && c.limits.is_empty()
            && include.is_empty()
            && drop.is_empty()
            && drop_attributes.is_empty();
        Ok(Self {
            noop,
            default_limit: c.max_series_per_metric,
            limits: c.limits.iter().map(|(k, v)| (k.clone(), *v)).collect(),
            include,
            drop,
            drop_attributes,
            ttl_ns: c.series_ttl_secs.saturating_mul(1_000_000_000),
            max_metrics: c.max_metrics,
            max_cumulative_series: c.max_cumulative_series,
        })
    }

    fn limit_for(&self, name: &str) -> usize {
        self.limits.get(name).copied().unwrap_or(self.default_limit)
    }

    fn plan(&self, name: &str) -> Plan<'_> {
        let included = self.include.is_empty() || self.include.iter().any(|g| g.matches(name));
        let dropped = self
            .drop
            .iter()
            .any(|d| d.attribute.is_none() && d.metric.matches(name));
        Plan {
            keep: included && !dropped,
            limit: self.limit_for(name),
            value_rules: self
                .drop
                .iter()
                .filter(|d| d.attribute.is_some() && d.metric.matches(name))
                .collect(),
            drop_keys: self
                .drop_attributes
                .iter()
                .filter(|(m, _)| m.matches(name))
                .map(|(_, k)| k)
                .collect(),
        }
    }
}

// =============================================================================================
// Hashing
// =============================================================================================

/// MurmurHash3's 64-bit finalizer.
fn fmix64(mut k: u64) -> u64 {
    k ^= k >> 33;
    k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
    k ^= k >> 33;
    k = k.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    k ^= k >> 33;
    k
}

fn mix(a: u64, b: u64) -> u64 {
    fmix64(a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b)
}

/// In-process only (never stored), so `DefaultHasher`'s fixed keys are fine.
fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

fn metric_key(name: &str, mtype: i8) -> u64 {
    mix(hash_of(name), mtype as u64)
}

fn typed(hash: u64, mtype: i8) -> u64 {
    mix(hash, 0x100 | mtype as u64)
}

/// The resource and scope a point belongs to, hashed once.
struct Origin<'a> {
    resource: &'a [KeyValue],
    resource_hash: u64,
    scope_name: &'a str,
    scope_version: &'a str,
}

/// A series' identity, over the same parts as the schema's `series_id` (the resource is
/// hashed once per resource rather than once per point).
fn point_hash(origin: &Origin<'_>, metric: &str, attrs: &[KeyValue]) -> u64 {
    mix(
        origin.resource_hash,
        series_id(metric, &[], origin.scope_name, origin.scope_version, attrs),
    )
}

/// Order-independent, as Prometheus label sets are sets.
fn labels_hash(labels: &[Label]) -> u64 {
    labels.iter().fold(0u64, |acc, l| {
        acc.wrapping_add(fmix64(hash_of(&(l.name.as_str(), l.value.as_str()))))
    })
}

fn overflow_kv() -> KeyValue {
    KeyValue {
        key: OVERFLOW_ATTRIBUTE.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::BoolValue(true)),
        }),
        key_strindex: 0,
    }
}

/// An SDK's own overflow series: exactly `{otel.metric.overflow: true}`.
fn is_overflow_attrs(attrs: &[KeyValue]) -> bool {
    match attrs {
        [kv] if kv.key == OVERFLOW_ATTRIBUTE => {
            matches!(
                kv.value.as_ref().and_then(|v| v.value.as_ref()),
                Some(any_value::Value::BoolValue(true))
            ) || any_value_text(kv.value.as_ref()).as_deref() == Some("true")
        }
        _ => false,
    }
}

fn valid_time(t: u64) -> bool {
    i64::try_from(t).is_ok()
}

/// Exemplars the schema would reject would take the whole merged point with them.
fn valid_exemplars(mut exemplars: Vec<Exemplar>) -> Vec<Exemplar> {
    exemplars.retain(|e| {
        valid_time(e.time_unix_nano)
            && matches!(e.trace_id.len(), 0 | 16)
            && matches!(e.span_id.len(), 0 | 8)
    });
    exemplars.truncate(MAX_EXEMPLARS);
    exemplars
}

// =============================================================================================
// Values: accumulated, subtracted, stored
// =============================================================================================

#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Double(f64),
}

impl Num {
    /// NaN carries nothing to add up.
    fn from_value(v: Option<number_data_point::Value>) -> Option<Self> {
        match v? {
            number_data_point::Value::AsInt(i) => Some(Num::Int(i)),
            number_data_point::Value::AsDouble(d) if d.is_nan() => None,
            number_data_point::Value::AsDouble(d) => Some(Num::Double(d)),
        }
    }

    fn f(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Double(d) => d,
        }
    }

    fn add(self, o: Num) -> Num {
        match (self, o) {
            (Num::Int(a), Num::Int(b)) => a
                .checked_add(b)
                .map_or(Num::Double(a as f64 + b as f64), Num::Int),
            _ => Num::Double(self.f() + o.f()),
        }
    }

    /// `self - prev` for a monotonic counter; `None` when it went down (a reset).
    fn increase(self, prev: Num) -> Option<Num> {
        match (self, prev) {
            (Num::Int(a), Num::Int(b)) if a >= b => Some(
                a.checked_sub(b)
                    .map_or(Num::Double(a as f64 - b as f64), Num::Int),
            ),
            (Num::Int(_), Num::Int(_)) => None,
            _ => (self.f() >= prev.f()).then(|| Num::Double(self.f() - prev.f())),
        }
    }

    fn to_value(self) -> number_data_point::Value {
        match self {
            Num::Int(i) => number_data_point::Value::AsInt(i),
            Num::Double(d) => number_data_point::Value::AsDouble(d),
        }
    }

    fn bits(self) -> u64 {
        match self {
            Num::Int(i) => i as u64,
            Num::Double(d) => d.to_bits(),
        }
    }
}

fn add_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? + b?)
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.min(b?))
}

fn max_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a?.max(b?))
}

#[derive(Debug, Clone, PartialEq)]
struct HistVal {
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    /// Bounds and bucket count: histograms merge or subtract only when they agree.
    layout: u64,
    bounds: Vec<f64>,
    buckets: Vec<u64>,
}

fn layout_hash(bounds: &[f64], buckets: usize) -> u64 {
    let bits: Vec<u64> = bounds.iter().map(|b| b.to_bits()).collect();
    mix(hash_of(&bits), buckets as u64)
}

impl HistVal {
    fn merge(&mut self, o: HistVal) {
        self.count = self.count.saturating_add(o.count);
        self.sum = add_opt(self.sum, o.sum);
        self.min = min_opt(self.min, o.min);
        self.max = max_opt(self.max, o.max);
        add_bucket_counts(&mut self.buckets, &o.buckets);
    }

    fn increase(&self, prev: &HistVal) -> Option<HistVal> {
        if self.layout != prev.layout {
            return None;
        }
        let buckets = bucket_counts_increase(&self.buckets, &prev.buckets)?;
        Some(HistVal {
            count: self.count.checked_sub(prev.count)?,
            sum: add_opt(self.sum, prev.sum.map(|x| -x)),
            min: None,
            max: None,
            layout: self.layout,
            bounds: self.bounds.clone(),
            buckets,
        })
    }
}

#[derive(Debug, Clone, PartialEq)]
struct ExpVal {
    count: u64,
    sum: Option<f64>,
    min: Option<f64>,
    max: Option<f64>,
    scale: i32,
    zero_count: u64,
    zero_threshold: f64,
    positive: ExpBuckets,
    negative: ExpBuckets,
}

impl ExpVal {
    /// The finest scale at which both fit in `MAX_EXP_BUCKETS` per sign.
    fn common_scale(&self, o: &ExpVal) -> i32 {
        let mut s = self.scale.min(o.scale);
        for _ in 0..64 {
            let (a, b) = (scale_diff(self.scale, s), scale_diff(o.scale, s));
            if ExpBuckets::span(&[(&self.positive, a), (&o.positive, b)]) <= MAX_EXP_BUCKETS
                && ExpBuckets::span(&[(&self.negative, a), (&o.negative, b)]) <= MAX_EXP_BUCKETS
            {
                break;
            }
            s = s.saturating_sub(1);
        }
        s
    }

    fn merge(&mut self, o: ExpVal) {
        let s = self.common_scale(&o);
        let (a, b) = (scale_diff(self.scale, s), scale_diff(o.scale, s));
        let mut positive = self.positive.downscale(a);
        positive.add(&o.positive.downscale(b));
        let mut negative = self.negative.downscale(a);
        negative.add(&o.negative.downscale(b));
        self.positive = positive;
        self.negative = negative;
        self.scale = s;
        self.count = self.count.saturating_add(o.count);
        self.sum = add_opt(self.sum, o.sum);
        self.min = min_opt(self.min, o.min);
        self.max = max_opt(self.max, o.max);
        self.zero_count = self.zero_count.saturating_add(o.zero_count);
        self.zero_threshold = self.zero_threshold.max(o.zero_threshold);
    }

    /// SDKs lower the scale of a cumulative histogram as its range grows: both sides are
    /// compared at the coarser scale.
    fn increase(&self, prev: &ExpVal) -> Option<ExpVal> {
        let s = self.scale.min(prev.scale);
        let (a, b) = (scale_diff(self.scale, s), scale_diff(prev.scale, s));
        Some(ExpVal {
            count: self.count.checked_sub(prev.count)?,
            sum: add_opt(self.sum, prev.sum.map(|x| -x)),
            min: None,
            max: None,
            scale: s,
            zero_count: self.zero_count.checked_sub(prev.zero_count)?,
            zero_threshold: self.zero_threshold,
            positive: self
                .positive
                .downscale(a)
                .increase(&prev.positive.downscale(b))?,
            negative: self
                .negative
                .downscale(a)
                .increase(&prev.negative.downscale(b))?,
        })
    }
}

/// A point's value, as accumulated for a target and as kept for a cumulative series.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Num(Num),
    Hist(HistVal),
    Exp(ExpVal),
    /// Summary count and sum.
    Summary(u64, f64),
    /// A Prometheus sample.
    Prom(f64),
}

impl Value {
    fn merge(&mut self, o: Value) {
        match (self, o) {
            (Value::Num(a), Value::Num(b)) => *a = a.add(b),
            (Value::Hist(a), Value::Hist(b)) => a.merge(b),
            (Value::Exp(a), Value::Exp(b)) => a.merge(b),
            (Value::Summary(c, s), Value::Summary(c2, s2)) => {
                *c = c.saturating_add(c2);
                *s += s2;
            }
            (Value::Prom(a), Value::Prom(b)) => *a += b,
            _ => {}
        }
    }

    /// The increase since `prev` of a monotonic cumulative value; `None` = a reset.
    fn increase(&self, prev: &Value) -> Option<Value> {
        match (self, prev) {
            (Value::Num(a), Value::Num(b)) => a.increase(*b).map(Value::Num),
            (Value::Hist(a), Value::Hist(b)) => a.increase(b).map(Value::Hist),
            (Value::Exp(a), Value::Exp(b)) => a.increase(b).map(Value::Exp),
            (Value::Summary(c, s), Value::Summary(c2, s2)) => {
                Some(Value::Summary(c.checked_sub(*c2)?, s - s2))
            }
            (Value::Prom(a), Value::Prom(b)) => (a >= b).then(|| Value::Prom(a - b)),
            _ => None,
        }
    }

    /// What is kept between points: no bounds (the layout hash says whether they changed),
    /// no min/max.
    fn stored(&self) -> Value {
        match self {
            Value::Hist(h) => Value::Hist(HistVal {
                bounds: Vec::new(),
                min: None,
                max: None,
                ..h.clone()
            }),
            Value::Exp(e) => Value::Exp(ExpVal {
                min: None,
                max: None,
                ..e.clone()
            }),
            v => v.clone(),
        }
    }

    /// Histograms with other bounds are separate points of the same target.
    fn layout(&self) -> u64 {
        match self {
            Value::Hist(h) => h.layout,
            _ => 0,
        }
    }

    fn fingerprint(&self) -> u64 {
        match self {
            Value::Num(n) => n.bits(),
            Value::Hist(h) => mix(h.count, h.sum.map_or(0, f64::to_bits)),
            Value::Exp(e) => mix(e.count, e.sum.map_or(0, f64::to_bits)),
            Value::Summary(c, s) => mix(*c, s.to_bits()),
            Value::Prom(v) => v.to_bits(),
        }
    }
}

// =============================================================================================
// OTLP points
// =============================================================================================

trait DataPoint {
    fn attributes(&self) -> &[KeyValue];
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue>;
    /// (start, time)
    fn times(&self) -> (u64, u64);
    fn flags(&self) -> u32;
    fn set_time(&mut self, time: u64);
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Exemplar>, Option<Value>);
}

impl DataPoint for NumberDataPoint {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn times(&self) -> (u64, u64) {
        (self.start_time_unix_nano, self.time_unix_nano)
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn set_time(&mut self, time: u64) {
        self.time_unix_nano = time;
    }
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Exemplar>, Option<Value>) {
        let v = Num::from_value(self.value).map(Value::Num);
        (self.attributes, self.exemplars, v)
    }
}

impl DataPoint for HistogramDataPoint {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn times(&self) -> (u64, u64) {
        (self.start_time_unix_nano, self.time_unix_nano)
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn set_time(&mut self, time: u64) {
        self.time_unix_nano = time;
    }
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Exemplar>, Option<Value>) {
        let v = Value::Hist(HistVal {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            layout: layout_hash(&self.explicit_bounds, self.bucket_counts.len()),
            bounds: self.explicit_bounds,
            buckets: self.bucket_counts,
        });
        (self.attributes, self.exemplars, Some(v))
    }
}

impl DataPoint for ExponentialHistogramDataPoint {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn times(&self) -> (u64, u64) {
        (self.start_time_unix_nano, self.time_unix_nano)
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn set_time(&mut self, time: u64) {
        self.time_unix_nano = time;
    }
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Exemplar>, Option<Value>) {
        let v = Value::Exp(ExpVal {
            count: self.count,
            sum: self.sum,
            min: self.min,
            max: self.max,
            scale: self.scale,
            zero_count: self.zero_count,
            zero_threshold: self.zero_threshold,
            positive: ExpBuckets::from_proto(self.positive.as_ref()),
            negative: ExpBuckets::from_proto(self.negative.as_ref()),
        });
        (self.attributes, self.exemplars, Some(v))
    }
}

impl DataPoint for SummaryDataPoint {
    fn attributes(&self) -> &[KeyValue] {
        &self.attributes
    }
    fn attributes_mut(&mut self) -> &mut Vec<KeyValue> {
        &mut self.attributes
    }
    fn times(&self) -> (u64, u64) {
        (self.start_time_unix_nano, self.time_unix_nano)
    }
    fn flags(&self) -> u32 {
        self.flags
    }
    fn set_time(&mut self, time: u64) {
        self.time_unix_nano = time;
    }
    fn into_parts(self) -> (Vec<KeyValue>, Vec<Exemplar>, Option<Value>) {
        let v = (!self.sum.is_nan()).then_some(Value::Summary(self.count, self.sum));
        (self.attributes, Vec::new(), v)
    }
}

fn point_count(data: Option<&metric::Data>) -> usize {
    match data {
        None => 0,
        Some(metric::Data::Gauge(g)) => g.data_points.len(),
        Some(metric::Data::Sum(s)) => s.data_points.len(),
        Some(metric::Data::Histogram(h)) => h.data_points.len(),
        Some(metric::Data::ExponentialHistogram(h)) => h.data_points.len(),
        Some(metric::Data::Summary(s)) => s.data_points.len(),
    }
}

/// How moved points of a metric are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Summed per target and time (gauges, non-monotonic cumulative sums).
    Level,
    /// Summed per target, time and start.
    Delta,
    /// Turned into increases first (state per source series), then as `Delta`.
    Cumulative,
}

/// The kind of metric moved points are written as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum OutKind {
    Gauge,
    Sum { temporality: i32, monotonic: bool },
    Histogram,
    ExpHistogram,
    Summary,
}

impl OutKind {
    fn metric_type(self) -> i8 {
        match self {
            OutKind::Gauge => metric_type::GAUGE,
            OutKind::Sum { .. } => metric_type::SUM,
            OutKind::Histogram => metric_type::HISTOGRAM,
            OutKind::ExpHistogram => metric_type::EXPONENTIAL_HISTOGRAM,
            OutKind::Summary => metric_type::SUMMARY,
        }
    }

    fn of(data: &metric::Data) -> (OutKind, Mode) {
        match data {
            metric::Data::Gauge(_) => (OutKind::Gauge, Mode::Level),
            metric::Data::Sum(s) if s.aggregation_temporality == DELTA => (
                OutKind::Sum {
                    temporality: DELTA,
                    monotonic: s.is_monotonic,
                },
                Mode::Delta,
            ),
            // Unspecified temporality is treated as cumulative, the safe reading.
            metric::Data::Sum(s) if s.is_monotonic => (
                OutKind::Sum {
                    temporality: DELTA,
                    monotonic: true,
                },
                Mode::Cumulative,
            ),
            metric::Data::Sum(s) => (
                OutKind::Sum {
                    temporality: s.aggregation_temporality,
                    monotonic: false,
                },
                Mode::Level,
            ),
            metric::Data::Histogram(h) => (
                OutKind::Histogram,
                if h.aggregation_temporality == DELTA {
                    Mode::Delta
                } else {
                    Mode::Cumulative
                },
            ),
            metric::Data::ExponentialHistogram(h) => (
                OutKind::ExpHistogram,
                if h.aggregation_temporality == DELTA {
                    Mode::Delta
                } else {
                    Mode::Cumulative
                },
            ),
            // Summary count and sum are cumulative; they grow one running total per target.
            metric::Data::Summary(_) => (OutKind::Summary, Mode::Cumulative),
        }
    }

    fn empty_metric(self, h: &Header) -> Metric {
        let data = match self {
            OutKind::Gauge => metric::Data::Gauge(Gauge {
                data_points: Vec::new(),
            }),
            OutKind::Sum {
                temporality,
                monotonic,
            } => metric::Data::Sum(Sum {
                data_points: Vec::new(),
                aggregation_temporality: temporality,
                is_monotonic: monotonic,
            }),
            OutKind::Histogram => metric::Data::Histogram(Histogram {
                data_points: Vec::new(),
                aggregation_temporality: DELTA,
            }),
            OutKind::ExpHistogram => metric::Data::ExponentialHistogram(ExponentialHistogram {
                data_points: Vec::new(),
                aggregation_temporality: DELTA,
            }),
            OutKind::Summary => metric::Data::Summary(Summary {
                data_points: Vec::new(),
            }),
        };
        Metric {
            name: h.name.clone(),
            description: h.description.clone(),
            unit: h.unit.clone(),
            metadata: h.metadata.clone(),
            data: Some(data),
        }
    }
}

// =============================================================================================
// The limiter
// =============================================================================================

/// What one request went through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LimitOutcome {
    /// The request was rewritten: encode it again for the WAL (otherwise keep the body).
    pub changed: bool,
    /// Points (remote write: samples) removed by `include` / `drop`.
    pub points_dropped: u64,
    /// Points moved to an overflow series.
    pub points_overflowed: u64,
    /// Points merged into another series after `drop_attributes`.
    pub points_reaggregated: u64,
    /// Cumulative points dropped because `max_cumulative_series` states exist.
    pub points_state_full: u64,
    /// Cumulative points not newer than their series' last one (retries, out of order).
    pub points_duplicate: u64,
    /// Series newly admitted under a limit.
    pub series_admitted: u64,
}

#[derive(Debug, Clone)]
enum Clock {
    System,
    #[cfg(test)]
    Manual(Arc<std::sync::atomic::AtomicU64>),
}

impl Clock {
    fn now_ns(&self) -> u64 {
        match self {
            Clock::System => SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
            #[cfg(test)]
            Clock::Manual(t) => t.load(std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// One limited metric (name + type).
#[derive(Debug)]
struct MetricState {
    name: String,
    /// Admitted series -> last time seen (ns).
    admitted: HashMap<u64, u64>,
    /// A cumulative series first seen in overflow contributes its whole value only when it
    /// started after this: the last time anything about this metric was forgotten.
    horizon: u64,
    /// Cumulative states of this metric (for removing idle metrics).
    cum_states: usize,
    last_seen: u64,
}

/// The last point of a cumulative source series that is being moved.
#[derive(Debug)]
struct CumState {
    metric: u64,
    last_seen: u64,
    /// Moved to the overflow series: it stays there while this state lives.
    overflow: bool,
    start: u64,
    time: u64,
    value: Value,
}

/// A cumulative target written as a running total (summaries, remote-write counters).
#[derive(Debug)]
struct Running {
    last_seen: u64,
    start: u64,
    last_time: u64,
    total: Value,
}

/// Identities written recently, with a hash of what made them up.
#[derive(Debug, Default)]
struct Emitted {
    map: HashMap<u64, u64>,
    order: VecDeque<u64>,
}

impl Emitted {
    /// The time to write a moved point at: `time`, or a little later if another point of
    /// the same identity with other contents was written already.
    fn assign(
        &mut self,
        dest: u64,
        mtype: i8,
        start: u64,
        time: u64,
        step: u64,
        content: u64,
    ) -> u64 {
        let mut t = time;
        for _ in 0..MAX_NUDGES {
            let key = mix(mix(typed(dest, mtype), start), t);
            match self.map.get(&key) {
                None => {
                    if self.order.len() >= EMITTED_CAP
                        && let Some(old) = self.order.pop_front()
                    {
                        self.map.remove(&old);
                    }
                    self.map.insert(key, content);
                    self.order.push_back(key);
                    return t;
                }
                // The same contributions again: a retry, which queries deduplicate.
                Some(c) if *c == content => return t,
                Some(_) => t = t.saturating_add(step),
            }
        }
        t
    }
}

#[derive(Debug)]
struct State {
    metrics: HashMap<u64, MetricState>,
    cumulative: HashMap<u64, CumState>,
    running: HashMap<u64, Running>,
    emitted: Emitted,
    /// Horizon of metrics without a `MetricState` (and of new ones).
    untracked_horizon: u64,
    last_sweep: u64,
    admitted_total: usize,
}

impl State {
    fn new(now: u64) -> Self {
        Self {
            metrics: HashMap::new(),
            cumulative: HashMap::new(),
            running: HashMap::new(),
            emitted: Emitted::default(),
            untracked_horizon: now,
            last_sweep: now,
            admitted_total: 0,
        }
    }

    fn state_series(&self) -> usize {
        self.cumulative.len() + self.running.len()
    }

    /// Forgets what has been idle for `ttl` (checked at most every ttl/8, 1-60 s).
    fn sweep(&mut self, now: u64, ttl: u64) {
        if ttl == 0 {
            return;
        }
        let interval = (ttl / 8).clamp(1_000_000_000, 60_000_000_000);
        if now.saturating_sub(self.last_sweep) < interval {
            return;
        }
        self.last_sweep = now;
        let cutoff = now.saturating_sub(ttl);
        let State {
            metrics,
            cumulative,
            running,
            untracked_horizon,
            admitted_total,
            ..
        } = self;
        for ms in metrics.values_mut() {
            let before = ms.admitted.len();
            ms.admitted.retain(|_, seen| *seen >= cutoff);
            let gone = before - ms.admitted.len();
            if gone > 0 {
                *admitted_total -= gone;
                ms.horizon = now;
            }
        }
        cumulative.retain(|_, c| {
            if c.last_seen >= cutoff {
                return true;
            }
            match metrics.get_mut(&c.metric) {
                Some(ms) => {
                    ms.cum_states = ms.cum_states.saturating_sub(1);
                    ms.horizon = now;
                }
                None => *untracked_horizon = now,
            }
            false
        });
        running.retain(|_, r| r.last_seen >= cutoff);
        metrics.retain(|_, ms| {
            let keep = !ms.admitted.is_empty() || ms.cum_states > 0 || ms.last_seen >= cutoff;
            if !keep {
                *untracked_horizon = now;
            }
            keep
        });
    }
}

/// Include/drop rules, attribute removal and cardinality limits for metrics (see the module
/// docs). `&self` methods; share it by `Arc` between receivers.
#[derive(Debug)]
pub struct MetricsLimiter {
    rules: RwLock<Arc<Rules>>,
    state: Mutex<State>,
    telemetry: Arc<Telemetry>,
    clock: Clock,
}

impl MetricsLimiter {
    pub fn new(config: &MetricsLimitsConfig, telemetry: Arc<Telemetry>) -> Result<Self, Error> {
        Self::with_clock(config, telemetry, Clock::System)
    }

    fn with_clock(
        config: &MetricsLimitsConfig,
        telemetry: Arc<Telemetry>,
        clock: Clock,
    ) -> Result<Self, Error> {
        let rules = Rules::compile(config)?;
        let now = clock.now_ns();
        Ok(Self {
            rules: RwLock::new(Arc::new(rules)),
            state: Mutex::new(State::new(now)),
            telemetry,
            clock,
        })
    }

    /// Replaces the rules. Admitted series, cumulative state and overflow membership are
    /// kept; a lowered limit forgets the least recently seen admitted series beyond it; a
    /// metric no longer limited forgets its admitted set. A default (no-op) configuration
    /// frees everything.
    pub fn reload(&self, config: &MetricsLimitsConfig) -> Result<(), Error> {
        let rules = Rules::compile(config)?;
        let now = self.clock.now_ns();
        {
            let mut st = self.state.lock();
            if rules.noop {
                *st = State::new(now);
            } else {
                let State {
                    metrics,
                    admitted_total,
                    ..
                } = &mut *st;
                for ms in metrics.values_mut() {
                    let limit = rules.limit_for(&ms.name);
                    if ms.admitted.len() <= limit {
                        continue;
                    }
                    let excess = if limit == 0 {
                        ms.admitted.len()
                    } else {
                        ms.admitted.len() - limit
                    };
                    let mut by_age: Vec<(u64, u64)> =
                        ms.admitted.iter().map(|(k, seen)| (*seen, *k)).collect();
                    by_age.sort_unstable();
                    for (_, k) in by_age.into_iter().take(excess) {
                        ms.admitted.remove(&k);
                    }
                    *admitted_total -= excess;
                    ms.horizon = now;
                }
            }
        }
        *self.rules.write() = Arc::new(rules);
        Ok(())
    }

    /// True for the default configuration: the collector can skip the limiter entirely.
    pub fn is_noop(&self) -> bool {
        self.rules.read().noop
    }

    /// Applies rules and limits to an OTLP export in place.
    pub fn apply_otlp(&self, request: &mut ExportMetricsServiceRequest) -> LimitOutcome {
        let rules = self.rules.read().clone();
        let mut outcome = LimitOutcome::default();
        if rules.noop {
            return outcome;
        }
        // 1. Rules and hashes, without the lock.
        let pendings = prepare_request(&rules, request, &mut outcome);
        if pendings.is_empty() {
            self.report(&outcome, &HashMap::new(), None);
            return outcome;
        }
        // 2. Admission, state and merging under the lock.
        let now = self.clock.now_ns();
        let mut st = self.state.lock();
        st.sweep(now, rules.ttl_ns);
        let mut w = Work {
            st: &mut st,
            rules: &rules,
            now,
            outcome,
            overflowed: HashMap::new(),
            out: Outputs::default(),
        };
        let mut emptied: Vec<(usize, usize, usize)> = Vec::new();
        for p in &pendings {
            let Some(rm) = request.resource_metrics.get_mut(p.ri) else {
                continue;
            };
            let service = rm.resource.as_ref().and_then(service_kv);
            let svc = w.out.service(service);
            let Some(m) = rm
                .scope_metrics
                .get_mut(p.si)
                .and_then(|sm| sm.metrics.get_mut(p.mi))
            else {
                continue;
            };
            w.route_metric(m, p, Loc::Scope(p.ri, p.si), svc);
            if point_count(m.data.as_ref()) == 0 {
                emptied.push((p.ri, p.si, p.mi));
            }
        }
        // Metrics whose every point moved go (indices from the end, so the rest stay valid).
        for (ri, si, mi) in emptied.into_iter().rev() {
            if let Some(sm) = request
                .resource_metrics
                .get_mut(ri)
                .and_then(|rm| rm.scope_metrics.get_mut(si))
                && mi < sm.metrics.len()
            {
                sm.metrics.remove(mi);
            }
        }
        w.finish_otlp(request);
        let Work {
            outcome,
            overflowed,
            ..
        } = w;
        let gauges = (st.admitted_total, st.state_series());
        drop(st);
        self.report(&outcome, &overflowed, Some(gauges));
        outcome
    }

    /// Applies rules and limits to a Prometheus remote-write request in place.
    pub fn apply_remote_write(&self, request: &mut WriteRequest) -> LimitOutcome {
        let rules = self.rules.read().clone();
        let mut outcome = LimitOutcome::default();
        if rules.noop {
            return outcome;
        }
        let metadata: HashMap<String, i32> = request
            .metadata
            .iter()
            .map(|m| (m.metric_family_name.clone(), m.r#type))
            .collect();
        let inferred = inferred_families(&request.timeseries);
        let mut kept: Vec<TimeSeries> = Vec::with_capacity(request.timeseries.len());
        let mut pending: Vec<RwPending> = Vec::new();
        for mut ts in std::mem::take(&mut request.timeseries) {
            let name = prom_name(&ts).to_owned();
            if name.is_empty() {
                kept.push(ts);
                continue;
            }
            let plan = rules.plan(&name);
            if !plan.keep
                || plan
                    .value_rules
                    .iter()
                    .any(|r| r.matches_labels(&ts.labels))
            {
                outcome.points_dropped += (ts.samples.len() + ts.histograms.len()) as u64;
                outcome.changed = true;
                continue;
            }
            if plan.limit == 0 && plan.drop_keys.is_empty() {
                kept.push(ts);
                continue;
            }
            let orig = labels_hash(&ts.labels);
            let before = ts.labels.len();
            if !plan.drop_keys.is_empty() {
                ts.labels.retain(|l| {
                    l.name == "__name__" || !plan.drop_keys.iter().any(|k| k.matches(&l.name))
                });
            }
            let stripped = ts.labels.len() != before;
            outcome.changed |= stripped;
            let counter = prom_is_counter(&name, &metadata, &inferred);
            let info = PointInfo {
                series: if stripped {
                    labels_hash(&ts.labels)
                } else {
                    orig
                },
                orig,
                stripped,
                forced: ts
                    .labels
                    .iter()
                    .any(|l| l.name == OVERFLOW_LABEL && l.value == "true"),
            };
            pending.push(RwPending {
                mtype: if counter {
                    metric_type::SUM
                } else {
                    metric_type::GAUGE
                },
                name,
                limit: plan.limit,
                aggregate: !plan.drop_keys.is_empty(),
                info,
                ts,
            });
        }
        if pending.is_empty() {
            request.timeseries = kept;
            self.report(&outcome, &HashMap::new(), None);
            return outcome;
        }
        let now = self.clock.now_ns();
        let mut st = self.state.lock();
        st.sweep(now, rules.ttl_ns);
        let mut w = Work {
            st: &mut st,
            rules: &rules,
            now,
            outcome,
            overflowed: HashMap::new(),
            out: Outputs::default(),
        };
        let mut dests: Vec<RwDest> = Vec::new();
        let mut dest_index: HashMap<u64, usize> = HashMap::new();
        for p in pending {
            let lim = Limits {
                key: metric_key(&p.name, p.mtype),
                name: &p.name,
                limit: p.limit,
                aggregate: p.aggregate,
            };
            let counter = p.mtype == metric_type::SUM;
            let cum_key = counter.then(|| typed(p.info.orig, p.mtype));
            // Every series of a metric with dropped labels is merged: two cumulative
            // sequences in one Prometheus series would look like resets.
            let route = w.decide(&lim, &p.info, cum_key, false);
            if route == Route::Keep {
                kept.push(p.ts);
                continue;
            }
            let TimeSeries {
                mut labels,
                samples,
                histograms,
                ..
            } = p.ts;
            let overflow = route == Route::Overflow;
            let dest_labels = if overflow {
                overflow_labels(&labels)
            } else {
                labels.sort_by(|a, b| a.name.cmp(&b.name));
                labels.clone()
            };
            let dest = typed(labels_hash(&dest_labels), p.mtype);
            let di = *dest_index.entry(dest).or_insert_with(|| {
                dests.push(RwDest {
                    labels: dest_labels,
                    counter,
                    key: dest,
                    samples: BTreeMap::new(),
                });
                dests.len() - 1
            });
            for s in samples {
                w.count_route(&lim, route);
                // NaN (and the stale marker, a NaN) adds nothing; negative times are invalid.
                let Ok(time) = u64::try_from(s.timestamp) else {
                    continue;
                };
                if s.value.is_nan() {
                    continue;
                }
                let add = match cum_key {
                    Some(key) => {
                        match w.cumulative(&lim, key, overflow, 0, time, Value::Prom(s.value)) {
                            Cum::Delta(_, Value::Prom(d)) => d,
                            // The counter's sample still shows at 0 increase.
                            Cum::Baseline => 0.0,
                            _ => continue,
                        }
                    }
                    None => s.value,
                };
                let content = mix(p.info.orig, mix(time, s.value.to_bits()));
                let slot = dests[di].samples.entry(s.timestamp).or_insert((0.0, 0));
                slot.0 += add;
                slot.1 = slot.1.wrapping_add(content);
            }
            if !histograms.is_empty() {
                // Native histograms stay so the schema still counts them as rejected.
                kept.push(TimeSeries {
                    labels,
                    samples: Vec::new(),
                    exemplars: Vec::new(),
                    histograms,
                });
            }
        }
        for d in dests {
            if let Some(ts) = w.finish_remote_write(d) {
                kept.push(ts);
            }
        }
        request.timeseries = kept;
        let Work {
            outcome,
            overflowed,
            ..
        } = w;
        let gauges = (st.admitted_total, st.state_series());
        drop(st);
        self.report(&outcome, &overflowed, Some(gauges));
        outcome
    }

    fn report(
        &self,
        outcome: &LimitOutcome,
        overflowed: &HashMap<String, u64>,
        gauges: Option<(usize, usize)>,
    ) {
        let t = &self.telemetry;
        for (reason, n) in [
            ("rule", outcome.points_dropped),
            ("state_full", outcome.points_state_full),
            ("duplicate", outcome.points_duplicate),
        ] {
            if n > 0 {
                t.add(
                    DROPPED_METRIC,
                    DROPPED_HELP,
                    &[("reason", reason)],
                    n as f64,
                );
            }
        }
        for (metric, n) in overflowed {
            t.add(
                OVERFLOWED_METRIC,
                OVERFLOWED_HELP,
                &[("metric", metric)],
                *n as f64,
            );
        }
        if outcome.points_reaggregated > 0 {
            t.add(
                REAGGREGATED_METRIC,
                REAGGREGATED_HELP,
                &[],
                outcome.points_reaggregated as f64,
            );
        }
        if let Some((admitted, state)) = gauges {
            t.set(ADMITTED_METRIC, ADMITTED_HELP, &[], admitted as f64);
            t.set(STATE_METRIC, STATE_HELP, &[], state as f64);
        }
    }
}

// =============================================================================================
// Phase 1: rules and hashes (no lock)
// =============================================================================================

#[derive(Debug, Clone)]
struct PointInfo {
    /// The series after `drop_attributes`.
    series: u64,
    /// The series as sent (key of its cumulative state).
    orig: u64,
    stripped: bool,
    /// Already an overflow series.
    forced: bool,
}

/// A metric with points to admit or move: where it is and its points' identities.
struct Pending {
    ri: usize,
    si: usize,
    mi: usize,
    limit: usize,
    aggregate: bool,
    infos: Vec<PointInfo>,
}

fn prepare_request(
    rules: &Rules,
    request: &mut ExportMetricsServiceRequest,
    outcome: &mut LimitOutcome,
) -> Vec<Pending> {
    let mut pendings = Vec::new();
    for (ri, rm) in request.resource_metrics.iter_mut().enumerate() {
        let ResourceMetrics {
            resource,
            scope_metrics,
            ..
        } = rm;
        let res_attrs: &[KeyValue] = resource.as_ref().map_or(&[], |r| &r.attributes);
        let resource_hash = series_id("", res_attrs, "", "", &[]);
        for (si, sm) in scope_metrics.iter_mut().enumerate() {
            let ScopeMetrics { scope, metrics, .. } = sm;
            let origin = Origin {
                resource: res_attrs,
                resource_hash,
                scope_name: scope.as_ref().map_or("", |s| s.name.as_str()),
                scope_version: scope.as_ref().map_or("", |s| s.version.as_str()),
            };
            let mut mi = 0usize;
            metrics.retain_mut(|m| {
                let Metric { name, data, .. } = m;
                // Left for the schema to reject (and report).
                if name.is_empty() {
                    mi += 1;
                    return true;
                }
                let plan = rules.plan(name);
                let n = point_count(data.as_ref()) as u64;
                if !plan.keep {
                    outcome.points_dropped += n;
                    outcome.changed = true;
                    return false;
                }
                if plan.value_rules.is_empty() && plan.drop_keys.is_empty() && plan.limit == 0 {
                    mi += 1;
                    return true;
                }
                let hashes = plan.limit > 0 || !plan.drop_keys.is_empty();
                let mut infos = Vec::new();
                let args = (&plan, &origin, name.as_str(), hashes, &mut infos);
                let (dropped, stripped) = match data.as_mut() {
                    None => (0, false),
                    Some(metric::Data::Gauge(g)) => prepare_points(&mut g.data_points, args),
                    Some(metric::Data::Sum(s)) => prepare_points(&mut s.data_points, args),
                    Some(metric::Data::Histogram(h)) => prepare_points(&mut h.data_points, args),
                    Some(metric::Data::ExponentialHistogram(h)) => {
                        prepare_points(&mut h.data_points, args)
                    }
                    Some(metric::Data::Summary(s)) => prepare_points(&mut s.data_points, args),
                };
                outcome.points_dropped += dropped;
                outcome.changed |= dropped > 0 || stripped;
                if n > 0 && dropped == n {
                    return false;
                }
                if !infos.is_empty() {
                    pendings.push(Pending {
                        ri,
                        si,
                        mi,
                        limit: plan.limit,
                        aggregate: !plan.drop_keys.is_empty(),
                        infos,
                    });
                }
                mi += 1;
                true
            });
        }
    }
    pendings
}

/// Drops points by attribute value, removes attribute keys, and hashes series; returns
/// (points dropped, any key removed).
fn prepare_points<P: DataPoint>(
    points: &mut Vec<P>,
    (plan, origin, metric, hashes, infos): (
        &Plan<'_>,
        &Origin<'_>,
        &str,
        bool,
        &mut Vec<PointInfo>,
    ),
) -> (u64, bool) {
    let before = points.len();
    if !plan.value_rules.is_empty() {
        points.retain(|p| {
            !plan
                .value_rules
                .iter()
                .any(|r| r.matches_otlp(p.attributes(), origin.resource))
        });
    }
    let dropped = (before - points.len()) as u64;
    let mut stripped_any = false;
    for p in points.iter_mut() {
        let orig = if hashes {
            point_hash(origin, metric, p.attributes())
        } else {
            0
        };
        let n = p.attributes().len();
        if !plan.drop_keys.is_empty() {
            p.attributes_mut()
                .retain(|kv| !plan.drop_keys.iter().any(|k| k.matches(&kv.key)));
        }
        let stripped = p.attributes().len() != n;
        stripped_any |= stripped;
        if hashes {
            infos.push(PointInfo {
                series: if stripped {
                    point_hash(origin, metric, p.attributes())
                } else {
                    orig
                },
                orig,
                stripped,
                forced: is_overflow_attrs(p.attributes()),
            });
        }
    }
    (dropped, stripped_any)
}

fn service_kv(resource: &Resource) -> Option<KeyValue> {
    resource
        .attributes
        .iter()
        .find(|kv| {
            kv.key == "service.name"
                && matches!(
                    kv.value.as_ref().and_then(|v| v.value.as_ref()),
                    Some(any_value::Value::StringValue(_))
                )
        })
        .cloned()
}

// =============================================================================================
// Phase 2: admission, state, merging (under the lock)
// =============================================================================================

/// Where output points go: back into a scope of the request, or into a service's overflow
/// resource (appended to the request).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Loc {
    Scope(usize, usize),
    Service(usize),
}

#[derive(Debug)]
struct Header {
    loc: Loc,
    kind: OutKind,
    name: String,
    description: String,
    unit: String,
    metadata: Vec<KeyValue>,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct GroupKey {
    header: usize,
    dest: u64,
    time: u64,
    /// 0 for levels (summed per time whatever their start).
    start: u64,
    layout: u64,
}

/// One output point being built.
#[derive(Debug)]
struct Group {
    header: usize,
    dest: u64,
    attrs: Vec<KeyValue>,
    time: u64,
    start: u64,
    value: Value,
    /// Sum of the contributions' hashes: equal for a retry of the same data.
    content: u64,
    exemplars: Vec<Exemplar>,
}

#[derive(Debug, Default)]
struct Outputs {
    services: Vec<Option<KeyValue>>,
    service_index: HashMap<Option<String>, usize>,
    headers: Vec<Header>,
    header_index: HashMap<(Loc, OutKind, String), usize>,
    groups: Vec<Group>,
    group_index: HashMap<GroupKey, usize>,
}

impl Outputs {
    fn service(&mut self, kv: Option<KeyValue>) -> usize {
        let name = kv.as_ref().and_then(|kv| any_value_text(kv.value.as_ref()));
        *self.service_index.entry(name).or_insert_with(|| {
            self.services.push(kv);
            self.services.len() - 1
        })
    }

    fn header(&mut self, loc: Loc, kind: OutKind, m: &Metric) -> usize {
        let key = (loc, kind, m.name.clone());
        *self.header_index.entry(key).or_insert_with(|| {
            self.headers.push(Header {
                loc,
                kind,
                name: m.name.clone(),
                description: m.description.clone(),
                unit: m.unit.clone(),
                metadata: m.metadata.clone(),
            });
            self.headers.len() - 1
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Admitted, stays as sent.
    Keep,
    /// Admitted after `drop_attributes`: merged into its reduced series.
    Reduce,
    Overflow,
}

struct Limits<'a> {
    key: u64,
    name: &'a str,
    limit: usize,
    aggregate: bool,
}

/// One metric being routed.
struct Ctx<'a> {
    lim: Limits<'a>,
    mtype: i8,
    kind: OutKind,
    mode: Mode,
    /// Headers of [reduced, overflow] output.
    headers: [usize; 2],
    overflow_dest: u64,
}

/// What a cumulative point adds.
enum Cum {
    /// The increase (or the whole value), from this start.
    Delta(u64, Value),
    /// First point of a series that may have been counted before: nothing.
    Baseline,
    /// Duplicate or no room for state: nothing.
    Skip,
}

struct Work<'a> {
    st: &'a mut State,
    rules: &'a Rules,
    now: u64,
    outcome: LimitOutcome,
    /// Points moved to overflow, by `metric` label.
    overflowed: HashMap<String, u64>,
    out: Outputs,
}

impl Work<'_> {
    fn admit(&mut self, lim: &Limits<'_>, series: u64) -> bool {
        let now = self.now;
        let st = &mut *self.st;
        let full = st.metrics.len() >= self.rules.max_metrics;
        let ms = match st.metrics.entry(lim.key) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(_) if full => return false,
            Entry::Vacant(e) => e.insert(MetricState {
                name: lim.name.to_owned(),
                admitted: HashMap::new(),
                horizon: st.untracked_horizon,
                cum_states: 0,
                last_seen: now,
            }),
        };
        ms.last_seen = now;
        if let Some(seen) = ms.admitted.get_mut(&series) {
            *seen = now;
            return true;
        }
        if ms.admitted.len() >= lim.limit {
            return false;
        }
        ms.admitted.insert(series, now);
        st.admitted_total += 1;
        self.outcome.series_admitted += 1;
        true
    }

    /// `cum_key`: the state of a cumulative series, which keeps it in overflow once there.
    /// `keep_unstripped`: with `drop_attributes`, points that lost no key stay as sent.
    fn decide(
        &mut self,
        lim: &Limits<'_>,
        info: &PointInfo,
        cum_key: Option<u64>,
        keep_unstripped: bool,
    ) -> Route {
        if info.forced {
            return Route::Overflow;
        }
        if let Some(key) = cum_key
            && self.st.cumulative.get(&key).is_some_and(|c| c.overflow)
        {
            return Route::Overflow;
        }
        if lim.limit > 0 && !self.admit(lim, info.series) {
            return Route::Overflow;
        }
        if lim.aggregate && (info.stripped || !keep_unstripped) {
            Route::Reduce
        } else {
            Route::Keep
        }
    }

    fn count_route(&mut self, lim: &Limits<'_>, route: Route) {
        match route {
            Route::Keep => return,
            Route::Reduce => self.outcome.points_reaggregated += 1,
            Route::Overflow => {
                self.outcome.points_overflowed += 1;
                // Label values stay bounded: only tracked metrics get their own.
                let label = if self.st.metrics.contains_key(&lim.key) {
                    lim.name
                } else {
                    OTHER_METRIC
                };
                match self.overflowed.get_mut(label) {
                    Some(n) => *n += 1,
                    None => {
                        self.overflowed.insert(label.to_owned(), 1);
                    }
                }
            }
        }
        self.outcome.changed = true;
    }

    /// The increase of a cumulative source series since its last point.
    fn cumulative(
        &mut self,
        lim: &Limits<'_>,
        key: u64,
        overflow: bool,
        start: u64,
        time: u64,
        cur: Value,
    ) -> Cum {
        let now = self.now;
        let st = &mut *self.st;
        if let Some(c) = st.cumulative.get_mut(&key) {
            c.last_seen = now;
            c.overflow = overflow;
            if time <= c.time {
                self.outcome.points_duplicate += 1;
                return Cum::Skip;
            }
            let restarted = start != 0 && c.start != 0 && start != c.start;
            let increase = if restarted {
                None
            } else {
                cur.increase(&c.value)
            };
            let prev_time = c.time;
            c.start = start;
            c.time = time;
            c.value = cur.stored();
            return match increase {
                Some(d) => Cum::Delta(prev_time, d),
                // A reset happened after the previous point, and after the new start.
                None => Cum::Delta(start.max(prev_time), cur),
            };
        }
        if st.state_series() >= self.rules.max_cumulative_series {
            self.outcome.points_state_full += 1;
            return Cum::Skip;
        }
        let horizon = match st.metrics.get_mut(&lim.key) {
            Some(ms) => {
                ms.cum_states += 1;
                ms.horizon
            }
            None => st.untracked_horizon,
        };
        st.cumulative.insert(
            key,
            CumState {
                metric: lim.key,
                last_seen: now,
                overflow,
                start,
                time,
                value: cur.stored(),
            },
        );
        if start != 0 && start > horizon {
            Cum::Delta(start, cur)
        } else {
            Cum::Baseline
        }
    }

    fn route_metric(&mut self, m: &mut Metric, p: &Pending, loc: Loc, svc: usize) {
        let Some(data) = m.data.take() else {
            return;
        };
        let (kind, mode) = OutKind::of(&data);
        let mtype = kind.metric_type();
        let svc_attrs: Vec<KeyValue> = self.out.services[svc].iter().cloned().collect();
        let ctx = Ctx {
            lim: Limits {
                key: metric_key(&m.name, mtype),
                name: &m.name,
                limit: p.limit,
                aggregate: p.aggregate,
            },
            mtype,
            kind,
            mode,
            headers: [
                self.out.header(loc, kind, m),
                self.out.header(Loc::Service(svc), kind, m),
            ],
            overflow_dest: series_id(&m.name, &svc_attrs, OVERFLOW_SCOPE, "", &[overflow_kv()]),
        };
        let data = match data {
            metric::Data::Gauge(mut g) => {
                g.data_points = self.route_points(&ctx, std::mem::take(&mut g.data_points), p);
                metric::Data::Gauge(g)
            }
            metric::Data::Sum(mut s) => {
                s.data_points = self.route_points(&ctx, std::mem::take(&mut s.data_points), p);
                metric::Data::Sum(s)
            }
            metric::Data::Histogram(mut h) => {
                h.data_points = self.route_points(&ctx, std::mem::take(&mut h.data_points), p);
                metric::Data::Histogram(h)
            }
            metric::Data::ExponentialHistogram(mut h) => {
                h.data_points = self.route_points(&ctx, std::mem::take(&mut h.data_points), p);
                metric::Data::ExponentialHistogram(h)
            }
            metric::Data::Summary(mut s) => {
                s.data_points = self.route_points(&ctx, std::mem::take(&mut s.data_points), p);
                metric::Data::Summary(s)
            }
        };
        m.data = Some(data);
    }

    /// Returns the points that stay; the others become contributions to output groups.
    fn route_points<P: DataPoint>(&mut self, ctx: &Ctx<'_>, points: Vec<P>, p: &Pending) -> Vec<P> {
        let stateful = ctx.mode == Mode::Cumulative;
        // Cumulative sums/histograms that lost no key need no state: they stay cumulative
        // (the reduced series may then hold both; queries read temporality per point).
        // Summaries have no delta form, so all of them merge.
        let keep_unstripped = stateful && ctx.kind != OutKind::Summary;
        let mut kept = Vec::with_capacity(points.len());
        for (mut point, info) in points.into_iter().zip(&p.infos) {
            let (start, time) = point.times();
            // Invalid times stay, for the schema to reject and report.
            if !(valid_time(start) && valid_time(time)) {
                kept.push(point);
                continue;
            }
            let cum_key = typed(info.orig, ctx.mtype);
            let route = self.decide(&ctx.lim, info, stateful.then_some(cum_key), keep_unstripped);
            if route == Route::Keep {
                if ctx.lim.aggregate && keep_unstripped {
                    // Its series also gets merged delta points (often with the same start
                    // time, the SDK's): keep their identities apart.
                    let content = mix(info.orig, mix(time, start));
                    let t = self
                        .st
                        .emitted
                        .assign(info.series, ctx.mtype, start, time, 1, content);
                    if t != time {
                        point.set_time(t);
                        self.outcome.changed = true;
                    }
                }
                kept.push(point);
                continue;
            }
            self.count_route(&ctx.lim, route);
            let no_value = point.flags() & NO_RECORDED_VALUE != 0;
            let (attrs, exemplars, value) = point.into_parts();
            let Some(value) = value.filter(|_| !no_value) else {
                continue;
            };
            let overflow = route == Route::Overflow;
            let target = Target {
                header: ctx.headers[usize::from(overflow)],
                dest: if overflow {
                    ctx.overflow_dest
                } else {
                    info.series
                },
                overflow,
            };
            let (start, value) = match ctx.mode {
                Mode::Level | Mode::Delta => (start, value),
                Mode::Cumulative => {
                    match self.cumulative(&ctx.lim, cum_key, overflow, start, time, value) {
                        Cum::Delta(s, v) => (s, v),
                        Cum::Baseline | Cum::Skip => continue,
                    }
                }
            };
            let level = ctx.mode == Mode::Level || ctx.kind == OutKind::Summary;
            self.add(
                &target,
                &attrs,
                Contribution {
                    time,
                    start,
                    level,
                    content: mix(info.orig, mix(mix(time, start), value.fingerprint())),
                    value,
                    exemplars: valid_exemplars(exemplars),
                },
            );
        }
        kept
    }

    fn add(&mut self, target: &Target, attrs: &[KeyValue], c: Contribution) {
        let key = GroupKey {
            header: target.header,
            dest: target.dest,
            time: c.time,
            start: if c.level { 0 } else { c.start },
            layout: c.value.layout(),
        };
        if let Some(&i) = self.out.group_index.get(&key) {
            let g = &mut self.out.groups[i];
            g.value.merge(c.value);
            g.start = g.start.min(c.start);
            g.content = g.content.wrapping_add(c.content);
            let room = MAX_EXEMPLARS.saturating_sub(g.exemplars.len());
            g.exemplars.extend(c.exemplars.into_iter().take(room));
            return;
        }
        self.out.group_index.insert(key, self.out.groups.len());
        self.out.groups.push(Group {
            header: target.header,
            dest: target.dest,
            attrs: if target.overflow {
                vec![overflow_kv()]
            } else {
                attrs.to_vec()
            },
            time: c.time,
            start: c.start,
            value: c.value,
            content: c.content,
            exemplars: c.exemplars,
        });
    }

    /// Writes the groups as points: unique identities, running totals for summaries.
    fn finish_otlp(&mut self, request: &mut ExportMetricsServiceRequest) {
        let Outputs {
            services,
            headers,
            groups,
            ..
        } = std::mem::take(&mut self.out);
        let mut metrics: Vec<Metric> = headers.iter().map(|h| h.kind.empty_metric(h)).collect();
        let mut summaries: Vec<(u64, Vec<Group>)> = Vec::new();
        let mut summary_index: HashMap<(usize, u64), usize> = HashMap::new();
        for g in groups {
            let Some(h) = headers.get(g.header) else {
                continue;
            };
            if h.kind == OutKind::Summary {
                let i = *summary_index.entry((g.header, g.dest)).or_insert_with(|| {
                    summaries.push((g.dest, Vec::new()));
                    summaries.len() - 1
                });
                summaries[i].1.push(g);
                continue;
            }
            let t =
                self.st
                    .emitted
                    .assign(g.dest, h.kind.metric_type(), g.start, g.time, 1, g.content);
            push_point(&mut metrics[g.header], g, t);
        }
        for (dest, mut gs) in summaries {
            gs.sort_by_key(|g| g.time);
            let Some(header) = gs.first().map(|g| g.header) else {
                continue;
            };
            let first_time = gs[0].time;
            let Some(running) = self.running(
                typed(dest, metric_type::SUMMARY),
                first_time,
                Value::Summary(0, 0.0),
                gs.len(),
            ) else {
                continue;
            };
            for g in gs {
                running.total.merge(g.value);
                let t = if g.time > running.last_time {
                    g.time
                } else {
                    running.last_time + 1
                };
                running.last_time = t;
                let Value::Summary(count, sum) = running.total else {
                    continue;
                };
                if let Some(metric::Data::Summary(s)) = metrics[header].data.as_mut() {
                    s.data_points.push(SummaryDataPoint {
                        attributes: g.attrs,
                        start_time_unix_nano: running.start,
                        time_unix_nano: t,
                        count,
                        sum,
                        quantile_values: Vec::new(),
                        flags: 0,
                    });
                }
            }
        }
        let mut by_service: Vec<Vec<Metric>> = services.iter().map(|_| Vec::new()).collect();
        for (h, m) in headers.iter().zip(metrics) {
            if point_count(m.data.as_ref()) == 0 {
                continue;
            }
            match h.loc {
                Loc::Scope(ri, si) => {
                    if let Some(sm) = request
                        .resource_metrics
                        .get_mut(ri)
                        .and_then(|rm| rm.scope_metrics.get_mut(si))
                    {
                        sm.metrics.push(m);
                    }
                }
                Loc::Service(i) => by_service[i].push(m),
            }
        }
        for (svc, metrics) in services.into_iter().zip(by_service) {
            if metrics.is_empty() {
                continue;
            }
            request.resource_metrics.push(ResourceMetrics {
                resource: Some(Resource {
                    attributes: svc.into_iter().collect(),
                    ..Default::default()
                }),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(InstrumentationScope {
                        name: OVERFLOW_SCOPE.to_owned(),
                        ..Default::default()
                    }),
                    metrics,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            });
        }
    }

    /// The running total of a target, created at `first_time - 1` if new; `None` (and the
    /// `points` counted) when there is no room.
    fn running(
        &mut self,
        key: u64,
        first_time: u64,
        zero: Value,
        points: usize,
    ) -> Option<&mut Running> {
        let now = self.now;
        let full = self.st.state_series() >= self.rules.max_cumulative_series;
        match self.st.running.entry(key) {
            Entry::Occupied(e) => {
                let r = e.into_mut();
                r.last_seen = now;
                Some(r)
            }
            Entry::Vacant(_) if full => {
                self.outcome.points_state_full += points as u64;
                None
            }
            Entry::Vacant(e) => Some(e.insert(Running {
                last_seen: now,
                start: first_time.saturating_sub(1),
                last_time: 0,
                total: zero,
            })),
        }
    }

    /// One remote-write target as a series: gauges summed per time (identities kept
    /// unique), counters as a running total of the increases.
    fn finish_remote_write(&mut self, d: RwDest) -> Option<TimeSeries> {
        let mut samples = Vec::with_capacity(d.samples.len() + 1);
        if d.counter {
            let first = *d.samples.keys().next()?;
            let first = u64::try_from(first).unwrap_or(0);
            let points = d.samples.len();
            let running = self.running(d.key, first, Value::Prom(0.0), points)?;
            for (ts, (add, _)) in d.samples {
                let ts = u64::try_from(ts).unwrap_or(0);
                // A new total starts with a 0 sample so the first increase is seen by rate().
                if running.last_time == 0 && add > 0.0 {
                    running.last_time = ts.saturating_sub(1);
                    samples.push(Sample {
                        value: 0.0,
                        timestamp: i64::try_from(running.last_time).unwrap_or(i64::MAX),
                    });
                }
                running.total.merge(Value::Prom(add));
                let t = if ts > running.last_time {
                    ts
                } else {
                    running.last_time + 1
                };
                running.last_time = t;
                let Value::Prom(total) = running.total else {
                    continue;
                };
                samples.push(Sample {
                    value: total,
                    timestamp: i64::try_from(t).unwrap_or(i64::MAX),
                });
            }
        } else {
            for (ts, (value, content)) in d.samples {
                let ts = u64::try_from(ts).unwrap_or(0);
                let t = self
                    .st
                    .emitted
                    .assign(d.key, metric_type::GAUGE, 0, ts, 1, content);
                samples.push(Sample {
                    value,
                    timestamp: i64::try_from(t).unwrap_or(i64::MAX),
                });
            }
            samples.sort_by_key(|s| s.timestamp);
        }
        if samples.is_empty() {
            return None;
        }
        Some(TimeSeries {
            labels: d.labels,
            samples,
            exemplars: Vec::new(),
            histograms: Vec::new(),
        })
    }
}

struct Target {
    header: usize,
    dest: u64,
    overflow: bool,
}

struct Contribution {
    time: u64,
    start: u64,
    level: bool,
    content: u64,
    value: Value,
    exemplars: Vec<Exemplar>,
}

fn push_point(m: &mut Metric, g: Group, t: u64) {
    let Group {
        attrs,
        start,
        value,
        exemplars,
        ..
    } = g;
    match (m.data.as_mut(), value) {
        (Some(metric::Data::Gauge(x)), Value::Num(v)) => {
            x.data_points.push(number(attrs, start, t, v, exemplars))
        }
        (Some(metric::Data::Sum(x)), Value::Num(v)) => {
            x.data_points.push(number(attrs, start, t, v, exemplars))
        }
        (Some(metric::Data::Histogram(x)), Value::Hist(h)) => {
            x.data_points.push(HistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: t,
                count: h.count,
                sum: h.sum,
                bucket_counts: h.buckets,
                explicit_bounds: h.bounds,
                exemplars,
                flags: 0,
                min: h.min,
                max: h.max,
            })
        }
        (Some(metric::Data::ExponentialHistogram(x)), Value::Exp(e)) => {
            x.data_points.push(ExponentialHistogramDataPoint {
                attributes: attrs,
                start_time_unix_nano: start,
                time_unix_nano: t,
                count: e.count,
                sum: e.sum,
                scale: e.scale,
                zero_count: e.zero_count,
                positive: Some(e.positive.to_proto()),
                negative: Some(e.negative.to_proto()),
                flags: 0,
                exemplars,
                min: e.min,
                max: e.max,
                zero_threshold: e.zero_threshold,
            })
        }
        _ => {}
    }
}

fn number(
    attrs: Vec<KeyValue>,
    start: u64,
    time: u64,
    v: Num,
    exemplars: Vec<Exemplar>,
) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: time,
        exemplars,
        flags: 0,
        value: Some(v.to_value()),
    }
}

// =============================================================================================
// Remote write
// =============================================================================================

struct RwPending {
    ts: TimeSeries,
    name: String,
    mtype: i8,
    limit: usize,
    aggregate: bool,
    info: PointInfo,
}

/// One remote-write target series: samples by time (value, contributions' hash).
struct RwDest {
    labels: Vec<Label>,
    counter: bool,
    key: u64,
    samples: BTreeMap<i64, (f64, u64)>,
}

fn prom_name(ts: &TimeSeries) -> &str {
    ts.labels
        .iter()
        .find(|l| l.name == "__name__")
        .map_or("", |l| l.value.as_str())
}

/// Keeps what makes an overflow sample meaningful: name, job (the service), and the bucket
/// or quantile it belongs to.
fn overflow_labels(labels: &[Label]) -> Vec<Label> {
    let mut out: Vec<Label> = labels
        .iter()
        .filter(|l| matches!(l.name.as_str(), "__name__" | "job" | "le" | "quantile"))
        .cloned()
        .collect();
    out.push(Label {
        name: OVERFLOW_LABEL.to_owned(),
        value: "true".to_owned(),
    });
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Families this request shows to be classic histograms or summaries (as the schema does).
fn inferred_families(series: &[TimeSeries]) -> HashSet<String> {
    let mut families = HashSet::new();
    for ts in series {
        let name = prom_name(ts);
        let has = |label: &str| ts.labels.iter().any(|l| l.name == label);
        if let Some(family) = name.strip_suffix("_bucket")
            && has("le")
        {
            families.insert(family.to_owned());
        } else if has("quantile") {
            families.insert(name.to_owned());
        }
    }
    families
}

/// Whether the schema will store this series as a counter (a monotonic cumulative sum);
/// the same rules as `weft_schemas::prometheus`.
fn prom_is_counter(
    name: &str,
    metadata: &HashMap<String, i32>,
    inferred: &HashSet<String>,
) -> bool {
    if let Some(t) = metadata.get(name) {
        return *t == MetricType::Counter as i32;
    }
    for suffix in ["_total", "_bucket", "_count", "_sum", "_created"] {
        let Some(family) = name.strip_suffix(suffix) else {
            continue;
        };
        if let Some(t) = metadata.get(family) {
            return match MetricType::try_from(*t) {
                Ok(MetricType::Counter) => suffix == "_total",
                Ok(MetricType::Histogram) | Ok(MetricType::Summary) => {
                    matches!(suffix, "_bucket" | "_count" | "_sum")
                }
                _ => false,
            };
        }
    }
    let histogram_part = ["_bucket", "_count", "_sum"].iter().any(|suffix| {
        name.strip_suffix(suffix)
            .is_some_and(|f| inferred.contains(f))
    });
    name.ends_with("_total") || histogram_part
}

#[cfg(test)]
mod tests;
