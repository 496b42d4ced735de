"""devrouter.tls.stores: finding the system store in fake roots (trust_fakes) and the NSS
databases in a temporary HOME, as tables."""

from __future__ import annotations

from pathlib import Path

import pytest
from trust_fakes import make_root

from devrouter.tls import stores


@pytest.mark.parametrize(
    ("dirs", "tools", "found"),
    [
        (["usr/local/share/ca-certificates"], ["update-ca-certificates"], "debian"),
        (["usr/local/share/ca-certificates"], [], None),  # the tool is missing
        ([], ["update-ca-certificates"], None),  # the directory is missing
        (["etc/pki/ca-trust/source/anchors"], ["update-ca-trust"], "fedora"),
        (["etc/ca-certificates/trust-source/anchors"], ["trust", "update-ca-trust"], "arch"),
        (["etc/pki/trust/anchors"], ["update-ca-certificates"], "suse"),
        (["Library/Keychains"], ["security"], None),  # no System.keychain file
        ([], [], None),
    ],
)
def test_find_system_store(
    tmp_path: Path, dirs: list[str], tools: list[str], found: str | None
) -> None:
    for d in dirs:
        (tmp_path / d).mkdir(parents=True)
    have = {t: f"/bin/{t}" for t in tools}
    store = stores.find_system_store(tmp_path, have.get)
    assert (store.flavour.key if store else None) == found
    if store is not None:
        assert store.refresh[0] == have[store.flavour.refresh[0]]
        assert store.anchors == tmp_path / store.flavour.anchors


def test_system_tools_are_looked_up_under_the_root_only(tmp_path: Path) -> None:
    root = make_root(tmp_path, "debian")
    which = stores.system_which(root)
    assert which("update-ca-certificates") == str(root / "usr/sbin/update-ca-certificates")
    assert which("sh") is None  # not the real /bin/sh: the root is all there is
    assert _system(root).bundle == root / "etc/ssl/certs/ca-certificates.crt"
    assert _system(make_root(tmp_path, "macos")).macos


def _layout(home: Path, dbs: list[str]) -> None:
    for rel in dbs:
        (home / rel).mkdir(parents=True)
        (home / rel / ("cert8.db" if "legacy" in rel else "cert9.db")).write_bytes(b"")


@pytest.mark.parametrize(
    ("platform", "certutil_path", "dbs", "labels"),
    [
        ("linux", "/usr/bin/certutil", [], ["Chromium NSS"]),  # created by trust
        ("linux", None, [], []),  # nothing to create it with
        ("darwin", "/opt/homebrew/bin/certutil", [], []),  # Chrome uses the keychain there
        ("darwin", None, [".pki/nssdb"], ["Chromium NSS"]),  # but one that exists is used
        (
            "linux",
            "/usr/bin/certutil",
            [
                ".mozilla/firefox/b.default-release",
                ".mozilla/firefox/a.legacy",  # cert8.db only: too old to matter
                "snap/firefox/common/.mozilla/firefox/s.default",
                "snap/chromium/current/.pki/nssdb",
                ".var/app/org.mozilla.firefox/.mozilla/firefox/f.default",
            ],
            [
                "Chromium NSS",
                "Chromium (snap) NSS",
                "Firefox profile b.default-release",
                "Firefox (snap) profile s.default",
                "Firefox (flatpak) profile f.default",
            ],
        ),
        (
            "darwin",
            None,
            ["Library/Application Support/Firefox/Profiles/m.x"],
            ["Firefox profile m.x"],
        ),
    ],
)
def test_find_nss_stores(
    tmp_path: Path, platform: str, certutil_path: str | None, dbs: list[str], labels: list[str]
) -> None:
    _layout(tmp_path, dbs)
    found = stores.find_nss_stores(tmp_path, certutil_path, platform)
    assert [s.label for s in found] == labels
    for s in found:
        assert s.exists == (s.dir / "cert9.db").exists()
        assert s.certutil == (certutil_path or "certutil")
        assert s.shown.startswith("~/")


def _system(root: Path) -> stores.SystemStore:
    store = stores.find_system_store(root, stores.system_which(root))
    assert store is not None
    return store
