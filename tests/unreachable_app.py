"""An application whose own store is a PostgreSQL server that does not listen, for
tests/test_startup_errors.py: its lifespan fails however ``--db`` is checked."""

from __future__ import annotations

import os

from starlette.applications import Starlette

from syncline import Engine, Schema
from syncline.server.app import SynclineServer
from syncline.store import store_from_url

URL = os.environ["UNREACHABLE_DB"]
sync = SynclineServer(Engine(Schema([]), store_from_url(URL)))
app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
