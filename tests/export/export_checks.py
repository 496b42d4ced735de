"""The requests every engine test sends through an exported config, the same cases as the
core tests: host routing (exact, case, unknown), wildcards at any depth, path routes by whole
segment and longest prefix, an IPv6 target and the ::1 fallback of a bare port, the
forwarding fields, a WebSocket echo, an event stream arriving unbuffered, a multi-MiB
upload, and basic auth on a route with `access`."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import os
import subprocess
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from conftest import IO_TIMEOUT_S, cli_env
from export_engines import Backend

UPLOAD_BYTES = 8 * 1024 * 1024
SECRET_ENV = "DEVROUTER_TEST_EXPORT_SECRET"
PASSWORD = "correct-horse-battery-staple"

StartApp = Callable[..., Awaitable[int]]


@dataclass
class Scenario:
    config: Path
    backends: dict[str, Backend]


async def start_scenario(start: StartApp, tmp: Path) -> Scenario:
    """The backends, and a config that routes to them with every feature the engines share."""
    backends = {tag: Backend(tag) for tag in ("api", "web", "uploads", "shop", "admin", "six")}
    backends["v6only"] = Backend("v6only")
    ports = {tag: await start(b.app()) for tag, b in backends.items() if tag not in ("six",)}
    ports["six"] = await start(backends["six"].app(), host="::1")
    ports["v6only"] = await start(backends["v6only"].app(), host="::1")
    routes: dict[str, Any] = {
        "api": ports["api"],
        "web": {
            "port": ports["web"],
            "paths": {"/api": ports["api"], "/api/uploads": {"port": ports["uploads"]}},
        },
        "*.shop": ports["shop"],
        "admin.shop": ports["admin"],
        "six": {"target": f"[::1]:{ports['six']}"},
        "v6only": ports["v6only"],
        "secret": {"port": ports["api"], "access": {"env": SECRET_ENV}, "timeout": 30},
    }
    config = tmp / "devrouter.yaml"
    config.write_text(yaml.safe_dump({"timeout": 20, "routes": routes}))
    return Scenario(config, backends)


def export(fmt: str, config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`devrouter export` as a user runs it: the real CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "devrouter", "export", fmt, "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(),
    )


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


async def _get(
    session: aiohttp.ClientSession, port: int, host: str, path: str = "/", **headers: str
) -> tuple[int, Any]:
    async with session.get(
        f"http://127.0.0.1:{port}{path}", headers={"Host": host, **headers}
    ) as resp:
        body = await resp.read()
        if resp.content_type == "application/json":
            return resp.status, json.loads(body)
        return resp.status, body


async def exercise(port: int, scenario: Scenario, forwarded: bool) -> None:
    """Every case, through the engine on 127.0.0.1:`port`; `forwarded`: the engine sets
    Forwarded (RFC 7239) too."""
    timeout = aiohttp.ClientTimeout(total=60, sock_read=IO_TIMEOUT_S)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await _routing(session, port)
        await _fields(session, port, forwarded)
        await _websocket(session, port)
        await _event_stream(session, port, scenario)
        await _upload(session, port)
        await _access(session, port)


async def _routing(session: aiohttp.ClientSession, port: int) -> None:
    cases = [
        ("api.localhost", "/", "api"),
        ("API.localhost", "/x?y=1", "api"),
        ("web.localhost", "/", "web"),
        ("web.localhost", "/api", "api"),
        ("web.localhost", "/api/users", "api"),
        ("web.localhost", "/api/uploads", "uploads"),
        ("web.localhost", "/api/uploads/7", "uploads"),
        ("web.localhost", "/apiary", "web"),
        ("web.localhost", "/API", "web"),
        ("a.shop.localhost", "/", "shop"),
        ("x.y.shop.localhost", "/", "shop"),
        ("admin.shop.localhost", "/", "admin"),
        ("x.admin.shop.localhost", "/", "shop"),
        ("six.localhost", "/", "six"),
        ("v6only.localhost", "/", "v6only"),
    ]
    for host, path, tag in cases:
        status, body = await _get(session, port, host, path)
        assert status == 200, (host, path, status, body)
        assert body["backend"] == tag, (host, path, body["backend"])
        assert body["path"] == path
        assert body["headers"]["host"] == host
    for host in ("nope.localhost", "shop.localhost"):
        status, _ = await _get(session, port, host)
        assert status == 404, (host, status)


async def _fields(session: aiohttp.ClientSession, port: int, forwarded: bool) -> None:
    status, body = await _get(
        session,
        port,
        "api.localhost",
        "/fields",
        **{"X-Real-IP": "6.6.6.6", "X-Devrouter-Token": "t" * 20, "Forwarded": "for=6.6.6.6"},
    )
    assert status == 200
    h = body["headers"]
    assert h["x-forwarded-for"].split(",")[-1].strip() == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"] == "api.localhost"
    assert h["x-forwarded-port"] == str(port)
    assert h.get("x-real-ip") != "6.6.6.6"
    assert "x-devrouter-token" not in h
    if forwarded:
        assert h["forwarded"] == 'for=127.0.0.1;host="api.localhost";proto=http'
    else:
        assert "forwarded" not in h


async def _websocket(session: aiohttp.ClientSession, port: int) -> None:
    async with session.ws_connect(
        f"http://127.0.0.1:{port}/ws", headers={"Host": "api.localhost"}
    ) as ws:
        for text in ("hello", "again"):
            await ws.send_str(text)
            msg = await ws.receive(timeout=IO_TIMEOUT_S)
            assert msg.data == f"api:{text}"


async def _event_stream(session: aiohttp.ClientSession, port: int, scenario: Scenario) -> None:
    release = scenario.backends["api"].release
    release.clear()
    async with session.get(
        f"http://127.0.0.1:{port}/events", headers={"Host": "api.localhost"}
    ) as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        # the backend holds the second event until the first has arrived here
        first = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), IO_TIMEOUT_S)
        assert first == b"data: first\n\n"
        release.set()
        second = await asyncio.wait_for(resp.content.readuntil(b"\n\n"), IO_TIMEOUT_S)
        assert second == b"data: second\n\n"


async def _upload(session: aiohttp.ClientSession, port: int) -> None:
    data = os.urandom(UPLOAD_BYTES)
    async with session.post(
        f"http://127.0.0.1:{port}/upload", data=io.BytesIO(data), headers={"Host": "api.localhost"}
    ) as resp:
        assert resp.status == 200, await resp.text()
        body = await resp.json()
    assert body == {
        "backend": "api",
        "size": UPLOAD_BYTES,
        "sha256": hashlib.sha256(data).hexdigest(),
    }


async def _access(session: aiohttp.ClientSession, port: int) -> None:
    status, _ = await _get(session, port, "secret.localhost")
    assert status == 401
    status, _ = await _get(
        session, port, "secret.localhost", Authorization=basic("devrouter", "wrong-password-x")
    )
    assert status == 401
    status, body = await _get(
        session, port, "secret.localhost", Authorization=basic("devrouter", PASSWORD)
    )
    assert status == 200
    assert body["backend"] == "api"
    assert "authorization" not in body["headers"]  # the router's credential stays with it
