// Metrics explorer: the list holds every demo metric, grouping and filtering change the
// series drawn, the values drawn are query_range's, histograms draw as percentiles and as
// a heatmap. Times are the demo traffic's own window (FACTS.generated), not "now".
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, FACTS, openPage } from "./harness.mjs";

const START = new Date(FACTS.generated.start).toISOString();
const END = new Date(new Date(FACTS.generated.end).getTime() + 1000).toISOString();
const WINDOW = `start=${encodeURIComponent(START)}&end=${encodeURIComponent(END)}`;

async function api(path) {
  const res = await fetch(BASE + path);
  assert.equal(res.status, 200, path);
  return res.json();
}

/** The series the page drew (data-series on the chart). */
async function drawnSeries(page) {
  const chart = page.locator(".metric-chart");
  await chart.waitFor();
  return JSON.parse(await chart.getAttribute("data-series"));
}

async function legendLabels(page) {
  // uPlot's legend: the first entry is the x axis ("Time").
  const labels = await page.locator(".metric-chart .u-legend .u-series .u-label").allTextContents();
  return labels.slice(1);
}

test("the metric list holds every demo metric with its type and unit", async () => {
  const { page, done } = await openPage("/metrics");
  const list = page.getByRole("navigation", { name: "Metrics" });
  const { metrics } = await api("/api/v1/metrics");
  for (const name of FACTS.metrics) {
    const link = list.locator(`[data-metric="${name}"]`);
    await link.waitFor();
    const info = metrics.find((m) => m.name === name);
    assert.ok(info, `API lists ${name}`);
    const text = await link.textContent();
    assert.ok(text.includes(info.type), `${name} shows its type: ${text}`);
    if (info.unit) assert.ok(text.includes(info.unit), `${name} shows its unit: ${text}`);
  }
  // Picking one puts it in the URL.
  await list.locator('[data-metric="app.requests"]').click();
  await page.waitForURL(/metric=app\.requests/);
  await page.getByRole("heading", { name: "app.requests" }).waitFor();
  await done("metrics-list");
});

test("app.requests grouped by error draws two series with query_range's values", async () => {
  const { page, done } = await openPage(`/metrics?metric=app.requests&view=rate&step=5m&${WINDOW}`);
  let drawn = await drawnSeries(page);
  assert.equal(drawn.length, 1, "ungrouped: one series");
  // Group by the `error` attribute through the form.
  await page.getByRole("group", { name: "Group by" }).getByLabel("error", { exact: true }).check();
  await page.waitForURL(/group_by=error/);
  await page.locator('.metric-chart[data-series-count="2"]').waitFor();
  drawn = await drawnSeries(page);
  assert.deepEqual(drawn.map((s) => s.group.error).sort(), ["false", "true"]);
  assert.deepEqual((await legendLabels(page)).sort(), ["error=false", "error=true"]);

  const expected = await api(
    `/api/v1/metrics/query_range?metric=app.requests&agg=rate&group_by=error&step=5m&${WINDOW}`,
  );
  assert.equal(expected.series.length, 2);
  for (const s of expected.series) {
    const mine = drawn.find((d) => d.group.error === s.group.error);
    assert.ok(mine, `series error=${s.group.error} drawn`);
    assert.deepEqual(
      mine.points,
      s.points.map((p) => [p.time, p.value]),
      `error=${s.group.error}: drawn values are query_range's`,
    );
    assert.ok(s.points.length > 0);
  }
  // The summary table lists both groups.
  const rows = await page.locator(".series-stats tbody th").allTextContents();
  assert.deepEqual(rows.sort(), ["error=false", "error=true"]);

  // A filter narrows to one group.
  await page.getByLabel("error filter").selectOption("true");
  await page.waitForURL(/match%5Berror%5D=true|match\[error\]=true/);
  await page.locator('.metric-chart[data-series-count="1"]').waitFor();
  drawn = await drawnSeries(page);
  assert.deepEqual(drawn[0].group, { error: "true" });
  await done("metrics-group-by");
});

test("app.request.duration draws p50, p90 and p99, ordered, as query_range computes them", async () => {
  const { page, done } = await openPage(`/metrics?metric=app.request.duration&step=5m&${WINDOW}`);
  const drawn = await drawnSeries(page);
  assert.deepEqual(
    drawn.map((s) => s.label),
    ["p50", "p90", "p99"],
  );
  assert.deepEqual(await legendLabels(page), ["p50", "p90", "p99"]);
  const [p50, p90, p99] = drawn;
  assert.ok(p50.points.length > 0);
  p50.points.forEach(([t, v], i) => {
    assert.equal(p90.points[i][0], t);
    assert.ok(v <= p90.points[i][1] && p90.points[i][1] <= p99.points[i][1], `ordered at ${t}`);
  });
  const expected = await api(
    `/api/v1/metrics/query_range?metric=app.request.duration&agg=histogram_quantile&q=0.99&step=5m&${WINDOW}`,
  );
  assert.deepEqual(
    p99.points,
    expected.series[0].points.map((p) => [p.time, p.value]),
  );
  await done("metrics-percentiles");
});

test("app.request.duration as a heatmap draws its buckets", async () => {
  const { page, done } = await openPage(`/metrics?metric=app.request.duration&step=5m&${WINDOW}`);
  await page.getByLabel("Show as").selectOption("heatmap");
  await page.waitForURL(/view=heatmap/);
  const heatmap = page.locator(".heatmap");
  await heatmap.waitFor();
  const cells = Number(await heatmap.getAttribute("data-cells"));
  const buckets = Number(await heatmap.getAttribute("data-buckets"));
  const total = Number(await heatmap.getAttribute("data-total"));
  assert.ok(cells > 10, `cells: ${cells}`);
  assert.ok(buckets >= 3, `buckets: ${buckets}`);
  // The observations drawn are the histograms' count increases: at least as many as the
  // requests the demo recorded in the window after the first report (rate × step).
  const rate = await api(`/api/v1/metrics/query_range?metric=app.request.duration&agg=rate&step=5m&${WINDOW}`);
  const increases = rate.series[0].points.reduce((n, p) => n + p.value * 300, 0);
  assert.ok(total >= Math.round(increases) - 1, `heatmap total ${total} vs rate increases ${increases}`);
  // The server computes the bucket increases with the engine rate uses, so they agree, and
  // what is drawn is the heatmap endpoint's answer.
  assert.ok(Math.abs(total - increases) < 0.5, `heatmap total ${total} vs rate increases ${increases}`);
  const answer = await api(`/api/v1/metrics/heatmap?metric=app.request.duration&step=5m&${WINDOW}`);
  const served = answer.columns.reduce((n, c) => n + c.counts.reduce((a, b) => a + b, 0), 0);
  assert.equal(total, served);
  assert.equal(buckets, answer.bounds.length);
  assert.equal(answer.bounds.at(-1), null, "the last bucket is +Inf");
  assert.equal(cells, answer.columns.reduce((n, c) => n + c.counts.filter((x) => x > 0).length, 0));
  // The canvas has coloured pixels.
  const coloured = await page.locator(".heatmap canvas").evaluate((c) => {
    const { data } = c.getContext("2d").getImageData(0, 0, c.width, c.height);
    let n = 0;
    for (let i = 0; i < data.length; i += 4) if (data[i + 2] > data[i] + 40) n++;
    return n;
  });
  assert.ok(coloured > 1000, `blue pixels: ${coloured}`);
  await done("metrics-heatmap");
});
