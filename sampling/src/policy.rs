//! Tail-sampling policies: the `[[sampling.tail.policies]]` configuration, its validation
//! ([`PolicySet::compile`]) and the decision for one whole trace ([`PolicySet::evaluate`]).
//!
//! Every policy evaluates to a rejection *threshold* on the trace's shared 56-bit
//! randomness `R`, never to a yes/no coin flip, and the trace is kept iff `R >= T`:
//!
//! ```text
//!  deterministic (status_error, latency, attributes, span_count)  match → 0, else → 2^56
//!  probabilistic { ratio }                                         2^56 - ratio·2^56
//!  rate_limit, priority shares                                     keep 2^-k of the traffic
//!  and → max of the children    or → min    not → 0 iff the child gave 2^56
//!  the set: min over the top-level policies (any policy keeps the trace)
//! ```
//!
//! Why thresholds:
//! - Consistency. `R` comes from the trace ID (or `rv`), so every replica and every stage
//!   (head sampling, then tail) that applies the same threshold makes the same decision,
//!   and stages nest: a trace kept at `T1` is kept at every `T2 <= T1`.
//! - Exact adjusted counts. Since policies never look at `R`, the threshold is a function of
//!   the trace's features alone, so `1 / P(kept | features)` is exactly
//!   `2^56 / (2^56 - T)`: the `sample_weight` of the stored spans is unbiased.
//! - Rate limits keep a power-of-two fraction `2^-k` of what they see, with `k` chosen from
//!   the measured rate. Replicas seeing the same load pick the same `k` and so keep the same
//!   traces, where a token bucket would keep whichever traces came first on each replica.
//!
//! Policies are evaluated in order and stop early once the result cannot change (the set
//! and `or` at "keep all", `and` at "keep none"), so a rate limit counts only the traces
//! that reach it: in `and = [filter, rate_limit]` it limits the traces the filter matched.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use parking_lot::Mutex;
use regex::RegexSet;
use serde::{Deserialize, Serialize};
use weft_schemas::sampling::{MAX_ADJUSTED_COUNT, Randomness, Threshold};

use super::{HeldSpan, UNKNOWN_SERVICE};
use crate::Error;

/// Completed one-second windows a rate limit averages over.
const RATE_WINDOW_SECONDS: u64 = 4;
/// Services a per-service rate limit tracks separately; the rest share [`OTHER_SERVICES`].
const MAX_RATE_SERVICES: usize = 10_000;
/// The shared bucket of services beyond [`MAX_RATE_SERVICES`].
const OTHER_SERVICES: &str = "__other__";

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// One top-level policy: a name (used in metrics and in [`Verdict::policy`]) and what it
/// keeps. In TOML, one `[[sampling.tail.policies]]` table with `name`, `type` and the
/// fields of that type; unknown keys are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamedPolicy {
    pub name: String,
    // Unknown keys are rejected by `PolicyConfig` (`deny_unknown_fields` on the enum, which
    // receives every key but `name`); serde cannot deny them here next to `flatten`.
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

impl NamedPolicy {
    pub fn new(name: impl Into<String>, policy: PolicyConfig) -> Self {
        Self {
            name: name.into(),
            policy,
        }
    }
}

/// A child of `and`, `or` and `not`; the name is optional and only appears in errors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChildPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

/// A child of `priority`, with its share of the priority's `traces_per_second`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrioritizedPolicy {
    /// Percent (0-100] of the priority's `traces_per_second`; shares sum to at most 100.
    pub share: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(flatten)]
    pub policy: PolicyConfig,
}

/// What a policy keeps, by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicyConfig {
    /// Traces with a span whose status code is ERROR.
    StatusError {},
    /// Slow traces: the trace lasts longer than `threshold_ms` (latest end minus earliest
    /// start), or a span of a service listed in `services` lasts longer than that service's
    /// milliseconds. At least one of the two is required.
    Latency {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        threshold_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        services: BTreeMap<String, u64>,
    },
    /// Traces in which a span or resource attribute `key` has a string value in `values`
    /// (with `regex`: matching one of the regular expressions anywhere in the value; anchor
    /// them with `^…$`). With `invert`: traces in which no span or resource has one.
    StringAttribute {
        key: String,
        values: Vec<String>,
        #[serde(default, skip_serializing_if = "is_false")]
        regex: bool,
        #[serde(default, skip_serializing_if = "is_false")]
        invert: bool,
    },
    /// Traces in which a span or resource attribute `key` is an int or double within
    /// `[min, max]` (either bound may be left out, not both).
    NumericAttribute {
        key: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<f64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<f64>,
    },
    /// Traces in which a span or resource has attribute `key` (any value).
    AttributeExists { key: String },
    /// A fraction `ratio` in [0, 1] of traces, the same ones on every replica.
    Probabilistic { ratio: f64 },
    /// At most `traces_per_second` of the traces reaching this policy on this node, on
    /// average (per service of the trace's root span with `per_service`). Keeps a fraction
    /// `2^-k` of them, the largest power of two that fits: once the rate exceeds the limit
    /// the kept rate is within (limit/2, limit].
    RateLimit {
        traces_per_second: f64,
        #[serde(default, skip_serializing_if = "is_false")]
        per_service: bool,
    },
    /// Traces with at least `min` and at most `max` spans (either may be left out, not both).
    SpanCount {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        min: Option<usize>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max: Option<usize>,
    },
    /// Traces every child keeps (the strictest threshold).
    And { policies: Vec<ChildPolicy> },
    /// Traces any child keeps (the most lenient threshold).
    Or { policies: Vec<ChildPolicy> },
    /// Traces the child never keeps (its probabilities are not inverted: a child that keeps
    /// a trace with any probability makes `not` drop it).
    Not { policy: Box<ChildPolicy> },
    /// A budget of `traces_per_second` split by priority: the first child that may keep a
    /// trace decides, rate-limited to its `share` percent of the budget.
    Priority {
        traces_per_second: f64,
        policies: Vec<PrioritizedPolicy>,
    },
}

fn is_false(b: &bool) -> bool {
    !b
}

/// The default set used when `sampling.tail.policies` is empty: every error, every trace
/// over 1 s, and 10 % of the rest.
pub fn default_policies() -> Vec<NamedPolicy> {
    vec![
        NamedPolicy::new("errors", PolicyConfig::StatusError {}),
        NamedPolicy::new(
            "slow",
            PolicyConfig::Latency {
                threshold_ms: Some(1000),
                services: BTreeMap::new(),
            },
        ),
        NamedPolicy::new("baseline", PolicyConfig::Probabilistic { ratio: 0.1 }),
    ]
}

// ---------------------------------------------------------------------------------------
// Evaluation
// ---------------------------------------------------------------------------------------

/// What the policies decided for one trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// Keep the trace iff its randomness >= threshold. ALWAYS keeps, NEVER drops.
    pub threshold: Threshold,
    /// The top-level policy that gave the lowest threshold (None: no policy kept it).
    pub policy: Option<String>,
}

/// Compiled policies, with the state rate limits need.
#[derive(Debug)]
pub struct PolicySet {
    policies: Vec<(String, Compiled)>,
}

impl PolicySet {
    /// Validates and compiles policies (regexes, lookup sets, rate-limit state). The error
    /// names the policy, e.g. `policy "slow": threshold_ms must be > 0`.
    pub fn compile(policies: &[NamedPolicy]) -> Result<PolicySet, Error> {
        if policies.is_empty() {
            return Err(Error::NoPolicies);
        }
        let mut names = HashSet::new();
        let mut compiled = Vec::with_capacity(policies.len());
        for (i, p) in policies.iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(Error::config(
                    format!("policies[{i}]"),
                    "name must not be empty",
                ));
            }
            let path = format!("policy {:?}", p.name);
            if !names.insert(p.name.as_str()) {
                return Err(Error::config(path, "name is used by another policy"));
            }
            compiled.push((p.name.clone(), Compiled::new(&p.policy, &path)?));
        }
        Ok(PolicySet { policies: compiled })
    }

    /// The threshold of one trace: the lowest over the top-level policies, evaluated in
    /// order until one keeps the trace for certain. The caller keeps the trace iff
    /// `verdict.threshold.keeps(randomness)`; the policies themselves never look at the
    /// randomness, which is what keeps the adjusted count exact. `now` drives the rate
    /// estimates of rate limits.
    pub fn evaluate(&self, spans: &[HeldSpan], _randomness: Randomness, now: Instant) -> Verdict {
        let mut threshold = Threshold::NEVER;
        let mut policy = None;
        for (name, p) in &self.policies {
            let t = p.evaluate(spans, now);
            // Strictly lower: the first policy wins ties.
            if t < threshold {
                threshold = t;
                policy = Some(name);
            }
            if threshold == Threshold::ALWAYS {
                break;
            }
        }
        Verdict {
            threshold,
            policy: policy.cloned(),
        }
    }

    pub fn policy_names(&self) -> Vec<String> {
        self.policies.iter().map(|(n, _)| n.clone()).collect()
    }
}

#[derive(Debug)]
enum Compiled {
    StatusError,
    Latency(Latency),
    StringAttribute {
        key: String,
        matcher: StringMatcher,
        invert: bool,
    },
    NumericAttribute {
        key: String,
        min: f64,
        max: f64,
    },
    AttributeExists {
        key: String,
    },
    Probabilistic(Threshold),
    RateLimit(RateLimit),
    SpanCount {
        min: usize,
        max: usize,
    },
    And(Vec<Compiled>),
    Or(Vec<Compiled>),
    Not(Box<Compiled>),
    /// Children in priority order, each with the rate limit of its share.
    Priority(Vec<(Compiled, RateLimit)>),
}

#[derive(Debug)]
struct Latency {
    trace_nanos: Option<u64>,
    service_nanos: HashMap<String, u64>,
}

#[derive(Debug)]
enum StringMatcher {
    Exact(HashSet<String>),
    Regex(RegexSet),
}

impl StringMatcher {
    fn matches(&self, s: &str) -> bool {
        match self {
            StringMatcher::Exact(set) => set.contains(s),
            StringMatcher::Regex(set) => set.is_match(s),
        }
    }
}

fn matched(m: bool) -> Threshold {
    if m {
        Threshold::ALWAYS
    } else {
        Threshold::NEVER
    }
}

impl Compiled {
    /// Validates `config`; errors start with `path` (`policy "x"`, `policy "x", policies[1]`).
    fn new(config: &PolicyConfig, path: &str) -> Result<Compiled, Error> {
        let err = |msg: String| Err(Error::config(path, msg));
        let check_key = |key: &str| {
            if key.is_empty() {
                Err(Error::config(path, "key must not be empty"))
            } else {
                Ok(key.to_owned())
            }
        };
        Ok(match config {
            PolicyConfig::StatusError {} => Compiled::StatusError,
            PolicyConfig::Latency {
                threshold_ms,
                services,
            } => {
                if threshold_ms.is_none() && services.is_empty() {
                    return err("latency needs threshold_ms or services".to_owned());
                }
                if *threshold_ms == Some(0) {
                    return err("threshold_ms must be > 0".to_owned());
                }
                if let Some((service, _)) = services.iter().find(|(_, ms)| **ms == 0) {
                    return err(format!("services.{service} must be > 0"));
                }
                let nanos = |ms: u64| ms.saturating_mul(1_000_000);
                Compiled::Latency(Latency {
                    trace_nanos: threshold_ms.map(nanos),
                    service_nanos: services
                        .iter()
                        .map(|(s, ms)| (s.clone(), nanos(*ms)))
                        .collect(),
                })
            }
            PolicyConfig::StringAttribute {
                key,
                values,
                regex,
                invert,
            } => {
                let key = check_key(key)?;
                if values.is_empty() {
                    return err("values must not be empty".to_owned());
                }
                let matcher = if *regex {
                    // One by one first, so the error names the bad expression.
                    for v in values {
                        if let Err(e) = regex::Regex::new(v) {
                            return err(format!("invalid regex {v:?}: {e}"));
                        }
                    }
                    match RegexSet::new(values) {
                        Ok(set) => StringMatcher::Regex(set),
                        Err(e) => return err(format!("invalid regex: {e}")),
                    }
                } else {
                    StringMatcher::Exact(values.iter().cloned().collect())
                };
                Compiled::StringAttribute {
                    key,
                    matcher,
                    invert: *invert,
                }
            }
            PolicyConfig::NumericAttribute { key, min, max } => {
                let key = check_key(key)?;
                if min.is_none() && max.is_none() {
                    return err("numeric_attribute needs min or max".to_owned());
                }
                let (lo, hi) = (
                    min.unwrap_or(f64::NEG_INFINITY),
                    max.unwrap_or(f64::INFINITY),
                );
                if lo.is_nan() || hi.is_nan() {
                    return err("min and max must be numbers".to_owned());
                }
                if lo > hi {
                    return err(format!("min ({lo}) must be <= max ({hi})"));
                }
                Compiled::NumericAttribute {
                    key,
                    min: lo,
                    max: hi,
                }
            }
            PolicyConfig::AttributeExists { key } => Compiled::AttributeExists {
                key: check_key(key)?,
            },
            PolicyConfig::Probabilistic { ratio } => {
                if !(0.0..=1.0).contains(ratio) {
                    return err(format!("ratio {ratio} is outside [0, 1]"));
                }
                match Threshold::from_ratio(*ratio) {
                    Ok(t) => Compiled::Probabilistic(t),
                    Err(_) => {
                        return err(format!(
                            "ratio {ratio} is below 2^-56 (use 0 to keep nothing)"
                        ));
                    }
                }
            }
            PolicyConfig::RateLimit {
                traces_per_second,
                per_service,
            } => Compiled::RateLimit(RateLimit::new(
                check_rate(*traces_per_second, path)?,
                *per_service,
            )),
            PolicyConfig::SpanCount { min, max } => {
                if min.is_none() && max.is_none() {
                    return err("span_count needs min or max".to_owned());
                }
                let (lo, hi) = (min.unwrap_or(0), max.unwrap_or(usize::MAX));
                if lo > hi {
                    return err(format!("min ({lo}) must be <= max ({hi})"));
                }
                Compiled::SpanCount { min: lo, max: hi }
            }
            PolicyConfig::And { policies } | PolicyConfig::Or { policies } => {
                if policies.is_empty() {
                    return err("policies must not be empty".to_owned());
                }
                let children = policies
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Compiled::new(&c.policy, &child_path(path, i, &c.name)))
                    .collect::<Result<Vec<_>, _>>()?;
                if matches!(config, PolicyConfig::And { .. }) {
                    Compiled::And(children)
                } else {
                    Compiled::Or(children)
                }
            }
            PolicyConfig::Not { policy } => {
                let path = match &policy.name {
                    Some(name) => format!("{path}, policy {name:?}"),
                    None => format!("{path}, policy"),
                };
                Compiled::Not(Box::new(Compiled::new(&policy.policy, &path)?))
            }
            PolicyConfig::Priority {
                traces_per_second,
                policies,
            } => {
                let budget = check_rate(*traces_per_second, path)?;
                if policies.is_empty() {
                    return err("policies must not be empty".to_owned());
                }
                let mut total = 0.0;
                let mut children = Vec::with_capacity(policies.len());
                for (i, c) in policies.iter().enumerate() {
                    let child = child_path(path, i, &c.name);
                    if !(c.share > 0.0 && c.share <= 100.0) {
                        return Err(Error::config(
                            child,
                            format!("share {} is outside (0, 100]", c.share),
                        ));
                    }
                    total += c.share;
                    children.push((
                        Compiled::new(&c.policy, &child)?,
                        RateLimit::new(budget * c.share / 100.0, false),
                    ));
                }
                // Tolerance for decimal shares such as 33.3 + 33.3 + 33.4.
                if total > 100.0 + 1e-9 {
                    return err(format!("shares sum to {total}, more than 100"));
                }
                Compiled::Priority(children)
            }
        })
    }

    fn evaluate(&self, spans: &[HeldSpan], now: Instant) -> Threshold {
        match self {
            Compiled::StatusError => matched(spans.iter().any(|s| {
                s.span
                    .status
                    .as_ref()
                    .is_some_and(|st| st.code == StatusCode::Error as i32)
            })),
            Compiled::Latency(l) => matched(l.matches(spans)),
            Compiled::StringAttribute {
                key,
                matcher,
                invert,
            } => {
                let found = any_attribute(
                    spans,
                    key,
                    |v| matches!(v, Some(Value::StringValue(s)) if matcher.matches(s)),
                );
                matched(found != *invert)
            }
            Compiled::NumericAttribute { key, min, max } => {
                matched(any_attribute(spans, key, |v| {
                    let x = match v {
                        Some(Value::IntValue(i)) => *i as f64,
                        Some(Value::DoubleValue(d)) => *d,
                        _ => return false,
                    };
                    *min <= x && x <= *max
                }))
            }
            Compiled::AttributeExists { key } => matched(any_attribute(spans, key, |_| true)),
            Compiled::Probabilistic(t) => *t,
            Compiled::RateLimit(limit) => limit.threshold(spans, now),
            Compiled::SpanCount { min, max } => matched((*min..=*max).contains(&spans.len())),
            Compiled::And(children) => {
                let mut t = Threshold::ALWAYS;
                for c in children {
                    t = t.max(c.evaluate(spans, now));
                    if t == Threshold::NEVER {
                        break;
                    }
                }
                t
            }
            Compiled::Or(children) => {
                let mut t = Threshold::NEVER;
                for c in children {
                    t = t.min(c.evaluate(spans, now));
                    if t == Threshold::ALWAYS {
                        break;
                    }
                }
                t
            }
            Compiled::Not(child) => matched(child.evaluate(spans, now) == Threshold::NEVER),
            Compiled::Priority(children) => {
                for (child, share) in children {
                    let t = child.evaluate(spans, now);
                    if t != Threshold::NEVER {
                        // Both must keep it: the share's limit counts only the traces this
                        // child decides, so lower priorities cannot eat its budget.
                        return t.max(share.threshold(spans, now));
                    }
                }
                Threshold::NEVER
            }
        }
    }
}

fn child_path(path: &str, i: usize, name: &Option<String>) -> String {
    match name {
        Some(name) => format!("{path}, policies[{i}] {name:?}"),
        None => format!("{path}, policies[{i}]"),
    }
}

fn check_rate(traces_per_second: f64, path: &str) -> Result<f64, Error> {
    if traces_per_second.is_finite() && traces_per_second > 0.0 {
        Ok(traces_per_second)
    } else {
        Err(Error::config(
            path,
            format!("traces_per_second must be > 0 (got {traces_per_second})"),
        ))
    }
}

impl Latency {
    fn matches(&self, spans: &[HeldSpan]) -> bool {
        let mut first_start = u64::MAX;
        let mut last_end = 0;
        // Spans of one export share their resource: look its service up once.
        let mut last_resource: *const ResourceSpans = std::ptr::null();
        let mut service_limit = None;
        for s in spans {
            let (start, end) = (s.span.start_time_unix_nano, s.span.end_time_unix_nano);
            // Unset or inverted timestamps say nothing about duration.
            if start == 0 || end < start {
                continue;
            }
            first_start = first_start.min(start);
            last_end = last_end.max(end);
            if !self.service_nanos.is_empty() {
                let resource = Arc::as_ptr(&s.resource);
                if resource != last_resource {
                    last_resource = resource;
                    service_limit = self.service_nanos.get(s.service()).copied();
                }
                if service_limit.is_some_and(|limit| end - start > limit) {
                    return true;
                }
            }
        }
        self.trace_nanos
            .is_some_and(|limit| last_end > first_start && last_end - first_start > limit)
    }
}

/// Whether `pred` holds for the value of attribute `key` of some span or its resource.
fn any_attribute(
    spans: &[HeldSpan],
    key: &str,
    mut pred: impl FnMut(Option<&Value>) -> bool,
) -> bool {
    let mut check = |attributes: &[KeyValue]| {
        attributes
            .iter()
            .any(|kv| kv.key == key && pred(kv.value.as_ref().and_then(|v| v.value.as_ref())))
    };
    // Spans of one export share their resource: check its attributes once.
    let mut last_resource: *const ResourceSpans = std::ptr::null();
    for s in spans {
        if check(&s.span.attributes) {
            return true;
        }
        let resource = Arc::as_ptr(&s.resource);
        if resource != last_resource {
            last_resource = resource;
            if let Some(Resource { attributes, .. }) = &s.resource.resource
                && check(attributes)
            {
                return true;
            }
        }
    }
    false
}

/// The service a per-service rate limit charges: the root span's, else the earliest span's.
fn trace_service(spans: &[HeldSpan]) -> &str {
    spans
        .iter()
        .find(|s| s.span.parent_span_id.iter().all(|b| *b == 0))
        .or_else(|| spans.iter().min_by_key(|s| s.span.start_time_unix_nano))
        .map_or(UNKNOWN_SERVICE, HeldSpan::service)
}

// ---------------------------------------------------------------------------------------
// Rate limits
// ---------------------------------------------------------------------------------------

/// Keeps a power-of-two fraction of the traces that reach it.
#[derive(Debug)]
struct RateLimit {
    traces_per_second: f64,
    per_service: bool,
    state: Mutex<RateState>,
}

#[derive(Debug, Default)]
struct RateState {
    /// Second 0 of the windows: the first trace seen. Windows need not align across
    /// replicas: `k` only changes when the rate crosses a power of two.
    epoch: Option<Instant>,
    all: RateEstimator,
    services: HashMap<String, RateEstimator>,
    /// The second of the last sweep of idle services (at most one sweep a second).
    swept_at: Option<u64>,
}

impl RateLimit {
    fn new(traces_per_second: f64, per_service: bool) -> Self {
        Self {
            traces_per_second,
            per_service,
            state: Mutex::new(RateState::default()),
        }
    }

    /// Counts this trace and returns the threshold that keeps `2^-k` of the traffic.
    fn threshold(&self, spans: &[HeldSpan], now: Instant) -> Threshold {
        let rate = {
            let mut state = self.state.lock();
            let epoch = *state.epoch.get_or_insert(now);
            let second = now.saturating_duration_since(epoch).as_secs();
            if self.per_service {
                state.service(trace_service(spans), second).record(second)
            } else {
                state.all.record(second)
            }
        };
        power_of_two_threshold(rate, self.traces_per_second)
    }
}

impl RateState {
    fn service(&mut self, service: &str, second: u64) -> &mut RateEstimator {
        let full = |s: &Self| s.services.len() >= MAX_RATE_SERVICES;
        if full(self) && !self.services.contains_key(service) && self.swept_at != Some(second) {
            // Forget services that sent nothing for a whole window before giving up on one.
            self.swept_at = Some(second);
            self.services
                .retain(|_, e| e.current_second + RATE_WINDOW_SECONDS >= second);
        }
        let key = if full(self) && !self.services.contains_key(service) {
            OTHER_SERVICES
        } else {
            service
        };
        if !self.services.contains_key(key) {
            self.services
                .insert(key.to_owned(), RateEstimator::starting_at(second));
        }
        self.services
            .get_mut(key)
            .expect("the estimator was inserted above")
    }
}

/// Traces per second over the last [`RATE_WINDOW_SECONDS`] completed seconds.
#[derive(Debug, Default)]
struct RateEstimator {
    first_second: u64,
    current_second: u64,
    /// Counts by `second % len`: the current second and the completed ones.
    counts: [u64; RATE_WINDOW_SECONDS as usize + 1],
}

impl RateEstimator {
    fn starting_at(second: u64) -> Self {
        Self {
            first_second: second,
            current_second: second,
            ..Self::default()
        }
    }

    fn slot(second: u64) -> usize {
        (second % (RATE_WINDOW_SECONDS + 1)) as usize
    }

    /// Counts one trace at `second` and returns the estimated rate, including it.
    fn record(&mut self, second: u64) -> f64 {
        if second > self.current_second {
            let gap = (second - self.current_second).min(RATE_WINDOW_SECONDS + 1);
            for s in second + 1 - gap..=second {
                self.counts[Self::slot(s)] = 0;
            }
            self.current_second = second;
        }
        // A slightly late `now` from another thread counts in the current second.
        let slot = Self::slot(self.current_second);
        self.counts[slot] += 1;
        let current = self.counts[slot] as f64;
        let completed = (self.current_second - self.first_second).min(RATE_WINDOW_SECONDS);
        if completed == 0 {
            return current;
        }
        let sum: u64 = (1..=completed)
            .map(|i| self.counts[Self::slot(self.current_second - i)])
            .sum();
        // The current second is a lower bound of the rate: it catches a burst (or the first
        // second after start) within the second instead of a window later.
        (sum as f64 / completed as f64).max(current)
    }
}

/// The threshold keeping `2^-k` with the smallest `k` such that `rate·2^-k <= limit`.
fn power_of_two_threshold(rate: f64, limit: f64) -> Threshold {
    let mut k = 0;
    while k < 56 && rate > limit * (1u64 << k) as f64 {
        k += 1;
    }
    Threshold::from_value(MAX_ADJUSTED_COUNT - (MAX_ADJUSTED_COUNT >> k))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use opentelemetry_proto::tonic::common::v1::AnyValue;
    use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Span, Status};

    use super::*;

    const MS: u64 = 1_000_000;
    const T0: u64 = 1_700_000_000_000 * MS;

    fn kv(key: &str, value: Value) -> KeyValue {
        KeyValue {
            key: key.to_owned(),
            value: Some(AnyValue { value: Some(value) }),
            ..Default::default()
        }
    }

    fn str_value(s: &str) -> Value {
        Value::StringValue(s.to_owned())
    }

    fn resource(service: &str, attributes: Vec<KeyValue>) -> Arc<ResourceSpans> {
        let mut attrs = vec![kv("service.name", str_value(service))];
        attrs.extend(attributes);
        Arc::new(ResourceSpans {
            resource: Some(Resource {
                attributes: attrs,
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    /// A span of `service` from `start_ms` to `end_ms` (after [`T0`]); a child unless
    /// `root`.
    fn span(service: &str, start_ms: u64, end_ms: u64, root: bool) -> HeldSpan {
        HeldSpan {
            resource: resource(service, Vec::new()),
            scope: Arc::new(ScopeSpans::default()),
            span: Span {
                trace_id: vec![1; 16],
                span_id: vec![2; 8],
                parent_span_id: if root { Vec::new() } else { vec![3; 8] },
                start_time_unix_nano: T0 + start_ms * MS,
                end_time_unix_nano: T0 + end_ms * MS,
                ..Default::default()
            },
        }
    }

    fn with_attr(mut s: HeldSpan, key: &str, value: Value) -> HeldSpan {
        s.span.attributes.push(kv(key, value));
        s
    }

    fn parse(src: &str) -> Result<Vec<NamedPolicy>, String> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Doc {
            policies: Vec<NamedPolicy>,
        }
        toml::from_str::<Doc>(src)
            .map(|d| d.policies)
            .map_err(|e| e.to_string())
    }

    fn compile(src: &str) -> PolicySet {
        PolicySet::compile(&parse(src).unwrap()).unwrap()
    }

    fn compile_err(src: &str) -> String {
        PolicySet::compile(&parse(src).unwrap())
            .unwrap_err()
            .to_string()
    }

    fn eval(set: &PolicySet, spans: &[HeldSpan]) -> Verdict {
        set.evaluate(spans, Randomness::from_value(0), Instant::now())
    }

    fn threshold_of(src: &str, spans: &[HeldSpan]) -> Threshold {
        eval(&compile(src), spans).threshold
    }

    /// `2^56 - 2^(56-k)`: keeps `2^-k`.
    fn pow2(k: u32) -> Threshold {
        Threshold::from_value(MAX_ADJUSTED_COUNT - (MAX_ADJUSTED_COUNT >> k))
    }

    #[test]
    fn policy_set_is_send_and_sync() {
        fn check<T: Send + Sync + std::fmt::Debug>() {}
        check::<PolicySet>();
    }

    #[test]
    fn status_error_keeps_traces_with_an_error_span() {
        let src = r#"
            [[policies]]
            name = "errors"
            type = "status_error"
        "#;
        let ok = span("a", 0, 10, true);
        let mut failed = span("b", 1, 5, false);
        failed.span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        assert_eq!(
            threshold_of(src, std::slice::from_ref(&ok)),
            Threshold::NEVER
        );
        let set = compile(src);
        let v = eval(&set, &[ok, failed]);
        assert_eq!(v.threshold, Threshold::ALWAYS);
        assert_eq!(v.policy.as_deref(), Some("errors"));
    }

    #[test]
    fn latency_uses_trace_duration_and_per_service_span_durations() {
        let src = r#"
            [[policies]]
            name = "slow"
            type = "latency"
            threshold_ms = 1000
            services = { checkout = 250 }
        "#;
        // 900 ms overall, no slow checkout span.
        let fast = [span("web", 0, 500, true), span("checkout", 600, 900, false)];
        assert_eq!(threshold_of(src, &fast[..1]), Threshold::NEVER);
        // The trace spans 0..1001 ms although no single span is that long.
        let long = [span("web", 0, 600, true), span("db", 500, 1001, false)];
        assert_eq!(threshold_of(src, &long), Threshold::ALWAYS);
        // A 300 ms checkout span is slow for checkout, not for others.
        let slow_checkout = [span("web", 0, 400, true), span("checkout", 10, 310, false)];
        assert_eq!(threshold_of(src, &slow_checkout), Threshold::ALWAYS);
        let slow_other = [span("web", 0, 400, true), span("cart", 10, 310, false)];
        assert_eq!(threshold_of(src, &slow_other), Threshold::NEVER);
        // Exactly the threshold is not longer than it; unset timestamps are ignored.
        assert_eq!(
            threshold_of(src, &[span("web", 0, 1000, true)]),
            Threshold::NEVER
        );
        let mut unset = span("web", 0, 10, true);
        unset.span.start_time_unix_nano = 0;
        assert_eq!(threshold_of(src, &[unset]), Threshold::NEVER);
        // Only per-service thresholds.
        let src = r#"
            [[policies]]
            name = "slow-checkout"
            type = "latency"
            services = { checkout = 250 }
        "#;
        assert_eq!(threshold_of(src, &slow_checkout), Threshold::ALWAYS);
        assert_eq!(threshold_of(src, &long), Threshold::NEVER);
    }

    #[test]
    fn string_attributes_match_span_or_resource_values() {
        let src = r#"
            [[policies]]
            name = "vip"
            type = "string_attribute"
            key = "tier"
            values = ["gold", "platinum"]
        "#;
        let plain = span("web", 0, 1, true);
        let gold = with_attr(span("web", 0, 1, false), "tier", str_value("gold"));
        let silver = with_attr(span("web", 0, 1, false), "tier", str_value("silver"));
        let int = with_attr(span("web", 0, 1, false), "tier", Value::IntValue(1));
        assert_eq!(threshold_of(src, &[plain.clone(), gold]), Threshold::ALWAYS);
        assert_eq!(
            threshold_of(src, &[plain.clone(), silver.clone()]),
            Threshold::NEVER
        );
        assert_eq!(threshold_of(src, &[int]), Threshold::NEVER);
        let mut on_resource = plain.clone();
        on_resource.resource = resource("web", vec![kv("tier", str_value("platinum"))]);
        assert_eq!(threshold_of(src, &[on_resource]), Threshold::ALWAYS);

        // Regexes match anywhere unless anchored; invert keeps traces without a match.
        let src = r#"
            [[policies]]
            name = "not-health"
            type = "string_attribute"
            key = "http.route"
            values = ["^/health", "ready$"]
            regex = true
            invert = true
        "#;
        let route = |r: &str| with_attr(span("web", 0, 1, true), "http.route", str_value(r));
        assert_eq!(threshold_of(src, &[route("/healthz")]), Threshold::NEVER);
        assert_eq!(threshold_of(src, &[route("/is-ready")]), Threshold::NEVER);
        assert_eq!(
            threshold_of(src, &[route("/api/health")]),
            Threshold::ALWAYS
        );
        assert_eq!(threshold_of(src, &[plain]), Threshold::ALWAYS);
    }

    #[test]
    fn numeric_attributes_and_existence() {
        let src = r#"
            [[policies]]
            name = "big"
            type = "numeric_attribute"
            key = "order.total"
            min = 100
            max = 1000.5
        "#;
        let total = |v: Value| with_attr(span("web", 0, 1, true), "order.total", v);
        assert_eq!(
            threshold_of(src, &[total(Value::IntValue(100))]),
            Threshold::ALWAYS
        );
        assert_eq!(
            threshold_of(src, &[total(Value::DoubleValue(1000.5))]),
            Threshold::ALWAYS
        );
        assert_eq!(
            threshold_of(src, &[total(Value::IntValue(99))]),
            Threshold::NEVER
        );
        assert_eq!(
            threshold_of(src, &[total(Value::DoubleValue(1001.0))]),
            Threshold::NEVER
        );
        assert_eq!(
            threshold_of(src, &[total(Value::DoubleValue(f64::NAN))]),
            Threshold::NEVER
        );
        assert_eq!(
            threshold_of(src, &[total(str_value("500"))]),
            Threshold::NEVER
        );
        let src = r#"
            [[policies]]
            name = "small"
            type = "numeric_attribute"
            key = "order.total"
            max = 0
        "#;
        assert_eq!(
            threshold_of(src, &[total(Value::IntValue(-5))]),
            Threshold::ALWAYS
        );

        let src = r#"
            [[policies]]
            name = "flagged"
            type = "attribute_exists"
            key = "debug"
        "#;
        let flagged = with_attr(span("web", 0, 1, true), "debug", Value::BoolValue(false));
        assert_eq!(threshold_of(src, &[flagged]), Threshold::ALWAYS);
        assert_eq!(
            threshold_of(src, &[total(Value::IntValue(1))]),
            Threshold::NEVER
        );
        let mut on_resource = span("web", 0, 1, true);
        on_resource.resource = resource("web", vec![kv("debug", Value::BoolValue(true))]);
        assert_eq!(threshold_of(src, &[on_resource]), Threshold::ALWAYS);
    }

    #[test]
    fn span_count_bounds_are_inclusive() {
        let src = r#"
            [[policies]]
            name = "mid"
            type = "span_count"
            min = 2
            max = 3
        "#;
        let s = span("web", 0, 1, true);
        for (n, expected) in [(1, false), (2, true), (3, true), (4, false)] {
            assert_eq!(
                threshold_of(src, &vec![s.clone(); n]),
                matched(expected),
                "{n}"
            );
        }
    }

    #[test]
    fn probabilistic_thresholds_nest() {
        let tenth = Threshold::from_ratio(0.1).unwrap();
        let half = Threshold::from_ratio(0.5).unwrap();
        let p = |ratio: &str| {
            compile(&format!(
                "[[policies]]\nname = \"p\"\ntype = \"probabilistic\"\nratio = {ratio}"
            ))
        };
        let (p10, p50) = (p("0.1"), p("0.5"));
        let trace = [span("web", 0, 1, true)];
        assert_eq!(eval(&p10, &trace).threshold, tenth);
        assert_eq!(eval(&p50, &trace).threshold, half);
        assert_eq!(eval(&p("0"), &trace).threshold, Threshold::NEVER);
        assert_eq!(eval(&p("1"), &trace).threshold, Threshold::ALWAYS);
        // Every trace kept at 10 % is kept at 50 %: same randomness, lower threshold.
        let mut x = 0x1234_5678_9abc_def0_u64;
        let (mut kept10, mut kept50) = (0, 0);
        for _ in 0..100_000 {
            x = splitmix(x);
            let r = Randomness::from_value(x);
            let k10 = p10.evaluate(&trace, r, Instant::now()).threshold.keeps(r);
            let k50 = p50.evaluate(&trace, r, Instant::now()).threshold.keeps(r);
            assert!(!k10 || k50);
            kept10 += usize::from(k10);
            kept50 += usize::from(k50);
        }
        assert!((9_500..10_500).contains(&kept10), "{kept10}");
        assert!((49_000..51_000).contains(&kept50), "{kept50}");
        assert!((tenth.adjusted_count() - 10.0).abs() < 1e-9);
    }

    fn splitmix(x: u64) -> u64 {
        let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn the_set_takes_the_lowest_threshold_and_names_its_policy() {
        let set = PolicySet::compile(&default_policies()).unwrap();
        assert_eq!(set.policy_names(), ["errors", "slow", "baseline"]);
        let fast = [span("web", 0, 10, true)];
        let v = eval(&set, &fast);
        assert_eq!(v.threshold, Threshold::from_ratio(0.1).unwrap());
        assert_eq!(v.policy.as_deref(), Some("baseline"));
        let v = eval(&set, &[span("web", 0, 1500, true)]);
        assert_eq!(
            v,
            Verdict {
                threshold: Threshold::ALWAYS,
                policy: Some("slow".into())
            }
        );
        // Nothing matches: no policy.
        let set = compile(
            r#"
            [[policies]]
            name = "errors"
            type = "status_error"
            [[policies]]
            name = "none"
            type = "probabilistic"
            ratio = 0
        "#,
        );
        assert_eq!(
            eval(&set, &fast),
            Verdict {
                threshold: Threshold::NEVER,
                policy: None
            }
        );
        // Ties go to the first policy.
        let set = compile(
            r#"
            [[policies]]
            name = "first"
            type = "probabilistic"
            ratio = 0.5
            [[policies]]
            name = "second"
            type = "probabilistic"
            ratio = 0.5
        "#,
        );
        assert_eq!(eval(&set, &fast).policy.as_deref(), Some("first"));
    }

    #[test]
    fn and_takes_the_max_or_the_min_not_the_complement() {
        let src = r#"
            [[policies]]
            name = "checkout-sampled"
            type = "and"
            policies = [
              { type = "string_attribute", key = "service.name", values = ["checkout"] },
              { type = "probabilistic", ratio = 0.25 },
              { type = "probabilistic", ratio = 0.5 },
            ]
        "#;
        let checkout = [span("checkout", 0, 1, true)];
        let web = [span("web", 0, 1, true)];
        assert_eq!(
            threshold_of(src, &checkout),
            Threshold::from_ratio(0.25).unwrap()
        );
        assert_eq!(threshold_of(src, &web), Threshold::NEVER);

        let src = r#"
            [[policies]]
            name = "either"
            type = "or"
            policies = [
              { type = "string_attribute", key = "service.name", values = ["checkout"] },
              { name = "quarter", type = "probabilistic", ratio = 0.25 },
              { type = "probabilistic", ratio = 0.5 },
            ]
        "#;
        assert_eq!(threshold_of(src, &checkout), Threshold::ALWAYS);
        assert_eq!(threshold_of(src, &web), Threshold::from_ratio(0.5).unwrap());

        let src = r#"
            [[policies]]
            name = "not-web"
            type = "not"
            policy = { type = "string_attribute", key = "service.name", values = ["web"] }
        "#;
        assert_eq!(threshold_of(src, &checkout), Threshold::ALWAYS);
        assert_eq!(threshold_of(src, &web), Threshold::NEVER);
    }

    /// Drives `set` with `per_second` evenly spaced traces per second for `seconds`,
    /// returning the thresholds of the last second.
    fn drive(
        set: &PolicySet,
        trace: &[HeldSpan],
        start: Instant,
        from_second: u64,
        seconds: u64,
        per_second: u64,
    ) -> Vec<Threshold> {
        let mut last = Vec::new();
        for sec in from_second..from_second + seconds {
            last.clear();
            for i in 0..per_second {
                let now = start
                    + Duration::from_secs(sec)
                    + Duration::from_nanos(i * 1_000_000_000 / per_second);
                last.push(eval_at(set, trace, now));
            }
        }
        last
    }

    fn eval_at(set: &PolicySet, trace: &[HeldSpan], now: Instant) -> Threshold {
        set.evaluate(trace, Randomness::from_value(0), now)
            .threshold
    }

    #[test]
    fn rate_limit_converges_to_a_power_of_two() {
        let set = compile(
            r#"
            [[policies]]
            name = "limited"
            type = "rate_limit"
            traces_per_second = 100
        "#,
        );
        let trace = [span("web", 0, 1, true)];
        let start = Instant::now();
        // Under the limit everything is kept.
        let last = drive(&set, &trace, start, 0, 3, 80);
        assert!(last.iter().all(|t| *t == Threshold::ALWAYS));
        // 1000/s: 1000/16 = 62.5 <= 100 < 1000/8, so k = 4 once the window is full.
        let last = drive(&set, &trace, start, 3, 6, 1000);
        assert!(last.iter().all(|t| *t == pow2(4)), "{:?}", &last[..3]);
        assert_eq!(pow2(4).adjusted_count(), 16.0);
        // The kept rate is within (limit/2, limit].
        let kept = 1000.0 * pow2(4).ratio();
        assert!(kept > 50.0 && kept <= 100.0);
        // A burst in the current second raises k within that second.
        let burst_end = eval_at(&set, &trace, start + Duration::from_millis(9_999));
        assert_eq!(burst_end, pow2(4));
        let mut t = Threshold::ALWAYS;
        for _ in 0..7000 {
            t = eval_at(&set, &trace, start + Duration::from_secs(10));
        }
        assert_eq!(t, pow2(7));
        // After the load stops and comes back low, the estimate falls with the window.
        let last = drive(&set, &trace, start, 20, 6, 150);
        assert!(last.iter().all(|t| *t == pow2(1)));
    }

    #[test]
    fn rate_limit_adjusted_counts_estimate_the_traffic() {
        let set = compile(
            r#"
            [[policies]]
            name = "limited"
            type = "rate_limit"
            traces_per_second = 50
        "#,
        );
        let trace = [span("web", 0, 1, true)];
        let start = Instant::now();
        let mut x = 7;
        let (mut kept, mut weight) = (0u64, 0.0);
        for sec in 0..20u64 {
            for i in 0..700u64 {
                x = splitmix(x);
                let r = Randomness::from_value(x);
                let now = start + Duration::from_secs(sec) + Duration::from_micros(i * 1000);
                let t = set.evaluate(&trace, r, now).threshold;
                if sec >= 5 && t.keeps(r) {
                    kept += 1;
                    weight += t.adjusted_count();
                }
            }
        }
        // 700/s with a limit of 50: k = 4 keeps 43.75/s, each kept trace weighs 16.
        let per_second = kept as f64 / 15.0;
        assert!((35.0..=50.0).contains(&per_second), "{per_second}");
        let estimate = weight / 15.0;
        assert!((estimate - 700.0).abs() < 100.0, "{estimate}");
    }

    #[test]
    fn per_service_rate_limits_count_each_root_service() {
        let set = compile(
            r#"
            [[policies]]
            name = "per-service"
            type = "rate_limit"
            traces_per_second = 10
            per_service = true
        "#,
        );
        // The root span's service is charged, not the child's.
        let busy = [span("db", 0, 1, false), span("busy", 0, 2, true)];
        let quiet = [span("quiet", 0, 1, false)];
        let start = Instant::now();
        let mut last = (Threshold::NEVER, Threshold::NEVER);
        for sec in 0..6u64 {
            for i in 0..400u64 {
                let now = start + Duration::from_secs(sec) + Duration::from_micros(i * 2500);
                last.0 = eval_at(&set, &busy, now);
                if i % 100 == 0 {
                    last.1 = eval_at(&set, &quiet, now);
                }
            }
        }
        // 400/s: 400/64 = 6.25 <= 10 < 400/32.
        assert_eq!(last.0, pow2(6));
        assert_eq!(last.1, Threshold::ALWAYS);
    }

    #[test]
    fn per_service_state_is_bounded() {
        let limit = RateLimit::new(1.0, true);
        let start = Instant::now();
        for i in 0..MAX_RATE_SERVICES + 5 {
            let trace = [span(&format!("svc-{i}"), 0, 1, true)];
            limit.threshold(&trace, start);
        }
        let state = limit.state.lock();
        assert_eq!(state.services.len(), MAX_RATE_SERVICES + 1);
        assert_eq!(state.services[OTHER_SERVICES].counts.iter().sum::<u64>(), 5);
        drop(state);
        // Idle services are forgotten to make room for new ones.
        let later = start + Duration::from_secs(RATE_WINDOW_SECONDS + 2);
        limit.threshold(&[span("new", 0, 1, true)], later);
        let state = limit.state.lock();
        assert!(state.services.contains_key("new"));
        assert_eq!(state.services.len(), 1);
    }

    #[test]
    fn priority_gives_the_first_matching_child_its_share() {
        let set = compile(
            r#"
            [[policies]]
            name = "budget"
            type = "priority"
            traces_per_second = 100
            policies = [
              { share = 50, name = "errors", type = "status_error" },
              { share = 25, type = "string_attribute", key = "service.name", values = ["checkout"] },
              { share = 25, type = "probabilistic", ratio = 0.5 },
            ]
        "#,
        );
        let mut error = span("checkout", 0, 1, true);
        error.span.status = Some(Status {
            code: StatusCode::Error as i32,
            message: String::new(),
        });
        let error = [error];
        let checkout = [span("checkout", 0, 1, true)];
        let other = [span("web", 0, 1, true)];
        let start = Instant::now();
        let mut last = [Threshold::NEVER; 3];
        for sec in 0..6u64 {
            for i in 0..1000u64 {
                let now = start + Duration::from_secs(sec) + Duration::from_micros(i * 1000);
                // 200 errors/s, 100 checkout/s, 700 others/s.
                let (which, trace) = match i % 10 {
                    0 | 1 => (0, &error),
                    2 => (1, &checkout),
                    _ => (2, &other),
                };
                last[which] = eval_at(&set, trace, now);
            }
        }
        // Errors: 200/s for a share of 50/s -> 2^-2. The error trace is a checkout trace
        // too, but only the first matching child counts it.
        assert_eq!(last[0], pow2(2));
        // Checkout: 100/s for 25/s -> 2^-2.
        assert_eq!(last[1], pow2(2));
        // Others: 700/s for 25/s -> 2^-5, stricter than the child's 0.5.
        assert_eq!(last[2], pow2(5));
        // A child that never keeps a trace passes it on; none left: NEVER.
        let set = compile(
            r#"
            [[policies]]
            name = "budget"
            type = "priority"
            traces_per_second = 100
            policies = [{ share = 100, type = "status_error" }]
        "#,
        );
        assert_eq!(eval_at(&set, &other, start), Threshold::NEVER);
        assert_eq!(eval_at(&set, &error, start), Threshold::ALWAYS);
    }

    /// Every kind, as documented for `config.example.toml`.
    const FULL_EXAMPLE: &str = r#"
        [[sampling.tail.policies]]
        name = "errors"
        type = "status_error"

        [[sampling.tail.policies]]
        name = "slow"
        type = "latency"
        threshold_ms = 1000
        services = { checkout = 250, payments = 500 }

        [[sampling.tail.policies]]
        name = "vip"
        type = "string_attribute"
        key = "customer.tier"
        values = ["gold", "platinum"]

        [[sampling.tail.policies]]
        name = "big-orders"
        type = "numeric_attribute"
        key = "order.total"
        min = 1000
        max = 1e9

        [[sampling.tail.policies]]
        name = "debug"
        type = "attribute_exists"
        key = "debug.force_sample"

        [[sampling.tail.policies]]
        name = "large"
        type = "span_count"
        min = 500

        [[sampling.tail.policies]]
        name = "floor"
        type = "rate_limit"
        traces_per_second = 5
        per_service = true

        [[sampling.tail.policies]]
        name = "api-sampled"
        type = "and"
        policies = [
          { type = "string_attribute", key = "http.route", values = ["^/health", "^/ready"], regex = true, invert = true },
          { type = "probabilistic", ratio = 0.2 },
          { type = "rate_limit", traces_per_second = 50 },
        ]

        [[sampling.tail.policies]]
        name = "mobile-or-beta"
        type = "or"
        policies = [
          { type = "string_attribute", key = "client.type", values = ["ios", "android"] },
          { name = "beta", type = "attribute_exists", key = "feature.beta" },
        ]

        [[sampling.tail.policies]]
        name = "non-web-errors"
        type = "and"
        policies = [
          { type = "status_error" },
          { type = "not", policy = { type = "string_attribute", key = "service.name", values = ["web"] } },
        ]

        [[sampling.tail.policies]]
        name = "budget"
        type = "priority"
        traces_per_second = 100
        policies = [
          { share = 50, name = "checkout", type = "string_attribute", key = "service.name", values = ["checkout"] },
          { share = 30, type = "latency", threshold_ms = 500 },
          { share = 20, type = "probabilistic", ratio = 1.0 },
        ]

        [[sampling.tail.policies]]
        name = "baseline"
        type = "probabilistic"
        ratio = 0.1
    "#;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        sampling: Sampling,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Sampling {
        tail: Tail,
    }
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Tail {
        policies: Vec<NamedPolicy>,
    }

    #[test]
    fn the_full_example_parses_compiles_and_round_trips() {
        let doc: Doc = toml::from_str(FULL_EXAMPLE).unwrap();
        let policies = &doc.sampling.tail.policies;
        assert_eq!(policies.len(), 12);
        assert_eq!(
            policies[1].policy,
            PolicyConfig::Latency {
                threshold_ms: Some(1000),
                services: [("checkout".to_owned(), 250), ("payments".to_owned(), 500)].into(),
            }
        );
        let PolicyConfig::Priority {
            policies: shares, ..
        } = &policies[10].policy
        else {
            panic!("{:?}", policies[10]);
        };
        assert_eq!(shares[0].name.as_deref(), Some("checkout"));
        assert_eq!(shares[1].share, 30.0);
        let set = PolicySet::compile(policies).unwrap();
        assert_eq!(set.policy_names().len(), 12);
        assert!(format!("{set:?}").contains("RateLimit"));
        // Serialized and parsed again, the config is unchanged.
        let text = toml::to_string(&doc).unwrap();
        let again: Doc = toml::from_str(&text).unwrap();
        assert_eq!(again, doc);
        let defaults = Tail {
            policies: default_policies(),
        };
        let text = toml::to_string(&defaults).unwrap();
        assert!(text.contains("type = \"status_error\""), "{text}");
        assert_eq!(toml::from_str::<Tail>(&text).unwrap(), defaults);
    }

    #[test]
    fn unknown_keys_and_types_are_rejected() {
        let e = parse(
            r#"
            [[policies]]
            name = "slow"
            type = "latency"
            threshold = 1000
        "#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `threshold`"), "{e}");
        let e = parse(
            r#"
            [[policies]]
            name = "errors"
            type = "status_error"
            code = 2
        "#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `code`"), "{e}");
        let e = parse(
            r#"
            [[policies]]
            name = "both"
            type = "and"
            policies = [{ type = "probabilistic", ratio = 0.5, rate = 1 }]
        "#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `rate`"), "{e}");
        let e = parse(
            r#"
            [[policies]]
            name = "budget"
            type = "priority"
            traces_per_second = 10
            policies = [{ share = 50, type = "status_error", weight = 1 }]
        "#,
        )
        .unwrap_err();
        assert!(e.contains("unknown field `weight`"), "{e}");
        let e = parse("[[policies]]\nname = \"x\"\ntype = \"coin_flip\"").unwrap_err();
        assert!(e.contains("unknown variant `coin_flip`"), "{e}");
        let e = parse("[[policies]]\ntype = \"status_error\"").unwrap_err();
        assert!(e.contains("missing field `name`"), "{e}");
        let e = parse("[[policies]]\nname = \"x\"\ntype = \"probabilistic\"").unwrap_err();
        assert!(e.contains("missing field `ratio`"), "{e}");
    }

    #[test]
    fn bad_values_are_rejected_with_the_policy_name() {
        let cases = [
            (
                "name = \"slow\"\ntype = \"latency\"\nthreshold_ms = 0",
                "policy \"slow\": threshold_ms must be > 0",
            ),
            (
                "name = \"slow\"\ntype = \"latency\"\nservices = { checkout = 0 }",
                "policy \"slow\": services.checkout must be > 0",
            ),
            (
                "name = \"slow\"\ntype = \"latency\"",
                "needs threshold_ms or services",
            ),
            (
                "name = \"p\"\ntype = \"probabilistic\"\nratio = 1.5",
                "policy \"p\": ratio 1.5 is outside [0, 1]",
            ),
            (
                "name = \"r\"\ntype = \"rate_limit\"\ntraces_per_second = 0",
                "policy \"r\": traces_per_second must be > 0",
            ),
            (
                "name = \"s\"\ntype = \"string_attribute\"\nkey = \"k\"\nvalues = [\"(\"]\nregex = true",
                "policy \"s\": invalid regex \"(\"",
            ),
            (
                "name = \"s\"\ntype = \"string_attribute\"\nkey = \"k\"\nvalues = []",
                "policy \"s\": values must not be empty",
            ),
            (
                "name = \"s\"\ntype = \"attribute_exists\"\nkey = \"\"",
                "policy \"s\": key must not be empty",
            ),
            (
                "name = \"n\"\ntype = \"numeric_attribute\"\nkey = \"k\"\nmin = 5\nmax = 1",
                "policy \"n\": min (5) must be <= max (1)",
            ),
            (
                "name = \"c\"\ntype = \"span_count\"\nmin = 5\nmax = 1",
                "policy \"c\": min (5) must be <= max (1)",
            ),
            (
                "name = \"a\"\ntype = \"and\"\npolicies = []",
                "policy \"a\": policies must not be empty",
            ),
            (
                "name = \"a\"\ntype = \"or\"\npolicies = [{ type = \"status_error\" }, { name = \"half\", type = \"probabilistic\", ratio = 2 }]",
                "policy \"a\", policies[1] \"half\": ratio 2 is outside [0, 1]",
            ),
            (
                "name = \"b\"\ntype = \"priority\"\ntraces_per_second = 10\npolicies = [{ share = 60, type = \"status_error\" }, { share = 50, type = \"probabilistic\", ratio = 1 }]",
                "policy \"b\": shares sum to 110, more than 100",
            ),
            (
                "name = \"b\"\ntype = \"priority\"\ntraces_per_second = 10\npolicies = [{ share = 0, type = \"status_error\" }]",
                "policy \"b\", policies[0]: share 0 is outside (0, 100]",
            ),
            (
                "name = \"b\"\ntype = \"priority\"\ntraces_per_second = -1\npolicies = [{ share = 10, type = \"status_error\" }]",
                "policy \"b\": traces_per_second must be > 0",
            ),
        ];
        for (body, expected) in cases {
            let e = compile_err(&format!("[[policies]]\n{body}"));
            assert!(e.contains(expected), "{body}: {e}");
        }
        let dup = "[[policies]]\nname = \"x\"\ntype = \"status_error\"\n[[policies]]\nname = \"x\"\ntype = \"status_error\"";
        assert_eq!(
            compile_err(dup),
            "policy \"x\": name is used by another policy"
        );
        let empty = "[[policies]]\nname = \" \"\ntype = \"status_error\"";
        assert_eq!(compile_err(empty), "policies[0]: name must not be empty");
        assert!(PolicySet::compile(&[]).is_err());
        // Shares of 33.3 + 33.3 + 33.4 are fine despite floating-point sums.
        compile(
            "[[policies]]\nname = \"b\"\ntype = \"priority\"\ntraces_per_second = 10\npolicies = [{ share = 33.3, type = \"status_error\" }, { share = 33.3, type = \"status_error\" }, { share = 33.4, type = \"status_error\" }]",
        );
    }
}
