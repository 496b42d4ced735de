"""The router's own answers on the fast path, as bytes: an error page's response (the page
itself is devrouter.web.pages'; here it is framed)."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping

from ..core.routes import HostError, parse_host

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


#: A request target the redirect copies: origin-form, visible ASCII only (RFC 9112, 3.2.1).
_ORIGIN_FORM = re.compile(rb"/[\x21-\x7e]*")


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def https_redirect(head: bytes) -> bytes:
    """The answer to a plain-HTTP request when the config says `https: redirect`: a 308 to
    the same URL over https on the same port (the port answers both), or a 400 when the head
    has no usable request line, bare CRs or LFs, or a Host that is not the router's
    (localhost, a .localhost name, a loopback address). 308 keeps the method and body
    (RFC 9110, 15.4.9). The connection closes after it: the client comes back over TLS."""
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    host = b""
    for field in rest.split(b"\r\n"):
        if field[:5].lower() == b"host:":
            host = field[5:].strip(b" \t")
    try:
        name = parse_host(host.decode("ascii"))
        # only the names the router answers: a redirect elsewhere would be an open one
        valid_host = name == "localhost" or name.endswith(".localhost") or _loopback(name)
    except (HostError, UnicodeDecodeError):
        valid_host = False
    crlf = head.count(b"\r\n")
    bare = head.count(b"\r") != crlf or head.count(b"\n") != crlf  # the engines' 400
    if len(parts) != 3 or not _ORIGIN_FORM.fullmatch(parts[1]) or not valid_host or bare:
        body = (
            b"devrouter: 400 this port sends http:// to https://, and this request has no "
            b"usable request line or Host\n"
        )
        return error_response(400, {}, "text/plain", body, close=True)
    location = b"https://" + host + parts[1]
    body = b"devrouter: this router answers over https: " + location + b"\n"
    return (
        b"HTTP/1.1 308 Permanent Redirect\r\nLocation: %b\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n"
        b"Cache-Control: no-store\r\nConnection: close\r\n\r\n%b" % (location, len(body), body)
    )
