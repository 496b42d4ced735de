"""The HTTP/1.1 grammar the fast path accepts, as named regular-expression fragments (after
h11's `_abnf.py`). Each pattern is stricter than RFC 9112 allows, never laxer: what it does
not match goes to llhttp or to the aiohttp engine, which judge it in full.

- a request line with an origin-form target (RFC 9112 §3.2.1) and HTTP/1.0 or 1.1;
- header lines of token ":" OWS value CRLF (§5), with no obs-fold, no bare LF and no control
  bytes but tab in a value;
- a status line with a three-digit code and a reason of visible bytes (§4).
"""

from __future__ import annotations

import re

#: tchar (RFC 9110 §5.6.2), one or more.
TOKEN = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
#: A field value with its OWS: space and tab are in the value's class, so one class
#: matches both (a split between them is a choice the engine would otherwise try).
_VALUE = rb"[\t\x20-\x7e\x80-\xff]*"
_FIELD_LINE = TOKEN + rb":" + _VALUE + rb"\r\n"
_REQUEST_LINE = rb"(" + TOKEN + rb") (/[!-~]*) HTTP/1\.([01])"

#: A whole request head: groups method, target, minor version, field block (CRLF-ended
#: lines, no blank line).
HEAD_RE = re.compile(_REQUEST_LINE + rb"\r\n((?:" + _FIELD_LINE + rb")*)\r\n")
#: The request line alone (a head whose field block repeats the last one checked).
REQUEST_LINE_RE = re.compile(_REQUEST_LINE)
#: A whole response head: groups minor version, status code, reason, field block.
RESPONSE_HEAD_RE = re.compile(
    rb"HTTP/1\.([01]) ([1-9][0-9][0-9]) (" + _VALUE + rb")\r\n((?:" + _FIELD_LINE + rb")*)\r\n"
)
#: One field of a head a whole-head pattern accepted. The value keeps trailing whitespace
#: (a lazy match to trim it cost more than the rest of the parse); every value the router
#: interprets is stripped where it is read, and forwarded values go out as they came.
HEADER_RE = re.compile(rb"(" + TOKEN + rb"):[ \t]*([^\r]*)\r\n")
#: Bytes no field value or reason phrase may hold (RFC 9110 §5.5): controls but tab.
_BAD = r"[\x00-\x08\x0a-\x1f\x7f]"
BAD_VALUE_B = re.compile(_BAD.encode())
BAD_VALUE = re.compile(_BAD)
#: Any field line of a lowercased block prefixed with "\n" (see fields.named_spans).
ANY_FIELD_RE = re.compile(rb"\n([^:\r\n]+):[^\r]*\r")


def alternation(names: list[bytes]) -> bytes:
    """A regex alternation matching exactly `names`, factored by common prefix: the regex
    engine tries the branches of an alternation one by one at every field, and a factored
    one fails after a byte or two (a fifth less time for a browser's head)."""
    branches: dict[bytes, list[bytes]] = {}
    for name in names:
        branches.setdefault(name[:1], []).append(name[1:])
    alts = []
    for first, rests in sorted(branches.items()):
        if first == b"":
            continue
        alts.append(re.escape(first) + alternation(rests))
    if not alts:
        return b""
    if b"" not in names:
        return alts[0] if len(alts) == 1 else b"(?:" + b"|".join(alts) + b")"
    return b"(?:" + b"|".join(alts) + b")?"  # a name that ends here, or goes on


def field_scanner(names: list[bytes]) -> re.Pattern[bytes]:
    """A pattern that finds the fields named `names` (lowercase) in "\\n" + a lowercased
    field block that a whole-head pattern accepted, so every "\\n" starts a field. A leading
    literal lets the engine skip from line to line (a multiline "^" is tried at every byte
    and costs twice as much). A match runs from the "\\n" before a field to its "\\r", and
    "\\n" + block is one byte longer than the block, so a match's span is its whole line's
    span in the block, CRLF included. Groups: the name, the value."""
    return re.compile(rb"\n(" + alternation(names) + rb"):[ \t]*([^\r]*)\r")


def has_long_line(head: bytes, limit: int) -> bool:
    """Whether any line of `head` is longer than `limit` bytes."""
    return any(len(line) > limit for line in head.split(b"\r\n"))


def maybe_http(data: bytes) -> bool:
    """Whether `data` starts a response head (or is too short to tell)."""
    return data[:5] == b"HTTP/"[: len(data)]
