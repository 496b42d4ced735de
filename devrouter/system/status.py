"""`devrouter service status`: what systemd or launchd says of each installed unit or
agent. `parse_show` and `parse_launchctl_print` read the managers' output (pure); `query`
asks them through install.py's Runner, so tests answer for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..core.numbers import digits
from . import units
from .install import Facts, Places, Platform, Runner, first_line
from .units import LAUNCHD_LABEL, USER_UNIT


@dataclass(frozen=True, slots=True)
class UnitState:
    """One installed unit or agent, and what its manager says of it."""

    name: str  # devrouter.service, devrouter-USER.socket, dev.devrouter
    scope: str  # "user", "system" or "launchd"
    path: Path
    active: str | None = None  # "active", "inactive", "failed", "running" ...; None unknown
    sub: str | None = None  # systemd's finer state: "running", "listening", "auto-restart"
    enabled: str | None = None  # "enabled", "disabled" ...
    pid: int | None = None
    error: str = ""  # why the state is unknown

    def describe(self) -> str:
        """`active (running), enabled, pid 123`, or why the state is unknown."""
        if self.error:
            return f"state unknown: {self.error}"
        state = self.active or "unknown"
        if self.sub and self.sub != self.active:
            state += f" ({self.sub})"
        parts = [state]
        if self.enabled:
            parts.append(self.enabled)
        if self.pid:
            parts.append(f"pid {self.pid}")
        return ", ".join(parts)

    @property
    def running(self) -> bool:
        return self.active in ("active", "running", "reloading")


#: What `systemctl show` is asked for.
SHOW_PROPERTIES = ("LoadState", "ActiveState", "SubState", "UnitFileState", "MainPID")


def parse_show(text: str) -> dict[str, str]:
    """`systemctl show --property=...` output (Key=value lines) as a dict."""
    out: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def parse_launchctl_print(text: str) -> tuple[str | None, int | None]:
    """The `state = running` and `pid = 123` of `launchctl print gui/UID/LABEL` (the first
    of each, the job's own; nested blocks come later)."""
    state: str | None = None
    pid: int | None = None
    for line in text.splitlines():
        key, sep, value = line.strip().partition(" = ")
        if not sep:
            continue
        if key == "state" and state is None:
            state = value.strip()
        elif key == "pid" and pid is None and digits(value.strip()):
            pid = int(value.strip())
    return state, pid


def _systemd_state(name: str, scope: str, path: Path, runner: Runner) -> UnitState:
    prefix = ("systemctl", "--user") if scope == "user" else ("systemctl",)
    props = ",".join(SHOW_PROPERTIES)
    done = runner((*prefix, "show", name, f"--property={props}"))
    said = first_line(done.stderr)
    if done.returncode != 0:
        return UnitState(name, scope, path, error=said or f"exit status {done.returncode}")
    shown = parse_show(done.stdout)
    pid_text = shown.get("MainPID", "0")
    pid = int(pid_text) if digits(pid_text) and int(pid_text) > 0 else None
    return UnitState(
        name,
        scope,
        path,
        active=shown.get("ActiveState") or None,
        sub=shown.get("SubState") or None,
        enabled=shown.get("UnitFileState") or None,
        pid=pid,
    )


def query(platform: Platform, where: Places, facts: Facts, runner: Runner) -> list[UnitState]:
    """The state of every installed unit or agent (none: nothing is installed)."""
    found: list[UnitState] = []
    if platform == "macos":
        if facts.launch_agent:
            done = runner(("launchctl", "print", f"gui/{facts.uid}/{LAUNCHD_LABEL}"))
            if done.returncode != 0:
                found.append(UnitState(LAUNCHD_LABEL, "launchd", where.launch_agent, "not loaded"))
            else:
                state, pid = parse_launchctl_print(done.stdout)
                found.append(
                    UnitState(LAUNCHD_LABEL, "launchd", where.launch_agent, state, pid=pid)
                )
        return found
    if facts.user_unit:
        found.append(_systemd_state(USER_UNIT, "user", where.user_unit, runner))
    if not (facts.system_socket or facts.system_unit):
        return found
    service, socket = units.system_units(facts.user)
    if facts.system_socket:
        found.append(_systemd_state(socket, "system", where.system_socket(facts.user), runner))
    if facts.system_unit:
        found.append(_systemd_state(service, "system", where.system_unit(facts.user), runner))
    return found


def service_running(states: Sequence[UnitState]) -> bool:
    """Is the router's service (not just its socket) installed and running?"""
    services = [u for u in states if not u.name.endswith(".socket")]
    return bool(services) and all(u.running for u in services)
