"""The router's own pages on http://localhost:PORT/ (stub: filled in by the dashboard work)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from aiohttp import hdrs, web

from .config import ListenAddr
from .health import Health
from .metrics import Metrics
from .pages import index_response
from .state import State


@dataclass
class Context:
    state: State
    metrics: Metrics
    health: Health
    listen: Sequence[ListenAddr] = ()
    started: float = field(default_factory=time.time)


async def handle(
    request: web.BaseRequest, ctx: Context, target: str, port: int
) -> web.StreamResponse:
    """Answer a request to one of the router's own names; read-only, no CORS."""
    snapshot = ctx.state.snapshot
    return index_response(
        snapshot.table.routes, request.headers.get(hdrs.ACCEPT, ""), port, snapshot.config.source
    )
