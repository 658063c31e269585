// The app shell: every page in the navigation loads without errors, the trace-ID box
// navigates, unknown paths say so, and hashed assets are cached (and sent gzipped) while
// the shell is not.
import { test } from "node:test";
import assert from "node:assert/strict";
import { BASE, FACTS, openPage } from "./harness.mjs";

test("navigation reaches every page without errors", async () => {
  const { page, done } = await openPage("/");
  assert.equal(new URL(page.url()).pathname, "/search");
  for (const label of ["Service map", "Latency", "Metrics", "SQL", "Search"]) {
    await page.getByRole("navigation", { name: "Main" }).getByRole("link", { name: label, exact: true }).click();
    await page.waitForLoadState("networkidle");
    const current = page.getByRole("navigation", { name: "Main" }).locator('[aria-current="page"]');
    assert.equal(await current.textContent(), label);
  }
  await done("shell");
});

test("the landing address draws the search page", async () => {
  // The address `weft up` prints. The page must draw the search form and the demo's data,
  // not only end on the right URL.
  const { page, done } = await openPage("/");
  await page.getByRole("heading", { name: "Search traces", level: 1 }).waitFor();
  await page.getByRole("button", { name: "Search", exact: true }).waitFor();
  // The service list is filled from the server: every demo service is offered.
  const service = page.locator("#search-service");
  await page.waitForFunction(
    (n) => document.querySelectorAll("#search-service option").length > n,
    FACTS.generated.services.length,
  );
  const offered = await service.locator("option").allTextContents();
  for (const name of FACTS.generated.services) assert.ok(offered.includes(name), `${name} offered: ${offered}`);
  // The default search (the last hour) ran and its answer is drawn: the demo data was sent
  // minutes ago, so there are rows, as many as the summary says.
  const summary = page.locator("#search-summary");
  await page.waitForFunction(() => (document.querySelector("#search-summary")?.textContent ?? "").trim() !== "");
  const text = (await summary.textContent()).trim();
  assert.match(text, /^\d+ traces?(, more available)?\.$/, text);
  const listed = await page.locator("table.search-results tbody tr").count();
  const n = Number(/^\d+/.exec(text)?.[0] ?? 0);
  assert.ok(n > 0, text);
  assert.equal(listed, n, `rows drawn vs "${text}"`);
  assert.match(await page.locator("table.search-results tbody tr").first().textContent(), /\S/);
  // The navigation marks Search as the current page.
  const current = page.getByRole("navigation", { name: "Main" }).locator('[aria-current="page"]');
  assert.equal(await current.textContent(), "Search");
  await done("shell-landing");
});

test("the trace-ID box opens the trace", async () => {
  const { page, done } = await openPage("/search");
  const id = FACTS.critical_trace.trace.id;
  await page.getByLabel("Trace ID").fill(id.toUpperCase());
  await page.getByLabel("Trace ID").press("Enter");
  await page.waitForURL(`**/trace/${id}`);
  await done("shell-trace-id-box");
});

test("an unknown page says so", async () => {
  const { page, done } = await openPage("/no-such-page");
  await page.getByRole("heading", { name: "Not found" }).waitFor();
  await done("shell-not-found");
});

test("hashed assets are immutable, the shell is revalidated", async () => {
  const shell = await fetch(`${BASE}/map`);
  assert.equal(shell.status, 200);
  assert.equal(shell.headers.get("cache-control"), "no-cache");
  const html = await shell.text();
  const script = /src="(\/assets\/[^"]+\.js)"/.exec(html)?.[1];
  assert.ok(script, html);
  const asset = await fetch(BASE + script);
  assert.equal(asset.status, 200);
  assert.match(asset.headers.get("cache-control") ?? "", /immutable/);
  assert.match(asset.headers.get("content-type") ?? "", /javascript/);
  // fetch asks for gzip and inflates: the precompressed copy is sent and decodes to JS.
  assert.equal(asset.headers.get("content-encoding"), "gzip");
  assert.match(await asset.text(), /\S/);
  const api = await fetch(`${BASE}/api/v1/no-such-endpoint`);
  assert.equal(api.status, 404);
});
