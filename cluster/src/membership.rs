//! Membership: which collector nodes exist and whether each is up, as a stream of
//! [`ClusterView`]s every role (ingest, collector, query) consumes.
//!
//! ```text
//!  static: static_collectors ─────────────┐
//!  dns:    lookup_host(dns_name) every    ├─> target addresses ─> one prober per address
//!          dns_refresh_secs (A/AAAA) ─────┘        GET http://<addr>/internal/v1/info
//!                                                   │ every probe_interval, probe_timeout deadline
//!                                                   ▼
//!                                          ProbeTable: node id learnt from the answer,
//!                                          Up = last answer ready, Down = not ready or
//!                                          down_after_failures failures in a row
//!                                                   │
//!  gossip: chitchat over UDP ─ key-values + phi-accrual failure detector
//!          Up = live and ready, Down = dead / not ready / leaving,
//!          gone = garbage-collected after gossip_dead_grace_secs
//!                                                   │ members
//!                                                   ▼
//!                         Publisher: only on change ─> watch::Sender<Arc<ClusterView>>
//!                                                   │ version + 1, changes logged at info
//!                                                   ▼
//!                         forwarder (ingest), fan-out (query), operator view
//! ```
//!
//! **Static and DNS modes.** Nothing is announced: collectors serve
//! `GET /internal/v1/info` ([`super::info`]) and every other process probes them, each
//! address on its own task with a fresh connection per probe (a crashed process is then
//! seen as refused connections, not masked by a pooled keep-alive connection). An address
//! that has never answered is not a member: its node id is unknown (it is logged once at
//! warn). Once known, a node stays a member while down: the ring holds membership, not
//! liveness. In DNS mode an address that disappears from the answer is dropped, and its
//! node leaves the ring; a failed lookup keeps the previous addresses (a DNS hiccup must not
//! empty the ring). SRV records are not supported: `dns_name` is `host:port`, every A/AAAA
//! address is probed on that port (what a Kubernetes headless service gives). A member's
//! `http_addr` is the address it was probed at; `node_id` and `grpc_addr` come from its
//! answer.
//!
//! **Gossip mode.** Every role joins chitchat; the values below are this node's chitchat
//! key-values. The chitchat node id is the collector's `node_id` (ingest/query nodes use
//! `cluster.node_id`, or `<role>-<advertise addr>` when empty), the generation id is the
//! start time in ms since the Unix epoch, so a restarted collector supersedes its old
//! incarnation (per node id, the highest generation wins).
//!
//! | key         | who        | value                                                   |
//! |-------------|------------|---------------------------------------------------------|
//! | `role`      | everyone   | `collector`, `ingest` or `query`; only collectors are members |
//! | `grpc_addr` | collectors | internal OTLP/gRPC address (`host:port`)                |
//! | `http_addr` | collectors | internal HTTP address (`host:port`)                     |
//! | `ready`     | collectors | `true` / `false`, follows `NodeInfoHandle::set_ready`   |
//! | `leaving`   | everyone   | `true`, set by `shutdown` just before gossip stops      |
//!
//! **Failure detection, worst case** (what [`Membership::detection_bound`] returns):
//! - static / DNS: `down_after_failures × max(probe_interval, probe_timeout) + probe_timeout`
//!   after the last successful probe (a probe starts every `max(interval, its duration)`,
//!   the last failing one may take the whole timeout). A node answering "not ready" is down
//!   at the next probe.
//! - gossip: `(gossip_phi_threshold + 1) × gossip_interval` after the last heartbeat heard.
//!   chitchat's phi is (time since the last heartbeat) / (mean heartbeat inter-arrival); the
//!   mean starts at `gossip_interval` (its prior) and heartbeats arrive at least once per
//!   round in practice, and liveness is re-evaluated once per round (the `+ 1`). The bound
//!   stretches if the measured inter-arrival grows (packet loss, very large clusters). A
//!   graceful `shutdown` or `set_ready(false)` is seen within a few gossip rounds. A dead
//!   node leaves the ring `gossip_dead_grace_secs` after it was declared dead.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chitchat::transport::UdpTransport;
use chitchat::{
    Chitchat, ChitchatConfig, ChitchatHandle, ChitchatId, FailureDetectorConfig, NodeState,
    ProtocolVersion, spawn_chitchat,
};
use tokio::sync::{Mutex, mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{Instrument as _, debug, error, info, warn};

use super::info::{INFO_PATH, NodeInfoHandle};
use super::{ClusterConfig, ClusterView, Member, MemberState, MembershipMode, NodeInfo};
use crate::{Error, Result};

/// Chitchat key: the node's [`Role`] (`collector`, `ingest`, `query`).
pub const KEY_ROLE: &str = "role";
/// Chitchat key (collectors): internal OTLP/gRPC address.
pub const KEY_GRPC_ADDR: &str = "grpc_addr";
/// Chitchat key (collectors): internal HTTP address.
pub const KEY_HTTP_ADDR: &str = "http_addr";
/// Chitchat key (collectors): `true` when the node takes data.
pub const KEY_READY: &str = "ready";
/// Chitchat key: present (`true`) once the node is shutting down.
pub const KEY_LEAVING: &str = "leaving";

/// Which Weft process this is; in gossip mode only collectors become members.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Ingest,
    Collector,
    Query,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Collector => "collector",
            Role::Query => "query",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Running discovery: probers or a chitchat node, publishing [`ClusterView`]s.
pub struct Membership {
    role: Role,
    mode: MembershipMode,
    view: watch::Receiver<Arc<ClusterView>>,
    detection_bound: Duration,
    /// `None` once shut down.
    running: Option<Running>,
}

enum Running {
    /// Static / DNS: the driver owns the probers (they stop with it); DNS adds a resolver.
    Probing { tasks: Vec<JoinHandle<()>> },
    Gossip {
        chitchat: ChitchatHandle,
        driver: JoinHandle<()>,
        gossip_interval: Duration,
    },
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let view = self.view.borrow();
        f.debug_struct("Membership")
            .field("role", &self.role)
            .field("mode", &self.mode)
            .field("version", &view.version)
            .field("members", &view.members.len())
            .field("up", &view.up_count())
            .field("detection_bound", &self.detection_bound)
            .field("running", &self.running.is_some())
            .finish()
    }
}

impl Membership {
    /// Starts discovery per `config.membership.mode`. `me`: this process's description when
    /// it is a collector (gossip announces it; static/DNS need nothing, others probe us).
    /// Returns at once with an empty view (version 0); wait on [`Membership::view`].
    pub async fn start(
        config: &ClusterConfig,
        role: Role,
        me: Option<NodeInfoHandle>,
    ) -> Result<Self> {
        let m = &config.membership;
        let (tx, view) = watch::channel(Arc::new(ClusterView::empty(
            config.vnodes,
            config.replication,
        )));
        let publisher = Publisher {
            tx,
            vnodes: config.vnodes,
            replication: config.replication,
        };
        let (running, detection_bound) = match m.mode {
            MembershipMode::Static => {
                let targets: BTreeSet<String> = m
                    .static_collectors
                    .iter()
                    .map(|a| a.trim().to_owned())
                    .filter(|a| !a.is_empty())
                    .collect();
                // A collector is probed by others and routes nothing itself: it may know no one.
                if targets.is_empty() && role != Role::Collector {
                    return Err(setup_error(
                        "static membership needs cluster.membership.static_collectors",
                    ));
                }
                // The sender is dropped at once: the list never changes (the driver copes).
                let (_, targets) = watch::channel(targets);
                let settings = ProbeSettings::from_config(config);
                let driver = tokio::spawn(
                    run_probing(targets, probe_client(&settings)?, settings, publisher)
                        .instrument(span(role)),
                );
                (
                    Running::Probing {
                        tasks: vec![driver],
                    },
                    settings.detection_bound(),
                )
            }
            MembershipMode::Dns => {
                let name = m.dns_name.trim().to_owned();
                let has_port = name
                    .rsplit_once(':')
                    .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
                if !has_port {
                    return Err(setup_error(format!(
                        "DNS membership needs cluster.membership.dns_name as host:port, got {name:?}"
                    )));
                }
                let (targets_tx, targets) = watch::channel(BTreeSet::new());
                let every = Duration::from_secs(m.dns_refresh_secs.max(1));
                let resolver =
                    tokio::spawn(resolve_loop(name, every, targets_tx).instrument(span(role)));
                let settings = ProbeSettings::from_config(config);
                let driver = tokio::spawn(
                    run_probing(targets, probe_client(&settings)?, settings, publisher)
                        .instrument(span(role)),
                );
                (
                    Running::Probing {
                        tasks: vec![resolver, driver],
                    },
                    settings.detection_bound(),
                )
            }
            MembershipMode::Gossip => {
                let running = start_gossip(config, role, me, publisher).await?;
                (running, gossip_detection_bound(config))
            }
        };
        info!(
            role = %role,
            mode = ?m.mode,
            detection_bound_ms = detection_bound.as_millis() as u64,
            "membership started"
        );
        Ok(Self {
            role,
            mode: m.mode,
            view,
            detection_bound,
            running: Some(running),
        })
    }

    /// Every new view; `changed()` fires on each membership or state change.
    pub fn view(&self) -> watch::Receiver<Arc<ClusterView>> {
        self.view.clone()
    }

    /// The view now.
    pub fn current(&self) -> Arc<ClusterView> {
        self.view.borrow().clone()
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// Gossip: tells the others this node is leaving (`ready=false`, `leaving=true`), lets a
    /// few gossip rounds carry it, then stops gossiping. Static/DNS: stops probing. The
    /// last view stays readable; receivers then see the channel closed.
    pub async fn shutdown(mut self) {
        let Some(running) = self.running.take() else {
            return;
        };
        match running {
            Running::Probing { tasks } => {
                for task in &tasks {
                    task.abort();
                }
                for task in tasks {
                    let _ = task.await;
                }
            }
            Running::Gossip {
                chitchat,
                driver,
                gossip_interval,
            } => {
                chitchat
                    .with_chitchat(|c| {
                        let me = c.self_node_state();
                        me.set(KEY_READY, "false");
                        me.set(KEY_LEAVING, "true");
                    })
                    .await;
                // Gossip has no acknowledgements; with a fan-out of 3 per round, three rounds
                // reach a small cluster directly and a large one through relays. Whoever
                // misses it still marks us down through the failure detector.
                tokio::time::sleep(leave_wait(gossip_interval)).await;
                driver.abort();
                let _ = driver.await;
                if let Err(e) = chitchat.shutdown().await {
                    warn!(error = %e, "gossip did not stop cleanly");
                }
            }
        }
        info!(role = %self.role, "membership stopped");
    }

    /// Worst-case time from a member's last successful probe / heartbeat to it being marked
    /// Down here (see the module doc for the formulas).
    pub fn detection_bound(&self) -> Duration {
        self.detection_bound
    }
}

impl Drop for Membership {
    /// Dropped without `shutdown` (or a crash in tests): stop at once, announce nothing.
    fn drop(&mut self) {
        match self.running.take() {
            Some(Running::Probing { tasks }) => tasks.iter().for_each(JoinHandle::abort),
            Some(Running::Gossip {
                chitchat, driver, ..
            }) => {
                driver.abort();
                chitchat.abort();
            }
            None => {}
        }
    }
}

/// Tags every log line of this process's membership tasks (tests run several in one).
fn span(role: Role) -> tracing::Span {
    tracing::info_span!("membership", %role)
}

fn setup_error(message: impl Into<String>) -> Error {
    Error::Membership(message.into())
}

/// How long `shutdown` lets the `leaving` key spread before gossip stops.
fn leave_wait(gossip_interval: Duration) -> Duration {
    (gossip_interval * 3).min(Duration::from_secs(2))
}

// ---------------------------------------------------------------------------------------
// Publishing

/// Owns the view sender: publishes a new view (version + 1) only when members changed.
struct Publisher {
    tx: watch::Sender<Arc<ClusterView>>,
    vnodes: u32,
    replication: usize,
}

impl Publisher {
    fn publish(&self, mut members: Vec<Member>) {
        members.sort_by(|a, b| a.node_id.cmp(&b.node_id));
        members.dedup_by(|a, b| a.node_id == b.node_id);
        let current = self.tx.borrow().clone();
        if current.members == members {
            return;
        }
        let version = current.version + 1;
        log_changes(&current.members, &members, version);
        let view = ClusterView::new(members, self.vnodes, self.replication, version);
        self.tx.send_replace(Arc::new(view));
    }
}

fn log_changes(old: &[Member], new: &[Member], version: u64) {
    let before: HashMap<&str, &Member> = old.iter().map(|m| (m.node_id.as_str(), m)).collect();
    let after: HashSet<&str> = new.iter().map(|m| m.node_id.as_str()).collect();
    for m in new {
        match before.get(m.node_id.as_str()) {
            None => info!(
                node_id = %m.node_id, state = ?m.state, grpc_addr = %m.grpc_addr,
                http_addr = %m.http_addr, version, "collector joined the ring"
            ),
            Some(o) if o.state != m.state => {
                info!(node_id = %m.node_id, state = ?m.state, version, "collector state changed")
            }
            Some(o) if *o != m => info!(
                node_id = %m.node_id, grpc_addr = %m.grpc_addr, http_addr = %m.http_addr,
                version, "collector addresses changed"
            ),
            Some(_) => {}
        }
    }
    for o in old {
        if !after.contains(o.node_id.as_str()) {
            info!(node_id = %o.node_id, state = ?o.state, version, "collector left the ring");
        }
    }
}

// ---------------------------------------------------------------------------------------
// Static and DNS modes: probing

#[derive(Debug, Clone, Copy)]
struct ProbeSettings {
    interval: Duration,
    timeout: Duration,
    down_after: u32,
}

impl ProbeSettings {
    fn from_config(config: &ClusterConfig) -> Self {
        let m = &config.membership;
        Self {
            interval: Duration::from_millis(m.probe_interval_ms.max(1)),
            timeout: Duration::from_millis(m.probe_timeout_ms.max(1)),
            down_after: m.down_after_failures.max(1),
        }
    }

    fn detection_bound(&self) -> Duration {
        self.interval.max(self.timeout) * self.down_after + self.timeout
    }
}

fn probe_client(settings: &ProbeSettings) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        // A fresh connection per probe: a pooled keep-alive connection can outlive the
        // listener of a crashed process and would keep answering for it.
        .pool_max_idle_per_host(0)
        .retry(reqwest::retry::never())
        .no_proxy()
        .build()
        .map_err(|e| setup_error(format!("building the probe HTTP client: {e}")))
}

struct ProbeReport {
    target: String,
    result: std::result::Result<NodeInfo, String>,
}

/// What probing knows about each target address. Pure state, so its rules are unit-tested.
#[derive(Debug)]
struct ProbeTable {
    down_after: u32,
    targets: BTreeMap<String, TargetState>,
}

#[derive(Debug, Default)]
struct TargetState {
    /// `(node_id, grpc_addr)` from the last answer; `None` until the address answers.
    known: Option<(String, String)>,
    failures: u32,
    up: bool,
    /// The "has not answered yet" warning was logged.
    warned_unknown: bool,
}

impl ProbeTable {
    fn new(down_after: u32) -> Self {
        Self {
            down_after: down_after.max(1),
            targets: BTreeMap::new(),
        }
    }

    fn add(&mut self, target: &str) {
        self.targets.entry(target.to_owned()).or_default();
    }

    fn remove(&mut self, target: &str) {
        if let Some(state) = self.targets.remove(target) {
            info!(
                target,
                node_id = state.known.as_ref().map(|(id, _)| id.as_str()),
                "collector address no longer listed"
            );
        }
    }

    fn apply(&mut self, target: &str, result: std::result::Result<NodeInfo, String>) {
        let down_after = self.down_after;
        let claimed_elsewhere = match &result {
            Ok(info) => self.targets.iter().any(|(other, s)| {
                other != target && s.known.as_ref().is_some_and(|(id, _)| *id == info.node_id)
            }),
            Err(_) => false,
        };
        // A report from a prober stopped since (address removed) is ignored.
        let Some(state) = self.targets.get_mut(target) else {
            return;
        };
        match result {
            Ok(info) => {
                let previous = state.known.as_ref().map(|(id, _)| id.as_str());
                if previous != Some(info.node_id.as_str()) {
                    if let Some(previous) = previous {
                        warn!(target, previous, node_id = %info.node_id,
                            "a different collector now answers at this address");
                    }
                    if claimed_elsewhere {
                        warn!(target, node_id = %info.node_id,
                            "the same node id answers at another address too; counted once");
                    }
                }
                state.failures = 0;
                state.up = info.ready;
                state.known = Some((info.node_id, info.grpc_addr));
            }
            Err(error) => {
                state.failures = state.failures.saturating_add(1);
                match &state.known {
                    None if !state.warned_unknown => {
                        state.warned_unknown = true;
                        warn!(target, %error,
                            "collector address has not answered; not a member until it does \
                             (its node id is unknown)");
                    }
                    None => debug!(target, %error, "collector address still not answering"),
                    Some((node_id, _)) => {
                        debug!(target, node_id, failures = state.failures, %error, "probe failed");
                        if state.up && state.failures >= down_after {
                            state.up = false;
                            warn!(target, node_id, failures = state.failures, %error,
                                "collector failed its probes");
                        }
                    }
                }
            }
        }
    }

    /// Every address that has answered once, as a member. The same node id at two
    /// addresses (a name and its IP in the static list) counts once, up if either is.
    fn members(&self) -> Vec<Member> {
        let mut members: Vec<Member> = self
            .targets
            .iter()
            .filter_map(|(addr, state)| {
                let (node_id, grpc_addr) = state.known.as_ref()?;
                Some(Member {
                    node_id: node_id.clone(),
                    grpc_addr: grpc_addr.clone(),
                    http_addr: addr.clone(),
                    state: if state.up {
                        MemberState::Up
                    } else {
                        MemberState::Down
                    },
                })
            })
            .collect();
        members.sort_by(|a, b| {
            a.node_id
                .cmp(&b.node_id)
                .then_with(|| (a.state != MemberState::Up).cmp(&(b.state != MemberState::Up)))
                .then_with(|| a.http_addr.cmp(&b.http_addr))
        });
        members.dedup_by(|later, first| later.node_id == first.node_id);
        members
    }
}

/// Probers of the current targets; dropping it (the driver stopping) stops them all.
#[derive(Default)]
struct Probers(HashMap<String, JoinHandle<()>>);

impl Drop for Probers {
    fn drop(&mut self) {
        self.0.values().for_each(JoinHandle::abort);
    }
}

/// Owns the probe table and the publisher: follows the target set, applies probe reports.
async fn run_probing(
    mut targets: watch::Receiver<BTreeSet<String>>,
    client: reqwest::Client,
    settings: ProbeSettings,
    publisher: Publisher,
) {
    let (report_tx, mut reports) = mpsc::channel::<ProbeReport>(64);
    let mut probers = Probers::default();
    let mut table = ProbeTable::new(settings.down_after);
    let mut targets_open = true;
    let mut wanted = targets.borrow_and_update().clone();
    loop {
        // Start probers for new addresses, stop those of addresses gone.
        probers.0.retain(|target, task| {
            let keep = wanted.contains(target);
            if !keep {
                task.abort();
                table.remove(target);
            }
            keep
        });
        for target in &wanted {
            if !probers.0.contains_key(target) {
                table.add(target);
                let task = tokio::spawn(
                    probe_loop(client.clone(), target.clone(), settings, report_tx.clone())
                        .in_current_span(),
                );
                probers.0.insert(target.clone(), task);
            }
        }
        publisher.publish(table.members());

        tokio::select! {
            changed = targets.changed(), if targets_open => {
                match changed {
                    Ok(()) => wanted = targets.borrow_and_update().clone(),
                    // Static mode: the list is fixed, nothing more will come.
                    Err(_) => targets_open = false,
                }
            }
            Some(report) = reports.recv() => table.apply(&report.target, report.result),
            // Unreachable: `report_tx` lives here, so `reports` never ends.
            else => return,
        }
    }
}

async fn probe_loop(
    client: reqwest::Client,
    target: String,
    settings: ProbeSettings,
    reports: mpsc::Sender<ProbeReport>,
) {
    let url = format!("http://{target}{INFO_PATH}");
    loop {
        let started = Instant::now();
        let result = probe_once(&client, &url, settings.timeout).await;
        let report = ProbeReport {
            target: target.clone(),
            result,
        };
        if reports.send(report).await.is_err() {
            return;
        }
        tokio::time::sleep_until(started + settings.interval).await;
    }
}

async fn probe_once(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
) -> std::result::Result<NodeInfo, String> {
    let attempt = async {
        let response = client.get(url).send().await.map_err(error_chain)?;
        let status = response.status();
        // 503 carries the same body: reachable but not ready (starting or stopping).
        if status != reqwest::StatusCode::OK && status != reqwest::StatusCode::SERVICE_UNAVAILABLE {
            return Err(format!("answered HTTP {status}"));
        }
        response
            .json::<NodeInfo>()
            .await
            .map_err(|e| format!("invalid info answer: {}", error_chain(e)))
    };
    // reqwest's timeout already covers the body; this also bounds anything around it.
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {timeout:?}")))
}

/// `error: cause: cause`, since reqwest's top-level message hides the reason.
fn error_chain(error: impl std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// DNS mode: re-resolves `name` every `every`; the probing driver follows the result.
async fn resolve_loop(name: String, every: Duration, targets: watch::Sender<BTreeSet<String>>) {
    loop {
        match tokio::net::lookup_host(name.as_str()).await {
            Ok(addresses) => {
                let resolved: BTreeSet<String> = addresses.map(|a| a.to_string()).collect();
                targets.send_if_modified(|current| {
                    if *current == resolved {
                        return false;
                    }
                    info!(dns_name = %name, addresses = ?resolved, "collector addresses resolved");
                    *current = resolved;
                    true
                });
            }
            Err(e) => warn!(
                dns_name = %name, error = %e,
                "DNS lookup failed; keeping the addresses resolved before"
            ),
        }
        tokio::time::sleep(every).await;
    }
}

// ---------------------------------------------------------------------------------------
// Gossip mode: chitchat

fn gossip_detection_bound(config: &ClusterConfig) -> Duration {
    let m = &config.membership;
    let interval = Duration::from_millis(m.gossip_interval_ms.max(1));
    interval.mul_f64(m.gossip_phi_threshold.max(0.0) + 1.0)
}

async fn resolve_gossip_addr(setting: &str, value: &str) -> Result<SocketAddr> {
    let value = value.trim();
    if let Ok(addr) = value.parse() {
        return Ok(addr);
    }
    tokio::net::lookup_host(value)
        .await
        .map_err(|e| setup_error(format!("{setting} {value:?}: {e}")))?
        .next()
        .ok_or_else(|| setup_error(format!("{setting} {value:?} resolves to no address")))
}

fn bool_str(value: bool) -> &'static str {
    if value { "true" } else { "false" }
}

async fn start_gossip(
    config: &ClusterConfig,
    role: Role,
    me: Option<NodeInfoHandle>,
    publisher: Publisher,
) -> Result<Running> {
    let m = &config.membership;
    let listen_addr =
        resolve_gossip_addr("cluster.membership.gossip_listen", &m.gossip_listen).await?;
    let advertise_addr = if m.gossip_advertise.trim().is_empty() {
        listen_addr
    } else {
        resolve_gossip_addr("cluster.membership.gossip_advertise", &m.gossip_advertise).await?
    };
    // Peers gossip back to the advertised address, so it must be one they can reach.
    if advertise_addr.ip().is_unspecified() || advertise_addr.port() == 0 {
        return Err(setup_error(format!(
            "gossip would advertise {advertise_addr}, which peers cannot reach: \
             set cluster.membership.gossip_advertise"
        )));
    }
    // Only collectors announce themselves (and must).
    let me = match (role, me) {
        (Role::Collector, Some(me)) => Some(me),
        (Role::Collector, None) => {
            return Err(setup_error(
                "a collector joins gossip with its NodeInfoHandle",
            ));
        }
        (_, _) => None,
    };
    let node_id = match &me {
        Some(me) => me.node_id(),
        None if !config.node_id.is_empty() => config.node_id.clone(),
        None => format!("{role}-{advertise_addr}"),
    };
    // Start time as generation: a restarted node has a higher one and supersedes its
    // previous incarnation, which chitchat still remembers until it is declared dead.
    let generation = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let mut key_values = vec![(KEY_ROLE.to_owned(), role.as_str().to_owned())];
    if let Some(me) = &me {
        let info = me.info();
        key_values.push((KEY_GRPC_ADDR.to_owned(), info.grpc_addr));
        key_values.push((KEY_HTTP_ADDR.to_owned(), info.http_addr));
        key_values.push((KEY_READY.to_owned(), bool_str(info.ready).to_owned()));
    }
    let gossip_interval = Duration::from_millis(m.gossip_interval_ms.max(1));
    let chitchat_config = ChitchatConfig {
        chitchat_id: ChitchatId::new(node_id.clone(), generation, advertise_addr),
        cluster_id: m.gossip_cluster_id.clone(),
        gossip_interval,
        listen_addr,
        seed_nodes: m.gossip_seeds.clone(),
        failure_detector_config: FailureDetectorConfig {
            phi_threshold: m.gossip_phi_threshold,
            sampling_window_size: 1_000,
            // Longer gaps (a node coming back) are not samples of the heartbeat rhythm.
            max_interval: Duration::from_secs(10).max(gossip_interval * 10),
            // The prior of the mean inter-arrival: what the detection bound assumes.
            initial_interval: gossip_interval,
            dead_node_grace_period: Duration::from_secs(m.gossip_dead_grace_secs),
        },
        // We never delete keys; this only bounds tombstones if a later version does.
        marked_for_deletion_grace_period: Duration::from_secs(3_600),
        catchup_callback: None,
        extra_liveness_predicate: None,
        // The uncompressed digest format every chitchat version decodes.
        protocol_version: ProtocolVersion::V0,
    };
    let chitchat = spawn_chitchat(chitchat_config, key_values, &UdpTransport)
        .await
        .map_err(|e| setup_error(format!("gossip on {listen_addr}: {e:#}")))?;
    let live = chitchat.with_chitchat(|c| c.live_nodes_watcher()).await;
    info!(
        node_id = %node_id, generation, listen = %listen_addr, advertise = %advertise_addr,
        seeds = ?m.gossip_seeds, cluster_id = %m.gossip_cluster_id, "gossip started"
    );
    let driver = tokio::spawn(
        run_gossip(
            GossipDriver {
                chitchat: chitchat.chitchat(),
                live,
                me,
                gossip_interval,
                publisher,
                warned_duplicates: HashSet::new(),
            },
            chitchat.termination_watcher(),
        )
        .instrument(tracing::info_span!("membership", %role, node_id = %node_id)),
    );
    Ok(Running::Gossip {
        chitchat,
        driver,
        gossip_interval,
    })
}

struct GossipDriver {
    chitchat: Arc<Mutex<Chitchat>>,
    /// Fires when chitchat's live set (or a live node's keys) changes.
    live: watch::Receiver<BTreeMap<ChitchatId, NodeState>>,
    me: Option<NodeInfoHandle>,
    gossip_interval: Duration,
    publisher: Publisher,
    /// Node ids already warned about being used by two live processes.
    warned_duplicates: HashSet<String>,
}

/// Re-reads chitchat's state once per gossip round (liveness is re-evaluated per round;
/// garbage collection of dead nodes fires no event) and on live-set changes; mirrors
/// readiness changes of `me` into the `ready` key.
async fn run_gossip<E: std::fmt::Display>(
    mut d: GossipDriver,
    terminated: impl Future<Output = std::result::Result<(), E>>,
) {
    let mut readiness = d.me.as_ref().map(NodeInfoHandle::subscribe);
    // Readiness may have changed between announcing the first keys and this task's start
    // (a node that is ready at once): publish the current value, not only later changes.
    if let Some(rx) = readiness.as_mut() {
        let ready = rx.borrow_and_update().ready;
        d.chitchat
            .lock()
            .await
            .self_node_state()
            .set(KEY_READY, bool_str(ready));
    }
    let mut tick = tokio::time::interval(d.gossip_interval);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(terminated);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            changed = d.live.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            ready = next_readiness(&mut readiness) => match ready {
                Some(ready) => {
                    d.chitchat.lock().await.self_node_state().set(KEY_READY, bool_str(ready));
                }
                None => readiness = None,
            },
            result = &mut terminated => {
                match result {
                    Ok(()) => debug!("gossip stopped"),
                    Err(e) => error!(error = %e, "gossip stopped; the cluster view is frozen"),
                }
                return;
            }
        }
        let members = {
            let chitchat = d.chitchat.lock().await;
            gossip_members(&chitchat, &mut d.warned_duplicates)
        };
        d.publisher.publish(members);
    }
}

/// The next readiness of `me`; never resolves when there is nothing to follow.
async fn next_readiness(readiness: &mut Option<watch::Receiver<NodeInfo>>) -> Option<bool> {
    match readiness {
        Some(rx) => match rx.changed().await {
            Ok(()) => Some(rx.borrow_and_update().ready),
            Err(_) => None,
        },
        None => std::future::pending().await,
    }
}

/// Collector members from chitchat's state: every node state with `role=collector` (live
/// or dead: dead ones stay until chitchat garbage-collects them), the newest generation per
/// node id.
fn gossip_members(chitchat: &Chitchat, warned_duplicates: &mut HashSet<String>) -> Vec<Member> {
    let live: HashSet<&ChitchatId> = chitchat.live_nodes().collect();
    let mut newest: BTreeMap<&str, (&ChitchatId, Member)> = BTreeMap::new();
    for (id, state) in chitchat.node_states() {
        if state.get(KEY_ROLE) != Some(Role::Collector.as_str()) {
            continue;
        }
        // Keys arrive with the node's first delta; until then it is not described yet.
        let (Some(grpc_addr), Some(http_addr)) =
            (state.get(KEY_GRPC_ADDR), state.get(KEY_HTTP_ADDR))
        else {
            continue;
        };
        let ready = state.get(KEY_READY) == Some("true") && state.get(KEY_LEAVING).is_none();
        let member = Member {
            node_id: id.node_id.to_string(),
            grpc_addr: grpc_addr.to_owned(),
            http_addr: http_addr.to_owned(),
            state: if ready && live.contains(id) {
                MemberState::Up
            } else {
                MemberState::Down
            },
        };
        match newest.entry(&id.node_id) {
            Entry::Vacant(slot) => {
                slot.insert((id, member));
            }
            Entry::Occupied(mut slot) => {
                let (other, _) = slot.get();
                if other.gossip_advertise_addr != id.gossip_advertise_addr
                    && live.contains(other)
                    && live.contains(id)
                    && warned_duplicates.insert(id.node_id.to_string())
                {
                    warn!(node_id = %id.node_id, first = %other.gossip_advertise_addr,
                        second = %id.gossip_advertise_addr,
                        "two live collectors use the same node id; the newest start wins");
                }
                if id.generation_id > other.generation_id {
                    slot.insert((id, member));
                }
            }
        }
    }
    newest.into_values().map(|(_, member)| member).collect()
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::net::TcpListener;

    use super::*;
    use crate::MembershipConfig;
    use crate::info;

    /// Generous: the machine running tests is shared and slow. Nothing waits this long
    /// unless something is broken.
    const WAIT: Duration = Duration::from_secs(20);

    async fn wait_view(
        view: &mut watch::Receiver<Arc<ClusterView>>,
        what: &str,
        mut pred: impl FnMut(&ClusterView) -> bool,
    ) -> Arc<ClusterView> {
        let result = tokio::time::timeout(WAIT, view.wait_for(|v| pred(v)))
            .await
            .map(|r| r.map(|v| v.clone()));
        match result {
            Ok(Ok(v)) => v,
            Ok(Err(_)) => panic!("membership stopped while waiting for {what}"),
            Err(_) => panic!(
                "timed out after {WAIT:?} waiting for {what}; last view: {:?}",
                view.borrow().members
            ),
        }
    }

    fn ids(view: &ClusterView) -> Vec<&str> {
        view.ring.nodes().iter().map(String::as_str).collect()
    }

    fn is_down(view: &ClusterView, node_id: &str) -> bool {
        view.member(node_id)
            .is_some_and(|m| m.state == MemberState::Down)
    }

    fn node(node_id: &str, http_addr: SocketAddr) -> NodeInfoHandle {
        NodeInfoHandle::new(NodeInfo {
            node_id: node_id.to_owned(),
            grpc_addr: format!("127.0.0.1:{}", 10_000 + http_addr.port() % 1000),
            http_addr: http_addr.to_string(),
            ready: true,
        })
    }

    fn serve(listener: TcpListener, handle: NodeInfoHandle) -> JoinHandle<()> {
        tokio::spawn(async move {
            let _ = axum::serve(listener, info::router(handle)).await;
        })
    }

    /// A collector's info endpoint on a fresh loopback port.
    async fn info_server(node_id: &str) -> (SocketAddr, NodeInfoHandle, JoinHandle<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handle = node(node_id, addr);
        let task = serve(listener, handle.clone());
        (addr, handle, task)
    }

    fn probing_config(mode: MembershipMode) -> ClusterConfig {
        ClusterConfig {
            vnodes: 16,
            replication: 2,
            membership: MembershipConfig {
                mode,
                probe_interval_ms: 50,
                probe_timeout_ms: 1_000,
                down_after_failures: 2,
                dns_refresh_secs: 1,
                ..MembershipConfig::default()
            },
            ..ClusterConfig::default()
        }
    }

    fn answer(node_id: &str, ready: bool) -> std::result::Result<NodeInfo, String> {
        Ok(NodeInfo {
            node_id: node_id.to_owned(),
            grpc_addr: "g".to_owned(),
            http_addr: "h".to_owned(),
            ready,
        })
    }

    #[test]
    fn probe_table_rules() {
        let mut table = ProbeTable::new(2);
        table.add("a:1");
        table.apply("a:1", Err("refused".into()));
        assert!(
            table.members().is_empty(),
            "never answered: node id unknown"
        );

        table.apply("a:1", answer("c1", true));
        assert_eq!(table.members()[0].state, MemberState::Up);
        assert_eq!(table.members()[0].http_addr, "a:1");
        table.apply("a:1", Err("refused".into()));
        assert_eq!(
            table.members()[0].state,
            MemberState::Up,
            "one failure is not down"
        );
        table.apply("a:1", Err("refused".into()));
        assert_eq!(table.members()[0].state, MemberState::Down);
        table.apply("a:1", Err("refused".into()));
        assert_eq!(table.members().len(), 1, "down members stay");
        table.apply("a:1", answer("c1", true));
        assert_eq!(
            table.members()[0].state,
            MemberState::Up,
            "one success brings it back"
        );
        table.apply("a:1", answer("c1", false));
        assert_eq!(
            table.members()[0].state,
            MemberState::Down,
            "not ready is down at once"
        );

        // The same node at two addresses counts once, up if either is.
        table.add("b:1");
        table.apply("b:1", answer("c1", true));
        let members = table.members();
        assert_eq!(members.len(), 1);
        assert_eq!(
            (members[0].http_addr.as_str(), members[0].state),
            ("b:1", MemberState::Up)
        );

        // A report for an address no longer listed is ignored; removal drops the member.
        table.remove("b:1");
        table.apply("b:1", answer("c1", true));
        assert_eq!(table.members()[0].state, MemberState::Down);
        table.remove("a:1");
        assert!(table.members().is_empty());
    }

    #[test]
    fn detection_bounds() {
        let mut config = probing_config(MembershipMode::Static);
        config.membership.probe_interval_ms = 500;
        config.membership.probe_timeout_ms = 300;
        config.membership.down_after_failures = 3;
        assert_eq!(
            ProbeSettings::from_config(&config).detection_bound(),
            Duration::from_millis(3 * 500 + 300)
        );
        config.membership.gossip_interval_ms = 200;
        config.membership.gossip_phi_threshold = 8.0;
        assert_eq!(
            gossip_detection_bound(&config),
            Duration::from_millis(1_800)
        );
    }

    #[tokio::test]
    async fn static_members_follow_probes_and_readiness() {
        let mut servers = Vec::new();
        for id in ["c1", "c2", "c3"] {
            servers.push(info_server(id).await);
        }
        let mut config = probing_config(MembershipMode::Static);
        config.membership.static_collectors = servers.iter().map(|s| s.0.to_string()).collect();
        let membership = Membership::start(&config, Role::Ingest, None)
            .await
            .unwrap();
        let mut view = membership.view();

        let v = wait_view(&mut view, "3 members up", |v| {
            v.members.len() == 3 && v.up_count() == 3
        })
        .await;
        assert_eq!(ids(&v), ["c1", "c2", "c3"]);
        let c2 = v.member("c2").unwrap();
        assert_eq!(c2.http_addr, servers[1].0.to_string());
        assert_eq!(c2.grpc_addr, servers[1].1.info().grpc_addr);

        // c2's process dies: down, but still on the ring.
        let (c2_addr, c2_handle, c2_task) = servers.remove(1);
        c2_task.abort();
        let _ = c2_task.await;
        let v = wait_view(&mut view, "c2 down", |v| is_down(v, "c2")).await;
        assert_eq!(ids(&v), ["c1", "c2", "c3"], "a down node keeps its place");
        assert_eq!(v.up_count(), 2);

        // It comes back on the same port: up again.
        let listener = TcpListener::bind(c2_addr).await.unwrap();
        let c2_task = serve(listener, c2_handle);
        wait_view(&mut view, "c2 up again", |v| v.up_count() == 3).await;

        // c3 says it is not ready (e.g. shutting down): down, still a member.
        let c3 = &servers[1].1;
        c3.set_ready(false);
        let v = wait_view(&mut view, "c3 down", |v| is_down(v, "c3")).await;
        assert_eq!(ids(&v), ["c1", "c2", "c3"]);
        c3.set_ready(true);
        wait_view(&mut view, "c3 up again", |v| v.up_count() == 3).await;

        assert!(membership.detection_bound() >= Duration::from_millis(2 * 1_000));
        membership.shutdown().await;
        c2_task.abort();
    }

    #[tokio::test]
    async fn dns_name_resolves_to_members() {
        let (addr, _handle, task) = info_server("d1").await;
        let mut config = probing_config(MembershipMode::Dns);
        config.membership.dns_name = format!("localhost:{}", addr.port());
        let membership = Membership::start(&config, Role::Query, None).await.unwrap();
        let mut view = membership.view();
        // localhost may also resolve to ::1, where nothing answers: not a member.
        let v = wait_view(&mut view, "d1 up", |v| v.is_up("d1")).await;
        assert_eq!(ids(&v), ["d1"]);
        membership.shutdown().await;
        task.abort();
    }

    #[tokio::test]
    async fn addresses_gone_from_dns_leave_the_ring() {
        let (a, _ha, task_a) = info_server("n1").await;
        let (b, _hb, task_b) = info_server("n2").await;
        let config = probing_config(MembershipMode::Dns);
        let settings = ProbeSettings::from_config(&config);
        let (view_tx, mut view) = watch::channel(Arc::new(ClusterView::empty(16, 2)));
        let publisher = Publisher {
            tx: view_tx,
            vnodes: 16,
            replication: 2,
        };
        // Stands in for the resolver: what DNS answers now.
        let (targets_tx, targets) = watch::channel(BTreeSet::from([a.to_string(), b.to_string()]));
        let driver = tokio::spawn(run_probing(
            targets,
            probe_client(&settings).unwrap(),
            settings,
            publisher,
        ));
        wait_view(&mut view, "both up", |v| v.up_count() == 2).await;
        targets_tx.send_replace(BTreeSet::from([a.to_string()]));
        let v = wait_view(&mut view, "n2 gone", |v| v.member("n2").is_none()).await;
        assert_eq!(ids(&v), ["n1"]);
        driver.abort();
        task_a.abort();
        task_b.abort();
    }

    /// Free UDP ports on loopback: bound together (so they differ), then released.
    fn free_udp_ports(count: usize) -> Vec<u16> {
        let sockets: Vec<std::net::UdpSocket> = (0..count)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").unwrap())
            .collect();
        sockets
            .iter()
            .map(|s| s.local_addr().unwrap().port())
            .collect()
    }

    fn gossip_config(port: u16, seed: u16, cluster_id: &str) -> ClusterConfig {
        ClusterConfig {
            vnodes: 16,
            replication: 2,
            membership: MembershipConfig {
                mode: MembershipMode::Gossip,
                gossip_listen: format!("127.0.0.1:{port}"),
                gossip_seeds: vec![format!("127.0.0.1:{seed}")],
                gossip_cluster_id: cluster_id.to_owned(),
                gossip_interval_ms: 50,
                gossip_phi_threshold: 8.0,
                gossip_dead_grace_secs: 2,
                ..MembershipConfig::default()
            },
            ..ClusterConfig::default()
        }
    }

    async fn gossip_collector(id: &str, port: u16, seed: u16, cluster_id: &str) -> Membership {
        let handle = NodeInfoHandle::new(NodeInfo {
            node_id: id.to_owned(),
            grpc_addr: format!("127.0.0.1:{}", 20_000 + port % 1000),
            http_addr: format!("127.0.0.1:{}", 30_000 + port % 1000),
            ready: true,
        });
        Membership::start(
            &gossip_config(port, seed, cluster_id),
            Role::Collector,
            Some(handle),
        )
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn gossip_members_converge_fail_and_join() {
        let ports = free_udp_ports(5);
        let seed = ports[0];
        // Unique per run, so a concurrent run on the same machine never merges with ours.
        let cluster = format!("weft-test-{}-{seed}", std::process::id());
        let g1 = gossip_collector("g1", ports[0], seed, &cluster).await;
        let g2 = gossip_collector("g2", ports[1], seed, &cluster).await;
        let g3 = gossip_collector("g3", ports[2], seed, &cluster).await;
        let ingest =
            Membership::start(&gossip_config(ports[3], seed, &cluster), Role::Ingest, None)
                .await
                .unwrap();

        let mut rings = Vec::new();
        for m in [&g1, &g2, &g3, &ingest] {
            let v = wait_view(&mut m.view(), "g1..g3 up everywhere", |v| {
                ids(v) == ["g1", "g2", "g3"] && v.up_count() == 3
            })
            .await;
            rings.push(v.ring.nodes().to_vec());
            assert_eq!(
                v.member("g2").unwrap().grpc_addr,
                format!("127.0.0.1:{}", 20_000 + ports[1] % 1000)
            );
        }
        assert!(
            rings.iter().all(|r| *r == rings[0]),
            "same ring everywhere: {rings:?}"
        );

        // g3 leaves gracefully: down everywhere (via `leaving`), then forgotten after the
        // dead grace period.
        let left = Instant::now();
        g3.shutdown().await;
        for m in [&g1, &g2, &ingest] {
            let v = wait_view(&mut m.view(), "g3 down", |v| is_down(v, "g3")).await;
            assert!(
                v.ring.nodes().iter().any(|n| n == "g3"),
                "down, still on the ring"
            );
        }
        println!(
            "gossip: g3 seen down everywhere {:?} after it left",
            left.elapsed()
        );
        for m in [&g1, &g2, &ingest] {
            wait_view(&mut m.view(), "g3 removed", |v| ids(v) == ["g1", "g2"]).await;
        }

        // A new collector joins through the seed and appears everywhere.
        let g4 = gossip_collector("g4", ports[4], seed, &cluster).await;
        for m in [&g1, &g2, &ingest, &g4] {
            wait_view(&mut m.view(), "g4 joined", |v| {
                ids(v) == ["g1", "g2", "g4"] && v.up_count() == 3
            })
            .await;
        }

        // g2 crashes (no goodbye): the failure detector marks it down.
        let crashed = Instant::now();
        drop(g2);
        for m in [&g1, &g4, &ingest] {
            wait_view(&mut m.view(), "g2 down after a crash", |v| is_down(v, "g2")).await;
        }
        println!(
            "gossip: g2 seen down everywhere {:?} after it crashed (bound {:?})",
            crashed.elapsed(),
            g1.detection_bound()
        );

        for m in [g1, g4, ingest] {
            m.shutdown().await;
        }
    }
}
