"""devrouter.web.pages: the router's own answers, as pure functions over errors and routes.

The pages as served (both engines, real sockets) are in test_proxy.py and test_run.py; here
each rule is checked with plain objects and no server.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from conftest import make_config

from devrouter.core.errors import (
    BadGateway,
    GatewayTimeout,
    MisdirectedRequest,
    NotFound,
    ProxyError,
    ServiceStarting,
)
from devrouter.core.model import Route
from devrouter.web.pages import ServiceInfo, closest_name, explain_failure, render_error

PORT = 7355
HTML = "text/html,application/xhtml+xml,*/*;q=0.8"
DASHBOARD = f"http://localhost:{PORT}/"


@pytest.mark.parametrize(
    ("typed", "names", "expected"),
    [
        ("exq", ["exp", "api"], "exp"),  # a typo
        ("aip", ["api", "web"], "api"),  # two letters swapped
        ("EXQ", ["exp"], "exp"),  # case
        ("shop.ap", ["shop.api", "api"], "shop.api"),  # a name of two labels
        ("shop", ["shop-frontend", "api"], "shop-frontend"),  # a prefix of the name
        ("apiserver", ["api", "web"], "api"),  # the name is a prefix of it
        ("a.shp", ["*.shop", "web"], "a.shop"),  # under a wildcard
        ("apii", ["api", "apis"], "api"),  # the most similar of several
        ("a", ["api", "app"], None),  # a prefix of two: no guess
        ("zzz", ["api", "web"], None),  # nothing close
        ("shp", ["*.shop"], None),  # a wildcard does not cover the bare name
        ("api", [], None),  # no routes at all
    ],
)
def test_closest_name(typed: str, names: list[str], expected: str | None) -> None:
    assert closest_name(typed, names) == expected


def routes(*names: str) -> tuple[Route, ...]:
    return make_config({name: 4000 + i for i, name in enumerate(names)}).routes


def not_found(name: str, source: str = "") -> NotFound:
    return NotFound(f"no route is named '{name}'", name=name, config_source=source)


def test_404_text_suggests_the_closest_name_says_how_to_add_it_and_links_the_dashboard() -> None:
    err = not_found("exq", "/home/me/proj/devrouter.yaml")
    content_type, text = render_error(err, "*/*", routes("exp", "api"), PORT)
    assert content_type == "text/plain"
    lines = text.splitlines()
    assert lines[0] == "devrouter: 404 No such route: no route is named 'exq'"
    assert lines[1] == f"did you mean http://exp.localhost:{PORT}/ ?"
    assert any(line.strip().startswith("devrouter run exq -- CMD") for line in lines)
    assert any(line.strip().startswith("devrouter alias exq PORT") for line in lines)
    assert any(
        "routes: {exq: PORT}" in line and "/home/me/proj/devrouter.yaml" in line for line in lines
    )
    assert f"http://api.localhost:{PORT}/" in text  # the route list stays
    assert lines[-1] == f"dashboard: {DASHBOARD}"
    assert "<" not in text


def test_404_html_has_the_same_parts_as_links() -> None:
    err = not_found("exq")
    content_type, html = render_error(err, HTML, routes("exp"), PORT)
    assert content_type == "text/html"
    url = f"http://exp.localhost:{PORT}/"
    assert f"Did you mean <a href='{url}'>{url}</a>?" in html
    assert "<code>devrouter run exq -- CMD</code>" in html
    assert "<code>devrouter alias exq PORT</code>" in html
    assert "the config file (devrouter.yaml)" in html  # no file known
    assert f"<a href='{DASHBOARD}'>{DASHBOARD}</a>" in html


@pytest.mark.parametrize("accept", ["*/*", HTML])
def test_a_page_asked_for_over_https_links_over_https(accept: str) -> None:
    _, body = render_error(not_found("exq"), accept, routes("exp"), PORT, "https")
    assert f"https://exp.localhost:{PORT}/" in body  # the suggestion and the route list
    assert f"https://localhost:{PORT}/" in body  # the dashboard
    assert "http://" not in body


def test_404_without_a_close_name_suggests_nothing() -> None:
    _, text = render_error(not_found("zzz"), "*/*", routes("api", "web"), PORT)
    assert "did you mean" not in text
    assert "devrouter run zzz -- CMD" in text


def test_a_router_without_a_config_file_names_none() -> None:
    _, text = render_error(not_found("x", "<no config file>"), "*/*", routes(), PORT)
    assert "<no config file>" not in text and "in the config file (devrouter.yaml)" in text


@pytest.mark.parametrize(
    "err",
    [
        BadGateway("nothing is listening on 127.0.0.1:4001", kind="refused"),
        GatewayTimeout("the backend on port 4001 did not answer within 60 s"),
        ServiceStarting("`npm run dev` is starting and is not listening yet"),
    ],
    ids=["502", "504", "503"],
)
def test_5xx_pages_link_the_dashboard_when_the_port_is_known(err: ProxyError) -> None:
    _, text = render_error(err, "*/*", port=PORT)
    assert text.splitlines()[-1] == f"dashboard: {DASHBOARD}"
    _, html = render_error(err, HTML, port=PORT)
    assert f"<a href='{DASHBOARD}'>" in html
    _, unknown = render_error(err, "*/*")
    assert "dashboard" not in unknown


def test_a_421_never_names_the_port() -> None:
    """A rebinding page must learn nothing from a 421, not even where the dashboard is."""
    err = MisdirectedRequest("'evil.example' is not a .localhost name")
    for accept in ("*/*", HTML):
        _, body = render_error(err, accept, port=PORT)
        assert str(PORT) not in body and "dashboard" not in body.lower()


@dataclass
class FakeService:
    """What devrouter.services.control.Service tells a page (the ServiceInfo protocol)."""

    name: str = "web"
    port: int = 4123
    ready: bool = False
    exit_code: int | None = None
    command: str = "npm run dev"
    listens_on: tuple[int, ...] = ()


def refused() -> BadGateway:
    return BadGateway("nothing is listening on 127.0.0.1:4123 or [::1]:4123", kind="refused")


OUTPUT = [f"line {i}" for i in range(30)]


def test_a_service_that_has_not_listened_yet_gets_a_self_reloading_503() -> None:
    svc: ServiceInfo = FakeService()
    err = explain_failure(refused(), svc, OUTPUT)
    assert err.status == 503 and err.refresh_s
    assert err.detail == "`npm run dev` is starting and is not listening yet"
    assert err.details == tuple(OUTPUT[-20:])


def test_a_service_listening_on_another_port_is_told_to_use_its_port() -> None:
    svc: ServiceInfo = FakeService(listens_on=(8000,))
    err = explain_failure(refused(), svc, OUTPUT)
    assert err.status == 503 and err.refresh_s  # still starting, as far as the page knows
    assert err.detail == (
        "`web` listens on 8000, not on its $PORT 4123: pass --port $PORT (or read PORT) in the "
        "command"
    )
    _, html = render_error(err, HTML, port=PORT)
    assert "http-equiv=refresh" in html and "listens on 8000" in html
    two = explain_failure(refused(), FakeService(listens_on=(8000, 8001)), OUTPUT)
    assert two.detail.startswith("`web` listens on 8000, 8001, not on its $PORT 4123")


def test_a_ready_service_is_not_told_about_other_ports() -> None:
    err = explain_failure(refused(), FakeService(ready=True, listens_on=(8000,)), OUTPUT)
    assert err.status == 502 and "listens on" not in err.detail


def test_an_exited_service_gets_a_502_with_its_exit_code_and_last_output() -> None:
    err = explain_failure(refused(), FakeService(exit_code=1), OUTPUT)
    assert err.status == 502
    assert err.detail == "`npm run dev` exited with code 1"
    _, text = render_error(err, "*/*", port=PORT)
    assert "last output of `npm run dev`:\n  line 10\n" in text
    assert text.splitlines()[-1] == f"dashboard: {DASHBOARD}"
    _, html = render_error(err, HTML, port=PORT)
    assert "<h2>Last output of `npm run dev`</h2><pre>line 10\n" in html


def test_a_command_in_the_page_is_escaped() -> None:
    err = explain_failure(refused(), FakeService(exit_code=2, command="<b>x</b>"), ["<i>"])
    _, html = render_error(err, HTML)
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<i>" not in html.split("<pre>")[1]


def test_errors_other_than_refused_and_502_are_left_alone() -> None:
    err = GatewayTimeout("the backend on port 4123 did not answer within 60 s")
    assert explain_failure(err, FakeService(), OUTPUT) is err
