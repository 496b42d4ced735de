"""Fixtures for the tests against a real Docker Engine (tests/docker/dockerd.py).

`dockerd` is module-scoped: a daemon starts in about a second, and a module that kills or
restarts it (or leaves containers behind) does not disturb the next module. A test that
needs a clean daemon within a module calls `dockerd.remove_all()`.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from dockerd import DockerdError, PrivateDockerd, skip_reason, sweep_stale


@pytest.fixture(scope="session")
def dockerd_available() -> None:
    """Skips, with the reason, where a private dockerd cannot run (not root, a tool missing);
    removes the directories that test runs killed before their teardown left behind."""
    reason = skip_reason(probe=False)
    if reason:
        pytest.skip(reason)
    sweep_stale()


@pytest.fixture(scope="module")
def dockerd(dockerd_available: None) -> Iterator[PrivateDockerd]:
    """A started private dockerd with `local/busybox` imported, torn down after the module
    whatever its tests did (processes, mounts and directory gone)."""
    daemon = PrivateDockerd()
    try:
        try:
            daemon.start()
            daemon.image()
        except DockerdError as exc:
            pytest.skip(f"dockerd failed to start: {exc}")
        yield daemon
    finally:
        daemon.stop()
