"""The sync server over real uvicorn and real WebSockets: protocol, fan-out, resume,
bad input, limits, origin and heartbeats."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from starlette.applications import Starlette

from syncline import Engine, Insert, Query
from syncline.protocol import Limits
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

from .live import RawClient, StalledClient, serve
from .schemas import BOARD

CARDS = {"cards": {"c": "cards"}}


def card_insert(rid: str, **fields: Any) -> dict[str, Any]:
    return {"op": "insert", "c": "cards", "id": rid, "fields": {"list_id": "l1", **fields}}


def title(rid: str, value: str, base: int) -> dict[str, Any]:
    return {
        "op": "update",
        "c": "cards",
        "id": rid,
        "set": {"title": value},
        "base": {"title": base},
    }


@contextlib.asynccontextmanager
async def running(
    tmp_path: Path, **server_kw: Any
) -> AsyncIterator[tuple[str, Engine, SynclineServer]]:
    store = SQLiteStore(tmp_path / "server.sqlite3")
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "first"}),
        )
    sync = SynclineServer(engine, **server_kw)
    app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
    try:
        async with serve(app) as host:
            yield host, engine, sync
    finally:
        await store.close()


async def dump(engine: Engine) -> dict[str, Any]:
    snap = await engine.snapshot(
        "admin", {c: Query.parse({"c": c}, BOARD) for c in BOARD.collections}
    )
    return {"head": snap.cursor.seq, "records": snap.results}


class TestLive:
    async def test_hello_subscribe_mutate_and_fan_out(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, _engine, _):
            async with (
                RawClient.connect(host, BOARD) as a,
                RawClient.connect(host, BOARD) as b,
                RawClient.connect(host, BOARD) as other,
            ):
                assert a.frames[0]["t"] == "welcome" and a.frames[0]["last"] == 0
                for c in (a, b):
                    snap = await c.subscribe(CARDS)
                    assert snap["t"] == "snapshot" and [
                        r["id"] for r in snap["records"]["cards"]
                    ] == ["c1"]
                await other.subscribe({"boards": {"c": "boards"}})
                ack = await a.mutate([card_insert("c2", title="hello")], 1)
                assert ack["t"] == "ack" and ack["status"] == "applied" and ack["seq"] == 2
                await a.pump(2)
                await b.pump(2)
                assert b.replica.get("cards", "c2")["title"] == "hello"  # type: ignore[index]
                changes = [f for f in b.frames if f["t"] == "changes"]
                assert changes[-1]["q"]["cards"][0]["k"] == "enter"
                # The boards subscriber receives nothing about cards.
                with pytest.raises(TimeoutError):
                    await other.recv(timeout=0.3)

    async def test_moving_out_of_a_filter_is_a_removal_and_moving_in_arrives_whole(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            async with (
                RawClient.connect(host, BOARD) as writer,
                RawClient.connect(host, BOARD) as watcher,
            ):
                await watcher.subscribe({"todo": {"c": "cards", "where": {"status": "todo"}}})
                await writer.subscribe(CARDS)
                out = {
                    "op": "update",
                    "c": "cards",
                    "id": "c1",
                    "set": {"status": "done"},
                    "base": {"status": 1},
                }
                await writer.mutate([out], 1)
                frame = await watcher.expect("changes")
                assert frame["q"]["todo"] == [{"k": "remove", "c": "cards", "id": "c1"}]
                back = {
                    "op": "update",
                    "c": "cards",
                    "id": "c1",
                    "set": {"status": "todo"},
                    "base": {"status": 2},
                }
                await writer.mutate([back], 2)
                frame = await watcher.expect("changes")
                (item,) = frame["q"]["todo"]
                assert (
                    item["k"] == "enter"
                    and item["data"]["title"] == "first"
                    and item["data"]["status"] == "todo"
                )

    async def test_editing_a_field_twice_before_the_ack_never_conflicts_or_flickers(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as a:
                await a.subscribe(CARDS)
                m1 = a.replica.update("cards", "c1", status="doing")
                m2 = a.replica.update("cards", "c1", status="done")
                seen = [a.replica.get("cards", "c1")["status"]]  # type: ignore[index]
                for m in (m1, m2):
                    await a.send({"t": "mut", **m.model_dump()})
                while a.replica.pending:
                    frame = await a.recv()
                    a.feed(frame)
                    assert frame["t"] != "ack" or frame["status"] == "applied"
                    seen.append(a.replica.get("cards", "c1")["status"])  # type: ignore[index]
                assert set(seen) == {"done"}, seen

    async def test_resume_since_a_cursor_gets_exactly_the_changes_after_it(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _engine, _):
            async with RawClient.connect(host, BOARD, client_id="resumer-0001") as a:
                await a.subscribe({"todo": {"c": "cards", "where": {"status": "todo"}}})
                cursor = str(a.replica.cursor)
            async with RawClient.connect(host, BOARD) as w:
                await w.mutate([card_insert("c2"), card_insert("c3")], 1)
                await w.mutate([{"op": "delete", "c": "cards", "id": "c2"}], 2)
                await w.mutate([title("c1", "renamed", 1)], 3)
            async with RawClient.connect(host, BOARD, client_id="resumer-0001") as a2:
                a2.replica = a.replica
                frame = await a2.subscribe(
                    {"todo": {"c": "cards", "where": {"status": "todo"}}}, since=cursor
                )
                assert frame["t"] == "changes" and frame["from"] == cursor
                got = {i["id"]: i["k"] for i in frame["q"]["todo"]}
                assert got == {"c1": "patch", "c3": "enter"}  # c2 came and went: nothing
                assert a2.replica.get("cards", "c1")["title"] == "renamed"  # type: ignore[index]

    async def test_a_cursor_older_than_the_log_gets_a_fresh_snapshot(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, engine, _):
            old = str(await engine.head())
            async with RawClient.connect(host, BOARD) as w:
                await w.mutate([title("c1", "x", 1)], 1)
            await engine.trim(older_than=-1)
            async with RawClient.connect(host, BOARD) as a:
                frame = await a.subscribe(CARDS, since=old)
                assert frame["t"] == "snapshot" and frame["reset"] == "cursor_too_old"
                assert frame["records"]["cards"][0]["data"]["title"] == "x"

    async def test_a_later_subscription_gets_a_snapshot_at_the_connections_cursor(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as a:
                await a.subscribe(CARDS)
                await a.mutate([card_insert("c2")], 1)
                await a.pump(2)
                snap = await a.subscribe({"lists": {"c": "lists"}})
                assert snap["t"] == "snapshot" and snap["cursor"].endswith(".2")


class TestLostAck:
    async def test_a_resent_mutation_gets_its_original_ack_and_applies_once(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, engine, _):
            incr = {"op": "incr", "c": "cards", "id": "c1", "field": "votes", "by": 1}
            async with RawClient.connect(host, BOARD, client_id="lossy-00001") as a:
                await a.send({"t": "mut", "id": 1, "ops": [incr]})
                while (await engine.head()).seq < 2:  # committed; the ack is never read
                    await asyncio.sleep(0.01)
            # The socket closed after the commit, before the ack was read. Reconnect, resend.
            async with RawClient.connect(host, BOARD, client_id="lossy-00001") as a:
                assert a.frames[0]["last"] == 1  # the server applied it
                ack = await a.mutate([incr], 1)
                assert ack["replay"] is True and ack["status"] == "applied" and ack["seq"] == 2
            snap = await dump(engine)
            assert snap["records"]["cards"][0]["data"]["votes"] == 1


class TestBadInput:
    @pytest.mark.parametrize(
        ("frame", "code", "message"),
        [
            ("{not json", "bad_json", "frame is not valid JSON"),
            ("[1, 2]", "bad_frame", "a frame is a JSON object, not list"),
            ('{"t": "explode"}', "unknown_frame", "unknown frame type 'explode'"),
            (
                '{"t": "mut", "id": "one", "ops": []}',
                "bad_frame",
                "mut frame: id: Input should be a valid integer",
            ),
            (
                '{"t": "sub", "queries": {"q": {"c": "cards", "where": {"title": "x"}}}}',
                "query",
                "cards.title is not queryable",
            ),
            ('{"t": "sub", "queries": {"q": {"c": "nope"}}}', "query", "unknown collection 'nope'"),
            (
                '{"t": "sub", "queries": {"q": {"c": "cards"}}, "extra": 1}',
                "bad_frame",
                "extra: Extra inputs are not permitted",
            ),
            (
                '{"t": "hello", "v": 1, "client": "second-hello", "schema": "x"}',
                "bad_state",
                "hello was already sent",
            ),
        ],
    )
    async def test_bad_frames_get_an_error_naming_the_problem(
        self, tmp_path: Path, frame: str, code: str, message: str
    ) -> None:
        async with running(tmp_path) as (host, engine, _):
            before = await dump(engine)
            async with (
                RawClient.connect(host, BOARD) as bystander,
                RawClient.connect(host, BOARD) as bad,
            ):
                await bystander.subscribe(CARDS)
                await bad.send(frame)
                error = await bad.expect("error")
                assert error["code"] == code and message in error["message"], error
                # The connection goes on, and the bystander notices nothing.
                await bad.send({"t": "ping", "n": 7})
                assert (await bad.expect("pong"))["n"] == 7
                with pytest.raises(TimeoutError):
                    await bystander.recv(timeout=0.2)
                ack = await bystander.mutate([title("c1", "still fine", 1)], 1)
                assert ack["status"] == "applied"
            after = await dump(engine)
            assert after["head"] == before["head"] + 1

    async def test_a_mutation_before_hello_is_refused(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, engine, _):
            before = await dump(engine)
            async with RawClient.connect(host, BOARD, hello=False) as c:
                await c.send({"t": "mut", "id": 1, "ops": [title("c1", "sneaky", 1)]})
                error = await c.expect("error")
                assert error["code"] == "bad_state" and error["message"] == "send hello before mut"
            assert await dump(engine) == before

    async def test_a_malformed_or_oversize_mutation_is_refused_and_uses_up_its_id(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path, limits=Limits(max_frame_bytes=10_000)) as (host, engine, _):
            before = await dump(engine)
            async with RawClient.connect(host, BOARD) as c:
                await c.send({"t": "mut", "id": 1, "ops": [title("c1", "x" * 20_000, 1)]})
                big = await c.expect("reject")
                assert (big["mid"], big["permanent"], big["code"]) == (1, True, "too_large")
                assert "exceeds the limit of 10000" in big["message"]
                await c.send({"t": "mut", "id": 2, "ops": [], "extra": 1})
                bad = await c.expect("reject")
                assert (bad["mid"], bad["permanent"], bad["code"]) == (2, True, "bad_frame")
                assert "extra: Extra inputs are not permitted" in bad["message"]
                assert await dump(engine) == before
                # One bad mutation never blocks the queue: the next id goes through.
                assert (await c.mutate([title("c1", "fine", 1)], 3))["t"] == "ack"
                # And a resent bad one gets its stored refusal back.
                await c.send({"t": "mut", "id": 2, "ops": []})
                assert (await c.expect("reject"))["replay"] is True

    async def test_limits_on_ops_strings_and_rate(self, tmp_path: Path) -> None:
        limits = Limits(max_ops=3, max_string=50, mutations_per_second=2, mutation_burst=3)
        async with running(tmp_path, limits=limits) as (host, _, _):
            async with RawClient.connect(host, BOARD) as c:
                too_many = await c.mutate([title("c1", "x", 1)] * 4, 1)
                assert too_many["code"] == "limit" and "at most 3 ops" in too_many["message"]
                too_long = await c.mutate([title("c1", "y" * 60, 1)], 2)
                assert too_long["code"] == "limit"
                assert "60 characters exceeds the limit of 50" in too_long["message"]
                assert (await c.mutate([title("c1", "ok", 1)], 3))["t"] == "ack"
                slow_down = await c.mutate([title("c1", "t4", 1)], 4)
                assert slow_down["t"] == "reject" and slow_down["permanent"] is False
                assert slow_down["code"] == "rate" and slow_down["retry_after"] > 0
                await asyncio.sleep(slow_down["retry_after"])
                assert (await c.mutate([title("c1", "t4", 1)], 4))["t"] == "ack"  # nothing used up

    async def test_a_permanent_refusal_is_a_reject_frame_with_the_place(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as c:
                frame = await c.mutate([card_insert("c9", list_id="ghost")], 1)
                assert frame == {
                    "t": "reject",
                    "permanent": True,
                    "mid": 1,
                    "code": "missing_reference",
                    "message": "cards/'c9'.list_id: refers to lists/'ghost', which does not exist",
                    "collection": "cards",
                    "id": "c9",
                    "field": "list_id",
                }
                gap = await c.mutate([title("c1", "x", 1)], 5)
                assert gap["permanent"] is False and gap["code"] == "gap" and gap["expected"] == 2


class TestSecurity:
    async def test_a_foreign_origin_is_refused_and_the_same_origin_accepted(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            with pytest.raises(websockets.InvalidStatus):
                async with RawClient.connect(host, BOARD, origin="http://evil.example"):
                    pass
            async with RawClient.connect(host, BOARD, origin=f"http://{host}") as c:
                assert c.frames[0]["t"] == "welcome"

    async def test_an_allow_list_admits_listed_origins(self, tmp_path: Path) -> None:
        async with running(tmp_path, allowed_origins=["https://app.example"]) as (host, _, _):
            async with RawClient.connect(host, BOARD, origin="https://app.example") as c:
                assert c.frames[0]["t"] == "welcome"
            with pytest.raises(websockets.InvalidStatus):
                async with RawClient.connect(host, BOARD, origin=f"http://{host}"):
                    pass

    async def test_http_mutations_refuse_cross_site_requests(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, engine, _):
            before = await dump(engine)
            body = {"client": "http-client-1", "mut": {"id": 1, "ops": [title("c1", "csrf", 1)]}}
            async with httpx.AsyncClient(base_url=f"http://{host}") as http:
                foreign = await http.post(
                    "/sync/mutate", json=body, headers={"origin": "http://evil.example"}
                )
                assert foreign.status_code == 403 and foreign.json()["code"] == "origin"
                form = await http.post(
                    "/sync/mutate",
                    content=b"a=1",
                    headers={"content-type": "application/x-www-form-urlencoded"},
                )
                assert form.status_code == 415
                assert await dump(engine) == before
                ok = await http.post("/sync/mutate", json=body)
                assert ok.status_code == 200 and ok.json()["t"] == "ack" and ok.json()["seq"] == 2


class TestHeartbeat:
    async def test_a_silent_client_is_dropped_and_an_answering_one_kept(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path, heartbeat=0.5) as (host, _, _):
            async with (
                RawClient.connect(host, BOARD) as silent,
                RawClient.connect(host, BOARD) as alive,
            ):
                assert (await silent.recv())["t"] == "ping"

                async def answer_pings() -> int:
                    pings = 0
                    while pings < 4:  # well past two heartbeats
                        frame = await alive.recv()
                        assert frame["t"] == "ping"
                        await alive.send({"t": "pong"})
                        pings += 1
                    return pings

                answering = asyncio.create_task(answer_pings())
                with pytest.raises(websockets.ConnectionClosed) as info:
                    for _ in range(10):
                        await silent.recv()
                assert info.value.rcvd is not None and info.value.rcvd.code == 4000
                assert await answering == 4
                await alive.send({"t": "ping", "n": 1})
                assert (await alive.expect("pong"))["n"] == 1

    async def test_a_client_that_never_says_hello_is_closed_after_the_hello_timeout(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path, hello_timeout=0.4) as (host, _, sync):
            loop = asyncio.get_running_loop()
            async with websockets.connect(f"ws://{host}/sync") as ws:
                opened = loop.time()
                with pytest.raises(websockets.ConnectionClosed) as info:
                    await asyncio.wait_for(ws.recv(), 5)
                waited = loop.time() - opened
            assert info.value.rcvd is not None and info.value.rcvd.code == 4003
            assert info.value.rcvd.reason == "no hello received"
            assert 0.35 <= waited < 2.0
            assert not sync.connections


class TestSlowConsumer:
    async def test_a_client_that_stops_reading_is_disconnected_and_others_keep_up(
        self, tmp_path: Path
    ) -> None:
        limits = Limits(mutations_per_second=10_000, mutation_burst=10_000)
        async with running(tmp_path, max_queue_bytes=256_000, limits=limits, close_timeout=1.0) as (
            host,
            _,
            sync,
        ):
            hello = {"t": "hello", "v": 1, "client": "stalled-0001", "schema": BOARD.hash}
            slow = await StalledClient.connect(host, [hello, {"t": "sub", "queries": CARDS}])
            assert (await slow.next_frame())[1].startswith(b'{"t":"welcome"')
            assert (await slow.next_frame())[1].startswith(b'{"t":"snapshot"')
            slow.stop_reading()
            async with (
                RawClient.connect(host, BOARD) as fast,
                RawClient.connect(host, BOARD) as writer,
            ):
                await fast.subscribe(CARDS)
                big = "x" * 90_000
                closed_at = None
                for mid in range(1, 401):  # up to 36 MB of changes; slow never reads
                    ack = await writer.mutate([card_insert(f"n{mid}", description=big)], mid)
                    assert ack["t"] == "ack", ack
                    await fast.pump(mid + 1)
                    stalled = [c for c in sync.connections if c.client_id == "stalled-0001"]
                    if not stalled:
                        closed_at = mid
                        break
                    assert stalled[0].outbox.queued_bytes <= 256_000 + 100_000  # bounded
                assert closed_at is not None, "the slow consumer was never disconnected"
                assert fast.replica.get("cards", f"n{closed_at}") is not None
                slow.resume_reading()
                code, reason = await slow.close_code()
                assert code == 4008 and "too slow" in reason
            slow.close()


class TestWriting:
    async def test_an_idle_connection_holds_one_task_and_a_paused_reader_misses_nothing(
        self, tmp_path: Path
    ) -> None:
        limits = Limits(mutations_per_second=10_000, mutation_burst=10_000)
        async with running(tmp_path, max_queue_bytes=64 << 20, limits=limits) as (
            host,
            _,
            sync,
        ):
            hello = {"t": "hello", "v": 1, "client": "paused-0001", "schema": BOARD.hash}
            paused = await StalledClient.connect(host, [hello, {"t": "sub", "queries": CARDS}])
            assert (await paused.next_frame())[1].startswith(b'{"t":"welcome"')
            _, snapshot = await paused.next_frame()
            cursor = int(orjson.loads(snapshot)["cursor"].split(".")[1])
            (conn,) = [c for c in sync.connections if c.client_id == "paused-0001"]
            assert conn._writer is None  # idle: only the task that reads
            paused.stop_reading()
            async with RawClient.connect(host, BOARD) as writer:
                big, sent = "x" * 90_000, 0
                while conn._writer is None and sent < 300:
                    sent += 1
                    ack = await writer.mutate([card_insert(f"p{sent}", description=big)], sent)
                    assert ack["t"] == "ack", ack
                # The socket pushed back: a writer task finishes the writes, in order.
                assert conn._writer is not None, "the socket never pushed back"
                head = ack["seq"]
            paused.resume_reading()
            seen: list[str] = []
            async with asyncio.timeout(20):
                while cursor < head:
                    frame = orjson.loads((await paused.next_frame())[1])
                    if frame["t"] != "changes":
                        continue
                    assert frame["from"].endswith(f".{cursor}")  # no gap, no overlap
                    cursor = int(frame["to"].split(".")[1])
                    seen += [item["id"] for item in frame["q"].get("cards", [])]
            assert seen == [f"p{n}" for n in range(1, sent + 1)]
            await asyncio.sleep(0.1)
            assert conn._writer is None  # it ended with the outbox empty
            paused.close()


class TestHttpPull:
    async def test_pull_gives_a_snapshot_then_long_polls_for_changes(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, _, _):
            async with httpx.AsyncClient(base_url=f"http://{host}", timeout=10) as http:
                import orjson

                queries = orjson.dumps(CARDS).decode()
                snap = (await http.get("/sync/pull", params={"queries": queries})).json()
                assert snap["t"] == "snapshot" and snap["cursor"].endswith(".1")

                async def later() -> None:
                    await asyncio.sleep(0.3)
                    body = {
                        "client": "http-client-2",
                        "mut": {"id": 1, "ops": [title("c1", "polled", 1)]},
                    }
                    await http.post("/sync/mutate", json=body)

                writer = asyncio.create_task(later())
                resp = await http.get(
                    "/sync/pull", params={"queries": queries, "since": snap["cursor"], "wait": 5}
                )
                await writer
                assert resp.headers["cache-control"] == "private, no-store"
                changes = resp.json()
                assert (
                    changes["t"] == "changes"
                    and changes["q"]["cards"][0]["data"]["title"] == "polled"
                )
                bad = await http.get("/sync/pull", params={"queries": "{}"})
                assert bad.status_code == 400 and "non-empty" in bad.json()["message"]


async def test_browser_modules_are_served_by_name_only(tmp_path: Path) -> None:
    async with running(tmp_path) as (host, _, _):
        async with httpx.AsyncClient(base_url=f"http://{host}") as http:
            for path in ("/sync/nope.js", "/sync/Client.js", "/sync/a.b.js"):
                response = await http.get(path)
                assert response.status_code == 404, path
                assert response.json()["code"] == "not_found"
            assert (await http.get("/sync/..%2F..%2Fengine.js")).status_code == 404


async def test_the_trim_job_retires_old_cursors(tmp_path: Path) -> None:
    async with running(tmp_path, retention=0.2, trim_every=0.05) as (host, engine, _):
        old = str(await engine.head())
        async with RawClient.connect(host, BOARD) as w:
            await w.mutate([title("c1", "newer", 1)], 1)
        async with asyncio.timeout(5):
            while True:  # the job runs in the background and raises the floor
                async with engine.store.read() as tx:
                    if await tx.floor() >= 2:
                        break
                await asyncio.sleep(0.05)
        async with RawClient.connect(host, BOARD) as late:
            frame = await late.subscribe(CARDS, since=old)
            assert frame["t"] == "snapshot" and frame["reset"] == "cursor_too_old"


async def test_the_server_lifespan_opens_and_closes_a_store_it_found_closed(
    tmp_path: Path,
) -> None:
    store = SQLiteStore(tmp_path / "own.sqlite3")
    sync = SynclineServer(Engine(BOARD, store))
    async with sync.lifespan():
        assert store.is_open
    assert not store.is_open

    opened = SQLiteStore(tmp_path / "theirs.sqlite3")
    await opened.open()
    try:
        async with SynclineServer(Engine(BOARD, opened)).lifespan():
            pass
        assert opened.is_open  # whoever opened it closes it
    finally:
        await opened.close()


async def test_an_asgi_middleware_sees_its_own_connections_context_in_send(tmp_path: Path) -> None:
    # Frames are written outside the connection's task (at the end of a loop turn), but
    # in a copy of its context: what middleware keeps in context variables around send
    # (a request id, a tracing span) is that connection's, not another's.
    import contextvars

    from starlette.applications import Starlette

    tag: contextvars.ContextVar[str | None] = contextvars.ContextVar("tag", default=None)
    seen: list[tuple[str, str | None]] = []

    class Tagging:
        def __init__(self, app: Any) -> None:
            self.app, self.n = app, 0

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] != "websocket":
                await self.app(scope, receive, send)
                return
            self.n += 1
            me = f"conn{self.n}"
            tag.set(me)

            async def tagged(message: Any) -> None:
                if message["type"] == "websocket.send":
                    seen.append((me, tag.get()))
                await send(message)

            await self.app(scope, receive, tagged)

    store = SQLiteStore(tmp_path / "ctx.sqlite3")
    engine = Engine(BOARD, store)
    sync = SynclineServer(engine)
    app = Tagging(Starlette(routes=sync.routes, lifespan=sync.lifespan))
    async with serve(app) as host:
        async with engine.transaction("admin") as tx:
            tx.apply(Insert(c="boards", id="b1", fields={"name": "B"}))
        async with RawClient.connect(host, BOARD) as a, RawClient.connect(host, BOARD) as b:
            await a.subscribe({"l": {"c": "lists"}})
            await b.subscribe({"l": {"c": "lists"}})
            insert = {"op": "insert", "c": "lists", "id": "l2", "fields": {"board_id": "b1"}}
            await a.mutate([insert], 1)
            await b.expect("changes")
    assert {me for me, _ in seen} == {"conn1", "conn2"}
    assert all(me == got for me, got in seen), seen


def raw_text_frame(payload: bytes) -> bytes:
    """A masked client text frame carrying ``payload`` as is (valid UTF-8 or not)."""
    mask = b"\x01\x02\x03\x04"
    assert len(payload) < 126
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x81, 0x80 | len(payload)]) + mask + masked


class TestAsDocumented:
    """The departures a client written from docs/protocol.md alone found, one by one."""

    async def test_a_foreign_origin_is_refused_with_403_before_the_upgrade(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            with pytest.raises(websockets.InvalidStatus) as refused:
                async with RawClient.connect(host, BOARD, origin="http://evil.example"):
                    pass
            assert refused.value.response.status_code == 403

    async def test_ops_of_a_whole_mode_conflict_never_say_applied(self, tmp_path: Path) -> None:
        status = {"op": "update", "c": "cards", "id": "c1", "base": {"status": 1}}
        async with running(tmp_path) as (host, engine, _):
            async with RawClient.connect(host, BOARD) as a, RawClient.connect(host, BOARD) as b:
                moved = {**status, "set": {"status": "doing"}, "prev": {"status": "todo"}}
                assert (await a.mutate([moved], 1))["status"] == "applied"
                before = await dump(engine)
                mine = {**status, "set": {"status": "done"}, "prev": {"status": "todo"}}
                vote = {"op": "incr", "c": "cards", "id": "c1", "field": "votes", "by": 1}
                ack = await b.mutate([mine, vote], 1, mode="whole")
                assert (ack["status"], ack["seq"]) == ("conflict", None)
                assert [r["status"] for r in ack["results"]] == ["conflict", "dropped"]
                assert "whole-mode mutation conflicts" in ack["results"][1]["reason"]
                assert await dump(engine) == before  # nothing of it applied, votes included

    async def test_a_ping_without_n_is_answered_by_a_pong_without_n(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as c:
                await c.send({"t": "ping"})
                assert await c.ws.recv() == '{"t":"pong"}'
                await c.send({"t": "ping", "n": 3})
                assert orjson.loads(await c.ws.recv()) == {"t": "pong", "n": 3}

    async def test_a_binary_frame_is_refused_though_it_carries_json(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, engine, _):
            before = await dump(engine)
            async with RawClient.connect(host, BOARD) as c:
                mut = {"t": "mut", "id": 1, "ops": [title("c1", "binary", 1)]}
                await c.ws.send(orjson.dumps(mut))  # bytes: a binary frame
                error = await c.expect("error")
                assert error["code"] == "bad_frame" and "binary" in error["message"]
                assert await dump(engine) == before
                # The connection goes on, and id 1 was not used up.
                assert (await c.mutate([title("c1", "text", 1)], 1))["status"] == "applied"

    async def test_a_mutation_of_several_mib_is_refused_by_id_and_uses_it_up(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, engine, _):
            before = await dump(engine)
            async with RawClient.connect(host, BOARD, max_size=None) as c:
                huge = title("c1", "x" * (4 << 20), 1)  # 4 MiB, four times the frame limit
                refused = await c.mutate([huge], 1)
                assert (refused["t"], refused["permanent"], refused["code"]) == (
                    "reject",
                    True,
                    "too_large",
                )
                assert await dump(engine) == before
                assert (await c.mutate([title("c1", "small", 1)], 2))["status"] == "applied"

    async def test_invalid_utf8_closes_with_1007_and_shutdown_with_1012(
        self, tmp_path: Path
    ) -> None:
        hello = {"t": "hello", "v": 1, "client": "utf8-client-1", "schema": BOARD.hash}
        async with running(tmp_path) as (host, _, sync):
            bad = await StalledClient.connect(host, [hello])
            assert orjson.loads((await bad.next_frame())[1])["t"] == "welcome"
            bad.writer.write(raw_text_frame(b'{"t":"ping","n":"\xff\xfe"}'))
            assert (await bad.close_code())[0] == 1007
            bad.close()
            async with RawClient.connect(host, BOARD) as c:
                await sync.stop()
                with pytest.raises(websockets.ConnectionClosed):
                    while True:
                        await c.recv()
                assert c.ws.close_code == 1012 and c.ws.close_reason == "server shutting down"

    async def test_a_failing_query_of_a_sub_is_named_in_ref(self, tmp_path: Path) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as c:
                await c.send(
                    {"t": "sub", "queries": {"fine": {"c": "cards"}, "broken": {"c": "nope"}}}
                )
                error = await c.expect("error")
                assert (error["code"], error["ref"]) == ("query", "broken")

    async def test_unknown_fields_of_an_op_are_invalid_and_of_a_frame_bad_frame(
        self, tmp_path: Path
    ) -> None:
        async with running(tmp_path) as (host, _, _):
            async with RawClient.connect(host, BOARD) as c:
                op = {**title("c1", "x", 1), "colour": "red"}
                in_op = await c.mutate([op], 1)
                assert (in_op["t"], in_op["permanent"], in_op["code"]) == (
                    "reject",
                    True,
                    "invalid",
                )
                in_frame = await c.mutate([title("c1", "x", 1)], 2, colour="red")
                assert (in_frame["t"], in_frame["code"]) == ("reject", "bad_frame")
                assert in_frame["permanent"] is True
