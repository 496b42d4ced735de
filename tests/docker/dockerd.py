"""A real, private Docker Engine for the tests: `dockerd` on its own socket, data-root and
exec-root in one short directory under /tmp, with no iptables, no default bridge and no
registry, torn down completely (processes, mounts, files) when the tests are done.

Theory of operation: `start()` runs dockerd and polls `GET /_ping` until OK (at most
START_S; else a `DockerdError` with its log tail). `image()` imports `local/busybox` once per
daemon: the static busybox, a symlink per applet, and `/serve`, its default command, which
writes `$TEXT` (else the hostname) as index.html and runs `httpd` on each port of `$PORTS`
(default 80), so each container answers its own text (`GET /port`: the port that served).
With `--bridge=none` only a user-defined network publishes ports (`run()` uses `NETWORK`;
Compose makes its own). `kill()` SIGKILLs the daemon; `restart()` starts it again on the same
socket and data-root (what comes back: test_docker_harness.py). `stop()` kills containers,
SIGTERMs dockerd (then SIGKILL), kills what names the directory (shims) and their children
(the containers), unmounts what is under it deepest first, deletes the networks' bridges, and
removes it; it can be called twice.

`skip_reason()` says why a real dockerd cannot run here (not root, a tool missing, or the
daemon fails to start, with its log), for tests to `pytest.skip` with.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import tarfile
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

#: The tools, found once. /usr/bin/docker is Debian's client, the same version as dockerd;
#: another `docker` earlier on PATH may be newer than the daemon's API.
DOCKERD = shutil.which("dockerd") or "/usr/sbin/dockerd"
DOCKER = "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else shutil.which("docker")
COMPOSE_V1 = shutil.which("docker-compose")
BUSYBOX = "/bin/busybox"
#: No iptables, no default bridge. And 256 networks of /24 instead of 31 of /16 and /20:
#: every daemon's bridges share the host's namespace, and a pool overlapping a route there is
#: skipped, so several daemons at once (or bridges left by a killed one) exhaust the default.
DOCKERD_FLAGS: tuple[str, ...] = (
    "--iptables=false",
    "--ip-forward=false",
    "--ip-masq=false",
    "--bridge=none",
)
DOCKERD_FLAGS += ("--default-address-pool=base=10.213.0.0/16,size=24",)
#: The image every container of the tests runs, and the network `run()` attaches them to.
IMAGE = "local/busybox"
NETWORK = "devrouter-test"
#: Private directories are made under this with this prefix; unix socket paths are limited to
#: 107 bytes, so the directory stays short.
BASE_DIR = "/tmp"
DIR_PREFIX = "dkd-"
#: Upper bounds, in seconds: dockerd answering /_ping; dockerd exiting after SIGTERM; one
#: CLI or Compose command; one API request. And how often to poll, in seconds.
START_S, STOP_S, CLI_S, API_S = 20.0, 10.0, 60.0, 10.0
POLL_S = 0.05
#: Lines of dockerd's log quoted in an error.
LOG_TAIL_LINES = 25

#: The image's default command (see the module docstring). `httpd` without -f daemonizes;
#: the last port's httpd is exec'd, so `--init` forwards SIGTERM to it and the container
#: stops at once.
SERVE_SCRIPT = """#!/bin/sh
set -e
set -- ${PORTS:-80}
for port in "$@"; do
  mkdir -p "/tmp/www/$port"
  echo "${TEXT:-$HOSTNAME}" > "/tmp/www/$port/index.html"
  echo "$port" > "/tmp/www/$port/port"
done
while [ $# -gt 1 ]; do httpd -p "$1" -h "/tmp/www/$1"; shift; done
exec httpd -f -p "$1" -h "/tmp/www/$1"
"""


class DockerdError(RuntimeError):
    """The private dockerd did not start, or a command against it failed."""


class _UnixHTTPConnection(http.client.HTTPConnection):
    """http.client over the Engine's unix socket."""

    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self._unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self.timeout)
            sock.connect(self._unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def tools_missing() -> str | None:
    """Why a private dockerd cannot run here without trying it, or None."""
    if os.geteuid() != 0:
        return "the Docker tests need root (dockerd mounts and makes namespaces)"
    tools = {"dockerd (apt: docker.io)": DOCKERD, "docker (apt: docker.io)": DOCKER}
    tools["busybox (apt: busybox-static)"] = BUSYBOX
    missing = [name for name, path in tools.items() if not path or not os.access(path, os.X_OK)]
    if compose_command() is None:
        missing.append("docker-compose (apt: docker-compose) or `docker compose`")
    return f"missing: {', '.join(missing)}" if missing else None


def skip_reason(probe: bool = True) -> str | None:
    """Why a real dockerd cannot run here, or None. With `probe`, the first call also starts
    (and stops) one daemon to see that it comes up; its answer is kept for the process."""
    return tools_missing() or (_trial_start() if probe else None)


@functools.cache
def _trial_start() -> str | None:
    trial = PrivateDockerd()
    try:
        trial.start()
    except DockerdError as exc:
        return f"dockerd failed to start: {exc}"
    finally:
        trial.stop()
    return None


@functools.cache
def compose_command() -> tuple[str, ...] | None:
    """`docker compose` (v2, what users run) when the client has it, else `docker-compose`."""
    if DOCKER:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            argv = [DOCKER, "compose", "version"]
            if subprocess.run(argv, capture_output=True, timeout=CLI_S).returncode == 0:
                return (DOCKER, "compose")
    return (COMPOSE_V1,) if COMPOSE_V1 else None


def service(
    text: str | None = None,
    ports: Sequence[str] = ("127.0.0.1::80",),
    labels: Mapping[str, str] | None = None,
    serve_ports: Sequence[int] = (),
    **extra: Any,
) -> dict[str, Any]:
    """A Compose service of `local/busybox` answering `text` (default: its hostname)."""
    out: dict[str, Any] = {"image": IMAGE, "init": True, "ports": list(ports)}
    env = _serve_env(text, serve_ports)
    if env:
        out["environment"] = env
    if labels:
        out["labels"] = dict(labels)
    out.update(extra)
    return out


def _serve_env(text: str | None, serve_ports: Sequence[int]) -> dict[str, str]:
    env = {"TEXT": text} if text is not None else {}
    if serve_ports:
        env["PORTS"] = " ".join(str(p) for p in serve_ports)
    return env


class PrivateDockerd:
    """One private dockerd in its own directory (see the module docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=BASE_DIR))
        self.socket = self.root / "docker.sock"
        self.host = f"unix://{self.socket}"  # DOCKER_HOST
        self.data_root = self.root / "data"
        self.exec_root = self.root / "exec"
        self.pidfile = self.root / "dockerd.pid"
        self.log_path = self.root / "dockerd.log"
        #: How long the last start took to answer /_ping, in seconds.
        self.started_in_s = 0.0
        self._proc: subprocess.Popen[bytes] | None = None
        self._image_built = False
        self._networks: set[str] = set()
        self._compose_dirs: dict[str, Path] = {}
        # The owner's pid: `sweep_stale` removes directories whose owner is gone.
        (self.root / "owner.pid").write_text(str(os.getpid()))

    @property
    def env(self) -> dict[str, str]:
        """The environment for a client of this daemon, its CLI config kept in the directory."""
        return {
            **os.environ,
            "DOCKER_HOST": self.host,
            "DOCKER_CONFIG": str(self.root / "cli"),
            "COMPOSE_INTERACTIVE_NO_CLI": "1",
        }

    # --- the daemon ------------------------------------------------------------------------

    def start(self) -> None:
        """Start dockerd and wait for /_ping to answer OK; DockerdError with its log if not."""
        if self.running():
            return
        self._clear_stale_pids()
        argv = [DOCKERD, f"--host={self.host}", f"--data-root={self.data_root}"]
        argv += [f"--exec-root={self.exec_root}", f"--pidfile={self.pidfile}", *DOCKERD_FLAGS]
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            # Its own session: a ^C at the terminal goes to pytest, which then tears down.
            self._proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )
        deadline = began + START_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                raise DockerdError(f"dockerd exited with {code}\n{self.log_tail()}")
            if self.ping():
                self.started_in_s = time.monotonic() - began
                self._networks.clear()  # a network outlives a restart; creating it again is ok
                return
            time.sleep(POLL_S)
        self.kill()
        raise DockerdError(f"no answer on {self.socket} within {START_S} s\n{self.log_tail()}")

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def ping(self) -> bool:
        """True when GET /_ping answers 200 OK."""
        try:
            status, _, body = self.request("GET", "/_ping", timeout=1.0)
        except OSError:
            return False
        return status == 200 and body == b"OK"

    def kill(self) -> None:
        """SIGKILL dockerd (its containerd dies with it; the shims and containers stay)."""
        if self._proc is not None and self._proc.poll() is None:
            self.note_bridges()
            self._proc.kill()
            self._proc.wait(timeout=STOP_S)

    def restart(self) -> None:
        """Start dockerd again on the same socket and data-root (after kill() or not)."""
        self._terminate()
        self.start()

    def stop(self) -> None:
        """Tear everything down: containers, the daemon, its leftovers, mounts, the directory."""
        if self.running():
            with contextlib.suppress(DockerdError, OSError, subprocess.SubprocessError):
                ids = self.docker("ps", "-q", timeout=API_S).stdout.split()
                if ids:
                    self.docker("kill", *ids, check=False, timeout=API_S)
        self._terminate()
        cleanup_dir(self.root)

    def note_bridges(self) -> None:
        """Add the bridge interfaces of this daemon's networks to the directory's `bridges`
        file: they are made in the host's namespace and outlive dockerd, so `stop()` (or a
        later `sweep_stale`) deletes them. Called after network() and compose(), and before
        a kill or stop; a test making networks otherwise calls it."""
        with contextlib.suppress(OSError, ValueError, DockerdError):
            names = {
                n.get("Options", {}).get("com.docker.network.bridge.name") or f"br-{n['Id'][:12]}"
                for n in self.api("/networks")
                if n.get("Driver") == "bridge"
            }
            with (self.root / "bridges").open("a") as out:
                out.writelines(f"{name}\n" for name in sorted(names))

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        self.note_bridges()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=STOP_S)

    def _clear_stale_pids(self) -> None:
        """After a SIGKILL, containerd is a zombie until init reaps it (seconds, here), and
        dockerd takes a zombie's pid in containerd.pid for a live containerd and waits for its
        socket until it gives up. A zombie's pid cannot be reused, so its pid file goes."""
        for pidfile in (self.exec_root / "containerd" / "containerd.pid", self.pidfile):
            pid = _read_pid(pidfile)
            if pid is not None and _alive(pid) != "alive":
                pidfile.unlink(missing_ok=True)

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:]) or "(no log)"

    # --- clients ---------------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes | None = None, timeout: float = API_S
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        """One Engine API request: status, headers, body."""
        conn = _UnixHTTPConnection(str(self.socket), timeout)
        try:
            headers = {"Content-Type": "application/json"} if body is not None else {}
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.getheaders(), resp.read()
        finally:
            conn.close()

    def api(self, path: str) -> Any:
        """GET `path` and its JSON; DockerdError unless 200."""
        status, _, body = self.request("GET", path)
        if status != 200:
            raise DockerdError(f"GET {path}: {status} {body[:300]!r}")
        return json.loads(body)

    def docker(
        self, *args: str, check: bool = True, timeout: float = CLI_S, input: bytes | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run the docker CLI against this daemon; DockerdError if it fails and `check`."""
        if DOCKER is None:
            raise DockerdError("no docker CLI")
        return self._run([DOCKER, *args], check=check, timeout=timeout, input=input)

    def _run(
        self, argv: list[str], check: bool, timeout: float, input: bytes | None = None, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                argv, env=self.env, input=input, capture_output=True, timeout=timeout, **kw
            )
        except subprocess.TimeoutExpired as exc:
            raise DockerdError(f"{' '.join(argv)}: no exit within {timeout} s") from exc
        stdout, stderr = (
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        out = subprocess.CompletedProcess(argv, proc.returncode, stdout, stderr)
        if check and out.returncode != 0:
            raise DockerdError(f"{' '.join(argv)}: exit {out.returncode}\n{out.stderr}")
        return out

    def image(self) -> str:
        """Import `local/busybox` into this daemon once; its name."""
        if not self._image_built:
            changes = ("--change", "ENV PATH=/bin", "--change", 'CMD ["/serve"]')
            self.docker("import", *changes, "-", IMAGE, input=_rootfs_tar())
            self._image_built = True
        return IMAGE

    def network(self, name: str = NETWORK) -> str:
        """A user-defined network (needed to publish ports with --bridge=none); its name."""
        if name not in self._networks:
            have = self.docker("network", "ls", "-q", "--filter", f"name=^{name}$").stdout
            if not have.strip():
                self.docker("network", "create", name)
                self.note_bridges()
            self._networks.add(name)
        return name

    def run(
        self,
        name: str,
        *,
        text: str | None = None,
        publish: Sequence[str] = ("127.0.0.1::80",),
        labels: Mapping[str, str] | None = None,
        serve_ports: Sequence[int] = (),
        restart: str | None = None,
        network: str = NETWORK,
        extra: Sequence[str] = (),
    ) -> str:
        """`docker run -d --init` a container of local/busybox answering `text` (default:
        `name`) on each of `serve_ports` (default 80); its id."""
        args = ["run", "-d", "--init", "--name", name, "--network", self.network(network)]
        for spec in publish:
            args += ["-p", spec]
        for key, value in (labels or {}).items():
            args += ["--label", f"{key}={value}"]
        for key, value in _serve_env(name if text is None else text, serve_ports).items():
            args += ["-e", f"{key}={value}"]
        if restart:
            args += ["--restart", restart]
        args += [*extra, self.image()]
        return self.docker(*args).stdout.strip()

    def port(self, container: str, private: int = 80, host_ip: str = "127.0.0.1") -> int:
        """The host port `container` publishes its `private` TCP port on at `host_ip`."""
        info = self.api(f"/containers/{container}/json")
        for binding in info["NetworkSettings"]["Ports"].get(f"{private}/tcp") or []:
            if binding["HostIp"] in (host_ip, "0.0.0.0", ""):
                return int(binding["HostPort"])
        raise DockerdError(f"{container} publishes no {private}/tcp on {host_ip}")

    def answer(self, container: str, private: int = 80, path: str = "/") -> str:
        """GET `path` from `container` through its port published on 127.0.0.1, retried until
        it answers (httpd starts a moment after the container does): the body."""
        return http_get(self.port(container, private), path)

    def compose(
        self, project: str, services: Mapping[str, Mapping[str, Any]], *args: str
    ) -> subprocess.CompletedProcess[str]:
        """Write the project's compose file (JSON, which is YAML) in its own directory and run
        Compose with `args` (e.g. "up", "-d"); the file is rewritten on every call."""
        command = compose_command()
        if command is None:
            raise DockerdError("neither `docker compose` nor docker-compose is installed")
        if services:
            self.image()
        workdir = self._compose_dirs.get(project)
        if workdir is None:
            workdir = self._compose_dirs[project] = Path(
                tempfile.mkdtemp(prefix=f"compose-{project}-", dir=self.root)
            )
        file = workdir / "docker-compose.yml"
        file.write_text(json.dumps({"version": "3.7", "services": services}, indent=2))
        argv = [*command, "--project-name", project, "--file", str(file), *args]
        try:
            return self._run(argv, check=True, timeout=CLI_S, cwd=workdir)
        finally:
            self.note_bridges()

    def remove_all(self) -> None:
        """Remove every container and user-defined network, for a test that wants a clean
        daemon after another one."""
        ids = self.docker("ps", "-aq").stdout.split()
        if ids:
            self.docker("rm", "-f", *ids)
        nets = self.docker("network", "ls", "-q", "--filter", "type=custom").stdout.split()
        if nets:
            self.docker("network", "rm", *nets)
        self._networks.clear()


def http_get(port: int, path: str = "/", host: str = "127.0.0.1", wait_s: float = START_S) -> str:
    """GET http://host:port/path and the body of its 200, retried while the connection is
    refused or reset (docker-proxy accepts before the container's server listens)."""
    deadline = time.monotonic() + wait_s
    while True:
        conn = http.client.HTTPConnection(host, port, timeout=API_S)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            body = resp.read().decode(errors="replace")
            if resp.status == 200:
                return body
            error = f"{resp.status} {body[:200]}"
        except (OSError, http.client.HTTPException) as exc:
            error = repr(exc)
        finally:
            conn.close()
        if time.monotonic() > deadline:
            raise DockerdError(f"GET http://{host}:{port}{path}: {error}")
        time.sleep(POLL_S)


# --- the image -------------------------------------------------------------------------------


def _rootfs_tar() -> bytes:
    """The image's one layer: /bin/busybox, a symlink in /bin per applet, /serve, /tmp."""
    applets = subprocess.run(
        [BUSYBOX, "--list"], capture_output=True, text=True, timeout=CLI_S, check=True
    ).stdout.split()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, mode in (("bin", 0o755), ("tmp", 0o1777)):
            info = tarfile.TarInfo(name)
            info.type, info.mode = tarfile.DIRTYPE, mode
            tar.addfile(info)
        tar.add(BUSYBOX, arcname="bin/busybox")
        for applet in applets:
            if applet != "busybox":
                link = tarfile.TarInfo(f"bin/{applet}")
                link.type, link.linkname = tarfile.SYMTYPE, "busybox"
                tar.addfile(link)
        script = SERVE_SCRIPT.encode()
        info = tarfile.TarInfo("serve")
        info.mode, info.size = 0o755, len(script)
        tar.addfile(info, io.BytesIO(script))
    return buf.getvalue()


# --- teardown --------------------------------------------------------------------------------


def _read_pid(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> str:
    """'alive', 'zombie' or 'gone'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "gone"
    return "zombie" if stat.rpartition(")")[2].split()[0] in ("Z", "X") else "alive"


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, command line)."""
    out: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat.rpartition(")")[2].split()
        if fields[0] in ("Z", "X"):
            continue
        out[int(entry.name)] = (int(fields[1]), cmdline)
    return out


def _processes_of(root: Path) -> list[int]:
    """Processes whose command line names `root` (dockerd, containerd, shims, docker-proxy),
    and their descendants (the containers' processes, which do not name it)."""
    procs = _processes()
    needle = f"{root}/"  # every such command line names a file in it
    found = {pid for pid, (_, cmd) in procs.items() if needle in cmd and pid != os.getpid()}
    while more := {pid for pid, (ppid, _) in procs.items() if ppid in found} - found:
        found |= more
    return sorted(found)


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or under `root`, deepest first (octal escapes of mountinfo decoded)."""
    prefix = str(root)
    points: list[str] = []
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mountinfo").read_text().splitlines():
            raw = line.split()[4]
            point = raw.encode().decode("unicode_escape") if "\\" in raw else raw
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return sorted(points, key=lambda p: p.count("/"), reverse=True)


def leftovers(root: Path) -> list[str]:
    """Processes naming `root`, mounts under it, and `root` itself if it still exists."""
    procs = _processes()
    out = [f"process {pid}: {procs[pid][1][:120]}" for pid in _processes_of(root) if pid in procs]
    out += [f"mount {point}" for point in _mounts_under(root)]
    if root.exists():
        out.append(f"directory {root}")
    return out


def cleanup_dir(root: Path) -> None:
    """Kill what runs from `root`, unmount what is mounted under it, remove it."""
    for pid in _processes_of(root):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    # A mount point can be stacked several times; each pass unmounts the top of each.
    for _ in range(10):
        points = _mounts_under(root)
        if not points:
            break
        for point in points:
            subprocess.run(["umount", "-l", point], capture_output=True, timeout=API_S)
    with contextlib.suppress(OSError):
        for bridge in set((root / "bridges").read_text().split()):
            if Path(f"/sys/class/net/{bridge}").exists():
                subprocess.run(["ip", "link", "delete", bridge], capture_output=True, timeout=API_S)
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale(base: str = BASE_DIR) -> list[Path]:
    """Remove the private directories of test processes that died without tearing down (a
    pytest killed by a timeout); those of live processes are left alone. The ones removed."""
    removed: list[Path] = []
    for root in Path(base).glob(f"{DIR_PREFIX}*"):
        owner = _read_pid(root / "owner.pid")
        if owner is not None and _alive(owner) == "alive":
            continue
        try:
            age_s = time.time() - root.stat().st_mtime
        except OSError:
            continue  # removed meanwhile
        if owner is None and age_s < START_S * 3:
            continue  # being made right now: the owner file comes a moment after mkdtemp
        cleanup_dir(root)
        removed.append(root)
    return removed
