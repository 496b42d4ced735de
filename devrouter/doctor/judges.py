"""The verdicts on the router, the config, each route and the port-assignment range. Pure:
observations in, a `Check` out, testable without sockets (the resolver's verdict is in
`resolver`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.model import Config
from ..services.locate import Located
from .facts import CONNECT_TIMEOUT_S, HTTP_TIMEOUT_S, PORT_RANGE_ENV, Reach, RouterProbe
from .listeners import Listener, hostport
from .report import Check, Status
from .targets import RouteTarget

#: At most this many ports of the assignment range are named one by one.
MAX_PORTS_LISTED = 5


# --- router --------------------------------------------------------------------------------


def judge_router(
    probe: RouterProbe,
    holders: Sequence[Listener],
    found: Located | None = None,
    my_uid: int | None = None,
) -> Check:
    """Is devrouter running on the port, or is something else there? `found` says how the
    port was chosen (devrouter.services.locate); a devrouter found otherwise than through this state
    directory's control socket is not called ours. Without `found`, any devrouter is."""
    port = probe.port
    owners = _owners(holders)
    ours = found is None or found.ours
    data: dict[str, Any] = {
        "port": port,
        "running": probe.is_devrouter,
        "ours": False,
        "found_by": found.how if found else None,
        "answered_on": probe.answered,
        "version": None,
        "listen": [],
        "listeners": [x.to_json() for x in holders],
    }
    how = f" ({found.how}{'; ' + found.note if found.note else ''})" if found else ""
    other_port = (
        "stop it, or run devrouter on another port (devrouter serve --listen "
        "127.0.0.1:PORT) and pass --port PORT to doctor"
    )
    if probe.answered is None:
        where = _listening_elsewhere(holders)
        msg = f"no router is running on port {port} (nothing answers on 127.0.0.1 or ::1){how}"
        if where:
            msg = f"no router answers on loopback port {port}; {where}{how}"
        return Check(
            "router",
            "fail",
            msg,
            "start it with 'devrouter serve' (it reads ./devrouter.yaml), or pass --port if "
            "it runs on another port",
            data,
        )
    held = f" ({owners})" if owners else ""
    if probe.is_devrouter and not ours:
        return _not_ours(probe, holders, data, how, my_uid)
    data["ours"] = probe.is_devrouter
    if probe.status is not None:
        status = probe.status
        version = status.get("version")
        listen = status.get("listen")
        listen_list = [str(a) for a in listen] if isinstance(listen, list) else []
        data.update(version=version, listen=listen_list)
        on = f" ({', '.join(listen_list)})" if listen_list else ""
        pid = f", {owners}" if owners else ""
        return Check(
            "router",
            "ok",
            f"devrouter {version or '(unknown version)'} is running on port {port}{on}{pid}"
            f"{', ' + found.how if found else ''}",
            None,
            data,
        )
    if probe.locked:
        data["running"] = True
        from_socket = found is not None and found.routes is not None
        table = "read through its control socket" if from_socket else "taken from the config file"
        return Check(
            "router",
            "warn",
            f"devrouter is running on port {port}{held} but requires a secret (access: in its "
            f"config) that doctor could not read here; its routes are {table}",
            "run doctor where the secret is readable (the same environment variable, or the "
            "secret file as its owner)",
            data,
        )
    devrouter_there = probe.is_devrouter or any(_is_devrouter(x.process) for x in holders)
    if probe.error == "timeout":
        who = "devrouter" if devrouter_there else "something else"
        return Check(
            "router",
            "fail",
            f"{who} is listening on port {port} but does not answer HTTP within "
            f"{HTTP_TIMEOUT_S:g} s: {owners or 'process unknown'}",
            "restart it" if devrouter_there else other_port,
            data,
        )
    if devrouter_there:
        data["running"] = True
        return Check(
            "router",
            "warn",
            f"devrouter answers on port {port}{held} but has no /api/status (an older "
            "version?); its routes are taken from the config file",
            "restart it with this version of devrouter",
            data,
        )
    answer = f"HTTP {probe.http_status}" if probe.http_status else "not HTTP"
    return Check(
        "router",
        "fail",
        f"something else is listening on port {port} ({answer} for /api/status): "
        f"{owners or 'process unknown'}{how}",
        other_port,
        data,
    )


def _not_ours(
    probe: RouterProbe,
    holders: Sequence[Listener],
    data: dict[str, Any],
    how: str,
    my_uid: int | None,
) -> Check:
    """A devrouter answers on the port, but not the one behind this state directory's
    control socket: `run`, `alias` and `ls` do not reach it."""
    port = probe.port
    version = (probe.status or {}).get("version")
    data.update(running=True, version=version)
    theirs = sorted({x.uid for x in holders if my_uid is not None and x.uid != my_uid})
    owners = _owners(holders)
    if theirs:
        return Check(
            "router",
            "fail",
            f"the devrouter on port {port} belongs to another user (uid {theirs[0]}: "
            f"{owners}){how}: *.localhost:{port} reaches their routes, not yours",
            "run yours on another port (devrouter serve --listen 127.0.0.1:PORT, or "
            "DEVROUTER_LISTEN for `devrouter run`) and use that port",
            data,
        )
    held = f" ({owners})" if owners else ""
    return Check(
        "router",
        "warn",
        f"devrouter {version or ''}{' ' if version else ''}answers on port {port}{held}, but "
        f"it is not the router of this state directory{how}: `devrouter run`, `alias` and "
        "`ls` do not reach it",
        "run doctor with the DEVROUTER_HOME that router was started with, or stop it and "
        "start yours with 'devrouter serve'",
        data,
    )


def _is_devrouter(cmdline: str | None) -> bool:
    """`devrouter serve`, `/path/to/devrouter ...` or `python -m devrouter ...`."""
    return any(Path(w).name == "devrouter" for w in (cmdline or "").split())


def _owners(listeners: Iterable[Listener]) -> str:
    seen: list[str] = []
    for x in listeners:
        if x.owner not in seen:
            seen.append(x.owner)
    return "; ".join(seen)


def _listening_elsewhere(listeners: Sequence[Listener]) -> str:
    others = [x for x in listeners if not x.loopback and not x.wildcard]
    if not others:
        return ""
    where = ", ".join(x.where for x in others)
    return f"it is held on {where} only ({_owners(others)})"


# --- config --------------------------------------------------------------------------------


def judge_config(
    path: Path | None,
    config: Config | None,
    error: ConfigError | None,
    router_error: str | None,
    router_notes: Sequence[str] = (),
) -> list[Check]:
    """The config file's verdict; the running router's own config error if it differs, and
    its warnings and route clashes (`router_notes`)."""
    checks: list[Check] = []
    fix = (
        "correct the line named and save: a running router reloads the file by itself and "
        "keeps its last good routes meanwhile ('devrouter check' validates without it)"
    )
    if path is None:
        checks.append(
            Check(
                "config",
                "info",
                "no config file found (looked for $DEVROUTER_CONFIG, ./devrouter.yaml and "
                "~/.config/devrouter/config.yaml)",
                None,
                {"path": None},
            )
        )
    elif error is not None:
        checks.append(Check("config", "fail", str(error), fix, {"path": str(path)}))
    elif config is not None:
        n = len(config.routes)
        checks.append(
            Check(
                "config",
                "ok",
                f"config {path}: valid, {n} route{'s' if n != 1 else ''}",
                None,
                {"path": str(path), "routes": n},
            )
        )
    for text in router_notes:
        checks.append(
            Check(
                "config",
                "warn",
                f"the running router reports: {text}",
                "rename one of the two routes" if "clashes" in text else "see the message",
                {"path": str(path) if path else None, "from_router": True},
            )
        )
    if router_error and (error is None or str(error) != router_error):
        checks.append(
            Check(
                "config",
                "fail",
                f"the running router reports: {router_error} (it keeps its last good routes)",
                fix,
                {"path": str(path) if path else None, "from_router": True},
            )
        )
    return checks


# --- routes --------------------------------------------------------------------------------


def judge_route(
    target: RouteTarget, reach: Mapping[str, Reach], listeners: Sequence[Listener] | None
) -> Check:
    """Is the route's service listening where the router looks for it?

    `reach` has a connect result for each of the route's hosts and for 127.0.0.1 and ::1;
    `listeners` are the LISTEN sockets on the port (None when /proc is not available).
    """
    port = target.port
    holders = list(listeners or ())
    data: dict[str, Any] = {
        "route": target.name,
        "label": target.label,
        "port": port,
        "targets": list(target.hosts),
        "reachable": dict(reach),
        "listeners": [x.to_json() for x in holders],
    }
    owners = _owners(holders)
    who = f" ({owners})" if owners else ""
    wanted = " or ".join(hostport(h, port) for h in target.hosts)
    head = f"{target.label} -> {wanted}"
    open_hosts = [h for h in target.hosts if reach.get(h) == "open"]
    if open_hosts:
        where = " and ".join(hostport(h, port) for h in open_hosts)
        note = ""
        if open_hosts == ["::1"] and reach.get("127.0.0.1") != "open":
            note = " (the router tries ::1 after 127.0.0.1 refuses, so this works)"
        if any(x.wildcard for x in holders):
            exposed = ", ".join(x.where for x in holders if x.wildcard)
            note += f"; it listens on {exposed}, so your network can reach it too"
        only = " only" if open_hosts[0] != target.hosts[0] else ""
        return Check("route", "ok", f"{head}: listening on {where}{only}{who}{note}", None, data)
    hung = [h for h in target.hosts if reach.get(h) == "timeout"]
    if hung:
        return Check(
            "route",
            "fail",
            f"{head}: {hostport(hung[0], port)} accepts no connection within "
            f"{CONNECT_TIMEOUT_S:g} s (a hung process, or its backlog is full){who}",
            "restart the service",
            data,
        )
    other = [h for h in ("127.0.0.1", "::1") if h not in target.hosts and reach.get(h) == "open"]
    if other:
        return Check(
            "route",
            "fail",
            f"{head}: nothing listens there, but the service listens on "
            f"{hostport(other[0], port)}{who}",
            f"give the route the bare port {port} instead of an address (then 127.0.0.1 and "
            "::1 are both tried), or make the service listen on the address the route names",
            data,
        )
    elsewhere = [x for x in holders if not x.loopback and not x.wildcard]
    if elsewhere:
        return Check(
            "route",
            "fail",
            f"{head}: nothing listens on loopback; the service listens on "
            f"{', '.join(x.where for x in elsewhere)} only{who}",
            "make the service listen on 127.0.0.1 (e.g. --host 127.0.0.1); devrouter only "
            "forwards to loopback addresses",
            data,
        )
    if any(x.wildcard for x in holders):
        return Check(
            "route",
            "fail",
            f"{head}: refused, although {', '.join(x.where for x in holders)} is listening"
            f"{who} (a firewall rule on loopback?)",
            "check the firewall rules for the loopback interface",
            data,
        )
    others = [p for p in target.listens_on if p != port]
    if others and target.source in ("run", "stack"):
        data["listens_on"] = others
        ports = ", ".join(str(p) for p in others)
        return Check(
            "route",
            "fail",
            f"{head}: nothing is listening; {target.name} listens on {ports}, not on its "
            f"$PORT {port}",
            "pass --port $PORT (or read PORT from the environment) in the command, e.g. "
            f"devrouter run {target.name} -- CMD --port '$PORT'",
            data,
        )
    return Check(
        "route",
        "fail",
        f"{head}: nothing is listening",
        f"start the service on port {port}, or point the route at the port the service "
        "prints when it starts",
        data,
    )


# --- port-assignment range -----------------------------------------------------------------


def judge_port_range(
    span: tuple[int, int] | None, listeners: Sequence[Listener] | None, ours: Iterable[int]
) -> Check:
    """Ports in the assignment range held by processes that are not routes or the router."""
    if span is None:
        return Check(
            "ports",
            "info",
            "no port-assignment range is configured (devrouter run is not set up); "
            "skipped the check for ports taken by others",
            None,
            {"range": None},
        )
    lo, hi = span
    data: dict[str, Any] = {"range": [lo, hi], "taken": []}
    if listeners is None:
        return Check(
            "ports", "info", f"cannot read /proc/net/tcp; skipped the range {lo}-{hi}", None, data
        )
    mine = set(ours)
    by_port: dict[int, list[Listener]] = {}
    for x in listeners:
        if lo <= x.port <= hi and x.port not in mine:
            by_port.setdefault(x.port, []).append(x)
    data["taken"] = [
        {"port": p, "listeners": [x.to_json() for x in xs]} for p, xs in sorted(by_port.items())
    ]
    if not by_port:
        return Check("ports", "ok", f"no other process holds a port in {lo}-{hi}", None, data)
    size = hi - lo + 1
    named = [f"{p} ({_owners(xs)})" for p, xs in sorted(by_port.items())[:MAX_PORTS_LISTED]]
    more = f" and {len(by_port) - MAX_PORTS_LISTED} more" if len(by_port) > MAX_PORTS_LISTED else ""
    status: Status = "fail" if len(by_port) >= size else "warn"
    return Check(
        "ports",
        status,
        f"{len(by_port)} of {size} ports in the assignment range {lo}-{hi} are held by other "
        f"processes, so devrouter run skips them: {', '.join(named)}{more}",
        f"stop those processes if a service should keep its port, or set another range "
        f"(${PORT_RANGE_ENV})",
        data,
    )
