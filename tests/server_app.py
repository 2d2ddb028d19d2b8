"""The app tests/servers.py runs in a subprocess: the BOARD schema on a SQLite file.

``SYNCLINE_TEST_DB`` names the file. The store opens before the server starts reading
the log and closes after it stops.
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from syncline import Engine
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

from .schemas import BOARD

DB_ENV = "SYNCLINE_TEST_DB"

store = SQLiteStore(os.environ[DB_ENV])
engine = Engine(BOARD, store)
sync = SynclineServer(engine)


app = Starlette(routes=sync.routes, lifespan=sync.lifespan)  # opens and closes the store
