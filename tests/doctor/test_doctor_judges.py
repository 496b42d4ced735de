"""doctor.judges: the verdicts on routes, the router, the config and the port range, from
tables of observations; no sockets."""

from __future__ import annotations

from typing import Any

import pytest

from devrouter.doctor import judges
from devrouter.doctor.facts import RouterProbe
from devrouter.doctor.listeners import Listener
from devrouter.doctor.targets import RouteTarget
from devrouter.services.locate import Located


def _l(host: str, port: int = 4001, pid: int | None = 7) -> Listener:
    return Listener(host, port, 1000, 1, pid, "node server.js" if pid else "unknown (x)")


BOTH = RouteTarget("api.localhost", "api", 4001)
PINNED4 = RouteTarget("api.localhost", "api", 4001, ("127.0.0.1",))


@pytest.mark.parametrize(
    ("target", "reach", "listeners", "status", "words"),
    [
        (BOTH, {"127.0.0.1": "open", "::1": "refused"}, [_l("127.0.0.1")], "ok", "pid 7"),
        (BOTH, {"127.0.0.1": "refused", "::1": "open"}, [_l("::1")], "ok", "[::1]:4001 only"),
        (BOTH, {"127.0.0.1": "open", "::1": "open"}, [_l("0.0.0.0")], "ok", "your network"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [], "fail", "nothing is listening"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("10.1.2.3")], "fail", "10.1.2.3"),
        (BOTH, {"127.0.0.1": "timeout", "::1": "refused"}, [_l("127.0.0.1")], "fail", "hung"),
        (PINNED4, {"127.0.0.1": "refused", "::1": "open"}, [_l("::1")], "fail", "[::1]:4001"),
        (BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("0.0.0.0")], "fail", "firewall"),
        (BOTH, {"127.0.0.1": "refused", "::1": "unavailable"}, None, "fail", "nothing is"),
    ],
)
def test_judge_route(
    target: RouteTarget,
    reach: dict[str, Any],
    listeners: list[Listener] | None,
    status: str,
    words: str,
) -> None:
    c = judges.judge_route(target, reach, listeners)
    assert c.status == status and words in c.message, c.message
    assert (c.fix is None) == (status == "ok")
    assert c.data["route"] == "api" and c.data["port"] == 4001


DOWN = {"127.0.0.1": "refused", "::1": "refused"}
WEB = RouteTarget("web.localhost", "web", 4123, source="run", listens_on=(8000,))


@pytest.mark.parametrize(
    ("target", "reach", "words", "fix"),
    [
        # a run/stack app on another port than its $PORT: say so, with the flag to pass
        (
            WEB,
            DOWN,
            "web.localhost -> 127.0.0.1:4123 or [::1]:4123: nothing is listening; web listens "
            "on 8000, not on its $PORT 4123",
            "pass --port $PORT (or read PORT from the environment) in the command, e.g. "
            "devrouter run web -- CMD --port '$PORT'",
        ),
        (
            RouteTarget("web.localhost", "web", 4123, source="stack", listens_on=(8000, 8001)),
            DOWN,
            "web listens on 8000, 8001, not on its $PORT 4123",
            "--port $PORT",
        ),
        # a config route, or no other port known: the plain verdict
        (
            RouteTarget("web.localhost", "web", 4123, source="config", listens_on=(8000,)),
            DOWN,
            "nothing is listening",
            "start the service on port 4123",
        ),
        (
            RouteTarget("web.localhost", "web", 4123, source="run"),
            DOWN,
            "nothing is listening",
            "start the service",
        ),
        # listening on its port after all: fine
        (WEB, {"127.0.0.1": "open", "::1": "refused"}, "listening on 127.0.0.1:4123", None),
    ],
)
def test_a_run_app_on_another_port_than_its_port(
    target: RouteTarget, reach: dict[str, Any], words: str, fix: str | None
) -> None:
    c = judges.judge_route(target, reach, [])
    assert words in c.message, c.message
    assert (c.fix is None) if fix is None else (fix in (c.fix or "")), c.fix


SOCK_HOW = "found through the control socket /h/control.sock"
OURS = Located(("127.0.0.1",), 7400, SOCK_HOW, True)
THEIRS = Located(("127.0.0.1",), 7355, "the default", False, "no router answers on /h/c.sock")
RUNNING = RouterProbe(
    7355,
    answered="127.0.0.1",
    http_status=200,
    status={"version": "1.2", "listen": [], "routes": []},
)


@pytest.mark.parametrize(
    ("found", "holder_uid", "status", "words"),
    [
        (
            OURS,
            1000,
            "ok",
            f"devrouter 1.2 is running on port 7355, pid 7: node server.js, {SOCK_HOW}",
        ),
        (None, 1000, "ok", "devrouter 1.2 is running on port 7355"),  # not told: any devrouter
        (
            THEIRS,
            1000,
            "warn",
            "devrouter 1.2 answers on port 7355 (pid 7: node server.js), but it is not the "
            "router of this state directory (the default; no router answers on /h/c.sock)",
        ),
        (THEIRS, 1001, "fail", "belongs to another user (uid 1001"),
    ],
)
def test_router_verdicts_agree_with_locate(
    found: Located | None, holder_uid: int, status: str, words: str
) -> None:
    holder = Listener("127.0.0.1", 7355, holder_uid, 1, 7, "node server.js")
    c = judges.judge_router(RUNNING, [holder], found, my_uid=1000)
    assert c.status == status and words in c.message, c.message
    assert c.data["running"] is True
    assert c.data["ours"] is (status == "ok")


def test_any_json_at_api_status_is_not_devrouter() -> None:
    probe = RouterProbe(7355, answered="127.0.0.1", http_status=200, body_start=b'{"ok": 1}')
    assert not probe.is_devrouter
    c = judges.judge_router(probe, [_l("127.0.0.1", 7355)], THEIRS, 1000)
    assert c.status == "fail" and "something else is listening on port 7355" in c.message


def test_route_on_another_interface_says_bind_loopback() -> None:
    c = judges.judge_route(
        BOTH, {"127.0.0.1": "refused", "::1": "refused"}, [_l("192.168.1.5", pid=None)]
    )
    assert "192.168.1.5:4001 only" in c.message and "unknown (x)" in c.message
    assert c.fix is not None and "127.0.0.1" in c.fix


def test_router_notes_become_warnings() -> None:
    clash = "route 'api' from `devrouter run` (pid 9) clashes with the one in x.yaml"
    found = judges.judge_config(None, None, None, None, [clash])
    assert [(c.status, c.fix) for c in found] == [
        ("info", None),
        ("warn", "rename one of the two routes"),
    ]
    assert clash in found[1].message


def test_router_verdicts() -> None:
    none = judges.judge_router(RouterProbe(7355, error="refused"), [])
    assert none.status == "fail" and "no router is running on port 7355" in none.message
    old = judges.judge_router(
        RouterProbe(7355, answered="127.0.0.1", http_status=200, body_start=b"devrouter 0.1"),
        [],
    )
    assert old.status == "warn" and old.data["running"] is True
    other = judges.judge_router(
        RouterProbe(7355, answered="127.0.0.1", http_status=404), [_l("127.0.0.1", 7355)]
    )
    assert other.status == "fail"
    assert "something else is listening on port 7355" in other.message
    assert "pid 7: node server.js" in other.message
    lan = judges.judge_router(RouterProbe(7355, error="refused"), [_l("10.0.0.2", 7355)])
    assert "10.0.0.2:7355 only" in lan.message


def test_port_range_verdicts() -> None:
    skipped = judges.judge_port_range(None, [], ())
    assert skipped.status == "info" and "skipped" in skipped.message
    ls = [_l("127.0.0.1", 20001), _l("0.0.0.0", 20002), _l("127.0.0.1", 30000)]
    warn = judges.judge_port_range((20000, 20009), ls, {20002})
    assert warn.status == "warn" and "20001 (pid 7: node server.js)" in warn.message
    assert [t["port"] for t in warn.data["taken"]] == [20001]
    full = judges.judge_port_range((20001, 20001), ls, ())
    assert full.status == "fail"
    assert judges.judge_port_range((20100, 20199), ls, ()).status == "ok"
