"""A request head -> what the fast path does with it: a `RequestPlan`, or `HandOff` to the
aiohttp engine, which decides every hard case with the full rules.

The fast path takes a request only when its handling is unambiguous: the whole head
matches the strict grammar (devrouter.http1.grammar), its method is a common one, its body
is absent or framed by one valid Content-Length, it names a route by a well-formed Host,
its hop count is below the loop limit, any access secret is presented correctly, and any
Upgrade is a well-formed WebSocket handshake. Everything else is handed off: odd syntax,
obs-fold, control bytes, oversize heads, absolute-form targets, HTTP/0.9 or 2.0, chunked or
ambiguous bodies, Expect, other Upgrades, HEAD, unknown names and the router's own pages,
loops, and denials (the aiohttp engine answers them with its pages).

The head is checked by one pattern; the fields the router acts on are then found in one
scan of its lowercased field block, each by its own rule in `_RULES`; every other field is
forwarded as the block it came in, minus the lines the rules cut. What a head decided is
kept as the plan, so a connection that sends the same field block again skips the checks
(`replan`).
"""

from __future__ import annotations

import re
from collections.abc import Callable

from ..core.access import Verdict, verdict
from ..core.model import Route
from ..core.state import Snapshot
from .fields import (
    connection_options,
    forwarding_fields,
    keeps_alive,
    line_span,
    named_spans,
    without_spans,
)
from .grammar import HEAD_RE, REQUEST_LINE_RE, field_scanner, has_long_line
from .policy import (
    FAST_METHODS,
    HANDOFF_FIELDS,
    HOPS_NAME_B,
    MAX_HOPS,
    REQUEST_DROP_B,
    TOKEN_NAME_B,
)

#: Longest head, in bytes, whose plan a connection keeps for the next one: browsers' heads
#: are 0.5-2 KiB, and 4096 connections then hold at most 32 MiB of plans, where 16 KiB
#: heads would hold 128 MiB.
MAX_PLAN_HEAD_BYTES = 4096
#: What the router adds for a WebSocket handshake it relays (it cut the client's own).
WS_UPGRADE = b"Connection: Upgrade\r\nUpgrade: websocket\r\n"


class HandOff(Exception):
    """This request is for the aiohttp engine; the message says why (for tests and logs)."""


class RequestPlan:
    """What one request head decided, and what a connection keeps for the next head."""

    __slots__ = (
        "host",
        "keep_alive",
        "length",
        "method",
        "minor",
        "rest",
        "route",
        "snapshot",
        "tail",
        "ws_key",
    )

    def __init__(
        self,
        snapshot: Snapshot,  # the config it was decided under
        rest: bytes,  # the head from the CRLF that ends the request line: the plan's key
        method: bytes,
        minor: bytes,  # the HTTP/1.x minor version, b"0" or b"1"
        route: Route,
        host: bytes,
        tail: bytes,  # the head as forwarded, after the request line
        keep_alive: bool,
        length: int,  # Content-Length, 0 when absent
        ws_key: bytes | None,  # a WebSocket handshake's Sec-WebSocket-Key
    ) -> None:
        self.snapshot = snapshot
        self.rest = rest
        self.method = method
        self.minor = minor
        self.route = route
        self.host = host
        self.tail = tail
        self.keep_alive = keep_alive
        self.length = length
        self.ws_key = ws_key


class Forwarder:
    """The forwarding fields for one client connection (devrouter.http1.fields), with the
    block for its last Host kept: nearly every request comes with no X-Forwarded-For and no
    hop count, and one Host per connection, so the block is built once (a 16-piece join
    saved per head)."""

    __slots__ = ("_host", "_kept", "local_port", "peer", "proto")

    def __init__(self, peer: bytes, local_port: bytes, proto: bytes = b"http") -> None:
        self.peer = peer
        self.local_port = local_port
        self.proto = proto  # b"https" on a TLS connection
        self._host: bytes | None = None
        self._kept = b""

    def fields(self, host: bytes, xff: list[bytes], hops: int) -> bytes:
        """`hops`: the count the request came with, -1 for none."""
        if xff or hops > 0:
            return forwarding_fields(
                self.peer, host, self.local_port, xff, max(hops, 0), self.proto
            )
        if host != self._host:
            self._host = host
            self._kept = forwarding_fields(self.peer, host, self.local_port, [], 0, self.proto)
        return self._kept


class _Scan:
    """What the scan of one head's acted-on fields found."""

    __slots__ = (
        "authorization",
        "close",
        "cut",
        "hops",
        "keep",
        "length",
        "named",
        "token",
        "upgrade",
        "ws_key",
        "xff",
    )

    def __init__(self) -> None:
        self.length = -1
        self.hops = -1  # none yet
        self.close = False  # Connection: close was among the options
        self.keep = False  # and keep-alive
        self.xff: list[bytes] = []
        self.authorization: tuple[int, int] | None = None  # the field's span in the block
        self.token: bytes | None = None
        self.named: list[bytes] = []  # fields the client's Connection header names
        self.cut: list[tuple[int, int]] = []  # lines not forwarded as they came
        self.upgrade: bytes | None = None
        self.ws_key: bytes | None = None


#: What the scan of a head with no field for a rule found (never written to): an API client's
#: or a load generator's head has none, and making a _Scan cost 185 ns of the 3.3 us a
#: first-seen head takes to plan (timeit, warm).
_NOTHING_FOUND = _Scan()

# One rule per acted-on field: (scan, the field block, the match in "\n" + the lowercased
# block, the HTTP minor version) -> None, or the reason for a hand-off. A match's value
# group spans [start(2) - 1, end(2) - 1) in the block itself.
_Rule = Callable[[_Scan, bytes, re.Match[bytes], bytes], str | None]


def _content_length(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    value = f.group(2).rstrip(b" \t")
    if s.length >= 0 or not value.isdigit() or len(value) > 18:
        return "a repeated or odd Content-Length"
    s.length = int(value)
    return None


def _connection(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    s.cut.append(f.span())
    close, keep = connection_options(f.group(2), s.named)
    s.close |= close
    s.keep |= keep
    return None


def _forwarded_for(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    s.cut.append(f.span())
    s.xff.append(lines[f.start(2) - 1 : f.end(2) - 1].rstrip(b" \t"))
    return None


def _hops(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    value = f.group(2).rstrip(b" \t")
    if s.hops >= 0:
        return "two hop counts"  # the aiohttp engine answers 400
    if not value.isdigit() or len(value) > 3 or int(value) >= MAX_HOPS:
        return "an odd hop count, or a loop"
    s.hops = int(value)
    s.cut.append(f.span())
    return None


def _authorization(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    if s.authorization is not None:
        return "two Authorization fields"
    s.authorization = (f.start(2) - 1, f.end(2) - 1)
    return None


def _token(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    if s.token is not None:
        return "two access tokens"
    s.token = lines[f.start(2) - 1 : f.end(2) - 1]
    s.cut.append(f.span())
    return None


def _upgrade(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    if s.upgrade is not None:
        return "two Upgrade fields"
    s.upgrade = f.group(2).strip()
    s.cut.append(f.span())
    return None


def _ws_key(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    if s.ws_key is not None:
        return "two Sec-WebSocket-Key fields"
    s.ws_key = lines[f.start(2) - 1 : f.end(2) - 1].strip()
    return None


def _hand_off(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    return f"a {f.group(1).decode()} field"


def _drop(s: _Scan, lines: bytes, f: re.Match[bytes], minor: bytes) -> str | None:
    s.cut.append(f.span())  # hop-by-hop and forwarding fields the router sets itself
    return None


_RULES: dict[bytes, _Rule] = {
    **dict.fromkeys(REQUEST_DROP_B, _drop),
    **dict.fromkeys(HANDOFF_FIELDS, _hand_off),
    b"content-length": _content_length,
    b"connection": _connection,
    b"x-forwarded-for": _forwarded_for,
    HOPS_NAME_B: _hops,
    b"authorization": _authorization,
    TOKEN_NAME_B: _token,  # in REQUEST_DROP too: never forwarded
    b"upgrade": _upgrade,  # a WebSocket is relayed; any other protocol goes to aiohttp
    b"sec-websocket-key": _ws_key,
}
# Host is in every head and is read inline in plan_request, not through a rule: a call per
# head cost 150 ns of the 3.3 us a first-seen head takes to plan (timeit, warm).
_FIELD_RE = field_scanner([b"host", *_RULES])


def plan_request(
    head: bytes,
    snapshot: Snapshot,
    lookup: Callable[[bytes], Route | None],  # a Host value -> its route, under `snapshot`
    forwarder: Forwarder,
    max_headers: int,  # the limits aiohttp applies: an oversize head is its to refuse
    max_line: int,
) -> tuple[RequestPlan, bytes]:
    """Check a whole request head (through its blank line) and decide what it asks for:
    the plan and the request target. Raises HandOff for anything the aiohttp engine must
    decide."""
    m = HEAD_RE.fullmatch(head)
    if m is None:
        raise HandOff("not the strict grammar")
    method, target, minor, lines = m.groups()
    if method not in FAST_METHODS:
        raise HandOff(f"the method {method.decode()}")
    if lines.count(b"\n") > max_headers or (len(head) > max_line and has_long_line(head, max_line)):
        raise HandOff("an oversize head")
    s = _NOTHING_FOUND  # a scan of its own once a rule applies
    low = b"\n" + lines.lower()  # offsets in `low` are one more than in `lines`
    host: bytes | None = None
    for f in _FIELD_RE.finditer(low):
        name = f.group(1)
        if name == b"host":
            if host is not None:
                raise HandOff("two Host fields")
            host = lines[f.start(2) - 1 : f.end(2) - 1].rstrip(b" \t")
            continue
        if s is _NOTHING_FOUND:
            s = _Scan()
        reason = _RULES[name](s, lines, f, minor)
        if reason is not None:
            raise HandOff(reason)
    if host is None:
        raise HandOff("no Host")
    upgrade = s.upgrade
    if upgrade is not None and (
        upgrade != b"websocket"
        or method != b"GET"
        or b"upgrade" not in s.named
        or s.ws_key is None
        or s.length > 0
    ):
        raise HandOff("an Upgrade that is not a WebSocket handshake")  # h2c, malformed
    route = lookup(host)
    if route is None:
        raise HandOff("not a route")  # 404, 421, the router's own pages
    cut = s.cut
    authorization = s.authorization
    authorization_cut = False
    if route.access is not None:  # a denial is aiohttp's to answer (401 and its page)
        admitted = verdict(
            route.access,
            lines[authorization[0] : authorization[1]].decode("latin-1")
            if authorization is not None
            else None,
            s.token.decode("latin-1") if s.token is not None else None,
        )
        if admitted is Verdict.DENIED:
            raise HandOff("no valid access secret")
        if admitted is Verdict.AUTHORIZATION:  # the router's credential, not the app's
            assert authorization is not None
            cut.append(line_span(lines, authorization[0]))
            authorization_cut = True
    if s.named:
        cut += named_spans(low, s.named)
    if s.named or authorization_cut:
        cut = sorted(set(cut))
    tail = b"".join(
        (
            without_spans(lines, cut) if cut else lines,
            WS_UPGRADE if upgrade is not None else b"",
            forwarder.fields(host, s.xff, s.hops),
            b"\r\n",
        )
    )
    plan = RequestPlan(
        snapshot,
        head[head.index(b"\r\n") :],
        method,
        minor,
        route,
        host,
        tail,
        keeps_alive(minor, s.close, s.keep),
        max(s.length, 0),
        s.ws_key if upgrade is not None else None,
    )
    return plan, target


def replan(plan: RequestPlan, head: bytes, snapshot: Snapshot, max_line: int) -> bytes | None:
    """The target of a head whose field block is byte for byte the one `plan` decided, under
    the same snapshot, with the same method and version: only its request line is checked.
    None: not so, check the whole head."""
    line_end = head.find(b"\r\n")
    if plan.snapshot is snapshot and head[line_end:] == plan.rest:
        m = REQUEST_LINE_RE.fullmatch(head, 0, line_end)
        if m is not None and line_end <= max_line:
            method, target, minor = m.groups()
            if method == plan.method and minor == plan.minor:
                return target
    return None
