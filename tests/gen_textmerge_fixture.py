"""Write the conformance kit's textmerge.json (tests/fixtures/protocol/): seeded
(base, mine, theirs) triples with what Python's ``merge3`` and ``diff_hunks`` give for
them.

The browser client's port (``syncline/static/textmerge.js``) must give identical results
for every case (``syncline/static/test/textmerge_fixture.test.js``), offsets in code
points; ``tests/test_textmerge_fixture.py`` checks the committed file still equals what
Python computes, so it cannot drift. Run ``python -m tests.gen_textmerge_fixture`` after
changing ``syncline/textmerge.py`` on purpose. The kit's README.md specifies the
algorithm, so a client in another language can be written from it and checked here.
"""

from __future__ import annotations

import random
from typing import Any

from syncline.textmerge import MAX_EDIT_DISTANCE, diff_hunks, merge3

from .kit import TEXTMERGE_PATH, render, write

SEED = 20261101
RANDOM_CASES = 300

# Alphabets: plain text, emoji (astral code points: two UTF-16 units each), emoji with
# skin-tone modifiers and ZWJ sequences (several code points that render as one),
# combining marks (a letter then U+0301), other scripts, and mixes of all of them.
ALPHABETS = [
    "ab ",
    "abcdefgh ",
    "🦊🎉😀",
    "a🦊b🎉 ",
    "👍🏽👩\u200d💻🏳️\u200d🌈x",
    "e\u0301a\u0308o\u0302 ",
    "\u00e9\u0301\u0323n\u0303",
    "漢字かなカナ",
    "\U0001d11e\U0001d54f\U0001f600z",
    "ab🦊e\u0301漢\ufeff\u2028",
]

EDGE_CASES: list[tuple[str, str, str]] = [
    ("", "", ""),
    ("", "mine", ""),
    ("", "", "theirs"),
    ("", "mine", "theirs"),
    ("same", "same", "same"),
    ("base", "mine", "mine"),
    ("The 🦊 fox", "The quick 🦊 fox", "The 🦊 fox jumps 🎉"),
    ("🦊🦊 fox", "🦊🦊 red fox", "🎉🦊🦊 fox"),
    ("abc", "aXc", "aYc"),
    ("abc", "abXc", "abYc"),
    ("abc", "", "abc!"),
    ("abc", "", ""),
    ("hello world", "hello", "world"),
    ("🦊", "🎉", "😀"),
    ("🦊", "🦊🦊", "🦊🎉"),
    ("e\u0301", "e", "e\u0301\u0301"),
    ("cafe\u0301", "caf\u00e9", "cafe\u0301s"),
    ("👩\u200d💻", "👩\u200d🔬", "👨\u200d💻"),
    ("aaaa", "aa", "aaa"),
    ("abab", "ab", "ba"),
    ("line1\nline2\nline3", "line1\nLINE2\nline3", "line1\nline2\nline3\nline4"),
    ("one two three", "one 2 three", "one two 3"),
    ("xyz", "Axyz", "Bxyz"),
    ("xyz", "xyzA", "xyzB"),
]


def _edit(rng: random.Random, text: str, alphabet: str, spots: list[int]) -> str:
    """A few random inserts, deletes and replacements, in code points; ``spots`` (where
    the other side edited) is where to edit half of the time, so the edits overlap."""
    chars = list(text)
    for _ in range(rng.randint(1, 4)):
        if spots and rng.random() < 0.5:
            at = min(rng.choice(spots), len(chars))
        else:
            at = rng.randint(0, len(chars))
        kind = rng.choice(("insert", "delete", "replace"))
        piece = [rng.choice(alphabet) for _ in range(rng.randint(1, 3))]
        if kind == "insert" or not chars:
            chars[at:at] = piece
        elif kind == "delete":
            del chars[at : at + rng.randint(1, 3)]
        else:
            chars[at : at + rng.randint(1, 3)] = piece
        spots.append(at)
    return "".join(chars)


def _random_case(rng: random.Random) -> tuple[str, str, str]:
    alphabet = rng.choice(ALPHABETS)
    base = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
    spots: list[int] = []
    theirs = _edit(rng, base, alphabet, spots)
    mine = _edit(rng, base, rng.choice((alphabet, rng.choice(ALPHABETS))), spots)
    roll = rng.random()
    if roll < 0.05:
        mine = base
    elif roll < 0.1:
        theirs = base
    elif roll < 0.15:
        mine = theirs
    return base, mine, theirs


def _long_cases() -> list[tuple[str, str, str]]:
    """Edit distances at MAX_EDIT_DISTANCE (still diffed: two hunks around the common
    "|") and just past it (the deterministic fallback: one hunk for the whole trimmed
    middle)."""
    rng = random.Random(SEED + 1)
    quarter = MAX_EDIT_DISTANCE // 4

    def run(alphabet: str, n: int) -> str:
        return "".join(rng.choice(alphabet) for _ in range(n))

    base = "🦊<" + run("ab", quarter) + "|" + run("cd", quarter) + ">🦊"
    at_limit = "🦊<" + run("wx", quarter) + "|" + run("yz", quarter) + ">🦊"
    past_limit = "🦊<" + run("wx", quarter) + "|" + run("yz", quarter + 1) + ">🦊"
    theirs = base[:10] + "🎉" + base[10:]
    return [(base, at_limit, theirs), (base, past_limit, theirs)]


def cases() -> list[tuple[str, str, str]]:
    rng = random.Random(SEED)
    out = list(EDGE_CASES)
    out += [_random_case(rng) for _ in range(RANDOM_CASES)]
    out += _long_cases()
    return out


def generate() -> dict[str, Any]:
    return {
        "description": (
            "merge3(base, mine, theirs) and diff_hunks(base, x) as syncline/textmerge.py "
            "computes them; offsets are Unicode code points. Written by "
            "python -m tests.gen_textmerge_fixture; do not edit by hand."
        ),
        "max_edit_distance": MAX_EDIT_DISTANCE,
        "cases": [
            {
                "base": base,
                "mine": mine,
                "theirs": theirs,
                "merged": merge3(base, mine, theirs),
                "mine_hunks": [list(h) for h in diff_hunks(base, mine)],
                "theirs_hunks": [list(h) for h in diff_hunks(base, theirs)],
            }
            for base, mine, theirs in cases()
        ],
    }


def main() -> None:
    write(TEXTMERGE_PATH, render(generate()))


if __name__ == "__main__":
    main()
