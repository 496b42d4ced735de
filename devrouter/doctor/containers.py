"""The verdicts on Docker: is the Engine watched, and which running containers have no name
and why. Pure: the running router's `docker` report (/api/status) in, `Check`s out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .report import Check

#: The reason text of a machine with no Engine socket at all (devrouter.docker.watcher).
_NO_SOCKET = "no Docker Engine socket"


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
    if state != "connected":
        if detail.startswith(_NO_SOCKET):
            return [Check("docker", "info", f"no Docker Engine here ({detail})", None, data)]
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
        # opting out, and publishing only a database port, are what the user meant
        opted_out = any(w in str(reason) for w in ("opted out", "only_labelled", "not HTTP"))
        checks.append(
            Check(
                "docker",
                "info" if opted_out else "warn",
                f"container {c.get('name')} has no route: it {reason}",
                None
                if opted_out
                else "see docs/docker.md (labels: devrouter.name, "
                "devrouter.port, devrouter.enable)",
                {"container": c.get("id"), "name": c.get("name"), "image": c.get("image")},
            )
        )
    return checks
