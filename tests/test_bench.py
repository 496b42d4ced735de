"""`devrouter bench`: options, targets, the pacing and correction in virtual time, the
response parser, and short real runs against aiohttp backends on 127.0.0.1."""

from __future__ import annotations

import asyncio
import heapq
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

from devrouter import bench
from devrouter.bench import Driver, Plan, Target, UsageError
from devrouter.observe.histogram import RELATIVE_ERROR, Histogram


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No router, config or state of the machine running the tests: a route NAME is looked
    for in an empty state directory."""
    for key in ("DEVROUTER_CONFIG", "DEVROUTER_LISTEN", "XDG_STATE_HOME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("DEVROUTER_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.chdir(tmp_path)


# --- options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m", 60.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2.5", 2.5),
        (" 3S ", 3.0),
        ("0", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert bench.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "s", "-1s", "1s-", "nan", "inf", "1m 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        bench.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "rate"), [("1000", 1000.0), ("1000/s", 1000.0), ("60/m", 1.0), ("0.5", 0.5)]
)
def test_rates(text: str, rate: float) -> None:
    assert bench.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-5", "x", "10/d", "nan"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        bench.parse_rate(text)


def test_headers() -> None:
    assert bench.parse_header("X-Token: a b:c ") == ("X-Token", "a b:c")
    assert bench.parse_header("Accept:") == ("Accept", "")
    for bad in ("no colon", ": value", "Bad Name: x", "X: a\r\nInjected: 1"):
        with pytest.raises(ValueError):
            bench.parse_header(bad)


def test_bodies(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_bytes(b'{"a": 1}\n')
    assert bench.parse_body("hello") == b"hello"
    assert bench.parse_body("@body.json", cwd=tmp_path) == b'{"a": 1}\n'
    assert bench.parse_body(f"@{tmp_path / 'body.json'}") == b'{"a": 1}\n'
    assert bench.parse_body("@@literal") == b"@literal"
    with pytest.raises(ValueError, match="cannot read body file"):
        bench.parse_body("@missing.json", cwd=tmp_path)


def parse_args(*argv: str) -> Any:
    return bench.build_parser().parse_args(["bench", *argv])


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
    target = bench.parse_target(args.target, args.path, args.router_port)
    plan = bench.plan_from_args(args, target)
    assert plan.request.startswith(b"POST /items HTTP/1.1\r\nHost: api.localhost:8000\r\n")
    assert b"\r\nA: 1\r\nB: 2\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx" in plan.request
    assert (plan.duration_s, plan.requests, plan.keepalive) == (60.0, None, False)


def test_defaults_and_exclusive_options(capsys: pytest.CaptureFixture[str]) -> None:
    args = parse_args("http://127.0.0.1:9/")
    plan = bench.plan_from_args(args, bench.parse_target(args.target))
    assert plan.duration_s == bench.DEFAULT_DURATION_S and plan.requests is None
    assert plan.connections == bench.DEFAULT_CONNECTIONS
    for bad in (["-d", "1s", "-n", "5"], ["-c", "0"], ["-d", "soon"], ["--rate", "fast"]):
        with pytest.raises(SystemExit) as exc:
            parse_args("api", *bad)
        assert exc.value.code == 2
    capsys.readouterr()


def test_request_bytes() -> None:
    t = bench.parse_target("http://127.0.0.1:4001/x?y=1")
    assert bench.build_request(t) == (
        b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:4001\r\nUser-Agent: devrouter-bench\r\n\r\n"
    )
    req = bench.build_request(t, "GET", [("Host", "other.localhost"), ("User-Agent", "me")])
    assert req == b"GET /x?y=1 HTTP/1.1\r\nHost: other.localhost\r\nUser-Agent: me\r\n\r\n"
    with pytest.raises(UsageError):
        bench.build_request(t, "GE T")


# --- targets ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ("http://api.localhost:7355/items",),
            Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api"),
        ),
        (("api", "/items"), Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api")),
        (("api", "items"), Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api")),
        (
            ("Shop.API.localhost",),
            Target("127.0.0.1", 7355, "shop.api.localhost:7355", "/", "shop.api"),
        ),
        (("http://127.0.0.1:4001/x",), Target("127.0.0.1", 4001, "127.0.0.1:4001", "/x")),
        (("127.0.0.2:4001",), Target("127.0.0.2", 4001, "127.0.0.2:4001", "/")),
        (("http://[::1]:4001/a?b",), Target("::1", 4001, "[::1]:4001", "/a?b")),
        (("http://localhost/",), Target("127.0.0.1", 80, "localhost", "/")),
        (("localhost:3000",), Target("127.0.0.1", 3000, "localhost:3000", "/")),
        (("http://web.localhost./",), Target("127.0.0.1", 80, "web.localhost.", "/", "web")),
    ],
)
def test_targets(argv: tuple[str, ...], expected: Target) -> None:
    assert bench.parse_target(*argv) == expected


def test_route_name_uses_the_router_port() -> None:
    assert bench.parse_target("api", None, 8000).host_header == "api.localhost:8000"


@pytest.mark.parametrize(
    "target",
    [
        "http://example.com/",
        "example.com:80",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0:8080/",
        "http://[::]:8080/",
        "http://[::ffff:8.8.8.8]/",
        "http://192.168.1.10/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://api.localhost.evil.com/",
    ],
)
def test_non_loopback_targets_are_refused(target: str) -> None:
    with pytest.raises(UsageError, match="only targets this machine"):
        bench.parse_target(target)


@pytest.mark.parametrize(
    "target", ["https://api.localhost/", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/"]
)
def test_unsupported_urls(target: str) -> None:
    with pytest.raises(UsageError):
        bench.parse_target(target)


def test_a_refused_target_sends_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def boom(*args: object, **kwargs: object) -> None:
        raise AssertionError("bench touched the network for a refused target")

    monkeypatch.setattr(socket.socket, "connect", boom)
    monkeypatch.setattr(socket.socket, "connect_ex", boom)
    monkeypatch.setattr(socket, "getaddrinfo", boom)
    monkeypatch.setattr(socket, "create_connection", boom)
    monkeypatch.setattr(bench, "execute", boom)
    for target in ("http://example.com/", "http://8.8.8.8:53/"):
        assert bench.main([target, "-n", "1", "--workers", "1"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("devrouter: refusing to send load to ")
        assert "only targets this machine" in err


# --- pacing and coordinated-omission correction in virtual time --------------------------


class VirtualLoop:
    """Timers over a virtual clock in seconds; `call_soon` costs one microsecond."""

    def __init__(self) -> None:
        self.now = 0.0
        self.heap: list[tuple[float, int, Callable[..., object], tuple[object, ...]]] = []
        self.seq = 0

    def clock(self) -> float:
        return self.now

    def call_later(self, delay: float, fn: Callable[..., object], *args: object) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (self.now + max(0.0, delay), self.seq, fn, args))

    def call_soon(self, fn: Callable[..., object], *args: object) -> None:
        self.call_later(1e-6, fn, *args)

    def run(self, done: Callable[[], bool]) -> None:
        while self.heap and not done():
            when, _, fn, args = heapq.heappop(self.heap)
            self.now = max(self.now, when)
            fn(*args)


class FakeConn:
    """A connection whose n-th request (across all connections) takes service[n] seconds."""

    def __init__(self, sim: Simulation, due: float, now: float) -> None:
        self.sim = sim
        self.due = due
        self.busy_since: float | None = None
        self.reusable = False
        self.send(due, now)

    def send(self, due: float, now: float) -> None:
        self.due = due
        self.busy_since = now
        self.sim.sent.append((due, now))
        service = next(self.sim.service)
        self.sim.loop.call_later(service, self._complete)

    def _complete(self) -> None:
        if self.busy_since is None:
            return
        self.busy_since = None
        self.reusable = True
        self.sim.driver.done(self, self.sim.loop.now, 200, 100)

    def abort(self) -> None:
        self.busy_since = None
        self.reusable = False


class Simulation:
    def __init__(self, plan: Plan, service: Iterator[float]) -> None:
        self.loop = VirtualLoop()
        self.service = service
        self.sent: list[tuple[float, float]] = []
        self.finished = False
        self.driver = Driver(
            plan,
            lambda driver, due, now: FakeConn(self, due, now),
            self.loop.clock,
            self.loop.call_later,
            self.loop.call_soon,
            self.finish,
        )

    def finish(self) -> None:
        self.finished = True

    def run(self) -> Histogram:
        self.driver.begin()
        self.loop.run(lambda: self.finished)
        assert self.finished
        return self.driver.histogram


def plan(**kw: Any) -> Plan:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 9,
        "request": b"",
        "connections": 1,
        "duration_s": None,
        "requests": 1000,
        "rate": None,
    }
    return Plan(**{**base, **kw})


FAST_S, STALL_S, STALLED = 0.0001, 0.5, 100


def one_stall() -> Iterator[float]:
    """Every request takes 100 µs except the one at index 100, which takes 500 ms."""
    n = 0
    while True:
        yield STALL_S if n == STALLED else FAST_S
        n += 1


def reference_constant_rate(count: int, interval: float) -> Histogram:
    """The wrk2 answer for one connection: request k is due at k * interval, sent when
    both due and the connection is free, and its latency runs from the due time."""
    h = Histogram()
    free = 0.0
    service = one_stall()
    for k in range(count):
        due = k * interval
        done = max(due, free) + next(service)
        free = done
        h.record(round((done - due) * 1e6))
    return h


def test_constant_rate_counts_the_requests_due_during_a_stall() -> None:
    # 1000/s on one connection; request 100 stalls for 500 ms. Requests 101.. fall due
    # during the stall and are sent late, back to back; each carries its wait. Request k
    # (101 <= k <= 655) completes at 600 ms + (k - 100) * 0.1 ms, so its latency is
    # 590 - 0.9 k ms, and the 445 requests 100..544 all take more than 100 ms.
    h = Simulation(plan(rate=1000.0), one_stall()).run()
    ref = reference_constant_rate(1000, 0.001)
    assert h.count() == ref.count() == 1000
    over_100ms = sum(c for low, _, c in h.buckets() if low >= 100_000)
    assert over_100ms == 445
    assert sum(c for low, _, c in ref.buckets() if low >= 100_000) == 445
    assert h.max() == pytest.approx(500_000, abs=2)
    for p in (25, 50, 75, 90, 99, 99.9):
        assert abs(h.percentile(p) - ref.percentile(p)) <= 2 + ref.percentile(p) * RELATIVE_ERROR
    # Without the correction the stall would be one slow sample: p50 would be 0.1 ms.
    assert h.percentile(50) > 0.5 * 1000


def test_closed_loop_sees_the_stall_once() -> None:
    h = Simulation(plan(), one_stall()).run()
    assert h.count() == 1000
    assert sum(c for low, _, c in h.buckets() if low >= 100_000) == 1
    assert h.percentile(99) == pytest.approx(100, abs=1)


def test_a_free_connection_takes_the_tickets_of_a_stalled_one() -> None:
    # With two connections the service still has capacity during the stall: only the
    # stalled request is slow, and everything else is sent on time.
    sim = Simulation(plan(rate=1000.0, connections=2), one_stall())
    h = sim.run()
    assert h.count() == 1000
    assert sum(c for low, _, c in h.buckets() if low >= 100_000) == 1
    late = [now - due for due, now in sim.sent if now - due > 2e-6]
    assert late == []


def test_constant_rate_sends_on_schedule() -> None:
    sim = Simulation(plan(rate=250.0, requests=100), iter(lambda: FAST_S, None))
    h = sim.run()
    dues = [due for due, _ in sim.sent]
    assert dues == pytest.approx([k / 250 for k in range(100)])
    assert all(0 <= now - due <= 2e-6 for due, now in sim.sent)
    assert h.max() <= 102


def test_duration_and_warmup() -> None:
    # 1000/s for 1 s after a 0.2 s warmup: the 200 warmup requests are not counted.
    sim = Simulation(
        plan(rate=1000.0, requests=None, duration_s=1.0, warmup_s=0.2), iter(lambda: FAST_S, None)
    )
    h = sim.run()
    assert 999 <= h.count() <= 1001
    assert len(sim.sent) == pytest.approx(1200, abs=2)
    assert sim.driver.duration_s == pytest.approx(1.0, abs=0.002)


def test_requests_that_time_out_are_errors() -> None:
    service = iter([0.0001, 30.0, *[0.0001] * 100])
    sim = Simulation(plan(requests=10, timeout_s=1.0), service)
    h = sim.run()
    assert sim.driver.errors["timeout"] == 1
    assert h.count() == 9


class FailingConn:
    """A connection attempt that fails as `kinds` says, one kind per attempt (across all
    connections), 1 ms after it starts; "ok" answers with a 200 instead."""

    def __init__(self, sim: FailingSimulation, due: float, now: float) -> None:
        self.sim = sim
        self.due = due
        self.busy_since: float | None = now
        self.reusable = False
        sim.attempts += 1
        kind = next(sim.kinds)
        sim.loop.call_later(0.001, self._end, kind)

    def send(self, due: float, now: float) -> None:
        self.due, self.busy_since = due, now
        self.sim.loop.call_later(0.001, self._end, "ok")

    def _end(self, kind: str) -> None:
        if self.busy_since is None:
            return
        self.busy_since = None
        if kind == "ok":
            self.reusable = True
            self.sim.driver.done(self, self.sim.loop.now, 200, 10)
        else:
            self.sim.driver.failed(self, kind)

    def abort(self) -> None:
        self.busy_since = None
        self.reusable = False


class FailingSimulation:
    def __init__(self, plan: Plan, kinds: Iterator[str]) -> None:
        self.loop = VirtualLoop()
        self.kinds = kinds
        self.attempts = 0
        self.finished = False
        self.driver = Driver(
            plan,
            lambda driver, due, now: FailingConn(self, due, now),
            self.loop.clock,
            self.loop.call_later,
            self.loop.call_soon,
            self.finish,
        )

    def finish(self) -> None:
        self.finished = True

    def run(self) -> Driver:
        self.driver.begin()
        self.loop.run(lambda: self.finished)
        assert self.finished
        return self.driver


def forever(kind: str) -> Iterator[str]:
    return iter(lambda: kind, None)


@pytest.mark.parametrize(
    ("connections", "kinds", "gave_up", "attempts"),
    [
        # nothing listens: the run ends after 2 refusals per connection, at least 10
        (1, forever("refused"), True, 10),
        (10, forever("refused"), True, 20),
        (50, forever("refused"), True, 100),
        # accepted and closed, or not HTTP: nothing answers either
        (1, forever("reset"), True, 10),
        (2, iter(["other", "reset"] * 100), True, 10),
        # one response first: failures after it are the service's, and counted to the end
        (1, iter(["ok", *["refused"] * 1000]), False, 201),
        # a few refusals, then it answers (a service still starting)
        (1, iter([*["refused"] * 5, *["ok"] * 1000]), False, 6),
    ],
)
def test_the_run_ends_early_when_nothing_answers(
    connections: int, kinds: Iterator[str], gave_up: bool, attempts: int
) -> None:
    driver = FailingSimulation(plan(connections=connections, requests=200), kinds).run()
    assert driver.gave_up is gave_up
    assert driver.answered is not gave_up
    if gave_up:
        # the slots in flight when it stopped still end: at most one more each
        assert attempts <= driver.unanswered <= attempts + connections
        assert driver.result()["gave_up"] is True


def test_timeouts_do_not_end_the_run_early() -> None:
    # --timeout bounds each of them already, and a first response may be slow.
    service = iter([30.0] * 12)
    sim = Simulation(plan(requests=12, timeout_s=1.0), service)
    sim.run()
    assert sim.driver.errors["timeout"] == 12 and not sim.driver.gave_up


@pytest.mark.parametrize(
    ("errors", "answered", "reason"),
    [
        ({"refused": 20}, False, "every connection was refused"),
        ({"timeout": 3}, False, "no request got a response within --timeout"),
        ({"refused": 2, "reset": 8}, False, "no response arrived (refused: 2, reset: 8)"),
        ({"refused": 20}, True, None),  # something answered once: a report, not this line
        ({}, False, None),  # nothing was tried
    ],
)
def test_silence(errors: dict[str, int], answered: bool, reason: str | None) -> None:
    result = bench.Result(answered=answered)
    result.errors.update(errors)
    assert bench.silence(result) == reason
    line = bench.silence_line(result, bench.parse_target("http://127.0.0.1:4001/"), None)
    if reason is None:
        assert line is None
    else:
        assert line == (
            f"nothing answers at 127.0.0.1:4001: {reason}. Is the service running and "
            "listening on port 4001?"
        )


def test_plan_split_over_workers() -> None:
    parts = plan(connections=5, requests=11, rate=300.0).split(2)
    assert [p.connections for p in parts] == [3, 2]
    assert [p.requests for p in parts] == [6, 5]
    assert [p.rate for p in parts] == [150.0, 150.0]
    assert [p.offset_s for p in parts] == pytest.approx([0.0, 1 / 300])
    assert len(plan(connections=1).split(4)) == 1


# --- the response parser ------------------------------------------------------------------


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Recorder:
    """Stands in for the Driver: records what a connection reports."""

    def __init__(self, head: bool = False) -> None:
        self.plan = plan(request=b"GET / HTTP/1.1\r\n\r\n", head=head)
        self.clock = lambda: 1.0
        self.events: list[tuple[Any, ...]] = []

    def done(self, conn: Any, now: float, status: int, nbytes: int) -> None:
        self.events.append(("done", status, nbytes, conn.reusable))

    def failed(self, conn: Any, kind: str) -> None:
        self.events.append(("failed", kind))


def feed(response: bytes, step: int | None = None, head: bool = False) -> list[tuple[Any, ...]]:
    rec = Recorder(head)
    conn = bench._Conn(rec, 0.0, 0.0)  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    pieces = (
        [response]
        if step is None
        else [response[i : i + step] for i in range(0, len(response), step)]
    )
    for piece in pieces:
        conn.data_received(piece)
    if conn.transport is not None and conn.busy_since is not None:
        conn.connection_lost(None)
    return rec.events


CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 3, 7])
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (CL, ("done", 200, True)),
        (CHUNKED, ("done", 201, True)),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            ("done", 200, True),
        ),
        (b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", ("done", 204, True)),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            ("done", 200, True),
        ),
        (
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            ("done", 503, False),
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", ("done", 200, False)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", ("failed", "reset")),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ("failed", "other")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ("failed", "other")),
    ],
)
def test_response_parsing(response: bytes, expected: tuple[Any, ...], step: int | None) -> None:
    events = feed(response, step)
    if expected[0] == "done":  # every byte read is counted
        expected = (expected[0], expected[1], len(response), expected[2])
    assert events == [expected]


def test_head_responses_have_no_body() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    assert feed(response, head=True) == [("done", 200, len(response), True)]


def test_a_repeated_response_is_parsed_again_when_it_differs() -> None:
    rec = Recorder()
    conn = bench._Conn(rec, 0.0, 0.0)  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    other = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    for response in (CL, CL, other, CL):
        conn.data_received(response)
        conn.send(0.0, 0.0)
    assert [e[1] for e in rec.events] == [200, 200, 404, 200]


# --- real runs ------------------------------------------------------------------------------


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
    code = await asyncio.to_thread(bench.main, list(argv))
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
                bench.main, [f"http://127.0.0.1:{port}/", "-d", "1h", "-c", "4", "--workers", "1"]
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
    from devrouter.reload import read_config

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


def test_compare_direct_needs_a_route(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config_path = tmp_path / "devrouter.yaml"
    config_path.write_text("routes:\n  web: 3000\n")
    target = bench.parse_target("api")
    with pytest.raises(bench.StartupError, match=r"no route for api\.localhost"):
        bench.direct_target(target, str(config_path))  # no live table: the config file
    assert bench.main(["http://127.0.0.1:9/", "--compare-direct"]) == 2
    assert "needs a route" in capsys.readouterr().err


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
    from test_run import make_dev

    yield from make_dev(tmp_path)


def socket_only(dev: Any) -> dict[str, str]:
    """The environment without $DEVROUTER_LISTEN: only the control socket says where the
    router is."""
    env = dict(dev.env)
    env.pop("DEVROUTER_LISTEN")
    return dict(env)


def test_bench_a_run_and_an_alias_name_through_a_router_on_another_port(dev: Any) -> None:
    from test_run import finish

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
