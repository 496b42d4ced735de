"""The HTTP/1.1 response the HTTP/1 engines write, read as HTTP/2 response parts, without I/O.

`ResponseReader` takes the bytes an HTTP/1 engine writes for one request (llhttp frames
them, through httptools) and calls its sink with the HTTP/2 parts: the head (interim 1xx
heads too), body bytes, the end with any trailers, or, after a 101, the tunnel's bytes.
`h2_fields` drops what HTTP/2 forbids (connection-specific fields, RFC 9113, 8.2.2) and
lowercases names (8.2.1).
"""

from __future__ import annotations

from typing import Protocol

import httptools

from .request import CONNECTION_FIELDS

#: Response fields that do not cross into HTTP/2: the connection-specific ones, and those
#: of a WebSocket handshake an extended CONNECT answers without (RFC 8441, 5).
_DROPPED = CONNECTION_FIELDS | {b"te"}
_DROPPED_WS = _DROPPED | {b"sec-websocket-accept"}


def h2_status(status: int, websocket: bool) -> bytes:
    """The `:status` of an HTTP/1.1 status. For an extended CONNECT a 2xx means the tunnel is
    open (RFC 8441, 5), so a backend's 101 is a 200, and its 2xx without a 101 (a page, not
    a WebSocket) is a 502: the client must not take it for a tunnel."""
    if websocket and status == 101:
        return b"200"
    if websocket and 200 <= status < 300:
        return b"502"
    return b"%d" % status


def h2_fields(
    status: int, raw: list[tuple[bytes, bytes]], websocket: bool = False
) -> list[tuple[bytes, bytes]]:
    """The HTTP/2 field list of an HTTP/1.1 response head (`:status` first)."""
    dropped = _DROPPED_WS if websocket else _DROPPED
    out = [(b":status", h2_status(status, websocket))]
    for name, value in raw:
        lower = name.lower()
        if lower not in dropped:
            out.append((lower, value))
    return out


class ResponseSink(Protocol):
    def head(self, status: int, fields: list[tuple[bytes, bytes]]) -> None: ...
    def body(self, data: bytes) -> None: ...
    def end(self, trailers: list[tuple[bytes, bytes]]) -> None: ...
    def tunnel(self, data: bytes) -> None: ...


class BadResponse(ValueError):
    """The HTTP/1 engine wrote something that is not an HTTP/1.1 response (a bug upstream of
    here, or a backend's bytes relayed raw); the stream is reset."""


class ResponseReader:
    """One request's response, read from the bytes written for it."""

    __slots__ = (
        "_fields",
        "_head_done",
        "_parser",
        "_trailers",
        "done",
        "head_only",
        "sink",
        "status",
        "tunnelling",
        "until_close",
        "websocket",
    )

    def __init__(self, sink: ResponseSink, head_only: bool, websocket: bool) -> None:
        self.sink = sink
        self.head_only = head_only  # a HEAD request: no body follows any head
        self.websocket = websocket  # an extended CONNECT: a 101 opens the tunnel
        self._parser = httptools.HttpResponseParser(self)
        self._fields: list[tuple[bytes, bytes]] = []
        self._trailers: list[tuple[bytes, bytes]] = []
        self._head_done = False
        self.status = 0
        self.done = False
        self.tunnelling = False
        self.until_close = False  # no length, not chunked: the body ends with the connection

    def feed(self, data: bytes) -> None:
        if self.tunnelling:
            self.sink.tunnel(data)
            return
        if self.done:
            return  # bytes after the response (only a HEAD's would be): not this stream's
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as exc:
            offset = exc.args[0]
            if self.status == 101 and self.websocket:
                self.tunnelling = True
                if offset < len(data):
                    self.sink.tunnel(data[offset:])
                return
            raise BadResponse("an upgrade the request did not ask for") from None
        except httptools.HttpParserError as exc:
            raise BadResponse(str(exc)) from None

    def closed(self) -> bool:
        """The writer closed; True when that ended the response well (a body that runs to
        the close, or a tunnel), False when the response was cut short."""
        if self.done:
            return True
        if self.tunnelling or (self._head_done and self.until_close):
            self.done = True
            self.sink.end([])
            return True
        return False

    # -- httptools callbacks -----------------------------------------------------------

    # llhttp reads on past the end of the response in the same buffer (a next response, for
    # a keep-alive parser); none of that is this stream's, so `done` ends every callback.

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self.done:
            (self._trailers if self._head_done else self._fields).append((name, value))

    def on_headers_complete(self) -> None:
        if self.done:
            return
        status = self._parser.get_status_code()
        fields, self._fields = self._fields, []
        if 100 <= status < 200 and status != 101:
            self.sink.head(status, h2_fields(status, fields))  # interim: 103 Early Hints
            return
        self.status = status
        self._head_done = True
        self.sink.head(status, h2_fields(status, fields, self.websocket))
        if status == 101:
            return
        if self.head_only or status in (204, 304):
            self.done = True
            self.sink.end([])
            return
        self.until_close = not any(
            n.lower() in (b"content-length", b"transfer-encoding") for n, _ in fields
        )

    def on_body(self, body: bytes) -> None:
        if not self.done:
            self.sink.body(body)

    def on_message_complete(self) -> None:
        if not self._head_done or self.done or self.status == 101:
            return  # an interim response's end, or a 101's (its tunnel follows)
        self.done = True
        trailers = [(n.lower(), v) for n, v in self._trailers if n.lower() not in _DROPPED]
        self.sink.end(trailers)
