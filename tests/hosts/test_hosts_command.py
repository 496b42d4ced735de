"""`devrouter hosts sync|clean` through the real CLI, in a subprocess, on temporary files:
names from a running router or from the config, foreign lines kept byte for byte, damaged
blocks and missing permission refused with one line and the file untouched."""

from __future__ import annotations

import os
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, free_port

from devrouter.hosts.block import BEGIN_MARKER, END_MARKER

#: Upper bound for one CLI run, in seconds.
RUN_TIMEOUT_S = 30.0
FOREIGN = b"127.0.0.1\tlocalhost\r\n# \xe9t\xe9 (latin-1, not UTF-8)\r\n::1 ip6-localhost"


def run(*args: str, home: Path, prefix: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "devrouter", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=home,
        env=cli_env(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "xdg"),
            # Without a router of its own, where to look is a port nothing listens on, not
            # the default one, where a router of somebody else's may be running.
            DEVROUTER_LISTEN=f"127.0.0.1:{free_port()}",
        ),
    )


def entries(data: bytes) -> list[str]:
    """The names of the block's entries, in file order, without the markers."""
    text = data.decode("utf-8", "surrogateescape").replace("\r\n", "\n")
    inside = text.split(BEGIN_MARKER + "\n", 1)[1].split(END_MARKER, 1)[0]
    return [line.split()[1] for line in inside.splitlines()]


def both(*names: str) -> list[str]:
    return [f"{n}.localhost" for n in names for _ in (1, 2)]


@pytest.fixture
def hosts(tmp_path: Path) -> Path:
    path = tmp_path / "hosts"
    path.write_bytes(FOREIGN)
    return path


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "devrouter.yaml"
    path.write_text("routes:\n  api: 3001\n  web.shop: 3002\n  '*.shop': 3003\n")
    return path


def test_sync_without_a_router_writes_the_config_names_and_clean_gives_back_every_byte(
    hosts: Path, config: Path, tmp_path: Path
):
    done = run("hosts", "sync", "--file", str(hosts), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"{hosts}: added the devrouter block: api.localhost" in done.stdout
    assert f"no router is running: writing the names of {config}" in done.stderr
    assert "*.shop.localhost left out: a hosts file has no wildcards" in done.stderr
    data = hosts.read_bytes()
    assert data.startswith(FOREIGN + b"\r\n")  # the last line got its terminator, no more
    assert not data.endswith(b"\n")  # and the file still ends without one
    assert entries(data) == both("api", "devrouter", "web.shop")
    assert b"127.0.0.1 api.localhost\r\n::1 api.localhost\r\n" in data  # the file's CRLF

    inode = os.stat(hosts).st_ino
    again = run("hosts", "sync", "--file", str(hosts), home=tmp_path)
    assert again.returncode == 0
    assert again.stdout == f"{hosts}: already up to date (3 names)\n"
    assert os.stat(hosts).st_ino == inode  # not written at all
    assert hosts.read_bytes() == data

    cleaned = run("hosts", "clean", "--file", str(hosts), home=tmp_path)
    assert cleaned.returncode == 0, cleaned.stderr
    assert cleaned.stdout.startswith(f"{hosts}: removed the devrouter block (api.localhost")
    assert hosts.read_bytes() == FOREIGN
    nothing = run("hosts", "clean", "--file", str(hosts), home=tmp_path)
    assert (nothing.returncode, nothing.stdout) == (
        0,
        f"{hosts}: no devrouter block; nothing to do\n",
    )
    assert hosts.read_bytes() == FOREIGN


def test_sync_writes_the_running_routers_names_and_says_what_changed(
    cli, hosts: Path, config: Path, tmp_path: Path
):
    router = cli("serve", "--config", str(config))
    assert run("alias", "db", str(free_port()), home=tmp_path).returncode == 0
    done = run("hosts", "sync", "--file", str(hosts), home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "no router is running" not in done.stderr
    assert entries(hosts.read_bytes()) == both("api", "db", "devrouter", "web.shop")

    assert run("alias", "--remove", "db", home=tmp_path).returncode == 0
    assert run("alias", "cache", str(free_port()), home=tmp_path).returncode == 0
    changed = run("hosts", "sync", "--file", str(hosts), home=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout == (
        f"{hosts}: added cache.localhost; removed db.localhost (4 names now)\n"
    )
    assert entries(hosts.read_bytes()) == both("api", "cache", "devrouter", "web.shop")
    assert hosts.read_bytes().startswith(FOREIGN)
    assert router.proc.poll() is None


def test_sync_keeps_owner_and_mode(hosts: Path, config: Path, tmp_path: Path):
    if os.geteuid() == 0:
        os.chown(hosts, 65534, 65534)
    os.chmod(hosts, 0o640)
    before = os.stat(hosts)
    assert run("hosts", "sync", "--file", str(hosts), home=tmp_path).returncode == 0
    after = os.stat(hosts)
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert stat.S_IMODE(after.st_mode) == 0o640
    assert run("hosts", "clean", "--file", str(hosts), home=tmp_path).returncode == 0
    assert stat.S_IMODE(os.stat(hosts).st_mode) == 0o640
    assert hosts.read_bytes() == FOREIGN


@pytest.mark.parametrize(
    ("inside", "line", "words"),
    [
        (f"{BEGIN_MARKER}\n127.0.0.1 api.localhost\n", 3, "begin marker without an end"),
        (f"{END_MARKER}\n", 3, "end marker without a begin"),
        (f"{BEGIN_MARKER}\n{END_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n", 5, "second"),
        (f"{BEGIN_MARKER}\n{BEGIN_MARKER}\n{END_MARKER}\n", 4, "inside the block"),
        (f"{BEGIN_MARKER}\n10.1.2.3 db.lan\n{END_MARKER}\n", 4, "does not write"),
    ],
)
@pytest.mark.parametrize("action", ["sync", "clean"])
def test_a_damaged_block_is_refused_and_the_file_left_alone(
    tmp_path: Path, config: Path, inside: str, line: int, words: str, action: str
):
    hosts = tmp_path / "hosts"
    original = b"127.0.0.1 localhost\n\n" + inside.encode() + b"# after\n"
    hosts.write_bytes(original)
    inode = os.stat(hosts).st_ino
    done = run("hosts", action, "--file", str(hosts), home=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    problem = [line for line in done.stderr.splitlines() if line.startswith("devrouter: ")]
    assert len(problem) == 1, done.stderr
    assert problem[0].startswith(f"devrouter: {hosts}:{line}: ")
    assert words in problem[0]
    assert "Traceback" not in done.stderr
    assert hosts.read_bytes() == original
    assert os.stat(hosts).st_ino == inode


@pytest.mark.parametrize("action", ["sync", "clean"])
def test_a_missing_file_is_one_line_and_exit_1(tmp_path: Path, action: str):
    done = run("hosts", action, "--file", str(tmp_path / "nope"), home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.splitlines()[-1] == f"devrouter: {tmp_path / 'nope'} does not exist"
    assert not (tmp_path / "nope").exists()


def test_usage(tmp_path: Path):
    assert run("hosts", home=tmp_path).returncode == 2
    assert run("hosts", "sync", "--bogus", home=tmp_path).returncode == 2
    helped = run("hosts", "sync", "--help", home=tmp_path)
    assert helped.returncode == 0
    assert "--file PATH" in helped.stdout and "/etc/hosts" in helped.stdout


# --- without permission -------------------------------------------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[Path]:
    """A hosts file in a directory, neither writable (for root: once its capabilities to
    override permissions are dropped, see `unprivileged`)."""
    directory = tmp_path / "etc"
    directory.mkdir()
    path = directory / "hosts"
    path.write_bytes(FOREIGN)
    path.chmod(0o444)
    directory.chmod(0o555)
    yield path
    directory.chmod(0o755)
    path.chmod(0o644)


def unprivileged() -> tuple[str, ...]:
    """A command prefix that runs without the right to write others' files: nothing for a
    user; for root, setpriv dropping the capabilities that override file permissions."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root, and setpriv (util-linux) is not here to drop privileges")
    return ("setpriv", "--bounding-set=-dac_override,-dac_read_search", "--inh-caps=-all")


@pytest.mark.parametrize("action", ["sync", "clean"])
def test_permission_denied_prints_the_exact_sudo_line(
    locked: Path, config: Path, tmp_path: Path, action: str
):
    if action == "clean":
        locked.chmod(0o644)
        locked.write_bytes(FOREIGN + b"\n" + f"{BEGIN_MARKER}\n{END_MARKER}\n".encode())
        locked.chmod(0o444)
    original = locked.read_bytes()
    done = run("hosts", action, "--file", str(locked), home=tmp_path, prefix=unprivileged())
    assert done.returncode == 1, done.stderr
    assert "Traceback" not in done.stderr
    last = done.stderr.splitlines()[-1]
    head = f"devrouter: cannot write {locked}: permission denied; run it with sudo: "
    assert last.startswith(head), done.stderr
    assert locked.read_bytes() == original
    assert sorted(p.name for p in locked.parent.iterdir()) == ["hosts"]

    words = shlex.split(last[len(head) :])
    assert words[0] == "sudo"
    tail = words[-4:] if action == "clean" else words[-6:-2]
    assert tail == ["hosts", action, "--file", str(locked)]
    if action == "sync":
        assert words[1:3] == ["env", f"DEVROUTER_HOME={tmp_path}/.local/state/devrouter"]
        assert words[-2:] == ["--config", str(config)]
    if os.geteuid() != 0:
        return
    # Root here: the line, run without "sudo" and from elsewhere, does what was asked.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    again = subprocess.run(
        words[1:],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=elsewhere,
        env=cli_env(HOME=str(elsewhere)),
    )
    assert again.returncode == 0, again.stderr
    if action == "sync":
        assert entries(locked.read_bytes()) == both("api", "devrouter", "web.shop")
    else:
        assert locked.read_bytes() == FOREIGN + b"\n"
