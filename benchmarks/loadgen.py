"""The built-in clients: HTTP closed loops (when wrk is missing: `devrouter bench`, or a
plain aiohttp loop), WebSocket echo round trips and time to the first server-sent event
(always ours: wrk does neither).

Each returns the same shape of figures as `benchmarks.wrk.parse`: requests (or round trips,
or samples), bytes, duration_s, errors and latency_us percentiles. A closed loop means each
connection sends its next request as soon as the previous answer is read, as wrk does.
The clients talk to 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

LOOPBACK = "127.0.0.1"
#: Upper bound for any one request, connect or read, in seconds.
REQUEST_TIMEOUT_S = 30.0
#: Most time-to-first-event samples in one measurement (each leaves a TIME_WAIT socket).
MAX_SSE_SAMPLES = 2000


def percentiles(latencies_us: list[float]) -> dict[str, float]:
    """p50, p90, p99, p99.9 (nearest rank), mean and max of a list of latencies."""
    if not latencies_us:
        return {}
    s = sorted(latencies_us)
    n = len(s)

    def rank(p: float) -> float:
        return s[min(n - 1, max(0, int(p / 100 * n + 0.5) - 1))]

    return {
        "p50": rank(50),
        "p90": rank(90),
        "p99": rank(99),
        "p99_9": rank(99.9),
        "mean": sum(s) / n,
        "max": s[-1],
    }


def _errors() -> dict[str, int]:
    return {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}


async def bench_load(
    port: int,
    host: str,
    path: str,
    connections: int,
    seconds: float,
    method: str = "GET",
    upload_bytes: int = 0,
) -> dict[str, Any]:
    """The same closed loop driven by `devrouter bench` (one worker process, so the servers
    keep the other core), in the shape `benchmarks.wrk.parse` returns."""
    with tempfile.TemporaryDirectory(prefix="dr-bench-") as tmp:
        argv = [
            sys.executable, "-m", "devrouter", "bench", f"http://{host}{path}",
            "-c", str(connections), "-d", f"{seconds:g}s", "--workers", "1", "--json",
            "-H", f"Host: {host}", "-m", method,
        ]  # fmt: skip
        if upload_bytes:
            body = Path(tmp) / "body"
            body.write_bytes(b"u" * upload_bytes)
            argv += ["-b", f"@{body}", "-H", "Content-Type: application/octet-stream"]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
        )
        out, err = await asyncio.wait_for(proc.communicate(), seconds + REQUEST_TIMEOUT_S)
    if proc.returncode != 0:
        raise RuntimeError(f"devrouter bench failed: {err.decode(errors='replace').strip()}")
    data = json.loads(out)
    lat = data["latency_ms"]
    errs = data["errors"]
    bad = sum(n for code, n in data["status"].items() if int(code) >= 400)
    return {
        "requests": data["requests"],
        "bytes": data["bytes"],
        "duration_s": data["duration_s"],
        "errors": {
            "connect": errs.get("refused", 0),
            "read": errs.get("reset", 0) + errs.get("other", 0),
            "write": 0,
            "status": bad,
            "timeout": errs.get("timeout", 0),
        },
        "latency_us": {
            "p50": lat["p50"] * 1000,
            "p90": lat["p90"] * 1000,
            "p99": lat["p99"] * 1000,
            "p99_9": lat["p999"] * 1000,
            "mean": lat["mean"] * 1000,
            "max": lat["max"] * 1000,
        },
    }


async def ws_echo(port: int, host: str, path: str, seconds: float) -> dict[str, Any]:
    """One WebSocket; send a 32-byte text message, wait for its echo, repeat."""
    message = "m" * 32
    latencies: list[float] = []
    errors = _errors()
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(
            f"ws://{LOOPBACK}:{port}{path}", headers={"Host": host}, autoping=False
        ) as ws,
    ):
        start = time.perf_counter()
        deadline = start + seconds
        while (t0 := time.perf_counter()) < deadline:
            await ws.send_str(message)
            msg = await ws.receive(timeout=REQUEST_TIMEOUT_S)
            if msg.type != aiohttp.WSMsgType.TEXT or msg.data != message:
                errors["read"] += 1
                break
            latencies.append((time.perf_counter() - t0) * 1e6)
        duration = time.perf_counter() - start
        await ws.close()
    return {
        "requests": len(latencies),
        "bytes": len(latencies) * len(message),
        "duration_s": duration,
        "errors": errors,
        "latency_us": percentiles(latencies),
    }


async def sse_first_event(port: int, host: str, path: str, seconds: float) -> dict[str, Any]:
    """Open a new connection, send GET, time until the first `data:` event has arrived
    (connect included, as for a browser's EventSource), close; repeat."""
    request = (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\n"
        "Cache-Control: no-cache\r\n\r\n"
    ).encode()
    latencies: list[float] = []
    errors = _errors()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline and len(latencies) < MAX_SSE_SAMPLES:
        t0 = time.perf_counter()
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                reader, writer = await asyncio.open_connection(LOOPBACK, port)
                try:
                    writer.write(request)
                    ok = await _read_first_event(reader)
                finally:
                    writer.close()
                    with contextlib.suppress(OSError):
                        await writer.wait_closed()
        except TimeoutError:
            errors["timeout"] += 1
            continue
        except OSError:
            errors["connect"] += 1
            continue
        if not ok:
            errors["status"] += 1
            continue
        latencies.append((time.perf_counter() - t0) * 1e6)
    return {
        "requests": len(latencies),
        "bytes": 0,
        "duration_s": time.perf_counter() - start,
        "errors": errors,
        "latency_us": percentiles(latencies),
    }


async def _read_first_event(reader: asyncio.StreamReader) -> bool:
    """True once a 200 response's first `data:` event is complete; False on anything else.

    Chunked framing does not matter: the chunk-size lines never contain `data:`.
    """
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = await reader.read(65536)
        if not chunk:
            return False
        buf += chunk
    head, _, buf = buf.partition(b"\r\n\r\n")
    if not head.startswith((b"HTTP/1.1 200", b"HTTP/1.0 200")):
        return False
    while True:
        i = buf.find(b"data:")
        if i >= 0 and b"\n\n" in buf[i:]:
            return True
        chunk = await reader.read(65536)
        if not chunk:
            return False
        buf += chunk


def run(
    coro_fn: Callable[[], Awaitable[dict[str, Any]]],
    sample: Callable[[], None] | None = None,
    interval_s: float = 0.1,
) -> dict[str, Any]:
    """Run one client on a fresh event loop (uvloop when installed, like the servers),
    calling `sample()` every `interval_s` while it runs."""

    async def sampler(fn: Callable[[], None]) -> None:
        while True:
            fn()
            await asyncio.sleep(interval_s)

    async def main() -> dict[str, Any]:
        task = asyncio.create_task(sampler(sample)) if sample is not None else None
        try:
            return await coro_fn()
        finally:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    try:
        import uvloop
    except ImportError:
        return asyncio.run(main())
    return uvloop.run(main())
