// The Ember dashboard: reads /dashboard/api/overview every two seconds and draws it. Every name
// and log line is set as text (never as HTML): they come from deployed apps.
"use strict";

const REFRESH_MS = 2000;
const charts = {};
let timer = null;

const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "class") node.className = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(child ?? ""));
  }
  return node;
}

function table(headers, rows, numeric = []) {
  if (!rows.length) return el("p", { class: "empty" }, "None yet.");
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  const body = rows.map((row) =>
    el("tr", {}, ...row.map((cell, i) => el("td", numeric.includes(i) ? { class: "num" } : {}, cell))));
  return el("table", {}, el("thead", {}, head), el("tbody", {}, ...body));
}

const fixed = (x, digits = 2) => (x === null || x === undefined ? "" : Number(x).toFixed(digits));
const seconds = (x) => (x === null || x === undefined ? "" : `${(x * 1000).toFixed(1)} ms`);
const usd = (x) => (x >= 0.1 || x === 0 ? x.toFixed(2) : x.toFixed(6));
const when = (ts) => new Date(ts * 1000).toLocaleTimeString();

function showLogin(message) {
  $("main").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
}

async function login(event) {
  event.preventDefault();
  const response = await fetch("/dashboard/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ token: $("token").value.trim() }),
    credentials: "same-origin",
  });
  $("token").value = "";
  if (!response.ok) {
    showLogin("That token is not a live admin token.");
    return;
  }
  refresh();
}

async function logout() {
  await fetch("/dashboard/logout", { method: "POST", credentials: "same-origin" });
  showLogin();
}

async function refresh() {
  clearTimeout(timer);
  try {
    const response = await fetch("/dashboard/api/overview", { credentials: "same-origin" });
    if (response.status === 401) {
      showLogin();
      return;
    }
    if (response.ok) render(await response.json());
  } catch (error) {
    $("updated").textContent = `cannot reach the server (${error})`;
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

function render(data) {
  $("login").hidden = true;
  $("main").hidden = false;
  $("logout").hidden = false;
  $("updated").textContent = `updated ${when(data.now)}`;
  renderApps(data.apps);
  renderCharts(data.series);
  renderCosts(data.costs);
  $("cold").replaceChildren(table(["app", "function", "tier", "count", "mean", "p50"],
    data.cold_starts.map((c) => [c.app, c.function, c.tier, c.count, seconds(c.mean_s), seconds(c.p50_s)]),
    [3, 4, 5]));
  $("errors").replaceChildren(table(["time", "app", "function", "kind", "status"],
    data.errors.map((e) => [when(e.at), e.app, e.function, e.kind, e.status])));
  const logs = data.logs.map((l) => `${when(l.ts)} ${l.app}.${l.function} ${l.replica.slice(0, 12)} ${l.text}`);
  const pre = $("logs");
  const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
  pre.textContent = logs.join("\n");
  if (atBottom) pre.scrollTop = pre.scrollHeight;
}

function renderApps(apps) {
  const rows = [];
  for (const app of apps) {
    for (const fn of app.functions) {
      const replicas = el("span", { class: "replicas" }, ...fn.replicas.map((r) =>
        el("span", { class: "replica", "data-state": r.state, title: `${r.id} v${r.version}` },
          `${r.state}${r.gpus.length ? " GPU " + r.gpus.join(",") : ""}`)));
      const row = el("tr", { "data-app": app.name, "data-function": fn.name },
        el("td", {}, `${app.name} (v${app.version}, ${app.state})`),
        el("td", {}, fn.name),
        el("td", {}, replicas),
        el("td", { class: "num queued" }, String(fn.queued)),
        el("td", { class: "num requests" }, String(fn.requests)),
        el("td", { class: "num rate" }, fixed(fn.rate)),
        el("td", { class: "num" }, seconds(fn.p50)),
        el("td", { class: "num" }, seconds(fn.p95)),
        el("td", { class: "num" }, fixed(fn.error_rate)),
        el("td", { class: "num" }, seconds(fn.ttft_p50)));
      rows.push(row);
    }
  }
  const headers = ["app", "function", "replicas", "queued", "requests", "req/s (1 min)", "p50",
    "p95", "errors/s", "TTFT p50"];
  const head = el("tr", {}, ...headers.map((h) => el("th", {}, h)));
  $("apps").replaceChildren(rows.length
    ? el("table", { id: "functions" }, el("thead", {}, head), el("tbody", {}, ...rows))
    : el("p", { class: "empty" }, "No apps deployed."));
}

function renderCosts(costs) {
  const apps = new Set([...Object.keys(costs.today), ...Object.keys(costs.month)]);
  const budgets = Object.fromEntries(costs.budgets.map((b) => [b.scope, b]));
  const rows = [...apps].sort().map((app) => {
    const budget = budgets[app];
    const state = budget ? el("span", { class: budget.state === "exceeded" ? "over" : budget.state === "warning" ? "warn" : "" },
      `${usd(budget.monthly_usd)} (${budget.state})`) : "";
    return [app, usd(costs.today[app] || 0), usd(costs.month[app] || 0), state];
  });
  const server = budgets["*"];
  if (server) rows.push(["the server", "", usd(server.spent_usd), `${usd(server.monthly_usd)} (${server.state})`]);
  $("costs").replaceChildren(table(["app", "today", "this month", "monthly budget"], rows, [1, 2]));
}

function renderCharts(series) {
  if (typeof uPlot === "undefined") return;
  draw("chart-rate", series.t, [["requests/s", series.rate, "#1c7ed6"], ["errors/s", series.errors, "#e03131"]]);
  draw("chart-latency", series.t, [["p50", series.p50, "#2f9e44"], ["p95", series.p95, "#f08c00"]]);
  draw("chart-ttft", series.t, [["p50", series.ttft_p50, "#7048e8"]]);
  draw("chart-replicas", series.t, [["ready", series.ready, "#2f9e44"], ["starting", series.starting, "#f08c00"]]);
}

function draw(id, t, lines) {
  const data = [t, ...lines.map(([, values]) => values)];
  if (charts[id]) {
    charts[id].setData(data);
    return;
  }
  const width = Math.max(300, $(id).clientWidth || 420);
  charts[id] = new uPlot({
    width, height: 160,
    scales: { x: { time: true, range: (u, min, max) => [Math.min(min, max - 900), max] } },
    series: [{}, ...lines.map(([label, , stroke]) => ({ label, stroke, width: 2, spanGaps: true }))],
    axes: [{}, { size: 50 }],
  }, data, $(id));
}

$("login-form").addEventListener("submit", login);
$("logout").addEventListener("click", logout);
refresh();
