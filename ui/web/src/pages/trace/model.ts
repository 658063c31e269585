// The trace view's data model: OTLP/JSON spans flattened into typed arrays, the span tree
// (children ordered by start time, spans with a missing parent promoted to roots), the rows
// shown for a given set of collapsed spans, the critical path and search within the trace.
// Everything is linear in the span count except one sort by start time, so 50,000 spans
// open in a few tens of milliseconds.

export interface AnyValue {
  stringValue?: string;
  boolValue?: boolean;
  intValue?: string | number;
  doubleValue?: number | string;
  bytesValue?: string;
  arrayValue?: { values?: AnyValue[] };
  kvlistValue?: { values?: KeyValue[] };
}
export interface KeyValue {
  key: string;
  value?: AnyValue;
}
export interface OtlpEvent {
  timeUnixNano?: string;
  name?: string;
  attributes?: KeyValue[];
  droppedAttributesCount?: number;
}
export interface OtlpLink {
  traceId?: string;
  spanId?: string;
  traceState?: string;
  attributes?: KeyValue[];
}
export interface OtlpSpan {
  traceId?: string;
  spanId?: string;
  parentSpanId?: string;
  traceState?: string;
  name?: string;
  kind?: number | string;
  startTimeUnixNano?: string;
  endTimeUnixNano?: string;
  attributes?: KeyValue[];
  events?: OtlpEvent[];
  links?: OtlpLink[];
  status?: { code?: number | string; message?: string };
}
export interface OtlpScope {
  name?: string;
  version?: string;
  attributes?: KeyValue[];
}
export interface OtlpTrace {
  resourceSpans?: {
    resource?: { attributes?: KeyValue[] };
    scopeSpans?: { scope?: OtlpScope; spans?: OtlpSpan[] }[];
  }[];
}

/** Where a span came from: its resource and instrumentation scope. */
export interface Origin {
  resource: KeyValue[];
  scope: OtlpScope;
}

export interface TraceModel {
  n: number;
  spans: OtlpSpan[];
  origins: Origin[];
  origin: Int32Array;
  services: string[];
  service: Int32Array;
  /** Nanoseconds since the trace's first span started. */
  start: Float64Array;
  end: Float64Array;
  error: Uint8Array;
  parent: Int32Array;
  depth: Int32Array;
  /** Children of span i are childList[childStart[i] .. childStart[i + 1]], by start time. */
  childStart: Int32Array;
  childList: Int32Array;
  roots: number[];
  /** Every span in tree order (depth first, children by start time). */
  pre: Int32Array;
  /** Position of each span in `pre`, and the position just past its subtree. */
  preIndex: Int32Array;
  subtreeEnd: Int32Array;
  /** Unix nanoseconds of the trace start, split to keep precision (seconds, nanos). */
  startSec: number;
  startNanos: number;
  duration: number;
  errorCount: number;
  indexOfId: Map<string, number>;
}

/** Splits a decimal unix-nanosecond string into whole seconds and nanoseconds. */
function splitNanos(s: string | undefined): [number, number] {
  if (!s) return [0, 0];
  const t = String(s);
  if (t.length <= 9) return [0, Number(t)];
  return [Number(t.slice(0, -9)), Number(t.slice(-9))];
}

const SERVICE_KEY = "service.name";

function stringOf(v: AnyValue | undefined): string {
  if (!v) return "";
  if (v.stringValue !== undefined) return v.stringValue;
  if (v.intValue !== undefined) return String(v.intValue);
  if (v.doubleValue !== undefined) return String(v.doubleValue);
  if (v.boolValue !== undefined) return String(v.boolValue);
  if (v.bytesValue !== undefined) return v.bytesValue;
  if (v.arrayValue) return `[${(v.arrayValue.values ?? []).map(stringOf).join(", ")}]`;
  if (v.kvlistValue) return `{${(v.kvlistValue.values ?? []).map((kv) => `${kv.key}: ${stringOf(kv.value)}`).join(", ")}}`;
  return "";
}
export { stringOf as formatValue };

export function isErrorStatus(code: number | string | undefined): boolean {
  return code === 2 || code === "2" || code === "STATUS_CODE_ERROR";
}

export function buildModel(body: OtlpTrace): TraceModel {
  const spans: OtlpSpan[] = [];
  const origins: Origin[] = [];
  const originOf: number[] = [];
  const services: string[] = [];
  const serviceIndex = new Map<string, number>();
  const serviceOf: number[] = [];
  for (const rs of body.resourceSpans ?? []) {
    const resource = rs.resource?.attributes ?? [];
    const name = stringOf(resource.find((a) => a.key === SERVICE_KEY)?.value) || "unknown service";
    let si = serviceIndex.get(name);
    if (si === undefined) {
      si = services.length;
      services.push(name);
      serviceIndex.set(name, si);
    }
    for (const ss of rs.scopeSpans ?? []) {
      const oi = origins.length;
      origins.push({ resource, scope: ss.scope ?? {} });
      for (const span of ss.spans ?? []) {
        spans.push(span);
        originOf.push(oi);
        serviceOf.push(si);
      }
    }
  }
  const n = spans.length;
  const start = new Float64Array(n);
  const end = new Float64Array(n);
  const error = new Uint8Array(n);
  let errorCount = 0;
  // Times relative to the first span's second, then shifted to the earliest start.
  const baseSec = n ? splitNanos(spans[0].startTimeUnixNano)[0] : 0;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const s = spans[i];
    const [ss, sn] = splitNanos(s.startTimeUnixNano);
    const [es, en] = splitNanos(s.endTimeUnixNano);
    const a = (ss - baseSec) * 1e9 + sn;
    let b = (es - baseSec) * 1e9 + en;
    if (!(b >= a)) b = a;
    start[i] = a;
    end[i] = b;
    if (a < min) min = a;
    if (b > max) max = b;
    if (isErrorStatus(s.status?.code)) {
      error[i] = 1;
      errorCount++;
    }
  }
  if (!n) min = max = 0;
  for (let i = 0; i < n; i++) {
    start[i] -= min;
    end[i] -= min;
  }
  const startSec = baseSec + Math.floor(min / 1e9);
  const startNanos = min - Math.floor(min / 1e9) * 1e9;

  // Spans by start time (storage order is arbitrary for big traces).
  const byStart = new Uint32Array(n);
  for (let i = 0; i < n; i++) byStart[i] = i;
  byStart.sort((x, y) => start[x] - start[y] || x - y);

  const indexOfId = new Map<string, number>();
  for (let i = 0; i < n; i++) {
    const id = spans[i].spanId;
    if (id && !indexOfId.has(id)) indexOfId.set(id, i);
  }
  const parent = new Int32Array(n).fill(-1);
  const childCount = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) {
    const p = spans[i].parentSpanId;
    if (!p) continue;
    const pi = indexOfId.get(p);
    if (pi === undefined || pi === i) continue;
    parent[i] = pi;
    childCount[pi]++;
  }
  const childStart = new Int32Array(n + 1);
  for (let i = 0; i < n; i++) childStart[i + 1] = childStart[i] + childCount[i];
  const fill = childStart.slice(0, n);
  const childList = new Int32Array(childStart[n]);
  const roots: number[] = [];
  for (let k = 0; k < n; k++) {
    const i = byStart[k];
    const p = parent[i];
    if (p < 0) roots.push(i);
    else childList[fill[p]++] = i;
  }

  // Depth-first order; spans caught in a parent cycle are never reached from a root, so
  // the first of each such group (by start time) becomes a root too.
  const pre = new Int32Array(n);
  const preIndex = new Int32Array(n).fill(-1);
  const subtreeEnd = new Int32Array(n);
  const depth = new Int32Array(n);
  let pos = 0;
  const stack = new Int32Array(n);
  const visit = (root: number) => {
    // Iterative pre-order; subtree ends are filled in when a span's subtree is done, which
    // a second pass computes from depths below.
    let sp = 0;
    stack[sp++] = root;
    depth[root] = 0;
    while (sp > 0) {
      const i = stack[--sp];
      preIndex[i] = pos;
      pre[pos++] = i;
      for (let c = childStart[i + 1] - 1; c >= childStart[i]; c--) {
        const ch = childList[c];
        if (preIndex[ch] >= 0) continue;
        depth[ch] = depth[i] + 1;
        stack[sp++] = ch;
      }
    }
  };
  for (const r of roots) visit(r);
  if (pos < n) {
    for (let k = 0; k < n; k++) {
      const i = byStart[k];
      if (preIndex[i] >= 0) continue;
      roots.push(i);
      parent[i] = -1;
      visit(i);
    }
  }
  // Subtree ends: walking the pre-order backwards, a span's subtree ends where the next
  // span at the same or a shallower depth begins.
  const open: number[] = [];
  for (let k = 0; k < n; k++) {
    const i = pre[k];
    while (open.length && depth[open[open.length - 1]] >= depth[i]) subtreeEnd[open.pop()!] = k;
    open.push(i);
  }
  while (open.length) subtreeEnd[open.pop()!] = n;

  return {
    n,
    spans,
    origins,
    origin: Int32Array.from(originOf),
    services,
    service: Int32Array.from(serviceOf),
    start,
    end,
    error,
    parent,
    depth,
    childStart,
    childList,
    roots,
    pre,
    preIndex,
    subtreeEnd,
    startSec,
    startNanos,
    duration: n ? max - min : 0,
    errorCount,
    indexOfId,
  };
}

export function childCountOf(m: TraceModel, i: number): number {
  return m.childStart[i + 1] - m.childStart[i];
}

/** The rows on screen: the tree in order, skipping the subtrees of collapsed spans. */
export function visibleRows(m: TraceModel, collapsed: Uint8Array): { rows: Int32Array; rowOf: Int32Array } {
  const rows = new Int32Array(m.n);
  const rowOf = new Int32Array(m.n).fill(-1);
  let r = 0;
  for (let k = 0; k < m.n; ) {
    const i = m.pre[k];
    rowOf[i] = r;
    rows[r++] = i;
    k = collapsed[i] && childCountOf(m, i) > 0 ? m.subtreeEnd[i] : k + 1;
  }
  return { rows: rows.subarray(0, r), rowOf };
}

/** The span the trace is about: the earliest root without a parent reference, else the first root. */
export function mainRoot(m: TraceModel): number {
  for (const r of m.roots) if (!m.spans[r].parentSpanId) return r;
  return m.roots.length ? m.roots[0] : -1;
}

export interface CriticalPath {
  onPath: Uint8Array;
  /** Pieces of each span's own time on the path: a linked list per span over flat arrays. */
  head: Int32Array;
  next: Int32Array;
  from: Float64Array;
  to: Float64Array;
}

/** The [from, to) pieces of span i's own time that lie on the critical path. */
export function sectionsOf(cp: CriticalPath, i: number): [number, number][] {
  const out: [number, number][] = [];
  for (let k = cp.head[i]; k >= 0; k = cp.next[k]) out.push([cp.from[k], cp.to[k]]);
  return out;
}

/**
 * The critical path as in Jaeger UI: start at the root's end; repeatedly take the child
 * that finishes last at or before the cursor, walk into it, then move the cursor to that
 * child's start; time between children is the parent's own. Children are clipped to their
 * parent's window first (a child outliving its parent only counts while the parent runs).
 */
export function criticalPath(m: TraceModel, root: number): CriticalPath {
  const onPath = new Uint8Array(m.n);
  const head = new Int32Array(m.n).fill(-1);
  // Each span gets one piece before its first chosen child and one after each: at most 2n.
  const cap = 2 * m.n + 2;
  const next = new Int32Array(cap);
  const from = new Float64Array(cap);
  const to = new Float64Array(cap);
  let count = 0;
  const result = { onPath, head, next, from, to };
  if (root < 0) return result;
  const add = (i: number, a: number, b: number) => {
    onPath[i] = 1;
    if (b > a && count < cap) {
      from[count] = a;
      to[count] = b;
      next[count] = head[i];
      head[i] = count++;
    }
  };
  // An explicit stack (traces can be deeper than the call stack). Per frame: the span, its
  // clipped window, the cursor, and where the walk is in its children ordered by end time,
  // latest first. Children in start order usually also end in order; then the walk goes
  // backwards through the tree's own child list and nothing is copied or sorted.
  const n = m.n;
  const fSpan = new Int32Array(n);
  const fLo = new Float64Array(n);
  const fHi = new Float64Array(n);
  const fCursor = new Float64Array(n);
  const fPtr = new Int32Array(n);
  const fOrder: (number[] | null)[] = new Array(n).fill(null);
  let sp = 0;
  const push = (span: number, lo: number, hi: number) => {
    fSpan[sp] = span;
    fLo[sp] = lo;
    fHi[sp] = hi;
    fCursor[sp] = hi;
    const a = m.childStart[span];
    const b = m.childStart[span + 1];
    let sorted = true;
    for (let c = a + 1; c < b; c++) {
      if (m.end[m.childList[c]] < m.end[m.childList[c - 1]]) {
        sorted = false;
        break;
      }
    }
    if (sorted) {
      fOrder[sp] = null;
      fPtr[sp] = b - 1;
    } else {
      const order = Array.from(m.childList.subarray(a, b));
      order.sort((x, y) => m.end[y] - m.end[x] || m.start[y] - m.start[x]);
      fOrder[sp] = order;
      fPtr[sp] = 0;
    }
    sp++;
  };
  push(root, m.start[root], m.end[root]);
  while (sp > 0) {
    const f = sp - 1;
    const span = fSpan[f];
    const lo = fLo[f];
    const hi = fHi[f];
    const cursor = fCursor[f];
    const order = fOrder[f];
    const first = m.childStart[span];
    let chosen = -1;
    let cs = 0;
    let ce = 0;
    for (;;) {
      let ch: number;
      if (order) {
        if (fPtr[f] >= order.length) break;
        ch = order[fPtr[f]++];
      } else {
        if (fPtr[f] < first) break;
        ch = m.childList[fPtr[f]--];
      }
      const s = Math.max(m.start[ch], lo);
      const e = Math.min(m.end[ch], hi);
      if (s > hi || e < lo || e > cursor) continue;
      chosen = ch;
      cs = s;
      ce = e;
      break;
    }
    if (chosen >= 0) {
      add(span, ce, cursor);
      fCursor[f] = cs;
      push(chosen, cs, ce);
    } else {
      add(span, lo, cursor);
      fOrder[f] = null;
      sp--;
    }
  }
  return result;
}

/** Lower-cased searchable text of each span: name, service, attribute keys and values. */
export function searchTexts(m: TraceModel): string[] {
  const out = new Array<string>(m.n);
  for (let i = 0; i < m.n; i++) {
    const s = m.spans[i];
    let t = `${s.name ?? ""}\u0000${m.services[m.service[i]]}`;
    for (const a of s.attributes ?? []) t += `\u0000${a.key}\u0000${stringOf(a.value)}`;
    out[i] = t.toLowerCase();
  }
  return out;
}

/** Spans matching `query` (case-insensitive substring), in tree order. */
export function searchSpans(m: TraceModel, texts: string[], query: string): Int32Array {
  const q = query.trim().toLowerCase();
  if (!q) return new Int32Array(0);
  const out: number[] = [];
  for (let k = 0; k < m.n; k++) {
    const i = m.pre[k];
    if (texts[i].includes(q)) out.push(i);
  }
  return Int32Array.from(out);
}

export const KINDS: Record<string, string> = {
  "0": "unspecified",
  "1": "internal",
  "2": "server",
  "3": "client",
  "4": "producer",
  "5": "consumer",
};

export function kindName(kind: number | string | undefined): string {
  if (kind === undefined) return "unspecified";
  const k = String(kind);
  return KINDS[k] ?? k.replace(/^SPAN_KIND_/, "").toLowerCase();
}

export function statusName(code: number | string | undefined): string {
  const c = String(code ?? 0);
  if (c === "1" || c === "STATUS_CODE_OK") return "OK";
  if (c === "2" || c === "STATUS_CODE_ERROR") return "Error";
  return "Unset";
}

/** Nanoseconds since the trace start for a unix-nanosecond string. */
export function relativeTime(m: TraceModel, unixNanos: string | undefined): number {
  const [s, n] = splitNanos(unixNanos);
  return (s - m.startSec) * 1e9 + (n - m.startNanos);
}
