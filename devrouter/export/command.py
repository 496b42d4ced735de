"""`devrouter export FORMAT`: read a config the way `check` does, make the plan, print the
format on stdout and every gap on stderr (one line each, after "devrouter export: ").

The config is read without its access secrets (`read_config(..., secrets=False)`): the
export never holds a secret, so one cannot leak into the output, and a machine without the
secret's variable or file can still export.

Exit codes: 0 printed (gaps are reported, not failures), 1 no config or an invalid one,
2 a bad option.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ..config.reload import find_config, read_config
from ..core.errors import EXIT_OK, CommandError, UsageError
from . import caddy, kubernetes, nginx, traefik
from .plan import DEFAULT_HTTP_PORT, ExportOptions, check_domain, check_host, make_plan
from .text import Rendered

FORMATS: dict[str, Callable[..., Rendered]] = {
    "caddy": caddy.render,
    "nginx": nginx.render,
    "traefik": traefik.render,
    "kubernetes": kubernetes.render,
}


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `export` (`parents`: the CLI's common options)."""
    p = sub.add_parser(
        "export",
        parents=list(parents),
        help="print the routes as Caddy, nginx, Traefik or Kubernetes configuration",
        description="Print the config's routes as configuration for another engine: a "
        "Caddyfile, nginx server blocks (to include in http {}), a Traefik file-provider "
        "dynamic configuration, or Kubernetes Ingress and Service manifests. What the engine "
        "cannot express is listed at the top of the output and on stderr.",
        epilog="Exit status: 0 printed, 1 no config or an invalid one, 2 a bad option. "
        "See docs/export.md.",
    )
    p.add_argument("format", choices=tuple(FORMATS), metavar="FORMAT", help=", ".join(FORMATS))
    p.add_argument("--config", metavar="PATH", help="config file (default: as for `check`)")
    p.add_argument(
        "--domain",
        metavar="D",
        default="localhost",
        help="replaces .localhost: api -> api.D (default: localhost)",
    )
    p.add_argument(
        "--upstream-host",
        metavar="H",
        help="replaces 127.0.0.1 and ::1 in every backend (a name or an address)",
    )
    p.add_argument(
        "--port",
        metavar="P",
        type=int,
        default=DEFAULT_HTTP_PORT,
        help=f"the port the engine listens on for plain HTTP (default: {DEFAULT_HTTP_PORT})",
    )
    p.add_argument(
        "--bind",
        metavar="ADDR",
        help="the address the engine listens on (caddy, nginx; default: every address)",
    )
    p.add_argument(
        "--service-map",
        metavar="NAME=SERVICE:PORT",
        action="append",
        default=[],
        help="kubernetes: the Service that serves a route NAME (or a backend port); repeatable",
    )
    p.set_defaults(handler=cmd_export)


def options_from(args: argparse.Namespace) -> ExportOptions:
    if not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port} is outside 1-65535")
    try:
        domain = check_domain(args.domain)
        upstream = check_host(args.upstream_host, "--upstream-host") if args.upstream_host else None
        bind = check_host(args.bind, "--bind") if args.bind else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return ExportOptions(domain=domain, upstream_host=upstream, port=args.port, bind=bind)


def cmd_export(args: argparse.Namespace) -> int:
    options = options_from(args)
    if args.service_map and args.format != "kubernetes":
        raise UsageError("--service-map is for the kubernetes format only")
    path = find_config(args.config, os.environ, Path.cwd())
    if path is None:
        raise CommandError(
            "no config file found (looked for $DEVROUTER_CONFIG, ./devrouter.yaml and "
            "~/.config/devrouter/config.yaml)"
        )
    config = read_config(path, secrets=False)  # an invalid one is a ConfigError: exit 1
    plan = make_plan(config, options)
    if args.format == "kubernetes":
        try:
            services = kubernetes.parse_service_map(args.service_map)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        rendered = kubernetes.render(plan, services)
    else:
        rendered = FORMATS[args.format](plan)
    sys.stdout.write(rendered.text)
    sys.stdout.flush()
    for gap in rendered.gaps:
        print(f"devrouter export: not expressed in {args.format}: {gap}", file=sys.stderr)
    return EXIT_OK
