"""The small commands around `run`: `ls`, `url`, `port`, `alias` and `stop`, and the command
line of all six (`add_parser`).

Exit codes: 0, 1 when the router refused (`alias`) or there was nothing to do it to, 2 for
usage errors, 3 when the router cannot be reached or started (`run`'s own are in
devrouter.services.run).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import EXIT_OK, CommandError, UsageError
from ..core.urls import name_url
from .autostart import ensure_router, listen_args, the_state_dir
from .client import ControlError, RouterNotRunning, call, check_name, status
from .control import ALIASES_NAME
from .locate import locate
from .output import say
from .ports import accepts, assign, locked, read_json, write_private
from .procs import process_alive
from .run import add_run_options, cmd_run
from .tools import HOST


def _probe(port: int, hosts: Sequence[str]) -> bool:
    return any(accepts(host, port, timeout_s=0.3) for host in hosts)


def cmd_ls(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    try:
        data = call(directory, "list")
    except RouterNotRunning:
        if args.json:
            print(
                json.dumps(
                    {"router": None, "routes": [], "conflicts": [], "docker": None}, indent=2
                )
            )
        else:
            say("no router is running (start one with `devrouter serve` or `devrouter run`)")
        return EXIT_OK
    routes: list[dict[str, Any]] = data.get("routes", [])
    for r in routes:
        r["listening"] = _probe(int(r["port"]), r.get("hosts") or [HOST, "::1"])
    if args.json:
        out = {k: data.get(k) for k in ("router", "routes", "conflicts", "docker")}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(format_routes(routes, data.get("conflicts", []), data.get("router") or {}))
    docker = format_docker(data.get("docker"))
    if docker:
        print(docker)
    return EXIT_OK


def _state(r: Mapping[str, Any]) -> str:
    if r.get("exit_code") is not None:
        return f"exited ({r['exit_code']})"
    if r["listening"]:
        return "listening"
    return "starting" if r.get("source") in ("run", "stack") else "not listening"


def format_routes(
    routes: Sequence[Mapping[str, Any]], conflicts: Sequence[str], router: Mapping[str, Any]
) -> str:
    """The `devrouter ls` table: routes without a stack first, then one group per stack."""
    if not routes:
        return f"no routes (router {router.get('url', '?')}, pid {router.get('pid', '?')})"
    # a Compose project is grouped apart from a `devrouter up` stack of the same name
    groups: dict[tuple[str, str] | None, list[Mapping[str, Any]]] = {}
    for r in routes:
        stack = r.get("stack")
        kind = "compose" if r.get("container") else "stack"
        groups.setdefault((kind, stack) if stack else None, []).append(r)
    width = max(len(r["url"]) for r in routes)
    head = f"{'URL':<{width}}  {'PORT':>5}  {'SOURCE':<6}  {'PID':>7}  STATUS"
    lines = [head]
    for group in sorted(groups, key=lambda g: (g is not None, g or ("", ""))):
        if group is not None:
            lines.append(f"{group[0]} {group[1]}:")
        for r in groups[group]:
            pid = str(r["owner_pid"]) if r.get("owner_pid") else "-"
            status = _state(r)
            container = r.get("container")
            if container:
                health = f", {container['health']}" if container.get("health") else ""
                status += f" (container {container['name']}, {container['image']}{health})"
            lines.append(
                f"{r['url']:<{width}}  {r['port']:>5}  {r['source']:<6}  {pid:>7}  {status}"
            )
            for p in r.get("paths", []):
                lines.append(f"{'':<{width}}  {p['port']:>5}  {p['prefix']}")
    lines += [f"clash: {c}" for c in conflicts]
    return "\n".join(lines)


def format_docker(report: Mapping[str, Any] | None) -> str:
    """The Docker lines under `devrouter ls`: the Engine watched, and each running container
    that has no name, with the reason. Nothing on a machine without Docker."""
    if not report or report.get("state") in ("starting", "absent"):
        return ""
    state, detail = report.get("state"), report.get("detail") or ""
    if state == "off":
        return f"docker: off ({detail})"
    if state != "connected":
        return f"docker: {detail}"
    lines = [f"docker: watching the Engine at {report.get('socket')}"]
    for c in report.get("containers") or []:
        if c.get("reason"):
            lines.append(f"  container {c['name']} has no route: it {c['reason']}")
    return "\n".join(lines)


def cmd_url(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise UsageError(str(exc)) from None
    # Found like every other command finds it: the control socket's router, else the
    # config's `listen:`, else $DEVROUTER_LISTEN, else the default; nothing is asked.
    found = locate(directory=the_state_dir(), probe=False)
    print(name_url(name, found.port))
    return EXIT_OK


def cmd_port(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise UsageError(str(exc)) from None
    directory = the_state_dir()
    with contextlib.suppress(RouterNotRunning):
        for r in call(directory, "list").get("routes", []):
            if r["name"] == name:
                print(r["port"])
                return EXIT_OK
    print(assign(directory, name).port)  # a PortError is a StartupError: exit 3
    return EXIT_OK


def cmd_alias(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    if args.remove:
        if args.port is not None:
            raise UsageError("alias --remove takes only a NAME")
        try:
            call(directory, "unalias", name=args.name)
        except RouterNotRunning:
            _remove_alias_offline(directory, check_name(args.name))
        except ControlError as exc:
            raise CommandError(str(exc)) from None
        say(f"removed the alias {args.name}")
        return EXIT_OK
    if args.port is None:
        raise UsageError("usage: devrouter alias NAME PORT (or --remove NAME)")
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise UsageError(str(exc)) from None
    info = ensure_router(directory, listen_args(args.listen))
    try:
        reply = call(directory, "alias", name=name, port=args.port)
    except ControlError as exc:
        raise CommandError(str(exc)) from None
    for w in reply.get("warnings", []):
        say(f"warning: {w}")
    say(
        f"{name_url(name, int(info['port']))} -> port {args.port} "
        f"(until `devrouter alias --remove {name}`)"
    )
    return EXIT_OK


def _remove_alias_offline(directory: Path, name: str) -> None:
    path = directory / ALIASES_NAME
    with locked(directory):
        data = read_json(path)
        aliases = data.get("aliases") if isinstance(data, dict) else None
        if not isinstance(aliases, dict) or name not in aliases:
            raise CommandError(f"there is no alias named '{name}'")
        del aliases[name]
        write_private(path, json.dumps({"aliases": aliases}, indent=2) + "\n")


def cmd_stop(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    info = status(directory)
    if info is None:
        say("no router is running")
        return EXIT_OK
    pid = int(info["pid"])
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline and process_alive(pid):
        time.sleep(0.05)
    if process_alive(pid):
        raise CommandError(f"the router (pid {pid}) is still running after 15 s")
    say(f"stopped the router (pid {pid})")
    return EXIT_OK


# --- the command line ---------------------------------------------------------------------


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add run, ls/list, url, port, alias and stop, each with its handler (`parents`: the
    CLI's common options)."""
    run = sub.add_parser(
        "run",
        parents=list(parents),
        help="run a command with an assigned port, reachable by name while it runs",
        description="Run CMD with PORT, HOST=127.0.0.1, DEVROUTER_URL and "
        "DEVROUTER_INTERNAL_URL set, and route http://NAME.localhost to it while it runs. "
        "Without NAME, the name of ./package.json or of the directory is used. A router is "
        "started in the background if none is running.",
        epilog="Arguments `$PORT`, `$HOST`, `$DEVROUTER_URL` and `$DEVROUTER_INTERNAL_URL` "
        "are replaced (quote them: --port '$PORT'). Vite, React Router, Astro, Angular CLI, "
        "Nuxt, Next.js, Expo, Storybook, webpack-dev-server, uvicorn, flask and Django "
        "runserver get --port (and --host) added.",
    )
    add_run_options(run)
    # One REMAINDER for NAME and CMD: argparse keeps the `--` in it, which is how
    # `run -- CMD` (no NAME) is told from `run NAME CMD` (split_run_words).
    run.add_argument(
        "words",
        nargs=argparse.REMAINDER,
        metavar="[NAME] -- CMD",
        help="route name (http://NAME.localhost; default: package.json's name or the "
        "directory's), then the command",
    )
    options = argparse.ArgumentParser(prog="devrouter run", add_help=False)
    add_run_options(options)
    run.set_defaults(run_options=options, handler=cmd_run)

    ls_help = "list every route with its port, source, owner and whether it is listening"
    for command in ("ls", "list"):
        ls = sub.add_parser(
            command, parents=list(parents), help=ls_help if command == "ls" else "same as ls"
        )
        ls.add_argument("--json", action="store_true", help="machine-readable output")
        ls.set_defaults(handler=cmd_ls)

    url = sub.add_parser("url", parents=list(parents), help="print the URL of a name")
    url.add_argument("name", metavar="NAME")
    url.set_defaults(handler=cmd_url)

    port = sub.add_parser(
        "port", parents=list(parents), help="print the port of a name (assigning one if needed)"
    )
    port.add_argument("name", metavar="NAME")
    port.set_defaults(handler=cmd_port)

    alias = sub.add_parser(
        "alias",
        parents=list(parents),
        help="route a name to a port devrouter does not start (a container, an admin UI)",
    )
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("port", metavar="PORT", type=int, nargs="?")
    alias.add_argument("--remove", action="store_true", help="remove the alias NAME")
    alias.add_argument("--listen", metavar="ADDR", action="append", default=[])
    alias.set_defaults(handler=cmd_alias)

    stop = sub.add_parser("stop", parents=list(parents), help="stop the background router")
    stop.set_defaults(handler=cmd_stop)
