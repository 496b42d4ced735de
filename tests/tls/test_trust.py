"""devrouter.tls.trust: the plans as tables; the real certutil against NSS databases under a
temporary HOME; the system stores against fake roots whose tools are recording scripts
(trust_fakes); the bundle for services, checked by Python's ssl and by curl against a real
TLS server. The real /etc and $HOME are never touched."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from trust_fakes import calls, certutil, flavour, make_nssdb, make_root, nss_has, other_ca_pem

from devrouter.core.errors import CAError, TrustError
from devrouter.tls import stores, trust
from devrouter.tls.ca import LocalCA
from devrouter.tls.stores import NSSStore, SystemStore
from devrouter.tls.trust import Step

#: Upper bound for a TLS exchange in a test, in seconds.
IO_TIMEOUT_S = 10.0


@pytest.fixture
def state(tmp_path: Path) -> Path:
    d = tmp_path / "state"
    d.mkdir(mode=0o700)
    return d


@pytest.fixture
def ca(state: Path) -> LocalCA:
    return LocalCA.load_or_create(state)


def system_store(root: Path, key: str) -> SystemStore:
    store = stores.find_system_store(root, stores.system_which(root))
    assert store is not None and store.flavour.key == key
    return store


# --- plans (pure) -------------------------------------------------------------------------


def _rows(steps: list[Step]) -> list[tuple[str, bool, bool]]:
    return [(s.command(), s.needs_root, s.deferred) for s in steps]


@pytest.mark.parametrize("uid", [0, 1000])
@pytest.mark.parametrize(
    ("key", "trusting", "untrusting"),
    [
        (
            "debian",
            ["cp {pem} {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/update-ca-certificates"],
            ["rm -f {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/update-ca-certificates"],
        ),
        (
            "fedora",
            ["cp {pem} {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/update-ca-trust"],
            ["rm -f {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/update-ca-trust"],
        ),
        (
            "arch",
            ["cp {pem} {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/trust extract-compat"],
            ["rm -f {anchors}/devrouter-{fp}.crt", "/r/usr/sbin/trust extract-compat"],
        ),
        (
            "macos",
            ["/r/usr/sbin/security add-trusted-cert -d -r trustRoot -k {anchors} {pem}"],
            [
                "/r/usr/sbin/security remove-trusted-cert -d {pem}",
                "/r/usr/sbin/security delete-certificate -Z {sha1} {anchors}",
            ],
        ),
    ],
)
def test_system_plans(
    ca: LocalCA, key: str, trusting: list[str], untrusting: list[str], uid: int
) -> None:
    f = flavour(key)
    root = Path("/r")
    tool = f"/r/usr/sbin/{f.refresh[0]}"
    store = SystemStore(f, root / f.anchors, (tool, *f.refresh[1:]), root / f.bundles[0])
    names = {
        "pem": ca.paths.cert,
        "anchors": root / f.anchors,
        "fp": ca.fingerprint_sha256()[:8],
        "sha1": ca.certificate.fingerprint(hashes.SHA1()).hex().upper(),
    }
    deferred = uid != 0  # root's steps are printed, not done, by anyone else
    want = [(line.format(**names), True, deferred) for line in trusting]
    assert _rows(trust.plan_trust([store], ca, uid)) == want
    want = [(line.format(**names), True, deferred) for line in untrusting]
    assert _rows(trust.plan_untrust([store], ca, uid)) == want


@pytest.mark.parametrize(
    ("exists", "trusting"),
    [
        (
            True,
            ["/bin/certutil -A -d sql:/h/db -t C,, -n 'devrouter local CA {fp}' -i {pem}"],
        ),
        (
            False,
            [
                "mkdir -p -m 700 /h/db",
                "/bin/certutil -N -d sql:/h/db --empty-password",
                "/bin/certutil -A -d sql:/h/db -t C,, -n 'devrouter local CA {fp}' -i {pem}",
            ],
        ),
    ],
)
@pytest.mark.parametrize("uid", [0, 1000])
def test_nss_plans(ca: LocalCA, exists: bool, trusting: list[str], uid: int) -> None:
    store = NSSStore("Chromium", Path("/h/db"), "~/db", "/bin/certutil", exists)
    names = {"pem": ca.paths.cert, "fp": ca.fingerprint_sha256()[:8]}
    want = [(line.format(**names), False, False) for line in trusting]
    assert _rows(trust.plan_trust([store], ca, uid)) == want
    remove = "/bin/certutil -D -d sql:/h/db -n 'devrouter local CA {fp}'".format(**names)
    assert _rows(trust.plan_untrust([store], ca, uid)) == [(remove, False, False)]


def test_plans_keep_the_order_of_the_stores(ca: LocalCA) -> None:
    f = flavour("debian")
    system = SystemStore(f, Path("/a"), ("/u",), None)
    nss = NSSStore("Firefox", Path("/p"), "~/p", "certutil", profile="p")
    assert [s.store for s in trust.plan_trust([nss, system], ca, 0)] == [nss, system, system]


def test_two_cas_have_two_names(tmp_path: Path, ca: LocalCA) -> None:
    other_state = tmp_path / "other"
    other_state.mkdir(mode=0o700)
    other = LocalCA.load_or_create(other_state)
    assert trust.nickname(ca) != trust.nickname(other)
    assert trust.nickname(ca) == f"devrouter local CA {ca.fingerprint_sha256()[:8]}"
    store = SystemStore(flavour("debian"), Path("/a"), ("/u",), None)
    assert trust.anchor_file(store, ca) != trust.anchor_file(store, other)


# --- the CA's certificate alone -----------------------------------------------------------


def test_read_public_ca(state: Path, ca: LocalCA) -> None:
    public = trust.read_public_ca(state)
    assert public is not None
    assert public.cert_pem == ca.cert_pem
    assert public.fingerprint_sha256() == ca.fingerprint_sha256()
    assert public.paths == ca.paths
    assert trust.read_public_ca(state.parent / "nothing") is None


def test_a_certificate_devrouter_did_not_make_is_never_trusted(state: Path, ca: LocalCA) -> None:
    ca.paths.cert.write_bytes(other_ca_pem())  # unconstrained: it could vouch for any name
    with pytest.raises(CAError, match="not a local CA made by devrouter"):
        trust.read_public_ca(state)
    ca.paths.cert.write_bytes(b"not a certificate")
    with pytest.raises(CAError, match="not a PEM certificate"):
        trust.read_public_ca(state)
    ca.paths.cert.unlink()
    ca.paths.cert.symlink_to("/etc/hostname")
    with pytest.raises(CAError, match="cannot read"):
        trust.read_public_ca(state)


def test_pem_certificates(ca: LocalCA) -> None:
    der = ca.certificate.public_bytes(serialization.Encoding.DER)
    pem = ca.cert_pem
    assert trust.pem_certificates(b"# a comment\n" + other_ca_pem() + pem) >= {der}
    assert trust.pem_certificates(pem.replace(b"\n", b"\r\n")) == {der}
    assert (
        trust.pem_certificates(b"-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----")
        == set()
    )


# --- NSS with the real certutil -----------------------------------------------------------


def test_nss_trust_and_untrust_with_certutil(tmp_path: Path, ca: LocalCA) -> None:
    tool = certutil()
    home = tmp_path / "home"
    profile = make_nssdb(home / ".mozilla/firefox/x.default")
    found = stores.find_nss_stores(home, tool, "linux")
    assert [(s.label, s.exists) for s in found] == [
        ("Chromium NSS", False),
        ("Firefox profile x.default", True),
    ]
    assert [trust.trusted_by(s, ca) for s in found] == [False, False]
    for step in trust.plan_trust(found, ca, os.geteuid()):
        trust.perform(step, ca)
    assert [trust.trusted_by(s, ca) for s in found] == [True, True]
    assert nss_has(home / ".pki/nssdb", trust.nickname(ca))
    assert nss_has(profile, trust.nickname(ca))
    # Another CA under the same nickname is not this one.
    other_state = tmp_path / "other"
    other_state.mkdir(mode=0o700)
    assert trust.trusted_by(found[1], LocalCA.load_or_create(other_state)) is False
    for step in trust.plan_untrust(found, ca, os.geteuid()):
        trust.perform(step, ca)
    assert [trust.trusted_by(s, ca) for s in found] == [False, False]
    assert not nss_has(profile, trust.nickname(ca))


def test_a_failing_certutil_is_one_line(tmp_path: Path, ca: LocalCA) -> None:
    certutil()
    bad = tmp_path / "profile"
    bad.mkdir()
    (bad / "cert9.db").write_bytes(b"this is not a database")
    store = NSSStore(
        "Firefox", bad, "~/profile", shutil.which("certutil") or "certutil", profile="p"
    )
    step = trust.plan_trust([store], ca, os.geteuid())[-1]
    with pytest.raises(TrustError) as info:
        trust.perform(step, ca)
    assert "failed (exit" in str(info.value) and "\n" not in str(info.value)


def test_a_missing_certutil_says_how_to_install_it(tmp_path: Path, ca: LocalCA) -> None:
    store = NSSStore("Firefox", tmp_path, "~/p", str(tmp_path / "no" / "certutil"), profile="p")
    (tmp_path / "cert9.db").write_bytes(b"")
    assert trust.trusted_by(store, ca) is None  # cannot tell
    with pytest.raises(TrustError, match=r"certutil is not installed: .*libnss3-tools"):
        trust.perform(trust.plan_trust([store], ca, 0)[-1], ca)


# --- system stores against fake roots -------------------------------------------------------


@pytest.mark.parametrize("key", ["debian", "fedora", "arch", "suse", "macos"])
def test_system_store_trust_and_untrust_in_a_fake_root(
    tmp_path: Path, ca: LocalCA, key: str
) -> None:
    root = make_root(tmp_path, key)
    store = system_store(root, key)
    assert trust.trusted_by(store, ca) is False
    assert trust.present_in(store, ca) is False
    for step in trust.plan_trust([store], ca, 0):
        trust.perform(step, ca)
    assert trust.trusted_by(store, ca) is True
    tool = store.flavour.refresh[0]
    changes = [c for c in calls(root) if "verify-cert" not in c]  # macOS: checks run it
    assert [c.split()[0] for c in changes] == [tool]
    if not store.macos:
        anchor = trust.anchor_file(store, ca)
        assert anchor.read_bytes() == ca.cert_pem
        assert anchor.stat().st_mode & 0o777 == 0o644
    for step in trust.plan_untrust([store], ca, 0):
        trust.perform(step, ca)
    assert trust.trusted_by(store, ca) is False
    assert not any(p.name.startswith("devrouter-") for p in root.rglob("*.crt"))


def test_an_anchor_without_a_rebuilt_bundle_is_still_removed(tmp_path: Path, ca: LocalCA) -> None:
    store = system_store(make_root(tmp_path, "debian"), "debian")
    trust.anchor_file(store, ca).write_bytes(ca.cert_pem)  # copied, the tool never ran
    assert trust.trusted_by(store, ca) is False
    assert trust.present_in(store, ca) is True


def test_a_failing_system_tool_is_one_line(tmp_path: Path, ca: LocalCA) -> None:
    store = system_store(make_root(tmp_path, "debian", failing=True), "debian")
    steps = trust.plan_trust([store], ca, 0)
    trust.perform(steps[0], ca)
    with pytest.raises(TrustError) as info:
        trust.perform(steps[1], ca)
    assert str(info.value).endswith("failed (exit 4): update-ca-certificates: something went wrong")


def test_an_unwritable_anchors_directory_is_one_line(tmp_path: Path, ca: LocalCA) -> None:
    root = make_root(tmp_path, "debian")
    store = system_store(root, "debian")
    shutil.rmtree(store.anchors)  # gone between finding and copying
    with pytest.raises(TrustError, match=r"^cannot write .*devrouter-.*\.crt: "):
        trust.perform(trust.plan_trust([store], ca, 0)[0], ca)


# --- the bundle for services --------------------------------------------------------------


def test_write_bundle(tmp_path: Path, ca: LocalCA) -> None:
    system = tmp_path / "system.pem"
    base = other_ca_pem()
    system.write_bytes(base.rstrip(b"\n"))  # no final newline: the CA still starts a line
    path = trust.write_bundle(ca, system)
    assert path == ca.paths.bundle
    der = {c.public_bytes(serialization.Encoding.DER) for c in _certs(path)}
    assert der == trust.pem_certificates(base + ca.cert_pem)
    assert path.stat().st_mode & 0o777 == 0o644
    assert trust.write_bundle(ca, None).read_bytes().endswith(ca.cert_pem)


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def test_service_env(tmp_path: Path, state: Path) -> None:
    root = make_root(tmp_path, "debian")
    assert trust.service_env(state, root) == {}  # no CA yet
    ca = LocalCA.load_or_create(state)
    env = trust.service_env(state, root)
    bundle = str(ca.paths.bundle)
    assert env == {
        "NODE_EXTRA_CA_CERTS": str(ca.paths.cert),
        "SSL_CERT_FILE": bundle,
        "REQUESTS_CA_BUNDLE": bundle,
        "CURL_CA_BUNDLE": bundle,
    }
    assert len(_certs(ca.paths.bundle)) == 2
    # A newer system bundle is taken in; an older one is not read again.
    system = root / "etc/ssl/certs/ca-certificates.crt"
    system.write_bytes(system.read_bytes() + other_ca_pem())
    old = ca.paths.bundle.stat().st_mtime_ns
    os.utime(system, ns=(old + 10**9, old + 10**9))
    trust.service_env(state, root)
    assert len(_certs(ca.paths.bundle)) == 3
    system.write_bytes(b"")
    os.utime(system, ns=(old, old))
    trust.service_env(state, root)
    assert len(_certs(ca.paths.bundle)) == 3
    # Without a system bundle, a bundle of the CA alone would fail every other site.
    assert trust.service_env(state, tmp_path / "empty") == {
        "NODE_EXTRA_CA_CERTS": str(ca.paths.cert)
    }


# --- a real TLS server, verified with the bundle ------------------------------------------


@pytest.fixture
async def tls_server(ca: LocalCA) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 with the CA's `localhost` leaf that answers one HTTP 200."""
    leaf_file = ca.paths.leaf("localhost")
    ca.leaf("localhost")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(leaf_file)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), IO_TIMEOUT_S)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nyes")
            await writer.drain()
        except (OSError, asyncio.IncompleteReadError, TimeoutError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=ctx)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


async def test_the_bundle_verifies_the_routers_leaf_with_python(
    tmp_path: Path, ca: LocalCA, tls_server: int
) -> None:
    bundle = trust.write_bundle(ca, make_root(tmp_path, "debian") / "base.pem")
    client = ssl.create_default_context(cafile=str(bundle))
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", tls_server, ssl=client, server_hostname="localhost"),
        IO_TIMEOUT_S,
    )
    writer.write(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
    assert (await asyncio.wait_for(reader.read(), IO_TIMEOUT_S)).endswith(b"yes")
    writer.close()


async def test_the_bundle_verifies_the_routers_leaf_with_curl(
    tmp_path: Path, ca: LocalCA, tls_server: int
) -> None:
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    system = make_root(tmp_path, "debian") / "base.pem"
    bundle = trust.write_bundle(ca, system)

    async def fetch(cacert: Path) -> tuple[int, bytes]:
        proc = await asyncio.create_subprocess_exec(
            curl, "-sS", "--max-time", "10", "--cacert", str(cacert),
            "--resolve", f"localhost:{tls_server}:127.0.0.1",
            f"https://localhost:{tls_server}/",
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        out, _ = await asyncio.wait_for(proc.communicate(), 2 * IO_TIMEOUT_S)
        assert proc.returncode is not None
        return proc.returncode, out

    assert await fetch(bundle) == (0, b"yes")
    code, _ = await fetch(system)  # the system's CAs alone do not know devrouter's
    assert code == 60  # curl: peer certificate cannot be authenticated with known CA certs


def test_a_ca_with_other_constraints_is_not_devrouters(ca: LocalCA) -> None:
    assert trust.constrained_to_localhost(ca.certificate)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "devrouter local CA (x@y)")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(datetime(2024, 1, 1))
        .not_valid_after(datetime(2034, 1, 1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
    )
    wide = [x509.DNSName("localhost"), x509.DNSName("example.com")]
    cert = builder.add_extension(
        x509.NameConstraints(permitted_subtrees=wide, excluded_subtrees=None), critical=True
    ).sign(key, hashes.SHA256())
    assert not trust.constrained_to_localhost(cert)
