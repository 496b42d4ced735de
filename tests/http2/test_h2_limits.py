"""devrouter.http2.limits without a socket: the frame meter as a table of byte strings, fed
whole, split at every offset and byte by byte; the token bucket."""

from __future__ import annotations

import pytest
from hyperframe.frame import (
    ContinuationFrame,
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    PingFrame,
    PriorityFrame,
    RstStreamFrame,
    SettingsFrame,
    WindowUpdateFrame,
)

from devrouter.http2.limits import Bucket, FrameMeter, Reading

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
LIMIT = 1000


def headers(sid: int, size: int = 10, end_headers: bool = True, end_stream: bool = True) -> Frame:
    flags = ["END_HEADERS"] if end_headers else []
    return HeadersFrame(sid, data=b"h" * size, flags=flags + ["END_STREAM"] * end_stream)


def continuation(sid: int, size: int = 10, end: bool = False) -> Frame:
    return ContinuationFrame(sid, data=b"c" * size, flags=["END_HEADERS"] if end else [])


def data(sid: int, size: int, end_stream: bool = False) -> Frame:
    return DataFrame(sid, data=b"d" * size, flags=["END_STREAM"] if end_stream else [])


def ping() -> Frame:
    return PingFrame(0, opaque_data=b"12345678")


def wire(*frames: Frame) -> bytes:
    return PREFACE + b"".join(f.serialize() for f in frames)


CASES = [
    pytest.param(wire(SettingsFrame(0)), Reading(1, False), id="the client's SETTINGS"),
    pytest.param(wire(headers(1), headers(3), data(3, 100)), Reading(0, False), id="requests"),
    pytest.param(wire(data(1, 0, end_stream=True)), Reading(1, False), id="empty DATA"),
    pytest.param(
        wire(ping(), PriorityFrame(1), RstStreamFrame(1), WindowUpdateFrame(0, 1), GoAwayFrame(0)),
        Reading(5, False),
        id="control frames",
    ),
    pytest.param(wire(headers(5), headers(5)), Reading(1, False), id="HEADERS on an open stream"),
    pytest.param(wire(headers(5), headers(3)), Reading(1, False), id="HEADERS on an older stream"),
    pytest.param(
        wire(headers(1, 400, end_headers=False), continuation(1, 400), continuation(1, 200, True)),
        Reading(0, False),
        id="a block at the limit",
    ),
    pytest.param(
        wire(headers(1, 400, end_headers=False), continuation(1, 400), continuation(1, 201)),
        Reading(0, True),
        id="a block past the limit",
    ),
    pytest.param(
        wire(headers(1, 900, end_headers=False), ping()),
        Reading(0, False),
        id="a frame inside a block (h2 refuses it) counts toward the block",
    ),
    pytest.param(
        wire(*[continuation(1, 0) for _ in range(3)]),
        Reading(3, False),
        id="CONTINUATION with no block open",
    ),
    pytest.param(
        wire(headers(1, 10, end_headers=False), *[continuation(1, 0) for _ in range(100)]),
        Reading(0, False),
        id="empty CONTINUATIONs: h2's 64-frame cap ends them",
    ),
    pytest.param(
        wire(headers(1, 10, end_headers=True), data(1, 5000), ping()),
        Reading(1, False),
        id="a large DATA payload is skipped, not read",
    ),
]


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_the_meter_reads_frame_headers(raw: bytes, expected: Reading) -> None:
    assert FrameMeter(LIMIT).feed(raw) == expected


def _fed(meter: FrameMeter, pieces: list[bytes]) -> Reading:
    control = 0
    for piece in pieces:
        reading = meter.feed(piece)
        control += reading.control
        if reading.block_too_large:
            return Reading(control, True)
    return Reading(control, False)


@pytest.mark.parametrize(("raw", "expected"), CASES)
def test_the_meter_reads_the_same_from_any_pieces(raw: bytes, expected: Reading) -> None:
    for at in range(len(raw) + 1):
        assert _fed(FrameMeter(LIMIT), [raw[:at], raw[at:]]) == expected, at
    assert _fed(FrameMeter(LIMIT), [raw[i : i + 1] for i in range(len(raw))]) == expected


def test_the_meter_refuses_a_block_at_the_header_that_passes_the_limit() -> None:
    """The refusal comes with the frame header, before the payload that passes the limit."""
    meter = FrameMeter(LIMIT)
    assert meter.feed(wire(headers(1, 600, end_headers=False))) == Reading(0, False)
    assert meter.feed(continuation(1, 401).serialize()[:9]) == Reading(0, True)


def test_the_bucket_allows_its_burst_then_its_rate() -> None:
    bucket = Bucket(3, 0.0)
    assert [bucket.take() for _ in range(4)] == [True, True, True, False]
    bucket = Bucket(10, 0.0)
    assert bucket.take(10) and not bucket.take()
    bucket.give(5)
    assert bucket.take(4)
    bucket.give(100)  # never more than the burst
    assert bucket.take(10) and not bucket.take()
