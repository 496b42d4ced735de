"""The client side: one pooled aiohttp session, set up for a proxy, and the one place where
upstream failures become `devrouter.core.errors` types.

aiohttp's client defaults are right for an application and wrong for a proxy
(../shared/security-catalog.md, "aiohttp settings"): it would decompress bodies, follow
redirects, keep cookies, add Accept/User-Agent headers, read proxy settings from the
environment, cap the pool at 100 connections and cut every request after 300 s. Each of
those is turned off here.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import aiohttp
from aiohttp import hdrs

from ..core.errors import BadGateway, GatewayTimeout
from ..core.model import Upstream

log = logging.getLogger("devrouter.upstream")

#: Time to open a TCP connection to a backend, in seconds. Loopback connects are instant or
#: refused; anything slower means a firewall or a wedged process.
CONNECT_TIMEOUT_S = 2.0
#: Largest response header line from a backend, in bytes (frameworks' big cookies and CSPs).
MAX_RESPONSE_FIELD_BYTES = 65536
#: Socket read size, in bytes; larger reads mean fewer, bigger chunks on big bodies.
READ_BUFSIZE_BYTES = 256 * 1024
#: How long an idle pooled backend connection is kept, in seconds.
POOL_KEEPALIVE_S = 15.0

REFUSED_ERRNOS = frozenset(
    {errno.ECONNREFUSED, errno.EADDRNOTAVAIL, errno.ENETUNREACH, errno.EAFNOSUPPORT}
)


def reset_connection(transport: asyncio.BaseTransport | None) -> None:
    """Abort with a TCP reset, not a FIN: for a response without length framing (an HTTP/1.0
    client, a close-delimited body) a reset is the only signal that the body was cut."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


def make_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # a hundred open SSE streams must not queue the next request
        limit_per_host=0,
        keepalive_timeout=POOL_KEEPALIVE_S,
        use_dns_cache=False,  # backends are IP literals
    )
    return aiohttp.ClientSession(
        connector=connector,
        auto_decompress=False,
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
        skip_auto_headers=(hdrs.ACCEPT, hdrs.ACCEPT_ENCODING, hdrs.USER_AGENT, hdrs.CONTENT_TYPE),
        trust_env=False,
        max_field_size=MAX_RESPONSE_FIELD_BYTES,
        max_line_size=MAX_RESPONSE_FIELD_BYTES,
        read_bufsize=READ_BUFSIZE_BYTES,
    )


def is_refused(exc: BaseException) -> bool:
    """A connect that nothing answered: worth trying the other loopback address."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return exc.os_error.errno in REFUSED_ERRNOS or isinstance(
            exc.os_error, ConnectionRefusedError
        )
    return False


def base_url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class HostPreference:
    """Remembers which address of an upstream answered last, so a backend that listens only
    on ::1 costs one refused connect per change, not one per request."""

    def __init__(self) -> None:
        # keyed by (port, hosts): hashing the frozen dataclass itself runs Python code
        self._last: dict[tuple[int, tuple[str, ...]], str] = {}

    def order(self, upstream: Upstream) -> tuple[str, ...]:
        hosts = upstream.hosts
        if len(hosts) == 1:
            return hosts
        first = self._last.get((upstream.port, hosts))
        if first is None or first == hosts[0]:
            return hosts
        return (first, *(h for h in hosts if h != first))

    def worked(self, upstream: Upstream, host: str) -> None:
        key = (upstream.port, upstream.hosts)
        if self._last.get(key) != host:
            self._last[key] = host


def refused_error(upstream: Upstream) -> BadGateway:
    if len(upstream.hosts) > 1:
        where = " or ".join(
            base_url(h, upstream.port).removeprefix("http://") for h in upstream.hosts
        )
        hint = (
            f"Is the service running? Start it on port {upstream.port}, or point the route "
            "at the port it prints when it starts."
        )
    else:
        where = upstream.describe()
        hint = (
            f"Is the service running, and listening on {upstream.hosts[0]}? A server bound to "
            "the other loopback (127.0.0.1 vs ::1) is not reachable at this address."
        )
    return BadGateway(f"nothing is listening on {where}", hint, kind="refused")


def timeout_error(upstream: Upstream, timeout_s: float) -> GatewayTimeout:
    return GatewayTimeout(
        f"the backend on port {upstream.port} did not answer within {timeout_s:g} s",
        "Is it stuck (a breakpoint, a long first compile)? Raise the route's `timeout` "
        "in the config if it is just slow.",
    )


def connect_error(upstream: Upstream, exc: object) -> BadGateway:
    return BadGateway(
        f"could not connect to the backend on port {upstream.port}: {exc}", kind="refused"
    )


def disconnected_error(upstream: Upstream) -> BadGateway:
    return BadGateway(
        f"the backend on port {upstream.port} closed the connection without answering",
        "Did it crash or restart? Check its output.",
        kind="reset",
    )


def invalid_response_error(upstream: Upstream, detail: object) -> BadGateway:
    return BadGateway(
        f"the backend on port {upstream.port} sent a response that is not valid HTTP ({detail})",
        "Is this port an HTTP server (not TLS, a database, or another protocol)?",
        kind="invalid",
    )


@contextmanager
def translate_errors(upstream: Upstream, timeout_s: float) -> Iterator[None]:
    """The single boundary where client-side exceptions become ProxyErrors (before the
    response has started; after that, the handler aborts the client connection)."""
    try:
        yield
    except aiohttp.ConnectionTimeoutError:
        raise GatewayTimeout(
            f"connecting to the backend on port {upstream.port} took longer than "
            f"{CONNECT_TIMEOUT_S:g} s",
            "Loopback connects are instant unless the process is stopped (Ctrl-Z, a "
            "debugger) or a firewall drops them.",
        ) from None
    except TimeoutError:
        raise timeout_error(upstream, timeout_s) from None
    except aiohttp.ClientConnectorError as exc:
        if is_refused(exc):
            raise refused_error(upstream) from None
        raise connect_error(upstream, exc.os_error) from None
    except aiohttp.ServerDisconnectedError:
        raise disconnected_error(upstream) from None
    except aiohttp.ClientResponseError as exc:
        raise invalid_response_error(upstream, exc.message) from None
    except (aiohttp.ClientError, OSError) as exc:
        raise BadGateway(
            f"the connection to the backend on port {upstream.port} failed: {exc or type(exc)}",
            kind="reset",
        ) from None
    except asyncio.IncompleteReadError:
        raise BadGateway(
            f"the backend on port {upstream.port} closed the connection mid-response",
            kind="reset",
        ) from None
