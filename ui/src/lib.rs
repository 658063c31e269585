//! Weft's web trace viewer, embedded in the binary so `weft up` serves it at `/`.
//!
//! ```text
//!  browser ── GET / ──> assets/index.html (no build step, no external resources)
//!     ├── GET  /api/v1/traces/{id} ──> waterfall of the trace's spans
//!     └── POST /api/v1/sql         ──> result table
//! ```
//! This first viewer is deliberately small: trace by ID and SQL. Search, service map
//! and latency reports belong to the full viewer.

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;

/// The viewer's single page.
pub const INDEX_HTML: &str = include_str!("../assets/index.html");

/// Routes serving the viewer.
pub fn router() -> Router {
    Router::new().route("/", get(index))
}

async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        INDEX_HTML,
    )
}
