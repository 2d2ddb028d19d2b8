"""The web demo: a server-rendered list of cards, its embedded state, and the sync
endpoints, on an embedded SQLite file created and seeded on first run.

The page is rendered from the same snapshot it embeds (``syncline.ssr``), so what a
visitor reads without JavaScript is exactly what a client hydrates from.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from ..engine import Engine
from ..model import Collection, Counter, Manual, Queryable, Ref, Schema, Set, Text
from ..ops import Insert
from ..server.app import SynclineServer
from ..ssr import SSR_HEADERS, install_jinja, read_page
from ..store import Store, store_from_url


class Board(BaseModel):
    name: str


class Card(BaseModel):
    board_id: Annotated[str, Ref("boards"), Queryable()]
    title: str = ""
    description: Annotated[str, Text()] = ""
    votes: Annotated[int, Counter()] = 0
    labels: Annotated[frozenset[str], Set()] = frozenset()
    status: Annotated[str, Manual(), Queryable()] = "todo"


SCHEMA = Schema([Collection("boards", Board), Collection("cards", Card)])

SEED = [
    Insert(c="boards", id="demo", fields={"name": "Launch plan"}),
    Insert(
        c="cards",
        id="card-1",
        fields={
            "board_id": "demo",
            "title": "Write the announcement",
            "description": "Two paragraphs, one screenshot.",
            "labels": ["docs"],
            "votes": 3,
        },
    ),
    Insert(
        c="cards",
        id="card-2",
        fields={
            "board_id": "demo",
            "title": "Load test the sync server",
            "status": "doing",
            "labels": ["perf", "server"],
        },
    ),
    Insert(
        c="cards", id="card-3", fields={"board_id": "demo", "title": "Ship it", "status": "todo"}
    ),
]


async def seed(engine: Engine) -> None:
    """Fill an empty database with the demo board (once)."""
    async with engine.store.read() as tx:
        if await tx.get("boards", "demo") is not None:
            return
    async with engine.transaction("demo") as tx:
        tx.apply(*SEED)


def create_app(store: Store) -> Starlette:
    engine = Engine(SCHEMA, store)
    sync = SynclineServer(engine)
    env = Environment(loader=PackageLoader("syncline.demo"), autoescape=select_autoescape())
    install_jinja(env)

    async def index(request: Request) -> HTMLResponse:
        state = await read_page(
            engine,
            "demo",
            {
                "board": {"c": "boards", "where": {"id": "demo"}},
                "cards": {"c": "cards", "where": {"board_id": "demo"}},
            },
        )
        html = env.get_template("index.html").render(state=state, board=state.rows("board")[0])
        return HTMLResponse(html, headers=SSR_HEADERS)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.open()
        await seed(engine)
        async with sync.lifespan():
            yield
        await store.close()

    app = Starlette(routes=[Route("/", index), *sync.routes], lifespan=lifespan)
    app.state.engine = engine
    app.state.sync = sync
    return app


def app_for(db: str | Path) -> Starlette:
    return create_app(store_from_url(str(db)))
