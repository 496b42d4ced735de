"""The router's own pages on http://localhost:PORT/: the dashboard, its JSON API, /metrics.

    /               the dashboard: one static HTML page, its CSS and script inline (nothing
                    is fetched from elsewhere), polling the two JSON endpoints every second;
                    a client that does not ask for HTML (curl) gets the route list as text
    /api/status     the router, its config and each route's figures
    /api/requests   the most recent requests: ?route=NAME&since=SEQ&limit=N
    /metrics        Prometheus text exposition (devrouter.observe.prometheus)

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
from importlib import resources
from typing import Any
from urllib.parse import parse_qs

from aiohttp import hdrs, web

from .. import __version__
from ..core.model import ListenAddr, Route, Upstream
from ..core.state import State
from ..core.urls import name_url
from ..docker.watcher import DockerReport, container_json
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
    docker: DockerReport | None = None  # None: the Engine is not watched (not `serve`)
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
        "docker": ctx.docker.as_json() if ctx.docker is not None else None,
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
        "container": container_json(route.container),
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
        f"Open {name_url(None, port, path='/')} in a browser for the dashboard. "
        "JSON: /api/status, /api/requests. Prometheus: /metrics."
    )
    return "\n".join(lines) + "\n"


# --- the page -----------------------------------------------------------------------------

_ICON = (
    "data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 16 16'%3E"
    "%3Crect width='16' height='16' rx='4' fill='%232563eb'/%3E%3Cpath d='M4 8h8M9 5l3 3-3 3'"
    " stroke='white' stroke-width='1.6' fill='none' stroke-linecap='round'/%3E%3C/svg%3E"
)


def _static(name: str) -> str:
    """A file of the page, shipped as package data (devrouter/web/static/)."""
    return (resources.files(__package__) / "static" / name).read_text(encoding="utf-8")


# The page is three files, read once: its inline style and script are allowed by hash.
_CSS = _static("dashboard.css")
_JS = _static("dashboard.js")
_BODY = _static("dashboard.html")


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
