"""devrouter.services.listeners: which ports a command listens on instead of its $PORT.

The decisions (`family`, `wrong_ports`, the message) are tables; the /proc readers run
against a real child process that listens on a real loopback port (Linux only).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import free_port

from devrouter.services.listeners import (
    AUXILIARY_PORTS,
    MAX_REPORTED,
    family,
    group_listen_ports,
    process_table,
    watch_listens,
    wrong_port_message,
    wrong_ports,
)

#: Upper bound for a child to start listening, in seconds.
WAIT_S = 10.0

# pid -> (parent pid, process group)
PROCS = {
    1: (0, 1),
    100: (1, 100),  # the command: a group leader
    101: (100, 100),  # its worker
    102: (101, 102),  # a grandchild that left the group (setsid)
    103: (102, 103),  # ... and its own child
    200: (1, 200),  # something else
    201: (200, 100),  # not a descendant, but in the group (setpgid to it)
}


@pytest.mark.parametrize(
    ("procs", "pgid", "expected"),
    [
        (PROCS, 100, {100, 101, 102, 103, 201}),
        (PROCS, 200, {200, 201}),
        (PROCS, 999, set()),  # the group is gone
        ({}, 100, set()),
        ({5: (5, 5)}, 5, {5}),  # a process that is its own parent does not loop
    ],
)
def test_family(procs, pgid, expected):
    assert family(procs, pgid) == expected


@pytest.mark.parametrize(
    ("listening", "port", "expected"),
    [
        ({8000}, 4123, (8000,)),  # the case
        ({8000, 4123}, 4123, ()),  # it listens on $PORT: other ports are its own business
        ({4123}, 4123, ()),
        (set(), 4123, ()),  # not listening yet
        ({3001, 3000}, 4123, (3000, 3001)),  # sorted
        ({9229}, 4123, ()),  # Node's inspector alone says nothing about the app
        ({24678, 5173}, 4123, (5173,)),  # Vite's HMR port beside its own
        (set(range(5000, 5020)), 4123, tuple(range(5000, 5000 + MAX_REPORTED))),
    ],
)
def test_wrong_ports(listening, port, expected):
    assert wrong_ports(listening, port) == expected


def test_auxiliary_ports_are_not_devrouters_range():
    assert all(not 17000 <= p <= 17999 for p in AUXILIARY_PORTS)


@pytest.mark.parametrize(
    ("ports", "expected"),
    [
        ((8000,), "web listens on 8000, not on $PORT=4123; pass --port $PORT (or read PORT)"),
        ((3000, 3001), "web listens on 3000, 3001, not on $PORT=4123; pass --port $PORT "
         "(or read PORT)"),
    ],
)  # fmt: skip
def test_message(ports, expected):
    assert wrong_port_message("web", ports, 4123) == expected


# --- against /proc ------------------------------------------------------------------------

linux = pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="needs Linux /proc")

LISTENER = """
import socket, sys, os, time
s = socket.socket()
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen()
if len(sys.argv) > 2:  # a child that leaves the group and listens too
    if os.fork() == 0:
        os.setsid()
        t = socket.socket(); t.bind(("127.0.0.1", int(sys.argv[2]))); t.listen()
        time.sleep(30)
        os._exit(0)
print("listening", flush=True)
time.sleep(30)
"""


def start_listener(*ports: int) -> subprocess.Popen[str]:
    proc = subprocess.Popen(
        [sys.executable, "-c", LISTENER, *map(str, ports)],
        stdout=subprocess.PIPE,
        text=True,
        process_group=0,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "listening"
    return proc


def stop(proc: subprocess.Popen[str]) -> None:
    for pid in family(process_table(), proc.pid) | {proc.pid}:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()


@linux
def test_process_table_knows_us():
    table = process_table()
    assert table[os.getpid()] == (os.getppid(), os.getpgrp())


@linux
def test_the_ports_of_a_command_and_its_descendants():
    own, other = free_port(), free_port()
    proc = start_listener(own, other)
    try:
        ports: set[int] | None = set()
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:  # the grandchild binds a moment after its parent
            ports = group_listen_ports(proc.pid)
            if ports == {own, other}:
                break
            time.sleep(0.05)
        assert ports == {own, other}
        neighbour = start_listener(free_port())
        try:  # another command's group: not the first one's sockets
            assert not {own, other} & (group_listen_ports(neighbour.pid) or set())
        finally:
            stop(neighbour)
    finally:
        stop(proc)


@linux
async def test_watch_listens_reports_once_and_clears_at_the_end():
    wrong, port = free_port(), free_port()
    proc = start_listener(wrong)
    seen: list[tuple[int, ...]] = []
    told, stop_event = asyncio.Event(), asyncio.Event()

    def on_change(ports: tuple[int, ...]) -> None:
        seen.append(ports)
        told.set()

    try:
        task = asyncio.create_task(watch_listens(proc.pid, port, on_change, stop_event))
        await asyncio.wait_for(told.wait(), WAIT_S)
        assert seen == [(wrong,)]
        await asyncio.sleep(1.2)  # another look: the same ports are not reported again
        assert seen == [(wrong,)]
        stop_event.set()
        await asyncio.wait_for(task, WAIT_S)
        assert seen == [(wrong,), ()]
    finally:
        stop(proc)
