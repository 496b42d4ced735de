"""The `bench` command: its options (`add_parser`), and the handler (`run`), which reads
them, finds the router, runs the load and prints the report: the report on stdout, progress
and errors on stderr, one line and an exit code for every failure, never a traceback.

Exit codes: 0 ok, 1 the run failed (nothing answered, no request completed, a worker died),
2 usage (a bad option or target), 3 start-up (--compare-direct cannot find the backend).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..cli.boundary import guarded
from ..core.errors import EXIT_FAILED, EXIT_OK, CommandError, UsageError
from ..core.model import DEFAULT_PORT
from ..core.numbers import digits
from .options import parse_body, parse_duration, parse_header, parse_rate
from .plan import DEFAULT_TIMEOUT_S, Plan, build_request
from .report import compare, describe, format_compare, format_report, router_silence, silence_line
from .result import Result
from .router import direct_target, find_router
from .target import Target, is_route_name, parse_target
from .workers import execute

if TYPE_CHECKING:  # for annotations only; router.find_router imports it when it runs
    from ..services.locate import Located


#: Defaults a wrk user expects.
DEFAULT_CONNECTIONS = 10
DEFAULT_DURATION_S = 10.0
#: Rounds of --compare-direct (each runs the load once direct and once through the router).
DEFAULT_ROUNDS = 3


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the `bench` subcommand to the CLI's subparsers (`parents`: the CLI's common
    options, such as --log-level and --version)."""
    p = sub.add_parser(
        "bench",
        parents=list(parents),
        help="load-test a local service and report honest latency percentiles",
        description="Drive HTTP load at a local service and report throughput, status counts "
        "and latency percentiles. TARGET is a URL on this machine "
        "(http://api.localhost:7355/items, http://127.0.0.1:4001/x) or a route NAME and an "
        "optional PATH, which goes through the router. Only loopback addresses and "
        ".localhost names are accepted.",
        epilog="Closed loop (the default) sends each connection's next request when the last "
        "one completes. --rate sends at a constant rate and measures each request's latency "
        "from when it was due, so stalls are not hidden (coordinated omission).",
    )
    p.set_defaults(handler=run)
    p.add_argument("target", metavar="TARGET", help="URL, or a route NAME")
    p.add_argument("path", metavar="PATH", nargs="?", help="path for a route NAME (default /)")
    p.add_argument(
        "-c",
        "--connections",
        type=_positive_int,
        default=DEFAULT_CONNECTIONS,
        help=f"concurrent connections (default {DEFAULT_CONNECTIONS})",
    )
    amount = p.add_mutually_exclusive_group()
    amount.add_argument(
        "-d",
        "--duration",
        type=_duration,
        metavar="TIME",
        help=f"how long to run: 10s, 1m, 500ms (default {DEFAULT_DURATION_S:g}s)",
    )
    amount.add_argument(
        "-n", "--requests", type=_positive_int, metavar="N", help="stop after N requests"
    )
    p.add_argument(
        "--rate",
        type=_rate,
        metavar="N",
        help="constant rate in requests per second (1000 or 1000/s); latency counts from "
        "each request's due time",
    )
    p.add_argument("-m", "--method", default="GET", help="HTTP method (default GET)")
    p.add_argument(
        "-H",
        "--header",
        action="append",
        type=_header,
        default=[],
        metavar="'NAME: VALUE'",
        help="add a request header; repeatable",
    )
    p.add_argument("-b", "--body", metavar="TEXT|@FILE", help="request body, or @file to read")
    p.add_argument(
        "--timeout",
        type=_duration,
        default=DEFAULT_TIMEOUT_S,
        metavar="TIME",
        help=f"per-request timeout (default {DEFAULT_TIMEOUT_S:g}s)",
    )
    p.add_argument("--no-keepalive", action="store_true", help="a new connection for every request")
    p.add_argument(
        "--warmup",
        type=_duration,
        default=0.0,
        metavar="TIME",
        help="run this long before measuring (default 0)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object (see docs/bench.md)")
    p.add_argument(
        "--histogram",
        metavar="FILE",
        help="write the latency distribution in HdrHistogram percentile format (ms)",
    )
    p.add_argument(
        "--workers",
        type=_positive_int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="worker processes, each with its own event loop (default: the number of cores)",
    )
    p.add_argument(
        "--router-port",
        type=_port,
        metavar="PORT",
        help="the router's port for a route NAME (default: the running router's, found "
        f"through its control socket, else the config's listen port, else {DEFAULT_PORT})",
    )
    p.add_argument(
        "--compare-direct",
        action="store_true",
        help="run the load alternately at the route's backend and through the router, and "
        "report the router's added latency and throughput ratio",
    )
    p.add_argument(
        "--rounds",
        type=_positive_int,
        default=DEFAULT_ROUNDS,
        metavar="N",
        help=f"rounds each way for --compare-direct (default {DEFAULT_ROUNDS})",
    )
    p.add_argument(
        "--config",
        metavar="PATH",
        help="router config, for its listen port and, when the router does not show its "
        "routes, --compare-direct's backend",
    )


def _arg_type(fn: Callable[[str], Any], name: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            return fn(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = name
    return convert


def _positive(text: str) -> int:
    if not digits(text.strip()) or int(text) < 1:
        raise ValueError(f"{text!r} is not a positive whole number")
    return int(text)


def _valid_port(text: str) -> int:
    value = _positive(text)
    if value > 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return value


_positive_int = _arg_type(_positive, "count")
_port = _arg_type(_valid_port, "port")
_duration = _arg_type(parse_duration, "duration")
_rate = _arg_type(parse_rate, "rate")
_header = _arg_type(parse_header, "header")


def plan_from_args(args: argparse.Namespace, target: Target) -> Plan:
    method = str(args.method).upper()
    try:
        body = parse_body(args.body) if args.body is not None else b""
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    request = build_request(target, method, args.header, body, not args.no_keepalive)
    duration = args.duration
    if duration is None and args.requests is None:
        duration = DEFAULT_DURATION_S
    if args.timeout <= 0:
        raise UsageError("--timeout must be more than 0")
    return Plan(
        host=target.connect_host,
        port=target.port,
        request=request,
        connections=args.connections,
        duration_s=duration,
        requests=args.requests,
        rate=args.rate,
        timeout_s=args.timeout,
        warmup_s=args.warmup,
        keepalive=not args.no_keepalive,
        head=method == "HEAD",
    )


def run(args: argparse.Namespace) -> int:
    """The `bench` command. Prints the report on stdout, progress and errors on stderr; a
    bad option is a UsageError (exit 2), what --compare-direct cannot find a StartupError
    (exit 3), both answered at the CLI's boundary."""
    try:
        return _run(args)
    except RuntimeError as exc:
        raise CommandError(f"bench failed: {exc}") from None


def _run(args: argparse.Namespace) -> int:
    target = parse_target(args.target, args.path)  # refuses a target before any I/O
    router = find_router(args, target)
    if router is not None:
        if is_route_name(args.target):
            target = parse_target(args.target, args.path, router.port, router.host)
        if router.answered is False:
            _say(router_silence(router, "connections are refused"))
            return EXIT_FAILED
        if router.answered and not router.is_devrouter:
            answer = f"HTTP {router.http_status}" if router.http_status else "not HTTP"
            _say(
                f"warning: what answers at {router.address} is not devrouter ({answer} for "
                "/api/status); pass --router-port PORT if the router runs elsewhere"
            )
    plan = plan_from_args(args, target)
    workers = min(args.workers, plan.connections)
    if args.compare_direct:
        return _run_compare(args, plan, workers, target, router)
    if not args.json:
        print(describe(plan, workers, target, router), flush=True)
    result = execute(plan, workers, sys.stderr)
    silent = silence_line(result, target, router)
    if args.json:
        out = {
            "target": target.url,
            **({"router_found": router.to_json()} if router else {}),
            "mode": "constant-rate" if plan.rate else "closed-loop",
            "connections": plan.connections,
            "workers": workers,
            **({"rate": plan.rate} if plan.rate else {}),
            **result.to_json(),
            **({"error": silent} if silent else {}),
        }
        print(json.dumps(out))
    elif silent is None:
        print(format_report(result))
    if silent is not None:
        _say(silent)
        return EXIT_FAILED
    if args.histogram:
        _write_histogram(args.histogram, result)
    return EXIT_OK if result.requests else EXIT_FAILED


def _run_compare(
    args: argparse.Namespace, plan: Plan, workers: int, target: Target, router: Located | None
) -> int:
    direct = direct_target(target, args.config, router)
    if not args.json:
        print(describe(plan, workers, target, router))
        print(f"  direct: {direct.url} at {direct.address}", flush=True)
    routed_total, direct_total = Result(), Result()
    for i in range(args.rounds):
        order = ((target, routed_total, router), (direct, direct_total, None))
        for t, total, via in order if i % 2 else order[::-1]:
            result = execute(replace(plan, host=t.connect_host, port=t.port), workers, sys.stderr)
            silent = silence_line(result, t, via, "the route's backend" if via is None else "")
            if silent is not None:  # one side is down: a comparison would be meaningless
                _say(silent)
                return EXIT_FAILED
            total.merge(result)
    added, ratio = compare(routed_total, direct_total)
    if args.json:
        out = {
            "rounds": args.rounds,
            **({"router_found": router.to_json()} if router else {}),
            "router": {"target": target.url, **routed_total.to_json()},
            "direct": {
                "target": f"http://{direct.address}{direct.path}",
                **direct_total.to_json(),
            },
            "added_latency_ms": added,
            "throughput_ratio": ratio,
        }
        print(json.dumps(out))
    else:
        print(format_compare(routed_total, direct_total, args.rounds))
    if args.histogram:
        _write_histogram(args.histogram, routed_total)
    return EXIT_OK if routed_total.requests else EXIT_FAILED


def _say(text: str) -> None:
    print(f"devrouter: {text}", file=sys.stderr, flush=True)


def _write_histogram(path: str, result: Result) -> None:
    try:
        Path(path).write_text(result.histogram.percentile_distribution())
    except OSError as exc:
        raise RuntimeError(f"cannot write {path}: {exc.strerror}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="devrouter")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`devrouter bench ARGS`, callable without the rest of the CLI."""
    args = build_parser().parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return guarded(run, args)
