"""What the router measures: per-route counters and latency histograms, and a ring buffer of
the most recent requests. Pure bookkeeping, no aiohttp and no I/O.

Theory of operation: the aiohttp engine calls `Metrics.finish` once per exchange with a
filled-in `RequestRecord`. The fast path calls `Metrics.finish_later` with a plain tuple of
the same fields: the route's in-flight count drops at once (the per-route limit reads it),
and the rest is counted in batches, every FLUSH_INTERVAL_S and whenever the metrics are read.

Both engines time an exchange with `time.perf_counter()` (nanosecond resolution, 45 ns a
call here, the same as `loop.time()`), from the moment its request head was read to the
moment its last byte was handed to the client's transport. Under uvloop `loop.time()`
counts whole milliseconds, which made every fast exchange 0.0 ms; it is still what the
engines' deadlines use, where a millisecond does not matter.

Request latency is about requests. A *stream* is timed apart (`RouteStats.streams`): a
server-sent event stream (a `text/event-stream` response), a WebSocket session, and any
exchange that lasted longer than its route's `timeout` (a long poll or a download that kept
its body flowing after the head came: the timeout bounds the wait for the head, so nothing
else can last that long). A stream's length says how long a client stayed, not how fast the
service answered, and one 39 s stream would otherwise be a route's p99.
Counting a batch in one loop costs a third of counting each exchange as it ends, when the
code runs with caches another process has just used; at one connection that difference is
on the latency of the next request. Latencies are kept in fixed-memory HDR-style
histograms (`devrouter.observe.histogram`, 0.1 % relative error), so percentiles are exact enough at
any rate without storing samples. A per-second series per route (count, summed and maximum
latency over the last two minutes) feeds request rates and sparklines.

Records never hold bodies. They keep the heads as relayed, and the values of Authorization,
Cookie, Set-Cookie, Proxy-Authorization and X-Api-Key headers, and of query parameters named
like credentials (`?access_token=`, `?api_key=`, `?code=`), are replaced by `REDACTED`
whenever a record is shown (`as_json`): redacting on the way out, not on the request path,
keeps the cost off every request, and nothing leaves the process unredacted for the
dashboard. The access log, on the terminal of the user who ran the router, shows paths as
they came, as other servers' logs do.
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .histogram import Histogram

#: Requests kept for the dashboard's request list, by default.
DEFAULT_RECENT = 500
#: Seconds of per-second history kept per route (rates, sparklines).
SERIES_SECONDS = 120
REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {"authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key"}
)
#: Kinds of upstream failure counted separately.
ERROR_KINDS = ("refused", "timeout", "reset", "invalid")
#: Longest wait, in seconds, before an exchange handed to `finish_later` is counted (the
#: router flushes this often; readers flush first, so they never see a stale count).
FLUSH_INTERVAL_S = 0.1
#: A batch this long is counted at once, whatever the time: it bounds the batch's memory and
#: the pause counting it makes (about 3 us an exchange: under a millisecond).
MAX_BATCH = 256

#: What `finish_later` takes: RequestRecord's fields up to `event_stream`, in order, with
#: method, host and path still bytes (decoded when counted, off the request path), then the
#: route's timeout in seconds (what makes an exchange a stream; see `is_stream`). A plain
#: tuple, not a NamedTuple: the fast path makes one per exchange, and a NamedTuple of 17
#: fields costs 318 ns to make against 43 ns (timeit). `flush` unpacks it by name; the
#: fields read one by one are named below.
Finished = tuple[
    float, bytes, bytes, bytes, str, int, int, float | None, float, int, int, str | None,
    bool, bytes, bytes, bool, float, str,
]  # fmt: skip
#: Positions in a Finished row of the fields `finish_later` reads.
ROW_ROUTE: Final = 4
ROW_WEBSOCKET: Final = 12
ROW_EVENT_STREAM: Final = 15

#: How a client spoke to the router, as the request inspector shows it.
HTTP1: Final = "HTTP/1.1"
HTTP1_TLS: Final = "HTTP/1.1 TLS"
HTTP2: Final = "HTTP/2"


def protocol_of(get_extra_info: Callable[[str], object]) -> str:
    """The protocol of a client connection from its transport's extra info: an HTTP/2
    stream's lane says "devrouter.protocol" (devrouter.http2.bridge), a TLS one has an
    "sslcontext"."""
    if get_extra_info("devrouter.protocol") == "h2":
        return HTTP2
    return HTTP1 if get_extra_info("sslcontext") is None else HTTP1_TLS


_EVENT_STREAM = re.compile(rb"(?im)^content-type[ \t]*:[ \t]*text/event-stream")


def is_event_stream(response_head: bytes) -> bool:
    """Whether a response head (as relayed) opens a server-sent event stream."""
    return _EVENT_STREAM.search(response_head) is not None


def is_stream(websocket: bool, event_stream: bool, duration_s: float, timeout_s: float) -> bool:
    """Whether an exchange is timed as a stream rather than as a request (module docstring)."""
    return websocket or event_stream or duration_s > timeout_s


_SECRET_LINE = re.compile(
    rb"(?im)^(" + b"|".join(re.escape(h.encode()) for h in sorted(SECRET_HEADERS)) + rb")"
    rb"[ \t]*:[^\r\n]*"
)


def redact_head(head: bytes) -> bytes:
    """A message head with the values of secret headers replaced; cheap when there are none."""
    lower = head.lower()  # one C pass; most heads hold no secret and are returned as they are
    if b"cookie" not in lower and b"authoriz" not in lower and b"x-api-key" not in lower:
        return head
    return _SECRET_LINE.sub(rb"\1: " + REDACTED.encode(), head)


# Query parameters whose values are shown as REDACTED: names that hold credentials by
# convention (access_token, api_key, X-Amz-Signature, code from an OAuth redirect, ...).
_SECRET_PARAM = re.compile(
    r"([?&](?:[^=&#]*?(?:token|secret|passw|key|auth|sig|session)[^=&#]*|code)=)[^&#]*",
    re.IGNORECASE,
)


def redact_query(target: str) -> str:
    """A request target with the values of credential-like query parameters replaced."""
    if "?" not in target:
        return target
    return _SECRET_PARAM.sub(lambda m: m.group(1) + REDACTED, target)


def _text(raw: bytes) -> str:
    """Header bytes as text: UTF-8 where it is (most non-ASCII values are), else latin-1."""
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def head_fields(head: bytes) -> list[list[str]]:
    """[[name, value], ...] of a message head, for JSON."""
    out: list[list[str]] = []
    for line in head.split(b"\r\n")[1:]:
        name, sep, value = line.partition(b":")
        if sep:
            out.append([_text(name), _text(value.strip())])
    return out


@dataclass(slots=True)
class RequestRecord:
    started: float  # wall clock, seconds since the epoch
    method: str
    host: str
    path: str
    route: str
    upstream_port: int = 0
    status: int = 0  # 0: no response (client gone, connection aborted)
    ttfb_s: float | None = None  # to response headers
    duration_s: float = 0.0
    bytes_in: int = 0
    bytes_out: int = 0
    error: str | None = None  # one of ERROR_KINDS
    websocket: bool = False
    event_stream: bool = False  # the response was text/event-stream
    stream: bool = False  # timed as a stream, not a request (set when counted: is_stream)
    # the heads as sent upstream and to the client; redacted when shown (see redact_head)
    request_head: bytes = b""
    response_head: bytes = b""
    protocol: str = HTTP1  # how the client spoke: HTTP1, HTTP1_TLS or HTTP2 (protocol_of)
    seq: int = 0

    def as_json(self, headers: bool = True) -> dict[str, object]:
        out: dict[str, object] = {
            "seq": self.seq,
            "started": self.started,
            "method": self.method,
            "host": self.host,
            "path": redact_query(self.path),
            "route": self.route,
            "upstream_port": self.upstream_port,
            "status": self.status,
            "ttfb_ms": None if self.ttfb_s is None else round(self.ttfb_s * 1000, 3),
            "duration_ms": round(self.duration_s * 1000, 3),
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "error": self.error,
            "websocket": self.websocket,
            "stream": self.stream,
            "protocol": self.protocol,
        }
        if headers:
            out["request_headers"] = head_fields(redact_head(self.request_head))
            out["response_headers"] = head_fields(redact_head(self.response_head))
        return out


@dataclass
class RouteStats:
    requests: dict[str, int] = field(default_factory=dict)  # "2xx": n, "none": n
    errors: dict[str, int] = field(default_factory=dict)
    bytes_in: int = 0
    bytes_out: int = 0
    in_flight: int = 0  # HTTP exchanges in flight, streams among them (not WebSockets)
    open_streams: int = 0  # server-sent event streams whose head has gone out, not yet ended
    open_websockets: int = 0
    # requests only (not streams): to the response head, and to the last byte
    ttfb: Histogram = field(default_factory=Histogram)  # microseconds
    total: Histogram = field(default_factory=Histogram)  # microseconds
    # how long each finished stream lasted (event streams, WebSockets, longer than timeout)
    streams: Histogram = field(default_factory=Histogram)  # microseconds
    # per-second series of requests (not streams): [second, count, sum of latency (us),
    # max latency (us)]
    series: deque[list[int]] = field(default_factory=lambda: deque(maxlen=SERIES_SECONDS))

    @property
    def count(self) -> int:
        return sum(self.requests.values())


class Metrics:
    def __init__(
        self, recent: int = DEFAULT_RECENT, sink: Callable[[RequestRecord], None] | None = None
    ) -> None:
        self.sink = sink  # the access log, when on
        self._routes: dict[str, RouteStats] = {}
        self._recent: deque[RequestRecord] = deque(maxlen=max(1, recent))
        self._pending: list[Finished] = []
        self.started = time.time()
        self._seq = 0

    @property
    def routes(self) -> dict[str, RouteStats]:
        self.flush()
        return self._routes

    @property
    def recent(self) -> deque[RequestRecord]:
        self.flush()
        return self._recent

    def route(self, name: str) -> RouteStats:
        stats = self._routes.get(name)
        if stats is None:
            stats = self._routes[name] = RouteStats()
        return stats

    def opened(self, name: str, websocket: bool = False) -> None:
        stats = self.route(name)
        if websocket:
            stats.open_websockets += 1
        else:
            stats.in_flight += 1

    def stream_opened(self, name: str) -> None:
        """An exchange's response head opened an event stream (call after `opened`; the
        exchange's record then says `event_stream`)."""
        self.route(name).open_streams += 1

    def in_flight(self, name: str) -> int:
        """Requests, streams and WebSockets open on a route now (what its limit counts)."""
        stats = self._routes.get(name)
        return stats.in_flight + stats.open_websockets if stats is not None else 0

    def _closed(self, stats: RouteStats, websocket: bool, event_stream: bool) -> None:
        if websocket:
            stats.open_websockets -= 1
        else:
            stats.in_flight -= 1
            if event_stream:
                stats.open_streams -= 1

    def finish(self, rec: RequestRecord, timeout_s: float = float("inf")) -> None:
        """Count one finished exchange (call `opened` first); `timeout_s` is its route's."""
        self.flush()  # in the order they finished
        stats = self.route(rec.route)
        self._closed(stats, rec.websocket, rec.event_stream)
        self._tally(stats, rec.status, rec.error, rec.bytes_in, rec.bytes_out)
        duration_us = int(rec.duration_s * 1e6)
        rec.stream = is_stream(rec.websocket, rec.event_stream, rec.duration_s, timeout_s)
        if rec.stream:
            stats.streams.record(duration_us)
        else:
            stats.total.record(duration_us)
            if rec.ttfb_s is not None:
                stats.ttfb.record(int(rec.ttfb_s * 1e6))
            self._series(stats, int(rec.started + rec.duration_s), duration_us)
        self._remember(rec)

    def finish_later(self, row: Finished) -> None:
        """Take one finished exchange (call `opened` first): it leaves the in-flight count
        now and is counted with the next batch."""
        self._closed(self.route(row[ROW_ROUTE]), row[ROW_WEBSOCKET], row[ROW_EVENT_STREAM])
        pending = self._pending
        pending.append(row)
        if len(pending) >= MAX_BATCH:
            self.flush()

    def flush(self) -> None:
        """Count the exchanges handed to `finish_later` since the last flush. Latencies go
        into the histograms a route at a time; records are made only for what the ring
        keeps (or the access log shows), the rest are counted and numbered."""
        pending = self._pending
        if not pending:
            return
        self._pending = []
        ring = self._recent.maxlen or 1
        first_kept = 0 if self.sink is not None else len(pending) - ring
        latencies: dict[str, tuple[list[int], list[int]]] = {}  # route: (totals, ttfbs)
        for i, row in enumerate(pending):
            (started, method, host, path, name, port, status, ttfb_s, duration_s, bytes_in,
             bytes_out, error, websocket, request_head, response_head, event_stream,
             timeout_s, protocol) = row  # fmt: skip
            stats = self.route(name)
            self._tally(stats, status, error, bytes_in, bytes_out)
            duration_us = int(duration_s * 1e6)
            stream = is_stream(websocket, event_stream, duration_s, timeout_s)
            if stream:
                stats.streams.record(duration_us)
            else:
                lists = latencies.get(name)
                if lists is None:
                    lists = latencies[name] = ([], [])
                lists[0].append(duration_us)
                if ttfb_s is not None:
                    lists[1].append(int(ttfb_s * 1e6))
                self._series(stats, int(started + duration_s), duration_us)
            if i < first_kept:
                self._seq += 1  # counted, and pushed out of the ring by this same batch
                continue
            self._remember(
                RequestRecord(
                    started,
                    method.decode("latin-1"),
                    host.decode("latin-1"),
                    path.decode("latin-1"),
                    name,
                    port,
                    status,
                    ttfb_s,
                    duration_s,
                    bytes_in,
                    bytes_out,
                    error,
                    websocket,
                    event_stream,
                    stream,
                    request_head,
                    response_head,
                    protocol,
                )
            )
        for name, (totals, ttfbs) in latencies.items():
            stats = self._routes[name]
            stats.total.record_many(totals)
            stats.ttfb.record_many(ttfbs)

    @staticmethod
    def _tally(
        stats: RouteStats, status: int, error: str | None, bytes_in: int, bytes_out: int
    ) -> None:
        key = _CLASSES[status // 100] if 0 < status < 1000 else "none"
        stats.requests[key] = stats.requests.get(key, 0) + 1
        if error is not None:
            stats.errors[error] = stats.errors.get(error, 0) + 1
        stats.bytes_in += bytes_in
        stats.bytes_out += bytes_out

    @staticmethod
    def _series(stats: RouteStats, second: int, total_us: int) -> None:
        """Add one exchange that ended in `second` to the route's per-second series."""
        series = stats.series
        if series and series[-1][0] == second:
            point = series[-1]
            point[1] += 1
            point[2] += total_us
            if total_us > point[3]:
                point[3] = total_us
        else:
            series.append([second, 1, total_us, total_us])

    def _remember(self, rec: RequestRecord) -> None:
        self._seq += 1
        rec.seq = self._seq
        self._recent.append(rec)
        if self.sink is not None:
            self.sink(rec)

    def rate(self, name: str, now: float, window_s: int = 10) -> float:
        """Requests per second over the last `window_s` whole seconds."""
        stats = self.routes.get(name)
        if stats is None:
            return 0.0
        last = int(now) - 1
        n = sum(p[1] for p in stats.series if last - window_s < p[0] <= last)
        return n / window_s

    def since(self, seq: int, route: str | None = None, limit: int = 200) -> list[RequestRecord]:
        if limit <= 0:
            return []
        out = [r for r in self.recent if r.seq > seq and (route is None or r.route == route)]
        return out[-limit:]


_CLASSES: Mapping[int, str] = {1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
_CLASSES = {**_CLASSES, **{i: f"{i}xx" for i in range(6, 10)}}
