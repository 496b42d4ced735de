"""The service files as text, by tables: ExecStart quoting, the user unit, the system units
for port 80, the sysctl file, the launchd plist as data; and every generated unit through
`systemd-analyze verify`, pointed at this devrouter, which exists."""

from __future__ import annotations

import dataclasses
import os
import plistlib
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from devrouter.system import units
from devrouter.system.command import program
from devrouter.system.units import Spec

#: Upper bound for one systemd-analyze run, in seconds.
VERIFY_TIMEOUT_S = 60.0

SPEC = Spec(
    program=("/opt/venv/bin/devrouter",),
    state_dir="/home/ann/.local/state/devrouter",
    config="/home/ann/.config/devrouter/config.yaml",
    user="ann",
    home="/home/ann",
)


def sections(text: str) -> dict[str, list[tuple[str, str]]]:
    """A unit file as {section: [(key, value), ...]} in file order (comments dropped)."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = ""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = line.strip("[]")
            out[current] = []
            continue
        key, _, value = line.partition("=")
        out[current].append((key, value))
    return out


def values(text: str, section: str, key: str) -> list[str]:
    return [v for k, v in sections(text)[section] if k == key]


def systemd_split(line: str) -> list[str]:
    """ExecStart= words as systemd reads them: `%%` and `$$` back to one character (no
    other specifier or variable is in our lines), then double-quote splitting with C
    escapes, which shlex in POSIX mode matches for the escapes exec_word writes."""
    return shlex.split(line.replace("%%", "%").replace("$$", "$"))


# --- ExecStart ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("word", "written"),
    [
        ("/usr/bin/devrouter", "/usr/bin/devrouter"),
        ("--listen", "--listen"),
        ("[::1]:80", "[::1]:80"),
        ("127.0.0.1:80", "127.0.0.1:80"),
        ("/home/a b/c.yaml", '"/home/a b/c.yaml"'),
        ("100%", '"100%%"'),
        ("$HOME", '"$$HOME"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        (";", '";"'),
        ("", '""'),
    ],
)
def test_exec_words_are_quoted_and_escaped_for_systemd(word: str, written: str) -> None:
    assert units.exec_word(word) == written
    assert systemd_split(written) == [word]


def test_a_first_word_with_a_prefix_character_is_quoted_only_there() -> None:
    assert units.exec_word("-x", first=True) == '"-x"'
    assert units.exec_word("-x") == "-x"


@pytest.mark.parametrize(
    ("spec", "argv"),
    [
        (
            Spec(("/v/bin/devrouter",), "/s"),
            ["/v/bin/devrouter", "serve", "--state-dir", "/s"],
        ),
        (
            Spec(("/v/bin/python", "-m", "devrouter"), "/s", "/c.yaml", ("127.0.0.1:80",)),
            ["/v/bin/python", "-m", "devrouter", "serve", "--state-dir", "/s"]  # noqa: RUF005
            + ["--config", "/c.yaml", "--listen", "127.0.0.1:80"],
        ),
    ],
)
def test_serve_argv(spec: Spec, argv: list[str]) -> None:
    assert list(units.serve_argv(spec)) == argv


def test_an_odd_path_survives_the_exec_line() -> None:
    spec = dataclasses.replace(SPEC, config='/home/ann/my $dir/50% "x".yaml')
    line = values(units.user_unit(spec), "Service", "ExecStart")[0]
    assert systemd_split(line) == list(units.serve_argv(spec))


# --- the units ----------------------------------------------------------------------------


def test_the_user_unit() -> None:
    text = units.user_unit(SPEC)
    assert text.startswith(f"# {units.HEADER}\n")
    got = sections(text)
    assert list(got) == ["Unit", "Service", "Install"]
    service = dict(got["Service"])
    assert systemd_split(service["ExecStart"]) == list(units.serve_argv(SPEC))
    assert service["Restart"] == "on-failure"
    assert service["Type"] == "exec"
    assert service["SyslogIdentifier"] == "devrouter"
    assert "User" not in service  # a user unit runs as its user
    assert dict(got["Install"]) == {"WantedBy": "default.target"}
    assert "StandardOutput" not in service  # the journal, systemd's default


def test_the_socket_activated_system_unit_has_no_privilege_and_needs_its_socket() -> None:
    text = units.system_service_unit(SPEC, "socket")
    service = dict(sections(text)["Service"])
    unit = dict(sections(text)["Unit"])
    assert unit["Requires"] == unit["After"] == "devrouter-ann.socket"
    assert service["User"] == "ann"
    assert service["CapabilityBoundingSet"] == ""
    assert service["NoNewPrivileges"] == "yes"
    assert "AmbientCapabilities" not in service
    assert values(text, "Service", "Environment") == ['"HOME=/home/ann"', '"PYTHONUNBUFFERED=1"']
    assert "--listen" not in systemd_split(service["ExecStart"])
    assert dict(sections(text)["Install"]) == {"WantedBy": "multi-user.target"}


def test_the_socket_unit() -> None:
    text = units.socket_unit("ann", 80)
    assert values(text, "Socket", "ListenStream") == ["127.0.0.1:80", "[::1]:80"]
    socket = dict(sections(text)["Socket"])
    assert socket["BindIPv6Only"] == "ipv6-only"
    assert socket["FreeBind"] == "yes"
    assert socket["Service"] == "devrouter-ann.service"
    assert dict(sections(text)["Install"]) == {"WantedBy": "sockets.target"}


def test_the_capability_unit_holds_one_capability_and_binds_the_port_itself() -> None:
    spec = dataclasses.replace(SPEC, listen=units.loopback_listen(80))
    text = units.system_service_unit(spec, "capability")
    service = dict(sections(text)["Service"])
    assert service["AmbientCapabilities"] == "CAP_NET_BIND_SERVICE"
    assert service["CapabilityBoundingSet"] == "CAP_NET_BIND_SERVICE"
    assert service["User"] == "ann"
    argv = systemd_split(service["ExecStart"])
    assert argv[-4:] == ["--listen", "127.0.0.1:80", "--listen", "[::1]:80"]
    assert "Requires" not in dict(sections(text)["Unit"])


def test_there_is_no_system_unit_for_sysctl() -> None:
    with pytest.raises(ValueError, match="no system service"):
        units.system_service_unit(SPEC, "sysctl")


def test_the_sysctl_file() -> None:
    text = units.sysctl_conf(80)
    assert "net.ipv4.ip_unprivileged_port_start = 80\n" in text
    assert all(line.startswith("#") for line in text.splitlines()[:-1])


@pytest.mark.parametrize(
    ("name", "ok"),
    [
        ("ann", True),
        ("a.b-c_d", True),
        ("_svc", True),
        ("a@b", False),
        ("a b", False),
        ("", False),
        ("-x", False),
        ("x" * 33, False),
        ("ann/..", False),
    ],
)
def test_user_names_that_can_name_a_unit(name: str, ok: bool) -> None:
    if ok:
        assert units.system_units(name) == (f"devrouter-{name}.service", f"devrouter-{name}.socket")
    else:
        with pytest.raises(units.UnitNameError, match="cannot be part of a unit name"):
            units.system_units(name)


# --- launchd ------------------------------------------------------------------------------


def test_the_launchd_plist_round_trips_as_data() -> None:
    spec = dataclasses.replace(SPEC, listen=units.loopback_listen(80), home="/Users/ann")
    data = units.launch_agent(spec, "/Users/ann/Library/Logs/devrouter")
    assert data.startswith(b"<?xml")
    agent = plistlib.loads(data)
    assert agent == {
        "Label": "dev.devrouter",
        "ProgramArguments": list(units.serve_argv(spec)),
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "WorkingDirectory": "/Users/ann",
        "EnvironmentVariables": {"PYTHONUNBUFFERED": "1"},
        "StandardOutPath": "/Users/ann/Library/Logs/devrouter/devrouter.log",
        "StandardErrorPath": "/Users/ann/Library/Logs/devrouter/devrouter.error.log",
    }


def test_a_plist_needs_no_quoting() -> None:
    spec = dataclasses.replace(SPEC, config='/Users/a b/$x "%".yaml')
    agent = plistlib.loads(units.launch_agent(spec, "/L"))
    assert agent["ProgramArguments"][-1] == '/Users/a b/$x "%".yaml'


# --- systemd-analyze verify ---------------------------------------------------------------


def _analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed here (apt-get install systemd)")
    return path


def _verify(tmp_path: Path, files: list[Path], user: bool) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    argv = [_analyze(), "verify", *(["--user"] if user else []), *map(str, files)]
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime), "HOME": str(tmp_path)}
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S, env=env, cwd=tmp_path
    )


def _real_spec(tmp_path: Path, **changes: object) -> Spec:
    """A spec whose program exists (verify checks that ExecStart is executable), and whose
    paths need quoting."""
    odd = tmp_path / "odd dir $x 100%"
    odd.mkdir()
    user = units.check_user(os.environ.get("USER") or "root")
    spec = Spec(program(), str(odd / "state"), str(odd / "config.yaml"), (), user, str(odd))
    return dataclasses.replace(spec, **changes)  # type: ignore[arg-type]


def _assert_clean(done: subprocess.CompletedProcess[str], files: list[Path]) -> None:
    # verify exits 0 on an unknown key or a value it ignores; it only says so
    said = done.stdout + done.stderr
    assert done.returncode == 0, said
    for f in files:
        assert f.name not in said, said


def test_systemd_analyze_verifies_the_user_unit(tmp_path: Path) -> None:
    spec = _real_spec(tmp_path, listen=units.loopback_listen(8080))
    unit = tmp_path / units.USER_UNIT
    unit.write_text(units.user_unit(spec))
    _assert_clean(_verify(tmp_path, [unit], user=True), [unit])


def test_systemd_analyze_catches_a_bad_unit(tmp_path: Path) -> None:
    """The check above can fail: a program that does not exist is reported."""
    spec = _real_spec(tmp_path, program=("/nonexistent/devrouter",))
    unit = tmp_path / units.USER_UNIT
    unit.write_text(units.user_unit(spec))
    done = _verify(tmp_path, [unit], user=True)
    assert done.returncode != 0
    assert "/nonexistent/devrouter" in done.stdout + done.stderr


@pytest.mark.skipif(sys.platform != "linux", reason="system units are Linux's")
def test_systemd_analyze_verifies_the_socket_units(tmp_path: Path) -> None:
    spec = _real_spec(tmp_path)
    service_name, socket_name = units.system_units(spec.user)
    service, socket = tmp_path / service_name, tmp_path / socket_name
    service.write_text(units.system_service_unit(spec, "socket"))
    socket.write_text(units.socket_unit(spec.user, 80))
    _assert_clean(_verify(tmp_path, [socket, service], user=False), [socket, service])


@pytest.mark.skipif(sys.platform != "linux", reason="system units are Linux's")
def test_systemd_analyze_verifies_the_capability_unit(tmp_path: Path) -> None:
    spec = _real_spec(tmp_path, listen=units.loopback_listen(80))
    service = tmp_path / units.system_units(spec.user)[0]
    service.write_text(units.system_service_unit(spec, "capability"))
    _assert_clean(_verify(tmp_path, [service], user=False), [service])
