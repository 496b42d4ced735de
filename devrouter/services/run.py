"""`devrouter run [NAME] -- CMD...`: a command with its own port, reachable by name while it
runs.

Theory of operation: make sure a router is running (start one in the background if not,
`devrouter.services.autostart`), pick NAME's stable port (`devrouter.services.ports`),
register NAME with the router over the control socket (`devrouter.services.client`), then
start CMD with PORT, HOST, DEVROUTER_URL (for browsers) and DEVROUTER_INTERNAL_URL (for
server-side code) in its environment. Without NAME, the name of ./package.json or of the
directory is used. CMD runs in its own process group (`devrouter.services.procs`), so that
when it exits, or `devrouter run` is told to stop, the whole group can be stopped and
nothing is left listening. When the terminal is ours, CMD's group is made the terminal's
foreground group (as a shell does for a job), so Ctrl-C and keyboard input reach it
directly and an interactive dev server (Vite's shortcuts) works. CMD's output is copied
through unchanged (`devrouter.services.output`: through a pseudo-terminal when our output
is a terminal, so colours and line buffering stay as if devrouter were not there); its last
lines go to the router for error pages. Until CMD listens on its port, the ports it listens
on instead are said in the terminal and sent to the router (`devrouter.services.listeners`).
If the router is killed, SIGKILLing `devrouter run` included, the router notices the dead
process, drops the route and stops CMD's group.

Exit codes of `run`: CMD's own (128+N when a signal N ended it), 127 when CMD is not found,
126 when it cannot be executed, 2 for usage errors, 3 when the router cannot be started or the
name is taken.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shlex
import signal
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..aio import sleep_or_stop
from ..core.errors import CommandError, StartupError, UsageError
from ..core.model import DEFAULT_PORT
from ..core.names import to_label
from ..core.urls import name_url
from ..tls import trust
from ..tls.ca import ca_paths, write_atomic
from .autostart import ensure_router, listen_args, the_state_dir
from .client import ControlError, Registration, call, check_name
from .listeners import watch_listens, wrong_port_message
from .locate import LISTEN_ENV
from .output import LineTail, Pump, drain, output_pair, say, write_all
from .ports import assign, in_use, read_json
from .procs import (
    exit_status,
    foreground_terminal,
    give_terminal,
    signal_group,
    start_process,
    stop_group,
)
from .tools import HOST, substitute, tool_flags

#: How often to look for CMD listening on its port, in seconds.
READY_POLL_S = 0.2


# --- the environment of a service ----------------------------------------------------------


def browser_url(name: str, router_port: int) -> str:
    """The URL through the router: for browsers and for anything that resolves *.localhost."""
    return name_url(name, router_port)


def internal_url(port: int) -> str:
    """The service's own address: works from any process on this machine, including server
    code whose resolver does not know *.localhost (glibc without nss-myhostname, Node's
    fetch, macOS getaddrinfo in some set-ups). Not through the router, so no path routes."""
    return f"http://{HOST}:{port}"


def https_url(name: str, router_port: int) -> str:
    """The URL through the router over HTTPS (the same port answers both)."""
    return name_url(name, router_port, "https")


def service_env(
    name: str,
    port: int,
    router_port: int,
    base: Mapping[str, str],
    tls: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`base` plus PORT, HOST, DEVROUTER_URL (the browser's URL) and DEVROUTER_INTERNAL_URL
    (the service's own address, for server-side code). With `tls` (devrouter.tls.trust's
    service_env: there is a local CA), DEVROUTER_HTTPS_URL too, and the variables that make
    the service's HTTPS clients trust the CA (merged_tls_env keeps the user's own CA files
    inside them)."""
    env = dict(base)
    env.update(
        {
            "PORT": str(port),
            "HOST": HOST,
            "DEVROUTER_URL": browser_url(name, router_port),
            "DEVROUTER_INTERNAL_URL": internal_url(port),
        }
    )
    if tls:
        env["DEVROUTER_HTTPS_URL"] = https_url(name, router_port)
        env.update(tls)
    return env


def merged_tls_env(tls: Mapping[str, str], base: Mapping[str, str], ca: Path) -> dict[str, str]:
    """`tls` for an environment that may already name CA files of its own: where `base`
    sets one of the variables to a readable file, the service gets that file plus the local
    CA (written beside the CA, as `<variable>.pem`), so neither the user's CAs nor ours are
    lost (Node reads one NODE_EXTRA_CA_CERTS file, OpenSSL one SSL_CERT_FILE)."""
    out = dict(tls)
    for key in tls:
        theirs = base.get(key)
        if not theirs or theirs == tls[key]:
            continue
        try:
            text = Path(theirs).read_bytes()
            merged = ca.parent / f"{key.lower()}.pem"
            write_atomic(merged, text.rstrip(b"\n") + b"\n" + ca.read_bytes(), 0o644)
        except OSError:
            out[key] = theirs  # unreadable: leave the user's setting alone
            continue
        out[key] = str(merged)
    return out


def tls_env(directory: Path) -> dict[str, str]:
    """What makes a service trust the local CA (devrouter.tls.trust.service_env); a CA that
    cannot be used costs one line, not the start."""
    try:
        env = trust.service_env(directory)
    except CommandError as exc:
        say(f"the service's HTTPS clients will not trust devrouter's CA: {exc}")
        return {}
    if not env:
        return env
    return merged_tls_env(env, os.environ, ca_paths(directory).cert)


# --- is it listening? ---------------------------------------------------------------------


async def listening(port: int) -> bool:
    for host in (HOST, "::1"):
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 1.0)
        except (OSError, TimeoutError):
            continue
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True
    return False


async def watch_ready(port: int, on_ready: Callable[[], None], stop: asyncio.Event) -> None:
    """Call `on_ready` once something accepts connections on `port`; ends when `stop` is
    set (not by cancellation, which `wait_for` can lose on Python 3.11)."""
    while not stop.is_set():
        if await listening(port):
            if not stop.is_set():
                on_ready()
            return
        await sleep_or_stop(stop, READY_POLL_S)


@contextlib.asynccontextmanager
async def watching_start(
    reg: Registration, route: str, label: str, port: int, pgid: int
) -> AsyncIterator[None]:
    """While the body runs (the command is alive): tell the router when the command listens
    on `port`, and until then, when its processes listen on other ports instead, say so
    once per change in the terminal and send them as `listens_on`."""
    exited, settled = asyncio.Event(), asyncio.Event()  # settled: ready or exited

    def on_ready() -> None:
        reg.update(route, ready=True)
        settled.set()

    def on_ports(ports: tuple[int, ...]) -> None:
        reg.update(route, listens_on=list(ports))
        if ports:
            say(wrong_port_message(label, ports, port))

    tasks = [
        asyncio.create_task(watch_ready(port, on_ready, exited)),
        asyncio.create_task(watch_listens(pgid, port, on_ports, settled)),
    ]
    try:
        yield
    finally:
        exited.set()
        settled.set()
        await asyncio.gather(*tasks)


# --- devrouter run ------------------------------------------------------------------------


def split_run_words(words: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """(NAME or None, options, CMD) from what follows `devrouter run` (after the options
    argparse took before NAME): `NAME [options] -- CMD...`, `NAME CMD...` (CMD not starting
    with `-`) or `-- CMD...` (NAME left out: inferred). Raises UsageError."""
    words = list(words)
    name: str | None = None
    if words and words[0] != "--":
        name, words = words[0], words[1:]
    if "--" in words:
        i = words.index("--")
        options, cmd = words[:i], words[i + 1 :]
    elif words and words[0].startswith("-"):
        raise UsageError(f"put the command after `--`: devrouter run {name} -- CMD")
    else:
        options, cmd = [], words
    if cmd:
        return name, options, cmd
    if name is None:
        raise UsageError("no command to run: devrouter run [NAME] -- CMD...")
    raise UsageError(
        f"no command to run after the name '{name}': devrouter run {name} -- CMD... "
        f"(or `devrouter run -- {name}` to run {name} under this project's name)"
    )


def infer_name(package_json: object, directory: str) -> tuple[str, str]:
    """(name, where it came from) for `devrouter run -- CMD`: the `name` of package.json
    without its npm scope (`@shop/web` -> web), else the directory's name, as a DNS label;
    `app` when neither gives one."""
    raw = package_json.get("name") if isinstance(package_json, dict) else None
    if isinstance(raw, str) and (label := to_label(raw.rpartition("/")[2])):
        return label, "package.json"
    if label := to_label(directory):
        return label, "the directory's name"
    return "app", "a default"


def _run_name(given: str | None, cwd: Path) -> str:
    """NAME, checked; or the inferred one, said in one line."""
    if given is not None:
        try:
            return check_name(given)
        except ControlError as exc:
            raise UsageError(str(exc)) from None
    inferred, source = infer_name(read_json(cwd / "package.json"), cwd.name)
    try:
        name = check_name(inferred)
    except ControlError as exc:
        raise UsageError(
            f"{exc} (the name came from {source}); give one: devrouter run NAME -- CMD"
        ) from None
    say(f"no NAME given: using '{name}' (from {source}); to pick one: devrouter run NAME -- CMD")
    return name


def add_run_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--port", type=int, metavar="N", help="use port N instead of NAME's own")
    p.add_argument(
        "--listen",
        metavar="ADDR",
        action="append",
        default=[],
        help=f"address for a router started in the background (default: ${LISTEN_ENV} "
        f"or {DEFAULT_PORT})",
    )
    p.add_argument(
        "--no-flags",
        action="store_true",
        help="do not add --port/--host flags to recognised dev servers",
    )


def cmd_run(args: argparse.Namespace) -> int:
    given, options, cmd = split_run_words(args.words)
    if options:
        args.run_options.parse_args(options, namespace=args)
    name = _run_name(given, Path.cwd())
    if args.port is not None and not 1 <= args.port <= 65535:
        raise UsageError(f"--port {args.port}: not a port number")
    listen = listen_args(args.listen)
    directory = the_state_dir()
    info = ensure_router(directory, listen)
    owner = call(directory, "who", name=name).get("owner")
    if owner:
        raise StartupError(
            f"the name '{name}' is already registered by pid {owner['pid']} "
            f"(`devrouter {owner['source']}`: {owner['command']}); stop that first or pick "
            "another name"
        )
    if args.port is not None:
        port = args.port
        if in_use(port):
            say(f"port {port} is already in use; {shlex.join(cmd)} may fail to listen on it")
    else:
        assignment = assign(directory, name)  # a PortError is a StartupError: exit 3
        port = assignment.port
        if assignment.moved_from is not None:
            say(f"port {assignment.moved_from} is busy; {name} gets port {port} from now on")
    router_port = int(info.get("port") or DEFAULT_PORT)
    env = service_env(name, port, router_port, os.environ, tls_env(directory))
    argv = substitute(cmd, env)
    if not args.no_flags:
        argv += tool_flags(argv, port)
    service = {"name": name, "port": port, "command": shlex.join(cmd), "source": "run"}
    return asyncio.run(_run(directory, service, argv, env))


async def _run(
    directory: Path, service: dict[str, Any], argv: list[str], env: dict[str, str]
) -> int:
    name, port = str(service["name"]), int(service["port"])
    reg = Registration(directory, [service], report=say)
    warnings = await reg.open()  # a ControlError ends `run` with its exit code
    for w in warnings:
        say(f"warning: {w}")
    say(f"{env['DEVROUTER_URL']} -> {HOST}:{port} (PORT={port}): {shlex.join(argv)}")
    stop = asyncio.Event()
    keeper = asyncio.create_task(reg.run(stop))
    try:
        return await _supervise(reg, name, port, argv, env)
    finally:
        stop.set()
        await keeper
        await reg.close()


async def _supervise(
    reg: Registration,
    name: str,
    port: int,
    argv: list[str],
    env: dict[str, str],
) -> int:
    loop = asyncio.get_running_loop()
    tails = {1: LineTail(), 2: LineTail()}
    pumps: list[Pump] = []
    child_ends: list[int] = []

    def copier(ours: int) -> Callable[[bytes], None]:
        alive = True

        def on_data(data: bytes) -> None:
            nonlocal alive
            if alive:
                alive = write_all(ours, data)
            lines = tails[ours].feed(data)
            if lines:
                reg.update(name, lines=lines)

        return on_data

    received: list[int] = []
    group: list[int] = []  # CMD's process group, once it exists

    def on_signal(sig: int) -> None:
        received.append(sig)
        if group:
            signal_group(group[0], signal.SIGKILL if len(received) >= 3 else sig)

    # Before CMD starts, so that a Ctrl-C at any moment reaches it (or stops us before it).
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, on_signal, sig)
    terminal = foreground_terminal()
    try:
        for ours in (1, 2):
            read_end, write_end = output_pair(ours)
            child_ends.append(write_end)
            pumps.append(Pump(read_end, copier(ours)))
        try:
            proc = await start_process(
                argv, env, stdin=None, stdout=child_ends[0], stderr=child_ends[1]
            )
        finally:
            for fd in child_ends:
                os.close(fd)
        group.append(proc.pid)
        returncode = await _wait_for_command(reg, name, port, proc, terminal, received)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.remove_signal_handler(sig)
        if group:
            await stop_group(group[0])
            give_terminal(terminal, os.getpgrp())
        await drain(pumps)
    rest = [line for t in tails.values() for line in t.flush()]
    code = exit_status(returncode)
    reg.update(name, exit_code=code, **({"lines": rest} if rest else {}))
    if returncode < 0 and not received:
        say(f"{name}: the command was ended by signal {-returncode}")
    return code


async def _wait_for_command(
    reg: Registration,
    name: str,
    port: int,
    proc: asyncio.subprocess.Process,
    terminal: int | None,
    received: list[int],
) -> int:
    """CMD has started: give it the terminal, tell the router its group, watch where it
    listens, and wait for it to exit."""
    pgid = proc.pid
    give_terminal(terminal, pgid)
    signal_group(pgid, signal.SIGCONT)  # in case it touched the terminal before it was its
    if received:
        signal_group(pgid, received[-1])  # a signal that came while it was starting
    reg.update(name, pgid=pgid)
    with contextlib.suppress(ControlError):
        await reg.flush()  # now: the router stops this group if we are SIGKILLed
    async with watching_start(reg, name, name, port, pgid):
        return await proc.wait()
