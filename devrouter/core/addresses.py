"""Listen and target addresses: `7355`, `127.0.0.1:7355`, `[::1]:7355`, `localhost:7355`,
and `http://127.0.0.1:8000` targets, which must be on this machine. Pure parsing; errors are
ValueErrors whose text is shown to the user."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from .model import DEFAULT_LOOPBACKS, ListenAddr, Upstream
from .numbers import digits


def parse_listen(value: str | int) -> ListenAddr | tuple[ListenAddr, ...]:
    """`7355` (both loopbacks), `127.0.0.1:7355`, `[::1]:7355` or `localhost:7355`.

    Raises ValueError with a user-facing message.
    """
    text = str(value).strip()
    if digits(text):
        port = _port_or_raise(text)
        return tuple(ListenAddr(h, port) for h in DEFAULT_LOOPBACKS)
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(f"cannot read listen address {text!r}: use [::1]:PORT")
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(f"cannot read listen address {text!r}: use HOST:PORT or a port")
    port = _port_or_raise(port_text)
    if host == "localhost":
        return tuple(ListenAddr(h, port) for h in DEFAULT_LOOPBACKS)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"listen host {host!r} must be an IP address or localhost") from None
    return ListenAddr(host, port)


def _port_or_raise(text: str) -> int:
    if not digits(text) or not 1 <= int(text) <= 65535:
        raise ValueError(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def listen_addrs(values: Iterable[str | int]) -> tuple[ListenAddr, ...]:
    out: list[ListenAddr] = []
    for v in values:
        parsed = parse_listen(v)
        for addr in parsed if isinstance(parsed, tuple) else (parsed,):
            if addr not in out:
                out.append(addr)
    return tuple(out)


def parse_target(text: str) -> Upstream:
    """`http://127.0.0.1:8000`, `localhost:8000` or `[::1]:8000`; loopback only.

    Raises ValueError with a user-facing message.
    """
    rest = text.strip()
    scheme, sep, after = rest.partition("://")
    if sep:
        if scheme.lower() != "http":
            raise ValueError(f"target {text!r}: only http:// backends are supported")
        rest = after
    rest = rest.rstrip("/")
    if "/" in rest or "?" in rest or "#" in rest:
        raise ValueError(f"target {text!r}: a target is scheme://host:port with no path")
    if "@" in rest:
        raise ValueError(f"target {text!r}: credentials in a target are not supported")
    try:
        addr = parse_listen(rest)
    except ValueError:
        raise ValueError(
            f"target {text!r} must look like http://127.0.0.1:PORT (a loopback host and a port)"
        ) from None
    if isinstance(addr, tuple):
        hosts = tuple(a.host for a in addr)
        if digits(rest):
            return Upstream(addr[0].port)
        return Upstream(addr[0].port, hosts)
    if not addr.is_loopback:
        raise ValueError(
            f"target {text!r} is not on this machine; devrouter only forwards to loopback "
            "addresses (127.0.0.1, ::1, localhost)"
        )
    return Upstream(addr.port, (addr.host,))
