"""A reload of a syncline page revalidates the browser modules instead of downloading
them again: each comes back ``304 Not Modified`` (its ``ETag`` matched)."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import Browser

from syncline.demo.todomvc.app import create_app
from syncline.store.sqlite import SQLiteStore

from ..live import serve
from ..measure_module_revalidation import load_twice


async def test_a_reload_gets_304s_for_every_browser_module(
    browser: Browser, tmp_path: Path
) -> None:
    async with serve(create_app(SQLiteStore(tmp_path / "todomvc.sqlite3"))) as host:
        first, reload = await load_twice(browser, f"http://{host}/")
    assert len(first.modules) >= 10, first.summary()  # client.js and the modules it imports
    assert {status for status, _ in first.modules.values()} == {200}, first.summary()
    assert reload.modules.keys() == first.modules.keys()
    assert {status for status, _ in reload.modules.values()} == {304}, reload.summary()
    module_bytes = sum(size for _, size in reload.modules.values())
    assert module_bytes * 10 < sum(size for _, size in first.modules.values())
