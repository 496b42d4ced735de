"""A strict HTTP/1.1 gate in front of aiohttp's pure-Python parser.

aiohttp normally parses requests with llhttp (its C extension). Where that extension is
missing, it falls back to a pure-Python parser that is laxer and, for some hostile inputs,
wrong (security catalog B10-B13: a 2^70 Content-Length, an overflowing chunk size, `5;`
chunk extensions, lowercase methods). The router warns about the fallback at start-up and,
rather than trust that parser with hostile input, puts this gate in front of it: every byte
a client sends is first run through llhttp (httptools, strict, no leniency flags), and the
first thing llhttp refuses ends the connection with a 400 before the Python parser sees it.

After an Upgrade (a WebSocket), the bytes are no longer HTTP and pass through unchecked.
"""

from __future__ import annotations

import asyncio
from typing import cast

import httptools

from .limits import LimitedServer

_BODY = b"devrouter: 400 Bad request: the request is not well-formed HTTP/1.1\n"
_REFUSAL = (
    b"HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(_BODY), _BODY)
)


class StrictGate(asyncio.Protocol):
    def __init__(self, inner: asyncio.Protocol) -> None:
        self.inner = inner
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.passthrough = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
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

    def eof_received(self) -> bool | None:
        return self.inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self.inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()


class GatedServer(LimitedServer):
    """aiohttp's low-level server with every connection behind a StrictGate."""

    def make_protocol(self) -> asyncio.Protocol:
        return StrictGate(super().make_protocol())
