"""bench's targets: URLs and route names on this machine, and everything else refused
before any I/O."""

from __future__ import annotations

import pytest

from devrouter.bench import target as targets
from devrouter.bench.target import Target
from devrouter.core.errors import UsageError


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (
            ("http://api.localhost:7355/items",),
            Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api"),
        ),
        (("api", "/items"), Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api")),
        (("api", "items"), Target("127.0.0.1", 7355, "api.localhost:7355", "/items", "api")),
        (
            ("Shop.API.localhost",),
            Target("127.0.0.1", 7355, "shop.api.localhost:7355", "/", "shop.api"),
        ),
        (("http://127.0.0.1:4001/x",), Target("127.0.0.1", 4001, "127.0.0.1:4001", "/x")),
        (("127.0.0.2:4001",), Target("127.0.0.2", 4001, "127.0.0.2:4001", "/")),
        (("http://[::1]:4001/a?b",), Target("::1", 4001, "[::1]:4001", "/a?b")),
        (("http://localhost/",), Target("127.0.0.1", 80, "localhost", "/")),
        (("localhost:3000",), Target("127.0.0.1", 3000, "localhost:3000", "/")),
        (("http://web.localhost./",), Target("127.0.0.1", 80, "web.localhost.", "/", "web")),
    ],
)
def test_targets(argv: tuple[str, ...], expected: Target) -> None:
    assert targets.parse_target(*argv) == expected


def test_route_name_uses_the_router_port() -> None:
    assert targets.parse_target("api", None, 8000).host_header == "api.localhost:8000"


@pytest.mark.parametrize(
    "target",
    [
        "http://example.com/",
        "example.com:80",
        "http://10.0.0.1:8080/",
        "http://0.0.0.0:8080/",
        "http://[::]:8080/",
        "http://[::ffff:8.8.8.8]/",
        "http://192.168.1.10/",
        "http://localhost.example.com/",
        "http://127.0.0.1.nip.io/",
        "http://api.localhost.evil.com/",
    ],
)
def test_non_loopback_targets_are_refused(target: str) -> None:
    with pytest.raises(UsageError, match="only targets this machine"):
        targets.parse_target(target)


@pytest.mark.parametrize(
    "target", ["https://api.localhost/", "ftp://127.0.0.1/", "http://u:p@127.0.0.1/"]
)
def test_unsupported_urls(target: str) -> None:
    with pytest.raises(UsageError):
        targets.parse_target(target)
