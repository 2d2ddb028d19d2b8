"""Durable mutations per second through ``Engine.apply`` on a SQLite file.

Each writer is its own client id and applies one small increment per mutation, one
after another (the next is sent once the previous ack came back); writers run
concurrently, so group commit lets several share one COMMIT and fsync. Prints a table
of writers against mutations per second, and the ratio to one writer::

    .venv/bin/python bench/sqlite_mutations.py [--seconds 4] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import tempfile
import time
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel

from syncline import Collection, Counter, Engine, Insert, Schema
from syncline.store.sqlite import SQLiteStore


class Tally(BaseModel):
    count: Annotated[int, Counter()] = 0


SCHEMA = Schema([Collection("tallies", Tally)])
PRINCIPAL = "bench"


async def measure(path: Path, writers: int, seconds: float) -> tuple[float, float]:
    """Mutations per second with ``writers`` concurrent clients, and mutations per COMMIT."""
    store = SQLiteStore(path)
    await store.open()
    try:
        engine = Engine(SCHEMA, store)
        async with engine.transaction(PRINCIPAL) as stx:
            for w in range(writers):
                stx.apply(Insert(c="tallies", id=f"t{w}", fields={}))
        commits_before = store.commits
        deadline = time.perf_counter() + seconds
        counts = [0] * writers

        async def writer(w: int) -> None:
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
        commits = store.commits - commits_before
        return total / elapsed, total / max(commits, 1)
    finally:
        await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4.0, help="per writer count")
    parser.add_argument("--dir", default="/tmp", help="where the database files go")
    parser.add_argument("--writers", default="1,10,50")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="syncline-bench-", dir=args.dir))
    try:
        results: dict[int, tuple[float, float]] = {}
        for writers in (int(w) for w in args.writers.split(",")):
            results[writers] = await measure(root / f"w{writers}.sqlite3", writers, args.seconds)
        base = results[min(results)][0]
        print(f"SQLite file in {root}, synchronous=FULL, {args.seconds:g} s per row")
        print(f"{'writers':>8} {'mutations/s':>12} {'per COMMIT':>11} {'vs 1 writer':>12}")
        for writers, (rate, per_commit) in results.items():
            print(f"{writers:>8} {rate:>12.0f} {per_commit:>11.1f} {rate / base:>11.2f}x")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    asyncio.run(main())
