"""devrouter.docker.watcher and .engine against an Engine double on a real unix socket: an
aiohttp server that answers /_ping, /containers/json and /events as the Engine does (the
answers are shaped like tests/docker/engine_answers/). The real Engine is in
test_docker_engine.py; this one needs no root and can stop, break and return at will."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from devrouter.config.schema import parse_config
from devrouter.core.state import State
from devrouter.docker import watcher as watcher_mod
from devrouter.docker.engine import Engine, EngineError
from devrouter.docker.watcher import DockerWatcher

WAIT_S = 10.0


def item(name: str, public: int, project: str | None = None, **labels: str) -> dict[str, Any]:
    all_labels = dict(labels)
    if project:
        all_labels |= {
            "com.docker.compose.project": project,
            "com.docker.compose.service": name,
            "com.docker.compose.container-number": "1",
        }
    return {
        "Id": f"{name}{'0' * 60}"[:64],
        "Names": [f"/{project}_{name}_1" if project else f"/{name}"],
        "Image": "local/busybox",
        "State": "running",
        "Status": "Up 2 seconds",
        "Created": 1700000000,
        "Labels": all_labels,
        "Ports": [{"IP": "127.0.0.1", "PrivatePort": 80, "PublicPort": public, "Type": "tcp"}],
        "NetworkSettings": {"Networks": {"shop_default": {"IPAddress": "172.18.0.2"}}},
    }


class FakeEngine:
    """The Engine API's four calls over a unix socket; `containers` is what it lists."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.containers: list[dict[str, Any]] = []
        self.lists = 0
        self.ping_status = 200
        self.ping_body = b"OK"
        self._streams: list[web.StreamResponse] = []
        self._closed = asyncio.Event()
        self.calls: list[tuple[str, str]] = []  # (method, path) of every request
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._closed = asyncio.Event()
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/_ping", self._ping)
        app.router.add_get("/containers/json", self._list)
        app.router.add_get("/events", self._events)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.UnixSite(self._runner, str(self.path)).start()

    async def stop(self) -> None:
        for stream in self._streams:
            stream.force_close()
        self._streams.clear()
        self._closed.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.path.unlink(missing_ok=True)

    @web.middleware
    async def _record(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.calls.append((request.method, request.path))
        response: web.StreamResponse = await handler(request)
        return response

    async def event(self, action: str, name: str = "x") -> None:
        line = json.dumps({"Type": "container", "Action": action, "Actor": {"ID": name}})
        for stream in list(self._streams):
            await stream.write(line.encode() + b"\n")

    async def _ping(self, request: web.Request) -> web.Response:
        return web.Response(
            status=self.ping_status, body=self.ping_body, headers={"Api-Version": "1.41"}
        )

    async def _list(self, request: web.Request) -> web.Response:
        self.lists += 1
        return web.json_response(self.containers)

    async def _events(self, request: web.Request) -> web.StreamResponse:
        assert json.loads(request.query["filters"]) == {"type": ["container"]}
        stream = web.StreamResponse()
        await stream.prepare(request)
        self._streams.append(stream)
        await self._closed.wait()  # the stream lasts as long as this Engine runs
        return stream


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[FakeEngine]:
    fake = FakeEngine(tmp_path / "docker.sock")
    await fake.start()
    yield fake
    await fake.stop()


def state_with(text: str) -> State:
    return State(parse_config(text, "devrouter.yaml", own_ports=()))


async def until(check: Callable[[], bool], what: str) -> None:
    deadline = asyncio.get_running_loop().time() + WAIT_S
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {WAIT_S} s: {what}")
        await asyncio.sleep(0.02)


def names(state: State) -> list[str]:
    return [r.name for r in state.snapshot.table.routes]


@pytest.fixture
async def watching(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[[State], DockerWatcher]]:
    monkeypatch.setattr(watcher_mod, "BACKOFF_MAX_S", 0.3)
    tasks: list[asyncio.Task[None]] = []
    stop = asyncio.Event()

    def start(state: State) -> DockerWatcher:
        w = DockerWatcher(
            state, env={"DOCKER_HOST": f"unix://{engine.path}"}, home=Path("/nowhere")
        )
        tasks.append(asyncio.create_task(w.run(stop)))
        return w

    yield start
    stop.set()
    await asyncio.wait_for(asyncio.gather(*tasks), WAIT_S)


async def test_containers_become_routes_and_follow_events(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    engine.containers = [item("api", 32001, "shop"), item("blog", 32002)]
    state = state_with("routes:\n  plain: 9\n")
    w = watching(state)
    await until(lambda: w.report.state == "connected", "connected")
    assert names(state) == ["api.shop", "blog", "plain"]
    route = state.snapshot.table.exact["api.shop"]
    assert route.upstream.port == 32001 and route.source == "docker" and route.stack == "shop"
    assert w.report.socket == str(engine.path) and w.report.api_version == "1.41"

    engine.containers.append(item("web", 32003, "shop"))
    await engine.event("start")
    await until(lambda: "web.shop" in names(state), "a started container is routed")

    engine.containers = [c for c in engine.containers if c["Names"] != ["/blog"]]
    await engine.event("die")
    await until(lambda: "blog" not in names(state), "a stopped container's route goes")

    lists = engine.lists
    for _ in range(5):  # exec and attach events do not change routes: no list for them
        await engine.event("exec_start: sh")
    engine.containers[0] = item("api", 32009, "shop")
    await engine.event("rename")  # a burst ends with one that matters: one list for it
    await until(lambda: state.snapshot.table.exact["api.shop"].upstream.port == 32009, "relist")
    assert engine.lists == lists + 1


async def test_an_engine_that_goes_away_costs_only_its_routes_and_comes_back(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    engine.containers = [item("api", 32001, "shop")]
    state = state_with("routes:\n  plain: 9\n")
    w = watching(state)
    await until(lambda: "api.shop" in names(state), "routed")

    await engine.stop()
    await until(lambda: w.report.state == "unreachable", "noticed the Engine went away")
    assert names(state) == ["plain"]
    assert w.report.detail is not None and str(engine.path) in w.report.detail

    engine.containers = [item("api", 32001, "shop"), item("late", 32005)]
    await engine.start()
    await until(lambda: w.report.state == "connected", "reconnected")
    await until(lambda: names(state) == ["api.shop", "late", "plain"], "a full re-list")


async def test_the_config_section_turns_it_off_and_on(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    engine.containers = [item("api", 32001, "shop")]
    state = state_with("routes: {}\n")
    w = watching(state)
    await until(lambda: "api.shop" in names(state), "routed")
    state.swap(parse_config("docker: false\n", "devrouter.yaml", own_ports=()))
    await until(lambda: w.report.state == "off", "off")
    assert names(state) == []
    state.swap(parse_config("docker: {only_labelled: true}\n", "devrouter.yaml", own_ports=()))
    await until(lambda: w.report.state == "connected", "on again")
    assert names(state) == []  # unlabelled
    assert "only_labelled" in (w.report.placements[0].reason or "")


async def test_config_routes_win_over_containers_and_the_clash_is_reported(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    engine.containers = [item("api", 32001, "shop")]
    state = state_with("routes:\n  api.shop: 4001\n")
    w = watching(state)
    await until(lambda: w.report.state == "connected", "connected")
    assert state.snapshot.table.exact["api.shop"].upstream.port == 4001
    assert state.snapshot.conflicts == (
        "route 'api.shop' from Docker container shop_api_1 clashes with the one in "
        "devrouter.yaml; the config file's route is in use",
    )


async def test_a_socket_that_is_not_an_engine_is_named(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    engine.ping_body = b"hello"
    state = state_with("routes: {}\n")
    w = watching(state)
    await until(lambda: w.report.state == "unreachable", "refused")
    assert w.report.detail == "the socket answered, but not as a Docker Engine"


async def test_no_socket_at_all(tmp_path: Path) -> None:
    async with Engine(tmp_path / "none.sock") as e:
        with pytest.raises(EngineError, match=r"not reachable at .*none\.sock"):
            await e.ping()
    state = state_with("routes: {}\n")
    w = DockerWatcher(state, env={"DOCKER_HOST": f"unix://{tmp_path}/none.sock"}, home=tmp_path)
    stop = asyncio.Event()
    task = asyncio.create_task(w.run(stop))
    await until(lambda: w.report.state == "absent", "looked")
    assert w.report.detail is not None
    assert w.report.detail == f"no Docker Engine socket at {tmp_path}/none.sock (from DOCKER_HOST)"
    stop.set()
    await asyncio.wait_for(task, WAIT_S)


async def test_the_router_only_reads_from_the_engine(
    engine: FakeEngine, watching: Callable[[State], DockerWatcher]
) -> None:
    """The Engine's socket is as good as root: devrouter sends it GETs of four paths and
    nothing else, whatever happens (security catalog D1, docs/security.md)."""
    engine.containers = [item("api", 32001, "shop")]
    state = state_with("routes: {}\n")
    w = watching(state)
    await until(lambda: "api.shop" in names(state), "routed")
    await engine.event("rename")
    await engine.stop()
    await until(lambda: w.report.state == "unreachable", "gone")
    await engine.start()
    await until(lambda: w.report.state == "connected", "back")
    assert engine.calls
    assert {m for m, _ in engine.calls} == {"GET"}
    assert {p for _, p in engine.calls} <= {"/_ping", "/containers/json", "/events"}


async def test_a_failure_of_its_own_is_reported_and_watching_goes_on(
    engine: FakeEngine,
    watching: Callable[[State], DockerWatcher],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug in devrouter's own code (here: planning raises) must not end the watching for
    the router's life: it is said, with the reason, and the next cycle tries again."""
    real = watcher_mod.plan
    failures = [RuntimeError("boom")]

    def flaky(*args: Any, **kwargs: Any) -> Any:
        if failures:
            raise failures.pop()
        return real(*args, **kwargs)

    monkeypatch.setattr(watcher_mod, "plan", flaky)
    engine.containers = [item("api", 32001, "shop")]
    state = state_with("routes: {}\n")
    w = watching(state)
    await until(lambda: "api.shop" in names(state), "routed after the failure")
    assert w.report.state == "connected" and not failures
