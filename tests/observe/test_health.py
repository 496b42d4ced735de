"""devrouter.observe.health: TCP connect probes against real listening sockets and free ports, the
words they produce, when they run, and what they never dial."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from conftest import free_port, make_config

from devrouter.core.model import Config, PathRoute, Route, Upstream
from devrouter.core.state import State
from devrouter.observe import health as health_mod
from devrouter.observe.health import (
    MAX_CONCURRENT_CONNECTS,
    OPEN,
    REFUSED,
    SKIPPED,
    TIMEOUT,
    UNAVAILABLE,
    Health,
    describe,
)
from devrouter.observe.metrics import Metrics, RequestRecord

#: Upper bound on any wait for the probe loop, in seconds.
WAIT_S = 5.0


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


needs_ipv6 = pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")


@pytest.fixture
async def listener() -> AsyncIterator[Callable[..., Awaitable[int]]]:
    """`port = await listener("::1")`: a TCP server that accepts and closes, on the given
    addresses (one port for all of them)."""
    servers: list[asyncio.Server] = []

    async def on_conn(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        w.close()

    async def start(*hosts: str) -> int:
        port = 0
        for host in hosts or ("127.0.0.1",):
            server = await asyncio.start_server(on_conn, host, port)
            servers.append(server)
            port = int(server.sockets[0].getsockname()[1])
        return port

    yield start
    for server in servers:
        server.close()
        await server.wait_closed()


def health_for(*upstreams: Upstream, **kw: object) -> Health:
    routes = tuple(Route(f"r{i}", u) for i, u in enumerate(upstreams))
    return Health(State(Config(routes=routes)), **kw)  # type: ignore[arg-type]


async def probe(upstream: Upstream) -> health_mod.Probe:
    h = health_for(upstream)
    await h.probe_all()
    result = h.status(upstream)
    assert result is not None
    return result


# --- what a probe finds ----------------------------------------------------------------------


async def test_a_listening_backend_is_up(listener: Callable[..., Awaitable[int]]) -> None:
    port = await listener("127.0.0.1")
    p = await probe(Upstream(port))
    assert p.up is True
    assert p.detail == f"listening only on 127.0.0.1:{port} (nothing on ::1)"
    assert p.listening == ("127.0.0.1",)
    assert abs(p.checked_at - time.time()) < WAIT_S
    p = await probe(Upstream(port, ("127.0.0.1",)))
    assert (p.up, p.detail) == (True, f"listening on 127.0.0.1:{port}")


async def test_a_free_port_is_down() -> None:
    port = free_port()
    p = await probe(Upstream(port))
    assert p.up is False
    assert p.detail == f"nothing is listening on 127.0.0.1:{port} or [::1]:{port}"
    assert p.listening == ()
    p = await probe(Upstream(port, ("127.0.0.1",)))
    assert p.detail == f"nothing is listening on 127.0.0.1:{port}"


@needs_ipv6
async def test_a_backend_on_ipv6_loopback_only(listener: Callable[..., Awaitable[int]]) -> None:
    port = await listener("::1")
    p = await probe(Upstream(port))
    assert p.up is True
    assert p.detail == f"listening only on [::1]:{port} (nothing on 127.0.0.1)"
    assert p.listening == ("::1",)


@needs_ipv6
async def test_a_backend_on_both_loopbacks(listener: Callable[..., Awaitable[int]]) -> None:
    port = await listener("127.0.0.1", "::1")
    p = await probe(Upstream(port))
    assert (p.up, p.detail) == (True, f"listening on 127.0.0.1:{port} and [::1]:{port}")
    assert p.listening == ("127.0.0.1", "::1")


@pytest.mark.parametrize(
    ("outcomes", "up", "detail"),
    [
        ({"127.0.0.1": OPEN, "::1": OPEN}, True, "listening on 127.0.0.1:80 and [::1]:80"),
        (
            {"127.0.0.1": REFUSED, "::1": OPEN},
            True,
            "listening only on [::1]:80 (nothing on 127.0.0.1)",
        ),
        (
            {"127.0.0.1": OPEN, "::1": UNAVAILABLE},
            True,
            "listening only on 127.0.0.1:80 (nothing on ::1)",
        ),
        (
            {"127.0.0.1": REFUSED, "::1": REFUSED},
            False,
            "nothing is listening on 127.0.0.1:80 or [::1]:80",
        ),
        (
            {"127.0.0.1": REFUSED, "::1": UNAVAILABLE},
            False,
            "nothing is listening on 127.0.0.1:80 or [::1]:80",
        ),
        (
            {"127.0.0.1": TIMEOUT, "::1": REFUSED},
            False,
            "127.0.0.1:80 did not accept a connection within 1 s "
            "(a full accept queue, or a process stopped in a debugger?)",
        ),
        (
            {"127.0.0.1": "Permission denied", "::1": REFUSED},
            False,
            "cannot connect to 127.0.0.1:80: Permission denied",
        ),
        (
            {"127.0.0.1": SKIPPED, "::1": SKIPPED},
            False,
            "not probed: 127.0.0.1 and ::1 are not loopback addresses",
        ),
    ],
)
def test_details_in_words(outcomes: dict[str, str], up: bool, detail: str) -> None:
    p = describe(Upstream(80), outcomes, 1.0)
    assert (p.up, p.detail, p.checked_at) == (up, detail, 1.0)


# --- what is never dialled -------------------------------------------------------------------


class Recording(Health):
    """A Health that records each dial (and can make dials slow)."""

    def __init__(self, *args: object, delay_s: float = 0.0, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.dialled: list[tuple[str, int]] = []
        self.delay_s = delay_s
        self.in_flight = 0
        self.most = 0

    async def dial(self, host: str, port: int) -> str:
        self.dialled.append((host, port))
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        try:
            await asyncio.sleep(self.delay_s)
            return await super().dial(host, port)
        finally:
            self.in_flight -= 1


async def test_only_loopback_addresses_are_ever_dialled() -> None:
    port = free_port()
    remote = Upstream(port, ("192.0.2.7",))
    named = Upstream(port, ("localhost",))  # a name: never resolved
    mixed = Upstream(port, ("10.0.0.1", "127.0.0.1"))
    state = State(Config(routes=(Route("a", remote), Route("b", named), Route("c", mixed))))
    h = Recording(state)
    await h.probe_all()
    assert h.dialled == [("127.0.0.1", port)]
    remote_probe = h.status(remote)
    assert remote_probe is not None and remote_probe.up is False
    assert remote_probe.detail == "not probed: 192.0.2.7 is not a loopback address"
    mixed_probe = h.status(mixed)
    assert mixed_probe is not None
    assert mixed_probe.detail == f"nothing is listening on 127.0.0.1:{port}"


async def test_concurrent_connects_are_bounded() -> None:
    ports: set[int] = set()
    while len(ports) < 3 * MAX_CONCURRENT_CONNECTS:  # free_port() can repeat a port
        ports.add(free_port())
    upstreams = [Upstream(p) for p in sorted(ports)]
    routes = tuple(Route(f"r{i}", u) for i, u in enumerate(upstreams))
    h = Recording(State(Config(routes=routes)), delay_s=0.02)
    await asyncio.wait_for(h.probe_all(), WAIT_S)
    assert len(h.dialled) == 2 * len(upstreams)
    assert h.most == MAX_CONCURRENT_CONNECTS


async def test_each_distinct_upstream_once_paths_included() -> None:
    a, b = Upstream(free_port()), Upstream(free_port(), ("127.0.0.1",))
    routes = (
        Route("x", a, (PathRoute("/api", b),)),
        Route("y", a),  # the same upstream as x: probed once
    )
    h = Recording(State(Config(routes=routes)))
    await h.probe_all()
    assert sorted(h.dialled) == sorted(
        [("127.0.0.1", a.port), ("::1", a.port), ("127.0.0.1", b.port)]
    )
    assert set(h.results) == {a, b}


async def test_results_follow_the_live_table() -> None:
    old, new = Upstream(free_port()), Upstream(free_port())
    state = State(Config(routes=(Route("a", old),)))
    h = Health(state)
    await h.probe_all()
    assert set(h.results) == {old}
    state.swap(make_config({"b": new.port}))
    await h.probe_all()
    assert set(h.results) == {new}
    assert h.status(old) is None


async def test_concurrent_rounds_are_shared() -> None:
    h = Recording(State(make_config({"a": free_port()})), delay_s=0.05)
    await asyncio.gather(h.probe_all(), h.probe_all(), h.probe_all())
    assert h.rounds == 1 and len(h.dialled) == 2


# --- when probes run -------------------------------------------------------------------------


async def eventually(cond: Callable[[], bool], timeout_s: float = WAIT_S) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


async def quiet(h: Health, for_s: float) -> bool:
    """True if no round ran for `for_s` seconds."""
    before = h.rounds
    await asyncio.sleep(for_s)
    return h.rounds == before


@pytest.fixture
async def running() -> AsyncIterator[Callable[[Health], None]]:
    """`running(h)` runs `h.run` until the end of the test, then checks it stops promptly."""
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    def start(h: Health) -> None:
        tasks.append(asyncio.create_task(h.run(stop)))

    yield start
    stop.set()
    done, pending = await asyncio.wait(tasks, timeout=WAIT_S)
    assert not pending, "Health.run did not stop within the bound"
    for t in done:
        t.result()


async def test_idle_means_no_probes_and_a_look_starts_them(
    running: Callable[[Health], None],
) -> None:
    h = Health(State(make_config({"a": free_port()})), interval_s=0.05, window_s=0.4)
    running(h)
    assert await quiet(h, 0.3)
    assert h.results == {}
    h.touch()
    assert await eventually(lambda: h.rounds >= 3)  # every interval while looked at
    assert await eventually(lambda: h._sleeping, 2.0)  # the loop saw that nobody looks
    assert await quiet(h, 0.3)  # and probes no more


async def test_a_look_wakes_a_sleeping_loop_at_once(running: Callable[[Health], None]) -> None:
    h = Health(State(make_config({"a": free_port()})), interval_s=30.0, window_s=60.0)
    running(h)
    await asyncio.sleep(0.1)  # the loop found nothing to do and sleeps for 30 s
    assert h.rounds == 0
    h.touch()
    assert await eventually(lambda: h.rounds == 1, 2.0)


async def test_traffic_keeps_probes_running(running: Callable[[Health], None]) -> None:
    metrics = Metrics()
    h = Health(State(make_config({"a": free_port()})), metrics, interval_s=0.05, window_s=0.4)
    running(h)
    assert await quiet(h, 0.3)
    metrics.opened("a")
    metrics.finish(RequestRecord(time.time(), "GET", "a.localhost", "/", "a", status=200))
    assert await eventually(lambda: h.rounds >= 2)  # noticed without any call from the engine
    assert await eventually(lambda: not h.active(), 2.0)


async def test_fresh_runs_a_round_only_when_results_are_stale() -> None:
    h = Recording(State(make_config({"a": free_port()})))
    await h.fresh()
    assert h.rounds == 1 and h.results
    await h.fresh()
    assert h.rounds == 1  # recent enough
