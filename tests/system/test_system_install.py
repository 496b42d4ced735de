"""install, uninstall and status with a fake HOME and XDG_CONFIG_HOME, real files, and a
command runner that records each argv and answers as systemctl or launchctl would (there
is no systemd PID 1 here, and no launchd): the plans by tables, the files written, the
exact commands, the one privileged step, and what status reads."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import stat
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import pytest
from conftest import CliProcess, free_port

from devrouter.core.errors import CommandError, ConfigError, UsageError
from devrouter.system import install, status, units
from devrouter.system.command import Machine, do_install, do_status, do_uninstall, program
from devrouter.system.install import AlreadyInstalled, Done, Facts, Places, ServiceError

USER_SHOW = (
    "LoadState=loaded\nActiveState=active\nSubState=running\nUnitFileState=enabled\nMainPID=4242\n"
)


class Recorder:
    """A Runner: records argv, answers from `answers` (the first argv prefix that matches)."""

    def __init__(self, answers: Mapping[tuple[str, ...], Done] | None = None) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.answers = dict(answers or {})

    def __call__(self, argv: Sequence[str]) -> Done:
        self.calls.append(tuple(argv))
        for prefix, done in self.answers.items():
            if tuple(argv[: len(prefix)]) == prefix:
                return done
        return Done(0)


@dataclasses.dataclass
class Home:
    root: Path
    env: dict[str, str]
    lines: list[str]
    runner: Recorder

    def machine(self, platform: install.Platform = "linux", **facts: object) -> Machine:
        def gather(user: str, where: Places) -> Facts:
            # this test may run as root; the facts say what the case needs
            return dataclasses.replace(install.gather(user, where), **{"root": False, **facts})  # type: ignore[arg-type]

        return Machine(
            platform,
            env=self.env,
            cwd=self.root / "project",
            runner=self.runner,
            gather=gather,
            systemd=True,
            say=self.lines.append,
        )

    @property
    def where(self) -> Places:
        return install.places(self.env, Path(self.env["DEVROUTER_HOME"]))


@pytest.fixture
def home(tmp_path: Path) -> Home:
    (tmp_path / "project").mkdir()
    env = {
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "xdg"),
        "DEVROUTER_HOME": str(tmp_path / "state"),
        # status looks for a router: on a port nothing listens on, not on the default one
        "DEVROUTER_LISTEN": f"127.0.0.1:{free_port()}",
    }
    return Home(tmp_path, env, [], Recorder())


# --- places -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "unit"),
    [
        ({"HOME": "/h"}, "/h/.config/systemd/user/devrouter.service"),
        ({"HOME": "/h", "XDG_CONFIG_HOME": "/x"}, "/x/systemd/user/devrouter.service"),
        ({"HOME": "/h", "XDG_CONFIG_HOME": "rel"}, "/h/.config/systemd/user/devrouter.service"),
    ],
)
def test_where_the_user_unit_goes(env: dict[str, str], unit: str) -> None:
    where = install.places(env, Path("/s"))
    assert str(where.user_unit) == unit
    assert str(where.launch_agent) == "/h/Library/LaunchAgents/dev.devrouter.plist"
    assert str(where.mac_logs) == "/h/Library/Logs/devrouter"
    assert str(where.generated) == "/s/service"


# --- plans, by tables ---------------------------------------------------------------------

SPEC = units.Spec(("/v/bin/devrouter",), "/s", "/c.yaml", user="ann", home="/h")
WHERE = install.places({"HOME": "/h"}, Path("/s"))
ANN = Facts(user="ann", uid=1000)


def runs(plan: install.Plan) -> list[tuple[str, ...]]:
    return [s.argv for s in plan.steps if isinstance(s, install.Run)]


def writes(plan: install.Plan) -> list[Path]:
    return [s.path for s in plan.steps if isinstance(s, install.Write)]


@pytest.mark.parametrize(
    ("facts", "port", "mode", "written", "commands", "sudo"),
    [
        (
            ANN,
            None,
            "socket",
            ["/h/.config/systemd/user/devrouter.service"],
            [
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "devrouter.service"),
                ("systemctl", "--user", "restart", "devrouter.service"),
            ],
            "",
        ),
        (
            ANN,
            80,
            "socket",
            ["/s/service/devrouter-ann.service", "/s/service/devrouter-ann.socket"],
            [],
            "sudo install -m 0644 /s/service/devrouter-ann.service "
            "/s/service/devrouter-ann.socket /etc/systemd/system/ && "
            "sudo systemctl daemon-reload && "
            "sudo systemctl enable --now devrouter-ann.socket devrouter-ann.service",
        ),
        (
            ANN,
            80,
            "capability",
            ["/s/service/devrouter-ann.service"],
            [],
            "sudo install -m 0644 /s/service/devrouter-ann.service /etc/systemd/system/ && "
            "sudo systemctl daemon-reload && sudo systemctl enable --now devrouter-ann.service",
        ),
        (
            ANN,
            80,
            "sysctl",
            ["/s/service/50-devrouter.conf", "/h/.config/systemd/user/devrouter.service"],
            [
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "devrouter.service"),
            ],
            "sudo install -m 0644 /s/service/50-devrouter.conf /etc/sysctl.d/50-devrouter.conf"
            " && sudo sysctl -w net.ipv4.ip_unprivileged_port_start=80",
        ),
        (  # the sysctl is low enough already: port 80 needs no privilege, any mode
            dataclasses.replace(ANN, unprivileged_port_start=80),
            80,
            "socket",
            ["/h/.config/systemd/user/devrouter.service"],
            [
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "devrouter.service"),
                ("systemctl", "--user", "restart", "devrouter.service"),
            ],
            "",
        ),
        (  # a port of 1024 and up never does
            ANN,
            8080,
            "capability",
            ["/h/.config/systemd/user/devrouter.service"],
            [
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "enable", "devrouter.service"),
                ("systemctl", "--user", "restart", "devrouter.service"),
            ],
            "",
        ),
    ],
)
def test_install_plans_on_linux(
    facts: Facts,
    port: int | None,
    mode: str,
    written: list[str],
    commands: list[tuple[str, ...]],
    sudo: str,
) -> None:
    plan = install.plan_install("linux", SPEC, WHERE, facts, port, mode)
    assert writes(plan) == [Path(p) for p in written]
    assert runs(plan) == commands
    assert plan.sudo_line() == sudo
    assert not any(argv[0] == "sudo" for argv in runs(plan))


def test_the_listen_addresses_follow_the_port_and_mode() -> None:
    def exec_argv(plan: install.Plan, name: str) -> str:
        step = next(s for s in plan.steps if isinstance(s, install.Write) and s.path.name == name)
        return step.data.decode().split("ExecStart=", 1)[1].split("\n", 1)[0]

    user = install.plan_install("linux", SPEC, WHERE, ANN, 8080)
    assert exec_argv(user, "devrouter.service").endswith(
        "--listen 127.0.0.1:8080 --listen [::1]:8080"
    )
    assert "--listen" not in exec_argv(
        install.plan_install("linux", SPEC, WHERE, ANN), "devrouter.service"
    )
    socket = install.plan_install("linux", SPEC, WHERE, ANN, 80, "socket")
    assert "--listen" not in exec_argv(socket, "devrouter-ann.service")  # systemd's sockets
    cap = install.plan_install("linux", SPEC, WHERE, ANN, 80, "capability")
    assert exec_argv(cap, "devrouter-ann.service").endswith("--listen [::1]:80")
    sysctl = install.plan_install("linux", SPEC, WHERE, ANN, 80, "sysctl")
    assert exec_argv(sysctl, "devrouter.service").endswith("--listen [::1]:80")


def test_as_root_the_privileged_step_is_a_step_and_nothing_is_left_to_print() -> None:
    root = dataclasses.replace(ANN, root=True)
    plan = install.plan_install("linux", SPEC, WHERE, root, 80, "socket")
    assert plan.privileged == ()
    assert [s.argv[:2] for s in plan.steps if isinstance(s, install.Run) and s.as_root] == [
        ("install", "-m"),
        ("systemctl", "daemon-reload"),
        ("systemctl", "enable"),
    ]
    assert "running as root" in plan.notes[0]
    plain = install.plan_install("linux", SPEC, WHERE, root)
    assert not any("running as root" in n for n in plain.notes)  # no privileged step at all


@pytest.mark.parametrize(
    ("facts", "port", "message"),
    [
        (dataclasses.replace(ANN, user_unit=True), 80, "the user unit devrouter.service"),
        (dataclasses.replace(ANN, system_unit=True), 80, "devrouter-ann.service is installed"),
        (dataclasses.replace(ANN, system_socket=True), None, "system unit devrouter-ann"),
        (dataclasses.replace(ANN, system_unit=True), 8080, "system unit devrouter-ann"),
    ],
)
def test_two_kinds_of_service_are_never_installed_at_once(
    facts: Facts, port: int | None, message: str
) -> None:
    with pytest.raises(AlreadyInstalled, match=message) as caught:
        install.plan_install("linux", SPEC, WHERE, facts, port, "socket")
    assert "devrouter service uninstall" in str(caught.value)
    assert caught.value.exit_code == 1


def test_reinstalling_the_user_unit_replaces_and_restarts_it() -> None:
    plan = install.plan_install("linux", SPEC, WHERE, dataclasses.replace(ANN, user_unit=True))
    assert runs(plan)[-1] == ("systemctl", "--user", "restart", "devrouter.service")


@pytest.mark.parametrize("loaded", [False, True])
def test_install_plan_on_macos(loaded: bool) -> None:
    facts = dataclasses.replace(ANN, uid=501, launch_agent=loaded)
    plan = install.plan_install("macos", SPEC, WHERE, facts, 80)
    assert plan.steps[0] == install.MakeDir(Path("/h/Library/Logs/devrouter"))
    assert writes(plan) == [Path("/h/Library/LaunchAgents/dev.devrouter.plist")]
    bootout = [("launchctl", "bootout", "gui/501/dev.devrouter")] if loaded else []
    assert runs(plan) == [
        *bootout,
        ("launchctl", "enable", "gui/501/dev.devrouter"),
        ("launchctl", "bootstrap", "gui/501", "/h/Library/LaunchAgents/dev.devrouter.plist"),
    ]
    assert plan.privileged == ()  # macOS lets any user bind port 80
    agent = plistlib.loads(next(s for s in plan.steps if isinstance(s, install.Write)).data)
    assert agent["ProgramArguments"][-4:] == ["--listen", "127.0.0.1:80", "--listen", "[::1]:80"]


@pytest.mark.parametrize(
    ("facts", "commands", "sudo"),
    [
        (ANN, [], ""),
        (
            dataclasses.replace(ANN, user_unit=True),
            [
                ("systemctl", "--user", "disable", "--now", "devrouter.service"),
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "reset-failed", "devrouter.service"),
            ],
            "",
        ),
        (
            dataclasses.replace(ANN, system_unit=True, system_socket=True),
            [],
            "sudo systemctl disable --now devrouter-ann.socket devrouter-ann.service && "
            "sudo rm -f /etc/systemd/system/devrouter-ann.socket "
            "/etc/systemd/system/devrouter-ann.service && sudo systemctl daemon-reload",
        ),
        (
            dataclasses.replace(ANN, user_unit=True, sysctl_file=True),
            [
                ("systemctl", "--user", "disable", "--now", "devrouter.service"),
                ("systemctl", "--user", "daemon-reload"),
                ("systemctl", "--user", "reset-failed", "devrouter.service"),
            ],
            "sudo rm -f /etc/sysctl.d/50-devrouter.conf && "
            "sudo sysctl -w net.ipv4.ip_unprivileged_port_start=1024",
        ),
    ],
)
def test_uninstall_plans_on_linux(facts: Facts, commands: list[tuple[str, ...]], sudo: str) -> None:
    plan = install.plan_uninstall("linux", WHERE, facts)
    assert runs(plan) == commands
    assert plan.sudo_line() == sudo
    removed = [s.path for s in plan.steps if isinstance(s, install.Remove)]
    assert (WHERE.user_unit in removed) == facts.user_unit
    assert WHERE.generated / "devrouter-ann.service" in removed  # the copies under state


def test_uninstall_plan_on_macos() -> None:
    facts = dataclasses.replace(ANN, uid=501, launch_agent=True)
    plan = install.plan_uninstall("macos", WHERE, facts)
    assert plan.steps == (
        install.Run(("launchctl", "bootout", "gui/501/dev.devrouter"), may_fail=True),
        install.Remove(WHERE.launch_agent),
    )
    assert (
        install.plan_uninstall("macos", WHERE, dataclasses.replace(facts, launch_agent=False)).steps
        == ()
    )


# --- running plans: files and commands ------------------------------------------------------


def test_install_writes_the_user_unit_and_runs_systemctl(home: Home) -> None:
    config = home.root / "project" / "devrouter.yaml"
    config.write_text("routes:\n  api: 3001\n")
    assert do_install(home.machine()) == 0
    unit = Path(home.env["XDG_CONFIG_HOME"]) / "systemd" / "user" / "devrouter.service"
    text = unit.read_text()
    assert stat.S_IMODE(unit.stat().st_mode) == 0o644
    exec_start = text.split("ExecStart=", 1)[1].split("\n", 1)[0]
    assert exec_start == " ".join(
        [*program(), "serve", "--state-dir", home.env["DEVROUTER_HOME"], "--config", str(config)]
    )
    assert home.runner.calls == [
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "devrouter.service"),
        ("systemctl", "--user", "restart", "devrouter.service"),
    ]
    assert f"wrote {unit}" in home.lines
    assert "ran: systemctl --user restart devrouter.service" in home.lines
    assert "logs: journalctl --user -u devrouter -f" in home.lines
    assert any("loginctl enable-linger" in line for line in home.lines)
    assert not list(unit.parent.glob(".*.tmp"))


def test_the_config_of_xdg_config_home_is_named_and_none_is_named_when_there_is_none(
    home: Home,
) -> None:
    do_install(home.machine())
    unit = home.where.user_unit
    assert "--config" not in unit.read_text()
    config = Path(home.env["XDG_CONFIG_HOME"]) / "devrouter" / "config.yaml"
    config.parent.mkdir(parents=True)
    config.write_text("routes: {}\n")
    do_install(home.machine(user_unit=True))
    assert f"--config {config}\n" in unit.read_text()


def test_an_invalid_config_is_refused_before_anything_is_written(home: Home) -> None:
    (home.root / "project" / "devrouter.yaml").write_text("routes: [\n")
    with pytest.raises(ConfigError):
        do_install(home.machine())
    assert not home.where.user_unit.exists()
    assert home.runner.calls == []


def test_a_named_config_that_does_not_exist_is_refused(home: Home) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        do_install(home.machine(), config=str(home.root / "nope.yaml"))


def test_a_failing_systemctl_stops_with_one_line_that_says_why(home: Home) -> None:
    home.runner.answers[("systemctl", "--user", "daemon-reload")] = Done(
        1, "", "Failed to connect to bus: No medium found\n"
    )
    with pytest.raises(ServiceError) as caught:
        do_install(home.machine())
    message = str(caught.value)
    assert message.startswith("`systemctl --user daemon-reload` failed: Failed to connect to bus")
    assert "XDG_RUNTIME_DIR" in message
    assert "\n" not in message
    assert home.runner.calls == [("systemctl", "--user", "daemon-reload")]  # nothing after


def test_without_systemd_install_refuses_before_writing(home: Home) -> None:
    machine = dataclasses.replace(home.machine(), systemd=False)
    with pytest.raises(CommandError, match="systemd is not running on this machine"):
        do_install(machine)
    assert not home.where.user_unit.exists()


def test_port_80_with_socket_activation_writes_the_units_under_state_and_prints_one_sudo_line(
    home: Home,
) -> None:
    assert do_install(home.machine(), port=80, mode="socket") == 0
    user = home.machine().user
    generated = Path(home.env["DEVROUTER_HOME"]) / "service"
    service = generated / f"devrouter-{user}.service"
    socket = generated / f"devrouter-{user}.socket"
    assert "ListenStream=127.0.0.1:80" in socket.read_text()
    assert f"User={user}" in service.read_text()
    assert stat.S_IMODE(generated.parent.stat().st_mode) == 0o700  # the state directory
    assert home.runner.calls == []  # nothing of this user's to run; root's is printed
    assert not home.where.user_unit.exists()
    out = "\n".join(home.lines)
    assert f"--- {socket}\n" in out  # the files are shown before the line that installs them
    sudo = [line for line in home.lines if line.startswith("  sudo ")]
    assert sudo == [
        f"  sudo install -m 0644 {service} {socket} /etc/systemd/system/ && sudo systemctl "
        f"daemon-reload && sudo systemctl enable --now devrouter-{user}.socket "
        f"devrouter-{user}.service"
    ]


def test_as_root_port_80_runs_the_privileged_step_and_says_so(home: Home) -> None:
    assert do_install(home.machine(root=True), port=80, mode="capability") == 0
    assert [c[0] for c in home.runner.calls] == ["install", "systemctl", "systemctl"]
    assert any(line.startswith("ran as root: install -m 0644") for line in home.lines)
    assert not any(line.startswith("  sudo") for line in home.lines)


def test_install_under_sudo_is_refused_it_would_be_roots_service(home: Home) -> None:
    home.env["SUDO_USER"] = "ann"
    with pytest.raises(UsageError, match="as ann, without sudo"):
        do_install(home.machine(root=True), port=80)
    assert home.runner.calls == []
    assert not Path(home.env["DEVROUTER_HOME"]).exists()


def test_dry_run_writes_and_runs_nothing(home: Home) -> None:
    assert do_install(home.machine(), port=80, mode="sysctl", dry_run=True) == 0
    assert home.runner.calls == []
    assert not home.where.user_unit.exists()
    assert not Path(home.env["DEVROUTER_HOME"]).exists()
    out = "\n".join(home.lines)
    assert "would write" in out
    assert "    net.ipv4.ip_unprivileged_port_start = 80" in out
    assert "would run: systemctl --user enable devrouter.service" in out
    assert "sudo sysctl -w net.ipv4.ip_unprivileged_port_start=80" in out


def test_macos_install_writes_the_plist_and_makes_the_log_directory(home: Home) -> None:
    assert do_install(home.machine("macos")) == 0
    agent = home.where.launch_agent
    data = plistlib.loads(agent.read_bytes())
    assert data["StandardErrorPath"] == str(home.where.mac_logs / "devrouter.error.log")
    assert home.where.mac_logs.is_dir()
    uid = os.getuid()
    assert home.runner.calls == [
        ("launchctl", "enable", f"gui/{uid}/dev.devrouter"),
        ("launchctl", "bootstrap", f"gui/{uid}", str(agent)),
    ]


def test_uninstall_stops_disables_and_removes(home: Home) -> None:
    do_install(home.machine())
    home.runner.calls.clear()
    home.runner.answers[("systemctl", "--user", "reset-failed")] = Done(1, "", "not failed\n")
    assert do_uninstall(home.machine(user_unit=True)) == 0
    assert not home.where.user_unit.exists()
    assert home.runner.calls == [
        ("systemctl", "--user", "disable", "--now", "devrouter.service"),
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "reset-failed", "devrouter.service"),
    ]
    assert any("(exit status 1, not needed: not failed)" in line for line in home.lines)


def test_uninstall_with_nothing_installed_says_so(home: Home) -> None:
    assert do_uninstall(home.machine()) == 0
    assert home.lines == ["no devrouter service is installed; nothing to do"]
    assert home.runner.calls == []


def test_uninstall_of_the_port_80_units_prints_the_sudo_line(home: Home) -> None:
    do_install(home.machine(), port=80, mode="socket")
    generated = Path(home.env["DEVROUTER_HOME"]) / "service"
    assert list(generated.iterdir())
    home.lines.clear()
    assert do_uninstall(home.machine(system_unit=True, system_socket=True)) == 0
    assert not list(generated.iterdir())
    assert any(line.startswith("  sudo systemctl disable --now devrouter-") for line in home.lines)


# --- status -------------------------------------------------------------------------------


def test_status_with_nothing_installed(home: Home) -> None:
    assert do_status(home.machine()) == 1
    assert home.lines[0] == "service: not installed (`devrouter service install` sets it up)"
    assert home.lines[1].startswith("router: nothing answers at 127.0.0.1:")
    assert home.runner.calls == []


@pytest.mark.parametrize(
    ("show", "code", "said"),
    [
        (USER_SHOW, 0, "active (running), enabled, pid 4242"),
        (
            "ActiveState=failed\nSubState=failed\nUnitFileState=enabled\nMainPID=0\n",
            1,
            "failed, enabled",
        ),
        (
            "ActiveState=activating\nSubState=auto-restart\nUnitFileState=enabled\nMainPID=0\n",
            1,
            "activating (auto-restart), enabled",
        ),
    ],
)
def test_status_reads_systemctl_show(home: Home, show: str, code: int, said: str) -> None:
    home.runner.answers[("systemctl", "--user", "show")] = Done(0, show)
    assert do_status(home.machine(user_unit=True)) == code
    assert home.runner.calls == [
        (
            "systemctl",
            "--user",
            "show",
            "devrouter.service",
            "--property=LoadState,ActiveState,SubState,UnitFileState,MainPID",
        )
    ]
    assert home.lines[0] == (
        f"service: devrouter.service (systemd user unit, {home.where.user_unit}): {said}"
    )


def test_status_of_the_system_units_and_an_unreachable_manager(home: Home) -> None:
    home.runner.answers[("systemctl", "show")] = Done(0, USER_SHOW)
    assert do_status(home.machine(system_unit=True, system_socket=True)) == 0
    assert [c[:3] for c in home.runner.calls] == [
        ("systemctl", "show", f"devrouter-{home.machine().user}.socket"),
        ("systemctl", "show", f"devrouter-{home.machine().user}.service"),
    ]
    home.lines.clear()
    home.runner.answers[("systemctl", "--user", "show")] = Done(1, "", "Failed to connect to bus\n")
    assert do_status(home.machine(user_unit=True)) == 1
    assert home.lines[0].endswith("state unknown: Failed to connect to bus")


LAUNCHCTL_PRINT = """gui/501/dev.devrouter = {
\tactive count = 1
\tpath = /Users/ann/Library/LaunchAgents/dev.devrouter.plist
\tstate = running

\tprogram = /opt/venv/bin/devrouter
\tpid = 812
\tendpoints = {
\t\tstate = active
\t}
}
"""


def test_status_on_macos_reads_launchctl_print(home: Home) -> None:
    home.runner.answers[("launchctl", "print")] = Done(0, LAUNCHCTL_PRINT)
    assert do_status(home.machine("macos", launch_agent=True)) == 0
    assert home.lines[0].endswith("): running, pid 812")
    assert status.parse_launchctl_print(LAUNCHCTL_PRINT) == ("running", 812)
    home.lines.clear()
    home.runner.answers[("launchctl", "print")] = Done(113, "", "Could not find service\n")
    assert do_status(home.machine("macos", launch_agent=True)) == 1
    assert home.lines[0].endswith("): not loaded")


def test_status_names_a_router_that_answers(home: Home, cli: Callable[..., CliProcess]) -> None:
    port = cli("serve").port
    home.env["DEVROUTER_LISTEN"] = f"127.0.0.1:{port}"
    do_status(home.machine())
    assert home.lines[1].startswith(f"router: http://NAME.localhost:{port} answers at ")
