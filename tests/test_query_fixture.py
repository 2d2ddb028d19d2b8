"""The query fixture of the conformance kit (``tests/fixtures/protocol/query.json``),
which the browser client is checked against
(``syncline/static/test/query_fixture.test.js``), still equals what Python's
``syncline/query.py`` computes, and covers what the kit's README promises."""

from __future__ import annotations

from typing import Any

import pytest

from .gen_query_fixture import generate
from .kit import QUERY_PATH, assert_current


@pytest.fixture(scope="module")
def fresh() -> dict[str, Any]:
    return generate()


def test_the_committed_fixture_is_what_python_computes_now(fresh: dict[str, Any]) -> None:
    assert_current(QUERY_PATH, fresh, "gen_query_fixture")


def test_the_fixture_covers_what_it_must(fresh: dict[str, Any]) -> None:
    cases = [c for c in fresh["cases"] if not c.get("refused")]
    refused = [c for c in fresh["cases"] if c.get("refused")]
    assert len(cases) >= 30 and len(refused) >= 20
    ops = {op for c in cases for cond in c["normalized"]["where"].values() for op in cond}
    assert ops == {"eq", "ne", "in", "gt", "gte", "lt", "lte"}
    directions = {d for c in cases for _, d in c["normalized"].get("order", [])}
    assert directions == {"asc", "desc"}
    assert any("limit" in c["query"] and len(c["result"]) < len(c["matching"]) for c in cases)

    def ordered(rows: str, direction: str) -> list[str]:
        (case,) = [
            c
            for c in cases
            if c["rows"] == rows and c["query"] == {"c": "cards", "order": [["rank", direction]]}
        ]
        return list(case["result"])

    # null (and a missing field) first under asc, last under desc; ties by id ascending
    # under both
    assert ordered("mixed", "asc")[:2] == ["a", "g"] and ordered("mixed", "desc")[-2:] == ["a", "g"]
    assert ordered("ties", "desc") == ["w", "y", "x", "z"]
