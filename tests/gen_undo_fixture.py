"""Write the conformance kit's undo.json (tests/fixtures/protocol/): undo and redo of a
client's own edits, per merge policy, with and without others' changes since.

Each case runs a real :class:`Engine` (memory store) with two in-process replicas, "me"
and "other"; only what "me" sees and sends is written down, so a runner needs no
server. Steps, in order:

* ``{"hydrate": snapshot}``: load the snapshot.
* ``{"local": [edit, ...], "at": seconds, "sent": [mut]}``: one user action (one
  undo group) of edits in the kit's "local" form, made at time ``at`` of the replica's
  clock; ``sent`` the mutations it queues (``mut`` frames, no ``t``). With ``"typed":
  true`` the edits are made outside any group (as ``bindInput`` does, one per
  keystroke), so typing within the replica's default ``undo_pause`` coalesces.
* ``{"undo": true | "redo": true, "at": seconds, "sent": [...], "skipped": [...],
  "conflicts": [...]}``: undo (redo) the newest entry; ``skipped`` the parts left
  alone (c, id, field, reason), ``conflicts`` the drafts' conflicts (base: after my
  change, mine: before, theirs: now).
* ``{"ack": ack}``, ``{"changes": frame}``: server frames to feed.
* ``{"expect": {"view": {id: data or null}, "can_undo", "can_redo", "drafts"}}``:
  ``drafts`` the conflicts of each draft the replica holds.

``tests/test_undo_fixture.py`` runs the file in Python,
``syncline/static/test/undo_fixture.test.js`` in JavaScript. Run
``python -m tests.gen_undo_fixture`` after changing the semantics on purpose.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import nullcontext
from typing import Any

from syncline import Engine, Insert, MemoryStore, Query, Replica
from syncline.protocol.client import mut_frame

from .kit import UNDO_PATH, render, write
from .schemas import BOARD

SEED = [
    Insert(c="boards", id="b1", fields={"name": "Launch"}),
    Insert(c="lists", id="l1", fields={"board_id": "b1", "name": "Todo"}),
    Insert(c="lists", id="l2", fields={"board_id": "b1", "name": "Done"}),
    Insert(
        c="cards",
        id="c1",
        fields={
            "list_id": "l1",
            "title": "Ship",
            "description": "The fox jumps",
            "labels": ["bug"],
            "status": "todo",
            "slug": "ab",
        },
    ),
]


def upd(**fields: Any) -> dict[str, Any]:
    return {"op": "update", "c": "cards", "id": "c1", "set": fields}


def incr(by: int) -> dict[str, Any]:
    return {"op": "incr", "c": "cards", "id": "c1", "field": "votes", "by": by}


def add(*values: str) -> dict[str, Any]:
    return {"op": "add", "c": "cards", "id": "c1", "field": "labels", "values": list(values)}


def rm(*values: str) -> dict[str, Any]:
    return {"op": "remove", "c": "cards", "id": "c1", "field": "labels", "values": list(values)}


DELETE = {"op": "delete", "c": "cards", "id": "c1"}
INSERT2 = {"op": "insert", "c": "cards", "id": "c2", "fields": {"list_id": "l1", "title": "New"}}

# (name, description, program): ("me", [edits]) one user action (a group), ("type", [edit],
# at) one keystroke outside any group at time ``at``, ("other", [edits]) another client's,
# committed and seen; ("undo",) / ("redo",), or ("undo", at). Steps without a time come
# 10 s after the last.
CASES: list[tuple[str, str, list[tuple[Any, ...]]]] = [
    ("lww_alone", "lww: undo restores the old value", [("me", [upd(title="Go")]), ("undo",)]),
    (
        "lww_redo",
        "lww: redo puts my value back",
        [("me", [upd(title="Go")]), ("undo",), ("redo",)],
    ),
    (
        "lww_changed_by_other",
        "lww: another client changed the field since: skipped, named",
        [("me", [upd(title="Go")]), ("other", [upd(title="Theirs")]), ("undo",)],
    ),
    (
        "lww_partial",
        "lww: of two fields, the one another client changed is skipped, the other restored",
        [
            ("me", [upd(title="Go", list_id="l2")]),
            ("other", [upd(title="Theirs")]),
            ("undo",),
        ],
    ),
    (
        "lww_mine_twice",
        "lww: two entries of mine undone in turn return to the start",
        [("me", [upd(title="A")]), ("me", [upd(title="B")]), ("undo",), ("undo",)],
    ),
    (
        "lww_other_between_mine",
        "lww: my second change overwrote theirs; undoing it brings theirs back, undoing "
        "the first then skips (the field holds theirs, not mine)",
        [
            ("me", [upd(title="A")]),
            ("other", [upd(title="Theirs")]),
            ("me", [upd(title="B")]),
            ("undo",),
            ("undo",),
        ],
    ),
    (
        "custom_changed_by_other",
        "custom merge: as lww",
        [("me", [upd(slug="abc")]), ("other", [upd(slug="abcd")]), ("undo",)],
    ),
    (
        "counter_alone",
        "counter: the opposite increment",
        [("me", [incr(3)]), ("undo",)],
    ),
    (
        "counter_with_other",
        "counter: others' increments stay",
        [("me", [incr(3)]), ("other", [incr(5)]), ("undo",), ("redo",)],
    ),
    (
        "set_add_alone",
        "set: undo of an add removes what it added, not what was there",
        [("me", [add("bug", "ux")]), ("undo",)],
    ),
    (
        "set_add_other_readds",
        "set: another client added the element again since: it stays",
        [("me", [add("ux")]), ("other", [rm("ux")]), ("other", [add("ux")]), ("undo",)],
    ),
    (
        "set_remove_alone",
        "set: undo of a remove adds the element back",
        [("me", [rm("bug")]), ("undo",), ("redo",)],
    ),
    (
        "set_remove_other_changed",
        "set: another client changed the set since: the re-add is skipped",
        [("me", [rm("bug")]), ("other", [add("ops")]), ("undo",)],
    ),
    (
        "text_alone",
        "text: the inverse edit",
        [("me", [upd(description="The red fox jumps")]), ("undo",), ("redo",)],
    ),
    (
        "text_others_typing_stays",
        "text: others' later typing stays; only my edit goes",
        [
            ("me", [upd(description="The red fox jumps")]),
            ("other", [upd(description="The red fox jumps high")]),
            ("undo",),
        ],
    ),
    (
        "manual_alone",
        "manual: undo restores the old value",
        [("me", [upd(status="done")]), ("undo",)],
    ),
    (
        "manual_changed_by_other",
        "manual: another client changed the field since: a draft (base after mine, mine "
        "before, theirs now)",
        [("me", [upd(status="done")]), ("other", [upd(status="doing")]), ("undo",)],
    ),
    (
        "insert_undone_by_delete",
        "insert: undone by delete, redone by a new incarnation",
        [("me", [INSERT2]), ("undo",), ("redo",)],
    ),
    (
        "delete_undone_by_insert",
        "delete: undone by an insert of the last incarnation's data",
        [("me", [upd(title="Last")]), ("me", [DELETE]), ("undo",)],
    ),
    (
        "group_undone_whole",
        "a group of several edits (three mutations) is one entry",
        [("me", [upd(title="Go"), incr(2), add("ux")]), ("undo",)],
    ),
    (
        "typing_burst_one_entry",
        "typing: three keystrokes within the pause are one entry; undo restores the text "
        "as it was before the burst, redo the whole burst",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("type", [upd(description="The fox jumps!!")], 100.4),
            ("type", [upd(description="The fox jumps!!!")], 101.2),
            ("undo",),
            ("redo",),
        ],
    ),
    (
        "typing_two_bursts",
        "typing: two bursts separated by a pause are two entries, undone in turn",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("type", [upd(description="The fox jumps!!")], 100.5),
            ("type", [upd(description="The fox jumps!!?")], 102.0),
            ("type", [upd(description="The fox jumps!!??")], 102.5),
            ("undo",),
            ("undo",),
        ],
    ),
    (
        "typing_burst_others_typing_stays",
        "typing: undoing a burst merges against another client's typing since",
        [
            ("type", [upd(description="The red fox jumps")], 100.0),
            ("type", [upd(description="The red, red fox jumps")], 100.3),
            ("other", [upd(description="The red, red fox jumps high")]),
            ("undo",),
        ],
    ),
    (
        "typing_lww_string_coalesces",
        "typing: an lww string field coalesces like text",
        [
            ("type", [upd(title="Ships")], 100.0),
            ("type", [upd(title="Shipsz")], 100.2),
            ("undo",),
        ],
    ),
    (
        "typing_other_field_ends_burst",
        "typing: a keystroke in another field ends the burst",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("type", [upd(title="Ships")], 100.2),
            ("type", [upd(description="The fox jumps!!")], 100.4),
            ("undo",),
            ("undo",),
        ],
    ),
    (
        "typing_other_kind_ends_burst",
        "typing: an entry of another kind (a counter) ends the burst",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("type", [incr(1)], 100.2),
            ("type", [upd(description="The fox jumps!!")], 100.4),
            ("undo",),
        ],
    ),
    (
        "typing_group_ends_burst",
        "typing: an explicit group is its own entry and ends the burst",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("me", [upd(description="The fox jumps!!")], 100.2),
            ("type", [upd(description="The fox jumps!!!")], 100.4),
            ("undo",),
        ],
    ),
    (
        "typing_after_undo_new_entry",
        "typing: after an undo, the next keystroke starts a new entry",
        [
            ("type", [upd(description="The fox jumps!")], 100.0),
            ("type", [upd(description="The fox jumps!!")], 100.2),
            ("undo", 100.3),
            ("type", [upd(description="The fox jumps?")], 100.4),
            ("undo",),
        ],
    ),
    (
        "update_of_deleted_skipped",
        "another client deleted the record since: the undo skips it",
        [("me", [upd(title="Go")]), ("other", [DELETE]), ("undo",)],
    ),
]


def _skipped(outcome: Any) -> list[dict[str, Any]]:
    return [s.to_wire() for s in outcome.skipped] if outcome else []


def _conflicts(outcome: Any) -> list[dict[str, Any]]:
    return [c.to_wire() for c in outcome.conflicts] if outcome else []


async def run_case(program: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(*SEED)
    queries = {"cards": Query.parse({"c": "cards"}, BOARD)}
    clock = [0.0]  # the replicas' clock (seconds), set by each step
    me = Replica(BOARD, "me", clock=lambda: clock[0])
    other = Replica(BOARD, "other", clock=lambda: clock[0])
    snap = (await engine.snapshot("user", queries)).to_wire()
    me.load_snapshot(snap)
    other.load_snapshot(snap)
    steps: list[dict[str, Any]] = [{"hydrate": snap}]

    async def flush(replica: Replica, record: bool) -> None:
        for m in replica.unacked():
            ack = (await engine.apply("user", replica.client_id, m)).to_wire()
            replica.apply_ack(ack)
            if record:
                steps.append({"ack": ack})
        assert replica.cursor is not None
        changes = (await engine.changes_since("user", replica.cursor, replica.queries)).to_wire()
        replica.apply_changes(changes)
        if record:
            steps.append({"changes": changes})

    for step in program:
        timed = step[1:2] if step[0] in ("undo", "redo") else step[2:3]
        clock[0] = timed[0] if timed else clock[0] + 10.0
        if step[0] in ("me", "other", "type"):
            replica = other if step[0] == "other" else me
            if step[0] == "other":  # the other client has seen my changes
                await flush(other, False)
            with nullcontext() if step[0] == "type" else replica.undo_group():
                for edit in step[1]:
                    apply_edit(replica, edit)
            if step[0] != "other":
                local: dict[str, Any] = {"local": step[1], "at": clock[0]}
                if step[0] == "type":
                    local["typed"] = True
                steps.append({**local, "sent": [_mut(m) for m in me.unacked()]})
            await flush(replica, step[0] != "other")
            if step[0] == "other":
                await flush(me, True)
            continue
        outcome = me.undo() if step[0] == "undo" else me.redo()
        steps.append(
            {
                step[0]: True,
                "at": clock[0],
                "sent": [_mut(m) for m in me.unacked()],
                "skipped": _skipped(outcome),
                "conflicts": _conflicts(outcome),
            }
        )
        await flush(me, True)
    view = {rid: me.get("cards", rid) for rid in ("c1", "c2")}
    drafts = [[c.to_wire() for c in d.conflicts] for d in me.drafts]
    expect = {"view": view, "can_undo": me.can_undo, "can_redo": me.can_redo, "drafts": drafts}
    steps.append({"expect": expect})
    # The store's epoch is random: the file says e1.
    epoch = snap["cursor"].rsplit(".", 1)[0]
    fixed: list[dict[str, Any]] = json.loads(json.dumps(steps).replace(f'"{epoch}.', '"e1.'))
    return fixed


def _mut(m: Any) -> dict[str, Any]:
    frame = mut_frame(m)
    frame.pop("t")
    return frame


def apply_edit(replica: Replica, edit: dict[str, Any]) -> None:
    """One edit in the kit's "local" form (a group's part)."""
    kind, c, rid = edit["op"], edit["c"], edit["id"]
    if kind == "insert":
        replica.insert(c, rid, **edit["fields"])
    elif kind == "update":
        replica.update(c, rid, **edit["set"])
    elif kind == "delete":
        replica.delete(c, rid)
    elif kind == "incr":
        replica.increment(c, rid, edit["field"], edit.get("by", 1))
    elif kind == "add":
        replica.add(c, rid, edit["field"], *edit["values"])
    elif kind == "remove":
        replica.remove(c, rid, edit["field"], *edit["values"])
    else:
        raise ValueError(f"unknown edit {kind!r}")


def generate() -> dict[str, Any]:
    cases = [
        {"name": name, "description": text, "steps": asyncio.run(run_case(program))}
        for name, text, program in CASES
    ]
    return {
        "description": (
            "Undo and redo of a client's own edits per merge policy, against others' "
            "changes since (tests/gen_undo_fixture.py has the format)."
        ),
        "client": "me",
        "cases": cases,
    }


if __name__ == "__main__":
    write(UNDO_PATH, render(generate()))
