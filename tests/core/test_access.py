"""devrouter.core.access: the optional secret a route, or the whole router, requires.

Unit tests for the credential rules and the secret loading (environment variable, owner-only
file), then the behaviour through a real router on both engines: 401s that reach no backend,
the router's credential never forwarded, an app's own Authorization left alone, the
dashboard behind a router-wide secret, WebSockets, reloads, and `devrouter check`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web
from conftest import IO_TIMEOUT_S, cli_env, ws_echo_text

from devrouter.config.reload import Reloader
from devrouter.config.schema import parse_config
from devrouter.core.access import MIN_SECRET_CHARS, Verdict, load_secrets, verdict
from devrouter.core.errors import ConfigError
from devrouter.core.model import ACCESS_OFF, AccessRule, Config
from devrouter.core.state import State

TOKEN = "t0ken-for-tests-0123456789abcdef"
PASSWORD = "correct-horse-battery-staple"
TIMEOUT = aiohttp.ClientTimeout(total=IO_TIMEOUT_S)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def rule(secret: str | None) -> AccessRule:
    return AccessRule(env="X", line=1, secret=secret)


# --- the credential rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("authorization", "token", "expected"),
    [
        (f"Bearer {TOKEN}", None, Verdict.AUTHORIZATION),
        (f"bearer   {TOKEN}  ", None, Verdict.AUTHORIZATION),
        (basic("anyone", TOKEN), None, Verdict.AUTHORIZATION),
        (basic("", TOKEN), None, Verdict.AUTHORIZATION),
        (None, TOKEN, Verdict.TOKEN_HEADER),
        ("Bearer app-token", TOKEN, Verdict.TOKEN_HEADER),  # the app's own Authorization
        (None, None, Verdict.DENIED),
        (f"Bearer {TOKEN}x", None, Verdict.DENIED),
        (f"Bearer {TOKEN[:-1]}", None, Verdict.DENIED),
        (basic("anyone", "wrong"), None, Verdict.DENIED),
        ("Basic !!!not-base64!!!", None, Verdict.DENIED),
        ("Basic " + base64.b64encode(TOKEN.encode()).decode(), None, Verdict.DENIED),  # no colon
        (f"Digest {TOKEN}", None, Verdict.DENIED),
        (None, "wrong", Verdict.DENIED),
    ],
)
def test_token_secret(authorization: str | None, token: str | None, expected: Verdict) -> None:
    assert verdict(rule(TOKEN), authorization, token) is expected


@pytest.mark.parametrize(
    ("authorization", "token", "expected"),
    [
        (basic("ana", PASSWORD), None, Verdict.AUTHORIZATION),
        (basic("bob", PASSWORD), None, Verdict.DENIED),
        (basic("ana", "nope"), None, Verdict.DENIED),
        (f"Bearer ana:{PASSWORD}", None, Verdict.DENIED),  # user:password is Basic only
        (None, f"ana:{PASSWORD}", Verdict.DENIED),
        (None, PASSWORD, Verdict.DENIED),
    ],
)
def test_user_password_secret(
    authorization: str | None, token: str | None, expected: Verdict
) -> None:
    assert verdict(rule(f"ana:{PASSWORD}"), authorization, token) is expected


def test_a_rule_whose_secret_was_never_loaded_admits_nobody() -> None:
    assert verdict(rule(None), f"Bearer {TOKEN}", TOKEN) is Verdict.DENIED


# --- the config ----------------------------------------------------------------------------


def test_access_in_the_config() -> None:
    config = parse_config(
        "access:\n  env: ROUTER_SECRET\n"
        "routes:\n"
        "  api: 4001\n"
        "  admin:\n    port: 4002\n    access:\n      file: ~/.admin-secret\n"
        "  docs:\n    port: 4003\n    access: false\n",
        "c.yaml",
        own_ports=(),
    )
    assert config.access == AccessRule(env="ROUTER_SECRET", line=2)
    routes = {r.name: r for r in config.routes}
    assert routes["api"].access is None  # the top-level rule, filled in by State
    assert routes["admin"].access == AccessRule(file="~/.admin-secret", line=8)
    assert routes["docs"].access == ACCESS_OFF


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("access:\n  env: A\n  file: b\nroutes: {}\n", 2, "exactly one of env"),
        ("access: {}\nroutes: {}\n", 1, "exactly one of env"),
        ("access:\n  envv: A\nroutes: {}\n", 2, "did you mean 'env'"),
        ("access: false\nroutes: {}\n", 1, "must be a mapping"),
        ("access: secret123\nroutes: {}\n", 1, "must be a mapping"),
        ("routes:\n  api:\n    port: 1\n    access: yes-please\n", 4, "or false"),
        ("routes:\n  api:\n    port: 1\n    access:\n      env: 12\n", 5, "must be text"),
        ("routes:\n  api:\n    port: 1\n    access:\n      env: [A]\n", 5, "single value"),
    ],
)
def test_bad_access_is_one_line_with_its_place(text: str, line: int, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, "c.yaml", own_ports=())
    assert str(info.value).startswith(f"c.yaml:{line}: "), str(info.value)
    assert words in str(info.value)


def load(text: str, environ: dict[str, str], source: str = "<test>") -> Config:
    return load_secrets(parse_config(text, source, own_ports=()), environ)


def test_secret_from_the_environment() -> None:
    config = load("access:\n  env: S\nroutes:\n  api: 1\n", {"S": f"  {TOKEN}\n"})
    assert config.access is not None and config.access.secret == TOKEN
    state = State(config)
    (route,) = state.snapshot.table.routes
    assert route.access is config.access  # the router-wide rule, on the route


def test_missing_environment_variable_names_the_file_line_and_route(tmp_path: Path) -> None:
    source = str(tmp_path / "c.yaml")
    with pytest.raises(ConfigError) as info:
        load("routes:\n  api:\n    port: 1\n    access:\n      env: API_SECRET\n", {}, source)
    msg = str(info.value)
    assert msg.startswith(f"{source}:5: route 'api': "), msg
    assert "API_SECRET is not set" in msg


def test_secret_too_short_is_refused_with_how_to_make_one() -> None:
    with pytest.raises(ConfigError) as info:
        load("access:\n  env: S\nroutes: {}\n", {"S": "x" * (MIN_SECRET_CHARS - 1)})
    assert "shorter than" in str(info.value) and "token_urlsafe" in str(info.value)
    with pytest.raises(ConfigError):  # the password part is what counts for user:password
        load("access:\n  env: S\nroutes: {}\n", {"S": "a-very-long-user-name:short"})


def test_secret_must_be_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load("access:\n  env: S\nroutes: {}\n", {"S": f"{TOKEN}\n{TOKEN}"})
    assert "one line" in str(info.value)


def write_secret(path: Path, text: str, mode: int = 0o600) -> Path:
    path.write_text(text)
    path.chmod(mode)
    return path


def test_secret_from_an_owner_only_file_relative_to_the_config(tmp_path: Path) -> None:
    write_secret(tmp_path / "secret", TOKEN + "\n")
    config = load(
        "access:\n  file: secret\nroutes: {}\n", {}, source=str(tmp_path / "devrouter.yaml")
    )
    assert config.access is not None and config.access.secret == TOKEN


@pytest.mark.parametrize("mode", [0o644, 0o640, 0o604, 0o660])
def test_secret_file_others_can_read_is_refused(tmp_path: Path, mode: int) -> None:
    secret = write_secret(tmp_path / "secret", TOKEN, mode)
    with pytest.raises(ConfigError) as info:
        load(f"access:\n  file: {secret}\nroutes: {{}}\n", {}, str(tmp_path / "c.yaml"))
    msg = str(info.value)
    assert msg.startswith(f"{tmp_path / 'c.yaml'}:2: "), msg
    assert f"chmod 600 {secret}" in msg


def test_missing_secret_file_and_a_directory_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(f"access:\n  file: {tmp_path / 'nope'}\nroutes: {{}}\n", {})
    assert "does not exist" in str(info.value)
    (tmp_path / "d").mkdir(mode=0o700)
    with pytest.raises(ConfigError) as info:
        load(f"access:\n  file: {tmp_path / 'd'}\nroutes: {{}}\n", {})
    assert "not a regular file" in str(info.value)


def test_route_access_false_opens_one_route_of_a_protected_router() -> None:
    config = load(
        "access:\n  env: S\nroutes:\n  api: 1\n  docs:\n    port: 2\n    access: false\n",
        {"S": TOKEN},
    )
    table = State(config).snapshot.table
    assert table.lookup("api") is not None and table.lookup("api").access is not None  # type: ignore[union-attr]
    docs = table.lookup("docs")
    assert docs is not None and docs.access is None


# --- through the router --------------------------------------------------------------------


def echo_app() -> web.Application:
    """Answers with the request headers it got, as JSON; WebSocket echo at /ws."""

    async def headers(request: web.Request) -> web.Response:
        return web.json_response({k.lower(): v for k, v in request.headers.items()})

    app = web.Application()
    app.router.add_get("/ws", ws_echo_text)
    app.router.add_route("*", "/{tail:.*}", headers)
    return app


async def get(
    port: int, host: str, path: str = "/", headers: dict[str, str] | None = None
) -> tuple[int, dict[str, str], Any]:
    async with (
        aiohttp.ClientSession(timeout=TIMEOUT) as s,
        s.get(f"http://127.0.0.1:{port}{path}", headers={"Host": host, **(headers or {})}) as resp,
    ):
        body = await resp.read()
        try:
            data: Any = await resp.json(content_type=None)
        except ValueError:
            data = body.decode(errors="replace")
        return resp.status, dict(resp.headers), data


async def protected(router: Any, backend: Any, top: str = "") -> Any:
    port = await backend(echo_app())
    text = (
        f"{top}routes:\n"
        f"  api:\n    port: {port}\n    access:\n      env: API_SECRET\n"
        f"  open: {port}\n"
    )
    return await router(load(text, {"API_SECRET": TOKEN, "ROUTER_SECRET": PASSWORD + "-router"}))


async def test_no_credential_is_401_with_a_browser_challenge(router, backend) -> None:
    r = await protected(router, backend)
    status, headers, body = await get(r.port, "api.localhost", "/x")
    assert status == 401
    assert headers["WWW-Authenticate"].startswith('Basic realm="devrouter api.localhost"')
    assert "requires a secret" in body and "X-Devrouter-Token" in body
    assert r.router.metrics.in_flight("api") == 0
    assert r.router.metrics.routes.get("api") is None  # the backend was never asked
    for bad in (f"Bearer {TOKEN}0", basic("me", "nope"), "Basic ***"):
        status, _, _ = await get(r.port, "api.localhost", "/x", {"Authorization": bad})
        assert status == 401, bad


@pytest.mark.parametrize(
    "presented",
    [
        {"Authorization": f"Bearer {TOKEN}"},
        {"Authorization": basic("whoever", TOKEN)},
    ],
    ids=["bearer", "basic"],
)
async def test_router_credential_is_not_forwarded(router, backend, presented) -> None:
    r = await protected(router, backend)
    status, _, seen = await get(r.port, "api.localhost", "/x", presented)
    assert status == 200
    assert "authorization" not in seen
    assert seen["host"] == "api.localhost"


async def test_token_header_leaves_the_apps_own_authorization_alone(router, backend) -> None:
    r = await protected(router, backend)
    status, _, seen = await get(
        r.port,
        "api.localhost",
        "/x",
        {"X-Devrouter-Token": TOKEN, "Authorization": "Bearer the-apps-own-token"},
    )
    assert status == 200
    assert seen["authorization"] == "Bearer the-apps-own-token"
    assert "x-devrouter-token" not in seen


async def test_open_route_forwards_authorization_and_never_the_token_header(
    router, backend
) -> None:
    r = await protected(router, backend)
    status, _, seen = await get(
        r.port,
        "open.localhost",
        "/",
        {"Authorization": "Bearer app", "X-Devrouter-Token": "not-for-the-app"},
    )
    assert status == 200
    assert seen["authorization"] == "Bearer app"
    assert "x-devrouter-token" not in seen


async def test_router_wide_secret_covers_routes_dashboard_and_404s(router, backend) -> None:
    r = await protected(router, backend, top="access:\n  env: ROUTER_SECRET\n")
    router_secret = {"Authorization": f"Bearer {PASSWORD}-router"}
    for host, path in [
        ("open.localhost", "/"),
        ("localhost", "/"),
        ("localhost", "/api/status"),
        ("localhost", "/metrics"),
        ("nosuch.localhost", "/"),  # its 404 page would list the routes
    ]:
        status, headers, _ = await get(r.port, host, path)
        assert status == 401, (host, path)
        assert "WWW-Authenticate" in headers
        status, _, _ = await get(r.port, host, path, router_secret)
        assert status == (404 if host.startswith("nosuch") else 200), (host, path)
    # a route with its own rule takes only its own secret
    assert (await get(r.port, "api.localhost", "/", router_secret))[0] == 401
    assert (await get(r.port, "api.localhost", "/", {"X-Devrouter-Token": TOKEN}))[0] == 200


async def test_websocket_needs_the_secret_too(router, backend) -> None:
    r = await protected(router, backend)
    url = f"http://127.0.0.1:{r.port}/ws"
    async with aiohttp.ClientSession(timeout=TIMEOUT) as s:
        with pytest.raises(aiohttp.WSServerHandshakeError) as info:
            await s.ws_connect(url, headers={"Host": "api.localhost"})
        assert info.value.status == 401
        async with s.ws_connect(
            url, headers={"Host": "api.localhost", "Authorization": f"Bearer {TOKEN}"}
        ) as ws:
            await ws.send_str("hello")
            msg = await asyncio.wait_for(ws.receive(), IO_TIMEOUT_S)
            assert msg.data == "hello"


async def test_reload_adds_a_secret_and_a_bad_one_keeps_the_last_good_config(
    router, backend, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = await backend(echo_app())
    path = tmp_path / "devrouter.yaml"
    path.write_text(f"routes:\n  api: {port}\n")
    r = await router(parse_config(path.read_text(), str(path), own_ports=()))
    reloader = Reloader(r.state, path, ())
    assert (await get(r.port, "api.localhost"))[0] == 200

    write_secret(tmp_path / "secret", TOKEN)
    path.write_text(f"access:\n  file: secret\nroutes:\n  api: {port}\n")
    assert reloader.apply()
    assert (await get(r.port, "api.localhost"))[0] == 401
    assert (await get(r.port, "api.localhost", "/", {"X-Devrouter-Token": TOKEN}))[0] == 200

    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    path.write_text(f"access:\n  env: NOT_SET_ANYWHERE\nroutes:\n  api: {port}\n")
    assert not reloader.apply()
    assert r.state.last_error is not None and "NOT_SET_ANYWHERE" in r.state.last_error
    assert (await get(r.port, "api.localhost"))[0] == 401  # the last good rule holds
    assert (await get(r.port, "api.localhost", "/", {"X-Devrouter-Token": TOKEN}))[0] == 200


def run_check(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devrouter", "check", "--config", str(tmp_path / "c.yaml")],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(HOME=str(tmp_path), **env),
    )


def test_check_names_a_missing_secret_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        yaml.safe_dump({"routes": {"api": {"port": 4001, "access": {"env": "API_SECRET"}}}})
    )
    res = run_check(tmp_path)
    assert res.returncode != 0
    assert "Traceback" not in res.stderr
    assert "API_SECRET is not set" in res.stderr
    assert res.stderr.count("\n") <= 2, res.stderr
    assert run_check(tmp_path, API_SECRET=TOKEN).returncode == 0


def test_check_refuses_a_world_readable_secret_file(tmp_path: Path) -> None:
    write_secret(tmp_path / "secret", TOKEN, 0o644)
    (tmp_path / "c.yaml").write_text("access:\n  file: secret\nroutes:\n  api: 4001\n")
    res = run_check(tmp_path)
    assert res.returncode != 0 and "chmod 600" in res.stderr, res.stderr
    os.chmod(tmp_path / "secret", 0o600)
    assert run_check(tmp_path).returncode == 0


def test_serve_says_at_start_what_requires_a_secret(cli: Any, tmp_path: Path) -> None:
    (tmp_path / "c.yaml").write_text(
        "access:\n  env: ROUTER_SECRET\nroutes:\n  api: 4001\n  docs:\n    port: 4002\n"
        "    access: false\n"
    )
    env = cli_env(HOME=str(tmp_path), ROUTER_SECRET=TOKEN)
    p = cli("serve", "--config", str(tmp_path / "c.yaml"), env=env)
    line = p.read_until("access:")
    assert "the dashboard and every route require a secret except docs" in line
    assert TOKEN not in line
