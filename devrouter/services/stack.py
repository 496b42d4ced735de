"""`devrouter up` and `devrouter down`: a project's services, started and stopped together.

A project describes its services in `devrouter.yaml` (the same file may also hold `routes:`
for `devrouter serve`, which ignores the stack keys):

    stack: shop                       # optional; see below
    services:
      api: {run: "uvicorn app:app --port $PORT"}
      web: {run: "npm run dev", paths: {/api: api}}
      docs: "mkdocs serve -a 127.0.0.1:$PORT"

Each service is routed as NAME.STACK.localhost. The stack name is `stack:`, else the
directory's name; in a linked git worktree it is the branch name (`BRANCH.STACK` when
`stack:` is given), so two checkouts of one project never share a name. `--stack` overrides
all of this.

`up` gives each service its stable port, registers all routes at once (all or none), starts
every command in its own process group with PORT, HOST, DEVROUTER_URL,
DEVROUTER_INTERNAL_URL and each sibling's NAME_URL, NAME_INTERNAL_URL and NAME_PORT in its
environment, and interleaves their output line by line behind a coloured name prefix. Ctrl-C
(or SIGTERM) is passed on to every service; what is still running after STOP_GRACE_S is
killed. A service that exits on its own leaves its route in place (its last lines explain
the 502) while the others keep running. `up --detach` runs the same thing in the background
with its output in the state directory, and waits for it to start: a stack already running,
a refusal, or a service that exits at once is reported with its reason and exit code 3.
`down` stops it.

Parsing is pure (`parse_stack`): text in, a frozen `StackFile` out, errors naming file:line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..core.errors import (
    EXIT_FAILED,
    EXIT_OK,
    CommandError,
    ConfigError,
    StartupError,
    UsageError,
)
from ..core.names import DOTTED_RE
from .autostart import ensure_router, listen_args, the_state_dir
from .client import ControlError, Registration, call, status
from .listeners import wrong_port_message
from .output import LineTail, Pump, drain, read_since, say, write_all
from .ports import assign
from .procs import (
    exit_status,
    process_alive,
    signal_group,
    spawn_detached,
    start_process,
    stop_group,
)
from .run import browser_url, https_url, internal_url, service_env, tls_env, watching_start
from .stackfile import STACK_FILE, ServiceSpec, StackFile, env_prefix, load_stack, stack_name
from .tools import HOST, shell_command, substitute, tool_flags

#: After passing Ctrl-C/SIGTERM on, wait this long for services to exit before SIGKILL (s).
STOP_GRACE_S = 10.0
#: Longest wait for a detached stack to register, and for `down` to see it gone (s).
DETACH_TIMEOUT_S = 30.0
#: After a detached stack has registered, how long `up -d` waits for every service to
#: listen (or for one to exit, which it reports), in seconds.
DETACH_SETTLE_S = 3.0
#: Lines of a service's output quoted when a detached stack fails.
DETACH_CONTEXT_LINES = 3
_OWN_PREFIX = "devrouter: "
_COLOURS = ("36", "33", "32", "35", "34", "31", "96", "93", "92", "95", "94", "91")


@dataclass(frozen=True, slots=True)
class Planned:
    spec: ServiceSpec
    route: str  # NAME.STACK
    port: int
    url: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    cwd: Path


def plan(
    stack_file: StackFile,
    stack: str,
    ports: Mapping[str, int],
    router_port: int,
    base_env: Mapping[str, str],
    project: Path,
    tls: Mapping[str, str] | None = None,
) -> list[Planned]:
    """Everything needed to start each service; pure but for reading package.json. Every
    service of the stack is in each one's environment as NAME_URL (through the router, for
    browsers), NAME_INTERNAL_URL (its own address, for server-side code) and NAME_PORT."""
    siblings: dict[str, str] = {"DEVROUTER_STACK": stack}
    for s in stack_file.services:
        prefix = env_prefix(s.name)
        siblings[f"{prefix}_URL"] = browser_url(f"{s.name}.{stack}", router_port)
        siblings[f"{prefix}_INTERNAL_URL"] = internal_url(ports[s.name])
        if tls:
            siblings[f"{prefix}_HTTPS_URL"] = https_url(f"{s.name}.{stack}", router_port)
        siblings[f"{prefix}_PORT"] = str(ports[s.name])
    out: list[Planned] = []
    for s in stack_file.services:
        route = f"{s.name}.{stack}"
        port = ports[s.name]
        env = service_env(route, port, router_port, {**base_env, **siblings}, tls)
        env.update(dict(s.env))
        cwd = (project / s.cwd).resolve() if s.cwd else project
        if isinstance(s.run, tuple):
            argv = substitute(s.run, env)
            argv += tool_flags(argv, port, HOST, cwd)
        else:
            argv = shell_command(s.run, port, HOST, cwd)
        out.append(Planned(s, route, port, env["DEVROUTER_URL"], tuple(argv), env, cwd))
    return out


def _registration(p: Planned, stack: str, ports: Mapping[str, int]) -> dict[str, Any]:
    paths = {
        prefix: ports[target] if isinstance(target, str) else target
        for prefix, target in p.spec.paths
    }
    command = p.spec.run if isinstance(p.spec.run, str) else shlex.join(p.spec.run)
    return {
        "name": p.route,
        "port": p.port,
        "paths": paths,
        "command": command,
        "source": "stack",
        "stack": stack,
    }


# --- devrouter up -------------------------------------------------------------------------


def _colour_enabled() -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    return bool(os.environ.get("FORCE_COLOR")) or os.isatty(1)


class Prefixer:
    """Writes a service's output line by line behind its (coloured) name."""

    def __init__(self, fd: int, prefix: bytes, on_lines: Callable[[list[str]], None]) -> None:
        self.fd = fd
        self.prefix = prefix
        self.on_lines = on_lines
        self._partial = b""
        self._tail = LineTail()

    def feed(self, data: bytes) -> None:
        lines = self._tail.feed(data)
        if lines:
            self.on_lines(lines)
        *complete, self._partial = (self._partial + data).split(b"\n")
        if complete:
            write_all(self.fd, b"".join(self.prefix + line + b"\n" for line in complete))

    def flush(self) -> None:
        rest = self._tail.flush()
        if rest:
            self.on_lines(rest)
        if self._partial:
            write_all(self.fd, self.prefix + self._partial + b"\n")
            self._partial = b""


def _resolve(args: argparse.Namespace) -> tuple[StackFile, str, Path]:
    path = Path(args.file) if args.file else Path.cwd() / STACK_FILE
    try:
        stack_file = load_stack(path)
    except ConfigError as exc:
        raise UsageError(str(exc)) from None
    project = path.resolve().parent
    if args.stack:
        stack = args.stack.strip().lower()
        if not DOTTED_RE.match(stack):
            raise UsageError(f"--stack {args.stack!r}: not a DNS name")
    else:
        stack = stack_name(stack_file.stack, project)
    return stack_file, stack, project


def cmd_up(args: argparse.Namespace) -> int:
    stack_file, stack, project = _resolve(args)
    listen = listen_args(args.listen)
    directory = the_state_dir()
    info = ensure_router(directory, listen)
    _refuse_taken(directory, stack_file, stack)  # before detaching: a second `up -d` fails here
    if args.detach:
        return _up_detached(args, stack_file, stack, directory, listen)
    ports: dict[str, int] = {}
    for s in stack_file.services:
        if s.port is not None:
            ports[s.name] = s.port
        else:
            assignment = assign(directory, f"{s.name}.{stack}")
            if assignment.moved_from is not None:
                say(f"port {assignment.moved_from} is busy; {s.name} gets {assignment.port}")
            ports[s.name] = assignment.port
    router_port = int(info.get("port") or 0)
    planned = plan(stack_file, stack, ports, router_port, os.environ, project, tls_env(directory))
    services = [_registration(p, stack, ports) for p in planned]
    return asyncio.run(_up(directory, stack, planned, services))


def _refuse_taken(directory: Path, stack_file: StackFile, stack: str) -> None:
    for s in stack_file.services:
        owner = call(directory, "who", name=f"{s.name}.{stack}").get("owner")
        if owner:
            raise StartupError(
                f"{s.name}.{stack} is already registered by pid {owner['pid']} "
                f"(`devrouter {owner['source']}`: {owner['command']}); stop it (`devrouter "
                f"down {stack}`) or start this one with --stack NAME"
            )


async def _up(
    directory: Path, stack: str, planned: list[Planned], services: list[dict[str, Any]]
) -> int:
    reg = Registration(directory, services, report=say)
    try:
        warnings = await reg.open()
    except ControlError as exc:
        raise StartupError(str(exc)) from None
    for w in warnings:
        say(f"warning: {w}")
    width = max(len(p.url) for p in planned)
    say(f"stack {stack}: {len(planned)} service(s)")
    for p in planned:
        print(f"  {p.url:<{width}}  -> {HOST}:{p.port}", file=sys.stderr, flush=True)
    stop = asyncio.Event()
    keeper = asyncio.create_task(reg.run(stop))
    try:
        return await _supervise_all(reg, planned)
    finally:
        stop.set()
        await keeper
        await reg.close()


async def _supervise_all(reg: Registration, planned: list[Planned]) -> int:
    loop = asyncio.get_running_loop()
    colour = _colour_enabled()
    width = max(len(p.spec.name) for p in planned)
    procs: dict[str, asyncio.subprocess.Process] = {}
    tasks: list[asyncio.Task[int]] = []
    stopping: list[int] = []

    def on_signal(sig: int) -> None:
        stopping.append(sig)
        for proc in procs.values():
            signal_group(proc.pid, signal.SIGKILL if len(stopping) > 1 else sig)
        if len(stopping) == 1:
            say("stopping (Ctrl-C again to kill)")
            loop.call_later(STOP_GRACE_S, kill_all)

    def kill_all() -> None:
        for proc in procs.values():
            signal_group(proc.pid, signal.SIGKILL)

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        for i, p in enumerate(planned):
            if stopping:
                break
            tasks.append(asyncio.create_task(_one(reg, p, i, width, colour, procs, stopping)))
            await asyncio.sleep(0)  # let it start before the next
        codes = await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        await asyncio.gather(*(stop_group(proc.pid) for proc in procs.values()))
    if stopping:
        return EXIT_OK
    failed = [c for c in codes if isinstance(c, int) and c != 0]
    errors = [c for c in codes if isinstance(c, BaseException)]
    if errors and not failed:
        return EXIT_FAILED
    return failed[0] if failed else EXIT_OK


async def _one(
    reg: Registration,
    p: Planned,
    index: int,
    width: int,
    colour: bool,
    procs: dict[str, asyncio.subprocess.Process],
    stopping: list[int],
) -> int:
    name = p.spec.name
    label = f"{name:<{width}} | "
    if colour:
        label = f"\x1b[{_COLOURS[index % len(_COLOURS)]}m{name:<{width}}\x1b[0m | "

    def lines(new: list[str]) -> None:
        reg.update(p.route, lines=new)

    prefixers = [Prefixer(fd, label.encode(), lines) for fd in (1, 2)]
    pumps: list[Pump] = []
    child_ends: list[int] = []
    for pre in prefixers:
        r, w = os.pipe()
        child_ends.append(w)
        pumps.append(Pump(r, pre.feed))
    try:
        proc = await start_process(
            p.argv,
            p.env,
            stdin=subprocess.DEVNULL,
            stdout=child_ends[0],
            stderr=child_ends[1],
            cwd=p.cwd,
        )
    except CommandError as exc:
        for pump in pumps:
            pump.close()
        say(f"{name}: {exc}")
        reg.update(p.route, exit_code=exc.exit_code, lines=[str(exc)])
        return exc.exit_code
    finally:
        for fd in child_ends:
            os.close(fd)
    procs[name] = proc
    reg.update(p.route, pgid=proc.pid)
    with contextlib.suppress(ControlError):
        await reg.flush()  # now: the router stops this group if `up` is SIGKILLed
    async with watching_start(reg, p.route, name, p.port, proc.pid):
        returncode = await proc.wait()
    await stop_group(proc.pid)
    await drain(pumps)
    for pre in prefixers:
        pre.flush()
    code = exit_status(returncode)
    reg.update(p.route, exit_code=code)
    if stopping:
        return code
    if any(other.returncode is None for n, other in procs.items() if n != name):
        say(f"{name} exited with code {code}; the other services keep running (Ctrl-C stops them)")
    else:
        say(f"{name} exited with code {code}")
    return code


def _up_detached(
    args: argparse.Namespace,
    stack_file: StackFile,
    stack: str,
    directory: Path,
    listen: Sequence[str],
) -> int:
    """Start `up` in the background and watch it start: success once every service is
    registered by it and ready (or DETACH_SETTLE_S later, still starting); a StartupError with
    the real reason when it exits (its log), or a service exits, before that."""
    logs = directory / "stacks"
    logs.mkdir(mode=0o700, exist_ok=True)
    log_path = logs / f"{stack}.log"
    path = Path(args.file).resolve() if args.file else (Path.cwd() / STACK_FILE).resolve()
    argv = [sys.executable, "-m", "devrouter", "up", "--file", str(path), "--stack", stack]
    for addr in listen:
        argv += ["--listen", addr]
    env = {**os.environ, "DEVROUTER_HOME": str(directory)}
    size = log_path.stat().st_size if log_path.exists() else 0
    pid = spawn_detached(argv, env, path.parent, log_path)
    expected = {f"{s.name}.{stack}" for s in stack_file.services}
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    registered_at: float | None = None
    while time.monotonic() < deadline:
        # Only routes this process registered: another stack's must not pass for ours.
        routes = {
            str(r["name"]): r for r in _stack_routes(directory, stack) if r.get("owner_pid") == pid
        }
        exited = sorted(n for n, r in routes.items() if r.get("exit_code") is not None)
        if exited:
            raise StartupError(
                _exited(directory, stack, exited[0], routes[exited[0]], expected, log_path)
            )
        if not process_alive(pid):
            reason = detached_failure(read_since(log_path, size) or "")
            raise StartupError(f"stack {stack} did not start: {reason} (log {log_path})")
        if expected <= set(routes):
            registered_at = registered_at or time.monotonic()
            settled = time.monotonic() - registered_at >= DETACH_SETTLE_S
            if settled or all(routes[n].get("ready") for n in expected):
                _started(stack, pid, log_path, [routes[n] for n in sorted(expected)])
                return EXIT_OK
        time.sleep(0.1)
    raise StartupError(
        f"stack {stack} did not register within {DETACH_TIMEOUT_S:g} s (log {log_path})"
    )


def _exited(
    directory: Path,
    stack: str,
    name: str,
    route: Mapping[str, Any],
    expected: set[str],
    log_path: Path,
) -> str:
    """The one line for a service of a detached stack that exited as it started."""
    try:
        lines = [str(x) for x in call(directory, "output", name=name).get("lines", [])]
    except ControlError:
        lines = []
    last = f": {lines[-1].strip()}" if lines and lines[-1].strip() else ""
    rest = (
        f"; the other services keep running (`devrouter down {stack}` stops them)"
        if expected - {name}
        else ""
    )
    service = name.removesuffix(f".{stack}")
    return (
        f"stack {stack}: {service} exited with code {route['exit_code']} as it started{last} "
        f"(log {log_path}){rest}"
    )


def _started(stack: str, pid: int, log_path: Path, routes: Sequence[Mapping[str, Any]]) -> None:
    say(f"stack {stack} is running in the background (pid {pid}, log {log_path})")
    for r in routes:
        note = "" if r.get("ready") else "  (starting)"
        print(f"  {r['url']}  -> {HOST}:{r['port']}{note}", file=sys.stderr, flush=True)
        others = r.get("listens_on") or []
        if others:
            service = str(r["name"]).removesuffix(f".{stack}")
            say(wrong_port_message(service, others, int(r["port"])))
    say(f"stop it with `devrouter down {stack}`")


def detached_failure(log_text: str) -> str:
    """Why a detached `up` stopped, from what it wrote to its log since it started: its
    last `devrouter:` line (a refusal, a command not found, a service's exit), and the
    service output just before it (up to DETACH_CONTEXT_LINES lines), which usually says
    why."""
    lines = [x for x in (" ".join(LineTail.clean(x).split()) for x in log_text.splitlines()) if x]
    mine = [i for i, x in enumerate(lines) if x.startswith(_OWN_PREFIX)]
    if not mine:
        return lines[-1] if lines else "it exited without a word"
    reason = lines[mine[-1]][len(_OWN_PREFIX) :]
    context: list[str] = []
    for x in reversed(lines[: mine[-1]]):
        if x.startswith((_OWN_PREFIX, "http://")):  # our own lines, the list of URLs
            break
        context.insert(0, x)
    if context:
        reason += "; last output: " + " / ".join(context[-DETACH_CONTEXT_LINES:])
    return reason


def _stack_routes(directory: Path, stack: str) -> list[dict[str, Any]]:
    try:
        routes: list[dict[str, Any]] = call(directory, "list").get("routes", [])
    except ControlError:
        return []
    return [r for r in routes if r.get("stack") == stack and r.get("source") == "stack"]


# --- devrouter down -----------------------------------------------------------------------


def cmd_down(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    if args.stack:
        stack = args.stack.strip().lower()
    else:
        _, stack, _ = _resolve(args)
    if status(directory) is None:
        say("no router is running, so no stack is either")
        return EXIT_FAILED
    routes = _stack_routes(directory, stack)
    owners = {int(r["owner_pid"]) for r in routes if r.get("owner_pid")}
    if not owners:
        say(f"no stack named '{stack}' is running")
        return EXIT_FAILED
    for pid in owners:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + DETACH_TIMEOUT_S
    while time.monotonic() < deadline:
        if not any(process_alive(pid) for pid in owners):
            say(f"stopped stack {stack} ({len(routes)} service(s))")
            return EXIT_OK
        time.sleep(0.1)
    raise StartupError(f"stack {stack} (pid {', '.join(map(str, owners))}) is still running")


# --- wiring into the CLI ------------------------------------------------------------------


def add_parser(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser] = (),
) -> None:
    """Add `up` and `down` (`parents`: the CLI's common options)."""
    up = sub.add_parser(
        "up",
        parents=list(parents),
        help="start every service of ./devrouter.yaml, each at NAME.STACK.localhost",
        description="Start the services listed under `services:` in devrouter.yaml with "
        "assigned ports, route NAME.STACK.localhost to each, and stop them all on Ctrl-C.",
    )
    up.add_argument("-f", "--file", metavar="PATH", help=f"stack file (default: ./{STACK_FILE})")
    up.add_argument(
        "--stack", metavar="NAME", help="stack name (default: `stack:`, the directory or branch)"
    )
    up.add_argument(
        "-d", "--detach", action="store_true", help="run in the background (stop: devrouter down)"
    )
    up.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        default=[],
        help="address for a router started in the background",
    )
    down = sub.add_parser(
        "down",
        parents=list(parents),
        help="stop a running stack",
        description="Stop the stack of ./devrouter.yaml (or STACK), wherever it was started.",
    )
    down.add_argument("stack", metavar="STACK", nargs="?", help="stack name")
    down.add_argument("-f", "--file", metavar="PATH", help=f"stack file (default: ./{STACK_FILE})")
    up.set_defaults(handler=cmd_up)
    down.set_defaults(handler=cmd_down)
