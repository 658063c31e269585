//! The operator view of the ring: `GET /api/v1/cluster` on every cluster role, and
//! `weft ring`, which prints it as a table.
//!
//! ```text
//!  Membership ─> ClusterView (members, state, HashRing) ─┐
//!  Ingest::status() (queues, circuits, spool) ───────────┼─> JSON ─> weft ring (table)
//! ```
//!
//! Every node answers with its own view: ingest nodes add their forwarding state, which is
//! where queue depths and spool sizes live.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{Query, State};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;
use weft_cluster::membership::Membership;
use weft_cluster::{ClusterView, MemberState};
use weft_ingest::Ingest;

/// What a node knows about the cluster, for the operator view.
#[derive(Clone)]
pub(crate) struct Source {
    role: &'static str,
    node_id: String,
    view: watch::Receiver<Arc<ClusterView>>,
    detection_bound: Duration,
    ingest: Option<Arc<Ingest>>,
}

impl Source {
    pub(crate) fn new(
        role: &'static str,
        node_id: &str,
        membership: &Membership,
        ingest: Option<Arc<Ingest>>,
    ) -> Self {
        Self {
            role,
            node_id: node_id.to_owned(),
            view: membership.view(),
            detection_bound: membership.detection_bound(),
            ingest,
        }
    }
}

pub(crate) fn router(source: Source) -> Router {
    Router::new()
        .route("/api/v1/cluster", get(cluster))
        .with_state(source)
}

#[derive(Debug, Deserialize)]
struct Params {
    /// Include every token range of every member.
    #[serde(default)]
    ranges: bool,
}

#[derive(Debug, Serialize, Deserialize)]
struct ClusterReport {
    role: String,
    node_id: String,
    view_version: u64,
    replication: usize,
    vnodes: u32,
    /// Worst case from a node's last sign of life to being marked down.
    detection_bound_ms: u64,
    members: Vec<MemberReport>,
    /// Ingest nodes: per-collector queues, circuits, spool (see `Ingest::status`).
    #[serde(default)]
    forwarding: Option<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
struct MemberReport {
    node_id: String,
    state: MemberState,
    grpc_addr: String,
    http_addr: String,
    /// Fraction of the hash space this node is primary for.
    ring_share: f64,
    /// Number of primary token ranges (one per vnode, fewer when tokens are adjacent).
    token_ranges: usize,
    /// `(start exclusive, end inclusive]` as hex, when asked for with `?ranges=true`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    ranges: Vec<(String, String)>,
}

/// One node's part of the ring: fraction of the hash space, number of ranges, the ranges.
#[derive(Default)]
struct Share {
    fraction: f64,
    count: usize,
    ranges: Vec<(String, String)>,
}

async fn cluster(State(source): State<Source>, Query(params): Query<Params>) -> Json<Value> {
    let view = source.view.borrow().clone();
    let mut shares: BTreeMap<&str, Share> = BTreeMap::new();
    for (start, end, node) in view.ring.primary_ranges() {
        let entry = shares.entry(node).or_default();
        // Wrapping subtraction measures the arc that crosses zero correctly.
        entry.fraction += end.wrapping_sub(start) as f64 / 2f64.powi(64);
        entry.count += 1;
        if params.ranges {
            entry
                .ranges
                .push((format!("{start:016x}"), format!("{end:016x}")));
        }
    }
    let single_node = view.members.len() == 1;
    let members = view
        .members
        .iter()
        .map(|m| {
            let Share {
                fraction: share,
                count,
                ranges,
            } = shares.remove(m.node_id.as_str()).unwrap_or_default();
            MemberReport {
                node_id: m.node_id.clone(),
                state: m.state,
                grpc_addr: m.grpc_addr.clone(),
                http_addr: m.http_addr.clone(),
                ring_share: if single_node { 1.0 } else { share },
                token_ranges: count,
                ranges,
            }
        })
        .collect();
    let report = ClusterReport {
        role: source.role.to_owned(),
        node_id: source.node_id.clone(),
        view_version: view.version,
        replication: view.ring.replication(),
        vnodes: view.ring.vnodes(),
        detection_bound_ms: source.detection_bound.as_millis() as u64,
        members,
        forwarding: source
            .ingest
            .as_ref()
            .and_then(|i| serde_json::to_value(i.status()).ok()),
    };
    Json(serde_json::to_value(report).unwrap_or(Value::Null))
}

/// `weft ring`: fetches `/api/v1/cluster` from `url` and prints it.
pub(crate) async fn print_ring(url: &str, ranges: bool, json: bool) -> anyhow::Result<()> {
    let endpoint = format!(
        "{}/api/v1/cluster{}",
        url.trim_end_matches('/'),
        if ranges { "?ranges=true" } else { "" }
    );
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()?
        .get(&endpoint)
        .send()
        .await
        .with_context(|| format!("GET {endpoint}"))?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status.is_success(), "GET {endpoint}: {status}: {body}");
    if json {
        println!("{body}");
        return Ok(());
    }
    let report: ClusterReport =
        serde_json::from_str(&body).with_context(|| format!("reading {endpoint}"))?;
    print!("{}", render(&report));
    Ok(())
}

/// Per-node forwarding figures of an ingest node, keyed by node id.
fn forwarding_by_node(report: &ClusterReport) -> BTreeMap<String, &Value> {
    let nodes = report
        .forwarding
        .as_ref()
        .and_then(|f| f.get("nodes"))
        .and_then(Value::as_array);
    nodes
        .into_iter()
        .flatten()
        .filter_map(|n| Some((n.get("node_id")?.as_str()?.to_owned(), n)))
        .collect()
}

fn render(report: &ClusterReport) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} node {} · view {} · R={} · {} vnodes/node · down after ≤ {:.1}s without a sign of life",
        report.role,
        report.node_id,
        report.view_version,
        report.replication,
        report.vnodes,
        report.detection_bound_ms as f64 / 1000.0
    );
    let forwarding = forwarding_by_node(report);
    let field = |node: &str, key: &str| -> String {
        forwarding
            .get(node)
            .and_then(|n| n.get(key))
            .map(|v| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| "-".to_owned())
    };
    let _ = writeln!(
        out,
        "{:<20} {:<5} {:<22} {:>6} {:>6} {:>9} {:>11} {:<9} {:>7} {:>11}",
        "NODE",
        "STATE",
        "GRPC",
        "SHARE",
        "RANGES",
        "QUEUED",
        "QUEUE_BYTES",
        "CIRCUIT",
        "SPOOLED",
        "SPOOL_BYTES"
    );
    for m in &report.members {
        let state = match m.state {
            MemberState::Up => "up",
            MemberState::Down => "down",
        };
        let _ = writeln!(
            out,
            "{:<20} {:<5} {:<22} {:>5.1}% {:>6} {:>9} {:>11} {:<9} {:>7} {:>11}",
            m.node_id,
            state,
            m.grpc_addr,
            m.ring_share * 100.0,
            m.token_ranges,
            field(&m.node_id, "queue_batches"),
            field(&m.node_id, "queue_bytes"),
            field(&m.node_id, "circuit"),
            field(&m.node_id, "spool_hints"),
            field(&m.node_id, "spool_bytes"),
        );
        for (start, end) in &m.ranges {
            let _ = writeln!(out, "    ({start}, {end}]");
        }
    }
    // Hints for nodes that are no longer members are re-routed, but show while they last.
    for (node, _) in forwarding
        .iter()
        .filter(|(n, _)| !report.members.iter().any(|m| &m.node_id == *n))
    {
        let _ = writeln!(
            out,
            "{:<20} {:<5} {:<22} {:>6} {:>6} {:>9} {:>11} {:<9} {:>7} {:>11}",
            node,
            "gone",
            "-",
            "-",
            "-",
            field(node, "queue_batches"),
            field(node, "queue_bytes"),
            field(node, "circuit"),
            field(node, "spool_hints"),
            field(node, "spool_bytes"),
        );
    }
    out
}
