"""One benchmark connection: a lean asyncio protocol that writes one pre-built request and
parses the response by hand (status line, then a body framed by Content-Length, chunked
encoding or the end of the connection), reporting to its Driver."""

from __future__ import annotations

import asyncio
from typing import cast

from .driver import Driver
from .errors import is_reset

#: A response head larger than this (bytes) is an `other` error.
MAX_HEAD_BYTES = 64 * 1024

_HEAD, _LENGTH, _CHUNKED, _TO_EOF = 0, 1, 2, 3


class Connection(asyncio.Protocol):
    """One TCP connection: writes the pre-built request and parses responses by hand.

    The parser takes what a benchmark needs and no more: the status code, the framing
    (RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked; Content-Length; else
    until close) and whether the server will close the connection.
    """

    __slots__ = (
        "buf",
        "busy_since",
        "clock",
        "closing",
        "driver",
        "due",
        "nbytes",
        "remaining",
        "request",
        "reusable",
        "same",
        "state",
        "status",
        "transport",
    )

    def __init__(self, driver: Driver, due: float, now: float) -> None:
        self.driver = driver
        self.clock = driver.clock
        self.request = driver.plan.request
        self.due = due
        self.busy_since: float | None = now
        self.reusable = False
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.status = 0
        self.nbytes = 0
        self.closing = False
        self.same = b""  # the last response, when it came whole in one read

    # driver side

    def send(self, due: float, now: float) -> None:
        self.due = due
        self.busy_since = now
        self.nbytes = 0
        assert self.transport is not None
        self.transport.write(self.request)

    def abort(self) -> None:
        self.busy_since = None
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    # transport side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        if self.busy_since is None:  # aborted while connecting
            t.abort()
            return
        self.transport = t
        t.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        if self.busy_since is None:
            return
        if self.state == _TO_EOF:
            self._complete()
            return
        self.busy_since = None
        self.driver.failed(self, "reset" if exc is None or is_reset(exc) else "other")

    def data_received(self, data: bytes) -> None:
        if self.busy_since is None:
            return
        self.nbytes += len(data)
        if self.state == _HEAD and not self.buf:
            if data == self.same:  # byte for byte the last response: same status and framing
                self._complete()
                return
            # The common case: a whole small response in one read.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                if not self._head(data[:end]):
                    return
                if self.state == _LENGTH and len(data) - end - 4 == self.remaining:
                    self.same = data
                    self._complete()
                    return
                self.buf += memoryview(data)[end + 4 :]
                self._body()
                return
        self.buf += data
        if self.state == _HEAD:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self._fail("other")
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            if not self._head(head):
                return
        self._body()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it meant

    def _head(self, head: bytes) -> bool:
        """Read the status line and framing headers; False if the response is bad."""
        self.same = b""
        try:
            if not head.startswith(b"HTTP/1."):
                raise ValueError("not an HTTP/1.x response")
            status = int(head[9:12])
            lower = head.lower()
            if 100 <= status < 200:  # an interim response; the real one follows
                self.state = _HEAD
                return True
            self.status = status
            self.closing = b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0")
            if self.driver.plan.head or status in (204, 304):
                self.state, self.remaining = _LENGTH, 0
            elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
                self.state = _CHUNKED
            else:
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    end = lower.find(b"\r\n", at + 2)
                    value = lower[at + 17 : end if end >= 0 else len(lower)]
                    self.state, self.remaining = _LENGTH, int(value)
                else:
                    self.state = _TO_EOF
                    self.closing = True
            return True
        except ValueError:
            self._fail("other")
            return False

    def _body(self) -> None:
        buf = self.buf
        while self.busy_since is not None:
            state = self.state
            if state == _HEAD:
                if not buf:
                    return
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                if not self._head(head):
                    return
            elif state == _LENGTH:
                if len(buf) >= self.remaining:
                    del buf[: self.remaining]
                    self._complete()
                else:
                    self.remaining -= len(buf)
                    buf.clear()
                return
            elif state == _CHUNKED:
                if self.remaining:  # bytes of chunk data plus its CRLF still to skip
                    if len(buf) < self.remaining:
                        self.remaining -= len(buf)
                        buf.clear()
                        return
                    del buf[: self.remaining]
                    self.remaining = 0
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                except ValueError:
                    self._fail("other")
                    return
                if size == 0:  # the last chunk, then trailer lines and an empty line
                    if buf[end + 2 : end + 4] == b"\r\n":
                        stop = end + 4
                    else:
                        stop = buf.find(b"\r\n\r\n", end + 2) + 4
                        if stop < 4:
                            return
                    del buf[:stop]
                    self._complete()
                    return
                del buf[: end + 2]
                self.remaining = size + 2
            else:  # _TO_EOF
                buf.clear()
                return

    def _complete(self) -> None:
        now = self.clock()
        self.busy_since = None
        self.state = _HEAD
        self.buf.clear()
        self.reusable = self.transport is not None and not self.closing
        if not self.reusable and self.transport is not None:
            self.transport.close()
            self.transport = None
        self.driver.done(self, now, self.status, self.nbytes)

    def _fail(self, kind: str) -> None:
        self.abort()
        self.driver.failed(self, kind)
