// Line chart over time (uPlot, canvas): latency percentiles, metric series, SQL results.
import { useEffect, useRef } from "preact/hooks";
import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";

export interface Series {
  label: string;
  values: (number | null)[];
  color?: string;
  dash?: number[];
}

export interface TimeChartProps {
  /** Unix seconds, ascending. */
  x: number[];
  series: Series[];
  /** Formats a y value for the axis and the legend. */
  format?: (v: number) => string;
  height?: number;
  title?: string;
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#4d7c0f", "#be185d"];

export function TimeChart({ x, series, format, height = 260, title }: TimeChartProps) {
  const host = useRef<HTMLDivElement>(null);
  useEffect(() => {
    const el = host.current;
    if (!el) return;
    const fmt = format ?? ((v: number) => String(v));
    const opts: uPlot.Options = {
      title,
      width: Math.max(el.clientWidth, 300),
      height,
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: s.color ?? PALETTE[i % PALETTE.length],
          width: 1.5,
          dash: s.dash,
          spanGaps: false,
          value: (_u: uPlot, v: number | null) => (v == null ? "–" : fmt(v)),
        })),
      ],
      axes: [{}, { values: (_u: uPlot, vals: number[]) => vals.map((v) => fmt(v)), size: 70 }],
    };
    const plot = new uPlot(opts, [x, ...series.map((s) => s.values)] as uPlot.AlignedData, el);
    const resize = new ResizeObserver(() => plot.setSize({ width: Math.max(el.clientWidth, 300), height }));
    resize.observe(el);
    return () => {
      resize.disconnect();
      plot.destroy();
    };
  }, [x, series, format, height, title]);
  return <div class="chart" ref={host} role="img" aria-label={title ?? "chart"} />;
}
