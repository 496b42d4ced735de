"""One measurement: one workload against one tool, with the load generator it needs, while the
tool's memory is sampled and its CPU time read before and after.

Every measurement returns {"figures": ..., "raw": ...} (the figures in the shape
`benchmarks.wrk.parse` returns, plus req_s, mb_s, cpu_us_per_req, backend_cpu_us_per_req,
rss_peak_mib), or, through `measure_or_error`, {"error": ...}: one failed measurement never
stops a run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import ssl
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp

from . import connect, h2load, loadgen, servers, wrk
from .procs import LOOPBACK, Proc, cpu_seconds, rss_bytes
from .workloads import MIB, Profile, Workload, upload_bytes

#: Seconds between two samples of the router's memory during a measurement.
SAMPLE_INTERVAL_S = 0.1


def applies(tool: servers.Tool, w: Workload) -> bool:
    """Whether `w` is measured on `tool`: TLS workloads on the tools that answer TLS, and
    the baseline router on the workloads marked for it."""
    if w.scheme == "https" and tool.tls is None:
        return False
    return tool.kind != "baseline" or w.baseline


class Context:
    """What every measurement of a run shares: the profile, the load generators, the
    backends' processes, the TLS client context."""

    def __init__(
        self,
        profile: Profile,
        paths: dict[str, str],
        wrk_threads: int,
        tmp: Path,
        backend_procs: dict[str, Proc],
        ca_file: Path | None,
    ) -> None:
        self.profile = profile
        self.wrk_path = paths.get("wrk")
        self.h2load_path = paths.get("h2load")
        self.wrk_threads = wrk_threads
        self.tmp = tmp
        self.script = wrk.write_script(tmp) if self.wrk_path else None
        self.backend_procs = backend_procs
        self.tls_client = connect.client_context(ca_file) if ca_file is not None else None

    def measure_or_error(self, tool: servers.Tool, w: Workload, secs: float) -> dict[str, Any]:
        """`measure`, or {"error": ...} if it failed; the run goes on either way."""
        try:
            return self.measure(tool, w, secs)
        except (
            OSError,
            ValueError,
            RuntimeError,
            TimeoutError,
            ssl.SSLError,
            subprocess.SubprocessError,
            aiohttp.ClientError,
        ) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def measure(self, tool: servers.Tool, w: Workload, secs: float) -> dict[str, Any]:
        target = tool.fast if w.backend == "fast" else tool.app
        if w.scheme == "https":
            if tool.tls is None:
                raise RuntimeError(f"{tool.name} does not answer TLS")
            target = tool.tls
        backend = self.backend_procs[w.backend]
        subject = tool.proc or backend
        peak = [rss_bytes(subject.pid)]

        def sample() -> None:
            peak[0] = max(peak[0], rss_bytes(subject.pid))

        cpu0, bcpu0 = cpu_seconds(subject.pid), cpu_seconds(backend.pid)
        size = upload_bytes(w, self.profile)
        raw: dict[str, Any] = {}
        figures = self._drive(w, target, secs, size, sample, raw)
        sample()
        cpu1, bcpu1 = cpu_seconds(subject.pid), cpu_seconds(backend.pid)
        n, d = figures["requests"], figures["duration_s"]
        figures["req_s"] = n / d if d > 0 else 0.0
        if w.key == "large_1mib":
            figures["mb_s"] = n * MIB / d / 1e6 if d > 0 else 0.0
        elif size:
            figures["mb_s"] = n * size / d / 1e6 if d > 0 else 0.0
        if n and w.kind in ("http", "h2load", "connect"):
            figures["cpu_us_per_req"] = (cpu1 - cpu0) / n * 1e6
            figures["backend_cpu_us_per_req"] = (bcpu1 - bcpu0) / n * 1e6
        figures["rss_peak_mib"] = peak[0] / MIB
        if n == 0:
            raise RuntimeError(f"no request completed; {figures.get('errors')}")
        return {"figures": figures, "raw": raw}

    def _drive(
        self,
        w: Workload,
        target: servers.Target,
        secs: float,
        size: int,
        sample: Callable[[], None],
        raw: dict[str, Any],
    ) -> dict[str, Any]:
        """Run the load generator `w` needs and return its figures."""
        if w.kind == "http" and self.wrk_path and self.script:
            argv = wrk.command(
                self.wrk_path,
                self.script,
                f"http://{LOOPBACK}:{target.port}{w.path}",
                target.host,
                w.connections,
                secs,
                self.wrk_threads,
                w.headers,
            )
            raw["argv"] = argv
            env = {
                **os.environ,
                "BENCH_UPLOAD_BYTES": str(size),
                "BENCH_VARY": "1" if w.vary else "0",
            }
            out = run_sampling(argv, env, sample, timeout_s=secs + wrk.TIMEOUT_S + 30)
            raw["stdout"] = out
            return wrk.parse(out)
        if w.kind == "http":
            return loadgen.run(
                lambda: loadgen.bench_load(
                    target.port, target.host, w.path, w.connections, secs, w.method, size
                ),
                sample,
            )
        if w.kind == "h2load":
            if not self.h2load_path:
                raise RuntimeError("h2load is not installed")
            log_file = self.tmp / "h2load.log"
            log_file.unlink(missing_ok=True)  # h2load appends to its log file
            warmup = min(h2load.WARMUP_S, secs)
            argv = h2load.command(
                self.h2load_path,
                f"{w.scheme}://{target.host}{w.path}",
                f"{LOOPBACK}:{target.port}",
                w.connections,
                w.streams,
                secs,
                log_file,
                h1=w.protocol == "h1",
                warmup_s=warmup,
            )
            raw["argv"] = argv
            try:
                out = run_sampling(argv, dict(os.environ), sample, timeout_s=secs + warmup + 60)
                raw["stdout"] = out
                return h2load.parse(out, secs, log_file)
            finally:
                log_file.unlink(missing_ok=True)
        if w.kind == "connect":
            ctx = self.tls_client if w.scheme == "https" else None
            if w.scheme == "https" and ctx is None:
                raise RuntimeError("no CA to verify TLS against")
            return connect.run(target.port, target.host, w.path, secs, ctx, sample)
        if w.kind == "ws":
            return loadgen.run(
                lambda: loadgen.ws_echo(target.port, target.host, w.path, secs), sample
            )
        return loadgen.run(
            lambda: loadgen.sse_first_event(target.port, target.host, w.path, secs), sample
        )


def run_sampling(
    argv: list[str], env: dict[str, str], sample: Callable[[], None], timeout_s: float
) -> str:
    """Run a load generator, calling `sample()` while it runs; always reap it."""
    proc = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            sample()
            try:
                out, _ = proc.communicate(timeout=SAMPLE_INTERVAL_S)
                break
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{argv[0]} ran over {timeout_s:.0f} s") from None
    finally:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} exited {proc.returncode}: {out[-500:]}")
    return out
