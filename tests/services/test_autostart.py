"""devrouter.services.autostart: the state directory, `--listen` values, and a background
router that cannot start (through the real CLI)."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dev_harness import Dev, make_dev

from devrouter.core.errors import StartupError, UsageError
from devrouter.services.autostart import listen_args, the_state_dir


@pytest.mark.parametrize(
    ("values", "env", "expected"),
    [
        (["127.0.0.1:7400"], "", ["127.0.0.1:7400"]),
        (["7400", "[::1]:7400"], "127.0.0.1:9", ["7400", "[::1]:7400"]),  # flags win
        (None, "127.0.0.1:7401, [::1]:7401", ["127.0.0.1:7401", "[::1]:7401"]),
        ([], "7402", ["7402"]),
        (None, "", []),
    ],
)
def test_listen_args(values, env, expected, monkeypatch):
    monkeypatch.setenv("DEVROUTER_LISTEN", env)
    assert listen_args(values) == expected


@pytest.mark.parametrize(
    ("values", "env"), [(["127.0.0.1:notaport"], ""), (None, "127.0.0.1:70000")]
)
def test_a_bad_listen_address_is_a_usage_error_now(values, env, monkeypatch):
    monkeypatch.setenv("DEVROUTER_LISTEN", env)
    with pytest.raises(UsageError, match=r"^--listen: ") as info:
        listen_args(values)
    assert info.value.exit_code == 2


def test_the_state_dir_is_created_private(tmp_path, monkeypatch):
    monkeypatch.setenv("DEVROUTER_HOME", str(tmp_path / "h"))
    path = the_state_dir()
    assert path == tmp_path / "h"
    assert (path.stat().st_mode & 0o777) == 0o700


def test_an_unusable_state_dir_is_a_startup_error(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("DEVROUTER_HOME", str(tmp_path / "file"))
    with pytest.raises(StartupError, match="not a directory"):
        the_state_dir()


@pytest.fixture
def dev(tmp_path: Path) -> Iterator[Dev]:
    yield from make_dev(tmp_path)


def test_a_background_router_that_cannot_start_is_reported_with_its_last_line(dev):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        res = dev.cli("run", "--listen", f"127.0.0.1:{port}", "api", "--", "true")
    assert res.returncode == 3, res.stderr
    log = dev.home / "router.log"
    assert "the background router did not start: " in res.stderr
    assert f"(log: {log})" in res.stderr
    last = [ln for ln in log.read_text().splitlines() if ln.strip()][-1].strip()
    assert last in res.stderr
    assert "Traceback" not in res.stderr
