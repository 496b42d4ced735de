"""One port, two protocols: the listening socket whose connections are sniffed.

TLS and plain HTTP share the router's port. The first byte of a connection decides, as
portless does: a TLS record starts with 0x16 (a handshake), an HTTP/1 request with a
method's letter. The byte is read with MSG_PEEK before the socket gets a transport, so the
TLS layer still reads the whole ClientHello and the HTTP/1 engines the whole request.
After a handshake, ALPN decides the engine: `h2` goes to the HTTP/2 engine
(devrouter.http2), anything else to the HTTP/1 engines (the fast path, as on a plain
connection).

Accepting here, not in the loop's C accept loop, costs each new connection one Python
callback and one `recv` system call; a keep-alive connection pays it once (see
docs/benchmarks.md for the measured cost on new connections).

A connection that sends nothing is closed after SNIFF_TIMEOUT_S, a handshake that does not
finish after HANDSHAKE_TIMEOUT_S; connections waiting for their first byte are capped at
MAX_WAITING and handshakes in progress at MAX_HANDSHAKES, so neither can pile up (each holds
a file descriptor, and neither is counted by the router-wide connection limit yet).
"""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import logging
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

from aiohttp import web

from ..core.model import HttpsMode
from ..http1.answers import https_redirect

log = logging.getLogger("devrouter")

#: The first byte of a TLS record that carries a handshake (RFC 8446, section 5.1).
TLS_HANDSHAKE_BYTE = 0x16
#: A connection that sends no byte in this many seconds is closed (the HTTP/1 engines'
#: keep-alive timeout applies from the first byte on).
SNIFF_TIMEOUT_S = 15.0
#: A TLS handshake that has not finished in this many seconds is dropped.
HANDSHAKE_TIMEOUT_S = 10.0
#: Connections waiting for their first byte, at most; past this a new one is closed.
MAX_WAITING = 4096
#: TLS handshakes in progress, at most; past this a new TLS connection is closed. A browser
#: opens a handful at once, a load test a few hundred.
MAX_HANDSHAKES = 1024
#: Sockets accepted per wake-up of the listening socket, at most.
ACCEPT_BATCH = 64
#: After EMFILE/ENFILE (no descriptors left), accepting pauses this long, in seconds.
ACCEPT_PAUSE_S = 0.1
#: At most one log line about failed handshakes in this many seconds.
HANDSHAKE_LOG_EVERY_S = 10.0

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


@dataclass(frozen=True, slots=True)
class Door:
    """What a sniffed connection is handed to. `mode` and `tls_context` are read per
    connection, so a config reload that changes `https:` applies to the next connection."""

    plain: ProtocolFactory  # the HTTP/1 engines (plain HTTP and HTTP/1.1 over TLS)
    mode: Callable[[], HttpsMode]
    tls_context: Callable[[], ssl.SSLContext | None]  # None: no TLS here (no CA)
    h2: ProtocolFactory | None = None  # the HTTP/2 engine, for ALPN "h2"
    redirect: ProtocolFactory | None = None  # plain HTTP when `https: redirect`
    #: The router-wide connection limit is reached: the connection is handed to `plain` at
    #: once, whose factory answers the 503 before the client has sent anything.
    full: Callable[[], bool] = lambda: False


class AlpnSwitch(asyncio.Protocol):
    """The protocol of a TLS connection until its handshake is done: then the ALPN result
    picks the engine, which takes the transport over."""

    def __init__(self, door: Door) -> None:
        self.door = door

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        sslobj = transport.get_extra_info("ssl_object")
        alpn = sslobj.selected_alpn_protocol() if sslobj is not None else None
        factory = self.door.h2 if alpn == "h2" and self.door.h2 is not None else self.door.plain
        protocol = factory()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)


#: A plain-HTTP head longer than this gets no redirect, in bytes.
MAX_REDIRECT_HEAD_BYTES = 16 * 1024


class RedirectToHttps(asyncio.Protocol):
    """A plain-HTTP connection when `https: redirect`: one 308 to the https:// URL, then
    the connection closes (devrouter.http1.answers.https_redirect)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.timer = asyncio.get_running_loop().call_later(SNIFF_TIMEOUT_S, transport.close)

    def data_received(self, data: bytes) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.buf += data
        end = self.buf.find(b"\r\n\r\n")
        if end < 0 and len(self.buf) <= MAX_REDIRECT_HEAD_BYTES:
            return
        head = bytes(self.buf[:end]) if end >= 0 else b""
        self.transport.write(https_redirect(head))
        self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if self.timer is not None:
            self.timer.cancel()


class Sniffer:
    """Accepts on one listening socket and hands each connection to TLS or plain HTTP."""

    def __init__(self, sock: socket.socket, door: Door) -> None:
        self.loop = asyncio.get_running_loop()
        self.sock = sock
        self.door = door
        self.waiting: dict[int, tuple[socket.socket, asyncio.TimerHandle]] = {}
        self.tasks: set[asyncio.Task[Any]] = set()
        self.handshakes = 0  # TLS handshakes in progress
        self.closed = False
        self._logged_at = float("-inf")
        sock.setblocking(False)
        self.loop.add_reader(sock.fileno(), self._accept)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return (self.sock,)

    # -- accepting ---------------------------------------------------------------------

    def _accept(self) -> None:
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _addr = self.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("cannot accept connections: %s; pausing briefly", exc.strerror)
                    self.loop.remove_reader(self.sock.fileno())
                    self.loop.call_later(ACCEPT_PAUSE_S, self._resume_accepting)
                    return
                continue  # ECONNABORTED and friends: that client is gone
            conn.setblocking(False)
            if self.door.full():
                self._track(self.loop.connect_accepted_socket(self.door.plain, conn))
                continue
            self._sniff(conn)

    def _resume_accepting(self) -> None:
        if not self.closed:
            self.loop.add_reader(self.sock.fileno(), self._accept)

    def _sniff(self, conn: socket.socket) -> None:
        try:
            first = conn.recv(1, socket.MSG_PEEK)
        except (BlockingIOError, InterruptedError):
            if len(self.waiting) >= MAX_WAITING:
                conn.close()
                return
            fd = conn.fileno()
            timer = self.loop.call_later(SNIFF_TIMEOUT_S, self._expire, fd)
            self.waiting[fd] = (conn, timer)
            self.loop.add_reader(fd, self._readable, fd)
            return
        except OSError:
            conn.close()
            return
        if not first:  # closed before sending anything
            conn.close()
            return
        self._dispatch(conn, first[0])

    def _readable(self, fd: int) -> None:
        conn, timer = self.waiting.pop(fd)
        timer.cancel()
        self.loop.remove_reader(fd)
        self._sniff(conn)

    def _expire(self, fd: int) -> None:
        conn, _timer = self.waiting.pop(fd)
        self.loop.remove_reader(fd)
        conn.close()

    # -- handing over ------------------------------------------------------------------

    def _dispatch(self, conn: socket.socket, first: int) -> None:
        door = self.door
        mode = door.mode()
        if first == TLS_HANDSHAKE_BYTE and mode != "off":
            context = door.tls_context()
            if context is not None:
                if self.handshakes >= MAX_HANDSHAKES:
                    log.debug("%d TLS handshakes in progress: a new one is closed", MAX_HANDSHAKES)
                    conn.close()
                    return
                self.handshakes += 1  # here, not in the task: the next accept sees it
                self._track(self._serve_tls(conn, context))
                return
        # plain HTTP, or TLS bytes the HTTP/1 engines refuse with one log line (TLS is off)
        factory = door.plain
        if mode == "redirect" and door.redirect is not None and door.tls_context() is not None:
            factory = door.redirect
        self._track(self.loop.connect_accepted_socket(factory, conn))

    async def _serve_tls(self, conn: socket.socket, context: ssl.SSLContext) -> None:
        peer = _peer(conn)
        try:
            await self.loop.connect_accepted_socket(
                lambda: AlpnSwitch(self.door),
                conn,
                ssl=context,
                ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S,
            )
        except (OSError, ssl.SSLError, TimeoutError, ConnectionError) as exc:
            self._handshake_failed(peer, exc)
        finally:
            self.handshakes -= 1

    def _handshake_failed(self, peer: str, exc: BaseException) -> None:
        """One line at most every HANDSHAKE_LOG_EVERY_S: a browser that does not trust the CA
        yet closes every connection, and the user needs the hint once, not a flood."""
        now = time.monotonic()
        reason = getattr(exc, "reason", None) or type(exc).__name__
        if now - self._logged_at < HANDSHAKE_LOG_EVERY_S:
            log.debug("TLS handshake from %s failed: %s", peer, reason)
            return
        self._logged_at = now
        hint = ""
        if "UNKNOWN_CA" in str(reason).upper() or "BAD_CERTIFICATE" in str(reason).upper():
            hint = "; the client does not trust devrouter's CA: run `devrouter trust`"
        log.info("TLS handshake from %s failed: %s%s", peer, reason, hint)

    def _track(self, coro: Any) -> None:
        task = self.loop.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.debug("a connection ended before it was served: %r", exc)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.loop.remove_reader(self.sock.fileno())
        self.sock.close()
        for fd, (conn, timer) in list(self.waiting.items()):
            timer.cancel()
            self.loop.remove_reader(fd)
            conn.close()
        self.waiting.clear()
        for task in list(self.tasks):
            task.cancel()

    async def wait_closed(self) -> None:
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)


def _peer(conn: socket.socket) -> str:
    try:
        return str(conn.getpeername()[0])
    except OSError:
        return "?"


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on `host` (an IP address or "localhost"), as loop.create_server
    would make it: SO_REUSEADDR, and IPv6 only on an IPv6 socket."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: what it resolves to first
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


class SniffingSite(web.BaseSite):
    """aiohttp's site (so the runner's start and shutdown keep working) whose server is a
    Sniffer instead of the loop's own."""

    __slots__ = ("_door", "_host", "_port", "_sock")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        door: Door,
        *,
        backlog: int,
        sock: socket.socket | None = None,
    ) -> None:
        """`sock`: a socket already listening (socket activation); else one is made."""
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._door = door
        self._sock = sock

    @property
    def name(self) -> str:
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        sock = self._sock or listening_socket(self._host, self._port, self._backlog)
        self._server = cast(asyncio.AbstractServer, Sniffer(sock, self._door))
