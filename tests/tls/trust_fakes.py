"""Fake filesystem roots for devrouter.tls.trust's tests: a system store's directories and
tools in a temporary tree (DEVROUTER_TRUST_ROOT), each tool a script that records its
arguments in `<root>/calls.log` and does to the tree what the real one does to /etc. The
real /etc is never written, and the real tools are never run."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from devrouter.tls.stores import FLAVOURS, Flavour

#: The fake's own tools live here, under the root (tls.trust looks system tools up there).
TOOL_DIR = "usr/sbin"

_LINUX_TOOL = """#!/bin/sh
# A fake {tool}: records its arguments, rebuilds the bundle from base.pem and the anchors.
root="$(cd "$(dirname "$0")/../.." && pwd)"
echo "{tool} $*" >> "$root/calls.log"
cat "$root/base.pem" "$root/{anchors}"/* > "$root/{bundle}" 2>/dev/null
exit 0
"""

_SECURITY = """#!/bin/sh
# A fake macOS `security`: one trusted certificate at most, kept in keychain-trusted.pem.
root="$(cd "$(dirname "$0")/../.." && pwd)"
echo "security $*" >> "$root/calls.log"
case "$1" in
  add-trusted-cert) for last in "$@"; do :; done; cp "$last" "$root/keychain-trusted.pem" ;;
  verify-cert) cmp -s "$root/keychain-trusted.pem" "$3"; exit $? ;;
  remove-trusted-cert) rm -f "$root/keychain-trusted.pem" ;;
  delete-certificate) ;;
  *) exit 2 ;;
esac
exit 0
"""

_FAILING = """#!/bin/sh
echo "{tool}: something went wrong" >&2
exit 4
"""


def flavour(key: str) -> Flavour:
    return next(f for f in FLAVOURS if f.key == key)


def other_ca_pem() -> bytes:
    """A throwaway self-signed CA certificate: the system bundle's content."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "some public root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def make_root(base: Path, key: str, *, failing: bool = False) -> Path:
    """A fake root with the system store of flavour `key` ("debian", ..., "macos")."""
    root = base / f"root-{key}"
    f = flavour(key)
    (root / TOOL_DIR).mkdir(parents=True)
    (root / "base.pem").write_bytes(other_ca_pem())
    bundle = root / f.bundles[0]
    bundle.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(root / "base.pem", bundle)
    anchors = root / f.anchors
    tool = root / TOOL_DIR / f.refresh[0]
    if key == "macos":
        anchors.parent.mkdir(parents=True)
        anchors.write_bytes(b"")  # the System keychain's file
        tool.write_text(_SECURITY)
    else:
        anchors.mkdir(parents=True)
        tool.write_text(
            _LINUX_TOOL.format(tool=f.refresh[0], anchors=f.anchors, bundle=f.bundles[0])
        )
    if failing:
        tool.write_text(_FAILING.format(tool=f.refresh[0]))
    tool.chmod(0o755)
    return root


def calls(root: Path) -> list[str]:
    log = root / "calls.log"
    return log.read_text().splitlines() if log.exists() else []


def certutil() -> str:
    """The real certutil, or skip."""
    path = shutil.which("certutil")
    if path is None:
        pytest.skip("certutil is not installed (Debian/Ubuntu: libnss3-tools)")
    return path


def make_nssdb(directory: Path) -> Path:
    """A new, empty NSS database (what Firefox makes in a profile)."""
    directory.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [certutil(), "-N", "-d", f"sql:{directory}", "--empty-password"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    return directory


def nss_has(directory: Path, nick: str) -> bool:
    proc = subprocess.run(
        [certutil(), "-L", "-d", f"sql:{directory}", "-n", nick],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return proc.returncode == 0
