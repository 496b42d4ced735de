"""The command line's one boundary: parse, set up logging, call the command's handler, and
translate its failure into one line and an exit code (devrouter.core.errors)."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from .. import __version__
from ..core.errors import EXIT_USAGE
from .boundary import guarded
from .commands import COMMANDS

log = logging.getLogger("devrouter")


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--log-level",
        default=argparse.SUPPRESS,
        choices=("debug", "info", "warning", "error"),
        help="how much to log (default: info)",
    )
    common.add_argument("--version", action="version", version=f"devrouter {__version__}")
    parser = argparse.ArgumentParser(
        prog="devrouter",
        description="One loopback port, a name for every local dev service: "
        "http://NAME.localhost:7355",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub, [common])
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _setup_logging(getattr(args, "log_level", "info"))
    return guarded(args.handler, args)


def _setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiohttp", "watchfiles"):  # watchfiles logs every change at INFO
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
