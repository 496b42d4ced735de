"""The Caddyfile export: its text, `caddy validate` of the example config's export, and
Caddy running an export with real backends behind it (tests/export/export_checks.py)."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest
from conftest import BackendFactory, free_port, make_config
from export_checks import PASSWORD, exercise, export, start_scenario
from export_engines import caddy_env, caddyfile, find_binary, run_caddy

from devrouter.export import caddy
from devrouter.export.plan import make_plan

ROOT = Path(__file__).resolve().parents[2]
CADDY = find_binary("caddy")
needs_caddy = pytest.mark.skipif(CADDY is None, reason="caddy is not installed (apt: caddy)")


def _hash_password(password: str) -> str:
    assert CADDY is not None
    argv = [CADDY, "hash-password", "--plaintext", password]
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True).stdout


def _validate(tmp_path: Path, text: str, **env: str) -> subprocess.CompletedProcess[str]:
    assert CADDY is not None
    conf = tmp_path / "Caddyfile"
    conf.write_text(caddyfile(text))
    return subprocess.run(
        [CADDY, "validate", "--config", str(conf), "--adapter", "caddyfile"],
        capture_output=True,
        text=True,
        timeout=60,
        env=caddy_env(tmp_path, **env),
    )


def test_a_wildcard_is_a_site_and_a_host_regexp_for_deeper_names() -> None:
    plan = make_plan(make_config({"*.shop": 4200, "*.a.shop": 4201, "x": 4000}))
    text = caddy.render(plan).text
    assert "http://*.shop.localhost:80 {" in text
    assert "http://:80 {" in text
    # the deeper wildcard's matcher comes first: x.y.a.shop is *.a.shop's
    deep = text.index('@devrouter-wildcard-a-shop header_regexp Host "(?i)^.+\\.a\\.shop')
    assert deep < text.index('@devrouter-wildcard-shop header_regexp Host "(?i)^.+\\.shop')


def test_access_reads_the_hash_from_the_environment_and_never_holds_the_secret() -> None:
    config = make_config({"api": {"port": 4001, "access": {"env": "API_SECRET"}}})
    rendered = caddy.render(make_plan(config))
    assert "{$DEVROUTER_API_USER:devrouter} {$DEVROUTER_API_HASH}" in rendered.text
    assert "header_up -Authorization" in rendered.text
    assert any("access" in str(g) and "$API_SECRET" in str(g) for g in rendered.gaps)


def test_paths_are_case_sensitive_whole_segment_regexps_longest_first() -> None:
    plan = make_plan(make_config({"web": {"port": 1, "paths": {"/a": 2, "/a/b": 3, "/s/": 4}}}))
    text = caddy.render(plan).text
    first, second, third = (
        text.index('"^/a/b(/|$)"'),
        text.index('"^/s/"'),
        text.index('"^/a(/|$)"'),
    )
    assert first < second < third


@needs_caddy
@pytest.mark.parametrize(
    "args",
    [(), ("--domain", "dev.example.com", "--upstream-host", "app.internal", "--port", "8080")],
)
def test_caddy_validates_the_export_of_the_example_config(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    done = export("caddy", ROOT / "config.example.yaml", *args)
    assert done.returncode == 0, done.stderr
    checked = _validate(tmp_path, done.stdout)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "Valid configuration" in checked.stdout + checked.stderr


@needs_caddy
def test_caddy_refuses_an_access_route_until_its_hash_is_set(tmp_path: Path) -> None:
    config = make_config({"api": {"port": 4001, "access": {"env": "S"}}})
    text = caddy.render(make_plan(config)).text
    refused = _validate(tmp_path, text)
    assert refused.returncode != 0
    assert "username and password cannot be empty" in refused.stderr
    hashed = _hash_password(PASSWORD).strip()
    assert _validate(tmp_path, text, DEVROUTER_API_HASH=hashed).returncode == 0


@needs_caddy
@pytest.mark.timeout(120)
async def test_caddy_serves_the_export(backend: BackendFactory, tmp_path: Path) -> None:
    assert CADDY is not None
    scenario = await start_scenario(backend, tmp_path)
    port = free_port()
    done = export("caddy", scenario.config, "--port", str(port), "--bind", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert "not expressed in caddy: Forwarded" in done.stderr
    hashed = (await asyncio.to_thread(_hash_password, PASSWORD)).strip()
    with run_caddy(CADDY, tmp_path, done.stdout, port, DEVROUTER_SECRET_HASH=hashed):
        await exercise(port, scenario, forwarded=False)
