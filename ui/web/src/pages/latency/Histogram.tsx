// Latency histogram: the report's power-of-two buckets as SVG bars (a log-scale duration
// axis), the comparison window as outlined bars; each bar links to its slowest trace.
import { navigate } from "../../router";
import { formatDuration, formatNumber } from "../../util";
import type { HistogramBucket } from "./data";

const H = 180;
const LABEL_H = 34;

export function Histogram({ current, compare }: { current: HistogramBucket[]; compare?: HistogramBucket[] }) {
  const lowers = new Set<number>();
  current.forEach((b) => lowers.add(b.lower_ns));
  compare?.forEach((b) => lowers.add(b.lower_ns));
  if (lowers.size === 0) return <p class="muted">No spans to draw.</p>;
  const sorted = [...lowers].sort((a, b) => a - b);
  // Fill the gaps so the axis stays logarithmic.
  const all: number[] = [];
  for (let v = sorted[0]; v <= sorted[sorted.length - 1]; v = v === 0 ? 1 : v * 2) {
    all.push(v);
    if (all.length > 70) break;
  }
  const cur = new Map(current.map((b) => [b.lower_ns, b]));
  const cmp = new Map((compare ?? []).map((b) => [b.lower_ns, b]));
  const totalCur = current.reduce((s, b) => s + b.count, 0) || 1;
  const totalCmp = (compare ?? []).reduce((s, b) => s + b.count, 0) || 1;
  // Shares, so windows with different traffic compare by shape.
  const max = Math.max(
    ...all.map((v) => Math.max((cur.get(v)?.count ?? 0) / totalCur, compare ? (cmp.get(v)?.count ?? 0) / totalCmp : 0)),
    1e-9,
  );
  const slot = 44;
  const width = all.length * slot;
  return (
    <div class="histogram-scroll">
      <svg class="histogram" width={width} height={H + LABEL_H} role="img" aria-label="Latency histogram: share of spans per duration bucket">
        {all.map((v, i) => {
          const b = cur.get(v);
          const c = cmp.get(v);
          const share = (b?.count ?? 0) / totalCur;
          const h = (share / max) * (H - 14);
          const x = i * slot + 4;
          const upper = b?.upper_ns ?? c?.upper_ns ?? v * 2;
          const exemplar = b?.exemplar_trace_ids[0];
          const bar = (
            <>
              <title>
                {`${formatDuration(v)} – ${formatDuration(upper)}: ${formatNumber(b?.count ?? 0)} spans (${(share * 100).toFixed(1)} %)` +
                  (c ? `\ncompare: ${formatNumber(c.count)} spans (${((c.count / totalCmp) * 100).toFixed(1)} %)` : "") +
                  (exemplar ? `\nOpen the slowest trace in this bucket` : "")}
              </title>
              <rect class="bar" x={x} y={H - h} width={compare ? 18 : 36} height={Math.max(h, b ? 1 : 0)} />
              {compare && c && (
                <rect
                  class="bar-compare"
                  x={x + 18}
                  y={H - ((c.count / totalCmp) / max) * (H - 14)}
                  width={18}
                  height={Math.max(((c.count / totalCmp) / max) * (H - 14), 1)}
                />
              )}
              {b && b.count > 0 && (
                <text x={x + 18} y={H - h - 3} text-anchor="middle" class="count">
                  {formatNumber(b.count, 2)}
                </text>
              )}
            </>
          );
          return (
            <g data-lower-ns={v} data-count={b?.count ?? 0}>
              {exemplar ? (
                <a
                  href={`/trace/${exemplar}`}
                  class="bucket"
                  onClick={(e: MouseEvent) => {
                    if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
                    e.preventDefault();
                    navigate(`/trace/${exemplar}`);
                  }}
                >
                  {bar}
                </a>
              ) : (
                bar
              )}
              <text x={x + 18} y={H + 14} text-anchor="middle" class="axis">
                {formatDuration(v).replace(" ", "")}
              </text>
            </g>
          );
        })}
        <line x1="0" x2={width} y1={H} y2={H} class="baseline" />
      </svg>
    </div>
  );
}
