"""A running container's names, its port and target, or why it has none. Sans-IO.

The rules (docs/docker.md says them to users):

- A Compose service SERVICE of project PROJECT is `SERVICE.PROJECT` (the shape of a
  `devrouter up` stack, so a stack can move into Compose and keep its URLs); the second
  container of a scaled service is `SERVICE-2.PROJECT`, and so on. A standalone container is
  its container name. `_` becomes `-` (a DNS label has no underscore).
- Labels override: `devrouter.name` (one name or several, comma-separated), `devrouter.port`
  (the container port to use when several are published), `devrouter.enable=false` (no name
  at all). With `docker.only_labelled`, only containers with a devrouter.* label get names.
- The target is the host port the container's HTTP port is published on, on a loopback or
  wildcard address (127.0.0.1, 0.0.0.0, ::1, ::). With several published ports, ports that
  are surely not HTTP (databases, TLS) are left out and a common HTTP port is preferred.
- With `docker.container_addresses` (Linux), a container that publishes nothing is reached
  at its own address on its network.
- Two containers that want one name: the older one keeps it, and the clash is reported.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from ..core.model import DockerSettings, Route, Upstream
from ..core.names import NAME_RE, RESERVED_NAMES, normalize_name, to_label
from ..core.numbers import digits
from .containers import Container, PublishedPort

LABEL_NAME = "devrouter.name"
LABEL_PORT = "devrouter.port"
LABEL_ENABLE = "devrouter.enable"
LABEL_PREFIX = "devrouter."

#: Host addresses a published port can be reached on from this machine's loopback.
_V4 = ("", "0.0.0.0", "127.0.0.1")
_V6 = ("::", "::1")

#: Container ports that are surely not HTTP, never picked on their own (devrouter.port can).
NOT_HTTP: dict[int, str] = {
    22: "SSH",
    443: "HTTPS (the router speaks plain HTTP to backends)",
    1433: "SQL Server",
    3306: "MySQL",
    5432: "PostgreSQL",
    5672: "AMQP",
    6379: "Redis",
    8443: "HTTPS (the router speaks plain HTTP to backends)",
    9092: "Kafka",
    11211: "memcached",
    27017: "MongoDB",
}
#: When several HTTP-looking ports are published, the first of these wins; then the lowest.
PREFERRED_PORTS = (80, 8080, 8000, 3000, 5000, 5173, 4000, 8888)


@dataclass(frozen=True, slots=True)
class Placement:
    """What became of one running container: its names and target, or the reason it has no
    route. `note` says how a choice was made (which of several ports)."""

    container: Container
    names: tuple[str, ...] = ()
    upstream: Upstream | None = None
    reason: str | None = None
    note: str | None = None
    #: It has no route because it is meant to have none: opted out, unlabelled under
    #: docker.only_labelled, or publishing only a port that is surely not HTTP.
    deliberate: bool = False

    @property
    def routed(self) -> bool:
        return bool(self.names) and self.upstream is not None and self.reason is None


@dataclass(frozen=True, slots=True)
class DockerPlan:
    placements: tuple[Placement, ...] = ()
    routes: tuple[Route, ...] = ()
    conflicts: tuple[str, ...] = ()


def plan(containers: Iterable[Container], settings: DockerSettings, timeout_s: float) -> DockerPlan:
    """Every running container's placement, and the routes of those that have one."""
    running = sorted(
        (c for c in containers if c.state in ("running", "paused")),
        key=lambda c: (c.created, c.name),
    )
    placements = [place(c, settings) for c in running]
    routes: list[Route] = []
    taken: dict[str, Placement] = {}
    conflicts: list[str] = []
    for p in placements:
        if not p.routed or p.upstream is None:
            continue
        for name in p.names:
            holder = taken.get(name)
            if holder is not None:
                conflicts.append(
                    f"route '{name}' from Docker container {p.container.name} clashes with "
                    f"the one from Docker container {holder.container.name}; the older "
                    "container's route is in use"
                )
                continue
            taken[name] = p
            routes.append(_route(name, p, timeout_s))
    return DockerPlan(
        tuple(placements), tuple(sorted(routes, key=lambda r: r.name)), tuple(conflicts)
    )


def _route(name: str, p: Placement, timeout_s: float) -> Route:
    c = p.container
    assert p.upstream is not None
    return Route(
        name, p.upstream, timeout_s=timeout_s, source="docker", stack=c.project, container=c.ref
    )


def place(c: Container, settings: DockerSettings) -> Placement:
    """One container's names and target, or why it has none."""
    labels = c.labels
    if labels.get(LABEL_ENABLE, "").strip().lower() in ("false", "no", "0", "off"):
        return Placement(c, reason=f"opted out (label {LABEL_ENABLE}=false)", deliberate=True)
    if settings.only_labelled and not any(k.startswith(LABEL_PREFIX) for k in labels):
        return Placement(
            c,
            reason=f"has no {LABEL_PREFIX}* label, and docker.only_labelled is on in the config",
            deliberate=True,
        )
    names, why = names_of(c)
    if why is not None:
        return Placement(c, reason=why)
    if c.state == "paused":
        return Placement(c, names, reason="is paused")
    target = target_of(c, settings)
    if target.upstream is None:
        return Placement(c, names, reason=target.reason, deliberate=target.deliberate)
    return Placement(c, names, target.upstream, note=target.note)


def names_of(c: Container) -> tuple[tuple[str, ...], str | None]:
    """The container's names, or ((), why it has none)."""
    label = c.labels.get(LABEL_NAME)
    if label is not None:
        names: list[str] = []
        for raw in label.split(","):
            name = normalize_name(raw)
            if not name:
                continue
            if not NAME_RE.match(name):
                return (), (
                    f"has the label {LABEL_NAME}={label!r}, and {raw.strip()!r} is not a name "
                    "(DNS labels: letters, digits and hyphens, separated by dots)"
                )
            if _reserved(name):
                return (), f"asks for '{name}' (label {LABEL_NAME}), devrouter's own name"
            if name not in names:
                names.append(name)
        if not names:
            return (), f"has an empty label {LABEL_NAME}"
        return tuple(names), None
    project, service = c.project, c.service
    if project and service:
        if c.oneoff:
            return (), (
                f"is a one-off `compose run` container (give it a {LABEL_NAME} label to name it)"
            )
        svc, proj = to_label(service), _dotted(project)
        if not svc or not proj:
            return (), f"has Compose names ({service!r}, {project!r}) that make no DNS name"
        if c.number > 1:
            svc = f"{svc}-{c.number}"
        name = f"{svc}.{proj}"
    else:
        name = _dotted(c.name)
        if not name:
            return (), f"has a name that makes no DNS name; give it a {LABEL_NAME} label"
    if _reserved(name):
        return (), f"is named like devrouter's own pages ({name}); give it a {LABEL_NAME} label"
    return (name,), None


def _reserved(name: str) -> bool:
    """`devrouter` and `*.devrouter` are the router's own (as in the config and `run`)."""
    return name in RESERVED_NAMES or name.split(".")[-1] in RESERVED_NAMES


def _dotted(text: str) -> str:
    """`My_Project.v2` -> `my-project.v2`: each dot-separated part as one DNS label."""
    labels = [to_label(part) for part in text.split(".")]
    return ".".join(labels) if all(labels) else ""


class Target(NamedTuple):
    """Where a container's route goes, or why it has none (`deliberate`: the container is
    meant to have none, as a database publishing only its own port)."""

    upstream: Upstream | None
    reason: str | None = None
    note: str | None = None
    deliberate: bool = False


def target_of(c: Container, settings: DockerSettings) -> Target:
    """The container's target: its HTTP port as published, or the reason there is none."""
    wanted_text = c.labels.get(LABEL_PORT, "").strip()
    wanted: int | None = None
    if wanted_text:
        if not digits(wanted_text) or not 1 <= int(wanted_text) <= 65535:
            return Target(None, f"has the label {LABEL_PORT}={wanted_text!r}, not a port number")
        wanted = int(wanted_text)
    published = [p for p in c.ports if p.public is not None and p.protocol == "tcp"]
    reachable = [p for p in published if p.ip in _V4 or p.ip in _V6]
    if wanted is not None:
        mine = [p for p in reachable if p.private == wanted]
        if mine:
            return Target(_upstream(mine))
        inside = _inside(c, wanted, settings)
        if inside is not None:
            return Target(
                inside, note=f"reached at its own address (port {wanted} is not published)"
            )
        return Target(
            None,
            f"does not publish port {wanted}, which its label {LABEL_PORT} names (publish it: "
            f"`-p 127.0.0.1::{wanted}`)",
        )
    if not reachable:
        exposed = sorted({p.private for p in c.ports if p.protocol == "tcp"})
        inside = _inside(c, exposed[0], settings) if len(exposed) == 1 else None
        if inside is not None:
            return Target(inside, note="reached at its own address (it publishes no port)")
        if settings.container_addresses and c.addresses and len(exposed) != 1:
            return Target(
                None,
                f"publishes no port and exposes {len(exposed) or 'no'} ports; set the label "
                f"{LABEL_PORT} to say which to reach at its own address",
            )
        if published:
            where = ", ".join(sorted({f"{p.ip}:{p.public}" for p in published}))
            return Target(
                None,
                f"publishes its ports only on {where}, not on a loopback or wildcard address; "
                "publish on 127.0.0.1",
            )
        return Target(
            None,
            "publishes no port; publish its HTTP port (`-p 127.0.0.1::80`, or `ports: "
            '["127.0.0.1::80"]` in Compose)' + _address_hint(c, settings),
        )
    by_port = sorted({p.private for p in reachable})
    http = [port for port in by_port if port not in NOT_HTTP]
    if not http:
        what = ", ".join(f"{port} ({NOT_HTTP[port]})" for port in by_port)
        return Target(
            None,
            f"publishes only {what}, not HTTP; set the label {LABEL_PORT} to route it anyway",
            deliberate=True,
        )
    chosen = next((port for port in PREFERRED_PORTS if port in http), http[0])
    note = None
    if len(by_port) > 1:
        note = (
            f"publishes {', '.join(str(p) for p in by_port)}; using {chosen} (the label "
            f"{LABEL_PORT} chooses)"
        )
    return Target(_upstream([p for p in reachable if p.private == chosen]), note=note)


def _upstream(ports: Sequence[PublishedPort]) -> Upstream:
    """The host port on 127.0.0.1, ::1 or both, as the container port is published."""
    v4 = sorted({p.public for p in ports if p.ip in _V4 and p.public is not None})
    v6 = sorted({p.public for p in ports if p.ip in _V6 and p.public is not None})
    if v4 and v6 and v4[0] == v6[0]:
        return Upstream(v4[0], ("127.0.0.1", "::1"))
    if v4:
        return Upstream(v4[0], ("127.0.0.1",))
    return Upstream(v6[0], ("::1",))


def _inside(c: Container, port: int, settings: DockerSettings) -> Upstream | None:
    if not settings.container_addresses or not c.addresses:
        return None
    return Upstream(port, (c.addresses[0],))


def _address_hint(c: Container, settings: DockerSettings) -> str:
    if settings.container_addresses or not c.addresses:
        return ""
    return "; on Linux, `docker: {container_addresses: true}` reaches it at its own address"
