"""The `ca`, `trust` and `untrust` commands: parse, find the CA and the stores, then plan and
perform with devrouter.tls.trust, one line per store changed.

`trust` and `untrust` change what the user running them may change (the user's NSS
databases). The system store needs root: run as root, they change it; otherwise they change
nothing there and print the one command that does (`sudo env DEVROUTER_HOME=... devrouter
trust --system-only`). They never run sudo themselves: a password prompt in the middle of a
command is a surprise, and what runs as root should be what the user chose to run. The state
directory is passed to that command explicitly because sudo resets $HOME on most systems,
which would point root at a state directory (and a CA) of its own.

Run as root for another user (sudo), they read only that user's `ca.pem` (never its key,
never creating anything in its state directory), and leave that user's NSS databases to the
user.

Exit codes: 0 done (a system store that needs root is reported, not failed), 1 a step asked
for failed, 3 the CA cannot be used.
"""

from __future__ import annotations

import argparse
import logging
import os
import shlex
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from ..core.errors import EXIT_FAILED, EXIT_OK, TrustError
from ..services.ports import HOME_ENV, ensure_state_dir, state_dir
from .ca import LocalCA
from .stores import TRUST_ROOT_ENV, NSSStore, Store, find_stores
from .trust import (
    CA,
    CERTUTIL_HINT,
    Step,
    perform,
    plan_trust,
    plan_untrust,
    present_in,
    read_public_ca,
    trusted_by,
)


@dataclass(frozen=True)
class Words:
    action: str  # "trust" or "untrust"
    want: bool  # the store should trust the CA afterwards
    done: str  # "added the devrouter CA to {}"
    would: str
    nothing: str  # the store is already as asked
    failed: str


TRUST = Words(
    "trust",
    True,
    "added the devrouter CA to {}",
    "would add the devrouter CA to {}",
    "already trusted by {}",
    "could not add the devrouter CA to {}",
)
UNTRUST = Words(
    "untrust",
    False,
    "removed the devrouter CA from {}",
    "would remove the devrouter CA from {}",
    "{} does not have the devrouter CA: nothing to remove",
    "could not remove the devrouter CA from {}",
)


@dataclass(frozen=True)
class Request:
    words: Words
    system: bool = True
    user: bool = True
    dry_run: bool = False


# --- ca ---------------------------------------------------------------------------------------


def cmd_ca(args: argparse.Namespace) -> int:
    _quiet_ca_log()
    ca = _load_or_create(ensure_state_dir(state_dir()), sys.stderr)
    if args.pem:
        sys.stdout.write(ca.cert_pem.decode())
    else:
        print(ca.paths.cert)
    return EXIT_OK


# --- trust and untrust ------------------------------------------------------------------------


def _load_or_create(state: Path, err: TextIO) -> LocalCA:
    existed = LocalCA.load(state) is not None
    ca = LocalCA.load_or_create(state)
    if not existed:
        print(
            f"devrouter: created the local CA in {ca.paths.dir} "
            f"(SHA-256 {ca.fingerprint_sha256()})",
            file=err,
        )
    return ca


def _quiet_ca_log() -> None:
    """These commands say in their own words when they make the CA: the CA's own INFO line
    would say it twice (--log-level debug keeps it)."""
    if logging.getLogger().getEffectiveLevel() > logging.DEBUG:
        logging.getLogger("devrouter.tls").setLevel(logging.WARNING)


def cmd_trust(args: argparse.Namespace) -> int:
    _quiet_ca_log()
    return change(_request(TRUST, args), os.environ, os.geteuid())


def cmd_untrust(args: argparse.Namespace) -> int:
    return change(_request(UNTRUST, args), os.environ, os.geteuid())


def _request(words: Words, args: argparse.Namespace) -> Request:
    return Request(words, not args.user_only, not args.system_only, args.dry_run)


def change(
    req: Request,
    env: Mapping[str, str],
    euid: int,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Trust or untrust, as `euid`; the exit code."""
    out, err = out or sys.stdout, err or sys.stderr
    state = state_dir(env)
    ca = _the_ca(req, state, euid, err)
    if ca is None:
        print(f"no local CA in {state / 'ca'}: nothing to untrust", file=out)
        return EXIT_OK
    system, nss = find_stores(env, system=req.system, user=req.user)
    if nss and euid == 0 and _owner(Path(env.get("HOME") or Path.home())) not in (None, 0):
        print(
            f"skipped the NSS databases in {env.get('HOME')}: they are another user's; run "
            f"`devrouter {req.words.action} --user-only` as that user",
            file=out,
        )
        nss = []
    stores: list[Store] = [*([system] if system else []), *nss]
    todo: list[Store] = []
    for s in stores:
        status = trusted_by(s, ca) if req.words is TRUST else present_in(s, ca)
        if status is req.words.want:
            print(req.words.nothing.format(s.title), file=out)
        else:
            todo.append(s)
    plan = plan_trust(todo, ca, euid) if req.words is TRUST else plan_untrust(todo, ca, euid)
    failed = False
    for s in todo:
        steps = [x for x in plan if x.store is s]
        if req.dry_run:
            root = " (as root)" if s.needs_root else ""
            print(f"{req.words.would.format(s.title)}{root}:", file=out)
            for x in steps:
                print(f"  {x.command()}", file=out)
        elif any(x.deferred for x in steps):
            _print_sudo(req, s, steps, state, env, out)
        else:
            failed |= not _perform(req, s, steps, ca, out, err)
    failed |= _report_missing(req, system, nss, env, out, err)
    if req.words is UNTRUST and not req.dry_run:
        print(
            f"the CA itself is kept in {ca.paths.dir}; to delete it too: "
            f"rm -r {shlex.quote(str(ca.paths.dir))}",
            file=out,
        )
    return EXIT_FAILED if failed else EXIT_OK


def _the_ca(req: Request, state: Path, euid: int, err: TextIO) -> CA | None:
    """The CA to trust (made on first use) or untrust. Root acting for another user reads
    only that user's certificate."""
    owner = _owner(state)
    if req.words is UNTRUST or (owner is not None and owner != euid):
        ca = read_public_ca(state)
        if ca is None and req.words is TRUST:
            raise TrustError(
                f"no local CA in {state / 'ca'}: run `devrouter trust` as the user who runs "
                "devrouter first (it makes the CA)"
            )
        return ca
    return _load_or_create(ensure_state_dir(state), err)


def _perform(
    req: Request, store: Store, steps: Sequence[Step], ca: CA, out: TextIO, err: TextIO
) -> bool:
    """Perform a store's steps, then check the store; one line either way."""
    try:
        for x in steps:
            perform(x, ca)
    except TrustError as exc:
        print(f"devrouter: {req.words.failed.format(store.title)}: {exc}", file=err)
        return False
    now = trusted_by(store, ca)
    if now is (not req.words.want):
        still = "still trusts it" if now else "still does not trust it"
        print(
            f"devrouter: {req.words.failed.format(store.title)}: the steps ran but it {still} "
            f"({'; '.join(x.command() for x in steps)})",
            file=err,
        )
        return False
    print(req.words.done.format(store.title), file=out)
    return True


def _print_sudo(
    req: Request,
    store: Store,
    steps: Sequence[Step],
    state: Path,
    env: Mapping[str, str],
    out: TextIO,
) -> None:
    verb = "adding the CA to" if req.words is TRUST else "removing the CA from"
    print(f"{store.title} is not done yet: {verb} it needs root. Run:", file=out)
    print(f"  {sudo_command(req.words.action, state, env)}", file=out)
    print(f"  (it runs: {'; '.join(x.command() for x in steps)})", file=out)


def sudo_command(action: str, state: Path, env: Mapping[str, str]) -> str:
    """The command that does the system store's part as root."""
    assigns = [f"{HOME_ENV}={state}"]
    if env.get(TRUST_ROOT_ENV):
        assigns.append(f"{TRUST_ROOT_ENV}={env[TRUST_ROOT_ENV]}")
    return shlex.join(["sudo", "env", *assigns, *self_argv(), action, "--system-only"])


def self_argv() -> list[str]:
    """How to run this devrouter again, by full path."""
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and Path(argv0).name not in ("__main__.py", "-c", "-m") and Path(argv0).exists():
        return [str(Path(argv0).absolute())]
    return [sys.executable, "-m", "devrouter"]


def _report_missing(
    req: Request,
    system: Store | None,
    nss: Sequence[NSSStore],
    env: Mapping[str, str],
    out: TextIO,
    err: TextIO,
) -> bool:
    """Lines for the kinds of store asked for and not found; True when that fails the run
    (only the system store asked for alone)."""
    failed = False
    if req.system and system is None:
        line = (
            "found no system trust store (none of update-ca-certificates, update-ca-trust, "
            "trust or security with its directory)"
        )
        if not req.user:
            print(f"devrouter: {line}", file=err)
            failed = True
        else:
            print(line, file=out)
    if req.user and not nss and env.get("HOME"):
        if sys.platform.startswith("linux") and req.words is TRUST:
            print(
                "found no NSS database (Chrome/Chromium, Firefox), and certutil to make "
                f"Chrome's is not installed: to trust the CA in them, {CERTUTIL_HINT}",
                file=out,
            )
        else:
            print("found no NSS database (Chrome/Chromium, Firefox profiles)", file=out)
    return failed


def _owner(path: Path) -> int | None:
    try:
        return path.stat().st_uid
    except OSError:
        return None


# --- command line -----------------------------------------------------------------------------


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `ca`, `trust` and `untrust` (`parents`: the CLI's common options)."""
    ca = sub.add_parser(
        "ca",
        parents=list(parents),
        help="print the path of the local CA's certificate (made on first use)",
        description="Print the path of devrouter's local CA certificate, making the CA the "
        "first time. Give it to a client that should trust devrouter's HTTPS: "
        'curl --cacert "$(devrouter ca)".',
    )
    ca.add_argument("--pem", action="store_true", help="print the certificate (PEM) instead")
    ca.set_defaults(handler=cmd_ca)
    for name, handler, what in (
        ("trust", cmd_trust, "add the local CA to the system's and browsers' trust stores"),
        ("untrust", cmd_untrust, "remove the local CA from the trust stores"),
    ):
        p = sub.add_parser(
            name,
            parents=list(parents),
            help=what,
            description=f"{what[0].upper()}{what[1:]}: the user's NSS databases (Chrome and "
            "Chromium on Linux, Firefox profiles) directly; the system store (Debian/Ubuntu, "
            "Fedora/RHEL, Arch, openSUSE, macOS) needs root: run as root, it is changed, "
            "otherwise the sudo command that changes it is printed. One line per store.",
            epilog="Exit status: 0 done or nothing to do, 1 a step failed, 3 the CA cannot be "
            "used. See docs/https.md.",
        )
        only = p.add_mutually_exclusive_group()
        only.add_argument("--system-only", action="store_true", help="only the system store")
        only.add_argument("--user-only", action="store_true", help="only this user's NSS databases")
        p.add_argument("--dry-run", action="store_true", help="print the commands, change nothing")
        p.set_defaults(handler=handler)
