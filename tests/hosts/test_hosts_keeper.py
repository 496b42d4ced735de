"""`hosts: sync` (devrouter.hosts.keeper): the router keeps its hosts-file block current,
through the real CLI, and says once, without retrying, when it may not write the file."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

import pytest
from test_hosts_command import FOREIGN, both, entries, run

from devrouter.config.schema import parse_config
from devrouter.core.model import Route, Upstream
from devrouter.core.state import State
from devrouter.hosts import keeper as keeper_mod
from devrouter.hosts.file import NeedsPrivilege
from devrouter.hosts.keeper import HostsKeeper

#: Upper bound for the block to follow a change, in seconds (it takes about one).
FOLLOW_S = 20.0


def wait_for(check, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + FOLLOW_S
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {FOLLOW_S} s: {what}")
        time.sleep(0.05)


@pytest.mark.timeout(60)
def test_the_block_follows_the_routes_while_the_router_runs(cli, tmp_path: Path) -> None:
    hosts = tmp_path / "hosts"
    hosts.write_bytes(FOREIGN)
    config = tmp_path / "devrouter.yaml"
    config.write_text(f"hosts: {{file: {hosts}}}\nroutes:\n  api: 3001\n")
    cli("serve", "--config", str(config))
    wait_for(lambda: b"api.localhost" in hosts.read_bytes(), "the config's names")
    assert entries(hosts.read_bytes()) == both("api", "devrouter")

    assert run("alias", "db", "5432", home=tmp_path).returncode == 0
    wait_for(lambda: b"db.localhost" in hosts.read_bytes(), "a name added while it runs")
    assert entries(hosts.read_bytes()) == both("api", "db", "devrouter")
    assert hosts.read_bytes().startswith(FOREIGN)

    assert run("alias", "--remove", "db", home=tmp_path).returncode == 0
    wait_for(lambda: b"db.localhost" not in hosts.read_bytes(), "a name removed")

    config.write_text("routes:\n  api: 3001\n")  # the setting off: the file is left alone
    time.sleep(1.5)
    assert run("alias", "late", "5433", home=tmp_path).returncode == 0
    time.sleep(1.5)
    assert b"late.localhost" not in hosts.read_bytes()


async def test_a_file_it_may_not_write_is_said_once_and_not_retried(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[tuple[str, ...]] = []

    def refused(path: str, names: tuple[str, ...]) -> None:
        calls.append(names)
        raise NeedsPrivilege(Path(path), "write")

    monkeypatch.setattr(keeper_mod, "_sync", refused)
    monkeypatch.setattr(keeper_mod, "CHECK_INTERVAL_S", 0.02)
    state = State(parse_config("hosts: sync\nroutes:\n  api: 1\n", "x.yaml", own_ports=()))
    stop = asyncio.Event()
    task = asyncio.create_task(HostsKeeper(state).run(stop))
    with caplog.at_level(logging.WARNING, "devrouter.hosts"):
        await asyncio.sleep(0.3)
        state.set_dynamic([Route("db", Upstream(2), source="alias")])
        await asyncio.sleep(0.3)
        stop.set()
        await asyncio.wait_for(task, 10)
    assert calls == [("api",)]
    warnings = [r.getMessage() for r in caplog.records]
    assert warnings == [
        "hosts: sync is on, but this router may not write /etc/hosts; run `devrouter hosts "
        "sync` (it prints the sudo line) when names change, or turn the setting off"
    ]
