"""devrouter.hosts.block by tables: text in, text (or a refusal naming the line) out."""

from __future__ import annotations

import pytest

from devrouter.core.errors import CommandError
from devrouter.hosts.block import (
    BEGIN_MARKER,
    END_MARKER,
    DamagedBlock,
    find_block,
    line_ending,
    lines_of,
    render_block,
    sort_names,
    with_block,
    without_block,
)

SRC = "/etc/hosts"
B, E = BEGIN_MARKER, END_MARKER


def block(*names: str, eol: str = "\n") -> str:
    return render_block(names, eol)


# --- names --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "written", "wildcards", "invalid"),
    [
        ([], (), (), ()),
        (["web", "api", "api"], ("api", "web"), (), ()),
        (["api.shop", "shop", "*.shop"], ("api.shop", "shop"), ("*.shop",), ()),
        (["*.a.b"], (), ("*.a.b",), ()),
        (["x y", "evil\n1.2.3.4 bank", "UPPER", "", "-x", "a..b"], (), (), None),
    ],
)
def test_sort_names(given, written, wildcards, invalid):
    names = sort_names(given)
    assert names.written == written
    assert names.wildcards == wildcards
    assert names.invalid == (tuple(sorted(set(given))) if invalid is None else invalid)


def test_render_has_one_line_per_name_and_address_between_the_markers():
    assert block("api", "web.shop") == (
        f"{B}\n127.0.0.1 api.localhost\n::1 api.localhost\n"
        f"127.0.0.1 web.shop.localhost\n::1 web.shop.localhost\n{E}\n"
    )
    assert block(eol="\r\n") == f"{B}\r\n{E}\r\n"


# --- lines --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "lines"),
    [
        ("", []),
        ("a", ["a"]),
        ("a\n", ["a\n"]),
        ("a\r\nb", ["a\r\n", "b"]),
        ("a\x0cb\u2028c\n\n", ["a\x0cb\u2028c\n", "\n"]),  # only \n ends a line
    ],
)
def test_lines_of(text, lines):
    assert lines_of(text) == lines
    assert "".join(lines) == text


@pytest.mark.parametrize(
    ("text", "eol"),
    [("", "\n"), ("a", "\n"), ("a\nb\r\n", "\n"), ("a\r\nb\n", "\r\n"), ("\r\n", "\r\n")],
)
def test_line_ending_is_the_first_lines(text, eol):
    assert line_ending(text) == eol


# --- putting the block in, and taking it out ---------------------------------------------

FOREIGN = "127.0.0.1\tlocalhost\n# a comment  \n\n::1 ip6-localhost  ip6-loopback\n"


@pytest.mark.parametrize(
    ("before", "names", "after"),
    [
        # added at the end of a file of any shape
        ("", ["api"], block("api")),
        (FOREIGN, ["api"], FOREIGN + block("api")),
        ("a\nb", ["api"], "a\nb\n" + block("api")[:-1]),  # still no final newline
        ("a\r\nb\r\n", ["api"], "a\r\nb\r\n" + block("api", eol="\r\n")),
        ("a\r\nb", ["api"], "a\r\nb\r\n" + block("api", eol="\r\n")[:-2]),
        ("\xff\udcff odd bytes\n", ["x"], "\xff\udcff odd bytes\n" + block("x")),
        # replaced where it is, with whatever is around it
        ("a\n" + block("old") + "z\n", ["new"], "a\n" + block("new") + "z\n"),
        ("a\n" + block("old") + "z", ["a", "b"], "a\n" + block("a", "b") + "z"),
        (block("old"), [], block()),
        ("a\n" + block("old")[:-1], ["new"], "a\n" + block("new")[:-1]),
        (
            "a\r\n" + block("x", eol="\r\n") + "z\r\n",
            ["y"],
            "a\r\n" + block("y", eol="\r\n") + "z\r\n",
        ),
        # an edited marker text is still the marker; blank lines inside are dropped
        ("# >>> devrouter old words\n\n::1 x.localhost\n#<<<devrouter\n", ["x"], block("x")),
    ],
)
def test_with_block(before, names, after):
    assert with_block(before, names, SRC) == after


@pytest.mark.parametrize(
    "foreign",
    ["", FOREIGN, "a\nb", "a\r\nb\r\n", "a\r\nb", "x\n\n\n", "\xff\udcfe\n  \t\n# end"],
)
def test_with_then_without_gives_back_every_byte(foreign):
    once = with_block(foreign, ["api", "web"], SRC)
    assert with_block(once, ["api", "web"], SRC) == once  # a second sync changes nothing
    changed = with_block(once, ["other"], SRC)
    assert without_block(changed, SRC) == foreign


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ("", ""),
        (FOREIGN, FOREIGN),
        ("a\n" + block("x") + "z\n", "a\nz\n"),
        (block("x") + "z", "z"),
        ("a\n" + block("x")[:-1], "a"),
        ("a\r\n" + block("x", eol="\r\n")[:-2], "a"),
        (block("x")[:-1], ""),
    ],
)
def test_without_block(before, after):
    assert without_block(before, SRC) == after


def test_find_block_says_where_it_is_and_what_it_holds():
    text = "a\n" + block("web", "api") + "z\n"
    found = find_block(text, SRC)
    assert found is not None
    assert (found.first_line, found.last_line) == (2, 7)
    assert found.names == ("api", "web")
    assert text[found.start : found.end] == block("web", "api")
    assert found.terminated
    assert find_block(FOREIGN, SRC) is None


# --- refusals -----------------------------------------------------------------------------

GOOD = block("api")


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        (f"a\n{B}\n127.0.0.1 api.localhost\n", 2, "begin marker without an end"),
        (f"a\n{E}\n", 2, "end marker without a begin"),
        (f"{B}\n{B}\n{E}\n", 2, "begin marker inside the block that starts at line 1"),
        (f"{GOOD}x\n{GOOD}", 6, "a second devrouter block (the first is at lines 1-4)"),
        (f"{B}\n10.0.0.1 db.internal\n{E}\n", 2, "a line devrouter does not write"),
        (f"{B}\n127.0.0.1 api.localhost extra\n{E}\n", 2, "does not write"),
        (f"{B}\n127.0.0.1 API.localhost\n{E}\n", 2, "does not write"),
        (f"{B}\n# a note\n{E}\n", 2, "does not write"),
        (f"x\r\n{B}\r\n{E}\r\n{E}\r\n", 4, "end marker without a begin"),
    ],
)
def test_a_damaged_block_is_refused_naming_file_and_line(text, line, words):
    for refuse in (
        lambda: find_block(text, SRC),
        lambda: with_block(text, ["api"], SRC),
        lambda: without_block(text, SRC),
    ):
        with pytest.raises(DamagedBlock) as caught:
            refuse()
        assert isinstance(caught.value, CommandError)
        assert caught.value.exit_code == 1
        assert caught.value.line == line
        assert str(caught.value).startswith(f"{SRC}:{line}: ")
        assert words in str(caught.value)
        assert "nothing was changed" in str(caught.value)


def test_a_long_foreign_line_is_quoted_short():
    text = f"{B}\n{'x' * 500}\n{E}\n"
    with pytest.raises(DamagedBlock) as caught:
        find_block(text, SRC)
    assert len(str(caught.value)) < 400
