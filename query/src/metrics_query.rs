//! Metrics queries: list metrics and series, range queries (owner: SQL + pgwire work).
//! Placeholder until filled in.

use std::sync::Arc;

use axum::Router;

use crate::QueryService;

/// `GET /api/v1/metrics...`.
pub fn router(_service: Arc<QueryService>) -> Router {
    Router::new()
}
