"""A minimal syncline application: shared notes, served by ``syncline serve``.

    syncline serve syncline.examples.notes.app:app --db notes.sqlite3 --port 8000

or as several nodes on one PostgreSQL database::

    syncline serve syncline.examples.notes.app:app --port 8001 \
        --db postgresql://postgres@127.0.0.1/test?schema=notes --backplane redis://127.0.0.1:6379/0

The page at ``/`` is server-rendered from the same snapshot it embeds; clients sync at
``/sync``. The database comes from ``--db`` (``$SYNCLINE_DB``).
"""

from __future__ import annotations

from typing import Annotated

from markupsafe import escape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from syncline import Collection, Counter, Engine, Queryable, Schema, Text
from syncline.fanout import backplane_from_env
from syncline.server.app import SynclineServer
from syncline.ssr import SSR_HEADERS, read_page
from syncline.store import store_from_env


class Note(BaseModel):
    topic: Annotated[str, Queryable()] = "general"
    text: Annotated[str, Text()] = ""
    likes: Annotated[int, Counter()] = 0


schema = Schema([Collection("notes", Note)])
store = store_from_env(default="notes.sqlite3")
engine = Engine(schema, store)
sync = SynclineServer(engine, backplane=backplane_from_env())


async def index(request: Request) -> HTMLResponse:
    state = await read_page(engine, "guest", {"notes": {"c": "notes"}})
    items = "".join(
        f'<li data-sl-id="notes:{escape(n["id"])}">'
        f'<span data-sl-field="text">{escape(n["text"])}</span>'
        f' (<span data-sl-field="likes">{n["likes"]}</span> likes)</li>'
        for n in state.rows("notes")
    )
    body = f"<!doctype html><title>Notes</title><h1>Notes</h1><ul>{items}</ul>{state.script_tag()}"
    return HTMLResponse(body, headers=SSR_HEADERS)


app = Starlette(routes=[Route("/", index), *sync.routes], lifespan=sync.lifespan)
