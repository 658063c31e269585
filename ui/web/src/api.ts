// Fetch helpers for Weft's query API (same origin: the viewer is served by the query port).
// Errors carry the server's status and message so pages can show why a request was refused.

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

export type Params = Record<string, string | number | undefined | null | string[]>;

export function query(params: Params): string {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    if (Array.isArray(v)) v.filter((x) => x !== "").forEach((x) => q.append(k, x));
    else q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : "";
}

async function failure(res: Response): Promise<ApiError> {
  const text = await res.text();
  let message = text;
  try {
    const body = JSON.parse(text);
    message = body.error ?? body.message ?? body.errors?.[0]?.msg ?? text;
  } catch {
    // not JSON: keep the text
  }
  return new ApiError(res.status, message || `${res.status} ${res.statusText}`);
}

/** GET `path` with query parameters and parse the JSON answer. */
export async function getJSON<T>(path: string, params: Params = {}, signal?: AbortSignal): Promise<T> {
  const res = await fetch(path + query(params), { signal, headers: { accept: "application/json" } });
  if (!res.ok) throw await failure(res);
  return (await res.json()) as T;
}

/** A GET that also returns the response headers (trace lookups report span count and order). */
export async function getWithHeaders<T>(
  path: string,
  signal?: AbortSignal,
): Promise<{ body: T; headers: Headers }> {
  const res = await fetch(path, { signal, headers: { accept: "application/json" } });
  if (!res.ok) throw await failure(res);
  return { body: (await res.json()) as T, headers: res.headers };
}

/** POST SQL; `accept` picks JSON rows (default) or CSV text. */
export async function postSQL(sql: string, accept = "application/json", signal?: AbortSignal): Promise<Response> {
  const res = await fetch("/api/v1/sql", {
    method: "POST",
    signal,
    headers: { "content-type": "application/json", accept },
    body: JSON.stringify({ sql }),
  });
  if (!res.ok) throw await failure(res);
  return res;
}

/** Runs SQL and returns its rows as objects. */
export async function sqlRows<T = Record<string, unknown>>(sql: string, signal?: AbortSignal): Promise<T[]> {
  const res = await postSQL(sql, "application/json", signal);
  return (await res.json()) as T[];
}
