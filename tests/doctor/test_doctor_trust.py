"""doctor.trust: the verdict on the local CA's trust as a table of facts, the facts gathered
from real NSS databases (the real certutil) under a temporary HOME and from a fake system
root (DEVROUTER_TRUST_ROOT), and the check in `devrouter doctor --json`."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from devrouter.doctor import command
from devrouter.doctor.trust import TrustFacts, gather_trust, judge_trust
from devrouter.tls import stores, trust
from devrouter.tls.ca import LocalCA

PEM = Path("/s/ca/ca.pem")


@pytest.mark.parametrize(
    ("facts", "status", "message", "fixed"),
    [
        (
            TrustFacts(),
            "info",
            "no local CA yet: it is created the first time the router serves HTTPS "
            "(or by `devrouter ca`)",
            False,
        ),
        (
            TrustFacts(error="/s/ca/ca-key.pem is damaged (not a PEM key): move /s/ca away"),
            "fail",
            "the local CA cannot be used: /s/ca/ca-key.pem is damaged (not a PEM key): move "
            "/s/ca away",
            True,
        ),
        (
            TrustFacts(PEM, "ab", None, (("system (Debian/Ubuntu)", True), ("Chromium NSS", True))),
            "ok",
            "the local CA is trusted by: system (Debian/Ubuntu), Chromium NSS",
            False,
        ),
        (
            TrustFacts(
                PEM,
                "ab",
                None,
                (
                    ("system (Debian/Ubuntu)", True),
                    ("Chromium NSS", True),
                    ("Firefox profile x.default", False),
                ),
            ),
            "warn",
            "the local CA is trusted by: system (Debian/Ubuntu), Chromium NSS; NOT by Firefox "
            "profile x.default",
            True,
        ),
        (
            TrustFacts(PEM, "ab", None, (("system (macOS)", False),)),
            "warn",
            "the local CA is NOT trusted by system (macOS)",
            True,
        ),
        (
            TrustFacts(PEM, "ab", None, (("Chromium NSS", True), ("Firefox profile y", None))),
            "ok",
            "the local CA is trusted by: Chromium NSS; cannot tell for Firefox profile y (a "
            "tool or bundle is missing)",
            False,
        ),
        (
            TrustFacts(PEM, "ab", None, ()),
            "info",
            "the local CA /s/ca/ca.pem is in no trust store doctor can check (no system store "
            "or NSS database found): give clients the file itself",
            False,
        ),
    ],
)
def test_judge_trust(facts: TrustFacts, status: str, message: str, fixed: bool) -> None:
    c = judge_trust(facts)
    assert (c.check, c.status, c.message) == ("trust", status, message)
    assert (c.fix is not None) == fixed
    if c.status == "warn":
        assert c.fix is not None and "devrouter trust" in c.fix
    assert [s["store"] for s in c.data["stores"]] == [label for label, _ in facts.stores]


def _fake_debian(root: Path, bundle_pem: bytes) -> Path:
    """A system store doctor only reads: its directory, its tool and its bundle."""
    (root / "usr/local/share/ca-certificates").mkdir(parents=True)
    tool = root / "usr/sbin/update-ca-certificates"
    tool.parent.mkdir(parents=True)
    tool.write_text("#!/bin/sh\nexit 1\n")  # never run by doctor
    tool.chmod(0o755)
    bundle = root / "etc/ssl/certs/ca-certificates.crt"
    bundle.parent.mkdir(parents=True)
    bundle.write_bytes(bundle_pem)
    return root


def test_gather_trust_from_real_nss_databases(tmp_path: Path) -> None:
    certutil = shutil.which("certutil")
    if certutil is None:
        pytest.skip("certutil is not installed (Debian/Ubuntu: libnss3-tools)")
    state, home = tmp_path / "state", tmp_path / "home"
    state.mkdir(mode=0o700)
    root = _fake_debian(tmp_path / "root", b"")
    env = {"HOME": str(home), "PATH": os.environ["PATH"], stores.TRUST_ROOT_ENV: str(root)}
    assert gather_trust(state, env) == TrustFacts()

    ca = LocalCA.load_or_create(state)
    profile = home / ".mozilla/firefox/x.default"
    profile.mkdir(parents=True)
    subprocess.run(
        [certutil, "-N", "-d", f"sql:{profile}", "--empty-password"], check=True, timeout=30
    )
    _, nss = stores.find_stores(env, system=False)
    for step in trust.plan_trust(nss, ca, os.geteuid()):
        trust.perform(step, ca)
    (root / "etc/ssl/certs/ca-certificates.crt").write_bytes(ca.cert_pem)
    facts = gather_trust(state, env)
    assert facts.ca == ca.paths.cert and facts.fingerprint == ca.fingerprint_sha256()
    assert facts.stores == (
        ("system (Debian/Ubuntu)", True),
        ("Chromium NSS", True),
        ("Firefox profile x.default", True),
    )
    assert judge_trust(facts).status == "ok"

    for step in trust.plan_untrust(nss[1:], ca, os.geteuid()):
        trust.perform(step, ca)
    c = judge_trust(gather_trust(state, env))
    assert c.status == "warn"
    assert c.message.endswith("; NOT by Firefox profile x.default")

    ca.paths.key.write_text("garbage")
    assert judge_trust(gather_trust(state, env)).status == "fail"


@pytest.mark.usefixtures("isolated_home")
def test_doctor_reports_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    ca = LocalCA.load_or_create(state)
    monkeypatch.setenv(stores.TRUST_ROOT_ENV, str(_fake_debian(tmp_path / "root", ca.cert_pem)))
    monkeypatch.setenv("PATH", str(tmp_path / "nobin"))  # no certutil: only the system store
    out = io.StringIO()
    command.main(["--json"], out)
    [check] = [c for c in json.loads(out.getvalue())["checks"] if c["check"] == "trust"]
    assert check["status"] == "ok"
    assert check["message"] == "the local CA is trusted by: system (Debian/Ubuntu)"
    assert check["data"] == {
        "ca": str(ca.paths.cert),
        "fingerprint": ca.fingerprint_sha256(),
        "error": None,
        "stores": [{"store": "system (Debian/Ubuntu)", "trusted": True}],
    }
