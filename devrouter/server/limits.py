"""The router-wide connection limit, and the open-file budget it has to fit in.

Each proxied client connection holds two file descriptors (the client's and the backend's),
so the limit that protects the router is one on client connections: past
`max_connections`, a new connection gets a short 503 and is closed, while the connections
already open keep being served. The per-route limit (requests in flight to one route) is
checked by the request handlers, where the route is known.

The check is in the protocol factory: when the loop accepts a socket it asks the server for a
protocol, and a full server hands out `Refused` instead of a request handler. Refused
connections are not counted and live at most REFUSED_LINGER_S.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from ..core.state import State

log = logging.getLogger("devrouter")

#: Descriptors kept back from the connection budget: config watching, the control socket,
#: health probes, the access log, listening sockets.
RESERVED_FDS = 64
#: The soft open-file limit is raised to at most this at start-up (the hard limit permitting).
WANTED_FDS = 65536
#: A refused connection is closed this long after its 503, in seconds, or when the client
#: closes first; reading (and discarding) until then keeps the kernel from resetting the
#: connection before the client has read the answer.
REFUSED_LINGER_S = 2.0
#: At most one "connection limit reached" warning in this many seconds.
WARN_EVERY_S = 10.0


def raise_fd_limit() -> int:
    """Raise the soft RLIMIT_NOFILE towards WANTED_FDS; returns the soft limit in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = WANTED_FDS if hard == resource.RLIM_INFINITY else min(hard, WANTED_FDS)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return WANTED_FDS if soft == resource.RLIM_INFINITY else soft


def connection_budget(fd_limit: int) -> int:
    """Client connections that fit in `fd_limit` descriptors (two each, some kept back)."""
    return max(16, (fd_limit - RESERVED_FDS) // 2)


def busy_response(open_now: int, limit: int, source: str) -> bytes:
    body = (
        f"devrouter: 503 Too many connections: {open_now} client connections are open, the "
        f"limit (max_connections: {limit}). Close idle clients, or raise max_connections in "
        f"{source}.\n"
    ).encode()
    return (
        b"HTTP/1.1 503 Service Unavailable\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\n"
        b"Content-Length: %d\r\n"
        b"Retry-After: 2\r\nCache-Control: no-store\r\nX-Devrouter-Error: 503\r\n"
        b"Connection: close\r\n\r\n%b" % (len(body), body)
    )


class Refused(asyncio.Protocol):
    """Answers 503 at once, half-closes, and discards what the client sends until it closes
    (or REFUSED_LINGER_S passes)."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.transport: asyncio.Transport | None = None
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # a cast, not an isinstance assertion: uvloop's transports are not asyncio.Transport
        self.transport = transport = cast(asyncio.Transport, transport)
        transport.write(self.response)
        if transport.can_write_eof():
            transport.write_eof()
        self.timer = asyncio.get_running_loop().call_later(REFUSED_LINGER_S, transport.close)

    def data_received(self, data: bytes) -> None:
        pass  # the answer does not depend on the request

    def eof_received(self) -> bool | None:
        return False  # close

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


#: Idle keep-alive connections, and clients that trickle their headers, are closed after
#: this many seconds.
KEEPALIVE_TIMEOUT_S = 15.0
MAX_REQUEST_LINE_BYTES = 8190
MAX_HEADER_FIELD_BYTES = 8190
MAX_HEADERS = 100
#: What aiohttp reads from a socket at a time, in bytes.
READ_BUFSIZE_BYTES = 256 * 1024


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What the router's HTTP server allows, for both engines: the fast path applies the
    same limits to the heads it reads, and hands oversize ones to aiohttp to refuse."""

    fd_budget: int  # client connections the open-file limit can hold (connection_budget)
    keepalive_timeout_s: float = KEEPALIVE_TIMEOUT_S
    max_line_bytes: int = MAX_REQUEST_LINE_BYTES
    max_field_bytes: int = MAX_HEADER_FIELD_BYTES
    max_headers: int = MAX_HEADERS
    read_bufsize_bytes: int = READ_BUFSIZE_BYTES

    def aiohttp_kwargs(self) -> dict[str, Any]:
        """The same limits as aiohttp's `web.Server` takes them."""
        return {
            "keepalive_timeout": self.keepalive_timeout_s,
            "max_line_size": self.max_line_bytes,
            "max_field_size": self.max_field_bytes,
            "max_headers": self.max_headers,
            "read_bufsize": self.read_bufsize_bytes,
        }


class LimitedServer(web.Server):
    """aiohttp's low-level server with the router-wide connection limit.

    The limit is read from the live config on every accept, so a reload changes it; it is
    capped by what the open-file limit can hold (`limits.fd_budget`).
    """

    def __init__(self, handler: Any, *, state: State, limits: HttpLimits, **kwargs: Any) -> None:
        super().__init__(handler, **limits.aiohttp_kwargs(), **kwargs)
        self.state = state
        self.limits = limits
        self.fd_budget = limits.fd_budget
        self._warned_at = float("-inf")
        #: Client connections held elsewhere that count toward the limit (the HTTP/2 engine's;
        #: each of its streams also holds one of this server's connections, a lane).
        self.elsewhere: Callable[[], int] = lambda: 0

    def open_connections(self) -> int:
        return len(self._connections)

    def limit(self) -> int:
        """The connection limit in force: the live config's, capped by the fd budget."""
        return min(self.state.snapshot.config.max_connections, self.fd_budget)

    def full(self) -> bool:
        """The limit is reached, counting this server's connections and those elsewhere."""
        return self.open_connections() + self.elsewhere() >= self.limit()

    def __call__(self) -> Any:
        limit = self.limit()
        open_now = self.open_connections() + self.elsewhere()
        if open_now >= limit:
            now = time.monotonic()
            if now - self._warned_at >= WARN_EVERY_S:
                self._warned_at = now
                log.warning(
                    "%d client connections are open, the limit (max_connections %d): new ones "
                    "get a 503 until some close",
                    open_now,
                    limit,
                )
            return Refused(busy_response(open_now, limit, self.state.snapshot.config.source))
        return self.make_protocol()

    def make_protocol(self) -> asyncio.Protocol:
        protocol: asyncio.Protocol = super().__call__()
        return protocol
