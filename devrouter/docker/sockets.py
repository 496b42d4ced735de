"""Where the Docker Engine listens: the config's `docker.socket`, else `DOCKER_HOST`, else
the sockets Docker, Docker Desktop, OrbStack, Colima, rootless Docker and Podman create.

`candidates` is pure (environment and home directory in, paths out, in the order tried);
`find_socket` is the one stat call per candidate.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..core.model import DockerSettings

#: The usual sockets, in the order tried after DOCKER_HOST. `~` is the user's home;
#: `$XDG_RUNTIME_DIR` is /run/user/UID on Linux.
USUAL = (
    "/var/run/docker.sock",  # Docker Engine; Docker Desktop and OrbStack link it here too
    "~/.docker/run/docker.sock",  # Docker Desktop (macOS, Linux)
    "~/.orbstack/run/docker.sock",  # OrbStack
    "~/.colima/default/docker.sock",  # Colima
    "~/.colima/docker.sock",  # Colima before 0.4
    "$XDG_RUNTIME_DIR/docker.sock",  # rootless Docker
    "$XDG_RUNTIME_DIR/podman/podman.sock",  # Podman's Docker-compatible API
)


@dataclass(frozen=True, slots=True)
class Candidates:
    """The sockets to try, in order, and where the list came from ("" when from the usual
    places). `problem` is set when the setting itself cannot be used (a tcp:// DOCKER_HOST)."""

    paths: tuple[Path, ...]
    origin: str = ""
    problem: str | None = None


def candidates(settings: DockerSettings, env: Mapping[str, str], home: Path) -> Candidates:
    if settings.socket:
        return Candidates((_expand(settings.socket, env, home),), "docker.socket in the config")
    host = env.get("DOCKER_HOST", "").strip()
    if host:
        if host.startswith("unix://"):
            return Candidates((_expand(host[len("unix://") :], env, home),), "DOCKER_HOST")
        if host.startswith("/"):
            return Candidates((Path(host),), "DOCKER_HOST")
        return Candidates(
            (),
            "DOCKER_HOST",
            f"DOCKER_HOST={host} is not a unix socket; devrouter watches the Engine over its "
            "unix socket only (set docker.socket in the config)",
        )
    paths: list[Path] = []
    for raw in USUAL:
        if "$XDG_RUNTIME_DIR" in raw and not env.get("XDG_RUNTIME_DIR"):
            continue
        path = _expand(raw, env, home)
        if path not in paths:
            paths.append(path)
    return Candidates(tuple(paths))


def _expand(raw: str, env: Mapping[str, str], home: Path) -> Path:
    text = raw.replace("$XDG_RUNTIME_DIR", env.get("XDG_RUNTIME_DIR", ""))
    if text == "~" or text.startswith("~/"):
        return home / text[2:]
    return Path(text)


def find_socket(found: Candidates) -> Path | None:
    """The first candidate that is a unix socket."""
    for path in found.paths:
        try:
            if stat.S_ISSOCK(os.stat(path).st_mode):
                return path
        except OSError:
            continue
    return None


def describe(found: Candidates) -> str:
    """Where the Engine was looked for, for "not reachable" messages."""
    if found.problem:
        return found.problem
    where = ", ".join(str(p) for p in found.paths)
    return f"{where} (from {found.origin})" if found.origin else where
