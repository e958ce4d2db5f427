// ubroker console: reads /stats and /queues every second (per node behind
// the cluster's HAProxy) and acts through the queue admin routes. It keeps
// its history (rates, the depth chart) in this page only, and its token in
// sessionStorage only. Every value from the broker is put in the page as
// text (textContent), never as HTML.
"use strict";
(function () {
  const REFRESH_MS = 1000;
  const HISTORY_MS = 5 * 60 * 1000;
  const TOKEN_KEY = "ubroker-token";
  const SVG = "http://www.w3.org/2000/svg";
  const $ = (id) => document.getElementById(id);

  // Node bases: [""] for one broker, ["/nodes/0", ...] behind HAProxy.
  let bases = null;
  let timer = null;
  let previous = new Map(); // "node|queue" -> {t, published, acknowledged, dead_lettered}
  const history = []; // {t, ready, in_flight, delayed}
  const sparks = new Map(); // "node|queue" -> [{t, depth}]

  class Unauthorized extends Error {}

  function token() { return sessionStorage.getItem(TOKEN_KEY); }

  async function api(method, path, body) {
    const headers = {};
    const t = token();
    if (t) headers["Authorization"] = "Bearer " + t;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(path, {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    let data = null;
    try { data = await response.json(); } catch (_) { data = null; }
    if (response.status === 401) throw new Unauthorized(data && data.error || "unauthorized");
    if (!response.ok) {
      const code = data && data.code ? data.code : "http_" + response.status;
      const message = data && data.error ? data.error : response.statusText;
      const error = new Error(message + " (" + code + ")");
      error.status = response.status;
      error.code = code;
      throw error;
    }
    return data;
  }

  // ---- formatting ---------------------------------------------------------
  const integer = new Intl.NumberFormat("en-US");
  function fmtInt(n) { return integer.format(n); }
  function fmtRate(r) { return r === null || r === undefined ? "–" : r.toFixed(1); }
  function fmtBytes(n) {
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return (i === 0 ? n : n.toFixed(1)) + " " + units[i];
  }
  function fmtAge(ms) {
    if (!ms) return "–";
    if (ms < 1000) return ms + " ms";
    const s = ms / 1000;
    if (s < 60) return s.toFixed(1) + " s";
    if (s < 3600) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
    return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  }
  function el(tag, text, attrs) {
    const node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = text;
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }
  function notice(text, ok) {
    const n = $("notice");
    n.textContent = text;
    n.className = "notice " + (ok ? "ok" : "error");
  }

  // ---- sign in --------------------------------------------------------------
  function showLogin(message) {
    $("app").hidden = true;
    $("login").hidden = false;
    $("sign-out").hidden = true;
    $("login-error").textContent = message || "";
    $("status").textContent = "Signed out";
    $("token").focus();
  }
  function showApp() {
    $("login").hidden = true;
    $("app").hidden = false;
    $("sign-out").hidden = !token();
  }
  function unauthorized() {
    stop();
    bases = null;
    if (token()) {
      sessionStorage.removeItem(TOKEN_KEY);
      showLogin("The broker refused this token (401 unauthorized). Check the value the broker was started with (--auth-token) and try again.");
    } else {
      showLogin("This broker requires a token: enter the value of its --auth-token.");
    }
  }
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token").value = "";
    $("login-error").textContent = "";
    start();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    stop();
    bases = null;
    showLogin("Signed out.");
  });
  $("pause").addEventListener("change", () => {
    if ($("pause").checked) { stop(); $("status").textContent = "Paused"; } else start();
  });

  // ---- refresh --------------------------------------------------------------
  async function discover() {
    // Behind the cluster's HAProxy, GET /nodes answers {"nodes": N}; a
    // single broker has no such route (404).
    try {
      const data = await api("GET", "/nodes");
      const n = data && Number.isInteger(data.nodes) && data.nodes > 0 ? data.nodes : 0;
      bases = n ? Array.from({ length: n }, (_, i) => "/nodes/" + i) : [""];
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      if (error.status === 404) bases = [""];
      else throw error;
    }
    document.body.classList.toggle("cluster", bases.length > 1 || bases[0] !== "");
  }

  async function readNode(base, index) {
    try {
      const [stats, list] = await Promise.all([api("GET", base + "/stats"), api("GET", base + "/queues")]);
      const settings = new Map(list.queues.map((q) => [q.name, q]));
      return { index, base, up: true, stats, settings };
    } catch (error) {
      if (error instanceof Unauthorized) throw error;
      return { index, base, up: false, error: error.message };
    }
  }

  function rate(key, field, current, now) {
    const before = previous.get(key);
    if (!before || before[field] === undefined || current < before[field]) return null;
    const seconds = (now - before.t) / 1000;
    return seconds > 0 ? (current - before[field]) / seconds : null;
  }

  async function refresh() {
    timer = null;
    try {
      if (!bases) await discover();
      const nodes = await Promise.all(bases.map(readNode));
      showApp();
      render(nodes, performance.now());
      const down = nodes.filter((n) => !n.up);
      $("status").textContent = down.length
        ? "Updated " + new Date().toLocaleTimeString() + ", " + down.length + " node(s) unreachable"
        : "Updated " + new Date().toLocaleTimeString();
    } catch (error) {
      if (error instanceof Unauthorized) { unauthorized(); return; }
      $("status").textContent = "Cannot reach the broker: " + error.message;
    }
    if (!$("pause").checked && timer === null && !$("app").hidden) timer = setTimeout(refresh, REFRESH_MS);
  }
  function stop() { if (timer !== null) { clearTimeout(timer); timer = null; } }
  function start() { stop(); timer = setTimeout(refresh, 0); }

  // ---- rendering --------------------------------------------------------------
  function render(nodes, now) {
    const rows = [];
    const seen = new Map();
    const totals = { ready: 0, in_flight: 0, delayed: 0, publish: 0, ack: 0, queues: 0 };
    let ratesKnown = false;
    for (const node of nodes) {
      if (!node.up) continue;
      for (const [name, s] of Object.entries(node.stats.queues)) {
        const key = node.index + "|" + name;
        const row = {
          node: node.index, base: node.base, name, s, key,
          settings: node.settings.get(name),
          publishRate: rate(key, "published", s.published, now),
          ackRate: rate(key, "acknowledged", s.acknowledged, now),
          deadRate: rate(key, "dead_lettered", s.dead_lettered, now),
        };
        rows.push(row);
        seen.set(key, { t: now, published: s.published, acknowledged: s.acknowledged, dead_lettered: s.dead_lettered });
        totals.ready += s.ready; totals.in_flight += s.in_flight; totals.delayed += s.delayed; totals.queues++;
        if (row.publishRate !== null) { totals.publish += row.publishRate; ratesKnown = true; }
        if (row.ackRate !== null) totals.ack += row.ackRate;
        const spark = sparks.get(key) || [];
        spark.push({ t: now, depth: s.ready + s.in_flight + s.delayed });
        while (spark.length && spark[0].t < now - HISTORY_MS) spark.shift();
        sparks.set(key, spark);
      }
    }
    previous = seen;
    for (const key of [...sparks.keys()]) if (!seen.has(key)) sparks.delete(key);
    history.push({ t: now, ready: totals.ready, in_flight: totals.in_flight, delayed: totals.delayed });
    while (history.length && history[0].t < now - HISTORY_MS) history.shift();

    $("total-publish-rate").textContent = ratesKnown ? fmtRate(totals.publish) + " /s" : "–";
    $("total-ack-rate").textContent = ratesKnown ? fmtRate(totals.ack) + " /s" : "–";
    $("total-ready").textContent = fmtInt(totals.ready);
    $("total-in-flight").textContent = fmtInt(totals.in_flight);
    $("total-delayed").textContent = fmtInt(totals.delayed);
    $("total-queues").textContent = fmtInt(totals.queues);
    $("total-nodes").textContent = nodes.filter((n) => n.up).length + " of " + nodes.length + " up";
    renderNodes(nodes);
    renderChart(now);
    rows.sort((a, b) => a.name.localeCompare(b.name) || a.node - b.node);
    // The tables are rebuilt on every refresh: a keyboard user's focus on
    // one of their buttons moves to the same button in the new rows.
    const focused = document.activeElement;
    const refocus = focused && focused.closest("#queues, #dead") ? focused.getAttribute("aria-label") : null;
    renderQueues(rows.filter((r) => !r.name.endsWith(".dead")));
    renderDead(rows.filter((r) => r.name.endsWith(".dead")), rows);
    if (refocus) {
      const again = [...document.querySelectorAll("#queues button, #dead button")]
        .find((b) => b.getAttribute("aria-label") === refocus);
      if (again) again.focus();
    }
  }

  function renderNodes(nodes) {
    const list = $("nodes");
    list.replaceChildren();
    if (nodes.length === 1 && nodes[0].base === "") return;
    for (const node of nodes) {
      const item = el("li", "node " + node.index + ": " + (node.up ? "up" : "unreachable (" + node.error + ")"));
      if (!node.up) item.className = "down";
      list.append(item);
    }
  }

  function polyline(points, cls) {
    const line = document.createElementNS(SVG, "polyline");
    line.setAttribute("points", points.join(" "));
    line.setAttribute("class", cls);
    return line;
  }

  function renderChart(now) {
    const svg = $("chart");
    const title = $("chart-title");
    svg.replaceChildren(title);
    const W = 800, H = 220, top = 10, bottom = 20;
    const max = Math.max(1, ...history.map((h) => Math.max(h.ready, h.in_flight, h.delayed)));
    // The time axis grows with the history, from 1 minute up to the 5
    // minutes kept, so that a fresh page's chart is not a sliver.
    const span = Math.min(HISTORY_MS, Math.max(60 * 1000, history.length ? now - history[0].t : 0));
    const x = (t) => W - ((now - t) / span) * W;
    const y = (v) => top + (H - top - bottom) * (1 - v / max);
    for (const frac of [0, 0.5, 1]) {
      const line = document.createElementNS(SVG, "line");
      line.setAttribute("x1", 0); line.setAttribute("x2", W);
      line.setAttribute("y1", y(max * frac)); line.setAttribute("y2", y(max * frac));
      line.setAttribute("class", "grid");
      svg.append(line);
    }
    for (const field of ["ready", "in_flight", "delayed"]) {
      const points = history.map((h) => x(h.t).toFixed(1) + "," + y(h[field]).toFixed(1));
      svg.append(polyline(points, field.replace("_", "-")));
    }
    svg.dataset.samples = String(history.length);
    $("chart-max").textContent = "(scale: 0 to " + fmtInt(max) + ", over the last " +
      Math.round(span / 1000) + " s)";
  }

  function sparkline(key) {
    const spark = sparks.get(key) || [];
    const svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("viewBox", "0 0 90 22");
    svg.setAttribute("aria-hidden", "true");
    if (spark.length > 1) {
      const max = Math.max(1, ...spark.map((p) => p.depth));
      const t0 = spark[0].t, span = Math.max(1, spark[spark.length - 1].t - t0);
      svg.append(polyline(spark.map((p) => ((p.t - t0) / span * 88 + 1).toFixed(1) + "," + (21 - p.depth / max * 20).toFixed(1)), ""));
    }
    return svg;
  }

  function button(label, accessibleName, onClick, danger) {
    const b = el("button", label, { type: "button", "aria-label": accessibleName });
    if (danger) b.className = "danger";
    b.addEventListener("click", onClick);
    return b;
  }

  function renderQueues(rows) {
    const body = $("queues").tBodies[0];
    body.replaceChildren();
    $("no-queues").hidden = rows.length > 0;
    $("queues").hidden = rows.length === 0;
    for (const r of rows) {
      const s = r.s;
      const tr = el("tr", null, { "data-queue": r.name, "data-node": r.node });
      // A queue with work that nothing acknowledges stands out.
      if (s.ready > 0 && r.ackRate === 0 && s.oldest_ready_age_ms > 10000) tr.className = "stuck";
      tr.append(el("th", r.name, { scope: "row" }));
      tr.append(el("td", String(r.node), { class: "node-col" }));
      tr.append(el("td", fmtInt(s.ready), { "data-field": "ready" }));
      tr.append(el("td", fmtInt(s.in_flight), { "data-field": "in_flight" }));
      tr.append(el("td", fmtInt(s.delayed), { "data-field": "delayed" }));
      tr.append(el("td", fmtBytes(s.bytes), { "data-field": "bytes" }));
      tr.append(el("td", fmtAge(s.oldest_ready_age_ms), { "data-field": "oldest_ready_age" }));
      tr.append(el("td", fmtInt(s.waiting_fetches), { "data-field": "waiting_fetches" }));
      tr.append(el("td", fmtRate(r.publishRate), { "data-field": "publish_rate" }));
      tr.append(el("td", fmtRate(r.ackRate), { "data-field": "ack_rate" }));
      const depth = el("td", null, { "data-field": "depth" });
      depth.append(sparkline(r.key));
      tr.append(depth);
      const set = r.settings;
      tr.append(el("td", set ? fmtInt(set.ttl_ms) + " ms" : "–", { "data-field": "ttl_ms" }));
      tr.append(el("td", set ? (set.max_deliveries === 0 ? "unlimited" : fmtInt(set.max_deliveries)) : "–", { "data-field": "max_deliveries" }));
      const actions = el("div", null, { class: "actions" });
      actions.append(button("Settings", "Settings of queue " + r.name, () => openSettings(r)));
      actions.append(button("Delete", "Delete queue " + r.name, () => confirmDelete(r), true));
      const cellOfActions = el("td");
      cellOfActions.append(actions);
      tr.append(cellOfActions);
      body.append(tr);
    }
  }

  function renderDead(dead, all) {
    const body = $("dead").tBodies[0];
    body.replaceChildren();
    $("no-dead").hidden = dead.length > 0;
    $("dead").hidden = dead.length === 0;
    for (const r of dead) {
      const source = r.name.slice(0, -".dead".length);
      const origin = all.find((o) => o.name === source && o.node === r.node);
      const tr = el("tr", null, { "data-queue": r.name, "data-node": r.node });
      const deadRate = origin ? origin.deadRate : null;
      if (deadRate > 0) tr.className = "filling";
      tr.append(el("th", r.name, { scope: "row" }));
      tr.append(el("td", source, { "data-field": "source" }));
      tr.append(el("td", String(r.node), { class: "node-col" }));
      tr.append(el("td", fmtInt(r.s.ready), { "data-field": "ready" }));
      tr.append(el("td", fmtRate(deadRate), { "data-field": "dead_rate" }));
      tr.append(el("td", fmtAge(r.s.oldest_ready_age_ms), { "data-field": "oldest_ready_age" }));
      const actions = el("div", null, { class: "actions" });
      actions.append(button("Redrive", "Redrive " + r.name + " to " + source, () => confirmRedrive(r, source)));
      actions.append(button("Delete", "Delete queue " + r.name, () => confirmDelete(r), true));
      const cellOfActions = el("td");
      cellOfActions.append(actions);
      tr.append(cellOfActions);
      body.append(tr);
    }
  }

  // ---- actions ----------------------------------------------------------------
  function confirmAction(title, text, okLabel) {
    const dialog = $("confirm-dialog");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-ok").textContent = okLabel;
    return new Promise((resolve) => {
      const done = (answer) => {
        $("confirm-ok").onclick = null;
        $("confirm-cancel").onclick = null;
        dialog.onclose = null;
        if (dialog.open) dialog.close();
        resolve(answer);
      };
      $("confirm-ok").onclick = () => done(true);
      $("confirm-cancel").onclick = () => done(false);
      dialog.onclose = () => done(false);
      dialog.showModal();
      $("confirm-cancel").focus();
    });
  }

  async function act(what, run) {
    try {
      const message = await run();
      notice(message, true);
    } catch (error) {
      if (error instanceof Unauthorized) { unauthorized(); return; }
      notice(what + " failed: " + error.message, false);
    }
    if (!$("pause").checked && !$("app").hidden) start();
  }

  async function confirmDelete(r) {
    const total = r.s.ready + r.s.in_flight + r.s.delayed;
    const ok = await confirmAction("Delete queue " + r.name + "?",
      "Delete queue " + r.name + " and its " + fmtInt(total) + " message(s)? This cannot be undone.",
      "Delete queue");
    if (!ok) return;
    await act("Delete", async () => {
      const answer = await api("DELETE", r.base + "/queues/" + r.name);
      return "Deleted queue " + r.name + " and its " + fmtInt(answer.deleted) + " message(s).";
    });
  }

  async function confirmRedrive(r, source) {
    const ok = await confirmAction("Redrive " + r.name + "?",
      "Move the " + fmtInt(r.s.ready) + " ready message(s) of " + r.name + " back to " + source + "?",
      "Redrive");
    if (!ok) return;
    await act("Redrive", async () => {
      const answer = await api("POST", r.base + "/queues/" + r.name + "/redrive");
      return "Moved " + fmtInt(answer.moved) + " message(s) from " + r.name + " to " + source + ".";
    });
  }

  let editing = null;
  function openSettings(r) {
    editing = r;
    $("settings-title").textContent = "Settings of queue " + r.name;
    $("settings-ttl").value = r.settings ? r.settings.ttl_ms : "";
    $("settings-max").value = r.settings ? r.settings.max_deliveries : "";
    $("settings-dialog").showModal();
  }
  $("settings-cancel").addEventListener("click", () => $("settings-dialog").close());
  $("settings-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const r = editing;
    if (!r) return;
    const ttl = Number($("settings-ttl").value);
    const max = Number($("settings-max").value);
    $("settings-dialog").close();
    const before = r.settings
      ? " (now " + fmtInt(r.settings.ttl_ms) + " ms and " + fmtInt(r.settings.max_deliveries) + ")" : "";
    const ok = await confirmAction("Change queue " + r.name + "?",
      "Set queue " + r.name + " to a lease TTL of " + fmtInt(ttl) + " ms and at most " + fmtInt(max) +
      " deliveries (0: unlimited)" + before + "?", "Apply settings");
    if (!ok) return;
    await act("Settings", async () => {
      const q = await api("PUT", r.base + "/queues/" + r.name, { ttl_ms: ttl, max_deliveries: max });
      return "Queue " + q.name + ": lease TTL " + fmtInt(q.ttl_ms) + " ms, max deliveries " + fmtInt(q.max_deliveries) + ".";
    });
  });

  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("create-name").value.trim();
    const body = {};
    if ($("create-ttl").value !== "") body.ttl_ms = Number($("create-ttl").value);
    if ($("create-max").value !== "") body.max_deliveries = Number($("create-max").value);
    // Through the cluster's HAProxy, /queues/{queue} reaches the owning node.
    await act("Create", async () => {
      const q = await api("PUT", "/queues/" + name, body);
      $("create-form").reset();
      return "Queue " + q.name + " is ready (lease TTL " + fmtInt(q.ttl_ms) + " ms).";
    });
  });

  start();
})();
