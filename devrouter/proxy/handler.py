"""The request handler: snapshot -> route -> forward -> stream.

One function decides where a request goes (`Proxy.handle`); `forward` moves an HTTP
exchange and `devrouter.proxy.websocket.bridge` a WebSocket. The table is read once per request,
so a reload never changes a request's route halfway.

What "invisible" means here, and where each rule comes from:
- the upstream request line carries the client's raw target byte for byte (no
  normalisation), and Host passes unchanged (RFC 9110 §7.2; dev servers check it);
- hop-by-hop fields (RFC 9110 §7.6.1) and every field the Connection header names are
  removed both ways; forwarding headers are the router's own, never the client's;
- bodies stream in both directions with the transports' flow control bounding memory, the
  router frames the upstream body itself, and nothing is decompressed;
- once response headers have gone out, a failure aborts the client connection, so a cut
  body never looks complete.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from time import perf_counter
from typing import Any

import aiohttp
from aiohttp import hdrs, web
from aiohttp.http import HttpVersion10, HttpVersion11
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from ..core.access import TOKEN_HEADER, Verdict, challenge, verdict
from ..core.errors import (
    BadGateway,
    BadRequest,
    LoopDetected,
    MethodNotAllowed,
    MisdirectedRequest,
    NotFound,
    ProxyError,
    RouteBusy,
    Unauthorized,
    VersionNotSupported,
)
from ..core.model import AccessRule, Route, Upstream
from ..core.numbers import digits
from ..core.routes import (
    OWN_HOSTS,
    AmbiguousPath,
    HostError,
    parse_host,
    route_name,
    select_upstream,
)
from ..core.state import State
from ..http1.fields import forwarding_pairs
from ..http1.grammar import BAD_VALUE
from ..http1.policy import HOPS_HEADER, MAX_HOPS, NEVER_NAMED, REQUEST_DROP, RESPONSE_DROP
from ..observe.metrics import HTTP1, RequestRecord, is_event_stream, protocol_of
from ..server.upstream import (
    HostPreference,
    base_url,
    is_refused,
    reset_connection,
    translate_errors,
)
from ..web import dashboard
from ..web.pages import ServiceDirectory, error_response, explain_failure
from . import websocket

log = logging.getLogger("devrouter.proxy")

_DEFAULTS_AIOHTTP_ADDS = (hdrs.CONTENT_TYPE, hdrs.DATE, hdrs.SERVER)


class ProxyResponse(web.StreamResponse):
    """A StreamResponse that adds nothing the backend did not send.

    aiohttp fills in Content-Type, Date and Server when they are missing; through a proxy that
    would change what the app sent.
    """

    def __init__(self, *, absent: tuple[str, ...], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._absent = absent

    async def _prepare_headers(self) -> None:
        await super()._prepare_headers()
        for name in self._absent:
            self._headers.popall(name, None)


def connection_tokens(headers: CIMultiDictProxy[str]) -> frozenset[str]:
    """The fields a Connection header names, to be removed (RFC 9110 §7.6.1)."""
    values = headers.getall(hdrs.CONNECTION, ())
    if not values:
        return frozenset()
    tokens = frozenset(t.strip().lower() for v in values for t in v.split(",") if t.strip())
    return tokens - NEVER_NAMED


def origin_form(raw_target: str, host: str) -> str:
    """The request target as it goes upstream. Absolute-form (`GET http://a.localhost/x`) is
    accepted only when its authority is the same name as Host, and never dialled."""
    if raw_target.startswith("/"):
        return raw_target
    if raw_target == "*":
        raise MethodNotAllowed("OPTIONS * is not forwarded")
    scheme, sep, rest = raw_target.partition("://")
    if not sep or scheme.lower() not in ("http", "ws"):
        raise BadRequest("the request target must be a path such as /index.html")
    authority, slash, path = rest.partition("/")
    try:
        same = parse_host(authority) == host
    except HostError:
        same = False
    if not same:
        raise BadRequest(
            f"the absolute request target names {authority!r}, which is not this Host; "
            "devrouter is not a forward proxy"
        )
    return slash + path if slash else "/"


class Proxy:
    def __init__(
        self,
        state: State,
        session: aiohttp.ClientSession,
        site: dashboard.Context,
        control: ServiceDirectory | None = None,
    ) -> None:
        self.control = control
        self.state = state
        self.session = session
        self.site = site
        self.metrics = site.metrics
        self.prefer = HostPreference()

    async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
        snapshot = self.state.snapshot  # one table for the whole request
        try:
            if request.version not in (HttpVersion11, HttpVersion10):
                raise VersionNotSupported("devrouter speaks HTTP/1.0 and HTTP/1.1")
            if request.method == hdrs.METH_CONNECT:
                raise MethodNotAllowed("CONNECT is refused: devrouter is not a forward proxy")
            host_values = request.headers.getall(hdrs.HOST, ())
            if len(host_values) != 1:
                raise BadRequest("the request needs exactly one Host header")
            try:
                host = parse_host(host_values[0])
            except HostError as exc:
                raise BadRequest(str(exc)) from None
            target = origin_form(request.raw_path, host)
            name = route_name(host)
            if name is None or name == "devrouter":
                if host in OWN_HOSTS:
                    _admit(snapshot.config.access, request, host)
                    return await dashboard.handle(
                        request, self.site, target, self._local_port(request)
                    )
                raise MisdirectedRequest(
                    f"{host!r} is not a .localhost name; devrouter only answers NAME.localhost"
                )
            route = snapshot.table.lookup(name)
            if route is None:
                _admit(snapshot.config.access, request, host)  # the 404 page lists the routes
                return error_response(
                    NotFound(
                        f"no route is named '{name}'",
                        "Add it to the config file.",
                        name=name,
                        config_source=snapshot.config.source,
                    ),
                    request.headers.get(hdrs.ACCEPT, ""),
                    snapshot.table.routes,
                    self._local_port(request),
                    request.scheme,
                )
            admitted = _admit(route.access, request, host)
            hops = _hops(request.headers.getall(HOPS_HEADER, []))
            if hops >= MAX_HOPS:
                raise LoopDetected(
                    f"the request passed through devrouter {hops} times",
                    f"Route '{route.name}' leads back into the router. If a dev server proxies "
                    "to a .localhost name, point it at the backend's port instead, or make it "
                    "rewrite Host (changeOrigin).",
                )
            limit = route.max_connections
            if limit is not None and self.metrics.in_flight(route.name) >= limit:
                raise RouteBusy(
                    f"route '{route.name}' already has {limit} requests, streams and "
                    "WebSockets open, its limit",
                    "Close some (another tab, a stuck client), or raise max_connections for "
                    f"this route in {snapshot.config.source}.",
                )
            try:
                upstream = select_upstream(route, target)
            except AmbiguousPath as exc:
                raise BadRequest(str(exc)) from None
            headers = self._upstream_headers(request, hops, admitted)
            return await self._measured(request, route, upstream, target, headers)
        except ProxyError as err:
            if err.status >= 500:
                log.warning(
                    "%s %s%s: %d %s",
                    request.method,
                    request.host,
                    request.raw_path,
                    err.status,
                    err.detail,
                )
            return error_response(
                err,
                request.headers.get(hdrs.ACCEPT, ""),
                port=self._local_port(request),
                scheme=request.scheme,
            )

    async def _measured(
        self,
        request: web.BaseRequest,
        route: Route,
        upstream: Upstream,
        target: str,
        headers: CIMultiDict[str],
    ) -> web.StreamResponse:
        """Forward or bridge, and count the exchange in the route's metrics."""
        is_ws = websocket.is_upgrade(request)
        rec = RequestRecord(
            time.time(),
            request.method,
            request.headers.get(hdrs.HOST, ""),
            target,
            route.name,
            upstream.port,
            bytes_in=request.content_length or 0,
            websocket=is_ws,
            request_head=_head_bytes(f"{request.method} {target} HTTP/1.1", headers),
            protocol=protocol_of(request.transport.get_extra_info)
            if request.transport is not None
            else HTTP1,
        )
        t0 = perf_counter()  # not loop.time(): uvloop's counts whole milliseconds
        self.metrics.opened(route.name, websocket=is_ws)
        try:
            if is_ws:
                resp = await websocket.bridge(self, request, route, upstream, target, headers)
            else:
                resp = await self.forward(request, route, upstream, target, headers, rec, t0)
            rec.status = resp.status
            return resp
        except ProxyError as err:
            if self.control is not None and (svc := self.control.service(route.name)):
                err = explain_failure(err, svc, self.control.output(route.name))
            rec.status = err.status
            rec.error = err.kind
            raise err from None
        finally:
            if not rec.duration_s:  # not set by _relay: an error, or a WebSocket session
                rec.duration_s = perf_counter() - t0
            self.metrics.finish(rec, route.timeout_s)

    def _local_port(self, request: web.BaseRequest) -> int:
        transport = request.transport
        sockname = transport.get_extra_info("sockname") if transport is not None else None
        return int(sockname[1]) if sockname else 0

    def _upstream_headers(
        self, request: web.BaseRequest, hops: int, admitted: Verdict | None = None
    ) -> CIMultiDict[str]:
        named = connection_tokens(request.headers)
        if admitted is Verdict.AUTHORIZATION:  # the router's credential, not the app's
            named |= {"authorization"}
        out: CIMultiDict[str] = CIMultiDict()
        xff = []
        for key, value in request.headers.items():
            lower = key.lower()
            if lower in REQUEST_DROP or lower in named:
                continue
            if lower == "x-forwarded-for":
                xff.append(value)
                continue
            out.add(key, value)
        peer = request.remote or "127.0.0.1"
        host = request.headers.get(hdrs.HOST, "")
        proto = "https" if request.secure else "http"
        for name, value in forwarding_pairs(
            peer, host, self._local_port(request), xff, hops, proto
        ):
            out[name] = value
        return out

    async def open(self, upstream: Upstream, attempt: Any) -> Any:
        """Run `attempt(base_url)` on each address of the upstream until one is not refused
        and return its result. Errors are left for `translate_errors`."""
        hosts = self.prefer.order(upstream)
        for i, host in enumerate(hosts):
            try:
                result = await attempt(base_url(host, upstream.port))
            except aiohttp.ClientConnectorError as exc:
                if i + 1 < len(hosts) and is_refused(exc):
                    continue
                raise
            self.prefer.worked(upstream, host)
            return result
        raise AssertionError("unreachable: an upstream has at least one host")

    async def forward(
        self,
        request: web.BaseRequest,
        route: Route,
        upstream: Upstream,
        target: str,
        headers: CIMultiDict[str],
        rec: RequestRecord,
        t0: float,
    ) -> web.StreamResponse:
        deadline = Deadline(route.timeout_s)
        body: AsyncIterator[bytes] | None = None
        if request.body_exists:
            if (
                request.version == HttpVersion11
                and "100-continue" in request.headers.get(hdrs.EXPECT, "").lower()
            ):
                await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = deadline.extend_on_progress(request.content)

        async def attempt(base: str) -> aiohttp.ClientResponse:
            return await self.session.request(
                request.method,
                URL(base + target, encoded=True),
                headers=headers,
                data=body,
                allow_redirects=False,
                auto_decompress=False,
            )

        with translate_errors(upstream, route.timeout_s):
            async with deadline:
                resp: aiohttp.ClientResponse = await self.open(upstream, attempt)
        async with resp:
            return await self._relay(request, resp, upstream, rec, t0)

    async def _relay(
        self,
        request: web.BaseRequest,
        resp: aiohttp.ClientResponse,
        upstream: Upstream,
        rec: RequestRecord,
        t0: float,  # perf_counter() when the request came
    ) -> web.StreamResponse:
        if not 200 <= resp.status <= 999 or BAD_VALUE.search(resp.reason or ""):
            raise BadGateway(
                f"the backend on port {upstream.port} sent an invalid status line "
                f"({resp.status} {resp.reason!r})"
            )
        named = connection_tokens(resp.headers)
        out_headers: CIMultiDict[str] = CIMultiDict()
        for key, value in resp.headers.items():
            lower = key.lower()
            if lower in RESPONSE_DROP or lower in named:
                continue
            if BAD_VALUE.search(value):
                raise BadGateway(
                    f"the backend on port {upstream.port} sent an invalid {key} header "
                    "(a control character in its value)"
                )
            out_headers.add(key, value)
        absent = tuple(h for h in _DEFAULTS_AIOHTTP_ADDS if h not in resp.headers)
        out = ProxyResponse(
            status=resp.status, reason=resp.reason, headers=out_headers, absent=absent
        )
        if resp.content_length is not None:
            out.content_length = resp.content_length
        if request.headers.get(hdrs.UPGRADE):
            # An Upgrade we did not forward (h2c): aiohttp's parser stops reading HTTP after
            # such a request, so end the connection cleanly rather than leave it mute.
            out.force_close()
        # Each figure is read just before the bytes it times are handed to the client's
        # transport: a reading after the write can come later than the client's own reading of
        # those bytes (on the other core), and this coroutine may resume later still (after
        # the client's next request). So the router's figures never exceed the client's.
        rec.ttfb_s = rec.duration_s = perf_counter() - t0
        await out.prepare(request)
        rec.response_head = _head_bytes(f"HTTP/1.1 {resp.status}", out.headers)
        if is_event_stream(rec.response_head):
            rec.event_stream = True
            self.metrics.stream_opened(rec.route)
        try:
            if request.method != hdrs.METH_HEAD:
                async for chunk in resp.content.iter_any():
                    rec.bytes_out += len(chunk)
                    rec.duration_s = perf_counter() - t0
                    await out.write(chunk)
            if out.chunked:  # the last chunk goes out now
                rec.duration_s = perf_counter() - t0
            await out.write_eof()
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            # The status line has gone out, so the only honest signal left is to cut the
            # connection: a client must never take a truncated body for a whole one.
            log.warning(
                "%s %s%s: the backend on port %d failed mid-response (%s); aborting the "
                "client connection",
                request.method,
                request.host,
                request.raw_path,
                upstream.port,
                type(exc).__name__,
            )
            rec.error = "reset"
            abort(request)
        return out


def _head_bytes(start: str, headers: CIMultiDict[str] | CIMultiDictProxy[str]) -> bytes:
    lines = [start, *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape")


def abort(request: web.BaseRequest) -> None:
    reset_connection(request.transport)
    request.protocol.force_close()


class Deadline:
    """The time limit for a backend's response headers, in seconds.

    Each chunk of request body the backend takes moves the limit, so a long upload to a
    backend that reads it steadily is never cut; only silence is.
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._cm = asyncio.timeout(timeout_s)
        self._active = False

    async def __aenter__(self) -> None:
        self._active = True
        await self._cm.__aenter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self._active = False
        await self._cm.__aexit__(*exc_info)

    async def extend_on_progress(self, content: aiohttp.StreamReader) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        async for chunk in content.iter_any():
            if self._active:
                self._cm.reschedule(loop.time() + self.timeout_s)
            yield chunk


def _admit(rule: AccessRule | None, request: web.BaseRequest, host: str) -> Verdict | None:
    """None if no secret is required; how the request presented it; or a 401."""
    if rule is None or rule.is_off:
        return None
    authorization = request.headers.getall(hdrs.AUTHORIZATION, ())
    token = request.headers.getall(TOKEN_HEADER, ())
    found = verdict(
        rule,
        authorization[0] if len(authorization) == 1 else None,
        token[0] if len(token) == 1 else None,
    )
    if found is Verdict.DENIED:
        raise Unauthorized(
            f"{host} requires a secret (access: in the devrouter config)",
            "In a browser, give any user name and the token as the password. From a script: "
            "curl -H 'Authorization: Bearer TOKEN', or -H 'X-Devrouter-Token: TOKEN' when the "
            "app uses Authorization itself.",
            challenge(f"devrouter {host}"),
        )
    return found


def _hops(values: list[str]) -> int:
    if not values:
        return 0
    if len(values) > 1:  # which one counts would be a guess: the engines must not differ
        raise BadRequest(f"{len(values)} {HOPS_HEADER} headers; one at most")
    value = values[0]
    if not digits(value) or len(value) > 3:
        raise BadRequest(f"invalid {HOPS_HEADER} header {value!r}")
    return int(value)
