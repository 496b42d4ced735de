"""Live progress of a run, on stderr."""

from __future__ import annotations

import time
from typing import TextIO

#: How often progress is shown: on a terminal, and as plain lines otherwise (seconds).
PROGRESS_TTY_S = 0.25
PROGRESS_PLAIN_S = 2.0


class Progress:
    """Live progress on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO, total_s: float | None, requests: int | None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = PROGRESS_TTY_S if self.tty else PROGRESS_PLAIN_S
        self.total_s = total_s
        self.requests = requests
        self.started = time.monotonic()
        self.last_at = self.started
        self.last_done = 0
        self.next_at = self.started + self.every

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def show(self, done: int, errors: int) -> None:
        now = time.monotonic()
        rate = (done - self.last_done) / max(now - self.last_at, 1e-9)
        self.last_at, self.last_done, self.next_at = now, done, now + self.every
        elapsed = now - self.started
        if self.total_s is not None:
            left = f"{elapsed:5.1f}s of {self.total_s:.1f}s"
        else:
            left = f"{elapsed:5.1f}s, {done:,} of {self.requests or 0:,} requests"
        line = f"{done:>10,} requests  {rate:>10,.0f} req/s  {errors:,} errors  {left}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write("progress: " + line.strip() + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
