"""The app tests/servers.py runs in a subprocess: the BOARD schema on a SQLite file.

``SYNCLINE_TEST_DB`` names the file. The store opens before the server starts reading
the log and closes after it stops.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette

from syncline import Engine
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

from .schemas import BOARD

DB_ENV = "SYNCLINE_TEST_DB"

store = SQLiteStore(os.environ[DB_ENV])
engine = Engine(BOARD, store)
sync = SynclineServer(engine)


@asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    await store.open()
    try:
        async with sync.lifespan(app):
            yield
    finally:
        await store.close()


app = Starlette(routes=sync.routes, lifespan=lifespan)
