"""The app tests/test_storm.py runs in a subprocess: the BOARD schema on a SQLite file
(``SYNCLINE_TEST_DB``), each client its own principal (the ``user`` of its hello's
credentials), as thousands of real users reconnecting after a restart would be."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from syncline import Engine
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

from .schemas import BOARD


def authenticate(conn: HTTPConnection, credentials: Mapping[str, Any] | None) -> str | None:
    user = (credentials or {}).get("user")
    return user if isinstance(user, str) and user else None


store = SQLiteStore(os.environ["SYNCLINE_TEST_DB"])
sync = SynclineServer(Engine(BOARD, store), authenticate=authenticate)
app = Starlette(routes=sync.routes, lifespan=sync.lifespan)  # opens and closes the store
