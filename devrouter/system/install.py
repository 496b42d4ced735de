"""Where the service's files go, the plan of steps that installs or removes them, running a
plan, and reading the service's state. Every bit of I/O of `devrouter service` is here.

Theory of operation. A command first gathers `Facts` (what is installed, whether this is
root, the sysctl's value), then a pure function makes a `Plan`: the steps this user takes,
in order (write a file, run a command, remove a file), and the one privileged step, as
commands that need root. `execute` takes the steps and prints each one; `--dry-run`
prints them instead. The privileged step is never run with sudo: it is printed, as one
line to paste, unless this process is root already (then it is a step like the others,
and the output says so).

Commands run through a `Runner` (argv in, exit status and output back), so tests give
one that records the argv and answers as systemctl or launchctl would; the real one
(`run_command`) runs each with a timeout and never a shell.

What is installed where:
  Linux, user unit    $XDG_CONFIG_HOME/systemd/user/devrouter.service (systemctl --user)
  Linux, port 80      /etc/systemd/system/devrouter-USER.{socket,service}, or
                      /etc/sysctl.d/50-devrouter.conf: written first to STATE/service/,
                      where the user can read them, then installed by the privileged step
  macOS               ~/Library/LaunchAgents/dev.devrouter.plist (launchctl bootstrap
                      gui/UID), output in ~/Library/Logs/devrouter/

Errors: ServiceError (exit 1) for a command that failed or a file that cannot be written,
with the reason; AlreadyInstalled (exit 1) when another kind of service is in the way.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import subprocess
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..core.errors import CommandError
from . import units
from .units import LAUNCHD_LABEL, LAUNCHD_PLIST, SYSCTL_FILE, SYSCTL_KEY, USER_UNIT, Spec

Platform = Literal["linux", "macos"]

#: Upper bound for one systemctl or launchctl command, in seconds (`restart` waits for the
#: router's start, which Type=exec makes short).
COMMAND_TIMEOUT_S = 30.0
#: Where systemd keeps one empty file per user whose manager outlives their sessions.
LINGER_DIR = Path("/var/lib/systemd/linger")
#: Exists when systemd is PID 1 (sd_booted(3)).
SYSTEMD_RUNNING = Path("/run/systemd/system")
#: The sysctl as a file, and its value before devrouter changed it (the kernel's default).
SYSCTL_PROC = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


class ServiceError(CommandError):
    """A step of `service install|uninstall` failed; `str()` says which and why."""


class AlreadyInstalled(ServiceError):
    """Another kind of devrouter service (the user unit, or a system unit for port 80) is
    installed; two would fight over the same state directory."""


@dataclass(frozen=True, slots=True)
class Places:
    """Where every file goes, for one user."""

    home: Path
    user_units: Path  # $XDG_CONFIG_HOME/systemd/user
    generated: Path  # STATE/service: the system files, for the user to read before sudo
    system_units: Path = Path("/etc/systemd/system")
    sysctl_dir: Path = Path("/etc/sysctl.d")

    @property
    def user_unit(self) -> Path:
        return self.user_units / USER_UNIT

    @property
    def launch_agent(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / LAUNCHD_PLIST

    @property
    def mac_logs(self) -> Path:
        return self.home / "Library" / "Logs" / "devrouter"

    @property
    def sysctl_file(self) -> Path:
        return self.sysctl_dir / SYSCTL_FILE

    def system_unit(self, user: str) -> Path:
        return self.system_units / units.system_units(user)[0]

    def system_socket(self, user: str) -> Path:
        return self.system_units / units.system_units(user)[1]


def places(env: Mapping[str, str], state_dir: Path) -> Places:
    """The places for the user of `env` (HOME, XDG_CONFIG_HOME as systemd reads them)."""
    home = Path(env.get("HOME") or Path.home())
    config_home = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else None
    if config_home is None or not config_home.is_absolute():  # the spec ignores relative ones
        config_home = home / ".config"
    return Places(home, config_home / "systemd" / "user", state_dir / "service")


# --- facts and plans ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Facts:
    """What is there before a plan is made."""

    user: str
    uid: int
    root: bool = False
    user_unit: bool = False  # the user unit's file exists
    system_unit: bool = False  # /etc/systemd/system/devrouter-USER.service exists
    system_socket: bool = False
    sysctl_file: bool = False  # /etc/sysctl.d/50-devrouter.conf exists
    launch_agent: bool = False
    unprivileged_port_start: int = units.PRIVILEGED_BELOW
    linger: bool = False


def gather(user: str, where: Places) -> Facts:
    """The facts of this machine for `user`."""
    start = units.PRIVILEGED_BELOW
    with contextlib.suppress(OSError, ValueError):
        start = int(SYSCTL_PROC.read_text().strip())
    try:
        system_unit = where.system_unit(user).is_file()
        system_socket = where.system_socket(user).is_file()
    except units.UnitNameError:  # no system unit can have been installed for this name
        system_unit = system_socket = False
    return Facts(
        user=user,
        uid=os.getuid(),
        root=os.geteuid() == 0,
        user_unit=where.user_unit.is_file(),
        system_unit=system_unit,
        system_socket=system_socket,
        sysctl_file=where.sysctl_file.is_file(),
        launch_agent=where.launch_agent.is_file(),
        unprivileged_port_start=start,
        linger=(LINGER_DIR / user).exists(),
    )


@dataclass(frozen=True, slots=True)
class Write:
    path: Path
    data: bytes
    mode: int = 0o644


@dataclass(frozen=True, slots=True)
class Run:
    argv: tuple[str, ...]
    may_fail: bool = False  # stopping what is not running, removing what is not loaded
    as_root: bool = False  # the privileged step, run because this process is root


@dataclass(frozen=True, slots=True)
class Remove:
    path: Path


@dataclass(frozen=True, slots=True)
class MakeDir:
    path: Path  # launchd opens the agent's log files but does not make their directory


Step = Write | Run | Remove | MakeDir


@dataclass(frozen=True, slots=True)
class Plan:
    steps: tuple[Step, ...] = ()  # this user's, in order
    privileged: tuple[tuple[str, ...], ...] = ()  # the one step that needs root, to print
    notes: tuple[str, ...] = ()  # said after the steps: logs, linger, what comes next

    def sudo_line(self) -> str:
        """The privileged step as one line to paste (each command with its own sudo)."""
        return " && ".join(shlex.join(["sudo", *argv]) for argv in self.privileged)


def _systemctl_user(*words: str) -> tuple[str, ...]:
    return ("systemctl", "--user", *words)


def _journal(unit: str, user: bool) -> str:
    scope = "journalctl --user" if user else "journalctl"
    return f"logs: {scope} -u {unit.removesuffix('.service')} -f"


def _linger_note(facts: Facts) -> str:
    if facts.linger:
        return f"lingering is on for {facts.user}: the router runs without a login session too"
    return (
        "the router runs while you are logged in; to keep it running without a login "
        f"session (after a reboot, over ssh), run once: loginctl enable-linger {facts.user}"
    )


def _with_privilege(
    facts: Facts, steps: list[Step], privileged: list[tuple[str, ...]], notes: list[str]
) -> Plan:
    """As root, the privileged commands become steps; otherwise they are printed."""
    if facts.root and privileged:
        steps += [Run(argv, as_root=True) for argv in privileged]
        notes.insert(0, "running as root: the privileged step is taken here, not printed")
        return Plan(tuple(steps), (), tuple(notes))
    return Plan(tuple(steps), tuple(privileged), tuple(notes))


def plan_install(
    platform: Platform,
    spec: Spec,
    where: Places,
    facts: Facts,
    port: int | None = None,
    mode: str = "socket",
) -> Plan:
    """The steps of `service install` (`port`: --port; `mode`: --privileged-port).
    AlreadyInstalled when a service of another kind is in the way."""
    if platform == "macos":
        return _install_agent(spec, where, facts, port)
    start = facts.unprivileged_port_start
    if port is not None and port < start and mode in ("socket", "capability"):
        return _install_system(spec, where, facts, port, mode)
    if facts.system_unit or facts.system_socket:
        raise AlreadyInstalled(
            f"the system unit {units.system_units(facts.user)[0]} (devrouter on a privileged "
            "port) is installed: run `devrouter service uninstall` first"
        )
    listen = units.loopback_listen(port) if port is not None else spec.listen
    spec = Spec(spec.program, spec.state_dir, spec.config, listen, spec.user, spec.home)
    steps: list[Step] = [
        Write(where.user_unit, units.user_unit(spec).encode()),
        Run(_systemctl_user("daemon-reload")),
        Run(_systemctl_user("enable", USER_UNIT)),
    ]
    privileged: list[tuple[str, ...]] = []
    notes: list[str] = []
    if port is not None and units.PRIVILEGED_BELOW > port >= start:
        notes.append(f"port {port} needs no privilege here ({SYSCTL_KEY} is {start})")
    if port is not None and port < start:  # sysctl, not in effect yet
        conf = where.generated / SYSCTL_FILE
        steps.insert(0, Write(conf, units.sysctl_conf(port).encode()))
        privileged += [
            ("install", "-m", "0644", str(conf), str(where.sysctl_file)),
            ("sysctl", "-w", f"{SYSCTL_KEY}={port}"),
        ]
        if facts.root:
            privileged.append(_systemctl_user("restart", USER_UNIT))
        else:
            notes.append(
                f"then start the router: systemctl --user restart {USER_UNIT} (every user of "
                f"this machine may bind ports from {port} up once the sysctl is set)"
            )
    else:
        # restart, not start: a reinstall runs the new unit
        steps.append(Run(_systemctl_user("restart", USER_UNIT)))
    notes += [_journal(USER_UNIT, user=True), _linger_note(facts)]
    return _with_privilege(facts, steps, privileged, notes)


def _install_system(spec: Spec, where: Places, facts: Facts, port: int, mode: str) -> Plan:
    service, socket = units.system_units(facts.user)
    if facts.user_unit:
        raise AlreadyInstalled(
            f"the user unit {USER_UNIT} is installed: run `devrouter service uninstall` "
            f"first, then install again with --port {port}"
        )
    if facts.system_unit or facts.system_socket:
        raise AlreadyInstalled(
            f"the system unit {service} is installed already: run `devrouter service "
            "uninstall` first to install it again"
        )
    listen = units.loopback_listen(port) if mode == "capability" else ()
    spec = Spec(spec.program, spec.state_dir, spec.config, listen, facts.user, spec.home)
    steps: list[Step] = [
        Write(where.generated / service, units.system_service_unit(spec, mode).encode())
    ]
    started = [service]
    if mode == "socket":
        steps.append(Write(where.generated / socket, units.socket_unit(facts.user, port).encode()))
        started.insert(0, socket)
    sources = [str(s.path) for s in steps if isinstance(s, Write)]
    privileged = [
        ("install", "-m", "0644", *sources, f"{where.system_units}/"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable", "--now", *started),
    ]
    how = (
        f"systemd holds port {port} and hands it to the router, which runs as {facts.user} "
        "without any privilege"
        if mode == "socket"
        else f"the router runs as {facts.user} with the one capability CAP_NET_BIND_SERVICE"
    )
    notes = [how, _journal(service, user=False)]
    return _with_privilege(facts, steps, privileged, notes)


def _install_agent(spec: Spec, where: Places, facts: Facts, port: int | None) -> Plan:
    listen = units.loopback_listen(port) if port is not None else spec.listen
    spec = Spec(spec.program, spec.state_dir, spec.config, listen, spec.user, spec.home)
    domain = f"gui/{facts.uid}"
    steps: list[Step] = [
        MakeDir(where.mac_logs),
        Write(where.launch_agent, units.launch_agent(spec, str(where.mac_logs))),
    ]
    if facts.launch_agent:  # installed before: unload the old one first
        steps.append(Run(("launchctl", "bootout", f"{domain}/{LAUNCHD_LABEL}"), may_fail=True))
    steps += [
        Run(("launchctl", "enable", f"{domain}/{LAUNCHD_LABEL}")),
        Run(("launchctl", "bootstrap", domain, str(where.launch_agent))),
    ]
    notes = (
        f"logs: tail -f {where.mac_logs / units.LAUNCHD_ERR_LOG} (access log: "
        f"{units.LAUNCHD_OUT_LOG} next to it)",
        "the router starts at every login and again when it fails",
    )
    return Plan(tuple(steps), (), notes)


def plan_uninstall(platform: Platform, where: Places, facts: Facts) -> Plan:
    """The steps of `service uninstall`: whatever of devrouter's is installed goes."""
    steps: list[Step] = []
    notes: list[str] = []
    if platform == "macos":
        if facts.launch_agent:
            steps += [
                Run(("launchctl", "bootout", f"gui/{facts.uid}/{LAUNCHD_LABEL}"), may_fail=True),
                Remove(where.launch_agent),
            ]
            notes.append(f"the logs stay in {where.mac_logs}")
        return Plan(tuple(steps), (), tuple(notes))
    if facts.user_unit:
        steps += [
            Run(_systemctl_user("disable", "--now", USER_UNIT), may_fail=True),
            Remove(where.user_unit),
            Run(_systemctl_user("daemon-reload")),
            Run(_systemctl_user("reset-failed", USER_UNIT), may_fail=True),
        ]
    try:
        service, socket = units.system_units(facts.user)
    except units.UnitNameError:  # no system unit was ever written for such a name
        service = socket = ""
    generated = [where.generated / n for n in (service, socket, SYSCTL_FILE) if n]
    steps += [Remove(p) for p in generated]
    privileged: list[tuple[str, ...]] = []
    if facts.system_unit or facts.system_socket:
        present = [
            (name, path)
            for name, path, there in (
                (socket, where.system_socket(facts.user), facts.system_socket),
                (service, where.system_unit(facts.user), facts.system_unit),
            )
            if there
        ]
        privileged += [
            ("systemctl", "disable", "--now", *(name for name, _ in present)),
            ("rm", "-f", *(str(path) for _, path in present)),
            ("systemctl", "daemon-reload"),
        ]
    if facts.sysctl_file:
        privileged += [
            ("rm", "-f", str(where.sysctl_file)),
            ("sysctl", "-w", f"{SYSCTL_KEY}={units.PRIVILEGED_BELOW}"),
        ]
    return _with_privilege(facts, steps, privileged, notes)


def nothing_installed(platform: Platform, facts: Facts) -> bool:
    if platform == "macos":
        return not facts.launch_agent
    return not (facts.user_unit or facts.system_unit or facts.system_socket or facts.sysctl_file)


# --- running a plan -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Done:
    """A finished command: its exit status and output."""

    returncode: int
    stdout: str = ""
    stderr: str = ""


Runner = Callable[[Sequence[str]], Done]


def run_command(argv: Sequence[str], timeout_s: float = COMMAND_TIMEOUT_S) -> Done:
    """Run argv (no shell) with a timeout; a missing program is exit status 127."""
    try:
        p = subprocess.run(
            list(argv),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
    except FileNotFoundError:
        return Done(127, "", f"{argv[0]}: command not found")
    except subprocess.TimeoutExpired:
        raise ServiceError(
            f"`{shlex.join(argv)}` did not finish within {timeout_s:g} s; nothing after it was done"
        ) from None
    except OSError as exc:
        return Done(126, "", f"{argv[0]}: {exc.strerror}")
    return Done(p.returncode, p.stdout, p.stderr)


def first_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def _bus_hint(argv: Sequence[str], said: str) -> str:
    if "--user" in argv and ("bus" in said.lower() or "XDG_RUNTIME_DIR" in said):
        return (
            " (no systemd user manager is reachable from this shell: log in as this user "
            "rather than `su`, or set XDG_RUNTIME_DIR=/run/user/$(id -u); see docs/service.md)"
        )
    return ""


def write_file(path: Path, data: bytes, mode: int) -> None:
    """Write atomically: a temporary file in the same directory, then rename."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as f:
            f.write(data)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise ServiceError(f"cannot write {path}: {exc.strerror}") from None


def execute(plan: Plan, runner: Runner, say: Callable[[str], None]) -> None:
    """Take the plan's steps in order, saying each; the first failure stops with a
    ServiceError (steps marked may_fail only say so)."""
    for step in plan.steps:
        if isinstance(step, Write):
            write_file(step.path, step.data, step.mode)
            say(f"wrote {step.path}")
        elif isinstance(step, MakeDir):
            try:
                step.path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise ServiceError(f"cannot create {step.path}: {exc.strerror}") from None
        elif isinstance(step, Remove):
            try:
                step.path.unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise ServiceError(f"cannot remove {step.path}: {exc.strerror}") from None
            say(f"removed {step.path}")
        else:
            done = runner(step.argv)
            line = shlex.join(step.argv)
            said = first_line(done.stderr) or first_line(done.stdout)
            if done.returncode == 0:
                say(f"ran{' as root' if step.as_root else ''}: {line}")
            elif step.may_fail:
                say(f"ran: {line} (exit status {done.returncode}, not needed: {said})")
            else:
                why = said or f"exit status {done.returncode}"
                raise ServiceError(f"`{line}` failed: {why}{_bus_hint(step.argv, said)}")


def describe(plan: Plan) -> list[str]:
    """What the plan would do, for --dry-run: every file in full, every command."""
    out: list[str] = []
    for step in plan.steps:
        if isinstance(step, Write):
            out += [f"would write {step.path} (mode {step.mode:04o}):"]
            out += [f"    {line}" for line in step.data.decode().splitlines()]
        elif isinstance(step, Remove):
            out.append(f"would remove {step.path} (if it exists)")
        elif isinstance(step, MakeDir):
            out.append(f"would create the directory {step.path}")
        else:
            root = " as root" if step.as_root else ""
            out.append(f"would run{root}: {shlex.join(step.argv)}")
    return out
