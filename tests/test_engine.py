"""The engine over every store: exactly-once, atomicity, refusals, rules, reads, resume."""

from __future__ import annotations

from typing import Any

import pytest

from syncline import (
    ClientIdTaken,
    CursorAhead,
    CursorError,
    CursorReset,
    CursorTooOld,
    Engine,
    Insert,
    MutationGap,
    Query,
    Schema,
    Update,
)
from syncline.model import Collection
from syncline.store import Store

from .schemas import BOARD, Board, Card, List

ALL_CARDS = {"cards": Query.parse({"c": "cards"}, BOARD)}


async def seeded(store: Store, schema: Schema = BOARD) -> Engine:
    """An engine whose store holds board b1, list l1 and card c1 (written by the server)."""
    engine = Engine(schema, store)
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "Board", "owner": "alice"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1", "name": "Todo"}),
            Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "first"}),
        )
    return engine


def mut(mid: int, *ops: dict[str, Any], mode: str = "whole") -> dict[str, Any]:
    return {"id": mid, "ops": list(ops), "mode": mode}


def set_title(title: str, base: int = 1, rid: str = "c1") -> dict[str, Any]:
    return {
        "op": "update",
        "c": "cards",
        "id": rid,
        "set": {"title": title},
        "base": {"title": base},
    }


async def card(engine: Engine, rid: str = "c1") -> dict[str, Any] | None:
    snap = await engine.snapshot("admin", ALL_CARDS)
    return next(({**r["data"], "v": r["v"]} for r in snap.results["cards"] if r["id"] == rid), None)


class TestExactlyOnce:
    async def test_a_mutation_is_acked_after_commit_with_its_seq(self, store: Store) -> None:
        engine = await seeded(store)
        heads: list[int] = []
        engine.on_commit(heads.append)
        ack = await engine.apply("alice", "tab-1", mut(1, set_title("second")))
        assert (ack.status, ack.seq, ack.mutation_id) == ("applied", 2, 1)
        assert heads == [2]
        assert (await card(engine))["title"] == "second"  # type: ignore[index]

    async def test_a_replay_gets_the_original_ack_and_changes_nothing(self, store: Store) -> None:
        engine = await seeded(store)
        inc = {"op": "incr", "c": "cards", "id": "c1", "field": "votes", "by": 1}
        first = await engine.apply("alice", "tab-1", mut(1, inc))
        again = await engine.apply("alice", "tab-1", mut(1, inc))
        assert again.replay and (again.status, again.seq) == (first.status, first.seq)
        assert (await card(engine))["votes"] == 1  # type: ignore[index]

    async def test_a_gap_is_refused_and_uses_nothing(self, store: Store) -> None:
        engine = await seeded(store)
        with pytest.raises(MutationGap, match="next expected is 1") as info:
            await engine.apply("alice", "tab-1", mut(2, set_title("skipped")))
        assert info.value.expected == 1 and not info.value.permanent
        ack = await engine.apply("alice", "tab-1", mut(1, set_title("ok")))
        assert ack.status == "applied"

    async def test_a_permanent_refusal_uses_up_its_number_and_keeps_its_reason(
        self, store: Store
    ) -> None:
        engine = await seeded(store)
        bad = {"op": "update", "c": "cards", "id": "c1", "set": {"votes": 3}, "base": {"votes": 1}}
        ack = await engine.apply("alice", "tab-1", mut(1, bad))
        assert ack.status == "rejected" and ack.seq is None
        assert ack.error == {
            "code": "policy",
            "message": "cards/'c1'.votes: a counter changes only by increments: use incr",
            "collection": "cards",
            "id": "c1",
            "field": "votes",
        }
        assert (await engine.apply("alice", "tab-1", mut(1, bad))).error == ack.error  # kept
        assert (await engine.apply("alice", "tab-1", mut(2, set_title("next")))).status == "applied"

    async def test_a_malformed_mutation_with_an_id_is_a_permanent_refusal(
        self, store: Store
    ) -> None:
        engine = await seeded(store)
        ack = await engine.apply("alice", "tab-1", {"id": 1, "ops": [{"op": "explode"}]})
        assert ack.status == "rejected" and ack.error is not None
        assert "malformed mutation: ops.0" in ack.error["message"]

    async def test_a_client_id_belongs_to_its_first_principal(self, store: Store) -> None:
        engine = await seeded(store)
        await engine.apply("alice", "tab-1", mut(1, set_title("a")))
        with pytest.raises(ClientIdTaken, match="belongs to another principal"):
            await engine.apply("mallory", "tab-1", mut(2, set_title("m")))
        assert (await card(engine))["title"] == "a"  # type: ignore[index]

    async def test_acks_are_kept_until_the_client_confirms_them(self, store: Store) -> None:
        engine = await seeded(store)
        await engine.apply("alice", "tab-1", mut(1, set_title("a")))
        assert (await engine.apply("alice", "tab-1", mut(1, set_title("a")))).status == "applied"
        await engine.confirm_acks("tab-1", 1)
        replay = await engine.apply("alice", "tab-1", mut(1, set_title("a")))
        assert replay.status == "duplicate" and replay.replay


class TestAtomicity:
    async def test_one_bad_op_applies_nothing_of_the_mutation(self, store: Store) -> None:
        engine = await seeded(store)
        ack = await engine.apply(
            "alice",
            "tab-1",
            mut(
                1,
                set_title("changed"),
                {"op": "insert", "c": "cards", "id": "c2", "fields": {"list_id": "nope"}},
            ),
        )
        assert ack.status == "rejected" and ack.error is not None
        assert ack.error["code"] == "missing_reference"
        assert (
            ack.error["message"]
            == "cards/'c2'.list_id: refers to lists/'nope', which does not exist"
        )
        assert (await card(engine))["title"] == "first"  # type: ignore[index]
        assert await card(engine, "c2") is None

    async def test_a_mutation_may_insert_a_record_and_refer_to_it(self, store: Store) -> None:
        engine = await seeded(store)
        ack = await engine.apply(
            "alice",
            "tab-1",
            mut(
                1,
                {"op": "insert", "c": "lists", "id": "l2", "fields": {"board_id": "b1"}},
                {"op": "insert", "c": "cards", "id": "c2", "fields": {"list_id": "l2"}},
            ),
        )
        assert ack.status == "applied" and ack.seq == 2
        async with store.read() as tx:
            assert {(e.collection, e.id) for e in await tx.log(1, 2)} == {
                ("lists", "l2"),
                ("cards", "c2"),
            }

    async def test_a_manual_conflict_rejects_the_whole_mutation_by_default(
        self, store: Store
    ) -> None:
        engine = await seeded(store)
        status = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"status": "doing"},
            "base": {"status": 1},
        }
        await engine.apply("bob", "tab-b", mut(1, status))
        mine = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"status": "done"},
            "base": {"status": 1},
        }
        ack = await engine.apply("alice", "tab-a", mut(1, set_title("also"), mine))
        assert ack.status == "conflict" and ack.seq is None
        assert ack.results[1].conflicts[0].theirs == "doing"
        assert (await card(engine))["title"] == "first"  # type: ignore[index]

    async def test_partial_mode_commits_the_rest_and_keeps_theirs(self, store: Store) -> None:
        engine = await seeded(store)
        status = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"status": "doing"},
            "base": {"status": 1},
        }
        await engine.apply("bob", "tab-b", mut(1, status))
        mine = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"status": "done"},
            "base": {"status": 1},
        }
        ack = await engine.apply("alice", "tab-a", mut(1, set_title("also"), mine, mode="partial"))
        assert ack.status == "applied" and ack.seq == 3
        assert ack.results[1].status == "conflict"
        got = await card(engine)
        assert got is not None and (got["title"], got["status"]) == ("also", "doing")

    async def test_the_merged_record_must_validate(self, store: Store) -> None:
        engine = await seeded(store)
        ack = await engine.apply("alice", "tab-1", mut(1, set_title(42)))  # type: ignore[arg-type]
        assert ack.status == "rejected" and ack.error is not None
        assert ack.error["field"] == "title" and ack.error["code"] == "invalid"


def ruled_schema() -> Schema:
    """Boards readable and writable by their owner only; lists and cards unruled (denied)."""
    return Schema(
        [
            Collection(
                "boards",
                Board,
                read=lambda who, rec: rec["owner"] == who,
                write=lambda who, before, after: all(
                    r is None or r["owner"] == who for r in (before, after)
                ),
            ),
            Collection("lists", List),
            Collection("cards", Card),
        ]
    )


class TestRules:
    async def test_read_rules_filter_snapshots_and_changes(self, store: Store) -> None:
        schema = ruled_schema()
        engine = Engine(schema, store)
        q = {"b": Query.parse({"c": "boards"}, schema)}
        start = await engine.snapshot("alice", q)
        for owner, rid in (("alice", "b1"), ("bob", "b2")):
            await engine.apply(
                owner,
                f"tab-{owner}",
                mut(
                    1,
                    {
                        "op": "insert",
                        "c": "boards",
                        "id": rid,
                        "fields": {"name": rid, "owner": owner},
                    },
                ),
            )
        snap = await engine.snapshot("alice", q)
        assert [r["id"] for r in snap.results["b"]] == ["b1"]
        changes = await engine.changes_since("alice", start.cursor, q)
        assert [(i["k"], i["id"]) for i in changes.queries["b"]] == [("enter", "b1")]

    async def test_write_rules_see_before_and_after(self, store: Store) -> None:
        schema = ruled_schema()
        engine = Engine(schema, store)
        insert = {
            "op": "insert",
            "c": "boards",
            "id": "b1",
            "fields": {"name": "x", "owner": "alice"},
        }
        assert (await engine.apply("alice", "t-a", mut(1, insert))).status == "applied"
        steal = {
            "op": "update",
            "c": "boards",
            "id": "b1",
            "set": {"owner": "bob"},
            "base": {"owner": 1},
        }
        refused = await engine.apply("bob", "t-b", mut(1, steal))
        assert refused.status == "rejected" and refused.error is not None
        # bob may not read b1: he is answered as for an id never used (invariant 10)
        missing = await engine.apply("bob", "t-b", mut(2, {**steal, "id": "nope"}))
        assert missing.error is not None and refused.error["code"] == "not_found"
        assert refused.error["message"] == missing.error["message"].replace("nope", "b1")
        give_away = await engine.apply("alice", "t-a", mut(2, steal))  # after would be bob's
        assert give_away.status == "rejected"

    async def test_once_rules_are_declared_collections_without_rules_deny(
        self, store: Store
    ) -> None:
        schema = ruled_schema()
        engine = Engine(schema, store)
        ack = await engine.apply(
            "alice",
            "t",
            mut(
                1,
                {
                    "op": "insert",
                    "c": "boards",
                    "id": "b1",
                    "fields": {"name": "x", "owner": "alice"},
                },
                {"op": "insert", "c": "lists", "id": "l1", "fields": {"board_id": "b1"}},
            ),
        )
        assert (
            ack.status == "rejected"
            and ack.error is not None
            and ack.error["collection"] == "lists"
        )


class TestReads:
    async def test_snapshot_and_cursor_are_read_together(self, store: Store) -> None:
        engine = await seeded(store)
        snap = await engine.snapshot("alice", ALL_CARDS)
        assert snap.cursor.seq == 1 and [r["id"] for r in snap.results["cards"]] == ["c1"]
        wire = snap.to_wire()
        assert wire["cursor"] == str(snap.cursor) and wire["queries"]["cards"] == {
            "c": "cards",
            "where": {},
        }

    async def test_changes_since_gives_enter_patch_and_remove(self, store: Store) -> None:
        engine = await seeded(store)
        q = {"todo": Query.parse({"c": "cards", "where": {"status": "todo"}}, BOARD)}
        start = await engine.snapshot("alice", q)
        await engine.apply(
            "alice",
            "t",
            mut(1, {"op": "insert", "c": "cards", "id": "c2", "fields": {"list_id": "l1"}}),
        )
        await engine.apply("alice", "t", mut(2, set_title("renamed")))
        await engine.apply(
            "alice",
            "t",
            mut(
                3,
                {
                    "op": "update",
                    "c": "cards",
                    "id": "c2",
                    "set": {"status": "done"},
                    "base": {"status": 2},
                },
            ),
        )
        await engine.apply(
            "alice",
            "t",
            mut(
                4,
                {"op": "insert", "c": "cards", "id": "c3", "fields": {"list_id": "l1"}},
                {"op": "delete", "c": "cards", "id": "c1"},
            ),
        )
        changes = await engine.changes_since("alice", start.cursor, q)
        assert changes.since == start.cursor and changes.cursor.seq == 5
        got = {i["id"]: i["k"] for i in changes.queries["todo"]}
        # c1 was patched then deleted (remove); c2 entered then left (nothing); c3 entered.
        assert got == {"c1": "remove", "c3": "enter"}
        mid = await engine.changes_since("alice", f"{start.cursor.epoch}.2", q)
        # From seq 2, c2 was in the view and left it.
        assert {i["id"]: i["k"] for i in mid.queries["todo"]} == {
            "c1": "remove",
            "c2": "remove",
            "c3": "enter",
        }
        patch = await engine.changes_since(
            "alice", f"{start.cursor.epoch}.2", {"all": ALL_CARDS["cards"]}
        )
        items = {i["id"]: i for i in patch.queries["all"]}
        assert items["c2"]["k"] == "patch" and items["c2"]["data"] == {"status": "done"}

    async def test_an_empty_range_advances_the_cursor(self, store: Store) -> None:
        engine = await seeded(store)
        start = await engine.snapshot("alice", ALL_CARDS)
        await engine.apply(
            "alice",
            "t",
            mut(1, {"op": "insert", "c": "boards", "id": "b2", "fields": {"name": "other"}}),
        )
        changes = await engine.changes_since("alice", start.cursor, ALL_CARDS)
        assert changes.queries["cards"] == [] and changes.cursor.seq == 2

    async def test_a_limited_query_whose_window_moved_is_reset(self, store: Store) -> None:
        engine = await seeded(store)
        q = {"top": Query.parse({"c": "cards", "order": [["rank", "desc"]], "limit": 1}, BOARD)}
        start = await engine.snapshot("alice", q)
        await engine.apply(
            "alice",
            "t",
            mut(
                1,
                {
                    "op": "insert",
                    "c": "cards",
                    "id": "c2",
                    "fields": {"list_id": "l1", "rank": 9.0},
                },
            ),
        )
        changes = await engine.changes_since("alice", start.cursor, q)
        (item,) = changes.queries["top"]
        assert item["k"] == "reset" and [r["id"] for r in item["records"]] == ["c2"]

    async def test_cursors_from_elsewhere_are_answered_clearly(self, store: Store) -> None:
        engine = await seeded(store)
        head = await engine.head()
        with pytest.raises(CursorReset, match="another database"):
            await engine.changes_since("alice", "someotherepoch.1", ALL_CARDS)
        with pytest.raises(CursorAhead, match="ahead of the head 1"):
            await engine.changes_since("alice", f"{head.epoch}.99", ALL_CARDS)
        with pytest.raises(CursorError, match="malformed cursor"):
            await engine.changes_since("alice", "garbage", ALL_CARDS)

    async def test_a_cursor_older_than_the_trimmed_log_is_too_old(self, store: Store) -> None:
        engine = await seeded(store)
        start = await engine.head()
        await engine.apply("alice", "t", mut(1, set_title("x")))
        assert await engine.trim(older_than=-1) == 4  # 3 seeded entries and 1
        with pytest.raises(CursorTooOld, match="older than the retained log"):
            await engine.changes_since("alice", start, ALL_CARDS)
        fresh = await engine.snapshot("alice", ALL_CARDS)
        assert (await engine.changes_since("alice", fresh.cursor, ALL_CARDS)).queries["cards"] == []


class TestServerTransaction:
    async def test_a_check_that_raises_leaves_nothing_behind(self, store: Store) -> None:
        engine = await seeded(store)

        class OverBudget(Exception):
            pass

        with pytest.raises(OverBudget):
            async with engine.transaction("admin") as tx:
                tx.apply(Update(c="cards", id="c1", set={"title": "spent"}))
                current = await tx.get("cards", "c1")
                assert current is not None and current["title"] == "spent"  # sees its own op
                raise OverBudget
        assert (await card(engine))["title"] == "first"  # type: ignore[index]
        assert (await engine.head()).seq == 1

    async def test_one_transaction_is_one_seq(self, store: Store) -> None:
        engine = await seeded(store)
        async with engine.transaction("admin") as tx:
            tx.apply(Update(c="cards", id="c1", set={"title": "one"}))
            await tx.get("cards", "c1")
            tx.apply(Insert(c="cards", id="c2", fields={"list_id": "l1"}))
        assert tx.ack is not None and tx.ack.seq == 2
        assert (await engine.head()).seq == 2

    async def test_server_writes_are_validated_like_client_writes(self, store: Store) -> None:
        engine = await seeded(store)
        from syncline import MissingReference

        with pytest.raises(MissingReference, match="lists/'ghost'"):
            async with engine.transaction("admin") as tx:
                tx.apply(Insert(c="cards", id="c9", fields={"list_id": "ghost"}))


class TestApplicationCode:
    async def test_a_custom_merge_gets_values_of_the_fields_type(self, store: Store) -> None:
        engine = await seeded(store)
        slug = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"slug": "abc"},
            "base": {"slug": 1},
        }
        await engine.apply("bob", "tab-b", mut(1, slug))
        wrong = {
            "op": "update",
            "c": "cards",
            "id": "c1",
            "set": {"slug": 5},
            "base": {"slug": 1},
            "prev": {"slug": ""},
        }
        ack = await engine.apply("alice", "tab-a", mut(1, wrong))
        assert ack.status == "rejected" and ack.error is not None
        assert ack.error["field"] == "slug" and ack.error["code"] == "invalid"
        assert (await engine.apply("alice", "tab-a", mut(2, set_title("next")))).status == "applied"

    async def test_a_merge_function_that_raises_is_a_refusal_naming_the_field(
        self, store: Store, caplog: pytest.LogCaptureFixture
    ) -> None:
        from syncline.model import Merge

        def broken(base: Any, mine: Any, theirs: Any) -> Any:
            raise RuntimeError("bug in the application")

        schema = BOARD
        spec = schema["cards"].fields["slug"]
        original = spec.policy
        object.__setattr__(spec, "policy", Merge(broken))
        try:
            engine = await seeded(store, schema)
            slug = {
                "op": "update",
                "c": "cards",
                "id": "c1",
                "set": {"slug": "a"},
                "base": {"slug": 1},
                "prev": {"slug": ""},
            }
            await engine.apply("bob", "tab-b", mut(1, slug))
            ack = await engine.apply("alice", "tab-a", mut(1, {**slug, "set": {"slug": "b"}}))
        finally:
            object.__setattr__(spec, "policy", original)
        assert ack.status == "rejected" and ack.error is not None
        assert ack.error["message"] == (
            "cards/'c1'.slug: the field's merge function failed (RuntimeError); "
            "the server logged it"
        )
        assert "bug in the application" in caplog.text

    async def test_a_read_rule_that_raises_denies(self, store: Store) -> None:
        def broken(who: Any, rec: Any) -> bool:
            raise KeyError("oops")

        schema = Schema(
            [
                Collection("boards", Board, read=broken, write=lambda *_: True),
                Collection("lists", List),
                Collection("cards", Card),
            ]
        )
        engine = Engine(schema, store)
        async with engine.transaction("admin") as tx:
            tx.apply(Insert(c="boards", id="b1", fields={"name": "B"}))
        snap = await engine.snapshot("alice", {"b": Query.parse({"c": "boards"}, schema)})
        assert snap.results["b"] == []


async def test_a_conflict_never_shows_theirs_to_a_principal_who_may_not_write(
    store: Store,
) -> None:
    schema = Schema(
        [
            Collection("boards", Board, read=lambda *_: True, write=lambda *_: True),
            Collection("lists", List, read=lambda *_: True, write=lambda *_: True),
            Collection(
                "cards",
                Card,
                read=lambda who, rec: who in ("alice", "admin"),
                write=lambda who, before, after: who in ("alice", "admin"),
            ),
        ]
    )
    engine = await seeded(store, schema)
    status = {
        "op": "update",
        "c": "cards",
        "id": "c1",
        "set": {"status": "secret"},
        "base": {"status": 1},
    }
    assert (await engine.apply("alice", "tab-a", mut(1, status))).status == "applied"
    probe = {**status, "set": {"status": "guess"}}
    ack = await engine.apply("mallory", "tab-m", mut(1, probe))
    # mallory may not read c1 either: answered as for a missing record (invariant 10)
    assert ack.status == "rejected" and ack.error is not None and ack.error["code"] == "not_found"
    assert "secret" not in str(ack.to_wire())


async def test_text_with_a_nul_character_is_refused_on_every_store(store: Store) -> None:
    # PostgreSQL cannot store U+0000; refusing it everywhere keeps the stores alike and
    # names the field instead of failing in the database.
    engine = await seeded(store)
    ack = await engine.apply("alice", "tab-1", mut(1, set_title("a\x00b")))
    assert ack.status == "rejected"
    assert ack.error is not None and ack.error["field"] == "title"
    assert "NUL" in ack.error["message"]
    literal = set_title("ok \\u0000 text")  # a backslash and "u0000", not NUL
    second = await engine.apply("alice", "tab-1", mut(2, literal))
    assert second.status == "applied", second.error
    assert (await card(engine))["title"] == "ok \\u0000 text"  # type: ignore[index]
