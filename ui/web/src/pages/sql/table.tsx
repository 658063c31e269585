// Result rows as a table: sortable by clicking a header, paginated on the client.
import { useMemo, useState } from "preact/hooks";
import { cellText, compareValues, isNumericType, shortType, type Column, type Row } from "./run";

const PAGE_SIZES = [50, 100, 500, 1000];

export function ResultTable({ columns, rows }: { columns: Column[]; rows: Row[] }) {
  const [sort, setSort] = useState<{ col: string; desc: boolean } | null>(null);
  const [pageSize, setPageSize] = useState(100);
  const [page, setPage] = useState(0);
  const sorted = useMemo(() => {
    if (!sort) return rows;
    const out = rows.slice();
    // Nulls stay last in both directions.
    out.sort((a, b) => {
      const x = a[sort.col];
      const y = b[sort.col];
      const nx = x === null || x === undefined;
      const ny = y === null || y === undefined;
      if (nx || ny) return compareValues(x, y);
      return sort.desc ? -compareValues(x, y) : compareValues(x, y);
    });
    return out;
  }, [rows, sort]);
  const numericCols = useMemo(() => {
    const out = new Set<string>();
    for (const c of columns) {
      const sample = rows.find((r) => r[c.name] !== null && r[c.name] !== undefined)?.[c.name];
      if (c.type ? isNumericType(c.type) : typeof sample === "number" || typeof sample === "bigint") out.add(c.name);
    }
    return out;
  }, [columns, rows]);
  const pages = Math.max(1, Math.ceil(sorted.length / pageSize));
  const current = Math.min(page, pages - 1);
  const first = current * pageSize;
  const shown = sorted.slice(first, first + pageSize);
  const onSort = (col: string) => {
    setSort((s) => (s?.col === col ? { col, desc: !s.desc } : { col, desc: false }));
    setPage(0);
  };
  const pager = (
    <nav class="sql-pager" aria-label="Result pages">
      <button type="button" onClick={() => setPage(0)} disabled={current === 0} aria-label="First page">
        «
      </button>
      <button type="button" onClick={() => setPage(current - 1)} disabled={current === 0}>
        Previous
      </button>
      <span aria-live="polite" class="page-status">
        Page {current + 1} of {pages} · rows {sorted.length ? first + 1 : 0}–{first + shown.length}
      </span>
      <button type="button" onClick={() => setPage(current + 1)} disabled={current >= pages - 1}>
        Next
      </button>
      <button type="button" onClick={() => setPage(pages - 1)} disabled={current >= pages - 1} aria-label="Last page">
        »
      </button>
      <label class="inline">
        Rows per page{" "}
        <select
          value={pageSize}
          onChange={(e) => {
            setPageSize(Number((e.target as HTMLSelectElement).value));
            setPage(0);
          }}
        >
          {PAGE_SIZES.map((n) => (
            <option value={n}>{n}</option>
          ))}
        </select>
      </label>
    </nav>
  );
  return (
    <div class="sql-table">
      {sorted.length > pageSize && pager}
      <div class="sql-table-scroll">
        <table class="grid" data-page={current + 1}>
          <caption class="sr-only">Query result</caption>
          <thead>
            <tr>
              {columns.map((c) => {
                const state = sort?.col === c.name ? (sort.desc ? "descending" : "ascending") : undefined;
                return (
                  <th scope="col" aria-sort={state} class={numericCols.has(c.name) ? "num" : undefined}>
                    <button type="button" class="sort" onClick={() => onSort(c.name)} title={c.type || undefined}>
                      <span class="col-name">{c.name}</span>
                      {c.type && <span class="col-type">{shortType(c.type)}</span>}
                      <span class="sort-mark" aria-hidden="true">
                        {state === "ascending" ? "▲" : state === "descending" ? "▼" : ""}
                      </span>
                    </button>
                  </th>
                );
              })}
            </tr>
          </thead>
          <tbody>
            {shown.map((row) => (
              <tr>
                {columns.map((c) => {
                  const v = row[c.name];
                  const isNull = v === null || v === undefined;
                  const numeric = typeof v === "number" || typeof v === "bigint";
                  return (
                    <td class={isNull ? "null" : numeric ? "num" : undefined}>{cellText(v)}</td>
                  );
                })}
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
