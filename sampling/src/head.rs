//! Head sampling: the first decision, where spans enter Weft (`weft ingest`, or `weft up`).
//!
//! ```text
//!  ExportTraceServiceRequest
//!    for each span: rule = operation ratio > service ratio > default ratio
//!                   T = threshold(ratio x 2^-k)   (k > 0 while the service is over its
//!                                                  max_spans_per_second on this node)
//!                   upstream th present and upstream = respect  -> keep as is
//!                   else T = max(T, upstream th); keep iff R >= T; write ot=th:T
//!  ─▶ request with only the kept spans (empty scopes and resources removed)
//! ```
//!
//! The decision depends only on the trace's randomness `R` (its `rv`, else the last 7 bytes
//! of its trace ID), the span's service and name, and the configuration, so every ingest
//! node decides the same for the same span. Spans of one trace with different ratios (say
//! a per-service ratio) are kept in nested sets: a trace kept at 1 % is also kept in every
//! service sampled at 10 %. Rate limits change `k` once a second from the previous second's
//! count on this node; powers of two keep nodes with similar load on the same `k`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use parking_lot::{Mutex, RwLock};
use weft_schemas::sampling::{self, OtelTraceState, Randomness, Threshold};

use super::config::{HeadConfig, UpstreamDecision};
use super::resource_service;
use crate::Error;
use weft_telemetry::Telemetry;

const SPANS_METRIC: &str = "weft_head_sampling_spans_total";
const SPANS_HELP: &str = "Spans seen by head sampling, by decision and by the rule that decided.";
const STEP_METRIC: &str = "weft_head_sampling_rate_limit_halvings";
const STEP_HELP: &str = "Current k of a service over its span rate limit (ratio x 2^-k).";

/// What one request's head sampling did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HeadOutcome {
    pub kept: u64,
    pub dropped: u64,
    /// Whether the request changed (spans dropped or tracestates written).
    pub modified: bool,
}

#[derive(Debug)]
struct Rules {
    default_ratio: f64,
    services: HashMap<String, ServiceRules>,
    upstream: UpstreamDecision,
    precision: u8,
    /// Nothing to do: ratio 1 everywhere and no limits.
    noop: bool,
}

#[derive(Debug)]
struct ServiceRules {
    ratio: Option<f64>,
    operations: HashMap<String, f64>,
    max_spans_per_second: f64,
}

/// Which rule decided a span (the `rule` label of the spans metric).
#[derive(Debug, Clone, Copy)]
enum Rule {
    Upstream = 0,
    Default = 1,
    Service = 2,
    Operation = 3,
}

impl Rule {
    fn label(self, service: &str) -> String {
        match self {
            Rule::Upstream => "upstream".to_owned(),
            Rule::Default => "default".to_owned(),
            Rule::Service => format!("service:{service}"),
            Rule::Operation => format!("operation:{service}"),
        }
    }
}

/// Per rate-limited service: spans counted in the current second, and the current `k`.
#[derive(Debug, Default)]
struct RateState {
    second_start: Option<Instant>,
    count: u64,
    halvings: u32,
}

/// Consistent head sampler; `&self` methods, shared by every receiver task.
#[derive(Debug)]
pub struct HeadSampler {
    rules: RwLock<Arc<Rules>>,
    rates: Mutex<HashMap<String, RateState>>,
    /// Thresholds by ratio bits (ratios are few: one per rule and halving).
    thresholds: Mutex<HashMap<u64, Threshold>>,
    telemetry: Arc<Telemetry>,
}

impl HeadSampler {
    pub fn new(config: &HeadConfig, telemetry: Arc<Telemetry>) -> Result<Self, Error> {
        Ok(Self {
            rules: RwLock::new(Arc::new(compile(config)?)),
            rates: Mutex::new(HashMap::new()),
            thresholds: Mutex::new(HashMap::new()),
            telemetry,
        })
    }

    /// Replaces the rules; rate-limit state of services still limited is kept.
    pub fn reload(&self, config: &HeadConfig) -> Result<(), Error> {
        let rules = compile(config)?;
        self.rates.lock().retain(|service, _| {
            rules
                .services
                .get(service)
                .is_some_and(|s| s.max_spans_per_second > 0.0)
        });
        self.thresholds.lock().clear();
        *self.rules.write() = Arc::new(rules);
        Ok(())
    }

    /// True when every span is kept untouched (the default configuration).
    pub fn is_noop(&self) -> bool {
        self.rules.read().noop
    }

    /// Drops the spans head sampling does not keep and records the threshold of the kept ones.
    pub fn apply(&self, request: &mut ExportTraceServiceRequest, now: Instant) -> HeadOutcome {
        let rules = self.rules.read().clone();
        let mut outcome = HeadOutcome::default();
        if rules.noop {
            return outcome;
        }
        // (decision, rule) -> spans, added to the telemetry once per request.
        let mut counts: BTreeMap<(&'static str, String), u64> = BTreeMap::new();
        for resource in &mut request.resource_spans {
            let service = resource_service(resource).to_owned();
            let service_rules = rules.services.get(&service);
            let halvings = service_rules
                .filter(|s| s.max_spans_per_second > 0.0)
                .map(|s| self.halvings(&service, s.max_spans_per_second, now));
            let scale = f64::from(1u32 << halvings.unwrap_or(0).min(31));
            // The resource's threshold, looked up once; only operation rules need more.
            let (resource_rule, resource_ratio) = match service_rules {
                Some(s) => (Rule::Service, s.ratio.unwrap_or(rules.default_ratio)),
                None => (Rule::Default, rules.default_ratio),
            };
            let resource_threshold = self.threshold(resource_ratio / scale, rules.precision);
            // [rule][kept]: spans of this resource.
            let mut tally = [[0u64; 2]; 4];
            for scope in &mut resource.scope_spans {
                let before = scope.spans.len();
                scope.spans.retain_mut(|span| {
                    let upstream = OtelTraceState::parse(&span.trace_state);
                    if upstream.th.is_some() && rules.upstream == UpstreamDecision::Respect {
                        tally[Rule::Upstream as usize][1] += 1;
                        return true;
                    }
                    let operation = service_rules.and_then(|s| s.operations.get(&span.name));
                    let (rule, threshold) = match operation {
                        Some(r) => (Rule::Operation, self.threshold(r / scale, rules.precision)),
                        None => (resource_rule, resource_threshold),
                    };
                    let threshold = threshold.max(upstream.th.unwrap_or(Threshold::ALWAYS));
                    // An invalid trace ID is kept here and refused by validation later.
                    let keep = match upstream
                        .rv
                        .or_else(|| Randomness::from_trace_id(&span.trace_id))
                    {
                        Some(r) => threshold.keeps(r),
                        None => true,
                    };
                    tally[rule as usize][usize::from(keep)] += 1;
                    if keep && threshold != Threshold::ALWAYS && upstream.th != Some(threshold) {
                        span.trace_state = sampling::with_threshold(&span.trace_state, threshold);
                        outcome.modified = true;
                    }
                    keep
                });
                if scope.spans.len() != before {
                    outcome.modified = true;
                }
                if let Some(s) = halvings.map(|_| scope.spans.len() as u64) {
                    self.count_kept(&service, s);
                }
            }
            resource.scope_spans.retain(|s| !s.spans.is_empty());
            for rule in [
                Rule::Upstream,
                Rule::Default,
                Rule::Service,
                Rule::Operation,
            ] {
                for (keep, n) in tally[rule as usize].into_iter().enumerate() {
                    if n > 0 {
                        let decision = if keep == 1 { "kept" } else { "dropped" };
                        *counts.entry((decision, rule.label(&service))).or_default() += n;
                    }
                }
            }
        }
        request.resource_spans.retain(|r| !r.scope_spans.is_empty());
        for ((decision, rule), n) in counts {
            if decision == "kept" {
                outcome.kept += n;
            } else {
                outcome.dropped += n;
            }
            self.telemetry.add(
                SPANS_METRIC,
                SPANS_HELP,
                &[("decision", decision), ("rule", &rule)],
                n as f64,
            );
        }
        outcome
    }

    fn threshold(&self, ratio: f64, precision: u8) -> Threshold {
        *self
            .thresholds
            .lock()
            .entry(ratio.to_bits())
            .or_insert_with(|| {
                // Ratios were validated; halving can only go below 2^-56 after 56 halvings.
                Threshold::from_ratio_with_precision(ratio, precision).unwrap_or(Threshold::NEVER)
            })
    }

    /// The current `k` of a rate-limited service: the smallest `k` with
    /// `rate x 2^-k <= limit`, `rate` being what `k = 0` would have kept last second.
    fn halvings(&self, service: &str, limit: f64, now: Instant) -> u32 {
        let mut rates = self.rates.lock();
        let state = rates.entry(service.to_owned()).or_default();
        let start = *state.second_start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= Duration::from_secs(1) {
            // Spans kept last second at 2^-k, scaled back to k = 0. A gap of several seconds
            // means the service was quiet: the rate is the count over the whole gap.
            let seconds = elapsed.as_secs_f64().floor().max(1.0);
            let unlimited = state.count as f64 * f64::from(1u32 << state.halvings) / seconds;
            let mut k = 0u32;
            while k < 30 && unlimited / f64::from(1u32 << k) > limit {
                k += 1;
            }
            state.halvings = k;
            state.count = 0;
            state.second_start = Some(start + Duration::from_secs(elapsed.as_secs()));
            self.telemetry.set(
                STEP_METRIC,
                STEP_HELP,
                &[("service", service)],
                f64::from(k),
            );
        }
        state.halvings
    }

    fn count_kept(&self, service: &str, spans: u64) {
        if let Some(state) = self.rates.lock().get_mut(service) {
            state.count += spans;
        }
    }
}

fn compile(config: &HeadConfig) -> Result<Rules, Error> {
    super::SamplingConfig {
        head: config.clone(),
        ..Default::default()
    }
    .validate()?;
    let services: HashMap<String, ServiceRules> = config
        .services
        .iter()
        .map(|(name, s)| {
            (
                name.clone(),
                ServiceRules {
                    ratio: s.ratio,
                    operations: s.operations.clone().into_iter().collect(),
                    max_spans_per_second: s.max_spans_per_second,
                },
            )
        })
        .collect();
    let noop = config.ratio == 1.0
        && services.values().all(|s| {
            s.ratio.is_none_or(|r| r == 1.0)
                && s.operations.values().all(|r| *r == 1.0)
                && s.max_spans_per_second == 0.0
        });
    Ok(Rules {
        default_ratio: config.ratio,
        services,
        upstream: config.upstream,
        precision: config.precision,
        noop,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServiceHeadConfig;
    use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    pub(crate) fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
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
    }

    fn span(trace: u128, name: &str, trace_state: &str) -> Span {
        Span {
            trace_id: trace.to_be_bytes().to_vec(),
            span_id: vec![1; 8],
            name: name.into(),
            trace_state: trace_state.into(),
            start_time_unix_nano: 1,
            end_time_unix_nano: 2,
            ..Default::default()
        }
    }

    fn kept(request: &ExportTraceServiceRequest) -> Vec<Span> {
        request
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .flat_map(|s| s.spans.clone())
            .collect()
    }

    fn sampler(config: HeadConfig) -> HeadSampler {
        HeadSampler::new(&config, Telemetry::new()).unwrap()
    }

    /// A trace ID whose randomness (last 7 bytes) is `r`.
    fn trace_with_randomness(r: u64) -> u128 {
        (0xabcd_u128 << 64) | u128::from(r)
    }

    #[test]
    fn decisions_follow_the_threshold_arithmetic() {
        let head = sampler(HeadConfig {
            ratio: 0.25,
            ..Default::default()
        });
        // 25 % keeps R >= 0xc0000000000000.
        let mut req = request(
            "a",
            vec![
                span(trace_with_randomness(0xc0000000000000), "x", ""),
                span(trace_with_randomness(0xbfffffffffffff), "x", ""),
                span(trace_with_randomness(0xffffffffffffff), "x", "vendor=1"),
            ],
        );
        let outcome = head.apply(&mut req, Instant::now());
        assert_eq!(
            outcome,
            HeadOutcome {
                kept: 2,
                dropped: 1,
                modified: true
            }
        );
        let spans = kept(&req);
        assert_eq!(spans[0].trace_state, "ot=th:c");
        assert_eq!(spans[1].trace_state, "ot=th:c,vendor=1");
        assert_eq!(sampling::adjusted_count(&spans[0].trace_state), 4.0);
    }

    #[test]
    fn service_and_operation_ratios_and_nesting() {
        let mut services = BTreeMap::new();
        services.insert(
            "checkout".to_owned(),
            ServiceHeadConfig {
                ratio: Some(0.5),
                operations: [("health".to_owned(), 0.0)].into_iter().collect(),
                max_spans_per_second: 0.0,
            },
        );
        let head = sampler(HeadConfig {
            ratio: 0.125,
            services,
            ..Default::default()
        });
        // R between the 12.5 % and the 50 % thresholds: kept in checkout only.
        let t = trace_with_randomness(0x90000000000000);
        let mut a = request(
            "checkout",
            vec![span(t, "GET /", ""), span(t, "health", "")],
        );
        let mut b = request("other", vec![span(t, "GET /", "")]);
        head.apply(&mut a, Instant::now());
        head.apply(&mut b, Instant::now());
        let a = kept(&a);
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].name, "GET /");
        assert_eq!(a[0].trace_state, "ot=th:8");
        assert!(kept(&b).is_empty());
    }

    #[test]
    fn upstream_thresholds_are_respected_or_tightened() {
        let t = trace_with_randomness(0xd0000000000000);
        let respect = sampler(HeadConfig {
            ratio: 0.01,
            ..Default::default()
        });
        let mut req = request("a", vec![span(t, "x", "ot=th:8")]);
        respect.apply(&mut req, Instant::now());
        assert_eq!(kept(&req)[0].trace_state, "ot=th:8");
        let resample = sampler(HeadConfig {
            ratio: 0.25,
            upstream: UpstreamDecision::Resample,
            ..Default::default()
        });
        let mut req = request("a", vec![span(t, "x", "ot=th:8;rv:d0000000000000")]);
        resample.apply(&mut req, Instant::now());
        assert_eq!(kept(&req)[0].trace_state, "ot=th:c;rv:d0000000000000");
        // A looser local ratio never lowers the upstream threshold.
        let loose = sampler(HeadConfig {
            ratio: 0.9,
            upstream: UpstreamDecision::Resample,
            ..Default::default()
        });
        let mut req = request("a", vec![span(t, "x", "ot=th:c")]);
        let outcome = loose.apply(&mut req, Instant::now());
        assert_eq!(kept(&req)[0].trace_state, "ot=th:c");
        assert!(!outcome.modified);
    }

    #[test]
    fn two_samplers_with_the_same_config_decide_the_same() {
        let config = HeadConfig {
            ratio: 0.1,
            ..Default::default()
        };
        let (a, b) = (sampler(config.clone()), sampler(config));
        let mut rng_state = 0x1234_5678_9abc_def0_u64;
        let mut next = || {
            rng_state ^= rng_state << 13;
            rng_state ^= rng_state >> 7;
            rng_state ^= rng_state << 17;
            rng_state
        };
        let spans: Vec<Span> = (0..20_000)
            .map(|_| span((u128::from(next()) << 64) | u128::from(next()), "x", ""))
            .collect();
        let mut ra = request("s", spans.clone());
        let mut rb = request("s", spans);
        a.apply(&mut ra, Instant::now());
        b.apply(&mut rb, Instant::now());
        assert_eq!(kept(&ra), kept(&rb));
        let n = kept(&ra).len();
        // Binomial(20000, 0.1): sd 42; 5 sd either side.
        assert!((1_790..=2_210).contains(&n), "{n}");
    }

    #[test]
    fn rate_limit_halves_the_ratio_until_under_the_limit() {
        let mut services = BTreeMap::new();
        services.insert(
            "busy".to_owned(),
            ServiceHeadConfig {
                max_spans_per_second: 100.0,
                ..Default::default()
            },
        );
        let telemetry = Telemetry::new();
        let head = HeadSampler::new(
            &HeadConfig {
                services,
                ..Default::default()
            },
            std::sync::Arc::clone(&telemetry),
        )
        .unwrap();
        let start = Instant::now();
        let mut kept_per_second = Vec::new();
        let mut x = 7u64;
        for second in 0..6u64 {
            let now = start + Duration::from_secs(second);
            let spans: Vec<Span> = (0..1_000)
                .map(|_| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    span(u128::from(x >> 8), "op", "")
                })
                .collect();
            let mut req = request("busy", spans);
            kept_per_second.push(head.apply(&mut req, now).kept);
        }
        // 1000 spans/s against 100/s: k = 4 (1000/16 = 62.5 <= 100 < 125) from second 1 on.
        assert_eq!(kept_per_second[0], 1_000);
        assert_eq!(
            telemetry.value(STEP_METRIC, &[("service", "busy")]),
            4.0,
            "{kept_per_second:?}"
        );
        for kept in &kept_per_second[2..] {
            assert!((30..=100).contains(kept), "{kept_per_second:?}");
        }
        let dropped = telemetry.sum(SPANS_METRIC, &[("decision", "dropped")]);
        assert!(dropped > 4_000.0, "{dropped}");
    }

    #[test]
    fn default_config_is_a_noop_and_reload_applies() {
        let head = sampler(HeadConfig::default());
        assert!(head.is_noop());
        let mut req = request("a", vec![span(5, "x", "")]);
        assert_eq!(head.apply(&mut req, Instant::now()), HeadOutcome::default());
        head.reload(&HeadConfig {
            ratio: 0.0,
            ..Default::default()
        })
        .unwrap();
        assert!(!head.is_noop());
        head.apply(&mut req, Instant::now());
        assert!(req.resource_spans.is_empty());
        let err = head
            .reload(&HeadConfig {
                ratio: 2.0,
                ..Default::default()
            })
            .unwrap_err()
            .to_string();
        assert!(err.contains("sampling.head.ratio: 2"), "{err}");
    }
}
