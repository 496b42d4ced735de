"""The live snapshot: one immutable (config, route table) pair, swapped whole on change.

A request reads `State.snapshot` once and keeps that object, so it sees either the old
table or the new one, never a mix; replacing the attribute is a single assignment on the
event loop thread, so no lock is needed.

Each route in the table carries its effective access rule and connection limit (the
config's top-level ones where the route sets none).

Routes come from two places: the config file (`swap`) and processes that register names
while they run (`set_dynamic`: `devrouter run`, stacks, aliases). Both are merged into one
table; a dynamic route whose name the config file also has is not installed, and the clash
is reported in `conflicts`, never silently resolved.
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

    def _build(self, config: Config, generation: int, loaded_at: float | None = None) -> Snapshot:
        names = {r.name for r in config.routes}
        merged = list(config.routes)
        conflicts: list[str] = []
        for route in self.dynamic:
            if route.name in names:
                owner = f" (pid {route.owner_pid})" if route.owner_pid else ""
                conflicts.append(
                    f"route '{route.name}' from `devrouter {route.source}`{owner} clashes with "
                    f"the one in {config.source}; the config file's route is in use"
                )
                continue
            names.add(route.name)
            merged.append(route)
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
