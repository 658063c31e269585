//! Service dependency graph for any time range, computed from the stored spans (no side
//! pipeline, nothing precomputed at ingest).
//!
//! Two views of the same parent → child relation:
//!
//! * **Jaeger links** ([`jaeger_dependency_links`], Jaeger's `/api/dependencies`, the
//!   native `GET /api/v1/dependencies/links` and SQL `dependency_links(start, end)`): for every
//!   span whose parent span is in the same trace, `parent service → child service`,
//!   same-service pairs included.
//! * **Service graph** ([`service_graph`], `GET /api/v1/dependencies`, SQL
//!   `service_graph(start, end)`), with the OpenTelemetry servicegraph connector's
//!   semantics: a CLIENT or PRODUCER span with a SERVER or CONSUMER child is one call
//!   `client service → server service` (kind `request` or `messaging`); a CLIENT/PRODUCER
//!   span without such a child is a call to a virtual node named by its `peer.service`,
//!   else `db.system`, else `messaging.system`, else `server.address`, else `unknown`; a
//!   root SERVER/CONSUMER span is a call from the virtual node `user`. Each edge carries
//!   calls, errors (client or server span with status ERROR), client- and server-side
//!   p50/p95/p99 and the trace ids of its slowest calls. Counts and percentiles are
//!   weighted by `sample_weight`: a call counts the caller's weight (the server's for
//!   `user` edges), each side's sketch its own span's weight.
//!
//! ```text
//!  spans in [start, end): 12 columns, start_time pushed into Parquet
//!    │ partition = group of whole files in storage order, plus the live rows
//!    ▼
//!  pass 1 (runs.rs, one task per partition)
//!    files are sorted by trace: consecutive rows of one trace form a run;
//!    a per-run span_id map resolves parents; unsorted live rows are sorted first
//!    ─> links, edges (+ sketches, examples), and Pending: spans whose parent was not
//!       in their run (traces split across files, partitions, the live rows)
//!    ▼ merge partitions
//!  pass 2 (stitch.rs, only when something is pending)
//!    rescan only the traces of pending spans (trace_id IN (…): bloom filters, statistics)
//!    ─> find their parents; add links and edges; a parent that pass 1 counted as a call to
//!       a virtual peer is taken back out of that edge (sketch counts are subtractable)
//!    ▼
//!  Partial ─> Vec<DependencyLink> | ServiceGraph (nodes, edges) | SQL rows
//! ```
//!
//! Why not a SQL self-join: joining spans to their parents hashes every span of the range
//! (a DataFusion self-join took 2–5.6 s over 10 million spans on two cores). The runs only
//! ever hold one trace's spans in a map, decoding Parquet is the dominant cost, and every
//! partition decodes on its own core. Memory: one run, the batches the current run has
//! rows in, the edge aggregates, and `Pending`, which grows with the spans whose parent is
//! in another run (traces cut by a flush or an hour boundary, the live rows) — and with
//! spans whose parent is never stored at all (a proxy that propagates context without
//! reporting spans): those cost a row each in `Pending` and a wider second scan (beyond
//! 20,000 traces the trace-id list is no longer pushed into Parquet).
//!
//! Semantics at the edges of the data:
//! * Both ends of a parent → child pair must start inside the range; a child whose parent
//!   started before `start` (or was never stored) adds no link and no edge. A SERVER span
//!   with a parent that is not stored is not a `user` edge (the connector drops it too).
//! * A PRODUCER with several CONSUMER children counts one call per consumer (fan-out), and
//!   a CLIENT with several SERVER children one per server; the connector counts only the
//!   first.
//! * Self-calls through the network (client and server in the same service) are edges.
//! * Jaeger `callCount` is the weighted count rounded to an integer (1 per span unsampled).

pub(crate) mod model;
mod runs;
mod stitch;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use datafusion::catalog::Session;
use serde::{Deserialize, Serialize};

pub use crate::span_scan::TimeRange;
pub use model::{Edge, EdgeKind, Node, Percentiles, ServiceGraph, VirtualNode};

use crate::{Error, QueryService, Result};

/// One Jaeger dependency link: `parent` service called `child` service `call_count` times
/// (Jaeger semantics: every span whose parent span is in the same trace, self-links included).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// Jaeger dependency links for spans starting in `[start_ns, end_ns)`, sorted by parent
/// then child. An empty range has no links.
pub async fn jaeger_dependency_links(
    service: &QueryService,
    start_ns: i64,
    end_ns: i64,
) -> Result<Vec<DependencyLink>> {
    let range = TimeRange { start_ns, end_ns };
    let partial = with_session(service, range).await?;
    Ok(partial.links())
}

/// The service graph of spans starting in `[start_ns, end_ns)`.
pub async fn service_graph(
    service: &QueryService,
    start_ns: i64,
    end_ns: i64,
) -> Result<ServiceGraph> {
    let range = TimeRange { start_ns, end_ns };
    let partial = with_session(service, range).await?;
    Ok(partial.graph(start_ns, end_ns))
}

/// Runs [`compute`] in a fresh session within the query time limit.
async fn with_session(service: &QueryService, range: TimeRange) -> Result<model::Partial> {
    let timeout = service.config().timeout_secs;
    let ctx = service.session()?;
    let state = ctx.state();
    tokio::time::timeout(Duration::from_secs(timeout), compute(&state, range))
        .await
        .map_err(|_| Error::Timeout(timeout))?
}

/// Both passes over the session's `spans` table (see the module docs).
pub(crate) async fn compute(session: &dyn Session, range: TimeRange) -> Result<model::Partial> {
    let partials = crate::span_scan::scan(
        session,
        &runs::COLUMNS,
        range,
        Vec::new(),
        runs::RunWorker::new,
    )
    .await?;
    let mut all = model::Partial::default();
    for partial in partials {
        all.merge(partial);
    }
    stitch::stitch(session, range, &mut all).await?;
    Ok(all)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RangeParams {
    pub(crate) start: Option<String>,
    pub(crate) end: Option<String>,
}

/// One parent → child service pair of the native API: `call_count` spans of `child` had a
/// parent span of `parent` in the same trace (Jaeger's link, with the SQL function's names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ServiceLink {
    pub parent: String,
    pub child: String,
    pub call_count: u64,
}

/// The answer to `GET /api/v1/dependencies/links`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ts_rs::TS)]
pub struct ServiceLinks {
    pub start_ns: i64,
    pub end_ns: i64,
    /// Sorted by parent, then child; same-service pairs included.
    pub links: Vec<ServiceLink>,
}

/// `GET /api/v1/dependencies?start=&end=` (client → server calls, [`ServiceGraph`]) and
/// `GET /api/v1/dependencies/links?start=&end=` (parent → child pairs, [`ServiceLinks`]);
/// times as in `crate::params`, the default the last hour.
pub fn router(service: Arc<QueryService>) -> Router {
    Router::new()
        .route("/api/v1/dependencies", get(dependencies))
        .route("/api/v1/dependencies/links", get(links))
        .with_state(service)
}

async fn links(
    State(service): State<Arc<QueryService>>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<ServiceLinks>> {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let range = crate::params::time_range(
        params.start.as_deref(),
        params.end.as_deref(),
        crate::params::now_ns(),
    )?;
    let links = jaeger_dependency_links(&service, range.start_ns, range.end_ns)
        .await?
        .into_iter()
        .map(|l| ServiceLink {
            parent: l.parent,
            child: l.child,
            call_count: l.call_count,
        })
        .collect();
    Ok(Json(ServiceLinks {
        start_ns: range.start_ns,
        end_ns: range.end_ns,
        links,
    }))
}

async fn dependencies(
    State(service): State<Arc<QueryService>>,
    params: Result<Query<RangeParams>, QueryRejection>,
) -> Result<Json<ServiceGraph>> {
    let Query(params) = params.map_err(|e| Error::BadRequest(e.body_text()))?;
    let range = crate::params::time_range(
        params.start.as_deref(),
        params.end.as_deref(),
        crate::params::now_ns(),
    )?;
    Ok(Json(
        service_graph(&service, range.start_ns, range.end_ns).await?,
    ))
}

#[cfg(test)]
pub(crate) mod tests;
