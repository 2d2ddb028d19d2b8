"""CPU per commit of the log reader's matching: many subscriptions, one change.

``connections`` connections each hold ``queries`` distinct queries (``list_id`` equal
to a list of their own) that one commit (a card in another list) does not concern,
plus one query each that it does concern in the "1 query" case. Prints the reader
step's CPU time per commit for 100 non-matching queries per connection against 1,
and their ratio: with the subscription index it stays near 1 (the cost follows the
queries a change concerns); a full scan pays for every query held::

    .venv/bin/python bench/fanout_matching.py [--connections 300] [--queries 100]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from typing import Annotated

from _sink import Sink  # bench/ is on the path of a script run from it
from pydantic import BaseModel

from syncline import Collection, Engine, Insert, Query, Queryable, Schema, Update
from syncline.fanout.reader import LogReader
from syncline.store.memory import MemoryStore


class Card(BaseModel):
    list_id: Annotated[str, Queryable()]
    title: str = ""


SCHEMA = Schema([Collection("cards", Card)])


async def measure(connections: int, queries: int, commits: int) -> float:
    """Mean CPU seconds of one reader step after one commit."""
    engine = Engine(SCHEMA, MemoryStore())
    async with engine.transaction("bench") as tx:
        tx.apply(Insert(c="cards", id="hot", fields={"list_id": "elsewhere"}))
    reader = LogReader(engine, advance_every=3600)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    sinks = [Sink() for _ in range(connections)]
    for n, sink in enumerate(sinks):
        qs = {
            f"q{k}": Query.parse({"c": "cards", "where": {"list_id": f"l{n}-{k}"}}, SCHEMA)
            for k in range(queries)
        }
        task = asyncio.create_task(reader.join(sink, qs, None))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await reader.step()
        await task
    cpu: list[float] = []
    for n in range(commits):
        async with engine.transaction("bench") as tx:
            tx.apply(Update(c="cards", id="hot", set={"title": f"t{n}"}))
        start = time.process_time()
        await reader.step()
        cpu.append(time.process_time() - start)
    assert not any(s.parts for s in sinks), "a non-matching change was delivered"
    return statistics.mean(cpu)


async def main(connections: int, queries: int, commits: int) -> None:
    many = await measure(connections, queries, commits)
    one = await measure(connections, 1, commits)
    print(f"{connections} connections, one commit concerning none of their queries")
    print(f"  {queries:>5} queries each: {many * 1e3:8.3f} ms CPU per commit")
    print(f"  {1:>5} query each:   {one * 1e3:8.3f} ms CPU per commit")
    print(f"  ratio: {many / one:.1f}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=300)
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--commits", type=int, default=50)
    args = parser.parse_args()
    asyncio.run(main(args.connections, args.queries, args.commits))
