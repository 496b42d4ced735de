"""devrouter.server.listener through a real router with its local CA: the one port's slow and
idle connections (no first byte, a handshake that never ends, too many of either), the
certificate a handshake gets for names that are not the router's, and `https: false` and
`https: redirect` (H10 of docs/security.md's HTTP/2 and TLS catalog).

Timeouts and caps are patched down (never a sleep of real seconds); every wait is bounded by
IO_TIMEOUT_S.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, RouterHandle, make_config
from cryptography import x509

from devrouter.server import listener
from devrouter.tls.ca import ca_paths

RouterFactory = Callable[..., Awaitable[RouterHandle]]
BackendFactory = Callable[..., Awaitable[int]]


class Site:
    """A router with its CA, and a backend that counts what reaches it."""

    def __init__(self, handle: RouterHandle, state: Path, paths: list[str]) -> None:
        self.handle = handle
        self.port = handle.port
        self.state = state
        self.ca = state / "ca" / "ca.pem"
        self.paths = paths

    def client_context(self, alpn: list[str] | None = None) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        ctx.set_alpn_protocols(alpn or ["http/1.1"])
        return ctx


@pytest.fixture
async def site(
    router: RouterFactory, backend: BackendFactory, tmp_path: Path
) -> AsyncIterator[Callable[..., Awaitable[Site]]]:
    async def start(**top: Any) -> Site:
        paths: list[str] = []

        async def handle(request: web.Request) -> web.Response:
            paths.append(request.path)
            return web.Response(text=request.path)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        port = await backend(app)
        state = tmp_path / "state"
        handle_ = await router(make_config({"api": port}, **top), state_dir=state)
        return Site(handle_, state, paths)

    yield start


@pytest.fixture
def sniffers(monkeypatch: pytest.MonkeyPatch) -> list[listener.Sniffer]:
    """The router's listening sockets' Sniffers, as they are made."""
    made: list[listener.Sniffer] = []
    init = listener.Sniffer.__init__

    def record(self: listener.Sniffer, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(listener.Sniffer, "__init__", record)
    return made


async def until(check: Callable[[], bool]) -> None:
    every_s = 0.02
    for _ in range(int(IO_TIMEOUT_S / every_s)):
        if check():
            return
        await asyncio.sleep(every_s)
    raise AssertionError("the router never got there")


def client_hello(server_name: str = "api.localhost") -> bytes:
    """A real ClientHello (TLS 1.2 and 1.3, ALPN h2), as the bytes a client sends first."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    obj = ctx.wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=server_name)
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    return out.read()


async def closed_by_router(reader: asyncio.StreamReader) -> bytes:
    """Everything the router sends until it closes the connection."""
    data = b""
    with contextlib.suppress(ConnectionError):
        data = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    return data


async def still_open(reader: asyncio.StreamReader) -> bool:
    """Nothing comes and the connection stays open for a moment (a negative check)."""
    try:
        await asyncio.wait_for(reader.read(1), 0.3)
    except TimeoutError:
        return True
    return False


async def get_over_tls(site: Site, path: str = "/tls") -> bytes:
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(
            "127.0.0.1", site.port, ssl=site.client_context(), server_hostname="api.localhost"
        ),
        IO_TIMEOUT_S,
    )
    writer.write(
        f"GET {path} HTTP/1.1\r\nHost: api.localhost\r\nConnection: close\r\n\r\n".encode()
    )
    answer = await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)
    writer.close()
    return answer


# --- slow and idle connections ------------------------------------------------------------------


async def test_a_connection_that_sends_no_first_byte_is_closed(
    site: Callable[..., Awaitable[Site]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(listener, "SNIFF_TIMEOUT_S", 0.2)
    s = await site()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    assert await closed_by_router(reader) == b""
    writer.close()


async def test_a_tls_handshake_that_never_completes_is_closed(
    site: Callable[..., Awaitable[Site]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Half a ClientHello, then nothing (slowloris on TLS): closed after HANDSHAKE_TIMEOUT_S;
    the router serves TLS meanwhile."""
    monkeypatch.setattr(listener, "HANDSHAKE_TIMEOUT_S", 0.3)
    s = await site()
    hello = client_hello()
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(hello[: len(hello) // 2])
    assert (await get_over_tls(s)).startswith(b"HTTP/1.1 200")
    assert await closed_by_router(reader) == b""
    writer.close()


async def test_tls_handshakes_in_progress_are_capped(
    site: Callable[..., Awaitable[Site]],
    monkeypatch: pytest.MonkeyPatch,
    sniffers: list[listener.Sniffer],
) -> None:
    """Past MAX_HANDSHAKES stalled handshakes a new TLS connection is closed at once; when
    they go, TLS is served again."""
    monkeypatch.setattr(listener, "MAX_HANDSHAKES", 2)
    monkeypatch.setattr(listener, "HANDSHAKE_TIMEOUT_S", 60.0)
    s = await site()
    half = client_hello()[:20]
    (sniffer,) = sniffers
    stalled = []
    for _ in range(2):
        reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
        writer.write(half)
        stalled.append((reader, writer))
    await until(lambda: sniffer.handshakes == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(half)
    assert await closed_by_router(reader) == b""
    writer.close()
    assert all([await still_open(r) for r, _ in stalled])
    for _, w in stalled:
        w.close()

    async def served() -> bool:
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            return (await get_over_tls(s)).startswith(b"HTTP/1.1 200")
        return False

    for _ in range(50):
        if await served():
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("TLS was not served again after the stalled handshakes went")


async def test_connections_waiting_for_their_first_byte_are_capped(
    site: Callable[..., Awaitable[Site]],
    monkeypatch: pytest.MonkeyPatch,
    sniffers: list[listener.Sniffer],
) -> None:
    monkeypatch.setattr(listener, "MAX_WAITING", 2)
    s = await site()
    (sniffer,) = sniffers
    silent = [await asyncio.open_connection("127.0.0.1", s.port) for _ in range(2)]
    await until(lambda: len(sniffer.waiting) == 2)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    assert await closed_by_router(reader) == b""
    writer.close()
    assert all([await still_open(r) for r, _ in silent])
    for _, w in silent:
        w.close()


# --- certificates for names that are not the router's -------------------------------------------

DEFAULT_SANS = {"localhost", "127.0.0.1", "::1"}


def _sans(der: bytes) -> set[str]:
    cert = x509.load_der_x509_certificate(der)
    ext = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return {str(v) for v in ext.get_values_for_type(x509.DNSName)} | {
        str(v) for v in ext.get_values_for_type(x509.IPAddress)
    }


async def _peer_sans(s: Site, server_name: str) -> set[str]:
    ctx = s.client_context()
    ctx.check_hostname = False  # a foreign name fails verification: the chain is still checked
    _reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", s.port, ssl=ctx, server_hostname=server_name),
        IO_TIMEOUT_S,
    )
    der = writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
    writer.close()
    return _sans(der)


@pytest.mark.parametrize(
    "server_name",
    [
        "example.com",
        "api.localhost.example.com",
        "localhost.evil",
        "xlocalhost",
        "127.0.0.2",
        "a." * 9 + "localhost",  # deeper than MAX_NAME_LABELS
    ],
)
async def test_an_sni_that_is_not_a_localhost_name_gets_the_default_certificate(
    site: Callable[..., Awaitable[Site]], server_name: str
) -> None:
    """Never a certificate minted for a foreign name: the default leaf (localhost and the
    loopback addresses), which such a client cannot verify; no leaf file is written."""
    s = await site()
    assert await _peer_sans(s, server_name) == DEFAULT_SANS
    leaves = {p.name for p in ca_paths(s.state).leaves.iterdir()}
    assert not any(server_name in name for name in leaves), leaves


async def test_many_sni_names_keep_the_certificate_cache_within_its_bound(
    site: Callable[..., Awaitable[Site]], monkeypatch: pytest.MonkeyPatch
) -> None:
    s = await site()
    certs = s.handle.router.certs
    assert certs is not None
    monkeypatch.setattr(certs, "_max_names", 4)
    for i in range(12):
        name = f"n{i}.localhost"
        assert await _peer_sans(s, name) == {name, f"*.{name}"}
        assert len(certs.cached_names()) <= 4
    assert await _peer_sans(s, "n0.localhost") == {"n0.localhost", "*.n0.localhost"}


# --- https: false and https: redirect -------------------------------------------------------------


async def test_tls_when_https_is_off_gets_the_plain_engines_refusal(
    site: Callable[..., Awaitable[Site]], caplog: pytest.LogCaptureFixture
) -> None:
    """`https: false`: a ClientHello is bytes that are not HTTP/1 (issue 12, N2): closed with
    no answer and one log line; nothing reaches a backend."""
    s = await site(https=False)
    caplog.set_level(logging.INFO)
    reader, writer = await asyncio.open_connection("127.0.0.1", s.port)
    writer.write(client_hello())
    assert await closed_by_router(reader) == b""
    writer.close()
    lines = [r.getMessage() for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert len(lines) == 1 and "not https://" in lines[0], lines
    assert s.paths == []
    with pytest.raises((ssl.SSLError, OSError)):
        await get_over_tls(s)


async def _plain(port: int, head: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(head)
    answer = await closed_by_router(reader)
    writer.close()
    return answer


async def test_https_redirect_answers_plain_requests_with_a_308_to_https(
    site: Callable[..., Awaitable[Site]],
) -> None:
    s = await site(https="redirect")
    host = f"api.localhost:{s.port}"
    answer = await _plain(s.port, f"POST /a/b?c=d HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    head = answer.partition(b"\r\n\r\n")[0].split(b"\r\n")
    assert head[0] == b"HTTP/1.1 308 Permanent Redirect"
    assert f"Location: https://{host}/a/b?c=d".encode() in head
    assert s.paths == []
    assert (await get_over_tls(s, "/over-tls")).startswith(b"HTTP/1.1 200")
    assert s.paths == ["/over-tls"]


@pytest.mark.parametrize(
    "host",
    [
        b"evil.example",
        b"api.localhost.evil.example",
        b"api.localhost@evil.example",
        b"evil.example/.localhost",
        b"evil.example#.localhost",
        b"api.localhost:99999",
        b"api localhost",
        b"api.localhost\rLocation: https://evil.example",
        b"",
    ],
)
async def test_https_redirect_refuses_a_bad_host_and_never_reflects_it(
    site: Callable[..., Awaitable[Site]], host: bytes
) -> None:
    s = await site(https="redirect")
    answer = await _plain(s.port, b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400"), answer
    assert b"Location" not in answer and b"evil" not in answer
    assert s.paths == []


# --- TLS versions ---------------------------------------------------------------------------------


async def test_tls_before_1_2_is_refused(site: Callable[..., Awaitable[Site]]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # that is the point
            ctx.minimum_version = ssl.TLSVersion.TLSv1
            ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    except (ValueError, ssl.SSLError) as exc:
        pytest.skip(f"this OpenSSL cannot offer TLS 1.0/1.1: {exc}")
    s = await site()
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", s.port, ssl=ctx, server_hostname="api.localhost"),
            IO_TIMEOUT_S,
        )
    except (ssl.SSLError, ConnectionError) as exc:
        if "NO_PROTOCOLS_AVAILABLE" in str(exc).upper():
            pytest.skip("this OpenSSL cannot offer TLS 1.0/1.1")
        return  # refused (an alert, or the connection closed), as it should be
    writer.close()
    pytest.fail("a TLS 1.1 handshake succeeded")
