"""devrouter.services.ports: the state directory and stable, never-busy port assignment."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from devrouter.services import ports
from devrouter.services.ports import (
    BROWSER_UNSAFE_PORTS,
    DEFAULT_RANGE,
    DEV_TOOL_PORTS,
    PortError,
    StateDirError,
    assign,
    ensure_state_dir,
    in_use,
    parse_range,
    state_dir,
)


def narrow(low: int, size: int = 100) -> dict[str, str]:
    return {"DEVROUTER_PORTS": f"{low}-{low + size - 1}"}


@pytest.fixture
def env() -> dict[str, str]:
    """A port range of our own, away from the default range and other test files."""
    return narrow(31000 + (os.getpid() % 15) * 100)


# --- the state directory ------------------------------------------------------------------


def test_state_dir_precedence(tmp_path):
    home = {"HOME": str(tmp_path)}
    assert state_dir(home) == tmp_path / ".local" / "state" / "devrouter"
    xdg = {**home, "XDG_STATE_HOME": str(tmp_path / "xdg")}
    assert state_dir(xdg) == tmp_path / "xdg" / "devrouter"
    own = {**xdg, "DEVROUTER_HOME": str(tmp_path / "own")}
    assert state_dir(own) == tmp_path / "own"


def test_state_dir_is_created_owner_only(tmp_path):
    path = ensure_state_dir(tmp_path / "a" / "b")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_state_dir_permissions_are_tightened(tmp_path):
    path = tmp_path / "wide"
    path.mkdir(mode=0o755)
    os.chmod(path, 0o755)
    ensure_state_dir(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o700


def test_state_dir_not_a_directory_is_refused(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StateDirError, match="not a directory"):
        ensure_state_dir(tmp_path / "file")


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_state_dir_of_another_user_is_refused(tmp_path):
    path = tmp_path / "theirs"
    path.mkdir()
    os.chown(path, 65534, 65534)
    with pytest.raises(StateDirError, match="another user"):
        ensure_state_dir(path)


# --- the range ----------------------------------------------------------------------------


def test_default_range_avoids_browser_refused_dev_tool_and_ephemeral_ports():
    lo, hi = DEFAULT_RANGE
    span = set(range(lo, hi + 1))
    assert not span & BROWSER_UNSAFE_PORTS
    assert not span & DEV_TOOL_PORTS
    assert hi < 32768  # below every OS's ephemeral range
    assert lo > max(BROWSER_UNSAFE_PORTS)
    assert hi - lo + 1 >= 1000


@pytest.mark.parametrize("text", ["", "17000", "a-b", "2000-1000", "80-90", "60000-70000"])
def test_bad_ranges_are_refused(text):
    with pytest.raises(PortError, match="DEVROUTER_PORTS"):
        parse_range(text)


def test_range_from_env():
    assert ports.port_range({"DEVROUTER_PORTS": "20000-20009"}) == (20000, 20009)
    assert ports.port_range({}) == DEFAULT_RANGE


# --- assignment ---------------------------------------------------------------------------


def test_same_name_same_port_and_remembered(tmp_path, env):
    first = assign(tmp_path, "api", env)
    assert assign(tmp_path, "api", env).port == first.port
    assert first.moved_from is None
    stored = json.loads((tmp_path / "ports.json").read_text())
    assert stored == {"ports": {"api": first.port}}
    assert stat.S_IMODE(os.stat(tmp_path / "ports.json").st_mode) == 0o600
    assert assign(tmp_path, "web", env).port != first.port


def test_first_choice_is_stable_without_state(tmp_path, env):
    """A wiped state directory gives the same first choice (a hash of the name)."""
    a = assign(tmp_path / "one", "api", env).port
    b = assign(tmp_path / "two", "api", env).port
    assert a == b


def test_busy_port_is_skipped_and_the_move_remembered(tmp_path, env):
    port = assign(tmp_path, "api", env).port
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        s.listen()
        moved = assign(tmp_path, "api", env)
    assert moved.port != port
    assert moved.moved_from == port
    assert assign(tmp_path, "api", env).port == moved.port  # the new one sticks


def test_busy_first_choice_for_a_new_name_is_skipped(tmp_path, env):
    expected = assign(tmp_path / "probe", "web", env).port
    with socket.socket(socket.AF_INET6) as s:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("::1", expected))
        except OSError:
            pytest.skip("no IPv6 loopback")
        s.listen()
        got = assign(tmp_path, "web", env).port
    assert got != expected  # busy on ::1 alone is busy


def test_in_use_sees_listeners_on_either_loopback():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        assert in_use(s.getsockname()[1])
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    assert not in_use(port)


def test_avoided_ports_are_never_assigned(tmp_path):
    env = {"DEVROUTER_PORTS": "5170-5175"}
    got = set()
    for i in range(6):
        try:
            got.add(assign(tmp_path, f"n{i}", env).port)
        except PortError:
            break
    assert got <= {5170, 5171, 5172, 5175}  # 5173 (Vite) and 5174 are skipped
    assert len(got) == len({p for p in (5170, 5171, 5172, 5175) if p in got or not in_use(p)})


def test_full_range_raises(tmp_path):
    env = {"DEVROUTER_PORTS": "31990-31991"}
    assign(tmp_path, "a", env)
    assign(tmp_path, "b", env)
    with pytest.raises(PortError, match="no free port left"):
        assign(tmp_path, "c", env)


def test_another_names_port_is_not_taken(tmp_path, env):
    api = assign(tmp_path, "api", env).port
    for i in range(20):
        assert assign(tmp_path, f"other{i}", env).port != api


def test_corrupt_state_file_is_replaced(tmp_path, env):
    (tmp_path / "ports.json").write_text("{not json")
    port = assign(tmp_path, "api", env).port
    assert json.loads((tmp_path / "ports.json").read_text())["ports"]["api"] == port


def test_concurrent_processes_get_distinct_ports(tmp_path, env):
    code = (
        "import sys; from pathlib import Path; from devrouter.services.ports import assign; "
        f"print(assign(Path(sys.argv[1]), sys.argv[2], {env!r}).port)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(tmp_path), f"svc{i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    got = [int(p.communicate(timeout=30)[0]) for p in procs]
    assert len(set(got)) == 8
    stored = json.loads((tmp_path / "ports.json").read_text())["ports"]
    assert sorted(stored.values()) == sorted(got)


def test_state_files_are_private(tmp_path: Path, env):
    assign(tmp_path, "api", env)
    for name in ("ports.json", "ports.lock"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o600
