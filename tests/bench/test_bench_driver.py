"""bench's Driver: the pacing and the coordinated-omission correction in virtual time,
timeouts, and the end of a run when nothing answers."""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

import pytest
from bench_plans import plan

from devrouter.bench.driver import Driver
from devrouter.bench.plan import Plan
from devrouter.observe.histogram import RELATIVE_ERROR, Histogram


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
