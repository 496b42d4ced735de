"""The grammar of bench's option values (durations, rates, headers, bodies): pure functions
that raise ValueError with a one-line message; the command turns that into a usage error."""

from __future__ import annotations

import math
import re
from pathlib import Path

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
#: An HTTP token (RFC 9110 §5.6.2): a header name or a method.
TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+\Z")


def parse_duration(text: str) -> float:
    """`10s`, `1m`, `500ms`, `1m30s`, `1.5h` or plain seconds (`2.5`), in seconds."""
    t = text.strip().lower()
    try:
        value = float(t)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION_RE.finditer(t):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise ValueError(f"cannot read duration {text!r}: use e.g. 10s, 1m, 500ms") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"duration {text!r} must be a non-negative number of seconds")
    return value


def parse_rate(text: str) -> float:
    """`1000` or `1000/s` requests per second; `60/m` also works."""
    t = text.strip().lower()
    number, _, unit = t.partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit)
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if per is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"cannot read rate {text!r}: use requests per second, e.g. 1000/s")
    return value / per


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value`. Refuses names that are not HTTP tokens and values with line breaks."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not TOKEN_RE.match(name):
        raise ValueError(f"cannot read header {text!r}: use 'Name: value'")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} contains a line break")
    return name, value


def parse_body(text: str, cwd: Path | None = None) -> bytes:
    """A literal string (UTF-8), or `@file` for the file's bytes (`@@x` is the literal `@x`)."""
    if text.startswith("@@"):
        return text[1:].encode()
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if cwd is not None and not path.is_absolute():
            path = cwd / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read body file {str(path)!r}: {exc.strerror}") from None
    return text.encode()
