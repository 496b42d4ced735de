"""The access log: one line per exchange on stdout (diagnostics go to stderr).

    12:01:02 api GET /items?page=2 200 1.3ms 512B
    12:01:03 api POST /login 502 0.41ms 0B refused
    12:01:04 api GET /events 200 39210ms 2048B stream

Lines are formatted on the event loop (no `logging`, which costs several microseconds a
line) as the metrics count each exchange, and collected; every
`devrouter.metrics.FLUSH_INTERVAL_S` the router hands the batch to a writer thread. A stdout
that nobody reads (`devrouter serve | sleep`) therefore blocks only that thread: the router
keeps serving, holds at most MAX_BACKLOG_BYTES of unwritten lines, and counts what it had to
drop.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
import time
from typing import TextIO

from .metrics import RequestRecord

#: Unwritten log text kept while stdout is blocked, in bytes; beyond it lines are dropped.
MAX_BACKLOG_BYTES = 4 * 1024 * 1024
#: Longest path shown on a line, in characters.
MAX_PATH_CHARS = 200


def format_duration(seconds: float) -> str:
    """A duration with three significant digits down to the microsecond: 0.26ms, 1.3ms."""
    ms = seconds * 1000
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 100:
        return f"{ms:.1f}ms"
    return f"{ms:.0f}ms"


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self.dropped = 0
        self._second = -1
        self._stamp = ""
        self._lines: list[str] = []
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._backlog = 0  # characters queued but not yet written
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._broken = False

    def __call__(self, rec: RequestRecord) -> None:
        second = int(rec.started)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
        path = rec.path if len(rec.path) <= MAX_PATH_CHARS else rec.path[:MAX_PATH_CHARS] + "..."
        status = rec.status or "-"
        extra = (
            f" {rec.error}"
            if rec.error
            else " ws"
            if rec.websocket
            else " stream"
            if rec.stream
            else ""
        )
        self._lines.append(
            f"{self._stamp} {rec.route} {rec.method} {path} {status} "
            f"{format_duration(rec.duration_s)} {rec.bytes_out}B{extra}\n"
        )

    def flush(self) -> None:
        """Hand the collected lines to the writer thread (from the event loop)."""
        if not self._lines:
            return
        batch = "".join(self._lines)
        count = len(self._lines)
        self._lines.clear()
        if self._broken:
            return
        with self._lock:
            if self._backlog + len(batch) > MAX_BACKLOG_BYTES:
                self.dropped += count
                return
            self._backlog += len(batch)
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._write_loop, name="devrouter-access-log", daemon=True
            )
            self._thread.start()
        self._queue.put(batch)

    def _write_loop(self) -> None:
        while True:
            batch = self._queue.get()
            if batch is None:
                return
            dropped, self.dropped = self.dropped, 0
            try:
                if dropped:
                    self.stream.write(f"(devrouter: {dropped} access log lines dropped)\n")
                self.stream.write(batch)
                self.stream.flush()
            except (OSError, ValueError):  # stdout closed or a broken pipe: stop logging
                self._broken = True
            with self._lock:
                self._backlog -= len(batch)

    async def close(self) -> None:
        """Hand over the last lines and wait (briefly) for the writer to write them."""
        self.flush()
        if self._thread is not None:
            self._queue.put(None)
            await asyncio.to_thread(self._thread.join, 1.0)
