"""devrouter.tls.certs: the SNI certificate store and its TLS contexts, with real handshakes
on 127.0.0.1 against clients that trust only the test's CA."""

from __future__ import annotations

import asyncio
import logging
import shutil
import ssl
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from devrouter.core.errors import CAError
from devrouter.tls import certs as certs_module
from devrouter.tls.ca import LEAF_VALIDITY, RENEW_BEFORE, Leaf, LocalCA
from devrouter.tls.certs import (
    ALPN_PROTOCOLS,
    RENEW_RETRY_S,
    CertStore,
    host_name,
    tls_context,
)

#: Upper bound for one handshake in a test, in seconds.
HANDSHAKE_TIMEOUT_S = 10.0


@pytest.fixture
def ca(tmp_path: Path) -> LocalCA:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    return LocalCA.load_or_create(state)


def count_issues(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Counts LocalCA.issue calls by name from now on."""
    issued: Counter[str] = Counter()
    real = LocalCA.issue

    def counting(self: LocalCA, name: str, now: datetime | None = None) -> Leaf:
        issued[name] += 1
        return real(self, name, now)

    monkeypatch.setattr(LocalCA, "issue", counting)
    return issued


@pytest.mark.parametrize(
    ("name", "host"),
    [
        ("api", "api.localhost"),
        ("web.shop", "web.shop.localhost"),
        ("*.shop", "shop.localhost"),  # shop.localhost's leaf covers *.shop.localhost
        ("api.localhost", "api.localhost"),
        ("API.localhost.", "api.localhost"),
        ("localhost", "localhost"),
        ("devrouter", "devrouter.localhost"),
    ],
)
def test_host_name(name: str, host: str) -> None:
    assert host_name(name) == host


# --- the contexts ---------------------------------------------------------------------------


def test_every_context_has_the_same_tls_settings(ca: LocalCA) -> None:
    store = CertStore(ca)
    server = store.server_context()
    leaf = store.context_for("api.localhost")
    assert server.sni_callback is not None
    assert leaf.sni_callback is None
    for ctx in (server, leaf):
        assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2
        assert ctx.options & ssl.OP_NO_COMPRESSION
        assert not ctx.options & ssl.OP_NO_TICKET  # session tickets stay on
        suites = [c for c in ctx.get_ciphers() if c["protocol"] == "TLSv1.2"]
        assert suites, "no TLS 1.2 suite left"
        for c in suites:  # RFC 9113 §9.2.2: ephemeral key exchange, AEAD
            assert c["kea"] == "kx-ecdhe" and c["aead"], c["name"]
    assert store.server_context() is server
    assert store.context_for("api.localhost") is leaf
    assert sorted(store.cached_names()) == ["api.localhost", "localhost"]


def test_a_foreign_name_is_never_issued(ca: LocalCA) -> None:
    store = CertStore(ca)
    for name in ("evil.example", "*.localhost", "API.localhost"):
        with pytest.raises(ValueError):
            store.context_for(name)
    assert store.cached_names() == []
    assert not ca.paths.leaves.exists() or not any(ca.paths.leaves.iterdir())


def test_a_second_store_loads_leaves_from_disk(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = CertStore(ca)
    first.server_context()
    first.prepare(["api", "web.shop"])
    files = {p.name: p.read_bytes() for p in ca.paths.leaves.iterdir()}
    assert sorted(files) == ["api.localhost.pem", "localhost.pem", "web.shop.localhost.pem"]

    issued = count_issues(monkeypatch)
    reloaded = LocalCA.load(ca.paths.dir.parent)
    assert reloaded is not None
    second = CertStore(reloaded)
    second.server_context()
    second.context_for("api.localhost")
    second.prepare(["web.shop"])
    assert issued == Counter()
    assert {p.name: p.read_bytes() for p in ca.paths.leaves.iterdir()} == files


def test_leaves_are_renewed_when_due(ca: LocalCA, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [time.time()]
    store = CertStore(ca, clock=lambda: now[0])
    first = store.context_for("api.localhost")
    issued = count_issues(monkeypatch)

    now[0] += (LEAF_VALIDITY - RENEW_BEFORE - timedelta(minutes=1)).total_seconds()
    assert store.context_for("api.localhost") is first  # cached, not due yet
    now[0] += timedelta(minutes=2).total_seconds()
    renewed = store.context_for("api.localhost")
    assert renewed is not first
    assert issued == Counter({"api.localhost": 1})
    assert store.context_for("api.localhost") is renewed
    pem = ca.paths.leaf("api.localhost").read_bytes()
    not_after = x509.load_pem_x509_certificate(pem).not_valid_after_utc
    assert not_after.timestamp() > now[0] + (LEAF_VALIDITY - timedelta(hours=1)).total_seconds()


def test_a_failed_renewal_keeps_the_current_leaf(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    now = [time.time()]
    store = CertStore(ca, clock=lambda: now[0])
    first = store.context_for("api.localhost")
    attempts: list[str] = []

    def full_disk(name: str, when: datetime | None = None) -> Leaf:
        attempts.append(name)
        raise CAError("cannot write leaves/api.localhost.pem: No space left on device")

    monkeypatch.setattr(ca, "leaf", full_disk)
    now[0] += (LEAF_VALIDITY - RENEW_BEFORE).total_seconds()
    with caplog.at_level(logging.WARNING, logger="devrouter.tls"):
        assert store.context_for("api.localhost") is first
        assert store.context_for("api.localhost") is first
    assert attempts == ["api.localhost"]  # retried later, not on every handshake
    assert "keeping the current one: cannot write" in caplog.text
    now[0] += RENEW_RETRY_S
    assert store.context_for("api.localhost") is first
    assert len(attempts) == 2
    # Once it has expired, there is nothing to keep.
    now[0] += RENEW_BEFORE.total_seconds()
    with pytest.raises(CAError):
        store.context_for("api.localhost")
    monkeypatch.undo()
    assert store.context_for("api.localhost") is not first


def test_the_cache_is_bounded(ca: LocalCA) -> None:
    store = CertStore(ca, max_names=3)
    names = [f"n{i}.localhost" for i in range(5)]
    for name in names:
        store.context_for(name)
    assert store.cached_names() == names[2:]  # oldest dropped first
    store.context_for(names[0])  # back from disk, not reissued
    assert store.cached_names() == [*names[3:], names[0]]


class FakeSSLObject:
    """What the SNI callback sets: the context a handshake continues with."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.context = context


def test_names_outside_the_route_table_are_rationed(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A page fetching https://RANDOM.localhost names cannot make the router issue (and
    write) leaves without end: past MAX_ON_DEMAND they get the default certificate, while
    the route table's names, and leaves already on disk, are always served."""
    monkeypatch.setattr(certs_module, "MAX_ON_DEMAND", 3)
    store = CertStore(ca)
    default = store.server_context()
    store.prepare(["api"])
    served = {}
    for name in ["a.localhost", "b.localhost", "c.localhost", "d.localhost", "e.localhost"]:
        sslobj = FakeSSLObject(default)
        store._on_sni(sslobj, name, default)  # type: ignore[arg-type]
        served[name] = sslobj.context is not default
    assert served == {n: n < "d" for n in served}
    assert not (ca.paths.leaves / "d.localhost.pem").exists()
    sslobj = FakeSSLObject(default)
    store._on_sni(sslobj, "api.localhost", default)  # type: ignore[arg-type]
    assert sslobj.context is store.context_for("api.localhost")
    assert sum("not issuing a certificate" in r.message for r in caplog.records) == 1
    again = CertStore(ca)  # the next run: leaves on disk are served without counting
    sslobj = FakeSSLObject(default)
    again._on_sni(sslobj, "a.localhost", default)  # type: ignore[arg-type]
    assert sslobj.context is not default and again.on_demand == 0


def test_prepare_and_handshakes_issue_each_leaf_once(
    ca: LocalCA, monkeypatch: pytest.MonkeyPatch
) -> None:
    issued = count_issues(monkeypatch)
    store = CertStore(ca)
    routes = ["api", "*.shop", "web.shop", "api.localhost", "bad name!", "a.b.c.d.e.f.g.h"]
    start = threading.Barrier(5)

    def prepare() -> None:
        start.wait(timeout=10)
        store.prepare(routes)

    def handshake_side() -> None:  # what SNI callbacks on the loop thread ask for
        start.wait(timeout=10)
        for name in ("web.shop.localhost", "api.localhost", "localhost", "shop.localhost"):
            store.context_for(name)

    threads = [threading.Thread(target=prepare) for _ in range(3)]
    threads += [threading.Thread(target=handshake_side) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    expected = ["api.localhost", "localhost", "shop.localhost", "web.shop.localhost"]
    assert sorted(store.cached_names()) == expected
    assert issued == Counter(dict.fromkeys(expected, 1))


def test_issuing_cost_is_what_the_cache_saves(ca: LocalCA) -> None:
    """Measured, not asserted: the number quoted in devrouter/tls/certs.py's docstring."""
    rounds = 20
    t0 = time.perf_counter()
    for i in range(rounds):
        ca.issue(f"t{i}.localhost")
    t1 = time.perf_counter()
    for i in range(rounds):
        tls_context(ca.paths.leaf(f"t{i}.localhost"), ALPN_PROTOCOLS)
    t2 = time.perf_counter()
    store = CertStore(ca)
    store.context_for("api.localhost")
    lookups = 10_000
    t3 = time.perf_counter()
    for _ in range(lookups):
        store.context_for("api.localhost")
    t4 = time.perf_counter()
    print(
        f"issue a leaf: {(t1 - t0) / rounds * 1e3:.2f} ms, its context: "
        f"{(t2 - t1) / rounds * 1e3:.2f} ms, a cached context_for: "
        f"{(t4 - t3) / lookups * 1e6:.2f} us"
    )


# --- real handshakes ------------------------------------------------------------------------


@dataclass
class Handshake:
    alpn: str | None
    peer: dict[str, Any]  # empty when the client did not verify
    der: bytes  # the peer's certificate

    @property
    def serial(self) -> int:
        return x509.load_der_x509_certificate(self.der).serial_number


Connect = Callable[..., Awaitable[Handshake]]


@pytest.fixture
def clock() -> list[float]:
    """The store's time, seconds since the epoch: tests move it forward."""
    return [time.time()]


@dataclass
class TlsServer:
    store: CertStore
    connect: Connect
    port: int


@pytest.fixture
async def tls_server(ca: LocalCA, clock: list[float]) -> AsyncIterator[TlsServer]:
    """A TLS server on 127.0.0.1 with the store's server context, and `connect(sni)` that
    completes a handshake as a client trusting only the CA."""
    store = CertStore(ca, clock=lambda: clock[0])

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:  # one HTTP/1.1 answer, for curl; the other clients leave after the handshake
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
                await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=store.server_context())
    port = server.sockets[0].getsockname()[1]

    async def connect(
        server_hostname: str | None,
        *,
        alpn: list[str] | None = None,
        check_hostname: bool = True,
        verify: bool = True,
    ) -> Handshake:
        client = ssl.create_default_context(cafile=str(ca.paths.cert))
        client.check_hostname = check_hostname and verify
        if not verify:
            client.verify_mode = ssl.CERT_NONE
        client.set_alpn_protocols(alpn or ["h2", "http/1.1"])
        async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
            _, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=client, server_hostname=server_hostname
            )
        try:
            sslobj = writer.get_extra_info("ssl_object")
            der = sslobj.getpeercert(binary_form=True)
            return Handshake(sslobj.selected_alpn_protocol(), sslobj.getpeercert(), der)
        finally:
            writer.close()
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await writer.wait_closed()

    async with server:
        yield TlsServer(store, connect, port)


def sans(peer: dict[str, Any]) -> set[tuple[str, str]]:
    return set(peer["subjectAltName"])


async def test_a_handshake_for_a_route_name(tls_server: TlsServer) -> None:
    connect = tls_server.connect
    shake = await connect("api.localhost")
    assert shake.alpn == "h2"
    assert sans(shake.peer) == {("DNS", "api.localhost"), ("DNS", "*.api.localhost")}

    deeper = await connect("web.shop.localhost", alpn=["http/1.1"])
    assert deeper.alpn == "http/1.1"
    assert ("DNS", "web.shop.localhost") in sans(deeper.peer)
    # A subdomain of a leaf's name is covered by its wildcard.
    assert ("DNS", "*.web.shop.localhost") in sans(deeper.peer)


async def test_the_default_leaf_answers_loopback_addresses(
    tls_server: TlsServer,
) -> None:
    connect = tls_server.connect
    for host in ("127.0.0.1", "localhost"):  # Python sends no SNI for an IP address
        shake = await connect(host)
        assert shake.alpn == "h2"
        assert sans(shake.peer) == {
            ("DNS", "localhost"),
            ("IP Address", "127.0.0.1"),
            ("IP Address", "0:0:0:0:0:0:0:1"),
        }
    no_sni = await connect(None, check_hostname=False)
    assert ("DNS", "localhost") in sans(no_sni.peer)


async def test_the_default_leaf_is_renewed_while_serving(
    ca: LocalCA, tls_server: TlsServer, clock: list[float]
) -> None:
    """The SNI callback runs for a handshake without SNI too, so the server context's own
    (built once) default leaf is never the one that expires."""
    connect = tls_server.connect
    before = await connect(None, verify=False)
    clock[0] += (LEAF_VALIDITY - RENEW_BEFORE).total_seconds()
    # Not verified: the new leaf starts at the store's clock, weeks after the client's.
    after = await connect(None, verify=False)
    assert after.serial != before.serial
    pem = ca.paths.leaf("localhost").read_bytes()
    assert after.serial == x509.load_pem_x509_certificate(pem).serial_number


async def test_a_foreign_name_fails_verification(
    tls_server: TlsServer, caplog: pytest.LogCaptureFixture
) -> None:
    store, connect = tls_server.store, tls_server.connect
    for name in ("evil.example", "localhost.evil.example"):
        with pytest.raises(ssl.SSLCertVerificationError) as info:
            await connect(name)
        assert info.value.verify_code == 62  # X509_V_ERR_HOSTNAME_MISMATCH
        assert "Hostname mismatch" in str(info.value)
    assert sorted(store.cached_names()) == ["localhost"]
    assert not [r for r in caplog.records if r.name == "devrouter.tls"]


async def test_the_sni_callback_never_raises(
    tls_server: TlsServer,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    store, connect = tls_server.store, tls_server.connect

    def broken(name: str) -> ssl.SSLContext:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(store, "context_for", broken)
    with caplog.at_level(logging.ERROR, logger="devrouter.tls"):
        shake = await connect("api.localhost", check_hostname=False)
    assert ("DNS", "localhost") in sans(shake.peer)  # the default leaf, not a failed handshake
    assert shake.alpn == "h2"
    assert any("disk on fire" in (r.exc_text or "") for r in caplog.records)


CURL = shutil.which("curl")


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.parametrize(
    ("host", "exit_code"),
    [
        ("api.localhost", 0),
        ("deep.api.localhost", 0),  # a leaf of its own, issued during the handshake
        ("localhost", 0),
        ("evil.example", 60),  # CURLE_PEER_FAILED_VERIFICATION: the default leaf's names
    ],
)
async def test_curl_trusts_what_it_should(
    ca: LocalCA, tls_server: TlsServer, host: str, exit_code: int
) -> None:
    assert CURL is not None
    proc = await asyncio.create_subprocess_exec(
        CURL, "-sS", "--http1.1", "--max-time", "10", "--cacert", str(ca.paths.cert),
        "--connect-to", f"::127.0.0.1:{tls_server.port}", f"https://{host}:{tls_server.port}/",
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    async with asyncio.timeout(20):
        out, err = await proc.communicate()
    assert proc.returncode == exit_code, err.decode()
    if exit_code == 0:
        assert out == b"ok"
    else:
        assert b"no alternative certificate subject name matches" in err


def test_the_module_names_its_alpn_list() -> None:
    assert certs_module.ALPN_PROTOCOLS == ("h2", "http/1.1")
