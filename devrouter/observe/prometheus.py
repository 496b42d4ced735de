"""The router's metrics in Prometheus text exposition format 0.0.4, for `GET /metrics`.

Naming follows the Prometheus conventions: every name starts with `devrouter_`, values are
in base units (seconds, bytes), counters end in `_total`, and per-route series carry a
`route` label (the route's name, `*.shop` for a wildcard). Every family has HELP and TYPE
lines; label values are escaped as the format requires (backslash, double quote, newline).

Histograms are read from the HDR histograms in `devrouter.observe.metrics` when scraped, never per
request: each `le` bucket counts the values whose HDR sub-bucket starts at or below the
boundary (`BUCKETS_S`). Below 2.048 ms a sub-bucket is one microsecond wide, above it at
most 1/1024 of its value, so a bucket can only over-count values within 0.1 % above its
boundary. `_sum` is exact to the microsecond and `_count` is the `+Inf` bucket.
WebSocket sessions are counted in `devrouter_requests_total` but not in the latency
histograms, and an exchange that ended before response headers has no time-to-headers
value.

Pure: objects in, text out; no aiohttp and no I/O.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable

from .. import __version__
from ..core.state import State
from .health import Health
from .histogram import Histogram
from .metrics import ERROR_KINDS, Metrics, RouteStats

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Histogram bucket boundaries, in seconds (`le` values).
BUCKETS_S = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
_BUCKETS_US = tuple(round(b * 1e6) for b in BUCKETS_S)
#: The figures of a route before its first request (shared, never written).
_NO_TRAFFIC = RouteStats()
#: Status classes every route reports, at zero before its first request.
STATUS_CLASSES = ("1xx", "2xx", "3xx", "4xx", "5xx")


def escape_label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    if isinstance(value, int) or (math.isfinite(value) and value == int(value)):
        return str(int(value))
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    inner = ",".join(f'{k}="{escape_label(v)}"' for k, v in pairs)
    return "{" + inner + "}" if inner else ""


class _Writer:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: Iterable[tuple[str, str]], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {format_value(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def cumulative_buckets(h: Histogram) -> list[int]:
    """Counts at or below each boundary of BUCKETS_S, cumulative; the `+Inf` count is last."""
    bounds = _BUCKETS_US
    counts = [0] * (len(bounds) + 1)
    left = h.count()
    i = 0
    for low, _high, n in h.buckets() if left else ():
        while i < len(bounds) and low > bounds[i]:  # sub-buckets come in ascending order
            i += 1
        counts[i] += n
        left -= n
        if left <= 0:  # the rest of the array is empty: stop scanning it
            break
    total = 0
    for i, n in enumerate(counts):
        total += n
        counts[i] = total
    return counts


BucketFn = Callable[[Histogram], list[int]]


def _histogram(
    w: _Writer, name: str, per_route: list[tuple[str, Histogram]], buckets: BucketFn
) -> None:
    for route, h in per_route:
        cum = buckets(h)
        for le, n in zip((*(repr(b) for b in BUCKETS_S), "+Inf"), cum, strict=True):
            w.sample(f"{name}_bucket", (("route", route), ("le", le)), n)
        w.sample(f"{name}_sum", (("route", route),), h.mean() * h.count() / 1e6)
        w.sample(f"{name}_count", (("route", route),), h.count())


def render(
    state: State,
    metrics: Metrics,
    health: Health,
    started: float,
    now: float | None = None,
    buckets: BucketFn = cumulative_buckets,
) -> str:
    """The whole exposition. Routes of the live table are always present (at zero before any
    request); a route removed by a reload keeps its counters until the router restarts.
    `buckets` may be a caching `cumulative_buckets` (a few ms per busy histogram)."""
    now = time.time() if now is None else now
    snapshot = state.snapshot
    table = snapshot.table.routes
    names = [r.name for r in table]
    names += sorted(n for n in metrics.routes if n not in set(names))
    stats = [(n, metrics.routes.get(n, _NO_TRAFFIC)) for n in names]
    w = _Writer()

    w.family("devrouter_info", "gauge", "devrouter's version; always 1.")
    w.sample("devrouter_info", (("version", __version__),), 1)
    w.family("devrouter_start_time_seconds", "gauge", "When the router started, in Unix time.")
    w.sample("devrouter_start_time_seconds", (), round(started, 3))
    w.family("devrouter_uptime_seconds", "gauge", "Seconds since the router started.")
    w.sample("devrouter_uptime_seconds", (), round(now - started, 3))

    w.family("devrouter_routes", "gauge", "Routes in the live table.")
    w.sample("devrouter_routes", (), len(table))
    w.family(
        "devrouter_config_generation",
        "gauge",
        "Generation of the live route table; grows with each reload or route registration.",
    )
    w.sample("devrouter_config_generation", (), snapshot.generation)
    w.family(
        "devrouter_config_loaded_timestamp_seconds",
        "gauge",
        "When the config in use was loaded, in Unix time.",
    )
    w.sample("devrouter_config_loaded_timestamp_seconds", (), round(snapshot.loaded_at, 3))
    w.family(
        "devrouter_config_reload_error",
        "gauge",
        "1 when the last reload of the config file failed (the last good config is in use).",
    )
    w.sample("devrouter_config_reload_error", (), 1 if state.last_error else 0)
    w.family(
        "devrouter_route_conflicts",
        "gauge",
        "Routes registered by running processes that clash with a config file route.",
    )
    w.sample("devrouter_route_conflicts", (), len(snapshot.conflicts))

    w.family(
        "devrouter_route_up",
        "gauge",
        "1 when the health probe found the route's backend listening, 0 when it did not; "
        "absent until the first probe.",
    )
    for route in table:
        probe = health.status(route.upstream)
        if probe is not None:
            w.sample("devrouter_route_up", (("route", route.name),), 1 if probe.up else 0)

    w.family(
        "devrouter_requests_total",
        "counter",
        "Finished exchanges by status class; code_class is none when no response was sent.",
    )
    for name, s in stats:
        classes = list(STATUS_CLASSES) + sorted(k for k in s.requests if k not in STATUS_CLASSES)
        for cls in classes:
            labels = (("route", name), ("code_class", cls))
            w.sample("devrouter_requests_total", labels, s.requests.get(cls, 0))

    w.family(
        "devrouter_upstream_errors_total",
        "counter",
        "Exchanges that failed at the backend, by kind (refused, timeout, reset, invalid).",
    )
    for name, s in stats:
        kinds = list(ERROR_KINDS) + sorted(k for k in s.errors if k not in ERROR_KINDS)
        for kind in kinds:
            w.sample(
                "devrouter_upstream_errors_total",
                (("route", name), ("kind", kind)),
                s.errors.get(kind, 0),
            )

    w.family(
        "devrouter_request_bytes_total", "counter", "Request body bytes received from clients."
    )
    for name, s in stats:
        w.sample("devrouter_request_bytes_total", (("route", name),), s.bytes_in)
    w.family("devrouter_response_bytes_total", "counter", "Response body bytes sent to clients.")
    for name, s in stats:
        w.sample("devrouter_response_bytes_total", (("route", name),), s.bytes_out)

    w.family(
        "devrouter_requests_in_flight", "gauge", "HTTP exchanges in flight (streams included)."
    )
    for name, s in stats:
        w.sample("devrouter_requests_in_flight", (("route", name),), s.in_flight)
    w.family("devrouter_open_streams", "gauge", "Server-sent event streams open.")
    for name, s in stats:
        w.sample("devrouter_open_streams", (("route", name),), s.open_streams)
    w.family("devrouter_open_websockets", "gauge", "WebSocket sessions open.")
    for name, s in stats:
        w.sample("devrouter_open_websockets", (("route", name),), s.open_websockets)

    w.family(
        "devrouter_request_duration_seconds",
        "histogram",
        "Time from the request to the end of the response body, of requests (streams "
        "excluded: event streams, WebSockets, exchanges longer than the route's timeout).",
    )
    _histogram(w, "devrouter_request_duration_seconds", [(n, s.total) for n, s in stats], buckets)
    w.family(
        "devrouter_time_to_headers_seconds",
        "histogram",
        "Time from the request to its response headers, of requests (streams excluded).",
    )
    _histogram(w, "devrouter_time_to_headers_seconds", [(n, s.ttfb) for n, s in stats], buckets)
    w.family(
        "devrouter_stream_duration_seconds",
        "histogram",
        "How long each finished stream lasted (event streams, WebSocket sessions, exchanges "
        "longer than the route's timeout).",
    )
    _histogram(w, "devrouter_stream_duration_seconds", [(n, s.streams) for n, s in stats], buckets)
    return w.text()


__all__ = ["BUCKETS_S", "CONTENT_TYPE", "cumulative_buckets", "render"]
