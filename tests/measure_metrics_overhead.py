"""Fan-out with Prometheus metrics off and on, for docs/operations.md ("Metrics"):

    .venv/bin/python -m tests.measure_metrics_overhead

(from the repository root). N subscribers of one query over real WebSockets
(in-process uvicorn, SQLite), one writer sends M inserts; the figure is the wall time
until every subscriber has every change. Not a test: it prints figures.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
import time
from pathlib import Path

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount

from syncline.protocol import Limits
from syncline.server.app import SynclineServer

from .live import RawClient, serve
from .schemas import BOARD
from .test_metrics import seeded
from .test_server import CARDS, card_insert


async def fan_out(metrics: bool, subscribers: int, mutations: int) -> float:
    engine = await seeded(Path(tempfile.mkdtemp()) / "b.sqlite3")
    store = engine.store
    sync = SynclineServer(
        engine,
        limits=Limits(mutations_per_second=1e6, mutation_burst=10**6),
        max_connections_per_principal=subscribers + 1,
    )
    routes: list[BaseRoute] = list(sync.routes)
    if metrics:
        routes.append(Mount("/metrics", sync.metrics_app()))
    try:
        async with (
            serve(Starlette(routes=routes, lifespan=sync.lifespan)) as host,
            contextlib.AsyncExitStack() as stack,
        ):
            subs = [
                await stack.enter_async_context(RawClient.connect(host, BOARD))
                for _ in range(subscribers)
            ]
            for s in subs:
                await s.subscribe(CARDS)
            writer = await stack.enter_async_context(RawClient.connect(host, BOARD))
            began, seq = time.perf_counter(), 0
            for mid in range(1, mutations + 1):
                seq = (await writer.mutate([card_insert(f"c{mid}")], mid))["seq"]
            await asyncio.gather(*(s.pump(seq, timeout=60) for s in subs))
            return time.perf_counter() - began
    finally:
        await store.close()


async def main(subscribers: int = 200, mutations: int = 100, runs: int = 3) -> None:
    print(f"{subscribers} subscribers, {mutations} mutations: seconds until all have all")
    for run in range(runs):
        off = await fan_out(False, subscribers, mutations)
        on = await fan_out(True, subscribers, mutations)
        print(f"run {run}: metrics off {off:.2f} s, on {on:.2f} s")


if __name__ == "__main__":
    asyncio.run(main())
