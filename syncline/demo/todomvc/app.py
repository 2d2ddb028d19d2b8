"""TodoMVC on syncline, to the TodoMVC application specification.

What syncline gives it: the list lives on the server, the page is rendered from the
same snapshot it embeds (complete without JavaScript), and every tab of one browser
session stays in sync live. Each browser session (a signed cookie holding an id only the
server issues: :mod:`syncline.demo.sessions`) has its own list; read and write rules
keep it to itself.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...engine import Engine
from ...fanout.select import backplane_from_env
from ...model import Collection, Queryable, Schema
from ...server.app import SynclineServer
from ...server.headers import SecurityHeaders
from ...ssr import SSR_HEADERS, install_jinja, read_page
from ...store import Store, store_from_url
from ..sessions import Sessions

__all__ = ["SCHEMA", "app_for", "create_app"]

COOKIE = "todomvc_session"


class Todo(BaseModel):
    session: Annotated[str, Queryable()]
    title: str
    completed: Annotated[bool, Queryable()] = False
    order: Annotated[float, Queryable()] = 0.0


def _own(session: str, todo: Mapping[str, Any] | None) -> bool:
    return todo is None or todo["session"] == session


SCHEMA = Schema(
    [
        Collection(
            "todos",
            Todo,
            read_filter=lambda session: {"session": session},  # filtered in the store
            write=lambda session, before, after: _own(session, before) and _own(session, after),
        )
    ]
)


def todos_query(session: str) -> dict[str, Any]:
    return {"c": "todos", "where": {"session": session}, "order": [["order", "asc"]]}


def create_app(store: Store, *, secret: str | None = None) -> Starlette:
    """The app; sessions are signed with ``secret``, else ``$SYNCLINE_SECRET``, else a
    secret generated now (sessions then end when the server restarts)."""
    engine = Engine(SCHEMA, store)
    sessions = Sessions(COOKIE, secret=secret)

    def authenticate(conn: HTTPConnection, _credentials: object) -> str | None:
        return sessions.read(conn)  # no valid cookie: refused (the page issues one)

    sync = SynclineServer(
        engine,
        authenticate=authenticate,
        backplane=backplane_from_env(),
        # Presence: each tab joins its visitor's list room, and only that one, so a page
        # can say how many tabs show the list (one member per tab).
        may_join=lambda session, room: room == f"list:{session}",
    )
    env = Environment(loader=PackageLoader("syncline.demo.todomvc"), autoescape=select_autoescape())
    install_jinja(env)

    async def index(request: Request) -> HTMLResponse:
        session = sessions.begin(request)
        state = await read_page(engine, session, {"todos": todos_query(session)})
        todos = state.rows("todos")
        html = env.get_template("index.html").render(
            state=state,
            todos=todos,
            remaining=sum(1 for t in todos if not t["completed"]),
        )
        response = HTMLResponse(html, headers=SSR_HEADERS)
        # Re-signed on every visit, so the list lives as long as the visitor keeps
        # coming back (within the cookie's 30 days).
        sessions.issue(request, response, session)
        return response

    static = StaticFiles(directory=Path(__file__).parent / "static")
    app = Starlette(
        routes=[Route("/", index), Mount("/todomvc-static", static), *sync.routes],
        lifespan=sync.lifespan,  # opens and closes the store
        middleware=[Middleware(SecurityHeaders)],  # nosniff, frame-ancestors 'self'
    )
    app.state.engine = engine
    app.state.sync = sync
    return app


def app_for(db: str | Path, *, secret: str | None = None) -> Starlette:
    return create_app(store_from_url(str(db)), secret=secret)
