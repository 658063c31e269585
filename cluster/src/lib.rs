//! What every role of a Weft cluster shares: who the collector nodes are, whether each is
//! up, and the hash ring built over them.
//!
//! ```text
//!  membership (static list | DNS | chitchat gossip)
//!      │ probes / gossip ─> failure detector ─> Member { node_id, addresses, state }
//!      ▼
//!  watch::Receiver<Arc<ClusterView>>  ── members + HashRing over every member
//!      ├─ ingest: preference list per trace ID, first R members that are Up
//!      ├─ query:  fan-out to every member for unflushed rows, partial if one fails
//!      └─ operator view: /api/v1/cluster, `weft ring`
//! ```
//!
//! The ring holds membership, not liveness: a node that is down keeps its tokens (so a
//! short outage moves nothing) and routing walks past it to the next member that is up.
//! A node leaves the ring only when membership drops it (removed from the static list or
//! DNS, or declared dead and forgotten by gossip).

pub mod error;
pub mod info;
pub mod membership;
pub mod ring;
pub mod snapshot;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::ring::{DEFAULT_VNODES, HashRing};
pub use error::{Error, Result};

/// Directory under the shared storage root holding one sub-directory per collector node.
pub const NODES_DIR: &str = "nodes";

/// `nodes/<id>`: where collector `<id>` keeps its files and manifests in `storage.url`.
pub fn node_prefix(node_id: &str) -> String {
    format!("{NODES_DIR}/{node_id}")
}

/// Where collector `node_id` keeps its WAL (and, on the default local storage, its manifests
/// and Parquet files) under the cluster's storage root.
pub fn node_data_dir(storage: &Path, node_id: &str) -> PathBuf {
    storage.join(NODES_DIR).join(node_id)
}

/// Whether a collector node can take data, as this process sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberState {
    /// Answering probes (or gossiping) and ready.
    Up,
    /// Failed its probes or declared dead by gossip; still a ring member.
    Down,
}

/// What a collector node says about itself at `GET /internal/v1/info` (and in gossip).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    /// Internal OTLP/gRPC address ingest nodes forward to, `host:port`.
    pub grpc_addr: String,
    /// Internal HTTP address (health, info, snapshots for queries), `host:port`.
    pub http_addr: String,
    /// `false` while starting (WAL replay) or shutting down.
    pub ready: bool,
}

/// One collector node as this process sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub node_id: String,
    pub grpc_addr: String,
    pub http_addr: String,
    pub state: MemberState,
}

/// The cluster as this process sees it now. Cheap to clone behind an `Arc`; a new view is
/// published whenever membership or a member's state changes.
#[derive(Debug, Clone)]
pub struct ClusterView {
    /// Every member, sorted by `node_id`.
    pub members: Vec<Member>,
    /// The ring over every member, up or down.
    pub ring: Arc<HashRing>,
    /// Increases with every change, for logs and the operator view.
    pub version: u64,
}

impl ClusterView {
    pub fn new(mut members: Vec<Member>, vnodes: u32, replication: usize, version: u64) -> Self {
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members.dedup_by(|a, b| a.node_id == b.node_id);
        let ring = HashRing::new(
            members.iter().map(|m| m.node_id.clone()),
            vnodes,
            replication,
        );
        Self {
            members,
            ring: Arc::new(ring),
            version,
        }
    }

    pub fn empty(vnodes: u32, replication: usize) -> Self {
        Self::new(Vec::new(), vnodes, replication, 0)
    }

    pub fn member(&self, node_id: &str) -> Option<&Member> {
        self.members
            .binary_search_by(|m| m.node_id.as_str().cmp(node_id))
            .ok()
            .map(|i| &self.members[i])
    }

    pub fn is_up(&self, node_id: &str) -> bool {
        self.member(node_id)
            .is_some_and(|m| m.state == MemberState::Up)
    }

    pub fn up_count(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state == MemberState::Up)
            .count()
    }

    /// Where copies of `trace_id` go: the first R members of its preference list that are
    /// up (a down owner's share goes to the next member up the ring). Fewer than R when
    /// fewer are up.
    pub fn targets(&self, trace_id: &[u8]) -> Vec<&Member> {
        let replication = self.ring.replication();
        self.ring
            .preference_list(trace_id)
            .filter_map(|node| self.member(node))
            .filter(|m| m.state == MemberState::Up)
            .take(replication)
            .collect()
    }
}

/// `[cluster]` settings shared by `weft ingest`, `weft collector` and `weft query`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// This node's name on the ring (collectors) or in gossip. Empty: `<hostname>-<port>`
    /// of the node's internal listener. Must stay the same across restarts of a collector,
    /// since its data directory is named after it.
    pub node_id: String,
    /// Root of the shared storage: collector `X` keeps its WAL under `<storage>/nodes/X/`
    /// (and, unless `storage.url` points elsewhere, its files and manifests too), the
    /// query service reads every node's directory.
    pub storage: PathBuf,
    /// Copies of every trace (distinct collector nodes).
    pub replication: usize,
    /// Virtual nodes per collector on the ring.
    pub vnodes: u32,
    /// Query nodes: deadline of each call asking a collector for its unflushed rows; a
    /// node that misses it makes the result partial (with a warning), never late.
    pub fanout_timeout_ms: u64,
    pub membership: MembershipConfig,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            storage: PathBuf::from("weft-cluster"),
            replication: 2,
            vnodes: DEFAULT_VNODES,
            fanout_timeout_ms: 2000,
            membership: MembershipConfig::default(),
        }
    }
}

/// How nodes find the collectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MembershipMode {
    /// `static_collectors`: internal HTTP addresses, probed.
    Static,
    /// `dns_name` (`host:port`), re-resolved every `dns_refresh_secs`; every address
    /// (A/AAAA, as a Kubernetes headless service gives) is a collector, probed.
    Dns,
    /// chitchat gossip over UDP: collectors announce themselves; its phi-accrual failure
    /// detector marks nodes dead.
    Gossip,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MembershipConfig {
    pub mode: MembershipMode,
    /// Static mode: collectors' internal HTTP addresses (`host:port`).
    pub static_collectors: Vec<String>,
    /// DNS mode: `name:port` of the collectors' internal HTTP port.
    pub dns_name: String,
    pub dns_refresh_secs: u64,
    /// Static and DNS modes: how often each collector's `/internal/v1/info` is fetched...
    pub probe_interval_ms: u64,
    /// ...with this deadline...
    pub probe_timeout_ms: u64,
    /// ...and after this many failures in a row it is down (one success brings it back).
    pub down_after_failures: u32,
    /// Gossip mode: UDP address to listen on.
    pub gossip_listen: String,
    /// Gossip mode: address others reach this node at (empty: `gossip_listen`).
    pub gossip_advertise: String,
    /// Gossip mode: `host:port` of nodes to join through.
    pub gossip_seeds: Vec<String>,
    /// Gossip mode: cluster name; nodes with another name are ignored.
    pub gossip_cluster_id: String,
    pub gossip_interval_ms: u64,
    /// Gossip mode: phi-accrual threshold above which a node is dead.
    pub gossip_phi_threshold: f64,
    /// Gossip mode: how long a dead node stays a ring member before it is forgotten.
    pub gossip_dead_grace_secs: u64,
}

impl Default for MembershipConfig {
    fn default() -> Self {
        Self {
            mode: MembershipMode::Static,
            static_collectors: Vec::new(),
            dns_name: String::new(),
            dns_refresh_secs: 10,
            probe_interval_ms: 500,
            probe_timeout_ms: 500,
            down_after_failures: 3,
            gossip_listen: "127.0.0.1:7946".to_owned(),
            gossip_advertise: String::new(),
            gossip_seeds: Vec::new(),
            gossip_cluster_id: "weft".to_owned(),
            gossip_interval_ms: 200,
            gossip_phi_threshold: 8.0,
            gossip_dead_grace_secs: 3600,
        }
    }
}
