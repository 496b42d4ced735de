"""devrouter.proxy.handler / devrouter.server.upstream / devrouter.web.pages: what a request and a
response look like on each side of the router, byte for byte where it matters.

Checklist: issue 2, "Proxying: what must be exactly right", and ../shared/security-catalog.md
sections A, B, C, D and H. Byte-level cases use raw sockets on both sides (`raw_backend`
records exactly what the backend read); the rest use aiohttp with `auto_decompress=False`.
No test measures time: every wait is bounded by a timeout, every ordering question is
answered with an event the test controls, and the few "must not happen" checks (an idle
stream cut, a stalled peer's body buffered) give the router a bounded second to misbehave.

The `router` fixture runs each test twice: on the protocol-level fast path and on the
aiohttp handler alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import hashlib
import os
import re
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import aiohttp
import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, RawBackend, free_port, make_config, raw_exchange, read_head
from multidict import CIMultiDict

MiB = 1 << 20
#: aiohttp answers requests its parser rejects with an HTTP/1.0 status line
BAD_REQUEST = re.compile(rb"HTTP/1\.[01] 400 ")
OK_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"


# --- a small HTTP/1.1 message reader for both sides ----------------------------------------


@dataclass
class Msg:
    head: bytes  # start line and headers, up to and including the blank line
    start: str
    headers: list[tuple[str, str]]
    body: bytes  # de-chunked
    chunked: bool

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def one(self, name: str) -> str | None:
        values = self.all(name)
        assert len(values) <= 1, f"{name} repeated: {values!r}"
        return values[0] if values else None

    def has(self, name: str) -> bool:
        return bool(self.all(name))

    @property
    def status(self) -> int:
        return int(self.start.split(" ", 2)[1])

    @property
    def names(self) -> set[str]:
        return {k.lower() for k, _ in self.headers}


def parse_head(head: bytes) -> tuple[str, list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    headers = []
    for line in lines[1:]:
        if line:
            k, _, v = line.partition(":")
            headers.append((k, v.strip(" \t")))
    return lines[0], headers


async def read_chunked(reader: asyncio.StreamReader) -> bytes:
    out = bytearray()
    while True:
        line = await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT_S)
        size = int(line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            while (await asyncio.wait_for(reader.readuntil(b"\r\n"), IO_TIMEOUT_S)) != b"\r\n":
                pass  # trailers
            return bytes(out)
        out += await asyncio.wait_for(reader.readexactly(size), IO_TIMEOUT_S)
        assert await asyncio.wait_for(reader.readexactly(2), IO_TIMEOUT_S) == b"\r\n"


async def read_message(
    reader: asyncio.StreamReader, *, response: bool = False, method: str = "GET"
) -> Msg:
    """One request (response=False) or response, with its body read by its own framing."""
    head = await read_head(reader)
    start, headers = parse_head(head)
    msg = Msg(head, start, headers, b"", False)
    te = msg.all("Transfer-Encoding")
    cl = msg.all("Content-Length")
    if response and (method == "HEAD" or msg.status in (204, 304) or msg.status < 200):
        return msg
    if te:
        msg.chunked = True
        msg.body = await read_chunked(reader)
    elif cl:
        msg.body = await asyncio.wait_for(reader.readexactly(int(cl[0])), IO_TIMEOUT_S)
    elif response:
        msg.body = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    return msg


async def parse_responses(data: bytes, methods: tuple[str, ...] = ("GET",)) -> list[Msg]:
    """Split a byte stream from the router into responses; fails on any stray byte."""
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    out = []
    for method in methods:
        msg = await read_message(reader, response=True, method=method)
        while 100 <= msg.status < 200:  # interim responses belong to the same request
            msg = await read_message(reader, response=True, method=method)
        out.append(msg)
    rest = await reader.read()
    assert rest == b"", f"bytes after the last response: {rest[:200]!r}"
    return out


def req(
    target: str = "/",
    host: str | None = "app.localhost",
    method: str = "GET",
    headers: tuple[str, ...] = (),
    body: bytes = b"",
    version: str = "HTTP/1.1",
    close: bool = True,
) -> bytes:
    lines = [f"{method} {target} {version}"]
    if host is not None:
        lines.append(f"Host: {host}")
    lines += headers
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body


async def exchange(port: int, data: bytes, methods: tuple[str, ...] = ("GET",)) -> list[Msg]:
    return await parse_responses(await raw_exchange(port, data), methods)


async def one(port: int, data: bytes, method: str = "GET") -> Msg:
    (msg,) = await exchange(port, data, (method,))
    return msg


# --- backends -------------------------------------------------------------------------------


def capture(
    response: bytes = OK_RESPONSE, seen: list[Msg] | None = None
) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter, RawBackend], Awaitable[None]]:
    """A keep-alive raw backend that records each request (head + de-chunked body) and answers
    every one with `response`."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            msg = await read_message(r)
            rb.received.append(msg.head + msg.body)
            if seen is not None:
                seen.append(msg)
            w.write(response)
            await w.drain()

    return handler


def sent(rb: RawBackend, i: int = 0) -> Msg:
    """The i-th request the raw backend read, parsed."""
    head, _, body = rb.received[i].partition(b"\r\n\r\n")
    start, headers = parse_head(head + b"\r\n\r\n")
    return Msg(head + b"\r\n\r\n", start, headers, body, False)


async def capture_backend(raw_backend, response: bytes = OK_RESPONSE) -> RawBackend:
    return await raw_backend(capture(response))


def client(**kw) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=30),
        **kw,
    )


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


# === C15: the request target, byte for byte ================================================


@pytest.mark.parametrize(
    "target",
    [
        "/api/%2e%2e/admin",
        "/api/../admin",
        "//x//y",
        "/a%2Fb",
        "/a%3Fx",
        "/a%23f",
        "/a?b=%20c",
        "/a%0d%0aX:1",
        "/p?q=1&q=2&r=%2F&s=a+b",
    ],
)
async def test_request_line_is_byte_identical(raw_backend, router, target):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(target))
    assert resp.status == 200
    assert sent(rb).start == f"GET {target} HTTP/1.1"


async def test_host_passes_unchanged(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(host="App.LocalHost.:7355"))
    assert resp.status == 200
    assert sent(rb).all("Host") == ["App.LocalHost.:7355"]


async def test_port_in_host_does_not_choose_the_upstream(raw_backend, router):
    rb = await capture_backend(raw_backend)
    other = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(host=f"app.localhost:{other.port}"))
    assert resp.status == 200
    assert len(rb.received) == 1
    assert other.connections == 0


async def test_repeated_request_headers_are_kept_in_order(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(
        r.port, req(headers=("X-Multi: 1", "Cookie: a=1", "X-Multi: 2", "Cookie: b=2"))
    )
    assert resp.status == 200
    got = sent(rb)
    assert got.all("X-Multi") == ["1", "2"]
    assert got.all("Cookie") == ["a=1", "b=2"]


# === C16: hop-by-hop headers ================================================================


async def test_hop_by_hop_request_headers_are_stripped(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(
        r.port,
        req(
            headers=(
                "Connection: close, X-Secret-Hop, Upgrade, HTTP2-Settings",
                "X-Secret-Hop: 1",
                "Keep-Alive: timeout=5, max=100",
                "Proxy-Connection: keep-alive",
                "TE: trailers",
                "Trailer: X-Checksum",
                "Upgrade: h2c",
                "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
                "Proxy-Authorization: Basic dXNlcjpwYXNz",
                "X-End-To-End: kept",
            ),
            close=False,
        ),
    )
    assert resp.status == 200
    got = sent(rb)
    for name in (
        "x-secret-hop",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "http2-settings",
        "proxy-authorization",
        "transfer-encoding",
    ):
        assert name not in got.names, f"{name} reached the backend: {got.head!r}"
    for value in got.all("Connection"):  # the router may say keep-alive/close, nothing more
        assert value.lower() in ("keep-alive", "close"), got.head
    assert got.all("X-End-To-End") == ["kept"]


async def test_h2c_upgrade_is_ignored_and_a_pipelined_request_still_answered(raw_backend, router):
    """Catalog B14: an h2c upgrade request gets a normal HTTP/1.1 answer; the client then
    carries on in HTTP/1.1, so a request pipelined behind it must be answered, or the router
    must say `Connection: close` and close (never leave it unanswered on an open socket)."""
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.write(
            req(
                "/1",
                close=False,
                headers=(
                    "Connection: Upgrade, HTTP2-Settings",
                    "Upgrade: h2c",
                    "HTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA",
                ),
            )
            + req("/2", close=False)
        )
        await writer.drain()
        first = await read_message(reader, response=True)
        assert first.status == 200 and first.body == b"ok"
        assert not first.has("Upgrade")
        # the router's keep-alive timeout is 15 s; 5 s is ample for an answer or a close
        second: Msg | str
        try:
            second = await asyncio.wait_for(read_message(reader, response=True), 5)
        except asyncio.IncompleteReadError:
            second = "closed"
        except TimeoutError:
            second = "no answer, connection left open"
        if second == "closed":
            assert "close" in (first.one("Connection") or "").lower(), first.head
        else:
            assert isinstance(second, Msg), f"pipelined request after an h2c upgrade: {second}"
            assert second.status == 200 and second.body == b"ok"
    finally:
        writer.close()
    assert "upgrade" not in seen[0].names and "http2-settings" not in seen[0].names


async def test_hop_by_hop_response_headers_are_stripped(raw_backend, router):
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\n"
        b"Connection: keep-alive, X-Resp-Hop\r\n"
        b"Keep-Alive: timeout=5\r\n"
        b"X-Resp-Hop: secret\r\n"
        b"Proxy-Authenticate: Basic realm=x\r\n"
        b"Proxy-Connection: keep-alive\r\n"
        b"Trailer: X-Sum\r\n"
        b"X-Kept: yes\r\n"
        b"Content-Length: 2\r\n\r\nok",
    )
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.status == 200
    assert resp.body == b"ok"
    for name in ("keep-alive", "x-resp-hop", "proxy-authenticate", "proxy-connection", "trailer"):
        assert name not in resp.names, f"{name} reached the client: {resp.head!r}"
    for value in resp.all("Connection"):
        assert value.lower() in ("keep-alive", "close"), resp.head
    assert resp.all("X-Kept") == ["yes"]


# === A7: forwarding headers =================================================================


async def test_forwarding_headers_are_the_routers_own(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(
        r.port,
        req(
            host="app.localhost:7355",
            headers=(
                "X-Forwarded-For: 203.0.113.9",
                "X-Forwarded-Host: evil.example",
                "X-Forwarded-Proto: https",
                "X-Forwarded-Port: 443",
                "Forwarded: for=203.0.113.9;host=evil.example;proto=https",
                "X-Real-IP: 203.0.113.9",
            ),
        ),
    )
    assert resp.status == 200
    got = sent(rb)
    xff = got.all("X-Forwarded-For")
    assert len(xff) == 1 and xff[0].replace(" ", "").split(",")[-1] == "127.0.0.1", xff
    assert got.all("X-Forwarded-Proto") == ["http"]
    assert got.all("X-Forwarded-Host") == ["app.localhost:7355"]
    assert got.all("X-Forwarded-Port") == [str(r.port)]
    fwd = got.all("Forwarded")
    assert len(fwd) == 1 and "for=127.0.0.1" in fwd[0] and "evil" not in fwd[0], fwd
    assert "proto=http" in fwd[0]
    assert not got.has("X-Real-IP")
    assert "evil.example" not in got.head.decode("latin-1")


async def test_connection_header_cannot_delete_the_routers_forwarding_headers(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(
        r.port,
        req(
            headers=("Connection: close, X-Forwarded-Host, X-Forwarded-For, Forwarded",),
            close=False,
        ),
    )
    assert resp.status == 200
    got = sent(rb)
    assert got.all("X-Forwarded-Host") == ["app.localhost"]
    assert got.one("X-Forwarded-For") is not None
    assert got.one("Forwarded") is not None


# === C17, C19: nothing injected, framing re-done by the router ==============================


async def test_bodyless_get_goes_upstream_without_injected_headers_or_framing(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.status == 200
    got = seen[0]
    for name in (
        "user-agent",
        "accept",
        "accept-encoding",
        "content-type",
        "transfer-encoding",
        "content-length",
        "expect",
        "cookie",
    ):
        assert name not in got.names, f"{name} injected: {got.head!r}"
    assert got.body == b""


async def test_client_headers_that_aiohttp_would_add_are_passed_as_sent(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(
        r.port,
        req(headers=("User-Agent: curl/8.5.0", "Accept: */*", "Accept-Encoding: br")),
    )
    assert resp.status == 200
    got = sent(rb)
    assert got.all("User-Agent") == ["curl/8.5.0"]
    assert got.all("Accept") == ["*/*"]
    assert got.all("Accept-Encoding") == ["br"]


async def test_post_with_content_length_keeps_it(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(method="POST", headers=("Content-Length: 5",), body=b"hello"))
    assert resp.status == 200
    got = seen[0]
    assert got.all("Content-Length") == ["5"]
    assert not got.has("Transfer-Encoding")
    assert not got.has("Content-Type")
    assert got.body == b"hello"


async def test_chunked_upload_is_reframed_and_arrives_intact(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    body = chunk(b"hel") + chunk(b"lo wor") + chunk(b"ld") + b"0\r\n\r\n"
    resp = await one(r.port, req(method="POST", headers=("Transfer-Encoding: chunked",), body=body))
    assert resp.status == 200
    got = seen[0]
    assert got.body == b"hello world"
    framing = got.all("Transfer-Encoding") + got.all("Content-Length")
    assert framing in (["chunked"], ["11"]), got.head
    assert not got.has("Content-Type")


# === C18: compression passes through untouched ==============================================


async def test_gzip_response_passes_through_byte_identical(raw_backend, router):
    payload = gzip.compress(b"x" * 1200)
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Encoding: gzip\r\n"
        b"Vary: Accept-Encoding\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload,
    )
    r = await router(make_config({"app": rb.port}))
    # raw bytes: the framing and body the client gets
    resp = await one(r.port, req(headers=("Accept-Encoding: gzip",)))
    assert resp.status == 200
    assert resp.all("Content-Encoding") == ["gzip"]
    assert resp.all("Content-Length") == [str(len(payload))]
    assert not resp.has("Transfer-Encoding")
    assert resp.body == payload
    # and through an HTTP client that does not decompress either
    async with client() as s, s.get(r.url("app"), headers={"Host": "app.localhost"}) as res:
        assert res.headers["Content-Encoding"] == "gzip"
        assert res.headers["Content-Length"] == str(len(payload))
        assert await res.read() == payload


async def test_gzip_request_body_arrives_untouched(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    payload = gzip.compress(b'{"k": "' + b"v" * 2000 + b'"}')
    resp = await one(
        r.port,
        req(
            method="POST",
            headers=(
                "Content-Type: application/json",
                "Content-Encoding: gzip",
                f"Content-Length: {len(payload)}",
            ),
            body=payload,
        ),
    )
    assert resp.status == 200
    got = seen[0]
    assert got.all("Content-Encoding") == ["gzip"]
    assert got.all("Content-Length") == [str(len(payload))]
    assert got.body == payload


# === C22, C23: repeated response headers, redirects, cookies ================================


async def test_two_set_cookie_headers_both_reach_the_client(raw_backend, router):
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\nSet-Cookie: a=1; Path=/\r\nSet-Cookie: b=2; Path=/\r\n"
        b"Content-Length: 2\r\n\r\nok",
    )
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.all("Set-Cookie") == ["a=1; Path=/", "b=2; Path=/"]


async def test_redirect_is_relayed_not_followed(backend, router):
    followed = []

    async def redirect(request: web.Request) -> web.Response:
        return web.Response(status=302, headers={"Location": f"http://127.0.0.1:{port}/x"})

    async def target(request: web.Request) -> web.Response:
        followed.append(request.path)
        return web.Response(text="followed")

    app = web.Application()
    app.router.add_get("/r", redirect)
    app.router.add_get("/x", target)
    port = await backend(app)
    r = await router(make_config({"app": port}))
    resp = await one(r.port, req("/r"))
    assert resp.status == 302
    assert resp.all("Location") == [f"http://127.0.0.1:{port}/x"]
    assert followed == []


async def test_backend_cookie_is_not_replayed(backend, router):
    cookies = []

    async def set_cookie(request: web.Request) -> web.Response:
        cookies.append(request.headers.get("Cookie"))
        resp = web.Response(text="set")
        resp.set_cookie("sid", "secret", path="/")
        return resp

    app = web.Application()
    app.router.add_get("/{tail:.*}", set_cookie)
    port = await backend(app)
    # aiohttp's default jar replays cookies for host names but not for IP literals; the
    # router dials IP literals, so this also guards against a jar built with unsafe=True
    r = await router(make_config({"app": {"target": f"http://localhost:{port}"}, "ip": port}))
    for host in ("app.localhost", "app.localhost", "ip.localhost", "ip.localhost"):
        resp = await one(r.port, req("/c", host=host))
        assert resp.status == 200
        assert resp.all("Set-Cookie")
    assert cookies == [None, None, None, None]


# === C20 and the writer's defaults ==========================================================


async def test_no_server_date_or_content_type_added(raw_backend, router):
    rb = await capture_backend(raw_backend, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.status == 200
    for name in ("server", "date", "content-type"):
        assert name not in resp.names, f"{name} added: {resp.head!r}"
    assert resp.body == b"ok"


async def test_backend_server_date_content_type_are_kept(raw_backend, router):
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\nServer: vite\r\nDate: Mon, 01 Jan 2024 00:00:00 GMT\r\n"
        b"Content-Type: application/x-custom\r\nContent-Length: 2\r\n\r\nok",
    )
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.all("Server") == ["vite"]
    assert resp.all("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
    assert resp.all("Content-Type") == ["application/x-custom"]


async def test_head_keeps_content_length_and_a_pipelined_get_works(raw_backend, router):
    seen: list[Msg] = []

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            msg = await read_message(r)
            seen.append(msg)
            if msg.start.startswith("HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            await w.drain()

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))
    head, get = await exchange(
        r.port, req("/h", method="HEAD", close=False) + req("/g"), ("HEAD", "GET")
    )
    assert head.status == 200
    assert head.all("Content-Length") == ["1234"]
    assert not head.has("Transfer-Encoding")
    assert get.status == 200 and get.body == b"hello"
    assert [m.start for m in seen] == ["HEAD /h HTTP/1.1", "GET /g HTTP/1.1"]


async def test_204_and_304_have_no_body(raw_backend, router):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            msg = await read_message(r)
            if msg.start.startswith("GET /204"):
                w.write(b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n")
            elif msg.start.startswith("GET /304"):
                w.write(b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nlast")
            await w.drain()

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(
        r.port,
        req("/204", close=False)
        + req("/304", close=False, headers=('If-None-Match: "v1"',))
        + req("/end"),
    )
    # parse_responses reads 204/304 as head-only: any body byte would break the next status
    r204, r304, last = await parse_responses(raw, ("GET", "GET", "GET"))
    assert r204.status == 204 and r304.status == 304
    for m in (r204, r304):
        assert not m.has("Transfer-Encoding"), m.head
        assert m.all("Content-Length") in ([], ["0"]), m.head
    assert r304.all("ETag") == ['"v1"']
    assert last.status == 200 and last.body == b"last"


async def test_http10_client_gets_no_chunked_encoding(raw_backend, router):
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        + chunk(b"hello ")
        + chunk(b"world")
        + b"0\r\n\r\n",
    )
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, req(version="HTTP/1.0", close=False))
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith((b"HTTP/1.0 200", b"HTTP/1.1 200")), raw[:200]
    assert b"transfer-encoding" not in head.lower()
    assert body == b"hello world"


# === C21: Expect: 100-continue ==============================================================


async def test_expect_100_continue_to_a_backend_that_never_sends_100(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.write(req(method="POST", headers=("Content-Length: 5", "Expect: 100-continue")))
        await writer.drain()
        interim = await read_head(reader)  # bounded: the router must not wait for the body
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n"), interim
        writer.write(b"hello")
        await writer.drain()
        final = await read_message(reader, response=True)
        assert final.status == 200 and final.body == b"ok"
    finally:
        writer.close()
    assert seen[0].body == b"hello"
    assert not seen[0].has("Expect"), seen[0].head


async def test_expect_100_continue_with_body_sent_at_once(raw_backend, router):
    """curl sends the body anyway after a second: that must work too."""
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    (final,) = await exchange(
        r.port,
        req(method="POST", headers=("Content-Length: 5", "Expect: 100-continue"), body=b"hello"),
        ("POST",),
    )
    assert final.status == 200
    assert seen[0].body == b"hello"
    assert not seen[0].has("Expect")


# === D24, D25: streaming ====================================================================


async def read_until(content: aiohttp.StreamReader, buf: bytes, needle: bytes) -> bytes:
    while needle not in buf:
        data = await asyncio.wait_for(content.readany(), IO_TIMEOUT_S)
        assert data, f"stream ended before {needle!r}; got {buf[-200:]!r}"
        buf += data
    return buf


async def test_sse_events_arrive_one_by_one(backend, router):
    go = asyncio.Event()
    last_event_ids = []

    async def sse(request: web.Request) -> web.StreamResponse:
        last_event_ids.append(request.headers.get("Last-Event-ID"))
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        await resp.write(b"id: 1\ndata: one\n\n")
        await go.wait()
        await resp.write(b"id: 2\ndata: two\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/events", sse)
    port = await backend(app)
    r = await router(make_config({"app": port}))
    async with (
        client() as s,
        s.get(
            r.url("app", "/events"),
            headers={"Host": "app.localhost", "Accept": "text/event-stream", "Last-Event-ID": "0"},
        ) as resp,
    ):
        assert resp.status == 200
        assert resp.headers["Content-Type"] == "text/event-stream"
        assert "Content-Length" not in resp.headers
        assert "Content-Encoding" not in resp.headers
        # the second event does not exist yet: the first must get through on its own
        first = await read_until(resp.content, b"", b"\n\n")
        assert first == b"id: 1\ndata: one\n\n"
        go.set()
        rest = await asyncio.wait_for(resp.content.read(), IO_TIMEOUT_S)
        assert rest == b"id: 2\ndata: two\n\n"
    assert last_event_ids == ["0"]


async def test_sse_one_mib_data_line_survives(backend, router):
    line = b"data: " + b"x" * MiB + b"\n\n"

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(line)
        await resp.write(b"data: after\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/events", sse)
    port = await backend(app)
    r = await router(make_config({"app": port}))
    async with (
        client() as s,
        s.get(r.url("app", "/events"), headers={"Host": "app.localhost"}) as resp,
    ):
        assert resp.status == 200
        body = await asyncio.wait_for(resp.read(), IO_TIMEOUT_S)
    assert body == line + b"data: after\n\n"


async def test_client_disconnect_mid_stream_reaches_the_backend(raw_backend, router):
    started = asyncio.Event()
    gone = asyncio.Event()

    async def stream(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_message(r)
        w.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" + chunk(b"data: one\n\n")
        )
        await w.drain()
        started.set()
        try:
            await r.read()  # returns at EOF: the router closed its upstream connection
        finally:
            gone.set()

    rb = await raw_backend(stream)
    r = await router(make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(req("/events", close=False))
    await writer.drain()
    got = b""
    while b"data: one" not in got:
        data = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT_S)
        assert data
        got += data
    await asyncio.wait_for(started.wait(), IO_TIMEOUT_S)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(gone.wait(), 5)


async def test_long_idle_stream_is_not_cut_by_the_route_timeout(backend, router):
    """The route timeout is for response headers; a stream idle for longer than that (here
    several timeouts, released by an event after the client has waited) is not cut."""
    go = asyncio.Event()

    async def sse(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: one\n\n")
        await go.wait()
        await resp.write(b"data: two\n\n")
        return resp

    app = web.Application()
    app.router.add_get("/events", sse)
    port = await backend(app)
    r = await router(make_config({"app": {"port": port, "timeout": 0.2}}))
    async with (
        client() as s,
        s.get(r.url("app", "/events"), headers={"Host": "app.localhost"}) as resp,
    ):
        assert resp.status == 200
        await read_until(resp.content, b"", b"\n\n")
        # nothing arrives while the backend is idle: waiting past the timeout times out here
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(resp.content.readany(), 1.0)
        go.set()
        rest = await asyncio.wait_for(resp.content.read(), IO_TIMEOUT_S)
    assert rest == b"data: two\n\n"


# === D26: large bodies, streamed ============================================================


BIG = 64 * MiB


@pytest.fixture(scope="module")
def block() -> bytes:
    return os.urandom(MiB)


def big_digest(block: bytes) -> str:
    h = hashlib.sha256()
    for _ in range(BIG // MiB):
        h.update(block)
    return h.hexdigest()


async def test_64_mib_download_is_streamed_intact(backend, router, block):
    done = asyncio.Event()

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        resp.content_length = BIG
        await resp.prepare(request)
        for _ in range(BIG // MiB):
            await resp.write(block)
        done.set()
        return resp

    app = web.Application()
    app.router.add_get("/big", download)
    port = await backend(app)
    r = await router(make_config({"app": port}))
    h = hashlib.sha256()
    n = 0
    async with client() as s, s.get(r.url("app", "/big"), headers={"Host": "app.localhost"}) as res:
        assert res.status == 200
        assert res.headers["Content-Length"] == str(BIG)
        first = await asyncio.wait_for(res.content.readany(), IO_TIMEOUT_S)
        # a router that buffered the body would have let the backend finish before this
        assert not done.is_set(), "the backend wrote all 64 MiB before the client got a byte"
        h.update(first)
        n += len(first)
        while True:
            data = await asyncio.wait_for(res.content.readany(), IO_TIMEOUT_S)
            if not data:
                break
            h.update(data)
            n += len(data)
    assert n == BIG
    assert h.hexdigest() == big_digest(block)


@pytest.mark.parametrize("framing", ["chunked", "content-length"])
async def test_64_mib_upload_is_streamed_intact(backend, router, block, framing):
    client_done = asyncio.Event()
    result: dict[str, object] = {}

    async def upload(request: web.Request) -> web.Response:
        h = hashlib.sha256()
        n = 0
        async for data in request.content.iter_any():
            if n == 0:
                result["client_done_at_first_chunk"] = client_done.is_set()
            h.update(data)
            n += len(data)
        result["n"] = n
        result["sha"] = h.hexdigest()
        result["te"] = request.headers.get("Transfer-Encoding")
        result["cl"] = request.headers.get("Content-Length")
        return web.Response(text="stored")

    app = web.Application(client_max_size=1024)  # streaming never calls read()
    app.router.add_post("/up", upload)
    port = await backend(app)
    r = await router(make_config({"app": port}))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // MiB):
            yield block
        client_done.set()

    headers = {"Host": "app.localhost"}
    if framing == "content-length":
        headers["Content-Length"] = str(BIG)
    async with client() as s, s.post(r.url("app", "/up"), data=body(), headers=headers) as res:
        assert res.status == 200
        assert await res.text() == "stored"
    assert result["n"] == BIG
    assert result["sha"] == big_digest(block)
    assert result["client_done_at_first_chunk"] is False, "the router buffered the upload"
    if framing == "content-length":
        assert result["cl"] == str(BIG) and result["te"] is None
    else:
        assert result["te"] == "chunked" or result["cl"] == str(BIG)


async def test_slow_client_download_applies_backpressure(backend, router, block):
    """A client that stops reading stops the backend too (bounded memory): the router must
    not read a 64 MiB body into its own buffers."""
    written = [0]
    done = asyncio.Event()

    async def download(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.content_length = BIG
        await resp.prepare(request)
        for _ in range(BIG // MiB):
            await resp.write(block)
            written[0] += MiB
        done.set()
        return resp

    app = web.Application()
    app.router.add_get("/big", download)
    port = await backend(app)
    r = await router(make_config({"app": port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.transport.set_write_buffer_limits(0)
        sock = writer.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
        writer.write(req("/big", close=False))
        await writer.drain()
        await read_head(reader)
        writer.transport.pause_reading()
        # the client reads nothing more; give the backend ample time to push what it can
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(done.wait(), 1.0)
        assert not done.is_set(), "the backend wrote all 64 MiB to a client that reads nothing"
        assert written[0] <= BIG // 2, f"{written[0] // MiB} MiB buffered for a stalled client"
    finally:
        writer.transport.abort()


async def test_slow_backend_upload_applies_backpressure(backend, router, block):
    """A backend that does not read stops the client's upload (bounded memory)."""
    sent_bytes = [0]
    go = asyncio.Event()
    got: dict[str, object] = {}

    async def upload(request: web.Request) -> web.Response:
        await go.wait()
        h = hashlib.sha256()
        n = 0
        async for data in request.content.iter_any():
            h.update(data)
            n += len(data)
        got["n"], got["sha"] = n, h.hexdigest()
        return web.Response(text="stored")

    app = web.Application()
    app.router.add_post("/up", upload)
    port = await backend(app)
    r = await router(make_config({"app": port}))

    async def body() -> AsyncIterator[bytes]:
        for _ in range(BIG // MiB):
            yield block
            sent_bytes[0] += MiB

    async with client() as s:
        task = asyncio.ensure_future(
            s.post(
                r.url("app", "/up"),
                data=body(),
                headers={"Host": "app.localhost", "Content-Length": str(BIG)},
            )
        )
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 1.0)
            assert sent_bytes[0] <= BIG // 2, (
                f"{sent_bytes[0] // MiB} MiB taken from the client while the backend read nothing"
            )
        finally:
            go.set()
        res = await asyncio.wait_for(task, 30)
        async with res:
            assert res.status == 200
    assert got["n"] == BIG and got["sha"] == big_digest(block)


# === A: names, Hosts, request targets, methods, versions; error pages =======================


async def test_unknown_localhost_name_gets_404_listing_routes(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port, "web": rb.port}))
    resp = await one(r.port, req(host="nope.localhost", headers=("User-Agent: curl/8",)))
    assert resp.status == 404
    text = resp.body.decode()
    assert "nope" in text
    assert f"http://app.localhost:{r.port}/" in text
    assert f"http://web.localhost:{r.port}/" in text
    assert rb.connections == 0


async def test_foreign_host_gets_421_never_forwarded(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    for accept in ("*/*", "text/html"):
        resp = await one(r.port, req(host="attacker.example:1355", headers=(f"Accept: {accept}",)))
        assert resp.status == 421
        assert b"app.localhost" not in resp.body  # no route list for a rebinding page
        assert str(rb.port).encode() not in resp.body
    assert rb.connections == 0


@pytest.mark.parametrize(
    "host_lines",
    [
        ["Host: a.localhost, b.localhost"],
        ["Host: a.localhost admin"],
        ["Host: evil@a.localhost"],
        ["Host: a.localhost/\\:1"],
        ["Host: ..a.localhost"],
        ["Host: a%2elocalhost"],
        ["Host: \u0430pp.localhost"],  # Cyrillic a (U+0430)
        ["Host: app.localhost:9000:80"],
        ["Host:"],
        ["Host: a.localhost", "Host: a.localhost"],
        ["Host: app.localhost", "Host: other.localhost"],
    ],
    ids=[
        "comma",
        "space",
        "userinfo",
        "slash",
        "dots",
        "pct",
        "cyrillic",
        "two-ports",
        "empty",
        "dup-same",
        "dup-different",
    ],
)
async def test_malformed_host_is_400_never_500(raw_backend, router, host_lines):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"a": rb.port, "app": rb.port, "b": rb.port}))
    raw = await raw_exchange(r.port, req(host=None, headers=tuple(host_lines)))
    assert BAD_REQUEST.match(raw), raw[:200]
    assert rb.connections == 0


async def test_http10_without_host_is_400(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, b"GET / HTTP/1.0\r\n\r\n")
    assert BAD_REQUEST.match(raw), raw[:200]
    assert rb.connections == 0


async def test_host_with_case_trailing_dot_and_port_routes(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(host="APP.localhost.:1355"))
    assert resp.status == 200
    assert len(rb.received) == 1


async def test_absolute_form_to_another_authority_is_400_and_never_dialled(raw_backend, router):
    rb = await capture_backend(raw_backend)
    elsewhere = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    for target in (
        f"http://127.0.0.1:{elsewhere.port}/",
        "http://127.0.0.1:22/",
        "http://other.localhost/",
        f"http://localhost:{r.port}/",
    ):
        raw = await raw_exchange(r.port, req(target))
        assert BAD_REQUEST.match(raw), (target, raw[:200])
    assert elsewhere.connections == 0
    assert rb.connections == 0


async def test_absolute_form_with_the_host_name_is_routed(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req("http://app.localhost:7355/x/%2e%2e/y?q=%20"))
    assert resp.status == 200
    got = sent(rb)
    assert got.start == "GET /x/%2e%2e/y?q=%20 HTTP/1.1"
    assert got.all("Host") == ["app.localhost"]


@pytest.mark.parametrize(
    "head",
    [
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nHost: 127.0.0.1:22\r\n\r\n",
        b"CONNECT app.localhost:80 HTTP/1.1\r\nHost: app.localhost:80\r\n\r\n",
    ],
    ids=["ip", "own-name"],
)
async def test_connect_is_405_and_never_tunnels(raw_backend, router, head):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    # a refused CONNECT leaves the connection in HTTP: the next request is a request
    raw = await raw_exchange(r.port, head + req("/after"))
    assert re.match(rb"HTTP/1\.[01] 40[05] ", raw), raw[:200]
    after = raw.split(b"\r\n\r\n", 1)[1]
    if after:  # answered: the pipelined GET must be routed as a request, not tunnelled bytes
        _, _, after = after.partition(b"HTTP/1.1 ")
        assert after.startswith(b"200 "), raw[:400]
        assert [sent(rb, i).start for i in range(len(rb.received))] == ["GET /after HTTP/1.1"]
    else:
        assert rb.connections == 0


async def test_options_star_is_405_or_400(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, req("*", method="OPTIONS"))
    assert re.match(rb"HTTP/1\.[01] 40[05] ", raw), raw[:200]
    assert rb.connections == 0


@pytest.mark.parametrize("version", ["HTTP/2.0", "HTTP/1.2", "HTTP/0.9", "HTTP/3.0"])
async def test_other_http_versions_are_505_or_400(raw_backend, router, version):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, req(version=version))
    status_line = raw.split(b"\r\n", 1)[0]
    assert status_line.split(b" ")[1:2] in ([b"505"], [b"400"]), raw[:200]
    assert rb.connections == 0


async def test_error_pages_html_for_browsers_text_for_curl(router):
    port = free_port()
    r = await router(make_config({"app": port}))
    html = await one(
        r.port,
        req(host="nope.localhost", headers=("Accept: text/html,application/xhtml+xml,*/*;q=0.8",)),
    )
    assert html.status == 404
    assert html.one("Content-Type").startswith("text/html")
    assert html.body.lower().startswith(b"<!doctype html>")
    assert f"app.localhost:{r.port}".encode() in html.body
    text = await one(r.port, req(host="nope.localhost", headers=("Accept: */*",)))
    assert text.status == 404
    assert text.one("Content-Type").startswith("text/plain")
    assert b"<" not in text.body
    assert text.body.startswith(b"devrouter: 404")
    refused_html = await one(r.port, req(headers=("Accept: text/html",)))
    assert refused_html.status == 502
    assert refused_html.one("Content-Type").startswith("text/html")
    refused_text = await one(r.port, req(headers=("User-Agent: curl/8.5.0", "Accept: */*")))
    assert refused_text.status == 502
    assert refused_text.one("Content-Type").startswith("text/plain")


# === B: smuggling and parsing (client -> router) ============================================


SMUGGLE = "GET /smuggled HTTP/1.1\r\nHost: app.localhost\r\n\r\n"


@pytest.mark.parametrize(
    "data",
    [
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 4\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: xchunked\r\n\r\n"
        "0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked, identity\r\n\r\n"
        "0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding : chunked\r\n\r\n"
        "0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: \x0bchunked\r\n\r\n"
        "0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nTransfer-Encoding: chunked\r\n"
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLE,
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 3\r\nContent-Length: 5\r\n"
        "\r\nhello",
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5, 5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: +5\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: -1\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: 5,\r\n\r\nhello",
        "POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length:\r\n\r\nhello",
        f"POST / HTTP/1.1\r\nHost: app.localhost\r\nContent-Length: {2**70}\r\n\r\nhello",
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Abc: \rxTransfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-Abc: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
        "GET / HTTP/1.1\nHost: app.localhost\nX-A: 1\n\n",
        "GET / HTTP/1.1\r\nHost: app.localhost\r\nX-A: a\x00b\r\n\r\n",
    ],
    ids=[
        "cl-te",
        "xchunked",
        "chunked-identity",
        "te-space",
        "te-vtab",
        "te-dup",
        "cl-dup",
        "cl-list",
        "cl-plus",
        "cl-neg",
        "cl-comma",
        "cl-empty",
        "cl-huge",
        "bare-cr",
        "obs-fold",
        "bare-lf",
        "nul",
    ],
)
async def test_smuggling_attempts_are_400(raw_backend, router, data):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, data.encode("latin-1"))
    assert BAD_REQUEST.match(raw), raw[:300]
    assert len(re.findall(rb"HTTP/1\.[01] \d\d\d ", raw)) == 1, raw[:600]
    assert not any(b"/smuggled" in x for x in rb.received)
    assert len(rb.received) <= 1


@pytest.mark.parametrize(
    "body",
    [
        b"FFFFFFFFFFFFFFFFF1\r\nabc\r\n0\r\n\r\n",
        b"0x5\r\nhello\r\n0\r\n\r\n",
        b"5;a=b\nc\r\nhello\r\n0\r\n\r\n",
        b"5\r\nabcdeXX0\r\n\r\n",
        b"5\nhello\n0\n\n",
    ],
    ids=["overflow", "0x", "ext-lf", "no-crlf-after-data", "lf-only"],
)
async def test_bad_chunk_framing_never_reaches_the_backend_as_complete(raw_backend, router, body):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    data = req(method="POST", headers=("Transfer-Encoding: chunked",), body=body)
    raw = await raw_exchange(r.port, data)
    # 400 from the parser, or (body already streaming) an aborted or failed exchange; the
    # backend must never get a complete request with a body, and never a 200 relayed as if fine
    assert not raw.startswith(b"HTTP/1.1 200"), raw[:300]
    assert not raw.startswith(b"HTTP/1.1 500"), raw[:300]
    assert all(m.body == b"" for m in seen), [m.body for m in seen]


async def test_chunked_trailer_is_not_merged_into_headers(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    body = chunk(b"hello") + b"0\r\nX-Trailer: 1\r\n\r\n"
    resp = await one(
        r.port, req(method="POST", headers=("Transfer-Encoding: chunked",), body=body), "POST"
    )
    assert resp.status == 200
    assert not seen[0].has("X-Trailer")
    assert seen[0].body == b"hello"


async def test_host_in_a_chunked_trailer_never_routes(raw_backend, router):
    seen: list[Msg] = []
    app = await raw_backend(capture(seen=seen))
    evil_seen: list[Msg] = []
    evil = await raw_backend(capture(seen=evil_seen))
    r = await router(make_config({"app": app.port, "evil": evil.port}))
    body = chunk(b"hello") + b"0\r\nHost: evil.localhost\r\n\r\n"
    raw = await raw_exchange(
        r.port, req(method="POST", headers=("Transfer-Encoding: chunked",), body=body)
    )
    assert re.match(rb"HTTP/1\.[01] (200|400) ", raw), raw[:200]
    assert evil.connections == 0
    assert all(m.all("Host") == ["app.localhost"] for m in seen)


async def test_pipelined_requests_are_routed_by_their_own_host(raw_backend, router):
    a = await capture_backend(raw_backend, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nA")
    b = await capture_backend(raw_backend, b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nB")
    r = await router(make_config({"a": a.port, "b": b.port}))
    resps = await exchange(
        r.port,
        req("/1", host="a.localhost", close=False)
        + req("/2", host="b.localhost", close=False)
        + req("/3", host="a.localhost"),
        ("GET", "GET", "GET"),
    )
    assert [m.body for m in resps] == [b"A", b"B", b"A"]
    assert [sent(a, i).start for i in range(2)] == ["GET /1 HTTP/1.1", "GET /3 HTTP/1.1"]
    assert [sent(b, 0).start] == ["GET /2 HTTP/1.1"]


# === H: backend faults ======================================================================


async def test_refused_port_is_502_naming_the_port_with_a_hint(router):
    port = free_port()
    r = await router(make_config({"app": port}))
    resp = await asyncio.wait_for(one(r.port, req()), 5)
    assert resp.status == 502
    text = resp.body.decode()
    assert str(port) in text
    assert "listen" in text.lower() or "running" in text.lower(), text


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_backend_listening_only_on_ipv6_loopback_is_reached(backend, router):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="v6")

    app = web.Application()
    app.router.add_get("/", hello)
    port = await backend(app, host="::1")
    r = await router(make_config({"app": port}))
    for _ in range(2):  # the second time the preferred address is remembered
        resp = await one(r.port, req())
        assert resp.status == 200 and resp.body == b"v6"


async def hang(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
    msg = await read_message(r)
    rb.received.append(msg.head)
    await r.read()  # until the router gives up and closes


async def test_hung_backend_is_504_after_the_route_timeout(raw_backend, router):
    rb = await raw_backend(hang)
    r = await router(make_config({"app": {"port": rb.port, "timeout": 0.5}}))
    resp = await asyncio.wait_for(one(r.port, req()), 5)
    assert resp.status == 504
    assert str(rb.port) in resp.body.decode()
    assert len(rb.received) == 1


async def test_hung_backend_connection_is_closed_after_the_504(raw_backend, router):
    closed = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        try:
            await hang(r, w, rb)
        finally:
            closed.set()

    rb = await raw_backend(handler)
    r = await router(make_config({"app": {"port": rb.port, "timeout": 0.5}}))
    resp = await asyncio.wait_for(one(r.port, req()), 5)
    assert resp.status == 504
    await asyncio.wait_for(closed.wait(), 5)


async def test_client_disconnect_cancels_a_pending_upstream_request(raw_backend, router):
    got_request = asyncio.Event()
    closed = asyncio.Event()

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        try:
            await read_message(r)
            got_request.set()
            await r.read()
        finally:
            closed.set()

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))  # default timeout: 60 s
    _, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.write(req(close=False))
    await writer.drain()
    await asyncio.wait_for(got_request.wait(), IO_TIMEOUT_S)
    writer.close()
    await writer.wait_closed()
    await asyncio.wait_for(closed.wait(), 5)


def rst_close(w: asyncio.StreamWriter) -> None:
    sock = w.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    w.transport.abort()


MID_DEATH = {
    "short-cl": b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc",
    "headers-only": b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",
    "chunked-cut": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"hello"),
    "rst-mid-body": b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"z" * 5000,
    "rst-chunked": b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk(b"z" * 5000),
}


@pytest.mark.parametrize("case", list(MID_DEATH))
async def test_backend_death_mid_response_aborts_the_client(raw_backend, router, case):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_message(r)
        w.write(MID_DEATH[case])
        await w.drain()
        if case.startswith("rst"):
            await asyncio.sleep(0)  # let the bytes leave before the reset
            rst_close(w)

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))
    async with client() as s:
        with pytest.raises((aiohttp.ClientPayloadError, aiohttp.ClientConnectionError)):
            async with s.get(r.url("app"), headers={"Host": "app.localhost"}) as res:
                await asyncio.wait_for(res.read(), IO_TIMEOUT_S)
    # and at the byte level: never a terminating chunk, never a full Content-Length body
    raw = await raw_exchange(r.port, req())
    head, _, body = raw.partition(b"\r\n\r\n")
    assert not raw.startswith(b"HTTP/1.1 500"), raw[:200]
    if b"transfer-encoding: chunked" in head.lower():
        assert not body.endswith(b"0\r\n\r\n"), raw[-100:]
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            assert len(body) < int(line.split(b":")[1]), raw[:200]


@pytest.mark.parametrize("case", ["chunked-cut", "rst-chunked"])
async def test_backend_death_mid_response_resets_an_http10_client(raw_backend, router, case):
    """An HTTP/1.0 client gets a chunked backend's body close-delimited, so a clean close
    would make a cut body look complete: the only honest signal is a reset."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_message(r)
        w.write(MID_DEATH[case])
        await w.drain()
        if case.startswith("rst"):
            await asyncio.sleep(0)
            rst_close(w)

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    got = b""
    outcome = "timeout"
    try:
        writer.write(req(version="HTTP/1.0", close=False))
        await writer.drain()
        while True:
            data = await asyncio.wait_for(reader.read(65536), IO_TIMEOUT_S)
            if not data:
                outcome = "clean close"
                break
            got += data
    except ConnectionResetError:
        outcome = "reset"
    finally:
        writer.close()
    assert b"transfer-encoding" not in got.lower()
    assert outcome == "reset", f"{outcome}: the client got {got[:300]!r} and no sign of a cut"


BROKEN = {
    "cl-and-te": b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"
    + chunk(b"hello")
    + b"0\r\n\r\n",
    "ssh-banner": b"SSH-2.0-OpenSSH_9.6\r\n",
    "tls-alert": b"\x15\x03\x01\x00\x02\x02\x46",
    "postgres": b"E\x00\x00\x00\x54SFATAL\x00C0A000\x00Munsupported frontend protocol\x00\x00",
    "garbage-line": b"hello there\r\n\r\n",
    "status-1000": b"HTTP/1.1 1000 Weird\r\nContent-Length: 0\r\n\r\n",
    "status-99": b"HTTP/1.1 099 Weird\r\nContent-Length: 0\r\n\r\n",
    "ctl-in-header": b"HTTP/1.1 200 OK\r\nX-C: a\x01b\r\nContent-Length: 2\r\n\r\nok",
    "ctl-in-reason": b"HTTP/1.1 200 O\x01K\r\nContent-Length: 2\r\n\r\nok",
    "bad-cl": b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nok",
    "cl-dup": b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
    "cr-in-header": b"HTTP/1.1 200 OK\r\nX-C: a\rSet-Cookie: x=1\r\nContent-Length: 2\r\n\r\nok",
    "101-unasked": b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n"
    b"Upgrade: websocket\r\n\r\n\x81\x05hello",
}


@pytest.mark.parametrize("case", list(BROKEN))
async def test_broken_backend_response_is_502_and_the_connection_survives(
    raw_backend, router, case
):
    async def broken(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        await read_message(r)
        w.write(BROKEN[case])
        await w.drain()
        if case == "ssh-banner":  # a server that waits for its own protocol
            await r.read()

    rb = await raw_backend(broken)
    good = await capture_backend(raw_backend, b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ngood")
    r = await router(make_config({"app": rb.port, "ok": good.port}))
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    try:
        writer.write(req(close=False))
        await writer.drain()
        try:
            first = await read_message(reader, response=True)
        except (asyncio.IncompleteReadError, ConnectionResetError):
            return  # aborted: allowed
        assert first.status == 502, first.head
        assert b"\x01" not in first.head and "x-c" not in first.names
        if "close" in (first.one("Connection") or "").lower():
            return
        writer.write(req(host="ok.localhost", close=False))
        await writer.drain()
        second = await read_message(reader, response=True)
        assert second.status == 200 and second.body == b"good"
    finally:
        writer.close()


async def test_backend_body_on_head_leaks_no_bytes(raw_backend, router):
    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            msg = await read_message(r)
            if msg.start.startswith("HEAD"):
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            else:
                w.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nnext")
            await w.drain()

    rb = await raw_backend(handler)
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(r.port, req("/h", method="HEAD", close=False) + req("/g"))
    _, _, rest = raw.partition(b"\r\n\r\n")
    assert b"hello" not in raw
    assert not raw.startswith(b"HTTP/1.1 500"), raw[:200]
    # either the HEAD was answered and the GET followed cleanly, or the connection was cut
    if rest:
        assert rest.startswith(b"HTTP/1.1 "), raw[:300]
        (get,) = await parse_responses(rest)
        assert get.body == b"next"


@pytest.mark.parametrize(
    "interim",
    [
        b"HTTP/1.1 100 Continue\r\n\r\n",
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n",
        b"HTTP/1.1 102 Processing\r\n\r\nHTTP/1.1 102 Processing\r\n\r\n",
    ],
    ids=["100", "103", "102x2"],
)
async def test_interim_responses_from_the_backend_do_not_break_the_exchange(
    raw_backend, router, interim
):
    rb = await capture_backend(raw_backend, interim + OK_RESPONSE)
    r = await router(make_config({"app": rb.port}))
    first, second = await exchange(
        r.port,
        req("/1", method="POST", headers=("Content-Length: 5",), body=b"hello", close=False)
        + req("/2"),
        ("POST", "GET"),
    )
    assert (first.status, first.body) == (200, b"ok")
    assert (second.status, second.body) == (200, b"ok")


async def test_backend_16_kib_header_passes_through(raw_backend, router):
    csp = "default-src 'self' " + "x" * (16 * 1024)
    rb = await capture_backend(
        raw_backend,
        b"HTTP/1.1 200 OK\r\nContent-Security-Policy: %s\r\nContent-Length: 2\r\n\r\nok"
        % csp.encode(),
    )
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req())
    assert resp.status == 200, resp.head[:200]
    assert resp.all("Content-Security-Policy") == [csp]


async def test_pipelined_post_then_get_keep_their_bodies_apart(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    resps = await exchange(
        r.port,
        req("/p", method="POST", headers=("Content-Length: 11",), body=b"hello world", close=False)
        + req("/q", method="PUT", headers=("Content-Length: 3",), body=b"abc", close=False)
        + req("/g"),
        ("POST", "PUT", "GET"),
    )
    assert [m.status for m in resps] == [200, 200, 200]
    assert [(m.start, m.body) for m in seen] == [
        ("POST /p HTTP/1.1", b"hello world"),
        ("PUT /q HTTP/1.1", b"abc"),
        ("GET /g HTTP/1.1", b""),
    ]
    assert not seen[2].has("Content-Length") and not seen[2].has("Transfer-Encoding")


async def test_request_split_across_many_writes(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    data = req(
        "/split?x=1",
        method="POST",
        headers=("X-Long: " + "v" * 300, "Content-Length: 10"),
        body=b"0123456789",
    )
    reader, writer = await asyncio.open_connection("127.0.0.1", r.port)
    writer.transport.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        for i in range(0, len(data), 7):
            writer.write(data[i : i + 7])
            await writer.drain()
            await asyncio.sleep(0.001)  # pacing only, so the pieces arrive as separate reads
        resp = await read_message(reader, response=True)
    finally:
        writer.close()
    assert (resp.status, resp.body) == (200, b"ok")
    assert seen[0].start == "POST /split?x=1 HTTP/1.1"
    assert seen[0].all("X-Long") == ["v" * 300]
    assert seen[0].body == b"0123456789"


async def test_loop_through_a_reproxying_backend_is_508(backend, router):
    router_port: list[int] = []
    calls: list[str | None] = []

    async def reproxy(request: web.Request) -> web.Response:
        calls.append(request.headers.get("X-Devrouter-Hops"))
        if len(calls) > 20:
            return web.Response(status=599, text="devrouter did not stop the loop")
        headers = [
            (k, v)
            for k, v in request.headers.items()
            if k.lower() not in ("content-length", "transfer-encoding", "connection")
        ]
        async with (
            aiohttp.ClientSession(
                auto_decompress=False,
                skip_auto_headers=("Accept", "Accept-Encoding", "User-Agent"),
            ) as s,
            s.get(
                f"http://127.0.0.1:{router_port[0]}{request.raw_path}",
                headers=CIMultiDict(headers),
                allow_redirects=False,
            ) as res,
        ):
            return web.Response(status=res.status, body=await res.read())

    app = web.Application()
    app.router.add_get("/{tail:.*}", reproxy)
    port = await backend(app)
    r = await router(make_config({"vite": port}))
    router_port.append(r.port)
    resp = await asyncio.wait_for(one(r.port, req("/x", host="vite.localhost")), 30)
    assert resp.status == 508, (resp.status, resp.body[:300], calls)
    assert 1 <= len(calls) <= 5, calls


# "\u00b2" (superscript two) and "\u0661" (Arabic-Indic one) are digits to str.isdigit(): the
# first made int() raise (a 500 and a traceback), the second was read as hop 1 by the aiohttp
# engine while the fast path, reading bytes, called it odd
@pytest.mark.parametrize(
    "value", ["-1000", "abc", "", "1.5", "+1", "0x1", " 1 1", "\u00b2", "\u0661"]
)
async def test_invalid_hop_header_is_400(raw_backend, router, value):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    resp = await one(r.port, req(headers=(f"X-Devrouter-Hops: {value}",)))
    assert resp.status == 400
    assert rb.connections == 0


async def test_two_hop_headers_are_400_on_both_engines(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    hops = ("X-Devrouter-Hops: 1", "X-Devrouter-Hops: 4")
    resp = await one(r.port, req(headers=hops))
    assert resp.status == 400 and b"one at most" in resp.body
    assert rb.connections == 0


async def test_hop_header_is_incremented_towards_the_backend(raw_backend, router):
    rb = await capture_backend(raw_backend)
    r = await router(make_config({"app": rb.port}))
    assert (await one(r.port, req())).status == 200
    assert (await one(r.port, req(headers=("X-Devrouter-Hops: 2",)))).status == 200
    assert sent(rb, 0).all("X-Devrouter-Hops") == ["1"]
    assert sent(rb, 1).all("X-Devrouter-Hops") == ["3"]


# === D28, C43: the upstream pool ============================================================


async def test_pool_is_not_exhausted_by_100_open_streams(backend, router):
    release = asyncio.Event()

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: open\n\n")
        await release.wait()
        return resp

    async def plain(request: web.Request) -> web.Response:
        return web.Response(text="plain")

    app = web.Application()
    app.router.add_get("/stream", stream)
    app.router.add_get("/plain", plain)
    port = await backend(app)
    other_app = web.Application()
    other_app.router.add_get("/plain", plain)
    other = await backend(other_app)
    r = await router(make_config({"app": port, "other": other}))
    async with contextlib.AsyncExitStack() as stack:
        s = await stack.enter_async_context(client(connector=aiohttp.TCPConnector(limit=0)))

        async def open_stream() -> aiohttp.ClientResponse:
            res = await stack.enter_async_context(
                s.get(r.url("app", "/stream"), headers={"Host": "app.localhost"})
            )
            await read_until(res.content, b"", b"\n\n")
            return res

        streams = await asyncio.wait_for(asyncio.gather(*(open_stream() for _ in range(100))), 30)
        assert all(res.status == 200 for res in streams)
        for host in ("app.localhost", "other.localhost"):
            resp = await asyncio.wait_for(one(r.port, req("/plain", host=host)), 10)
            assert resp.status == 200 and resp.body == b"plain"
        release.set()


def drop_nth_request(n: int, seen: list[Msg]):
    """A backend whose n-th request (counted over all connections) finds the connection
    closed: it reads the request and closes without answering, as a backend that closed an
    idle keep-alive connection just as the router reused it."""

    async def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: RawBackend) -> None:
        while True:
            msg = await read_message(r)
            seen.append(msg)
            if len(seen) == n:
                return
            w.write(OK_RESPONSE)
            await w.drain()

    return handler


async def test_stale_pooled_connection_get_is_retried(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(drop_nth_request(2, seen))
    r = await router(make_config({"app": rb.port}))
    assert (await one(r.port, req("/1"))).status == 200
    second = await one(r.port, req("/2"))
    assert second.status == 200 and second.body == b"ok"
    assert [m.start for m in seen] == ["GET /1 HTTP/1.1", "GET /2 HTTP/1.1", "GET /2 HTTP/1.1"]
    assert rb.connections == 2


async def test_stale_pooled_connection_post_is_not_replayed(raw_backend, router):
    seen: list[Msg] = []
    rb = await raw_backend(drop_nth_request(2, seen))
    r = await router(make_config({"app": rb.port}))
    assert (await one(r.port, req("/1"))).status == 200
    resp = await one(
        r.port, req("/p", method="POST", headers=("Content-Length: 5",), body=b"hello"), "POST"
    )
    posts = [m for m in seen if m.start.startswith("POST")]
    assert len(posts) == 1, [m.start for m in seen]
    assert resp.status == 502


async def test_connection_cannot_name_host_or_content_length_away(raw_backend, router):
    """RFC 9110 §7.6.1 lets Connection name fields to drop, but Host and Content-Length are
    the router's to keep: dropping them would change where and how the request goes."""
    seen: list[Msg] = []
    rb = await raw_backend(capture(seen=seen))
    r = await router(make_config({"app": rb.port}))
    raw = await raw_exchange(
        r.port,
        req(
            "/",
            method="POST",
            headers=("Connection: Host, Content-Length, X-Drop", "X-Drop: 1", "Content-Length: 5"),
            body=b"hello",
        ),
    )
    assert raw.startswith(b"HTTP/1.1 200"), raw[:200]
    msg = seen[0]
    assert msg.one("Host") == "app.localhost"
    assert msg.one("Content-Length") == "5" and msg.body == b"hello"
    assert not msg.has("X-Drop")
