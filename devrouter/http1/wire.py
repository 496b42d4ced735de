"""The first bytes of a request: what is refused before any HTTP/1.1 parser sees it.

Theory of operation. The router's port speaks HTTP/1.1 (and 1.0). Some clients open it
speaking something else, and an HTTP/1.1 parser's answer to those bytes is either a
400 that quotes them back (`400 Pause on PRI/Upgrade: b'\\x00\\x00\\x12...'`), an answer the
client cannot read, or silence until the keep-alive timeout. `early_refusal` looks at the
bytes where a request starts and names the cases, each with its answer and one log line:

- an HTTP/2 prior-knowledge preface, `PRI * HTTP/2.0\\r\\n\\r\\nSM\\r\\n\\r\\n` (RFC 9113 §3.4):
  `curl --http2-prior-knowledge`, gRPC clients;
- a TLS record (first byte 22, a handshake: RFC 8446 §5.1), an `https://` URL for this
  `http://` port. A plain-text answer is useless to a TLS client, so there is none: the
  connection is closed;
- bare CRs before the request line. RFC 9112 §2.2 lets a server ignore empty lines (CRLF)
  before the request line and nothing else; llhttp also skips bare CRs, and a request that
  one parser in a chain reads and another refuses is the start of a smuggling attack;
- an HTTP/0.9 request (RFC 9112 §2.3 has no version-less request line): `GET /\\r\\n`. A 505
  has a head that a 0.9 client does not expect, and answering in 0.9 style would make the
  router speak a protocol it has no other use for; 400 and close is what a conformance
  tool (HTTPWookiee) accepts, and it is what nginx does for a 0.9 request it will not take;
- any other first line that is not HTTP/1: a byte that cannot begin a method, or a whole
  line with no space (an SSH or SMTP greeting).

Every answer is a 400 with one line of text and `Connection: close`, or (TLS) no answer.
Everything else, including a request that is merely malformed, is left to the parsers,
whose own 4xx rules apply. Pure: bytes in, a decision out; the I/O is in
`devrouter.server.strictgate` (`Refusing`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .answers import error_response
from .grammar import TOKEN

#: The HTTP/2 connection preface (RFC 9113 §3.4).
HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
#: A log line quotes at most this many of the connection's first bytes, escaped.
PREVIEW_BYTES = 24
#: Past this many bytes with no whole first line, the answer is the parsers' (a request line
#: longer than their 8190-byte limit gets their 4xx).
MAX_PROBE_BYTES = 16 * 1024

_TLS_HANDSHAKE = 0x16  # the content type of a TLS handshake record (RFC 8446 §5.1)
_CR, _LF = 0x0D, 0x0A
# The bytes a method (a token, RFC 9110 §5.6.2) can start with.
_TOKEN_START = frozenset(
    b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
)
_TOKEN = re.compile(TOKEN)
_EMPTY_LINES = re.compile(rb"(?:\r\n)*")

_HTTP11 = "devrouter speaks HTTP/1.1 on this port"
_NOT_HTTP = f"this is not an HTTP/1.1 request; {_HTTP11}"


@dataclass(frozen=True, slots=True)
class Refusal:
    """What to do with a connection whose first bytes are not an HTTP/1 request."""

    case: str  # "http2-preface", "tls", "bare-cr", "http/0.9" or "not-http"
    status: int | None  # None: close without an answer
    reason: str  # the one line the client is told (and the log repeats)
    log: str  # the log line, after "refused a connection from PEER: "

    @property
    def body(self) -> bytes:
        if self.status is None:
            return b""
        return f"devrouter: {self.status} Bad request: {self.reason}\n".encode()

    @property
    def response(self) -> bytes:
        """The whole answer, head and body; empty when there is none."""
        if self.status is None:
            return b""
        fields = {"Cache-Control": "no-store", "X-Devrouter-Error": str(self.status)}
        return error_response(self.status, fields, "text/plain", self.body, close=True)


def preview(buf: bytes | bytearray) -> str:
    """The first bytes, escaped for a log line (never a dump)."""
    text = repr(bytes(buf[:PREVIEW_BYTES]))
    return text + "..." if len(buf) > PREVIEW_BYTES else text


def _refusal(
    case: str, what: str, reason: str, buf: bytes | bytearray, status: int | None = 400
) -> Refusal:
    outcome = f"answered {status}" if status is not None else "closed without an answer"
    return Refusal(case, status, reason, f"{what} {preview(buf)}: {outcome} ({reason})")


def _request_start(buf: bytes | bytearray) -> int:
    """Where the request line starts: after the empty lines RFC 9112 §2.2 lets us skip."""
    m = _EMPTY_LINES.match(buf)
    assert m is not None  # the pattern matches the empty string
    return m.end()


def early_refusal(buf: bytes | bytearray) -> Refusal | None:
    """The refusal for a request that starts with these bytes, or None: nothing to refuse
    (yet: `settled` says whether more bytes could change that)."""
    return _examine(buf)[0]


def settled(buf: bytes | bytearray) -> bool:
    """Whether `early_refusal` has its final answer for a request that starts with `buf`: the
    request line is whole, or its first byte decides, or the buffer is past the probe limit.
    Until then a caller that passes the bytes on keeps asking."""
    return _examine(buf)[1]


def _examine(buf: bytes | bytearray) -> tuple[Refusal | None, bool]:
    """(the refusal or None, whether more bytes could change it)."""
    start = _request_start(buf)
    if start >= len(buf):
        return None, len(buf) > MAX_PROBE_BYTES
    first = buf[start]
    if first == _TLS_HANDSHAKE:
        why = f"{_HTTP11} without TLS: use http://, not https://"
        return _refusal("tls", "a TLS handshake", why, buf, status=None), True
    if first == _CR:  # not the CRLF of an empty line
        if start + 1 == len(buf):
            return None, False
        why = "only empty lines (CRLF) may come before the request line (RFC 9112, section 2.2)"
        return _refusal("bare-cr", "bare CRs before the request line", why, buf), True
    if first == _LF:  # a bare-LF empty line: the parsers' to judge
        return None, True
    if first not in _TOKEN_START:
        return _refusal("not-http", "bytes that are not HTTP", _NOT_HTTP, buf), True
    if buf.startswith(HTTP2_PREFACE[:16], start):  # "PRI * HTTP/2.0\r\n"
        why = f"{_HTTP11}; HTTP/2 with prior knowledge is not supported (use http/1.1)"
        return _refusal("http2-preface", "an HTTP/2 prior-knowledge preface", why, buf), True
    end = buf.find(b"\n", start, start + MAX_PROBE_BYTES)
    if end < 0:
        return None, len(buf) > MAX_PROBE_BYTES
    parts = bytes(buf[start:end]).removesuffix(b"\r").split(b" ")
    if len(parts) == 2 and _TOKEN.fullmatch(parts[0]) and parts[1]:
        why = f"HTTP/0.9 is not supported (the request line has no version); {_HTTP11}"
        return _refusal("http/0.9", "an HTTP/0.9 request", why, buf), True
    if len(parts) == 1:
        return _refusal("not-http", "bytes that are not HTTP", _NOT_HTTP, buf), True
    return None, True
