"""A Plan with defaults, for the bench tests (imported by them; not a test module)."""

from __future__ import annotations

from typing import Any

from devrouter.bench.plan import Plan


def plan(**kw: Any) -> Plan:
    base: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": 9,
        "request": b"",
        "connections": 1,
        "duration_s": None,
        "requests": 1000,
        "rate": None,
    }
    return Plan(**{**base, **kw})
