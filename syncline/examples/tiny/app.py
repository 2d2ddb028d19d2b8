"""The smallest live app: one shared list, rendered on the server, live in every tab.
Everyone is the principal "anonymous" (no sign-in); docs/guide/ adds sessions."""

from pathlib import Path
from typing import Annotated

from jinja2 import Environment, PackageLoader
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ...engine import Engine
from ...model import Collection, Counter, Queryable, Schema
from ...server.app import SynclineServer
from ...ssr import SSR_HEADERS, install_jinja, read_page
from ...store import store_from_env, store_from_url


class Item(BaseModel):
    text: str
    votes: Annotated[int, Counter()] = 0  # every +1 counts, from any tab
    added: Annotated[float, Queryable()] = 0.0  # the list's order


SCHEMA = Schema([Collection("items", Item)])
QUERIES = {"items": {"c": "items", "order": [["added", "asc"]]}}
templates = Environment(loader=PackageLoader("syncline.examples.tiny"), autoescape=True)
install_jinja(templates)


def tiny_app(db: str | Path | None = None) -> Starlette:
    """The app on ``db``, else ``$SYNCLINE_DB`` (as ``syncline serve --db`` sets it)."""
    store = store_from_url(str(db)) if db else store_from_env(default="tiny.sqlite3")
    engine = Engine(SCHEMA, store)
    sync = SynclineServer(engine)  # no authenticate: every connection is "anonymous"

    async def index(request: Request) -> HTMLResponse:
        state = await read_page(engine, "anonymous", QUERIES)
        html = templates.get_template("index.html").render(state=state)
        return HTMLResponse(html, headers=SSR_HEADERS)

    static = StaticFiles(directory=Path(__file__).parent / "static")
    routes = [Route("/", index), Mount("/tiny", static), *sync.routes]
    return Starlette(routes=routes, lifespan=sync.lifespan)


app = tiny_app()  # syncline serve syncline.examples.tiny.app:app --db tiny.sqlite3
