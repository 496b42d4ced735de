"""Every command of the CLI, in the order `devrouter --help` lists them. To add a command:
write an `add_parser(sub, parents)` that adds its subparser(s) and sets each one's
`handler` (`p.set_defaults(handler=run)`), and list it here. A handler takes the parsed
arguments and returns an exit code, or raises a devrouter.core.errors.CommandError."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import TypeAlias

from ..bench import command as bench
from ..doctor import command as doctor
from ..export import command as export
from ..hosts import command as hosts
from ..services import commands as services
from ..services import stack
from ..system import command as system
from ..tls import command as tls
from . import serve

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
AddParser: TypeAlias = Callable[[Subparsers, Sequence[argparse.ArgumentParser]], None]


COMMANDS: tuple[AddParser, ...] = (
    serve.add_parser,  # serve, check, demo
    services.add_parser,  # run, ls, url, port, alias, stop
    stack.add_parser,  # up, down
    bench.add_parser,
    doctor.add_parser,
    tls.add_parser,  # ca, trust, untrust
    export.add_parser,
    hosts.add_parser,  # hosts sync, hosts clean
    system.add_parser,  # service install, uninstall, status
)
