"""The peer proxies of a run: nginx, HAProxy, Caddy and portless, each found installed.

Each `start_*` writes its config into the run's temporary directory, starts the process
through the Supervisor, waits for its ports, and returns a `Tool`. Every server listens on
127.0.0.1 only.

The configs are the plain, documented way to run each proxy, with only what a fair
comparison needs: one worker or thread where the proxy has the choice (nginx, HAProxy),
keep-alive to the backends, bodies streamed rather than buffered to disk (nginx's
`proxy_request_buffering off`), WebSocket upgrades passed, no access logs.

TLS: when devrouter's CA gave a certificate (`servers.CertFiles`: the leaf devrouter itself
serves for fast.localhost, ECDSA P-256, issued by its local CA), each peer also answers TLS
with HTTP/2 and HTTP/1.1 by ALPN for the fast backend, on a second port of the same process
(devrouter answers both on one port), so every tool serves the same certificate.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

from .backend import SMALL_BODY
from .procs import LOOPBACK, StartError, free_port, wait_port
from .servers import (
    APP_NAME,
    FAST_NAME,
    Stage,
    Target,
    Tool,
    nginx_common,
    targets,
)


def _tls_target(port: int) -> Target:
    return Target(port, f"{FAST_NAME}.localhost:{port}")


def _nginx_http2_on(version: str) -> bool:
    """nginx 1.25.1 replaced `listen ... http2` with the `http2 on` directive."""
    try:
        major, minor, patch = (int(x) for x in version.split(".")[:3])
    except ValueError:
        return False
    return (major, minor, patch) >= (1, 25, 1)


def start_nginx_proxy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    nginx, version = st.found.paths["nginx"], st.versions["nginx"]
    port = free_port()
    tls_port = free_port() if st.cert else 0
    tls_server = ""
    if st.cert:
        new_syntax = _nginx_http2_on(version)
        tls_server = f"""
  server {{
    listen {LOOPBACK}:{tls_port} ssl{"" if new_syntax else " http2"} backlog=1024;
    {"http2 on;" if new_syntax else ""}
    server_name {FAST_NAME}.localhost;
    ssl_certificate {st.cert.cert};
    ssl_certificate_key {st.cert.key};
    ssl_protocols TLSv1.2 TLSv1.3;
    location / {{ proxy_pass http://{FAST_NAME}; }}
  }}"""
    conf = tmp / "nginx-proxy.conf"
    conf.write_text(
        nginx_common(tmp, "nginx-proxy")
        + f"""
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream {FAST_NAME} {{ server {LOOPBACK}:{fast_port}; keepalive 64;
                          keepalive_requests 100000000; }}
  upstream {APP_NAME} {{ server {LOOPBACK}:{app_port}; keepalive 64;
                         keepalive_requests 100000000; }}
  proxy_http_version 1.1;
  proxy_set_header Host $http_host;
  proxy_set_header Upgrade $http_upgrade;
  proxy_set_header Connection $connection_upgrade;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_request_buffering off;
  proxy_read_timeout 60s;
  server {{
    listen {LOOPBACK}:{port} backlog=1024;
    server_name {FAST_NAME}.localhost;
    location / {{ proxy_pass http://{FAST_NAME}; }}
  }}
  server {{
    listen {LOOPBACK}:{port};
    server_name {APP_NAME}.localhost;
    location / {{ proxy_pass http://{APP_NAME}; }}
  }}{tls_server}
}}
"""
    )
    proc = sup.start(
        "nginx-proxy",
        [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-proxy-error.log")],
    )
    wait_port(proc, port)
    notes = ["1 worker, upstream keepalive 64, proxy_request_buffering off"]
    if st.cert:
        wait_port(proc, tls_port)
        notes.append("TLS and HTTP/2 on a second port (ssl, http2)")
    fast, app = targets(port)
    tls = _tls_target(tls_port) if st.cert else None
    return Tool("nginx", "peer", version, fast, app, proc, notes, tls)


def start_haproxy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    haproxy, version = st.found.paths["haproxy"], st.versions["haproxy"]
    port = free_port()
    tls_port = free_port() if st.cert else 0
    tls_frontend = ""
    if st.cert:
        tls_frontend = f"""
frontend routes_tls
  bind {LOOPBACK}:{tls_port} ssl crt {st.cert.combined} alpn h2,http/1.1
  default_backend {FAST_NAME}
"""
    conf = tmp / "haproxy.cfg"
    conf.write_text(
        f"""global
  nbthread 1
  maxconn 4096

defaults
  mode http
  option http-keep-alive
  option forwardfor
  http-reuse always
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
  timeout http-keep-alive 60s

frontend routes
  bind {LOOPBACK}:{port}
  use_backend {APP_NAME} if {{ req.hdr(host),field(1,:) -m str -i {APP_NAME}.localhost }}
  default_backend {FAST_NAME}
{tls_frontend}
backend {FAST_NAME}
  server s1 {LOOPBACK}:{fast_port}

backend {APP_NAME}
  option http-no-delay
  server s1 {LOOPBACK}:{app_port}
"""
    )
    proc = sup.start("haproxy", [haproxy, "-db", "-f", str(conf)])
    wait_port(proc, port)
    notes = ["nbthread 1, http-reuse always, http-no-delay for the app backend (SSE)"]
    if st.cert:
        wait_port(proc, tls_port)
        notes.append("TLS frontend with alpn h2,http/1.1 on a second port")
    fast, app = targets(port)
    tls = _tls_target(tls_port) if st.cert else None
    return Tool("haproxy", "peer", version, fast, app, proc, notes, tls)


def start_caddy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    caddy, version = st.found.paths["caddy"], st.versions["caddy"]
    port = free_port()
    tls_port = free_port() if st.cert else 0
    home = tmp / "caddy-home"
    home.mkdir(exist_ok=True)
    tls_site = ""
    if st.cert:
        # `auto_https off` keeps Caddy from managing certificates (or binding :80); the site's
        # own `tls` files still serve HTTPS
        tls_site = f"""
https://{FAST_NAME}.localhost:{tls_port} {{
\ttls {st.cert.cert} {st.cert.key}
\treverse_proxy {LOOPBACK}:{fast_port}
}}
"""
    conf = tmp / "Caddyfile"
    conf.write_text(
        f"""{{
\tadmin off
\tauto_https off
\tdefault_bind {LOOPBACK}
\tservers {{
\t\tprotocols h1 h2
\t}}
}}

http://{FAST_NAME}.localhost:{port} {{
\treverse_proxy {LOOPBACK}:{fast_port}
}}

http://{APP_NAME}.localhost:{port} {{
\treverse_proxy {LOOPBACK}:{app_port}
}}
{tls_site}"""
    )
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
    }
    argv = [caddy, "run", "--config", str(conf), "--adapter", "caddyfile"]
    proc = sup.start("caddy", argv, env=env, cwd=tmp)
    wait_port(proc, port)
    notes = [f"reverse_proxy, GOMAXPROCS default ({os.cpu_count()}), protocols h1 h2"]
    if st.cert:
        wait_port(proc, tls_port)
        notes.append("TLS site with `tls CERT KEY` on a second port")
    fast, app = targets(port)
    tls = _tls_target(tls_port) if st.cert else None
    return Tool("caddy", "peer", version, fast, app, proc, notes, tls)


_PORTLESS_LAUNCHER = """// portless's own proxy server (createProxyServer of the installed package)
// with two static routes, listening on 127.0.0.1 only (its CLI listens on every
// interface); with a certificate, a second one with TLS (HTTP/2 and HTTP/1.1).
import {{ readFileSync }} from "node:fs";
import {{ createProxyServer }} from {module};
const routes = [
  {{ hostname: "{fast}.localhost", port: {fast_port} }},
  {{ hostname: "{app}.localhost", port: {app_port} }},
];
const server = createProxyServer({{ getRoutes: () => routes, proxyPort: {port} }});
server.listen({port}, "{loopback}", () => console.log("portless proxy ready on {port}"));
const cert = {cert};
if (cert) {{
  const tls = {{ cert: readFileSync(cert), key: readFileSync({key}) }};
  const secure = createProxyServer({{ getRoutes: () => routes, proxyPort: {tls_port}, tls }});
  secure.listen({tls_port}, "{loopback}", () => console.log("TLS ready on {tls_port}"));
}}
"""


def start_portless(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    pkg, node, version = st.found.paths["portless"], st.found.paths["node"], st.versions["portless"]
    port = free_port()
    tls_port = free_port() if st.cert else 0
    module = json.dumps((Path(pkg) / "dist" / "index.js").resolve().as_uri())
    script = tmp / "portless-proxy.mjs"
    script.write_text(
        _PORTLESS_LAUNCHER.format(
            module=module,
            fast=FAST_NAME,
            app=APP_NAME,
            fast_port=fast_port,
            app_port=app_port,
            port=port,
            tls_port=tls_port,
            loopback=LOOPBACK,
            cert=json.dumps(str(st.cert.cert) if st.cert else ""),
            key=json.dumps(str(st.cert.key) if st.cert else ""),
        )
    )
    proc = sup.start("portless", [node, str(script)], cwd=tmp)
    wait_port(proc, port)
    notes = ["createProxyServer() of the installed package, on 127.0.0.1"]
    if st.cert:
        wait_port(proc, tls_port)
        notes.append("a second createProxyServer({tls}) on another port (HTTP/2, HTTP/1.1)")
    fast, app = targets(port)
    tls = _tls_target(tls_port) if st.cert else None
    return Tool("portless", "peer", version, fast, app, proc, notes, tls)


PEER_STARTERS: dict[str, Callable[[Stage], Tool]] = {
    "nginx": start_nginx_proxy,
    "haproxy": start_haproxy,
    "caddy": start_caddy,
    "portless": start_portless,
}


def check(tool: Tool, ca_file: Path | None = None) -> None:
    """One request to each backend through the tool, and one over TLS when it answers TLS;
    raise StartError if it does not work."""
    import http.client
    import ssl

    from . import connect

    for target, path, size in ((tool.fast, "/small", len(SMALL_BODY)), (tool.app, "/slow", 0)):
        conn = http.client.HTTPConnection(LOOPBACK, target.port, timeout=10)
        try:
            conn.putrequest("GET", path, skip_host=True)
            conn.putheader("Host", target.host)
            conn.endheaders()
            resp = conn.getresponse()
            body = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            raise StartError(f"{tool.name}: GET {path} failed: {exc}") from None
        finally:
            conn.close()
        if resp.status != 200 or (size and len(body) != size):
            raise StartError(
                f"{tool.name}: GET {path} answered {resp.status} with {len(body)} bytes"
            )
    if tool.tls is None or ca_file is None:
        return
    try:
        ctx = connect.client_context(ca_file)
        connect.one(tool.tls.port, tool.tls.host, "/small", ctx)
        alpn = connect.handshake(tool.tls.port, tool.tls.host, ctx, ["h2", "http/1.1"])
    except (OSError, ssl.SSLError, connect.BadAnswer) as exc:
        raise StartError(f"{tool.name}: GET /small over TLS failed: {exc}") from None
    if alpn != "h2":
        tool.notes.append(f"TLS without HTTP/2 (ALPN chose {alpn})")
