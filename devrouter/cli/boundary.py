"""The one place a command's failure becomes what the user sees: one line on stderr,
prefixed `devrouter: `, and the exit code its type carries (devrouter.core.errors); never a
traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from ..core.errors import EXIT_OK, CommandError

Handler = Callable[[argparse.Namespace], int]


def guarded(handler: Handler, args: argparse.Namespace) -> int:
    """Run a command's handler; its exit code, or its failure's."""
    try:
        return handler(args)
    except CommandError as exc:
        print(f"devrouter: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # `devrouter ls | head`: the reader has gone; so do we, quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return EXIT_OK
