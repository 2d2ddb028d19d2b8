"""Invariant 10: a write's answer is no oracle for a record the principal may not read.

Mallory sends every op kind at record ``x`` of Alice's, which she may not read, in every
state ``x`` can be in (never existed, live with the value she guesses, live with another
value, deleted, a newer incarnation than her op names); the full answer (status, code,
message, every field of the refusal, per-op results, whether a ``seq`` came back) must
be the same in each state. Alice, who may read ``x``, sends the same ops as a control:
her answers do differ by state, so the comparison has something to find.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from syncline import (
    Collection,
    Counter,
    Delete,
    Engine,
    Insert,
    Manual,
    Queryable,
    Ref,
    Schema,
    Text,
    Update,
)
from syncline import Set as SetPolicy
from syncline.demo.todomvc.app import SCHEMA as TODOMVC
from syncline.store import MemoryStore

ADMIN, ALICE, MALLORY = "admin", "alice", "mallory"


class Item(BaseModel):
    owner: Annotated[str, Queryable()]
    title: str = ""
    body: Annotated[str, Text()] = ""
    status: Annotated[str, Manual()] = "todo"
    votes: Annotated[int, Counter()] = 0
    tags: Annotated[frozenset[str], SetPolicy()] = frozenset()
    parent: Annotated[str | None, Ref("items")] = None


def _mine(who: str, rec: Mapping[str, Any] | None) -> bool:
    return rec is None or who == ADMIN or rec["owner"] == who


SCHEMA = Schema(
    [
        Collection(
            name,
            Item,
            on_update_deleted=on_deleted,
            read=lambda who, rec: who == ADMIN or rec["owner"] == who,
            write=lambda who, before, after: _mine(who, before) and _mine(who, after),
        )
        for name, on_deleted in (("items", "delete-wins"), ("notes", "manual"))
    ]
)

GUESS = {"title": "guess", "body": "guess", "status": "guess", "tags": ["t"]}
OTHER = {"title": "other", "body": "other", "status": "other", "tags": []}
STATES = ("never", "live_guess", "live_other", "deleted", "older")
TAKEN = ("live_guess", "live_other", "older")
"""States in which ``x`` is live: an insert of ``x`` cannot apply (ids are global)."""


async def engine_in(state: str, coll: str, owner: str = ALICE) -> Engine:
    """A fresh engine whose ``coll``/x is in ``state``; every state ends at the same head,
    so a ``seq`` in an answer could not tell them apart either."""
    engine = Engine(SCHEMA, MemoryStore())
    steps: list[list[Any]] = []
    live = {"owner": owner, **(OTHER if state == "live_other" else GUESS)}
    if state in ("live_guess", "live_other"):
        steps = [[Insert(c=coll, id="x", fields=live)], [_edit(coll, live)], []]
    elif state == "deleted":
        steps = [
            [Insert(c=coll, id="x", fields=live)],
            [_edit(coll, live)],
            [Delete(c=coll, id="x")],
        ]
    elif state == "older":
        steps = [
            [Insert(c=coll, id="x", fields=live)],
            [Delete(c=coll, id="x")],
            [Insert(c=coll, id="x", fields=live)],
        ]
    else:
        steps = [[], [], []]
    for i, ops in enumerate(steps):
        async with engine.transaction(ADMIN) as tx:
            # a filler record keeps every state's head at three commits
            tx.apply(*ops, Insert(c="items", id=f"filler-{i}", fields={"owner": ADMIN}))
    async with engine.transaction(ADMIN) as tx:  # the attacker's own record, for refs
        tx.apply(Insert(c="items", id="own", fields={"owner": MALLORY}))
    return engine


def _edit(coll: str, live: Mapping[str, Any]) -> Update:
    """An edit by the server after the insert, so fields have moved past base 1."""
    fields = ("title", "body", "status")
    return Update(
        c=coll,
        id="x",
        set={f: live[f] for f in fields},
        base=dict.fromkeys(fields, 1),
        prev={f: live[f] for f in fields},
    )


def op_menu(coll: str, who: str) -> dict[str, dict[str, Any]]:
    """Every op kind at ``coll``/x, each field policy, guessing ``GUESS``."""
    x = {"c": coll, "id": "x"}

    def update(field: str, base: int, **extra: Any) -> dict[str, Any]:
        return {"op": "update", **x, "set": {field: GUESS[field]}, "base": {field: base}, **extra}

    def own(field: str, value: Any) -> dict[str, Any]:
        """An update of the attacker's own record."""
        return {
            "op": "update",
            "c": "items",
            "id": "own",
            "set": {field: value},
            "base": {field: 99},
        }

    return {
        "insert_own": {"op": "insert", **x, "fields": {"owner": who, "title": "guess"}},
        "insert_theirs": {"op": "insert", **x, "fields": {"owner": "bob", "title": "guess"}},
        "insert_invalid": {"op": "insert", **x, "fields": {"owner": who, "votes": "many"}},
        "update_lww": update("title", 1, inc=1),
        "update_lww_seen": update("title", 99),
        "update_text": update("body", 1, prev={"body": "guess"}),
        "update_manual": update("status", 1, prev={"status": "todo"}),
        "update_manual_seen": update("status", 99, prev={"status": "guess"}),
        "update_unknown_field": {"op": "update", **x, "set": {"nope": 1}, "base": {"nope": 1}},
        "update_counter": {"op": "update", **x, "set": {"votes": 5}, "base": {"votes": 1}},
        "update_bad_value": update("title", 1) | {"set": {"title": 42}},
        "update_inc_2": update("title", 99, inc=2),
        "incr": {"op": "incr", **x, "field": "votes", "by": 1},
        "add": {"op": "add", **x, "field": "tags", "values": ["t"]},
        "remove": {"op": "remove", **x, "field": "tags", "values": ["t"], "base": 99},
        "remove_absent": {"op": "remove", **x, "field": "tags", "values": ["zz"], "base": 99},
        "delete": {"op": "delete", **x},
        "delete_inc_1": {"op": "delete", **x, "inc": 1},
        "delete_inc_2": {"op": "delete", **x, "inc": 2},
        "ref_from_own": own("parent", "x"),
        "insert_ref": {
            "op": "insert",
            "c": "items",
            "id": "fresh",
            "fields": {"owner": who, "parent": "x"},
        },
        "own_invalid": own("title", 7),
        "own_ok": own("title", "fine"),
    }


OPS = tuple(op_menu("items", MALLORY))
INSERTS_OF_X = {"insert_own", "insert_theirs"}
"""Ops that may apply when ``x`` is free (``insert_theirs`` followed by a delete writes
a tombstone the rule allows): a mutation holding one cannot answer alike when ``x`` is
taken, nor, through the incarnation number, when it was used before."""


def answer(ack: Any) -> Any:
    """The whole answer, with ``seq`` reduced to its presence (heads are equal anyway)."""
    wire = ack.to_wire()
    wire["seq"] = wire["seq"] is not None
    return wire


async def answers(
    who: str, coll: str, names: Sequence[str], mode: str = "whole", owner: str = ALICE
) -> dict[str, Any]:
    """``who``'s answer to one mutation of ``names`` in every state of ``coll``/x."""
    menu = op_menu(coll, who)
    out = {}
    for state in STATES:
        engine = await engine_in(state, coll, owner)
        mutation = {"id": 1, "ops": [menu[n] for n in names], "mode": mode}
        out[state] = answer(await engine.apply(who, f"{who}-tab-1", mutation))
    return out


def groups(names: Sequence[str]) -> list[tuple[str, ...]]:
    """The states whose answers must be equal for an unreadable ``x``."""
    if INSERTS_OF_X & set(names):
        return [TAKEN]  # a free id takes the insert; a taken one must not say how
    return [STATES]


def assert_alike(got: Mapping[str, Any], names: Sequence[str]) -> None:
    for group in groups(names):
        first = got[group[0]]
        for state in group[1:]:
            assert got[state] == first, (names, group[0], first, state, got[state])


@pytest.mark.parametrize("coll", ["items", "notes"])
@pytest.mark.parametrize("name", OPS)
async def test_every_op_kind_answers_alike_whatever_an_unreadable_records_state(
    coll: str, name: str
) -> None:
    got = await answers(MALLORY, coll, [name])
    assert_alike(got, [name] if name != "insert_theirs" else [])  # alone it never applies
    if name == "insert_own":
        # over a taken id: the answer of the write rule refusing that insert
        refused = await answers(MALLORY, coll, ["insert_theirs"])
        assert got["live_other"] == refused["never"]


async def test_the_readable_control_does_differ_by_state() -> None:
    """The comparison can fail: Alice, who may read x, is told its state."""
    for name in ("delete", "update_lww_seen", "insert_own", "update_manual", "remove"):
        got = await answers(ALICE, "items", [name], owner=ALICE)
        assert len({repr(a) for a in got.values()}) > 1, (name, got)
    # her own tombstone is still hers: deleting it again is dropped, not refused
    got = await answers(ALICE, "items", ["delete", "update_lww"], mode="partial")
    assert [r["status"] for r in got["deleted"]["results"]] == ["dropped", "dropped"]
    assert got["deleted"]["results"][0]["reason"] == "already deleted"


@pytest.mark.parametrize("mode", ["whole", "partial"])
async def test_an_insert_over_a_hidden_id_is_refused_only_where_it_would_be_written(
    mode: str,
) -> None:
    """A later op's refusal comes first, as it would for a free id; and a fresh insert
    that would apply is refused with the write rule's answer for that id."""
    for names in (
        ["insert_own", "own_invalid"],
        ["insert_own", "update_lww"],
        ["insert_own", "update_manual", "own_ok"],
        ["own_ok", "insert_own", "insert_ref"],
    ):
        got = await answers(MALLORY, "items", names, mode)
        assert_alike(got, names)
    got = await answers(MALLORY, "items", ["insert_own", "own_invalid"], mode)
    assert got["never"] == got["live_guess"]  # invalid, whether x is free or not
    assert got["live_guess"]["error"]["code"] == "invalid"


op_lists = st.lists(st.sampled_from(OPS), min_size=1, max_size=4)


@given(op_lists, st.sampled_from(["items", "notes"]), st.sampled_from(["whole", "partial"]))
def test_any_mutation_answers_alike_whatever_an_unreadable_records_state(
    names: list[str], coll: str, mode: str
) -> None:
    got = asyncio.run(answers(MALLORY, coll, names, mode))
    assert_alike(got, names)


async def test_a_no_op_on_a_record_one_may_read_but_not_write_is_refused() -> None:
    """Rules run before the no-op outcome: an update that changes nothing says forbidden
    to a principal who may not write the record, not applied."""
    schema = Schema(
        [
            Collection(
                "items",
                Item,
                read=lambda *_: True,
                write=lambda who, before, after: who == ADMIN,
            )
        ]
    )
    engine = Engine(schema, MemoryStore())
    async with engine.transaction(ADMIN) as tx:
        tx.apply(Insert(c="items", id="x", fields={"owner": ALICE, "title": "same"}))
    same = {"op": "update", "c": "items", "id": "x", "set": {"title": "same"}, "base": {"title": 1}}
    ack = await engine.apply(MALLORY, "m-tab-1", {"id": 1, "ops": [same]})
    assert ack.status == "rejected" and ack.error is not None
    assert ack.error["code"] == "forbidden"


async def test_server_transactions_still_write_what_their_principal_may_not_read() -> None:
    """Trusted writes keep their behaviour: a service principal that may write but not
    read updates, deletes and refers to records as before."""
    schema = Schema(
        [
            Collection(
                "items",
                Item,
                read=lambda who, rec: rec["owner"] == who,
                write=lambda *_: True,
            )
        ]
    )
    engine = Engine(schema, MemoryStore())
    async with engine.transaction("robot") as tx:
        tx.apply(Insert(c="items", id="x", fields={"owner": ALICE}))
    async with engine.transaction("robot") as tx:
        tx.apply(
            Update(c="items", id="x", set={"title": "t"}),
            Insert(c="items", id="y", fields={"owner": ALICE, "parent": "x"}),
            Delete(c="items", id="y"),
        )
    assert tx.ack is not None and tx.ack.seq == 2


async def test_a_todomvc_visitor_cannot_tell_whether_anothers_todo_is_completed() -> None:
    """The reported attack: ``set: {completed: true}`` on another visitor's todo."""
    a, b = "a" * 32, "b" * 32
    seen = []
    for completed, exists in ((True, True), (False, True), (False, False)):
        engine = Engine(TODOMVC, MemoryStore())
        if exists:
            todo = {"session": a, "title": "secret", "completed": completed}
            await engine.apply(a, "a-tab-001", {"id": 1, "ops": [_todo_insert(todo)]})
        t1 = {"c": "todos", "id": "t1"}
        probes = [
            {"op": "update", **t1, "set": {"completed": True}, "base": {"completed": 1}},
            {"op": "update", **t1, "set": {"title": "secret"}, "base": {"title": 1}},
            {"op": "delete", **t1},
        ]
        out = []
        for mid, probe in enumerate(probes, start=1):
            out.append(answer(await engine.apply(b, "b-tab-001", {"id": mid, "ops": [probe]})))
        seen.append(out)
    assert seen[0] == seen[1] == seen[2], seen
    assert {a["error"]["code"] for a in seen[0]} == {"not_found"}


def _todo_insert(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {"op": "insert", "c": "todos", "id": "t1", "fields": dict(fields)}


def test_the_op_menu_covers_every_op_kind() -> None:
    kinds = {op["op"] for op in op_menu("items", MALLORY).values()}
    assert kinds == {"insert", "update", "delete", "incr", "add", "remove"}
