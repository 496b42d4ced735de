"""A response head -> what the fast path relays: a `ResponsePlan` (the pattern path), an
`Upgrade` (a backend's 101 to a WebSocket handshake), or None: llhttp frames it.

The pattern path takes a head that arrived whole, matches the strict grammar, and is framed
by one valid Content-Length (or is a 204/304). Anything else (chunked, close-delimited,
1xx, repeated or odd lengths, bare LF, not HTTP) is given to llhttp (httptools) on the same
bytes, so nothing here accepts what llhttp would refuse; `response_fields` then reads the
fields llhttp parsed.
"""

from __future__ import annotations

import base64
import hashlib
from typing import NamedTuple

from .fields import connection_options, keeps_alive, named_spans, without_named, without_spans
from .grammar import HEADER_RE, RESPONSE_HEAD_RE, field_scanner
from .policy import NEVER_NAMED_B, NO_BODY_STATUS, RESPONSE_DROP_B
from .request_head import WS_UPGRADE

_FIELD_RE = field_scanner(list(RESPONSE_DROP_B))
#: RFC 6455 §1.3: what a server appends to the client's key before hashing it.
_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class ResponsePlan(NamedTuple):
    """What the pattern path decided about a response head. An upstream connection keeps
    the last one: a backend that sends the same head again (the same resource within the
    second of its Date field) is relayed without checking it again."""

    head: bytes  # the head as received, blank line included
    status: int
    out: bytes  # the status line and the fields as relayed, without framing fields
    length: int  # Content-Length, -1 when absent (a 204 or 304)
    reusable: bool  # the backend keeps the connection open


class Upgrade(NamedTuple):
    """A 101 answer to a WebSocket handshake: the relay takes the connection from here."""

    reason: bytes
    lines: bytes  # the field block


def plan_response(data: bytes, end: int, ws_handshake: bool) -> ResponsePlan | Upgrade | None:
    """Decide about a whole response head, `data[:end + 4]`, for the pattern path; `data`
    may hold body bytes after it. None: llhttp's to parse, from the first byte."""
    m = RESPONSE_HEAD_RE.match(data, 0, end + 4)
    if m is None or m.end() != end + 4:
        return None
    minor, code, reason, lines = m.groups()
    status = int(code)
    if status == 101 and ws_handshake:
        return Upgrade(reason, lines)
    if status < 200:  # 1xx (and 101, an error here) are the parser's
        return None
    # The fields the router acts on, in one scan; all of them are cut (the router writes the
    # framing the client gets), every other field is relayed as it came.
    length = -1
    close = keep = False  # Connection options
    cut: list[tuple[int, int]] = []
    named: list[bytes] = []
    low = b"\n" + lines.lower()  # offsets in `low` are one more than in `lines`
    for f in _FIELD_RE.finditer(low):
        name = f.group(1)
        cut.append(f.span())
        if name == b"content-length":
            value = f.group(2).rstrip(b" \t")
            if length >= 0 or not value.isdigit() or len(value) > 18:
                return None  # repeated or odd: llhttp's to judge
            length = int(value)
        elif name == b"transfer-encoding":
            return None  # chunked (or worse): the parser frames it
        elif name == b"connection":
            c, k = connection_options(f.group(2), named)
            close |= c
            keep |= k
    if length < 0 and status not in NO_BODY_STATUS:
        return None  # close-delimited
    if named:
        cut = sorted(set(cut + named_spans(low, named)))
    out = b"".join((b"HTTP/1.1 ", code, b" ", reason, b"\r\n", without_spans(lines, cut)))
    return ResponsePlan(data[: end + 4], status, out, length, keeps_alive(minor, close, keep))


def response_fields(
    headers: list[tuple[bytes, bytes]], out: list[bytes]
) -> tuple[list[bytes], int, bool]:
    """The parser path's pass over a response's fields: append those the client gets to
    `out` (three pieces of status line already in it) and read the framing. Returns (out,
    Content-Length or -1 when absent or -2 when invalid or repeated, Transfer-Encoding
    present). llhttp has checked the framing and decides keep-alive itself."""
    length = -1
    chunked = False
    named: list[bytes] | None = None
    drop = RESPONSE_DROP_B
    for name, value in headers:
        lower = name.lower()
        if lower not in drop:
            out += (name, b": ", value, b"\r\n")
        elif lower == b"content-length":
            value = value.rstrip(b" \t")
            length = -2 if length != -1 or not value.isdigit() or len(value) > 18 else int(value)
        elif lower == b"transfer-encoding":
            chunked = True
        elif lower == b"connection":
            for token in value.lower().split(b","):
                token = token.strip()
                if token and token not in drop:
                    named = [token] if named is None else [*named, token]
    if named:
        out = without_named(out, named, 3)
    return out, length, chunked


def accept_for(key: bytes) -> bytes:
    """The Sec-WebSocket-Accept a server must answer `key` with (RFC 6455 §4.2.2)."""
    return base64.b64encode(hashlib.sha1(key.strip() + _WS_GUID).digest())


def relay_upgrade(upgrade: Upgrade, ws_key: bytes) -> bytes | str:
    """A backend's 101 to a WebSocket handshake: the head to relay to the client, or what is
    wrong with it (the client then gets a 502)."""
    fields = HEADER_RE.findall(upgrade.lines)
    protocol = accept = b""
    tokens: set[bytes] = set()
    for name, value in fields:
        lower = name.lower()
        if lower == b"upgrade":
            protocol = value.strip().lower()
        elif lower == b"connection":
            tokens.update(t.strip() for t in value.lower().split(b","))
        elif lower == b"sec-websocket-accept":
            accept = value.strip()
    if protocol != b"websocket":
        return "no Upgrade: websocket"
    if b"upgrade" not in tokens:
        return "no Connection: upgrade"
    if accept != accept_for(ws_key):
        return "a wrong Sec-WebSocket-Accept"
    drop = RESPONSE_DROP_B | (tokens - NEVER_NAMED_B)  # and what Connection names
    out = [b"HTTP/1.1 101 ", upgrade.reason, b"\r\n"]
    for name, value in fields:
        if name.lower() not in drop:
            out += (name, b": ", value, b"\r\n")
    out.append(WS_UPGRADE + b"\r\n")
    return b"".join(out)
