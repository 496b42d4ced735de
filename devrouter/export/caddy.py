"""The plan as a Caddyfile: a site block per name, on plain HTTP.

How devrouter's behaviour maps (docs/export.md has the table):
- A name is a site `http://NAME.DOMAIN:PORT`; Caddy orders sites exact before wildcard. A
  Caddy wildcard `*.shop.D` matches one label only, so a wildcard's body is a snippet used
  twice: by its site (a.shop.D), and by the last site, `http://:PORT`, for deeper names
  (x.y.shop.D, matched by a Host regexp, deepest wildcard first). That last site answers
  names with no route with a 404.
- A path prefix is a `path_regexp` matcher (`^/api(/|$)`: whole segments, case-sensitive as
  in devrouter; Caddy's `path` matcher ignores case), in `handle` blocks longest first.
- reverse_proxy: a bare port's two addresses with `lb_policy first` and a retry on a failed
  connection; the route's timeout is `response_header_timeout`, exactly devrouter's (the
  wait for the response head; streams and WebSockets are not bounded). Caddy streams
  request and response bodies, flushes event streams at once, and upgrades WebSockets on
  its own; it sets X-Forwarded-For, -Proto and -Host itself.
- Access: `basicauth` with the user and bcrypt hash read from environment variables when
  Caddy loads the file (`{$VAR}`), so neither the secret nor its hash is in the file.

Every token from the config is a DNS name, a port, an address or a prefix of URL path
characters (devrouter.export.plan), written in double quotes where it could hold a space.
"""

from __future__ import annotations

import re

from .plan import Backend, ExportPlan, Gap, PathPlan, SitePlan, duration
from .text import Rendered, access_gap, header

T = "\t"
#: How long reverse_proxy keeps trying the next address after one failed to connect.
TRY_DURATION = "5s"
#: How long an address that refused a connection is skipped (the next request tries it again
#: after this).
FAIL_DURATION = "10s"
FIELDS_SNIPPET = "devrouter-fields"


def render(plan: ExportPlan) -> Rendered:
    gaps = [*plan.gaps, *_gaps(plan)]
    notes = [
        "Run it: caddy run --config Caddyfile --adapter caddyfile (validate: caddy validate).",
        "Sites are http:// (no automatic HTTPS); drop the http:// for Caddy's own certificates.",
    ]
    out = [header("Caddyfile", plan, gaps, notes), _fields_snippet(plan)]
    wildcards = [s for s in plan.sites if s.wildcard]
    for site in wildcards:
        out.append(f"({_snippet(site)}) {{\n{_body(plan, site, 1)}}}\n\n")
    for site in plan.sites:
        out.append(f"# {site.name}\n{_address(plan, site.host)} {{\n")
        out.append(_bind(plan))
        if site.wildcard:
            out.append(f"{T}import {_snippet(site)}\n")
        else:
            out.append(_body(plan, site, 1))
        out.append("}\n\n")
    out.append(_catch_all(plan, wildcards))
    return Rendered("".join(out), tuple(gaps))


def _gaps(plan: ExportPlan) -> list[Gap]:
    gaps = [
        Gap(None, "Forwarded (RFC 7239) is not set; the backend gets X-Forwarded-For/-Proto/-Host")
    ]
    for site in plan.sites:
        if site.access is not None:
            user, hashed = _auth_vars(site)
            gaps.append(
                access_gap(
                    site.name,
                    site.access.where,
                    f"set {hashed} to `caddy hash-password` of it (and {user}, default "
                    "devrouter) where Caddy runs",
                )
            )
    if plan.max_connections_set:
        gaps.append(Gap(None, "max_connections: Caddy has no limit of connections or requests"))
    if plan.max_websocket_message_set:
        gaps.append(
            Gap(None, "max_websocket_message_mib: Caddy relays WebSocket frames without a limit")
        )
    return gaps


def _fields_snippet(plan: ExportPlan) -> str:
    """The request fields every reverse_proxy sets or removes: X-Forwarded-Port (Caddy sets
    the other X-Forwarded-* itself); a client's Forwarded and X-Real-IP, and the router's
    token, never reach a backend (devrouter.http1.policy)."""
    return (
        f"# Request fields, as devrouter sets them\n({FIELDS_SNIPPET}) {{\n"
        f"{T}header_up X-Forwarded-Port {plan.options.port}\n"
        f"{T}header_up -Forwarded\n{T}header_up -X-Real-IP\n{T}header_up -X-Devrouter-Token\n"
        "}\n\n"
    )


def _address(plan: ExportPlan, host: str) -> str:
    return f"http://{host}:{plan.options.port}"


def _bind(plan: ExportPlan) -> str:
    return f"{T}bind {plan.options.bind}\n" if plan.options.bind else ""


def _snippet(site: SitePlan) -> str:
    return f"devrouter-{site.slug}"


def _auth_vars(site: SitePlan) -> tuple[str, str]:
    stem = "DEVROUTER_" + site.slug.upper().replace("-", "_")
    return f"{stem}_USER", f"{stem}_HASH"


def _body(plan: ExportPlan, site: SitePlan, depth: int) -> str:
    """The directives of one name: basic auth, then a handle per path prefix (longest
    first; a `handle` with a named matcher keeps its place), then the name's own backend."""
    pad = T * depth
    out = []
    if site.access is not None:
        user, hashed = _auth_vars(site)
        out.append(f"{pad}basicauth {{\n{pad}{T}{{${user}:devrouter}} {{${hashed}}}\n{pad}}}\n")
    if not site.paths:
        out.append(_proxy(plan, site, site.backend, depth))
        return "".join(out)
    for i, p in enumerate(site.paths):
        out.append(f'{pad}@path{i} path_regexp "{_path_regexp(p)}"\n')
        out.append(f"{pad}handle @path{i} {{\n{_proxy(plan, site, p.backend, depth + 1)}")
        out.append(f"{pad}}}\n")
    out.append(f"{pad}handle {{\n{_proxy(plan, site, site.backend, depth + 1)}{pad}}}\n")
    return "".join(out)


def _path_regexp(p: PathPlan) -> str:
    """`/api` -> `^/api(/|$)`, `/static/` -> `^/static/`. re.escape's backslashes are
    RE2's escapes too; a prefix has no quote or backslash of its own (plan.SAFE_PREFIX_RE)."""
    escaped = re.escape(p.prefix)
    return f"^{escaped}(/|$)" if p.segment else f"^{escaped}"


def _proxy(plan: ExportPlan, site: SitePlan, backend: Backend, depth: int) -> str:
    pad = T * depth
    lines = [f"reverse_proxy {' '.join(backend.addresses)} {{"]
    if len(backend.hosts) > 1:
        lines += [
            f"{T}lb_policy first",
            f"{T}lb_try_duration {TRY_DURATION}",
            f"{T}fail_duration {FAIL_DURATION}",
        ]
    lines += [
        f"{T}transport http {{",
        f"{T}{T}response_header_timeout {duration(site.timeout_s)}",
        f"{T}}}",
        f"{T}import {FIELDS_SNIPPET}",
    ]
    if site.access is not None:
        lines.append(f"{T}header_up -Authorization")
    lines.append("}")
    return "".join(f"{pad}{line}\n" for line in lines)


def _catch_all(plan: ExportPlan, wildcards: list[SitePlan]) -> str:
    out = [
        "# Names below a wildcard at any depth (a Caddy * is one label); names with no route\n",
        f"{_address(plan, '')} {{\n",
        _bind(plan),
    ]
    for site in sorted(wildcards, key=lambda s: -s.labels):  # the deepest wildcard first
        regexp = "(?i)^.+" + re.escape("." + site.suffix) + r"\.?(:[0-9]+)?$"
        out.append(f'{T}@{_snippet(site)} header_regexp Host "{regexp}"\n')
        out.append(f"{T}handle @{_snippet(site)} {{\n{T}{T}import {_snippet(site)}\n{T}}}\n")
    out.append(f'{T}handle {{\n{T}{T}respond "no route for this name" 404\n{T}}}\n')
    return "".join(out) + "}\n"
