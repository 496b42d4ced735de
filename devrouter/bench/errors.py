"""What can go wrong in a bench run: the two exceptions the command answers with an exit
code, and the kinds of failed request a report counts.

- `UsageError`: a bad option or target (exit 2).
- `StartupError`: what --compare-direct needs cannot be found (exit 3).
- `ERROR_KINDS`: `refused` (connect refused), `reset` (the connection closed or was reset
  before a complete response), `timeout` (no complete response within `--timeout`) and
  `other` (a malformed response, another OS error). `error_kind` maps an OS exception to
  one of them, in this one place.
"""

from __future__ import annotations

ERROR_KINDS = ("refused", "reset", "timeout", "other")


class UsageError(Exception):
    """A bad option or target; printed as one line and answered with exit 2."""


class StartupError(Exception):
    """The route table needed by --compare-direct cannot be read; exit 3."""


def is_reset(exc: BaseException) -> bool:
    return isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError)


def error_kind(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "refused"
    if is_reset(exc):
        return "reset"
    if isinstance(exc, TimeoutError):
        return "timeout"
    return "other"
