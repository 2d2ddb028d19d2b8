"""Presence: the pure rules (rooms, merging, diffs, coalescing, other nodes' entries),
then real servers and real WebSockets: join/update/leave between clients, merging per
principal, a dropped connection, guarded rooms, nothing in the store, coalescing."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Annotated, Any

import pytest
from pydantic import BaseModel
from starlette.applications import Starlette
from starlette.requests import HTTPConnection

from syncline import Collection, Engine, Queryable, Schema
from syncline.client import Client
from syncline.exceptions import PresenceRefused
from syncline.ops import Insert
from syncline.presence import (
    Coalescer,
    Entry,
    Member,
    Message,
    Registry,
    Room,
    RoomView,
    decode_message,
    encode_message,
    set_message,
)
from syncline.protocol.frames import Limits
from syncline.server.app import SynclineServer
from syncline.store.sqlite import SQLiteStore

from .live import StalledClient, serve

T = 10.0  # a guard against hangs, not a speed requirement


def entry(conn: str, principal: str = "p", state: Any = None, at: int = 0, **kw: Any) -> Entry:
    return Entry(conn, kw.pop("node", "n1"), kw.pop("room", "r"), principal, {"u": principal},
                 state or {}, at, kw.pop("v", 1), kw.pop("gen", 0))  # fmt: skip


# --- the pure rules -----------------------------------------------------------------------


class TestPresenceRules:
    def test_presence_room_per_connection_joins_updates_and_leaves(self) -> None:
        room = Room("r", "connection", lambda raw: "k" + raw)
        d = room.put(entry("c1", state={"x": 1}))
        assert [m.key for m in d.joins] == ["kc1"] and not d.updates and not d.leaves
        d = room.put(entry("c2", principal="p", state={"x": 2}))
        assert [m.key for m in d.joins] == ["kc2"]  # same principal, another member
        d = room.put(entry("c1", state={"x": 3}))
        assert d.updates == [Member("kc1", {"u": "p"}, {"x": 3})] and not d.joins
        assert not room.put(entry("c1", state={"x": 3}))  # nothing changed: no diff
        assert room.remove("c1").leaves == ["kc1"]
        assert not room.remove("c1")
        assert set(room.members()) == {"kc2"}

    def test_presence_room_per_principal_last_update_wins_and_last_tab_leaves(self) -> None:
        room = Room("r", "principal", lambda raw: raw)
        assert [m.key for m in room.put(entry("t1", "ann", {"x": 1}, at=1)).joins] == ["p:ann"]
        d = room.put(entry("t2", "ann", {"x": 2}, at=2))  # a second tab: one member
        assert not d.joins and d.updates == [Member("p:ann", {"u": "ann"}, {"x": 2})]
        d = room.put(entry("t1", "ann", {"x": 3}, at=3))  # the tab updated last wins
        assert d.updates[0].state == {"x": 3}
        d = room.remove("t1")  # the other tab's state shows again
        assert d.updates[0].state == {"x": 2} and not d.leaves
        assert room.remove("t2").leaves == ["p:ann"]
        assert room.members() == {}

    def test_presence_coalescer_bounds_the_rate_and_the_last_value_wins(self) -> None:
        c = Coalescer(rate=10)  # one value per 0.1 s
        assert c.offer("k", 1, now=0.0)
        assert not c.offer("k", 2, now=0.01) and not c.offer("k", 3, now=0.05)
        assert c.next_due() == pytest.approx(0.1)
        assert c.due(0.09) == []
        assert c.due(0.1) == [("k", 3)]
        assert c.next_due() is None
        assert not c.offer("k", 4, now=0.15)  # 0.05 after the flush: held again
        assert c.offer("other", 1, now=0.15)  # each key has its own rate
        # 60 values a second for a second: at most 10 + 1 pass, the last one among them
        sent = []
        c = Coalescer(rate=10)
        for i in range(61):
            now = i / 60
            if c.offer("k", i, now):
                sent.append(i)
            sent += [v for _, v in c.due(now)]
        sent += [v for _, v in c.due(2.0)]
        assert len(sent) <= 12 and sent[-1] == 60

    def test_presence_registry_expires_a_silent_node_and_drops_unannounced(self) -> None:
        reg = Registry("me", "connection", lambda raw: raw)
        reg.put(entry("a.1", node="a", room="r1", gen=1))
        reg.put(entry("a.2", node="a", room="r2", gen=1))
        reg.put(entry("b.1", node="b", room="r1"))
        reg.heard.update(a=0.0, b=10.0)
        diffs = reg.expire(now=15.0, ttl=15.0)
        assert sorted(k for d in diffs for k in d.leaves) == ["a.1", "a.2"]
        assert set(reg.rooms) == {"r1"} and "a" not in reg.heard
        # an announcement (generation 2) that no longer carries b.1: it leaves
        reg.put(entry("b.2", node="b", room="r1", gen=2))
        assert [d.leaves for d in reg.drop("b", below_gen=2)] == [["b.1"]]
        # digests agree when two nodes hold the same entries and versions
        other = Registry("x", "connection", lambda raw: raw)
        other.put(entry("b.2", node="b", room="r1", gen=7))
        assert other.digest("b") == reg.digest("b")
        other.put(entry("b.2", node="b", room="r1", v=2))
        assert other.digest("b") != reg.digest("b")

    def test_presence_messages_round_trip_and_stay_small(self) -> None:
        e = entry("a.1", node="a", state={"name": "x" * 2000})
        text = encode_message(set_message(e))
        assert len(text.encode()) < 7900
        msg = decode_message(text)
        assert msg is not None and msg.entry() == e
        assert decode_message("{not json") is None
        assert decode_message(encode_message(Message(p="beat", n="a", h="00"))) == Message(
            p="beat", n="a", h="00"
        )

    def test_presence_room_view_follows_room_and_diff_frames(self) -> None:
        view = RoomView("r", {})
        ann, bob = Member("a", None, {}), Member("b", None, {"x": 1})
        assert view.load("a", [ann]) == [("join", ann)]
        bob2 = Member("b", None, {"x": 2})
        assert view.apply([bob], [bob2], []) == [("join", bob), ("update", bob2)]
        assert view.apply([], [], ["b", "zz"]) == [("leave", bob2)]
        assert view.load("a", []) == [("leave", ann)]

    def test_presence_frames_are_checked_at_the_boundary(self) -> None:
        from syncline.protocol.frames import ProtocolError
        from syncline.protocol.server import Join, ServerProtocol

        proto = ServerProtocol(Limits(max_presence_bytes=32))
        hello = {"t": "hello", "v": 1, "client": "presence-1", "schema": "h"}
        proto.receive(encode_message_json(hello), 0.0)
        event = proto.receive(encode_message_json({"t": "join", "room": "r"}), 0.0)
        assert isinstance(event, Join) and event.state == {}
        cases = {
            '{"t":"join","room":""}': ("bad_frame", "room"),
            '{"t":"join","room":"r","state":[1]}': ("bad_frame", "state"),
            '{"t":"presence","room":"r"}': ("bad_frame", "state: Field required"),
            '{"t":"leave","room":"r","x":1}': ("bad_frame", "Extra inputs"),
            '{"t":"join","room":"r\\u0000"}': ("bad_frame", "NUL"),
            '{"t":"presence","room":"r","state":{"s":"' + "y" * 40 + '"}}': ("limit", "32"),
        }
        for text, (code, words) in cases.items():
            with pytest.raises(ProtocolError) as info:
                proto.receive(text, 0.0)
            assert info.value.code == code and words in str(info.value), (text, info.value)

    def test_presence_client_refuses_malformed_room_frames(self) -> None:
        from syncline import Replica
        from syncline.protocol.client import ClientProtocol

        proto = ClientProtocol(Replica(SCHEMA, "presence-client-1"))
        proto.join("r", {})
        events = proto.receive({"t": "room", "room": "r", "me": "k", "members": [{"x": 1}]}, 0)
        assert [e.kind for e in events] == ["error"] and proto.close_requested


def encode_message_json(frame: dict[str, Any]) -> str:
    import json

    return json.dumps(frame)


# --- real servers -------------------------------------------------------------------------


class Card(BaseModel):
    team: Annotated[str, Queryable()]
    title: str = ""


def may_read(user: str, card: Mapping[str, Any]) -> bool:
    return user.startswith(card["team"] + "-")


SCHEMA = Schema([Collection("cards", Card, read=may_read, write=lambda u, b, a: True)])


def authenticate(conn: HTTPConnection, credentials: Mapping[str, Any] | None) -> str | None:
    return (credentials or {}).get("user")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **server_kw: Any) -> AsyncIterator[tuple[str, SynclineServer]]:
    store = SQLiteStore(tmp_path / "presence.sqlite3")
    await store.open()
    engine = Engine(SCHEMA, store)
    async with engine.transaction("red-admin") as tx:
        tx.apply(
            Insert(c="cards", id="c1", fields={"team": "red", "title": "one"}),
            Insert(c="cards", id="c2", fields={"team": "blue", "title": "two"}),
        )
    sync = SynclineServer(
        engine,
        authenticate=authenticate,
        presence_user=lambda user: {"name": user},
        **server_kw,
    )
    app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
    try:
        async with serve(app) as host:
            yield host, sync
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def client(host: str, user: str) -> AsyncIterator[Client]:
    async with Client(f"ws://{host}/sync", SCHEMA, credentials={"user": user}) as c:
        await c.wait_live(T)
        yield c


def names(members: Mapping[str, Member]) -> dict[str, Any]:
    return {m.user["name"]: m.state for m in members.values()}


class TestPresenceLive:
    async def test_presence_join_update_leave_between_two_clients(self, tmp_path: Path) -> None:
        async with (
            running(tmp_path) as (host, _),
            client(host, "red-ann") as ann,
            client(host, "red-bob") as bob,
        ):
            a = await ann.join("board:demo", {"editing": None})
            assert names(a.members) == {"red-ann": {"editing": None}}
            seen: list[tuple[str, str]] = []
            a.on(lambda kind, m: seen.append((kind, m.user["name"])))
            b = await bob.join("board:demo", {"editing": "c1"})
            assert names(b.members) == {"red-ann": {"editing": None}, "red-bob": {"editing": "c1"}}
            assert b.me is not None and b.members[b.me].user == {"name": "red-bob"}
            await a.wait_for(lambda r: len(r.members) == 2, T)
            b.update({"editing": "c2"})
            await a.wait_for(lambda r: names(r.members).get("red-bob") == {"editing": "c2"}, T)
            await b.leave()
            await a.wait_for(lambda r: names(r.members) == {"red-ann": {"editing": None}}, T)
            assert seen == [("join", "red-bob"), ("update", "red-bob"), ("leave", "red-bob")]

    async def test_presence_merged_per_principal_across_tabs(self, tmp_path: Path) -> None:
        async with (
            running(tmp_path, presence_merge="principal") as (host, _),
            client(host, "red-ann") as tab1,
            client(host, "red-ann") as tab2,
            client(host, "red-bob") as bob,
        ):
            watcher = await bob.join("board:demo", {})
            await tab1.join("board:demo", {"tab": 1})
            await tab2.join("board:demo", {"tab": 2})
            await watcher.wait_for(lambda r: names(r.members).get("red-ann") == {"tab": 2}, T)
            assert len(watcher.members) == 2  # ann once, however many tabs
            await tab2.close()  # the other tab's state shows again; ann stays
            await watcher.wait_for(lambda r: names(r.members).get("red-ann") == {"tab": 1}, T)
            await tab1.close()
            await watcher.wait_for(lambda r: list(names(r.members)) == ["red-bob"], T)

    async def test_presence_rejoins_after_a_reconnect(self, tmp_path: Path) -> None:
        async with (
            running(tmp_path) as (host, sync),
            client(host, "red-ann") as ann,
            client(host, "red-bob") as bob,
        ):
            b = await bob.join("board:demo", {})
            await ann.join("board:demo", {"here": True})
            await b.wait_for(lambda r: len(r.members) == 2, T)
            left: list[str] = []
            b.on(lambda kind, m: left.append(m.user["name"]) if kind == "leave" else None)
            for conn in list(sync.connections):  # ann's connection drops; her client returns
                if conn.principal == "red-ann":
                    conn.close_later(1012, "restart")
            await b.wait_for(lambda r: left == ["red-ann"], T)  # she left with her socket
            await b.wait_for(lambda r: names(r.members).get("red-ann") == {"here": True}, T)
            for conn in list(sync.connections):  # and bob's: his room is joined again too
                if conn.principal == "red-bob":
                    conn.close_later(1012, "restart")
            await bob.wait_for(lambda: bob.status != "live", T)
            await b.wait_for(lambda r: r.answered and len(r.members) == 2, T)

    async def test_presence_dropped_connection_leaves_within_a_heartbeat(
        self, tmp_path: Path
    ) -> None:
        heartbeat = 3.0
        async with (
            running(tmp_path, heartbeat=heartbeat) as (host, _),
            client(host, "red-bob") as bob,
        ):
            b = await bob.join("board:demo", {})
            hello = {"t": "hello", "v": 1, "client": "stalled-client-1", "schema": SCHEMA.hash}
            hello["auth"] = {"user": "red-ann"}
            stalled = await StalledClient.connect(
                host, [hello, {"t": "join", "room": "board:demo", "state": {"x": 1}}]
            )
            try:
                await b.wait_for(lambda r: "red-ann" in names(r.members), T)
                loop = asyncio.get_running_loop()
                silent_since = loop.time()  # it sends nothing more, reads nothing more
                stalled.stop_reading()
                await b.wait_for(lambda r: "red-ann" not in names(r.members), T)
                # a connection in a room is pinged after half a heartbeat of silence and
                # closed after one (checked every eighth of one); its leave goes out
                # then, not at two heartbeats, nor at a TCP timeout
                assert loop.time() - silent_since < heartbeat + 1.5
            finally:
                stalled.close()

    async def test_presence_refusal_is_uniform_and_shows_nothing(self, tmp_path: Path) -> None:
        async with (
            running(tmp_path) as (host, sync),
            client(host, "red-ann") as ann,
            client(host, "blue-eve") as eve,
        ):
            a = await ann.join("cards:c1", {"editing": True})
            answers = []
            for room in ("cards:c1", "cards:missing"):  # unreadable, and no such record
                with pytest.raises(PresenceRefused) as info:
                    await eve.join(room, {"spy": True})
                answers.append(str(info.value).replace(room, "ROOM"))
            assert answers[0] == answers[1]
            assert "room_refused" in answers[0]
            frames: list[Any] = []
            eve.on("presence", frames.append)
            a.update({"editing": "now"})
            eve_room = await eve.join("cards:c2", {})  # a room she may read still works
            assert list(names(eve_room.members)) == ["blue-eve"]
            await a.wait_for(lambda r: len(r.members) == 1, T)
            assert all(f.room == "cards:c2" for f in frames)
            assert names(a.members) == {"red-ann": {"editing": "now"}}  # eve never joined
            other = [c for c in sync.connections if c.principal == "blue-eve"]
            assert list(sync.presence.joined[other[0]]) == ["cards:c2"]

    async def test_presence_custom_may_join_and_limits(self, tmp_path: Path) -> None:
        limits = Limits(max_presence_bytes=64, max_rooms=2)
        async with (
            running(
                tmp_path, limits=limits, may_join=lambda user, room: not room.startswith("x")
            ) as (host, _),
            client(host, "red-ann") as ann,
        ):
            with pytest.raises(PresenceRefused):
                await ann.join("xroom", {})
            with pytest.raises(PresenceRefused, match="exceeds the limit of 64"):
                await ann.join("big", {"s": "y" * 100})
            await ann.join("one", {})
            await ann.join("two", {})
            with pytest.raises(PresenceRefused, match="at most 2 rooms"):
                await ann.join("three", {})
            assert ann.status == "live"  # refusals are not fatal

    async def test_presence_grants_rechecked_take_a_member_out(self, tmp_path: Path) -> None:
        allowed = {"red-ann", "red-bob"}
        async with (
            running(tmp_path, may_join=lambda user, room: user in allowed) as (host, sync),
            client(host, "red-ann") as ann,
            client(host, "red-bob") as bob,
        ):
            a = await ann.join("war-room", {})
            b = await bob.join("war-room", {})
            await a.wait_for(lambda r: len(r.members) == 2, T)
            allowed.discard("red-bob")
            await sync.recheck("red-bob")
            await b.wait_for(lambda r: r.left, T)
            assert b.error is not None and b.error["code"] == "room_refused"
            await a.wait_for(lambda r: list(names(r.members)) == ["red-ann"], T)
            with pytest.raises(PresenceRefused):
                await bob.join("war-room", {})

    async def test_presence_never_appears_in_the_store(self, tmp_path: Path) -> None:
        def dump() -> list[str]:
            with contextlib.closing(sqlite3.connect(tmp_path / "presence.sqlite3")) as db:
                return list(db.iterdump())

        async with running(tmp_path) as (host, sync):
            async with client(host, "red-ann") as ann, client(host, "red-bob") as bob:
                await sync.engine.head()
                before = await asyncio.to_thread(dump)
                head = await sync.engine.head()
                a = await ann.join("cards:c1", {"marker": "presence-canary"})
                b = await bob.join("cards:c1", {"marker": "presence-canary-2"})
                for i in range(20):
                    a.update({"marker": f"presence-canary-{i}"})
                await b.wait_for(
                    lambda r: {"marker": "presence-canary-19"} in names(r.members).values(), T
                )
                await a.leave()
                await b.wait_for(lambda r: len(r.members) == 1, T)
                after = await asyncio.to_thread(dump)
                assert await sync.engine.head() == head
        assert after == before
        assert not any("canary" in line for line in after)

    async def test_presence_updates_coalesce_at_the_bounded_rate(self, tmp_path: Path) -> None:
        limits = Limits(presence_per_second=5.0)
        async with (
            running(tmp_path, limits=limits) as (host, _),
            client(host, "red-ann") as ann,
            client(host, "red-bob") as bob,
        ):
            a = await ann.join("board:demo", {"x": 0})
            b = await bob.join("board:demo", {})
            await a.wait_for(lambda r: len(r.members) == 2, T)
            updates: list[Any] = []
            b.on(lambda kind, m: updates.append(m.state) if kind == "update" else None)
            loop = asyncio.get_running_loop()
            started = loop.time()
            for i in range(1, 61):  # a cursor moving 60 times a second for a second
                a.update({"x": i})
                await asyncio.sleep(1 / 60)
            await b.wait_for(lambda r: {"x": 60} in names(r.members).values(), T)
            elapsed = loop.time() - started
            assert updates[-1] == {"x": 60}  # the last value always arrives
            assert len(updates) <= 5 * elapsed + 2  # at most 5 a second passed on
            assert len(updates) >= 2


class TestPresenceNodes:
    """Two nodes in one process over a shared in-memory backplane (the Redis and
    PostgreSQL runs are tests/test_presence_multinode.py): lost messages heal at the
    next beat, and a node that stops beating loses its members within the TTL."""

    @contextlib.asynccontextmanager
    async def two_nodes(
        self, tmp_path: Path, ttl: float = 1.0
    ) -> AsyncIterator[tuple[list[str], list[Any]]]:
        from syncline.fanout.memory import MemoryBackplane, MemoryHub

        hub = MemoryHub()
        kw = {"presence_heartbeat": 0.2, "presence_ttl": ttl}
        (tmp_path / "a").mkdir()
        (tmp_path / "b").mkdir()
        async with (
            running(tmp_path / "a", backplane=MemoryBackplane(hub), **kw) as (host_a, sync_a),
            running(tmp_path / "b", backplane=MemoryBackplane(hub), **kw) as (host_b, sync_b),
        ):
            yield [host_a, host_b], [sync_a, sync_b]

    async def test_presence_lost_messages_heal_at_the_next_beat(self, tmp_path: Path) -> None:
        async with self.two_nodes(tmp_path) as ((host_a, host_b), (sync_a, sync_b)):
            async with asyncio.timeout(T):  # b's start made a announce: let that be done
                while (
                    sync_a.presence.node not in sync_b.presence.registry.heard
                    or sync_a.presence._announce_timer is not None
                ):
                    await asyncio.sleep(0.02)
            dropped: list[str] = []
            publish = sync_a.backplane.publish_presence

            def lossy(message: str) -> None:  # node a's changes never arrive
                if '"p":"set"' in message or '"p":"del"' in message:
                    dropped.append(message)
                else:
                    publish(message)

            sync_a.backplane.publish_presence = lossy  # type: ignore[method-assign]
            async with client(host_a, "red-ann") as ann, client(host_b, "red-bob") as bob:
                b = await bob.join("board:demo", {})
                await ann.join("board:demo", {"x": 1})
                assert dropped  # the join was lost on its way to b ...
                sync_a.backplane.publish_presence = publish  # type: ignore[method-assign]
                # ... and a's next beat carries a digest b disagrees with: b asks again
                await b.wait_for(lambda r: names(r.members).get("red-ann") == {"x": 1}, T)

    async def test_presence_of_a_silent_node_leaves_within_the_ttl(self, tmp_path: Path) -> None:
        async with self.two_nodes(tmp_path) as ((host_a, host_b), (sync_a, _)):
            async with client(host_a, "red-ann") as ann, client(host_b, "red-bob") as bob:
                b = await bob.join("board:demo", {})
                await ann.join("board:demo", {})
                await b.wait_for(lambda r: len(r.members) == 2, T)
                loop = asyncio.get_running_loop()
                await sync_a.presence.stop()  # node a goes silent, as if it crashed
                sync_a.backplane.publish_presence = lambda message: None  # type: ignore[method-assign]
                silent = loop.time()
                await b.wait_for(lambda r: list(names(r.members)) == ["red-bob"], T)
                assert loop.time() - silent <= 1.0 + 1.0 + 0.5  # ttl + the check's second

    async def test_presence_of_a_node_that_stops_leaves_at_once(self, tmp_path: Path) -> None:
        async with self.two_nodes(tmp_path, ttl=60.0) as ((host_a, host_b), (sync_a, _)):
            async with client(host_a, "red-ann") as ann, client(host_b, "red-bob") as bob:
                b = await bob.join("board:demo", {})
                await ann.join("board:demo", {})
                await b.wait_for(lambda r: len(r.members) == 2, T)
                await sync_a.stop()  # a graceful stop says goodbye: no 60 s wait
                await b.wait_for(lambda r: list(names(r.members)) == ["red-bob"], 5.0)
