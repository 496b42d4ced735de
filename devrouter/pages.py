"""The router's own answers: error pages and the index page.

Browsers (an `Accept` that names text/html) get a small self-contained HTML page; curl and
scripts get one or two lines of text. Both say what happened and what to do. No page carries
CORS headers or anything a web page on another origin could use.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Protocol

from aiohttp import web

from . import __version__
from .config import Route
from .errors import ProxyError, ServiceStarting

#: Lines of a `devrouter run` app's output shown on its error page.
OUTPUT_TAIL_LINES = 20
#: A "starting..." page reloads itself after this many seconds.
STARTING_REFRESH_S = 1

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.4em}code{background:#f3f3f3;padding:0 .3em}"
    "table{border-collapse:collapse}td,th{padding:.2em 1em .2em 0;text-align:left}"
    "footer{margin-top:3em;color:#888;font-size:.85em}"
)


def wants_html(accept: str) -> bool:
    return "text/html" in accept


def route_url(route: Route, port: int) -> str:
    host = route.host.replace("*.", "x.", 1) if route.name.startswith("*.") else route.host
    return f"http://{host}:{port}/"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}"
        f"<footer>devrouter {__version__}</footer></body></html>"
    )


def _routes_html(routes: Sequence[Route], port: int) -> str:
    if not routes:
        return (
            "<p>No routes yet. Add some to your config file, for example:</p>"
            "<pre>routes:\n  api: 4001\n  web: 5173</pre>"
        )
    rows = "".join(
        f"<tr><td><a href='{escape(route_url(r, port))}'>{escape(r.host)}</a></td>"
        f"<td>{escape(r.upstream.describe())}</td></tr>"
        for r in routes
    )
    return f"<table><tr><th>name</th><th>backend</th></tr>{rows}</table>"


def _routes_text(routes: Iterable[Route], port: int) -> str:
    lines = [f"  {route_url(r, port)} -> {r.upstream.describe()}" for r in routes]
    return "\n".join(lines) if lines else "  (none yet: add routes to the config file)"


def render_error(
    err: ProxyError, accept: str, routes: Sequence[Route] | None = None, port: int = 0
) -> tuple[str, str]:
    """(content type, body) of an error page. `routes` is given only for 404s on a
    `.localhost` name: listing them helps the user and tells a rebinding page nothing it
    could not already reach."""
    hint = err.hint
    if wants_html(accept):
        body = f"<h1>{err.status} {escape(err.title)}</h1><p>{escape(err.detail)}</p>"
        if hint:
            body += f"<p>{escape(hint)}</p>"
        if err.details:
            body += "<h2>Last output</h2><pre>" + escape("\n".join(err.details)) + "</pre>"
        if err.refresh_s:
            body = f"<meta http-equiv=refresh content={int(err.refresh_s)}>" + body
        if routes is not None:
            body += "<h2>Routes</h2>" + _routes_html(routes, port)
        return "text/html", _page(f"{err.status} {err.title}", body)
    text = f"devrouter: {err.status} {err.title}: {err.detail}\n"
    if hint:
        text += f"{hint}\n"
    if err.details:
        text += "last output:\n" + "".join(f"  {line}\n" for line in err.details)
    if routes is not None:
        text += "routes:\n" + _routes_text(routes, port) + "\n"
    return "text/plain", text


def error_headers(err: ProxyError) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "X-Devrouter-Error": str(err.status)}
    if err.refresh_s:
        headers["Retry-After"] = str(err.refresh_s)
    headers.update(err.headers)
    return headers


class ServiceInfo(Protocol):
    """What a `devrouter run` registration tells an error page (devrouter.control.Service)."""

    ready: bool
    exit_code: int | None
    command: str


def explain_failure(err: ProxyError, svc: ServiceInfo, output: Sequence[str]) -> ProxyError:
    """Turn a refused connection to a `devrouter run` app into the answer that helps: a
    self-reloading "starting..." page while it has not listened yet, or a 502 that shows
    why it is not answering (its exit code and its last lines of output)."""
    if err.kind != "refused" and err.status != 502:
        return err
    tail = tuple(output[-OUTPUT_TAIL_LINES:])
    if err.kind == "refused" and not svc.ready and svc.exit_code is None:
        new: ProxyError = ServiceStarting(
            f"`{svc.command}` is starting and is not listening yet",
            "This page reloads itself until it answers.",
            kind="refused",
        )
        new.refresh_s = STARTING_REFRESH_S
    elif svc.exit_code is not None:
        new = type(err)(
            f"`{svc.command}` exited with code {svc.exit_code}", err.hint, kind=err.kind
        )
    else:
        new = err
    new.details = tail
    return new


def error_response(
    err: ProxyError, accept: str, routes: Sequence[Route] | None = None, port: int = 0
) -> web.Response:
    content_type, body = render_error(err, accept, routes, port)
    return web.Response(
        status=err.status, text=body, content_type=content_type, headers=error_headers(err)
    )
