"""Route names: DNS labels under .localhost (RFC 6761), the one pattern every part of the
router checks names with."""

from __future__ import annotations

import re

#: One DNS label (RFC 1035 §2.3.1, lowercase): letters, digits and inner hyphens, 1-63 long.
LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
# Each pattern ends in \Z, not $: `$` also matches before a final newline, and a name with
# one could carry a second line into a hosts file or a generated config.
#: A route name: one or more labels, optionally a wildcard "*." in front.
NAME_RE = re.compile(rf"^(?:\*\.)?{LABEL}(?:\.{LABEL})*\Z")
#: Exactly one label (a stack's service name).
LABEL_RE = re.compile(rf"^{LABEL}\Z")
#: One or more labels, no wildcard (a stack's name).
DOTTED_RE = re.compile(rf"^{LABEL}(?:\.{LABEL})*\Z")
#: Names that are the router's own pages.
RESERVED_NAMES = frozenset({"devrouter"})


def to_label(text: str) -> str:
    """`My_App` -> `my-app`: one DNS label made of any text ("" when nothing is left)."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:63].strip("-")


def normalize_name(raw: str) -> str:
    name = raw.strip().lower().rstrip(".")
    if name.endswith(".localhost"):
        name = name[: -len(".localhost")]
    return name
