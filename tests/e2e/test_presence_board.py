"""Presence on the demo board, in Chromium, between two visitors (two browser contexts):
each sees the other's avatar; opening a card's editor shows a marker on that card on
the other page, closing it (or leaving) takes it away; a visitor's second tab is still
one avatar."""

from __future__ import annotations

from .conftest import OpenBoard, playwright_missing

try:
    from playwright.async_api import expect
except ImportError:
    playwright_missing()

T = 10_000  # ms: a guard against hangs


async def test_presence_avatars_and_editing_markers_between_two_contexts(
    open_board: OpenBoard,
) -> None:
    alice, bob = await open_board(), await open_board()
    for board in (alice, bob):
        await expect(board.page.locator("#presence .avatar")).to_have_count(2, timeout=T)
        await expect(board.page.locator("#presence .avatar[data-me]")).to_have_count(1)
    alice_name = await alice.page.locator("#presence .avatar[data-me]").get_attribute("title")
    assert alice_name is not None and alice_name.endswith(" (you)")
    alice_name = alice_name.removesuffix(" (you)")
    # Bob's page names Alice as the server does, never anything her page claimed.
    await expect(bob.page.locator(f'#presence .avatar[title="{alice_name}"]')).to_have_count(1)

    editor = await alice.open_editor("card-1")
    marker = bob.card("card-1").locator(".editing-by")
    await expect(marker).to_have_text(f"✎ {alice_name} is editing", timeout=T)
    await expect(alice.card("card-1").locator(".editing-by")).to_have_count(0)  # not her own
    await expect(bob.page.locator(".editing-by")).to_have_count(1)

    await editor.get_by_role("button", name="Cancel").click()
    await expect(marker).to_have_count(0, timeout=T)

    # A second tab of Alice's: still one avatar for her on Bob's page.
    second = await open_board(context=alice.context)
    await expect(second.page.locator("#presence .avatar")).to_have_count(2, timeout=T)
    await alice.open_editor("card-2")
    await expect(bob.card("card-2").locator(".editing-by")).to_have_count(1, timeout=T)
    await expect(bob.page.locator("#presence .avatar")).to_have_count(2)

    # Alice leaves (both tabs): her avatar and marker go from Bob's page.
    await alice.context.close()
    await expect(bob.page.locator("#presence .avatar")).to_have_count(1, timeout=T)
    await expect(bob.page.locator(".editing-by")).to_have_count(0)
