"""Write the conformance kit's local_refusals.json (tests/fixtures/protocol/): local
edits that the server refuses whatever the record holds (an unknown collection or
field, ``incr`` on a field that is not a counter, ``add``/``remove`` on one that is not
a set, a plain update of a counter or set), each with the refusal the server sends.

Every expected refusal is computed by sending the edit to a real :class:`Engine`
holding the kit's schema and the file's records, so the file is the server's words. A
client must refuse each edit before any round trip with exactly that error
(``tests/test_local_refusals.py`` runs the Python client,
``syncline/static/test/local_refusals.test.js`` the browser's). Run
``python -m tests.gen_local_refusals_fixture`` after changing a message on purpose.
"""

from __future__ import annotations

import asyncio
from typing import Any

from syncline import Engine, Insert, MemoryStore
from syncline.ssr import read_page

from .kit import LOCAL_REFUSALS_PATH, render, write
from .schemas import BOARD

RECORDS = [
    Insert(c="boards", id="b1", fields={"name": "Launch"}),
    Insert(c="lists", id="l1", fields={"board_id": "b1", "name": "Todo"}),
    Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "Ship"}),
    Insert(c="cards", id='it\'s "quoted" \\ café', fields={"list_id": "l1"}),
]
QUOTED = 'it\'s "quoted" \\ café'

# Local edits in the scenario files' "local" form (the kit's README, Steps that act).
# Those naming an unknown collection need a client that knows every collection.
EDITS: list[dict[str, Any]] = [
    # unknown collection
    {"op": "insert", "c": "card", "id": "c9", "fields": {"list_id": "l1"}},
    {"op": "update", "c": "card", "id": "c1", "set": {"title": "x"}},
    {"op": "delete", "c": "card", "id": "c1"},
    {"op": "incr", "c": "cardz", "id": "c1", "field": "votes", "by": 1},
    {"op": "add", "c": "Cards", "id": "c1", "field": "labels", "values": ["bug"]},
    {"op": "remove", "c": "cards_", "id": "c1", "field": "labels", "values": ["bug"]},
    # unknown field
    {"op": "insert", "c": "cards", "id": "c9", "fields": {"list_id": "l1", "titel": "x"}},
    {"op": "insert", "c": "boards", "id": "b9", "fields": {"name": "n", "Owner": "ann"}},
    {"op": "insert", "c": "cards", "id": QUOTED + "2", "fields": {"list_id": "l1", "vote": 1}},
    {"op": "insert", "c": "cards", "id": "c\t\u200b\x7f\n\U0001f98a", "fields": {"x": 1}},
    {"op": "update", "c": "cards", "id": "c1", "set": {"titel": "x"}},
    {"op": "update", "c": "cards", "id": "c1", "set": {"title": "x", "id": "c2"}},
    {"op": "update", "c": "cards", "id": QUOTED, "set": {"__proto__": "x"}},
    {"op": "incr", "c": "cards", "id": "c1", "field": "vote", "by": 1},
    {"op": "add", "c": "cards", "id": "c1", "field": "label", "values": ["bug"]},
    {"op": "remove", "c": "lists", "id": "l1", "field": "labels", "values": ["bug"]},
    # incr on a field that is not a counter
    {"op": "incr", "c": "cards", "id": "c1", "field": "title", "by": 1},
    {"op": "incr", "c": "cards", "id": "c1", "field": "description", "by": 1},
    {"op": "incr", "c": "cards", "id": "c1", "field": "labels", "by": 2},
    {"op": "incr", "c": "cards", "id": "c1", "field": "status", "by": 1},
    {"op": "incr", "c": "cards", "id": "c1", "field": "slug", "by": 1},
    {"op": "incr", "c": "lists", "id": "l1", "field": "position", "by": 1},
    {"op": "incr", "c": "cards", "id": QUOTED, "field": "rank", "by": 1},
    # add or remove on a field that is not a set
    {"op": "add", "c": "cards", "id": "c1", "field": "votes", "values": [1]},
    {"op": "add", "c": "cards", "id": "c1", "field": "title", "values": ["bug"]},
    {"op": "remove", "c": "cards", "id": "c1", "field": "status", "values": ["todo"]},
    {"op": "remove", "c": "boards", "id": "b1", "field": "owner", "values": ["ann"]},
    # a plain update of a counter or a set
    {"op": "update", "c": "cards", "id": "c1", "set": {"votes": 3}},
    {"op": "update", "c": "cards", "id": "c1", "set": {"title": "x", "labels": ["bug"]}},
]


def _wire(edit: dict[str, Any]) -> dict[str, Any]:
    """The op a client would send for a local edit (bases as a fresh client has them)."""
    op = dict(edit)
    if op["op"] == "update":
        op["base"] = dict.fromkeys(op["set"], 0)
        op["prev"] = dict.fromkeys(op["set"])
    if op["op"] == "remove":
        op["base"] = 0
    return op


async def _generate() -> dict[str, Any]:
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(*RECORDS)
    queries = {name: {"c": name} for name in BOARD.collections}
    state = (await read_page(engine, "user", queries)).to_wire()
    state["cursor"] = "e1." + state["cursor"].rsplit(".", 1)[1]  # the store's epoch is random
    cases = []
    for n, edit in enumerate(EDITS, start=1):
        ack = await engine.apply("user", "kit-refusals", {"id": n, "ops": [_wire(edit)]})
        assert ack.status == "rejected" and ack.error is not None, (edit, ack)
        cases.append(
            {
                "local": edit,
                "refusal": ack.error,
                "needs_every_collection": edit["c"] not in BOARD.collections,
            }
        )
    return {
        "description": (
            "Local edits the server refuses whatever the record holds, with the server's "
            "refusal: a client refuses each before any round trip, with this error. Written "
            "by python -m tests.gen_local_refusals_fixture; do not edit by hand."
        ),
        "schema": BOARD.hash,
        "hydrate": state,
        "cases": cases,
    }


def generate() -> dict[str, Any]:
    return asyncio.run(_generate())


def main() -> None:
    write(LOCAL_REFUSALS_PATH, render(generate()))


if __name__ == "__main__":
    main()
