"""The verdict on the router as a service (devrouter.system): installed or not, and whether
its manager says it runs. `judge_service` is pure; `gather_service` asks systemd or launchd
through devrouter.system, each call bounded by its runner's timeout."""

from __future__ import annotations

import contextlib
import os
import pwd
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..core.errors import CommandError
from ..system import install
from ..system.command import this_platform
from ..system.status import UnitState, query
from .report import Check


def gather_service(env: Mapping[str, str], state_dir: Path) -> list[UnitState] | None:
    """The installed units or agents and their states; None where devrouter has no service
    support (neither Linux nor macOS) or this machine cannot be asked."""
    platform = this_platform()
    if platform is None:
        return None
    with contextlib.suppress(CommandError, OSError, KeyError, ValueError):
        user = pwd.getpwuid(os.getuid()).pw_name
        where = install.places(env, state_dir)
        return query(platform, where, install.gather(user, where), install.run_command)
    return None


def judge_service(states: Sequence[UnitState] | None) -> Check:
    if states is None:
        return Check("service", "info", "devrouter runs as a service on Linux and macOS only")
    if not states:
        return Check(
            "service",
            "info",
            "the router is not installed as a service: it runs while a terminal holds it; "
            "`devrouter service install` starts it at login (docs/service.md)",
            None,
            {"installed": False},
        )
    services = [u for u in states if not u.name.endswith(".socket")]
    sockets = [u for u in states if u.name.endswith(".socket")]
    data = {"installed": True, "units": {u.name: u.describe() for u in states}}
    where = "; ".join(f"{u.name}: {u.describe()}" for u in states)
    if services and all(u.running for u in services):
        return Check("service", "ok", f"the router runs as a service ({where})", None, data)
    if (
        sockets
        and all(u.running for u in sockets)
        and all(u.active == "inactive" for u in services)
    ):
        # socket activation: systemd holds the port and starts the router at the first
        # connection, so an idle service is what it should be
        return Check(
            "service",
            "ok",
            f"systemd holds the router's port and starts it at the first connection ({where})",
            None,
            data,
        )
    logs = (
        "journalctl --user -u devrouter"
        if any(u.scope == "user" for u in states)
        else "~/Library/Logs/devrouter/"
        if any(u.scope == "launchd" for u in states)
        else f"journalctl -u {services[0].name if services else states[0].name}"
    )
    return Check(
        "service",
        "warn",
        f"the router is installed as a service, but it is not running ({where})",
        f"see why in {logs}; `devrouter service status` says more, `devrouter service "
        "install` starts it again",
        data,
    )
