"""The inspector page in Chromium during a scripted workload: it shows the connection
the test opened (by its client id) and the reject the test caused, as they happen."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from starlette.requests import Request

from ..live import RawClient
from ..schemas import BOARD
from ..test_server import running
from .conftest import playwright_missing

try:
    from playwright.async_api import Browser
    from playwright.async_api import expect as _expect
except ImportError:
    playwright_missing()

COOKIE = "inspector-operator"


def operator(request: Request) -> bool:
    """The application's own check: here, a session cookie only operators hold."""
    return request.cookies.get("session") == COOKIE


async def writes(client: RawClient, stop: asyncio.Event) -> int:
    """Votes on c1 until told to stop (at most 2000): the workload the page watches."""
    vote = {"op": "incr", "c": "cards", "id": "c1", "field": "votes", "by": 1}
    mid = 0
    while not stop.is_set() and mid < 2000:
        mid += 1
        assert (await client.mutate([vote], mid))["t"] == "ack"
        await asyncio.sleep(0.02)
    return mid


async def test_the_page_shows_a_live_connection_and_a_reject(
    tmp_path: Path, browser: Browser
) -> None:
    async with running(tmp_path, inspect=operator) as (host, _engine, _sync):
        async with contextlib.AsyncExitStack() as stack:
            watched = await stack.enter_async_context(
                RawClient.connect(host, BOARD, client_id="watched-tab-01")
            )
            await watched.subscribe({"mine": {"c": "cards", "where": {"list_id": "l1"}}})
            writer = await stack.enter_async_context(
                RawClient.connect(host, BOARD, client_id="busy-writer-01")
            )
            stop = asyncio.Event()
            workload = asyncio.create_task(writes(writer, stop))

            context = await browser.new_context()
            await context.add_cookies(
                [{"name": "session", "value": COOKIE, "url": f"http://{host}"}]
            )
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            try:
                await page.goto(f"http://{host}/sync/inspect")
                await _expect(page.locator("#status")).to_have_attribute("data-state", "live")
                row = page.locator('#connections tr[data-client-id="watched-tab-01"]')
                await _expect(row).to_have_count(1)
                await _expect(row).to_contain_text("cards")
                await _expect(page.locator("#conn-count")).to_have_text("(2)")

                missing = {"op": "update", "c": "cards", "id": "no-such-card"}
                reject = await watched.mutate(
                    [{**missing, "set": {"title": "x"}, "base": {"title": 1}}], 1
                )
                assert reject["t"] == "reject"
                event = page.locator('#events tr[data-kind="reject"]')
                await _expect(event).to_have_count(1)
                await _expect(event).to_contain_text("watched-tab-01")
                await _expect(event).to_contain_text(reject["code"])
                await _expect(event).to_contain_text("no-such-card")
                # The workload's changes arrive too, newest first, by the writer's id.
                await _expect(page.locator("#changes tbody tr").first).to_contain_text(
                    "busy-writer-01"
                )
                await page.screenshot(path=str(tmp_path / "inspector.png"), full_page=True)
            finally:
                stop.set()
                await context.close()
            assert await workload > 0
            assert not errors, errors


async def test_the_page_is_refused_without_the_cookie(tmp_path: Path, browser: Browser) -> None:
    async with running(tmp_path, inspect=operator) as (host, _engine, _sync):
        context = await browser.new_context()
        try:
            page = await context.new_page()
            response = await page.goto(f"http://{host}/sync/inspect")
            assert response is not None and response.status == 403
            body: Any = await page.locator("body").inner_text()
            assert "not allowed to inspect" in body and "c1" not in body
        finally:
            await context.close()
