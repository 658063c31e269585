// The search page: the form's conditions reach the API and find the demo traces FACTS
// describes, results link to their traces (from the list and from the scatter plot), the
// URL reproduces a search, the server's 400 message is shown, and "Load more" pages on.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, FACTS, openPage } from "./harness.mjs";

const critical = FACTS.critical_trace.trace;
const sample = FACTS.generated.sample_trace;
// The critical trace is sent after the generated traffic (about 30 s before the load
// finished, while generated traffic ends about 5 minutes before it), so an hour past the
// end of the generated traffic covers it.
const allStart = FACTS.generated.start;
const allEnd = new Date(Date.parse(FACTS.generated.end) + 3600e3).toISOString();

const ROWS = "table.search-results tbody tr";
const POINTS = "figure.search-scatter a.point";
const rows = (page) => page.locator(ROWS);
const row = (page, id) => page.locator(`table.search-results tbody tr[data-trace-id="${id}"]`);
const points = (page) => page.locator(POINTS);

async function text(locator) {
  return (await locator.textContent()).trim();
}

/** The trace IDs in the results list, in order. */
async function listedIds(page) {
  return rows(page).evaluateAll((trs) => trs.map((tr) => tr.dataset.traceId));
}

/** Waits until the CSS selector matches exactly `n` elements. */
async function waitForCount(page, css, n) {
  await page.waitForFunction(([css, n]) => document.querySelectorAll(css).length === n, [css, n]);
}

/** Drops the one console message a deliberate `status` answer leaves, keeping any other. */
function expectFailedLoad(problems, status) {
  const i = problems.findIndex((p) => p.includes(`the server responded with a status of ${status} `));
  assert.ok(i >= 0, `expected a ${status} response in ${JSON.stringify(problems)}`);
  problems.splice(i, 1);
}

/** Picks an absolute range in the time-range picker (whole seconds, covering start..end). */
async function setAbsoluteRange(page, startIso, endIso) {
  await page.getByLabel("Range kind").selectOption("absolute");
  const [from, to] = await page.evaluate(
    ([s, e]) => {
      const local = (ms) => new Date(ms - new Date(ms).getTimezoneOffset() * 60000).toISOString().slice(0, 19);
      return [local(Math.floor(Date.parse(s) / 1000) * 1000), local(Math.ceil(Date.parse(e) / 1000) * 1000)];
    },
    [startIso, endIso],
  );
  await page.getByLabel("From", { exact: true }).fill(from);
  await page.getByLabel("To", { exact: true }).fill(to);
}

async function submit(page) {
  await page.getByRole("button", { name: "Search", exact: true }).click();
}

/** The search URL's query, for asserting what the page wrote. */
function urlParams(page) {
  return new URL(page.url()).searchParams;
}

test("service and status find the critical trace; its row shows the facts", async () => {
  const { page, done } = await openPage("/search");
  await setAbsoluteRange(page, allStart, allEnd);
  await page.getByLabel("Service", { exact: true }).selectOption("payments-db");
  await page.getByLabel("Status", { exact: true }).selectOption("error");
  const sent = page.waitForRequest((r) => r.url().includes("/api/v1/search") && r.url().includes("payments-db"));
  await submit(page);
  const api = new URL((await sent).url()).searchParams;
  assert.equal(api.get("service"), "payments-db");
  assert.equal(api.get("status"), "error");
  assert.equal(urlParams(page).get("service"), "payments-db");
  assert.equal(urlParams(page).get("status"), "error");

  const r = row(page, critical.id);
  await r.waitFor();
  assert.equal(await text(r.locator("td.spans")), String(critical.span_count));
  assert.equal(critical.span_count, 6);
  assert.equal(await text(r.locator(".root-operation")), critical.root_operation);
  assert.equal(await text(r.locator(".root-service")), critical.root_service);
  assert.equal(await text(r.locator("td.errors")), String(critical.error_spans));
  assert.match(await text(r.locator("td.services")), /payments-db/);
  await done("search-critical");
});

test("an attribute condition finds the trace, and the URL restores the condition", async () => {
  const { page, done } = await openPage("/search");
  const [spanName, key, value] = FACTS.critical_trace.attribute;
  assert.equal(spanName, "charge");
  await setAbsoluteRange(page, allStart, allEnd);
  await page.getByRole("button", { name: "Add condition" }).click();
  // The new row's key field takes focus, so the keyboard can go on typing.
  await page.keyboard.type(key);
  assert.equal(await page.getByLabel("Condition 1 key").inputValue(), key);
  await page.getByLabel("Condition 1 operator").selectOption("=");
  await page.getByLabel("Condition 1 value").fill(value);
  await submit(page);
  assert.deepEqual(urlParams(page).getAll("attr"), [`${key}=${value}`]);
  await row(page, critical.id).waitFor();
  assert.deepEqual(await listedIds(page), [critical.id], "only the critical trace has this attribute");

  // The shared URL rebuilds the form and the results.
  const { page: again, done: doneAgain } = await openPage(new URL(page.url()).pathname + new URL(page.url()).search);
  await row(again, critical.id).waitFor();
  assert.equal(await again.getByLabel("Condition 1 key").inputValue(), key);
  assert.equal(await again.getByLabel("Condition 1 value").inputValue(), value);
  assert.equal(await again.getByLabel("Condition 1 operator").inputValue(), "=");
  await doneAgain("search-attr-reloaded");
  await done("search-attr");
});

test("the generated sample trace is found over an absolute range; a shared URL reproduces the results", async () => {
  const { page, done } = await openPage("/search");
  await setAbsoluteRange(page, FACTS.generated.start, FACTS.generated.end);
  await page.getByLabel("Service", { exact: true }).selectOption(sample.root_service);
  await page.getByLabel("Operation", { exact: true }).selectOption(sample.root_operation);
  await page.getByLabel("Limit", { exact: true }).fill("500");
  await submit(page);
  const p = urlParams(page);
  assert.equal(p.get("service"), sample.root_service);
  assert.equal(p.get("operation"), sample.root_operation);
  assert.equal(p.get("limit"), "500");
  assert.ok(Date.parse(p.get("start")) <= Date.parse(FACTS.generated.start));
  assert.ok(Date.parse(p.get("end")) >= Date.parse(FACTS.generated.end));

  const r = row(page, sample.id);
  await r.waitFor();
  assert.equal(await text(r.locator("td.spans")), String(sample.span_count));
  assert.equal(await text(r.locator("td.errors")), String(sample.error_spans));
  assert.equal(await text(r.locator(".root-service")), sample.root_service);
  assert.equal(await text(r.locator(".root-operation")), sample.root_operation);
  const ids = await listedIds(page);
  assert.equal(new Set(ids).size, ids.length);
  await waitForCount(page, POINTS, ids.length);

  // Reloading the address reproduces the same list.
  const shared = new URL(page.url());
  const { page: again, done: doneAgain } = await openPage(shared.pathname + shared.search);
  await row(again, sample.id).waitFor();
  assert.deepEqual(await listedIds(again), ids);
  assert.equal(await again.getByLabel("Service", { exact: true }).inputValue(), sample.root_service);
  assert.equal(await again.getByLabel("Operation", { exact: true }).inputValue(), sample.root_operation);
  await doneAgain("search-sample-reloaded");

  // Clicking the result opens its trace.
  await r.getByRole("link").click();
  await page.waitForURL(`**/trace/${sample.id}`);
  // Back returns to the same search.
  await page.goBack();
  await row(page, sample.id).waitFor();
  assert.equal(new URL(page.url()).search, shared.search);
  await done("search-sample");
});

test("the scatter plot has one point per result, and a point opens its trace", async () => {
  const q = new URLSearchParams({ start: allStart, end: allEnd, limit: "30" });
  const { page, done } = await openPage(`/search?${q}`);
  await waitForCount(page, ROWS, 30);
  await waitForCount(page, POINTS, 30);
  const pointIds = await points(page).evaluateAll((as) => as.map((a) => a.dataset.traceId));
  assert.deepEqual([...pointIds].sort(), [...(await listedIds(page))].sort());
  for (const a of await points(page).all()) {
    assert.equal(await a.getAttribute("href"), `/trace/${await a.getAttribute("data-trace-id")}`);
  }

  // Keyboard: the plot is one tab stop; arrows move along it and Enter opens the trace.
  await points(page).first().focus();
  await page.keyboard.press("ArrowRight");
  const focused = await page.evaluate(() => document.activeElement?.getAttribute("data-trace-id"));
  assert.equal(focused, pointIds[1]);
  await page.keyboard.press("Enter");
  await page.waitForURL(`**/trace/${focused}`);
  await page.goBack();
  await waitForCount(page, POINTS, 30);
  await done("search-scatter-keyboard");

  // Mouse: with the critical trace as the only result, its point is unobstructed.
  const one = new URLSearchParams({ start: allStart, end: allEnd, service: "payments-db", status: "error" });
  const { page: p2, done: done2 } = await openPage(`/search?${one}`);
  await row(p2, critical.id).waitFor();
  await waitForCount(p2, POINTS, 1);
  await p2.locator(`figure.search-scatter a.point[data-trace-id="${critical.id}"]`).click();
  await p2.waitForURL(`**/trace/${critical.id}`);
  await done2("search-scatter-click");
});

test("an invalid duration shows the server's error and the next search still works", async () => {
  const { page, done, problems } = await openPage("/search");
  await setAbsoluteRange(page, allStart, allEnd);
  await page.getByLabel("Service", { exact: true }).selectOption("payments-db");
  await page.getByLabel("Min duration").fill("abc");
  await submit(page);
  const alert = page.locator("main").getByRole("alert");
  await alert.waitFor();
  const message = await text(alert);
  assert.match(message, /^400: /);
  assert.match(message, /min_duration: "abc" is not a duration/);
  assert.equal(await rows(page).count(), 0);
  // Chromium logs the refused request; it is the answer this test asks for.
  expectFailedLoad(problems, 400);

  // Fix it: db.query in the critical trace runs 60 ms, so "1ms" keeps it.
  await page.getByLabel("Min duration").fill("1ms");
  await submit(page);
  await row(page, critical.id).waitFor();
  assert.equal(await alert.count(), 0);
  assert.equal(urlParams(page).get("min_duration"), "1ms");
  // And a maximum below it excludes it.
  await page.getByLabel("Max duration").fill("2ms");
  await submit(page);
  await page.getByText("No traces match.").waitFor();
  assert.equal(await rows(page).count(), 0);
  await done("search-invalid-duration");
});

test("Load more appends the next page without duplicates; the list is keyboard navigable", async () => {
  const q = new URLSearchParams({ start: FACTS.generated.start, end: FACTS.generated.end, limit: "7" });
  const { page, done } = await openPage(`/search?${q}`);
  await waitForCount(page, ROWS, 7);
  const first = await listedIds(page);
  await page.getByRole("button", { name: "Load more" }).click();
  await waitForCount(page, ROWS, 14);
  const both = await listedIds(page);
  assert.deepEqual(both.slice(0, 7), first);
  assert.equal(new Set(both).size, 14, "no trace appears twice");
  await waitForCount(page, POINTS, 14);

  // The two pages are what one 14-trace page of the same search holds.
  const res = await fetch(`${BASE}/api/v1/search?${new URLSearchParams({ start: FACTS.generated.start, end: FACTS.generated.end, limit: "14" })}`);
  const expected = (await res.json()).traces.map((t) => t.trace_id);
  assert.deepEqual(both, expected);

  // Up/Down move between the results' links.
  const links = rows(page).locator("a.trace-link");
  await links.first().focus();
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowDown");
  assert.equal(await page.evaluate(() => document.activeElement?.closest("tr")?.dataset.traceId), both[2]);
  await page.keyboard.press("End");
  assert.equal(await page.evaluate(() => document.activeElement?.closest("tr")?.dataset.traceId), both[13]);
  await page.keyboard.press("Enter");
  await page.waitForURL(`**/trace/${both[13]}`);
  // Back runs the search in the URL again: its first page.
  await page.goBack();
  await waitForCount(page, ROWS, 7);
  assert.deepEqual(await listedIds(page), first);
  await done("search-load-more");
});
