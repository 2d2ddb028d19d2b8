"""The server that bench/request_cost.py and tests/test_cost.py attack: one process,
one SQLite file, seeded at start for one case (``COST_CASE``):

* ``big``: 170 documents of 10 KB (one query answers 1.7 MB), no rules;
* ``ruled``: 30,000 todos of other visitors under a callable read rule (``read=``);
* ``filtered``: the same todos under the rule as a filter (``read_filter=``), or as a
  callable rule on a syncline that has no ``read_filter`` (so the script can measure
  the code before it).

``COST_DB`` names the file; ``COST_QUEUE`` sets ``max_queue_bytes``. The principal is
the hello's ``auth.user`` or the ``x-user`` header. ``GET /hash`` gives the schema hash.
It imports nothing of the repository but ``syncline``, so it runs on any checkout.
"""

from __future__ import annotations

import contextlib
import inspect
import os
from collections.abc import AsyncIterator, Mapping
from typing import Annotated, Any

from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from syncline import Collection, Engine, Insert, Queryable, Schema
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

CASE = os.environ.get("COST_CASE", "big")
DOCS, DOC_BYTES = 170, 10_000
TODOS = int(os.environ.get("COST_TODOS", "30000"))


class Doc(BaseModel):
    group: Annotated[str, Queryable()] = "all"
    body: str = ""


class Todo(BaseModel):
    owner: Annotated[str, Queryable()]
    title: str = ""
    completed: Annotated[bool, Queryable()] = False
    order: Annotated[float, Queryable()] = 0.0


def _todos() -> Collection:
    def write(user: Any, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> bool:
        return user == "seed" or all(r is None or r["owner"] == user for r in (before, after))

    has_filter = "read_filter" in inspect.signature(Collection).parameters
    if CASE == "filtered" and has_filter:
        return Collection("todos", Todo, read_filter=lambda user: {"owner": user}, write=write)  # type: ignore[call-arg]
    return Collection("todos", Todo, read=lambda user, todo: todo["owner"] == user, write=write)


SCHEMA = Schema([Collection("docs", Doc)] if CASE == "big" else [_todos()])


def authenticate(conn: HTTPConnection, credentials: Mapping[str, Any] | None) -> str:
    if credentials and isinstance(credentials.get("user"), str):
        return str(credentials["user"])
    return conn.headers.get("x-user", "anonymous")


store = SQLiteStore(os.environ["COST_DB"])
engine = Engine(SCHEMA, store)
sync = SynclineServer(
    engine,
    authenticate=authenticate,
    max_queue_bytes=int(os.environ.get("COST_QUEUE", str(4 << 20))),
)


async def _seed() -> None:
    async with store.read() as tx:
        if await tx.head() > 0:
            return
    async with engine.transaction("seed") as tx:
        if CASE == "big":
            for i in range(DOCS):
                tx.apply(Insert(c="docs", id=f"d{i:04}", fields={"body": "x" * DOC_BYTES}))
        else:
            for i in range(TODOS):
                fields = {"owner": f"visitor{i % 5000}", "title": f"todo {i}", "order": float(i)}
                tx.apply(Insert(c="todos", id=f"t{i:06}", fields=fields))


@contextlib.asynccontextmanager
async def lifespan(app: Any) -> AsyncIterator[None]:
    # Seeded before the server starts, so that its log reader starts past the seed.
    await store.open()
    try:
        await _seed()
        async with sync.lifespan(app):
            yield
    finally:
        await store.close()


async def schema_hash(request: Request) -> PlainTextResponse:
    return PlainTextResponse(SCHEMA.hash)


app = Starlette(routes=[Route("/hash", schema_hash), *sync.routes], lifespan=lifespan)
