"""The web demo: a collaborative board (boards, lists, cards) with every merge policy,
server-rendered from the same snapshot it embeds, on an embedded SQLite file created and
seeded on first run.

What a visitor reads without JavaScript is exactly what the browser client hydrates
from (``syncline.ssr``); ``static/board.js`` then binds the server's HTML in place
(``data-sl-id`` / ``data-sl-field``) and goes live over ``/sync``.

A card shows one field per merge policy, and what two people editing it at once see:

- ``title`` (lww): the later edit wins, and its author is told it overwrote another.
- ``description`` (``Text()``): both edits are kept, merged three ways.
- ``votes`` (``Counter()``): every +1 counts.
- ``labels`` (``Set()``): adds and removes merge; an add wins over a concurrent remove.
- ``status`` (``Manual()``): the second one decides, in a dialog (base / mine / theirs).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

from jinja2 import Environment, PackageLoader, select_autoescape
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ..engine import Engine
from ..fanout.select import backplane_from_env
from ..model import Collection, Counter, Manual, Queryable, Ref, Schema, Set, Text
from ..ops import Insert
from ..server.app import SynclineServer
from ..server.headers import SecurityHeaders
from ..ssr import SSR_HEADERS, PageState, Row, install_jinja, read_page
from ..store import Store, store_from_url
from .sessions import Sessions

__all__ = ["COOKIE", "SCHEMA", "STATUSES", "app_for", "create_app", "seed"]

DEFAULT_BOARD = "demo"
PRINCIPAL = "anonymous"
"""Who reads the board outside a visit (tests, the bench): the board has no rules, so
every principal reads the same records. Each visitor is its own principal."""
COOKIE = "board_session"
STATIC_PATH = "/demo-static"

Status = Literal["backlog", "doing", "review", "done"]
STATUSES: dict[str, str] = {value: value.capitalize() for value in get_args(Status)}
"""A card's status values, in workflow order, with the label the page shows."""


class Board(BaseModel):
    name: str


class BoardList(BaseModel):
    board_id: Annotated[str, Ref("boards"), Queryable()]
    name: str
    position: Annotated[int, Queryable()] = 0


class Card(BaseModel):
    list_id: Annotated[str, Ref("lists"), Queryable()]
    board_id: Annotated[str, Ref("boards"), Queryable()]  # copied from the list, to filter on
    position: Annotated[int, Queryable()] = 0
    title: str = ""
    description: Annotated[str, Text()] = ""
    votes: Annotated[int, Counter()] = 0
    labels: Annotated[frozenset[str], Set()] = frozenset()
    status: Annotated[Status, Manual()] = "backlog"


SCHEMA = Schema(
    [Collection("boards", Board), Collection("lists", BoardList), Collection("cards", Card)]
)


def _card(card_id: str, list_id: str, position: int, title: str, **fields: Any) -> Insert:
    return Insert(
        c="cards",
        id=card_id,
        fields={
            "board_id": DEFAULT_BOARD,
            "list_id": list_id,
            "position": position,
            "title": title,
            **fields,
        },
    )


SEED = [
    Insert(c="boards", id=DEFAULT_BOARD, fields={"name": "Launch plan"}),
    Insert(
        c="lists",
        id="product",
        fields={"board_id": DEFAULT_BOARD, "name": "Product", "position": 1},
    ),
    Insert(
        c="lists",
        id="engineering",
        fields={"board_id": DEFAULT_BOARD, "name": "Engineering", "position": 2},
    ),
    Insert(
        c="lists", id="launch", fields={"board_id": DEFAULT_BOARD, "name": "Launch", "position": 3}
    ),
    _card(
        "card-1",
        "launch",
        1,
        "Write the announcement",
        description="Two paragraphs and one screenshot. Lead with the offline story.",
        labels=["docs"],
        votes=3,
        status="doing",
    ),
    _card(
        "card-2",
        "engineering",
        1,
        "Load test the sync server",
        description="10k clients per node; fan-out p99 under 50 ms.",
        labels=["perf", "server"],
        votes=5,
        status="doing",
    ),
    _card(
        "card-3",
        "engineering",
        2,
        "Offline queue in IndexedDB",
        description="Pending edits survive a closed tab and are sent exactly once.",
        labels=["client"],
        votes=2,
        status="review",
    ),
    _card(
        "card-4",
        "product",
        1,
        "Conflict dialog for manual fields",
        description="Show base, mine and theirs; let the user pick.",
        labels=["design", "ux"],
        votes=4,
    ),
    _card(
        "card-5",
        "product",
        2,
        "Getting-started guide",
        labels=["docs"],
        votes=1,
    ),
    _card(
        "card-6",
        "launch",
        2,
        "Record a one-minute demo video",
        labels=["video"],
        status="done",
    ),
]


async def seed(engine: Engine) -> None:
    """Fill an empty database with the demo board (once)."""
    async with engine.store.read() as tx:
        if await tx.get("boards", DEFAULT_BOARD) is not None:
            return
    async with engine.transaction("demo") as tx:
        tx.apply(*SEED)


def sorted_labels(labels: Iterable[str]) -> list[str]:
    """Labels in the order the browser sorts them (UTF-16 code units), so the server's
    HTML and the hydrated page agree to the character."""
    return sorted(labels, key=lambda s: s.encode("utf-16-be", "surrogatepass"))


def label_tone(label: str) -> int:
    """One of eight colours for a label, the same as ``labelTone`` in board.js computes
    (a hash over UTF-16 code units), so a label keeps its colour after hydration."""
    h = 0
    data = label.encode("utf-16-le", "surrogatepass")
    for i in range(0, len(data), 2):
        h = (h * 31 + int.from_bytes(data[i : i + 2], "little")) % 1_000_003
    return h % 8


def board_queries(board_id: str) -> dict[str, dict[str, Any]]:
    """What a board page needs: the board, its lists and its cards, in display order."""
    return {
        "board": {"c": "boards", "where": {"id": board_id}},
        "lists": {"c": "lists", "where": {"board_id": board_id}, "order": [["position", "asc"]]},
        "cards": {"c": "cards", "where": {"board_id": board_id}, "order": [["position", "asc"]]},
    }


def page_context(state: PageState) -> dict[str, Any]:
    """The template's view of a page state: lists, each with its cards."""
    lists = state.rows("lists")
    cards: dict[str, list[Row]] = {lst["id"]: [] for lst in lists}
    for card in state.rows("cards"):
        if card["list_id"] in cards:
            cards[card["list_id"]].append(Row(card, labels=sorted_labels(card["labels"])))
    return {
        "state": state,
        "board": state.rows("board")[0],
        "lists": lists,
        "cards": cards,
        "statuses": STATUSES,
        "static": STATIC_PATH,
        "blank_card": {
            "id": "",
            "title": "",
            "description": "",
            "votes": 0,
            "labels": [],
            "status": next(iter(STATUSES)),
        },
    }


def visitor_view(visitor: str) -> dict[str, Any]:
    """What the others on a board see of a visitor: a name and a hue derived from its
    session, never the session itself (presence: docs/protocol.md)."""
    digest = hashlib.sha256(visitor.encode()).digest()
    return {
        "name": f"Visitor {int.from_bytes(digest[:2]) % 1000:03d}",
        "hue": digest[2] * 360 // 256,
    }


def create_app(store: Store, *, secret: str | None = None) -> Starlette:
    """The app; visitors' sessions are signed with ``secret``, else ``$SYNCLINE_SECRET``,
    else a secret generated now (:mod:`syncline.demo.sessions`)."""
    engine = Engine(SCHEMA, store)
    sessions = Sessions(COOKIE, secret=secret)

    def authenticate(conn: HTTPConnection, _credentials: object) -> str | None:
        # Each visitor is its own principal (its own long-poll allowance, its own client
        # ids); no valid cookie: refused (every page issues one).
        return sessions.read(conn)

    sync = SynclineServer(
        engine,
        authenticate=authenticate,
        backplane=backplane_from_env(),  # syncline demo --backplane
        presence_user=visitor_view,  # who a member of a board's room is
        presence_merge="principal",  # one avatar per visitor, however many tabs
    )
    env = Environment(loader=PackageLoader("syncline.demo"), autoescape=select_autoescape())
    install_jinja(env)
    env.filters["label_tone"] = label_tone

    async def render_board(request: Request, board_id: str) -> HTMLResponse:
        visitor = sessions.begin(request)
        state = await read_page(engine, visitor, board_queries(board_id))
        if not state.rows("board"):
            html = env.get_template("not_found.html").render(static=STATIC_PATH)
            response = HTMLResponse(html, status_code=404, headers=SSR_HEADERS)
        else:
            html = env.get_template("board.html").render(**page_context(state))
            response = HTMLResponse(html, headers=SSR_HEADERS)
        sessions.issue(request, response, visitor)
        return response

    async def index(request: Request) -> HTMLResponse:
        return await render_board(request, DEFAULT_BOARD)

    async def board(request: Request) -> HTMLResponse:
        return await render_board(request, request.path_params["board_id"])

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with sync.lifespan():  # opens and closes the store
            await seed(engine)
            yield

    app = Starlette(
        routes=[
            Route("/", index),
            Route("/boards/{board_id}", board),
            Mount(
                STATIC_PATH,
                StaticFiles(packages=[("syncline.demo", "static")]),
                name="demo-static",
            ),
            *sync.routes,
        ],
        lifespan=lifespan,
        middleware=[Middleware(SecurityHeaders)],  # nosniff, frame-ancestors 'self'
    )
    app.state.engine = engine
    app.state.sync = sync
    return app


def app_for(db: str | Path, *, secret: str | None = None) -> Starlette:
    return create_app(store_from_url(str(db)), secret=secret)
