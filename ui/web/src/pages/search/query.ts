// The search page's model: what the form holds, how it is written to the page URL (so a
// search can be shared), and how the URL becomes a GET /api/v1/search request.
//
// The page URL uses the API's own parameter names (service, operation, status, attr, …), so
// a shared link reads like the request it makes; the only differences are the time range
// (`range=1h` is resolved to start/end when the search runs) and `sort`, which is applied in
// the browser.
import type { Params } from "../../api";
import type { SearchResponse, SearchTrace, ServiceSpans } from "../../api/generated";
import { resolveRange, timeRangeFrom, timeRangeParams, type TimeRange } from "../../util";

/** Where an attribute condition looks: span attributes, resource attributes, or anywhere. */
export type AttrScope = "attr" | "resource_attr" | "tag";
export const SCOPES: [AttrScope, string][] = [
  ["attr", "Span attribute"],
  ["resource_attr", "Resource attribute"],
  ["tag", "Anywhere"],
];

/** The API's operators (query/src/search/attribute.rs), plus "exists" for a bare key. */
export type AttrOp = "=" | "!=" | "<" | "<=" | ">" | ">=" | "exists";
export const OPS: [AttrOp, string][] = [
  ["=", "="],
  ["!=", "≠"],
  ["<", "<"],
  ["<=", "≤"],
  [">", ">"],
  [">=", "≥"],
  ["exists", "exists"],
];

export interface AttrRow {
  id: number;
  scope: AttrScope;
  key: string;
  op: AttrOp;
  value: string;
}

export type DurationOf = "span" | "trace";

export interface SearchForm {
  time: TimeRange;
  service: string;
  operation: string;
  kind: string;
  status: string;
  durationOf: DurationOf;
  minDuration: string;
  maxDuration: string;
  attrs: AttrRow[];
  limit: string;
}

export const DEFAULT_LIMIT = "20";
export const KINDS = ["server", "client", "producer", "consumer", "internal", "unspecified"];
export const STATUSES: [string, string][] = [
  ["error", "Error"],
  ["ok", "OK"],
  ["unset", "Unset"],
];

let nextRowId = 1;
export function newRow(scope: AttrScope = "attr"): AttrRow {
  return { id: nextRowId++, scope, key: "", op: "=", value: "" };
}

/** `key=value` → row; the key ends at the first `!`, `=`, `<` or `>`, as the server reads it. */
export function parseCondition(scope: AttrScope, text: string): AttrRow {
  const at = text.search(/[!=<>]/);
  if (at < 0) return { ...newRow(scope), key: text.trim(), op: "exists" };
  const rest = text.slice(at);
  const op = (["!=", "<=", ">=", "=", "<", ">"] as const).find((o) => rest.startsWith(o));
  if (!op) return { ...newRow(scope), key: text.trim(), op: "=", value: "" };
  return { ...newRow(scope), key: text.slice(0, at).trim(), op, value: rest.slice(op.length) };
}

/** Row → the API's condition text; `undefined` for a row with no key (ignored). */
export function formatCondition(row: AttrRow): string | undefined {
  const key = row.key.trim();
  if (!key) return undefined;
  return row.op === "exists" ? key : `${key}${row.op}${row.value}`;
}

export function formFromParams(params: URLSearchParams): SearchForm {
  const get = (k: string) => params.get(k) ?? "";
  const trace = params.has("min_trace_duration") || params.has("max_trace_duration");
  const attrs: AttrRow[] = [];
  for (const [scope] of SCOPES) for (const c of params.getAll(scope)) attrs.push(parseCondition(scope, c));
  return {
    time: timeRangeFrom(params),
    service: get("service"),
    operation: get("operation"),
    kind: get("kind"),
    status: get("status"),
    durationOf: trace ? "trace" : "span",
    minDuration: get(trace ? "min_trace_duration" : "min_duration"),
    maxDuration: get(trace ? "max_trace_duration" : "max_duration"),
    attrs,
    limit: get("limit") || DEFAULT_LIMIT,
  };
}

/** The page URL's parameters for a form (empty values are dropped by `href`). */
export function paramsFromForm(f: SearchForm, sort?: string): Params {
  const cond = (scope: AttrScope) =>
    f.attrs.filter((r) => r.scope === scope).flatMap((r) => formatCondition(r) ?? []);
  const [min, max] = f.durationOf === "trace" ? ["min_trace_duration", "max_trace_duration"] : ["min_duration", "max_duration"];
  return {
    ...timeRangeParams(f.time),
    service: f.service,
    operation: f.operation,
    kind: f.kind,
    status: f.status,
    [min]: f.minDuration.trim(),
    [max]: f.maxDuration.trim(),
    attr: cond("attr"),
    resource_attr: cond("resource_attr"),
    tag: cond("tag"),
    limit: f.limit.trim() === DEFAULT_LIMIT ? undefined : f.limit.trim(),
    sort: sort && sort !== "recent" ? sort : undefined,
  };
}

/** Page-URL parameters passed to the API unchanged. */
const PASSED = [
  "service",
  "operation",
  "kind",
  "status",
  "min_duration",
  "max_duration",
  "min_trace_duration",
  "max_trace_duration",
  "limit",
];

/** The API request for the page URL; a relative range is resolved against `now`. */
export function apiParams(params: URLSearchParams, now = Date.now()): Params {
  const { start, end } = resolveRange(timeRangeFrom(params), now);
  const out: Params = { start, end };
  for (const k of PASSED) {
    const v = params.get(k);
    if (v) out[k] = v;
  }
  for (const [scope] of SCOPES) {
    const all = params.getAll(scope).filter((v) => v !== "");
    if (all.length) out[scope] = all;
  }
  return out;
}

/** The search part of the URL (everything but `sort`), so re-sorting does not re-query. */
export function searchKey(params: URLSearchParams): string {
  const p = new URLSearchParams(params);
  p.delete("sort");
  return p.toString();
}

/** One result of GET /api/v1/search (generated from query/src/search/http.rs). */
export type TraceSummary = SearchTrace;
export type { SearchResponse, ServiceSpans };

/** Start as (imprecise) nanoseconds: enough for plotting and display. */
export function startNs(t: TraceSummary): number {
  const n = Number(t.start_time_unix_nano);
  return Number.isFinite(n) ? n : Date.parse(t.start_time) * 1e6;
}

export const SORTS: [string, string][] = [
  ["recent", "Most recent"],
  ["longest", "Longest first"],
  ["shortest", "Shortest first"],
  ["spans", "Most spans"],
  ["errors", "Most errors"],
];

export function sortTraces(traces: TraceSummary[], sort: string): TraceSummary[] {
  const by: Record<string, (a: TraceSummary, b: TraceSummary) => number> = {
    longest: (a, b) => b.duration_ns - a.duration_ns,
    shortest: (a, b) => a.duration_ns - b.duration_ns,
    spans: (a, b) => b.span_count - a.span_count,
    errors: (a, b) => b.error_count - a.error_count,
  };
  const cmp = by[sort];
  // Server order (newest first) is the default and the tie-breaker.
  return cmp ? traces.map((t, i) => [t, i] as const).sort((x, y) => cmp(x[0], y[0]) || x[1] - y[1]).map((x) => x[0]) : traces;
}
