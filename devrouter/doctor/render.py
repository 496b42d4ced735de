"""The report as text: one line per check, a `fix:` line under each problem, a summary."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TextIO

from .report import Report

_COLOURS = {"ok": "32", "info": "2", "warn": "33", "fail": "1;31"}


def use_colour(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Colours only on a terminal, and never with NO_COLOR set or TERM=dumb."""
    if env.get("NO_COLOR") or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def render_text(report: Report, colour: bool = False) -> str:
    lines: list[str] = []
    for c in report.checks:
        tag = f"{c.status:<5}"
        if colour:
            tag = f"\x1b[{_COLOURS[c.status]}m{c.status}\x1b[0m" + " " * (5 - len(c.status))
        lines.append(f"{tag} {c.message}")
        if c.fix:
            lines.append(f"{'':6}fix: {c.fix}")
    fails = sum(c.status == "fail" for c in report.checks)
    warns = sum(c.status == "warn" for c in report.checks)
    lines.append(f"{_plural(fails, 'problem')}, {_plural(warns, 'warning')}")
    return "\n".join(lines) + "\n"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"
