//! Latency reports per service and operation (owner: graph + latency work). Placeholder.

use std::sync::Arc;

use axum::Router;

use crate::QueryService;

/// `GET /api/v1/latency`.
pub fn router(_service: Arc<QueryService>) -> Router {
    Router::new()
}
