"""Idle keep-alive connections to backends, per address, for the fast path."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .upstream import UpstreamConnection

log = logging.getLogger("devrouter.proxy")

#: Idle pooled connections kept per upstream address.
MAX_IDLE_PER_UPSTREAM = 64


class Pool:
    """Idle keep-alive connections per upstream address."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop  # asyncio.get_running_loop() costs a getpid() system call
        self.idle: dict[tuple[str, int], list[UpstreamConnection]] = {}

    def get(self, key: tuple[str, int]) -> UpstreamConnection | None:
        conns = self.idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.usable():
                return conn
        return None

    def put(self, conn: UpstreamConnection) -> None:
        conns = self.idle.setdefault(conn.key, [])
        if len(conns) >= MAX_IDLE_PER_UPSTREAM:
            conn.close()
            return
        conns.append(conn)
        conn.start_idle_timer()

    def discard(self, conn: UpstreamConnection) -> None:
        conns = self.idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)

    def close(self) -> None:
        for conns in self.idle.values():
            for conn in conns:
                conn.close()
        self.idle.clear()
