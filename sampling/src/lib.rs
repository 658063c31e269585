//! Trace sampling: consistent head sampling where spans enter Weft, tail sampling of whole
//! traces on the collector node that owns them, and the configuration of both (plus the
//! metrics limits of [`crate::metrics_limits`]), validated at start and reloadable.
//!
//! ```text
//!  OTLP export ─▶ head::HeadSampler (ingest node, or `weft up`)
//!                   R from trace ID / rv, T from ratio (service, operation), rate limits;
//!                   keep iff R >= max(T, upstream th); kept spans get ot=th:T
//!        │ forwarded by trace ID (every span of a trace reaches the same R collectors)
//!        ▼
//!  collector: WAL record "held" ─▶ tail::TailSampler pending traces (bounded)
//!        │ quiet for decision_wait (or too old, or evicted)
//!        ▼ policy::PolicySet::evaluate ─▶ threshold T' (0 = keep all, 2^56 = drop)
//!  WAL record "decision" (kept spans with ot=th:max(T, T'), decided trace IDs)
//!        ─▶ store live rows ─▶ Parquet; sample_weight = 2^56 / (2^56 - th)
//! ```
//!
//! Every probabilistic element (head ratios, rate limits, the tail's probabilistic and
//! rate-limit policies) is a threshold on the same per-trace randomness, so the stages nest
//! and a kept span's adjusted count is exactly the inverse of its probability of being kept
//! given what the deterministic policies saw.

pub mod config;
pub mod error;
pub mod head;
pub mod metrics_limits;
pub mod policy;
pub mod tail;

use std::sync::Arc;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

pub use config::{HeadConfig, SamplingConfig, TailConfig};
pub use error::Error;

/// Service name used when a resource has none (as the schema's `service_name` column).
pub const UNKNOWN_SERVICE: &str = "unknown_service";

/// One span held by the tail sampler, with the resource and scope it came with.
#[derive(Debug, Clone)]
pub struct HeldSpan {
    /// Resource and schema URL; `scope_spans` is empty.
    pub resource: Arc<ResourceSpans>,
    /// Scope and schema URL; `spans` is empty.
    pub scope: Arc<ScopeSpans>,
    pub span: Span,
}

impl HeldSpan {
    /// The resource's `service.name`.
    pub fn service(&self) -> &str {
        resource_service(&self.resource)
    }
}

/// `service.name` of a resource, or [`UNKNOWN_SERVICE`].
pub fn resource_service(resource: &ResourceSpans) -> &str {
    resource
        .resource
        .as_ref()
        .and_then(|r| {
            r.attributes.iter().find_map(|kv| {
                (kv.key == "service.name").then_some(())?;
                match kv.value.as_ref()?.value.as_ref()? {
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(s) => {
                        Some(s.as_str())
                    }
                    _ => None,
                }
            })
        })
        .unwrap_or(UNKNOWN_SERVICE)
}
