//! Jaeger-compatible HTTP API, v1 and v3 (owner: search + Jaeger work). Placeholder.

use std::sync::Arc;

use axum::Router;

use crate::QueryService;

pub fn router(_service: Arc<QueryService>) -> Router {
    Router::new()
}
