"""The servers of a run: what is installed, the two backends, devrouter, and the baseline.

Each `start_*` writes its config into the run's temporary directory, starts the process
through the Supervisor, waits for its port, and returns a `Tool`: where to send the "fast"
and the "app" requests (a loopback port and the Host header), where to send TLS requests when
it answers TLS, and which process to sample for CPU and memory. Every server listens on
127.0.0.1 only. The peer proxies are in `benchmarks.peers`.

devrouter answers TLS on its one port with certificates from its local CA, made in its state
directory when it starts; `peer_certificate` takes the leaf it serves for fast.localhost (the
same key, certificate and CA) and writes it where the peers read it.

The baseline (`--baseline REV`) is devrouter as it was at an earlier revision: that
revision's tree, exported with `git archive` into the run's temporary directory (the working
tree and the repository are left alone), run with the same Python and config.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from .backend import LARGE_BODY, SMALL_BODY
from .procs import LOOPBACK, Proc, StartError, Supervisor, free_port, wait_port

#: The checkout these benchmarks belong to: its devrouter is the one measured.
REPO = Path(__file__).resolve().parent.parent
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
    tls: Target | None = None  # where to send TLS requests for the fast backend, if anywhere


def run_text(argv: list[str], timeout_s: float = 20.0, env: dict[str, str] | None = None) -> str:
    """stdout+stderr of a short command, or '' if it cannot run."""
    try:
        p = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            stdin=subprocess.DEVNULL,
            env=env,
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
    for name in ("wrk", "h2load", "nginx", "haproxy", "caddy"):
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
    if "h2load" in found.paths:
        text = nth_word(run_text([found.paths["h2load"], "--version"]), 1)
        out["h2load"] = text.removeprefix("nghttp2/")
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
        cwd=REPO,
    )
    wait_port(proc, port)
    return proc, port


def nginx_common(tmp: Path, name: str) -> str:
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
        nginx_common(tmp, "nginx-backend")
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
    cert: CertFiles | None = None  # the TLS certificate the peers serve, when there is one


def targets(port: int) -> tuple[Target, Target]:
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
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's, whatever is installed
    version = first_line(run_text([sys.executable, "-m", "devrouter", "--version"], env=env))
    proc = sup.start("devrouter", argv, env=env, cwd=tmp)
    wait_port(proc, port)
    fast, app = targets(port)
    notes = [" ".join(["devrouter serve --no-access-log", *extra_args])]
    tls = Target(port, fast.host) if ca_file(tmp / "devrouter-state").is_file() else None
    if tls is not None:
        notes.append("TLS, HTTP/2 and plain HTTP on the one port")
    return Tool("devrouter", "router", version, fast, app, proc, notes, tls)


# --- TLS certificates ------------------------------------------------------------------------


@dataclass(frozen=True)
class CertFiles:
    ca: Path  # devrouter's CA certificate: what clients verify against
    cert: Path  # the leaf for fast.localhost
    key: Path
    combined: Path  # certificate then key (HAProxy's `crt`)


def ca_file(state_dir: Path) -> Path:
    """Where devrouter keeps its CA certificate in `state_dir` (it may not exist)."""
    from devrouter.tls.ca import ca_paths

    return ca_paths(state_dir).cert


def peer_certificate(state_dir: Path, tmp: Path) -> CertFiles | None:
    """The leaf devrouter serves for fast.localhost (loaded, or issued as it would issue it),
    written for the peers; None when devrouter made no CA (TLS off)."""
    from devrouter.tls.ca import LocalCA

    ca = LocalCA.load(state_dir)
    if ca is None:
        return None
    leaf = ca.leaf(f"{FAST_NAME}.localhost")
    out = tmp / "tls"
    out.mkdir(mode=0o755, exist_ok=True)
    files = CertFiles(ca.paths.cert, out / "fast.crt", out / "fast.key", out / "fast.pem")
    files.cert.write_bytes(leaf.cert_pem)
    for path, data in ((files.key, leaf.key_pem), (files.combined, leaf.cert_pem + leaf.key_pem)):
        path.touch(mode=0o600)
        path.write_bytes(data)
    return files


# --- the baseline ------------------------------------------------------------------------------


def export_revision(repo: Path, rev: str, into: Path) -> str:
    """`rev`'s tree of `repo` in `into` (git archive: no worktree, no change to the repository);
    returns the revision's short hash."""
    try:
        short = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", f"{rev}^{{commit}}"],
            capture_output=True, text=True, timeout=20, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError) as exc:
        raise StartError(f"baseline: {rev!r} is not a revision of {repo}: {exc}") from None
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.Popen(
        ["git", "-C", str(repo), "archive", "--format=tar", short, "devrouter"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert archive.stdout is not None
        with tarfile.open(fileobj=archive.stdout, mode="r|") as tar:
            tar.extractall(into, filter="data")
    finally:
        if archive.wait(timeout=60) != 0:
            raise StartError(f"baseline: git archive {short} failed")
    return short


def start_baseline(st: Stage, repo: Path, rev: str, extra_args: list[str]) -> Tool:
    """devrouter at revision `rev`, as `start_devrouter` runs the current one (plain only)."""
    tree = st.tmp / "baseline"
    short = export_revision(repo, rev, tree)
    env = {**os.environ, "PYTHONPATH": str(tree)}
    where = subprocess.run(
        [sys.executable, "-c", "import devrouter; print(devrouter.__file__)"],
        capture_output=True, text=True, timeout=30, env=env, cwd=tree,
    ).stdout.strip()  # fmt: skip
    if not where.startswith(str(tree)):
        raise StartError(f"baseline: Python imports devrouter from {where!r}, not {tree}")
    port = free_port()
    conf = st.tmp / "devrouter.yaml"  # the same routes as the current one's
    argv = [
        sys.executable, "-m", "devrouter", "serve", "--config", str(conf),
        "--listen", f"{LOOPBACK}:{port}", "--log-level", "warning", "--no-access-log",
        "--state-dir", str(st.tmp / "baseline-state"), *extra_args,
    ]  # fmt: skip
    name = f"devrouter@{short}"
    proc = st.sup.start("devrouter-baseline", argv, env=env, cwd=tree)
    wait_port(proc, port)
    fast, app = targets(port)
    notes = [f"the same command, from `git archive {short}`"]
    return Tool(name, "baseline", f"devrouter at {short}", fast, app, proc, notes)
