// Shared formatting, time-range and data-loading helpers.
import { useEffect, useState } from "preact/hooks";

/** "1.23 s", "45.6 ms", "789 µs", "12 ns" from nanoseconds. */
export function formatDuration(ns: number): string {
  if (!Number.isFinite(ns)) return "–";
  const a = Math.abs(ns);
  if (a >= 60e9) {
    const m = Math.floor(a / 60e9);
    const s = (a - m * 60e9) / 1e9;
    return `${ns < 0 ? "-" : ""}${m}m ${s.toFixed(s < 10 ? 1 : 0)}s`;
  }
  if (a >= 1e9) return `${(ns / 1e9).toPrecision(3)} s`;
  if (a >= 1e6) return `${(ns / 1e6).toPrecision(3)} ms`;
  if (a >= 1e3) return `${(ns / 1e3).toPrecision(3)} µs`;
  return `${Math.round(ns)} ns`;
}

/** Local date and time with milliseconds, from unix nanoseconds. */
export function formatTime(ns: number): string {
  const d = new Date(ns / 1e6);
  const pad = (n: number, w = 2) => String(n).padStart(w, "0");
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

export function formatNumber(n: number, digits = 3): string {
  if (!Number.isFinite(n)) return "–";
  if (Math.abs(n) >= 1e6) return `${(n / 1e6).toPrecision(digits)}M`;
  if (Math.abs(n) >= 1e4) return `${(n / 1e3).toPrecision(digits)}k`;
  return Number.isInteger(n) ? String(n) : n.toPrecision(digits);
}

/** Parses "15m", "1h", "250ms", "7d" into nanoseconds; undefined if malformed. */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ns|us|µs|ms|s|m|h|d)\s*$/.exec(text);
  if (!m) return undefined;
  const unit: Record<string, number> = { ns: 1, us: 1e3, "µs": 1e3, ms: 1e6, s: 1e9, m: 60e9, h: 3600e9, d: 86400e9 };
  return Number(m[1]) * unit[m[2]];
}

/**
 * A time range as kept in the URL: either relative (`range=1h`, ending now) or absolute
 * (`start`/`end` as RFC 3339). Resolved to RFC 3339 strings when a request is made.
 */
export interface TimeRange {
  range?: string;
  start?: string;
  end?: string;
}

export const DEFAULT_RANGE = "1h";

export function timeRangeFrom(params: URLSearchParams, fallback = DEFAULT_RANGE): TimeRange {
  const start = params.get("start") ?? undefined;
  const end = params.get("end") ?? undefined;
  if (start || end) return { start, end };
  return { range: params.get("range") ?? fallback };
}

/** URL parameters for a time range. */
export function timeRangeParams(t: TimeRange): Record<string, string | undefined> {
  return t.range ? { range: t.range } : { start: t.start, end: t.end };
}

/** Absolute bounds (RFC 3339) for API calls; relative ranges end now. */
export function resolveRange(t: TimeRange, now = Date.now()): { start: string; end: string } {
  if (t.range) {
    const ns = parseDuration(t.range) ?? parseDuration(DEFAULT_RANGE)!;
    return { start: new Date(now - ns / 1e6).toISOString(), end: new Date(now).toISOString() };
  }
  const end = t.end ? new Date(t.end) : new Date(now);
  const start = t.start ? new Date(t.start) : new Date(end.getTime() - 3600e3);
  return { start: start.toISOString(), end: end.toISOString() };
}

export interface Async<T> {
  data?: T;
  error?: Error;
  loading: boolean;
}

/**
 * Runs `load` whenever `deps` change, aborting the previous run; the result of a stale
 * run is never shown.
 */
export function useAsync<T>(load: (signal: AbortSignal) => Promise<T>, deps: unknown[]): Async<T> {
  const [state, setState] = useState<Async<T>>({ loading: true });
  useEffect(() => {
    const ctl = new AbortController();
    setState((s) => ({ data: s.data, loading: true }));
    load(ctl.signal).then(
      (data) => {
        if (!ctl.signal.aborted) setState({ data, loading: false });
      },
      (error: Error) => {
        if (!ctl.signal.aborted) setState({ error, loading: false });
      },
    );
    return () => ctl.abort();
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, deps);
  return state;
}

/** Hex colour for a service name: stable across pages and reloads. */
export function serviceColor(name: string): string {
  let h = 2166136261;
  for (let i = 0; i < name.length; i++) {
    h ^= name.charCodeAt(i);
    h = Math.imul(h, 16777619);
  }
  const hue = (h >>> 0) % 360;
  // Mid lightness keeps white text readable and bars visible on the light background.
  return `hsl(${hue} 60% 45%)`;
}
