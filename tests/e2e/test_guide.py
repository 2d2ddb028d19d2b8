"""The guide's application, built from the guide's own code blocks, in Chromium.

Every fenced block of ``docs/guide/`` whose title is a file name (```` ```python
title="app.py" ````) is part of that file; the blocks of one file, taken in the order of
the guide's pages in mkdocs.yml, are the file (``guide_files``). The test writes them
into an empty folder, serves ``app:app`` with uvicorn as the guide says, signs in two
visitors in two browser contexts, and checks what the guide promises: edits sync both
ways, rows are inserted and removed, a server-side write reaches both, a manual
conflict is resolved in the guide's dialog, and a new schema shows its reload notice.
The guide's own tests (``test_app.py``) and its plain Starlette variant run too, so the
guide cannot drift from the library.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from .conftest import playwright_missing

try:
    from playwright.async_api import Browser, Locator, Page, expect
except ImportError:
    playwright_missing()

ROOT = Path(__file__).resolve().parents[2]
BLOCK = re.compile(r'^```\w+ title="([^"]+)"\n(.*?)^```$', re.M | re.S)
WAIT = 20_000  # ms: generous, for a loaded machine
EXPECTED_FILES = {
    "models.py",
    "app.py",
    "templates/index.html",
    "static/app.js",
    "conftest.py",
    "test_app.py",
    "starlette_app.py",
}


def guide_pages() -> list[Path]:
    """The guide's pages in the order of the site's navigation."""
    nav = re.findall(r"guide/[\w-]+\.md", (ROOT / "mkdocs.yml").read_text())
    assert nav, "mkdocs.yml lists no guide pages"
    return [ROOT / "docs" / page for page in nav]


def guide_files() -> dict[str, str]:
    """Each file the guide writes: its titled blocks, in order, joined by blank lines."""
    blocks: dict[str, list[str]] = {}
    for page in guide_pages():
        for name, body in BLOCK.findall(page.read_text()):
            blocks.setdefault(name, []).append(body)
    return {
        name: ("\n\n" if name.endswith(".py") else "\n").join(parts)
        for name, parts in blocks.items()
    }


def write_guide_app(folder: Path) -> None:
    for name, text in guide_files().items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def app_env(folder: Path) -> dict[str, str]:
    return {
        **os.environ,
        "SYNCLINE_DB": str(folder / "shopping.sqlite3"),
        "APP_SECRET": "guide-test-secret",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


class GuideServer:
    """``uvicorn app:app`` run from the guide's folder, as the guide says, on one port."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.address = ["--host", "127.0.0.1", "--port", str(self.port)]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.folder / "uvicorn.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "app:app", *self.address],
            cwd=self.folder,
            env=app_env(self.folder),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"uvicorn app:app exited:\n{(self.folder / 'uvicorn.log').read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/login", timeout=2) as answer:
                    if answer.status == 200:
                        return
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail("the guide's app did not answer within 60 s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


@pytest.fixture
def guide_server(tmp_path: Path) -> Iterator[GuideServer]:
    """The guide's app, written from its blocks into an empty folder, and serving."""
    write_guide_app(tmp_path)
    server = GuideServer(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@dataclass
class Visitor:
    """One signed-in browser context on the guide's page."""

    page: Page
    errors: list[str] = field(default_factory=list)

    def row(self, item_id: str) -> Locator:
        return self.page.locator(f'#items li[data-id="{item_id}"]')

    def named(self, name: str) -> Locator:
        return self.page.locator("#items li").filter(has=self.page.locator(".name", has_text=name))

    async def status(self, state: str) -> None:
        await expect(self.page.locator("#status")).to_have_attribute(
            "data-state", state, timeout=WAIT
        )

    async def settled(self) -> None:
        await expect(self.page.locator("#pending")).to_have_attribute(
            "data-count", "0", timeout=WAIT
        )


@pytest.fixture
async def visitors(browser: Browser, guide_server: GuideServer) -> AsyncIterator[list[Visitor]]:
    """Ann and Bob, each in a browser context of their own, signed in and live."""
    contexts = [await browser.new_context(base_url=guide_server.url) for _ in range(2)]
    out: list[Visitor] = []
    for context, name in zip(contexts, ["ann", "bob"], strict=True):
        page = await context.new_page()
        visitor = Visitor(page)
        page.on("pageerror", lambda exc, v=visitor: v.errors.append(str(exc)))
        await page.goto("/")  # not signed in: the login form
        await page.get_by_label("Your name").fill(name)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_text(f"Signed in as {name}")).to_be_visible(timeout=WAIT)
        await visitor.status("live")
        out.append(visitor)
    yield out
    errors = [e for v in out for e in v.errors]
    for context in contexts:
        await context.close()
    assert not errors, f"uncaught JavaScript errors: {errors}"


async def test_the_guide_app_syncs_two_windows_both_ways(visitors: list[Visitor]) -> None:
    ann, bob = visitors
    coffee = bob.row("coffee")
    await expect(coffee.locator(".name")).to_have_text("Coffee")  # server-rendered

    await ann.page.get_by_label("New item").fill("Milk")
    await ann.page.get_by_role("button", name="Add").click()
    await expect(bob.named("Milk")).to_have_count(1, timeout=WAIT)  # inserted over there
    milk_id = await bob.named("Milk").get_attribute("data-id")
    assert milk_id
    milk_at_ann, milk_at_bob = ann.row(milk_id), bob.row(milk_id)
    await expect(bob.page.locator("#items li")).to_have_count(2)  # after Coffee, in order
    await expect(bob.page.locator("#items li").nth(1)).to_have_attribute("data-id", milk_id)

    await milk_at_bob.get_by_role("button", name="One more").click()  # a counter
    await expect(milk_at_ann.locator(".qty")).to_have_text("2", timeout=WAIT)

    await milk_at_ann.get_by_label("Note").fill("the oat one")  # bindInput, a Text() field
    await expect(milk_at_bob.get_by_label("Note")).to_have_value("the oat one", timeout=WAIT)

    await coffee.get_by_role("button", name="Remove").click()  # removed over there
    await expect(ann.row("coffee")).to_have_count(0, timeout=WAIT)

    # A write by the server (the guide's JSON endpoint) reaches both pages.
    answer = await ann.page.request.post(f"/api/items/{milk_id}/more")
    assert answer.ok, await answer.text()
    assert await answer.json() == {"qty": 3}
    for visitor in (ann, bob):
        await expect(visitor.row(milk_id).locator(".qty")).to_have_text("3", timeout=WAIT)
    listed = await (await bob.page.request.get("/api/items")).json()
    assert [(i["name"], i["qty"], i["note"]) for i in listed] == [("Milk", 3, "the oat one")]


async def test_a_manual_conflict_is_resolved_in_the_guides_dialog(
    visitors: list[Visitor],
) -> None:
    ann, bob = visitors
    for visitor in (ann, bob):
        await visitor.page.context.set_offline(True)
        await visitor.status("offline")
    await ann.row("coffee").get_by_label("Where").select_option("market")
    await bob.row("coffee").get_by_label("Where").select_option("bakery")

    await ann.page.context.set_offline(False)  # Ann's change reaches the server first
    await ann.status("live")
    await ann.settled()
    await bob.page.context.set_offline(False)  # Bob's meets it: he decides
    dialog = bob.page.locator("#conflict")
    await expect(dialog).to_be_visible(timeout=WAIT)
    await expect(dialog.locator(".what")).to_have_text("Coffee")
    await expect(dialog.locator(".theirs")).to_have_text("market")
    await expect(dialog.locator(".mine")).to_have_text("bakery")
    await expect(bob.row("coffee").get_by_label("Where")).to_have_value("market")

    await dialog.get_by_role("button", name="Keep mine").click()
    await expect(dialog).to_be_hidden()
    await bob.settled()
    for visitor in (ann, bob):
        where = visitor.row("coffee").get_by_label("Where")
        await expect(where).to_have_value("bakery", timeout=WAIT)
    listed = await (await ann.page.request.get("/api/items")).json()
    assert [(i["id"], i["shop"]) for i in listed] == [("coffee", "bakery")]


async def test_a_new_schema_shows_the_guides_reload_notice(
    visitors: list[Visitor], guide_server: GuideServer
) -> None:
    """Deploying a schema the open pages cannot work with (its revision bumped): the
    guide's own ``reload`` listener shows its notice instead of reloading the page."""
    ann, _ = visitors
    await ann.page.evaluate("window.loadedBefore = true")
    models = guide_server.folder / "models.py"
    declared = 'schema = Schema([Collection("items", Item)])'
    assert declared in models.read_text()
    bumped = 'schema = Schema([Collection("items", Item)], revision=1)'
    models.write_text(models.read_text().replace(declared, bumped))
    guide_server.stop()
    await ann.status("offline")
    guide_server.start()  # the new schema: the page's hello is answered with reload
    await expect(ann.page.locator("#reload")).to_be_visible(timeout=WAIT)
    assert await ann.page.evaluate("window.loadedBefore") is True  # not reloaded by itself
    await ann.page.locator("#reload").get_by_role("button", name="Reload").click()
    await expect(ann.page.locator("#reload")).to_be_hidden(timeout=WAIT)
    await ann.status("live")
    assert await ann.page.evaluate("window.loadedBefore") is None  # a new page


def run_in_guide_folder(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=folder,
        env=app_env(folder),
        capture_output=True,
        text=True,
        timeout=110,
    )


def test_the_guide_writes_every_file_it_names(tmp_path: Path) -> None:
    files = guide_files()
    assert set(files) == EXPECTED_FILES
    write_guide_app(tmp_path)
    for name in files:
        if name.endswith(".py"):
            compile((tmp_path / name).read_text(), name, "exec")


def test_the_guides_own_tests_pass(tmp_path: Path) -> None:
    write_guide_app(tmp_path)
    done = run_in_guide_folder(
        tmp_path, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:asyncio"
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


STARLETTE_CHECK = """
from starlette.testclient import TestClient
from models import schema
from starlette_app import app

with TestClient(app) as client:
    assert client.get("/", follow_redirects=False).headers["location"] == "/login"
    page = client.post("/login", data={"name": "ann"})
    assert '<span class="name">Coffee</span>' in page.text, page.text
    with client.websocket_connect("/sync") as ws:
        ws.send_json({"t": "hello", "v": 1, "client": "check-tab-1", "schema": schema.hash})
        assert ws.receive_json()["t"] == "welcome"
print("starlette app ok")
"""


def test_the_plain_starlette_variant_serves_the_same_page(tmp_path: Path) -> None:
    write_guide_app(tmp_path)
    (tmp_path / "check.py").write_text(STARLETTE_CHECK)
    done = run_in_guide_folder(tmp_path, "-W", "ignore::DeprecationWarning", "check.py")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "starlette app ok" in done.stdout
