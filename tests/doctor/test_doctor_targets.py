"""doctor.targets: what to check, read from the router's table and /api/status; only
loopback addresses are kept."""

from __future__ import annotations

from devrouter.doctor import targets
from devrouter.doctor.targets import RouteTarget
from devrouter.services.locate import live_routes


def test_listens_on_is_read_from_the_routers_table() -> None:
    status = {
        "routes": [
            {"name": "web", "port": 4123, "source": "run", "listens_on": [8000, "x", True]},
            {"name": "api", "port": 4001, "source": "config"},
        ]
    }
    web, api = targets.targets_from_status(status) or []
    assert (web.source, web.listens_on) == ("run", (8000,))
    assert (api.source, api.listens_on) == ("config", ())
    live, _ = targets.targets_from_live(live_routes(status) or ())
    assert (live.source, live.listens_on, live.label) == ("run", (8000,), "web.localhost")


def test_targets_from_status_reads_documented_keys_and_stays_on_loopback() -> None:
    status = {
        "routes": [
            {"name": "api", "port": 4001, "target": "127.0.0.1:4001 or [::1]:4001"},
            {"name": "six", "port": 4002, "target": "http://[::1]:4002"},
            {"name": "odd", "port": 4003, "target": "http://192.168.1.5:4003"},
            {"name": "bad", "port": "x"},
            "junk",
        ]
    }
    got = targets.targets_from_status(status)
    assert got == [
        RouteTarget("api.localhost", "api", 4001, ("127.0.0.1", "::1")),
        RouteTarget("six.localhost", "six", 4002, ("::1",)),
        RouteTarget("odd.localhost", "odd", 4003, ("127.0.0.1", "::1")),
    ]
    assert targets.targets_from_status({}) is None


def test_targets_from_status_uses_hosts_and_paths_when_present() -> None:
    status = {
        "routes": [
            {
                "name": "web",
                "host": "web.localhost",
                "port": 5173,
                "target": "[::1]:5173",
                "hosts": ["::1", "10.0.0.1"],
                "paths": [{"prefix": "/api", "port": 4001, "target": "127.0.0.1:4001"}],
            }
        ]
    }
    assert targets.targets_from_status(status) == [
        RouteTarget("web.localhost", "web", 5173, ("::1",)),
        RouteTarget("web.localhost/api", "web", 4001, ("127.0.0.1",)),
    ]
