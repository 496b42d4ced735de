"""The route table: Host header and path in, an `Upstream` (or a reason to refuse) out.

Pure and immutable. A table is built once per config load and then only read, so a reload
swaps one object and a request keeps the table it started with.

Host rules (RFC 9110 §7.2, RFC 6761 §6.3): a Host is an ASCII name or an IP literal with an
optional port. The port never chooses anything (the listen socket already did), case and one
trailing dot are ignored. Anything else, including values aiohttp lets through (commas,
spaces, userinfo, `a.localhost:1:2`, look-alike Unicode), is a 400 here, before any URL object
is built from it.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from urllib.parse import unquote

from .model import Route, Upstream
from .numbers import digits

OWN_HOSTS = frozenset({"localhost", "devrouter.localhost", "127.0.0.1", "::1"})
_HOST_RE = re.compile(r"^[a-z0-9_-]+(?:\.[a-z0-9_-]+)*\Z")


class HostError(ValueError):
    """A Host value that is not well formed; answered with 400."""

    status = 400


class AmbiguousPath(ValueError):
    """A path whose decoded form would be routed elsewhere than its raw bytes; 400.

    A path-prefix route routes on the raw bytes it forwards. If `/%61pi` (or `/x/../api`) would
    reach a different backend once decoded, the backend could act on a path the router did
    not route, so it is refused.
    """

    status = 400


def parse_host(value: str) -> str:
    """Normalise a Host header value to a bare lowercase host (no port, no trailing dot)."""
    if not value or not value.isascii():
        raise HostError("the Host header is empty or not ASCII")
    if value.startswith("["):
        inner, sep, rest = value[1:].partition("]")
        if not sep or (rest and not _valid_port_suffix(rest)):
            raise HostError(f"malformed Host {value!r}")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise HostError(f"malformed Host {value!r}") from None
    host, sep, port = value.partition(":")
    if sep and not _valid_port_suffix(sep + port):
        raise HostError(f"malformed Host {value!r}")
    host = host.lower()
    if host.endswith("."):
        host = host[:-1]
    if not _HOST_RE.match(host):
        raise HostError(f"malformed Host {value!r}")
    return host


def _valid_port_suffix(text: str) -> bool:
    return (
        text.startswith(":")
        and 1 < len(text) <= 6
        and digits(text[1:])
        and (int(text[1:]) <= 65535)
    )


@dataclass(frozen=True, slots=True)
class RouteTable:
    routes: tuple[Route, ...]
    exact: Mapping[str, Route]
    wildcards: tuple[tuple[str, Route], ...]  # (".shop", route), most labels first

    @classmethod
    def build(cls, routes: Iterable[Route]) -> RouteTable:
        ordered = tuple(sorted(routes, key=lambda r: r.name))
        exact = {r.name: r for r in ordered if not r.name.startswith("*.")}
        wild = sorted(
            ((r.name[1:], r) for r in ordered if r.name.startswith("*.")),
            key=lambda item: item[0].count("."),
            reverse=True,
        )
        return cls(ordered, MappingProxyType(exact), tuple(wild))

    def lookup(self, name: str) -> Route | None:
        """`name` is the host without `.localhost`. Exact names beat wildcards, and a longer
        wildcard beats a shorter one (`*.a.shop` before `*.shop`)."""
        route = self.exact.get(name)
        if route is not None:
            return route
        for suffix, r in self.wildcards:
            if name.endswith(suffix):
                return r
        return None


def route_name(host: str) -> str | None:
    """The route name for a parsed host, or None when the host is not a `.localhost` name."""
    if host.endswith(".localhost"):
        return host[: -len(".localhost")]
    return None


def select_upstream(route: Route, raw_path: str) -> Upstream:
    """The upstream for a request target in origin form (`/a/b?q`), longest prefix first."""
    if not route.paths:
        return route.upstream
    path = raw_path.split("?", 1)[0]
    chosen = _match_prefix(route, path)
    if "%" in path or "/." in path or "//" in path:
        decoded = _remove_dot_segments(unquote(path, errors="replace"))
        if _match_prefix(route, decoded) != chosen:
            raise AmbiguousPath(
                f"the path {path!r} means something else once decoded; "
                "send it without percent-encoding or dot segments"
            )
    return chosen


def _match_prefix(route: Route, path: str) -> Upstream:
    for p in route.paths:
        if p.matches(path):
            return p.upstream
    return route.upstream


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4, plus folding empty segments as most backends do."""
    out: list[str] = []
    for seg in path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg not in (".", ""):
            out.append(seg)
    tail = "/" if path.endswith(("/", "/.", "/..")) and out else ""
    return "/" + "/".join(out) + tail
