"""HTTPS and HTTP/2 end to end, with real clients that verify the router's certificate: headless
Chromium (the CA imported into an NSS database in a throw-away HOME), curl, Node and Python's
ssl, all against the real CLI (`devrouter serve`, its CA created in the test's DEVROUTER_HOME)
in front of real aiohttp backends. Nothing here ignores a certificate error: no
`--ignore-certificate-errors`, no `-k`, no `rejectUnauthorized: false`, no CERT_NONE.

glibc here does not resolve *.localhost, so the command-line clients are pointed at 127.0.0.1
(`--resolve`, a `lookup` function, a connection factory) while they still send, verify and
SNI the real name; Chromium resolves *.localhost to loopback itself.

Each test skips with its reason when a tool is missing, and every wait is bounded.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import vitedev
from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractResolver, ResolveResult
from chromium import Chromium, missing_tools, nss_trust
from conftest import IO_TIMEOUT_S, CliProcess, cli_env, free_port

from devrouter.http2.server import MAX_STREAMS_PER_NAME

BackendFactory = Callable[..., Awaitable[int]]
Cli = Callable[..., CliProcess]

#: ES modules the test page imports, as a tree (module i imports 2i+1 and 2i+2).
MODULES = 300
#: Server-sent events the SSE endpoint sends before it waits for the client to leave.
SSE_EVENTS = 3
#: Upper bound for one client command (curl, node, python) in a test, in seconds.
COMMAND_S = 30.0


# --- the backend ------------------------------------------------------------------------------


PAGE = """<!doctype html>
<meta charset="utf-8">
<title>devrouter over h2</title>
<link rel="icon" href="data:,">
<script>
  // Room for every module's timing entry (the default buffer holds 250).
  performance.setResourceTimingBufferSize(4 * %(modules)d);
  globalThis.ran = new Set();
</script>
<script type="module" src="/m/0.js"></script>
<script type="module" src="/app.js"></script>
<pre id="modules"></pre>
<pre id="ws"></pre>
<pre id="sse"></pre>
"""

APP_JS = """
const show = (id, text) => { document.getElementById(id).textContent = text; };
const ws = new WebSocket(`wss://${location.host}/ws`);
ws.onopen = () => ws.send("ping over wss");
ws.onmessage = (e) => { show("ws", "echo: " + e.data); ws.close(1000, "done"); };
ws.onerror = () => show("ws", "error");
const got = [];
const es = new EventSource("/events");
es.onmessage = (e) => {
  got.push(e.data);
  if (got.length === %(events)d) { es.close(); show("sse", got.join(",")); }
};
es.onerror = () => { globalThis.sseErrors = (globalThis.sseErrors || 0) + 1; };
"""


def module_js(i: int) -> str:
    """Module i imports its two children; the root (0) runs last and writes how many ran."""
    lines = [f'import "./{c}.js";' for c in (2 * i + 1, 2 * i + 2) if c < MODULES]
    lines.append(f"globalThis.ran.add({i});")
    if i == 0:
        lines.append('document.getElementById("modules").textContent = String(ran.size);')
    return "\n".join(lines) + "\n"


@dataclass
class Seen:
    """What the backend saw: the WebSocket handshakes' heads, the SSE streams that ended."""

    ws_heads: list[dict[str, str]] = field(default_factory=list)
    ws_closes: list[int | None] = field(default_factory=list)  # the close code each got
    ws_closed: asyncio.Event = field(default_factory=asyncio.Event)
    sse_closed: asyncio.Event = field(default_factory=asyncio.Event)


def page_app(seen: Seen) -> web.Application:
    no_store = {"Cache-Control": "no-store"}

    async def page(_: web.Request) -> web.Response:
        return web.Response(
            text=PAGE % {"modules": MODULES}, content_type="text/html", headers=no_store
        )

    async def app_js(_: web.Request) -> web.Response:
        return web.Response(
            text=APP_JS % {"events": SSE_EVENTS}, content_type="text/javascript", headers=no_store
        )

    async def module(request: web.Request) -> web.Response:
        i = int(request.match_info["i"])
        if not 0 <= i < MODULES:
            raise web.HTTPNotFound()
        return web.Response(text=module_js(i), content_type="text/javascript", headers=no_store)

    async def ws(request: web.Request) -> web.WebSocketResponse:
        """Echoes text; answers a close with the client's own code and reason, so the
        client's close event shows whether that answer reached it."""
        seen.ws_heads.append({"version": f"HTTP/{request.version.major}.{request.version.minor}"})
        sock = web.WebSocketResponse(autoclose=False)
        await sock.prepare(request)
        while True:
            msg = await sock.receive()
            if msg.type is WSMsgType.TEXT:
                await sock.send_str(msg.data)
                continue
            if msg.type is WSMsgType.CLOSE:
                seen.ws_closes.append(msg.data)
                code = (
                    msg.data if 1000 <= msg.data <= 4999 and msg.data not in (1005, 1006) else 1000
                )
                await sock.close(code=code, message=(msg.extra or "").encode())
            else:  # the connection went without a close frame
                seen.ws_closes.append(None)
            break
        seen.ws_closed.set()
        return sock

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", **no_store})
        await resp.prepare(request)
        try:
            for n in range(1, SSE_EVENTS + 1):
                await resp.write(f"id: {n}\ndata: event {n}\n\n".encode())
            # The stream stays open: the events must reach the page while it does, and the
            # page's es.close() must reach this handler as a cancellation.
            await asyncio.sleep(3600)
        finally:
            seen.sse_closed.set()
        return resp

    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {request.host}")

    async def ndjson(request: web.Request) -> web.StreamResponse:
        """A streamed response that is not an event stream (NDJSON, as a log tail or an
        LLM's tokens are streamed): one line, then it stays open until the client leaves."""
        resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson", **no_store})
        await resp.prepare(request)
        await resp.write(b'{"started": true}\n')
        await asyncio.sleep(3600)
        return resp

    app = web.Application()
    app.router.add_get("/", page)
    app.router.add_get("/app.js", app_js)
    app.router.add_get("/m/{i:\\d+}.js", module)
    app.router.add_get("/ws", ws)
    app.router.add_get("/events", events)
    app.router.add_get("/ndjson", ndjson)
    app.router.add_get("/hello", hello)
    return app


# --- the router: the real CLI with its own state directory ------------------------------------


@dataclass
class Served:
    """A `devrouter serve` process, the CA its clients trust, and a HOME for them."""

    proc: CliProcess
    port: int
    ca: Path
    home: Path

    def url(self, name: str, path: str = "/") -> str:
        return f"https://{name}.localhost:{self.port}{path}"


ServeFactory = Callable[..., Served]


@pytest.fixture
def serve(cli: Cli, tmp_path: Path) -> Iterator[ServeFactory]:
    """`served = serve(routes, port=None, fast_path=True)`: `devrouter serve` with these
    routes, its CA in a fresh DEVROUTER_HOME (`served.ca`); `fast_path=False` serves with the
    aiohttp engine alone (DEVROUTER_FAST_PATH=0), which HTTP/2 streams are then written to."""

    def start(routes: dict[str, Any], port: int | None = None, fast_path: bool = True) -> Served:
        config = tmp_path / "devrouter.yaml"
        config.write_text(json.dumps({"routes": routes}))  # JSON is YAML
        state = tmp_path / "state"
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        env = cli_env(
            DEVROUTER_HOME=str(state), HOME=str(home), XDG_CONFIG_HOME=str(home / ".config")
        )
        if not fast_path:
            env["DEVROUTER_FAST_PATH"] = "0"  # the aiohttp engine alone
        proc = cli("serve", "--config", str(config), "--no-access-log", env=env, port=port)
        ca = state / "ca" / "ca.pem"
        assert ca.is_file(), f"no CA at {ca} after the ready line"
        return Served(proc, proc.port, ca, home)

    yield start


async def router_requests(port: int) -> list[dict[str, Any]]:
    """The router's recent requests (its dashboard API on 127.0.0.1, plain HTTP)."""
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.get(f"http://127.0.0.1:{port}/api/requests") as resp,
    ):
        assert resp.status == 200
        body: dict[str, Any] = await resp.json()
    requests: list[dict[str, Any]] = body["requests"]
    return requests


async def wait_for_request(
    port: int, match: Callable[[dict[str, Any]], bool], timeout_s: float = IO_TIMEOUT_S
) -> dict[str, Any]:
    """The first of the router's recent requests that `match`es, polled until one does."""
    async with asyncio.timeout(timeout_s):
        while True:
            for entry in await router_requests(port):
                if match(entry):
                    return entry
            await asyncio.sleep(0.1)


# --- Chromium ---------------------------------------------------------------------------------


@pytest.fixture
async def chromium(tmp_path: Path) -> AsyncIterator[Callable[[Served], Awaitable[Chromium]]]:
    """`browser = await chromium(served)`: headless Chromium trusting `served.ca` through an
    NSS database in its own HOME."""
    if reason := missing_tools():
        pytest.skip(reason)
    browsers: list[Chromium] = []

    async def launch(served: Served) -> Chromium:
        home = tmp_path / "browser-home"
        await asyncio.to_thread(nss_trust, home, served.ca)
        b = await Chromium.launch(home, network=True)
        browsers.append(b)
        return b

    yield launch
    for b in browsers:
        await b.close()


@pytest.mark.timeout(180)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fastpath", "aiohttp"])
async def test_chromium_loads_300_modules_a_websocket_and_sse_over_h2(
    serve: ServeFactory,
    backend: BackendFactory,
    chromium: Callable[[Served], Awaitable[Chromium]],
    fast_path: bool,
) -> None:
    seen = Seen()
    port = await backend(page_app(seen))
    served = serve({"app": port}, fast_path=fast_path)
    browser = await chromium(served)

    await browser.goto(served.url("app"), timeout_s=60)
    assert await browser.wait_for("document.getElementById('modules').textContent", 60) == str(
        MODULES
    )
    entries = await browser.eval(
        "performance.getEntriesByType('navigation').concat("
        "performance.getEntriesByType('resource'))"
        ".map(e => [new URL(e.name).pathname, e.nextHopProtocol])"
    )
    modules = [path for path, _ in entries if path.startswith("/m/")]
    assert len(modules) == MODULES
    assert {proto for _, proto in entries} == {"h2"}, entries

    assert await browser.wait_for("document.getElementById('sse').textContent") == (
        ",".join(f"event {n}" for n in range(1, SSE_EVENTS + 1))
    )
    # es.close() resets the stream; the router must cancel the backend's request.
    async with asyncio.timeout(IO_TIMEOUT_S):
        await seen.sse_closed.wait()

    assert await browser.wait_for("document.getElementById('ws').textContent") == (
        "echo: ping over wss"
    )
    assert len(seen.ws_heads) == 1
    entry = await wait_for_request(served.port, lambda e: bool(e.get("websocket")))
    # Chromium speaks RFC 8441 (a WebSocket as an extended CONNECT stream) when the router's
    # SETTINGS allow it, else it opens an HTTP/1.1 TLS connection for it. Either works; the
    # protocol is recorded in the report (-rA shows it).
    print(f"the page's WebSocket went over {entry['protocol']}")
    assert entry["protocol"] in ("HTTP/2", "HTTP/1.1 TLS")
    assert entry["path"] == "/ws"
    assert browser.errors() == []


#: A page's WebSocket that sends, gets its echo, then closes with its own code and reason;
#: the close event's code is the one the backend answered with (it answers with the page's).
CLOSE_JS = """new Promise((resolve) => {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`);
  ws.onopen = () => ws.send("closing soon");
  ws.onmessage = () => ws.close(4001, "bye");
  ws.onclose = (e) => resolve([e.code, e.reason, e.wasClean]);
})"""

#: Chromium sends its close frame in a DATA frame with END_STREAM (seen from the router's
#: side), before the backend's answer can come back.


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fastpath", "aiohttp"])
@pytest.mark.parametrize(
    "scheme",
    [
        pytest.param("http", id="ws-http1.1"),
        pytest.param("https", id="wss-h2"),
    ],
)
async def test_a_page_closing_its_websocket(
    serve: ServeFactory,
    backend: BackendFactory,
    chromium: Callable[[Served], Awaitable[Chromium]],
    fast_path: bool,
    scheme: str,
) -> None:
    """The close handshake, page first: the backend gets the page's code and reason, its
    answer reaches the page (a clean close with that code), and the request list shows the
    101. Over h2 the handshake runs inside the stream, then each side ends it (RFC 8441,
    section 5)."""
    seen = Seen()
    served = serve({"app": await backend(page_app(seen))}, fast_path=fast_path)
    browser = await chromium(served)
    await browser.goto(served.url("app", "/hello").replace("https:", f"{scheme}:"))
    closed = await browser.eval(CLOSE_JS)
    async with asyncio.timeout(IO_TIMEOUT_S):
        await seen.ws_closed.wait()
    entry = await wait_for_request(served.port, lambda e: bool(e.get("websocket")))
    assert entry["protocol"] == ("HTTP/2" if scheme == "https" else "HTTP/1.1")
    assert (closed, seen.ws_closes, entry["status"]) == ([4001, "bye", True], [4001], 101), entry


@pytest.mark.timeout(120)
async def test_chromium_without_the_ca_refuses_the_page(
    serve: ServeFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    """The other half of the proof: the same browser set-up minus the CA's import fails."""
    if reason := missing_tools():
        pytest.skip(reason)
    requests = 0

    async def count(_: web.Request) -> web.Response:
        nonlocal requests
        requests += 1
        return web.Response(text="should not be reached")

    app = web.Application()
    app.router.add_get("/", count)
    served = serve({"app": await backend(app)})
    home = tmp_path / "untrusting-home"
    home.mkdir()
    browser = await Chromium.launch(home)
    try:
        assert await browser.navigate(served.url("app")) == "net::ERR_CERT_AUTHORITY_INVALID"
    finally:
        await browser.close()
    assert requests == 0


# --- curl -------------------------------------------------------------------------------------

CURL = shutil.which("curl")


async def run(
    argv: list[str], env: dict[str, str] | None = None, timeout_s: float = COMMAND_S
) -> tuple[int, str, str]:
    """Run a client command to its end (the backend serves on this loop meanwhile)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def client_env(home: Path, **extra: str) -> dict[str, str]:
    """An environment naming no CA bundle of its own (so a client trusts what its argv or
    `extra` says, plus the system's), with HOME the test's."""
    env = cli_env(HOME=str(home), **extra)
    for key in ("SSL_CERT_FILE", "SSL_CERT_DIR", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE"):
        if key not in extra:
            env.pop(key, None)
    if "NODE_EXTRA_CA_CERTS" not in extra:
        env.pop("NODE_EXTRA_CA_CERTS", None)
    return env


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("scheme", "flags", "version"),
    [
        pytest.param("https", ["--http2"], "2", id="https-http2"),
        pytest.param("https", ["--http1.1"], "1.1", id="https-http1.1"),
        # curl offers h2 first over TLS, as browsers do
        pytest.param("https", [], "2", id="https-default"),
        # plain HTTP on the same port
        pytest.param("http", ["--http1.1"], "1.1", id="http-http1.1"),
        pytest.param("http", [], "1.1", id="http-default"),
    ],
)
async def test_curl_on_the_one_port(
    serve: ServeFactory,
    backend: BackendFactory,
    scheme: str,
    flags: list[str],
    version: str,
) -> None:
    assert CURL is not None
    served = serve({"app": await backend(page_app(Seen()))})
    host = f"app.localhost:{served.port}"
    code, out, err = await run(
        [CURL, "-q", "-sS", "--max-time", "20", "--cacert", str(served.ca), *flags,
         "--resolve", f"app.localhost:{served.port}:127.0.0.1",
         "-w", "\n%{http_version} %{response_code}", f"{scheme}://{host}/hello"],
        env=client_env(served.home),
    )  # fmt: skip
    assert code == 0, err
    assert out == f"hello from {host}\n{version} 200"


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.timeout(60)
@pytest.mark.parametrize("flag", ["--http2", "--http1.1"])
async def test_curl_without_the_ca_fails_verification(
    serve: ServeFactory, backend: BackendFactory, flag: str
) -> None:
    assert CURL is not None
    served = serve({"app": await backend(page_app(Seen()))})
    code, out, err = await run(
        [CURL, "-q", "-sS", "--max-time", "20", flag,
         "--resolve", f"app.localhost:{served.port}:127.0.0.1", served.url("app", "/hello")],
        env=client_env(served.home),
    )  # fmt: skip
    assert code == 60, err  # CURLE_PEER_FAILED_VERIFICATION
    assert out == ""


# --- Node -------------------------------------------------------------------------------------

NODE = shutil.which("node")

#: Node's https (HTTP/1.1) and http2 clients against NAME on 127.0.0.1:PORT; one JSON line
#: each. `lookup` points the name at 127.0.0.1 (glibc does not resolve *.localhost here)
#: while TLS still sends and verifies the name.
NODE_CLIENTS = r"""
const https = require("node:https");
const http2 = require("node:http2");
const [port, name] = [Number(process.argv[2]), process.argv[3]];
const lookup = (host, opts, cb) =>
  opts && opts.all ? cb(null, [{ address: "127.0.0.1", family: 4 }]) : cb(null, "127.0.0.1", 4);

const h1 = () => new Promise((resolve, reject) => {
  const req = https.request({ host: name, port, path: "/hello", lookup, agent: false }, (res) => {
    let body = "";
    res.setEncoding("utf8");
    res.on("data", (c) => { body += c; });
    res.on("end", () => resolve({ client: "https", version: res.httpVersion, body }));
  });
  req.on("error", reject);
  req.end();
});

const h2 = () => new Promise((resolve, reject) => {
  const session = http2.connect(`https://${name}:${port}`, { lookup });
  session.on("error", reject);
  const req = session.request({ ":path": "/hello" });
  let body = "";
  req.setEncoding("utf8");
  req.on("data", (c) => { body += c; });
  req.on("end", () => { session.close(); resolve({ client: "http2", version: "2.0", body }); });
  // A session's failure (a handshake refused) cancels the stream: report the cause.
  req.on("error", (e) => reject(e.cause || e));
  req.end();
});

setTimeout(() => { console.error("timed out"); process.exit(2); }, 20000).unref();
(async () => {
  for (const [client, run] of [["https", h1], ["http2", h2]]) {
    try { console.log(JSON.stringify(await run())); }
    catch (e) { console.log(JSON.stringify({ client, error: e.code || String(e) })); }
  }
})();
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed")
@pytest.mark.timeout(90)
@pytest.mark.parametrize("trusted", [True, False], ids=["extra-ca-certs", "no-extra-ca"])
async def test_node_verifies_with_node_extra_ca_certs(
    serve: ServeFactory, backend: BackendFactory, tmp_path: Path, trusted: bool
) -> None:
    assert NODE is not None
    served = serve({"api": await backend(page_app(Seen()))})
    script = tmp_path / "clients.js"
    script.write_text(NODE_CLIENTS)
    extra = {"NODE_EXTRA_CA_CERTS": str(served.ca)} if trusted else {}
    code, out, err = await run(
        [NODE, str(script), str(served.port), "api.localhost"],
        env=client_env(served.home, **extra),
    )
    assert code == 0, err
    results = {r["client"]: r for r in map(json.loads, out.splitlines())}
    body = f"hello from api.localhost:{served.port}"
    if trusted:
        assert results == {
            "https": {"client": "https", "version": "1.1", "body": body},
            "http2": {"client": "http2", "version": "2.0", "body": body},
        }
    else:  # the leaf is signed by a CA Node does not know
        assert {r.get("error") for r in results.values()} == {"UNABLE_TO_VERIFY_LEAF_SIGNATURE"}, (
            results
        )


# --- Python: urllib and aiohttp ---------------------------------------------------------------


class LoopbackHTTPSConnection(http.client.HTTPSConnection):
    """An HTTPS connection to 127.0.0.1 for any name: the name is still sent in SNI and
    checked against the certificate (glibc does not resolve *.localhost here)."""

    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(host, *args, **kwargs)
        self._create_connection = self._loopback

    @staticmethod
    def _loopback(address: tuple[str, int], *args: Any) -> socket.socket:
        return socket.create_connection(("127.0.0.1", address[1]), *args)


class LoopbackHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(LoopbackHTTPSConnection, req, context=self._context)  # type: ignore[attr-defined]


def urllib_get(url: str, context: ssl.SSLContext) -> tuple[str, str]:
    """GET `url` with urllib through `context`: the HTTP version and the body."""
    opener = urllib.request.build_opener(LoopbackHTTPSHandler(context=context))
    with opener.open(url, timeout=IO_TIMEOUT_S) as resp:
        version = {10: "1.0", 11: "1.1"}[resp.version]
        return version, resp.read().decode()


class LoopbackResolver(AbstractResolver):
    """aiohttp's resolver for *.localhost: 127.0.0.1, whatever the name."""

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        return [
            ResolveResult(
                hostname=host, host="127.0.0.1", port=port, family=socket.AF_INET, proto=0, flags=0
            )
        ]

    async def close(self) -> None:
        pass


@pytest.mark.timeout(60)
async def test_python_urllib_verifies_with_the_ca(
    serve: ServeFactory, backend: BackendFactory
) -> None:
    served = serve({"api": await backend(page_app(Seen()))})
    url = served.url("api", "/hello")
    trusting = ssl.create_default_context(cafile=str(served.ca))
    assert await asyncio.to_thread(urllib_get, url, trusting) == (
        "1.1",
        f"hello from api.localhost:{served.port}",
    )
    # The system's CAs alone (the test never adds devrouter's to them) do not vouch for it.
    system_only = ssl.create_default_context()
    with pytest.raises(urllib.error.URLError) as refused:
        await asyncio.to_thread(urllib_get, url, system_only)
    assert isinstance(refused.value.reason, ssl.SSLCertVerificationError)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("fast_path", [True, False], ids=["fastpath", "aiohttp"])
async def test_a_websocket_over_http11_tls(
    serve: ServeFactory, backend: BackendFactory, fast_path: bool
) -> None:
    """The other way a browser may carry a wss:// WebSocket: its own HTTP/1.1 TLS connection
    (aiohttp's client speaks no HTTP/2)."""
    seen = Seen()
    served = serve({"app": await backend(page_app(seen))}, fast_path=fast_path)
    context = ssl.create_default_context(cafile=str(served.ca))
    connector = aiohttp.TCPConnector(resolver=LoopbackResolver(), ssl=context)
    timeout = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)
    async with (
        aiohttp.ClientSession(connector=connector, timeout=timeout) as session,
        session.ws_connect(served.url("app", "/ws").replace("https:", "wss:")) as ws,
    ):
        await ws.send_str("ping over HTTP/1.1 TLS")
        msg = await ws.receive(timeout=IO_TIMEOUT_S)
        assert (msg.type, msg.data) == (WSMsgType.TEXT, "ping over HTTP/1.1 TLS")
    assert seen.ws_heads == [{"version": "HTTP/1.1"}]
    entry = await wait_for_request(served.port, lambda e: bool(e.get("websocket")))
    assert (entry["protocol"], entry["status"]) == ("HTTP/1.1 TLS", 101), entry


# --- Vite: hot module replacement over the router's wss:// ------------------------------------


@dataclass
class ViteRig:
    """A real Vite dev server behind `devrouter serve` as vite.localhost, and a trusting
    Chromium on its page over https://."""

    vite_js: Path
    home: Path
    root: Path
    vite: vitedev.Vite
    served: Served
    browser: Chromium

    async def restart(self) -> None:
        """Stop Vite, then start it again on the same port."""
        await self.vite.stop()
        self.vite = await vitedev.Vite.start(self.vite_js, self.root, self.vite.port, self.home)


@pytest.fixture
async def vite_rig(
    serve: ServeFactory, chromium: Callable[[Served], Awaitable[Chromium]], tmp_path: Path
) -> AsyncIterator[Callable[[str | None], Awaitable[ViteRig]]]:
    """`rig = await vite_rig(hmr)`: the project scaffolded, Vite and the router started, the
    page loaded and its HMR socket connected. `hmr="clientPort"` sets server.hmr.clientPort
    to the router's port. Skips when Vite cannot be installed."""
    rigs: list[ViteRig] = []
    vites: list[vitedev.Vite] = []

    async def start(hmr: str | None) -> ViteRig:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        vite_js, why = await asyncio.to_thread(vitedev.install, home)
        if vite_js is None:
            pytest.skip(why)
        vite_port, router_port = free_port(), free_port()
        server: dict[str, object] = {}
        if hmr == "clientPort":
            server["hmr"] = {"clientPort": router_port}
        root = vitedev.scaffold(tmp_path / "project", server)
        vite = await vitedev.Vite.start(vite_js, root, vite_port, home)
        vites.append(vite)
        served = serve({"vite": vite_port}, port=router_port)
        rig = ViteRig(vite_js, home, root, vite, served, await chromium(served))
        rigs.append(rig)
        await rig.browser.goto(rig.served.url("vite"), timeout_s=60)
        await rig.browser.wait_for("document.getElementById('out').textContent === 'version 1'")
        await rig.browser.wait_for_console("[vite] connected", 30)
        return rig

    yield start
    for vite in [*vites, *(rig.vite for rig in rigs)]:  # a restart makes a new one
        await vite.stop()


def hmr_sockets(browser: Chromium) -> list[str]:
    """The URLs of the WebSockets the page opened (Vite's HMR and ping sockets)."""
    return [e["params"]["url"] for e in browser.events if e["method"] == "Network.webSocketCreated"]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(
    "hmr",
    [
        # Vite's client takes the page's host, port and scheme (wss: on an https: page) for
        # its socket when nothing says otherwise: behind the router it needs no setting.
        pytest.param(None, id="no-hmr-config"),
        # The setting guides give for a proxy on another port: the same port, said outright.
        pytest.param("clientPort", id="hmr-clientPort"),
    ],
)
async def test_vite_hot_module_replacement_through_the_router(
    vite_rig: Callable[[str | None], Awaitable[ViteRig]], hmr: str | None
) -> None:
    rig = await vite_rig(hmr)
    browser = rig.browser
    navigation = "performance.getEntriesByType('navigation')[0].nextHopProtocol"
    assert await browser.eval(navigation) == "h2"
    await browser.eval("window.samePage = true")

    (rig.root / "main.js").write_text(vitedev.main_js("version 2"))
    await browser.wait_for("document.getElementById('out').textContent === 'version 2'", 30)
    assert await browser.eval("window.samePage") is True  # updated, not reloaded
    assert any("hmr update" in line for line in rig.vite.lines), rig.vite.lines
    sockets = hmr_sockets(browser)
    assert sockets, "Vite's client opened no WebSocket"
    assert all(u.startswith(f"wss://vite.localhost:{rig.served.port}/") for u in sockets)
    assert browser.errors() == []


@pytest.mark.timeout(300)
async def test_vite_restarting_behind_the_router(
    vite_rig: Callable[[str | None], Awaitable[ViteRig]],
) -> None:
    """Vite's client notices its server went (the HMR socket closes), pings it through the
    router (WebSockets the router answers 502 while nothing listens), and reloads the page
    when it is back; the new page connects its HMR socket again."""
    rig = await vite_rig(None)
    browser = rig.browser
    await browser.eval("window.samePage = true")
    await rig.vite.stop()
    await browser.wait_for_console("server connection lost", 30)
    (rig.root / "main.js").write_text(vitedev.main_js("after the restart"))
    await rig.restart()
    await browser.wait_for(
        "document.getElementById('out')?.textContent === 'after the restart'", 30
    )
    assert await browser.eval("window.samePage") is None  # reloaded
    await browser.wait_for_console("[vite] connected", 30, count=2)
    assert browser.errors() == []


# --- `devrouter trust`: the user's flow, then Chromium ----------------------------------------


def trust_command(served: Served, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`devrouter ARGS --user-only` for HOME=`home` (where Chromium looks for its NSS
    database); the system store is looked for under an empty fake root, so it is never
    found, let alone changed."""
    fake_root = home.parent / "fake-root"
    fake_root.mkdir(exist_ok=True)
    env = client_env(
        home,
        DEVROUTER_HOME=str(served.ca.parent.parent),
        DEVROUTER_TRUST_ROOT=str(fake_root),
    )
    for key in ("SUDO_USER", "SUDO_UID", "SUDO_GID", "SUDO_COMMAND"):
        env.pop(key, None)
    return subprocess.run(
        [sys.executable, "-m", "devrouter", *args, "--user-only"],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=COMMAND_S,
    )


@pytest.mark.timeout(180)
async def test_devrouter_trust_makes_chromium_trust_the_router(
    serve: ServeFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    if reason := missing_tools():
        pytest.skip(reason)
    served = serve({"app": await backend(page_app(Seen()))})
    home = tmp_path / "user"
    home.mkdir()
    page = served.url("app", "/hello")

    added = await asyncio.to_thread(trust_command, served, home, "trust")
    assert added.returncode == 0, added.stdout + added.stderr
    assert "added the devrouter CA to" in added.stdout and ".pki/nssdb" in added.stdout
    again = await asyncio.to_thread(trust_command, served, home, "trust")
    assert again.returncode == 0 and "already trusted by" in again.stdout, again.stdout

    browser = await Chromium.launch(home)
    try:
        await browser.goto(page)
        assert await browser.eval("document.body.textContent") == (
            f"hello from app.localhost:{served.port}"
        )
        assert (
            await browser.eval("performance.getEntriesByType('navigation')[0].nextHopProtocol")
            == "h2"
        )
    finally:
        await browser.close()

    removed = await asyncio.to_thread(trust_command, served, home, "untrust")
    assert removed.returncode == 0, removed.stdout + removed.stderr
    assert "removed the devrouter CA from" in removed.stdout
    shutil.rmtree(home / "profile")  # a fresh profile: nothing remembered from before
    browser = await Chromium.launch(home)
    try:
        assert await browser.navigate(page) == "net::ERR_CERT_AUTHORITY_INVALID"
    finally:
        await browser.close()


# --- the HTTP/2 engine's per-name gate --------------------------------------------------------


@pytest.mark.skipif(CURL is None, reason="curl is not installed")
@pytest.mark.timeout(120)
async def test_streamed_responses_do_not_hold_a_name_from_other_clients(
    serve: ServeFactory, backend: BackendFactory, chromium: Callable[[Served], Awaitable[Chromium]]
) -> None:
    assert CURL is not None
    served = serve({"app": await backend(page_app(Seen()))})
    browser = await chromium(served)
    await browser.goto(served.url("app", "/hello"))
    # One page keeps MAX_STREAMS_PER_NAME streamed responses open, each read to its first
    # line (so each has its response head and is relayed).
    await browser.eval(
        f"""globalThis.open = 0;
        for (let i = 0; i < {MAX_STREAMS_PER_NAME}; i++)
          fetch('/ndjson?i=' + i).then(r => r.body.getReader().read()).then(() => open++);
        true"""
    )
    await browser.wait_for(f"globalThis.open === {MAX_STREAMS_PER_NAME}")
    # Another client asks the same name for a page that answers at once.
    code, out, err = await run(
        [CURL, "-q", "-sS", "--max-time", "5", "--http2", "--cacert", str(served.ca),
         "--resolve", f"app.localhost:{served.port}:127.0.0.1", served.url("app", "/hello")],
        env=client_env(served.home),
    )  # fmt: skip
    assert (code, out) == (0, f"hello from app.localhost:{served.port}"), err


# --- `devrouter run`: the environment a service gets makes its own clients trust the router ---

#: Run by `devrouter run`: each client, trusting only what its environment names, fetches
#: the `app` route over https:// on the router's port (from DEVROUTER_HTTPS_URL).
PROBE = r"""
import http.client, json, os, socket, ssl, subprocess, sys, urllib.parse

port = urllib.parse.urlsplit(os.environ["DEVROUTER_HTTPS_URL"]).port
out = {"env": sorted(k for k in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE",
                                  "CURL_CA_BUNDLE") if k in os.environ)}
curl = subprocess.run(
    ["curl", "-q", "-sS", "--max-time", "10", "--resolve", f"app.localhost:{port}:127.0.0.1",
     f"https://app.localhost:{port}/hello"], capture_output=True, text=True, timeout=20)
out["curl"] = [curl.returncode, curl.stdout or curl.stderr.strip()]
conn = http.client.HTTPSConnection(
    "app.localhost", port, context=ssl.create_default_context(), timeout=10)
conn._create_connection = lambda a, *rest: socket.create_connection(("127.0.0.1", a[1]), *rest)
try:
    conn.request("GET", "/hello")
    out["python"] = [0, conn.getresponse().read().decode()]
except OSError as exc:
    out["python"] = [1, repr(exc)]
node = subprocess.run(["node", sys.argv[1], str(port), "app.localhost"],
                      capture_output=True, text=True, timeout=30)
out["node"] = [json.loads(line) for line in node.stdout.splitlines()]
print("PROBE " + json.dumps(out), flush=True)
"""


@pytest.mark.skipif(CURL is None or NODE is None, reason="curl and node are needed")
@pytest.mark.timeout(90)
async def test_devrouter_run_gives_a_service_clients_that_trust_the_router(
    serve: ServeFactory, backend: BackendFactory, tmp_path: Path
) -> None:
    served = serve({"app": await backend(page_app(Seen()))})
    (tmp_path / "probe.py").write_text(PROBE)
    (tmp_path / "clients.js").write_text(NODE_CLIENTS)
    low = 20000 + (served.port % 400) * 50
    env = client_env(
        served.home,
        DEVROUTER_HOME=str(served.ca.parent.parent),
        DEVROUTER_LISTEN=f"127.0.0.1:{served.port}",
        DEVROUTER_PORTS=f"{low}-{low + 49}",
    )
    code, out, err = await run(
        [sys.executable, "-m", "devrouter", "run", "probe", "--",
         sys.executable, str(tmp_path / "probe.py"), str(tmp_path / "clients.js")],
        env=env,
        timeout_s=60,
    )  # fmt: skip
    assert code == 0, out + err
    lines = [line for line in (out + err).splitlines() if line.startswith("PROBE ")]
    assert lines, out + err
    probe = json.loads(lines[0].removeprefix("PROBE "))
    body = f"hello from app.localhost:{served.port}"
    assert probe["node"] == [
        {"client": "https", "version": "1.1", "body": body},
        {"client": "http2", "version": "2.0", "body": body},
    ]
    if "SSL_CERT_FILE" not in probe["env"]:  # no system bundle to add the CA to
        pytest.skip("this system has no CA bundle: only NODE_EXTRA_CA_CERTS is given")
    assert probe["env"] == ["CURL_CA_BUNDLE", "NODE_EXTRA_CA_CERTS", "REQUESTS_CA_BUNDLE",
                            "SSL_CERT_FILE"]  # fmt: skip
    assert probe["curl"] == [0, body]
    assert probe["python"] == [0, body]
