"""Real engines for the export tests: Caddy and nginx run as processes on a free loopback
port with everything (config, pid, logs, temp files, HOME) in the test's directory, and the
backends the exported config routes to, as aiohttp apps that say who answered and what
they were sent.

Every wait is bounded; the fixtures stop what they started.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import WSMsgType, web

#: How long an engine has to start listening, in seconds.
START_TIMEOUT_S = 15.0


def find_binary(name: str) -> str | None:
    """`name` on PATH, or in /usr/sbin and /usr/bin (nginx is in /usr/sbin, off a user's PATH)."""
    found = shutil.which(name)
    if found:
        return found
    for directory in ("/usr/sbin", "/usr/bin", "/usr/local/bin", "/usr/local/sbin"):
        path = Path(directory) / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return None


def _wait_port(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the engine exited ({proc.returncode}): {_tail(log)}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"the engine did not listen on {port} in {START_TIMEOUT_S}s: {_tail(log)}")


def _tail(log: Path) -> str:
    try:
        return log.read_text(errors="replace")[-3000:]
    except OSError:
        return "(no log)"


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def caddy_env(tmp: Path, **extra: str) -> dict[str, str]:
    home = tmp / "caddy-home"
    home.mkdir(exist_ok=True)
    return {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        **extra,
    }


def caddyfile(exported: str) -> str:
    """The exported Caddyfile with the test's global options in front: no admin endpoint (tests
    run side by side). The export itself has no global options block."""
    return "{\n\tadmin off\n}\n\n" + exported


@contextmanager
def run_caddy(caddy: str, tmp: Path, exported: str, port: int, **env: str) -> Iterator[None]:
    conf = tmp / "Caddyfile"
    conf.write_text(caddyfile(exported))
    log = tmp / "caddy.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [caddy, "run", "--config", str(conf), "--adapter", "caddyfile"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=caddy_env(tmp, **env),
            cwd=tmp,
        )
    try:
        _wait_port(proc, port, log)
        yield
    finally:
        _stop(proc)


def nginx_conf(tmp: Path, include: Path) -> Path:
    """A whole nginx.conf around the exported file, everything inside `tmp`. As root, the
    workers stay root: as nobody they could not read the test's private directory."""
    temp = tmp / "nginx-temp"
    temp.mkdir(exist_ok=True)
    user = "user root;\n" if os.geteuid() == 0 else ""
    conf = tmp / "nginx.conf"
    conf.write_text(
        f"""{user}daemon off;
master_process on;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log info;
events {{ worker_connections 512; }}
http {{
  access_log off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  include {include};
}}
"""
    )
    return conf


def nginx_test(nginx: str, tmp: Path, exported: str) -> subprocess.CompletedProcess[str]:
    include = tmp / "devrouter.conf"
    include.write_text(exported)
    conf = nginx_conf(tmp, include)
    return subprocess.run(
        [nginx, "-t", "-p", str(tmp), "-c", str(conf), "-e", str(tmp / "nginx-error.log")],
        capture_output=True,
        text=True,
        timeout=30,
    )


@contextmanager
def run_nginx(nginx: str, tmp: Path, exported: str, port: int) -> Iterator[None]:
    include = tmp / "devrouter.conf"
    include.write_text(exported)
    conf = nginx_conf(tmp, include)
    log = tmp / "nginx-error.log"
    proc = subprocess.Popen(
        [nginx, "-p", str(tmp), "-c", str(conf), "-e", str(log)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=tmp,
    )
    try:
        _wait_port(proc, port, log)
        yield
    finally:
        _stop(proc)


# --- backends --------------------------------------------------------------------------------


@dataclass
class Backend:
    """An app that says who it is (`tag`) and what it was sent. /events sends one event, then
    waits for `release` before the second, so a client that reads the first event has it
    while the stream is still open: it arrived unbuffered."""

    tag: str
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/ws", self.ws)
        app.router.add_get("/events", self.events)
        app.router.add_post("/upload", self.upload)
        app.router.add_route("*", "/{tail:.*}", self.echo)
        return app

    async def echo(self, request: web.Request) -> web.Response:
        return web.json_response(
            {
                "backend": self.tag,
                "path": request.path_qs,
                "headers": {k.lower(): v for k, v in request.headers.items()},
            }
        )

    async def upload(self, request: web.Request) -> web.Response:
        digest = hashlib.sha256()
        size = 0
        async for chunk in request.content.iter_chunked(65536):
            digest.update(chunk)
            size += len(chunk)
        return web.json_response({"backend": self.tag, "size": size, "sha256": digest.hexdigest()})

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        await resp.write(b"data: first\n\n")
        try:
            await asyncio.wait_for(self.release.wait(), 10)
        except TimeoutError:
            return resp
        await resp.write(b"data: second\n\n")
        await resp.write_eof()
        return resp

    async def ws(self, request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                await sock.send_str(f"{self.tag}:{msg.data}")
        return sock
