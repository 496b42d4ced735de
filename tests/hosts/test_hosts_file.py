"""devrouter.hosts.file on real files: the write replaces the file whole, keeps its owner,
mode and symlink, and refuses what it cannot do safely."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from devrouter.hosts.file import (
    HostsFileError,
    NeedsPrivilege,
    decode,
    encode,
    read_hosts,
    write_hosts,
)

OLD = b"127.0.0.1 localhost\r\n\xff not utf-8\n"
NEW = b"127.0.0.1 localhost\r\n\xff not utf-8\nnew line\n"


def test_decode_and_encode_keep_any_byte():
    every = bytes(range(256))
    assert encode(decode(every)) == every


def test_write_replaces_the_file_and_keeps_its_mode(tmp_path: Path):
    hosts = tmp_path / "hosts"
    hosts.write_bytes(OLD)
    os.chmod(hosts, 0o644)
    before = os.stat(hosts)
    write_hosts(hosts, OLD, NEW)
    after = os.stat(hosts)
    assert hosts.read_bytes() == NEW
    assert stat.S_IMODE(after.st_mode) == 0o644
    assert (after.st_uid, after.st_gid) == (before.st_uid, before.st_gid)
    assert after.st_ino != before.st_ino  # a rename, not a rewrite
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hosts"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a file to another owner needs root")
def test_write_keeps_another_owner(tmp_path: Path):
    hosts = tmp_path / "hosts"
    hosts.write_bytes(OLD)
    os.chown(hosts, 65534, 65534)
    os.chmod(hosts, 0o604)
    write_hosts(hosts, OLD, NEW)
    st = os.stat(hosts)
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (65534, 65534, 0o604)
    assert hosts.read_bytes() == NEW


def test_a_symlinked_file_keeps_its_link(tmp_path: Path):
    real = tmp_path / "real"
    real.mkdir()
    (real / "hosts").write_bytes(OLD)
    link = tmp_path / "hosts"
    link.symlink_to(real / "hosts")
    write_hosts(link, OLD, NEW)
    assert link.is_symlink()
    assert (real / "hosts").read_bytes() == NEW


def test_a_file_changed_since_it_was_read_is_not_written(tmp_path: Path):
    hosts = tmp_path / "hosts"
    hosts.write_bytes(OLD + b"# someone else\n")
    with pytest.raises(HostsFileError, match="changed while devrouter was updating it"):
        write_hosts(hosts, OLD, NEW)
    assert hosts.read_bytes() == OLD + b"# someone else\n"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda p: None, "does not exist"),
        (lambda p: p.mkdir(), "is a directory"),
    ],
)
def test_read_errors_are_one_line(tmp_path: Path, make, words):
    hosts = tmp_path / "hosts"
    make(hosts)
    with pytest.raises(HostsFileError, match=words):
        read_hosts(hosts)


def test_needs_privilege_shows_the_sudo_line():
    err = NeedsPrivilege(Path("/etc/hosts"), "write", "sudo devrouter hosts clean")
    assert str(err) == (
        "cannot write /etc/hosts: permission denied; run it with sudo: sudo devrouter hosts clean"
    )
    assert err.exit_code == 1
