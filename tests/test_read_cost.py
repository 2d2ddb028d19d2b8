"""What a read may cost, in the engine, on every store: read rules declared as filters
are applied by the store (its limit included), callable rules scan at most
``max_scan_rows`` rows per request, identical queries are read once, and an answer
larger than its byte budget is refused before it is built."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import orjson
import pytest
from pydantic import BaseModel
from starlette.applications import Starlette

from syncline import Collection, Engine, Insert, Query, Queryable, QueryError, Schema, Update
from syncline.client import Client
from syncline.cost import ByteBucket, ReadBudget
from syncline.exceptions import ReadLimitExceeded, SchemaError
from syncline.protocol.frames import Limits, SnapshotFrame, encode, shared_records
from syncline.server.app import SynclineServer
from syncline.store.base import Store
from syncline.store.sqlite import SQLiteStore

from .live import RawClient, serve
from .schemas import BOARD


class Todo(BaseModel):
    owner: Annotated[str, Queryable()]
    order: Annotated[float, Queryable()] = 0.0
    title: str = ""


def everyone(user: Any, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
    return True


def own(user: Any) -> Mapping[str, Any] | None:
    return None if user == "banned" else {"owner": user}


FILTERED = Schema([Collection("todos", Todo, read_filter=own, write=everyone)])
CALLABLE = Schema(
    [Collection("todos", Todo, read=lambda user, t: t["owner"] == user, write=everyone)]
)


async def seeded(store: Store, schema: Schema, others: int, mine: int = 0) -> Engine:
    engine = Engine(schema, store)
    async with engine.transaction("seed") as tx:
        for i in range(others):
            tx.apply(Insert(c="todos", id=f"o{i:05}", fields={"owner": f"v{i}", "order": i}))
        for i in range(mine):  # ordered after every other visitor's
            fields = {"owner": "me", "order": others + i}
            tx.apply(Insert(c="todos", id=f"m{i:05}", fields=fields))
    return engine


def q(obj: dict[str, Any], schema: Schema) -> Query:
    return Query.parse(obj, schema)


async def test_a_read_filter_is_applied_by_the_store_with_the_limit(store: Store) -> None:
    engine = await seeded(store, FILTERED, others=300, mine=3)
    ordered = {"c": "todos", "order": [["order", "asc"]]}
    snap = await engine.snapshot(
        "me", {"one": q({**ordered, "limit": 1}, FILTERED), "all": q(ordered, FILTERED)}
    )
    assert [r["id"] for r in snap.results["one"]] == ["m00000"]
    assert [r["id"] for r in snap.results["all"]] == ["m00000", "m00001", "m00002"]
    # Scanning nothing under the filter: the budget's row cap is never touched.
    budget = ReadBudget(None, max_scan_rows=1)
    assert await engine.snapshot("v7", {"q": q({"c": "todos"}, FILTERED)}, budget=budget)
    assert budget.scanned == 0
    # A filter that matches nothing, and a principal whose filter is None.
    for who in ("nobody", "banned"):
        assert (await engine.snapshot(who, {"q": q({"c": "todos"}, FILTERED)})).results["q"] == []


async def test_live_changes_are_matched_against_the_read_filter(store: Store) -> None:
    engine = await seeded(store, FILTERED, others=2, mine=1)
    since = await engine.head()
    async with engine.transaction("seed") as tx:
        tx.apply(Update(c="todos", id="m00000", set={"title": "mine"}))
        tx.apply(Update(c="todos", id="o00000", set={"title": "theirs"}))
    query = {"q": q({"c": "todos"}, FILTERED)}
    mine = (await engine.changes_since("me", since, query)).queries["q"]
    theirs = (await engine.changes_since("v0", since, query)).queries["q"]
    assert [i["id"] for i in mine] == ["m00000"] and [i["id"] for i in theirs] == ["o00000"]


async def test_a_callable_rule_scans_at_most_the_cap_then_refuses(store: Store) -> None:
    engine = await seeded(store, CALLABLE, others=60, mine=2)
    query = {"q": q({"c": "todos", "limit": 1, "order": [["order", "asc"]]}, CALLABLE)}
    budget = ReadBudget(None, max_scan_rows=50)
    with pytest.raises(ReadLimitExceeded, match="more than 50 rows") as refused:
        await engine.snapshot("me", query, budget=budget)
    assert "read_filter" in str(refused.value) and budget.scanned <= 51
    # Under the cap it answers as before; a readable row early in the order stops it.
    roomy = ReadBudget(None, max_scan_rows=100)
    snap = await engine.snapshot("me", query, budget=roomy)
    assert [r["id"] for r in snap.results["q"]] == ["m00000"]
    early = ReadBudget(None, max_scan_rows=50)
    assert (await engine.snapshot("v3", query, budget=early)).results["q"][0]["id"] == "o00003"
    assert early.scanned < 50
    # Without a budget (fan-out's windows, server-side reads) nothing is capped.
    assert len((await engine.snapshot("me", {"q": q({"c": "todos"}, CALLABLE)})).results["q"]) == 2


async def test_identical_queries_are_read_once_and_every_copy_counts(store: Store) -> None:
    engine = await seeded(store, CALLABLE, others=0, mine=5)
    query = q({"c": "todos"}, CALLABLE)
    budget = ReadBudget(None, max_scan_rows=6)  # one read of the 5 rows fits; two would not
    snap = await engine.snapshot("me", {f"q{i}": query for i in range(3)}, budget=budget)
    assert snap.results["q0"] is snap.results["q1"] is snap.results["q2"]
    assert budget.scanned == 5
    one = len(orjson.dumps(snap.results["q0"]))
    with pytest.raises(ReadLimitExceeded, match="max_snapshot_bytes") as refused:
        await engine.snapshot(
            "me", {f"q{i}": query for i in range(3)}, budget=ReadBudget(one * 2, None)
        )
    assert refused.value.ref == "q1"  # the copy that passed the limit, not built further


def test_a_frame_encodes_a_shared_answer_once_and_reads_back_whole() -> None:
    records = [{"id": "a", "data": {"title": "x" * 10}}]
    frame = SnapshotFrame(
        cursor="e.1", queries={}, records=shared_records({"a": records, "b": records})
    )
    assert orjson.loads(encode(frame))["records"] == {"a": records, "b": records}


def test_read_and_read_filter_together_are_refused_and_a_failing_filter_denies(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with pytest.raises(SchemaError, match="read or read_filter"):
        Collection("todos", Todo, read=lambda u, t: True, read_filter=lambda u: {})

    def broken(user: Any) -> Mapping[str, Any]:
        raise RuntimeError("bug")

    for bad in (broken, lambda u: {"title": u}):  # raises; names a field it may not
        schema = Schema([Collection("todos", Todo, read_filter=bad)])
        coll = schema["todos"]
        with caplog.at_level(logging.ERROR, "syncline.model"):
            assert not schema.may_read("me", coll, {"id": "t", "owner": "me", "order": 0.0})
        assert "read filter" in caplog.text
        caplog.clear()


def test_a_byte_bucket_refills_over_a_minute() -> None:
    bucket = ByteBucket(600, now=0.0)
    bucket.spend(600, 0.0)
    assert bucket.available(0.0) == 0
    assert bucket.available(30.0) == 300 and not bucket.full(30.0)
    assert bucket.full(60.0)


@contextlib.asynccontextmanager
async def board_server(
    tmp_path: Path, limits: Limits, cards: dict[str, dict[str, Any]]
) -> AsyncIterator[tuple[str, Engine]]:
    """A live server over BOARD (lists l1, l2) with ``cards``, under ``limits``."""
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="boards", id="b1", fields={"name": "B"}))
        for lid in ("l1", "l2"):
            tx.apply(Insert(c="lists", id=lid, fields={"board_id": "b1"}))
        for rid, fields in cards.items():
            tx.apply(Insert(c="cards", id=rid, fields=fields))
    sync = SynclineServer(engine, limits=limits)
    try:
        async with serve(Starlette(routes=sync.routes, lifespan=sync.lifespan)) as host:
            yield host, engine
    finally:
        await store.close()


async def test_the_python_client_reports_a_sub_refused_for_its_size_and_goes_on(
    tmp_path: Path,
) -> None:
    cards = {f"c{i:02}": {"list_id": "l1", "title": "x" * 500} for i in range(20)}
    async with board_server(tmp_path, Limits(max_snapshot_bytes=4_000), cards) as (host, _):
        async with Client(f"ws://{host}/sync", BOARD) as client, asyncio.timeout(20):
            # Two copies of one 1 KB answer fit; 10 copies would not.
            one = {"c": "cards", "limit": 2}
            await client.subscribe({"a": one, "b": one})
            with pytest.raises(QueryError, match="max_snapshot_bytes"):
                await client.subscribe({f"q{i}": one for i in range(10)})
            assert client.last_error and client.last_error["ref"] in {f"q{i}" for i in range(1, 10)}
            assert "q0" not in client.protocol.wanted and "a" in client.protocol.wanted
            assert len(client.query({"c": "cards", "limit": 2})) == 2


async def test_a_catch_up_larger_than_the_limit_is_answered_by_a_snapshot(
    tmp_path: Path,
) -> None:
    # 10 ids of one query resumed from an old cursor: 10 copies of 20 removes would pass
    # the limit; the fresh snapshot (10 empty answers) does not.
    cards = {f"card-{i:02}": {"list_id": "l1"} for i in range(20)}
    query = {"c": "cards", "where": {"list_id": "l1"}}
    async with (
        board_server(tmp_path, Limits(max_snapshot_bytes=6_000), cards) as (host, engine),
        RawClient.connect(host, BOARD) as raw,
    ):
        first = await raw.subscribe({"q": query})
        assert first["t"] == "snapshot" and len(first["records"]["q"]) == 20
        async with engine.transaction("admin") as tx:
            for i in range(20):
                tx.apply(Update(c="cards", id=f"card-{i:02}", set={"list_id": "l2"}))
        async with RawClient.connect(host, BOARD) as again:
            queries = {f"q{i}": query for i in range(10)}
            answer = await again.subscribe(queries, since=first["cursor"])
        assert answer["t"] == "snapshot", answer
        assert answer["reset"] == "changes_too_large"
        assert answer["records"] == {f"q{i}": [] for i in range(10)}
