"""devrouter.tls.ca: the local CA and its leaves, checked field by field with `cryptography`,
on real files in a temporary state directory, and with the openssl command line when present."""

from __future__ import annotations

import ipaddress
import os
import shutil
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from devrouter.core.errors import CAError, StartupError
from devrouter.tls.ca import (
    BACKDATE,
    CA_VALIDITY,
    LEAF_VALIDITY,
    RENEW_BEFORE,
    LocalCA,
    ca_common_name,
    ca_paths,
    leaf_name,
)


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def ca(state: Path) -> LocalCA:
    return LocalCA.load_or_create(state)


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def cert_of(pem: bytes) -> x509.Certificate:
    return x509.load_pem_x509_certificate(pem)


def ext(cert: x509.Certificate, kind: type[Any]) -> x509.Extension[Any]:
    return cert.extensions.get_extension_for_class(kind)


# --- leaf_name: what name's leaf answers an SNI value --------------------------------------

LONGEST = ".".join(["a" * 60] * 3 + ["a" * 58]) + ".localhost"  # 251 characters
TOO_LONG = "b" + LONGEST  # 252
DEEP = "a.b.c.d.e.f.g.localhost"  # 8 labels with localhost
TOO_DEEP = "a.b.c.d.e.f.g.h.localhost"


@pytest.mark.parametrize(
    ("sni", "expected"),
    [
        (None, "localhost"),
        ("", "localhost"),
        (".", "localhost"),
        ("localhost", "localhost"),
        ("LOCALHOST.", "localhost"),
        ("api.localhost", "api.localhost"),
        ("API.LocalHost", "api.localhost"),
        ("api.localhost.", "api.localhost"),  # a fully qualified name's root dot
        ("api.localhost..", "localhost"),
        ("web.shop.localhost", "web.shop.localhost"),
        ("xn--bcher-kva.localhost", "xn--bcher-kva.localhost"),  # an IDN's A-label
        ("my-app2.localhost", "my-app2.localhost"),
        # IP literals: the default leaf, which covers 127.0.0.1 and ::1
        ("127.0.0.1", "localhost"),
        ("::1", "localhost"),
        ("[::1]", "localhost"),
        # foreign names: never minted
        ("evil.example", "localhost"),
        ("localhost.evil.example", "localhost"),
        ("api.localhost.evil.example", "localhost"),
        ("evillocalhost", "localhost"),
        ("api.localhostx", "localhost"),
        # not DNS labels
        ("*.localhost", "localhost"),
        ("*.api.localhost", "localhost"),
        ("-api.localhost", "localhost"),
        ("api-.localhost", "localhost"),
        ("a_b.localhost", "localhost"),
        ("a..b.localhost", "localhost"),
        (".api.localhost", "localhost"),
        ("api.localhost\n", "localhost"),
        ("api .localhost", "localhost"),
        ("a/../b.localhost", "localhost"),
        ("\u212aey.localhost", "localhost"),  # KELVIN SIGN lowercases to an ASCII "k"
        ("bücher.localhost", "localhost"),
        (f"{'a' * 64}.localhost", "localhost"),  # a label is at most 63
        (f"{'a' * 63}.localhost", f"{'a' * 63}.localhost"),
        # depth and length
        (DEEP, DEEP),
        (TOO_DEEP, "localhost"),
        (LONGEST, LONGEST),  # the longest name that is issued
        (TOO_LONG, "localhost"),
        ("a" * 10_000 + ".localhost", "localhost"),
    ],
)
def test_leaf_name(sni: str | None, expected: str) -> None:
    assert (len(LONGEST), len(TOO_LONG)) == (251, 252)
    assert leaf_name(sni) == expected


def test_ca_common_name_fits_x520() -> None:
    assert ca_common_name("ann@laptop") == "devrouter local CA (ann@laptop)"
    long = ca_common_name("a" * 100 + "@" + "b" * 100)
    assert len(long) == 64
    assert long.startswith("devrouter local CA (aaa") and long.endswith("...)")


# --- the CA certificate ---------------------------------------------------------------------


def test_ca_certificate_fields(ca: LocalCA) -> None:
    cert = ca.certificate
    assert cert_of(ca.cert_pem) == cert
    assert cert_of(ca.paths.cert.read_bytes()) == cert

    key = cert.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    assert key.curve.name == "secp256r1"
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    assert cert.issuer == cert.subject
    cert.verify_directly_issued_by(cert)  # self-signed

    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == CA_VALIDITY + BACKDATE
    assert timedelta(days=3650) <= CA_VALIDITY
    assert cert.not_valid_before_utc <= datetime.now(UTC) - BACKDATE + timedelta(minutes=1)

    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "devrouter"
    cn = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value
    assert isinstance(cn, str) and cn.startswith("devrouter local CA (") and "@" in cn

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and basic.value.ca and basic.value.path_length == 0

    usage = ext(cert, x509.KeyUsage)
    assert usage.critical
    assert usage.value.key_cert_sign and usage.value.crl_sign
    assert not usage.value.digital_signature and not usage.value.key_encipherment

    ski = ext(cert, x509.SubjectKeyIdentifier)
    assert not ski.critical
    assert ski.value == x509.SubjectKeyIdentifier.from_public_key(key)

    nc = ext(cert, x509.NameConstraints)
    assert nc.critical  # RFC 5280 §4.2.1.10
    assert nc.value.excluded_subtrees is None
    assert set(nc.value.permitted_subtrees or ()) == {
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_network("127.0.0.0/8")),
        x509.IPAddress(ipaddress.ip_network("::1/128")),
    }

    assert len(ca.fingerprint_sha256()) == 64
    assert bytes.fromhex(ca.fingerprint_sha256()) == cert.fingerprint(hashes.SHA256())


# --- leaves ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "sans"),
    [
        ("api.localhost", {x509.DNSName("api.localhost"), x509.DNSName("*.api.localhost")}),
        (
            "web.shop.localhost",
            {x509.DNSName("web.shop.localhost"), x509.DNSName("*.web.shop.localhost")},
        ),
        (
            "localhost",  # the default leaf: no wildcard directly under localhost
            {
                x509.DNSName("localhost"),
                x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                x509.IPAddress(ipaddress.ip_address("::1")),
            },
        ),
    ],
)
def test_leaf_fields(ca: LocalCA, name: str, sans: set[x509.GeneralName]) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    leaf = ca.issue(name, now)
    cert = cert_of(leaf.cert_pem)
    assert leaf.name == name
    assert leaf.not_after == cert.not_valid_after_utc == now + LEAF_VALIDITY
    assert cert.not_valid_before_utc == now - BACKDATE

    key = serialization.load_pem_private_key(leaf.key_pem, None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    assert key.public_key() == cert.public_key()
    assert isinstance(cert.signature_hash_algorithm, hashes.SHA256)
    cert.verify_directly_issued_by(ca.certificate)
    assert cert.issuer == ca.certificate.subject

    basic = ext(cert, x509.BasicConstraints)
    assert basic.critical and not basic.value.ca
    usage = ext(cert, x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature
    assert not (usage.value.key_cert_sign or usage.value.crl_sign or usage.value.key_encipherment)
    assert list(ext(cert, x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]

    aki = ext(cert, x509.AuthorityKeyIdentifier).value
    ca_ski = ext(ca.certificate, x509.SubjectKeyIdentifier).value
    assert aki.key_identifier == ca_ski.digest

    assert set(ext(cert, x509.SubjectAlternativeName).value) == sans
    assert x509.DNSName("*.localhost") not in set(ext(cert, x509.SubjectAlternativeName).value)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name

    # One file per leaf, certificate then key, as the TLS context loads it.
    assert ca.paths.leaf(name).read_bytes() == leaf.cert_pem + leaf.key_pem


def test_leaves_are_serial_unique_and_keys_fresh(ca: LocalCA) -> None:
    a, b = ca.issue("api.localhost"), ca.issue("api.localhost")
    assert cert_of(a.cert_pem).serial_number != cert_of(b.cert_pem).serial_number
    assert a.key_pem != b.key_pem
    assert cert_of(a.cert_pem).serial_number.bit_length() > 64


def test_a_leaf_never_outlives_its_ca(ca: LocalCA) -> None:
    late = ca.certificate.not_valid_after_utc - timedelta(days=3)
    leaf = ca.issue("api.localhost", late)
    assert leaf.not_after == ca.certificate.not_valid_after_utc


@pytest.mark.parametrize(
    "name", ["evil.example", "*.localhost", "API.localhost", "api.localhost.", "", "../ca-key"]
)
def test_only_names_from_leaf_name_are_issued(ca: LocalCA, name: str) -> None:
    with pytest.raises(ValueError, match="not a name devrouter issues"):
        ca.issue(name)
    assert not ca.paths.leaves.exists() or not any(ca.paths.leaves.iterdir())


def test_the_longest_name_fits_its_file(ca: LocalCA) -> None:
    leaf = ca.issue(LONGEST)
    assert ca.paths.leaf(LONGEST).name == f"{LONGEST}.pem"
    cert = cert_of(leaf.cert_pem)
    assert not cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)  # over 64: SAN only
    assert ca.stored_leaf(LONGEST) == leaf


# --- files: modes, atomic writes, reuse -----------------------------------------------------


def test_files_and_modes(state: Path) -> None:
    old = os.umask(0)  # the modes do not depend on the umask ...
    try:
        ca = LocalCA.load_or_create(state)
        ca.issue("api.localhost")
    finally:
        os.umask(old)
    paths = ca_paths(state)
    assert paths == ca.paths
    assert (paths.dir, paths.cert, paths.key, paths.leaves, paths.bundle) == (
        state / "ca",
        state / "ca" / "ca.pem",
        state / "ca" / "ca-key.pem",
        state / "ca" / "leaves",
        state / "ca" / "bundle.pem",
    )
    assert mode(paths.dir) == 0o700
    assert mode(paths.cert) == 0o644
    assert mode(paths.key) == 0o600
    assert mode(paths.leaves) == 0o700
    assert mode(paths.leaf("api.localhost")) == 0o600
    for p in (paths.dir, paths.cert, paths.key, paths.leaves):
        assert os.stat(p).st_uid == os.geteuid()
    # ... in both directions: a strict umask does not hide the public certificate.
    other = state.parent / "other"
    other.mkdir(mode=0o700)
    old = os.umask(0o077)
    try:
        LocalCA.load_or_create(other)
    finally:
        os.umask(old)
    assert mode(ca_paths(other).cert) == 0o644
    # No temporary file is left behind.
    leftovers = [p.name for p in paths.dir.rglob("*") if p.name.endswith(".tmp")]
    assert leftovers == []


def test_the_key_is_private_from_its_first_byte(
    state: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path: Any, flags: int, mode: int = 0o777, *a: Any, **kw: Any) -> int:
        calls.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(os, "open", spy)  # as devrouter.tls.ca calls it
    LocalCA.load_or_create(state)
    monkeypatch.undo()
    (key_tmp,) = [c for c in calls if Path(c[0]).name.startswith(".ca-key.pem.")]
    _, flags, created_mode = key_tmp
    assert flags & os.O_CREAT and flags & os.O_EXCL and flags & os.O_NOFOLLOW
    assert created_mode == 0o600
    # It was renamed into place: ca-key.pem is that file, not a copy.
    assert Path(key_tmp[0]).parent == ca_paths(state).dir
    assert not Path(key_tmp[0]).exists()


def test_the_ca_is_reused(state: Path) -> None:
    assert LocalCA.load(state) is None  # none yet
    assert LocalCA.load(state / "missing") is None
    first = LocalCA.load_or_create(state)
    key_before = first.paths.key.read_bytes()
    second = LocalCA.load_or_create(state)
    loaded = LocalCA.load(state)
    assert loaded is not None
    for other in (second, loaded):
        assert other.fingerprint_sha256() == first.fingerprint_sha256()
        assert other.cert_pem == first.cert_pem
    assert first.paths.key.read_bytes() == key_before
    # A leaf issued by the first is one the reloaded CA can use.
    leaf = first.issue("api.localhost")
    stored = loaded.stored_leaf("api.localhost")
    assert stored is not None and stored.cert_pem == leaf.cert_pem


def test_processes_starting_at_once_make_one_ca(state: Path) -> None:
    # flock(2) locks belong to open files, so threads contend as processes would.
    with ThreadPoolExecutor(6) as pool:
        cas = list(pool.map(lambda _: LocalCA.load_or_create(state), range(6)))
    assert len({c.fingerprint_sha256() for c in cas}) == 1
    assert LocalCA.load(state) is not None


def test_an_empty_ca_dir_gets_a_ca(state: Path) -> None:
    ca_paths(state).dir.mkdir(mode=0o700)
    assert LocalCA.load(state) is None
    assert LocalCA.load_or_create(state).paths.cert.exists()


def test_a_missing_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CAError, match="cannot create the CA directory"):
        LocalCA.load_or_create(tmp_path / "nope")


# --- refusals: unsafe files -----------------------------------------------------------------


def test_a_group_readable_key_is_refused(ca: LocalCA, state: Path) -> None:
    os.chmod(ca.paths.key, 0o640)
    for attempt in (LocalCA.load, LocalCA.load_or_create):
        with pytest.raises(CAError) as info:
            attempt(state)
        message = str(info.value)
        assert "ca-key.pem is open to other users (mode 0640)" in message
        assert f"chmod 600 {ca.paths.key}" in message
        assert "\n" not in message
    assert isinstance(info.value, StartupError)
    os.chmod(ca.paths.key, 0o600)
    assert LocalCA.load(state) is not None


@pytest.mark.parametrize("bad_mode", [0o750, 0o705, 0o777])
def test_an_open_ca_dir_is_refused(ca: LocalCA, state: Path, bad_mode: int) -> None:
    os.chmod(ca.paths.dir, bad_mode)
    try:
        with pytest.raises(CAError, match=rf"open to other users .*chmod 700 {ca.paths.dir}"):
            LocalCA.load_or_create(state)
    finally:
        os.chmod(ca.paths.dir, 0o700)


def test_a_symlinked_key_is_refused(ca: LocalCA, state: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "key.pem"
    shutil.move(ca.paths.key, elsewhere)
    ca.paths.key.symlink_to(elsewhere)
    with pytest.raises(CAError, match="is a symbolic link"):
        LocalCA.load(state)


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another user")
@pytest.mark.parametrize("which", ["dir", "key"])
def test_files_of_another_user_are_refused(ca: LocalCA, state: Path, which: str) -> None:
    target = ca.paths.dir if which == "dir" else ca.paths.key
    os.chown(target, 65534, -1)
    try:
        with pytest.raises(CAError, match=r"belongs to another user \(uid 65534\)"):
            LocalCA.load_or_create(state)
    finally:
        os.chown(target, os.geteuid(), -1)


# --- refusals: damaged files are never replaced ---------------------------------------------


def _other_key_pem() -> bytes:
    return ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.cert.write_bytes(b"garbage"), r"ca\.pem is damaged \(not a PEM certificate\)"),
        (lambda p: p.cert.write_bytes(b""), r"ca\.pem is damaged"),
        (lambda p: p.key.write_bytes(b"garbage"), r"ca-key\.pem is damaged \(not an unencrypted"),
        (lambda p: p.key.write_bytes(_other_key_pem()), r"it is not the key of ca\.pem"),
        (lambda p: p.key.unlink(), r"ca-key\.pem is missing"),
        (lambda p: p.cert.unlink(), r"has no certificate next to it"),
        (lambda p: p.cert.write_bytes(b"x" * 100_000), r"too large"),
    ],
    ids=["cert-garbage", "cert-empty", "key-garbage", "key-other", "no-key", "no-cert", "huge"],
)
def test_damaged_files_are_refused_not_replaced(
    ca: LocalCA, state: Path, damage: Any, message: str
) -> None:
    damage(ca.paths)
    before = {p.name: p.read_bytes() for p in (ca.paths.cert, ca.paths.key) if p.exists()}
    for attempt in (LocalCA.load, LocalCA.load_or_create):
        with pytest.raises(CAError, match=message) as info:
            attempt(state)
        assert "\n" not in str(info.value)
        assert "move" in str(info.value) and str(ca.paths.dir) in str(info.value)
    after = {p.name: p.read_bytes() for p in (ca.paths.cert, ca.paths.key) if p.exists()}
    assert after == before


# --- renewal --------------------------------------------------------------------------------


def serial(leaf: Any) -> int:
    return cert_of(leaf.cert_pem).serial_number


def test_a_stored_leaf_is_reused_until_it_is_due(ca: LocalCA) -> None:
    t0 = datetime(2030, 1, 1, tzinfo=UTC)
    first = ca.leaf("api.localhost", t0)
    assert first.renew_at == t0 + LEAF_VALIDITY - RENEW_BEFORE
    # Fresh enough: the same certificate, from its file.
    for later in (t0, t0 + timedelta(days=22), first.renew_at - timedelta(seconds=1)):
        assert serial(ca.leaf("api.localhost", later)) == serial(first)
    # Fewer than 7 days left: a new one, written over the old file.
    renewed = ca.leaf("api.localhost", first.renew_at)
    assert serial(renewed) != serial(first)
    assert renewed.not_after == first.renew_at + LEAF_VALIDITY
    assert cert_of(ca.paths.leaf("api.localhost").read_bytes()).serial_number == serial(renewed)
    # A clock that went back before a leaf's start: reissued too.
    assert serial(ca.leaf("api.localhost", t0 - timedelta(days=1))) != serial(renewed)


def test_a_leaf_of_another_ca_is_reissued(ca: LocalCA, tmp_path: Path) -> None:
    other_state = tmp_path / "other"
    other_state.mkdir(mode=0o700)
    other = LocalCA.load_or_create(other_state)
    foreign = other.issue("api.localhost")
    ca.paths.leaves.mkdir(mode=0o700, exist_ok=True)
    ca.paths.leaf("api.localhost").write_bytes(foreign.cert_pem + foreign.key_pem)
    os.chmod(ca.paths.leaf("api.localhost"), 0o600)
    assert ca.stored_leaf("api.localhost") is None
    mine = ca.leaf("api.localhost")
    cert_of(mine.cert_pem).verify_directly_issued_by(ca.certificate)


@pytest.mark.parametrize(
    "damage",
    [
        lambda p: p.write_bytes(b"garbage"),
        lambda p: p.write_bytes(p.read_bytes().split(b"-----BEGIN PRIVATE KEY")[0]),  # no key
        lambda p: p.write_bytes(p.read_bytes().split(b"-----END CERTIFICATE-----\n")[0]),
        lambda p: os.chmod(p, 0o644),  # a leaf key others could read
    ],
    ids=["garbage", "no-key", "cut", "world-readable"],
)
def test_a_damaged_or_open_leaf_file_is_reissued(ca: LocalCA, damage: Any) -> None:
    first = ca.issue("api.localhost")
    path = ca.paths.leaf("api.localhost")
    damage(path)
    again = ca.leaf("api.localhost")
    assert serial(again) != serial(first)
    assert mode(path) == 0o600
    assert path.read_bytes() == again.cert_pem + again.key_pem


def test_a_leaf_naming_other_names_is_reissued(ca: LocalCA) -> None:
    shop = ca.issue("shop.localhost")
    ca.paths.leaf("api.localhost").write_bytes(shop.cert_pem + shop.key_pem)
    os.chmod(ca.paths.leaf("api.localhost"), 0o600)
    assert ca.stored_leaf("api.localhost") is None


# --- the openssl command line ---------------------------------------------------------------

OPENSSL = shutil.which("openssl")
needs_openssl = pytest.mark.skipif(OPENSSL is None, reason="openssl is not installed")


def openssl(*args: str) -> subprocess.CompletedProcess[str]:
    assert OPENSSL is not None
    return subprocess.run([OPENSSL, *args], capture_output=True, text=True, timeout=20, check=False)


@needs_openssl
@pytest.mark.parametrize("name", ["localhost", "api.localhost", "web.shop.localhost"])
def test_openssl_verifies_the_leaves(ca: LocalCA, name: str) -> None:
    ca.issue(name)
    proc = openssl(
        "verify", "-x509_strict", "-purpose", "sslserver", "-CAfile", str(ca.paths.cert),
        str(ca.paths.leaf(name)),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith(": OK")


@needs_openssl
def test_openssl_shows_the_name_constraints(ca: LocalCA) -> None:
    proc = openssl("x509", "-noout", "-text", "-in", str(ca.paths.cert))
    assert proc.returncode == 0, proc.stderr
    text = proc.stdout
    assert "X509v3 Name Constraints: critical" in text
    permitted = text.split("Permitted:")[1]
    assert "DNS:localhost" in permitted
    assert "IP:127.0.0.0/255.0.0.0" in permitted
    assert "IP:0:0:0:0:0:0:0:1/FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF" in permitted
    assert "Excluded" not in text
    assert "X509v3 Basic Constraints: critical\n                CA:TRUE, pathlen:0" in text
    assert "X509v3 Key Usage: critical\n                Certificate Sign, CRL Sign" in text
    assert "Signature Algorithm: ecdsa-with-SHA256" in text
    assert "ASN1 OID: prime256v1" in text


@needs_openssl
@pytest.mark.parametrize(
    "sans",
    [
        [x509.DNSName("evil.example")],
        [x509.DNSName("localhost.evil.example")],
        [x509.IPAddress(ipaddress.ip_address("192.168.1.1"))],
        [x509.IPAddress(ipaddress.ip_address("::2"))],
    ],
    ids=["foreign-name", "localhost-prefix", "lan-ip", "other-ipv6"],
)
def test_a_stolen_ca_key_cannot_mint_other_names(
    ca: LocalCA, tmp_path: Path, sans: list[x509.GeneralName]
) -> None:
    """What the name constraints are for: a leaf signed with the real CA key for any other
    name or address fails verification."""
    ca_key = serialization.load_pem_private_key(ca.paths.key.read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    forged = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "forged")]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    path = tmp_path / "forged.pem"
    path.write_bytes(forged.public_bytes(serialization.Encoding.PEM))
    proc = openssl("verify", "-CAfile", str(ca.paths.cert), str(path))
    assert proc.returncode != 0
    assert "permitted subtree violation" in proc.stdout + proc.stderr
