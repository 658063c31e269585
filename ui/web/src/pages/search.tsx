// Trace search (/search). The form is written to the URL on submit, and the URL drives the
// search, so a link reproduces the results; "Load more" follows the API's next_cursor.
import { useEffect, useRef, useState } from "preact/hooks";
import { getJSON, type Params } from "../api";
import type { Envelope } from "../api/generated";
import { ErrorBox, Loading } from "../components/Status";
import { href, navigate } from "../router";
import { useAsync } from "../util";
import { SearchFormView } from "./search/Form";
import {
  SORTS,
  apiParams,
  formFromParams,
  paramsFromForm,
  searchKey,
  sortTraces,
  type SearchForm,
  type SearchResponse,
  type TraceSummary,
} from "./search/query";
import { Results } from "./search/Results";
import { Scatter } from "./search/Scatter";
import "./search.css";

interface RunState {
  loading: boolean;
  error?: Error;
  traces: TraceSummary[];
  /** The first page's request (relative ranges resolved), reused for the next pages. */
  request?: Params;
  cursor: string | null;
  more: boolean;
  moreError?: Error;
}

const EMPTY: RunState = { loading: true, traces: [], cursor: null, more: false };

function paramsOf(to: string): URLSearchParams {
  const q = to.indexOf("?");
  return new URLSearchParams(q < 0 ? "" : to.slice(q + 1));
}

export function SearchPage({ params }: { params: URLSearchParams }) {
  const key = searchKey(params);
  const sort = params.get("sort") ?? "recent";

  // The form follows the URL when it changes from outside (back/forward, a link), and is
  // left alone (focus and all) when the change is its own submission.
  const [formKey, setFormKey] = useState(0);
  const submitted = useRef(key);
  useEffect(() => {
    if (submitted.current !== key) {
      submitted.current = key;
      setFormKey((k) => k + 1);
    }
  }, [key]);

  const services = useAsync(
    async (signal) => ((await getJSON<Envelope<Array<string>>>("/api/services", {}, signal)).data ?? []).slice().sort(),
    [],
  );

  // Searching again with an unchanged URL still runs the query (a relative range has moved on).
  const [rerun, setRerun] = useState(0);
  const [state, setState] = useState<RunState>(EMPTY);
  const moreCtl = useRef<AbortController | null>(null);
  useEffect(() => {
    const ctl = new AbortController();
    moreCtl.current?.abort();
    const request = apiParams(new URLSearchParams(key));
    setState({ ...EMPTY, request });
    getJSON<SearchResponse>("/api/v1/search", request, ctl.signal).then(
      (page) => {
        if (!ctl.signal.aborted) setState({ loading: false, traces: page.traces, cursor: page.next_cursor, request, more: false });
      },
      (error: Error) => {
        if (!ctl.signal.aborted) setState({ loading: false, error, traces: [], cursor: null, request, more: false });
      },
    );
    return () => ctl.abort();
  }, [key, rerun]);

  const loadMore = () => {
    const { request, cursor } = state;
    if (!request || !cursor || state.more) return;
    const ctl = new AbortController();
    moreCtl.current = ctl;
    setState((s) => ({ ...s, more: true, moreError: undefined }));
    getJSON<SearchResponse>("/api/v1/search", { ...request, cursor }, ctl.signal).then(
      (page) => {
        if (ctl.signal.aborted) return;
        setState((s) => {
          const seen = new Set(s.traces.map((t) => t.trace_id));
          const fresh = page.traces.filter((t) => !seen.has(t.trace_id));
          return { ...s, traces: [...s.traces, ...fresh], cursor: page.next_cursor, more: false };
        });
      },
      (moreError: Error) => {
        if (!ctl.signal.aborted) setState((s) => ({ ...s, more: false, moreError }));
      },
    );
  };

  const onSearch = (form: SearchForm) => {
    const to = href("/search", paramsFromForm(form, sort));
    submitted.current = searchKey(paramsOf(to));
    if (to === window.location.pathname + window.location.search) setRerun((n) => n + 1);
    else navigate(to);
  };

  const setSort = (value: string) => {
    const p = new URLSearchParams(params);
    if (value === "recent") p.delete("sort");
    else p.set("sort", value);
    const s = p.toString();
    navigate(s ? `/search?${s}` : "/search", true);
  };

  const [hovered, setHovered] = useState<string | undefined>();
  const traces = sortTraces(state.traces, sort);
  const n = state.traces.length;

  return (
    <main class="search-page">
      <h1>Search traces</h1>
      <SearchFormView
        key={formKey}
        initial={formFromParams(params)}
        services={services}
        busy={state.loading}
        onSearch={onSearch}
      />
      <section class="search-output" aria-labelledby="search-results-heading">
        <div class="results-bar">
          <h2 id="search-results-heading">Results</h2>
          <p id="search-summary" class="muted" role="status" aria-live="polite">
            {state.loading
              ? ""
              : state.error
                ? "The search failed."
                : n === 0
                  ? "No traces match."
                  : `${n} ${n === 1 ? "trace" : "traces"}${state.cursor ? ", more available" : ""}.`}
          </p>
          {n > 1 && (
            <div class="field sort">
              <label for="search-sort">Sort</label>
              <select id="search-sort" value={sort} onChange={(e) => setSort((e.target as HTMLSelectElement).value)}>
                {SORTS.map(([v, l]) => (
                  <option value={v}>{l}</option>
                ))}
              </select>
            </div>
          )}
        </div>
        {state.loading && <Loading>Searching…</Loading>}
        {state.error && <ErrorBox error={state.error} />}
        {n > 0 && (
          <>
            <Scatter traces={state.traces} hovered={hovered} onHover={setHovered} />
            <Results traces={traces} hovered={hovered} onHover={setHovered} />
            <div class="more">
              {state.moreError && <ErrorBox error={state.moreError} />}
              {state.cursor && (
                <button type="button" onClick={loadMore} disabled={state.more} aria-busy={state.more ? "true" : undefined}>
                  {state.more ? "Loading more…" : "Load more"}
                </button>
              )}
            </div>
          </>
        )}
      </section>
    </main>
  );
}
