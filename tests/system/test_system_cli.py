"""`devrouter service` through the real CLI, in a subprocess, with a fake HOME: install
--dry-run (the unit that would be written, the config found from the working directory,
the privileged step printed for an unprivileged user), status with nothing installed,
and the refusals (no systemd here, bad options, an invalid config): one line, an exit
code, never a traceback. Nothing is written outside the temporary directory."""

from __future__ import annotations

import os
import plistlib
import pwd
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli_env, free_port

from devrouter.system.command import program

#: Upper bound for one CLI run, in seconds.
RUN_TIMEOUT_S = 30.0
ROOT = Path(__file__).resolve().parents[2]


def run(
    *args: str, home: Path, cwd: Path | None = None, prefix: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*prefix, sys.executable, "-m", "devrouter", "service", *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        cwd=cwd or home,
        env=cli_env(
            HOME=str(home),
            XDG_CONFIG_HOME=str(home / "xdg"),
            DEVROUTER_LISTEN=f"127.0.0.1:{free_port()}",  # where nothing listens
            PYTHONPATH=str(ROOT),
        ),
    )


def exec_start(out: str) -> str:
    return out.split("ExecStart=", 1)[1].split("\n", 1)[0]


def test_install_dry_run_prints_the_unit_with_the_config_found_here(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "devrouter.yaml").write_text("routes:\n  api: 3001\n")
    done = run("install", "--dry-run", home=tmp_path, cwd=project)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    unit = tmp_path / "xdg" / "systemd" / "user" / "devrouter.service"
    assert out.startswith("dry run: nothing is written or run\n")
    assert f"would write {unit} (mode 0644):\n" in out
    state = tmp_path / ".local" / "state" / "devrouter"
    assert exec_start(out) == " ".join(
        [
            *program(),
            "serve",
            "--state-dir",
            str(state),
            "--config",
            str(project / "devrouter.yaml"),
        ]
    )
    assert "    Restart=on-failure\n" in out
    assert "    WantedBy=default.target\n" in out
    assert "would run: systemctl --user daemon-reload\n" in out
    assert "would run: systemctl --user enable devrouter.service\n" in out
    assert "logs: journalctl --user -u devrouter -f\n" in out
    assert "loginctl enable-linger" in out
    assert not unit.exists()
    assert not state.exists()


def test_install_dry_run_for_macos_prints_the_plist(tmp_path: Path) -> None:
    done = run("install", "--dry-run", "--platform", "macos", "--port", "80", home=tmp_path)
    assert done.returncode == 0, done.stderr
    agent = tmp_path / "Library" / "LaunchAgents" / "dev.devrouter.plist"
    head = f"would write {agent} (mode 0644):\n"
    assert head in done.stdout
    body = done.stdout.split(head, 1)[1].split("\nwould ", 1)[0]
    data = plistlib.loads("\n".join(line[4:] for line in body.splitlines()).encode())
    assert data["ProgramArguments"][-4:] == ["--listen", "127.0.0.1:80", "--listen", "[::1]:80"]
    assert f"would run: launchctl bootstrap gui/{os.getuid()} {agent}" in done.stdout
    assert "sudo" not in done.stdout


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory another user can enter (pytest's tmp_path is root's alone)."""
    path = Path(tempfile.mkdtemp(prefix="devrouter-service-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def _as_nobody() -> tuple[str, ...]:
    """How to run the CLI as an unprivileged user: nothing when this is not root, else
    setpriv as `nobody` (skipped where that cannot be done)."""
    if os.geteuid() != 0:
        return ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root and setpriv (util-linux) is missing: cannot drop to a user")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("running as root and there is no user `nobody` to drop to")
    return (setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups")


def test_port_80_dry_run_as_a_user_prints_the_one_sudo_line(shared_dir: Path) -> None:
    prefix = _as_nobody()
    user = pwd.getpwuid(os.geteuid() if not prefix else pwd.getpwnam("nobody").pw_uid).pw_name
    done = run("install", "--dry-run", "--port", "80", home=shared_dir, prefix=prefix)
    if prefix and "Permission denied" in done.stderr:
        pytest.skip(f"`nobody` cannot run this checkout: {done.stderr.strip()[-200:]}")
    assert done.returncode == 0, done.stderr
    generated = shared_dir / ".local" / "state" / "devrouter" / "service"
    out = done.stdout
    assert f"would write {generated}/devrouter-{user}.socket (mode 0644):\n" in out
    assert "    ListenStream=[::1]:80\n" in out
    assert f"    User={user}\n" in out
    assert "the privileged step (printed for you to run; devrouter never runs sudo):\n" in out
    assert (
        f"  sudo install -m 0644 {generated}/devrouter-{user}.service "
        f"{generated}/devrouter-{user}.socket /etc/systemd/system/ && sudo systemctl "
        f"daemon-reload && sudo systemctl enable --now devrouter-{user}.socket "
        f"devrouter-{user}.service\n"
    ) in out
    assert "would run" not in out  # nothing of the user's own to run for system units
    assert not generated.exists()


def test_status_with_nothing_installed(tmp_path: Path) -> None:
    done = run("status", home=tmp_path)
    assert done.returncode == 1, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "service: not installed (`devrouter service install` sets it up)"
    assert lines[1].startswith("router: nothing answers at 127.0.0.1:")
    assert done.stderr == ""


@pytest.mark.skipif(
    Path("/run/systemd/system").is_dir(), reason="systemd runs here: install would install"
)
def test_install_without_systemd_is_one_line_and_writes_nothing(tmp_path: Path) -> None:
    done = run("install", home=tmp_path)
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.startswith("devrouter: systemd is not running on this machine")
    assert len(done.stderr.splitlines()) == 1
    assert not (tmp_path / "xdg").exists()


@pytest.mark.parametrize(
    ("args", "code", "said"),
    [
        (("install", "--port", "0"), 2, "--port 0 is outside 1-65535"),
        (("install", "--platform", "macos"), 2, "--platform is for --dry-run only"),
        (
            ("install", "--dry-run", "--platform", "macos", "--privileged-port", "sysctl"),
            2,
            "--privileged-port is for Linux",
        ),
        (("install", "--config", "/nonexistent/x.yaml"), 1, "/nonexistent/x.yaml: the file"),
    ],
)
def test_refusals_are_one_line_with_their_exit_code(
    tmp_path: Path, args: tuple[str, ...], code: int, said: str
) -> None:
    done = run(*args, home=tmp_path)
    assert done.returncode == code, done.stderr
    assert said in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.splitlines()) == 1


def test_an_invalid_config_is_refused_with_its_line(tmp_path: Path) -> None:
    (tmp_path / "devrouter.yaml").write_text("routes:\n  api: [\n")
    done = run("install", "--dry-run", home=tmp_path)
    assert done.returncode == 1
    assert done.stderr.startswith(f"devrouter: {tmp_path / 'devrouter.yaml'}:")
    assert "Traceback" not in done.stderr


def test_uninstall_with_nothing_installed(tmp_path: Path) -> None:
    done = run("uninstall", home=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "no devrouter service is installed; nothing to do\n"


def test_help_names_the_actions_and_options(tmp_path: Path) -> None:
    done = run("install", "--help", home=tmp_path)
    assert done.returncode == 0
    for word in ("--port", "--privileged-port", "socket", "capability", "sysctl", "--dry-run"):
        assert word in done.stdout
