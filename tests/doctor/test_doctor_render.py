"""doctor.render: the text report, coloured only when asked."""

from __future__ import annotations

import io

from devrouter.doctor import render
from devrouter.doctor.report import Check, Report


def test_text_output_colours_only_when_asked() -> None:
    report = Report(7355, [Check("router", "fail", "down", "start it"), Check("x", "ok", "y")])
    plain = render.render_text(report)
    assert "\x1b[" not in plain
    assert plain.splitlines() == [
        "fail  down",
        "      fix: start it",
        "ok    y",
        "1 problem, 0 warnings",
    ]
    assert "\x1b[1;31mfail\x1b[0m" in render.render_text(report, colour=True)
    assert not render.use_colour(io.StringIO(), {})
