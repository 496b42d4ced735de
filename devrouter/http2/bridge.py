"""The bridge from an HTTP/2 stream into the HTTP/1 engines: an in-process transport.

A `Lane` is the transport an HTTP/1 engine's protocol (the fast path's ClientConnection, or
aiohttp's handler after a hand-off) is connected to instead of a socket. The HTTP/2
connection writes one stream's request into it as HTTP/1.1 bytes; what the engine writes
back is read as that stream's response (devrouter.http2.response). A lane carries one
request at a time and is kept for the next stream of the same connection, as a keep-alive
HTTP/1.1 connection would be, so the engine's per-connection state (its pooled upstream
connection, its memorised head) is reused.

Flow control crosses the bridge both ways with the engine's own calls: when the stream
cannot send (the client's window is shut) the engine is paused with `pause_writing()`, and
when the engine pauses reading (its backend is slow to take an upload) the connection stops
acknowledging the stream's DATA, so the client's window closes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .connection import Http2Connection, Stream

log = logging.getLogger("devrouter.proxy")

#: Response bytes a stream holds for a client that is not reading before the engine writing
#: them is paused, and the level under which it is resumed, in bytes.
HIGH_WATER_BYTES = 256 * 1024
LOW_WATER_BYTES = 64 * 1024


class Lane(asyncio.Transport):
    """An in-process transport between an HTTP/2 connection and an HTTP/1 engine."""

    def __init__(self, conn: Http2Connection, protocol: asyncio.BaseProtocol) -> None:
        super().__init__()
        self.conn = conn
        self.protocol: Any = protocol
        self.stream: Stream | None = None
        self.closing = False
        self.reading_paused = False
        self.writing_paused = False  # the engine was told to pause
        self.inbox: list[bytes] = []  # request bytes held while the engine pauses reading

    def start(self) -> None:
        self.protocol.connection_made(self)

    # -- from the HTTP/2 side ----------------------------------------------------------

    def deliver(self, data: bytes, acked: int = 0, stream_id: int = 0) -> None:
        """Request bytes for the engine; `acked` flow-controlled bytes of `stream_id` are
        acknowledged once the engine takes them."""
        if self.closing:
            if acked:
                self.conn.acknowledge(acked, stream_id)
            return
        if self.reading_paused or self.inbox:
            self.inbox.append(data)
            if acked:
                self.conn.hold(acked, stream_id)
            return
        self.protocol.data_received(data)
        if acked:
            self.conn.acknowledge(acked, stream_id)

    def drop(self) -> None:
        """The stream was reset or the connection is going: the engine's client is gone."""
        if self.closing:
            return
        self.closing = True
        self.stream = None
        self.conn.lane_gone(self)
        self.conn.loop.call_soon(self.protocol.connection_lost, None)

    def backlog(self, size: int) -> None:
        """The stream now holds `size` unsent response bytes: pause or resume the engine."""
        if not self.writing_paused and size > HIGH_WATER_BYTES:
            self.writing_paused = True
            self.protocol.pause_writing()
        elif self.writing_paused and size <= LOW_WATER_BYTES:
            self.writing_paused = False
            self.protocol.resume_writing()

    # -- asyncio.Transport, as the engine sees it --------------------------------------

    def write(self, data: bytes | bytearray | memoryview) -> None:
        stream = self.stream
        if stream is None or self.closing:
            return  # nothing is asked of this lane (an idle engine's goodbye): no one to tell
        stream.response_bytes(bytes(data))

    def writelines(self, list_of_data: Any) -> None:
        self.write(b"".join(list_of_data))

    def write_eof(self) -> None:
        self.close()

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        if self.closing:
            return
        self.closing = True
        stream, self.stream = self.stream, None
        if stream is not None:
            stream.response_closed()
        self.conn.lane_gone(self)
        self.conn.loop.call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def is_closing(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if not self.reading_paused:
            return
        self.reading_paused = False
        while self.inbox and not self.reading_paused and not self.closing:
            self.protocol.data_received(self.inbox.pop(0))
        if not self.inbox:
            stream = self.stream
            if stream is not None:
                self.conn.release_held(stream.id)

    def is_reading(self) -> bool:
        return not self.reading_paused

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self.protocol = protocol

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self.protocol  # type: ignore[no-any-return]

    def get_write_buffer_size(self) -> int:
        stream = self.stream
        return stream.unsent if stream is not None else 0

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return (LOW_WATER_BYTES, HIGH_WATER_BYTES)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass  # the stream's limits are the router's (HIGH_WATER_BYTES)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "socket":
            return default  # the socket is the HTTP/2 connection's, not the engine's to tune
        if name == "devrouter.protocol":
            return "h2"
        return self.conn.extra(name, default)
