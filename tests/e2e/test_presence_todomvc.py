"""Presence in TodoMVC: each tab says how many tabs show the list, live."""

from __future__ import annotations

from playwright.async_api import BrowserContext, expect

from .test_todomvc import context, open_app, url

__all__ = ["context", "url"]  # the fixtures this module uses


async def test_presence_counts_the_tabs_open_on_the_list(context: BrowserContext, url: str) -> None:
    one = await open_app(context, url)
    await expect(one.locator(".tabs-open")).to_have_text("Open in 1 tab")
    two = await open_app(context, url)
    for page in (one, two):
        await expect(page.locator(".tabs-open")).to_have_text("Open in 2 tabs")
    await two.close()
    await expect(one.locator(".tabs-open")).to_have_text("Open in 1 tab")
