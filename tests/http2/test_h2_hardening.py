"""HTTP/2's own attacks on a real router with its local CA: each case of docs/security.md's
HTTP/2 catalog (H1-H6, H8) with a test that fails without its defence.

Frames h2 will not send are written by hand (h2raw.py); what the router holds is read from its
Http2Connection objects in this process (the `made` fixture), what a backend saw from the
backend. Limits are patched down where a test would otherwise need minutes or megabytes
(never a sleep of real minutes); every wait is bounded (h2raw.IO_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import socket
import tracemalloc
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import h2.errors
import h2.settings
import pytest
from aiohttp import web
from conftest import RouterHandle, make_config
from h2client import H2Client, H2Stream, request_headers
from h2raw import IO_TIMEOUT_S, Answer, RawH2, get, tcp
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from devrouter.http2 import bridge, connection
from devrouter.http2.connection import Http2Connection

MiB = 1 << 20
RouterFactory = Callable[..., Awaitable[RouterHandle]]
BackendFactory = Callable[..., Awaitable[int]]
CALM = h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
Settings = h2.settings.SettingCodes


# --- set-up -----------------------------------------------------------------------------------


class Tls:
    """A router with TLS on its port, and the CA its clients trust."""

    def __init__(self, handle: RouterHandle, state: Path) -> None:
        self.handle = handle
        self.port = handle.port
        self.ca = state / "ca" / "ca.pem"

    async def raw(self, settings: dict[int, int] | None = None, **kw: Any) -> RawH2:
        return await RawH2.connect(self.port, self.ca, settings, **kw)

    async def h2(self, window: int | None = None, checked: bool = True) -> H2Client:
        return await H2Client.connect(self.port, self.ca, window=window, checked=checked)


async def tls_router(router: RouterFactory, tmp_path: Path, port: int, **top: Any) -> Tls:
    state = tmp_path / "state"
    handle = await router(make_config({"api": port}, **top), state_dir=state)
    return Tls(handle, state)


class Seen:
    """A backend that counts the requests it reads; paths under /hold wait for `release`."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        self.raw_headers: list[list[tuple[bytes, bytes]]] = []
        self.release = asyncio.Event()
        self.written = 0  # body bytes /big has written

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.StreamResponse:
            self.paths.append(request.path)
            self.raw_headers.append(list(request.raw_headers))
            if request.path.startswith("/hold"):
                await self.release.wait()
            if request.path == "/big":
                return await self._big(request)
            if request.path == "/unique":
                return web.Response(text="u", headers={"X-Unique": f"{len(self.paths):04d}" * 500})
            return web.Response(text=request.path)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    async def _big(self, request: web.Request) -> web.StreamResponse:
        size = int(request.query.get("mib", "64")) * MiB
        resp = web.StreamResponse(headers={"Content-Length": str(size)})
        await resp.prepare(request)
        block = b"x" * (64 * 1024)
        while self.written < size:
            await resp.write(block)
            self.written += len(block)
        return resp


@pytest.fixture
def made(monkeypatch: pytest.MonkeyPatch) -> list[Http2Connection]:
    """The router's HTTP/2 connections, as they are made; each one's `read` counts the bytes
    it took from its client while open."""
    conns: list[Http2Connection] = []
    made_ = Http2Connection.connection_made
    received = Http2Connection.data_received

    def connection_made(self: Http2Connection, transport: asyncio.BaseTransport) -> None:
        self.read = 0  # type: ignore[attr-defined]
        conns.append(self)
        made_(self, transport)

    def data_received(self: Http2Connection, data: bytes) -> None:
        if not self.closed:
            self.read += len(data)  # type: ignore[attr-defined]
        received(self, data)

    monkeypatch.setattr(Http2Connection, "connection_made", connection_made)
    monkeypatch.setattr(Http2Connection, "data_received", data_received)
    return conns


async def settle(value: Callable[[], int], polls: int = 5, every_s: float = 0.1) -> int:
    """`value()` once it has stopped changing for `polls` polls (bounded by IO_TIMEOUT_S)."""
    last, same = value(), 0
    async with asyncio.timeout(IO_TIMEOUT_S):
        while same < polls:
            await asyncio.sleep(every_s)
            now = value()
            same = same + 1 if now == last else 0
            last = now
    return last


async def eventually(check: Callable[[], bool]) -> bool:
    """Poll `check` until it holds or IO_TIMEOUT_S passes; its last value."""
    every_s = 0.05
    for _ in range(int(IO_TIMEOUT_S / every_s)):
        if check():
            return True
        await asyncio.sleep(every_s)
    return check()


async def still_serves(tls: Tls) -> None:
    """A new connection to the router is answered."""
    async with await tls.h2() as c:
        stream = await c.response(c.request(request_headers("/after")))
    assert stream.status == 200 and bytes(stream.data) == b"/after"


def block_frames(c: RawH2, sid: int, fields: list[tuple[bytes, bytes]]) -> list[bytes]:
    """A request's header block as a HEADERS frame and CONTINUATIONs of at most 16 KiB each."""
    block = c.encoder.encode(fields)
    c.answers.setdefault(sid, Answer())
    size = 16384
    parts = [block[i : i + size] for i in range(0, len(block), size)]
    out = []
    for i, part in enumerate(parts):
        flags = ["END_HEADERS"] if i == len(parts) - 1 else []
        if i == 0:
            out.append(HeadersFrame(sid, data=part, flags=[*flags, "END_STREAM"]).serialize())
        else:
            out.append(ContinuationFrame(sid, data=part, flags=flags).serialize())
    return out


#: What one read of the router's TLS transport takes at most, in bytes (asyncio's SSL
#: transport reads 256 KiB from the socket at a time).
READ_BYTES = 256 * 1024


# --- H1: rapid reset (CVE-2023-44487) ---------------------------------------------------------


async def test_rapid_reset_gets_goaway_and_the_backend_sees_a_bounded_number(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """HEADERS then RST_STREAM, 2,000 times as fast as the socket takes them: GOAWAY
    ENHANCE_YOUR_CALM once the reset budget is spent; other connections are served."""
    monkeypatch.setattr(connection, "RESET_BUDGET", 50)
    monkeypatch.setattr(connection, "RESETS_PER_S", 10.0)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    pairs = [
        c.request_frame(sid, get(f"/r{sid}")).serialize()
        + RstStreamFrame(sid, error_code=h2.errors.ErrorCodes.CANCEL).serialize()
        for sid in range(1, 4001, 2)
    ]
    sent = await c.flood(pairs, batch=50)
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == CALM, (sent, goaway)
    assert sent < len(pairs)
    assert await settle(lambda: len(seen.paths)) <= 200  # of 2,000 asked for
    await still_serves(tls)
    await c.close()


async def test_a_browsers_reload_resetting_every_open_stream_is_no_flood(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """A page reloaded while MAX_CONCURRENT_STREAMS requests are in flight: the browser
    resets them all at once, within the reset budget."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    async with await tls.h2() as c:
        sids = [c.request(request_headers(f"/hold/{i}")) for i in range(256)]
        assert len(sids) == connection.MAX_CONCURRENT_STREAMS
        assert await eventually(lambda: len(seen.paths) >= 32)  # the gate's first ones
        for sid in sids:
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        seen.release.set()
        stream = await c.response(c.request(request_headers("/after")))
        assert (stream.status, bytes(stream.data)) == (200, b"/after")
        assert c.terminated is None


@pytest.mark.parametrize("abuse", ["window-overflow", "malformed-field"])
async def test_streams_the_router_must_reset_count_against_the_reset_budget(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    abuse: str,
) -> None:
    """The rapid reset without a RST_STREAM of the client's ("MadeYouReset", CVE-2025-8671):
    a frame that obliges the router to reset the stream it just opened."""
    monkeypatch.setattr(connection, "RESET_BUDGET", 50)
    monkeypatch.setattr(connection, "RESETS_PER_S", 10.0)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    pieces = []
    for sid in range(1, 1001, 2):
        if abuse == "window-overflow":  # the stream's send window past 2^31-1
            head = c.request_frame(sid, get(f"/w{sid}"), end_stream=False)
            wu = WindowUpdateFrame(sid, window_increment=2**31 - 1)
            pieces.append(head.serialize() + wu.serialize())
        else:
            pieces.append(c.request_frame(sid, [*get(f"/m{sid}"), (b"X-Up", b"1")]).serialize())
    sent = await c.flood(pieces, batch=25)
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == CALM, (sent, goaway)
    assert await settle(lambda: len(seen.paths)) <= 200
    await still_serves(tls)
    await c.close()


# --- H2: CONTINUATION flood (CVE-2024-27316) --------------------------------------------------


@pytest.mark.parametrize("size", [16384, 0], ids=["16-kib-frames", "empty-frames"])
async def test_a_continuation_flood_is_closed_with_a_bounded_amount_read(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    made: list[Http2Connection],
    size: int,
) -> None:
    """HEADERS without END_HEADERS, then CONTINUATIONs without end: h2 stops at 64 frames,
    and the router's meter at MAX_HEADER_BLOCK_BYTES whatever the frames' size (64 frames
    of 16 KiB would be 1 MiB buffered before h2 says no)."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(1, get("/c"), end_headers=False))
    flood = [ContinuationFrame(1, data=b"\x00" * size).serialize()] * 4000
    await c.flood(flood, batch=16)
    goaway = await c.closed()
    assert goaway is not None
    (conn,) = made
    assert conn.read <= connection.MAX_HEADER_BLOCK_BYTES + READ_BYTES  # type: ignore[attr-defined]
    assert conn.read < 64 * 16384  # type: ignore[attr-defined]
    assert seen.paths == []
    await still_serves(tls)
    await c.close()


# --- H3: HPACK bomb, header table sizes -------------------------------------------------------


async def test_an_hpack_bomb_is_refused_before_it_is_expanded(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """One 4,000-byte field put in the dynamic table, then referred to 2,000 times: a 6 KB
    block that decodes to 8 MB. The decoder stops at MAX_HEADER_LIST_BYTES (hpack's check,
    set by the router), so the router's memory never sees the expansion."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    block = c.encoder.encode([*get("/bomb"), (b"x-big", b"v" * 4000)])
    block += bytes([0x80 | 62]) * 2000  # an indexed field: the newest dynamic entry, x-big
    frame = HeadersFrame(1, data=block, flags=["END_HEADERS", "END_STREAM"])
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        c.send(frame)
        goaway = await c.closed()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert goaway is not None and goaway.error_code == CALM
    assert peak - before < MiB, peak - before
    assert seen.paths == []
    await still_serves(tls)
    await c.close()


async def test_a_dynamic_table_larger_than_the_routers_is_refused(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """The client's HPACK table is the router's to size (the default 4 KiB, RFC 7541, 4.2): a
    header block that grows it past that ends the connection (hpack's check; h2 says
    PROTOCOL_ERROR where RFC 9113, 4.3 says COMPRESSION_ERROR: a connection error either way)."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.encoder.header_table_size = 1 << 20  # the block starts with a size update to 1 MiB
    c.send(c.request_frame(1, get("/table")))
    goaway = await c.closed()
    errors = h2.errors.ErrorCodes
    assert goaway is not None and goaway.error_code in (
        errors.PROTOCOL_ERROR,
        errors.COMPRESSION_ERROR,
    )
    assert seen.paths == []
    await c.close()


async def test_a_huge_header_table_setting_leaves_the_routers_table_small(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, made: list[Http2Connection]
) -> None:
    """A client may allow a 4 GiB HPACK table for the router's responses; the router's
    encoder keeps ENCODER_TABLE_BYTES (RFC 7541, 4.2: an encoder may use less)."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    async with await tls.h2() as c:
        c.conn.update_settings({Settings.HEADER_TABLE_SIZE: 2**32 - 1})
        c.flush()
        for _ in range(40):  # each response with its own 2,000-byte field
            stream = await c.response(c.request(request_headers("/unique")))
            assert stream.status == 200
        (conn,) = made
        table = conn.h2.encoder.header_table
        size = sum(32 + len(n) + len(v) for n, v in table.dynamic_entries)
        assert size <= table.maxsize <= connection.ENCODER_TABLE_BYTES


# --- H4: control frame floods -----------------------------------------------------------------


FLOODS: dict[str, Frame | bytes] = {
    "settings": SettingsFrame(0, settings={Settings.MAX_CONCURRENT_STREAMS: 100}),
    "ping": PingFrame(0, opaque_data=b"12345678"),
    "priority": PriorityFrame(1, depends_on=0, stream_weight=15),
    "empty-data": DataFrame(1, data=b""),
    "window-update": WindowUpdateFrame(0, window_increment=1),
    "rst-stream-on-a-closed-stream": RstStreamFrame(3, error_code=8),
    "unknown-frame-type": b"\x00\x00\x00\xfa\x00\x00\x00\x00\x00",
}


@pytest.mark.parametrize("kind", list(FLOODS))
async def test_a_control_frame_flood_gets_goaway_enhance_your_calm(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, kind: str
) -> None:
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(1, get("/hold"), end_stream=False))  # stream 1 open: its DATA is legal
    c.send(c.request_frame(3, get("/3")))
    await c.until(lambda: c.answers[3].ended)
    frame = FLOODS[kind]
    piece = frame if isinstance(frame, bytes) else frame.serialize()
    sent = await c.flood([piece] * (10 * connection.CONTROL_BUDGET), batch=200)
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == CALM, (sent, goaway)
    seen.release.set()
    await still_serves(tls)
    await c.close()


async def test_a_zero_window_update_is_a_connection_error_at_once(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, made: list[Http2Connection]
) -> None:
    """A WINDOW_UPDATE of 0 is malformed (RFC 9113, 6.9): h2 ends the connection at the
    first one (PROTOCOL_ERROR), so a flood of them is one frame read."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    await c.flood([WindowUpdateFrame(0, window_increment=0).serialize()] * 1000, batch=1000)
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    await c.close()


async def test_a_client_that_never_acknowledges_the_routers_settings_gets_goaway(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "SETTINGS_TIMEOUT_S", 0.3)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw(ack_settings=False)
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.SETTINGS_TIMEOUT
    acked = await tls.raw()  # one that does is served past the timeout
    await asyncio.sleep(0.6)
    acked.send(acked.request_frame(1, get("/acked")))
    await acked.until(lambda: acked.answers[1].ended)
    assert acked.answers[1].status == 200 and acked.goaway is None
    await c.close()
    await acked.close()


async def test_a_browsers_frames_stay_within_the_budgets(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """What a browser sends in a busy session, with the budgets' bursts alone (no refill to
    hide a miscount): a tree of PRIORITY frames (Firefox), 1,200 requests whose HEADERS
    carry a priority (Chrome), a PING, a 16 MiB download through a 16 KiB window
    acknowledged frame by frame (a WINDOW_UPDATE each: DATA sent pays for them), and 200
    streams cancelled by a navigation."""
    monkeypatch.setattr(connection, "CONTROL_PER_S", 0.0)
    monkeypatch.setattr(connection, "RESETS_PER_S", 0.0)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    async with await tls.h2(window=16 * 1024) as c:
        for sid in range(3, 15, 2):
            c.writer.write(PriorityFrame(sid, depends_on=0, stream_weight=200).serialize())
        c.conn.ping(b"browser!")
        c.flush()
        for wave in range(5):
            sids = []
            for i in range(240):
                sid = c.conn.get_next_available_stream_id()
                c.streams[sid] = H2Stream()
                c.conn.send_headers(
                    sid,
                    request_headers(f"/p{wave}/{i}"),
                    end_stream=True,
                    priority_weight=220,
                    priority_depends_on=0,
                    priority_exclusive=True,
                )
                sids.append(sid)
            c.flush()
            for sid in sids:
                assert (await c.response(sid)).status == 200
        big = await c.response(c.request(request_headers("/big?mib=16")))
        assert big.status == 200 and len(big.data) == 16 * MiB
        held = [c.request(request_headers(f"/hold/{i}")) for i in range(200)]
        assert await eventually(lambda: sum(p.startswith("/hold") for p in seen.paths) >= 32)
        for sid in held:
            c.conn.reset_stream(sid, h2.errors.ErrorCodes.CANCEL)
        c.flush()
        seen.release.set()
        after = await c.response(c.request(request_headers("/after")))
        assert after.status == 200
        assert c.terminated is None


# --- H5: stream limits ------------------------------------------------------------------------


async def test_streams_past_the_advertised_limit_are_refused_and_the_others_answer(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Four streams more than MAX_CONCURRENT_STREAMS, sent at once: each extra one gets
    RST_STREAM REFUSED_STREAM (RFC 9113, 5.1.2; the client may retry it) and reaches no
    backend; the accepted ones answer on the same connection."""
    monkeypatch.setattr(connection, "MAX_CONCURRENT_STREAMS", 8)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    settings = [f for f in c.frames if isinstance(f, SettingsFrame) and "ACK" not in f.flags]
    assert settings[0].settings[Settings.MAX_CONCURRENT_STREAMS] == 8
    sids = list(range(1, 25, 2))
    c.send(*[c.request_frame(sid, get(f"/hold/{sid}")) for sid in sids])
    await c.until(lambda: sum(c.answers[sid].reset is not None for sid in sids) == 4)
    refused = [sid for sid in sids if c.answers[sid].reset is not None]
    assert refused == sids[8:]
    assert {c.answers[sid].reset for sid in refused} == {h2.errors.ErrorCodes.REFUSED_STREAM}
    assert await settle(lambda: len(seen.paths)) == 8
    seen.release.set()
    await c.until(lambda: all(c.answers[sid].ended for sid in sids[:8]))
    assert [c.answers[sid].status for sid in sids[:8]] == [200] * 8
    assert sorted(seen.paths) == sorted(f"/hold/{sid}" for sid in sids[:8])
    assert c.goaway is None
    await c.close()


async def test_a_stream_id_going_backwards_is_a_connection_error(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(5, get("/five")))
    await c.until(lambda: c.answers[5].ended)
    c.send(c.request_frame(3, get("/three")))
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
    assert seen.paths == ["/five"]
    await c.close()


# --- H8 (header size and bytes HTTP/1.1 cannot carry) -----------------------------------------


async def test_a_header_block_over_the_limit_is_refused(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """80 KB of fields: GOAWAY ENHANCE_YOUR_CALM (the block's HPACK state cannot be kept
    without decoding it, so the connection goes: RFC 9113, 10.5.1); nothing forwarded."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    fields = [*get("/big-head"), *[(b"x-f%d" % i, b"%d" % i * 4000) for i in range(20)]]
    c.send(*block_frames(c, 1, fields))
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == CALM
    assert seen.paths == []
    await still_serves(tls)
    await c.close()


async def test_a_large_header_block_under_the_limit_is_forwarded(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """Six 6,000-byte fields (36 KB, within HTTP/1's limits too) reach the backend whole."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    fields = [*get("/large"), *[(b"x-large-%d" % i, b"%d" % i * 6000) for i in range(6)]]
    c.send(*block_frames(c, 1, fields))
    await c.until(lambda: c.answers[1].ended)
    assert c.answers[1].status == 200
    got = {k.lower(): v for k, v in seen.raw_headers[0] if k.lower().startswith(b"x-large-")}
    assert got == dict(fields[4:])
    await c.close()


def _with(
    *fields: tuple[bytes, bytes],
    path: bytes = b"/s",
    authority: bytes = b"api.localhost",
    method: bytes = b"GET",
) -> list[tuple[bytes, bytes]]:
    pseudo = [
        (b":method", method),
        (b":scheme", b"https"),
        (b":authority", authority),
        (b":path", path),
    ]
    return [*pseudo, *fields]


SPLIT = b"\r\nx-evil: 1"
SMUGGLING = {
    "crlf-in-a-value": _with((b"x-a", b"1" + SPLIT)),
    "lf-in-a-value": _with((b"x-a", b"1\nx-evil: 1")),
    "cr-in-a-value": _with((b"x-a", b"1\rx-evil: 1")),
    "nul-in-a-value": _with((b"x-a", b"1\x00x-evil: 1")),
    "a-request-in-a-value": _with(
        (b"x-a", b"1\r\n\r\nGET /evil HTTP/1.1\r\nHost: api.localhost\r\nx-evil: 1")
    ),
    "crlf-in-a-name": _with((b"x-a" + SPLIT, b"1")),
    "colon-in-a-name": _with((b"x-evil:x", b"1")),
    "crlf-in-the-path": _with(path=b"/s HTTP/1.1" + SPLIT + b"\r\nx:"),
    "space-in-the-path": _with(path=b"/s /evil"),
    "crlf-in-the-authority": _with(authority=b"api.localhost" + SPLIT),
    "crlf-in-the-method": _with(method=b"GET /evil HTTP/1.1" + SPLIT + b"\r\nX"),
    "crlf-in-a-cookie": _with((b"cookie", b"a=1" + SPLIT)),
}


@pytest.mark.parametrize("fields", list(SMUGGLING.values()), ids=list(SMUGGLING))
async def test_bytes_that_would_split_the_http1_head_never_reach_the_backend(
    router: RouterFactory, raw_backend: Any, tmp_path: Path, fields: list[tuple[bytes, bytes]]
) -> None:
    """HPACK carries any byte; HTTP/1.1 would read CR, LF or NUL as a new line (request
    smuggling). The stream is reset (PROTOCOL_ERROR, RFC 9113, 8.2.1), the backend reads
    nothing of it, and the next stream on the connection is served."""

    async def answer(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: Any) -> None:
        while True:
            rb.received.append(await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await w.drain()

    rb = await raw_backend(answer)
    tls = await tls_router(router, tmp_path, rb.port)
    async with await tls.h2(checked=False) as c:
        bad = await c.response(c.request(fields))
        good = await c.response(c.request(request_headers("/good")))
    assert bad.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR and bad.headers is None
    assert good.status == 200
    assert len(rb.received) == 1 and rb.received[0].startswith(b"GET /good HTTP/1.1\r\n")
    assert b"evil" not in rb.received[0]


# --- idle connections -------------------------------------------------------------------------


async def test_a_connection_with_no_stream_gets_goaway_after_the_idle_timeout(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "IDLE_TIMEOUT_S", 0.3)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(1, get("/one")))
    goaway = await c.closed()  # the response, then nothing for IDLE_TIMEOUT_S
    assert c.answers[1].status == 200
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    assert goaway.last_stream_id == 1
    await c.close()


async def test_an_open_stream_keeps_its_connection_past_the_idle_timeout(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "IDLE_TIMEOUT_S", 0.2)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(1, get("/hold")))
    await asyncio.sleep(0.6)  # three idle timeouts with a stream open
    assert c.goaway is None and not c.eof.is_set()
    seen.release.set()
    await c.until(lambda: c.answers[1].ended)
    assert c.answers[1].status == 200
    goaway = await c.closed()
    assert goaway is not None and goaway.error_code == h2.errors.ErrorCodes.NO_ERROR
    await c.close()


# --- H6: clients that do not read -------------------------------------------------------------


async def test_a_client_that_grants_no_window_stalls_the_backend_not_the_routers_memory(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, made: list[Http2Connection]
) -> None:
    """A 64 MiB download to a client that never sends WINDOW_UPDATE: after its 64 KiB window
    the stream holds at most bridge.HIGH_WATER_BYTES (and one read) and its engine is
    paused, so the backend's writes stop too."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw()
    c.send(c.request_frame(1, get("/big?mib=64")))
    written = await settle(lambda: seen.written)
    (conn,) = made
    stream = conn.streams[1]
    assert len(c.answers[1].data) <= 65535
    assert written < 32 * MiB
    assert len(stream.pending) <= bridge.HIGH_WATER_BYTES + READ_BYTES
    assert conn.transport is not None and conn.transport.get_write_buffer_size() < MiB
    await c.close()


async def test_a_client_that_does_not_read_its_socket_keeps_the_routers_buffers_bounded(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, made: list[Http2Connection]
) -> None:
    """The largest windows HTTP/2 allows, and a socket never read: the transport's buffer
    pauses the stream's writes, so the router holds at most MAX_OUTBOUND_BUFFER_BYTES for
    the socket and HIGH_WATER_BYTES (and one read) for the stream; the backend is paused."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    huge = 2**31 - 1
    c = await tls.raw({Settings.INITIAL_WINDOW_SIZE: huge}, reading=False, rcvbuf=16384)
    c.send(WindowUpdateFrame(0, window_increment=huge - 65535))
    c.send(c.request_frame(1, get("/big?mib=256")))
    written = await settle(lambda: seen.written)
    (conn,) = made
    assert conn.transport is not None
    assert conn.transport.get_write_buffer_size() <= connection.MAX_OUTBOUND_BUFFER_BYTES
    assert len(conn.streams[1].pending) <= bridge.HIGH_WATER_BYTES + READ_BYTES
    assert written < 128 * MiB
    await c.close()


async def test_an_upload_to_a_backend_that_does_not_read_holds_at_most_its_window(
    router: RouterFactory, raw_backend: Any, tmp_path: Path, made: list[Http2Connection]
) -> None:
    """A 64 MiB POST to a backend that reads the head and then nothing: the router stops
    acknowledging DATA once its engine is paused, so the client's window closes and the
    router holds at most the stream's window (STREAM_WINDOW_BYTES) of it."""
    taken = asyncio.Event()

    async def never_reads(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: Any) -> None:
        rb.received.append(await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S))
        taken.set()
        await asyncio.sleep(3600)  # cancelled by the fixture

    rb = await raw_backend(never_reads)
    tls = await tls_router(router, tmp_path, rb.port)
    sent = 0
    async with await tls.h2() as c:
        sid = c.request(request_headers("/upload", "POST"), end_stream=False)

        async def push() -> None:  # DATA as the router's windows allow, counted
            nonlocal sent
            block = b"u" * c.conn.max_outbound_frame_size
            while sent < 64 * MiB:
                size = min(c.conn.local_flow_control_window(sid), len(block))
                if size <= 0:
                    c.window_opened.clear()
                    await c.window_opened.wait()
                    continue
                c.conn.send_data(sid, block[:size])
                c.flush()
                sent += size
                await c.writer.drain()

        upload = asyncio.create_task(push())
        await asyncio.wait_for(taken.wait(), IO_TIMEOUT_S)
        await settle(lambda: sent)
        (conn,) = made
        inbox = sum(len(b) for lane in conn.lanes for b in lane.inbox)
        upload.cancel()
        await asyncio.gather(upload, return_exceptions=True)
    assert sent < 32 * MiB, sent
    assert inbox <= connection.STREAM_WINDOW_BYTES + 64 * 1024


async def test_pings_from_a_client_that_does_not_read_cannot_grow_the_routers_buffer(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    made: list[Http2Connection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each PING is answered with an ACK the client never reads. Within the control budget
    (raised here, so that the buffer's limit is what ends it), the ACKs pile up in the
    transport until MAX_OUTBOUND_BUFFER_BYTES; then GOAWAY, and the connection is dropped
    after CLOSE_GRACE_S however much of it is unsent."""
    monkeypatch.setattr(connection, "MAX_OUTBOUND_BUFFER_BYTES", 64 * 1024)
    monkeypatch.setattr(connection, "CONTROL_BUDGET", 10**7)
    monkeypatch.setattr(connection, "CLOSE_GRACE_S", 0.2)
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()))
    c = await tls.raw(reading=False, rcvbuf=4096)
    peaks: list[int] = []
    received = Http2Connection.data_received

    def data_received(self: Http2Connection, data: bytes) -> None:
        received(self, data)
        if self.transport is not None:
            peaks.append(self.transport.get_write_buffer_size())

    monkeypatch.setattr(Http2Connection, "data_received", data_received)
    (conn,) = made
    assert conn.transport is not None  # the kernel's buffer small too: the router's fills
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    ping = PingFrame(0, opaque_data=b"12345678").serialize()
    for _ in range(400):  # until the router gives up on it, then no more (it never reads)
        await c.flood([ping] * 500, batch=500)
        if conn.closed:
            break
    # connection_lost: the connection is dropped, not left lingering on its unsent bytes
    assert await eventually(lambda: conn not in conn.server.connections)
    assert conn.closed
    assert max(peaks) <= 64 * 1024 + READ_BYTES
    await c.close()


# --- the router-wide connection limit ---------------------------------------------------------


async def test_http2_connections_count_toward_the_router_wide_limit(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """Two idle HTTP/2 connections fill `max_connections: 2`: a third client gets the 503."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()), max_connections=2)
    first, second = await tls.h2(), await tls.h2()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", tls.port)
        writer.write(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
        writer.close()
        assert answer.startswith(b"HTTP/1.1 503"), answer
        assert seen.paths == []
    finally:
        await first.close()
        await second.close()


async def test_a_router_full_by_the_end_of_a_handshake_sends_goaway(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """A connection accepted with room, whose TLS handshake ends when the router is full:
    the HTTP/2 engine answers GOAWAY ENHANCE_YOUR_CALM "too many connections"."""
    seen = Seen()
    tls = await tls_router(router, tmp_path, await backend(seen.app()), max_connections=2)
    late = await tcp(tls.port)  # accepted with room; sends nothing yet
    held = [await asyncio.open_connection("127.0.0.1", tls.port) for _ in range(2)]
    try:
        for reader, writer in held:  # accepted after `late`, and counted
            writer.write(b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            assert head.startswith(b"HTTP/1.1 200"), head
        c = await tls.raw(sock=late)
        goaway = await c.closed()
        assert goaway is not None and goaway.error_code == CALM
        assert goaway.additional_data == b"too many connections"
        await c.close()
    finally:
        for _, writer in held:
            writer.close()
