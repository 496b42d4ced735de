"""devrouter.http1.request_head: which heads the fast path takes (a `RequestPlan`, with the
exact bytes it forwards) and which it hands to the aiohttp engine (`HandOff`, with why), and
`replan`, which skips the checks for a field block seen before under the same config.

Everything is bytes in, a decision out: a real config through the real YAML parser, a real
`State`, and the same Host -> route function as `FastServer.lookup`, with no socket."""

from __future__ import annotations

import base64
from collections.abc import Callable

import pytest
from conftest import make_config

from devrouter.core.access import load_secrets
from devrouter.core.model import Route
from devrouter.core.routes import HostError, parse_host, route_name
from devrouter.core.state import Snapshot, State
from devrouter.http1.request_head import (
    Forwarder,
    HandOff,
    RequestPlan,
    plan_request,
    replan,
)

MAX_HEADERS = 128
MAX_LINE = 8190
TOKEN = "t0ken-for-tests-0123456789abcdef"
#: RFC 6455 §1.3's example key.
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def make_state() -> State:
    """`app` (open) and `admin` (behind a token secret, read as `devrouter serve` would)."""
    config = make_config({"app": 4001, "admin": {"port": 4002, "access": {"env": "S"}}})
    return State(load_secrets(config, {"S": TOKEN}))


STATE = make_state()


def lookup_in(snapshot: Snapshot) -> Callable[[bytes], Route | None]:
    """A Host value -> its route, as devrouter.fast.server.FastServer.lookup maps it."""

    def lookup(host: bytes) -> Route | None:
        try:
            name = route_name(parse_host(host.decode("ascii")))
        except (HostError, UnicodeDecodeError):
            name = None
        return snapshot.table.lookup(name) if name and name != "devrouter" else None

    return lookup


def plan(head: bytes, peer: bytes = b"127.0.0.1", snapshot: Snapshot | None = None) -> RequestPlan:
    snapshot = STATE.snapshot if snapshot is None else snapshot
    result, _ = plan_request(
        head, snapshot, lookup_in(snapshot), Forwarder(peer, b"7355"), MAX_HEADERS, MAX_LINE
    )
    return result


def forwarding(
    host: bytes = b"app.localhost",
    xff: bytes = b"127.0.0.1",
    peer: bytes = b"127.0.0.1",
    hops: bytes = b"1",
) -> bytes:
    """The router's forwarding fields, written out (not built by the code under test)."""
    return (
        b"X-Forwarded-For: " + xff + b"\r\n"
        b"X-Forwarded-Proto: http\r\n"
        b"X-Forwarded-Host: " + host + b"\r\n"
        b"X-Forwarded-Port: 7355\r\n"
        b"Forwarded: for=" + peer + b';host="' + host + b'";proto=http\r\n'
        b"X-Devrouter-Hops: " + hops + b"\r\n"
    )


def get(*fields: bytes, method: bytes = b"GET", version: bytes = b"1.1") -> bytes:
    """A request head for `/` with `fields` (whole lines, no CRLF)."""
    return (
        method + b" / HTTP/" + version + b"\r\n" + b"".join(f + b"\r\n" for f in fields) + b"\r\n"
    )


HOST = b"Host: app.localhost"
ADMIN = b"Host: admin.localhost"
WS = (HOST, b"Connection: Upgrade", b"Upgrade: websocket", b"Sec-WebSocket-Key: " + WS_KEY)


def bearer(secret: str) -> bytes:
    return b"Authorization: Bearer " + secret.encode()


def basic(user: str, password: str) -> bytes:
    return b"Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode())


# --- hand-offs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "reason"),
    [
        pytest.param(
            b"GET / HTTP/1.1\nHost: app.localhost\n\n", "not the strict grammar", id="bare LF"
        ),
        pytest.param(get(HOST, b"X: a", b" b"), "not the strict grammar", id="obs-fold"),
        pytest.param(get(HOST, b"X: a\x00b"), "not the strict grammar", id="NUL"),
        pytest.param(get(HOST, b"X: a\rb"), "not the strict grammar", id="bare CR"),
        pytest.param(get(HOST, b"Host : a"), "not the strict grammar", id="space before colon"),
        pytest.param(
            b"GET http://app.localhost/ HTTP/1.1\r\n" + HOST + b"\r\n\r\n",
            "not the strict grammar",
            id="absolute-form",
        ),
        pytest.param(
            b"OPTIONS * HTTP/1.1\r\n" + HOST + b"\r\n\r\n",
            "not the strict grammar",
            id="asterisk-form",
        ),
        pytest.param(get(HOST, version=b"2.0"), "not the strict grammar", id="HTTP/2.0"),
        pytest.param(get(HOST, version=b"0.9"), "not the strict grammar", id="HTTP/0.9"),
        pytest.param(b"GET /\r\n\r\n", "not the strict grammar", id="no version"),
        pytest.param(get(HOST, method=b"get"), "the method get", id="lowercase GET"),
        pytest.param(get(HOST, method=b"HEAD"), "the method HEAD", id="HEAD"),
        pytest.param(get(HOST, method=b"CONNECT"), "the method CONNECT", id="CONNECT"),
        pytest.param(get(HOST, method=b"TRACE"), "the method TRACE", id="TRACE"),
        pytest.param(get(HOST, method=b"PROPFIND"), "the method PROPFIND", id="extension method"),
        pytest.param(
            get(HOST, *[b"X-%d: 1" % i for i in range(MAX_HEADERS)]),
            "an oversize head",
            id="too many fields",
        ),
        pytest.param(get(HOST, b"X: " + b"a" * MAX_LINE), "an oversize head", id="a too-long line"),
        pytest.param(get(HOST, HOST), "two Host fields", id="two Hosts"),
        pytest.param(
            get(HOST, b"host: app.localhost"), "two Host fields", id="two Hosts, any case"
        ),
        pytest.param(get(b"Accept: */*"), "no Host", id="no Host"),
        pytest.param(get(), "no Host", id="no fields"),
        pytest.param(
            get(HOST, b"Content-Length: 1", b"Content-Length: 1", method=b"POST"),
            "a repeated or odd Content-Length",
            id="repeated Content-Length",
        ),
        pytest.param(
            get(HOST, b"Content-Length: 1, 1"), "a repeated or odd Content-Length", id="a list"
        ),
        pytest.param(
            get(HOST, b"Content-Length: +1"), "a repeated or odd Content-Length", id="a sign"
        ),
        pytest.param(
            get(HOST, b"Content-Length: 0x10"), "a repeated or odd Content-Length", id="hex"
        ),
        pytest.param(get(HOST, b"Content-Length:"), "a repeated or odd Content-Length", id="empty"),
        pytest.param(
            get(HOST, b"Content-Length: \xd9\xa3"),
            "a repeated or odd Content-Length",
            id="non-ASCII digit",
        ),
        pytest.param(
            get(HOST, b"Content-Length: " + b"1" * 19),
            "a repeated or odd Content-Length",
            id="19 digits",
        ),
        pytest.param(
            get(HOST, b"Transfer-Encoding: chunked", method=b"POST"),
            "a transfer-encoding field",
            id="chunked",
        ),
        pytest.param(
            get(HOST, b"TRANSFER-ENCODING: identity"),
            "a transfer-encoding field",
            id="TE any value",
        ),
        pytest.param(get(HOST, b"Expect: 100-continue"), "a expect field", id="Expect"),
        pytest.param(
            get(HOST, b"HTTP2-Settings: AAMAAABkAAQAAP__"),
            "a http2-settings field",
            id="h2c settings",
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: 5"), "an odd hop count, or a loop", id="MAX_HOPS"
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: 1000"), "an odd hop count, or a loop", id="4 digits"
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: one"), "an odd hop count, or a loop", id="not a number"
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: -1"), "an odd hop count, or a loop", id="negative"
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: 1", b"X-Devrouter-Hops: 4"),
            "two hop counts",
            id="two hop counts",
        ),
        pytest.param(
            get(ADMIN, bearer(TOKEN), b"Authorization: Bearer x"),
            "two Authorization fields",
            id="two Authorization",
        ),
        pytest.param(
            get(HOST, b"Authorization: a", b"authorization: b"),
            "two Authorization fields",
            id="on an open route too",
        ),
        pytest.param(
            get(ADMIN, b"X-Devrouter-Token: " + TOKEN.encode(), b"X-Devrouter-Token: x"),
            "two access tokens",
            id="two X-Devrouter-Token",
        ),
        pytest.param(
            get(HOST, b"Connection: Upgrade", b"Upgrade: h2c"),
            "an Upgrade that is not a WebSocket handshake",
            id="h2c",
        ),
        pytest.param(
            get(*WS[::2], WS[3]),
            "an Upgrade that is not a WebSocket handshake",
            id="websocket without Connection: upgrade",
        ),
        pytest.param(
            get(HOST, b"Connection: keep-alive", WS[2], WS[3]),
            "an Upgrade that is not a WebSocket handshake",
            id="websocket with Connection: keep-alive only",
        ),
        pytest.param(
            get(*WS[:3]),
            "an Upgrade that is not a WebSocket handshake",
            id="without Sec-WebSocket-Key",
        ),
        pytest.param(
            get(*WS, method=b"POST"), "an Upgrade that is not a WebSocket handshake", id="on POST"
        ),
        pytest.param(
            get(*WS, b"Content-Length: 3"),
            "an Upgrade that is not a WebSocket handshake",
            id="with a body",
        ),
        pytest.param(get(*WS, b"Upgrade: websocket"), "two Upgrade fields", id="two Upgrades"),
        pytest.param(
            get(*WS, b"Sec-WebSocket-Key: " + WS_KEY), "two Sec-WebSocket-Key fields", id="two keys"
        ),
        pytest.param(get(b"Host: nope.localhost"), "not a route", id="an unknown route"),
        pytest.param(get(b"Host: app.example.com"), "not a route", id="not .localhost"),
        pytest.param(get(b"Host: localhost"), "not a route", id="localhost"),
        pytest.param(get(b"Host: localhost:7355"), "not a route", id="localhost with a port"),
        pytest.param(get(b"Host: devrouter.localhost"), "not a route", id="devrouter.localhost"),
        pytest.param(get(b"Host: 127.0.0.1:7355"), "not a route", id="an address"),
        pytest.param(get(b"Host: [::1]:7355"), "not a route", id="an IPv6 address"),
        pytest.param(get(b"Host: app.localhost:x"), "not a route", id="a malformed port"),
        pytest.param(
            get(b"Host: app.localhost, app.localhost"), "not a route", id="a list in Host"
        ),
        pytest.param(get(b"Host: caf\xc3\xa9.localhost"), "not a route", id="a non-ASCII Host"),
        pytest.param(get(b"Host:"), "not a route", id="an empty Host"),
        pytest.param(get(ADMIN), "no valid access secret", id="access: no secret"),
        pytest.param(
            get(ADMIN, bearer(TOKEN + "x")), "no valid access secret", id="access: wrong bearer"
        ),
        pytest.param(
            get(ADMIN, basic("u", "wrong")), "no valid access secret", id="access: wrong basic"
        ),
        pytest.param(
            get(ADMIN, b"X-Devrouter-Token: wrong"),
            "no valid access secret",
            id="access: wrong token",
        ),
        pytest.param(
            get(ADMIN, b"X-Devrouter-Token: wrong", b"Authorization: Bearer app"),
            "no valid access secret",
            id="access: the app's Authorization is no secret",
        ),
    ],
)
def test_hand_offs(head: bytes, reason: str) -> None:
    with pytest.raises(HandOff, match=reason):
        plan(head)


def test_the_limits_are_inclusive() -> None:
    """One field fewer than a hand-off, one byte shorter: the fast path's."""
    fields = [b"X-%d: 1" % i for i in range(MAX_HEADERS - 1)]
    assert plan(get(HOST, *fields)).tail.count(b"\r\n") == MAX_HEADERS + 6 + 1
    line = b"X: " + b"a" * (MAX_LINE - 3)
    assert line in plan(get(HOST, line)).tail


# --- plans ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "tail"),
    [
        pytest.param(get(HOST), HOST + b"\r\n" + forwarding() + b"\r\n", id="the simplest"),
        pytest.param(
            get(
                HOST,
                b"Connection: keep-alive",
                b"Keep-Alive: timeout=5",
                b"TE: trailers",
                b"Proxy-Connection: keep-alive",
                b"Trailer: X-Sum",
                b"Proxy-Authorization: Basic eDp5",
                b"Proxy-Authenticate: Basic",
                b"Accept: */*",
            ),
            HOST + b"\r\nAccept: */*\r\n" + forwarding() + b"\r\n",
            id="hop-by-hop fields dropped",
        ),
        pytest.param(
            get(
                b"Forwarded: for=6.6.6.6",
                b"X-Forwarded-Proto: https",
                HOST,
                b"X-Forwarded-Host: evil.example",
                b"X-Forwarded-Port: 443",
                b"X-Real-IP: 6.6.6.6",
                b"X-Forwarded-Prefix: /evil",
                b"X-Forwarded-Server: evil",
                b"X-Forwarded-Ssl: on",
                b"X-Forwarded-Scheme: https",
                b"X-Devrouter-Token: nope",
                b"Accept: */*",
            ),
            HOST + b"\r\nAccept: */*\r\n" + forwarding() + b"\r\n",
            id="the router's forwarding fields replace the client's",
        ),
        pytest.param(
            get(
                HOST,
                b"X-Forwarded-For: 10.0.0.1 ",
                b"Accept: */*",
                b"x-forwarded-for:10.0.0.2, 10.0.0.3",
            ),
            HOST
            + b"\r\nAccept: */*\r\n"
            + forwarding(xff=b"10.0.0.1, 10.0.0.2, 10.0.0.3, 127.0.0.1")
            + b"\r\n",
            id="X-Forwarded-For appended",
        ),
        pytest.param(
            get(HOST, b"X-Devrouter-Hops: 4"),
            HOST + b"\r\n" + forwarding(hops=b"5") + b"\r\n",
            id="the hop counter incremented",
        ),
        pytest.param(
            get(HOST, b"x-devrouter-hops: 003 "),
            HOST + b"\r\n" + forwarding(hops=b"4") + b"\r\n",
            id="the hop counter, padded",
        ),
        pytest.param(
            get(
                HOST,
                b"Connection: X-Secret, host, CONTENT-LENGTH, , te",
                b"X-Secret: 1",
                b"Content-Length: 3",
                b"x-secret: 2",
                b"X-Secret-Not: 3",
                method=b"POST",
            ),
            HOST + b"\r\nContent-Length: 3\r\nX-Secret-Not: 3\r\n" + forwarding() + b"\r\n",
            id="fields named by Connection removed, never Host or Content-Length",
        ),
        pytest.param(
            get(ADMIN, b"Accept: */*", bearer(TOKEN)),
            ADMIN + b"\r\nAccept: */*\r\n" + forwarding(host=b"admin.localhost") + b"\r\n",
            id="the Authorization that admitted removed",
        ),
        pytest.param(
            get(ADMIN, basic("anyone", TOKEN), b"Accept: */*"),
            ADMIN + b"\r\nAccept: */*\r\n" + forwarding(host=b"admin.localhost") + b"\r\n",
            id="a Basic one too",
        ),
        pytest.param(
            get(ADMIN, b"Authorization: Bearer app-token", b"X-Devrouter-Token: " + TOKEN.encode()),
            ADMIN
            + b"\r\nAuthorization: Bearer app-token\r\n"
            + forwarding(host=b"admin.localhost")
            + b"\r\n",
            id="the app's own Authorization kept beside X-Devrouter-Token",
        ),
        pytest.param(
            get(HOST, bearer(TOKEN)),
            HOST + b"\r\n" + bearer(TOKEN) + b"\r\n" + forwarding() + b"\r\n",
            id="an open route's Authorization is the app's",
        ),
        pytest.param(
            get(*WS, b"Sec-WebSocket-Version: 13"),
            HOST
            + b"\r\nSec-WebSocket-Key: "
            + WS_KEY
            + b"\r\nSec-WebSocket-Version: 13\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + forwarding()
            + b"\r\n",
            id="a WebSocket handshake",
        ),
        pytest.param(
            get(
                HOST,
                b"connection: keep-alive, UPGRADE",
                b"upgrade:  WebSocket ",
                b"sec-websocket-key: k",
            ),
            HOST
            + b"\r\nsec-websocket-key: k\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
            + forwarding()
            + b"\r\n",
            id="Firefox's handshake, any case",
        ),
        pytest.param(
            get(b"Host: app.localhost:7355  ", b"X: a\t b ", b"Y:", b"Z: caf\xc3\xa9"),
            b"Host: app.localhost:7355  \r\nX: a\t b \r\nY:\r\nZ: caf\xc3\xa9\r\n"
            + forwarding(host=b"app.localhost:7355")
            + b"\r\n",
            id="values forwarded as they came, the Host's OWS trimmed where it is read",
        ),
        pytest.param(
            get(b"Host: APP.localhost."),
            b"Host: APP.localhost.\r\n" + forwarding(host=b"APP.localhost.") + b"\r\n",
            id="Host case and trailing dot",
        ),
    ],
)
def test_plans_forward_exactly(head: bytes, tail: bytes) -> None:
    assert plan(head).tail == tail


def test_an_ipv6_peer_is_quoted_in_forwarded() -> None:
    got = plan(get(HOST, b"X-Forwarded-For: 10.0.0.1"), peer=b"::1").tail
    assert got == HOST + b"\r\n" + forwarding(xff=b"10.0.0.1, ::1", peer=b'"[::1]"') + b"\r\n"


@pytest.mark.parametrize(
    ("head", "keep_alive"),
    [
        (get(HOST), True),
        (get(HOST, b"Connection: close"), False),
        (get(HOST, b"Connection: keep-alive"), True),
        (get(HOST, b"Connection: Keep-Alive, Close"), False),
        (get(HOST, b"Connection: x-a, CLOSE", b"X-A: 1"), False),
        (get(HOST, version=b"1.0"), False),
        (get(HOST, b"Connection: keep-alive", version=b"1.0"), True),
        (get(HOST, b"Connection: KEEP-ALIVE ", version=b"1.0"), True),
        (get(HOST, b"Connection: close", version=b"1.0"), False),
        (get(HOST, b"Connection: keep-alive, close", version=b"1.0"), False),
        (get(HOST, b"Connection: keep-alive", b"Connection: close"), False),
        (get(*WS), True),
    ],
)
def test_keep_alive(head: bytes, keep_alive: bool) -> None:
    assert plan(head).keep_alive is keep_alive


@pytest.mark.parametrize(
    ("head", "length", "ws_key"),
    [
        (get(HOST), 0, None),
        (get(HOST, b"Content-Length: 0", method=b"POST"), 0, None),
        (get(HOST, b"Content-Length: 5", method=b"PUT"), 5, None),
        (get(HOST, b"content-length:  0017 \t", method=b"PATCH"), 17, None),
        (get(HOST, b"Content-Length: " + b"9" * 18, method=b"POST"), 10**18 - 1, None),
        (get(HOST, b"Content-Length: 2", method=b"DELETE"), 2, None),
        (get(*WS), 0, WS_KEY),
        (get(*WS, b"Content-Length: 0"), 0, WS_KEY),
        (get(HOST, b"Sec-WebSocket-Key: " + WS_KEY), 0, None),  # a key without an Upgrade
    ],
)
def test_length_and_ws_key(head: bytes, length: int, ws_key: bytes | None) -> None:
    got = plan(head)
    assert (got.length, got.ws_key) == (length, ws_key)


def test_a_plan_records_its_decision() -> None:
    head = b"OPTIONS /a?b=c HTTP/1.0\r\nHost: app.localhost\r\n\r\n"
    snapshot = STATE.snapshot
    got, target = plan_request(
        head, snapshot, lookup_in(snapshot), Forwarder(b"127.0.0.1", b"7355"), MAX_HEADERS, MAX_LINE
    )
    assert target == b"/a?b=c"
    assert (got.method, got.minor, got.host, got.route.name) == (
        b"OPTIONS",
        b"0",
        b"app.localhost",
        "app",
    )
    assert got.snapshot is snapshot and got.rest == b"\r\nHost: app.localhost\r\n\r\n"


def test_a_forwarder_keeps_the_block_for_its_last_host() -> None:
    forwarder = Forwarder(b"127.0.0.1", b"7355")
    first = forwarder.fields(b"app.localhost", [], 0)
    assert forwarder.fields(b"app.localhost", [], 0) is first
    assert forwarder.fields(b"admin.localhost", [], 0) == forwarding(host=b"admin.localhost")
    assert forwarder.fields(b"app.localhost", [b"1.2.3.4"], 2) == forwarding(
        xff=b"1.2.3.4, 127.0.0.1", hops=b"3"
    )


# --- replan ---------------------------------------------------------------------------------


def test_replan() -> None:
    state = make_state()
    block = b"\r\nHost: app.localhost\r\nAccept: */*\r\n\r\n"
    first = plan(b"GET /one HTTP/1.1" + block, snapshot=state.snapshot)
    snapshot = state.snapshot
    cases: list[tuple[bytes, Snapshot, bytes | None]] = [
        (b"GET /two?x=1 HTTP/1.1" + block, snapshot, b"/two?x=1"),  # the new target
        (b"GET /one HTTP/1.1" + block, snapshot, b"/one"),
        (b"POST /two HTTP/1.1" + block, snapshot, None),  # another method
        (b"GET /two HTTP/1.0" + block, snapshot, None),  # another version
        (b"GET /two HTTP/1.1\r\nHost: app.localhost\r\nAccept: text/html\r\n\r\n", snapshot, None),
        (b"GET /two HTTP/1.1\r\nHost: app.localhost\r\n\r\n", snapshot, None),
        (b"GET http://a/ HTTP/1.1" + block, snapshot, None),  # not origin-form
        (b"GET /" + b"a" * MAX_LINE + b" HTTP/1.1" + block, snapshot, None),  # too long a line
    ]
    for head, under, target in cases:
        assert replan(first, head, under, MAX_LINE) == target, head[:40]
    reloaded = state.swap(state.snapshot.config)  # the same routes, a new snapshot
    assert replan(first, b"GET /two HTTP/1.1" + block, reloaded, MAX_LINE) is None
