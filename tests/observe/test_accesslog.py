"""devrouter.observe.accesslog: one line per exchange on stdout, off with --no-access-log."""

from __future__ import annotations

import io
import os
import select
import time
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S

from devrouter.observe.accesslog import AccessLog, format_duration
from devrouter.observe.metrics import Metrics, RequestRecord


def test_line_has_route_method_path_status_duration_bytes_and_error() -> None:
    out = io.StringIO()
    m = Metrics(sink=AccessLog(out))
    m.opened("api")
    m.finish(
        RequestRecord(
            time.time(),
            "GET",
            "api.localhost",
            "/items?p=2",
            "api",
            4001,
            200,
            0.001,
            0.0025,
            0,
            512,
        )
    )
    m.opened("api")
    m.finish(
        RequestRecord(
            time.time(),
            "POST",
            "api.localhost",
            "/x",
            "api",
            4001,
            502,
            None,
            0.0004,
            5,
            0,
            "refused",
        )
    )
    log = m.sink
    assert isinstance(log, AccessLog)
    log.flush()
    log._queue.put(None)
    assert log._thread is not None
    log._thread.join(5)
    first, second = out.getvalue().splitlines()
    assert first.split()[1:] == ["api", "GET", "/items?p=2", "200", "2.5ms", "512B"]
    assert second.split()[1:] == ["api", "POST", "/x", "502", "0.40ms", "0B", "refused"]


def test_a_closed_stream_stops_logging_without_failing_requests() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    out.close()
    log(RequestRecord(time.time(), "GET", "h", "/", "api", 1, 200))  # must not raise
    log.flush()
    log._queue.put(None)
    assert log._thread is not None
    log._thread.join(5)
    assert log._broken


def test_a_blocked_stream_keeps_a_bounded_backlog_and_counts_drops() -> None:
    import threading

    from devrouter.observe import accesslog

    gate = threading.Event()

    class Blocked(io.StringIO):
        def write(self, text: str) -> int:
            gate.wait(10)
            return super().write(text)

    log = AccessLog(Blocked())
    line = RequestRecord(time.time(), "GET", "h", "/" + "x" * 1000, "api", 1, 200)
    per_flush = 100  # lines of ~240 bytes (the path is cut at 200 characters)
    for _ in range(2 * accesslog.MAX_BACKLOG_BYTES // (per_flush * 200)):
        for _ in range(per_flush):
            log(line)
        log.flush()  # never blocks, even though the writer is stuck
    assert log.dropped > 0
    assert log._backlog <= accesslog.MAX_BACKLOG_BYTES
    gate.set()
    log._queue.put(None)
    assert log._thread is not None
    log._thread.join(5)


def _read_stdout(proc, needle: str, timeout_s: float = IO_TIMEOUT_S) -> str:
    fd = proc.stdout.fileno()
    data = b""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and needle.encode() not in data:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data.decode()


async def test_serve_prints_one_line_per_request(cli, backend, tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/{tail:.*}", ok)
    port = await backend(app)
    cfg = tmp_path / "devrouter.yaml"
    cfg.write_text(f"routes:\n  api: {port}\n")
    p = cli("serve", "--config", str(cfg))
    async with aiohttp.ClientSession() as s:
        for path in ("/one", "/two"):
            async with s.get(
                f"http://127.0.0.1:{p.port}{path}", headers={"Host": "api.localhost"}
            ) as resp:
                assert resp.status == 200
    text = _read_stdout(p.proc, "/two")
    lines = [line for line in text.splitlines() if " api GET " in line]
    assert [line.split()[3] for line in lines] == ["/one", "/two"]


async def test_no_access_log_flag(cli, backend, tmp_path: Path) -> None:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_get("/", ok)
    port = await backend(app)
    cfg = tmp_path / "devrouter.yaml"
    cfg.write_text(f"routes:\n  api: {port}\n")
    p = cli("serve", "--config", str(cfg), "--no-access-log")
    url = f"http://127.0.0.1:{p.port}/"
    async with aiohttp.ClientSession() as s, s.get(url, headers={"Host": "api.localhost"}) as r:
        assert r.status == 200
    assert _read_stdout(p.proc, "api GET", timeout_s=1.5) == ""


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.000_262, "0.26ms"),  # under a millisecond: not "0.0ms"
        (0.000_05, "0.05ms"),
        (0.0025, "2.5ms"),
        (0.0999, "99.9ms"),
        (0.250, "250ms"),
        (39.21, "39210ms"),
    ],
)
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
