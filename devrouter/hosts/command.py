"""`devrouter hosts sync` and `devrouter hosts clean`: the route names as entries of one
marked block in a hosts file (block.py says what the block is, file.py how it is written).

The names come from the running router, found the way every command finds it
(devrouter.services.locate): its control socket's `list`, or its /api/status, which hold
every route it serves (config, `run`, stacks, aliases). When no router answers, they come
from the config file (`--config`, else the usual lookup), and a note says so. The router's
own name, `devrouter` (its dashboard), is always written. Wildcards (`*.shop`) cannot be
written in a hosts file; a note names each one left out.

A file already holding exactly the block is not written at all, so a user without write
access to it gets "already up to date" rather than an error.

`sudo` changes the user, and with it the state directory and the config lookup, so the
line printed when permission is denied names both explicitly: run as printed, it writes the
same names the user's own router serves.

Output: what changed on stdout, one line; notes on stderr after "devrouter hosts: ".
Exit codes: 0 written or nothing to do, 1 a damaged block (block.DamagedBlock), a file that
cannot be read or written (file.HostsFileError, file.NeedsPrivilege), an unusable config,
2 a bad option.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..config.reload import find_config, read_config
from ..core.errors import EXIT_OK
from ..services.locate import LISTEN_ENV, locate
from ..services.ports import HOME_ENV, state_dir
from .block import SUFFIX
from .file import DEFAULT_HOSTS, NeedsPrivilege
from .sync import clean_file, names_to_write, sync_file

# --- the command --------------------------------------------------------------------------


def _note(text: str) -> None:
    print(f"devrouter hosts: {text}", file=sys.stderr, flush=True)


def _hosts_names(names: Sequence[str]) -> str:
    return ", ".join(f"{n}{SUFFIX}" for n in names)


@dataclass(frozen=True, slots=True)
class _Found:
    names: tuple[str, ...]  # route names, as the router or the config has them
    config: Path | None  # the config file read or found, for the sudo line
    note: str  # where the names came from, when that is worth saying


def _route_names(config_flag: str | None) -> _Found:
    located = locate(config=config_flag, directory=state_dir(), probe=True)
    config = find_config(config_flag, os.environ, Path.cwd())
    if located.routes is not None:
        return _Found(tuple(r.name for r in located.routes), config, "")
    if config is None:
        return _Found(
            (),
            None,
            "no router is running and no config file was found: the block holds only the "
            "router's own name",
        )
    routes = read_config(config, own_ports=(), secrets=False).routes  # ConfigError: exit 1
    note = (
        f"no router is running: writing the names of {config} (names of `run`, stacks and "
        "aliases are added by a sync while the router runs)"
    )
    return _Found(tuple(r.name for r in routes), config, note)


def _program() -> list[str]:
    """How this devrouter was started, as words a root shell can run (sudo's PATH may not
    hold a virtualenv's bin directory)."""
    argv0 = sys.argv[0]
    if os.path.basename(argv0) == "devrouter" and os.path.isfile(argv0):
        return [os.path.abspath(argv0)]
    return [sys.executable, "-m", "devrouter"]


def sudo_line(action: str, path: Path, config: Path | None) -> str:
    """The exact command to run the same `hosts` action as root: the state directory,
    $DEVROUTER_LISTEN and the config file spelt out, since sudo changes HOME and the
    environment."""
    words = ["sudo"]
    if action == "sync":
        env = [f"{HOME_ENV}={state_dir()}"]
        if os.environ.get(LISTEN_ENV):
            env.append(f"{LISTEN_ENV}={os.environ[LISTEN_ENV]}")
        words += ["env", *env]
    words += [*_program(), "hosts", action, "--file", str(path.absolute())]
    if action == "sync" and config is not None:
        words += ["--config", str(config.absolute())]
    return shlex.join(words)


def cmd_sync(args: argparse.Namespace) -> int:
    path = Path(args.file)
    found = _route_names(args.config)
    if found.note:
        _note(found.note)
    names = names_to_write(found.names)
    for wildcard in names.wildcards:
        _note(
            f"{wildcard}.localhost left out: a hosts file has no wildcards (give each name "
            "under it that a program must resolve a route or an alias of its own)"
        )
    for bad in names.invalid:
        _note(f"{bad!r} left out: not a route name")
    try:
        outcome = sync_file(path, names)
    except NeedsPrivilege as exc:
        raise NeedsPrivilege(path, exc.doing, sudo_line("sync", path, found.config)) from None
    count = f"{len(outcome.after)} name{'s' if len(outcome.after) != 1 else ''}"
    if not outcome.written:
        print(f"{path}: already up to date ({count})")
    elif not outcome.had_block:
        print(f"{path}: added the devrouter block: {_hosts_names(outcome.after)}")
    elif outcome.added or outcome.removed:
        changes = [
            f"{what} {_hosts_names(names)}"
            for what, names in (("added", outcome.added), ("removed", outcome.removed))
            if names
        ]
        print(f"{path}: {'; '.join(changes)} ({count} now)")
    else:
        print(f"{path}: rewrote the devrouter block ({count}, none added or removed)")
    return EXIT_OK


def cmd_clean(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        outcome = clean_file(path)
    except NeedsPrivilege as exc:
        raise NeedsPrivilege(path, exc.doing, sudo_line("clean", path, None)) from None
    if not outcome.had_block:
        print(f"{path}: no devrouter block; nothing to do")
    else:
        print(f"{path}: removed the devrouter block ({_hosts_names(outcome.before) or 'empty'})")
    return EXIT_OK


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `hosts sync` and `hosts clean` (`parents`: the CLI's common options)."""
    hosts = sub.add_parser(
        "hosts",
        parents=list(parents),
        help="write the route names into /etc/hosts, for programs that do not resolve *.localhost",
        description="Keep every route name as 127.0.0.1 and ::1 entries in one marked "
        "block of a hosts file, for the programs that do not resolve *.localhost by "
        "themselves (Safari and macOS getaddrinfo, glibc without nss-myhostname, Node and "
        "many command-line tools there). Nothing outside the block is touched.",
        epilog="Exit status: 0 written or nothing to do, 1 a damaged block, a file that "
        "cannot be read or written, or an unusable config, 2 a bad option. See docs/hosts.md.",
    )
    actions = hosts.add_subparsers(dest="hosts_action", metavar="ACTION", required=True)
    file_help = f"the hosts file (default: {DEFAULT_HOSTS})"
    sync = actions.add_parser(
        "sync",
        parents=list(parents),
        help="write the current route names into the block (adding or updating it)",
        description="Write every name the running router serves (config, run, stacks, "
        "aliases) into the devrouter block of the hosts file; without a running router, "
        "the names of the config file. Prints the names added and removed.",
    )
    sync.add_argument("--file", metavar="PATH", default=str(DEFAULT_HOSTS), help=file_help)
    sync.add_argument(
        "--config",
        metavar="PATH",
        help="config file, when no router runs (default: as for `check`)",
    )
    sync.set_defaults(handler=cmd_sync)
    clean = actions.add_parser(
        "clean",
        parents=list(parents),
        help="remove the devrouter block",
        description="Remove the devrouter block from the hosts file; every other line "
        "stays as it is.",
    )
    clean.add_argument("--file", metavar="PATH", default=str(DEFAULT_HOSTS), help=file_help)
    clean.set_defaults(handler=cmd_clean)
