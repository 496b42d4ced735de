"""The registration channel: how `devrouter run`, `up` and `alias` change the router's routes.

Theory of operation: the router listens on a unix stream socket, `control.sock` in the state
directory. The directory is mode 0700 and the socket 0600, and on Linux every connection's
peer credentials are checked too, so only the user who runs the router can reach it. A web
page cannot open a unix socket, and no HTTP endpoint of the router changes anything: this
socket is the only way in.

The protocol is JSON lines. Each request is one object with an `op`; each gets exactly one
reply, `{"ok": true, ...}` or `{"ok": false, "error": "..."}` (the error is a sentence for the
user). Operations:

    status                      the router's pid, version, listen addresses and URL
    list                        every route (config, run, stack, alias) and every clash
    who       name              the live registration holding `name`, or null
    output    name              the last lines the command behind `name` printed
    register  routes: [...]     add services (name, port, paths, command, source, stack);
                                they live exactly as long as this connection and its process
    update    name, ...         a registered service's pgid, ready flag, new output lines,
                                exit code, or listens_on (the ports it listens on instead
                                of its own while it is not ready)
    unregister                  drop this connection's services (a clean exit)
    alias     name, port        a route to a port devrouter does not start; kept on disk
    unalias   name
    ping

Registrations are tied to the registering process (its pid comes from the kernel, not the
message, where the OS tells it). They are dropped when its connection closes, and a liveness
check every LIVENESS_INTERVAL_S drops any whose process has died (a zombie or a reused pid
counts as dead). If the process died without unregistering (it was SIGKILLed), the process
groups it had started are sent SIGTERM, then SIGKILL, so a killed `devrouter run` leaves no
server behind.

The router side owns `State.dynamic`: every change rebuilds the dynamic route list and hands
it to `State.set_dynamic`, which keeps the config file's routes and reports clashes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import socket
import struct
import time
from collections import deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..aio import sleep_or_stop
from ..core.model import DEFAULT_PORT, DEFAULT_TIMEOUT_S, ListenAddr, PathRoute, Route, Upstream
from ..core.names import RESERVED_NAMES, normalize_name
from ..core.state import State
from .ports import StateDirError, ensure_state_dir, read_json, write_private

log = logging.getLogger("devrouter.control")

SOCKET_NAME = "control.sock"
PID_NAME = "router.pid"
ALIASES_NAME = "aliases.json"
#: How often the owners of registrations are checked for life, in seconds.
LIVENESS_INTERVAL_S = 1.0
#: After SIGTERM to an orphaned process group, wait this long before SIGKILL, in seconds.
KILL_GRACE_S = 3.0
#: A connection that closed while its process still lived is watched this long, in seconds,
#: in case the process is in the middle of dying.
ORPHAN_WATCH_S = 10.0
#: Longest request line, in bytes.
MAX_MESSAGE_BYTES = 256 * 1024
#: Output lines kept per service for error pages, and the longest line kept, in characters.
OUTPUT_LINES = 40
MAX_OUTPUT_LINE = 400
MAX_SERVICES_PER_CONNECTION = 64
#: At most this many ports in a service's `listens_on`.
MAX_LISTENS_ON = 8
#: A client's wait for a reply, in seconds.
CALL_TIMEOUT_S = 5.0

_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")
_PROC = Path("/proc")


class ControlError(Exception):
    """A refused or failed control request; `str()` is the message for the user."""


class RouterNotRunning(ControlError):
    """Nothing answers on the control socket."""


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


@contextlib.contextmanager
def _address(path: Path) -> Iterator[str]:
    """The address to bind or connect: `path` itself, or on Linux, when it is longer than a
    unix socket address may be, the same file through /proc/self/fd of its directory."""
    if len(os.fsencode(path)) < 100 or not _PROC.is_dir():
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def check_name(raw: object) -> str:
    """A route name for a registration: DNS labels, no wildcard, not reserved."""
    if not isinstance(raw, str):
        raise ControlError("a name must be text")
    name = normalize_name(raw)
    if not _NAME_RE.match(name) or len(name) > 200:
        raise ControlError(
            f"'{raw}' is not a usable name: use letters, digits and hyphens, "
            "with dots between labels (api, web.shop)"
        )
    if name in RESERVED_NAMES or name.split(".")[-1] in RESERVED_NAMES:
        raise ControlError(f"the name '{name}' is reserved for devrouter's own pages")
    return name


def _check_port(value: object, what: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ControlError(f"{what} must be a number from 1 to 65535, got {value!r}")
    return value


# --- processes ----------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) from /proc, or None where there is no /proc."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return ("X", "") if _PROC.is_dir() else None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may contain spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_start_time(pid: int) -> str | None:
    info = _proc_stat(pid)
    return info[1] if info else None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Is `pid` a running process (not a zombie, and the same one that started at
    `started`, when that is known)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    info = _proc_stat(pid)
    if info is None:
        return True
    state, start = info
    if state in ("Z", "X"):
        return False
    return started is None or start == started


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _peer(sock: Any) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of a unix socket, where the OS says."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None or sock is None:
        return None
    try:
        raw = sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i"))
    except OSError:
        return None
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid


# --- the router side ----------------------------------------------------------------------


@dataclass(eq=False)
class Service:
    """One registered name. Read-only outside this module; `output` feeds error pages."""

    name: str
    port: int
    paths: tuple[tuple[str, int], ...]
    source: str  # "run" or "stack"
    stack: str | None
    command: str
    owner_pid: int
    started_at: float = field(default_factory=time.time)
    pgid: int | None = None
    ready: bool = False  # something listens on the port (as seen by the registering process)
    exit_code: int | None = None  # set when the command has exited (the route may remain)
    #: While not ready: the ports its processes listen on instead of `port` (wrong $PORT).
    listens_on: tuple[int, ...] = ()
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    def describe(self) -> str:
        return f"pid {self.owner_pid}, `devrouter {self.source}`: {self.command}"


@dataclass(eq=False)
class _Owner:
    pid: int
    started: str | None
    services: dict[str, Service] = field(default_factory=dict)
    writer: asyncio.StreamWriter | None = None
    disconnected_at: float | None = None


def _service_from(msg: Mapping[str, Any], owner_pid: int) -> Service:
    name = check_name(msg.get("name"))
    port = _check_port(msg.get("port"), f"the port of '{name}'")
    raw_paths = msg.get("paths") or {}
    if not isinstance(raw_paths, dict):
        raise ControlError(f"the paths of '{name}' must be a mapping of prefix to port")
    paths: list[tuple[str, int]] = []
    for prefix, p in raw_paths.items():
        if not isinstance(prefix, str) or not re.match(r"^/[^\s?#]*$", prefix):
            raise ControlError(f"path prefix {prefix!r} of '{name}' must start with '/'")
        paths.append((prefix, _check_port(p, f"the port of {name}{prefix}")))
    source = msg.get("source", "run")
    if source not in ("run", "stack"):
        raise ControlError(f"unknown source {source!r}")
    stack = msg.get("stack")
    if stack is not None and not (isinstance(stack, str) and _NAME_RE.match(stack)):
        raise ControlError(f"stack name {stack!r} is not a DNS name")
    command = msg.get("command", "")
    svc = Service(
        name,
        port,
        tuple(sorted(paths, key=lambda p: len(p[0]), reverse=True)),
        source,
        stack,
        str(command)[:500],
        owner_pid,
    )
    _apply_update(svc, msg)
    return svc


def _listens_on(value: object, name: str) -> tuple[int, ...]:
    what = f"listens_on of '{name}'"
    if not isinstance(value, list) or len(value) > MAX_LISTENS_ON:
        raise ControlError(f"{what} must be a list of at most {MAX_LISTENS_ON} port numbers")
    return tuple(sorted({_check_port(p, what) for p in value}))


def _apply_update(svc: Service, msg: Mapping[str, Any]) -> None:
    """Apply the fields of a `register` or `update` message; a malformed `listens_on` is
    refused before anything changes."""
    listens_on = _listens_on(msg["listens_on"], svc.name) if "listens_on" in msg else None
    if listens_on is not None:
        svc.listens_on = listens_on
    pgid = msg.get("pgid")
    if isinstance(pgid, int) and not isinstance(pgid, bool) and pgid > 1:
        svc.pgid = pgid
    if isinstance(msg.get("ready"), bool):
        svc.ready = msg["ready"]
    code = msg.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        svc.exit_code = code
        svc.ready = False
        svc.listens_on = ()  # its sockets closed with it
    lines = msg.get("lines")
    if isinstance(lines, list):
        for line in lines[-OUTPUT_LINES:]:
            if isinstance(line, str):
                svc.output.append(line[:MAX_OUTPUT_LINE])


class ControlServer:
    """The router end of the channel. `listen` is set by the router once it has bound."""

    def __init__(self, state: State, state_dir: Path) -> None:
        self.state = state
        self.state_dir = Path(state_dir)
        self.listen: tuple[ListenAddr, ...] = ()
        self._owners: list[_Owner] = []
        self._aliases: dict[str, int] = {}
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._watch: asyncio.Task[None] | None = None
        self._inode: tuple[int, int] | None = None

    # -- for the rest of the router --

    def service(self, name: str) -> Service | None:
        """The live registration for a route name (for "starting..." and 502 pages)."""
        for owner in self._owners:
            svc = owner.services.get(name)
            if svc is not None and owner.writer is not None:
                return svc
        return None

    def output(self, name: str) -> tuple[str, ...]:
        """The last lines the command behind `name` printed, oldest first."""
        svc = self.service(name)
        return tuple(svc.output) if svc else ()

    @property
    def port(self) -> int:
        return self.listen[0].port if self.listen else DEFAULT_PORT

    # -- lifetime --

    async def start(self) -> None:
        """Take the socket (refusing if another router answers on it), load the aliases and
        start the liveness checks. Raises ControlError."""
        try:
            ensure_state_dir(self.state_dir)
        except (OSError, StateDirError) as exc:
            raise ControlError(str(exc)) from None
        path = socket_path(self.state_dir)
        if path.exists() or path.is_symlink():
            try:
                channel = await Channel.open(self.state_dir)
                try:
                    info = await channel.call("status")
                finally:
                    await channel.close()
            except RouterNotRunning:
                path.unlink(missing_ok=True)  # left by a router that did not stop cleanly
            except ControlError as exc:
                raise ControlError(
                    f"something holds the control socket {path} but does not answer ({exc}); "
                    "if no devrouter is running, remove the file"
                ) from None
            else:
                raise ControlError(
                    f"another devrouter is already running (pid {info.get('pid')}, "
                    f"{info.get('url')}) with the state directory {self.state_dir}; stop it "
                    "with `devrouter stop`, or set DEVROUTER_HOME to use a separate one"
                )
        try:
            with _address(path) as address:
                self._server = await asyncio.start_unix_server(
                    self._client, path=address, limit=MAX_MESSAGE_BYTES
                )
            os.chmod(path, 0o600)  # the 0700 directory already keeps others out meanwhile
            st = os.stat(path)
        except OSError as exc:
            if self._server is not None:
                self._server.close()
            raise ControlError(f"cannot create the control socket {path}: {exc}") from None
        self._inode = (st.st_dev, st.st_ino)
        write_private(self.state_dir / PID_NAME, f"{os.getpid()}\n")
        self._aliases = self._load_aliases()
        if self._aliases:
            self._rebuild()
        self._watch = asyncio.create_task(self._watch_owners())
        log.info("control socket %s", path)

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.gather(self._watch, return_exceptions=True)
            self._watch = None
        if self._server is not None:
            self._server.close()
            for owner in self._owners:
                if owner.writer is not None:
                    owner.writer.close()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
            self._server = None
            self._remove_own_files()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _remove_own_files(self) -> None:
        path = socket_path(self.state_dir)
        try:
            st = os.stat(path)
            if (st.st_dev, st.st_ino) == self._inode:
                path.unlink()
        except OSError:
            pass
        pid_file = self.state_dir / PID_NAME
        with contextlib.suppress(OSError):
            if pid_file.read_text().strip() == str(os.getpid()):
                pid_file.unlink()

    # -- connections --

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = _peer(writer.get_extra_info("socket"))
        if peer is not None and peer[1] != os.geteuid():
            log.warning("refused a control connection from uid %d", peer[1])
            writer.close()
            return
        owner: _Owner | None = None
        try:
            while True:
                try:
                    line = await reader.readline()
                except ValueError:  # longer than MAX_MESSAGE_BYTES
                    await self._reply(writer, {"ok": False, "error": "message too long"})
                    break
                if not line:
                    break
                try:
                    msg = json.loads(line)
                    if not isinstance(msg, dict):
                        raise ValueError("not an object")
                except ValueError:
                    await self._reply(writer, {"ok": False, "error": "not a JSON object"})
                    break
                if msg.get("op") == "register" and owner is None:
                    pid = peer[0] if peer is not None else msg.get("pid")
                    if isinstance(pid, int) and not isinstance(pid, bool) and pid > 0:
                        owner = _Owner(pid, process_start_time(pid), writer=writer)
                try:
                    reply = self.handle(msg, owner)
                except ControlError as exc:
                    reply = {"ok": False, "error": str(exc)}
                except Exception:  # a bug here must not take the channel down
                    log.exception("control request %r failed", msg.get("op"))
                    reply = {"ok": False, "error": "internal error in the router (see its log)"}
                await self._reply(writer, reply)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            if owner is not None:
                self._disconnected(owner)

    @staticmethod
    async def _reply(writer: asyncio.StreamWriter, reply: Mapping[str, Any]) -> None:
        writer.write(json.dumps(reply, separators=(",", ":")).encode() + b"\n")
        await writer.drain()

    def handle(self, msg: Mapping[str, Any], owner: _Owner | None = None) -> dict[str, Any]:
        """Answer one request; raises ControlError for a refusal."""
        op = msg.get("op")
        if op == "ping":
            return {"ok": True}
        if op == "status":
            return {
                "ok": True,
                "pid": os.getpid(),
                "version": __version__,
                "listen": [str(a) for a in self.listen],
                "port": self.port,
                "url": f"http://localhost:{self.port}",
                "state_dir": str(self.state_dir),
            }
        if op == "list":
            return {"ok": True, **self.describe()}
        if op == "who":
            svc = self.service(check_name(msg.get("name")))
            return {"ok": True, "owner": _service_json(svc) if svc else None}
        if op == "output":
            return {"ok": True, "lines": list(self.output(check_name(msg.get("name"))))}
        if op == "register":
            if owner is None:
                raise ControlError("register needs the pid of the registering process")
            return {"ok": True, "warnings": self._register(owner, msg.get("routes"))}
        if op == "update":
            svc = owner.services.get(str(msg.get("name"))) if owner else None
            if svc is None:
                raise ControlError(f"'{msg.get('name')}' is not registered on this connection")
            _apply_update(svc, msg)
            return {"ok": True}
        if op == "unregister":
            if owner is not None and owner.services:
                log.info("unregistered %s (pid %d)", ", ".join(owner.services), owner.pid)
                owner.services.clear()
                self._rebuild()
            return {"ok": True}
        if op == "alias":
            return {"ok": True, "warnings": self._alias(msg.get("name"), msg.get("port"))}
        if op == "unalias":
            name = check_name(msg.get("name"))
            if self._aliases.pop(name, None) is None:
                raise ControlError(f"there is no alias named '{name}'")
            self._save_aliases()
            self._rebuild()
            return {"ok": True}
        raise ControlError(f"unknown operation {op!r}")

    # -- registrations --

    def _holder(self, name: str, asker: _Owner | None, aliases: bool = True) -> str | None:
        """Who holds `name` (a sentence), dropping a holder that turns out to be dead."""
        for other in list(self._owners):
            svc = other.services.get(name)
            if svc is None or other is asker or other.writer is None:
                continue
            if not process_alive(other.pid, other.started):
                self._dead(other)
                continue
            return (
                f"the name '{name}' is already registered by pid {other.pid} "
                f"(`devrouter {svc.source}`: {svc.command}); stop that first or pick another name"
            )
        if aliases and name in self._aliases:
            return (
                f"the name '{name}' is an alias for port {self._aliases[name]}; remove it with "
                f"`devrouter alias --remove {name}` first"
            )
        return None

    def _register(self, owner: _Owner, raw: object) -> list[str]:
        if not isinstance(raw, list) or not raw:
            raise ControlError("register needs a non-empty list of routes")
        if len(raw) + len(owner.services) > MAX_SERVICES_PER_CONNECTION:
            raise ControlError(f"at most {MAX_SERVICES_PER_CONNECTION} routes per process")
        services: list[Service] = []
        for item in raw:
            if not isinstance(item, dict):
                raise ControlError("each route must be a mapping")
            svc = _service_from(item, owner.pid)
            own = {a.port for a in self.listen}
            if svc.port in own or any(p in own for _, p in svc.paths):
                raise ControlError(
                    f"'{svc.name}' points at devrouter's own port; it would loop back into "
                    "the router"
                )
            if any(s.name == svc.name for s in services) or svc.name in owner.services:
                raise ControlError(f"'{svc.name}' is listed twice")
            held = self._holder(svc.name, owner)
            if held:
                raise ControlError(held)
            services.append(svc)
        for svc in services:
            owner.services[svc.name] = svc
        if owner not in self._owners:
            self._owners.append(owner)
        self._rebuild()
        names = {s.name for s in services}
        warnings = [c for c in self.state.snapshot.conflicts if _conflict_name(c) in names]
        for svc in services:
            log.info("registered %s -> port %d (%s)", svc.name, svc.port, svc.describe())
        for w in warnings:
            log.warning("%s", w)
        return warnings

    def _alias(self, raw_name: object, raw_port: object) -> list[str]:
        name = check_name(raw_name)
        port = _check_port(raw_port)
        if port in {a.port for a in self.listen}:
            raise ControlError(f"port {port} is devrouter's own port; the alias would loop")
        held = self._holder(name, None, aliases=False)
        if held:
            raise ControlError(held)
        self._aliases[name] = port
        self._save_aliases()
        self._rebuild()
        return [c for c in self.state.snapshot.conflicts if _conflict_name(c) == name]

    def _disconnected(self, owner: _Owner) -> None:
        owner.writer = None
        if owner not in self._owners:
            return
        if not process_alive(owner.pid, owner.started):
            self._dead(owner)
            return
        # The process may be dying right now: drop its routes, and keep watching it for a
        # while so that its process groups are still stopped if it turns out to be dead.
        owner.disconnected_at = time.monotonic()
        if any(s.pgid and s.exit_code is None for s in owner.services.values()):
            groups = {n: s for n, s in owner.services.items() if s.pgid and s.exit_code is None}
            owner.services = groups
        else:
            owner.services = {}
            self._owners.remove(owner)
        self._rebuild()

    def _dead(self, owner: _Owner) -> None:
        """The owner process is gone: drop its routes and stop what it left running."""
        if owner in self._owners:
            self._owners.remove(owner)
        for svc in owner.services.values():
            if svc.pgid and svc.exit_code is None and svc.pgid != os.getpgrp():
                log.info(
                    "pid %d (%s) died; stopping its process group %d", owner.pid, svc.name, svc.pgid
                )
                task = asyncio.create_task(_stop_group(svc.pgid))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if owner.services:
            log.info("dropped %s: pid %d is gone", ", ".join(owner.services), owner.pid)
        owner.services = {}
        if owner.writer is not None:
            owner.writer.close()
        self._rebuild()

    def check_owners(self) -> None:
        for owner in list(self._owners):
            if not process_alive(owner.pid, owner.started):
                self._dead(owner)
            elif (
                owner.disconnected_at is not None
                and time.monotonic() - owner.disconnected_at > ORPHAN_WATCH_S
            ):
                self._owners.remove(owner)

    async def _watch_owners(self) -> None:
        while True:
            await asyncio.sleep(LIVENESS_INTERVAL_S)
            try:
                self.check_owners()
            except Exception:  # never let the check die; it is what cleans up
                log.exception("checking registered processes failed")

    def _routes(self) -> list[Route]:
        timeout_s = getattr(self.state.snapshot.config, "timeout_s", DEFAULT_TIMEOUT_S)
        routes = [
            Route(name, Upstream(port), timeout_s=timeout_s, source="alias")
            for name, port in self._aliases.items()
        ]
        for owner in self._owners:
            if owner.writer is None:
                continue  # disconnected: only watched for its process groups
            for svc in owner.services.values():
                paths = tuple(PathRoute(prefix, Upstream(p)) for prefix, p in svc.paths)
                routes.append(
                    Route(
                        svc.name,
                        Upstream(svc.port),
                        paths,
                        timeout_s,
                        source=svc.source,
                        owner_pid=owner.pid,
                        stack=svc.stack,
                    )
                )
        return sorted(routes, key=lambda r: r.name)

    def _rebuild(self) -> None:
        routes = self._routes()
        if tuple(routes) != self.state.dynamic:
            self.state.set_dynamic(routes)

    def describe(self) -> dict[str, Any]:
        """Every route in force, plus the clashes that kept some out (for `devrouter ls`)."""
        snapshot = self.state.snapshot
        out = []
        for route in snapshot.table.routes:
            svc = self.service(route.name) if route.source in ("run", "stack") else None
            out.append(
                {
                    "name": route.name,
                    "url": _url(route.name, self.port),
                    "port": route.upstream.port,
                    "hosts": list(route.upstream.hosts),
                    "paths": [{"prefix": p.prefix, "port": p.upstream.port} for p in route.paths],
                    "source": route.source,
                    "owner_pid": route.owner_pid,
                    "stack": route.stack,
                    "command": svc.command if svc else None,
                    "ready": svc.ready if svc else None,
                    "exit_code": svc.exit_code if svc else None,
                    "listens_on": list(svc.listens_on) if svc else [],
                }
            )
        return {
            "router": {"pid": os.getpid(), "url": f"http://localhost:{self.port}"},
            "routes": out,
            "conflicts": list(snapshot.conflicts),
        }

    # -- aliases on disk --

    def _load_aliases(self) -> dict[str, int]:
        data = read_json(self.state_dir / ALIASES_NAME)
        raw = data.get("aliases") if isinstance(data, dict) else None
        out: dict[str, int] = {}
        for name, port in (raw or {}).items() if isinstance(raw, dict) else ():
            try:
                out[check_name(name)] = _check_port(port)
            except ControlError as exc:
                log.warning("ignoring alias %r in %s: %s", name, ALIASES_NAME, exc)
        return out

    def _save_aliases(self) -> None:
        body = {"aliases": dict(sorted(self._aliases.items()))}
        write_private(self.state_dir / ALIASES_NAME, json.dumps(body, indent=2) + "\n")


def _url(name: str, port: int) -> str:
    return f"http://{name}.localhost:{port}/"


def _conflict_name(message: str) -> str:
    match = re.match(r"route '([^']+)'", message)
    return match.group(1) if match else ""


def _service_json(svc: Service) -> dict[str, Any]:
    return {
        "name": svc.name,
        "port": svc.port,
        "pid": svc.owner_pid,
        "source": svc.source,
        "stack": svc.stack,
        "command": svc.command,
        "listens_on": list(svc.listens_on),
    }


async def _stop_group(pgid: int) -> None:
    """SIGTERM a process group, then SIGKILL whatever is left after KILL_GRACE_S."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except (ProcessLookupError, PermissionError):
            return
        deadline = time.monotonic() + KILL_GRACE_S
        while time.monotonic() < deadline:
            await asyncio.sleep(0.1)
            if not group_alive(pgid):
                return


# --- the client side ----------------------------------------------------------------------


def _encode(op: str, fields: Mapping[str, Any]) -> bytes:
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    if not line:
        raise ControlError("the router closed the control connection")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError("the router sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError("the router sent a reply that is not an object")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply


def call(
    directory: Path, op: str, *, timeout_s: float = CALL_TIMEOUT_S, **fields: Any
) -> dict[str, Any]:
    """One request on a fresh connection (blocking). Raises RouterNotRunning or ControlError."""
    path = socket_path(directory)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            with _address(path) as address:
                s.connect(address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise RouterNotRunning(f"no router is running (no answer on {path})") from None
        except OSError as exc:
            raise RouterNotRunning(f"cannot reach the router on {path}: {exc}") from None
        try:
            s.sendall(_encode(op, fields))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"the router did not answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the control connection: {exc}") from None
    return _decode(data)


def status(directory: Path) -> dict[str, Any] | None:
    """The running router's status, or None if none answers."""
    try:
        return call(directory, "status", timeout_s=2.0)
    except ControlError:
        return None


class Channel:
    """A persistent asyncio connection; requests are answered in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, directory: Path) -> Channel:
        path = socket_path(directory)
        try:
            with _address(path) as address:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(address, limit=MAX_MESSAGE_BYTES), CALL_TIMEOUT_S
                )
        except (OSError, TimeoutError) as exc:
            raise RouterNotRunning(f"no router is running ({path}: {exc})") from None
        return cls(reader, writer)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        async with self._lock:
            try:
                self._writer.write(_encode(op, fields))
                await self._writer.drain()
                line = await asyncio.wait_for(self._reader.readline(), CALL_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ControlError(f"lost the control connection: {exc}") from None
        return _decode(line)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


#: Client timing, in seconds: how often changes are sent, how long an idle connection goes
#: without a ping, and the pause between reconnection attempts.
FLUSH_INTERVAL_S = 0.25
PING_INTERVAL_S = 2.0
RECONNECT_INTERVAL_S = 2.0


class Registration:
    """The client end for `run` and `up`: registers services, sends their progress, and if the
    router goes away, registers them again with whichever router comes back.

    `services` are dicts with name, port, paths, command, source and stack."""

    def __init__(
        self, directory: Path, services: Iterable[Mapping[str, Any]], report: Any = None
    ) -> None:
        self.directory = directory
        self._services = {str(s["name"]): dict(s) for s in services}
        self._pending: dict[str, dict[str, Any]] = {}
        self._channel: Channel | None = None
        self._report = report if callable(report) else (lambda text: None)

    def _full(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._services.values()]

    async def open(self) -> list[str]:
        """Register; returns warnings (clashes with the config). Raises ControlError."""
        channel = await Channel.open(self.directory)
        try:
            reply = await channel.call("register", routes=self._full(), pid=os.getpid())
        except BaseException:
            await channel.close()
            raise
        self._channel = channel
        self._pending.clear()
        return [str(w) for w in reply.get("warnings", [])]

    def update(self, name: str, **fields: Any) -> None:
        """Record a change; it is sent within FLUSH_INTERVAL_S (and kept for re-registration)."""
        svc = self._services[name]
        pending = self._pending.setdefault(name, {})
        for key, value in fields.items():
            if key == "lines":
                kept = [*svc.get("lines", []), *value][-OUTPUT_LINES:]
                svc["lines"] = kept
                pending["lines"] = [*pending.get("lines", []), *value][-OUTPUT_LINES:]
            else:
                svc[key] = value
                pending[key] = value

    async def flush(self) -> None:
        if self._channel is None:
            return
        pending, self._pending = self._pending, {}
        for name, fields in pending.items():
            await self._channel.call("update", name=name, **fields)

    async def run(self, stop: asyncio.Event) -> None:
        """Send changes and pings until `stop`; reconnect when the router goes away."""
        idle = 0.0
        while not stop.is_set():
            await sleep_or_stop(stop, FLUSH_INTERVAL_S)
            if stop.is_set():
                break
            try:
                if self._channel is None:
                    idle += FLUSH_INTERVAL_S
                    if idle >= RECONNECT_INTERVAL_S:
                        idle = 0.0
                        await self._reconnect()
                    continue
                if self._pending:
                    idle = 0.0
                    await self.flush()
                else:
                    idle += FLUSH_INTERVAL_S
                    if idle >= PING_INTERVAL_S:
                        idle = 0.0
                        await self._channel.call("ping")
            except ControlError as exc:
                if self._channel is not None:
                    await self._channel.close()
                    self._channel = None
                    self._report(
                        f"lost the router ({exc}); {', '.join(self._services)} will be "
                        "registered again when a router is running"
                    )

    async def _reconnect(self) -> None:
        try:
            warnings = await self.open()
        except RouterNotRunning:
            return
        except ControlError as exc:
            self._report(f"could not register again: {exc}")
            return
        self._report(f"registered {', '.join(self._services)} with the router again")
        for w in warnings:
            self._report(w)

    async def close(self) -> None:
        """Send what is pending, unregister (a clean exit) and disconnect."""
        if self._channel is None:
            return
        with contextlib.suppress(ControlError):
            await self.flush()
            await self._channel.call("unregister")
        await self._channel.close()
        self._channel = None
