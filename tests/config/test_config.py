"""devrouter.config.schema: the YAML schema, its validation and the wording of its errors.

Every rejected config must name the file, the line and (when there is one) the route, in the
form `FILE:LINE: route 'NAME': message`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterable

import pytest

from devrouter.config.schema import parse_config
from devrouter.core.addresses import listen_addrs, parse_listen, parse_target
from devrouter.core.errors import ConfigError
from devrouter.core.model import (
    DEFAULT_PORT,
    DEFAULT_TIMEOUT_S,
    Config,
    DockerSettings,
    ListenAddr,
    PathRoute,
    Upstream,
)
from devrouter.core.names import normalize_name

SRC = "/home/dev/project/devrouter.yaml"
BOTH = ("127.0.0.1", "::1")

SPEC_EXAMPLE = """\
listen: 7355            # optional
routes:
  api: 4001             # api.localhost -> 127.0.0.1:4001
  web:
    port: 5173
    paths:              # path-prefix routes inside one name; longest prefix wins
      /api: 4001
  "*.shop": 4200        # any subdomain of shop.localhost
  docs:
    target: http://127.0.0.1:8000   # explicit target; loopback hosts only
"""


def parse(text: str, own_ports: Iterable[int] | None = None) -> Config:
    return parse_config(textwrap.dedent(text), SRC, own_ports)


def rejected(text: str, own_ports: Iterable[int] | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        parse(text, own_ports)
    return info.value


def assert_names(err: ConfigError, line: int | None, route: str | None = None) -> None:
    """The error names the file, the line and the route, in the documented format."""
    text = str(err)
    assert err.source == SRC, text
    assert err.line == line, text
    where = f"{SRC}:{line}: " if line is not None else f"{SRC}: "
    assert text.startswith(where), text
    if route is not None:
        assert err.route == route, text
        assert text.startswith(f"{where}route '{route}': "), text
    assert err.message and err.message in text


# --- the example from the spec ------------------------------------------------------------


def test_spec_example_parses_into_the_documented_table() -> None:
    config = parse_config(SPEC_EXAMPLE, SRC)
    assert config.source == SRC
    assert config.listen == (ListenAddr("127.0.0.1", 7355), ListenAddr("::1", 7355))
    assert config.timeout_s == DEFAULT_TIMEOUT_S
    assert [r.name for r in config.routes] == ["api", "web", "*.shop", "docs"]
    api, web, shop, docs = config.routes

    assert api.upstream == Upstream(4001, BOTH)
    assert api.paths == ()
    assert api.host == "api.localhost"
    assert api.line == 3

    assert web.upstream == Upstream(5173, BOTH)
    assert web.paths == (PathRoute("/api", Upstream(4001, BOTH)),)
    assert web.line == 4

    assert shop.upstream == Upstream(4200, BOTH)
    assert shop.host == "*.shop.localhost"
    assert shop.line == 8

    assert docs.upstream == Upstream(8000, ("127.0.0.1",))
    assert docs.line == 9
    assert all(r.timeout_s == DEFAULT_TIMEOUT_S for r in config.routes)


def test_paths_are_ordered_longest_prefix_first() -> None:
    config = parse(
        """\
        routes:
          web:
            port: 5173
            paths:
              /a: 4001
              /api/v2: http://127.0.0.1:4002
              /: 4003
              /api:
                port: 4004
              /api/v2/admin:
                target: http://[::1]:4005
        """
    )
    (web,) = config.routes
    assert [p.prefix for p in web.paths] == ["/api/v2/admin", "/api/v2", "/api", "/a", "/"]
    ups = {p.prefix: p.upstream for p in web.paths}
    assert ups["/a"] == Upstream(4001, BOTH)
    assert ups["/api/v2"] == Upstream(4002, ("127.0.0.1",))
    assert ups["/"] == Upstream(4003, BOTH)
    assert ups["/api"] == Upstream(4004, BOTH)
    assert ups["/api/v2/admin"] == Upstream(4005, ("::1",))


def test_config_is_frozen() -> None:
    config = parse_config(SPEC_EXAMPLE, SRC)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes = ()  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.routes[0].upstream = Upstream(1)  # type: ignore[misc]
    assert isinstance(config.routes, tuple)


@pytest.mark.parametrize("text", ["routes:\n", "routes: {}\n", "{}\n", "timeout: 5\n"])
def test_no_routes_is_a_valid_empty_table(text: str) -> None:
    assert parse(text).routes == ()


def test_quoted_port_and_aliases_are_plain_values() -> None:
    config = parse(
        """\
        routes:
          api: "4001"
          web: &p 4002
          www: *p
        """
    )
    assert {r.name: r.upstream.port for r in config.routes} == {
        "api": 4001,
        "web": 4002,
        "www": 4002,
    }


# --- not a mapping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "route"),
    [
        ("- api\n- web\n", 1, None),
        ("just some words\n", 1, None),
        ("# header\nroutes:\n  - api: 4001\n", 3, None),
        ("routes: 4001\n", 1, None),
        ("routes:\n  web: 4000\n  api: [4001]\n", 3, "api"),
        ("routes:\n  api:\n    port: 4001\n    paths: [/x]\n", 4, "api"),
        ("routes:\n  api:\n    port: 4001\n    paths:\n      /x: [1]\n", 5, "api"),
        ("routes:\n  api:\n    port: [4001]\n", 3, "api"),
    ],
)
def test_wrong_shape_is_rejected_with_line(text: str, line: int, route: str | None) -> None:
    err = rejected(text)
    assert_names(err, line, route)


# --- unknown keys -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "route", "key", "hint"),
    [
        ("route:\n  api: 4001\n", 1, None, "route", "routes"),
        ("listen: 7355\nlistne: 7356\nroutes: {}\n", 2, None, "listne", "listen"),
        ("routes: {}\ntimout: 5\n", 2, None, "timout", "timeout"),
        ("routes:\n  api:\n    prot: 4001\n", 3, "api", "prot", "port"),
        ("routes:\n  api:\n    port: 4001\n    path:\n      /x: 1\n", 4, "api", "path", "paths"),
        (
            "routes:\n  web: 1\n  api:\n    targte: http://127.0.0.1:1\n",
            4,
            "api",
            "targte",
            "target",
        ),
        ("routes:\n  api:\n    port: 4001\n    timeot: 3\n", 4, "api", "timeot", "timeout"),
        (
            "routes:\n  api:\n    port: 4001\n    paths:\n      /x:\n        prt: 1\n",
            6,
            "api",
            "prt",
            "port",
        ),
    ],
)
def test_unknown_key_suggests_the_right_one(
    text: str, line: int, route: str | None, key: str, hint: str
) -> None:
    err = rejected(text)
    assert_names(err, line, route)
    assert f"'{key}'" in str(err)
    assert f"did you mean '{hint}'" in str(err)


def test_unknown_key_without_a_close_match_lists_the_keys() -> None:
    err = rejected("routes:\n  api:\n    zzzzzz: 1\n")
    assert_names(err, 3, "api")
    assert "'zzzzzz'" in str(err)
    for key in ("port", "target", "paths", "timeout"):
        assert key in err.message


# --- ports ------------------------------------------------------------------------------


BAD_PORTS = ["0", "70000", "65536", "-1", "abc", '"abc"', "true", "yes", "4001.5", "null", "''"]


@pytest.mark.parametrize("value", BAD_PORTS)
def test_bad_port_as_route_value(value: str) -> None:
    err = rejected(f"routes:\n  web: 4000\n  api: {value}\n")
    assert_names(err, 3, "api")


@pytest.mark.parametrize("value", BAD_PORTS)
def test_bad_port_under_port_key(value: str) -> None:
    err = rejected(f"routes:\n  web: 4000\n  api:\n    timeout: 5\n    port: {value}\n")
    assert_names(err, 5, "api")


@pytest.mark.parametrize("value", BAD_PORTS)
def test_bad_port_in_paths(value: str) -> None:
    err = rejected(
        f"routes:\n  api:\n    port: 4000\n    paths:\n      /a: 4001\n      /b: {value}\n"
    )
    assert_names(err, 6, "api")


@pytest.mark.parametrize("value", ["0", "70000", "abc"])
def test_bad_port_in_target(value: str) -> None:
    err = rejected(f"routes:\n  api: http://127.0.0.1:{value}\n")
    assert_names(err, 2, "api")


@pytest.mark.parametrize("port", [1, 65535])
def test_port_range_edges_are_accepted(port: int) -> None:
    config = parse(f"routes:\n  api: {port}\n  web:\n    port: {port}\n", own_ports=())
    assert [r.upstream.port for r in config.routes] == [port, port]


def test_port_and_target_together_or_neither() -> None:
    both = rejected("routes:\n  api:\n    port: 4001\n    target: http://127.0.0.1:4002\n")
    assert_names(both, 4, "api")
    neither = rejected("routes:\n  web: 1\n  api:\n    timeout: 3\n")
    assert neither.line in (3, 4), str(neither)  # the route's name or its body
    assert_names(neither, neither.line, "api")
    null = rejected("routes:\n  web: 1\n  api:\n")
    assert_names(null, 3, "api")


# --- targets ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1:80",
        "http://example.com:80",
        "http://192.168.1.20:3000",
        "http://0.0.0.0:8000",
        "http://[::]:8000",
        "http://[2001:db8::1]:8000",
        "http://127.0.0.1.nip.io:80",
        "http://localhost.example.com:80",
        "10.0.0.1:80",
    ],
)
@pytest.mark.parametrize("form", ["scalar", "key"])
def test_non_loopback_target_is_refused(target: str, form: str) -> None:
    if form == "scalar":
        err = rejected(f"routes:\n  web: 4000\n  api: {target}\n")
        assert_names(err, 3, "api")
    else:
        err = rejected(f"routes:\n  web: 4000\n  api:\n    timeout: 1\n    target: {target}\n")
        assert_names(err, 5, "api")
    assert target in str(err)


@pytest.mark.parametrize(
    "target",
    [
        "https://127.0.0.1:8443",
        "ws://127.0.0.1:8000",
        "ftp://127.0.0.1:21",
        "http://127.0.0.1:8000/api",
        "http://127.0.0.1:8000/api/",
        "http://127.0.0.1:8000?x=1",
        "http://127.0.0.1:8000#frag",
        "http://user:pw@127.0.0.1:8000",
        "http://127.0.0.1",
        "http://",
    ],
)
def test_unusable_target_is_refused(target: str) -> None:
    err = rejected(f"routes:\n  api:\n    port: 4000\n    paths:\n      /x: {target}\n")
    assert_names(err, 5, "api")


@pytest.mark.parametrize(
    ("target", "upstream"),
    [
        ("http://127.0.0.1:8000", Upstream(8000, ("127.0.0.1",))),
        ("HTTP://127.0.0.1:8000/", Upstream(8000, ("127.0.0.1",))),
        ("127.0.0.1:8000", Upstream(8000, ("127.0.0.1",))),
        ("http://127.0.0.2:8000", Upstream(8000, ("127.0.0.2",))),
        ("http://[::1]:8000", Upstream(8000, ("::1",))),
        ("http://localhost:8000", Upstream(8000, BOTH)),
        ("8000", Upstream(8000, BOTH)),
    ],
)
def test_loopback_targets(target: str, upstream: Upstream) -> None:
    assert parse_target(target) == upstream
    config = parse(f'routes:\n  api:\n    target: "{target}"\n')
    assert config.routes[0].upstream == upstream


@pytest.mark.parametrize(
    "target",
    [
        "http://10.0.0.1:80",
        "http://example.com:80",
        "https://127.0.0.1:1",
        "http://127.0.0.1:1/x",
        "http://127.0.0.1:0",
    ],
)
def test_parse_target_raises_value_error(target: str) -> None:
    with pytest.raises(ValueError):
        parse_target(target)


# --- duplicates -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("first", "second", "name"),
    [
        ("api", "API", "api"),
        ("api", "api.", "api"),
        ("api", "Api.LocalHost.", "api"),
        ("api", "api.localhost", "api"),
        ('"*.shop"', '"*.SHOP."', "*.shop"),
        ("shop.api", "SHOP.Api", "shop.api"),
    ],
)
def test_duplicate_names_after_normalisation(first: str, second: str, name: str) -> None:
    err = rejected(f"routes:\n  {first}: 4001\n  web: 4003\n  {second}: 4002\n")
    assert_names(err, 4, name)
    assert "line 2" in str(err)


def test_same_key_twice_is_not_silently_merged() -> None:
    # yaml.safe_load would keep only the second value; the route on line 2 would vanish.
    err = rejected("routes:\n  api: 4001\n  web: 4003\n  api: 4002\n")
    assert_names(err, 4, "api")
    assert "line 2" in str(err)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("routes:\n  a: 1\nroutes:\n  b: 2\n", 3),
        ("listen: 8000\nroutes: {}\nlisten: 8001\n", 3),
        ("routes:\n  api:\n    port: 1\n    port: 2\n", 4),
        ("routes:\n  api:\n    port: 1\n    paths:\n      /x: 2\n      /x: 3\n", 6),
    ],
)
def test_duplicate_keys_anywhere_are_rejected(text: str, line: int) -> None:
    err = rejected(text)
    assert err.line == line, str(err)
    assert str(err).startswith(f"{SRC}:{line}: ")


# --- routes into the router itself -----------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        " 7355",
        " http://127.0.0.1:7355",
        " http://localhost:7355",
        "\n    timeout: 5\n    port: 7355",
        "\n    timeout: 5\n    target: http://[::1]:7355",
    ],
    ids=["port", "target", "localhost-target", "port-key", "target-key"],
)
def test_route_to_default_own_port_is_refused(body: str) -> None:
    text = f"routes:\n  web: 4000\n  api:{body}\n"
    err = rejected(text)
    line = len(text.splitlines())  # the line that names the port
    assert_names(err, line, "api")
    assert "7355" in str(err)


def test_path_route_to_own_port_names_the_path_line() -> None:
    err = rejected(
        "routes:\n  api:\n    port: 4000\n    paths:\n      /a: 4001\n      /loop: 7355\n"
    )
    assert_names(err, 6, "api")


def test_own_ports_come_from_listen_when_not_given() -> None:
    err = rejected("listen: 8000\nroutes:\n  api: 8000\n")
    assert_names(err, 3, "api")
    err = rejected("listen: [8000, '127.0.0.1:8001']\nroutes:\n  api: 4000\n  web: 8001\n")
    assert_names(err, 4, "web")
    # 7355 is not the router's port when it listens elsewhere
    config = parse("listen: 8000\nroutes:\n  api: 7355\n")
    assert config.routes[0].upstream.port == DEFAULT_PORT


def test_explicit_own_ports_override_the_file() -> None:
    err = rejected("routes:\n  api: 9000\n", own_ports=[9000])
    assert_names(err, 2, "api")
    err = rejected("listen: 7355\nroutes:\n  api: 9000\n", own_ports={9000, 9001})
    assert_names(err, 3, "api")
    assert parse("routes:\n  api: 7355\n", own_ports=[9000]).routes[0].upstream.port == 7355
    assert parse("routes:\n  api: 7355\n", own_ports=()).routes[0].upstream.port == 7355


# --- names ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["devrouter", "DEVROUTER", "devrouter.", "devrouter.localhost"])
def test_reserved_name(name: str) -> None:
    err = rejected(f"routes:\n  api: 4000\n  {name}: 4001\n")
    assert err.line == 3, str(err)
    assert "reserved" in str(err)
    assert str(err).startswith(f"{SRC}:3: route ")


@pytest.mark.parametrize(
    "name",
    [
        "a_b",
        "-api",
        "api-",
        "a..b",
        "'*'",
        "'*.'",
        "'a.*.b'",
        "'**.x'",
        "'*.*.x'",
        "a b",
        "ápi",
        "api/x",
        "'api:80'",
        "'@api'",
        "''",
        "x" * 64,
        "1.5",
    ],
)
def test_invalid_names(name: str) -> None:
    err = rejected(f"routes:\n  ok: 4000\n  {name}: 4001\n")
    assert err.line == 3, str(err)
    assert str(err).startswith(f"{SRC}:3: ")


@pytest.mark.parametrize(
    ("raw", "name"),
    [
        ("a", "a"),
        ("a-b", "a-b"),
        ("shop.api", "shop.api"),
        ("'*.shop'", "*.shop"),
        ("'*.a.shop'", "*.a.shop"),
        ("x1", "x1"),
        ("API", "api"),
        ("web.localhost", "web"),
        ("x" * 63, "x" * 63),
    ],
)
def test_valid_names(raw: str, name: str) -> None:
    config = parse(f"routes:\n  {raw}: 4001\n")
    assert [r.name for r in config.routes] == [name]


@pytest.mark.parametrize(
    ("raw", "name"),
    [("API.localhost.", "api"), (" Web ", "web"), ("*.Shop.LOCALHOST", "*.shop"), ("a.", "a")],
)
def test_normalize_name(raw: str, name: str) -> None:
    assert normalize_name(raw) == name


# --- empty files and YAML errors ----------------------------------------------------------


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing but a comment\n", "   \n"])
def test_empty_file_is_an_error_naming_the_file(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    assert str(info.value).startswith(f"{SRC}")
    assert "empty" in str(info.value)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("routes:\n  api: 4001\n   web: [\n", 3),
        ("routes:\n  api: 4001\n  web: 4002\n\tdocs: 8000\n", 4),
        ("routes:\n  api: 4001\n web: 4001\n", 3),
        ('routes:\n  api: 4001\n  web: "abc\n', 4),
        ("routes:\n  api: [1, 2\n  web: 4002\n", 3),
        ("routes:\n  api: *undefined\n", 2),
    ],
)
def test_yaml_syntax_error_names_its_line(text: str, line: int) -> None:
    err = rejected(text)
    assert err.line is not None
    # YAML reports the line where it noticed the problem; for these inputs that is exact
    assert err.line == line, str(err)
    assert str(err).startswith(f"{SRC}:{line}: ")
    assert "YAML" in str(err)


# --- unsafe YAML --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        '!!python/object/apply:os.system ["id"]\n',
        'routes:\n  api: !!python/object/apply:os.system ["id"]\n',
        'routes:\n  api:\n    port: !!python/object/apply:os.system ["id"]\n',
        "routes:\n  api: !!python/object/apply:os.system\n    args: [id]\n",
        "routes:\n  api:\n    target: !!python/name:os.system\n",
        "routes:\n  api: !!python/object/new:os.system [id]\n",
        "routes: !!python/object/apply:os.system [id]\n",
        "listen: !!python/object/apply:os.system [id]\n",
        "routes:\n  api:\n    port: !!python/int 4001\n",
        "routes:\n  api: !custom 4001\n",
        "routes:\n  api:\n    port: 4000\n    paths:\n"
        "      /x: !!python/object/apply:os.system [id]\n",
    ],
)
def test_python_tags_are_rejected_and_never_run(text: str, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[object] = []
    monkeypatch.setattr(os, "system", lambda *a, **k: calls.append(a) or 0)
    with pytest.raises(ConfigError) as info:
        parse_config(text, SRC)
    assert str(info.value).startswith(f"{SRC}:")
    assert calls == []


def _list_bomb(prefix: str, indent: str, levels: int = 9) -> str:
    lol = ", ".join(['"lol"'] * 9)
    out = [f"{indent}{prefix}0: &a0 [{lol}]"]
    for i in range(1, levels):
        out.append(f"{indent}{prefix}{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(out)


def _map_bomb(prefix: str, indent: str, levels: int = 9) -> str:
    keys = ", ".join(f"k{j}: 1" for j in range(9))
    out = [f"{indent}{prefix}0: &m0 {{{keys}}}"]
    for i in range(1, levels):
        out.append(
            f"{indent}{prefix}{i}: &m{i} {{" + ", ".join(f"k{j}: *m{i - 1}" for j in range(9)) + "}"
        )
    return "\n".join(out)


ALIAS_BOMBS = {
    # the classic "billion laughs", as top-level keys
    "top": _list_bomb("lol", "") + "\nroutes:\n  api: 4001\n",
    # the same inside every place the schema has a mapping or a list
    "routes": "routes:\n" + _list_bomb("r", "  ") + "\n",
    "route-map": "routes:\n" + _map_bomb("r", "  ") + "\n",
    "paths": "routes:\n  api:\n    port: 4000\n    paths:\n" + _list_bomb("/p", "      ") + "\n",
    "paths-map": "routes:\n  api:\n    port: 4000\n    paths:\n" + _map_bomb("/p", "      ") + "\n",
    "listen": "listen:\n"
    + "\n".join("  - " + line.split(": ", 1)[1] for line in _list_bomb("x", "").splitlines())
    + "\nroutes: {}\n",
    "last-route": "routes:\n  api: 4001\n  web:\n    port: 4002\n    paths:\n      /x:\n"
    + "        target: http://127.0.0.1:1\n"
    + _map_bomb("/q", "      ")
    + "\n",
}

_BOMB_CHILD = """
import json, resource, sys
resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
from devrouter.core.errors import ConfigError
from devrouter.config.schema import parse_config
out = {}
for name, text in json.load(sys.stdin).items():
    try:
        parse_config(text, "bomb.yaml")
        out[name] = "accepted"
    except ConfigError as exc:
        out[name] = "ConfigError: " + str(exc)
    except BaseException as exc:
        out[name] = type(exc).__name__ + ": " + str(exc)
print(json.dumps(out))
"""


def test_alias_bombs_are_rejected_quickly() -> None:
    # In a child process with a memory cap and a deadline, so an expanding bomb fails the
    # test instead of taking the machine (or the test run) with it.
    proc = subprocess.run(
        [sys.executable, "-c", _BOMB_CHILD],
        input=json.dumps(ALIAS_BOMBS),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert set(results) == set(ALIAS_BOMBS)
    for name, outcome in results.items():
        assert outcome.startswith("ConfigError: bomb.yaml:"), (name, outcome)


# --- listen -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "addrs"),
    [
        ("8000", (("127.0.0.1", 8000), ("::1", 8000))),
        ("'8000'", (("127.0.0.1", 8000), ("::1", 8000))),
        ("127.0.0.1:8000", (("127.0.0.1", 8000),)),
        ('"[::1]:8000"', (("::1", 8000),)),
        ("localhost:8000", (("127.0.0.1", 8000), ("::1", 8000))),
        ("127.0.0.5:8000", (("127.0.0.5", 8000),)),
        ("[8000, '[::1]:8001']", (("127.0.0.1", 8000), ("::1", 8000), ("::1", 8001))),
        (
            "\n  - 127.0.0.1:8000\n  - 127.0.0.1:8000\n  - '[::1]:8000'",
            (("127.0.0.1", 8000), ("::1", 8000)),
        ),
    ],
)
def test_listen_values(value: str, addrs: tuple[tuple[str, int], ...]) -> None:
    config = parse(f"listen: {value}\nroutes:\n  api: 4001\n")
    assert config.listen == tuple(ListenAddr(h, p) for h, p in addrs)


def test_listen_absent_is_none() -> None:
    assert parse("routes:\n  api: 4001\n").listen is None


@pytest.mark.parametrize(
    "value",
    [
        "0.0.0.0:7355",
        "192.168.1.5:7355",
        "'[::]:7355'",
        "'[2001:db8::1]:7355'",
        "example.com:7355",
        "0",
        "70000",
        "abc",
        "true",
        "127.0.0.1",
        "':7355'",
        "'[::1]'",
        "1.2.3.4:80:90",
        "{port: 1}",
        "[[8000]]",
    ],
)
def test_bad_listen_is_refused(value: str) -> None:
    err = rejected(f"routes:\n  api: 4001\nlisten: {value}\n")
    assert err.line == 3, str(err)
    assert str(err).startswith(f"{SRC}:3: ")


def test_bad_listen_item_names_its_own_line() -> None:
    err = rejected("listen:\n  - 8000\n  - 0.0.0.0:8001\nroutes: {}\n")
    assert "0.0.0.0" in str(err)
    assert err.line == 3, str(err)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (7355, (ListenAddr("127.0.0.1", 7355), ListenAddr("::1", 7355))),
        ("7355", (ListenAddr("127.0.0.1", 7355), ListenAddr("::1", 7355))),
        ("localhost:80", (ListenAddr("127.0.0.1", 80), ListenAddr("::1", 80))),
        ("127.0.0.1:7355", ListenAddr("127.0.0.1", 7355)),
        ("[::1]:7355", ListenAddr("::1", 7355)),
        ("10.0.0.1:80", ListenAddr("10.0.0.1", 80)),
    ],
)
def test_parse_listen(value: str | int, expected: object) -> None:
    assert parse_listen(value) == expected


def test_parse_listen_marks_non_loopback() -> None:
    addr = parse_listen("10.0.0.1:80")
    assert isinstance(addr, ListenAddr)
    assert not addr.is_loopback
    assert str(addr) == "10.0.0.1:80"
    v6 = parse_listen("[::1]:7355")
    assert isinstance(v6, ListenAddr)
    assert v6.is_loopback
    assert str(v6) == "[::1]:7355"


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "65536",
        "abc",
        ":80",
        "[::1]",
        "[::1]:",
        "1.2.3.4:80:90",
        "host.example:80",
        "127.0.0.1:-1",
        "",
    ],
)
def test_parse_listen_errors(value: str) -> None:
    with pytest.raises(ValueError):
        parse_listen(value)


def test_listen_addrs_deduplicates_in_order() -> None:
    assert listen_addrs([7355, "[::1]:7355", "127.0.0.1:8000", "7355"]) == (
        ListenAddr("127.0.0.1", 7355),
        ListenAddr("::1", 7355),
        ListenAddr("127.0.0.1", 8000),
    )


# --- timeout ----------------------------------------------------------------------------


def test_timeout_top_level_and_per_route() -> None:
    config = parse(
        """\
        timeout: 5
        routes:
          api: 4001
          slow:
            port: 4002
            timeout: 120
          quick:
            port: 4003
            timeout: 0.5
        """
    )
    assert config.timeout_s == 5.0
    timeouts = {r.name: r.timeout_s for r in config.routes}
    assert timeouts == {"api": 5.0, "slow": 120.0, "quick": 0.5}


def test_route_timeout_defaults_without_top_level() -> None:
    config = parse("routes:\n  api: 4001\n  web:\n    port: 4002\n    timeout: 3\n")
    assert {r.name: r.timeout_s for r in config.routes} == {"api": DEFAULT_TIMEOUT_S, "web": 3.0}


@pytest.mark.parametrize("value", ["0", "-1", "abc", "true", "[1]", "null", "''"])
def test_bad_timeout(value: str) -> None:
    top = rejected(f"routes:\n  api: 4001\ntimeout: {value}\n")
    assert_names(top, 3)
    route = rejected(f"routes:\n  api:\n    port: 4001\n    timeout: {value}\n")
    assert_names(route, 4, "api")


@pytest.mark.parametrize(
    ("value", "mode"),
    [
        (None, "on"),
        ("true", "on"),
        ("on", "on"),  # YAML 1.1 reads on/off/yes/no as booleans
        ("yes", "on"),
        ("false", "off"),
        ("off", "off"),
        ("redirect", "redirect"),
    ],
)
def test_https_modes(value: str | None, mode: str) -> None:
    text = "routes: {}\n" + (f"https: {value}\n" if value is not None else "")
    assert parse_config(text).https == mode


@pytest.mark.parametrize("value", ["3", "tls", "'redirect '", "[true]"])
def test_a_bad_https_value_names_its_line_and_the_choices(value: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(f"routes: {{}}\nhttps: {value}\n", "devrouter.yaml")
    message = str(info.value)
    assert message.startswith("devrouter.yaml:2:") and "https" in message


# --- docker: -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: {}\n", DockerSettings()),
        ("docker:\n", DockerSettings()),
        ("docker: true\n", DockerSettings()),
        ("docker: false\n", DockerSettings(enabled=False)),
        ("docker: off\n", DockerSettings(enabled=False)),
        ("docker: {enabled: false}\n", DockerSettings(enabled=False)),
        (
            "docker: {socket: unix:///run/user/1000/docker.sock}\n",
            DockerSettings(socket="/run/user/1000/docker.sock"),
        ),
        (
            "docker: {socket: ~/.orbstack/run/docker.sock}\n",
            DockerSettings(socket="~/.orbstack/run/docker.sock"),
        ),
        ("docker: {only_labelled: true}\n", DockerSettings(only_labelled=True)),
        ("docker: {container_addresses: yes}\n", DockerSettings(container_addresses=True)),
    ],
)
def test_docker_section(text: str, expected: DockerSettings) -> None:
    assert parse(text).docker == expected


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("docker: maybe\n", 1, "docker must be true, false or a mapping"),
        ("docker:\n  sockett: /x\n", 2, "sockett"),
        ("docker:\n  socket: tcp://127.0.0.1:2375\n", 2, "unix socket"),
        ("docker:\n  socket: docker.sock\n", 2, "unix socket"),
        ("docker:\n  socket: 5\n", 2, "docker.socket must be a path"),
        ("docker:\n  only_labelled: sometimes\n", 2, "docker.only_labelled must be true or false"),
        ("docker:\n  - socket\n", 2, "mapping"),
    ],
)
def test_bad_docker_section(text: str, line: int, words: str) -> None:
    err = rejected(text)
    assert err.line == line, str(err)
    assert words in str(err)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("routes: {}\n", None),
        ("hosts:\n", None),
        ("hosts: false\n", None),
        ("hosts: sync\n", "/etc/hosts"),
        ("hosts: {file: /tmp/hosts}\n", "/tmp/hosts"),
    ],
)
def test_hosts_setting(text: str, expected: str | None) -> None:
    assert parse(text).hosts_file == expected


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("hosts: true\n", 1, "hosts must be sync"),
        ("hosts: always\n", 1, "hosts must be sync"),
        ("hosts:\n  file: hosts\n", 2, "hosts.file must be an absolute path"),
        ("hosts:\n  path: /x\n", 2, "path"),
    ],
)
def test_bad_hosts_setting(text: str, line: int, words: str) -> None:
    err = rejected(text)
    assert err.line == line, str(err)
    assert words in str(err)
