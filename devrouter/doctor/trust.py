"""Is the local CA trusted where browsers and tools look? The facts (the CA, this machine's
trust stores and each one's answer: devrouter.tls.stores and devrouter.tls.trust) and the
verdict, which is pure.

Doctor never makes the CA and never changes a store: it reads the CA's files, the system
bundle, and runs `certutil -L` and `security verify-cert`, each bounded by
tls.trust.CHECK_TIMEOUT_S.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import CAError
from ..tls.ca import LocalCA
from ..tls.stores import Store, find_stores
from ..tls.trust import trusted_by
from .report import Check, Status


@dataclass(frozen=True)
class TrustFacts:
    ca: Path | None = None  # ca.pem; None when there is no CA yet (or it cannot be used)
    fingerprint: str | None = None
    error: str | None = None  # why the CA cannot be used
    stores: tuple[tuple[str, bool | None], ...] = field(default=())  # (label, trusted)


def gather_trust(state: Path, env: Mapping[str, str]) -> TrustFacts:
    """The CA in `state` and what each store of this machine and user says of it."""
    try:
        ca = LocalCA.load(state)
    except CAError as exc:
        return TrustFacts(error=str(exc))
    if ca is None:
        return TrustFacts()
    system, nss = find_stores(env)
    stores: list[Store] = [*([system] if system else []), *nss]
    answers = tuple((s.label, trusted_by(s, ca)) for s in stores)
    return TrustFacts(ca.paths.cert, ca.fingerprint_sha256(), None, answers)


def judge_trust(facts: TrustFacts) -> Check:
    """`ok` when every store found trusts the CA, `warn` when one does not (HTTPS still works
    for clients given the CA), `info` without a CA or a store, `fail` when the CA is
    damaged (the router cannot serve HTTPS with it)."""
    data: dict[str, Any] = {
        "ca": str(facts.ca) if facts.ca else None,
        "fingerprint": facts.fingerprint,
        "error": facts.error,
        "stores": [{"store": label, "trusted": t} for label, t in facts.stores],
    }
    if facts.error is not None:
        return Check(
            "trust",
            "fail",
            f"the local CA cannot be used: {facts.error}",
            "do what the message says; if you make a new CA, run `devrouter trust` again",
            data,
        )
    if facts.ca is None:
        return Check(
            "trust",
            "info",
            "no local CA yet: it is created the first time the router serves HTTPS "
            "(or by `devrouter ca`)",
            None,
            data,
        )
    if not facts.stores:
        return Check(
            "trust",
            "info",
            f"the local CA {facts.ca} is in no trust store doctor can check (no system "
            "store or NSS database found): give clients the file itself",
            None,
            data,
        )
    yes = [label for label, t in facts.stores if t is True]
    no = [label for label, t in facts.stores if t is False]
    unknown = [label for label, t in facts.stores if t is None]
    parts = []
    if yes:
        parts.append(f"the local CA is trusted by: {', '.join(yes)}")
    if no:
        parts.append(f"{'NOT' if yes else 'the local CA is NOT trusted'} by {', '.join(no)}")
    if unknown:
        parts.append(f"cannot tell for {', '.join(unknown)} (a tool or bundle is missing)")
    status: Status = "warn" if no else "ok" if yes else "info"
    fix = None
    if no:
        fix = "run `devrouter trust` (it prints the one sudo command the system store needs)"
    return Check("trust", status, "; ".join(parts), fix, data)
