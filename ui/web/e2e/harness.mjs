// Shared set-up for the viewer's end-to-end tests: headless Chromium (the system's, driven by
// playwright-core) against a running Weft loaded with the demo dataset.
//
//   WEFT_URL            the viewer's origin, e.g. http://127.0.0.1:3200 (required)
//   WEFT_FACTS          JSON written by `weft-demo-data` / weft_load_test::demo (required)
//   WEFT_E2E_ARTIFACTS  where screenshots go (default ui/web/e2e-artifacts; not committed)
//   CHROMIUM            browser binary (default /usr/bin/chromium)
//
// Every page opened through `openPage` fails its test on a console error, an uncaught
// exception, a failed request, or any request to another origin.
import { after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set: run the viewer tests through \`cargo test -p weft --test e2e ui\``);
  return value;
}

export const BASE = required("WEFT_URL").replace(/\/$/, "");
export const FACTS = JSON.parse(readFileSync(required("WEFT_FACTS"), "utf8"));
export const ARTIFACTS = process.env.WEFT_E2E_ARTIFACTS ?? new URL("../e2e-artifacts", import.meta.url).pathname;
mkdirSync(ARTIFACTS, { recursive: true });

let browserPromise;
function browser() {
  browserPromise ??= chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    // Without the background-networking flags Chromium tries to reach Google's hosts,
    // which a closed network refuses.
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  return browserPromise;
}

after(async () => {
  if (browserPromise) await (await browserPromise).close();
});

/**
 * Opens `path` on the viewer in a fresh browser context and waits for the network to go
 * quiet. Returns the page and `done(name)`, which saves a screenshot as `<name>.png`,
 * asserts nothing went wrong on the page, and closes it.
 */
export async function openPage(path, { width = 1400, height = 900 } = {}) {
  const context = await (await browser()).newContext({ viewport: { width, height } });
  const page = await context.newPage();
  const problems = [];
  const origin = new URL(BASE).origin;
  page.on("console", (msg) => {
    if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
  });
  page.on("pageerror", (err) => problems.push(`uncaught: ${err.message}`));
  page.on("request", (req) => {
    const url = new URL(req.url());
    if (!["data:", "blob:"].includes(url.protocol) && url.origin !== origin) {
      problems.push(`request to another origin: ${req.url()}`);
    }
  });
  page.on("requestfailed", (req) => {
    // Requests the app aborts on purpose (a newer query replaced them) are not failures.
    if (req.failure()?.errorText !== "net::ERR_ABORTED") problems.push(`request failed: ${req.url()} ${req.failure()?.errorText}`);
  });
  await page.goto(BASE + path, { waitUntil: "networkidle" });
  const done = async (name) => {
    await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: false });
    await context.close();
    assert.deepEqual(problems, [], `problems on ${path}`);
  };
  return { page, done, problems };
}
