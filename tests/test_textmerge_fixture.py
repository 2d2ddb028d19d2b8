"""The text merge fixture the browser client is checked against
(``syncline/static/test/textmerge_fixture.test.js``) still equals what Python's
``merge3`` and ``diff_hunks`` compute, so the JS port is compared with the truth."""

from __future__ import annotations

from typing import Any

import pytest

from .gen_textmerge_fixture import generate
from .kit import TEXTMERGE_PATH, assert_current


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    return generate()


def test_the_committed_fixture_is_what_python_computes_now(fresh: dict[str, Any]) -> None:
    assert_current(TEXTMERGE_PATH, fresh, "gen_textmerge_fixture")


def test_the_fixture_covers_what_it_must(fresh: dict[str, Any]) -> None:
    cases = fresh["cases"]
    assert len(cases) >= 300
    texts = [c["base"] + c["mine"] + c["theirs"] for c in cases]
    assert any(any(ord(ch) > 0xFFFF for ch in t) for t in texts), "astral code points (emoji)"
    assert any("\u0301" in t for t in texts), "combining marks"
    both_edited = [c for c in cases if c["mine_hunks"] and c["theirs_hunks"]]
    assert sum(c["merged"] not in (c["mine"], c["theirs"]) for c in both_edited) >= 100
    overlapping = [
        c
        for c in both_edited
        if any(m[0] <= t[1] and t[0] <= m[1] for m in c["mine_hunks"] for t in c["theirs_hunks"])
    ]
    assert len(overlapping) >= 50, "overlapping edits (the declared fallback)"
    fallback = [c for c in cases if len(c["base"]) + len(c["mine"]) > fresh["max_edit_distance"]]
    assert len(fallback) >= 2, "edit distances at and past MAX_EDIT_DISTANCE"
