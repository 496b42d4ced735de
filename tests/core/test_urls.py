"""devrouter.core.urls: URLs through the router carry no port number on the scheme's own."""

from __future__ import annotations

import pytest

from devrouter.core.urls import name_url, origin


@pytest.mark.parametrize(
    ("args", "url"),
    [
        (("api", 7355), "http://api.localhost:7355"),
        (("api", 80), "http://api.localhost"),
        (("api", 80, "https"), "https://api.localhost:80"),  # one port answers both schemes
        (("api", 443, "https"), "https://api.localhost"),
        (("api", 443), "http://api.localhost:443"),
        ((None, 80, "http", "/"), "http://localhost/"),
        ((None, 7355, "http", "/"), "http://localhost:7355/"),
        (("api.shop", 80, "http", "/x"), "http://api.shop.localhost/x"),
    ],
)
def test_name_url(args: tuple[object, ...], url: str) -> None:
    assert name_url(*args) == url  # type: ignore[arg-type]


def test_origin_without_a_port() -> None:
    assert origin("localhost", 0) == "http://localhost"
