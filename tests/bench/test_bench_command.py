"""`devrouter bench`: option parsing, a refused target, and short real runs against
aiohttp backends on 127.0.0.1, in process, with `python -m devrouter.bench` and through the
real CLI."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import BackendFactory

from devrouter.bench import command
from devrouter.bench.target import parse_target

# No router, config or state of the machine running the tests (tests/conftest.py).
pytestmark = pytest.mark.usefixtures("isolated_home")


def parse_args(*argv: str) -> Any:
    return command.build_parser().parse_args(["bench", *argv])


def test_option_parsing() -> None:
    args = parse_args(
        "api", "/items", "-c", "7", "-d", "1m", "--rate", "200/s", "-m", "post",
        "-H", "A: 1", "-H", "B: 2", "-b", "x", "--timeout", "500ms", "--no-keepalive",
        "--warmup", "2s", "--json", "--histogram", "h.txt", "--workers", "3",
        "--router-port", "8000",
    )  # fmt: skip
    assert (args.target, args.path, args.connections, args.duration) == ("api", "/items", 7, 60.0)
    assert args.rate == 200.0 and args.header == [("A", "1"), ("B", "2")]
    assert (args.timeout, args.warmup, args.workers, args.router_port) == (0.5, 2.0, 3, 8000)
    assert args.no_keepalive and args.json and args.histogram == "h.txt"
    target = parse_target(args.target, args.path, args.router_port)
    plan = command.plan_from_args(args, target)
    assert plan.request.startswith(b"POST /items HTTP/1.1\r\nHost: api.localhost:8000\r\n")
    assert b"\r\nA: 1\r\nB: 2\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx" in plan.request
    assert (plan.duration_s, plan.requests, plan.keepalive) == (60.0, None, False)


def test_defaults_and_exclusive_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args("http://127.0.0.1:9/")
    plan = command.plan_from_args(args, parse_target(args.target))
    assert plan.duration_s == command.DEFAULT_DURATION_S and plan.requests is None
    assert plan.connections == command.DEFAULT_CONNECTIONS
    for bad in (["-d", "1s", "-n", "5"], ["-c", "0"], ["-d", "soon"], ["--rate", "fast"]):
        with pytest.raises(SystemExit) as exc:
            parse_args("api", *bad)
        assert exc.value.code == 2
    capsys.readouterr()


def test_a_refused_target_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("bench touched the network for a refused target")

    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket.socket, "connect_ex", boom)
    monkeypatch.setattr(socket, "getaddrinfo", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(command, "execute", boom)
    for target in ("http://example.com/", "http://8.8.8.8:53/"):
        assert command.main([target, "-n", "1", "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("devrouter: refusing to send load to ")
        assert "only targets this machine" in err


def counting_app() -> web.Application:
    """200 for odd-numbered requests, 503 for even ones, with a small body."""
    seen = 0

    async def handler(request: web.Request) -> web.Response:
        nonlocal seen
        seen += 1
        return web.Response(status=200 if seen % 2 else 503, text="ok")

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        await resp.write(b"abc")
        await resp.write(b"defgh")
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_route("*", "/", handler)
    app.router.add_get("/chunked", chunked)
    return app


async def run_main(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, Any]]:
    code = await asyncio.to_thread(command.main, list(argv))
    out = capsys.readouterr().out
    return code, json.loads(out) if out.strip() else {}


async def test_end_to_end_counts(
    backend: BackendFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    port = await backend(counting_app())
    code, report = await run_main(
        capsys, f"http://127.0.0.1:{port}/", "-n", "200", "-c", "2", "--workers", "1", "--json"
    )
    assert code == 0
    assert report["requests"] == 200
    assert report["status"] == {"200": 100, "503": 100}
    assert report["errors"] == {"refused": 0, "reset": 0, "timeout": 0, "other": 0}
    assert report["mode"] == "closed-loop"
    assert report["bytes_per_second"] > 0 and report["requests_per_second"] > 0
    lat = report["latency_ms"]
    assert set(lat) == {"p50", "p75", "p90", "p99", "p999", "max", "mean", "stdev"}
    assert 0 < lat["p50"] <= lat["p75"] <= lat["p90"] <= lat["p99"] <= lat["p999"] <= lat["max"]


async def test_end_to_end_chunked_constant_rate_without_keepalive(
    backend: BackendFactory, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    port = await backend(counting_app())
    hist = tmp_path / "latency.hgrm"
    code, report = await run_main(
        capsys, f"http://127.0.0.1:{port}/chunked", "-n", "50", "--rate", "500", "-c", "2",
        "--workers", "1", "--no-keepalive", "--json", "--histogram", str(hist),
    )  # fmt: skip
    assert code == 0
    assert report["requests"] == 50 and report["status"] == {"200": 50}
    assert report["mode"] == "constant-rate" and report["rate"] == 500.0
    text = hist.read_text()
    assert text.startswith("       Value     Percentile TotalCount 1/(1-Percentile)\n\n")
    assert "Total count    =           50]" in text


async def test_refused_connections_are_counted(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connects are refused
        code, report = await run_main(
            capsys, f"http://127.0.0.1:{port}/", "-n", "5", "-c", "1", "--workers", "1", "--json"
        )
    assert code == 1
    assert report["requests"] == 0
    assert report["errors"]["refused"] == 5
    assert report["error"].startswith(f"nothing answers at 127.0.0.1:{port}: every connection")


async def test_a_long_run_at_a_closed_port_stops_at_once(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """-d 1h at a port where nothing listens: a handful of refusals, one line, exit 1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        code = await asyncio.wait_for(
            asyncio.to_thread(
                command.main, [f"http://127.0.0.1:{port}/", "-d", "1h", "-c", "4", "--workers", "1"]
            ),
            30,
        )
    captured = capsys.readouterr()
    assert code == 1
    assert "latency" not in captured.out  # no table of zeros
    [line] = [ln for ln in captured.err.splitlines() if not ln.startswith("progress:")]
    assert line == (
        f"devrouter: nothing answers at 127.0.0.1:{port}: every connection was refused. Is the "
        f"service running and listening on port {port}?"
    )


async def test_compare_direct(
    backend: BackendFactory,
    router: Callable[..., Any],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
) -> None:
    from devrouter.config.reload import read_config

    port = await backend(counting_app())
    config_path = tmp_path / "devrouter.yaml"
    config_path.write_text(f"routes:\n  api: {port}\n")
    r = await router(read_config(config_path, own_ports=()))
    code, report = await run_main(
        capsys, "api", "/", "--router-port", str(r.port), "--compare-direct", "--config",
        str(config_path), "-n", "40", "-c", "2", "--workers", "1", "--rounds", "2", "--json",
    )  # fmt: skip
    assert code == 0
    assert report["rounds"] == 2
    assert report["router"]["requests"] == 80 and report["direct"]["requests"] == 80
    assert report["direct"]["target"] == f"http://127.0.0.1:{port}/"
    assert set(report["added_latency_ms"]) >= {"p50", "p99", "max"}
    assert report["throughput_ratio"] > 0


async def test_python_m_with_two_workers(backend: BackendFactory) -> None:
    port = await backend(counting_app())
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "devrouter.bench", f"http://127.0.0.1:{port}/",
        "-n", "100", "-c", "4", "--workers", "2", "--json",
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 50)
    assert proc.returncode == 0, err.decode()
    report = json.loads(out)
    assert report["requests"] == 100 and report["workers"] == 2
    assert report["status"] == {"200": 50, "503": 50}


# --- through the CLI, against a router on another port than 7355 -------------------------


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Any]:
    """An isolated devrouter world (test_run.make_dev): its own state directory, a router on
    a free port, and everything it started stopped at the end."""
    from dev_harness import make_dev

    yield from make_dev(tmp_path)


def socket_only(dev: Any) -> dict[str, str]:
    """The environment without $DEVROUTER_LISTEN: only the control socket says where the
    router is."""
    env = dict(dev.env)
    env.pop("DEVROUTER_LISTEN")
    return dict(env)


def test_bench_a_run_and_an_alias_name_through_a_router_on_another_port(dev: Any) -> None:
    from dev_harness import finish

    assert dev.port != 7355
    proc = dev.run_server("web")  # starts the background router on dev.port
    web_port = int(dev.wait_up("web")["env"]["PORT"])
    assert dev.cli("alias", "db", str(web_port)).returncode == 0
    env = socket_only(dev)
    found = f"found through the control socket {dev.home / 'control.sock'}"

    res = dev.cli("bench", "web", "-n", "50", "-c", "2", "--workers", "1", env=env)
    assert res.returncode == 0, res.stderr
    assert f"  router: 127.0.0.1:{dev.port} ({found})\n" in res.stdout
    assert f"bench http://web.localhost:{dev.port}/ (connecting to 127.0.0.1:{dev.port})" in (
        res.stdout
    )
    assert "status     200: 50" in res.stdout

    for name in ("web", "db"):  # a run route, and an alias to the same service
        res = dev.cli(
            "bench", name, "--compare-direct", "-n", "20", "-c", "1", "--rounds", "1",
            "--workers", "1", "--json", env=env,
        )  # fmt: skip
        assert res.returncode == 0, res.stderr
        report = json.loads(res.stdout)
        assert report["router_found"]["found_by"] == found
        assert report["router_found"]["address"] == f"127.0.0.1:{dev.port}"
        assert report["direct"]["target"] == f"http://127.0.0.1:{web_port}/"
        assert report["router"]["requests"] == 20 and report["direct"]["requests"] == 20
        assert report["router"]["status"] == {"200": 20}
    proc.terminate()
    finish(proc)


def test_bench_a_name_with_no_router_stops_at_once_with_one_line(dev: Any) -> None:
    """No router at all: one line naming where it looked and why, exit 1, no load sent."""
    res = dev.cli("bench", "web", "-d", "1h", "--workers", "1")
    assert res.returncode == 1 and res.stdout == ""
    sock = dev.home / "control.sock"
    assert res.stderr.splitlines() == [
        f"devrouter: nothing answers at 127.0.0.1:{dev.port} ($DEVROUTER_LISTEN; no router "
        f"answers on the control socket {sock}): connections are refused. Is the router "
        "running? Start it with `devrouter serve` (or `devrouter run`), or pass "
        "--router-port PORT"
    ]
