"""Faults at the server's edges, over real uvicorn and real WebSockets on SQLite and
PostgreSQL: clients that vanish in the middle of a write, a database that refuses
writes (read-only, full), and what the refusals then say (docs/operations.md)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
import websockets
from starlette.applications import Starlette

from syncline import Engine, Insert
from syncline.server.app import SynclineServer
from syncline.store.base import Store

from .conftest import GROUPED, PG_DSN, STORE_FACTORIES
from .live import RawClient, serve
from .schemas import BOARD
from .test_store_conformance import seed_for

CARDS = {"cards": {"c": "cards"}}


def card_insert(rid: str) -> dict[str, Any]:
    return {"op": "insert", "c": "cards", "id": rid, "fields": {"list_id": "l1", "title": rid}}


@contextlib.asynccontextmanager
async def running(
    kind: str, tmp_path: Path, store: Store | None = None, **server_kw: Any
) -> AsyncIterator[tuple[str, Engine, SynclineServer]]:
    """A server on a fresh store of ``kind`` (or on ``store``), with a board and a list."""
    store = store or STORE_FACTORIES[kind](tmp_path)
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
        )
    sync = SynclineServer(engine, **server_kw)
    app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
    try:
        async with serve(app) as host:
            yield host, engine, sync
    finally:
        await store.close()


# --- a client goes away mid-write -------------------------------------------------------


@pytest.mark.parametrize("kind", GROUPED)
async def test_clients_dropped_mid_write_never_fail_another_clients_write(
    kind: str, tmp_path: Path
) -> None:
    """Writers on one node share write groups with clients that vanish while their own
    mutation is being applied (the server learns it when a send to them fails, and asks
    their connections to close): no writer ever sees a refusal or an error."""
    writers, per_writer, droppers, drops = 6, 30, 4, 12
    async with running(kind, tmp_path) as (host, engine, _):
        answers: list[dict[str, Any]] = []
        stop = asyncio.Event()

        async def write(n: int) -> None:
            async with RawClient.connect(host, BOARD) as client:
                for mid in range(1, per_writer + 1):
                    answer = await client.mutate([card_insert(f"w{n}-{mid}")], mid)
                    answers.append(answer)
                    assert answer["t"] == "ack" and answer["status"] == "applied", answer

        rng = random.Random(seed_for("dropped_mid_write"))

        async def drop(n: int) -> None:
            for round_ in range(drops):
                if stop.is_set():
                    return
                async with RawClient.connect(host, BOARD) as client:
                    await client.subscribe(CARDS)
                    for mid in range(1, 4):
                        await client.send(
                            {"t": "mut", "id": mid, "ops": [card_insert(f"d{n}-{round_}-{mid}")]}
                        )
                    with contextlib.suppress(TimeoutError):
                        await client.recv(timeout=rng.uniform(0.0, 0.01))
                    client.ws.transport.abort()  # gone, its mutations in flight

        async def writing() -> None:
            try:
                await asyncio.gather(*(write(n) for n in range(writers)))
            finally:
                stop.set()

        async with asyncio.timeout(90):
            await asyncio.gather(
                writing(), *(drop(n) for n in range(droppers)), return_exceptions=False
            )
        assert len(answers) == writers * per_writer
        snap = await engine.snapshot("admin", {"cards": _cards()})
        ids = {r["id"] for r in snap.results["cards"]}
        assert {f"w{n}-{m}" for n in range(writers) for m in range(1, per_writer + 1)} <= ids


def _by_user(_: Any, credentials: dict[str, Any] | None) -> str:
    return str((credentials or {}).get("user", "anonymous"))


@contextlib.asynccontextmanager
async def writes_blocked(store: Any) -> AsyncIterator[None]:
    """Hold the database's write lock from another connection: a group's first statement
    waits (PostgreSQL: the write advisory lock; SQLite: BEGIN IMMEDIATE, up to its busy
    timeout) until the block exits."""
    from syncline.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        db = sqlite3.connect(store.path, isolation_level=None)
        db.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            db.execute("ROLLBACK")
            db.close()
        return
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f"SELECT pg_advisory_lock({store._write_key})")
        yield
    finally:
        await conn.close()


async def until(condition: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


@pytest.mark.parametrize("kind", GROUPED)
async def test_a_connection_closed_mid_write_finishes_it_and_spares_its_group(
    kind: str, tmp_path: Path
) -> None:
    """A connection asked to close (revoked here; a failed send, a slow consumer or a
    heartbeat take the same path) while its mutation waits in the database: the
    mutation commits and is answered, then the connection closes; the writers waiting
    to share its group commit too."""
    async with running(kind, tmp_path, authenticate=_by_user) as (host, engine, sync):
        store: Any = engine.store
        async with contextlib.AsyncExitStack() as stack:
            dropper = await stack.enter_async_context(
                RawClient.connect(host, BOARD, auth={"user": "dropper"})
            )
            writers = [
                await stack.enter_async_context(
                    RawClient.connect(host, BOARD, auth={"user": f"writer{n}"})
                )
                for n in range(3)
            ]
            async with writes_blocked(store):
                await dropper.send({"t": "mut", "id": 1, "ops": [card_insert("dropped")]})
                await until(store._lock.locked)  # its write is in its first statement
                answers = [
                    asyncio.create_task(w.mutate([card_insert(f"w{n}")], 1))
                    for n, w in enumerate(writers)
                ]
                await until(lambda: store._waiting == len(writers))  # to join its group
                assert sync.revoke("dropper", "logged out") == 1
                for _ in range(5):
                    await asyncio.sleep(0)  # whatever the close does, it does now
            for answer in await asyncio.wait_for(asyncio.gather(*answers), 15):
                assert answer["t"] == "ack" and answer["status"] == "applied", answer
            ack = await dropper.expect("ack", timeout=15)
            assert ack["mid"] == 1 and ack["status"] == "applied"
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await dropper.recv(timeout=15)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4004
        snap = await engine.snapshot("admin", {"cards": _cards()})
        assert {r["id"] for r in snap.results["cards"]} == {"dropped", "w0", "w1", "w2"}


def _cards() -> Any:
    from syncline import Query

    return Query.parse({"c": "cards"}, BOARD)
