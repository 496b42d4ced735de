"""The HTTP/2 engine's server: its connections, and the gate in front of the backends.

The gate caps the streams waiting for an answer from one name at MAX_STREAMS_PER_NAME
across all HTTP/2 connections, and queues the rest in arrival order. Without it, a
browser's first load of an unbundled dev server opens one backend connection per module at
once (hundreds); portless #370 saw that overflow Vite's accept backlog. A stream leaves the
gate when its response head arrives (or it ends or is reset before), so responses that
stream on (event streams, NDJSON, long polls, WebSockets) never starve the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from .connection import Http2Connection

if TYPE_CHECKING:
    from .connection import Stream

#: Streams forwarded to one name at once, across all HTTP/2 connections; the HTTP/1 engines'
#: pooled upstream connections are reused between them.
MAX_STREAMS_PER_NAME = 32


class Gate:
    """Streams in flight per name, with a queue past MAX_STREAMS_PER_NAME."""

    def __init__(self, limit: int = MAX_STREAMS_PER_NAME) -> None:
        self.limit = limit
        self.active: dict[bytes, int] = {}
        self.queued: dict[bytes, deque[Stream]] = {}

    def enter(self, stream: Stream, key: bytes) -> None:
        stream.key = key
        if self.active.get(key, 0) < self.limit:
            self.active[key] = self.active.get(key, 0) + 1
            stream.conn.start(stream)
        else:
            stream.queued = True
            self.queued.setdefault(key, deque()).append(stream)

    def leave(self, stream: Stream) -> None:
        """`stream` no longer counts (ended, reset, or long-lived): the next one goes."""
        key = stream.key
        if key is None:
            return
        stream.key = None
        if stream.queued:  # never started: left in the queue, skipped when its turn comes
            stream.queued = False  # (a scan to remove it cost 8% of the CPU at 50x10)
            return
        queue = self.queued.get(key)
        while queue:
            nxt = queue.popleft()
            if nxt.queued and not nxt.ended and not nxt.conn.closed:
                nxt.queued = False
                nxt.conn.start(nxt)
                return
            nxt.queued = False
        if not queue:
            self.queued.pop(key, None)
        left = self.active.get(key, 1) - 1
        if left > 0:
            self.active[key] = left
        else:
            self.active.pop(key, None)


class Http2Server:
    """Makes the protocol of each `h2` connection; `engine` makes the HTTP/1 engine
    protocol a stream is forwarded through (devrouter.http2.bridge)."""

    def __init__(
        self, engine: Callable[[], asyncio.BaseProtocol], full: Callable[[], bool]
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.engine = engine
        self.full = full  # the router-wide connection limit is reached
        self.gate = Gate()
        self.connections: set[Http2Connection] = set()
        self._drained: asyncio.Event | None = None  # set when shutting down and idle

    def make_protocol(self) -> asyncio.BaseProtocol:
        return Http2Connection(self, refuse=self.full())

    def open_streams(self) -> int:
        return sum(len(c.streams) for c in self.connections)

    def settled(self) -> None:
        """A connection closed or its last stream ended: while shutting down, is all done?"""
        if self._drained is not None and self.open_streams() == 0:
            self._drained.set()

    async def shutdown(self, timeout_s: float) -> None:
        """GOAWAY to every connection; the streams already open get `timeout_s` to end."""
        self._drained = asyncio.Event()
        for conn in list(self.connections):
            conn.shutdown()
        self.settled()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), timeout_s)
        for conn in list(self.connections):
            conn.close()
