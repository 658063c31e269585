// Metrics explorer: pick a metric, filter and group by attributes, choose an aggregation,
// and see it over time — lines from query_range, histograms as percentiles or a heatmap.
// Everything the page shows is derived from the URL.
import { useMemo, useState } from "preact/hooks";
import { getJSON } from "../api";
import type { MetricList, SeriesList } from "../api/generated";
import { ErrorBox, Loading } from "../components/Status";
import { TimeChart, type Series } from "../components/TimeChart";
import { TimeRangePicker } from "../components/TimeRangePicker";
import { Link, navigate } from "../router";
import { parseDuration, resolveRange, useAsync } from "../util";
import { Heatmap, loadHeatmap } from "./metrics/heatmap";
import {
  align,
  autoStep,
  effectiveView,
  HISTOGRAM_VIEWS,
  isHistogram,
  loadLines,
  parseTime,
  SERVICE_KEY,
  stateFrom,
  stateHref,
  STEPS,
  unitFormat,
  VALUE_AGGS,
  type ChartData,
  type MetricInfo,
  type MetricsState,
  type SeriesInfo,
  type View,
} from "./metrics/model";
import "./metrics.css";

const VIEW_LABEL: Record<View, string> = {
  sum: "Sum",
  avg: "Average",
  min: "Minimum",
  max: "Maximum",
  count: "Count (series)",
  rate: "Rate per second",
  percentiles: "Percentiles (p50, p90, p99)",
  heatmap: "Heatmap (buckets)",
};

function MetricList({ metrics, state }: { metrics: MetricInfo[]; state: MetricsState }) {
  const [filter, setFilter] = useState("");
  const shown = metrics.filter((m) => m.name.toLowerCase().includes(filter.trim().toLowerCase()));
  return (
    <nav class="metric-list" aria-label="Metrics">
      <label>
        <span class="sr-only">Filter metrics</span>
        <input
          type="search"
          placeholder="Filter metrics"
          aria-label="Filter metrics"
          value={filter}
          onInput={(e) => setFilter((e.target as HTMLInputElement).value)}
        />
      </label>
      <ul>
        {shown.map((m) => (
          <li key={m.name}>
            <Link
              href={stateHref({ ...state, metric: m.name, view: undefined, groupBy: [], matchers: [], step: undefined })}
              aria-current={m.name === state.metric ? "true" : undefined}
              data-metric={m.name}
            >
              <span class="metric-name">{m.name}</span>
              <span class="metric-meta">
                <span class="badge">{m.type}</span>
                {m.unit ? <span class="badge unit">{m.unit}</span> : null}
                <span class="muted">{m.series} series</span>
              </span>
              {m.description ? <span class="metric-desc">{m.description}</span> : null}
            </Link>
          </li>
        ))}
        {shown.length === 0 && <li class="muted">No metric matches.</li>}
      </ul>
    </nav>
  );
}

/** Attribute keys of the metric's series and the values each takes. */
function attributeValues(series: SeriesInfo[]): Map<string, string[]> {
  const out = new Map<string, Set<string>>();
  const add = (k: string, v: string | null) => {
    if (v === null) return;
    if (!out.has(k)) out.set(k, new Set());
    out.get(k)!.add(v);
  };
  for (const s of series) {
    add(SERVICE_KEY, s.service_name);
    for (const [k, v] of Object.entries(s.attributes)) add(k, v);
  }
  return new Map([...out.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([k, v]) => [k, [...v].sort()]));
}

function Controls({
  state,
  type,
  view,
  attrs,
  step,
}: {
  state: MetricsState;
  type: string;
  view: View;
  attrs: Map<string, string[]>;
  step: string;
}) {
  const go = (next: Partial<MetricsState>) => navigate(stateHref({ ...state, ...next }));
  const views: readonly View[] = isHistogram(type) ? HISTOGRAM_VIEWS : VALUE_AGGS;
  const matchOf = (k: string) => state.matchers.find(([key]) => key === k)?.[1] ?? "";
  const setMatch = (k: string, v: string) =>
    go({ matchers: [...state.matchers.filter(([key]) => key !== k), ...(v ? [[k, v] as [string, string]] : [])] });
  const toggleGroup = (k: string, on: boolean) =>
    go({ groupBy: on ? [...state.groupBy, k] : state.groupBy.filter((g) => g !== k) });
  return (
    <div class="metric-controls">
      <div class="form-row">
        <TimeRangePicker value={state.time} onChange={(time) => go({ time })} />
        <label>
          {isHistogram(type) ? "Show as" : "Aggregation"}
          <select value={view} onChange={(e) => go({ view: (e.target as HTMLSelectElement).value as View })}>
            {views.map((v) => (
              <option value={v}>{VIEW_LABEL[v]}</option>
            ))}
          </select>
        </label>
        <label>
          Step
          <select
            value={state.step ?? ""}
            onChange={(e) => go({ step: (e.target as HTMLSelectElement).value || undefined })}
          >
            <option value="">auto ({step})</option>
            {STEPS.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
      </div>
      {attrs.size > 0 && (
        <div class="form-row attr-row">
          <fieldset class="filters">
            <legend>Filter</legend>
            {[...attrs.entries()].map(([k, values]) => (
              <label>
                {k}
                <select aria-label={`${k} filter`} value={matchOf(k)} onChange={(e) => setMatch(k, (e.target as HTMLSelectElement).value)}>
                  <option value="">any</option>
                  {values.map((v) => (
                    <option value={v}>{v}</option>
                  ))}
                  {matchOf(k) && !values.includes(matchOf(k)) && <option value={matchOf(k)}>{matchOf(k)}</option>}
                </select>
              </label>
            ))}
          </fieldset>
          {view !== "heatmap" && (
            <fieldset class="group-by">
              <legend>Group by</legend>
              {[...attrs.keys()].map((k) => (
                <label class="check">
                  <input
                    type="checkbox"
                    checked={state.groupBy.includes(k)}
                    onChange={(e) => toggleGroup(k, (e.target as HTMLInputElement).checked)}
                  />
                  {k}
                </label>
              ))}
            </fieldset>
          )}
        </div>
      )}
    </div>
  );
}

function LineChart({ data, format }: { data: ChartData; format: (v: number) => string }) {
  const { x, series } = useMemo(() => {
    const { x, values } = align(data.series);
    const series: Series[] = data.series.map((s, i) => ({
      label: s.label,
      values: values[i],
      dash: s.q === 0.9 ? [6, 3] : s.q === 0.99 ? [2, 3] : undefined,
    }));
    return { x, series };
  }, [data]);
  if (data.series.length === 0) return <p class="muted">No data points in this range.</p>;
  const stats = data.series.map((s) => {
    const vs = s.points.map(([, v]) => v).filter((v): v is number => v !== null && Number.isFinite(v));
    return {
      label: s.label,
      n: vs.length,
      last: vs.length ? vs[vs.length - 1] : NaN,
      min: vs.length ? Math.min(...vs) : NaN,
      max: vs.length ? Math.max(...vs) : NaN,
      avg: vs.length ? vs.reduce((a, b) => a + b, 0) / vs.length : NaN,
    };
  });
  return (
    <div
      class="metric-chart"
      data-series={JSON.stringify(data.series)}
      data-queries={JSON.stringify(data.queries)}
      data-series-count={data.series.length}
    >
      <TimeChart x={x} series={series} format={format} height={320} />
      <table class="grid series-stats">
        <caption class="sr-only">Series summary</caption>
        <thead>
          <tr>
            <th scope="col">Series</th>
            <th scope="col" class="num">Points</th>
            <th scope="col" class="num">Last</th>
            <th scope="col" class="num">Min</th>
            <th scope="col" class="num">Avg</th>
            <th scope="col" class="num">Max</th>
          </tr>
        </thead>
        <tbody>
          {stats.map((s) => (
            <tr>
              <th scope="row">{s.label}</th>
              <td class="num">{s.n}</td>
              <td class="num">{format(s.last)}</td>
              <td class="num">{format(s.min)}</td>
              <td class="num">{format(s.avg)}</td>
              <td class="num">{format(s.max)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

function Explorer({ state, metric }: { state: MetricsState; metric: MetricInfo }) {
  const view = effectiveView(state.view, metric.type);
  const [refresh, setRefresh] = useState(0);
  const bounds = useMemo(
    () => resolveRange(state.time),
    // eslint-disable-next-line react-hooks/exhaustive-deps
    [state.time.range, state.time.start, state.time.end, refresh],
  );
  const series = useAsync(
    (signal) =>
      getJSON<SeriesList>(
        "/api/v1/metrics/series",
        { metric: metric.name, start: bounds.start, end: bounds.end },
        signal,
      ),
    [metric.name, bounds],
  );
  const attrs = useMemo(() => attributeValues(series.data?.series ?? []), [series.data]);
  const rangeSeconds = (parseTime(bounds.end) - parseTime(bounds.start)) / 1000;
  // Automatic steps wait for the series (their reporting interval sets the lower bound).
  const step = state.step ?? (series.loading && !series.data ? undefined : autoStep(rangeSeconds, series.data?.series));
  const key = JSON.stringify([state.metric, view, state.groupBy, state.matchers, step, bounds]);
  const lines = useAsync(
    (signal) =>
      step === undefined || view === "heatmap" ? Promise.resolve(undefined) : loadLines(state, view, bounds, step, signal),
    [key],
  );
  const heat = useAsync(
    (signal) =>
      step === undefined || view !== "heatmap"
        ? Promise.resolve(undefined)
        : loadHeatmap(state, bounds, step, signal),
    [key],
  );
  const format = useMemo(
    () => unitFormat(metric.unit, view === "rate"),
    [metric.unit, view],
  );
  const heatFormat = useMemo(() => unitFormat(metric.unit, false), [metric.unit]);
  const current = view === "heatmap" ? heat : lines;
  return (
    <section class="metric-explorer" aria-labelledby="metric-title">
      <header class="metric-head">
        <h2 id="metric-title">{metric.name}</h2>
        <span class="badge">{metric.type}</span>
        {metric.unit && <span class="badge unit">{metric.unit}</span>}
        {metric.description && <span class="muted">{metric.description}</span>}
        {state.time.range && (
          <button type="button" class="refresh" onClick={() => setRefresh((n) => n + 1)}>
            Refresh
          </button>
        )}
      </header>
      <Controls state={state} type={metric.type} view={view} attrs={attrs} step={step ?? "…"} />
      {series.error && <ErrorBox error={series.error} />}
      {series.data?.truncated && <p class="muted">Only the first {series.data.series.length} series are listed.</p>}
      {current.error && <ErrorBox error={current.error} />}
      {current.loading && <Loading>Querying…</Loading>}
      {view !== "heatmap" && lines.data && <LineChart data={lines.data} format={format} />}
      {view === "heatmap" && heat.data && (
        <>
          {heat.data.total === 0 ? (
            <p class="muted">No observations in this range.</p>
          ) : (
            <Heatmap data={heat.data} format={heatFormat} />
          )}
          {state.groupBy.length > 0 && <p class="muted">The heatmap merges all selected series; grouping is not applied.</p>}
        </>
      )}
      {view !== "heatmap" && (
        <p class="muted small">
          Step {step}: each point covers [t, t + step).{" "}
          {view === "rate" && "Rate: per-second increase within the step, summed over each group's series."}
          {view === "percentiles" && "Percentiles interpolate within the merged bucket counts, as Prometheus does."}
        </p>
      )}
    </section>
  );
}

export function MetricsPage({ params }: { params: URLSearchParams }) {
  const state = useMemo(() => stateFrom(params), [params]);
  const metrics = useAsync((signal) => getJSON<MetricList>("/api/v1/metrics", {}, signal), []);
  const list = metrics.data?.metrics ?? [];
  const selected = list.find((m) => m.name === state.metric);
  return (
    <main class="metrics-page">
      <h1>Metrics</h1>
      {metrics.error && <ErrorBox error={metrics.error} />}
      {metrics.loading && !metrics.data && <Loading />}
      {metrics.data && (
        <div class="metrics-layout">
          <MetricList metrics={list} state={state} />
          <div class="metrics-main">
            {list.length === 0 && <p class="muted">No metrics stored yet.</p>}
            {list.length > 0 && !state.metric && <p class="muted">Pick a metric on the left.</p>}
            {state.metric && !selected && <ErrorBox error={new Error(`No metric named ${state.metric}.`)} />}
            {selected && <Explorer key={selected.name} state={state} metric={selected} />}
          </div>
        </div>
      )}
    </main>
  );
}
