"""devrouter.http1.wire: the bytes where a request starts, and what is refused before a parser.

Pure: bytes in, a decision out, no socket (the end-to-end cases are in test_hardening.py).
"""

from __future__ import annotations

import pytest

from devrouter.http1.wire import (
    HTTP2_PREFACE,
    MAX_PROBE_BYTES,
    PREVIEW_BYTES,
    early_refusal,
    preview,
    settled,
)

# curl --http2-prior-knowledge: the preface, then a SETTINGS frame in the same write
SETTINGS = b"\x00\x00\x12\x04\x00\x00\x00\x00\x00\x00\x03\x00\x00\x00d\x00\x04\x02\x00\x00\x00"
CLIENT_HELLO = bytes.fromhex("16030100c4010000c00303") + b"\xaa" * 32

# (bytes, the case refused or None, settled)
CASES: dict[str, tuple[bytes, str | None, bool]] = {
    "h2-preface-and-frames": (HTTP2_PREFACE + SETTINGS, "http2-preface", True),
    "h2-preface-alone": (HTTP2_PREFACE, "http2-preface", True),
    "h2-request-line": (b"PRI * HTTP/2.0\r\n", "http2-preface", True),
    "h2-preface-after-empty-line": (b"\r\n" + HTTP2_PREFACE, "http2-preface", True),
    "h2-preface-partial": (b"PRI * HTTP/2", None, False),
    "tls-client-hello": (CLIENT_HELLO, "tls", True),
    "tls-first-byte": (b"\x16", "tls", True),
    "bare-crs": (b"\r\r\rGET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", "bare-cr", True),
    "bare-cr-then-crlf": (b"\r\r\nGET / HTTP/1.1\r\n", "bare-cr", True),
    "crlf-then-bare-cr": (b"\r\n\rGET / HTTP/1.1\r\n", "bare-cr", True),
    "one-cr-so-far": (b"\r", None, False),
    "http-0.9": (b"GET /\r\n", "http/0.9", True),
    "http-0.9-blank-line": (b"GET /\r\n\r\n", "http/0.9", True),
    "http-0.9-lf": (b"GET /index.html\n", "http/0.9", True),
    "http-0.9-partial": (b"GET /", None, False),
    "ssh-greeting": (b"SSH-2.0-OpenSSH_9.6\r\n", "not-http", True),
    "nul-first": (b"\x00\x01\x02", "not-http", True),
    "high-byte-first": (b"\xff GET / HTTP/1.1\r\n", "not-http", True),
    "space-first": (b" GET / HTTP/1.1\r\n", "not-http", True),
    # left to the parsers
    "http-1.1": (b"GET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", None, True),
    "http-1.0": (b"GET / HTTP/1.0\r\n\r\n", None, True),
    "empty-lines-first": (b"\r\n\r\nGET / HTTP/1.1\r\nHost: a.localhost\r\n\r\n", None, True),
    "partial-head": (b"GET / HTTP/1.1\r\nHost: a.loc", None, True),
    "partial-request-line": (b"GET /long/pa", None, False),
    "http-2.0-request-line": (b"GET / HTTP/2.0\r\nHost: a.localhost\r\n\r\n", None, True),
    "lowercase-method": (b"get / HTTP/1.1\r\n", None, True),
    "bare-lf-first": (b"\nGET / HTTP/1.1\r\n", None, True),
    "bare-lf-head": (b"GET / HTTP/1.1\nHost: a.localhost\n\n", None, True),
    "nothing-yet": (b"", None, False),
    "empty-lines-only": (b"\r\n\r\n", None, False),
}


@pytest.mark.parametrize("name", list(CASES))
def test_early_refusal_table(name: str) -> None:
    data, case, done = CASES[name]
    refusal = early_refusal(data)
    assert (refusal.case if refusal else None) == case
    assert settled(data) is done
    assert early_refusal(bytearray(data)) == refusal  # the fast path passes its buffer


@pytest.mark.parametrize("name", [n for n, (_, case, _) in CASES.items() if case])
def test_a_refusal_is_a_400_with_one_line_and_close_or_no_answer(name: str) -> None:
    data, case, _ = CASES[name]
    refusal = early_refusal(data)
    assert refusal is not None
    if case == "tls":  # plain bytes are useless to a TLS client
        assert refusal.status is None and refusal.response == b""
        return
    head, _, body = refusal.response.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"HTTP/1.1 400 Bad Request"
    assert b"Connection: close" in lines
    assert b"Content-Length: %d" % len(body) in lines
    assert b"X-Devrouter-Error: 400" in lines
    assert body.startswith(b"devrouter: 400 Bad request: ") and body.count(b"\n") == 1
    body.decode("ascii")  # plain bytes for any client


def test_the_http2_answer_says_what_to_use() -> None:
    refusal = early_refusal(HTTP2_PREFACE + SETTINGS)
    assert refusal is not None
    assert refusal.reason == (
        "devrouter speaks HTTP/1.1 on this port; HTTP/2 with prior knowledge is not supported "
        "(use http/1.1)"
    )


@pytest.mark.parametrize("name", [n for n, (_, case, _) in CASES.items() if case])
def test_the_log_line_is_one_line_with_a_short_escaped_preview(name: str) -> None:
    data, _, _ = CASES[name]
    refusal = early_refusal(data + b"\x00" * 4096)
    assert refusal is not None
    assert "\n" not in refusal.log and "\r" not in refusal.log
    assert preview(data + b"\x00" * 4096) in refusal.log
    assert len(refusal.log) < 400


def test_preview_is_escaped_and_cut() -> None:
    assert preview(b"GET /\r\n") == r"b'GET /\r\n'"
    long = preview(b"\x00" * 1000)
    assert long.endswith("...") and long.count(r"\x00") == PREVIEW_BYTES


def test_a_request_line_that_never_ends_is_left_to_the_parsers_limits() -> None:
    data = b"GET /" + b"a" * MAX_PROBE_BYTES
    assert early_refusal(data) is None
    assert settled(data)
