"""Resolving one op against the committed record: every policy and its edge cases (pure)."""

from __future__ import annotations

from typing import Any

import pytest

from syncline import Insert, PolicyViolation, RecordExists, RecordNotFound
from syncline.merge import resolve
from syncline.ops import Delete, Increment, SetAdd, SetRemove, Update
from syncline.record import Record

from .schemas import BOARD, board_schema

CARDS = BOARD["cards"]


def committed(**data: Any) -> Record:
    """A card inserted by client A at seq 1."""
    new, _ = resolve(
        CARDS, None, Insert(c="cards", id="c1", fields={"list_id": "l1", **data}), seq=1, writer="A"
    )
    assert new is not None
    return new


def update(
    record: Record, writer: str, seq: int, base: int, seen: Record | None = None, **fields: Any
) -> tuple[Record, Any]:
    """``writer`` sets ``fields`` having seen ``seen`` (default: the record) at ``base``."""
    op = Update(
        c="cards",
        id="c1",
        set=fields,
        base=dict.fromkeys(fields, base),
        prev={f: (seen or record).data.get(f) for f in fields},
    )
    new, result = resolve(CARDS, record, op, seq=seq, writer=writer)
    return (new or record), result


def test_insert_fills_versions_and_writers() -> None:
    r = committed(title="t")
    assert (r.inc, r.v, r.fv["title"], r.fw["title"]) == (1, 1, 1, "A")


def test_insert_over_a_live_record_is_refused() -> None:
    with pytest.raises(RecordExists, match="cards/'c1': a live record already has this id"):
        resolve(
            CARDS,
            committed(),
            Insert(c="cards", id="c1", fields={"list_id": "l1"}),
            seq=2,
            writer="B",
        )


def test_insert_over_a_tombstone_starts_a_new_incarnation() -> None:
    dead, _ = resolve(CARDS, committed(), Delete(c="cards", id="c1"), seq=2, writer="A")
    assert dead is not None and dead.deleted
    reborn, _ = resolve(
        CARDS, dead, Insert(c="cards", id="c1", fields={"list_id": "l2"}), seq=3, writer="B"
    )
    assert reborn is not None and (reborn.inc, reborn.deleted, reborn.data["list_id"]) == (
        2,
        False,
        "l2",
    )


def test_lww_later_arrival_wins_and_names_the_overwritten_field() -> None:
    r = committed(title="base")
    r, first = update(r, "A", 2, 1, title="alice")
    r, second = update(r, "B", 3, 1, title="bob")
    assert r.data["title"] == "bob"
    assert first.overwritten == [] and second.overwritten == ["title"]


def test_a_client_editing_a_field_twice_before_its_ack_does_not_conflict_with_itself() -> None:
    r = committed(status="todo", title="x")
    r, _first = update(r, "A", 2, 1, status="doing", title="y")
    r, second = update(r, "A", 3, 1, status="done", title="z")  # still based on 1
    assert second.status == "applied" and second.conflicts == [] and second.overwritten == []
    assert (r.data["status"], r.data["title"]) == ("done", "z")


def test_manual_conflict_carries_base_mine_theirs_and_theirs_version() -> None:
    original = committed(status="todo")
    r, _ = update(original, "A", 2, 1, status="doing")
    after, result = update(r, "B", 3, 1, seen=original, status="blocked")
    assert result.status == "conflict"
    (c,) = result.conflicts
    assert (c.field, c.base, c.mine, c.theirs, c.theirs_v) == (
        "status",
        "todo",
        "blocked",
        "doing",
        2,
    )
    assert after.data["status"] == "doing"


def test_manual_same_value_is_not_a_conflict() -> None:
    r = committed(status="todo")
    r, _ = update(r, "A", 2, 1, status="done")
    _, result = update(r, "B", 3, 1, status="done")
    assert result.status == "applied"


def test_different_fields_never_conflict() -> None:
    r = committed(status="todo", title="t")
    r, _ = update(r, "A", 2, 1, status="doing")
    r, result = update(r, "B", 3, 1, title="new title")
    assert result.status == "applied" and result.overwritten == []
    assert (r.data["status"], r.data["title"]) == ("doing", "new title")


def test_custom_merge_function_decides_or_returns_conflict() -> None:
    r = committed(slug="ab")
    r, _ = update(r, "A", 2, 1, slug="abcd")
    merged, result = update(r, "B", 3, 1, slug="abc")
    assert merged.data["slug"] == "abcd" and result.status == "applied"
    _, tie = update(r, "B", 3, 1, slug="wxyz")
    assert tie.status == "conflict" and tie.conflicts[0].field == "slug"


def test_text_edits_merge_three_ways_with_emoji() -> None:
    r = committed(description="Ship 🚀 on Friday")
    r, _ = update(r, "A", 2, 1, description="Ship 🚀🚀 on Friday")
    op = Update(
        c="cards",
        id="c1",
        set={"description": "Ship 🚀 on Friday!"},
        base={"description": 1},
        prev={"description": "Ship 🚀 on Friday"},
    )
    new, result = resolve(CARDS, r, op, seq=3, writer="B")
    assert new is not None and new.data["description"] == "Ship 🚀🚀 on Friday!"
    assert result.merged == ["description"]


def test_text_overlapping_edits_fall_back_to_both_kept() -> None:
    r = committed(description="the cat sat")
    r, _ = update(r, "A", 2, 1, description="the dog sat")
    op = Update(
        c="cards",
        id="c1",
        set={"description": "the cow sat"},
        base={"description": 1},
        prev={"description": "the cat sat"},
    )
    new, _ = resolve(CARDS, r, op, seq=3, writer="B")
    assert new is not None and new.data["description"] == "the dogcow sat"


def test_a_plain_update_of_a_counter_is_refused() -> None:
    with pytest.raises(
        PolicyViolation, match=r"cards/'c1'\.votes: a counter changes only by increments"
    ):
        update(committed(), "A", 2, 1, votes=5)


def test_increments_all_apply_and_a_missing_value_counts_as_zero() -> None:
    r = committed()
    del r.data["votes"]
    for seq, by in ((2, 1), (3, 5), (4, -2)):
        new, _ = resolve(
            CARDS,
            r,
            Increment(c="cards", id="c1", field="votes", by=by),
            seq=seq,
            writer="AB"[seq % 2],
        )
        assert new is not None
        r = new
    assert r.data["votes"] == 4


def test_increment_of_a_non_counter_is_refused() -> None:
    with pytest.raises(PolicyViolation, match="incr needs a counter field"):
        resolve(CARDS, committed(), Increment(c="cards", id="c1", field="title"), seq=2, writer="A")


def test_set_add_wins_over_a_concurrent_remove() -> None:
    r = committed(labels=["bug"])
    # B re-adds "bug" at seq 2; A removes it having seen only seq 1: the add wins.
    r, _ = resolve(
        CARDS, r, SetAdd(c="cards", id="c1", field="labels", values=["bug"]), seq=2, writer="B"
    )  # type: ignore[assignment]
    new, result = resolve(
        CARDS,
        r,
        SetRemove(c="cards", id="c1", field="labels", values=["bug"], base=1),
        seq=3,
        writer="A",
    )
    assert new is None and r.data["labels"] == ["bug"]
    assert result.reason == "kept 1 element(s) added concurrently"


def test_set_remove_drops_what_it_saw_and_the_clients_own_adds() -> None:
    r = committed(labels=["a"])
    r2, _ = resolve(
        CARDS, r, SetAdd(c="cards", id="c1", field="labels", values=["b"]), seq=2, writer="A"
    )
    assert r2 is not None
    # A removes both: "a" it saw at seq 1, "b" it added itself (its cursor is still 1).
    r3, _ = resolve(
        CARDS,
        r2,
        SetRemove(c="cards", id="c1", field="labels", values=["a", "b"], base=1),
        seq=3,
        writer="A",
    )
    assert r3 is not None and r3.data["labels"] == []


def test_update_of_a_deleted_record_is_dropped_under_delete_wins() -> None:
    dead, _ = resolve(CARDS, committed(title="t"), Delete(c="cards", id="c1"), seq=2, writer="A")
    assert dead is not None
    new, result = update(dead, "B", 3, 1, title="late")
    assert new is dead and result.status == "dropped" and result.reason == "the record was deleted"


def test_update_of_an_older_incarnation_is_dropped() -> None:
    dead, _ = resolve(CARDS, committed(), Delete(c="cards", id="c1"), seq=2, writer="A")
    reborn, _ = resolve(
        CARDS, dead, Insert(c="cards", id="c1", fields={"list_id": "l1"}), seq=3, writer="A"
    )
    assert reborn is not None
    op = Update(c="cards", id="c1", set={"title": "old"}, base={"title": 1}, inc=1)
    new, result = resolve(CARDS, reborn, op, seq=4, writer="B")
    assert new is None and result.status == "dropped"


def test_update_of_a_deleted_record_is_a_conflict_under_manual() -> None:
    cards = board_schema(on_update_deleted="manual")["cards"]
    r, _ = resolve(
        cards, None, Insert(c="cards", id="c1", fields={"list_id": "l1"}), seq=1, writer="A"
    )
    dead, _ = resolve(cards, r, Delete(c="cards", id="c1"), seq=2, writer="A")
    assert dead is not None
    _, result = resolve(
        cards,
        dead,
        Update(c="cards", id="c1", set={"title": "x"}, base={"title": 1}),
        seq=3,
        writer="B",
    )
    assert result.status == "conflict"
    (c,) = result.conflicts
    assert c.field is None and c.theirs is None and c.mine["set"] == {"title": "x"}


def test_ops_on_a_record_that_never_existed_are_refused() -> None:
    with pytest.raises(RecordNotFound, match="cards/'zz': no such record"):
        resolve(CARDS, None, Delete(c="cards", id="zz"), seq=1, writer="A")
