"""The verdicts on Docker: is the Engine watched, and which running containers have no name
and why. Pure: the running router's `docker` report (/api/status) in, `Check`s out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report import Check


def judge_docker(report: Mapping[str, Any] | None) -> list[Check]:
    """Nothing when the router does not watch Docker (or none runs); otherwise the Engine's
    state, then one warning per running container without a route."""
    if not isinstance(report, Mapping):
        return []
    state = report.get("state")
    detail = str(report.get("detail") or "")
    data = {"state": state, "socket": report.get("socket")}
    if state == "off":
        return [Check("docker", "info", f"Docker containers are not named: {detail}", None, data)]
    if state == "starting":
        return [
            Check("docker", "info", "the router is still looking for a Docker Engine", None, data)
        ]
    if state == "absent":
        return [Check("docker", "info", f"no Docker Engine here ({detail})", None, data)]
    if state != "connected":
        return [
            Check(
                "docker",
                "warn",
                f"Docker: {detail}",
                "start Docker (or Docker Desktop, OrbStack, Colima), or point docker.socket in "
                "the config at the Engine's socket; the router connects by itself once it "
                "answers",
                data,
            )
        ]
    containers = [c for c in report.get("containers") or () if isinstance(c, Mapping)]
    named = [c for c in containers if c.get("names")]
    checks = [
        Check(
            "docker",
            "ok",
            f"watching the Docker Engine at {report.get('socket')}: "
            f"{len(named)} of {len(containers)} running container"
            f"{'s' if len(containers) != 1 else ''} named",
            None,
            {**data, "containers": len(containers), "named": len(named)},
        )
    ]
    for c in containers:
        reason = c.get("reason")
        if not reason:
            continue
        deliberate = bool(c.get("deliberate"))  # opted out, or a database's port only
        checks.append(
            Check(
                "docker",
                "info" if deliberate else "warn",
                f"container {c.get('name')} has no route: it {reason}",
                None
                if deliberate
                else "see docs/docker.md (labels: devrouter.name, "
                "devrouter.port, devrouter.enable)",
                {"container": c.get("id"), "name": c.get("name"), "image": c.get("image")},
            )
        )
    return checks
