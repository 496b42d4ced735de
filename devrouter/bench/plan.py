"""The plan: the request bytes, built once, and what one worker does (`Plan`), with the
split of a run's connections, requests and rate over worker processes. Pure data."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from ..core.errors import UsageError
from .options import TOKEN_RE
from .target import Target

DEFAULT_TIMEOUT_S = 10.0


def build_request(
    target: Target,
    method: str = "GET",
    headers: Sequence[tuple[str, str]] = (),
    body: bytes = b"",
    keepalive: bool = True,
) -> bytes:
    """The request bytes, built once and written for every request."""
    if not TOKEN_RE.match(method):
        raise UsageError(f"{method!r} is not an HTTP method")
    given = {name.lower() for name, _ in headers}
    lines = [f"{method} {target.path} HTTP/1.1"]
    if "host" not in given:
        lines.append(f"Host: {target.host_header}")
    if "user-agent" not in given:
        lines.append("User-Agent: devrouter-bench")
    lines += [f"{name}: {value}" for name, value in headers if name.lower() != "connection"]
    if not keepalive:
        lines.append("Connection: close")
    if (body or method.upper() in ("POST", "PUT", "PATCH")) and "content-length" not in given:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


@dataclass(frozen=True, slots=True)
class Plan:
    """What one worker does. Picklable: it crosses to worker processes."""

    host: str
    port: int
    request: bytes
    connections: int
    duration_s: float | None  # None: run until `requests` are done
    requests: int | None
    rate: float | None  # requests per second for this worker; None: closed loop
    offset_s: float = 0.0  # this worker's first due time, after the warmup
    timeout_s: float = DEFAULT_TIMEOUT_S
    warmup_s: float = 0.0
    keepalive: bool = True
    head: bool = False  # a HEAD request: responses have no body

    def split(self, workers: int) -> list[Plan]:
        """Shares for `workers` processes (never more than there are connections)."""
        n = max(1, min(workers, self.connections))
        out = []
        for w in range(n):
            out.append(
                replace(
                    self,
                    connections=_share(self.connections, n, w),
                    requests=None if self.requests is None else _share(self.requests, n, w),
                    rate=None if self.rate is None else self.rate / n,
                    offset_s=0.0 if self.rate is None else w / self.rate,
                )
            )
        return [p for p in out if p.requests is None or p.requests > 0]


def _share(total: int, parts: int, index: int) -> int:
    return total // parts + (1 if index < total % parts else 0)
