"""The report: one `Check` per verdict, and the `Report` that collects them and gives
the exit status. Plain data; `render` prints it, `--json` dumps `Report.to_json()`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from ..core.errors import EXIT_FAILED, EXIT_OK

Status = Literal["ok", "info", "warn", "fail"]
_RANK: dict[str, int] = {"ok": 0, "info": 0, "warn": 1, "fail": 2}


@dataclass(frozen=True, slots=True)
class Check:
    """One verdict: a line of output, and an object in `--json`."""

    # "router", "resolver", "config", "route", "docker", "ports", "trust", "service"
    check: str
    status: Status
    message: str
    fix: str | None = None
    data: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "status": self.status,
            "message": self.message,
            "fix": self.fix,
            "data": dict(self.data),
        }


@dataclass
class Report:
    port: int
    checks: list[Check] = field(default_factory=list)

    @property
    def status(self) -> Status:
        worst: Status = "ok"
        for c in self.checks:
            if _RANK[c.status] > _RANK[worst]:
                worst = c.status
        return worst

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if any(c.status == "fail" for c in self.checks) else EXIT_OK

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,
            "status": self.status,
            "exit_code": self.exit_code,
            "port": self.port,
            "checks": [c.to_json() for c in self.checks],
        }
