"""The router glue: which router a route target goes through (devrouter.services.locate), and, for
--compare-direct, the route's backend."""

from __future__ import annotations

import argparse
import os
import socket
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import ConfigError, StartupError, UsageError
from ..core.model import Route
from .target import Target, is_route_name, loopback_address

if TYPE_CHECKING:  # for annotations only; find_router imports it when it runs
    from ..services.locate import Located


def find_router(args: argparse.Namespace, target: Target) -> Located | None:
    """The router a route target goes through (devrouter.services.locate); None for a target that is
    not a route. A URL's port is the router's; `--router-port` is for a NAME."""
    from ..services.locate import locate

    if is_route_name(args.target):
        return locate(port=args.router_port, flag="--router-port", config=args.config)
    if target.route is None:
        return None
    # Only --compare-direct needs the route table; otherwise the URL is asked nothing extra.
    return locate(port=target.port, flag="the URL", config=args.config, probe=args.compare_direct)


def direct_target(target: Target, config_path: str | None, router: Located | None = None) -> Target:
    """The route's backend for `target`: from the running router's live route table (config,
    `run`, `alias` and stack routes), else from the config file (a router that requires a
    secret does not show its table)."""
    from ..core.routes import RouteTable, select_upstream

    if target.route is None:
        raise UsageError("--compare-direct needs a route: give a NAME or a NAME.localhost URL")
    if router is not None and router.routes is not None:
        route = RouteTable.build(r.route() for r in router.routes).lookup(target.route)
        if route is None:
            raise StartupError(
                f"the router at {router.describe()} has no route for {target.route}.localhost; "
                "`devrouter ls` lists its routes"
            )
    else:
        route = _config_route(target.route, config_path)
    upstream = select_upstream(route, target.path)
    host = upstream.hosts[0]
    for candidate in upstream.hosts:  # the first address that accepts, as the router does
        family = socket.AF_INET6 if ":" in candidate else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(1.0)
            if s.connect_ex((candidate, upstream.port)) == 0:
                host = candidate
                break
    if loopback_address(host) is None:  # config validation guarantees it; check anyway
        raise StartupError(f"route {route.name} points off this machine ({host})")
    return replace(target, connect_host=host, port=upstream.port)


def _config_route(name: str, config_path: str | None) -> Route:
    """The route for `name` in the router's config file."""
    from ..config.reload import find_config, read_config
    from ..core.routes import RouteTable

    path = find_config(config_path, os.environ, Path.cwd())
    if path is None:
        raise StartupError(
            "--compare-direct needs the router's config to find the backend; none found "
            "(pass --config, or set $DEVROUTER_CONFIG)"
        )
    try:
        config = read_config(path, own_ports=())
    except ConfigError as exc:
        raise StartupError(str(exc)) from None
    route = RouteTable.build(config.routes).lookup(name)
    if route is None:
        raise StartupError(f"{path} has no route for {name}.localhost")
    return route
