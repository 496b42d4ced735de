"""The registration channel, router side: how `devrouter run`, `up` and `alias` change the
router's routes.

Theory of operation: the router listens on a unix stream socket, `control.sock` in the state
directory. The directory is mode 0700 and the socket 0600, and on Linux every connection's
peer credentials are checked too, so only the user who runs the router can reach it. A web
page cannot open a unix socket, and no HTTP endpoint of the router changes anything: this
socket is the only way in. The protocol (JSON lines, one reply per request) and its client
are in devrouter.services.client.

Registrations are tied to the registering process (its pid comes from the kernel, not the
message, where the OS tells it). They are dropped when its connection closes, and a liveness
check every LIVENESS_INTERVAL_S drops any whose process has died (a zombie or a reused pid
counts as dead). If the process died without unregistering (it was SIGKILLed), the process
groups it had started are sent SIGTERM, then SIGKILL (devrouter.services.procs.stop_group),
so a killed `devrouter run` leaves no server behind.

The router side owns `State.dynamic`: every change rebuilds the dynamic route list and hands
it to `State.set_dynamic`, which keeps the config file's routes and reports clashes. Aliases
are routes to ports devrouter does not start; they are kept in `aliases.json`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import socket
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..core.model import DEFAULT_PORT, DEFAULT_TIMEOUT_S, ListenAddr, PathRoute, Route, Upstream
from ..core.state import State
from ..core.urls import name_url
from ..docker.watcher import DockerReport, container_json
from .client import (
    MAX_MESSAGE_BYTES,
    Channel,
    ControlError,
    RouterNotRunning,
    check_name,
    socket_address,
    socket_path,
)
from .ports import StateDirError, ensure_state_dir, read_json, write_private
from .procs import process_alive, process_start_time, stop_group
from .registry import Service, apply_update, check_port, service_from, service_json

log = logging.getLogger("devrouter.control")

PID_NAME = "router.pid"
ALIASES_NAME = "aliases.json"
#: How often the owners of registrations are checked for life, in seconds.
LIVENESS_INTERVAL_S = 1.0
#: A connection that closed while its process still lived is watched this long, in seconds,
#: in case the process is in the middle of dying.
ORPHAN_WATCH_S = 10.0
MAX_SERVICES_PER_CONNECTION = 64


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


@dataclass(eq=False)
class _Owner:
    pid: int
    started: str | None
    services: dict[str, Service] = field(default_factory=dict)
    writer: asyncio.StreamWriter | None = None
    disconnected_at: float | None = None


class ControlServer:
    """The router end of the channel. `listen` is set by the router once it has bound."""

    def __init__(self, state: State, state_dir: Path, docker: DockerReport | None = None) -> None:
        self.state = state
        self.docker = docker  # what the Docker watcher knows, for `ls`
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
            with socket_address(path) as address:
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
                "url": name_url(None, self.port),
                "state_dir": str(self.state_dir),
            }
        if op == "list":
            return {"ok": True, **self.describe()}
        if op == "who":
            svc = self.service(check_name(msg.get("name")))
            return {"ok": True, "owner": service_json(svc) if svc else None}
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
            apply_update(svc, msg)
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
            svc = service_from(item, owner.pid)
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
        port = check_port(raw_port)
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
                task = asyncio.create_task(stop_group(svc.pgid))
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
                    "container": container_json(route.container),
                }
            )
        return {
            "router": {"pid": os.getpid(), "url": name_url(None, self.port)},
            "routes": out,
            "conflicts": list(snapshot.conflicts),
            "docker": self.docker.as_json() if self.docker is not None else None,
        }

    # -- aliases on disk --

    def _load_aliases(self) -> dict[str, int]:
        data = read_json(self.state_dir / ALIASES_NAME)
        raw = data.get("aliases") if isinstance(data, dict) else None
        out: dict[str, int] = {}
        for name, port in (raw or {}).items() if isinstance(raw, dict) else ():
            try:
                out[check_name(name)] = check_port(port)
            except ControlError as exc:
                log.warning("ignoring alias %r in %s: %s", name, ALIASES_NAME, exc)
        return out

    def _save_aliases(self) -> None:
        body = {"aliases": dict(sorted(self._aliases.items()))}
        write_private(self.state_dir / ALIASES_NAME, json.dumps(body, indent=2) + "\n")


def _url(name: str, port: int) -> str:
    return name_url(name, port, path="/")


def _conflict_name(message: str) -> str:
    match = re.match(r"route '([^']+)'", message)
    return match.group(1) if match else ""
