"""devrouter.docker.naming by tables: a container in, its names and target (or the reason it
has none) out; and the clashes among containers."""

from __future__ import annotations

from typing import Any

import pytest

from devrouter.core.model import DockerSettings, Upstream
from devrouter.docker.containers import Container, PublishedPort
from devrouter.docker.naming import place, plan

BOTH = ("127.0.0.1", "::1")
V4 = ("127.0.0.1",)
V6 = ("::1",)
DEFAULT = DockerSettings()


def compose(project: str, service: str, number: int = 1, **labels: str) -> dict[str, str]:
    return {
        "com.docker.compose.project": project,
        "com.docker.compose.service": service,
        "com.docker.compose.container-number": str(number),
        "com.docker.compose.oneoff": "False",
        **labels,
    }


def pub(private: int, public: int | None, ip: str = "127.0.0.1", proto: str = "tcp") -> Any:
    return PublishedPort(private, public, ip if public is not None else "", proto)


def box(
    name: str = "web",
    ports: tuple[PublishedPort, ...] = (),
    labels: dict[str, str] | None = None,
    state: str = "running",
    addresses: tuple[str, ...] = (),
    created: int = 0,
) -> Container:
    return Container(
        id=f"{name}0123456789abcdef",
        name=name,
        image="local/busybox",
        state=state,
        labels=labels or {},
        ports=ports,
        addresses=addresses,
        created=created,
    )


# (container, expected names, expected upstream or None, a word the reason must contain)
NAMES = [
    pytest.param(
        box("blog", (pub(80, 32768),)), ("blog",), Upstream(32768, V4), None, id="standalone"
    ),
    pytest.param(
        box("shop_api_1", (pub(80, 32769),), compose("shop", "api")),
        ("api.shop",),
        Upstream(32769, V4),
        None,
        id="compose v1 name",
    ),
    pytest.param(
        box("shop-api-1", (pub(80, 32769),), compose("shop", "api")),
        ("api.shop",),
        Upstream(32769, V4),
        None,
        id="compose v2 name",
    ),
    pytest.param(
        box("shop-api-2", (pub(80, 32770),), compose("shop", "api", 2)),
        ("api-2.shop",),
        Upstream(32770, V4),
        None,
        id="scaled second container",
    ),
    pytest.param(
        box("My_Shop-my_api-1", (pub(80, 1),), compose("My_Shop", "my_api")),
        ("my-api.my-shop",),
        Upstream(1, V4),
        None,
        id="underscores and capitals",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.name": "docs, Manual.localhost ,docs"}),
        ("docs", "manual"),
        Upstream(2, V4),
        None,
        id="label names, normalised, once each",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.name": "*.preview"}),
        ("*.preview",),
        Upstream(2, V4),
        None,
        id="label wildcard",
    ),
    pytest.param(
        box("a", (pub(80, 2),), compose("shop", "api", **{"devrouter.name": "shop"})),
        ("shop",),
        Upstream(2, V4),
        None,
        id="label beats compose",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.name": "bad_name!"}),
        (),
        None,
        "not a name",
        id="bad label",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.name": " , "}), (), None, "empty", id="empty label"
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.name": "devrouter"}),
        (),
        None,
        "devrouter's own",
        id="reserved label",
    ),
    pytest.param(box("devrouter", (pub(80, 2),)), (), None, "own pages", id="reserved name"),
    pytest.param(
        box("x.devrouter", (pub(80, 2),)), (), None, "own pages", id="under the reserved name"
    ),
    pytest.param(
        box("devrouter_web_1", (pub(80, 2),), compose("devrouter", "web")),
        (),
        None,
        "own pages",
        id="a compose project named devrouter",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.port": "\u00b2"}),
        ("a",),
        None,
        "not a port number",
        id="a port label of a superscript digit",
    ),
    pytest.param(
        box(
            "shop_api_1",
            (pub(80, 2),),
            compose("shop", "api", **{"com.docker.compose.container-number": "\u00b9"}),
        ),
        ("api.shop",),
        Upstream(2, V4),
        None,
        id="a container number that is not ASCII counts as the first",
    ),
    pytest.param(
        box("a", (pub(80, 2),), {"devrouter.enable": "false"}), (), None, "opted out", id="opt out"
    ),
    pytest.param(
        box(
            "shop_api_run_1",
            (pub(80, 2),),
            {**compose("shop", "api"), "com.docker.compose.oneoff": "True"},
        ),
        (),
        None,
        "one-off",
        id="compose run",
    ),
    pytest.param(box("quiet"), ("quiet",), None, "publishes no port", id="nothing published"),
    pytest.param(
        box("lan", (pub(80, 9000, "192.168.1.5"),)),
        ("lan",),
        None,
        "192.168.1.5:9000",
        id="published on a LAN address only",
    ),
    pytest.param(
        box("both", (pub(80, 32768, "0.0.0.0"), pub(80, 32768, "::"))),
        ("both",),
        Upstream(32768, BOTH),
        None,
        id="0.0.0.0 and :: on one port",
    ),
    pytest.param(
        box("split", (pub(80, 32768, "0.0.0.0"), pub(80, 32999, "::"))),
        ("split",),
        Upstream(32768, V4),
        None,
        id="two families, two ports: IPv4's",
    ),
    pytest.param(box("six", (pub(80, 5, "::1"),)), ("six",), Upstream(5, V6), None, id="::1 only"),
    pytest.param(
        box("db", (pub(5432, 5433, "0.0.0.0"),), compose("shop", "db")),
        ("db.shop",),
        None,
        "PostgreSQL",
        id="only a database port",
    ),
    pytest.param(
        box("db", (pub(5432, 5433),), compose("shop", "db", **{"devrouter.port": "5432"})),
        ("db.shop",),
        Upstream(5433, V4),
        None,
        id="the label routes a database port anyway",
    ),
    pytest.param(
        box("multi", (pub(9000, 1), pub(8080, 2), pub(5432, 3))),
        ("multi",),
        Upstream(2, V4),
        None,
        id="several: a preferred HTTP port wins",
    ),
    pytest.param(
        box("multi", (pub(9001, 1), pub(9000, 2))),
        ("multi",),
        Upstream(2, V4),
        None,
        id="several: the lowest otherwise",
    ),
    pytest.param(
        box("multi", (pub(80, 1), pub(8080, 2)), {"devrouter.port": "8080"}),
        ("multi",),
        Upstream(2, V4),
        None,
        id="the port label chooses",
    ),
    pytest.param(
        box("multi", (pub(80, 1),), {"devrouter.port": "3000"}),
        ("multi",),
        None,
        "does not publish port 3000",
        id="the port label names an unpublished port",
    ),
    pytest.param(
        box("multi", (pub(80, 1),), {"devrouter.port": "http"}),
        ("multi",),
        None,
        "not a port number",
        id="the port label is not a number",
    ),
    pytest.param(
        box("udp", (pub(53, 53, proto="udp"),)), ("udp",), None, "publishes no port", id="udp only"
    ),
    pytest.param(
        box("paused", (pub(80, 1),), state="paused"), ("paused",), None, "paused", id="paused"
    ),
]


@pytest.mark.parametrize(("container", "names", "upstream", "reason"), NAMES)
def test_placement(
    container: Container, names: tuple[str, ...], upstream: Upstream | None, reason: str | None
) -> None:
    p = place(container, DEFAULT)
    assert p.names == names
    assert p.upstream == upstream
    if reason is None:
        assert p.reason is None and p.routed
    else:
        assert p.reason is not None and reason in p.reason, p.reason
        assert not p.routed


def test_several_ports_say_which_was_chosen() -> None:
    p = place(box("multi", (pub(9000, 1), pub(8080, 2))), DEFAULT)
    assert p.note is not None and "using 8080" in p.note and "devrouter.port" in p.note


def test_only_labelled_names_only_labelled_containers() -> None:
    only = DockerSettings(only_labelled=True)
    assert "only_labelled" in (place(box("a", (pub(80, 1),)), only).reason or "")
    labelled = place(box("a", (pub(80, 1),), {"devrouter.enable": "true"}), only)
    assert labelled.routed and labelled.names == ("a",)
    assert place(box("a", (pub(80, 1),), {"devrouter.name": "x"}), only).names == ("x",)


def test_container_addresses_reach_a_container_that_publishes_nothing() -> None:
    inside = DockerSettings(container_addresses=True)
    exposed = box("q", (pub(3000, None),), addresses=("172.18.0.2",))
    p = place(exposed, inside)
    assert p.upstream == Upstream(3000, ("172.18.0.2",)) and p.routed
    assert p.note is not None and "own address" in p.note
    # off (the default), the reason offers it
    assert "container_addresses" in (place(exposed, DEFAULT).reason or "")
    # nothing exposed: the port must be named
    bare = place(box("q", addresses=("172.18.0.2",)), inside)
    assert bare.reason is not None and "devrouter.port" in bare.reason
    labelled = place(box("q", labels={"devrouter.port": "8000"}, addresses=("172.18.0.2",)), inside)
    assert labelled.upstream == Upstream(8000, ("172.18.0.2",))


def test_plan_routes_running_containers_and_the_older_keeps_a_clashing_name() -> None:
    old = box("old", (pub(80, 1),), {"devrouter.name": "docs"}, created=100)
    new = box("new", (pub(80, 2),), {"devrouter.name": "docs,new"}, created=200)
    gone = box("gone", (pub(80, 3),), state="exited")
    result = plan([new, gone, old], DEFAULT, timeout_s=7.0)
    assert [p.container.name for p in result.placements] == ["old", "new"]
    assert [(r.name, r.upstream.port) for r in result.routes] == [("docs", 1), ("new", 2)]
    assert result.conflicts == (
        "route 'docs' from Docker container new clashes with the one from Docker container "
        "old; the older container's route is in use",
    )
    route = result.routes[0]
    assert route.source == "docker" and route.timeout_s == 7.0
    assert route.container is not None and route.container.name == "old"


def test_plan_carries_the_compose_project_as_the_stack() -> None:
    result = plan([box("shop_api_1", (pub(80, 1),), compose("shop", "api"))], DEFAULT, 60.0)
    (route,) = result.routes
    assert route.stack == "shop"
    assert route.container is not None
    assert (route.container.project, route.container.service) == ("shop", "api")
    assert route.container.short_id == "shop_api_10123456789abcdef"[:12]


def test_deliberate_says_which_containers_are_meant_to_have_no_route() -> None:
    only = DockerSettings(only_labelled=True)
    meant = [
        place(box("a", (pub(80, 1),), {"devrouter.enable": "false"}), DEFAULT),
        place(box("a", (pub(80, 1),)), only),
        place(box("db", (pub(5432, 5433),)), DEFAULT),
    ]
    assert all(p.deliberate and not p.routed for p in meant)
    unmeant = [
        place(box("quiet"), DEFAULT),
        place(box("a", (pub(80, 1),), {"devrouter.port": "3000"}), DEFAULT),
        place(box("a", (pub(80, 1),)), DEFAULT),
    ]
    assert not any(p.deliberate for p in unmeant)
