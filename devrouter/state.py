"""The live snapshot: one immutable (config, route table) pair, swapped whole on reload.

A request reads `State.snapshot` once and keeps that object, so it sees either the old
table or the new one, never a mix; replacing the attribute is a single assignment on the
event loop thread, so no lock is needed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .config import Config
from .routes import RouteTable


@dataclass(frozen=True, slots=True)
class Snapshot:
    config: Config
    table: RouteTable
    generation: int
    loaded_at: float = field(default_factory=time.time)  # wall clock, seconds since epoch


class State:
    def __init__(self, config: Config) -> None:
        self.snapshot = Snapshot(config, RouteTable.build(config.routes), generation=1)
        self.last_error: str | None = None

    def swap(self, config: Config) -> Snapshot:
        """Build the new table completely, then publish it with one assignment."""
        new = Snapshot(config, RouteTable.build(config.routes), self.snapshot.generation + 1)
        self.snapshot = new
        self.last_error = None
        return new
