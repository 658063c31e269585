// Duration over time: one point per result, drawn in SVG. Each point is a link to its trace;
// the plot is one tab stop, and the arrow keys move between points (oldest to newest).
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { navigate } from "../../router";
import { formatDuration, formatTime } from "../../util";
import { startNs, type TraceSummary } from "./query";

const HEIGHT = 220;
const PAD = { left: 72, right: 16, top: 12, bottom: 28 };

interface Props {
  traces: TraceSummary[];
  hovered?: string;
  onHover: (id: string | undefined) => void;
}

/** About `count` round ticks between lo and hi. */
function linearTicks(lo: number, hi: number, count: number): number[] {
  const span = hi - lo;
  if (!(span > 0)) return [lo];
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
  return out;
}

/** The first round tick at or above `v`, for an axis of about `count` ticks. */
function niceCeil(v: number, count: number): number {
  const raw = v / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
  return Math.ceil(v / step) * step;
}

/** Time ticks (ms) at round second/minute/hour steps. */
function timeTicks(lo: number, hi: number, count: number): number[] {
  const steps = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5,
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 21600, 43200, 86400,
  ].map((s) => s * 1000);
  const raw = (hi - lo) / count;
  const step = steps.find((s) => s >= raw) ?? Math.ceil(raw / 86400e3) * 86400e3;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi; v += step) out.push(v);
  return out;
}

function timeLabel(ms: number, spanMs: number): string {
  const d = new Date(ms);
  const pad = (n: number) => String(n).padStart(2, "0");
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  if (spanMs > 2 * 86400e3) return `${d.getMonth() + 1}/${d.getDate()} ${hm}`;
  if (spanMs < 10e3) return `${hm}:${pad(d.getSeconds())}.${String(d.getMilliseconds()).padStart(3, "0")}`;
  return spanMs < 600e3 ? `${hm}:${pad(d.getSeconds())}` : hm;
}

export function Scatter({ traces, hovered, onHover }: Props) {
  const host = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(800);
  const [active, setActive] = useState(0);
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const measure = () => setWidth(Math.max(320, Math.floor(el.clientWidth)));
    measure();
    const ro = new ResizeObserver(measure);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  // Oldest first, so the arrow keys walk along the time axis.
  const points = useMemo(
    () => traces.map((t) => ({ t, ms: startNs(t) / 1e6 })).sort((a, b) => a.ms - b.ms),
    [traces],
  );
  useEffect(() => setActive((a) => Math.min(a, Math.max(0, points.length - 1))), [points.length]);

  const plotW = width - PAD.left - PAD.right;
  const plotH = HEIGHT - PAD.top - PAD.bottom;
  const xs = points.map((p) => p.ms);
  let x0 = Math.min(...xs);
  let x1 = Math.max(...xs);
  if (!(x1 > x0)) {
    x0 -= 30e3;
    x1 += 30e3;
  } else {
    const pad = (x1 - x0) * 0.03;
    x0 -= pad;
    x1 += pad;
  }
  const durs = points.map((p) => Math.max(p.t.duration_ns, 1));
  const dMax = Math.max(...durs, 1);
  const dMin = Math.min(...durs, dMax);
  // A log axis when durations span more than two orders of magnitude.
  const log = dMax / dMin > 100;
  const yLo = log ? 10 ** Math.floor(Math.log10(dMin)) : 0;
  const yHi = log ? 10 ** Math.ceil(Math.log10(dMax)) : niceCeil(dMax * 1.05, 4);
  const x = (ms: number) => PAD.left + ((ms - x0) / (x1 - x0)) * plotW;
  const y = (ns: number) => {
    const f = log
      ? (Math.log10(Math.max(ns, 1)) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo) || 1)
      : ns / (yHi || 1);
    return PAD.top + plotH - f * plotH;
  };
  const yTicks = log
    ? Array.from({ length: Math.round(Math.log10(yHi / yLo)) + 1 }, (_, i) => yLo * 10 ** i)
    : linearTicks(0, yHi, 4);
  const xTicks = timeTicks(x0, x1, Math.max(2, Math.floor(plotW / 110)));
  const maxSpans = Math.max(...points.map((p) => p.t.span_count), 1);
  const radius = (spans: number) => 3.5 + 5 * Math.sqrt(Math.log1p(spans) / Math.log1p(maxSpans));

  const pointRefs = useRef<(SVGElement | null)[]>([]);
  const focusPoint = (i: number) => {
    const n = Math.max(0, Math.min(points.length - 1, i));
    setActive(n);
    pointRefs.current[n]?.focus();
  };
  const onKeyDown = (e: KeyboardEvent, i: number) => {
    const moves: Record<string, number> = {
      ArrowRight: i + 1,
      ArrowDown: i + 1,
      ArrowLeft: i - 1,
      ArrowUp: i - 1,
      Home: 0,
      End: points.length - 1,
    };
    if (e.key in moves) {
      e.preventDefault();
      focusPoint(moves[e.key]);
    } else if (e.key === "Enter" || e.key === " ") {
      e.preventDefault();
      navigate(`/trace/${points[i].t.trace_id}`);
    }
  };

  return (
    <figure class="search-scatter">
      <figcaption id="search-scatter-caption">
        Duration over time — {points.length} {points.length === 1 ? "trace" : "traces"}; select a point to open its trace
        <span class="sr-only"> (arrow keys move between points)</span>
      </figcaption>
      <div ref={host} class="search-scatter-host">
        <svg
          width={width}
          height={HEIGHT}
          role="group"
          aria-labelledby="search-scatter-caption"
          onMouseLeave={() => onHover(undefined)}
        >
          <g class="axis" aria-hidden="true">
            {yTicks.map((v) => (
              <g>
                <line x1={PAD.left} x2={width - PAD.right} y1={y(v)} y2={y(v)} class="grid" />
                <text x={PAD.left - 6} y={y(v)} dy="0.32em" text-anchor="end">
                  {v === 0 ? "0" : formatDuration(v)}
                </text>
              </g>
            ))}
            {xTicks.map((v) => (
              <text x={x(v)} y={HEIGHT - 8} text-anchor="middle">
                {timeLabel(v, x1 - x0)}
              </text>
            ))}
            <line x1={PAD.left} x2={PAD.left} y1={PAD.top} y2={PAD.top + plotH} class="frame" />
            <line x1={PAD.left} x2={width - PAD.right} y1={PAD.top + plotH} y2={PAD.top + plotH} class="frame" />
          </g>
          {points.map(({ t, ms }, i) => {
            const label =
              `${t.root_service ?? "?"}: ${t.root_operation ?? "(no root span)"}, ${formatDuration(t.duration_ns)}, ` +
              `${t.span_count} spans${t.error_count ? `, ${t.error_count} errors` : ""}, ${formatTime(startNs(t))}`;
            return (
              <a
                key={t.trace_id}
                ref={(el: Element | null) => {
                  pointRefs.current[i] = el as SVGElement | null;
                }}
                href={`/trace/${t.trace_id}`}
                data-trace-id={t.trace_id}
                class={`point${t.error_count ? " has-error" : ""}${hovered === t.trace_id ? " hovered" : ""}`}
                tabIndex={i === active ? 0 : -1}
                aria-label={label}
                onClick={(e: MouseEvent) => {
                  if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
                  e.preventDefault();
                  navigate(`/trace/${t.trace_id}`);
                }}
                onKeyDown={(e: KeyboardEvent) => onKeyDown(e, i)}
                onFocus={() => {
                  setActive(i);
                  onHover(t.trace_id);
                }}
                onMouseEnter={() => onHover(t.trace_id)}
              >
                <title>{label}</title>
                <circle cx={x(ms)} cy={y(t.duration_ns)} r={radius(t.span_count)} />
              </a>
            );
          })}
        </svg>
      </div>
    </figure>
  );
}
