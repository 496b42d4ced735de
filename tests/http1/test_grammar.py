"""devrouter.http1.grammar: the factored alternations match exactly their names; the
patterns accept the strict grammar and nothing laxer (more cases in test_request_head and
test_differential)."""

from __future__ import annotations

import re

import pytest

from devrouter.http1.grammar import (
    BAD_VALUE,
    BAD_VALUE_B,
    HEAD_RE,
    RESPONSE_HEAD_RE,
    alternation,
    has_long_line,
    maybe_http,
)
from devrouter.http1.policy import RESPONSE_DROP_B
from devrouter.http1.request_head import _RULES


@pytest.mark.parametrize(
    "names",
    [
        sorted(_RULES),
        sorted(RESPONSE_DROP_B),
        [b"te", b"trailer", b"transfer-encoding"],
        [b"a", b"ab", b"abc"],
        [b"ab", b"ac", b"a"],
        [b"x"],
    ],
)
def test_the_factored_field_names_match_exactly_the_names(names: list[bytes]) -> None:
    exact = re.compile(b"(?:" + alternation(names) + rb")\Z")
    for name in names:
        assert exact.match(name), name
    near = {n[:i] for n in names for i in range(len(n))} | {n + b"x" for n in names}
    for other in near - set(names) | {b"", b"b", b"hostx", b"x-forwarded-"}:
        assert exact.match(other) is None, other


@pytest.mark.parametrize(
    ("head", "ok"),
    [
        (b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", True),
        (b"GET /x?y=1 HTTP/1.0\r\n\r\n", True),
        (b"GET / HTTP/1.1\r\nX:\r\n\r\n", True),  # an empty value
        (b"GET / HTTP/1.1\r\nX: a\tb \r\n\r\n", True),  # tab and trailing OWS in a value
        (b"GET / HTTP/1.1\r\nX: caf\xc3\xa9\r\n\r\n", True),  # obs-text
        (b"GET http://a/ HTTP/1.1\r\n\r\n", False),  # absolute-form
        (b"OPTIONS * HTTP/1.1\r\n\r\n", False),  # asterisk-form
        (b"GET / HTTP/2.0\r\n\r\n", False),
        (b"GET / HTTP/1.1\nHost: a\n\n", False),  # bare LF
        (b"GET / HTTP/1.1\r\nHost: a\r\n b\r\n\r\n", False),  # obs-fold
        (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n", False),  # whitespace before the colon
        (b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n", False),  # NUL
        (b"GET / HTTP/1.1\r\nX: a\rb\r\n\r\n", False),  # bare CR
        (b"GET  / HTTP/1.1\r\n\r\n", False),  # two spaces
        (b"GET /\x7f HTTP/1.1\r\n\r\n", False),  # DEL in the target
        (b"\r\nGET / HTTP/1.1\r\n\r\n", False),  # a leading empty line is aiohttp's
        (b"G\xc3T / HTTP/1.1\r\n\r\n", False),  # not a token
    ],
)
def test_request_head_pattern(head: bytes, ok: bool) -> None:
    assert (HEAD_RE.fullmatch(head) is not None) is ok


@pytest.mark.parametrize(
    ("head", "ok"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", True),
        (b"HTTP/1.0 204 \r\n\r\n", True),  # an empty reason
        (b"HTTP/1.1 200 OK\r\n\r\n", True),
        (b"HTTP/1.1 099 Low\r\n\r\n", False),
        (b"HTTP/1.1 20 OK\r\n\r\n", False),
        (b"HTTP/1.1 200 O\x01K\r\n\r\n", False),  # a control byte in the reason
        (b"HTTP/1.1 200 OK\nX: y\n\n", False),
        (b"HTTP/2 200\r\n\r\n", False),
    ],
)
def test_response_head_pattern(head: bytes, ok: bool) -> None:
    assert (RESPONSE_HEAD_RE.fullmatch(head) is not None) is ok


@pytest.mark.parametrize("value", ["a\x00", "\x1f", "\x7f", "a\nb", "a\rb"])
def test_bad_values_in_both_forms(value: str) -> None:
    assert BAD_VALUE.search(value) and BAD_VALUE_B.search(value.encode())


@pytest.mark.parametrize("value", ["", "a\tb", "café", "~!"])
def test_good_values_in_both_forms(value: str) -> None:
    assert not BAD_VALUE.search(value) and not BAD_VALUE_B.search(value.encode())


def test_long_lines_and_maybe_http() -> None:
    assert has_long_line(b"GET / HTTP/1.1\r\nX: " + b"a" * 20 + b"\r\n", 20)
    assert not has_long_line(b"GET / HTTP/1.1\r\nX: aaaa\r\n", 20)
    assert maybe_http(b"") and maybe_http(b"HT") and maybe_http(b"HTTP/1.1 101")
    assert not maybe_http(b"SSH-2.0") and not maybe_http(b"\x16\x03")
