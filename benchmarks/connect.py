"""The new-connection client: what a browser's first request to a name costs.

One connection at a time: connect to the loopback port, do the TLS handshake when asked (a
full one: no session is resumed; the name is sent as SNI and the certificate verified against
the CA, as a browser does), send one GET, read the whole response, close. Each sample is the
time from before `connect()` to the response's last byte, and its phases (connect, handshake,
response) are kept too. Plain HTTP through the same tool gives the baseline: the difference of
the medians is what TLS adds to a new connection.

The socket is closed with a reset (SO_LINGER 0) so that thousands of samples leave no
TIME_WAIT sockets behind to run the ephemeral ports out. Blocking sockets, no event loop: the
client's own overhead is a few system calls per sample. ALPN offers http/1.1 only, so each
tool answers through its HTTP/1.1 path.
"""

from __future__ import annotations

import socket
import ssl
import struct
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .loadgen import percentiles

LOOPBACK = "127.0.0.1"
#: Upper bound for any one sample (connect, handshake and response), in seconds.
SAMPLE_TIMEOUT_S = 10.0
#: Most samples in one measurement (20,000 is 2 s of direct access at 100 us each).
MAX_SAMPLES = 20_000
#: Seconds between two calls of the `sample` hook (memory of the server under test).
SAMPLE_EVERY_S = 0.1
_LINGER_RESET = struct.pack("ii", 1, 0)


def client_context(ca_file: Path) -> ssl.SSLContext:
    """A browser-like client context: verifies the chain and the name, TLS 1.2 or 1.3."""
    ctx = ssl.create_default_context(cafile=str(ca_file))
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx


class BadAnswer(Exception):
    pass


def one(port: int, host: str, path: str, ctx: ssl.SSLContext | None) -> tuple[float, float, float]:
    """One new connection: (connect, handshake, response) seconds; raise OSError, ssl.SSLError
    or BadAnswer."""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: bench\r\n\r\n".encode()
    t0 = time.perf_counter()
    sock = socket.create_connection((LOOPBACK, port), timeout=SAMPLE_TIMEOUT_S)
    conn: socket.socket = sock
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t1 = time.perf_counter()
        if ctx is not None:
            conn = ctx.wrap_socket(sock, server_hostname=host.rsplit(":", 1)[0])
        t2 = time.perf_counter()
        conn.sendall(request)
        _read_response(conn)
        t3 = time.perf_counter()
    finally:
        conn.close()
    return t1 - t0, t2 - t1, t3 - t2


def _read_response(conn: socket.socket) -> None:
    buf = b""
    while b"\r\n\r\n" not in buf:
        data = conn.recv(65536)
        if not data:
            raise BadAnswer("closed before the response head")
        buf += data
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    if not lines[0].startswith(b"HTTP/1.1 200"):
        raise BadAnswer(lines[0].decode(errors="replace"))
    length = next(
        (int(v) for n, _, v in (ln.partition(b":") for ln in lines[1:])
         if n.strip().lower() == b"content-length"),
        None,
    )  # fmt: skip
    if length is None:
        raise BadAnswer("no Content-Length")
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            raise BadAnswer("closed in the body")
        body += data


def run(
    port: int,
    host: str,
    path: str,
    seconds: float,
    ctx: ssl.SSLContext | None,
    sample: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """New connections one after another for `seconds`, in the shape `benchmarks.wrk.parse`
    returns, plus `phases_us` (the p50 of connect, handshake and response)."""
    totals: list[float] = []
    phases: tuple[list[float], list[float], list[float]] = ([], [], [])
    errors = {"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}
    start = time.perf_counter()
    deadline = start + seconds
    next_sample = start
    while (now := time.perf_counter()) < deadline and len(totals) < MAX_SAMPLES:
        if sample is not None and now >= next_sample:
            sample()
            next_sample = now + SAMPLE_EVERY_S
        try:
            parts = one(port, host, path, ctx)
        except TimeoutError:
            errors["timeout"] += 1
            continue
        except BadAnswer:
            errors["status"] += 1
            continue
        except (OSError, ssl.SSLError):
            errors["connect"] += 1
            continue
        totals.append(sum(parts) * 1e6)
        for series, value in zip(phases, parts, strict=True):
            series.append(value * 1e6)
    return {
        "requests": len(totals),
        "bytes": 0,
        "duration_s": time.perf_counter() - start,
        "errors": errors,
        "latency_us": percentiles(totals),
        "phases_us": {
            name: percentiles(series).get("p50", 0.0)
            for name, series in zip(("connect", "handshake", "response"), phases, strict=True)
        },
    }


def handshake(port: int, host: str, ctx: ssl.SSLContext, alpn: list[str]) -> str | None:
    """The ALPN protocol a TLS port picks from `alpn` (for the start-up check)."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    probe.load_verify_locations(cadata=_ca_data(ctx))
    probe.set_alpn_protocols(alpn)
    with (
        socket.create_connection((LOOPBACK, port), timeout=SAMPLE_TIMEOUT_S) as sock,
        probe.wrap_socket(sock, server_hostname=host.rsplit(":", 1)[0]) as tls,
    ):
        return tls.selected_alpn_protocol()


def _ca_data(ctx: ssl.SSLContext) -> str:
    return "".join(ssl.DER_cert_to_PEM_cert(c) for c in ctx.get_ca_certs(binary_form=True))
