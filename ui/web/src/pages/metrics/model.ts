// The metrics explorer's state (all of it in the URL), its API calls and the shaping of
// query_range answers into chart series.
import { getJSON, type Params } from "../../api";
import type { RangeResponse, SeriesInfo } from "../../api/generated";
import { href } from "../../router";
import { formatDuration, formatNumber, parseDuration, timeRangeFrom, timeRangeParams, type TimeRange } from "../../util";

export type { MetricInfo, SeriesInfo } from "../../api/generated";
/** Aggregations of gauges and sums (query_range's `agg`). */
export const VALUE_AGGS = ["sum", "avg", "min", "max", "count", "rate"] as const;
/** Views of histograms: quantiles, the bucket heatmap, or the observation rate. */
export const HISTOGRAM_VIEWS = ["percentiles", "heatmap", "rate"] as const;
export type View = (typeof VALUE_AGGS)[number] | (typeof HISTOGRAM_VIEWS)[number];

export const QUANTILES = [0.5, 0.9, 0.99];

/** The service pseudo-attribute query_range understands in `match[..]` and `group_by`. */
export const SERVICE_KEY = "service_name";

export const STEPS = ["10s", "15s", "30s", "1m", "2m", "5m", "10m", "15m", "30m", "1h", "2h", "6h", "12h", "1d"];

export interface MetricsState {
  metric?: string;
  view?: View;
  groupBy: string[];
  matchers: [string, string][];
  /** Explicit step (`5m`); undefined is automatic. */
  step?: string;
  time: TimeRange;
}

export function isHistogram(type: string | null | undefined): boolean {
  return type === "histogram" || type === "exponential_histogram";
}

export function stateFrom(params: URLSearchParams): MetricsState {
  const matchers: [string, string][] = [];
  params.forEach((value, key) => {
    const m = /^match\[(.+)\]$/.exec(key);
    if (m) matchers.push([m[1], value]);
  });
  const groupBy = params
    .getAll("group_by")
    .flatMap((g) => g.split(","))
    .map((g) => g.trim())
    .filter(Boolean);
  const view = params.get("view") ?? undefined;
  const valid = [...VALUE_AGGS, ...HISTOGRAM_VIEWS] as string[];
  return {
    metric: params.get("metric") || undefined,
    view: view && valid.includes(view) ? (view as View) : undefined,
    groupBy: [...new Set(groupBy)],
    matchers,
    step: params.get("step") && parseDuration(params.get("step")!) ? params.get("step")! : undefined,
    time: timeRangeFrom(params),
  };
}

export function stateHref(s: MetricsState): string {
  const params: Record<string, string | string[] | undefined> = {
    metric: s.metric,
    view: s.view,
    group_by: s.groupBy.length ? s.groupBy.join(",") : undefined,
    step: s.step,
    ...timeRangeParams(s.time),
  };
  for (const [k, v] of s.matchers) params[`match[${k}]`] = v;
  return href("/metrics", params);
}

/** The view to use for a metric of `type` when the URL names none (or one that does not fit). */
export function effectiveView(view: View | undefined, type: string | null | undefined): View {
  if (isHistogram(type)) return view && (HISTOGRAM_VIEWS as readonly string[]).includes(view) ? view : "percentiles";
  if (view && (VALUE_AGGS as readonly string[]).includes(view)) return view;
  return type === "sum" ? "rate" : "avg";
}

function niceStepAtLeast(seconds: number): string {
  for (const s of STEPS) if (parseDuration(s)! / 1e9 >= seconds) return s;
  return STEPS[STEPS.length - 1];
}

/**
 * Automatic step: about 120 buckets over the range, but never shorter than the interval at
 * which the series report (or most buckets would be empty and rates meaningless).
 */
export function autoStep(rangeSeconds: number, series: SeriesInfo[] | undefined): string {
  const intervals = (series ?? [])
    .filter((s) => s.points > 1)
    .map((s) => (parseTime(s.last_time) - parseTime(s.first_time)) / 1000 / (s.points - 1))
    .filter((x) => Number.isFinite(x) && x > 0)
    .sort((a, b) => a - b);
  const interval = intervals.length ? intervals[Math.floor(intervals.length / 2)] : 0;
  // 5% slack: a 300.04 s reporting interval is a 5m step, not 10m.
  return niceStepAtLeast(Math.max(rangeSeconds / 120, interval * 0.95, 10));
}

/** Milliseconds since 1970 from RFC 3339 with any number of fraction digits. */
export function parseTime(text: string): number {
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(text);
  if (!m) return Date.parse(text);
  const frac = m[2] ? m[2].slice(0, 4).padEnd(4, "0") : "";
  return Date.parse(m[1] + frac + (m[3] || "Z"));
}

export function groupLabel(group: Record<string, string | null>): string {
  const parts = Object.entries(group).map(([k, v]) => `${k}=${v ?? "∅"}`);
  return parts.join(", ");
}

export interface ChartSeries {
  label: string;
  group: Record<string, string | null>;
  q?: number;
  /** [RFC 3339 time, value] as the API answered. */
  points: [string, number | null][];
}

export interface ChartData {
  step: string;
  series: ChartSeries[];
  /** The query_range URLs the series came from. */
  queries: string[];
}

export function rangeParams(s: MetricsState, bounds: { start: string; end: string }, step: string): Params {
  const params: Params = { metric: s.metric, start: bounds.start, end: bounds.end, step };
  if (s.groupBy.length) params.group_by = s.groupBy.join(",");
  for (const [k, v] of s.matchers) params[`match[${k}]`] = v;
  return params;
}

/** Runs the query_range calls of the line views. */
export async function loadLines(
  s: MetricsState,
  view: View,
  bounds: { start: string; end: string },
  step: string,
  signal: AbortSignal,
): Promise<ChartData> {
  const base = rangeParams(s, bounds, step);
  const calls: { params: Params; q?: number }[] =
    view === "percentiles"
      ? QUANTILES.map((q) => ({ params: { ...base, agg: "histogram_quantile", q }, q }))
      : [{ params: { ...base, agg: view } }];
  const answers = await Promise.all(
    calls.map((c) => getJSON<RangeResponse>("/api/v1/metrics/query_range", c.params, signal)),
  );
  const series: ChartSeries[] = [];
  answers.forEach((answer, i) => {
    const q = calls[i].q;
    for (const sr of answer.series) {
      const g = groupLabel(sr.group);
      const prefix = q === undefined ? "" : `p${Math.round(q * 1000) / 10}`;
      const label = [prefix, g].filter(Boolean).join(" · ") || s.metric || "value";
      series.push({ label, group: sr.group, q, points: sr.points.map((p) => [p.time, p.value]) });
    }
  });
  const queries = calls.map((c) => {
    const qs = new URLSearchParams();
    for (const [k, v] of Object.entries(c.params)) if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
    return `/api/v1/metrics/query_range?${qs}`;
  });
  return { step, series, queries };
}

/** Aligns series on the union of their times (unix seconds) for the chart. */
export function align(series: ChartSeries[]): { x: number[]; values: (number | null)[][] } {
  const times = new Set<number>();
  const parsed = series.map((s) => s.points.map(([t, v]) => [parseTime(t) / 1000, v] as const));
  parsed.forEach((ps) => ps.forEach(([t]) => times.add(t)));
  const x = [...times].sort((a, b) => a - b);
  const index = new Map(x.map((t, i) => [t, i]));
  const values = parsed.map((ps) => {
    const row: (number | null)[] = new Array(x.length).fill(null);
    for (const [t, v] of ps) row[index.get(t)!] = v;
    return row;
  });
  return { x, values };
}

/** A value formatter for a metric's unit (UCUM-ish: s, ms, us, ns, By, 1, {thing}). */
export function unitFormat(unit: string | null | undefined, perSecond: boolean): (v: number) => string {
  const u = unit ?? "";
  const suffix = perSecond ? "/s" : "";
  const scale: Record<string, number> = { s: 1e9, ms: 1e6, us: 1e3, "µs": 1e3, ns: 1 };
  if (!perSecond && u in scale) return (v) => formatDuration(v * scale[u]);
  if (u === "By")
    return (v) => {
      const a = Math.abs(v);
      const [d, n] = a >= 2 ** 30 ? [2 ** 30, "GiB"] : a >= 2 ** 20 ? [2 ** 20, "MiB"] : a >= 1024 ? [1024, "KiB"] : [1, "B"];
      return `${formatNumber(v / d)} ${n}${suffix}`;
    };
  const braces = /^\{(.*)\}$/.exec(u);
  const word = braces ? "" : u === "1" ? "" : u;
  return (v) => `${formatNumber(v)}${word ? ` ${word}` : ""}${suffix}`;
}
