// A small layered (Sugiyama-style) graph layout, pure and DOM-free:
//
//   1. break cycles: edges that close a cycle in a DFS are reversed
//   2. layering: longest path from the sources (layer = column, left to right)
//   3. long edges are cut into chains of dummy nodes, one per layer they cross
//   4. ordering: a few down/up sweeps placing each node at the barycenter of its neighbours
//      in the previous layer
//   5. coordinates: layers are packed and centred, then each layer in turn moves toward its
//      neighbours' mean positions as far as the minimum spacing allows (isotonic regression,
//      so nodes of a layer never overlap)
//
// Cost is O((V + E') · sweeps) where E' counts edge segments after dummies; dummies are
// capped so a pathological graph falls back to straight long edges.

export interface LayoutInput {
  /** Node ids, in a stable order (the initial ordering follows it). */
  nodes: string[];
  /** Directed edges between node ids; self-loops and duplicates are ignored. */
  edges: { from: string; to: string }[];
}

export interface LayoutOptions {
  nodeWidth?: number;
  nodeHeight?: number;
  /** Horizontal distance between the right side of one layer and the left of the next. */
  layerGap?: number;
  /** Vertical gap between two nodes of a layer. */
  nodeGap?: number;
  /** Vertical space a dummy (edge bend) takes. */
  dummyGap?: number;
  sweeps?: number;
  /** Most dummy nodes created; beyond that long edges are drawn without bends. */
  maxDummies?: number;
}

export interface PlacedNode {
  id: string;
  /** Centre. */
  x: number;
  y: number;
  layer: number;
  /** Position in the layer, top first (dummies included). */
  order: number;
}

export interface PlacedEdge {
  from: string;
  to: string;
  /** Polyline from the `from` node's border to the `to` node's border. */
  points: [number, number][];
  /** Drawn against the layering (it closed a cycle). */
  reversed: boolean;
}

export interface Layout {
  nodes: Map<string, PlacedNode>;
  edges: PlacedEdge[];
  width: number;
  height: number;
  layers: number;
  nodeWidth: number;
  nodeHeight: number;
}

interface Item {
  /** Index into the real nodes, or -1 for a dummy. */
  real: number;
  layer: number;
  order: number;
  y: number;
  /** Neighbours in the previous and the next layer (item indices). */
  up: number[];
  down: number[];
}

/** Lays out a directed graph in layers; see the module docs. */
export function layoutGraph(input: LayoutInput, options: LayoutOptions = {}): Layout {
  const nodeWidth = options.nodeWidth ?? 170;
  const nodeHeight = options.nodeHeight ?? 40;
  const layerGap = options.layerGap ?? 110;
  const nodeGap = options.nodeGap ?? 14;
  const dummyGap = options.dummyGap ?? 10;
  const sweeps = options.sweeps ?? 4;
  const maxDummies = options.maxDummies ?? 20000;

  const n = input.nodes.length;
  const index = new Map<string, number>();
  input.nodes.forEach((id, i) => {
    if (!index.has(id)) index.set(id, i);
  });

  // Unique edges between distinct, known nodes.
  const seen = new Set<string>();
  const edges: [number, number][] = [];
  for (const e of input.edges) {
    const a = index.get(e.from);
    const b = index.get(e.to);
    if (a === undefined || b === undefined || a === b) continue;
    const key = `${a}\u0000${b}`;
    if (seen.has(key)) continue;
    seen.add(key);
    edges.push([a, b]);
  }

  // 1. Cycle breaking: iterative DFS; an edge to a node on the stack is a back edge.
  const out: number[][] = Array.from({ length: n }, () => []);
  edges.forEach(([a, b], i) => out[a].push(i));
  const state = new Uint8Array(n); // 0 new, 1 on stack, 2 done
  const reversed = new Uint8Array(edges.length);
  // Start from nodes without incoming edges first, so the natural flow is kept.
  const indeg = new Int32Array(n);
  for (const [, b] of edges) indeg[b]++;
  const starts = [...Array(n).keys()].sort((a, b) => (indeg[a] === 0 ? 0 : 1) - (indeg[b] === 0 ? 0 : 1) || a - b);
  for (const s of starts) {
    if (state[s]) continue;
    const stack: [number, number][] = [[s, 0]];
    state[s] = 1;
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [v, k] = top;
      if (k < out[v].length) {
        top[1]++;
        const ei = out[v][k];
        const w = edges[ei][1];
        if (state[w] === 1) reversed[ei] = 1;
        else if (state[w] === 0) {
          state[w] = 1;
          stack.push([w, 0]);
        }
      } else {
        state[v] = 2;
        stack.pop();
      }
    }
  }
  const dag: [number, number][] = edges.map(([a, b], i) => (reversed[i] ? [b, a] : [a, b]));

  // 2. Longest-path layering (Kahn's order over the DAG).
  const dagOut: number[][] = Array.from({ length: n }, () => []);
  const dagIn = new Int32Array(n);
  for (const [a, b] of dag) {
    dagOut[a].push(b);
    dagIn[b]++;
  }
  const layer = new Int32Array(n);
  const queue: number[] = [];
  for (let v = 0; v < n; v++) if (dagIn[v] === 0) queue.push(v);
  for (let qi = 0; qi < queue.length; qi++) {
    const v = queue[qi];
    for (const w of dagOut[v]) {
      if (layer[v] + 1 > layer[w]) layer[w] = layer[v] + 1;
      if (--dagIn[w] === 0) queue.push(w);
    }
  }
  // A source is pulled right next to its nearest callee when that shortens its edges (a
  // client that only calls a deep service need not sit in column 0).
  const hasIn = new Uint8Array(n);
  for (const [, b] of dag) hasIn[b] = 1;
  for (let v = 0; v < n; v++) {
    if (hasIn[v] || dagOut[v].length === 0) continue;
    let min = Infinity;
    for (const w of dagOut[v]) min = Math.min(min, layer[w]);
    if (min - 1 > layer[v]) layer[v] = min - 1;
  }
  let layers = 0;
  for (let v = 0; v < n; v++) layers = Math.max(layers, layer[v] + 1);

  // 3. Items: real nodes, then dummies for edges longer than one layer.
  const items: Item[] = [];
  for (let v = 0; v < n; v++) items.push({ real: v, layer: layer[v], order: 0, y: 0, up: [], down: [] });
  let dummies = 0;
  for (const [a, b] of dag) dummies += Math.max(0, layer[b] - layer[a] - 1);
  const useDummies = dummies <= maxDummies;
  /** Item chain per edge (dag direction), for routing. */
  const chains: number[][] = [];
  for (const [a, b] of dag) {
    const chain = [a];
    if (useDummies) {
      for (let l = layer[a] + 1; l < layer[b]; l++) {
        items.push({ real: -1, layer: l, order: 0, y: 0, up: [], down: [] });
        chain.push(items.length - 1);
      }
    }
    chain.push(b);
    for (let i = 0; i + 1 < chain.length; i++) {
      items[chain[i]].down.push(chain[i + 1]);
      items[chain[i + 1]].up.push(chain[i]);
    }
    chains.push(chain);
  }

  // 4. Ordering. Initial order: a DFS from the first layer, so connected nodes start close.
  const byLayer: number[][] = Array.from({ length: Math.max(layers, 1) }, () => []);
  const placed = new Uint8Array(items.length);
  const visit = (root: number) => {
    const stack = [root];
    while (stack.length) {
      const v = stack.pop()!;
      if (placed[v]) continue;
      placed[v] = 1;
      byLayer[items[v].layer].push(v);
      const next = items[v].down;
      for (let i = next.length - 1; i >= 0; i--) if (!placed[next[i]]) stack.push(next[i]);
    }
  };
  const roots = [...Array(items.length).keys()].filter((v) => items[v].up.length === 0);
  roots.sort((a, b) => items[a].layer - items[b].layer || a - b);
  for (const v of roots) visit(v);
  for (let v = 0; v < items.length; v++) if (!placed[v]) visit(v);
  const renumber = () => byLayer.forEach((row) => row.forEach((v, i) => (items[v].order = i)));
  renumber();

  const bary = (v: number, nb: number[]) => {
    if (nb.length === 0) return -1;
    let s = 0;
    for (const w of nb) s += items[w].order;
    return s / nb.length;
  };
  const sortLayer = (row: number[], down: boolean) => {
    const keys = new Map<number, number>();
    for (const v of row) {
      const b = bary(v, down ? items[v].up : items[v].down);
      // Nodes without neighbours on that side keep their place.
      keys.set(v, b < 0 ? items[v].order : b);
    }
    row.sort((a, b) => keys.get(a)! - keys.get(b)! || items[a].order - items[b].order);
    row.forEach((v, i) => (items[v].order = i));
  };
  for (let s = 0; s < sweeps; s++) {
    for (let l = 1; l < layers; l++) sortLayer(byLayer[l], true);
    for (let l = layers - 2; l >= 0; l--) sortLayer(byLayer[l], false);
  }

  // 5. Vertical coordinates.
  const size = (v: number) => (items[v].real >= 0 ? nodeHeight : 0);
  const sep = (a: number, b: number) =>
    (size(a) + size(b)) / 2 + (items[a].real >= 0 && items[b].real >= 0 ? nodeGap : dummyGap);
  for (const row of byLayer) {
    let y = 0;
    row.forEach((v, i) => {
      if (i > 0) y += sep(row[i - 1], v);
      items[v].y = y;
    });
  }
  // Centre every layer on the tallest one, then relax toward neighbours.
  const extent = (row: number[]) => (row.length ? items[row[row.length - 1]].y - items[row[0]].y : 0);
  const tallest = Math.max(0, ...byLayer.map(extent));
  for (const row of byLayer) {
    const shift = (tallest - extent(row)) / 2;
    for (const v of row) items[v].y += shift;
  }
  // Moves a layer's items toward the mean position of their neighbours on `side`, as close
  // as the minimum spacing allows: isotonic regression (pool adjacent violators) of the
  // wanted positions minus the cumulative spacing, weighted by neighbour count. O(row).
  const relax = (row: number[], side: "up" | "down" | "both") => {
    const m = row.length;
    if (m === 0) return;
    const z = new Float64Array(m);
    const w = new Float64Array(m);
    const offset = new Float64Array(m);
    for (let i = 0; i < m; i++) {
      const v = row[i];
      const nb = side === "both" ? [...items[v].up, ...items[v].down] : items[v][side];
      let want = items[v].y;
      if (nb.length) {
        let sum = 0;
        for (const u of nb) sum += items[u].y;
        want = sum / nb.length;
      }
      offset[i] = i === 0 ? 0 : offset[i - 1] + sep(row[i - 1], v);
      z[i] = want - offset[i];
      w[i] = nb.length ? nb.length : 0.05;
    }
    // Blocks of pooled values: mean, weight, size.
    const mean: number[] = [];
    const weight: number[] = [];
    const count: number[] = [];
    for (let i = 0; i < m; i++) {
      mean.push(z[i]);
      weight.push(w[i]);
      count.push(1);
      while (mean.length > 1 && mean[mean.length - 2] > mean[mean.length - 1]) {
        const b = mean.length - 1;
        const wt = weight[b - 1] + weight[b];
        mean[b - 1] = (mean[b - 1] * weight[b - 1] + mean[b] * weight[b]) / wt;
        weight[b - 1] = wt;
        count[b - 1] += count[b];
        mean.pop();
        weight.pop();
        count.pop();
      }
    }
    let i = 0;
    for (let b = 0; b < mean.length; b++) {
      for (let k = 0; k < count[b]; k++, i++) items[row[i]].y = mean[b] + offset[i];
    }
  };
  for (let s = 0; s < 2; s++) {
    for (let l = 1; l < layers; l++) relax(byLayer[l], "up");
    for (let l = layers - 2; l >= 0; l--) relax(byLayer[l], "down");
  }
  for (let l = 0; l < layers; l++) relax(byLayer[l], "both");
  for (let l = layers - 1; l >= 0; l--) relax(byLayer[l], "both");

  let minY = Infinity;
  let maxY = -Infinity;
  for (const it of items) {
    minY = Math.min(minY, it.y);
    maxY = Math.max(maxY, it.y);
  }
  if (!Number.isFinite(minY)) {
    minY = 0;
    maxY = 0;
  }
  const top = minY - nodeHeight / 2;
  const x = (l: number) => nodeWidth / 2 + l * (nodeWidth + layerGap);
  const nodes = new Map<string, PlacedNode>();
  for (let v = 0; v < n; v++) {
    const id = input.nodes[v];
    if (nodes.has(id)) continue;
    nodes.set(id, { id, x: x(layer[v]), y: items[v].y - top, layer: layer[v], order: items[v].order });
  }

  // Routing: border of the first node, every dummy, border of the last node; reversed
  // edges are returned in their original direction.
  const placedEdges: PlacedEdge[] = chains.map((chain, i) => {
    const pts: [number, number][] = chain.map((v) => [x(items[v].layer), items[v].y - top]);
    const first = pts[0];
    const last = pts[pts.length - 1];
    const dir = Math.sign(last[0] - first[0]) || 1;
    if (pts.length >= 2 && last[0] !== first[0]) {
      first[0] += (dir * nodeWidth) / 2;
      last[0] -= (dir * nodeWidth) / 2;
    }
    const [a, b] = edges[i];
    if (reversed[i]) pts.reverse();
    return { from: input.nodes[a], to: input.nodes[b], points: pts, reversed: reversed[i] === 1 };
  });

  return {
    nodes,
    edges: placedEdges,
    width: layers > 0 ? x(layers - 1) + nodeWidth / 2 : 0,
    height: maxY - minY + nodeHeight,
    layers,
    nodeWidth,
    nodeHeight,
  };
}

/** An SVG path through the polyline: horizontal cubic Béziers between consecutive points. */
export function curvePath(points: [number, number][]): string {
  if (points.length === 0) return "";
  const f = (v: number) => Math.round(v * 10) / 10;
  let d = `M${f(points[0][0])},${f(points[0][1])}`;
  for (let i = 1; i < points.length; i++) {
    const [x0, y0] = points[i - 1];
    const [x1, y1] = points[i];
    const mx = (x0 + x1) / 2;
    d += ` C${f(mx)},${f(y0)} ${f(mx)},${f(y1)} ${f(x1)},${f(y1)}`;
  }
  return d;
}

/** A point on `curvePath(points)` near its middle (for an edge's label). */
export function midpoint(points: [number, number][]): [number, number] {
  if (points.length === 0) return [0, 0];
  if (points.length % 2 === 1) return points[(points.length - 1) / 2];
  // Each segment's curve passes through the middle of its chord.
  const [x0, y0] = points[points.length / 2 - 1];
  const [x1, y1] = points[points.length / 2];
  return [(x0 + x1) / 2, (y0 + y1) / 2];
}
