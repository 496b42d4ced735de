"""Port 80 without running as root (issue 16): systemd socket activation
(devrouter.server.activation, run with `systemd-socket-activate`, which does what a .socket
unit does without PID 1), the CAP_NET_BIND_SERVICE capability (`setpriv`), and the one line
said when the port is refused. The unprivileged cases run the real CLI as `nobody`; they need
root to set that up and skip, saying so, elsewhere."""

from __future__ import annotations

import http.client
import os
import pwd
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, stop_process

from devrouter.core.errors import StartupError
from devrouter.server.activation import for_this_process, forget, inherited_address

ACTIVATE = shutil.which("systemd-socket-activate")
SETPRIV = shutil.which("setpriv")
#: Upper bound for the router to start and for one request, in seconds.
START_S = 20.0


@pytest.mark.parametrize(
    ("env", "pid", "count"),
    [
        ({}, 42, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "2"}, 42, 2),
        ({"LISTEN_PID": "41", "LISTEN_FDS": "2"}, 42, 0),  # a parent's: not ours
        ({"LISTEN_PID": "42"}, 42, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "0"}, 42, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "two"}, 42, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "-1"}, 42, 0),
        ({"LISTEN_PID": "42", "LISTEN_FDS": "65"}, 42, 0),
        ({"LISTEN_PID": " 42 ", "LISTEN_FDS": "1 "}, 42, 1),
    ],
)
def test_for_this_process(env: dict[str, str], pid: int, count: int) -> None:
    assert for_this_process(env, pid) == count


def test_forget_leaves_nothing_for_the_processes_the_router_starts() -> None:
    env = {"LISTEN_PID": "42", "LISTEN_FDS": "2", "LISTEN_FDNAMES": "a:b", "PATH": "/bin"}
    forget(env)
    assert env == {"PATH": "/bin"}


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def get(host: str, port: int, name: str) -> tuple[int, str]:
    """GET / with `Host: NAME.localhost` (`localhost` alone for the router's own page)."""
    deadline = time.monotonic() + START_S
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request(
                "GET", "/", headers={"Host": name if name == "localhost" else f"{name}.localhost"}
            )
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
        finally:
            conn.close()


class Served:
    def __init__(self, argv: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            argv, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )

    def stop(self) -> str:
        stop_process(self.proc, 10.0)
        _, err = self.proc.communicate(timeout=10)
        return err


@pytest.fixture
def home() -> Iterator[Path]:
    """A HOME (and state directory) `nobody` can write, outside root's private /tmp/pytest-*."""
    path = Path(tempfile.mkdtemp(prefix="dr-act-", dir="/tmp"))
    if os.geteuid() == 0:
        nobody = pwd.getpwnam("nobody")
        os.chown(path, nobody.pw_uid, nobody.pw_gid)
    (path / "devrouter.yaml").write_text("routes:\n  api: 9\n")
    os.chmod(path / "devrouter.yaml", 0o644)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def env_for(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DEVROUTER", "LISTEN_"))}
    env.update(HOME=str(home), DEVROUTER_HOME=str(home / "state"), PYTHONUNBUFFERED="1")
    return env


def serve_argv(home: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "devrouter",
        "serve",
        "--config",
        str(home / "devrouter.yaml"),
        *extra,
    ]


def as_nobody(*caps: str) -> list[str]:
    assert SETPRIV is not None
    argv = [SETPRIV, "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    for cap in caps:
        argv += [f"--inh-caps=+{cap}", f"--ambient-caps=+{cap}"]
    return argv


def need(*why: tuple[bool, str]) -> None:
    for ok, reason in why:
        if not ok:
            pytest.skip(reason)


@pytest.mark.timeout(60)
def test_socket_activation_serves_the_sockets_it_is_given(home: Path) -> None:
    need((ACTIVATE is not None, "systemd-socket-activate is not installed (package systemd)"))
    assert ACTIVATE is not None
    port = free_port()
    argv = [ACTIVATE, "-l", f"127.0.0.1:{port}", "--", *serve_argv(home)]
    served = Served(argv, env_for(home), home)
    try:
        assert get("127.0.0.1", port, "api")[0] == 502  # the route's service is not running
        status, body = get("127.0.0.1", port, "localhost")
        assert status == 200 and f"127.0.0.1:{port}" in body
    finally:
        err = served.stop()
    assert f"socket activation: serving 127.0.0.1:{port}" in err
    assert f"ready on http://localhost:{port}" in err


@pytest.mark.parametrize(
    ("family", "host", "listen", "allow_remote", "words"),
    [
        (socket.AF_INET, "127.0.0.1", True, False, None),
        (socket.AF_INET6, "::1", True, False, None),
        # bound, never listening: nothing can connect while the test runs
        (socket.AF_INET, "0.0.0.0", False, False, "refusing 0.0.0.0:"),
        (socket.AF_INET6, "::", False, False, "refusing [::]:"),
        (socket.AF_INET, "0.0.0.0", False, True, "is not listening"),
        (socket.AF_INET, "127.0.0.1", False, False, "is not listening"),
    ],
)
def test_an_inherited_socket_must_listen_on_loopback(
    family: int, host: str, listen: bool, allow_remote: bool, words: str | None
) -> None:
    sock = socket.socket(family, socket.SOCK_STREAM)
    fd = sock.fileno()
    try:
        sock.bind((host, 0))
        if listen:
            sock.listen(1)
        if words is None:
            assert inherited_address(sock, fd, allow_remote).host == host
        else:
            with pytest.raises(StartupError, match=re.escape(words)) as info:
                inherited_address(sock, fd, allow_remote)
            assert "socket activation" in str(info.value)
    finally:
        if sock.fileno() == -1:  # detached by the refusal: the descriptor is still ours
            os.close(fd)
        else:
            sock.close()


def test_an_inherited_socket_that_is_not_tcp_is_refused() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fd = sock.fileno()
    try:
        with pytest.raises(StartupError, match="is not a TCP socket"):
            inherited_address(sock, fd, False)
    finally:
        os.close(fd)


def _port_80_reasons() -> list[tuple[bool, str]]:
    return [
        (os.geteuid() == 0, "needs root to run the router as `nobody` and hand it port 80"),
        (SETPRIV is not None, "setpriv is not installed (package util-linux)"),
        (port_free(80), "port 80 is in use on this machine"),
    ]


@pytest.mark.timeout(60)
def test_port_80_as_nobody_through_socket_activation(home: Path) -> None:
    need(*_port_80_reasons())
    need((ACTIVATE is not None, "systemd-socket-activate is not installed (package systemd)"))
    assert ACTIVATE is not None
    argv = [ACTIVATE, "-l", "127.0.0.1:80", "--", *as_nobody(), *serve_argv(home)]
    served = Served(argv, env_for(home), home)
    try:
        status, body = get("127.0.0.1", 80, "localhost")
        assert status == 200
        # URLs carry no port number on the scheme's own port
        assert "http://api.localhost/ -> 127.0.0.1:9" in body
        owner = subprocess.run(
            ["ps", "-o", "user=", "-p", str(served.proc.pid)], capture_output=True, text=True
        )
        assert owner.stdout.strip() == "nobody"
    finally:
        err = served.stop()
    assert "ready on http://localhost (127.0.0.1:80)" in err


@pytest.mark.timeout(60)
def test_port_80_as_nobody_with_only_cap_net_bind_service(home: Path) -> None:
    need(*_port_80_reasons())
    # without the capability: refused, in one line that says what to do
    refused = subprocess.run(
        [*as_nobody(), *serve_argv(home, "--listen", "127.0.0.1:80")],
        env=env_for(home),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=START_S,
    )
    assert refused.returncode == 3
    line = refused.stderr.strip().splitlines()[-1]
    assert line.startswith("devrouter: port 80 on 127.0.0.1 needs privilege")
    assert "devrouter service install --port 80" in line and "CAP_NET_BIND_SERVICE" in line
    # with it (and nothing else): served
    argv = [*as_nobody("net_bind_service"), *serve_argv(home, "--listen", "127.0.0.1:80")]
    served = Served(argv, env_for(home), home)
    try:
        status, body = get("127.0.0.1", 80, "localhost")
        assert status == 200 and "http://api.localhost/" in body
        caps = Path(f"/proc/{served.proc.pid}/status").read_text()
        effective = int(
            next(x for x in caps.splitlines() if x.startswith("CapEff:")).split()[1], 16
        )
        assert effective == 1 << 10  # CAP_NET_BIND_SERVICE alone
    finally:
        served.stop()
