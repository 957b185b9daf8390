// The admin console in a real browser (Debian's Chromium, headless, driven
// by playwright-core) against the binary on the mock provider and a fake
// OpenAI upstream (upstream.cjs):
//   node console.cjs BASE_URL ADMIN_TOKEN API_KEY CONFIG_FILE UPSTREAM_PORT [SCREENSHOT_DIR]
// A wrong token is refused; the pages render; a deployment turns unhealthy
// when its upstream fails and comes back; a key made in the console works
// with the official openai package, is rate-limited once edited there and
// refused once revoked there; a forced level answers 503 on the API; a
// batch sent with the openai package is seen completing; a slow
// asynchronous request is cancelled there and answers 409; a reload of a
// broken config file shows the 422 message and leaves the old config in
// force; a key named like markup shows as text with no script run; the CSP
// and framing headers are there; the page fits 390 px; nothing is logged
// to the browser console but the wrong token's 401.
"use strict";

const assert = require("node:assert/strict");
const { chromium } = require("playwright-core");
const { default: OpenAI, toFile } = require("openai");
const upstream = require("./upstream.cjs");

const [base, token, apiKey, configFile, upstreamPort, screens] = process.argv.slice(2);
const fs = require("node:fs");
const client = (key) => new OpenAI({ baseURL: `${base}/v1`, apiKey: key, maxRetries: 0 });
const consoleUrl = `${base}/admin/console/`;
const chat = { model: "gpt-4o-mini", messages: [{ role: "user", content: "Say hello" }] };

async function call(key) {
  const response = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body: JSON.stringify(chat),
  });
  await response.arrayBuffer();
  return response.status;
}

async function shoot(page, name) {
  if (screens) await page.screenshot({ path: `${screens}/${name}.png`, fullPage: true });
}

async function visit(page, name, selector) {
  await page.click(`nav a[href='#${name}']`);
  await page.waitForSelector(selector);
}

/** Waits until the row of deployment `name` says usable (or not). */
async function waitUsable(page, name, usable) {
  await page.waitForFunction(([name, usable]) => {
    const rows = [...document.querySelectorAll("#page tbody tr")];
    const row = rows.find((tr) => tr.cells[0]?.textContent === name);
    return row && (row.cells[1].textContent === "usable") === usable;
  }, [name, usable], { timeout: 20000 });
}

/** The upstream fails: the breaker opens and the page shows it; then it is
 * healthy again and, after the breaker's recovery time, so is the page. */
async function deploymentFailsAndRecovers(page, fake) {
  await visit(page, "deployments", "table");
  await waitUsable(page, "flaky", true);
  fake.state.failing = true;
  for (let i = 0; i < 3; i += 1) {
    const failed = await client(apiKey).chat.completions.create({ ...chat, model: "gpt-4o" }).catch((e) => e);
    assert.ok(failed instanceof OpenAI.APIError, `a failing upstream's call errs: ${failed}`);
  }
  await waitUsable(page, "flaky", false);
  assert.match(await page.textContent("#page"), /flaky.*open/s, "the breaker shows open");
  await shoot(page, "deployment-down");
  fake.state.failing = false;
  // After the breaker's recovery_timeout (8 s) a trial call may go: usable
  // again, and the trial's success closes the breaker.
  await waitUsable(page, "flaky", true);
  const back = await client(apiKey).chat.completions.create({ ...chat, model: "gpt-4o" });
  assert.equal(back.choices[0].message.content, "hello");
  await page.waitForFunction(() => /flaky\s*usable\s*closed/.test(document.getElementById("page").textContent),
    null, { timeout: 10000 });
}

/** A batch sent with the openai package, watched on the Jobs page. */
async function batchRunsToCompletion(page) {
  const lines = [1, 2, 3].map((n) => JSON.stringify({
    custom_id: `line-${n}`, method: "POST", url: "/v1/chat/completions", body: chat,
  })).join("\n");
  const openai = client(apiKey);
  const file = await openai.files.create({ file: await toFile(Buffer.from(lines), "input.jsonl"), purpose: "batch" });
  const batch = await openai.batches.create({
    input_file_id: file.id, endpoint: "/v1/chat/completions", completion_window: "24h",
  });
  await visit(page, "jobs", "#page h2:text-is('Batches')");
  await page.waitForFunction((id) => {
    const row = [...document.querySelectorAll("#page tbody tr")].find((tr) => tr.cells[0]?.textContent === id);
    return row && /completed/.test(row.textContent) && /3 done, 0 failed of 3/.test(row.textContent);
  }, batch.id, { timeout: 20000 });
  const done = await openai.batches.retrieve(batch.id);
  assert.equal(done.status, "completed");
}

/** A slow asynchronous request, cancelled on the Jobs page: its poller
 * gets the 409 `cancelled` answer. */
async function asyncRequestCancelled(page, fake) {
  fake.state.delayMs = 30000;
  const asked = await fetch(`${base}/v1/chat/completions`, {
    method: "POST",
    headers: { authorization: `Bearer ${apiKey}`, "content-type": "application/json", prefer: "respond-async" },
    body: JSON.stringify({ ...chat, model: "gpt-4o" }),
  });
  assert.equal(asked.status, 202);
  const job = await asked.json();
  const row = `#page tr:has(td:text-is("${job.id}"))`;
  await page.waitForSelector(`${row} button:has-text('Cancel')`, { timeout: 15000 });
  await page.click(`${row} button:has-text('Cancel')`);
  await page.waitForFunction((id) => {
    const row = [...document.querySelectorAll("#page tbody tr")].find((tr) => tr.cells[0]?.textContent === id);
    return row && /completed\s*409/.test(row.textContent);
  }, job.id, { timeout: 15000 });
  const polled = await fetch(`${base}/v1/async/${job.id}`, { headers: { authorization: `Bearer ${apiKey}` } });
  assert.equal(polled.status, 409);
  assert.equal((await polled.json()).error.code, "cancelled");
  // The runner drops the call at its next lease renewal (a third of 3 s).
  const deadline = Date.now() + 5000;
  while (fake.state.dropped === 0 && Date.now() < deadline) await page.waitForTimeout(100);
  assert.equal(fake.state.dropped, 1, "the cancelled call was dropped upstream");
  fake.state.delayMs = 0;
  await shoot(page, "jobs");
}

(async () => {
  const fake = await upstream.start(Number(upstreamPort));
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    args: ["--no-sandbox"],
  });
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const logged = [];
  page.on("console", (message) => {
    if (["error", "warning"].includes(message.type())) logged.push(message.text());
  });
  page.on("pageerror", (error) => logged.push(`uncaught: ${error.message}`));
  const dialogs = [];
  page.on("dialog", (dialog) => {
    dialogs.push(`${dialog.type()}: ${dialog.message()}`);
    dialog.accept();
  });

  const loaded = await page.goto(consoleUrl);
  const headers = loaded.headers();
  assert.match(headers["content-security-policy"], /script-src 'self'/);
  assert.match(headers["content-security-policy"], /frame-ancestors 'none'/);
  assert.equal(headers["x-frame-options"], "DENY");

  // A wrong token, then the right one, typed and sent with Enter.
  await page.fill("#token", "not-the-token");
  await page.press("#token", "Enter");
  await page.waitForFunction(() => document.getElementById("sign-in-error").textContent !== "");
  assert.match(await page.textContent("#sign-in-error"), /refused/);
  assert.equal(logged.length, 1, `only the refused sign-in's 401: ${logged}`);
  logged.length = 0;
  await page.focus("#token");
  await page.keyboard.type(token);
  await page.keyboard.press("Enter");
  await page.waitForSelector(".tile");
  assert.ok(await page.isHidden("#sign-in"), "the sign-in form goes away");
  assert.ok((await page.$$(".tile")).length >= 6);
  await shoot(page, "overview");

  await visit(page, "deployments", "table");
  assert.match(await page.textContent("#page"), /mock.*usable/s);
  await shoot(page, "deployments");
  await deploymentFailsAndRecovers(page, fake);
  // The page refreshes every 4 s, once: two refreshes in 8.5 s, not more.
  let refreshes = 0;
  const count = (request) => { if (request.url().endsWith("/admin/deployments")) refreshes += 1; };
  page.on("request", count);
  await page.waitForTimeout(8500);
  page.off("request", count);
  assert.equal(refreshes, 2, "one refresh timer");

  // A key named like markup, made in the console, used, then revoked there.
  await visit(page, "keys", "#key-name");
  await page.fill("#key-name", "<img src=x onerror=alert(1)>");
  await page.click("#page form button[type=submit]");
  await page.waitForSelector(".secret");
  const secret = (await page.textContent(".secret")).trim();
  assert.match(secret, /^sk-sluice-/);
  assert.equal((await page.$$("#page img")).length, 0, "the name is text, not markup");
  assert.match(await page.textContent("#page"), /<img src=x onerror=alert\(1\)>/);
  await shoot(page, "keys");
  const answered = await client(secret).chat.completions.create(chat);
  assert.equal(answered.object, "chat.completion", "the new key works with the openai package");
  // Edited in the console to one request a minute: the second call is 429.
  await page.click("#page td button:has-text('Edit')");
  await page.fill("#edit-rpm", "1");
  await page.fill("#edit-models", "gpt-4o-mini");
  await page.click("#key-editor button[type=submit]");
  await page.waitForSelector("#made .good");
  assert.match(await page.textContent("#page tbody"), /gpt-4o-mini/);
  await client(secret).chat.completions.create(chat); // the minute's one
  const limited = await client(secret).chat.completions.create(chat).catch((e) => e);
  assert.ok(limited instanceof OpenAI.RateLimitError, `rpm = 1 answers 429: ${limited}`);
  await page.click("#page td button:has-text('Revoke')");
  await page.waitForFunction(() => !/onerror/.test(document.querySelector("#page tbody")?.textContent ?? "onerror"));
  const revoked = await client(secret).chat.completions.create(chat).catch((e) => e);
  assert.ok(revoked instanceof OpenAI.AuthenticationError, `the revoked key is refused: ${revoked}`);

  // A forced level shows on the API and on the page, then is cleared.
  await visit(page, "deployments", "select");
  await page.selectOption("select[aria-label='Level for gpt-4o-mini']", "4");
  await page.click("#page tr:has(select[aria-label='Level for gpt-4o-mini']) button:has-text('Apply')");
  await page.waitForFunction(() => /gpt-4o-mini\s*4/.test(document.getElementById("page").textContent));
  assert.equal(await call(apiKey), 503, "level 4 is maintenance");
  await page.selectOption("select[aria-label='Level for gpt-4o-mini']", "");
  await page.click("#page tr:has(select[aria-label='Level for gpt-4o-mini']) button:has-text('Apply')");
  await page.waitForFunction(() => /gpt-4o-mini\s*0/.test(document.getElementById("page").textContent));
  assert.equal(await call(apiKey), 200);

  await batchRunsToCompletion(page);
  await asyncRequestCancelled(page, fake);
  await visit(page, "usage", "#page svg.chart");
  assert.ok((await page.$$("#page svg.chart rect")).length >= 1, "the usage chart has bars");
  await page.selectOption("#group", "model");
  await page.waitForFunction(() => /gpt-4o-mini/.test(document.querySelector("#page svg.chart")?.textContent ?? ""));
  await shoot(page, "usage");
  await visit(page, "budgets", "#page th:text-is('alerts sent')");
  assert.match(await page.textContent("#page"), /key\s*app.*\$1\.0000/s, "the app key's daily budget");
  assert.match(await page.textContent("#page thead"), /alerts sent/);
  await shoot(page, "budgets");
  await visit(page, "config", "pre");
  assert.match(await page.textContent("#page"), /Hash [0-9a-f]{64}/);
  await shoot(page, "config");
  // A broken file: the reload is refused with its message, the old config stays.
  const good = fs.readFileSync(configFile, "utf8");
  fs.writeFileSync(configFile, `${good}\n[server]\nlisten = "not an address"\n`);
  await page.click("#page button:has-text('Reload')");
  await page.waitForSelector("#page [role=alert]");
  assert.match(await page.textContent("#page [role=alert]"), /not reloaded/);
  assert.equal(await call(apiKey), 200, "the running config stays in force");
  logged.length = 0; // the refused reload's 422, logged by the browser
  fs.writeFileSync(configFile, good);
  await page.click("#page button:has-text('Reload')");
  await page.waitForSelector("#page .good");

  // A phone's width: nothing overflows the page itself.
  await page.setViewportSize({ width: 390, height: 844 });
  await visit(page, "overview", ".tile");
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `the page is ${width} px wide at 390`);
  await shoot(page, "overview-390");

  assert.deepEqual(dialogs.filter((d) => d.startsWith("alert")), [], "no alert ran");
  assert.equal(dialogs.filter((d) => d.startsWith("confirm")).length, 4, "revoke, two levels and a cancel asked first");
  assert.deepEqual(logged, [], "no console errors");
  await browser.close();
  fake.server.close();
  console.log("console: sign-in, pages, health, keys, levels, batches, XSS and CSP checks passed in Chromium");
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
