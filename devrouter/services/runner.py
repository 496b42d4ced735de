"""`devrouter run [NAME] -- CMD...`, and the small commands around it: `ls`, `url`, `port`,
`alias` and `stop`.

Theory of operation for `run`: make sure a router is running (start one in the background if
not), pick NAME's stable port (`devrouter.ports`), register NAME with the router over the
control socket (`devrouter.control`), then start CMD with PORT, HOST, DEVROUTER_URL (for
browsers) and DEVROUTER_INTERNAL_URL (for server-side code) in its environment. Without
NAME, the name of ./package.json or of the directory is used. CMD runs in its own process
group, so that when it exits, or `devrouter run` is told to stop, the whole group can be
stopped and nothing is left listening. When the terminal is ours, CMD's group is made the
terminal's foreground group (as a shell does for a job), so Ctrl-C and keyboard input reach
it directly and an interactive dev server (Vite's shortcuts) works. CMD's output is copied
through unchanged (through a pseudo-terminal when our output is a terminal, so colours and
line buffering stay as if devrouter were not there); its last lines go to the router for
error pages. Until CMD listens on its port, the ports it listens on instead are said in the
terminal and sent to the router (`devrouter.listeners`). If the router is killed, SIGKILLing
`devrouter run` included, the router notices the dead process, drops the route and stops
CMD's group.

Exit codes of `run`: CMD's own (128+N when a signal N ended it), 127 when CMD is not found,
126 when it cannot be executed, 2 for usage errors, 3 when the router cannot be started or the
name is taken. The other commands: 0, 1 when the router refused (`alias`) or there was nothing
to do it to (`down`), 2 for usage errors, 3 when the router cannot be reached or started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import os
import re
import select
import shlex
import signal
import socket
import struct
import sys
import termios
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..aio import sleep_or_stop
from ..core.addresses import parse_listen
from ..core.model import DEFAULT_PORT
from .control import (
    ControlError,
    Registration,
    RouterNotRunning,
    call,
    check_name,
    process_alive,
    status,
)
from .listeners import watch_listens, wrong_port_message
from .ports import (
    PortError,
    StateDirError,
    assign,
    ensure_state_dir,
    in_use,
    locked,
    read_json,
    state_dir,
    write_private,
)
from .tools import HOST, substitute, tool_flags

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STARTUP = 0, 1, 2, 3
EXIT_CANNOT_EXECUTE, EXIT_NOT_FOUND = 126, 127
LISTEN_ENV = "DEVROUTER_LISTEN"
ROUTER_LOG = "router.log"
#: Longest wait for a background router to answer after it was started, in seconds.
ROUTER_START_TIMEOUT_S = 15.0
#: After SIGTERM to what is left of CMD's process group, wait this long before SIGKILL (s).
GROUP_STOP_GRACE_S = 3.0
#: How often to look for CMD listening on its port, in seconds.
READY_POLL_S = 0.2

Handler = Callable[[argparse.Namespace], int]


class Failure(Exception):
    """A command fails with one line for the user and an exit code."""

    def __init__(self, message: str, code: int = EXIT_STARTUP) -> None:
        super().__init__(message)
        self.code = code


def say(text: str) -> None:
    """One `devrouter:` line on stderr; CMD's own output stays on stdout/stderr unchanged."""
    print(f"devrouter: {text}", file=sys.stderr, flush=True)


def failing(handler: Callable[[argparse.Namespace], int]) -> Handler:
    """Turn Failure, ControlError and state-directory problems into one line and a code."""

    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except Failure as exc:
            say(str(exc))
            return exc.code
        except (ControlError, StateDirError, PortError) as exc:
            say(str(exc))
            return EXIT_STARTUP

    return run


# --- the state directory and the router ---------------------------------------------------


def the_state_dir() -> Path:
    return ensure_state_dir(state_dir())


def listen_args(values: Sequence[str] | None) -> list[str]:
    """`--listen` values, else $DEVROUTER_LISTEN (comma separated); checked here so that a
    typo fails now rather than in a background process."""
    out = list(values or []) or [
        v for v in re.split(r"[,\s]+", os.environ.get(LISTEN_ENV, "")) if v
    ]
    for v in out:
        try:
            parse_listen(v)
        except ValueError as exc:
            raise Failure(f"--listen: {exc}", EXIT_USAGE) from None
    return out


def default_port(listen: Sequence[str]) -> int:
    for v in listen:
        parsed = parse_listen(v)
        return (parsed[0] if isinstance(parsed, tuple) else parsed).port
    return DEFAULT_PORT


def _spawn_detached(argv: Sequence[str], env: Mapping[str, str], cwd: Path, log: Path) -> int:
    """Start `argv` in a new session, not as our child (double fork), with stdin from
    /dev/null and output appended to `log`. Returns its pid."""
    log_fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        try:
            os.close(rfd)
            os.setsid()
            grandchild = os.fork()
            if grandchild == 0:
                os.close(wfd)
                devnull = os.open(os.devnull, os.O_RDONLY)
                os.dup2(devnull, 0)
                os.dup2(log_fd, 1)
                os.dup2(log_fd, 2)
                os.chdir(cwd)
                os.execve(argv[0], list(argv), dict(env))
            os.write(wfd, str(grandchild).encode())
        finally:
            os._exit(0)
    os.close(wfd)
    os.close(log_fd)
    data = b""
    while chunk := os.read(rfd, 64):
        data += chunk
    os.close(rfd)
    os.waitpid(pid, 0)
    if not data:
        raise Failure("could not start a background process")
    return int(data)


def ensure_router(directory: Path, listen: Sequence[str]) -> dict[str, Any]:
    """The running router's status; start one in the background first if none answers."""
    info = status(directory)
    if info is not None:
        return info
    with locked(directory, "router.lock"):  # one starter at a time
        info = status(directory)
        if info is not None:
            return info
        log_path = directory / ROUTER_LOG
        argv = [sys.executable, "-m", "devrouter", "serve"]
        for addr in listen:
            argv += ["--listen", addr]
        env = {**os.environ, "DEVROUTER_HOME": str(directory)}
        size = log_path.stat().st_size if log_path.exists() else 0
        pid = _spawn_detached(argv, env, directory, log_path)
        deadline = time.monotonic() + ROUTER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            info = status(directory)
            if info is not None:
                break
            if not process_alive(pid):
                tail = _tail_since(log_path, size)
                raise Failure(f"the background router did not start: {tail} (log: {log_path})")
            time.sleep(0.05)
        else:
            raise Failure(
                f"the background router (pid {pid}) did not answer within "
                f"{ROUTER_START_TIMEOUT_S:g} s (log: {log_path})"
            )
    say(
        f"started a background router on {info['url']} (pid {info['pid']}, log {log_path}); "
        "stop it with `devrouter stop`"
    )
    return info


def _tail_since(path: Path, offset: int) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode(errors="replace")
    except OSError:
        return "no log"
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else "no output"


# --- the environment of a service ----------------------------------------------------------


def browser_url(name: str, router_port: int) -> str:
    """The URL through the router: for browsers and for anything that resolves *.localhost."""
    return f"http://{name}.localhost:{router_port}"


def internal_url(port: int) -> str:
    """The service's own address: works from any process on this machine, including server
    code whose resolver does not know *.localhost (glibc without nss-myhostname, Node's
    fetch, macOS getaddrinfo in some set-ups). Not through the router, so no path routes."""
    return f"http://{HOST}:{port}"


def service_env(name: str, port: int, router_port: int, base: Mapping[str, str]) -> dict[str, str]:
    """`base` plus PORT, HOST, DEVROUTER_URL (the browser's URL) and DEVROUTER_INTERNAL_URL
    (the service's own address, for server-side code)."""
    env = dict(base)
    env.update(
        {
            "PORT": str(port),
            "HOST": HOST,
            "DEVROUTER_URL": browser_url(name, router_port),
            "DEVROUTER_INTERNAL_URL": internal_url(port),
        }
    )
    return env


def exit_status(returncode: int) -> int:
    """A shell-style exit status: 128+N for a process ended by signal N."""
    return 128 - returncode if returncode < 0 else returncode


# --- processes ----------------------------------------------------------------------------

_ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-_]")


class LineTail:
    """Splits output into lines without terminal escapes, for the router's error pages."""

    def __init__(self) -> None:
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + data.decode(errors="replace")
        *lines, self._partial = text.split("\n")
        self._partial = self._partial[-4000:]
        return [self.clean(line) for line in lines]

    def flush(self) -> list[str]:
        rest, self._partial = self._partial, ""
        return [self.clean(rest)] if rest.strip() else []

    @staticmethod
    def clean(line: str) -> str:
        line = _ANSI_RE.sub("", line).rstrip("\r")
        return line.rsplit("\r", 1)[-1]  # progress bars redraw with \r: keep the last


def write_all(fd: int, data: bytes) -> bool:
    """Write everything to `fd`, waiting if someone made it non-blocking (Node does that to
    a shared terminal). False once the reader is gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError:
            return False
        view = view[n:]
    return True


class Pump:
    """Copies one output stream of a child to one of ours, line by line through `on_data`."""

    def __init__(self, fd: int, on_data: Callable[[bytes], None]) -> None:
        self.fd = fd
        self.on_data = on_data
        self.done = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().add_reader(fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.fd, 65536)
        except BlockingIOError:
            return
        except OSError:  # EIO: the pseudo-terminal's other end is closed
            data = b""
        if data:
            self.on_data(data)
            return
        self.close()

    def close(self) -> None:
        if self.done.done():
            return
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        self.done.set_result(None)


def _output_pair(ours: int) -> tuple[int, int]:
    """(read end for us, write end for the child): a pseudo-terminal with our window size
    when `ours` is a terminal, else a pipe."""
    if os.isatty(ours):
        master, slave = os.openpty()
        with contextlib.suppress(OSError):
            size = fcntl.ioctl(ours, termios.TIOCGWINSZ, struct.pack("4H", 0, 0, 0, 0))
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
        return master, slave
    return os.pipe()


def _foreground_terminal() -> int | None:
    """fd 0 if it is a terminal whose foreground process group is ours."""
    try:
        if os.isatty(0) and os.tcgetpgrp(0) == os.getpgrp():
            return 0
    except OSError:
        pass
    return None


def give_terminal(fd: int | None, pgid: int) -> None:
    if fd is None:
        return
    old = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(fd, pgid)
    except OSError:
        pass
    finally:
        signal.signal(signal.SIGTTOU, old)


def signal_group(pgid: int, sig: int) -> bool:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


async def stop_group(pgid: int, grace_s: float = GROUP_STOP_GRACE_S) -> None:
    """SIGTERM what is left of a process group, then SIGKILL after `grace_s`."""
    if not signal_group(pgid, signal.SIGTERM):
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        await asyncio.sleep(0.05)
        if not signal_group(pgid, 0):
            return
    signal_group(pgid, signal.SIGKILL)


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


async def drain(pumps: Sequence[Pump], timeout_s: float = 1.0) -> None:
    """Wait up to `timeout_s` for the pumps to reach end of file, then close them."""
    pending = [p.done for p in pumps if not p.done.done()]
    if pending:
        await asyncio.wait(pending, timeout=timeout_s)
    for p in pumps:
        p.close()


async def start_process(
    argv: Sequence[str],
    env: Mapping[str, str],
    *,
    stdin: int | None,
    stdout: int,
    stderr: int,
    cwd: Path | None = None,
) -> asyncio.subprocess.Process:
    """Start `argv` as the leader of a new process group. Raises Failure with 127/126."""
    try:
        return await asyncio.create_subprocess_exec(
            *argv,
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=dict(env),
            cwd=cwd,
            process_group=0,
        )
    except FileNotFoundError:
        raise Failure(f"cannot run {argv[0]!r}: command not found", EXIT_NOT_FOUND) from None
    except PermissionError:
        raise Failure(f"cannot run {argv[0]!r}: permission denied", EXIT_CANNOT_EXECUTE) from None
    except OSError as exc:
        raise Failure(f"cannot run {argv[0]!r}: {exc.strerror}", EXIT_CANNOT_EXECUTE) from None


# --- devrouter run ------------------------------------------------------------------------


def split_run_words(words: Sequence[str]) -> tuple[str | None, list[str], list[str]]:
    """(NAME or None, options, CMD) from what follows `devrouter run` (after the options
    argparse took before NAME): `NAME [options] -- CMD...`, `NAME CMD...` (CMD not starting
    with `-`) or `-- CMD...` (NAME left out: inferred). Raises Failure (usage)."""
    words = list(words)
    name: str | None = None
    if words and words[0] != "--":
        name, words = words[0], words[1:]
    if "--" in words:
        i = words.index("--")
        options, cmd = words[:i], words[i + 1 :]
    elif words and words[0].startswith("-"):
        raise Failure(f"put the command after `--`: devrouter run {name} -- CMD", EXIT_USAGE)
    else:
        options, cmd = [], words
    if cmd:
        return name, options, cmd
    if name is None:
        raise Failure("no command to run: devrouter run [NAME] -- CMD...", EXIT_USAGE)
    raise Failure(
        f"no command to run after the name '{name}': devrouter run {name} -- CMD... "
        f"(or `devrouter run -- {name}` to run {name} under this project's name)",
        EXIT_USAGE,
    )


def dns_label(text: str) -> str:
    """`My_App` -> `my-app`: one DNS label ("" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")


def infer_name(package_json: object, directory: str) -> tuple[str, str]:
    """(name, where it came from) for `devrouter run -- CMD`: the `name` of package.json
    without its npm scope (`@shop/web` -> web), else the directory's name, as a DNS label;
    `app` when neither gives one."""
    raw = package_json.get("name") if isinstance(package_json, dict) else None
    if isinstance(raw, str) and (label := dns_label(raw.rpartition("/")[2])):
        return label, "package.json"
    if label := dns_label(directory):
        return label, "the directory's name"
    return "app", "a default"


def _run_name(given: str | None, cwd: Path) -> str:
    """NAME, checked; or the inferred one, said in one line."""
    if given is not None:
        try:
            return check_name(given)
        except ControlError as exc:
            raise Failure(str(exc), EXIT_USAGE) from None
    inferred, source = infer_name(read_json(cwd / "package.json"), cwd.name)
    try:
        name = check_name(inferred)
    except ControlError as exc:
        raise Failure(
            f"{exc} (the name came from {source}); give one: devrouter run NAME -- CMD",
            EXIT_USAGE,
        ) from None
    say(f"no NAME given: using '{name}' (from {source}); to pick one: devrouter run NAME -- CMD")
    return name


def _add_run_options(p: argparse.ArgumentParser) -> None:
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
        raise Failure(f"--port {args.port}: not a port number", EXIT_USAGE)
    listen = listen_args(args.listen)
    directory = the_state_dir()
    info = ensure_router(directory, listen)
    owner = call(directory, "who", name=name).get("owner")
    if owner:
        raise Failure(
            f"the name '{name}' is already registered by pid {owner['pid']} "
            f"(`devrouter {owner['source']}`: {owner['command']}); stop that first or pick "
            "another name"
        )
    if args.port is not None:
        port = args.port
        if in_use(port):
            say(f"port {port} is already in use; {shlex.join(cmd)} may fail to listen on it")
    else:
        assignment = assign(directory, name)
        port = assignment.port
        if assignment.moved_from is not None:
            say(f"port {assignment.moved_from} is busy; {name} gets port {port} from now on")
    router_port = int(info.get("port") or DEFAULT_PORT)
    env = service_env(name, port, router_port, os.environ)
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
    try:
        warnings = await reg.open()
    except ControlError as exc:
        raise Failure(str(exc)) from None
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
    terminal = _foreground_terminal()
    try:
        for ours in (1, 2):
            read_end, write_end = _output_pair(ours)
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


# --- ls, url, port, alias, stop -----------------------------------------------------------


def _probe(port: int, hosts: Sequence[str]) -> bool:
    for host in hosts:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.settimeout(0.3)
            try:
                s.connect((host, port))
            except OSError:
                continue
            return True
    return False


def cmd_ls(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    try:
        data = call(directory, "list")
    except RouterNotRunning:
        if args.json:
            print(json.dumps({"router": None, "routes": [], "conflicts": []}, indent=2))
        else:
            say("no router is running (start one with `devrouter serve` or `devrouter run`)")
        return EXIT_OK
    routes: list[dict[str, Any]] = data.get("routes", [])
    for r in routes:
        r["listening"] = _probe(int(r["port"]), r.get("hosts") or [HOST, "::1"])
    if args.json:
        out = {k: data.get(k) for k in ("router", "routes", "conflicts")}
        print(json.dumps(out, indent=2))
        return EXIT_OK
    print(format_routes(routes, data.get("conflicts", []), data.get("router") or {}))
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
    groups: dict[str | None, list[Mapping[str, Any]]] = {}
    for r in routes:
        groups.setdefault(r.get("stack"), []).append(r)
    width = max(len(r["url"]) for r in routes)
    head = f"{'URL':<{width}}  {'PORT':>5}  {'SOURCE':<6}  {'PID':>7}  STATUS"
    lines = [head]
    for stack in sorted(groups, key=lambda s: (s is not None, s or "")):
        if stack is not None:
            lines.append(f"stack {stack}:")
        for r in groups[stack]:
            pid = str(r["owner_pid"]) if r.get("owner_pid") else "-"
            lines.append(
                f"{r['url']:<{width}}  {r['port']:>5}  {r['source']:<6}  {pid:>7}  {_state(r)}"
            )
            for p in r.get("paths", []):
                lines.append(f"{'':<{width}}  {p['port']:>5}  {p['prefix']}")
    lines += [f"clash: {c}" for c in conflicts]
    return "\n".join(lines)


def cmd_url(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    info = status(the_state_dir())
    port = int(info["port"]) if info else default_port(listen_args(None))
    print(f"http://{name}.localhost:{port}")
    return EXIT_OK


def cmd_port(args: argparse.Namespace) -> int:
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    directory = the_state_dir()
    with contextlib.suppress(RouterNotRunning):
        for r in call(directory, "list").get("routes", []):
            if r["name"] == name:
                print(r["port"])
                return EXIT_OK
    print(assign(directory, name).port)
    return EXIT_OK


def cmd_alias(args: argparse.Namespace) -> int:
    directory = the_state_dir()
    if args.remove:
        if args.port is not None:
            raise Failure("alias --remove takes only a NAME", EXIT_USAGE)
        try:
            call(directory, "unalias", name=args.name)
        except RouterNotRunning:
            _remove_alias_offline(directory, check_name(args.name))
        except ControlError as exc:
            raise Failure(str(exc), EXIT_FAILED) from None
        say(f"removed the alias {args.name}")
        return EXIT_OK
    if args.port is None:
        raise Failure("usage: devrouter alias NAME PORT (or --remove NAME)", EXIT_USAGE)
    try:
        name = check_name(args.name)
    except ControlError as exc:
        raise Failure(str(exc), EXIT_USAGE) from None
    info = ensure_router(directory, listen_args(args.listen))
    try:
        reply = call(directory, "alias", name=name, port=args.port)
    except ControlError as exc:
        raise Failure(str(exc), EXIT_FAILED) from None
    for w in reply.get("warnings", []):
        say(f"warning: {w}")
    say(
        f"http://{name}.localhost:{info['port']} -> port {args.port} "
        f"(until `devrouter alias --remove {name}`)"
    )
    return EXIT_OK


def _remove_alias_offline(directory: Path, name: str) -> None:
    from .control import ALIASES_NAME

    path = directory / ALIASES_NAME
    with locked(directory):
        data = read_json(path)
        aliases = data.get("aliases") if isinstance(data, dict) else None
        if not isinstance(aliases, dict) or name not in aliases:
            raise Failure(f"there is no alias named '{name}'", EXIT_FAILED)
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
        raise Failure(f"the router (pid {pid}) is still running after 15 s", EXIT_FAILED)
    say(f"stopped the router (pid {pid})")
    return EXIT_OK


# --- wiring into the CLI ------------------------------------------------------------------


def register(
    sub: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: Sequence[argparse.ArgumentParser],
) -> dict[str, Handler]:
    """Add run, ls/list, url, port, alias and stop; returns command name -> handler."""
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
    _add_run_options(run)
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
    _add_run_options(options)
    run.set_defaults(run_options=options)

    ls_help = "list every route with its port, source, owner and whether it is listening"
    handlers: dict[str, Handler] = {"run": failing(cmd_run)}
    for command in ("ls", "list"):
        ls = sub.add_parser(
            command, parents=list(parents), help=ls_help if command == "ls" else "same as ls"
        )
        ls.add_argument("--json", action="store_true", help="machine-readable output")
        handlers[command] = failing(cmd_ls)

    url = sub.add_parser("url", parents=list(parents), help="print the URL of a name")
    url.add_argument("name", metavar="NAME")
    handlers["url"] = failing(cmd_url)

    port = sub.add_parser(
        "port", parents=list(parents), help="print the port of a name (assigning one if needed)"
    )
    port.add_argument("name", metavar="NAME")
    handlers["port"] = failing(cmd_port)

    alias = sub.add_parser(
        "alias",
        parents=list(parents),
        help="route a name to a port devrouter does not start (a container, an admin UI)",
    )
    alias.add_argument("name", metavar="NAME")
    alias.add_argument("port", metavar="PORT", type=int, nargs="?")
    alias.add_argument("--remove", action="store_true", help="remove the alias NAME")
    alias.add_argument("--listen", metavar="ADDR", action="append", default=[])
    handlers["alias"] = failing(cmd_alias)

    sub.add_parser("stop", parents=list(parents), help="stop the background router")
    handlers["stop"] = failing(cmd_stop)
    return handlers
