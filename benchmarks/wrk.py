"""Driving wrk: the command line, a Lua script, and parsing what it prints.

wrk's text output (with `--latency`) gives requests, duration, bytes, errors and the
p50/p75/p90/p99 latencies rounded to two decimals; the Lua `done()` hook prints the same
figures exactly, plus p99.9, as one JSON line. Both are kept in the raw results; the
figures come from the JSON line and fall back to the text when it is missing.

For uploads the script sets `wrk.method` and `wrk.body` (wrk then sends Content-Length), so
every request carries the whole body. With BENCH_VARY=1 it alternates two values of one
header field from request to request (two requests formatted once, so the cost to wrk is a
Lua call per request, the same for every tool). Extra header fields go on the command line
(`Connection: close` makes wrk open a new connection for every request).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

SCRIPT = r"""
local upload = tonumber(os.getenv("BENCH_UPLOAD_BYTES") or "0")
if upload > 0 then
  wrk.method = "POST"
  wrk.body = string.rep("u", upload)
  wrk.headers["Content-Type"] = "application/octet-stream"
end

if os.getenv("BENCH_VARY") == "1" then
  local formatted = nil
  local n = 0
  request = function()
    if formatted == nil then
      formatted = {
        wrk.format(nil, nil, {["X-Bench-Vary"] = "a"}),
        wrk.format(nil, nil, {["X-Bench-Vary"] = "bb"}),
      }
    end
    n = n + 1
    return formatted[n % 2 + 1]
  end
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "bytes": %d, "duration_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "p99_9": %d, "mean": %.1f, ' ..
    '"max": %d}}\n',
    summary.requests, summary.bytes, summary.duration,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.mean, latency.max))
end
"""

#: Seconds before wrk counts a request as timed out.
TIMEOUT_S = 30


def write_script(directory: Path) -> Path:
    path = directory / "bench.lua"
    path.write_text(SCRIPT)
    return path


def command(
    wrk: str,
    script: Path,
    url: str,
    host: str,
    connections: int,
    seconds: float,
    threads: int,
    headers: Sequence[str] = (),
) -> list[str]:
    # wrk takes whole seconds or a unit suffix; milliseconds are not accepted, so round up
    # to at least one second for tiny smoke runs.
    duration = max(1, round(seconds))
    return [
        wrk,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{duration}s",
        f"--timeout={TIMEOUT_S}s",
        "--latency",
        "-s",
        str(script),
        "-H",
        f"Host: {host}",
        *(arg for field in headers for arg in ("-H", field)),
        url,
    ]


_UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6, "h": 3600e6}
_SIZE = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3, "TB": 1024**4}


def _duration_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    if not m:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def parse(stdout: str) -> dict[str, Any]:
    """The figures of one wrk run: requests, bytes, duration_s, errors, latency_us{...}."""
    text = _parse_text(stdout)
    for line in stdout.splitlines():
        if line.startswith("BENCH_JSON "):
            data = json.loads(line[len("BENCH_JSON ") :])
            return {
                "requests": data["requests"],
                "bytes": data["bytes"],
                "duration_s": data["duration_us"] / 1e6,
                "errors": data["errors"],
                "latency_us": {k: float(v) for k, v in data["latency_us"].items()},
                "text": text,
            }
    if "requests" not in text:
        raise ValueError(f"could not read wrk's output:\n{stdout[-2000:]}")
    return {
        **{k: text[k] for k in ("requests", "bytes", "duration_s", "errors")},
        "latency_us": text["latency_us"],
        "text": text,
    }


def _parse_text(stdout: str) -> dict[str, Any]:
    out: dict[str, Any] = {"latency_us": {}, "errors": {}}
    for raw in stdout.splitlines():
        line = raw.strip()
        m = re.match(r"(\d+) requests in ([\d.]+\w+), ([\d.]+)(\w+) read", line)
        if m:
            out["requests"] = int(m.group(1))
            out["duration_s"] = _duration_us(m.group(2)) / 1e6
            out["bytes"] = int(float(m.group(3)) * _SIZE[m.group(4)])
            continue
        m = re.fullmatch(r"(50|75|90|99)%\s+([\d.]+\w+)", line)
        if m:
            out["latency_us"][f"p{m.group(1)}"] = _duration_us(m.group(2))
            continue
        m = re.match(r"Requests/sec:\s+([\d.]+)", line)
        if m:
            out["req_s"] = float(m.group(1))
            continue
        m = re.match(r"Non-2xx or 3xx responses: (\d+)", line)
        if m:
            out["errors"]["status"] = int(m.group(1))
            continue
        m = re.match(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", line)
        if m:
            for key, value in zip(("connect", "read", "write", "timeout"), m.groups(), strict=True):
                out["errors"][key] = int(value)
    return out
