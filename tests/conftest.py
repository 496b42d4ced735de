"""Shared fixtures: real backends and a real router on loopback ports, raw sockets, the CLI.

Everything listens on 127.0.0.1 or ::1 only, and every helper is bounded in time.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.server
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import WSMsgType, web

from devrouter.config.schema import parse_config
from devrouter.core.model import Config, ListenAddr
from devrouter.core.state import State
from devrouter.server.app import Router

#: Upper bound for any single socket read in a test, in seconds.
IO_TIMEOUT_S = 10.0


def free_port(host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def make_config(routes: dict[str, Any], **top: Any) -> Config:
    """A Config from a Python dict, through the real YAML parser."""
    return parse_config(yaml.safe_dump({"routes": routes, **top}), "<test>", own_ports=())


# --- backends -----------------------------------------------------------------------------


@contextlib.contextmanager
def text_backend(body: bytes) -> Iterator[int]:
    """A plain HTTP server on 127.0.0.1 in a thread, answering every GET with 200 and `body`:
    for tests whose client is another process (curl, Node, a namespace) rather than this
    event loop. Yields its port; stopped on exit."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@dataclass
class RawBackend:
    """A TCP server whose behaviour is a coroutine over (reader, writer); records what it read."""

    port: int
    received: list[bytes] = field(default_factory=list)
    connections: int = 0


BackendFactory = Callable[..., Awaitable[int]]


@pytest.fixture
async def backend() -> AsyncIterator[BackendFactory]:
    """`port = await backend(app, host="127.0.0.1")` serves an aiohttp Application."""
    runners: list[web.AppRunner] = []

    async def start(app: web.Application, host: str = "127.0.0.1") -> int:
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        runners.append(runner)
        assert site._server is not None
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    yield start
    for runner in runners:
        await runner.cleanup()


RawHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, RawBackend], Awaitable[None]]


@pytest.fixture
async def raw_backend() -> AsyncIterator[Callable[[RawHandler], Awaitable[RawBackend]]]:
    """`rb = await raw_backend(handler)`: a byte-level backend for framing and fault tests."""
    servers: list[asyncio.Server] = []
    tasks: set[asyncio.Task[None]] = set()

    async def start(handler: RawHandler, host: str = "127.0.0.1") -> RawBackend:
        rb = RawBackend(port=0)

        async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            rb.connections += 1
            task = asyncio.current_task()
            assert task is not None
            tasks.add(task)
            try:
                await handler(r, w, rb)
            except (ConnectionError, asyncio.IncompleteReadError):
                pass
            finally:
                tasks.discard(task)
                w.close()

        server = await asyncio.start_server(on_conn, host, 0)
        servers.append(server)
        rb.port = int(server.sockets[0].getsockname()[1])
        return rb

    yield start
    for server in servers:
        server.close()
    for task in list(tasks):
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def ws_echo_text(request: web.Request) -> web.WebSocketResponse:
    """A backend's WebSocket handler that sends each text message back as it came."""
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    async for msg in sock:
        if msg.type is WSMsgType.TEXT:
            await sock.send_str(msg.data)
    return sock


async def read_head(reader: asyncio.StreamReader) -> bytes:
    """Read one request or response head (up to the blank line)."""
    return await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)


@pytest.fixture
def listening() -> Iterator[Callable[[str], int]]:
    """`port = listening("::1")`: a socket in this process listening on one address."""
    socks: list[socket.socket] = []

    def start(host: str) -> int:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        socks.append(s)
        s.bind((host, 0))
        s.listen()
        return int(s.getsockname()[1])

    yield start
    for s in socks:
        s.close()


@pytest.fixture
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No router, config or state of the machine running the tests: HOME, the config and
    state directories are the test's own, and a route NAME is looked for in an empty state
    directory."""
    for key in ("DEVROUTER_CONFIG", "DEVROUTER_LISTEN", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DEVROUTER_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


# --- the router ---------------------------------------------------------------------------


@dataclass
class RouterHandle:
    router: Router
    port: int

    @property
    def state(self) -> State:
        return self.router.state

    def url(self, name: str, path: str = "/") -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture(params=["fastpath", "aiohttp"])
async def router(
    request: pytest.FixtureRequest,
) -> AsyncIterator[Callable[..., Awaitable[RouterHandle]]]:
    """`r = await router(config)` runs an in-process router on a free 127.0.0.1 port.

    Every test that uses it runs twice: with the protocol-level fast path (the default) and
    with the aiohttp handler alone, since both must keep every rule."""
    started: list[Router] = []
    fast_path = request.param == "fastpath"

    async def start(
        config: Config,
        host: str = "127.0.0.1",
        config_path: Path | None = None,
        port: int = 0,
        state_dir: Path | None = None,
    ) -> RouterHandle:
        """With `state_dir`, the router has a local CA there and its port answers TLS
        (HTTP/1.1 and HTTP/2) as well as plain HTTP; the CA is `state_dir/ca/ca.pem`."""
        addr = ListenAddr(host, port)
        r = Router(
            State(config),
            [addr],
            config_path,
            required=[addr],
            fast_path=fast_path,
            state_dir=state_dir,
        )
        await r.start()
        started.append(r)
        return RouterHandle(r, r.bound[0].port)

    yield start
    for r in started:
        await r.close()


async def raw_exchange(
    port: int,
    data: bytes,
    host: str = "127.0.0.1",
    until_close: bool = True,
    timeout_s: float = IO_TIMEOUT_S,
) -> bytes:
    """Send raw bytes to the router and return everything it sends back until it closes the
    connection (or `timeout_s` passes)."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(data)
        await writer.drain()
        chunks: list[bytes] = []
        deadline = asyncio.get_running_loop().time() + timeout_s
        while True:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                break
            try:
                chunk = await asyncio.wait_for(reader.read(65536), remaining)
            except TimeoutError:
                break
            except ConnectionResetError:
                break
            if not chunk:
                break
            chunks.append(chunk)
            if not until_close:
                break
        return b"".join(chunks)
    finally:
        writer.close()


# --- the real CLI -------------------------------------------------------------------------


@dataclass
class CliProcess:
    proc: subprocess.Popen[bytes]
    port: int
    lines: list[str]
    _partial: bytes = b""

    def read_until(self, needle: str, timeout_s: float = IO_TIMEOUT_S) -> str:
        """Read stderr lines until one contains `needle`; fail after `timeout_s`.

        Reads the raw descriptor (no buffered readline), so lines that arrive together are
        never hidden from select() in a Python buffer."""
        import select

        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        deadline = time.monotonic() + timeout_s
        for i, line in enumerate(self.lines):
            if needle in line:
                del self.lines[: i + 1]
                return line
        self.lines.clear()
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            *complete, self._partial = (self._partial + chunk).split(b"\n")
            for j, raw in enumerate(complete):
                line = raw.decode(errors="replace") + "\n"
                if needle in line:
                    self.lines.extend(r.decode(errors="replace") + "\n" for r in complete[j + 1 :])
                    return line
                self.lines.append(line)
        raise AssertionError(f"no line with {needle!r} within {timeout_s}s; got {self.lines!r}")


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 5.0) -> None:
    """SIGTERM, then SIGKILL after `timeout_s`: a process a test started ends with it."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)


def cli_env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("DEVROUTER") and k != "XDG_STATE_HOME"
    }
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., CliProcess]]:
    """`p = cli("serve", "--config", path)` starts the real CLI on a free port, waits for its
    ready line, and stops it (SIGTERM, then SIGKILL) at the end of the test."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(
        *args: str,
        port: int | None = None,
        env: dict[str, str] | None = None,
        wait_ready: bool = True,
    ) -> CliProcess:
        port = port or free_port()
        argv = [sys.executable, "-m", "devrouter", *args]
        if args and args[0] in ("serve", "demo") and "--listen" not in args:
            argv += ["--listen", f"127.0.0.1:{port}"]
        proc = subprocess.Popen(
            argv,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env or cli_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg")),
            cwd=tmp_path,
        )
        procs.append(proc)
        p = CliProcess(proc, port, [])
        if wait_ready:
            p.read_until("ready on")
        return p

    yield start
    for proc in procs:
        stop_process(proc)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


# --- a real Docker Engine (tests/docker/) ----------------------------------------------------
# Here rather than in tests/docker/conftest.py, which would shadow this module for the
# `from conftest import ...` of the tests there. The harness, tests/docker/dockerd.py, is
# imported when a fixture runs: pytest has put tests/docker on sys.path by then.


@pytest.fixture(scope="session")
def dockerd_available() -> None:
    """Skips, with the reason, where a private dockerd cannot run (not root, a tool missing);
    removes the directories that test runs killed before their teardown left behind."""
    from dockerd import skip_reason, sweep_stale

    reason = skip_reason(probe=False)
    if reason:
        pytest.skip(reason)
    sweep_stale()


@pytest.fixture(scope="module")
def dockerd(dockerd_available: None) -> Iterator[Any]:
    """A started private dockerd (tests/docker/dockerd.py's PrivateDockerd) with
    `local/busybox` imported, torn down after the module whatever its tests did (processes,
    mounts and directory gone). Module-scoped: a daemon starts in about a second, and a
    module that kills or restarts it does not disturb the next one; a test that needs a
    clean daemon calls `dockerd.remove_all()`."""
    from dockerd import DockerdError, PrivateDockerd

    daemon = PrivateDockerd()
    try:
        try:
            daemon.start()
            daemon.image()
        except DockerdError as exc:
            pytest.skip(f"dockerd failed to start: {exc}")
        yield daemon
    finally:
        daemon.stop()
