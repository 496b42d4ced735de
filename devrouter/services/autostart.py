"""The router a command needs: the state directory, and a router started in the background
when none answers on its control socket (`run`, `alias` and `up` do that).

The background router is `devrouter serve` in a session of its own, not our child, with its
output appended to `router.log` in the state directory; starters take turns on a lock, so
two commands started at once start one router.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..core.addresses import parse_listen
from ..core.errors import StartupError, UsageError
from .client import status
from .locate import LISTEN_ENV
from .output import read_since, say
from .ports import ensure_state_dir, locked, state_dir
from .procs import process_alive, spawn_detached

ROUTER_LOG = "router.log"
#: Longest wait for a background router to answer after it was started, in seconds.
ROUTER_START_TIMEOUT_S = 15.0


def the_state_dir() -> Path:
    return ensure_state_dir(state_dir())  # a StateDirError is a StartupError: exit 3


def listen_args(values: Sequence[str] | None) -> list[str]:
    """`--listen` values, else $DEVROUTER_LISTEN (comma separated); checked here so that a
    typo fails now rather than in a background process."""
    out = list(values or []) or [
        v for v in re.split(r"[,\s]+", os.environ.get(LISTEN_ENV, "")) if v
    ]
    for v in out:
        try:
            parse_listen(v)
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
    return out


def ensure_router(directory: Path, listen: Sequence[str]) -> dict[str, Any]:
    """The running router's status; start one in the background first if none answers."""
    info = status(directory)
    if info is not None:
        return info
    with locked(directory, "router.lock"):  # one starter at a time
        info = status(directory)
        if info is not None:
            return info
        log_path = directory / ROUTER_LOG
        argv = [sys.executable, "-m", "devrouter", "serve"]
        for addr in listen:
            argv += ["--listen", addr]
        env = {**os.environ, "DEVROUTER_HOME": str(directory)}
        size = log_path.stat().st_size if log_path.exists() else 0
        pid = spawn_detached(argv, env, directory, log_path)
        deadline = time.monotonic() + ROUTER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = status(directory)
            if info is not None:
                break
            if not process_alive(pid):
                tail = _last_line(log_path, size)
                raise StartupError(f"the background router did not start: {tail} (log: {log_path})")
            time.sleep(0.05)
        else:
            raise StartupError(
                f"the background router (pid {pid}) did not answer within "
                f"{ROUTER_START_TIMEOUT_S:g} s (log: {log_path})"
            )
    say(
        f"started a background router on {info['url']} (pid {info['pid']}, log {log_path}); "
        "stop it with `devrouter stop`"
    )
    return info


def _last_line(path: Path, offset: int) -> str:
    """The last line the log `path` gained after `offset` bytes, for a one-line reason."""
    text = read_since(path, offset)
    if text is None:
        return "no log"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"
