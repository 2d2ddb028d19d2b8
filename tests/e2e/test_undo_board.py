"""Undo and redo on the demo board in a real browser: two visitors edit a card, one
undoes, both show the documented result; a partial undo says so; the undo stack
survives a reload of the tab (IndexedDB)."""

from __future__ import annotations

from .conftest import OpenBoard, Server, playwright_missing

try:
    from playwright.async_api import expect
except ImportError:
    playwright_missing()


async def test_undo_restores_my_title_and_keeps_the_other_visitors_typing(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()
    before = await server.card("card-2")
    undo = alice.page.get_by_role("button", name="Undo", exact=True)
    await expect(undo).to_be_disabled()

    await alice.edit_text(
        "card-2", title="Alice's title", description=before["description"] + " (alice)"
    )
    await alice.settled()
    await expect(bob.field("card-2", "description")).to_have_text(
        before["description"] + " (alice)"
    )
    await bob.edit_text("card-2", description="(bob) " + before["description"] + " (alice)")
    await bob.settled()
    await expect(alice.field("card-2", "description")).to_contain_text("(bob)")

    await undo.click()  # the title comes back; Alice's words go, Bob's stay
    await alice.settled()
    for board in (alice, bob):
        await expect(board.field("card-2", "title")).to_have_text(before["title"])
        await expect(board.field("card-2", "description")).to_have_text(
            "(bob) " + before["description"]
        )
    await expect(alice.page.locator(".toast")).to_have_count(0)
    after = await server.card("card-2")
    assert (after["title"], after["description"]) == (
        before["title"],
        "(bob) " + before["description"],
    )

    await alice.page.keyboard.press("Control+Shift+Z")  # redo
    await alice.settled()
    await expect(bob.field("card-2", "title")).to_have_text("Alice's title")
    await expect(bob.field("card-2", "description")).to_have_text(
        "(bob) " + before["description"] + " (alice)"
    )


async def test_an_undo_of_a_title_someone_changed_since_is_partial_and_told(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()
    await alice.edit_text("card-1", title="Alice's title")
    await alice.settled()
    await expect(bob.field("card-1", "title")).to_have_text("Alice's title")
    await bob.edit_text("card-1", title="Bob's title")
    await bob.settled()
    await expect(alice.field("card-1", "title")).to_have_text("Bob's title")

    await alice.page.keyboard.press("Control+Z")
    await expect(alice.page.get_by_role("status").locator(".toast")).to_contain_text("title")
    for board in (alice, bob):
        await expect(board.field("card-1", "title")).to_have_text("Bob's title")
    assert (await server.card("card-1"))["title"] == "Bob's title"


async def test_the_undo_stack_survives_a_reload_of_the_tab(
    open_board: OpenBoard, server: Server
) -> None:
    alice = await open_board()
    before = await server.card("card-3")
    await alice.edit_text("card-3", title="Before the reload")
    await alice.settled()
    await alice.page.reload()
    await alice.live()
    undo = alice.page.get_by_role("button", name="Undo", exact=True)
    await expect(undo).to_be_enabled()
    await undo.click()
    await alice.settled()
    await expect(alice.field("card-3", "title")).to_have_text(before["title"])
    assert (await server.card("card-3"))["title"] == before["title"]
