"""`devrouter service install|uninstall|status`: the router as a service that starts at
login and again after a failure (a systemd user unit on Linux, a launchd agent on macOS).

The service runs the devrouter that ran `install` (by absolute path, so a virtualenv
works), with the config file found now the way `serve` would find it from here, and this
shell's state directory, so `run`, `ls` and `url` talk to it. `--port 80` on Linux needs
one privileged step (install.py's plans); it is printed, never run with sudo.

Output: what was done on stdout, one line per step, then the notes (logs, linger) and the
privileged step when there is one. Exit codes: 0 done (`status`: the service runs), 1 a step
failed, another kind of service is in the way, an unusable config, or (`status`) the
service is not installed or not running; 2 a bad option.
"""

from __future__ import annotations

import argparse
import os
import pwd
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..config.reload import find_config, read_config
from ..core.errors import EXIT_FAILED, EXIT_OK, UsageError
from ..services.locate import locate
from ..services.ports import ensure_state_dir, state_dir
from . import install, status, units
from .install import Facts, Places, Plan, Platform, Runner, ServiceError, Write

PLATFORMS: tuple[Platform, ...] = ("linux", "macos")


def this_platform() -> Platform | None:
    if sys.platform.startswith("linux"):
        return "linux"
    return "macos" if sys.platform == "darwin" else None


@dataclass(frozen=True, slots=True)
class Machine:
    """Everything the commands read from or do to this machine; tests give their own."""

    platform: Platform
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    runner: Runner = install.run_command
    gather: Callable[[str, Places], Facts] = install.gather
    systemd: bool = field(default_factory=install.SYSTEMD_RUNNING.is_dir)  # PID 1 is systemd
    say: Callable[[str], None] = print

    @property
    def user(self) -> str:
        return pwd.getpwuid(os.getuid()).pw_name

    @property
    def home(self) -> str:
        return self.env.get("HOME") or pwd.getpwuid(os.getuid()).pw_dir

    def places(self) -> Places:
        return install.places(self.env, state_dir(self.env))


def program() -> tuple[str, ...]:
    """This devrouter, by absolute path: the `devrouter` script next to the interpreter (a
    virtualenv's bin/), else the interpreter with `-m devrouter`."""
    python = Path(os.path.abspath(sys.executable))  # not resolved: a venv's python is a link
    script = python.parent / "devrouter"
    if script.is_file() and os.access(script, os.X_OK):
        return (str(script),)
    return (str(python), "-m", "devrouter")


def make_spec(config_flag: str | None, port: int | None, machine: Machine) -> units.Spec:
    """What the service runs. The config is found now, from here, and read: a service
    that would fail at every start is refused (a ConfigError, exit 1)."""
    found = find_config(config_flag, machine.env, machine.cwd)
    config = None
    if found is not None:
        path = found if found.is_absolute() else machine.cwd / found
        read_config(path, own_ports={port} if port else None, secrets=False)
        config = str(path)
    return units.Spec(
        program(),
        str(state_dir(machine.env)),
        config,
        user=machine.user,
        home=machine.home,
    )


def _check_port(port: int | None) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise UsageError(f"--port {port} is outside 1-65535")


def _dry_run(plan: Plan, say: Callable[[str], None]) -> None:
    say("dry run: nothing is written or run")
    for line in install.describe(plan):
        say(line)
    if plan.privileged:
        say("the privileged step (printed for you to run; devrouter never runs sudo):")
        say(f"  {plan.sudo_line()}")
    for note in plan.notes:
        say(note)


def _finish(plan: Plan, where: Places, say: Callable[[str], None]) -> None:
    if plan.privileged:
        shown = False
        for step in plan.steps:
            if isinstance(step, Write) and step.path.parent == where.generated:
                say(f"--- {step.path}")
                say(step.data.decode().rstrip("\n"))
                shown = True
        read = " Read the files above, then run:" if shown else " Run:"
        say(f"one privileged step is left; devrouter never runs sudo itself.{read}")
        say(f"  {plan.sudo_line()}")
    for note in plan.notes:
        say(note)


def do_install(
    machine: Machine,
    config: str | None = None,
    port: int | None = None,
    mode: str = "socket",
    dry_run: bool = False,
) -> int:
    _check_port(port)
    spec = make_spec(config, port, machine)
    where = machine.places()
    facts = machine.gather(machine.user, where)
    invoker = machine.env.get("SUDO_USER", "")
    if facts.root and invoker not in ("", "root"):
        raise UsageError(
            f"run `devrouter service install` as {invoker}, without sudo: it installs the "
            "service of the user who runs it, and prints the one step that needs root"
        )
    plan = install.plan_install(machine.platform, spec, where, facts, port, mode)
    if dry_run:
        _dry_run(plan, machine.say)
        return EXIT_OK
    if machine.platform == "linux" and not machine.systemd:
        raise ServiceError(
            f"systemd is not running on this machine (no {install.SYSTEMD_RUNNING}): there "
            "is no user manager to run the unit. Start `devrouter serve` from your "
            "session's start-up instead (`service install --dry-run` shows the unit)"
        )
    if any(isinstance(s, Write) and s.path.parent == where.generated for s in plan.steps):
        ensure_state_dir(Path(spec.state_dir))  # 0700, this user's: a StateDirError is exit 3
    install.execute(plan, machine.runner, machine.say)
    _finish(plan, where, machine.say)
    return EXIT_OK


def do_uninstall(machine: Machine, dry_run: bool = False) -> int:
    where = machine.places()
    facts = machine.gather(machine.user, where)
    plan = install.plan_uninstall(machine.platform, where, facts)
    if install.nothing_installed(machine.platform, facts):
        machine.say("no devrouter service is installed; nothing to do")
        if not dry_run:
            install.execute(plan, machine.runner, lambda _: None)  # leftovers, silently
        return EXIT_OK
    if dry_run:
        _dry_run(plan, machine.say)
        return EXIT_OK
    install.execute(plan, machine.runner, machine.say)
    _finish(plan, where, machine.say)
    return EXIT_OK


def _scope(state: status.UnitState) -> str:
    return {"user": "systemd user unit", "system": "systemd system unit"}.get(
        state.scope, "launchd agent"
    )


def do_status(machine: Machine) -> int:
    where = machine.places()
    facts = machine.gather(machine.user, where)
    states = status.query(machine.platform, where, facts, machine.runner)
    say = machine.say
    if not states:
        say("service: not installed (`devrouter service install` sets it up)")
    for s in states:
        say(f"service: {s.name} ({_scope(s)}, {s.path}): {s.describe()}")
    if machine.platform == "linux" and facts.sysctl_file:
        say(f"sysctl: {where.sysctl_file} is installed ({units.SYSCTL_KEY})")
    found = locate(directory=state_dir(machine.env), env=machine.env, cwd=machine.cwd)
    port = "" if found.port == 80 else f":{found.port}"
    if found.answered and found.is_devrouter:
        pid = f", pid {found.pid}" if found.pid else ""
        say(f"router: http://NAME.localhost{port} answers at {found.describe()}{pid}")
    elif found.answered:
        say(f"router: something that is not devrouter answers at {found.describe()}")
    else:
        say(f"router: nothing answers at {found.describe()}")
    return EXIT_OK if status.service_running(states) else EXIT_FAILED


# --- the command line ---------------------------------------------------------------------


def _machine(args: argparse.Namespace) -> Machine:
    chosen = getattr(args, "platform", None)
    if chosen and not getattr(args, "dry_run", False):
        raise UsageError("--platform is for --dry-run only (to see another system's files)")
    platform = chosen or this_platform()
    if platform is None:
        raise UsageError(
            f"`devrouter service` knows Linux (systemd) and macOS (launchd), not {sys.platform}"
        )
    return Machine(platform)


def cmd_install(args: argparse.Namespace) -> int:
    machine = _machine(args)
    if args.privileged_port and machine.platform != "linux":
        raise UsageError("--privileged-port is for Linux (on macOS any user may bind port 80)")
    mode = args.privileged_port or "socket"
    return do_install(machine, args.config, args.port, mode, args.dry_run)


def cmd_uninstall(args: argparse.Namespace) -> int:
    return do_uninstall(_machine(args), args.dry_run)


def cmd_status(args: argparse.Namespace) -> int:
    return do_status(_machine(args))


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `service install|uninstall|status` (`parents`: the CLI's common options)."""
    service = sub.add_parser(
        "service",
        parents=list(parents),
        help="run the router at login and after a failure (systemd user unit, launchd agent)",
        description="Install the router as a service of this user: a systemd user unit on "
        "Linux (journalctl --user -u devrouter), a launchd agent on macOS (logs in "
        "~/Library/Logs/devrouter). It runs this devrouter's `serve` with the config found "
        "from here, starts at login and again when it fails.",
        epilog="Exit status: 0 done (status: the service runs), 1 a step failed, another "
        "kind of service is installed, an unusable config, or (status) no service runs, "
        "2 a bad option. See docs/service.md.",
    )
    actions = service.add_subparsers(dest="service_action", metavar="ACTION", required=True)
    dry = "print the files and commands; write and run nothing"
    platform_help = "whose files to print with --dry-run (default: this machine's)"

    inst = actions.add_parser(
        "install",
        parents=list(parents),
        help="write and start the service (again: replaces it)",
        description="Write the unit (or agent) and start it. With --port below 1024 on "
        "Linux, the files that need root are written under the state directory and the "
        "one command that installs them is printed.",
    )
    inst.add_argument("--config", metavar="PATH", help="config file (default: as for `serve`)")
    inst.add_argument(
        "--port",
        metavar="P",
        type=int,
        help="listen on P on 127.0.0.1 and ::1 (default: the config's listen:, else 7355)",
    )
    inst.add_argument(
        "--privileged-port",
        choices=units.PRIVILEGED_MODES,
        help="Linux, --port below 1024: socket (systemd socket activation; default), "
        "capability (CAP_NET_BIND_SERVICE) or sysctl (every user may bind low ports)",
    )
    inst.add_argument("--dry-run", action="store_true", help=dry)
    inst.add_argument("--platform", choices=PLATFORMS, help=platform_help)
    inst.set_defaults(handler=cmd_install)

    uninst = actions.add_parser(
        "uninstall",
        parents=list(parents),
        help="stop the service and remove its files",
        description="Stop and disable the service and remove its files; for the system "
        "units of --port 80, print the one privileged command that removes them.",
    )
    uninst.add_argument("--dry-run", action="store_true", help=dry)
    uninst.add_argument("--platform", choices=PLATFORMS, help=platform_help)
    uninst.set_defaults(handler=cmd_uninstall)

    stat = actions.add_parser(
        "status",
        parents=list(parents),
        help="is the service installed and running, and where does the router listen",
    )
    stat.set_defaults(handler=cmd_status)
