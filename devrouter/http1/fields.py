"""Operations on a field block: reading Connection tokens, cutting whole lines, and the
forwarding fields the router adds. Offsets are those of a block that a whole-head pattern
(devrouter.http1.grammar) accepted, so every line ends in CRLF."""

from __future__ import annotations

from .grammar import ANY_FIELD_RE
from .policy import HOPS_HEADER, NEVER_NAMED_B

_HOPS_FIELD = HOPS_HEADER.encode() + b": "


def connection_options(value: bytes, named: list[bytes]) -> tuple[bool, bool]:
    """Read one lowercased Connection value: whether it holds `close`, and `keep-alive`;
    every other token is appended to `named`, the fields it removes (RFC 9110 §7.6.1)."""
    close = keep_alive = False
    for token in value.split(b","):
        token = token.strip()
        if token == b"close":
            close = True
        elif token == b"keep-alive":
            keep_alive = True
        elif token:
            named.append(token)
    return close, keep_alive


def keeps_alive(minor: bytes, close: bool, keep_alive: bool) -> bool:
    """Whether a connection stays open after a message in HTTP/1.`minor` whose Connection
    fields held `close` / `keep-alive` (RFC 9112 §9.3): close wins wherever it stood, in
    any field; HTTP/1.1 persists by default, HTTP/1.0 only with keep-alive. (llhttp lets a
    1.0 keep-alive beside close win; closing is what the RFC asks, and the safe choice.)"""
    return not close and (minor == b"1" or keep_alive)


def line_span(block: bytes, pos: int) -> tuple[int, int]:
    """The whole field line of `block` that holds offset `pos`."""
    return block.rfind(b"\n", 0, pos) + 1, block.index(b"\r\n", pos) + 2


def named_spans(low: bytes, named: list[bytes]) -> list[tuple[int, int]]:
    """The lines (spans in the field block) of the fields a Connection header names (RFC
    9110 §7.6.1), except those it may not remove; `low` is "\\n" + the lowercased block."""
    drop = set(named) - NEVER_NAMED_B
    return [f.span() for f in ANY_FIELD_RE.finditer(low) if f.group(1) in drop]


def without_spans(block: bytes, spans: list[tuple[int, int]]) -> bytes:
    """`block` with the given whole-line spans removed; they are in order and distinct (one
    scan's matches, or a mixed list sorted with `sorted(set(...))`)."""
    pieces = []
    pos = 0
    for start, end in spans:
        pieces.append(block[pos:start])
        pos = end
    pieces.append(block[pos:])
    return b"".join(pieces)


def without_named(out: list[bytes], named: list[bytes], start: int) -> list[bytes]:
    """Drop the fields a Connection header named (RFC 9110 §7.6.1); `out` holds `start`
    pieces of start line, then name, ": ", value, CRLF for each relayed field."""
    drop = set(named) - NEVER_NAMED_B
    kept = out[:start]
    for i in range(start, len(out), 4):
        if out[i].lower() not in drop:
            kept += out[i : i + 4]
    return kept


def peer_token(peer: bytes) -> bytes:
    """A client address as a Forwarded `for=` value: an IPv6 address is quoted and
    bracketed (RFC 7239 §6)."""
    return b'"[' + peer + b']"' if b":" in peer else peer


def forwarding_fields(
    peer: bytes, host: bytes, local_port: bytes, xff: list[bytes], hops: int, proto: bytes = b"http"
) -> bytes:
    """The fields the router adds to every request it forwards, CRLF-ended lines: the
    client's address appended to any X-Forwarded-For it sent, X-Forwarded-Proto, -Host and
    -Port, Forwarded (RFC 7239), and the hop counter one higher than it came. `proto` is the
    scheme the client used: b"https" on a TLS connection (HTTP/1.1 or HTTP/2)."""
    return b"".join(
        (
            b"X-Forwarded-For: ", b", ".join([*xff, peer]),
            b"\r\nX-Forwarded-Proto: ", proto, b"\r\nX-Forwarded-Host: ", host,
            b"\r\nX-Forwarded-Port: ", local_port,
            b"\r\nForwarded: for=", peer_token(peer), b';host="', host, b'";proto=', proto, b"\r\n",
            _HOPS_FIELD, b"%d\r\n" % (hops + 1),
        )
    )  # fmt: skip


def forwarding_pairs(
    peer: str, host: str, local_port: int, xff: list[str], hops: int, proto: str = "http"
) -> list[tuple[str, str]]:
    """`forwarding_fields` as (name, value) pairs, for an engine that sets fields one by
    one: the same bytes, so both engines forward exactly the same fields."""

    def raw(text: str) -> bytes:  # how aiohttp decoded it, undone
        return text.encode("utf-8", "surrogateescape")

    block = forwarding_fields(
        raw(peer), raw(host), str(local_port).encode(), [raw(v) for v in xff], hops, proto.encode()
    )
    pairs = []
    for line in block.split(b"\r\n")[:-1]:
        name, _, value = line.partition(b": ")
        pairs.append((name.decode(), value.decode("utf-8", "surrogateescape")))
    return pairs
