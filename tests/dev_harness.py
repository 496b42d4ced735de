"""The harness of the end-to-end tests of `devrouter run`, `up` and friends (used by
tests/services, tests/bench and tests/doctor): a backend program, HTTP helpers, and `Dev`,
an isolated state directory, router port and port range per test, with everything it
started killed at the end.

Every test gets its own state directory (DEVROUTER_HOME), its own router port
(DEVROUTER_LISTEN) and its own slice of the port range (DEVROUTER_PORTS), so tests never touch
~/.local or port 7355 and can run beside another test run. `make_dev` kills whatever is left
at the end: every process whose environment names the test's state directory (the
background router, `run`/`up` processes and their commands), then the processes it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from conftest import cli_env, free_port

#: Upper bound for one CLI command or one wait in these tests, in seconds.
WAIT_S = 15.0

SERVER = r"""
import http.server, json, os, signal, sys, threading
label = sys.argv[1] if len(sys.argv) > 1 else "server"
KEYS = ("PORT", "HOST", "DEVROUTER_URL", "DEVROUTER_INTERNAL_URL", "DEVROUTER_STACK",
        "API_URL", "API_INTERNAL_URL", "API_PORT", "WEB_URL", "WEB_PORT", "EXTRA")

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"label": label, "path": self.path, "pid": os.getpid(),
                           "env": {k: os.environ.get(k) for k in KEYS},
                           "argv": sys.argv[1:]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        if self.path.startswith("/exit/"):
            code = int(self.path.split("/")[2])
            threading.Timer(0.1, lambda: os._exit(code)).start()

    def log_message(self, *args):
        pass

port = int(os.environ["PORT"])
for a in sys.argv:
    if a.startswith("--port="):
        port = int(a.split("=", 1)[1])
server = http.server.ThreadingHTTPServer((os.environ.get("HOST", "127.0.0.1"), port), Handler)
signal.signal(signal.SIGTERM, lambda *a: os._exit(0))
print(f"{label} listening on {port}", flush=True)
print(f"{label} to stderr", file=sys.stderr, flush=True)
server.serve_forever()
"""


def http_get(port: int, host: str, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host, "Accept": "text/plain"})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def listening(port: int) -> bool:
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            try:
                s.connect((host, port))
            except OSError:
                continue
            return True
    return False


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = WAIT_S) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def pids_with_env(key: str, value: str) -> list[int]:
    """Processes whose environment has key=value (Linux /proc)."""
    needle = f"{key}={value}".encode()
    out = []
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else ():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if needle in env:
            out.append(int(entry.name))
    return out


@dataclass
class Dev:
    """One isolated devrouter world: state directory, router port and port range."""

    tmp: Path
    home: Path
    port: int
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def server(self) -> Path:
        path = self.tmp / "server.py"
        if not path.exists():
            path.write_text(SERVER)
        return path

    def cli(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devrouter", *args],
            capture_output=True,
            text=True,
            timeout=WAIT_S * 2,
            cwd=cwd or self.tmp,
            env=env or self.env,
            stdin=subprocess.DEVNULL,
        )

    def start(
        self, *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "devrouter", *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=cwd or self.tmp,
            env=env or self.env,
        )
        self.procs.append(proc)
        return proc

    def run_server(
        self, name: str, *extra: str, label: str | None = None
    ) -> subprocess.Popen[bytes]:
        return self.start(
            "run", name, *extra, "--", sys.executable, str(self.server()), label or name
        )

    def routes(self) -> list[dict[str, Any]]:
        res = self.cli("ls", "--json")
        assert res.returncode == 0, res.stderr
        return list(json.loads(res.stdout)["routes"])

    def route(self, name: str) -> dict[str, Any] | None:
        return next((r for r in self.routes() if r["name"] == name), None)

    def get(self, name: str, path: str = "/") -> tuple[int, bytes]:
        return http_get(self.port, f"{name}.localhost", path)

    def wait_up(self, name: str) -> dict[str, Any]:
        """Wait until `name` is routed and its backend answers through the router."""

        def answered() -> dict[str, Any] | None:
            try:
                status, body = self.get(name)
            except OSError:
                return None
            return json.loads(body) if status == 200 else None

        result: dict[str, Any] = wait_for(answered, f"{name} to answer through the router")
        return result

    def router_pid(self) -> int | None:
        try:
            return int((self.home / "router.pid").read_text())
        except (OSError, ValueError):
            return None

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()
        for _ in range(2):  # the router, stragglers, and anything they started
            pids = pids_with_env("DEVROUTER_HOME", str(self.home))
            pid = self.router_pid()
            if pid:
                pids.append(pid)
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)


def make_dev(tmp_path: Path) -> Iterator[Dev]:
    """The body of each test module's `dev` fixture."""
    home = tmp_path / "h"
    port = free_port()
    low = random.randrange(20000, 30000, 50)  # apart from parallel test runs
    env = cli_env(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        DEVROUTER_HOME=str(home),
        DEVROUTER_LISTEN=f"127.0.0.1:{port}",
        DEVROUTER_PORTS=f"{low}-{low + 49}",
    )
    env.pop("XDG_STATE_HOME", None)
    d = Dev(tmp_path, home, port, env)
    try:
        yield d
    finally:
        d.cleanup()


def finish(proc: subprocess.Popen[bytes], timeout_s: float = WAIT_S) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out.decode(), err.decode()


# --- a child that binds PORT is reachable by name while it runs, and gone after -----------
