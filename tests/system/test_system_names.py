"""A user name that cannot be part of a system unit's name (SSSD, Active Directory) costs
only the port-80 system units: facts, status and uninstall work, nothing raises."""

from __future__ import annotations

from pathlib import Path

import pytest

from devrouter.system import install, units


def test_an_at_sign_user_has_no_system_units_and_nothing_fails(tmp_path: Path) -> None:
    where = install.places({"HOME": str(tmp_path)}, tmp_path / "state")
    facts = install.gather("ann@corp.example", where)
    assert (facts.system_unit, facts.system_socket) == (False, False)
    plan = install.plan_uninstall("linux", where, facts)
    assert plan.privileged == ()
    with pytest.raises(units.UnitNameError, match="cannot be part of a unit name"):
        units.system_units("ann@corp.example")
