"""The plan as a Traefik v3 dynamic configuration for the file provider (YAML).

How devrouter's behaviour maps (docs/export.md has the table):
- A name is a router with `Host(...)`, a wildcard one with `HostRegexp(...)` (any depth, not
  the bare suffix); a path prefix is a router of its own with `Path(p) || PathPrefix(p/)`
  (whole segments: Traefik's PathPrefix alone would take /apiary for /api).
- Traefik orders routers by rule length unless told, so every router has a priority that
  gives devrouter's order: an exact name above any wildcard, a wildcard with more labels
  above one with fewer, and on one name a longer prefix above a shorter one, above the name
  itself.
- A backend and a timeout make a service; the timeout is a serversTransport's
  `responseHeaderTimeout`, exactly devrouter's (the wait for the response head). Traefik
  streams bodies, flushes event streams at once and upgrades WebSockets on its own, and
  sets X-Forwarded-For, -Proto, -Host and -Port itself.
- Requests in flight to a name: an `inFlightReq` middleware counted per Host.
- Access: a `basicAuth` middleware reading a users file you create.

The YAML is written by PyYAML from plain data, so no value can break its syntax; the rule
strings hold only DNS names and prefixes of URL path characters (devrouter.export.plan),
never a backtick.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from .plan import Backend, ExportPlan, Gap, PathPlan, SitePlan, duration
from .text import Rendered, access_gap, header

#: A router's priority is RANK_STEP * (the rank of its host) + (its prefix's length + 1).
RANK_STEP = 100_000
#: An exact name's rank, above any wildcard's (a wildcard's rank is its label count).
EXACT_RANK = 1_000


def render(plan: ExportPlan) -> Rendered:
    gaps = [*plan.gaps, *_gaps(plan)]
    notes = [
        "Traefik v3. Point the file provider at it in the static configuration:",
        f'  entryPoints: {{web: {{address: ":{plan.options.port}"}}}}',
        "  providers: {file: {filename: /etc/traefik/devrouter.yaml, watch: true}}",
    ]
    routers: dict[str, Any] = {}
    services: dict[str, Any] = {}
    transports: dict[str, Any] = {}
    middlewares: dict[str, Any] = {
        "devrouter-headers": {
            # "" removes a field: a client's Forwarded or the router's token never reaches
            # the backend (devrouter.http1.policy)
            "headers": {"customRequestHeaders": {"Forwarded": "", "X-Devrouter-Token": ""}}
        }
    }
    for site in plan.sites:
        chain = ["devrouter-headers", f"devrouter-inflight-{site.slug}"]
        middlewares[chain[1]] = {
            "inFlightReq": {
                "amount": site.max_connections,
                "sourceCriterion": {"requestHost": True},
            }
        }
        if site.access is not None:
            chain.append(f"devrouter-auth-{site.slug}")
            middlewares[chain[-1]] = {
                "basicAuth": {
                    "usersFile": _users_file(site),
                    "realm": site.slug,
                    "removeHeader": True,
                }
            }
        for path in (None, *site.paths):
            backend = site.backend if path is None else path.backend
            service = _service(plan, site, backend, services, transports)
            name = f"devrouter-{site.slug}" if path is None else _path_router(site, path)
            routers[name] = {
                "rule": _rule(site, path),
                "priority": _priority(site, path),
                "service": service,
                "middlewares": list(chain),
            }
    data = {
        "http": {
            "routers": routers,
            "services": services,
            "middlewares": middlewares,
            "serversTransports": transports,
        }
    }
    text = header("Traefik dynamic configuration", plan, gaps, notes)
    text += yaml.safe_dump(data, sort_keys=False, default_flow_style=False, width=100)
    return Rendered(text, tuple(gaps))


def _gaps(plan: ExportPlan) -> list[Gap]:
    gaps = [Gap(None, "Forwarded (RFC 7239) is not set; the backend gets X-Forwarded-*")]
    if any(len(b.hosts) > 1 for b in plan.backends):
        gaps.append(
            Gap(
                None,
                "a bare port is tried on 127.0.0.1 and then ::1 by devrouter; Traefik balances "
                "between servers instead of falling back, so only 127.0.0.1 is listed "
                "(--upstream-host names the one host)",
            )
        )
    for site in plan.sites:
        if site.access is not None:
            gaps.append(
                access_gap(
                    site.name,
                    site.access.where,
                    f"create {_users_file(site)} with `htpasswd -B -c FILE devrouter`",
                )
            )
        if site.wildcard and plan.max_connections_set:
            gaps.append(Gap(site.name, "inFlightReq counts each name under the wildcard apart"))
    if plan.max_connections_set:
        gaps.append(Gap(None, "max_connections (router-wide) has no Traefik equivalent here"))
    if plan.max_websocket_message_set:
        gaps.append(
            Gap(None, "max_websocket_message_mib: Traefik relays WebSocket frames without a limit")
        )
    return gaps


def _users_file(site: SitePlan) -> str:
    return f"/etc/traefik/devrouter-{site.slug}.htpasswd"


def _path_router(site: SitePlan, path: PathPlan) -> str:
    return f"devrouter-{site.slug}-path{site.paths.index(path)}"


def host_rule(site: SitePlan) -> str:
    if site.wildcard:
        return f"HostRegexp(`(?i)^.+{re.escape('.' + site.suffix)}$`)"
    return f"Host(`{site.host}`)"


def _rule(site: SitePlan, path: PathPlan | None) -> str:
    if path is None:
        return host_rule(site)
    if path.segment:
        return f"{host_rule(site)} && (Path(`{path.prefix}`) || PathPrefix(`{path.prefix}/`))"
    return f"{host_rule(site)} && PathPrefix(`{path.prefix}`)"


def _priority(site: SitePlan, path: PathPlan | None) -> int:
    rank = site.labels if site.wildcard else EXACT_RANK
    within = 0 if path is None else min(len(path.prefix) + 1, RANK_STEP - 1)
    return rank * RANK_STEP + within


def _service(
    plan: ExportPlan,
    site: SitePlan,
    backend: Backend,
    services: dict[str, Any],
    transports: dict[str, Any],
) -> str:
    """The service of a backend at the site's timeout (a timeout is the service's transport),
    added to `services` the first time."""
    timeout = duration(site.timeout_s)
    transport = f"devrouter-timeout-{timeout}"
    transports.setdefault(transport, {"forwardingTimeouts": {"responseHeaderTimeout": timeout}})
    name = f"devrouter-{backend.slug}"
    if site.timeout_s != plan.timeout_s:
        name += f"-{timeout}"
    services.setdefault(
        name,
        {
            "loadBalancer": {
                "servers": [{"url": f"http://{backend.primary}"}],
                "passHostHeader": True,
                "serversTransport": transport,
            }
        },
    )
    return name
