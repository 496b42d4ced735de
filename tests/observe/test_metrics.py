"""devrouter.observe.metrics: the per-route counters, the per-second series, the ring buffer of
recent requests and the redaction of secrets, as units (no sockets).
"""

from __future__ import annotations

import pytest

from devrouter.observe.metrics import (
    DEFAULT_RECENT,
    ERROR_KINDS,
    HTTP1,
    HTTP1_TLS,
    HTTP2,
    MAX_BATCH,
    REDACTED,
    SERIES_SECONDS,
    Finished,
    Metrics,
    RequestRecord,
    head_fields,
    is_event_stream,
    is_stream,
    protocol_of,
    redact_head,
    redact_query,
)

T0 = 1_700_000_000.0  # a whole second, wall clock


def rec(
    route: str = "api",
    status: int = 200,
    started: float = T0,
    duration_s: float = 0.010,
    ttfb_s: float | None = 0.005,
    **kw: object,
) -> RequestRecord:
    r = RequestRecord(started, "GET", f"{route}.localhost", "/", route, 4001, status)
    r.duration_s = duration_s
    r.ttfb_s = ttfb_s
    for k, v in kw.items():
        setattr(r, k, v)
    return r


def finish(m: Metrics, r: RequestRecord) -> RequestRecord:
    m.opened(r.route, websocket=r.websocket)
    m.finish(r)
    return r


# --- the ring buffer ---------------------------------------------------------------------------


def test_ring_keeps_the_last_n_with_increasing_seq() -> None:
    m = Metrics(recent=3)
    for i in range(5):
        finish(m, rec(path=f"/{i}"))
    assert [r.seq for r in m.recent] == [3, 4, 5]
    assert [r.path for r in m.recent] == ["/2", "/3", "/4"]
    assert m.routes["api"].count == 5  # the counters are not limited by the ring


def test_ring_size_default_and_minimum() -> None:
    assert Metrics().recent.maxlen == DEFAULT_RECENT
    assert Metrics(recent=0).recent.maxlen == 1
    assert Metrics(recent=-5).recent.maxlen == 1


def test_since_filters_by_seq_and_route_and_keeps_the_newest() -> None:
    m = Metrics()
    for i in range(6):
        finish(m, rec("api" if i % 2 else "web", path=f"/{i}"))
    assert [r.seq for r in m.since(0)] == [1, 2, 3, 4, 5, 6]
    assert [r.seq for r in m.since(4)] == [5, 6]
    assert [r.seq for r in m.since(0, "api")] == [2, 4, 6]
    assert [r.seq for r in m.since(0, limit=2)] == [5, 6]  # the newest, oldest first
    assert m.since(0, "nosuch") == []
    assert m.since(6) == []


def test_since_with_limit_zero_returns_nothing() -> None:
    m = Metrics()
    finish(m, rec())
    assert m.since(0, limit=0) == []


def test_records_never_hold_bodies() -> None:
    fields = set(RequestRecord.__dataclass_fields__)
    assert not {f for f in fields if "body" in f}
    assert set(rec().as_json()) >= {"method", "host", "path", "status", "duration_ms"}
    assert "request_headers" not in rec().as_json(headers=False)


# --- counters --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "key"),
    [
        (101, "1xx"),
        (200, "2xx"),
        (204, "2xx"),
        (304, "3xx"),
        (404, "4xx"),
        (499, "4xx"),
        (500, "5xx"),
        (599, "5xx"),
        (999, "9xx"),
        (0, "none"),
        (1000, "none"),
    ],
)
def test_status_classes(status: int, key: str) -> None:
    m = Metrics()
    finish(m, rec(status=status))
    assert m.routes["api"].requests == {key: 1}


def test_errors_bytes_and_open_counts() -> None:
    m = Metrics()
    for kind in ERROR_KINDS:
        finish(m, rec(status=502, error=kind, ttfb_s=None))
    finish(m, rec(bytes_in=100, bytes_out=2000))
    s = m.routes["api"]
    assert s.errors == dict.fromkeys(ERROR_KINDS, 1)
    assert s.requests == {"5xx": len(ERROR_KINDS), "2xx": 1}
    assert (s.bytes_in, s.bytes_out) == (100, 2000)
    m.opened("api")
    m.opened("api")
    m.opened("api", websocket=True)
    assert (s.in_flight, s.open_websockets, m.in_flight("api")) == (2, 1, 3)
    m.stream_opened("api")  # the second one's head opened an event stream
    assert s.open_streams == 1
    m.finish(rec())
    m.finish(rec(websocket=True))
    assert (s.in_flight, s.open_streams, s.open_websockets) == (1, 1, 0)
    m.finish(rec(event_stream=True))
    assert (s.in_flight, s.open_streams, s.open_websockets) == (0, 0, 0)


def test_histograms_in_microseconds_without_websockets_or_missing_ttfb() -> None:
    m = Metrics()
    finish(m, rec(duration_s=0.012, ttfb_s=0.003))
    finish(m, rec(duration_s=0.020, ttfb_s=None))  # no response headers
    finish(m, rec(duration_s=300.0, ttfb_s=0.001, websocket=True))  # a session, not a latency
    s = m.routes["api"]
    assert s.total.count() == 2 and s.ttfb.count() == 1
    assert s.total.max() == 20_000 and s.ttfb.max() == 3_000
    assert s.streams.count() == 1 and s.streams.max() == pytest.approx(300e6, rel=1e-3)


def test_sub_millisecond_latencies_are_kept_to_the_microsecond() -> None:
    m = Metrics()
    finish(m, rec(duration_s=0.000_262, ttfb_s=0.000_201))
    s = m.routes["api"]
    assert (s.total.max(), s.ttfb.max()) == (262, 201)
    assert m.recent[-1].as_json()["duration_ms"] == 0.262


@pytest.mark.parametrize(
    ("websocket", "event_stream", "duration_s", "timeout_s", "stream"),
    [
        (False, False, 0.010, 60.0, False),  # a request
        (False, False, 59.0, 60.0, False),  # a slow request is still a request
        (False, False, 61.0, 60.0, True),  # a body that flowed past the timeout: a long poll
        (False, True, 0.001, 60.0, True),  # an event stream, however short
        (True, False, 0.5, 60.0, True),  # a WebSocket session
    ],
)
def test_is_stream(
    websocket: bool, event_stream: bool, duration_s: float, timeout_s: float, stream: bool
) -> None:
    assert is_stream(websocket, event_stream, duration_s, timeout_s) is stream


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\ncontent-type:text/event-stream; charset=utf-8\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nCONTENT-TYPE: Text/Event-Stream\r\n\r\n", True),
        (b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\n\r\n", False),
        (b"HTTP/1.1 200 OK\r\nX-Note: text/event-stream\r\n\r\n", False),
        (b"", False),
    ],
)
def test_is_event_stream(head: bytes, expected: bool) -> None:
    assert is_event_stream(head) is expected


def test_streams_are_timed_apart_from_requests() -> None:
    m = Metrics()
    finish(m, rec(duration_s=0.002, ttfb_s=0.001))
    m.opened("api")
    m.stream_opened("api")
    m.finish(rec(started=T0, duration_s=39.0, ttfb_s=0.001, event_stream=True))
    m.opened("api")
    m.finish(rec(started=T0, duration_s=90.0, ttfb_s=0.001), timeout_s=60.0)  # a long poll
    s = m.routes["api"]
    assert (s.total.count(), s.ttfb.count(), s.streams.count()) == (1, 1, 2)
    assert s.total.max() == 2_000  # the route's p99 is about its requests
    assert [r.stream for r in m.recent] == [False, True, True]
    assert [p[1] for p in s.series] == [1]  # the series (rates, sparklines) is of requests


# --- the per-second series and the rate --------------------------------------------------------


def test_series_aggregates_each_second() -> None:
    m = Metrics()
    finish(m, rec(started=T0 + 0.1, duration_s=0.010))
    finish(m, rec(started=T0 + 0.5, duration_s=0.030))
    finish(m, rec(started=T0 + 1.2, duration_s=0.002))
    assert [list(p) for p in m.routes["api"].series] == [
        [int(T0), 2, 40_000, 30_000],  # [second, count, sum µs, max µs]
        [int(T0) + 1, 1, 2_000, 2_000],
    ]


def test_series_is_bounded() -> None:
    m = Metrics()
    for i in range(SERIES_SECONDS + 30):
        finish(m, rec(started=T0 + i))
    series = m.routes["api"].series
    assert len(series) == SERIES_SECONDS
    assert series[0][0] == int(T0) + 30


def test_rate_counts_whole_seconds_before_now() -> None:
    m = Metrics()
    for i in range(10):
        for _ in range(i):  # 0 + 1 + ... + 9 = 45 requests over ten seconds
            finish(m, rec(started=T0 + i, duration_s=0.001))
    now = T0 + 10.5
    assert m.rate("api", now, window_s=10) == pytest.approx(4.5)
    assert m.rate("api", now, window_s=2) == pytest.approx((8 + 9) / 2)
    finish(m, rec(started=T0 + 10.2))  # the current second is not counted yet
    assert m.rate("api", now, window_s=10) == pytest.approx(4.5)
    assert m.rate("nosuch", now) == 0.0


def test_series_latency_leaves_out_websocket_sessions() -> None:
    m = Metrics()
    finish(m, rec(started=T0, duration_s=0.010))
    finish(m, rec(started=T0 + 0.5 - 300, duration_s=300.0, websocket=True))
    (point,) = m.routes["api"].series
    assert point[3] == 10_000


# --- batches (the fast path's finish_later) ----------------------------------------------------


def row(
    route: str = "api",
    status: int = 200,
    websocket: bool = False,
    event_stream: bool = False,
    duration_s: float = 0.010,
) -> Finished:
    head, resp = b"GET / HTTP/1.1\r\n\r\n", b"HTTP/1.1 200 OK\r\n\r\n"
    host = f"{route}.localhost".encode()
    return (T0, b"GET", host, b"/caf\xe9?token=x", route, 4001, status, 0.005, duration_s, 3,
            100, None, websocket, head, resp, event_stream, 60.0, HTTP2)  # fmt: skip


def test_finish_later_times_streams_apart() -> None:
    m = Metrics()
    for _ in range(3):
        m.opened("api")
    m.stream_opened("api")
    m.finish_later(row(event_stream=True, duration_s=39.0))
    m.finish_later(row(duration_s=61.0))  # past the route's timeout of 60 s
    m.finish_later(row())
    stats = m.routes["api"]
    assert (stats.in_flight, stats.open_streams) == (0, 0)
    assert (stats.total.count(), stats.streams.count()) == (1, 2)
    assert [r.stream for r in m.recent] == [True, True, False]


def test_finish_later_leaves_the_in_flight_count_at_once_and_counts_when_read() -> None:
    m = Metrics()
    m.opened("api")
    m.opened("api", websocket=True)
    m.finish_later(row())
    m.finish_later(row(websocket=True))
    assert m.in_flight("api") == 0  # what the per-route limit reads, before any flush
    assert m._pending  # nothing counted yet
    stats = m.routes["api"]  # a read flushes
    assert stats.count == 2 and stats.bytes_out == 200 and stats.total.count() == 1
    (r1, r2) = m.recent
    assert (r1.method, r1.host, r1.path) == ("GET", "api.localhost", "/caf\xe9?token=x")
    assert r1.as_json()["path"] == "/caf\xe9?token=[redacted]"
    assert (r1.seq, r2.seq, r2.websocket) == (1, 2, True)


def test_finish_keeps_the_order_exchanges_ended_in() -> None:
    m = Metrics()
    m.opened("fast")
    m.finish_later(row("fast"))
    finish(m, rec("slow"))  # the aiohttp engine's, after a pending fast-path one
    assert [(r.route, r.seq) for r in m.recent] == [("fast", 1), ("slow", 2)]


def test_a_full_batch_is_counted_without_waiting_and_reaches_the_sink() -> None:
    seen: list[RequestRecord] = []
    m = Metrics(sink=seen.append)
    for _ in range(MAX_BATCH - 1):
        m.opened("api")
        m.finish_later(row())
    assert not seen
    m.opened("api")
    m.finish_later(row())
    assert len(seen) == MAX_BATCH and not m._pending
    m.flush()  # an empty flush is nothing
    assert len(seen) == MAX_BATCH


# --- redaction ---------------------------------------------------------------------------------

HEAD = (
    b"GET /x HTTP/1.1\r\n"
    b"Host: api.localhost\r\n"
    b"Authorization: Bearer hunter2\r\n"
    b"cookie: sid=hunter2; theme=dark\r\n"
    b"PROXY-AUTHORIZATION: Basic aHVudGVyMg==\r\n"
    b"X-Api-Key:hunter2\r\n"
    b"Cookie:   second=hunter2  \r\n"
    b"X-Authorization-Hint: keep me\r\n"
    b"Accept: */*\r\n"
    b"\r\n"
)


def test_secret_header_values_are_redacted() -> None:
    out = redact_head(HEAD)
    assert b"hunter2" not in out and b"aHVudGVyMg" not in out
    fields = head_fields(out)
    assert fields == [
        ["Host", "api.localhost"],
        ["Authorization", REDACTED],
        ["cookie", REDACTED],
        ["PROXY-AUTHORIZATION", REDACTED],
        ["X-Api-Key", REDACTED],
        ["Cookie", REDACTED],
        ["X-Authorization-Hint", "keep me"],
        ["Accept", "*/*"],
    ]


def test_set_cookie_in_a_response_is_redacted() -> None:
    head = b"HTTP/1.1 200 OK\r\nSet-Cookie: a=hunter2\r\nset-cookie: b=hunter2\r\n\r\n"
    assert head_fields(redact_head(head)) == [["Set-Cookie", REDACTED], ["set-cookie", REDACTED]]


def test_a_head_without_secrets_is_returned_as_is() -> None:
    head = b"GET / HTTP/1.1\r\nHost: a.localhost\r\nAccept: */*\r\n\r\n"
    assert redact_head(head) is head


def test_the_request_line_and_other_headers_are_untouched() -> None:
    head = b"GET /cookie/authorization HTTP/1.1\r\nX-Note: my cookie: not a secret\r\n\r\n"
    assert redact_head(head) == head
    assert head_fields(head) == [["X-Note", "my cookie: not a secret"]]


def test_as_json_shows_redacted_heads() -> None:
    r = rec(request_head=redact_head(HEAD), response_head=b"HTTP/1.1 200 OK\r\n\r\n")
    doc = r.as_json()
    assert ["Authorization", REDACTED] in doc["request_headers"]  # type: ignore[operator]
    assert doc["response_headers"] == []
    assert doc["ttfb_ms"] == 5.0 and doc["duration_ms"] == 10.0


@pytest.mark.parametrize(
    ("target", "shown"),
    [
        ("/plain", "/plain"),
        ("/a?page=2&sort=name", "/a?page=2&sort=name"),
        ("/cb?code=abc123&state=xyz", f"/cb?code={REDACTED}&state=xyz"),
        ("/x?access_token=t0k&n=1", f"/x?access_token={REDACTED}&n=1"),
        ("/x?n=1&API_KEY=k#frag", f"/x?n=1&API_KEY={REDACTED}#frag"),
        ("/s3?X-Amz-Signature=ff&X-Amz-Date=1", f"/s3?X-Amz-Signature={REDACTED}&X-Amz-Date=1"),
        ("/login?password=hunter2", f"/login?password={REDACTED}"),
        ("/x?barcode=1", "/x?barcode=1"),
    ],
)
def test_credential_query_values_are_redacted_when_shown(target: str, shown: str) -> None:
    assert redact_query(target) == shown
    rec = RequestRecord(0.0, "GET", "api.localhost", target, "api")
    assert rec.as_json(headers=False)["path"] == shown
    assert rec.path == target  # kept as it came; redacted on the way out


def test_a_batch_longer_than_the_ring_counts_all_and_keeps_the_newest() -> None:
    m = Metrics(recent=3)
    for status in (200, 201, 202, 203, 204):
        m.opened("api")
        m.finish_later(row(status=status))
    assert m.routes["api"].count == 5 and m.routes["api"].total.count() == 5
    assert [(r.seq, r.status) for r in m.recent] == [(3, 202), (4, 203), (5, 204)]
    m.opened("api")
    m.finish_later(row(status=205))
    assert [r.seq for r in m.recent] == [4, 5, 6]


def test_with_a_sink_every_record_of_a_batch_is_made() -> None:
    seen: list[RequestRecord] = []
    m = Metrics(recent=2, sink=seen.append)
    for _ in range(4):
        m.opened("api")
        m.finish_later(row())
    m.flush()
    assert [r.seq for r in seen] == [1, 2, 3, 4]
    assert [r.seq for r in m.recent] == [3, 4]


def test_the_protocol_a_client_spoke_reaches_the_request_list() -> None:
    m = Metrics()
    m.opened("api")
    m.finish_later(row())
    (rec,) = m.recent
    assert rec.protocol == HTTP2 and rec.as_json()["protocol"] == "HTTP/2"


@pytest.mark.parametrize(
    ("extra", "protocol"),
    [
        ({}, HTTP1),
        ({"sslcontext": object()}, HTTP1_TLS),
        ({"sslcontext": object(), "devrouter.protocol": "h2"}, HTTP2),
    ],
)
def test_protocol_of_a_transport(extra: dict[str, object], protocol: str) -> None:
    assert protocol_of(extra.get) == protocol
