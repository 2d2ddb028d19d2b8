"""A node starts while its backplane's server is down, serves degraded (other nodes'
commits arrive through its poll of the log), and joins the backplane when the server
returns: Redis (a ``redis-server`` this test starts on a free port, stops and starts
again) and PostgreSQL LISTEN/NOTIFY (on a cluster the test owns, tests/pg_cluster.py).

Under CI=true a missing ``redis-server`` or PostgreSQL fails these tests; elsewhere
they skip. Timeouts only guard against hangs; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis

from syncline.client import Client
from syncline.fanout.backplane import RemoteBackplane
from syncline.fanout.postgres import PostgresBackplane
from syncline.fanout.redis import RedisBackplane

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema
from .pg_cluster import PgCluster, pg_cluster
from .servers import ROOT, free_port
from .test_backplane import Heard, check_postgres, new_channel

__all__ = ["pg_cluster"]  # the fixture, imported to be found

T = 20.0  # a guard against hangs, not a speed requirement


class RedisServer:
    """``redis-server`` on a loopback port of its own, nothing saved to disk."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = "redis-server is not installed"
            if os.environ.get("CI") == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                *(self.binary, "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--daemonize", "no"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.kill()
            process.wait(10)

    async def subscribers(self, channel: str) -> int:
        """How many connections are subscribed to ``channel`` (0 while it is down)."""
        client = aioredis.Redis.from_url(self.url, socket_connect_timeout=1)
        try:
            counts = await client.pubsub_numsub(channel)
            return int(counts[0][1])
        except (OSError, aioredis.RedisError):
            return 0
        finally:
            await client.aclose()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A Redis of the test's own, not yet started."""
    server = RedisServer()
    try:
        yield server
    finally:
        server.stop()


async def until(predicate: Callable[[], Any], timeout: float = T) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def heard_after_publishing(sender: RemoteBackplane, heard: Heard) -> None:
    """Publish growing heads from ``sender`` until ``heard`` gets one (a head sent while
    the listener is still subscribing may be lost: that is the poll's job)."""
    base = max(heard.heads, default=0) + 1000
    async with asyncio.timeout(T):
        n = 0
        while not any(h > base for h in heard.heads):
            n += 1
            await sender.publish(base + n)
            await asyncio.sleep(0.05)


async def degrade_then_join(
    make: Callable[[], RemoteBackplane],
    server_down: Callable[[], None],
    server_up: Callable[[], None],
) -> None:
    """Start a backplane with its server down; it joins when the server comes up,
    survives another outage, and hears heads each time."""
    server_down()
    node, heard = make(), Heard()
    await node.start(heard)  # before the fix: BackplaneError, and the node exits
    other: RemoteBackplane | None = None
    try:
        assert node.state == "degraded" and node.reconnects == 0
        server_up()
        await until(lambda: node.state == "connected")
        assert node.reconnects == 1
        other = make()
        await other.start(Heard())
        assert other.state == "connected"
        await heard_after_publishing(other, heard)
        server_down()
        await until(lambda: node.state == "degraded")
        server_up()
        await until(lambda: node.state == "connected" and other.state == "connected")
        assert node.reconnects == 2
        await heard_after_publishing(other, heard)
    finally:
        await node.stop()
        if other is not None:
            await other.stop()


async def test_a_redis_backplane_started_during_an_outage_joins_when_redis_returns(
    redis_server: RedisServer,
) -> None:
    channel = new_channel()
    await degrade_then_join(
        lambda: RedisBackplane(redis_server.url, channel), redis_server.stop, redis_server.start
    )


async def test_a_listen_backplane_started_during_an_outage_joins_when_postgresql_returns(
    pg_cluster: PgCluster,
) -> None:
    channel = new_channel()
    await degrade_then_join(
        lambda: PostgresBackplane(pg_cluster.dsn, channel), pg_cluster.stop, pg_cluster.start
    )


# --- syncline serve ---------------------------------------------------------------------


def serve(port: int, db: str, backplane: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [
                *(sys.executable, "-m", "syncline", "serve", "syncline.examples.notes.app:app"),
                *("--db", db, "--backplane", backplane, "--port", str(port)),
            ],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until_up(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + T
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return
        except httpx.TransportError:
            if proc.poll() is not None:
                raise AssertionError(
                    f"the node exited with {proc.returncode}:\n{log.read_text()[-3000:]}"
                ) from None
            assert time.monotonic() < deadline, "the node did not start"
            time.sleep(0.1)


def note_text(c: Client, note_id: str) -> Any:
    record = c.get("notes", note_id)
    return None if record is None else record["text"]


async def test_syncline_serve_starts_while_redis_is_down_and_joins_it_later(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    from syncline.examples.notes.app import schema

    await check_postgres()
    pg_schema = new_pg_schema()
    db = f"{PG_DSN}?schema={pg_schema}"
    ports = [free_port(), free_port()]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    nodes: list[subprocess.Popen[bytes]] = []
    query = {"notes": {"c": "notes"}}
    try:
        nodes.append(serve(ports[0], db, redis_server.url, logs[0]))  # Redis is down
        await asyncio.to_thread(wait_until_up, ports[0], nodes[0], logs[0])
        a_url = f"ws://127.0.0.1:{ports[0]}/sync"
        async with Client(a_url, schema) as reader, Client(a_url, schema) as writer:
            await reader.subscribe(query, timeout=T)
            writer.insert("notes", "n1", text="written while Redis is down")
            await writer.wait_synced(T)
            await reader.wait_for(lambda: note_text(reader, "n1") is not None, T)

            redis_server.start()
            async with asyncio.timeout(T):  # node a joins the backplane by itself
                while await redis_server.subscribers("syncline") < 1:
                    await asyncio.sleep(0.05)
            nodes.append(serve(ports[1], db, redis_server.url, logs[1]))
            await asyncio.to_thread(wait_until_up, ports[1], nodes[1], logs[1])
            async with asyncio.timeout(T):
                while await redis_server.subscribers("syncline") < 2:
                    await asyncio.sleep(0.05)
            async with Client(f"ws://127.0.0.1:{ports[1]}/sync", schema) as other:
                other.insert("notes", "n2", text="written on node b")
                await other.wait_synced(T)
            await reader.wait_for(lambda: note_text(reader, "n2") == "written on node b", T)
        text = logs[0].read_text()
        assert "cannot connect" in text and "serving degraded" in text
        assert "connected again" in text
    finally:
        for node in nodes:
            node.terminate()
            node.wait(10)
        await drop_pg_schema(pg_schema)
