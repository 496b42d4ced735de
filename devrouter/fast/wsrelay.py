"""The fast path's WebSocket relay: after the backend's 101, bytes both ways, unchanged.

Why bytes and not messages: the client's frames reach the backend as it sent them
(fragments, pings, compression it negotiated with the backend, close codes and reasons), and
relaying costs a copy, not a parse and a re-frame per message.

The relay still reads every frame *header* (not the payload), for three rules of the router's:
- a message larger than the route's `max_websocket_message_mib` closes with 1009 (the
  router's memory per WebSocket stays bounded by the transports' flow control anyway);
- a side that vanishes without a close frame becomes a close frame for the other side,
  1011 for a backend and 1001 for a client, never a bare TCP close (a browser would see
  1006); this needs to know where frames begin, so the close frame is not spliced into the
  middle of one;
- a close frame seen both ways ends the relay, with a timeout if the backend never closes
  its TCP connection.
"""

from __future__ import annotations

import asyncio
import os
import struct
from collections.abc import Callable
from typing import Protocol

#: How long to wait for TCP to close after both close frames, or after the router sent its
#: own close frame, in seconds.
CLOSE_TIMEOUT_S = 5.0
_OP_CLOSE = 0x8


def close_frame(code: int, reason: bytes, masked: bool) -> bytes:
    """A close frame; masked when the router sends it as a client (to the backend)."""
    payload = struct.pack("!H", code) + reason[:123]
    if not masked:
        return bytes((0x88, len(payload))) + payload
    mask = os.urandom(4)
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes((0x88, 0x80 | len(payload))) + mask + body


class FrameTracker:
    """Where frames begin in one direction's byte stream, and how big messages grow.

    A frame header split over reads is held back until it is whole, so what has been relayed
    always ends either inside a payload or exactly at a frame boundary."""

    __slots__ = ("closed", "held", "limit", "message_bytes", "payload_left", "relayed")

    def __init__(self, limit_bytes: int) -> None:
        self.limit = limit_bytes
        self.held = b""  # the start of a frame header, not relayed yet
        self.payload_left = 0
        self.message_bytes = 0
        self.closed = False  # a close frame went by
        self.relayed = 0  # bytes the relay wrote on in this direction (it counts them)

    @property
    def at_boundary(self) -> bool:
        """Whether a frame of the router's own can be sent now."""
        return not self.payload_left

    def feed(self, data: bytes) -> tuple[bytes, bool]:
        """Follow `data`; returns (the bytes to relay now, whether a frame that would take its
        message over the limit starts right after them)."""
        if self.held:
            data = self.held + data
            self.held = b""
        elif not self.payload_left and len(data) >= 2 and data[1] & 0x7F < 126:
            # The usual read: exactly one whole data frame with a short payload (an echo, a
            # hot-reload message). The loop below gives the same answer, more slowly.
            length = data[1] & 0x7F
            opcode = data[0] & 0x0F
            if opcode < 8 and len(data) == (6 if data[1] & 0x80 else 2) + length:
                total = (self.message_bytes if opcode == 0 else 0) + length
                if total <= self.limit:
                    self.message_bytes = total
                    return data, False
        pos = 0
        n = len(data)
        while pos < n:
            if self.payload_left:
                step = min(self.payload_left, n - pos)
                self.payload_left -= step
                pos += step
                continue
            head = data[pos : pos + 14]
            size = _header_size(head)
            if size is None or len(head) < size:
                self.held = data[pos:]
                return data[:pos], False
            opcode = head[0] & 0x0F
            length = _payload_length(head)
            if opcode < 8:  # data: 0 continues a message, 1 and 2 start one
                total = (self.message_bytes if opcode == 0 else 0) + length
                if total > self.limit:
                    return data[:pos], True
                self.message_bytes = total
            elif opcode == _OP_CLOSE:
                self.closed = True
            self.payload_left = length
            pos += size
        return data, False


def _header_size(head: bytes) -> int | None:
    if len(head) < 2:
        return None
    size = 2 + (4 if head[1] & 0x80 else 0)
    flag = head[1] & 0x7F
    return size + (2 if flag == 126 else 8 if flag == 127 else 0)


def _payload_length(head: bytes) -> int:
    flag = head[1] & 0x7F
    if flag == 126:
        return int.from_bytes(head[2:4], "big")
    if flag == 127:
        return int.from_bytes(head[2:10], "big")
    return flag


class Side(Protocol):
    """What the relay needs of each connection (ClientConnection, UpstreamConnection)."""

    transport: asyncio.Transport | None


class Relay:
    """Both directions of one upgraded connection pair."""

    def __init__(
        self,
        client: Side,
        backend: Side,
        limit_bytes: int,
        loop: asyncio.AbstractEventLoop,
        on_end: Callable[[Relay], None],
    ) -> None:
        self.client = client
        self.backend = backend
        self.up = FrameTracker(limit_bytes)  # client -> backend
        self.down = FrameTracker(limit_bytes)  # backend -> client
        self.loop = loop
        self.on_end = on_end
        self.ended = False
        self._timer: asyncio.TimerHandle | None = None

    # -- bytes --------------------------------------------------------------------------

    def from_client(self, data: bytes) -> None:
        self._relay(self.up, self.backend, data)

    def from_backend(self, data: bytes) -> None:
        self._relay(self.down, self.client, data)

    def _relay(self, tracker: FrameTracker, to: Side, data: bytes) -> None:
        """Follow `data` in one direction and write to `to` what may go. A message over the
        limit ends the relay, after the bytes before its frame."""
        if self.ended:
            return
        out, too_big = tracker.feed(data)
        if out:
            self._write(to, out)
            tracker.relayed += len(out)
        if too_big:
            self._too_big()
        elif self.up.closed and self.down.closed:
            self._arm_close_timer()

    @property
    def bytes_up(self) -> int:
        """Bytes relayed from the client to the backend."""
        return self.up.relayed

    @property
    def bytes_down(self) -> int:
        """Bytes relayed from the backend to the client."""
        return self.down.relayed

    # -- endings -------------------------------------------------------------------------

    def client_gone(self) -> None:
        """The client's TCP connection ended: a close frame for the backend, if we can."""
        self._finish(None, (1001, b"client went away"))

    def backend_gone(self) -> None:
        """The backend's TCP connection ended: a close frame for the client, if we can."""
        self._finish((1011, b"backend closed the connection"), None)

    def _too_big(self) -> None:
        self._finish((1009, b"message too big"), (1009, b"message too big"))

    def shutdown(self) -> None:
        """The router is stopping: 1001 both ways where a frame boundary allows."""
        self._finish((1001, b"devrouter is stopping"), (1001, b"devrouter is stopping"))

    def _finish(
        self, to_client: tuple[int, bytes] | None, to_backend: tuple[int, bytes] | None
    ) -> None:
        """End the relay: the router's close frames (code, reason) to each side that has not
        sent or received one and is at a frame boundary, then both TCP connections closed
        after what was written."""
        if self.ended:
            return
        if to_client is not None and self.down.at_boundary and not self.down.closed:
            self._write(self.client, close_frame(*to_client, masked=False))
        if to_backend is not None and self.up.at_boundary and not self.up.closed:
            self._write(self.backend, close_frame(*to_backend, masked=True))
        self._close(self.client)
        self._close(self.backend)
        self._end()

    def _arm_close_timer(self) -> None:
        if self._timer is None:
            self._timer = self.loop.call_later(CLOSE_TIMEOUT_S, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._finish(None, None)

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.on_end(self)

    @staticmethod
    def _write(side: Side, data: bytes) -> None:
        t = side.transport
        if t is not None and not t.is_closing():
            t.write(data)

    @staticmethod
    def _close(side: Side) -> None:
        t = side.transport
        if t is not None and not t.is_closing():
            t.close()  # after what was written
