"""The browser helpers (renderList, bindInput) on a real page in Chromium, two tabs of
two visitors: rows inserted, deleted and reordered in one tab show up in the other as
moves of the same DOM nodes, the server-rendered rows are adopted, not drawn again, and
the caret stays put when the other tab types earlier in the same text field."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from syncline import Engine
from syncline.model import Collection, Queryable, Schema, Text
from syncline.ops import Insert
from syncline.server.app import SynclineServer
from syncline.ssr import SSR_HEADERS, read_page
from syncline.store.sqlite import SQLiteStore

from ..live import serve
from .conftest import playwright_missing

try:
    from playwright.async_api import Browser, Page, expect
except ImportError:
    playwright_missing()


class Item(BaseModel):
    title: str
    rank: Annotated[float, Queryable()] = 0.0


class Note(BaseModel):
    body: Annotated[str, Text()] = ""


SCHEMA = Schema([Collection("items", Item), Collection("notes", Note)])
QUERIES = {"items": {"c": "items", "order": [["rank", "asc"]]}, "notes": {"c": "notes"}}

SCRIPT = """
import { bindInput, connect, renderList } from "/sync/client.js";
const sync = await connect();
const rows = sync.query({ c: "items", order: [["rank", "asc"]] });
renderList(document.getElementById("items"), document.getElementById("row"), rows, {
  collection: "items",
  pristine: sync.pristine,
});
bindInput(sync, document.getElementById("note"), "notes", "n1", "body");
window.sync = sync;
sync.status.subscribe((s) => (document.documentElement.dataset.status = s));
"""

# Before the page's own script: every removal of a row, and who was there at load.
WATCH = """
window.removedRows = 0;
new MutationObserver((records) => {
  for (const r of records)
    if (r.target.id === "items") window.removedRows += r.removedNodes.length;
}).observe(document, { childList: true, subtree: true });
"""


def page_html(state: Any) -> str:
    rows = "".join(
        f'<li data-id="{html.escape(r["id"])}"><span data-sl-field="title">'
        f"{html.escape(r['title'])}</span><input class=note></li>"
        for r in state.rows("items")
    )
    body = state.rows("notes")[0]["body"]
    return (
        "<!doctype html><html><head><meta charset=utf-8><title>helpers</title></head><body>"
        f'<ul id="items">{rows}</ul>'
        '<template id="row"><li><span data-sl-field="title"></span><input class=note></li>'
        "</template>"
        f'<textarea id="note">{html.escape(body)}</textarea>'
        f"{state.script_tag()}"
        f'<script type="module">{SCRIPT}</script></body></html>'
    )


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    engine = Engine(SCHEMA, SQLiteStore(tmp_path / "helpers.sqlite3"))

    def authenticate(_conn: HTTPConnection, _credentials: object) -> str:
        return "visitor"

    sync = SynclineServer(engine, authenticate=authenticate)

    async def index(_request: Request) -> HTMLResponse:
        state = await read_page(engine, "visitor", QUERIES)
        return HTMLResponse(page_html(state), headers=SSR_HEADERS)

    app = Starlette(routes=[Route("/", index), *sync.routes], lifespan=sync.lifespan)
    async with serve(app) as host:
        async with engine.transaction("seed") as tx:
            tx.apply(
                *(
                    Insert(c="items", id=i, fields={"title": i.upper(), "rank": n})
                    for n, i in enumerate("abc", start=1)
                ),
                Insert(c="notes", id="n1", fields={"body": "hello world"}),
            )
        yield f"http://{host}/"


async def open_tab(browser: Browser, url: str, errors: list[str]) -> Page:
    context = await browser.new_context()
    page = await context.new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.add_init_script(WATCH)
    await page.goto(url)
    await expect(page.locator("html[data-status=live]")).to_have_count(1)
    return page


async def synced(page: Page) -> None:
    await page.wait_for_function("window.sync.synced", timeout=15_000)


async def row_ids(page: Page) -> list[str]:
    ids: list[str] = await page.eval_on_selector_all(
        "#items > li", "els => els.map(e => e.dataset.id)"
    )
    return ids


async def test_rows_follow_the_other_tab_as_the_same_nodes(browser: Browser, url: str) -> None:
    errors: list[str] = []
    mine = await open_tab(browser, url, errors)
    theirs = await open_tab(browser, url, errors)
    assert await row_ids(mine) == ["a", "b", "c"]
    assert await mine.evaluate("window.removedRows") == 0, "the server's rows were adopted"
    # Remember this tab's row nodes, to check they are the ones shown after each change.
    await mine.evaluate(
        "window.nodes = Object.fromEntries("
        "[...document.querySelectorAll('#items > li')].map(e => [e.dataset.id, e]))"
    )
    same = "ids => ids.every(id => document.querySelector(`[data-id='${id}']`) === nodes[id])"
    items = mine.locator("#items > li")

    await theirs.evaluate("sync.insert('items', 'd', { title: 'D', rank: 1.5 })")
    await expect(items).to_have_text(["A", "D", "B", "C"])
    assert await mine.evaluate(same, ["a", "b", "c"])

    # The user is typing in row c when the other tab moves it to the top.
    await mine.locator("[data-id=c] input").fill("abcd")
    await mine.evaluate("document.querySelector('[data-id=c] input').setSelectionRange(2, 3)")
    await theirs.evaluate("sync.update('items', 'c', { rank: 0 })")
    await expect(items).to_have_text(["C", "A", "D", "B"])
    assert await mine.evaluate(same, ["a", "b", "c"]), "a moved row is the same node"
    focus = await mine.evaluate(
        "(() => { const e = document.activeElement;"
        " return [e.closest('li')?.dataset.id, e.selectionStart, e.selectionEnd]; })()"
    )
    assert focus == ["c", 2, 3], "the moved row's input keeps the focus and the selection"

    await theirs.evaluate("sync.update('items', 'b', { title: 'B!' })")
    await expect(items).to_have_text(["C", "A", "D", "B!"])
    await theirs.evaluate("sync.delete('items', 'a')")
    await expect(items).to_have_text(["C", "D", "B!"])
    assert await mine.evaluate(same, ["b", "c"])
    # A move is a removal and an insertion in the DOM: c's one move, then a's deletion.
    assert await mine.evaluate("window.removedRows") == 2, "only c moved; only a left"
    assert not errors, errors


async def test_the_caret_stays_put_when_the_other_tab_types_earlier(
    browser: Browser, url: str
) -> None:
    errors: list[str] = []
    mine = await open_tab(browser, url, errors)
    theirs = await open_tab(browser, url, errors)
    note = mine.locator("#note")
    await note.focus()
    await note.press("End")
    await mine.keyboard.type("!")  # "hello world!", the caret at its end
    await synced(mine)
    await expect(theirs.locator("#note")).to_have_value("hello world!")
    await mine.evaluate("document.getElementById('note').setSelectionRange(6, 11)")  # "world"

    other = theirs.locator("#note")
    await other.focus()
    await other.press("Home")
    await theirs.keyboard.type("Oh, ")
    await expect(note).to_have_value("Oh, hello world!")
    selected = await mine.evaluate(
        "(() => { const n = document.getElementById('note');"
        " return [document.activeElement === n, n.value.slice(n.selectionStart, n.selectionEnd)];"
        " })()"
    )
    assert selected == [True, "world"], "the selection still holds the same word"

    # The user types on, where the caret is: the text lands where they meant it.
    await note.press("End")
    await mine.keyboard.type(" again")
    await expect(other).to_have_value("Oh, hello world! again")
    assert not errors, errors
