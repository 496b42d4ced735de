"""The nginx export: its text, `nginx -t` of the example config's export, and nginx running
an export with real backends behind it (tests/export/export_checks.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import BackendFactory, free_port, make_config
from export_checks import PASSWORD, exercise, export, start_scenario
from export_engines import find_binary, nginx_test, run_nginx

from devrouter.export import nginx
from devrouter.export.plan import ExportOptions, make_plan

ROOT = Path(__file__).resolve().parents[2]
NGINX = find_binary("nginx")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (apt: nginx)")


def _locations(text: str, server: str) -> list[str]:
    block = text[text.index(f"server_name {server};") :]
    block = block[: block.index("\n}\n")]
    return [line.strip() for line in block.splitlines() if line.strip().startswith("location")]


@pytest.mark.parametrize(
    ("paths", "expected"),
    [
        ({}, ['location "/" {']),
        (
            {"/api": 2},
            ['location "/" {', 'location = "/api" {', 'location "/api/" {'],
        ),
        # a prefix ending in / takes only what is below it; /s itself stays with the name's
        # own backend (and nginx does not redirect it to /s/)
        ({"/s/": 2}, ['location "/" {', 'location = "/s" {', 'location "/s/" {']),
        ({"/": 2}, ['location "/" {']),
    ],
)
def test_locations_match_whole_segments(paths: dict[str, int], expected: list[str]) -> None:
    plan = make_plan(make_config({"web": {"port": 1, "paths": paths}}))
    assert _locations(nginx.render(plan).text, "web.localhost") == expected


def test_a_prefix_and_the_same_prefix_with_a_slash_each_keep_their_backend() -> None:
    plan = make_plan(make_config({"web": {"port": 1, "paths": {"/a": 2, "/a/": 3}}}))
    text = nginx.render(plan).text
    block = text[text.index("server_name web.localhost;") :]
    assert 'location = "/a" {\n        proxy_pass http://devrouter_2;' in block
    assert 'location "/a/" {\n        proxy_pass http://devrouter_3;' in block


def test_a_bare_port_has_a_backup_on_ipv6_loopback_and_upstream_host_replaces_both() -> None:
    config = make_config({"api": 4001})
    text = nginx.render(make_plan(config)).text
    assert "server 127.0.0.1:4001;\n    server [::1]:4001 backup;" in text
    text = nginx.render(make_plan(config, ExportOptions(upstream_host="10.1.2.3"))).text
    assert "server 10.1.2.3:4001;\n    keepalive" in text
    assert "::1" not in text.split("upstream", 1)[1].split("}")[0]


def test_access_is_basic_auth_from_a_file_the_user_creates() -> None:
    config = make_config({"api": {"port": 1, "access": {"file": "~/s"}}, "open": 2})
    rendered = nginx.render(make_plan(config))
    assert "auth_basic_user_file htpasswd/devrouter-api;" in rendered.text
    assert rendered.text.count("auth_basic ") == 1
    assert any("the file ~/s" in str(g) for g in rendered.gaps)


@needs_nginx
@pytest.mark.parametrize(
    "args",
    [(), ("--domain", "dev.example.com", "--upstream-host", "::1", "--port", "8080")],
)
def test_nginx_accepts_the_export_of_the_example_config(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    assert NGINX is not None
    done = export("nginx", ROOT / "config.example.yaml", *args)
    assert done.returncode == 0, done.stderr
    checked = nginx_test(NGINX, tmp_path, done.stdout)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr


@needs_nginx
@pytest.mark.timeout(120)
async def test_nginx_serves_the_export(backend: BackendFactory, tmp_path: Path) -> None:
    assert NGINX is not None
    scenario = await start_scenario(backend, tmp_path)
    port = free_port()
    done = export("nginx", scenario.config, "--port", str(port), "--bind", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert "not expressed in nginx: route 'secret': access" in done.stderr
    (tmp_path / "htpasswd").mkdir()
    (tmp_path / "htpasswd" / "devrouter-secret").write_text(f"devrouter:{{PLAIN}}{PASSWORD}\n")
    with run_nginx(NGINX, tmp_path, done.stdout, port):
        await exercise(port, scenario, forwarded=True)
