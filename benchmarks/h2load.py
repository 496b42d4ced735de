"""Driving h2load (nghttp2): the command line, and reading what it prints and logs.

h2load speaks HTTP/2 and, with `--h1`, HTTP/1.1, plain or over TLS. The URL carries the name
(`https://fast.localhost:PORT/small`: the SNI name and `:authority`, or Host) and
`--connect-to` the loopback address, because glibc does not resolve names under .localhost.
It does not verify certificates (neither does wrk).

Its text output gives the totals (requests done, succeeded, failed, errored, timed out; status
classes; bytes) and the TLS facts (protocol, cipher, key exchange, ALPN result), but latency
only as min/max/mean/sd; the percentiles come from `--log-file`, one line per request whose
third column is the microseconds from its start to the end of its response (h2load appends to
the file: each measurement starts with none). The measurement
lasts `-D` after a `--warm-up-time` in which the connections (and their handshakes) are made
and nothing is counted, logged or timed.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

#: Seconds of warm-up (connections and handshakes, not counted) before each measurement.
WARMUP_S = 0.3
#: Seconds before h2load gives up on a connection that does nothing.
INACTIVITY_TIMEOUT_S = 30


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def command(
    h2load: str,
    url: str,
    connect_to: str,
    connections: int,
    streams: int,
    seconds: float,
    log_file: Path,
    *,
    h1: bool,
    warmup_s: float = WARMUP_S,
    threads: int = 1,
) -> list[str]:
    argv = [
        h2load,
        f"--threads={min(threads, connections)}",
        f"--clients={connections}",
        f"--max-concurrent-streams={streams}",
        f"--duration={_ms(seconds)}",
        f"--warm-up-time={_ms(warmup_s)}",
        f"--connection-inactivity-timeout={INACTIVITY_TIMEOUT_S}",
        f"--connect-to={connect_to}",
        f"--log-file={log_file}",
    ]
    if h1:
        argv.append("--h1")
    return [*argv, url]


_FLOAT = r"([\d.]+)"


def parse(stdout: str, seconds: float, log_file: Path | None = None) -> dict[str, Any]:
    """The figures of one h2load run, in the shape `benchmarks.wrk.parse` returns:
    requests (succeeded), bytes, duration_s, errors, latency_us{...}, plus `tls`."""
    from .loadgen import percentiles

    out: dict[str, Any] = {"tls": {}}
    counts: dict[str, int] = {}
    status: dict[str, int] = {}
    for raw in stdout.splitlines():
        line = raw.strip()
        m = re.match(r"requests: (.*)", line)
        if m:
            for n, what in re.findall(r"(\d+) (\w+)", m.group(1)):
                counts[what] = int(n)
            continue
        m = re.match(r"status codes: (.*)", line)
        if m:
            for n, what in re.findall(r"(\d+) (\dxx)", m.group(1)):
                status[what] = int(n)
            continue
        m = re.match(r"traffic: \S+ \((\d+)\) total", line)
        if m:
            out["bytes"] = int(m.group(1))
            continue
        m = re.match(rf"finished in {_FLOAT}(m?s), {_FLOAT} req/s", line)
        if m:
            out["h2load_req_s"] = float(m.group(3))
            continue
        for label, key in (
            ("TLS Protocol", "protocol"),
            ("Cipher", "cipher"),
            ("Server Temp Key", "key_exchange"),
            ("Application protocol", "alpn"),
        ):
            if line.startswith(f"{label}: "):
                out["tls"][key] = line.split(": ", 1)[1]
    if "succeeded" not in counts:
        raise ValueError(f"could not read h2load's output:\n{stdout[-2000:]}")
    latencies = _log_latencies(log_file) if log_file is not None else []
    return {
        "requests": counts["succeeded"],
        "bytes": out.get("bytes", 0),
        "duration_s": seconds,
        # h2load's `failed` includes `errored` (transport, resets), which includes `timeout`
        "errors": {
            "connect": 0,
            "read": counts.get("errored", 0) - counts.get("timeout", 0),
            "write": 0,
            "status": max(
                counts.get("failed", 0) - counts.get("errored", 0),
                sum(n for k, n in status.items() if k in ("4xx", "5xx")),
            ),
            "timeout": counts.get("timeout", 0),
        },
        "latency_us": percentiles(latencies),
        "h2load_req_s": out.get("h2load_req_s"),
        "tls": out["tls"],
    }


def _log_latencies(path: Path) -> list[float]:
    """The response times of the successful requests in an h2load --log-file, in us."""
    out: list[float] = []
    try:
        with open(path) as f:
            for line in f:
                parts = line.split("\t")
                if len(parts) >= 3 and parts[1].startswith("2"):
                    out.append(float(parts[2]))
    except OSError:
        return []
    return out
