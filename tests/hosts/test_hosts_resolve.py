"""After `hosts sync`, programs that do not resolve *.localhost by themselves do: glibc's
`getent` and Node, through a real router to a real backend.

It runs in a private mount namespace (`unshare -m`) with a temporary file bind-mounted over
/etc/hosts, so the machine's own file is never touched, and the bind mount is also the case
where rename fails (EBUSY) and the file is rewritten in place. It needs root and unshare;
elsewhere it is skipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, free_port, text_backend

from devrouter.hosts.block import BEGIN_MARKER

#: Upper bound for the whole script in the namespace, in seconds.
SCRIPT_TIMEOUT_S = 60.0
ORIGINAL = b"127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n# kept\n"
ANSWER = b"hello from the api backend"

# Runs in the namespace: $HOSTS is bound over /etc/hosts; every result is one line.
SCRIPT = r"""
mount --bind "$HOSTS" /etc/hosts || exit 90
getent hosts api.localhost >/dev/null; echo "before $?"
"$PYTHON" -m devrouter hosts sync --file /etc/hosts || exit 91
echo "getent $(getent hosts api.localhost)"
echo "getent4 $(getent ahostsv4 api.localhost | head -n 1)"
node -e '
const dns = require("dns");
dns.lookup("api.localhost", {all: true}, (err, found) => {
  console.log("lookup " + JSON.stringify(err ? err.code : found));
  fetch("http://api.localhost:" + process.env.ROUTER_PORT + "/")
    .then(async (r) => console.log("fetch " + r.status + " " + (await r.text())))
    .catch((e) => console.log("fetch-error " + String(e.cause || e)));
});
'
"$PYTHON" -m devrouter hosts clean --file /etc/hosts || exit 92
getent hosts api.localhost >/dev/null; echo "after $?"
"""


@pytest.fixture
def api() -> Iterator[int]:
    """A real HTTP backend on 127.0.0.1, in a thread."""
    with text_backend(ANSWER) as port:
        yield port


def _need_namespace() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root for a private mount namespace (unshare -m) and a bind mount")
    for tool in ("unshare", "getent", "node", "mount"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool}, which is not installed here")
    tried = subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=10)
    if tried.returncode != 0:
        pytest.skip(f"unshare -m is not allowed here: {tried.stderr.decode().strip()}")


def _leftovers() -> list[str]:
    return sorted(p.name for p in Path("/etc").glob(".hosts.devrouter-*"))


def test_getent_and_node_resolve_a_route_name_after_sync(cli, api: int, tmp_path: Path):
    _need_namespace()
    port = free_port()
    config = tmp_path / "devrouter.yaml"
    config.write_text(f"routes:\n  api: {api}\n  '*.shop': {api}\n")
    cli(
        "serve",
        "--config",
        str(config),
        "--listen",
        f"127.0.0.1:{port}",
        "--listen",
        f"[::1]:{port}",
        port=port,
    )
    hosts = tmp_path / "hosts"
    hosts.write_bytes(ORIGINAL)
    before_etc = _leftovers()
    env = cli_env(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "xdg"),
        HOSTS=str(hosts),
        PYTHON=sys.executable,
        ROUTER_PORT=str(port),
    )
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        cwd=tmp_path,
        env=env,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    got = {}
    for line in done.stdout.splitlines():
        key, _, value = line.partition(" ")
        got[key] = value
    print(done.stdout, done.stderr)  # shown when an assertion below fails

    # getent resolves the name through the hosts file, to an address of the block's.
    assert got["getent"].split()[0] in ("127.0.0.1", "::1")
    assert got["getent"].split()[1] == "api.localhost"
    assert got["getent4"].split()[0] == "127.0.0.1"
    # Node's resolver (getaddrinfo) too, both addresses, and its fetch reaches the backend
    # through the router.
    assert sorted(a["address"] for a in json.loads(got["lookup"])) == ["127.0.0.1", "::1"]
    assert got["fetch"] == f"200 {ANSWER.decode()}"
    # clean took the names away again.
    assert got["after"] != "0"
    # The bind-mounted file was rewritten in place (rename gives EBUSY there) and is back
    # to its very bytes; no temporary file is left in /etc.
    assert hosts.read_bytes() == ORIGINAL
    assert _leftovers() == before_etc
    assert "*.shop.localhost left out" in done.stderr
    assert "already" not in done.stdout


def test_sync_writes_through_the_bind_mount(tmp_path: Path):
    """The in-place rewrite: the block lands in the file bound over /etc/hosts."""
    _need_namespace()
    hosts = tmp_path / "hosts"
    hosts.write_bytes(ORIGINAL)
    (tmp_path / "devrouter.yaml").write_text("routes:\n  api: 3000\n")
    script = 'mount --bind "$HOSTS" /etc/hosts && "$PYTHON" -m devrouter hosts sync'
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT_S,
        cwd=tmp_path,
        env=cli_env(
            HOME=str(tmp_path),
            XDG_CONFIG_HOME=str(tmp_path / "xdg"),
            HOSTS=str(hosts),
            PYTHON=sys.executable,
            DEVROUTER_LISTEN=f"127.0.0.1:{free_port()}",  # not the default port: no router
        ),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("/etc/hosts: added the devrouter block: api.localhost")
    data = hosts.read_bytes()
    assert data.startswith(ORIGINAL + BEGIN_MARKER.encode() + b"\n127.0.0.1 api.localhost\n")
