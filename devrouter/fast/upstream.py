"""A keep-alive connection to one backend address, carrying one exchange at a time: the
pattern path for simple response heads, llhttp for the rest."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any, cast

import httptools

from ..core.errors import BadGateway
from ..http1.grammar import BAD_VALUE_B, maybe_http
from ..http1.policy import MAX_HEAD_BYTES, NO_BODY_STATUS
from ..http1.request_head import (
    MAX_PLAN_HEAD_BYTES,
)
from ..http1.response_head import (
    ResponsePlan,
    Upgrade,
    plan_response,
    response_fields,
)
from ..server.upstream import (
    POOL_KEEPALIVE_S,
)
from .wsrelay import Relay

if TYPE_CHECKING:
    from .exchange import Exchange
    from .pool import Pool

log = logging.getLogger("devrouter.proxy")


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
        if memo is None or len(seen := memo.head) != end + 4 or not data.startswith(seen):
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
