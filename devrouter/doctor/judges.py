"""`devrouter doctor`: why does http://NAME.localhost:7355 not work? Checks and explains.

Theory of operation. Doctor gathers facts about this machine, judges them, and prints one
line per check, `ok`, `info`, `warn` or `fail`, with a fix under every problem:

1. router: found as every command finds it (`devrouter.locate`: `--port`, else the control
   socket in the state directory, else the config's `listen:`, else 7355), then
   GET http://127.0.0.1:PORT/api/status (then [::1]). devrouter's status document means
   devrouter; any other answer on the port is named with the process that holds it. A
   devrouter that is not the one behind this state directory's control socket (another
   user's, or one started with another DEVROUTER_HOME) is said to be that, not "running".
2. resolver: do `*.localhost` names resolve to loopback for ordinary programs?
3. config: the file is read and validated as `devrouter check` does.
4. routes (the running router's live table through its control socket, which holds the
   `run`, `alias` and stack routes too; else its /api/status; else the config file's): a
   TCP connect to each loopback
   address a route may use, compared with the LISTEN sockets in /proc/net/tcp{,6}, to say
   where the service listens instead and which process holds the port.
5. ports: ports in `devrouter run`'s assignment range that other processes hold.

The `judge_*` functions are pure: observations in, `Check`s out, testable without sockets.

Only loopback addresses are contacted (127.0.0.1, ::1, or another loopback a route names),
and every connect and request has a timeout. The resolver check calls getaddrinfo only when
the system resolver answers `.localhost` names without the network (a `myhostname` or
`resolve` source in /etc/nsswitch.conf, or only loopback DNS servers). With plain
`files dns`, glibc would send the name to the DNS server, which doctor never does.

Process names come from /proc (Linux): a LISTEN socket's inode is matched to a
/proc/PID/fd link and /proc/PID/cmdline is read. Other users' processes cannot be
inspected without root and are "unknown (another user's process)". Without /proc only the
connects are used.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import importlib
import ipaddress
import json
import os
import socket
import sys
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

import aiohttp

from .config import (
    DEFAULT_LOOPBACKS,
    DEFAULT_PORT,
    Config,
    ConfigError,
    Upstream,
    is_loopback_host,
    parse_target,
)
from .core.access import TOKEN_HEADER, load_secrets
from .locate import LiveRoute, Located, is_devrouter_answer, is_devrouter_status, locate
from .ports import state_dir
from .reload import find_config, read_config

EXIT_OK, EXIT_FAILED = 0, 1

#: A TCP connect to a loopback port, in seconds. Loopback connects complete at once or are
#: refused at once; one that takes this long hit a full backlog or a hung process.
CONNECT_TIMEOUT_S = 1.0
#: The whole GET /api/status exchange with the router, in seconds.
HTTP_TIMEOUT_S = 3.0
#: The `*.localhost` lookup, in seconds (run in a daemon thread, which is left behind if
#: getaddrinfo hangs, so doctor still exits in time).
RESOLVE_TIMEOUT_S = 2.0
#: A /api/status body larger than this, in bytes, is not read as JSON.
MAX_STATUS_BYTES = 4 * 1024 * 1024
#: A process's command line is shortened to this many characters.
MAX_CMDLINE_CHARS = 80
#: At most this many ports of the assignment range are named one by one.
MAX_PORTS_LISTED = 5
#: The name looked up to test `*.localhost` resolution.
CHECK_NAME = "devrouter-doctor-check.localhost"
#: The inclusive range `devrouter run` assigns ports from, when devrouter.ports (the port
#: assignment of issue 3) is installed but does not say; the range it documents: above the
#: ports browsers refuse (the highest is 10080), clear of the ports dev tools pick, below
#: the ephemeral ranges. devrouter.ports.port_range() is asked first.
DEFAULT_PORT_RANGE = (17000, 17999)
#: `$DEVROUTER_PORTS` ("LOW-HIGH") changes the range, as it does for `devrouter run`.
PORT_RANGE_ENV = "DEVROUTER_PORTS"

NSSWITCH_PATH = Path("/etc/nsswitch.conf")
RESOLV_CONF_PATH = Path("/etc/resolv.conf")
#: NSS host sources that answer `*.localhost` themselves (systemd's nss-myhostname and
#: nss-resolve; systemd-resolved never forwards `.localhost`).
_NSS_ANSWERS_LOCALHOST = frozenset({"myhostname", "resolve"})
#: NSS host sources that never send a `.localhost` name over the network.
_NSS_LOCAL_ONLY = frozenset(
    {"files", "mymachines", "mdns_minimal", "mdns4_minimal", "mdns6_minimal", "libvirt"}
)

Status = Literal["ok", "info", "warn", "fail"]
_RANK: dict[str, int] = {"ok": 0, "info": 0, "warn": 1, "fail": 2}
#: Outcome of one connect: "open", "refused", "timeout" or "unavailable" (no such address
#: here, e.g. IPv6 disabled).
Reach = Literal["open", "refused", "timeout", "unavailable"]


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: a line of output, and an object in `--json`."""

    check: str  # "router", "resolver", "config", "route", "ports"
    status: Status
    message: str
    fix: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
            "data": dict(self.data),
        }


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
        return _hostport(self.host, self.port)

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


@dataclass(frozen=True, slots=True)
class RouteTarget:
    """Something to check: a route (or one of its path routes) and where it forwards."""

    label: str  # "api.localhost", "web.localhost/api"
    name: str
    port: int
    hosts: tuple[str, ...] = DEFAULT_LOOPBACKS
    source: str | None = None  # "config", "run", "stack", "alias" when known
    listens_on: tuple[int, ...] = ()  # a run/stack service's other listening ports


@dataclass
class RouterProbe:
    """What answered on the router's port."""

    port: int
    answered: str | None = None  # the address that answered, or None
    status: dict[str, Any] | None = None  # /api/status, when it was JSON
    http_status: int | None = None
    body_start: bytes = b""
    error: Reach | None = None  # when nothing answered: why
    locked: bool = False  # devrouter's 401: it requires a secret doctor could not present
    devrouter_header: bool = False  # the answer carried devrouter's X-Devrouter-Error

    @property
    def is_devrouter(self) -> bool:
        """The rule `locate` applies too: devrouter's status document, or its own answer."""
        return is_devrouter_answer(self.status, self.devrouter_header, self.body_start)


@dataclass
class Report:
    port: int
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> Status:
        worst: Status = "ok"
        for c in self.checks:
            if _RANK[c.status] > _RANK[worst]:
                worst = c.status
        return worst

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if any(c.status == "fail" for c in self.checks) else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "status": self.status,
            "exit_code": self.exit_code,
            "port": self.port,
            "checks": [c.to_json() for c in self.checks],
        }


def _hostport(host: str, port: int) -> str:
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
        pids = sorted(int(p.name) for p in proc.iterdir() if p.name.isdigit())
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


# --- probes (I/O; loopback only, bounded) --------------------------------------------------


def _require_loopback(host: str) -> None:
    if not is_loopback_host(host):
        raise ValueError(f"doctor only connects to loopback addresses, not {host!r}")


async def probe_connect(host: str, port: int, timeout_s: float = CONNECT_TIMEOUT_S) -> Reach:
    """Open and close one TCP connection to a loopback address."""
    _require_loopback(host)
    try:
        _reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except TimeoutError:
        return "timeout"
    except ConnectionRefusedError:
        return "refused"
    except OSError:
        return "unavailable"
    writer.close()
    with contextlib.suppress(OSError, TimeoutError):
        await asyncio.wait_for(writer.wait_closed(), timeout_s)
    return "open"


async def probe_router(
    port: int,
    timeout_s: float = HTTP_TIMEOUT_S,
    headers: Mapping[str, str] | None = None,
    hosts: Sequence[str] = DEFAULT_LOOPBACKS,
) -> RouterProbe:
    """GET /api/status on each of `hosts` (127.0.0.1, then ::1). Never follows redirects,
    never uses a proxy from the environment. `headers` carry the router's secret when it has
    one."""
    result = RouterProbe(port)
    timeout = aiohttp.ClientTimeout(total=timeout_s, sock_connect=CONNECT_TIMEOUT_S)
    errors: list[Reach] = []
    async with aiohttp.ClientSession(timeout=timeout, trust_env=False) as session:
        for host in hosts:
            _require_loopback(host)
            url = f"http://{_hostport(host, port)}/api/status"
            try:
                async with session.get(
                    url,
                    allow_redirects=False,
                    headers={"Accept": "application/json", **(headers or {})},
                ) as resp:
                    result.answered = host
                    result.http_status = resp.status
                    result.devrouter_header = "X-Devrouter-Error" in resp.headers
                    result.locked = resp.status == 401 and result.devrouter_header
                    body = bytearray()
                    while len(body) <= MAX_STATUS_BYTES:
                        chunk = await resp.content.read(64 * 1024)
                        if not chunk:
                            break
                        body += chunk
            except aiohttp.ClientConnectorError as exc:
                refused = isinstance(exc.os_error, ConnectionRefusedError)
                errors.append("refused" if refused else "unavailable")
                continue
            except (TimeoutError, aiohttp.ServerTimeoutError):
                result.answered = host
                result.error = "timeout"
                return result
            except (aiohttp.ClientError, OSError):
                result.answered = host  # it accepted the connection but did not speak HTTP
                return result
            result.body_start = bytes(body[:64])
            if resp.status == 200 and len(body) <= MAX_STATUS_BYTES:
                with contextlib.suppress(ValueError):
                    data = json.loads(body)
                    if is_devrouter_status(data):  # not just any JSON at /api/status
                        result.status = data
            return result
    result.error = "refused" if "refused" in errors else "unavailable"
    return result


def resolve_bounded(
    name: str, timeout_s: float = RESOLVE_TIMEOUT_S
) -> list[str] | BaseException | None:
    """getaddrinfo(name) in a daemon thread: the addresses, the error, or None on timeout."""
    box: list[list[str] | BaseException] = []

    def work() -> None:
        try:
            infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
            box.append(sorted({str(i[4][0]) for i in infos}))
        except (OSError, UnicodeError) as exc:
            box.append(exc)

    t = threading.Thread(target=work, name="devrouter-doctor-resolve", daemon=True)
    t.start()
    t.join(timeout_s)
    return box[0] if box else None


# --- resolver ------------------------------------------------------------------------------


def nss_hosts_sources(nsswitch_text: str | None) -> list[str]:
    """The sources on the `hosts:` line, without their [ACTION] clauses. glibc's default
    when the file is missing is `dns files`."""
    if nsswitch_text is None:
        return ["dns", "files"]
    for line in nsswitch_text.splitlines():
        key, sep, rest = line.split("#", 1)[0].partition(":")
        if sep and key.strip() == "hosts":
            sources: list[str] = []
            depth = 0
            for token in rest.replace("[", " [ ").replace("]", " ] ").split():
                if token == "[":
                    depth += 1
                elif token == "]":
                    depth = max(0, depth - 1)
                elif depth == 0:
                    sources.append(token)
            return sources
    return ["dns", "files"]


def nameservers(resolv_text: str | None) -> list[str]:
    """The `nameserver` addresses in resolv.conf; glibc uses 127.0.0.1 when there are none."""
    found = []
    for line in (resolv_text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            found.append(parts[1].split("%", 1)[0])
    return found or ["127.0.0.1"]


def lookup_stays_local(sources: Sequence[str], servers: Sequence[str]) -> bool:
    """Would glibc resolve a `.localhost` name without sending it off this machine?"""
    return _remote_lookup(sources, servers) is None


def _remote_lookup(sources: Sequence[str], servers: Sequence[str]) -> str | None:
    """Why a lookup would leave this machine, or None when it would not."""
    for src in sources:
        if src in _NSS_ANSWERS_LOCALHOST:
            return None
        if src == "dns":
            remote = [s for s in servers if not is_loopback_host(s)]
            return f"they go to the DNS server {', '.join(remote)}" if remote else None
        if src not in _NSS_LOCAL_ONLY:
            return f"they go to the '{src}' source, which may use the network"
    return None


def judge_resolver(
    sources: Sequence[str],
    servers: Sequence[str],
    lookup: Callable[[str], list[str] | BaseException | None],
    port: int,
) -> Check:
    """Does `*.localhost` resolve to loopback here? `lookup` is only called when the system
    resolver would not send the name over the network."""
    hosts_line = " ".join(sources)
    fix = (
        "browsers resolve *.localhost themselves, and so does curl >= 7.85; for other "
        f"programs, use http://127.0.0.1:{port} with a 'Host: NAME.localhost' header, list "
        "the names in /etc/hosts, or add 'myhostname' to the hosts: line of "
        "/etc/nsswitch.conf (package libnss-myhostname); see docs/localhost.md"
    )
    data: dict[str, Any] = {"name": CHECK_NAME, "nsswitch_hosts": hosts_line}
    data["nameservers"] = list(servers)
    remote = _remote_lookup(sources, servers)
    if remote is not None:
        data.update(looked_up=False, addresses=None)
        return Check(
            "resolver",
            "warn",
            "*.localhost names are not resolved locally for programs that use the system "
            f"resolver (hosts: {hosts_line}): {remote}, and doctor did not ask",
            fix,
            data,
        )
    result = lookup(CHECK_NAME)
    data["looked_up"] = True
    if result is None:
        data["addresses"] = None
        return Check(
            "resolver",
            "warn",
            f"looking up {CHECK_NAME} took longer than {RESOLVE_TIMEOUT_S:g} s",
            fix,
            data,
        )
    if isinstance(result, BaseException):
        data["addresses"] = None
        return Check(
            "resolver",
            "warn",
            f"*.localhost names do not resolve on this machine ({CHECK_NAME}: {result})",
            fix,
            data,
        )
    data["addresses"] = result
    outside = [a for a in result if not is_loopback_host(a)]
    if outside or not result:
        return Check(
            "resolver",
            "warn",
            f"{CHECK_NAME} resolves to {', '.join(outside) or 'nothing'}, not to loopback: "
            "programs that use the system resolver send *.localhost requests elsewhere",
            fix,
            data,
        )
    return Check(
        "resolver",
        "ok",
        f"*.localhost names resolve to loopback on this machine ({', '.join(result)})",
        None,
        data,
    )


# --- router --------------------------------------------------------------------------------


def judge_router(
    probe: RouterProbe,
    holders: Sequence[Listener],
    found: Located | None = None,
    my_uid: int | None = None,
) -> Check:
    """Is devrouter running on the port, or is something else there? `found` says how the
    port was chosen (devrouter.locate); a devrouter found otherwise than through this state
    directory's control socket is not called ours. Without `found`, any devrouter is."""
    port = probe.port
    owners = _owners(holders)
    ours = found is None or found.ours
    data: dict[str, Any] = {
        "port": port,
        "running": probe.is_devrouter,
        "ours": False,
        "found_by": found.how if found else None,
        "answered_on": probe.answered,
        "version": None,
        "listen": [],
        "listeners": [x.to_json() for x in holders],
    }
    how = f" ({found.how}{'; ' + found.note if found.note else ''})" if found else ""
    other_port = (
        "stop it, or run devrouter on another port (devrouter serve --listen "
        "127.0.0.1:PORT) and pass --port PORT to doctor"
    )
    if probe.answered is None:
        where = _listening_elsewhere(holders)
        msg = f"no router is running on port {port} (nothing answers on 127.0.0.1 or ::1){how}"
        if where:
            msg = f"no router answers on loopback port {port}; {where}{how}"
        return Check(
            "router",
            "fail",
            msg,
            "start it with 'devrouter serve' (it reads ./devrouter.yaml), or pass --port if "
            "it runs on another port",
            data,
        )
    held = f" ({owners})" if owners else ""
    if probe.is_devrouter and not ours:
        return _not_ours(probe, holders, data, how, my_uid)
    data["ours"] = probe.is_devrouter
    if probe.status is not None:
        status = probe.status
        version = status.get("version")
        listen = status.get("listen")
        listen_list = [str(a) for a in listen] if isinstance(listen, list) else []
        data.update(version=version, listen=listen_list)
        on = f" ({', '.join(listen_list)})" if listen_list else ""
        pid = f", {owners}" if owners else ""
        return Check(
            "router",
            "ok",
            f"devrouter {version or '(unknown version)'} is running on port {port}{on}{pid}"
            f"{', ' + found.how if found else ''}",
            None,
            data,
        )
    if probe.locked:
        data["running"] = True
        from_socket = found is not None and found.routes is not None
        table = "read through its control socket" if from_socket else "taken from the config file"
        return Check(
            "router",
            "warn",
            f"devrouter is running on port {port}{held} but requires a secret (access: in its "
            f"config) that doctor could not read here; its routes are {table}",
            "run doctor where the secret is readable (the same environment variable, or the "
            "secret file as its owner)",
            data,
        )
    devrouter_there = probe.is_devrouter or any(_is_devrouter(x.process) for x in holders)
    if probe.error == "timeout":
        who = "devrouter" if devrouter_there else "something else"
        return Check(
            "router",
            "fail",
            f"{who} is listening on port {port} but does not answer HTTP within "
            f"{HTTP_TIMEOUT_S:g} s: {owners or 'process unknown'}",
            "restart it" if devrouter_there else other_port,
            data,
        )
    if devrouter_there:
        data["running"] = True
        return Check(
            "router",
            "warn",
            f"devrouter answers on port {port}{held} but has no /api/status (an older "
            "version?); its routes are taken from the config file",
            "restart it with this version of devrouter",
            data,
        )
    answer = f"HTTP {probe.http_status}" if probe.http_status else "not HTTP"
    return Check(
        "router",
        "fail",
        f"something else is listening on port {port} ({answer} for /api/status): "
        f"{owners or 'process unknown'}{how}",
        other_port,
        data,
    )


def _not_ours(
    probe: RouterProbe,
    holders: Sequence[Listener],
    data: dict[str, Any],
    how: str,
    my_uid: int | None,
) -> Check:
    """A devrouter answers on the port, but not the one behind this state directory's
    control socket: `run`, `alias` and `ls` do not reach it."""
    port = probe.port
    version = (probe.status or {}).get("version")
    data.update(running=True, version=version)
    theirs = sorted({x.uid for x in holders if my_uid is not None and x.uid != my_uid})
    owners = _owners(holders)
    if theirs:
        return Check(
            "router",
            "fail",
            f"the devrouter on port {port} belongs to another user (uid {theirs[0]}: "
            f"{owners}){how}: *.localhost:{port} reaches their routes, not yours",
            "run yours on another port (devrouter serve --listen 127.0.0.1:PORT, or "
            "DEVROUTER_LISTEN for `devrouter run`) and use that port",
            data,
        )
    held = f" ({owners})" if owners else ""
    return Check(
        "router",
        "warn",
        f"devrouter {version or ''}{' ' if version else ''}answers on port {port}{held}, but "
        f"it is not the router of this state directory{how}: `devrouter run`, `alias` and "
        "`ls` do not reach it",
        "run doctor with the DEVROUTER_HOME that router was started with, or stop it and "
        "start yours with 'devrouter serve'",
        data,
    )


def _is_devrouter(cmdline: str | None) -> bool:
    """`devrouter serve`, `/path/to/devrouter ...` or `python -m devrouter ...`."""
    return any(Path(w).name == "devrouter" for w in (cmdline or "").split())


def _owners(listeners: Iterable[Listener]) -> str:
    seen: list[str] = []
    for x in listeners:
        if x.owner not in seen:
            seen.append(x.owner)
    return "; ".join(seen)


def _listening_elsewhere(listeners: Sequence[Listener]) -> str:
    others = [x for x in listeners if not x.loopback and not x.wildcard]
    if not others:
        return ""
    where = ", ".join(x.where for x in others)
    return f"it is held on {where} only ({_owners(others)})"


# --- config --------------------------------------------------------------------------------


def judge_config(
    path: Path | None,
    config: Config | None,
    error: ConfigError | None,
    router_error: str | None,
    router_notes: Sequence[str] = (),
) -> list[Check]:
    """The config file's verdict; the running router's own config error if it differs, and
    its warnings and route clashes (`router_notes`)."""
    checks: list[Check] = []
    fix = (
        "correct the line named and save: a running router reloads the file by itself and "
        "keeps its last good routes meanwhile ('devrouter check' validates without it)"
    )
    if path is None:
        checks.append(
            Check(
                "config",
                "info",
                "no config file found (looked for $DEVROUTER_CONFIG, ./devrouter.yaml and "
                "~/.config/devrouter/config.yaml)",
                None,
                {"path": None},
            )
        )
    elif error is not None:
        checks.append(Check("config", "fail", str(error), fix, {"path": str(path)}))
    elif config is not None:
        n = len(config.routes)
        checks.append(
            Check(
                "config",
                "ok",
                f"config {path}: valid, {n} route{'s' if n != 1 else ''}",
                None,
                {"path": str(path), "routes": n},
            )
        )
    for text in router_notes:
        checks.append(
            Check(
                "config",
                "warn",
                f"the running router reports: {text}",
                "rename one of the two routes" if "clashes" in text else "see the message",
                {"path": str(path) if path else None, "from_router": True},
            )
        )
    if router_error and (error is None or str(error) != router_error):
        checks.append(
            Check(
                "config",
                "fail",
                f"the running router reports: {router_error} (it keeps its last good routes)",
                fix,
                {"path": str(path) if path else None, "from_router": True},
            )
        )
    return checks


# --- routes --------------------------------------------------------------------------------


def targets_from_config(config: Config) -> list[RouteTarget]:
    out: list[RouteTarget] = []
    for r in config.routes:
        out.append(_target(r.host, r.name, r.upstream))
        for p in sorted(r.paths, key=lambda p: p.prefix):
            out.append(_target(f"{r.host}{p.prefix}", r.name, p.upstream))
    return out


def _target(label: str, name: str, upstream: Upstream) -> RouteTarget:
    return RouteTarget(label, name, upstream.port, upstream.hosts)


def targets_from_live(routes: Sequence[LiveRoute]) -> list[RouteTarget]:
    """The running router's live table (devrouter.locate): config, run, alias and stacks."""
    out: list[RouteTarget] = []
    for r in routes:
        host = f"{r.name}.localhost"
        up = r.upstream
        out.append(RouteTarget(host, r.name, up.port, up.hosts, r.source, r.listens_on))
        for p in sorted(r.paths, key=lambda p: p.prefix):
            out.append(RouteTarget(f"{host}{p.prefix}", r.name, p.upstream.port, p.upstream.hosts))
    return out


def targets_from_status(status: Mapping[str, Any]) -> list[RouteTarget] | None:
    """Routes from /api/status (`routes[]` with `name`, `port` and `target`, and when
    present `host`, `hosts` and `paths[]`); None when the document has no route list."""
    routes = status.get("routes")
    if not isinstance(routes, list):
        return None
    out: list[RouteTarget] = []
    for r in routes:
        if not isinstance(r, dict) or not isinstance(r.get("name"), str):
            continue
        name: str = r["name"]
        host = r.get("host")
        if not isinstance(host, str):
            host = f"{name}.localhost"
        entries: list[tuple[str, dict[str, Any]]] = [(host, r)]
        paths = r.get("paths")
        for p in paths if isinstance(paths, list) else ():
            if isinstance(p, dict) and isinstance(p.get("prefix"), str):
                entries.append((f"{host}{p['prefix']}", p))
        for label, entry in entries:
            port = entry.get("port")
            if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
                source = r.get("source") if entry is r else None
                others = _listens_on(r) if entry is r else ()
                out.append(
                    RouteTarget(
                        label,
                        name,
                        port,
                        _hosts_of(entry),
                        source if isinstance(source, str) else None,
                        others,
                    )
                )
    return out


def _listens_on(entry: Mapping[str, Any]) -> tuple[int, ...]:
    raw = entry.get("listens_on")
    return tuple(
        p
        for p in (raw if isinstance(raw, list) else ())
        if isinstance(p, int) and not isinstance(p, bool) and 1 <= p <= 65535
    )


def _hosts_of(entry: Mapping[str, Any]) -> tuple[str, ...]:
    """The loopback addresses a status entry forwards to: its `hosts`, else those in its
    `target` ("127.0.0.1:4001 or [::1]:4001", a URL); both loopbacks when unreadable.
    Anything that is not a loopback address is dropped: doctor never connects to it."""
    listed = entry.get("hosts")
    if isinstance(listed, list) and listed and all(isinstance(h, str) for h in listed):
        hosts = [h for h in listed if is_loopback_host(h) and h != "localhost"]
        return tuple(dict.fromkeys(hosts)) or DEFAULT_LOOPBACKS
    target = entry.get("target")
    if not isinstance(target, str):
        return DEFAULT_LOOPBACKS
    found: list[str] = []
    for part in target.split(" or "):
        try:
            upstream = parse_target(part.strip())
        except ValueError:
            return DEFAULT_LOOPBACKS
        found.extend(h for h in upstream.hosts if h not in found)
    return tuple(found) or DEFAULT_LOOPBACKS


def judge_route(
    target: RouteTarget, reach: Mapping[str, Reach], listeners: Sequence[Listener] | None
) -> Check:
    """Is the route's service listening where the router looks for it?

    `reach` has a connect result for each of the route's hosts and for 127.0.0.1 and ::1;
    `listeners` are the LISTEN sockets on the port (None when /proc is not available).
    """
    port = target.port
    holders = list(listeners or ())
    data: dict[str, Any] = {
        "route": target.name,
        "label": target.label,
        "port": port,
        "targets": list(target.hosts),
        "reachable": dict(reach),
        "listeners": [x.to_json() for x in holders],
    }
    owners = _owners(holders)
    who = f" ({owners})" if owners else ""
    wanted = " or ".join(_hostport(h, port) for h in target.hosts)
    head = f"{target.label} -> {wanted}"
    open_hosts = [h for h in target.hosts if reach.get(h) == "open"]
    if open_hosts:
        where = " and ".join(_hostport(h, port) for h in open_hosts)
        note = ""
        if open_hosts == ["::1"] and reach.get("127.0.0.1") != "open":
            note = " (the router tries ::1 after 127.0.0.1 refuses, so this works)"
        if any(x.wildcard for x in holders):
            exposed = ", ".join(x.where for x in holders if x.wildcard)
            note += f"; it listens on {exposed}, so your network can reach it too"
        only = " only" if open_hosts[0] != target.hosts[0] else ""
        return Check("route", "ok", f"{head}: listening on {where}{only}{who}{note}", None, data)
    hung = [h for h in target.hosts if reach.get(h) == "timeout"]
    if hung:
        return Check(
            "route",
            "fail",
            f"{head}: {_hostport(hung[0], port)} accepts no connection within "
            f"{CONNECT_TIMEOUT_S:g} s (a hung process, or its backlog is full){who}",
            "restart the service",
            data,
        )
    other = [h for h in ("127.0.0.1", "::1") if h not in target.hosts and reach.get(h) == "open"]
    if other:
        return Check(
            "route",
            "fail",
            f"{head}: nothing listens there, but the service listens on "
            f"{_hostport(other[0], port)}{who}",
            f"give the route the bare port {port} instead of an address (then 127.0.0.1 and "
            "::1 are both tried), or make the service listen on the address the route names",
            data,
        )
    elsewhere = [x for x in holders if not x.loopback and not x.wildcard]
    if elsewhere:
        return Check(
            "route",
            "fail",
            f"{head}: nothing listens on loopback; the service listens on "
            f"{', '.join(x.where for x in elsewhere)} only{who}",
            "make the service listen on 127.0.0.1 (e.g. --host 127.0.0.1); devrouter only "
            "forwards to loopback addresses",
            data,
        )
    if any(x.wildcard for x in holders):
        return Check(
            "route",
            "fail",
            f"{head}: refused, although {', '.join(x.where for x in holders)} is listening"
            f"{who} (a firewall rule on loopback?)",
            "check the firewall rules for the loopback interface",
            data,
        )
    others = [p for p in target.listens_on if p != port]
    if others and target.source in ("run", "stack"):
        data["listens_on"] = others
        ports = ", ".join(str(p) for p in others)
        return Check(
            "route",
            "fail",
            f"{head}: nothing is listening; {target.name} listens on {ports}, not on its "
            f"$PORT {port}",
            "pass --port $PORT (or read PORT from the environment) in the command, e.g. "
            f"devrouter run {target.name} -- CMD --port '$PORT'",
            data,
        )
    return Check(
        "route",
        "fail",
        f"{head}: nothing is listening",
        f"start the service on port {port}, or point the route at the port the service "
        "prints when it starts",
        data,
    )


# --- port-assignment range -----------------------------------------------------------------


def assignment_range(env: Mapping[str, str]) -> tuple[int, int] | None:
    """The inclusive range `devrouter run` assigns ports from, or None when port assignment
    is not installed. Raises ValueError for a range that cannot be used."""
    try:
        ports: Any = importlib.import_module("devrouter.ports")
    except ImportError:
        ports = None
    ask = getattr(ports, "port_range", None)
    if callable(ask):
        try:
            value = ask(env)
        except Exception as exc:  # another module's error type: report it, never crash
            raise ValueError(str(exc)) from None
        return _as_range(value)
    text = env.get(PORT_RANGE_ENV, "").strip()
    if text:
        first, sep, last = text.partition("-")
        if sep and first.strip().isdigit() and last.strip().isdigit():
            with contextlib.suppress(ValueError):
                return _as_range((int(first), int(last)))
        raise ValueError(f"{PORT_RANGE_ENV}={text!r}: expected LOW-HIGH within 1-65535")
    if ports is None:
        return None
    return _as_range(getattr(ports, "DEFAULT_RANGE", DEFAULT_PORT_RANGE))


def _as_range(value: object) -> tuple[int, int]:
    if isinstance(value, range) and len(value):
        value = (value.start, value[-1])
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        and 1 <= value[0] <= value[1] <= 65535
    ):
        return int(value[0]), int(value[1])
    raise ValueError(f"the port range {value!r} is not LOW-HIGH within 1-65535")


def judge_port_range(
    span: tuple[int, int] | None, listeners: Sequence[Listener] | None, ours: Iterable[int]
) -> Check:
    """Ports in the assignment range held by processes that are not routes or the router."""
    if span is None:
        return Check(
            "ports",
            "info",
            "no port-assignment range is configured (devrouter run is not set up); "
            "skipped the check for ports taken by others",
            None,
            {"range": None},
        )
    lo, hi = span
    data: dict[str, Any] = {"range": [lo, hi], "taken": []}
    if listeners is None:
        return Check(
            "ports", "info", f"cannot read /proc/net/tcp; skipped the range {lo}-{hi}", None, data
        )
    mine = set(ours)
    by_port: dict[int, list[Listener]] = {}
    for x in listeners:
        if lo <= x.port <= hi and x.port not in mine:
            by_port.setdefault(x.port, []).append(x)
    data["taken"] = [
        {"port": p, "listeners": [x.to_json() for x in xs]} for p, xs in sorted(by_port.items())
    ]
    if not by_port:
        return Check("ports", "ok", f"no other process holds a port in {lo}-{hi}", None, data)
    size = hi - lo + 1
    named = [f"{p} ({_owners(xs)})" for p, xs in sorted(by_port.items())[:MAX_PORTS_LISTED]]
    more = f" and {len(by_port) - MAX_PORTS_LISTED} more" if len(by_port) > MAX_PORTS_LISTED else ""
    status: Status = "fail" if len(by_port) >= size else "warn"
    return Check(
        "ports",
        status,
        f"{len(by_port)} of {size} ports in the assignment range {lo}-{hi} are held by other "
        f"processes, so devrouter run skips them: {', '.join(named)}{more}",
        f"stop those processes if a service should keep its port, or set another range "
        f"(${PORT_RANGE_ENV})",
        data,
    )


# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    config: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    proc: Path = Path("/proc")
    state_dir: Path | None = None  # None: $DEVROUTER_HOME, else the default state directory
    nsswitch: Path = NSSWITCH_PATH
    resolv_conf: Path = RESOLV_CONF_PATH


def _load(
    path: Path | None, own_ports: Iterable[int] | None, env: Mapping[str, str] | None = None
) -> tuple[Config | None, ConfigError | None]:
    """The config, with its access secrets where this shell can read them: the router may
    run where a variable is set that is not set here, which is not a config error."""
    if path is None:
        return None, None
    try:
        config = read_config(path, own_ports, secrets=False)
    except ConfigError as exc:
        return None, exc
    with contextlib.suppress(ConfigError):
        config = load_secrets(config, env)
    return config, None


def _credential(config: Config | None) -> dict[str, str]:
    """Headers that present the router-wide secret, if the config has one loaded."""
    secret = config.access.secret if config and config.access else None
    if secret is None:
        return {}
    if ":" in secret:
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    return {TOKEN_HEADER: secret}


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


async def diagnose(opts: Options) -> Report:
    """Gather the facts, then judge them. Only loopback addresses are contacted."""
    path = find_config(opts.config, opts.env, opts.cwd)
    config, error = _load(path, None, opts.env)
    found = await asyncio.to_thread(
        locate,
        port=opts.port,
        flag="--port",
        config=path,
        directory=opts.state_dir or state_dir(opts.env),
        env=opts.env,
        cwd=opts.cwd,
        probe=False,  # probe_router below asks it, with the secret and in more detail
    )
    port = found.port

    probe = await probe_router(port, headers=_credential(config), hosts=found.hosts)
    status = probe.status or {}
    listen_ports = _status_ports(status) | _status_ports({"listen": list(found.listen)})
    if probe.status is not None:
        path, config, error = _router_config(opts, path, config, error, status)

    targets: list[RouteTarget] | None = None
    if found.ours and found.routes is not None:
        targets = targets_from_live(found.routes)
    elif probe.status is not None:
        targets = targets_from_status(status)
    if targets is None:
        targets = targets_from_config(config) if config is not None else []
    route_ports = {t.port for t in targets}
    reach = await _reach_all(targets)

    range_error: str | None = None
    try:
        span = assignment_range(opts.env)
    except ValueError as exc:
        span, range_error = None, str(exc)

    raw = read_listeners(opts.proc)
    listeners: list[Listener] | None = None
    if raw is not None:
        lo, hi = span or (0, -1)
        wanted = [x for x in raw if x.port == port or x.port in route_ports or lo <= x.port <= hi]
        listeners = with_owners(wanted, os.geteuid(), opts.proc)

    sources = nss_hosts_sources(_read_text(opts.nsswitch))
    servers = nameservers(_read_text(opts.resolv_conf))

    report = Report(port)
    on_port = [x for x in listeners or () if x.port == port]
    report.checks.append(judge_router(probe, on_port, found, os.geteuid()))
    report.checks.append(judge_resolver(sources, servers, resolve_bounded, port))
    router_error, notes = _status_config_error(status), _status_config_notes(status)
    report.checks.extend(judge_config(path, config, error, router_error, notes))
    for t in targets:
        here = {h: reach[(h, t.port)] for h in _probe_hosts(t)}
        mine = None if listeners is None else [x for x in listeners if x.port == t.port]
        report.checks.append(judge_route(t, here, mine))
    if range_error is not None:
        report.checks.append(
            Check("ports", "info", f"{range_error}; skipped", None, {"range": None})
        )
    else:
        ours = route_ports | {port} | listen_ports
        report.checks.append(judge_port_range(span, listeners, ours))
    return report


def _router_config(
    opts: Options,
    path: Path | None,
    config: Config | None,
    error: ConfigError | None,
    status: Mapping[str, Any],
) -> tuple[Path | None, Config | None, ConfigError | None]:
    """Without --config, check the file the running router uses (wherever doctor runs),
    validated against the ports the router listens on."""
    source = _status_config_source(status)
    if (
        opts.config is None
        and source is not None
        and Path(source).is_file()
        and (path is None or Path(source).resolve() != path.resolve())
    ):
        path = Path(source)
    if path is None:
        return None, None, None
    config, error = _load(path, _status_ports(status) or None, opts.env)
    return path, config, error


def _status_config_source(status: Mapping[str, Any]) -> str | None:
    config = status.get("config")
    source = config.get("source") if isinstance(config, dict) else None
    return source if isinstance(source, str) else None


def _status_ports(status: Mapping[str, Any]) -> set[int]:
    out: set[int] = set()
    listen = status.get("listen")
    for addr in listen if isinstance(listen, list) else ():
        _, _, port = str(addr).rpartition(":")
        if port.isdigit():
            out.add(int(port))
    return out


def _status_config_error(status: Mapping[str, Any]) -> str | None:
    config = status.get("config")
    if isinstance(config, dict) and config.get("error"):
        return str(config["error"])
    return None


def _status_config_notes(status: Mapping[str, Any]) -> list[str]:
    """`config.conflicts` and `config.warnings`, when the router reports them."""
    config = status.get("config")
    notes: list[str] = []
    for key in ("conflicts", "warnings"):
        items = config.get(key) if isinstance(config, dict) else None
        if isinstance(items, list):
            notes.extend(str(x) for x in items if x)
    return notes


def _probe_hosts(t: RouteTarget) -> list[str]:
    hosts = [h for h in t.hosts if is_loopback_host(h) and h != "localhost"]
    return hosts + [h for h in DEFAULT_LOOPBACKS if h not in hosts]


async def _reach_all(targets: Sequence[RouteTarget]) -> dict[tuple[str, int], Reach]:
    keys = list(dict.fromkeys((h, t.port) for t in targets for h in _probe_hosts(t)))
    results = await asyncio.gather(*(probe_connect(h, p) for h, p in keys))
    return dict(zip(keys, results, strict=True))


# --- output --------------------------------------------------------------------------------

_COLOURS = {"ok": "32", "info": "2", "warn": "33", "fail": "1;31"}


def use_colour(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colours only on a terminal, and never with NO_COLOR set or TERM=dumb."""
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_text(report: Report, colour: bool = False) -> str:
    lines: list[str] = []
    for c in report.checks:
        tag = f"{c.status:<5}"
        if colour:
            tag = f"\x1b[{_COLOURS[c.status]}m{c.status}\x1b[0m" + " " * (5 - len(c.status))
        lines.append(f"{tag} {c.message}")
        if c.fix:
            lines.append(f"{'':6}fix: {c.fix}")
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    lines.append(f"{_plural(fails, 'problem')}, {_plural(warns, 'warning')}")
    return "\n".join(lines) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- command line --------------------------------------------------------------------------


def _port(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: the running router's, else $DEVROUTER_CONFIG, "
        "./devrouter.yaml, ~/.config/devrouter/config.yaml)",
    )
    p.add_argument(
        "--port",
        type=_port,
        metavar="PORT",
        help=f"the router's port (default: the config's listen port, else {DEFAULT_PORT})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object, for scripts")


_DESCRIPTION = (
    "Check why a NAME.localhost URL does not work: is the router running, do *.localhost "
    "names resolve, is each route's service listening (on 127.0.0.1, ::1 or another "
    "address) and which process holds its port, is the config valid, and which ports of "
    "the assignment range other processes hold. One line per check, with a fix for each "
    "problem. Only this machine's loopback addresses are contacted."
)
_EPILOG = "Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed."


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the `doctor` subcommand (`parents`: the CLI's common options)."""
    p = sub.add_parser(
        "doctor",
        parents=list(parents),
        help="check the router, name resolution, routes and ports, and explain problems",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    _add_arguments(p)


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """The `doctor` command: the report on stdout, exit 1 if a check failed."""
    out = stdout or sys.stdout
    opts = Options(config=getattr(args, "config", None), port=getattr(args, "port", None))
    report = asyncio.run(diagnose(opts))
    if getattr(args, "json", False):
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        out.write(render_text(report, use_colour(out, os.environ)))
    out.flush()
    return report.exit_code


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """`python -m devrouter.doctor [--config PATH] [--port PORT] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="devrouter doctor", description=_DESCRIPTION, epilog=_EPILOG
    )
    _add_arguments(parser)
    return run(parser.parse_args(argv), stdout)


if __name__ == "__main__":
    sys.exit(main())
