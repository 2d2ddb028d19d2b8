"""What syncline logs about refusals and disconnects: each with its reason and fields,
once per episode for repeated ones (a flood of bad frames is a line and a count), and
the start-up configuration without secrets."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from syncline import Engine
from syncline.server.app import SynclineServer
from syncline.store.postgres import PostgresStore
from syncline.store.sqlite import SQLiteStore

from .conftest import PG_DSN, drop_pg_schema, new_pg_schema
from .live import RawClient
from .schemas import BOARD
from .test_health import running as serving
from .test_metrics import authenticate
from .test_server import card_insert


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[str, SynclineServer]]:
    store = SQLiteStore(tmp_path / "l.sqlite3")
    async with serving(store, authenticate=authenticate, **kw) as (host, sync):
        yield host, sync


def lines(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith("syncline")]


async def until(predicate: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.02)


async def test_a_flood_of_bad_frames_logs_one_line_and_a_count(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="syncline")
    async with running(tmp_path) as (host, sync):
        async with RawClient.connect(host, BOARD, client_id="flooder-0001") as c:
            caplog.clear()
            for _ in range(1000):
                await c.send("not json")
            for _ in range(1000):
                assert (await c.expect("error"))["code"] == "bad_json"
        await until(lambda: not sync.connections)
    records = lines(caplog)
    refused = [r for r in records if "was refused" in r.getMessage()]
    assert len(refused) == 1, [r.getMessage() for r in records]
    assert refused[0].levelno == logging.INFO
    assert refused[0].__dict__["code"] == "bad_json"
    assert refused[0].__dict__["client_id"] == "flooder-0001"
    counts = [r for r in records if "more like it" in r.getMessage()]
    assert [r.__dict__["repeated"] for r in counts] == [999]  # told when it closed
    assert len(records) <= 5, [r.getMessage() for r in records]  # and the close, the stop


async def test_refusals_and_disconnects_are_logged_with_their_reasons(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="syncline")
    async with running(tmp_path, heartbeat=0.3) as (host, sync):
        # Unauthorized, twenty times from one peer: one line for the episode.
        for _ in range(20):
            async with RawClient.connect(host, BOARD, hello=False) as c:
                await c.hello(auth={"user": "bad"})
                with pytest.raises(websockets.ConnectionClosed):
                    await c.recv()
        # A foreign origin.
        with pytest.raises(websockets.InvalidStatus):
            async with RawClient.connect(host, BOARD, origin="http://evil.example"):
                pass
        # HTTP 401s, five from one peer: one line.
        async with httpx.AsyncClient(timeout=10) as http:
            for _ in range(5):
                r = await http.post(
                    f"http://{host}/sync/mutate",
                    json={"client": "h-0001", "mut": {"id": 1, "ops": []}},
                    headers={"x-user": "bad"},
                )
                assert r.status_code == 401
        # A reject with its code, and fields.
        async with RawClient.connect(host, BOARD, client_id="rejected-0001") as c:
            frame = await c.mutate([card_insert("c9", list_id="ghost")], 1)
            assert frame["code"] == "missing_reference"
        # A heartbeat timeout: a client that answers no ping.
        async with RawClient.connect(host, BOARD, client_id="silent-0001") as c:
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await c.recv(timeout=10)
        # A revoked session.
        async with RawClient.connect(host, BOARD, client_id="revoked-0001") as c:
            assert sync.revoke("anonymous") == 1
            with pytest.raises(websockets.ConnectionClosed):
                while True:
                    await c.recv(timeout=10)
        await until(lambda: not sync.connections)
    messages = [r.getMessage() for r in lines(caplog)]
    unauthorized = [m for m in messages if "with 4001 (unauthorized)" in m]
    assert len(unauthorized) == 1, messages
    assert "authentication failed" in unauthorized[0]
    assert "close 4001: 19 more like it" in " ".join(messages)  # counted; told at the stop
    http_401 = [m for m in messages if "authentication failed (HTTP 401)" in m]
    assert len(http_401) == 1, messages
    origin = [m for m in messages if "origin 'http://evil.example'" in m]
    assert len(origin) == 1, messages
    [reject] = [r for r in lines(caplog) if "refused (missing_reference" in r.getMessage()]
    assert reject.__dict__["mutation_id"] == 1
    assert reject.__dict__["client_id"] == "rejected-0001"
    assert reject.__dict__["principal"] == "anonymous"
    assert reject.__dict__["code"] == "missing_reference"
    [heartbeat] = [r for r in lines(caplog) if "with 4000 (heartbeat timeout)" in r.getMessage()]
    assert heartbeat.__dict__["client_id"] == "silent-0001"
    assert "no frame within two heartbeats" in heartbeat.getMessage()
    [revoked] = [r for r in lines(caplog) if "with 4004 (session revoked)" in r.getMessage()]
    assert revoked.__dict__["client_id"] == "revoked-0001"


async def test_the_start_up_configuration_is_logged_without_secrets(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="syncline")
    schema = new_pg_schema()
    dsn = PG_DSN.replace("postgres@", "postgres:s3cret-metrics@", 1)  # trust auth ignores it
    assert "s3cret-metrics" in dsn
    store = PostgresStore(dsn, schema=schema, max_size=2)
    try:
        await store.open()
        sync = SynclineServer(Engine(BOARD, store), allowed_origins=["https://app.example"])
        await sync.start()
        await sync.stop()
    finally:
        await store.close()
        await drop_pg_schema(schema)
    [line] = [r.getMessage() for r in lines(caplog) if "sync node started" in r.getMessage()]
    assert "store PostgresStore postgresql://postgres:***@" in line
    assert f"schema {schema}" in line
    assert "backplane MemoryBackplane (connected), log head 0" in line
    assert "heartbeat 20s, max_queue_bytes 4194304" in line
    assert "allowed_origins ['https://app.example']" in line
    assert all("s3cret" not in r.getMessage() for r in caplog.records)
