"""devrouter.http2 end to end: a real router with its local CA, real backends, real clients
(curl, and python-hyper's h2 over TLS in h2client.py).

Every HTTP/2 stream is written as HTTP/1.1 into the HTTP/1 engines, so the `router` fixture
runs each case on both (the fast path and aiohttp's handler alone). Orderings are made with
events the test controls, never with timings; every wait is bounded (h2client.IO_TIMEOUT_S).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import h2.errors
import h2.exceptions
import h2.settings
import pytest
from aiohttp import web
from conftest import RawBackend, RouterHandle, make_config, read_head, ws_echo_text
from h2client import (
    IO_TIMEOUT_S,
    H2Client,
    H2Stream,
    Headers,
    read_ws_frame,
    request_headers,
    ws_frame,
)

from devrouter.http2.server import MAX_STREAMS_PER_NAME

MiB = 1 << 20
CURL = shutil.which("curl")
RouterFactory = Callable[..., Awaitable[RouterHandle]]
BackendFactory = Callable[..., Awaitable[int]]


# --- set-up -----------------------------------------------------------------------------------


class Tls:
    """A router with TLS on its port, and the CA file its clients trust."""

    def __init__(self, handle: RouterHandle, state: Path) -> None:
        self.handle = handle
        self.port = handle.port
        self.ca = state / "ca" / "ca.pem"

    async def h2(
        self, host: str = "api.localhost", window: int | None = None, checked: bool = True
    ) -> H2Client:
        return await H2Client.connect(self.port, self.ca, host, window, checked)


async def tls_router(router: RouterFactory, tmp_path: Path, routes: dict[str, Any]) -> Tls:
    state = tmp_path / "state"
    handle = await router(make_config(routes), state_dir=state)
    return Tls(handle, state)


async def echo(request: web.Request) -> web.Response:
    """Answers with what it read: method, target, fields (in order), body length and hash."""
    body = await request.read()
    return web.json_response(
        {
            "method": request.method,
            "target": request.path_qs,
            "headers": [[k.decode("latin-1"), v.decode("latin-1")] for k, v in request.raw_headers],
            "length": len(body),
            "sha256": hashlib.sha256(body).hexdigest(),
        },
        headers={"X-Echo": "1"},
    )


def echo_app() -> web.Application:
    app = web.Application(client_max_size=64 * MiB)
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


def fields_of(doc: dict[str, Any]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name, value in doc["headers"]:
        out.setdefault(name.lower(), []).append(value)
    return out


def json_of(stream: H2Stream) -> dict[str, Any]:
    assert stream.status == 200, (stream.headers, bytes(stream.data[:300]))
    doc: dict[str, Any] = json.loads(bytes(stream.data))
    return doc


async def get(client: H2Client, headers: Headers) -> H2Stream:
    return await client.response(client.request(headers))


# --- curl -------------------------------------------------------------------------------------


async def curl(tls: Tls, *args: str, host: str = "api.localhost") -> tuple[str, str, bytes]:
    """curl's (status, HTTP version, body) for one request to `host` on the router."""
    assert CURL is not None
    argv = [
        CURL,
        "-sS",
        "--max-time",
        str(IO_TIMEOUT_S),
        "--cacert",
        str(tls.ca),
        "--resolve",
        f"{host}:{tls.port}:127.0.0.1",
        "-o",
        "-",
        "-w",
        "\n%{http_code} %{http_version}",
        *args,
    ]
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), IO_TIMEOUT_S + 5)
    assert proc.returncode == 0, err.decode()
    body, _, tail = out.rpartition(b"\n")
    status, version = tail.decode().split()
    return status, version, body


needs_curl = pytest.mark.skipif(CURL is None, reason="curl is not installed")


@needs_curl
@pytest.mark.parametrize(
    ("flag", "scheme", "version"),
    [("--http2", "https", "2"), ("--http1.1", "https", "1.1"), ("--http1.1", "http", "1.1")],
    ids=["h2", "https-1.1", "plain"],
)
async def test_curl_each_protocol_reaches_the_backend_alike(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    flag: str,
    scheme: str,
    version: str,
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    url = f"{scheme}://api.localhost:{tls.port}/p/q?x=1&y=%20"
    status, got_version, body = await curl(
        tls, flag, "-H", "Cookie: a=1", "-H", "Cookie: b=2", "-H", "X-Custom: v", url
    )
    assert (status, got_version) == ("200", version)
    doc = json.loads(body)
    assert doc["method"] == "GET" and doc["target"] == "/p/q?x=1&y=%20"
    seen = fields_of(doc)
    assert seen["host"] == [f"api.localhost:{tls.port}"]
    assert seen["x-forwarded-proto"] == [scheme]
    assert seen["x-forwarded-for"] == ["127.0.0.1"]
    assert seen["x-forwarded-host"] == [f"api.localhost:{tls.port}"]
    assert seen["x-forwarded-port"] == [str(tls.port)]
    assert seen["forwarded"] == [f'for=127.0.0.1;host="api.localhost:{tls.port}";proto={scheme}']
    assert seen["x-custom"] == ["v"]
    # HTTP/2 carries cookie crumbs, joined for HTTP/1.1 (RFC 9113, 8.2.3); HTTP/1.1 as sent
    assert seen["cookie"] == (["a=1; b=2"] if version == "2" else ["a=1", "b=2"])
    assert "te" not in seen and "upgrade" not in seen and "http2-settings" not in seen


@needs_curl
async def test_curl_h2_post_and_an_unknown_name(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    upload = tmp_path / "upload.bin"
    data = os.urandom(300_000)
    upload.write_bytes(data)
    url = f"https://api.localhost:{tls.port}/up"
    status, version, body = await curl(tls, "--http2", "--data-binary", f"@{upload}", url)
    assert (status, version) == ("200", "2")
    doc = json.loads(body)
    assert doc["method"] == "POST"
    assert (doc["length"], doc["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())

    url = f"https://nope.localhost:{tls.port}/"
    status, version, body = await curl(tls, "--http2", url, host="nope.localhost")
    assert (status, version) == ("404", "2")
    assert b"nope" in body and b"api" in body  # the 404 page names the name and the routes


# --- the h2 client: requests and bodies -------------------------------------------------------


async def test_many_concurrent_streams_all_answer_through_the_gate(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """300 streams at once (two connections, 150 each: the server allows 256 per
    connection): past the gate's limit and portless's 100. The first MAX_STREAMS_PER_NAME
    are held by the backend until that many are in flight at once, so the gate must let
    exactly that many through together; none is lost in its queue."""
    in_flight = 0
    most = 0
    full = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        nonlocal in_flight, most
        in_flight += 1
        most = max(most, in_flight)
        if in_flight >= MAX_STREAMS_PER_NAME:
            full.set()
        try:
            await asyncio.wait_for(full.wait(), IO_TIMEOUT_S)
            return web.Response(text=request.path)
        finally:
            in_flight -= 1

    app = web.Application()
    app.router.add_get("/{n}", held)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    clients = [await tls.h2(), await tls.h2()]
    try:
        sids = [(c, i, c.request(request_headers(f"/{i}"))) for i in range(150) for c in clients]
        results = await asyncio.gather(*(c.response(sid) for c, _, sid in sids))
        for (_, i, _), stream in zip(sids, results, strict=True):
            assert stream.status == 200
            assert bytes(stream.data) == f"/{i}".encode()
    finally:
        for c in clients:
            await c.close()
    assert most == MAX_STREAMS_PER_NAME


@pytest.mark.parametrize("size", [0, 11, 5 * MiB])
@pytest.mark.parametrize("with_length", [True, False], ids=["length", "no-length"])
async def test_upload_arrives_whole(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, size: int, with_length: bool
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    data = os.urandom(size)
    extra = {"content_length": str(size)} if with_length else {}
    async with await tls.h2() as c:
        sid = c.request(request_headers("/up", "POST", **extra), end_stream=False)
        await c.send_body(sid, data)
        doc = json_of(await c.response(sid))
    assert doc["method"] == "POST"
    assert (doc["length"], doc["sha256"]) == (size, hashlib.sha256(data).hexdigest())
    seen = fields_of(doc)
    if with_length:
        assert seen["content-length"] == [str(size)]
    else:  # written chunked into the HTTP/1 engine: it says so, or re-frames with a length
        assert "chunked" in seen.get("transfer-encoding", []) or "content-length" in seen


async def send_round_robin(c: H2Client, bodies: dict[int, bytes], frame: int = 16384) -> None:
    """DATA for every stream in turn, a frame each, as a browser's scheduler sends them."""
    sent = dict.fromkeys(bodies, 0)
    while sent:
        progress = False
        for sid in list(sent):
            body, at = bodies[sid], sent[sid]
            piece = body[at : at + frame]
            if c.conn.local_flow_control_window(sid) >= len(piece):
                c.conn.send_data(sid, piece, end_stream=at + len(piece) == len(body))
                sent[sid] += len(piece)
                progress = True
                if sent[sid] == len(body):
                    del sent[sid]
        c.flush()
        if progress:
            await asyncio.sleep(0)  # let the reader take the server's WINDOW_UPDATEs
        else:
            c.window_opened.clear()
            await asyncio.wait_for(c.window_opened.wait(), IO_TIMEOUT_S)


@pytest.mark.parametrize("with_length", [True, False], ids=["length", "no-length"])
async def test_uploads_waiting_at_the_gate_do_not_stall_the_ones_it_let_through(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path, with_length: bool
) -> None:
    """Twice the gate's limit of 2 MiB uploads to one name, their DATA interleaved: the
    streams waiting at the gate must not hold the whole connection window, or the uploads
    being forwarded could never finish and free the gate. What a waiting stream received
    is written into the engine when it starts (chunked, without a length)."""
    count, size = 2 * MAX_STREAMS_PER_NAME, 2 * MiB
    extra = {"content_length": str(size)} if with_length else {}
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2() as c:
        bodies = {
            c.request(request_headers(f"/{i}", "POST", **extra), False): os.urandom(size)
            for i in range(count)
        }
        await send_round_robin(c, bodies)
        for sid, body in bodies.items():
            doc = json_of(await c.response(sid))
            assert (doc["length"], doc["sha256"]) == (size, hashlib.sha256(body).hexdigest())


async def test_empty_post_ended_by_its_headers(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2() as c:
        doc = json_of(await get(c, request_headers("/e", "POST")))
    assert doc["method"] == "POST" and doc["length"] == 0
    assert "transfer-encoding" not in fields_of(doc)


async def test_a_request_waiting_at_the_gate_keeps_its_body_and_trailers(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """The gate is filled with requests the backend holds; a chunked upload with trailers
    then waits at the gate with everything it sent, and is whole when it gets through."""
    in_flight = 0
    full = asyncio.Event()
    release = asyncio.Event()

    async def held(request: web.Request) -> web.Response:
        nonlocal in_flight
        in_flight += 1
        if in_flight == MAX_STREAMS_PER_NAME:
            full.set()
        await asyncio.wait_for(release.wait(), IO_TIMEOUT_S)
        return web.Response(text="held")

    app = web.Application()
    app.router.add_get("/held", held)
    app.router.add_post("/echo", echo)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        holders = [c.request(request_headers("/held")) for _ in range(MAX_STREAMS_PER_NAME)]
        await asyncio.wait_for(full.wait(), IO_TIMEOUT_S)
        sid = c.request(request_headers("/echo", "POST", te="trailers"), end_stream=False)
        await c.send_body(sid, b"waiting ", end_stream=False)
        await c.send_body(sid, b"at the gate", end_stream=False)
        c.send_trailers(sid, [(b"x-checksum", b"1")])
        release.set()
        doc = json_of(await c.response(sid))
        for holder in holders:
            assert (await c.response(holder)).status == 200
    assert doc["length"] == len(b"waiting at the gate")
    assert doc["sha256"] == hashlib.sha256(b"waiting at the gate").hexdigest()
    assert "x-checksum" not in fields_of(doc)


async def test_expect_100_continue_is_answered_before_the_body(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2() as c:
        headers = request_headers("/up", "POST", content_length="5", expect="100-continue")
        sid = c.request(headers, end_stream=False)
        stream = await c.until(sid, lambda s: bool(s.informational) or s.ended)
        assert stream.informational == [[(b":status", b"100")]] and stream.headers is None
        await c.send_body(sid, b"hello")
        doc = json_of(await c.response(sid))
    assert doc["length"] == 5


async def test_request_trailers_end_the_body_and_never_become_fields(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        head = await read_head(r)
        body = bytearray()
        while True:  # the body arrives chunked (the engine may re-chunk it)
            size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                break
            body += await r.readexactly(size)
            await r.readexactly(2)
        trailers = b""
        while (line := await r.readuntil(b"\r\n")) != b"\r\n":
            trailers += line
        rb.received.append(head + bytes(body) + b"|" + trailers)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await w.drain()

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        sid = c.request(request_headers("/t", "POST", te="trailers"), end_stream=False)
        await c.send_body(sid, b"hello ", end_stream=False)
        await c.send_body(sid, b"world", end_stream=False)
        c.send_trailers(sid, [(b"x-checksum", b"abc")])
        stream = await c.response(sid)
    assert (stream.status, bytes(stream.data)) == (200, b"ok")
    (got,) = rb.received
    head, _, rest = got.partition(b"\r\n\r\n")
    assert b"x-checksum" not in head.lower()
    body, _, _trailers = rest.partition(b"|")
    assert body == b"hello world"


async def test_one_connection_serves_a_sequence_of_kinds_on_one_backend_connection(
    raw_backend: Callable[..., Awaitable[RawBackend]], router: RouterFactory, tmp_path: Path
) -> None:
    """Requests one after the other on one HTTP/2 connection reuse its lane (and so the
    engine's backend connection), whatever the one before was: a chunked upload (which the
    fast path hands to aiohttp's handler), a HEAD, a body with a length. (The backend is
    asked for first so that it stops last, after the router has let its connection go.)"""
    seen: list[bytes] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            head = await read_head(r)
            method, target = head.split(b" ", 2)[:2]
            lower = head.lower()
            body = b""
            if b"transfer-encoding: chunked" in lower:
                while size := int((await r.readuntil(b"\r\n")).split(b";")[0], 16):
                    body += (await r.readexactly(size + 2))[:-2]
                await r.readuntil(b"\r\n")
            elif b"content-length: " in lower:
                length = int(lower.split(b"content-length: ")[1].split(b"\r\n")[0])
                body = await r.readexactly(length)
            seen.append(method + b" " + target + b" " + body)
            answer = b"%b %b %d" % (method, target, len(body))
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(answer))
            if method != b"HEAD":
                w.write(answer)
            await w.drain()

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        for method, path, body, length in [
            ("GET", "/1", b"", False),
            ("POST", "/2", b"chunked", False),
            ("GET", "/3", b"", False),
            ("HEAD", "/4", b"", False),
            ("PUT", "/5", b"sized", True),
            ("GET", "/6", b"", False),
            ("POST", "/7", b"again", False),
            ("GET", "/8", b"", False),
        ]:
            extra = {"content_length": str(len(body))} if length else {}
            sid = c.request(request_headers(path, method, **extra), end_stream=not body)
            if body:
                await c.send_body(sid, body)
            stream = await c.response(sid)
            answer = b"%b %b %d" % (method.encode(), path.encode(), len(body))
            assert stream.status == 200 and stream.reset is None
            assert bytes(stream.data) == (b"" if method == "HEAD" else answer)
    assert [line.split(b" ", 1)[1] for line in seen] == [
        b"/1 ", b"/2 chunked", b"/3 ", b"/4 ", b"/5 sized", b"/6 ", b"/7 again", b"/8 ",
    ]  # fmt: skip
    # one backend connection per engine the lane went through: the fast path's pool, then
    # (from the chunked upload on) aiohttp's
    assert rb.connections == (2 if tls.handle.router.fast_path else 1)


async def test_an_answer_before_the_upload_ends_stops_the_upload(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    """A backend that answers without reading the body: the client gets the whole answer,
    then (RFC 9113, 8.1) a reset with NO_ERROR at most, and its connection serves on."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        head = await read_head(r)
        if head.startswith(b"GET /after "):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nafter")
            await w.drain()
            return
        w.write(b"HTTP/1.1 413 Too Big\r\nContent-Length: 3\r\nConnection: close\r\n\r\nbig")
        w.write_eof()  # a lingering close, as servers do: what was sent is not reset away
        while await asyncio.wait_for(r.read(1 << 20), IO_TIMEOUT_S):
            pass

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        sid = c.request(request_headers("/up", "POST", content_length=str(64 * MiB)), False)
        sending = asyncio.create_task(c.send_body(sid, bytes(64 * MiB)))
        stream = await c.response(sid)
        sending.cancel()
        await asyncio.gather(sending, return_exceptions=True)
        assert stream.reset in (None, h2.errors.ErrorCodes.NO_ERROR)
        assert (stream.status, bytes(stream.data)) == (413, b"big")
        after = await get(c, request_headers("/after"))
    assert (after.status, bytes(after.data)) == (200, b"after")


async def test_a_backend_slow_to_read_an_upload_closes_the_clients_window(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    """Flow control upstream: while the backend reads nothing, the router stops opening the
    stream's window, so a 64 MiB upload cannot be sent whole into its memory; once the backend
    reads, every byte arrives. (The "cannot" gets a bounded second to go wrong.)"""
    size = 64 * MiB
    go = asyncio.Event()
    got: list[str] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_head(r)
        await asyncio.wait_for(go.wait(), IO_TIMEOUT_S * 3)
        digest = hashlib.sha256()
        left = size
        while left:
            data = await asyncio.wait_for(r.read(min(left, 1 << 20)), IO_TIMEOUT_S)
            assert data
            digest.update(data)
            left -= len(data)
        got.append(digest.hexdigest())
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await w.drain()

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    body = os.urandom(size)
    async with await tls.h2() as c:
        sid = c.request(request_headers("/up", "POST", content_length=str(size)), False)
        sending = asyncio.create_task(c.send_body(sid, body))
        done, _ = await asyncio.wait([sending], timeout=1.0)
        assert not done, "the router took a 64 MiB upload the backend did not read"
        go.set()
        await asyncio.wait_for(sending, IO_TIMEOUT_S * 3)
        stream = await c.response(sid)
    assert (stream.status, bytes(stream.data)) == (200, b"ok")
    assert got == [hashlib.sha256(body).hexdigest()]


# --- responses --------------------------------------------------------------------------------


def answer_once(response: bytes) -> Callable[..., Awaitable[None]]:
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        rb.received.append(await read_head(r))
        w.write(response)
        await w.drain()

    return handler


CHUNKED_WITH_TRAILERS = (
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n"
    b"Connection: close\r\n\r\n"
    b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\n\r\n"
)


async def http11_raw(tls: Tls, path: str) -> bytes:
    """What a plain HTTP/1.1 client reads from the same router for GET `path`."""
    reader, writer = await asyncio.open_connection("127.0.0.1", tls.port)
    try:
        writer.write(
            b"GET %b HTTP/1.1\r\nHost: api.localhost\r\nConnection: close\r\n\r\n" % path.encode()
        )
        return await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    finally:
        writer.close()
        await writer.wait_closed()


async def test_response_trailers_pass_as_the_http1_engine_relays_them(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    rb = await raw_backend(answer_once(CHUNKED_WITH_TRAILERS))
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        stream = await get(c, request_headers("/", te="trailers"))
    assert stream.status == 200 and bytes(stream.data) == b"hello world"
    assert stream.field(b"transfer-encoding") is None
    raw = await http11_raw(tls, "/")
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    relayed = b"X-Sum: 42" in raw.rpartition(b"0\r\n")[2]
    assert stream.trailers == ([(b"x-sum", b"42")] if relayed else None)


async def test_head_has_its_fields_and_no_body(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    async def page(request: web.Request) -> web.Response:
        return web.Response(body=b"x" * 1234)

    app = web.Application()
    app.router.add_get("/", page)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        head = await get(c, request_headers("/", "HEAD"))
        after = await get(c, request_headers("/"))  # the lane is clean for the next one
    assert head.status == 200 and head.field(b"content-length") == b"1234"
    assert head.data == b"" and head.ended and head.reset is None
    assert after.status == 200 and bytes(after.data) == b"x" * 1234


EARLY_HINTS = b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"


async def test_103_early_hints_are_passed_on_as_the_http1_engine_does(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    """An interim head reaches an HTTP/2 client exactly when the HTTP/1 engine relays it to
    an HTTP/1.1 client (neither engine does today: the fast path and aiohttp's client both
    drop 1xx heads); the final response is whole either way."""
    final = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
    rb = await raw_backend(answer_once(EARLY_HINTS + final))
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        stream = await get(c, request_headers("/"))
    assert stream.status == 200 and bytes(stream.data) == b"ok"
    relayed = await http11_raw(tls, "/")
    assert relayed.endswith(b"ok")
    if relayed.startswith(b"HTTP/1.1 103"):
        assert stream.informational == [[(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]]
    else:
        assert stream.informational == []


async def test_a_large_response_through_a_small_window_arrives_whole_and_in_order(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    body = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(10 * MiB // 32))

    async def big(request: web.Request) -> web.Response:
        return web.Response(body=body)

    app = web.Application()
    app.router.add_get("/big", big)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2(window=16 * 1024) as c:
        stream = await get(c, request_headers("/big"))
    assert stream.status == 200 and stream.field(b"content-length") == b"%d" % len(body)
    assert len(stream.data) == len(body) and bytes(stream.data) == body
    assert stream.frames >= len(body) // (16 * 1024)  # never more than the window at once


async def test_a_reset_mid_response_closes_the_backend_and_keeps_the_connection(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    gone = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        head = await read_head(r)
        if head.startswith(b"GET /ok "):
            w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await w.drain()
            return
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 65536)
        await w.drain()
        try:
            while await asyncio.wait_for(r.read(65536), IO_TIMEOUT_S):
                pass
        finally:
            gone.set()

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    async with await tls.h2() as c:
        sid = c.request(request_headers("/endless"))
        stream = await c.until(sid, lambda s: len(s.data) > 0)
        c.reset(sid)
        await asyncio.wait_for(gone.wait(), IO_TIMEOUT_S)  # the router let the backend go
        assert stream.reset is None
        after = await get(c, request_headers("/ok"))
    assert (after.status, bytes(after.data)) == (200, b"ok")


async def test_server_sent_events_arrive_one_by_one(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """Each event reaches the client before the backend writes the next: nothing on the
    way (the engine, the bridge, the stream) buffers it."""
    seen = [asyncio.Event() for _ in range(3)]

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        for i, event in enumerate(seen):
            await resp.write(b"data: %d\n\n" % i)
            await asyncio.wait_for(event.wait(), IO_TIMEOUT_S)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_get("/events", events)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        sid = c.request(request_headers("/events", accept="text/event-stream"))
        for i, event in enumerate(seen):
            stream = await c.until(sid, lambda s, i=i: b"data: %d\n\n" % i in s.data)
            assert stream.field(b"content-type") == b"text/event-stream"
            assert b"data: %d" % (i + 1) not in stream.data
            event.set()
        stream = await c.response(sid)
    assert stream.reset is None
    assert bytes(stream.data) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"


async def test_websocket_over_extended_connect(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    app = web.Application()
    app.router.add_get("/ws", ws_echo_text)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        settings = c.conn.remote_settings
        assert settings[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        sid = c.request(ws_connect(), end_stream=False)
        stream = await c.until(sid, lambda s: s.headers is not None or s.ended)
        assert stream.status == 200, (stream.headers, stream.reset)
        assert stream.field(b"sec-websocket-accept") is None
        for text in (b"hello", b"x" * 300, os.urandom(MiB // 2).hex().encode()):
            await c.send_body(sid, ws_frame(0x1, text), end_stream=False)
            await c.until(sid, lambda s: read_ws_frame(s.data) is not None)
            opcode, payload, used = read_ws_frame(stream.data) or (0, b"", 0)
            assert (opcode, payload) == (0x1, text)
            del stream.data[:used]
        await c.send_body(sid, ws_frame(0x8, b"\x03\xe8"), end_stream=False)  # close, 1000
        await c.until(sid, lambda s: read_ws_frame(s.data) is not None)
        opcode, payload, _ = read_ws_frame(stream.data) or (0, b"", 0)
        assert opcode == 0x8 and payload[:2] == b"\x03\xe8"
        # the backend closes after the close handshake: the router may have ended the stream
        # and reset it (NO_ERROR: its side is whole) before this END_STREAM is sent
        with contextlib.suppress(h2.exceptions.StreamClosedError):
            await c.send_body(sid, b"", end_stream=True)
        stream = await c.response(sid)
    assert stream.reset in (None, h2.errors.ErrorCodes.NO_ERROR)


async def test_a_client_that_goes_away_lets_every_backend_go(
    router: RouterFactory, raw_backend: Callable[..., Awaitable[RawBackend]], tmp_path: Path
) -> None:
    count = 5
    started = asyncio.Semaphore(0)
    gone = asyncio.Semaphore(0)

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_head(r)
        w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\nfirst")
        await w.drain()
        started.release()
        try:
            while await asyncio.wait_for(r.read(65536), IO_TIMEOUT_S):
                pass
        finally:
            gone.release()

    rb = await raw_backend(handler)
    tls = await tls_router(router, tmp_path, {"api": rb.port})
    c = await tls.h2()
    sids = [c.request(request_headers(f"/{i}")) for i in range(count)]
    for sid in sids:
        await c.until(sid, lambda s: b"first" in s.data)
    c.writer.transport.abort()  # no GOAWAY, no goodbye
    await c.close()
    async with asyncio.timeout(IO_TIMEOUT_S):
        for _ in range(count):
            await gone.acquire()
    assert rb.connections == count


async def test_shutdown_lets_open_streams_finish(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """The router stopping sends GOAWAY; a stream already open still gets its answer."""
    arrived = asyncio.Event()
    release = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        arrived.set()
        await asyncio.wait_for(release.wait(), IO_TIMEOUT_S)
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_get("/slow", slow)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        sid = c.request(request_headers("/slow"))
        await asyncio.wait_for(arrived.wait(), IO_TIMEOUT_S)
        closing = asyncio.create_task(tls.handle.router.close())
        await c.until(sid, lambda s: c.terminated is not None)
        assert c.terminated is not None
        assert c.terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
        assert c.terminated.last_stream_id is not None and c.terminated.last_stream_id >= sid
        release.set()
        stream = await c.response(sid)
        await asyncio.wait_for(closing, IO_TIMEOUT_S)
    assert (stream.status, bytes(stream.data)) == (200, b"finished")


# --- the router's own figures ----------------------------------------------------------------


async def test_status_counts_h2_requests(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2() as c:
        streams = await asyncio.gather(*(get(c, request_headers(f"/{i}")) for i in range(5)))
    assert [s.status for s in streams] == [200] * 5
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{tls.port}/api/status") as resp,
    ):
        doc = await resp.json()
    (api,) = [route for route in doc["routes"] if route["name"] == "api"]
    assert api["count"] == 5 and api["requests"]["2xx"] == 5

    # the router's own pages answer over HTTP/2 too
    async with await tls.h2(host="localhost") as c:
        own = await get(c, request_headers("/api/status", authority=f"localhost:{tls.port}"))
    assert own.status == 200 and own.field(b"content-type") == b"application/json; charset=utf-8"
    (api,) = [route for route in json.loads(bytes(own.data))["routes"] if route["name"] == "api"]
    assert api["count"] == 5


def counting_echo(seen: list[str]) -> web.Application:
    async def echo(request: web.Request) -> web.Response:
        seen.append(request.path)
        return web.Response(text=request.path)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.mark.parametrize(
    ("headers", "end_stream"),
    [
        pytest.param(request_headers("/bad", X_Upper="1"), True, id="an uppercase name"),
        pytest.param(request_headers("/bad", x="a\r\nx-evil: 1"), True, id="CRLF in a value"),
        pytest.param(request_headers("/bad", connection="close"), True, id="connection"),
        pytest.param(request_headers("/bad", te="gzip"), True, id="te: gzip"),
        pytest.param(
            [*request_headers("/bad")[:3], (b"x", b"1"), (b":path", b"/bad")],
            True,
            id="a pseudo-field after a regular one",
        ),
        pytest.param(
            request_headers("/bad", host="other.localhost"), True, id=":authority and host differ"
        ),
        pytest.param(
            request_headers("/bad", "POST", content_length="5"),
            True,
            id="a length and no body to come",
        ),
    ],
)
async def test_a_malformed_request_is_reset_and_the_connection_serves_on(
    router: RouterFactory,
    backend: BackendFactory,
    tmp_path: Path,
    headers: Headers,
    end_stream: bool,
) -> None:
    """A stream error (RFC 9113, 8.1.1): the other streams, and the connection, go on."""
    seen: list[str] = []
    tls = await tls_router(router, tmp_path, {"api": await backend(counting_echo(seen))})
    async with await tls.h2(checked=False) as c:
        bad = await c.response(c.request(headers, end_stream))
        good = await get(c, request_headers("/good"))
    assert bad.reset == h2.errors.ErrorCodes.PROTOCOL_ERROR and bad.headers is None
    assert (good.status, bytes(good.data)) == (200, b"/good")
    assert seen == ["/good"]


def ws_connect(path: str = "/ws", authority: str = "api.localhost") -> Headers:
    headers = request_headers(path, "CONNECT", authority, sec_websocket_version="13")
    headers.insert(1, (b":protocol", b"websocket"))
    return headers


async def test_a_websocket_to_a_page_is_no_tunnel(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """A backend that answers the upgrade with a page (an SPA's index) opens no tunnel: the
    client gets no 2xx, which would say it had one (RFC 8441, 5)."""
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2() as c:
        sid = c.request(ws_connect(), end_stream=False)
        stream = await c.until(sid, lambda s: s.headers is not None or s.ended)
        assert stream.headers is None or not 200 <= stream.status < 300, stream.headers
        c.reset(sid)
        after = await get(c, request_headers("/after"))
    assert json_of(after)["target"] == "/after"


async def test_a_websocket_to_an_unknown_name_is_a_404(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    tls = await tls_router(router, tmp_path, {"api": await backend(echo_app())})
    async with await tls.h2(host="nope.localhost") as c:
        sid = c.request(ws_connect(authority="nope.localhost"), end_stream=False)
        stream = await c.until(sid, lambda s: s.headers is not None or s.ended)
        assert stream.status == 404


async def test_long_lived_streams_do_not_hold_the_gate(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """More event streams than the gate lets through at once stay open, and a plain request
    to the same name still answers: an event stream leaves the gate once it is one."""
    count = MAX_STREAMS_PER_NAME + 8
    done = asyncio.Event()

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: hi\n\n")
        await asyncio.wait_for(done.wait(), IO_TIMEOUT_S)
        await resp.write_eof()
        return resp

    async def page(request: web.Request) -> web.Response:
        return web.Response(text="page")

    app = web.Application()
    app.router.add_get("/events", events)
    app.router.add_get("/page", page)
    tls = await tls_router(router, tmp_path, {"api": await backend(app)})
    async with await tls.h2() as c:
        sids = [c.request(request_headers("/events")) for _ in range(count)]
        for sid in sids:
            await c.until(sid, lambda s: b"data: hi" in s.data)
        plain = await get(c, request_headers("/page"))
        done.set()
        ended = [await c.response(sid) for sid in sids]
    assert (plain.status, bytes(plain.data)) == (200, b"page")
    assert all(s.reset is None and bytes(s.data) == b"data: hi\n\n" for s in ended)
