"""devrouter.http1.answers: the router's own responses on the fast path, framed as bytes, and
the Accept field that picks an error page's form."""

from __future__ import annotations

import pytest

from devrouter.http1.answers import accept_of, error_response


@pytest.mark.parametrize(
    ("status", "fields", "content_type", "body", "close", "expected"),
    [
        (
            502,
            {"X-Devrouter-Error": "502"},
            "text/html",
            b"<p>down</p>",
            False,
            b"HTTP/1.1 502 Bad Gateway\r\nX-Devrouter-Error: 502\r\n"
            b"Content-Type: text/html; charset=utf-8\r\nContent-Length: 11\r\n\r\n<p>down</p>",
        ),
        (
            400,
            {"Cache-Control": "no-store", "X-Devrouter-Error": "400"},
            "text/plain",
            b"bad\n",
            True,
            b"HTTP/1.1 400 Bad Request\r\nCache-Control: no-store\r\nX-Devrouter-Error: 400\r\n"
            b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: 4\r\n"
            b"Connection: close\r\n\r\nbad\n",
        ),
        (
            503,
            {},
            "application/json",
            b"",
            True,
            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json; charset=utf-8\r\n"
            b"Content-Length: 0\r\nConnection: close\r\n\r\n",
        ),
        (
            504,
            {},
            "text/plain",
            "délai".encode(),
            False,
            b"HTTP/1.1 504 Gateway Timeout\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 6\r\n\r\nd\xc3\xa9lai",  # the length in bytes, not characters
        ),
        (
            418,
            {},
            "text/plain",
            b"x",
            False,
            b"HTTP/1.1 418 Error\r\nContent-Type: text/plain; charset=utf-8\r\n"
            b"Content-Length: 1\r\n\r\nx",
        ),
    ],
)
def test_error_response(
    status: int,
    fields: dict[str, str],
    content_type: str,
    body: bytes,
    close: bool,
    expected: bytes,
) -> None:
    assert error_response(status, fields, content_type, body, close) == expected


@pytest.mark.parametrize(
    ("head", "accept"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b""),
        (b"GET / HTTP/1.1\r\nAccept: text/html\r\n\r\n", b" text/html"),
        (b"GET / HTTP/1.1\r\naccept:application/json\r\n\r\n", b"application/json"),
        (b"GET / HTTP/1.1\r\nAccept: a\r\nACCEPT: b\r\n\r\n", b" b"),  # the last one
        (b"GET / HTTP/1.1\r\nAccept-Encoding: gzip\r\nX-Accept: c\r\n\r\n", b""),
        (b"GET /accept: HTTP/1.1\r\n\r\n", b""),  # only field lines
    ],
)
def test_accept_of(head: bytes, accept: bytes) -> None:
    assert accept_of(head) == accept
