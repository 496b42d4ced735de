"""devrouter.services.control: the registration channel.

In-process tests run a real ControlServer on a real unix socket over a real State; the
end-to-end ones go through the CLI (`dev` fixture from test_run) to show that the socket is
private and that nothing on the HTTP side can add a route.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
from conftest import make_config
from dev_harness import Dev, http_get, make_dev

from devrouter.core.model import Config, ListenAddr
from devrouter.core.state import State
from devrouter.services import client, control, procs, registry
from devrouter.services.client import Channel, ControlError
from devrouter.services.control import ControlServer

#: A Python interpreter that another user can execute (the venv's may sit under /root).
SYSTEM_PYTHON = next(
    (p for p in ("/usr/bin/python3", "/usr/local/bin/python3") if os.path.exists(p)), ""
)
#: Longest wait for the router to notice a change, in seconds.
NOTICE_S = 5.0


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Callable[..., ControlServer]]:
    started: list[ControlServer] = []

    async def start(config: Config | None = None, directory: Path | None = None) -> ControlServer:
        srv = ControlServer(State(config or Config()), directory or tmp_path / "h")
        srv.listen = (ListenAddr("127.0.0.1", 7355),)
        await srv.start()
        started.append(srv)
        return srv

    yield start  # type: ignore[misc]
    for srv in started:
        await srv.close()


async def eventually(check: Callable[[], bool], what: str, timeout_s: float = NOTICE_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while asyncio.get_running_loop().time() < deadline:
        if check():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


async def acall(directory: Path, op: str, **fields: object) -> dict[str, object]:
    """One request on a fresh connection, without blocking the loop the server runs on."""
    ch = await Channel.open(directory)
    try:
        return await ch.call(op, **fields)
    finally:
        await ch.close()


def svc(name: str = "api", port: int = 4001, **extra: object) -> dict[str, object]:
    return {"name": name, "port": port, "command": "uvicorn app:app", "source": "run", **extra}


# --- permissions --------------------------------------------------------------------------


async def test_socket_is_owner_only_in_an_owner_only_directory(server, tmp_path):
    await server()
    home = tmp_path / "h"
    assert stat.S_IMODE(os.stat(home).st_mode) == 0o700
    st = os.stat(home / "control.sock")
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.geteuid()
    assert (home / "router.pid").read_text().strip() == str(os.getpid())


def _connect_as_nobody(path: Path) -> str:
    code = (
        "import socket, sys\n"
        "s = socket.socket(socket.AF_UNIX)\n"
        "try:\n"
        "    s.connect(sys.argv[1])\n"
        '    s.sendall(b\'{"op": "status"}\\n\')\n'
        "    print('reply', s.recv(4096))\n"
        "except OSError as e:\n"
        "    print(type(e).__name__)\n"
    )
    res = subprocess.run(
        [SYSTEM_PYTHON, "-c", code, str(path)],
        user=65534,
        group=65534,
        capture_output=True,
        text=True,
        timeout=20,
        cwd="/",
    )
    return res.stdout.strip() + res.stderr.strip()


@pytest.mark.skipif(
    os.geteuid() != 0 or not SYSTEM_PYTHON, reason="needs root and a python others can run"
)
async def test_another_user_cannot_use_the_socket(server):
    base = Path(tempfile.mkdtemp(prefix="drc", dir="/tmp"))
    try:
        os.chmod(base, 0o755)
        srv = await server(directory=base / "h")
        sock = base / "h" / "control.sock"
        loop = asyncio.get_running_loop()  # the server must keep running meanwhile
        # 1. The 0700 directory keeps others out.
        assert "PermissionError" in await loop.run_in_executor(None, _connect_as_nobody, sock)
        # 2. So does the 0600 socket, even in an open directory.
        os.chmod(base / "h", 0o755)
        assert "PermissionError" in await loop.run_in_executor(None, _connect_as_nobody, sock)
        # 3. And the peer check, even on an open socket: no reply, no route.
        os.chmod(sock, 0o666)
        out = await loop.run_in_executor(None, _connect_as_nobody, sock)
        assert any(s in out for s in ("reply b''", "ConnectionReset", "BrokenPipe")), out
        assert srv.state.snapshot.table.routes == ()
    finally:
        shutil.rmtree(base, ignore_errors=True)


# --- registration -------------------------------------------------------------------------


async def test_register_routes_until_the_connection_closes(server):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    reply = await ch.call("register", routes=[svc(paths={"/ws": 4002})])
    assert reply == {"ok": True, "warnings": []}
    route = srv.state.snapshot.table.lookup("api")
    assert route is not None
    assert (route.upstream.port, route.source, route.owner_pid) == (4001, "run", os.getpid())
    assert [(p.prefix, p.upstream.port) for p in route.paths] == [("/ws", 4002)]
    listed = await acall(srv.state_dir, "list")
    assert [r["name"] for r in listed["routes"]] == ["api"]
    await ch.close()
    await eventually(lambda: srv.state.snapshot.table.lookup("api") is None, "the drop")


async def test_a_live_holder_is_named_when_a_name_is_refused(server):
    srv = await server()
    first = await Channel.open(srv.state_dir)
    await first.call("register", routes=[svc()])
    second = await Channel.open(srv.state_dir)
    with pytest.raises(ControlError) as err:
        await second.call("register", routes=[svc(port=5000, command="other")])
    assert f"pid {os.getpid()}" in str(err.value)
    assert "uvicorn app:app" in str(err.value)
    assert srv.state.snapshot.table.lookup("api").upstream.port == 4001  # type: ignore[union-attr]
    who = await second.call("who", name="api")
    assert who["owner"]["pid"] == os.getpid()
    await first.close()
    await second.close()


async def test_registration_is_all_or_nothing(server):
    srv = await server()
    a = await Channel.open(srv.state_dir)
    await a.call("register", routes=[svc("web.shop")])
    b = await Channel.open(srv.state_dir)
    with pytest.raises(ControlError):
        await b.call("register", routes=[svc("api.shop"), svc("web.shop")])
    assert srv.state.snapshot.table.lookup("api.shop") is None
    await a.close()
    await b.close()


async def test_unregister_and_updates(server):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    await ch.call("register", routes=[svc()])
    await ch.call("update", name="api", ready=True, lines=["a", "b"], pgid=12345)
    service = srv.service("api")
    assert service is not None
    assert (service.ready, service.pgid, srv.output("api")) == (True, 12345, ("a", "b"))
    await ch.call("update", name="api", exit_code=1, lines=["boom"])
    assert (service.ready, service.exit_code) == (False, 1)
    assert (await ch.call("output", name="api"))["lines"] == ["a", "b", "boom"]
    await ch.call("update", name="api", lines=[f"l{i}" for i in range(100)])
    assert len(srv.output("api")) == client.OUTPUT_LINES
    await ch.call("unregister")
    assert srv.state.snapshot.table.lookup("api") is None
    assert (await ch.call("ping")) == {"ok": True}  # the connection stays usable
    await ch.close()


async def test_listens_on_is_kept_served_and_cleared(server):
    """`listens_on`: the ports a starting command listens on instead of its own, for the
    503 page and doctor; in `who` and `list`, gone when the command exits."""
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    await ch.call("register", routes=[svc()])
    service = srv.service("api")
    assert service is not None and service.listens_on == ()
    await ch.call("update", name="api", listens_on=[8001, 8000, 8000])
    assert service.listens_on == (8000, 8001)
    owner = (await ch.call("who", name="api"))["owner"]
    assert isinstance(owner, dict) and owner["listens_on"] == [8000, 8001]
    (route,) = (await ch.call("list"))["routes"]
    assert route["listens_on"] == [8000, 8001]
    await ch.call("update", name="api", listens_on=[])  # it listens on its port now
    assert service.listens_on == ()
    await ch.call("update", name="api", listens_on=[8000])
    await ch.call("update", name="api", exit_code=1)
    assert service.listens_on == ()
    await ch.close()


@pytest.mark.parametrize(
    "value",
    [8000, [0], [65536], ["8000"], [True], list(range(8000, 8000 + registry.MAX_LISTENS_ON + 1))],
)
async def test_a_malformed_listens_on_is_refused_and_changes_nothing(server, value):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    await ch.call("register", routes=[svc()])
    await ch.call("update", name="api", listens_on=[8000])
    with pytest.raises(ControlError, match="listens_on of 'api'"):
        await ch.call("update", name="api", listens_on=value, ready=True)
    service = srv.service("api")
    assert service is not None and (service.listens_on, service.ready) == ((8000,), False)
    with pytest.raises(ControlError, match="listens_on"):
        await ch.call("register", routes=[svc("web", 4002, listens_on=value)])
    assert srv.service("web") is None
    await ch.close()


async def test_a_dead_owner_is_dropped_by_the_liveness_check(server, monkeypatch):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    await ch.call("register", routes=[svc()])
    monkeypatch.setattr(control, "process_alive", lambda pid, started=None: False)
    await eventually(
        lambda: srv.state.snapshot.table.lookup("api") is None,
        "the liveness check",
        control.LIVENESS_INTERVAL_S * 3,
    )
    await ch.close()


async def test_sigkilled_registrant_loses_its_route_and_its_process_group(server):
    srv = await server()
    code = (
        "import asyncio, os, subprocess, sys\n"
        "from pathlib import Path\n"
        "from devrouter.services.client import Registration\n"
        "async def main():\n"
        "    reg = Registration(Path(sys.argv[1]), [{'name': 'api', 'port': 4001}])\n"
        "    await reg.open()\n"
        "    child = subprocess.Popen(['sleep', '60'], process_group=0)\n"
        "    reg.update('api', pgid=child.pid)\n"
        "    await reg.flush()\n"
        "    print(child.pid, flush=True)\n"
        "    await asyncio.sleep(60)\n"
        "asyncio.run(main())\n"
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, str(srv.state_dir), stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    child = int(await asyncio.wait_for(proc.stdout.readline(), 20))
    assert srv.state.snapshot.table.lookup("api") is not None
    proc.kill()
    await proc.wait()
    await eventually(lambda: srv.state.snapshot.table.lookup("api") is None, "the drop")

    def group_gone() -> bool:
        try:
            os.killpg(child, 0)
        except ProcessLookupError:
            return True
        return False

    await eventually(group_gone, "the orphaned group to be stopped", procs.STOP_GRACE_S + 5)


async def test_config_clash_is_reported_and_the_config_wins(server):
    srv = await server(make_config({"api": 4999}))
    ch = await Channel.open(srv.state_dir)
    reply = await ch.call("register", routes=[svc()])
    assert len(reply["warnings"]) == 1
    assert "clashes" in reply["warnings"][0]
    assert srv.state.snapshot.table.lookup("api").upstream.port == 4999  # type: ignore[union-attr]
    assert (await ch.call("list"))["conflicts"]
    await ch.close()


@pytest.mark.parametrize(
    ("message", "error"),
    [
        ({"op": "register", "routes": [svc(port=7355)]}, "own port"),
        ({"op": "register", "routes": [svc(paths={"/x": 7355})]}, "own port"),
        ({"op": "register", "routes": [svc(name="*.wild")]}, "not a usable name"),
        ({"op": "register", "routes": [svc(name="devrouter")]}, "reserved"),
        ({"op": "register", "routes": [svc(port=70000)]}, "1 to 65535"),
        ({"op": "register", "routes": [svc(port=True)]}, "1 to 65535"),
        ({"op": "register", "routes": [svc(paths={"x": 1})]}, "start with '/'"),
        ({"op": "register", "routes": []}, "non-empty"),
        ({"op": "register", "routes": [svc(), svc()]}, "listed twice"),
        ({"op": "update", "name": "nope"}, "not registered"),
        ({"op": "alias", "name": "db", "port": 7355}, "own port"),
        ({"op": "unalias", "name": "nope"}, "no alias"),
        ({"op": "frobnicate"}, "unknown operation"),
    ],
)
async def test_refusals(server, message, error):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    op = message.pop("op")
    with pytest.raises(ControlError, match=error):
        await ch.call(op, **message)
    await ch.close()
    assert srv.state.snapshot.table.routes == ()


async def test_garbage_and_http_on_the_socket_change_nothing(server):
    srv = await server()
    for data in (
        b"POST / HTTP/1.1\r\nHost: localhost\r\n\r\n",
        b"[1, 2]\n",
        b"x" * (client.MAX_MESSAGE_BYTES + 10) + b"\n",
    ):
        reader, writer = await asyncio.open_unix_connection(str(srv.state_dir / "control.sock"))
        writer.write(data)
        await writer.drain()
        reply = await asyncio.wait_for(reader.readline(), 5)
        assert json.loads(reply)["ok"] is False
        assert await asyncio.wait_for(reader.read(), 5) == b""  # and the connection is closed
        writer.close()
    assert srv.state.snapshot.table.routes == ()


async def test_aliases_persist_across_restarts(server, tmp_path):
    srv = await server()
    ch = await Channel.open(srv.state_dir)
    await ch.call("alias", name="db", port=8081)
    route = srv.state.snapshot.table.lookup("db")
    assert (route.upstream.port, route.source) == (8081, "alias")  # type: ignore[union-attr]
    with pytest.raises(ControlError, match="alias"):
        await ch.call("register", routes=[svc("db")])
    await ch.close()
    await srv.close()
    assert not (srv.state_dir / "control.sock").exists()
    again = await server()
    assert again.state.snapshot.table.lookup("db") is not None
    assert stat.S_IMODE(os.stat(again.state_dir / "aliases.json").st_mode) == 0o600
    await acall(again.state_dir, "unalias", name="db")
    assert again.state.snapshot.table.lookup("db") is None


async def test_a_second_router_on_the_same_state_dir_is_refused(server):
    await server()
    with pytest.raises(ControlError, match="already running"):
        await server()


async def test_a_stale_socket_is_replaced(server, tmp_path):
    home = tmp_path / "h"
    home.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(home / "control.sock"))
    stale.close()  # the file stays, nobody listens
    srv = await server()
    assert (await acall(srv.state_dir, "status"))["pid"] == os.getpid()


async def test_a_long_state_dir_path_works(server, tmp_path):
    deep = tmp_path / ("d" * 60) / ("e" * 60)
    srv = await server(directory=deep)
    assert len(str(deep / "control.sock")) > 108
    assert (await acall(srv.state_dir, "status"))["pid"] == os.getpid()
    ch = await Channel.open(deep)
    await ch.call("register", routes=[svc()])
    await ch.close()


# --- the HTTP side cannot change routes ---------------------------------------------------


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from make_dev(tmp_path)


def test_no_http_request_can_add_a_route(dev):
    import http.client

    assert dev.cli("run", "boot", "--", "true").returncode == 0  # starts the router
    bodies = [
        json.dumps({"op": "register", "routes": [{"name": "evil", "port": 22}]}),
        json.dumps({"op": "alias", "name": "evil", "port": 22}),
        "routes:\n  evil: 22\n",
    ]
    for host in ("localhost", "devrouter.localhost", "127.0.0.1", "evil.localhost"):
        for method in ("POST", "PUT", "PATCH", "DELETE", "GET"):
            for path in ("/", "/api/routes", "/routes/evil", "/_/register", "/control"):
                for body in bodies:
                    conn = http.client.HTTPConnection("127.0.0.1", dev.port, timeout=10)
                    try:
                        conn.request(
                            method,
                            path,
                            body=body,
                            headers={"Host": host, "Content-Type": "application/json"},
                        )
                        conn.getresponse().read()
                    finally:
                        conn.close()
    # The control protocol's bytes sent to the HTTP port are just a bad request.
    with socket.create_connection(("127.0.0.1", dev.port), timeout=10) as s:
        s.sendall(bodies[1].encode() + b"\n")
        s.recv(4096)
    listed = json.loads(dev.cli("ls", "--json").stdout)
    assert listed["routes"] == []
    assert not (dev.home / "aliases.json").exists()
    assert http_get(dev.port, "evil.localhost")[0] == 404
