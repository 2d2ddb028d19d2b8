"""What is PostgreSQL-specific about :class:`PostgresStore` (the conformance suite covers
the Store interface and what every group-commit store does): commit-ordered ``seq``
across nodes (invariant 1), exactly-once across nodes (invariant 3), migrations under
an advisory lock, a writer cancelled mid-statement, the query plan.

Several :class:`PostgresStore` instances on one schema stand for several nodes: each has
its own pool, its own write lock and its own groups; only PostgreSQL joins them.
Randomized tests print their seed; set ``SYNCLINE_SEED`` to replay one.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import asyncpg
import pytest

from syncline import Engine, Insert, RetryLater, StoreError
from syncline.exceptions import StoreUnavailable
from syncline.query import Query
from syncline.store.postgres import SCHEMA_VERSION, PostgresStore, quote_ident
from syncline.store.postgres._compile import compile_query as _compile

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema, pg_unavailable
from .schemas import BOARD
from .sqlite_crash_worker import PRINCIPAL, SCHEMA
from .test_store_conformance import card, put_next, seed_for

Nodes = Callable[..., Awaitable[list[PostgresStore]]]


async def raw() -> asyncpg.Connection:
    return await asyncpg.connect(PG_DSN)


@pytest.fixture
async def schema() -> AsyncIterator[str]:
    """A fresh schema name, dropped after the test."""
    name = new_pg_schema()
    try:
        conn = await raw()
    except (OSError, asyncpg.PostgresError) as exc:
        pg_unavailable(exc)
    await conn.close()
    yield name
    await drop_pg_schema(name)


@pytest.fixture
async def nodes(schema: str) -> AsyncIterator[Nodes]:
    """``await nodes(n)``: n stores ("nodes") opened on the test's schema."""
    opened: list[PostgresStore] = []

    async def make(n: int, **kwargs: Any) -> list[PostgresStore]:
        stores = [PostgresStore(PG_DSN, schema=schema, **kwargs) for _ in range(n)]
        opened.extend(stores)
        await asyncio.gather(*(s.open() for s in stores))
        return stores

    yield make
    await asyncio.gather(*(s.close() for s in opened))


# --- invariant 1: one order, across nodes ----------------------------------------------


async def test_readers_following_the_log_never_miss_or_repeat_a_change(nodes: Nodes) -> None:
    """Many writers on three nodes; readers on every node follow ``log(after, head]``.
    A naive design (a sequence, or max + 1 without the lock) lets a reader see seq N
    while N - 1 is still uncommitted: the reader's range check below would catch it."""
    rng = random.Random(seed_for("commit-order"))
    stores = await nodes(3, max_size=6)
    writers_per_node, commits_each = 6, 15
    total = len(stores) * writers_per_node * commits_each
    done = asyncio.Event()

    async def writer(store: PostgresStore, w: int, wrng: random.Random) -> list[int]:
        seqs = []
        for n in range(commits_each):
            pause = wrng.choice([0.0, 0.0, 0.0005, 0.002])
            seqs.append(await put_next(store, f"w{id(store)}-{w}-{n}", pause))
        return seqs

    async def reader(store: PostgresStore) -> list[int]:
        seen: list[int] = []
        last = 0
        while True:
            finished = done.is_set()
            async with store.read() as tx:
                head = await tx.head()
                got = [e.seq for e in await tx.log(last, head)]
            assert got == list(range(last + 1, head + 1)), (
                f"reading ({last}, {head}] gave {got}: a change was missed or repeated"
            )
            seen.extend(got)
            last = head
            if finished and last == total:
                return seen
            await asyncio.sleep(0)

    readers = [asyncio.create_task(reader(s)) for s in stores for _ in range(2)]
    results = await asyncio.gather(
        *(
            writer(s, w, random.Random(rng.random()))
            for s in stores
            for w in range(writers_per_node)
        )
    )
    done.set()
    for seen in await asyncio.wait_for(asyncio.gather(*readers), 30):
        assert seen == list(range(1, total + 1))
    allocated = sorted(seq for seqs in results for seq in seqs)
    assert allocated == list(range(1, total + 1))  # every writer got its own seq
    assert sum(s.commits for s in stores) < total  # writers of a node shared COMMITs
    async with stores[0].read() as tx:
        assert await tx.head() == total
        entries = await tx.log(0, total)
        records = await tx.get_many("cards", [e.id for e in entries])
        assert {r.v for r in records.values()} == set(range(1, total + 1))


async def test_a_writer_cancelled_mid_statement_fails_its_group_and_the_store_goes_on(
    nodes: Nodes,
) -> None:
    """... when its statement outlasts ``cancel_grace`` (within it, the writer leaves the
    group cleanly: the conformance suite)."""
    (store,) = await nodes(1)
    store.cancel_grace = 0.2
    started = asyncio.Event()

    async def slow() -> None:
        async with store.write() as tx:
            await tx.head()
            started.set()
            await tx._fetch("SELECT pg_sleep(5)")  # type: ignore[attr-defined]

    task = asyncio.create_task(slow())
    await started.wait()
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.wait_for(put_next(store, "next"), 10) == 1


@pytest.mark.parametrize("then", ["a statement", "the exit with writes pending"])
async def test_a_group_whose_session_ends_between_statements_fails_with_a_store_error(
    nodes: Nodes, schema: str, then: str
) -> None:
    """The server ends the group's session while its writer is between statements:
    asyncpg gives the connection back to the pool at once, and what the writer sends
    next is refused before it is sent. That is a lost connection like any other, a
    :class:`StoreUnavailable` naming the database once (a ``reject retry``), never a
    raw driver error (which a client would see as ``internal``); the next group starts
    on a fresh connection."""
    (store,) = await nodes(1)
    ended = False
    with pytest.raises(StoreUnavailable) as caught:
        async with store.write() as tx:
            await tx.head()  # the group's transaction is open on its connection
            group_conn = tx._group.conn  # type: ignore[attr-defined]
            pid = group_conn.get_server_pid()
            admin = await raw()
            try:
                assert await admin.fetchval("SELECT pg_terminate_backend($1)", pid)
            finally:
                await admin.close()

            def gone() -> bool:
                try:
                    return bool(group_conn.is_closed())
                except asyncpg.InterfaceError:  # released back to the pool
                    return True

            async with asyncio.timeout(10):
                while not gone():
                    await asyncio.sleep(0.01)
            ended = True
            if then == "a statement":
                await tx.get("cards", "c1")
            else:  # sent as the block exits
                await tx.put("cards", card("c1", 1, title="lost"))
    assert ended
    assert str(caught.value).count(f"PostgreSQL schema {schema!r}") == 1, caught.value
    assert await asyncio.wait_for(put_next(store, "after"), 10) == 1


# --- invariant 3: exactly once, across nodes --------------------------------------------


async def test_advance_client_from_the_same_number_succeeds_on_one_node_only(
    nodes: Nodes,
) -> None:
    a, b = await nodes(2)

    async def advance(store: PostgresStore) -> bool:
        async with store.write() as tx:
            return await tx.advance_client("c1", "alice", 0, 1)

    assert sorted(await asyncio.gather(advance(a), advance(b))) == [False, True]
    async with b.read() as tx:
        state = await tx.client("c1")
        assert state is not None and state.last == 1


async def test_the_same_mutation_sent_to_two_nodes_at_once_applies_once(nodes: Nodes) -> None:
    stores = await nodes(2)
    engines = [Engine(SCHEMA, s) for s in stores]
    async with engines[0].transaction(PRINCIPAL) as stx:
        stx.apply(Insert(c="tallies", id="t", fields={}))
    rounds = 25

    def increment(n: int) -> dict[str, Any]:
        op = {"op": "incr", "c": "tallies", "id": "t", "field": "count", "by": 1}
        return {"id": n, "ops": [op]}

    async def send(engine: Engine, n: int) -> tuple[str, int | None]:
        try:
            ack = await engine.apply(PRINCIPAL, "client-1", increment(n))
        except RetryLater:
            return "retry", None
        return ("replay" if ack.replay else ack.status), ack.seq

    for n in range(1, rounds + 1):
        answers = await asyncio.gather(send(engines[0], n), send(engines[1], n))
        kinds = sorted(kind for kind, _ in answers)
        assert kinds in (["applied", "replay"], ["applied", "retry"]), answers
        seqs = {seq for kind, seq in answers if kind != "retry"}
        assert len(seqs) == 1  # the replay names the original commit
    async with stores[1].read() as tx:
        tally = await tx.get("tallies", "t")
        state = await tx.client("client-1")
    assert tally is not None and tally.data["count"] == rounds
    assert state is not None and state.last == rounds


# --- the schema, migrations, settings ---------------------------------------------------


async def test_nodes_starting_at_once_migrate_once_and_share_one_epoch(
    nodes: Nodes, schema: str
) -> None:
    stores = await nodes(4)
    assert sorted(len(s.migrations_applied) for s in stores) == [0, 0, 0, SCHEMA_VERSION]
    epochs = set()
    for s in stores:
        async with s.read() as tx:
            epochs.add(await tx.epoch())
    assert len(epochs) == 1
    await put_next(stores[0])
    (again,) = await nodes(1)
    assert again.migrations_applied == []
    async with again.read() as tx:
        assert await tx.epoch() in epochs
        assert await tx.head() == 1
    conn = await raw()
    try:
        version = await conn.fetchval(
            f"SELECT value FROM {quote_ident(schema)}.meta WHERE key = 'schema_version'"
        )
        assert version == str(SCHEMA_VERSION)
    finally:
        await conn.close()


async def test_commits_are_synchronous(nodes: Nodes) -> None:
    (store,) = await nodes(1)  # (a closed store refusing work: the conformance suite)
    assert await store.setting("synchronous_commit") == "on"


async def test_an_unreachable_database_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot connect to PostgreSQL"):
        await PostgresStore("postgresql://postgres@127.0.0.1:1/test").open()


# --- queries ----------------------------------------------------------------------------


async def test_a_filter_on_an_indexed_field_uses_its_index(nodes: Nodes, schema: str) -> None:
    (store,) = await nodes(1)
    await store.ensure_indexes(BOARD)  # idempotence and coverage: the conformance suite
    async with store.write() as tx:
        for i in range(50):
            await tx.put("cards", card(f"c{i}", 1, title=f"c{i}"))
    compiled = _compile(
        Query.parse({"c": "cards", "where": {"list_id": "l1"}}, BOARD),
        True,
        f"{quote_ident(schema)}.records",
    )
    assert compiled.finish is None  # exact in SQL
    conn = await raw()
    try:
        names = {
            r[0]
            for r in await conn.fetch(
                "SELECT indexname FROM pg_indexes WHERE schemaname = $1", schema
            )
        }
        assert {"records_cards_list_id", "records_cards_status", "records_lists_board_id"} <= names
        async with conn.transaction():
            await conn.execute("SET LOCAL enable_seqscan = off")
            plan = await conn.fetch(f"EXPLAIN {compiled.sql}", *compiled.params)
        text = " ".join(r[0] for r in plan)
        assert "records_cards_list_id" in text, text
    finally:
        await conn.close()
