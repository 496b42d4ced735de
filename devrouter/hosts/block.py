"""The marked block of a hosts file, sans-IO: find it, render it, put it in, take it out.

Theory of operation. devrouter owns exactly the lines from its begin marker to its end
marker, both included, and not one byte else:

    # >>> devrouter: managed block, do not edit (devrouter hosts clean removes it) >>>
    127.0.0.1 api.localhost
    ::1 api.localhost
    # <<< devrouter <<<

A new block goes at the end of the file. Its lines end the way the file's first line ends
(CRLF or LF). When the file's last line has no line terminator, the block brings the one
that line needs and leaves its own last line without one, so the file still ends without
a newline and taking the block out gives back the very bytes that were there before.

A block devrouter cannot be sure of is refused, never repaired: a begin marker without an
end, an end without a begin, a begin inside a block, two blocks, or a line inside the
block that devrouter does not write (an edit someone made, which a rewrite would lose).
Markers are recognised by their start (`# >>> devrouter`, `# <<< devrouter`), so an edited
marker is still seen, and refused, rather than left behind as a stray line.

A hosts file has no wildcards (hosts(5): one address, then names): `*.shop` cannot be
written, and `sort_names` sets such names apart so the command can say so.

Everything here works on `str`; the file layer decodes with `surrogateescape`, so bytes
that are not UTF-8 outside the block come back unchanged.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from ..core.errors import CommandError
from ..core.names import DOTTED_RE, NAME_RE

BEGIN_MARKER = "# >>> devrouter: managed block, do not edit (devrouter hosts clean removes it) >>>"
END_MARKER = "# <<< devrouter <<<"
#: Each name is written once per loopback address, in this order.
ADDRESSES = ("127.0.0.1", "::1")
SUFFIX = ".localhost"

_BEGIN_RE = re.compile(r"^[ \t]*#[ \t]*>>>[ \t]*devrouter\b")
_END_RE = re.compile(r"^[ \t]*#[ \t]*<<<[ \t]*devrouter\b")
_ENTRY_RE = re.compile(r"^[ \t]*(?:127\.0\.0\.1|::1)[ \t]+(\S+)\.localhost[ \t]*$")
#: How much of a foreign line an error message quotes, in characters.
_QUOTE_CHARS = 60


class DamagedBlock(CommandError):
    """The hosts file's devrouter block cannot be read with certainty; nothing is written.
    `str()` names the file and line, what is wrong, and what to do."""

    def __init__(self, source: str, line: int, message: str) -> None:
        self.source = source
        self.line = line
        self.message = message
        super().__init__(
            f"{source}:{line}: {message}; nothing was changed. Fix the file by hand (keep "
            "one devrouter block, or delete its marker lines and the lines between them), "
            "then run the command again"
        )


@dataclass(frozen=True, slots=True)
class Names:
    """Route names sorted by what can be done with them."""

    written: tuple[str, ...]  # sorted and unique: each becomes NAME.localhost entries
    wildcards: tuple[str, ...]  # `*.shop`: a hosts file cannot hold them
    invalid: tuple[str, ...]  # not a route name at all (never written into the file)


@dataclass(frozen=True, slots=True)
class Block:
    """Where the block is in a file's text, and the names it holds."""

    start: int  # offset of the begin marker's first character
    end: int  # offset just past the end marker's line terminator (the end of the text if none)
    first_line: int  # line numbers, from 1
    last_line: int
    names: tuple[str, ...]  # sorted and unique
    terminated: bool  # the end marker's line has a line terminator


def sort_names(names: Iterable[str]) -> Names:
    """Split route names (without `.localhost`) into those a hosts file can hold, the
    wildcards it cannot, and strings that are no name at all."""
    written: set[str] = set()
    wildcards: set[str] = set()
    invalid: set[str] = set()
    for name in names:
        if DOTTED_RE.match(name):
            written.add(name)
        elif NAME_RE.match(name):
            wildcards.add(name)
        else:
            invalid.add(name)
    return Names(tuple(sorted(written)), tuple(sorted(wildcards)), tuple(sorted(invalid)))


def lines_of(text: str) -> list[str]:
    """The lines of `text`, each with its terminator ("\\n" or "\\r\\n"; the last may have
    none). Only "\\n" ends a line, as for the resolver; str.splitlines would also split on
    form feeds and Unicode separators."""
    lines = text.split("\n")
    out = [line + "\n" for line in lines[:-1]]
    if lines[-1]:
        out.append(lines[-1])
    return out


def line_ending(text: str) -> str:
    """ "\\r\\n" when the file's first line ends that way, else "\\n"."""
    first = text.find("\n")
    return "\r\n" if first > 0 and text[first - 1] == "\r" else "\n"


def _content(line: str) -> str:
    line = line[:-1] if line.endswith("\n") else line
    return line[:-1] if line.endswith("\r") else line


def _quote(content: str) -> str:
    short = content if len(content) <= _QUOTE_CHARS else content[:_QUOTE_CHARS] + "..."
    return repr(short)


def find_block(text: str, source: str) -> Block | None:
    """The one devrouter block of `text`, None when there is none; DamagedBlock (naming
    `source` and the line) when there is not exactly one well-formed block."""
    blocks: list[Block] = []
    begin: tuple[int, int] | None = None  # (line number, offset) of an open block
    names: list[str] = []
    foreign: DamagedBlock | None = None  # the first line inside the block that is not ours
    offset = 0
    for number, line in enumerate(lines_of(text), 1):
        content = _content(line)
        if _BEGIN_RE.match(content):
            if begin is not None:
                raise DamagedBlock(
                    source,
                    number,
                    f"a devrouter begin marker inside the block that starts at line {begin[0]}",
                )
            begin, names, foreign = (number, offset), [], None
        elif _END_RE.match(content):
            if begin is None:
                raise DamagedBlock(source, number, "a devrouter end marker without a begin marker")
            if foreign is not None:
                raise foreign
            end = offset + len(line)
            found = tuple(sorted(set(names)))
            blocks.append(Block(begin[1], end, begin[0], number, found, line.endswith("\n")))
            begin = None
        elif begin is not None:
            entry = _ENTRY_RE.match(content)
            if entry and DOTTED_RE.match(entry[1]):
                names.append(entry[1])
            elif content.strip() and foreign is None:
                # Said once the block's end is seen: without an end, the missing end marker
                # is the problem, and the line is simply one after the block.
                foreign = DamagedBlock(
                    source,
                    number,
                    f"a line devrouter does not write, inside its block: {_quote(content)}",
                )
        offset += len(line)
    if begin is not None:
        raise DamagedBlock(source, begin[0], "a devrouter begin marker without an end marker")
    if len(blocks) > 1:
        first = blocks[0]
        raise DamagedBlock(
            source,
            blocks[1].first_line,
            f"a second devrouter block (the first is at lines {first.first_line}-"
            f"{first.last_line})",
        )
    return blocks[0] if blocks else None


def render_block(names: Sequence[str], eol: str = "\n") -> str:
    """The block for `names` (valid route names, sorted by the caller), each line ending
    with `eol`: an entry per name and address, the names in the given order."""
    lines = [BEGIN_MARKER]
    lines += [f"{address} {name}{SUFFIX}" for name in names for address in ADDRESSES]
    lines.append(END_MARKER)
    return "".join(line + eol for line in lines)


def with_block(text: str, names: Sequence[str], source: str) -> str:
    """`text` with its block holding exactly `names`: replaced where it is, else added at
    the end. Every byte outside the block is kept."""
    block = find_block(text, source)
    eol = line_ending(text)
    new = render_block(names, eol)
    if block is None:
        if not text or text.endswith("\n"):
            return text + new
        return text + eol + new[: -len(eol)]  # the file still ends without a newline
    if not block.terminated:
        new = new[: -len(eol)]
    return text[: block.start] + new + text[block.end :]


def without_block(text: str, source: str) -> str:
    """`text` without its block (unchanged when there is none). A block that ends the file
    without a terminator takes the terminator before it along: with_block put it there."""
    block = find_block(text, source)
    if block is None:
        return text
    head, tail = text[: block.start], text[block.end :]
    if not block.terminated:
        head = head[:-2] if head.endswith("\r\n") else head[:-1] if head.endswith("\n") else head
    return head + tail
