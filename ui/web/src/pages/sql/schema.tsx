// The console's schema sidebar: tables and views with their columns and types, from
// information_schema. Clicking a name inserts it into the editor.
import { useState } from "preact/hooks";
import { sqlRows } from "../../api";
import { ErrorBox, Loading } from "../../components/Status";
import { useAsync } from "../../util";
import { ident, shortType } from "./run";

interface ColumnRow {
  table_name: string;
  table_type: string | null;
  column_name: string;
  data_type: string;
}

interface TableInfo {
  name: string;
  kind: "table" | "view";
  columns: { name: string; type: string }[];
}

const SCHEMA_SQL =
  "SELECT c.table_name, t.table_type, c.column_name, c.data_type " +
  "FROM information_schema.columns c JOIN information_schema.tables t " +
  "ON c.table_schema = t.table_schema AND c.table_name = t.table_name " +
  "WHERE c.table_schema = 'public' ORDER BY c.table_name, c.ordinal_position";

function group(rows: ColumnRow[]): TableInfo[] {
  const tables = new Map<string, TableInfo>();
  for (const r of rows) {
    let t = tables.get(r.table_name);
    if (!t) {
      t = { name: r.table_name, kind: r.table_type === "VIEW" ? "view" : "table", columns: [] };
      tables.set(r.table_name, t);
    }
    t.columns.push({ name: r.column_name, type: r.data_type });
  }
  // Base tables first, then views; each alphabetically.
  return [...tables.values()].sort((a, b) => (a.kind === b.kind ? a.name.localeCompare(b.name) : a.kind === "table" ? -1 : 1));
}

export function SchemaSidebar({ onInsert }: { onInsert: (text: string) => void }) {
  const schema = useAsync(async (signal) => group(await sqlRows<ColumnRow>(SCHEMA_SQL, signal)), []);
  const [open, setOpen] = useState<Set<string>>(new Set());
  const toggle = (name: string) =>
    setOpen((s) => {
      const next = new Set(s);
      if (next.has(name)) next.delete(name);
      else next.add(name);
      return next;
    });
  return (
    <aside class="sql-schema" aria-labelledby="sql-schema-title">
      <h2 id="sql-schema-title">Schema</h2>
      <p class="muted small">Click a name to insert it.</p>
      {schema.error && <ErrorBox error={schema.error} />}
      {schema.loading && !schema.data && <Loading />}
      <ul class="schema-tables">
        {schema.data?.map((t) => {
          const expanded = open.has(t.name);
          const listId = `schema-cols-${t.name}`;
          return (
            <li key={t.name} data-table={t.name}>
              <div class="schema-table">
                <button
                  type="button"
                  class="schema-toggle"
                  aria-expanded={expanded}
                  aria-controls={listId}
                  aria-label={`${expanded ? "Hide" : "Show"} columns of ${t.name}`}
                  onClick={() => toggle(t.name)}
                >
                  {expanded ? "▾" : "▸"}
                </button>
                <button type="button" class="schema-name" title={`Insert ${t.name}`} onClick={() => onInsert(ident(t.name))}>
                  {t.name}
                </button>
                <span class="badge">{t.kind}</span>
              </div>
              {expanded && (
                <ul class="schema-columns" id={listId} aria-label={`Columns of ${t.name}`}>
                  {t.columns.map((c) => (
                    <li key={c.name}>
                      <button type="button" class="schema-name" title={`Insert ${c.name}`} onClick={() => onInsert(ident(c.name))}>
                        {c.name}
                      </button>
                      <span class="schema-type" title={c.type}>
                        {shortType(c.type)}
                      </span>
                    </li>
                  ))}
                </ul>
              )}
            </li>
          );
        })}
      </ul>
    </aside>
  );
}
