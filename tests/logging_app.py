"""An application for tests/test_logging.py: its write rule logs, so a line logged
while a mutation is applied shows the context syncline set (client, mutation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel
from starlette.applications import Starlette

from syncline import Collection, Engine, Schema
from syncline.fanout import backplane_from_env
from syncline.server.app import SynclineServer
from syncline.store import store_from_env

log = logging.getLogger("tests.logging_app")


class Note(BaseModel):
    text: str = ""


def may_write(principal: Any, old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> bool:
    log.info("write rule checked a note for %s", principal)
    return True


schema = Schema([Collection("notes", Note, write=may_write)])
engine = Engine(schema, store_from_env())
sync = SynclineServer(engine, backplane=backplane_from_env())
app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
