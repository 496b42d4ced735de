"""The state directory and stable port assignments.

Theory of operation: every name that devrouter starts (`devrouter run api`, a stack's
`api.shop`) gets a port from a fixed range, and the choice is written to `ports.json` in the
state directory so the same name gets the same port on every run: bookmarks, OAuth callback
URLs and `.env` files keep working. The first choice for a new name is derived from a hash of
the name, so it is stable even when the state directory is wiped. A port is handed out only if
nothing at all is listening on it (checked by binding it on 127.0.0.1, ::1 and the wildcard
addresses), it is not in the lists below, and no other name holds it. Concurrent
`devrouter` processes serialise on an advisory lock (`ports.lock`).

The default range is 17000-17999:
- above every port browsers refuse to connect to (the "bad ports" of the Fetch standard, which
  Chrome and Firefox enforce; the highest is 10080), so a route's backend is also reachable
  directly from a browser when needed;
- below the ephemeral range operating systems use for outgoing connections (Linux
  32768-60999, macOS and Windows 49152-65535), so a stable port is never briefly taken by
  some outgoing connection;
- clear of the ports dev tools pick by default (3000, 4200, 5000, 5173, 8000, 8080, ...) and
  of Kubernetes NodePorts (30000-32767) and Vite's HMR port (24678).
`DEVROUTER_PORTS=LOW-HIGH` changes it; browser-refused and well-known dev-tool ports are
skipped even inside a custom range.

The state directory is `$DEVROUTER_HOME`, else `$XDG_STATE_HOME/devrouter`, else
`~/.local/state/devrouter`. It is created with mode 0700 and must belong to the current user;
it also holds the running router's pid, its control socket and its log.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import stat
import sys
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import StartupError
from ..core.numbers import digits

DEFAULT_RANGE = (17000, 17999)
RANGE_ENV = "DEVROUTER_PORTS"
HOME_ENV = "DEVROUTER_HOME"
PORTS_FILE = "ports.json"
LOCK_FILE = "ports.lock"
#: ports.json larger than this, in bytes, is treated as corrupt.
MAX_STATE_BYTES = 1024 * 1024

#: The Fetch standard's "bad ports", which Chrome, Firefox and Safari refuse to connect to.
BROWSER_UNSAFE_PORTS = frozenset(
    {
        1, 7, 9, 11, 13, 15, 17, 19, 20, 21, 22, 23, 25, 37, 42, 43, 53, 69, 77, 79, 87, 95,
        101, 102, 103, 104, 109, 110, 111, 113, 115, 117, 119, 123, 135, 137, 139, 143, 161,
        179, 389, 427, 465, 512, 513, 514, 515, 526, 530, 531, 532, 540, 548, 554, 556, 563,
        587, 601, 636, 989, 990, 993, 995, 1719, 1720, 1723, 2049, 3659, 4045, 4190, 5060,
        5061, 6000, 6566, 6665, 6666, 6667, 6668, 6669, 6679, 6697, 10080,
    }
)  # fmt: skip

#: Defaults of common dev servers and databases, and devrouter's own port: never assigned,
#: so a tool started without devrouter can still take its usual port.
DEV_TOOL_PORTS = frozenset(
    {
        1313, 1420, 3000, 3001, 3002, 3306, 4000, 4173, 4200, 4321, 4400, 4444, 4567, 5000,
        5001, 5173, 5174, 5432, 5555, 6006, 6379, 7355, 8000, 8001, 8008, 8080, 8081, 8443,
        8787, 8888, 9000, 9001, 9090, 9229, 9323, 11211, 19000, 19006, 24678, 27017,
    }
)  # fmt: skip


class StateDirError(StartupError):
    """The state directory cannot be used safely; `str()` is the message for the user."""


class PortError(StartupError):
    """No port can be assigned; `str()` is the message for the user."""


# --- the state directory ------------------------------------------------------------------


def state_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where devrouter keeps its state (not created here)."""
    env = os.environ if env is None else env
    if env.get(HOME_ENV):
        return Path(env[HOME_ENV]).expanduser().absolute()
    if env.get("XDG_STATE_HOME"):
        return Path(env["XDG_STATE_HOME"]).expanduser().absolute() / "devrouter"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".local" / "state" / "devrouter"


def ensure_state_dir(path: Path) -> Path:
    """Create the directory (mode 0700) or check an existing one: it must be a directory of
    this user's, and group/other permissions are removed."""
    try:
        with contextlib.suppress(FileExistsError):
            path.mkdir(mode=0o700, parents=True)
        st = os.stat(path)
    except OSError as exc:
        raise StateDirError(f"cannot create the state directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise StateDirError(f"the state directory {path} is not a directory")
    if st.st_uid != os.geteuid():
        raise StateDirError(
            f"the state directory {path} belongs to another user (uid {st.st_uid}); "
            f"set {HOME_ENV} to a directory of your own"
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)
    return path


def write_private(path: Path, data: str) -> None:
    """Write a file atomically (temporary file, then rename) with mode 0600."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def read_json(path: Path) -> object:
    """A small JSON file's content, or None if it is missing, too large or not JSON."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_STATE_BYTES + 1)
    except OSError:
        return None
    if len(data) > MAX_STATE_BYTES:
        return None
    try:
        return json.loads(data)
    except ValueError:
        return None


@contextlib.contextmanager
def locked(directory: Path, name: str = LOCK_FILE) -> Iterator[None]:
    """An exclusive advisory lock on `directory/name`, held for the block."""
    fd = os.open(directory / name, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


# --- ports --------------------------------------------------------------------------------


def parse_range(text: str) -> tuple[int, int]:
    """`17000-17999` -> (17000, 17999). Raises PortError with a user-facing message."""
    low, sep, high = text.strip().partition("-")
    if not sep or not digits(low.strip()) or not digits(high.strip()):
        raise PortError(f"{RANGE_ENV}={text!r}: expected LOW-HIGH, for example 17000-17999")
    lo, hi = int(low), int(high)
    if not 1024 <= lo <= hi <= 65535:
        raise PortError(f"{RANGE_ENV}={text!r}: expected 1024 <= LOW <= HIGH <= 65535")
    return lo, hi


def port_range(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    env = os.environ if env is None else env
    text = env.get(RANGE_ENV)
    return parse_range(text) if text else DEFAULT_RANGE


def avoided(port: int) -> bool:
    """A port devrouter never hands out, busy or not."""
    return port in BROWSER_UNSAFE_PORTS or port in DEV_TOOL_PORTS


def _bind_fails(family: socket.AddressFamily, host: str, port: int) -> bool:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR so that connections of a service that just stopped (TIME_WAIT) do not
        # count: the service itself sets it too. On Linux a listener still makes bind fail.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            # No IPv6 on this machine: that address cannot be busy.
            return exc.errno not in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT)
    return False


def accepts(host: str, port: int, timeout_s: float = 0.2) -> bool:
    """Whether something accepts a TCP connection on host:port within `timeout_s`."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            s.connect((host, port))
        except OSError:
            return False
    return True


def in_use(port: int) -> bool:
    """True if anything is bound to `port` on a loopback or wildcard address."""
    for family, host in (
        (socket.AF_INET, "127.0.0.1"),
        (socket.AF_INET6, "::1"),
        (socket.AF_INET, "0.0.0.0"),
        (socket.AF_INET6, "::"),
    ):
        try:
            if _bind_fails(family, host, port):
                return True
        except OSError:  # the family itself is unsupported
            continue
    if sys.platform != "linux":
        # BSD SO_REUSEADDR lets a specific address share a port with a wildcard listener.
        return accepts("127.0.0.1", port) or accepts("::1", port)
    return False


@dataclass(frozen=True, slots=True)
class Assignment:
    name: str
    port: int
    moved_from: int | None = None  # the name's previous port, when that one was busy


def _load(directory: Path) -> dict[str, int]:
    data = read_json(directory / PORTS_FILE)
    table = data.get("ports") if isinstance(data, dict) else None
    if not isinstance(table, dict):
        return {}
    return {
        str(k): v
        for k, v in table.items()
        if isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= 65535
    }


def _save(directory: Path, table: Mapping[str, int]) -> None:
    body = {"ports": dict(sorted(table.items()))}
    write_private(directory / PORTS_FILE, json.dumps(body, indent=2) + "\n")


def assigned(directory: Path, name: str) -> int | None:
    """The port remembered for `name`, if any (no checks, no assignment)."""
    return _load(directory).get(name)


def assign(directory: Path, name: str, env: Mapping[str, str] | None = None) -> Assignment:
    """The stable port for `name`: its remembered port if that is still free, else a new one,
    which is remembered from now on. Raises PortError if the range is full."""
    lo, hi = port_range(env)
    ensure_state_dir(directory)
    with locked(directory):
        table = _load(directory)
        current = table.get(name)
        usable = current is not None and lo <= current <= hi and not avoided(current)
        if current is not None and usable and not in_use(current):
            return Assignment(name, current)
        taken = {p for n, p in table.items() if n != name}
        size = hi - lo + 1
        first = zlib.crc32(name.encode()) % size
        for i in range(size):
            port = lo + (first + i) % size
            if port in taken or avoided(port) or in_use(port):
                continue
            table[name] = port
            _save(directory, table)
            return Assignment(name, port, current)
    raise PortError(
        f"no free port left in {lo}-{hi} ({len(taken)} names hold one); widen the range with "
        f"{RANGE_ENV}=LOW-HIGH or remove old names from {directory / PORTS_FILE}"
    )
