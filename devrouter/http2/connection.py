"""One HTTP/2 client connection: python-hyper's h2 state machine, and the streams it relays.

Each stream's request is written into an HTTP/1 engine through a `Lane`
(devrouter.http2.bridge) and its response read back (devrouter.http2.response), so the
HTTP/2 engine holds no routing or header rules of its own: it frames, multiplexes and
applies HTTP/2's own limits. Those limits, each a case of docs/security.md's catalog:

- streams: at most MAX_CONCURRENT_STREAMS open, one more is refused with REFUSED_STREAM
  (h2 itself would end the connection, and the streams on it); streams reset faster than
  RESET_BUDGET / RESETS_PER_S allows get GOAWAY, whoever sent the RST_STREAM (rapid reset,
  CVE-2023-44487, and the resets a client's bad frames oblige h2 or the router to send,
  CVE-2025-8671);
- header blocks: MAX_HEADER_BLOCK_BYTES on the wire, refused by the frame meter
  (devrouter.http2.limits) before h2 buffers them (CONTINUATION floods, CVE-2024-27316),
  and MAX_HEADER_LIST_BYTES decoded, by hpack (HPACK bombs); the router's own HPACK table is
  at most ENCODER_TABLE_BYTES whatever the client allows;
- control frames (SETTINGS, PING, PRIORITY, RST_STREAM, WINDOW_UPDATE, empty DATA...):
  a budget per second, past it GOAWAY (the floods of CVE-2019-9512/9515/9518); each DATA
  frame the router sends pays for the WINDOW_UPDATEs that acknowledge it;
- memory: a stream holds at most bridge.HIGH_WATER_BYTES of response before its engine is
  paused; a client that does not read gets nothing more written past
  MAX_OUTBOUND_BUFFER_BYTES of control frames, then GOAWAY, and is dropped CLOSE_GRACE_S
  later however much is unsent;
- time: a connection with no open stream for IDLE_TIMEOUT_S gets GOAWAY, and one whose
  client has not acknowledged the router's SETTINGS in SETTINGS_TIMEOUT_S too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from .bridge import Lane
from .limits import Bucket, FrameMeter
from .request import Malformed, authority_of, chunk, last_chunk, to_http1, with_body
from .stream import Stream

__all__ = ["Http2Connection", "Stream"]

if TYPE_CHECKING:
    from .server import Http2Server

log = logging.getLogger("devrouter.proxy")

#: Streams a client may have open at once: enough for a module graph's first load (Vite
#: sends hundreds of module requests at once; portless refused streams past 100).
MAX_CONCURRENT_STREAMS = 256
#: Decoded header list size, in bytes (HTTP/1's limits: 100 fields of up to 8 KiB, and a
#: little over a browser's biggest cookie jar).
MAX_HEADER_LIST_BYTES = 64 * 1024
#: A header block's bytes on the wire (HEADERS and its CONTINUATIONs), at most: HPACK never
#: takes more room than the decoded list counts (32 bytes a field on top of its name and
#: value) but for a HEADERS frame's padding, at most 256 bytes.
MAX_HEADER_BLOCK_BYTES = MAX_HEADER_LIST_BYTES + 1024
#: The router's HPACK table for its responses, in bytes, whatever larger one the client
#: allows (RFC 7541, 4.2): the protocol's default.
ENCODER_TABLE_BYTES = 4096
#: The window of a stream being forwarded, and the connection's, in bytes: what a client may
#: send before the router acknowledges it (so what an upload can hold in memory).
STREAM_WINDOW_BYTES = 1024 * 1024
CONNECTION_WINDOW_BYTES = 16 * 1024 * 1024
#: The window a stream starts with, in bytes (STREAM_WINDOW_BYTES once the gate lets it in):
#: streams waiting at the gate hold half the connection's window at most; with all of it,
#: interleaved uploads waiting there stalled for good the ones it had let through.
QUEUED_WINDOW_BYTES = 32 * 1024
assert MAX_CONCURRENT_STREAMS * QUEUED_WINDOW_BYTES <= CONNECTION_WINDOW_BYTES // 2
#: Stream resets: a burst of RESET_BUDGET, refilled at RESETS_PER_S per second. A browser
#: that reloads a page cancels every stream in flight at once: twice that fits.
RESET_BUDGET = 2 * MAX_CONCURRENT_STREAMS
RESETS_PER_S = 100.0
#: Control frames (devrouter.http2.limits.FrameMeter): a burst of CONTROL_BUDGET, refilled
#: at CONTROL_PER_S per second. A browser sends a handful, and a WINDOW_UPDATE or two per
#: DATA frame it reads, which that frame pays for (DATA_FRAME_CREDIT).
CONTROL_BUDGET = 1000
CONTROL_PER_S = 500.0
DATA_FRAME_CREDIT = 2
#: Bytes written but not yet sent to a client that does not read; past it, the connection
#: is closed.
MAX_OUTBOUND_BUFFER_BYTES = 4 * 1024 * 1024
#: A closed connection whose bytes the client does not take is dropped after this many
#: seconds (a close waits for them otherwise, for as long as the client keeps its window
#: shut).
CLOSE_GRACE_S = 5.0
#: Idle lanes (HTTP/1 engine connections) kept per HTTP/2 connection.
MAX_IDLE_LANES = 32
#: A connection with no open stream is closed after this many seconds.
IDLE_TIMEOUT_S = 120.0
#: A client that has not acknowledged the router's SETTINGS in this many seconds gets GOAWAY
#: SETTINGS_TIMEOUT (RFC 9113, 6.5.3): until it does, its streams have the default window,
#: not the router's.
SETTINGS_TIMEOUT_S = 10.0
#: A WebSocket's client that ended its side (END_STREAM, after its close frame) waits this
#: long for the backend's close frame before the tunnel is cut, in seconds (RFC 6455, 7.1.1
#: lets the server close first; a backend that never does must not hold the stream).
TUNNEL_LINGER_S = 10.0


class Http2Connection(asyncio.Protocol):
    """The protocol of one TLS connection that chose `h2` by ALPN."""

    def __init__(self, server: Http2Server, refuse: bool = False) -> None:
        self.server = server
        self.loop = server.loop
        self.refuse = refuse  # the router is full: GOAWAY at once
        # request.to_http1 refuses a malformed request per stream (RFC 9113, 8.1.1); h2: GOAWAY
        # Inbound: request.to_http1 checks every rule and answers with a stream error where
        # h2 would end the connection. Outbound: response.h2_fields already lowercases names
        # and drops connection-specific fields; h2's checks of them cost 9% of the CPU per
        # stream (py-spy), and its normalising only marks request fields (authorization,
        # short cookies) never-indexed, which a response does not carry.
        config = h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
        self.h2 = h2.connection.H2Connection(config=config)
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, Stream] = {}
        self.idle_lanes: list[Lane] = []
        self.lanes: set[Lane] = set()
        self.resets = Bucket(RESET_BUDGET, RESETS_PER_S)
        self.control = Bucket(CONTROL_BUDGET, CONTROL_PER_S)
        self.meter = FrameMeter(MAX_HEADER_BLOCK_BYTES)
        self.write_paused = False
        self.closed = False
        self.draining = False  # a graceful GOAWAY was sent: no new streams
        self.flush_pending = False  # a flush_now is scheduled (flush)
        self.idle_timer: asyncio.TimerHandle | None = None
        self.drop_timer: asyncio.TimerHandle | None = None
        self.settings_timer: asyncio.TimerHandle | None = None
        self._extra: dict[str, Any] = {}

    # -- asyncio.Protocol ----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.server.connections.add(self)
        conn = self.h2
        conn.local_settings = _settings(MAX_CONCURRENT_STREAMS)
        conn.initiate_connection()
        # h2 answers a stream past its own limit with a connection error, which costs every
        # stream open; the router refuses it alone (_request), so h2's limit is set past the
        # one sent (h2 still ends a client that ignores it twice over)
        conn.local_settings = _settings(2 * MAX_CONCURRENT_STREAMS)
        conn.decoder.max_header_list_size = MAX_HEADER_LIST_BYTES
        # a change, applied once acknowledged: until then the default holds (RFC 9113, 6.9.2)
        conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: QUEUED_WINDOW_BYTES})
        conn.increment_flow_control_window(CONNECTION_WINDOW_BYTES - 65535)
        if self.refuse:
            conn.close_connection(
                h2.errors.ErrorCodes.ENHANCE_YOUR_CALM, additional_data=b"too many connections"
            )
            self.flush_now()
            self.transport.close()
            return
        self.flush()
        self._arm_idle()
        code = h2.errors.ErrorCodes.SETTINGS_TIMEOUT
        self.settings_timer = self.loop.call_later(SETTINGS_TIMEOUT_S, self.goaway, code)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        reading = self.meter.feed(data)
        if reading.block_too_large:
            log.info("HTTP/2 client sent a header block over %d bytes", MAX_HEADER_BLOCK_BYTES)
            self.goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return
        if reading.control and not self.control.take(reading.control):
            log.info("HTTP/2 client sends control frames faster than allowed; closing it")
            self.goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)
            return
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            log.info("HTTP/2 connection closed: %s", exc)
            self.flush_now()  # h2 has queued the GOAWAY
            self.close()
            return
        try:
            for event in events:
                if self.closed:  # a budget ran out: the rest is not answered
                    return
                self._event(event)
        except Exception:  # a bug here must cost one connection, not the router
            log.exception("internal error on an HTTP/2 connection; closing it")
            self.close()
            return
        self.flush()
        transport = self.transport
        if transport is not None and transport.get_write_buffer_size() > MAX_OUTBOUND_BUFFER_BYTES:
            log.info("HTTP/2 client does not read what it asks for; closing its connection")
            self.goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server.connections.discard(self)
        self.server.settled()
        for timer in (self.idle_timer, self.drop_timer, self.settings_timer):
            if timer is not None:
                timer.cancel()
        for stream in list(self.streams.values()):
            self._forget(stream)
        for lane in list(self.lanes):
            lane.drop()
        self.idle_lanes.clear()

    def pause_writing(self) -> None:
        self.write_paused = True

    def resume_writing(self) -> None:
        self.write_paused = False
        for stream in list(self.streams.values()):
            if stream.pending or stream.response_done:
                self.flush_stream(stream)
        self.flush()

    # -- events --------------------------------------------------------------------------

    def _event(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            self._request(event)
        elif isinstance(event, h2.events.DataReceived):
            self._data(event)
        elif isinstance(event, h2.events.StreamEnded):
            self._stream_ended(event.stream_id)
        elif isinstance(event, h2.events.TrailersReceived):
            self._trailers(event)
        elif isinstance(event, h2.events.StreamReset):
            self._stream_reset(event)
        elif isinstance(event, h2.events.WindowUpdated):
            self._window(event.stream_id)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            table = event.changed_settings.get(h2.settings.SettingCodes.HEADER_TABLE_SIZE)
            if table is not None and table.new_value > ENCODER_TABLE_BYTES:
                self.h2.encoder.header_table_size = ENCODER_TABLE_BYTES
            self._window(0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.close()
        elif isinstance(event, h2.events.SettingsAcknowledged) and self.settings_timer:
            self.settings_timer.cancel()  # h2 applies the changes sent so far at the first
            self.settings_timer = None
        # control frames are counted by the meter, from their headers (data_received)

    def _control(self) -> None:
        if not self.control.take():
            log.info("HTTP/2 client sends control frames faster than allowed; closing it")
            self.goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _refuse(self, stream_id: int, code: h2.errors.ErrorCodes) -> None:
        """A stream reset before it was forwarded; it counts against the reset budget like
        the client's own resets."""
        self.h2.reset_stream(stream_id, code)
        self._count_reset()

    def _count_reset(self) -> None:
        if not self.resets.take():
            log.info("HTTP/2 client has streams reset faster than allowed; closing it")
            self.goaway(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    def _request(self, event: h2.events.RequestReceived) -> None:
        stream_id = event.stream_id
        headers = event.headers
        end_stream = event.stream_ended is not None
        if self.draining:  # sent before the client read the GOAWAY
            self.h2.reset_stream(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        if len(self.streams) >= MAX_CONCURRENT_STREAMS:  # RFC 9113, 5.1.2
            self._refuse(stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
            return
        try:
            request = to_http1(headers, end_stream)
        except Malformed as exc:
            log.info("HTTP/2 stream %d refused: %s", stream_id, exc)
            self._refuse(stream_id, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        stream = Stream(self, stream_id, request)
        self.streams[stream_id] = stream
        if self.idle_timer is not None:
            self.idle_timer.cancel()
            self.idle_timer = None
        self.server.gate.enter(stream, authority_of(headers))

    def start(self, stream: Stream) -> None:
        """The gate let `stream` through: give it a lane and write its request in."""
        if stream.ended or self.closed:
            self.server.gate.leave(stream)
            return
        lane = None
        while self.idle_lanes:
            candidate = self.idle_lanes.pop()
            if not candidate.closing:
                lane = candidate
                break
        if lane is None:
            lane = Lane(self, self.server.engine())
            self.lanes.add(lane)
            lane.start()
        stream.lane = lane
        stream.started = True
        lane.stream = stream
        # a body to come: the window of a forwarded stream (unless h2 has closed the stream
        # already, for a frame read in the same batch: it is gone from h2.streams)
        if not stream.request_done and stream.id in self.h2.streams:
            grow = STREAM_WINDOW_BYTES - QUEUED_WINDOW_BYTES
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.increment_flow_control_window(grow, stream.id)
            self.flush()
        held, stream.held = stream.held, 0
        lane.deliver(stream.request.head, held, stream.id)
        if stream.request_done and not lane.closing:
            if stream.request.websocket:
                self._linger(stream)
            elif stream.request.chunked:
                lane.deliver(stream.tail)

    def _data(self, event: h2.events.DataReceived) -> None:
        stream = self.streams.get(event.stream_id)
        size = event.flow_controlled_length
        if size and not event.data and event.stream_ended is None:
            self._control()  # padding alone: the meter saw a frame with a payload
        if stream is None or stream.lane is None:
            if stream is not None and not stream.started:  # queued at the gate: hold it
                stream.request = with_body(stream.request, event.data)
                stream.held += size
                return
            self.h2.acknowledge_received_data(size, event.stream_id)
            return
        data = chunk(event.data) if stream.request.chunked and event.data else event.data
        stream.lane.deliver(data, size, stream.id)

    def _trailers(self, event: h2.events.TrailersReceived) -> None:
        stream = self.streams.get(event.stream_id)
        if stream is None or not stream.request.chunked:
            return
        try:
            end = last_chunk(event.headers)
        except Malformed as exc:
            log.info("HTTP/2 stream %d refused: %s", event.stream_id, exc)
            self.reset(stream, h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        stream.tail = end
        self._finish_request(stream)

    def _stream_ended(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is None or stream.request_done:
            return
        self._finish_request(stream)

    def _finish_request(self, stream: Stream) -> None:
        if stream.request_done:
            return
        stream.request_done = True
        if stream.lane is None:
            return  # still at the gate: its start() writes the whole request
        if stream.request.websocket:
            self._linger(stream)
        elif stream.request.chunked:
            stream.lane.deliver(stream.tail)
        self._maybe_done(stream)

    def _linger(self, stream: Stream) -> None:
        """The client ended its side of a WebSocket tunnel: a half-close, as over TCP. The
        engine is not told (both take a client's EOF as gone, and would cut the backend's
        close frame off); the backend's close ends the tunnel, or TUNNEL_LINGER_S does."""
        self.loop.call_later(TUNNEL_LINGER_S, self._cut_tunnel, stream)

    def _cut_tunnel(self, stream: Stream) -> None:
        if self.streams.get(stream.id) is stream and not stream.ended:
            self.reset(stream, h2.errors.ErrorCodes.NO_ERROR)

    def _stream_reset(self, event: h2.events.StreamReset) -> None:
        """The client reset a stream, or h2 did for a frame of the client's it could not
        take (a window past 2^31-1, DATA on a closed stream): both count."""
        stream = self.streams.get(event.stream_id)
        self._count_reset()
        if stream is not None:
            stream.ended = True
            self._forget(stream)

    def _window(self, stream_id: int) -> None:
        streams = self.streams.values() if stream_id == 0 else [self.streams.get(stream_id)]
        for stream in list(streams):
            if stream is not None and (stream.pending or stream.response_done):
                self.flush_stream(stream)

    # -- sending -------------------------------------------------------------------------

    def send_headers(self, stream: Stream, fields: list[tuple[bytes, bytes]]) -> None:
        if stream.ended or self.closed:
            return
        try:
            self.h2.send_headers(stream.id, fields)
        except h2.exceptions.StreamClosedError:
            self._closed_under(stream)
        self.flush()

    def flush_stream(self, stream: Stream) -> None:
        if stream.ended or self.closed:
            return
        conn = self.h2
        pending = stream.pending
        ended = False
        try:
            if pending and not self.write_paused:
                window = min(conn.local_flow_control_window(stream.id), len(pending))
                size = conn.max_outbound_frame_size
                sent = frames = 0
                # the last frame of a whole response ends the stream (no empty DATA after)
                ends = stream.response_done and not stream.trailers and window == len(pending)
                while sent < window:
                    n = min(size, window - sent)
                    last = ends and sent + n == window
                    conn.send_data(stream.id, bytes(pending[sent : sent + n]), end_stream=last)
                    sent += n
                    frames += 1
                if sent:
                    del pending[:sent]
                    self.control.give(frames * DATA_FRAME_CREDIT)
                ended = ends
            if stream.lane is not None:
                stream.lane.backlog(len(pending))
            if not pending and stream.response_done:
                if ended:
                    pass
                elif stream.trailers:
                    conn.send_headers(stream.id, stream.trailers, end_stream=True)
                else:
                    conn.end_stream(stream.id)
                stream.ended = True
                self._maybe_done(stream)
        except h2.exceptions.StreamClosedError:
            self._closed_under(stream)
        self.flush()

    def _closed_under(self, stream: Stream) -> None:
        """h2 has read the client's RST_STREAM; the events before it are being handled."""
        stream.ended = True
        self._forget(stream)

    def _maybe_done(self, stream: Stream) -> None:
        """A stream whose response has been sent: its lane goes back to the idle ones when
        the request was whole too (else the engine is mid-request, and the lane goes)."""
        if not stream.ended:
            return
        lane = stream.lane
        if lane is not None and not stream.request_done:
            # answered before the upload ended: tell the client to stop (RFC 9113, 8.1)
            self.h2.reset_stream(stream.id, h2.errors.ErrorCodes.NO_ERROR)
            lane.drop()
        elif lane is not None and lane.stream is stream and not lane.closing:
            lane.stream = None
            if len(self.idle_lanes) < MAX_IDLE_LANES and not stream.request.websocket:
                self.idle_lanes.append(lane)
            else:
                lane.drop()
        self._forget(stream)

    def reset(self, stream: Stream, code: h2.errors.ErrorCodes) -> None:
        if not stream.ended and not self.closed:
            stream.ended = True
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.reset_stream(stream.id, code)
            self.flush()
        if stream.lane is not None:
            stream.lane.drop()
        self._forget(stream)

    def _forget(self, stream: Stream) -> None:
        if self.streams.pop(stream.id, None) is None:
            return
        self.server.gate.leave(stream)
        lane = stream.lane
        if lane is not None and lane.stream is stream:
            lane.drop()  # the stream went before its response ended
        if stream.held:  # received, never given to the engine: give the window back
            held, stream.held = stream.held, 0
            self.acknowledge(held, stream.id)
        if not self.streams:
            self._arm_idle()
            self.server.settled()

    def flush(self) -> None:
        """Write what h2 has queued, once this turn of the loop is over: the frames of every
        stream answered in the same turn go out in one TLS write (per event they cost a TLS
        record and a send() each: 18% of the CPU at 50x10 streams, py-spy)."""
        if not self.flush_pending:
            self.flush_pending = True
            self.loop.call_soon(self.flush_now)

    def flush_now(self) -> None:
        self.flush_pending = False
        data = self.h2.data_to_send()
        if data and self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    # -- the lane's calls ----------------------------------------------------------------

    def acknowledge(self, size: int, stream_id: int) -> None:
        if not self.closed:
            # a stream already gone: h2 reopens the connection's window alone
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self.h2.acknowledge_received_data(size, stream_id)
            self.flush()

    def hold(self, size: int, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None:
            stream.held += size

    def release_held(self, stream_id: int) -> None:
        stream = self.streams.get(stream_id)
        if stream is not None and stream.held:
            held, stream.held = stream.held, 0
            self.acknowledge(held, stream_id)

    def lane_gone(self, lane: Lane) -> None:
        self.lanes.discard(lane)
        if lane in self.idle_lanes:
            self.idle_lanes.remove(lane)

    def extra(self, name: str, default: Any) -> Any:
        transport = self.transport
        return default if transport is None else transport.get_extra_info(name, default)

    def release_gate(self, stream: Stream) -> None:
        self.server.gate.leave(stream)

    # -- closing ---------------------------------------------------------------------------

    def _arm_idle(self) -> None:
        if self.idle_timer is None and not self.closed:
            self.idle_timer = self.loop.call_later(IDLE_TIMEOUT_S, self._idle)

    def _idle(self) -> None:
        self.idle_timer = None
        if not self.streams:
            self.goaway(h2.errors.ErrorCodes.NO_ERROR)

    def goaway(self, code: h2.errors.ErrorCodes) -> None:
        if self.closed:
            return
        self.h2.close_connection(code)
        self.flush_now()
        self.close()

    def close(self) -> None:
        transport = self.transport
        if transport is not None and not transport.is_closing():
            self.flush_now()
            transport.close()
            if transport.get_write_buffer_size():  # maybe a client that does not read
                self.drop_timer = self.loop.call_later(CLOSE_GRACE_S, transport.abort)
        self.closed = True

    def shutdown(self) -> None:
        """Graceful: GOAWAY with the last stream taken; the open ones may finish. The frame is
        written by hand: h2 sends nothing after its own GOAWAY (python-hyper/h2#1181)."""
        if self.closed:
            return
        if not self.streams:
            self.goaway(h2.errors.ErrorCodes.NO_ERROR)
            return
        self.draining = True
        self.flush_now()
        if self.transport is not None and not self.transport.is_closing():
            frame = GoAwayFrame(last_stream_id=self.h2.highest_inbound_stream_id)
            self.transport.write(frame.serialize())


def _settings(streams: int) -> h2.settings.Settings:
    return h2.settings.Settings(
        client=False,
        initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: streams,
            h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
            h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL: 1,
        },
    )
