// Service map: who calls whom in a time range, laid out in layers (map/layout.ts), drawn as
// SVG with pan and zoom, plus the same edges as a table. State in the URL:
//   range | start & end     the time range
//   links=off               hide parent → child pairs that are not client → server calls
//   view=table              show only the table
//   q                       filter for the table (service name substring)
import { useMemo, useState } from "preact/hooks";
import { ErrorBox, Loading } from "../components/Status";
import { TimeRangePicker } from "../components/TimeRangePicker";
import { href, Link, navigate } from "../router";
import { formatDuration, formatNumber, resolveRange, timeRangeFrom, timeRangeParams, useAsync, type TimeRange } from "../util";
import { errorClass, formatPercent, formatRate, loadMap, type MapData, type MapEdge, type MapNode } from "./map/data";
import { MapView } from "./map/MapView";
import "./map.css";

export function MapPage({ params }: { params: URLSearchParams }) {
  const range = timeRangeFrom(params);
  const withLinks = params.get("links") !== "off";
  const view = params.get("view") === "table" ? "table" : "map";
  const filter = params.get("q") ?? "";
  const rangeKey = JSON.stringify(range);
  const [reload, setReload] = useState(0);

  const state = useAsync((signal) => loadMap(resolveRange(range), withLinks, signal), [rangeKey, withLinks, reload]);

  const base = { ...timeRangeParams(range), links: withLinks ? undefined : "off", view: view === "table" ? "table" : undefined, q: filter || undefined };
  const go = (patch: Record<string, string | undefined>, replace = false) => navigate(href("/map", { ...base, ...patch }), replace);
  const onRange = (t: TimeRange) => navigate(href("/map", { ...base, range: undefined, start: undefined, end: undefined, ...timeRangeParams(t) }));

  const timeParams = timeRangeParams(range);
  const nodeHref = (n: MapNode) => (n.virtual ? undefined : href("/latency", { service: n.service, ...timeParams }));
  const edgeHref = (e: MapEdge) => {
    // Traces of a call are found by its instrumented end: the server, unless that is an
    // uninstrumented peer.
    const service = e.virtualNode === "server" ? e.client : e.server;
    return href("/search", { service, ...timeParams });
  };

  return (
    <main class="map-page">
      <h1>Service map</h1>
      <div class="form-row">
        <TimeRangePicker value={range} onChange={onRange} />
        <label class="inline">
          <input type="checkbox" checked={withLinks} onChange={(e) => go({ links: (e.target as HTMLInputElement).checked ? undefined : "off" })} />
          Include parent → child pairs without client/server spans
        </label>
        <fieldset>
          <legend>Show</legend>
          <label class="inline">
            <input type="radio" name="map-view" checked={view === "map"} onChange={() => go({ view: undefined })} />
            Map and table
          </label>
          <label class="inline">
            <input type="radio" name="map-view" checked={view === "table"} onChange={() => go({ view: "table" })} />
            Table only
          </label>
        </fieldset>
        <button type="button" onClick={() => setReload((r) => r + 1)}>
          Refresh
        </button>
      </div>
      {state.error && <ErrorBox error={state.error} />}
      {state.loading && <Loading>Computing the service graph…</Loading>}
      {state.data && (
        <MapContent
          data={state.data}
          view={view}
          filter={filter}
          onFilter={(q) => go({ q: q || undefined }, true)}
          nodeHref={nodeHref}
          edgeHref={edgeHref}
        />
      )}
    </main>
  );
}

function MapContent({
  data,
  view,
  filter,
  onFilter,
  nodeHref,
  edgeHref,
}: {
  data: MapData;
  view: "map" | "table";
  filter: string;
  onFilter: (q: string) => void;
  nodeHref: (n: MapNode) => string | undefined;
  edgeHref: (e: MapEdge) => string;
}) {
  if (data.nodes.length === 0) {
    return (
      <p class="empty" role="status">
        No services reported spans in this time range. Pick a longer range.
      </p>
    );
  }
  const virtual = data.nodes.filter((n) => n.virtual).length;
  return (
    <>
      <p class="muted summary">
        {data.nodes.length - virtual} services, {virtual} uninstrumented peers, {data.edges.length} edges. Edge width: calls; colour:
        error rate. Click a service for its latency report, an edge for its traces.
      </p>
      {data.linksError && (
        <p class="muted">Parent → child pairs are not shown: {data.linksError}</p>
      )}
      {view === "map" && <MapView data={data} nodeHref={nodeHref} edgeHref={edgeHref} />}
      <EdgeTable data={data} filter={filter} onFilter={onFilter} nodeHref={nodeHref} edgeHref={edgeHref} />
    </>
  );
}

type SortKey = "calls" | "errors" | "errorRate" | "p99" | "client" | "server";

function EdgeTable({
  data,
  filter,
  onFilter,
  nodeHref,
  edgeHref,
}: {
  data: MapData;
  filter: string;
  onFilter: (q: string) => void;
  nodeHref: (n: MapNode) => string | undefined;
  edgeHref: (e: MapEdge) => string;
}) {
  const [sort, setSort] = useState<{ key: SortKey; desc: boolean }>({ key: "calls", desc: true });
  const nodes = useMemo(() => new Map(data.nodes.map((n) => [n.service, n])), [data]);
  const rows = useMemo(() => {
    const q = filter.trim().toLowerCase();
    const list = q ? data.edges.filter((e) => e.client.toLowerCase().includes(q) || e.server.toLowerCase().includes(q)) : [...data.edges];
    const val = (e: MapEdge): number | string => {
      switch (sort.key) {
        case "p99":
          return e.latency?.p99 ?? -1;
        case "client":
          return e.client;
        case "server":
          return e.server;
        default:
          return e[sort.key];
      }
    };
    list.sort((a, b) => {
      const x = val(a);
      const y = val(b);
      const c = typeof x === "string" ? x.localeCompare(y as string) : x - (y as number);
      return sort.desc ? -c : c;
    });
    return list;
  }, [data, filter, sort]);
  const header = (key: SortKey, label: string, num = false) => (
    <th class={num ? "num" : undefined} aria-sort={sort.key === key ? (sort.desc ? "descending" : "ascending") : "none"}>
      <button type="button" class="sort" onClick={() => setSort((s) => ({ key, desc: s.key === key ? !s.desc : num }))}>
        {label}
        {sort.key === key ? (sort.desc ? " ▼" : " ▲") : ""}
      </button>
    </th>
  );
  const serviceCell = (name: string) => {
    const n = nodes.get(name);
    const to = n ? nodeHref(n) : undefined;
    return to ? <Link href={to}>{name}</Link> : <span class="virtual-name">{name}</span>;
  };
  return (
    <section class="edge-table" aria-labelledby="edge-table-h">
      <h2 id="edge-table-h">Edges</h2>
      <div class="form-row">
        <label>
          Filter by service
          <input type="search" value={filter} placeholder="service name" onInput={(e) => onFilter((e.target as HTMLInputElement).value)} />
        </label>
        <span class="muted">
          {rows.length} of {data.edges.length} edges
        </span>
      </div>
      <div class="table-scroll">
        <table class="grid">
          <caption class="sr-only">Calls between services, one row per client and server</caption>
          <thead>
            <tr>
              {header("client", "Client")}
              {header("server", "Server")}
              <th>Kind</th>
              {header("calls", "Calls", true)}
              <th class="num">Rate</th>
              {header("errors", "Errors", true)}
              {header("errorRate", "Error rate", true)}
              <th class="num">p50</th>
              <th class="num">p95</th>
              {header("p99", "p99", true)}
              <th>Traces</th>
            </tr>
          </thead>
          <tbody>
            {rows.map((e) => (
              <tr data-client={e.client} data-server={e.server} class={`err-${errorClass(e.errorRate)}`}>
                <td>{serviceCell(e.client)}</td>
                <td>{serviceCell(e.server)}</td>
                <td>
                  {e.kinds.join(", ")}
                  {e.virtualNode ? <span class="badge">{e.virtualNode === "client" ? "from outside" : "uninstrumented peer"}</span> : null}
                </td>
                <td class="num">{formatNumber(e.calls)}</td>
                <td class="num">{formatRate(e.rate)}</td>
                <td class="num">{formatNumber(e.errors)}</td>
                <td class="num">{e.linkOnly ? "–" : formatPercent(e.errorRate)}</td>
                <td class="num">{e.latency ? formatDuration(e.latency.p50) : "–"}</td>
                <td class="num">{e.latency ? formatDuration(e.latency.p95) : "–"}</td>
                <td class="num" title={e.latencySide ? `${e.latencySide} side` : undefined}>
                  {e.latency ? formatDuration(e.latency.p99) : "–"}
                </td>
                <td>
                  <Link href={edgeHref(e)}>search</Link>
                  {e.examples.slice(0, 2).map((id, i) => (
                    <>
                      {" "}
                      <Link href={`/trace/${id}`} title={`One of the slowest calls: trace ${id}`}>
                        slowest {i + 1}
                      </Link>
                    </>
                  ))}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
