"""devrouter.server.limits and the per-route limit: how many client connections the router keeps
open, and how many requests, streams and WebSockets one route may have in flight.

Both limits are tested through a real router on both engines: a full route answers 503 while
other routes keep working, a full router answers new connections with a 503 while the open
ones keep working, and both recover when connections close.
"""

from __future__ import annotations

import asyncio
import resource
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, make_config, read_head

from devrouter.config.schema import parse_config
from devrouter.core.errors import ConfigError
from devrouter.core.model import (
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ROUTE,
    DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB,
    Route,
    Upstream,
)
from devrouter.core.state import State
from devrouter.server.limits import RESERVED_FDS, busy_response, connection_budget, raise_fd_limit

TIMEOUT = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)


async def eventually(check: Callable[[], Awaitable[bool]], timeout_s: float = 5.0) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if await check():
            return True
        await asyncio.sleep(0.05)
    return await check()


# --- config and budget ---------------------------------------------------------------------


def test_limits_in_the_config_and_their_defaults() -> None:
    config = parse_config(
        "max_connections: 100\nmax_connections_per_route: 20\n"
        "routes:\n  api: 1\n  web:\n    port: 2\n    max_connections: 5\n",
        "c.yaml",
        own_ports=(),
    )
    assert config.max_connections == 100
    state = State(config)
    state.set_dynamic([Route("run", Upstream(3), source="run")])
    table = state.snapshot.table
    limits = {r.name: r.max_connections for r in table.routes}
    assert limits == {"api": 20, "web": 5, "run": 20}
    default = State(parse_config("routes:\n  api: 1\n", "c.yaml", own_ports=()))
    assert default.snapshot.config.max_connections == DEFAULT_MAX_CONNECTIONS
    (route,) = default.snapshot.table.routes
    assert route.max_connections == DEFAULT_MAX_CONNECTIONS_PER_ROUTE


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("max_connections: 0\nroutes: {}\n", 1),
        ("max_connections: -3\nroutes: {}\n", 1),
        ("max_connections: many\nroutes: {}\n", 1),
        ("max_connections_per_route: 1.5\nroutes: {}\n", 1),
        ("routes:\n  api:\n    port: 1\n    max_connections: true\n", 4),
        ("max_websocket_message_mib: 0\nroutes: {}\n", 1),
        ("routes:\n  api:\n    port: 1\n    max_websocket_message_mib: 0.5\n", 4),
    ],
)
def test_bad_limits_are_one_line_with_their_place(text: str, line: int) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", own_ports=())
    assert str(info.value).startswith(f"c.yaml:{line}: ")
    assert "whole number above 0" in str(info.value)


def test_websocket_message_limit_in_the_config_and_its_default() -> None:
    config = parse_config(
        "max_websocket_message_mib: 16\nroutes:\n  api: 1\n"
        "  big:\n    port: 2\n    max_websocket_message_mib: 64\n",
        "c.yaml",
        own_ports=(),
    )
    state = State(config)
    state.set_dynamic([Route("run", Upstream(3), source="run")])
    limits = {r.name: r.max_websocket_message_mib for r in state.snapshot.table.routes}
    assert limits == {"api": 16, "big": 64, "run": 16}
    default = State(parse_config("routes:\n  api: 1\n", "c.yaml", own_ports=()))
    (route,) = default.snapshot.table.routes
    assert route.max_websocket_message_mib == DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB == 4


def test_fd_limit_is_raised_and_the_budget_fits_in_it() -> None:
    before, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    soft = raise_fd_limit()
    assert soft >= min(before, soft)  # never lowered
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[1] == hard  # the hard limit untouched
    assert connection_budget(1024) == (1024 - RESERVED_FDS) // 2
    assert connection_budget(10) == 16  # never nothing at all


def test_busy_response_is_complete_http() -> None:
    raw = busy_response(7, 7, "/x/devrouter.yaml")
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 503 ")
    assert b"Connection: close" in head and b"Retry-After: 2" in head
    assert f"Content-Length: {len(body)}".encode() in head
    assert b"max_connections: 7" in body and b"/x/devrouter.yaml" in body


# --- through the router --------------------------------------------------------------------


class Streams:
    """A backend of endless server-sent event streams, and a fast route beside them."""

    def __init__(self) -> None:
        self.open = 0
        self.release = asyncio.Event()

    def app(self) -> web.Application:
        async def events(request: web.Request) -> web.StreamResponse:
            resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
            await resp.prepare(request)
            await resp.write(b"data: hello\n\n")
            self.open += 1
            try:
                await self.release.wait()
            finally:
                self.open -= 1
            return resp

        async def ok(request: web.Request) -> web.Response:
            return web.Response(text="ok")

        app = web.Application()
        app.router.add_get("/events", events)
        app.router.add_get("/", ok)
        return app


@pytest.fixture
async def sse_clients() -> AsyncIterator[list[asyncio.StreamWriter]]:
    writers: list[asyncio.StreamWriter] = []
    yield writers
    for w in writers:
        w.close()


async def open_stream(port: int, host: str, writers: list[asyncio.StreamWriter]) -> bytes:
    """Open one event stream through the router; the response head (the stream stays open)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writers.append(writer)
    writer.write(f"GET /events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    return await read_head(reader)


async def status(port: int, host: str) -> int:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(f"http://127.0.0.1:{port}/", headers={"Host": host}) as resp,
    ):
        await resp.read()
        return resp.status


async def test_full_route_is_503_and_other_routes_keep_working(router, backend, sse_clients):
    streams = Streams()
    port = await backend(streams.app())
    r = await router(make_config({"busy": {"port": port, "max_connections": 3}, "calm": port}))
    for _ in range(3):
        head = await open_stream(r.port, "busy.localhost", sse_clients)
        assert head.startswith(b"HTTP/1.1 200"), head
    assert r.router.metrics.in_flight("busy") == 3

    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(f"http://127.0.0.1:{r.port}/", headers={"Host": "busy.localhost"}) as resp,
    ):
        text = await resp.text()
        assert resp.status == 503
        assert resp.headers["Retry-After"] == "2"
        assert "max_connections" in text and "'busy'" in text
    assert await status(r.port, "calm.localhost") == 200

    sse_clients.pop().close()  # one stream ends: the route has room again

    async def room() -> bool:
        return await status(r.port, "busy.localhost") == 200

    assert await eventually(room)
    streams.release.set()


async def test_full_router_answers_new_connections_503_and_keeps_the_open_ones(router, backend):
    streams = Streams()
    port = await backend(streams.app())
    r = await router(make_config({"api": port}, max_connections=4))
    conns = [await asyncio.open_connection("127.0.0.1", r.port) for _ in range(4)]
    try:
        for reader, writer in conns:  # four keep-alive clients, each served once
            writer.write(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
            head = await read_head(reader)
            assert head.startswith(b"HTTP/1.1 200"), head
            await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT_S)

        reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)  # then it closes
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"max_connections: 4" in answer

        reader, writer = conns[0]  # the open ones are still served
        writer.write(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
        assert (await read_head(reader)).startswith(b"HTTP/1.1 200")
        await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT_S)

        conns.pop()[1].close()  # one leaves: a new client gets in

        async def room() -> bool:
            return await status(r.port, "api.localhost") == 200

        assert await eventually(room)
    finally:
        for _, writer in conns:
            writer.close()


async def test_full_router_answers_503_under_the_cli_on_uvloop(cli, tmp_path):
    """The 503 of a full router through the real CLI, whose loop is uvloop: its transports
    are not asyncio.Transport instances, which the refusal once asserted (and then failed)."""
    config = tmp_path / "devrouter.yaml"
    config.write_text("max_connections: 2\nroutes:\n  api: 1\n")
    p = cli("serve", "--config", str(config), "--no-access-log")
    held = [await asyncio.open_connection("127.0.0.1", p.port) for _ in range(2)]
    try:
        for reader, writer in held:  # each is accepted (and counted) before the next
            writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
            assert (await read_head(reader)).startswith(b"HTTP/1.1 200")
        reader, writer = await asyncio.open_connection("127.0.0.1", p.port)
        answer = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)  # then it closes
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert b"max_connections: 2" in answer
    finally:
        for _, writer in held:
            writer.close()
