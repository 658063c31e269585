// The trace view: the span tree, the critical path, errors, the span detail panel, keyboard
// use, and the 50,000-span trace (virtualised rows, scrolling, collapsing, search within the
// trace, JSON download). Timing figures are printed, never asserted.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFile } from "node:fs/promises";
import { BASE, FACTS, openPage } from "./harness.mjs";

const CRIT = FACTS.critical_trace;
const BIG = FACTS.big_trace;

const rows = (page) => page.locator(".span-row");
const row = (page, name) => page.locator(`.span-row[data-name="${name}"]`);
const detail = (page) => page.locator("aside.span-detail");

async function fetchTrace(id) {
  const res = await fetch(`${BASE}/api/v1/traces/${id}`);
  assert.equal(res.status, 200);
  return res.json();
}

function flatSpans(body) {
  const out = [];
  for (const rs of body.resourceSpans ?? []) {
    const service = rs.resource?.attributes?.find((a) => a.key === "service.name")?.value?.stringValue ?? "";
    for (const ss of rs.scopeSpans ?? []) for (const s of ss.spans ?? []) out.push({ ...s, service });
  }
  return out;
}

/** The browser logs the refused lookup itself; that one console error is expected. */
function expectRefused(problems, status) {
  const i = problems.findIndex((p) => p.includes(`status of ${status}`));
  if (i >= 0) problems.splice(i, 1);
}

/** Nanoseconds as BigInt: unix nanos do not fit a double exactly. */
const ns = (s) => BigInt(s);

/**
 * Reference critical path (Jaeger UI's algorithm, recursive): from a span's end, take the
 * child finishing last at or before the cursor, recurse into it, move the cursor to its
 * start; children are clipped to the parent's window.
 */
function referenceCriticalPath(spans) {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const kids = new Map();
  let root;
  for (const s of spans) {
    if (s.parentSpanId && byId.has(s.parentSpanId)) {
      if (!kids.has(s.parentSpanId)) kids.set(s.parentSpanId, []);
      kids.get(s.parentSpanId).push(s);
    } else root ??= s;
  }
  const onPath = new Set();
  const walk = (span, lo, hi) => {
    onPath.add(span.name);
    let cursor = hi;
    const children = (kids.get(span.spanId) ?? [])
      .map((c) => ({
        c,
        s: ns(c.startTimeUnixNano) > lo ? ns(c.startTimeUnixNano) : lo,
        e: ns(c.endTimeUnixNano) < hi ? ns(c.endTimeUnixNano) : hi,
      }))
      .filter((k) => k.s <= hi && k.e >= lo);
    for (;;) {
      let best;
      for (const k of children) if (k.e <= cursor && !k.used && (!best || k.e > best.e)) best = k;
      if (!best) return;
      best.used = true;
      walk(best.c, best.s, best.e);
      cursor = best.s;
    }
  };
  walk(root, ns(root.startTimeUnixNano), ns(root.endTimeUnixNano));
  return onPath;
}

test("critical trace: tree, critical path and error marking", async () => {
  const { page, done } = await openPage(`/trace/${CRIT.trace.id}`);
  await row(page, CRIT.trace.root_operation).waitFor();
  assert.equal(await rows(page).count(), CRIT.trace.span_count);
  await page.getByRole("heading", { level: 1, name: `${CRIT.trace.root_service}: ${CRIT.trace.root_operation}` }).waitFor();

  const marked = await page.locator('.span-row[data-critical="true"]').evaluateAll((els) => els.map((e) => e.dataset.name));
  const expected = referenceCriticalPath(flatSpans(await fetchTrace(CRIT.trace.id)));
  assert.deepEqual([...marked].sort(), [...expected].sort(), "the marked rows follow the standard algorithm");
  for (const name of CRIT.critical_path) assert.ok(marked.includes(name), `${name} is on the critical path`);
  for (const name of CRIT.off_path) {
    if (!expected.has(name)) assert.ok(!marked.includes(name), `${name} is off the critical path`);
  }

  const [errName, errMessage] = CRIT.error;
  const errRow = row(page, errName);
  assert.equal(await errRow.getAttribute("data-error"), "true");
  await errRow.getByRole("img", { name: "error" }).waitFor();
  assert.equal(await page.locator('.span-row[data-error="true"]').count(), CRIT.trace.error_spans);
  await errRow.click();
  await detail(page).getByRole("heading", { name: errName }).waitFor();
  await detail(page).getByText(errMessage).waitFor();
  assert.match(await detail(page).getByTestId("span-status").textContent(), /Error/);
  await done("trace-critical");
});

test("demo facts agree with the standard critical-path algorithm", async () => {
  const expected = referenceCriticalPath(flatSpans(await fetchTrace(CRIT.trace.id)));
  assert.deepEqual([...expected].sort(), [...CRIT.critical_path].sort());
  for (const name of CRIT.off_path) assert.ok(!expected.has(name), `${name} is off the path`);
});

test("critical trace: span details, events and links", async () => {
  const { page, done } = await openPage(`/trace/${CRIT.trace.id}`);
  const [spanName, key, value] = CRIT.attribute;
  await row(page, spanName).click();
  const panel = detail(page);
  await panel.getByRole("heading", { name: spanName }).waitFor();
  const attr = panel.getByRole("table", { name: "Span attributes" }).getByRole("row", { name: key });
  assert.equal(await attr.locator("td").textContent(), value);
  const [eventName, offsetNs] = CRIT.event;
  const event = panel.locator(".event", { hasText: eventName });
  const shown = await event.locator(".event-time").textContent();
  const m = /^\+([\d.]+) ms$/.exec(shown);
  assert.ok(m, `event time ${shown}`);
  assert.ok(Math.abs(Number(m[1]) * 1e6 - offsetNs) < 1e5, `event at ${shown}, expected +${offsetNs / 1e6} ms`);
  assert.match(await panel.textContent(), /payment-svc/);
  assert.match(await panel.textContent(), /client/);
  assert.equal(new URL(page.url()).searchParams.get("span"), await row(page, spanName).getAttribute("data-span-id"));

  await panel.getByRole("link", { name: `trace ${CRIT.link_to}` }).click();
  await page.waitForURL((u) => u.pathname === `/trace/${CRIT.link_to}`);
  if (FACTS.generated?.sample_trace?.id === CRIT.link_to) {
    await page.getByText(`${FACTS.generated.sample_trace.span_count} spans`).waitFor();
    assert.equal(await rows(page).count(), FACTS.generated.sample_trace.span_count);
  } else {
    await rows(page).first().waitFor();
  }
  await done("trace-detail");
});

test("critical trace: keyboard selection, collapsing and details", async () => {
  const { page, done } = await openPage(`/trace/${CRIT.trace.id}`);
  const tree = page.getByRole("tree", { name: "Spans" });
  await row(page, CRIT.trace.root_operation).waitFor();
  await tree.focus();
  const selectedName = () => page.locator('.span-row[aria-selected="true"]').getAttribute("data-name");
  assert.equal(await selectedName(), CRIT.trace.root_operation);
  const order = await rows(page).evaluateAll((els) => els.map((e) => e.dataset.name));
  await page.keyboard.press("ArrowDown");
  assert.equal(await selectedName(), order[1]);
  await page.keyboard.press("ArrowDown");
  assert.equal(await selectedName(), order[2]);
  await page.keyboard.press("ArrowUp");
  assert.equal(await selectedName(), order[1]);
  // Down to "charge", which has children: left collapses, right expands.
  while ((await selectedName()) !== "charge") await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowLeft");
  await page.waitForFunction(() => document.querySelectorAll(".span-row").length === 4);
  assert.equal(await row(page, "charge").getAttribute("aria-expanded"), "false");
  await page.keyboard.press("ArrowRight");
  await page.waitForFunction((n) => document.querySelectorAll(".span-row").length === n, CRIT.trace.span_count);
  await page.keyboard.press("Enter");
  await detail(page).getByRole("heading", { name: "charge" }).waitFor();
  await page.keyboard.press("ArrowLeft"); // expanded: collapses
  await page.keyboard.press("ArrowLeft"); // collapsed: goes to the parent
  assert.equal(await selectedName(), CRIT.trace.root_operation);
  await page.keyboard.press(" ");
  await detail(page).getByRole("heading", { name: CRIT.trace.root_operation }).waitFor();
  await done("trace-keyboard");
});

test("big trace: header, virtualised rows, scrolling, collapsing", async () => {
  const { page, done } = await openPage(`/trace/${BIG.id}`);
  await page.getByText(`${BIG.span_count.toLocaleString("en-US")} spans`).waitFor();
  await row(page, BIG.root_operation).first().waitFor();
  const drawn = await page.evaluate(() => performance.getEntriesByName("weft:trace-drawn")[0]?.startTime);
  assert.ok(drawn > 0, "weft:trace-drawn is marked");
  console.log(`FIGURE big trace (${BIG.span_count} spans): navigation start → weft:trace-drawn = ${drawn.toFixed(0)} ms`);
  assert.ok((await rows(page).count()) < 300, "only rows in view are in the DOM");
  assert.match(await page.locator(".trace-facts").textContent(), new RegExp(`${BIG.error_spans}\\s*errors`));

  // Frames per second over a bounded scripted scroll.
  const tree = page.getByRole("tree", { name: "Spans" });
  const box = await tree.boundingBox();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height / 2);
  await page.evaluate(() => {
    const w = window;
    w.__frames = 0;
    w.__t0 = performance.now();
    w.__counting = true;
    const tick = () => {
      if (!w.__counting) return;
      w.__frames++;
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  for (let k = 0; k < 60; k++) await page.mouse.wheel(0, 400);
  const fps = await page.evaluate(
    () =>
      new Promise((resolve) =>
        requestAnimationFrame(() => {
          const w = window;
          w.__counting = false;
          resolve({ frames: w.__frames, ms: performance.now() - w.__t0, top: document.querySelector(".wf-scroll").scrollTop });
        }),
      ),
  );
  assert.ok(fps.top > 0, "the wheel scrolled the waterfall");
  console.log(
    `FIGURE big trace scroll: ${fps.frames} frames in ${fps.ms.toFixed(0)} ms over 60 wheel steps = ${((fps.frames * 1000) / fps.ms).toFixed(1)} fps`,
  );
  assert.ok((await rows(page).count()) < 300, "still virtualised after scrolling");

  // The end of the list.
  await tree.evaluate((el) => {
    el.scrollTop = el.scrollHeight;
  });
  await page.locator(`.span-row[data-row="${BIG.span_count - 1}"]`).waitFor();
  assert.ok((await rows(page).count()) < 300);

  // The minimap: a click scrolls there, a sideways drag zooms the time axis.
  const minimap = page.locator(".minimap");
  const mbox = await minimap.boundingBox();
  await tree.evaluate((el) => {
    el.scrollTop = 0;
  });
  await page.waitForFunction(() => document.querySelector(".wf-scroll").scrollTop === 0);
  await page.mouse.click(mbox.x + mbox.width / 2, mbox.y + mbox.height * 0.5);
  await page.waitForFunction(() => document.querySelector(".wf-scroll").scrollTop > 0);
  const half = await tree.evaluate((el) => el.scrollTop / el.scrollHeight);
  assert.ok(half > 0.4 && half < 0.6, `minimap click scrolled to ${half}`);
  const zoomReset = page.getByRole("button", { name: "Reset zoom" });
  assert.ok(await zoomReset.isDisabled());
  await page.mouse.move(mbox.x + mbox.width * 0.25, mbox.y + 10);
  await page.mouse.down();
  await page.mouse.move(mbox.x + mbox.width * 0.4, mbox.y + 12, { steps: 5 });
  await page.mouse.move(mbox.x + mbox.width * 0.5, mbox.y + 12, { steps: 5 });
  await page.mouse.up();
  await page.locator("button:enabled", { hasText: "Reset zoom" }).waitFor();
  const ticks = await page.locator(".wf-axis .wf-tick").allTextContents();
  assert.notEqual(ticks[0], "0 ns", `zoomed axis starts later: ${ticks.join(", ")}`);
  await zoomReset.click();
  await page.locator(".wf-axis .wf-tick", { hasText: /^0 ns$/ }).waitFor();

  // Back to the top; collapsing the root leaves one row.
  await tree.evaluate((el) => {
    el.scrollTop = 0;
  });
  const root = row(page, BIG.root_operation).first();
  await root.getByRole("button", { name: /^Collapse / }).click();
  await page.waitForFunction(() => document.querySelectorAll(".span-row").length === 1);
  assert.equal(await root.getAttribute("aria-expanded"), "false");
  await root.getByRole("button", { name: /^Expand / }).click();
  await page.waitForFunction(() => document.querySelectorAll(".span-row").length > 1);
  await done("trace-big");
});

test("big trace: search within the trace and JSON download", async () => {
  const body = await fetchTrace(BIG.id);
  const spans = flatSpans(body);
  assert.equal(spans.length, BIG.span_count);
  const q = "4999";
  const hay = (s) => [s.name, s.service, ...(s.attributes ?? []).flatMap((a) => [a.key, Object.values(a.value ?? {})[0]])];
  const expected = spans.filter((s) => hay(s).some((t) => String(t ?? "").toLowerCase().includes(q))).length;
  assert.ok(expected > 0);

  const { page, done } = await openPage(`/trace/${BIG.id}`);
  await row(page, BIG.root_operation).first().waitFor();
  const find = page.getByLabel("Find in trace");
  await find.fill(q);
  const count = page.getByTestId("search-count");
  await page.waitForFunction((n) => document.querySelector('[data-testid="search-count"]')?.textContent === `1 of ${n}`, expected.toLocaleString("en-US"));
  assert.equal(await count.textContent(), `1 of ${expected.toLocaleString("en-US")}`);
  const current = page.locator(".span-row.current-match");
  await current.waitFor();
  const first = await current.getAttribute("data-span-id");
  await page.getByRole("button", { name: "Next match" }).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="search-count"]')?.textContent.startsWith("2 of"));
  assert.notEqual(await current.getAttribute("data-span-id"), first);
  assert.equal(await current.getAttribute("data-match"), "true");
  await page.getByRole("button", { name: "Previous match" }).click();
  await page.waitForFunction(() => document.querySelector('[data-testid="search-count"]')?.textContent.startsWith("1 of"));
  assert.equal(await current.getAttribute("data-span-id"), first);
  await find.press("Shift+Enter"); // wraps to the last match
  await page.waitForFunction((n) => document.querySelector('[data-testid="search-count"]')?.textContent === `${n} of ${n}`, expected.toLocaleString("en-US"));

  const [download] = await Promise.all([page.waitForEvent("download"), page.getByRole("button", { name: "Download JSON" }).click()]);
  const saved = JSON.parse(await readFile(await download.path(), "utf8"));
  assert.equal(flatSpans(saved).length, BIG.span_count);
  assert.equal(download.suggestedFilename(), `trace-${BIG.id}.json`);
  await done("trace-big-search");
});

test("an unknown trace says it was not found", async () => {
  const { page, done, problems } = await openPage("/trace/0123456789abcdef0123456789abcdef");
  await page.getByRole("heading", { name: "Trace not found" }).waitFor();
  await page.getByRole("alert").getByText(/not found/).waitFor();
  expectRefused(problems, 404);
  await done("trace-not-found");
});

test("a malformed trace ID is refused", async () => {
  const { page, done, problems } = await openPage("/trace/not-a-trace-id");
  await page.getByRole("heading", { name: "Not a valid trace ID" }).waitFor();
  expectRefused(problems, 400);
  await done("trace-malformed");
});
