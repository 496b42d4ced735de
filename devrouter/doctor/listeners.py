"""The LISTEN sockets of this machine and the processes that hold them, from /proc (Linux).

`parse_proc_net` is pure (the text of /proc/net/tcp{,6} in, `Listener`s out); the others
read /proc. A socket's inode is matched to a /proc/PID/fd link and /proc/PID/cmdline is
read; other users' processes cannot be inspected without root and are named as unknown,
with the reason. Without /proc, `read_listeners` returns None.
"""

from __future__ import annotations

import ipaddress
import os
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.model import is_loopback_host
from ..core.numbers import digits

#: A process's command line is shortened to this many characters.
MAX_CMDLINE_CHARS = 80


@dataclass(frozen=True, slots=True)
class Listener:
    """A LISTEN socket from /proc/net/tcp{,6}, with the process holding it if known."""

    host: str  # "127.0.0.1", "::1", "0.0.0.0", "::", "192.168.1.5"
    port: int
    uid: int
    inode: int
    pid: int | None = None
    process: str | None = None  # the command line, or why it is unknown

    @property
    def where(self) -> str:
        return hostport(self.host, self.port)

    @property
    def wildcard(self) -> bool:
        return self.host in ("0.0.0.0", "::")

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def owner(self) -> str:
        if self.pid is not None:
            return f"pid {self.pid}: {self.process}"
        return self.process or "unknown"

    def to_json(self) -> dict[str, Any]:
        return {
            "address": self.host,
            "port": self.port,
            "uid": self.uid,
            "pid": self.pid,
            "process": self.process,
        }


def hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


# --- /proc ---------------------------------------------------------------------------------


def parse_proc_net(text: str, v6: bool) -> list[Listener]:
    """The LISTEN sockets (state 0A) in the text of /proc/net/tcp or /proc/net/tcp6.

    Addresses are hex in the kernel's byte order: one 32-bit word for IPv4, four for IPv6,
    each in host order; the port is big-endian hex.
    """
    out: list[Listener] = []
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 10 or fields[3] != "0A":
            continue
        addr_hex, _, port_hex = fields[1].partition(":")
        try:
            raw = bytes.fromhex(addr_hex)
            if sys.byteorder == "little":
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            ip: ipaddress.IPv4Address | ipaddress.IPv6Address
            ip = ipaddress.IPv6Address(raw) if v6 else ipaddress.IPv4Address(raw)
            if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
                ip = ip.ipv4_mapped
            out.append(Listener(str(ip), int(port_hex, 16), int(fields[7]), int(fields[9])))
        except ValueError:
            continue
    return out


def read_listeners(proc: Path = Path("/proc")) -> list[Listener] | None:
    """Every TCP LISTEN socket on this machine, or None when /proc/net is not readable."""
    found: list[Listener] = []
    readable = False
    for name, v6 in (("tcp", False), ("tcp6", True)):
        try:
            text = (proc / "net" / name).read_text(errors="replace")
        except OSError:
            continue
        readable = True
        found.extend(parse_proc_net(text, v6))
    return found if readable else None


def socket_pids(inodes: Iterable[int], proc: Path = Path("/proc")) -> dict[int, int]:
    """Map socket inodes to the pid of a process that has them open (the lowest pid wins,
    which is usually the parent of forked workers)."""
    wanted = {f"socket:[{i}]": i for i in inodes}
    found: dict[int, int] = {}
    if not wanted:
        return found
    try:
        pids = sorted(int(p.name) for p in proc.iterdir() if digits(p.name))
    except OSError:
        return found
    for pid in pids:
        try:
            fds = list((proc / str(pid) / "fd").iterdir())
        except OSError:  # another user's process, or it exited
            continue
        for fd in fds:
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            inode = wanted.get(link)
            if inode is not None and inode not in found:
                found[inode] = pid
        if len(found) == len(wanted):
            break
    return found


def process_cmdline(pid: int, proc: Path = Path("/proc")) -> str:
    """The command line of a process, shortened; its name in brackets when it has none."""
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
        text = " ".join(a.decode(errors="replace") for a in raw.split(b"\0") if a)
        # a process picks its own argv: keep terminal escapes and newlines out of the report
        text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        if not text:
            text = "[" + (proc / str(pid) / "comm").read_text(errors="replace").strip() + "]"
    except OSError:
        return "unknown (it has exited)"
    if len(text) > MAX_CMDLINE_CHARS:
        text = text[: MAX_CMDLINE_CHARS - 3] + "..."
    return text


def with_owners(
    listeners: Sequence[Listener], my_uid: int, proc: Path = Path("/proc")
) -> list[Listener]:
    """The same listeners, each with the pid and command line that holds it where /proc
    shows them, or a reason why not."""
    pids = socket_pids({x.inode for x in listeners}, proc)
    out: list[Listener] = []
    for x in listeners:
        pid = pids.get(x.inode)
        if pid is not None:
            out.append(_replace_owner(x, pid, process_cmdline(pid, proc)))
        else:
            out.append(_replace_owner(x, None, unknown_owner(x.uid, my_uid)))
    return out


def _replace_owner(x: Listener, pid: int | None, process: str) -> Listener:
    return Listener(x.host, x.port, x.uid, x.inode, pid, process)


def unknown_owner(socket_uid: int, my_uid: int) -> str:
    if socket_uid != my_uid and my_uid != 0:
        return "unknown (another user's process)"
    return "unknown (not visible here: another container or PID namespace?)"
