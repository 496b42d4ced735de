"""Finding, reading and watching the config file.

Theory of operation (after Traefik's file provider): watch the config's *directory*, not the
file, because editors save by writing a temporary file and renaming it over the original,
which ends a watch on the file itself. A symlinked config is watched in both the link's
directory and its target's. Changes are debounced, the file is parsed and validated in full,
and only a result that differs from the running config is swapped in. A failed load logs one
line (once per distinct problem) and leaves the last good table in force.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import watchfiles

from ..aio import sleep_or_stop
from ..core.access import load_secrets
from ..core.errors import ConfigError
from ..core.model import Config
from ..core.state import State
from .schema import parse_config

log = logging.getLogger("devrouter.reload")

#: A config larger than this, in bytes, is refused rather than parsed.
MAX_CONFIG_BYTES = 1024 * 1024
#: watchfiles batching: yield once no change has arrived for STEP_MS, and at most every
#: DEBOUNCE_MS while changes keep coming (milliseconds). Well under the one second promised.
DEBOUNCE_MS = 300
STEP_MS = 50
#: Pause before re-arming a watch that failed (its directory vanished), in seconds.
REARM_DELAY_S = 1.0


def find_config(explicit: str | None, env: Mapping[str, str], cwd: Path) -> Path | None:
    """`--config`, then $DEVROUTER_CONFIG, ./devrouter.yaml, $XDG_CONFIG_HOME/devrouter/config.yaml.

    An explicit path (flag or variable) is returned even if missing, so the caller can say
    so; the implicit ones only when they exist.
    """
    if explicit:
        return Path(explicit)
    if env.get("DEVROUTER_CONFIG"):
        return Path(env["DEVROUTER_CONFIG"])
    local = cwd / "devrouter.yaml"
    if local.is_file():
        return local
    xdg = Path(env.get("XDG_CONFIG_HOME") or Path(env.get("HOME", "~")).expanduser() / ".config")
    user = xdg / "devrouter" / "config.yaml"
    return user if user.is_file() else None


def read_config(path: Path, own_ports: Iterable[int] | None = None, secrets: bool = True) -> Config:
    """Read and parse one file, and (with `secrets`) the access secrets it names; every
    failure is a ConfigError naming the file."""
    source = str(path)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(source, None, "the file does not exist") from None
    except PermissionError:
        raise ConfigError(source, None, "cannot read the file: permission denied") from None
    except IsADirectoryError:
        raise ConfigError(source, None, "this is a directory, not a YAML file") from None
    except OSError as exc:
        raise ConfigError(source, None, f"cannot read the file: {exc.strerror}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(source, None, f"the file is larger than {MAX_CONFIG_BYTES} bytes")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(source, None, f"the file is not UTF-8 text ({exc.reason})") from None
    config = parse_config(text, source, own_ports)
    return load_secrets(config) if secrets else config


class Reloader:
    def __init__(self, state: State, path: Path, own_ports: Iterable[int]) -> None:
        self.state = state
        self.path = Path(os.path.abspath(path))
        self.own_ports = tuple(own_ports)
        self.reloads = 0

    def apply(self) -> bool:
        """Load the file and swap it in if it is valid and different. True if swapped."""
        try:
            config = read_config(self.path, self.own_ports)
        except ConfigError as exc:
            message = str(exc)
            if message != self.state.last_error:
                log.error("%s (keeping the last good config)", message)
                self.state.last_error = message
            return False
        current = self.state.snapshot.config
        if config == current:
            if self.state.last_error is not None:
                log.info("%s is valid again; nothing changed", self.path)
                self.state.last_error = None
            return False
        if config.listen != current.listen:
            log.warning("the listen address in %s changed; restart devrouter to use it", self.path)
        snapshot = self.state.swap(config)
        self.reloads += 1
        log.info("reloaded %s: %d route(s)", self.path, len(snapshot.table.routes))
        return True

    def _targets(self) -> tuple[frozenset[Path], frozenset[str]]:
        """Directories to watch and file names that matter, link and target alike."""
        real = Path(os.path.realpath(self.path))
        return frozenset({self.path.parent, real.parent}), frozenset({self.path.name, real.name})

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            dirs, names = self._targets()
            watched = [d for d in dirs if d.is_dir()]
            if not watched:
                await sleep_or_stop(stop, REARM_DELAY_S)
                continue
            try:
                async for changes in watchfiles.awatch(
                    *watched,
                    debounce=DEBOUNCE_MS,
                    step=STEP_MS,
                    stop_event=stop,
                    recursive=False,
                    watch_filter=None,
                ):
                    if any(Path(p).name in names for _, p in changes):
                        self.apply()
                        if self._targets() != (dirs, names):
                            break  # a symlink now points elsewhere: watch the new place
            except (OSError, RuntimeError) as exc:
                log.warning("watching %s failed (%s); retrying", self.path, exc)
                await sleep_or_stop(stop, REARM_DELAY_S)
