"""An HTTP/2 request as the HTTP/1.1 request the router's HTTP/1 engines take, without I/O.

The HTTP/2 engine forwards each stream through the HTTP/1 engines (devrouter.http2.bridge),
so every rule of theirs (routes, the header policy, forwarding fields, loop detection,
access secrets, limits, error pages, metrics) applies to HTTP/2 by construction. This
module writes the request head they read:

- the pseudo-fields become the request line and Host (RFC 9113, 8.3.1; `:authority` is the
  Host, RFC 9113, 8.3.1 and RFC 9110, 7.2);
- `cookie` crumbs are joined with "; " (RFC 9113, 8.2.3);
- a body whose length is not known up front is sent chunked (RFC 9112, 7.1);
- an extended CONNECT for WebSockets (RFC 8441, section 4) becomes the HTTP/1.1 Upgrade
  GET of RFC 6455, with a key of our own (the client's HTTP/2 request has none).

Anything that HTTP/1.1 could not carry, or that RFC 9113 calls malformed (8.2.1, 8.3), is
refused here with `Malformed`, before a byte is written: a field name or value with CR, LF
or NUL would split the HTTP/1 head (request smuggling), so the check is exact, not lenient.
"""

from __future__ import annotations

import base64
import os
import re
from dataclasses import dataclass

#: A field name: a token, lowercase (RFC 9113, 8.2.1: uppercase is malformed).
_NAME_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9a-z]+")
#: A field value: visible ASCII, obs-text, spaces and tabs inside, none at the ends
#: (RFC 9113, 8.2.1; RFC 9110, 5.5).
_VALUE_RE = re.compile(
    rb"(?:[\x21-\x7e\x80-\xff](?:[\x20\x09\x21-\x7e\x80-\xff]*[\x21-\x7e\x80-\xff])?)?"
)
#: A method: a token (RFC 9110, 9.1).
_METHOD_RE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
#: A request target in origin form, or `*` for OPTIONS (visible ASCII, RFC 9112, 3.2).
_PATH_RE = re.compile(rb"/[\x21-\x7e]*|\*")
#: An authority: host[:port], an IP literal in brackets included (RFC 3986, 3.2).
_AUTHORITY_RE = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,;=:\[\]%]+")

#: Fields that are connection-specific in HTTP/1.1 and malformed in HTTP/2 (RFC 9113,
#: 8.2.2); `te` is allowed with the value "trailers" only.
CONNECTION_FIELDS = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade"}
)
_PSEUDO = frozenset({b":method", b":scheme", b":authority", b":path", b":protocol"})
#: Methods whose request means something with content: an empty one says Content-Length: 0
#: (RFC 9110, 8.6), which some servers require before they read a body.
_CONTENT_METHODS = frozenset({b"POST", b"PUT", b"PATCH"})


class Malformed(ValueError):
    """A request RFC 9113 calls malformed, answered with a stream error (PROTOCOL_ERROR);
    `str()` says why, for the log."""


@dataclass(frozen=True, slots=True)
class Http1Request:
    head: bytes  # the request line and fields, ending with the empty line
    chunked: bool  # the body is sent chunked: its length was not given
    websocket: bool  # an extended CONNECT for a WebSocket: expect a 101
    ws_key: bytes  # the Sec-WebSocket-Key sent, when `websocket`
    method: bytes
    has_body: bool  # the client may send DATA (its HEADERS did not end the stream)


def websocket_key() -> bytes:
    """A fresh Sec-WebSocket-Key (RFC 6455, 4.1: 16 random bytes, base64)."""
    return base64.b64encode(os.urandom(16))


def to_http1(
    headers: list[tuple[bytes, bytes]], end_stream: bool, ws_key: bytes | None = None
) -> Http1Request:
    """The HTTP/1.1 request for an HTTP/2 request's field list (pseudo-fields first, as
    h2 hands them over). `end_stream`: the HEADERS frame ended the stream (no body)."""
    pseudo: dict[bytes, bytes] = {}
    fields: list[bytes] = []
    cookies: list[bytes] = []
    length: bytes | None = None
    host_field: bytes | None = None
    regular = False
    for name, value in headers:
        if name[:1] == b":":
            if regular:
                raise Malformed(f"pseudo-field {name!r} after a regular field")
            if name not in _PSEUDO or name in pseudo:
                raise Malformed(f"unknown or repeated pseudo-field {name!r}")
            pseudo[name] = value
            continue
        regular = True
        if not _NAME_RE.fullmatch(name):
            raise Malformed(f"field name {name!r} is not a lowercase token")
        if not _VALUE_RE.fullmatch(value):
            raise Malformed(f"field {name.decode()!r} has a value HTTP/1.1 cannot carry")
        if name in CONNECTION_FIELDS:
            raise Malformed(f"connection-specific field {name.decode()!r}")
        if name == b"te":
            if value.lower() != b"trailers":
                raise Malformed("te other than 'trailers'")
            continue  # a hop-by-hop field: the HTTP/1 engines would drop it anyway
        if name == b"cookie":
            cookies.append(value)
            continue
        if name == b"content-length":
            if length is not None and length != value:
                raise Malformed("conflicting content-length fields")
            if not value.isdigit():
                raise Malformed(f"content-length {value!r} is not a number")
            length = value
            continue
        if name == b"host":
            if host_field is not None:
                raise Malformed("repeated host field")
            host_field = value
            continue
        if name == b"sec-websocket-key" and b":protocol" in pseudo:
            continue  # the handshake below is the router's, with its own key
        fields.append(b"%b: %b\r\n" % (name, value))
    method = pseudo.get(b":method", b"")
    if not _METHOD_RE.fullmatch(method):
        raise Malformed(f"method {method!r} is not a token")
    authority = pseudo.get(b":authority", host_field)
    if authority is None or not _AUTHORITY_RE.fullmatch(authority):
        raise Malformed("no usable :authority or host")
    if host_field is not None and host_field.lower() != authority.lower():
        raise Malformed(":authority and host differ")  # RFC 9113, 8.3.1
    protocol = pseudo.get(b":protocol")
    websocket = False
    if method == b"CONNECT" and protocol is None:
        if b":path" in pseudo or b":scheme" in pseudo:
            raise Malformed("CONNECT with :path or :scheme")
        target = authority  # authority-form: the HTTP/1 engines refuse it with their 405
    else:
        target = pseudo.get(b":path", b"")
        if b":scheme" not in pseudo or not _PATH_RE.fullmatch(target):
            raise Malformed("missing :scheme or a :path that is not origin-form")
        if target == b"*" and method != b"OPTIONS":
            raise Malformed(":path '*' is for OPTIONS only")
        if protocol is not None:
            if method != b"CONNECT":
                raise Malformed(":protocol on a method other than CONNECT")
            if protocol.lower() != b"websocket":
                raise Malformed(f":protocol {protocol!r} is not one this router speaks")
            websocket = True
    out = [b"%b %b HTTP/1.1\r\nHost: %b\r\n" % (b"GET" if websocket else method, target, authority)]
    if cookies:
        out.append(b"Cookie: %b\r\n" % b"; ".join(cookies))
    out.extend(fields)
    key = b""
    if websocket:
        # the key is the router's, since it checks the backend's accept against it
        key = ws_key or websocket_key()
        out.append(b"Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: %b\r\n" % key)
        end_stream = True  # the HTTP/1 request has no body; the stream's DATA is the tunnel
        length = None
    else:
        if end_stream and length is not None and int(length) != 0:
            # no DATA can follow to make the length up (RFC 9113, 8.1.1); the HTTP/1
            # engine would wait for it
            raise Malformed("content-length on a request without content")
        if end_stream and length is None and method in _CONTENT_METHODS:
            length = b"0"
    chunked = False
    if length is not None:
        out.append(b"Content-Length: %b\r\n" % length)
    elif not end_stream:
        out.append(b"Transfer-Encoding: chunked\r\n")
        chunked = True
    out.append(b"\r\n")
    return Http1Request(
        b"".join(out), chunked, websocket, key, method, has_body=not end_stream or websocket
    )


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked body (RFC 9112, 7.1); nothing for no bytes, since an empty
    chunk would be the last one."""
    if not data:
        return b""
    return b"%x\r\n%b\r\n" % (len(data), data)


def last_chunk(trailers: list[tuple[bytes, bytes]]) -> bytes:
    """The end of a chunked body, with the request's trailer fields (RFC 9112, 7.1.2);
    trailers HTTP/1.1 could not carry are refused like header fields."""
    out = [b"0\r\n"]
    for name, value in trailers:
        if name[:1] == b":" or not _NAME_RE.fullmatch(name) or not _VALUE_RE.fullmatch(value):
            raise Malformed(f"trailer field {name!r} HTTP/1.1 cannot carry")
        if name in CONNECTION_FIELDS or name in (b"content-length", b"host", b"te"):
            continue
        out.append(b"%b: %b\r\n" % (name, value))
    out.append(b"\r\n")
    return b"".join(out)


def authority_of(headers: list[tuple[bytes, bytes]]) -> bytes:
    """A request's :authority (or host), lowercased: the per-name gate's key."""
    for name, value in headers:
        if name == b":authority" or name == b"host":
            return value.lower()
    return b""


def with_body(request: Http1Request, data: bytes) -> Http1Request:
    """A queued stream's request with DATA that came before it had a lane."""
    body = chunk(data) if request.chunked and data else data
    return Http1Request(
        request.head + body,
        request.chunked,
        request.websocket,
        request.ws_key,
        request.method,
        request.has_body,
    )
