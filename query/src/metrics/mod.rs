//! Metrics over HTTP and their downsampled copies.
//!
//! ```text
//!  GET /api/v1/metrics…  ─> query (list, series, range queries: the Engine)
//!                             │ plan_sources, rollup tables and columns
//!                             ▼
//!                           rollup (1m / 1h rollups of closed hours: write, plan, read)
//!                             │
//!  both read stored points ─> points (histogram columns ─> Histogram)
//!  both compute with ──────> weft_schemas::metrics_algebra (increases across resets,
//!                             histogram merge / increase / quantile)
//! ```
//!
//! Dependencies point one way: `query` ─> `rollup` ─> `points`; the rollups never call
//! the query engine.

pub(crate) mod points;
pub mod query;
pub mod rollup;

pub use query::router;
