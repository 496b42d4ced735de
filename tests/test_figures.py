"""The router's figures agree with what a client measures. These tests run the real CLI,
so the router runs on uvloop as `devrouter serve` does: uvloop's `loop.time()` counts whole
milliseconds, and a router that timed exchanges with it would show 0.0 ms here, and fail.
Each runs with both engines (`DEVROUTER_FAST_PATH=0` is the aiohttp handler alone)."""

from __future__ import annotations

import asyncio
import contextlib
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from conftest import IO_TIMEOUT_S, CliProcess, cli_env

BackendFactory = Callable[..., Awaitable[int]]
Serve = Callable[[dict[str, Any]], int]


@pytest.fixture(params=["fastpath", "aiohttp"])
def serve(request: pytest.FixtureRequest, cli: Callable[..., CliProcess], tmp_path: Path) -> Serve:
    """`port = serve(routes)`: `devrouter serve` with these routes, on the engine of the
    test's parameter; its port."""

    def start(routes: dict[str, Any]) -> int:
        config = tmp_path / "devrouter.yaml"
        config.write_text(yaml.safe_dump({"routes": routes}))
        env = cli_env(
            HOME=str(tmp_path), DEVROUTER_FAST_PATH="1" if request.param == "fastpath" else "0"
        )
        return cli("serve", "--config", str(config), "--no-access-log", env=env).port

    return start


async def own_json(port: int, path: str) -> Any:
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"http://127.0.0.1:{port}{path}", headers={"Host": "localhost"}) as resp,
    ):
        assert resp.status == 200
        return await resp.json()


def route_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (route,) = [r for r in doc["routes"] if r["name"] == name]
    return route


#: A backend in its own process (so its work is not the router's): answers every request on
#: a keep-alive connection with "ok", after busy-waiting argv[1] seconds.
TIMED_BACKEND = r"""
import asyncio, sys, time
BUSY_S = float(sys.argv[1])
async def serve(reader, writer):
    try:
        while True:
            await reader.readuntil(b"\r\n\r\n")
            end = time.perf_counter() + BUSY_S
            while time.perf_counter() < end:
                pass
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()
async def main():
    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.sleep(120)
asyncio.run(main())
"""
#: Requests per backend in the agreement test.
AGREEMENT_REQUESTS = 60
#: What the busy backend spends on each request, in seconds.
BUSY_S = 0.0025


@contextlib.asynccontextmanager
async def timed_backend(busy_s: float) -> AsyncIterator[int]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", TIMED_BACKEND, str(busy_s), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(proc.stdout.readline(), IO_TIMEOUT_S)
        yield int(line)
    finally:
        proc.kill()
        await proc.wait()


async def client_round_trips(port: int, name: str, n: int) -> dict[str, float]:
    """`n` sequential GETs on one keep-alive connection; each path's round trip in ms, from
    before the request's first byte is written to after the response's last byte is read."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    out: dict[str, float] = {}
    try:
        for i in range(n):
            path = f"/r{i}"
            t0 = time.perf_counter()
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {name}.localhost\r\n\r\n".encode())
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            body = await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT_S)
            out[path] = (time.perf_counter() - t0) * 1000
            assert head.startswith(b"HTTP/1.1 200 ") and body == b"ok"
    finally:
        writer.close()
    return out


def percentile(values: list[float], p: float) -> float:
    """Nearest rank, as the router's histograms define it."""
    ranked = sorted(values)
    return ranked[max(0, math.ceil(p / 100 * len(ranked)) - 1)]


@pytest.mark.parametrize("busy_s", [0.0, BUSY_S], ids=["instant", "busy-2.5ms"])
async def test_figures_agree_with_the_client(serve: Serve, busy_s: float) -> None:
    async with timed_backend(busy_s) as port:
        router = serve({"api": port})
        client = await client_round_trips(router, "api", AGREEMENT_REQUESTS)
        doc = await own_json(router, f"/api/requests?route=api&limit={AGREEMENT_REQUESTS}")
        status = route_of(await own_json(router, "/api/status"), "api")
    records = {rec["path"]: rec for rec in doc["requests"]}
    assert set(records) == set(client)
    # Each exchange, as the router timed it, lies inside the client's round trip: it starts
    # after the request's head arrived and ends when the last byte was handed over. The
    # router rounds to the microsecond, hence the 0.001 ms.
    for path, rtt_ms in client.items():
        ttfb, total = records[path]["ttfb_ms"], records[path]["duration_ms"]
        assert 0 < ttfb <= total <= rtt_ms + 0.001, (path, ttfb, total, rtt_ms)
        assert ttfb >= busy_s * 1000  # the backend's work is inside the router's figures
    # The route's percentiles: every one above zero, at or above the backend's work, and not
    # above the client's same percentile (HDR histograms report within 0.1 % above).
    for name in ("p50", "p90", "p99", "max"):
        ours, ttfb = status["latency_ms"][name], status["ttfb_ms"][name]
        theirs = percentile(list(client.values()), 100.0 if name == "max" else float(name[1:]))
        assert busy_s * 1000 <= ttfb <= ours <= theirs * 1.001 + 0.001, (name, ours, theirs)
    assert status["streams"]["count"] == 0


def sse_app(events: int, gap_s: float) -> web.Application:
    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(events):
            await resp.write(f"data: {i}\n\n".encode())
            await asyncio.sleep(gap_s)
        await resp.write_eof()
        return resp

    async def long_poll(request: web.Request) -> web.StreamResponse:
        # the head at once, the body after the route's timeout: a long poll held open
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        await resp.prepare(request)
        await asyncio.sleep(float(request.query["hold"]))
        await resp.write(b"{}")
        await resp.write_eof()
        return resp

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    app = web.Application()
    app.router.add_get("/events", stream)
    app.router.add_get("/poll", long_poll)
    app.router.add_get("/", hello)
    return app


async def test_streams_are_shown_apart_from_request_latency(
    serve: Serve, backend: BackendFactory
) -> None:
    port = await backend(sse_app(events=4, gap_s=0.15))
    router = serve({"api": {"port": port, "timeout": 0.2}})
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        url = f"http://127.0.0.1:{router}"
        async with s.get(f"{url}/events", headers={"Host": "api.localhost"}) as resp:
            assert await resp.content.readline() == b"data: 0\n"
            api = route_of(await own_json(router, "/api/status"), "api")
            assert (api["open_streams"], api["in_flight"]) == (1, 1)
            await resp.read()
        async with s.get(f"{url}/poll?hold=0.5", headers={"Host": "api.localhost"}) as resp:
            assert await resp.read() == b"{}"
        async with s.get(url, headers={"Host": "api.localhost"}) as resp:
            assert await resp.text() == "hi"
    api = route_of(await own_json(router, "/api/status"), "api")
    assert (api["open_streams"], api["in_flight"], api["count"]) == (0, 0, 3)
    assert api["streams"]["count"] == 2
    assert api["streams"]["duration_ms"]["max"] >= 500  # the long poll held 0.5 s
    # one request in the latency figures (p50 = max), the plain one, not the streams
    assert (
        api["latency_ms"]["p50"] == api["latency_ms"]["max"] < api["streams"]["duration_ms"]["max"]
    )
    doc = await own_json(router, "/api/requests?route=api")
    assert [(q["path"], q["stream"]) for q in doc["requests"]] == [
        ("/events", True),
        ("/poll?hold=0.5", True),
        ("/", False),
    ]
