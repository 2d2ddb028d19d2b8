"""TodoMVC on syncline in real Chromium: the TodoMVC specification's behaviours, and
syncline's promises on top (tabs in sync, server-rendered without JavaScript, one list
per browser session)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Route

from syncline.demo.todomvc.app import COOKIE, create_app
from syncline.store.sqlite import SQLiteStore

from ..live import serve


@pytest.fixture
async def url(tmp_path: Path) -> AsyncIterator[str]:
    async with serve(create_app(SQLiteStore(tmp_path / "todomvc.sqlite3"))) as host:
        yield f"http://{host}/"


@pytest.fixture
async def context(browser: Browser) -> AsyncIterator[BrowserContext]:
    ctx = await browser.new_context()
    yield ctx
    await ctx.close()


async def open_app(context: BrowserContext, url: str) -> Page:
    page = await context.new_page()
    page.on("pageerror", lambda exc: pytest.fail(f"page error: {exc}"))
    await page.goto(url)
    await expect(page.locator("html[data-syncline-ready]")).to_have_count(1)
    return page


async def add(page: Page, *titles: str) -> None:
    for title in titles:
        await page.locator(".new-todo").fill(title)
        await page.locator(".new-todo").press("Enter")


def items(page: Page) -> object:
    return expect(page.locator(".todo-list li label"))


async def test_adding_trims_clears_the_input_and_counts_with_plurals(
    context: BrowserContext, url: str
) -> None:
    page = await open_app(context, url)
    await expect(page.locator(".main")).to_be_hidden()
    await expect(page.locator(".footer")).to_be_hidden()
    await add(page, "  buy milk  ")
    await expect(page.locator(".todo-list li label")).to_have_text(["buy milk"])
    await expect(page.locator(".new-todo")).to_have_value("")
    await add(page, "   ")  # nothing but spaces: not a todo
    await expect(page.locator(".todo-list li label")).to_have_text(["buy milk"])
    await expect(page.locator(".todo-count")).to_have_text("1 item left")
    await add(page, "walk the dog")
    await expect(page.locator(".todo-count")).to_have_text("2 items left")
    await expect(page.locator(".todo-count strong")).to_have_text("2")


async def test_editing_with_enter_blur_escape_and_removal_on_empty(
    context: BrowserContext, url: str
) -> None:
    page = await open_app(context, url)
    await add(page, "one", "two", "three")
    first = page.locator(".todo-list li").nth(0)
    await first.locator("label").dblclick()
    await expect(first).to_have_class("editing")
    await first.locator(".edit").fill("  one, edited  ")
    await first.locator(".edit").press("Enter")
    await expect(page.locator(".todo-list li label")).to_have_text(["one, edited", "two", "three"])
    second = page.locator(".todo-list li").nth(1)
    await second.locator("label").dblclick()
    await second.locator(".edit").fill("two, blurred")
    await page.locator(".new-todo").focus()  # blur saves
    await expect(page.locator(".todo-list li label")).to_have_text(
        ["one, edited", "two, blurred", "three"]
    )
    third = page.locator(".todo-list li").nth(2)
    await third.locator("label").dblclick()
    await third.locator(".edit").fill("never saved")
    await third.locator(".edit").press("Escape")
    await expect(third).not_to_have_class("editing")
    await expect(page.locator(".todo-list li label")).to_have_text(
        ["one, edited", "two, blurred", "three"]
    )
    await third.locator("label").dblclick()
    await third.locator(".edit").fill("   ")
    await third.locator(".edit").press("Enter")
    await expect(page.locator(".todo-list li label")).to_have_text(["one, edited", "two, blurred"])


async def test_toggle_all_and_clear_completed(context: BrowserContext, url: str) -> None:
    page = await open_app(context, url)
    await add(page, "a", "b", "c")
    await expect(page.locator(".clear-completed")).to_be_hidden()
    await page.locator(".todo-list li").nth(1).locator(".toggle").check()
    await expect(page.locator(".todo-list li").nth(1)).to_have_class("completed")
    await expect(page.locator(".todo-count")).to_have_text("2 items left")
    await expect(page.locator(".clear-completed")).to_be_visible()
    await page.locator("label[for=toggle-all]").click()
    await expect(page.locator(".todo-list li.completed")).to_have_count(3)
    await expect(page.locator(".toggle-all")).to_be_checked()
    await expect(page.locator(".todo-count")).to_have_text("0 items left")
    await page.locator("label[for=toggle-all]").click()
    await expect(page.locator(".todo-list li.completed")).to_have_count(0)
    await page.locator(".todo-list li").nth(0).locator(".toggle").check()
    await page.locator(".clear-completed").click()
    await expect(page.locator(".todo-list li label")).to_have_text(["b", "c"])
    await expect(page.locator(".clear-completed")).to_be_hidden()


async def test_routing_filters_and_the_back_button(context: BrowserContext, url: str) -> None:
    page = await open_app(context, url)
    await add(page, "active one", "done one")
    await page.locator(".todo-list li").nth(1).locator(".toggle").check()
    await page.locator(".filters a[href='#/active']").click()
    await expect(page.locator(".todo-list li label")).to_have_text(["active one"])
    await expect(page.locator(".filters a[href='#/active']")).to_have_class("selected")
    await page.locator(".filters a[href='#/completed']").click()
    await expect(page.locator(".todo-list li label")).to_have_text(["done one"])
    await page.go_back()
    await expect(page.locator(".todo-list li label")).to_have_text(["active one"])
    await page.go_back()
    await expect(page.locator(".todo-list li label")).to_have_text(["active one", "done one"])
    await expect(page.locator(".filters a[href='#/']")).to_have_class("selected")


async def test_the_list_persists_across_a_reload(context: BrowserContext, url: str) -> None:
    page = await open_app(context, url)
    await add(page, "persist me")
    await page.locator(".todo-list li").nth(0).locator(".toggle").check()
    await expect(page.locator(".todo-count")).to_have_text("0 items left")
    page2 = await open_app(context, url)  # a reload in another tab of the same session
    await expect(page2.locator(".todo-list li.completed label")).to_have_text(["persist me"])
    await page.reload()
    await expect(page.locator(".todo-list li.completed label")).to_have_text(["persist me"])


async def test_a_server_rendered_list_hydrates_goes_live_and_stays_editable(
    context: BrowserContext, url: str
) -> None:
    page = await open_app(context, url)
    await add(page, "one", "two", "three")
    await page.locator(".todo-list li").nth(1).locator(".toggle").check()
    await page.reload()  # the list is the server's now; hydration leaves it as it is
    await expect(page.locator("html[data-sync-state='live']")).to_have_count(1)
    await expect(page.locator(".todo-list li label")).to_have_text(["one", "two", "three"])
    await page.goto(f"{url}#/active")
    await expect(page.locator(".todo-list li label")).to_have_text(["one", "three"])
    await page.goto(f"{url}#/")
    await expect(page.locator(".todo-list li label")).to_have_text(["one", "two", "three"])
    await expect(page.locator(".todo-list li.completed label")).to_have_text(["two"])
    third = page.locator(".todo-list li").nth(2)
    await third.locator("label").dblclick()
    await third.locator(".edit").fill("three, edited")
    await third.locator(".edit").press("Enter")
    await expect(page.locator(".todo-list li label")).to_have_text(["one", "two", "three, edited"])
    await expect(page.locator(".todo-count")).to_have_text("2 items left")


async def test_two_tabs_of_one_visitor_stay_in_sync_live(context: BrowserContext, url: str) -> None:
    one = await open_app(context, url)
    two = await open_app(context, url)
    await add(one, "from tab one")
    await expect(two.locator(".todo-list li label")).to_have_text(["from tab one"], timeout=2000)
    await two.locator(".todo-list li").nth(0).locator(".toggle").check()
    await expect(one.locator(".todo-list li.completed")).to_have_count(1, timeout=2000)


async def test_without_javascript_the_same_list_is_server_rendered(
    browser: Browser, context: BrowserContext, url: str
) -> None:
    page = await open_app(context, url)
    await add(page, "first", "second")
    await page.locator(".todo-list li").nth(0).locator(".toggle").check()
    await expect(page.locator(".todo-count")).to_have_text("1 item left")
    state = await context.storage_state()
    static = await browser.new_context(java_script_enabled=False, storage_state=state)
    try:
        plain = await static.new_page()
        await plain.goto(url)
        await expect(plain.locator(".todo-list li label")).to_have_text(["first", "second"])
        await expect(plain.locator(".todo-list li.completed label")).to_have_text(["first"])
        await expect(plain.locator(".todo-count")).to_have_text("1 item left")
        await expect(plain.locator(".new-todo")).to_be_hidden()  # no dead controls
    finally:
        await static.close()


async def test_a_second_visitor_never_sees_the_first_ones_todos(
    browser: Browser, context: BrowserContext, url: str
) -> None:
    page = await open_app(context, url)
    await add(page, "private")
    await expect(page.locator(".todo-list li label")).to_have_text(["private"])
    other = await browser.new_context()
    try:
        stranger = await open_app(other, url)
        await add(stranger, "mine")
        await expect(stranger.locator(".todo-list li label")).to_have_text(["mine"])
        assert "private" not in await stranger.content()
        await expect(page.locator(".todo-list li label")).to_have_text(["private"])
    finally:
        await other.close()


PLANTED = "a" * 32  # the attacker's chosen session id (any 32 alphanumerics, once)


def planting_page(value: str) -> Starlette:
    """The attacker's site, on another port of the same host: cookies do not tell ports
    apart, so its script can set the TodoMVC session cookie for the host."""

    async def page(request: Request) -> HTMLResponse:
        return HTMLResponse(
            f"<!doctype html><title>cats</title><script>document.cookie = "
            f"'{COOKIE}={value}; path=/; max-age=86400'; document.title = 'planted';</script>"
        )

    return Starlette(routes=[Route("/", page)])


async def test_a_session_planted_from_another_port_is_not_honoured(
    browser: Browser, tmp_path: Path
) -> None:
    """The attacker plants a session id in the victim's browser from another port and
    keeps a list under it; the victim gets a fresh session of their own, and the
    attacker's id reads nothing of what the victim writes."""
    app = create_app(SQLiteStore(tmp_path / "todomvc.sqlite3"))
    async with (
        serve(app) as host,
        serve(planting_page(PLANTED)) as attacker_host,
    ):
        url = f"http://{host}/"
        attacker = await browser.new_context()
        victim = await browser.new_context()
        try:
            await attacker.add_cookies([{"name": COOKIE, "value": PLANTED, "url": url}])
            mallory = await open_app(attacker, url)
            await add(mallory, "attacker's bait")
            await expect(mallory.locator(".todo-list li label")).to_have_text(["attacker's bait"])

            lure = await victim.new_page()
            await lure.goto(f"http://{attacker_host}/")
            await expect(lure).to_have_title("planted")
            planted = [c["value"] for c in await victim.cookies(url) if c["name"] == COOKIE]
            assert planted == [PLANTED], "the attacker's page should plant the cookie"

            page = await open_app(victim, url)
            await expect(page.locator(".main")).to_be_hidden()  # a fresh, empty list
            await add(page, "victim's secret")
            await expect(page.locator(".todo-list li label")).to_have_text(["victim's secret"])
            issued = [c["value"] for c in await victim.cookies(url) if c["name"] == COOKIE]
            assert issued and issued[0] != PLANTED, "the server re-issued the planted id"

            # The attacker, still holding the planted id, sees nothing of it.
            spy = await browser.new_context()
            try:
                await spy.add_cookies([{"name": COOKIE, "value": PLANTED, "url": url}])
                peek = await open_app(spy, url)
                await expect(peek.locator("html[data-sync-state='live']")).to_have_count(1)
                assert "victim's secret" not in await peek.content()
            finally:
                await spy.close()
            engine = app.state.engine
            async with engine.store.read() as tx:
                entries = await tx.log(0, await tx.head())
            owners = {e.after["session"] for e in entries if e.after is not None}
            assert PLANTED not in owners, "a todo was stored under the planted id"
        finally:
            await attacker.close()
            await victim.close()
