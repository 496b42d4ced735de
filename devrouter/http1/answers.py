"""The router's own answers on the fast path, as bytes: an error page's response (the page
itself is devrouter.web.pages'; here it is framed)."""

from __future__ import annotations

from collections.abc import Mapping

REASONS = {
    400: b"Bad Request",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


def error_response(
    status: int, fields: Mapping[str, str], content_type: str, body: bytes, close: bool
) -> bytes:
    """A whole response: status line, `fields`, Content-Type (UTF-8), Content-Length, and
    Connection: close when the connection ends after it."""
    head = [b"HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, b"Error"))]
    for k, v in fields.items():
        head.append(f"{k}: {v}\r\n".encode())
    head.append(f"Content-Type: {content_type}; charset=utf-8\r\n".encode())
    head.append(b"Content-Length: %d\r\n" % len(body))
    if close:
        head.append(b"Connection: close\r\n")
    return b"".join(head) + b"\r\n" + body


def accept_of(head: bytes) -> bytes:
    """The value of a request head's Accept field (the last one), empty when absent: which
    form of an error page the client gets."""
    accept = b""
    for line in head.split(b"\r\n"):
        if line[:7].lower() == b"accept:":
            accept = line[7:]
    return accept
