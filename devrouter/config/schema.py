"""The config file: YAML text in, a validated and frozen `Config` out.

Theory of operation: the text is *composed* into a YAML node tree with PyYAML's SafeLoader
(so no Python object tag is ever constructed) and the tree is walked by hand instead of being
turned into dicts by `safe_load`. The walk keeps every node's line number for error messages,
and it sees duplicate keys, which `safe_load` silently merges. The walk only descends into the
shapes the schema allows, so an alias bomb is rejected as a wrong type before it is expanded.

This module does no I/O: `parse_config` takes the text and a name for it. Reading the file
belongs to `devrouter.reload`.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

DEFAULT_PORT = 7355
DEFAULT_LOOPBACKS = ("127.0.0.1", "::1")
#: Time to wait for a backend's response headers, in seconds. Generous because dev servers
#: (Vite pre-bundling, Next.js first compile) can take tens of seconds on a cold start.
DEFAULT_TIMEOUT_S = 60.0
RESERVED_NAMES = frozenset({"devrouter"})
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

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"^(?:\*\.)?{_LABEL}(?:\.{_LABEL})*$")
_PREFIX_RE = re.compile(r"^/[^\s?#]*$")
_SAFE_TAGS = frozenset(
    "tag:yaml.org,2002:" + t for t in ("str", "int", "float", "bool", "null", "map", "seq")
)

_TOP_KEYS = (
    "listen",
    "routes",
    "timeout",
    "access",
    "max_connections",
    "max_connections_per_route",
    "max_websocket_message_mib",
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


class ConfigError(Exception):
    """A config that cannot be used. `str()` is the one line shown to the user."""

    def __init__(self, source: str, line: int | None, message: str, route: str | None = None):
        self.source = source
        self.line = line
        self.route = route
        self.message = message
        where = f"{source}:{line}" if line else source
        what = f"route '{route}': " if route else ""
        super().__init__(f"{where}: {what}{message}")


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

    `secret` is filled in by `devrouter.access.load_secrets` (the I/O); a rule whose secret is
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
class Route:
    name: str  # "api", "shop.api" or "*.shop"; the host is NAME.localhost
    upstream: Upstream
    paths: tuple[PathRoute, ...] = ()  # longest prefix first
    timeout_s: float = DEFAULT_TIMEOUT_S
    line: int = 0
    source: str = "config"  # "config", "run", "stack", "alias", "demo"
    owner_pid: int | None = None  # the process a `run` route lives and dies with
    stack: str | None = None
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
class Config:
    source: str = "<no config file>"
    listen: tuple[ListenAddr, ...] | None = None  # None: not set in the file
    routes: tuple[Route, ...] = ()
    timeout_s: float = DEFAULT_TIMEOUT_S
    access: AccessRule | None = None  # required by every route that does not say otherwise
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_connections_per_route: int = DEFAULT_MAX_CONNECTIONS_PER_ROUTE
    max_websocket_message_mib: int = DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB
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


def parse_listen(value: str | int) -> ListenAddr | tuple[ListenAddr, ...]:
    """`7355` (both loopbacks), `127.0.0.1:7355`, `[::1]:7355` or `localhost:7355`.

    Raises ValueError with a user-facing message.
    """
    text = str(value).strip()
    if text.isdigit():
        port = _port_or_raise(text)
        return tuple(ListenAddr(h, port) for h in DEFAULT_LOOPBACKS)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"cannot read listen address {text!r}: use [::1]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"cannot read listen address {text!r}: use HOST:PORT or a port")
    port = _port_or_raise(port_text)
    if host == "localhost":
        return tuple(ListenAddr(h, port) for h in DEFAULT_LOOPBACKS)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen host {host!r} must be an IP address or localhost") from None
    return ListenAddr(host, port)


def _port_or_raise(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def listen_addrs(values: Iterable[str | int]) -> tuple[ListenAddr, ...]:
    out: list[ListenAddr] = []
    for v in values:
        parsed = parse_listen(v)
        for addr in parsed if isinstance(parsed, tuple) else (parsed,):
            if addr not in out:
                out.append(addr)
    return tuple(out)


def parse_target(text: str) -> Upstream:
    """`http://127.0.0.1:8000`, `localhost:8000` or `[::1]:8000`; loopback only.

    Raises ValueError with a user-facing message.
    """
    rest = text.strip()
    scheme, sep, after = rest.partition("://")
    if sep:
        if scheme.lower() != "http":
            raise ValueError(f"target {text!r}: only http:// backends are supported")
        rest = after
    rest = rest.rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise ValueError(f"target {text!r}: a target is scheme://host:port with no path")
    if "@" in rest:
        raise ValueError(f"target {text!r}: credentials in a target are not supported")
    try:
        addr = parse_listen(rest)
    except ValueError:
        raise ValueError(
            f"target {text!r} must look like http://127.0.0.1:PORT (a loopback host and a port)"
        ) from None
    if isinstance(addr, tuple):
        hosts = tuple(a.host for a in addr)
        if rest.isdigit():
            return Upstream(addr[0].port)
        return Upstream(addr[0].port, hosts)
    if not addr.is_loopback:
        raise ValueError(
            f"target {text!r} is not on this machine; devrouter only forwards to loopback "
            "addresses (127.0.0.1, ::1, localhost)"
        )
    return Upstream(addr.port, (addr.host,))


def normalize_name(raw: str) -> str:
    name = raw.strip().lower().rstrip(".")
    if name.endswith(".localhost"):
        name = name[: -len(".localhost")]
    return name


# --- the walk -----------------------------------------------------------------------------


class _Walker:
    def __init__(self, source: str):
        self.source = source
        self.own_ports: set[int] = set()
        self._constructor = yaml.constructor.SafeConstructor()

    def error(self, node: Node | None, message: str, route: str | None = None) -> ConfigError:
        line = node.start_mark.line + 1 if node is not None else None
        return ConfigError(self.source, line, message, route)

    def scalar(self, node: Node, what: str, route: str | None = None) -> object:
        if not isinstance(node, ScalarNode):
            raise self.error(node, f"{what} must be a single value, not a list or mapping", route)
        if node.tag not in _SAFE_TAGS:
            raise self.error(node, f"{what}: the YAML tag {node.tag!r} is not allowed", route)
        return self._constructor.construct_object(node)

    def mapping(
        self, node: Node, what: str, allowed: Iterable[str] | None, route: str | None = None
    ) -> Iterator[tuple[str, Node, Node]]:
        """Yield (key, key node, value node), rejecting duplicates and unknown keys."""
        if not isinstance(node, MappingNode) or node.tag not in _SAFE_TAGS:
            raise self.error(node, f"{what} must be a mapping (key: value lines)", route)
        allowed = tuple(allowed) if allowed is not None else None
        seen: dict[str, int] = {}
        for knode, vnode in node.value:
            key = self.scalar(knode, "a key", route)
            if not isinstance(key, str | int):
                raise self.error(knode, f"key {key!r} in {what} must be text", route)
            key = str(key)
            if allowed is not None and key not in allowed:
                hint = difflib.get_close_matches(key, allowed, n=1)
                expected = ", ".join(allowed)
                more = f"; did you mean '{hint[0]}'?" if hint else f"; expected {expected}"
                raise self.error(knode, f"unknown key '{key}' in {what}{more}", route)
            if key in seen:
                if what == "routes":
                    raise self.error(knode, f"duplicate route (also on line {seen[key]})", key)
                raise self.error(
                    knode, f"'{key}' appears twice in {what} (first on line {seen[key]})", route
                )
            seen[key] = knode.start_mark.line + 1
            yield key, knode, vnode

    def port(self, node: Node, route: str) -> int:
        value = self.scalar(node, "port", route)
        if isinstance(value, str) and value.strip().isdigit():
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
                if value.strip().isdigit():
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


def parse_config(
    text: str, source: str = "<config>", own_ports: Iterable[int] | None = None
) -> Config:
    """Parse and validate. `own_ports` are the router's listen ports, to refuse self-routes;
    when None, the ports from the file's own `listen` (or the default) are used.
    """
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        msg = " ".join(p for p in (exc.context, exc.problem) if p) or "invalid YAML"
        raise ConfigError(source, line, f"invalid YAML: {msg}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(source, None, f"invalid YAML: {exc}") from None
    if root is None:
        raise ConfigError(source, None, "the file is empty; expected a mapping with 'routes:'")
    w = _Walker(source)
    listen: tuple[ListenAddr, ...] | None = None
    timeout_s = DEFAULT_TIMEOUT_S
    routes_node: Node | None = None
    access: AccessRule | None = None
    max_connections = DEFAULT_MAX_CONNECTIONS
    per_route = DEFAULT_MAX_CONNECTIONS_PER_ROUTE
    ws_mib = DEFAULT_MAX_WEBSOCKET_MESSAGE_MIB
    for key, _knode, vnode in w.mapping(root, "the top level", _TOP_KEYS):
        if key == "listen":
            listen = _parse_listen_node(w, vnode)
        elif key == "timeout":
            timeout_s = w.timeout(vnode, None)
        elif key == "access":
            access = None if _is_null(vnode) else w.access(vnode, None)
        elif key == "max_connections":
            max_connections = w.count(vnode, "max_connections", None)
        elif key == "max_connections_per_route":
            per_route = w.count(vnode, "max_connections_per_route", None)
        elif key == "max_websocket_message_mib":
            ws_mib = w.count(vnode, "max_websocket_message_mib", None)
        elif key == "routes":
            routes_node = vnode
        # `stack` and `services` belong to `devrouter up` (devrouter.stack), not the router
    ports = (
        set(own_ports)
        if own_ports is not None
        else {a.port for a in (listen or listen_addrs([DEFAULT_PORT]))}
    )
    w.own_ports = ports
    routes: list[Route] = []
    if routes_node is not None and not _is_null(routes_node):
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
    )


def _is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == "tag:yaml.org,2002:null"


def _parse_listen_node(w: _Walker, node: Node) -> tuple[ListenAddr, ...]:
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


def _parse_routes(w: _Walker, node: Node, timeout_s: float) -> list[Route]:
    routes: list[Route] = []
    lines: dict[str, int] = {}
    for raw, knode, vnode in w.mapping(node, "routes", None):
        name = normalize_name(raw)
        line = knode.start_mark.line + 1
        if not _NAME_RE.match(name):
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


def _parse_route_body(w: _Walker, node: Node, name: str, timeout_s: float, line: int) -> Route:
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


def _parse_paths(w: _Walker, node: Node, name: str) -> list[PathRoute]:
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
