"""The benchmark's aiohttp backend: `python -m benchmarks.backend --port PORT`.

One application serves every path the workloads use, so it is both the "app" backend (the
slow page, WebSocket echo and server-sent events, which nginx cannot serve) and the fallback
"fast" backend when nginx is not installed:

    GET  /small    100 bytes
    GET  /1m       1 MiB
    POST /upload   reads the whole body, then answers 100 bytes
    GET  /slow     ~1 ms of Python work (JSON rendering), then a ~2 KB JSON page
    GET  /ws       WebSocket echo
    GET  /sse      one event at once, then a comment every second until the client leaves
    GET  /info     what the calibration of /slow measured, as JSON

It listens on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

from aiohttp import WSMsgType, web

SMALL_BODY = b"x" * 99 + b"\n"
LARGE_BODY = bytes(range(256)) * 4096  # 1 MiB
#: Target CPU time of one /slow request, in seconds.
SLOW_WORK_S = 0.001

_ITEMS = [
    {"id": i, "name": f"item {i}", "tags": ["a", "b", "c"], "price": i * 1.25} for i in range(20)
]


def _unit_of_work() -> str:
    return json.dumps(_ITEMS)


def calibrate(target_s: float = SLOW_WORK_S) -> tuple[int, float]:
    """How many units of work take `target_s` on this machine now; and what one pass took."""
    samples = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(50):
            _unit_of_work()
        samples.append((time.perf_counter() - t0) / 50)
    per_unit = statistics.median(samples)
    n = max(1, round(target_s / per_unit))
    return n, n * per_unit


def make_app(work_units: int, work_s: float) -> web.Application:
    async def small(request: web.Request) -> web.Response:
        return web.Response(body=SMALL_BODY, content_type="text/plain")

    async def large(request: web.Request) -> web.Response:
        return web.Response(body=LARGE_BODY, content_type="application/octet-stream")

    async def upload(request: web.Request) -> web.Response:
        size = 0
        while chunk := await request.content.readany():
            size += len(chunk)
        return web.Response(body=SMALL_BODY, content_type="text/plain")

    async def slow(request: web.Request) -> web.Response:
        page = ""
        for _ in range(work_units):
            page = _unit_of_work()
        return web.Response(text=page[:2048], content_type="application/json")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type == WSMsgType.TEXT:
                await sock.send_str(msg.data)
            elif msg.type == WSMsgType.BINARY:
                await sock.send_bytes(msg.data)
        return sock

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-cache",
                "X-Accel-Buffering": "no",  # tells nginx not to buffer this response
            }
        )
        await resp.prepare(request)
        await resp.write(b"data: hello\n\n")
        for _ in range(30):  # the client leaves after the first event; this is a bound
            await asyncio.sleep(1)
            await resp.write(b": ping\n\n")
        return resp

    async def info(request: web.Request) -> web.Response:
        return web.json_response({"slow_work_units": work_units, "slow_work_us": work_s * 1e6})

    app = web.Application(client_max_size=1024**3)
    app.router.add_get("/small", small)
    app.router.add_get("/1m", large)
    app.router.add_post("/upload", upload)
    app.router.add_get("/slow", slow)
    app.router.add_get("/ws", ws)
    app.router.add_get("/sse", sse)
    app.router.add_get("/info", info)
    return app


async def serve(port: int) -> None:
    units, work_s = calibrate()
    runner = web.AppRunner(make_app(units, work_s), access_log=None, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port, backlog=1024)
    await site.start()
    try:
        await asyncio.Event().wait()
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:
        asyncio.run(serve(args.port))
    else:
        uvloop.run(serve(args.port))


if __name__ == "__main__":
    main()
