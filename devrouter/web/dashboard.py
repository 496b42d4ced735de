"""The router's own pages on http://localhost:PORT/: the dashboard, its JSON API, /metrics.

    /               the dashboard: one static HTML page, its CSS and script inline (nothing
                    is fetched from elsewhere), polling the two JSON endpoints every second;
                    a client that does not ask for HTML (curl) gets the route list as text
    /api/status     the router, its config and each route's figures
    /api/requests   the most recent requests: ?route=NAME&since=SEQ&limit=N
    /metrics        Prometheus text exposition (devrouter.prometheus)

docs/dashboard.md documents both JSON schemas.

Read-only by construction: only GET and HEAD are answered (anything else is a 405), and no
handler changes anything but the health probe's "someone is looking" clock. No response
carries CORS headers, so a page on another origin can make a browser send a GET here but
can read nothing back; `proxy` only calls this module for the Hosts localhost, 127.0.0.1,
[::1] and devrouter.localhost, which keeps DNS-rebinding pages out. Every response is
`no-store` and `nosniff`; the HTML carries a Content-Security-Policy that allows only its
own inline script and style (by hash), images from data: URLs and fetches to its own
origin. The page is static: route names, paths and headers (user data) reach it as JSON
and are written with `textContent`, never parsed as HTML.

Percentiles are computed here when asked, never on the request path, and a histogram's
summary is cached until its count changes, so polling an idle route costs nothing.
"""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from aiohttp import hdrs, web

from .. import __version__
from ..config import ListenAddr, Route, Upstream
from ..core.state import State
from ..observe import prometheus
from ..observe.health import Health
from ..observe.histogram import Histogram
from ..observe.metrics import Metrics, RouteStats
from .pages import route_url, wants_html

#: Records /api/requests returns when no `limit` is given.
DEFAULT_REQUEST_LIMIT = 100
#: Seconds of per-second history in each route's `series` (the dashboard's sparkline).
SERIES_WINDOW_S = 60
#: The window of a route's `rps`, in seconds (whole seconds before the current one).
RATE_WINDOW_S = 10
#: The percentiles of `latency_ms` and `ttfb_ms`, by name.
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p999": 99.9}

Summary = dict[str, float | None]


@dataclass
class Context:
    state: State
    metrics: Metrics
    health: Health
    listen: Sequence[ListenAddr] = ()
    started: float = field(default_factory=time.time)
    # id(histogram) -> (histogram, its count when read, what was read): percentiles and
    # Prometheus buckets are only recomputed for a histogram that has changed
    _summaries: dict[int, tuple[Histogram, int, Summary]] = field(
        default_factory=dict, repr=False, compare=False
    )
    _buckets: dict[int, tuple[Histogram, int, list[int]]] = field(
        default_factory=dict, repr=False, compare=False
    )

    def buckets(self, h: Histogram) -> list[int]:
        """`prometheus.cumulative_buckets`, cached until the histogram's count changes."""
        count = h.count()
        cached = self._buckets.get(id(h))
        if cached is not None and cached[0] is h and cached[1] == count:
            return cached[2]
        out = prometheus.cumulative_buckets(h)
        self._buckets[id(h)] = (h, count, out)
        return out

    def summary(self, h: Histogram) -> Summary:
        """Percentiles, max and mean of a microsecond histogram, in milliseconds; None for
        each when it is empty. Cached until the histogram's count changes."""
        count = h.count()
        cached = self._summaries.get(id(h))
        if cached is not None and cached[0] is h and cached[1] == count:
            return cached[2]
        out: Summary
        if count == 0:
            out = {name: None for name in (*PERCENTILES, "max", "mean")}
        else:
            values = h.percentiles(list(PERCENTILES.values()))
            out = {name: _ms(v) for name, v in zip(PERCENTILES, values, strict=True)}
            out["max"] = _ms(h.max())
            out["mean"] = _ms(h.mean())
        self._summaries[id(h)] = (h, count, out)
        return out


def _ms(us: float) -> float:
    return round(us / 1000, 3)


# --- the JSON documents -------------------------------------------------------------------


def status(ctx: Context, port: int, now: float | None = None) -> dict[str, Any]:
    """The document at /api/status (schema in docs/dashboard.md)."""
    now = time.time() if now is None else now
    snap = ctx.state.snapshot
    recent = ctx.metrics.recent
    return {
        "version": __version__,
        "now": round(now, 3),
        "started": round(ctx.started, 3),
        "uptime_s": round(now - ctx.started, 3),
        "listen": [str(a) for a in ctx.listen],
        "config": {
            "source": snap.config.source,
            "loaded_at": round(snap.loaded_at, 3),
            "generation": snap.generation,
            "error": ctx.state.last_error,
            "conflicts": list(snap.conflicts),
            "warnings": list(snap.config.warnings),
        },
        "recent": {"size": recent.maxlen, "last_seq": recent[-1].seq if recent else 0},
        "routes": [route_status(ctx, r, port, now) for r in snap.table.routes],
    }


def route_status(ctx: Context, route: Route, port: int, now: float) -> dict[str, Any]:
    stats = ctx.metrics.routes.get(route.name)
    requests = {cls: 0 for cls in ("2xx", "3xx", "4xx", "5xx")}
    errors: dict[str, int] = {}
    if stats is not None:
        requests.update(stats.requests)
        errors = dict(stats.errors)
    return {
        "name": route.name,
        "host": route.host,
        "url": route_url(route, port),
        "target": route.upstream.describe(),
        "port": route.upstream.port,
        "hosts": list(route.upstream.hosts),
        "source": route.source,
        "owner_pid": route.owner_pid,
        "stack": route.stack,
        "timeout_s": route.timeout_s,
        "access": route.access is not None,  # requires a secret (never shown)
        "max_connections": route.max_connections,
        "paths": [
            {
                "prefix": p.prefix,
                "target": p.upstream.describe(),
                "port": p.upstream.port,
                "hosts": list(p.upstream.hosts),
                "health": _health(ctx.health, p.upstream),
            }
            for p in route.paths
        ],
        "health": _health(ctx.health, route.upstream),
        "requests": requests,
        "count": sum(requests.values()),
        "errors": errors,
        "error_count": requests["5xx"] + requests.get("none", 0),
        "rps": round(ctx.metrics.rate(route.name, now, RATE_WINDOW_S), 2),
        "latency_ms": ctx.summary(stats.total) if stats else ctx.summary(_EMPTY),
        "ttfb_ms": ctx.summary(stats.ttfb) if stats else ctx.summary(_EMPTY),
        "bytes_in": stats.bytes_in if stats else 0,
        "bytes_out": stats.bytes_out if stats else 0,
        "in_flight": stats.in_flight if stats else 0,
        "open_streams": stats.open_streams if stats else 0,
        "open_websockets": stats.open_websockets if stats else 0,
        "streams": {
            "count": stats.streams.count() if stats else 0,
            "duration_ms": ctx.summary(stats.streams) if stats else ctx.summary(_EMPTY),
        },
        "series": series(stats, now),
    }


_EMPTY = Histogram()


def _health(health: Health, upstream: Upstream) -> dict[str, Any]:
    probe = health.status(upstream)
    if probe is None:
        return {"up": None, "detail": "not checked yet", "checked_at": None, "listening": []}
    return {
        "up": probe.up,
        "detail": probe.detail,
        "checked_at": round(probe.checked_at, 3),
        "listening": list(probe.listening),
    }


def series(stats: RouteStats | None, now: float) -> dict[str, Any]:
    """The last SERIES_WINDOW_S seconds, the current one last, one entry per second:
    requests finished, and their mean and maximum total time (None for an idle second)."""
    start = int(now) - SERIES_WINDOW_S + 1
    count = [0] * SERIES_WINDOW_S
    total_us = [0] * SERIES_WINDOW_S
    peak_us = [0] * SERIES_WINDOW_S
    for second, n, sum_us, max_us in stats.series if stats is not None else ():
        i = second - start
        if 0 <= i < SERIES_WINDOW_S:  # a second may appear twice if finishes were out of order
            count[i] += n
            total_us[i] += sum_us
            peak_us[i] = max(peak_us[i], max_us)
    mean = [_ms(t / n) if n else None for t, n in zip(total_us, count, strict=True)]
    peak = [_ms(p) if n else None for p, n in zip(peak_us, count, strict=True)]
    return {"start": start, "step_s": 1, "count": count, "mean_ms": mean, "max_ms": peak}


def recent_requests(
    ctx: Context, route: str | None, since: int, limit: int, headers: bool = True
) -> dict[str, Any]:
    """The document at /api/requests: records after `since`, oldest first, at most the
    newest `limit` of them."""
    recent = ctx.metrics.recent
    records = ctx.metrics.since(since, route, max(1, limit))
    return {
        "requests": [r.as_json(headers) for r in records],
        "last_seq": recent[-1].seq if recent else 0,
        "size": recent.maxlen,
    }


# --- HTTP ---------------------------------------------------------------------------------

_COMMON_HEADERS = {
    "Cache-Control": "no-store",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
}


class _BadParam(ValueError):
    pass


def _respond(
    body: str | bytes,
    content_type: str,
    status: int = 200,
    extra: dict[str, str] | None = None,
) -> web.Response:
    data = body.encode() if isinstance(body, str) else body
    headers = {**_COMMON_HEADERS, hdrs.CONTENT_TYPE: content_type, **(extra or {})}
    return web.Response(status=status, body=data, headers=headers)


def _json(doc: object, status: int = 200) -> web.Response:
    text = json.dumps(doc, separators=(",", ":"), allow_nan=False)
    return _respond(text, "application/json; charset=utf-8", status)


def _text(text: str, status: int = 200, extra: dict[str, str] | None = None) -> web.Response:
    return _respond(text, "text/plain; charset=utf-8", status, extra)


def _int_param(params: dict[str, list[str]], name: str, default: int, minimum: int) -> int:
    values = params.get(name)
    if not values or values[-1] == "":
        return default
    value = values[-1]
    if not value.isascii() or not value.isdigit() or len(value) > 18 or int(value) < minimum:
        raise _BadParam(f"{name} must be a whole number of at least {minimum}, got {value!r}")
    return int(value)


async def _page(request: web.BaseRequest, ctx: Context, query: str, port: int) -> web.Response:
    if wants_html(request.headers.get(hdrs.ACCEPT, "")):
        return _respond(PAGE, "text/html; charset=utf-8", extra=PAGE_HEADERS)
    await ctx.health.fresh()
    return _text(text_index(ctx, port))


async def _status(request: web.BaseRequest, ctx: Context, query: str, port: int) -> web.Response:
    await ctx.health.fresh()
    return _json(status(ctx, port))


async def _requests(request: web.BaseRequest, ctx: Context, query: str, port: int) -> web.Response:
    try:
        params = parse_qs(query, keep_blank_values=True, max_num_fields=16)
        since = _int_param(params, "since", 0, minimum=0)
        limit = _int_param(params, "limit", DEFAULT_REQUEST_LIMIT, minimum=1)
    except ValueError as exc:
        return _json({"error": str(exc)}, status=400)
    route = params.get("route", [""])[-1] or None
    headers = params.get("headers", ["1"])[-1] not in ("0", "false", "no")
    return _json(recent_requests(ctx, route, since, limit, headers))


async def _metrics(request: web.BaseRequest, ctx: Context, query: str, port: int) -> web.Response:
    await ctx.health.fresh()
    text = prometheus.render(ctx.state, ctx.metrics, ctx.health, ctx.started, buckets=ctx.buckets)
    return _respond(text, prometheus.CONTENT_TYPE)


_Handler = Callable[[web.BaseRequest, Context, str, int], Awaitable[web.Response]]
_PAGES: dict[str, _Handler] = {
    "/": _page,
    "/api/status": _status,
    "/api/requests": _requests,
    "/metrics": _metrics,
}


async def handle(
    request: web.BaseRequest, ctx: Context, target: str, port: int
) -> web.StreamResponse:
    """Answer a request to one of the router's own names; read-only, no CORS."""
    if request.method not in (hdrs.METH_GET, hdrs.METH_HEAD):
        return _text(
            f"devrouter: 405 Method not allowed: the router's own pages are read-only "
            f"(GET and HEAD), not {request.method}\n",
            405,
            {hdrs.ALLOW: "GET, HEAD"},
        )
    path, _, query = target.partition("?")
    page = _PAGES.get(path)
    if page is None:
        return _text(
            f"devrouter: 404 Not found: there is no page {path!r} here; the dashboard is at /, "
            "its data at /api/status and /api/requests, Prometheus metrics at /metrics\n",
            404,
        )
    ctx.health.touch()
    return await page(request, ctx, query, port)


def text_index(ctx: Context, port: int) -> str:
    """What curl gets at /: the routes, their health, and where the rest is."""
    snap = ctx.state.snapshot
    loaded = time.strftime("%H:%M:%S", time.localtime(snap.loaded_at))
    listen = ", ".join(str(a) for a in ctx.listen) or "?"
    lines = [f"devrouter {__version__} on {listen}; config {snap.config.source} (loaded {loaded})"]
    if ctx.state.last_error:
        lines.append(f"config error (the last good config is in use): {ctx.state.last_error}")
    lines += [f"clash: {c}" for c in snap.conflicts]
    lines.append("routes:")
    for r in snap.table.routes:
        probe = ctx.health.status(r.upstream)
        health = "not checked" if probe is None else ("up" if probe.up else "DOWN")
        detail = f": {probe.detail}" if probe is not None else ""
        lines.append(f"  {route_url(r, port)} -> {r.upstream.describe()}  [{health}{detail}]")
        lines += [f"      {p.prefix} -> {p.upstream.describe()}" for p in r.paths]
    if not snap.table.routes:
        lines.append("  (none yet: add routes to the config file)")
    lines.append(
        f"Open http://localhost:{port}/ in a browser for the dashboard. "
        "JSON: /api/status, /api/requests. Prometheus: /metrics."
    )
    return "\n".join(lines) + "\n"


# --- the page -----------------------------------------------------------------------------

_ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='4' fill='%232563eb'/%3E%3Cpath d='M4 8h8M9 5l3 3-3 3'"
    " stroke='white' stroke-width='1.6' fill='none' stroke-linecap='round'/%3E%3C/svg%3E"
)

_CSS = """
:root{color-scheme:light dark;--bg:#f5f6f8;--card:#fff;--fg:#1d2127;--muted:#68707d;
--line:#e4e7eb;--soft:#f0f2f5;--accent:#2563eb;--ok:#15803d;--okbg:#dcfce7;--bad:#b91c1c;
--badbg:#fee2e2;--warn:#a16207;--warnbg:#fef3c7;--info:#1d4ed8;--infobg:#dbeafe;
--spark:#2563eb;--bar:#cbd5e1}
@media (prefers-color-scheme:dark){:root{--bg:#111418;--card:#1a1e24;--fg:#e6e8eb;
--muted:#9aa3ae;--line:#2b313a;--soft:#222831;--accent:#6ea1ff;--ok:#4ade80;--okbg:#12341f;
--bad:#f87171;--badbg:#3d1717;--warn:#fbbf24;--warnbg:#3a2d0b;--info:#93c5fd;
--infobg:#172a4a;--spark:#6ea1ff;--bar:#3b4452}}
*{box-sizing:border-box}
body{margin:0;background:var(--bg);color:var(--fg);
font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif}
a{color:var(--accent);text-decoration:none}a:hover{text-decoration:underline}
code,pre,.mono{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:12.5px}
header{display:flex;align-items:center;gap:1em;padding:14px 24px;background:var(--card);
border-bottom:1px solid var(--line)}
.brand{font-weight:650;font-size:17px;display:flex;align-items:center;gap:.5em}
.logo{width:20px;height:20px}
.version{color:var(--muted);font-weight:400;font-size:13px}
.live{margin-left:auto;display:flex;align-items:center;gap:.45em;color:var(--muted);
font-size:13px}
.live .dot{width:8px;height:8px}
main{max-width:1440px;margin:0 auto;padding:18px 24px 8px}
.meta{display:flex;flex-wrap:wrap;gap:6px 28px;margin:0 0 14px;color:var(--muted);
font-size:13px}
.meta b{color:var(--fg);font-weight:500}
.alert{border-radius:8px;padding:10px 14px;margin:0 0 12px;border:1px solid}
.alert.bad{background:var(--badbg);color:var(--bad);border-color:transparent}
.alert.warn{background:var(--warnbg);color:var(--warn);border-color:transparent}
.alert pre{margin:.4em 0 0;white-space:pre-wrap;color:var(--fg)}
.card{background:var(--card);border:1px solid var(--line);border-radius:10px;
margin:0 0 18px;overflow:hidden}
.card>h2{font-size:14px;font-weight:600;margin:0;padding:12px 16px;display:flex;
align-items:center;gap:.6em;border-bottom:1px solid var(--line)}
.card>h2 .n{color:var(--muted);font-weight:400}
.tools{margin-left:auto;display:flex;gap:8px;align-items:center;font-weight:400}
select,button{font:inherit;font-size:13px;color:var(--fg);background:var(--card);
border:1px solid var(--line);border-radius:6px;padding:3px 8px}
button{cursor:pointer}button:hover{background:var(--soft)}
table{border-collapse:collapse;width:100%}
th{font-size:11.5px;text-transform:uppercase;letter-spacing:.04em;color:var(--muted);
font-weight:600;text-align:left;padding:8px 11px;border-bottom:1px solid var(--line);
white-space:nowrap}
td{padding:8px 11px;border-bottom:1px solid var(--line);vertical-align:middle}
tr:last-child>td{border-bottom:0}
.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
.name a{font-weight:600;white-space:nowrap}
.sub{color:var(--muted);font-size:12px}
.path td{padding-top:3px;padding-bottom:5px;border-top:0}
tr.has-paths>td{border-bottom:0}
.path .prefix{padding-left:28px;color:var(--muted)}
.dot{display:inline-block;width:9px;height:9px;border-radius:50%;background:var(--bar);
flex:none}
.dot.up{background:var(--ok)}.dot.down{background:var(--bad)}
.health{display:flex;align-items:center;gap:.55em;white-space:nowrap}
.detail-text{font-size:12px;color:var(--muted);margin-left:calc(9px + .55em)}
td.backend{min-width:20em}td.sparkcell{width:146px}
.detail-text.down{color:var(--bad)}
.badge{display:inline-block;border-radius:999px;padding:1px 9px;font-size:12px;
background:var(--soft);color:var(--muted);white-space:nowrap}
.bad-n{color:var(--bad);font-weight:600}
.spark{display:block}
.spark .line{fill:none;stroke:var(--spark);stroke-width:1.5;stroke-linejoin:round}
.spark .pt{fill:var(--spark)}
.spark .bar{fill:var(--bar)}.spark .base{stroke:var(--line);stroke-width:1}
.empty{padding:22px 18px;color:var(--muted)}
.empty pre{background:var(--soft);color:var(--fg);padding:10px 14px;border-radius:6px;
display:inline-block;margin:.6em 0}
#requests tr.req>td{padding-top:5px;padding-bottom:5px;white-space:nowrap}
#requests tr.req{cursor:pointer}
#requests tr.req:hover,#requests tr.req.open{background:var(--soft)}
#requests tr.req:focus{outline:2px solid var(--accent);outline-offset:-2px}
.pathcell{max-width:34em;overflow:hidden;text-overflow:ellipsis}
.st{font-weight:600;font-variant-numeric:tabular-nums}
.s2{color:var(--ok)}.s3{color:var(--info)}.s4{color:var(--warn)}.s5,.s0{color:var(--bad)}
.err{color:var(--bad);font-size:12px;margin-left:.4em}
tr.more>td{background:var(--soft);white-space:normal;padding:10px 16px 14px}
.grid{display:grid;grid-template-columns:1fr 1fr;gap:12px 24px}
.grid h4{margin:4px 0 6px;font-size:12px;text-transform:uppercase;letter-spacing:.04em;
color:var(--muted)}
.kv td{padding:2px 10px 2px 0;border:0;vertical-align:top;word-break:break-all}
.kv td:first-child{color:var(--muted);white-space:nowrap;word-break:normal}
.timing{grid-column:1/3;display:flex;align-items:center;gap:14px;font-size:13px}
.timing svg{flex:none}
.timing .ttfb{fill:var(--accent)}.timing .body{fill:var(--bar)}
.legend{color:var(--muted)}
footer{max-width:1440px;margin:0 auto;padding:0 24px 24px;color:var(--muted);
font-size:12.5px}
@media (max-width:900px){.grid{grid-template-columns:1fr}.hide-narrow{display:none}}
"""

_JS = r"""
"use strict";
const POLL_MS = 1000, HIDDEN_POLL_MS = 5000, MAX_ROWS = 200;
const SVG = "http://www.w3.org/2000/svg";
const $ = (id) => document.getElementById(id);
const ui = {filter: "", gen: 0, since: 0, paused: false, routeKeys: null, alertKey: null,
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
  try { const u = new URL(url); return u.protocol === "http:" ? u.href : "#"; }
  catch (e) { return "#"; }
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
  if (r.access) src += " \u00b7 secret";
  c.sourceBadge.textContent = src;
  c.sourceBadge.title = r.access ? "requires the access secret (see the config)" : "";
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
  $("empty-example").textContent = "routes:\n  api: 4001    # http://api.localhost:" + port +
    " -> 127.0.0.1:4001";
  renderFilter(routes);
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
  const facts = [rec.host + " \u2192 port " + rec.upstream_port,
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
  if (s) { renderMeta(s); renderAlerts(s.config); renderRoutes(s); }
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
"""

_BODY = """
<header>
<div class="brand"><svg class="logo" viewBox="0 0 16 16" aria-hidden="true">
<rect width="16" height="16" rx="4" fill="#2563eb"/><path d="M4 8h8M9 5l3 3-3 3"
stroke="#fff" stroke-width="1.6" fill="none" stroke-linecap="round"/></svg>
devrouter <span class="version" id="version"></span></div>
<div class="live"><span class="dot" id="live-dot"></span>
<span id="live-text">connecting\u2026</span>
</div>
</header>
<main>
<div class="meta">
<span>Config <b class="mono" id="source"></b></span>
<span>Loaded <b id="loaded"></b></span>
<span>Listening on <b class="mono" id="listen"></b></span>
<span>Up <b id="uptime"></b></span>
</div>
<div id="alerts"></div>
<section class="card">
<h2>Routes <span class="n" id="route-count"></span></h2>
<table id="routes">
<thead><tr><th>Route</th><th>Source</th><th>Backend</th>
<th class="num">Requests</th><th class="num">req/s</th><th class="num">p50</th>
<th class="num">p99</th><th class="num">Errors</th><th class="hide-narrow">Last 60 s</th>
</tr></thead>
<tbody id="routes-body"></tbody>
</table>
<div class="empty" id="empty" hidden>
<b>No routes yet.</b> <span id="empty-where"></span><br><pre id="empty-example"></pre>
</div>
</section>
<section class="card">
<h2>Recent requests <span class="tools"><label>Route <select id="filter">
<option value="">all routes</option></select></label>
<button type="button" id="pause">Pause</button></span></h2>
<table id="requests">
<thead><tr><th>Time</th><th>Route</th><th>Method</th><th>Path</th><th>Status</th>
<th class="num">TTFB</th><th class="num">Total</th><th class="num hide-narrow">In / out</th>
</tr></thead>
<tbody id="requests-body"></tbody>
</table>
<div class="empty" id="no-requests">No requests yet. Click a request to see its headers
and timing.</div>
</section>
</main>
<footer>devrouter's data as JSON: <a href="/api/status">/api/status</a>,
<a href="/api/requests">/api/requests</a> &middot; Prometheus: <a href="/metrics">/metrics</a>
&middot; read-only</footer>
<noscript><p>This page needs JavaScript to update; the same data is at
<a href="/api/status">/api/status</a>.</p></noscript>
"""


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


PAGE = (
    '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width, initial-scale=1">'
    '<meta name="color-scheme" content="light dark">'
    f'<title>devrouter</title><link rel="icon" href="{_ICON}">'
    f"<style>{_CSS}</style></head><body>{_BODY}<script>{_JS}</script></body></html>\n"
).encode()
#: The page's Content-Security-Policy: its own inline script and style (by hash), data:
#: images (the icon), fetches to its own origin, and nothing else.
CSP = (
    f"default-src 'none'; script-src {_sha256(_JS)}; style-src {_sha256(_CSS)}; "
    "img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)
PAGE_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}
