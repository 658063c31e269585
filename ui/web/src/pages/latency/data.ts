// Data for the latency report: GET /api/v1/latency (report, or the table of every
// operation when no service is given) and SQL for the slowest spans of the window.
import { getJSON, sqlRows } from "../../api";

export interface Quantiles {
  p50: number;
  p90: number;
  p95: number;
  p99: number;
  max: number;
  min: number;
}

export interface HistogramBucket {
  lower_ns: number;
  upper_ns: number;
  count: number;
  exemplar_trace_ids: string[];
}

export interface StepPoint {
  start_ns: number;
  count: number;
  errors: number;
  p50_ns: number | null;
  p95_ns: number | null;
  p99_ns: number | null;
}

export interface OperationStats {
  service: string;
  operation: string;
  count: number;
  rate_per_sec: number;
  errors: number;
  error_rate: number;
  p50_ns: number | null;
  p90_ns: number | null;
  p95_ns: number | null;
  p99_ns: number | null;
  max_ns: number | null;
}

export interface LatencyReport {
  start_ns: number;
  end_ns: number;
  count: number;
  rate_per_sec: number;
  errors: number;
  error_rate: number;
  latency_ns: Quantiles | null;
  histogram: HistogramBucket[];
  series: StepPoint[];
  slowest_operations: OperationStats[];
}

export interface ServiceLatency {
  service: string;
  operation: string | null;
  step_ns: number;
  current: LatencyReport;
  compare: LatencyReport | null;
}

export interface OperationTable {
  current: { start_ns: number; end_ns: number; operations: OperationStats[] };
  compare: { start_ns: number; end_ns: number; operations: OperationStats[] } | null;
}

export interface Window {
  start: string;
  end: string;
}

export type CompareMode = "none" | "previous" | "day" | "week" | "custom";

export const COMPARE_LABELS: Record<CompareMode, string> = {
  none: "No comparison",
  previous: "Previous period",
  day: "One day earlier",
  week: "One week earlier",
  custom: "Custom window",
};

/** The comparison window for `current`, or undefined (none, or an incomplete custom one). */
export function compareWindow(mode: CompareMode, current: Window, custom: Partial<Window>): Window | undefined {
  const s = Date.parse(current.start);
  const e = Date.parse(current.end);
  const shift = (ms: number) => ({ start: new Date(s - ms).toISOString(), end: new Date(e - ms).toISOString() });
  switch (mode) {
    case "previous":
      return shift(e - s);
    case "day":
      return shift(86400e3);
    case "week":
      return shift(7 * 86400e3);
    case "custom":
      if (custom.start && custom.end && Date.parse(custom.start) < Date.parse(custom.end)) {
        return { start: new Date(custom.start).toISOString(), end: new Date(custom.end).toISOString() };
      }
      return undefined;
    default:
      return undefined;
  }
}

export function loadReport(
  service: string,
  operation: string | undefined,
  window: Window,
  compare: Window | undefined,
  step: string | undefined,
  signal: AbortSignal,
): Promise<ServiceLatency> {
  return getJSON<ServiceLatency>(
    "/api/v1/latency",
    {
      service,
      operation,
      start: window.start,
      end: window.end,
      compare_start: compare?.start,
      compare_end: compare?.end,
      step,
    },
    signal,
  );
}

export function loadOperations(window: Window, signal: AbortSignal): Promise<OperationTable> {
  return getJSON<OperationTable>("/api/v1/latency", { start: window.start, end: window.end }, signal);
}

export interface SlowSpan {
  trace_id: string;
  span_name: string;
  duration_ns: number;
  status_code: number;
  start_time: string;
}

const sqlString = (s: string) => `'${s.replace(/'/g, "''")}'`;

/** The slowest spans of the service (and operation) in the window, one per trace. */
export async function loadSlowest(
  service: string,
  operation: string | undefined,
  window: Window,
  limit: number,
  signal: AbortSignal,
): Promise<SlowSpan[]> {
  const where = [
    `service_name = ${sqlString(service)}`,
    operation ? `span_name = ${sqlString(operation)}` : "",
    `start_time >= TIMESTAMP ${sqlString(window.start)}`,
    `start_time < TIMESTAMP ${sqlString(window.end)}`,
  ].filter(Boolean);
  const rows = await sqlRows<SlowSpan>(
    `SELECT hex_id(trace_id) AS trace_id, span_name, duration_ns, status_code, start_time FROM spans ` +
      `WHERE ${where.join(" AND ")} ORDER BY duration_ns DESC LIMIT ${limit * 4}`,
    signal,
  );
  const seen = new Set<string>();
  const out: SlowSpan[] = [];
  for (const r of rows) {
    if (seen.has(r.trace_id)) continue;
    seen.add(r.trace_id);
    out.push(r);
    if (out.length === limit) break;
  }
  return out;
}

/** Relative change from `before` to `now`, or undefined when it has no meaning. */
export function delta(now: number | null | undefined, before: number | null | undefined): number | undefined {
  if (now == null || before == null || !Number.isFinite(now) || !Number.isFinite(before) || before === 0) return undefined;
  return (now - before) / before;
}

export function formatDelta(d: number | undefined): string {
  if (d === undefined) return "–";
  const p = d * 100;
  const text = Math.abs(p) >= 10 ? p.toFixed(0) : p.toFixed(1);
  return `${p > 0 ? "+" : ""}${text} %`;
}

export function formatPercent(rate: number): string {
  if (!(rate > 0)) return "0 %";
  const p = rate * 100;
  return `${p >= 10 ? p.toFixed(0) : p >= 1 ? p.toFixed(1) : p.toPrecision(2)} %`;
}
