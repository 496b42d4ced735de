"""devrouter.tls.command: `ca`, `trust` and `untrust`, by the real CLI in a subprocess (the
`cli` fixture) and by `change` in this process where the user must be someone else than the
one running the tests (root or not). Every run has its own HOME, DEVROUTER_HOME and a fake
root (DEVROUTER_TRUST_ROOT), so the real trust stores are never touched."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import CliProcess, cli_env
from trust_fakes import calls, certutil, make_nssdb, make_root, nss_has

from devrouter.core.errors import CAError
from devrouter.tls import trust
from devrouter.tls.ca import LocalCA
from devrouter.tls.command import TRUST, UNTRUST, Request, change, sudo_command

#: The CLI's runs here are short; this bounds each one, in seconds.
RUN_TIMEOUT_S = 60.0


@dataclass
class Setup:
    home: Path
    state: Path
    root: Path

    def env(self, **extra: str) -> dict[str, str]:
        env = cli_env(
            HOME=str(self.home),
            DEVROUTER_HOME=str(self.state),
            DEVROUTER_TRUST_ROOT=str(self.root),
            XDG_CONFIG_HOME=str(self.home / "xdg"),
        )
        env.update(extra)
        return env

    @property
    def anchors(self) -> Path:
        return self.root / "usr/local/share/ca-certificates"

    def ca(self) -> LocalCA:
        ca = LocalCA.load(self.state)
        assert ca is not None
        return ca


@pytest.fixture
def setup(tmp_path: Path) -> Setup:
    home = tmp_path / "home"
    home.mkdir()
    return Setup(home, tmp_path / "state", make_root(tmp_path, "debian"))


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture
def run(cli: Callable[..., CliProcess], setup: Setup) -> Run:
    """`code, out, err = run("trust", env=...)`: the real CLI, to its end."""

    def go(*args: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        p = cli(*args, env=env or setup.env(), wait_ready=False)
        out, err = p.proc.communicate(timeout=RUN_TIMEOUT_S)
        assert "Traceback" not in err.decode()
        return p.proc.returncode, out.decode(), err.decode()

    return go


def in_process(setup: Setup, req: Request, euid: int, **env: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = change(req, setup.env(**env), euid, out, err)
    return code, out.getvalue(), err.getvalue()


# --- ca -------------------------------------------------------------------------------------


def test_ca_prints_the_path_and_makes_the_ca_once(run: Run, setup: Setup) -> None:
    code, out, err = run("ca")
    assert code == 0
    pem = setup.state / "ca" / "ca.pem"
    assert out == f"{pem}\n"
    assert err.startswith(f"devrouter: created the local CA in {pem.parent} (SHA-256 ")
    assert err.count("\n") == 1  # the CA's own log line is not repeated
    assert run("ca") == (0, f"{pem}\n", "")
    code, out, err = run("ca", "--pem")
    assert (code, out, err) == (0, pem.read_text(), "")


def test_ca_with_a_damaged_ca_is_one_line(run: Run, setup: Setup) -> None:
    run("ca")
    (setup.state / "ca" / "ca-key.pem").write_text("garbage")
    code, out, err = run("ca")
    assert code == 3 and out == ""
    assert err.startswith("devrouter: ") and "damaged" in err and err.count("\n") == 1


# --- trust and untrust, the real CLI ----------------------------------------------------------


def test_dry_run_changes_nothing(run: Run, setup: Setup) -> None:
    certutil()
    code, out, _ = run("trust", "--dry-run")
    assert code == 0
    ca = setup.ca()  # made: the plan names its file and fingerprint
    fp = ca.fingerprint_sha256()[:8]
    assert out.splitlines() == [
        "would add the devrouter CA to the system (Debian/Ubuntu) store (as root):",
        f"  cp {ca.paths.cert} {setup.anchors}/devrouter-{fp}.crt",
        f"  {setup.root}/usr/sbin/update-ca-certificates",
        "would add the devrouter CA to Chromium's NSS database ~/.pki/nssdb:",
        f"  mkdir -p -m 700 {setup.home}/.pki/nssdb",
        f"  {shutil.which('certutil')} -N -d sql:{setup.home}/.pki/nssdb --empty-password",
        f"  {shutil.which('certutil')} -A -d sql:{setup.home}/.pki/nssdb -t C,, -n "
        f"'devrouter local CA {fp}' -i {ca.paths.cert}",
    ]
    assert not (setup.home / ".pki").exists()
    assert list(setup.anchors.iterdir()) == [] and calls(setup.root) == []


def test_trust_then_untrust(run: Run, setup: Setup) -> None:
    certutil()
    firefox = make_nssdb(setup.home / ".mozilla/firefox/abc.default-release")
    code, out, err = run("trust")
    ca = setup.ca()
    nick = trust.nickname(ca)
    assert code == 0, err
    lines = out.splitlines()
    if os.geteuid() == 0:  # the system store is the fake root's
        assert lines[0] == "added the devrouter CA to the system (Debian/Ubuntu) store"
        assert calls(setup.root) == ["update-ca-certificates "]
        assert (setup.anchors / f"devrouter-{ca.fingerprint_sha256()[:8]}.crt").exists()
        lines = lines[1:]
    else:
        assert lines[:3] == [
            "the system (Debian/Ubuntu) store is not done yet: adding the CA to it needs "
            "root. Run:",
            f"  {sudo_command('trust', setup.state, setup.env())}",
            lines[2],
        ]
        lines = lines[3:]
    assert lines == [
        "added the devrouter CA to Chromium's NSS database ~/.pki/nssdb",
        "added the devrouter CA to Firefox profile abc.default-release "
        "(~/.mozilla/firefox/abc.default-release)",
    ]
    assert nss_has(setup.home / ".pki/nssdb", nick) and nss_has(firefox, nick)

    code, out, _ = run("trust", "--user-only")  # idempotent
    assert code == 0
    assert out.splitlines() == [
        "already trusted by Chromium's NSS database ~/.pki/nssdb",
        "already trusted by Firefox profile abc.default-release "
        "(~/.mozilla/firefox/abc.default-release)",
    ]

    code, out, _ = run("untrust", "--user-only")
    assert code == 0
    assert out.splitlines() == [
        "removed the devrouter CA from Chromium's NSS database ~/.pki/nssdb",
        "removed the devrouter CA from Firefox profile abc.default-release "
        "(~/.mozilla/firefox/abc.default-release)",
        f"the CA itself is kept in {ca.paths.dir}; to delete it too: rm -r {ca.paths.dir}",
    ]
    assert not nss_has(setup.home / ".pki/nssdb", nick) and not nss_has(firefox, nick)
    assert ca.paths.cert.exists()  # untrust never deletes the CA


def test_trust_as_another_user_prints_the_sudo_line(setup: Setup) -> None:
    """Whoever runs the tests, `change` is told it runs as uid 1000."""
    code, out, err = in_process(setup, Request(TRUST, user=False), euid=1000)
    ca = setup.ca()
    assert (code, err.count("devrouter: created")) == (0, 1)
    lines = out.splitlines()
    assert lines[0] == (
        "the system (Debian/Ubuntu) store is not done yet: adding the CA to it needs root. Run:"
    )
    assert lines[1].startswith(f"  sudo env DEVROUTER_HOME={setup.state} ")
    assert lines[1].endswith(" trust --system-only")
    assert f"DEVROUTER_TRUST_ROOT={setup.root}" in lines[1]
    assert lines[2] == (
        f"  (it runs: cp {ca.paths.cert} {setup.anchors}/devrouter-{ca.fingerprint_sha256()[:8]}"
        f".crt; {setup.root}/usr/sbin/update-ca-certificates)"
    )
    assert len(lines) == 3
    assert list(setup.anchors.iterdir()) == [] and calls(setup.root) == []  # nothing done


def test_the_sudo_line_names_this_devrouter_by_full_path(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    exe = setup.home / "bin" / "devrouter"
    exe.parent.mkdir()
    exe.write_text("#!/bin/sh\n")
    monkeypatch.setattr(sys, "argv", [str(exe), "trust"])
    env = {"HOME": "/home/ann"}
    assert sudo_command("trust", Path("/home/ann/.local/state/devrouter"), env) == (
        f"sudo env DEVROUTER_HOME=/home/ann/.local/state/devrouter {exe} trust --system-only"
    )
    monkeypatch.setattr(sys, "argv", ["/x/devrouter/__main__.py"])
    assert sudo_command("untrust", Path("/s t"), env) == (
        f"sudo env 'DEVROUTER_HOME=/s t' {sys.executable} -m devrouter untrust --system-only"
    )


def test_trust_as_root_changes_the_system_store(setup: Setup) -> None:
    """Whoever runs the tests, `change` is told it runs as root (the fake root's tools)."""
    if os.geteuid() != 0:
        LocalCA.load_or_create(_mkstate(setup.state))
    code, out, _ = in_process(setup, Request(TRUST, user=False), euid=0)
    assert (code, out) == (0, "added the devrouter CA to the system (Debian/Ubuntu) store\n")
    assert calls(setup.root) == ["update-ca-certificates "]
    code, out, _ = in_process(setup, Request(UNTRUST, user=False), euid=0)
    ca = setup.ca()
    assert code == 0
    assert out.splitlines() == [
        "removed the devrouter CA from the system (Debian/Ubuntu) store",
        f"the CA itself is kept in {ca.paths.dir}; to delete it too: rm -r {ca.paths.dir}",
    ]
    assert list(setup.anchors.iterdir()) == []


def _mkstate(path: Path) -> Path:
    path.mkdir(mode=0o700, exist_ok=True)
    return path


#: Runs a command as nobody, through setpriv: subprocess's own `user=` fails with EACCES to
#: exec this machine's interpreter (pyenv's, under /root), which setpriv runs as nobody fine.
SETPRIV = shutil.which("setpriv")
AS_NOBODY = [SETPRIV or "setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]


@pytest.fixture
def nobody_dir() -> Iterator[Path]:
    """A directory the `nobody` user owns, when the tests run as root and Python can run as
    nobody; else skip."""
    if os.geteuid() != 0:
        pytest.skip("only root can run the CLI as another user")
    if SETPRIV is None:
        pytest.skip("setpriv is not installed (package util-linux)")
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import devrouter"],
        capture_output=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
        cwd="/",
    )
    if probe.returncode != 0:
        pytest.skip(f"this Python cannot run as nobody: {probe.stderr.decode().strip()}")
    d = Path(tempfile.mkdtemp(prefix="devrouter-trust-"))
    os.chown(d, 65534, 65534)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def test_trust_as_a_user_in_a_subprocess(nobody_dir: Path, tmp_path: Path) -> None:
    root = make_root(nobody_dir, "debian")
    env = cli_env(HOME=str(nobody_dir), DEVROUTER_HOME=str(nobody_dir / "state"))
    env["DEVROUTER_TRUST_ROOT"] = str(root)
    proc = subprocess.run(
        [*AS_NOBODY, sys.executable, "-m", "devrouter", "trust", "--system-only"],
        env=env,
        cwd=nobody_dir,
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert f"sudo env DEVROUTER_HOME={nobody_dir}/state DEVROUTER_TRUST_ROOT={root} " in proc.stdout
    assert f"{sys.executable} -m devrouter trust --system-only" in proc.stdout
    assert calls(root) == []


# --- failures ---------------------------------------------------------------------------------


def test_a_failing_step_is_one_line_and_exit_1(run: Run, setup: Setup) -> None:
    certutil()
    bad = setup.home / ".mozilla/firefox/broken.default"
    bad.mkdir(parents=True)
    (bad / "cert9.db").write_bytes(b"not a database")
    code, out, err = run("trust", "--user-only")
    assert code == 1
    assert "added the devrouter CA to Chromium's NSS database ~/.pki/nssdb" in out
    [line] = err.splitlines()[1:]  # after "created the local CA"
    assert line.startswith(
        "devrouter: could not add the devrouter CA to Firefox profile broken.default "
        "(~/.mozilla/firefox/broken.default): "
    )
    assert "certutil" in line and "failed (exit" in line


def test_a_missing_certutil_is_one_line_with_the_fix(run: Run, setup: Setup) -> None:
    profile = setup.home / ".mozilla/firefox/p.default"
    profile.mkdir(parents=True)
    (profile / "cert9.db").write_bytes(b"")
    code, _, err = run("trust", "--user-only", env=setup.env(PATH=str(setup.home / "nobin")))
    assert code == 1
    assert err.splitlines()[-1] == (
        "devrouter: could not add the devrouter CA to Firefox profile p.default "
        f"(~/.mozilla/firefox/p.default): certutil is not installed: {trust.CERTUTIL_HINT}"
    )


def test_no_system_store_fails_only_when_it_alone_was_asked_for(
    run: Run, setup: Setup, tmp_path: Path
) -> None:
    env = setup.env(DEVROUTER_TRUST_ROOT=str(tmp_path / "empty"), PATH=str(tmp_path / "nobin"))
    code, out, err = run("trust", "--system-only", env=env)
    assert code == 1 and out == ""
    assert err.splitlines()[-1].startswith("devrouter: found no system trust store")
    code, out, err = run("trust", env=env)
    assert code == 0
    assert out.startswith("found no system trust store")


def test_untrust_without_a_ca(run: Run, setup: Setup) -> None:
    assert run("untrust") == (0, f"no local CA in {setup.state / 'ca'}: nothing to untrust\n", "")
    assert not setup.state.exists()  # untrust never makes a CA


def test_root_leaves_another_users_nss_databases_alone(setup: Setup) -> None:
    if os.geteuid() != 0:
        pytest.skip("only root can give HOME to another user")
    certutil()
    LocalCA.load_or_create(_mkstate(setup.state))
    make_nssdb(setup.home / ".pki/nssdb")
    os.chown(setup.home, 65534, 65534)
    code, out, _ = in_process(setup, Request(TRUST, system=False), euid=0)
    assert code == 0
    assert out.splitlines()[0] == (
        f"skipped the NSS databases in {setup.home}: they are another user's; run "
        "`devrouter trust --user-only` as that user"
    )


def test_root_acting_for_a_user_reads_only_their_certificate(setup: Setup) -> None:
    """`sudo devrouter trust --system-only`: the state directory is the user's, so LocalCA
    would refuse it; root reads ca.pem alone and changes only the system store."""
    if os.geteuid() != 0:
        pytest.skip("only root can give the state directory to another user")
    ca = LocalCA.load_or_create(_mkstate(setup.state))
    ca.paths.key.chmod(0o000)  # root could read it anyway; the point is it is not needed
    for path in (setup.state, ca.paths.dir, ca.paths.cert, ca.paths.key):
        os.chown(path, 65534, 65534)
    code, out, _ = in_process(setup, Request(TRUST, user=False), euid=0)
    assert (code, out) == (0, "added the devrouter CA to the system (Debian/Ubuntu) store\n")
    assert (setup.anchors / f"devrouter-{ca.fingerprint_sha256()[:8]}.crt").read_bytes() == (
        ca.cert_pem
    )
    ca.paths.cert.write_bytes(b"garbage")  # the CLI's boundary makes it one line, exit 3
    with pytest.raises(CAError, match="not a PEM certificate"):
        in_process(setup, Request(UNTRUST, user=False), euid=0)
