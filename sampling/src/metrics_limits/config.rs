//! `[sampling.metrics]`: what the limiter keeps, drops and merges; validated by compiling
//! the rules the limiter runs.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Rules;

/// `[sampling.metrics]`. The default changes nothing.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsLimitsConfig {
    /// Most series per metric (name + type) on one node; 0 = no limit.
    pub max_series_per_metric: usize,
    /// Limits by exact metric name, overriding `max_series_per_metric` (each > 0).
    pub limits: BTreeMap<String, usize>,
    /// An admitted series (or kept state) idle this long is forgotten; 0 = never.
    pub series_ttl_secs: u64,
    /// Most limited metrics tracked; points of further metrics all go to overflow.
    pub max_metrics: usize,
    /// Most source series whose last cumulative value is kept (for delta conversion).
    pub max_cumulative_series: usize,
    /// Metric name globs (`*`, `?`); when not empty, only matching metrics are kept.
    pub include: Vec<String>,
    /// Points dropped by metric name and, optionally, an attribute's value.
    pub drop: Vec<DropRule>,
    /// Attribute keys removed from points; series that become equal are merged.
    pub drop_attributes: Vec<DropAttributeRule>,
}

impl Default for MetricsLimitsConfig {
    fn default() -> Self {
        Self {
            max_series_per_metric: 0,
            limits: BTreeMap::new(),
            series_ttl_secs: 3600,
            max_metrics: 100_000,
            max_cumulative_series: 100_000,
            include: Vec::new(),
            drop: Vec::new(),
            drop_attributes: Vec::new(),
        }
    }
}

fn any_metric() -> String {
    "*".to_owned()
}

/// `drop = [{ metric = "debug.*" }, { metric = "*", attribute = "env", value = "test" }]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DropRule {
    /// Metric name glob; default every metric.
    #[serde(default = "any_metric")]
    pub metric: String,
    /// Attribute key (exact): the point's attributes first, then the resource's (remote
    /// write: the labels). Without it the whole metric is dropped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attribute: Option<String>,
    /// Glob on the attribute's value as text (`true`, `42`, `1.5`); absent: any value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `drop_attributes = [{ metric = "*", key = "user.id" }]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DropAttributeRule {
    /// Metric name glob; default every metric.
    #[serde(default = "any_metric")]
    pub metric: String,
    /// Attribute key glob (remote write: label name; `__name__` is never removed).
    pub key: String,
}

impl MetricsLimitsConfig {
    /// Checks every value; the error names the key, e.g. `limits."x": must be > 0`.
    pub fn validate(&self) -> Result<(), crate::Error> {
        Rules::compile(self).map(|_| ())
    }
}
