"""``X-Content-Type-Options: nosniff`` and ``frame-ancestors 'self'`` by default: on
the sync endpoints' answers (``SynclineServer(security_headers=...)``) and on the demos'
pages (``syncline.server.headers.SecurityHeaders``), and how to change them."""

from __future__ import annotations

from pathlib import Path

import httpx
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from syncline import Engine
from syncline.demo.app import create_app as board_app
from syncline.demo.todomvc.app import create_app as todomvc_app
from syncline.server.app import SynclineServer
from syncline.server.headers import DEFAULT_SECURITY_HEADERS, SecurityHeaders
from syncline.store.sqlite import SQLiteStore

from .live import serve
from .test_auth import OPEN

DEFAULTS = {
    "x-content-type-options": "nosniff",
    "content-security-policy": "frame-ancestors 'self'",
}
QUERIES = {"queries": '{"notes": {"c": "notes"}}'}


def security(response: httpx.Response) -> dict[str, str]:
    """The response's security headers, each of which must appear once."""
    found = {}
    for name in (*DEFAULTS, "x-frame-options"):
        values = response.headers.get_list(name)
        assert len(values) <= 1, f"{name} sent {len(values)} times: {values}"
        if values:
            found[name] = values[0]
    return found


async def sync_answers(host: str) -> list[httpx.Response]:
    """One answer of each kind the sync endpoints give over HTTP."""
    async with httpx.AsyncClient(base_url=f"http://{host}") as http:
        body = {"client": "headers-client-1", "mut": {"id": 1, "ops": []}}
        return [
            await http.post("/sync/mutate", content=b"a=1"),  # 415
            await http.post("/sync/mutate", json=body),
            await http.get("/sync/pull", params=QUERIES),  # a snapshot
            await http.get("/sync/pull"),  # 400
            await http.get("/sync/pull", params=QUERIES, headers={"host": "rebound.example"}),
            await http.get("/sync/client.js"),
            await http.get("/sync/nothing.js"),  # 404
        ]


async def test_the_sync_endpoints_send_the_defaults_on_every_answer(tmp_path: Path) -> None:
    sync = SynclineServer(Engine(OPEN, SQLiteStore(tmp_path / "h.sqlite3")))
    async with serve(sync.app) as host:
        answers = await sync_answers(host)
    assert [a.status_code for a in answers] == [415, 200, 200, 400, 403, 200, 404]
    for answer in answers:
        assert security(answer) == DEFAULTS, answer.request.url


async def test_the_sync_endpoints_send_what_they_are_given_or_nothing(tmp_path: Path) -> None:
    def store() -> SQLiteStore:
        return SQLiteStore(tmp_path / "h.sqlite3")

    own = SynclineServer(Engine(OPEN, store()), security_headers={"X-Frame-Options": "DENY"})
    async with serve(own.app) as host:
        for answer in await sync_answers(host):
            assert security(answer) == {"x-frame-options": "DENY"}
    none = SynclineServer(Engine(OPEN, store()), security_headers={})
    async with serve(none.app) as host:
        for answer in await sync_answers(host):
            assert security(answer) == {}


async def test_the_demos_pages_assets_and_sync_answers_carry_them_once(tmp_path: Path) -> None:
    board = board_app(SQLiteStore(tmp_path / "board.sqlite3"))
    async with serve(board) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        answers = [
            await http.get("/"),
            await http.get("/boards/nowhere"),  # 404
            await http.get("/demo-static/board.js"),
            await http.get("/sync/client.js"),
            await http.get("/sync/pull", params={"queries": '{"b": {"c": "boards"}}'}),
        ]
        assert [a.status_code for a in answers] == [200, 404, 200, 200, 200]
        for answer in answers:
            assert security(answer) == DEFAULTS, answer.request.url
    todomvc = todomvc_app(SQLiteStore(tmp_path / "todomvc.sqlite3"))
    async with serve(todomvc) as host, httpx.AsyncClient(base_url=f"http://{host}") as http:
        answers = [await http.get("/"), await http.get("/todomvc-static/app.js")]
        assert [a.status_code for a in answers] == [200, 200]
        for answer in answers:
            assert security(answer) == DEFAULTS, answer.request.url


def page_app(**options: object) -> Starlette:
    async def plain(request: Request) -> PlainTextResponse:
        return PlainTextResponse("hello")

    async def embeddable(request: Request) -> PlainTextResponse:
        return PlainTextResponse("frame me", headers={"Content-Security-Policy": "default-src *"})

    return Starlette(
        routes=[Route("/", plain), Route("/widget", embeddable)],
        middleware=[Middleware(SecurityHeaders, **options)],
    )


async def get(app: Starlette, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        return await http.get(path)


async def test_the_middleware_adds_what_a_route_did_not_set_and_can_be_changed() -> None:
    assert dict(DEFAULT_SECURITY_HEADERS) == {
        "X-Content-Type-Options": "nosniff",
        "Content-Security-Policy": "frame-ancestors 'self'",
    }
    assert security(await get(page_app(), "/")) == DEFAULTS
    own = security(await get(page_app(), "/widget"))  # the route's own policy stays
    assert own == {**DEFAULTS, "content-security-policy": "default-src *"}
    custom = page_app(headers={"Content-Security-Policy": "frame-ancestors 'none'"})
    assert security(await get(custom, "/")) == {"content-security-policy": "frame-ancestors 'none'"}
    assert security(await get(page_app(headers={}), "/")) == {}
