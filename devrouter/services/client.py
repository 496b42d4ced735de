"""The client end of the control socket, and the protocol both ends share.

The router listens on a unix stream socket, `control.sock` in the state directory
(devrouter.services.control is that end). The protocol is JSON lines. Each request is one
object with an `op`; each gets exactly one reply, `{"ok": true, ...}` or
`{"ok": false, "error": "..."}` (the error is a sentence for the user). Operations:

    status                      the router's pid, version, listen addresses and URL
    list                        every route (config, run, stack, alias) and every clash
    who       name              the live registration holding `name`, or null
    output    name              the last lines the command behind `name` printed
    register  routes: [...]     add services (name, port, paths, command, source, stack);
                                they live exactly as long as this connection and its process
    update    name, ...         a registered service's pgid, ready flag, new output lines,
                                exit code, or listens_on (the ports it listens on instead
                                of its own while it is not ready)
    unregister                  drop this connection's services (a clean exit)
    alias     name, port        a route to a port devrouter does not start; kept on disk
    unalias   name
    ping

`call` and `status` ask once (blocking); `Channel` is a persistent asyncio connection;
`Registration` is what `run` and `up` hold for as long as their commands run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..aio import sleep_or_stop
from ..core.errors import StartupError
from ..core.names import DOTTED_RE, RESERVED_NAMES, normalize_name

SOCKET_NAME = "control.sock"
#: Longest request line, in bytes.
MAX_MESSAGE_BYTES = 256 * 1024
#: Output lines kept per service for error pages.
OUTPUT_LINES = 40
#: A client's wait for a reply, in seconds.
CALL_TIMEOUT_S = 5.0

_PROC = Path("/proc")


class ControlError(StartupError):
    """A refused or failed control request; `str()` is the message for the user. A command
    that lets one through exits with StartupError's code: the router cannot be reached, or
    refused what the command needs to start."""


class RouterNotRunning(ControlError):
    """Nothing answers on the control socket."""


def socket_path(directory: Path) -> Path:
    return directory / SOCKET_NAME


@contextlib.contextmanager
def socket_address(path: Path) -> Iterator[str]:
    """The address to bind or connect: `path` itself, or on Linux, when it is longer than a
    unix socket address may be, the same file through /proc/self/fd of its directory."""
    if len(os.fsencode(path)) < 100 or not _PROC.is_dir():
        yield str(path)
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def check_name(raw: object) -> str:
    """A route name for a registration: DNS labels, no wildcard, not reserved."""
    if not isinstance(raw, str):
        raise ControlError("a name must be text")
    name = normalize_name(raw)
    if not DOTTED_RE.match(name) or len(name) > 200:
        raise ControlError(
            f"'{raw}' is not a usable name: use letters, digits and hyphens, "
            "with dots between labels (api, web.shop)"
        )
    if name in RESERVED_NAMES or name.split(".")[-1] in RESERVED_NAMES:
        raise ControlError(f"the name '{name}' is reserved for devrouter's own pages")
    return name


def _encode(op: str, fields: Mapping[str, Any]) -> bytes:
    return json.dumps({"op": op, **fields}, separators=(",", ":")).encode() + b"\n"


def _decode(line: bytes) -> dict[str, Any]:
    if not line:
        raise ControlError("the router closed the control connection")
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError("the router sent a reply that is not JSON") from None
    if not isinstance(reply, dict):
        raise ControlError("the router sent a reply that is not an object")
    if not reply.get("ok"):
        raise ControlError(str(reply.get("error", "refused")))
    return reply


def call(
    directory: Path, op: str, *, timeout_s: float = CALL_TIMEOUT_S, **fields: Any
) -> dict[str, Any]:
    """One request on a fresh connection (blocking). Raises RouterNotRunning or ControlError."""
    path = socket_path(directory)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout_s)
        try:
            with socket_address(path) as address:
                s.connect(address)
        except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
            raise RouterNotRunning(f"no router is running (no answer on {path})") from None
        except OSError as exc:
            raise RouterNotRunning(f"cannot reach the router on {path}: {exc}") from None
        try:
            s.sendall(_encode(op, fields))
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except TimeoutError:
            raise ControlError(f"the router did not answer within {timeout_s:g} s") from None
        except OSError as exc:
            raise ControlError(f"lost the control connection: {exc}") from None
    return _decode(data)


def status(directory: Path) -> dict[str, Any] | None:
    """The running router's status, or None if none answers."""
    try:
        return call(directory, "status", timeout_s=2.0)
    except ControlError:
        return None


class Channel:
    """A persistent asyncio connection; requests are answered in order."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._lock = asyncio.Lock()

    @classmethod
    async def open(cls, directory: Path) -> Channel:
        path = socket_path(directory)
        try:
            with socket_address(path) as address:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_unix_connection(address, limit=MAX_MESSAGE_BYTES), CALL_TIMEOUT_S
                )
        except (OSError, TimeoutError) as exc:
            raise RouterNotRunning(f"no router is running ({path}: {exc})") from None
        return cls(reader, writer)

    async def call(self, op: str, **fields: Any) -> dict[str, Any]:
        async with self._lock:
            try:
                self._writer.write(_encode(op, fields))
                await self._writer.drain()
                line = await asyncio.wait_for(self._reader.readline(), CALL_TIMEOUT_S)
            except (OSError, TimeoutError, ValueError) as exc:
                raise ControlError(f"lost the control connection: {exc}") from None
        return _decode(line)

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError):
            await self._writer.wait_closed()


#: Client timing, in seconds: how often changes are sent, how long an idle connection goes
#: without a ping, and the pause between reconnection attempts.
FLUSH_INTERVAL_S = 0.25
PING_INTERVAL_S = 2.0
RECONNECT_INTERVAL_S = 2.0


class Registration:
    """The client end for `run` and `up`: registers services, sends their progress, and if the
    router goes away, registers them again with whichever router comes back.

    `services` are dicts with name, port, paths, command, source and stack."""

    def __init__(
        self, directory: Path, services: Iterable[Mapping[str, Any]], report: Any = None
    ) -> None:
        self.directory = directory
        self._services = {str(s["name"]): dict(s) for s in services}
        self._pending: dict[str, dict[str, Any]] = {}
        self._channel: Channel | None = None
        self._report = report if callable(report) else (lambda text: None)

    def _full(self) -> list[dict[str, Any]]:
        return [dict(s) for s in self._services.values()]

    async def open(self) -> list[str]:
        """Register; returns warnings (clashes with the config). Raises ControlError."""
        channel = await Channel.open(self.directory)
        try:
            reply = await channel.call("register", routes=self._full(), pid=os.getpid())
        except BaseException:
            await channel.close()
            raise
        self._channel = channel
        self._pending.clear()
        return [str(w) for w in reply.get("warnings", [])]

    def update(self, name: str, **fields: Any) -> None:
        """Record a change; it is sent within FLUSH_INTERVAL_S (and kept for re-registration)."""
        svc = self._services[name]
        pending = self._pending.setdefault(name, {})
        for key, value in fields.items():
            if key == "lines":
                kept = [*svc.get("lines", []), *value][-OUTPUT_LINES:]
                svc["lines"] = kept
                pending["lines"] = [*pending.get("lines", []), *value][-OUTPUT_LINES:]
            else:
                svc[key] = value
                pending[key] = value

    async def flush(self) -> None:
        if self._channel is None:
            return
        pending, self._pending = self._pending, {}
        for name, fields in pending.items():
            await self._channel.call("update", name=name, **fields)

    async def run(self, stop: asyncio.Event) -> None:
        """Send changes and pings until `stop`; reconnect when the router goes away."""
        idle = 0.0
        while not stop.is_set():
            await sleep_or_stop(stop, FLUSH_INTERVAL_S)
            if stop.is_set():
                break
            try:
                if self._channel is None:
                    idle += FLUSH_INTERVAL_S
                    if idle >= RECONNECT_INTERVAL_S:
                        idle = 0.0
                        await self._reconnect()
                    continue
                if self._pending:
                    idle = 0.0
                    await self.flush()
                else:
                    idle += FLUSH_INTERVAL_S
                    if idle >= PING_INTERVAL_S:
                        idle = 0.0
                        await self._channel.call("ping")
            except ControlError as exc:
                if self._channel is not None:
                    await self._channel.close()
                    self._channel = None
                    self._report(
                        f"lost the router ({exc}); {', '.join(self._services)} will be "
                        "registered again when a router is running"
                    )

    async def _reconnect(self) -> None:
        try:
            warnings = await self.open()
        except RouterNotRunning:
            return
        except ControlError as exc:
            self._report(f"could not register again: {exc}")
            return
        self._report(f"registered {', '.join(self._services)} with the router again")
        for w in warnings:
            self._report(w)

    async def close(self) -> None:
        """Send what is pending, unregister (a clean exit) and disconnect."""
        if self._channel is None:
            return
        with contextlib.suppress(ControlError):
            await self.flush()
            await self._channel.call("unregister")
        await self._channel.close()
        self._channel = None
