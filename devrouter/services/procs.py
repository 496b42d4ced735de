"""Processes: is one alive, start one in its own process group, hand it the terminal, stop
its whole group, start one in the background.

A command devrouter starts runs as the leader of its own process group, so that everything
it starts can be signalled and stopped together, and nothing is left listening after it.
Liveness reads /proc where there is one: a zombie, or a pid reused by another process,
counts as dead.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.errors import CommandError, StartupError

#: A shell's exit statuses for a command that cannot be executed, and one not found.
EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 126, 127
#: After SIGTERM to what is left of a process group, wait this long before SIGKILL (s).
STOP_GRACE_S = 3.0
#: How often a stopping group is looked at, in seconds.
_STOP_POLL_S = 0.05

_PROC = Path("/proc")


class CommandNotFound(CommandError):
    exit_code = EXIT_NOT_FOUND


class CannotExecute(CommandError):
    exit_code = EXIT_CANNOT_EXECUTE


# --- liveness ------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state letter, start time) from /proc, or None where there is no /proc."""
    try:
        text = (_PROC / str(pid) / "stat").read_text()
    except FileNotFoundError:
        return ("X", "") if _PROC.is_dir() else None
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may contain spaces
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_start_time(pid: int) -> str | None:
    info = _proc_stat(pid)
    return info[1] if info else None


def process_alive(pid: int, started: str | None = None) -> bool:
    """Is `pid` a running process (not a zombie, and the same one that started at
    `started`, when that is known)?"""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    info = _proc_stat(pid)
    if info is None:
        return True
    state, start = info
    if state in ("Z", "X"):
        return False
    return started is None or start == started


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for a process ended by signal N."""
    return 128 - returncode if returncode < 0 else returncode


# --- process groups -----------------------------------------------------------------------


def foreground_terminal() -> int | None:
    """fd 0 if it is a terminal whose foreground process group is ours."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def give_terminal(fd: int | None, pgid: int) -> None:
    if fd is None:
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(pgid: int, grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM what is left of a process group, then SIGKILL after `grace_s`: for a
    command that has exited (`run`, `up`), and for the groups of a registrant that died
    (the router)."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        await asyncio.sleep(_STOP_POLL_S)
        if not group_alive(pgid):
            return
    signal_group(pgid, signal.SIGKILL)


async def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: int | None,
    stdout: int,
    stderr: int,
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start `argv` as the leader of a new process group. Raises CommandNotFound (127) or
    CannotExecute (126)."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env),
            cwd=cwd,
            process_group=0,
        )
    except FileNotFoundError:
        raise CommandNotFound(f"cannot run {argv[0]!r}: command not found") from None
    except PermissionError:
        raise CannotExecute(f"cannot run {argv[0]!r}: permission denied") from None
    except OSError as exc:
        raise CannotExecute(f"cannot run {argv[0]!r}: {exc.strerror}") from None


# --- in the background --------------------------------------------------------------------


def spawn_detached(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> int:
    """Start `argv` in a new session, not as our child (double fork), with stdin from
    /dev/null and output appended to `log`. Returns its pid."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(rfd)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(wfd)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.chdir(cwd)
                os.execve(argv[0], list(argv), dict(env))
            os.write(wfd, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    os.close(log_fd)
    data = b""
    while chunk := os.read(rfd, 64):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    if not data:
        raise StartupError("could not start a background process")
    return int(data)
