"""Starting, watching and always stopping the processes a run needs.

Every process is started in a session (process group) of its own, with its output in a log
file of the run's temporary directory, and with the kernel told to kill it if the harness
dies (PR_SET_PDEATHSIG). `Supervisor.close()` stops each group (SIGTERM, then SIGKILL); the
harness calls it from a `finally`, so Ctrl-C and exceptions stop everything too.

Resident memory and CPU time come from /proc: VmRSS of /proc/PID/status and utime+stime of
/proc/PID/stat, summed over the process and its descendants (nginx's worker is a child of
its master).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

LOOPBACK = "127.0.0.1"
#: How long a server may take to accept connections after it is started, in seconds.
START_TIMEOUT_S = 20.0
#: How long a process gets to exit after SIGTERM before SIGKILL, in seconds.
STOP_GRACE_S = 3.0
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
_PR_SET_PDEATHSIG = 1


class StartError(Exception):
    """A process did not start or did not open its port; str() says which and why."""


def free_port() -> int:
    """A TCP port that is free on the loopback address now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:  # runs in the child between fork and exec
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class Supervisor:
    """Owns every process of a run. Use as a context manager."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[Proc] = []

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def start(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Proc:
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log:
            try:
                popen = subprocess.Popen(
                    list(argv),
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent,
                )
            except OSError as exc:
                raise StartError(f"{name}: cannot run {argv[0]}: {exc.strerror}") from None
        proc = Proc(name, popen, log_path)
        self.procs.append(proc)
        return proc

    def stop(self, proc: Proc) -> None:
        _stop_group(proc.popen)
        if proc in self.procs:
            self.procs.remove(proc)

    def close(self) -> None:
        while self.procs:
            self.stop(self.procs[-1])


def _stop_group(popen: subprocess.Popen[bytes]) -> None:
    for sig, wait_s in ((signal.SIGTERM, STOP_GRACE_S), (signal.SIGKILL, STOP_GRACE_S)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(popen.pid, sig)  # the session id is the leader's pid
        try:
            popen.wait(timeout=wait_s)
            if sig == signal.SIGTERM:  # the leader left; make sure its group did too
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(popen.pid, signal.SIGKILL)
            return
        except subprocess.TimeoutExpired:
            continue


def wait_port(proc: Proc, port: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Return once 127.0.0.1:port accepts a connection; raise StartError if `proc` exits."""
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.popen.poll() is not None:
            raise StartError(
                f"{proc.name} exited with status {proc.popen.returncode} before listening "
                f"on port {port}:\n{proc.log_tail()}"
            )
        try:
            with socket.create_connection((LOOPBACK, port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise StartError(
                f"{proc.name} did not listen on port {port} within {timeout_s:.0f} s:\n"
                f"{proc.log_tail()}"
            )
        time.sleep(0.05)


# --- /proc ----------------------------------------------------------------------------------


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it, from /proc/PID/task/*/children (or, on kernels
    without that file, from the parent pids of every process)."""
    if not Path(f"/proc/{pid}/task/{pid}/children").exists():
        return _descendants_by_ppid(pid)
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            tasks = os.listdir(f"/proc/{p}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                text = Path(f"/proc/{p}/task/{tid}/children").read_text()
            except OSError:
                continue
            todo.extend(int(c) for c in text.split())
    return out


def _descendants_by_ppid(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, ()))
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants (sum of VmRSS), in bytes."""
    total = 0
    for p in descendants(pid):
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
                break
    return total


def cpu_seconds(pid: int) -> float:
    """utime+stime of `pid` and its descendants, in seconds."""
    ticks = 0
    for p in descendants(pid):
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
        ticks += int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)
    return ticks / _CLK_TCK
