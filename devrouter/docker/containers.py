"""The Docker Engine's JSON as records: one `Container` per item of `GET /containers/json`.

Sans-IO: the Engine client (devrouter.docker.engine) hands the decoded JSON here. The Engine
is another program, so nothing in its answer is trusted to have a shape: a field that is
missing or of the wrong type reads as absent, and an item without an id is skipped.

Fields used (Engine API v1.24 and later, Podman's Docker-compatible API too): Id, Names,
Image, State, Status, Labels, Ports, NetworkSettings.Networks.*.IPAddress.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..core.model import ContainerRef
from ..core.numbers import digits

#: Compose's labels (Compose v1 and v2 alike), and the one that marks `compose run` containers.
COMPOSE_PROJECT = "com.docker.compose.project"
COMPOSE_SERVICE = "com.docker.compose.service"
COMPOSE_NUMBER = "com.docker.compose.container-number"
COMPOSE_ONEOFF = "com.docker.compose.oneoff"

_HEALTH_RE = re.compile(r"\((healthy|unhealthy|health: starting)\)")


@dataclass(frozen=True, slots=True)
class PublishedPort:
    """One line of `docker port`: container port `private` reachable on the host at
    `ip`:`public`. `public` is None for a port the image exposes but nobody published."""

    private: int
    public: int | None
    ip: str  # "0.0.0.0", "::", "127.0.0.1" ... or "" when not published
    protocol: str = "tcp"


@dataclass(frozen=True, slots=True)
class Container:
    id: str
    name: str  # without Docker's leading "/"
    image: str
    state: str  # "running", "exited", "paused", "restarting" ...
    labels: Mapping[str, str] = field(default_factory=dict)
    ports: tuple[PublishedPort, ...] = ()
    addresses: tuple[str, ...] = ()  # its IPv4 address on each network it is attached to
    health: str | None = None  # Docker's healthcheck: "healthy", "unhealthy", "starting"
    created: int = 0  # seconds since the epoch

    @property
    def ref(self) -> ContainerRef:
        """What a route keeps of this container."""
        return ContainerRef(self.id, self.name, self.image, self.project, self.service, self.health)

    @property
    def project(self) -> str | None:
        return self.labels.get(COMPOSE_PROJECT) or None

    @property
    def service(self) -> str | None:
        return self.labels.get(COMPOSE_SERVICE) or None

    @property
    def number(self) -> int:
        """Compose's container number within its service (1 for the first), else 1."""
        text = self.labels.get(COMPOSE_NUMBER, "")
        return int(text) if digits(text) else 1

    @property
    def oneoff(self) -> bool:
        return self.labels.get(COMPOSE_ONEOFF, "").lower() == "true"


def containers_from_list(items: object) -> list[Container]:
    """Every well-formed item of a `GET /containers/json` answer."""
    if not isinstance(items, list):
        return []
    out = []
    for item in items:
        container = container_from_item(item)
        if container is not None:
            out.append(container)
    return out


def container_from_item(item: object) -> Container | None:
    if not isinstance(item, Mapping):
        return None
    cid = _text(item.get("Id"))
    if not cid:
        return None
    names = item.get("Names")
    # A linked container lists "/other/alias" names too; its own name has one slash.
    own = (
        [n for n in names if isinstance(n, str) and n.count("/") == 1]
        if isinstance(names, list)
        else []
    )
    name = own[0].lstrip("/") if own else cid[:12]
    labels_raw = item.get("Labels")
    labels = (
        {str(k): str(v) for k, v in labels_raw.items() if isinstance(v, str)}
        if isinstance(labels_raw, Mapping)
        else {}
    )
    health = _HEALTH_RE.search(_text(item.get("Status")))
    return Container(
        id=cid,
        name=name,
        image=_text(item.get("Image")),
        state=_text(item.get("State")).lower(),
        labels=labels,
        ports=tuple(_ports(item.get("Ports"))),
        addresses=tuple(_addresses(item.get("NetworkSettings"))),
        health=health.group(1).replace("health: ", "") if health else None,
        created=_port(item.get("Created"), 2**62) or 0,
    )


def _ports(raw: object) -> list[PublishedPort]:
    out: list[PublishedPort] = []
    for p in raw if isinstance(raw, list) else ():
        if not isinstance(p, Mapping):
            continue
        private = _port(p.get("PrivatePort"))
        if private is None:
            continue
        port = PublishedPort(
            private, _port(p.get("PublicPort")), _text(p.get("IP")), _text(p.get("Type")) or "tcp"
        )
        if port not in out:
            out.append(port)
    return out


def _addresses(raw: object) -> list[str]:
    networks = raw.get("Networks") if isinstance(raw, Mapping) else None
    out: list[str] = []
    for net in networks.values() if isinstance(networks, Mapping) else ():
        ip = _text(net.get("IPAddress")) if isinstance(net, Mapping) else ""
        if ip and ip not in out:
            out.append(ip)
    return out


def _port(value: object, top: int = 65535) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value <= top:
        return value
    return None


def _text(value: object) -> str:
    return value if isinstance(value, str) else ""


def event_matters(event: Mapping[str, Any]) -> bool:
    """Whether an `/events` message can change the route table: a container's life-cycle,
    its name, or its health. Exec and attach events (every `docker exec` and healthcheck run
    sends some) do not."""
    if event.get("Type", "container") != "container":
        return False
    action = _text(event.get("Action") or event.get("status"))
    verb = action.split(":", 1)[0].strip()
    return verb in _ACTIONS


_ACTIONS = frozenset(
    {
        "create",
        "start",
        "restart",
        "stop",
        "die",
        "kill",
        "destroy",
        "pause",
        "unpause",
        "rename",
        "update",
        "health_status",
        "oom",
    }
)
