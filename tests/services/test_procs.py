"""devrouter.services.procs: liveness, process groups and starting commands, on real
processes (each bounded in time, each stopped at the end)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from devrouter.core.errors import CommandError
from devrouter.services.procs import (
    EXIT_CANNOT_EXECUTE,
    EXIT_NOT_FOUND,
    CannotExecute,
    CommandNotFound,
    exit_status,
    group_alive,
    process_alive,
    process_start_time,
    signal_group,
    spawn_detached,
    start_process,
    stop_group,
)

#: Upper bound for any wait in these tests, in seconds.
WAIT_S = 10.0
#: A Python process that ignores SIGTERM, says so, and sleeps.
STUBBORN = (
    "import signal, time\n"
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
    "print('ready', flush=True)\n"
    "time.sleep(60)\n"
)
HAS_PROC = Path("/proc/self/stat").exists()


@pytest.fixture
def children() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for p in started:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)  # each leads its own group
        p.wait(WAIT_S)
        if p.stdout is not None:
            p.stdout.close()


def leader(children: list[subprocess.Popen[bytes]], code: str) -> subprocess.Popen[bytes]:
    """A Python process leading its own group, once it has said it is ready."""
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, process_group=0)
    children.append(p)
    assert p.stdout is not None
    assert p.stdout.readline() == b"ready\n"
    return p


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [(0, 0), (1, 1), (127, 127), (-signal.SIGINT, 130), (-signal.SIGKILL, 137)],
)
def test_exit_status_is_a_shells(returncode, expected):
    assert exit_status(returncode) == expected


def test_process_alive(children):
    assert process_alive(os.getpid())
    p = leader(children, "print('ready', flush=True)\nimport time\ntime.sleep(60)")
    assert process_alive(p.pid)
    assert process_alive(p.pid, process_start_time(p.pid))
    p.kill()
    p.wait(WAIT_S)
    assert not process_alive(p.pid)  # reaped: gone


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_a_zombie_or_a_different_start_time_is_not_alive(children):
    p = leader(children, "print('ready', flush=True)")
    deadline = time.monotonic() + WAIT_S
    while process_alive(p.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # it exits, and stays a zombie until reaped
    assert not process_alive(p.pid)
    q = leader(children, "print('ready', flush=True)\nimport time\ntime.sleep(60)")
    assert not process_alive(q.pid, "not its start time")


def test_stop_group_ends_a_group_that_ignores_sigterm(children):
    p = leader(children, STUBBORN)
    assert group_alive(p.pid)
    asyncio.run(stop_group(p.pid, grace_s=0.2))
    assert p.wait(WAIT_S) == -signal.SIGKILL
    assert not group_alive(p.pid)


def test_stop_group_is_quiet_for_a_group_that_is_gone():
    asyncio.run(stop_group(2**22 + 12345, grace_s=0.1))  # no such group: returns at once
    assert not signal_group(2**22 + 12345, signal.SIGTERM)


def test_start_process_leads_its_own_group(tmp_path):
    async def main() -> int:
        proc = await start_process(
            [sys.executable, "-c", "import os; print(os.getpgrp() == os.getpid())"],
            os.environ,
            stdin=None,
            stdout=os.open(tmp_path / "out", os.O_WRONLY | os.O_CREAT),
            stderr=2,
        )
        return await asyncio.wait_for(proc.wait(), WAIT_S)

    assert asyncio.run(main()) == 0
    assert (tmp_path / "out").read_text() == "True\n"


def test_start_process_refusals_carry_a_shells_exit_codes(tmp_path):
    script = tmp_path / "not-executable"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o600)
    cases = [
        (["no-such-command-devrouter"], CommandNotFound, EXIT_NOT_FOUND, "command not found"),
        ([str(script)], CannotExecute, EXIT_CANNOT_EXECUTE, "permission denied"),
    ]
    for argv, kind, code, words in cases:
        with pytest.raises(kind, match=words) as info:
            asyncio.run(start_process(argv, os.environ, stdin=None, stdout=1, stderr=2))
        assert isinstance(info.value, CommandError)
        assert info.value.exit_code == code


def test_spawn_detached_starts_a_process_that_is_not_our_child(tmp_path):
    """In a session of its own (a terminal's Ctrl-C does not reach it), with its output
    appended to a private log."""
    log = tmp_path / "log"
    code = "import os, sys; print('own session', os.getsid(0) != int(sys.argv[1]), flush=True)"
    argv = [sys.executable, "-c", code, str(os.getsid(0))]
    pid = spawn_detached(argv, dict(os.environ), tmp_path, log)
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)
    deadline = time.monotonic() + WAIT_S
    while not log.exists() or not log.read_text().endswith("\n"):
        assert time.monotonic() < deadline, "the background process wrote nothing"
        time.sleep(0.02)
    assert log.read_text() == "own session True\n"
    assert (log.stat().st_mode & 0o777) == 0o600
