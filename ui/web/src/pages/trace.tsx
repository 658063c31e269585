// The trace view (/trace/<id>): header, search within the trace, minimap, a virtualised
// waterfall with a collapsible span tree, the critical path and a span detail panel.
// `?span=<span id>` opens that span's details, so a link can point at one span.
import { useEffect, useMemo, useRef, useState } from "preact/hooks";
import { ApiError, getWithHeaders } from "../api";
import { ErrorBox, Loading } from "../components/Status";
import { href, navigate } from "../router";
import { formatDuration, formatTime, serviceColor, useAsync } from "../util";
import { SpanDetail } from "./trace/Detail";
import { Minimap } from "./trace/Minimap";
import {
  buildModel,
  childCountOf,
  criticalPath,
  mainRoot,
  searchSpans,
  searchTexts,
  sectionsOf,
  visibleRows,
  type OtlpTrace,
  type TraceModel,
} from "./trace/model";
import "./trace.css";

const ROW_H = 24;
const OVERSCAN = 12;

interface Loaded {
  id: string;
  body: OtlpTrace;
  model: TraceModel;
  order: string | null;
}

export function TracePage({ id, params }: { id: string; params: URLSearchParams }) {
  const state = useAsync<Loaded>(
    async (signal) => {
      const { body, headers } = await getWithHeaders<OtlpTrace>(`/api/v1/traces/${encodeURIComponent(id)}`, signal);
      return { id, body, model: buildModel(body), order: headers.get("x-weft-span-order") };
    },
    [id],
  );
  if (state.error) {
    const status = state.error instanceof ApiError ? state.error.status : 0;
    return (
      <main class="trace-page-message">
        <h1>{status === 404 ? "Trace not found" : status === 400 ? "Not a valid trace ID" : "Could not load the trace"}</h1>
        <p>
          {status === 404 ? (
            <>
              No trace with ID <code>{id}</code> is stored. It may have expired, or not been received yet.
            </>
          ) : status === 400 ? (
            <>
              <code>{id}</code> is not a trace ID: expected 32 hexadecimal digits.
            </>
          ) : null}
        </p>
        <ErrorBox error={state.error} />
      </main>
    );
  }
  // The previous trace's data stays in `state` until the new request starts: never show it.
  if (!state.data || state.loading || state.data.id !== id) {
    return (
      <main>
        <h1 class="sr-only">Trace {id}</h1>
        <Loading>Loading trace {id}…</Loading>
      </main>
    );
  }
  return <TraceView key={id} id={id} loaded={state.data} initialSpan={params.get("span")} />;
}

function download(id: string, body: OtlpTrace) {
  const blob = new Blob([JSON.stringify(body)], { type: "application/json" });
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `trace-${id}.json`;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

const AXIS_H = 22;
/** Tick labels stay inside the axis: the first and last ones are not centred on their tick. */
const tickShift = (p: number) => (p < 4 ? "none" : p > 94 ? "translateX(-100%)" : "translateX(-50%)");

const plural = (n: number, word: string) => (n === 1 ? word : `${word}s`);

function niceTicks(from: number, to: number, count = 6): number[] {
  const span = to - from;
  if (!(span > 0)) return [from];
  const raw = span / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let t = Math.ceil(from / step) * step; t <= to + step * 1e-9; t += step) out.push(t);
  return out;
}

function TraceView({ id, loaded, initialSpan }: { id: string; loaded: Loaded; initialSpan: string | null }) {
  const { model, body } = loaded;
  const root = useMemo(() => mainRoot(model), [model]);
  const critical = useMemo(() => criticalPath(model, root), [model, root]);

  // Collapsed spans live in a typed array; `version` re-renders after a change.
  const collapsed = useRef(new Uint8Array(model.n)).current;
  const [version, setVersion] = useState(0);
  const { rows, rowOf } = useMemo(() => visibleRows(model, collapsed), [model, version]);

  const initial = initialSpan ? model.indexOfId.get(initialSpan) : undefined;
  const [selected, setSelected] = useState<number>(initial ?? root);
  const [opened, setOpened] = useState<number | null>(initial ?? null);
  const [view, setView] = useState<[number, number]>([0, model.duration || 1]);
  const [scrollTop, setScrollTop] = useState(0);
  const [viewport, setViewport] = useState(600);
  const [query, setQuery] = useState("");
  const [cur, setCur] = useState(0);
  const [reveal, setReveal] = useState<number | null>(initial ?? null);
  const scroller = useRef<HTMLDivElement>(null);
  const texts = useRef<string[] | null>(null);

  const matches = useMemo(() => {
    if (!query.trim()) return new Int32Array(0);
    texts.current ??= searchTexts(model);
    return searchSpans(model, texts.current, query);
  }, [model, query]);
  const isMatch = useMemo(() => {
    const m = new Uint8Array(model.n);
    for (const i of matches) m[i] = 1;
    return m;
  }, [model, matches]);

  useEffect(() => {
    performance.mark("weft:trace-drawn");
  }, []);

  useEffect(() => {
    const el = scroller.current!;
    const ro = new ResizeObserver(() => setViewport(el.clientHeight));
    ro.observe(el);
    setViewport(el.clientHeight);
    return () => ro.disconnect();
  }, []);

  /** Expands every collapsed ancestor of span i, then selects and scrolls to it. */
  const revealSpan = (i: number) => {
    let changed = false;
    for (let p = model.parent[i]; p >= 0; p = model.parent[p]) {
      if (collapsed[p]) {
        collapsed[p] = 0;
        changed = true;
      }
    }
    if (changed) setVersion((v) => v + 1);
    setSelected(i);
    setReveal(i);
  };

  const scrollToRow = (r: number) => {
    const el = scroller.current;
    if (!el || r < 0) return;
    const top = r * ROW_H;
    // The time axis is a sticky header inside the scroller: rows show below it.
    if (top < el.scrollTop) el.scrollTop = top;
    else if (top + ROW_H > el.scrollTop + el.clientHeight - AXIS_H) el.scrollTop = top + ROW_H - el.clientHeight + AXIS_H;
  };

  useEffect(() => {
    if (reveal === null) return;
    scrollToRow(rowOf[reveal]);
    setReveal(null);
  }, [reveal, rowOf]);

  // A new query jumps to its first match.
  useEffect(() => {
    setCur(0);
    if (matches.length) revealSpan(matches[0]);
  }, [matches]);

  const goMatch = (delta: number) => {
    if (!matches.length) return;
    const next = (cur + delta + matches.length) % matches.length;
    setCur(next);
    revealSpan(matches[next]);
  };

  const setSpanParam = (i: number | null) => {
    navigate(href(`/trace/${encodeURIComponent(id)}`, { span: i === null ? undefined : model.spans[i].spanId }), true);
  };
  const open = (i: number | null) => {
    setOpened(i);
    setSpanParam(i);
  };

  const toggle = (i: number, value?: boolean) => {
    if (childCountOf(model, i) === 0) return;
    const next = value ?? !collapsed[i];
    if (!!collapsed[i] === next) return;
    collapsed[i] = next ? 1 : 0;
    if (next) {
      // Keep the selection visible: a hidden selected span gives way to the collapsed one.
      const k = model.preIndex[selected];
      if (k > model.preIndex[i] && k < model.subtreeEnd[i]) setSelected(i);
    }
    setVersion((v) => v + 1);
  };
  const setAll = (value: boolean) => {
    collapsed.fill(0);
    if (value) for (let i = 0; i < model.n; i++) if (childCountOf(model, i) > 0 && model.parent[i] >= 0) collapsed[i] = 1;
    if (value) {
      let s = selected;
      while (model.parent[s] >= 0 && model.parent[model.parent[s]] >= 0) s = model.parent[s];
      setSelected(s);
    }
    setVersion((v) => v + 1);
  };

  const select = (i: number) => {
    setSelected(i);
    setReveal(i);
  };

  const onKeyDown = (e: KeyboardEvent) => {
    const r = rowOf[selected];
    const page = Math.max(1, Math.floor(viewport / ROW_H) - 1);
    const go = (row: number) => select(rows[Math.max(0, Math.min(rows.length - 1, row))]);
    switch (e.key) {
      case "ArrowDown":
        go(r + 1);
        break;
      case "ArrowUp":
        go(r - 1);
        break;
      case "PageDown":
        go(r + page);
        break;
      case "PageUp":
        go(r - page);
        break;
      case "Home":
        go(0);
        break;
      case "End":
        go(rows.length - 1);
        break;
      case "ArrowLeft":
        if (childCountOf(model, selected) > 0 && !collapsed[selected]) toggle(selected, true);
        else if (model.parent[selected] >= 0) select(model.parent[selected]);
        break;
      case "ArrowRight":
        if (childCountOf(model, selected) > 0) {
          if (collapsed[selected]) toggle(selected, false);
          else select(model.childList[model.childStart[selected]]);
        }
        break;
      case "Enter":
      case " ":
        open(selected);
        break;
      case "Escape":
        if (opened !== null) open(null);
        break;
      default:
        return;
    }
    e.preventDefault();
  };

  // Rows in view (plus a margin) are the only ones in the DOM.
  const first = Math.max(0, Math.floor(scrollTop / ROW_H) - OVERSCAN);
  const last = Math.min(rows.length, Math.ceil((scrollTop + viewport) / ROW_H) + OVERSCAN);
  const [v0, v1] = view;
  const vspan = v1 - v0 || 1;
  const pct = (t: number) => ((t - v0) / vspan) * 100;
  const ticks = useMemo(() => niceTicks(v0, v1), [v0, v1]);
  const zoomed = v0 > 0 || v1 < (model.duration || 1);

  const rootSpan = root >= 0 ? model.spans[root] : undefined;
  const rootService = root >= 0 ? model.services[model.service[root]] : "";
  const startNs = model.startSec * 1e9 + model.startNanos;
  const activeId = selected >= 0 && rowOf[selected] >= first && rowOf[selected] < last ? `span-row-${selected}` : undefined;

  const rendered = [];
  for (let r = first; r < last; r++) {
    const i = rows[r];
    const s = model.spans[i];
    const service = model.services[model.service[i]];
    const kids = childCountOf(model, i);
    const isCollapsed = kids > 0 && collapsed[i] === 1;
    const err = model.error[i] === 1;
    const crit = critical.onPath[i] === 1;
    const color = serviceColor(service);
    const left = pct(model.start[i]);
    const width = Math.max(((model.end[i] - model.start[i]) / vspan) * 100, 0.05);
    const depth = model.depth[i];
    const cls =
      "span-row" +
      (i === selected ? " selected" : "") +
      (isMatch[i] ? " match" : "") +
      (matches.length && matches[cur] === i ? " current-match" : "") +
      (err ? " has-error" : "") +
      (crit ? " critical" : "") +
      (opened === i ? " opened" : "");
    rendered.push(
      <div
        key={i}
        id={`span-row-${i}`}
        class={cls}
        role="treeitem"
        aria-level={depth + 1}
        aria-expanded={kids > 0 ? !isCollapsed : undefined}
        aria-selected={i === selected}
        aria-label={`${service} ${s.name ?? ""}, ${formatDuration(model.end[i] - model.start[i])}${err ? ", error" : ""}${crit ? ", on critical path" : ""}`}
        data-row={r}
        data-span-id={s.spanId}
        data-name={s.name}
        data-service={service}
        data-critical={crit ? "true" : "false"}
        data-error={err ? "true" : "false"}
        data-match={isMatch[i] ? "true" : undefined}
        style={{ transform: `translateY(${r * ROW_H}px)` }}
        onClick={() => {
          setSelected(i);
          open(i);
        }}
      >
        <div class="wf-name" style={{ paddingLeft: `${4 + Math.min(depth, 40) * 14}px` }}>
          {kids > 0 ? (
            <button
              type="button"
              class="wf-toggle"
              tabIndex={-1}
              aria-label={`${isCollapsed ? "Expand" : "Collapse"} ${s.name ?? "span"} (${kids} children)`}
              onClick={(e) => {
                e.stopPropagation();
                toggle(i);
              }}
            >
              {isCollapsed ? "▸" : "▾"}
            </button>
          ) : (
            <span class="wf-toggle-space" />
          )}
          <span class="wf-svc" style={{ borderColor: color }}>
            {service}
          </span>
          <span class="wf-op" title={s.name}>
            {s.name}
          </span>
          {isCollapsed ? <span class="wf-hidden-count muted">+{model.subtreeEnd[i] - model.preIndex[i] - 1}</span> : null}
          {err ? (
            <span class="wf-err" role="img" aria-label="error" title={s.status?.message || "Error"}>
              !
            </span>
          ) : null}
        </div>
        <div class="wf-lane">
          <div
            class="wf-bar"
            style={{ left: `${left}%`, width: `${width}%`, background: color }}
          />
          {crit
            ? sectionsOf(critical, i).map(([a, b]) => (
                <div
                  class="wf-crit"
                  style={{ left: `${pct(a)}%`, width: `${Math.max(((b - a) / vspan) * 100, 0.05)}%` }}
                />
              ))
            : null}
          <span
            class="wf-dur"
            style={left + width > 80 ? { right: `${Math.max(0, 100 - left) + 0.5}%` } : { left: `${left + width + 0.5}%` }}
          >
            {formatDuration(model.end[i] - model.start[i])}
          </span>
        </div>
      </div>,
    );
  }

  const shownServices = model.services.slice(0, 16);
  return (
    <main class="trace-page">
      <header class="trace-header">
        <h1>
          {rootSpan ? (
            <>
              <span class="trace-root-service">{rootService}</span>: {rootSpan.name}
            </>
          ) : (
            `Trace ${id}`
          )}
        </h1>
        <ul class="trace-facts" aria-label="Trace summary">
          <li data-testid="trace-span-count">
            <strong>{model.n.toLocaleString("en-US")}</strong> {plural(model.n, "span")}
          </li>
          <li>
            <strong>{model.services.length}</strong> {plural(model.services.length, "service")}
          </li>
          <li>
            duration <strong>{formatDuration(model.duration)}</strong>
          </li>
          <li class={model.errorCount ? "has-errors" : undefined}>
            <strong>{model.errorCount.toLocaleString("en-US")}</strong> {plural(model.errorCount, "error")}
          </li>
          <li>
            started <strong>{formatTime(startNs)}</strong>
          </li>
          <li class="mono muted">{id}</li>
        </ul>
        <ul class="trace-services" aria-label="Services">
          {shownServices.map((s) => (
            <li>
              <span class="swatch" style={{ background: serviceColor(s) }} aria-hidden="true" />
              {s}
            </li>
          ))}
          {model.services.length > shownServices.length ? <li>+{model.services.length - shownServices.length} more</li> : null}
        </ul>
      </header>

      <div class="trace-toolbar">
        <form
          class="trace-search"
          role="search"
          onSubmit={(e) => {
            e.preventDefault();
            goMatch(1);
          }}
        >
          <label for="trace-find" class="sr-only">
            Find in trace
          </label>
          <input
            id="trace-find"
            type="search"
            placeholder="Find in trace: name, service, attribute"
            value={query}
            onInput={(e) => setQuery((e.target as HTMLInputElement).value)}
            onKeyDown={(e) => {
              if (e.key === "Enter" && e.shiftKey) {
                e.preventDefault();
                goMatch(-1);
              }
            }}
            spellcheck={false}
            autocomplete="off"
          />
          <span class="trace-search-count" data-testid="search-count" aria-live="polite">
            {query.trim() ? `${matches.length ? cur + 1 : 0} of ${matches.length.toLocaleString("en-US")}` : ""}
          </span>
          <button type="button" onClick={() => goMatch(-1)} disabled={!matches.length} aria-label="Previous match">
            ↑
          </button>
          <button type="button" onClick={() => goMatch(1)} disabled={!matches.length} aria-label="Next match">
            ↓
          </button>
        </form>
        <button type="button" onClick={() => setAll(false)}>
          Expand all
        </button>
        <button type="button" onClick={() => setAll(true)}>
          Collapse all
        </button>
        <button type="button" onClick={() => setView([0, model.duration || 1])} disabled={!zoomed}>
          Reset zoom
        </button>
        <button type="button" onClick={() => download(id, body)}>
          Download JSON
        </button>
        <span class="trace-legend muted">
          <span class="legend-crit" aria-hidden="true" /> critical path
          <span class="wf-err" aria-hidden="true">
            !
          </span>{" "}
          error
        </span>
      </div>

      <Minimap
        model={model}
        rows={rows}
        firstRow={Math.floor(scrollTop / ROW_H)}
        rowsInView={Math.ceil(viewport / ROW_H)}
        view={view}
        onScrollTo={(f) => {
          const el = scroller.current;
          if (el) el.scrollTop = f * rows.length * ROW_H - el.clientHeight / 2;
        }}
        onZoom={(a, b) => setView([a, Math.max(b, a + 1)])}
      />

      <div class="trace-body">
        <div class="waterfall">
          <div
            class="wf-scroll"
            ref={scroller}
            tabIndex={0}
            role="tree"
            aria-label="Spans"
            aria-activedescendant={activeId}
            onScroll={(e) => setScrollTop((e.currentTarget as HTMLDivElement).scrollTop)}
            onKeyDown={onKeyDown}
          >
            <div class="wf-axis" aria-hidden="true">
              <div class="wf-name">Service and operation</div>
              <div class="wf-lane">
                {ticks.map((t) => (
                  <span class="wf-tick" style={{ left: `${pct(t)}%`, transform: tickShift(pct(t)) }}>
                    {formatDuration(t)}
                  </span>
                ))}
              </div>
            </div>
            <div class="wf-canvas" style={{ height: `${rows.length * ROW_H}px` }}>
              <div class="wf-grid" aria-hidden="true">
                {ticks.map((t) => (
                  <span style={{ left: `${pct(t)}%` }} />
                ))}
              </div>
              {rendered}
            </div>
          </div>
        </div>
        {opened !== null ? (
          <SpanDetail
            model={model}
            span={opened}
            critical={critical.onPath[opened] === 1}
            onClose={() => {
              open(null);
              scroller.current?.focus();
            }}
            onSelectSpan={(i) => {
              revealSpan(i);
              open(i);
            }}
          />
        ) : null}
      </div>
    </main>
  );
}
