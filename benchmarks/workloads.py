"""What is measured: the workloads and the three run profiles, as plain data.

Each workload names the backend it needs ("fast": nginx or the aiohttp fallback serving
static bytes, so the proxy is the bottleneck; "app": the aiohttp application), the request,
how many connections, and how long one measurement lasts in each profile. `docs/benchmarks.md`
explains why each one is there.

The kinds: "http" (wrk, or `devrouter bench` without it), "h2load" (nghttp2's h2load: HTTP/1.1
or HTTP/2, plain or over TLS, with the right SNI name), "connect" (the built-in new-connection
client: connect, TLS handshake, one request, close, one at a time), "ws" and "sse".
An "https" workload is measured on the tools that answer TLS (not on direct access: the
backends are plain).
"""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Workload:
    key: str
    title: str
    kind: str  # "http", "h2load", "connect", "ws" or "sse"
    backend: str  # "fast" or "app"
    path: str
    connections: int
    #: Seconds per measurement in the full, quick and smoke profiles.
    seconds: tuple[float, float, float]
    method: str = "GET"
    upload_bytes: tuple[int, int, int] = (0, 0, 0)  # full, quick, smoke
    #: Each request's header fields differ from the one before it on the connection (two
    #: alternating values of one field): no proxy can reuse what it decided for the last
    #: head. Needs wrk (a Lua script makes the requests).
    vary: bool = False
    scheme: str = "http"  # "https": over TLS, on the tools that answer it
    protocol: str = "h1"  # "h2": HTTP/2 (h2load)
    #: Requests in flight on one connection at once (HTTP/2 streams).
    streams: int = 1
    #: Extra request header fields ("Name: value"), wrk only.
    headers: tuple[str, ...] = ()
    #: Also measured on the baseline router (`--baseline REV`): the workloads where an
    #: earlier revision tells something (accepting connections, keep-alive throughput).
    baseline: bool = False


def needs(w: Workload) -> str | None:
    """The load generator a workload cannot do without, or None (the built-in clients)."""
    if w.kind == "h2load":
        return "h2load"
    if w.kind == "http" and (w.vary or w.headers):
        return "wrk"  # `devrouter bench` sends one fixed request
    return None


WORKLOADS: tuple[Workload, ...] = (
    Workload(
        "small_c1",
        "small responses, 1 connection",
        "http",
        "fast",
        "/small",
        1,
        (3.0, 0.75, 0.2),
        baseline=True,
    ),
    Workload(
        "small_c1_varied",
        "small responses, 1 connection, fields varied per request",
        "http",
        "fast",
        "/small",
        1,
        (3.0, 0.75, 0.2),
        vary=True,
    ),
    Workload(
        "small_c50",
        "small responses, 50 connections",
        "http",
        "fast",
        "/small",
        50,
        (5.0, 1.0, 0.25),
        baseline=True,
    ),
    Workload(
        "large_1mib", "1 MiB responses, 4 connections", "http", "fast", "/1m", 4, (3.0, 0.75, 0.2)
    ),
    Workload(
        "upload_64mib",
        "64 MiB uploads, 1 connection",
        "http",
        "fast",
        "/upload",
        1,
        (4.0, 1.0, 0.3),
        method="POST",
        upload_bytes=(64 * MIB, 64 * MIB, 4 * MIB),
    ),
    Workload(
        "slow_backend",
        "slow backend (~1 ms of work), 10 connections",
        "http",
        "app",
        "/slow",
        10,
        (3.0, 0.75, 0.2),
    ),
    Workload(
        "ws_echo",
        "WebSocket echo round trips, 1 connection",
        "ws",
        "app",
        "/ws",
        1,
        (2.0, 0.5, 0.2),
    ),
    Workload(
        "sse_first_event",
        "time to first server-sent event, new connection each",
        "sse",
        "app",
        "/sse",
        1,
        (2.0, 0.5, 0.2),
    ),
    Workload(
        "plain_h1_c50",
        "plain HTTP/1.1 small responses, 50 connections (h2load --h1)",
        "h2load",
        "fast",
        "/small",
        50,
        (5.0, 1.0, 0.25),
    ),
    Workload(
        "tls_h1_c50",
        "HTTPS, HTTP/1.1 small responses, 50 connections (h2load --h1)",
        "h2load",
        "fast",
        "/small",
        50,
        (5.0, 1.0, 0.25),
        scheme="https",
    ),
    Workload(
        "tls_h2_c50x10",
        "HTTP/2 small responses, 50 connections x 10 streams (h2load)",
        "h2load",
        "fast",
        "/small",
        50,
        (5.0, 1.0, 0.25),
        scheme="https",
        protocol="h2",
        streams=10,
    ),
    Workload(
        "new_conn_plain",
        "new plain connection: connect, GET, whole response, close; one at a time",
        "connect",
        "fast",
        "/small",
        1,
        (2.0, 0.5, 0.2),
        baseline=True,
    ),
    Workload(
        "new_conn_tls",
        "new TLS connection: connect, handshake, GET, whole response, close; one at a time",
        "connect",
        "fast",
        "/small",
        1,
        (2.0, 0.5, 0.2),
        scheme="https",
    ),
    Workload(
        "conn_close_c10",
        "a new plain connection per request (Connection: close), 10 connections",
        "http",
        "fast",
        "/small",
        10,
        (3.0, 0.75, 0.2),
        headers=("Connection: close",),
        baseline=True,
    ),
)


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    index: int  # into Workload.seconds and Workload.upload_bytes
    rounds: int
    #: Seconds of load on each tool before the first round (connections, caches, JIT).
    warmup_s: float
    #: Peers are measured unless the profile leaves them out (smoke: direct and devrouter).
    peers: bool


PROFILES = {
    "full": Profile("full", 0, 3, 1.0, True),
    "quick": Profile("quick", 1, 2, 0.3, True),
    "smoke": Profile("smoke", 2, 1, 0.0, False),
}


def seconds(w: Workload, p: Profile) -> float:
    return w.seconds[p.index]


def upload_bytes(w: Workload, p: Profile) -> int:
    return w.upload_bytes[p.index]
