"""Prometheus metrics: a scripted workload over real uvicorn and WebSockets, then a
scrape of ``/metrics`` whose counts must be exactly what the workload did; separate
registries per server; multi-process mode across processes; the missing extra."""

from __future__ import annotations

import asyncio
import contextlib
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.routing import Mount

from syncline import Engine, Insert
from syncline.exceptions import MissingExtra
from syncline.protocol import Limits
from syncline.server.app import SynclineServer
from syncline.store.memory import MemoryStore
from syncline.store.sqlite import SQLiteStore

from .live import RawClient, StalledClient, serve
from .schemas import BOARD
from .servers import ROOT, free_port
from .test_backplane_degraded import wait_until_up
from .test_server import CARDS, card_insert

LISTS = {"lists": {"c": "lists"}}
BOARD_INSERT = {"op": "insert", "c": "boards", "id": "b1", "fields": {"name": "B"}}
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(host: str) -> Samples:
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.get(f"http://{host}/metrics/")
    assert r.status_code == 200
    return parse(r.text)


def parse(text: str) -> Samples:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def get(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def authenticate(conn: Any, credentials: Mapping[str, Any] | None) -> str | None:
    """Refuses ``{"user": "bad"}`` in a hello, and the header ``X-User: bad``."""
    if credentials and credentials.get("user") == "bad":
        return None
    return None if conn.headers.get("x-user") == "bad" else "anonymous"


async def seeded(path: Path) -> Engine:
    """An engine on a new SQLite store at ``path`` holding a board, a list and a card."""
    store = SQLiteStore(path)
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
            Insert(c="cards", id="c1", fields={"list_id": "l1", "title": "first"}),
        )
    return engine


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **kw: Any) -> AsyncIterator[tuple[str, SynclineServer]]:
    engine = await seeded(tmp_path / "m.sqlite3")
    store = engine.store
    sync = SynclineServer(engine, authenticate=authenticate, **kw)
    app = Starlette(
        routes=[*sync.routes, Mount("/metrics", sync.metrics_app())], lifespan=sync.lifespan
    )
    try:
        async with serve(app) as host:
            yield host, sync
    finally:
        await store.close()


async def test_a_scrape_after_a_workload_counts_exactly_what_it_did(tmp_path: Path) -> None:
    limits = Limits(mutations_per_second=10_000, mutation_burst=10_000)
    async with running(
        tmp_path, limits=limits, max_queue_bytes=256_000, close_timeout=1.0, heartbeat=600.0
    ) as (host, sync):
        store = sync.engine.store
        assert isinstance(store, SQLiteStore)
        head0, commits0 = (await sync.engine.head()).seq, store.commits
        sent_in: dict[str, int] = {}
        acks = rejects = 0

        def sent(kind: str, n: int = 1) -> None:
            sent_in[kind] = sent_in.get(kind, 0) + n

        async with (
            websockets.connect(f"ws://{host}/sync") as idle,  # never says hello
            RawClient.connect(host, BOARD) as a,
            RawClient.connect(host, BOARD) as b,
            RawClient.connect(host, BOARD) as w,
        ):
            sent("hello", 3)
            async with RawClient.connect(host, BOARD, hello=False) as bad_login:
                await bad_login.hello(auth={"user": "bad"})
                sent("hello")
                assert bad_login.frames[-1]["code"] == "unauthorized"
                with pytest.raises(websockets.ConnectionClosed):
                    await bad_login.recv()
            await a.subscribe(CARDS)
            await a.subscribe(LISTS)
            await b.subscribe(LISTS)
            sent("sub", 3)
            for mid in range(1, 6):  # applied
                assert (await w.mutate([card_insert(f"n{mid}")], mid))["t"] == "ack"
            status = {"op": "update", "c": "cards", "id": "c1", "base": {"status": 1}}
            moved = {**status, "set": {"status": "doing"}, "prev": {"status": "todo"}}
            assert (await a.mutate([moved], 1))["status"] == "applied"
            mine = {**status, "set": {"status": "done"}, "prev": {"status": "todo"}}
            assert (await w.mutate([mine], 6, mode="whole"))["status"] == "conflict"
            ghost = await w.mutate([card_insert("g", list_id="ghost")], 7)
            assert (ghost["t"], ghost["code"], ghost["permanent"]) == (
                "reject",
                "missing_reference",
                True,
            )
            gap = await w.mutate([card_insert("x")], 9)
            assert (gap["code"], gap["permanent"]) == ("gap", False)
            assert (await w.mutate([card_insert("n1")], 1))["replay"] is True
            assert (await w.mutate([card_insert("g", list_id="ghost")], 7))["replay"] is True
            acks += 5 + 1 + 1 + 1  # applied (w), applied (a), conflict, duplicate ack
            rejects += 3  # missing_reference, gap, the replayed reject
            sent("mut", 5 + 1 + 1 + 1 + 1 + 2)
            for junk in ("not json", "[1,2]", '{"t":"nope"}'):
                await w.send(junk)
                assert (await w.expect("error"))["code"] in (
                    "bad_json",
                    "bad_frame",
                    "unknown_frame",
                )
            sent("bad", 3)
            bad_bytes = len("not json") + len("[1,2]") + len('{"t":"nope"}')

            # A consumer that stops reading is cut off (4008) while the others keep up.
            hello = {"t": "hello", "v": 1, "client": "stalled-0001", "schema": BOARD.hash}
            slow = await StalledClient.connect(host, [hello, {"t": "sub", "queries": CARDS}])
            sent("hello")
            sent("sub")
            assert (await slow.next_frame())[1].startswith(b'{"t":"welcome"')
            assert (await slow.next_frame())[1].startswith(b'{"t":"snapshot"')
            slow.stop_reading()
            big, cut_after = "x" * 90_000, 0
            for mid in range(8, 400):
                ack = await w.mutate([card_insert(f"big{mid}", description=big)], mid)
                assert ack["t"] == "ack", ack
                await a.pump(ack["seq"])
                if not any(c.client_id == "stalled-0001" for c in sync.connections):
                    cut_after = mid - 7
                    break
            assert cut_after, "the slow consumer was never disconnected"
            sent("mut", cut_after)
            acks += cut_after
            slow.resume_reading()
            assert (await slow.close_code())[0] == 4008
            slow.close()
            async with httpx.AsyncClient(timeout=10) as http:  # an HTTP pull's snapshot
                pulled = await http.get(
                    f"http://{host}/sync/pull", params={"queries": orjson.dumps(LISTS).decode()}
                )
                assert pulled.json()["t"] == "snapshot"
                posted = await http.post(  # an HTTP mutation counts as a WebSocket one
                    f"http://{host}/sync/mutate",
                    json={"client": "http-0001", "mut": {"id": 1, "ops": [card_insert("h1")]}},
                )
                assert posted.json()["status"] == "applied"

            head = (await sync.engine.head()).seq
            await a.pump(head)
            m = await scrape(host)
            assert get(m, "syncline_connections", state="awaiting_hello") == 1
            assert get(m, "syncline_connections", state="live") == 3
            assert get(m, "syncline_subscriptions") == 3
            applied = 5 + 1 + cut_after + 1
            assert get(m, "syncline_mutations_total", outcome="applied", code="") == applied
            assert get(m, "syncline_mutations_total", outcome="conflict", code="") == 1
            assert get(m, "syncline_mutations_total", outcome="duplicate", code="") == 2
            assert (
                get(m, "syncline_mutations_total", outcome="rejected", code="missing_reference")
                == 1
            )
            assert get(m, "syncline_mutations_total", outcome="refused", code="gap") == 1
            total = sum(v for (n, _), v in m.items() if n == "syncline_mutations_total")
            assert total == applied + 1 + 2 + 1 + 1
            for kind in ("hello", "sub", "unsub", "mut", "ping", "pong", "bad"):
                got = get(m, "syncline_frames_total", direction="in", type=kind)
                assert got == sent_in.get(kind, 0), kind
            assert get(m, "syncline_frame_bytes_total", direction="in", type="bad") == bad_bytes
            assert get(m, "syncline_frames_total", direction="out", type="welcome") == 4
            assert get(m, "syncline_frames_total", direction="out", type="ack") == acks
            assert get(m, "syncline_frames_total", direction="out", type="reject") == rejects
            assert get(m, "syncline_frames_total", direction="out", type="error") == 1 + 3
            assert get(m, "syncline_frames_total", direction="out", type="snapshot") == 4
            assert get(m, "syncline_snapshot_bytes_count") == 4 + 1
            assert get(m, "syncline_slow_consumer_disconnects_total") == 1
            assert get(m, "syncline_disconnects_total", code="4008") == 1
            assert get(m, "syncline_disconnects_total", code="4001") == 1
            # Every commit of a mutation that changed something, read by the reader.
            assert get(m, "syncline_fanout_lag_seconds_count") == head - head0
            # Every write group: the COMMITs, and the groups of the two replays, which
            # (one writer each, reading only) had nothing to commit.
            groups = store.commits - commits0 + 2
            assert get(m, "syncline_commit_duration_seconds_count") == groups
            assert get(m, "syncline_commit_group_size_count") == groups
            assert get(m, "syncline_commit_group_size_sum") >= applied + 1 + 1 + 1
            assert get(m, "syncline_log_head") == head
            assert get(m, "syncline_log_floor") == 0
            assert get(m, "syncline_backplane_state", state="connected") == 1
            assert get(m, "syncline_backplane_state", state="degraded") == 0
            assert get(m, "syncline_backplane_reconnects_total") == 0
            assert get(m, "syncline_outbox_largest_bytes") <= 256_000
            await idle.close()

        async with asyncio.timeout(10):
            while sync.connections:
                await asyncio.sleep(0.02)
        m = await scrape(host)
        assert get(m, "syncline_connections", state="awaiting_hello") == 0
        assert get(m, "syncline_connections", state="live") == 0
        assert get(m, "syncline_subscriptions") == 0
        assert get(m, "syncline_disconnects_total", code="1000") == 4  # idle, a, b, w


async def test_each_server_counts_in_its_own_registry() -> None:
    servers = []
    for _ in range(2):
        store = MemoryStore()
        await store.open()
        servers.append(SynclineServer(Engine(BOARD, store)))
    one, two = servers
    one.metrics_app()
    two.metrics_app()
    await one.start()
    try:
        frame = await one.apply("admin", "client-1", {"id": 1, "ops": [BOARD_INSERT]})
        assert frame.status == "applied"  # type: ignore[union-attr]
    finally:
        await one.stop()
    assert one.metrics is not None and two.metrics is not None
    from prometheus_client import generate_latest

    first = parse(generate_latest(one.metrics.registry).decode())
    second = parse(generate_latest(two.metrics.registry).decode())
    assert get(first, "syncline_mutations_total", outcome="applied", code="") == 1
    assert get(second, "syncline_mutations_total", outcome="applied", code="") == 0


def test_a_missing_prometheus_client_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # import raises ImportError
    monkeypatch.delitem(sys.modules, "syncline.metrics")  # imported anew
    sync = SynclineServer(Engine(BOARD, MemoryStore()))
    with pytest.raises(MissingExtra) as info:
        sync.metrics_app()
    assert str(info.value) == (
        "Prometheus metrics needs prometheus-client: pip install 'syncline[metrics]'"
    )
    assert info.value.extra == "metrics"
    assert sync.metrics is None


WORKER = """
import asyncio, sys
import httpx
from syncline import Engine
from syncline.server.app import SynclineServer
from syncline.store.memory import MemoryStore
from tests.schemas import BOARD

async def main(mode, n):
    store = MemoryStore()
    await store.open()
    sync = SynclineServer(Engine(BOARD, store))
    app = sync.metrics_app()
    await sync.start()
    for mid in range(1, n + 1):
        op = {"op": "insert", "c": "boards", "id": f"b{mid}", "fields": {"name": "B"}}
        await sync.apply("admin", f"client-{sys.argv[3]}", {"id": mid, "ops": [op]})
    while sync.reader.position < n:  # the reader reads the commits
        await asyncio.sleep(0.01)
    if mode == "scrape":
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://x") as http:
            print((await http.get("/")).text)
    await sync.stop()

asyncio.run(main(sys.argv[1], int(sys.argv[2])))
"""


def test_multiprocess_mode_sums_the_workers(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}

    def worker(mode: str, n: int, name: str) -> str:
        done = subprocess.run(
            [sys.executable, "-c", WORKER, mode, str(n), name],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    worker("write", 3, "a")
    worker("write", 4, "b")
    m = parse(worker("scrape", 2, "c"))
    assert get(m, "syncline_mutations_total", outcome="applied", code="") == 3 + 4 + 2
    assert get(m, "syncline_log_head") == 2  # the answering worker's own state


def test_syncline_serve_answers_metrics_at_the_path_given(tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "serve.log"
    command = [
        *(sys.executable, "-m", "syncline", "serve", "syncline.examples.notes.app:app"),
        *("--db", str(tmp_path / "n.sqlite3"), "--port", str(port)),
        *("--metrics-path", "/metrics"),
    ]
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_until_up(port, proc, log)
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=10)
        assert page.status_code == 200  # the application still answers everything else
        m = parse(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text)
        assert get(m, "syncline_backplane_state", state="connected") == 1
        assert get(m, "syncline_snapshot_bytes_count") == 0
        assert ("syncline_connections", (("state", "live"),)) in m
    finally:
        proc.terminate()
        proc.wait(20)


def test_serve_refuses_a_metrics_path_that_is_not_one(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            *(sys.executable, "-m", "syncline", "serve", "syncline.examples.notes.app:app"),
            *("--db", str(tmp_path / "n.sqlite3"), "--metrics-path", "metrics"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2
    assert "metrics path 'metrics' must start with /" in done.stderr
