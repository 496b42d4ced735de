"""The export plan: a Config, and the options of `devrouter export`, as the plain facts every
output format writes. Pure; no format's syntax here.

What the plan decides once, for all formats:
- The order of names: exact names (alphabetical), then wildcards with the most labels first,
  the precedence devrouter itself applies (docs/configuration.md#wildcards-and-precedence).
- Path routes, longest prefix first (the longest match wins in devrouter and in every target).
- Backends: `--upstream-host` replaces the loopback host(s) of every backend (devrouter only
  forwards to loopback, so that is all of them). A bare port keeps its two tries, 127.0.0.1
  then ::1, for the formats that can express a fallback.
- Every value that reaches generated text is checked here: names are DNS labels already
  (devrouter.core.names), the domain and upstream host are checked to be the same, and a
  path prefix with a character a URL path cannot carry unencoded (quotes, braces, backslash,
  backtick ...) is left out and listed as a gap, so no value can break out of the syntax of
  a Caddyfile, an nginx file or a YAML rule.
- The gaps every format shares (HTTPS with the local CA, a prefix that cannot be written).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from ..core.model import (
    DEFAULT_LOOPBACKS,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ROUTE,
    DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB,
    AccessRule,
    Config,
    Route,
    Upstream,
)
from ..core.names import LABEL

#: A path prefix is exported only when it is made of RFC 3986 `pchar`s and slashes: such a
#: prefix is what a client sends unencoded, and it needs no escaping in any target's syntax.
SAFE_PREFIX_RE = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*\Z")
#: A domain or upstream host name: DNS labels (checked lowercased).
HOSTNAME_RE = re.compile(rf"^{LABEL}(?:\.{LABEL})*\Z")
DEFAULT_DOMAIN = "localhost"
DEFAULT_HTTP_PORT = 80


@dataclass(frozen=True, slots=True)
class ExportOptions:
    domain: str = DEFAULT_DOMAIN  # replaces "localhost": api -> api.DOMAIN
    upstream_host: str | None = None  # replaces 127.0.0.1 / ::1 in every backend
    port: int = DEFAULT_HTTP_PORT  # the engine's plain-HTTP port
    bind: str | None = None  # the address the engine listens on (nginx, Caddy); None: all


@dataclass(frozen=True, slots=True)
class Backend:
    """Where requests go: `hosts` in order of preference (the first that accepts wins), one
    port. `slug` names it in generated text (an nginx upstream, a Service): unique, made of
    [a-z0-9-]."""

    hosts: tuple[str, ...]
    port: int
    slug: str

    @property
    def addresses(self) -> tuple[str, ...]:
        return tuple(hostport(h, self.port) for h in self.hosts)

    @property
    def primary(self) -> str:
        return hostport(self.hosts[0], self.port)


@dataclass(frozen=True, slots=True)
class PathPlan:
    prefix: str
    backend: Backend

    @property
    def segment(self) -> bool:
        """True when the prefix matches itself and the paths below it (`/api`: /api and
        /api/x); a prefix ending in / matches only the paths below it."""
        return not self.prefix.endswith("/")


@dataclass(frozen=True, slots=True)
class AccessPlan:
    """A route requires a secret. The secret itself is never in the plan: `where` says
    where devrouter reads it ($VAR or a file), for a comment."""

    where: str


@dataclass(frozen=True, slots=True)
class SitePlan:
    name: str  # the route name: "api", "admin.shop", "*.shop"
    host: str  # the name under the export's domain: "api.localhost", "*.shop.dev.example.com"
    slug: str  # unique, [a-z0-9-]: "api", "admin-shop", "wildcard-shop"
    backend: Backend
    paths: tuple[PathPlan, ...]  # longest prefix first
    timeout_s: float
    access: AccessPlan | None
    max_connections: int  # requests in flight to this name
    max_websocket_message_mib: int

    @property
    def wildcard(self) -> bool:
        return self.name.startswith("*.")

    @property
    def suffix(self) -> str:
        """For a wildcard, the host every matching name ends with ("shop.localhost")."""
        return self.host[2:] if self.wildcard else self.host

    @property
    def labels(self) -> int:
        return self.host.count(".") + 1


@dataclass(frozen=True, slots=True)
class Gap:
    """Something devrouter does that an output cannot express. `route` is None for the whole
    config. `text` is one line, already safe for a comment."""

    route: str | None
    text: str

    def __str__(self) -> str:
        return f"route '{self.route}': {self.text}" if self.route else self.text


@dataclass(frozen=True, slots=True)
class ExportPlan:
    source: str
    options: ExportOptions
    sites: tuple[SitePlan, ...]  # exact names alphabetically, then wildcards, deepest first
    backends: tuple[Backend, ...]  # every distinct backend, by port
    timeout_s: float  # the config's top-level timeout
    https: str  # the config's `https` mode ("on", "off", "redirect")
    max_connections: int  # router-wide client connections
    max_connections_set: bool  # a connection limit differs from devrouter's default
    max_websocket_message_set: bool  # any WebSocket message limit differs from the default
    gaps: tuple[Gap, ...]  # the gaps of every format


# --- building the plan -----------------------------------------------------------------------


def make_plan(config: Config, options: ExportOptions = ExportOptions()) -> ExportPlan:
    """The plan of `config` under `options` (already checked by `check_options`)."""
    gaps: list[Gap] = []
    routes = sorted(config.routes, key=_precedence)
    backends = _backends(routes, options.upstream_host)
    site_slugs = unique_slugs([slug(r.name) for r in routes])
    sites = []
    for route, site_slug in zip(routes, site_slugs, strict=True):
        paths = []
        for p in route.paths:  # longest first already (config.schema sorts them)
            if SAFE_PREFIX_RE.match(p.prefix):
                paths.append(PathPlan(p.prefix, backends[_key(p.upstream, options)]))
            else:
                gaps.append(
                    Gap(
                        route.name,
                        f"path prefix {comment_safe(p.prefix)} is not exported: it has "
                        "characters a URL path does not carry unencoded",
                    )
                )
        sites.append(
            SitePlan(
                name=route.name,
                host=f"{route.name}.{options.domain}",
                slug=site_slug,
                backend=backends[_key(route.upstream, options)],
                paths=tuple(sorted(paths, key=lambda p: len(p.prefix), reverse=True)),
                timeout_s=route.timeout_s,
                access=_access(route, config),
                max_connections=route.max_connections or config.max_connections_per_route,
                max_websocket_message_mib=route.max_websocket_message_mib
                or config.max_websocket_message_mib,
            )
        )
    if config.https != "off":
        gaps.append(
            Gap(
                None,
                "HTTPS: devrouter also answers TLS on its port with certificates of its local CA; "
                "this export is plain HTTP (give the engine its own certificates)",
            )
        )
    return ExportPlan(
        source=config.source,
        options=options,
        sites=tuple(sites),
        backends=tuple(sorted(set(backends.values()), key=lambda b: (b.port, b.hosts))),
        timeout_s=config.timeout_s,
        https=config.https,
        max_connections=config.max_connections,
        max_connections_set=config.max_connections != DEFAULT_MAX_CONNECTIONS
        or any(s.max_connections != DEFAULT_MAX_CONNECTIONS_PER_ROUTE for s in sites),
        max_websocket_message_set=any(
            s.max_websocket_message_mib != DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB for s in sites
        ),
        gaps=tuple(gaps),
    )


def _precedence(route: Route) -> tuple[int, int, str]:
    """Exact names first (alphabetically), then wildcards with the most labels first."""
    if route.name.startswith("*."):
        return (1, -route.name.count("."), route.name)
    return (0, 0, route.name)


def _access(route: Route, config: Config) -> AccessPlan | None:
    rule: AccessRule | None = config.access if route.access is None else route.access
    if rule is None or rule.is_off:
        return None
    where = f"${rule.env}" if rule.env is not None else f"the file {rule.file}"
    return AccessPlan(comment_safe(where))


_Key = tuple[tuple[str, ...], int]


def _key(upstream: Upstream, options: ExportOptions) -> _Key:
    hosts = (options.upstream_host,) if options.upstream_host else upstream.hosts
    return (hosts, upstream.port)


def _backends(routes: list[Route], upstream_host: str | None) -> dict[_Key, Backend]:
    """Every distinct backend of the routes and their paths, each with a unique slug: the
    port alone when no other backend has that port, else host and port."""
    options = ExportOptions(upstream_host=upstream_host)
    keys: list[_Key] = []
    for r in routes:
        for up in (r.upstream, *(p.upstream for p in r.paths)):
            key = _key(up, options)
            if key not in keys:
                keys.append(key)
    keys.sort(key=lambda k: (k[1], k[0]))
    ports = [port for _hosts, port in keys]
    wanted = []
    for hosts, port in keys:
        if ports.count(port) == 1 or hosts == DEFAULT_LOOPBACKS:
            wanted.append(str(port))
        else:
            wanted.append(f"{slug(hosts[0])}-{port}")
    return {
        key: Backend(key[0], key[1], s) for key, s in zip(keys, unique_slugs(wanted), strict=True)
    }


# --- checking options and writing values -----------------------------------------------------


def check_domain(text: str) -> str:
    """The domain, lowercased without a trailing dot; ValueError if it is not DNS labels."""
    domain = text.strip().lower().rstrip(".")
    if not HOSTNAME_RE.match(domain):
        raise ValueError(f"--domain {text!r}: expected DNS labels, like dev.example.com")
    return domain


def check_host(text: str, what: str) -> str:
    """A host name or an IP address (IPv6 with or without brackets), as written in text."""
    host = text.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    if HOSTNAME_RE.match(host.lower().rstrip(".")):
        return host.lower().rstrip(".")
    raise ValueError(f"{what} {text!r}: expected a host name or an IP address, without a port")


def is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def slug(text: str) -> str:
    """`*.shop` -> `wildcard-shop`, `admin.shop` -> `admin-shop`, `::1` -> `1`."""
    text = text.lower()
    if text.startswith("*."):
        text = "wildcard." + text[2:]
    return re.sub(r"[^a-z0-9]+", "-", text).strip("-") or "x"


def unique_slugs(wanted: list[str]) -> list[str]:
    """Each slug as wanted, the second and later of equal ones with -2, -3 ... (`a-b` and
    `a.b` both want `a-b`)."""
    seen: set[str] = set()
    out = []
    for s in wanted:
        candidate, n = s, 1
        while candidate in seen:
            n += 1
            candidate = f"{s}-{n}"
        seen.add(candidate)
        out.append(candidate)
    return out


def duration(seconds: float) -> str:
    """A Go/nginx duration: whole seconds as `60s`, anything finer in milliseconds."""
    if seconds == int(seconds):
        return f"{int(seconds)}s"
    return f"{max(1, round(seconds * 1000))}ms"


def comment_safe(text: str) -> str:
    """`text` on one line with no control characters: a value from the config (an
    environment variable's name, a file path) written into a comment cannot end it."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
