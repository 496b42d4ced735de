"""The budgets of an HTTP/2 connection, without I/O: token buckets, and a meter that reads
the frame headers of what a client sends before h2 parses it.

Why a meter of our own: h2 buffers a header block until its END_HEADERS and only then
decodes it, capped at 64 CONTINUATION frames, so a block could hold 64 x 16 KiB (1 MiB)
before h2 says no; and HPACK lets a block of dynamic-table size updates cost the decoder a
Python loop per byte with nothing counted (1 MiB took 1.2 s of the event loop, measured),
which the decoded-size limit never sees. The meter refuses a block past its byte limit
when the frame header that would pass it arrives (CVE-2024-27316), before a byte of it is
buffered or decoded.

It also counts the frames that carry no request and no body: SETTINGS, PING, PRIORITY,
RST_STREAM, WINDOW_UPDATE, GOAWAY, unknown types, DATA with no payload and HEADERS on a
stream already opened (trailers, or abuse). h2 answers some of them on its own (a PING's
ACK, a RST_STREAM for a frame on a reset stream) without telling its user, so counting
h2's events would miss them; the headers are all the meter needs (RFC 9113, 4.1).
"""

from __future__ import annotations

import time
from typing import NamedTuple

#: The client connection preface (RFC 9113, 3.4), before the first frame header.
PREFACE_BYTES = 24
FRAME_HEADER_BYTES = 9
DATA = 0x0
HEADERS = 0x1
CONTINUATION = 0x9
END_HEADERS = 0x4


class Bucket:
    """A token bucket: `take()` is False once the burst is spent faster than the rate."""

    __slots__ = ("at", "burst", "rate", "tokens")

    def __init__(self, burst: float, rate: float) -> None:
        self.burst = self.tokens = burst
        self.rate = rate
        self.at = time.monotonic()

    def take(self, n: int = 1) -> bool:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
        self.at = now
        self.tokens -= n
        return self.tokens >= 0

    def give(self, n: int) -> None:
        """Tokens earned by the router's own work (a DATA frame sent justifies the
        WINDOW_UPDATE that acknowledges it), up to the burst."""
        self.tokens = min(self.burst, self.tokens + n)


class Reading(NamedTuple):
    control: int  # frames that carry no request and no body
    block_too_large: bool  # a header block passed the meter's limit: refuse the connection


class FrameMeter:
    """Reads the frame headers of a client's bytes as they arrive, in any pieces."""

    __slots__ = ("block", "head", "highest", "limit", "skip")

    def __init__(self, block_limit: int) -> None:
        self.limit = block_limit  # bytes of one header block (HEADERS + CONTINUATIONs)
        self.skip = PREFACE_BYTES  # bytes to pass over before the next frame header
        self.head = b""  # the start of a frame header split between two reads
        self.block = -1  # bytes of the header block being read; -1: none is open
        self.highest = 0  # the highest stream a HEADERS frame has opened

    def feed(self, data: bytes) -> Reading:
        control = 0
        at, size = 0, len(data)
        while True:
            if self.skip:
                step = min(self.skip, size - at)
                self.skip -= step
                at += step
                if self.skip:
                    return Reading(control, False)
            if self.head:
                need = FRAME_HEADER_BYTES - len(self.head)
                head = self.head + data[at : at + need]
            else:
                head = data[at : at + FRAME_HEADER_BYTES]
            if len(head) < FRAME_HEADER_BYTES:
                self.head = head
                return Reading(control, False)
            at += FRAME_HEADER_BYTES - len(self.head)
            self.head = b""
            length = int.from_bytes(head[:3], "big")
            kind, flags = head[3], head[4]
            stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
            self.skip = length
            if self.block >= 0 or kind == HEADERS:
                if self.block < 0:  # a HEADERS frame starts a block
                    if stream > self.highest:
                        self.highest = stream
                    else:
                        control += 1
                    self.block = 0
                self.block += length
                if self.block > self.limit:
                    return Reading(control, True)
                if flags & END_HEADERS:
                    self.block = -1
            elif kind != DATA or length == 0:
                control += 1
