"""`devrouter bench`: a load generator for local services that reports latency honestly.

Theory of operation. A run is split over `--workers` processes, each with its own event loop
(uvloop when importable), its share of the connections, requests and rate, and its own
`Histogram`; the parent merges their results. Each worker has a `Driver`, which decides
*when* each request is due and what its latency is, and `_Conn`s, lean asyncio protocols
that write one pre-built request and parse the response by hand (status line, then a body
framed by Content-Length, chunked encoding or the end of the connection).

There are two modes:

- Closed loop (the default, like wrk): every connection sends its next request as soon as
  the previous response is complete, and latency runs from the write to the last byte.
- Constant rate (`--rate N`, like wrk2): request *i* is due at `start + i / N`. A free
  connection takes the next due time, waits for it, and sends; latency runs from the due
  time, not from the send. When the service stalls, the requests that fell due meanwhile
  are sent late, back to back, and each carries its wait, so the stall shows in the tail
  instead of hiding as one slow sample (Gil Tene's "coordinated omission"). Timers have
  millisecond granularity, so the last millisecond before a due time is spent polling the
  loop with `call_soon`, keeping the send within microseconds of its due time.

The Driver does no I/O: it is given a clock, timer functions and a connection opener, so
the correction can be tested against synthetic service times in virtual time.

Only this machine is ever a target: loopback IP literals, `localhost` and `*.localhost`
names (RFC 6761 §6.3, connected at 127.0.0.1 with the name in the Host header). Anything
else is refused before a socket is opened or a name resolved.

Errors are counted by kind: `refused` (connect refused), `reset` (the connection closed or
was reset before a complete response), `timeout` (no complete response within
`--timeout`) and `other` (a malformed response, another OS error).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import multiprocessing
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TextIO, cast
from urllib.parse import urlsplit

from .config import DEFAULT_PORT, ConfigError, Route
from .observe.histogram import Histogram

if TYPE_CHECKING:  # imported where used: worker processes import this module, and no more
    from .locate import Located

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STARTUP = 0, 1, 2, 3

#: Defaults a wrk user expects.
DEFAULT_CONNECTIONS = 10
DEFAULT_DURATION_S = 10.0
DEFAULT_TIMEOUT_S = 10.0
#: Rounds of --compare-direct (each runs the load once direct and once through the router).
DEFAULT_ROUNDS = 3
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
#: A response head larger than this (bytes) is an `other` error.
MAX_HEAD_BYTES = 64 * 1024
#: How often progress is shown: on a terminal, and as plain lines otherwise (seconds).
PROGRESS_TTY_S = 0.25
PROGRESS_PLAIN_S = 2.0
#: How long worker processes may take to start, in seconds.
STARTUP_TIMEOUT_S = 60.0
ERROR_KINDS = ("refused", "reset", "timeout", "other")

_DURATION_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_NAME_RE = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*\.?$")
_TOKEN_RE = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class UsageError(Exception):
    """A bad option or target; printed as one line and answered with exit 2."""


class StartupError(Exception):
    """The route table needed by --compare-direct cannot be read; exit 3."""


# --- options ----------------------------------------------------------------------------


def parse_duration(text: str) -> float:
    """`10s`, `1m`, `500ms`, `1m30s`, `1.5h` or plain seconds (`2.5`), in seconds."""
    t = text.strip().lower()
    try:
        value = float(t)
    except ValueError:
        pos, value = 0, 0.0
        for m in _DURATION_RE.finditer(t):
            if m.start() != pos:
                break
            value += float(m.group(1)) * _UNITS[m.group(2)]
            pos = m.end()
        if pos != len(t) or not t:
            raise ValueError(f"cannot read duration {text!r}: use e.g. 10s, 1m, 500ms") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"duration {text!r} must be a non-negative number of seconds")
    return value


def parse_rate(text: str) -> float:
    """`1000` or `1000/s` requests per second; `60/m` also works."""
    t = text.strip().lower()
    number, _, unit = t.partition("/")
    per = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0}.get(unit)
    try:
        value = float(number)
    except ValueError:
        value = math.nan
    if per is None or not math.isfinite(value) or value <= 0:
        raise ValueError(f"cannot read rate {text!r}: use requests per second, e.g. 1000/s")
    return value / per


def parse_header(text: str) -> tuple[str, str]:
    """`Name: value`. Refuses names that are not HTTP tokens and values with line breaks."""
    name, sep, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not sep or not _TOKEN_RE.match(name):
        raise ValueError(f"cannot read header {text!r}: use 'Name: value'")
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name!r} contains a line break")
    return name, value


def parse_body(text: str, cwd: Path | None = None) -> bytes:
    """A literal string (UTF-8), or `@file` for the file's bytes (`@@x` is the literal `@x`)."""
    if text.startswith("@@"):
        return text[1:].encode()
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if cwd is not None and not path.is_absolute():
            path = cwd / path
        try:
            return path.read_bytes()
        except OSError as exc:
            raise ValueError(f"cannot read body file {str(path)!r}: {exc.strerror}") from None
    return text.encode()


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect and what the request line and Host header say."""

    connect_host: str  # always a loopback IP literal
    port: int
    host_header: str
    path: str  # origin form, with the query
    route: str | None = None  # the route name, for a `.localhost` target

    @property
    def url(self) -> str:
        return f"http://{self.host_header}{self.path}"

    @property
    def address(self) -> str:
        h = self.connect_host
        return f"[{h}]:{self.port}" if ":" in h else f"{h}:{self.port}"


def is_route_name(target: str) -> bool:
    """Is TARGET a route NAME (`api`, `shop.api.localhost`) rather than a URL?"""
    text = target.strip()
    return "://" not in text and not any(c in text for c in ":/[") and _is_route_name(text)


def parse_target(
    target: str,
    path: str | None = None,
    router_port: int = DEFAULT_PORT,
    router_host: str = "127.0.0.1",
) -> Target:
    """A URL (`http://api.localhost:7355/items`, `http://127.0.0.1:4001/x`) or a route name
    and an optional path (`api`, `/items`), which goes through the router at `router_host`
    (a loopback address) and `router_port`.

    Raises UsageError for anything that is not on this machine, without resolving it.
    """
    text = target.strip()
    if is_route_name(text):
        if _loopback_address(router_host) != router_host:
            raise UsageError(f"the router's address {router_host!r} is not a loopback address")
        name = text.lower().rstrip(".").removesuffix(".localhost")
        p = path or "/"
        if not p.startswith("/"):
            p = "/" + p
        _check_path(p)
        return Target(router_host, router_port, f"{name}.localhost:{router_port}", p, name)
    if path is not None:
        raise UsageError("give the path inside the URL, or a route name and a PATH, not both")
    if "://" not in text:
        text = "http://" + text
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise UsageError(f"cannot read the target {target!r}: {exc}") from None
    if parts.scheme.lower() != "http":
        raise UsageError(
            f"{target!r}: only http:// is supported (bench talks plain HTTP/1.1 to local services)"
        )
    if parts.username is not None or parts.password is not None:
        raise UsageError(f"{target!r}: credentials in the URL are not supported")
    host = (parts.hostname or "").rstrip(".")
    connect = _loopback_address(host)
    if connect is None:
        raise UsageError(
            f"refusing to send load to {host or target!r}: devrouter bench only targets this "
            "machine (127.0.0.0/8, ::1, localhost and NAME.localhost)"
        )
    route = host.removesuffix(".localhost") if host.endswith(".localhost") else None
    p = parts.path or "/"
    if parts.query:
        p += "?" + parts.query
    _check_path(p)
    netloc = parts.netloc.rpartition("@")[2]
    return Target(connect, port or 80, netloc, p, route)


def _is_route_name(text: str) -> bool:
    name = text.lower().rstrip(".")
    if name == "localhost" or not _NAME_RE.match(name):
        return False
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return True
    return False


def _loopback_address(host: str) -> str | None:
    """The IP to connect to for a host, or None when it is not this machine."""
    if host == "localhost" or host.endswith(".localhost"):
        return "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    return str(ip) if ip.is_loopback else None


def _check_path(path: str) -> None:
    if any(c in path for c in " \r\n\t") or not path.isascii():
        raise UsageError(f"the path {path!r} must be ASCII without spaces (percent-encode it)")


def build_request(
    target: Target,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    keepalive: bool = True,
) -> bytes:
    """The request bytes, built once and written for every request."""
    if not _TOKEN_RE.match(method):
        raise UsageError(f"{method!r} is not an HTTP method")
    given = {name.lower() for name, _ in headers}
    lines = [f"{method} {target.path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    if "user-agent" not in given:
        lines.append("User-Agent: devrouter-bench")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "connection"]
    if not keepalive:
        lines.append("Connection: close")
    if (body or method.upper() in ("POST", "PUT", "PATCH")) and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# --- the plan for one worker ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Plan:
    """What one worker does. Picklable: it crosses to worker processes."""

    host: str
    port: int
    request: bytes
    connections: int
    duration_s: float | None  # None: run until `requests` are done
    requests: int | None
    rate: float | None  # requests per second for this worker; None: closed loop
    offset_s: float = 0.0  # this worker's first due time, after the warmup
    timeout_s: float = DEFAULT_TIMEOUT_S
    warmup_s: float = 0.0
    keepalive: bool = True
    head: bool = False  # a HEAD request: responses have no body

    def split(self, workers: int) -> list[Plan]:
        """Shares for `workers` processes (never more than there are connections)."""
        n = max(1, min(workers, self.connections))
        out = []
        for w in range(n):
            out.append(
                replace(
                    self,
                    connections=_share(self.connections, n, w),
                    requests=None if self.requests is None else _share(self.requests, n, w),
                    rate=None if self.rate is None else self.rate / n,
                    offset_s=0.0 if self.rate is None else w / self.rate,
                )
            )
        return [p for p in out if p.requests is None or p.requests > 0]


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)


# --- the driver (no I/O) ----------------------------------------------------------------


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


# --- the connection -----------------------------------------------------------------------

_HEAD, _LENGTH, _CHUNKED, _TO_EOF = 0, 1, 2, 3


class _Conn(asyncio.Protocol):
    """One TCP connection: writes the pre-built request and parses responses by hand.

    The parser takes what a benchmark needs and no more: the status code, the framing
    (RFC 9112 §6.3: no body for HEAD, 1xx, 204 and 304; chunked; Content-Length; else
    until close) and whether the server will close the connection.
    """

    __slots__ = (
        "buf",
        "busy_since",
        "clock",
        "closing",
        "driver",
        "due",
        "nbytes",
        "remaining",
        "request",
        "reusable",
        "same",
        "state",
        "status",
        "transport",
    )

    def __init__(self, driver: Driver, due: float, now: float) -> None:
        self.driver = driver
        self.clock = driver.clock
        self.request = driver.plan.request
        self.due = due
        self.busy_since: float | None = now
        self.reusable = False
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.state = _HEAD
        self.remaining = 0
        self.status = 0
        self.nbytes = 0
        self.closing = False
        self.same = b""  # the last response, when it came whole in one read

    # driver side

    def send(self, due: float, now: float) -> None:
        self.due = due
        self.busy_since = now
        self.nbytes = 0
        assert self.transport is not None
        self.transport.write(self.request)

    def abort(self) -> None:
        self.busy_since = None
        self.reusable = False
        if self.transport is not None:
            self.transport.abort()
            self.transport = None

    # transport side

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        t = cast(asyncio.Transport, transport)  # uvloop's transports are not subclasses
        if self.busy_since is None:  # aborted while connecting
            t.abort()
            return
        self.transport = t
        t.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.reusable = False
        if self.busy_since is None:
            return
        if self.state == _TO_EOF:
            self._complete()
            return
        self.busy_since = None
        self.driver.failed(self, "reset" if exc is None or _is_reset(exc) else "other")

    def data_received(self, data: bytes) -> None:
        if self.busy_since is None:
            return
        self.nbytes += len(data)
        if self.state == _HEAD and not self.buf:
            if data == self.same:  # byte for byte the last response: same status and framing
                self._complete()
                return
            # The common case: a whole small response in one read.
            end = data.find(b"\r\n\r\n")
            if end >= 0:
                if not self._head(data[:end]):
                    return
                if self.state == _LENGTH and len(data) - end - 4 == self.remaining:
                    self.same = data
                    self._complete()
                    return
                self.buf += memoryview(data)[end + 4 :]
                self._body()
                return
        self.buf += data
        if self.state == _HEAD:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD_BYTES:
                    self._fail("other")
                return
            head = bytes(self.buf[:end])
            del self.buf[: end + 4]
            if not self._head(head):
                return
        self._body()

    def eof_received(self) -> bool | None:
        return None  # close the transport; connection_lost decides what it meant

    def _head(self, head: bytes) -> bool:
        """Read the status line and framing headers; False if the response is bad."""
        self.same = b""
        try:
            if not head.startswith(b"HTTP/1."):
                raise ValueError("not an HTTP/1.x response")
            status = int(head[9:12])
            lower = head.lower()
            if 100 <= status < 200:  # an interim response; the real one follows
                self.state = _HEAD
                return True
            self.status = status
            self.closing = b"\r\nconnection: close" in lower or head.startswith(b"HTTP/1.0")
            if self.driver.plan.head or status in (204, 304):
                self.state, self.remaining = _LENGTH, 0
            elif b"\r\ntransfer-encoding:" in lower and b"chunked" in lower:
                self.state = _CHUNKED
            else:
                at = lower.find(b"\r\ncontent-length:")
                if at >= 0:
                    end = lower.find(b"\r\n", at + 2)
                    value = lower[at + 17 : end if end >= 0 else len(lower)]
                    self.state, self.remaining = _LENGTH, int(value)
                else:
                    self.state = _TO_EOF
                    self.closing = True
            return True
        except ValueError:
            self._fail("other")
            return False

    def _body(self) -> None:
        buf = self.buf
        while self.busy_since is not None:
            state = self.state
            if state == _HEAD:
                if not buf:
                    return
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end])
                del buf[: end + 4]
                if not self._head(head):
                    return
            elif state == _LENGTH:
                if len(buf) >= self.remaining:
                    del buf[: self.remaining]
                    self._complete()
                else:
                    self.remaining -= len(buf)
                    buf.clear()
                return
            elif state == _CHUNKED:
                if self.remaining:  # bytes of chunk data plus its CRLF still to skip
                    if len(buf) < self.remaining:
                        self.remaining -= len(buf)
                        buf.clear()
                        return
                    del buf[: self.remaining]
                    self.remaining = 0
                end = buf.find(b"\r\n")
                if end < 0:
                    return
                try:
                    size = int(bytes(buf[:end]).split(b";", 1)[0], 16)
                except ValueError:
                    self._fail("other")
                    return
                if size == 0:  # the last chunk, then trailer lines and an empty line
                    if buf[end + 2 : end + 4] == b"\r\n":
                        stop = end + 4
                    else:
                        stop = buf.find(b"\r\n\r\n", end + 2) + 4
                        if stop < 4:
                            return
                    del buf[:stop]
                    self._complete()
                    return
                del buf[: end + 2]
                self.remaining = size + 2
            else:  # _TO_EOF
                buf.clear()
                return

    def _complete(self) -> None:
        now = self.clock()
        self.busy_since = None
        self.state = _HEAD
        self.buf.clear()
        self.reusable = self.transport is not None and not self.closing
        if not self.reusable and self.transport is not None:
            self.transport.close()
            self.transport = None
        self.driver.done(self, now, self.status, self.nbytes)

    def _fail(self, kind: str) -> None:
        self.abort()
        self.driver.failed(self, kind)


def _is_reset(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError)


def _error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if _is_reset(exc):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"


# --- one worker ---------------------------------------------------------------------------


async def run_worker(plan: Plan, progress: list[int] | None = None) -> dict[str, Any]:
    """Run one worker's share on the running loop and return its result."""
    loop = asyncio.get_running_loop()
    finished: asyncio.Future[None] = loop.create_future()
    tasks: set[asyncio.Task[None]] = set()

    async def connect(conn: _Conn) -> None:
        try:
            await loop.create_connection(lambda: conn, plan.host, plan.port)
        except OSError as exc:
            if conn.busy_since is not None:
                conn.busy_since = None
                driver.failed(conn, _error_kind(exc))

    def opener(driver: Driver, due: float, now: float) -> Conn:
        conn = _Conn(driver, due, now)
        task = loop.create_task(connect(conn))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        return conn

    def on_finish() -> None:
        if not finished.done():
            finished.set_result(None)

    driver = Driver(
        plan,
        opener,
        time.perf_counter,
        loop.call_later,
        loop.call_soon,
        on_finish,
        progress,
    )
    stop_on_signal = threading.current_thread() is threading.main_thread()
    if stop_on_signal:
        loop.add_signal_handler(signal.SIGINT, driver.stop)
    try:
        driver.begin()
        await finished
    finally:
        if stop_on_signal:
            loop.remove_signal_handler(signal.SIGINT)
        for task in list(tasks):
            task.cancel()
    return driver.result()


def _event_loop_run(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _worker_process(plan: Plan, index: int, shared: Any, barrier: Any, results: Any) -> None:
    """The body of one worker process: wait for the others, run, send the result."""
    progress = _SharedRow(shared, index)
    try:
        barrier.wait()
        result = _event_loop_run(run_worker(plan, progress))  # type: ignore[arg-type]
    except BaseException as exc:  # report, so the parent never waits forever
        results.put((index, {"error": f"{type(exc).__name__}: {exc}"}))
        raise
    results.put((index, result))


class _SharedRow:
    """A worker's row of four counters in a shared array, used like a list."""

    def __init__(self, shared: Any, index: int) -> None:
        self.shared = shared
        self.base = index * 4

    def __setitem__(self, i: int, value: int) -> None:
        self.shared[self.base + i] = value

    def __getitem__(self, i: int) -> int:
        return int(self.shared[self.base + i])


# --- a whole run ------------------------------------------------------------------------


@dataclass
class Result:
    """Merged results of all workers."""

    histogram: Histogram = field(default_factory=Histogram)
    requests: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    answered: bool = False  # some response arrived, counted or not (the warmup's too)
    gave_up: bool = False  # a worker ended early because nothing answered

    def add(self, part: Mapping[str, Any]) -> None:
        self.histogram.merge(Histogram.from_dict(part["histogram"]))
        self.requests += int(part["requests"])
        self.bytes += int(part["bytes"])
        self.duration_s = max(self.duration_s, float(part["duration_s"]))
        for code, n in part["status"].items():
            self.status[code] = self.status.get(code, 0) + int(n)
        for kind, n in part["errors"].items():
            self.errors[kind] = self.errors.get(kind, 0) + int(n)
        self.answered = self.answered or bool(part.get("answered", self.requests > 0))
        self.gave_up = self.gave_up or bool(part.get("gave_up", False))

    def merge(self, other: Result) -> None:
        """Add another run (a --compare-direct round); durations add up."""
        duration = self.duration_s + other.duration_s
        self.add(other.as_part())
        self.duration_s = duration

    def as_part(self) -> dict[str, Any]:
        return {
            "histogram": self.histogram.to_dict(),
            "requests": self.requests,
            "bytes": self.bytes,
            "duration_s": self.duration_s,
            "status": self.status,
            "errors": self.errors,
            "answered": self.answered,
            "gave_up": self.gave_up,
        }

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = self.duration_s
        return {
            "requests": self.requests,
            "duration_s": round(d, 6),
            "requests_per_second": round(self.requests_per_second, 3),
            "bytes": self.bytes,
            "bytes_per_second": round(self.bytes / d, 3) if d > 0 else 0.0,
            "status": dict(sorted(self.status.items())),
            "errors": dict(self.errors),
            "latency_ms": {k: round(v, 3) for k, v in self.histogram.summary().items()},
        }


class _Progress:
    """Live progress on stderr: one rewritten line on a terminal, plain lines otherwise."""

    def __init__(self, stream: TextIO, total_s: float | None, requests: int | None) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every = PROGRESS_TTY_S if self.tty else PROGRESS_PLAIN_S
        self.total_s = total_s
        self.requests = requests
        self.started = time.monotonic()
        self.last_at = self.started
        self.last_done = 0
        self.next_at = self.started + self.every

    def due(self) -> bool:
        return time.monotonic() >= self.next_at

    def show(self, done: int, errors: int) -> None:
        now = time.monotonic()
        rate = (done - self.last_done) / max(now - self.last_at, 1e-9)
        self.last_at, self.last_done, self.next_at = now, done, now + self.every
        elapsed = now - self.started
        if self.total_s is not None:
            left = f"{elapsed:5.1f}s of {self.total_s:.1f}s"
        else:
            left = f"{elapsed:5.1f}s, {done:,} of {self.requests or 0:,} requests"
        line = f"{done:>10,} requests  {rate:>10,.0f} req/s  {errors:,} errors  {left}"
        if self.tty:
            self.stream.write("\r\x1b[2K" + line)
        else:
            self.stream.write("progress: " + line.strip() + "\n")
        self.stream.flush()

    def end(self) -> None:
        if self.tty:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()


def execute(plan: Plan, workers: int, stream: TextIO | None = None) -> Result:
    """Run `plan` over `workers` processes (in this process when 1) and merge the results."""
    plans = plan.split(workers)
    total_s = None if plan.duration_s is None else plan.duration_s + plan.warmup_s
    progress = _Progress(stream, total_s, plan.requests) if stream is not None else None
    result = Result()
    if len(plans) == 1:
        result.add(_event_loop_run(_in_process(plans[0], progress)))
        return result
    ctx = multiprocessing.get_context("spawn")
    shared = ctx.Array("q", 4 * len(plans), lock=False)
    barrier = ctx.Barrier(len(plans) + 1)
    results = ctx.Queue()
    procs = [
        ctx.Process(
            target=_worker_process,
            args=(p, i, shared, barrier, results),
            name=f"devrouter-bench-{i}",
            daemon=True,
        )
        for i, p in enumerate(plans)
    ]
    for proc in procs:
        proc.start()
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # workers stop on it and report
    try:
        try:
            barrier.wait(timeout=STARTUP_TIMEOUT_S)
        except threading.BrokenBarrierError:
            raise RuntimeError("the worker processes did not start") from None
        parts: dict[int, dict[str, Any]] = {}
        while len(parts) < len(procs):
            with contextlib.suppress(queue.Empty):
                index, part = results.get(timeout=0.05)
                parts[index] = part
            if progress is not None and progress.due():
                rows = [_SharedRow(shared, i) for i in range(len(procs))]
                progress.show(sum(r[0] for r in rows), sum(r[1] for r in rows))
            if len(parts) < len(procs) and not any(p.is_alive() for p in procs):
                with contextlib.suppress(queue.Empty):
                    while True:
                        index, part = results.get(timeout=0.5)
                        parts[index] = part
                break
    finally:
        signal.signal(signal.SIGINT, old)
        if progress is not None:
            progress.end()
        for proc in procs:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
    failures = [p["error"] for p in parts.values() if "error" in p]
    if failures or len(parts) < len(procs):
        raise RuntimeError(failures[0] if failures else "a worker process died")
    for part in parts.values():
        result.add(part)
    return result


async def _in_process(plan: Plan, progress: _Progress | None) -> dict[str, Any]:
    row = [0, 0, 0, 0]
    if progress is None:
        return await run_worker(plan, row)
    loop = asyncio.get_running_loop()
    handles: list[asyncio.TimerHandle] = []

    def show() -> None:
        progress.show(row[0], row[1])
        handles[:] = [loop.call_later(progress.every, show)]

    handles.append(loop.call_later(progress.every, show))
    try:
        return await run_worker(plan, row)
    finally:
        for h in handles:
            h.cancel()
        progress.end()


# --- reports ------------------------------------------------------------------------------

_COLUMNS = ("p50", "p75", "p90", "p99", "p999", "max", "mean", "stdev")
_TITLES = ("p50", "p75", "p90", "p99", "p99.9", "max", "mean", "stdev")


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.2f} {unit}"
        n /= 1000
    return f"{n:.2f} GB"


def format_report(result: Result) -> str:
    d = result.duration_s
    lines = [
        f"  requests   {result.requests:,} in {d:.2f}s, {result.requests_per_second:,.1f} req/s, "
        f"{_fmt_bytes(result.bytes / d if d else 0)}/s",
        "  status     "
        + (", ".join(f"{k}: {v:,}" for k, v in sorted(result.status.items())) or "none"),
        "  errors     "
        + (", ".join(f"{k}: {v:,}" for k, v in result.errors.items() if v) or "none"),
    ]
    s = result.histogram.summary()
    lines.append("  latency ms " + "".join(f"{t:>9}" for t in _TITLES))
    lines.append("           " + " " + "".join(f"{s[c]:>9.3f}" for c in _COLUMNS))
    return "\n".join(lines)


def _describe(plan: Plan, workers: int, target: Target, router: Located | None = None) -> str:
    mode = f"constant rate {plan.rate:,.0f}/s" if plan.rate else "closed loop"
    amount = f"{plan.requests:,} requests" if plan.duration_s is None else f"{plan.duration_s:g}s"
    warm = f" after {plan.warmup_s:g}s warmup" if plan.warmup_s else ""
    found = f"\n  router: {router.describe()}" if router is not None else ""
    return (
        f"bench {target.url} (connecting to {target.address})\n"
        f"  {mode}, {plan.connections} connection(s), {workers} worker(s), {amount}{warm}"
        f"{'' if plan.keepalive else ', no keep-alive'}{found}"
    )


# --- when nothing answers -------------------------------------------------------------------


def silence(result: Result) -> str | None:
    """Why no response at all arrived, or None when one did (or nothing was tried)."""
    if result.answered:
        return None
    errors = {k: v for k, v in result.errors.items() if v}
    if not errors:
        return None
    if set(errors) == {"refused"}:
        return "every connection was refused"
    if set(errors) == {"timeout"}:
        return "no request got a response within --timeout"
    return "no response arrived (" + ", ".join(f"{k}: {v:,}" for k, v in errors.items()) + ")"


def router_silence(router: Located, reason: str) -> str:
    """The one line for a router that does not answer."""
    return (
        f"nothing answers at {router.describe()}: {reason}. Is the router running? Start it "
        "with `devrouter serve` (or `devrouter run`), or pass --router-port PORT"
    )


def silence_line(
    result: Result, target: Target, router: Located | None, what: str = ""
) -> str | None:
    """One line for a run in which nothing answered (through `router`, when it went through
    one), or None when something did."""
    reason = silence(result)
    if reason is None:
        return None
    if router is not None:
        return router_silence(router, reason)
    named = f" ({what})" if what else ""
    return (
        f"nothing answers at {target.address}{named}: {reason}. Is the service running and "
        f"listening on port {target.port}?"
    )


# --- --compare-direct ---------------------------------------------------------------------


def direct_target(target: Target, config_path: str | None, router: Located | None = None) -> Target:
    """The route's backend for `target`: from the running router's live route table (config,
    `run`, `alias` and stack routes), else from the config file (a router that requires a
    secret does not show its table)."""
    from .core.routes import RouteTable, select_upstream

    if target.route is None:
        raise UsageError("--compare-direct needs a route: give a NAME or a NAME.localhost URL")
    if router is not None and router.routes is not None:
        route = RouteTable.build(r.route() for r in router.routes).lookup(target.route)
        if route is None:
            raise StartupError(
                f"the router at {router.describe()} has no route for {target.route}.localhost; "
                "`devrouter ls` lists its routes"
            )
    else:
        route = _config_route(target.route, config_path)
    upstream = select_upstream(route, target.path)
    host = upstream.hosts[0]
    for candidate in upstream.hosts:  # the first address that accepts, as the router does
        family = socket.AF_INET6 if ":" in candidate else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            if s.connect_ex((candidate, upstream.port)) == 0:
                host = candidate
                break
    if _loopback_address(host) is None:  # config validation guarantees it; check anyway
        raise StartupError(f"route {route.name} points off this machine ({host})")
    return replace(target, connect_host=host, port=upstream.port)


def _config_route(name: str, config_path: str | None) -> Route:
    """The route for `name` in the router's config file."""
    from .core.routes import RouteTable
    from .reload import find_config, read_config

    path = find_config(config_path, os.environ, Path.cwd())
    if path is None:
        raise StartupError(
            "--compare-direct needs the router's config to find the backend; none found "
            "(pass --config, or set $DEVROUTER_CONFIG)"
        )
    try:
        config = read_config(path, own_ports=())
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    route = RouteTable.build(config.routes).lookup(name)
    if route is None:
        raise StartupError(f"{path} has no route for {name}.localhost")
    return route


def compare(router: Result, direct: Result) -> tuple[dict[str, float], float]:
    """Added latency per statistic (router minus direct, ms) and the throughput ratio."""
    r, d = router.histogram.summary(), direct.histogram.summary()
    added = {k: round(r[k] - d[k], 3) for k in _COLUMNS}
    ratio = router.requests_per_second / direct.requests_per_second if direct.requests else 0.0
    return added, round(ratio, 4)


def format_compare(router: Result, direct: Result, rounds: int) -> str:
    added, ratio = compare(router, direct)
    r, d = router.histogram.summary(), direct.histogram.summary()
    head = "".join(f"{t:>9}" for t in _TITLES)
    lines = [
        f"  {rounds} round(s) each way, alternating",
        f"  {'latency ms':<12}{head}",
        f"  {'direct':<12}" + "".join(f"{d[c]:>9.3f}" for c in _COLUMNS),
        f"  {'router':<12}" + "".join(f"{r[c]:>9.3f}" for c in _COLUMNS),
        f"  {'added':<12}" + "".join(f"{added[c]:>+9.3f}" for c in _COLUMNS),
        f"  throughput  direct {direct.requests_per_second:,.1f} req/s, router "
        f"{router.requests_per_second:,.1f} req/s, ratio {ratio:.3f}",
    ]
    for name, res in (("direct", direct), ("router", router)):
        errs = ", ".join(f"{k}: {v:,}" for k, v in res.errors.items() if v)
        if errs:
            lines.append(f"  {name} errors: {errs}")
    return "\n".join(lines)


# --- command line -------------------------------------------------------------------------


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the `bench` subcommand to the CLI's subparsers (`parents`: the CLI's common
    options, such as --log-level and --version)."""
    p = sub.add_parser(
        "bench",
        parents=list(parents),
        help="load-test a local service and report honest latency percentiles",
        description="Drive HTTP load at a local service and report throughput, status counts "
        "and latency percentiles. TARGET is a URL on this machine "
        "(http://api.localhost:7355/items, http://127.0.0.1:4001/x) or a route NAME and an "
        "optional PATH, which goes through the router. Only loopback addresses and "
        ".localhost names are accepted.",
        epilog="Closed loop (the default) sends each connection's next request when the last "
        "one completes. --rate sends at a constant rate and measures each request's latency "
        "from when it was due, so stalls are not hidden (coordinated omission).",
    )
    p.add_argument("target", metavar="TARGET", help="URL, or a route NAME")
    p.add_argument("path", metavar="PATH", nargs="?", help="path for a route NAME (default /)")
    p.add_argument(
        "-c",
        "--connections",
        type=_positive_int,
        default=DEFAULT_CONNECTIONS,
        help=f"concurrent connections (default {DEFAULT_CONNECTIONS})",
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "-d",
        "--duration",
        type=_duration,
        metavar="TIME",
        help=f"how long to run: 10s, 1m, 500ms (default {DEFAULT_DURATION_S:g}s)",
    )
    amount.add_argument(
        "-n", "--requests", type=_positive_int, metavar="N", help="stop after N requests"
    )
    p.add_argument(
        "--rate",
        type=_rate,
        metavar="N",
        help="constant rate in requests per second (1000 or 1000/s); latency counts from "
        "each request's due time",
    )
    p.add_argument("-m", "--method", default="GET", help="HTTP method (default GET)")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header; repeatable",
    )
    p.add_argument("-b", "--body", metavar="TEXT|@FILE", help="request body, or @file to read")
    p.add_argument(
        "--timeout",
        type=_duration,
        default=DEFAULT_TIMEOUT_S,
        metavar="TIME",
        help=f"per-request timeout (default {DEFAULT_TIMEOUT_S:g}s)",
    )
    p.add_argument("--no-keepalive", action="store_true", help="a new connection for every request")
    p.add_argument(
        "--warmup",
        type=_duration,
        default=0.0,
        metavar="TIME",
        help="run this long before measuring (default 0)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (see docs/bench.md)")
    p.add_argument(
        "--histogram",
        metavar="FILE",
        help="write the latency distribution in HdrHistogram percentile format (ms)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, each with its own event loop (default: the number of cores)",
    )
    p.add_argument(
        "--router-port",
        type=_port,
        metavar="PORT",
        help="the router's port for a route NAME (default: the running router's, found "
        f"through its control socket, else the config's listen port, else {DEFAULT_PORT})",
    )
    p.add_argument(
        "--compare-direct",
        action="store_true",
        help="run the load alternately at the route's backend and through the router, and "
        "report the router's added latency and throughput ratio",
    )
    p.add_argument(
        "--rounds",
        type=_positive_int,
        default=DEFAULT_ROUNDS,
        metavar="N",
        help=f"rounds each way for --compare-direct (default {DEFAULT_ROUNDS})",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="router config, for its listen port and, when the router does not show its "
        "routes, --compare-direct's backend",
    )


def _arg_type(fn: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def _valid_port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return value


_positive_int = _arg_type(_positive, "count")
_port = _arg_type(_valid_port, "port")
_duration = _arg_type(parse_duration, "duration")
_rate = _arg_type(parse_rate, "rate")
_header = _arg_type(parse_header, "header")


def plan_from_args(args: argparse.Namespace, target: Target) -> Plan:
    method = str(args.method).upper()
    try:
        body = parse_body(args.body) if args.body is not None else b""
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    request = build_request(target, method, args.header, body, not args.no_keepalive)
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0")
    return Plan(
        host=target.connect_host,
        port=target.port,
        request=request,
        connections=args.connections,
        duration_s=duration,
        requests=args.requests,
        rate=args.rate,
        timeout_s=args.timeout,
        warmup_s=args.warmup,
        keepalive=not args.no_keepalive,
        head=method == "HEAD",
    )


def run(args: argparse.Namespace) -> int:
    """The `bench` command. Prints the report on stdout, progress and errors on stderr."""
    try:
        return _run(args)
    except UsageError as exc:
        print(f"devrouter: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StartupError as exc:
        print(f"devrouter: {exc}", file=sys.stderr)
        return EXIT_STARTUP
    except RuntimeError as exc:
        print(f"devrouter: bench failed: {exc}", file=sys.stderr)
        return EXIT_FAILED


def find_router(args: argparse.Namespace, target: Target) -> Located | None:
    """The router a route target goes through (devrouter.locate); None for a target that is
    not a route. A URL's port is the router's; `--router-port` is for a NAME."""
    from .locate import locate

    if is_route_name(args.target):
        return locate(port=args.router_port, flag="--router-port", config=args.config)
    if target.route is None:
        return None
    # Only --compare-direct needs the route table; otherwise the URL is asked nothing extra.
    return locate(port=target.port, flag="the URL", config=args.config, probe=args.compare_direct)


def _run(args: argparse.Namespace) -> int:
    target = parse_target(args.target, args.path)  # refuses a target before any I/O
    router = find_router(args, target)
    if router is not None:
        if is_route_name(args.target):
            target = parse_target(args.target, args.path, router.port, router.host)
        if router.answered is False:
            _say(router_silence(router, "connections are refused"))
            return EXIT_FAILED
        if router.answered and not router.is_devrouter:
            answer = f"HTTP {router.http_status}" if router.http_status else "not HTTP"
            _say(
                f"warning: what answers at {router.address} is not devrouter ({answer} for "
                "/api/status); pass --router-port PORT if the router runs elsewhere"
            )
    plan = plan_from_args(args, target)
    workers = min(args.workers, plan.connections)
    if args.compare_direct:
        return _run_compare(args, plan, workers, target, router)
    if not args.json:
        print(_describe(plan, workers, target, router), flush=True)
    result = execute(plan, workers, sys.stderr)
    silent = silence_line(result, target, router)
    if args.json:
        out = {
            "target": target.url,
            **({"router_found": router.to_json()} if router else {}),
            "mode": "constant-rate" if plan.rate else "closed-loop",
            "connections": plan.connections,
            "workers": workers,
            **({"rate": plan.rate} if plan.rate else {}),
            **result.to_json(),
            **({"error": silent} if silent else {}),
        }
        print(json.dumps(out))
    elif silent is None:
        print(format_report(result))
    if silent is not None:
        _say(silent)
        return EXIT_FAILED
    if args.histogram:
        _write_histogram(args.histogram, result)
    return EXIT_OK if result.requests else EXIT_FAILED


def _run_compare(
    args: argparse.Namespace, plan: Plan, workers: int, target: Target, router: Located | None
) -> int:
    direct = direct_target(target, args.config, router)
    if not args.json:
        print(_describe(plan, workers, target, router))
        print(f"  direct: {direct.url} at {direct.address}", flush=True)
    routed_total, direct_total = Result(), Result()
    for i in range(args.rounds):
        order = ((target, routed_total, router), (direct, direct_total, None))
        for t, total, via in order if i % 2 else order[::-1]:
            result = execute(replace(plan, host=t.connect_host, port=t.port), workers, sys.stderr)
            silent = silence_line(result, t, via, "the route's backend" if via is None else "")
            if silent is not None:  # one side is down: a comparison would be meaningless
                _say(silent)
                return EXIT_FAILED
            total.merge(result)
    added, ratio = compare(routed_total, direct_total)
    if args.json:
        out = {
            "rounds": args.rounds,
            **({"router_found": router.to_json()} if router else {}),
            "router": {"target": target.url, **routed_total.to_json()},
            "direct": {
                "target": f"http://{direct.address}{direct.path}",
                **direct_total.to_json(),
            },
            "added_latency_ms": added,
            "throughput_ratio": ratio,
        }
        print(json.dumps(out))
    else:
        print(format_compare(routed_total, direct_total, args.rounds))
    if args.histogram:
        _write_histogram(args.histogram, routed_total)
    return EXIT_OK if routed_total.requests else EXIT_FAILED


def _say(text: str) -> None:
    print(f"devrouter: {text}", file=sys.stderr, flush=True)


def _write_histogram(path: str, result: Result) -> None:
    try:
        Path(path).write_text(result.histogram.percentile_distribution())
    except OSError as exc:
        raise RuntimeError(f"cannot write {path}: {exc.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devrouter")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`devrouter bench ARGS`, callable without the rest of the CLI."""
    args = build_parser().parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    from devrouter.bench import main as _main  # the importable module, for worker processes

    sys.exit(_main())
