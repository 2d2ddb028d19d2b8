"""What is SQLite-specific about :class:`SQLiteStore` (the conformance suite covers the
Store interface and what every group-commit store does): the file and its epoch,
migrations, PRAGMAs, group commit on the writer thread and its write cache, the query
plan, and durability under SIGKILL (invariant 2) and exactly-once effect (invariant 3)
on a real file.

Randomized tests print their seed; set ``SYNCLINE_SEED`` to replay one.
"""

from __future__ import annotations

import asyncio
import random
import signal
import sqlite3
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from syncline import Engine, Insert, MutationGap, StoreError
from syncline.query import Query
from syncline.record import Record
from syncline.store.sqlite import SCHEMA_VERSION, SQLiteStore
from syncline.store.sqlite._compile import compile_query as _compile

from .schemas import BOARD
from .sqlite_crash_worker import PRINCIPAL, SCHEMA, TALLY, ensure_tally, mutation
from .test_store_conformance import card, entry, put_next, seed_for

WORKER = Path(__file__).with_name("sqlite_crash_worker.py")


async def opened(path: Path) -> SQLiteStore:
    store = SQLiteStore(path)
    await store.open()
    return store


def raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


# --- the file, its epoch, migrations, PRAGMAs -------------------------------------------


async def test_reopening_a_file_keeps_its_data_and_epoch(tmp_path: Path) -> None:
    path = tmp_path / "a.sqlite3"
    store = await opened(path)
    record = Record(
        id="r1",
        data={"list_id": "l1", "title": "é 🎉", "rank": 1.0, "done": None},
        inc=2,
        v=1,
        fv={"title": 1},
        fw={"title": "c1"},
        adds={"labels": {'"a"': [1, "c1"]}},
    )
    async with store.write() as tx:
        await tx.put("cards", record)
        await tx.append_log([entry(1, "r1")])
        assert await tx.advance_client("c1", "alice", 0, 1)
        await tx.put_ack("c1", 1, {"mid": 1, "status": "applied", "seq": 1})
        await tx.put_ack("c1", 2, {"mid": 2, "status": "applied", "seq": 3})
    await put_next(store)
    await put_next(store)
    async with store.write() as tx:
        assert await tx.trim(1) == 1
    async with store.read() as tx:
        epoch = await tx.epoch()
    await store.close()

    again = await opened(path)
    try:
        async with again.read() as tx:
            assert await tx.epoch() == epoch
            assert await tx.get("cards", "r1") == record
            assert (await tx.head(), await tx.floor()) == (3, 1)
            assert [e.seq for e in await tx.log(0, 3)] == [2, 3]
            assert await tx.client("c1") is not None
            assert await tx.ack("c1", 1) is None  # its change was trimmed
            assert await tx.ack("c1", 2) == {"mid": 2, "status": "applied", "seq": 3}
    finally:
        await again.close()

    other = await opened(tmp_path / "b.sqlite3")
    try:
        async with other.read() as tx:
            assert await tx.epoch() != epoch
            assert await tx.head() == 0
    finally:
        await other.close()


async def test_migrations_run_once(tmp_path: Path) -> None:
    path = tmp_path / "m.sqlite3"
    first = await opened(path)
    assert first.migrations_applied == list(range(1, SCHEMA_VERSION + 1))
    await put_next(first)
    await first.close()
    second = await opened(path)
    assert second.migrations_applied == []
    await second.close()
    with raw(path) as db:
        version = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        assert version == (SCHEMA_VERSION,)
        assert db.execute("SELECT count(*) FROM records").fetchone() == (1,)


async def test_the_file_is_in_wal_mode_with_full_sync(tmp_path: Path) -> None:
    path = tmp_path / "p.sqlite3"
    store = await opened(path)
    try:
        assert await store.pragma("journal_mode") == "wal"
        assert await store.pragma("synchronous") == 2  # FULL
        assert await store.pragma("foreign_keys") == 1
        with pytest.raises(StoreError, match="not a pragma name"):
            await store.pragma("synchronous = OFF")
    finally:
        await store.close()
    with raw(path) as db:  # WAL is a property of the file, not only of a connection
        assert db.execute("PRAGMA journal_mode").fetchone() == ("wal",)


# --- queries ----------------------------------------------------------------------------


async def test_a_filter_on_an_indexed_field_uses_its_index(tmp_path: Path) -> None:
    path = tmp_path / "i.sqlite3"
    store = await opened(path)
    try:
        await store.ensure_indexes(BOARD)  # idempotence and coverage: the conformance suite
    finally:
        await store.close()
    sql, params, finish = _compile(
        Query.parse({"c": "cards", "where": {"list_id": "l1"}}, BOARD), True
    )
    assert finish is None  # exact in SQL
    with raw(path) as db:
        names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"records_cards_list_id", "records_cards_status", "records_lists_board_id"} <= names
        plan = " ".join(str(r) for r in db.execute(f"EXPLAIN QUERY PLAN {sql}", params))
        assert "records_cards_list_id" in plan, plan


# --- crash safety (invariant 2) ----------------------------------------------------------

CRASH_CLIENTS = [f"w{i}" for i in range(4)]


async def check_after_crash(
    path: Path, acks: list[tuple[str, int, int]], acked: dict[str, int], rng: random.Random
) -> None:
    """Every acked mutation is there, none is half applied, numbering continues."""
    store = await opened(path)
    try:
        async with store.read() as tx:
            tally = await tx.get("tallies", TALLY)
            cards = await tx.query(Query("cards"), apply_limit=False)
            head = await tx.head()
            log = await tx.log(0, head)
            states = {cid: await tx.client(cid) for cid in CRASH_CLIENTS}
        ids = {c.id for c in cards}
        count = tally.data["count"] if tally is not None else 0
        assert count == len(cards), "a mutation was half applied"
        assert sorted({e.seq for e in log}) == list(range(1, head + 1)), "seq is not dense"
        by_seq = {(e.seq, e.id): e for e in log}
        for cid, mid, seq in acks:
            assert f"{cid}-{mid}" in ids, f"acked mutation {cid}/{mid} was lost"
            e = by_seq[(seq, f"{cid}-{mid}")]
            assert (e.client_id, e.mutation_id) == (cid, mid)
        lasts = {cid: s.last if s is not None else 0 for cid, s in states.items()}
        for cid, last in lasts.items():
            assert last >= acked.get(cid, 0)
            mine = {c.id for c in cards if c.data["owner"] == cid}
            assert mine == {f"{cid}-{n}" for n in range(1, last + 1)}, "not exactly once"

        engine = Engine(SCHEMA, store)
        if tally is None:
            await ensure_tally(engine)
            head += 1
        cid = rng.choice(CRASH_CLIENTS)
        nxt = lasts[cid] + 1
        with pytest.raises(MutationGap):
            await engine.apply(PRINCIPAL, cid, mutation(cid, nxt + 1))
        ack = await engine.apply(PRINCIPAL, cid, mutation(cid, nxt))
        assert (ack.status, ack.seq, ack.replay) == ("applied", head + 1, False)
        acks.append((cid, nxt, head + 1))
        acked[cid] = nxt
    finally:
        await store.close()


async def test_acked_mutations_survive_sigkill(tmp_path: Path) -> None:
    rng = random.Random(seed_for("sigkill"))
    path = tmp_path / "crash.sqlite3"
    acks: list[tuple[str, int, int]] = []
    acked: dict[str, int] = {}
    runs_with_acks = 0
    for run in range(24):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(WORKER),
            str(path),
            str(len(CRASH_CLIENTS)),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None and proc.stderr is not None
        if run % 6 == 0:  # also while the file is created or opened, migrations included
            await asyncio.sleep(rng.uniform(0.0, 0.5))
        else:
            ready = await asyncio.wait_for(proc.stdout.readline(), 60)
            assert ready == b"READY\n", (ready, await proc.stderr.read())
            await asyncio.sleep(rng.uniform(0.01, 0.3))
        proc.kill()
        out, err = await proc.stdout.read(), await proc.stderr.read()
        code = await proc.wait()
        assert code == -signal.SIGKILL, f"the worker stopped by itself ({code}):\n{err.decode()}"
        new = 0
        for line in out.decode().splitlines(keepends=True):
            if line.startswith("ACK ") and line.endswith("\n"):
                _, cid, mid, seq = line.split()
                acks.append((cid, int(mid), int(seq)))
                acked[cid] = max(acked.get(cid, 0), int(mid))
                new += 1
        runs_with_acks += new > 0
        await check_after_crash(path, acks, acked, rng)
    print(f"{len(acks)} acked mutations over 24 kills, {runs_with_acks} runs killed mid-stream")
    assert runs_with_acks >= 10  # most kills landed while mutations were being applied


# --- exactly-once effect (invariant 3) ---------------------------------------------------


async def test_each_mutation_takes_effect_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(seed_for("exactly-once"))
    clients, per_client = 10, 1000
    store = await opened(tmp_path / "once.sqlite3")
    engine = Engine(SCHEMA, store)
    async with engine.transaction(PRINCIPAL) as stx:
        for c in range(clients):
            stx.apply(Insert(c="tallies", id=f"t{c}", fields={}))

    def increment(c: int, n: int) -> dict[str, Any]:
        op = {"op": "incr", "c": "tallies", "id": f"t{c}", "field": "count", "by": 1}
        return {"id": n, "ops": [op]}

    async def client(c: int, rng: random.Random) -> int:
        cid = f"client-{c}"
        seqs: dict[int, int] = {}
        later: list[tuple[int, int]] = []  # (deliver once this many are acked, mutation id)
        seen = 0
        deliveries = 0

        async def check(expected: int) -> None:
            nonlocal seen
            async with store.read() as tx:
                state = await tx.client(cid)
                tally = await tx.get("tallies", f"t{c}")
            last = state.last if state is not None else 0
            assert last >= seen, f"{cid}: last mutation id went back from {seen} to {last}"
            seen = last
            assert last == expected
            assert tally is not None and tally.data["count"] == expected

        for n in range(1, per_client + 1):
            if rng.random() < 0.03:  # n + 1 or n + 2 arrives before n: refused, no effect
                with pytest.raises(MutationGap):
                    await engine.apply(PRINCIPAL, cid, increment(c, n + rng.randint(1, 2)))
                await check(n - 1)
            ack = await engine.apply(PRINCIPAL, cid, increment(c, n))
            deliveries += 1
            assert (ack.status, ack.replay) == ("applied", False) and ack.seq is not None
            seqs[n] = ack.seq
            await check(n)
            later.extend((n + rng.randint(0, 40), n) for _ in range(rng.choice([0, 0, 1, 2])))
            due = [m for at, m in later if at <= n]
            later = [(at, m) for at, m in later if at > n]
            rng.shuffle(due)
            for m in due:
                again = await engine.apply(PRINCIPAL, cid, increment(c, m))
                deliveries += 1
                assert again.replay
                assert again.status == "duplicate" or (again.status, again.seq) == (
                    "applied",
                    seqs[m],
                )
                await check(n)
            if n % 100 == 0:  # the client confirms old acks: their replays say "duplicate"
                await engine.confirm_acks(cid, n - 50)
        for _, m in later:
            again = await engine.apply(PRINCIPAL, cid, increment(c, m))
            deliveries += 1
            assert again.replay
            await check(per_client)
        return deliveries

    try:
        rngs = [random.Random(rng.random()) for _ in range(clients)]
        deliveries = await asyncio.gather(*(client(c, rngs[c]) for c in range(clients)))
        async with store.read() as tx:
            tallies = await tx.get_many("tallies", [f"t{c}" for c in range(clients)])
            assert {k: t.data["count"] for k, t in tallies.items()} == {
                f"t{c}": per_client for c in range(clients)
            }
            assert await tx.head() == 1 + clients * per_client
        print(f"{sum(deliveries)} deliveries of {clients * per_client} mutations")
        assert sum(deliveries) > clients * per_client
    finally:
        await store.close()


# --- the write cache --------------------------------------------------------------------


async def test_a_write_sees_what_another_connection_committed_since_the_last_write(
    tmp_path: Path,
) -> None:
    # The store remembers what its writer read and wrote between transactions; a commit
    # by anyone else (another process on the same file) must make it read again.
    path = tmp_path / "w.sqlite3"
    store = await opened(path)
    try:
        await put_next(store, "a")
        async with store.write() as tx:
            assert (await tx.get("cards", "a")).data["title"] == "a"  # type: ignore[union-attr]
            assert await tx.advance_client("c1", "alice", 0, 1)
        with raw(path) as db:
            db.execute(
                "UPDATE records SET data = json_set(data, '$.title', 'theirs') WHERE id = 'a'"
            )
            db.execute("UPDATE clients SET last = 5 WHERE client_id = 'c1'")
            db.execute(
                "INSERT INTO log (seq, pos, collection, id, kind, inc, patch, client_id, "
                "mutation_id, time) VALUES (2, 0, 'cards', 'a', 'update', 1, '{}', NULL, "
                "NULL, 0)"
            )
        async with store.write() as tx:
            assert await tx.get("cards", "other") is None  # the group's first trip checks
            assert (await tx.get("cards", "a")).data["title"] == "theirs"  # type: ignore[union-attr]
            assert (await tx.client("c1")).last == 5  # type: ignore[union-attr]
            assert not await tx.advance_client("c1", "alice", 1, 2)
            assert await tx.head() == 2
    finally:
        await store.close()


async def test_a_writer_that_raises_leaves_nothing_in_the_write_cache(tmp_path: Path) -> None:
    store = await opened(tmp_path / "x.sqlite3")

    class Boom(Exception):
        pass

    try:
        await put_next(store, "a")
        with pytest.raises(Boom):
            async with store.write() as tx:
                await tx.put("cards", card("ghost", 9, title="ghost"))
                assert await tx.advance_client("c1", "alice", 0, 1)
                assert await tx.get("cards", "ghost") is not None  # its own write
                raise Boom
        async with store.write() as tx:
            assert await tx.get("cards", "ghost") is None
            assert await tx.client("c1") is None
            assert await tx.advance_client("c1", "alice", 0, 1)
        async with store.read() as rtx:
            assert (await rtx.client("c1")).last == 1  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_writers_of_one_group_read_each_others_writes_without_asking_sqlite(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "y.sqlite3")
    try:
        await put_next(store, "a")
        submitted = 0
        submit = store._writer.submit  # type: ignore[union-attr]

        def counting(*args: Any, **kwargs: Any) -> Any:
            nonlocal submitted
            submitted += 1
            return submit(*args, **kwargs)

        store._writer.submit = counting  # type: ignore[union-attr,method-assign]

        async def bump(i: int) -> None:
            async with store.write() as tx:
                record = await tx.get("cards", "a")
                assert record is not None
                record.data["n"] = record.data.get("n", 0) + 1
                seq = await tx.head() + 1
                record.v = seq
                await tx.put("cards", record)
                await tx.append_log([entry(seq, "a")])

        await asyncio.gather(*(bump(i) for i in range(20)))
        async with store.read() as rtx:
            assert (await rtx.get("cards", "a")).data["n"] == 20  # type: ignore[union-attr]
            assert await rtx.head() == 21
        # One trip for the group's first read, one exit per writer, no read of its own.
        assert submitted <= 1 + 20 + 1
    finally:
        await store.close()


async def test_a_writer_that_never_called_the_thread_and_raises_leaves_no_trace(
    tmp_path: Path,
) -> None:
    store = await opened(tmp_path / "z.sqlite3")

    class Boom(Exception):
        pass

    async def bump() -> int:
        async with store.write() as tx:
            record = await tx.get("cards", "a")  # cached after the group's first trip
            assert record is not None
            seq = await tx.head() + 1
            record.v = seq
            await tx.put("cards", record)
            await tx.append_log([entry(seq, "a")])
        return seq

    async def failing() -> None:
        async with store.write() as tx:
            assert await tx.get("cards", "a") is not None
            await tx.put("cards", card("ghost", 99, title="ghost"))
            raise Boom

    try:
        await put_next(store, "a")
        results = await asyncio.gather(bump(), failing(), bump(), bump(), return_exceptions=True)
        assert isinstance(results[1], Boom)
        assert [results[0], results[2], results[3]] == [2, 3, 4]
        async with store.read() as tx:
            assert await tx.get("cards", "ghost") is None
            assert [e.seq for e in await tx.log(0, 10)] == [1, 2, 3, 4]
            assert (await tx.get("cards", "a")).v == 4  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_cancelling_a_writer_whose_trip_carries_an_acked_writers_writes_loses_nothing(
    tmp_path: Path,
) -> None:
    # A is answered from the write cache and leaves without a trip: its writes ride on
    # B's next trip. B is cancelled while that trip waits behind a busy writer thread;
    # the trip must still run, or A would be acked with nothing written.
    store = await opened(tmp_path / "c.sqlite3")
    release_first = asyncio.Event()
    acked: list[str] = []

    async def first() -> None:
        async with store.write() as tx:
            seq = await tx.head() + 1  # the group's first trip: the cache is checked
            await tx.put("cards", card("w0", seq, title="w0"))
            await tx.append_log([entry(seq, "w0")])
            await release_first.wait()
        acked.append("w0")

    async def a() -> None:
        async with store.write() as tx:
            seq = await tx.head() + 1  # from the cache: no trip
            await tx.put("cards", card("a", seq, title="a"))
            await tx.append_log([entry(seq, "a")])
        acked.append("a")

    async def b() -> None:
        async with store.write() as tx:
            store._writer.submit(lambda db: time.sleep(0.3))  # type: ignore[union-attr]
            await tx.get("cards", "nope")  # a trip, carrying A's writes

    try:
        t0 = asyncio.create_task(first())
        await asyncio.sleep(0.05)
        ta = asyncio.create_task(a())
        await asyncio.sleep(0)
        tb = asyncio.create_task(b())
        await asyncio.sleep(0)
        release_first.set()
        await asyncio.sleep(0.1)  # A has left; B waits on its trip
        tb.cancel()
        await asyncio.gather(t0, ta, tb, return_exceptions=True)
        assert sorted(acked) == ["a", "w0"]
        async with store.read() as tx:
            assert [(e.seq, e.id) for e in await tx.log(0, 10)] == [(1, "w0"), (2, "a")]
            assert await tx.get("cards", "a") is not None
    finally:
        await store.close()


async def test_a_group_whose_begin_fails_acks_no_writer_whose_writes_it_carried(
    tmp_path: Path,
) -> None:
    path = tmp_path / "b.sqlite3"
    store = SQLiteStore(path, busy_timeout=0.2)
    await store.open()
    try:
        async with store.write() as tx:
            await tx.head()
        other = raw(path)
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock

        async def a() -> None:
            async with store.write() as tx:
                await tx.put("cards", card("a", 0, title="a"))  # no trip: carried
                await asyncio.sleep(0.01)  # b waits for the lock meanwhile

        async def b() -> None:
            async with store.write() as tx:
                await tx.get("cards", "x")  # BEGIN IMMEDIATE: busy

        results = await asyncio.gather(a(), b(), return_exceptions=True)
        other.execute("ROLLBACK")
        other.close()
        assert all(isinstance(r, StoreError) for r in results), results
        async with store.write() as tx:
            await tx.head()
            assert await tx.get("cards", "a") is None  # neither written nor cached
    finally:
        await store.close()
