"""devrouter.http2.request: an HTTP/2 request's field list in, the HTTP/1.1 head the HTTP/1
engines read out (or `Malformed`, RFC 9113, 8.1.1), as tables of inputs; and the chunks of a
body whose length was not given."""

from __future__ import annotations

import base64

import pytest

from devrouter.http2.request import Http1Request, Malformed, chunk, last_chunk, to_http1

Fields = list[tuple[bytes, bytes]]
KEY = b"dGhlIHNhbXBsZSBub25jZQ=="


def req(
    method: bytes = b"GET",
    path: bytes = b"/",
    authority: bytes | None = b"api.localhost",
    scheme: bytes = b"https",
    *fields: tuple[bytes, bytes],
) -> Fields:
    out = [(b":method", method), (b":scheme", scheme)]
    if authority is not None:
        out.append((b":authority", authority))
    out.append((b":path", path))
    return out + list(fields)


def fields(*pairs: tuple[bytes, bytes]) -> Fields:
    return req(b"GET", b"/", b"api.localhost", b"https", *pairs)


def post(*pairs: tuple[bytes, bytes]) -> Fields:
    return req(b"POST", b"/", b"api.localhost", b"https", *pairs)


def ws(*extra: tuple[bytes, bytes], path: bytes = b"/ws") -> Fields:
    return [
        (b":method", b"CONNECT"),
        (b":protocol", b"websocket"),
        (b":scheme", b"https"),
        (b":path", path),
        (b":authority", b"api.localhost"),
        (b"sec-websocket-version", b"13"),
        *extra,
    ]


# --- what HTTP/1.1 gets ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "end_stream", "head", "chunked"),
    [
        pytest.param(
            req(),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="the pseudo-fields become the request line and Host",
        ),
        pytest.param(
            req(b"GET", b"/a/b?c=d&e=%20", b"api.localhost:8443"),
            True,
            b"GET /a/b?c=d&e=%20 HTTP/1.1\r\nHost: api.localhost:8443\r\n\r\n",
            False,
            id="the target and a port as given",
        ),
        pytest.param(
            fields((b"accept", b"*/*"), (b"x-a", b"1"), (b"x-a", b"2")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\naccept: */*\r\nx-a: 1\r\nx-a: 2\r\n\r\n",
            False,
            id="fields in order, repeated ones kept",
        ),
        pytest.param(
            fields((b"x-v", b"a \t b"), (b"x-o", b"caf\xc3\xa9")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\nx-v: a \t b\r\nx-o: caf\xc3\xa9\r\n\r\n",
            False,
            id="spaces and tabs inside a value, and obs-text",
        ),
        pytest.param(
            fields((b"x-empty", b"")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\nx-empty: \r\n\r\n",
            False,
            id="an empty value",
        ),
        pytest.param(
            fields((b"cookie", b"a=1"), (b"x", b"y"), (b"cookie", b"b=2"), (b"cookie", b"c=3")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\nCookie: a=1; b=2; c=3\r\nx: y\r\n\r\n",
            False,
            id="cookie crumbs joined (RFC 9113, 8.2.3)",
        ),
        pytest.param(
            fields((b"te", b"trailers")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="te: trailers is hop-by-hop, not forwarded",
        ),
        pytest.param(
            fields((b"te", b"Trailers")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="te's value in any case",
        ),
        pytest.param(
            req(b"GET", b"/", None, b"https", (b"host", b"api.localhost")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="host instead of :authority",
        ),
        pytest.param(
            req(b"GET", b"/", b"api.localhost", b"https", (b"host", b"api.localhost")),
            True,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="host equal to :authority, written once",
        ),
        pytest.param(
            req(b"GET", b"/", b"API.localhost", b"https", (b"host", b"api.LOCALHOST")),
            True,
            b"GET / HTTP/1.1\r\nHost: API.localhost\r\n\r\n",
            False,
            id="host and :authority differ only in case (a host name's case is not its own)",
        ),
        pytest.param(
            req(b"GET", b"/", b"[::1]:8080"),
            True,
            b"GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
            False,
            id="an IPv6 literal",
        ),
        pytest.param(
            req(b"OPTIONS", b"*"),
            True,
            b"OPTIONS * HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="OPTIONS *",
        ),
        pytest.param(
            req(b"POST", b"/up", b"api.localhost", b"https", (b"content-length", b"5")),
            False,
            b"POST /up HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 5\r\n\r\n",
            False,
            id="a body with its length",
        ),
        pytest.param(
            req(
                b"POST",
                b"/up",
                b"api.localhost",
                b"https",
                (b"content-length", b"5"),
                (b"content-length", b"5"),
            ),
            False,
            b"POST /up HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 5\r\n\r\n",
            False,
            id="a repeated equal length, written once",
        ),
        pytest.param(
            req(b"POST", b"/up"),
            False,
            b"POST /up HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
            True,
            id="a body without a length is chunked",
        ),
        pytest.param(
            req(b"GET", b"/"),
            False,
            b"GET / HTTP/1.1\r\nHost: api.localhost\r\nTransfer-Encoding: chunked\r\n\r\n",
            True,
            id="a GET whose HEADERS did not end the stream may have a body too",
        ),
        pytest.param(
            req(b"POST", b"/up"),
            True,
            b"POST /up HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 0\r\n\r\n",
            False,
            id="an empty POST says its length (RFC 9110, 8.6)",
        ),
        pytest.param(
            req(b"PUT", b"/up", b"api.localhost", b"https", (b"content-length", b"0")),
            True,
            b"PUT /up HTTP/1.1\r\nHost: api.localhost\r\nContent-Length: 0\r\n\r\n",
            False,
            id="an empty PUT with its length",
        ),
        pytest.param(
            req(b"DELETE", b"/x"),
            True,
            b"DELETE /x HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="a DELETE without a body has no framing",
        ),
        pytest.param(
            [(b":method", b"CONNECT"), (b":authority", b"api.localhost:443")],
            False,
            b"CONNECT api.localhost:443 HTTP/1.1\r\nHost: api.localhost:443\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n",
            True,
            id="a plain CONNECT: authority-form, for the HTTP/1 engines to refuse",
        ),
        pytest.param(
            req(b"get", b"/"),
            True,
            b"get / HTTP/1.1\r\nHost: api.localhost\r\n\r\n",
            False,
            id="a method is a token, case and all (RFC 9110, 9.1)",
        ),
    ],
)
def test_to_http1(headers: Fields, end_stream: bool, head: bytes, chunked: bool) -> None:
    out = to_http1(headers, end_stream)
    assert out.head == head
    assert out.chunked is chunked
    assert out.websocket is False and out.ws_key == b""
    assert out.has_body is (not end_stream)
    assert out.method == dict(headers)[b":method"]


# --- RFC 8441: a WebSocket over extended CONNECT --------------------------------------------


def test_a_websocket_connect_becomes_an_upgrade_get_with_a_key_of_its_own() -> None:
    out = to_http1(ws((b"origin", b"https://api.localhost")), end_stream=False, ws_key=KEY)
    assert out.head == (
        b"GET /ws HTTP/1.1\r\nHost: api.localhost\r\nsec-websocket-version: 13\r\n"
        b"origin: https://api.localhost\r\n"
        b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: " + KEY + b"\r\n\r\n"
    )
    assert out == Http1Request(out.head, False, True, KEY, b"CONNECT", has_body=True)


def test_a_websocket_key_is_fresh_each_time() -> None:
    keys = {to_http1(ws(), end_stream=False).ws_key for _ in range(20)}
    assert len(keys) == 20
    for key in keys:
        assert len(base64.b64decode(key, validate=True)) == 16  # RFC 6455, 4.1


@pytest.mark.parametrize(
    "extra",
    [
        pytest.param((b"content-length", b"0"), id="a length"),
        pytest.param((b"sec-websocket-key", b"Y2xpZW50J3Mga2V5IQ=="), id="the client's own key"),
    ],
)
def test_a_websocket_connect_carries_only_its_own_framing(extra: tuple[bytes, bytes]) -> None:
    for end_stream in (False, True):
        out = to_http1(ws(extra), end_stream=end_stream, ws_key=KEY)
        assert out.websocket and not out.chunked and out.has_body
        assert b"%b: %b" % extra not in out.head
        assert out.head.lower().count(b"sec-websocket-key: ") == 1
        assert b"Sec-WebSocket-Key: " + KEY in out.head
        assert b"Transfer-Encoding" not in out.head


def test_protocol_is_matched_without_case() -> None:
    headers = [(n, b"WebSocket" if n == b":protocol" else v) for n, v in ws()]
    assert to_http1(headers, end_stream=False).websocket


# --- Malformed (RFC 9113, 8.1.1, 8.2, 8.3): refused before a byte is written ----------------

MALFORMED = [
    # field names
    pytest.param(fields((b"X-Upper", b"v")), id="an uppercase name"),
    pytest.param(fields((b"x-\xc3\xa9", b"v")), id="a non-ASCII name"),
    pytest.param(fields((b"", b"v")), id="an empty name"),
    pytest.param(fields((b"x y", b"v")), id="a space in a name"),
    pytest.param(fields((b"x:y", b"v")), id="a colon in a name"),
    pytest.param(fields((b"x\r\ny", b"v")), id="CRLF in a name"),
    pytest.param(fields((b"x\ny", b"v")), id="LF in a name"),
    pytest.param(fields((b"x\x00", b"v")), id="NUL in a name"),
    # field values (request splitting)
    pytest.param(fields((b"x", b"a\r\nHost: evil")), id="CRLF in a value"),
    pytest.param(fields((b"x", b"a\rb")), id="CR in a value"),
    pytest.param(fields((b"x", b"a\nb")), id="LF in a value"),
    pytest.param(fields((b"x", b"a\x00b")), id="NUL in a value"),
    pytest.param(fields((b"x", b"a\x7fb")), id="DEL in a value"),
    pytest.param(fields((b"x", b" a")), id="a value starting with a space"),
    pytest.param(fields((b"x", b"a\t")), id="a value ending with a tab"),
    pytest.param(fields((b"cookie", b"a=1\r\nx: y")), id="CRLF in a cookie crumb"),
    # connection-specific fields (8.2.2)
    pytest.param(fields((b"connection", b"keep-alive")), id="connection"),
    pytest.param(fields((b"keep-alive", b"timeout=5")), id="keep-alive"),
    pytest.param(fields((b"proxy-connection", b"keep-alive")), id="proxy-connection"),
    pytest.param(fields((b"transfer-encoding", b"chunked")), id="transfer-encoding"),
    pytest.param(fields((b"upgrade", b"websocket")), id="upgrade"),
    pytest.param(fields((b"te", b"gzip")), id="te other than trailers"),
    pytest.param(fields((b"te", b"trailers, deflate")), id="te with trailers and more"),
    # pseudo-fields (8.3)
    pytest.param([*req()[:3], (b"x", b"1"), (b":path", b"/")], id="a pseudo after a regular"),
    pytest.param([(b":status", b"200"), *req()], id="a response pseudo-field"),
    pytest.param([(b":foo", b"x"), *req()], id="an unknown pseudo-field"),
    pytest.param([*req(), (b":path", b"/again")], id="a repeated :path"),
    pytest.param([(b":method", b"GET"), *req()], id="a repeated :method"),
    pytest.param([(b":authority", b"a.localhost"), *req()], id="a repeated :authority"),
    pytest.param(req()[:1] + req()[2:], id="no :scheme"),
    pytest.param(req()[:3], id="no :path"),
    pytest.param(req()[1:], id="no :method"),
    pytest.param(req(path=b""), id="an empty :path"),
    pytest.param(req(path=b"api.localhost/x"), id="a :path not in origin form"),
    pytest.param(req(path=b"https://api.localhost/"), id="a :path in absolute form"),
    pytest.param(req(path=b"/a b"), id="a space in :path"),
    pytest.param(req(path=b"/a\r\nx: y"), id="CRLF in :path"),
    pytest.param(req(path=b"*"), id="* for a GET"),
    pytest.param(req(method=b"G T"), id="a method that is not a token"),
    pytest.param(req(method=b"GET\r\n"), id="CRLF in the method"),
    pytest.param(req(method=b""), id="an empty method"),
    pytest.param(req(authority=None), id="no :authority and no host"),
    pytest.param(req(authority=b""), id="an empty :authority"),
    pytest.param(req(authority=b"user@api.localhost"), id="userinfo in :authority"),
    pytest.param(req(authority=b"api.localhost\r\nx: y"), id="CRLF in :authority"),
    pytest.param(req(authority=b"api.localhost/x"), id="a path in :authority"),
    pytest.param([*req(authority=None), (b"host", b"a b")], id="a host that is no authority"),
    pytest.param(
        req(b"GET", b"/", b"api.localhost", b"https", (b"host", b"evil.localhost")),
        id=":authority and host differ",
    ),
    pytest.param(
        req(b"GET", b"/", None, b"https", (b"host", b"api.localhost"), (b"host", b"evil")),
        id="two different host fields",
    ),
    # CONNECT (8.5) and extended CONNECT (RFC 8441, 4)
    pytest.param(req(b"CONNECT", b"/"), id="a plain CONNECT with :path and :scheme"),
    pytest.param(
        [(b":method", b"CONNECT"), (b":scheme", b"https"), (b":authority", b"a:1")],
        id="a plain CONNECT with :scheme",
    ),
    pytest.param([(b":method", b"CONNECT")], id="a plain CONNECT without :authority"),
    pytest.param([(n, v) for n, v in ws() if n != b":path"], id="a websocket without :path"),
    pytest.param([(n, v) for n, v in ws() if n != b":scheme"], id="a websocket without :scheme"),
    pytest.param(
        [(n, b"chat" if n == b":protocol" else v) for n, v in ws()],
        id="a :protocol other than websocket",
    ),
    pytest.param([(n, b"GET" if n == b":method" else v) for n, v in ws()], id=":protocol on a GET"),
    # content-length
    pytest.param(
        post((b"content-length", b"1"), (b"content-length", b"2")),
        id="conflicting content-length fields",
    ),
    pytest.param(
        post((b"content-length", b"-1")),
        id="a negative content-length",
    ),
    pytest.param(
        post((b"content-length", b"1, 1")),
        id="a content-length list",
    ),
    pytest.param(
        post((b"content-length", b"0x10")),
        id="a hex content-length",
    ),
    pytest.param(
        post((b"content-length", b"")),
        id="an empty content-length",
    ),
    pytest.param(
        post((b"content-length", b"\xd9\xa3")),
        id="a content-length in non-ASCII digits",
    ),
]


@pytest.mark.parametrize("headers", MALFORMED)
@pytest.mark.parametrize("end_stream", [True, False], ids=["ended", "body"])
def test_malformed(headers: Fields, end_stream: bool) -> None:
    with pytest.raises(Malformed):
        to_http1(headers, end_stream)


def test_a_length_with_no_body_to_follow_is_malformed() -> None:
    """The HEADERS frame ended the stream, so no DATA can make up the length (RFC 9113,
    8.1.1); the HTTP/1 engine would wait for it forever."""
    headers = post((b"content-length", b"5"))
    with pytest.raises(Malformed):
        to_http1(headers, end_stream=True)
    assert to_http1(headers, end_stream=False).head.endswith(b"Content-Length: 5\r\n\r\n")


def test_malformed_says_why() -> None:
    with pytest.raises(Malformed, match="connection-specific"):
        to_http1(fields((b"connection", b"close")), True)
    with pytest.raises(Malformed, match="differ"):
        to_http1(req(b"GET", b"/", b"a", b"https", (b"host", b"b")), True)


# --- a body whose length was not given --------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "out"),
    [
        (b"hello", b"5\r\nhello\r\n"),
        (b"x" * 255, b"ff\r\n" + b"x" * 255 + b"\r\n"),
        (b"\r\n0\r\n\r\n", b"7\r\n\r\n0\r\n\r\n\r\n"),  # the bytes are the chunk's own
        (b"", b""),  # never a last chunk by accident
    ],
)
def test_chunk(data: bytes, out: bytes) -> None:
    assert chunk(data) == out


@pytest.mark.parametrize(
    ("trailers", "out"),
    [
        ([], b"0\r\n\r\n"),
        ([(b"x-checksum", b"abc")], b"0\r\nx-checksum: abc\r\n\r\n"),
        ([(b"a", b"1"), (b"b", b"2 3")], b"0\r\na: 1\r\nb: 2 3\r\n\r\n"),
        (  # fields a trailer may not carry or that would mean something else: dropped
            [(b"content-length", b"9"), (b"host", b"evil"), (b"te", b"trailers"), (b"x", b"y")],
            b"0\r\nx: y\r\n\r\n",
        ),
        ([(b"transfer-encoding", b"chunked")], b"0\r\n\r\n"),
    ],
)
def test_last_chunk(trailers: Fields, out: bytes) -> None:
    assert last_chunk(trailers) == out


@pytest.mark.parametrize(
    "trailers",
    [
        [(b":path", b"/")],
        [(b"X-Upper", b"1")],
        [(b"x", b"a\r\nb: c")],
        [(b"x", b"a\x00")],
        [(b"x\n", b"a")],
        [(b"", b"a")],
        [(b"x", b" a")],
    ],
)
def test_last_chunk_refuses_what_http1_cannot_carry(trailers: Fields) -> None:
    with pytest.raises(Malformed):
        last_chunk(trailers)
