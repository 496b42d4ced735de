"""devrouter.services.commands: the `ls` table, the command line of run/ls/url/port/alias/
stop, and `url` finding the router like every other command (through the real CLI)."""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from dev_harness import Dev, make_dev

from devrouter.services import commands
from devrouter.services.commands import add_parser, format_routes


def route(name: str, port: int, **extra: Any) -> dict[str, Any]:
    return {
        "url": f"http://{name}.localhost:7355/",
        "port": port,
        "source": "config",
        "owner_pid": None,
        "listening": True,
        **extra,
    }


ROUTER = {"url": "http://localhost:7355", "pid": 42}


@pytest.mark.parametrize(
    ("routes", "conflicts", "expected"),
    [
        ([], [], ["no routes (router http://localhost:7355, pid 42)"]),
        (
            [route("a", 4001), route("b", 4002, listening=False)],
            [],
            [
                "URL                        PORT  SOURCE      PID  STATUS",
                "http://a.localhost:7355/   4001  config        -  listening",
                "http://b.localhost:7355/   4002  config        -  not listening",
            ],
        ),
        (
            [
                route("web.shop", 17001, source="stack", stack="shop", owner_pid=7,
                      listening=False),
                route("api", 17002, source="run", owner_pid=8, exit_code=1, listening=False),
                route("x", 17003, paths=[{"prefix": "/api", "port": 17004}]),
            ],
            ["route 'api' in the config clashes"],
            [
                "URL                               PORT  SOURCE      PID  STATUS",
                "http://api.localhost:7355/       17002  run           8  exited (1)",
                "http://x.localhost:7355/         17003  config        -  listening",
                "                                 17004  /api",
                "stack shop:",
                "http://web.shop.localhost:7355/  17001  stack         7  starting",
                "clash: route 'api' in the config clashes",
            ],
        ),
    ],
)  # fmt: skip
def test_format_routes(routes, conflicts, expected):
    assert format_routes(routes, conflicts, ROUTER).split("\n") == expected


def test_every_command_has_its_handler():
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"), [])
    handlers = {
        ("run", "--", "true"): commands.cmd_run,
        ("ls",): commands.cmd_ls,
        ("list", "--json"): commands.cmd_ls,
        ("url", "api"): commands.cmd_url,
        ("port", "api"): commands.cmd_port,
        ("alias", "api", "4001"): commands.cmd_alias,
        ("stop",): commands.cmd_stop,
    }
    for argv, handler in handlers.items():
        assert parser.parse_args(list(argv)).handler is handler, argv


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from make_dev(tmp_path)


def test_url_without_a_router_uses_the_configs_listen_before_the_environment(dev):
    configured = free_port()
    project = dev.tmp / "project"
    project.mkdir()
    (project / "devrouter.yaml").write_text(f"listen: 127.0.0.1:{configured}\nroutes: {{}}\n")
    res = dev.cli("url", "web.shop", cwd=project)
    assert res.returncode == 0, res.stderr
    assert res.stdout == f"http://web.shop.localhost:{configured}\n"
    # Elsewhere, $DEVROUTER_LISTEN (where `run` would start one); nothing was started.
    assert dev.cli("url", "api").stdout == f"http://api.localhost:{dev.port}\n"
    assert not (dev.home / "control.sock").exists()


def test_url_of_a_bad_name_is_a_usage_error(dev):
    res = dev.cli("url", "no_underscores")
    assert res.returncode == 2
    assert res.stderr.startswith("devrouter: 'no_underscores' is not a usable name")
