"""The smallest live example (syncline/examples/tiny/) in Chromium: two visitors, one
list, every change live both ways; ``syncline demo tiny`` serves it; and it stays small
(the issue's bound: about 80 lines of Python, template and JavaScript together)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from syncline.examples.tiny import app as tiny

from ..live import serve
from .conftest import playwright_missing

try:
    from playwright.async_api import Browser, Page, expect
except ImportError:
    playwright_missing()

WAIT = 20_000  # ms
EXAMPLE = Path(tiny.__file__).parent
FILES = ["app.py", "templates/index.html", "static/app.js"]


@pytest.fixture
async def tiny_url(tmp_path: Path) -> AsyncIterator[str]:
    async with serve(tiny.tiny_app(tmp_path / "tiny.sqlite3")) as host:
        yield f"http://{host}"


async def open_page(browser: Browser, url: str, errors: list[str]) -> Page:
    page = await (await browser.new_context()).new_page()
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(url)
    await expect(page.locator("#status")).to_have_attribute("data-state", "live", timeout=WAIT)
    return page


async def test_two_visitors_share_one_live_list(browser: Browser, tiny_url: str) -> None:
    errors: list[str] = []
    first = await open_page(browser, tiny_url, errors)
    second = await open_page(browser, tiny_url, errors)

    for page, text in ((first, "Bread"), (second, "Jam")):
        await page.get_by_label("New item").fill(text)
        await page.get_by_role("button", name="Add").click()
    for page in (first, second):  # inserted over there, in the order they were added
        await expect(page.locator("#items li [data-sl-field=text]")).to_have_text(
            ["Bread", "Jam"], timeout=WAIT
        )

    bread_at_second = second.locator("#items li").filter(has_text="Bread")
    await bread_at_second.get_by_role("button", name="Vote").click()
    await bread_at_second.get_by_role("button", name="Vote").click()
    bread_at_first = first.locator("#items li").filter(has_text="Bread")
    await expect(bread_at_first.locator("[data-sl-field=votes]")).to_have_text("2", timeout=WAIT)

    await (
        first.locator("#items li")
        .filter(has_text="Jam")
        .get_by_role("button", name="Remove")
        .click()
    )
    await expect(second.locator("#items li")).to_have_count(1, timeout=WAIT)

    reloaded = await open_page(browser, tiny_url, errors)  # the server renders what it holds
    await expect(reloaded.locator("#items li [data-sl-field=text]")).to_have_text(["Bread"])
    await expect(reloaded.locator("#items [data-sl-field=votes]")).to_have_text(["2"])
    for page in (first, second, reloaded):
        await page.context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def test_syncline_demo_tiny_serves_it(tmp_path: Path) -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncline", "demo", "tiny", "--port", str(port)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.communicate()[0].decode()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                    page = answer.read().decode()
                    break
            except OSError:
                assert time.monotonic() < deadline, "syncline demo tiny did not answer in 60 s"
                time.sleep(0.1)
        assert "<h1>A live list</h1>" in page
        assert 'id="syncline-state"' in page
        assert (tmp_path / "syncline-tiny.sqlite3").exists()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()


def test_the_example_stays_about_80_lines() -> None:
    lines = sum(len((EXAMPLE / name).read_text().splitlines()) for name in FILES)
    assert lines <= 90, f"the tiny example has grown to {lines} lines"
