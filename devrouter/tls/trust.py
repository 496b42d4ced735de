"""How devrouter's local CA is added to and removed from the trust stores
(devrouter.tls.stores): the plans as pure functions (`plan_trust`, `plan_untrust`: every
step with its exact argv or file operation, and whether it needs root), and a small I/O edge
(`trusted_by`, `perform`, and the CA bundle for services, `write_bundle` and `service_env`).

The CA is given as anything with LocalCA's public side (`CA`): the certificate is all a
store needs. Root, acting for a user (sudo), reads only the user's `ca.pem`
(`read_public_ca`), and only trusts it if it is a CA constrained to .localhost and loopback
addresses, as devrouter makes them: a tampered file cannot make the system trust a CA that
could vouch for any other name.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import re
import shlex
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from ..core.errors import CAError, TrustError
from .ca import (
    MAX_PEM_BYTES,
    PERMITTED_DNS,
    PERMITTED_NETWORKS,
    CAPaths,
    ca_paths,
    write_atomic,
)
from .stores import KNOWN_BUNDLES, NSSStore, Store, SystemStore

#: A tool that changes a store (update-ca-certificates runs hooks, e.g. Java's keystore) gets
#: this long, in seconds.
TOOL_TIMEOUT_S = 120.0
#: A tool that only reads a store (certutil -L, security verify-cert), in seconds.
CHECK_TIMEOUT_S = 10.0
#: The fingerprint's first this many hex digits name the CA in a store, so that two state
#: directories' CAs never take each other's place.
SHORT_FINGERPRINT_CHARS = 8
#: Larger system bundles, in bytes, are not read (Debian's is ~220 KiB).
MAX_BUNDLE_BYTES = 16 * 1024 * 1024

CERTUTIL_HINT = (
    "install certutil (Debian/Ubuntu: apt install libnss3-tools; Fedora: dnf install "
    "nss-tools; Arch: pacman -S nss; macOS: brew install nss) and run it again"
)


class CA(Protocol):
    """What the trust stores need of the CA (LocalCA has it, and so has PublicCA)."""

    @property
    def paths(self) -> CAPaths: ...
    @property
    def cert_pem(self) -> bytes: ...
    @property
    def certificate(self) -> x509.Certificate: ...
    def fingerprint_sha256(self) -> str: ...


# --- names ----------------------------------------------------------------------------------


def short_fingerprint(ca: CA) -> str:
    return ca.fingerprint_sha256()[:SHORT_FINGERPRINT_CHARS]


def nickname(ca: CA) -> str:
    """The CA's name in an NSS database: `devrouter local CA 1a2b3c4d`."""
    return f"devrouter local CA {short_fingerprint(ca)}"


def anchor_file(store: SystemStore, ca: CA) -> Path:
    """The CA's file in a Linux anchors directory (Debian reads only `.crt`)."""
    return store.anchors / f"devrouter-{short_fingerprint(ca)}.crt"


# --- plans (pure) ---------------------------------------------------------------------------

Action = Literal["copy", "remove", "mkdir", "run"]


@dataclass(frozen=True)
class Step:
    """One change to one store: a command to run, or a file to copy, remove or create."""

    store: Store
    action: Action
    argv: tuple[str, ...] = ()  # run
    path: Path | None = None  # copy: the destination; remove: the file; mkdir: the directory
    source: Path | None = None  # copy: the CA certificate (its bytes as read are written)
    needs_root: bool = False
    deferred: bool = False  # needs root and the planning uid is not root: printed, not done

    def command(self) -> str:
        """The step as a shell command a person could run."""
        if self.action == "copy":
            return shlex.join(["cp", str(self.source), str(self.path)])
        if self.action == "remove":
            return shlex.join(["rm", "-f", str(self.path)])
        if self.action == "mkdir":
            return shlex.join(["mkdir", "-p", "-m", "700", str(self.path)])
        return shlex.join(self.argv)


def plan_trust(stores: Sequence[Store], ca: CA, uid: int) -> list[Step]:
    """The steps that add `ca` to each of `stores`, in order; `uid` is who performs them."""
    steps: list[Step] = []
    for s in stores:
        if isinstance(s, NSSStore):
            if not s.exists:
                steps.append(Step(s, "mkdir", path=s.dir))
                steps.append(Step(s, "run", (s.certutil, "-N", "-d", s.db, "--empty-password")))
            add = (s.certutil, "-A", "-d", s.db, "-t", "C,,", "-n", nickname(ca))
            steps.append(Step(s, "run", (*add, "-i", str(ca.paths.cert))))
        elif s.macos:
            keychain = ("-k", str(s.anchors), str(ca.paths.cert))
            argv = (s.refresh[0], "add-trusted-cert", "-d", "-r", "trustRoot", *keychain)
            steps.append(_root(s, uid, "run", argv))
        else:
            steps.append(_root(s, uid, "copy", path=anchor_file(s, ca), source=ca.paths.cert))
            steps.append(_root(s, uid, "run", s.refresh))
    return steps


def plan_untrust(stores: Sequence[Store], ca: CA, uid: int) -> list[Step]:
    """The steps that remove `ca` from each of `stores`, in order."""
    steps: list[Step] = []
    for s in stores:
        if isinstance(s, NSSStore):
            steps.append(Step(s, "run", (s.certutil, "-D", "-d", s.db, "-n", nickname(ca))))
        elif s.macos:
            security = s.refresh[0]
            steps.append(
                _root(s, uid, "run", (security, "remove-trusted-cert", "-d", str(ca.paths.cert)))
            )
            sha1 = ca.certificate.fingerprint(hashes.SHA1()).hex().upper()  # what -Z takes
            argv = (security, "delete-certificate", "-Z", sha1, str(s.anchors))
            steps.append(_root(s, uid, "run", argv))
        else:
            steps.append(_root(s, uid, "remove", path=anchor_file(s, ca)))
            steps.append(_root(s, uid, "run", s.refresh))
    return steps


def _root(
    store: SystemStore,
    uid: int,
    action: Action,
    argv: tuple[str, ...] = (),
    path: Path | None = None,
    source: Path | None = None,
) -> Step:
    return Step(store, action, argv, path, source, needs_root=True, deferred=uid != 0)


# --- checks (I/O) ---------------------------------------------------------------------------


def trusted_by(store: Store, ca: CA) -> bool | None:
    """Does `store` trust `ca`? None when that cannot be told (a tool or file is missing)."""
    if isinstance(store, NSSStore):
        if not (store.dir / "cert9.db").is_file():
            return False
        code, out = _run_quiet((store.certutil, "-L", "-d", store.db, "-n", nickname(ca), "-a"))
        if code is None:
            return None
        return code == 0 and _der(ca) in pem_certificates(out.encode())
    if store.macos:
        code, _ = _run_quiet((store.refresh[0], "verify-cert", "-c", str(ca.paths.cert)))
        return None if code is None else code == 0
    if store.bundle is None:
        return None
    try:
        with open(store.bundle, "rb") as f:
            data = f.read(MAX_BUNDLE_BYTES)
    except OSError:
        return None
    return _der(ca) in pem_certificates(data)


def present_in(store: Store, ca: CA) -> bool | None:
    """Is there anything of `ca` in `store` to remove? A Linux store's anchor file counts even
    when the bundle was not rebuilt since."""
    if isinstance(store, SystemStore) and not store.macos and anchor_file(store, ca).exists():
        return True
    return trusted_by(store, ca)


_PEM_RE = re.compile(rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]+?)-----END CERTIFICATE-----")


def pem_certificates(data: bytes) -> set[bytes]:
    """The DER of every PEM certificate in `data`."""
    out: set[bytes] = set()
    for m in _PEM_RE.finditer(data):
        with contextlib.suppress(binascii.Error, ValueError):
            out.add(base64.b64decode(b"".join(m.group(1).split()), validate=True))
    return out


def _der(ca: CA) -> bytes:
    return ca.certificate.public_bytes(serialization.Encoding.DER)


def _run(argv: Sequence[str], timeout_s: float) -> subprocess.CompletedProcess[str]:
    """A store's tool, with no input, its output captured as text."""
    return subprocess.run(
        argv,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
        check=False,
    )


def _run_quiet(argv: Sequence[str]) -> tuple[int | None, str]:
    """A read-only tool's exit status and stdout; None when it cannot be run or hangs."""
    try:
        proc = _run(argv, CHECK_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return None, ""
    return proc.returncode, proc.stdout


# --- performing a step (I/O) ----------------------------------------------------------------


def perform(step: Step, ca: CA) -> None:
    """Do one step. Raises TrustError with what failed and what to do."""
    path = step.path
    try:
        if step.action == "copy" and path is not None:
            write_atomic(path, ca.cert_pem, 0o644)
        elif step.action == "remove" and path is not None:
            path.unlink(missing_ok=True)
        elif step.action == "mkdir" and path is not None:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
        elif step.action == "run":
            _run_tool(step.argv)
    except OSError as exc:
        verb = {"copy": "write", "remove": "remove", "mkdir": "create"}.get(step.action, "use")
        raise TrustError(f"cannot {verb} {path}: {exc.strerror}") from None


def _run_tool(argv: Sequence[str]) -> None:
    tool = Path(argv[0]).name
    try:
        proc = _run(argv, TOOL_TIMEOUT_S)
    except FileNotFoundError:
        hint = CERTUTIL_HINT if tool == "certutil" else "install it, and run this again"
        raise TrustError(f"{tool} is not installed: {hint}") from None
    except OSError as exc:
        raise TrustError(f"cannot run {argv[0]}: {exc.strerror}") from None
    except subprocess.TimeoutExpired:
        raise TrustError(f"{shlex.join(argv)} did not finish in {TOOL_TIMEOUT_S:g} s") from None
    if proc.returncode != 0:
        lines = [x.strip() for x in (proc.stderr + proc.stdout).splitlines() if x.strip()]
        said = f": {lines[-1]}" if lines else ""
        raise TrustError(f"{shlex.join(argv)} failed (exit {proc.returncode}){said}")


# --- the CA's certificate alone --------------------------------------------------------------


@dataclass(frozen=True)
class PublicCA:
    """The CA's certificate without its key: what root reads when it acts for a user."""

    paths: CAPaths
    cert_pem: bytes
    certificate: x509.Certificate

    def fingerprint_sha256(self) -> str:
        return self.certificate.fingerprint(hashes.SHA256()).hex()


def read_public_ca(state_dir: Path) -> PublicCA | None:
    """`<state_dir>/ca/ca.pem`, or None when there is none. Raises CAError when it is not a
    CA certificate devrouter would make (constrained to .localhost and loopback)."""
    paths = ca_paths(state_dir)
    try:
        fd = os.open(paths.cert, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CAError(f"cannot read {paths.cert}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        data = f.read(MAX_PEM_BYTES + 1)
    try:
        cert = x509.load_pem_x509_certificate(data[:MAX_PEM_BYTES])
    except ValueError:
        raise CAError(f"{paths.cert} is not a PEM certificate") from None
    if not constrained_to_localhost(cert):
        raise CAError(
            f"{paths.cert} is not a local CA made by devrouter (a CA that may only certify "
            "localhost names and loopback addresses), so devrouter will not trust it"
        )
    return PublicCA(paths, cert.public_bytes(serialization.Encoding.PEM), cert)


def constrained_to_localhost(cert: x509.Certificate) -> bool:
    """A CA certificate whose critical name constraints permit exactly what devrouter's do."""
    try:
        basic = cert.extensions.get_extension_for_class(x509.BasicConstraints)
        nc = cert.extensions.get_extension_for_class(x509.NameConstraints)
    except (x509.ExtensionNotFound, ValueError):
        return False
    wanted: set[x509.GeneralName] = {x509.DNSName(PERMITTED_DNS)}
    wanted |= {x509.IPAddress(net) for net in PERMITTED_NETWORKS}
    permitted = set(nc.value.permitted_subtrees or ())
    return basic.value.ca and nc.critical and permitted == wanted


# --- the bundle for services ----------------------------------------------------------------


def system_bundle(root: Path = Path("/")) -> Path | None:
    """The system's PEM bundle of trusted CAs: the first of KNOWN_BUNDLES that exists."""
    return next((root / b for b in KNOWN_BUNDLES if (root / b).is_file()), None)


def write_bundle(ca: CA, system_bundle: Path | None) -> Path:
    """Write `ca.paths.bundle`: the system bundle's certificates, then the CA's. Atomic."""
    base = b""
    if system_bundle is not None:
        with open(system_bundle, "rb") as f:
            base = f.read(MAX_BUNDLE_BYTES)
        if base and not base.endswith(b"\n"):
            base += b"\n"
    write_atomic(ca.paths.bundle, base + b"# devrouter local CA\n" + ca.cert_pem, 0o644)
    return ca.paths.bundle


def service_env(state_dir: Path, root: Path = Path("/")) -> dict[str, str]:
    """The environment that makes a service's HTTPS clients trust the local CA: Node's
    NODE_EXTRA_CA_CERTS (added to its own CAs), and for OpenSSL, Python's requests and curl a
    bundle of the system's CAs plus this one (they replace their CAs with it), rewritten when
    the system bundle or the CA is newer. {} when there is no CA yet; without a system bundle
    only NODE_EXTRA_CA_CERTS, since a bundle of the CA alone would make every other site fail.
    Raises CAError when the CA's certificate cannot be used, TrustError when the bundle
    cannot be written."""
    ca = read_public_ca(state_dir)
    if ca is None:
        return {}
    env = {"NODE_EXTRA_CA_CERTS": str(ca.paths.cert)}
    base = system_bundle(root)
    if base is None:
        return env
    try:
        if _older(ca.paths.bundle, base, ca.paths.cert):
            write_bundle(ca, base)
    except OSError as exc:
        raise TrustError(f"cannot write {ca.paths.bundle}: {exc.strerror}") from None
    bundle = str(ca.paths.bundle)
    env.update(SSL_CERT_FILE=bundle, REQUESTS_CA_BUNDLE=bundle, CURL_CA_BUNDLE=bundle)
    return env


def _older(path: Path, *than: Path) -> bool:
    """`path` is missing or older than any of `than`."""
    try:
        mtime = path.stat().st_mtime_ns
    except FileNotFoundError:
        return True
    return any(p.stat().st_mtime_ns > mtime for p in than)
