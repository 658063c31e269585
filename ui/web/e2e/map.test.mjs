// Service map: every generated edge and the critical trace's service pairs are drawn, nodes
// open their latency report, edges open a search, and the layered layout keeps a
// 300-service graph free of overlapping nodes.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, FACTS, openPage } from "./harness.mjs";

// The demo's traffic with a margin on both sides: the big and the critical trace are sent
// just after the generated traffic.
const START = new Date(Date.parse(FACTS.generated.start) - 10 * 60e3).toISOString();
const END = new Date(Date.parse(FACTS.generated.end) + 10 * 60e3).toISOString();
const MAP = `/map?start=${encodeURIComponent(START)}&end=${encodeURIComponent(END)}`;

const edge = (page, client, server) => page.locator(`svg .map-edge[data-client="${client}"][data-server="${server}"]`);
const node = (page, service) => page.locator(`svg .map-node[data-service="${service}"]`);

test("every generated edge and the critical trace's calls are drawn", async () => {
  const { page, done } = await openPage(MAP);
  await page.locator("svg .map-node").first().waitFor();
  for (const [client, server] of FACTS.generated.edges) {
    assert.equal(await edge(page, client, server).count(), 1, `edge ${client} → ${server}`);
    assert.equal(await page.locator(`.edge-table tr[data-client="${client}"][data-server="${server}"]`).count(), 1);
  }
  for (const service of FACTS.generated.services) assert.equal(await node(page, service).count(), 1, service);
  const critical = FACTS.critical_trace.trace.root_service;
  for (const [client, server] of [
    [critical, "auth-svc"],
    [critical, "payment-svc"],
    ["payment-svc", "payments-db"],
  ]) {
    assert.equal(await edge(page, client, server).count(), 1, `edge ${client} → ${server}`);
  }
  // Root spans are called by the virtual `user` node, drawn as uninstrumented.
  assert.equal(await node(page, "user").getAttribute("data-virtual"), "true");
  assert.equal(await node(page, "checkout").getAttribute("data-virtual"), "false");
  // Numbers on the edges come from the API: the busiest edge has a title with its calls.
  const title = await edge(page, "frontend", "api-gateway").locator("title").textContent();
  assert.match(title, /frontend → api-gateway\n\d[\d.k]* calls/);
  await done("map-edges");
});

async function api(path) {
  const res = await fetch(BASE + path);
  assert.equal(res.status, 200, path);
  return res.json();
}

test("edges carry the counts the server computed: calls and parent → child pairs", async () => {
  const range = `start=${encodeURIComponent(START)}&end=${encodeURIComponent(END)}`;
  const graph = await api(`/api/v1/dependencies?${range}`);
  const { links } = await api(`/api/v1/dependencies/links?${range}`);
  const { page, done } = await openPage(MAP);
  await page.locator("svg .map-node").first().waitFor();
  // A pair only seen as parent → child spans: drawn with the server's count.
  const link = links.find((l) => l.parent === "shop-web" && l.child === "auth-svc");
  assert.ok(link && link.call_count > 0, JSON.stringify(links));
  const drawnLink = edge(page, "shop-web", "auth-svc");
  assert.equal(Number(await drawnLink.getAttribute("data-calls")), link.call_count);
  assert.match(await drawnLink.locator("title").textContent(), /shop-web → auth-svc/);
  // A client → server edge: the calls of its kinds, as /api/v1/dependencies counted them.
  const calls = graph.edges
    .filter((e) => e.client === "frontend" && e.server === "api-gateway")
    .reduce((n, e) => n + e.calls, 0);
  assert.ok(calls > 0);
  assert.equal(Number(await edge(page, "frontend", "api-gateway").getAttribute("data-calls")), calls);
  await done("map-server-counts");
});

test("without parent → child pairs only client → server calls are drawn", async () => {
  const { page, done } = await openPage(`${MAP}&links=off`);
  await page.locator("svg .map-node").first().waitFor();
  assert.equal(await edge(page, "frontend", "api-gateway").count(), 1);
  assert.equal(await edge(page, "shop-web", "auth-svc").count(), 0);
  await page.getByLabel("Include parent → child pairs").check();
  await page.waitForURL((u) => !u.search.includes("links=off"));
  await edge(page, "shop-web", "auth-svc").waitFor();
  await done("map-calls-only");
});

test("clicking a service opens its latency report", async () => {
  const { page, done } = await openPage(MAP);
  await node(page, "checkout").click();
  await page.waitForURL((u) => u.pathname === "/latency" && u.searchParams.get("service") === "checkout");
  const url = new URL(page.url());
  assert.equal(url.searchParams.get("start"), START);
  assert.equal(url.searchParams.get("end"), END);
  await done("map-node-click");
});

test("clicking an edge opens the matching traces", async () => {
  const { page, done } = await openPage(MAP);
  // Mouse on the drawn curve.
  const line = edge(page, "frontend", "api-gateway").locator("path.line");
  const d = await line.getAttribute("d");
  const box = await page.locator("svg.map-svg").boundingBox();
  const point = await line.evaluate((p) => {
    const m = p.getPointAtLength(p.getTotalLength() / 2);
    const ctm = p.getScreenCTM();
    return { x: m.x * ctm.a + ctm.e, y: m.y * ctm.d + ctm.f };
  });
  assert.ok(d && box);
  await page.mouse.click(point.x, point.y);
  await page.waitForURL((u) => u.pathname === "/search");
  const url = new URL(page.url());
  assert.equal(url.searchParams.get("service"), "api-gateway");
  assert.equal(url.searchParams.get("start"), START);
  // And from the keyboard: an edge is a link.
  await page.goBack();
  const e = edge(page, "checkout", "payment");
  await e.focus();
  await page.keyboard.press("Enter");
  await page.waitForURL((u) => u.pathname === "/search" && u.searchParams.get("service") === "payment");
  await done("map-edge-click");
});

test("dragging pans the map without following a link", async () => {
  const { page, done } = await openPage(MAP);
  const n = node(page, "checkout");
  const before = await n.boundingBox();
  await page.mouse.move(before.x + before.width / 2, before.y + before.height / 2);
  await page.mouse.down();
  await page.mouse.move(before.x + 60, before.y + 80, { steps: 5 });
  await page.mouse.up();
  const after = await n.boundingBox();
  assert.ok(Math.abs(after.y - before.y) > 40, `${before.y} → ${after.y}`);
  assert.equal(new URL(page.url()).pathname, "/map");
  await page.getByRole("button", { name: "Zoom in" }).click();
  const zoomed = await n.boundingBox();
  assert.ok(zoomed.width > after.width * 1.1);
  await done("map-pan-zoom");
});

test("a graph of 300 services is laid out without overlaps", async () => {
  const { page, done } = await openPage("/search");
  // A synthetic graph: a random tree of 300 services with extra edges (some closing
  // cycles) and a few uninstrumented peers, served instead of the real one.
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648), seed / 2147483648);
  const names = Array.from({ length: 300 }, (_, i) => `svc-${String(i).padStart(3, "0")}`);
  const pairs = new Set();
  for (let i = 1; i < names.length; i++) {
    pairs.add(`${names[Math.floor(rnd() * i)]}|${names[i]}`);
    if (rnd() < 0.6) pairs.add(`${names[Math.floor(rnd() * names.length)]}|${names[Math.floor(rnd() * names.length)]}`);
  }
  for (let i = 0; i < 20; i++) pairs.add(`${names[Math.floor(rnd() * names.length)]}|db-${i % 5}`);
  const edges = [...pairs]
    .map((p) => p.split("|"))
    .filter(([a, b]) => a !== b)
    .map(([client, server]) => ({
      client,
      server,
      kind: "request",
      virtual: server.startsWith("db-"),
      virtual_node: server.startsWith("db-") ? "server" : null,
      calls: 1 + Math.floor(rnd() * 1000),
      errors: 0,
      error_rate: 0,
      client_latency_ns: { p50: 1e6, p95: 5e6, p99: 9e6 },
      server_latency_ns: null,
      example_trace_ids: [],
    }));
  const nodes = [...names, "db-0", "db-1", "db-2", "db-3", "db-4"].map((service) => ({
    service,
    virtual: service.startsWith("db-"),
    spans: 100,
    calls_in: 10,
    errors_in: 0,
    calls_out: 10,
    errors_out: 0,
  }));
  const graph = { start_ns: 0, end_ns: 3600e9, nodes, edges };
  await page.route("**/api/v1/dependencies**", (route) => route.fulfill({ json: graph }));
  await page.goto(page.url().replace(/\/search.*/, "/map?range=1h&links=off"), { waitUntil: "networkidle" });
  await page.locator("svg .map-node").first().waitFor();
  const placed = await page.locator("svg .map-node").evaluateAll((els) =>
    els.map((el) => ({
      service: el.dataset.service,
      x: Number(el.dataset.x),
      y: Number(el.dataset.y),
      layer: Number(el.dataset.layer),
    })),
  );
  assert.equal(placed.length, nodes.length);
  const layers = new Map();
  for (const p of placed) layers.set(p.layer, [...(layers.get(p.layer) ?? []), p]);
  assert.ok(layers.size > 2, `${layers.size} layers`);
  for (const [layer, list] of layers) {
    list.sort((a, b) => a.y - b.y);
    assert.ok(list.every((p) => p.x === list[0].x), `layer ${layer} is one column`);
    for (let i = 1; i < list.length; i++) {
      assert.ok(list[i].y - list[i - 1].y >= 40, `layer ${layer}: ${list[i - 1].service} and ${list[i].service} overlap`);
    }
  }
  // Every edge is drawn once, and points from a lower layer to a higher one unless it closes a cycle.
  assert.equal(await page.locator("svg .map-edge").count(), edges.length);
  const byName = new Map(placed.map((p) => [p.service, p]));
  const forward = edges.filter((e) => byName.get(e.client).layer < byName.get(e.server).layer).length;
  assert.ok(forward >= edges.length * 0.8, `${forward} of ${edges.length} edges point forward`);
  // The table lists them too.
  assert.equal(await page.locator(".edge-table tbody tr").count(), edges.length);
  await done("map-300-services");
});
