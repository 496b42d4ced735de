"""devrouter.core.routes: Host parsing, name lookup and path-prefix selection (pure functions)."""

from __future__ import annotations

import pytest

from devrouter.config.schema import parse_config
from devrouter.core.model import PathRoute, Route, Upstream
from devrouter.core.routes import (
    AmbiguousPath,
    HostError,
    RouteTable,
    parse_host,
    route_name,
    select_upstream,
)


def table(*names: str) -> RouteTable:
    return RouteTable.build(Route(n, Upstream(4000 + i)) for i, n in enumerate(names))


def looked_up(t: RouteTable, name: str) -> str | None:
    route = t.lookup(name)
    return route.name if route is not None else None


# --- parse_host ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("APP.localhost.:1355", "app.localhost"),
        ("app.localhost", "app.localhost"),
        ("app.localhost.", "app.localhost"),
        ("App.LocalHost:7355", "app.localhost"),
        ("a-b.shop.localhost", "a-b.shop.localhost"),
        ("localhost:7355", "localhost"),
        ("LOCALHOST", "localhost"),
        ("127.0.0.1:7355", "127.0.0.1"),
        ("[::1]:7355", "::1"),
        ("[::1]", "::1"),
        ("[0:0:0:0:0:0:0:1]:80", "::1"),
        ("a.localhost:1", "a.localhost"),
        ("a.localhost:65535", "a.localhost"),
    ],
)
def test_parse_host_normalises(value: str, host: str) -> None:
    assert parse_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "a.localhost, b.localhost",
        "a.localhost,b.localhost",
        "a.localhost admin",
        " a.localhost",
        "a.localhost\t",
        "evil@a.localhost",
        "user:pw@a.localhost",
        "a.localhost/\\:1",
        "a.localhost/x",
        "a.localhost\\x",
        "a.localhost?x",
        "a.localhost#x",
        "..a.localhost",
        ".a.localhost",
        "a..localhost",
        "a.localhost..",
        ".",
        "a%2elocalhost",
        "\u0430pp.localhost",  # Cyrillic a (U+0430)
        "app.localhost\u3002",  # ideographic full stop
        "",
        "a.localhost:9000:80",
        "a.localhost:",
        "a.localhost:1234567",
        "a.localhost:80a",
        "a.localhost:+80",
        "a.localhost: 80",
        ":80",
        "[::1",
        "[::1]x",
        "[::1]:",
        "[::1]:80:90",
        "[not-an-ip]:80",
        "[127.0.0.1]",
        "a.localhost\r\nX-Evil: 1",
        "a.localhost\x00",
    ],
)
def test_parse_host_rejects_malformed(value: str) -> None:
    with pytest.raises(HostError) as info:
        parse_host(value)
    assert info.value.status == 400
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("host", "name"),
    [
        ("api.localhost", "api"),
        ("a.b.shop.localhost", "a.b.shop"),
        ("localhost", None),
        ("127.0.0.1", None),
        ("::1", None),
        ("api.localhost.evil.com", None),
        ("apilocalhost", None),
        ("example.com", None),
    ],
)
def test_route_name(host: str, name: str | None) -> None:
    assert route_name(host) == name


def test_parse_host_then_lookup_end_to_end() -> None:
    config = parse_config("routes:\n  app: 4001\n  '*.shop': 4002\n", "t.yaml", own_ports=())
    t = RouteTable.build(config.routes)

    def resolve(value: str) -> int | None:
        name = route_name(parse_host(value))
        route = t.lookup(name) if name is not None else None
        return route.upstream.port if route is not None else None

    assert resolve("APP.localhost.:1355") == 4001
    assert resolve("app.localhost:6379") == 4001  # the port in Host never picks a backend
    assert resolve("X.Shop.Localhost") == 4002
    assert resolve("shop.localhost") is None
    assert resolve("app.localhost.example.com") is None
    assert resolve("localhost") is None


# --- RouteTable ---------------------------------------------------------------------------


def test_exact_name_beats_wildcard() -> None:
    t = table("*.shop", "x.shop", "shop")
    assert looked_up(t, "x.shop") == "x.shop"
    assert looked_up(t, "y.shop") == "*.shop"
    assert looked_up(t, "shop") == "shop"


def test_wildcard_matches_one_or_more_labels_but_not_the_bare_name() -> None:
    t = table("*.shop")
    assert looked_up(t, "x.shop") == "*.shop"
    assert looked_up(t, "a.b.shop") == "*.shop"
    assert looked_up(t, "shop") is None
    assert looked_up(t, "xshop") is None
    assert looked_up(t, "shop.x") is None
    assert looked_up(t, "x.shopping") is None


def test_longer_wildcard_wins_regardless_of_order() -> None:
    for names in (("*.shop", "*.a.shop"), ("*.a.shop", "*.shop")):
        t = table(*names)
        assert looked_up(t, "x.a.shop") == "*.a.shop"
        assert looked_up(t, "y.x.a.shop") == "*.a.shop"
        assert looked_up(t, "x.b.shop") == "*.shop"
        assert looked_up(t, "a.shop") == "*.shop"
        assert looked_up(t, "xa.shop") == "*.shop"


def test_unknown_name_is_none_and_names_are_exact() -> None:
    t = table("api", "web")
    assert looked_up(t, "api") == "api"
    assert looked_up(t, "ap") is None
    assert looked_up(t, "apix") is None
    assert looked_up(t, "x.api") is None  # a plain name is not a wildcard
    assert looked_up(RouteTable.build(()), "api") is None


def test_table_is_immutable() -> None:
    t = table("api", "*.shop")
    assert [r.name for r in t.routes] == ["*.shop", "api"]
    with pytest.raises(TypeError):
        t.exact["evil"] = t.routes[0]  # type: ignore[index]
    with pytest.raises(AttributeError):
        t.routes = ()  # type: ignore[misc]


# --- select_upstream ----------------------------------------------------------------------

DEFAULT = Upstream(5173)
API = Upstream(4001)
ADMIN = Upstream(4002)
V2 = Upstream(4003)

WEB = Route(
    "web",
    DEFAULT,
    paths=(
        PathRoute("/api/v2", V2),
        PathRoute("/api", API),
        PathRoute("/admin/", ADMIN),
    ),
)


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/api", API),
        ("/api/", API),
        ("/api/x", API),
        ("/api/x/y?z=1", API),
        ("/api?q", API),
        ("/api?q=/admin/x", API),
        ("/api#frag", DEFAULT),  # a fragment is never sent; '#' is just a byte here
        ("/apix", DEFAULT),
        ("/apix/y", DEFAULT),
        ("/ap", DEFAULT),
        ("/", DEFAULT),
        ("/API/x", DEFAULT),  # prefixes are case-sensitive, like paths
        ("/x/api", DEFAULT),
        ("/api/v2", V2),
        ("/api/v2/users", V2),
        ("/api/v20", API),
        ("/admin/", ADMIN),
        ("/admin/users", ADMIN),
        ("/admin", DEFAULT),  # a prefix ending in '/' needs the slash
    ],
)
def test_path_prefix_matches_on_segment_boundaries(target: str, upstream: Upstream) -> None:
    assert select_upstream(WEB, target) == upstream


def test_longest_prefix_wins_as_built_by_the_parser() -> None:
    config = parse_config(
        "routes:\n  web:\n    port: 5173\n    paths:\n      /api: 4001\n      /api/v2: 4003\n",
        "t.yaml",
        own_ports=(),
    )
    (web,) = config.routes
    assert select_upstream(web, "/api/v2/x").port == 4003
    assert select_upstream(web, "/api/v1/x").port == 4001
    assert select_upstream(web, "/other").port == 5173


def test_route_without_paths_always_uses_its_upstream() -> None:
    plain = Route("api", API)
    for target in ("/", "/anything", "/%61pi/x", "/x/../api/y", "//etc"):
        assert select_upstream(plain, target) is API


@pytest.mark.parametrize(
    "target",
    [
        "/%61pi/x",
        "/%61pi",
        "/%61%70%69/x",
        "/x/../api/y",
        "/x/%2e%2e/api/y",
        "/x/%2E%2E/api",
        "//api/x",
        "/./api/x",
        "/api/../admin/x",
        "/api/%2e%2e/admin/x",
        "/api/..",
        "/api/v2/../x",
    ],
)
def test_ambiguous_path_is_refused(target: str) -> None:
    with pytest.raises(AmbiguousPath) as info:
        select_upstream(WEB, target)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("/api/%20x", API),
        ("/api/a%2Fb", API),
        ("/api/../api/x", API),
        ("/api/x/../y", API),
        ("/x/../y", DEFAULT),
        ("/static/%2e%2e/x", DEFAULT),
        ("/%7Euser", DEFAULT),
        ("/x//y", DEFAULT),
        ("/api//x", API),
        ("/search?q=/x/../api/y", DEFAULT),
        ("/search?q=%61pi", DEFAULT),
        ("/%2561pi/x", DEFAULT),  # decodes once, to /%61pi/x: still not /api
    ],
)
def test_encoded_path_that_goes_to_the_same_place_is_allowed(
    target: str, upstream: Upstream
) -> None:
    assert select_upstream(WEB, target) == upstream


def test_encoded_path_is_allowed_when_every_route_is_the_same_backend() -> None:
    same = Route("web", API, paths=(PathRoute("/api", Upstream(4001)),))
    assert select_upstream(same, "/%61pi/x") == API
    assert select_upstream(same, "/x/../api/y") == API
