"""Which ports a `devrouter run` (or stack) command listens on, when it is not on `$PORT`.

A command that ignores `$PORT` listens on a port of its own choosing (8000, 3000, ...) and
its route answers "starting" forever. While a command is not ready, `watch_listens` looks
once a second at the TCP LISTEN sockets on this machine (`doctor.listeners.read_listeners`,
from /proc/net/tcp{,6}) and keeps those held by the command's processes: its process group,
and any descendant that left the group. When they are on other ports than `$PORT`, the
caller is told once per change, and says so in the terminal and to the router
(`listens_on`).

Cost per look: a read of /proc/net/tcp{,6}, of /proc/PID/stat per process, and a readlink
per open file of the command's own processes only. (`doctor.listeners.socket_pids` reads
every process's open files: right for one diagnosis, not for a poll every second.) Without
/proc (macOS, BSD) nothing is reported.

The decisions are pure: `family` (which pids are the command's) and `wrong_ports` (which
ports to report) take plain data and are tested with tables.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from ..aio import sleep_or_stop
from ..core.numbers import digits
from ..doctor.listeners import read_listeners

#: How often to look, in seconds, while the command is not ready.
LISTENS_POLL_S = 1.0
#: At most this many ports are reported (the router accepts no more, registry.MAX_LISTENS_ON).
MAX_REPORTED = 8
#: Ports a dev tool opens beside its server, never instead of it: Node's inspector, Vite's
#: HMR websocket, debugpy. On their own they say nothing about where the app listens.
AUXILIARY_PORTS = frozenset({9229, 24678, 5678})

_PROC = Path("/proc")


def family(processes: Mapping[int, tuple[int, int]], pgid: int) -> set[int]:
    """The pids that belong to the command whose process group is `pgid`: every member of
    the group, and every descendant of a member (a child that called setsid is still the
    command's). `processes` maps pid -> (parent pid, process group)."""
    members = {pid for pid, (_, group) in processes.items() if group == pgid}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in processes.items():
        children.setdefault(ppid, []).append(pid)
    todo = list(members)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in members:
                members.add(child)
                todo.append(child)
    return members


def wrong_ports(listening: Iterable[int], port: int) -> tuple[int, ...]:
    """The ports to report for a command that should listen on `port` and listens on
    `listening`: none once it listens on `port` (other ports beside it are its own
    business), else the others, sorted, without the auxiliary ones, at most MAX_REPORTED."""
    ports = set(listening)
    if port in ports:
        return ()
    return tuple(sorted(ports - AUXILIARY_PORTS))[:MAX_REPORTED]


def wrong_port_message(name: str, ports: Iterable[int], port: int) -> str:
    """The line for the terminal: what the command does and what to do about it."""
    where = ", ".join(str(p) for p in ports)
    return f"{name} listens on {where}, not on $PORT={port}; pass --port $PORT (or read PORT)"


# --- /proc ---------------------------------------------------------------------------------


def process_table(proc: Path = _PROC) -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, process group) for every process /proc shows."""
    out: dict[int, tuple[int, int]] = {}
    try:
        names = [p.name for p in proc.iterdir() if digits(p.name)]
    except OSError:
        return out
    for name in names:
        try:
            text = (proc / name / "stat").read_text(errors="replace")
        except OSError:  # it exited meanwhile
            continue
        fields = text[text.rfind(")") + 2 :].split()  # the command name may contain spaces
        if len(fields) > 2 and digits(fields[1]) and digits(fields[2]):
            out[int(name)] = (int(fields[1]), int(fields[2]))
    return out


def socket_inodes(pids: Iterable[int], proc: Path = _PROC) -> set[int]:
    """The inodes of the sockets that `pids` have open."""
    found: set[int] = set()
    for pid in pids:
        fd_dir = proc / str(pid) / "fd"
        try:
            fds = os.listdir(fd_dir)
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(fd_dir / fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link.endswith("]"):
                found.add(int(link[8:-1]))
    return found


def group_listen_ports(pgid: int, proc: Path = _PROC) -> set[int] | None:
    """The ports the command with process group `pgid` listens on (None: /proc cannot
    say). Only our own user's LISTEN sockets can be the command's."""
    listeners = read_listeners(proc)
    if listeners is None:
        return None
    uid = os.getuid()
    ours = [x for x in listeners if x.uid == uid]
    if not ours:
        return set()
    inodes = socket_inodes(family(process_table(proc), pgid), proc)
    return {x.port for x in ours if x.inode in inodes}


async def watch_listens(
    pgid: int,
    port: int,
    on_change: Callable[[tuple[int, ...]], None],
    stop: asyncio.Event,
    proc: Path = _PROC,
) -> None:
    """Until `stop`, call `on_change(ports)` each time the ports worth reporting
    (`wrong_ports`) change; `on_change(())` at the end if some were reported. Returns at
    once where /proc cannot tell."""
    last: tuple[int, ...] = ()
    while not stop.is_set():
        found = await asyncio.to_thread(group_listen_ports, pgid, proc)
        if found is None:
            return
        ports = wrong_ports(found, port)
        if ports != last and not stop.is_set():
            last = ports
            on_change(ports)
        await sleep_or_stop(stop, LISTENS_POLL_S)
    if last:
        on_change(())
