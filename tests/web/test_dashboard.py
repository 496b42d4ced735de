"""devrouter.web.dashboard: the router's own pages, against a real router with real traffic, and
the dashboard itself in a real headless Chromium driven over the DevTools protocol.

The browser part needs Debian's /usr/bin/chromium and skips cleanly without it. It talks
to Chromium with aiohttp's websocket client (no Playwright): `Browser` below launches a
fresh profile, finds the page target from the DevToolsActivePort file and records every
console message, exception and log entry. Every wait is bounded.

`DEVROUTER_SCREENSHOT=docs/dashboard.png pytest tests/test_dashboard.py -k screenshot`
regenerates the screenshot in docs/ (the test is skipped otherwise).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import random
import re
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from conftest import IO_TIMEOUT_S, RouterHandle, free_port, make_config

from devrouter import __version__
from devrouter.core.model import Config, DockerSettings, ListenAddr, PathRoute, Route, Upstream
from devrouter.core.state import State
from devrouter.docker.containers import Container, PublishedPort
from devrouter.docker.naming import plan as docker_plan
from devrouter.docker.watcher import DockerReport
from devrouter.observe.metrics import REDACTED
from devrouter.server.app import Router
from devrouter.web import dashboard

CHROMIUM = Path("/usr/bin/chromium")
HAVE_CHROMIUM = CHROMIUM.exists()
#: Upper bound for the browser to start, and for any one wait on the page, in seconds.
BROWSER_START_S = 30.0
PAGE_WAIT_S = 15.0

RouterFactory = Callable[..., Awaitable[RouterHandle]]
BackendFactory = Callable[..., Awaitable[int]]


def ipv6_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def hello_app() -> web.Application:
    async def hello(request: web.Request) -> web.Response:
        if request.path == "/fail":
            return web.Response(status=500, text="boom")
        return web.Response(text="hello", headers={"Set-Cookie": "session=s3cret"})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", hello)
    return app


async def own(
    port: int,
    path: str = "/",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    host: str | None = None,
) -> tuple[int, dict[str, str], bytes]:
    """One request to the router's own pages (Host 127.0.0.1:PORT unless `host`)."""
    hdrs = dict(headers or {})
    if host is not None:
        hdrs["Host"] = host
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as s,
        s.request(method, f"http://127.0.0.1:{port}{path}", headers=hdrs) as resp,
    ):
        return resp.status, dict(resp.headers), await resp.read()


async def own_json(port: int, path: str) -> Any:
    status, headers, body = await own(port, path)
    assert status == 200, body
    assert headers["Content-Type"] == "application/json; charset=utf-8"
    return json.loads(body)


async def send(port: int, name: str, path: str = "/", n: int = 1, **kw: Any) -> list[int]:
    """`n` requests to route `name`; their statuses."""
    out = []
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as s:
        for _ in range(n):
            headers = {"Host": f"{name}.localhost", **kw.get("headers", {})}
            async with s.get(f"http://127.0.0.1:{port}{path}", headers=headers) as resp:
                await resp.read()
                out.append(resp.status)
    return out


def route_of(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (route,) = [r for r in doc["routes"] if r["name"] == name]
    return route


# --- /api/status ---------------------------------------------------------------------------


async def test_status_lists_routes_and_its_figures_follow_traffic(
    router: RouterFactory, backend: BackendFactory
) -> None:
    port = await backend(hello_app())
    dead = free_port()
    r = await router(
        make_config({"api": port, "down": dead, "web": {"port": port, "paths": {"/api": dead}}})
    )
    doc = await own_json(r.port, "/api/status")
    assert doc["version"] == __version__
    assert doc["listen"] == [f"127.0.0.1:{r.port}"]
    assert doc["uptime_s"] >= 0 and doc["started"] <= doc["now"]
    assert doc["config"] == {
        "source": "<test>",
        "loaded_at": pytest.approx(r.state.snapshot.loaded_at, abs=0.01),
        "generation": 1,
        "error": None,
        "conflicts": [],
        "warnings": [],
    }
    assert [x["name"] for x in doc["routes"]] == ["api", "down", "web"]
    api = route_of(doc, "api")
    assert api["url"] == f"http://api.localhost:{r.port}/"
    assert api["target"] == f"127.0.0.1:{port} or [::1]:{port}"
    assert api["port"] == port
    assert api["source"] == "config" and api["owner_pid"] is None
    assert api["access"] is False and api["max_connections"] == 512
    assert api["count"] == 0 and api["requests"] == {"2xx": 0, "3xx": 0, "4xx": 0, "5xx": 0}
    assert api["latency_ms"]["p50"] is None and api["ttfb_ms"]["p99"] is None
    assert len(api["series"]["count"]) == dashboard.SERIES_WINDOW_S
    # the first read after a quiet spell waits for a probe round: health is already known
    assert api["health"]["up"] is True
    assert api["health"]["detail"].startswith("listening")
    down = route_of(doc, "down")
    assert down["health"]["up"] is False
    assert down["health"]["detail"] == f"nothing is listening on 127.0.0.1:{dead} or [::1]:{dead}"
    (path,) = route_of(doc, "web")["paths"]
    assert path["prefix"] == "/api" and path["port"] == dead and path["health"]["up"] is False

    assert await send(r.port, "api", n=5) == [200] * 5
    assert await send(r.port, "api", "/fail") == [500]
    assert await send(r.port, "down") == [502]

    doc = await own_json(r.port, "/api/status")
    api = route_of(doc, "api")
    assert api["count"] == 6
    assert api["requests"]["2xx"] == 5 and api["requests"]["5xx"] == 1
    assert api["error_count"] == 1 and api["errors"] == {}
    assert api["bytes_out"] == 5 * len("hello") + len("boom")
    assert 0 < api["latency_ms"]["p50"] <= api["latency_ms"]["p99"] <= api["latency_ms"]["max"]
    assert 0 < api["ttfb_ms"]["p50"] <= api["latency_ms"]["max"]
    assert sum(api["series"]["count"]) == 6
    assert api["series"]["mean_ms"][-1] is not None or api["series"]["mean_ms"][-2] is not None
    assert api["open_streams"] == 0 and api["open_websockets"] == 0
    down = route_of(doc, "down")
    assert down["errors"] == {"refused": 1} and down["error_count"] == 1
    assert down["requests"]["5xx"] == 1
    assert doc["recent"]["last_seq"] == 7


@pytest.mark.skipif(not ipv6_available(), reason="no IPv6 loopback")
async def test_status_says_a_backend_listens_only_on_ipv6(
    router: RouterFactory, backend: BackendFactory
) -> None:
    port = await backend(hello_app(), host="::1")
    r = await router(make_config({"vite": port}))
    health = route_of(await own_json(r.port, "/api/status"), "vite")["health"]
    assert health["up"] is True
    assert health["detail"] == f"listening only on [::1]:{port} (nothing on 127.0.0.1)"
    assert health["listening"] == ["::1"]


async def test_status_reports_reload_errors_and_clashes(router: RouterFactory) -> None:
    r = await router(make_config({"api": free_port()}))
    r.state.last_error = "devrouter.yaml:3: route 'web': port must be a number"
    r.state.set_dynamic(
        [
            Route("api", Upstream(free_port()), source="run", owner_pid=4242),
            Route("worker", Upstream(free_port()), source="run", owner_pid=4343),
        ]
    )
    doc = await own_json(r.port, "/api/status")
    assert doc["config"]["error"] == r.state.last_error
    assert doc["config"]["generation"] == 2
    (clash,) = doc["config"]["conflicts"]
    assert "'api'" in clash and "4242" in clash
    worker = route_of(doc, "worker")
    assert worker["source"] == "run" and worker["owner_pid"] == 4343
    assert route_of(doc, "api")["source"] == "config"


async def test_no_routes(router: RouterFactory) -> None:
    r = await router(make_config({}))
    doc = await own_json(r.port, "/api/status")
    assert doc["routes"] == []
    status, _, body = await own(r.port, "/")
    assert status == 200 and b"none yet" in body


# --- /api/requests -------------------------------------------------------------------------


async def test_requests_since_limit_route_and_redaction(
    router: RouterFactory, backend: BackendFactory
) -> None:
    port = await backend(hello_app())
    r = await router(make_config({"api": port, "web": port}))
    secret = {"Authorization": "Bearer hunter2", "Cookie": "sid=hunter2", "X-Note": "<b>hi</b>"}
    await send(r.port, "api", "/a?q=1", n=3, headers=secret)
    await send(r.port, "web", "/b", n=2)

    doc = await own_json(r.port, "/api/requests")
    assert doc["size"] == 500 and doc["last_seq"] == 5
    recs = doc["requests"]
    assert [x["seq"] for x in recs] == [1, 2, 3, 4, 5]  # oldest first
    first = recs[0]
    assert (first["method"], first["route"], first["path"], first["status"]) == (
        "GET",
        "api",
        "/a?q=1",
        200,
    )
    assert first["host"] == "api.localhost" and first["upstream_port"] == port
    assert 0 < first["ttfb_ms"] <= first["duration_ms"]
    assert first["bytes_out"] == 5 and first["error"] is None
    req_headers = dict(first["request_headers"])
    assert req_headers["Authorization"] == REDACTED and req_headers["Cookie"] == REDACTED
    assert req_headers["X-Note"] == "<b>hi</b>"  # as data; the page writes it as text
    assert dict(first["response_headers"])["Set-Cookie"] == REDACTED
    assert "hunter2" not in json.dumps(doc) and "s3cret" not in json.dumps(doc)

    doc = await own_json(r.port, "/api/requests?since=3")
    assert [x["seq"] for x in doc["requests"]] == [4, 5]
    doc = await own_json(r.port, "/api/requests?limit=2")
    assert [x["seq"] for x in doc["requests"]] == [4, 5]  # the newest two
    doc = await own_json(r.port, "/api/requests?route=api&since=1")
    assert [x["seq"] for x in doc["requests"]] == [2, 3]
    assert doc["last_seq"] == 5
    doc = await own_json(r.port, "/api/requests?route=nosuch")
    assert doc["requests"] == []
    doc = await own_json(r.port, "/api/requests?headers=0&limit=1")
    assert "request_headers" not in doc["requests"][0]
    doc = await own_json(r.port, "/api/requests?since=5")
    assert doc["requests"] == [] and doc["last_seq"] == 5


@pytest.mark.parametrize("query", ["since=-1", "since=x", "limit=0", "limit=1e3", "since=\uff11"])
async def test_requests_rejects_bad_parameters(router: RouterFactory, query: str) -> None:
    r = await router(make_config({}))
    status, headers, body = await own(r.port, f"/api/requests?{query}")
    assert status == 400
    assert headers["Content-Type"].startswith("application/json")
    assert "error" in json.loads(body)


# --- the page, read-only, headers ------------------------------------------------------------


async def test_html_page_is_self_contained_with_a_strict_csp(router: RouterFactory) -> None:
    r = await router(make_config({"zebra-crossing": free_port()}))
    status, headers, body = await own(r.port, "/", headers={"Accept": "text/html"})
    assert status == 200
    assert headers["Content-Type"] == "text/html; charset=utf-8"
    html = body.decode()
    # nothing is loaded from anywhere: no external script, style, image or font
    assert not re.search(r"<script[^>]+src|<link(?![^>]+href=\"data:)|@import|url\(", html)
    assert "https://" not in html and "//cdn" not in html
    assert "zebra" not in html  # static: the data comes as JSON, written as text
    csp = dict(part.strip().split(" ", 1) for part in headers["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    assert csp["connect-src"] == "'self'"
    assert "'unsafe-inline'" not in headers["Content-Security-Policy"]
    script = html.split("<script>", 1)[1].split("</script>", 1)[0]
    style = html.split("<style>", 1)[1].split("</style>", 1)[0]
    assert csp["script-src"] == sha256_source(script)
    assert csp["style-src"] == sha256_source(style)
    assert headers["X-Frame-Options"] == "DENY"


def sha256_source(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", ["/", "/api/status", "/api/requests", "/metrics", "/nope"])
async def test_every_answer_is_no_store_nosniff_and_has_no_cors(
    router: RouterFactory, path: str
) -> None:
    r = await router(make_config({"api": free_port()}))
    evil = {"Origin": "http://evil.example", "Accept": "text/html"}
    for method in ("GET", "HEAD", "POST", "OPTIONS"):
        status, headers, _ = await own(r.port, path, method, headers=evil)
        assert headers["Cache-Control"] == "no-store"
        assert headers["X-Content-Type-Options"] == "nosniff"
        assert not [h for h in headers if h.lower().startswith("access-control-")]
        if method in ("POST", "OPTIONS"):
            assert status == 405 and headers["Allow"] == "GET, HEAD"
        else:
            assert status == (404 if path == "/nope" else 200)


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH"])
async def test_writes_are_refused(router: RouterFactory, method: str) -> None:
    r = await router(make_config({}))
    status, _, body = await own(r.port, "/api/status", method)
    assert status == 405 and b"read-only" in body


async def test_preflight_is_refused_without_cors_headers(router: RouterFactory) -> None:
    r = await router(make_config({}))
    status, headers, _ = await own(
        r.port,
        "/api/status",
        "OPTIONS",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"},
    )
    assert status == 405
    assert not [h for h in headers if h.lower().startswith("access-control-")]


@pytest.mark.parametrize(
    "path", ["/nope", "/api", "/api/", "/api/status/", "/metrics/x", "//api/status", "/API/status"]
)
async def test_unknown_paths_are_404(router: RouterFactory, path: str) -> None:
    r = await router(make_config({}))
    status, _, _ = await own(r.port, path)
    assert status == 404


async def test_head_has_headers_and_no_body(router: RouterFactory) -> None:
    r = await router(make_config({}))
    status, headers, body = await own(r.port, "/api/status", "HEAD")
    assert status == 200 and body == b""
    assert int(headers["Content-Length"]) > 0


@pytest.mark.parametrize("host", ["localhost", "devrouter.localhost", "127.0.0.1", "LOCALHOST."])
async def test_every_own_name_answers(router: RouterFactory, host: str) -> None:
    r = await router(make_config({}))
    status, _, body = await own(r.port, "/api/status", host=f"{host}:{r.port}")
    assert status == 200 and json.loads(body)["version"] == __version__


async def test_text_index_for_curl(router: RouterFactory, backend: BackendFactory) -> None:
    port = await backend(hello_app())
    dead = free_port()
    r = await router(make_config({"api": port, "down": dead}))
    status, headers, body = await own(r.port, "/", headers={"Accept": "*/*"})
    assert status == 200 and headers["Content-Type"] == "text/plain; charset=utf-8"
    text = body.decode()
    assert f"http://api.localhost:{r.port}/ -> 127.0.0.1:{port} or [::1]:{port}  [up:" in text
    assert f"[DOWN: nothing is listening on 127.0.0.1:{dead} or [::1]:{dead}]" in text
    assert "/api/status" in text and "/metrics" in text


async def test_reading_the_api_changes_nothing(router: RouterFactory) -> None:
    r = await router(make_config({"api": free_port()}))
    before = r.state.snapshot
    for path in ("/", "/api/status", "/api/requests", "/metrics", "/?reload=1"):
        await own(r.port, path)
    assert r.state.snapshot is before
    assert r.router.metrics.routes == {} and not r.router.metrics.recent


# --- the dashboard in a real browser ---------------------------------------------------------


class Browser:
    """Headless Chromium over the Chrome DevTools Protocol, with aiohttp's websocket client.

    One page target; every console message, uncaught exception and log entry is kept in
    `events` so a test can assert there were no errors."""

    FLAGS = (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--disable-dev-shm-usage",
        "--no-proxy-server",
        "--remote-debugging-address=127.0.0.1",
        "--remote-debugging-port=0",
    )

    def __init__(self, proc: subprocess.Popen[bytes]) -> None:
        self.proc = proc
        self.session: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.events: list[dict[str, Any]] = []
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next = 0
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def launch(cls, profile: Path) -> Browser:
        b = cls(_spawn_chromium(profile, cls.FLAGS))
        try:
            await b._connect(profile / "DevToolsActivePort")
        except BaseException:
            await b.close()
            raise
        return b

    async def _connect(self, port_file: Path) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + BROWSER_START_S
        port = _devtools_port(port_file)
        while port is None:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode}")
            if loop.time() > deadline:
                raise TimeoutError("chromium did not open its DevTools port")
            await asyncio.sleep(0.05)
            port = _devtools_port(port_file)
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=IO_TIMEOUT_S))
        page: dict[str, Any] | None = None
        while page is None:
            async with self.session.get(f"http://127.0.0.1:{port}/json/list") as resp:
                pages = [t for t in await resp.json() if t.get("type") == "page"]
            page = pages[0] if pages else None
            if page is None:
                if loop.time() > deadline:
                    raise TimeoutError("chromium has no page target")
                await asyncio.sleep(0.05)
        self.ws = await self.session.ws_connect(
            page["webSocketDebuggerUrl"], max_msg_size=256 * 1024 * 1024
        )
        self._reader = asyncio.create_task(self._read())
        for domain in ("Page", "Runtime", "Log"):
            await self.call(f"{domain}.enable")

    async def _read(self) -> None:
        assert self.ws is not None
        async for msg in self.ws:
            if msg.type != aiohttp.WSMsgType.TEXT:
                break
            data = json.loads(msg.data)
            fut = self._pending.pop(data.get("id", -1), None)
            if fut is not None:
                if not fut.done():
                    fut.set_result(data)
            elif "method" in data:
                self.events.append(data)
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(ConnectionError("the DevTools connection closed"))

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        assert self.ws is not None
        self._next += 1
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[self._next] = fut
        await self.ws.send_json({"id": self._next, "method": method, "params": params})
        reply = await asyncio.wait_for(fut, PAGE_WAIT_S)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply.get("result", {})
        return result

    async def eval(self, expression: str) -> Any:
        r = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in r:
            raise AssertionError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    async def wait_for(self, expression: str, timeout_s: float = PAGE_WAIT_S) -> Any:
        """Poll `expression` until it is truthy; fail after `timeout_s` with its last value."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        value = await self.eval(expression)
        while not value:
            if loop.time() > deadline:
                raise AssertionError(f"still {value!r} after {timeout_s}s: {expression}")
            await asyncio.sleep(0.1)
            value = await self.eval(expression)
        return value

    async def goto(self, url: str) -> None:
        await self.call("Page.navigate", url=url)
        await self.wait_for(f"location.href === {json.dumps(url)}")
        await self.wait_for("document.readyState === 'complete'")

    def errors(self) -> list[dict[str, Any]]:
        """Console errors, uncaught exceptions and error log entries (CSP violations and
        failed loads among them)."""
        out = []
        for e in self.events:
            method, params = e["method"], e.get("params", {})
            if (
                (method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"))
                or method == "Runtime.exceptionThrown"
                or (method == "Log.entryAdded" and params["entry"].get("level") == "error")
            ):
                out.append(e)
        return out

    async def screenshot(self, path: Path, width: int, height: int, scale: float = 1) -> None:
        await self.call(
            "Emulation.setDeviceMetricsOverride",
            width=width,
            height=height,
            deviceScaleFactor=scale,
            mobile=False,
        )
        await asyncio.sleep(0.3)
        shot = await self.call("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self.session is not None:
            await self.session.close()
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                await asyncio.to_thread(self.proc.wait, 10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                await asyncio.to_thread(self.proc.wait, 10)


def _spawn_chromium(profile: Path, flags: tuple[str, ...]) -> subprocess.Popen[bytes]:
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [str(CHROMIUM), *flags, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group, so close() ends all its children
    )


def _devtools_port(port_file: Path) -> int | None:
    """The port Chromium wrote to its profile's DevToolsActivePort file, once complete."""
    try:
        lines = port_file.read_text().splitlines()
    except FileNotFoundError:
        return None
    return int(lines[0]) if len(lines) >= 2 else None


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[Browser]:
    if not HAVE_CHROMIUM:
        pytest.skip(f"{CHROMIUM} is not installed")
    b = await Browser.launch(tmp_path / "chromium-profile")
    try:
        yield b
    finally:
        await b.close()


def text_of(selector: str) -> str:
    """A JS expression: the trimmed text of the first element matching `selector`."""
    return f"(document.querySelector({json.dumps(selector)})?.textContent ?? '').trim()"


def text_is(selector: str, value: str) -> str:
    return f"{text_of(selector)} === {json.dumps(value)}"


@pytest.mark.timeout(120)
async def test_dashboard_in_a_browser(
    router: RouterFactory, backend: BackendFactory, browser: Browser
) -> None:
    port = await backend(hello_app())
    dead = free_port()
    web = {"port": port, "paths": {"/api": dead}, "access": {"env": "DASHBOARD_TEST_SECRET"}}
    r = await router(make_config({"api": port, "down": dead, "web": web}))
    await browser.goto(f"http://127.0.0.1:{r.port}/")
    await browser.wait_for("document.querySelectorAll('#routes-body tr.route').length === 3")
    names = await browser.eval(
        "[...document.querySelectorAll('#routes-body tr.route')].map(tr => tr.dataset.route)"
    )
    assert names == ["api", "down", "web"]
    api = "#routes-body tr[data-route='api']"
    assert await browser.eval(f'document.querySelector("{api} a").href') == (
        f"http://api.localhost:{r.port}/"
    )
    assert await browser.eval(text_of(f"{api} td.count")) == "0"
    web_badge = "#routes-body tr[data-route='web'] .badge"
    assert await browser.eval(text_of(web_badge)) == "config \u00b7 secret"
    assert await browser.eval(text_of(f"{api} .badge")) == "config"
    assert await browser.eval(text_of(f"{api} td.p50")) == "\u2014"
    await browser.wait_for(text_is("#live-text", "live"))
    await browser.wait_for(
        text_of("#routes-body tr[data-route='down'] .detail-text")
        + f" === 'nothing is listening on 127.0.0.1:{dead} or [::1]:{dead}'"
    )
    assert await browser.eval(text_of("#no-requests")) != ""

    evil = "<img src=x id=pwned onerror=alert(1)>"
    await send(r.port, "api", "/hello", n=7, headers={"X-Evil": evil, "Cookie": "sid=hunter2"})
    await send(r.port, "down")

    await browser.wait_for(text_is(f"{api} td.count", "7"))
    # a figure above zero, in ms or (under 0.1 ms) in µs, never the clock tick's "0.00 ms"
    figure = re.compile(r"^(?!0(\.0+)? )[0-9.]+ (ms|\u00b5s)$")
    await browser.wait_for(f"/{figure.pattern}/.test({text_of(f'{api} td.p50')})")
    assert figure.match(await browser.eval(text_of(f"{api} td.p99")))
    await browser.wait_for(text_is("#routes-body tr[data-route='down'] td.errors", "1"))
    await browser.wait_for("document.querySelectorAll('#requests-body tr.req').length === 8")
    assert await browser.eval("document.querySelectorAll('.spark path.line, .spark circle').length")

    # a row expands to its headers and timing; user data stays text
    newest = "#requests-body tr.req"
    assert await browser.eval(text_of(f"{newest} td:nth-child(5)")) == "502refused"
    first_api = "#requests-body tr.req[data-route='api']"
    await browser.eval(f'document.querySelector("{first_api}").click()')
    detail = f'document.querySelector("{first_api}").nextElementSibling'
    await browser.wait_for(f"!{detail}.hidden")
    detail_text = await browser.eval(f"{detail}.textContent")
    assert evil in detail_text
    assert "headers after" in detail_text and "done after" in detail_text
    assert REDACTED in detail_text and "hunter2" not in detail_text
    assert await browser.eval("document.getElementById('pwned') === null")

    # the filter shows one route's requests
    await browser.eval(
        "const s = document.getElementById('filter'); s.value = 'down';"
        "s.dispatchEvent(new Event('change'))"
    )
    await browser.wait_for("document.querySelectorAll('#requests-body tr.req').length === 1")
    assert await browser.eval(
        "[...document.querySelectorAll('#requests-body tr.req')]"
        ".every(tr => tr.dataset.route === 'down')"
    )
    await send(r.port, "api", n=2)
    await send(r.port, "down")
    await browser.wait_for("document.querySelectorAll('#requests-body tr.req').length === 2")
    await browser.wait_for(text_is(f"{api} td.count", "9"))

    # a config error shows up in words
    r.state.last_error = "devrouter.yaml:2: route 'api': port 70000 is outside 1-65535"
    await browser.wait_for(text_of("#alerts") + ".includes('port 70000 is outside 1-65535')")
    assert browser.errors() == []


@pytest.mark.timeout(60)
async def test_dashboard_without_routes_says_how_to_add_one(
    router: RouterFactory, browser: Browser
) -> None:
    r = await router(make_config({}))
    await browser.goto(f"http://localhost:{r.port}/")
    await browser.wait_for("!document.getElementById('empty').hidden")
    text = await browser.eval(text_of("#empty"))
    assert "No routes yet" in text and "create devrouter.yaml" in text
    assert "routes:" in text and "api: 4001" in text
    assert await browser.eval("document.getElementById('routes').hidden")
    assert browser.errors() == []


@pytest.mark.timeout(60)
async def test_dashboard_shows_docker_routes_and_containers_without_one(
    router: RouterFactory, backend: BackendFactory, browser: Browser
) -> None:
    """What the Docker watcher reports (devrouter.docker; the real Engine is in
    tests/docker/test_docker_engine.py) as the page shows it: a route's container in its
    badge, and each running container without a route with the reason, as text."""
    port = await backend(hello_app())
    r = await router(make_config({}))
    evil = "<img src=x id=pwned onerror=alert(1)>"
    api = Container(
        "a" * 64,
        "shop_api_1",
        "local/busybox",
        "running",
        {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"},
        (PublishedPort(80, port, "127.0.0.1"),),
        health="healthy",
    )
    quiet = Container("b" * 64, evil, "postgres:16", "running", {"devrouter.name": "db"})
    result = docker_plan([api, quiet], DockerSettings(), 60.0)
    r.state.set_docker(result.routes, result.conflicts)
    report = DockerReport("connected", "/var/run/docker.sock", "1.41", placements=result.placements)
    r.router.site.docker = report
    await browser.goto(f"http://127.0.0.1:{r.port}/")
    badge = "#routes-body tr[data-route='api.shop'] .badge"
    await browser.wait_for(text_is(badge, "docker \u00b7 shop \u00b7 shop_api_1 (healthy)"))
    assert "image local/busybox" in await browser.eval(f'document.querySelector("{badge}").title')
    await browser.wait_for("!document.getElementById('docker').hidden")
    text = await browser.eval(text_of("#docker"))
    assert "watching the Engine at /var/run/docker.sock; 1 of 2 running containers named" in text
    assert f"{evil} has no route: it publishes no port" in text
    assert await browser.eval("document.getElementById('pwned') === null")

    report.state, report.detail = "unreachable", "the Engine is not reachable at /x.sock"
    await browser.wait_for(text_of("#docker-state") + ".includes('not reachable at /x.sock')")
    report.state, report.detail = "absent", "no Docker Engine socket at /var/run/docker.sock"
    await browser.wait_for("document.getElementById('docker').hidden")
    assert browser.errors() == []


# --- the screenshot in docs/ ---------------------------------------------------------------


def _port_or_free(preferred: int, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers will
        try:
            s.bind((host, preferred))
        except OSError:
            return free_port(host)
    return preferred


def demo_app(rng: random.Random, base_ms: float) -> web.Application:
    async def handler(request: web.Request) -> web.Response:
        if request.path.startswith("/missing"):
            return web.Response(status=404, text="not found")
        await asyncio.sleep(max(0.0005, rng.gauss(base_ms, base_ms / 3)) / 1000)
        if request.path.startswith("/api/checkout") and rng.random() < 0.3:
            return web.Response(status=500, text="upstream payment service timed out")
        return web.json_response(
            {"ok": True, "path": request.path},
            headers={"Set-Cookie": "session=1f2e3d; HttpOnly", "Cache-Control": "no-cache"},
        )

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handler)
    return app


@pytest.mark.timeout(180)
@pytest.mark.skipif(
    not os.environ.get("DEVROUTER_SCREENSHOT"), reason="set DEVROUTER_SCREENSHOT=PATH to run"
)
async def test_screenshot_for_docs(browser: Browser) -> None:
    """A few routes with the usual dev ports, some traffic, one request opened."""
    rng = random.Random(4)
    runners: list[web.AppRunner] = []

    async def serve(app: web.Application, preferred: int, host: str = "127.0.0.1") -> int:
        port = _port_or_free(preferred, host)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, host, port).start()
        runners.append(runner)
        return port

    api_port = await serve(demo_app(rng, 8), 4001)
    web_host = "::1" if ipv6_available() else "127.0.0.1"  # as Vite binds `localhost`
    web_port = await serve(demo_app(rng, 3), 5173, web_host)
    admin_port = await serve(demo_app(rng, 30), 3000)
    pay_port = await serve(demo_app(rng, 20), 4242)
    worker_port = await serve(demo_app(rng, 12), 8787)
    docs_port = _port_or_free(8000)
    config = make_config(
        {
            "api": api_port,
            "web": {"port": web_port, "paths": {"/api": api_port}},
            "admin": admin_port,
            "docs": docs_port,
        }
    )
    source = "/home/you/src/shop/devrouter.yaml"
    config = Config(source=source, routes=config.routes)
    state = State(config)
    state.set_dynamic(
        [
            Route("worker", Upstream(worker_port), source="run", owner_pid=48213),
            Route(
                "shop.payments",
                Upstream(pay_port, ("127.0.0.1",)),
                (PathRoute("/webhooks", Upstream(api_port, ("127.0.0.1",))),),
                source="stack",
                stack="shop",
            ),
        ]
    )
    listen = ListenAddr("127.0.0.1", _port_or_free(7355))
    router = Router(state, [listen], None, required=[listen])
    await router.start()
    try:
        port = router.bound[0].port
        await browser.goto(f"http://localhost:{port}/")
        await browser.wait_for("document.querySelectorAll('#routes-body tr.route').length === 6")
        ua = (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/131.0 Safari/537.36"
        )
        plan = [
            ("web", ["/", "/assets/index-4f9a.js", "/assets/index-9c1b.css", "/api/cart"], 3.0),
            ("api", ["/v1/products?page=2", "/v1/users/me", "/v1/orders", "/missing"], 2.0),
            ("admin", ["/dashboard", "/reports/weekly"], 0.5),
            ("shop.payments", ["/api/checkout", "/webhooks/stripe"], 0.6),
            ("worker", ["/jobs/next"], 0.4),
            ("docs", ["/"], 0.05),
        ]
        timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout) as s:
            for _ in range(40):  # seconds of traffic, so the sparklines have a shape
                tick = asyncio.get_running_loop().time()
                for name, paths, per_s in plan:
                    for _ in range(int(per_s * rng.uniform(0.3, 2.2) + rng.random())):
                        headers = {
                            "Host": f"{name}.localhost:{port}",
                            "User-Agent": ua,
                            "Accept": "application/json, text/plain, */*",
                            "Cookie": "session=1f2e3d; theme=dark",
                            "Authorization": "Bearer eyJhbGciOiJIUzI1NiJ9.e30.x",
                        }
                        url = f"http://127.0.0.1:{port}{rng.choice(paths)}"
                        async with s.get(url, headers=headers) as resp:
                            await resp.read()
                await asyncio.sleep(max(0.0, 1 - (asyncio.get_running_loop().time() - tick)))
        await browser.wait_for("document.querySelectorAll('#requests-body tr.req').length > 20")
        await asyncio.sleep(1.5)
        await browser.eval("document.querySelector('#pause').click()")
        await browser.eval(
            "document.querySelector(\"#requests-body tr.req[data-route='api']\").click()"
        )
        out = Path(os.environ["DEVROUTER_SCREENSHOT"])
        await browser.screenshot(out, 1440, 1180, scale=1)
        assert browser.errors() == []
    finally:
        await router.close()
        for runner in runners:
            await runner.cleanup()


def docs_text() -> str:
    return (Path(__file__).resolve().parents[2] / "docs" / "dashboard.md").read_text()


async def test_every_status_field_is_documented(
    router: RouterFactory, backend: BackendFactory
) -> None:
    port = await backend(hello_app())
    r = await router(make_config({"web": {"port": port, "paths": {"/api": port}}}))
    doc = await own_json(r.port, "/api/status")
    route = doc["routes"][0]
    keys = {
        *doc,
        *doc["config"],
        *doc["recent"],
        *route,
        *route["health"],
        *route["paths"][0],
        *route["latency_ms"],
        *route["series"],
    }
    await send(r.port, "web")
    keys |= set((await own_json(r.port, "/api/requests"))["requests"][0])
    docs = docs_text()
    missing = sorted(k for k in keys if f"`{k}`" not in docs and f'"{k}"' not in docs)
    assert not missing, f"not in docs/dashboard.md: {missing}"
