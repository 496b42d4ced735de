"""The one test for "this text is a whole number": ASCII digits only.

`str.isdigit()` is also true for "\u00b2" and "\u0661": `int("\u00b2")` raises and
`int("\u0661")` is 1, so a header, a label or a config value in another script would crash a
parser or be read differently by the two engines (the fast path reads bytes, where only ASCII
digits count).
"""

from __future__ import annotations


def digits(text: str) -> bool:
    """True for a non-empty run of 0-9 only."""
    return text.isascii() and text.isdigit()
