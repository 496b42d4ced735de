"""The plan as Kubernetes manifests: an Ingress per name, and the Services it routes to.

How devrouter's behaviour maps (docs/export.md has the table):
- A name is an Ingress (one per name, because ingress-nginx's annotations, which carry the
  timeout, body size, buffering and access, apply to a whole Ingress) with one rule for its
  host; a path prefix is a `Prefix` path (whole segments, the longest wins), and `/` goes to
  the name's own backend.
- A backend is a Service: the one `--service-map` names (by route name, or by backend port),
  else one made here: with --upstream-host an IP address, a Service without selector and an
  EndpointSlice holding that address; with a host name, an ExternalName Service. A loopback
  address cannot be an endpoint, so without either option the Services have no endpoints
  (a gap).
- The annotations are ingress-nginx's; other controllers ignore them.

The YAML is written by PyYAML from plain data, so no value can break its syntax.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from ..core.names import normalize_name
from ..core.numbers import digits
from .plan import Backend, ExportPlan, Gap, SitePlan, is_ip
from .text import Rendered, access_gap, header

NGINX = "nginx.ingress.kubernetes.io/"
#: A Service name: a DNS-1035 label.
SERVICE_RE = re.compile(r"^[a-z]([a-z0-9-]{0,61}[a-z0-9])?\Z")
#: A named Service port (IANA_SVC_NAME).
PORT_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,13}[a-z0-9])?\Z")


@dataclass(frozen=True, slots=True)
class ServiceRef:
    name: str
    port: int | str  # a number or a named port

    def backend(self) -> dict[str, Any]:
        key = "number" if isinstance(self.port, int) else "name"
        return {"service": {"name": self.name, "port": {key: self.port}}}


def parse_service_map(items: Sequence[str]) -> dict[str, ServiceRef]:
    """`NAME=SERVICE:PORT` (NAME a route name or a backend port; PORT a number or a port
    name) into {key: ServiceRef}; ValueError with a user-facing message."""
    out: dict[str, ServiceRef] = {}
    for item in items:
        key, eq, ref = item.partition("=")
        service, colon, port = ref.rpartition(":")
        what = f"--service-map {item!r}"
        if not eq or not colon or not key.strip():
            raise ValueError(f"{what}: expected NAME=SERVICE:PORT, like api=api-svc:8080")
        if not SERVICE_RE.match(service):
            raise ValueError(f"{what}: {service!r} is not a Service name (a DNS label)")
        number: int | str = int(port) if digits(port) else port
        if isinstance(number, int) and not 1 <= number <= 65535:
            raise ValueError(f"{what}: port {number} is outside 1-65535")
        if isinstance(number, str) and not PORT_NAME_RE.match(number):
            raise ValueError(f"{what}: {port!r} is not a port number or name")
        k = key.strip() if digits(key.strip()) else normalize_name(key)
        out[k] = ServiceRef(service, number)
    return out


def render(plan: ExportPlan, service_map: Mapping[str, ServiceRef] | None = None) -> Rendered:
    service_map = service_map or {}
    gaps = [*plan.gaps, *_gaps(plan)]
    made: dict[Backend, ServiceRef] = {}
    ingresses = []
    for site in plan.sites:
        paths = []
        for p in site.paths:
            ref = _ref(plan, p.backend, None, service_map, made)
            paths.append(_path(p.prefix, ref))
            if not p.segment and p.prefix != "/":
                gaps.append(
                    Gap(
                        site.name,
                        f"path prefix {p.prefix}: a Prefix path also takes "
                        f"{p.prefix[:-1]} itself (its trailing slash is ignored)",
                    )
                )
        if not any(p.prefix == "/" for p in site.paths):
            ref = _ref(plan, site.backend, site.name, service_map, made)
            paths.append(_path("/", ref))
        ingresses.append(_ingress(site, paths))
    docs: list[dict[str, Any]] = []
    for backend in sorted(made, key=lambda b: (b.port, b.hosts)):
        docs.extend(_service_docs(backend, made[backend], gaps))
    unused = sorted(set(service_map) - {s.name for s in plan.sites} - _ports(plan))
    if unused:
        gaps.append(Gap(None, f"--service-map names no route or backend port: {', '.join(unused)}"))
    notes = [
        "Apply: kubectl apply -f devrouter.yaml. The annotations are ingress-nginx's; the",
        "controller's own port is used (--port does not apply).",
    ]
    text = header("Kubernetes manifests", plan, gaps, notes)
    text += yaml.safe_dump_all([*docs, *ingresses], sort_keys=False, width=100)
    return Rendered(text, tuple(gaps))


def _ports(plan: ExportPlan) -> set[str]:
    return {str(b.port) for b in plan.backends}


def _gaps(plan: ExportPlan) -> list[Gap]:
    gaps = [
        Gap(
            None,
            "timeouts: proxy-read-timeout is the route's timeout (whole seconds, rounded up), "
            "and it also closes a response (an SSE stream, a WebSocket) silent for that long",
        ),
        Gap(None, "Forwarded (RFC 7239) is not set; the backend gets X-Forwarded-*"),
    ]
    for site in plan.sites:
        if site.wildcard:
            gaps.append(
                Gap(
                    site.name,
                    f"an Ingress wildcard {site.host} matches one label only "
                    f"(a.{site.suffix}, not a.b.{site.suffix})",
                )
            )
        if site.access is not None:
            gaps.append(
                access_gap(
                    site.name,
                    site.access.where,
                    f"create the Secret {_auth_secret(site)} with: htpasswd -B -c auth "
                    f"devrouter && kubectl create secret generic {_auth_secret(site)} "
                    "--from-file=auth",
                )
            )
    if plan.max_connections_set:
        gaps.append(Gap(None, "max_connections: ingress-nginx limits connections per client only"))
    if plan.max_websocket_message_set:
        gaps.append(Gap(None, "max_websocket_message_mib: relayed without a limit"))
    return gaps


def _auth_secret(site: SitePlan) -> str:
    return f"devrouter-access-{site.slug}"


def _ref(
    plan: ExportPlan,
    backend: Backend,
    route: str | None,
    service_map: Mapping[str, ServiceRef],
    made: dict[Backend, ServiceRef],
) -> ServiceRef:
    """The Service for a backend: mapped by the route's name, by its port, or by the name of a
    route whose own backend it is (a path /api to the port of the route api); else one made
    here, once per backend (`made`)."""
    if route is not None and route in service_map:
        return service_map[route]
    if str(backend.port) in service_map:
        return service_map[str(backend.port)]
    for site in plan.sites:
        if site.backend == backend and site.name in service_map:
            return service_map[site.name]
    return made.setdefault(backend, ServiceRef(f"devrouter-{backend.slug}", backend.port))


def _service_docs(backend: Backend, ref: ServiceRef, gaps: list[Gap]) -> list[dict[str, Any]]:
    host = backend.hosts[0]
    port = {"name": "http", "port": backend.port, "protocol": "TCP"}
    service: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": ref.name},
        "spec": {"ports": [{**port, "targetPort": backend.port}]},
    }
    if not is_ip(host):
        service["spec"] = {"type": "ExternalName", "externalName": host, **service["spec"]}
        return [service]
    address = ipaddress.ip_address(host)
    if address.is_loopback:
        gaps.append(
            Gap(
                None,
                f"Service {ref.name} has no endpoints: its backend {backend.primary} is a "
                "loopback address, which an EndpointSlice cannot hold (give --upstream-host "
                "or --service-map)",
            )
        )
        return [service]
    endpoints = {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {
            "name": ref.name,
            "labels": {
                "kubernetes.io/service-name": ref.name,
                "endpointslice.kubernetes.io/managed-by": "devrouter-export",
            },
        },
        "addressType": "IPv6" if address.version == 6 else "IPv4",
        "ports": [port],
        "endpoints": [{"addresses": [host]}],
    }
    return [service, endpoints]


def _path(prefix: str, ref: ServiceRef) -> dict[str, Any]:
    return {"path": prefix, "pathType": "Prefix", "backend": ref.backend()}


def _ingress(site: SitePlan, paths: list[dict[str, Any]]) -> dict[str, Any]:
    annotations = {
        NGINX + "proxy-body-size": "0",
        NGINX + "proxy-buffering": "off",
        NGINX + "proxy-request-buffering": "off",
        NGINX + "proxy-read-timeout": str(math.ceil(site.timeout_s)),
    }
    if site.access is not None:
        annotations[NGINX + "auth-type"] = "basic"
        annotations[NGINX + "auth-secret"] = _auth_secret(site)
        annotations[NGINX + "auth-realm"] = site.slug
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": {"name": f"devrouter-{site.slug}", "annotations": annotations},
        "spec": {"rules": [{"host": site.host, "http": {"paths": paths}}]},
    }
