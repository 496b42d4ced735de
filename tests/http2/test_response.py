"""devrouter.http2.response: the bytes an HTTP/1 engine writes for one request in, the HTTP/2
response parts out (heads, body, end and trailers, tunnel bytes), as tables of bytes; every
case split at every offset, and byte by byte, gives the same parts."""

from __future__ import annotations

from typing import Any

import pytest

from devrouter.http2.response import BadResponse, ResponseReader, h2_fields

Fields = list[tuple[bytes, bytes]]


class Parts:
    """A ResponseSink that records the parts; consecutive body (or tunnel) bytes are one."""

    def __init__(self) -> None:
        self.parts: list[tuple[Any, ...]] = []

    def _bytes(self, kind: str, data: bytes) -> None:
        if self.parts and self.parts[-1][0] == kind:
            self.parts[-1] = (kind, self.parts[-1][1] + data)
        else:
            self.parts.append((kind, data))

    def head(self, status: int, fields: Fields) -> None:
        self.parts.append(("head", status, fields))

    def body(self, data: bytes) -> None:
        self._bytes("body", data)

    def end(self, trailers: Fields) -> None:
        self.parts.append(("end", trailers))

    def tunnel(self, data: bytes) -> None:
        self._bytes("tunnel", data)


def read(
    pieces: list[bytes], head_only: bool = False, websocket: bool = False, close: bool = False
) -> tuple[list[tuple[Any, ...]], bool | None]:
    """The parts for `pieces` fed one after the other, and closed()'s answer when `close`."""
    sink = Parts()
    reader = ResponseReader(sink, head_only=head_only, websocket=websocket)
    for piece in pieces:
        reader.feed(piece)
    return sink.parts, (reader.closed() if close else None)


def splits(data: bytes) -> list[list[bytes]]:
    """`data` whole, cut in two at every offset, and byte by byte."""
    return [
        [data],
        *([data[:i], data[i:]] for i in range(1, len(data))),
        [bytes([b]) for b in data],
    ]


OK_HEAD = b"HTTP/1.1 200 OK\r\n"
UPGRADED = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n"

CASES = [
    pytest.param(
        OK_HEAD + b"Content-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello",
        {},
        [
            ("head", 200, [(b":status", b"200"), (b"content-type", b"text/plain"),
                           (b"content-length", b"5")]),
            ("body", b"hello"),
            ("end", []),
        ],
        None,
        id="a length",
    ),
    pytest.param(
        OK_HEAD + b"X-Mixed-Case: A b\r\nSet-Cookie: a=1\r\nSET-COOKIE: b=2\r\n"
        b"Connection: keep-alive, X-Mixed-Case\r\nKeep-Alive: timeout=5\r\n"
        b"Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nTE: trailers\r\n"
        b"Content-Length: 0\r\n\r\n",
        {},
        [
            ("head", 200, [(b":status", b"200"), (b"x-mixed-case", b"A b"), (b"set-cookie", b"a=1"),
                           (b"set-cookie", b"b=2"), (b"content-length", b"0")]),
            ("end", []),
        ],
        None,
        id="names lowercased, connection-specific fields dropped, values as they came",
    ),
    pytest.param(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\n"
        + OK_HEAD + b"Content-Length: 2\r\n\r\nok",
        {},
        [
            ("head", 103, [(b":status", b"103"), (b"link", b"</s.css>; rel=preload")]),
            ("head", 100, [(b":status", b"100")]),
            ("head", 200, [(b":status", b"200"), (b"content-length", b"2")]),
            ("body", b"ok"),
            ("end", []),
        ],
        None,
        id="interim heads, then the final one",
    ),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\nSec-WebSocket-Protocol: chat\r\n"
        b"\r\n\x81\x02hi\x88\x00",
        {"websocket": True},
        [
            ("head", 101, [(b":status", b"200"), (b"sec-websocket-protocol", b"chat")]),
            ("tunnel", b"\x81\x02hi\x88\x00"),
            ("end", []),
        ],
        True,
        id="a 101 opens the tunnel: :status 200 (RFC 8441, 5), then the bytes as they come",
    ),
    pytest.param(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        {"websocket": True},
        [("head", 101, [(b":status", b"200")]), ("end", [])],
        True,
        id="a 101 with no tunnel bytes yet",
    ),
    pytest.param(
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 4\r\n\r\nnope",
        {"websocket": True},
        [("head", 404, [(b":status", b"404"), (b"content-length", b"4")]), ("body", b"nope"),
         ("end", [])],
        None,
        id="a WebSocket refused: the answer as it is",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 5\r\n\r\nhello",
        {"websocket": True},
        [("head", 200, [(b":status", b"502"), (b"content-length", b"5")]), ("body", b"hello"),
         ("end", [])],
        None,
        id="a WebSocket answered with a 2xx but no 101 is no tunnel: never a 2xx to the client",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 1234\r\nContent-Type: text/html\r\n\r\n",
        {"head_only": True},
        [
            ("head", 200, [(b":status", b"200"), (b"content-length", b"1234"),
                           (b"content-type", b"text/html")]),
            ("end", []),
        ],
        None,
        id="HEAD: the length of the body not sent",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n",
        {"head_only": True},
        [("head", 200, [(b":status", b"200")]), ("end", [])],
        None,
        id="HEAD of a chunked response",
    ),
    pytest.param(
        b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n",
        {},
        [("head", 204, [(b":status", b"204"), (b"x-a", b"1")]), ("end", [])],
        None,
        id="204",
    ),
    pytest.param(
        b"HTTP/1.1 304 Not Modified\r\nETag: \"x\"\r\nContent-Length: 10\r\n\r\n",
        {},
        [("head", 304, [(b":status", b"304"), (b"etag", b'"x"'), (b"content-length", b"10")]),
         ("end", [])],
        None,
        id="304 with the length of the body it has not",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"
        b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 42\r\nConnection: close\r\n"
        b"X-Other: a b\r\n\r\n",
        {},
        [
            ("head", 200, [(b":status", b"200"), (b"trailer", b"X-Sum")]),
            ("body", b"hello world"),
            ("end", [(b"x-sum", b"42"), (b"x-other", b"a b")]),
        ],
        None,
        id="chunked, with trailers",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        {},
        [("head", 200, [(b":status", b"200")]), ("end", [])],
        None,
        id="chunked and empty",
    ),
    pytest.param(
        OK_HEAD + b"Content-Type: text/event-stream\r\n\r\ndata: 1\n\n",
        {},
        [("head", 200, [(b":status", b"200"), (b"content-type", b"text/event-stream")]),
         ("body", b"data: 1\n\n"), ("end", [])],
        True,
        id="no length, not chunked: the body runs until the engine closes",
    ),
    pytest.param(
        b"HTTP/1.0 200 OK\r\n\r\nold",
        {},
        [("head", 200, [(b":status", b"200")]), ("body", b"old"), ("end", [])],
        True,
        id="HTTP/1.0 until close",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 10\r\n\r\nhello",
        {},
        [("head", 200, [(b":status", b"200"), (b"content-length", b"10")]), ("body", b"hello")],
        False,
        id="a length cut short by the close: no end",
    ),
    pytest.param(
        OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        {},
        [("head", 200, [(b":status", b"200")]), ("body", b"hello")],
        False,
        id="chunks cut short by the close: no end",
    ),
    pytest.param(
        OK_HEAD + b"Content-Len",
        {},
        [],
        False,
        id="a head cut short",
    ),
    pytest.param(
        OK_HEAD + b"Content-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx",
        {},
        [("head", 200, [(b":status", b"200"), (b"content-length", b"2")]), ("body", b"ok"),
         ("end", [])],
        True,
        id="bytes after the response are not this stream's",
    ),
]  # fmt: skip


@pytest.mark.parametrize(("data", "kw", "parts", "closed"), CASES)
def test_response_parts_at_every_split(
    data: bytes, kw: dict[str, bool], parts: list[tuple[Any, ...]], closed: bool | None
) -> None:
    for pieces in splits(data):
        got, ok = read(pieces, close=closed is not None, **kw)
        assert got == parts, pieces
        assert ok is closed


def test_closed_twice_ends_once() -> None:
    sink = Parts()
    reader = ResponseReader(sink, head_only=False, websocket=False)
    reader.feed(OK_HEAD + b"\r\nabc")
    assert reader.closed() and reader.closed()
    assert sink.parts[-1] == ("end", []) and sink.parts.count(("end", [])) == 1


def test_tunnel_bytes_after_the_head_pass_untouched() -> None:
    sink = Parts()
    reader = ResponseReader(sink, head_only=False, websocket=True)
    reader.feed(UPGRADED)
    for data in (b"HTTP/1.1 200 OK\r\n\r\n", b"\x00" * 3, b"\r\n\r\n"):
        reader.feed(data)  # not read as HTTP: the tunnel's bytes
    assert sink.parts[1:] == [("tunnel", b"HTTP/1.1 200 OK\r\n\r\n\x00\x00\x00\r\n\r\n")]


@pytest.mark.parametrize(
    ("data", "kw"),
    [
        pytest.param(b"garbage\r\n\r\n", {}, id="not HTTP"),
        pytest.param(b"HTTP/1.1 2000 OK\r\n\r\n", {}, id="a bad status"),
        pytest.param(OK_HEAD + b"Bad Name: x\r\n\r\n", {}, id="a bad field name"),
        pytest.param(OK_HEAD + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n", {}, id="a bad chunk"),
        pytest.param(
            UPGRADED,
            {},
            id="a 101 to a request that asked for no upgrade",
        ),
        pytest.param(  # the HTTP/1 engines never relay one (http1.response_head.relay_upgrade)
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            {"websocket": True},
            id="a 101 without Connection: upgrade",
        ),
    ],
)
def test_bad_response(data: bytes, kw: dict[str, bool]) -> None:
    reader = ResponseReader(Parts(), head_only=False, websocket=kw.get("websocket", False))
    with pytest.raises(BadResponse):
        reader.feed(data)


# --- h2_fields ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "raw", "websocket", "out"),
    [
        (200, [], False, [(b":status", b"200")]),
        (
            404,
            [(b"Content-Type", b"text/html"), (b"X-A", b"1"), (b"x-a", b"2")],
            False,
            [(b":status", b"404"), (b"content-type", b"text/html"), (b"x-a", b"1"), (b"x-a", b"2")],
        ),
        (
            200,
            [(b"Connection", b"close"), (b"KEEP-ALIVE", b"x"), (b"Transfer-Encoding", b"chunked"),
             (b"Upgrade", b"h2c"), (b"Proxy-Connection", b"x"), (b"TE", b"trailers"),
             (b"Sec-WebSocket-Accept", b"x")],
            False,
            [(b":status", b"200"), (b"sec-websocket-accept", b"x")],
        ),
        (101, [(b"Sec-WebSocket-Accept", b"x"), (b"Sec-WebSocket-Protocol", b"chat")], True,
         [(b":status", b"200"), (b"sec-websocket-protocol", b"chat")]),
        (204, [], True, [(b":status", b"502")]),
        (403, [], True, [(b":status", b"403")]),
        (302, [(b"Location", b"/login")], True, [(b":status", b"302"), (b"location", b"/login")]),
        (103, [(b"Link", b"</a>")], False, [(b":status", b"103"), (b"link", b"</a>")]),
    ],
)  # fmt: skip
def test_h2_fields(status: int, raw: Fields, websocket: bool, out: Fields) -> None:
    assert h2_fields(status, raw, websocket) == out
