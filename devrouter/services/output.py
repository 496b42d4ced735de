"""Output: devrouter's own lines (`say`), a command's output copied through to ours, its
lines kept for the router's error pages, and what a log file gained since an offset.

A command's stdout and stderr each get a pseudo-terminal when ours is a terminal (so
colours and line buffering stay as if devrouter were not there), else a pipe; a `Pump`
copies each to ours as it comes, and `LineTail` splits it into clean lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import re
import select
import struct
import sys
import termios
from collections.abc import Callable, Sequence
from pathlib import Path


def say(text: str) -> None:
    """One `devrouter:` line on stderr; CMD's own output stays on stdout/stderr unchanged."""
    print(f"devrouter: {text}", file=sys.stderr, flush=True)


_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


class LineTail:
    """Splits output into lines without terminal escapes, for the router's error pages."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + data.decode(errors="replace")
        *lines, self._partial = text.split("\n")
        self._partial = self._partial[-4000:]
        return [self.clean(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [self.clean(rest)] if rest.strip() else []

    @staticmethod
    def clean(line: str) -> str:
        line = _ANSI_RE.sub("", line).rstrip("\r")
        return line.rsplit("\r", 1)[-1]  # progress bars redraw with \r: keep the last


def write_all(fd: int, data: bytes) -> bool:
    """Write everything to `fd`, waiting if someone made it non-blocking (Node does that to
    a shared terminal). False once the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return False
        view = view[n:]
    return True


class Pump:
    """Copies one output stream of a child to one of ours, line by line through `on_data`."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None]) -> None:
        self.fd = fd
        self.on_data = on_data
        self.done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pseudo-terminal's other end is closed
            data = b""
        if data:
            self.on_data(data)
            return
        self.close()

    def close(self) -> None:
        if self.done.done():
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        self.done.set_result(None)


def output_pair(ours: int) -> tuple[int, int]:
    """(read end for us, write end for the child): a pseudo-terminal with our window size
    when `ours` is a terminal, else a pipe."""
    if os.isatty(ours):
        master, slave = os.openpty()
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(ours, termios.TIOCGWINSZ, struct.pack("4H", 0, 0, 0, 0))
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        return master, slave
    return os.pipe()


async def drain(pumps: Sequence[Pump], timeout_s: float = 1.0) -> None:
    """Wait up to `timeout_s` for the pumps to reach end of file, then close them."""
    pending = [p.done for p in pumps if not p.done.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    for p in pumps:
        p.close()


def read_since(path: Path, offset: int) -> str | None:
    """What the log `path` gained after its first `offset` bytes; None if it cannot be read."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return None
