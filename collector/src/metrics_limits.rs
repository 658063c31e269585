//! Metrics limits. (Being written.)

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsLimitsConfig {}

impl MetricsLimitsConfig {
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
