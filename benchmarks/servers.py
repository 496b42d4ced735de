"""The servers of a run: the two backends, devrouter, and each peer proxy found installed.

Each `start_*` writes its config into the run's temporary directory, starts the process
through the Supervisor, waits for its port, and returns a `Tool`: where to send the "fast"
and the "app" requests (a loopback port and the Host header), and which process to sample
for CPU and memory. Every server listens on 127.0.0.1 only.

The configs are the plain, documented way to run each proxy, with only what a fair
comparison needs: one worker or thread where the proxy has the choice (nginx, HAProxy),
keep-alive to the backends, bodies streamed rather than buffered to disk (nginx's
`proxy_request_buffering off`), WebSocket upgrades passed, no access logs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .backend import LARGE_BODY, SMALL_BODY
from .procs import LOOPBACK, Proc, StartError, Supervisor, free_port, wait_port

FAST_NAME = "fast"
APP_NAME = "app"
PEERS = ("nginx", "haproxy", "caddy", "portless")


@dataclass(frozen=True, slots=True)
class Target:
    port: int
    host: str  # the Host header to send


@dataclass
class Tool:
    name: str
    kind: str  # "direct", "router" or "peer"
    version: str
    fast: Target
    app: Target
    proc: Proc | None  # sampled for CPU and memory; None for direct (the backend is)
    notes: list[str] = field(default_factory=list)


def run_text(argv: list[str], timeout_s: float = 20.0) -> str:
    """stdout+stderr of a short command, or '' if it cannot run."""
    try:
        p = subprocess.run(
            argv, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return (p.stdout + p.stderr).strip()


def first_line(text: str) -> str:
    return text.splitlines()[0].strip() if text else "unknown"


def nth_word(text: str, n: int) -> str:
    """Word `n` of the first line of a version banner, or 'unknown'."""
    words = first_line(text).split()
    return words[n] if len(words) > n else "unknown"


# --- discovery ---------------------------------------------------------------------------------


def find_portless(cwd: Path) -> Path | None:
    """The directory of an installed portless package (global or in ./node_modules), or None.

    Only looks on disk; nothing is downloaded or installed.
    """
    candidates: list[Path] = []
    exe = shutil.which("portless")
    if exe:
        real = Path(os.path.realpath(exe))
        candidates.extend(real.parents)
    candidates.append(cwd / "node_modules" / "portless")
    if shutil.which("npm"):
        root = run_text(["npm", "root", "-g"], timeout_s=15)
        if root and "\n" not in root:
            candidates.append(Path(root) / "portless")
    for c in candidates:
        pkg = c / "package.json"
        if (
            pkg.is_file()
            and '"name": "portless"' in pkg.read_text(errors="replace")
            and (c / "dist" / "index.js").is_file()
        ):
            return c
    return None


@dataclass
class Found:
    """Executables and packages found on this machine (after --without)."""

    paths: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)


def discover(without: set[str], cwd: Path) -> Found:
    found = Found()
    for name in ("wrk", "nginx", "haproxy", "caddy"):
        if name in without:
            found.missing[name] = "left out (--without)"
            continue
        path = shutil.which(name) or next(
            (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)),
            None,
        )
        if path:
            found.paths[name] = path
        else:
            found.missing[name] = "not installed"
    if "portless" in without:
        found.missing["portless"] = "left out (--without)"
    elif not shutil.which("node"):
        found.missing["portless"] = "node is not installed"
    else:
        pkg = find_portless(cwd)
        if pkg is None:
            found.missing["portless"] = "not installed (npm install -g portless)"
        else:
            found.paths["portless"] = str(pkg)
            found.paths["node"] = shutil.which("node") or "node"
    return found


def versions(found: Found) -> dict[str, str]:
    out: dict[str, str] = {}
    if "nginx" in found.paths:
        text = first_line(run_text([found.paths["nginx"], "-v"]))
        out["nginx"] = text.replace("nginx version: ", "").removeprefix("nginx/")
    if "haproxy" in found.paths:
        out["haproxy"] = nth_word(run_text([found.paths["haproxy"], "-v"]), 2)
    if "caddy" in found.paths:
        out["caddy"] = nth_word(run_text([found.paths["caddy"], "version"]), 0)
    if "wrk" in found.paths:
        out["wrk"] = nth_word(run_text([found.paths["wrk"], "-v"]), 1)
    if "portless" in found.paths:
        pkg = Path(found.paths["portless"]) / "package.json"
        out["portless"] = str(json.loads(pkg.read_text()).get("version", "unknown"))
        out["node"] = first_line(run_text([found.paths["node"], "--version"]))
    return out


# --- backends ----------------------------------------------------------------------------------


def start_aiohttp_backend(sup: Supervisor, name: str) -> tuple[Proc, int]:
    port = free_port()
    proc = sup.start(
        name,
        [sys.executable, "-m", "benchmarks.backend", "--port", str(port)],
        cwd=Path(__file__).resolve().parent.parent,
    )
    wait_port(proc, port)
    return proc, port


def _nginx_common(tmp: Path, name: str) -> str:
    temp = tmp / f"{name}-temp"
    temp.mkdir(exist_ok=True)
    return f"""
daemon off;
master_process on;
worker_processes 1;
pid {tmp}/{name}.pid;
error_log {tmp}/{name}-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  server_tokens off;
  client_body_temp_path {temp}/body;
  proxy_temp_path {temp}/proxy;
  fastcgi_temp_path {temp}/fastcgi;
  uwsgi_temp_path {temp}/uwsgi;
  scgi_temp_path {temp}/scgi;
  sendfile on;
  tcp_nopush on;
  tcp_nodelay on;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  client_max_body_size 0;
  default_type application/octet-stream;
"""


def start_nginx_backend(sup: Supervisor, tmp: Path, nginx: str) -> tuple[Proc, int]:
    """nginx serving /small (100 bytes) and /1m (1 MiB) from files, and /upload, which reads
    the whole body (held in memory by the mirror module) before it answers 100 bytes."""
    www = tmp / "www"
    www.mkdir(exist_ok=True)
    (www / "small").write_bytes(SMALL_BODY)
    (www / "1m").write_bytes(LARGE_BODY)
    port = free_port()
    conf = tmp / "nginx-backend.conf"
    conf.write_text(
        _nginx_common(tmp, "nginx-backend")
        + f"""
  open_file_cache max=64 inactive=600s;
  server {{
    listen {LOOPBACK}:{port} backlog=1024;
    root {www};
    location = /small {{ }}
    location = /1m {{ }}
    location = /upload {{
      client_body_buffer_size 128m;
      mirror /_sink;
      mirror_request_body on;
      error_page 405 =200 /small;
      try_files /small =404;
    }}
    location = /_sink {{ internal; return 204; }}
  }}
}}
"""
    )
    proc = sup.start(
        "nginx-backend",
        [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-backend-error.log")],
    )
    wait_port(proc, port)
    return proc, port


# --- devrouter and the peers -------------------------------------------------------------------


@dataclass(frozen=True)
class Stage:
    """What every proxy's start needs: where to keep files, what was found, the backends."""

    sup: Supervisor
    tmp: Path
    found: Found
    versions: dict[str, str]
    fast_port: int
    app_port: int


def _targets(port: int) -> tuple[Target, Target]:
    return (
        Target(port, f"{FAST_NAME}.localhost:{port}"),
        Target(port, f"{APP_NAME}.localhost:{port}"),
    )


def start_devrouter(st: Stage, extra_args: list[str]) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    port = free_port()
    conf = tmp / "devrouter.yaml"
    conf.write_text(f"routes:\n  {FAST_NAME}: {fast_port}\n  {APP_NAME}: {app_port}\n")
    argv = [
        sys.executable,
        "-m",
        "devrouter",
        "serve",
        "--config",
        str(conf),
        "--listen",
        f"{LOOPBACK}:{port}",
        "--log-level",
        "warning",
        # like the peers' access_log off; metrics and the request ring stay on
        "--no-access-log",
        "--state-dir",
        str(tmp / "devrouter-state"),
        *extra_args,
    ]
    version = first_line(run_text([sys.executable, "-m", "devrouter", "--version"]))
    proc = sup.start("devrouter", argv, cwd=tmp)
    wait_port(proc, port)
    fast, app = _targets(port)
    notes = [" ".join(["devrouter serve --no-access-log", *extra_args])]
    return Tool("devrouter", "router", version, fast, app, proc, notes)


def start_nginx_proxy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    nginx, version = st.found.paths["nginx"], st.versions["nginx"]
    port = free_port()
    conf = tmp / "nginx-proxy.conf"
    conf.write_text(
        _nginx_common(tmp, "nginx-proxy")
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
  }}
}}
"""
    )
    proc = sup.start(
        "nginx-proxy",
        [nginx, "-c", str(conf), "-p", str(tmp), "-e", str(tmp / "nginx-proxy-error.log")],
    )
    wait_port(proc, port)
    fast, app = _targets(port)
    return Tool(
        "nginx",
        "peer",
        version,
        fast,
        app,
        proc,
        ["1 worker, upstream keepalive 64, proxy_request_buffering off"],
    )


def start_haproxy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    haproxy, version = st.found.paths["haproxy"], st.versions["haproxy"]
    port = free_port()
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

backend {FAST_NAME}
  server s1 {LOOPBACK}:{fast_port}

backend {APP_NAME}
  option http-no-delay
  server s1 {LOOPBACK}:{app_port}
"""
    )
    proc = sup.start("haproxy", [haproxy, "-db", "-f", str(conf)])
    wait_port(proc, port)
    fast, app = _targets(port)
    return Tool(
        "haproxy",
        "peer",
        version,
        fast,
        app,
        proc,
        ["nbthread 1, http-reuse always, http-no-delay for the app backend (SSE)"],
    )


def start_caddy(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    caddy, version = st.found.paths["caddy"], st.versions["caddy"]
    port = free_port()
    home = tmp / "caddy-home"
    home.mkdir(exist_ok=True)
    conf = tmp / "Caddyfile"
    conf.write_text(
        f"""{{
\tadmin off
\tauto_https off
\tdefault_bind {LOOPBACK}
}}

http://{FAST_NAME}.localhost:{port} {{
\treverse_proxy {LOOPBACK}:{fast_port}
}}

http://{APP_NAME}.localhost:{port} {{
\treverse_proxy {LOOPBACK}:{app_port}
}}
"""
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
    fast, app = _targets(port)
    return Tool(
        "caddy",
        "peer",
        version,
        fast,
        app,
        proc,
        [f"reverse_proxy, GOMAXPROCS default ({os.cpu_count()})"],
    )


_PORTLESS_LAUNCHER = """// portless's own proxy server (createProxyServer of the installed package)
// with two static routes, listening on 127.0.0.1 only (its CLI listens on every
// interface).
import {{ createProxyServer }} from {module};
const routes = [
  {{ hostname: "{fast}.localhost", port: {fast_port} }},
  {{ hostname: "{app}.localhost", port: {app_port} }},
];
const server = createProxyServer({{ getRoutes: () => routes, proxyPort: {port} }});
server.listen({port}, "{loopback}", () => console.log("portless proxy ready on {port}"));
"""


def start_portless(st: Stage) -> Tool:
    sup, tmp, fast_port, app_port = st.sup, st.tmp, st.fast_port, st.app_port
    pkg, node, version = st.found.paths["portless"], st.found.paths["node"], st.versions["portless"]
    port = free_port()
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
            loopback=LOOPBACK,
        )
    )
    proc = sup.start("portless", [node, str(script)], cwd=tmp)
    wait_port(proc, port)
    fast, app = _targets(port)
    return Tool(
        "portless",
        "peer",
        version,
        fast,
        app,
        proc,
        ["createProxyServer() of the installed package, on 127.0.0.1"],
    )


PEER_STARTERS: dict[str, Callable[[Stage], Tool]] = {
    "nginx": start_nginx_proxy,
    "haproxy": start_haproxy,
    "caddy": start_caddy,
    "portless": start_portless,
}


def check(tool: Tool) -> None:
    """One request to each backend through the tool; raise StartError if it does not work."""
    import http.client

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
