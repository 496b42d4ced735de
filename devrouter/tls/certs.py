"""The TLS contexts of the router's port: one per leaf, picked by SNI during the handshake.

Theory of operation: the listener wraps every connection with `CertStore.server_context()`,
which holds the default leaf (`localhost`, 127.0.0.1, ::1) and an SNI callback. OpenSSL calls
the callback for every ClientHello, with or without SNI, on the event loop's thread and
inside the handshake; it maps the name to its leaf (`devrouter.tls.ca.leaf_name`, so a
foreign name gets the default leaf and fails verification at the client) and switches the
connection to that leaf's context. ALPN is answered from the context switched to, so every
context carries the same ALPN list and the same TLS settings.

Issuing a leaf and loading it into a context takes about 1.5 ms (measured by
tests/tls/test_certs.py: 0.4 ms for the key, the signature and the file, 1 ms for OpenSSL to
read it back into a context) on top of the handshake's own work, so contexts are cached: a
cached handshake costs a dict lookup and one comparison with the time its leaf is due for
renewal, 0.1 µs. A leaf is issued (or loaded from disk) the first time its name is asked
for, or ahead of time by `prepare` from a worker thread when the routes change; one lock keeps
the two threads from issuing the same leaf twice. The cache is bounded, so a stream of made-up
names under .localhost cannot grow it without end. A renewal that fails (a full disk) keeps
the current leaf, still valid for days, and is retried a minute later, not on every handshake.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from ..core.errors import CAError
from .ca import DEFAULT_NAME, LocalCA, leaf_name

log = logging.getLogger("devrouter.tls")

#: Offered in this order of preference; the client's list decides among them.
ALPN_PROTOCOLS: Final = ("h2", "http/1.1")
#: At most this many names' contexts are kept, oldest dropped first.
MAX_CACHED_NAMES: Final = 4096
#: Leaves issued on demand in one run of the router, at most: for names that were not
#: prepared from the route table and have no leaf on disk yet (a typo's 404 page over
#: https, a name about to be routed). Past it such a name gets the default certificate (the
#: client's name check fails). It bounds what a web page fetching random
#: https://X.localhost names can make the router write to disk, and spend 1.5 ms each on.
MAX_ON_DEMAND: Final = 256
#: TLS 1.2 suites: ephemeral ECDH and an AEAD cipher, the ones HTTP/2 accepts (RFC 9113
#: §9.2.2). TLS 1.3's suites are all of that kind and are not affected by this string.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
#: A renewal that failed is tried again after this many seconds.
RENEW_RETRY_S: Final = 60.0


def tls_context(certfile: Path, alpn: Sequence[str]) -> ssl.SSLContext:
    """A server context holding the certificate and key in `certfile`."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_NO_COMPRESSION  # CRIME; Python's default, stated here on purpose
    ctx.set_ciphers(TLS12_CIPHERS)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    ctx.load_cert_chain(certfile)  # the key is in the same file, after the certificate
    return ctx


def host_name(name: str) -> str:
    """A route's name (`api`, `*.shop`, `web.shop`) or a host name -> the host name whose leaf
    serves it: `api.localhost`, `shop.localhost` (its leaf covers `*.shop.localhost`)."""
    name = name.lower().removeprefix("*.").removesuffix(".")
    if name == DEFAULT_NAME or name.endswith(f".{DEFAULT_NAME}"):
        return name
    return f"{name}.{DEFAULT_NAME}"


@dataclass(frozen=True, slots=True)
class _Entry:
    context: ssl.SSLContext
    renew_at: float  # time.time() seconds
    expires_at: float


class CertStore:
    """The contexts of a CA's leaves, by name. `clock` is for tests (seconds since the
    epoch)."""

    def __init__(
        self,
        ca: LocalCA,
        alpn: Sequence[str] = ALPN_PROTOCOLS,
        *,
        clock: Callable[[], float] = time.time,
        max_names: int = MAX_CACHED_NAMES,
    ) -> None:
        self.ca = ca
        self.alpn = tuple(alpn)
        self._clock = clock
        self._max_names = max(1, max_names)
        # name -> context: 0.1 µs to find instead of 1.5 ms to build (the module docstring).
        # Read without the lock on the fast path (one dict lookup is atomic); changed only
        # with it held.
        self._cache: dict[str, _Entry] = {}
        self._lock = threading.Lock()
        self._server: ssl.SSLContext | None = None
        self._prepared: set[str] = set()  # names from the route table: never rationed
        self.on_demand = 0  # leaves issued for other names (MAX_ON_DEMAND)

    def server_context(self) -> ssl.SSLContext:
        """The context the listener wraps connections with: the default leaf, the SNI
        callback, ALPN. The same object on every call."""
        with self._lock:
            if self._server is None:
                self._fresh(DEFAULT_NAME)  # the default leaf's file is current
                ctx = tls_context(self.ca.paths.leaf(DEFAULT_NAME), self.alpn)
                ctx.sni_callback = self._on_sni
                self._server = ctx
            return self._server

    def context_for(self, name: str) -> ssl.SSLContext:
        """The context of `name`'s leaf (`name` as `leaf_name` returns it): cached, loaded
        from disk, or issued; renewed when due. Raises CAError (or ValueError for a name
        devrouter does not issue for)."""
        entry = self._cache.get(name)
        if entry is not None and self._clock() < entry.renew_at:
            return entry.context
        with self._lock:
            return self._fresh(name).context

    def prepare(self, names: Iterable[str]) -> None:
        """Issue (or load) the leaves of these route or host names ahead of their first
        handshake; the default leaf too. Thread-safe; a name that fails is logged and left to
        be issued on demand."""
        hosts = {leaf_name(host_name(n)) for n in names} | {DEFAULT_NAME}
        with self._lock:
            self._prepared |= hosts
        for host in sorted(hosts):
            try:
                self.context_for(host)  # the lock is taken per leaf: handshakes go between
            except (CAError, OSError, ssl.SSLError) as exc:
                log.warning("cannot prepare a certificate for %s: %s", host, exc)

    def cached_names(self) -> list[str]:
        """The names whose contexts are cached, oldest first (for tests and diagnostics)."""
        with self._lock:
            return list(self._cache)

    def _fresh(self, name: str) -> _Entry:
        """The cached entry when it is not due, else a new one (called with the lock held)."""
        now = self._clock()
        entry = self._cache.get(name)
        if entry is not None and now < entry.renew_at:
            return entry
        try:
            leaf = self.ca.leaf(name, datetime.fromtimestamp(now, UTC))
            ctx = tls_context(self.ca.paths.leaf(name), self.alpn)
        except (CAError, OSError, ssl.SSLError) as exc:
            if entry is None or now >= entry.expires_at:
                raise
            log.warning(
                "cannot renew the certificate for %s, keeping the current one: %s", name, exc
            )
            entry = _Entry(entry.context, now + RENEW_RETRY_S, entry.expires_at)
            self._cache[name] = entry
            return entry
        entry = _Entry(ctx, leaf.renew_at.timestamp(), leaf.not_after.timestamp())
        self._cache.pop(name, None)  # re-inserted last: the oldest are dropped first
        while len(self._cache) >= self._max_names:
            del self._cache[next(iter(self._cache))]
        self._cache[name] = entry
        return entry

    def _on_sni(
        self, sslobj: ssl.SSLObject | ssl.SSLSocket, server_name: str | None, _: ssl.SSLContext
    ) -> None:
        """OpenSSL's servername callback: switch to the named leaf's context. Never raises
        (an exception here would abort the handshake with an unhelpful alert): on an
        unexpected error the connection keeps the default leaf."""
        try:
            name = leaf_name(server_name)
            if name not in self._cache and not self._may_issue(name):
                return  # rationed: the default certificate
            sslobj.context = self.context_for(name)
        except Exception:
            log.exception("TLS: no certificate for %r; answering with the default one", server_name)

    def _may_issue(self, name: str) -> bool:
        """Whether a handshake may have `name`'s leaf though it is not cached: a name from
        the route table, or one whose leaf is on disk, always; any other, while fewer than
        MAX_ON_DEMAND have been issued this run."""
        if name in self._prepared or self.ca.paths.leaf(name).exists():
            return True
        with self._lock:
            if self.on_demand >= MAX_ON_DEMAND:
                if self.on_demand > MAX_ON_DEMAND:
                    return False  # said once
                self.on_demand += 1
                log.warning(
                    "TLS: not issuing a certificate for %s: %d names outside the route table "
                    "had one issued already (is a page asking for random names?)",
                    name,
                    MAX_ON_DEMAND,
                )
                return False
            self.on_demand += 1
            return True
