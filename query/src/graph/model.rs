//! What the graph scan accumulates (links, edges with sketches and examples, span weight
//! per service, spans left for the second pass), how partial results merge, and the
//! public shape of the result.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::Serialize;
use ts_rs::TS;

use super::DependencyLink;
pub(crate) use crate::span_scan::STATUS_ERROR;
pub(crate) use crate::span_scan::examples::Examples;
use crate::span_scan::sketch::LogSketch;

/// OTLP `SpanKind` values.
pub(crate) const KIND_SERVER: i8 = 2;
pub(crate) const KIND_CLIENT: i8 = 3;
pub(crate) const KIND_PRODUCER: i8 = 4;
pub(crate) const KIND_CONSUMER: i8 = 5;

/// Name of the virtual client of root server spans (the OpenTelemetry servicegraph
/// connector's name for it).
pub(crate) const USER: &str = "user";
/// Name of the virtual server of client spans without any peer attribute.
pub(crate) const UNKNOWN: &str = "unknown";

pub(crate) fn is_caller(kind: i8) -> bool {
    kind == KIND_CLIENT || kind == KIND_PRODUCER
}

pub(crate) fn is_callee(kind: i8) -> bool {
    kind == KIND_SERVER || kind == KIND_CONSUMER
}

/// Which end of an edge is not an instrumented service.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum VirtualNode {
    /// `user`: the caller of a root server (or consumer) span.
    Client,
    /// An uninstrumented peer: a client (or producer) span without a server child.
    Server,
}

/// Request/response (CLIENT → SERVER) or messaging (PRODUCER → CONSUMER).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, TS)]
#[serde(rename_all = "snake_case")]
pub enum EdgeKind {
    Request,
    Messaging,
}

impl EdgeKind {
    pub(crate) fn of(kind: i8) -> Self {
        if kind == KIND_PRODUCER || kind == KIND_CONSUMER {
            EdgeKind::Messaging
        } else {
            EdgeKind::Request
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            EdgeKind::Request => "request",
            EdgeKind::Messaging => "messaging",
        }
    }
}

/// Identity of an edge, generic over how names are held (`u32` ids inside a worker,
/// shared strings once partial results merge).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct EdgeKey<N> {
    pub client: N,
    pub server: N,
    pub kind: EdgeKind,
    pub virtual_node: Option<VirtualNode>,
}

/// One side of a call, as the graph needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Side {
    pub duration: i64,
    pub weight: f64,
    pub error: bool,
}

/// Everything known about the calls of one edge. Calls and errors are sums of
/// `sample_weight`: the caller's span weight for a matched pair (it is the caller's
/// request that is counted), the known side's otherwise.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct EdgeAgg {
    pub calls: f64,
    pub errors: f64,
    /// Durations of the calling spans (CLIENT / PRODUCER).
    pub client: LogSketch,
    /// Durations of the called spans (SERVER / CONSUMER).
    pub server: LogSketch,
    pub examples: Examples,
}

impl EdgeAgg {
    /// A client span and its server child.
    pub(crate) fn pair(&mut self, client: Side, server: Side, trace: &[u8; 16]) {
        self.calls += client.weight;
        if client.error || server.error {
            self.errors += client.weight;
        }
        self.client.add(client.duration, client.weight);
        self.server.add(server.duration, server.weight);
        self.examples.offer(client.duration, trace);
    }

    /// A root server span (called by `user`).
    pub(crate) fn server_only(&mut self, server: Side, trace: &[u8; 16]) {
        self.calls += server.weight;
        if server.error {
            self.errors += server.weight;
        }
        self.server.add(server.duration, server.weight);
        self.examples.offer(server.duration, trace);
    }

    /// A client span without a server child (calls an uninstrumented peer).
    pub(crate) fn client_only(&mut self, client: Side, trace: &[u8; 16]) {
        self.calls += client.weight;
        if client.error {
            self.errors += client.weight;
        }
        self.client.add(client.duration, client.weight);
        self.examples.offer(client.duration, trace);
    }

    /// Takes back a [`EdgeAgg::client_only`] call: its server child turned up in another
    /// file, so the call belongs to a real edge.
    pub(crate) fn retract_client_only(&mut self, client: Side, trace: &[u8; 16]) {
        self.calls -= client.weight;
        if client.error {
            self.errors -= client.weight;
        }
        self.client.remove(client.duration, client.weight);
        self.examples.remove(client.duration, trace);
    }

    pub(crate) fn merge(&mut self, other: &EdgeAgg) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.client.merge(&other.client);
        self.server.merge(&other.server);
        self.examples.merge(&other.examples);
    }
}

/// A span whose parent was not in its trace run: resolved by the second pass.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub trace: [u8; 16],
    pub span: u64,
    pub parent: u64,
    pub service: Arc<str>,
    pub kind: i8,
    pub side: Side,
}

/// What one partition (then all of them) found.
#[derive(Debug, Default)]
pub(crate) struct Partial {
    pub links: HashMap<(Arc<str>, Arc<str>), f64>,
    pub edges: HashMap<EdgeKey<Arc<str>>, EdgeAgg>,
    /// Span weight per instrumented service.
    pub services: HashMap<Arc<str>, f64>,
    pub pending: Vec<Pending>,
}

impl Partial {
    pub(crate) fn merge(&mut self, other: Partial) {
        for (key, weight) in other.links {
            *self.links.entry(key).or_default() += weight;
        }
        for (key, agg) in other.edges {
            self.edges.entry(key).or_default().merge(&agg);
        }
        for (service, weight) in other.services {
            *self.services.entry(service).or_default() += weight;
        }
        self.pending.extend(other.pending);
    }

    /// Jaeger links, sorted by parent then child.
    pub(crate) fn links(&self) -> Vec<DependencyLink> {
        let sorted: BTreeMap<(&str, &str), f64> = self
            .links
            .iter()
            .map(|((p, c), w)| ((&**p, &**c), *w))
            .collect();
        sorted
            .into_iter()
            .filter(|(_, w)| *w > 0.0)
            .map(|((parent, child), weight)| DependencyLink {
                parent: parent.to_owned(),
                child: child.to_owned(),
                call_count: weight.round() as u64,
            })
            .collect()
    }

    /// The service graph, nodes and edges sorted by name.
    pub(crate) fn graph(&self, start_ns: i64, end_ns: i64) -> ServiceGraph {
        let mut edges: Vec<(&EdgeKey<Arc<str>>, &EdgeAgg)> = self
            .edges
            .iter()
            .filter(|(_, agg)| agg.calls > 0.0)
            .collect();
        edges.sort_by(|a, b| a.0.cmp(b.0));

        let mut nodes: BTreeMap<&str, Node> = BTreeMap::new();
        let real: BTreeSet<&str> = self.services.keys().map(|s| &**s).collect();
        let node = |name: &Arc<str>| -> Node {
            Node {
                service: name.to_string(),
                is_virtual: !real.contains(&**name),
                spans: self.services.get(name).copied().unwrap_or(0.0),
                ..Node::default()
            }
        };
        for name in self.services.keys() {
            nodes.insert(name, node(name));
        }
        for (key, agg) in &edges {
            nodes
                .entry(&key.client)
                .or_insert_with(|| node(&key.client))
                .add_out(agg);
            nodes
                .entry(&key.server)
                .or_insert_with(|| node(&key.server))
                .add_in(agg);
        }
        ServiceGraph {
            start_ns,
            end_ns,
            nodes: nodes.into_values().collect(),
            edges: edges
                .into_iter()
                .map(|(key, agg)| Edge {
                    client: key.client.to_string(),
                    server: key.server.to_string(),
                    kind: key.kind,
                    is_virtual: key.virtual_node.is_some(),
                    virtual_node: key.virtual_node,
                    calls: agg.calls,
                    errors: agg.errors,
                    error_rate: agg.errors / agg.calls,
                    client_latency_ns: Percentiles::of(&agg.client),
                    server_latency_ns: Percentiles::of(&agg.server),
                    example_trace_ids: agg.examples.hex(),
                })
                .collect(),
        }
    }
}

/// `GET /api/v1/dependencies`: who calls whom in `[start_ns, end_ns)`.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct ServiceGraph {
    pub start_ns: i64,
    pub end_ns: i64,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
}

/// A service, or a virtual node (`user`, an uninstrumented peer) that only edges name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, TS)]
pub struct Node {
    pub service: String,
    /// No span of this name's service was seen: it exists only as an edge end.
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// Weighted number of spans the service reported in the range.
    pub spans: f64,
    /// Weighted calls received (edges where this node is the server).
    pub calls_in: f64,
    pub errors_in: f64,
    /// Weighted calls made (edges where this node is the client).
    pub calls_out: f64,
    pub errors_out: f64,
}

impl Node {
    fn add_in(&mut self, agg: &EdgeAgg) {
        self.calls_in += agg.calls;
        self.errors_in += agg.errors;
    }

    fn add_out(&mut self, agg: &EdgeAgg) {
        self.calls_out += agg.calls;
        self.errors_out += agg.errors;
    }
}

/// Calls from `client` to `server`.
#[derive(Debug, Clone, PartialEq, Serialize, TS)]
pub struct Edge {
    pub client: String,
    pub server: String,
    pub kind: EdgeKind,
    /// One end is virtual (see `virtual_node`).
    #[serde(rename = "virtual")]
    pub is_virtual: bool,
    /// `client` for `user` edges, `server` for calls to uninstrumented peers.
    pub virtual_node: Option<VirtualNode>,
    /// Weighted number of calls.
    pub calls: f64,
    /// Weighted calls where the client or the server span has status ERROR.
    pub errors: f64,
    pub error_rate: f64,
    /// Durations as the callers measured them; `null` for `user` edges.
    pub client_latency_ns: Option<Percentiles>,
    /// Durations as the servers measured them; `null` for calls to virtual peers.
    pub server_latency_ns: Option<Percentiles>,
    /// A few of the slowest calls' traces (hex).
    pub example_trace_ids: Vec<String>,
}

/// Weighted percentiles from a [`LogSketch`] (relative error ≤ 1/128).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, TS)]
pub struct Percentiles {
    pub p50: i64,
    pub p95: i64,
    pub p99: i64,
}

impl Percentiles {
    pub(crate) fn of(sketch: &LogSketch) -> Option<Self> {
        Some(Self {
            p50: sketch.quantile(0.50)?,
            p95: sketch.quantile(0.95)?,
            p99: sketch.quantile(0.99)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(n: u8) -> [u8; 16] {
        [n; 16]
    }

    #[test]
    fn examples_keep_the_slowest_whatever_the_order() {
        let offers = [(5, 1), (9, 2), (1, 3), (9, 0), (7, 4)];
        let mut forward = Examples::default();
        for (d, n) in offers {
            forward.offer(d, &t(n));
        }
        let mut backward = Examples::default();
        for (d, n) in offers.iter().rev() {
            backward.offer(*d, &t(*n));
        }
        assert_eq!(forward, backward);
        assert_eq!(forward.0, vec![(9, t(0)), (9, t(2)), (7, t(4))]);
        forward.remove(9, &t(2));
        assert_eq!(forward.0, vec![(9, t(0)), (7, t(4))]);
    }

    #[test]
    fn a_retracted_call_leaves_no_trace_in_the_counts() {
        let mut agg = EdgeAgg::default();
        let a = Side {
            duration: 1_000,
            weight: 2.0,
            error: true,
        };
        let b = Side {
            duration: 3_000,
            weight: 1.0,
            error: false,
        };
        agg.client_only(a, &t(1));
        agg.client_only(b, &t(2));
        agg.retract_client_only(a, &t(1));
        assert_eq!(agg.calls, 1.0);
        assert_eq!(agg.errors, 0.0);
        assert_eq!(agg.client.total(), 1.0);
        let p50 = agg.client.quantile(0.5).unwrap();
        assert!((p50 - 3_000).abs() <= 3_000 / 128, "{p50}");
        assert_eq!(agg.examples.hex(), vec![hex::encode(t(2))]);
    }
}
