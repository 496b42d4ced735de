"""Dev servers that take their port from a flag rather than from `$PORT`, and the flags that
make them listen where devrouter routes.

Everything here is pure (but for reading ./package.json): argv in, the flags to append out.
`TOOLS` is the table, documented in docs/services.md (keep the two in step). A tool is found
through wrappers (`npx`, `pnpm exec`, `uv run`, `python -m`, `VAR=value`, ...), through
package-manager binaries (`pnpm next dev`) and through package scripts (`npm run dev` reads
./package.json). A command that already names a port gets nothing added.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .ports import read_json

#: The address services are told to listen on ($HOST), and the one their flags name.
HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Tool:
    """A dev server that takes its port from a flag. It serves when its first positional
    argument is in `serves` (None: anything not in `other`), or when it has none and
    `bare` (`next` alone is `next dev`). `valued` are its options that take a value, so
    that the value is not taken for the subcommand (`flask --app app run`). `port_env`
    names an environment variable that gives the port as well as a flag does."""

    flags: tuple[str, ...]
    serves: frozenset[str] | None = None
    other: frozenset[str] = frozenset()
    bare: bool = False
    valued: frozenset[str] = frozenset()
    port_env: str | None = None


_VITE = ("--port", "{port}", "--strictPort", "--host", "{host}")
_PORT_HOST = ("--port", "{port}", "--host", "{host}")
_REACT_ROUTER = Tool(_VITE, frozenset({"dev"}))

#: Recognised tools (documented in docs/services.md; keep the two in step).
TOOLS: dict[str, Tool] = {
    "vite": Tool(_VITE, other=frozenset({"build", "optimize"})),
    "astro": Tool(_PORT_HOST, frozenset({"dev", "start", "preview"})),
    "ng": Tool(_PORT_HOST, frozenset({"serve", "s", "dev"})),
    "nuxt": Tool(_PORT_HOST, frozenset({"dev"})),
    "nuxi": Tool(_PORT_HOST, frozenset({"dev"})),
    "next": Tool(
        ("--port", "{port}", "--hostname", "{host}"), frozenset({"dev", "start"}), bare=True
    ),
    "react-router": _REACT_ROUTER,
    "@react-router/dev": _REACT_ROUTER,
    # Expo's --host takes lan/tunnel/localhost, not an address: the port only.
    "expo": Tool(("--port", "{port}"), frozenset({"start"}), bare=True),
    "storybook": Tool(("-p", "{port}", "--host", "{host}"), frozenset({"dev"})),
    "start-storybook": Tool(("-p", "{port}", "--host", "{host}")),
    "webpack": Tool(_PORT_HOST, frozenset({"serve", "server", "s"})),
    "webpack-dev-server": Tool(_PORT_HOST, other=frozenset({"build"})),
    "uvicorn": Tool(_PORT_HOST),
    # Flags rather than FLASK_RUN_PORT/FLASK_RUN_HOST: they show in the command line
    # devrouter prints, like every other tool's, and they reach `flask run` however it
    # is wrapped; FLASK_RUN_PORT=N in the command is taken as a port given.
    "flask": Tool(
        _PORT_HOST,
        frozenset({"run"}),
        valued=frozenset({"--app", "-A", "--env-file", "-e"}),
        port_env="FLASK_RUN_PORT",
    ),
    "manage.py": Tool(("{host}:{port}",), frozenset({"runserver"})),
}
_WRAPPERS = {"npx", "bunx", "pnpx", "cross-env", "env"}
_WRAPPER_SUBCOMMANDS = {
    "pnpm": {"exec", "dlx"},
    "yarn": {"exec", "dlx"},
    "npm": {"exec", "x"},
    "uv": {"run"},
    "poetry": {"run"},
    "pipenv": {"run"},
}
_PACKAGE_MANAGERS = {"npm", "pnpm", "yarn", "bun"}
#: Package managers that run a package's binary when no script has the name (`pnpm next dev`).
_RUNS_BINARIES = {"pnpm", "yarn", "bun"}
_PORT_FLAGS = ("--port", "-p", "--fd", "--uds", "--bind", "-b")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_SHELL_OPERATORS = re.compile(r"&&|\|\||[;|&<>`\n]|\$\(")
_VARIABLES = ("PORT", "HOST", "DEVROUTER_URL", "DEVROUTER_INTERNAL_URL")
_VAR_RE = re.compile(
    rf"\$(?:\{{({'|'.join(_VARIABLES)})\}}|({'|'.join(_VARIABLES)})(?![A-Za-z0-9_]))"
)


def _name(word: str) -> str:
    """A program's name: `./node_modules/.bin/vite` -> vite, `next@14` -> next, and a
    scoped package as npx takes it: `@react-router/dev@7` -> @react-router/dev."""
    name = word if word.startswith("@") else os.path.basename(word)
    return re.sub(r"(?<=.)@[^/@]*$", "", name)


def _program(argv: Sequence[str]) -> tuple[str, list[str]]:
    """(program name, its arguments), looking through env assignments and wrappers like
    `npx`, `pnpm exec` and `python -m`."""
    args = list(argv)
    while args:
        head = _name(args[0])
        if _ASSIGNMENT.match(args[0]):
            args.pop(0)
        elif head in _WRAPPERS:
            args.pop(0)
            while args and args[0].startswith("-"):
                args.pop(0)
        elif head in _WRAPPER_SUBCOMMANDS and len(args) > 1:
            if args[1] not in _WRAPPER_SUBCOMMANDS[head]:
                return head, args[1:]
            args = args[2:]
            if args and args[0] == "--":
                args.pop(0)
        elif re.match(r"^python[0-9.]*$", head) and len(args) > 2 and args[1] == "-m":
            args = args[2:]
        elif re.match(r"^python[0-9.]*$", head) and len(args) > 1:
            args = args[1:]  # python manage.py runserver
        else:
            return head, args[1:]
    return "", []


def _has_port_flag(args: Iterable[str]) -> bool:
    return any(a in _PORT_FLAGS or a.startswith(tuple(f + "=" for f in _PORT_FLAGS)) for a in args)


def _first_positional(args: Sequence[str], valued: frozenset[str] = frozenset()) -> str | None:
    skip = False
    for a in args:
        if skip:
            skip = False
        elif a in valued:
            skip = True  # the next word is this option's value
        elif not a.startswith("-"):
            return a
    return None


def _tool_flags_direct(argv: Sequence[str], port: int, host: str) -> list[str]:
    program, args = _program(argv)
    tool = TOOLS.get(program)
    if tool is None or _has_port_flag(args):
        return []
    if tool.port_env and any(
        _ASSIGNMENT.match(a) and a.startswith(f"{tool.port_env}=") for a in argv
    ):
        return []
    first = _first_positional(args, tool.valued)
    if not (first is None and tool.bare):
        if tool.serves is not None and first not in tool.serves:
            return []
        if tool.serves is None and first in tool.other:
            return []
    if program == "manage.py" and len([a for a in args if not a.startswith("-")]) > 1:
        return []  # runserver already has an address
    return [f.format(port=port, host=host) for f in tool.flags]


def _script(cwd: Path, name: str) -> str | None:
    data = read_json(cwd / "package.json")
    scripts = data.get("scripts") if isinstance(data, dict) else None
    value = scripts.get(name) if isinstance(scripts, dict) else None
    return value if isinstance(value, str) else None


def tool_flags(
    argv: Sequence[str], port: int, host: str = HOST, cwd: Path | None = None
) -> list[str]:
    """Flags to append to `argv` so a recognised dev server listens on `port` and `host`;
    [] when the tool is not recognised or a port is already given. `npm run dev` and its
    pnpm, yarn and bun equivalents are looked up in ./package.json; `pnpm next dev` (no
    such script) runs the package's binary, as pnpm, yarn and bun do."""
    flags = _tool_flags_direct(argv, port, host)
    if flags or not argv:
        return flags
    manager = os.path.basename(argv[0])
    if manager not in _PACKAGE_MANAGERS or _has_port_flag(argv[1:]):
        return []
    rest = list(argv[1:])
    by_run = bool(rest) and rest[0] in ("run", "run-script")
    if by_run:
        rest = rest[1:]
    elif manager == "npm" and rest[:1] != ["start"]:
        return []
    script_name = _first_positional(rest)
    if script_name is None:
        return []
    script = _script(cwd or Path.cwd(), script_name)
    if script is None:
        if manager in _RUNS_BINARIES and not by_run and rest[0] == script_name:
            return _tool_flags_direct(rest, port, host)
        return []
    if _SHELL_OPERATORS.search(script):
        return []
    try:
        words = shlex.split(script)
    except ValueError:
        return []
    flags = _tool_flags_direct(words, port, host)
    if flags and manager == "npm" and "--" not in argv:
        return ["--", *flags]
    return flags


def substitute(argv: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """Replace `$PORT`, `${PORT}`, `$HOST`, `$DEVROUTER_URL` and `$DEVROUTER_INTERNAL_URL`
    in arguments, so that `--port '$PORT'` (quoted against the shell) works."""
    return [_VAR_RE.sub(lambda m: env[m.group(1) or m.group(2)], a) for a in argv]


def shell_command(text: str, port: int, host: str = HOST, cwd: Path | None = None) -> list[str]:
    """A `run:` string from a stack file as argv: through /bin/sh, with `exec` and the
    recognised tool's flags when it is a single command."""
    if _SHELL_OPERATORS.search(text):
        return ["/bin/sh", "-c", text]
    try:
        words = shlex.split(text)
    except ValueError:
        return ["/bin/sh", "-c", text]
    flags = tool_flags(words, port, host, cwd)
    extra = " " + shlex.join(flags) if flags else ""
    # `exec VAR=x cmd` would look for a program named `VAR=x`; `env` takes the assignments.
    run = "exec env" if words and _ASSIGNMENT.match(words[0]) else "exec"
    return ["/bin/sh", "-c", f"{run} {text}{extra}"]
