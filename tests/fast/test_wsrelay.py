"""devrouter.wsrelay as units: the handshake check, the router's own close frames, and the
frame tracker that lets the relay keep its rules without parsing payloads. The relay itself
runs through a router in test_websocket.py, test_hardening.py and test_fastpath.py."""

from __future__ import annotations

import struct

import pytest

from devrouter.fast.wsrelay import FrameTracker, close_frame
from devrouter.http1.response_head import accept_for


def frame(first: int, payload_len: int, masked: bool = False) -> bytes:
    """A frame header for `payload_len` bytes (payload not included)."""
    mask_bit = 0x80 if masked else 0
    if payload_len < 126:
        head = bytes((first, mask_bit | payload_len))
    elif payload_len < 1 << 16:
        head = bytes((first, mask_bit | 126)) + struct.pack("!H", payload_len)
    else:
        head = bytes((first, mask_bit | 127)) + struct.pack("!Q", payload_len)
    return head + (b"\x01\x02\x03\x04" if masked else b"")


def test_accept_is_rfc_6455s_example() -> None:
    assert accept_for(b"dGhlIHNhbXBsZSBub25jZQ==") == b"s3pPLMBiTxaQ9kYGzzhZRbK+xOo="


@pytest.mark.parametrize("masked", [False, True])
def test_close_frame_carries_code_and_reason(masked: bool) -> None:
    raw = close_frame(1011, b"backend closed the connection", masked)
    assert raw[0] == 0x88 and bool(raw[1] & 0x80) == masked
    length = raw[1] & 0x7F
    payload = raw[6:] if masked else raw[2:]
    if masked:
        payload = bytes(b ^ raw[2 + i % 4] for i, b in enumerate(payload))
    assert len(payload) == length
    assert struct.unpack("!H", payload[:2])[0] == 1011
    assert payload[2:] == b"backend closed the connection"


def test_whole_frames_pass_and_end_on_a_boundary() -> None:
    t = FrameTracker(1000)
    data = frame(0x81, 5) + b"hello" + frame(0x82, 300, masked=True) + b"x" * 300
    out, too_big = t.feed(data)
    assert out is data and not too_big and t.at_boundary


def test_a_split_header_is_held_back_until_whole() -> None:
    t = FrameTracker(1 << 20)
    data = frame(0x82, 70000, masked=True) + b"y" * 10
    for i in range(13):  # all but the last byte of the 14-byte header, one at a time
        out, too_big = t.feed(data[i : i + 1])
        assert out == b"" and not too_big and t.at_boundary
    out, too_big = t.feed(data[13:])
    assert out == data and not too_big
    assert not t.at_boundary and t.payload_left == 70000 - 10


def test_payload_split_over_reads_is_mid_frame() -> None:
    t = FrameTracker(1000)
    out, _ = t.feed(frame(0x81, 10) + b"12345")
    assert out.endswith(b"12345") and not t.at_boundary
    out, _ = t.feed(b"67890" + frame(0x81, 200)[:1])
    assert out == b"67890" and t.at_boundary  # half a header is held, not relayed
    out, _ = t.feed(frame(0x81, 200)[1:] + b"z")
    assert out == frame(0x81, 200) + b"z" and not t.at_boundary


def test_a_message_over_the_limit_stops_before_the_frame_that_crosses_it() -> None:
    t = FrameTracker(10)
    first = frame(0x01, 6) + b"abcdef"  # a text message's first fragment
    data = first + frame(0x80, 5) + b"ghijk"  # 11 bytes in all: one too many
    out, too_big = t.feed(data)
    assert out == first and too_big and t.at_boundary


def test_control_frames_do_not_count_towards_the_message() -> None:
    t = FrameTracker(10)
    data = frame(0x01, 6) + b"abcdef" + frame(0x89, 4) + b"ping" + frame(0x80, 4) + b"ghij"
    out, too_big = t.feed(data)
    assert out == data and not too_big


def test_a_message_of_exactly_the_limit_passes_and_a_new_message_starts_over() -> None:
    t = FrameTracker(10)
    data = frame(0x82, 10) + b"0123456789" + frame(0x82, 10) + b"9876543210"
    assert t.feed(data) == (data, False)


def test_close_frames_are_noticed() -> None:
    t = FrameTracker(10)
    t.feed(frame(0x81, 2) + b"hi")
    assert not t.closed
    t.feed(close_frame(1000, b"", masked=True))
    assert t.closed and t.at_boundary


@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("first", [0x81, 0x82, 0x01, 0x00, 0x80, 0x83, 0x88, 0x89])
@pytest.mark.parametrize("length", [0, 1, 9, 10, 125, 126])
def test_a_frame_read_whole_is_judged_as_one_read_in_two_pieces(
    first: int, length: int, masked: bool
) -> None:
    """The one-whole-small-frame shortcut agrees with the general loop, limit included."""
    data = frame(first, length, masked) + b"p" * length
    for limit, started in ((10, 0), (10, 5), (1000, 0)):
        whole, pieces = FrameTracker(limit), FrameTracker(limit)
        whole.message_bytes = pieces.message_bytes = started  # a message already under way
        out, too_big = whole.feed(data)
        out1, big1 = pieces.feed(data[:1])
        out2, big2 = (b"", big1) if big1 else pieces.feed(data[1:])
        assert (out, too_big) == (out1 + out2, big1 or big2)
        assert (whole.message_bytes, whole.closed, whole.payload_left) == (
            pieces.message_bytes,
            pieces.closed,
            pieces.payload_left,
        )
