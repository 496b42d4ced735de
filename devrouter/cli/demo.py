"""Two small built-in services for `devrouter demo`: a web page and a JSON API.

The page exercises what a real frontend needs through the router: a same-origin path route
to the API (`/api` on web.localhost goes to the API service), a server-sent event stream and
a WebSocket echo, so a newcomer sees each one work by name.
"""

from __future__ import annotations

import asyncio
import json
import time

from aiohttp import WSMsgType, web

from ..core.model import Config, PathRoute, Route, Upstream

PAGE = """<!doctype html><html><head><meta charset=utf-8><title>devrouter demo</title>
<style>body{font:15px/1.5 system-ui,sans-serif;max-width:42em;margin:3em auto;padding:0 1em}
code{background:#f3f3f3;padding:0 .3em}.ok{color:#080}.bad{color:#b00}</style></head><body>
<h1>Hello from <code>web.localhost</code></h1>
<p>This page is served by a demo backend on <code>127.0.0.1:%(web_port)d</code>, reached by
name through devrouter. Each line below goes through the router too:</p>
<ul>
<li>JSON from the API service (path route <code>/api</code>): <span id=api>...</span></li>
<li>Server-sent events: <span id=sse>...</span></li>
<li>WebSocket echo: <span id=ws>...</span></li>
</ul>
<p>The API also answers on its own name: <a href="http://api.localhost:%(router_port)d/api/time">
api.localhost:%(router_port)d/api/time</a>. The dashboard: <a href="http://localhost:%(router_port)d/">
localhost:%(router_port)d</a>.</p>
<script>
const $ = id => document.getElementById(id);
const show = (id, text, ok) => { $(id).textContent = text; $(id).className = ok ? 'ok' : 'bad'; };
fetch('/api/time').then(r => r.json()).then(j => show('api', JSON.stringify(j), true))
  .catch(e => show('api', String(e), false));
const es = new EventSource('/events');
es.onmessage = e => show('sse', 'tick ' + e.data, true);
const ws = new WebSocket('ws://' + location.host + '/ws');
ws.onopen = () => ws.send('hello through devrouter');
ws.onmessage = e => show('ws', 'echoed: ' + e.data, true);
ws.onerror = () => show('ws', 'failed', false);
</script></body></html>
"""

#: Interval between demo server-sent events, in seconds.
TICK_S = 1.0


def web_app(router_port: int) -> web.Application:
    async def index(request: web.Request) -> web.Response:
        port = request.transport.get_extra_info("sockname")[1] if request.transport else 0
        html = PAGE % {"web_port": port, "router_port": router_port}
        return web.Response(text=html, content_type="text/html")

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await resp.prepare(request)
        n = 0
        try:
            while True:
                n += 1
                await resp.write(f"data: {n}\n\n".encode())
                await asyncio.sleep(TICK_S)
        except ConnectionResetError:  # the page was closed
            return resp

    async def ws(request: web.Request) -> web.WebSocketResponse:
        sock = web.WebSocketResponse()
        await sock.prepare(request)
        async for msg in sock:
            if msg.type is WSMsgType.TEXT:
                await sock.send_str(msg.data)
        return sock

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get("/events", events)
    app.router.add_get("/ws", ws)
    return app


def api_app() -> web.Application:
    async def now(request: web.Request) -> web.Response:
        return web.Response(
            text=json.dumps({"service": "api", "time": time.time(), "path": request.path_qs}),
            content_type="application/json",
        )

    app = web.Application()
    app.router.add_get("/{tail:.*}", now)
    return app


async def start_services(router_port: int) -> tuple[list[web.AppRunner], Config]:
    """Start both services on free loopback ports; return their runners and a config."""
    runners: list[web.AppRunner] = []
    ports: list[int] = []
    for app in (web_app(router_port), api_app()):
        runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        ports.append(int(runner.addresses[0][1]))
    web_port, api_port = ports
    api = Upstream(api_port, ("127.0.0.1",))
    config = Config(
        source="<demo>",
        routes=(
            Route("api", api, line=0, source="demo"),
            Route(
                "web", Upstream(web_port, ("127.0.0.1",)), (PathRoute("/api", api),), source="demo"
            ),
        ),
    )
    return runners, config
