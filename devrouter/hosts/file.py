"""Reading a hosts file, and writing it back whole and at once.

Theory of operation. A resolver may read the file at any moment, so it must never see
half of it: the new text goes into a temporary file in the same directory (same file
system), gets the old file's owner and mode, is flushed to disk, and replaces the old one
with one rename (`os.replace`). The path is followed to the file it names first, so a
symlinked hosts file keeps its link and the file it points to is the one replaced.

Two places refuse that rename, and there the file is rewritten in place (open, write,
truncate; not atomic, but the only way): a file that is a mount point of its own
(`/etc/hosts` in a container is a bind mount: rename gives EBUSY, or EXDEV), and a
directory the user may not create files in while the file itself is writable.

Before writing, the file is read again: if it changed since it was read (another tool, or
a second devrouter), nothing is written and the user is told to run the command again.

Text is decoded as UTF-8 with `surrogateescape`, so any byte outside devrouter's block
comes back exactly as it was.

Errors: HostsFileError (exit 1) for a file that cannot be read or written, with the
reason; its subclass NeedsPrivilege when the reason is permission, which the command
completes with the exact `sudo` line to run.
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from ..core.errors import CommandError

DEFAULT_HOSTS = Path("/etc/hosts")
#: A hosts file larger than this, in bytes, is refused: no hosts file is that big, and the
#: whole file is held in memory twice.
MAX_HOSTS_BYTES = 16 * 1024 * 1024
#: What rename says when the target is a mount point (EBUSY) or across mounts (EXDEV).
_RENAME_REFUSED = frozenset({errno.EBUSY, errno.EXDEV})
_ENCODING = "utf-8"
_ERRORS = "surrogateescape"


class HostsFileError(CommandError):
    """A hosts file that cannot be read or written; `str()` says which and why."""


class NeedsPrivilege(HostsFileError):
    """Permission denied on a hosts file. `sudo`, when given, is the exact command line to
    run instead; `str()` shows it."""

    def __init__(self, path: Path, doing: str, sudo: str = "") -> None:
        self.path = path
        self.doing = doing
        self.sudo = sudo
        retry = f"; run it with sudo: {sudo}" if sudo else "; run it with sudo"
        super().__init__(f"cannot {doing} {path}: permission denied{retry}")


def decode(data: bytes) -> str:
    return data.decode(_ENCODING, _ERRORS)


def encode(text: str) -> bytes:
    return text.encode(_ENCODING, _ERRORS)


def read_hosts(path: Path) -> bytes:
    """The file's bytes; HostsFileError (NeedsPrivilege for permission) when it cannot be
    read."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_HOSTS_BYTES + 1)
    except PermissionError:
        raise NeedsPrivilege(path, "read") from None
    except FileNotFoundError:
        raise HostsFileError(f"{path} does not exist") from None
    except IsADirectoryError:
        raise HostsFileError(f"{path} is a directory, not a hosts file") from None
    except OSError as exc:
        raise HostsFileError(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > MAX_HOSTS_BYTES:
        raise HostsFileError(f"{path} is larger than {MAX_HOSTS_BYTES} bytes; not a hosts file")
    return data


def write_hosts(path: Path, old: bytes, new: bytes) -> None:
    """Replace the file's contents `old` (as read) with `new`, atomically where the file
    system allows (module docstring). HostsFileError when it cannot; the file is then
    unchanged, except where an in-place rewrite failed part way (it says so)."""
    target = Path(os.path.realpath(path))
    if read_hosts(target) != old:
        raise HostsFileError(
            f"{path} changed while devrouter was updating it; nothing was written, run the "
            "command again"
        )
    try:
        st = os.stat(target)
        _replace(target, new, st)
    except PermissionError:
        raise NeedsPrivilege(path, "write") from None
    except _InPlace:
        _rewrite_in_place(path, target, new)
    except OSError as exc:
        raise HostsFileError(f"cannot write {path}: {exc.strerror or exc}") from None


class _InPlace(Exception):
    """The temporary file cannot take the hosts file's place (rename refused, no new file
    allowed in the directory, or the owner cannot be kept): rewrite the file in place."""


def _replace(target: Path, data: bytes, st: os.stat_result) -> None:
    tmp = target.with_name(f".{target.name}.devrouter-{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except PermissionError:
        # The directory refuses new files (a user given write access to the file alone);
        # a writable file can still be rewritten in place.
        if os.access(target, os.W_OK):
            raise _InPlace from None
        raise
    try:
        try:
            _write_all(fd, data)
            os.fsync(fd)
            if (st.st_uid, st.st_gid) != (os.geteuid(), os.getegid()):
                try:
                    os.fchown(fd, st.st_uid, st.st_gid)
                except PermissionError:
                    # Not root, so the new file would be ours, not the old owner's; a file
                    # the user may write (through its group) is rewritten in place instead.
                    if os.access(target, os.W_OK):
                        raise _InPlace from None
                    raise
            os.fchmod(fd, st.st_mode & 0o7777)
        finally:
            os.close(fd)
        # The directory being writable is not the file being writable: rename would replace
        # a file the user may not write, which is not what they may do.
        if not os.access(target, os.W_OK):
            raise PermissionError(errno.EACCES, "permission denied", str(target))
        try:
            os.replace(tmp, target)
        except OSError as exc:
            if exc.errno in _RENAME_REFUSED:
                raise _InPlace from None
            raise
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _sync_directory(target.parent)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _sync_directory(directory: Path) -> None:
    """Make the rename itself durable; a file system that cannot is no reason to fail."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _rewrite_in_place(path: Path, target: Path, data: bytes) -> None:
    try:
        fd = os.open(target, os.O_WRONLY | os.O_NOFOLLOW)
    except PermissionError:
        raise NeedsPrivilege(path, "write") from None
    except OSError as exc:
        raise HostsFileError(f"cannot write {path}: {exc.strerror}") from None
    try:
        _write_all(fd, data)
        os.ftruncate(fd, len(data))
        os.fsync(fd)
    except OSError as exc:
        raise HostsFileError(
            f"writing {path} in place failed part way ({exc.strerror}); check the file"
        ) from None
    finally:
        os.close(fd)
