"""The replica: optimistic edits, pending until the cursor reaches the ack, rebase, drafts."""

from __future__ import annotations

import pytest

from syncline import Engine, InvalidMutation, MemoryStore, Query, Replica
from syncline.cursor import Cursor
from syncline.exceptions import CursorError

from .schemas import BOARD

QUERIES = {"cards": Query.parse({"c": "cards"}, BOARD)}


async def setup() -> tuple[Engine, Replica, Replica]:
    engine = Engine(BOARD, MemoryStore())
    admin = Replica(BOARD, "admin")
    admin.load_snapshot((await engine.snapshot("u", QUERIES)).to_wire())
    with admin.batch() as b:
        b.insert("boards", "b1", name="B")
        b.insert("lists", "l1", board_id="b1")
        b.insert("cards", "c1", list_id="l1", title="first", description="The fox")
    assert b.mutation is not None
    await engine.apply("u", "admin", b.mutation)
    snap = (await engine.snapshot("u", QUERIES)).to_wire()
    a, c = Replica(BOARD, "A"), Replica(BOARD, "B")
    a.load_snapshot(snap)
    c.load_snapshot(snap)
    return engine, a, c


async def pull(engine: Engine, replica: Replica) -> None:
    assert replica.cursor is not None
    replica.apply_changes(
        (await engine.changes_since("u", replica.cursor, replica.queries)).to_wire()
    )


async def send(engine: Engine, replica: Replica) -> list[str]:
    kinds: list[str] = []
    for m in replica.unacked():
        kinds += [
            e.kind
            for e in replica.apply_ack((await engine.apply("u", replica.client_id, m)).to_wire())
        ]
    return kinds


async def test_hydrates_from_a_snapshot_without_refetching() -> None:
    _, a, _ = await setup()
    assert a.get("cards", "c1") == {
        **BOARD["cards"].validate(
            "c1", {"list_id": "l1", "title": "first", "description": "The fox"}
        ),
        "id": "c1",
    }
    assert a.cursor is not None and a.cursor.seq == 1


async def test_local_edits_show_at_once_and_stay_pending_until_the_cursor_reaches_the_ack() -> None:
    engine, a, _ = await setup()
    m = a.update("cards", "c1", title="mine")
    assert a.get("cards", "c1")["title"] == "mine"  # type: ignore[index]
    assert m.ops[0].base == {"title": 1} and m.ops[0].prev == {"title": "first"}  # type: ignore[union-attr]
    await send(engine, a)
    assert len(a.pending) == 1 and a.pending[0].seq == 2  # acked, but the change has not arrived
    assert a.get("cards", "c1")["title"] == "mine"  # no flicker back to "first"
    await pull(engine, a)
    assert a.pending == [] and a.server[("cards", "c1")].data["title"] == "mine"


async def test_editing_one_field_twice_before_the_first_ack_never_conflicts() -> None:
    engine, a, _ = await setup()
    a.update("cards", "c1", status="doing")
    a.update("cards", "c1", status="done")
    kinds = await send(engine, a)
    assert "conflict" not in kinds and "overwritten" not in kinds
    await pull(engine, a)
    assert a.get("cards", "c1")["status"] == "done"  # type: ignore[index]


async def test_pending_text_edits_rebase_on_server_changes() -> None:
    engine, a, b = await setup()
    a.update("cards", "c1", description="The quick fox")
    b.update("cards", "c1", description="The fox jumps")
    await send(engine, b)
    await pull(engine, a)  # b's edit arrives under a's pending edit
    assert a.get("cards", "c1")["description"] == "The quick fox jumps"  # type: ignore[index]
    kinds = await send(engine, a)
    assert "merged" in kinds
    await pull(engine, a)
    await pull(engine, b)
    assert a.server_data() == b.server_data()
    assert b.get("cards", "c1")["description"] == "The quick fox jumps"  # type: ignore[index]


async def test_a_manual_conflict_becomes_a_draft_and_its_answer_keeps_every_edit() -> None:
    engine, a, b = await setup()
    a.update("cards", "c1", status="doing")
    await send(engine, a)
    with b.batch() as batch:
        batch.update("cards", "c1", status="blocked", title="b's title")
    kinds = await send(engine, b)
    assert "conflict" in kinds and b.pending == []
    (draft,) = b.drafts
    (conflict,) = draft.conflicts
    assert (conflict.base, conflict.mine, conflict.theirs) == ("todo", "blocked", "doing")
    answer = b.resolve(draft, {"status": "blocked"})
    assert answer is not None and b.drafts == []
    await send(engine, b)
    await pull(engine, b)
    await pull(engine, a)
    assert a.get("cards", "c1")["status"] == "blocked"  # type: ignore[index]
    assert a.get("cards", "c1")["title"] == "b's title"  # type: ignore[index]


async def test_overwritten_lww_edits_are_reported() -> None:
    engine, a, b = await setup()
    a.update("cards", "c1", title="a")
    b.update("cards", "c1", title="b")
    await send(engine, a)
    assert "overwritten" in await send(engine, b)


async def test_a_rejected_mutation_is_dropped_with_its_reason() -> None:
    engine, a, _ = await setup()
    a.insert("cards", "c2", list_id="nowhere")
    assert a.get("cards", "c2") is not None  # optimistic
    kinds = await send(engine, a)
    assert kinds[0] == "rejected" and a.pending == [] and a.get("cards", "c2") is None


async def test_local_queries_see_pending_inserts_in_order() -> None:
    _, a, _ = await setup()
    a.insert("cards", "c0", list_id="l1", rank=5.0)
    q = Query.parse({"c": "cards", "where": {"list_id": "l1"}, "order": [["rank", "desc"]]}, BOARD)
    assert [r["id"] for r in a.query(q)] == ["c0", "c1"]


async def test_changes_must_follow_the_cursor() -> None:
    _engine, a, _ = await setup()
    with pytest.raises(CursorError, match="do not follow"):
        a.apply_changes({"from": str(Cursor("x", 0)), "to": "x.1", "q": {}})


async def test_updating_a_record_the_replica_does_not_hold_is_refused_locally() -> None:
    _, a, _ = await setup()
    with pytest.raises(InvalidMutation, match="cards/'zz': no such record here"):
        a.update("cards", "zz", title="x")


async def test_delete_then_reinsert_by_the_same_client_keeps_later_updates() -> None:
    engine, a, _ = await setup()
    a.delete("cards", "c1")
    a.insert("cards", "c1", list_id="l1", title="again")
    a.update("cards", "c1", title="again, edited")
    await send(engine, a)
    await pull(engine, a)
    got = a.get("cards", "c1")
    assert got is not None and got["title"] == "again, edited"
    assert a.server[("cards", "c1")].inc == 2


async def test_a_changes_frame_that_does_not_fit_changes_nothing() -> None:
    _, a, _ = await setup()
    assert a.cursor is not None
    epoch, seq = a.cursor.epoch, a.cursor.seq
    frame = {
        "from": str(a.cursor),
        "to": f"{epoch}.{seq + 1}",
        "q": {
            "cards": [
                {
                    "k": "patch",
                    "c": "cards",
                    "id": "c1",
                    "inc": 1,
                    "v": 2,
                    "fv": {"title": 2},
                    "data": {"title": "changed"},
                },
                {"k": "patch", "c": "cards", "id": "ghost", "inc": 1, "v": 2, "fv": {}, "data": {}},
            ]
        },
    }
    with pytest.raises(CursorError, match="does not hold"):
        a.apply_changes(frame)
    assert a.get("cards", "c1")["title"] == "first"  # type: ignore[index]
    assert a.cursor.seq == seq


async def test_an_update_of_a_deleted_record_is_reported_as_dropped() -> None:
    engine, a, b = await setup()
    b.delete("cards", "c1")
    await send(engine, b)
    a.update("cards", "c1", title="too late")
    mutation = a.pending[-1].mutation
    events = a.apply_ack((await engine.apply("u", "A", mutation)).to_wire())
    (dropped,) = [e for e in events if e.kind == "dropped"]
    assert dropped.keys == (("cards", "c1"),) and dropped.reason == "the record was deleted"
