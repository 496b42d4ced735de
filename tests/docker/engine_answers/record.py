"""Record the real Engine's answers in this directory (README.md says what each file is).

Run as root from the repository: `.venv/bin/python tests/docker/engine_answers/record.py`.
It starts a private dockerd (tests/docker/dockerd.py), so it needs what the Docker tests need.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.parse
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from dockerd import CLI_S, POLL_S, DockerdError, PrivateDockerd, service  # noqa: E402

#: The Engine API version the answers are asked for (the oldest Docker 20.10 speaks fully).
API = "/v1.41"
#: How long the healthcheck of shop's api may take to say healthy, in seconds.
HEALTHY_S = 30.0
#: How long curl keeps the event stream open at most, in seconds; it is stopped earlier.
EVENTS_S = 60

EVENT_FILTERS = json.dumps({"type": ["container"]}, separators=(",", ":"))


def shop_services() -> dict[str, dict[str, Any]]:
    """shop: web publishes container port 8080 on every address (0.0.0.0 and ::), api
    publishes 80 on 127.0.0.1 and has a healthcheck (so Status says "(healthy)")."""
    return {
        "web": service("web", ports=["8080"], serve_ports=(8080,)),
        "api": service(
            "api",
            healthcheck={
                "test": ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1/"],
                "interval": "1s",
                "timeout": "1s",
                "retries": 3,
            },
        ),
    }


def write_json(name: str, value: Any) -> None:
    (HERE / name).write_text(json.dumps(value, indent=2) + "\n")
    print(f"wrote {name}", file=sys.stderr)


def record_events(daemon: PrivateDockerd) -> None:
    """events.jsonl: the raw stream while a container is run, stopped, started, renamed,
    killed and removed, then a Compose project is brought up, its api's healthcheck runs
    (exec_* and health_status events) until healthy, and the project is brought down."""
    url = f"http://localhost{API}/events?filters={urllib.parse.quote(EVENT_FILTERS)}"
    out = HERE / "events.jsonl"
    with out.open("wb") as sink:
        curl = subprocess.Popen(
            ["curl", "-sN", "--max-time", str(EVENTS_S), "--unix-socket", str(daemon.socket), url],
            stdout=sink,
        )
        try:
            time.sleep(0.5)  # the stream is open before the first event
            daemon.run("ev", labels={"devrouter.name": "events"})
            daemon.answer("ev")
            daemon.docker("stop", "ev")
            daemon.docker("start", "ev")
            daemon.docker("rename", "ev", "ev-renamed")
            daemon.docker("kill", "ev-renamed")
            daemon.docker("rm", "ev-renamed")
            daemon.compose("shop", shop_services(), "up", "-d")
            wait_healthy(daemon, _service_id(daemon, "shop", "api"))
            daemon.compose("shop", shop_services(), "down")
            time.sleep(0.5)  # the last events are written before curl stops
        finally:
            curl.terminate()
            curl.wait(timeout=CLI_S)
    for line in out.read_text().splitlines():
        json.loads(line)  # one JSON object per line, or this fails
    print("wrote events.jsonl", file=sys.stderr)


def _service_id(daemon: PrivateDockerd, project: str, name: str) -> str:
    query = json.dumps({"label": [f"com.docker.compose.project={project}"]})
    found = daemon.api(f"{API}/containers/json?filters={urllib.parse.quote(query)}")
    return str(next(c["Id"] for c in found if c["Labels"]["com.docker.compose.service"] == name))


def wait_healthy(daemon: PrivateDockerd, container_id: str) -> None:
    deadline = time.monotonic() + HEALTHY_S
    while time.monotonic() < deadline:
        state = daemon.api(f"{API}/containers/{container_id}/json")["State"]
        if state.get("Health", {}).get("Status") == "healthy":
            return
        time.sleep(POLL_S)
    raise DockerdError(f"{container_id} not healthy within {HEALTHY_S} s")


def record_containers(daemon: PrivateDockerd) -> None:
    """containers_json.json and container_inspect.json (see README.md for the set)."""
    daemon.compose("shop", shop_services(), "up", "-d")
    daemon.run("blog")
    # Exposes 80 (as images such as nginx do) but publishes nothing.
    daemon.run("quiet", publish=(), extra=("--expose", "80"))
    daemon.run(
        "docs",
        publish=("127.0.0.1::80", "127.0.0.1::8080"),
        serve_ports=(80, 8080),
        labels={"devrouter.name": "docs,manual", "devrouter.port": "8080"},
    )
    daemon.run("hidden", labels={"devrouter.enable": "false"})
    daemon.run("old")
    daemon.answer("old")
    daemon.docker("stop", "old")
    api_id = _service_id(daemon, "shop", "api")
    wait_healthy(daemon, api_id)
    for name in ("blog", "docs", api_id):
        daemon.answer(name)
    write_json("containers_json.json", daemon.api(f"{API}/containers/json?all=1"))
    write_json("container_inspect.json", daemon.api(f"{API}/containers/{api_id}/json"))


def record_ping_and_version(daemon: PrivateDockerd) -> None:
    status, headers, body = daemon.request("GET", "/_ping")
    lines = [f"HTTP/1.1 {status}", *(f"{k}: {v}" for k, v in headers), "", body.decode()]
    (HERE / "ping.txt").write_text("\n".join(lines) + "\n")
    print("wrote ping.txt", file=sys.stderr)
    write_json("version.json", daemon.api("/version"))


def main() -> int:
    daemon = PrivateDockerd()
    try:
        daemon.start()
        daemon.image()
        record_ping_and_version(daemon)
        record_events(daemon)
        record_containers(daemon)
    finally:
        daemon.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
