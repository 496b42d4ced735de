"""`devrouter export` on the command line: what it prints where, its exit codes, and that no
value from the config or a secret ends up where it should not."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import cli_env
from export_checks import export

from devrouter.cli.main import main

ROOT = Path(__file__).resolve().parents[2]
FORMATS = ("caddy", "nginx", "traefik", "kubernetes")


def _run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "devrouter", "export", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=cli_env(**env),
        cwd=cwd,
    )


@pytest.mark.parametrize("fmt", FORMATS)
def test_the_gaps_are_at_the_top_of_the_output_and_on_stderr(fmt: str) -> None:
    done = export(fmt, ROOT / "config.example.yaml")
    assert done.returncode == 0
    gaps = [line.split(": ", 1)[1] for line in done.stderr.splitlines()]
    assert gaps, "the example config has at least the HTTPS gap"
    prefix = f"devrouter export: not expressed in {fmt}: "
    assert all(line.startswith(prefix) for line in done.stderr.splitlines())
    top = done.stdout.split("\n\n", 1)[0]
    for line in done.stderr.splitlines():
        assert f"# - {line.removeprefix(prefix)}" in top


def test_main_prints_the_export(capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["export", "caddy", "--config", str(ROOT / "config.example.yaml")])
    out = capsys.readouterr()
    assert code == 0
    assert "http://api.localhost:80 {" in out.out
    assert "Traceback" not in out.err


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (("caddy", "--config", "missing.yaml"), 1, "missing.yaml: the file does not exist"),
        (("caddy", "--config", "bad.yaml"), 1, "bad.yaml:2: route 'api': port 70000"),
        (("caddy", "--config", "ok.yaml", "--domain", "a b"), 2, "--domain 'a b'"),
        (("nginx", "--config", "ok.yaml", "--upstream-host", "x:1"), 2, "--upstream-host"),
        (("nginx", "--config", "ok.yaml", "--port", "0"), 2, "--port 0 is outside"),
        (("caddy", "--config", "ok.yaml", "--service-map", "api=a:1"), 2, "kubernetes format only"),
        (("kubernetes", "--config", "ok.yaml", "--service-map", "api"), 2, "NAME=SERVICE:PORT"),
        (("caddy",), 1, "no config file found"),
    ],
)
def test_failures_are_one_line_and_an_exit_code(
    tmp_path: Path, args: tuple[str, ...], code: int, message: str
) -> None:
    (tmp_path / "ok.yaml").write_text("routes:\n  api: 4001\n")
    (tmp_path / "bad.yaml").write_text("routes:\n  api: 70000\n")
    done = _run(*args, cwd=tmp_path, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "x"))
    assert done.returncode == code, done.stderr
    assert message in done.stderr
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_an_unknown_format_is_a_usage_error(tmp_path: Path) -> None:
    done = _run("apache", cwd=tmp_path)
    assert done.returncode == 2
    assert "invalid choice" in done.stderr


@pytest.mark.parametrize("fmt", FORMATS)
def test_access_secrets_are_never_read_nor_printed(tmp_path: Path, fmt: str) -> None:
    secret = "s3cret-value-that-must-not-leak"
    (tmp_path / "secret").write_text(secret)
    (tmp_path / "secret").chmod(0o600)
    config = tmp_path / "devrouter.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "access": {"env": "EXPORT_TEST_SECRET"},
                "routes": {"api": 4001, "admin": {"port": 4002, "access": {"file": "secret"}}},
            }
        )
    )
    done = _run(fmt, "--config", str(config), EXPORT_TEST_SECRET=secret)
    assert done.returncode == 0, done.stderr
    assert secret not in done.stdout + done.stderr
    assert "$EXPORT_TEST_SECRET" in done.stderr
    # without the variable (on another machine) the export still works: it never reads it
    assert _run(fmt, "--config", str(config)).returncode == 0


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_value_from_the_config_cannot_leave_its_comment(tmp_path: Path, fmt: str) -> None:
    config = tmp_path / "devrouter.yaml"
    evil = "X\nserver { listen 1; }\nevil: 1"
    config.write_text(
        yaml.safe_dump(
            {"routes": {"api": {"port": 4001, "access": {"env": evil}}, "web": 1}},
        )
    )
    done = _run(fmt, "--config", str(config))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert not any(line.startswith(("server { listen 1", "evil: 1")) for line in lines[:20])
    assert "X\\nserver { listen 1; }\\nevil: 1" in done.stdout
    if fmt in ("traefik", "kubernetes"):
        list(yaml.safe_load_all(done.stdout))  # still one well-formed document stream


def test_help_names_every_format_and_option(tmp_path: Path) -> None:
    done = _run("--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for word in (*FORMATS, "--domain", "--upstream-host", "--port", "--bind", "--service-map"):
        assert word in done.stdout
