// The service map's data: GET /api/v1/dependencies (client → server calls, OpenTelemetry
// servicegraph semantics) plus, optionally, GET /api/v1/dependencies/links (parent → child
// service pairs) that no call edge covers (spans of kind INTERNAL, or a CLIENT span whose
// parent is in another service), merged into one edge per pair.
import { getJSON } from "../../api";
import type { Node as ApiNode, Percentiles, ServiceGraph, ServiceLink, ServiceLinks } from "../../api/generated";

export type { Percentiles, ServiceGraph };

export interface MapNode extends ApiNode {
  /** Calls (or spans, for a service nobody calls) per second. */
  rate: number;
  /** Errors of the calls it received, over those calls. */
  errorRate: number;
}

export interface MapEdge {
  client: string;
  server: string;
  kinds: string[];
  /** `client` (`user`), `server` (uninstrumented peer) or null. */
  virtualNode: "client" | "server" | null;
  calls: number;
  errors: number;
  errorRate: number;
  rate: number;
  /** Server-side percentiles when known, else client-side. */
  latency: Percentiles | null;
  latencySide: "server" | "client" | null;
  examples: string[];
  /** Only seen as parent → child spans, not as a client → server call. */
  linkOnly: boolean;
}

export interface MapData {
  nodes: MapNode[];
  edges: MapEdge[];
  seconds: number;
  /** The links query failed (the map still shows the calls). */
  linksError?: string;
}

export async function loadMap(
  range: { start: string; end: string },
  withLinks: boolean,
  signal: AbortSignal,
): Promise<MapData> {
  const graphP = getJSON<ServiceGraph>("/api/v1/dependencies", range, signal);
  const linksP: Promise<ServiceLink[] | Error> = withLinks
    ? getJSON<ServiceLinks>("/api/v1/dependencies/links", range, signal).then(
        (answer) => answer.links,
        (e: Error) => e,
      )
    : Promise.resolve([]);
  const [graph, links] = await Promise.all([graphP, linksP]);
  return buildMap(graph, links instanceof Error ? [] : links, links instanceof Error ? links.message : undefined);
}

/** Merges the graph and the links into one edge per (client, server). Pure. */
export function buildMap(
  graph: ServiceGraph,
  links: ServiceLink[],
  linksError?: string,
): MapData {
  const seconds = Math.max((graph.end_ns - graph.start_ns) / 1e9, 1e-9);
  const edges = new Map<string, MapEdge>();
  const key = (a: string, b: string) => `${a}\u0000${b}`;
  for (const e of graph.edges) {
    const k = key(e.client, e.server);
    let m = edges.get(k);
    if (!m) {
      m = {
        client: e.client,
        server: e.server,
        kinds: [],
        virtualNode: e.virtual_node,
        calls: 0,
        errors: 0,
        errorRate: 0,
        rate: 0,
        latency: null,
        latencySide: null,
        examples: [],
        linkOnly: false,
      };
      edges.set(k, m);
    }
    if (!m.kinds.includes(e.kind)) m.kinds.push(e.kind);
    // The busiest kind's percentiles describe the pair.
    const latency = e.server_latency_ns ?? e.client_latency_ns;
    if (latency && (m.latency === null || e.calls > m.calls)) {
      m.latency = latency;
      m.latencySide = e.server_latency_ns ? "server" : "client";
    }
    m.calls += e.calls;
    m.errors += e.errors;
    m.examples.push(...e.example_trace_ids.filter((t) => !m!.examples.includes(t)));
  }
  const nodes = new Map<string, MapNode>();
  for (const n of graph.nodes) nodes.set(n.service, { ...n, rate: 0, errorRate: 0 });
  for (const l of links) {
    if (l.parent === l.child || l.call_count <= 0) continue;
    const k = key(l.parent, l.child);
    if (edges.has(k)) continue;
    edges.set(k, {
      client: l.parent,
      server: l.child,
      kinds: ["parent → child"],
      virtualNode: null,
      calls: l.call_count,
      errors: 0,
      errorRate: 0,
      rate: 0,
      latency: null,
      latencySide: null,
      examples: [],
      linkOnly: true,
    });
    for (const s of [l.parent, l.child]) {
      if (!nodes.has(s))
        nodes.set(s, {
          service: s,
          virtual: false,
          spans: 0,
          calls_in: 0,
          errors_in: 0,
          calls_out: 0,
          errors_out: 0,
          rate: 0,
          errorRate: 0,
        });
    }
  }
  for (const e of edges.values()) {
    e.errorRate = e.calls > 0 ? e.errors / e.calls : 0;
    e.rate = e.calls / seconds;
  }
  for (const n of nodes.values()) {
    n.rate = (n.calls_in > 0 ? n.calls_in : n.spans) / seconds;
    n.errorRate = n.calls_in > 0 ? n.errors_in / n.calls_in : 0;
  }
  return {
    nodes: [...nodes.values()],
    edges: [...edges.values()].sort((a, b) => b.calls - a.calls || a.client.localeCompare(b.client)),
    seconds,
    linksError,
  };
}

/** Error-rate class of an edge: the colour and the legend share it. */
export function errorClass(rate: number): "ok" | "low" | "mid" | "high" {
  if (!(rate > 0)) return "ok";
  if (rate < 0.01) return "low";
  if (rate < 0.05) return "mid";
  return "high";
}

export const ERROR_CLASSES: { cls: "ok" | "low" | "mid" | "high"; label: string; color: string }[] = [
  { cls: "ok", label: "no errors", color: "#7b8594" },
  { cls: "low", label: "< 1 % errors", color: "#b7791f" },
  { cls: "mid", label: "1–5 % errors", color: "#dd6b20" },
  { cls: "high", label: "≥ 5 % errors", color: "#c53030" },
];

export function formatRate(perSec: number): string {
  if (!Number.isFinite(perSec) || perSec <= 0) return "0/s";
  if (perSec >= 100) return `${Math.round(perSec)}/s`;
  if (perSec >= 0.1) return `${perSec.toPrecision(2)}/s`;
  const perMin = perSec * 60;
  if (perMin >= 0.1) return `${perMin.toPrecision(2)}/min`;
  return `${(perMin * 60).toPrecision(2)}/h`;
}

export function formatPercent(rate: number): string {
  if (!(rate > 0)) return "0 %";
  const p = rate * 100;
  return `${p >= 10 ? p.toFixed(0) : p >= 1 ? p.toFixed(1) : p.toPrecision(1)} %`;
}
