"""Which strings may name things: ids, collection names, field names, query ids.

They become keys in every store and on the wire. PostgreSQL cannot hold U+0000 (a write
of one fails in the database, and a client retrying it would block its queue), and a
lone surrogate is not Unicode text (no store or JSON encoder can write it), so both are
refused where the name is parsed, on every store alike.
"""

from __future__ import annotations

import re

__all__ = ["BAD_NAME_PATTERN", "name_problem", "printable"]

BAD_NAME_PATTERN = r"[\x00\ud800-\udfff]"
"""The characters no name may hold (a regular expression's character class)."""

_BAD = re.compile(BAD_NAME_PATTERN)


def name_problem(value: str) -> str | None:
    """What is wrong with ``value`` as a name, or None."""
    found = _BAD.search(value)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "may not contain the NUL character (U+0000)"
    return f"may not contain a lone surrogate (U+{ord(char):04X})"


def printable(value: str) -> str:
    """``value`` with every such character as its escape, safe in a stored message."""
    return _BAD.sub(lambda m: f"\\u{ord(m.group()):04x}", value)
