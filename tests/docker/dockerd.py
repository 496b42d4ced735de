"""A real, private Docker Engine for the tests: `dockerd` on its own socket, data-root and
exec-root in one short directory under /tmp, with no iptables, no default bridge and no
registry, torn down completely (processes, mounts, files) when the tests are done.

Theory of operation:

- `PrivateDockerd.start()` runs `dockerd` and polls `GET /_ping` on its socket until it
  answers OK (at most START_S). A daemon that does not come up is stopped and its log tail
  is in the `DockerdError`.
- `image()` imports a one-layer image `local/busybox` (the static busybox, a symlink per
  applet, and `/serve`) the first time it is called on a daemon. Its default command is
  `/serve`: it writes `$TEXT` (the container's hostname when unset) to an index.html and
  runs `busybox httpd` on each port of `$PORTS` (default 80), so every container answers
  with its own text; `GET /port` answers the port that served it.
- With `--bridge=none` a container publishes ports only on a user-defined network:
  `run()` puts its containers on one (`NETWORK`), and Compose makes its own.
- `kill()` SIGKILLs the daemon (the Engine "going away"); `restart()` starts it again on the
  same socket and data-root. Without `--live-restore` the restarted daemon stops every
  container the old one ran; only `restart: always` ones come back after a SIGKILL, and
  `unless-stopped` ones too after a clean stop (SIGTERM). See test_docker_harness.py.
- `stop()` kills the containers, SIGTERMs the daemon (SIGKILL after STOP_S), kills every
  process left whose command line names the directory (containerd shims, docker-proxy) and
  their children (the containers), unmounts what dockerd left mounted under the directory,
  deepest first, and removes it. It is safe to call twice and after a failed start.

`skip_reason()` says why a real dockerd cannot run here (not root, a tool missing, or the
daemon fails to start, with its log), for tests to `pytest.skip` with.
"""

from __future__ import annotations

import contextlib
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
#: The image every container of the tests runs, and the network `run()` attaches them to.
IMAGE = "local/busybox"
NETWORK = "devrouter-test"
#: Private directories are made under this with this prefix; unix socket paths are limited to
#: 107 bytes, so the directory stays short.
BASE_DIR = "/tmp"
DIR_PREFIX = "dkd-"
#: Upper bounds, in seconds: dockerd answering /_ping; dockerd exiting after SIGTERM; one
#: CLI or Compose command; one API request.
START_S = 20.0
STOP_S = 10.0
CLI_S = 60.0
API_S = 10.0
#: How often to poll, in seconds.
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
    missing = [
        name
        for name, path in (
            ("dockerd (apt: docker.io)", DOCKERD),
            ("docker (apt: docker.io)", DOCKER),
            ("busybox (apt: busybox-static)", BUSYBOX),
        )
        if not path or not os.access(path, os.X_OK)
    ]
    if compose_command() is None:
        missing.append("docker-compose (apt: docker-compose) or `docker compose`")
    return f"missing: {', '.join(missing)}" if missing else None


_probe: list[str | None] = []


def skip_reason(probe: bool = True) -> str | None:
    """Why a real dockerd cannot run here, or None. With `probe`, the first call also starts
    (and stops) one daemon to see that it comes up; its answer is kept for the process."""
    reason = tools_missing()
    if reason or not probe:
        return reason
    if not _probe:
        trial = PrivateDockerd()
        try:
            trial.start()
            _probe.append(None)
        except DockerdError as exc:
            _probe.append(f"dockerd failed to start: {exc}")
        finally:
            trial.stop()
    return _probe[0]


_compose: list[list[str] | None] = []


def compose_command() -> list[str] | None:
    """`docker compose` (v2, what users run) when the client has it, else `docker-compose`."""
    if not _compose:
        found: list[str] | None = [COMPOSE_V1] if COMPOSE_V1 else None
        if DOCKER:
            with contextlib.suppress(OSError, subprocess.SubprocessError):
                probe = subprocess.run(
                    [DOCKER, "compose", "version"], capture_output=True, timeout=CLI_S
                )
                if probe.returncode == 0:
                    found = [DOCKER, "compose"]
        _compose.append(found)
    return _compose[0]


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
    env: dict[str, str] = {}
    if text is not None:
        env["TEXT"] = text
    if serve_ports:
        env["PORTS"] = " ".join(str(p) for p in serve_ports)
    return env


class PrivateDockerd:
    """One private dockerd in its own directory (see the module docstring)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root or Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=BASE_DIR))
        self.socket = self.root / "docker.sock"
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
    def host(self) -> str:
        """The DOCKER_HOST value for this daemon."""
        return f"unix://{self.socket}"

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
        argv = [
            DOCKERD,
            f"--host={self.host}",
            f"--data-root={self.data_root}",
            f"--exec-root={self.exec_root}",
            f"--pidfile={self.pidfile}",
            "--iptables=false",
            "--ip-forward=false",
            "--ip-masq=false",
            "--bridge=none",
        ]
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

    def _terminate(self) -> None:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
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
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

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
        self,
        argv: list[str],
        check: bool,
        timeout: float,
        input: bytes | None = None,
        cwd: Path | None = None,
    ) -> subprocess.CompletedProcess[str]:
        try:
            proc = subprocess.run(
                argv, env=self.env, input=input, capture_output=True, timeout=timeout, cwd=cwd
            )
        except subprocess.TimeoutExpired as exc:
            raise DockerdError(f"{' '.join(argv)}: no exit within {timeout} s") from exc
        out = subprocess.CompletedProcess(
            argv,
            proc.returncode,
            proc.stdout.decode(errors="replace"),
            proc.stderr.decode(errors="replace"),
        )
        if check and out.returncode != 0:
            raise DockerdError(f"{' '.join(argv)}: exit {out.returncode}\n{out.stderr}")
        return out

    def image(self) -> str:
        """Import `local/busybox` into this daemon once; its name."""
        if not self._image_built:
            self.docker(
                "import",
                "--change",
                "ENV PATH=/bin",
                "--change",
                'CMD ["/serve"]',
                "-",
                IMAGE,
                input=_rootfs_tar(),
            )
            self._image_built = True
        return IMAGE

    def network(self, name: str = NETWORK) -> str:
        """A user-defined network (needed to publish ports with --bridge=none); its name."""
        if name not in self._networks:
            have = self.docker("network", "ls", "-q", "--filter", f"name=^{name}$").stdout
            if not have.strip():
                self.docker("network", "create", name)
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
        return self._run(argv, check=True, timeout=CLI_S, cwd=workdir)

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

    def leftovers(self) -> list[str]:
        """What is left of this daemon: processes naming its directory, mounts under it, the
        directory itself. Empty after stop()."""
        return leftovers(self.root)


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
    needle = str(root)
    found = {pid for pid, (_, cmd) in procs.items() if needle in cmd and pid != os.getpid()}
    grew = True
    while grew:
        more = {pid for pid, (ppid, _) in procs.items() if ppid in found} - found
        found |= more
        grew = bool(more)
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
    shutil.rmtree(root, ignore_errors=True)


def sweep_stale(base: str = BASE_DIR) -> list[Path]:
    """Remove the private directories of test processes that died without tearing down (a
    pytest killed by a timeout); those of live processes are left alone. The ones removed."""
    removed: list[Path] = []
    for root in Path(base).glob(f"{DIR_PREFIX}*"):
        owner = _read_pid(root / "owner.pid")
        if owner is not None and _alive(owner) == "alive":
            continue
        if owner is None and time.time() - root.stat().st_mtime < START_S * 3:
            continue  # being made right now: the owner file comes a moment after mkdtemp
        cleanup_dir(root)
        removed.append(root)
    return removed
