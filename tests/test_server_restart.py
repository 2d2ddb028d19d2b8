"""A sync server started again in a new event loop serves as before: what a test does
that enters ``with TestClient(app):`` twice (each block runs the lifespan in a loop of
its own), or a process that runs ``asyncio.run`` twice (docs/guide/testing.md)."""

from __future__ import annotations

import asyncio

from starlette.applications import Starlette

from syncline import Engine, Insert, MemoryStore
from syncline.server.app import SynclineServer

from .live import RawClient, serve
from .schemas import BOARD


def test_the_server_serves_subscriptions_again_in_a_second_event_loop() -> None:
    engine = Engine(BOARD, MemoryStore())  # a SQL store, once closed, is not opened again
    sync = SynclineServer(engine)
    app = Starlette(routes=sync.routes, lifespan=sync.lifespan)

    async def a_session(board_id: str) -> list[str]:
        async with serve(app) as host, RawClient.connect(host, BOARD) as client:
            await client.subscribe({"boards": {"c": "boards"}})
            async with engine.transaction("admin") as tx:  # fanned out by the log reader
                tx.apply(Insert(c="boards", id=board_id, fields={"name": board_id}))
            changes = await client.expect("changes", timeout=10)
            return [item["id"] for item in changes["q"]["boards"]]

    assert asyncio.run(a_session("first")) == ["first"]
    assert asyncio.run(a_session("second")) == ["second"]
