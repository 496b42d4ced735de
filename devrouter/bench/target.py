"""Targets: where bench connects and what its request line and Host header say.

Only this machine is ever a target: loopback IP literals, `localhost` and `*.localhost`
names (RFC 6761 §6.3, connected at 127.0.0.1 with the name in the Host header). Anything
else is refused before a socket is opened or a name resolved. Pure: nothing here resolves
a name or opens a socket.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..core.errors import UsageError
from ..core.model import DEFAULT_PORT
from ..core.names import LABEL

_NAME_RE = re.compile(rf"^{LABEL}(?:\.{LABEL})*\.?\Z")  # a host name, a trailing dot allowed


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what the request line and Host header say."""

    connect_host: str  # always a loopback IP literal
    port: int
    host_header: str
    path: str  # origin form, with the query
    route: str | None = None  # the route name, for a `.localhost` target

    @property
    def url(self) -> str:
        return f"http://{self.host_header}{self.path}"

    @property
    def address(self) -> str:
        h = self.connect_host
        return f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}"


def is_route_name(target: str) -> bool:
    """Is TARGET a route NAME (`api`, `shop.api.localhost`) rather than a URL?"""
    text = target.strip()
    return "://" not in text and not any(c in text for c in ":/[") and _is_route_name(text)


def parse_target(
    target: str,
    path: str | None = None,
    router_port: int = DEFAULT_PORT,
    router_host: str = "127.0.0.1",
) -> Target:
    """A URL (`http://api.localhost:7355/items`, `http://127.0.0.1:4001/x`) or a route name
    and an optional path (`api`, `/items`), which goes through the router at `router_host`
    (a loopback address) and `router_port`.

    Raises UsageError for anything that is not on this machine, without resolving it.
    """
    text = target.strip()
    if is_route_name(text):
        if loopback_address(router_host) != router_host:
            raise UsageError(f"the router's address {router_host!r} is not a loopback address")
        name = text.lower().rstrip(".").removesuffix(".localhost")
        p = path or "/"
        if not p.startswith("/"):
            p = "/" + p
        _check_path(p)
        return Target(router_host, router_port, f"{name}.localhost:{router_port}", p, name)
    if path is not None:
        raise UsageError("give the path inside the URL, or a route name and a PATH, not both")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"cannot read the target {target!r}: {exc}") from None
    if parts.scheme.lower() != "http":
        raise UsageError(
            f"{target!r}: only http:// is supported (bench talks plain HTTP/1.1 to local services)"
        )
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{target!r}: credentials in the URL are not supported")
    host = (parts.hostname or "").rstrip(".")
    connect = loopback_address(host)
    if connect is None:
        raise UsageError(
            f"refusing to send load to {host or target!r}: devrouter bench only targets this "
            "machine (127.0.0.0/8, ::1, localhost and NAME.localhost)"
        )
    route = host.removesuffix(".localhost") if host.endswith(".localhost") else None
    p = parts.path or "/"
    if parts.query:
        p += "?" + parts.query
    _check_path(p)
    netloc = parts.netloc.rpartition("@")[2]
    return Target(connect, port or 80, netloc, p, route)


def _is_route_name(text: str) -> bool:
    name = text.lower().rstrip(".")
    if name == "localhost" or not _NAME_RE.match(name):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


def loopback_address(host: str) -> str | None:
    """The IP to connect to for a host, or None when it is not this machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def _check_path(path: str) -> None:
    if any(c in path for c in " \r\n\t") or not path.isascii():
        raise UsageError(f"the path {path!r} must be ASCII without spaces (percent-encode it)")
