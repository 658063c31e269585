// Latency report: numbers match GET /api/v1/latency for the same window, operations are
// ordered by p99, exemplars open traces, a comparison window adds series and columns, and an
// unknown service is an empty state rather than an error.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, FACTS, openPage } from "./harness.mjs";

const START = new Date(Date.parse(FACTS.generated.start) - 10 * 60e3).toISOString();
const END = new Date(Date.parse(FACTS.generated.end) + 10 * 60e3).toISOString();
// A service of the generated traffic with several operations.
const SERVICE = FACTS.generated.services.includes("checkout") ? "checkout" : FACTS.generated.services[0];
const page_ = (extra = {}) =>
  "/latency?" + new URLSearchParams({ service: SERVICE, start: START, end: END, ...extra }).toString();

async function api(extra = {}) {
  const q = new URLSearchParams({ service: SERVICE, start: START, end: END, ...extra });
  const res = await fetch(`${BASE}/api/v1/latency?${q}`);
  assert.equal(res.status, 200);
  return res.json();
}

// The viewer's formatDuration (util.ts), for checking the text shown.
function formatDuration(ns) {
  const a = Math.abs(ns);
  if (a >= 1e9) return `${(ns / 1e9).toPrecision(3)} s`;
  if (a >= 1e6) return `${(ns / 1e6).toPrecision(3)} ms`;
  if (a >= 1e3) return `${(ns / 1e3).toPrecision(3)} µs`;
  return `${Math.round(ns)} ns`;
}

test("p99 and counts match the API, operations are ordered by p99", async () => {
  const expected = await api();
  assert.ok(expected.current.count > 0, "the demo service has spans in the window");
  const { page, done } = await openPage(page_());
  const rows = page.locator("table.slowest-ops tbody tr");
  await rows.first().waitFor();
  assert.equal(await rows.count(), expected.current.slowest_operations.length);
  const shown = await rows.evaluateAll((trs) =>
    trs.map((tr) => ({
      operation: tr.dataset.operation,
      p99: tr.dataset.p99Ns === "" ? null : Number(tr.dataset.p99Ns),
      count: Number(tr.dataset.count),
      p99Text: tr.querySelector("td.p99").textContent,
    })),
  );
  for (let i = 1; i < shown.length; i++) assert.ok((shown[i - 1].p99 ?? -1) >= (shown[i].p99 ?? -1), "ordered by p99");
  for (const op of expected.current.slowest_operations) {
    const row = shown.find((r) => r.operation === op.operation);
    assert.ok(row, op.operation);
    assert.equal(row.p99, op.p99_ns);
    assert.equal(row.count, op.count);
    if (op.p99_ns != null) assert.equal(row.p99Text, formatDuration(op.p99_ns));
  }
  // The whole service: summary numbers.
  const stat = (key) => page.locator(`.stat[data-stat="${key}"]`);
  assert.equal(Number(await stat("p99").getAttribute("data-value")), expected.current.latency_ns.p99);
  assert.equal(await stat("p99").locator("dd.value").textContent(), formatDuration(expected.current.latency_ns.p99));
  assert.equal(Number(await stat("count").getAttribute("data-value")), expected.current.count);

  // One operation: pick the slowest from the table, the report narrows to it.
  const slowest = expected.current.slowest_operations[0].operation;
  await page.locator(`table.slowest-ops tr[data-operation="${slowest}"] a`).first().click();
  await page.waitForURL((u) => new URL(u).searchParams.get("operation") === slowest);
  const narrowed = await api({ operation: slowest });
  await page.locator('.stat[data-stat="p99"]').waitFor();
  await page.waitForFunction(
    (want) => document.querySelector('.stat[data-stat="count"]')?.getAttribute("data-value") === String(want),
    narrowed.current.count,
  );
  assert.equal(Number(await stat("p99").getAttribute("data-value")), narrowed.current.latency_ns.p99);
  assert.equal(await stat("p99").locator("dd.value").textContent(), formatDuration(narrowed.current.latency_ns.p99));
  assert.equal(await page.getByLabel("Operation", { exact: true }).inputValue(), slowest);
  // Charts and the histogram are drawn.
  await page.locator(".chart canvas").first().waitFor();
  assert.ok((await page.locator("svg.histogram [data-lower-ns]").count()) > 0);
  await done("latency-report");
});

test("an exemplar opens its trace", async () => {
  const { page, done } = await openPage(page_());
  const link = page.locator("a.exemplar").first();
  await link.waitFor();
  const id = await link.textContent();
  assert.match(id, /^[0-9a-f]{32}$/);
  await link.click();
  await page.waitForURL(`**/trace/${id}`);
  await done("latency-exemplar");
});

test("a comparison window adds dashed series and delta columns", async () => {
  const { page, done } = await openPage(page_());
  await page.locator("table.slowest-ops tbody tr").first().waitFor();
  assert.equal(await page.getByRole("columnheader", { name: "Δ p99" }).count(), 0);
  await page.getByLabel("Compare with").selectOption("previous");
  await page.waitForURL((u) => new URL(u).searchParams.get("compare") === "previous");
  await page.getByRole("columnheader", { name: "Δ p99" }).waitFor();
  await page.getByRole("columnheader", { name: "p99 before" }).waitFor();
  await page.locator(".u-legend").filter({ hasText: "p99 (compare)" }).first().waitFor();
  // The comparison numbers are the API's for the previous period.
  const len = Date.parse(END) - Date.parse(START);
  const before = await api({
    compare_start: new Date(Date.parse(START) - len).toISOString(),
    compare_end: START,
  });
  assert.ok(before.compare);
  const compareCount = await page.locator('.stat[data-stat="count"] dd.compare').getAttribute("data-compare-value");
  assert.equal(Number(compareCount), before.compare.count);
  // One day earlier, as a shareable URL.
  await page.getByLabel("Compare with").selectOption("day");
  await page.waitForURL((u) => new URL(u).searchParams.get("compare") === "day");
  await page.getByRole("columnheader", { name: "Δ p99" }).waitFor();
  await done("latency-compare");
});

test("an unknown service shows an empty state", async () => {
  const { page, done } = await openPage(
    "/latency?" + new URLSearchParams({ service: "no-such-service-xyz", start: START, end: END }),
  );
  await page.getByRole("status").filter({ hasText: "No spans from" }).waitFor();
  assert.equal(await page.locator('.error[role="alert"]').count(), 0);
  await done("latency-unknown-service");
});

test("without a service, the services are listed with links to their reports", async () => {
  const { page, done } = await openPage("/latency?" + new URLSearchParams({ start: START, end: END }));
  const row = page.locator(`tr[data-service="${SERVICE}"]`);
  await row.waitFor();
  await row.getByRole("link", { name: SERVICE }).click();
  await page.waitForURL((u) => new URL(u).searchParams.get("service") === SERVICE);
  await page.locator("table.slowest-ops tbody tr").first().waitFor();
  await done("latency-services");
});
