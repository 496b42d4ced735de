"""WebSocket bridging through the router (devrouter/websocket.py).

Real aiohttp backends and, where the wire format matters (fragmented frames, abrupt drops,
handshake headers), raw-socket clients or backends that speak RFC 6455 by hand.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from conftest import IO_TIMEOUT_S, RawBackend, free_port, make_config, read_head

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
MIB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


def accept_for(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()


def encode_frame(opcode: int, payload: bytes = b"", *, fin: bool = True, mask: bool) -> bytes:
    """One RFC 6455 frame; clients mask, servers do not."""
    b0 = (0x80 if fin else 0) | opcode
    m = 0x80 if mask else 0
    n = len(payload)
    if n < 126:
        head = bytes([b0, m | n])
    elif n < 65536:
        head = bytes([b0, m | 126]) + n.to_bytes(2, "big")
    else:
        head = bytes([b0, m | 127]) + n.to_bytes(8, "big")
    if not mask:
        return head + payload
    key = os.urandom(4)
    masked = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return head + key + masked


async def read_frame(reader: asyncio.StreamReader) -> tuple[bool, int, bytes]:
    """Read one frame: (fin, opcode, unmasked payload)."""

    async def exactly(n: int) -> bytes:
        return await asyncio.wait_for(reader.readexactly(n), IO_TIMEOUT_S)

    b0, b1 = await exactly(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(await exactly(2), "big")
    elif n == 127:
        n = int.from_bytes(await exactly(8), "big")
    key = await exactly(4) if b1 & 0x80 else None
    payload = await exactly(n) if n else b""
    if key is not None:
        payload = bytes(b ^ key[i % 4] for i, b in enumerate(payload))
    return bool(b0 & 0x80), b0 & 0x0F, payload


def header_value(head: bytes, name: str) -> str | None:
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            return v.strip()
    return None


def header_values(head: bytes, name: str) -> list[str]:
    out = []
    for line in head.decode("latin-1").split("\r\n")[1:]:
        k, sep, v = line.partition(":")
        if sep and k.strip().lower() == name.lower():
            out.append(v.strip())
    return out


async def raw_ws_client(
    port: int, host: str = "api.localhost", path: str = "/ws", extra: str = ""
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, bytes, str]:
    """Open a TCP connection to the router and send a WebSocket handshake by hand.
    Returns (reader, writer, response head, the key sent)."""
    key = base64.b64encode(os.urandom(16)).decode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        (
            f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    await writer.drain()
    head = await read_head(reader)
    return reader, writer, head, key


async def raw_ws_server_handshake(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, rb: RawBackend
) -> bytes:
    """The backend side of a handshake, by hand: read the request, answer 101."""
    head = await read_head(reader)
    rb.received.append(head)
    key = header_value(head, "Sec-WebSocket-Key")
    assert key is not None
    writer.write(
        (
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_for(key)}\r\n\r\n"
        ).encode()
    )
    await writer.drain()
    return head


def ws_session() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))


async def ws_connect(
    s: aiohttp.ClientSession, port: int, name: str = "api", path: str = "/ws", **kw: Any
) -> aiohttp.ClientWebSocketResponse:
    headers = {"Host": f"{name}.localhost", **kw.pop("headers", {})}
    kw.setdefault("compress", 0)
    kw.setdefault("max_msg_size", 8 * MIB)
    kw.setdefault("timeout", aiohttp.ClientWSTimeout(ws_receive=IO_TIMEOUT_S, ws_close=5))
    return await s.ws_connect(f"http://127.0.0.1:{port}{path}", headers=headers, **kw)


def echo_app(
    seen: list[tuple[WSMsgType, Any]] | None = None,
    requests: list[web.Request] | None = None,
    **ws_kw: Any,
) -> web.Application:
    """/ws echoes every message with its type; records what it received."""

    async def handler(request: web.Request) -> web.WebSocketResponse:
        if requests is not None:
            requests.append(request)
        ws = web.WebSocketResponse(max_msg_size=8 * MIB, **ws_kw)
        await ws.prepare(request)
        async for msg in ws:
            if seen is not None:
                seen.append((msg.type, msg.data))
            if msg.type is WSMsgType.TEXT:
                await ws.send_str(msg.data)
            elif msg.type is WSMsgType.BINARY:
                await ws.send_bytes(msg.data)
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


Starter = Callable[..., Awaitable[Any]]


async def echo_router(backend: Starter, router: Starter, **kw: Any) -> tuple[Any, int]:
    port = await backend(echo_app(**kw))
    r = await router(make_config({"api": port}))
    return r, port


# --- messages -----------------------------------------------------------------------------


MESSAGES = [
    pytest.param(WSMsgType.TEXT, "hello, wörld ✓", id="text"),
    pytest.param(WSMsgType.BINARY, bytes(range(256)) * 4, id="binary"),
    pytest.param(WSMsgType.TEXT, "", id="empty-text"),
    pytest.param(WSMsgType.BINARY, b"", id="empty-binary"),
    pytest.param(WSMsgType.TEXT, "x" * MIB, id="1MiB-text"),
    pytest.param(WSMsgType.BINARY, os.urandom(MIB), id="1MiB-binary"),
]


@pytest.mark.parametrize(("kind", "data"), MESSAGES)
async def test_message_passes_both_ways_unchanged(backend, router, kind, data):
    seen: list[tuple[WSMsgType, Any]] = []
    r, _ = await echo_router(backend, router, seen=seen)
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        if kind is WSMsgType.TEXT:
            await ws.send_str(data)
        else:
            await ws.send_bytes(data)
        msg = await ws.receive()
        assert msg.type is kind
        assert msg.data == data
        await ws.close()
    assert seen == [(kind, data)]


async def test_many_messages_keep_order(backend, router):
    seen: list[tuple[WSMsgType, Any]] = []
    r, _ = await echo_router(backend, router, seen=seen)
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        sent = [
            (WSMsgType.TEXT, f"m{i}") if i % 2 else (WSMsgType.BINARY, b"b%d" % i)
            for i in range(50)
        ]
        for kind, data in sent:
            await (ws.send_str(data) if kind is WSMsgType.TEXT else ws.send_bytes(data))
        got = []
        for _ in sent:
            msg = await ws.receive()
            got.append((msg.type, msg.data))
        await ws.close()
    assert got == sent
    assert seen == sent


async def test_fragmented_message_from_client(backend, router):
    """A raw client sends one text and one binary message in three fragments each, with a
    ping between fragments: the backend gets each whole, the echo comes back whole."""
    seen: list[tuple[WSMsgType, Any]] = []
    r, _ = await echo_router(backend, router, seen=seen)
    reader, writer, head, key = await raw_ws_client(r.port)
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header_value(head, "Sec-WebSocket-Accept") == accept_for(key)
        writer.write(
            encode_frame(OP_TEXT, b"hel", fin=False, mask=True)
            + encode_frame(OP_CONT, b"lo ", fin=False, mask=True)
            + encode_frame(OP_PING, b"p", mask=True)
            + encode_frame(OP_CONT, "wörld".encode(), fin=True, mask=True)
            + encode_frame(OP_BINARY, b"\x00\x01", fin=False, mask=True)
            + encode_frame(OP_CONT, b"", fin=False, mask=True)
            + encode_frame(OP_CONT, b"\x02\xff", fin=True, mask=True)
        )
        await writer.drain()
        data_frames = []
        control = []
        while len(data_frames) < 2:
            fin, op, payload = await read_frame(reader)
            if op in (OP_PING, OP_PONG):
                control.append((op, payload))
                continue
            # Frames from the router may be fragmented too; reassemble.
            assert op in (OP_TEXT, OP_BINARY), (op, payload)
            while not fin:
                fin, cop, more = await read_frame(reader)
                assert cop == OP_CONT
                payload += more
            data_frames.append((op, payload))
        assert data_frames == [(OP_TEXT, "hello wörld".encode()), (OP_BINARY, b"\x00\x01\x02\xff")]
        writer.write(encode_frame(OP_CLOSE, (1000).to_bytes(2, "big"), mask=True))
        await writer.drain()
        while True:
            _, op, payload = await read_frame(reader)
            if op == OP_CLOSE:
                assert payload[:2] == (1000).to_bytes(2, "big")
                break
    finally:
        writer.close()
    assert seen == [(WSMsgType.TEXT, "hello wörld"), (WSMsgType.BINARY, b"\x00\x01\x02\xff")]


async def test_fragmented_message_from_backend(raw_backend, router):
    """A raw backend sends a fragmented text message (with a ping in the middle) and a
    fragmented binary one; the client receives each whole, and the backend receives the
    client's reply intact (masked, as a client frame must be)."""
    got_from_client: asyncio.Future[tuple[int, bytes]] = asyncio.get_running_loop().create_future()

    async def handler(reader, writer, rb):
        await raw_ws_server_handshake(reader, writer, rb)
        writer.write(
            encode_frame(OP_TEXT, b"frag", fin=False, mask=False)
            + encode_frame(OP_PING, b"x", mask=False)
            + encode_frame(OP_CONT, b"men", fin=False, mask=False)
            + encode_frame(OP_CONT, b"ted", fin=True, mask=False)
            + encode_frame(OP_BINARY, b"\x01", fin=False, mask=False)
            + encode_frame(OP_CONT, b"\x02", fin=True, mask=False)
        )
        await writer.drain()
        while True:
            _, op, payload = await read_frame(reader)
            if op in (OP_TEXT, OP_BINARY):
                got_from_client.set_result((op, payload))
                break
        # wait for the close and answer it
        while True:
            _, op, payload = await read_frame(reader)
            if op == OP_CLOSE:
                writer.write(encode_frame(OP_CLOSE, payload[:2], mask=False))
                await writer.drain()
                return

    rb = await raw_backend(handler)
    r = await router(make_config({"api": rb.port}))
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "fragmented")
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.BINARY, b"\x01\x02")
        await ws.send_str("thanks")
        assert await asyncio.wait_for(got_from_client, IO_TIMEOUT_S) == (OP_TEXT, b"thanks")
        await ws.close()


async def test_compression_offered_by_client_still_round_trips(backend, router):
    """A browser offers permessage-deflate and the backend would accept it; whatever is
    negotiated, messages must arrive intact."""
    r, _ = await echo_router(backend, router, compress=True)
    async with ws_session() as s:
        ws = await ws_connect(s, r.port, compress=15)
        text = "abc" * 10000
        await ws.send_str(text)
        msg = await ws.receive()
        assert (msg.type, msg.data) == (WSMsgType.TEXT, text)
        await ws.close()


# --- handshake ----------------------------------------------------------------------------


def subprotocol_app(choose: tuple[str, ...]) -> web.Application:
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(protocols=choose)
        await ws.prepare(request)
        await ws.send_str(f"protocol={ws.ws_protocol}")
        async for _ in ws:
            pass
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    return app


async def test_subprotocol_selected_by_backend_reaches_client(backend, router):
    port = await backend(subprotocol_app(("vite-hmr",)))
    r = await router(make_config({"api": port}))
    async with ws_session() as s:
        ws = await ws_connect(s, r.port, protocols=("vite-hmr",))
        assert ws.protocol == "vite-hmr"
        msg = await ws.receive()
        assert msg.data == "protocol=vite-hmr"
        await ws.close()
    # And on the wire: the 101 carries the header, exactly once.
    _reader, writer, head, _ = await raw_ws_client(
        r.port, extra="Sec-WebSocket-Protocol: vite-hmr\r\n"
    )
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header_values(head, "Sec-WebSocket-Protocol") == ["vite-hmr"]
    finally:
        writer.close()


async def test_subprotocol_backend_picks_from_several_offers(backend, router):
    port = await backend(subprotocol_app(("vite-hmr",)))
    r = await router(make_config({"api": port}))
    reader, writer, head, _ = await raw_ws_client(
        r.port, extra="Sec-WebSocket-Protocol: graphql-ws, vite-hmr\r\n"
    )
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header_values(head, "Sec-WebSocket-Protocol") == ["vite-hmr"]
        _, op, payload = await read_frame(reader)
        assert (op, payload) == (OP_TEXT, b"protocol=vite-hmr")
    finally:
        writer.close()


async def test_no_subprotocol_when_backend_selects_none(backend, router):
    port = await backend(subprotocol_app(()))
    r = await router(make_config({"api": port}))
    _reader, writer, head, _ = await raw_ws_client(
        r.port, extra="Sec-WebSocket-Protocol: vite-hmr\r\n"
    )
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header_value(head, "Sec-WebSocket-Protocol") is None
    finally:
        writer.close()


@pytest.mark.parametrize("status", [403, 404])
async def test_backend_refusal_passes_through_as_status(backend, router, status):
    calls = []

    async def refuse(request: web.Request) -> web.Response:
        calls.append(request.path)
        return web.Response(status=status, text="nope")

    app = web.Application()
    if status == 403:
        app.router.add_get("/ws", refuse)
    # 404: the backend has no /ws at all.
    port = await backend(app)
    r = await router(make_config({"api": port}))
    async with ws_session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_connect(s, r.port)
        assert info.value.status == status
    # On the wire: the status line itself, never a 101.
    _reader, writer, head, _ = await raw_ws_client(r.port)
    writer.close()
    assert head.startswith(f"HTTP/1.1 {status} ".encode()), head
    assert header_value(head, "Sec-WebSocket-Accept") is None
    assert header_value(head, "Upgrade") is None


async def test_no_backend_is_502(router):
    dead = free_port()
    r = await router(make_config({"api": dead}))
    async with ws_session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_connect(s, r.port)
        assert info.value.status == 502
    _reader, writer, head, _ = await raw_ws_client(r.port)
    writer.close()
    assert head.startswith(b"HTTP/1.1 502 "), head


async def test_bad_accept_from_backend_is_502(raw_backend, router):
    async def handler(reader, writer, rb):
        await read_head(reader)
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: dGhpcyBpcyB3cm9uZw==\r\n\r\n"
        )
        await writer.drain()
        await asyncio.sleep(IO_TIMEOUT_S)

    rb = await raw_backend(handler)
    r = await router(make_config({"api": rb.port}))
    _reader, writer, head, _ = await raw_ws_client(r.port)
    writer.close()
    assert head.startswith(b"HTTP/1.1 502 "), head


async def test_origin_and_cookie_reach_backend_unchanged_no_deflate_injected(backend, router):
    requests: list[web.Request] = []
    r, _ = await echo_router(backend, router, requests=requests)
    origin = "http://web.localhost:7355"
    cookie = "session=abc%3D; theme=dark"
    reader, writer, head, _ = await raw_ws_client(
        r.port, extra=f"Origin: {origin}\r\nCookie: {cookie}\r\n"
    )
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert header_value(head, "Sec-WebSocket-Extensions") is None
        writer.write(encode_frame(OP_TEXT, b"ping", mask=True))
        await writer.drain()
        fin, op, payload = await read_frame(reader)
        # No compression bit (RSV1) and the plain payload.
        assert (fin, op, payload) == (True, OP_TEXT, b"ping")
    finally:
        writer.close()
    assert len(requests) == 1
    h = requests[0].headers
    assert h.getall("Origin") == [origin]
    assert h.getall("Cookie") == [cookie]
    assert "Sec-WebSocket-Extensions" not in h
    assert h["Host"] == "api.localhost"


# --- close codes --------------------------------------------------------------------------


async def test_backend_close_code_and_reason_reach_client(backend, router):
    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("hi")
        await ws.close(code=4001, message=b"bye")
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    port = await backend(app)
    r = await router(make_config({"api": port}))
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        assert (await ws.receive()).data == "hi"
        msg = await ws.receive()
        assert msg.type is WSMsgType.CLOSE
        assert msg.data == 4001
        assert msg.extra == "bye"
        await ws.close()
        assert ws.close_code == 4001


async def test_client_close_code_reaches_backend(backend, router):
    closed: asyncio.Future[tuple[int, str]] = asyncio.get_running_loop().create_future()

    async def handler(request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str("ready")
        msg = await ws.receive()
        if not closed.done():
            closed.set_result(
                (msg.data, msg.extra) if msg.type is WSMsgType.CLOSE else (-1, repr(msg))
            )
        return ws

    app = web.Application()
    app.router.add_get("/ws", handler)
    port = await backend(app)
    r = await router(make_config({"api": port}))
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        assert (await ws.receive()).data == "ready"
        await ws.close(code=4002, message=b"later")
        code, reason = await asyncio.wait_for(closed, IO_TIMEOUT_S)
    assert code == 4002
    assert reason == "later"


def _drop_raw(mode: str):
    async def handler(reader, writer, rb):
        await raw_ws_server_handshake(reader, writer, rb)
        writer.write(encode_frame(OP_TEXT, b"hi", mask=False))
        await writer.drain()
        await asyncio.sleep(0.05)
        if mode == "rst":
            sock = writer.get_extra_info("socket")
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00" * 2)
            writer.transport.abort()
        else:
            writer.close()

    return handler


@pytest.mark.parametrize("mode", ["raw-fin", "raw-rst", "aiohttp-abort"])
async def test_backend_drop_becomes_1011_or_1001(backend, raw_backend, router, mode):
    if mode == "aiohttp-abort":

        async def handler(request: web.Request) -> web.WebSocketResponse:
            ws = web.WebSocketResponse()
            await ws.prepare(request)
            await ws.send_str("hi")
            await asyncio.sleep(0.05)
            assert request.transport is not None
            request.transport.abort()
            return ws

        app = web.Application()
        app.router.add_get("/ws", handler)
        port = await backend(app)
    else:
        port = (await raw_backend(_drop_raw(mode.removeprefix("raw-")))).port
    r = await router(make_config({"api": port}))
    async with ws_session() as s:
        ws = await ws_connect(s, r.port)
        assert (await ws.receive()).data == "hi"
        msg = await ws.receive()
        # A real close frame from the router, not a vanished connection (1006).
        assert msg.type is WSMsgType.CLOSE, msg
        assert msg.data in (1011, 1001), msg
        await ws.close()


async def test_backend_drop_close_frame_on_the_wire(raw_backend, router):
    """The same drop, read from a raw client: the router sends a close frame with 1011/1001
    before ending the TCP connection."""
    rb = await raw_backend(_drop_raw("fin"))
    r = await router(make_config({"api": rb.port}))
    reader, writer, head, _ = await raw_ws_client(r.port)
    try:
        assert head.startswith(b"HTTP/1.1 101 ")
        assert await read_frame(reader) == (True, OP_TEXT, b"hi")
        _, op, payload = await read_frame(reader)
        assert op == OP_CLOSE
        assert int.from_bytes(payload[:2], "big") in (1011, 1001)
    finally:
        writer.close()


# --- loops and lifecycle ------------------------------------------------------------------


async def test_websocket_loop_is_508(backend, router):
    """A backend that re-proxies the handshake back into the router with the same Host and
    the hop header it received (Vite without changeOrigin)."""
    state: dict[str, int] = {"router_port": 0, "calls": 0}

    async def reproxy(request: web.Request) -> web.StreamResponse:
        state["calls"] += 1
        headers = {"Host": request.headers["Host"]}
        if "X-Devrouter-Hops" in request.headers:
            headers["X-Devrouter-Hops"] = request.headers["X-Devrouter-Hops"]
        async with aiohttp.ClientSession() as s:
            try:
                ws = await s.ws_connect(
                    f"http://127.0.0.1:{state['router_port']}/ws", headers=headers, compress=0
                )
            except aiohttp.WSServerHandshakeError as exc:
                return web.Response(status=exc.status, text=f"upstream said {exc.status}")
            await ws.close()
        return web.Response(status=500, text="the loop was not stopped")

    app = web.Application()
    app.router.add_get("/ws", reproxy)
    port = await backend(app)
    r = await router(make_config({"api": port}))
    state["router_port"] = r.port
    async with ws_session() as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await ws_connect(s, r.port)
    assert info.value.status == 508
    assert 1 <= state["calls"] <= 5


async def test_forged_hop_header_is_refused(backend, router):
    r, _ = await echo_router(backend, router)
    async with ws_session() as s:
        for bad in ("-1000", "abc"):
            with pytest.raises(aiohttp.WSServerHandshakeError) as info:
                await ws_connect(s, r.port, headers={"X-Devrouter-Hops": bad})
            assert info.value.status in (400, 508), bad


async def test_open_close_cycles_do_not_leak_tasks(backend, router):
    r, _ = await echo_router(backend, router)

    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    async with ws_session() as s:

        async def cycle(i: int) -> None:
            ws = await ws_connect(s, r.port)
            await ws.send_str(f"c{i}")
            assert (await ws.receive()).data == f"c{i}"
            await ws.close()

        await cycle(-1)  # warm up lazily created state
        await asyncio.sleep(0.1)
        tasks_before = len(asyncio.all_tasks())
        fds_before = open_fds()
        for i in range(200):
            await cycle(i)
        # Let handlers finish tearing down; bounded, not a timing assertion.
        for _ in range(50):
            if len(asyncio.all_tasks()) <= tasks_before + 3:
                break
            await asyncio.sleep(0.1)
        tasks_after = len(asyncio.all_tasks())
        fds_after = open_fds()
    assert tasks_after <= tasks_before + 3, (tasks_before, tasks_after)
    assert fds_after <= fds_before + 10, (fds_before, fds_after)
