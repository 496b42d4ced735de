"""Making a hosts file's block hold a set of names, or taking it out: the read, the pure
edit of devrouter.hosts.block, and the write of devrouter.hosts.file, for the command and
for the router's own `hosts: sync`."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..core.names import RESERVED_NAMES
from .block import Names, find_block, sort_names, with_block, without_block
from .file import decode, encode, read_hosts, write_hosts


@dataclass(frozen=True, slots=True)
class Outcome:
    """What `sync_file` or `clean_file` did to one file."""

    path: Path
    written: bool  # the file was rewritten
    had_block: bool  # a block was there before
    before: tuple[str, ...]  # the names the block held before (sorted)
    after: tuple[str, ...]  # the names it holds now (sorted; empty when removed)

    @property
    def added(self) -> tuple[str, ...]:
        return tuple(n for n in self.after if n not in self.before)

    @property
    def removed(self) -> tuple[str, ...]:
        return tuple(n for n in self.before if n not in self.after)


def names_to_write(route_names: Iterable[str]) -> Names:
    """The route names sorted for the block, with the router's own name added."""
    return sort_names([*route_names, *RESERVED_NAMES])


def sync_file(path: Path, names: Names) -> Outcome:
    """Make the file's block hold exactly `names.written`; written only when that changes
    its bytes. DamagedBlock, HostsFileError or NeedsPrivilege when it cannot."""
    source = str(path)
    old = read_hosts(path)
    text = decode(old)
    block = find_block(text, source)
    new = encode(with_block(text, names.written, source))
    if new != old:
        write_hosts(path, old, new)
    before = block.names if block else ()
    return Outcome(path, new != old, block is not None, before, names.written)


def clean_file(path: Path) -> Outcome:
    """Take the block out of the file (nothing is written when there is none)."""
    source = str(path)
    old = read_hosts(path)
    text = decode(old)
    block = find_block(text, source)
    if block is None:
        return Outcome(path, False, False, (), ())
    write_hosts(path, old, encode(without_block(text, source)))
    return Outcome(path, True, True, block.names, ())
