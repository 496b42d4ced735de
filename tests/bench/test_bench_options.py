"""bench's option values: durations, rates, headers and bodies, by tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from devrouter.bench import options


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10.0),
        ("1m", 60.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("2.5", 2.5),
        (" 3S ", 3.0),
        ("0", 0.0),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert options.parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "ten", "10x", "s", "-1s", "1s-", "nan", "inf", "1m 2"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        options.parse_duration(text)


@pytest.mark.parametrize(
    ("text", "rate"), [("1000", 1000.0), ("1000/s", 1000.0), ("60/m", 1.0), ("0.5", 0.5)]
)
def test_rates(text: str, rate: float) -> None:
    assert options.parse_rate(text) == rate


@pytest.mark.parametrize("text", ["0", "-5", "x", "10/d", "nan"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        options.parse_rate(text)


def test_headers() -> None:
    assert options.parse_header("X-Token: a b:c ") == ("X-Token", "a b:c")
    assert options.parse_header("Accept:") == ("Accept", "")
    for bad in ("no colon", ": value", "Bad Name: x", "X: a\r\nInjected: 1"):
        with pytest.raises(ValueError):
            options.parse_header(bad)


def test_bodies(tmp_path: Path) -> None:
    (tmp_path / "body.json").write_bytes(b'{"a": 1}\n')
    assert options.parse_body("hello") == b"hello"
    assert options.parse_body("@body.json", cwd=tmp_path) == b'{"a": 1}\n'
    assert options.parse_body(f"@{tmp_path / 'body.json'}") == b'{"a": 1}\n'
    assert options.parse_body("@@literal") == b"@literal"
    with pytest.raises(ValueError, match="cannot read body file"):
        options.parse_body("@missing.json", cwd=tmp_path)
