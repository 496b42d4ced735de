"""The kinds of failed request a bench report counts. (A bad option or target raises
devrouter.core.errors.UsageError, exit 2; what --compare-direct needs but cannot find,
StartupError, exit 3.)

- `ERROR_KINDS`: `refused` (connect refused), `reset` (the connection closed or was reset
  before a complete response), `timeout` (no complete response within `--timeout`) and
  `other` (a malformed response, another OS error). `error_kind` maps an OS exception to
  one of them, in this one place.
"""

from __future__ import annotations

ERROR_KINDS = ("refused", "reset", "timeout", "other")


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
