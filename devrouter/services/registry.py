"""The registry's records: one `Service` per registered name, and the rules a `register` or
`update` message is checked by before it changes anything (pure: a message in, a Service,
a change or a ControlError with the sentence for the user out).
"""

from __future__ import annotations

import re
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.names import DOTTED_RE
from .client import OUTPUT_LINES, ControlError, check_name

#: The longest output line kept, in characters.
MAX_OUTPUT_LINE = 400
#: At most this many ports in a service's `listens_on`.
MAX_LISTENS_ON = 8


def check_port(value: object, what: str = "port") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise ControlError(f"{what} must be a number from 1 to 65535, got {value!r}")
    return value


@dataclass(eq=False)
class Service:
    """One registered name. Read-only outside devrouter.services.control; `output` feeds
    error pages."""

    name: str
    port: int
    paths: tuple[tuple[str, int], ...]
    source: str  # "run" or "stack"
    stack: str | None
    command: str
    owner_pid: int
    started_at: float = field(default_factory=time.time)
    pgid: int | None = None
    ready: bool = False  # something listens on the port (as seen by the registering process)
    exit_code: int | None = None  # set when the command has exited (the route may remain)
    #: While not ready: the ports its processes listen on instead of `port` (wrong $PORT).
    listens_on: tuple[int, ...] = ()
    output: deque[str] = field(default_factory=lambda: deque(maxlen=OUTPUT_LINES))

    def describe(self) -> str:
        return f"pid {self.owner_pid}, `devrouter {self.source}`: {self.command}"


def service_from(msg: Mapping[str, Any], owner_pid: int) -> Service:
    name = check_name(msg.get("name"))
    port = check_port(msg.get("port"), f"the port of '{name}'")
    raw_paths = msg.get("paths") or {}
    if not isinstance(raw_paths, dict):
        raise ControlError(f"the paths of '{name}' must be a mapping of prefix to port")
    paths: list[tuple[str, int]] = []
    for prefix, p in raw_paths.items():
        if not isinstance(prefix, str) or not re.match(r"^/[^\s?#]*$", prefix):
            raise ControlError(f"path prefix {prefix!r} of '{name}' must start with '/'")
        paths.append((prefix, check_port(p, f"the port of {name}{prefix}")))
    source = msg.get("source", "run")
    if source not in ("run", "stack"):
        raise ControlError(f"unknown source {source!r}")
    stack = msg.get("stack")
    if stack is not None and not (isinstance(stack, str) and DOTTED_RE.match(stack)):
        raise ControlError(f"stack name {stack!r} is not a DNS name")
    command = msg.get("command", "")
    svc = Service(
        name,
        port,
        tuple(sorted(paths, key=lambda p: len(p[0]), reverse=True)),
        source,
        stack,
        str(command)[:500],
        owner_pid,
    )
    apply_update(svc, msg)
    return svc


def _listens_on(value: object, name: str) -> tuple[int, ...]:
    what = f"listens_on of '{name}'"
    if not isinstance(value, list) or len(value) > MAX_LISTENS_ON:
        raise ControlError(f"{what} must be a list of at most {MAX_LISTENS_ON} port numbers")
    return tuple(sorted({check_port(p, what) for p in value}))


def apply_update(svc: Service, msg: Mapping[str, Any]) -> None:
    """Apply the fields of a `register` or `update` message; a malformed `listens_on` is
    refused before anything changes."""
    listens_on = _listens_on(msg["listens_on"], svc.name) if "listens_on" in msg else None
    if listens_on is not None:
        svc.listens_on = listens_on
    pgid = msg.get("pgid")
    if isinstance(pgid, int) and not isinstance(pgid, bool) and pgid > 1:
        svc.pgid = pgid
    if isinstance(msg.get("ready"), bool):
        svc.ready = msg["ready"]
    code = msg.get("exit_code")
    if isinstance(code, int) and not isinstance(code, bool):
        svc.exit_code = code
        svc.ready = False
        svc.listens_on = ()  # its sockets closed with it
    lines = msg.get("lines")
    if isinstance(lines, list):
        for line in lines[-OUTPUT_LINES:]:
            if isinstance(line, str):
                svc.output.append(line[:MAX_OUTPUT_LINE])


def service_json(svc: Service) -> dict[str, Any]:
    return {
        "name": svc.name,
        "port": svc.port,
        "pid": svc.owner_pid,
        "source": svc.source,
        "stack": svc.stack,
        "command": svc.command,
        "listens_on": list(svc.listens_on),
    }
