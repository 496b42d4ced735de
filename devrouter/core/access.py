"""Optional access control for shared machines: a secret that a route, or the whole router,
requires of every request.

Why it exists: on a machine several people log in to, every user can connect to
127.0.0.1:7355, so loopback-only is not "only me". A route (or the router) with `access:`
answers 401 to anyone who does not present the secret; see docs/security.md.

The secret is a token, or `user:password`, kept out of the config file: in an environment
variable of `devrouter serve`, or in a file only its owner can read (checked here, the way ssh
checks a private key). It is read when the config is loaded or reloaded.

What a client may present (`verdict`):
- `Authorization: Basic ...`: what browsers send after their own login prompt. For a token,
  any user name with the token as the password; for `user:password`, exactly those.
- `Authorization: Bearer TOKEN`: for scripts and curl (token secrets only).
- `X-Devrouter-Token: TOKEN`: for apps that use Authorization themselves; it is never
  forwarded.

The router's own credential never reaches a backend: an Authorization header that carried it
is removed before forwarding, so an app's own Authorization (sent alongside
X-Devrouter-Token) passes untouched. Comparisons are constant-time.
"""

from __future__ import annotations

import binascii
import dataclasses
import enum
import hmac
import os
import stat
from base64 import b64decode
from collections.abc import Callable, Mapping
from pathlib import Path

from .errors import ConfigError
from .model import AccessRule, Config

#: A secret (the token, or the password of user:password) shorter than this is refused: the
#: router answers as fast as anyone can ask, so a short secret can be guessed.
MIN_SECRET_CHARS = 16
#: A secret file larger than this is not a secret file.
MAX_SECRET_FILE_BYTES = 4096
TOKEN_HEADER = "X-Devrouter-Token"


class Verdict(enum.Enum):
    DENIED = 0
    AUTHORIZATION = 1  # Authorization carried the router's credential: remove it upstream
    TOKEN_HEADER = 2  # X-Devrouter-Token did (it is never forwarded anyway)


def verdict(rule: AccessRule, authorization: str | None, token: str | None) -> Verdict:
    """Whether a request presents the rule's secret, and in which header."""
    secret = rule.secret
    if secret is None:  # never loaded: fail closed
        return Verdict.DENIED
    user, colon, password = secret.partition(":")
    if not colon:
        user, password = "", secret
    if token is not None and not colon and _same(token.strip(), secret):
        return Verdict.TOKEN_HEADER
    if authorization is None:
        return Verdict.DENIED
    scheme, _, value = authorization.strip().partition(" ")
    scheme = scheme.lower()
    value = value.strip()
    if scheme == "bearer" and not colon:
        return Verdict.AUTHORIZATION if _same(value, secret) else Verdict.DENIED
    if scheme != "basic":
        return Verdict.DENIED
    try:
        decoded = b64decode(value.encode("ascii"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeError):
        return Verdict.DENIED
    got_user, sep, got_password = decoded.partition(":")
    if not sep:
        return Verdict.DENIED
    ok = _same(got_password, password)
    if colon:
        ok = _same(got_user, user) & ok  # both compared, whatever the first says
    return Verdict.AUTHORIZATION if ok else Verdict.DENIED


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def challenge(realm: str) -> str:
    """The WWW-Authenticate value of a 401: browsers show their login prompt for it."""
    return f'Basic realm="{realm}", charset="UTF-8"'


# --- loading secrets (the I/O) ------------------------------------------------------------


def load_secrets(config: Config, environ: Mapping[str, str] | None = None) -> Config:
    """The config with every access rule's secret read in; ConfigError names file and line."""
    env = os.environ if environ is None else environ
    base = Path(config.source).parent if not config.source.startswith("<") else Path.cwd()
    access = config.access
    if access is not None and not access.is_off:
        access = _load(access, env, base, config.source, None)
    routes = tuple(
        dataclasses.replace(r, access=_load(r.access, env, base, config.source, r.name))
        if r.access is not None and not r.access.is_off
        else r
        for r in config.routes
    )
    return dataclasses.replace(config, access=access, routes=routes)


def _load(
    rule: AccessRule, env: Mapping[str, str], base: Path, source: str, route: str | None
) -> AccessRule:
    def fail(message: str) -> ConfigError:
        return ConfigError(source, rule.line or None, message, route)

    if rule.env is not None:
        raw = env.get(rule.env)
        if raw is None:
            raise fail(
                f"access: the environment variable {rule.env} is not set where devrouter runs "
                f"(export {rule.env}=... before `devrouter serve`)"
            )
        where = f"${rule.env}"
    else:
        assert rule.file is not None
        path = Path(rule.file).expanduser()
        if not path.is_absolute():
            path = base / path
        raw = _read_secret_file(path, fail)
        where = str(path)
    secret = raw.strip()
    if not secret or any(ord(c) < 0x20 or c == "\x7f" for c in secret):
        raise fail(f"access: the secret in {where} must be one line of text")
    _, colon, password = secret.partition(":")
    if len(password if colon else secret) < MIN_SECRET_CHARS:
        what = "password" if colon else "token"
        raise fail(
            f"access: the {what} in {where} is shorter than {MIN_SECRET_CHARS} characters; make "
            "one with: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    return dataclasses.replace(rule, secret=secret)


def _read_secret_file(path: Path, fail: Callable[[str], ConfigError]) -> str:
    """The file's text, if only its owner (this user) can read it; the checks are on the
    opened file, so a swap between check and read changes nothing."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        raise fail(f"access: the secret file {path} does not exist") from None
    except OSError as exc:
        raise fail(f"access: cannot read the secret file {path}: {exc.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise fail(f"access: {path} is not a regular file")
        if hasattr(os, "getuid") and st.st_uid != os.getuid():
            raise fail(f"access: the secret file {path} belongs to another user")
        if st.st_mode & 0o077:
            raise fail(
                f"access: the secret file {path} can be read by other users (mode "
                f"{stat.S_IMODE(st.st_mode):04o}); run: chmod 600 {path}"
            )
        data = os.read(fd, MAX_SECRET_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise fail(f"access: the secret file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise fail(f"access: the secret file {path} is not UTF-8 text") from None
