"""`devrouter.services.locate`: the pure rules in tables (where the router is, what its route table
says, what counts as devrouter), then `locate` against nothing, a stand-in router and a real
one started through the CLI with its own state directory."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import BackendFactory, CliProcess, cli_env, free_port

from devrouter.core.model import DEFAULT_LOOPBACKS, ListenAddr, PathRoute, Upstream
from devrouter.services.client import call
from devrouter.services.locate import (
    Choice,
    Clues,
    HttpAnswer,
    LiveRoute,
    Located,
    choose,
    is_devrouter_answer,
    judge_answer,
    live_routes,
    locate,
)

SOCK = "/s/control.sock"
SILENT = f"no router answers on the control socket {SOCK}"
BY_SOCKET = f"found through the control socket {SOCK}"
BOTH = DEFAULT_LOOPBACKS


def status(*listen: str, **extra: Any) -> dict[str, Any]:
    return {"ok": True, "pid": 42, "version": "1.0", "listen": list(listen), **extra}


def addrs(port: int, *hosts: str) -> tuple[ListenAddr, ...]:
    return tuple(ListenAddr(h, port) for h in hosts or BOTH)


# --- where the router is -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("clues", "expected"),
    [
        # nothing says anything: the default
        (Clues(socket=SOCK), Choice(BOTH, 7355, "the default", False, SILENT)),
        # the control socket's router, on both loopbacks
        (
            Clues(socket_status=status("127.0.0.1:7400", "[::1]:7400"), socket=SOCK),
            Choice(BOTH, 7400, BY_SOCKET, True),
        ),
        # the socket beats the config file and $DEVROUTER_LISTEN
        (
            Clues(
                socket_status=status("127.0.0.1:7400"),
                socket=SOCK,
                config_listen=addrs(7500),
                config_path="/c.yaml",
                env_listen=addrs(7600),
            ),
            Choice(("127.0.0.1",), 7400, BY_SOCKET, True),
        ),
        # a flag naming the socket's port is still our router
        (
            Clues(flag_port=7400, socket_status=status("[::1]:7400"), socket=SOCK),
            Choice(("::1",), 7400, BY_SOCKET, True),
        ),
        # a flag naming another port wins, and says where ours is
        (
            Clues(
                flag_port=9000,
                flag_name="--router-port",
                socket_status=status("127.0.0.1:7400"),
                socket=SOCK,
            ),
            Choice(
                BOTH,
                9000,
                "given by --router-port",
                False,
                "the router of this state directory listens on 127.0.0.1:7400",
            ),
        ),
        (
            Clues(flag_port=9000, socket=SOCK, config_listen=addrs(7500), config_path="/c.yaml"),
            Choice(BOTH, 9000, "given by --port", False, SILENT),
        ),
        # no socket: the config file's listen address, then $DEVROUTER_LISTEN
        (
            Clues(
                socket=SOCK,
                config_listen=addrs(7500),
                config_path="/c.yaml",
                env_listen=addrs(7600),
            ),
            Choice(BOTH, 7500, "the listen address in /c.yaml", False, SILENT),
        ),
        (
            Clues(socket=SOCK, env_listen=addrs(7600, "127.0.0.1")),
            Choice(("127.0.0.1",), 7600, "$DEVROUTER_LISTEN", False, SILENT),
        ),
        # a wildcard is reached on its loopback; a LAN address is never contacted
        (
            Clues(socket_status=status("0.0.0.0:7400", "[::]:7400"), socket=SOCK),
            Choice(BOTH, 7400, BY_SOCKET, True),
        ),
        (
            Clues(socket_status=status("192.168.1.5:7400"), socket=SOCK),
            Choice(BOTH, 7400, BY_SOCKET, True),
        ),
        # an older reply with a port and no listen list
        (
            Clues(socket_status={"ok": True, "port": 7400}, socket=SOCK),
            Choice(BOTH, 7400, BY_SOCKET, True),
        ),
        # a reply that names no address is no answer
        (
            Clues(socket_status={"ok": True, "listen": ["nonsense"]}, socket=SOCK),
            Choice(BOTH, 7355, "the default", False, SILENT),
        ),
    ],
)
def test_choose(clues: Clues, expected: Choice) -> None:
    assert choose(clues) == expected


# --- the live route table -----------------------------------------------------------------


def test_live_routes_reads_every_source_and_drops_what_it_cannot_use() -> None:
    reply = {
        "routes": [
            {"name": "api", "port": 4001, "hosts": ["127.0.0.1", "::1"], "source": "config"},
            {
                "name": "web",
                "port": 17001,
                "source": "run",
                "paths": [{"prefix": "/api", "port": 4001}, {"prefix": "/api/v2", "port": 4002}],
                "listens_on": [8000, "x", 0],
            },
            {"name": "db", "port": 5432, "hosts": ["10.0.0.2"], "source": "alias"},
            {"name": "shop.web", "port": 17002, "hosts": ["::1"], "source": "stack"},
            {"name": "broken", "port": "abc"},
            {"port": 1},
            "not a route",
        ]
    }
    assert live_routes(reply) == (
        LiveRoute("api", Upstream(4001, BOTH), (), "config"),
        LiveRoute(
            "web",
            Upstream(17001, BOTH),
            (PathRoute("/api/v2", Upstream(4002)), PathRoute("/api", Upstream(4001))),
            "run",
            (8000,),
        ),
        LiveRoute("db", Upstream(5432, BOTH), (), "alias"),  # off-machine host dropped
        LiveRoute("shop.web", Upstream(17002, ("::1",)), (), "stack"),
    )
    assert live_routes({"ok": True}) is None
    assert live_routes(None) is None
    assert live_routes({"routes": []}) == ()


# --- is it devrouter? ---------------------------------------------------------------------

DOC = {"version": "1.0", "listen": ["127.0.0.1:7355"], "routes": [], "config": {}}


@pytest.mark.parametrize(
    ("doc", "header", "body", "expected"),
    [
        (DOC, False, b"{", True),
        ({"status": "ok"}, False, b"{", False),  # any app's /api/status is not devrouter
        ({"version": "1", "routes": []}, False, b"{", False),
        (None, True, b"devrouter: this route requires a secret", True),  # its 401
        (None, True, b"", True),
        (None, False, b"devrouter 0.1", True),  # an older version's page
        (None, False, b"<html>", False),
        (None, False, b"", False),
    ],
)
def test_is_devrouter_answer(doc: object, header: bool, body: bytes, expected: bool) -> None:
    assert is_devrouter_answer(doc, header, body) is expected


DEFAULT = Choice(BOTH, 7355, "the default", False, SILENT)


@pytest.mark.parametrize(
    ("answer", "answered", "devrouter", "routes"),
    [
        (None, False, None, None),
        (HttpAnswer("127.0.0.1", 404, False, b"Not Found"), True, False, None),
        (HttpAnswer("127.0.0.1", None), True, False, None),  # accepted, not HTTP
        (HttpAnswer("::1", 401, True, b"devrouter: requires a secret"), True, True, None),
        (HttpAnswer("127.0.0.1", 200, False, b'{"status": "ok"}'), True, False, None),
        (
            HttpAnswer("127.0.0.1", 200, False, json.dumps(DOC).encode()),
            True,
            True,
            (),
        ),
    ],
)
def test_judge_answer(
    answer: HttpAnswer | None, answered: bool, devrouter: bool | None, routes: object
) -> None:
    found = judge_answer(DEFAULT, answer, SOCK)
    assert (found.answered, found.is_devrouter, found.routes) == (answered, devrouter, routes)
    assert found.port == 7355 and not found.ours and found.socket == SOCK
    if answer is not None:
        assert found.host == answer.host  # the address that answered comes first


def test_located_says_where_and_how() -> None:
    found = Located(("::1",), 7400, BY_SOCKET, True)
    assert (found.address, found.base_url) == ("[::1]:7400", "http://[::1]:7400")
    assert found.describe() == f"[::1]:7400 ({BY_SOCKET})"
    assert Located(BOTH, 7355, "the default", False, SILENT).describe() == (
        f"127.0.0.1:7355 (the default; {SILENT})"
    )


# --- locate: I/O at the edge --------------------------------------------------------------


def test_nothing_running_anywhere(tmp_path: Path) -> None:
    port = free_port()
    found = locate(port=port, directory=tmp_path / "empty", env={}, cwd=tmp_path)
    assert (found.port, found.ours, found.answered) == (port, False, False)
    assert found.is_devrouter is None
    assert found.how == "given by --port"
    assert str(tmp_path / "empty" / "control.sock") in found.note


def test_config_listen_and_env_listen_without_a_router(tmp_path: Path) -> None:
    (tmp_path / "devrouter.yaml").write_text("listen: 127.0.0.1:7501\nroutes: {}\n")
    empty = tmp_path / "empty"
    found = locate(directory=empty, env={}, cwd=tmp_path, probe=False)
    assert (found.port, found.answered) == (7501, None)
    assert found.how == f"the listen address in {tmp_path / 'devrouter.yaml'}"
    found = locate(directory=empty, env={"DEVROUTER_LISTEN": "7502"}, cwd=empty, probe=False)
    assert (found.port, found.how) == (7502, "$DEVROUTER_LISTEN")


async def test_a_stand_in_router_found_by_port(backend: BackendFactory, tmp_path: Path) -> None:
    doc = {**DOC, "routes": [{"name": "api", "port": 4001, "source": "config"}]}

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(doc)

    app = web.Application()
    app.router.add_get("/api/status", handler)
    port = await backend(app)
    found = await asyncio.to_thread(
        locate, port=port, flag="--router-port", directory=tmp_path, env={}, cwd=tmp_path
    )
    assert (found.answered, found.is_devrouter, found.ours) == (True, True, False)
    assert found.routes == (LiveRoute("api", Upstream(4001, BOTH)),)
    assert found.how == "given by --router-port" and found.version == "1.0"


def test_a_real_router_is_found_through_its_control_socket(
    cli: Callable[..., CliProcess], tmp_path: Path
) -> None:
    """`serve` on a free port with its own state directory; `alias` adds a route through the
    socket; locate finds the router there, with config and alias routes alike."""
    home = tmp_path / "state"
    config = tmp_path / "devrouter.yaml"
    config.write_text("routes:\n  api: 4001\n")
    env = cli_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "x"), DEVROUTER_HOME=str(home))
    p = cli("serve", "--config", str(config), env=env)
    call(home, "alias", name="db", port=5432)
    found = locate(directory=home, env={}, cwd=tmp_path)  # no port given, no config found
    assert (found.port, found.ours, found.answered) == (p.port, True, True)
    assert found.is_devrouter is True
    assert found.how == f"found through the control socket {home / 'control.sock'}"
    assert found.host == "127.0.0.1" and found.pid == p.proc.pid
    routes = {r.name: (r.upstream.port, r.source) for r in found.routes or ()}
    assert routes == {"api": (4001, "config"), "db": (5432, "alias")}
    # a port given that is not this router's: asked as given, and the note says where ours is
    other = free_port()
    found = locate(port=other, directory=home, env={}, cwd=tmp_path)
    assert (found.port, found.ours, found.answered) == (other, False, False)
    assert found.note == f"the router of this state directory listens on 127.0.0.1:{p.port}"
