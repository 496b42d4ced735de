"""Results: one worker's share (a JSON-safe dict, so it crosses processes), merged into a
`Result` for the whole run, and the run's JSON figures."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..observe.histogram import Histogram
from .errors import ERROR_KINDS


@dataclass
class Result:
    """Merged results of all workers."""

    histogram: Histogram = field(default_factory=Histogram)
    requests: int = 0
    bytes: int = 0
    duration_s: float = 0.0
    status: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ERROR_KINDS, 0))
    answered: bool = False  # some response arrived, counted or not (the warmup's too)
    gave_up: bool = False  # a worker ended early because nothing answered

    def add(self, part: Mapping[str, Any]) -> None:
        self.histogram.merge(Histogram.from_dict(part["histogram"]))
        self.requests += int(part["requests"])
        self.bytes += int(part["bytes"])
        self.duration_s = max(self.duration_s, float(part["duration_s"]))
        for code, n in part["status"].items():
            self.status[code] = self.status.get(code, 0) + int(n)
        for kind, n in part["errors"].items():
            self.errors[kind] = self.errors.get(kind, 0) + int(n)
        self.answered = self.answered or bool(part.get("answered", self.requests > 0))
        self.gave_up = self.gave_up or bool(part.get("gave_up", False))

    def merge(self, other: Result) -> None:
        """Add another run (a --compare-direct round); durations add up."""
        duration = self.duration_s + other.duration_s
        self.add(other.as_part())
        self.duration_s = duration

    def as_part(self) -> dict[str, Any]:
        return {
            "histogram": self.histogram.to_dict(),
            "requests": self.requests,
            "bytes": self.bytes,
            "duration_s": self.duration_s,
            "status": self.status,
            "errors": self.errors,
            "answered": self.answered,
            "gave_up": self.gave_up,
        }

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    def to_json(self) -> dict[str, Any]:
        d = self.duration_s
        return {
            "requests": self.requests,
            "duration_s": round(d, 6),
            "requests_per_second": round(self.requests_per_second, 3),
            "bytes": self.bytes,
            "bytes_per_second": round(self.bytes / d, 3) if d > 0 else 0.0,
            "status": dict(sorted(self.status.items())),
            "errors": dict(self.errors),
            "latency_ms": {k: round(v, 3) for k, v in self.histogram.summary().items()},
        }
