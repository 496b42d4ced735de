"""devrouter.services.output: a command's output split into clean lines, copied through
pipes and pseudo-terminals, and what a log gained since an offset."""

from __future__ import annotations

import asyncio
import os

import pytest

from devrouter.services.output import LineTail, Pump, drain, output_pair, read_since, write_all


def test_line_tail_strips_escapes_and_progress_redraws():
    tail = LineTail()
    assert tail.feed(b"\x1b[1;32mready\x1b[0m in 20ms\r\npartial") == ["ready in 20ms"]
    assert tail.feed(b" 10%\r 50%\r100%\n") == ["100%"]
    assert tail.flush() == []
    assert tail.feed(b"end") == []
    assert tail.flush() == ["end"]


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("plain", "plain"),
        ("\x1b[31merror\x1b[0m", "error"),
        ("\x1b]0;title\x07text", "text"),  # a window title
        ("\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\", "link"),  # a hyperlink
        ("crlf\r", "crlf"),
        ("10%\r50%\r100%", "100%"),
        ("\x1b[?25lhidden cursor", "hidden cursor"),
    ],
)
def test_line_tail_clean(line, expected):
    assert LineTail.clean(line) == expected


def test_read_since(tmp_path):
    log = tmp_path / "log"
    log.write_bytes(b"old line\nnew \xff line\n")
    assert read_since(log, 9) == "new \ufffd line\n"
    assert read_since(log, 0) == "old line\nnew \ufffd line\n"
    assert read_since(log, 1000) == ""
    assert read_since(tmp_path / "missing", 0) is None


def test_write_all_says_when_the_reader_is_gone():
    r, w = os.pipe()
    try:
        assert write_all(w, b"hello")
        assert os.read(r, 100) == b"hello"
        os.close(r)
        assert not write_all(w, b"nobody reads this")
    finally:
        os.close(w)


def test_write_all_waits_on_a_non_blocking_descriptor():
    r, w = os.pipe()
    os.set_blocking(w, False)
    data = os.urandom(256 * 1024)  # more than a pipe holds: the writer must wait
    got = bytearray()

    async def main() -> bool:
        loop = asyncio.get_running_loop()

        def read_all() -> None:
            while len(got) < len(data):
                got.extend(os.read(r, 65536))

        reader = loop.run_in_executor(None, read_all)
        ok = await loop.run_in_executor(None, write_all, w, data)
        await asyncio.wait_for(reader, 10)
        return ok

    try:
        assert asyncio.run(main())
        assert bytes(got) == data
    finally:
        os.close(r)
        os.close(w)


def test_output_pair_is_a_pipe_unless_ours_is_a_terminal():
    r, w = os.pipe()
    master, slave = os.openpty()
    pairs = [output_pair(w), output_pair(slave)]
    try:
        (pipe_read, pipe_write), (pty_read, pty_write) = pairs
        assert not os.isatty(pipe_read) and not os.isatty(pipe_write)
        assert os.isatty(pty_read) and os.isatty(pty_write)
    finally:
        for fd in (r, w, master, slave, *[fd for pair in pairs for fd in pair]):
            os.close(fd)


def test_pump_copies_until_end_of_file():
    async def main() -> bytes:
        r, w = os.pipe()
        seen = bytearray()
        pump = Pump(r, seen.extend)
        os.write(w, b"one\ntwo")
        os.write(w, b"\nthree\n")
        os.close(w)
        await drain([pump], timeout_s=10)
        assert pump.done.done()
        return bytes(seen)

    assert asyncio.run(main()) == b"one\ntwo\nthree\n"


def test_drain_closes_a_pump_whose_writer_stays_open():
    async def main() -> None:
        r, w = os.pipe()
        pump = Pump(r, lambda data: None)
        try:
            await drain([pump], timeout_s=0.05)
            assert pump.done.done()
            with pytest.raises(OSError):
                os.fstat(r)  # closed by the pump
        finally:
            os.close(w)

    asyncio.run(main())
