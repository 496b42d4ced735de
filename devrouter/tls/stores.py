"""The trust stores clients look in for trusted CAs, as data, and how to find this machine's
and this user's (devrouter.tls.trust plans, checks and changes them).

- The system store (one of FLAVOURS). Linux distributions keep added CAs as files in an
  anchors directory and rebuild a PEM bundle from them (update-ca-certificates,
  update-ca-trust, trust extract-compat); OpenSSL-based clients (curl, Python's ssl, git)
  read that bundle. macOS keeps them in the System keychain (`security`), which Chrome and
  Safari read. Changing either needs root; everything else is the user's.
- NSS databases, changed with `certutil`: Chrome and Chromium on Linux (and Brave, Edge and
  Vivaldi, which share it) read `~/.pki/nssdb`; Firefox reads each profile's own. On Linux,
  `~/.pki/nssdb` is planned even when it is missing, if certutil is there (trust creates
  it): it is the shared database every NSS program of the user reads, and Chrome adopts one
  it finds when it first runs, so a browser installed later trusts the CA too, while telling
  whether Chrome is installed (a package, a flatpak, a tarball, a renamed fork) is
  guesswork. Firefox profiles are only used when they exist.

A system store is found by its tools and directories under a filesystem root: `/`, or the
directory in $DEVROUTER_TRUST_ROOT, which exists for tests only (a fake root with recording
scripts in place of the system's tools). System tools are looked up under the root, never on
$PATH, so such a test never reaches the real /etc, and root runs what sudo would.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

#: Test-only: the filesystem root the system store is looked for under (default `/`).
TRUST_ROOT_ENV = "DEVROUTER_TRUST_ROOT"
#: Where system tools are looked for, under the root (not $PATH: what sudo would run).
SYSTEM_BIN_DIRS = ("usr/local/sbin", "usr/local/bin", "usr/sbin", "usr/bin", "sbin", "bin")

Which = Callable[[str], str | None]


@dataclass(frozen=True)
class Flavour:
    """A kind of system store. Paths are relative to the filesystem root."""

    key: str
    name: str
    anchors: str  # the directory of added CAs (macOS: the System keychain)
    refresh: tuple[str, ...]  # rebuilds the bundles from the anchors (macOS: the tool alone)
    bundles: tuple[str, ...]  # the PEM bundles clients read, the first that exists is used


FLAVOURS = (
    Flavour(
        "debian",
        "Debian/Ubuntu",
        "usr/local/share/ca-certificates",
        ("update-ca-certificates",),
        ("etc/ssl/certs/ca-certificates.crt",),
    ),
    Flavour(
        "fedora",
        "Fedora/RHEL",
        "etc/pki/ca-trust/source/anchors",
        ("update-ca-trust",),
        ("etc/pki/tls/certs/ca-bundle.crt", "etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem"),
    ),
    Flavour(
        "arch",
        "Arch",
        "etc/ca-certificates/trust-source/anchors",
        ("trust", "extract-compat"),
        ("etc/ssl/certs/ca-certificates.crt", "etc/ssl/cert.pem"),
    ),
    Flavour(
        "suse",
        "openSUSE",
        "etc/pki/trust/anchors",
        ("update-ca-certificates",),
        ("etc/ssl/ca-bundle.pem",),
    ),
    Flavour(
        "macos", "macOS", "Library/Keychains/System.keychain", ("security",), ("etc/ssl/cert.pem",)
    ),
)
#: Every bundle a system may have, for services' bundle (`system_bundle`).
KNOWN_BUNDLES = tuple(dict.fromkeys(b for f in FLAVOURS for b in f.bundles))


@dataclass(frozen=True)
class SystemStore:
    flavour: Flavour
    anchors: Path  # under the root (macOS: the keychain file)
    refresh: tuple[str, ...]  # argv, its tool's full path first
    bundle: Path | None  # the bundle the refresh writes, when there is one
    needs_root = True

    @property
    def macos(self) -> bool:
        return self.flavour.key == "macos"

    @property
    def label(self) -> str:
        return f"system ({self.flavour.name})"

    @property
    def title(self) -> str:
        return "the macOS System keychain" if self.macos else f"the {self.label} store"


@dataclass(frozen=True)
class NSSStore:
    app: str  # "Chromium", "Firefox", "Firefox (snap)" ...
    dir: Path
    shown: str  # the directory as the user is shown it (~ for the home directory)
    certutil: str  # its full path, or the bare name when it is not installed
    exists: bool = True  # False: trust creates the database first
    profile: str | None = None  # a Firefox profile's directory name
    needs_root = False

    @property
    def label(self) -> str:
        return f"{self.app} profile {self.profile}" if self.profile else f"{self.app} NSS"

    @property
    def title(self) -> str:
        if self.profile:
            return f"{self.app} profile {self.profile} ({self.shown})"
        return f"{self.app}'s NSS database {self.shown}"

    @property
    def db(self) -> str:
        return f"sql:{self.dir}"


Store = SystemStore | NSSStore


def system_which(root: Path) -> Which:
    """Look a system tool up in the system's directories under `root`."""
    path = os.pathsep.join(str(root / d) for d in SYSTEM_BIN_DIRS)
    return lambda name: shutil.which(name, path=path)


def find_system_store(root: Path, which: Which) -> SystemStore | None:
    """The first flavour whose anchors exist under `root` and whose tool `which` finds."""
    for flavour in FLAVOURS:
        anchors = root / flavour.anchors
        tool = which(flavour.refresh[0])
        present = anchors.is_file() if flavour.key == "macos" else anchors.is_dir()
        if present and tool:
            bundle = next((root / b for b in flavour.bundles if (root / b).is_file()), None)
            return SystemStore(flavour, anchors, (tool, *flavour.refresh[1:]), bundle)
    return None


#: NSS databases that are used when they exist: (app, directory under $HOME).
_NSS_DIRS = (("Chromium (snap)", "snap/chromium/current/.pki/nssdb"),)
#: Directories whose subdirectories holding cert9.db are Firefox profiles: (app, directory).
_FIREFOX_DIRS = (
    ("Firefox", ".mozilla/firefox"),
    ("Firefox (snap)", "snap/firefox/common/.mozilla/firefox"),
    ("Firefox (flatpak)", ".var/app/org.mozilla.firefox/.mozilla/firefox"),
    ("Firefox", "Library/Application Support/Firefox/Profiles"),
)
SHARED_NSSDB = ".pki/nssdb"


def find_nss_stores(home: Path, certutil: str | None, platform: str) -> list[NSSStore]:
    """The user's NSS databases: the shared one (Chrome/Chromium), planned even when it is
    missing on Linux if certutil is there (see the module's docstring), and Firefox profiles."""
    tool = certutil or "certutil"
    out: list[NSSStore] = []
    shared = home / SHARED_NSSDB
    if (shared / "cert9.db").is_file() or (platform.startswith("linux") and certutil):
        out.append(
            NSSStore("Chromium", shared, _shown(shared, home), tool, (shared / "cert9.db").exists())
        )
    for app, rel in _NSS_DIRS:
        d = home / rel
        if (d / "cert9.db").is_file():
            out.append(NSSStore(app, d, _shown(d, home), tool))
    for app, rel in _FIREFOX_DIRS:
        base = home / rel
        with contextlib.suppress(OSError):
            for d in sorted(base.iterdir()):
                if (d / "cert9.db").is_file():
                    out.append(NSSStore(app, d, _shown(d, home), tool, profile=d.name))
    return out


def trust_root(env: Mapping[str, str]) -> Path:
    return Path(env.get(TRUST_ROOT_ENV) or "/")


def find_stores(
    env: Mapping[str, str], *, system: bool = True, user: bool = True
) -> tuple[SystemStore | None, list[NSSStore]]:
    """The stores of this machine and user, from the environment ($HOME, $PATH)."""
    root = trust_root(env)
    sys_store = find_system_store(root, system_which(root)) if system else None
    nss: list[NSSStore] = []
    if user:
        home = Path(env.get("HOME") or Path.home())
        certutil = shutil.which("certutil", path=env.get("PATH", os.defpath))
        nss = find_nss_stores(home, certutil, sys.platform)
    return sys_store, nss


def _shown(path: Path, home: Path) -> str:
    try:
        return f"~/{path.relative_to(home)}"
    except ValueError:
        return str(path)
