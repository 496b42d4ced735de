"""The router's own answers: error pages and the index page.

Browsers (an `Accept` that names text/html) get a small self-contained HTML page; curl and
scripts get one or two lines of text. Both say what happened and what to do. No page carries
CORS headers or anything a web page on another origin could use.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from html import escape
from typing import Protocol

from aiohttp import web

from .. import __version__
from ..core.errors import NotFound, ProxyError, ServiceStarting
from ..core.model import Route
from ..core.urls import name_url, origin

#: Lines of a `devrouter run` app's output shown on its error page.
OUTPUT_TAIL_LINES = 20
#: A "starting..." page reloads itself after this many seconds.
STARTING_REFRESH_S = 1
#: A 404 suggests a route name at least this similar to the one asked for (difflib's ratio,
#: 0 to 1; 0.6 lets one typo through in a three-letter name).
SUGGEST_CUTOFF = 0.6
# The name in a 404's detail, for a NotFound made without `name=`.

_STYLE = (
    "body{font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em;"
    "color:#222}h1{font-size:1.4em}code{background:#f3f3f3;padding:0 .3em}"
    "table{border-collapse:collapse}td,th{padding:.2em 1em .2em 0;text-align:left}"
    "footer{margin-top:3em;color:#888;font-size:.85em}"
)


def wants_html(accept: str) -> bool:
    return "text/html" in accept


def route_url(route: Route, port: int, scheme: str = "http") -> str:
    host = route.host.replace("*.", "x.", 1) if route.name.startswith("*.") else route.host
    return origin(host, port, scheme) + "/"


def _page(title: str, body: str) -> str:
    return (
        f"<!doctype html><html><head><meta charset=utf-8><title>{escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body>{body}"
        f"<footer>devrouter {__version__}</footer></body></html>"
    )


def _routes_html(routes: Sequence[Route], port: int, scheme: str = "http") -> str:
    if not routes:
        return (
            "<p>No routes yet. Add some to your config file, for example:</p>"
            "<pre>routes:\n  api: 4001\n  web: 5173</pre>"
        )
    rows = "".join(
        f"<tr><td><a href='{escape(route_url(r, port, scheme))}'>{escape(r.host)}</a></td>"
        f"<td>{escape(r.upstream.describe())}</td></tr>"
        for r in routes
    )
    return f"<table><tr><th>name</th><th>backend</th></tr>{rows}</table>"


def _routes_text(routes: Iterable[Route], port: int, scheme: str = "http") -> str:
    lines = [f"  {route_url(r, port, scheme)} -> {r.upstream.describe()}" for r in routes]
    return "\n".join(lines) if lines else "  (none yet: add routes to the config file)"


def dashboard_url(port: int, scheme: str = "http") -> str:
    return name_url(None, port, scheme, "/")


def closest_name(typed: str, names: Iterable[str]) -> str | None:
    """The route name `typed` most likely meant, or None: the most similar name (difflib's
    ratio at least SUGGEST_CUTOFF: typos), else the only name that `typed` begins or ends
    (`shop` for `shop-frontend`, `api` for `apiserver`). A wildcard `*.shop` stands for
    `typed`'s first label under it (`a.shp` -> `a.shop`)."""
    typed = typed.lower()
    first, dot, _ = typed.partition(".")
    candidates: dict[str, None] = {}  # ordered, no repeats
    for name in names:
        if not name.startswith("*."):
            candidates[name] = None
        elif dot:
            candidates[f"{first}.{name[2:]}"] = None
    candidates.pop(typed, None)
    close = difflib.get_close_matches(typed, candidates, n=1, cutoff=SUGGEST_CUTOFF)
    if close:
        return close[0]
    prefixed = [c for c in candidates if c.startswith(typed) or typed.startswith(c)]
    return prefixed[0] if len(prefixed) == 1 and len(typed) >= 2 else None


def _url(name: str, port: int, scheme: str = "http") -> str:
    return name_url(name, port, scheme, "/")


def _how_to_add(name: str, config_source: str) -> list[tuple[str, str]]:
    """(command or config line, what it does): the ways to make `name` a route."""
    where = config_source if config_source and not config_source.startswith("<") else ""
    return [
        (f"devrouter run {name} -- CMD", "run CMD with a free port in $PORT, routed while it runs"),
        (f"devrouter alias {name} PORT", "route it to a server already listening on PORT"),
        (
            f"routes: {{{name}: PORT}}",
            f"in {where}" if where else "in the config file (devrouter.yaml)",
        ),
    ]


def render_error(
    err: ProxyError,
    accept: str,
    routes: Sequence[Route] | None = None,
    port: int = 0,
    scheme: str = "http",
) -> tuple[str, str]:
    """(content type, body) of an error page. `routes` is given only for 404s on a
    `.localhost` name: listing them helps the user and tells a rebinding page nothing it
    could not already reach. `port` is the router's port the request came to (0: unknown);
    404 and 5xx pages then link the dashboard, which no other page names (a 421 names no
    port). `scheme` is the request's ("https" over TLS): the links keep it."""
    name, source = (err.name, err.config_source) if isinstance(err, NotFound) else ("", "")
    suggestion = closest_name(name, (r.name for r in routes)) if name and routes else None
    add = _how_to_add(name, source) if name else []
    hint = "" if add else err.hint  # the ways to add it replace "Add it to the config file."
    dashboard = dashboard_url(port, scheme) if port and (name or err.status >= 500) else ""
    output_of = f"output of `{err.details_from}`" if err.details_from else "output"
    if wants_html(accept):
        body = f"<h1>{err.status} {escape(err.title)}</h1><p>{escape(err.detail)}</p>"
        if suggestion:
            url = escape(_url(suggestion, port, scheme))
            body += f"<p>Did you mean <a href='{url}'>{url}</a>?</p>"
        if hint:
            body += f"<p>{escape(hint)}</p>"
        if add:
            rows = "".join(
                f"<tr><td><code>{escape(how)}</code></td><td>{escape(what)}</td></tr>"
                for how, what in add
            )
            body += f"<h2>Add {escape(name)}</h2><table>{rows}</table>"
        if err.details:
            body += f"<h2>Last {escape(output_of)}</h2><pre>"
            body += escape("\n".join(err.details)) + "</pre>"
        if err.refresh_s:
            body = f"<meta http-equiv=refresh content={int(err.refresh_s)}>" + body
        if routes is not None:
            body += "<h2>Routes</h2>" + _routes_html(routes, port, scheme)
        if dashboard:
            body += f"<p>Dashboard: <a href='{dashboard}'>{dashboard}</a></p>"
        return "text/html", _page(f"{err.status} {err.title}", body)
    text = f"devrouter: {err.status} {err.title}: {err.detail}\n"
    if suggestion:
        text += f"did you mean {_url(suggestion, port, scheme)} ?\n"
    if hint:
        text += f"{hint}\n"
    if add:
        text += f"to add {name}:\n" + "".join(f"  {how:<36} {what}\n" for how, what in add)
    if err.details:
        text += f"last {output_of}:\n" + "".join(f"  {line}\n" for line in err.details)
    if routes is not None:
        text += "routes:\n" + _routes_text(routes, port, scheme) + "\n"
    if dashboard:
        text += f"dashboard: {dashboard}\n"
    return "text/plain", text


def error_headers(err: ProxyError) -> dict[str, str]:
    headers = {"Cache-Control": "no-store", "X-Devrouter-Error": str(err.status)}
    if err.refresh_s:
        headers["Retry-After"] = str(err.refresh_s)
    headers.update(err.headers)
    return headers


class ServiceInfo(Protocol):
    """What a `devrouter run` registration tells an error page
    (devrouter.services.registry.Service)."""

    name: str
    port: int  # the port it was given ($PORT)
    ready: bool
    exit_code: int | None
    command: str
    listens_on: tuple[int, ...]  # ports its processes listen on other than `port`


class ServiceDirectory(Protocol):
    """Where the engines look up a `devrouter run` registration for an error page
    (devrouter.services.control.ControlServer), without depending on the control server."""

    def service(self, name: str) -> ServiceInfo | None: ...

    def output(self, name: str) -> Sequence[str]: ...


def explain_failure(err: ProxyError, svc: ServiceInfo, output: Sequence[str]) -> ProxyError:
    """Turn a refused connection to a `devrouter run` app into the answer that helps: a
    self-reloading "starting..." page while it has not listened yet, or a 502 that shows
    why it is not answering (its exit code and its last lines of output)."""
    if err.kind != "refused" and err.status != 502:
        return err
    tail = tuple(output[-OUTPUT_TAIL_LINES:])
    if err.kind == "refused" and not svc.ready and svc.exit_code is None:
        detail = f"`{svc.command}` is starting and is not listening yet"
        listens_on = svc.listens_on
        if listens_on:  # it is up, on a port of its own choosing
            ports = ", ".join(map(str, listens_on))
            detail = (
                f"`{svc.name}` listens on {ports}, not on its $PORT {svc.port}: pass "
                "--port $PORT (or read PORT) in the command"
            )
        new: ProxyError = ServiceStarting(
            detail, "This page reloads itself until it answers.", kind="refused"
        )
        new.refresh_s = STARTING_REFRESH_S
    elif svc.exit_code is not None:
        new = type(err)(
            f"`{svc.command}` exited with code {svc.exit_code}", err.hint, kind=err.kind
        )
    else:
        new = err
    new.details = tail
    new.details_from = svc.command
    return new


def error_response(
    err: ProxyError,
    accept: str,
    routes: Sequence[Route] | None = None,
    port: int = 0,
    scheme: str = "http",
) -> web.Response:
    content_type, body = render_error(err, accept, routes, port, scheme)
    return web.Response(
        status=err.status, text=body, content_type=content_type, headers=error_headers(err)
    )
