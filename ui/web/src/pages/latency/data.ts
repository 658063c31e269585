// Data for the latency report: GET /api/v1/latency (report, or the table of every
// operation when no service is given) and GET /api/v1/latency/slowest for the slowest spans
// of the window.
import { getJSON } from "../../api";
import type {
  HistogramBucket,
  LatencyReport,
  OperationList,
  OperationStats,
  OperationTable,
  Quantiles,
  ServiceLatency,
  SlowSpan,
  SlowestSpans,
  StepPoint,
} from "../../api/generated";

export type {
  HistogramBucket,
  LatencyReport,
  OperationList,
  OperationStats,
  OperationTable,
  Quantiles,
  ServiceLatency,
  SlowSpan,
  StepPoint,
};

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

/** The slowest spans of the service (and operation) in the window, one per trace. */
export async function loadSlowest(
  service: string,
  operation: string | undefined,
  window: Window,
  limit: number,
  signal: AbortSignal,
): Promise<SlowSpan[]> {
  const answer = await getJSON<SlowestSpans>(
    "/api/v1/latency/slowest",
    { service, operation, start: window.start, end: window.end, limit },
    signal,
  );
  return answer.spans;
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
