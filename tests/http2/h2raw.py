"""An HTTP/2 client by hand, for the frames python-hyper's h2 will not send: floods, resets,
endless CONTINUATIONs, HPACK bombs, more streams than the server allows, a client that never
acknowledges or never reads.

`c = await RawH2.connect(port, cafile)` makes a TLS connection with ALPN h2 and sends the
preface and a SETTINGS frame; `c.send(frame, ...)` writes frames (hyperframe) as given;
`c.request_frame(sid, fields)` encodes a header block with the connection's HPACK encoder.
A task reads the server's frames as they come (`c.frames`), decoding header blocks so that
the HPACK state stays right; it never sends a WINDOW_UPDATE or a PING ACK of its own. With
`reading=False` nothing is read from the socket at all (a client that does not read).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import hpack
from hyperframe.frame import (
    DataFrame,
    Frame,
    GoAwayFrame,
    HeadersFrame,
    RstStreamFrame,
    SettingsFrame,
)

#: Upper bound for any one wait on the router, in seconds.
IO_TIMEOUT_S = 10.0
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

Headers = list[tuple[bytes, bytes]]


def get(path: str = "/", authority: str = "api.localhost", method: str = "GET") -> Headers:
    return [
        (b":method", method.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
    ]


@dataclass
class Answer:
    """What one stream received."""

    status: int | None = None
    data: bytearray = field(default_factory=bytearray)
    reset: int | None = None
    ended: bool = False


async def tcp(port: int, rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to the router, nothing sent yet."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(
            asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port)), IO_TIMEOUT_S
        )
    except BaseException:
        sock.close()
        raise
    return sock


class RawH2:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.frames: list[Frame] = []
        self.answers: dict[int, Answer] = {}
        self.goaway: GoAwayFrame | None = None
        self.server_settings = asyncio.Event()
        self.eof = asyncio.Event()
        self.changed = asyncio.Event()
        self.ack_settings = True
        self._buf = bytearray()
        self._task: asyncio.Task[None] | None = None

    @classmethod
    async def connect(
        cls,
        port: int,
        cafile: Path,
        settings: dict[int, int] | None = None,
        *,
        reading: bool = True,
        rcvbuf: int | None = None,
        sock: socket.socket | None = None,
        ack_settings: bool = True,
    ) -> RawH2:
        """`settings`: the client's SETTINGS (code -> value); `rcvbuf`: the socket's receive
        buffer, in bytes, set before connecting (a small one fills fast); `sock`: a socket
        already connected to `port` (by `tcp`), to start TLS on; `ack_settings=False`: the
        server's SETTINGS are never acknowledged."""
        if sock is None:
            sock = await tcp(port, rcvbuf)
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, ssl=ctx, server_hostname="api.localhost"),
            IO_TIMEOUT_S,
        )
        assert writer.get_extra_info("ssl_object").selected_alpn_protocol() == "h2"
        c = cls(reader, writer)
        c.ack_settings = ack_settings
        frame = SettingsFrame(0, settings=settings or {})
        writer.write(PREFACE + frame.serialize())
        if reading:
            c._task = asyncio.create_task(c._read())
            await asyncio.wait_for(c.server_settings.wait(), IO_TIMEOUT_S)
        return c

    # -- sending ---------------------------------------------------------------------------

    def request_frame(
        self, sid: int, fields: Headers, end_stream: bool = True, end_headers: bool = True
    ) -> HeadersFrame:
        flags = ["END_HEADERS"] * end_headers + ["END_STREAM"] * end_stream
        frame = HeadersFrame(sid, data=self.encoder.encode(fields), flags=flags)
        self.answers.setdefault(sid, Answer())
        return frame

    def send(self, *frames: Frame | bytes) -> None:
        if not self.writer.is_closing():
            self.writer.write(
                b"".join(f if isinstance(f, bytes) else f.serialize() for f in frames)
            )

    async def flood(self, pieces: Sequence[bytes], batch: int = 100) -> int:
        """Send `pieces` in writes of `batch` at once until the server goes: how many were
        sent (a write the server refused no longer counts)."""
        sent = 0
        try:
            while sent < len(pieces) and not self.eof.is_set() and not self.writer.is_closing():
                self.writer.write(b"".join(pieces[sent : sent + batch]))
                await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT_S)
                sent = min(len(pieces), sent + batch)
        except (OSError, ssl.SSLError, TimeoutError):
            pass  # the server closed the connection, or stopped reading it
        return sent

    # -- reading ---------------------------------------------------------------------------

    async def until(self, check: object, timeout_s: float = IO_TIMEOUT_S) -> None:
        """Wait until `check()` is true (or the connection ends: then it must be true)."""
        assert callable(check)
        async with asyncio.timeout(timeout_s):
            while not check():
                if self.eof.is_set():
                    assert check(), "the connection ended first"
                    return
                self.changed.clear()
                await self.changed.wait()

    async def closed(self) -> GoAwayFrame | None:
        """Wait for the server to close the connection; its GOAWAY, if one came."""
        await asyncio.wait_for(self.eof.wait(), IO_TIMEOUT_S)
        return self.goaway

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self.writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT_S)

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                self._buf += data
                self._parse()
                self.changed.set()
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.eof.set()
            self.changed.set()

    def _parse(self) -> None:
        while len(self._buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(self._buf[:9]))
            if len(self._buf) < 9 + length:
                return
            frame.parse_body(memoryview(self._buf[9 : 9 + length]))
            del self._buf[: 9 + length]
            self.frames.append(frame)
            self._frame(frame)

    def _frame(self, frame: Frame) -> None:
        if isinstance(frame, SettingsFrame) and "ACK" not in frame.flags:
            self.server_settings.set()
            if self.ack_settings:
                self.send(SettingsFrame(0, flags=["ACK"]))
        elif isinstance(frame, GoAwayFrame):
            self.goaway = frame
        answer = self.answers.get(frame.stream_id) if frame.stream_id else None
        if isinstance(frame, HeadersFrame):
            assert "END_HEADERS" in frame.flags, "the router's heads fit in one frame"
            fields = dict(self.decoder.decode(frame.data, raw=True))
            if answer is not None and b":status" in fields:
                answer.status = int(fields[b":status"])
        if answer is None:
            return
        if isinstance(frame, DataFrame):
            answer.data += frame.data
        elif isinstance(frame, RstStreamFrame):
            answer.reset = frame.error_code
            answer.ended = True
        if "END_STREAM" in frame.flags:
            answer.ended = True
