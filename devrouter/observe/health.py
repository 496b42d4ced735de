"""Health probes: is anything listening on each route's backend, and on which address?

Theory of operation: a probe is a TCP connect to each address of an `Upstream` (both
loopbacks for a bare port), closed as soon as it opens; no byte is sent. Every distinct
upstream of the live table (route targets and path targets) is probed once a round, with
at most `MAX_CONCURRENT_CONNECTS` connects in flight, and the result is kept per upstream
as a `Probe` whose `detail` says in words what was found ("nothing is listening on
127.0.0.1:4001 or [::1]:4001", "listening only on [::1]:5173 (nothing on 127.0.0.1)").

Rounds run `PROBE_INTERVAL_S` apart, and only while someone is looking (the dashboard, its
API or /metrics was read in the last `ACTIVE_WINDOW_S`: `touch()`) or traffic flowed
(`traffic()`, or the `Metrics` sequence number moved). Otherwise the loop only wakes to
notice traffic, and nothing is dialled. `fresh()` lets a reader that arrives after a quiet
spell wait for one bounded round instead of reading hours-old results.

Only loopback IP literals are ever dialled: upstreams are loopback by construction
(`config.parse_target`), and this module checks again rather than trust every caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import time
from dataclasses import dataclass

from ..core.model import Upstream
from ..core.state import State
from .metrics import Metrics

log = logging.getLogger("devrouter.health")

#: Seconds between two probe rounds while someone looks or traffic flows.
PROBE_INTERVAL_S = 3.0
#: A look (`touch`) or a request (`traffic`) keeps probes running this many seconds.
ACTIVE_WINDOW_S = 30.0
#: Seconds to wait for one connect. Loopback connects are instant or refused; a connect that
#: hangs means a full accept queue or a firewall rule.
CONNECT_TIMEOUT_S = 1.0
#: Connects in flight at once, over all upstreams.
MAX_CONCURRENT_CONNECTS = 8
#: `fresh()` runs a round when the newest result is older than this, in seconds.
STALE_AFTER_S = 2 * PROBE_INTERVAL_S

# The outcome of one connect.
OPEN = "open"
REFUSED = "refused"
TIMEOUT = "timeout"
UNAVAILABLE = "unavailable"  # no such local address (IPv6 off, for one)
SKIPPED = "skipped"  # not a loopback IP literal: never dialled

_UNAVAILABLE_ERRNOS = frozenset({errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT, errno.ENETUNREACH})


@dataclass(frozen=True, slots=True)
class Probe:
    up: bool
    detail: str  # "listening on 127.0.0.1:4001" / "nothing is listening on ..."
    checked_at: float  # wall clock
    listening: tuple[str, ...] = ()  # the addresses that accepted, e.g. ("::1",)


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def is_loopback_ip(host: str) -> bool:
    """True only for a loopback IP literal; names (even `localhost`) are never resolved."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _join(items: list[str], word: str) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + f" {word} " + items[-1]


def describe(upstream: Upstream, outcomes: dict[str, str], checked_at: float) -> Probe:
    """Turn the outcome of each address into a `Probe` with a one-line detail."""
    port = upstream.port
    hosts = upstream.hosts
    listening = tuple(h for h in hosts if outcomes.get(h) == OPEN)
    if listening:
        where = _join([hostport(h, port) for h in listening], "and")
        if len(listening) == len(hosts):
            return Probe(True, f"listening on {where}", checked_at, listening)
        others = _join([h for h in hosts if h not in listening], "or")
        return Probe(
            True, f"listening only on {where} (nothing on {others})", checked_at, listening
        )
    skipped = [h for h in hosts if outcomes.get(h) == SKIPPED]
    if len(skipped) == len(hosts):
        what = "is not a loopback address" if len(skipped) == 1 else "are not loopback addresses"
        return Probe(False, f"not probed: {_join(skipped, 'and')} {what}", checked_at)
    slow = [hostport(h, port) for h in hosts if outcomes.get(h) == TIMEOUT]
    if slow:
        return Probe(
            False,
            f"{_join(slow, 'and')} did not accept a connection within {CONNECT_TIMEOUT_S:g} s "
            "(a full accept queue, or a process stopped in a debugger?)",
            checked_at,
        )
    failed = [(h, o) for h, o in outcomes.items() if o not in (REFUSED, UNAVAILABLE, SKIPPED)]
    if failed:
        host, why = failed[0]
        return Probe(False, f"cannot connect to {hostport(host, port)}: {why}", checked_at)
    tried = [hostport(h, port) for h in hosts if outcomes.get(h) != SKIPPED]
    return Probe(False, f"nothing is listening on {_join(tried, 'or')}", checked_at)


class Health:
    def __init__(
        self,
        state: State,
        metrics: Metrics | None = None,
        *,
        interval_s: float = PROBE_INTERVAL_S,
        window_s: float = ACTIVE_WINDOW_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.state = state
        self.metrics = metrics  # when given, its sequence number moving counts as traffic
        self.interval_s = interval_s
        self.window_s = window_s
        self.connect_timeout_s = connect_timeout_s
        self.results: dict[Upstream, Probe] = {}
        self.rounds = 0  # probe rounds completed, for tests and the curious
        self._last_active = float("-inf")  # monotonic time of the last touch or traffic
        self._last_seq = 0
        self._last_round = float("-inf")  # monotonic time the last round finished
        self._sleeping = False  # the loop is idle: a touch should wake it
        self._wake: asyncio.Event | None = None
        self._round: asyncio.Task[None] | None = None
        self._connects: asyncio.Semaphore | None = None

    # --- what the rest of the router calls -----------------------------------------------

    def touch(self) -> None:
        """Someone is looking (the dashboard or its API was read): keep probing."""
        self._last_active = time.monotonic()
        if self._sleeping and self._wake is not None:
            self._wake.set()

    def status(self, upstream: Upstream) -> Probe | None:
        return self.results.get(upstream)

    def active(self) -> bool:
        """Whether probes should run now: a recent look, or traffic since the last check."""
        if self.metrics is not None and self.metrics.recent:
            seq = self.metrics.recent[-1].seq
            if seq != self._last_seq:
                self._last_seq = seq
                self._last_active = time.monotonic()
        return time.monotonic() - self._last_active < self.window_s

    async def fresh(self) -> None:
        """Make sure the results are recent, running a round if they are not (bounded by the
        connect timeout). For readers that arrive after a quiet spell."""
        self.touch()
        if time.monotonic() - self._last_round > STALE_AFTER_S or self._missing():
            await self.probe_all()

    async def run(self, stop: asyncio.Event) -> None:
        """Probe every `interval_s` while active, until `stop` is set."""
        self._wake = asyncio.Event()
        relay = asyncio.create_task(self._relay_stop(stop))
        try:
            while not stop.is_set():
                if self.active():
                    self._sleeping = False
                    if time.monotonic() - self._last_round >= self.interval_s * 0.9:
                        await self.probe_all()
                else:
                    self._sleeping = True
                self._wake.clear()
                if stop.is_set():
                    break
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.interval_s):
                        await self._wake.wait()
        finally:
            self._sleeping = False
            relay.cancel()
            await asyncio.gather(relay, return_exceptions=True)
            if self._round is not None:
                self._round.cancel()
                await asyncio.gather(self._round, return_exceptions=True)

    async def _relay_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._wake is not None:
            self._wake.set()

    # --- probing --------------------------------------------------------------------------

    def upstreams(self) -> list[Upstream]:
        """Every distinct upstream of the live table, routes and their paths."""
        seen: dict[Upstream, None] = {}
        for route in self.state.snapshot.table.routes:
            seen[route.upstream] = None
            for path in route.paths:
                seen[path.upstream] = None
        return list(seen)

    def _missing(self) -> bool:
        return any(u not in self.results for u in self.upstreams())

    async def probe_all(self) -> None:
        """One round over every upstream. Concurrent callers share the round in flight."""
        if self._round is None or self._round.done():
            self._round = asyncio.create_task(self._probe_round())
        await asyncio.shield(self._round)

    async def _probe_round(self) -> None:
        upstreams = self.upstreams()
        probes = await asyncio.gather(*(self.probe(u) for u in upstreams))
        results = dict(zip(upstreams, probes, strict=True))
        for upstream, probe in results.items():
            old = self.results.get(upstream)
            if old is not None and old.up != probe.up:
                log.info("backend %s: %s", upstream.describe(), probe.detail)
        self.results = results  # upstreams no longer routed are dropped
        self._last_round = time.monotonic()
        self.rounds += 1

    async def probe(self, upstream: Upstream) -> Probe:
        """Connect to each address of one upstream; say what was found."""
        outcomes = await asyncio.gather(*(self._try(h, upstream.port) for h in upstream.hosts))
        return describe(upstream, dict(zip(upstream.hosts, outcomes, strict=True)), time.time())

    async def _try(self, host: str, port: int) -> str:
        if not is_loopback_ip(host):
            return SKIPPED
        if self._connects is None:
            self._connects = asyncio.Semaphore(MAX_CONCURRENT_CONNECTS)
        async with self._connects:
            return await self.dial(host, port)

    async def dial(self, host: str, port: int) -> str:
        """One TCP connect, closed at once: OPEN, REFUSED, TIMEOUT, UNAVAILABLE or the error."""
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout_s):
                transport, _ = await loop.create_connection(asyncio.Protocol, host, port)
        except TimeoutError:
            return TIMEOUT
        except OSError as exc:
            if exc.errno == errno.ECONNREFUSED:
                return REFUSED
            if exc.errno in _UNAVAILABLE_ERRNOS:
                return UNAVAILABLE
            return exc.strerror or type(exc).__name__
        transport.close()
        return OPEN


__all__ = ["Health", "Probe", "describe"]
