// Result rows as a chart: a time x column draws lines (TimeChart, one per value of an
// optional "split by" column); any other x draws horizontal SVG bars.
import { useMemo } from "preact/hooks";
import { TimeChart, type Series } from "../../components/TimeChart";
import { formatNumber } from "../../util";
import { cellText, isNumericType, isTimeType, type Column, type Row } from "./run";

export interface ChartChoice {
  x?: string;
  y?: string;
  split?: string;
}

const ISO = /^\d{4}-\d\d-\d\d[T ]\d\d:\d\d/;
const MAX_BARS = 100;
const numberFormat = (v: number) => formatNumber(v);

function isTimeColumn(c: Column, rows: Row[]): boolean {
  if (c.type) return isTimeType(c.type);
  const vs = rows.map((r) => r[c.name]).filter((v) => v !== null && v !== undefined);
  return vs.length > 0 && vs.every((v) => typeof v === "string" && ISO.test(v));
}

function isNumericColumn(c: Column, rows: Row[]): boolean {
  if (c.type) return isNumericType(c.type);
  const vs = rows.map((r) => r[c.name]).filter((v) => v !== null && v !== undefined);
  return vs.length > 0 && vs.every((v) => typeof v === "number" || typeof v === "bigint");
}

function toSeconds(v: unknown): number | null {
  if (typeof v !== "string") return null;
  const m = /^(.*T\d\d:\d\d:\d\d)(\.\d+)?(.*)$/.exec(v);
  const ms = m ? Date.parse(m[1] + (m[2] ? m[2].slice(0, 4) : "") + (m[3] || "Z")) : Date.parse(v);
  return Number.isFinite(ms) ? ms / 1000 : null;
}

function toNumber(v: unknown): number | null {
  if (typeof v === "number") return v;
  if (typeof v === "bigint") return Number(v);
  return null;
}

/** The columns a chart can use and the defaults when the URL names none. */
export function chartColumns(columns: Column[], rows: Row[], choice: ChartChoice) {
  const time = columns.filter((c) => isTimeColumn(c, rows)).map((c) => c.name);
  const numeric = columns.filter((c) => isNumericColumn(c, rows)).map((c) => c.name);
  const names = columns.map((c) => c.name);
  const x =
    choice.x && names.includes(choice.x)
      ? choice.x
      : (time[0] ?? names.find((n) => !numeric.includes(n)) ?? names[0]);
  const y = choice.y && numeric.includes(choice.y) ? choice.y : numeric.find((n) => n !== x);
  const splitOptions = names.filter((n) => n !== x && n !== y && !numeric.includes(n) && !time.includes(n));
  const split = choice.split && splitOptions.includes(choice.split) ? choice.split : undefined;
  return { time, numeric, names, x, y, split, splitOptions, isTime: x !== undefined && time.includes(x) };
}

export function ResultChart({
  columns,
  rows,
  choice,
  onChange,
}: {
  columns: Column[];
  rows: Row[];
  choice: ChartChoice;
  onChange: (c: ChartChoice) => void;
}) {
  const cc = chartColumns(columns, rows, choice);
  const set = (k: keyof ChartChoice) => (e: Event) =>
    onChange({ x: cc.x, y: cc.y, split: cc.split, [k]: (e.target as HTMLSelectElement).value || undefined });
  return (
    <div class="sql-chart">
      <div class="form-row">
        <label>
          X
          <select value={cc.x ?? ""} onChange={set("x")}>
            {cc.names.map((n) => (
              <option value={n}>{n}</option>
            ))}
          </select>
        </label>
        <label>
          Y
          <select value={cc.y ?? ""} onChange={set("y")} disabled={cc.numeric.length === 0}>
            {cc.numeric.map((n) => (
              <option value={n}>{n}</option>
            ))}
          </select>
        </label>
        {cc.isTime && (
          <label>
            Split by
            <select value={cc.split ?? ""} onChange={set("split")}>
              <option value="">(none)</option>
              {cc.splitOptions.map((n) => (
                <option value={n}>{n}</option>
              ))}
            </select>
          </label>
        )}
      </div>
      {!cc.x || !cc.y ? (
        <p class="muted">A chart needs a numeric column for Y.</p>
      ) : cc.isTime ? (
        <TimeLines rows={rows} x={cc.x} y={cc.y} split={cc.split} />
      ) : (
        <Bars rows={rows} x={cc.x} y={cc.y} />
      )}
    </div>
  );
}

function TimeLines({ rows, x, y, split }: { rows: Row[]; x: string; y: string; split?: string }) {
  const data = useMemo(() => {
    const groups = new Map<string, Map<number, number>>();
    const times = new Set<number>();
    for (const r of rows) {
      const t = toSeconds(r[x]);
      const v = toNumber(r[y]);
      if (t === null || v === null) continue;
      const g = split ? cellText(r[split]) : y;
      if (!groups.has(g)) groups.set(g, new Map());
      const m = groups.get(g)!;
      // Several rows at one time (no split chosen) add up.
      m.set(t, (m.get(t) ?? 0) + v);
      times.add(t);
    }
    const xs = [...times].sort((a, b) => a - b);
    const series: Series[] = [...groups.entries()].map(([label, m]) => ({
      label,
      values: xs.map((t) => m.get(t) ?? null),
    }));
    return { xs, series };
  }, [rows, x, y, split]);
  if (data.xs.length === 0) return <p class="muted">No rows with both a time and a number.</p>;
  return (
    <div class="sql-chart-plot" data-kind="time" data-series-count={data.series.length} data-points={data.xs.length}>
      <TimeChart x={data.xs} series={data.series} format={numberFormat} height={320} title={`${y} by ${x}`} />
    </div>
  );
}

function Bars({ rows, x, y }: { rows: Row[]; x: string; y: string }) {
  const bars = rows
    .map((r) => ({ label: cellText(r[x]), value: toNumber(r[y]) }))
    .filter((b): b is { label: string; value: number } => b.value !== null && Number.isFinite(b.value));
  const shown = bars.slice(0, MAX_BARS);
  if (shown.length === 0) return <p class="muted">No numeric values to draw.</p>;
  const max = Math.max(0, ...shown.map((b) => b.value));
  const min = Math.min(0, ...shown.map((b) => b.value));
  const span = max - min || 1;
  const rowH = 22;
  const labelW = 220;
  const valueW = 80;
  const plotW = 560;
  const width = labelW + plotW + valueW;
  const height = shown.length * rowH + 4;
  const zero = labelW + ((0 - min) / span) * plotW;
  return (
    <div class="sql-chart-plot" data-kind="bars" data-points={shown.length}>
      <svg
        class="sql-bars"
        viewBox={`0 0 ${width} ${height}`}
        width="100%"
        style={{ maxWidth: `${width}px` }}
        role="img"
        aria-label={`${y} by ${x}: ${shown.length} bars`}
      >
        {shown.map((b, i) => {
          const x0 = labelW + ((Math.min(b.value, 0) - min) / span) * plotW;
          const w = (Math.abs(b.value) / span) * plotW;
          const top = i * rowH + 2;
          const label = b.label.length > 32 ? `${b.label.slice(0, 31)}…` : b.label;
          return (
            <g class="bar">
              <title>{`${b.label}: ${b.value}`}</title>
              <text x={labelW - 6} y={top + rowH / 2} text-anchor="end" dominant-baseline="middle">
                {label}
              </text>
              <rect x={x0} y={top + 2} width={Math.max(w, 1)} height={rowH - 6} rx="2" />
              <text x={labelW + plotW + 6} y={top + rowH / 2} dominant-baseline="middle" class="bar-value">
                {formatNumber(b.value)}
              </text>
            </g>
          );
        })}
        <line x1={zero} x2={zero} y1={0} y2={height} class="bar-axis" />
      </svg>
      {bars.length > MAX_BARS && (
        <p class="muted small">
          The first {MAX_BARS} of {bars.length} rows are drawn.
        </p>
      )}
    </div>
  );
}
