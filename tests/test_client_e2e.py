"""The asyncio client against a real server: uvicorn in a subprocess on a SQLite file,
real WebSockets, no mocks. Timeouts only guard against hangs; nothing asserts speed."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from syncline import Schema
from syncline.client import Client, ClientEvent, ClientFailed
from syncline.ssr import embed_json

from .schemas import BOARD, board_schema
from .servers import Recorder, ServerProcess

T = 15.0  # a guard against hangs, not a speed requirement
CARDS_L1 = {"l1": {"c": "cards", "where": {"list_id": "l1"}}}
CARDS_L2 = {"l2": {"c": "cards", "where": {"list_id": "l2"}}}
ALL_CARDS = {"all": {"c": "cards"}}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    with ServerProcess(tmp_path / "server.sqlite3") as s:
        yield s


def make(server: ServerProcess, **kwargs: Any) -> Recorder:
    return Recorder(server.ws_url, BOARD, **kwargs)


def events_of(
    client: Client, *kinds: str, into: list[ClientEvent] | None = None
) -> list[ClientEvent]:
    seen: list[ClientEvent] = [] if into is None else into
    for kind in kinds:
        client.on(kind, seen.append)  # type: ignore[arg-type]
    return seen


async def seed(server: ServerProcess) -> None:
    async with make(server) as admin:
        await admin.subscribe(ALL_CARDS, timeout=T)
        with admin.batch() as b:
            b.insert("boards", "b1", name="Board")
            b.insert("lists", "l1", board_id="b1")
            b.insert("lists", "l2", board_id="b1")
            b.insert("cards", "c1", list_id="l1", title="one")
            b.insert("cards", "c2", list_id="l1", title="two")
            b.insert("cards", "c9", list_id="l2", title="nine")
        await admin.wait_synced(T)


def field(client: Client, record_id: str, name: str) -> Any:
    record = client.get("cards", record_id)
    return None if record is None else record[name]


async def test_live_changes_reach_every_subscriber_and_acks_carry_seq(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b, make(server) as c:
        for x in (a, b, c):
            await x.subscribe(CARDS_L1, timeout=T)
        acks: list[ClientEvent] = []
        for x in (a, b, c):
            events_of(x, "ack", into=acks)
        a.update("cards", "c1", title="from a")
        b.increment("cards", "c2", "votes", 3)
        c.insert("cards", "c3", list_id="l1", title="from c")
        for x in (a, b, c):
            await x.wait_synced(T)
        for x in (a, b, c):
            await x.wait_for(
                lambda x=x: (  # type: ignore[misc]
                    field(x, "c1", "title") == "from a"
                    and field(x, "c2", "votes") == 3
                    and field(x, "c3", "title") == "from c"
                ),
                T,
            )
        assert a.replica.server_data() == b.replica.server_data() == c.replica.server_data()
        seqs = [e.frame["seq"] for e in acks if e.frame is not None]
        assert len(seqs) == 3 and all(isinstance(s, int) for s in seqs)
        assert len(set(seqs)) == 3  # one seq per committed mutation
        assert all(e.frame is not None and e.frame["status"] == "applied" for e in acks)


async def test_subscribers_of_other_queries_receive_nothing(server: ServerProcess) -> None:
    await seed(server)
    async with make(server) as a, make(server) as other:
        await a.subscribe(ALL_CARDS, timeout=T)
        await other.subscribe(CARDS_L2, timeout=T)
        start = len(other.received)
        for i in range(5):
            a.update("cards", "c1", title=f"edit {i}")
        a.increment("cards", "c2", "votes")
        await a.wait_synced(T)
        a.update("cards", "c9", title="now l2 hears")  # the last change, in other's query
        await other.wait_for(lambda: field(other, "c9", "title") == "now l2 hears", T)
        frames = other.received[start:]
        items = [i for f in frames if f["t"] == "changes" for q in f["q"].values() for i in q]
        assert [(i["k"], i["id"]) for i in items] == [("patch", "c9")]
        assert other.get("cards", "c1") is None


async def test_leaving_a_filter_is_a_removal_and_entering_it_brings_the_whole_record(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b:
        await a.subscribe(ALL_CARDS, timeout=T)
        await b.subscribe(CARDS_L1, timeout=T)
        start = len(b.received)
        a.update("cards", "c1", list_id="l2")
        await b.wait_for(lambda: b.get("cards", "c1") is None, T)
        a.update("cards", "c1", title="changed while away")
        a.update("cards", "c1", list_id="l1")
        await b.wait_for(lambda: field(b, "c1", "list_id") == "l1", T)
        items = [
            i for f in b.received[start:] if f["t"] == "changes" for q in f["q"].values() for i in q
        ]
        assert [(i["k"], i["id"]) for i in items] == [("remove", "c1"), ("enter", "c1")]
        entered = items[1]
        assert entered["data"]["title"] == "changed while away"
        assert set(entered["data"]) == set(BOARD["cards"].fields)  # whole, not a patch
        assert b.get("cards", "c1") == a.get("cards", "c1")


async def test_editing_a_field_twice_before_the_first_ack_neither_conflicts_nor_flickers(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b:
        await a.subscribe(CARDS_L1, timeout=T)
        await b.subscribe(CARDS_L1, timeout=T)
        seen: list[Any] = []
        a.on("*", lambda e: seen.append(field(a, "c1", "status")))
        bad = events_of(a, "conflict", "overwritten", "rejected")
        a.update("cards", "c1", status="doing")
        seen.append(field(a, "c1", "status"))
        a.update("cards", "c1", status="done")  # before any answer to the first
        seen.append(field(a, "c1", "status"))
        await a.wait_synced(T)
        await b.wait_for(lambda: field(b, "c1", "status") == "done", T)
        assert bad == []
        first_done = seen.index("done")
        assert set(seen[:first_done]) <= {"todo", "doing"}
        assert set(seen[first_done:]) == {"done"}, seen  # never back to an older value
        assert a.replica.server_data() == b.replica.server_data()


async def test_a_lost_ack_comes_back_on_replay_and_the_change_exists_once(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with make(server) as a, make(server) as observer:
        await a.subscribe(CARDS_L1, timeout=T)
        await observer.subscribe(CARDS_L1, timeout=T)
        acks = events_of(a, "ack")
        a.pause()
        a.increment("cards", "c1", "votes", 1)
        # The server committed (another client sees it); a never read the ack.
        await observer.wait_for(lambda: field(observer, "c1", "votes") == 1, T)
        connections = sum(1 for f in a.sent if f["t"] == "hello")
        a.drop()
        await a.wait_synced(T)
        assert sum(1 for f in a.sent if f["t"] == "hello") == connections + 1
        (ack,) = [e.frame for e in acks if e.frame is not None]
        assert ack["replay"] is True and isinstance(ack["seq"], int)
        assert field(a, "c1", "votes") == 1
        a.increment("cards", "c2", "votes", 1)  # the queue goes on after the replay
        await a.wait_synced(T)
        await observer.wait_for(lambda: field(observer, "c2", "votes") == 1, T)
        assert field(observer, "c1", "votes") == 1  # applied once
        assert a.replica.server_data() == observer.replica.server_data()


async def test_a_lost_ack_with_a_conflict_keeps_the_conflict(server: ServerProcess) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b:
        await a.subscribe(CARDS_L1, timeout=T)
        await b.subscribe(CARDS_L1, timeout=T)
        acks = events_of(a, "ack")
        a.pause()  # a will not hear of b's edit, nor of the answer to its own
        b.update("cards", "c1", status="doing")
        await b.wait_synced(T)
        mutation = a.update("cards", "c1", status="done")
        # Ask the server (over HTTP, as a) until it answers mutation 1 as a replay: then
        # it has applied the WebSocket frame (or this probe) and kept the answer.
        async with httpx.AsyncClient(base_url=server.url) as http:
            for _ in range(200):
                probe = await http.post(
                    "/sync/mutate",
                    json={
                        "client": a.client_id,
                        "mut": {
                            "id": 1,
                            "ops": [
                                op.model_dump(mode="json", exclude_none=True) for op in mutation.ops
                            ],
                        },
                    },
                )
                if probe.json().get("replay"):
                    break
                await asyncio.sleep(0.02)
        assert probe.json()["status"] == "conflict"
        a.drop()
        await a.wait_synced(T)
        (ack,) = [e.frame for e in acks if e.frame is not None]
        assert ack["replay"] is True and ack["status"] == "conflict"
        (draft,) = a.drafts
        (conflict,) = draft.conflicts
        assert (conflict.base, conflict.mine, conflict.theirs) == ("todo", "done", "doing")
        assert field(a, "c1", "status") == "doing"


async def test_manual_conflict_round_trip(server: ServerProcess) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b:
        await a.subscribe(CARDS_L1, timeout=T)
        await b.subscribe(CARDS_L1, timeout=T)
        conflicts = events_of(b, "conflict")
        b.pause()  # b edits without having seen a's edit: concurrent
        a.update("cards", "c1", status="doing")
        await a.wait_synced(T)
        b.update("cards", "c1", status="blocked", title="b's title")
        b.resume()
        await b.wait_for(lambda: bool(b.drafts), T)
        (event,) = conflicts
        assert event.draft is not None
        (conflict,) = event.draft.conflicts
        assert (conflict.base, conflict.mine, conflict.theirs) == ("todo", "blocked", "doing")
        assert field(b, "c1", "status") == "doing"  # nothing of b's mutation applied
        b.resolve(event.draft, {"status": "blocked"})
        assert b.drafts == []
        await b.wait_synced(T)
        await a.wait_for(lambda: field(a, "c1", "status") == "blocked", T)
        await a.wait_synced(T)
        assert field(a, "c1", "title") == "b's title"  # the draft's other edit landed too
        assert a.replica.server_data() == b.replica.server_data()


async def test_server_killed_and_restarted_loses_nothing_acknowledged_applies_nothing_twice(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with make(server) as a, make(server) as b:
        await a.subscribe(CARDS_L1, timeout=T)
        await b.subscribe(CARDS_L1, timeout=T)
        for _ in range(5):
            a.increment("cards", "c1", "votes")
            b.increment("cards", "c1", "votes")
        await a.wait_synced(T)
        await b.wait_synced(T)
        # Synced is about one's own mutations; b's last may reach a a moment later.
        await a.wait_for(lambda: field(a, "c1", "votes") == 10, T)
        acknowledged = field(a, "c1", "votes")
        for _ in range(3):  # maybe committed, maybe not, when the server dies
            a.increment("cards", "c1", "votes")
            b.increment("cards", "c1", "votes")
        await asyncio.to_thread(server.kill)
        await a.wait_for(lambda: a.status != "live", T)
        await b.wait_for(lambda: b.status != "live", T)
        for _ in range(4):  # offline
            a.increment("cards", "c1", "votes")
            b.increment("cards", "c1", "votes")
        a.update("cards", "c2", title="written offline")
        assert field(a, "c1", "votes") >= acknowledged + 7
        await asyncio.to_thread(server.start)
        await a.wait_synced(T)
        await b.wait_synced(T)
        total = acknowledged + 2 * (3 + 4)
        for x in (a, b):
            await x.wait_for(lambda x=x: field(x, "c1", "votes") == total, T)  # type: ignore[misc]
        async with make(server) as fresh:
            await fresh.subscribe(CARDS_L1, timeout=T)
            assert field(fresh, "c1", "votes") == total
            assert field(fresh, "c2", "title") == "written offline"
            assert fresh.replica.server_data() == a.replica.server_data()
        resumed = [f for f in a.sent if f["t"] == "sub" and "since" in f]
        assert resumed, "a resumed from its cursor"


async def test_hydrating_from_page_state_needs_no_fetch_and_resumes_from_its_cursor(
    server: ServerProcess,
) -> None:
    await seed(server)
    async with httpx.AsyncClient(base_url=server.url) as http:
        response = await http.get("/sync/pull", params={"queries": json.dumps(CARDS_L1)})
    snapshot = response.json()
    page_state = {
        "v": 1,
        "schema": BOARD.hash,
        **{k: snapshot[k] for k in ("cursor", "queries", "records")},
    }
    script_text = embed_json(page_state)  # as the page embeds it
    async with make(server) as writer:
        await writer.subscribe(CARDS_L1, timeout=T)
        writer.update("cards", "c1", title="after the page was rendered")
        await writer.wait_synced(T)
    page = make(server)
    page.hydrate(script_text)
    assert field(page, "c1", "title") == "one"  # shown before any connection
    async with page:
        await page.wait_for(lambda: field(page, "c1", "title") == "after the page was rendered", T)
        await page.wait_synced(T)
    subs = [f for f in page.sent if f["t"] == "sub"]
    assert subs == [{"t": "sub", "queries": snapshot["queries"], "since": snapshot["cursor"]}]
    assert not [f for f in page.received if f["t"] == "snapshot"]  # no second fetch


async def test_pending_mutations_survive_a_client_restart(
    server: ServerProcess, tmp_path: Path
) -> None:
    await seed(server)
    path = tmp_path / "pending.sqlite3"
    first = make(server, pending_path=path)
    async with first:
        await first.subscribe(CARDS_L1, timeout=T)
        await first.wait_synced(T)
    offline = make(server, pending_path=path)  # never connects: the process "dies"
    client_id = offline.client_id
    offline.increment("cards", "c1", "votes", 5)
    offline.update("cards", "c2", title="typed before the crash")
    await offline.close()
    again = make(server, pending_path=path)
    assert again.client_id == client_id == first.client_id
    assert again.pending == [1, 2]
    assert field(again, "c1", "votes") == 5  # the saved data, with pending edits on top
    async with again, make(server) as observer:
        await again.wait_synced(T)
        await observer.subscribe(CARDS_L1, timeout=T)
        assert field(observer, "c1", "votes") == 5
        assert field(observer, "c2", "title") == "typed before the crash"
    assert [f["since"] for f in again.sent if f["t"] == "sub"] == [first.cursor]


async def test_a_schema_the_server_does_not_know_is_told_to_reload(server: ServerProcess) -> None:
    other: Schema = board_schema()
    other = Schema(list(other.collections.values()), revision=1)
    assert other.hash != BOARD.hash
    client = Recorder(server.ws_url, other)
    reloads = events_of(client, "reload")
    client.insert("boards", "b7", name="kept")
    async with client:
        with pytest.raises(ClientFailed, match="reload"):
            await client.subscribe(ALL_CARDS, timeout=T)
        assert client.failed and client.status == "offline"
        assert len(reloads) == 1
        assert client.pending == [1]  # kept, to send after the reload
