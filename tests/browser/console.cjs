// The admin console in a real browser (Debian's Chromium, headless, driven
// by playwright-core) against the binary on the mock provider:
//   node console.cjs BASE_URL ADMIN_TOKEN API_KEY CONFIG_FILE [SCREENSHOT_DIR]
// A wrong token is refused; the pages render; a key made in the console
// works with an API call and is refused once revoked there; a forced level
// answers 503 on the API; a reload of a broken config file shows the 422
// message and leaves the old config in force; a key named like markup shows as text with no
// script run; the CSP and framing headers are there; the page fits 390 px;
// nothing is logged to the browser console but the wrong token's 401.
"use strict";

const assert = require("node:assert/strict");
const { chromium } = require("playwright-core");

const [base, token, apiKey, configFile, screens] = process.argv.slice(2);
const fs = require("node:fs");
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

(async () => {
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
  assert.equal(await call(secret), 200, "the new key works");
  await page.click("#page td button:has-text('Revoke')");
  await page.waitForFunction(() => !document.querySelector(".secret"));
  assert.equal(await call(secret), 401, "the revoked key is refused");

  // A forced level shows on the API and on the page, then is cleared.
  await visit(page, "deployments", "select");
  await page.selectOption("select[aria-label='Level for gpt-4o-mini']", "4");
  await page.click("#page td button:has-text('Apply')");
  await page.waitForFunction(() => /gpt-4o-mini\s*4/.test(document.getElementById("page").textContent));
  assert.equal(await call(apiKey), 503, "level 4 is maintenance");
  await page.selectOption("select[aria-label='Level for gpt-4o-mini']", "");
  await page.click("#page td button:has-text('Apply')");
  await page.waitForFunction(() => /gpt-4o-mini\s*0/.test(document.getElementById("page").textContent));
  assert.equal(await call(apiKey), 200);

  await visit(page, "usage", "table");
  await visit(page, "budgets", "table");
  assert.match(await page.textContent("#page"), /key\s*app.*\$1\.0000/s, "the app key's daily budget");
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
  assert.equal(dialogs.filter((d) => d.startsWith("confirm")).length, 3, "revoke and two levels asked first");
  assert.deepEqual(logged, [], "no console errors");
  await browser.close();
  console.log("console: sign-in, pages, keys, levels, XSS and CSP checks passed in Chromium");
})().catch((error) => {
  console.error(error);
  process.exit(1);
});
