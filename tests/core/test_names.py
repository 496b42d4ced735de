"""devrouter.core.names and core.numbers: a name or a number is all of the text, never a
prefix of it ($ would also match before a final newline) and never another script's digits."""

from __future__ import annotations

import pytest

from devrouter.core.names import DOTTED_RE, LABEL_RE, NAME_RE
from devrouter.core.numbers import digits


@pytest.mark.parametrize("pattern", [NAME_RE, DOTTED_RE, LABEL_RE])
@pytest.mark.parametrize("text", ["api\n", "api\r", "api\n127.0.0.1 evil", "api ", ""])
def test_a_name_is_the_whole_text(pattern: object, text: str) -> None:
    assert pattern.match(text) is None  # type: ignore[attr-defined]


def test_names_that_are_names() -> None:
    assert NAME_RE.match("*.shop") and DOTTED_RE.match("api.shop") and LABEL_RE.match("api")


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("80", True),
        ("0", True),
        ("", False),
        ("\u00b2", False),
        ("\u0661", False),
        ("8 0", False),
        ("-1", False),
    ],
)
def test_digits(text: str, ok: bool) -> None:
    assert digits(text) is ok
