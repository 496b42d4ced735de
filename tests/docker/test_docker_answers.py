"""devrouter.docker.containers and .naming on the real Engine's own answers, recorded from
Docker Engine 20.10 (tests/docker/engine_answers/, README there): the JSON read as records,
and the names, targets and reasons they give."""

from __future__ import annotations

import json
from pathlib import Path

from devrouter.core.model import DockerSettings, Upstream
from devrouter.docker.containers import containers_from_list, event_matters
from devrouter.docker.naming import plan

ANSWERS = Path(__file__).parent / "engine_answers"


def test_the_recorded_list_gives_the_documented_names() -> None:
    containers = containers_from_list(json.loads((ANSWERS / "containers_json.json").read_text()))
    by_name = {c.name: c for c in containers}
    assert by_name["old"].state == "exited"
    api = by_name["shop_api_1"]
    assert (api.project, api.service, api.number, api.health) == ("shop", "api", 1, "healthy")
    assert api.addresses and api.id.startswith(api.id[:12]) and len(api.id) == 64

    result = plan(containers, DockerSettings(), 60.0)
    routed = {r.name: r.upstream for r in result.routes}
    web_ports = {p.public for p in by_name["shop_web_1"].ports}
    assert routed["api.shop"] == Upstream(api.ports[0].public or 0, ("127.0.0.1",))
    # web published "8080" on 0.0.0.0 and ::; this Engine gave the two families their own
    # host ports, so the IPv4 one is used
    v4 = next(p.public for p in by_name["shop_web_1"].ports if p.ip == "0.0.0.0")
    assert routed["web.shop"].port == v4 and v4 in web_ports
    assert routed["blog"].hosts == ("127.0.0.1",)
    docs_8080 = next(p.public for p in by_name["docs"].ports if p.private == 8080)
    assert routed["docs"] == routed["manual"] == Upstream(docs_8080 or 0, ("127.0.0.1",))
    assert set(routed) == {"api.shop", "web.shop", "blog", "docs", "manual"}

    reasons = {p.container.name: p.reason for p in result.placements if p.reason}
    assert set(reasons) == {"quiet", "hidden"}
    assert (reasons["quiet"] or "").startswith("publishes no port")
    assert (reasons["hidden"] or "").startswith("opted out")
    assert result.conflicts == ()


def test_the_recorded_events_that_change_routes() -> None:
    lines = (ANSWERS / "events.jsonl").read_text().splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    kept = [e["Action"] for e in events if event_matters(e)]
    ignored = [e["Action"] for e in events if not event_matters(e)]
    assert "rename" in kept and "die" in kept and "start" in kept
    assert "health_status: healthy" in kept
    assert ignored and all(a.startswith("exec_") for a in ignored)
    assert not event_matters({"Type": "network", "Action": "connect"})
