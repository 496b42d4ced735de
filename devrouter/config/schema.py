"""The config file's schema: YAML text in, a validated and frozen `Config` out, every
error with its file, line and route (devrouter.config.yamlwalk). No I/O: `parse_config`
takes the text and a name for it; reading the file belongs to devrouter.config.reload."""

from __future__ import annotations

import re
from collections.abc import Iterable

import yaml
from yaml.nodes import Node, ScalarNode

from ..core.addresses import listen_addrs, parse_target
from ..core.errors import ConfigError
from ..core.model import (
    ACCESS_OFF,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_CONNECTIONS_PER_ROUTE,
    DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB,
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    AccessRule,
    Config,
    DockerSettings,
    HttpsMode,
    ListenAddr,
    PathRoute,
    Route,
    Upstream,
)
from ..core.names import NAME_RE, RESERVED_NAMES, normalize_name
from ..core.numbers import digits
from .yamlwalk import Walker, compose, is_null

_PREFIX_RE = re.compile(r"^/[^\s?#]*\Z")
_TOP_KEYS = (
    "listen",
    "routes",
    "timeout",
    "access",
    "max_connections",
    "max_connections_per_route",
    "max_websocket_message_mib",
    "https",
    "docker",
    "hosts",
    "stack",
    "services",
)
_ROUTE_KEYS = (
    "port",
    "target",
    "paths",
    "timeout",
    "access",
    "max_connections",
    "max_websocket_message_mib",
)
_ACCESS_KEYS = ("env", "file")
_PATH_KEYS = ("port", "target")
_DOCKER_KEYS = ("enabled", "socket", "only_labelled", "container_addresses")


class _ConfigWalker(Walker):
    """The walker with the config's own value rules."""

    def __init__(self, source: str):
        super().__init__(source)
        self.own_ports: set[int] = set()

    def port(self, node: Node, route: str) -> int:
        value = self.scalar(node, "port", route)
        if isinstance(value, str) and digits(value.strip()):
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.error(node, f"port must be a number, got {value!r}", route)
        if not 1 <= value <= 65535:
            raise self.error(node, f"port {value} is outside 1-65535", route)
        self.check_not_own(node, value, route)
        return value

    def check_not_own(self, node: Node, port: int, route: str) -> None:
        if port in self.own_ports:
            raise self.error(
                node,
                f"port {port} is devrouter's own port; this route would loop back into the router",
                route,
            )

    def timeout(self, node: Node, route: str | None) -> float:
        value = self.scalar(node, "timeout", route)
        if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            raise self.error(
                node, f"timeout must be a positive number of seconds, got {value!r}", route
            )
        return float(value)

    def count(self, node: Node, what: str, route: str | None) -> int:
        value = self.scalar(node, what, route)
        if isinstance(value, bool) or not isinstance(value, int) or not value > 0:
            raise self.error(node, f"{what} must be a whole number above 0, got {value!r}", route)
        return value

    def access(self, node: Node, route: str | None) -> AccessRule:
        """`{env: NAME}`, `{file: PATH}`, or `false` (a route open to all)."""
        line = node.start_mark.line + 1
        if isinstance(node, ScalarNode):
            value = self.scalar(node, "access", route)
            if value is False and route is not None:
                return ACCESS_OFF
            raise self.error(
                node,
                "access must be a mapping with env: VARIABLE or file: PATH"
                + (" (or false, to leave this route open)" if route is not None else ""),
                route,
            )
        env: str | None = None
        path: str | None = None
        for key, _knode, vnode in self.mapping(node, "access", _ACCESS_KEYS, route):
            value = self.scalar(vnode, f"access.{key}", route)
            if not isinstance(value, str) or not value.strip():
                raise self.error(vnode, f"access.{key} must be text, got {value!r}", route)
            if key == "env":
                env = value.strip()
            else:
                path = value.strip()
        if (env is None) == (path is None):
            raise self.error(
                node,
                "access needs exactly one of env: VARIABLE or file: PATH (the secret is kept "
                "out of the config file)",
                route,
            )
        return AccessRule(env, path, line)

    def upstream(self, node: Node, route: str, keys: tuple[str, ...]) -> Upstream:
        """A port, a target string, or a mapping with exactly one of `port` / `target`."""
        if isinstance(node, ScalarNode):
            value = self.scalar(node, "target", route)
            if isinstance(value, int) and not isinstance(value, bool):
                return Upstream(self.port(node, route))
            if isinstance(value, str):
                if digits(value.strip()):
                    return Upstream(self.port(node, route))
                try:
                    upstream = parse_target(value)
                except ValueError as exc:
                    raise self.error(node, str(exc), route) from None
                self.check_not_own(node, upstream.port, route)
                return upstream
            raise self.error(node, f"expected a port or a target URL, got {value!r}", route)
        found: Upstream | None = None
        for key, _knode, vnode in self.mapping(node, f"route '{route}'", keys, route):
            if key in ("port", "target"):
                if found is not None:
                    raise self.error(vnode, "give either port or target, not both", route)
                found = (
                    self.upstream(vnode, route, keys)
                    if key == "target"
                    else Upstream(self.port(vnode, route))
                )
        if found is None:
            raise self.error(node, "needs a port (or a target URL)", route)
        return found


def _https_mode(w: Walker, node: Node) -> HttpsMode:
    """`https: true` (the default: TLS and plain HTTP on one port), `false`, or `redirect`.
    YAML reads on/off/yes/no as booleans, so those work too."""
    value = w.scalar(node, "https")
    if value is True:
        return "on"
    if value is False:
        return "off"
    if value == "redirect":
        return "redirect"
    raise w.error(
        node,
        f"https must be true (TLS and plain HTTP on the one port), false (plain HTTP only) or "
        f"redirect (plain HTTP is sent to https://), got {value!r}",
    )


def _docker(w: Walker, node: Node) -> DockerSettings:
    """`docker: false` (off), `true` (the default), or a mapping of _DOCKER_KEYS."""
    if is_null(node):
        return DockerSettings()
    if isinstance(node, ScalarNode):
        value = w.scalar(node, "docker")
        if isinstance(value, bool):
            return DockerSettings(enabled=value)
        raise w.error(
            node,
            f"docker must be true, false or a mapping with {', '.join(_DOCKER_KEYS)}; "
            f"got {value!r}",
        )
    found: dict[str, bool | str] = {}
    for key, _knode, vnode in w.mapping(node, "docker", _DOCKER_KEYS):
        value = w.scalar(vnode, f"docker.{key}")
        if key == "socket":
            if not isinstance(value, str) or not value.strip():
                raise w.error(vnode, f"docker.socket must be a path, got {value!r}")
            text = value.strip().removeprefix("unix://")
            if "://" in text or not text.startswith(("/", "~/")):
                raise w.error(
                    vnode,
                    f"docker.socket must be the path of the Engine's unix socket (like "
                    f"/var/run/docker.sock), got {value!r}",
                )
            found[key] = text
        elif isinstance(value, bool):
            found[key] = value
        else:
            raise w.error(vnode, f"docker.{key} must be true or false, got {value!r}")
    return DockerSettings(
        enabled=bool(found.get("enabled", True)),
        socket=str(found["socket"]) if "socket" in found else None,
        only_labelled=bool(found.get("only_labelled", False)),
        container_addresses=bool(found.get("container_addresses", False)),
    )


#: Where `hosts: sync` writes (devrouter.hosts.file.DEFAULT_HOSTS; config does not import it).
DEFAULT_HOSTS_FILE = "/etc/hosts"


def _hosts(w: Walker, node: Node) -> str | None:
    """`hosts: sync` (the system's hosts file), `false`, or `{file: PATH}`."""
    if is_null(node):
        return None
    if isinstance(node, ScalarNode):
        value = w.scalar(node, "hosts")
        if value is False:
            return None
        if value == "sync":
            return DEFAULT_HOSTS_FILE
        raise w.error(
            node,
            f"hosts must be sync (keep /etc/hosts' devrouter block current), false, or "
            f"{{file: PATH}}; got {value!r}",
        )
    path: str | None = None
    for _key, _knode, vnode in w.mapping(node, "hosts", ("file",)):
        value = w.scalar(vnode, "hosts.file")
        if not isinstance(value, str) or not value.strip().startswith(("/", "~")):
            raise w.error(vnode, f"hosts.file must be an absolute path, got {value!r}")
        path = value.strip()
    return path


def parse_config(
    text: str, source: str = "<config>", own_ports: Iterable[int] | None = None
) -> Config:
    """Parse and validate. `own_ports` are the router's listen ports, to refuse self-routes;
    when None, the ports from the file's own `listen` (or the default) are used.
    """
    root = compose(text, source)
    if root is None:
        raise ConfigError(source, None, "the file is empty; expected a mapping with 'routes:'")
    w = _ConfigWalker(source)
    listen: tuple[ListenAddr, ...] | None = None
    timeout_s = DEFAULT_TIMEOUT_S
    routes_node: Node | None = None
    access: AccessRule | None = None
    max_connections = DEFAULT_MAX_CONNECTIONS
    per_route = DEFAULT_MAX_CONNECTIONS_PER_ROUTE
    ws_mib = DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB
    https: HttpsMode = "on"
    docker = DockerSettings()
    hosts_file: str | None = None
    for key, _knode, vnode in w.mapping(root, "the top level", _TOP_KEYS):
        if key == "listen":
            listen = _parse_listen_node(w, vnode)
        elif key == "timeout":
            timeout_s = w.timeout(vnode, None)
        elif key == "access":
            access = None if is_null(vnode) else w.access(vnode, None)
        elif key == "max_connections":
            max_connections = w.count(vnode, "max_connections", None)
        elif key == "max_connections_per_route":
            per_route = w.count(vnode, "max_connections_per_route", None)
        elif key == "max_websocket_message_mib":
            ws_mib = w.count(vnode, "max_websocket_message_mib", None)
        elif key == "https":
            https = _https_mode(w, vnode)
        elif key == "docker":
            docker = _docker(w, vnode)
        elif key == "hosts":
            hosts_file = _hosts(w, vnode)
        elif key == "routes":
            routes_node = vnode
        # `stack` and `services` belong to `devrouter up` (devrouter.services.stack), not the router
    ports = (
        set(own_ports)
        if own_ports is not None
        else {a.port for a in (listen or listen_addrs([DEFAULT_PORT]))}
    )
    w.own_ports = ports
    routes: list[Route] = []
    if routes_node is not None and not is_null(routes_node):
        routes = _parse_routes(w, routes_node, timeout_s)
    return Config(
        source=source,
        listen=listen,
        routes=tuple(routes),
        timeout_s=timeout_s,
        access=access,
        max_connections=max_connections,
        max_connections_per_route=per_route,
        max_websocket_message_mib=ws_mib,
        https=https,
        docker=docker,
        hosts_file=hosts_file,
    )


def _parse_listen_node(w: _ConfigWalker, node: Node) -> tuple[ListenAddr, ...]:
    items = node.value if isinstance(node, yaml.SequenceNode) else [node]
    addrs: list[ListenAddr] = []
    for item in items:
        v = w.scalar(item, "listen")
        if not isinstance(v, str | int) or isinstance(v, bool):
            raise w.error(item, f"listen must be a port or HOST:PORT, got {v!r}")
        try:
            parsed = listen_addrs([v])
        except ValueError as exc:
            raise w.error(item, str(exc)) from None
        for addr in parsed:
            if not addr.is_loopback:
                raise w.error(
                    item,
                    f"listen address {addr} is not a loopback address; the config file cannot "
                    "expose devrouter to the network (use `serve --listen ... --allow-remote`)",
                )
            if addr not in addrs:
                addrs.append(addr)
    return tuple(addrs)


def _parse_routes(w: _ConfigWalker, node: Node, timeout_s: float) -> list[Route]:
    routes: list[Route] = []
    lines: dict[str, int] = {}
    for raw, knode, vnode in w.mapping(node, "routes", None):
        name = normalize_name(raw)
        line = knode.start_mark.line + 1
        if not NAME_RE.match(name):
            raise w.error(
                knode,
                "a route name is one or more DNS labels (letters, digits, hyphens), "
                "optionally starting with '*.'",
                raw,
            )
        if name.split(".")[-1] in RESERVED_NAMES or name in RESERVED_NAMES:
            raise w.error(knode, f"the name '{name}' is reserved for devrouter's own pages", raw)
        if name in lines:
            raise w.error(knode, f"duplicate route (also on line {lines[name]})", name)
        lines[name] = line
        routes.append(_parse_route_body(w, vnode, name, timeout_s, line))
    return routes


def _parse_route_body(
    w: _ConfigWalker, node: Node, name: str, timeout_s: float, line: int
) -> Route:
    if isinstance(node, ScalarNode):
        return Route(name, w.upstream(node, name, _ROUTE_KEYS), (), timeout_s, line)
    paths: list[PathRoute] = []
    upstream: Upstream | None = None
    access: AccessRule | None = None
    max_connections: int | None = None
    ws_mib: int | None = None
    for key, _knode, vnode in w.mapping(node, f"route '{name}'", _ROUTE_KEYS, name):
        if key == "port":
            if upstream is not None:
                raise w.error(vnode, "give either port or target, not both", name)
            upstream = Upstream(w.port(vnode, name))
        elif key == "target":
            if upstream is not None:
                raise w.error(vnode, "give either port or target, not both", name)
            upstream = w.upstream(vnode, name, _PATH_KEYS)
        elif key == "timeout":
            timeout_s = w.timeout(vnode, name)
        elif key == "access":
            access = w.access(vnode, name)
        elif key == "max_connections":
            max_connections = w.count(vnode, "max_connections", name)
        elif key == "max_websocket_message_mib":
            ws_mib = w.count(vnode, "max_websocket_message_mib", name)
        else:
            paths = _parse_paths(w, vnode, name)
    if upstream is None:
        raise w.error(node, "needs a port (or a target URL)", name)
    return Route(
        name,
        upstream,
        tuple(sorted(paths, key=lambda p: len(p.prefix), reverse=True)),
        timeout_s,
        line,
        access=access,
        max_connections=max_connections,
        max_websocket_message_mib=ws_mib,
    )


def _parse_paths(w: _ConfigWalker, node: Node, name: str) -> list[PathRoute]:
    out: list[PathRoute] = []
    for prefix, knode, vnode in w.mapping(node, f"the paths of route '{name}'", None, name):
        if not _PREFIX_RE.match(prefix):
            raise w.error(
                knode,
                f"path prefix {prefix!r} must start with '/' and have no spaces, ? or #",
                name,
            )
        out.append(PathRoute(prefix, w.upstream(vnode, name, _PATH_KEYS)))
    return out
