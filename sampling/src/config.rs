//! `[sampling]`: head sampling (`[sampling.head]`), tail sampling (`[sampling.tail]`,
//! `[[sampling.tail.policies]]`) and metrics limits (`[sampling.metrics]`).
//!
//! Every field has a default; the defaults sample nothing away. [`SamplingConfig::validate`]
//! runs at start and on every reload and names the offending key in its error, so a bad
//! reload leaves the running configuration in place.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use weft_schemas::sampling::Threshold;

use super::policy::{NamedPolicy, PolicySet};
use crate::Error;
use crate::metrics_limits::MetricsLimitsConfig;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SamplingConfig {
    pub head: HeadConfig,
    pub tail: TailConfig,
    pub metrics: MetricsLimitsConfig,
}

/// How spans that already carry a sampling threshold (`ot=th:…`) from upstream are treated.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamDecision {
    /// Keep them as the upstream sampler decided, with its adjusted count.
    #[default]
    Respect,
    /// Sample them again; the stricter threshold wins (keeping a span is consistent with
    /// the upstream decision, and its adjusted count grows accordingly).
    Resample,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HeadConfig {
    /// Fraction of traces kept when no service or operation rule applies (1 = all).
    pub ratio: f64,
    /// Per-service rules, by `service.name`.
    pub services: BTreeMap<String, ServiceHeadConfig>,
    pub upstream: UpstreamDecision,
    /// Significant hex digits of the thresholds written to tracestate (1-14).
    pub precision: u8,
}

impl Default for HeadConfig {
    fn default() -> Self {
        Self {
            ratio: 1.0,
            services: BTreeMap::new(),
            upstream: UpstreamDecision::Respect,
            precision: 4,
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServiceHeadConfig {
    /// This service's ratio (default: `sampling.head.ratio`).
    pub ratio: Option<f64>,
    /// Ratios by span name, overriding the service's.
    pub operations: BTreeMap<String, f64>,
    /// Most spans per second kept for this service on one node (0 = no limit). Enforced by
    /// lowering the ratio in powers of two, so decisions stay consistent by trace ID.
    pub max_spans_per_second: f64,
}

/// What happens when `max_pending_traces` or `max_pending_spans` is reached.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Eviction {
    /// The oldest pending traces are decided at once with what has arrived.
    #[default]
    DecideOldest,
    /// The oldest pending traces are kept whole, without evaluating policies.
    KeepOldest,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Off by default: every span that passes head sampling is stored.
    pub enabled: bool,
    /// A trace is decided once no span of it arrived for this long.
    pub decision_wait_ms: u64,
    /// ...or once it has been pending this long, even if spans keep coming.
    pub max_trace_age_ms: u64,
    /// Memory bound: most traces pending a decision.
    pub max_pending_traces: usize,
    /// Memory bound: most spans pending a decision.
    pub max_pending_spans: usize,
    pub eviction: Eviction,
    /// Decisions remembered for late spans (oldest forgotten first).
    pub decision_cache_traces: usize,
    /// Evaluated in order; a trace is kept when any policy keeps it. Empty: the default
    /// set (errors, slow traces over 1 s, 10 % of the rest).
    pub policies: Vec<NamedPolicy>,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            decision_wait_ms: 5_000,
            max_trace_age_ms: 60_000,
            max_pending_traces: 100_000,
            max_pending_spans: 2_000_000,
            eviction: Eviction::DecideOldest,
            decision_cache_traces: 500_000,
            policies: Vec::new(),
        }
    }
}

impl TailConfig {
    /// The configured policies, or the default set when none are listed.
    pub fn effective_policies(&self) -> Vec<NamedPolicy> {
        if self.policies.is_empty() {
            super::policy::default_policies()
        } else {
            self.policies.clone()
        }
    }
}

impl SamplingConfig {
    /// Checks every value; the error names the key, e.g.
    /// `sampling.head.services.checkout.ratio: 1.5 is outside [0, 1]`.
    pub fn validate(&self) -> Result<(), Error> {
        let h = &self.head;
        check_ratio("sampling.head.ratio", h.ratio)?;
        if !(1..=14).contains(&h.precision) {
            return Err(Error::config(
                "sampling.head.precision",
                format!("{} is outside 1-14", h.precision),
            ));
        }
        for (service, s) in &h.services {
            if let Some(r) = s.ratio {
                check_ratio(&format!("sampling.head.services.{service}.ratio"), r)?;
            }
            for (op, r) in &s.operations {
                check_ratio(
                    &format!("sampling.head.services.{service}.operations.{op}"),
                    *r,
                )?;
            }
            if !(s.max_spans_per_second.is_finite() && s.max_spans_per_second >= 0.0) {
                return Err(Error::config(
                    format!("sampling.head.services.{service}.max_spans_per_second"),
                    format!("{} must be >= 0", s.max_spans_per_second),
                ));
            }
        }
        let t = &self.tail;
        for (key, v) in [
            ("decision_wait_ms", t.decision_wait_ms as usize),
            ("max_trace_age_ms", t.max_trace_age_ms as usize),
            ("max_pending_traces", t.max_pending_traces),
            ("max_pending_spans", t.max_pending_spans),
        ] {
            if v == 0 {
                return Err(Error::NotPositive {
                    key: format!("sampling.tail.{key}"),
                });
            }
        }
        if t.max_trace_age_ms < t.decision_wait_ms {
            return Err(Error::TraceAgeBelowWait {
                max_trace_age_ms: t.max_trace_age_ms,
                decision_wait_ms: t.decision_wait_ms,
            });
        }
        PolicySet::compile(&t.effective_policies())
            .map_err(|e| e.in_section("sampling.tail.policies"))?;
        self.metrics
            .validate()
            .map_err(|e| e.in_section("sampling.metrics"))?;
        Ok(())
    }
}

fn check_ratio(key: &str, ratio: f64) -> Result<(), Error> {
    if ratio == 0.0 {
        return Ok(());
    }
    Threshold::from_ratio(ratio)
        .map(|_| ())
        .map_err(|_| Error::config(key, format!("{ratio} is outside [0, 1]")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tail_errors_name_the_key() {
        let mut config = SamplingConfig::default();
        config.tail.max_pending_spans = 0;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "sampling.tail.max_pending_spans must be > 0"
        );
        let mut config = SamplingConfig::default();
        config.tail.decision_wait_ms = 10;
        config.tail.max_trace_age_ms = 5;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "sampling.tail.max_trace_age_ms (5) must be >= decision_wait_ms (10)"
        );
        let mut config = SamplingConfig::default();
        config.head.precision = 20;
        assert_eq!(
            config.validate().unwrap_err().to_string(),
            "sampling.head.precision: 20 is outside 1-14"
        );
    }
}
