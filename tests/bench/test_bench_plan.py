"""bench's plan: the request bytes, and the split of a run over worker processes."""

from __future__ import annotations

import pytest
from bench_plans import plan

from devrouter.bench import plan as plans
from devrouter.bench.target import parse_target
from devrouter.core.errors import UsageError


def test_request_bytes() -> None:
    t = parse_target("http://127.0.0.1:4001/x?y=1")
    assert plans.build_request(t) == (
        b"GET /x?y=1 HTTP/1.1\r\nHost: 127.0.0.1:4001\r\nUser-Agent: devrouter-bench\r\n\r\n"
    )
    req = plans.build_request(t, "GET", [("Host", "other.localhost"), ("User-Agent", "me")])
    assert req == b"GET /x?y=1 HTTP/1.1\r\nHost: other.localhost\r\nUser-Agent: me\r\n\r\n"
    with pytest.raises(UsageError):
        plans.build_request(t, "GE T")


def test_plan_split_over_workers() -> None:
    parts = plan(connections=5, requests=11, rate=300.0).split(2)
    assert [p.connections for p in parts] == [3, 2]
    assert [p.requests for p in parts] == [6, 5]
    assert [p.rate for p in parts] == [150.0, 150.0]
    assert [p.offset_s for p in parts] == pytest.approx([0.0, 1 / 300])
    assert len(plan(connections=1).split(4)) == 1
