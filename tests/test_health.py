"""``GET /sync/health`` and ``GET /sync/ready`` over real uvicorn, through real faults:
a SQLite store closed under the server, a PostgreSQL cluster the test owns stopped and
started, a Redis the test owns stopped and started (the backplane degrades to polling),
and a log reader left behind the head."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette

from syncline import Engine, Insert
from syncline.fanout.redis import RedisBackplane
from syncline.server.app import SynclineServer
from syncline.store.base import Store
from syncline.store.postgres import PostgresStore
from syncline.store.sqlite import SQLiteStore

from .live import serve
from .pg_cluster import PgCluster, pg_cluster
from .schemas import BOARD
from .test_backplane import new_channel
from .test_backplane_degraded import RedisServer, redis_server

__all__ = ["pg_cluster", "redis_server"]  # the fixtures, imported to be found

T = 30.0  # a guard against hangs, not a speed requirement


@contextlib.asynccontextmanager
async def running(store: Store, **server_kw: Any) -> AsyncIterator[tuple[str, SynclineServer]]:
    await store.open()
    engine = Engine(BOARD, store)
    sync = SynclineServer(engine, **server_kw)
    app = Starlette(routes=sync.routes, lifespan=sync.lifespan)
    try:
        async with serve(app) as host:
            yield host, sync
    finally:
        await store.close()


async def ready(host: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    async with httpx.AsyncClient(timeout=T) as http:
        r = await http.get(f"http://{host}/sync/ready", headers=headers)
    assert r.headers["content-type"] == "application/json"
    assert r.headers["cache-control"] == "no-store"
    return r.status_code, r.json()


async def health(host: str) -> int:
    async with httpx.AsyncClient(timeout=T) as http:
        r = await http.get(f"http://{host}/sync/health")
    assert r.json() == {"status": "ok"}
    return r.status_code


async def ready_becomes(host: str, want: Callable[[int, dict[str, Any]], bool]) -> dict[str, Any]:
    """Poll readiness until ``want(status, body)``; the last body."""
    async with asyncio.timeout(T):
        while True:
            status, body = await ready(host)
            if want(status, body):
                return body
            await asyncio.sleep(0.05)


async def commit(sync: SynclineServer, rid: str) -> None:
    async with sync.engine.transaction("admin") as tx:
        tx.apply(Insert(c="boards", id=rid, fields={"name": rid}))


async def test_ready_when_all_is_well_and_probes_need_no_origin_nor_a_known_host(
    tmp_path: Path,
) -> None:
    async with running(SQLiteStore(tmp_path / "s.sqlite3"), allowed_hosts=["app.example"]) as (
        host,
        sync,
    ):
        await commit(sync, "b1")
        async with asyncio.timeout(T):
            while sync.reader.position != 1:  # the reader reads the commit
                await asyncio.sleep(0.01)
        # A load balancer's probe: Host is the node's address, no Origin.
        probe = {"host": "10.0.0.5:8000"}
        status, body = await ready(host, probe)
        assert status == 200, body
        assert body["status"] == "ready"
        checks = body["checks"]
        assert checks["store"]["ok"] is True and checks["store"]["seconds"] >= 0
        assert checks["reader"] == {
            "ok": True,
            "position": 1,
            "head": 1,
            "max_lag_seconds": 10.0,
            "lag_seconds": 0.0,
        }
        assert checks["backplane"] == {
            "ok": True,
            "state": "connected",
            "kind": "MemoryBackplane",
            "reconnects": 0,
        }
        async with httpx.AsyncClient(timeout=T) as http:
            r = await http.get(f"http://{host}/sync/health", headers=probe)
            assert (r.status_code, r.json()) == (200, {"status": "ok"})
            assert r.headers["x-content-type-options"] == "nosniff"  # security headers on
            # The data endpoints keep refusing a Host they do not know.
            pulled = await http.get(f"http://{host}/sync/pull", headers=probe)
            assert pulled.status_code == 403


async def test_a_store_closed_under_the_server_is_not_ready_and_still_alive(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    async with running(store) as (host, _):
        assert (await ready(host))[0] == 200
        await store.close()  # the database goes away under a running server
        with caplog.at_level(logging.WARNING, logger="syncline.server"):
            for _ in range(3):
                status, body = await ready(host)
                assert status == 503, body
                assert body["status"] == "not_ready"
                assert body["checks"]["store"] == {"ok": False, "error": "store_error"}
                assert body["checks"]["reader"]["ok"] is False
                assert body["checks"]["backplane"]["ok"] is True
        lines = [r.getMessage() for r in caplog.records if "not ready" in r.getMessage()]
        assert len(lines) == 1, lines  # once per change of readiness, not per probe
        assert "the store failed a read" in lines[0] and "closed" in lines[0]
        assert await health(host) == 200  # liveness reads nothing


async def test_a_stopped_postgresql_is_not_ready_until_it_is_back(pg_cluster: PgCluster) -> None:
    store = PostgresStore(pg_cluster.dsn, schema="syncline_metrics_health", max_size=2)
    async with running(store, ready_timeout=2.0) as (host, sync):
        await commit(sync, "b1")
        assert (await ready(host))[0] == 200
        await asyncio.to_thread(pg_cluster.stop)
        body = await ready_becomes(host, lambda status, _: status == 503)
        assert body["checks"]["store"]["ok"] is False
        assert body["checks"]["store"]["error"] in ("unavailable", "timeout", "store_error")
        assert await health(host) == 200
        await asyncio.to_thread(pg_cluster.start)
        body = await ready_becomes(host, lambda status, _: status == 200)
        assert body["status"] == "ready" and body["checks"]["store"]["ok"] is True


async def test_a_degraded_backplane_is_still_ready_and_says_degraded(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    redis_server.start()
    backplane = RedisBackplane(redis_server.url, new_channel())
    async with running(SQLiteStore(tmp_path / "s.sqlite3"), backplane=backplane) as (host, _):
        body = await ready_becomes(host, lambda _, b: b["status"] == "ready")
        before = body["checks"]["backplane"]["reconnects"]  # 1 if Redis was still starting
        redis_server.stop()
        body = await ready_becomes(host, lambda _, b: b["status"] == "degraded")
        status, body = await ready(host)
        assert status == 200
        assert body["checks"]["backplane"] == {
            "ok": True,
            "state": "degraded",
            "kind": "RedisBackplane",
            "reconnects": before,
        }
        redis_server.start()
        body = await ready_becomes(host, lambda _, b: b["status"] == "ready")
        assert body["checks"]["backplane"]["reconnects"] == before + 1


async def test_a_log_reader_behind_the_head_is_not_ready(tmp_path: Path) -> None:
    async with running(SQLiteStore(tmp_path / "s.sqlite3"), max_reader_lag=0.3) as (host, sync):
        await sync.reader.stop()  # the reader stalls; commits go on
        await commit(sync, "b1")
        body = await ready_becomes(host, lambda status, _: status == 503)
        reader = body["checks"]["reader"]
        assert reader["ok"] is False and reader["position"] == 0 and reader["head"] == 1
        assert reader["lag_seconds"] > 0.3
        assert body["checks"]["store"]["ok"] is True
        await sync.reader.start()
        await ready_becomes(host, lambda status, _: status == 200)


async def test_the_probe_starts_a_server_nothing_used_yet(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")
    await store.open()
    sync = SynclineServer(Engine(BOARD, store))
    try:
        async with serve(Starlette(routes=sync.routes)) as host:  # no lifespan: lazy start
            assert not sync.started
            status, body = await ready(host)
            assert (status, body["status"]) == (200, "ready")
            assert sync.started
            await sync.stop()
    finally:
        await store.close()


async def test_a_forgotten_lifespan_is_not_ready_and_says_setup(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "s.sqlite3")  # never opened: nobody entered the lifespan
    sync = SynclineServer(Engine(BOARD, store))
    async with serve(Starlette(routes=sync.routes)) as host:
        status, body = await ready(host)
        assert (status, body["status"]) == (503, "not_ready")
        assert body["checks"]["store"] == {"ok": False, "error": "setup"}
        assert await health(host) == 200
