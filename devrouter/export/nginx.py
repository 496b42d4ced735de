"""The plan as nginx configuration: `map`, `upstream` and `server` blocks for one file
included inside an `http {}` block.

How devrouter's behaviour maps (docs/export.md has the table):
- A name is a `server` with `server_name` (nginx's `*.shop.D` matches any depth below
  shop.D and not shop.D itself, and an exact name beats it: devrouter's own precedence).
  The file's first server answers names with no route with a 404, as devrouter does; nginx
  sends unknown names to the first server of a port unless another says `default_server`.
- A backend is an `upstream` with keepalive; a bare port's ::1 is a `backup` server, tried
  when 127.0.0.1 fails to connect (`proxy_next_upstream error`).
- A path prefix `/api` is `location = /api` and `location /api/` (whole segments; nginx picks
  the longest prefix location), so `/apiary` stays with the name's own backend.
- Streams: `proxy_buffering off` (an SSE event is sent on when it arrives),
  `proxy_request_buffering off` and `client_max_body_size 0` (uploads of any size, streamed),
  WebSocket upgrades through the `$devrouter_connection` map.
- The timeout is `proxy_read_timeout`: nginx has no timeout for the response head alone, so
  it also ends a stream that is silent for that long (a gap).
- The forwarding fields devrouter sets are set, and those a client sent are not relayed.
"""

from __future__ import annotations

from .plan import Backend, ExportPlan, Gap, SitePlan, duration, hostport
from .text import Rendered, access_gap, header

INDENT = "    "
#: Idle keep-alive connections to each backend, per worker.
KEEPALIVE_CONNECTIONS = 16
#: Request fields a client may send that devrouter never relays (devrouter.http1.policy):
#: only the router sets forwarding fields; the token is the router's credential.
CLEARED_FIELDS = (
    "X-Real-IP",
    "X-Forwarded-Prefix",
    "X-Forwarded-Server",
    "X-Forwarded-Ssl",
    "X-Forwarded-Scheme",
    "X-Devrouter-Token",
)


def render(plan: ExportPlan) -> Rendered:
    gaps = [*plan.gaps, *_gaps(plan)]
    notes = [
        "Include it inside the http {} block of nginx.conf:",
        "    http { ... include /etc/nginx/conf.d/devrouter.conf; }",
        "then: nginx -t && nginx -s reload",
    ]
    out = [header("nginx configuration", plan, gaps, notes)]
    out.append(
        "# WebSocket: Upgrade goes through; other requests keep the upstream connection alive.\n"
        "map $http_upgrade $devrouter_connection {\n"
        f"{INDENT}default upgrade;\n"
        f"{INDENT}'' '';\n"
        "}\n\n"
        "# Forwarded (RFC 7239): an IPv6 client address is quoted and bracketed.\n"
        "map $remote_addr $devrouter_forwarded_for {\n"
        f'{INDENT}"~:" "\\"[$remote_addr]\\"";\n'
        f"{INDENT}default $remote_addr;\n"
        "}\n\n"
        "# Requests in flight to one name (devrouter's max_connections per route).\n"
        "limit_conn_zone $server_name zone=devrouter_routes:1m;\n\n"
    )
    for backend in plan.backends:
        out.append(_upstream(backend))
    out.append(_default_server(plan))
    for site in plan.sites:
        out.append(_server(plan, site))
    return Rendered("".join(out), tuple(gaps))


def _gaps(plan: ExportPlan) -> list[Gap]:
    gaps = [
        Gap(
            None,
            "timeouts: nginx's proxy_read_timeout is the route's timeout, and it also closes "
            "a response (an SSE stream, a WebSocket) silent for that long; devrouter's "
            "timeout only bounds the wait for the response head",
        )
    ]
    for site in plan.sites:
        if site.access is not None:
            gaps.append(
                access_gap(
                    site.name,
                    site.access.where,
                    f"create {_htpasswd(site)} (next to nginx.conf) with "
                    "`htpasswd -B -c FILE devrouter`",
                )
            )
        for p in site.paths:
            if "%" in p.prefix:
                gaps.append(
                    Gap(
                        site.name,
                        f"path prefix {p.prefix}: nginx matches locations against the decoded "
                        "path, so a percent-encoded prefix does not match as in devrouter",
                    )
                )
    if plan.max_connections_set:
        gaps.append(
            Gap(
                None,
                f"max_connections ({plan.max_connections}, router-wide) is nginx's "
                "worker_connections, set outside this file; per-name limits are limit_conn",
            )
        )
    if plan.max_websocket_message_set:
        gaps.append(
            Gap(None, "max_websocket_message_mib: nginx relays WebSocket frames without a limit")
        )
    return gaps


def upstream_name(backend: Backend) -> str:
    return "devrouter_" + backend.slug.replace("-", "_")


def _upstream(backend: Backend) -> str:
    lines = [f"upstream {upstream_name(backend)} {{"]
    for i, address in enumerate(backend.addresses):
        lines.append(f"{INDENT}server {address}{' backup' if i else ''};")
    lines.append(f"{INDENT}keepalive {KEEPALIVE_CONNECTIONS};")
    return "\n".join(lines) + "\n}\n\n"


def _listen(plan: ExportPlan) -> str:
    bind = plan.options.bind
    port = plan.options.port
    return f"listen {hostport(bind, port) if bind else port};"


def _default_server(plan: ExportPlan) -> str:
    return (
        "# Names with no route: the first server of a port is nginx's default for it.\n"
        "server {\n"
        f"{INDENT}{_listen(plan)}\n"
        f"{INDENT}server_name _;\n"
        f'{INDENT}return 404 "no route for this name\\n";\n'
        "}\n\n"
    )


def _server(plan: ExportPlan, site: SitePlan) -> str:
    i = INDENT
    lines = [f"# {site.name}", "server {", f"{i}{_listen(plan)}", f"{i}server_name {site.host};"]
    lines += [
        f"{i}client_max_body_size 0;",
        f"{i}limit_conn devrouter_routes {site.max_connections};",
        f"{i}limit_conn_status 503;",
        f"{i}proxy_http_version 1.1;",
        f"{i}proxy_buffering off;",
        f"{i}proxy_request_buffering off;",
        f"{i}proxy_read_timeout {duration(site.timeout_s)};",
        f"{i}proxy_next_upstream error;",
        f"{i}proxy_set_header Host $http_host;",
        f"{i}proxy_set_header Connection $devrouter_connection;",
        f"{i}proxy_set_header Upgrade $http_upgrade;",
        f"{i}proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;",
        f"{i}proxy_set_header X-Forwarded-Proto $scheme;",
        f"{i}proxy_set_header X-Forwarded-Host $http_host;",
        f"{i}proxy_set_header X-Forwarded-Port $server_port;",
        f'{i}proxy_set_header Forwarded "for=$devrouter_forwarded_for;host=\\"$http_host\\";'
        'proto=$scheme";',
        *(f'{i}proxy_set_header {name} "";' for name in CLEARED_FIELDS),
    ]
    if site.access is not None:
        lines += [
            f'{i}auth_basic "{site.slug}";',
            f"{i}auth_basic_user_file {_htpasswd(site)};",
            f"{i}proxy_set_header Authorization \"\";  # the router's credential, not the app's",
        ]
    for spec, backend in _locations(site):
        lines.append(f"{i}location {spec} {{")
        lines.append(f"{i}{i}proxy_pass http://{upstream_name(backend)};")
        lines.append(f"{i}}}")
    return "\n".join(lines) + "\n}\n\n"


def _htpasswd(site: SitePlan) -> str:
    return f"htpasswd/devrouter-{site.slug}"


def _locations(site: SitePlan) -> list[tuple[str, Backend]]:
    """`location` specs and their backends. A prefix takes `= /p` and `/p/` (or only `/p/`
    when it ends in a slash); the longest prefix claims a spec first. Then `= /p` of a
    slash-ended prefix goes to the name's own backend (nginx would otherwise answer /p with
    a redirect to /p/), and so does `/` unless a prefix `/` took it."""
    claimed: dict[str, Backend] = {}
    fillers: list[str] = []
    for p in site.paths:  # longest first
        if p.segment:
            specs = [f'= "{p.prefix}"', f'"{p.prefix}/"']
        else:
            specs = [f'"{p.prefix}"']
            if p.prefix != "/":
                fillers.append(f'= "{p.prefix[:-1]}"')
        for spec in specs:
            claimed.setdefault(spec, p.backend)
    for spec in fillers:
        claimed.setdefault(spec, site.backend)
    claimed.setdefault('"/"', site.backend)
    return sorted(claimed.items(), key=lambda item: item[0].lstrip("= "))
