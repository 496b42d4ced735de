"""devrouter.core.state: the three sources of routes merged in order of precedence (config,
then `run`/stacks/aliases, then Docker), each clash reported in words, none resolved silently."""

from __future__ import annotations

from devrouter.config.schema import parse_config
from devrouter.core.model import ContainerRef, Route, Upstream
from devrouter.core.state import State


def docker(name: str, port: int, container: str) -> Route:
    ref = ContainerRef(container + "0" * 20, container, "img", "shop", "api")
    return Route(name, Upstream(port), source="docker", stack="shop", container=ref)


def test_precedence_and_the_words_of_each_clash() -> None:
    state = State(parse_config("routes:\n  api: 4001\n", "x.yaml", own_ports=()))
    state.set_dynamic(
        [
            Route("api", Upstream(5001), source="run", owner_pid=9),
            Route("web", Upstream(5002), source="run", owner_pid=9),
        ]
    )
    state.set_docker(
        [docker("api", 6001, "a1"), docker("web", 6002, "w1"), docker("blog", 6003, "b1")],
        ["route 'blog' from Docker container b2 clashes with ..."],
    )
    table = state.snapshot.table
    assert {n: r.upstream.port for n, r in table.exact.items()} == {
        "api": 4001,
        "web": 5002,
        "blog": 6003,
    }
    assert state.snapshot.conflicts == (
        "route 'api' from `devrouter run` (pid 9) clashes with the one in x.yaml; the config "
        "file's route is in use",
        "route 'api' from Docker container a1 clashes with the one in x.yaml; the config "
        "file's route is in use",
        "route 'web' from Docker container w1 clashes with the one from `devrouter run` "
        "(pid 9); the `devrouter run` route is in use",
        "route 'blog' from Docker container b2 clashes with ...",
    )


def test_a_reload_keeps_the_docker_routes_and_a_new_config_route_takes_their_name() -> None:
    state = State(parse_config("routes: {}\n", "x.yaml", own_ports=()))
    state.set_docker([docker("api.shop", 6001, "shop_api_1")])
    assert "api.shop" in state.snapshot.table.exact
    state.swap(parse_config("routes:\n  api.shop: 4001\n", "x.yaml", own_ports=()))
    assert state.snapshot.table.exact["api.shop"].upstream.port == 4001
    assert len(state.snapshot.conflicts) == 1
    state.swap(parse_config("routes: {}\n", "x.yaml", own_ports=()))
    assert state.snapshot.table.exact["api.shop"].upstream.port == 6001
    assert state.snapshot.conflicts == ()
    state.set_docker([])
    assert state.snapshot.table.routes == ()
