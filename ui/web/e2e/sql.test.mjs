// SQL console: runs queries (Ctrl+Enter), shows rows in the server's column order, sorts,
// paginates, downloads CSV, shows refusals with their status and stays usable, draws
// charts, keeps the query in the URL, and lists the schema.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { BASE, FACTS, openPage } from "./harness.mjs";

const CRITICAL = FACTS.critical_trace;
const CRITICAL_SQL =
  "SELECT span_name, service_name, hex_id(span_id) AS span_id, duration_ns\n" +
  `FROM spans WHERE trace_id = trace_id_from_hex('${CRITICAL.trace.id}')\nORDER BY span_id`;
const CRITICAL_NAMES = [...CRITICAL.critical_path, ...CRITICAL.off_path].sort();

/** Types `sql` into the editor, runs it with Ctrl+Enter and waits until it has finished. */
async function runQuery(page, sql) {
  const result = page.locator(".sql-result");
  const before = Number(await result.getAttribute("data-finished"));
  const editor = page.getByLabel("Query", { exact: true });
  await editor.fill(sql);
  await editor.press("Control+Enter");
  await page.locator(`.sql-result[data-finished="${before + 1}"]`).waitFor();
}

/** The row count of the result shown. */
async function rowCount(page) {
  const count = page.locator(".row-count");
  await count.waitFor();
  return Number(await count.getAttribute("data-rows"));
}

async function headers(page) {
  return page.locator(".sql-table thead th .col-name").allTextContents();
}

async function column(page, name) {
  const index = (await headers(page)).indexOf(name);
  assert.ok(index >= 0, `column ${name}`);
  return page.locator(`.sql-table tbody tr td:nth-child(${index + 1})`).allTextContents();
}

test("the critical trace's spans: 6 rows in select order, sortable by a header", async () => {
  const { page, done } = await openPage("/sql");
  await runQuery(page, CRITICAL_SQL);
  assert.equal(await rowCount(page), CRITICAL.trace.span_count);
  await page.getByText(`${CRITICAL.trace.span_count} rows`).waitFor();
  assert.deepEqual(await headers(page), ["span_name", "service_name", "span_id", "duration_ns"]);
  assert.deepEqual((await column(page, "span_name")).sort(), CRITICAL_NAMES);
  // Ordered by span_id: the root (span 1) first.
  assert.equal((await column(page, "span_name"))[0], CRITICAL.trace.root_operation);

  const header = page.locator(".sql-table thead th").filter({ has: page.locator(".col-name", { hasText: "duration_ns" }) });
  await header.getByRole("button").click();
  assert.equal(await header.getAttribute("aria-sort"), "ascending");
  let durations = (await column(page, "duration_ns")).map(Number);
  assert.deepEqual(durations, [...durations].sort((a, b) => a - b));
  await header.getByRole("button").click();
  assert.equal(await header.getAttribute("aria-sort"), "descending");
  durations = (await column(page, "duration_ns")).map(Number);
  assert.deepEqual(durations, [...durations].sort((a, b) => b - a));
  assert.equal((await column(page, "span_name"))[0], CRITICAL.trace.root_operation, "the root lasts longest");

  const byName = page.locator(".sql-table thead th").filter({ has: page.locator(".col-name", { hasText: "span_name" }) });
  await byName.getByRole("button").click();
  // Text sorts by locale (case-insensitive first), as people read it.
  assert.deepEqual(await column(page, "span_name"), [...CRITICAL_NAMES].sort((a, b) => a.localeCompare(b)));
  await done("sql-critical-trace");
});

test("columns follow the server's schema, including an all-null one", async () => {
  const res = await fetch(`${BASE}/api/v1/sql`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ sql: "SELECT 2 AS b, CAST(NULL AS DOUBLE) AS nothing, 'x' AS a" }),
  });
  const schema = JSON.parse(decodeURIComponent(res.headers.get("x-weft-columns") ?? "null"));
  assert.deepEqual(schema, [
    { name: "b", type: "Int64" },
    { name: "nothing", type: "Float64" },
    { name: "a", type: "Utf8" },
  ]);
  const { page, done } = await openPage("/sql");
  await runQuery(page, "SELECT 2 AS b, CAST(NULL AS DOUBLE) AS nothing, 'x' AS a");
  assert.equal(await rowCount(page), 1);
  assert.deepEqual(await headers(page), ["b", "nothing", "a"]);
  assert.deepEqual(await page.locator(".sql-table tbody td").allTextContents(), ["2", "NULL", "x"]);
  await done("sql-schema-columns");
});

test("a bigger result is paginated", async () => {
  const { page, done } = await openPage("/sql");
  await runQuery(page, "SELECT value AS n, value * 2 AS twice FROM generate_series(1, 250)");
  assert.equal(await rowCount(page), 250);
  await page.getByText("250 rows").waitFor();
  const pager = page.getByRole("navigation", { name: "Result pages" });
  await pager.getByText("Page 1 of 3").waitFor();
  assert.equal(await page.locator(".sql-table tbody tr").count(), 100);
  await pager.getByRole("button", { name: "Next" }).click();
  await pager.getByText("Page 2 of 3").waitFor();
  const n = await column(page, "n");
  assert.equal(n.length, 100);
  assert.equal(n[0], "101");
  assert.equal(n[99], "200");
  await pager.getByRole("button", { name: "Last page" }).click();
  await pager.getByText("Page 3 of 3").waitFor();
  assert.equal(await page.locator(".sql-table tbody tr").count(), 50);
  await done("sql-pagination");
});

test("the CSV download holds the rows shown", async () => {
  const { page, done } = await openPage("/sql");
  await runQuery(page, CRITICAL_SQL);
  assert.equal(await rowCount(page), 6);
  const [download] = await Promise.all([
    page.waitForEvent("download"),
    page.getByRole("button", { name: "Download CSV" }).click(),
  ]);
  assert.match(download.suggestedFilename(), /\.csv$/);
  const text = await readFile(await download.path(), "utf8");
  const lines = text.trim().split("\n");
  assert.equal(lines[0], "span_name,service_name,span_id,duration_ns");
  const shown = await page.locator(".sql-table tbody tr").evaluateAll((trs) =>
    trs.map((tr) => [...tr.querySelectorAll("td")].map((td) => td.textContent).join(",")),
  );
  assert.deepEqual(lines.slice(1), shown);
  await done("sql-csv");
});

test("DROP TABLE is refused with the server's 403 message and the console stays usable", async () => {
  const { page, done, problems } = await openPage("/sql");
  await runQuery(page, "DROP TABLE spans");
  const alert = page.getByRole("alert");
  await alert.waitFor();
  assert.equal(await alert.getAttribute("data-status"), "403");
  const text = await alert.textContent();
  assert.match(text, /403/);
  assert.match(text, /read-only/);
  assert.match(text, /DropTable|DDL/, "the server's own message is shown");
  // The editor keeps the statement; the next query works.
  assert.equal(await page.getByLabel("Query", { exact: true }).inputValue(), "DROP TABLE spans");
  await runQuery(page, "SELECT 1 AS one");
  assert.equal(await rowCount(page), 1);
  assert.equal(await page.getByRole("alert").count(), 0);
  // Bad SQL: 400 with the parser's message.
  await runQuery(page, "SELEC 1");
  await page.locator('.sql-error[data-status="400"]').waitFor();
  assert.match(await page.getByRole("alert").textContent(), /SELEC/);
  // Chromium logs every non-2xx fetch as a console error: those two were expected.
  const expected = /status of (403|400) \(/;
  const unexpected = problems.filter((p) => !expected.test(p));
  problems.splice(0, problems.length, ...unexpected);
  await done("sql-refused");
});

test("a GROUP BY query is drawn as bars, a time series as lines", async () => {
  const { page, done } = await openPage("/sql");
  await runQuery(
    page,
    "SELECT service_name, count(*) AS spans FROM spans\n" +
      `WHERE trace_id = trace_id_from_hex('${CRITICAL.trace.id}')\nGROUP BY service_name ORDER BY spans DESC, service_name`,
  );
  assert.equal(await rowCount(page), 4);
  await page.getByRole("button", { name: "Chart" }).click();
  await page.waitForURL(/view=chart/);
  const bars = page.locator('.sql-chart-plot[data-kind="bars"]');
  await bars.waitFor();
  assert.equal(await bars.locator("rect").count(), 4);
  const labels = await bars.locator("g.bar > text:first-of-type").allTextContents();
  assert.deepEqual(labels.slice(0, 2).sort(), ["payment-svc", "shop-web"]);

  await runQuery(
    page,
    "SELECT date_trunc('minute', start_time) AS minute, service_name, count(*) AS spans FROM spans\n" +
      `WHERE start_time >= '${FACTS.generated.start}' AND start_time <= '${FACTS.generated.end}'\nGROUP BY 1, 2 ORDER BY 1`,
  );
  const lines = page.locator('.sql-chart-plot[data-kind="time"]');
  await lines.waitFor();
  assert.equal(await lines.getAttribute("data-series-count"), "1");
  await page.getByLabel("Split by").selectOption("service_name");
  await page.waitForURL(/split=service_name/);
  await page.locator('.sql-chart-plot[data-kind="time"]:not([data-series-count="1"])').waitFor();
  const series = Number(await lines.getAttribute("data-series-count"));
  assert.ok(series >= FACTS.generated.services.length - 2, `series per service: ${series}`);
  await lines.locator("canvas").first().waitFor();
  await done("sql-chart");
});

test("the URL carries the query: a reload runs it again", async () => {
  const { page, done } = await openPage("/sql");
  await runQuery(page, CRITICAL_SQL);
  assert.equal(await rowCount(page), 6);
  const url = new URL(page.url());
  assert.equal(url.searchParams.get("q"), CRITICAL_SQL);
  await page.reload({ waitUntil: "networkidle" });
  await page.locator('.sql-result[data-finished="1"]').waitFor();
  assert.equal(await rowCount(page), 6);
  assert.equal(await page.getByLabel("Query", { exact: true }).inputValue(), CRITICAL_SQL);
  assert.deepEqual((await column(page, "span_name")).sort(), CRITICAL_NAMES);
  // An example loads into the editor.
  await page.getByText("Examples").click();
  await page.getByRole("button", { name: "Errors by service" }).click();
  assert.match(await page.getByLabel("Query", { exact: true }).inputValue(), /status_code = 2/);
  await done("sql-url");
});

test("the schema sidebar lists tables and views with typed columns and inserts names", async () => {
  const { page, done } = await openPage("/sql");
  const sidebar = page.getByRole("complementary", { name: "Schema" });
  for (const [table, columns] of [
    ["spans", ["trace_id", "span_name", "start_time", "duration_ns"]],
    ["metrics", ["metric_name", "time", "bucket_counts"]],
  ]) {
    // exact: `metrics` must not also match `metrics_1m` / `metrics_1h`.
    await sidebar.getByRole("button", { name: `Show columns of ${table}`, exact: true }).click();
    const list = sidebar.getByRole("list", { name: `Columns of ${table}`, exact: true });
    await list.waitFor();
    const names = await list.locator(".schema-name").allTextContents();
    for (const c of columns) assert.ok(names.includes(c), `${table}.${c} listed`);
  }
  const types = await sidebar.getByRole("list", { name: "Columns of spans", exact: true }).locator(".schema-type").allTextContents();
  assert.ok(types.includes("Timestamp") && types.includes("Int64"), types.join(","));
  assert.ok(await sidebar.locator('[data-table="traces"]').getByText("view").isVisible());

  const editor = page.getByLabel("Query", { exact: true });
  await editor.fill("SELECT  FROM ");
  await editor.evaluate((el) => el.setSelectionRange(7, 7));
  await sidebar.getByRole("list", { name: "Columns of spans", exact: true }).getByRole("button", { name: "span_name" }).click();
  await editor.press("End");
  await sidebar.locator('[data-table="spans"] .schema-table').getByRole("button", { name: "spans", exact: true }).click();
  assert.equal(await editor.inputValue(), "SELECT span_name FROM spans");
  await editor.press("End");
  await editor.pressSequentially(" LIMIT 3");
  await runQuery(page, await editor.inputValue());
  assert.equal(await rowCount(page), 3);
  await done("sql-schema");
});
