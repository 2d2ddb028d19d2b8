"""Backplanes against the real Redis and PostgreSQL: delivery between nodes, coalescing,
echo suppression, reconnection, and the log as the truth: a lost message only delays
delivery, since every log reader polls the head.

Each test uses its own channel (and, where a store is needed, its own schema). Under
CI=true a Redis or PostgreSQL that cannot be reached fails these tests; elsewhere they
skip. Timeouts only guard against hangs; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Callable
from typing import Any, NoReturn

import asyncpg
import pytest
import redis.asyncio as aioredis

from syncline import Engine, Insert, Query
from syncline.exceptions import BackplaneError
from syncline.fanout.backplane import Backplane, RemoteBackplane
from syncline.fanout.memory import MemoryBackplane, MemoryHub
from syncline.fanout.postgres import PostgresBackplane
from syncline.fanout.reader import ChangesPart, LogReader
from syncline.fanout.redis import RedisBackplane
from syncline.fanout.select import BACKPLANE_ENV, backplane_from_env, backplane_from_url
from syncline.store.postgres import PostgresStore

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema, pg_unavailable
from .schemas import BOARD

REDIS_URL = os.environ.get("SYNCLINE_TEST_REDIS", "redis://127.0.0.1:6379/0")
T = 10.0  # a guard against hangs, not a speed requirement


def redis_unavailable(exc: BaseException) -> NoReturn:
    """Redis cannot be reached: under CI=true the test fails, elsewhere it skips."""
    message = f"Redis at {REDIS_URL} cannot be reached: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


async def check_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        await client.ping()
    except (OSError, aioredis.RedisError) as exc:
        redis_unavailable(exc)
    finally:
        await client.aclose()


async def check_postgres() -> None:
    try:
        conn = await asyncpg.connect(PG_DSN, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        pg_unavailable(exc)
    await conn.close()


def new_channel() -> str:
    return f"syncline_test_{secrets.token_hex(6)}"


class Heard:
    """An ``on_head`` that records what it is given."""

    def __init__(self) -> None:
        self.heads: list[int] = []
        self._changed = asyncio.Event()

    def __call__(self, head: int) -> None:
        self.heads.append(head)
        self._changed.set()

    async def wait_for(self, predicate: Callable[[list[int]], bool], timeout: float = T) -> None:
        async with asyncio.timeout(timeout):
            while not predicate(self.heads):
                self._changed.clear()
                await self._changed.wait()


Make = Callable[[], Backplane]


@pytest.fixture(params=["memory", "redis", "postgres"])
async def make(request: pytest.FixtureRequest) -> AsyncIterator[Make]:
    """``make()``: a new backplane of the parametrized kind, on the test's channel."""
    channel, hub = new_channel(), MemoryHub()
    made: list[Backplane] = []
    if request.param == "redis":
        await check_redis()
    elif request.param == "postgres":
        await check_postgres()

    def factory() -> Backplane:
        backplane: Backplane
        if request.param == "memory":
            backplane = MemoryBackplane(hub)
        elif request.param == "redis":
            backplane = RedisBackplane(REDIS_URL, channel)
        else:
            backplane = PostgresBackplane(PG_DSN, channel)
        made.append(backplane)
        return backplane

    yield factory
    for backplane in made:
        await backplane.stop()


async def started(make: Make, n: int) -> list[tuple[Backplane, Heard]]:
    nodes = []
    for _ in range(n):
        backplane, heard = make(), Heard()
        await backplane.start(heard)
        nodes.append((backplane, heard))
    return nodes


async def test_a_head_published_on_one_node_reaches_every_other_node(make: Make) -> None:
    (a, heard_a), (_, heard_b), (_, heard_c) = await started(make, 3)
    await a.publish(5)
    await heard_b.wait_for(lambda h: 5 in h)
    await heard_c.wait_for(lambda h: 5 in h)
    a.announce(6)  # the synchronous form, for commit listeners
    await heard_b.wait_for(lambda h: 6 in h)
    await asyncio.sleep(0.05)
    assert heard_a.heads == []  # a node is not told of its own commits


async def test_heads_are_coalesced_and_the_newest_always_arrives(make: Make) -> None:
    (a, _), (b, heard_b) = await started(make, 2)
    for head in range(1, 201):
        await a.publish(head)
    await heard_b.wait_for(lambda h: bool(h) and h[-1] == 200)
    assert heard_b.heads == sorted(set(heard_b.heads))  # never an older head after a newer
    await b.publish(300)
    await a.publish(250)  # older than what b knows: nothing to tell it
    await a.publish(301)
    await heard_b.wait_for(lambda h: h[-1] == 301)
    assert 250 not in heard_b.heads


async def test_a_stopped_backplane_hears_nothing(make: Make) -> None:
    (a, _), (b, heard_b) = await started(make, 2)
    await b.stop()
    await a.publish(9)
    await asyncio.sleep(0.2)
    assert heard_b.heads == []


async def kill_listener(backplane: RemoteBackplane) -> None:
    """Cut the backplane's listening connection from the server side."""
    if isinstance(backplane, RedisBackplane):
        admin = aioredis.Redis.from_url(REDIS_URL)
        try:
            for client in await admin.client_list():
                if client.get("name") == f"syncline:{backplane.channel}":
                    await admin.client_kill_filter(_id=client["id"])
        finally:
            await admin.aclose()
    else:
        assert isinstance(backplane, PostgresBackplane) and backplane._conn is not None
        pid = backplane._conn.get_server_pid()
        conn = await asyncpg.connect(PG_DSN)
        try:
            assert await conn.fetchval("SELECT pg_terminate_backend($1)", pid)
        finally:
            await conn.close()


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_node_whose_connection_is_cut_reconnects_and_hears_again(kind: str) -> None:
    channel = new_channel()
    if kind == "redis":
        await check_redis()
        a: RemoteBackplane = RedisBackplane(REDIS_URL, channel)
        b: RemoteBackplane = RedisBackplane(REDIS_URL, channel)
    else:
        await check_postgres()
        a, b = PostgresBackplane(PG_DSN, channel), PostgresBackplane(PG_DSN, channel)
    heard = Heard()
    await a.start(Heard())
    await b.start(heard)
    try:
        await kill_listener(b)
        head = 0
        async with asyncio.timeout(T):
            while not any(h > 0 for h in heard.heads):
                head += 1
                await a.publish(head)  # lost while b reconnects; heard once it is back
                await asyncio.sleep(0.1)
        assert b.connected.is_set()
    finally:
        await a.stop()
        await b.stop()


async def test_start_with_the_server_unreachable_runs_degraded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A node must start during an outage (tests/test_backplane_degraded.py shows it
    joining when the server returns)."""
    for backplane in (
        RedisBackplane("redis://127.0.0.1:1/0", new_channel()),
        PostgresBackplane("postgresql://postgres@127.0.0.1:1/test", new_channel()),
    ):
        await backplane.start(Heard())
        try:
            assert backplane.state == "degraded" and backplane.reconnects == 0
            await backplane.publish(3)  # dropped, never raised
        finally:
            await backplane.stop()
        assert f"{backplane}: cannot connect" in caplog.text


def test_backplane_from_url_names_each_backend() -> None:
    assert isinstance(backplane_from_url(None), MemoryBackplane)
    assert isinstance(backplane_from_url("memory"), MemoryBackplane)
    redis = backplane_from_url("redis://127.0.0.1:6379/0", channel="c1")
    assert isinstance(redis, RedisBackplane) and redis.channel == "c1"
    pg = backplane_from_url("postgres", database=PG_DSN)
    assert isinstance(pg, PostgresBackplane) and pg.dsn == PG_DSN
    assert isinstance(backplane_from_url(PG_DSN), PostgresBackplane)
    with pytest.raises(BackplaneError, match="give a postgresql:// --db"):
        backplane_from_url("postgres", database="app.sqlite3")
    with pytest.raises(BackplaneError, match="unsupported backplane 'nats://x'"):
        backplane_from_url("nats://x")


def test_backplane_from_env_reads_what_serve_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(BACKPLANE_ENV, raising=False)
    assert isinstance(backplane_from_env(), MemoryBackplane)
    monkeypatch.setenv(BACKPLANE_ENV, "postgres")
    monkeypatch.setenv("SYNCLINE_DB", PG_DSN)
    pg = backplane_from_env(channel="c2")
    assert isinstance(pg, PostgresBackplane) and (pg.dsn, pg.channel) == (PG_DSN, "c2")


# --- the log is the truth ---------------------------------------------------------------


class Subscriber:
    """The part of a connection the log reader talks to."""

    def __init__(self) -> None:
        self.principal: Any = "alice"
        self.principal_key = "alice"
        self.read_key: object = "alice"
        self.queries: dict[str, Query] = {}
        self.cursor: int | None = None
        self.awaiting_seq = 0
        self.left = False
        self.resync = False
        self.parts: list[ChangesPart] = []
        self.frames: list[dict[str, Any]] = []
        self.changed = asyncio.Event()

    def send_changes(self, part: ChangesPart) -> None:
        self.parts.append(part)
        self.changed.set()

    def send_frame(self, frame: dict[str, Any]) -> None:
        self.frames.append(frame)

    def seen(self, record_id: str) -> bool:
        return any(record_id in item for p in self.parts for i in p.items.values() for item in i)

    async def wait_for(self, record_id: str) -> None:
        async with asyncio.timeout(T):
            while not self.seen(record_id):
                self.changed.clear()
                await self.changed.wait()


@pytest.fixture
async def two_nodes() -> AsyncIterator[tuple[Engine, Engine]]:
    """Two engines ("nodes") over one PostgreSQL schema, seeded with board b1, list l1."""
    await check_postgres()
    schema = new_pg_schema()
    stores = [PostgresStore(PG_DSN, schema=schema, max_size=3) for _ in range(2)]
    try:
        for s in stores:
            await s.open()
        engines = Engine(BOARD, stores[0]), Engine(BOARD, stores[1])
        async with engines[0].transaction("admin") as tx:
            tx.apply(
                Insert(c="boards", id="b1", fields={"name": "Board"}),
                Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            )
        yield engines
    finally:
        for s in stores:
            await s.close()
        await drop_pg_schema(schema)


def insert(rid: str) -> Insert:
    return Insert(c="cards", id=rid, fields={"list_id": "l1", "title": rid})


@pytest.mark.parametrize("kind", ["redis", "postgres"])
async def test_a_lost_message_only_delays_delivery(
    two_nodes: tuple[Engine, Engine], kind: str
) -> None:
    """Node a announces its commits on the backplane; node b's reader hears them. When
    b's backplane is down (the message is lost), b's once-a-second poll of the head
    still delivers the change from the log."""
    a, b = two_nodes
    channel = new_channel()
    if kind == "redis":
        await check_redis()
        pub: Backplane = RedisBackplane(REDIS_URL, channel)
        sub: Backplane = RedisBackplane(REDIS_URL, channel)
    else:
        pub, sub = PostgresBackplane(PG_DSN, channel), PostgresBackplane(PG_DSN, channel)
    reader = LogReader(b)  # polls every poll_interval (1 s) too
    conn = Subscriber()
    await pub.start(Heard())
    a.on_commit(pub.announce)
    await reader.start()
    try:
        await sub.start(reader.notify)
        await reader.join(conn, {"all": Query("cards")}, None)
        assert conn.frames and conn.frames[0]["t"] == "snapshot"

        async with a.transaction("admin") as tx:
            tx.apply(insert("via-backplane"))
        await conn.wait_for("via-backplane")

        await sub.stop()  # b hears nothing more: every message from now on is lost
        async with a.transaction("admin") as tx:
            tx.apply(insert("via-poll"))
        await conn.wait_for("via-poll")  # the poll found it in the log
        cursors = [(p.since, p.to) for p in conn.parts]
        assert all(to == nxt for (_, to), (nxt, _) in itertools.pairwise(cursors))
        assert cursors[-1][1] == (await b.head()).seq
    finally:
        await reader.stop()
        await sub.stop()
        await pub.stop()
