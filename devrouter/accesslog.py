"""The access log: one line per exchange on stdout (diagnostics go to stderr).

    12:01:02 api GET /items?page=2 200 1.3ms 512B
    12:01:03 api POST /login 502 0.4ms 0B refused

Written straight to the stream, not through `logging` (which costs several microseconds a
line); a non-terminal stdout is block-buffered and flushed by `flush_periodically`, so
`devrouter serve > log` and `tail -f log` both work.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from typing import TextIO

from .metrics import RequestRecord

#: How often buffered access lines are flushed when stdout is not a terminal, in seconds.
FLUSH_INTERVAL_S = 0.5
#: Longest path shown on a line, in characters.
MAX_PATH_CHARS = 200


class AccessLog:
    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stdout
        self._second = -1
        self._stamp = ""

    def __call__(self, rec: RequestRecord) -> None:
        second = int(rec.started)
        if second != self._second:
            self._second = second
            self._stamp = time.strftime("%H:%M:%S", time.localtime(second))
        path = rec.path if len(rec.path) <= MAX_PATH_CHARS else rec.path[:MAX_PATH_CHARS] + "..."
        status = rec.status or "-"
        extra = f" {rec.error}" if rec.error else (" ws" if rec.websocket else "")
        try:
            self.stream.write(
                f"{self._stamp} {rec.route} {rec.method} {path} {status} "
                f"{rec.duration_s * 1000:.1f}ms {rec.bytes_out}B{extra}\n"
            )
        except (OSError, ValueError):  # stdout closed or a broken pipe: stop logging
            self.stream = _Null()

    async def flush_periodically(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), FLUSH_INTERVAL_S)
            with contextlib.suppress(OSError, ValueError):
                self.stream.flush()


class _Null:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass
