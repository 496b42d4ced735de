"""Wiring: the HTTP server, the upstream session, the reloader and the listening sockets.

The only module that knows how the pieces fit. The server is aiohttp's low-level
`web.Server` with one handler: the router needs no URL dispatcher or middleware, and
skipping them is a measurable share of the per-request cost.

Server settings that differ from aiohttp's defaults, and why (security-catalog "aiohttp
settings"): handler cancellation on, so a client that leaves cancels its upstream request;
no request-body decompression; a 15 s keep-alive/header timeout against slowloris (the
low-level default is an hour); explicit header limits; and only the addresses asked for,
never `host=None`, which would bind every interface.
"""

from __future__ import annotations

import asyncio
import ctypes
import errno
import logging
import os
import socket
import ssl
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import aiohttp
from aiohttp import http_parser, web
from aiohttp.http_exceptions import HttpProcessingError

from ..aio import sleep_or_stop
from ..config.reload import Reloader
from ..core.errors import CommandError, StartupError
from ..core.model import ListenAddr
from ..core.state import Snapshot, State
from ..core.urls import name_url
from ..docker.watcher import DockerWatcher
from ..fast.server import FastServer
from ..hosts.keeper import HostsKeeper
from ..http2.server import Http2Server
from ..observe.accesslog import AccessLog
from ..observe.health import Health
from ..observe.metrics import DEFAULT_RECENT, FLUSH_INTERVAL_S, Metrics
from ..proxy.handler import Proxy
from ..services.client import ControlError
from ..services.control import ControlServer
from ..services.ports import ensure_state_dir
from ..tls.ca import LocalCA
from ..tls.certs import CertStore
from ..web import dashboard
from .limits import HttpLimits, LimitedServer, connection_budget, raise_fd_limit
from .listener import Door, RedirectToHttps, SniffingSite
from .strictgate import EarlyGatedServer, GatedServer
from .upstream import make_session

log = logging.getLogger("devrouter")

#: Ports below this need privilege to bind on Linux (unless the sysctl lowers it).
PRIVILEGED_PORTS_BELOW = 1024


def privileged_port_hint(addr: ListenAddr) -> str:
    """The one line said when a low port is refused: the ways to get it without root."""
    return (
        f"port {addr.port} on {addr.host} needs privilege: run devrouter as a service that "
        f"hands it the port (`devrouter service install --port {addr.port}`: systemd socket "
        "activation), or give it CAP_NET_BIND_SERVICE, or lower "
        f"net.ipv4.ip_unprivileged_port_start to {addr.port}; docs/service.md has each"
    )


#: On SIGINT/SIGTERM, in-flight requests get this long to finish, in seconds.
SHUTDOWN_GRACE_S = 5.0
LISTEN_BACKLOG = 1024


class _MalformedRequestFilter(logging.Filter):
    """aiohttp logs a client's malformed request as an ERROR with a traceback; for a proxy
    that is the client's problem, worth one line, not a stack."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            log.info("rejected a malformed request (%s %s)", exc.code, exc.message)
            return False
        return True


_server_log = logging.getLogger("devrouter.http")
_server_log.addFilter(_MalformedRequestFilter())


#: glibc malloc settings for streaming large bodies, in bytes. With the defaults, each freed
#: chunk buffer (a megabyte body is read in 256 KiB pieces) crosses the mmap threshold and
#: the heap is trimmed after every response, so the same memory is mapped and returned to the
#: kernel over and over; measured: 1 MiB responses went from ~620 to ~1,150 MB/s. The cost is
#: that up to MALLOC_TRIM_THRESHOLD_BYTES of freed heap stays with the process.
MALLOC_TRIM_THRESHOLD_BYTES = 128 * 1024 * 1024
MALLOC_TOP_PAD_BYTES = 64 * 1024 * 1024
MALLOC_MMAP_THRESHOLD_BYTES = 32 * 1024 * 1024  # glibc's maximum on 64-bit
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def tune_malloc() -> bool:
    """Apply the malloc settings above where glibc is the allocator and the environment has
    not chosen its own (MALLOC_*_ variables win). Returns True if applied."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc: leave it alone
        return False
    return all(
        mallopt(option, value)
        for option, value in (
            (_M_MMAP_THRESHOLD, MALLOC_MMAP_THRESHOLD_BYTES),
            (_M_TRIM_THRESHOLD, MALLOC_TRIM_THRESHOLD_BYTES),
            (_M_TOP_PAD, MALLOC_TOP_PAD_BYTES),
        )
    )


def c_parser_in_use() -> bool:
    return http_parser.HttpRequestParser.__module__ == "aiohttp._http_parser"


#: The engines: the fast path in front of the aiohttp handler (the default), or the aiohttp
#: handler alone (DEVROUTER_FAST_PATH=0).
Engine = Literal["fast", "aiohttp"]


def make_server(
    engine: Engine,
    proxy: Proxy,
    state: State,
    metrics: Metrics,
    limits: HttpLimits,
    *,
    gated: bool,
) -> LimitedServer:
    """The router's HTTP server for `engine`; `gated` puts llhttp in front of aiohttp's
    pure-Python parser (devrouter.server.strictgate)."""
    common: dict[str, Any] = {
        "state": state,
        "limits": limits,
        "handler_cancellation": True,
        "auto_decompress": False,
        "access_log": None,
        "logger": _server_log,
    }
    if engine == "fast":
        return FastServer(
            proxy.handle,
            prefer=proxy.prefer,
            metrics=metrics,
            gated=gated,
            control=proxy.control,
            **common,
        )
    # With aiohttp's C parser no llhttp is needed in front, only the early refusals (an HTTP/2
    # preface, TLS, bare CRs, HTTP/0.9), so both engines answer those alike.
    return (GatedServer if gated else EarlyGatedServer)(proxy.handle, **common)


class Router:
    def __init__(
        self,
        state: State,
        listen: Sequence[ListenAddr],
        config_path: Path | None,
        *,
        required: Sequence[ListenAddr] = (),
        fast_path: bool | None = None,
        recent_requests: int = DEFAULT_RECENT,
        access_log: AccessLog | None = None,
        state_dir: Path | None = None,
        ca_dir: Path | None = None,
        docker: bool = False,
        inherited: Sequence[tuple[socket.socket, ListenAddr]] = (),
    ) -> None:
        """`state_dir` holds the control socket and the local CA; `ca_dir` is where the CA
        is when there is no control socket (the demo's). `docker` watches the Docker Engine
        (devrouter.docker) as the config's `docker:` section says. `inherited` are sockets
        already listening (socket activation, devrouter.server.activation), served instead
        of binding `listen`."""
        self.state = state
        self.inherited = tuple(inherited)
        self.listen = tuple(a for _, a in self.inherited) or tuple(listen)
        self.required = tuple(required)  # must bind; the rest may be skipped (no IPv6)
        self.config_path = config_path
        if fast_path is None:
            fast_path = os.environ.get("DEVROUTER_FAST_PATH", "1") != "0"
        self.fast_path = fast_path
        self.bound: list[ListenAddr] = []
        self._runner: web.ServerRunner | None = None
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []  # reloader, health probes
        self.access_log = access_log
        self.metrics = Metrics(recent_requests, sink=access_log)
        self.health = Health(state, self.metrics)
        self.docker = DockerWatcher(state) if docker else None
        self.site = dashboard.Context(
            state, self.metrics, self.health, docker=self.docker.report if self.docker else None
        )
        self._session: aiohttp.ClientSession | None = None
        self.ca_dir = ca_dir or state_dir
        self.certs: CertStore | None = None  # the TLS certificates, once a CA is loaded
        self._tls: ssl.SSLContext | None = None
        self._server: LimitedServer | None = None
        self._background: set[asyncio.Future[None]] = set()
        self._tls_failed = False  # a CA that cannot be used is reported once
        self._prepared: Snapshot | None = None  # the snapshot whose names have leaves
        self._h2: Http2Server | None = None
        # The registration channel (devrouter run / up / alias); only with a state directory.
        self.control = (
            ControlServer(state, state_dir, docker=self.site.docker)
            if state_dir is not None
            else None
        )

    async def start(self) -> None:
        if not c_parser_in_use():
            log.warning(
                "aiohttp's C HTTP parser is not in use (pure-Python fallback): requests are "
                "checked with llhttp first, but parsing is slower. Reinstall aiohttp from its "
                "wheels (and unset AIOHTTP_NO_EXTENSIONS)."
            )
        self._session = make_session()  # needs the running loop
        proxy = Proxy(self.state, self._session, self.site, self.control)
        gated = not c_parser_in_use()
        fd_limit = raise_fd_limit()
        budget = connection_budget(fd_limit)
        wanted = self.state.snapshot.config.max_connections
        if wanted > budget:
            log.warning(
                "max_connections %d needs more open files than this process may have (ulimit "
                "-n %d); using %d",
                wanted,
                fd_limit,
                budget,
            )
        engine: Engine = "fast" if self.fast_path else "aiohttp"
        limits = HttpLimits(fd_budget=budget)
        server = make_server(engine, proxy, self.state, self.metrics, limits, gated=gated)
        self._server = server
        h2 = self._h2 = Http2Server(server.make_protocol, full=server.full)
        server.elsewhere = lambda: len(h2.connections)
        if self.state.snapshot.config.https != "off":
            self._tls_context()  # create the CA now, so its path can be shown and given out
        self._runner = web.ServerRunner(server, shutdown_timeout=SHUTDOWN_GRACE_S)
        await self._runner.setup()
        try:
            for sock, addr in self.inherited:
                await self._serve_on(sock, addr)
            for addr in self.listen if not self.inherited else ():
                await self._bind(addr)
            if not self.bound:
                raise StartupError("could not listen on any address")
        except BaseException:
            await self.close()
            raise
        self.site.listen = tuple(self.bound)
        if self.control is not None:
            self.control.listen = tuple(self.bound)
            try:
                await self.control.start()
            except ControlError as exc:
                await self.close()
                raise StartupError(str(exc)) from None
        if self.config_path is not None:
            reloader = Reloader(self.state, self.config_path, {a.port for a in self.bound})
            self._tasks.append(asyncio.create_task(reloader.run(self._stop)))
            # `hosts: sync` in the file: the hosts-file block follows the route names
            self._tasks.append(asyncio.create_task(HostsKeeper(self.state).run(self._stop)))
        self._tasks.append(asyncio.create_task(self.health.run(self._stop)))
        if self.docker is not None:
            self._tasks.append(asyncio.create_task(self.docker.run(self._stop)))
        self._tasks.append(asyncio.create_task(self._flush_periodically(self._stop)))

    async def _flush_periodically(self, stop: asyncio.Event) -> None:
        """Count the fast path's finished exchanges in batches, and pass their log lines on."""
        while not stop.is_set():
            await sleep_or_stop(stop, FLUSH_INTERVAL_S)
            self.metrics.flush()
            if self.access_log is not None:
                self.access_log.flush()
            self._prepare_leaves()

    def _tls_context(self) -> ssl.SSLContext | None:
        """The TLS context of the router's port; the local CA is loaded (or created) on first
        use. None, with one warning, where there is no state directory or the CA is unusable:
        the port then answers plain HTTP only."""
        if self._tls is not None:
            return self._tls
        if self._tls_failed or self.ca_dir is None:
            return None
        try:
            ca = LocalCA.load_or_create(ensure_state_dir(self.ca_dir))
            self.certs = CertStore(ca)
            self._tls = self.certs.server_context()
        except (CommandError, OSError) as exc:
            self._tls_failed = True
            log.warning("HTTPS is off: %s", exc)
            return None
        self._prepare_leaves()
        return self._tls

    def _prepare_leaves(self) -> None:
        """Issue the leaf certificates of the names in the route table ahead of their first
        handshake, in a worker thread (issuing takes milliseconds; a handshake should not)."""
        snapshot = self.state.snapshot
        if self.certs is None or snapshot is self._prepared:
            return
        self._prepared = snapshot
        # a wildcard route's names are issued when first asked for
        names = [f"{name}.localhost" for name in snapshot.table.exact]
        task = asyncio.get_running_loop().run_in_executor(None, self.certs.prepare, names)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _door(self) -> Door:
        server = self._server
        assert server is not None
        state = self.state  # read per connection: a reload applies to the next one

        def h2() -> asyncio.BaseProtocol:
            assert self._h2 is not None
            return self._h2.make_protocol()

        return Door(
            plain=server,
            mode=lambda: state.snapshot.config.https,
            tls_context=self._tls_context,
            h2=h2 if self._h2 is not None else None,
            redirect=RedirectToHttps,
            full=server.full,
        )

    async def _serve_on(self, sock: socket.socket, addr: ListenAddr) -> None:
        assert self._runner is not None
        site = SniffingSite(
            self._runner, addr.host, addr.port, self._door(), backlog=LISTEN_BACKLOG, sock=sock
        )
        await site.start()
        self.bound.append(addr)

    async def _bind(self, addr: ListenAddr) -> None:
        assert self._runner is not None
        site = SniffingSite(
            self._runner, addr.host, addr.port, self._door(), backlog=LISTEN_BACKLOG
        )
        try:
            await site.start()
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise StartupError(
                    f"port {addr.port} on {addr.host} is already in use (another devrouter? "
                    f"see `ss -ltnp 'sport = :{addr.port}'`, or use --listen with another port)"
                ) from None
            if exc.errno == errno.EACCES and addr.port < PRIVILEGED_PORTS_BELOW:
                raise StartupError(privileged_port_hint(addr)) from None
            if addr not in self.required and exc.errno in (
                errno.EADDRNOTAVAIL,
                errno.EAFNOSUPPORT,
            ):
                log.warning("not listening on %s: %s", addr, exc.strerror)
                return
            raise StartupError(f"cannot listen on {addr}: {exc.strerror}") from None
        server = site._server
        sockets = getattr(server, "sockets", None) or ()
        port = sockets[0].getsockname()[1] if sockets else addr.port  # port 0: the real one
        self.bound.append(ListenAddr(addr.host, port))

    @property
    def url(self) -> str:
        port = self.bound[0].port if self.bound else 0
        return name_url(None, port)

    @property
    def https_url(self) -> str | None:
        """The https:// URL of the router's own page, when the port answers TLS."""
        if self.certs is None or self.state.snapshot.config.https == "off":
            return None
        port = self.bound[0].port if self.bound else 0
        return name_url(None, port, "https")

    def request_stop(self) -> None:
        self._stop.set()

    async def wait(self) -> None:
        await self._stop.wait()

    async def close(self) -> None:
        self._stop.set()
        if self.control is not None:
            await self.control.close()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._h2 is not None:
            await self._h2.shutdown(SHUTDOWN_GRACE_S)
        if self._runner is not None:
            await self._runner.cleanup()
        if self._session is not None:
            await self._session.close()
        self.metrics.flush()  # the exchanges that ended during the shutdown grace, too
        if self.access_log is not None:
            await self.access_log.close()
