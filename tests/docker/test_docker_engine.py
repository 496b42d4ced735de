"""Issue 15 end to end: a real, private dockerd (tests/docker/dockerd.py), real Compose, and
the real `devrouter serve` in a subprocess with no devrouter config for the containers.

`compose up` of a project with `web` and `api` -> `web.shop.localhost` and
`api.shop.localhost` answer through the router with each container's own text; a container
started later appears; `stop` takes its route away; the Engine killed -> the router and its
config route keep working, and the containers' routes come back when it returns. `ls` and
`doctor` say the same. Skips, with the reason, where dockerd cannot run (not root, no apt).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import CliProcess, cli_env, text_backend
from dockerd import PrivateDockerd, service

#: Upper bound for a change in the Engine to show in the router, in seconds (it takes well
#: under one; Compose and dockerd themselves are the slow part on a loaded machine).
CHANGE_S = 20.0
POLL_S = 0.05


def get(port: int, host: str, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": f"{host}:{port}"})
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    finally:
        conn.close()


def until(check: Callable[[], Any], what: str, timeout_s: float = CHANGE_S) -> Any:
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
        except OSError as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(POLL_S)
    raise AssertionError(f"not within {timeout_s} s: {what} (last: {last!r})")


def answers(port: int, host: str, text: str) -> Callable[[], bool]:
    return lambda: get(port, host) == (200, text + "\n")


@pytest.fixture
def backend_port() -> Iterator[int]:
    """A plain backend of the config's own route, on 127.0.0.1."""
    with text_backend(b"plain\n") as port:
        yield port


def status(port: int) -> dict[str, Any]:
    code, body = get(port, "localhost", "/api/status")
    assert code == 200
    doc: dict[str, Any] = json.loads(body)
    return doc


def devrouter(tmp_path: Path, dockerd: PrivateDockerd, *args: str) -> str:
    env = cli_env(HOME=str(tmp_path), DOCKER_HOST=dockerd.host, DEVROUTER_HOME=str(tmp_path / "st"))
    proc = subprocess.run(
        [sys.executable, "-m", "devrouter", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    return proc.stdout + proc.stderr


@pytest.mark.timeout(240)
def test_compose_services_and_containers_are_named_live(
    dockerd: PrivateDockerd,
    cli: Callable[..., CliProcess],
    tmp_path: Path,
    backend_port: int,
) -> None:
    config = tmp_path / "devrouter.yaml"
    config.write_text(f"routes:\n  plain: {backend_port}\n")
    env = cli_env(HOME=str(tmp_path), DOCKER_HOST=dockerd.host, DEVROUTER_HOME=str(tmp_path / "st"))
    router = cli("serve", "--config", str(config), env=env)
    port = router.port

    # the "done": compose up, and both names answer, with no devrouter config
    dockerd.compose(
        "shop",
        {
            "web": service("shop web"),  # on 127.0.0.1: a test publishes nothing wider
            "api": service("shop api"),
            "db": service("db", ports=[]),
        },
        "up",
        "-d",
    )
    until(answers(port, "web.shop.localhost", "shop web"), "web.shop answers")
    until(answers(port, "api.shop.localhost", "shop api"), "api.shop answers")
    assert get(port, "plain.localhost") == (200, "plain\n")
    doc = status(port)
    assert doc["docker"]["state"] == "connected"
    api = next(r for r in doc["routes"] if r["name"] == "api.shop")
    assert api["source"] == "docker" and api["stack"] == "shop"
    assert api["container"]["project"] == "shop" and api["container"]["service"] == "api"
    assert api["container"]["image"] == "local/busybox"
    db = next(c for c in doc["docker"]["containers"] if c["service"] == "db")
    assert db["names"] == [] and "publishes no port" in db["reason"]

    listing = devrouter(tmp_path, dockerd, "ls")
    assert "compose shop:" in listing and "http://api.shop.localhost" in listing
    assert "has no route: it publishes no port" in listing
    report = devrouter(tmp_path, dockerd, "doctor")
    assert "watching the Docker Engine at" in report
    assert "has no route: it publishes no port" in report

    # a container started later appears; stopped, its route is gone
    dockerd.run("blog", text="blog")
    until(answers(port, "blog.localhost", "blog"), "a new container answers")
    dockerd.docker("rename", "blog", "journal")
    until(answers(port, "journal.localhost", "blog"), "a renamed container's new name")
    assert get(port, "blog.localhost")[0] == 404
    dockerd.docker("stop", "-t", "1", "journal")
    until(lambda: get(port, "journal.localhost")[0] == 404, "a stopped container's route goes")

    # labels: another name, and one container opted out
    dockerd.run("labelled", text="docs", labels={"devrouter.name": "docs,manual"})
    dockerd.run("hidden", labels={"devrouter.enable": "false"})
    until(answers(port, "manual.localhost", "docs"), "a label's second name")
    assert get(port, "docs.localhost") == (200, "docs\n")
    until(
        lambda: any(
            c["name"] == "hidden" and "opted out" in (c["reason"] or "")
            for c in status(port)["docker"]["containers"]
        ),
        "the opted-out container is listed with its reason",
    )
    assert get(port, "hidden.localhost")[0] == 404

    # the Engine goes away: the router and its config route keep working
    dockerd.kill()
    until(lambda: status(port)["docker"]["state"] == "unreachable", "the Engine is gone")
    assert get(port, "plain.localhost") == (200, "plain\n")
    assert get(port, "api.shop.localhost")[0] == 404
    assert "not reachable" in devrouter(tmp_path, dockerd, "doctor")

    # ... and comes back: a full list on reconnect brings the containers' names back
    dockerd.restart()
    shop = dockerd.docker("ps", "-aq", "--filter", "label=com.docker.compose.project=shop")
    dockerd.docker("start", *shop.stdout.split())
    until(answers(port, "api.shop.localhost", "shop api"), "api.shop after the Engine returned")
    until(answers(port, "web.shop.localhost", "shop web"), "web.shop after the Engine returned")
    assert status(port)["docker"]["state"] == "connected"
    router.proc.terminate()
