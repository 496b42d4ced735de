"""Every way a request can fail, as a type that carries the status it is answered with.

    ProxyError                 base: status, title, detail, hint
      BadRequest          400  malformed Host, request target or hop header
      Unauthorized        401  a route (or the router) requires a secret the request lacks
      NotFound            404  a .localhost name with no route
      MethodNotAllowed    405  CONNECT, OPTIONS *
      MisdirectedRequest  421  a Host that is not ours (DNS rebinding, stray traffic)
      VersionNotSupported 505  HTTP versions other than 1.0 and 1.1
      LoopDetected        508  a route that leads back into the router
      BadGateway          502  backend refused, reset, or sent something that is not HTTP
      RouteBusy           503  the route has max_connections requests in flight
      GatewayTimeout      504  backend silent past the route's timeout

Upstream exceptions (aiohttp's, OSError, TimeoutError) are translated into these at one
boundary, `devrouter.server.upstream.translate_errors`; the handler only ever sees these
types.

Every way a command can fail, as a type that carries the exit code it ends with:

    CommandError          1  base: str() is the one line shown, after "devrouter: "
      ConfigError         1  a config file that cannot be used (file:line: route: message)
      UsageError          2  a bad option or argument
      StartupError        3  the router cannot start (bad config, port in use)
        ControlError      3  the control socket refused or failed (services.client)
        StateDirError     3  the state directory is not safe to use (services.ports)
        PortError         3  no port can be assigned (services.ports)
        CAError           3  the local CA's files are unsafe or damaged (tls.ca)
      TrustError          1  a trust store could not be changed or read (tls.trust)
      CannotExecute     126  `run`'s command is not executable (services.procs)
      CommandNotFound   127  `run`'s command is not found (services.procs)

They are translated at one boundary, `devrouter.cli.main`: the line on stderr, the code as
the exit status, never a traceback.
"""

from __future__ import annotations


class ProxyError(Exception):
    status = 500
    title = "Internal error"

    def __init__(self, detail: str, hint: str = "", kind: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.hint = hint
        self.kind = kind  # for metrics: "refused", "timeout", "reset", "invalid"
        self.details: tuple[str, ...] = ()  # e.g. the last lines a `devrouter run` app printed
        self.details_from = ""  # the command that printed `details`, when it is one
        self.refresh_s: int | None = None  # a browser page reloads itself after this long
        self.headers: dict[str, str] = {}  # extra response headers (WWW-Authenticate)


class ServiceStarting(ProxyError):
    """A `devrouter run` command that has not started listening yet."""

    status = 503
    title = "Starting"


class BadRequest(ProxyError):
    status = 400
    title = "Bad request"


class Unauthorized(ProxyError):
    status = 401
    title = "Authentication required"

    def __init__(self, detail: str, hint: str, challenge: str) -> None:
        super().__init__(detail, hint)
        self.headers["WWW-Authenticate"] = challenge


class RouteBusy(ProxyError):
    status = 503
    title = "Too many connections"

    def __init__(self, detail: str, hint: str = "") -> None:
        super().__init__(detail, hint, kind=None)
        self.refresh_s = 2


class NotFound(ProxyError):
    status = 404
    title = "No such route"

    def __init__(
        self, detail: str, hint: str = "", *, name: str = "", config_source: str = ""
    ) -> None:
        super().__init__(detail, hint)
        self.name = name  # the name asked for: the page suggests a close one and how to add it
        self.config_source = config_source  # the config file the route could go in; "" unknown


class MethodNotAllowed(ProxyError):
    status = 405
    title = "Method not allowed"


class MisdirectedRequest(ProxyError):
    status = 421
    title = "Not a devrouter name"


class VersionNotSupported(ProxyError):
    status = 505
    title = "HTTP version not supported"


class LoopDetected(ProxyError):
    status = 508
    title = "Loop detected"


class BadGateway(ProxyError):
    status = 502
    title = "Bad gateway"

    def __init__(self, detail: str, hint: str = "", kind: str | None = "invalid") -> None:
        super().__init__(detail, hint, kind)


class GatewayTimeout(ProxyError):
    status = 504
    title = "Gateway timeout"

    def __init__(self, detail: str, hint: str = "", kind: str | None = "timeout") -> None:
        super().__init__(detail, hint, kind)


class UpstreamStatus(ProxyError):
    """A backend's refusal of a WebSocket handshake, passed through with its own status."""

    title = "WebSocket refused by the backend"

    def __init__(self, status: int, detail: str, hint: str = "") -> None:
        super().__init__(detail, hint)
        self.status = status


#: Exit statuses: success, a failure the command reports (an invalid config for `check`, a
#: failed check for `doctor`), a usage error, a start-up failure.
EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_STARTUP = 0, 1, 2, 3


class CommandError(Exception):
    """A command cannot do what was asked; `str()` is the one line shown to the user."""

    exit_code = EXIT_FAILED


class UsageError(CommandError):
    exit_code = EXIT_USAGE


class StartupError(CommandError):
    exit_code = EXIT_STARTUP


class CAError(StartupError):
    """The local CA (devrouter.tls.ca) cannot be used: its directory or key is open to other
    users or not this user's, or its files are damaged. `str()` says what to do."""


class TrustError(CommandError):
    """A step of `trust` or `untrust` failed (devrouter.tls.trust): a tool is missing or
    failed, a file cannot be written. `str()` says what failed and what to do."""


class ConfigError(CommandError):
    """A config that cannot be used. `str()` is the one line shown to the user."""

    def __init__(self, source: str, line: int | None, message: str, route: str | None = None):
        self.source = source
        self.line = line
        self.route = route
        self.message = message
        where = f"{source}:{line}" if line else source
        what = f"route '{route}': " if route else ""
        super().__init__(f"{where}: {what}{message}")
