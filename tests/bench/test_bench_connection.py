"""bench's connection: the hand-written response parser, fed bytes whole and in pieces."""

from __future__ import annotations

from typing import Any

import pytest
from bench_plans import plan

from devrouter.bench.connection import Connection


class FakeTransport:
    def __init__(self) -> None:
        self.written: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.written.append(data)

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


class Recorder:
    """Stands in for the Driver: records what a connection reports."""

    def __init__(self, head: bool = False) -> None:
        self.plan = plan(request=b"GET / HTTP/1.1\r\n\r\n", head=head)
        self.clock = lambda: 1.0
        self.events: list[tuple[Any, ...]] = []

    def done(self, conn: Any, now: float, status: int, nbytes: int) -> None:
        self.events.append(("done", status, nbytes, conn.reusable))

    def failed(self, conn: Any, kind: str) -> None:
        self.events.append(("failed", kind))


def feed(response: bytes, step: int | None = None, head: bool = False) -> list[tuple[Any, ...]]:
    rec = Recorder(head)
    conn = Connection(rec, 0.0, 0.0)  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    pieces = (
        [response]
        if step is None
        else [response[i : i + step] for i in range(0, len(response), step)]
    )
    for piece in pieces:
        conn.data_received(piece)
    if conn.transport is not None and conn.busy_since is not None:
        conn.connection_lost(None)
    return rec.events


CL = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
CHUNKED = (
    b"HTTP/1.1 201 Created\r\nTransfer-Encoding: chunked\r\n\r\n"
    b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: x\r\n\r\n"
)


@pytest.mark.parametrize("step", [None, 1, 3, 7])
@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (CL, ("done", 200, True)),
        (CHUNKED, ("done", 201, True)),
        (
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n0\r\n\r\n",
            ("done", 200, True),
        ),
        (b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n", ("done", 204, True)),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok",
            ("done", 200, True),
        ),
        (
            b"HTTP/1.1 503 Busy\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
            ("done", 503, False),
        ),
        (b"HTTP/1.0 200 OK\r\n\r\nuntil the end", ("done", 200, False)),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\nshort", ("failed", "reset")),
        (b"SSH-2.0-OpenSSH\r\n\r\n", ("failed", "other")),
        (b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n", ("failed", "other")),
    ],
)
def test_response_parsing(response: bytes, expected: tuple[Any, ...], step: int | None) -> None:
    events = feed(response, step)
    if expected[0] == "done":  # every byte read is counted
        expected = (expected[0], expected[1], len(response), expected[2])
    assert events == [expected]


def test_head_responses_have_no_body() -> None:
    response = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n"
    assert feed(response, head=True) == [("done", 200, len(response), True)]


def test_a_repeated_response_is_parsed_again_when_it_differs() -> None:
    rec = Recorder()
    conn = Connection(rec, 0.0, 0.0)  # type: ignore[arg-type]
    conn.connection_made(FakeTransport())  # type: ignore[arg-type]
    other = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nX: y\r\n\r\nhello"
    for response in (CL, CL, other, CL):
        conn.data_received(response)
        conn.send(0.0, 0.0)
    assert [e[1] for e in rec.events] == [200, 200, 404, 200]
