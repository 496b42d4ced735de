"""Listening sockets handed over by a service manager: systemd socket activation
(`sd_listen_fds(3)`), which is how devrouter can serve port 80 without ever holding a
privilege itself: systemd (as root) binds 127.0.0.1:80 and [::1]:80 and starts `devrouter
serve` as the user with those sockets open (docs/service.md). `systemd-socket-activate`
does the same by hand, which is how the tests run it.

The protocol: `LISTEN_PID` is this process's pid (so a child that inherits the environment
does not take the sockets too) and `LISTEN_FDS` is how many descriptors, from 3 up, are
listening sockets. `for_this_process` is pure; `adopt` is the I/O.
"""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping

from ..core.errors import StartupError
from ..core.model import ListenAddr
from ..core.numbers import digits

#: The first inherited descriptor (sd_listen_fds: SD_LISTEN_FDS_START).
FIRST_FD = 3
#: More descriptors than this is not a socket unit of ours.
MAX_FDS = 64


def for_this_process(env: Mapping[str, str], pid: int) -> int:
    """How many inherited listening descriptors are this process's (0: none)."""
    if env.get("LISTEN_PID", "").strip() != str(pid):
        return 0
    count = env.get("LISTEN_FDS", "").strip()
    if not digits(count) or not 0 < int(count) <= MAX_FDS:
        return 0
    return int(count)


def forget(env: dict[str, str] | os._Environ[str]) -> None:
    """Remove the variables, so the processes this one starts do not see them."""
    for key in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"):
        env.pop(key, None)


def adopt(count: int, allow_remote: bool = False) -> list[tuple[socket.socket, ListenAddr]]:
    """The inherited sockets and their addresses. A descriptor that is not a listening TCP
    socket, or one on an address other machines reach (unless `allow_remote`), is refused:
    the service manager's unit is wrong, and serving would be worse than saying so."""
    out: list[tuple[socket.socket, ListenAddr]] = []
    try:
        for fd in range(FIRST_FD, FIRST_FD + count):
            try:
                sock = socket.socket(fileno=fd)
            except OSError as exc:
                raise StartupError(
                    f"socket activation: descriptor {fd} is not a socket ({exc.strerror})"
                ) from None
            out.append((sock, inherited_address(sock, fd, allow_remote)))
    except BaseException:
        for sock, _ in out:
            sock.detach()  # not ours to close: the error is reported, the fds stay as given
        raise
    for sock, _ in out:
        sock.setblocking(False)
    return out


def inherited_address(sock: socket.socket, fd: int, allow_remote: bool) -> ListenAddr:
    """The address of an inherited socket; StartupError (the socket detached, its
    descriptor left as given) when it is not a listening TCP socket on loopback."""
    if sock.type != socket.SOCK_STREAM or sock.family not in (socket.AF_INET, socket.AF_INET6):
        sock.detach()
        raise StartupError(
            f"socket activation: descriptor {fd} is not a TCP socket (use ListenStream= with "
            "an address and port)"
        )
    host, port = sock.getsockname()[:2]
    addr = ListenAddr(host, port)
    if not allow_remote and not _loopback(host):
        sock.detach()
        raise StartupError(
            f"socket activation: refusing {addr}: other machines can reach it, which would "
            "expose every routed service; listen on 127.0.0.1 and ::1 (or pass --allow-remote)"
        )
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise StartupError(f"socket activation: descriptor {fd} is not listening")
    return addr


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return False
