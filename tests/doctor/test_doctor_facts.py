"""doctor.facts: probes refuse anything but loopback; the port-assignment range."""

from __future__ import annotations

import sys

import pytest

from devrouter.doctor import facts


async def test_probes_refuse_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await facts.probe_connect("192.0.2.1", 80)


def test_assignment_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert facts.assignment_range({facts.PORT_RANGE_ENV: "20000-20099"}) == (20000, 20099)
    for bad in ("lots", "9-70000", "3000-2000"):
        with pytest.raises(ValueError, match=facts.PORT_RANGE_ENV):
            facts.assignment_range({facts.PORT_RANGE_ENV: bad})


def test_assignment_range_without_port_assignment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "devrouter.ports", None)  # not installed: import fails
    assert facts.assignment_range({}) is None
    assert facts.assignment_range({facts.PORT_RANGE_ENV: "20000-20099"}) == (20000, 20099)
    for bad in ("lots", "9-70000", "3000-2000"):
        with pytest.raises(ValueError, match=facts.PORT_RANGE_ENV):
            facts.assignment_range({facts.PORT_RANGE_ENV: bad})
