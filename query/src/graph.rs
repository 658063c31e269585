//! Service dependency graph computed from stored spans (owner: graph + latency work).
//! Placeholder until filled in.

use std::sync::Arc;

use axum::Router;
use datafusion::prelude::SessionContext;
use serde::Serialize;

use crate::{QueryService, Result};

/// One Jaeger dependency link: `parent` service called `child` service `call_count` times
/// (Jaeger semantics: every span whose parent span is in the same trace, self-links included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// Jaeger dependency links for spans starting in `[start_ns, end_ns)`.
pub async fn jaeger_dependency_links(
    _service: &QueryService,
    _start_ns: i64,
    _end_ns: i64,
) -> Result<Vec<DependencyLink>> {
    Ok(Vec::new())
}

/// Registers graph-related SQL table functions in a query session.
pub fn register(_ctx: &SessionContext, _service: &QueryService) -> Result<()> {
    Ok(())
}

/// `GET /api/v1/dependencies`.
pub fn router(_service: Arc<QueryService>) -> Router {
    Router::new()
}
