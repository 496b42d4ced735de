"""One HTTP/2 stream relayed through a lane (devrouter.http2.bridge): the request it writes
into an HTTP/1 engine, and the response it reads back (devrouter.http2.response), with the
response bytes that wait for the client's window. Its connection (devrouter.http2.connection)
frames, flow-controls and resets it.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import h2.errors

from .request import Http1Request
from .response import BadResponse, ResponseReader

if TYPE_CHECKING:
    from .bridge import Lane
    from .connection import Http2Connection

log = logging.getLogger("devrouter.proxy")


class Stream:
    """One stream relayed through a lane: its request in, its response out."""

    __slots__ = (
        "conn",
        "ended",
        "held",
        "id",
        "key",
        "lane",
        "pending",
        "queued",
        "reader",
        "request",
        "request_done",
        "response_done",
        "started",
        "tail",
        "trailers",
    )

    def __init__(self, conn: Http2Connection, stream_id: int, request: Http1Request) -> None:
        self.conn = conn
        self.id = stream_id
        self.request = request
        self.key: bytes | None = None  # the gate's key (the authority) while it counts
        self.lane: Lane | None = None
        self.queued = False  # waiting at the gate (devrouter.http2.server)
        self.reader = ResponseReader(self, request.method == b"HEAD", request.websocket)
        self.pending = bytearray()  # response body bytes waiting for the client's window
        self.trailers: list[tuple[bytes, bytes]] | None = None  # set: the response is whole
        self.request_done = not request.has_body
        self.response_done = False
        self.ended = False  # END_STREAM (or a reset) sent
        self.started = False
        self.held = 0  # request bytes received and not acknowledged (the engine is paused)
        self.tail = b"0\r\n\r\n"  # a chunked request's end (with trailers, when sent)

    @property
    def unsent(self) -> int:
        return len(self.pending)

    # -- from the lane: the engine's response bytes ------------------------------------

    def response_bytes(self, data: bytes) -> None:
        try:
            self.reader.feed(data)
        except BadResponse as exc:
            log.warning("HTTP/2 stream %d: the response could not be read: %s", self.id, exc)
            self.conn.reset(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

    def response_closed(self) -> None:
        """The engine closed its side: the response ends here, whole or cut short."""
        if self.ended:
            return
        if not self.reader.closed():
            self.conn.reset(self, h2.errors.ErrorCodes.INTERNAL_ERROR)

    # -- ResponseSink --------------------------------------------------------------------

    def head(self, status: int, fields: list[tuple[bytes, bytes]]) -> None:
        self.conn.send_headers(self, fields)
        if status == 101 or status >= 200:
            # answered: the backend has taken the request, and a body that streams on (an
            # event stream, NDJSON, a long poll) must not hold a slot from other clients
            self.conn.release_gate(self)

    def body(self, data: bytes) -> None:
        self.pending += data
        self.conn.flush_stream(self)

    def tunnel(self, data: bytes) -> None:
        self.body(data)

    def end(self, trailers: list[tuple[bytes, bytes]]) -> None:
        self.trailers = trailers
        self.response_done = True
        self.conn.flush_stream(self)
