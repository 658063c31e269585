// Running SQL for the console: rows, the result schema (x-weft-columns), truncation, timing.
import { postSQL } from "../../api";

export interface Column {
  name: string;
  /** Arrow type display (`Int64`, `Timestamp(ns, "UTC")`, …); "" when the server did not say. */
  type: string;
}

export type Row = Record<string, unknown>;

export interface SqlAnswer {
  sql: string;
  columns: Column[];
  rows: Row[];
  truncated: boolean;
  /** True when the columns came from the server's schema header (not guessed from rows). */
  schema: boolean;
  elapsedMs: number;
}

/** `x-weft-columns`: percent-encoded JSON `[{"name", "type"}]`; undefined if absent or bad. */
export function decodeColumns(header: string | null): Column[] | undefined {
  if (!header) return undefined;
  try {
    const parsed = JSON.parse(decodeURIComponent(header)) as unknown;
    if (!Array.isArray(parsed)) return undefined;
    return parsed
      .filter((c): c is { name: unknown; type?: unknown } => typeof c === "object" && c !== null && "name" in c)
      .map((c) => ({ name: String(c.name), type: typeof c.type === "string" ? c.type : "" }));
  } catch {
    return undefined;
  }
}

/** Column names in first-seen order over the rows (older servers send no schema). */
export function columnsFromRows(rows: Row[]): Column[] {
  const seen = new Set<string>();
  for (const row of rows) for (const k of Object.keys(row)) seen.add(k);
  return [...seen].map((name) => ({ name, type: "" }));
}

/** JSON with integers beyond 2^53 kept exact as BigInt (where the browser exposes the source). */
export function parseRows(text: string): Row[] {
  const reviver = (_key: string, value: unknown, context?: { source?: string }) => {
    if (
      typeof value === "number" &&
      Number.isInteger(value) &&
      !Number.isSafeInteger(value) &&
      context?.source &&
      /^-?\d+$/.test(context.source)
    ) {
      return BigInt(context.source);
    }
    return value;
  };
  const parsed = JSON.parse(text, reviver) as unknown;
  return Array.isArray(parsed) ? (parsed as Row[]) : [];
}

export async function runSql(sql: string, signal?: AbortSignal): Promise<SqlAnswer> {
  const started = performance.now();
  const res = await postSQL(sql, "application/json", signal);
  const text = await res.text();
  const rows = parseRows(text);
  const header = decodeColumns(res.headers.get("x-weft-columns"));
  return {
    sql,
    columns: header ?? columnsFromRows(rows),
    rows,
    truncated: res.headers.get("x-weft-truncated") === "true",
    schema: header !== undefined,
    elapsedMs: performance.now() - started,
  };
}

/** Downloads the result of `sql` as CSV, produced by the server (exact values, any size). */
export async function downloadCsv(sql: string, filename = "weft-result.csv"): Promise<void> {
  const res = await postSQL(sql, "text/csv");
  const blob = await res.blob();
  const url = URL.createObjectURL(new Blob([blob], { type: "text/csv" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  // Give the browser a moment to start the download before the URL goes away.
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

export function isNumericType(type: string): boolean {
  return /^(U?Int\d+|Float\d+|Decimal)/.test(type);
}

export function isTimeType(type: string): boolean {
  return /^(Timestamp|Date32|Date64)/.test(type);
}

/** A short type for display: `Timestamp(ns, "UTC")` → `Timestamp`, `Map(…)` → `Map`. */
export function shortType(type: string): string {
  const dict = /^Dictionary\(\w+, (\w+)\)$/.exec(type);
  if (dict) return dict[1];
  const paren = type.indexOf("(");
  return paren > 0 ? type.slice(0, paren) : type;
}

/** Text for one cell; nested values as JSON. */
export function cellText(value: unknown): string {
  if (value === null || value === undefined) return "NULL";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "bigint" || typeof value === "boolean") return String(value);
  return JSON.stringify(value, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v));
}

/** Nulls last; numbers (and BigInts) numerically; everything else as text. */
export function compareValues(a: unknown, b: unknown): number {
  const an = a === null || a === undefined;
  const bn = b === null || b === undefined;
  if (an || bn) return an === bn ? 0 : an ? 1 : -1;
  const numeric = (v: unknown) => typeof v === "number" || typeof v === "bigint";
  if (numeric(a) && numeric(b)) return (a as number) < (b as number) ? -1 : (a as number) > (b as number) ? 1 : 0;
  if (typeof a === "boolean" && typeof b === "boolean") return Number(a) - Number(b);
  if (typeof a === "string" && typeof b === "string" && ISO.test(a) && ISO.test(b)) {
    const [x, y] = [isoKey(a), isoKey(b)];
    return x < y ? -1 : x > y ? 1 : 0;
  }
  return cellText(a).localeCompare(cellText(b));
}

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/;

/** RFC 3339 UTC with the fraction padded to nanoseconds: sorts as text. */
function isoKey(text: string): string {
  const m = /^(.*:\d\d)(?:\.(\d+))?Z$/.exec(text)!;
  return `${m[1]}.${(m[2] ?? "").padEnd(9, "0")}`;
}

/** A SQL identifier, double-quoted when it is not a plain lower-case name. */
export function ident(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}
