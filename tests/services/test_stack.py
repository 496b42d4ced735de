"""devrouter.services.stack: a stack's plan, and `devrouter up` / `down` end to end."""

from __future__ import annotations

import json
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from dev_harness import Dev, finish, http_get, listening, make_dev, wait_for

from devrouter.services.stack import detached_failure, plan
from devrouter.services.stackfile import env_prefix, parse_stack


def test_sibling_environment():
    f = parse_stack("services:\n  api: {run: [srv]}\n  web-app: {run: 'vite', env: {EXTRA: '1'}}\n")
    planned = plan(f, "shop", {"api": 4001, "web-app": 4002}, 7355, {"KEEP": "x"}, Path("/p"))
    api, web = planned
    for p in planned:
        assert p.env["API_URL"] == "http://api.shop.localhost:7355"
        assert p.env["API_PORT"] == "4001"
        assert p.env["WEB_APP_URL"] == "http://web-app.shop.localhost:7355"
        assert p.env["WEB_APP_PORT"] == "4002"
        # Server-side code's address for each sibling: no *.localhost lookup, no router.
        assert p.env["API_INTERNAL_URL"] == "http://127.0.0.1:4001"
        assert p.env["WEB_APP_INTERNAL_URL"] == "http://127.0.0.1:4002"
        assert p.env["DEVROUTER_STACK"] == "shop"
        assert p.env["KEEP"] == "x"
    assert (api.env["PORT"], web.env["PORT"]) == ("4001", "4002")
    assert web.env["DEVROUTER_URL"] == "http://web-app.shop.localhost:7355"
    assert web.env["DEVROUTER_INTERNAL_URL"] == "http://127.0.0.1:4002"
    assert web.env["EXTRA"] == "1"
    assert "EXTRA" not in api.env
    assert web.argv[-1].endswith("vite --port 4002 --strictPort --host 127.0.0.1")
    assert env_prefix("web-app") == "WEB_APP"
    assert "API_HTTPS_URL" not in api.env  # no local CA: no https:// URLs


def test_with_a_local_ca_every_sibling_has_an_https_url_and_trusts_the_ca():
    f = parse_stack("services:\n  api: {run: [srv]}\n  web: {run: [srv]}\n")
    tls = {"NODE_EXTRA_CA_CERTS": "/s/ca/ca.pem"}
    planned = plan(f, "shop", {"api": 4001, "web": 4002}, 7355, {}, Path("/p"), tls)
    for p in planned:
        assert p.env["API_HTTPS_URL"] == "https://api.shop.localhost:7355"
        assert p.env["WEB_HTTPS_URL"] == "https://web.shop.localhost:7355"
        assert p.env["NODE_EXTRA_CA_CERTS"] == "/s/ca/ca.pem"
    assert planned[1].env["DEVROUTER_HTTPS_URL"] == "https://web.shop.localhost:7355"


# --- devrouter up / down ------------------------------------------------------------------


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from make_dev(tmp_path)


def write_project(d: Dev, name: str, declared: str | None = None) -> Path:
    """A project with `api` and `web` services; each answers with its label and env."""
    project = d.tmp / name
    project.mkdir()
    server = str(d.server())
    services = {
        "api": {"run": [sys.executable, server, f"{name}-api"]},
        "web": {
            "run": f"{sys.executable} {server} {name}-web",
            "paths": {"/api": "api"},
        },
    }
    body: dict[str, object] = {"services": services}
    if declared:
        body["stack"] = declared
    (project / "devrouter.yaml").write_text(yaml.safe_dump(body))
    return project


def wait_for_stack(d: Dev, stack: str, names: tuple[str, ...] = ("api", "web")) -> dict[str, dict]:
    want = {f"{n}.{stack}" for n in names}

    def ready() -> dict[str, dict] | None:
        routes = {r["name"]: r for r in d.routes() if r.get("stack") == stack}
        if want <= set(routes) and all(routes[n]["listening"] for n in want):
            return routes
        return None

    routes: dict[str, dict] = wait_for(ready, f"stack {stack} to be up")
    return routes


def test_two_stacks_with_the_same_service_names_side_by_side(dev):
    a = write_project(dev, "alpha")
    b = write_project(dev, "beta")
    up_a = dev.start("up", cwd=a)
    up_b = dev.start("up", cwd=b)
    routes = {**wait_for_stack(dev, "alpha"), **wait_for_stack(dev, "beta")}
    assert len({r["port"] for r in routes.values()}) == 4
    for stack in ("alpha", "beta"):
        for svc in ("api", "web"):
            info = json.loads(dev.get(f"{svc}.{stack}")[1])
            assert info["label"] == f"{stack}-{svc}"
            assert routes[f"{svc}.{stack}"]["source"] == "stack"
        # The web's /api path goes to its own stack's api.
        info = json.loads(dev.get(f"web.{stack}", "/api/x")[1])
        assert (info["label"], info["path"]) == (f"{stack}-api", "/api/x")
    # Ctrl-C stops everything in that stack and nothing in the other.
    up_a.send_signal(signal.SIGINT)
    rc, out, err = finish(up_a)
    assert rc == 0, err
    assert "api | alpha-api listening on" in out or "api | alpha-api listening on" in err
    names = {r["name"] for r in dev.routes()}
    assert names == {"api.beta", "web.beta"}
    for svc in ("api", "web"):
        assert not listening(routes[f"{svc}.alpha"]["port"])
    assert json.loads(dev.get("api.beta")[1])["label"] == "beta-api"
    up_b.terminate()
    assert finish(up_b)[0] == 0


def test_services_get_their_siblings_urls_and_ports(dev):
    project = write_project(dev, "shop")
    dev.start("up", cwd=project)
    routes = wait_for_stack(dev, "shop")
    env = json.loads(dev.get("web.shop")[1])["env"]
    assert env["API_URL"] == f"http://api.shop.localhost:{dev.port}"
    assert env["API_PORT"] == str(routes["api.shop"]["port"])
    # The internal URL reaches the api itself from any process, without the router.
    assert env["API_INTERNAL_URL"] == f"http://127.0.0.1:{routes['api.shop']['port']}"
    port = int(env["API_INTERNAL_URL"].rsplit(":", 1)[1])
    status, body = http_get(port, f"127.0.0.1:{port}", "/x")
    assert (status, json.loads(body)["label"]) == (200, "shop-api")
    assert env["WEB_PORT"] == env["PORT"] == str(routes["web.shop"]["port"])
    assert env["DEVROUTER_URL"] == f"http://web.shop.localhost:{dev.port}"
    assert env["DEVROUTER_STACK"] == "shop"


def test_ports_are_stable_across_ups(dev):
    project = write_project(dev, "shop")
    first = dev.start("up", cwd=project)
    before = {n: r["port"] for n, r in wait_for_stack(dev, "shop").items()}
    first.terminate()
    finish(first)
    dev.start("up", cwd=project)
    after = {n: r["port"] for n, r in wait_for_stack(dev, "shop").items()}
    assert before == after


def test_output_is_prefixed_by_service_name(dev):
    project = write_project(dev, "shop")
    proc = dev.start("up", cwd=project)
    wait_for_stack(dev, "shop")
    proc.terminate()
    rc, out, err = finish(proc)
    assert rc == 0
    assert "web | shop-web listening on" in out
    assert "api | shop-api to stderr" in err
    assert f"http://api.shop.localhost:{dev.port}" in err  # the URLs are printed


def test_a_service_that_exits_keeps_its_route_and_the_others_run(dev):
    project = dev.tmp / "p"
    project.mkdir()
    (project / "devrouter.yaml").write_text(
        "stack: p\nservices:\n"
        f"  api: {{run: [{sys.executable}, {dev.server()}, p-api]}}\n"
        f'  bad: {{run: "echo why it failed; exit 4"}}\n'
    )
    proc = dev.start("up", cwd=project)
    wait_for_stack(dev, "p", ("api",))

    def exited() -> dict | None:
        route = dev.route("bad.p")
        return route if route and route["exit_code"] == 4 else None

    wait_for(exited, "bad to have exited")
    from devrouter.services.client import call

    assert call(dev.home, "output", name="bad.p")["lines"] == ["why it failed"]
    assert json.loads(dev.get("api.p")[1])["label"] == "p-api"
    proc.send_signal(signal.SIGINT)
    assert finish(proc)[0] == 0


def test_up_detach_and_down(dev):
    project = write_project(dev, "shop")
    res = dev.cli("up", "--detach", cwd=project)
    assert res.returncode == 0, res.stderr
    assert "devrouter down shop" in res.stderr
    routes = wait_for_stack(dev, "shop")
    assert (dev.home / "stacks" / "shop.log").exists()
    res = dev.cli("down", cwd=project)
    assert res.returncode == 0, res.stderr
    assert "stopped stack shop" in res.stderr
    assert not any(r.get("stack") == "shop" for r in dev.routes())
    for r in routes.values():
        wait_for(lambda r=r: not listening(r["port"]), "the services to stop", 5)
    assert dev.cli("down", "shop").returncode == 1  # nothing left to stop


def test_up_detach_twice_fails_with_the_reason(dev):
    """The second `up -d` of a running stack used to print success and exit 0."""
    project = write_project(dev, "shop")
    first = dev.cli("up", "--detach", cwd=project)
    assert first.returncode == 0, first.stderr
    routes = wait_for_stack(dev, "shop")
    second = dev.cli("up", "--detach", cwd=project)
    assert second.returncode == 3, second.stderr
    assert "already registered by pid" in second.stderr
    assert "devrouter down shop" in second.stderr
    assert "running in the background" not in second.stderr
    # The first one is untouched.
    assert {n: r["port"] for n, r in wait_for_stack(dev, "shop").items()} == {
        n: r["port"] for n, r in routes.items()
    }
    assert dev.cli("down", cwd=project).returncode == 0


def _one_service_project(d: Dev, name: str, service: str) -> Path:
    project = d.tmp / name
    project.mkdir()
    (project / "devrouter.yaml").write_text(f"stack: {name}\nservices:\n  {service}\n")
    return project


def test_up_detach_of_a_command_that_exits_at_once_fails_with_its_output(dev):
    project = _one_service_project(dev, "p", 'bad: {run: "echo why it failed >&2; exit 4"}')
    res = dev.cli("up", "--detach", cwd=project)
    assert res.returncode == 3, res.stderr
    assert "stack p" in res.stderr and "bad exited with code 4" in res.stderr
    assert "why it failed" in res.stderr
    assert "p.log" in res.stderr
    assert not any(r.get("stack") == "p" for r in dev.routes())


def test_up_detach_reports_a_failure_while_the_others_run(dev):
    project = dev.tmp / "q"
    project.mkdir()
    (project / "devrouter.yaml").write_text(
        "stack: q\nservices:\n"
        f"  api: {{run: [{sys.executable}, {dev.server()}, q-api]}}\n"
        '  bad: {run: "sleep 0.5; echo no database >&2; exit 2"}\n'
    )
    res = dev.cli("up", "--detach", cwd=project)
    assert res.returncode == 3, res.stderr
    assert "bad exited with code 2 as it started: no database" in res.stderr, res.stderr
    assert "devrouter down q" in res.stderr
    assert dev.cli("down", "q").returncode == 0


def test_up_detach_reports_a_refusal_by_the_router(dev):
    project = _one_service_project(dev, "r", f"api: {{run: 'sleep 30', port: {dev.port}}}")
    res = dev.cli("up", "--detach", cwd=project)
    assert res.returncode == 3, res.stderr
    assert "stack r did not start" in res.stderr and "own port" in res.stderr


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("", "it exited without a word"),
        (
            "devrouter: the name 'api.s' is already registered by pid 7; stop that first\n",
            "the name 'api.s' is already registered by pid 7; stop that first",
        ),
        (
            "devrouter: stack s: 1 service(s)\n"
            "  http://bad.s.localhost:7355  -> 127.0.0.1:17001\n"
            "bad | Traceback (most recent call last):\n"
            "bad |   File 'app.py', line 1\n"
            "bad | ImportError: no module named flask\n"
            "devrouter: bad exited with code 1\n",
            "bad exited with code 1; last output: bad | Traceback (most recent call last): / "
            "bad | File 'app.py', line 1 / bad | ImportError: no module named flask",
        ),
        (
            "devrouter: stack s: 1 service(s)\n"
            "  http://bad.s.localhost:7355  -> 127.0.0.1:17001\n"
            "devrouter: bad: cannot run 'nosuch': command not found\n",
            "bad: cannot run 'nosuch': command not found",
        ),
        (
            "\x1b[36mbad\x1b[0m | boom\ndevrouter: bad exited with code 3\n",
            "bad exited with code 3; last output: bad | boom",
        ),
        ("Traceback (most recent call last):\nKeyError: 'x'\n", "KeyError: 'x'"),
    ],
)
def test_detached_failure_reads_the_reason_from_the_log(log, reason):
    assert detached_failure(log) == reason


def test_sigkill_of_up_stops_every_service(dev):
    project = write_project(dev, "shop")
    proc = dev.start("up", cwd=project)
    routes = wait_for_stack(dev, "shop")
    proc.kill()
    proc.wait(5)
    wait_for(lambda: not any(r.get("stack") == "shop" for r in dev.routes()), "the drop", 5)
    for r in routes.values():
        wait_for(lambda r=r: not listening(r["port"]), "the orphaned services to stop", 8)


def test_a_running_stack_name_is_refused(dev):
    project = write_project(dev, "shop")
    first = dev.start("up", cwd=project)
    wait_for_stack(dev, "shop")
    res = dev.cli("up", cwd=project)
    assert res.returncode == 3
    assert f"pid {first.pid}" in res.stderr
    assert "--stack" in res.stderr
    res_other = dev.start("up", "--stack", "shop2", cwd=project)
    wait_for_stack(dev, "shop2")
    res_other.terminate()
    finish(res_other)


def test_ls_groups_by_stack(dev):
    project = write_project(dev, "shop")
    dev.start("up", cwd=project)
    wait_for_stack(dev, "shop")
    solo = dev.run_server("solo")
    dev.wait_up("solo")
    text = dev.cli("ls").stdout
    lines = text.splitlines()
    assert lines[0].startswith("URL")
    assert "solo.localhost" in lines[1]  # routes without a stack come first
    assert lines[2] == "stack shop:"
    assert "api.shop.localhost" in lines[3] and "listening" in lines[3]
    solo.terminate()
    finish(solo)


def test_missing_or_invalid_file(dev):
    res = dev.cli("up")
    assert res.returncode == 2
    assert "devrouter.yaml" in res.stderr and "no such file" in res.stderr
    (dev.tmp / "devrouter.yaml").write_text("services:\n  api: {rn: x}\n")
    res = dev.cli("up")
    assert res.returncode == 2
    assert "devrouter.yaml:2" in res.stderr and "did you mean 'run'" in res.stderr
