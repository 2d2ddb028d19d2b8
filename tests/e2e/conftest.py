"""Browser tests: the demo board on a real server, driven in Debian's Chromium.

The server is the demo app on a SQLite file in ``tmp_path``, run in this process by
uvicorn (``tests/live.py``), so a test reads the server's data through its engine while
the browser talks to it over real HTTP and WebSocket.

Playwright's own browser download does not work here: the tests drive
``/usr/bin/chromium``. Without it they skip, except under ``CI=true``, where a missing
browser fails the run (nothing may skip in CI).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import pytest

from syncline import Engine, Query
from syncline.demo.app import PRINCIPAL, app_for

from ..live import serve

try:
    from playwright.async_api import Browser, BrowserContext, Locator, Page, async_playwright
    from playwright.async_api import expect as _expect
except ImportError:  # the test modules call playwright_missing()
    pass

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _unavailable(reason: str) -> NoReturn:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; under CI=true the browser tests must run, not skip", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def playwright_missing() -> NoReturn:
    """For a test module that cannot import playwright: skip it, or fail under CI=true."""
    _unavailable("the playwright package is not installed (pip install playwright)")


@dataclass
class Server:
    """The demo app, live: its base URL and its engine."""

    url: str
    engine: Engine

    async def cards(self) -> dict[str, dict[str, Any]]:
        """Every card as the server holds it now: ``{id: {"id": id, **fields}}``."""
        query = Query.parse({"c": "cards"}, self.engine.schema)
        snap = await self.engine.snapshot(PRINCIPAL, {"cards": query})
        return {r["id"]: {"id": r["id"], **r["data"]} for r in snap.results["cards"]}

    async def card(self, card_id: str) -> dict[str, Any]:
        cards = await self.cards()
        assert card_id in cards, f"the server has no card {card_id!r}"
        return cards[card_id]

    async def writes(self, card_id: str) -> list[tuple[str | None, int | None]]:
        """Who changed a card, in commit order: (client id, mutation id) per change."""
        async with self.engine.store.read() as tx:
            entries = await tx.log(0, await tx.head())
        return [(e.client_id, e.mutation_id) for e in entries if e.id == card_id]


@dataclass
class Board:
    """One browser page showing the board, with the few gestures the tests need."""

    page: Page
    errors: list[str] = field(default_factory=list)

    @property
    def context(self) -> BrowserContext:
        return self.page.context

    def card(self, card_id: str) -> Locator:
        return self.page.locator(f'[data-sl-id="cards:{card_id}"]')

    def field(self, card_id: str, name: str) -> Locator:
        return self.card(card_id).locator(f'[data-sl-field="{name}"]')

    def labels(self, card_id: str) -> Locator:
        return self.field(card_id, "labels").locator(".label-text")

    async def live(self) -> None:
        """Wait until the client is connected and subscribed."""
        await _expect(self.page.locator("#sync-status")).to_have_attribute("data-state", "live")

    async def offline(self) -> None:
        await _expect(self.page.locator("#sync-status")).to_have_attribute("data-state", "offline")

    async def settled(self) -> None:
        """Wait until no change of this page is pending."""
        await _expect(self.page.locator("#sync-pending")).to_have_attribute("data-count", "0")

    async def vote(self, card_id: str) -> None:
        await self.card(card_id).get_by_role("button", name="Vote for this card").click()

    async def open_editor(self, card_id: str) -> Locator:
        await self.card(card_id).get_by_role("button", name="Edit").click()
        editor = self.card(card_id).locator("form.card-editor")
        await _expect(editor).to_be_visible()
        return editor

    async def edit_text(
        self, card_id: str, *, title: str | None = None, description: str | None = None
    ) -> None:
        editor = await self.open_editor(card_id)
        if title is not None:
            await editor.get_by_label("Title").fill(title)
        if description is not None:
            await editor.get_by_label("Description").fill(description)
        await editor.get_by_role("button", name="Save").click()
        await _expect(editor).to_have_count(0)

    async def set_status(self, card_id: str, status: str) -> None:
        editor = await self.open_editor(card_id)
        await editor.get_by_label("Status").select_option(status)
        await editor.get_by_role("button", name="Cancel").click()

    async def add_label(self, card_id: str, label: str) -> None:
        editor = await self.open_editor(card_id)
        await editor.get_by_label("Add a label").fill(label)
        await editor.get_by_role("button", name="Add", exact=True).click()
        await editor.get_by_role("button", name="Cancel").click()


async def make_status_conflict(
    first: Board, second: Board, card_id: str, theirs: str, mine: str
) -> Locator:
    """Both pages set ``card_id``'s status while disconnected; ``first`` reconnects and
    wins; ``second`` reconnects and must decide. Returns ``second``'s dialog."""
    for board in (first, second):
        await board.context.set_offline(True)
        await board.offline()
    await first.set_status(card_id, theirs)
    await second.set_status(card_id, mine)
    await first.context.set_offline(False)
    await first.live()
    await first.settled()
    await second.context.set_offline(False)
    dialog = second.page.get_by_role("dialog", name="Status conflict")
    await _expect(dialog).to_be_visible()
    return dialog


OpenBoard = Callable[..., Awaitable[Board]]


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[Server]:
    app = app_for(tmp_path / "board.sqlite3")
    async with serve(app) as host:
        yield Server(f"http://{host}", app.state.engine)


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not CHROMIUM.exists():
        _unavailable(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@pytest.fixture
async def open_board(browser: Browser, server: Server) -> AsyncIterator[OpenBoard]:
    """``await open_board()``: a new browser context (a separate visitor) showing the
    board; ``open_board(context=c)`` opens another page in an existing context;
    ``live=False`` returns before the client is connected. Uncaught JavaScript errors
    on any of these pages fail the test."""
    boards: list[Board] = []

    async def open_(
        *,
        context: BrowserContext | None = None,
        live: bool = True,
        path: str = "/",
        **context_options: Any,
    ) -> Board:
        if context is None:
            options = {
                "viewport": {"width": 1280, "height": 800},
                "color_scheme": "light",
                **context_options,
            }
            context = await browser.new_context(**options)
        page = await context.new_page()
        board = Board(page)
        page.on("pageerror", lambda exc: board.errors.append(str(exc)))
        boards.append(board)
        await page.goto(server.url + path)
        if live and context_options.get("java_script_enabled", True):
            await board.live()
        return board

    yield open_
    errors = [e for b in boards for e in b.errors]
    for context in {b.context for b in boards}:
        await context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"
