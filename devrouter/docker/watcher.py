"""Watching the Docker Engine: its running containers become routes, live.

Theory of operation (after Traefik's Docker provider): find the Engine's socket
(devrouter.docker.sockets), subscribe to its container events, then list every running
container and give the routes of devrouter.docker.naming to `State.set_docker`. Each event
that can change a route (start, die, rename, health ...) marks the list stale; one list is
made per burst of events (DEBOUNCE_S), so a `compose up` of ten services costs a few calls,
and a rename or a port change needs no rule of its own: the new list says it all.

When the Engine goes away (the stream ends or a call fails), its routes are dropped (its
containers and their published ports went with it) and every other route stays. The socket
is tried again with back-off, and every (re)connect starts with a full list. A change of the
config's `docker:` section restarts the whole cycle with the new settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..aio import sleep_or_stop
from ..core.model import ContainerRef, DockerSettings
from ..core.state import State
from .containers import event_matters
from .engine import Engine, EngineError
from .naming import DockerPlan, Placement, plan
from .sockets import candidates, describe, find_socket

log = logging.getLogger("devrouter.docker")

#: Events that arrive within this many seconds of each other are answered with one list.
DEBOUNCE_S = 0.05
#: Back-off between attempts to reach the Engine, in seconds: doubled from MIN up to MAX.
#: MAX is small because an attempt is one stat() of a socket path, or one failed connect.
BACKOFF_MIN_S = 0.25
BACKOFF_MAX_S = 5.0
#: How often a change of the config's `docker:` section is looked for, in seconds.
SETTINGS_CHECK_S = 0.5


@dataclass
class DockerReport:
    """What the watcher knows, for the dashboard, `ls` and `doctor`."""

    # "starting"; "connected"; "absent": no Engine socket on this machine (most have none);
    # "unreachable": a socket that does not answer as an Engine; "off": `docker: false`
    state: str = "starting"
    socket: str | None = None
    api_version: str | None = None
    detail: str | None = None  # why it is absent, unreachable or off
    since: float = field(default_factory=time.time)
    placements: tuple[Placement, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "socket": self.socket,
            "api_version": self.api_version,
            "detail": self.detail,
            "since": round(self.since, 3),
            "containers": [_placement_json(p) for p in self.placements],
        }


def container_json(ref: ContainerRef | None) -> dict[str, Any] | None:
    """A container as /api/status, `ls` and `doctor` show it (a route's, or a running one)."""
    if ref is None:
        return None
    return {
        "id": ref.short_id,
        "name": ref.name,
        "image": ref.image,
        "project": ref.project,
        "service": ref.service,
        "health": ref.health,
    }


def _placement_json(p: Placement) -> dict[str, Any]:
    c = p.container
    return {
        **(container_json(c.ref) or {}),
        "state": c.state,
        "names": list(p.names) if p.routed else [],
        "target": p.upstream.describe() if p.upstream is not None else None,
        "reason": p.reason,
        "deliberate": p.deliberate,
        "note": p.note,
    }


def _with_runtime_dir(env: Mapping[str, str]) -> Mapping[str, str]:
    """`env`, with XDG_RUNTIME_DIR set to /run/user/UID where it is missing and that exists:
    a router started by a system unit has no session, yet rootless Docker's and Podman's
    sockets are there."""
    if env.get("XDG_RUNTIME_DIR"):
        return env
    runtime = Path(f"/run/user/{os.getuid()}")
    return {**env, "XDG_RUNTIME_DIR": str(runtime)} if runtime.is_dir() else env


class DockerWatcher:
    def __init__(
        self, state: State, env: Mapping[str, str] | None = None, home: Path | None = None
    ) -> None:
        self.state = state
        self.env = _with_runtime_dir(os.environ) if env is None else env
        self.home = Path.home() if home is None else home
        self.report = DockerReport()
        self._plan = DockerPlan()

    async def run(self, stop: asyncio.Event) -> None:
        """Until `stop`: one cycle per value of the config's `docker:` section."""
        try:
            while not stop.is_set():
                settings = self.state.snapshot.config.docker
                cycle = asyncio.create_task(self._cycle(settings))
                while not stop.is_set() and not cycle.done():
                    await sleep_or_stop(stop, SETTINGS_CHECK_S)
                    if self.state.snapshot.config.docker != settings:
                        log.info("the config's docker section changed; watching again")
                        break
                cycle.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await cycle
        finally:
            self._apply(DockerPlan())

    async def _cycle(self, settings: DockerSettings) -> None:
        if not settings.enabled:
            self._set("off", detail="docker: false in the config")
            self._apply(DockerPlan())
            await asyncio.Event().wait()  # until the settings change
        delay_s = BACKOFF_MIN_S
        found = candidates(settings, self.env, self.home)
        while True:
            path = find_socket(found) if found.problem is None else None
            if path is None:
                absent = found.problem is None
                self._lost(found.problem or f"no Docker Engine socket at {describe(found)}", absent)
            else:
                try:
                    async with Engine(path) as engine:
                        await engine.ping()
                        delay_s = BACKOFF_MIN_S  # it answered: if it goes, try again soon
                        await self._follow(engine, settings)
                    self._lost(f"the Engine at {path} ended its event stream (it stopped)")
                except EngineError as exc:
                    self._lost(str(exc))
                except Exception as exc:  # a bug of ours must not end the watching for good
                    log.exception("docker: watching the Engine at %s failed", path)
                    self._lost(f"watching the Engine at {path} failed ({exc!r}); retrying")
            await asyncio.sleep(delay_s)
            delay_s = min(delay_s * 2, BACKOFF_MAX_S)

    async def _follow(self, engine: Engine, settings: DockerSettings) -> None:
        """Subscribe, list, and list again after each burst of events, until the stream
        ends (returns) or breaks (EngineError)."""
        stale = asyncio.Event()
        stale.set()  # the first list, right after subscribing

        async def read(stream: Any) -> None:
            async for event in stream:
                if event_matters(event):
                    stale.set()

        async def relist() -> None:
            while True:
                await stale.wait()
                await asyncio.sleep(DEBOUNCE_S)
                stale.clear()
                containers = await engine.containers()
                self._apply(plan(containers, settings, self.state.snapshot.config.timeout_s))
                if self.report.state != "connected":
                    self._set("connected", str(engine.socket), engine.version)

        async with engine.event_stream() as stream:
            tasks = {asyncio.create_task(read(stream)), asyncio.create_task(relist())}
            try:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            for task in done:
                task.result()  # raises the EngineError that ended it

    def _apply(self, new: DockerPlan) -> None:
        self.report.placements = new.placements
        if new.routes != self._plan.routes or new.conflicts != self._plan.conflicts:
            self.state.set_docker(new.routes, new.conflicts)
            added = {r.name for r in new.routes} - {r.name for r in self._plan.routes}
            gone = {r.name for r in self._plan.routes} - {r.name for r in new.routes}
            for name in sorted(added):
                log.info("docker: %s.localhost", name)
            for name in sorted(gone):
                log.info("docker: %s.localhost is gone", name)
        self._plan = new

    def _lost(self, detail: str, absent: bool = False) -> None:
        self._apply(DockerPlan())
        state = "absent" if absent else "unreachable"
        if self.report.state == state and self.report.detail == detail:
            return
        was_connected = self.report.state == "connected"
        self._set(state, self.report.socket if was_connected else None, detail=detail)
        # Most machines have no Docker at all: only a change worth knowing is logged above
        # debug (an Engine that went away, or one that is there but refuses us).
        level = logging.WARNING if was_connected or "permission" in detail else logging.DEBUG
        log.log(level, "docker: %s", detail)

    def _set(
        self,
        state: str,
        socket: str | None = None,
        api_version: str | None = None,
        detail: str | None = None,
    ) -> None:
        if state == "connected":
            log.info("docker: watching the Engine at %s (API %s)", socket, api_version or "?")
        r = self.report
        r.state, r.socket, r.api_version, r.detail = state, socket, api_version, detail
        r.since = time.time()
