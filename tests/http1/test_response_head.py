"""devrouter.http1.response_head: which response heads the pattern path relays (and the exact
bytes it writes), which it leaves to llhttp, the parser path's field pass, and a backend's
101 to a WebSocket handshake."""

from __future__ import annotations

import pytest

from devrouter.http1.response_head import (
    ResponsePlan,
    Upgrade,
    accept_for,
    plan_response,
    relay_upgrade,
    response_fields,
)

#: RFC 6455 §1.3's example: the key, and the accept a server answers it with.
WS_KEY = b"dGhlIHNhbXBsZSBub25jZQ=="
WS_ACCEPT = b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


def decide(data: bytes, ws_handshake: bool = False) -> ResponsePlan | Upgrade | None:
    """plan_response as the upstream connection calls it: `end` is where CRLFCRLF starts."""
    return plan_response(data, data.find(b"\r\n\r\n"), ws_handshake)


# --- plan_response --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "status", "out", "length", "reusable"),
    [
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
            200,
            b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n",
            5,
            True,
            id="Content-Length framed, body after the head",
        ),
        pytest.param(
            b"HTTP/1.1 404 Not Found\r\ncontent-length:  12 \t\r\nX-A: b \r\n\r\n",
            404,
            b"HTTP/1.1 404 Not Found\r\nX-A: b \r\n",
            12,
            True,
            id="OWS around the length, values relayed as they came",
        ),
        pytest.param(
            b"HTTP/1.1 200 \r\nContent-Length: 0\r\n\r\n",
            200,
            b"HTTP/1.1 200 \r\n",
            0,
            True,
            id="an empty reason",
        ),
        pytest.param(
            b"HTTP/1.1 204 No Content\r\nDate: x\r\n\r\n",
            204,
            b"HTTP/1.1 204 No Content\r\nDate: x\r\n",
            -1,
            True,
            id="204 without a length",
        ),
        pytest.param(
            b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n\r\n',
            304,
            b'HTTP/1.1 304 Not Modified\r\nETag: "a"\r\n',
            -1,
            True,
            id="304 without a length",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\n",
            2,
            False,
            id="HTTP/1.0: not reusable, relayed as 1.1",
        ),
        pytest.param(
            b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\n"
            b"Content-Length: 2\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\n",
            2,
            True,
            id="HTTP/1.0 keep-alive",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\n",
            2,
            False,
            id="HTTP/1.1 close",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: Keep-Alive, Close\r\nContent-Length: 2\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\n",
            2,
            False,
            id="close wins",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nConnection: X-Drop, content-length\r\nX-Drop: 1\r\n"
            b"X-Keep: 2\r\nx-drop: 3\r\nContent-Length: 2\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\nX-Keep: 2\r\n",
            2,
            True,
            id="fields named by Connection removed",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nProxy-Authenticate: Basic\r\nTrailer: X\r\nUpgrade: h2c\r\n"
            b"TE: trailers\r\nContent-Length: 2\r\nSet-Cookie: a=b\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\nSet-Cookie: a=b\r\n",
            2,
            True,
            id="hop-by-hop fields removed",
        ),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"9" * 18 + b"\r\n\r\n",
            200,
            b"HTTP/1.1 200 OK\r\n",
            10**18 - 1,
            True,
            id="18 digits",
        ),
    ],
)
def test_planned_responses(
    data: bytes, status: int, out: bytes, length: int, reusable: bool
) -> None:
    end = data.find(b"\r\n\r\n")
    assert decide(data) == ResponsePlan(data[: end + 4], status, out, length, reusable)


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", id="chunked"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            id="chunked and a length",
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", id="close-delimited"),
        pytest.param(b"HTTP/1.0 200 OK\r\n\r\n", id="close-delimited 1.0"),
        pytest.param(b"HTTP/1.1 100 Continue\r\n\r\n", id="100"),
        pytest.param(b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", id="103"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n", id="two lengths"
        ),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\n", id="a length list"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", id="a negative length"),
        pytest.param(b"HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n", id="an empty length"),
        pytest.param(
            b"HTTP/1.1 200 OK\r\nContent-Length: " + b"1" * 19 + b"\r\n\r\n", id="19 digits"
        ),
        pytest.param(b"HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n", id="bare LF"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 0\r\n\r\n", id="obs-fold"),
        pytest.param(b"HTTP/1.1 200 OK\r\nX : a\r\nContent-Length: 0\r\n\r\n", id="space, colon"),
        pytest.param(b"HTTP/2 200 OK\r\nContent-Length: 0\r\n\r\n", id="HTTP/2"),
        pytest.param(b"HTTP/1.1 2000 OK\r\nContent-Length: 0\r\n\r\n", id="four digits"),
        pytest.param(b"SSH-2.0-OpenSSH_9.6\r\n\r\n", id="not HTTP"),
    ],
)
def test_responses_left_to_llhttp(data: bytes) -> None:
    assert decide(data) is None
    assert decide(data, ws_handshake=True) is None


def test_a_head_that_does_not_end_where_told_is_llhttp_s() -> None:
    data = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"
    assert plan_response(data + b"X", len(data) - 4, False) is not None  # body after it
    assert plan_response(data, len(data) - 6, False) is None  # `end` is not the head's end


def test_a_101_to_a_handshake_is_an_upgrade() -> None:
    lines = b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + WS_ACCEPT
    data = b"HTTP/1.1 101 Switching Protocols\r\n" + lines + b"\r\n\r\n"
    assert decide(data, ws_handshake=True) == Upgrade(b"Switching Protocols", lines + b"\r\n")
    assert decide(data, ws_handshake=False) is None


# --- response_fields (the parser path) ------------------------------------------------------

START = [b"HTTP/1.1 ", b"200", b" OK\r\n"]


@pytest.mark.parametrize(
    ("headers", "out", "length", "chunked"),
    [
        ([], b"", -1, False),
        (
            [(b"Content-Type", b"text/plain"), (b"X-A", b"")],
            b"Content-Type: text/plain\r\nX-A: \r\n",
            -1,
            False,
        ),
        ([(b"Content-Length", b"5")], b"", 5, False),
        ([(b"content-length", b"007 \t")], b"", 7, False),
        ([(b"Content-Length", b"5"), (b"Content-Length", b"5")], b"", -2, False),
        ([(b"Content-Length", b"5x")], b"", -2, False),
        ([(b"Content-Length", b"1" * 19)], b"", -2, False),
        ([(b"Transfer-Encoding", b"chunked"), (b"Date", b"d")], b"Date: d\r\n", -1, True),
        (
            [
                (b"Connection", b"X-Drop, keep-alive"),
                (b"X-Drop", b"1"),
                (b"X-Keep", b"2"),
                (b"x-drop", b"3"),
            ],
            b"X-Keep: 2\r\n",
            -1,
            False,
        ),
        (
            [
                (b"Connection", b"x-a"),
                (b"Connection", b"X-B"),
                (b"X-A", b"1"),
                (b"X-B", b"2"),
                (b"X-C", b"3"),
            ],
            b"X-C: 3\r\n",
            -1,
            False,
        ),
        (
            [
                (b"Keep-Alive", b"timeout=5"),
                (b"Proxy-Authenticate", b"Basic"),
                (b"Trailer", b"X"),
                (b"Vary", b"*"),
            ],
            b"Vary: *\r\n",
            -1,
            False,
        ),
    ],
)
def test_response_fields(
    headers: list[tuple[bytes, bytes]], out: bytes, length: int, chunked: bool
) -> None:
    got, got_length, got_chunked = response_fields(headers, list(START))
    assert (b"".join(got), got_length, got_chunked) == (b"".join(START) + out, length, chunked)


# --- WebSocket upgrades ---------------------------------------------------------------------


def test_accept_for_rfc_6455_example() -> None:
    assert accept_for(WS_KEY) == WS_ACCEPT
    assert accept_for(b" " + WS_KEY + b" ") == WS_ACCEPT  # the key's OWS is not hashed


@pytest.mark.parametrize(
    ("lines", "relayed"),
    [
        pytest.param(
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: "
            + WS_ACCEPT
            + b"\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n"
            b"Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            id="the plainest",
        ),
        pytest.param(
            b"upgrade: WebSocket\r\nconnection: keep-alive, upgrade, X-Drop\r\nX-Drop: 1\r\n"
            b"Sec-WebSocket-Accept:  " + WS_ACCEPT + b" \r\nSec-WebSocket-Protocol: chat\r\n"
            b"Keep-Alive: timeout=5\r\nContent-Length: 0\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: " + WS_ACCEPT + b" \r\n"
            b"Sec-WebSocket-Protocol: chat\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            id="any case, named and framing fields removed",
        ),
    ],
)
def test_relay_a_good_101(lines: bytes, relayed: bytes) -> None:
    assert relay_upgrade(Upgrade(b"Switching Protocols", lines), WS_KEY) == relayed


@pytest.mark.parametrize(
    ("lines", "problem"),
    [
        (
            b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: wrong=\r\n",
            "a wrong Sec-WebSocket-Accept",
        ),
        (b"Upgrade: websocket\r\nConnection: Upgrade\r\n", "a wrong Sec-WebSocket-Accept"),
        (
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n",
            "no Upgrade: websocket",
        ),
        (
            b"Upgrade: h2c\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n",
            "no Upgrade: websocket",
        ),
        (
            b"Upgrade: websocket\r\nSec-WebSocket-Accept: " + WS_ACCEPT + b"\r\n",
            "no Connection: upgrade",
        ),
        (
            b"Upgrade: websocket\r\nConnection: keep-alive\r\nSec-WebSocket-Accept: "
            + WS_ACCEPT
            + b"\r\n",
            "no Connection: upgrade",
        ),
    ],
)
def test_relay_a_bad_101(lines: bytes, problem: str) -> None:
    assert relay_upgrade(Upgrade(b"Switching Protocols", lines), WS_KEY) == problem
