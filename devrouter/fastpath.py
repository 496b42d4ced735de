"""The fast path: plain HTTP/1.1 exchanges relayed at the protocol level, on the event loop's
callbacks, with no per-request task, request object or stream reader.

Theory of operation. aiohttp's per-request machinery (request and response objects, stream
readers, a task per request, on both the server and the client side) costs about 100 us per
request, more than everything else together. Most dev traffic is the simplest kind of
exchange: a request with no body or a Content-Length body to a routed name. For those, this
module reads the request head with one strict regular expression, rewrites the headers once,
writes them to a pooled upstream connection, and relays the response as bytes: framed by a
strict pattern and its Content-Length when it is that simple, by llhttp (httptools)
otherwise. A WebSocket handshake is relayed the same way, and after the backend's 101 the
bytes both ways (devrouter.wsrelay).

Each connection keeps what the last head decided (HeadMemo, ResponseMemo): a field block
that repeats byte for byte, under the same config snapshot, is not checked again. At one
connection the router's code runs with caches that the client and the backend have just
used, where every step costs several times what it costs in a loop; the memos take most of
the steps away for repeated traffic, and the metrics are counted in batches for the same
reason (devrouter.metrics).

Everything else is handed to the aiohttp handler in `devrouter.proxy`, with the bytes read so
far, before anything has been answered: heads the strict pattern does not accept (odd
syntax, obs-fold, control bytes, oversize, absolute-form, HTTP/0.9 or 2.0, a chunked or
ambiguous body, Expect, an Upgrade other than a well-formed WebSocket handshake, HEAD),
names that are not routes (404, 421,
the router's own pages), loops and ambiguous paths. The hand-off happens at a request
boundary and the connection stays with aiohttp from then on. So every rule of the proxy has
one implementation that decides hard cases, and the fast path only ever takes requests whose
handling is unambiguous.

Flow control: when the client's socket buffer is full the upstream socket stops being read,
and the other way round for uploads, so memory stays bounded for any body size.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from functools import partial
from time import perf_counter
from typing import Any, cast

import httptools
from aiohttp import web

from .config import Route, Upstream
from .control import ControlServer
from .errors import BadGateway, ProxyError
from .http1.answers import accept_of, error_response
from .http1.grammar import BAD_VALUE_B, maybe_http
from .http1.policy import IDEMPOTENT, NO_BODY_STATUS
from .http1.request_head import (
    MAX_PLAN_HEAD_BYTES,
    Forwarder,
    HandOff,
    RequestPlan,
    plan_request,
    replan,
)
from .http1.response_head import (
    ResponsePlan,
    Upgrade,
    plan_response,
    relay_upgrade,
    response_fields,
)
from .limits import LimitedServer
from .metrics import Metrics, is_event_stream
from .pages import error_headers, explain_failure, render_error
from .routes import AmbiguousPath, HostError, parse_host, route_name, select_upstream
from .state import Snapshot, State
from .strictgate import Refusing, StrictGate
from .upstream import (
    CONNECT_TIMEOUT_S,
    POOL_KEEPALIVE_S,
    REFUSED_ERRNOS,
    HostPreference,
    connect_error,
    disconnected_error,
    invalid_response_error,
    refused_error,
    reset_connection,
    timeout_error,
)
from .wire import early_refusal
from .wsrelay import Relay

log = logging.getLogger("devrouter.proxy")

#: A request head larger than this, in bytes, goes to aiohttp (which answers 431 or 400).
MAX_HEAD_BYTES = 16 * 1024
#: Pipelined bytes buffered while a request is in flight before the client is paused.
MAX_PIPELINE_BUFFER_BYTES = 256 * 1024
#: Idle pooled connections kept per upstream address.
MAX_IDLE_PER_UPSTREAM = 64


class FastServer(LimitedServer):
    """aiohttp's low-level server whose connections start on the fast path.

    Subclassing aiohttp's `web.Server` (through LimitedServer) keeps aiohttp's runner and
    sites (binding, shutdown) working; `aio_protocol()` makes the aiohttp connection handler
    a hand-off needs.
    """

    def __init__(
        self,
        handler: Any,
        *,
        state: State,
        prefer: HostPreference,
        metrics: Metrics,
        gated: bool = False,
        control: ControlServer | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, state=state, **kwargs)
        self.control = control
        self.gated = gated  # aiohttp's parser is the pure-Python one: check with llhttp first
        self.state = state
        self.metrics = metrics
        self.prefer = prefer
        self.pool = Pool(self._loop)
        self.fast_connections: set[ClientConnection] = set()
        self.keepalive_timeout_s = float(kwargs.get("keepalive_timeout", 15.0))
        # the same limits aiohttp applies to what it parses: oversize heads are its to refuse
        self.max_headers = int(kwargs.get("max_headers", 128))
        self.max_line = min(
            int(kwargs.get("max_line_size", 8190)), int(kwargs.get("max_field_size", 8190))
        )
        self._snapshot: Snapshot | None = None
        self._routes: dict[bytes, Route | None] = {}
        self._drained: asyncio.Event | None = None

    def open_connections(self) -> int:
        return len(self._connections) + len(self.fast_connections)

    def make_protocol(self) -> asyncio.Protocol:
        return ClientConnection(self)

    def aio_protocol(self) -> asyncio.Protocol:
        """aiohttp's handler for a connection handed off (already counted, never refused)."""
        protocol: asyncio.Protocol = web.Server.__call__(self)
        return StrictGate(protocol) if self.gated else protocol

    def lookup(self, host: bytes) -> Route | None:
        """The route for a Host value, cached per snapshot; None sends the request to aiohttp
        (malformed, not ours, own pages, unknown names)."""
        snapshot = self.state.snapshot
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._routes = {}
        try:
            return self._routes[host]
        except KeyError:
            pass
        try:
            name = route_name(parse_host(host.decode("ascii")))
        except (HostError, UnicodeDecodeError):
            name = None
        route = snapshot.table.lookup(name) if name and name != "devrouter" else None
        if len(self._routes) < 1024:
            self._routes[host] = route
        return route

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for conn in list(self.fast_connections):
            if conn.relay is not None:
                conn.relay.shutdown()
            conn.close_when_idle()

    def forget(self, conn: ClientConnection) -> None:
        self.fast_connections.discard(conn)
        if not self.fast_connections and self._drained is not None:
            self._drained.set()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (base API)
        """Let in-flight fast-path exchanges finish within `timeout` seconds, then cut."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or 0)
        if self.fast_connections:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        for conn in list(self.fast_connections):
            conn.abort()
        self.pool.close()
        await super().shutdown(max(0.0, deadline - loop.time()))


class Pool:
    """Idle keep-alive connections per upstream address."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # asyncio.get_running_loop() costs a getpid() system call
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}

    def get(self, key: tuple[str, int]) -> UpstreamConnection | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        conns = self.idle.setdefault(conn.key, [])
        if len(conns) >= MAX_IDLE_PER_UPSTREAM:
            conn.close()
            return
        conns.append(conn)
        conn.start_idle_timer()

    def discard(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()


class ClientConnection(asyncio.Protocol):
    """One accepted client socket, on the fast path until a request needs aiohttp."""

    __slots__ = (
        "_deadline_timer",
        "_idle_timer",
        "buf",
        "closing",
        "corked",
        "eof",
        "exchange",
        "forwarder",
        "idle_since",
        "local_port",
        "loop",
        "peer",
        "plan",
        "reading_paused",
        "relay",
        "server",
        "transport",
    )

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.loop = server._loop
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.exchange: Exchange | None = None
        self.peer = b"127.0.0.1"
        self.local_port = b"0"
        self.closing = False
        self.eof = False
        self.reading_paused = False
        self.corked: list[bytes] | None = None
        self.idle_since = self.loop.time()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._deadline_timer: asyncio.TimerHandle | None = None
        self.relay: Relay | None = None  # after a WebSocket upgrade: the relay owns the bytes
        self.plan: RequestPlan | None = None  # the last head's, for the next (replan)
        self.forwarder = Forwarder(self.peer, self.local_port)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if peer:
            self.peer = str(peer[0]).encode()
        if sock:
            self.local_port = str(sock[1]).encode()
        self.forwarder = Forwarder(self.peer, self.local_port)
        self.server.fast_connections.add(self)
        self._arm_idle_timer()

    def data_received(self, data: bytes) -> None:
        try:
            self._received(data)
        except Exception:  # a bug here must cost one connection, not the router
            log.exception("internal error on a client connection; closing it")
            self.abort()

    def _received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.from_client(data)
            return
        ex = self.exchange
        if ex is None:
            # the usual read: exactly one whole head and nothing else (what _next does with
            # the buffer, without copying through it)
            if (
                not self.buf
                and not self.closing
                and data[-4:] == b"\r\n\r\n"
                and data.find(b"\r\n\r\n") == len(data) - 4
            ):
                try:
                    ex = self._start(data)
                except HandOff:
                    self.buf += data
                    self.handoff()
                    return
                self.exchange = ex
                ex.begin()
                return
        elif ex.body_left:
            data = ex.client_body(data)
            if not data:
                return
        self.buf += data
        if self.exchange is None:
            self._next()
        elif len(self.buf) > MAX_PIPELINE_BUFFER_BYTES and not self.reading_paused:
            self.pause_reading()

    def eof_received(self) -> bool | None:
        # A client that closes its side has gone, as far as a request in flight is
        # concerned (aiohttp's handler is cancelled the same way): cancel the upstream.
        self.eof = True
        if self.relay is not None:
            self.relay.client_gone()
        elif self.exchange is not None:
            self.exchange.client_gone()
            self.exchange = None
        self.closing = True
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_idle_timer()
        self._cancel_deadline_timer()
        self.server.forget(self)
        self.closing = True
        if self.relay is not None:
            self.relay.client_gone()
        elif self.exchange is not None:
            self.exchange.client_gone()
            self.exchange = None

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.pause_upstream()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.resume_upstream()

    # -- requests --------------------------------------------------------------------------

    def _next(self) -> None:
        """Start the next buffered request, if a whole head is there."""
        buf = self.buf
        if not buf or self.closing:
            return
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            # An oversize head, or one with bare LFs (which may never end in CRLFCRLF), is
            # aiohttp's to judge; bytes that will never be an HTTP/1 head (TLS, HTTP/0.9)
            # are refused now.
            if (
                len(buf) > MAX_HEAD_BYTES
                or buf.count(b"\n") != buf.count(b"\r\n")
                or early_refusal(buf) is not None
            ):
                self.handoff()
            return
        try:
            ex = self._start(bytes(buf[: end + 4]))
        except HandOff:
            self.handoff()
            return
        del buf[: end + 4]
        self.exchange = ex
        if buf and ex.body_left:
            rest = ex.client_body(bytes(buf))
            buf.clear()
            buf += rest
        ex.begin()

    def _start(self, head: bytes) -> Exchange:
        """Check and rewrite one request head (devrouter.http1.request_head). A field block
        the same as the last one on this connection, under the same config, is not checked
        again: only its request line is."""
        server = self.server
        snapshot = server.state.snapshot
        plan = self.plan
        if plan is not None:
            target = replan(plan, head, snapshot, server.max_line)
            if target is not None:
                return self._exchange(plan, target)
        plan, target = plan_request(
            head, snapshot, server.lookup, self.forwarder, server.max_headers, server.max_line
        )
        self.plan = plan if len(head) <= MAX_PLAN_HEAD_BYTES else None
        return self._exchange(plan, target)

    def _exchange(self, plan: RequestPlan, target: bytes) -> Exchange:
        """The exchange for a checked head: what depends on more than the head (the route's
        in-flight limit, a path route's choice of target) is decided per request."""
        route = plan.route
        limit = route.max_connections
        if limit is not None and self.server.metrics.in_flight(route.name) >= limit:
            raise HandOff("the route is full")  # aiohttp answers the 503
        upstream = route.upstream
        if route.paths:
            try:
                upstream = select_upstream(route, target.decode("latin-1"))
            except AmbiguousPath:
                raise HandOff("an ambiguous path") from None
        return Exchange(
            self,
            plan,
            upstream,
            b"".join((plan.method, b" ", target, b" HTTP/1.1\r\n", plan.tail)),
            target,
        )

    def finished(self, reuse: bool) -> None:
        """The response has been written completely."""
        self.exchange = None
        if not reuse or self.closing or (self.eof and not self.buf):
            self.close()
            return
        if self.reading_paused:
            self.resume_reading()
        self.idle_since = self.loop.time()
        self._next()

    def handoff(self) -> None:
        """Give this connection, and the bytes read so far, to aiohttp's handler."""
        transport = self.transport
        if transport is None or transport.is_closing():
            return
        self._cancel_idle_timer()
        self._cancel_deadline_timer()
        self.server.forget(self)
        self.closing = True
        if self.corked is not None:
            self.uncork()
        if self.reading_paused:
            transport.resume_reading()
        refusal = early_refusal(self.buf)  # an HTTP/2 preface, TLS, bare CRs, HTTP/0.9
        protocol = self.server.aio_protocol() if refusal is None else Refusing(refusal)
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
        if self.buf:
            data = bytes(self.buf)
            self.buf.clear()
            protocol.data_received(data)

    # -- helpers ---------------------------------------------------------------------------

    def write(self, data: bytes) -> None:
        if self.corked is not None:
            self.corked.append(data)
        elif self.transport is not None:
            self.transport.write(data)

    def cork(self) -> None:
        """Collect writes until `uncork`: a response head and body that arrive in one read
        go out in one send, not two."""
        self.corked = []

    def uncork(self) -> None:
        out, self.corked = self.corked, None
        if out and self.transport is not None:
            self.transport.write(out[0] if len(out) == 1 else b"".join(out))

    def pause_reading(self) -> None:
        if self.transport is not None and not self.reading_paused:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self.reading_paused:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        self.closing = True
        if self.corked is not None:
            self.uncork()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closing = True
        reset_connection(self.transport)

    def close_when_idle(self) -> None:
        if self.exchange is None:
            self.close()
        else:
            self.closing = True

    def _arm_idle_timer(self) -> None:
        """One timer per connection, re-armed lazily: a connection idle (or trickling a head)
        for the keep-alive timeout is closed, without a timer per request."""
        self._idle_timer = self.loop.call_later(self.server.keepalive_timeout_s, self._idle_check)

    def _cancel_idle_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.closing:
            return
        timeout = self.server.keepalive_timeout_s
        if self.exchange is not None:  # busy: the exchange has its own timer
            self._idle_timer = self.loop.call_later(timeout, self._idle_check)
            return
        left = self.idle_since + timeout - self.loop.time()
        if left <= 0:
            self.close()
        else:
            self._idle_timer = self.loop.call_later(left, self._idle_check)

    def watch_deadline(self, deadline: float) -> None:
        """Make sure a timer fires by `deadline` (loop time) for the exchange in flight.

        One timer per connection, kept across exchanges: on keep-alive traffic the timer
        armed for an earlier exchange is still pending and fires first, and its check
        re-arms for the current exchange. A timer per request cost more than the relaying.
        """
        timer = self._deadline_timer
        if timer is None or timer.when() > deadline:
            if timer is not None:
                timer.cancel()
            self._deadline_timer = self.loop.call_at(deadline, self._deadline_check)

    def _cancel_deadline_timer(self) -> None:
        if self._deadline_timer is not None:
            self._deadline_timer.cancel()
            self._deadline_timer = None

    def _deadline_check(self) -> None:
        self._deadline_timer = None
        ex = self.exchange
        if ex is None or ex.done or ex.sent_head:
            return
        if self.loop.time() < ex.deadline:  # a later exchange, or an upload made progress
            self._deadline_timer = self.loop.call_at(ex.deadline, self._deadline_check)
            return
        ex.fail(timeout_error(ex.upstream, ex.route.timeout_s))


class Exchange:
    """One request/response pair on the fast path."""

    __slots__ = (
        "_connect_task",
        "body_left",
        "bytes_out",
        "chunked",
        "client",
        "conn",
        "deadline",
        "done",
        "event_stream",
        "head",
        "host",
        "http11",
        "keep_alive",
        "length",
        "method",
        "pending",
        "pending_bytes",
        "recorded",
        "relay",
        "resp_head",
        "retried",
        "reused",
        "route",
        "sent_head",
        "started",
        "status",
        "t0",
        "target",
        "ttfb",
        "upstream",
        "ws_key",
    )

    def __init__(
        self,
        client: ClientConnection,
        plan: RequestPlan,  # what the request's head decided
        upstream: Upstream,
        head: bytes,  # as forwarded
        target: bytes,
    ) -> None:
        self.client = client
        self.route = plan.route
        self.ws_key = plan.ws_key
        self.relay: Relay | None = None
        self.upstream = upstream
        self.head = head
        self.method = plan.method
        self.body_left = self.length = plan.length
        self.pending: list[bytes] = []  # body bytes read before the upstream is connected
        self.pending_bytes = 0
        self.keep_alive = plan.keep_alive
        self.http11 = plan.minor == b"1"
        self.host = plan.host
        self.conn: UpstreamConnection | None = None
        self.sent_head = False  # response head written to the client
        self.chunked = False  # response re-framed as chunked for the client
        self.done = False
        self.retried = False
        self.reused = False
        self.deadline = 0.0  # loop time; the client connection's timer enforces it
        self._connect_task: asyncio.Task[None] | None = None
        # for metrics
        self.target = target
        self.status = 0
        self.t0 = 0.0  # perf_counter() when the head was read (metrics; see devrouter.metrics)
        self.ttfb = 0.0
        self.event_stream = False
        self.bytes_out = 0
        self.resp_head = b""
        self.recorded = False

    # -- request side ----------------------------------------------------------------------

    def begin(self) -> None:
        # The head goes upstream first; the bookkeeping after it runs while the backend works.
        client = self.client
        self.t0 = perf_counter()
        hosts = client.server.prefer.order(self.upstream)
        conn = client.server.pool.get((hosts[0], self.upstream.port))
        if conn is not None and not self.retried:
            self._send(conn, reused=True)
        else:
            self._connect_task = client.loop.create_task(self._connect(hosts))
        self.started = time.time()
        client.server.metrics.opened(self.route.name, websocket=self.ws_key is not None)
        self.deadline = client.loop.time() + self.route.timeout_s
        client.watch_deadline(self.deadline)

    async def _connect(self, hosts: tuple[str, ...]) -> None:
        loop = self.client.loop
        last: BaseException | None = None
        for host in hosts:
            try:
                factory = partial(
                    UpstreamConnection, self.client.server.pool, (host, self.upstream.port)
                )
                async with asyncio.timeout(CONNECT_TIMEOUT_S):
                    _t, conn = await loop.create_connection(factory, host, self.upstream.port)
            except (OSError, TimeoutError) as exc:
                last = exc
                continue
            if self.done:
                conn.close()
                return
            self.client.server.prefer.worked(self.upstream, host)
            self._send(conn, reused=False)
            return
        if isinstance(last, OSError) and (
            isinstance(last, ConnectionRefusedError) or last.errno in REFUSED_ERRNOS
        ):
            self.fail(refused_error(self.upstream))
        else:
            self.fail(connect_error(self.upstream, last))

    def _send(self, conn: UpstreamConnection, reused: bool) -> None:
        self.conn = conn
        self.reused = reused
        conn.attach(self)
        conn.write(self.head)
        if self.pending:
            conn.write(b"".join(self.pending))
            self.pending.clear()
            self.pending_bytes = 0
            self.client.resume_reading()
            self.progress()
        elif not reused:
            self.progress()  # the backend's time starts now, not when the connect began

    def client_body(self, data: bytes) -> bytes:
        """Take request body bytes; return what belongs to the next request."""
        n = self.body_left
        body, rest = (data, b"") if len(data) <= n else (data[:n], data[n:])
        self.body_left = n - len(body)
        if self.conn is not None:
            self.conn.write(body)
            self.progress()  # an upload that moves is not timed out
        else:
            self.pending.append(body)
            self.pending_bytes += len(body)
            if self.pending_bytes > MAX_PIPELINE_BUFFER_BYTES:
                self.client.pause_reading()  # until the upstream connection is there
        return rest

    # -- response side (called by UpstreamConnection) --------------------------------------

    def response_head(
        self,
        status: int,
        out: list[bytes],  # status line and the fields to relay (see http1.response_fields)
        length: int | None,  # None: chunked or close-delimited upstream
    ) -> None:
        # No field value or reason needs a check for control bytes here: the response pattern
        # admits none, and the parser path refused them before (llhttp, strict, no leniency
        # flags, for values; BAD_VALUE_B for the reason).
        if status in NO_BODY_STATUS:
            if status == 304 and length is not None:
                out.append(b"Content-Length: %d\r\n" % length)
        elif length is not None:
            out.append(b"Content-Length: %d\r\n" % length)
        elif self.http11:
            out.append(b"Transfer-Encoding: chunked\r\n")
            self.chunked = True
        else:
            self.keep_alive = False  # close-delimited for an HTTP/1.0 client
        if not self.keep_alive:
            out.append(b"Connection: close\r\n")
        elif not self.http11:
            out.append(b"Connection: keep-alive\r\n")
        out.append(b"\r\n")
        self.sent_head = True
        self.status = status
        self.resp_head = head = b"".join(out)
        # Read before the write, as every figure is (see response_done).
        self.ttfb = perf_counter() - self.t0
        self.client.write(head)
        # An event stream is never framed by a length; only unframed heads are searched.
        if length is None and is_event_stream(head):
            self.event_stream = True
            self.client.server.metrics.stream_opened(self.route.name)

    def upgraded(self, conn: UpstreamConnection, upgrade: Upgrade, rest: bytes) -> None:
        """The backend answered the WebSocket handshake with 101: check it, relay it, and
        from now on relay bytes both ways (devrouter.wsrelay)."""
        assert self.ws_key is not None
        head = relay_upgrade(upgrade, self.ws_key)
        if isinstance(head, str):
            self.conn = None
            conn.detach()
            conn.abort()
            self.fail(
                BadGateway(
                    f"the backend on port {self.upstream.port} answered the WebSocket handshake "
                    f"wrongly ({head})"
                )
            )
            return
        client = self.client
        self.sent_head = True
        self.status = 101
        self.resp_head = head
        self.ttfb = perf_counter() - self.t0
        client.write(self.resp_head)
        client.uncork()  # the 101 goes out before any relayed byte
        limit = self.route.max_websocket_message_bytes
        relay = self.relay = Relay(client, conn, limit, client.loop, self._relay_ended)
        client.relay = conn.relay = relay
        if client.buf:  # frames the client sent right after its handshake
            early = bytes(client.buf)
            client.buf.clear()
            relay.from_client(early)
        if rest:
            relay.from_backend(rest)

    def _relay_ended(self, relay: Relay) -> None:
        self.done = True
        self.length = relay.bytes_up
        self.bytes_out = relay.bytes_down
        self.record(None)
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.exchange = None
        self.client.exchange = None
        self.client.closing = True

    def response_body(self, data: bytes) -> None:
        self.bytes_out += len(data)
        if self.chunked:
            self.client.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.client.write(data)

    def response_done(self, upstream_reusable: bool) -> None:
        if self.done:
            return
        self.done = True
        # The end is read before the last bytes are handed over: read after, it can come
        # later than the client's own reading of them (on the other core), and the router's
        # figures must never exceed the client's.
        ended = perf_counter()
        if self.chunked:
            self.client.write(b"0\r\n\r\n")
        self.client.uncork()  # the client has its response before the bookkeeping starts
        self.record(None, ended)
        conn = self.conn
        self.conn = None
        if conn is not None:
            conn.detach()
            if upstream_reusable and not self.body_left:
                self.client.server.pool.put(conn)
            else:
                conn.close()
        self.client.finished(self.keep_alive and not self.body_left)

    def upstream_lost(self, got_bytes: bool) -> None:
        """The upstream connection closed before the response was complete."""
        if self.done:
            return
        self.conn = None
        if (
            not got_bytes
            and self.reused
            and not self.retried
            and self.method in IDEMPOTENT
            and not self.length
            and not self.sent_head
        ):
            # A pooled connection the backend had closed: RFC 9112 §9.3.1 allows one retry.
            self.retried = True
            self._connect_task = self.client.loop.create_task(
                self._connect(self.client.server.prefer.order(self.upstream))
            )
            return
        if self.sent_head:
            self.record("reset")
            log.warning(
                "%s %s%s: the backend on port %d failed mid-response; aborting the client "
                "connection",
                self.method.decode(),
                self.host.decode("latin-1"),
                self.head.split(b" ", 2)[1].decode("latin-1"),
                self.upstream.port,
            )
            self.done = True
            self.client.exchange = None
            self.client.abort()
            return
        self.fail(disconnected_error(self.upstream))

    def upstream_invalid(self, exc: Exception) -> None:
        if self.sent_head:
            self.upstream_lost(True)
            return
        self.fail(invalid_response_error(self.upstream, exc))

    # -- flow control and failure ----------------------------------------------------------

    def pause_upstream(self) -> None:
        if self.conn is not None:
            self.conn.pause_reading()

    def resume_upstream(self) -> None:
        if self.conn is not None:
            self.conn.resume_reading()

    def client_gone(self) -> None:
        self.done = True
        self.record(None)
        if self._connect_task is not None:
            self._connect_task.cancel()
        if self.conn is not None:
            self.conn.detach()
            self.conn.abort()
            self.conn = None

    def record(self, error: str | None, ended: float | None = None) -> None:
        """Count this exchange in the route's metrics, once; `ended` is the perf_counter()
        reading of its end, now when not given."""
        if self.recorded:
            return
        self.recorded = True
        self.client.server.metrics.finish_later(
            (
                self.started,
                self.method,
                self.host,
                self.target,
                self.route.name,
                self.upstream.port,
                self.status,
                self.ttfb if self.sent_head else None,  # the backend's head, not a page's
                (perf_counter() if ended is None else ended) - self.t0,
                self.length,
                self.bytes_out,
                error,
                self.ws_key is not None,
                self.head,
                self.resp_head,
                self.event_stream,
                self.route.timeout_s,
            )
        )

    def progress(self) -> None:
        """The backend's timeout counts from now (the request, or more of its body, went)."""
        self.deadline = self.client.loop.time() + self.route.timeout_s

    def fail(self, err: ProxyError) -> None:
        """Answer with an error page (before the response head) and end the exchange."""
        if self.done:
            return
        self.done = True
        control = self.client.server.control
        if control is not None and (svc := control.service(self.route.name)):
            err = explain_failure(err, svc, control.output(self.route.name))
        if not self.sent_head:
            self.status = err.status
        self.record(err.kind)
        if self.conn is not None:
            self.conn.detach()
            self.conn.abort()
            self.conn = None
        log.warning(
            "%s %s%s: %d %s",
            self.method.decode(),
            self.host.decode("latin-1"),
            self.head.split(b" ", 2)[1].decode("latin-1"),
            err.status,
            err.detail,
        )
        if self.sent_head:
            self.client.exchange = None
            self.client.abort()
            return
        content_type, text = render_error(err, accept_of(self.head).decode("latin-1"))
        reuse = self.keep_alive and not self.body_left
        self.client.write(
            error_response(err.status, error_headers(err), content_type, text.encode(), not reuse)
        )
        self.client.finished(reuse)


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one backend address; carries one exchange at a time."""

    __slots__ = (
        "_body_left",
        "_chunked",
        "_headers",
        "_idle_timer",
        "_length",
        "_partial",
        "_paused",
        "_reason",
        "_reusable",
        "_status",
        "closed",
        "exchange",
        "got_bytes",
        "idle_since",
        "key",
        "memo",
        "parser",
        "pool",
        "relay",
        "transport",
    )

    def __init__(self, pool: Pool, key: tuple[str, int]) -> None:
        self.pool = pool
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.exchange: Exchange | None = None
        self.parser: Any = None
        self.closed = False
        self.got_bytes = False
        self._headers: list[tuple[bytes, bytes]] = []
        self._reason = b""
        self._chunked = False
        self._length: int | None = None
        self._status = 0
        # the pattern path (parser None): body bytes still to come
        self._body_left = -1  # -1: waiting for the head
        self._partial = b""  # the start of a WebSocket handshake's answer
        self.relay: Relay | None = None  # after a 101: the WebSocket relay owns the bytes
        self._reusable = False
        self._idle_timer: asyncio.TimerHandle | None = None
        self.idle_since = 0.0
        self.memo: ResponsePlan | None = None  # the last head the pattern path checked
        self._paused = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def usable(self) -> bool:
        return not self.closed and self.transport is not None and not self.transport.is_closing()

    def attach(self, exchange: Exchange) -> None:
        # Framing state (_status, _length, _chunked) is set by whichever path reads the
        # response head, before anything is relayed; only what is read earlier is reset here.
        self.exchange = exchange
        self.got_bytes = False
        self._body_left = -1
        self._partial = b""
        self.parser = None  # made only for a response the pattern path gives up on

    def detach(self) -> None:
        self.exchange = None
        if self._paused:
            self.resume_reading()

    def write(self, data: bytes) -> None:
        if self.transport is not None:
            self.transport.write(data)

    # httptools callbacks
    def on_status(self, status: bytes) -> None:
        self._reason += status

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        status = self._status = self.parser.get_status_code()
        if not 100 <= status <= 999 or status == 101:  # 101: we never forward Upgrade
            ex.conn = None
            self.detach()
            self.abort()
            ex.upstream_invalid(ValueError(f"status {status}"))
            return
        if status < 200:  # 1xx interim responses are not relayed
            return
        if BAD_VALUE_B.search(self._reason):
            ex.fail(
                BadGateway(
                    f"the backend on port {ex.upstream.port} sent a control character in its "
                    "status line"
                )
            )
            return
        out, length, chunked = response_fields(
            self._headers, [b"HTTP/1.1 %d " % status, self._reason, b"\r\n"]
        )  # llhttp has checked the framing and decides keep-alive itself
        self._chunked = chunked
        self._length = None if length < 0 else length
        ex.response_head(status, out, None if chunked else self._length)

    def on_body(self, body: bytes) -> None:
        ex = self.exchange
        if ex is not None and not ex.done:
            ex.response_body(body)

    def on_message_complete(self) -> None:
        ex = self.exchange
        if ex is None:
            return
        if self.parser.get_status_code() < 200:
            self._headers = []
            self._reason = b""
            return
        ex.response_done(self.parser.should_keep_alive())

    # The pattern path: a response head that arrives whole in one read, matches the strict
    # grammar, and is framed by one valid Content-Length (or is a 204/304) is relayed without
    # a parser (devrouter.http1.response_head), and its body is counted down. Anything else
    # (a split head, chunked, close-delimited, 1xx, duplicate or odd lengths, bare LF, not
    # HTTP) starts an llhttp parser on the same bytes, so nothing here accepts what llhttp
    # would refuse.

    def _head(self, ex: Exchange, data: bytes) -> None:
        if self._partial:
            data = self._partial + data
            self._partial = b""
        end = data.find(b"\r\n\r\n", 0, MAX_HEAD_BYTES)
        if end < 0:
            if ex.ws_key is not None and len(data) < MAX_HEAD_BYTES and maybe_http(data):
                self._partial = data  # a 101 must not go to llhttp, which would read on
                return
            self._parse(data)  # a head split over reads (or not HTTP at all) is llhttp's
            return
        memo = self.memo
        if memo is None or len(memo.head) != end + 4 or not data.startswith(memo.head):
            plan = plan_response(data, end, ex.ws_key is not None)
            if plan is None:
                self._parse(data)
                return  # the parser's from here
            if isinstance(plan, Upgrade):  # a 101 to the handshake
                ex.upgraded(self, plan, data[end + 4 :])
                return  # the WebSocket relay's from here
            memo = plan
            self.memo = memo if end < MAX_PLAN_HEAD_BYTES else None
        _, status, out, length, reusable = memo
        body_len = 0 if status in NO_BODY_STATUS else length
        self._status = status
        self._length = length if length >= 0 else None
        self._chunked = False
        self._reusable = reusable
        self._body_left = body_len
        ex.response_head(status, [out], self._length)
        if ex.done:
            return
        if len(data) > end + 4 or not body_len:
            self._body(ex, data[end + 4 :])

    def _body(self, ex: Exchange, data: bytes) -> None:
        left = self._body_left
        if len(data) > left:  # bytes past the body: this backend is not to be trusted again
            self._reusable = False
            data = data[:left]
        if data:
            self._body_left = left = left - len(data)
            ex.response_body(data)
        if not left:
            self._body_left = -1
            ex.response_done(self._reusable)

    def _parse(self, data: bytes) -> None:
        """Hand this response to llhttp, from its first byte."""
        self._headers = []
        self._reason = b""
        self.parser = httptools.HttpResponseParser(self)
        self.parser.feed_data(data)

    # asyncio.Protocol
    def data_received(self, data: bytes) -> None:
        if self.relay is not None:
            self.relay.from_backend(data)
            return
        self.got_bytes = True
        ex = self.exchange
        if ex is None:
            self.close()  # bytes from an idle backend: it is not speaking HTTP to us
            return
        client = ex.client
        client.cork()
        try:
            if self.parser is not None:
                self.parser.feed_data(data)
            elif self._body_left > 0:
                self._body(ex, data)
            else:
                self._head(ex, data)
        except httptools.HttpParserError as exc:
            ex = self.exchange
            self.detach()
            self.abort()
            if ex is not None:
                ex.conn = None
                ex.upstream_invalid(exc)
        except Exception:  # a bug here must cost one exchange, not the router
            log.exception("internal error relaying a response; closing both connections")
            self.abort()
            client.abort()
        finally:
            client.uncork()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._stop_timer()
        if self.relay is not None:
            self.relay.backend_gone()
            return
        self.pool.discard(self)
        ex = self.exchange
        self.exchange = None
        if ex is None or ex.done:
            return
        # A close-delimited body ends here; anything else is a failure.
        status = self.parser.get_status_code() if self.parser is not None else self._status
        if (
            ex.sent_head
            and not self._chunked
            and self._length is None
            and status not in NO_BODY_STATUS
        ):
            ex.response_done(False)
            return
        ex.upstream_lost(self.got_bytes)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.pause_reading()

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading()

    def pause_reading(self) -> None:
        if self.transport is not None and not self._paused:
            self._paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.transport is not None and self._paused:
            self._paused = False
            self.transport.resume_reading()

    def start_idle_timer(self) -> None:
        """In the pool from now; closed after POOL_KEEPALIVE_S unused (one lazy timer)."""
        loop = self.pool.loop
        self.idle_since = loop.time()
        if self._idle_timer is None:
            self._idle_timer = loop.call_later(POOL_KEEPALIVE_S, self._idle_check)

    def _idle_check(self) -> None:
        self._idle_timer = None
        if self.closed:
            return
        loop = self.pool.loop
        left = POOL_KEEPALIVE_S
        if self.exchange is None:
            left = self.idle_since + POOL_KEEPALIVE_S - loop.time()
            if left <= 0:
                self.pool.discard(self)
                self.close()
                return
        self._idle_timer = loop.call_later(left, self._idle_check)

    def _stop_timer(self) -> None:
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None

    def close(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.close()

    def abort(self) -> None:
        self.closed = True
        self._stop_timer()
        if self.transport is not None:
            self.transport.abort()
