// SQL console: an editor (Ctrl/Cmd+Enter runs), the schema at hand, results as a sortable,
// paginated table or a chart, CSV download, and the server's reason when it refuses a query.
// The query is in the URL (?q=) so a result can be shared; it runs again on load.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError } from "../api";
import { Loading } from "../components/Status";
import { href, navigate } from "../router";
import { ResultChart, type ChartChoice } from "./sql/chart";
import { EXAMPLES } from "./sql/examples";
import { downloadCsv, runSql, type SqlAnswer } from "./sql/run";
import { SchemaSidebar } from "./sql/schema";
import { ResultTable } from "./sql/table";
import "./sql.css";

const REASONS: Record<number, string> = {
  400: "The query is not valid SQL or does not plan",
  403: "Refused: the SQL endpoint is read-only (no DDL, DML, COPY or SET)",
  406: "The result cannot be produced in this format",
  408: "The query ran past the time limit",
  413: "The query text is too long",
  422: "The query ran past the memory limit",
  429: "Too many queries are running; try again shortly",
  503: "The query service is unavailable",
};

function QueryError({ error, what }: { error: Error; what: string }) {
  const status = error instanceof ApiError ? error.status : undefined;
  const reason = status !== undefined ? (REASONS[status] ?? `The server answered ${status}`) : `${what} failed`;
  return (
    <div class="error sql-error" role="alert" data-status={status}>
      <strong>
        {status !== undefined && <span class="status-code">{status}</span>} {reason}
      </strong>
      <pre>{error.message}</pre>
    </div>
  );
}

function isMac(): boolean {
  return /Mac|iPhone|iPad/.test(navigator.platform || navigator.userAgent);
}

interface RunState {
  /** Queries finished (answered or failed) so far: tests and scripts wait on it. */
  finished: number;
  running?: string;
  answer?: SqlAnswer;
  error?: Error;
  cancelled?: boolean;
}

export function SqlPage({ params }: { params: URLSearchParams }) {
  const q = params.get("q") ?? "";
  const view = params.get("view") === "chart" ? "chart" : "table";
  const choice: ChartChoice = {
    x: params.get("x") ?? undefined,
    y: params.get("y") ?? undefined,
    split: params.get("split") ?? undefined,
  };
  const [text, setText] = useState(q || EXAMPLES[0].sql);
  const [state, setState] = useState<RunState>({ finished: 0 });
  const [csv, setCsv] = useState<{ busy: boolean; error?: Error }>({ busy: false });
  const editor = useRef<HTMLTextAreaElement>(null);
  const ctl = useRef<AbortController | null>(null);
  const lastRun = useRef<string | null>(null);

  const execute = (sql: string) => {
    ctl.current?.abort();
    const c = new AbortController();
    ctl.current = c;
    lastRun.current = sql;
    setCsv({ busy: false });
    setState((s) => ({ finished: s.finished, answer: s.answer, running: sql }));
    runSql(sql, c.signal).then(
      (answer) => {
        if (!c.signal.aborted) setState((s) => ({ finished: s.finished + 1, answer }));
      },
      (error: Error) => {
        if (!c.signal.aborted) setState((s) => ({ finished: s.finished + 1, error }));
      },
    );
  };

  // A query in the URL (a shared link, a reload, back/forward) runs.
  useEffect(() => {
    if (q && q !== lastRun.current) {
      setText(q);
      execute(q);
    }
    // eslint-disable-next-line react-hooks/exhaustive-deps
  }, [q]);
  useEffect(() => () => ctl.current?.abort(), []);

  const run = () => {
    const sql = text.trim();
    if (!sql) return;
    lastRun.current = sql;
    navigate(href("/sql", { q: sql, view: view === "chart" ? "chart" : undefined }));
    execute(sql);
  };
  const cancel = () => {
    ctl.current?.abort();
    setState((s) => ({ finished: s.finished, answer: s.answer, cancelled: true }));
  };
  const setView = (next: "table" | "chart", c: ChartChoice = choice) =>
    navigate(href("/sql", { q: q || undefined, view: next === "chart" ? "chart" : undefined, ...c }), true);

  const insert = (snippet: string) => {
    const el = editor.current;
    if (!el) {
      setText((t) => t + snippet);
      return;
    }
    const a = el.selectionStart ?? el.value.length;
    const b = el.selectionEnd ?? a;
    setText(el.value.slice(0, a) + snippet + el.value.slice(b));
    requestAnimationFrame(() => {
      el.focus();
      el.setSelectionRange(a + snippet.length, a + snippet.length);
    });
  };

  const onKeyDown = (e: KeyboardEvent) => {
    if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  };

  const download = () => {
    const sql = state.answer?.sql;
    if (!sql) return;
    setCsv({ busy: true });
    downloadCsv(sql).then(
      () => setCsv({ busy: false }),
      (error: Error) => setCsv({ busy: false, error }),
    );
  };

  const answer = state.answer;
  const shortcut = isMac() ? "⌘+Enter" : "Ctrl+Enter";
  return (
    <main class="sql-page">
      <h1>SQL</h1>
      <div class="sql-layout">
        <SchemaSidebar onInsert={insert} />
        <div class="sql-main">
          <form
            class="sql-editor"
            onSubmit={(e) => {
              e.preventDefault();
              run();
            }}
          >
            <label for="sql-text">Query</label>
            <textarea
              id="sql-text"
              ref={editor}
              value={text}
              rows={9}
              spellcheck={false}
              autocomplete="off"
              aria-describedby="sql-hint"
              onInput={(e) => setText((e.target as HTMLTextAreaElement).value)}
              onKeyDown={onKeyDown}
            />
            <div class="sql-actions">
              <button type="submit" class="primary" disabled={!text.trim()}>
                Run
              </button>
              {state.running !== undefined && (
                <button type="button" onClick={cancel}>
                  Cancel
                </button>
              )}
              <span id="sql-hint" class="muted small">
                {shortcut} runs the query. One read-only statement; results are limited by the server.
              </span>
              <details class="sql-examples">
                <summary>Examples</summary>
                <ul>
                  {EXAMPLES.map((ex) => (
                    <li>
                      <button
                        type="button"
                        class="link"
                        onClick={(e) => {
                          setText(ex.sql);
                          (e.currentTarget as HTMLElement).closest("details")?.removeAttribute("open");
                          requestAnimationFrame(() => editor.current?.focus());
                        }}
                      >
                        {ex.title}
                      </button>
                    </li>
                  ))}
                </ul>
              </details>
            </div>
          </form>

          <section
            class="sql-result"
            aria-label="Result"
            aria-busy={state.running !== undefined}
            data-finished={state.finished}
          >
            {state.running !== undefined && <Loading>Running…</Loading>}
            {state.cancelled && <p class="muted">Cancelled.</p>}
            {state.error && <QueryError error={state.error} what="The query" />}
            {answer && !state.error && (
              <>
                <div class="sql-result-head">
                  <span class="row-count" data-rows={answer.rows.length}>
                    {answer.rows.length.toLocaleString()} {answer.rows.length === 1 ? "row" : "rows"}
                  </span>
                  <span class="muted">
                    {answer.columns.length} {answer.columns.length === 1 ? "column" : "columns"} · {Math.round(answer.elapsedMs)} ms
                  </span>
                  <div class="view-toggle" role="group" aria-label="Show result as">
                    <button type="button" aria-pressed={view === "table"} onClick={() => setView("table")}>
                      Table
                    </button>
                    <button type="button" aria-pressed={view === "chart"} onClick={() => setView("chart")}>
                      Chart
                    </button>
                  </div>
                  <button type="button" onClick={download} disabled={csv.busy}>
                    {csv.busy ? "Preparing CSV…" : "Download CSV"}
                  </button>
                </div>
                {answer.truncated && (
                  <p class="notice" role="status">
                    The result was truncated at the server's row limit ({answer.rows.length.toLocaleString()} rows): add a
                    LIMIT, a filter or an aggregation to see everything.
                  </p>
                )}
                {!answer.schema && answer.columns.length > 0 && (
                  <p class="muted small">
                    The server sent no result schema: columns are taken from the rows (all-null columns are missing).
                  </p>
                )}
                {csv.error && <QueryError error={csv.error} what="The CSV download" />}
                {answer.columns.length === 0 ? (
                  <p class="muted">The statement returned no columns.</p>
                ) : view === "chart" ? (
                  <ResultChart
                    columns={answer.columns}
                    rows={answer.rows}
                    choice={choice}
                    onChange={(c) => setView("chart", c)}
                  />
                ) : (
                  <ResultTable key={answer.sql + answer.elapsedMs} columns={answer.columns} rows={answer.rows} />
                )}
              </>
            )}
          </section>
        </div>
      </div>
    </main>
  );
}
