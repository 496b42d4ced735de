"""`https: redirect`: the 308 a plain-HTTP request gets, as bytes (devrouter.http1.answers)."""

from __future__ import annotations

import pytest

from devrouter.http1.answers import https_redirect


@pytest.mark.parametrize(
    ("head", "location"),
    [
        (b"GET / HTTP/1.1\r\nHost: api.localhost:7355", b"https://api.localhost:7355/"),
        (
            b"POST /a/b?c=d HTTP/1.1\r\nhost: web.shop.localhost",
            b"https://web.shop.localhost/a/b?c=d",
        ),
        (
            b"GET /x HTTP/1.1\r\nUser-Agent: t\r\nHOST:  localhost:7355 ",
            b"https://localhost:7355/x",
        ),
        (b"GET / HTTP/1.1\r\nHost: [::1]:7355", b"https://[::1]:7355/"),
    ],
)
def test_a_request_is_sent_to_its_https_url(head: bytes, location: bytes) -> None:
    answer = https_redirect(head)
    assert answer.startswith(b"HTTP/1.1 308 Permanent Redirect\r\n")
    assert b"\r\nLocation: " + location + b"\r\n" in answer
    assert b"\r\nConnection: close\r\n" in answer
    head_part, _, body = answer.partition(b"\r\n\r\n")
    assert b"Content-Length: %d\r\n" % len(body) in head_part + b"\r\n"


@pytest.mark.parametrize(
    "head",
    [
        b"",
        b"GET / HTTP/1.1",  # no Host
        b"GET / HTTP/1.1\r\nHost: ",
        b"GET / HTTP/1.1\r\nHost: evil.example",  # not a name the router answers
        b"GET / HTTP/1.1\r\nHost: 192.168.1.1",
        b"GET / HTTP/1.1\r\nHost: a b",
        b"GET http://api.localhost/ HTTP/1.1\r\nHost: api.localhost",  # absolute form
        b"GET /\x7f HTTP/1.1\r\nHost: api.localhost",  # not visible ASCII
        b"GET //x y HTTP/1.1\r\nHost: api.localhost",  # four parts
        b"GET / HTTP/1.1\r\nHost: api.localhost\r\n\rLocation: x",
    ],
)
def test_a_head_without_a_usable_target_or_host_gets_400_and_nothing_reflected(
    head: bytes,
) -> None:
    answer = https_redirect(head)
    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"Location" not in answer.partition(b"\r\n\r\n")[0]
