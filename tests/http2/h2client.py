"""A small HTTP/2 client for tests: python-hyper's h2 driving a TLS socket to the router.

`c = await H2Client.connect(port, cafile)` makes the connection (ALPN h2, SNI
api.localhost); `sid = c.request(headers, end_stream=...)` opens a stream; `send_body`
sends DATA as the server's windows allow; `await c.response(sid)` waits, bounded by
IO_TIMEOUT_S, until the stream ends or is reset. Every event is kept per stream. Received
DATA is acknowledged as it is read, so a small `window` stays small (flow control).
`checked=False` sends malformed header blocks as given; `ws_frame` and `read_ws_frame` are
the few bytes of WebSocket framing a tunnel over extended CONNECT needs.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings

#: Upper bound for any one wait on the router, in seconds.
IO_TIMEOUT_S = 10.0

Headers = list[tuple[bytes, bytes]]


@dataclass
class H2Stream:
    """What one stream received."""

    informational: list[Headers] = field(default_factory=list)  # 1xx heads, in order
    headers: Headers | None = None  # the final head
    data: bytearray = field(default_factory=bytearray)
    frames: int = 0  # DATA frames received
    trailers: Headers | None = None
    reset: int | None = None  # the error code of a RST_STREAM
    ended: bool = False  # END_STREAM or RST_STREAM received
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def status(self) -> int:
        assert self.headers is not None, "no response head"
        return int(dict(self.headers)[b":status"])

    def field(self, name: bytes) -> bytes | None:
        assert self.headers is not None, "no response head"
        return dict(self.headers).get(name)


def request_headers(
    path: str = "/", method: str = "GET", authority: str = "api.localhost", **extra: str
) -> Headers:
    """The pseudo-fields of a request, then `extra` (underscores in names become dashes)."""
    out = [
        (b":method", method.encode()),
        (b":scheme", b"https"),
        (b":authority", authority.encode()),
        (b":path", path.encode()),
    ]
    return out + [(k.replace("_", "-").encode(), v.encode()) for k, v in extra.items()]


class H2Client:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        window: int | None,
        checked: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=checked,
            normalize_outbound_headers=checked,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.streams: dict[int, H2Stream] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None  # a GOAWAY came
        self.eof = False  # the server closed the connection (or it broke)
        self.settings_seen = asyncio.Event()  # the server's SETTINGS arrived
        self.window_opened = asyncio.Event()
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self._task = asyncio.create_task(self._read())

    @classmethod
    async def connect(
        cls,
        port: int,
        cafile: Path,
        host: str = "api.localhost",
        window: int | None = None,
        checked: bool = True,
    ) -> H2Client:
        """`window`: the client's INITIAL_WINDOW_SIZE, in bytes (h2's default otherwise).
        `checked=False` sends header blocks as given, malformed ones too."""
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["h2"])
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname=host),
            IO_TIMEOUT_S,
        )
        sslobj = writer.get_extra_info("ssl_object")
        assert sslobj.selected_alpn_protocol() == "h2"
        client = cls(reader, writer, window, checked)
        client.flush()
        await asyncio.wait_for(client.settings_seen.wait(), IO_TIMEOUT_S)
        return client

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data and not self.writer.is_closing():
            self.writer.write(data)

    def request(self, headers: Headers, end_stream: bool = True) -> int:
        sid: int = self.conn.get_next_available_stream_id()
        self.streams[sid] = H2Stream()
        self.conn.send_headers(sid, headers, end_stream=end_stream)
        self.flush()
        return sid

    async def send_body(self, sid: int, data: bytes, end_stream: bool = True) -> None:
        """DATA frames as the server's windows allow."""
        view = memoryview(data)
        while view:
            size = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if size <= 0:
                self.window_opened.clear()
                await asyncio.wait_for(self.window_opened.wait(), IO_TIMEOUT_S)
                continue
            self.conn.send_data(sid, bytes(view[:size]))
            view = view[size:]
            self.flush()
        if end_stream:
            self.conn.end_stream(sid)
            self.flush()
        await asyncio.wait_for(self.writer.drain(), IO_TIMEOUT_S)

    def send_trailers(self, sid: int, trailers: Headers) -> None:
        self.conn.send_headers(sid, trailers, end_stream=True)
        self.flush()

    def reset(self, sid: int) -> None:
        with contextlib.suppress(h2.exceptions.StreamClosedError):  # it ended first
            self.conn.reset_stream(sid)
        self.flush()

    async def until(self, sid: int, done: Callable[[H2Stream], bool] | None = None) -> H2Stream:
        """Wait until the stream has ended, or `done(stream)` is true."""
        stream = self.streams[sid]
        check = done or (lambda s: s.ended)
        async with asyncio.timeout(IO_TIMEOUT_S):
            while not check(stream):
                if self.eof:
                    raise AssertionError(f"connection closed; GOAWAY: {self.terminated}")
                stream.changed.clear()
                await stream.changed.wait()
        return stream

    async def response(self, sid: int) -> H2Stream:
        return await self.until(sid)

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.conn.close_connection()
            self.flush()
            self.writer.close()
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        with contextlib.suppress(OSError, ssl.SSLError):  # the server left first
            await asyncio.wait_for(self.writer.wait_closed(), IO_TIMEOUT_S)

    async def __aenter__(self) -> H2Client:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- reading ---------------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    break
                for event in self.conn.receive_data(data):
                    self._event(event)
                self.flush()
        except (OSError, ssl.SSLError):
            pass
        finally:
            self.eof = True
            for stream in self.streams.values():
                stream.changed.set()

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RemoteSettingsChanged):
            self.settings_seen.set()
            self.window_opened.set()
        elif isinstance(event, h2.events.WindowUpdated):
            self.window_opened.set()
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.terminated = event
            if event.error_code == h2.errors.ErrorCodes.NO_ERROR:
                # graceful: the streams it took may finish (RFC 9113, 6.8), which h2 would
                # refuse after any GOAWAY (python-hyper/h2#1181)
                self.conn.state_machine.state = h2.connection.ConnectionState.CLIENT_OPEN
            for stream in self.streams.values():
                stream.changed.set()  # a wait may be for the GOAWAY
        sid: int = getattr(event, "stream_id", 0)
        stream = self.streams.get(sid)
        if stream is None:
            return
        if isinstance(event, h2.events.InformationalResponseReceived):
            stream.informational.append(list(event.headers))
        elif isinstance(event, h2.events.ResponseReceived):
            stream.headers = list(event.headers)
        elif isinstance(event, h2.events.DataReceived):
            stream.data += event.data
            stream.frames += 1
            if event.flow_controlled_length:
                self.conn.acknowledge_received_data(event.flow_controlled_length, sid)
        elif isinstance(event, h2.events.TrailersReceived):
            stream.trailers = list(event.headers)
        elif isinstance(event, h2.events.StreamEnded):
            stream.ended = True
        elif isinstance(event, h2.events.StreamReset):
            stream.reset = int(event.error_code)
            stream.ended = True
        stream.changed.set()


# -- WebSocket frames (RFC 6455, 5.2), for a tunnel over extended CONNECT -----------------------


def ws_frame(opcode: int, payload: bytes, mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One final, masked frame, as a client sends it."""
    n = len(payload)
    if n < 126:
        length = bytes([0x80 | n])
    elif n < 1 << 16:
        length = bytes([0x80 | 126]) + n.to_bytes(2, "big")
    else:
        length = bytes([0x80 | 127]) + n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x80 | opcode]) + length + mask + masked


def read_ws_frame(data: bytes | bytearray) -> tuple[int, bytes, int] | None:
    """The first whole unmasked frame in `data`, as a server sends it: (opcode, payload,
    bytes used), or None while it is incomplete."""
    if len(data) < 2:
        return None
    assert not data[1] & 0x80, "a server's frame is never masked"
    n, at = data[1] & 0x7F, 2
    if n >= 126:
        width = 2 if n == 126 else 8
        if len(data) < at + width:
            return None
        n, at = int.from_bytes(data[at : at + width], "big"), at + width
    if len(data) < at + n:
        return None
    return data[0] & 0x0F, bytes(data[at : at + n]), at + n
