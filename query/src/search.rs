//! Exact trace search (owner: search + Jaeger work). Placeholder until filled in.

use std::sync::Arc;

use axum::Router;

use crate::QueryService;

/// `GET /api/v1/search`.
pub fn router(_service: Arc<QueryService>) -> Router {
    Router::new()
}
