"""devrouter.fast: which requests take the protocol-level path, what it hands to aiohttp,
and the connection-level behaviour only it has (pooling, pipelining, hand-off mid-stream).

The behaviour rules themselves are tested in test_proxy.py and test_websocket.py, which run
every case on both engines.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest
from aiohttp import WSMsgType, web
from conftest import IO_TIMEOUT_S, RawBackend, RawHandler, make_config, read_head

from devrouter.core.model import AccessRule, Config, ListenAddr
from devrouter.core.state import State
from devrouter.fast.server import FastServer
from devrouter.http1.request_head import MAX_PLAN_HEAD_BYTES
from devrouter.http1.response_head import accept_for
from devrouter.server.app import Router


@pytest.fixture
async def fast_router() -> AsyncIterator[list[Router]]:
    routers: list[Router] = []
    yield routers
    for r in routers:
        await r.close()


async def start(routers: list[Router], config: Config) -> int:
    addr = ListenAddr("127.0.0.1", 0)
    r = Router(State(config), [addr], None, required=[addr], fast_path=True)
    await r.start()
    routers.append(r)
    return r.bound[0].port


def answering(*pieces: bytes, pause_s: float = 0.0) -> RawHandler:
    """A raw backend that records each request head and answers it with `pieces`, written
    one by one (`pause_s` apart), keeping the connection open."""

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
    ) -> None:
        while True:
            rb.received.append(await read_head(reader))
            for piece in pieces:
                writer.write(piece)
                await writer.drain()
                if pause_s:
                    await asyncio.sleep(pause_s)

    return handler


WS_KEY = "dGhlIHNhbXBsZSBub25jZQ=="  # RFC 6455's example key


def ws_handshake(key: str) -> bytes:
    return (
        b"GET /ws HTTP/1.1\r\nHost: app.localhost\r\nConnection: Upgrade\r\n"
        b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
        b"Sec-WebSocket-Key: " + key.encode() + b"\r\n\r\n"
    )


keepalive_backend = answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")


async def read_response(reader: asyncio.StreamReader) -> tuple[bytes, bytes]:
    head = await read_head(reader)
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    body = await asyncio.wait_for(reader.readexactly(length), IO_TIMEOUT_S)
    return head, body


async def get_ok(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, times: int, body: bytes = b"ok"
) -> list[bytes]:
    """`times` GETs of / on one connection, one after the other; each must be a 200 with
    `body`. Returns the response heads."""
    heads = []
    for _ in range(times):
        writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        head, got = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and got == body, head
        heads.append(head)
    return heads


async def test_sequential_requests_reuse_one_backend_connection(fast_router, raw_backend):
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    for _ in range(3):  # three client connections, ten requests each
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await get_ok(reader, writer, 10)
        writer.close()
    assert len(rb.received) == 30
    assert rb.connections == 1


async def test_request_trickled_one_byte_at_a_time(fast_router, raw_backend):
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for byte in b"GET /slow HTTP/1.1\r\nHost: app.localhost\r\n\r\n":
            writer.write(bytes([byte]))
            await writer.drain()
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        assert rb.received[0].startswith(b"GET /slow HTTP/1.1\r\n")
    finally:
        writer.close()


async def test_pipelined_posts_keep_their_bodies_and_order(fast_router, backend):
    async def echo(request: web.Request) -> web.Response:
        return web.Response(body=request.path.encode() + b":" + await request.read())

    app = web.Application()
    app.router.add_post("/{n}", echo)
    port = await start(fast_router, make_config({"app": await backend(app)}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"POST /1 HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5\r\n\r\nhello"
            b"POST /2 HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 6\r\n\r\nworld!"
        )
        assert (await read_response(reader))[1] == b"/1:hello"
        assert (await read_response(reader))[1] == b"/2:world!"
    finally:
        writer.close()


async def test_websocket_after_fast_requests_on_the_same_connection(fast_router, backend):
    """The hand-off to aiohttp happens at a request boundary, with the bytes read so far."""

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hi")

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                await sock.send_str(msg.data.upper())
        return sock

    app = web.Application()
    app.router.add_get("/", hello)
    app.router.add_get("/ws", ws)
    port = await start(fast_router, make_config({"app": await backend(app)}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n" + ws_handshake(WS_KEY))
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and body == b"hi"
        upgrade = await read_head(reader)
        assert upgrade.startswith(b"HTTP/1.1 101"), upgrade
        # one masked text frame, "abc"
        mask = b"\x01\x02\x03\x04"
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(b"abc"))
        writer.write(b"\x81\x83" + mask + payload)
        frame = await asyncio.wait_for(reader.readexactly(5), IO_TIMEOUT_S)
        assert frame == b"\x81\x03ABC"
    finally:
        writer.close()


HANDED_OFF = {
    "head": b"HEAD / HTTP/1.1\r\nHost: app.localhost\r\n\r\n",
    "chunked": b"POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"0\r\n\r\n",
    "expect": b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 2\r\n"
    b"Expect: 100-continue\r\n\r\nhi",
    "absolute-form": b"GET http://app.localhost/ HTTP/1.1\r\nHost: app.localhost\r\n\r\n",
    "unknown-name": b"GET / HTTP/1.1\r\nHost: nope.localhost\r\n\r\n",
    "own-page": b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n",
    "foreign-host": b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
    "two-hosts": b"GET / HTTP/1.1\r\nHost: app.localhost\r\nHost: app.localhost\r\n\r\n",
    "obs-fold": b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: 1\r\n 2\r\n\r\n",
    "cl-twice": b"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 1\r\n"
    b"Content-Length: 1\r\n\r\nx",
    "http10-no-host": b"GET / HTTP/1.0\r\n\r\n",
    "http2": b"GET / HTTP/2.0\r\nHost: app.localhost\r\n\r\n",
    "bad-hops": b"GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Devrouter-Hops: -1\r\n\r\n",
}


@pytest.mark.parametrize("name", sorted(HANDED_OFF))
async def test_unusual_requests_go_to_aiohttp(fast_router, raw_backend, monkeypatch, name):
    handoffs: list[int] = []
    real = FastServer.aio_protocol

    def counting(self: FastServer) -> asyncio.Protocol:
        handoffs.append(1)
        return real(self)

    monkeypatch.setattr(FastServer, "aio_protocol", counting)
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(HANDED_OFF[name])
        await asyncio.wait_for(reader.read(1), IO_TIMEOUT_S)  # some answer came back
    finally:
        writer.close()
    assert handoffs == [1]


async def test_plain_requests_stay_on_the_fast_path(fast_router, raw_backend, monkeypatch):
    handoffs: list[int] = []
    monkeypatch.setattr(
        FastServer,
        "aio_protocol",
        lambda self: handoffs.append(1),  # type: ignore
    )
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for req in (
            b"GET /a?b=c HTTP/1.1\r\nHost: APP.localhost:7355\r\nAccept: */*\r\n\r\n",
            b"POST /p HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\n\r\nabc",
            b"DELETE /d HTTP/1.1\r\nHost: app.localhost\r\nConnection: keep-alive\r\n\r\n",
        ):
            writer.write(req)
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()
    assert handoffs == []


async def test_route_timeout_holds_for_a_later_exchange_on_a_keep_alive_connection(
    fast_router, raw_backend
):
    """The deadline timer is one per client connection, armed by the first exchange and
    re-armed by its own check: a hung second request must still get its 504."""

    async def first_fast_then_hang(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
    ) -> None:
        head = await read_head(reader)
        rb.received.append(head)
        if len(rb.received) == 1:
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            head = await read_head(reader)
            rb.received.append(head)
        await reader.read()  # hang until the router gives up

    rb = await raw_backend(first_fast_then_hang)
    port = await start(fast_router, make_config({"app": {"port": rb.port, "timeout": 0.6}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET /1 HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        await asyncio.sleep(0.4)  # the first exchange's deadline passes mid-way through this one
        writer.write(b"GET /2 HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 504"), head
        assert len(rb.received) == 2
    finally:
        writer.close()


async def test_authorized_requests_stay_on_the_fast_path_and_denials_go_to_aiohttp(
    fast_router, raw_backend, monkeypatch
):
    """A protected route costs no hand-off when the secret is right; the 401 (and its page)
    is aiohttp's. The router's Authorization is cut from the head in place."""
    handoffs: list[int] = []
    real = FastServer.aio_protocol

    def counting(self: FastServer) -> asyncio.Protocol:
        handoffs.append(1)
        return real(self)

    monkeypatch.setattr(FastServer, "aio_protocol", counting)
    token = "fast-path-token-0123456789"
    rb = await raw_backend(keepalive_backend)
    config = make_config({"app": rb.port})
    config = replace(config, access=AccessRule(env="T", line=1, secret=token))
    port = await start(fast_router, config)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(
            b"GET /a HTTP/1.1\r\nHost: app.localhost\r\nAuthorization: Bearer "
            + token.encode()
            + b"\r\nAccept: */*\r\n\r\n"
        )
        head, body = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
        assert handoffs == []
        sent = rb.received[-1].lower()
        assert b"authorization" not in sent and b"accept: */*\r\n" in sent
        writer.write(b"GET /b HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 401")
        assert handoffs == [1]
        assert len(rb.received) == 1
    finally:
        writer.close()


async def test_bytes_past_a_content_length_body_are_cut_and_the_connection_not_reused(
    fast_router, raw_backend
):
    """The response pattern path counts the body down: what a backend sends past its
    Content-Length never reaches the client, and that backend connection is not pooled."""

    rb = await raw_backend(
        answering(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\n")
    )
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await get_ok(reader, writer, 3)  # nothing stray arrived before the third head
    finally:
        writer.close()
    assert rb.connections == 3


@pytest.mark.parametrize(
    ("response", "pooled"),
    [
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nok", True),
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok", False),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: Keep-Alive\r\n\r\nok", True),
    ],
    ids=["1.0", "1.0-keep-alive", "1.1-close", "1.1"],
)
async def test_backend_keep_alive_decides_pooling(fast_router, raw_backend, response, pooled):
    rb = await raw_backend(answering(response))
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for head in await get_ok(reader, writer, 3):
            assert b"connection:" not in head.lower()  # hop-by-hop, the router's own
    finally:
        writer.close()
    assert rb.connections == (1 if pooled else 3)


async def test_response_head_split_over_reads_is_relayed(fast_router, raw_backend):
    pieces = (b"HTTP/1.1 200 OK\r\nContent-", b"Length: 5\r\n\r", b"\nhel", b"lo")
    rb = await raw_backend(answering(*pieces, pause_s=0.02))
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        await get_ok(reader, writer, 2, b"hello")
    finally:
        writer.close()
    assert rb.connections == 1


async def test_request_fields_are_forwarded_in_order_with_the_routers_own_cut(
    fast_router, raw_backend
):
    """The field block is forwarded as it came, minus whole lines: hop-by-hop fields, the
    client's forwarding fields, what Connection names, and the router's own credential."""
    rb = await raw_backend(keepalive_backend)
    token = "ordered-fields-token-0123456789"
    config = make_config({"app": rb.port})
    config = replace(config, access=AccessRule(env="T", line=1, secret=token))
    port = await start(fast_router, config)
    head = (
        f"GET /p?q=1 HTTP/1.1\r\n"
        f"Authorization: Bearer {token}\r\n"
        f"X-Forwarded-For: 10.9.8.7\r\n"
        f"Host: App.localhost:7355\r\n"
        f"Connection: keep-alive, X-Drop-Me\r\n"
        f"X-Drop-Me: 1\r\n"
        f"Accept: */*\r\n"
        f"X-Forwarded-Host: evil.example\r\n"
        f"keep-alive: timeout=5\r\n"
        f"Cookie: a=1\r\n"
        f"X-Last:  spaced value \r\n"
        f"\r\n"
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head)
        response, body = await read_response(reader)
        assert response.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()
    lines = rb.received[0].split(b"\r\n")
    assert lines[0] == b"GET /p?q=1 HTTP/1.1"
    fields = [line for line in lines[1:] if line]
    assert fields[:4] == [
        b"Host: App.localhost:7355",
        b"Accept: */*",
        b"Cookie: a=1",
        b"X-Last:  spaced value ",
    ]
    assert fields[4] == b"X-Forwarded-For: 10.9.8.7, 127.0.0.1"
    assert b"X-Forwarded-Host: App.localhost:7355" in fields
    names = [f.split(b":")[0].lower() for f in fields]
    for gone in (b"authorization", b"connection", b"x-drop-me", b"keep-alive"):
        assert gone not in names
    assert names.count(b"x-forwarded-host") == 1


async def test_websocket_frames_are_relayed_byte_for_byte(fast_router, raw_backend):
    """After the 101 the fast path relays bytes: fragments, pings and an unknown extension's
    bits reach the other side as sent, even with frame headers split over reads, and the
    exchange is counted as one WebSocket that ends when the backend closes."""
    key = WS_KEY
    accept = accept_for(key.encode()).decode()
    got = bytearray()
    done = asyncio.Event()
    # the backend's side: a fragmented text message, a ping, then a close frame
    from_backend = b"\x01\x02he" + b"\x80\x03llo" + b"\x89\x00" + b"\x88\x02\x03\xe8"

    async def ws_backend(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
    ) -> None:
        rb.received.append(await read_head(reader))
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept.encode() + b"\r\n\r\n"
        )
        while len(got) < len(from_client):
            got.extend(await asyncio.wait_for(reader.read(65536), IO_TIMEOUT_S))
        writer.write(from_backend)
        await writer.drain()
        done.set()
        await asyncio.sleep(0.05)

    mask = b"\x01\x02\x03\x04"

    def masked(first: int, payload: bytes) -> bytes:
        body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        return bytes((first, 0x80 | len(payload))) + mask + body

    # the client's side: a fragmented binary message with RSV1 set on its first frame (as a
    # compression extension would), and a ping
    from_client = masked(0x42, b"abc") + masked(0x80, b"def") + masked(0x89, b"")
    rb = await raw_backend(ws_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    router = fast_router[-1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(ws_handshake(key))
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 101"), head
        assert router.metrics.routes["app"].open_websockets == 1
        for i in range(len(from_client)):  # one byte at a time: headers split over reads
            writer.write(from_client[i : i + 1])
            await writer.drain()
        await asyncio.wait_for(done.wait(), IO_TIMEOUT_S)
        relayed = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)  # until the router closes
    finally:
        writer.close()
    assert bytes(got) == from_client
    assert relayed == from_backend
    assert b"connection: upgrade\r\nupgrade: websocket\r\n" in rb.received[0].lower()
    for _ in range(100):
        if router.metrics.routes["app"].open_websockets == 0:
            break
        await asyncio.sleep(0.02)
    stats = router.metrics.routes["app"]
    assert stats.open_websockets == 0 and stats.requests == {"1xx": 1}


async def test_websocket_frames_sent_with_the_handshake_reach_the_backend(fast_router, backend):
    """A client may send its first frames right behind the handshake, before the 101: they
    wait in the router and follow the handshake to the backend."""

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            await sock.send_str(msg.data.upper())
        return sock

    app = web.Application()
    app.router.add_get("/ws", ws)
    port = await start(fast_router, make_config({"app": await backend(app)}))
    mask = b"\x01\x02\x03\x04"
    frame = b"\x81\x83" + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(b"abc"))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(ws_handshake(WS_KEY) + frame + frame)
        head = await read_head(reader)
        assert head.startswith(b"HTTP/1.1 101"), head
        got = await asyncio.wait_for(reader.readexactly(10), IO_TIMEOUT_S)
        assert got == b"\x81\x03ABC" * 2
    finally:
        writer.close()


async def test_websocket_101_split_over_reads_is_still_a_handshake(fast_router, raw_backend):
    key = WS_KEY
    head = (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_for(key.encode()) + b"\r\n\r\n"
    )
    rb = await raw_backend(answering(head[:2], head[2:30], head[30:] + b"\x81\x02hi", pause_s=0.02))
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(ws_handshake(key))
        got = await read_head(reader)
        assert got.startswith(b"HTTP/1.1 101"), got
        assert await asyncio.wait_for(reader.readexactly(4), IO_TIMEOUT_S) == b"\x81\x02hi"
    finally:
        writer.close()


# --- the per-connection memo of the last field block ---------------------------------------

SAME_BLOCK = b"\r\nHost: app.localhost\r\nX-Trace: 1\r\nConnection: keep-alive, X-Trace\r\n\r\n"


async def test_a_repeated_field_block_is_forwarded_the_same_with_each_request_line(
    fast_router, raw_backend
):
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for line in (b"GET /a HTTP/1.1", b"GET /b?x=1 HTTP/1.1", b"DELETE /c HTTP/1.1"):
            writer.write(line + SAME_BLOCK)
            head, body = await read_response(reader)
            assert head.startswith(b"HTTP/1.1 200") and body == b"ok"
    finally:
        writer.close()
    lines = [h.split(b"\r\n", 1) for h in rb.received]
    assert [first for first, _ in lines] == [
        b"GET /a HTTP/1.1",
        b"GET /b?x=1 HTTP/1.1",
        b"DELETE /c HTTP/1.1",
    ]
    assert lines[0][1] == lines[1][1] == lines[2][1]  # one rewrite of the block, reused
    assert b"x-trace" not in lines[2][1].lower()  # named by Connection: still cut
    assert b"X-Forwarded-For: 127.0.0.1\r\n" in lines[2][1]


async def test_the_memo_holds_for_one_config_only(fast_router, raw_backend):
    first = await raw_backend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfirst"))
    second = await raw_backend(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecond"))
    port = await start(fast_router, make_config({"app": first.port}))
    state = fast_router[0].state
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"GET / HTTP/1.1" + SAME_BLOCK)
        assert (await read_response(reader))[1] == b"first"
        state.swap(make_config({"app": second.port}))  # a reload moves the route
        writer.write(b"GET / HTTP/1.1" + SAME_BLOCK)
        assert (await read_response(reader))[1] == b"second"
        state.swap(make_config({"other": second.port}))  # and one removes it: aiohttp's 404
        writer.write(b"GET / HTTP/1.1" + SAME_BLOCK)
        head, _ = await read_response(reader)
        assert head.startswith(b"HTTP/1.1 404")
    finally:
        writer.close()


async def test_a_repeated_block_with_a_bad_or_long_request_line_goes_to_aiohttp(
    fast_router, raw_backend
):
    rb = await raw_backend(keepalive_backend)
    port = await start(fast_router, make_config({"app": rb.port}))
    for bad, status in (
        (b"GET /a\x01 HTTP/1.1", b"400"),
        (b"GET /" + b"a" * 9000 + b" HTTP/1.1", b"4"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /ok HTTP/1.1" + SAME_BLOCK)
            assert (await read_response(reader))[1] == b"ok"
            writer.write(bad + SAME_BLOCK)
            head = await read_head(reader)
            assert head.split(b" ")[1].startswith(status), head[:40]  # aiohttp's answer
        finally:
            writer.close()
    assert len(rb.received) == 2  # neither bad request reached the backend


async def test_response_heads_repeated_changed_and_chunked_on_one_backend_connection(
    fast_router, raw_backend
):
    answers = [
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\none",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\ntwo",
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: keep-alive\r\n\r\nthree",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nfour\r\n0\r\n\r\n",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nsix",
    ]

    async def handler(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
    ) -> None:
        for answer in answers:
            rb.received.append(await read_head(reader))
            writer.write(answer)
            await writer.drain()

    rb = await raw_backend(handler)
    port = await start(fast_router, make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    got = []
    try:
        for _ in answers:
            writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
            if answers[len(got)].find(b"chunked") > 0:
                await read_head(reader)
                got.append(await asyncio.wait_for(reader.readuntil(b"0\r\n\r\n"), IO_TIMEOUT_S))
            else:
                head, body = await read_response(reader)
                got.append(body)
                if b" 204 " in head:  # no Content-Length may go with a 204
                    assert b"content-length" not in head.lower()
    finally:
        writer.close()
    assert got == [b"one", b"two", b"three", b"4\r\nfour\r\n0\r\n\r\n", b"", b"six"]
    assert rb.connections == 1


async def test_an_upload_that_keeps_moving_outlasts_the_route_timeout(fast_router, raw_backend):
    """The route timeout is the backend's time to answer: body bytes sent restart it."""

    async def answer_after_the_body(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
    ) -> None:
        rb.received.append(await read_head(reader))
        body = await asyncio.wait_for(reader.readexactly(5), 5)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n" + body)
        await writer.drain()
        await reader.read()

    rb = await raw_backend(answer_after_the_body)
    port = await start(fast_router, make_config({"app": {"port": rb.port, "timeout": 0.5}}))
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(b"POST /up HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5\r\n\r\n")
        for byte in b"hello":  # 1.25 s in all, 0.25 s apart: each piece restarts the timeout
            await asyncio.sleep(0.25)
            writer.write(bytes([byte]))
        head, body = await asyncio.wait_for(read_response(reader), 5)
        assert head.startswith(b"HTTP/1.1 200") and body == b"hello"
    finally:
        writer.close()


async def test_a_large_head_is_relayed_without_being_kept(fast_router, raw_backend):
    big = b"X-Pad: " + b"p" * MAX_PLAN_HEAD_BYTES + b"\r\n"
    answer = b"HTTP/1.1 200 OK\r\n" + big + b"Content-Length: 2\r\n\r\nok"
    rb = await raw_backend(answering(answer))
    port = await start(fast_router, make_config({"app": rb.port}))
    runner = fast_router[0]._runner
    assert runner is not None and isinstance(runner.server, FastServer)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for _ in range(2):
            writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n" + big + b"\r\n")
            head, body = await read_response(reader)
            assert big in head and body == b"ok"
        (client,) = runner.server.fast_connections
        assert client.plan is None  # a head over the bound is checked each time
        (upstream,) = [c for conns in runner.server.pool.idle.values() for c in conns]
        assert upstream.memo is None
        writer.write(b"GET / HTTP/1.1\r\nHost: app.localhost\r\n\r\n")
        await read_response(reader)
        assert client.plan is not None  # a small one is kept
    finally:
        writer.close()
    assert all(big in h for h in rb.received[:2])
