"""The live snapshot: one immutable (config, route table) pair, swapped whole on change.

A request reads `State.snapshot` once and keeps that object, so it sees either the old
table or the new one, never a mix; replacing the attribute is a single assignment on the
event loop thread, so no lock is needed.

Each route in the table carries its effective access rule and connection limit (the
config's top-level ones where the route sets none).

Routes come from three places: the config file (`swap`), processes that register names
while they run (`set_dynamic`: `devrouter run`, stacks, aliases), and running Docker
containers (`set_docker`, devrouter.docker). They are merged into one table in that order
of precedence; a route whose name an earlier source already has is not installed, and the
clash is reported in `conflicts`, never silently resolved.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from .model import Config, Route
from .routes import RouteTable


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    table: RouteTable
    generation: int
    loaded_at: float = field(default_factory=time.time)  # wall clock, seconds since epoch
    conflicts: tuple[str, ...] = ()


class State:
    def __init__(self, config: Config) -> None:
        self.dynamic: tuple[Route, ...] = ()
        self.docker: tuple[Route, ...] = ()
        self.docker_conflicts: tuple[str, ...] = ()  # clashes among containers themselves
        self.last_error: str | None = None
        self.snapshot = self._build(config, generation=1)

    def swap(self, config: Config) -> Snapshot:
        """Build the new table completely, then publish it with one assignment."""
        self.snapshot = self._build(config, self.snapshot.generation + 1)
        self.last_error = None
        return self.snapshot

    def set_dynamic(self, routes: Iterable[Route]) -> Snapshot:
        """Replace the routes registered by running processes; keeps the config's."""
        self.dynamic = tuple(routes)
        self.snapshot = self._build(
            self.snapshot.config, self.snapshot.generation + 1, self.snapshot.loaded_at
        )
        return self.snapshot

    def set_docker(self, routes: Iterable[Route], conflicts: Iterable[str] = ()) -> Snapshot:
        """Replace the routes of running containers; `conflicts` are the clashes among the
        containers themselves (devrouter.docker.naming decided those)."""
        self.docker = tuple(routes)
        self.docker_conflicts = tuple(conflicts)
        self.snapshot = self._build(
            self.snapshot.config, self.snapshot.generation + 1, self.snapshot.loaded_at
        )
        return self.snapshot

    def _build(self, config: Config, generation: int, loaded_at: float | None = None) -> Snapshot:
        owners = {r.name: r for r in config.routes}
        merged = list(config.routes)
        conflicts: list[str] = []
        for route in (*self.dynamic, *self.docker):
            holder = owners.get(route.name)
            if holder is not None:
                conflicts.append(
                    f"route '{route.name}' {_origin(route)} clashes with the one "
                    f"{_origin(holder, config.source)}; the {_kind(holder)} route is in use"
                )
                continue
            owners[route.name] = route
            merged.append(route)
        conflicts.extend(self.docker_conflicts)
        return Snapshot(
            config,
            RouteTable.build([_effective(r, config) for r in merged]),
            generation,
            time.time() if loaded_at is None else loaded_at,
            tuple(conflicts),
        )


def _effective(route: Route, config: Config) -> Route:
    """The route with the config's top-level access and limits where it sets none, so a
    request reads one field: `route.access` None means open."""
    access = config.access if route.access is None else route.access
    if access is not None and access.is_off:
        access = None
    limit = route.max_connections or config.max_connections_per_route
    ws_mib = route.max_websocket_message_mib or config.max_websocket_message_mib
    if (
        access is route.access
        and limit == route.max_connections
        and ws_mib == route.max_websocket_message_mib
    ):
        return route
    return dataclasses.replace(
        route, access=access, max_connections=limit, max_websocket_message_mib=ws_mib
    )


def _origin(route: Route, config_source: str = "") -> str:
    """Where a route came from, in the words of a clash message."""
    if route.source == "config":
        return f"in {config_source or 'the config file'}"
    if route.container is not None:
        return f"from Docker container {route.container.name}"
    owner = f" (pid {route.owner_pid})" if route.owner_pid else ""
    return f"from `devrouter {route.source}`{owner}"


def _kind(route: Route) -> str:
    if route.source == "config":
        return "config file's"
    if route.container is not None:
        return "container's"
    return f"`devrouter {route.source}`"
