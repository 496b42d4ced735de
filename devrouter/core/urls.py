"""The one way a URL through the router is written: `http://api.localhost:7355/`, and
`http://api.localhost/` where the router listens on the scheme's own port (80 for http://,
443 for https://), so URLs carry no port number when none is needed. Pure."""

from __future__ import annotations

#: The port each scheme's URLs leave out.
DEFAULT_PORTS = {"http": 80, "https": 443}


def origin(host: str, port: int, scheme: str = "http") -> str:
    """`http://api.localhost:7355`, or `http://api.localhost` on port 80 (no slash)."""
    if not port or DEFAULT_PORTS.get(scheme) == port:
        return f"{scheme}://{host}"
    return f"{scheme}://{host}:{port}"


def name_url(name: str | None, port: int, scheme: str = "http", path: str = "") -> str:
    """The URL of route `name` (None: the router's own page at `localhost`)."""
    host = f"{name}.localhost" if name else "localhost"
    return origin(host, port, scheme) + path
