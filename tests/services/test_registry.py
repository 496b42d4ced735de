"""devrouter.services.registry: a registration's record and the rules its messages are
checked by, as tables of messages in and records (or refusals) out."""

from __future__ import annotations

from typing import Any

import pytest

from devrouter.services.client import OUTPUT_LINES, ControlError
from devrouter.services.registry import (
    MAX_LISTENS_ON,
    MAX_OUTPUT_LINE,
    apply_update,
    check_port,
    service_from,
    service_json,
)


def msg(**fields: Any) -> dict[str, Any]:
    return {"name": "api", "port": 4001, **fields}


@pytest.mark.parametrize("value", [1, 80, 65535])
def test_check_port_accepts(value):
    assert check_port(value) == value


@pytest.mark.parametrize("value", [0, 65536, -1, "80", 80.0, True, None])
def test_check_port_refuses(value):
    with pytest.raises(ControlError, match="must be a number from 1 to 65535"):
        check_port(value)


def test_service_from_a_register_message():
    svc = service_from(
        msg(
            name="Web.Shop",
            paths={"/a": 4002, "/api/v2": 4003, "/api": 4004},
            source="stack",
            stack="shop",
            command="x" * 600,
            pgid=77,
            ready=True,
        ),
        owner_pid=123,
    )
    assert (svc.name, svc.port, svc.source, svc.stack, svc.owner_pid) == (
        "web.shop",
        4001,
        "stack",
        "shop",
        123,
    )
    assert svc.paths == (("/api/v2", 4003), ("/api", 4004), ("/a", 4002))  # longest first
    assert svc.command == "x" * 500
    assert (svc.pgid, svc.ready, svc.exit_code) == (77, True, None)
    assert service_json(svc) == {
        "name": "web.shop",
        "port": 4001,
        "pid": 123,
        "source": "stack",
        "stack": "shop",
        "command": "x" * 500,
        "listens_on": [],
    }


def test_service_from_defaults():
    svc = service_from(msg(), owner_pid=1)
    assert (svc.source, svc.stack, svc.command, svc.paths) == ("run", None, "", ())


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "*.api"}, "is not a usable name"),
        ({"port": 0}, "the port of 'api' must be a number"),
        ({"paths": ["/a"]}, "must be a mapping of prefix to port"),
        ({"paths": {"a": 4002}}, "path prefix 'a' of 'api' must start with '/'"),
        ({"paths": {"/a b": 4002}}, "must start with '/'"),
        ({"paths": {"/a": 70000}}, "the port of api/a must be a number"),
        ({"source": "alias"}, "unknown source 'alias'"),
        ({"stack": "*.shop"}, "is not a DNS name"),
        ({"stack": 5}, "is not a DNS name"),
        ({"listens_on": [1] * (MAX_LISTENS_ON + 1)}, "at most"),
    ],
)
def test_service_from_refusals(fields, message):
    with pytest.raises(ControlError, match=message):
        service_from(msg(**fields), owner_pid=1)


def test_apply_update_fields():
    svc = service_from(msg(), owner_pid=1)
    apply_update(svc, {"listens_on": [5173, 3000, 5173], "pgid": 1, "ready": "yes"})
    assert svc.listens_on == (3000, 5173)
    assert svc.pgid is None  # 0 and 1 are never a command's own group
    assert svc.ready is False
    apply_update(svc, {"pgid": True, "exit_code": True})  # a bool is not a number here
    assert (svc.pgid, svc.exit_code) == (None, None)
    apply_update(svc, {"ready": True, "pgid": 4242})
    assert (svc.ready, svc.pgid) == (True, 4242)


def test_an_exit_clears_ready_and_listens_on():
    svc = service_from(msg(ready=True, listens_on=[3000]), owner_pid=1)
    apply_update(svc, {"exit_code": 2})
    assert (svc.exit_code, svc.ready, svc.listens_on) == (2, False, ())


def test_output_lines_are_bounded_in_number_and_length():
    svc = service_from(msg(), owner_pid=1)
    apply_update(svc, {"lines": [f"line {i}" for i in range(OUTPUT_LINES + 5)]})
    apply_update(svc, {"lines": ["y" * (MAX_OUTPUT_LINE + 50), 7]})
    assert len(svc.output) == OUTPUT_LINES
    assert svc.output[-1] == "y" * MAX_OUTPUT_LINE
    assert svc.output[0] == "line 6"


def test_a_malformed_listens_on_changes_nothing():
    svc = service_from(msg(), owner_pid=1)
    with pytest.raises(ControlError, match="listens_on of 'api'"):
        apply_update(svc, {"listens_on": ["3000"], "ready": True, "pgid": 99})
    assert (svc.ready, svc.pgid, svc.listens_on) == (False, None, ())
