"""One client connection on the fast path: reads request heads, starts exchanges, hands a
connection to the aiohttp engine when a request needs it."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

from ..core.routes import AmbiguousPath, select_upstream
from ..http1.policy import MAX_HEAD_BYTES
from ..http1.request_head import (
    MAX_PLAN_HEAD_BYTES,
    Forwarder,
    HandOff,
    RequestPlan,
    plan_request,
    replan,
)
from ..http1.wire import early_refusal
from ..observe.metrics import HTTP1, protocol_of
from ..server.strictgate import Refusing
from ..server.upstream import (
    reset_connection,
    timeout_error,
)
from .exchange import MAX_PIPELINE_BUFFER_BYTES, Exchange
from .wsrelay import Relay

if TYPE_CHECKING:
    from .server import FastServer

log = logging.getLogger("devrouter.proxy")


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
        "protocol",
        "reading_paused",
        "relay",
        "server",
        "transport",
    )

    def __init__(self, server: FastServer) -> None:
        self.server = server
        self.loop = server.loop
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
        self.protocol = HTTP1  # how the client speaks, for the request inspector

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("sockname")
        if peer:
            self.peer = str(peer[0]).encode()
        if sock:
            self.local_port = str(sock[1]).encode()
        # a TLS connection (the listener's, or an HTTP/2 stream's) says so with its context
        self.protocol = protocol_of(transport.get_extra_info)
        proto = b"http" if self.protocol == HTTP1 else b"https"
        self.forwarder = Forwarder(self.peer, self.local_port, proto)
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
