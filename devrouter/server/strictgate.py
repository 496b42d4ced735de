"""A strict HTTP/1.1 gate in front of aiohttp's pure-Python parser.

aiohttp normally parses requests with llhttp (its C extension). Where that extension is
missing, it falls back to a pure-Python parser that is laxer and, for some hostile inputs,
wrong (security catalog B10-B13: a 2^70 Content-Length, an overflowing chunk size, `5;`
chunk extensions, lowercase methods). The router warns about the fallback at start-up and,
rather than trust that parser with hostile input, puts this gate in front of it: every byte
a client sends is first run through llhttp (httptools, strict, no leniency flags), and the
first thing llhttp refuses ends the connection with a 400 before the Python parser sees it.

After an Upgrade (a WebSocket), the bytes are no longer HTTP and pass through unchecked.

Before llhttp, the gate asks `devrouter.http1.wire.early_refusal` about the connection's first
bytes (an HTTP/2 preface, a TLS handshake, bare CRs, HTTP/0.9), as the fast path does where
it hands a connection over, so every engine refuses them the same way: `Refusing` logs one
line, answers, and closes. `EarlyGatedServer` is the gate with that check only, for the
aiohttp engine on its C parser.
"""

from __future__ import annotations

import asyncio
import logging
from typing import cast

import httptools

from ..http1.wire import Refusal, early_refusal, settled
from .limits import REFUSED_LINGER_S, LimitedServer, Refused

log = logging.getLogger("devrouter")

_BODY = b"devrouter: 400 Bad request: the request is not well-formed HTTP/1.1\n"
_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class Refusing(Refused):
    """The protocol for a connection `early_refusal` refused: one log line, the answer (or
    none), a half-close, and what the client still sends discarded until it closes (closing
    with unread bytes would reset the connection before the client reads the answer)."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.response)
        self.refusal = refusal

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        log.info("refused a connection from %s: %s", peer[0] if peer else "?", self.refusal.log)
        # Refused.connection_made's, without its isinstance check: uvloop's transports are
        # not subclasses of asyncio.Transport.
        self.transport = t = cast(asyncio.Transport, transport)
        t.write(self.response)
        if t.can_write_eof():
            t.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, t.close)


class StrictGate(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol, *, llhttp: bool = True) -> None:
        self.inner = inner
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.passthrough = not llhttp  # without llhttp: the early refusals only
        self.first_bytes: bytearray | None = bytearray()  # until wire.settled says enough
        self.refused: Refusing | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self.refused is not None:
            return
        if self.first_bytes is not None and self._refuse_early(data):
            return
        if not self.passthrough:
            try:
                self.parser.feed_data(data)
            except httptools.HttpParserUpgrade:
                self.passthrough = True
            except httptools.HttpParserError:
                if self.transport is not None:
                    self.transport.write(_REFUSAL)
                    self.transport.close()
                return
        self.inner.data_received(data)

    def _refuse_early(self, data: bytes) -> bool:
        """Ask wire.early_refusal about the connection's first bytes; True if refused. The
        inner protocol is not let go before the connection is lost (aiohttp's handler closes
        the transport when it is), so `Refusing` answers through this gate."""
        first = self.first_bytes
        assert first is not None
        first += data
        refusal = early_refusal(first)
        if refusal is None:
            if settled(first):
                self.first_bytes = None
            return False
        self.first_bytes = None
        if self.transport is not None:
            self.refused = Refusing(refusal)
            self.refused.connection_made(self.transport)
        return True

    def eof_received(self) -> bool | None:
        if self.refused is not None:
            return self.refused.eof_received()
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.refused is not None:
            self.refused.connection_lost(exc)
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GatedServer(LimitedServer):
    """aiohttp's low-level server with every connection behind a StrictGate."""

    def make_protocol(self) -> asyncio.Protocol:
        return StrictGate(super().make_protocol())


class EarlyGatedServer(LimitedServer):
    """aiohttp's low-level server (with its C parser, which needs no llhttp in front) with
    the early refusals only: the aiohttp engine's answer to an HTTP/2 preface, TLS, bare CRs
    or HTTP/0.9 is then the fast path's."""

    def make_protocol(self) -> asyncio.Protocol:
        return StrictGate(super().make_protocol(), llhttp=False)
