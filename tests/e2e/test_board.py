"""The demo board in a real browser: server-rendered, hydrated without a second fetch,
live between visitors, offline and back, manual conflicts, and hostile text.

Waits are Playwright's auto-waiting expectations; the only timing in an assertion is
the one the spec states (a change reaches another page within one second).
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from syncline.demo.app import label_tone, sorted_labels
from syncline.ops import Insert, SetAdd, Update

from .conftest import Board, OpenBoard, Server, make_status_conflict, playwright_missing

try:
    from playwright.async_api import (
        Browser,
        Dialog,
        Locator,
        Page,
        Request,
        WebSocket,
        WebSocketRoute,
        expect,
    )
except ImportError:
    playwright_missing()

PROPAGATION_MS = 1000  # the spec: an edit shows on other pages within one second


async def text_of(locator: Locator) -> str:
    """The element's exact textContent (``to_have_text`` normalises whitespace)."""
    text: str = await locator.evaluate("el => el.textContent")
    return text


async def test_without_javascript_the_page_shows_the_whole_board(
    open_board: OpenBoard, server: Server
) -> None:
    board = await open_board(java_script_enabled=False)
    page = board.page
    cards = await server.cards()
    assert len(cards) == 6

    await expect(page.get_by_role("heading", level=1)).to_have_text("Launch plan")
    await expect(page.get_by_role("heading", level=2)).to_have_text(
        ["Product", "Engineering", "Launch"]
    )
    await expect(page.locator("[data-sl-id^='cards:']")).to_have_count(len(cards))
    for card_id, card in cards.items():
        await expect(board.field(card_id, "title")).to_have_text(card["title"])
        assert await text_of(board.field(card_id, "description")) == card["description"]
        await expect(board.field(card_id, "votes")).to_have_text(str(card["votes"]))
        await expect(board.field(card_id, "status")).to_have_text(card["status"], ignore_case=True)
        await expect(board.labels(card_id)).to_have_text(sorted_labels(card["labels"]))
        in_list = page.locator(f"ol[data-list-id='{card['list_id']}']").locator(board.card(card_id))
        await expect(in_list).to_have_count(1)
    await expect(page.locator(".notice")).to_contain_text("JavaScript is off")
    # Controls that need JavaScript are not offered.
    await expect(page.get_by_role("button")).to_have_count(0)
    await expect(page.get_by_role("textbox")).to_have_count(0)


async def test_hydration_fetches_nothing_and_keeps_the_server_rendered_nodes(
    browser: Browser, server: Server
) -> None:
    context = await browser.new_context()
    page = await context.new_page()
    requests: list[Request] = []
    page.on("request", lambda request: requests.append(request))
    sent: list[dict[str, Any]] = []

    def on_websocket(ws: WebSocket) -> None:
        ws.on("framesent", lambda payload: sent.append(orjson.loads(payload)))

    page.on("websocket", on_websocket)
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))

    # Hold the client module until the server's nodes are tagged, so the tags are set
    # before any client code runs.
    release = asyncio.Event()

    async def hold(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route("**/sync/client.js", hold)
    await page.goto(server.url + "/", wait_until="commit")
    await expect(page.locator("#syncline-state")).to_be_attached()
    tagged = await page.evaluate(
        """() => {
            const nodes = [...document.querySelectorAll('[data-sl-id], [data-sl-field]')];
            nodes.forEach((node, i) => { node.__ssrNode = i; });
            window.__mutations = [];
            new MutationObserver((records) => window.__mutations.push(...records.map(
                (r) => `${r.type} in ${r.target.closest?.('[data-sl-id]')?.dataset.slId
                        ?? r.target.parentElement?.closest('[data-sl-id]')?.dataset.slId}`)))
              .observe(document.getElementById('board'),
                       {subtree: true, childList: true, characterData: true});
            return nodes.length;
        }"""
    )
    assert tagged > 6 * 5
    embedded = orjson.loads(await page.locator("#syncline-state").text_content() or "")
    release.set()
    await expect(page.locator("#sync-status")).to_have_attribute("data-state", "live")

    kept = await page.evaluate(
        """() => [...document.querySelectorAll('[data-sl-id], [data-sl-field]')]
                 .filter((node) => node.__ssrNode !== undefined).length"""
    )
    assert kept == tagged, "the client replaced server-rendered nodes"
    assert await page.evaluate("() => window.__mutations") == [], "hydration changed the DOM"

    page_url = server.url + "/"
    kinds = [(r.resource_type, r.url) for r in requests]
    assert [url for kind, url in kinds if kind == "document"] == [page_url]
    unexpected = [
        (kind, url)
        for kind, url in kinds
        if kind not in ("document", "script", "stylesheet", "websocket")
        or "/sync/pull" in url
        or "/sync/mutate" in url
    ]
    assert unexpected == [], "hydration made a data request"
    subs = [f for f in sent if f.get("t") == "sub"]
    assert subs, "the client never subscribed"
    assert subs[0]["since"] == embedded["cursor"], "the client did not subscribe from the page"
    assert subs[0]["queries"] == embedded["queries"]
    assert errors == []
    await context.close()


async def test_an_edit_reaches_the_other_page_within_a_second_and_votes_add_up(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()

    await alice.edit_text("card-1", title="Announce the board demo")
    await expect(bob.field("card-1", "title")).to_have_text(
        "Announce the board demo", timeout=PROPAGATION_MS
    )
    await bob.edit_text("card-1", description="Lead with the offline story, then conflicts.")
    await expect(alice.field("card-1", "description")).to_have_text(
        "Lead with the offline story, then conflicts.", timeout=PROPAGATION_MS
    )
    await alice.add_label("card-1", "launch")
    await expect(bob.labels("card-1")).to_have_text(["docs", "launch"], timeout=PROPAGATION_MS)
    await bob.set_status("card-1", "review")
    await expect(alice.field("card-1", "status")).to_have_text("review", timeout=PROPAGATION_MS)

    add = alice.page.get_by_role("textbox", name="New card in Launch")
    await add.fill("Tell the mailing list")
    await add.press("Enter")
    new_card = bob.page.locator("ol[data-list-id='launch'] .card").last
    await expect(new_card.locator("[data-sl-field='title']")).to_have_text(
        "Tell the mailing list", timeout=PROPAGATION_MS
    )
    await expect(new_card.locator("[data-sl-field='status']")).to_have_text("backlog")
    await expect(
        bob.page.locator("section[aria-labelledby='list-name-launch'] .list-count")
    ).to_have_text("3")
    await new_card.get_by_role("button", name="Vote for this card").click()
    await expect(
        alice.page.locator("ol[data-list-id='launch'] .card").last.locator(
            "[data-sl-field='votes']"
        )
    ).to_have_text("1", timeout=PROPAGATION_MS)

    before = (await server.card("card-2"))["votes"]

    async def vote(board: Board, times: int) -> None:
        for _ in range(times):
            await board.vote("card-2")

    await asyncio.gather(vote(alice, 5), vote(bob, 5))
    for board in (alice, bob):
        await expect(board.field("card-2", "votes")).to_have_text(str(before + 10))
        await board.settled()
    assert (await server.card("card-2"))["votes"] == before + 10
    card = await server.card("card-1")
    assert card["title"] == "Announce the board demo"
    assert card["status"] == "review" and "launch" in card["labels"]


async def test_concurrent_text_edits_merge_and_an_overwritten_title_is_reported(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()
    before = await server.card("card-2")

    await alice.context.set_offline(True)
    await alice.offline()
    await alice.edit_text(
        "card-2", title="Alice's title", description=before["description"] + " (alice)"
    )
    await bob.edit_text("card-2", title="Bob's title", description="(bob) " + before["description"])
    await bob.settled()
    await alice.context.set_offline(False)
    await alice.live()
    await alice.settled()

    merged = "(bob) " + before["description"] + " (alice)"
    for board in (alice, bob):
        await expect(board.field("card-2", "description")).to_have_text(merged)
        await expect(board.field("card-2", "title")).to_have_text("Alice's title")
    # Alice's title arrived last and won: she is told, unobtrusively, what it replaced.
    await expect(alice.page.get_by_role("status").locator(".toast")).to_contain_text("title")
    await expect(bob.page.locator(".toast")).to_have_count(0)
    after = await server.card("card-2")
    assert (after["title"], after["description"]) == ("Alice's title", merged)


async def test_offline_edits_survive_a_closed_page_and_arrive_once(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()
    before = await server.card("card-3")
    writes_before = await server.writes("card-3")

    await alice.context.set_offline(True)
    await alice.offline()
    await alice.edit_text("card-3", title="Written on a train")
    await alice.vote("card-3")
    await alice.vote("card-3")
    await alice.add_label("card-3", "offline")
    await expect(alice.field("card-3", "title")).to_have_text("Written on a train")
    await expect(alice.page.locator("#sync-pending")).to_have_attribute("data-count", "4")
    assert await server.card("card-3") == before, "an edit left while offline"

    context = alice.context
    await alice.page.close()
    await context.set_offline(False)

    # The next page of this browser finds the queue in IndexedDB and shows it at once:
    # hold its socket shut until the edits are on screen, so they cannot come from the
    # server.
    release = asyncio.Event()

    async def gate(ws: WebSocketRoute) -> None:
        await release.wait()
        ws.connect_to_server()

    await context.route_web_socket("**/sync", gate)
    again = await open_board(context=context, live=False)
    await expect(again.field("card-3", "title")).to_have_text("Written on a train")
    await expect(again.field("card-3", "votes")).to_have_text(str(before["votes"] + 2))
    await expect(again.labels("card-3")).to_contain_text(["offline"])
    assert await server.card("card-3") == before
    release.set()
    await again.live()
    await again.settled()
    # Bob's page shows what the server committed.
    await expect(bob.field("card-3", "title")).to_have_text("Written on a train")
    await expect(bob.field("card-3", "votes")).to_have_text(str(before["votes"] + 2))
    await expect(bob.labels("card-3")).to_have_text(sorted_labels([*before["labels"], "offline"]))

    after = await server.card("card-3")
    assert after["title"] == "Written on a train"
    assert after["votes"] == before["votes"] + 2, "a vote was applied twice or lost"
    assert set(after["labels"]) == {*before["labels"], "offline"}
    writes = (await server.writes("card-3"))[len(writes_before) :]
    assert len({client for client, _ in writes}) == 1, "the queue was sent under another id"
    assert [mid for _, mid in writes] == [1, 2, 3, 4], "each offline edit applied once"
    await expect(again.field("card-3", "title")).to_have_text("Written on a train")


async def test_a_manual_conflict_asks_the_user_and_the_choice_wins_everywhere(
    open_board: OpenBoard, server: Server
) -> None:
    alice, bob = await open_board(), await open_board()
    base = (await server.card("card-4"))["status"]

    dialog = await make_status_conflict(alice, bob, "card-4", theirs="doing", mine="done")
    assert (await server.card("card-4"))["status"] == "doing"
    await expect(dialog.locator("#conflict-base")).to_have_text(base)
    await expect(dialog.locator("#conflict-mine")).to_have_text("done")
    await expect(dialog.locator("#conflict-theirs")).to_have_text("doing")
    await expect(dialog.locator("#conflict-card")).to_have_text(
        await text_of(bob.field("card-4", "title"))
    )
    await expect(alice.page.get_by_role("dialog")).to_have_count(0)

    await dialog.get_by_role("button", name="Use mine").click()
    await expect(dialog).to_be_hidden()
    for board in (alice, bob):
        await expect(board.field("card-4", "status")).to_have_text("done")
    await bob.settled()
    assert (await server.card("card-4"))["status"] == "done"


HOSTILE = {
    "script": "</script><script>window.__xss=1</script>",
    "img": '<img src=x onerror="window.__xss=1;alert(1)">',
    "separators": "line\u2028separator\u2029paragraph",
    "template": "{{7*7}} ${7*7} {% raw %}",
    "comment": "<!-- <script>alert(1)</script>",
}


async def assert_no_script_ran(page: Page) -> None:
    assert await page.evaluate("() => window.__xss") is None
    assert await page.locator("#board img, #board script").count() == 0
    assert await page.evaluate(
        "() => Object.keys(Object.prototype).length === 0 && ({}).title === undefined"
    ), "Object.prototype was polluted"


async def test_hostile_text_stays_text_through_render_embed_hydrate_and_live(
    browser: Browser, open_board: OpenBoard, server: Server
) -> None:
    async with server.engine.transaction("test") as tx:
        tx.apply(
            Update(
                c="cards",
                id="card-1",
                set={"title": HOSTILE["script"], "description": HOSTILE["img"]},
            ),
            Update(
                c="cards",
                id="card-2",
                set={"title": HOSTILE["separators"], "description": HOSTILE["template"]},
            ),
            SetAdd(
                c="cards",
                id="card-1",
                field="labels",
                values=["__proto__", "constructor", HOSTILE["img"], HOSTILE["template"]],
            ),
            Insert(
                c="cards",
                id="__proto__",
                fields={
                    "board_id": "demo",
                    "list_id": "launch",
                    "position": 9,
                    "title": HOSTILE["comment"],
                    "labels": ["prototype"],
                },
            ),
        )
    expected = await server.cards()

    async def check(board: Board) -> None:
        for card_id in ("card-1", "card-2", "__proto__"):
            card = expected[card_id]
            await expect(board.field(card_id, "title")).to_be_attached()
            assert await text_of(board.field(card_id, "title")) == card["title"]
            assert await text_of(board.field(card_id, "description")) == card["description"]
            assert await board.labels(card_id).all_text_contents() == sorted_labels(card["labels"])

    # Rendered by the server, read without JavaScript.
    static = await open_board(java_script_enabled=False)
    await check(static)

    # Embedded, hydrated and live, with every dialog an error.
    dialogs: list[str] = []
    live = await open_board(live=False)

    async def on_dialog(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        await dialog.dismiss()

    live.page.on("dialog", on_dialog)
    await live.live()
    embedded = orjson.loads(await live.page.locator("#syncline-state").text_content() or "")
    records = {r["id"]: r["data"] for r in embedded["records"]["cards"]}
    assert records["card-1"]["title"] == HOSTILE["script"]
    assert records["card-2"]["title"] == HOSTILE["separators"]
    await check(live)
    editor = await live.open_editor("card-1")
    await expect(editor.get_by_label("Title")).to_have_value(HOSTILE["script"])
    await editor.get_by_role("button", name="Cancel").click()

    # Changed while the page is live: the same text arrives as a live update.
    async with server.engine.transaction("test") as tx:
        tx.apply(
            Update(
                c="cards",
                id="card-3",
                set={"title": HOSTILE["img"], "description": HOSTILE["script"]},
            ),
            SetAdd(
                c="cards",
                id="card-3",
                field="labels",
                values=[HOSTILE["script"], "__proto__", "\U0001f680 launch"],
            ),
            Insert(
                c="cards",
                id="constructor",
                fields={"board_id": "demo", "list_id": "product", "title": HOSTILE["separators"]},
            ),
        )
    expected = await server.cards()
    await expect(live.field("card-3", "title")).to_have_text(HOSTILE["img"])
    await expect(live.field("constructor", "title")).to_be_attached()
    for card_id in ("card-3", "constructor"):
        card = expected[card_id]
        assert await text_of(live.field(card_id, "title")) == card["title"]
        assert await text_of(live.field(card_id, "description")) == card["description"]
        assert await live.labels(card_id).all_text_contents() == sorted_labels(card["labels"])

    # Chips made in the browser get the colour the server gives the same label.
    chips = live.field("card-3", "labels").locator(".label")
    for i in range(await chips.count()):
        label = await text_of(chips.nth(i).locator(".label-text"))
        await expect(chips.nth(i)).to_have_attribute("data-tone", str(label_tone(label)))
    await assert_no_script_ran(live.page)
    assert dialogs == [], "a script opened a dialog"


async def test_hydration_work_grows_linearly_with_the_cards(
    open_board: OpenBoard, server: Server
) -> None:
    """Hydrating must not scan the page once per card (it once did: n cards x n nodes).
    Counted in DOM queries, not time: the count stays flat as the board grows."""
    counter = """(() => { window.__sl_queries = 0;
        for (const proto of [Element.prototype, Document.prototype]) {
          const original = proto.querySelectorAll;
          proto.querySelectorAll = function (...args) {
            window.__sl_queries++; return original.apply(this, args); }; } })();"""

    async def dom_queries() -> int:
        board = await open_board(live=False)
        await board.context.add_init_script(counter)
        await board.page.reload()
        await board.live()
        return int(await board.page.evaluate("window.__sl_queries"))

    before = await dom_queries()
    lists = ["product", "engineering", "launch"]
    async with server.engine.transaction("demo") as tx:
        tx.apply(
            *(
                Insert(
                    c="cards",
                    id=f"bulk-{n}",
                    fields={"board_id": "demo", "list_id": lists[n % 3], "title": f"bulk {n}"},
                )
                for n in range(300)
            )
        )
    after = await dom_queries()
    assert after - before < 60, (before, after)
