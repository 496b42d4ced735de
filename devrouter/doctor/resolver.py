"""Do `*.localhost` names resolve to loopback here? Pure rules over the text of
/etc/nsswitch.conf and /etc/resolv.conf, and the verdict. The lookup itself
(`facts.resolve_bounded`) is passed in, and is only made when the system resolver would
not send the name over the network: with plain `files dns`, glibc would send it to the DNS
server, which doctor never does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..core.model import is_loopback_host
from .facts import RESOLVE_TIMEOUT_S
from .report import Check

#: The name looked up to test `*.localhost` resolution.
CHECK_NAME = "devrouter-doctor-check.localhost"
#: NSS host sources that answer `*.localhost` themselves (systemd's nss-myhostname and
#: nss-resolve; systemd-resolved never forwards `.localhost`).
_NSS_ANSWERS_LOCALHOST = frozenset({"myhostname", "resolve"})
#: NSS host sources that never send a `.localhost` name over the network.
_NSS_LOCAL_ONLY = frozenset(
    {"files", "mymachines", "mdns_minimal", "mdns4_minimal", "mdns6_minimal", "libvirt"}
)


def nss_hosts_sources(nsswitch_text: str | None) -> list[str]:
    """The sources on the `hosts:` line, without their [ACTION] clauses. glibc's default
    when the file is missing is `dns files`."""
    if nsswitch_text is None:
        return ["dns", "files"]
    for line in nsswitch_text.splitlines():
        key, sep, rest = line.split("#", 1)[0].partition(":")
        if sep and key.strip() == "hosts":
            sources: list[str] = []
            depth = 0
            for token in rest.replace("[", " [ ").replace("]", " ] ").split():
                if token == "[":
                    depth += 1
                elif token == "]":
                    depth = max(0, depth - 1)
                elif depth == 0:
                    sources.append(token)
            return sources
    return ["dns", "files"]


def nameservers(resolv_text: str | None) -> list[str]:
    """The `nameserver` addresses in resolv.conf; glibc uses 127.0.0.1 when there are none."""
    found = []
    for line in (resolv_text or "").splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            found.append(parts[1].split("%", 1)[0])
    return found or ["127.0.0.1"]


def lookup_stays_local(sources: Sequence[str], servers: Sequence[str]) -> bool:
    """Would glibc resolve a `.localhost` name without sending it off this machine?"""
    return _remote_lookup(sources, servers) is None


def _remote_lookup(sources: Sequence[str], servers: Sequence[str]) -> str | None:
    """Why a lookup would leave this machine, or None when it would not."""
    for src in sources:
        if src in _NSS_ANSWERS_LOCALHOST:
            return None
        if src == "dns":
            remote = [s for s in servers if not is_loopback_host(s)]
            return f"they go to the DNS server {', '.join(remote)}" if remote else None
        if src not in _NSS_LOCAL_ONLY:
            return f"they go to the '{src}' source, which may use the network"
    return None


def judge_resolver(
    sources: Sequence[str],
    servers: Sequence[str],
    lookup: Callable[[str], list[str] | BaseException | None],
    port: int,
) -> Check:
    """Does `*.localhost` resolve to loopback here? `lookup` is only called when the system
    resolver would not send the name over the network."""
    hosts_line = " ".join(sources)
    fix = (
        "browsers resolve *.localhost themselves, and so does curl >= 7.85; for other "
        "programs (Node's fetch, Python, most CLI tools), write the names into /etc/hosts "
        "with `devrouter hosts sync` (it prints the sudo line; `hosts: sync` in the config "
        "keeps them current; docs/hosts.md), add 'myhostname' to the hosts: line of "
        "/etc/nsswitch.conf (package libnss-myhostname), or use "
        f"http://127.0.0.1:{port} with a 'Host: NAME.localhost' header; see docs/localhost.md"
    )
    data: dict[str, Any] = {"name": CHECK_NAME, "nsswitch_hosts": hosts_line}
    data["nameservers"] = list(servers)
    remote = _remote_lookup(sources, servers)
    if remote is not None:
        data.update(looked_up=False, addresses=None)
        return Check(
            "resolver",
            "warn",
            "*.localhost names are not resolved locally for programs that use the system "
            f"resolver (hosts: {hosts_line}): {remote}, and doctor did not ask",
            fix,
            data,
        )
    result = lookup(CHECK_NAME)
    data["looked_up"] = True
    if result is None:
        data["addresses"] = None
        return Check(
            "resolver",
            "warn",
            f"looking up {CHECK_NAME} took longer than {RESOLVE_TIMEOUT_S:g} s",
            fix,
            data,
        )
    if isinstance(result, BaseException):
        data["addresses"] = None
        return Check(
            "resolver",
            "warn",
            f"*.localhost names do not resolve on this machine ({CHECK_NAME}: {result})",
            fix,
            data,
        )
    data["addresses"] = result
    outside = [a for a in result if not is_loopback_host(a)]
    if outside or not result:
        return Check(
            "resolver",
            "warn",
            f"{CHECK_NAME} resolves to {', '.join(outside) or 'nothing'}, not to loopback: "
            "programs that use the system resolver send *.localhost requests elsewhere",
            fix,
            data,
        )
    return Check(
        "resolver",
        "ok",
        f"*.localhost names resolve to loopback on this machine ({', '.join(result)})",
        None,
        data,
    )
