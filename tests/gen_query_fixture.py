"""Write the conformance kit's query.json (tests/fixtures/protocol/): queries on the kit's
schema with what Python's ``syncline/query.py`` makes of them, which is the reference
every store and every client must reproduce: which rows match, in what order they come,
the canonical wire form of the query, or that the query is refused.

The browser client's port (``syncline/static/query.js``) runs every case
(``syncline/static/test/query_fixture.test.js``); ``tests/test_query_fixture.py`` checks
the committed file still equals what Python computes. Run
``python -m tests.gen_query_fixture`` after changing ``syncline/query.py`` on purpose.
"""

from __future__ import annotations

from typing import Any

from syncline import Query, QueryError

from .kit import QUERY_PATH, render, write
from .schemas import BOARD

# Rows are JSON objects holding `id` and queryable fields; a missing field reads as null.
# They need not validate against the schema: the semantics are defined on any scalars.
ROW_SETS: dict[str, list[dict[str, Any]]] = {
    # One value of each type and some strings around U+FFFF (UTF-16 orders them wrong).
    "mixed": [
        {"id": "b", "rank": 2},
        {"id": "a", "rank": None},
        {"id": "c", "rank": True},
        {"id": "d", "rank": "x"},
        {"id": "e", "rank": 1.5},
        {"id": "f", "rank": False},
        {"id": "g"},
        {"id": "h", "rank": "\uffff"},
        {"id": "i", "rank": "😀"},
    ],
    "ids": [{"id": "\uffff"}, {"id": "😀"}, {"id": "a"}, {"id": "B"}],
    "ties": [
        {"id": "z", "rank": 1},
        {"id": "y", "rank": 2},
        {"id": "x", "rank": 1},
        {"id": "w", "rank": 2},
    ],
    "cards": [
        {"id": "c1", "list_id": "l1", "status": "todo", "rank": 3, "done": False},
        {"id": "c2", "list_id": "l1", "status": "doing", "rank": 1.5, "done": None},
        {"id": "c3", "list_id": "l2", "status": "todo", "rank": 2, "done": True},
        {"id": "c4", "list_id": "l1", "status": "done", "rank": 2.0, "done": True},
        {"id": "c5", "list_id": "l2", "status": "Todo", "rank": -1},
        {"id": "c6", "list_id": "l1", "status": "todo", "rank": 3, "done": None},
        {"id": "c10", "list_id": "l3", "status": "doing", "rank": 0, "done": False},
    ],
}

# (row set, query) pairs; every query here is valid.
CASES: list[tuple[str, dict[str, Any]]] = [
    # order: type rank first (null, booleans, numbers, strings), strings by code point
    ("mixed", {"c": "cards", "order": [["rank", "asc"]]}),
    ("mixed", {"c": "cards", "order": [["rank", "desc"]]}),
    ("mixed", {"c": "cards", "order": [["rank", "desc"]], "limit": 3}),
    ("mixed", {"c": "cards", "order": [["rank", "asc"]], "limit": 2}),
    ("ids", {"c": "cards"}),
    ("ids", {"c": "cards", "order": [["id", "desc"]]}),
    # ties: by id ascending, under desc too, unless the order names id
    ("ties", {"c": "cards", "order": [["rank", "desc"]]}),
    ("ties", {"c": "cards", "order": [["rank", "asc"]]}),
    ("ties", {"c": "cards", "order": [["rank", "asc"], ["id", "desc"]]}),
    ("ties", {"c": "cards", "order": [["rank", "desc"]], "limit": 100}),
    # filters: null never satisfies a range; booleans are not numbers; numbers compare
    # as numbers (2 equals 2.0); strings by code point
    ("mixed", {"c": "cards", "where": {"rank": {"gt": 1}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"ne": None}}}),
    ("mixed", {"c": "cards", "where": {"rank": None}}),
    ("mixed", {"c": "cards", "where": {"rank": {"in": [None, "x", 2]}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"lte": "y"}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"gt": "x"}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"lt": "😀"}}}),
    ("mixed", {"c": "cards", "where": {"rank": 1}}),
    ("mixed", {"c": "cards", "where": {"rank": 2.0}}),
    ("mixed", {"c": "cards", "where": {"rank": True}}),
    ("mixed", {"c": "cards", "where": {"rank": {"gt": False}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"gte": 1.5, "lt": 2}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"gt": None}}}),
    ("mixed", {"c": "cards", "where": {"rank": {"in": []}}}),
    ("mixed", {"c": "cards", "where": {"id": "g"}}),
    ("mixed", {"c": "cards", "where": {"id": {"in": ["a", "i", "zz"]}}}),
    ("mixed", {"c": "cards", "where": {"id": {"gte": "h"}}}),
    # several conditions, orders and limits together
    ("cards", {"c": "cards", "where": {"list_id": "l1"}}),
    ("cards", {"c": "cards", "where": {"list_id": "l1", "done": {"ne": True}}}),
    ("cards", {"c": "cards", "where": {"done": False}}),
    ("cards", {"c": "cards", "where": {"done": {"in": [None, True]}}}),
    ("cards", {"c": "cards", "where": {"status": {"in": ["todo", "doing"]}}}),
    ("cards", {"c": "cards", "where": {"status": {"gte": "a"}}}),
    ("cards", {"c": "cards", "where": {"rank": {"gte": 0, "lte": 2}, "list_id": {"ne": "l2"}}}),
    ("cards", {"c": "cards", "order": [["status", "asc"], ["rank", "desc"]]}),
    ("cards", {"c": "cards", "order": [["done", "desc"], ["rank", "asc"]]}),
    ("cards", {"c": "cards", "order": [["done", "asc"]], "limit": 4}),
    ("cards", {"c": "cards", "where": {"list_id": "l1"}, "order": [["rank", "desc"]], "limit": 2}),
    ("cards", {"c": "cards", "where": {"status": "todo"}, "order": [["id", "asc"]], "limit": 1}),
    ("cards", {"c": "cards", "where": {}, "order": [], "limit": None}),
]

# Queries every implementation refuses (Python raises QueryError): the messages differ.
REFUSED: list[Any] = [
    "cards",
    ["cards"],
    {"c": "cards", "filter": {}},
    {"where": {}},
    {"c": 1},
    {"c": "nope"},
    {"c": "cards", "where": {"title": "x"}},
    {"c": "cards", "where": {"status": {"like": "x"}}},
    {"c": "cards", "where": {"status": {"in": "x"}}},
    {"c": "cards", "where": {"status": {"in": [["x"]]}}},
    {"c": "cards", "where": {"status": {"in": list(range(1001))}}},
    {"c": "cards", "where": {"status": [1]}},
    {"c": "cards", "where": {"status": {"eq": {"a": 1}}}},
    {"c": "cards", "where": "status"},
    {"c": "cards", "where": []},
    {"c": "cards", "order": {}},
    {"c": "cards", "order": ""},
    {"c": "cards", "order": [["title", "asc"]]},
    {"c": "cards", "order": [["rank", "up"]]},
    {"c": "cards", "order": [["rank"]]},
    {"c": "cards", "order": ["rank"]},
    {"c": "cards", "limit": 0},
    {"c": "cards", "limit": 1.5},
    {"c": "cards", "limit": True},
    {"c": "cards", "limit": "5"},
    {"c": "cards", "limit": 10_001},
]


def _case(rows_name: str, wire: dict[str, Any]) -> dict[str, Any]:
    query = Query.parse(wire, BOARD)
    rows = ROW_SETS[rows_name]
    matching = [r for r in rows if query.matches(r)]
    return {
        "rows": rows_name,
        "query": wire,
        "matching": [r["id"] for r in matching],
        "result": [r["id"] for r in query.sort(matching)],
        "normalized": query.to_wire(),
    }


def _refused(wire: Any) -> dict[str, Any]:
    try:
        Query.parse(wire, BOARD)
    except QueryError:
        return {"query": wire, "refused": True}
    raise AssertionError(f"Python accepts {wire!r}, listed as refused")


def generate() -> dict[str, Any]:
    return {
        "description": (
            "Queries on the kit's schema (schema.json) and what syncline/query.py makes of "
            "them: the ids of the rows that match (in row order), the result (matching rows "
            "ordered, limit applied), the canonical wire form, or a refusal. Format: "
            "README.md. Written by python -m tests.gen_query_fixture; do not edit by hand."
        ),
        "row_sets": ROW_SETS,
        "cases": [_case(rows, q) for rows, q in CASES] + [_refused(q) for q in REFUSED],
    }


def main() -> None:
    write(QUERY_PATH, render(generate()))


if __name__ == "__main__":
    main()
