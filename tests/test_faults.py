"""Faults at the server's edges, over real uvicorn and real WebSockets on SQLite and
PostgreSQL: clients that vanish in the middle of a write, a database that refuses
writes (read-only, full), and what the refusals then say (docs/operations.md)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import sqlite3
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import websockets
from starlette.applications import Starlette

from syncline import Engine, Insert
from syncline.server.app import SynclineServer
from syncline.store.base import Store

from .conftest import GROUPED, PG_DSN, STORE_FACTORIES, pg_unavailable
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
                    for mid in range(1, 9):
                        await client.send(
                            {"t": "mut", "id": mid, "ops": [card_insert(f"d{n}-{round_}-{mid}")]}
                        )
                    # Gone once the first answers arrive: the server is applying the next
                    # mutation, and fans out other writers' changes to a closed socket.
                    for _ in range(rng.randrange(1, 4)):
                        with contextlib.suppress(TimeoutError):
                            await client.recv(timeout=5)
                    client.ws.transport.abort()

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


# --- the database refuses writes --------------------------------------------------------


async def sqlite_pragma(store: Any, statement: str) -> None:
    """Run a PRAGMA on the SQLite store's writer connection (the one that writes)."""
    await store._writer_conn().run(lambda db: db.execute(statement).fetchall())


async def returning_client_goes_live_but_cannot_write(host: str, client_id: str) -> None:
    """A client that holds the answer to mutation 1 reconnects while the database
    refuses writes: welcomed, its subscription answered; its next mutation refused as
    temporary with the condition's code."""
    async with RawClient.connect(host, BOARD, client_id=client_id, hello=False) as client:
        await client.send(
            {"t": "hello", "v": 1, "client": client_id, "schema": BOARD.hash, "acked": 1}
        )
        welcome = await client.recv()
        assert welcome["t"] == "welcome" and welcome["last"] == 1, welcome
        snap = await client.subscribe(CARDS)
        assert snap["t"] == "snapshot" and [r["id"] for r in snap["records"]["cards"]] == ["k1"]
        refused = await client.mutate([card_insert("k2")], 2)
        assert refused["t"] == "reject" and refused["permanent"] is False, refused
        assert refused["code"] == "read_only" and "read-only" in refused["message"]
    async with RawClient.connect(host, BOARD) as newcomer:  # binding it is refused: welcomed
        assert newcomer.frames[0]["t"] == "welcome"


async def test_sqlite_read_only_serves_returning_clients_and_refuses_writes_as_read_only(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running("sqlite", tmp_path) as (host, engine, _):
        async with RawClient.connect(host, BOARD, client_id="returning-01") as client:
            assert (await client.mutate([card_insert("k1")], 1))["t"] == "ack"
        await sqlite_pragma(engine.store, "PRAGMA query_only = ON")  # SQLITE_READONLY
        with caplog.at_level(logging.WARNING, "syncline.server"):
            await returning_client_goes_live_but_cannot_write(host, "returning-01")
            async with httpx.AsyncClient(base_url=f"http://{host}") as http:  # and over HTTP
                body = {"client": "returning-01", "mut": {"id": 2, "ops": []}, "acked": 1}
                refused = await http.post("/sync/mutate", json=body)
                assert refused.status_code == 200, refused.text
                assert refused.json()["code"] == "read_only", refused.text
            await sqlite_pragma(engine.store, "PRAGMA query_only = OFF")
            async with RawClient.connect(host, BOARD, client_id="returning-01") as client:
                answer = await client.mutate([card_insert("k2")], 2)
                assert answer["t"] == "ack" and answer["status"] == "applied", answer
        began = [r for r in caplog.records if "refuses writes (read_only)" in r.getMessage()]
        ended = [r for r in caplog.records if "takes writes again" in r.getMessage()]
        assert len(began) == 1 and len(ended) == 1, [r.getMessage() for r in caplog.records]


async def test_a_full_sqlite_disk_refuses_mutations_as_storage_full_and_logs_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with running("sqlite", tmp_path) as (host, engine, _):
        store: Any = engine.store
        async with RawClient.connect(host, BOARD) as client:
            assert (await client.mutate([card_insert("small")], 1))["t"] == "ack"
            pages = await store.pragma("page_count")
            await sqlite_pragma(store, f"PRAGMA max_page_count = {pages}")  # SQLITE_FULL
            big = {**card_insert("big"), "fields": {"list_id": "l1", "title": "x" * 60_000}}
            with caplog.at_level(logging.WARNING, "syncline.server"):
                for _ in range(3):  # resent, as a client does
                    refused = await client.mutate([big], 2)
                    assert refused["t"] == "reject" and refused["permanent"] is False
                    assert refused["code"] == "storage_full", refused
                await sqlite_pragma(store, "PRAGMA max_page_count = 1073741823")
                answer = await client.mutate([big], 2)
                assert answer["t"] == "ack" and answer["status"] == "applied", answer
        messages = [r.getMessage() for r in caplog.records]
        assert sum("refuses writes (storage_full)" in m for m in messages) == 1, messages
        assert sum("takes writes again: 3 refused (storage_full)" in m for m in messages) == 1


@contextlib.asynccontextmanager
async def pg_database() -> AsyncIterator[str]:
    """A database of this test's own (its DSN), dropped afterwards."""
    name = f"syncline_faults_{uuid.uuid4().hex[:10]}"
    try:
        admin = await asyncpg.connect(PG_DSN)
    except (OSError, asyncpg.PostgresError) as exc:
        pg_unavailable(exc)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield PG_DSN.rsplit("/", 1)[0] + f"/{name}"
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_postgres_read_only_serves_returning_clients_and_refuses_writes_as_read_only(
    tmp_path: Path,
) -> None:
    from syncline.store.postgres import PostgresStore

    async with pg_database() as dsn:
        name = dsn.rsplit("/", 1)[1]
        store = PostgresStore(dsn, max_size=4)
        async with running("postgres", tmp_path, store=store) as (host, _, _):
            async with RawClient.connect(host, BOARD, client_id="returning-02") as client:
                assert (await client.mutate([card_insert("k1")], 1))["t"] == "ack"
            admin = await asyncpg.connect(dsn)
            try:
                await admin.execute(
                    f'ALTER DATABASE "{name}" SET default_transaction_read_only = on'
                )
                await store._open_pool().expire_connections()  # new sessions: read-only
                await returning_client_goes_live_but_cannot_write(host, "returning-02")
                await admin.execute(f'ALTER DATABASE "{name}" RESET default_transaction_read_only')
                await store._open_pool().expire_connections()
            finally:
                await admin.close()
            async with RawClient.connect(host, BOARD, client_id="returning-02") as client:
                answer = await client.mutate([card_insert("k2")], 2)
                assert answer["t"] == "ack" and answer["status"] == "applied", answer


# --- a client id is bound at hello ------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(STORE_FACTORIES))
async def test_a_client_id_is_bound_at_hello(kind: str, tmp_path: Path) -> None:
    """Another principal's hello with a client id that was welcomed, and never mutated,
    is refused: the id was bound to its principal by the hello."""
    async with running(kind, tmp_path, authenticate=_by_user) as (host, _, _):
        async with RawClient.connect(host, BOARD, client_id="bound-at-hello", hello=False) as a:
            assert (await a.hello(auth={"user": "alice"}))["t"] == "welcome"
        async with RawClient.connect(host, BOARD, client_id="bound-at-hello", hello=False) as b:
            refused = await b.hello(auth={"user": "mallory"})
            assert refused["t"] == "error" and refused["code"] == "client_id_taken", refused
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await b.recv()
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4003
        async with RawClient.connect(host, BOARD, client_id="bound-at-hello", hello=False) as a:
            welcome = await a.hello(auth={"user": "alice"})
            assert welcome["t"] == "welcome" and welcome["last"] == 0
            assert (await a.mutate([card_insert("mine")], 1))["t"] == "ack"


# --- which errors name which condition --------------------------------------------------


def test_postgres_errors_name_their_condition() -> None:
    from asyncpg import exceptions as pg

    from syncline.exceptions import StorageFull, StoreReadOnly, StoreUnavailable
    from syncline.store.postgres._errors import condition

    assert condition(pg.DiskFullError("no space")) is StorageFull
    assert condition(pg.ReadOnlySQLTransactionError("read-only")) is StoreReadOnly
    for lost in (
        pg.ConnectionDoesNotExistError("gone"),
        pg.AdminShutdownError("terminating connection due to administrator command"),
        pg.CannotConnectNowError("the database system is starting up"),
        pg.TooManyConnectionsError("too many clients"),
        pg.InterfaceError("connection is closed"),
        ConnectionResetError("reset"),
    ):
        assert condition(lost) is StoreUnavailable, lost
    assert condition(pg.UniqueViolationError("duplicate key")) is None
    assert condition(ValueError("a bug")) is None


def test_sqlite_errors_name_their_condition(tmp_path: Path) -> None:
    from syncline.exceptions import StorageFull, StoreError, StoreReadOnly
    from syncline.store.sqlite._errors import store_error

    db = sqlite3.connect(tmp_path / "x.sqlite3", isolation_level=None)
    db.execute("CREATE TABLE t (x TEXT)")
    db.execute(f"PRAGMA max_page_count = {db.execute('PRAGMA page_count').fetchone()[0]}")
    with pytest.raises(sqlite3.Error) as full:
        db.execute("INSERT INTO t VALUES (?)", ("x" * 100_000,))
    db.execute("PRAGMA query_only = ON")
    with pytest.raises(sqlite3.Error) as read_only:
        db.execute("DELETE FROM t")
    with pytest.raises(sqlite3.Error) as bug:
        db.execute("SELECT * FROM missing")
    db.close()
    assert type(store_error("x", full.value)) is StorageFull
    assert type(store_error("x", read_only.value)) is StoreReadOnly
    assert type(store_error("x", bug.value)) is StoreError
    wrapped = StoreError("the group was rolled back")
    wrapped.__cause__ = full.value
    assert type(store_error("y", wrapped)) is StorageFull  # found on the way
