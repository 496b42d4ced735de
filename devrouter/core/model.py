"""The router's data model: frozen records of routes, their backends, access rules, listen
addresses and the whole config. Pure data; devrouter.config parses a file into it, and the
engines read it through one immutable snapshot (devrouter.core.state)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

DEFAULT_PORT = 7355
DEFAULT_LOOPBACKS = ("127.0.0.1", "::1")
#: Time to wait for a backend's response headers, in seconds. Generous because dev servers
#: (Vite pre-bundling, Next.js first compile) can take tens of seconds on a cold start.
DEFAULT_TIMEOUT_S = 60.0
#: Client connections the router keeps open at once, all routes together; more are answered
#: with a 503 and closed. Lowered at start-up if the process's file limit cannot hold them.
DEFAULT_MAX_CONNECTIONS = 4096
#: Requests, streams and WebSockets in flight to one route at once; more get a 503. A
#: browser opens at most six connections per name, so only load tests and leaks reach it.
DEFAULT_MAX_CONNECTIONS_PER_ROUTE = 512
#: Largest WebSocket message relayed, in MiB; a bigger one closes with 1009 (message too big).
#: The router holds a whole message while relaying it, so this bounds its memory per
#: WebSocket and direction. Hot-reload messages are a few KiB.
DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB = 4
MIB_BYTES = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Upstream:
    """Where a route sends requests: one port, tried on each address in turn.

    A bare port is tried on 127.0.0.1 and then ::1, because dev servers differ in which
    loopback they bind (Vite on some systems binds only ::1 for `localhost`).
    """

    port: int
    hosts: tuple[str, ...] = DEFAULT_LOOPBACKS

    def describe(self) -> str:
        return " or ".join(_hostport(h, self.port) for h in self.hosts)


@dataclass(frozen=True, slots=True)
class PathRoute:
    prefix: str
    upstream: Upstream

    def matches(self, path: str) -> bool:
        """Prefix match on a segment boundary: `/api` takes `/api` and `/api/x`, not `/apix`."""
        p = self.prefix
        if not path.startswith(p):
            return False
        return p.endswith("/") or len(path) == len(p) or path[len(p)] == "/"


@dataclass(frozen=True, slots=True)
class AccessRule:
    """Where the secret a route (or the whole router) requires is kept: an environment
    variable or an owner-only file, never the config file itself.

    `secret` is filled in by `devrouter.core.access.load_secrets` (the I/O); a rule whose secret is
    not loaded admits nobody. A rule with neither `env` nor `file` is `access: false`: the
    route is open even when the whole router requires a secret.
    """

    env: str | None = None
    file: str | None = None
    line: int = 0
    secret: str | None = field(default=None, repr=False)

    @property
    def is_off(self) -> bool:
        return self.env is None and self.file is None


ACCESS_OFF = AccessRule()


@dataclass(frozen=True, slots=True)
class ContainerRef:
    """The Docker container a route was made for (devrouter.docker): shown by the dashboard,
    `ls` and `doctor`, never used to route."""

    id: str  # the full container id
    name: str  # without Docker's leading "/"
    image: str
    project: str | None = None  # com.docker.compose.project
    service: str | None = None  # com.docker.compose.service
    health: str | None = None  # Docker's own healthcheck: "healthy", "unhealthy", "starting"

    @property
    def short_id(self) -> str:
        return self.id[:12]


@dataclass(frozen=True, slots=True)
class Route:
    name: str  # "api", "shop.api" or "*.shop"; the host is NAME.localhost
    upstream: Upstream
    paths: tuple[PathRoute, ...] = ()  # longest prefix first
    timeout_s: float = DEFAULT_TIMEOUT_S
    line: int = 0
    source: str = "config"  # "config", "run", "stack", "alias", "demo", "docker"
    owner_pid: int | None = None  # the process a `run` route lives and dies with
    stack: str | None = None  # a `devrouter up` stack, or a Compose project
    container: ContainerRef | None = None  # source "docker": the container it reaches
    # None: the config's top-level value (filled in when the route table is built)
    access: AccessRule | None = None
    max_connections: int | None = None
    max_websocket_message_mib: int | None = None

    @property
    def host(self) -> str:
        return f"{self.name}.localhost"

    @property
    def max_websocket_message_bytes(self) -> int:
        """The largest WebSocket message relayed on this route, in bytes."""
        mib = self.max_websocket_message_mib or DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB
        return mib * MIB_BYTES


@dataclass(frozen=True, slots=True)
class ListenAddr:
    host: str
    port: int

    def __str__(self) -> str:
        return _hostport(self.host, self.port)

    @property
    def is_loopback(self) -> bool:
        return is_loopback_host(self.host)


@dataclass(frozen=True, slots=True)
class DockerSettings:
    """The config's `docker:` section (devrouter.docker): whether running containers get
    names, which Engine socket to watch, and which containers."""

    enabled: bool = True
    socket: str | None = None  # None: DOCKER_HOST, else the usual sockets (docker.sockets)
    only_labelled: bool = False  # only containers with a devrouter.* label get names
    #: Containers that publish no port are reached at their own address on their network
    #: (Linux only: Docker Desktop's and OrbStack's containers live in a VM).
    container_addresses: bool = False


#: What the router's port does with TLS: "on" answers TLS and plain HTTP on the same port
#: (the first byte of a connection decides), "off" answers plain HTTP only, "redirect"
#: answers TLS and sends plain HTTP requests to their https:// URL (308).
HttpsMode = Literal["on", "off", "redirect"]
HTTPS_MODES: tuple[HttpsMode, ...] = ("on", "off", "redirect")


@dataclass(frozen=True, slots=True)
class Config:
    source: str = "<no config file>"
    listen: tuple[ListenAddr, ...] | None = None  # None: not set in the file
    routes: tuple[Route, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    access: AccessRule | None = None  # required by every route that does not say otherwise
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_route: int = DEFAULT_MAX_CONNECTIONS_PER_ROUTE
    max_websocket_message_mib: int = DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB
    https: HttpsMode = "on"
    docker: DockerSettings = DockerSettings()
    #: `hosts: sync`: the hosts file whose devrouter block the router keeps current
    #: (devrouter.hosts.keeper); None: the router leaves hosts files alone.
    hosts_file: str | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
