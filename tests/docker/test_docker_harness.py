"""The private dockerd harness itself (tests/docker/dockerd.py): Compose and standalone
containers answer on their published 127.0.0.1 ports with their own text, the daemon can be
killed and restarted, and teardown leaves no process, mount or directory behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Any

import pytest
from dockerd import (
    DockerdError,
    PrivateDockerd,
    leftovers,
    service,
    skip_reason,
    sweep_stale,
    tools_missing,
)


def _state(dockerd: PrivateDockerd, name: str) -> str:
    info: dict[str, Any] = dockerd.api(f"/containers/{name}/json")
    return str(info["State"]["Status"])


def test_nothing_is_missing_where_the_fixture_runs(dockerd: PrivateDockerd) -> None:
    assert tools_missing() is None
    assert skip_reason(probe=False) is None
    assert skip_reason() is None  # starts and stops a daemon of its own
    assert dockerd.ping()
    assert len(str(dockerd.socket)) < 100  # a unix socket path has 107 bytes at most


def test_a_compose_project_answers_on_its_published_ports(dockerd: PrivateDockerd) -> None:
    services = {"web": service("web"), "api": service("api")}
    dockerd.compose("shop", services, "up", "-d")
    try:
        containers: list[dict[str, Any]] = dockerd.api(
            '/containers/json?filters={"label":["com.docker.compose.project=shop"]}'
        )
        by_service = {c["Labels"]["com.docker.compose.service"]: c for c in containers}
        assert sorted(by_service) == ["api", "web"]
        for name, container in by_service.items():
            (port,) = container["Ports"]
            assert (port["IP"], port["PrivatePort"]) == ("127.0.0.1", 80)
            assert dockerd.answer(container["Id"]) == f"{name}\n"
    finally:
        dockerd.compose("shop", services, "down")
    assert dockerd.api('/containers/json?all=1&filters={"name":["shop"]}') == []


def test_a_standalone_container_answers_with_its_name(dockerd: PrivateDockerd) -> None:
    dockerd.run("blog")
    assert dockerd.answer("blog") == "blog\n"
    dockerd.docker("rm", "-f", "blog")


def test_a_container_serves_each_port_it_is_told(dockerd: PrivateDockerd) -> None:
    dockerd.run(
        "docs",
        text="the docs",
        serve_ports=(80, 8080),
        publish=("127.0.0.1::80", "127.0.0.1::8080"),
    )
    for private in (80, 8080):
        assert dockerd.answer("docs", private) == "the docs\n"
        assert dockerd.answer("docs", private, "/port") == f"{private}\n"
    dockerd.docker("rm", "-f", "docs")


@pytest.mark.timeout(120)
def test_kill_and_restart(dockerd: PrivateDockerd) -> None:
    dockerd.remove_all()
    dockerd.run("plain")
    dockerd.run("always", restart="always")
    dockerd.run("unless", restart="unless-stopped")
    for name in ("plain", "always", "unless"):
        assert dockerd.answer(name) == f"{name}\n"

    dockerd.kill()  # the Engine goes away: the socket refuses, the containers keep running
    assert not dockerd.ping()
    dockerd.restart()  # right away: containerd of the killed daemon may still be a zombie
    assert dockerd.ping()
    # Without --live-restore the new daemon stops what the old one ran; `always` comes back.
    # `unless-stopped` did not come back after a SIGKILL with dockerd 20.10 (it does after a
    # clean stop, below), so it is not asserted here. An exited container may still list
    # its old Ports in /containers/json after such a restart, a port that a restarted
    # container may now hold: read State, not Ports. Restarted containers get new ports.
    assert _state(dockerd, "plain") == "exited"
    assert _state(dockerd, "always") == "running"
    assert dockerd.answer("always") == "always\n"

    dockerd.docker("start", "unless")
    dockerd.restart()  # a clean stop (SIGTERM), then a start
    assert _state(dockerd, "plain") == "exited"
    assert _state(dockerd, "always") == "running"
    assert _state(dockerd, "unless") == "running"
    assert dockerd.answer("unless") == "unless\n"
    dockerd.remove_all()


@pytest.mark.timeout(120)
def test_teardown_leaves_nothing_even_after_a_kill(dockerd_available: None) -> None:
    own = PrivateDockerd()
    try:
        own.start()
        own.run("left")
        own.compose("tidy", {"web": service()}, "up", "-d")
        assert own.answer("left") == "left\n"
        left_port = own.port("left")
        own.note_bridges()
        bridges = set((own.root / "bridges").read_text().split())
        assert len(bridges) == 2  # devrouter-test and tidy_default
        (web,) = own.api('/containers/json?filters={"label":["com.docker.compose.project=tidy"]}')
        assert own.answer(web["Id"]) == web["Id"][:12] + "\n"  # no TEXT: its hostname
        own.kill()  # the shims, docker-proxy and containers outlive the daemon
        assert any("shim" in item for item in leftovers(own.root))
    finally:
        own.stop()
    assert leftovers(own.root) == []
    assert not [b for b in bridges if os.path.exists(f"/sys/class/net/{b}")]
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", left_port), timeout=5):
        pass  # docker-proxy, which names no file of the directory, is gone too


def test_a_daemon_that_cannot_start_says_why(dockerd_available: None) -> None:
    own = PrivateDockerd()
    try:
        # dockerd refuses a pid file whose process is alive: this one's.
        own.pidfile.write_text(str(os.getpid()))
        with pytest.raises(DockerdError, match="pid file found"):
            own.start()
    finally:
        own.stop()
    assert leftovers(own.root) == []


def test_the_directory_of_a_dead_test_run_is_swept(dockerd_available: None) -> None:
    own = PrivateDockerd()
    try:
        own.start()
        own.run("orphan")
        own.kill()
        # As if the pytest that made it had been killed: its owner is a process that is gone.
        gone = subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        (own.root / "owner.pid").write_text(gone.stdout)
        assert own.root in sweep_stale()
        assert leftovers(own.root) == []
    finally:
        own.stop()
