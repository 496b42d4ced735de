"""`python -m benchmarks`: start everything, measure in turns, report, stop everything.

Theory of operation:
1. Find what is installed (wrk, h2load, nginx, HAProxy, Caddy, portless); `--without NAME` or
   $DEVROUTER_BENCH_WITHOUT hides a tool, which is how the test suite forces the fallbacks.
   Nothing is ever installed. A workload whose load generator is missing is left out.
2. Start the backends (nginx serving static bytes, or the aiohttp fallback; the aiohttp app),
   devrouter (`python -m devrouter serve` with a generated config; it makes its local CA),
   every peer found (serving devrouter's certificate for fast.localhost over TLS on a second
   port), and the baseline devrouter of `--baseline REV`, each on a free 127.0.0.1 port, and
   check one request through each (and one over TLS).
3. Warm each tool up, then for each round, for each workload, measure each tool it applies to
   in turn (the order of the tools rotates from round to round so none always goes first).
4. Take the median of the rounds, the ratios and the target checks; print tables; write
   JSON (every raw figure), Markdown tables and the SVG chart.
Every process is stopped in a `finally`, on Ctrl-C (exit 130) and SIGTERM too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import chart, machine, measure, peers, report, servers
from .procs import StartError, Supervisor
from .workloads import PROFILES, WORKLOADS, Profile, Workload, needs, seconds, upload_bytes

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
DOCS_SVG = ROOT / "docs" / "benchmarks.svg"
DOCS_MD = ROOT / "docs" / "benchmarks.md"
DOCS_BEGIN, DOCS_END = "<!-- results:begin -->", "<!-- results:end -->"
WITHOUT_ENV = "DEVROUTER_BENCH_WITHOUT"
#: Rough per-measurement overhead, in seconds, for the time estimate.
OVERHEAD_S = 0.35


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Measure devrouter against direct access and the proxies installed here "
        "(nginx, HAProxy, Caddy, portless), all on 127.0.0.1.",
    )
    p.add_argument("--quick", action="store_true", help="short measurements, 2 rounds (~4 min)")
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
        help="act as if NAME (wrk, h2load, nginx, haproxy, caddy, portless) were not "
        f"installed; repeatable or comma-separated; also ${WITHOUT_ENV}",
    )
    p.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (default 1)")
    p.add_argument(
        "--baseline",
        metavar="REV",
        help="also run devrouter as it was at git revision REV (exported with git archive) "
        "on the workloads that compare the two (small_c1, small_c50 and the plain "
        "new-connection ones)",
    )
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
    if "h2load" in found.paths:
        loadgen_desc["h2load"] = f"h2load {versions.get('h2load', '')}, 1 thread".strip()
    _say(
        f"load generator: {loadgen_desc['name']} ({loadgen_desc['version']})"
        + (
            ""
            if wrk_path
            else f"; wrk {found.missing.get('wrk')}, using `devrouter bench` (closed loop, one "
            "worker process)"
        )
        + (f"; {loadgen_desc['h2load']}" if "h2load" in loadgen_desc else "")
        + "; WebSocket, SSE and new-connection clients: built-in"
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
    for w in workloads:
        tool = needs(w)
        if tool is not None and tool not in found.paths:
            skipped_workloads[w.key] = f"needs {tool}"
            _say(f"not measured: workload {w.key} (needs {tool})")
    workloads = [w for w in workloads if w.key not in skipped_workloads]
    if not workloads:
        raise StartError("no workload left to measure with the load generators installed")
    stage = servers.Stage(sup, tmp, found, versions, fast_port, app_port)
    tools, skipped, stage = _start_tools(stage, args, profile, wanted)
    tools.insert(0, direct)
    peers.check(direct)
    pairs = [(w, t) for w in workloads for t in tools if measure.applies(t, w)]
    estimate = (
        sum(
            (
                seconds(w, profile)
                if w.kind != "http" or not wrk_path
                else max(1, round(seconds(w, profile)))
            )
            + OVERHEAD_S
            for w, _ in pairs
        )
        * rounds
    )
    _say(
        f"{profile.name} profile: {rounds} round(s) x {len(workloads)} workload(s) x "
        f"{len(tools)} tool(s) ({len(pairs)} measurements a round), about {estimate / 60:.1f} min"
    )

    cert = stage.cert
    ctx = measure.Context(
        profile, found.paths, args.wrk_threads, tmp, backend_procs, cert.ca if cert else None
    )
    result: dict[str, Any] = {
        "schema": 2,
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
        "tls": {
            "certificate": "ECDSA P-256 leaf for fast.localhost from devrouter's local CA, "
            "served by every tool"
            if cert
            else None,
            "client": "h2load (no verification); new connections: Python ssl, full handshake, "
            "verified against the CA, ALPN http/1.1",
        },
        "baseline": args.baseline,
        "tools": {
            t.name: {
                "kind": t.kind,
                "version": t.version,
                "port": t.fast.port,
                "tls_port": t.tls.port if t.tls else None,
                "notes": t.notes,
            }
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
                "scheme": w.scheme,
                "protocol": w.protocol,
                "connections": w.connections,
                "streams": w.streams,
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
            warm = [next((w for w in workloads if w.key == "small_c50"), workloads[0])]
            warm += [w for w in workloads if w.protocol == "h2"][:1]
            for tool in tools:
                for w in warm:
                    if measure.applies(tool, w):
                        ctx.measure_or_error(tool, w, profile.warmup_s)
        for r in range(rounds):
            for w in workloads:
                k = r % len(tools)
                for tool in tools[k:] + tools[:k]:
                    if not measure.applies(tool, w):
                        continue
                    run = {"round": r + 1, "workload": w.key, "tool": tool.name}
                    run.update(ctx.measure_or_error(tool, w, seconds(w, profile)))
                    result["runs"].append(run)
                    _say(_progress(r + 1, rounds, w, tool.name, run))
    except KeyboardInterrupt:
        interrupted = True

    result["elapsed_s"] = round(time.monotonic() - t_start, 1)
    result["interrupted"] = interrupted
    result["machine"]["load_average_at_end"] = machine.load_average()
    _conclude(result)
    _say("")
    _say(report.text_report(result))
    _write(result, args.output, args.write_docs)
    if interrupted:
        raise KeyboardInterrupt
    failed = [r for r in result["runs"] if "error" in r]
    if failed:
        _say(f"{len(failed)} measurement(s) failed; see 'error' in the JSON runs")
    return 0


def _conclude(result: dict[str, Any]) -> None:
    """The summary, ratios and target checks of a result's runs."""
    result["summary"] = report.summarize(result["runs"])
    result["ratios"] = report.ratios(result["summary"], result["tool_order"])
    result["targets"] = report.targets(result["summary"])
    result["tls_targets"] = report.tls_targets(
        result["summary"], result["tool_order"], result["runs"]
    )


def _start_tools(
    stage: servers.Stage, args: argparse.Namespace, profile: Profile, wanted: set[str] | None
) -> tuple[list[servers.Tool], dict[str, str], servers.Stage]:
    """devrouter (which must start), each peer found and wanted (which may fail), and the
    baseline when asked for (which must start); the stage, with the peers' certificate."""
    tools = [servers.start_devrouter(stage, args.devrouter_arg)]
    if tools[0].tls is not None:
        state_dir = stage.tmp / "devrouter-state"
        stage = dataclasses.replace(stage, cert=servers.peer_certificate(state_dir, stage.tmp))
    ca_file = stage.cert.ca if stage.cert else None
    peers.check(tools[0], ca_file)
    skipped = {n: why for n, why in stage.found.missing.items() if n in servers.PEERS}
    for name, start in peers.PEER_STARTERS.items():
        if name in skipped:
            pass
        elif wanted is not None and name not in wanted:
            skipped[name] = "not in --tools"
        elif not profile.peers and wanted is None:
            skipped[name] = f"the {profile.name} profile measures direct and devrouter only"
        else:
            try:
                tool = start(stage)
                peers.check(tool, ca_file)
            except StartError as exc:
                skipped[name] = f"did not start: {exc}"
            else:
                tools.append(tool)
    if args.baseline:
        tools.append(servers.start_baseline(stage, ROOT, args.baseline, args.devrouter_arg))
        peers.check(tools[-1])
    for tool in tools:
        notes = f" ({'; '.join(tool.notes)})" if tool.notes else ""
        tls = f", TLS on {tool.tls.port}" if tool.tls else ""
        _say(f"{tool.name}: {tool.version} on 127.0.0.1:{tool.fast.port}{tls}{notes}")
    for name, why in skipped.items():
        _say(f"not measured: {name} ({why})")
    return tools, skipped, stage


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


def _render(path: Path, out_dir: Path, write_docs: bool) -> int:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        print(f"benchmarks: cannot read {path}: {exc}", file=sys.stderr)
        return 2
    _conclude(result)
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
