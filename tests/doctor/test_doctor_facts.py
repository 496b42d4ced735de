"""doctor.facts: probes refuse anything but loopback; the port-assignment range."""

from __future__ import annotations

import pytest

from devrouter.doctor import facts
from devrouter.services import ports


async def test_probes_refuse_non_loopback_addresses() -> None:
    with pytest.raises(ValueError, match="loopback"):
        await facts.probe_connect("192.0.2.1", 80)


def test_assignment_range(monkeypatch: pytest.MonkeyPatch) -> None:
    assert facts.assignment_range({facts.PORT_RANGE_ENV: "20000-20099"}) == (20000, 20099)
    for bad in ("lots", "9-70000", "3000-2000"):
        with pytest.raises(ValueError, match=facts.PORT_RANGE_ENV):
            facts.assignment_range({facts.PORT_RANGE_ENV: bad})


def test_assignment_range_is_the_one_devrouter_run_uses() -> None:
    """No $DEVROUTER_PORTS: devrouter.services.ports' own default, not a copy of it."""
    assert facts.assignment_range({}) == ports.port_range({}) == ports.DEFAULT_RANGE
