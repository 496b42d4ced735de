"""Where is the running router? One answer for every command that talks to it.

Theory of operation. `bench`, `doctor`, `ls`, `url` and `run` must agree on which router
they mean; otherwise `bench` loads port 7355 while `run` registered its name with a router
on 7400, and `doctor` vouches for somebody else's router. `locate` asks, in this order:

1. a port given on the command line (`--port`, `--router-port`, a URL's port): what the
   user asked for. It is still "our" router when the control socket's router listens there;
2. the control socket in the state directory (`devrouter.services.control`): the router that `run`,
   `alias`, `up` and `ls` talk to. Its `status` names its listen addresses, and its `list` is
   the live route table: config, `run`, `alias` and stack routes alike;
3. the `listen:` address of the config file;
4. `$DEVROUTER_LISTEN` (where `devrouter run` starts a background router);
5. the default, 127.0.0.1:7355 (then ::1).

For a router not found through the socket, `locate` can ask it over HTTP
(GET /api/status): did anything answer, is it a devrouter, and its route table when the
answer is devrouter's status document.

`choose` (the decision), `live_routes` (the route table from a reply) and
`is_devrouter_answer` (what counts as devrouter) are pure; `locate` does the asking. Only
loopback addresses are ever contacted, each with a timeout.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..core.addresses import listen_addrs
from ..core.errors import ConfigError
from ..core.model import (
    DEFAULT_LOOPBACKS,
    DEFAULT_PORT,
    ListenAddr,
    PathRoute,
    Route,
    Upstream,
    is_loopback_host,
)
from .client import ControlError, call, socket_path, status
from .ports import state_dir

#: Where `devrouter run` starts a background router (devrouter.services.autostart).
LISTEN_ENV = "DEVROUTER_LISTEN"
#: The whole GET /api/status exchange with a router found by address, in seconds.
HTTP_TIMEOUT_S = 2.0
#: A /api/status body larger than this, in bytes, is not read as JSON.
MAX_STATUS_BYTES = 4 * 1024 * 1024
#: What the router's own error answers carry (pages.py); no other server sends it.
DEVROUTER_HEADER = "X-Devrouter-Error"

#: A listen address that is a wildcard is reached on the loopback of its family.
_WILDCARD_TO_LOOPBACK = {"0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class Clues:
    """What each source says about the router's address; None where it says nothing."""

    flag_port: int | None = None  # a port given on the command line
    flag_name: str = "--port"  # how the user gave it, for messages
    socket_status: Mapping[str, Any] | None = None  # the control socket's `status` reply
    socket: str = ""  # the control socket asked
    config_listen: tuple[ListenAddr, ...] | None = None
    config_path: str | None = None
    env_listen: tuple[ListenAddr, ...] | None = None  # $DEVROUTER_LISTEN


@dataclass(frozen=True, slots=True)
class Choice:
    """Where to look, and why there."""

    hosts: tuple[str, ...]  # loopback addresses to connect to, the first preferred
    port: int
    how: str  # "found through the control socket /x/control.sock", "the default", ...
    ours: bool  # the router of this state directory (its control socket answered)
    note: str = ""  # what else a reader should know ("no router answers on ...")


def socket_addrs(reply: Mapping[str, Any]) -> tuple[ListenAddr, ...]:
    """The listen addresses in a control socket `status` reply (its `listen`, else its
    `port` on both loopbacks)."""
    found: list[ListenAddr] = []
    listen = reply.get("listen")
    for text in listen if isinstance(listen, list) else ():
        with contextlib.suppress(ValueError):
            found.extend(listen_addrs([str(text)]))
    port = reply.get("port")
    if not found and isinstance(port, int) and not isinstance(port, bool) and 0 < port < 65536:
        found.extend(ListenAddr(h, port) for h in DEFAULT_LOOPBACKS)
    return tuple(found)


def connect_hosts(addrs: Sequence[ListenAddr], port: int) -> tuple[str, ...]:
    """The loopback addresses to reach a router listening on `addrs`, on `port`: a
    wildcard is reached on its family's loopback; a LAN address is never contacted."""
    hosts: list[str] = []
    for a in addrs:
        if a.port != port:
            continue
        host = _WILDCARD_TO_LOOPBACK.get(a.host, a.host)
        if is_loopback_host(host) and host != "localhost" and host not in hosts:
            hosts.append(host)
    return tuple(hosts) or DEFAULT_LOOPBACKS


def choose(clues: Clues) -> Choice:
    """Where the router is, from what each source says (order in the module docstring)."""
    ours = socket_addrs(clues.socket_status) if clues.socket_status is not None else ()
    by_socket = f"found through the control socket {clues.socket}"
    silent = f"no router answers on the control socket {clues.socket}" if not ours else ""
    if clues.flag_port is not None:
        port = clues.flag_port
        if any(a.port == port for a in ours):
            return Choice(connect_hosts(ours, port), port, by_socket, True)
        note = silent or f"the router of this state directory listens on {ours[0]}"
        return Choice(DEFAULT_LOOPBACKS, port, f"given by {clues.flag_name}", False, note)
    if ours:
        return Choice(connect_hosts(ours, ours[0].port), ours[0].port, by_socket, True)
    for addrs, how in (
        (clues.config_listen, f"the listen address in {clues.config_path}"),
        (clues.env_listen, f"${LISTEN_ENV}"),
    ):
        if addrs:
            return Choice(connect_hosts(addrs, addrs[0].port), addrs[0].port, how, False, silent)
    return Choice(DEFAULT_LOOPBACKS, DEFAULT_PORT, "the default", False, silent)


# --- the live route table -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LiveRoute:
    """One route of the running router, as its control socket or /api/status lists it."""

    name: str
    upstream: Upstream
    paths: tuple[PathRoute, ...] = ()  # longest prefix first, as in Route
    source: str = "config"  # "config", "run", "stack", "alias"
    listens_on: tuple[int, ...] = ()  # a run/stack service's other listening ports

    def route(self) -> Route:
        return Route(self.name, self.upstream, self.paths, source=self.source)


def _port(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= 65535:
        return value
    return None


def _upstream(entry: Mapping[str, Any], port: int) -> Upstream:
    """Only loopback hosts are kept: nothing here ever connects elsewhere."""
    listed = entry.get("hosts")
    hosts = [
        h
        for h in (listed if isinstance(listed, list) else ())
        if isinstance(h, str) and is_loopback_host(h) and h != "localhost"
    ]
    return Upstream(port, tuple(dict.fromkeys(hosts)) or DEFAULT_LOOPBACKS)


def live_routes(raw: object) -> tuple[LiveRoute, ...] | None:
    """The routes in a `list` reply or an /api/status document (`routes[]` with `name`,
    `port`, and when present `hosts`, `paths[]`, `source`, `listens_on`); None when there
    is no route list. Entries that cannot be read are left out."""
    routes = raw.get("routes") if isinstance(raw, Mapping) else None
    if not isinstance(routes, list):
        return None
    out: list[LiveRoute] = []
    for r in routes:
        port = _port(r.get("port")) if isinstance(r, dict) else None
        if port is None or not isinstance(r.get("name"), str):
            continue
        paths: list[PathRoute] = []
        raw_paths = r.get("paths")
        for p in raw_paths if isinstance(raw_paths, list) else ():
            p_port = _port(p.get("port")) if isinstance(p, dict) else None
            if p_port is not None and isinstance(p.get("prefix"), str):
                paths.append(PathRoute(p["prefix"], _upstream(p, p_port)))
        paths.sort(key=lambda p: len(p.prefix), reverse=True)
        listens = r.get("listens_on")
        others = tuple(
            p for p in (_port(x) for x in (listens if isinstance(listens, list) else ())) if p
        )
        source = r.get("source")
        out.append(
            LiveRoute(
                r["name"],
                _upstream(r, port),
                tuple(paths),
                source if isinstance(source, str) else "config",
                others,
            )
        )
    return tuple(out)


# --- is it devrouter? ---------------------------------------------------------------------


def is_devrouter_status(doc: object) -> bool:
    """Is `doc` devrouter's /api/status document (not just any JSON at /api/status)?"""
    return (
        isinstance(doc, Mapping)
        and isinstance(doc.get("version"), str)
        and isinstance(doc.get("listen"), list)
        and isinstance(doc.get("routes"), list)
    )


def is_devrouter_answer(doc: object, devrouter_header: bool, body_start: bytes) -> bool:
    """Did devrouter answer GET /api/status? Its status document; any answer of its own
    (they carry X-Devrouter-Error, as its 401 for a router that requires a secret does);
    or an older version's plain-text page, which starts with "devrouter"."""
    return is_devrouter_status(doc) or devrouter_header or body_start.startswith(b"devrouter")


# --- the record ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Located:
    """The router a command talks to."""

    hosts: tuple[str, ...]  # loopback addresses, the first preferred
    port: int
    how: str  # how it was found: "found through the control socket /x", "the default"
    ours: bool  # the router of this state directory (found through its control socket)
    note: str = ""
    answered: bool | None = None  # None: not asked
    is_devrouter: bool | None = None  # None: not asked, or nothing answered
    http_status: int | None = None  # its answer to GET /api/status, when asked over HTTP
    pid: int | None = None
    version: str | None = None
    listen: tuple[str, ...] = ()
    routes: tuple[LiveRoute, ...] | None = None  # the live route table, when known
    socket: str = ""

    @property
    def host(self) -> str:
        return self.hosts[0]

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"http://{self.address}"

    def describe(self) -> str:
        """`127.0.0.1:7400 (found through the control socket /x/control.sock)`."""
        extra = f"; {self.note}" if self.note else ""
        return f"{self.address} ({self.how}{extra})"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.address,
            "port": self.port,
            "found_by": self.how,
            "ours": self.ours,
            "answered": self.answered,
            "devrouter": self.is_devrouter,
            "pid": self.pid,
        }


# --- asking (I/O) -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    """What GET /api/status got on one address."""

    host: str
    status: int | None  # None: it accepted the connection but sent no HTTP answer
    devrouter_header: bool = False
    body: bytes = b""


def get_status(
    hosts: Sequence[str], port: int, timeout_s: float = HTTP_TIMEOUT_S
) -> HttpAnswer | None:
    """GET /api/status on each loopback host in turn; None when every connect failed."""
    for host in hosts:
        if not is_loopback_host(host):
            raise ValueError(f"only loopback addresses are asked, not {host!r}")
        conn = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            conn.connect()
        except OSError:  # refused, or no such address here (IPv6 off)
            conn.close()
            continue
        try:
            conn.request("GET", "/api/status", headers={"Accept": "application/json"})
            resp = conn.getresponse()
            body = resp.read(MAX_STATUS_BYTES + 1)
            marked = resp.getheader(DEVROUTER_HEADER) is not None
            return HttpAnswer(host, resp.status, marked, body)
        except (OSError, http.client.HTTPException):
            return HttpAnswer(host, None)
        finally:
            conn.close()
    return None


def judge_answer(choice: Choice, answer: HttpAnswer | None, socket: str = "") -> Located:
    """The record for a router found by address, from its answer to GET /api/status."""
    base = Located(choice.hosts, choice.port, choice.how, choice.ours, choice.note, socket=socket)
    if answer is None:
        return replace(base, answered=False)
    doc: object = None
    if answer.status == 200 and len(answer.body) <= MAX_STATUS_BYTES:
        with contextlib.suppress(ValueError):
            doc = json.loads(answer.body)
    hosts = (answer.host, *(h for h in choice.hosts if h != answer.host))
    found = replace(
        base,
        hosts=hosts,
        answered=True,
        is_devrouter=is_devrouter_answer(doc, answer.devrouter_header, answer.body[:64]),
        http_status=answer.status,
    )
    if not is_devrouter_status(doc):
        return found
    assert isinstance(doc, Mapping)
    listen = doc["listen"]
    return replace(
        found,
        version=doc["version"],
        listen=tuple(str(a) for a in listen),
        routes=live_routes(doc),
    )


def _read_listen(path: Path | None) -> tuple[ListenAddr, ...] | None:
    if path is None:
        return None
    from ..config.reload import read_config

    try:
        return read_config(path, own_ports=(), secrets=False).listen
    except ConfigError:
        return None  # a broken file names no address; `devrouter check` says why


def _env_listen(env: Mapping[str, str]) -> tuple[ListenAddr, ...] | None:
    values = [v for v in re.split(r"[,\s]+", env.get(LISTEN_ENV, "")) if v]
    try:
        return listen_addrs(values) or None
    except ValueError:
        return None


def locate(
    *,
    port: int | None = None,
    flag: str = "--port",
    config: str | Path | None = None,
    directory: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    probe: bool = True,
) -> Located:
    """Find the running router (order in the module docstring). `config` is the file the
    user named (else the usual lookup); `directory` the state directory (else the usual
    one). With `probe`, a router not found through the control socket is asked GET
    /api/status, so the record says whether it answered and is a devrouter."""
    from ..config.reload import find_config

    env = os.environ if env is None else env
    directory = state_dir(env) if directory is None else directory
    reply = status(directory)
    path = None
    if reply is None and port is None:
        path = find_config(str(config) if config else None, env, cwd or Path.cwd())
    clues = Clues(
        flag_port=port,
        flag_name=flag,
        socket_status=reply,
        socket=str(socket_path(directory)),
        config_listen=_read_listen(path),
        config_path=str(path) if path else None,
        env_listen=_env_listen(env),
    )
    choice = choose(clues)
    if not choice.ours:
        answer = get_status(choice.hosts, choice.port) if probe else None
        found = judge_answer(choice, answer, clues.socket)
        return found if probe else replace(found, answered=None)
    assert reply is not None
    routes: tuple[LiveRoute, ...] | None = None
    with contextlib.suppress(ControlError):
        routes = live_routes(call(directory, "list", timeout_s=HTTP_TIMEOUT_S))
    pid, version, listen = reply.get("pid"), reply.get("version"), reply.get("listen")
    return Located(
        choice.hosts,
        choice.port,
        choice.how,
        True,
        choice.note,
        answered=True,
        is_devrouter=True,
        pid=pid if isinstance(pid, int) else None,
        version=version if isinstance(version, str) else None,
        listen=tuple(str(a) for a in listen) if isinstance(listen, list) else (),
        routes=routes,
        socket=clues.socket,
    )
