"""devrouter.observe.prometheus and GET /metrics: the exposition parsed back with
prometheus_client's own text parser, after real traffic through a real router."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, RouterHandle, free_port, make_config

from devrouter import __version__
from devrouter.core.model import Config, Route, Upstream
from devrouter.core.state import State
from devrouter.observe.health import Health
from devrouter.observe.histogram import Histogram
from devrouter.observe.metrics import Metrics, RequestRecord
from devrouter.observe.prometheus import BUCKETS_S, CONTENT_TYPE, cumulative_buckets, render

parser = pytest.importorskip("prometheus_client.parser")

RouterFactory = Callable[..., Awaitable[RouterHandle]]
BackendFactory = Callable[..., Awaitable[int]]
Families = dict[str, Any]

#: Prometheus metric and label names (https://prometheus.io/docs/concepts/data_model/).
METRIC_NAME = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*$")


def parse(text: str) -> Families:
    return {f.name: f for f in parser.text_string_to_metric_families(text)}


def value(families: Families, name: str, **labels: str) -> float:
    """The value of the one sample called `name` (family or series name) with `labels`."""
    found = [
        s.value
        for f in families.values()
        for s in f.samples
        if s.name == name and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (name, labels, found)
    return float(found[0])


def buckets(families: Families, family: str, route: str) -> list[tuple[float, float]]:
    return [
        (float(s.labels["le"]), s.value)
        for s in families[family].samples
        if s.name == f"{family}_bucket" and s.labels["route"] == route
    ]


async def scrape(port: int) -> tuple[dict[str, str], str]:
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.get(f"http://127.0.0.1:{port}/metrics") as resp,
    ):
        assert resp.status == 200
        return dict(resp.headers), await resp.text()


def slow_app() -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        ms = int(request.query.get("ms", "0"))
        if ms:
            await asyncio.sleep(ms / 1000)
        return web.Response(status=int(request.query.get("status", "200")), body=b"x" * 100)

    app = web.Application()
    app.router.add_route("*", "/", handler)
    return app


async def test_metrics_after_traffic(router: RouterFactory, backend: BackendFactory) -> None:
    port = await backend(slow_app())
    dead = free_port()
    r = await router(make_config({"api": port, "down": dead, "idle": port}))
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:

        async def get(name: str, query: str = "", data: bytes | None = None) -> int:
            url = f"http://127.0.0.1:{r.port}/{query}"
            async with s.request(
                "POST" if data else "GET", url, data=data, headers={"Host": f"{name}.localhost"}
            ) as resp:
                await resp.read()
                return resp.status

        for _ in range(6):
            assert await get("api") == 200
        assert await get("api", "?ms=300") == 200
        assert await get("api", "?status=404") == 404
        assert await get("api", "?status=503") == 503
        assert await get("api", data=b"y" * 1000) == 200
        assert await get("down") == 502

    headers, text = await scrape(r.port)
    assert headers["Content-Type"] == CONTENT_TYPE
    fams = parse(text)

    assert value(fams, "devrouter_info", version=__version__) == 1
    assert value(fams, "devrouter_routes") == 3
    assert value(fams, "devrouter_config_reload_error") == 0
    assert value(fams, "devrouter_route_up", route="api") == 1
    assert value(fams, "devrouter_route_up", route="down") == 0

    total = "devrouter_requests_total"
    assert fams["devrouter_requests"].type == "counter"
    assert value(fams, total, route="api", code_class="2xx") == 7 + 1
    assert value(fams, total, route="api", code_class="4xx") == 1
    assert value(fams, total, route="api", code_class="5xx") == 1
    assert value(fams, total, route="down", code_class="5xx") == 1
    assert value(fams, total, route="idle", code_class="2xx") == 0  # present before traffic
    assert value(fams, "devrouter_upstream_errors_total", route="down", kind="refused") == 1
    assert value(fams, "devrouter_upstream_errors_total", route="api", kind="refused") == 0
    assert value(fams, "devrouter_request_bytes_total", route="api") == 1000
    assert value(fams, "devrouter_response_bytes_total", route="api") == 10 * 100
    assert value(fams, "devrouter_open_streams", route="api") == 0
    assert value(fams, "devrouter_open_websockets", route="api") == 0

    for family, count in (
        ("devrouter_request_duration_seconds", 10),
        ("devrouter_time_to_headers_seconds", 10),
    ):
        assert fams[family].type == "histogram"
        bs = buckets(fams, family, "api")
        assert [le for le, _ in bs] == [*BUCKETS_S, math.inf]
        counts = [n for _, n in bs]
        assert counts == sorted(counts), "buckets must be cumulative"
        assert counts[-1] == count
        assert value(fams, f"{family}_count", route="api") == count
        the_sum = value(fams, f"{family}_sum", route="api")
        assert 0.3 < the_sum < 10
        # the 300 ms request lies above 250 ms; the other nine well below it
        assert dict(bs)[0.25] == count - 1
    # the refused exchange has a duration but no time to headers
    assert value(fams, "devrouter_request_duration_seconds_count", route="down") == 1
    assert value(fams, "devrouter_time_to_headers_seconds_count", route="down") == 0

    # figures move with more traffic
    async with aiohttp.ClientSession(timeout=timeout) as s:
        url = f"http://127.0.0.1:{r.port}/"
        async with s.get(url, headers={"Host": "idle.localhost"}) as resp:
            await resp.read()
    fams = parse((await scrape(r.port))[1])
    assert value(fams, total, route="idle", code_class="2xx") == 1
    assert value(fams, "devrouter_request_duration_seconds_count", route="idle") == 1


async def test_reload_error_and_conflicts(router: RouterFactory) -> None:
    r = await router(make_config({"api": free_port()}))
    r.state.last_error = "devrouter.yaml:2: invalid YAML"
    r.state.set_dynamic([Route("api", Upstream(free_port()), source="run", owner_pid=1)])
    fams = parse((await scrape(r.port))[1])
    assert value(fams, "devrouter_config_reload_error") == 1
    assert value(fams, "devrouter_route_conflicts") == 1
    assert value(fams, "devrouter_config_generation") == 2


def test_naming_conventions_help_and_type() -> None:
    metrics = Metrics()
    record(metrics, "api", 200, 0.002)
    state = State(Config(routes=(Route("api", Upstream(1)),)))
    text = render(state, metrics, Health(state), time.time() - 5)
    families = parse(text)
    help_lines = {line.split()[2] for line in text.splitlines() if line.startswith("# HELP ")}
    type_lines = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}
    assert help_lines == type_lines
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert METRIC_NAME.match(name) and name.startswith("devrouter_")
            assert (kind == "counter") == name.endswith("_total"), name
    for f in families.values():
        assert f.documentation, f.name
        if f.type in ("counter", "histogram"):
            for s in f.samples:
                if not s.name.endswith(("_created",)):
                    assert "route" in s.labels, s
    assert families["devrouter_uptime_seconds"].samples[0].value >= 5
    assert text.endswith("\n")


def record(metrics: Metrics, route: str, status: int, seconds: float, **kw: Any) -> None:
    metrics.opened(route)
    rec = RequestRecord(time.time(), "GET", f"{route}.localhost", "/", route, status=status)
    rec.duration_s = seconds
    rec.ttfb_s = kw.get("ttfb_s", seconds)
    metrics.finish(rec)


def test_label_values_are_escaped_and_parse_back() -> None:
    metrics = Metrics()
    odd = 'a"b\\c\nd'
    record(metrics, odd, 200, 0.001)
    state = State(Config())
    fams = parse(render(state, metrics, Health(state), time.time()))
    assert value(fams, "devrouter_requests_total", route=odd, code_class="2xx") == 1


def test_buckets_from_the_hdr_histogram() -> None:
    h = Histogram()
    assert cumulative_buckets(h) == [0] * (len(BUCKETS_S) + 1)
    for us, n in ((400, 10), (500, 5), (501, 1), (2_000, 3), (90_000, 2), (7_200_000_000, 1)):
        h.record(us, n)
    cum = dict(zip([*BUCKETS_S, math.inf], cumulative_buckets(h), strict=True))
    assert cum[0.0005] == 15  # le is inclusive: 500 µs counts at 0.5 ms
    assert cum[0.001] == 16
    assert cum[0.0025] == 19
    assert cum[0.05] == 19
    assert cum[0.1] == 21
    assert cum[60.0] == 21
    assert cum[math.inf] == 22 == h.count()  # above an hour: counted at HIGHEST, in +Inf


def test_removed_routes_keep_their_counters() -> None:
    metrics = Metrics()
    record(metrics, "gone", 200, 0.01)
    state = State(Config(routes=(Route("api", Upstream(1)),)))
    fams = parse(render(state, metrics, Health(state), time.time()))
    assert value(fams, "devrouter_requests_total", route="gone", code_class="2xx") == 1
    assert value(fams, "devrouter_requests_total", route="api", code_class="2xx") == 0
    assert value(fams, "devrouter_routes") == 1


def test_every_metric_is_documented() -> None:
    metrics = Metrics()
    record(metrics, "api", 200, 0.002)
    state = State(Config(routes=(Route("api", Upstream(1)),)))
    text = render(state, metrics, Health(state), time.time())
    docs = (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()
    names = [line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")]
    assert names
    missing = [n for n in names if f"`{n}`" not in docs]
    assert not missing, f"not in docs/dashboard.md: {missing}"


async def test_scrapes_do_not_grow_memory(router: RouterFactory) -> None:
    r = await router(make_config({"api": free_port(), "web": free_port()}))
    for _ in range(5):
        await scrape(r.port)
    cached = len(r.router.site._buckets)
    for _ in range(5):
        await scrape(r.port)
    assert len(r.router.site._buckets) == cached <= 3  # total, ttfb, streams: the empty ones
