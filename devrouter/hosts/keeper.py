"""`hosts: sync`: the router keeps its hosts-file block current while it runs.

Every CHECK_INTERVAL_S the route names are compared with those last written; a change is
written once the names have held still for one more check (a `compose up` or a stack start
adds several names within a second: one write, not five). The write is the command's own
(devrouter.hosts.sync), in a worker thread. Where the router may not write the file (it
runs as the user and /etc/hosts is root's), it says so once, with what to do, and does not
try again until the setting changes: it never asks for privilege.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from ..aio import sleep_or_stop
from ..core.errors import CommandError
from ..core.state import State
from .block import DamagedBlock
from .file import NeedsPrivilege
from .sync import Outcome, names_to_write, sync_file

log = logging.getLogger("devrouter.hosts")

#: How often the route names are looked at, in seconds; a change is written after two looks.
CHECK_INTERVAL_S = 0.5
#: After a write that failed for a passing reason (the file changed meanwhile), in seconds.
RETRY_S = 5.0


class HostsKeeper:
    def __init__(self, state: State) -> None:
        self.state = state
        self.written: tuple[str, tuple[str, ...]] | None = None  # (file, names) last written
        self.problem: str | None = None  # the last failure, said once

    def _wanted(self) -> tuple[str, tuple[str, ...]] | None:
        snapshot = self.state.snapshot
        path = snapshot.config.hosts_file
        if path is None:
            return None
        return path, tuple(sorted(r.name for r in snapshot.table.routes))

    async def run(self, stop: asyncio.Event) -> None:
        seen: tuple[str, tuple[str, ...]] | None = None
        refused: str | None = None  # the file we may not write, until the setting changes
        while not stop.is_set():
            await sleep_or_stop(stop, CHECK_INTERVAL_S)
            wanted = self._wanted()
            if wanted is None or wanted[0] != refused:
                refused = None
            if wanted is None or wanted == self.written or refused is not None:
                seen = wanted
                continue
            if wanted != seen:  # still changing: write after it holds for one more look
                seen = wanted
                continue
            path, names = wanted
            try:
                outcome = await asyncio.to_thread(_sync, path, names)
            except NeedsPrivilege:
                refused = path
                self._say(
                    f"hosts: sync is on, but this router may not write {path}; run `devrouter "
                    "hosts sync` (it prints the sudo line) when names change, or turn the "
                    "setting off"
                )
                continue
            except DamagedBlock as exc:  # the user's to mend: tried again when names change
                self._say(f"hosts: sync: {exc}")
                self.written = wanted
                continue
            except CommandError as exc:  # the file changed meanwhile, or cannot be read
                self._say(f"hosts: sync: {exc}")
                await sleep_or_stop(stop, RETRY_S)  # then the next look tries again
                continue
            self.written, self.problem = wanted, None
            if outcome.written:
                log.info(
                    "hosts: %s now names %d route(s)%s",
                    path,
                    len(outcome.after),
                    _change(outcome.added, outcome.removed),
                )

    def _say(self, text: str) -> None:
        if text != self.problem:
            log.warning("%s", text)
        self.problem = text


def _sync(path: str, names: tuple[str, ...]) -> Outcome:
    return sync_file(Path(path).expanduser(), names_to_write(names))


def _change(added: tuple[str, ...], removed: tuple[str, ...]) -> str:
    parts = [f"+{n}" for n in added] + [f"-{n}" for n in removed]
    return f" ({', '.join(parts)})" if parts else ""
