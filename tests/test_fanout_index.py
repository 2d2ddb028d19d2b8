"""The subscription index of the log reader: indexed matching hands over exactly the
frames a full scan of every query would, and a change evaluates only the queries it
may concern."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from syncline import Collection, Delete, Engine, Insert, Query, Schema, Update
from syncline.changes import query_items
from syncline.engine import current_records
from syncline.fanout import reader as reader_module
from syncline.fanout.reader import LogReader
from syncline.protocol.frames import encode_item
from syncline.query import equality_key
from syncline.store.memory import MemoryStore

from .schemas import Board, Card, List
from .test_fanout import Conn


def may_read(principal: str, view: Any) -> bool:
    return principal == "admin" or view.get("status") != "done"


def may_write(principal: str, before: Any, after: Any) -> bool:
    return principal == "admin"


RULED = Schema(
    [
        Collection("boards", Board, read=may_read, write=may_write),
        Collection("lists", List, read=may_read, write=may_write),
        Collection("cards", Card, read=may_read, write=may_write),
    ]
)
LISTS = ("l1", "l2", "l3")
CARDS = tuple(f"c{n}" for n in range(5))

list_ids = st.sampled_from(LISTS)
statuses = st.sampled_from(("todo", "doing", "done"))
ranks = st.sampled_from((0.0, 1.0, 2.5))
dones = st.sampled_from((True, False, None))
conditions = st.fixed_dictionaries(
    {},
    optional={
        "list_id": st.one_of(
            list_ids,
            st.builds(lambda v: {"in": v}, st.lists(list_ids, max_size=3)),
            st.builds(lambda v: {"ne": v}, list_ids),
        ),
        "status": st.one_of(statuses, st.builds(lambda v: {"in": v}, st.lists(statuses))),
        # 1 (an int) equals the stored 1.0; True never equals 1
        "rank": st.one_of(
            st.sampled_from((1, 1.0, 2.5, True)), st.builds(lambda v: {"gte": v}, ranks)
        ),
        "done": dones,
        "id": st.sampled_from(CARDS),
    },
)
card_queries = st.builds(
    lambda where, limit: {
        "c": "cards",
        "where": where,
        **({"order": [["rank", "desc"]], "limit": limit} if limit else {}),
    },
    conditions,
    st.sampled_from((None, None, 1, 2)),
)
list_queries = st.builds(
    lambda pos: {"c": "lists", "where": {} if pos is None else {"position": pos}},
    st.sampled_from((None, 0, 1, 1.0)),
)
subscriptions = st.lists(
    st.tuples(
        st.sampled_from(("admin", "guest")),
        st.lists(st.one_of(card_queries, list_queries), min_size=1, max_size=4),
    ),
    min_size=1,
    max_size=4,
)
card_fields = st.fixed_dictionaries(
    {}, optional={"list_id": list_ids, "status": statuses, "rank": ranks, "done": dones}
)
change = st.one_of(
    st.tuples(st.just("card"), st.sampled_from(CARDS), card_fields),
    st.tuples(st.just("delete"), st.sampled_from(CARDS), st.just({})),
    st.tuples(
        st.just("list"),
        st.sampled_from(LISTS),
        st.builds(lambda p: {"position": p}, st.integers(0, 2)),
    ),
)
rounds = st.lists(
    st.lists(st.lists(change, min_size=1, max_size=3), max_size=3), min_size=1, max_size=4
)


async def full_scan(
    engine: Engine, reader: LogReader, conns: list[Conn]
) -> list[dict[str, list[Any]]]:
    """What each connection is owed for the range the reader's next step reads, from
    every one of its queries (the matching as it was before the index)."""
    assert reader.position is not None
    async with engine.store.read() as tx:
        head = await tx.head()
        entries = await tx.log(reader.position, head) if head > reader.position else []
        current = await current_records(tx, entries)
        owed = []
        for conn in conns:
            found: dict[str, list[Any]] = {}
            for qid, query in conn.queries.items():
                raw = query_items(engine.schema, conn.principal, query, entries, current)
                if raw is None:
                    window = await engine.run_query(tx, conn.principal, query)
                    raw = [{"k": "reset", "records": window}]
                if raw:
                    found[qid] = [orjson.loads(encode_item(i)) for i in raw]
            owed.append(found)
    return owed


async def apply_round(engine: Engine, live: set[str], transactions: list[list[Any]]) -> None:
    for ops in transactions:
        async with engine.transaction("admin") as tx:
            for kind, rid, fields in ops:
                if kind == "list":
                    tx.apply(Update(c="lists", id=rid, set=fields))
                elif kind == "delete":
                    if rid in live:
                        tx.apply(Delete(c="cards", id=rid))
                        live.discard(rid)
                elif rid in live:
                    if fields:
                        tx.apply(Update(c="cards", id=rid, set=fields))
                else:
                    tx.apply(Insert(c="cards", id=rid, fields={"list_id": "l1", **fields}))
                    live.add(rid)


async def join(reader: LogReader, conn: Conn, queries: dict[str, Query]) -> None:
    task = asyncio.create_task(reader.join(conn, queries, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await reader.step()
    await task


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(subscriptions, rounds)
async def test_indexed_matching_hands_over_exactly_what_a_full_scan_would(
    subs: list[tuple[str, list[dict[str, Any]]]], steps: list[list[list[Any]]]
) -> None:
    engine = Engine(RULED, MemoryStore())
    live = {"c0", "c1"}
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            *(Insert(c="lists", id=lid, fields={"board_id": "b1"}) for lid in LISTS),
            Insert(c="cards", id="c0", fields={"list_id": "l1", "rank": 1.0}),
            Insert(c="cards", id="c1", fields={"list_id": "l2", "status": "done"}),
        )
    reader = LogReader(engine, advance_every=3600)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    conns = []
    for principal, queries in subs:
        conn = Conn(principal)
        await join(reader, conn, {f"q{n}": Query.parse(q, RULED) for n, q in enumerate(queries)})
        await conn.frames()
        conns.append(conn)
    for transactions in steps:
        await apply_round(engine, live, transactions)
        owed = await full_scan(engine, reader, conns)
        await reader.step()
        for conn, expected in zip(conns, owed, strict=True):
            frames = await conn.frames()
            got = [list(f["q"].items()) for f in frames]
            assert got == ([list(expected.items())] if expected else [])


async def test_a_change_evaluates_only_the_query_it_concerns_among_30000(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine = Engine(RULED, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(c="cards", id="hot", fields={"list_id": "l1"}),
        )
    reader = LogReader(engine, advance_every=3600)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    conns = [Conn() for _ in range(300)]
    for n, conn in enumerate(conns):
        queries = {
            f"q{k}": Query.parse({"c": "cards", "where": {"id": f"c{n}-{k}"}}, RULED)
            for k in range(100)
        }
        await join(reader, conn, queries)
    concerned = conns[7]
    await join(
        reader, concerned, {"hot": Query.parse({"c": "cards", "where": {"id": "hot"}}, RULED)}
    )
    assert len(reader.index) == 30_001
    calls = []

    def counted(*args: Any) -> Any:
        calls.append(args[2])
        return query_items(*args)

    monkeypatch.setattr(reader_module, "query_items", counted)
    async with engine.transaction("admin") as tx:
        tx.apply(Update(c="cards", id="hot", set={"title": "changed"}))
    for conn in conns:
        await conn.frames()
    await reader.step()
    assert [q.to_wire()["where"] for q in calls] == [{"id": {"eq": "hot"}}]
    (frame,) = await concerned.frames()
    assert frame["q"]["hot"][0]["data"] == {"title": "changed"}
    assert all(not conn.outbox for conn in conns if conn is not concerned)


async def test_unsubscribing_and_leaving_empty_the_index() -> None:
    engine = Engine(RULED, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
        )
    reader = LogReader(engine, advance_every=3600)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    one, two = Conn(), Conn()
    mine = Query.parse({"c": "cards", "where": {"list_id": "l1"}}, RULED)
    await join(reader, one, {"a": mine, "b": Query.parse({"c": "cards"}, RULED)})
    await join(reader, two, {"a": mine})
    await one.frames(), await two.frames()
    assert len(reader.index) == 3
    reader.unsubscribe(one, ["a", "b"])  # type: ignore[arg-type]
    assert len(reader.index) == 1 and one.queries == {}
    reader.leave(two)  # type: ignore[arg-type]
    assert len(reader.index) == 0
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id="c1", fields={"list_id": "l1"}))
    await reader.step()
    assert await one.frames() == [] and await two.frames() == []


scalars = st.sampled_from(
    (None, True, False, 0, 1, -1, 0.0, -0.0, 1.0, 2.5, math.nan, 2.0**53, 2**53 + 1, "", "a", "1")
)


@settings(max_examples=400)
@given(scalars, scalars)
def test_equality_keys_are_equal_exactly_when_the_values_are_eq(a: Any, b: Any) -> None:
    eq = Query("cards", (("rank", "eq", b),)).matches({"rank": a})
    ka, kb = equality_key(a), equality_key(b)
    assert eq == (ka is not None and ka == kb)
