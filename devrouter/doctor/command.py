"""The `doctor` command: `diagnose` gathers the facts (facts, listeners, the router's
status) and hands them to the judges; `add_parser`, `run` and `main` are the command line.

Exit codes: 0 nothing failed (warnings allowed), 1 a check failed, 2 usage.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TextIO

from ..cli.boundary import guarded
from ..config.reload import find_config, read_config
from ..core.access import TOKEN_HEADER, load_secrets
from ..core.errors import ConfigError
from ..core.model import DEFAULT_PORT, Config
from ..core.numbers import digits
from ..services.locate import locate
from ..services.ports import state_dir
from .containers import judge_docker
from .facts import (
    NSSWITCH_PATH,
    RESOLV_CONF_PATH,
    Reach,
    assignment_range,
    probe_connect,
    probe_router,
    read_text,
    resolve_bounded,
)
from .judges import judge_config, judge_port_range, judge_route, judge_router
from .listeners import Listener, read_listeners, with_owners
from .render import render_text, use_colour
from .report import Check, Report
from .resolver import judge_resolver, nameservers, nss_hosts_sources
from .service import gather_service, judge_service
from .targets import (
    RouteTarget,
    probe_hosts,
    targets_from_config,
    targets_from_live,
    targets_from_status,
)
from .trust import gather_trust, judge_trust

# --- the run -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Options:
    config: str | None = None
    port: int | None = None
    env: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    cwd: Path = field(default_factory=Path.cwd)
    proc: Path = Path("/proc")
    state_dir: Path | None = None  # None: $DEVROUTER_HOME, else the default state directory
    nsswitch: Path = NSSWITCH_PATH
    resolv_conf: Path = RESOLV_CONF_PATH


def _load(
    path: Path | None, own_ports: Iterable[int] | None, env: Mapping[str, str] | None = None
) -> tuple[Config | None, ConfigError | None]:
    """The config, with its access secrets where this shell can read them: the router may
    run where a variable is set that is not set here, which is not a config error."""
    if path is None:
        return None, None
    try:
        config = read_config(path, own_ports, secrets=False)
    except ConfigError as exc:
        return None, exc
    with contextlib.suppress(ConfigError):
        config = load_secrets(config, env)
    return config, None


def _credential(config: Config | None) -> dict[str, str]:
    """Headers that present the router-wide secret, if the config has one loaded."""
    secret = config.access.secret if config and config.access else None
    if secret is None:
        return {}
    if ":" in secret:
        return {"Authorization": "Basic " + base64.b64encode(secret.encode()).decode()}
    return {TOKEN_HEADER: secret}


async def diagnose(opts: Options) -> Report:
    """Gather the facts, then judge them. Only loopback addresses are contacted."""
    path = find_config(opts.config, opts.env, opts.cwd)
    config, error = _load(path, None, opts.env)
    found = await asyncio.to_thread(
        locate,
        port=opts.port,
        flag="--port",
        config=path,
        directory=opts.state_dir or state_dir(opts.env),
        env=opts.env,
        cwd=opts.cwd,
        probe=False,  # probe_router below asks it, with the secret and in more detail
    )
    port = found.port

    probe = await probe_router(port, headers=_credential(config), hosts=found.hosts)
    status = probe.status or {}
    listen_ports = _status_ports(status) | _status_ports({"listen": list(found.listen)})
    if probe.status is not None:
        path, config, error = _router_config(opts, path, config, error, status)

    targets: list[RouteTarget] | None = None
    if found.ours and found.routes is not None:
        targets = targets_from_live(found.routes)
    elif probe.status is not None:
        targets = targets_from_status(status)
    if targets is None:
        targets = targets_from_config(config) if config is not None else []
    route_ports = {t.port for t in targets}
    reach = await _reach_all(targets)

    range_error: str | None = None
    span: tuple[int, int] | None
    try:
        span = assignment_range(opts.env)
    except ValueError as exc:
        span, range_error = None, str(exc)

    raw = read_listeners(opts.proc)
    listeners: list[Listener] | None = None
    if raw is not None:
        lo, hi = span or (0, -1)
        wanted = [x for x in raw if x.port == port or x.port in route_ports or lo <= x.port <= hi]
        listeners = with_owners(wanted, os.geteuid(), opts.proc)

    sources = nss_hosts_sources(read_text(opts.nsswitch))
    servers = nameservers(read_text(opts.resolv_conf))

    report = Report(port)
    on_port = [x for x in listeners or () if x.port == port]
    report.checks.append(judge_router(probe, on_port, found, os.geteuid()))
    report.checks.append(judge_resolver(sources, servers, resolve_bounded, port))
    router_error, notes = _status_config_error(status), _status_config_notes(status)
    report.checks.extend(judge_config(path, config, error, router_error, notes))
    for t in targets:
        here = {h: reach[(h, t.port)] for h in probe_hosts(t)}
        mine = None if listeners is None else [x for x in listeners if x.port == t.port]
        report.checks.append(judge_route(t, here, mine))
    report.checks.extend(judge_docker(status.get("docker")))
    if range_error is not None:
        report.checks.append(
            Check("ports", "info", f"{range_error}; skipped", None, {"range": None})
        )
    else:
        ours = route_ports | {port} | listen_ports
        report.checks.append(judge_port_range(span, listeners, ours))
    trust = await asyncio.to_thread(gather_trust, opts.state_dir or state_dir(opts.env), opts.env)
    report.checks.append(judge_trust(trust))
    units = await asyncio.to_thread(gather_service, opts.env, opts.state_dir or state_dir(opts.env))
    report.checks.append(judge_service(units))
    return report


def _router_config(
    opts: Options,
    path: Path | None,
    config: Config | None,
    error: ConfigError | None,
    status: Mapping[str, Any],
) -> tuple[Path | None, Config | None, ConfigError | None]:
    """Without --config, check the file the running router uses (wherever doctor runs),
    validated against the ports the router listens on."""
    source = _status_config_source(status)
    if (
        opts.config is None
        and source is not None
        and Path(source).is_file()
        and (path is None or Path(source).resolve() != path.resolve())
    ):
        path = Path(source)
    if path is None:
        return None, None, None
    config, error = _load(path, _status_ports(status) or None, opts.env)
    return path, config, error


def _status_config_source(status: Mapping[str, Any]) -> str | None:
    config = status.get("config")
    source = config.get("source") if isinstance(config, dict) else None
    return source if isinstance(source, str) else None


def _status_ports(status: Mapping[str, Any]) -> set[int]:
    out: set[int] = set()
    listen = status.get("listen")
    for addr in listen if isinstance(listen, list) else ():
        _, _, port = str(addr).rpartition(":")
        if digits(port):
            out.add(int(port))
    return out


def _status_config_error(status: Mapping[str, Any]) -> str | None:
    config = status.get("config")
    if isinstance(config, dict) and config.get("error"):
        return str(config["error"])
    return None


def _status_config_notes(status: Mapping[str, Any]) -> list[str]:
    """`config.conflicts` and `config.warnings`, when the router reports them."""
    config = status.get("config")
    notes: list[str] = []
    for key in ("conflicts", "warnings"):
        items = config.get(key) if isinstance(config, dict) else None
        if isinstance(items, list):
            notes.extend(str(x) for x in items if x)
    return notes


async def _reach_all(targets: Sequence[RouteTarget]) -> dict[tuple[str, int], Reach]:
    keys = list(dict.fromkeys((h, t.port) for t in targets for h in probe_hosts(t)))
    results = await asyncio.gather(*(probe_connect(h, p) for h, p in keys))
    return dict(zip(keys, results, strict=True))


# --- command line --------------------------------------------------------------------------


def _port(text: str) -> int:
    if not digits(text) or not 1 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number from 1 to 65535")
    return int(text)


def _add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: the running router's, else $DEVROUTER_CONFIG, "
        "./devrouter.yaml, ~/.config/devrouter/config.yaml)",
    )
    p.add_argument(
        "--port",
        type=_port,
        metavar="PORT",
        help=f"the router's port (default: the config's listen port, else {DEFAULT_PORT})",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object, for scripts")


_DESCRIPTION = (
    "Check why a NAME.localhost URL does not work: is the router running, do *.localhost "
    "names resolve, is each route's service listening (on 127.0.0.1, ::1 or another "
    "address) and which process holds its port, is the config valid, which ports of "
    "the assignment range other processes hold, and which trust stores trust the local "
    "CA (HTTPS). One line per check, with a fix for each "
    "problem. Only this machine's loopback addresses are contacted."
)
_EPILOG = "Exit status: 0 when nothing failed (warnings allowed), 1 when a check failed."


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add the `doctor` subcommand (`parents`: the CLI's common options)."""
    p = sub.add_parser(
        "doctor",
        parents=list(parents),
        help="check the router, name resolution, routes and ports, and explain problems",
        description=_DESCRIPTION,
        epilog=_EPILOG,
    )
    _add_arguments(p)
    p.set_defaults(handler=run)


def run(args: argparse.Namespace, stdout: TextIO | None = None) -> int:
    """The `doctor` command: the report on stdout, exit 1 if a check failed."""
    out = stdout or sys.stdout
    opts = Options(config=getattr(args, "config", None), port=getattr(args, "port", None))
    report = asyncio.run(diagnose(opts))
    if getattr(args, "json", False):
        out.write(json.dumps(report.to_json(), indent=2) + "\n")
    else:
        out.write(render_text(report, use_colour(out, os.environ)))
    out.flush()
    return report.exit_code


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None) -> int:
    """`python -m devrouter.doctor [--config PATH] [--port PORT] [--json]`."""
    parser = argparse.ArgumentParser(
        prog="devrouter doctor", description=_DESCRIPTION, epilog=_EPILOG
    )
    _add_arguments(parser)
    return guarded(partial(run, stdout=stdout), parser.parse_args(argv))
