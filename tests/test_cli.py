"""The real command line (`python -m devrouter ...`) as subprocesses: flags, exit codes,
start-up failures, signals, config lookup, `check`, hot reload and `demo`.

Every subprocess is bounded by a timeout and stopped at the end (the `cli` fixture or
`subprocess.run(timeout=...)`).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import os
import re
import selectors
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import CliProcess, cli_env, free_port

RUN_TIMEOUT_S = 20.0
RELOAD_WAIT_S = 5.0
SUBCOMMANDS = ("serve", "check", "demo")


# --- helpers ------------------------------------------------------------------------------


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devrouter", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd,
        env=env or cli_env(HOME=str(cwd), XDG_CONFIG_HOME=str(cwd / "xdg")),
    )


def http_get(port: int, host: str, path: str = "/") -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def read_stdout_until(p: CliProcess, needle: str, timeout_s: float = 10.0) -> str:
    """Everything the process printed on stdout until `needle` appears (raw fd reads, so no
    text-layer buffering hides data from select)."""
    assert p.proc.stdout is not None
    fd = p.proc.stdout.fileno()
    out = b""
    sel = selectors.DefaultSelector()
    sel.register(fd, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                continue
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            out += chunk
            if needle.encode() in out:
                return out.decode()
    finally:
        sel.close()
    raise AssertionError(f"no stdout with {needle!r} within {timeout_s}s; got {out!r}")


class Stderr:
    """Reads a CLI process's stderr straight from the pipe's fd.

    (A text-mode readline after select() can strand lines in Python's buffer, where select
    no longer sees them; raw reads avoid that.)
    """

    def __init__(self, p: CliProcess) -> None:
        assert p.proc.stderr is not None
        self.p = p
        self.fd = p.proc.stderr.fileno()
        self.buf = b""
        self.pos = 0  # everything before this has been consumed by until()

    def until(self, needle: str, timeout_s: float = 10.0) -> str:
        """Return the first not-yet-consumed line containing `needle`."""
        want = needle.encode()
        sel = selectors.DefaultSelector()
        sel.register(self.fd, selectors.EVENT_READ)
        deadline = time.monotonic() + timeout_s
        try:
            while True:
                start = self.buf.find(want, self.pos)
                if start >= 0:
                    end = self.buf.find(b"\n", start)
                    if end >= 0:
                        line_start = self.buf.rfind(b"\n", 0, start) + 1
                        self.pos = end + 1
                        return self.buf[line_start:end].decode()
                if time.monotonic() >= deadline:
                    break
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.fd, 65536)
                if not chunk:
                    break
                self.buf += chunk
        finally:
            sel.close()
        raise AssertionError(
            f"no stderr line with {needle!r} within {timeout_s}s; got {self.buf.decode()!r}"
        )

    def drain(self) -> str:
        """After the process has exited: all of its stderr."""
        while chunk := os.read(self.fd, 65536):
            self.buf += chunk
        return self.buf.decode()


def start(cli: Callable[..., CliProcess], *args: str, **kw: Any) -> tuple[CliProcess, Stderr, str]:
    """Start the CLI and wait for its ready line with our own reader; (process, reader, line)."""
    p = cli(*args, wait_ready=False, **kw)
    err = Stderr(p)
    return p, err, err.until("ready on")


def stop(p: CliProcess, err: Stderr, sig: int = signal.SIGTERM) -> tuple[int, str]:
    """Signal the process, wait for it, and return (exit code, all of its stderr)."""
    p.proc.send_signal(sig)
    rc = p.proc.wait(15)
    return rc, err.drain()


def single_error_line(stderr: str) -> str:
    """The one `devrouter: ...` error line (log lines before it are allowed); no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("devrouter:")]
    assert len(lines) == 1, stderr
    return lines[0]


# --- flags and exit codes -----------------------------------------------------------------


@pytest.mark.parametrize("cmd", [(), *((c,) for c in SUBCOMMANDS)], ids=["top", *SUBCOMMANDS])
def test_help_exits_0(tmp_path, cmd):
    res = run_cli(*cmd, "--help", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert "usage: devrouter" in res.stdout
    assert res.stderr == ""


@pytest.mark.parametrize("cmd", [(), *((c,) for c in SUBCOMMANDS)], ids=["top", *SUBCOMMANDS])
def test_version_exits_0(tmp_path, cmd):
    from devrouter import __version__

    res = run_cli(*cmd, "--version", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert __version__ in res.stdout + res.stderr


@pytest.mark.parametrize("cmd", [(), *((c,) for c in SUBCOMMANDS)], ids=["top", *SUBCOMMANDS])
def test_unknown_flag_exits_2(tmp_path, cmd):
    res = run_cli(*cmd, "--no-such-flag", cwd=tmp_path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "--no-such-flag" in res.stderr


# --- serve: ready line, signals, graceful shutdown ----------------------------------------


def test_serve_logs_one_ready_line_with_url(cli, tmp_path):
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(f"routes:\n  api: {free_port()}\n")
    p, err, ready = start(cli, "serve", "--config", str(cfg))
    assert f"http://localhost:{p.port}" in ready
    status, _, _ = http_get(p.port, "nosuch.localhost")
    assert status == 404
    rc, stderr = stop(p, err)
    assert rc == 0
    assert stderr.count("ready on") == 1, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_exits_0_on_signal(cli, tmp_path, sig):
    p, err, _ = start(cli, "serve")
    # A served request proves the event loop is past start-up (see the next test for a
    # signal that arrives right at the ready line).
    assert http_get(p.port, "nosuch.localhost")[0] == 404
    rc, stderr = stop(p, err, sig)
    assert rc == 0, stderr
    assert "Traceback" not in stderr


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_right_after_ready_line_exits_0(cli, tmp_path, sig):
    """A supervisor (or a test) that waits for the ready line and then stops the router must
    see a clean exit: the signal handlers are in place before the ready line is logged."""
    p, err, _ = start(cli, "serve")
    rc, stderr = stop(p, err, sig)
    assert rc == 0, stderr
    assert "Traceback" not in stderr


async def test_in_flight_request_finishes_during_shutdown(cli, backend, tmp_path):
    started = asyncio.Event()

    async def slow(request: web.Request) -> web.Response:
        started.set()
        await asyncio.sleep(1.0)
        return web.Response(text="finished")

    app = web.Application()
    app.router.add_get("/slow", slow)
    port = await backend(app)
    cfg = tmp_path / "routes.yaml"
    cfg.write_text(f"routes:\n  slow: {port}\n")
    p, err, _ = await asyncio.to_thread(start, cli, "serve", "--config", str(cfg))

    async def fetch() -> tuple[int, str]:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as s,
            s.get(f"http://127.0.0.1:{p.port}/slow", headers={"Host": "slow.localhost"}) as resp,
        ):
            return resp.status, await resp.text()

    task = asyncio.create_task(fetch())
    await asyncio.wait_for(started.wait(), 10)
    p.proc.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(task, 20) == (200, "finished")
    rc = await asyncio.to_thread(p.proc.wait, 15)
    assert rc == 0
    assert "Traceback" not in err.drain()


# --- start-up failures --------------------------------------------------------------------


def test_invalid_config_exits_3_naming_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"routes:\n  api: 70000\n  web: {free_port()}\n")
    res = run_cli(
        "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path
    )
    assert res.returncode == 3
    line = single_error_line(res.stderr)
    assert f"{cfg}:2" in line
    assert "api" in line


def test_yaml_syntax_error_exits_3_naming_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes:\n  api: 4001\n  web: [5173\n")
    res = run_cli(
        "serve", "--config", str(cfg), "--listen", f"127.0.0.1:{free_port()}", cwd=tmp_path
    )
    assert res.returncode == 3
    line = single_error_line(res.stderr)
    assert re.search(rf"{re.escape(str(cfg))}:\d+", line), line


def test_port_in_use_exits_3_naming_the_port(tmp_path):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        res = run_cli("serve", "--listen", f"127.0.0.1:{port}", cwd=tmp_path)
    assert res.returncode == 3
    line = single_error_line(res.stderr)
    assert str(port) in line


def test_non_loopback_listen_needs_allow_remote(tmp_path):
    res = run_cli("serve", "--listen", f"0.0.0.0:{free_port()}", cwd=tmp_path)
    assert res.returncode == 2
    line = single_error_line(res.stderr)
    assert "0.0.0.0" in line
    assert "--allow-remote" in line


def test_allow_remote_starts_and_warns(cli, tmp_path):
    port = free_port()
    p, err, _ = start(cli, "serve", "--listen", f"0.0.0.0:{port}", "--allow-remote", port=port)
    # The warning is logged before the ready line. Traffic goes to 127.0.0.1 only.
    assert http_get(p.port, "nosuch.localhost")[0] == 404
    warnings = [
        line for line in err.buf.decode().splitlines() if "WARNING" in line and "0.0.0.0" in line
    ]
    assert warnings, err.buf
    rc, _ = stop(p, err)
    assert rc == 0


# --- config lookup ------------------------------------------------------------------------


def test_no_config_anywhere_serves_empty_table(cli, tmp_path):
    p, _, ready = start(cli, "serve")
    assert "0 route(s)" in ready
    assert http_get(p.port, "api.localhost")[0] == 404


def test_devrouter_yaml_in_cwd_is_used(cli, tmp_path):
    (tmp_path / "devrouter.yaml").write_text(f"routes:\n  local: {free_port()}\n")
    p, _, ready = start(cli, "serve")
    assert "devrouter.yaml" in ready
    assert "1 route(s)" in ready
    assert http_get(p.port, "local.localhost")[0] == 502  # routed, nothing listening


def test_env_config_wins_over_cwd_file(cli, tmp_path):
    (tmp_path / "devrouter.yaml").write_text(f"routes:\n  local: {free_port()}\n")
    env_cfg = tmp_path / "elsewhere" / "env.yaml"
    env_cfg.parent.mkdir()
    env_cfg.write_text(f"routes:\n  fromenv: {free_port()}\n")
    env = cli_env(
        HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"), DEVROUTER_CONFIG=str(env_cfg)
    )
    p, _, ready = start(cli, "serve", env=env)
    assert "env.yaml" in ready
    assert http_get(p.port, "fromenv.localhost")[0] == 502
    assert http_get(p.port, "local.localhost")[0] == 404


def test_xdg_config_used_when_nothing_else(cli, tmp_path):
    xdg_cfg = tmp_path / "xdg" / "devrouter" / "config.yaml"
    xdg_cfg.parent.mkdir(parents=True)
    xdg_cfg.write_text(f"routes:\n  fromxdg: {free_port()}\n")
    p, _, ready = start(cli, "serve")
    assert "config.yaml" in ready
    assert http_get(p.port, "fromxdg.localhost")[0] == 502


# --- check --------------------------------------------------------------------------------


def test_check_valid_prints_route_table(tmp_path):
    cfg = tmp_path / "ok.yaml"
    cfg.write_text(
        "routes:\n  api: 4001\n  web:\n    port: 5173\n    paths:\n      /api: 4001\n"
        '  "*.shop": 4200\n'
    )
    res = run_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    out = res.stdout
    assert "http://api.localhost:7355/" in out
    assert "http://web.localhost:7355/" in out
    assert "shop.localhost:7355" in out
    assert "4001" in out and "5173" in out and "4200" in out
    assert "/api" in out


def test_check_invalid_exits_1_naming_file_and_line(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("routes:\n  api: 4001\n  web:\n    prot: 5173\n")
    res = run_cli("check", "--config", str(cfg), cwd=tmp_path)
    assert res.returncode == 1
    line = single_error_line(res.stderr)
    assert re.search(rf"{re.escape(str(cfg))}:[34]\b", line), line
    assert "Traceback" not in res.stdout


# --- hot reload through the CLI -----------------------------------------------------------


async def test_hot_reload_through_cli(cli, backend, tmp_path):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text="hot backend")

    app = web.Application()
    app.router.add_get("/", hello)
    port = await backend(app)
    cfg = tmp_path / "conf" / "devrouter.yaml"
    cfg.parent.mkdir()
    cfg.write_text(f"routes:\n  other: {free_port()}\n")
    p, stderr, _ = await asyncio.to_thread(start, cli, "serve", "--config", str(cfg))

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:

        async def status(name: str) -> int:
            async with s.get(
                f"http://127.0.0.1:{p.port}/", headers={"Host": f"{name}.localhost"}
            ) as resp:
                await resp.read()
                return resp.status

        async def wait_status(name: str, want: int) -> int:
            deadline = asyncio.get_running_loop().time() + RELOAD_WAIT_S
            got = await status(name)
            while got != want and asyncio.get_running_loop().time() < deadline:
                await asyncio.sleep(0.1)
                got = await status(name)
            return got

        assert await status("hot") == 404
        cfg.write_text(f"routes:\n  other: {free_port()}\n  hot: {port}\n")
        assert await wait_status("hot", 200) == 200

        cfg.write_text("routes:\n  hot: [unclosed\n")
        err = await asyncio.to_thread(stderr.until, "keeping the last good config", 10)
        assert str(cfg) in err or cfg.name in err
        assert await status("hot") == 200

        cfg.write_text(f"routes:\n  hot: {port}\n  hot2: {port}\n")
        assert await wait_status("hot2", 200) == 200
        assert await status("hot") == 200
    assert p.proc.poll() is None


# --- demo ---------------------------------------------------------------------------------


def test_demo_serves_web_and_api(cli, tmp_path):
    p, err, _ = start(cli, "demo")
    out = read_stdout_until(p, "Ctrl-C")
    assert f"http://web.localhost:{p.port}/" in out
    assert f"http://api.localhost:{p.port}/" in out

    status, headers, body = http_get(p.port, "web.localhost")
    assert status == 200
    assert headers["content-type"].startswith("text/html")
    assert b"Hello from" in body and b"web.localhost" in body

    status, headers, body = http_get(p.port, "web.localhost", "/api/time")
    assert status == 200
    assert headers["content-type"].startswith("application/json")
    data = json.loads(body)
    assert data["service"] == "api"
    assert data["path"] == "/api/time"

    status, _, body = http_get(p.port, "api.localhost", "/api/time")
    assert status == 200
    assert json.loads(body)["service"] == "api"

    # the same names over HTTPS on the same port, verified against the demo's local CA
    assert f"https://web.localhost:{p.port}/" in out and "devrouter trust" in out
    ca = tmp_path / ".local" / "state" / "devrouter" / "ca" / "ca.pem"
    context = ssl.create_default_context(cafile=str(ca))
    conn = http.client.HTTPSConnection("127.0.0.1", p.port, timeout=10, context=context)
    conn.sock = context.wrap_socket(
        socket.create_connection(("127.0.0.1", p.port), timeout=10),
        server_hostname="web.localhost",
    )
    conn.request("GET", "/", headers={"Host": f"web.localhost:{p.port}"})
    answer = conn.getresponse()
    assert answer.status == 200 and b"Hello from" in answer.read()
    conn.close()
    rc, _ = stop(p, err)
    assert rc == 0
