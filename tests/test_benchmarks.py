"""The benchmark harness runs end to end (no timing assertions), on the tools this machine has
and with the fallbacks forced (no nginx, no wrk, no h2load), and stops every process it
started, also when interrupted. Its HTTPS, HTTP/2 and new-connection workloads produce their
fields, and the baseline (an earlier revision of devrouter) runs beside the current one.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # `benchmarks` is not an installed package; it lives in the repo
    sys.path.insert(0, str(ROOT))

from benchmarks import h2load, report, wrk  # noqa: E402
from benchmarks.cli import WITHOUT_ENV  # noqa: E402
from benchmarks.workloads import WORKLOADS, needs  # noqa: E402

#: Bound of one smoke run of the harness, in seconds (it takes about 5-15).
RUN_TIMEOUT_S = 150


def run_harness(out: Path, *extra: str, env: dict[str, str] | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "benchmarks", "--quick", "--smoke", "--output", str(out)]
    proc = subprocess.run(
        [*argv, *extra],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result: dict[str, Any] = json.loads((out / "latest.json").read_text())
    assert result["profile"] == "smoke"
    generators = {"wrk"} if result["load_generator"]["name"] == "wrk" else set()
    generators |= {"h2load"} if "h2load" in result["load_generator"] else set()
    skipped = result["skipped_workloads"]
    assert skipped == {
        w.key: f"needs {needs(w)}" for w in WORKLOADS if needs(w) not in (None, *generators)
    }
    tls = result["tools"]["devrouter"]["tls_port"] is not None
    for workload in WORKLOADS:
        if workload.key in skipped or (workload.scheme == "https" and not tls):
            continue
        tools = ("devrouter",) if workload.scheme == "https" else ("direct", "devrouter")
        for tool in tools:
            figures = result["summary"][workload.key][tool]
            key = report.HEADLINE[workload.key][0]
            assert figures.get(key, 0) > 0, (workload.key, tool, figures)
    runs = [r for r in result["runs"] if r["tool"] in ("direct", "devrouter")]
    assert runs and not [r for r in runs if "error" in r]
    assert result["machine"]["cpu_model"] and result["machine"]["cores"]
    assert result["summary"]["small_c50"]["devrouter"]["rss_peak_mib"] > 0
    assert "cpu_us_per_req" in result["summary"]["small_c50"]["devrouter"]
    assert result["summary"]["new_conn_plain"]["devrouter"]["connect_p50_us"] > 0
    goals = {t["target"]: t for t in result["tls_targets"]}
    assert all(t["met"] is None for t in goals.values() if not t["goal"])
    if tls:
        assert result["tls"]["certificate"]
        assert result["summary"]["new_conn_tls"]["devrouter"]["handshake_p50_us"] > 0
        assert result["ratios"]["tls_added_us"]["devrouter"] is not None
        assert goals["TLS handshake added p50 < 2 ms (us)"]["value"] is not None
    if tls and "h2load" in generators:
        alpn = {
            r["workload"]: r["figures"]["tls"]["alpn"]
            for r in runs
            if r["workload"] in ("tls_h1_c50", "tls_h2_c50x10")
        }
        assert alpn == {"tls_h1_c50": "http/1.1", "tls_h2_c50x10": "h2"}
        assert result["ratios"]["https_vs_plain_h1"]["devrouter"] is not None
        assert result["summary"]["tls_h2_c50x10"]["devrouter"]["p99_us"] > 0
    ET.fromstring((out / "latest.svg").read_text())  # well-formed SVG
    md = (out / "latest.md").read_text()
    assert "| tool |" in md and "Goals of the HTTPS and HTTP/2 work" in md
    assert "Throughput" in proc.stdout
    return result


def _git_revision() -> str | None:
    if shutil.which("git") is None:
        return None
    proc = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_smoke_with_what_is_installed(tmp_path: Path) -> None:
    revision = _git_revision()
    extra = ("--baseline", "HEAD") if revision else ()
    result = run_harness(tmp_path, *extra)
    assert result["load_generator"]["name"] in ("wrk", "devrouter bench")
    if revision:  # the baseline runs on its own workloads, beside the current devrouter
        base = f"devrouter@{revision}"
        assert result["tools"][base]["kind"] == "baseline"
        assert result["summary"]["new_conn_plain"][base]["p50_us"] > 0
        assert base not in result["summary"].get("small_c1_varied", {})
        assert any(base in t["target"] for t in result["tls_targets"])


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_smoke_without_nginx_wrk_and_h2load(tmp_path: Path) -> None:
    result = run_harness(tmp_path, env={WITHOUT_ENV: "nginx,wrk,h2load"})
    assert result["load_generator"]["name"] == "devrouter bench"
    assert result["backends"]["fast"].startswith("aiohttp")
    assert "nginx" not in result["tools"]
    assert result["skipped_workloads"]["tls_h2_c50x10"] == "needs h2load"


def _marked_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if marker.encode() in environ:
            pids.append(int(entry.name))
    return pids


@pytest.mark.timeout(RUN_TIMEOUT_S + 30)
def test_ctrl_c_stops_every_process(tmp_path: Path) -> None:
    marker = f"BENCH_TEST_MARKER=1-{uuid.uuid4().hex}"
    name, value = marker.split("=", 1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks", "--smoke", "--without", "nginx,wrk",
         "--output", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, name: value},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        seen = []
        for line in proc.stdout:  # wait until measurements have begun
            seen.append(line)
            if line.startswith("[1/1]"):
                break
        else:
            pytest.fail("the harness ended before measuring:\n" + "".join(seen))
        children = [p for p in _marked_pids(marker) if p != proc.pid]
        assert children, "expected backends and devrouter to be running"
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=60)
        assert proc.returncode == 130, "".join(seen) + out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    deadline = time.monotonic() + 10
    while (left := _marked_pids(marker)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not left, f"processes left running: {left}"


WRK_OUTPUT = """Running 1s test @ http://127.0.0.1:8080/small
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   850.00us    1.52ms  21.01ms   94.12%
    Req/Sec    67.03k    25.35k  137.95k    80.00%
  Latency Distribution
     50%  512.00us
     75%  812.00us
     90%    1.37ms
     99%    6.63ms
  200517 requests in 3.02s, 47.61MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 3
Requests/sec:  66442.96
Transfer/sec:     15.78MB
"""


def test_wrk_text_output_is_parsed() -> None:
    figures = wrk.parse(WRK_OUTPUT)
    assert figures["requests"] == 200517
    assert figures["duration_s"] == pytest.approx(3.02)
    assert figures["latency_us"] == {"p50": 512.0, "p75": 812.0, "p90": 1370.0, "p99": 6630.0}
    assert figures["errors"] == {"connect": 0, "read": 2, "write": 0, "timeout": 1, "status": 3}


def test_wrk_lua_summary_wins_over_text() -> None:
    line = (
        'BENCH_JSON {"requests": 10, "bytes": 1000, "duration_us": 2000000, "errors": '
        '{"connect": 0, "read": 0, "write": 0, "status": 0, "timeout": 0}, "latency_us": '
        '{"p50": 100, "p90": 200, "p99": 300, "p99_9": 400, "mean": 120.5, "max": 500}}\n'
    )
    figures = wrk.parse(WRK_OUTPUT + line)
    assert figures["requests"] == 10 and figures["duration_s"] == 2.0
    assert figures["latency_us"]["p99_9"] == 400.0
    assert figures["text"]["requests"] == 200517


@pytest.mark.skipif(shutil.which("wrk") is None, reason="wrk is not installed")
@pytest.mark.timeout(30)
def test_the_varied_workload_alternates_a_field_and_keeps_the_host(tmp_path: Path) -> None:
    seen: list[bytes] = []
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]

        def serve() -> None:  # wrk may open (and close) a connection before its real one
            while len(seen) < 6:
                conn, _ = srv.accept()
                with conn:
                    buf = b""
                    while len(seen) < 6 and (data := conn.recv(65536)):
                        buf += data
                        while b"\r\n\r\n" in buf:
                            head, buf = buf.split(b"\r\n\r\n", 1)
                            seen.append(head)
                            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        argv = wrk.command(
            str(shutil.which("wrk")), wrk.write_script(tmp_path),
            f"http://127.0.0.1:{port}/small", "fast.localhost:1", 1, 1, 1,
        )  # fmt: skip
        env = {**os.environ, "BENCH_VARY": "1", "BENCH_UPLOAD_BYTES": "0"}
        subprocess.run(argv, env=env, capture_output=True, timeout=20, check=False)
        thread.join(5)
    assert len(seen) >= 6
    values = [h.split(b"X-Bench-Vary: ")[1].split(b"\r\n")[0] for h in seen[:6]]
    assert values in ([b"a", b"bb"] * 3, [b"bb", b"a"] * 3)
    assert all(b"\r\nHost: fast.localhost:1" in h for h in seen)


H2LOAD_OUTPUT = """starting benchmark...
spawning thread #0: 5 total client(s). Timing-based test with 0.3s of warm-up time and 0.5s of main duration for measurements.
TLS Protocol: TLSv1.3
Cipher: TLS_AES_256_GCM_SHA384
Server Temp Key: X25519 253 bits
Application protocol: h2

finished in 801.08ms, 2844.00 req/s, 374.94KB/s
requests: 1430 total, 1430 started, 1430 done, 1422 succeeded, 8 failed, 5 errored, 2 timeout
status codes: 1422 2xx, 0 3xx, 3 4xx, 0 5xx
traffic: 187.47KB (191970) total, 18.59KB (19040) headers (space savings 95.55%), 227.05KB (232500) data
                     min         max         mean         sd        +/- sd
time for request:     3.19ms     41.61ms     17.56ms      6.06ms    73.00%
"""  # noqa: E501


def test_h2load_output_and_log_are_parsed(tmp_path: Path) -> None:
    log = tmp_path / "h2load.log"
    rows = [f"1700000000{i:06d}\t200\t{100 * (i + 1)}" for i in range(100)]
    log.write_text("\n".join([*rows, "1700000000999999\t-1\t5", "1700000001000000\t404\t7"]))
    figures = h2load.parse(H2LOAD_OUTPUT, 0.5, log)
    assert figures["requests"] == 1422 and figures["duration_s"] == 0.5
    assert figures["bytes"] == 191970
    assert figures["errors"] == {"connect": 0, "read": 3, "write": 0, "status": 3, "timeout": 2}
    assert figures["latency_us"]["p50"] == 5000.0 and figures["latency_us"]["max"] == 10000.0
    assert figures["tls"] == {
        "protocol": "TLSv1.3",
        "cipher": "TLS_AES_256_GCM_SHA384",
        "key_exchange": "X25519 253 bits",
        "alpn": "h2",
    }
    with pytest.raises(ValueError):
        h2load.parse("h2load: connection refused\n", 0.5)


def test_the_tls_goals_are_checked_against_the_run() -> None:
    def figures(req_s: float = 0.0, p50_us: float = 0.0) -> dict[str, float]:
        return {"req_s": req_s, "p50_us": p50_us}

    summary = {
        "plain_h1_c50": {"devrouter": figures(10_000)},
        "tls_h1_c50": {"devrouter": figures(8_000)},
        "tls_h2_c50x10": {"devrouter": figures(9_000), "caddy": figures(7_000)},
        "new_conn_plain": {"devrouter": figures(p50_us=200), "devrouter@abc": figures(p50_us=100)},
        "new_conn_tls": {"devrouter": figures(p50_us=1_700)},
    }
    rows = {t["target"]: t for t in report.tls_targets(summary, ["devrouter", "devrouter@abc"])}
    assert rows["HTTPS/1.1 50c req/s >= 0.7x devrouter's plain (h2load)"]["met"] is True
    assert rows["HTTP/2 50x10 req/s >= 1.5x Caddy"]["met"] is False
    assert rows["HTTP/2 50x10 req/s vs nginx"]["met"] is None
    assert rows["TLS handshake added p50 < 2 ms (us)"]["value"] == 1_500
    assert rows["new plain connection p50 (us) vs devrouter@abc"]["ratio"] == 2.0


def test_paired_comparisons_are_made_within_each_round() -> None:
    def run(r: int, workload: str, req_s: float) -> dict[str, Any]:
        return {"round": r, "workload": workload, "tool": "devrouter", "figures": {"req_s": req_s}}

    # the machine slowed down in round 2: both figures moved, their ratio did not
    runs = [
        run(1, "tls_h1_c50", 8_000), run(1, "plain_h1_c50", 10_000),
        run(2, "tls_h1_c50", 4_000), run(2, "plain_h1_c50", 5_000),
        run(3, "tls_h1_c50", 9_000),  # no pair: left out
    ]  # fmt: skip
    pair = (("tls_h1_c50", "devrouter"), ("plain_h1_c50", "devrouter"))
    assert report.paired(runs, *pair) == 0.8
    assert report.paired(runs, *pair, difference=True) == -1_500
    summary = report.summarize(runs)
    goal = report.tls_targets(summary, ["devrouter"], runs)[0]
    assert goal["paired"] == 0.8 and not goal["paired_is_difference"]
