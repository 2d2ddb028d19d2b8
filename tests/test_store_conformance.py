"""The Store conformance suite: every store passes these, unchanged (see ``conftest.store``).

It checks the guarantees in :mod:`syncline.store.base`: atomic commit and rollback,
snapshot reads, dense commit-ordered seq (an entry that does not follow the head is
refused), conditional client advance, kept acks, trimming, and query semantics
identical to :class:`syncline.query.Query`. The tests taking ``grouped`` run against
every store whose writers share transactions (SQLite, PostgreSQL: the core in
:mod:`syncline.store._group`): a writer that raises, a COMMIT that fails, a closed
store, indexes. What only one backend does stays in ``test_store_sqlite.py`` and
``test_store_postgres.py``, which share this module's helpers.

Randomized tests print their seed; set ``SYNCLINE_SEED`` to replay one.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

import pytest

from syncline import StoreError
from syncline.query import Query
from syncline.record import LogEntry, Record
from syncline.store.base import LogOrderError, Store

from .conftest import kit, poison_commits
from .schemas import BOARD


def seed_for(test: str) -> int:
    seed = int(os.environ.get("SYNCLINE_SEED") or random.randrange(2**32))
    print(f"{test}: seed {seed} (replay with SYNCLINE_SEED={seed})")
    return seed


def entry(seq: int, rid: str = "r1", *, when: float | None = None) -> LogEntry:
    return LogEntry(
        seq=seq,
        collection="cards",
        id=rid,
        kind="update",
        inc=1,
        patch={"title": f"t{seq}"},
        before={"id": rid, "status": "todo"},
        after={"id": rid, "status": "done"},
        client_id="c1",
        mutation_id=seq,
        time=time.time() if when is None else when,
    )


def card(rid: str, v: int = 1, **data: object) -> Record:
    return Record(id=rid, data={"list_id": "l1", **data}, v=v, fv=dict.fromkeys(data, v))


async def commit(store: Store, seq: int, rid: str = "r1", **data: object) -> None:
    async with store.write() as tx:
        await tx.put("cards", card(rid, seq, **data))
        await tx.append_log([entry(seq, rid)])


async def put_next(store: Store, rid: str | None = None, pause: float = 0.0) -> int:
    """One write transaction: a card and its log entry at ``head + 1``."""
    async with store.write() as tx:
        seq = await tx.head() + 1
        if pause:
            await asyncio.sleep(pause)  # widen the window between reading head and commit
        rid = rid or f"r{seq}"
        await tx.put("cards", card(rid, seq, title=rid))
        await tx.append_log([entry(seq, rid)])
    return seq


async def test_an_empty_store_starts_at_zero_with_an_epoch(store: Store) -> None:
    async with store.read() as tx:
        assert await tx.head() == 0
        assert await tx.floor() == 0
        epoch = await tx.epoch()
        assert isinstance(epoch, str) and epoch
        assert await tx.get("cards", "nope") is None
        assert await tx.log(0, 10) == []


async def test_a_committed_write_is_visible_with_everything_it_wrote(store: Store) -> None:
    record = Record(
        id="r1",
        data={"list_id": "l1", "title": "é 🎉", "labels": ["a", "b"]},
        inc=2,
        v=1,
        fv={"title": 1},
        fw={"title": "c1"},
        adds={"labels": {'"a"': [1, "c1"], '"b"': [1, None]}},
    )
    async with store.write() as tx:
        await tx.put("cards", record)
        await tx.append_log([entry(1)])
    async with store.read() as tx:
        assert await tx.get("cards", "r1") == record
        assert await tx.head() == 1
        assert await tx.log(0, 1) == [entry(1)] or (await tx.log(0, 1))[0].seq == 1
        assert await tx.get_many("cards", ["r1", "zz"]) == {"r1": record}


async def test_a_write_that_raises_leaves_nothing(store: Store) -> None:
    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        async with store.write() as tx:
            await tx.put("cards", card("r1", 1, title="x"))
            await tx.append_log([entry(1)])
            assert await tx.advance_client("c1", "alice", 0, 1)
            await tx.put_ack("c1", 1, {"mid": 1})
            raise Boom
    async with store.read() as tx:
        assert await tx.get("cards", "r1") is None
        assert await tx.head() == 0
        assert await tx.client("c1") is None
        assert await tx.ack("c1", 1) is None


async def test_a_write_sees_its_own_writes(store: Store) -> None:
    async with store.write() as tx:
        await tx.put("cards", card("r1", 1, title="x"))
        await tx.append_log([entry(1)])
        assert await tx.head() == 1
        got = await tx.get("cards", "r1")
        assert got is not None and got.data["title"] == "x"
        assert await tx.advance_client("c1", "alice", 0, 1)
        state = await tx.client("c1")
        assert state is not None and state.last == 1


async def test_a_read_sees_one_state_while_others_commit(store: Store) -> None:
    await commit(store, 1, title="old")
    async with store.read() as tx:
        assert await tx.head() == 1
        writer = asyncio.create_task(commit(store, 2, title="new"))
        await asyncio.sleep(0.05)
        got = await tx.get("cards", "r1")
        assert got is not None and got.data["title"] == "old"
        assert await tx.head() == 1
    await writer
    async with store.read() as tx:
        got = await tx.get("cards", "r1")
        assert got is not None and got.data["title"] == "new"
        assert await tx.head() == 2


async def test_seq_is_dense_and_in_commit_order(store: Store) -> None:
    async def writer(n: int) -> None:
        for _ in range(n):
            async with store.write() as tx:
                seq = await tx.head() + 1
                await tx.put("cards", card(f"r{seq}", seq, title="x"))
                await tx.append_log([entry(seq, f"r{seq}")])

    await asyncio.gather(*(writer(10) for _ in range(5)))
    async with store.read() as tx:
        assert await tx.head() == 50
        assert [e.seq for e in await tx.log(0, 50)] == list(range(1, 51))
        assert [e.seq for e in await tx.log(20, 25)] == [21, 22, 23, 24, 25]


async def test_a_client_advances_only_from_the_expected_number(store: Store) -> None:
    async with store.write() as tx:
        assert await tx.advance_client("c1", "alice", 0, 1)
    async with store.write() as tx:
        assert not await tx.advance_client("c1", "alice", 0, 1)
        assert not await tx.advance_client("c1", "alice", 2, 3)
        assert await tx.advance_client("c1", "alice", 1, 2)
    async with store.read() as tx:
        state = await tx.client("c1")
        assert state is not None and (state.principal, state.last) == ("alice", 2)


async def test_acks_are_kept_until_confirmed(store: Store) -> None:
    async with store.write() as tx:
        for n in (1, 2, 3):
            await tx.put_ack("c1", n, {"mid": n, "status": "applied", "seq": n})
        await tx.put_ack("c2", 1, {"mid": 1})
    async with store.write() as tx:
        await tx.confirm_acks("c1", 2)
    async with store.read() as tx:
        assert await tx.ack("c1", 1) is None
        assert await tx.ack("c1", 2) is None
        assert await tx.ack("c1", 3) == {"mid": 3, "status": "applied", "seq": 3}
        assert await tx.ack("c2", 1) == {"mid": 1}


async def test_trim_removes_old_entries_and_tombstones_and_raises_the_floor(store: Store) -> None:
    await commit(store, 1, "r1", title="a")
    async with store.write() as tx:
        dead = card("r2", 2)
        dead.deleted, dead.data = True, {}
        await tx.put("cards", dead)
        await tx.append_log([entry(2, "r2")])
    await commit(store, 3, "r3", title="c")
    async with store.write() as tx:
        assert await tx.trim(2) == 2
    async with store.read() as tx:
        assert await tx.floor() == 2
        assert await tx.head() == 3
        assert [e.seq for e in await tx.log(0, 3)] == [3]
        assert await tx.get("cards", "r2") is None
        assert await tx.get("cards", "r1") is not None


async def test_trim_drops_acks_the_log_no_longer_covers(store: Store) -> None:
    # A client that never confirms its acks (HTTP only, say) must not keep them forever:
    # once its acked change is trimmed, that ack and its earlier ones go.
    await commit(store, 1, "r1", title="a")
    await commit(store, 2, "r2", title="b")
    async with store.write() as tx:
        await tx.put_ack("http", 1, {"mid": 1, "status": "rejected"})  # no seq
        await tx.put_ack("http", 2, {"mid": 2, "status": "applied", "seq": 1})
        await tx.put_ack("http", 3, {"mid": 3, "status": "applied", "seq": 2})
        await tx.put_ack("other", 1, {"mid": 1, "status": "applied", "seq": 2})
    async with store.write() as tx:
        await tx.trim(1)
    async with store.read() as tx:
        assert await tx.ack("http", 1) is None
        assert await tx.ack("http", 2) is None
        assert (await tx.ack("http", 3) or {}).get("seq") == 2
        assert (await tx.ack("other", 1) or {}).get("seq") == 2


async def test_seq_at_finds_the_newest_commit_before_a_time(store: Store) -> None:
    for seq, when in ((1, 100.0), (2, 200.0), (3, 300.0)):
        async with store.write() as tx:
            await tx.append_log([entry(seq, when=when)])
    async with store.read() as tx:
        assert await tx.seq_at(50.0) == 0
        assert await tx.seq_at(250.0) == 2
        assert await tx.seq_at(1e12) == 3


async def test_queries_match_the_reference_semantics(store: Store) -> None:
    rng = random.Random(1234)
    print("seed 1234")
    statuses = ["todo", "doing", "done", "é", "🎉"]
    async with store.write() as tx:
        for i in range(60):
            data: dict[str, object] = {
                "list_id": rng.choice(["l1", "l2", "l3"]),
                "status": rng.choice(statuses),
                "rank": rng.choice([0.5, 1.0, 2.25, -3.0]),
                "done": rng.choice([True, False, None]),
            }
            r = Record(id=f"c{i:02d}", data=data, v=1)
            if i % 13 == 0:
                r.deleted = True
            await tx.put("cards", r)
        # An array whose JSON text looks like a string someone might filter on.
        await tx.put("cards", Record(id="arr", data={"list_id": "l1", "status": ["done"]}, v=1))
    queries = [
        {"c": "cards", "where": {"status": '["done"]'}},
        {"c": "cards", "where": {"status": "done", "list_id": "l1"}},
        {"c": "cards"},
        {"c": "cards", "where": {"list_id": "l1"}},
        {"c": "cards", "where": {"status": {"in": ["done", "🎉"]}}, "order": [["rank", "desc"]]},
        {"c": "cards", "where": {"rank": {"gte": 1.0, "lt": 3}}, "order": [["status", "asc"]]},
        {"c": "cards", "where": {"done": True}},
        {"c": "cards", "where": {"done": None}, "limit": 5},
        {"c": "cards", "where": {"status": {"ne": "todo"}}, "order": [["done", "asc"]], "limit": 7},
        {"c": "cards", "order": [["list_id", "desc"], ["rank", "asc"]], "limit": 10},
        {"c": "cards", "where": {"id": {"in": ["c01", "c02", "c13"]}}},
    ]
    async with store.read() as tx:
        everything = await tx.query(Query.parse({"c": "cards"}, BOARD), apply_limit=False)
        for wire in queries:
            q = Query.parse(wire, BOARD)
            views = [{**r.data, "id": r.id} for r in everything]
            expected = [v["id"] for v in q.sort([v for v in views if q.matches(v)])]
            records = await tx.query(q)
            assert [r.id for r in records] == expected, wire
            assert await tx.query_wire(q) == [r.to_wire() for r in records], wire


async def test_a_log_entry_that_does_not_follow_the_head_is_refused(store: Store) -> None:
    assert issubclass(LogOrderError, StoreError)
    await commit(store, 1)
    for seq in (3, 0):
        with pytest.raises(LogOrderError, match=rf"^log seq {seq} does not follow head 1$"):
            async with store.write() as tx:
                await tx.append_log([entry(seq)])
    with pytest.raises(LogOrderError, match=r"^log seq 4 does not follow head 2$"):
        async with store.write() as tx:
            await tx.append_log([entry(2), entry(2, "r2"), entry(4)])  # one mutation: 2, 2
    async with store.read() as tx:
        assert await tx.head() == 1
        assert [e.seq for e in await tx.log(0, 10)] == [1]


# --- queries on random data -------------------------------------------------------------

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    3,
    1.0,
    0.5,
    -0.0,
    2.25,
    2**53,
    2**53 + 1,
    float(2**53),
    "",
    "a",
    "B",
    "1",
    "true",
    "null",
    "é",
    "🎉",
    "[",
    '["a"]',
    ["a"],
    [1, "a"],
    {"k": 1},
    {},
]
FIELDS = ["a", "b", "odd-name", "it's"]
OPERANDS: list[Any] = [v for v in VALUES if not isinstance(v, list | dict)] + [
    2**70,
    "a\x00",
    float("inf"),
]


@pytest.mark.parametrize("scalar_share", [0.0, 0.7])
async def test_queries_match_the_reference_semantics_on_random_data(
    store: Store, scalar_share: float
) -> None:
    """``scalar_share`` of the records never hold an array or object in any field
    (PostgreSQL then answers string ranges and orderings in SQL, without finishing in
    Python); the others draw every field from all of :data:`VALUES`."""
    rng = random.Random(seed_for("queries"))
    async with store.write() as tx:
        for i in range(150):
            scalars = rng.random() < scalar_share
            pool = [v for v in VALUES if not isinstance(v, list | dict)] if scalars else VALUES
            data = {f: rng.choice(pool) for f in FIELDS if rng.random() < 0.85}
            await tx.put("things", Record(id=f"t{i:03d}", data=data, deleted=i % 17 == 0))
        await tx.put("others", Record(id="t001", data={"a": 1}))
    async with store.read() as tx:
        everything = await tx.query(Query("things"), apply_limit=False)
        assert len(everything) == 150 - 9
        views = [{**r.data, "id": r.id} for r in everything]
        for _ in range(400):
            conditions = []
            for _ in range(rng.choice([0, 1, 1, 2])):
                field = rng.choice([*FIELDS, "id"])
                op = rng.choice(["eq", "ne", "in", "gt", "gte", "lt", "lte"])
                if op == "in":
                    value: Any = tuple(rng.sample(OPERANDS, rng.randint(0, 4)))
                elif field == "id" and rng.random() < 0.7:
                    value = f"t{rng.randrange(150):03d}"
                else:
                    value = rng.choice(OPERANDS)
                conditions.append((field, op, value))
            order = tuple(
                (rng.choice([*FIELDS, "id"]), rng.choice(["asc", "desc"]))
                for _ in range(rng.choice([0, 1, 1, 2]))
            )
            q = Query("things", tuple(conditions), order, rng.choice([None, 1, 5, 40]))  # type: ignore[arg-type]
            expected = [v["id"] for v in q.sort([v for v in views if q.matches(v)])]
            assert [r.id for r in await tx.query(q)] == expected, q
            unlimited = [r.id for r in await tx.query(q, apply_limit=False)]
            assert unlimited[: len(expected)] == expected


# --- group commit (SQLite, PostgreSQL) --------------------------------------------------


async def test_a_writer_that_raises_leaves_no_trace_while_its_group_commits(grouped: Any) -> None:
    store = grouped

    class Boom(Exception):
        pass

    async def failing() -> None:
        async with store.write() as tx:
            seq = await tx.head() + 1
            await tx.put("cards", card("bad", seq, title="bad"))
            await tx.append_log([entry(seq, "bad")])
            assert await tx.advance_client("bad-client", "mallory", 0, 1)
            await tx.get("cards", "bad")  # sends the pending writes: they did reach the database
            raise Boom

    before = store.commits
    results = await asyncio.gather(
        put_next(store, "a"), failing(), put_next(store, "c"), return_exceptions=True
    )
    assert isinstance(results[1], Boom)
    assert (results[0], results[2]) == (1, 2)
    assert store.commits - before == 1  # all three in one group
    async with store.read() as tx:
        assert await tx.get("cards", "bad") is None
        assert await tx.client("bad-client") is None
        assert set(await tx.get_many("cards", ["a", "bad", "c"])) == {"a", "c"}
        assert [e.id for e in await tx.log(0, 10)] == ["a", "c"]


async def test_a_failed_commit_fails_every_writer_of_its_group(grouped: Any) -> None:
    store = grouped
    await poison_commits(store)  # a deferred constraint makes COMMIT itself fail
    results = await asyncio.gather(
        put_next(store, "a"), put_next(store, "poison"), put_next(store, "c"),
        return_exceptions=True,
    )  # fmt: skip
    assert all(isinstance(r, StoreError) for r in results), results
    assert "COMMIT failed" in str(results[0])
    assert "none of its writers is acknowledged" in str(results[0])
    assert store.commits == 0
    async with store.read() as tx:
        assert await tx.head() == 0
        assert await tx.get_many("cards", ["a", "poison", "c"]) == {}
    assert await put_next(store, "after") == 1  # the store goes on
    assert store.commits == 1


async def test_a_closed_store_refuses_transactions(grouped: Any) -> None:
    store = grouped
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        async with store.read():
            pass
    with pytest.raises(StoreError, match="closed"):
        async with store.write():
            pass
    with pytest.raises(StoreError, match="closed"):
        await store.open()


async def test_ensure_indexes_is_idempotent_and_covers_every_queryable_field(
    grouped: Any,
) -> None:
    statements = await grouped.ensure_indexes(BOARD)
    assert await grouped.ensure_indexes(BOARD) == statements  # idempotent
    assert len(statements) == sum(len(c.queryable) for c in BOARD.collections.values())


async def test_concurrent_writers_share_commits_and_keep_seq_dense(grouped: Any) -> None:
    store = grouped
    before = store.commits
    seqs = await asyncio.gather(*(put_next(store) for _ in range(50)))
    assert sorted(seqs) == list(range(1, 51))
    assert store.commits - before < 50
    async with store.read() as tx:
        assert await tx.head() == 50
        assert [e.seq for e in await tx.log(0, 50)] == list(range(1, 51))
        got = await tx.get_many("cards", [f"r{n}" for n in range(1, 51)])
        assert len(got) == 50


async def test_a_writer_sees_its_groups_earlier_writes_before_they_commit(grouped: Any) -> None:
    store = grouped

    async def second() -> int:
        async with store.write() as tx:
            assert await tx.get("cards", "a") is not None  # same group, same connection
            async with store.read() as other:  # not committed yet: the group is still open
                assert await other.get("cards", "a") is None
            seq = await tx.head() + 1
            await tx.put("cards", card("b", seq, title="b"))
            await tx.append_log([entry(seq, "b")])
        return seq

    assert list(await asyncio.gather(put_next(store, "a"), second())) == [1, 2]
    assert store.commits == 1


async def test_a_group_handed_to_a_writer_that_is_cancelled_still_commits(grouped: Any) -> None:
    store = grouped
    loop = asyncio.get_running_loop()
    waiter: asyncio.Task[int] | None = None
    go = asyncio.Event()

    async def first() -> int:
        async with store.write() as tx:
            await go.wait()
            seq = await tx.head() + 1
            await tx.put("cards", card("first", seq, title="first"))
            await tx.append_log([entry(seq, "first")])
            assert waiter is not None
            # Runs right after this block hands the open group over to `waiter`
            # (which is waiting for the lock), before `waiter` can take it.
            loop.call_soon(waiter.cancel)
        return seq

    holder = asyncio.create_task(first())
    await asyncio.sleep(0.01)
    waiter = asyncio.create_task(put_next(store, "second"))
    await asyncio.sleep(0.01)
    go.set()
    assert await asyncio.wait_for(holder, 5) == 1
    with pytest.raises(asyncio.CancelledError):
        await waiter
    async with store.read() as tx:
        assert await tx.get("cards", "first") is not None
        assert await tx.get("cards", "second") is None


async def test_cancelling_a_writer_that_waits_for_its_commit_spares_the_group(grouped: Any) -> None:
    store = grouped
    loop = asyncio.get_running_loop()

    async def cancelled_after_its_block() -> None:
        task = asyncio.current_task()
        assert task is not None
        async with store.write() as tx:
            seq = await tx.head() + 1
            await tx.put("cards", card("cancelled", seq, title="cancelled"))
            await tx.append_log([entry(seq, "cancelled")])
            loop.call_soon(task.cancel)

    results = await asyncio.gather(
        cancelled_after_its_block(), put_next(store, "other"), return_exceptions=True
    )
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1] == 2
    async with store.read() as tx:
        # Cancellation after the block exited is not a rollback (module docs).
        assert set(await tx.get_many("cards", ["cancelled", "other"])) == {
            "cancelled",
            "other",
        }
        assert await tx.head() == 2


async def _slow_statement(store: Any, tx: Any, seconds: float) -> None:
    """A statement that keeps the database busy for ``seconds`` (on the writer thread for
    SQLite, on the group's connection for PostgreSQL)."""
    from syncline.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        await tx._run(lambda db: time.sleep(seconds))
    else:
        await tx._fetch(f"SELECT pg_sleep({seconds})")


async def test_a_writer_cancelled_mid_statement_leaves_its_group_and_the_others_commit(
    grouped: Any,
) -> None:
    """A connection that goes away cancels its writer wherever it is: the writer leaves
    its group cleanly (its writes undone), and the writers sharing the group commit."""
    store = grouped
    started = asyncio.Event()

    async def cancelled() -> None:
        async with store.write() as tx:
            seq = await tx.head() + 1
            await tx.put("cards", card("cancelled", seq, title="cancelled"))
            await tx.append_log([entry(seq, "cancelled")])
            started.set()
            await _slow_statement(store, tx, 0.5)  # cancelled while this runs

    victim = asyncio.create_task(cancelled())
    await started.wait()
    others = [asyncio.create_task(put_next(store, f"other{n}")) for n in range(3)]
    async with asyncio.timeout(10):
        while store._waiting < len(others):  # all three wait to join the victim's group
            await asyncio.sleep(0.005)
    commits = store.commits
    victim.cancel()
    with pytest.raises(asyncio.CancelledError):
        await victim
    assert sorted(await asyncio.wait_for(asyncio.gather(*others), 10)) == [1, 2, 3]
    assert store.commits == commits + 1  # one group: the victim's, without the victim
    async with store.read() as tx:
        found = await tx.get_many("cards", ["cancelled", "other0", "other1", "other2"])
        assert sorted(found) == ["other0", "other1", "other2"]
        assert await tx.head() == 3


# --- migrations (SQLite, PostgreSQL) ----------------------------------------------------


async def test_a_new_migration_applies_on_open_and_a_failing_one_changes_nothing(
    grouped: Any,
) -> None:
    k = kit(grouped)
    migrations = type(grouped).migrations
    version = len(migrations)
    assert grouped.migrations_applied == list(range(1, version + 1))
    half = f"CREATE TABLE {k.table_prefix}half (x int)"
    with pytest.raises(StoreError, match="syntax error"):
        await k.again(grouped, (*migrations, (half, "THIS IS NOT SQL"))).open()
    assert not await k.has_table(grouped, "half")
    assert await k.schema_version(grouped) == version

    extra = (*migrations, (f"CREATE TABLE {k.table_prefix}extra (x int)",))
    for expected in ([version + 1], []):
        newer = k.again(grouped, extra)
        await newer.open()
        try:
            assert newer.migrations_applied == expected
        finally:
            await newer.close()
    assert await k.has_table(grouped, "extra")
    assert await k.schema_version(grouped) == version + 1
    again = k.again(grouped)  # the code it knows is older now: refused (next test)
    with pytest.raises(StoreError, match="open it with a newer syncline"):
        await again.open()


async def test_a_database_from_a_newer_syncline_is_refused(grouped: Any) -> None:
    k = kit(grouped)
    version = len(type(grouped).migrations)
    future = version + 5
    await k.set_schema_version(grouped, future)
    with pytest.raises(
        StoreError,
        match=rf"schema is version {future}, but .* knows versions up to {version}",
    ):
        await k.again(grouped).open()
    assert await k.schema_version(grouped) == future  # refused without touching it
