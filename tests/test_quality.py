"""The package stays ruff-clean and mypy --strict clean; both run as part of the test suite."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.timeout(180)
@pytest.mark.parametrize(
    "argv",
    [
        [sys.executable, "-m", "ruff", "check", "devrouter", "tests", "benchmarks"],
        [
            sys.executable,
            "-m",
            "ruff",
            "format",
            "--check",
            "--quiet",
            "devrouter",
            "tests",
            "benchmarks",
        ],
        [sys.executable, "-m", "mypy"],
    ],
    ids=["ruff", "ruff-format", "mypy"],
)
def test_static_checks(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stdout + proc.stderr
