"""The files of `devrouter service install`, as text: the systemd user unit, the system units
for port 80 (socket activation or the capability), the sysctl.d file, and the launchd
agent. Pure functions of a `Spec`; where the files go and what runs them is install.py's.

Theory of operation. Every variant runs the same command, `serve_argv(spec)`: devrouter by
an absolute path (the script next to the interpreter, or the interpreter with `-m
devrouter`, so a virtualenv works without its PATH), `serve`, and the config file and
state directory spelt out. They are spelt out because the service does not start in the
user's shell: the working directory (`./devrouter.yaml`), $DEVROUTER_CONFIG and
$DEVROUTER_HOME of the shell are not there, and `run`, `ls` and `url` must find the very
router the service runs through its control socket in the same state directory.

An ExecStart= line is not a shell line: systemd splits it into words at spaces, honours
double quotes with C escapes, and expands `%` specifiers and `$` variables everywhere,
quoted or not (systemd.service(5) "Command lines", systemd.unit(5) "Specifiers").
`exec_word` quotes for exactly those rules. A plist needs none of it: ProgramArguments
is an array of strings (launchd.plist(5)).

Port 80 on Linux (a port below net.ipv4.ip_unprivileged_port_start needs privilege), each
way a system unit or a file root installs:
  socket      devrouter-USER.socket holds 127.0.0.1:80 and [::1]:80; systemd opens them
              as root and hands them to devrouter-USER.service (User=USER) as fds 3...
              (LISTEN_FDS, sd_listen_fds(3)). The router itself has no privilege at all.
  capability  devrouter-USER.service runs as USER with CAP_NET_BIND_SERVICE as its one
              ambient capability (capabilities(7)), and binds port 80 itself.
  sysctl      /etc/sysctl.d/50-devrouter.conf lowers ip_unprivileged_port_start to the
              port, for every user of the machine; the user unit then binds it.
"""

from __future__ import annotations

import plistlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from ..core.errors import CommandError

#: The systemd user unit's name (`systemctl --user status devrouter`).
USER_UNIT = "devrouter.service"
#: The launchd agent's label and the name of its plist in ~/Library/LaunchAgents.
LAUNCHD_LABEL = "dev.devrouter"
LAUNCHD_PLIST = f"{LAUNCHD_LABEL}.plist"
#: The launchd agent's output files, in ~/Library/Logs/devrouter/: stdout (the access log)
#: and stderr (start-up, warnings, errors).
LAUNCHD_OUT_LOG = "devrouter.log"
LAUNCHD_ERR_LOG = "devrouter.error.log"
#: The sysctl that sets the lowest port any user may bind, and the file that keeps it.
SYSCTL_KEY = "net.ipv4.ip_unprivileged_port_start"
SYSCTL_FILE = "50-devrouter.conf"
#: Ports below this need privilege on Linux unless the sysctl says otherwise (its default).
PRIVILEGED_BELOW = 1024
#: After a failure, systemd waits this long before starting the router again, in seconds;
#: more than START_LIMIT_BURST failures within START_LIMIT_INTERVAL_S and it gives up (the
#: unit is `failed`, `service status` says so) rather than spin on a port held by another.
RESTART_S = 2
START_LIMIT_INTERVAL_S = 60
START_LIMIT_BURST = 5

PRIVILEGED_MODES = ("socket", "capability", "sysctl")

#: The first line of every file written, so a reader knows what wrote it and how it goes.
HEADER = "Written by `devrouter service install`; `devrouter service uninstall` removes it."

# A user name that can be part of a unit name and a file name without escaping
# (systemd.unit(5): unit names are [A-Za-z0-9:_.\-], `@` starts a template instance).
_USER_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}")
_PLAIN_WORD = re.compile(r"[A-Za-z0-9_./:@+=,\[\]-]+")


@dataclass(frozen=True, slots=True)
class Spec:
    """What the service runs, and for whom."""

    program: tuple[str, ...]  # devrouter, by absolute path: (script,) or (python, -m, devrouter)
    state_dir: str  # absolute: the directory of the control socket `run` and `ls` use
    config: str | None = None  # absolute; None: the router looks in its default places
    listen: tuple[str, ...] = ()  # --listen values; () the config's or the default
    user: str = ""  # the account a system unit runs as
    home: str = ""  # its home directory


def loopback_listen(port: int) -> tuple[str, ...]:
    """The --listen values for `port` on both loopback addresses."""
    return (f"127.0.0.1:{port}", f"[::1]:{port}")


def serve_argv(spec: Spec) -> tuple[str, ...]:
    """The command every variant runs."""
    argv = [*spec.program, "serve", "--state-dir", spec.state_dir]
    if spec.config:
        argv += ["--config", spec.config]
    for value in spec.listen:
        argv += ["--listen", value]
    return tuple(argv)


class UnitNameError(CommandError, ValueError):
    """A user name that cannot be part of a system unit's name (`ann@corp.example`, common
    with SSSD and Active Directory): only a system unit needs one, so only planning one
    fails; the user unit and the launchd agent do not."""


def check_user(name: str) -> str:
    """`name`, when a system unit can be named after it; UnitNameError otherwise."""
    if not _USER_NAME.fullmatch(name):
        raise UnitNameError(
            f"the user name {name!r} cannot be part of a unit name (letters, digits, '_', "
            "'.' and '-', at most 32)"
        )
    return name


def system_units(user: str) -> tuple[str, str]:
    """The names of the system service and socket of `user`'s router."""
    base = f"devrouter-{check_user(user)}"
    return f"{base}.service", f"{base}.socket"


# --- systemd ------------------------------------------------------------------------------


def _escape(text: str) -> str:
    """`%` and `$` escaped, as every unit setting that expands them needs."""
    return text.replace("%", "%%").replace("$", "$$")


def exec_word(word: str, first: bool = False) -> str:
    """One word of an ExecStart= line, quoted when systemd would otherwise split it or
    read it differently (a space, a quote, a backslash; on the `first` word, a prefix
    such as `-` or `@`)."""
    escaped = _escape(word)
    if _PLAIN_WORD.fullmatch(word) and not (first and word[0] in "-@:+!"):
        return escaped
    inner = escaped.replace("\\", "\\\\").replace('"', '\\"')
    inner = inner.replace("\n", "\\n").replace("\t", "\\t")
    return f'"{inner}"'


def exec_line(argv: Sequence[str]) -> str:
    return " ".join(exec_word(w, first=i == 0) for i, w in enumerate(argv))


def environment(name: str, value: str) -> str:
    """An Environment= value: one quoted assignment (spaces and quotes kept)."""
    inner = _escape(f"{name}={value}").replace("\\", "\\\\").replace('"', '\\"')
    return f'"{inner}"'


Section = tuple[str, Sequence[tuple[str, str]]]


def render_unit(sections: Sequence[Section]) -> str:
    """An INI unit file: a header comment, then `[Section]` and `Key=value` lines."""
    out = [f"# {HEADER}"]
    for name, entries in sections:
        out += ["", f"[{name}]"]
        out += [f"{key}={value}" for key, value in entries]
    return "\n".join(out) + "\n"


def _restart() -> list[tuple[str, str]]:
    return [("Restart", "on-failure"), ("RestartSec", f"{RESTART_S}s")]


def _limits() -> list[tuple[str, str]]:
    return [
        ("StartLimitIntervalSec", f"{START_LIMIT_INTERVAL_S}s"),
        ("StartLimitBurst", str(START_LIMIT_BURST)),
    ]


def user_unit(spec: Spec) -> str:
    """~/.config/systemd/user/devrouter.service: the router at login, restarted on failure,
    logging to the journal (`journalctl --user -u devrouter`)."""
    return render_unit(
        [
            (
                "Unit",
                [
                    ("Description", "devrouter: http://NAME.localhost for local dev services"),
                    *_limits(),
                ],
            ),
            (
                "Service",
                [
                    # exec: `start` fails at once when the program cannot be executed
                    ("Type", "exec"),
                    ("ExecStart", exec_line(serve_argv(spec))),
                    ("WorkingDirectory", "~"),
                    # the access log is written to stdout: unbuffered, each line reaches
                    # the journal when the request ends
                    ("Environment", environment("PYTHONUNBUFFERED", "1")),
                    *_restart(),
                    ("SyslogIdentifier", "devrouter"),
                ],
            ),
            ("Install", [("WantedBy", "default.target")]),
        ]
    )


def system_service_unit(spec: Spec, mode: str) -> str:
    """/etc/systemd/system/devrouter-USER.service for `mode` "socket" (its sockets come
    from devrouter-USER.socket) or "capability" (it binds spec.listen itself with
    CAP_NET_BIND_SERVICE). It runs as spec.user, never as root."""
    if mode not in ("socket", "capability"):
        raise ValueError(f"no system service for mode {mode!r}")
    socket = system_units(spec.user)[1]
    unit: list[tuple[str, str]] = [
        ("Description", f"devrouter of {spec.user}: http://NAME.localhost for local dev services"),
        *_limits(),
    ]
    if mode == "socket":
        unit += [("Requires", socket), ("After", socket)]
    else:
        unit += [("After", "network.target")]
    body: list[tuple[str, str]] = [
        ("Type", "exec"),
        ("User", spec.user),
        ("ExecStart", exec_line(serve_argv(spec))),
        ("WorkingDirectory", "~"),
        ("Environment", environment("HOME", spec.home)),
        ("Environment", environment("PYTHONUNBUFFERED", "1")),
    ]
    if mode == "capability":
        body += [
            ("AmbientCapabilities", "CAP_NET_BIND_SERVICE"),
            # the one capability it may ever hold, and no way to gain others
            ("CapabilityBoundingSet", "CAP_NET_BIND_SERVICE"),
        ]
    else:
        body += [("CapabilityBoundingSet", "")]  # none at all: systemd bound the port
    body += [("NoNewPrivileges", "yes"), *_restart(), ("SyslogIdentifier", "devrouter")]
    return render_unit(
        [("Unit", unit), ("Service", body), ("Install", [("WantedBy", "multi-user.target")])]
    )


def socket_unit(user: str, port: int) -> str:
    """/etc/systemd/system/devrouter-USER.socket: `port` on 127.0.0.1 and ::1, opened by
    systemd and passed to devrouter-USER.service."""
    service, _ = system_units(user)
    return render_unit(
        [
            ("Unit", [("Description", f"devrouter of {user}: port {port} on the loopback")]),
            (
                "Socket",
                [
                    ("ListenStream", f"127.0.0.1:{port}"),
                    ("ListenStream", f"[::1]:{port}"),
                    # [::1] must not take IPv4 too; the two are separate sockets
                    ("BindIPv6Only", "ipv6-only"),
                    # bind even when ::1 is not configured yet (early boot, IPv6 off)
                    ("FreeBind", "yes"),
                    ("Service", service),
                ],
            ),
            ("Install", [("WantedBy", "sockets.target")]),
        ]
    )


def sysctl_conf(port: int) -> str:
    """/etc/sysctl.d/50-devrouter.conf: every user may bind ports from `port` up."""
    return (
        f"# {HEADER}\n"
        f"# Lets every user of this machine bind ports from {port} up (devrouter on port "
        f"{port}).\n"
        f"{SYSCTL_KEY} = {port}\n"
    )


# --- launchd ------------------------------------------------------------------------------


def launch_agent(spec: Spec, log_dir: str) -> bytes:
    """~/Library/LaunchAgents/dev.devrouter.plist: the router at login (RunAtLoad), started
    again when it exits with a failure (KeepAlive SuccessfulExit false), its output in
    `log_dir`."""
    log = PurePosixPath(log_dir)
    agent: dict[str, object] = {
        "Label": LAUNCHD_LABEL,
        "ProgramArguments": list(serve_argv(spec)),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "WorkingDirectory": spec.home,
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": str(log / LAUNCHD_OUT_LOG),
        "StandardErrorPath": str(log / LAUNCHD_ERR_LOG),
    }
    return plistlib.dumps(agent, fmt=plistlib.FMT_XML, sort_keys=True)
