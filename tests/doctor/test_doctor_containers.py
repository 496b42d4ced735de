"""devrouter.doctor.containers: the Docker verdicts from the router's `docker` report."""

from __future__ import annotations

from typing import Any

import pytest

from devrouter.doctor.containers import judge_docker


def report(state: str, detail: str | None = None, containers: list[Any] | None = None) -> Any:
    return {
        "state": state,
        "socket": "/var/run/docker.sock" if state == "connected" else None,
        "api_version": "1.41",
        "detail": detail,
        "since": 0,
        "containers": containers or [],
    }


def box(
    name: str, names: list[str], reason: str | None = None, deliberate: bool = False
) -> dict[str, Any]:
    return {
        "id": "0123456789ab",
        "name": name,
        "image": "img",
        "names": names,
        "reason": reason,
        "deliberate": deliberate,
    }


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        (None, []),
        (report("off", "docker: false in the config"), [("info", "are not named: docker: false")]),
        (report("starting"), [("info", "still looking")]),
        (
            report("absent", "no Docker Engine socket at /var/run/docker.sock"),
            [("info", "no Docker Engine here")],
        ),
        (
            report("unreachable", "the Engine is not reachable at /x.sock: Connection refused"),
            [("warn", "Docker: the Engine is not reachable at /x.sock")],
        ),
        (
            report(
                "connected",
                containers=[
                    box("shop_api_1", ["api.shop"]),
                    box("shop-db-1", [], "publishes no port; publish its HTTP port"),
                    box("hidden", [], "opted out (label devrouter.enable=false)", deliberate=True),
                ],
            ),
            [
                ("ok", "at /var/run/docker.sock: 1 of 3 running containers named"),
                ("warn", "container shop-db-1 has no route: it publishes no port"),
                ("info", "container hidden has no route: it opted out"),
            ],
        ),
    ],
)
def test_judge_docker(doc: Any, expected: list[tuple[str, str]]) -> None:
    checks = judge_docker(doc)
    assert [(c.status, c.check) for c in checks] == [(s, "docker") for s, _ in expected]
    for check, (_, words) in zip(checks, expected, strict=True):
        assert words in check.message, check.message
    for check in checks:
        assert (check.fix is not None) == (check.status == "warn")
