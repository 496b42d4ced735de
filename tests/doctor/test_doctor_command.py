"""`devrouter doctor`: the pure verdicts, then the command against real sockets and processes.

Everything listens on 127.0.0.1 or ::1; helper processes are stopped at the end of each test.
"""

from __future__ import annotations

import asyncio
import io
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, BackendFactory, CliProcess, cli_env, free_port

from devrouter import __version__, doctor
from devrouter.config import ConfigError
from devrouter.doctor import Check, Listener, RouterProbe, RouteTarget
from devrouter.locate import Located, live_routes
from devrouter.reload import read_config

# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file, state or port range from the machine running the tests."""
    for key in (
        "DEVROUTER_CONFIG",
        doctor.PORT_RANGE_ENV,
        "NO_COLOR",
        "DEVROUTER_HOME",
        "DEVROUTER_LISTEN",
        "XDG_STATE_HOME",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


async def run_doctor(*argv: str) -> tuple[int, dict[str, Any]]:
    """Run `doctor --json` (in a thread: it runs its own event loop) and parse its output."""
    out = io.StringIO()
    code = await asyncio.to_thread(doctor.main, [*argv, "--json"], out)
    report = json.loads(out.getvalue())
    assert report["exit_code"] == code
    return code, report


async def run_text(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(doctor.main, list(argv), out)
    return code, out.getvalue()


def checks(report: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [c for c in report["checks"] if c["check"] == kind]


def only(report: dict[str, Any], kind: str) -> dict[str, Any]:
    found = checks(report, kind)
    assert len(found) == 1, found
    return found[0]


def write_config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "devrouter.yaml"
    path.write_text(text)
    return str(path)


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback here")


@pytest.fixture
def listening() -> Iterator[Callable[[str], int]]:
    """`port = listening("::1")`: a socket in this process listening on one address."""
    socks: list[socket.socket] = []

    def start(host: str) -> int:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        socks.append(s)
        s.bind((host, 0))
        s.listen()
        return int(s.getsockname()[1])

    yield start
    for s in socks:
        s.close()


LISTENER_CODE = (
    "import socket, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
    "print(s.getsockname()[1], flush=True); time.sleep(120)"
)


@pytest.fixture
def other_process() -> Iterator[Callable[..., tuple[subprocess.Popen[str], int]]]:
    """`proc, port = other_process(argv)`: a child process that prints the port it holds."""
    procs: list[subprocess.Popen[str]] = []

    def start(*argv: str, parse: Callable[[str], int] = int) -> tuple[subprocess.Popen[str], int]:
        proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, text=True, env=cli_env()
        )
        procs.append(proc)
        assert proc.stdout is not None
        line = proc.stdout.readline()  # bounded: the child prints at once, or exits
        return proc, parse(line)

    yield start
    for proc in procs:
        proc.kill()
        proc.wait(IO_TIMEOUT_S)
        if proc.stdout is not None:
            proc.stdout.close()


def status_app(status: dict[str, Any]) -> web.Application:
    """A stand-in router that serves /api/status with the documented keys."""

    async def handler(request: web.Request) -> web.Response:
        return web.json_response(status)

    app = web.Application()
    app.router.add_get("/api/status", handler)
    return app


def fake_status(port: int, routes: list[dict[str, Any]], error: str | None = None) -> Any:
    return {
        "version": "9.9.9",
        "listen": [f"127.0.0.1:{port}"],
        "config": {"source": "<none>", "error": error},
        "routes": routes,
    }


async def fake_router(backend: BackendFactory, routes: list[dict[str, Any]], **kw: Any) -> int:
    holder: dict[str, Any] = {}
    app = status_app(holder)
    port = await backend(app)
    holder.update(fake_status(port, routes, **kw))
    return port


# --- pure: /proc parsing -------------------------------------------------------------------

PROC_TCP = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0FA1 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 111 1
   1: 00000000:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 222 1
   2: 0100007F:BDD4 0100007F:D3AD 06 00000000:00000000 03:00000DC4 00000000     0        0 0 3
   3: 0501A8C0:0FA2 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 333 1
"""
PROC_TCP6 = """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:0FA1 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 444 1
   1: 00000000000000000000000000000000:1F90 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 555 1
"""  # noqa: E501


@pytest.mark.skipif(sys.byteorder != "little", reason="sample is little-endian /proc text")
def test_parse_proc_net_reads_listen_sockets_only() -> None:
    v4 = doctor.parse_proc_net(PROC_TCP, v6=False)
    assert [(x.host, x.port, x.uid, x.inode) for x in v4] == [
        ("127.0.0.1", 4001, 1000, 111),
        ("0.0.0.0", 8080, 0, 222),
        ("192.168.1.5", 4002, 1000, 333),
    ]
    v6 = doctor.parse_proc_net(PROC_TCP6, v6=True)
    assert [(x.host, x.port, x.inode) for x in v6] == [("::1", 4001, 444), ("::", 8080, 555)]
    assert [x.wildcard for x in v4] == [False, True, False]
    assert [x.loopback for x in v4] == [True, False, False]
    assert v6[0].where == "[::1]:4001"


def test_parse_proc_net_matches_a_real_socket(listening: Callable[[str], int]) -> None:
    port = listening("127.0.0.1")
    found = doctor.read_listeners()
    if found is None:
        pytest.skip("no /proc/net here")
    mine = [x for x in found if x.port == port]
    assert [x.host for x in mine] == ["127.0.0.1"]
    owned = doctor.with_owners(mine, 0)
    import os

    assert owned[0].pid == os.getpid()
    assert "pytest" in (owned[0].process or "") or "python" in (owned[0].process or "")


def test_unknown_owner_names_the_reason() -> None:
    assert doctor.unknown_owner(1000, 1001) == "unknown (another user's process)"
    assert "namespace" in doctor.unknown_owner(1000, 1000)


def test_cmdline_is_sanitised(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    (tmp_path / "42" / "cmdline").write_bytes(b"evil\0\x1b[31mred\nline\0" + b"x" * 500)
    text = doctor.process_cmdline(42, tmp_path)
    assert "\x1b" not in text and "\n" not in text
    assert text.startswith("evil [31mred line x")
    assert len(text) == doctor.MAX_CMDLINE_CHARS and text.endswith("...")
    assert doctor.process_cmdline(43, tmp_path) == "unknown (it has exited)"


# --- pure: resolver ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("nsswitch", "resolv", "local"),
    [
        ("hosts: files mdns4_minimal [NOTFOUND=return] dns\n", "nameserver 10.0.0.53\n", False),
        ("hosts: files dns\n", "nameserver 127.0.0.53\n", True),
        ("hosts: files myhostname dns\n", "nameserver 10.0.0.53\n", True),
        ("hosts: files resolve [!UNAVAIL=return] dns\n", "nameserver 8.8.8.8\n", True),
        ("hosts: files dns myhostname\n", "nameserver 10.0.0.53\n", False),
        ("hosts: files wins dns\n", "", False),
        ("hosts: files dns\n", "", True),  # no nameserver line: glibc asks 127.0.0.1
        (None, "nameserver 192.0.2.1\n", False),  # no nsswitch.conf: dns first
    ],
)
def test_lookup_stays_local(nsswitch: str | None, resolv: str, local: bool) -> None:
    sources = doctor.nss_hosts_sources(nsswitch)
    assert "[NOTFOUND=return]" not in sources
    assert doctor.lookup_stays_local(sources, doctor.nameservers(resolv)) is local


def _never(name: str) -> list[str]:
    raise AssertionError("must not look the name up")


def test_resolver_never_sends_the_name_to_a_remote_dns_server() -> None:
    c = doctor.judge_resolver(["files", "dns"], ["10.0.0.53"], _never, 7355)
    assert c.status == "warn"
    assert "10.0.0.53" in c.message and c.data["looked_up"] is False
    assert c.fix is not None
    assert "browsers" in c.fix and "curl >= 7.85" in c.fix and "/etc/hosts" in c.fix


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        (["127.0.0.1", "::1"], "ok", "resolve to loopback"),
        (socket.gaierror(-2, "Name or service not known"), "warn", "do not resolve"),
        (["203.0.113.7"], "warn", "not to loopback"),
        (None, "warn", "took longer"),
    ],
)
def test_resolver_verdicts(answer: Any, status: str, words: str) -> None:
    c = doctor.judge_resolver(["files", "myhostname"], ["10.0.0.53"], lambda n: answer, 7355)
    assert c.status == status and words in c.message
    assert (c.fix is None) == (status == "ok")


def test_resolver_on_this_machine_is_never_a_failure() -> None:
    sources = doctor.nss_hosts_sources(doctor._read_text(doctor.NSSWITCH_PATH))
    servers = doctor.nameservers(doctor._read_text(doctor.RESOLV_CONF_PATH))
    c = doctor.judge_resolver(sources, servers, doctor.resolve_bounded, 7355)
    assert c.status in ("ok", "warn")


# --- pure: routes, router, ports -----------------------------------------------------------


def _l(host: str, port: int = 4001, pid: int | None = 7) -> Listener:
    return Listener(host, port, 1000, 1, pid, "node server.js" if pid else "unknown (x)")


BOTH = RouteTarget("api.localhost", "api", 4001)
PINNED4 = RouteTarget("api.localhost", "api", 4001, ("127.0.0.1",))


@pytest.mark.parametrize(
    ("target", "reach", "listeners", "status", "words"),
    [
        (BOTH, {"127.0.0.1": "open", "::1": "refused"}, [_l("127.0.0.1")], "ok", "pid 7"),
        (BOTH, {"127.0.0.1": "refused", "::1": "open"}, [_l("::1")], "ok", "[::1]:4001 only"),
        (BOTH, {"127.0.0.1": "open", "::1": "open"}, [_l("0.0.0.0")], "ok", "your network"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [], "fail", "nothing is listening"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("10.1.2.3")], "fail", "10.1.2.3"),
        (BOTH, {"127.0.0.1": "timeout", "::1": "refused"}, [_l("127.0.0.1")], "fail", "hung"),
        (PINNED4, {"127.0.0.1": "refused", "::1": "open"}, [_l("::1")], "fail", "[::1]:4001"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("0.0.0.0")], "fail", "firewall"),
        (BOTH, {"127.0.0.1": "refused", "::1": "unavailable"}, None, "fail", "nothing is"),
    ],
)
def test_judge_route(
    target: RouteTarget,
    reach: dict[str, Any],
    listeners: list[Listener] | None,
    status: str,
    words: str,
) -> None:
    c = doctor.judge_route(target, reach, listeners)
    assert c.status == status and words in c.message, c.message
    assert (c.fix is None) == (status == "ok")
    assert c.data["route"] == "api" and c.data["port"] == 4001


DOWN = {"127.0.0.1": "refused", "::1": "refused"}
WEB = RouteTarget("web.localhost", "web", 4123, source="run", listens_on=(8000,))


@pytest.mark.parametrize(
    ("target", "reach", "words", "fix"),
    [
        # a run/stack app on another port than its $PORT: say so, with the flag to pass
        (
            WEB,
            DOWN,
            "web.localhost -> 127.0.0.1:4123 or [::1]:4123: nothing is listening; web listens "
            "on 8000, not on its $PORT 4123",
            "pass --port $PORT (or read PORT from the environment) in the command, e.g. "
            "devrouter run web -- CMD --port '$PORT'",
        ),
        (
            RouteTarget("web.localhost", "web", 4123, source="stack", listens_on=(8000, 8001)),
            DOWN,
            "web listens on 8000, 8001, not on its $PORT 4123",
            "--port $PORT",
        ),
        # a config route, or no other port known: the plain verdict
        (
            RouteTarget("web.localhost", "web", 4123, source="config", listens_on=(8000,)),
            DOWN,
            "nothing is listening",
            "start the service on port 4123",
        ),
        (
            RouteTarget("web.localhost", "web", 4123, source="run"),
            DOWN,
            "nothing is listening",
            "start the service",
        ),
        # listening on its port after all: fine
        (WEB, {"127.0.0.1": "open", "::1": "refused"}, "listening on 127.0.0.1:4123", None),
    ],
)
def test_a_run_app_on_another_port_than_its_port(
    target: RouteTarget, reach: dict[str, Any], words: str, fix: str | None
) -> None:
    c = doctor.judge_route(target, reach, [])
    assert words in c.message, c.message
    assert (c.fix is None) if fix is None else (fix in (c.fix or "")), c.fix


def test_listens_on_is_read_from_the_routers_table() -> None:
    status = {
        "routes": [
            {"name": "web", "port": 4123, "source": "run", "listens_on": [8000, "x", True]},
            {"name": "api", "port": 4001, "source": "config"},
        ]
    }
    web, api = doctor.targets_from_status(status) or []
    assert (web.source, web.listens_on) == ("run", (8000,))
    assert (api.source, api.listens_on) == ("config", ())
    live, _ = doctor.targets_from_live(live_routes(status) or ())
    assert (live.source, live.listens_on, live.label) == ("run", (8000,), "web.localhost")


SOCK_HOW = "found through the control socket /h/control.sock"
OURS = Located(("127.0.0.1",), 7400, SOCK_HOW, True)
THEIRS = Located(("127.0.0.1",), 7355, "the default", False, "no router answers on /h/c.sock")
RUNNING = RouterProbe(
    7355,
    answered="127.0.0.1",
    http_status=200,
    status={"version": "1.2", "listen": [], "routes": []},
)


@pytest.mark.parametrize(
    ("found", "holder_uid", "status", "words"),
    [
        (
            OURS,
            1000,
            "ok",
            f"devrouter 1.2 is running on port 7355, pid 7: node server.js, {SOCK_HOW}",
        ),
        (None, 1000, "ok", "devrouter 1.2 is running on port 7355"),  # not told: any devrouter
        (
            THEIRS,
            1000,
            "warn",
            "devrouter 1.2 answers on port 7355 (pid 7: node server.js), but it is not the "
            "router of this state directory (the default; no router answers on /h/c.sock)",
        ),
        (THEIRS, 1001, "fail", "belongs to another user (uid 1001"),
    ],
)
def test_router_verdicts_agree_with_locate(
    found: Located | None, holder_uid: int, status: str, words: str
) -> None:
    holder = Listener("127.0.0.1", 7355, holder_uid, 1, 7, "node server.js")
    c = doctor.judge_router(RUNNING, [holder], found, my_uid=1000)
    assert c.status == status and words in c.message, c.message
    assert c.data["running"] is True
    assert c.data["ours"] is (status == "ok")


def test_any_json_at_api_status_is_not_devrouter() -> None:
    probe = RouterProbe(7355, answered="127.0.0.1", http_status=200, body_start=b'{"ok": 1}')
    assert not probe.is_devrouter
    c = doctor.judge_router(probe, [_l("127.0.0.1", 7355)], THEIRS, 1000)
    assert c.status == "fail" and "something else is listening on port 7355" in c.message


def test_route_on_another_interface_says_bind_loopback() -> None:
    c = doctor.judge_route(
        BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("192.168.1.5", pid=None)]
    )
    assert "192.168.1.5:4001 only" in c.message and "unknown (x)" in c.message
    assert c.fix is not None and "127.0.0.1" in c.fix


def test_targets_from_status_reads_documented_keys_and_stays_on_loopback() -> None:
    status = {
        "routes": [
            {"name": "api", "port": 4001, "target": "127.0.0.1:4001 or [::1]:4001"},
            {"name": "six", "port": 4002, "target": "http://[::1]:4002"},
            {"name": "odd", "port": 4003, "target": "http://192.168.1.5:4003"},
            {"name": "bad", "port": "x"},
            "junk",
        ]
    }
    got = doctor.targets_from_status(status)
    assert got == [
        RouteTarget("api.localhost", "api", 4001, ("127.0.0.1", "::1")),
        RouteTarget("six.localhost", "six", 4002, ("::1",)),
        RouteTarget("odd.localhost", "odd", 4003, ("127.0.0.1", "::1")),
    ]
    assert doctor.targets_from_status({}) is None


def test_targets_from_status_uses_hosts_and_paths_when_present() -> None:
    status = {
        "routes": [
            {
                "name": "web",
                "host": "web.localhost",
                "port": 5173,
                "target": "[::1]:5173",
                "hosts": ["::1", "10.0.0.1"],
                "paths": [{"prefix": "/api", "port": 4001, "target": "127.0.0.1:4001"}],
            }
        ]
    }
    assert doctor.targets_from_status(status) == [
        RouteTarget("web.localhost", "web", 5173, ("::1",)),
        RouteTarget("web.localhost/api", "web", 4001, ("127.0.0.1",)),
    ]


def test_router_notes_become_warnings() -> None:
    clash = "route 'api' from `devrouter run` (pid 9) clashes with the one in x.yaml"
    found = doctor.judge_config(None, None, None, None, [clash])
    assert [(c.status, c.fix) for c in found] == [
        ("info", None),
        ("warn", "rename one of the two routes"),
    ]
    assert clash in found[1].message


async def test_probes_refuse_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await doctor.probe_connect("192.0.2.1", 80)


def test_router_verdicts() -> None:
    none = doctor.judge_router(RouterProbe(7355, error="refused"), [])
    assert none.status == "fail" and "no router is running on port 7355" in none.message
    old = doctor.judge_router(
        RouterProbe(7355, answered="127.0.0.1", http_status=200, body_start=b"devrouter 0.1"),
        [],
    )
    assert old.status == "warn" and old.data["running"] is True
    other = doctor.judge_router(
        RouterProbe(7355, answered="127.0.0.1", http_status=404), [_l("127.0.0.1", 7355)]
    )
    assert other.status == "fail"
    assert "something else is listening on port 7355" in other.message
    assert "pid 7: node server.js" in other.message
    lan = doctor.judge_router(RouterProbe(7355, error="refused"), [_l("10.0.0.2", 7355)])
    assert "10.0.0.2:7355 only" in lan.message


def test_port_range_verdicts() -> None:
    skipped = doctor.judge_port_range(None, [], ())
    assert skipped.status == "info" and "skipped" in skipped.message
    ls = [_l("127.0.0.1", 20001), _l("0.0.0.0", 20002), _l("127.0.0.1", 30000)]
    warn = doctor.judge_port_range((20000, 20009), ls, {20002})
    assert warn.status == "warn" and "20001 (pid 7: node server.js)" in warn.message
    assert [t["port"] for t in warn.data["taken"]] == [20001]
    full = doctor.judge_port_range((20001, 20001), ls, ())
    assert full.status == "fail"
    assert doctor.judge_port_range((20100, 20199), ls, ()).status == "ok"


def test_assignment_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert doctor.assignment_range({doctor.PORT_RANGE_ENV: "20000-20099"}) == (20000, 20099)
    for bad in ("lots", "9-70000", "3000-2000"):
        with pytest.raises(ValueError, match=doctor.PORT_RANGE_ENV):
            doctor.assignment_range({doctor.PORT_RANGE_ENV: bad})


def test_assignment_range_without_port_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "devrouter.ports", None)  # not installed: import fails
    assert doctor.assignment_range({}) is None
    assert doctor.assignment_range({doctor.PORT_RANGE_ENV: "20000-20099"}) == (20000, 20099)
    for bad in ("lots", "9-70000", "3000-2000"):
        with pytest.raises(ValueError, match=doctor.PORT_RANGE_ENV):
            doctor.assignment_range({doctor.PORT_RANGE_ENV: bad})


def test_text_output_colours_only_when_asked() -> None:
    report = doctor.Report(
        7355, [Check("router", "fail", "down", "start it"), Check("x", "ok", "y")]
    )
    plain = doctor.render_text(report)
    assert "\x1b[" not in plain
    assert plain.splitlines() == [
        "fail  down",
        "      fix: start it",
        "ok    y",
        "1 problem, 0 warnings",
    ]
    assert "\x1b[1;31mfail\x1b[0m" in doctor.render_text(report, colour=True)
    assert not doctor.use_colour(io.StringIO(), {})


# --- the command, against real sockets ------------------------------------------------------


async def test_route_to_a_free_port_fails_with_a_fix(tmp_path: Path) -> None:
    port = free_port()
    config = write_config(tmp_path, f"routes:\n  api: {port}\n")
    code, report = await run_doctor("--config", config, "--port", str(free_port()))
    assert code == 1
    route = only(report, "route")
    assert route["status"] == "fail"
    assert route["message"] == (
        f"api.localhost -> 127.0.0.1:{port} or [::1]:{port}: nothing is listening"
    )
    assert f"start the service on port {port}" in route["fix"]
    assert route["data"]["reachable"]["127.0.0.1"] == "refused"


@needs_ipv6
async def test_route_listening_on_ipv6_loopback_only(
    tmp_path: Path, listening: Callable[[str], int]
) -> None:
    port = listening("::1")
    config = write_config(tmp_path, f"routes:\n  api: {port}\n  pinned: http://127.0.0.1:{port}\n")
    _, report = await run_doctor("--config", config, "--port", str(free_port()))
    api, pinned = checks(report, "route")
    assert api["status"] == "ok"
    assert f"listening on [::1]:{port} only" in api["message"]
    assert api["data"]["reachable"] == {"127.0.0.1": "refused", "::1": "open"}
    assert [x["address"] for x in api["data"]["listeners"]] == ["::1"]
    assert pinned["status"] == "fail"
    assert f"the service listens on [::1]:{port}" in pinned["message"]


async def test_route_held_by_another_process_names_it(
    tmp_path: Path, other_process: Callable[..., tuple[subprocess.Popen[str], int]]
) -> None:
    proc, port = other_process("-c", LISTENER_CODE)
    config = write_config(tmp_path, f"routes:\n  api: {port}\n")
    _, text = await run_text("--config", config, "--port", str(free_port()))
    line = next(x for x in text.splitlines() if x.startswith("ok    api.localhost"))
    assert f"listening on 127.0.0.1:{port} (pid {proc.pid}: {sys.executable} -c" in line
    _, report = await run_doctor("--config", config, "--port", str(free_port()))
    [holder] = only(report, "route")["data"]["listeners"]
    assert holder["pid"] == proc.pid and holder["process"].startswith(sys.executable)


async def test_no_router(tmp_path: Path) -> None:
    port = free_port()
    code, report = await run_doctor("--port", str(port))
    router = only(report, "router")
    assert code == 1 and router["status"] == "fail"
    assert router["message"].startswith(f"no router is running on port {port}")
    assert "devrouter serve" in router["fix"]
    assert router["data"]["running"] is False
    assert only(report, "config")["status"] == "info"  # no file anywhere
    assert checks(report, "route") == []


async def test_something_else_on_the_router_port(
    other_process: Callable[..., tuple[subprocess.Popen[str], int]],
) -> None:
    proc, port = other_process(
        "-u",
        "-m",
        "http.server",
        "0",
        "--bind",
        "127.0.0.1",
        parse=lambda line: int(line.split(" port ")[1].split()[0]),
    )
    code, report = await run_doctor("--port", str(port))
    router = only(report, "router")
    assert code == 1 and router["status"] == "fail"
    assert f"something else is listening on port {port} (HTTP 404" in router["message"]
    assert f"pid {proc.pid}: {sys.executable} -u -m http.server" in router["message"]
    assert "--port" in router["fix"]


async def test_silent_process_on_the_router_port_is_bounded(raw_backend: Any) -> None:
    async def silent(r: asyncio.StreamReader, w: asyncio.StreamWriter, rb: Any) -> None:
        await asyncio.sleep(IO_TIMEOUT_S * 2)

    rb = await raw_backend(silent)
    loop = asyncio.get_running_loop()
    started = loop.time()
    _, report = await run_doctor("--port", str(rb.port))
    assert loop.time() - started < doctor.HTTP_TIMEOUT_S + 3
    router = only(report, "router")
    assert router["status"] == "fail" and "does not answer HTTP within" in router["message"]


async def test_a_router_with_api_status_is_recognised(
    tmp_path: Path, backend: BackendFactory, listening: Callable[[str], int]
) -> None:
    up = listening("127.0.0.1")
    down = free_port()
    port = await fake_router(
        backend,
        [
            {"name": "up", "port": up, "target": f"127.0.0.1:{up} or [::1]:{up}"},
            {"name": "down", "port": down, "target": f"127.0.0.1:{down} or [::1]:{down}"},
        ],
    )
    # the file names other routes, and the router's port: the running router's list wins
    config = write_config(tmp_path, f"listen: 127.0.0.1:{port}\nroutes:\n  file-only: 9\n")
    code, report = await run_doctor("--config", config)  # the port comes from the file
    router = only(report, "router")
    # No control socket answers in this state directory: a devrouter, but not ours.
    assert router["status"] == "warn"
    assert router["message"].startswith(f"devrouter 9.9.9 answers on port {port}")
    assert "not the router of this state directory" in router["message"]
    assert f"the listen address in {config}" in router["message"]
    assert router["data"]["running"] is True and router["data"]["version"] == "9.9.9"
    assert router["data"]["ours"] is False
    routes = {c["data"]["route"]: c["status"] for c in checks(report, "route")}
    assert routes == {"up": "ok", "down": "fail"}
    assert code == 1


async def test_router_config_error_is_reported(tmp_path: Path, backend: BackendFactory) -> None:
    error = "/x/devrouter.yaml:3: route 'api': port 'abc' is not a number"
    port = await fake_router(backend, [], error=error)
    code, report = await run_doctor("--port", str(port))
    [config] = [c for c in checks(report, "config") if c["status"] == "fail"]
    assert error in config["message"] and "last good routes" in config["message"]
    assert code == 1


async def test_the_running_routers_config_file_is_checked(
    tmp_path: Path, backend: BackendFactory
) -> None:
    """Without --config, doctor reads the file the router uses, wherever doctor runs."""
    elsewhere = tmp_path / "project"
    elsewhere.mkdir()
    used = elsewhere / "devrouter.yaml"
    used.write_text("routes:\n  api: 0\n")
    holder: dict[str, Any] = {}
    port = await backend(status_app(holder))
    holder.update(fake_status(port, []))
    holder["config"]["source"] = str(used)
    _, report = await run_doctor("--port", str(port))
    config = only(report, "config")
    assert config["status"] == "fail" and config["data"]["path"] == str(used)
    assert "port 0 is outside 1-65535" in config["message"]


async def test_config_error_is_its_one_line(tmp_path: Path) -> None:
    path = write_config(tmp_path, "routes:\n  api: [1, 2\n")
    with pytest.raises(ConfigError) as exc:
        read_config(Path(path))
    code, report = await run_doctor("--config", path, "--port", str(free_port()))
    config = only(report, "config")
    assert code == 1 and config["status"] == "fail"
    assert config["message"] == str(exc.value) and "\n" not in config["message"]
    assert "devrouter check" in config["fix"]
    code, text = await run_text("--config", path, "--port", str(free_port()))
    assert f"fail  {exc.value}" in text.splitlines()


async def test_all_good_exits_zero(
    tmp_path: Path, backend: BackendFactory, listening: Callable[[str], int]
) -> None:
    up = listening("127.0.0.1")
    port = await fake_router(backend, [{"name": "api", "port": up, "target": f"{up}"}])
    config = write_config(tmp_path, f"routes:\n  api: {up}\n")
    code, report = await run_doctor("--config", config, "--port", str(port))
    assert code == 0, report
    assert report["status"] in ("ok", "warn")  # the resolver may warn; it never fails
    assert all(c["status"] != "fail" for c in report["checks"])
    code, text = await run_text("--config", config, "--port", str(port))
    assert code == 0 and "\x1b[" not in text  # not a terminal: no colours
    assert text.splitlines()[-1].startswith("0 problems")


async def test_json_schema(tmp_path: Path, listening: Callable[[str], int]) -> None:
    up = listening("127.0.0.1")
    config = write_config(tmp_path, f"routes:\n  api: {up}\n  web: {free_port()}\n")
    _, report = await run_doctor("--config", config, "--port", str(free_port()))
    assert set(report) == {"schema", "status", "exit_code", "port", "checks"}
    assert report["schema"] == 1 and report["status"] == "fail" and report["exit_code"] == 1
    assert [c["check"] for c in report["checks"]] == [
        "router",
        "resolver",
        "config",
        "route",
        "route",
        "ports",
    ]
    for c in report["checks"]:
        assert set(c) == {"check", "status", "message", "fix", "data"}
        assert c["status"] in ("ok", "info", "warn", "fail")
        assert isinstance(c["message"], str) and isinstance(c["data"], dict)
        assert (c["fix"] is None) == (c["status"] in ("ok", "info")) or c["check"] == "ports"
    for c in checks(report, "route"):
        assert set(c["data"]) == {"route", "label", "port", "targets", "reachable", "listeners"}
    for x in checks(report, "route")[0]["data"]["listeners"]:
        assert set(x) == {"address", "port", "uid", "pid", "process"}
    assert set(only(report, "router")["data"]) >= {"port", "running", "version", "listen"}


async def test_ports_in_the_assignment_range_taken_by_others(
    monkeypatch: pytest.MonkeyPatch,
    other_process: Callable[..., tuple[subprocess.Popen[str], int]],
) -> None:
    proc, port = other_process("-c", LISTENER_CODE)
    monkeypatch.setenv(doctor.PORT_RANGE_ENV, f"{port}-{port}")
    _, report = await run_doctor("--port", str(free_port()))
    ports = only(report, "ports")
    assert ports["status"] == "fail"  # the whole (one-port) range is taken
    assert f"{port} (pid {proc.pid}:" in ports["message"]
    assert ports["data"]["taken"][0]["listeners"][0]["pid"] == proc.pid


def test_real_router_answers(cli: Callable[..., CliProcess], tmp_path: Path) -> None:
    """The real CLI: doctor finds a router on the port (with /api/status, or an older one)."""
    config = write_config(tmp_path, "routes:\n  api: 9\n")
    p = cli("serve", "--config", config)
    out = io.StringIO()
    doctor.main(["--config", config, "--port", str(p.port), "--json"], out)
    router = only(json.loads(out.getvalue()), "router")
    assert router["data"]["running"] is True, router
    assert router["status"] in ("ok", "warn")
    assert f"port {p.port}" in router["message"] and "devrouter" in router["message"]
    if router["status"] == "ok":
        assert router["data"]["version"] == __version__


def test_module_entry_point_and_exit_codes(tmp_path: Path) -> None:
    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "devrouter.doctor", *argv],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=tmp_path,
            env=cli_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "x")),
        )

    helped = run("--help")
    assert helped.returncode == 0 and "--json" in helped.stdout and "--port" in helped.stdout
    assert run("--port", "abc").returncode == 2
    down = run("--port", str(free_port()))
    assert down.returncode == 1 and down.stdout.startswith("fail  no router is running")


def test_add_parser_wires_into_a_cli() -> None:
    import argparse

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--log-level", default="info")
    parser = argparse.ArgumentParser(prog="devrouter")
    sub = parser.add_subparsers(dest="command")
    doctor.add_parser(sub, parents=[common])
    args = parser.parse_args(["doctor", "--port", "7400", "--json", "--log-level", "debug"])
    assert (args.command, args.port, args.json, args.config) == ("doctor", 7400, True, None)


def test_router_that_requires_a_secret(
    cli: Callable[..., CliProcess], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the secret readable here, doctor presents it and reads /api/status; without it,
    it says the router is there but locked, not that something else holds the port."""
    secret = "doctor-test-secret-0123456789"
    config = write_config(tmp_path, "access:\n  env: DOCTOR_TEST_SECRET\nroutes:\n  api: 9\n")
    env = cli_env(HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    p = cli("serve", "--config", config, env={**env, "DOCTOR_TEST_SECRET": secret})

    def router_check() -> dict[str, Any]:
        out = io.StringIO()
        doctor.main(["--config", config, "--port", str(p.port), "--json"], out)
        return only(json.loads(out.getvalue()), "router")

    monkeypatch.setenv("DOCTOR_TEST_SECRET", secret)
    router = router_check()
    assert router["status"] == "ok" and router["data"]["version"] == __version__, router
    monkeypatch.delenv("DOCTOR_TEST_SECRET")
    router = router_check()
    assert router["status"] == "warn" and router["data"]["running"] is True, router
    assert "requires a secret" in router["message"]


# --- through the CLI, against a router on another port than 7355 -------------------------


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Any]:
    """An isolated devrouter world (test_run.make_dev): its own state directory, a router on
    a free port, and everything it started stopped at the end."""
    from test_run import make_dev

    yield from make_dev(tmp_path)


def test_doctor_finds_the_router_through_its_control_socket(dev: Any, tmp_path: Path) -> None:
    """A router on a free port with a `run` route and an `alias`: doctor finds it without
    being told the port, checks both routes, and calls a router of another state directory
    what it is."""
    from test_run import finish

    proc = dev.run_server("web")
    web_port = int(dev.wait_up("web")["env"]["PORT"])
    assert dev.cli("alias", "db", str(web_port)).returncode == 0
    env = dict(dev.env)
    env.pop("DEVROUTER_LISTEN")  # only the control socket says where the router is
    found = f"found through the control socket {dev.home / 'control.sock'}"

    res = dev.cli("doctor", "--json", env=env)
    report = json.loads(res.stdout)
    router = only(report, "router")
    assert router["status"] == "ok", router
    assert report["port"] == router["data"]["port"] == dev.port != 7355
    assert router["data"]["ours"] is True and router["data"]["found_by"] == found
    assert f"is running on port {dev.port}" in router["message"] and found in router["message"]
    routes = {c["data"]["route"]: (c["status"], c["data"]["port"]) for c in checks(report, "route")}
    assert routes == {"web": ("ok", web_port), "db": ("ok", web_port)}
    assert res.returncode == 0, res.stdout

    # Another state directory, told the port: a devrouter, but not the one `run` talks to.
    other = {**env, "DEVROUTER_HOME": str(tmp_path / "other")}
    res = dev.cli("doctor", "--port", str(dev.port), "--json", env=other)
    router = only(json.loads(res.stdout), "router")
    assert router["status"] == "warn" and router["data"]["ours"] is False, router
    assert "not the router of this state directory" in router["message"]
    proc.terminate()
    finish(proc)
