"""The app each node of tests/test_multinode.py runs (uvicorn in a subprocess): the
BOARD schema in one PostgreSQL schema shared by every node, joined by a backplane.

Environment: ``SYNCLINE_TEST_PG_DSN`` (the database), ``SYNCLINE_TEST_PG_SCHEMA``,
``SYNCLINE_TEST_BACKPLANE`` (``redis://...``, ``postgres`` or ``memory``) and
``SYNCLINE_TEST_CHANNEL``; optionally ``SYNCLINE_TEST_PG_APP`` (the pool's
``application_name``, so a test can find this node's sessions in ``pg_stat_activity``).
The store opens before the server starts reading the log and closes after it stops.
The server owns the backplane: it announces this node's commits, and heads announced
by the other nodes wake its log reader (which wakes its HTTP long polls when it moves).
"""

from __future__ import annotations

import os

from starlette.applications import Starlette

from syncline import Engine
from syncline.fanout.select import backplane_from_url
from syncline.server.app import SynclineServer
from syncline.store.postgres import PostgresStore

from .schemas import BOARD

DSN = os.environ["SYNCLINE_TEST_PG_DSN"]
store = PostgresStore(
    DSN,
    schema=os.environ["SYNCLINE_TEST_PG_SCHEMA"],
    max_size=6,
    application_name=os.environ.get("SYNCLINE_TEST_PG_APP", "syncline"),
)
engine = Engine(BOARD, store)
backplane = backplane_from_url(
    os.environ.get("SYNCLINE_TEST_BACKPLANE", "memory"),
    database=DSN,
    channel=os.environ.get("SYNCLINE_TEST_CHANNEL", "syncline"),
)
sync = SynclineServer(engine, backplane=backplane)


app = Starlette(routes=sync.routes, lifespan=sync.lifespan)  # opens and closes the store
