// The minimap: every shown row of the trace drawn on a canvas (time across, rows down),
// with the part in view marked. A click scrolls there; a sideways drag zooms the time axis
// to the dragged range; an up/down drag scrolls along.
import { useEffect, useRef, useState } from "preact/hooks";
import { serviceColor } from "../../util";
import type { TraceModel } from "./model";

export const MINIMAP_HEIGHT = 64;

export function Minimap({
  model,
  rows,
  firstRow,
  rowsInView,
  view,
  onScrollTo,
  onZoom,
}: {
  model: TraceModel;
  rows: Int32Array;
  firstRow: number;
  rowsInView: number;
  view: [number, number];
  /** Scrolls so the row at this fraction of the list is centred. */
  onScrollTo: (fraction: number) => void;
  /** Shows only [from, to] (nanoseconds since the trace start). */
  onZoom: (from: number, to: number) => void;
}) {
  const canvas = useRef<HTMLCanvasElement>(null);
  const [width, setWidth] = useState(0);
  const [drag, setDrag] = useState<{ x0: number; x1: number } | null>(null);
  const gesture = useRef<{ x0: number; y0: number; mode: "none" | "zoom" | "scroll"; id: number } | null>(null);

  useEffect(() => {
    const el = canvas.current!;
    const ro = new ResizeObserver(() => setWidth(el.clientWidth));
    ro.observe(el);
    setWidth(el.clientWidth);
    return () => ro.disconnect();
  }, []);

  useEffect(() => {
    const el = canvas.current;
    if (!el || !width) return;
    const dpr = window.devicePixelRatio || 1;
    const W = Math.round(width * dpr);
    const H = Math.round(MINIMAP_HEIGHT * dpr);
    el.width = W;
    el.height = H;
    const ctx = el.getContext("2d");
    if (!ctx) return;
    ctx.clearRect(0, 0, W, H);
    const dur = model.duration || 1;
    const count = rows.length || 1;
    const h = Math.max(1, H / count);
    // One fill colour at a time: bucket rows by service first.
    const byService: number[][] = model.services.map(() => []);
    const errors: number[] = [];
    for (let r = 0; r < rows.length; r++) {
      const i = rows[r];
      byService[model.service[i]].push(r);
      if (model.error[i]) errors.push(r);
    }
    const draw = (r: number) => {
      const i = rows[r];
      const x = (model.start[i] / dur) * W;
      const w = Math.max(1, ((model.end[i] - model.start[i]) / dur) * W);
      ctx.fillRect(x, (r / count) * H, w, h);
    };
    byService.forEach((list, s) => {
      ctx.fillStyle = serviceColor(model.services[s]);
      for (const r of list) draw(r);
    });
    ctx.fillStyle = "#b91c1c";
    for (const r of errors) draw(r);
  }, [model, rows, width]);

  const dur = model.duration || 1;
  const frac = (e: PointerEvent) => {
    const rect = (e.currentTarget as HTMLElement).getBoundingClientRect();
    return {
      x: Math.min(1, Math.max(0, (e.clientX - rect.left) / rect.width)),
      y: Math.min(1, Math.max(0, (e.clientY - rect.top) / rect.height)),
      px: e.clientX,
      py: e.clientY,
    };
  };
  const onDown = (e: PointerEvent) => {
    if (e.button !== 0) return;
    (e.currentTarget as HTMLElement).setPointerCapture(e.pointerId);
    gesture.current = { x0: e.clientX, y0: e.clientY, mode: "none", id: e.pointerId };
    e.preventDefault();
  };
  const onMove = (e: PointerEvent) => {
    const g = gesture.current;
    if (!g) return;
    const dx = e.clientX - g.x0;
    const dy = e.clientY - g.y0;
    if (g.mode === "none" && Math.max(Math.abs(dx), Math.abs(dy)) > 4) g.mode = Math.abs(dx) >= Math.abs(dy) ? "zoom" : "scroll";
    const rect = (e.currentTarget as HTMLElement).getBoundingClientRect();
    if (g.mode === "zoom") {
      setDrag({ x0: (g.x0 - rect.left) / rect.width, x1: frac(e).x });
    } else if (g.mode === "scroll") {
      onScrollTo(frac(e).y);
    }
  };
  const onUp = (e: PointerEvent) => {
    const g = gesture.current;
    gesture.current = null;
    setDrag(null);
    if (!g) return;
    const f = frac(e);
    const rect = (e.currentTarget as HTMLElement).getBoundingClientRect();
    if (g.mode === "zoom") {
      const a = Math.max(0, Math.min(1, (g.x0 - rect.left) / rect.width));
      const lo = Math.min(a, f.x);
      const hi = Math.max(a, f.x);
      if (hi > lo) onZoom(lo * dur, hi * dur);
    } else {
      onScrollTo(f.y);
    }
  };

  const count = rows.length || 1;
  const top = (firstRow / count) * 100;
  const height = Math.max((Math.min(rowsInView, count) / count) * 100, 2);
  const left = (view[0] / dur) * 100;
  const w = Math.max(((view[1] - view[0]) / dur) * 100, 0.5);
  return (
    <div
      class="minimap"
      style={{ height: `${MINIMAP_HEIGHT}px` }}
      onPointerDown={onDown}
      onPointerMove={onMove}
      onPointerUp={onUp}
      onPointerCancel={() => {
        gesture.current = null;
        setDrag(null);
      }}
      title="Trace overview: click to scroll there, drag sideways to zoom into a time range"
    >
      <canvas ref={canvas} role="img" aria-label={`Overview of ${rows.length} spans`} />
      <div
        class="minimap-window"
        data-testid="minimap-window"
        style={{ top: `${top}%`, height: `${height}%`, left: `${left}%`, width: `${w}%` }}
      />
      {drag ? (
        <div
          class="minimap-drag"
          style={{ left: `${Math.min(drag.x0, drag.x1) * 100}%`, width: `${Math.abs(drag.x1 - drag.x0) * 100}%` }}
        />
      ) : null}
    </div>
  );
}
