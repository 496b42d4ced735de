"""The router's own commands: `serve`, `check` and `demo`."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from .. import __version__
from ..config.reload import find_config, read_config
from ..core.addresses import listen_addrs
from ..core.errors import EXIT_OK, CommandError, ConfigError, StartupError, UsageError
from ..core.model import DEFAULT_PORT, Config, ListenAddr
from ..core.state import State
from ..core.urls import name_url
from ..observe.accesslog import AccessLog
from ..server import activation
from ..server.app import Router, tune_malloc
from ..services import ports
from ..web.pages import route_url

log = logging.getLogger("devrouter")


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `serve`, `check` and `demo` (`parents`: the CLI's common options)."""
    common = list(parents)
    serve = sub.add_parser(
        "serve",
        parents=common,
        help="run the router in the foreground",
        description="Route NAME.localhost to local ports; reload the config when it changes.",
    )
    serve.add_argument(
        "--config",
        metavar="PATH",
        help="config file (default: "
        "$DEVROUTER_CONFIG, ./devrouter.yaml, ~/.config/devrouter/config.yaml)",
    )
    _add_listen(serve)
    serve.add_argument(
        "--no-access-log",
        action="store_true",
        help="do not print a line per request on stdout",
    )
    serve.add_argument(
        "--allow-remote",
        action="store_true",
        help="allow a --listen address that is not loopback (exposes your services)",
    )
    serve.add_argument(
        "--state-dir",
        metavar="PATH",
        help="where the control socket, port assignments and aliases live (default: "
        "$DEVROUTER_HOME, $XDG_STATE_HOME/devrouter or ~/.local/state/devrouter)",
    )

    check = sub.add_parser(
        "check",
        parents=common,
        help="validate a config and print its routes",
        description="Validate a config file and print the route table; exit 1 if invalid.",
    )
    check.add_argument("--config", metavar="PATH", help="config file to check")

    demo = sub.add_parser(
        "demo",
        parents=common,
        help="start the router with two demo services",
        description="Start two small demo services and the router, and print their URLs.",
    )
    _add_listen(demo)
    serve.set_defaults(handler=cmd_serve)
    check.set_defaults(handler=cmd_check)
    demo.set_defaults(handler=cmd_demo)


def _add_listen(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        default=[],
        help=f"HOST:PORT or PORT; repeatable (default: {DEFAULT_PORT} on 127.0.0.1 and ::1)",
    )


def _listen(values: Sequence[str], allow_remote: bool = False) -> tuple[ListenAddr, ...] | None:
    if not values:
        return None
    try:
        addrs = listen_addrs(values)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None
    remote = [a for a in addrs if not a.is_loopback]
    if remote and not allow_remote:
        raise UsageError(
            f"refusing to listen on {remote[0]}: it is reachable from other machines, which "
            "would expose every routed service. Add --allow-remote if you really mean it."
        )
    for addr in remote:
        log.warning("listening on %s: every routed service is reachable from the network", addr)
    return addrs


def cmd_serve(args: argparse.Namespace) -> int:
    cli_listen = _listen(args.listen, args.allow_remote)
    # systemd socket activation: the sockets it bound (port 80 without privilege) win
    count = activation.for_this_process(os.environ, os.getpid())
    inherited = activation.adopt(count, args.allow_remote) if count else []
    if inherited:
        activation.forget(os.environ)  # the services this router starts must not take them
        where = ", ".join(str(a) for _, a in inherited)
        if cli_listen:
            log.warning("--listen is ignored: serving the sockets systemd passed (%s)", where)
        log.info("socket activation: serving %s", where)
        cli_listen = tuple(a for _, a in inherited)
    path = find_config(args.config, os.environ, Path.cwd())
    own_ports = {a.port for a in cli_listen} if cli_listen else None
    if path is None:
        config = Config()
        log.info(
            "no config file found; serving an empty route table "
            "(create ./devrouter.yaml or pass --config)"
        )
    else:
        try:
            config = read_config(path, own_ports)
        except ConfigError as exc:
            raise StartupError(str(exc)) from None
    listen = cli_listen or config.listen or listen_addrs([DEFAULT_PORT])
    required = listen if (cli_listen or config.listen) else listen[:1]
    tune_malloc()
    access_log = None if args.no_access_log else AccessLog()
    state_dir = Path(args.state_dir) if args.state_dir else ports.state_dir()
    router = Router(
        State(config),
        listen,
        path,
        required=required,
        access_log=access_log,
        state_dir=state_dir,
        docker=True,  # as the config's `docker:` section says (on by default)
        inherited=inherited,
    )
    return _run(_serve(router))


async def _serve(router: Router, after_start: Callable[[], None] | None = None) -> int:
    await router.start()
    _install_signals(router)  # before the ready line: a supervisor may signal right after it
    snapshot = router.state.snapshot
    log.info(
        "devrouter %s ready on %s (%s), %d route(s) from %s",
        __version__,
        router.url,
        ", ".join(str(a) for a in router.bound),
        len(snapshot.table.routes),
        snapshot.config.source,
    )
    if router.certs is not None and router.https_url is not None:
        log.info(
            "https:// on the same port (HTTP/1.1 and HTTP/2): %s; browsers trust it after "
            "`devrouter trust` (the CA: %s)",
            router.https_url,
            router.certs.ca.paths.cert,
        )
    open_ = [r.name for r in snapshot.table.routes if r.access is None]
    if snapshot.config.access is not None and not snapshot.config.access.is_off:
        log.info(
            "access: the dashboard and every route require a secret%s",
            f" except {', '.join(open_)}" if open_ else "",
        )
    elif len(open_) < len(snapshot.table.routes):
        protected = [r.name for r in snapshot.table.routes if r.access is not None]
        log.info("access: %s require a secret", ", ".join(protected))
    if after_start is not None:
        after_start()
    await router.wait()
    log.info("shutting down (letting in-flight requests finish)")
    await router.close()
    return EXIT_OK


def _install_signals(router: Router) -> None:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    count = 0

    def on_signal() -> None:
        nonlocal count
        count += 1
        if count == 1:
            router.request_stop()
        elif task is not None:
            task.cancel()  # a second Ctrl-C: stop waiting for streams

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)


def _run(coro: Awaitable[int]) -> int:
    async def runner() -> int:
        try:
            return await coro
        except asyncio.CancelledError:
            return EXIT_OK

    try:
        import uvloop
    except ImportError:
        return asyncio.run(runner())
    return uvloop.run(runner())


def cmd_check(args: argparse.Namespace) -> int:
    path = find_config(args.config, os.environ, Path.cwd())
    if path is None:
        raise CommandError(
            "no config file found (looked for $DEVROUTER_CONFIG, ./devrouter.yaml and "
            "~/.config/devrouter/config.yaml)"
        )
    config = read_config(path)  # an invalid one is a ConfigError: exit 1
    port = (config.listen or listen_addrs([DEFAULT_PORT]))[0].port
    print(f"{path}: valid, {len(config.routes)} route(s)")
    width = max((len(route_url(r, port)) for r in config.routes), default=0)
    effective = {r.name: r for r in State(config).snapshot.table.routes}  # access filled in
    for r in config.routes:
        r = effective.get(r.name, r)
        secret = "  (requires a secret)" if r.access is not None else ""
        print(f"  {route_url(r, port):<{width}}  -> {r.upstream.describe()}{secret}")
        for p in r.paths:
            print(f"  {'':<{width}}  {p.prefix} -> {p.upstream.describe()}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    tune_malloc()
    listen = _listen(args.listen) or listen_addrs([DEFAULT_PORT])
    return _run(_demo(listen))


async def _demo(listen: tuple[ListenAddr, ...]) -> int:
    from .demo import start_services

    port = listen[0].port
    runners, config = await start_services(port)
    router = Router(
        State(config),
        listen,
        None,
        required=listen[:1],
        access_log=AccessLog(),
        ca_dir=ports.state_dir(),  # the CA, not the control socket: a `serve` may be running
    )

    def show() -> None:
        tls = router.https_url is not None
        print("\ndevrouter demo is running. Open in a browser:\n", flush=True)
        for r in config.routes:
            print(f"  {route_url(r, port):<32} -> {r.upstream.describe()}", flush=True)
            if tls:
                print(f"  {route_url(r, port, 'https'):<32} -> the same, over HTTPS", flush=True)
        print(f"  {name_url(None, port, path='/'):<32} -> the dashboard", flush=True)
        if tls and router.certs is not None:
            print(
                f"\nHTTPS uses devrouter's local CA ({router.certs.ca.paths.cert}); run "
                "`devrouter trust` once so browsers trust it.",
                flush=True,
            )
        print("\nPress Ctrl-C to stop.", flush=True)

    try:
        return await _serve(router, show)
    finally:
        for runner in runners:
            await runner.cleanup()
