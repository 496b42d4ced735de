"use strict";
const POLL_MS = 1000, HIDDEN_POLL_MS = 5000, MAX_ROWS = 200;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const ui = {filter: "", gen: 0, since: 0, paused: false, routeKeys: null, alertKey: null,
  dockerKey: null,
  filterKey: null, rows: new Map()};

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = String(text);
  return e;
}
function svg(tag, attrs) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  return e;
}
function ms(v) {
  if (v === null || v === undefined) return "\u2014";
  if (v < 0.1) return Math.round(v * 1000) + " \u00b5s";
  if (v < 1) return v.toFixed(2) + " ms";
  if (v < 10) return v.toFixed(1) + " ms";
  if (v < 1000) return Math.round(v) + " ms";
  return (v / 1000).toFixed(2) + " s";
}
function rate(v) { return v < 10 ? v.toFixed(1) : String(Math.round(v)); }
function bytes(n) {
  if (n < 1024) return n + " B";
  if (n < 1048576) return (n / 1024).toFixed(1) + " KiB";
  if (n < 1073741824) return (n / 1048576).toFixed(1) + " MiB";
  return (n / 1073741824).toFixed(2) + " GiB";
}
function ago(s) {
  s = Math.max(0, Math.round(s));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor(s % 3600 / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor(s % 86400 / 3600) + " h";
}
function clock(t, millis) {
  const d = new Date(t * 1000);
  const p = (n, w) => String(n).padStart(w || 2, "0");
  const hms = p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  return millis ? hms + "." + p(d.getMilliseconds(), 3) : hms;
}
function safeHref(url) {
  try {
    const u = new URL(url);
    if (u.protocol !== "http:") return "#";
    // the router's port answers both: a dashboard opened over https links over https
    if (location.protocol === "https:") u.protocol = "https:";
    return u.href;
  } catch (e) { return "#"; }
}
async function getJSON(url) {
  const r = await fetch(url, {cache: "no-store", headers: {"Accept": "application/json"}});
  if (!r.ok) throw new Error(url + ": HTTP " + r.status);
  return r.json();
}

// --- header, alerts -------------------------------------------------------------------

function setLive(ok) {
  $("live-dot").className = "dot " + (ok ? "up" : "down");
  $("live-text").textContent = ok ? "live" : "not connected: is devrouter running? retrying";
}
function renderMeta(s) {
  $("version").textContent = "v" + s.version;
  $("source").textContent = s.config.source;
  $("loaded").textContent = clock(s.config.loaded_at) + " (" +
    ago(s.now - s.config.loaded_at) + " ago, generation " + s.config.generation + ")";
  $("listen").textContent = s.listen.join(", ") || "\u2014";
  $("uptime").textContent = ago(s.uptime_s);
}
function renderAlerts(c) {
  const key = JSON.stringify([c.error, c.conflicts, c.warnings]);
  if (key === ui.alertKey) return;
  ui.alertKey = key;
  const box = $("alerts");
  box.replaceChildren();
  if (c.error) {
    const a = el("div", "alert bad");
    a.append(el("b", null, "The config file has an error; the last good config is in use."));
    a.append(el("pre", null, c.error));
    box.append(a);
  }
  for (const text of c.conflicts) {
    const a = el("div", "alert warn");
    a.append(el("b", null, "Route clash: "), document.createTextNode(text));
    box.append(a);
  }
  for (const text of c.warnings) {
    const a = el("div", "alert warn");
    a.append(el("b", null, "Warning: "), document.createTextNode(text));
    box.append(a);
  }
}

// --- routes ---------------------------------------------------------------------------

function healthCell(td) {
  const line = el("div", "health");
  const dot = el("span", "dot");
  const target = el("span", "mono");
  line.append(dot, target);
  const detail = el("div", "detail-text");
  td.append(line, detail);
  return {line, dot, target, detail};
}
function setHealth(h, target, health) {
  const state = health.up === null ? "unknown" : (health.up ? "up" : "down");
  h.dot.className = "dot " + state;
  h.dot.title = state === "unknown" ? "not checked yet" : state;
  h.target.textContent = target;
  h.detail.className = "detail-text " + state;
  h.detail.textContent = health.up === null ? "checking\u2026" : health.detail;
}
function buildRoute(r) {
  const tr = el("tr", "route");
  tr.dataset.route = r.name;
  const c = {};
  const name = el("td", "name");
  c.link = el("a");
  c.link.target = "_blank";
  c.link.rel = "noopener noreferrer";
  name.append(c.link);
  c.source = el("td");
  c.sourceBadge = el("span", "badge");
  c.source.append(c.sourceBadge);
  const backend = el("td", "backend");
  c.health = healthCell(backend);
  c.count = el("td", "num count");
  c.countN = el("span");
  c.streams = el("div", "legend streams");
  c.count.append(c.countN, c.streams);
  c.rps = el("td", "num rps");
  c.p50 = el("td", "num p50");
  c.p99 = el("td", "num p99");
  c.errors = el("td", "num errors");
  const sp = el("td", "sparkcell hide-narrow");
  c.spark = svg("svg", {class: "spark", width: 120, height: 28, viewBox: "0 0 120 28"});
  sp.append(c.spark);
  tr.append(name, c.source, backend, c.count, c.rps, c.p50, c.p99, c.errors, sp);
  const paths = r.paths.map((p) => {
    const ptr = el("tr", "path");
    ptr.dataset.prefix = p.prefix;
    const prefix = el("td", "prefix mono", "\u21b3 " + p.prefix);
    const pb = el("td", "backend");
    const h = healthCell(pb);
    const rest = el("td");
    rest.colSpan = 6;
    ptr.append(prefix, el("td"), pb, rest);
    return {tr: ptr, h};
  });
  if (paths.length) tr.classList.add("has-paths");
  return {tr, c, paths};
}
function updateRoute(row, r) {
  const c = row.c;
  c.link.href = safeHref(r.url);
  let port = "";
  try { port = new URL(r.url).port; } catch (e) { port = ""; }
  c.link.textContent = r.host + (port ? ":" + port : "");
  c.link.title = r.url;
  let src = r.source;
  if (r.stack) src += " \u00b7 " + r.stack;
  if (r.owner_pid) src += " \u00b7 pid " + r.owner_pid;
  const box = r.container;
  if (box) src += " \u00b7 " + box.name + (box.health ? " (" + box.health + ")" : "");
  if (r.access) src += " \u00b7 secret";
  c.sourceBadge.textContent = src;
  const titles = [];
  if (box) titles.push("container " + box.name + " (" + box.id + "), image " + box.image);
  if (r.access) titles.push("requires the access secret (see the config)");
  c.sourceBadge.title = titles.join("; ");
  setHealth(c.health, r.target, r.health);
  c.countN.textContent = r.count.toLocaleString("en-US");
  const open = r.open_streams + r.open_websockets, done = r.streams.count;
  c.streams.textContent = open || done ? (open ? open + " streaming" : done + " streams") : "";
  c.streams.title = open || done ? "Streams (event streams, WebSockets, exchanges longer " +
    "than the route's timeout) are not in p50/p99. Open now: " + r.open_streams +
    " event streams, " + r.open_websockets + " WebSockets. Finished: " + done +
    (done ? ", median " + ms(r.streams.duration_ms.p50) + ", longest " +
      ms(r.streams.duration_ms.max) : "") : "";
  c.rps.textContent = rate(r.rps);
  c.p50.textContent = ms(r.latency_ms.p50);
  c.p99.textContent = ms(r.latency_ms.p99);
  c.errors.textContent = String(r.error_count);
  c.errors.className = "num errors" + (r.error_count ? " bad-n" : "");
  const parts = Object.entries(r.requests).filter(([, n]) => n).map(([k, n]) => k + ": " + n);
  const kinds = Object.entries(r.errors).map(([k, n]) => k + ": " + n);
  c.errors.title = (parts.join(", ") || "no requests yet") +
    (kinds.length ? "\nbackend errors: " + kinds.join(", ") : "");
  spark(c.spark, r.series);
  r.paths.forEach((p, i) => setHealth(row.paths[i].h, p.target, p.health));
}
function spark(node, s) {
  const W = 120, H = 28, n = s.count.length;
  const x = (i) => 1 + i * (W - 2) / Math.max(1, n - 1);
  let peak = 0, top = 0, total = 0;
  for (let i = 0; i < n; i++) {
    total += s.count[i];
    if (s.count[i] > top) top = s.count[i];
    if (s.mean_ms[i] !== null && s.mean_ms[i] > peak) peak = s.mean_ms[i];
  }
  node.replaceChildren();
  const title = svg("title");
  title.textContent = total ? "last " + n + " s: " + total + " requests; bars: requests per " +
    "second (up to " + top + "), line: mean time per second (up to " + ms(peak) + ")"
    : "no requests in the last " + n + " s";
  node.append(title, svg("line", {class: "base", x1: 1, x2: W - 1, y1: H - 0.5, y2: H - 0.5}));
  for (let i = 0; i < n; i++) {
    if (!s.count[i]) continue;
    const h = Math.max(1.5, 10 * s.count[i] / top);
    node.append(svg("rect", {class: "bar", x: x(i) - 0.8, y: H - h, width: 1.6, height: h}));
  }
  const pts = [];
  for (let i = 0; i < n; i++) {
    const v = s.mean_ms[i];
    if (v !== null) pts.push([x(i), H - 3 - (peak ? v / peak : 0) * (H - 7)]);
  }
  if (pts.length > 1) {
    const d = pts.map((p, i) => (i ? "L" : "M") + p[0].toFixed(1) + " " + p[1].toFixed(1));
    node.append(svg("path", {class: "line", d: d.join("")}));
  }
  if (pts.length) {
    const last = pts[pts.length - 1];
    node.append(svg("circle", {class: "pt", cx: last[0], cy: last[1], r: 2}));
  }
}
function renderRoutes(s) {
  const routes = s.routes;
  const key = JSON.stringify(routes.map((r) => [r.name, r.paths.map((p) => p.prefix)]));
  const body = $("routes-body");
  if (key !== ui.routeKeys) {
    ui.routeKeys = key;
    ui.rows.clear();
    body.replaceChildren();
    for (const r of routes) {
      const row = buildRoute(r);
      ui.rows.set(r.name, row);
      body.append(row.tr, ...row.paths.map((p) => p.tr));
    }
  }
  for (const r of routes) updateRoute(ui.rows.get(r.name), r);
  $("route-count").textContent = routes.length ? String(routes.length) : "";
  $("routes").hidden = routes.length === 0;
  $("empty").hidden = routes.length !== 0;
  const noFile = s.config.source.startsWith("<");
  $("empty-where").textContent = noFile
    ? "There is no config file yet: create devrouter.yaml in your project (or " +
      "~/.config/devrouter/config.yaml) and start devrouter again:"
    : "Add one to " + s.config.source + "; devrouter reloads it when you save:";
  const port = s.listen.length ? s.listen[0].split(":").pop() : "7355";
  $("empty-example").textContent = "routes:\n  api: 4001    # http://api.localhost" + (port === "80" ? "" : ":" + port) +
    " -> 127.0.0.1:4001";
  renderFilter(routes);
}
function renderDocker(d) {
  // Nothing on a machine without Docker; otherwise the Engine and every running container
  // that has no route, with the reason in the router's words.
  const quiet = !d || d.state === "starting" || d.state === "absent";
  const key = quiet ? "" : JSON.stringify([d.state, d.socket, d.detail, d.containers]);
  if (key === ui.dockerKey) return;
  ui.dockerKey = key;
  $("docker").hidden = quiet;
  const list = $("docker-unrouted");
  list.replaceChildren();
  if (quiet) return;
  const named = d.containers.filter((x) => x.names.length).length;
  $("docker-state").textContent = d.state === "connected"
    ? "Docker: watching the Engine at " + d.socket + "; " + named + " of " +
      d.containers.length + " running containers named."
    : "Docker: " + (d.detail || d.state);
  for (const x of d.containers) {
    if (!x.reason) continue;
    const li = el("li");
    li.append(el("b", null, x.name), document.createTextNode(" has no route: it " + x.reason));
    list.append(li);
  }
}
function renderFilter(routes) {
  const names = routes.map((r) => r.name);
  if (ui.filter && !names.includes(ui.filter)) names.push(ui.filter);
  const key = JSON.stringify(names);
  if (key === ui.filterKey) return;
  ui.filterKey = key;
  const sel = $("filter");
  sel.replaceChildren(el("option", null, "all routes"));
  sel.options[0].value = "";
  for (const n of names) {
    const o = el("option", null, n);
    o.value = n;
    sel.append(o);
  }
  sel.value = ui.filter;
}

// --- recent requests ------------------------------------------------------------------

async function fetchRequests() {
  if (ui.paused) return null;
  const q = new URLSearchParams({since: String(ui.since), limit: "100"});
  if (ui.filter) q.set("route", ui.filter);
  const gen = ui.gen;
  const data = await getJSON("/api/requests?" + q.toString());
  return {gen, data};
}
function applyRequests(res) {
  if (res.gen !== ui.gen) return;
  ui.since = res.data.last_seq;
  const body = $("requests-body");
  for (const rec of res.data.requests) body.prepend(...requestRows(rec));
  while (body.children.length > 2 * MAX_ROWS) body.lastElementChild.remove();
  $("no-requests").hidden = body.children.length > 0;
}
function requestRows(rec) {
  const tr = el("tr", "req");
  tr.tabIndex = 0;
  tr.dataset.seq = String(rec.seq);
  tr.dataset.route = rec.route;
  const st = el("td");
  st.append(el("span", "st s" + String(rec.status).charAt(0), rec.status || "\u2014"));
  if (rec.error) st.append(el("span", "err", rec.error));
  if (rec.websocket) st.append(el("span", "badge", "ws"));
  const path = el("td", "pathcell mono", rec.path);
  path.title = rec.path;
  tr.append(
    el("td", "mono", clock(rec.started, true)), el("td", null, rec.route),
    el("td", "mono", rec.method), path, st,
    el("td", "num", ms(rec.ttfb_ms)), el("td", "num", ms(rec.duration_ms)),
    el("td", "num hide-narrow", bytes(rec.bytes_in) + " / " + bytes(rec.bytes_out)));
  const more = el("tr", "more");
  more.hidden = true;
  const toggle = () => {
    if (!more.firstChild) more.append(requestDetail(rec));
    more.hidden = !more.hidden;
    tr.classList.toggle("open", !more.hidden);
  };
  tr.addEventListener("click", toggle);
  tr.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); toggle(); }
  });
  return [tr, more];
}
function kvTable(pairs, none) {
  if (!pairs || !pairs.length) return el("div", "sub", none);
  const t = el("table", "kv mono");
  for (const [k, v] of pairs) {
    const tr = el("tr");
    tr.append(el("td", null, k), el("td", null, v));
    t.append(tr);
  }
  return t;
}
function requestDetail(rec) {
  const td = el("td");
  td.colSpan = 8;
  const grid = el("div", "grid");
  const timing = el("div", "timing");
  const W = 260, total = Math.max(rec.duration_ms, 0.001);
  const bar = svg("svg", {width: W, height: 10});
  bar.append(svg("rect", {class: "body", x: 0, y: 1, width: W, height: 8, rx: 2}));
  if (rec.ttfb_ms !== null) {
    const w = Math.max(2, W * Math.min(1, rec.ttfb_ms / total));
    bar.append(svg("rect", {class: "ttfb", x: 0, y: 1, width: w, height: 8, rx: 2}));
  }
  timing.append(bar);
  const words = (rec.ttfb_ms === null ? "no response from the backend" : "headers after " +
    ms(rec.ttfb_ms)) + " \u00b7 done after " + ms(rec.duration_ms) +
    (rec.stream ? " \u00b7 a stream, not in the route's latency" : "");
  timing.append(el("span", null, words));
  const facts = [(rec.protocol || "HTTP/1.1") + " " + rec.host + " \u2192 port " +
    rec.upstream_port,
    new Date(rec.started * 1000).toISOString(),
    bytes(rec.bytes_in) + " in, " + bytes(rec.bytes_out) + " out"];
  if (rec.error) facts.push("backend error: " + rec.error);
  timing.append(el("span", "legend", facts.join(" \u00b7 ")));
  const req = el("div");
  req.append(el("h4", null, "Request headers"), kvTable(rec.request_headers, "(none kept)"));
  const resp = el("div");
  resp.append(el("h4", null, "Response headers"),
    kvTable(rec.response_headers, "(no response was relayed)"));
  grid.append(timing, req, resp);
  td.append(grid);
  return td;
}

// --- the loop -------------------------------------------------------------------------

async function tick() {
  let s = null, reqs = null;
  try {
    [s, reqs] = await Promise.all([getJSON("/api/status"), fetchRequests()]);
    setLive(true);
  } catch (e) {
    setLive(false);
  } finally {
    setTimeout(tick, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }
  if (s) { renderMeta(s); renderAlerts(s.config); renderRoutes(s); renderDocker(s.docker); }
  if (reqs) applyRequests(reqs);
}
$("filter").addEventListener("change", (e) => {
  ui.filter = e.target.value;
  ui.gen += 1;
  ui.since = 0;
  $("requests-body").replaceChildren();
  $("no-requests").hidden = false;
});
$("pause").addEventListener("click", () => {
  ui.paused = !ui.paused;
  $("pause").textContent = ui.paused ? "Resume" : "Pause";
});
tick();
