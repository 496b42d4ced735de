"""`devrouter run` end to end, through the real CLI in subprocesses, plus the pure helpers
(tool flags, `$PORT` substitution, output tails).

Every test gets its own state directory (DEVROUTER_HOME), its own router port
(DEVROUTER_LISTEN) and its own slice of the port range (DEVROUTER_PORTS), so tests never touch
~/.local or port 7355 and can run beside another test run. The `dev` fixture kills whatever
is left at the end: every process whose environment names the test's state directory (the
background router, `run`/`up` processes and their commands), then the processes it started.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import cli_env, free_port
from dev_harness import WAIT_S, Dev, finish, listening, make_dev, wait_for

from devrouter.core.errors import UsageError
from devrouter.services.client import call
from devrouter.services.run import infer_name, merged_tls_env, service_env, split_run_words


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from make_dev(tmp_path)


def test_run_routes_name_while_running_and_exits_with_the_commands_code(dev):
    proc = dev.run_server("api")
    info = dev.wait_up("api")
    assert info["label"] == "api"
    port = int(info["env"]["PORT"])
    assert info["env"]["HOST"] == "127.0.0.1"
    assert info["env"]["DEVROUTER_URL"] == f"http://api.localhost:{dev.port}"
    assert info["env"]["DEVROUTER_INTERNAL_URL"] == f"http://127.0.0.1:{port}"
    route = dev.route("api")
    assert route is not None
    assert (route["port"], route["source"], route["owner_pid"]) == (port, "run", proc.pid)
    assert route["listening"] is True
    dev.get("api", "/exit/7")  # the command exits with code 7 on its own
    rc, out, err = finish(proc)
    assert rc == 7, err
    assert "api listening on" in out
    assert dev.route("api") is None
    assert dev.get("api")[0] == 404
    assert not listening(port)


def test_sigint_reaches_the_command_and_the_route_goes(dev):
    proc = dev.run_server("api")
    port = int(dev.wait_up("api")["env"]["PORT"])
    proc.send_signal(signal.SIGINT)
    rc, _, err = finish(proc)
    assert rc == 128 + signal.SIGINT, err  # Python died of the SIGINT it was passed
    assert dev.route("api") is None
    assert not listening(port)


def test_sigterm_is_forwarded(dev):
    proc = dev.run_server("api")
    port = int(dev.wait_up("api")["env"]["PORT"])
    proc.terminate()
    rc, _, err = finish(proc)
    assert rc == 0, err  # the server exits 0 on SIGTERM
    assert dev.route("api") is None
    assert not listening(port)


def test_sigkill_of_devrouter_run_drops_the_route_and_stops_the_command(dev):
    proc = dev.run_server("api")
    info = dev.wait_up("api")
    port, child = int(info["env"]["PORT"]), int(info["pid"])
    proc.kill()
    proc.wait(5)
    wait_for(lambda: dev.route("api") is None, "the router to drop the route", 5)
    assert dev.get("api")[0] == 404
    wait_for(lambda: not listening(port), "the orphaned command to be stopped", 8)
    wait_for(lambda: not Path(f"/proc/{child}").exists() or _zombie(child), "the child to die", 8)


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return True


def test_whole_process_group_is_stopped_when_the_command_exits(dev):
    # The shell exits at once; the server it started in the background must not survive.
    script = f"{sys.executable} {dev.server()} bg & echo started; sleep 0.5; exit 3"
    res = dev.cli("run", "bg", "--", "/bin/sh", "-c", script)
    assert res.returncode == 3, res.stderr
    assert "started" in res.stdout
    port = dev.route("bg")
    assert port is None
    assigned = json.loads((dev.home / "ports.json").read_text())["ports"]["bg"]
    wait_for(lambda: not listening(assigned), "the background server to be stopped", 5)


# --- the router, starting and stopping ----------------------------------------------------


def test_run_starts_a_background_router_says_so_and_stop_stops_it(dev):
    res = dev.cli("run", "once", "--", "true")
    assert res.returncode == 0, res.stderr
    assert "started a background router" in res.stderr
    assert str(dev.home / "router.log") in res.stderr
    pid = dev.router_pid()
    assert pid is not None
    assert os.getpgid(pid) != os.getpgid(0)  # detached: its own session
    res = dev.cli("run", "again", "--", "true")
    assert "started a background router" not in res.stderr  # the same one is reused
    assert dev.router_pid() == pid
    res = dev.cli("stop")
    assert res.returncode == 0, res.stderr
    assert f"stopped the router (pid {pid})" in res.stderr
    assert not (dev.home / "control.sock").exists()
    assert dev.cli("stop").returncode == 0  # nothing to stop is fine


def test_a_name_held_by_a_live_process_is_refused_naming_it(dev):
    first = dev.run_server("api")
    dev.wait_up("api")
    res = dev.cli("run", "api", "--", "true")
    assert res.returncode == 3
    assert f"pid {first.pid}" in res.stderr
    assert "server.py api" in res.stderr  # the command that holds it
    assert dev.wait_up("api")["label"] == "api"  # the first one is untouched


def test_config_route_clash_is_reported_not_resolved(dev, tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("routes:\n  api: 1\n")
    env = {**dev.env, "DEVROUTER_CONFIG": str(config)}
    proc = dev.start("run", "api", "--", sys.executable, str(dev.server()), "api", env=env)
    wait_for(lambda: any(r["name"] == "api" for r in dev.routes()), "the route")
    res = dev.cli("ls")
    assert "clash" in res.stdout and "api" in res.stdout
    assert json.loads(dev.cli("ls", "--json").stdout)["conflicts"]
    assert dev.route("api")["source"] == "config"  # type: ignore[index]
    proc.terminate()
    _, _, err = finish(proc)
    assert "warning" in err and "clashes" in err


# --- ports --------------------------------------------------------------------------------


def test_the_same_name_gets_the_same_port_on_every_run(dev):
    script = "import os; print(os.environ['PORT'])"
    first = dev.cli("run", "api", "--", sys.executable, "-c", script)
    second = dev.cli("run", "api", "--", sys.executable, "-c", script)
    assert first.returncode == second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout
    port = int(first.stdout)
    assert dev.cli("port", "api").stdout.strip() == str(port)
    other = dev.cli("run", "web", "--", sys.executable, "-c", script)
    assert int(other.stdout) != port


def test_a_busy_port_is_skipped_and_the_new_one_remembered(dev):
    with socket.socket() as s:
        # Like a real server: a parallel test run's closed connections (TIME_WAIT) on this
        # port must not stop the bind.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        for _ in range(5):  # a parallel test run may take the port between the two lines
            port = int(dev.cli("port", "api").stdout)
            try:
                s.bind(("127.0.0.1", port))
                break
            except OSError:
                continue
        else:
            pytest.fail("could not occupy api's port")
        s.listen()
        res = dev.cli(
            "run", "api", "--", sys.executable, "-c", "import os; print(os.environ['PORT'])"
        )
    assert res.returncode == 0, res.stderr
    new = int(res.stdout)
    assert new != port
    assert f"port {port} is busy" in res.stderr
    assert dev.cli("port", "api").stdout.strip() == str(new)


def test_pinned_port(dev):
    port = free_port()
    proc = dev.run_server("api", "--port", str(port))
    assert int(dev.wait_up("api")["env"]["PORT"]) == port
    proc.terminate()
    finish(proc)


def test_port_command_reports_a_running_names_port(dev):
    proc = dev.run_server("api")
    port = dev.wait_up("api")["env"]["PORT"]
    assert dev.cli("port", "api").stdout.strip() == port
    assert dev.cli("url", "api").stdout.strip() == f"http://api.localhost:{dev.port}"
    proc.terminate()
    finish(proc)


def test_alias_routes_a_port_until_removed(dev):
    import http.server
    import threading

    class Hello(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hello)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        res = dev.cli("alias", "db", str(port))  # starts a router, too
        assert res.returncode == 0, res.stderr
        assert f"http://db.localhost:{dev.port} -> port {port}" in res.stderr
        assert dev.get("db") == (200, b"hello")
        assert dev.route("db")["source"] == "alias"  # type: ignore[index]
        assert dev.cli("alias", "db", str(dev.port)).returncode == 1  # would loop
        # Aliases outlive the router.
        assert dev.cli("stop").returncode == 0
        assert dev.cli("run", "boot", "--", "true").returncode == 0
        assert dev.get("db") == (200, b"hello")
        assert dev.cli("alias", "--remove", "db").returncode == 0
        assert dev.get("db")[0] == 404
        assert dev.cli("alias", "--remove", "db").returncode == 1
        # Without a router, the file is edited directly.
        assert dev.cli("alias", "x", str(port)).returncode == 0
        assert dev.cli("stop").returncode == 0
        assert dev.cli("alias", "--remove", "x").returncode == 0
        assert "x" not in json.loads((dev.home / "aliases.json").read_text())["aliases"]
    finally:
        server.shutdown()
        server.server_close()


def test_url_without_a_router_uses_the_configured_port(dev):
    res = dev.cli("url", "api.shop")
    assert res.stdout.strip() == f"http://api.shop.localhost:{dev.port}"
    assert dev.cli("ls").returncode == 0
    assert json.loads(dev.cli("ls", "--json").stdout) == {
        "router": None,
        "routes": [],
        "conflicts": [],
        "docker": None,
    }


# --- the command: environment, arguments, output ------------------------------------------


def test_dollar_port_in_arguments_is_replaced(dev):
    proc = dev.start(
        "run", "api", "--", sys.executable, str(dev.server()), "api", "--port=$PORT", "${HOST}"
    )
    info = dev.wait_up("api")
    assert info["argv"] == ["api", f"--port={info['env']['PORT']}", "127.0.0.1"]
    proc.terminate()
    finish(proc)


def test_output_passes_through_unchanged_and_the_router_keeps_the_last_lines(dev):
    script = (
        "import sys; sys.stdout.write('out \\x1b[32mgreen\\x1b[0m\\nno newline');"
        "sys.stderr.write('err line\\n')"
    )
    res = subprocess.run(
        [sys.executable, "-m", "devrouter", "run", "chatty", "--", sys.executable, "-c", script],
        capture_output=True,
        timeout=WAIT_S,
        env=dev.env,
        cwd=dev.tmp,
        stdin=subprocess.DEVNULL,
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout == b"out \x1b[32mgreen\x1b[0m\nno newline"
    assert b"err line\n" in res.stderr
    # While it runs, the router has its lines without the colour codes.
    loop = "import time\nfor i in range(100):\n    print('line', i, flush=True)\ntime.sleep(30)"
    proc = dev.start("run", "chatty", "--", sys.executable, "-c", loop)
    from devrouter.services.client import call

    def lines() -> list[str] | None:
        try:
            got = call(dev.home, "output", name="chatty")["lines"]
        except Exception:
            return None
        return got if got and got[-1] == "line 99" else None

    got = wait_for(lines, "the output lines at the router")
    assert len(got) <= 40
    proc.terminate()
    finish(proc)


def test_command_not_found_exits_127_and_unregisters(dev):
    res = dev.cli("run", "api", "--", "no-such-command-devrouter")
    assert res.returncode == 127
    assert "command not found" in res.stderr
    assert dev.route("api") is None


def test_usage_errors_exit_2(dev):
    assert dev.cli("run", "api").returncode == 2
    assert dev.cli("run", "api", "--port", "1").returncode == 2  # no `--`: no command
    res = dev.cli("run", "Bad_Name!", "--", "true")
    assert res.returncode == 2
    assert "not a usable name" in res.stderr
    assert dev.cli("run", "devrouter", "--", "true").returncode == 2


def test_name_left_out_comes_from_package_json_else_the_directory(dev):
    show = [sys.executable, "-c", "import os; print(os.environ['DEVROUTER_URL'])"]
    project = dev.tmp / "My_Shop"
    project.mkdir()
    res = dev.cli("run", "--", *show, cwd=project)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"http://my-shop.localhost:{dev.port}"
    assert "using 'my-shop' (from the directory's name)" in res.stderr
    (project / "package.json").write_text(json.dumps({"name": "@acme/storefront"}))
    res = dev.cli("run", "--port", str(free_port()), "--", *show, cwd=project)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"http://storefront.localhost:{dev.port}"
    assert "using 'storefront' (from package.json)" in res.stderr


def test_run_dash_dash_true_runs_true(dev):
    """`devrouter run -- true` said "no command to run: devrouter run true -- CMD"."""
    res = dev.cli("run", "--", "true")
    assert res.returncode == 0, res.stderr
    assert "no command" not in res.stderr
    res = dev.cli("run", "true")  # a NAME and no command: say both ways out
    assert res.returncode == 2
    assert "devrouter run true -- CMD" in res.stderr and "devrouter run -- true" in res.stderr
    res = dev.cli("run", "--")
    assert res.returncode == 2
    assert "no command to run: devrouter run [NAME] -- CMD" in res.stderr


def test_a_command_on_another_port_is_named_in_the_terminal_and_to_the_router(dev):
    """A command that ignores $PORT: one line in the terminal, and `listens_on` in the
    router's route list (the 503 page and doctor read it there)."""
    wrong = free_port()
    script = (
        "import socket, time\n"
        f"s = socket.socket(); s.bind(('127.0.0.1', {wrong})); s.listen()\n"
        "time.sleep(60)\n"
    )
    proc = dev.start("run", "web", "--", sys.executable, "-c", script)

    def reported() -> dict[str, Any] | None:
        route = dev.route("web")
        return route if route and route.get("listens_on") == [wrong] else None

    route = wait_for(reported, "listens_on in the route list")
    assert route["ready"] is False
    owner = call(dev.home, "who", name="web")["owner"]
    assert owner["listens_on"] == [wrong]
    proc.terminate()
    _, _, err = finish(proc)
    line = f"devrouter: web listens on {wrong}, not on $PORT={route['port']}; pass --port $PORT"
    assert err.count(line) == 1, err


def test_options_after_the_name(dev):
    port = free_port()
    res = dev.cli(
        "run", "api", "--port", str(port), "--", sys.executable, "-c",
        "import os; print(os.environ['PORT'])",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str(port)


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_on_a_terminal_ctrl_c_reaches_the_command_and_output_stays_a_terminal(dev):
    import fcntl
    import termios

    master, slave = os.openpty()
    script = (
        "import os, sys, time\n"
        "print('tty', os.isatty(1), os.isatty(0), flush=True)\n"
        "time.sleep(30)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "devrouter", "run", "tty", "--", sys.executable, "-c", script],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=dev.env,
        cwd=dev.tmp,
        start_new_session=True,
        preexec_fn=lambda: fcntl.ioctl(0, termios.TIOCSCTTY, 0),
    )
    dev.procs.append(proc)
    os.close(slave)
    seen = b""
    deadline = time.monotonic() + WAIT_S
    while b"tty True True" not in seen and time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            seen += os.read(master, 4096)
    assert b"tty True True" in seen, seen
    os.write(master, b"\x03")  # Ctrl-C on the terminal
    assert proc.wait(WAIT_S) == 128 + signal.SIGINT
    os.close(master)


# --- pure helpers -------------------------------------------------------------------------


def test_service_env():
    env = service_env("api", 17001, 7355, {"KEEP": "x", "PORT": "1"})
    assert env == {
        "KEEP": "x",
        "PORT": "17001",
        "HOST": "127.0.0.1",
        "DEVROUTER_URL": "http://api.localhost:7355",  # for browsers
        "DEVROUTER_INTERNAL_URL": "http://127.0.0.1:17001",  # for server-side code
    }


def test_service_env_with_a_local_ca_adds_the_https_url_and_trust():
    tls = {"NODE_EXTRA_CA_CERTS": "/s/ca/ca.pem", "SSL_CERT_FILE": "/s/ca/bundle.pem"}
    env = service_env("api", 17001, 7355, {"SSL_CERT_FILE": "/corp.pem"}, tls)
    assert env["DEVROUTER_HTTPS_URL"] == "https://api.localhost:7355"
    assert env["NODE_EXTRA_CA_CERTS"] == "/s/ca/ca.pem"
    assert env["SSL_CERT_FILE"] == "/s/ca/bundle.pem"
    assert "DEVROUTER_HTTPS_URL" not in service_env("api", 17001, 7355, {}, {})


def test_a_users_own_ca_files_are_kept_inside_the_ones_the_service_gets(tmp_path):
    ca = tmp_path / "ca" / "ca.pem"
    ca.parent.mkdir()
    ca.write_text("OURS\n")
    corp = tmp_path / "corp.pem"
    corp.write_text("THEIRS\n")
    tls = {"NODE_EXTRA_CA_CERTS": str(ca), "SSL_CERT_FILE": str(tmp_path / "ca" / "bundle.pem")}
    base = {"NODE_EXTRA_CA_CERTS": str(corp), "SSL_CERT_FILE": str(tmp_path / "missing.pem")}
    out = merged_tls_env(tls, base, ca)
    assert Path(out["NODE_EXTRA_CA_CERTS"]).read_text() == "THEIRS\nOURS\n"
    assert out["SSL_CERT_FILE"] == str(tmp_path / "missing.pem")  # unreadable: left alone
    assert merged_tls_env(tls, {}, ca) == tls


def test_run_gives_the_service_the_https_url_and_the_ca(cli, tmp_path, isolated_home):
    """Through the real CLI: a service started by `run` trusts the router's CA through the
    environment (Node's NODE_EXTRA_CA_CERTS; a bundle of the system CAs plus ours for the
    rest) and knows its https:// URL."""
    out = tmp_path / "env.json"
    script = f"import json, os; json.dump(dict(os.environ), open({str(out)!r}, 'w'))"
    router = cli("serve", env=cli_env(DEVROUTER_HOME=os.environ["DEVROUTER_HOME"]))
    proc = subprocess.run(
        [sys.executable, "-m", "devrouter", "run", "envcheck", "--", sys.executable, "-c", script],
        env=cli_env(
            DEVROUTER_HOME=os.environ["DEVROUTER_HOME"],
            DEVROUTER_LISTEN=f"127.0.0.1:{router.port}",
        ),
        capture_output=True,
        timeout=WAIT_S,
    )
    assert proc.returncode == 0, proc.stderr
    env = json.loads(out.read_text())
    state = Path(os.environ["DEVROUTER_HOME"])
    assert env["DEVROUTER_HTTPS_URL"] == f"https://envcheck.localhost:{router.port}"
    ca = (state / "ca" / "ca.pem").read_text().strip()
    assert ca in Path(env["NODE_EXTRA_CA_CERTS"]).read_text()  # ours, or theirs plus ours
    for key in ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE"):
        if os.environ.get(key):  # set by the user: kept inside the file the service gets
            their_first = Path(os.environ[key]).read_text().strip().splitlines()[1]
            assert their_first in Path(env[key]).read_text()
    if "SSL_CERT_FILE" in env:  # only where the system has a CA bundle to start from
        bundle = Path(env["SSL_CERT_FILE"]).read_text()
        assert ca in bundle
        assert bundle.count("BEGIN CERTIFICATE") > 1


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        (["api", "--", "npm", "run", "dev"], ("api", [], ["npm", "run", "dev"])),
        (["api", "--port", "3", "--", "x"], ("api", ["--port", "3"], ["x"])),
        (["api", "python", "-m", "http.server"], ("api", [], ["python", "-m", "http.server"])),
        (["api", "x", "--", "y"], ("api", ["x"], ["y"])),  # argparse then refuses `x`
        (["--", "true"], (None, [], ["true"])),
        (["--", "npm", "run", "dev", "--", "--port", "1"],
         (None, [], ["npm", "run", "dev", "--", "--port", "1"])),
        (["api", "--", "cmd", "--", "more"], ("api", [], ["cmd", "--", "more"])),
    ],
)  # fmt: skip
def test_split_run_words(words, expected):
    assert split_run_words(words) == expected


@pytest.mark.parametrize(
    ("words", "message"),
    [
        ([], "no command to run: devrouter run [NAME] -- CMD..."),
        (["--"], "no command to run: devrouter run [NAME] -- CMD..."),
        (["api"], "no command to run after the name 'api': devrouter run api -- CMD..."),
        (["api", "--"], "no command to run after the name 'api'"),
        (["api", "--port", "3"], "put the command after `--`: devrouter run api -- CMD"),
    ],
)
def test_split_run_words_refusals(words, message):
    with pytest.raises(UsageError, match="^" + re.escape(message)) as info:
        split_run_words(words)
    assert info.value.exit_code == 2


@pytest.mark.parametrize(
    ("package_json", "directory", "expected"),
    [
        ({"name": "storefront"}, "x", ("storefront", "package.json")),
        ({"name": "@acme/web-app"}, "x", ("web-app", "package.json")),
        ({"name": "My App!"}, "x", ("my-app", "package.json")),
        ({"name": ""}, "shop", ("shop", "the directory's name")),
        ({"name": "@acme/"}, "shop", ("shop", "the directory's name")),
        ({"name": 7}, "shop", ("shop", "the directory's name")),
        ({}, "My_Shop", ("my-shop", "the directory's name")),
        (None, "shop.v2", ("shop-v2", "the directory's name")),  # one label, not two
        ([1, 2], "api", ("api", "the directory's name")),
        (None, "", ("app", "a default")),  # the root directory
        (None, "___", ("app", "a default")),
        ({"name": "x" * 80}, "y", ("x" * 63, "package.json")),
    ],
)
def test_infer_name(package_json, directory, expected):
    assert infer_name(package_json, directory) == expected


def _get_html(port: int, host: str) -> tuple[int, dict[str, str], str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=WAIT_S)
    try:
        conn.request("GET", "/", headers={"Host": host, "Accept": "text/html"})
        resp = conn.getresponse()
        return resp.status, dict(resp.getheaders()), resp.read().decode()
    finally:
        conn.close()


def test_a_command_not_listening_yet_gets_a_self_reloading_starting_page(dev):
    """Until `devrouter run`'s command listens, a browser gets 'starting...' (503 with a
    refresh), not a bare 502; its output so far is on the page."""
    loop = "import time\nprint('compiling assets', flush=True)\ntime.sleep(60)"
    proc = dev.start("run", "slow", "--", sys.executable, "-c", loop)

    def page() -> tuple[int, dict[str, str], str] | None:
        try:
            got = _get_html(dev.port, "slow.localhost")
        except OSError:
            return None
        return got if got[0] == 503 and "compiling assets" in got[2] else None

    _, headers, body = wait_for(page, "the starting page")
    assert "http-equiv=refresh" in body and "is starting" in body
    assert headers.get("Retry-After") == "1"
    proc.terminate()
    finish(proc)


def test_the_502_page_shows_why_the_app_is_not_answering(dev):
    """A command that stopped listening (here: it closed its socket and kept running after
    printing an error) gets a 502 that shows its last output."""
    script = (
        "import os, socket, time\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
        "time.sleep(1.5); s.close()\n"
        "print('Error: database connection refused', flush=True)\n"
        "time.sleep(60)\n"
    )
    proc = dev.start("run", "broken", "--", sys.executable, "-c", script)

    def page() -> tuple[int, dict[str, str], str] | None:
        try:
            got = _get_html(dev.port, "broken.localhost")
        except OSError:
            return None
        return got if got[0] == 502 and "database connection refused" in got[2] else None

    _, _, body = wait_for(page, "a 502 page with the app's output")
    assert "Last output" in body
    proc.terminate()
    finish(proc)
