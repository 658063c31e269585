// The map itself: an SVG of the laid-out graph with pan (drag) and zoom (wheel, buttons).
// The layout is computed once per data set; panning and zooming only rewrite one transform
// attribute, outside Preact's render cycle.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { navigate } from "../../router";
import { formatDuration, formatNumber } from "../../util";
import { curvePath, layoutGraph, midpoint } from "./layout";
import { ERROR_CLASSES, errorClass, formatPercent, formatRate, type MapData, type MapEdge, type MapNode } from "./data";

const NODE_W = 170;
const NODE_H = 40;
/** Above this many edges, labels only show for the hovered node's edges. */
const LABEL_LIMIT = 120;

interface View {
  k: number;
  x: number;
  y: number;
}

export interface MapViewProps {
  data: MapData;
  nodeHref: (n: MapNode) => string | undefined;
  edgeHref: (e: MapEdge) => string;
}

function truncate(s: string, max: number): string {
  return s.length > max ? `${s.slice(0, max - 1)}…` : s;
}

export function edgeTitle(e: MapEdge): string {
  const lines = [
    `${e.client} → ${e.server}${e.linkOnly ? " (parent → child spans)" : ""}`,
    `${formatNumber(e.calls)} calls (${formatRate(e.rate)})`,
    `${formatNumber(e.errors)} errors (${formatPercent(e.errorRate)})`,
  ];
  if (e.latency)
    lines.push(
      `${e.latencySide} latency p50 ${formatDuration(e.latency.p50)} · p95 ${formatDuration(e.latency.p95)} · p99 ${formatDuration(e.latency.p99)}`,
    );
  return lines.join("\n");
}

export function MapView({ data, nodeHref, edgeHref }: MapViewProps) {
  const layout = useMemo(
    () =>
      layoutGraph(
        { nodes: data.nodes.map((n) => n.service), edges: data.edges.map((e) => ({ from: e.client, to: e.server })) },
        { nodeWidth: NODE_W, nodeHeight: NODE_H },
      ),
    [data],
  );
  const edgeByPair = useMemo(() => {
    const m = new Map<string, MapEdge>();
    for (const e of data.edges) m.set(`${e.client}\u0000${e.server}`, e);
    return m;
  }, [data]);
  const maxCalls = useMemo(() => Math.max(1, ...data.edges.map((e) => e.calls)), [data]);
  const [hover, setHover] = useState<string | null>(null);

  const svg = useRef<SVGSVGElement>(null);
  const group = useRef<SVGGElement>(null);
  const view = useRef<View>({ k: 1, x: 0, y: 0 });
  const apply = () => {
    const v = view.current;
    group.current?.setAttribute("transform", `translate(${v.x.toFixed(1)} ${v.y.toFixed(1)}) scale(${v.k.toFixed(4)})`);
  };
  const fit = () => {
    const el = svg.current;
    if (!el) return;
    const W = el.clientWidth || 800;
    const H = el.clientHeight || 600;
    const w = Math.max(layout.width, 1) + 40;
    const h = Math.max(layout.height, 1) + 40;
    const k = Math.min(W / w, H / h, 1.25);
    view.current = { k, x: (W - layout.width * k) / 2, y: (H - layout.height * k) / 2 };
    apply();
  };
  const zoomAt = (factor: number, cx: number, cy: number) => {
    const v = view.current;
    const k = Math.min(4, Math.max(0.02, v.k * factor));
    view.current = { k, x: cx - ((cx - v.x) * k) / v.k, y: cy - ((cy - v.y) * k) / v.k };
    apply();
  };
  useEffect(fit, [layout]);

  // Wheel zoom needs a non-passive listener to keep the page from scrolling.
  useEffect(() => {
    const el = svg.current;
    if (!el) return;
    const onWheel = (e: WheelEvent) => {
      e.preventDefault();
      const r = el.getBoundingClientRect();
      zoomAt(Math.exp(-e.deltaY * 0.0015), e.clientX - r.left, e.clientY - r.top);
    };
    el.addEventListener("wheel", onWheel, { passive: false });
    return () => el.removeEventListener("wheel", onWheel);
  }, []);

  // Drag to pan; a drag does not count as a click on what it started on.
  const drag = useRef<{ x: number; y: number; vx: number; vy: number; moved: boolean; id: number } | null>(null);
  const suppressClick = useRef(false);
  const onPointerDown = (e: PointerEvent) => {
    if (e.button !== 0) return;
    drag.current = { x: e.clientX, y: e.clientY, vx: view.current.x, vy: view.current.y, moved: false, id: e.pointerId };
  };
  const onPointerMove = (e: PointerEvent) => {
    const d = drag.current;
    if (!d || d.id !== e.pointerId) return;
    const dx = e.clientX - d.x;
    const dy = e.clientY - d.y;
    if (!d.moved && Math.hypot(dx, dy) < 4) return;
    if (!d.moved) {
      d.moved = true;
      svg.current?.setPointerCapture(e.pointerId);
      svg.current?.classList.add("dragging");
    }
    view.current = { ...view.current, x: d.vx + dx, y: d.vy + dy };
    apply();
  };
  const onPointerUp = (e: PointerEvent) => {
    const d = drag.current;
    if (!d || d.id !== e.pointerId) return;
    if (d.moved) {
      suppressClick.current = true;
      svg.current?.releasePointerCapture(e.pointerId);
      svg.current?.classList.remove("dragging");
    }
    drag.current = null;
  };
  const onClickCapture = (e: MouseEvent) => {
    if (suppressClick.current) {
      suppressClick.current = false;
      e.preventDefault();
      e.stopPropagation();
    }
  };
  const follow = (to: string | undefined) => (e: MouseEvent) => {
    if (!to || e.defaultPrevented || e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
    e.preventDefault();
    navigate(to);
  };

  const related = (e: MapEdge) => hover !== null && (e.client === hover || e.server === hover);
  const showLabels = data.edges.filter((e) => !e.linkOnly).length <= LABEL_LIMIT;
  const strokeWidth = (calls: number) => 1.25 + (5 * Math.log1p(calls)) / Math.log1p(maxCalls);
  const colorOf = (e: MapEdge) => (e.linkOnly ? "#a0aab8" : ERROR_CLASSES.find((c) => c.cls === errorClass(e.errorRate))!.color);

  const selfLoops = data.edges.filter((e) => e.client === e.server);

  return (
    <div class="map-view">
      <div class="map-toolbar" role="group" aria-label="Zoom">
        <button type="button" onClick={() => zoomAt(1.25, (svg.current?.clientWidth ?? 0) / 2, (svg.current?.clientHeight ?? 0) / 2)} aria-label="Zoom in">
          +
        </button>
        <button type="button" onClick={() => zoomAt(0.8, (svg.current?.clientWidth ?? 0) / 2, (svg.current?.clientHeight ?? 0) / 2)} aria-label="Zoom out">
          −
        </button>
        <button type="button" onClick={fit}>
          Fit
        </button>
        <span class="map-legend" aria-hidden="true">
          {ERROR_CLASSES.map((c) => (
            <span>
              <svg width="22" height="8">
                <line x1="0" y1="4" x2="22" y2="4" stroke={c.color} stroke-width="3" />
              </svg>
              {c.label}
            </span>
          ))}
          <span>
            <svg width="22" height="8">
              <line x1="0" y1="4" x2="22" y2="4" stroke="#a0aab8" stroke-width="2" stroke-dasharray="4 3" />
            </svg>
            parent → child only
          </span>
          <span>
            <svg width="22" height="12">
              <rect x="1" y="1" width="20" height="10" rx="3" class="legend-virtual" />
            </svg>
            uninstrumented
          </span>
        </span>
      </div>
      <svg
        ref={svg}
        class="map-svg"
        role="group"
        aria-label={`Service map: ${data.nodes.length} services, ${data.edges.length} edges; drag to pan, wheel to zoom`}
        data-layers={layout.layers}
        onPointerDown={onPointerDown}
        onPointerMove={onPointerMove}
        onPointerUp={onPointerUp}
        onPointerCancel={onPointerUp}
        onClickCapture={onClickCapture}
      >
        <defs>
          {ERROR_CLASSES.map((c) => (
            <marker id={`map-arrow-${c.cls}`} viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">
              <path d="M0,0 L10,5 L0,10 z" fill={c.color} />
            </marker>
          ))}
          <marker id="map-arrow-link" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" markerUnits="userSpaceOnUse" orient="auto">
            <path d="M0,0 L10,5 L0,10 z" fill="#a0aab8" />
          </marker>
        </defs>
        <g ref={group}>
          <g class="map-edges">
            {layout.edges.map((pe) => {
              const e = edgeByPair.get(`${pe.from}\u0000${pe.to}`);
              if (!e) return null;
              const d = curvePath(pe.points);
              const [mx, my] = midpoint(pe.points);
              const cls = e.linkOnly ? "link" : errorClass(e.errorRate);
              const dim = hover !== null && !related(e);
              const label = e.linkOnly ? formatNumber(e.calls) : `${formatRate(e.rate)}${e.errors > 0 ? ` · ${formatPercent(e.errorRate)}` : ""}`;
              const to = edgeHref(e);
              return (
                <a
                  href={to}
                  class={`map-edge err-${cls}${dim ? " dim" : ""}${e.linkOnly ? " link-only" : ""}`}
                  data-client={e.client}
                  data-server={e.server}
                  data-calls={e.calls}
                  data-errors={e.errors}
                  aria-label={`${e.client} to ${e.server}: ${formatNumber(e.calls)} calls, ${formatPercent(e.errorRate)} errors. Find traces`}
                  onClick={follow(to)}
                >
                  <title>{edgeTitle(e)}</title>
                  <path class="hit" d={d} />
                  <path
                    class="line"
                    d={d}
                    stroke={colorOf(e)}
                    stroke-width={e.linkOnly ? 1.5 : strokeWidth(e.calls)}
                    marker-end={`url(#map-arrow-${cls})`}
                  />
                  {((showLabels && !e.linkOnly) || related(e)) && (
                    <g class="edge-label" transform={`translate(${mx.toFixed(1)} ${my.toFixed(1)})`}>
                      <rect x={-label.length * 3.3 - 4} y="-8" width={label.length * 6.6 + 8} height="16" rx="3" />
                      <text text-anchor="middle" dy="4">
                        {label}
                      </text>
                    </g>
                  )}
                </a>
              );
            })}
            {selfLoops.map((e) => {
              const p = layout.nodes.get(e.client);
              if (!p) return null;
              const x0 = p.x + NODE_W / 2 - 34;
              const y0 = p.y - NODE_H / 2;
              const d = `M${x0},${y0} C${x0 - 6},${y0 - 30} ${x0 + 34},${y0 - 30} ${x0 + 24},${y0}`;
              const cls = errorClass(e.errorRate);
              const to = edgeHref(e);
              return (
                <a
                  href={to}
                  class={`map-edge self err-${cls}`}
                  data-client={e.client}
                  data-server={e.server}
                  data-calls={e.calls}
                  aria-label={`${e.client} calls itself: ${formatNumber(e.calls)} calls. Find traces`}
                  onClick={follow(to)}
                >
                  <title>{edgeTitle(e)}</title>
                  <path class="hit" d={d} />
                  <path class="line" d={d} stroke={colorOf(e)} stroke-width={strokeWidth(e.calls)} marker-end={`url(#map-arrow-${cls})`} />
                </a>
              );
            })}
          </g>
          <g class="map-nodes">
            {data.nodes.map((n) => {
              const p = layout.nodes.get(n.service);
              if (!p) return null;
              const to = nodeHref(n);
              const stats = n.virtual
                ? `${formatRate(n.rate)} in${n.errors_in > 0 ? ` · ${formatPercent(n.errorRate)} err` : ""}`
                : `${formatRate(n.rate)} · ${formatPercent(n.errorRate)} err`;
              const title = n.virtual
                ? `${n.service} (not instrumented)\n${formatNumber(n.calls_in)} calls in, ${formatNumber(n.calls_out)} calls out`
                : `${n.service}\n${formatNumber(n.spans)} spans · ${formatNumber(n.calls_in)} calls in (${formatNumber(n.errors_in)} errors) · ${formatNumber(n.calls_out)} calls out\nOpen latency report`;
              const body = (
                <>
                  <title>{title}</title>
                  <rect x={p.x - NODE_W / 2} y={p.y - NODE_H / 2} width={NODE_W} height={NODE_H} rx="6" />
                  <text x={p.x} y={p.y - 4} text-anchor="middle" class="name">
                    {truncate(n.service, 24)}
                  </text>
                  <text x={p.x} y={p.y + 12} text-anchor="middle" class="stats">
                    {stats}
                  </text>
                </>
              );
              const common = {
                class: `map-node${n.virtual ? " virtual" : ""}${n.errorRate >= 0.05 ? " erroring" : ""}${hover === n.service ? " hovered" : ""}`,
                "data-service": n.service,
                "data-virtual": n.virtual ? "true" : "false",
                "data-x": p.x.toFixed(1),
                "data-y": p.y.toFixed(1),
                "data-layer": p.layer,
                onMouseEnter: () => setHover(n.service),
                onMouseLeave: () => setHover((h) => (h === n.service ? null : h)),
              };
              return to ? (
                <a href={to} {...common} aria-label={`${n.service}: ${stats}. Open latency report`} onClick={follow(to)}>
                  {body}
                </a>
              ) : (
                <g {...common} role="img" aria-label={`${n.service} (not instrumented): ${stats}`}>
                  {body}
                </g>
              );
            })}
          </g>
        </g>
      </svg>
    </div>
  );
}
