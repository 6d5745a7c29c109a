// Drives the console in headless Chromium for tests/tests/console.rs, step by step: each
// step prints one line (`STEP name detail`) on stdout; where the test has to act on the host
// (run the attack, check the host's journal) the script waits for a line on stdin. Any
// failure prints `FAIL why` and exits 1. Screenshots of each page go to $VIGIL_SHOTS.
//
// Environment: VIGIL_URL, VIGIL_NAME, VIGIL_PASSWORD, VIGIL_HOST (the host id),
// VIGIL_CHROMIUM (the browser), VIGIL_SHOTS (a directory).
import { chromium } from "playwright-core";
import { createInterface } from "node:readline";

const env = (k) => {
  const v = process.env[k];
  if (!v) throw new Error(`${k} is not set`);
  return v;
};
const [url, name, password, host, shots] = ["VIGIL_URL", "VIGIL_NAME", "VIGIL_PASSWORD", "VIGIL_HOST", "VIGIL_SHOTS"].map(env);
const lines = createInterface({ input: process.stdin })[Symbol.asyncIterator]();
const step = (what, detail = "") => console.log(`STEP ${what} ${detail}`.trim());
const goOn = async (what) => {
  step(what);
  const { value, done } = await lines.next();
  if (done || value.trim() !== "go") throw new Error(`the test said ${JSON.stringify(value)} after ${what}`);
};

const browser = await chromium.launch({
  executablePath: env("VIGIL_CHROMIUM"),
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
const timeout = 60_000;
let failed = async () => "";
try {
  // The console's certificate is signed by the controller's own CA, which this throw-away
  // browser profile does not hold; the API tests check the chain with the CA.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1440, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  page.setDefaultTimeout(timeout);
  const shot = (n) => page.screenshot({ path: `${shots}/${n}.png`, fullPage: true });
  failed = async () => {
    await shot("failure").catch(() => {});
    const toast = await page.locator("#toast").textContent().catch(() => "");
    return `${page.url()}; last message: ${toast || "none"}`;
  };

  await page.goto(url);
  await page.fill("#login-name", name);
  await page.fill("#login-password", password);
  await page.click("#login-submit");
  await page.waitForSelector("#top:not([hidden])");
  await page.waitForSelector(`text=${host}`);
  await page.waitForSelector("text=online");
  await shot("fleet");
  step("fleet", "the host is listed online");

  await page.goto(`${url}/#/incidents`);
  await page.waitForSelector("h1:has-text('Incidents')");
  await page.waitForSelector("#live.on");
  await goOn("watching");

  // The incident appears without a reload: the event stream redraws the page.
  const row = page.locator("tr.click", { hasText: host }).first();
  await row.waitFor();
  await shot("incidents");
  step("incident-listed");
  await row.click();
  await page.waitForSelector("#graph canvas");
  await page.waitForFunction(() => window.__vigilGraph && window.__vigilGraph.nodes >= 2 && window.__vigilGraph.edges >= 1);
  const drawn = await page.evaluate(() => window.__vigilGraph);
  await page.waitForSelector("#approve");
  await shot("incident");
  step("graph", JSON.stringify(drawn));

  await page.click("#approve");
  const isolateRow = page.locator("tr", { hasText: "isolate" }).filter({ has: page.locator("button.undo") }).first();
  await isolateRow.waitFor();
  await shot("approved");
  await goOn("approved");

  await isolateRow.locator("button.undo").click();
  await page.locator("tr", { hasText: "isolate" }).filter({ has: page.locator(".settled", { hasText: "undone" }) }).first().waitFor();
  await shot("undone");
  step("undone");

  await page.goto(`${url}/#/audit`);
  await page.waitForSelector(`text=${name} (console)`);
  await shot("audit");
  for (const p of ["approvals", "actions", "hunts", "rules"]) {
    await page.goto(`${url}/#/${p}`);
    await page.waitForSelector("h1");
    await shot(p);
  }
  if (errors.length) throw new Error(`the page threw: ${errors.join("; ")}`);
  step("done");
} catch (e) {
  const where = await failed();
  console.log(`FAIL ${String(e.message || e).replace(/\n/g, " ")} (at ${where})`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
