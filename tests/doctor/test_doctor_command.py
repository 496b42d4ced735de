"""doctor.command: `devrouter doctor` against real sockets and processes, and its CLI.

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

from devrouter import __version__
from devrouter.config.reload import read_config
from devrouter.core.errors import ConfigError
from devrouter.doctor import command, facts

# --- helpers -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No config file, state or port range from the machine running the tests."""
    for key in (
        "DEVROUTER_CONFIG",
        facts.PORT_RANGE_ENV,
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
    code = await asyncio.to_thread(command.main, [*argv, "--json"], out)
    report = json.loads(out.getvalue())
    assert report["exit_code"] == code
    return code, report


async def run_text(*argv: str) -> tuple[int, str]:
    out = io.StringIO()
    code = await asyncio.to_thread(command.main, list(argv), out)
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
    assert loop.time() - started < facts.HTTP_TIMEOUT_S + 3
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
        "trust",
        "service",
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
    monkeypatch.setenv(facts.PORT_RANGE_ENV, f"{port}-{port}")
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
    command.main(["--config", config, "--port", str(p.port), "--json"], out)
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
    command.add_parser(sub, parents=[common])
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
        command.main(["--config", config, "--port", str(p.port), "--json"], out)
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
    from dev_harness import make_dev

    yield from make_dev(tmp_path)


def test_doctor_finds_the_router_through_its_control_socket(dev: Any, tmp_path: Path) -> None:
    """A router on a free port with a `run` route and an `alias`: doctor finds it without
    being told the port, checks both routes, and calls a router of another state directory
    what it is."""
    from dev_harness import finish

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
