"""Durable mutations per second through ``Engine.apply`` on PostgreSQL.

Each writer is its own client id and applies one small increment per mutation, one
after another (the next is sent once the previous ack came back); writers run
concurrently, so the writers of one node share COMMITs (group commit) while the
advisory write lock orders the groups of all nodes. ``synchronous_commit = on``: every
ack follows a WAL flush. ``--nodes N`` spreads the writers over N stores (each its own
pool, lock and groups, as N server processes would have) in this one process. Each
row runs in a fresh schema, dropped afterwards. Prints writers against mutations per
second, mutations per COMMIT, and the ratio to one writer::

    .venv/bin/python bench/postgres_mutations.py [--seconds 4] [--nodes 1]
        [--dsn postgresql://postgres@127.0.0.1:5432/test]
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import time
from typing import Annotated

import asyncpg
from pydantic import BaseModel

from syncline import Collection, Counter, Engine, Insert, Schema
from syncline.store.postgres import PostgresStore

DSN = "postgresql://postgres@127.0.0.1:5432/test"


class Tally(BaseModel):
    count: Annotated[int, Counter()] = 0


SCHEMA = Schema([Collection("tallies", Tally)])
PRINCIPAL = "bench"


async def measure(dsn: str, writers: int, nodes: int, seconds: float) -> tuple[float, float]:
    """Mutations per second with ``writers`` concurrent clients over ``nodes`` stores,
    and mutations per COMMIT."""
    schema = f"syncline_bench_{secrets.token_hex(4)}"
    stores = [PostgresStore(dsn, schema=schema) for _ in range(nodes)]
    try:
        for store in stores:
            await store.open()
        engines = [Engine(SCHEMA, store) for store in stores]
        async with engines[0].transaction(PRINCIPAL) as stx:
            for w in range(writers):
                stx.apply(Insert(c="tallies", id=f"t{w}", fields={}))
        commits_before = sum(s.commits for s in stores)
        deadline = time.perf_counter() + seconds
        counts = [0] * writers

        async def writer(w: int) -> None:
            engine = engines[w % nodes]
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                op = {"op": "incr", "c": "tallies", "id": f"t{w}", "field": "count", "by": 1}
                ack = await engine.apply(PRINCIPAL, f"client-{w}", {"id": n, "ops": [op]})
                assert ack.status == "applied", ack
            counts[w] = n

        start = time.perf_counter()
        await asyncio.gather(*(writer(w) for w in range(writers)))
        elapsed = time.perf_counter() - start
        total = sum(counts)
        commits = sum(s.commits for s in stores) - commits_before
        return total / elapsed, total / max(commits, 1)
    finally:
        for store in stores:
            await store.close()
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per writer count")
    parser.add_argument("--dsn", default=DSN, help="the PostgreSQL database")
    parser.add_argument("--nodes", type=int, default=1, help="stores sharing the schema")
    parser.add_argument("--writers", default="1,10,50")
    args = parser.parse_args()
    results: dict[int, tuple[float, float]] = {}
    for writers in (int(w) for w in args.writers.split(",")):
        results[writers] = await measure(args.dsn, writers, args.nodes, args.seconds)
    base = results[min(results)][0]
    print(
        f"PostgreSQL at {args.dsn}, synchronous_commit=on, {args.nodes} node(s), "
        f"{args.seconds:g} s per row"
    )
    print(f"{'writers':>8} {'mutations/s':>12} {'per COMMIT':>11} {'vs 1 writer':>12}")
    for writers, (rate, per_commit) in results.items():
        print(f"{writers:>8} {rate:>12.0f} {per_commit:>11.1f} {rate / base:>11.2f}x")


if __name__ == "__main__":
    asyncio.run(main())
