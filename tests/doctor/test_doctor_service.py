"""devrouter.doctor.service: the verdict on the router as a service, by a table of what
systemd or launchd said (devrouter.system.status.UnitState)."""

from __future__ import annotations

from pathlib import Path

import pytest

from devrouter.doctor.service import judge_service
from devrouter.system.status import UnitState

USER = UnitState("devrouter.service", "user", Path("/u"), "active", "running", "enabled", 42)
DOWN = UnitState("devrouter.service", "user", Path("/u"), "failed", "failed", "enabled")
SOCKET = UnitState("devrouter-ann.socket", "system", Path("/s"), "active", "listening")
SYSTEM_IDLE = UnitState("devrouter-ann.service", "system", Path("/s"), "inactive", "dead")
FAILED_SOCKET = UnitState("devrouter-ann.socket", "system", Path("/s"), "failed", "failed")
AGENT = UnitState("dev.devrouter", "launchd", Path("/a"), "not loaded")


@pytest.mark.parametrize(
    ("states", "status", "words", "fix"),
    [
        (None, "info", "Linux and macOS only", None),
        ([], "info", "not installed as a service", None),
        ([USER], "ok", "devrouter.service: active (running), enabled, pid 42", None),
        (
            [DOWN],
            "warn",
            "not running (devrouter.service: failed",
            "journalctl --user -u devrouter",
        ),
        (
            [SOCKET, SYSTEM_IDLE],
            "ok",
            "starts it at the first connection",
            None,
        ),
        (
            [FAILED_SOCKET, SYSTEM_IDLE],
            "warn",
            "devrouter-ann.socket: failed",
            "journalctl -u devrouter-ann.service",
        ),
        ([AGENT], "warn", "dev.devrouter: not loaded", "~/Library/Logs/devrouter/"),
    ],
)
def test_judge_service(
    states: list[UnitState] | None, status: str, words: str, fix: str | None
) -> None:
    check = judge_service(states)
    assert (check.check, check.status) == ("service", status)
    assert words in check.message, check.message
    if fix is None:
        assert check.fix is None
    else:
        assert check.fix is not None and fix in check.fix
