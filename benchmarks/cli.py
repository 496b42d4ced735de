"""`python -m benchmarks`: start everything, measure in turns, report, stop everything.

Theory of operation:
1. Find what is installed (wrk, nginx, HAProxy, Caddy, portless); `--without NAME` or
   $DEVROUTER_BENCH_WITHOUT hides a tool, which is how the test suite forces the fallbacks.
   Nothing is ever installed.
2. Start the backends (nginx serving static bytes, or the aiohttp fallback; the aiohttp app),
   devrouter (`python -m devrouter serve` with a generated config) and every peer found, each
   on a free 127.0.0.1 port, and check one request through each.
3. Warm each tool up, then for each round, for each workload, measure each tool in turn (the
   order of the tools rotates from round to round so none always goes first).
4. Take the median of the rounds, the ratios and the target checks; print tables; write
   JSON (every raw figure), Markdown tables and the SVG chart.
Every process is stopped in a `finally`, on Ctrl-C (exit 130) and SIGTERM too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp

from . import chart, loadgen, machine, report, servers, wrk
from .procs import Proc, StartError, Supervisor, cpu_seconds, rss_bytes
from .workloads import MIB, PROFILES, WORKLOADS, Profile, Workload, seconds, upload_bytes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS_SVG = ROOT / "docs" / "benchmarks.svg"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN, DOCS_END = "<!-- results:begin -->", "<!-- results:end -->"
WITHOUT_ENV = "DEVROUTER_BENCH_WITHOUT"
#: Seconds between two samples of the router's memory during a measurement.
SAMPLE_INTERVAL_S = 0.1
#: Rough per-measurement overhead, in seconds, for the time estimate.
OVERHEAD_S = 0.35


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure devrouter against direct access and the proxies installed here "
        "(nginx, HAProxy, Caddy, portless), all on 127.0.0.1.",
    )
    p.add_argument("--quick", action="store_true", help="short measurements, 2 rounds (< 2 min)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="tiny measurements, 1 round, direct and devrouter only (for tests)",
    )
    p.add_argument("--rounds", type=int, help="rounds (default: 3 full, 2 quick, 1 smoke)")
    p.add_argument(
        "--tools",
        help="comma-separated subset of devrouter,nginx,haproxy,caddy,"
        "portless (direct and devrouter are always measured)",
    )
    p.add_argument(
        "--workloads", help="comma-separated subset of: " + ",".join(w.key for w in WORKLOADS)
    )
    p.add_argument(
        "--without",
        action="append",
        default=[],
        metavar="NAME",
        help="act as if NAME (wrk, nginx, haproxy, caddy, portless) were not "
        f"installed; repeatable or comma-separated; also ${WITHOUT_ENV}",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "--devrouter-arg",
        action="append",
        default=[],
        metavar="ARG",
        help="extra argument for `devrouter serve`; repeatable",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=RESULTS,
        metavar="DIR",
        help="where latest.json, latest.md and latest.svg go (default benchmarks/results)",
    )
    p.add_argument(
        "--write-docs",
        action="store_true",
        help="also write docs/benchmarks.svg and the tables in docs/benchmarks.md",
    )
    p.add_argument(
        "--render",
        type=Path,
        metavar="JSON",
        help="measure nothing: print and write the tables and chart of an earlier run's JSON",
    )
    p.add_argument(
        "--keep-temp",
        action="store_true",
        help="keep the temporary directory with the configs and server logs",
    )
    return p


class Interrupted(Exception):
    pass


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render is not None:
        return _render(args.render, args.output, args.write_docs)
    profile = PROFILES["smoke" if args.smoke else "quick" if args.quick else "full"]
    rounds = args.rounds or profile.rounds
    without = {
        n.strip().lower()
        for v in [*args.without, os.environ.get(WITHOUT_ENV, "")]
        for n in v.split(",")
        if n.strip()
    }
    workloads = list(WORKLOADS)
    if args.workloads:
        keys = {k.strip() for k in args.workloads.split(",")}
        unknown = keys - {w.key for w in WORKLOADS}
        if unknown:
            print(f"benchmarks: unknown workload(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        workloads = [w for w in WORKLOADS if w.key in keys]
    wanted = {t.strip() for t in args.tools.split(",")} if args.tools else None
    if wanted is not None and (unknown := wanted - {"devrouter", *servers.PEERS}):
        print(f"benchmarks: unknown tool(s): {', '.join(sorted(unknown))}", file=sys.stderr)
        return 2
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    tmp = Path(tempfile.mkdtemp(prefix="devrouter-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as another user and read the static files here
    try:
        with Supervisor(tmp) as sup:
            return _run(args, profile, rounds, without, workloads, wanted, sup, tmp)
    except KeyboardInterrupt:
        print("\nbenchmarks: interrupted; every process started was stopped", file=sys.stderr)
        return 130
    except StartError as exc:
        print(f"benchmarks: {exc}", file=sys.stderr)
        return 3
    finally:
        signal.signal(signal.SIGTERM, previous)
        if args.keep_temp:
            print(f"benchmarks: configs and logs kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def _say(msg: str) -> None:
    print(msg, flush=True)


def _run(
    args: argparse.Namespace,
    profile: Profile,
    rounds: int,
    without: set[str],
    workloads: list[Workload],
    wanted: set[str] | None,
    sup: Supervisor,
    tmp: Path,
) -> int:
    started = datetime.now(UTC)
    t_start = time.monotonic()
    found = servers.discover(without, ROOT)
    versions = servers.versions(found)
    wrk_path = found.paths.get("wrk")
    loadgen_desc = (
        {"name": "wrk", "version": versions.get("wrk", "wrk"), "threads": args.wrk_threads}
        if wrk_path
        else {
            "name": "devrouter bench",
            "version": "closed loop, 1 worker",
            "why": f"wrk {found.missing.get('wrk', '')}".strip(),
        }
    )
    _say(
        f"load generator: {loadgen_desc['name']} ({loadgen_desc['version']})"
        + (
            ""
            if wrk_path
            else f"; wrk {found.missing.get('wrk')}, using `devrouter bench` (closed loop, one "
            "worker process)"
        )
        + "; WebSocket and SSE clients: built-in"
    )

    # backends
    if "nginx" in found.paths:
        fast_proc, fast_port = servers.start_nginx_backend(sup, tmp, found.paths["nginx"])
        fast_desc = f"nginx {versions.get('nginx', '')}".strip()
    else:
        fast_proc, fast_port = servers.start_aiohttp_backend(sup, "aiohttp-fast-backend")
        fast_desc = f"aiohttp (nginx {found.missing.get('nginx')})"
    app_proc, app_port = servers.start_aiohttp_backend(sup, "aiohttp-app-backend")
    _say(
        f"fast backend: {fast_desc} on 127.0.0.1:{fast_port}; app backend: aiohttp on "
        f"127.0.0.1:{app_port}"
    )
    backend_procs = {"fast": fast_proc, "app": app_proc}

    # the tools
    direct = servers.Tool(
        "direct",
        "direct",
        "no proxy",
        servers.Target(fast_port, f"127.0.0.1:{fast_port}"),
        servers.Target(app_port, f"127.0.0.1:{app_port}"),
        None,
    )
    skipped_workloads = {}
    if not wrk_path:  # `devrouter bench` sends one fixed request; varying it takes wrk's Lua
        skipped_workloads = {w.key: "needs wrk" for w in workloads if w.vary}
        workloads = [w for w in workloads if not w.vary]
        for key, why in skipped_workloads.items():
            _say(f"not measured: workload {key} ({why})")
        if not workloads:
            raise StartError("no workload left to measure without wrk")
    stage = servers.Stage(sup, tmp, found, versions, fast_port, app_port)
    tools, skipped = _start_tools(stage, args.devrouter_arg, profile, wanted)
    tools.insert(0, direct)
    servers.check(direct)

    per_round = sum(
        seconds(w, profile)
        if w.kind != "http" or not wrk_path
        else max(1, round(seconds(w, profile)))
        for w in workloads
    )
    estimate = (per_round + OVERHEAD_S * len(workloads)) * len(tools) * rounds
    _say(
        f"{profile.name} profile: {rounds} round(s) x {len(workloads)} workload(s) x "
        f"{len(tools)} tool(s), about {estimate / 60:.1f} min"
    )

    ctx = _Context(profile, wrk_path, args.wrk_threads, tmp, backend_procs)
    result: dict[str, Any] = {
        "schema": 1,
        "started": started.isoformat(timespec="seconds"),
        "profile": profile.name,
        "rounds": rounds,
        "load_generator": loadgen_desc,
        "backends": {
            "fast": fast_desc,
            "app": "aiohttp (benchmarks/backend.py)",
            "app_info": _backend_info(app_port),
        },
        "machine": machine.describe(versions, ROOT),
        "tools": {
            t.name: {"kind": t.kind, "version": t.version, "port": t.fast.port, "notes": t.notes}
            for t in tools
        },
        "skipped": skipped,
        "skipped_workloads": skipped_workloads,
        "workloads": {
            w.key: {
                "title": w.title,
                "kind": w.kind,
                "backend": w.backend,
                "path": w.path,
                "method": w.method,
                "connections": w.connections,
                "seconds": seconds(w, profile),
                "upload_bytes": upload_bytes(w, profile),
            }
            for w in workloads
        },
        "tool_order": [t.name for t in tools],
        "runs": [],
    }
    interrupted = False
    try:
        if profile.warmup_s > 0:
            warm = next((w for w in workloads if w.key == "small_c50"), workloads[0])
            for tool in tools:
                ctx.measure_or_error(tool, warm, profile.warmup_s)
        for r in range(rounds):
            for w in workloads:
                k = r % len(tools)
                for tool in tools[k:] + tools[:k]:
                    run = {"round": r + 1, "workload": w.key, "tool": tool.name}
                    run.update(ctx.measure_or_error(tool, w, seconds(w, profile)))
                    result["runs"].append(run)
                    _say(_progress(r + 1, rounds, w, tool.name, run))
    except KeyboardInterrupt:
        interrupted = True

    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["interrupted"] = interrupted
    result["machine"]["load_average_at_end"] = machine.load_average()
    result["summary"] = report.summarize(result["runs"])
    result["ratios"] = report.ratios(result["summary"], result["tool_order"])
    result["targets"] = report.targets(result["summary"])
    _say("")
    _say(report.text_report(result))
    _write(result, args.output, args.write_docs)
    if interrupted:
        raise KeyboardInterrupt
    failed = [r for r in result["runs"] if "error" in r]
    if failed:
        _say(f"{len(failed)} measurement(s) failed; see 'error' in the JSON runs")
    return 0


def _start_tools(
    stage: servers.Stage, devrouter_args: list[str], profile: Profile, wanted: set[str] | None
) -> tuple[list[servers.Tool], dict[str, str]]:
    """devrouter (which must start) and each peer found and wanted (which may fail)."""
    tools = [servers.start_devrouter(stage, devrouter_args)]
    servers.check(tools[0])
    skipped = {n: why for n, why in stage.found.missing.items() if n in servers.PEERS}
    for name, start in servers.PEER_STARTERS.items():
        if name in skipped:
            pass
        elif wanted is not None and name not in wanted:
            skipped[name] = "not in --tools"
        elif not profile.peers and wanted is None:
            skipped[name] = f"the {profile.name} profile measures direct and devrouter only"
        else:
            try:
                tool = start(stage)
                servers.check(tool)
            except StartError as exc:
                skipped[name] = f"did not start: {exc}"
            else:
                tools.append(tool)
    for tool in tools:
        notes = f" ({'; '.join(tool.notes)})" if tool.notes else ""
        _say(f"{tool.name}: {tool.version} on 127.0.0.1:{tool.fast.port}{notes}")
    for name, why in skipped.items():
        _say(f"not measured: {name} ({why})")
    return tools, skipped


def _backend_info(port: int) -> dict[str, Any]:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/info", timeout=5) as resp:
            return dict(json.loads(resp.read()))
    except (OSError, ValueError):
        return {}


def _progress(r: int, rounds: int, w: Workload, tool: str, run: dict[str, Any]) -> str:
    head = f"[{r}/{rounds}] {w.key:<16} {tool:<10}"
    if "error" in run:
        return f"{head} FAILED {run['error']}"
    f = run["figures"]
    lat = f.get("latency_us", {})
    main = f"{f['mb_s']:>9,.0f} MB/s" if "mb_s" in f else f"{f['req_s']:>9,.0f} /s   "
    errors = sum(f.get("errors", {}).values())
    return (
        f"{head} {main}  p50 {lat.get('p50', 0):>8,.0f} us  p99 {lat.get('p99', 0):>8,.0f} us"
        + (f"  errors {errors}" if errors else "")
    )


class _Context:
    def __init__(
        self,
        profile: Profile,
        wrk_path: str | None,
        wrk_threads: int,
        tmp: Path,
        backend_procs: dict[str, Proc],
    ) -> None:
        self.profile = profile
        self.wrk_path = wrk_path
        self.wrk_threads = wrk_threads
        self.script = wrk.write_script(tmp) if wrk_path else None
        self.backend_procs = backend_procs

    def measure_or_error(self, tool: servers.Tool, w: Workload, secs: float) -> dict[str, Any]:
        """`measure`, or {"error": ...} if it failed; the run goes on either way."""
        try:
            return self.measure(tool, w, secs)
        except (
            OSError,
            ValueError,
            RuntimeError,
            TimeoutError,
            subprocess.SubprocessError,
            aiohttp.ClientError,
        ) as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}

    def measure(self, tool: servers.Tool, w: Workload, secs: float) -> dict[str, Any]:
        target = tool.fast if w.backend == "fast" else tool.app
        backend = self.backend_procs[w.backend]
        subject = tool.proc or backend
        peak = [rss_bytes(subject.pid)]

        def sample() -> None:
            peak[0] = max(peak[0], rss_bytes(subject.pid))

        cpu0, bcpu0 = cpu_seconds(subject.pid), cpu_seconds(backend.pid)
        size = upload_bytes(w, self.profile)
        raw: dict[str, Any] = {}
        if w.kind == "http" and self.wrk_path and self.script:
            argv = wrk.command(
                self.wrk_path,
                self.script,
                f"http://127.0.0.1:{target.port}{w.path}",
                target.host,
                w.connections,
                secs,
                self.wrk_threads,
            )
            raw["argv"] = argv
            out = _run_sampling(
                argv,
                {
                    **os.environ,
                    "BENCH_UPLOAD_BYTES": str(size),
                    "BENCH_VARY": "1" if w.vary else "0",
                },
                sample,
                timeout_s=secs + wrk.TIMEOUT_S + 30,
            )
            raw["stdout"] = out
            figures = wrk.parse(out)
        elif w.kind == "http":
            figures = loadgen.run(
                lambda: loadgen.bench_load(
                    target.port, target.host, w.path, w.connections, secs, w.method, size
                ),
                sample,
            )
        elif w.kind == "ws":
            figures = loadgen.run(
                lambda: loadgen.ws_echo(target.port, target.host, w.path, secs), sample
            )
        else:
            figures = loadgen.run(
                lambda: loadgen.sse_first_event(target.port, target.host, w.path, secs), sample
            )
        sample()
        cpu1, bcpu1 = cpu_seconds(subject.pid), cpu_seconds(backend.pid)
        n, d = figures["requests"], figures["duration_s"]
        figures["req_s"] = n / d if d > 0 else 0.0
        if w.key == "large_1mib":
            figures["mb_s"] = n * MIB / d / 1e6 if d > 0 else 0.0
        elif size:
            figures["mb_s"] = n * size / d / 1e6 if d > 0 else 0.0
        if n and w.kind == "http":
            figures["cpu_us_per_req"] = (cpu1 - cpu0) / n * 1e6
            figures["backend_cpu_us_per_req"] = (bcpu1 - bcpu0) / n * 1e6
        figures["rss_peak_mib"] = peak[0] / MIB
        if n == 0:
            raise RuntimeError(f"no request completed; {figures.get('errors')}")
        return {"figures": figures, "raw": raw}


def _run_sampling(
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


def _render(path: Path, out_dir: Path, write_docs: bool) -> int:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"benchmarks: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    result["summary"] = report.summarize(result["runs"])
    result["ratios"] = report.ratios(result["summary"], result["tool_order"])
    result["targets"] = report.targets(result["summary"])
    _say(report.text_report(result))
    _write(result, out_dir, write_docs, save_json=False)
    return 0


def _write(result: dict[str, Any], out_dir: Path, write_docs: bool, save_json: bool = True) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    if save_json:
        stamp = result["started"].replace(":", "").replace("-", "")[:15]
        text = json.dumps(result, indent=1, sort_keys=False) + "\n"
        (out_dir / "latest.json").write_text(text)
        (out_dir / f"run-{stamp}-{result['profile']}.json").write_text(text)
    md = report.markdown_report(result)
    (out_dir / "latest.md").write_text(md)
    svg = chart.render(result)
    (out_dir / "latest.svg").write_text(svg)
    _say(f"\nwrote latest.json, latest.md and latest.svg in {out_dir}")
    if write_docs:
        DOCS_SVG.write_text(svg)
        doc = DOCS_MD.read_text() if DOCS_MD.exists() else ""
        if DOCS_BEGIN in doc and DOCS_END in doc:
            head, rest = doc.split(DOCS_BEGIN, 1)
            _, tail = rest.split(DOCS_END, 1)
            DOCS_MD.write_text(f"{head}{DOCS_BEGIN}\n{md}\n{DOCS_END}{tail}")
            _say(f"wrote {DOCS_SVG} and the tables in {DOCS_MD}")
        else:
            _say(f"wrote {DOCS_SVG}; {DOCS_MD} has no {DOCS_BEGIN} marker, tables not written")
