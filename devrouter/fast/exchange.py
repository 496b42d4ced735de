"""One request/response pair on the fast path: the request goes to a pooled (or new) upstream
connection, the response comes back through it, and the exchange is counted."""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from time import perf_counter
from typing import TYPE_CHECKING

from ..core.errors import BadGateway, ProxyError
from ..core.model import Upstream
from ..http1.answers import accept_of, error_response
from ..http1.policy import IDEMPOTENT, NO_BODY_STATUS
from ..http1.request_head import (
    RequestPlan,
)
from ..http1.response_head import (
    Upgrade,
    relay_upgrade,
)
from ..observe.metrics import HTTP1, is_event_stream
from ..server.upstream import (
    CONNECT_TIMEOUT_S,
    REFUSED_ERRNOS,
    connect_error,
    disconnected_error,
    invalid_response_error,
    refused_error,
)
from ..web.pages import error_headers, explain_failure, render_error
from .upstream import UpstreamConnection
from .wsrelay import Relay

if TYPE_CHECKING:
    from .client import ClientConnection

log = logging.getLogger("devrouter.proxy")

#: Pipelined bytes buffered while a request is in flight before the client is paused.
MAX_PIPELINE_BUFFER_BYTES = 256 * 1024


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
        self.t0 = 0.0  # perf_counter() when the head was read (see devrouter.observe.metrics)
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
        from now on relay bytes both ways (devrouter.fast.wsrelay)."""
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
                self.client.protocol,
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
        content_type, text = render_error(
            err,
            accept_of(self.head).decode("latin-1"),
            port=int(self.client.local_port),
            scheme="http" if self.client.protocol == HTTP1 else "https",
        )
        reuse = self.keep_alive and not self.body_left
        self.client.write(
            error_response(err.status, error_headers(err), content_type, text.encode(), not reuse)
        )
        self.client.finished(reuse)
