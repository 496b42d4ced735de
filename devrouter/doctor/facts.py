"""Facts doctor gathers by I/O: what answers on the router's port, whether a loopback port
accepts a connection, what a `*.localhost` lookup returns, the resolver's files and the
port-assignment range. Only loopback addresses are contacted, and every connect, request
and lookup is bounded by the timeouts below.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp

from ..core.model import DEFAULT_LOOPBACKS, is_loopback_host
from ..services.locate import is_devrouter_answer, is_devrouter_status
from ..services.ports import RANGE_ENV, PortError, port_range
from .listeners import hostport

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
#: `$DEVROUTER_PORTS` ("LOW-HIGH") changes the range, as it does for `devrouter run`.
PORT_RANGE_ENV = RANGE_ENV

NSSWITCH_PATH = Path("/etc/nsswitch.conf")
RESOLV_CONF_PATH = Path("/etc/resolv.conf")
#: Outcome of one connect: "open", "refused", "timeout" or "unavailable" (no such address
#: here, e.g. IPv6 disabled).
Reach = Literal["open", "refused", "timeout", "unavailable"]


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
            url = f"http://{hostport(host, port)}/api/status"
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


# --- files ---------------------------------------------------------------------------------


def read_text(path: Path) -> str | None:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return None


# --- port-assignment range -----------------------------------------------------------------


def assignment_range(env: Mapping[str, str]) -> tuple[int, int]:
    """The inclusive range `devrouter run` assigns ports from (`devrouter.services.ports`: its
    default, or `$DEVROUTER_PORTS`). Raises ValueError for a range that cannot be used."""
    try:
        return port_range(env)
    except PortError as exc:
        raise ValueError(str(exc)) from None
