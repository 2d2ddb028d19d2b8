"""Screenshots of the demo for the docs, taken from the real thing: the board (light and
dark), a card being edited, and the conflict dialog. ``make screenshots`` writes them to
docs/screenshots/; a plain test run writes them to a temporary folder, so running the
tests never changes tracked files."""

from __future__ import annotations

import os
from pathlib import Path

from .conftest import SCREENSHOTS, OpenBoard, Server, make_status_conflict, playwright_missing

try:
    from playwright.async_api import ViewportSize, expect
except ImportError:
    playwright_missing()

BOARD_VIEWPORT: ViewportSize = {"width": 1280, "height": 600}


async def test_screenshots(open_board: OpenBoard, server: Server, tmp_path: Path) -> None:
    shots = SCREENSHOTS if os.environ.get("SYNCLINE_SCREENSHOTS") == "1" else tmp_path
    shots.mkdir(parents=True, exist_ok=True)
    alice, bob = await open_board(), await open_board()

    await alice.page.set_viewport_size(BOARD_VIEWPORT)
    await alice.settled()
    await alice.page.screenshot(path=shots / "board.png")

    dark = await open_board(color_scheme="dark", viewport=BOARD_VIEWPORT)
    await dark.page.screenshot(path=shots / "board-dark.png")
    await dark.page.close()

    await alice.page.set_viewport_size({"width": 1280, "height": 760})
    editor = await alice.open_editor("card-2")
    await editor.get_by_label("Description").fill(
        "10k clients per node; fan-out p99 under 50 ms.\nRecord the numbers in bench/."
    )
    await editor.get_by_label("Add a label").fill("bench")
    await editor.get_by_label("Add a label").focus()
    await alice.page.screenshot(path=shots / "card-editing.png")
    await editor.get_by_role("button", name="Cancel").click()

    await bob.page.set_viewport_size(BOARD_VIEWPORT)
    dialog = await make_status_conflict(alice, bob, "card-5", theirs="doing", mine="review")
    await expect(dialog.locator("#conflict-mine")).to_have_text("review")
    await bob.page.screenshot(path=shots / "conflict-dialog.png")
    await dialog.get_by_role("button", name="Use mine").click()
    await expect(alice.field("card-5", "status")).to_have_text("review")
    assert (await server.card("card-5"))["status"] == "review"
    for name in ("board.png", "board-dark.png", "card-editing.png", "conflict-dialog.png"):
        assert (shots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
