"""Where the subscription index places a query with several equalities: queries that
share one value (every list query of a board) are spread over the values that tell
them apart, so a change evaluates the queries it may concern, not all that share it."""

from __future__ import annotations

from syncline import Engine, Insert, Query, Update
from syncline.fanout.reader import LogReader
from syncline.store.memory import MemoryStore

from .test_fanout import Conn
from .test_fanout_index import RULED, join


async def test_queries_sharing_a_value_are_indexed_by_the_value_that_tells_them_apart() -> None:
    engine = Engine(RULED, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(c="cards", id="hot", fields={"list_id": "l1", "status": "s7"}),
        )
    reader = LogReader(engine, advance_every=3600)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    conns = [Conn() for _ in range(20)]
    for n, conn in enumerate(conns):
        where = [{"list_id": "l1", "status": f"s{n * 10 + k}"} for k in range(10)]
        await join(
            reader,
            conn,
            {f"q{k}": Query.parse({"c": "cards", "where": w}, RULED) for k, w in enumerate(where)},
        )
        await conn.frames()
    before = reader.evaluated
    async with engine.transaction("admin") as tx:
        tx.apply(Update(c="cards", id="hot", set={"title": "changed"}))
    await reader.step()
    # The query on s7, and at most the first one registered (placed while every bucket
    # was empty); not the 200 that share list l1.
    assert reader.evaluated - before <= 2
    (frame,) = await conns[0].frames()
    assert list(frame["q"]) == ["q7"]
    assert all(not conn.outbox for conn in conns[1:])
