"""The servers under test, each run in its own process on 127.0.0.1.

- ``syncline``: a ``SynclineServer`` with the demo's schema and seed
  (``syncline.demo.app``) on SQLite (``synchronous=FULL``) or PostgreSQL.
- ``websockets-floor``: a raw ``websockets`` broadcast relay on uvloop, no persistence.
- ``python-socketio``: ASGI under uvicorn, one room, ``emit`` to the room.
- ``starlette-naive``: a Starlette WebSocket endpoint that loops over its connections.
- ``starlette-sqlite-naive``: one HTTP request, one INSERT and one COMMIT per change.
- ``starlette-postgres-naive`` and ``ssr-naive``: see :mod:`syncline.bench.naive`.

The relays speak a tiny protocol: a client sends ``sub`` to receive every message
(answered ``subbed``); any other text is broadcast to subscribers and answered ``a``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator
from typing import Any

import uvicorn

from .common import HOST, raise_fd_limit

FANOUT_PEERS = ("websockets-floor", "python-socketio", "starlette-naive")
DEMO_SECRET = "syncline-bench-demo-secret"  # signs the demos' session cookies in a run


def _uvicorn(app: Any, port: int) -> None:
    uvicorn.run(
        app,
        host=HOST,
        port=port,
        log_level="error",
        loop="uvloop",
        http="httptools",
        ws="auto",
        # As the floor (websockets, compression=None): no permessage-deflate anywhere,
        # so every system sends the same bytes and none pays zlib state per connection.
        ws_per_message_deflate=False,
        backlog=4096,
        lifespan="on",
    )


def run_server(system: str, port: int, db: str = "") -> None:
    """Process target: serve ``system`` on ``port`` until terminated."""
    raise_fd_limit()
    logging.basicConfig(level=logging.ERROR)
    if system == "syncline":
        _uvicorn(_syncline_app(db), port)
    elif system == "syncline-node":  # db: "<store url> <backplane url> <channel>"
        from ..fanout.select import backplane_from_url

        store_url, backplane_url, channel = db.split(" ")
        backplane = backplane_from_url(backplane_url, database=store_url, channel=channel)
        _uvicorn(_syncline_app(store_url, backplane), port)
    elif system == "syncline-board":
        from ..demo.app import create_app
        from ..store import store_from_url

        _uvicorn(create_app(store_from_url(db), secret=DEMO_SECRET), port)
    elif system == "syncline-todomvc":
        from ..demo.todomvc.app import create_app as create_todomvc
        from ..store import store_from_url

        _uvicorn(create_todomvc(store_from_url(db), secret=DEMO_SECRET), port)
    elif system == "websockets-floor":
        import uvloop

        uvloop.run(_floor(port))
    elif system == "python-socketio":
        _uvicorn(_socketio_app(), port)
    elif system == "starlette-naive":
        _uvicorn(_starlette_naive_app(), port)
    elif system == "starlette-sqlite-naive":
        _uvicorn(_starlette_sqlite_app(db), port)
    elif system == "starlette-postgres-naive":
        from .naive import starlette_postgres_app

        _uvicorn(starlette_postgres_app(db), port)
    elif system == "ssr-naive":
        from .naive import ssr_naive_app
        from .scenarios import TODOMVC_SESSION

        _uvicorn(ssr_naive_app(db, TODOMVC_SESSION), port)
    else:
        raise ValueError(f"unknown system {system!r}")


def _syncline_app(db: str, backplane: Any = None) -> Any:
    """The demo's schema and seed behind a default ``SynclineServer``, except for the
    per-connection mutation rate limit (50/s by default), raised so that a few writer
    connections can push the server to its limit, and the connections one principal may
    hold (64 by default): every bench client is the demo's one principal."""
    from starlette.applications import Starlette

    from ..demo.app import SCHEMA, seed
    from ..engine import Engine
    from ..protocol import Limits
    from ..server.app import SynclineServer
    from ..store import store_from_url

    store = store_from_url(db)
    engine = Engine(SCHEMA, store)
    limits = Limits(max_ops=engine.max_ops, mutations_per_second=1e6, mutation_burst=1_000_000)
    sync = SynclineServer(
        engine, limits=limits, backplane=backplane, max_connections_per_principal=1_000_000
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sync.lifespan():  # opens and closes the store
            await seed(engine)
            yield

    return Starlette(routes=sync.routes, lifespan=lifespan)


async def _floor(port: int) -> None:
    import websockets
    from websockets.asyncio.server import ServerConnection, serve

    subs: set[ServerConnection] = set()

    async def handler(ws: ServerConnection) -> None:
        try:
            async for message in ws:
                if message == "sub":
                    subs.add(ws)
                    await ws.send("subbed")
                else:
                    websockets.broadcast(subs, message)
                    await ws.send("a")
        except websockets.ConnectionClosed:
            pass
        finally:
            subs.discard(ws)

    async with serve(handler, HOST, port, backlog=4096, compression=None, max_queue=None):
        await asyncio.Future()


def _socketio_app() -> Any:
    import socketio  # type: ignore[import-untyped]

    sio = socketio.AsyncServer(async_mode="asgi", transports=["websocket"], logger=False)

    @sio.on("sub")  # type: ignore[untyped-decorator]
    async def sub(sid: str) -> str:
        await sio.enter_room(sid, "r")
        return "subbed"

    @sio.on("pub")  # type: ignore[untyped-decorator]
    async def pub(sid: str, data: Any) -> str:
        await sio.emit("m", data, room="r")
        return "a"

    return socketio.ASGIApp(sio)


def _starlette_naive_app() -> Any:
    from starlette.applications import Starlette
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    conns: set[WebSocket] = set()

    async def endpoint(ws: WebSocket) -> None:
        await ws.accept()
        try:
            while True:
                message = await ws.receive_text()
                if message == "sub":
                    conns.add(ws)
                    await ws.send_text("subbed")
                    continue
                for conn in list(conns):
                    try:
                        await conn.send_text(message)
                    except Exception:
                        conns.discard(conn)
                await ws.send_text("a")
        except WebSocketDisconnect:
            pass
        finally:
            conns.discard(ws)

    return Starlette(routes=[WebSocketRoute("/ws", endpoint)])


def _starlette_sqlite_app(path: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("PRAGMA synchronous = FULL")
    db.execute("CREATE TABLE IF NOT EXISTS changes (id INTEGER PRIMARY KEY, body TEXT)")
    lock = threading.Lock()

    def insert(body: str) -> int:
        with lock:
            db.execute("BEGIN")
            cur = db.execute("INSERT INTO changes (body) VALUES (?)", (body,))
            db.execute("COMMIT")
            return cur.lastrowid or 0

    async def change(request: Request) -> JSONResponse:
        body = (await request.body()).decode()
        rowid = await asyncio.to_thread(insert, body)
        return JSONResponse({"ok": True, "id": rowid})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        db.close()

    return Starlette(routes=[Route("/changes", change, methods=["POST"])], lifespan=lifespan)
