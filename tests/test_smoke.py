import aiohttp
from aiohttp import web

from conftest import make_config, raw_exchange


async def test_routes_by_name(backend, router):
    async def hello(request: web.Request) -> web.Response:
        return web.Response(text=f"hi {request.headers['Host']}")

    app = web.Application()
    app.router.add_get("/", hello)
    port = await backend(app)
    r = await router(make_config({"api": port}))
    async with aiohttp.ClientSession() as s:
        async with s.get(r.url("api"), headers={"Host": "api.localhost:7355"}) as resp:
            assert resp.status == 200
            assert await resp.text() == "hi api.localhost:7355"
    raw = await raw_exchange(r.port, b"GET / HTTP/1.1\r\nHost: api.localhost\r\nConnection: close\r\n\r\n")
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")


def test_cli_serve(cli, tmp_path):
    cfg = tmp_path / "devrouter.yaml"
    cfg.write_text("routes:\n  api: 4001\n")
    p = cli("serve", "--config", str(cfg))
    assert p.proc.poll() is None
