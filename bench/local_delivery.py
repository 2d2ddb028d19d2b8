"""Commit-to-delivery in one process on SQLite: ``Engine.apply`` then the log reader's
step that hands the change to a subscriber, timed per commit (no network).

Measures what a step costs after a commit made on this node: with the handoff
(``Engine.on_local_commit``) the reader takes the range from the commit; without it
(a tree before that change, on ``PYTHONPATH``) it reads the range back from the log::

    .venv/bin/python bench/local_delivery.py [--commits 2000]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from _sink import Sink  # bench/ is on the path of a script run from it

from syncline import Query
from syncline.demo.app import SCHEMA, seed
from syncline.engine import Engine
from syncline.fanout.reader import LogReader
from syncline.store.sqlite import SQLiteStore


async def measure(commits: int) -> dict[str, float]:
    store = SQLiteStore(Path(tempfile.mkdtemp()) / "x.sqlite3")
    await store.open()
    try:
        engine = Engine(SCHEMA, store)
        await seed(engine)
        reader = LogReader(engine, advance_every=3600)
        head = await engine.head()
        reader.epoch, reader.position = head.epoch, head.seq
        conn = Sink("demo")
        query = Query.parse({"c": "cards", "where": {"board_id": "demo"}}, SCHEMA)
        task = asyncio.ensure_future(reader.join(conn, {"q": query}, None))  # type: ignore[arg-type]
        await asyncio.sleep(0)
        await reader.step()
        await task
        card = {"board_id": "demo", "list_id": "launch"}
        ins = {"op": "insert", "c": "cards", "id": "local", "fields": card}
        await engine.apply("demo", "w", {"id": 1, "ops": [ins]})
        await reader.step()
        incr = {"op": "incr", "c": "cards", "id": "local", "field": "votes", "by": 1}
        apply_ms, step_ms = [], []
        cpu = time.process_time()
        for n in range(commits):
            began = time.perf_counter()
            await engine.apply("demo", "w", {"id": n + 2, "ops": [incr]})
            mid = time.perf_counter()
            await reader.step()
            step_ms.append((time.perf_counter() - mid) * 1000)
            apply_ms.append((mid - began) * 1000)
        cpu_ms = (time.process_time() - cpu) * 1000 / commits
        assert conn.parts >= commits, conn.parts
        return {
            "apply_ms": statistics.median(apply_ms),
            "step_ms": statistics.median(step_ms),
            "cpu_ms_per_commit": cpu_ms,
            "handed_steps": float(getattr(reader, "handed_steps", 0)),
        }
    finally:
        await store.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--commits", type=int, default=2000)
    args = parser.parse_args()
    got = asyncio.run(measure(args.commits))
    print(" ".join(f"{k}={v:.3f}" for k, v in got.items()))


if __name__ == "__main__":
    main()
