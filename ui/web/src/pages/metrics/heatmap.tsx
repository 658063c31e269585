// Histogram heatmap: time × bucket, colour by the number of observations. The server
// computes the per-bucket increases (GET /api/v1/metrics/heatmap: counter resets and new
// start times restart from zero, as query_range does); this file lays them on a grid.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { getJSON } from "../../api";
import type { Heatmap as HeatmapAnswer } from "../../api/generated";
import { formatTime } from "../../util";
import { parseTime, rangeParams, type MetricsState } from "./model";

export interface HeatmapData {
  /** Bucket start times, ms since 1970. */
  times: number[];
  stepMs: number;
  /** Upper bounds, ascending; the last is +Inf. */
  bounds: number[];
  /** counts[time][bucket]. */
  counts: number[][];
  max: number;
  total: number;
}

export async function loadHeatmap(
  s: MetricsState,
  bounds: { start: string; end: string },
  step: string,
  signal: AbortSignal,
): Promise<HeatmapData> {
  const params = rangeParams({ ...s, groupBy: [] }, bounds, step);
  const answer = await getJSON<HeatmapAnswer>("/api/v1/metrics/heatmap", params, signal);
  return grid(answer);
}

/** The server's sparse columns on a dense time × bucket grid. Pure. */
export function grid(answer: HeatmapAnswer): HeatmapData {
  const startMs = parseTime(answer.start);
  const endMs = parseTime(answer.end);
  const stepMs = answer.step_seconds * 1000;
  const columns = Math.max(1, Math.ceil((endMs - startMs) / stepMs));
  const bounds = answer.bounds.map((b) => (b === null ? Infinity : b));
  const counts: number[][] = Array.from({ length: columns }, () => new Array<number>(bounds.length).fill(0));
  let max = 0;
  let total = 0;
  for (const column of answer.columns) {
    const x = Math.floor((parseTime(column.time) - startMs) / stepMs);
    if (x < 0 || x >= columns) continue;
    column.counts.forEach((c, y) => {
      counts[x][y] += c;
      max = Math.max(max, counts[x][y]);
      total += c;
    });
  }
  const times = Array.from({ length: columns }, (_, i) => startMs + i * stepMs);
  return { times, stepMs, bounds, counts, max, total };
}

/** Light to dark blue; `f` in [0, 1]. */
function colour(f: number): string {
  const a = [239, 246, 255];
  const b = [30, 58, 138];
  const mix = a.map((x, i) => Math.round(x + (b[i] - x) * f));
  return `rgb(${mix[0]}, ${mix[1]}, ${mix[2]})`;
}

const LEFT = 84;
const BOTTOM = 26;
const TOP = 8;
const RIGHT = 12;

function boundLabel(bounds: number[], i: number, format: (v: number) => string): string {
  const hi = bounds[i];
  const lo = i > 0 ? bounds[i - 1] : undefined;
  const top = hi === Infinity ? "+Inf" : format(hi);
  return lo === undefined ? `≤ ${top}` : `${lo === Infinity ? "+Inf" : format(lo)} – ${top}`;
}

export function Heatmap({ data, format, height = 300 }: { data: HeatmapData; format: (v: number) => string; height?: number }) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const host = useRef<HTMLDivElement>(null);
  const [width, setWidth] = useState(800);
  const [hover, setHover] = useState<{ x: number; y: number; text: string } | null>(null);
  const rows = data.bounds.length;
  const cols = data.times.length;

  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const update = () => setWidth(Math.max(el.clientWidth, 300));
    update();
    const ro = new ResizeObserver(update);
    ro.observe(el);
    return () => ro.disconnect();
  }, []);

  const geometry = useMemo(() => {
    const plotW = width - LEFT - RIGHT;
    const plotH = height - TOP - BOTTOM;
    return { plotW, plotH, cellW: plotW / Math.max(cols, 1), cellH: plotH / Math.max(rows, 1) };
  }, [width, height, rows, cols]);

  useEffect(() => {
    const c = canvas.current;
    if (!c) return;
    const dpr = window.devicePixelRatio || 1;
    c.width = width * dpr;
    c.height = height * dpr;
    c.style.width = `${width}px`;
    c.style.height = `${height}px`;
    const ctx = c.getContext("2d");
    if (!ctx) return;
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, width, height);
    const { plotW, plotH, cellW, cellH } = geometry;
    ctx.fillStyle = "#fafafa";
    ctx.fillRect(LEFT, TOP, plotW, plotH);
    for (let x = 0; x < cols; x++) {
      for (let y = 0; y < rows; y++) {
        const n = data.counts[x][y];
        if (n <= 0) continue;
        ctx.fillStyle = colour(0.12 + 0.88 * Math.sqrt(n / data.max));
        // Row 0 (smallest bound) at the bottom.
        ctx.fillRect(LEFT + x * cellW, TOP + (rows - 1 - y) * cellH, Math.max(cellW - 0.5, 1), Math.max(cellH - 0.5, 1));
      }
    }
    ctx.fillStyle = "#4a5360";
    ctx.font = "11px system-ui, sans-serif";
    ctx.textBaseline = "middle";
    ctx.textAlign = "right";
    const every = Math.max(1, Math.ceil(14 / cellH));
    for (let y = 0; y < rows; y += every) {
      const b = data.bounds[y];
      ctx.fillText(b === Infinity ? "+Inf" : `≤ ${format(b)}`, LEFT - 6, TOP + (rows - 1 - y + 0.5) * cellH);
    }
    ctx.textAlign = "center";
    ctx.textBaseline = "top";
    const labels = Math.max(1, Math.floor(plotW / 110));
    const stride = Math.max(1, Math.ceil(cols / labels));
    for (let x = 0; x < cols; x += stride) {
      const t = new Date(data.times[x]);
      const text = `${String(t.getHours()).padStart(2, "0")}:${String(t.getMinutes()).padStart(2, "0")}`;
      ctx.fillText(text, LEFT + (x + 0.5) * cellW, TOP + plotH + 6);
    }
  }, [data, width, height, format, geometry, rows, cols]);

  const onMove = (e: MouseEvent) => {
    const rect = (e.currentTarget as HTMLCanvasElement).getBoundingClientRect();
    const px = e.clientX - rect.left - LEFT;
    const py = e.clientY - rect.top - TOP;
    const x = Math.floor(px / geometry.cellW);
    const y = rows - 1 - Math.floor(py / geometry.cellH);
    if (x < 0 || x >= cols || y < 0 || y >= rows) return setHover(null);
    const n = data.counts[x][y];
    const text = `${formatTime(data.times[x] * 1e6)} (+${Math.round(data.stepMs / 1000)}s) · ${boundLabel(data.bounds, y, format)}: ${Math.round(n)}`;
    setHover({ x: e.clientX - rect.left, y: e.clientY - rect.top, text });
  };

  const cells = data.counts.reduce((n, col) => n + col.filter((c) => c > 0).length, 0);
  return (
    <div class="heatmap" ref={host} data-cells={cells} data-total={data.total} data-buckets={rows} data-columns={cols}>
      <canvas
        ref={canvas}
        role="img"
        aria-label={`Heatmap: ${Math.round(data.total)} observations in ${rows} buckets over ${cols} time steps`}
        onMouseMove={onMove}
        onMouseLeave={() => setHover(null)}
      />
      {hover && (
        <div class="heatmap-tip" style={{ left: `${hover.x + 12}px`, top: `${hover.y + 12}px` }}>
          {hover.text}
        </div>
      )}
      <div class="heatmap-legend" aria-hidden="true">
        <span>0</span>
        <span class="heatmap-scale" />
        <span>{Math.round(data.max)} per bucket</span>
      </div>
    </div>
  );
}
