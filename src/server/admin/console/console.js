// The admin console: reads the admin API with the token the operator signs
// in with (kept in sessionStorage, sent as a bearer header, never in a
// cookie or a URL). Every value from the gateway is rendered as text.
"use strict";

const TOKEN_KEY = "sluice.admin.token";
const POLL_MS = 2000;
let poller = null;
/** The page shown: a render that finishes after the operator moved on
 * must not draw over the next page, nor start its poller. */
let currentPage = null;

function onPage(name) {
  return currentPage === name;
}

/** An element with attributes (null ones left out) and children (strings
 * become text nodes). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat()) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child ?? "")));
  }
  return node;
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, options = {}) {
  const headers = { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` };
  if (options.body) headers["content-type"] = "application/json";
  const response = await fetch(path, { ...options, headers });
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (response.status === 401) {
    signOut("The admin token was refused.");
    throw new ApiError(401, body);
  }
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

function page() { return document.getElementById("page"); }

function show(...nodes) {
  page().replaceChildren(...nodes);
}

function failed(error) {
  return el("p", { role: "alert" }, error.message);
}

function table(columns, rows) {
  return el("div", { class: "table-wrap" },
    el("table", {},
      el("thead", {}, el("tr", {}, columns.map(([label]) => el("th", { scope: "col" }, label)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, columns.map(([, cell]) => el("td", {}, cell(row))))))));
}

// Sign-in and navigation.

function signOut(message = "") {
  sessionStorage.removeItem(TOKEN_KEY);
  clearInterval(poller);
  currentPage = null;
  document.getElementById("nav").hidden = true;
  document.getElementById("sign-in").hidden = false;
  document.getElementById("sign-in-error").textContent = message;
  page().replaceChildren();
  document.getElementById("token").focus();
}

async function signIn(event) {
  event.preventDefault();
  const field = document.getElementById("token");
  sessionStorage.setItem(TOKEN_KEY, field.value);
  field.value = "";
  try {
    await api("/admin/overview");
  } catch (error) {
    if (error.status !== 401) signOut(error.message);
    return;
  }
  document.getElementById("sign-in").hidden = true;
  document.getElementById("sign-in-error").textContent = "";
  document.getElementById("nav").hidden = false;
  route();
}

const PAGES = { overview, deployments, keys, usage, budgets, jobs, config };

function route() {
  if (!sessionStorage.getItem(TOKEN_KEY)) return signOut();
  document.getElementById("sign-in").hidden = true;
  document.getElementById("nav").hidden = false;
  clearInterval(poller);
  const name = location.hash.slice(1) in PAGES ? location.hash.slice(1) : "overview";
  currentPage = name;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.getAttribute("href") === `#${name}`) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  PAGES[name]().catch((error) => show(failed(error)));
}

// Overview: rates and recent quantiles from the difference of two polls.

function quantile(buckets, q) {
  const total = buckets.length ? buckets[buckets.length - 1][1] : 0;
  if (total === 0) return null;
  const wanted = q * total;
  const found = buckets.find(([, count]) => count >= wanted);
  return found ? found[0] : Infinity;
}

function delta(now, before) {
  return now.buckets.map(([bound, count], i) => [bound, count - (before?.buckets[i]?.[1] ?? 0)]);
}

function ms(seconds) {
  if (seconds === null) return "-";
  return seconds === Infinity ? "> top bucket" : `${(seconds * 1000).toFixed(seconds < 0.001 ? 2 : 0)} ms`;
}

function tile(label, value) {
  return el("div", { class: "tile" }, el("div", { class: "value" }, value), el("div", { class: "label" }, label));
}

async function overview() {
  let before = await api("/admin/overview");
  let at = performance.now();
  const today = new Date().toISOString().slice(0, 10);
  const render = async () => {
    const now = await api("/admin/overview");
    const seconds = (performance.now() - at) / 1000;
    const calls = (now.requests.total ?? 0) - (before.requests.total ?? 0);
    const errors = (now.requests["5xx"] ?? 0) - (before.requests["5xx"] ?? 0);
    const latency = delta(now.latency_seconds, before.latency_seconds);
    const overhead = delta(now.overhead_seconds, before.overhead_seconds);
    let spend = "-";
    try {
      const usage = await api(`/admin/usage?group_by=day&from=${today}`);
      const row = usage.data.find((r) => r.group === today);
      spend = row ? `${row.prompt_tokens + row.completion_tokens} tokens, $${row.cost_usd.toFixed(4)}` : "0 tokens, $0";
    } catch (error) {
      spend = error.status === 404 ? "no ledger" : error.message;
    }
    if (!onPage("overview")) return;
    show(el("h2", {}, "Overview"), el("div", { class: "tiles" },
      tile("requests/s", (calls / seconds).toFixed(1)),
      tile("5xx rate", calls ? `${((100 * errors) / calls).toFixed(1)}%` : "-"),
      tile("p50 latency", ms(quantile(latency, 0.5))),
      tile("p95 latency", ms(quantile(latency, 0.95))),
      tile("gateway overhead p50", ms(quantile(overhead, 0.5))),
      tile("in flight", now.in_flight),
      tile("today", spend),
      tile("cost since start", `$${now.cost_usd.toFixed(4)}`)));
    before = now;
    at = performance.now();
  };
  await render();
  if (onPage("overview")) poller = setInterval(() => render().catch((error) => show(failed(error))), POLL_MS);
}

// Deployments and each model's degradation level.

async function deployments() {
  await renderDeployments();
  if (!onPage("deployments")) return;
  poller = setInterval(() => {
    // Not while an override is being chosen: the redraw would reset it.
    if (document.activeElement?.tagName === "SELECT") return;
    renderDeployments().catch((error) => show(failed(error)));
  }, POLL_MS * 2);
}

async function renderDeployments() {
  const [deployed, models] = await Promise.all([api("/admin/deployments"), api("/admin/models")]);
  if (!onPage("deployments")) return;
  const state = (d) => d.usable
    ? el("span", { class: "good" }, "usable")
    : el("span", { class: "bad" }, `${d.reason} (${Math.ceil(d.usable_in_ms / 1000)} s)`);
  const slots = (d) => d.concurrency ? `${d.concurrency.in_use}/${d.concurrency.limit}, ${d.concurrency.queued} queued` : "-";
  show(
    el("h2", {}, "Deployments"),
    table([
      ["name", (d) => d.name], ["state", state], ["circuit", (d) => d.circuit],
      ["concurrency", slots], ["latency", (d) => `${d.ewma_latency_ms.toFixed(0)} ms`],
      ["priority", (d) => d.priority], ["weight", (d) => d.weight],
    ], deployed.data ?? deployed),
    el("h2", {}, "Degradation levels"),
    table([
      ["model", (m) => m.model], ["level", (m) => m.level], ["health", (m) => m.health],
      ["override", levelControl],
    ], models.data));
}

function levelControl(model) {
  const select = el("select", { "aria-label": `Level for ${model.model}` },
    el("option", { value: "" }, "automatic"),
    [0, 1, 2, 3, 4].map((n) => el("option", { value: String(n) }, `force ${n}`)));
  select.value = model.forced_level === null ? "" : String(model.forced_level);
  const apply = el("button", {
    type: "button",
    onclick: async () => {
      const level = select.value === "" ? null : Number(select.value);
      const what = level === null ? "back to automatic" : `to level ${level}`;
      if (!confirm(`Set ${model.model} ${what}?`)) return;
      await api(`/admin/models/${encodeURIComponent(model.model)}/level`,
        { method: "POST", body: JSON.stringify({ level }) }).catch((error) => alert(error.message));
      renderDeployments().catch((error) => show(failed(error)));
    },
  }, "Apply");
  return el("span", { class: "row" }, select, apply);
}

// Keys: a page at a time; create (the secret shown once), edit, revoke.

const KEYS_PAGE = 50;
/** The `after` cursor of each page shown so far: the first is "". */
let keyPages = [""];

async function keys() {
  let listed;
  const after = keyPages[keyPages.length - 1];
  try {
    listed = await api(`/admin/keys?limit=${KEYS_PAGE}&after=${encodeURIComponent(after)}`);
  } catch (error) {
    if (error.status === 404) return show(el("h2", {}, "Keys"), el("p", {}, "No runtime keys store is configured ([admin] keys_store)."));
    throw error;
  }
  const name = el("input", { id: "key-name", required: "" });
  const made = el("div", { "aria-live": "polite", id: "made" });
  const create = el("form", {
    onsubmit: async (event) => {
      event.preventDefault();
      try {
        const key = await api("/admin/keys", { method: "POST", body: JSON.stringify({ name: name.value }) });
        const copy = el("button", { type: "button", onclick: () => navigator.clipboard.writeText(key.key) }, "Copy");
        await keys();
        document.querySelector("#made")?.replaceChildren(
          el("p", {}, `Key ${key.name} made. Its secret is shown this once:`),
          el("p", { class: "secret" }, key.key), copy);
      } catch (error) {
        made.replaceChildren(failed(error));
      }
    },
  }, el("div", { class: "row" }, el("label", { for: "key-name" }, "New key name"), name, el("button", { type: "submit" }, "Create")));
  const editor = el("div", { id: "key-editor" });
  const revoke = (key) => el("button", {
    type: "button",
    onclick: async () => {
      if (!confirm(`Revoke ${key.name}? Calls with it will get 401.`)) return;
      await api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "DELETE" }).catch((error) => alert(error.message));
      keys().catch((error) => show(failed(error)));
    },
  }, "Revoke");
  const actions = (key) => el("span", { class: "row" },
    el("button", { type: "button", onclick: () => editKey(key, editor) }, "Edit"), revoke(key));
  const pager = el("div", { class: "row" },
    el("button", { type: "button", disabled: keyPages.length === 1 ? "" : null, onclick: () => { keyPages.pop(); keys().catch((e) => show(failed(e))); } }, "Previous page"),
    el("button", { type: "button", disabled: listed.has_more ? null : "", onclick: () => { keyPages.push(listed.last_id); keys().catch((e) => show(failed(e))); } }, "Next page"));
  show(el("h2", {}, "Keys"), create, made, editor, table([
    ["name", (k) => k.name], ["id", (k) => k.id], ["hint", (k) => k.key_hint],
    ["rpm", (k) => k.rpm ?? "-"], ["tpm", (k) => k.tpm ?? "-"],
    ["models", (k) => (k.models ?? ["any"]).join(", ")],
    ["daily budget", (k) => k.budget_daily_usd ?? "-"], ["monthly budget", (k) => k.budget_monthly_usd ?? "-"],
    ["", actions],
  ], listed.data), pager);
}

/** The fields the key editor changes: [field, label, kind]. */
const KEY_FIELDS = [
  ["rpm", "Requests per minute", "integer"], ["tpm", "Tokens per minute", "integer"],
  ["models", "Allowed models (comma-separated; empty for any)", "list"],
  ["budget_daily_usd", "Daily budget (USD)", "number"], ["budget_monthly_usd", "Monthly budget (USD)", "number"],
];

/** An input's value as the PATCH field: empty clears it (null). */
function fieldValue(input, kind) {
  const text = input.value.trim();
  if (kind === "list") {
    const items = text.split(",").map((item) => item.trim()).filter(Boolean);
    return items.length ? items : null;
  }
  return text === "" ? null : Number(text);
}

/** The field as the key has it, in `fieldValue`'s terms. */
function keyValue(key, field) {
  return JSON.stringify(key[field] ?? null);
}

function editKey(key, holder) {
  const inputs = KEY_FIELDS.map(([field, label, kind]) => {
    const value = key[field];
    const input = el("input", {
      id: `edit-${field}`, name: field,
      type: kind === "list" ? "text" : "number", step: kind === "integer" ? "1" : "any", min: "0",
    });
    input.value = value === null || value === undefined ? "" : Array.isArray(value) ? value.join(", ") : String(value);
    return [field, kind, el("div", { class: "field" }, el("label", { for: `edit-${field}` }, label), input), input];
  });
  const outcome = el("div", { "aria-live": "polite" });
  const form = el("form", {
    "aria-label": `Edit ${key.name}`,
    onsubmit: async (event) => {
      event.preventDefault();
      // Only what was changed here: a field changed elsewhere since the
      // page was drawn keeps that change.
      const patch = Object.fromEntries(inputs
        .map(([field, kind, , input]) => [field, fieldValue(input, kind)])
        .filter(([field, value]) => JSON.stringify(value) !== keyValue(key, field)));
      try {
        await api(`/admin/keys/${encodeURIComponent(key.id)}`, { method: "PATCH", body: JSON.stringify(patch) });
        await keys();
        document.querySelector("#made")?.replaceChildren(el("p", { class: "good" }, `Key ${key.name} saved.`));
      } catch (error) {
        outcome.replaceChildren(failed(error));
      }
    },
  }, el("h3", {}, `Edit ${key.name}`), inputs.map(([, , field]) => field),
  el("div", { class: "row" }, el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", onclick: () => holder.replaceChildren() }, "Cancel")), outcome);
  holder.replaceChildren(form);
  inputs[0][3].focus();
}

// Usage and spend from the ledger: a chart, the table, a CSV download.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

/** A horizontal bar per row (at most 25), labels drawn as SVG text. */
function barChart(rows, label, value, format, title) {
  const shown = rows.slice(0, 25);
  const top = Math.max(...shown.map(value), 0) || 1;
  const [labelWidth, barWidth, rowHeight] = [200, 440, 22];
  const chart = svg("svg", {
    viewBox: `0 0 ${labelWidth + barWidth + 110} ${shown.length * rowHeight + 4}`,
    role: "img", "aria-label": title, class: "chart",
  });
  chart.append(svg("title", {}, title));
  shown.forEach((row, i) => {
    const y = i * rowHeight + 2;
    const width = Math.max((barWidth * value(row)) / top, value(row) > 0 ? 1 : 0);
    const name = String(label(row));
    chart.append(
      svg("text", { x: labelWidth - 6, y: y + 15, "text-anchor": "end", class: "chart-label" },
        name.length > 28 ? `${name.slice(0, 27)}…` : name),
      svg("rect", { x: labelWidth, y: y + 3, width, height: rowHeight - 6, class: "chart-bar" }),
      svg("text", { x: labelWidth + width + 6, y: y + 15, class: "chart-value" }, format(value(row))));
  });
  return chart;
}

/** Dollars to three significant digits: a cent's fractions show too. */
function dollars(value) {
  return value >= 1 ? `$${value.toFixed(2)}` : `$${value.toPrecision(3)}`;
}

/** The day after `YYYY-MM-DD`: the API's `to` is exclusive, the form's is not. */
function dayAfter(date) {
  const next = new Date(`${date}T00:00:00Z`);
  next.setUTCDate(next.getUTCDate() + 1);
  return next.toISOString().slice(0, 10);
}

async function usage() {
  const group = el("select", { id: "group" },
    ["key", "org", "model", "deployment", "tag", "api", "day"].map((g) => el("option", { value: g }, g)));
  const from = el("input", { id: "usage-from", type: "date" });
  const to = el("input", { id: "usage-to", type: "date" });
  const holder = el("div");
  const query = () => {
    const bounds = [`group_by=${group.value}`];
    if (from.value) bounds.push(`from=${from.value}`);
    if (to.value) bounds.push(`to=${dayAfter(to.value)}`);
    return bounds.join("&");
  };
  const load = async () => {
    const totals = await api(`/admin/usage?${query()}`);
    const rows = group.value === "day"
      ? [...totals.data].sort((a, b) => String(a.group).localeCompare(String(b.group)))
      : [...totals.data].sort((a, b) => b.cost_usd - a.cost_usd);
    const tokens = (t) => t.prompt_tokens + t.completion_tokens;
    const costly = rows.some((t) => t.cost_usd > 0);
    // A day chart shows the latest days; other groups the largest.
    const charted = group.value === "day" ? rows.slice(-25) : rows;
    const chart = costly
      ? barChart(charted, (t) => t.group, (t) => t.cost_usd, dollars, `Cost by ${group.value}`)
      : barChart(charted, (t) => t.group, tokens, (v) => `${v} tokens`, `Tokens by ${group.value}`);
    holder.replaceChildren(rows.length ? chart : el("p", {}, "No usage recorded in this range."), table([
      [group.value, (t) => t.group], ["requests", (t) => t.requests],
      ["prompt tokens", (t) => t.prompt_tokens], ["completion tokens", (t) => t.completion_tokens],
      ["cost (USD)", (t) => t.cost_usd.toFixed(6)],
    ], rows));
  };
  const csv = el("button", {
    type: "button",
    onclick: async () => {
      const response = await fetch(`/admin/usage?${query()}&format=csv`,
        { headers: { authorization: `Bearer ${sessionStorage.getItem(TOKEN_KEY)}` } });
      const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `usage-${group.value}.csv` });
      link.click();
      URL.revokeObjectURL(link.href);
    },
  }, "Download CSV");
  const reload = () => load().catch((error) => holder.replaceChildren(failed(error)));
  for (const control of [group, from, to]) control.addEventListener("change", reload);
  show(el("h2", {}, "Usage and spend"), el("div", { class: "row" },
    el("label", { for: "group" }, "Group by"), group,
    el("label", { for: "usage-from" }, "From"), from,
    el("label", { for: "usage-to" }, "To"), to, csv), holder);
  await reload();
}

// Budgets: spend against each configured budget.

async function budgets() {
  const report = await api("/admin/budgets");
  const usd = (value) => (value === null ? "unknown" : `$${value.toFixed(4)}`);
  const used = (b) => {
    if (b.spent_usd === null) return "-";
    const share = (100 * b.spent_usd) / b.budget_usd;
    return el("span", { class: share >= 100 ? "bad" : "" }, `${share.toFixed(1)}%`);
  };
  show(el("h2", {}, "Budgets"), report.data.length === 0
    ? el("p", {}, "No budget is configured.")
    : table([
      ["scope", (b) => b.scope], ["name", (b) => b.name], ["period", (b) => b.period_name],
      ["budget", (b) => usd(b.budget_usd)], ["spent", (b) => usd(b.spent_usd)], ["used", used],
      ["alerts sent", (b) => (b.alerts_sent?.length ? b.alerts_sent.map((t) => `${Math.round(t * 100)}%`).join(", ") : "none")],
      ["resets at", (b) => b.resets_at],
    ], report.data));
}

// Batches and asynchronous requests: every key's, newest first, with cancel.

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toISOString().replace("T", " ").slice(0, 19) : "-";
}

/** A cancel button for a job still open; asks first, then redraws. */
function cancelButton(what, path, open) {
  if (!open) return "";
  return el("button", {
    type: "button",
    onclick: async () => {
      if (!confirm(`Cancel ${what}?`)) return;
      await api(path, { method: "POST" }).catch((error) => alert(error.message));
      renderJobs().catch((error) => show(failed(error)));
    },
  }, "Cancel");
}

/** A list route's first page, or null when there is no job store (404). */
async function firstPage(path) {
  try {
    return await api(path);
  } catch (error) {
    if (error.status === 404) return null;
    throw error;
  }
}

async function jobs() {
  await renderJobs();
  if (!onPage("jobs")) return;
  poller = setInterval(() => renderJobs().catch((error) => show(failed(error))), POLL_MS * 2);
}

async function renderJobs() {
  const [batches, requests] = await Promise.all([
    firstPage("/admin/batches?limit=100"), firstPage("/admin/async?limit=100")]);
  if (!onPage("jobs")) return;
  if (!batches) return show(el("h2", {}, "Batches"), el("p", {}, "No job store is configured ([batch])."));
  const counts = (b) => {
    const c = b.request_counts ?? {};
    return `${c.completed ?? 0} done, ${c.failed ?? 0} failed of ${c.total ?? 0}`;
  };
  const status = (text) => el("span", { class: ["failed", "expired"].includes(text) ? "bad" : text === "completed" ? "good" : "" }, text);
  show(
    el("h2", {}, "Batches"),
    batches.data.length === 0 ? el("p", {}, "No batch.") : table([
      ["id", (b) => b.id], ["key", (b) => b.owner], ["endpoint", (b) => b.endpoint],
      ["status", (b) => status(b.status)], ["lines", counts], ["created", (b) => when(b.created_at)],
      ["", (b) => cancelButton(`batch ${b.id}`, `/admin/batches/${encodeURIComponent(b.id)}/cancel`,
        ["validating", "in_progress"].includes(b.status))],
    ], batches.data),
    el("h2", {}, "Asynchronous requests"),
    requests.data.length === 0 ? el("p", {}, "No asynchronous request.") : table([
      ["id", (j) => j.id], ["key", (j) => j.owner], ["path", (j) => j.path],
      ["status", (j) => status(j.status)], ["answer", (j) => el("span", { class: j.response_status >= 400 ? "bad" : "" }, j.response_status ?? "-")],
      ["created", (j) => when(j.created_at)],
      ["", (j) => cancelButton(`request ${j.id}`, `/admin/async/${encodeURIComponent(j.id)}/cancel`,
        j.status !== "completed")],
    ], requests.data));
}

// Config: the redacted settings, their hash, and a reload.

async function config() {
  const loaded = await api("/admin/config");
  const outcome = el("div", { "aria-live": "polite" });
  const reload = el("button", {
    type: "button",
    onclick: async () => {
      try {
        const done = await api("/admin/reload", { method: "POST" });
        outcome.replaceChildren(el("p", { class: "good" }, `Reloaded (${done.status}), hash ${done.hash}.`));
      } catch (error) {
        outcome.replaceChildren(failed(error));
      }
    },
  }, "Reload the config file");
  const at = new Date(loaded.loaded_at * 1000).toISOString();
  show(el("h2", {}, "Config"), el("p", {}, `Hash ${loaded.hash}, loaded at ${at}.`),
    el("div", { class: "row" }, reload), outcome,
    el("pre", {}, JSON.stringify(loaded.config, null, 2)));
}

document.getElementById("sign-in").addEventListener("submit", signIn);
document.getElementById("sign-out").addEventListener("click", () => signOut());
window.addEventListener("hashchange", route);
route();
