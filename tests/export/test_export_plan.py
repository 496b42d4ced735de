"""The export plan (devrouter.export.plan): a config and the options in, sorted names, path
routes, backends and gaps out; no I/O, tables of inputs."""

from __future__ import annotations

from typing import Any

import pytest
from conftest import make_config

from devrouter.export.plan import (
    ExportOptions,
    check_domain,
    check_host,
    comment_safe,
    duration,
    make_plan,
    slug,
    unique_slugs,
)


def test_names_come_exact_first_then_wildcards_with_the_most_labels() -> None:
    routes = {"b": 1, "*.x": 2, "a": 3, "*.y.x": 4, "c.x": 5, "*.z": 6}
    plan = make_plan(make_config(routes))
    assert [s.name for s in plan.sites] == ["a", "b", "c.x", "*.y.x", "*.x", "*.z"]


def test_path_routes_are_longest_first() -> None:
    paths = {"/a": 2, "/a/b/c": 3, "/": 4, "/a/b": 5}
    plan = make_plan(make_config({"web": {"port": 1, "paths": paths}}))
    assert [p.prefix for p in plan.sites[0].paths] == ["/a/b/c", "/a/b", "/a", "/"]
    assert [p.backend.port for p in plan.sites[0].paths] == [3, 5, 2, 4]


@pytest.mark.parametrize(
    ("backend", "upstream_host", "hosts"),
    [
        (4001, None, ("127.0.0.1", "::1")),
        ("localhost:4001", None, ("127.0.0.1", "::1")),
        ("http://127.0.0.1:4001", None, ("127.0.0.1",)),
        ("[::1]:4001", None, ("::1",)),
        ("127.0.0.2:4001", None, ("127.0.0.2",)),
        (4001, "app.internal", ("app.internal",)),
        ("[::1]:4001", "10.0.0.5", ("10.0.0.5",)),
        ("[::1]:4001", "fd00::5", ("fd00::5",)),
    ],
)
def test_upstream_host_replaces_every_loopback_host(
    backend: Any, upstream_host: str | None, hosts: tuple[str, ...]
) -> None:
    plan = make_plan(make_config({"api": backend}), ExportOptions(upstream_host=upstream_host))
    assert plan.sites[0].backend.hosts == hosts
    assert plan.sites[0].backend.port == 4001


@pytest.mark.parametrize(
    ("name", "domain", "host", "suffix"),
    [
        ("api", "localhost", "api.localhost", "api.localhost"),
        ("api", "dev.example.com", "api.dev.example.com", "api.dev.example.com"),
        ("*.shop", "dev.example.com", "*.shop.dev.example.com", "shop.dev.example.com"),
        ("admin.shop", "localhost", "admin.shop.localhost", "admin.shop.localhost"),
    ],
)
def test_the_domain_replaces_localhost(name: str, domain: str, host: str, suffix: str) -> None:
    plan = make_plan(make_config({name: 1}), ExportOptions(domain=domain))
    assert (plan.sites[0].host, plan.sites[0].suffix) == (host, suffix)


def test_slugs_are_unique_for_sites_and_backends() -> None:
    routes = {"a-b": 1, "a.b": 2, "*.a": {"target": "[::1]:3"}, "c": "127.0.0.1:3"}
    plan = make_plan(make_config(routes))
    assert {s.name: s.slug for s in plan.sites} == {
        "a-b": "a-b",
        "a.b": "a-b-2",
        "c": "c",
        "*.a": "wildcard-a",
    }
    assert sorted(b.slug for b in plan.backends) == ["1", "1-3", "127-0-0-1-3", "2"]


def test_a_backend_shared_by_routes_and_paths_is_one_backend() -> None:
    routes = {"api": 4001, "web": {"port": 5173, "paths": {"/api": 4001}}}
    plan = make_plan(make_config(routes))
    assert [b.port for b in plan.backends] == [4001, 5173]
    assert plan.sites[0].backend is plan.sites[1].paths[0].backend


@pytest.mark.parametrize(
    ("prefix", "exported"),
    [
        ("/api", True),
        ("/a-b_c.d~e/f%20g", True),
        ("/x;y=1,z", True),
        ("/a'b", True),
        ('/a"b', False),
        ("/a{b}", False),
        ("/a\\b", False),
        ("/a`b", False),
        ("/a<b>", False),
    ],
)
def test_a_prefix_that_no_target_can_hold_safely_is_a_gap(prefix: str, exported: bool) -> None:
    plan = make_plan(make_config({"web": {"port": 1, "paths": {prefix: 2}}}))
    assert bool(plan.sites[0].paths) == exported
    prefix_gaps = [g for g in plan.gaps if "path prefix" in g.text]
    assert bool(prefix_gaps) != exported
    if prefix_gaps:
        assert prefix_gaps[0].route == "web"


def test_access_says_where_the_secret_is_and_never_holds_it() -> None:
    config = make_config(
        {
            "api": 1,
            "docs": {"port": 2, "access": False},
            "admin": {"port": 3, "access": {"file": "~/admin-secret"}},
        },
        access={"env": "DEVROUTER_SECRET"},
    )
    plan = make_plan(config)
    where = {s.name: s.access.where if s.access else None for s in plan.sites}
    assert where == {"admin": "the file ~/admin-secret", "api": "$DEVROUTER_SECRET", "docs": None}


def test_limits_and_timeouts_come_from_the_route_or_the_top_level() -> None:
    config = make_config(
        {"a": 1, "b": {"port": 2, "timeout": 300, "max_connections": 9}}, timeout=5
    )
    plan = make_plan(config)
    assert [(s.timeout_s, s.max_connections) for s in plan.sites] == [(5.0, 512), (300.0, 9)]
    assert plan.max_connections_set
    assert not make_plan(make_config({"a": 1})).max_connections_set
    assert make_plan(make_config({"a": 1}, max_websocket_message_mib=8)).max_websocket_message_set


@pytest.mark.parametrize(("https", "gap"), [(True, True), ("redirect", True), (False, False)])
def test_https_on_devrouters_port_is_a_gap(https: Any, gap: bool) -> None:
    plan = make_plan(make_config({"a": 1}, https=https))
    assert any(g.text.startswith("HTTPS") for g in plan.gaps) == gap


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dev.example.com", "dev.example.com"),
        ("Dev.Example.COM.", "dev.example.com"),
        ("localhost", "localhost"),
        ("a b", None),
        ("x.com:80", None),
        ("*.x.com", None),
        ("-x.com", None),
        ("", None),
    ],
)
def test_check_domain(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="--domain"):
            check_domain(text)
    else:
        assert check_domain(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("10.0.0.5", "10.0.0.5"),
        ("[fd00::5]", "fd00::5"),
        ("FD00:0::5", "fd00::5"),
        ("App.Internal", "app.internal"),
        ("app.internal:80", None),
        ("http://app", None),
        ("a b", None),
        ('a"b', None),
        ("a;b", None),
    ],
)
def test_check_host(text: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(ValueError, match="--upstream-host"):
            check_host(text, "--upstream-host")
    else:
        assert check_host(text, "--upstream-host") == expected


@pytest.mark.parametrize(
    ("seconds", "text"), [(60.0, "60s"), (0.5, "500ms"), (1.25, "1250ms"), (0.0001, "1ms")]
)
def test_duration(seconds: float, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [("plain", "plain"), ("A\nB", "A\\nB"), ("x\r\ny", "x\\r\\ny"), ("t\tab", "t\\tab")],
)
def test_comment_safe_keeps_a_value_on_one_line(text: str, expected: str) -> None:
    assert comment_safe(text) == expected


def test_slug_and_unique_slugs() -> None:
    assert [slug(s) for s in ("*.shop", "admin.shop", "::1", "My-App")] == [
        "wildcard-shop",
        "admin-shop",
        "1",
        "my-app",
    ]
    assert unique_slugs(["a", "a", "b", "a"]) == ["a", "a-2", "b", "a-3"]
