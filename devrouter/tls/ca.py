"""The local certificate authority: one CA per user, on disk, and the short-lived leaf
certificates it issues for names under .localhost.

Theory of operation: the CA is made on first use (`LocalCA.load_or_create`) and lives ten
years; users add its certificate to their trust stores, so it is never replaced behind their
back: a damaged or unsafe file is an error that says what to do (`CAError`), never a reason
to make a new CA. Its certificate carries name constraints (RFC 5280 §4.2.1.10) that permit
only `localhost` and its subdomains, 127.0.0.0/8 and ::1, so even a stolen CA key cannot mint
a certificate a browser accepts for any other name.

A leaf is issued per name the router is asked for (by SNI): `leaf_name` maps whatever a client
sent to the one name whose leaf answers it, and maps everything that is not under .localhost
to the default leaf (`localhost`, 127.0.0.1, ::1), so a certificate is never minted for a
foreign name: such a client fails name verification, which is right. A leaf for
`api.localhost` also covers `*.api.localhost`; there is never a wildcard directly under
`localhost`, which browsers and curl refuse. Leaves live 30 days and are reissued when fewer
than 7 are left or when they were issued by another CA; they are kept on disk so that a
restart reuses them.

Files, in `<state_dir>/ca/` (mode 0700, this user's):
    ca.pem         the CA certificate (0644): what trust stores import
    ca-key.pem     its private key (0600 from the moment it exists)
    bundle.pem     written by devrouter.tls.trust; only named here
    leaves/        (0700) `<name>.pem` per issued leaf: certificate then key (0600)
    .lock          serialises making the CA between concurrent devrouter processes
Every file is written to a temporary file in the same directory and renamed into place.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import getpass
import ipaddress
import logging
import os
import secrets
import socket
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ..core.errors import CAError
from ..core.names import DOTTED_RE

log = logging.getLogger("devrouter.tls")

CA_VALIDITY = timedelta(days=3650)
LEAF_VALIDITY = timedelta(days=30)
#: A leaf with less than this left is reissued.
RENEW_BEFORE = timedelta(days=7)
#: Certificates start this long before they are made, so that a clock that is slightly behind
#: (a VM or container that just resumed) does not see them as not yet valid.
BACKDATE = timedelta(hours=1)

#: The name whose leaf answers a handshake without a usable SNI name.
DEFAULT_NAME = "localhost"
DEFAULT_IPS = (ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"))
#: What the CA may certify (its NameConstraints): a DNS constraint `localhost` is satisfied
#: by `localhost` and every name that adds labels to its left (RFC 5280 §4.2.1.10).
PERMITTED_DNS = "localhost"
PERMITTED_NETWORKS = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
#: SNI names deeper than this many labels (`localhost` counts) get the default leaf.
MAX_NAME_LABELS = 8
#: Longer SNI names, in characters, get the default leaf. DNS allows 253, but a leaf's file is
#: `<name>.pem` and a file name is at most 255 bytes.
MAX_NAME_CHARS = 251
#: X.520's upper bound for a commonName, in characters (cryptography enforces it).
MAX_CN_CHARS = 64
#: Larger files in the CA directory, in bytes, are damaged: a certificate and a key are ~1 KiB.
MAX_PEM_BYTES = 64 * 1024

DIR_MODE = 0o700
KEY_MODE = 0o600
CERT_MODE = 0o644


@dataclass(frozen=True)
class CAPaths:
    dir: Path
    cert: Path
    key: Path
    leaves: Path
    bundle: Path  # written by devrouter.tls.trust

    @property
    def lock(self) -> Path:
        return self.dir / ".lock"

    def leaf(self, name: str) -> Path:
        """The file of `name`'s leaf; `name` must be one that `leaf_name` returns."""
        if leaf_name(name) != name:
            raise ValueError(f"not a name devrouter issues certificates for: {name!r}")
        return self.leaves / f"{name}.pem"


def ca_paths(state_dir: Path) -> CAPaths:
    d = state_dir / "ca"
    return CAPaths(
        dir=d, cert=d / "ca.pem", key=d / "ca-key.pem", leaves=d / "leaves", bundle=d / "bundle.pem"
    )


def leaf_name(sni: str | None) -> str:
    """The name whose leaf answers a handshake that sent `sni` (None: no SNI at all).

    `API.localhost.` -> `api.localhost`; anything that is not a valid name under .localhost
    (an IP literal, a foreign name, a wildcard, too long or too deep) -> `localhost`.
    """
    if not sni or len(sni) > MAX_NAME_CHARS + 1 or not sni.isascii():
        return DEFAULT_NAME  # isascii first: "\u212a".lower() is an ASCII "k"
    name = sni.lower().removesuffix(".")
    if (
        name.endswith(".localhost")
        and len(name) <= MAX_NAME_CHARS
        and name.count(".") < MAX_NAME_LABELS
        and DOTTED_RE.fullmatch(name)  # fullmatch: the pattern's `$` accepts a final "\n"
    ):
        return name
    return DEFAULT_NAME


@dataclass(frozen=True)
class Leaf:
    name: str
    cert_pem: bytes
    key_pem: bytes
    not_after: datetime

    @property
    def renew_at(self) -> datetime:
        return self.not_after - RENEW_BEFORE


class LocalCA:
    """The CA: its certificate, its key (never leaves this object), and the leaves it issues."""

    def __init__(
        self, paths: CAPaths, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey
    ) -> None:
        self.paths = paths
        self.certificate = certificate
        self.cert_pem = certificate.public_bytes(serialization.Encoding.PEM)
        self._key = key
        ski = certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        self._ski = ski.value

    # --- loading and making ---------------------------------------------------------------

    @classmethod
    def load(cls, state_dir: Path) -> LocalCA | None:
        """The CA in `state_dir`, or None when none was made yet. Raises CAError when its
        files are unsafe (not this user's, open to others) or damaged."""
        paths = ca_paths(state_dir)
        if not os.path.lexists(paths.dir):
            return None
        _check_dir(paths.dir, paths)
        has_cert, has_key = os.path.lexists(paths.cert), os.path.lexists(paths.key)
        if not has_cert and not has_key:
            return None
        if not has_cert:
            raise CAError(
                f"the local CA's key {paths.key} has no certificate next to it (ca.pem): "
                f"move {paths.dir} away to make a new CA"
            )
        if not has_key:
            raise CAError(
                f"the local CA's key {paths.key} is missing: {_REPLACE_HINT.format(d=paths.dir)}"
            )
        return cls._from_files(paths)

    @classmethod
    def load_or_create(cls, state_dir: Path) -> LocalCA:
        """The CA in `state_dir`, made on first use (the state directory must exist)."""
        paths = ca_paths(state_dir)
        _make_private_dir(paths.dir, paths)
        with _locked(paths.lock):  # two processes starting at once make one CA, not two
            ca = cls.load(state_dir)
            if ca is not None:
                return ca
            key, cert = _new_ca(_utcnow())
            key_pem = _key_pem(key)
            # The key first: a ca.pem on disk always has its key beside it.
            _write_atomic(paths.key, key_pem, KEY_MODE, durable=True)
            _write_atomic(
                paths.cert, cert.public_bytes(serialization.Encoding.PEM), CERT_MODE, durable=True
            )
            ca = cls(paths, cert, key)
            log.info("made a local CA in %s (SHA-256 %s)", paths.dir, ca.fingerprint_sha256())
            return ca

    @classmethod
    def _from_files(cls, paths: CAPaths) -> LocalCA:
        def damaged(what: Path, why: str) -> CAError:
            return CAError(f"{what} is damaged ({why}): {_REPLACE_HINT.format(d=paths.dir)}")

        cert_data = _read_file(paths.cert, paths, private=False)
        key_data = _read_file(paths.key, paths, private=True)
        try:
            cert = x509.load_pem_x509_certificate(cert_data)
        except ValueError:
            raise damaged(paths.cert, "not a PEM certificate") from None
        try:
            key = serialization.load_pem_private_key(key_data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            raise damaged(paths.key, "not an unencrypted PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
            raise damaged(paths.key, "not an EC P-256 key")
        if _spki(key.public_key()) != _spki(cert.public_key()):
            raise damaged(paths.key, "it is not the key of ca.pem")
        try:
            basic = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
            cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier)
        except (x509.ExtensionNotFound, ValueError):
            raise damaged(paths.cert, "not a CA certificate made by devrouter") from None
        if not basic.ca:
            raise damaged(paths.cert, "not a CA certificate")
        if cert.not_valid_after_utc <= _utcnow():
            raise CAError(
                f"the local CA {paths.cert} expired on {cert.not_valid_after_utc:%Y-%m-%d}: "
                f"move {paths.dir} away to make a new one, and trust that one"
            )
        return cls(paths, cert, key)

    def fingerprint_sha256(self) -> str:
        """The CA certificate's SHA-256 fingerprint: lowercase hex, no separators."""
        return self.certificate.fingerprint(hashes.SHA256()).hex()

    # --- leaves ---------------------------------------------------------------------------

    def issue(self, name: str, now: datetime | None = None) -> Leaf:
        """A new leaf for `name` (as `leaf_name` returns it), written to its file."""
        path = self.paths.leaf(name)  # checks the name
        now = _utcnow() if now is None else now.astimezone(UTC).replace(microsecond=0)
        key = ec.generate_private_key(ec.SECP256R1())
        not_after = min(now + LEAF_VALIDITY, self.certificate.not_valid_after_utc)
        subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devrouter")]
        if len(name) <= MAX_CN_CHARS:  # clients read the SAN; the CN is for people
            subject.append(x509.NameAttribute(NameOID.COMMON_NAME, name))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(subject))
            .issuer_name(self.certificate.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(_key_usage(digital_signature=True), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(leaf_sans(name)), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(self._ski), False
            )
            .sign(self._key, hashes.SHA256())
        )
        leaf = Leaf(
            name=name,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            not_after=cert.not_valid_after_utc,
        )
        _make_private_dir(self.paths.leaves, self.paths)
        # Not fsynced: a leaf lost in a crash is reissued.
        _write_atomic(path, leaf.cert_pem + leaf.key_pem, KEY_MODE, durable=False)
        log.debug("issued a certificate for %s, valid until %s", name, leaf.not_after)
        return leaf

    def stored_leaf(self, name: str, now: datetime | None = None) -> Leaf | None:
        """`name`'s leaf from its file when it can still be used: issued by this CA for the
        names it would be issued for today, its key beside it, and not due for renewal."""
        path = self.paths.leaf(name)
        try:
            data = _read_file(path, self.paths, private=True)
        except FileNotFoundError:
            return None
        except CAError as exc:  # a leaf file open to others: reissued (and rewritten 0600)
            log.warning("reissuing the certificate for %s: %s", name, exc)
            return None
        try:
            cert = x509.load_pem_x509_certificate(data)
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm):
            log.warning("reissuing the certificate for %s: %s is damaged", name, path)
            return None
        now = _utcnow() if now is None else now.astimezone(UTC)
        problem = self._leaf_problem(name, cert, key, now)
        if problem:
            log.info("reissuing the certificate for %s: %s", name, problem)
            return None
        return Leaf(
            name=name,
            cert_pem=cert.public_bytes(serialization.Encoding.PEM),
            key_pem=_key_pem(key),
            not_after=cert.not_valid_after_utc,
        )

    def leaf(self, name: str, now: datetime | None = None) -> Leaf:
        """`name`'s stored leaf when it can still be used, else a new one."""
        return self.stored_leaf(name, now) or self.issue(name, now)

    def _leaf_problem(
        self, name: str, cert: x509.Certificate, key: object, now: datetime
    ) -> str | None:
        try:
            cert.verify_directly_issued_by(self.certificate)
        except (ValueError, TypeError, InvalidSignature):
            return "it was issued by another CA"
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            return "its key is not an EC key"
        if _spki(key.public_key()) != _spki(cert.public_key()):
            return "its key does not match it"
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except (x509.ExtensionNotFound, ValueError):
            return "it has no subjectAltName"
        if set(sans) != set(leaf_sans(name)):
            return "it names other names"
        if now < cert.not_valid_before_utc:
            return "it is not valid yet (the clock went back?)"
        if now >= cert.not_valid_after_utc - RENEW_BEFORE:
            return f"it expires on {cert.not_valid_after_utc:%Y-%m-%d}"
        return None


def leaf_sans(name: str) -> list[x509.GeneralName]:
    """What a leaf for `name` covers: the default one `localhost` and the loopback
    addresses; any other the name and its subdomains (never `*.localhost`)."""
    if name == DEFAULT_NAME:
        return [x509.DNSName(name), *(x509.IPAddress(ip) for ip in DEFAULT_IPS)]
    return [x509.DNSName(name), x509.DNSName(f"*.{name}")]


# --- the CA certificate ---------------------------------------------------------------------


def _new_ca(now: datetime) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "devrouter"),
            x509.NameAttribute(NameOID.COMMON_NAME, ca_common_name(_user_at_host())),
        ]
    )
    permitted: list[x509.GeneralName] = [x509.DNSName(PERMITTED_DNS)]
    permitted += [x509.IPAddress(net) for net in PERMITTED_NETWORKS]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_VALIDITY)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(key_cert_sign=True, crl_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        # Critical, as RFC 5280 §4.2.1.10 requires: a client that cannot enforce the
        # constraints must then reject the chain instead of trusting an unconstrained CA,
        # which is the failure they exist to prevent. Every client that matters enforces
        # them (OpenSSL, NSS/Firefox, BoringSSL/Chrome, Apple since macOS 10.13, Windows,
        # Go, rustls/webpki); a very old one refuses devrouter's certificates loudly rather
        # than trusting more than it should.
        .add_extension(
            x509.NameConstraints(permitted_subtrees=permitted, excluded_subtrees=None),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def ca_common_name(who: str) -> str:
    """`devrouter local CA (ann@laptop)`, shortened to X.520's 64 characters."""
    room = MAX_CN_CHARS - len("devrouter local CA ()")
    if len(who) > room:
        who = who[: room - 3] + "..."
    return f"devrouter local CA ({who})"


def _user_at_host() -> str:
    try:
        user = getpass.getuser()
    except (OSError, KeyError):  # no login name and no passwd entry (some containers)
        user = f"uid{os.geteuid()}"
    return f"{user}@{socket.gethostname().split('.')[0] or 'localhost'}"


def _key_usage(
    *, digital_signature: bool = False, key_cert_sign: bool = False, crl_sign: bool = False
) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=digital_signature,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=key_cert_sign,
        crl_sign=crl_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _key_pem(key: PrivateKeyTypes) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _spki(key: object) -> bytes:
    if not isinstance(key, ec.EllipticCurvePublicKey):
        return b""
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)  # certificates count whole seconds


# --- files ----------------------------------------------------------------------------------

_REPLACE_HINT = (
    "it is not replaced automatically because trust stores may trust it; move {d} away to "
    "make a new CA, and trust the new one"
)


def _refuse_unsafe(path: Path, st: os.stat_result, paths: CAPaths) -> None:
    """Raise CAError unless `st` is this user's and closed to group and others."""
    if st.st_uid != os.geteuid():
        raise CAError(
            f"{path} belongs to another user (uid {st.st_uid}), so devrouter will not use its "
            f"CA: run devrouter as that user, or move {paths.dir} away to make a new CA"
        )
    mode = stat.S_IMODE(st.st_mode)
    if mode & 0o077:
        wanted = DIR_MODE if stat.S_ISDIR(st.st_mode) else KEY_MODE
        raise CAError(
            f"{path} is open to other users (mode {mode:04o}), so its CA key may have been "
            f"copied: if nobody else uses this machine, run `chmod {wanted:o} {path}`; "
            f"otherwise move {paths.dir} away to make a new CA"
        )


def _check_dir(path: Path, paths: CAPaths) -> None:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise CAError(f"cannot use the CA directory {path}: {exc.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise CAError(f"{path} is not a directory: move it away to make a new CA")
    _refuse_unsafe(path, st, paths)


def _make_private_dir(path: Path, paths: CAPaths) -> None:
    try:
        path.mkdir(mode=DIR_MODE)
        os.chmod(path, DIR_MODE)  # exactly 0700, whatever the umask
    except FileExistsError:
        pass
    except OSError as exc:
        raise CAError(f"cannot create the CA directory {path}: {exc.strerror}") from None
    _check_dir(path, paths)


def _read_file(path: Path, paths: CAPaths, *, private: bool) -> bytes:
    """A file's bytes. A private one must be a regular file of this user's, closed to
    others; it is checked on the open descriptor, so a rename in between cannot fool it.
    FileNotFoundError passes through; other failures are CAError."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            hint = _REPLACE_HINT.format(d=paths.dir)
            raise CAError(f"{path} is a symbolic link: {hint}") from None
        raise CAError(f"cannot read {path}: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise CAError(f"{path} is not a regular file: {_REPLACE_HINT.format(d=paths.dir)}")
        if private:
            _refuse_unsafe(path, st, paths)
        data = f.read(MAX_PEM_BYTES + 1)
    if len(data) > MAX_PEM_BYTES:
        raise CAError(f"{path} is damaged (too large): {_REPLACE_HINT.format(d=paths.dir)}")
    return data


def _write_atomic(path: Path, data: bytes, mode: int, *, durable: bool) -> None:
    """write_atomic, its failure a CAError."""
    try:
        write_atomic(path, data, mode, durable=durable)
    except OSError as exc:
        raise CAError(f"cannot write {path}: {exc.strerror}") from None


def write_atomic(path: Path, data: bytes, mode: int, *, durable: bool = False) -> None:
    """Write `path` whole or not at all: a new file in the same directory, created with
    `mode` (O_EXCL, so never a file someone else prepared, and never more open than `mode`
    even for an instant), then renamed over `path`. `durable`: fsync the file and the
    directory. Raises OSError."""
    # Part of the name only: a leaf's own name may already be as long as a file name can be.
    tmp = path.with_name(f".{path.name[:64]}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, mode)
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, mode)  # the umask may have taken bits off a public file's mode
            f.write(data)
            f.flush()
            if durable:
                os.fsync(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:  # the rename itself survives a crash too
        dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive advisory lock on `path`, held for the block."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, KEY_MODE)
    except OSError as exc:
        raise CAError(f"cannot lock {path}: {exc.strerror}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock
