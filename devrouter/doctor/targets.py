"""What to check: each route (and each of its path routes) as a `RouteTarget`, read from
the running router's live table, its /api/status or the config file. Pure; only loopback
addresses are kept, since doctor never connects to anything else.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..core.addresses import parse_target
from ..core.model import DEFAULT_LOOPBACKS, Config, Upstream, is_loopback_host
from ..services.locate import LiveRoute


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Something to check: a route (or one of its path routes) and where it forwards."""

    label: str  # "api.localhost", "web.localhost/api"
    name: str
    port: int
    hosts: tuple[str, ...] = DEFAULT_LOOPBACKS
    source: str | None = None  # "config", "run", "stack", "alias" when known
    listens_on: tuple[int, ...] = ()  # a run/stack service's other listening ports


def targets_from_config(config: Config) -> list[RouteTarget]:
    out: list[RouteTarget] = []
    for r in config.routes:
        out.append(_target(r.host, r.name, r.upstream))
        for p in sorted(r.paths, key=lambda p: p.prefix):
            out.append(_target(f"{r.host}{p.prefix}", r.name, p.upstream))
    return out


def _target(label: str, name: str, upstream: Upstream) -> RouteTarget:
    return RouteTarget(label, name, upstream.port, upstream.hosts)


def targets_from_live(routes: Sequence[LiveRoute]) -> list[RouteTarget]:
    """The running router's live table (devrouter.services.locate): config, run, alias,
    stacks."""
    out: list[RouteTarget] = []
    for r in routes:
        host = f"{r.name}.localhost"
        up = r.upstream
        out.append(RouteTarget(host, r.name, up.port, up.hosts, r.source, r.listens_on))
        for p in sorted(r.paths, key=lambda p: p.prefix):
            out.append(RouteTarget(f"{host}{p.prefix}", r.name, p.upstream.port, p.upstream.hosts))
    return out


def targets_from_status(status: Mapping[str, Any]) -> list[RouteTarget] | None:
    """Routes from /api/status (`routes[]` with `name`, `port` and `target`, and when
    present `host`, `hosts` and `paths[]`); None when the document has no route list."""
    routes = status.get("routes")
    if not isinstance(routes, list):
        return None
    out: list[RouteTarget] = []
    for r in routes:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            continue
        name: str = r["name"]
        host = r.get("host")
        if not isinstance(host, str):
            host = f"{name}.localhost"
        entries: list[tuple[str, dict[str, Any]]] = [(host, r)]
        paths = r.get("paths")
        for p in paths if isinstance(paths, list) else ():
            if isinstance(p, dict) and isinstance(p.get("prefix"), str):
                entries.append((f"{host}{p['prefix']}", p))
        for label, entry in entries:
            port = entry.get("port")
            if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
                source = r.get("source") if entry is r else None
                others = _listens_on(r) if entry is r else ()
                out.append(
                    RouteTarget(
                        label,
                        name,
                        port,
                        _hosts_of(entry),
                        source if isinstance(source, str) else None,
                        others,
                    )
                )
    return out


def _listens_on(entry: Mapping[str, Any]) -> tuple[int, ...]:
    raw = entry.get("listens_on")
    return tuple(
        p
        for p in (raw if isinstance(raw, list) else ())
        if isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
    )


def _hosts_of(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The loopback addresses a status entry forwards to: its `hosts`, else those in its
    `target` ("127.0.0.1:4001 or [::1]:4001", a URL); both loopbacks when unreadable.
    Anything that is not a loopback address is dropped: doctor never connects to it."""
    listed = entry.get("hosts")
    if isinstance(listed, list) and listed and all(isinstance(h, str) for h in listed):
        hosts = [h for h in listed if is_loopback_host(h) and h != "localhost"]
        return tuple(dict.fromkeys(hosts)) or DEFAULT_LOOPBACKS
    target = entry.get("target")
    if not isinstance(target, str):
        return DEFAULT_LOOPBACKS
    found: list[str] = []
    for part in target.split(" or "):
        try:
            upstream = parse_target(part.strip())
        except ValueError:
            return DEFAULT_LOOPBACKS
        found.extend(h for h in upstream.hosts if h not in found)
    return tuple(found) or DEFAULT_LOOPBACKS


def probe_hosts(t: RouteTarget) -> list[str]:
    hosts = [h for h in t.hosts if is_loopback_host(h) and h != "localhost"]
    return hosts + [h for h in DEFAULT_LOOPBACKS if h not in hosts]
