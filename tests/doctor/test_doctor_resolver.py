"""doctor.resolver: which lookups stay on this machine (tables of nsswitch.conf and
resolv.conf), and the verdicts; the name is never sent to a remote DNS server."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from devrouter.doctor import facts, resolver


@pytest.mark.parametrize(
    ("nsswitch", "resolv", "local"),
    [
        ("hosts: files mdns4_minimal [NOTFOUND=return] dns\n", "nameserver 10.0.0.53\n", False),
        ("hosts: files dns\n", "nameserver 127.0.0.53\n", True),
        ("hosts: files myhostname dns\n", "nameserver 10.0.0.53\n", True),
        ("hosts: files resolve [!UNAVAIL=return] dns\n", "nameserver 8.8.8.8\n", True),
        ("hosts: files dns myhostname\n", "nameserver 10.0.0.53\n", False),
        ("hosts: files wins dns\n", "", False),
        ("hosts: files dns\n", "", True),  # no nameserver line: glibc asks 127.0.0.1
        (None, "nameserver 192.0.2.1\n", False),  # no nsswitch.conf: dns first
    ],
)
def test_lookup_stays_local(nsswitch: str | None, resolv: str, local: bool) -> None:
    sources = resolver.nss_hosts_sources(nsswitch)
    assert "[NOTFOUND=return]" not in sources
    assert resolver.lookup_stays_local(sources, resolver.nameservers(resolv)) is local


def _never(name: str) -> list[str]:
    raise AssertionError("must not look the name up")


def test_resolver_never_sends_the_name_to_a_remote_dns_server() -> None:
    c = resolver.judge_resolver(["files", "dns"], ["10.0.0.53"], _never, 7355)
    assert c.status == "warn"
    assert "10.0.0.53" in c.message and c.data["looked_up"] is False
    assert c.fix is not None
    assert "browsers" in c.fix and "curl >= 7.85" in c.fix and "/etc/hosts" in c.fix


@pytest.mark.parametrize(
    ("answer", "status", "words"),
    [
        (["127.0.0.1", "::1"], "ok", "resolve to loopback"),
        (socket.gaierror(-2, "Name or service not known"), "warn", "do not resolve"),
        (["203.0.113.7"], "warn", "not to loopback"),
        (None, "warn", "took longer"),
    ],
)
def test_resolver_verdicts(answer: Any, status: str, words: str) -> None:
    c = resolver.judge_resolver(["files", "myhostname"], ["10.0.0.53"], lambda n: answer, 7355)
    assert c.status == status and words in c.message
    assert (c.fix is None) == (status == "ok")


def test_resolver_on_this_machine_is_never_a_failure() -> None:
    sources = resolver.nss_hosts_sources(facts.read_text(facts.NSSWITCH_PATH))
    servers = resolver.nameservers(facts.read_text(facts.RESOLV_CONF_PATH))
    c = resolver.judge_resolver(sources, servers, facts.resolve_bounded, 7355)
    assert c.status in ("ok", "warn")
