// Latency report for a service (and optionally one operation) over a time range, with an
// optional second window overlaid. Everything lives in the URL:
//   service, operation          what to report on
//   range | start & end         the window
//   compare=previous|day|week|custom (+ compare_start & compare_end for custom)
//   step                        series step (30s, 5m, …); default: the window in 60 steps
import { useMemo, useState } from "preact/hooks";
import { ErrorBox, Loading } from "../components/Status";
import { TimeChart, type Series } from "../components/TimeChart";
import { TimeRangePicker } from "../components/TimeRangePicker";
import { href, Link, navigate } from "../router";
import {
  formatDuration,
  formatNumber,
  formatTime,
  resolveRange,
  timeRangeFrom,
  timeRangeParams,
  useAsync,
  type TimeRange,
} from "../util";
import {
  COMPARE_LABELS,
  compareWindow,
  delta,
  formatDelta,
  formatPercent,
  loadOperations,
  loadReport,
  loadSlowest,
  type CompareMode,
  type LatencyReport,
  type OperationStats,
  type ServiceLatency,
  type Window,
} from "./latency/data";
import { Histogram } from "./latency/Histogram";
import "./latency.css";

const MODES: CompareMode[] = ["none", "previous", "day", "week", "custom"];
const STEPS = ["10s", "30s", "1m", "5m", "15m", "1h", "6h", "1d"];

const fmtNs = (v: number) => formatDuration(v);
const fmtRate = (v: number) => `${(v * 100).toFixed(v < 0.1 ? 1 : 0)} %`;

function toLocalInput(iso?: string): string {
  if (!iso) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 19);
}

export function LatencyPage({ params }: { params: URLSearchParams }) {
  const service = params.get("service") ?? "";
  const operation = params.get("operation") ?? "";
  const range = timeRangeFrom(params);
  const mode = (MODES as string[]).includes(params.get("compare") ?? "") ? (params.get("compare") as CompareMode) : "none";
  const customStart = params.get("compare_start") ?? undefined;
  const customEnd = params.get("compare_end") ?? undefined;
  const step = params.get("step") ?? "";
  const rangeKey = JSON.stringify(range);

  const state = {
    service: service || undefined,
    operation: operation || undefined,
    ...timeRangeParams(range),
    compare: mode === "none" ? undefined : mode,
    compare_start: mode === "custom" ? customStart : undefined,
    compare_end: mode === "custom" ? customEnd : undefined,
    step: step || undefined,
  };
  const go = (patch: Record<string, string | undefined>) => navigate(href("/latency", { ...state, ...patch }));

  // Relative ranges are resolved once per URL, so every request of a load uses one window.
  const window = useMemo(() => resolveRange(range), [rangeKey]);
  const cmp = compareWindow(mode, window, { start: customStart, end: customEnd });

  const ops = useAsync((signal) => loadOperations(window, signal), [window]);
  const report = useAsync(
    (signal) => (service ? loadReport(service, operation || undefined, window, cmp, step || undefined, signal) : Promise.resolve(undefined)),
    [service, operation, window, cmp?.start, cmp?.end, step],
  );

  const services = useMemo(() => {
    const m = new Map<string, { count: number; errors: number; worst: OperationStats | null }>();
    for (const o of ops.data?.current.operations ?? []) {
      const s = m.get(o.service) ?? { count: 0, errors: 0, worst: null };
      s.count += o.count;
      s.errors += o.errors;
      if (!s.worst || (o.p99_ns ?? 0) > (s.worst.p99_ns ?? 0)) s.worst = o;
      m.set(o.service, s);
    }
    return m;
  }, [ops.data]);
  const operations = (ops.data?.current.operations ?? []).filter((o) => o.service === service).map((o) => o.operation);
  const serviceNames = [...services.keys()].sort();
  if (service && !services.has(service)) serviceNames.unshift(service);
  if (operation && !operations.includes(operation)) operations.unshift(operation);

  return (
    <main class="latency-page">
      <h1>
        Latency{service ? <>: {service}</> : null}
        {operation ? <span class="muted"> / {operation}</span> : null}
      </h1>
      <form class="form-row" onSubmit={(e) => e.preventDefault()} aria-label="Report">
        <label>
          Service
          <select aria-label="Service" value={service} onChange={(e) => go({ service: (e.target as HTMLSelectElement).value || undefined, operation: undefined })}>
            <option value="">Choose a service…</option>
            {serviceNames.map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
        <label>
          Operation
          <select
            aria-label="Operation"
            value={operation}
            disabled={!service}
            onChange={(e) => go({ operation: (e.target as HTMLSelectElement).value || undefined })}
          >
            <option value="">All operations</option>
            {operations.map((o) => (
              <option value={o}>{o}</option>
            ))}
          </select>
        </label>
        <TimeRangePicker
          value={range}
          onChange={(t: TimeRange) => go({ range: undefined, start: undefined, end: undefined, ...timeRangeParams(t) })}
        />
        <label>
          Step
          <select aria-label="Step" value={step} onChange={(e) => go({ step: (e.target as HTMLSelectElement).value || undefined })}>
            <option value="">Auto</option>
            {(STEPS.includes(step) || !step ? STEPS : [step, ...STEPS]).map((s) => (
              <option value={s}>{s}</option>
            ))}
          </select>
        </label>
        <CompareControl mode={mode} start={customStart} end={customEnd} window={cmp} onChange={go} />
      </form>
      {ops.error && !service && <ErrorBox error={ops.error} />}
      {!service && (ops.loading ? <Loading /> : <ServiceList services={services} timeParams={timeRangeParams(range)} />)}
      {service && report.error && <ErrorBox error={report.error} />}
      {service && report.loading && <Loading>Computing the latency report…</Loading>}
      {service && report.data && (
        <Report
          data={report.data}
          window={window}
          timeParams={timeRangeParams(range)}
          state={state}
        />
      )}
    </main>
  );
}

function CompareControl({
  mode,
  start,
  end,
  window,
  onChange,
}: {
  mode: CompareMode;
  start?: string;
  end?: string;
  window?: Window;
  onChange: (patch: Record<string, string | undefined>) => void;
}) {
  const [from, setFrom] = useState(toLocalInput(start));
  const [to, setTo] = useState(toLocalInput(end));
  return (
    <fieldset class="compare">
      <legend>Compare with</legend>
      <select
        aria-label="Compare with"
        value={mode}
        onChange={(e) => {
          const m = (e.target as HTMLSelectElement).value as CompareMode;
          onChange({ compare: m === "none" ? undefined : m, compare_start: undefined, compare_end: undefined });
        }}
      >
        {MODES.map((m) => (
          <option value={m}>{COMPARE_LABELS[m]}</option>
        ))}
      </select>
      {mode === "custom" && (
        <>
          <input type="datetime-local" step="1" aria-label="Compare from" value={from} onChange={(e) => setFrom((e.target as HTMLInputElement).value)} />
          <input type="datetime-local" step="1" aria-label="Compare to" value={to} onChange={(e) => setTo((e.target as HTMLInputElement).value)} />
          <button
            type="button"
            onClick={() =>
              onChange({
                compare: "custom",
                compare_start: from ? new Date(from).toISOString() : undefined,
                compare_end: to ? new Date(to).toISOString() : undefined,
              })
            }
          >
            Apply
          </button>
        </>
      )}
      {window && mode !== "custom" && (
        <span class="muted window" title={`${window.start} – ${window.end}`}>
          {formatTime(Date.parse(window.start) * 1e6).slice(5, 16)} – {formatTime(Date.parse(window.end) * 1e6).slice(5, 16)}
        </span>
      )}
    </fieldset>
  );
}

function ServiceList({
  services,
  timeParams,
}: {
  services: Map<string, { count: number; errors: number; worst: OperationStats | null }>;
  timeParams: Record<string, string | undefined>;
}) {
  if (services.size === 0)
    return (
      <p class="empty" role="status">
        No spans in this time range. Pick a longer range.
      </p>
    );
  const rows = [...services.entries()].sort((a, b) => (b[1].worst?.p99_ns ?? 0) - (a[1].worst?.p99_ns ?? 0));
  return (
    <section aria-labelledby="svc-h">
      <h2 id="svc-h">Services</h2>
      <p class="muted">Choose a service for its report.</p>
      <table class="grid">
        <thead>
          <tr>
            <th>Service</th>
            <th class="num">Spans</th>
            <th class="num">Error rate</th>
            <th>Slowest operation</th>
            <th class="num">its p99</th>
          </tr>
        </thead>
        <tbody>
          {rows.map(([name, s]) => (
            <tr data-service={name}>
              <td>
                <Link href={href("/latency", { service: name, ...timeParams })}>{name}</Link>
              </td>
              <td class="num">{formatNumber(s.count)}</td>
              <td class="num">{formatPercent(s.count > 0 ? s.errors / s.count : 0)}</td>
              <td>{s.worst?.operation}</td>
              <td class="num">{s.worst?.p99_ns != null ? formatDuration(s.worst.p99_ns) : "–"}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}

function Report({
  data,
  window,
  timeParams,
  state,
}: {
  data: ServiceLatency;
  window: Window;
  timeParams: Record<string, string | undefined>;
  state: Record<string, string | undefined>;
}) {
  const cur = data.current;
  const cmp = data.compare ?? undefined;
  const charts = useMemo(() => chartData(cur, cmp), [data]);
  if (cur.count === 0) {
    return (
      <div class="empty" role="status">
        <p>
          No spans from <strong>{data.service}</strong>
          {data.operation ? <> for operation <strong>{data.operation}</strong></> : null} in this time range.
        </p>
        <p class="muted">Check the service name, or pick a longer range.</p>
      </div>
    );
  }
  return (
    <>
      <Summary cur={cur} cmp={cmp} />
      <section aria-labelledby="pct-h">
        <h2 id="pct-h">Percentiles over time</h2>
        <p class="muted">
          Step {formatDuration(data.step_ns)}.{cmp ? " Dashed: the comparison window, aligned to the start of this one." : ""}
        </p>
        <TimeChart x={charts.x} series={charts.latency} format={fmtNs} height={260} title="Latency percentiles" />
      </section>
      <div class="two-col">
        <section aria-labelledby="err-h">
          <h2 id="err-h">Error rate over time</h2>
          <TimeChart x={charts.x} series={charts.errors} format={fmtRate} height={200} title="Error rate" />
        </section>
        <section aria-labelledby="hist-h">
          <h2 id="hist-h">Histogram</h2>
          <p class="muted">
            Share of spans per duration (powers of two){cmp ? "; outlined: comparison window" : ""}. Click a bar for its slowest trace.
          </p>
          <Histogram current={cur.histogram} compare={cmp?.histogram} />
        </section>
      </div>
      <SlowestOperations data={data} timeParams={timeParams} state={state} />
      <Exemplars service={data.service} operation={data.operation ?? undefined} window={window} report={cur} />
    </>
  );
}

function chartData(cur: LatencyReport, cmp?: LatencyReport) {
  const x = cur.series.map((p) => p.start_ns / 1e9);
  const at = <T,>(list: T[] | undefined, i: number) => (list && i < list.length ? list[i] : undefined);
  const latency: Series[] = [
    { label: "p50", values: cur.series.map((p) => p.p50_ns), color: "#16a34a" },
    { label: "p95", values: cur.series.map((p) => p.p95_ns), color: "#2563eb" },
    { label: "p99", values: cur.series.map((p) => p.p99_ns), color: "#dc2626" },
  ];
  const rate = (p?: { count: number; errors: number }) => (p && p.count > 0 ? p.errors / p.count : null);
  const errors: Series[] = [{ label: "error rate", values: cur.series.map((p) => rate(p)), color: "#b91c1c" }];
  if (cmp) {
    latency.push(
      { label: "p50 (compare)", values: x.map((_, i) => at(cmp.series, i)?.p50_ns ?? null), color: "#16a34a", dash: [6, 4] },
      { label: "p95 (compare)", values: x.map((_, i) => at(cmp.series, i)?.p95_ns ?? null), color: "#2563eb", dash: [6, 4] },
      { label: "p99 (compare)", values: x.map((_, i) => at(cmp.series, i)?.p99_ns ?? null), color: "#dc2626", dash: [6, 4] },
    );
    errors.push({ label: "error rate (compare)", values: x.map((_, i) => rate(at(cmp.series, i))), color: "#b91c1c", dash: [6, 4] });
  }
  return { x, latency, errors };
}

function Summary({ cur, cmp }: { cur: LatencyReport; cmp?: LatencyReport }) {
  const q = cur.latency_ns;
  const c = cmp?.latency_ns;
  const items: { key: string; label: string; value: number | null | undefined; before?: number | null; text: (v: number) => string; worseUp: boolean }[] = [
    { key: "count", label: "Spans", value: cur.count, before: cmp?.count, text: (v) => formatNumber(v), worseUp: false },
    { key: "rate", label: "Rate", value: cur.rate_per_sec, before: cmp?.rate_per_sec, text: (v) => `${formatNumber(v)}/s`, worseUp: false },
    { key: "errors", label: "Errors", value: cur.errors, before: cmp?.errors, text: (v) => formatNumber(v), worseUp: true },
    { key: "error_rate", label: "Error rate", value: cur.error_rate, before: cmp?.error_rate, text: formatPercent, worseUp: true },
    { key: "p50", label: "p50", value: q?.p50, before: c?.p50, text: formatDuration, worseUp: true },
    { key: "p90", label: "p90", value: q?.p90, before: c?.p90, text: formatDuration, worseUp: true },
    { key: "p95", label: "p95", value: q?.p95, before: c?.p95, text: formatDuration, worseUp: true },
    { key: "p99", label: "p99", value: q?.p99, before: c?.p99, text: formatDuration, worseUp: true },
    { key: "max", label: "Max", value: q?.max, before: c?.max, text: formatDuration, worseUp: true },
  ];
  return (
    <dl class="summary">
      {items.map((it) => {
        const d = cmp ? delta(it.value, it.before) : undefined;
        const cls = d === undefined || Math.abs(d) < 0.05 ? "" : d > 0 === it.worseUp ? "worse" : "better";
        return (
          <div class="stat" data-stat={it.key} data-value={it.value ?? ""}>
            <dt>{it.label}</dt>
            <dd class="value">{it.value == null ? "–" : it.text(it.value)}</dd>
            {cmp && (
              <dd class="compare" data-compare-value={it.before ?? ""}>
                was {it.before == null ? "–" : it.text(it.before)} <span class={`delta ${cls}`}>{formatDelta(d)}</span>
              </dd>
            )}
          </div>
        );
      })}
    </dl>
  );
}

function SlowestOperations({
  data,
  timeParams,
  state,
}: {
  data: ServiceLatency;
  timeParams: Record<string, string | undefined>;
  state: Record<string, string | undefined>;
}) {
  const cmp = data.compare;
  const before = new Map((cmp?.slowest_operations ?? []).map((o) => [o.operation, o]));
  const rows = [...data.current.slowest_operations].sort((a, b) => (b.p99_ns ?? -1) - (a.p99_ns ?? -1));
  if (rows.length === 0) return null;
  return (
    <section aria-labelledby="ops-h">
      <h2 id="ops-h">Slowest operations of {data.service}</h2>
      <table class="grid slowest-ops">
        <caption class="sr-only">Operations sorted by p99 latency, slowest first</caption>
        <thead>
          <tr>
            <th>Operation</th>
            <th class="num">Spans</th>
            <th class="num">Rate</th>
            <th class="num">Error rate</th>
            <th class="num">p50</th>
            <th class="num">p95</th>
            <th class="num" aria-sort="descending">
              p99 ▼
            </th>
            <th class="num">Max</th>
            {cmp && <th class="num">p99 before</th>}
            {cmp && <th class="num">Δ p99</th>}
            <th>Traces</th>
          </tr>
        </thead>
        <tbody>
          {rows.map((o) => {
            const b = before.get(o.operation);
            const d = delta(o.p99_ns, b?.p99_ns);
            return (
              <tr
                data-operation={o.operation}
                data-p99-ns={o.p99_ns ?? ""}
                data-count={o.count}
                aria-current={o.operation === data.operation ? "true" : undefined}
              >
                <td>
                  <Link href={href("/latency", { ...state, operation: o.operation })}>{o.operation}</Link>
                </td>
                <td class="num">{formatNumber(o.count)}</td>
                <td class="num">{formatNumber(o.rate_per_sec)}/s</td>
                <td class="num">{formatPercent(o.error_rate)}</td>
                <td class="num">{o.p50_ns != null ? formatDuration(o.p50_ns) : "–"}</td>
                <td class="num">{o.p95_ns != null ? formatDuration(o.p95_ns) : "–"}</td>
                <td class="num p99">{o.p99_ns != null ? formatDuration(o.p99_ns) : "–"}</td>
                <td class="num">{o.max_ns != null ? formatDuration(o.max_ns) : "–"}</td>
                {cmp && <td class="num p99-before">{b?.p99_ns != null ? formatDuration(b.p99_ns) : "–"}</td>}
                {cmp && (
                  <td class={`num delta ${d === undefined || Math.abs(d) < 0.05 ? "" : d > 0 ? "worse" : "better"}`}>{formatDelta(d)}</td>
                )}
                <td>
                  <Link href={href("/search", { service: data.service, operation: o.operation, ...timeParams })}>search</Link>
                </td>
              </tr>
            );
          })}
        </tbody>
      </table>
    </section>
  );
}

function Exemplars({
  service,
  operation,
  window,
  report,
}: {
  service: string;
  operation?: string;
  window: Window;
  report: LatencyReport;
}) {
  const slow = useAsync((signal) => loadSlowest(service, operation, window, 10, signal), [service, operation, window]);
  // Without SQL, the histogram's exemplars (slowest buckets first) still lead to traces.
  const fallback = useMemo(() => {
    const ids: string[] = [];
    for (const b of [...report.histogram].reverse()) for (const id of b.exemplar_trace_ids) if (!ids.includes(id)) ids.push(id);
    return ids.slice(0, 10);
  }, [report]);
  return (
    <section aria-labelledby="ex-h" class="exemplars">
      <h2 id="ex-h">Slowest traces</h2>
      {slow.loading && <Loading />}
      {slow.data && slow.data.length > 0 && (
        <table class="grid">
          <thead>
            <tr>
              <th>Trace</th>
              <th>Operation</th>
              <th class="num">Duration</th>
              <th>Status</th>
              <th>Started</th>
            </tr>
          </thead>
          <tbody>
            {slow.data.map((s) => (
              <tr data-trace-id={s.trace_id}>
                <td>
                  <Link href={`/trace/${s.trace_id}`} class="mono exemplar">
                    {s.trace_id}
                  </Link>
                </td>
                <td>{s.span_name}</td>
                <td class="num">{formatDuration(s.duration_ns)}</td>
                <td>{s.status_code === 2 ? <span class="badge error">error</span> : s.status_code === 1 ? "ok" : "unset"}</td>
                <td>{formatTime(Date.parse(s.start_time) * 1e6)}</td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {(slow.error || (slow.data && slow.data.length === 0)) && (
        <ul class="exemplar-list">
          {fallback.map((id) => (
            <li data-trace-id={id}>
              <Link href={`/trace/${id}`} class="mono exemplar">
                {id}
              </Link>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
