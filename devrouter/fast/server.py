"""The fast path's server: aiohttp's low-level server whose connections start on the fast path."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiohttp import web

from ..core.model import Route
from ..core.routes import HostError, parse_host, route_name
from ..core.state import Snapshot, State
from ..observe.metrics import Metrics
from ..server.limits import HttpLimits, LimitedServer
from ..server.strictgate import StrictGate
from ..server.upstream import (
    HostPreference,
)
from ..web.pages import ServiceDirectory
from .client import ClientConnection
from .pool import Pool

log = logging.getLogger("devrouter.proxy")


class FastServer(LimitedServer):
    """aiohttp's low-level server whose connections start on the fast path.

    Subclassing aiohttp's `web.Server` (through LimitedServer) keeps aiohttp's runner and
    sites (binding, shutdown) working; `aio_protocol()` makes the aiohttp connection handler
    a hand-off needs.
    """

    def __init__(
        self,
        handler: Any,
        *,
        state: State,
        limits: HttpLimits,
        prefer: HostPreference,
        metrics: Metrics,
        gated: bool = False,
        control: ServiceDirectory | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(handler, state=state, limits=limits, **kwargs)
        self.loop = asyncio.get_running_loop()
        self.control = control
        self.gated = gated  # aiohttp's parser is the pure-Python one: check with llhttp first
        self.state = state
        self.metrics = metrics
        self.prefer = prefer
        self.pool = Pool(self.loop)
        self.fast_connections: set[ClientConnection] = set()
        self.keepalive_timeout_s = limits.keepalive_timeout_s
        # the same limits aiohttp applies to what it parses: oversize heads are its to refuse
        self.max_headers = limits.max_headers
        self.max_line = min(limits.max_line_bytes, limits.max_field_bytes)
        self._snapshot: Snapshot | None = None
        self._routes: dict[bytes, Route | None] = {}
        self._drained: asyncio.Event | None = None

    def open_connections(self) -> int:
        return len(self._connections) + len(self.fast_connections)

    def make_protocol(self) -> asyncio.Protocol:
        return ClientConnection(self)

    def aio_protocol(self) -> asyncio.Protocol:
        """aiohttp's handler for a connection handed off (already counted, never refused)."""
        protocol: asyncio.Protocol = web.Server.__call__(self)
        return StrictGate(protocol) if self.gated else protocol

    def lookup(self, host: bytes) -> Route | None:
        """The route for a Host value, cached per snapshot; None sends the request to aiohttp
        (malformed, not ours, own pages, unknown names)."""
        snapshot = self.state.snapshot
        if snapshot is not self._snapshot:
            self._snapshot = snapshot
            self._routes = {}
        try:
            return self._routes[host]
        except KeyError:
            pass
        try:
            name = route_name(parse_host(host.decode("ascii")))
        except (HostError, UnicodeDecodeError):
            name = None
        route = snapshot.table.lookup(name) if name and name != "devrouter" else None
        if len(self._routes) < 1024:
            self._routes[host] = route
        return route

    def pre_shutdown(self) -> None:
        super().pre_shutdown()
        for conn in list(self.fast_connections):
            if conn.relay is not None:
                conn.relay.shutdown()
            conn.close_when_idle()

    def forget(self, conn: ClientConnection) -> None:
        self.fast_connections.discard(conn)
        if not self.fast_connections and self._drained is not None:
            self._drained.set()

    async def shutdown(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 (base API)
        """Let in-flight fast-path exchanges finish within `timeout` seconds, then cut."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or 0)
        if self.fast_connections:
            self._drained = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), timeout)
        for conn in list(self.fast_connections):
            conn.abort()
        self.pool.close()
        await super().shutdown(max(0.0, deadline - loop.time()))
