"""devrouter.http1.fields: Connection tokens, cutting whole lines out of a field block, and
the forwarding fields the router adds, as bytes (the fast path) and as the pairs the aiohttp
engine sets, which must be the same bytes."""

from __future__ import annotations

import pytest

from devrouter.http1.fields import (
    connection_options,
    forwarding_fields,
    forwarding_pairs,
    keeps_alive,
    line_span,
    named_spans,
    peer_token,
    without_named,
    without_spans,
)


@pytest.mark.parametrize(
    ("value", "close", "keep_alive", "named"),
    [
        (b"close", True, False, []),
        (b"keep-alive", False, True, []),
        (b"keep-alive, close", True, True, []),
        (b"close, keep-alive", True, True, []),
        (b" x-a , ,upgrade ", False, False, [b"x-a", b"upgrade"]),
        (b"te, close, x-b", True, False, [b"te", b"x-b"]),
        (b"", False, False, []),
        (b",", False, False, []),
    ],
)
def test_connection_options(
    value: bytes, close: bool, keep_alive: bool, named: list[bytes]
) -> None:
    got: list[bytes] = []
    assert connection_options(value, got) == (close, keep_alive)
    assert got == named


@pytest.mark.parametrize(
    ("minor", "close", "keep_alive", "expected"),
    [
        (b"1", False, False, True),  # HTTP/1.1 persists by default
        (b"1", True, False, False),
        (b"1", False, True, True),
        (b"1", True, True, False),  # close wins (RFC 9112 §9.3), wherever it stood
        (b"0", False, False, False),  # HTTP/1.0 closes by default
        (b"0", False, True, True),  # its keep-alive opt-in
        (b"0", True, True, False),  # close wins in either order (llhttp: keep-alive does)
        (b"0", True, False, False),
    ],
)
def test_keeps_alive(minor: bytes, close: bool, keep_alive: bool, expected: bool) -> None:
    assert keeps_alive(minor, close, keep_alive) is expected


BLOCK = b"A: 1\r\nB: 22\r\nC:\r\n"


@pytest.mark.parametrize(
    ("pos", "span"),
    [(0, (0, 6)), (3, (0, 6)), (6, (6, 13)), (9, (6, 13)), (11, (6, 13)), (13, (13, 17))],
)
def test_line_span(pos: int, span: tuple[int, int]) -> None:
    assert line_span(BLOCK, pos) == span


@pytest.mark.parametrize(
    ("block", "named", "kept"),
    [
        (b"X-A: 1\r\nY: 2\r\nx-a: 3\r\n", [b"x-a"], b"Y: 2\r\n"),
        (b"X-A: 1\r\nX-AB: 2\r\n", [b"x-a"], b"X-AB: 2\r\n"),  # whole names only
        (b"Host: h\r\nContent-Length: 1\r\nX: 2\r\n", [b"host", b"content-length"], None),
        (b"X: 1\r\nY: 2\r\n", [b"z"], None),
        (b"X: 1\r\nY: 2\r\n", [b"x", b"y"], b""),
        (b"X: has y: inside\r\nY: 2\r\n", [b"y"], b"X: has y: inside\r\n"),
    ],
)
def test_named_spans(block: bytes, named: list[bytes], kept: bytes | None) -> None:
    """Spans in "\\n" + the lowercased block are the lines' spans in the block itself."""
    spans = named_spans(b"\n" + block.lower(), named)
    assert without_spans(block, spans) == (block if kept is None else kept)


@pytest.mark.parametrize(
    ("spans", "kept"),
    [
        ([], BLOCK),
        ([(0, 6)], b"B: 22\r\nC:\r\n"),
        ([(6, 13)], b"A: 1\r\nC:\r\n"),
        ([(0, 6), (13, 17)], b"B: 22\r\n"),
        ([(0, 6), (6, 13), (13, 17)], b""),
    ],
)
def test_without_spans(spans: list[tuple[int, int]], kept: bytes) -> None:
    assert without_spans(BLOCK, spans) == kept


def fields(*pairs: tuple[bytes, bytes]) -> list[bytes]:
    out = [b"HTTP/1.1 ", b"200", b" OK\r\n"]
    for name, value in pairs:
        out += (name, b": ", value, b"\r\n")
    return out


@pytest.mark.parametrize(
    ("pairs", "named", "kept"),
    [
        ([(b"X-A", b"1"), (b"Y", b"2")], [b"x-a"], [(b"Y", b"2")]),
        ([(b"x-a", b"1"), (b"X-A", b"2")], [b"x-a"], []),
        ([(b"Host", b"h"), (b"Content-Length", b"1")], [b"host", b"content-length"], None),
        ([(b"X", b"1")], [], None),
    ],
)
def test_without_named(
    pairs: list[tuple[bytes, bytes]], named: list[bytes], kept: list[tuple[bytes, bytes]] | None
) -> None:
    got = without_named(fields(*pairs), named, 3)
    assert got == fields(*(pairs if kept is None else kept))


@pytest.mark.parametrize(
    ("peer", "token"),
    [
        (b"127.0.0.1", b"127.0.0.1"),
        (b"::1", b'"[::1]"'),
        (b"fe80::1%lo", b'"[fe80::1%lo]"'),
    ],
)
def test_peer_token(peer: bytes, token: bytes) -> None:
    assert peer_token(peer) == token


@pytest.mark.parametrize(
    ("peer", "host", "xff", "hops", "block"),
    [
        (
            b"127.0.0.1",
            b"app.localhost",
            [],
            0,
            b"X-Forwarded-For: 127.0.0.1\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: app.localhost\r\nX-Forwarded-Port: 7355\r\n"
            b'Forwarded: for=127.0.0.1;host="app.localhost";proto=http\r\n'
            b"X-Devrouter-Hops: 1\r\n",
        ),
        (
            b"::1",
            b"app.localhost:7355",
            [b"10.0.0.1", b"10.0.0.2, 10.0.0.3"],
            4,
            b"X-Forwarded-For: 10.0.0.1, 10.0.0.2, 10.0.0.3, ::1\r\nX-Forwarded-Proto: http\r\n"
            b"X-Forwarded-Host: app.localhost:7355\r\nX-Forwarded-Port: 7355\r\n"
            b'Forwarded: for="[::1]";host="app.localhost:7355";proto=http\r\n'
            b"X-Devrouter-Hops: 5\r\n",
        ),
    ],
)
def test_forwarding_fields(
    peer: bytes, host: bytes, xff: list[bytes], hops: int, block: bytes
) -> None:
    assert forwarding_fields(peer, host, b"7355", xff, hops) == block


def aiohttp_decoded(raw: bytes) -> str:
    """A field value as aiohttp's parser hands it over (aiohttp/_http_parser.pyx)."""
    return raw.decode("utf-8", "surrogateescape")


@pytest.mark.parametrize(
    ("peer", "host", "xff", "hops"),
    [
        (b"127.0.0.1", b"app.localhost", [], 0),
        (b"::1", b"app.localhost:7355", [b"10.0.0.1", b"10.0.0.2"], 3),
        (b"127.0.0.1", "café.localhost".encode(), [], 0),  # UTF-8
        (b"127.0.0.1", b"caf\xe9.localhost", [b"\xff\xfe"], 1),  # bytes that are not UTF-8
    ],
)
def test_forwarding_pairs_are_the_same_bytes(
    peer: bytes, host: bytes, xff: list[bytes], hops: int
) -> None:
    pairs = forwarding_pairs(
        aiohttp_decoded(peer), aiohttp_decoded(host), 7355, [aiohttp_decoded(v) for v in xff], hops
    )
    assert [name for name, _ in pairs] == [
        "X-Forwarded-For",
        "X-Forwarded-Proto",
        "X-Forwarded-Host",
        "X-Forwarded-Port",
        "Forwarded",
        "X-Devrouter-Hops",
    ]
    # how aiohttp writes a field (str -> bytes, surrogates back to the bytes they were)
    written = b"".join(
        name.encode() + b": " + value.encode("utf-8", "surrogateescape") + b"\r\n"
        for name, value in pairs
    )
    assert written == forwarding_fields(peer, host, b"7355", xff, hops)
