"""Screenshots of the demo for the docs (docs/screenshots/), taken from the real thing:
the board (light and dark), a card being edited, and the conflict dialog."""

from __future__ import annotations

from .conftest import SCREENSHOTS, OpenBoard, Server, make_status_conflict, playwright_missing

try:
    from playwright.async_api import ViewportSize, expect
except ImportError:
    playwright_missing()

BOARD_VIEWPORT: ViewportSize = {"width": 1280, "height": 600}


async def test_screenshots(open_board: OpenBoard, server: Server) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice, bob = await open_board(), await open_board()

    await alice.page.set_viewport_size(BOARD_VIEWPORT)
    await alice.settled()
    await alice.page.screenshot(path=SCREENSHOTS / "board.png")

    dark = await open_board(color_scheme="dark", viewport=BOARD_VIEWPORT)
    await dark.page.screenshot(path=SCREENSHOTS / "board-dark.png")
    await dark.page.close()

    await alice.page.set_viewport_size({"width": 1280, "height": 760})
    editor = await alice.open_editor("card-2")
    await editor.get_by_label("Description").fill(
        "10k clients per node; fan-out p99 under 50 ms.\nRecord the numbers in bench/."
    )
    await editor.get_by_label("Add a label").fill("bench")
    await editor.get_by_label("Add a label").focus()
    await alice.page.screenshot(path=SCREENSHOTS / "card-editing.png")
    await editor.get_by_role("button", name="Cancel").click()

    await bob.page.set_viewport_size(BOARD_VIEWPORT)
    dialog = await make_status_conflict(alice, bob, "card-5", theirs="doing", mine="review")
    await expect(dialog.locator("#conflict-mine")).to_have_text("review")
    await bob.page.screenshot(path=SCREENSHOTS / "conflict-dialog.png")
    await dialog.get_by_role("button", name="Use mine").click()
    await expect(alice.field("card-5", "status")).to_have_text("review")
    assert (await server.card("card-5"))["status"] == "review"
