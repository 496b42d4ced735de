"""bench's reports: the one line for a run in which nothing answered."""

from __future__ import annotations

import pytest

from devrouter.bench import report
from devrouter.bench.result import Result
from devrouter.bench.target import parse_target


@pytest.mark.parametrize(
    ("errors", "answered", "reason"),
    [
        ({"refused": 20}, False, "every connection was refused"),
        ({"timeout": 3}, False, "no request got a response within --timeout"),
        ({"refused": 2, "reset": 8}, False, "no response arrived (refused: 2, reset: 8)"),
        ({"refused": 20}, True, None),  # something answered once: a report, not this line
        ({}, False, None),  # nothing was tried
    ],
)
def test_silence(errors: dict[str, int], answered: bool, reason: str | None) -> None:
    result = Result(answered=answered)
    result.errors.update(errors)
    assert report.silence(result) == reason
    line = report.silence_line(result, parse_target("http://127.0.0.1:4001/"), None)
    if reason is None:
        assert line is None
    else:
        assert line == (
            f"nothing answers at 127.0.0.1:4001: {reason}. Is the service running and "
            "listening on port 4001?"
        )
