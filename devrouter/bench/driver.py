"""The Driver: when each request is due, what its latency is, and when the run ends, in the
closed loop and at a constant rate with the coordinated-omission correction (the package
docstring tells how). It does no I/O: it is given a clock, timer functions and a connection
opener, so the correction is tested against synthetic service times in virtual time
(tests/bench/test_bench_driver.py)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

from ..observe.histogram import Histogram
from .errors import ERROR_KINDS
from .plan import Plan

#: How long before a due time the constant-rate pacer stops sleeping and polls, in seconds.
SPIN_S = 0.001
#: How often the driver checks timeouts, the end of the run and publishes progress, seconds.
TICK_S = 0.05
#: Pause before reconnecting after a refused connect, per connection, in seconds.
REFUSED_BACKOFF_S = 0.01
#: Before any response has arrived, a run ends after this many failed connections per
#: connection slot (at least GIVE_UP_MIN): refused, reset or not HTTP, every one. Nothing
#: answers there, and thousands more attempts would only fill a table with zeros. A timeout
#: does not count: `--timeout` already bounds it, and a first response may be slow (a dev
#: server compiling on its first request).
GIVE_UP_PER_CONNECTION = 2
GIVE_UP_MIN = 10


class Conn(Protocol):
    """What the Driver needs of a connection."""

    due: float  # when the request in flight was due
    busy_since: float | None  # when it was sent; None when no request is in flight
    reusable: bool  # after a response: can the next request go on this connection?

    def send(self, due: float, now: float) -> None: ...

    def abort(self) -> None: ...


Opener = Callable[["Driver", float, float], Conn]
Timer = Callable[..., object]


class Driver:
    """Paces requests over `plan.connections` slots, records latencies, ends the run.

    A slot is one logical client: at most one request in flight, on one connection at a
    time. The Driver is told about completions (`done`) and failures (`failed`) and answers
    by sending the slot's next request, now or at its due time, or by parking the slot when
    the run is over. `clock` is in seconds; `call_later(delay, fn, *args)` and
    `call_soon(fn, *args)` have the meaning of the event loop's methods.
    """

    def __init__(
        self,
        plan: Plan,
        opener: Opener,
        clock: Callable[[], float],
        call_later: Timer,
        call_soon: Timer,
        on_finish: Callable[[], None],
        progress: list[int] | None = None,
    ) -> None:
        self.plan = plan
        self.opener = opener
        self.clock = clock
        self.call_later = call_later
        self.call_soon = call_soon
        self.on_finish = on_finish
        self.progress = progress
        self.histogram = Histogram()
        self.status: dict[int, int] = {}
        self.errors: dict[str, int] = dict.fromkeys(ERROR_KINDS, 0)
        self.requests = 0
        self.bytes = 0
        self.live: set[Conn] = set()
        self.remaining = plan.requests
        self.interval = 1.0 / plan.rate if plan.rate else 0.0
        self.started = self.measure_from = self.first_due = 0.0
        self.tickets = 0  # constant rate: request i is due at first_due + i * interval
        self.stop_at: float | None = None
        self.stop_at_or_never = math.inf
        self.closed_loop = not self.interval and self.remaining is None
        self.stopped_at: float | None = None
        self.last_done = 0.0
        self.parked = 0
        self.finished = False
        self.answered = False  # a response (any status) has arrived
        self.unanswered = 0  # failed connections before any response
        self.give_up_after = max(GIVE_UP_MIN, GIVE_UP_PER_CONNECTION * plan.connections)
        self.gave_up = False  # the run was ended because nothing answers

    def begin(self) -> None:
        now = self.clock()
        self.started = now
        self.measure_from = now + self.plan.warmup_s
        self.first_due = now + self.plan.offset_s
        if self.plan.duration_s is not None:
            self.stop_at = self.stop_at_or_never = self.measure_from + self.plan.duration_s
        self.call_later(TICK_S, self._tick)
        for _ in range(self.plan.connections):
            self._next(None, now)

    def stop(self) -> None:
        """End the run: send nothing more, let requests in flight finish (up to the timeout)."""
        if self.stopped_at is None:
            self.stopped_at = self.clock()
            if self.parked >= self.plan.connections:
                self._finish()

    @property
    def duration_s(self) -> float:
        """From the end of the warmup to the stop, or to the last response if later."""
        end = max(self.last_done, self.stopped_at or 0.0)
        return max(0.0, end - self.measure_from)

    # --- events from connections --------------------------------------------------------

    def done(self, conn: Conn, now: float, status: int, nbytes: int) -> None:
        self.answered = True
        if conn.due >= self.measure_from:
            self.histogram.record(int((now - conn.due) * 1e6))
            self.requests += 1
            self.bytes += nbytes
            self.status[status] = self.status.get(status, 0) + 1
            self.last_done = now
        if conn.reusable:
            if self.closed_loop and self.stopped_at is None and now < self.stop_at_or_never:
                conn.send(now, now)  # the fast path: closed loop, run by time, not over yet
                return
            self._next(conn, now)
        else:
            self.live.discard(conn)
            self._next(None, now)

    def failed(self, conn: Conn, kind: str) -> None:
        self.live.discard(conn)
        if conn.due >= self.measure_from:
            self.errors[kind] += 1
        if not self.answered and kind != "timeout":
            self.unanswered += 1
            if self.unanswered >= self.give_up_after and self.stopped_at is None:
                self.gave_up = True
                self.stop()
        if kind == "refused" and self.stopped_at is None:
            self.call_later(REFUSED_BACKOFF_S, self._retry)
        else:
            self._next(None, self.clock())

    def _retry(self) -> None:
        self._next(None, self.clock())

    # --- pacing -------------------------------------------------------------------------

    def _next(self, conn: Conn | None, now: float) -> None:
        """Give the slot that owns `conn` (or a slot with no connection) its next request."""
        if self.stopped_at is None and self.stop_at is not None and now >= self.stop_at:
            self.stop()
        if self.stopped_at is None:
            if self.interval:
                due = self.first_due + self.tickets * self.interval
                self.tickets += 1
            else:
                due = now
            if (self.stop_at is not None and due >= self.stop_at) or (
                self.remaining is not None and due >= self.measure_from and self.remaining <= 0
            ):
                self.stop()
            else:
                if self.remaining is not None and due >= self.measure_from:
                    self.remaining -= 1
                if due > now:
                    self._wait(conn, due)
                else:
                    self._send(conn, due, now)
                return
        self._park(conn)

    def _wait(self, conn: Conn | None, due: float) -> None:
        now = self.clock()
        delay = due - now
        if delay > 1.5 * SPIN_S:  # sleep, waking SPIN_S early (never for a sliver)
            self.call_later(delay - SPIN_S, self._wait, conn, due)
        elif delay > 0:
            self.call_soon(self._wait, conn, due)
        else:
            self._send(conn, due, now)

    def _send(self, conn: Conn | None, due: float, now: float) -> None:
        if conn is not None and conn.reusable and conn in self.live:
            conn.send(due, now)
        else:
            if conn is not None:
                self.live.discard(conn)
                conn.abort()
            self.live.add(self.opener(self, due, now))

    def _park(self, conn: Conn | None) -> None:
        if conn is not None:
            self.live.discard(conn)
            conn.abort()
        self.parked += 1
        if self.parked >= self.plan.connections:
            self._finish()

    def _tick(self) -> None:
        if self.finished:
            return
        now = self.clock()
        if self.stopped_at is None and self.stop_at is not None and now >= self.stop_at:
            self.stop()
        draining = self.stopped_at is not None
        limit = self.plan.timeout_s
        for conn in list(self.live):
            since = conn.busy_since
            if since is None:
                continue
            if now - since > limit or (draining and now - (self.stopped_at or now) > limit):
                conn.abort()
                self.failed(conn, "timeout")
        self._publish()
        if not self.finished:
            self.call_later(TICK_S, self._tick)

    def _publish(self) -> None:
        if self.progress is not None:
            self.progress[0] = self.requests
            self.progress[1] = sum(self.errors.values())
            self.progress[2] = self.bytes
            self.progress[3] = int(self.finished)

    def _finish(self) -> None:
        if self.finished:
            return
        self.finished = True
        for conn in list(self.live):
            conn.abort()
        self.live.clear()
        self._publish()
        self.on_finish()

    def result(self) -> dict[str, Any]:
        """The worker's share of the report, JSON-safe so it can cross processes."""
        return {
            "histogram": self.histogram.to_dict(),
            "requests": self.requests,
            "bytes": self.bytes,
            "status": {str(k): v for k, v in self.status.items()},
            "errors": dict(self.errors),
            "duration_s": self.duration_s,
            "answered": self.answered,
            "gave_up": self.gave_up,
        }
