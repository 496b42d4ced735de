"""Health probes: is anything listening on each route's port? (Stub: filled in by the
dashboard work; the interface is what the rest of the router relies on.)"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from .config import Upstream
from .state import State


@dataclass(frozen=True, slots=True)
class Probe:
    up: bool
    detail: str  # "listening on 127.0.0.1:4001" / "nothing is listening on ..."
    checked_at: float  # wall clock


class Health:
    def __init__(self, state: State) -> None:
        self.state = state
        self.results: dict[Upstream, Probe] = {}

    def touch(self) -> None:
        """Someone is looking (the dashboard or its API was read): keep probing."""

    def traffic(self) -> None:
        """Requests are flowing: keep probing."""

    def status(self, upstream: Upstream) -> Probe | None:
        return self.results.get(upstream)

    async def run(self, stop: asyncio.Event) -> None:
        await stop.wait()
