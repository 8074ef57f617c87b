// hybridroute operations dashboard. Every figure comes from the gateway's admin API, read with
// the operator's token (kept in sessionStorage, this tab only); the open view refreshes every
// two seconds. DOM is built with textContent only: nothing from the API is parsed as HTML.
"use strict";

(function () {
  const TOKEN_KEY = "hybridroute.admin-token";
  const REFRESH_MS = 2000;
  const VIEWS = ["overview", "performance", "routing", "cost", "controls"];
  const state = {
    token: sessionStorage.getItem(TOKEN_KEY) || "",
    view: "overview",
    timer: null,
    busy: false,
    confirmAction: null,
    bannerUntil: 0,
  };

  class AuthError extends Error {}

  // -- helpers ---------------------------------------------------------------------------------

  const $ = (selector) => document.querySelector(selector);
  const byTest = (id) => document.querySelector(`[data-testid="${id}"]`);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.appendChild(typeof child === "string" || typeof child === "number"
        ? document.createTextNode(String(child)) : child);
    }
    return node;
  }

  function text(id, value, cls) {
    const node = byTest(id);
    if (!node) return;
    node.textContent = value;
    if (cls !== undefined) node.className = node.className.replace(/\bs-\S+/g, "").trim() + (cls ? ` s-${cls}` : "");
  }

  const pct = (v, digits = 1) => (v === null || v === undefined ? "–" : `${(v * 100).toFixed(digits)} %`);
  const ms = (v) => (v === null || v === undefined ? "–" : `${Math.round(v)} ms`);
  const num = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
  const when = (epoch) => (epoch ? new Date(epoch * 1000).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–");

  function table(headers, rows, numeric) {
    if (!rows.length) return el("p", { class: "empty-note" }, "nothing yet");
    const num = new Set(numeric || []);
    return el("div", { class: "table-wrap" }, el("table", {},
      el("thead", {}, el("tr", {}, headers.map((h, i) => el("th", { scope: "col", class: num.has(i) ? "num" : null }, h)))),
      el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell, i) =>
        el("td", { class: num.has(i) ? "num" : null }, cell)))))));
  }

  async function api(path, options) {
    const opts = options || {};
    const headers = { accept: "application/json" };
    if (state.token) headers.authorization = `Bearer ${state.token}`;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    const response = await fetch(path, {
      method: opts.method || "GET",
      headers: headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
      cache: "no-store",
    });
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (response.status === 401 || (response.status === 403 && !state.token)) {
      throw new AuthError((body && body.error && body.error.message) || "sign in to continue");
    }
    if (!response.ok) {
      throw new Error((body && body.error && body.error.message) || `${path} answered ${response.status}`);
    }
    return body;
  }

  function banner(message, holdMs) {
    if (!message && Date.now() < state.bannerUntil) return;
    state.bannerUntil = message && holdMs ? Date.now() + holdMs : 0;
    const node = $("#banner");
    node.textContent = message || "";
    node.hidden = !message;
  }

  // -- overview --------------------------------------------------------------------------------

  async function loadOverview() {
    const [health, slo, cost, alerts, timeline] = await Promise.all([
      api("/admin/health/status"), api("/admin/slo?window=5m"), api("/admin/cost?days=1"), api("/admin/alerts"),
      api("/admin/metrics/timeline?window=10m"),
    ]);
    window.HRCharts.line(byTest("chart-overview-traffic"), [
      { name: "requests", points: seriesOf(timeline.points, (p) => p.requests) },
      { name: "errors", points: seriesOf(timeline.points, (p) => p.errors) },
    ], { label: "Requests and errors per 10 seconds" });
    const parts = health.score_parts || {};
    byTest("score-parts").replaceChildren(table(["part", "value"],
      Object.entries(parts).map(([name, value]) => [name.replace(/_/g, " "), pct(value)]), [1]));
    text("health-score", String(health.score));
    text("health-status", health.status, health.status);
    const f = slo.figures;
    const checks = slo.slos || {};
    const verdict = (name) => {
      const c = checks[name];
      if (!c) return ["", ""];
      const target = c.unit === "ms" ? `${c.target} ms` : pct(c.target, 0);
      if (c.met === null) return [`target ${c.comparison} ${target} (too few requests to judge)`, ""];
      return [`target ${c.comparison} ${target}: ${c.met ? "met" : "missed"}`, c.met ? "met" : "missed"];
    };
    text("metric-p95", ms(f.generation_p95_ms));
    text("metric-p95-slo", ...verdict("generation_p95"));
    text("metric-error-rate", pct(f.error_rate, 2));
    text("metric-error-slo", ...verdict("error_rate"));
    text("metric-throughput", f.throughput_rps === null ? "–" : `${num(f.throughput_rps)} req/s`);
    text("metric-requests", `${slo.requests} requests`);
    text("metric-cache-hit", pct(f.cache_hit_rate));
    text("metric-cache-slo", ...verdict("cache_hit_rate"));
    const budgets = (cost.budgets && cost.budgets.budgets) || [];
    if (budgets.length) {
      const top = budgets.reduce((a, b) => (b.utilisation > a.utilisation ? b : a));
      text("metric-budget", pct(top.utilisation), top.level === "normal" ? "ok" : top.level === "elevated" ? "warning" : "critical");
      text("metric-budget-name", `${top.budget} ${top.period} (${top.window})`);
    } else {
      text("metric-budget", "no budget");
      text("metric-budget-name", "none configured");
    }
    renderAlerts(alerts.active);
  }

  function renderAlerts(active) {
    const holder = byTest("alerts");
    if (!active.length) {
      holder.replaceChildren(el("p", { class: "empty-note", "data-testid": "no-alerts" }, "No active alerts."));
      return;
    }
    const rows = active.map((a) => [
      el("span", { class: `s-${a.severity}` }, a.severity),
      el("span", { "data-testid": "alert-rule" }, a.rule),
      a.summary,
      when(a.started_at),
      el("span", { class: `s-${a.status}`, "data-testid": "alert-status" }, a.status + (a.acknowledged_by ? ` by ${a.acknowledged_by}` : "")),
      a.status === "firing"
        ? el("button", { type: "button", class: "quiet", "aria-label": `Acknowledge alert ${a.rule}`,
          onclick: () => acknowledge(a) }, "Acknowledge")
        : "",
    ]);
    holder.replaceChildren(table(["severity", "rule", "summary", "since", "status", ""], rows));
    for (const tr of holder.querySelectorAll("tbody tr")) tr.setAttribute("data-testid", "alert-row");
  }

  function acknowledge(alert) {
    confirmThen(`Acknowledge alert "${alert.summary}"?`, async (reason) => {
      await api(`/admin/alerts/${encodeURIComponent(alert.id)}/acknowledge`, {
        method: "POST", body: reason ? { note: reason } : {},
      });
    });
  }

  // -- performance -----------------------------------------------------------------------------

  function seriesOf(points, pick) {
    return points.map((p) => [p.end, pick(p)]);
  }

  function keysOf(points, field) {
    const names = new Set();
    for (const p of points) for (const name of Object.keys(p[field])) names.add(name);
    return [...names].sort();
  }

  async function loadPerformance() {
    const windowParam = $("#performance-window").value;
    const [timeline, latencies] = await Promise.all([
      api(`/admin/metrics/timeline?window=${windowParam}`), api(`/admin/metrics/provider-latencies?window=${windowParam}`),
    ]);
    const points = timeline.points;
    const chart = window.HRCharts.line;
    chart(byTest("chart-latency"), ["p50", "p95", "p99"].map((q) => ({
      name: q, points: seriesOf(points, (p) => p.generated[`${q}_ms`]) })),
    { label: "Latency of generated answers, p50, p95 and p99, in milliseconds" });
    chart(byTest("chart-cached"), ["p50", "p95", "p99"].map((q) => ({
      name: q, points: seriesOf(points, (p) => p.cached[`${q}_ms`]) })),
    { label: "Latency of cached answers in milliseconds" });
    const q = $("#performance-quantile").value;
    for (const node of document.querySelectorAll("[data-quantile]")) node.textContent = q.toUpperCase();
    chart(byTest("chart-route-p95"), keysOf(points, "routes").map((route) => ({
      name: route, points: seriesOf(points, (p) => (p.routes[route] ? p.routes[route][`${q}_ms`] : null)) })),
    { label: `${q.toUpperCase()} latency by route in milliseconds` });
    chart(byTest("chart-operation-p95"), keysOf(points, "operations").map((op) => ({
      name: op, points: seriesOf(points, (p) => (p.operations[op] ? p.operations[op][`${q}_ms`] : null)) })),
    { label: `${q.toUpperCase()} latency by operation type in milliseconds` });
    chart(byTest("chart-errors"), [{ name: "error rate", points: seriesOf(points, (p) =>
      (p.error_rate === null ? null : p.error_rate * 100)) }],
    { label: "Error rate in percent" });
    chart(byTest("chart-throughput"), [{ name: "requests/s", points: seriesOf(points, (p) => p.throughput_rps) }],
      { label: "Throughput in requests per second" });
    const rows = Object.entries(latencies.routes).map(([route, r]) => [
      route, String(r.count), ms(r.p50_ms), ms(r.p95_ms), ms(r.p99_ms), String(r.errors)]);
    rows.push(["cache hits", String(latencies.cached.count), ms(latencies.cached.p50_ms),
      ms(latencies.cached.p95_ms), ms(latencies.cached.p99_ms), "–"]);
    byTest("latency-table").replaceChildren(table(["answered by", "answers", "p50", "p95", "p99", "errors"], rows, [1, 2, 3, 4, 5]));
  }

  // -- routing ---------------------------------------------------------------------------------

  async function loadRouting() {
    const [health, timeline, breakers] = await Promise.all([
      api("/admin/health/status"), api("/admin/metrics/timeline?window=10m"), api("/admin/health/circuit-breakers"),
    ]);
    text("routing-accuracy", pct(health.routing_accuracy));
    text("routing-efficiency", pct(health.routing_efficiency));
    text("fallback-rate", pct(health.fallback_rate));
    const points = timeline.points;
    const chart = window.HRCharts.line;
    chart(byTest("chart-distribution"), keysOf(points, "routes").map((route) => ({
      name: route, points: seriesOf(points, (p) => (p.routes[route] ? p.routes[route].served : 0)) })),
    { label: "Requests served per route per 10 seconds" });
    chart(byTest("chart-fallbacks"), [{ name: "fallbacks", points: seriesOf(points, (p) => p.fallbacks) }],
      { label: "Requests served by a fallback route per 10 seconds" });
    const rows = breakers.routes.map((b) => [
      b.route,
      el("span", { class: `s-${b.state}`, "data-testid": `breaker-state-${b.route}` }, b.state),
      el("span", { class: `s-${b.availability.status}` }, b.availability.status),
      b.opened_because || b.last_error || "–",
      b.reopens_in_s === null || b.reopens_in_s === undefined ? "–" : `${num(b.reopens_in_s, 1)} s`,
      `${pct(b.failure_rate)} of ${b.requests}`,
    ]);
    byTest("breakers").replaceChildren(table(["route", "breaker", "availability", "reason", "next probe in", "failures"], rows));
    const recs = health.recommendations || [];
    byTest("recommendations").replaceChildren(recs.length
      ? el("ul", {}, recs.map((r) => el("li", {}, el("strong", { class: `s-${r.severity}` }, r.severity), ` ${r.action}: `, r.evidence)))
      : el("p", { class: "empty-note" }, "No recommendations: nothing stands out."));
  }

  // -- cost ------------------------------------------------------------------------------------

  function periodSeconds(budget) {
    if (budget.period === "daily") return 86400;
    const [year, month] = budget.window.split("-").map(Number);
    return new Date(Date.UTC(year, month, 0)).getUTCDate() * 86400;
  }

  function renderBudget(b, currency) {
    const total = periodSeconds(b);
    const elapsed = Math.max(1, total - b.resets_in_s);
    const spent = Number(b.spent);
    const projected = (spent / elapsed) * total;
    const limit = Number(b.limit);
    const width = Math.min(100, b.utilisation * 100);
    const fill = el("div", { class: `fill ${b.level}` });
    fill.style.width = `${width}%`;
    return el("div", { class: "budget", "data-testid": "budget" },
      el("div", { class: "label" },
        el("strong", {}, `${b.budget} · ${b.period} (${b.window})`),
        el("span", { "data-testid": "budget-utilisation" }, `${pct(b.utilisation)} used: ${b.spent} of ${b.limit} ${currency}`)),
      el("div", { class: "bar", role: "meter", "aria-label": `${b.budget} ${b.period} budget used`,
        "aria-valuemin": "0", "aria-valuemax": "100", "aria-valuenow": (b.utilisation * 100).toFixed(1) },
      fill, el("span", { class: "mark m80" }), el("span", { class: "mark m95" })),
      el("div", { class: "marks", "aria-hidden": "true" }, el("span", { class: "m80" }, "80 %"), el("span", { class: "m95" }, "95 %")),
      el("p", { class: "sub", "data-testid": "budget-projection" },
        `projected at the end of the ${b.period === "daily" ? "day" : "month"}: ${projected.toFixed(4)} ${currency}` +
        ` (${limit ? pct(projected / limit, 0) : "–"} of the limit) at the rate so far`));
  }

  async function loadCost() {
    const days = $("#cost-days").value;
    const [cost, timeline] = await Promise.all([api(`/admin/cost?days=${days}`), api("/admin/metrics/timeline?window=10m")]);
    const currency = (cost.budgets && cost.budgets.currency) || (cost.spend && cost.spend.currency) || "";
    const budgets = (cost.budgets && cost.budgets.budgets) || [];
    byTest("budgets").replaceChildren(...(budgets.length ? budgets.map((b) => renderBudget(b, currency))
      : [el("p", { class: "empty-note" }, "No budget is configured.")]));
    window.HRCharts.line(byTest("chart-cost"), [{ name: `cost (${currency})`,
      points: seriesOf(timeline.points, (p) => Number(p.cost)) }],
    { label: `Cost per 10 seconds in ${currency}` });
    window.HRCharts.line(byTest("chart-cost-routes"), keysOf(timeline.points, "routes").map((route) => ({
      name: route, points: seriesOf(timeline.points, (p) => (p.routes[route] ? Number(p.routes[route].cost) : 0)) })),
    { label: `Cost per route per 10 seconds in ${currency}` });
    const spend = cost.spend;
    if (!spend) {
      text("cost-total", cost.spend_error || "spend unavailable");
      return;
    }
    text("cost-total", `${spend.total.cost} ${currency} over ${spend.total.requests} requests`);
    for (const dimension of ["route", "model", "operation_type", "tenant"]) {
      const entries = Object.entries((spend.by && spend.by[dimension]) || {});
      entries.sort((a, b) => Number(b[1].cost) - Number(a[1].cost));
      byTest(`cost-by-${dimension}`).replaceChildren(table([dimension.replace("_", " "), "requests", "tokens in/out", `cost (${currency})`],
        entries.map(([name, s]) => [name, String(s.requests), `${s.input_tokens} / ${s.output_tokens}`, s.cost]), [1, 2, 3]));
    }
  }

  // -- controls --------------------------------------------------------------------------------

  async function loadControls() {
    const [flags, versions] = await Promise.all([api("/admin/feature-flags/bedrock"), api("/admin/config/routing-rules/versions")]);
    byTest("flags").replaceChildren(...Object.entries(flags.flags).map(([name, on]) =>
      el("div", { class: "flag", "data-testid": `flag-${name}` },
        el("code", {}, name),
        el("span", { class: on ? "on" : "off", "data-testid": `flag-state-${name}` }, on ? "on" : "off"),
        el("button", { type: "button", class: on ? "quiet" : "", "aria-label": `Turn ${name} ${on ? "off" : "on"}`,
          onclick: () => confirmThen(`Turn ${name} ${on ? "off" : "on"}? It takes effect on the next request.`, (reason) =>
            api("/admin/feature-flags/bedrock/update", { method: "POST", body: { flag: name, enabled: !on, reason: reason } })) },
        on ? "Turn off" : "Turn on"))));
    const rows = versions.versions.map((v) => {
      const changed = Object.entries(v.diff.changed);
      const details = el("details", {}, el("summary", {}, changed.length ? `${changed.length} row(s) changed` : "no row changed"),
        el("pre", { class: "diff" }, changed.map(([op, fields]) =>
          Object.entries(fields).map(([f, [a, b]]) => `${op}.${f}: ${JSON.stringify(a)} → ${JSON.stringify(b)}\n`).join("")).join("") || "–"));
      const current = v.version === versions.current;
      return [
        `${v.version}${current ? " (in force)" : ""}`, when(v.applied_at), v.author, v.comment || "–", details,
        current ? "" : el("button", { type: "button", class: "quiet", "aria-label": `Roll back to version ${v.version}`,
          onclick: () => confirmThen(`Apply version ${v.version} again (as a new version)?`, (reason) =>
            api("/admin/config/rollback", { method: "POST", body: { version: v.version, comment: reason } })) }, "Roll back"),
      ];
    });
    byTest("versions").replaceChildren(table(["version", "applied", "by", "comment", "diff", ""], rows));
  }

  // -- confirmation ----------------------------------------------------------------------------

  function confirmThen(message, action) {
    state.confirmAction = action;
    $("#confirm-text").textContent = message;
    $("#confirm-reason").value = "";
    $("#confirm").hidden = false;
    $("#confirm-reason").focus();
  }

  function closeConfirm() {
    $("#confirm").hidden = true;
    state.confirmAction = null;
  }

  async function confirmed() {
    const action = state.confirmAction;
    const reason = $("#confirm-reason").value.trim();
    closeConfirm();
    if (!action) return;
    try {
      await action(reason);
      banner("");
    } catch (error) {
      if (error instanceof AuthError) return showLogin(error.message);
      banner(error.message, 10000);
    }
    refresh();
  }

  // -- navigation, sign-in and refresh ---------------------------------------------------------

  const LOADERS = { overview: loadOverview, performance: loadPerformance, routing: loadRouting, cost: loadCost, controls: loadControls };

  function showLogin(message) {
    stop();
    for (const section of document.querySelectorAll("[data-view]")) section.hidden = true;
    $("#login").hidden = false;
    $("#login-error").textContent = message || "";
    $("#live").textContent = "signed out";
    $("#sign-out").hidden = true;
    $("#token").focus();
  }

  function show(view) {
    state.view = VIEWS.includes(view) ? view : "overview";
    $("#login").hidden = true;
    for (const section of document.querySelectorAll("[data-view]")) section.hidden = section.dataset.view !== state.view;
    for (const link of document.querySelectorAll("[data-nav]")) {
      if (link.dataset.nav === state.view) link.setAttribute("aria-current", "page");
      else link.removeAttribute("aria-current");
    }
    $("#sign-out").hidden = !state.token;
    stop();
    refresh();
    state.timer = setInterval(refresh, REFRESH_MS);
  }

  function stop() {
    if (state.timer) clearInterval(state.timer);
    state.timer = null;
  }

  async function refresh() {
    if (state.busy) return;
    state.busy = true;
    try {
      await LOADERS[state.view]();
      $("#live").textContent = `live · updated ${new Date().toLocaleTimeString()}`;
      document.body.dataset.loaded = state.view;
      banner("");
    } catch (error) {
      if (error instanceof AuthError) showLogin(error.message);
      else banner(`Could not refresh: ${error.message}`);
    } finally {
      state.busy = false;
    }
  }

  async function begin() {
    if (!state.token) {
      try {
        const session = await (await fetch("/dashboard/session", { cache: "no-store" })).json();
        if (session.token_required) return showLogin("");
      } catch (_) {
        return showLogin("The gateway cannot be reached.");
      }
    }
    show(location.hash.slice(1));
  }

  function start() {
    $("#login-form").addEventListener("submit", (event) => {
      event.preventDefault();
      state.token = $("#token").value.trim();
      sessionStorage.setItem(TOKEN_KEY, state.token);
      $("#token").value = "";
      show(location.hash.slice(1));
    });
    $("#sign-out").addEventListener("click", () => {
      state.token = "";
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("Signed out.");
    });
    $("#confirm-cancel").addEventListener("click", closeConfirm);
    $("#confirm-ok").addEventListener("click", confirmed);
    $("#confirm").addEventListener("keydown", (event) => {
      if (event.key === "Escape") closeConfirm();
      if (event.key === "Enter") confirmed();
    });
    $("#disable-all").addEventListener("click", () => confirmThen(
      "Turn all five flags off? Every operation goes to the MCP route from the next request.",
      (reason) => api("/admin/feature-flags/bedrock/disable-all", { method: "POST", body: { reason: reason } })));
    $("#performance-window").addEventListener("change", refresh);
    $("#performance-quantile").addEventListener("change", refresh);
    $("#cost-days").addEventListener("change", refresh);
    window.addEventListener("hashchange", () => {
      if ($("#login").hidden) show(location.hash.slice(1));
    });
    begin();
  }

  document.addEventListener("DOMContentLoaded", start);
})();
