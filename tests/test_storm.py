"""Reconnect storms: the SQLite reader pool stays within its cap, and while a thousand
clients resume at once, clients already connected keep getting every change.

The storm runs against a real server (uvicorn in a subprocess, tests/servers.py); the
storm's clients run in a process of their own, so the live subscribers' latency here is
the server's, not this process's. ``storm()`` prints the p99 live latency during the
storm; bench/storm.py runs it with 2,000 clients.
"""

from __future__ import annotations

import asyncio
import contextlib
import multiprocessing
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from syncline import Engine, Insert, Query, Update
from syncline.cursor import Cursor
from syncline.exceptions import StoreError
from syncline.fanout.reader import LogReader
from syncline.store import memory as memory_store
from syncline.store.memory import MemoryStore
from syncline.store.sqlite import SQLiteStore

from .live import RawClient
from .schemas import BOARD
from .servers import ServerProcess
from .test_fanout import Conn

CTX = multiprocessing.get_context("spawn")
LIVE = {"live": {"c": "cards", "where": {"list_id": "l1"}}}
RESUMED = {"old": {"c": "cards", "where": {"list_id": "l2"}}}
# No client-side keepalive: on a loaded machine a busy client process misses its own
# pings' deadline and closes with 1011, which says nothing about the server.
QUIET: dict[str, Any] = {"ping_interval": None, "max_queue": None}


def reader_threads() -> int:
    return sum(t.name.startswith("syncline-sqlite-reader") for t in threading.enumerate())


async def test_the_sqlite_reader_pool_never_exceeds_its_cap(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    assert store.max_readers == 8  # the documented default
    await store.open()
    baseline = reader_threads()
    holding, peak, peak_threads, peak_open = 0, 0, 0, 0

    async def one() -> None:
        nonlocal holding, peak, peak_threads, peak_open
        async with store.read() as tx:
            holding += 1
            peak = max(peak, holding)
            await tx.head()
            peak_threads = max(peak_threads, reader_threads() - baseline)
            peak_open = max(peak_open, store.readers_open)
            await asyncio.sleep(0.002)  # hold it a while, so reads overlap
            holding -= 1

    try:
        await asyncio.gather(*(one() for _ in range(200)))
        assert peak == 8 and peak_open == 8 and 1 <= peak_threads <= 8
        # A read that gave up while waiting for a slot takes none with it.
        waiting = [asyncio.create_task(one()) for _ in range(50)]
        await asyncio.sleep(0)
        for task in waiting[10:]:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*(one() for _ in range(8))), 10)
        assert store.readers_open <= 8
    finally:
        await store.close()
    assert store.readers_open == 0
    with pytest.raises(StoreError, match="max_readers"):
        SQLiteStore(tmp_path / "other.sqlite3", max_readers=0)


# --- the storm ----------------------------------------------------------------------------


def storm_clients(port: int, n: int, cursors: list[str], go: Any, leave: Any, out: Any) -> None:
    """Process target: ``n`` clients that connect at once when ``go`` is set, say hello
    and resume since one of ``cursors``; reports (start, end, answers) and holds the
    connections until ``leave`` is set."""
    asyncio.run(_storm_clients(port, n, cursors, go, leave, out))


async def _storm_clients(
    port: int, n: int, cursors: list[str], go: Any, leave: Any, out: Any
) -> None:
    answers: list[str] = []
    async with contextlib.AsyncExitStack() as stack:

        async def resume(since: str) -> None:
            client = await stack.enter_async_context(
                RawClient.connect(
                    f"127.0.0.1:{port}", BOARD, hello=False, open_timeout=120, **QUIET
                )
            )
            hello = {
                "t": "hello",
                "v": 1,
                "client": client.client_id,
                "schema": BOARD.hash,
                "auth": {"user": f"storm-{client.client_id}"},
            }
            await client.send(hello)
            assert (await client.recv(timeout=120))["t"] == "welcome"
            await client.send({"t": "sub", "queries": RESUMED, "since": since})
            answer = await client.recv(timeout=120)
            answers.append(answer["t"] if answer.get("from") == since else repr(answer)[:200])

        out.put("ready")
        await asyncio.to_thread(go.wait)
        start = time.monotonic()
        results = await asyncio.gather(
            *(resume(cursors[i % len(cursors)]) for i in range(n)), return_exceptions=True
        )
        end = time.monotonic()
        errors = [repr(r) for r in results if isinstance(r, BaseException)]
        out.put((start, end, answers, errors[:5], len(errors)))
        await asyncio.to_thread(leave.wait, 300)


async def seed(path: Path) -> list[str]:
    """Lists l1 and l2, 200 cards in l2, then 100 edits of them; returns ten cursors
    among the edits (clients that were at different places when the server went)."""
    store = SQLiteStore(path)
    await store.open()
    try:
        engine = Engine(BOARD, store)
        async with engine.transaction("admin") as tx:
            tx.apply(
                Insert(c="boards", id="b1", fields={"name": "B"}),
                Insert(c="lists", id="l1", fields={"board_id": "b1"}),
                Insert(c="lists", id="l2", fields={"board_id": "b1"}),
                *(Insert(c="cards", id=f"old{n}", fields={"list_id": "l2"}) for n in range(200)),
            )
        cursors = []
        for n in range(100):
            if n % 10 == 0:
                cursors.append(str(await engine.head()))
            async with engine.transaction("admin") as tx:
                tx.apply(Update(c="cards", id=f"old{n * 2}", set={"title": f"edit {n}"}))
        return cursors
    finally:
        await store.close()


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


async def storm(tmp_path: Path, clients: int, live: int = 20) -> dict[str, Any]:
    """Run a storm of ``clients`` resumes while ``live`` subscribers get a steady stream
    of inserts; return the figures (live latencies during the storm, in seconds)."""
    cursors = await seed(tmp_path / "storm.sqlite3")
    sent: dict[str, float] = {}
    received: list[dict[str, float]] = [{} for _ in range(live)]
    with ServerProcess(tmp_path / "storm.sqlite3", app="tests.storm_app:app") as server:
        host = f"127.0.0.1:{server.port}"
        async with contextlib.AsyncExitStack() as stack:
            subscribers = [
                await stack.enter_async_context(
                    RawClient.connect(host, BOARD, auth={"user": f"live-{n}"}, **QUIET)
                )
                for n in range(live)
            ]
            for sub in subscribers:
                assert (await sub.subscribe(LIVE))["t"] == "snapshot"
            writer = await stack.enter_async_context(
                RawClient.connect(host, BOARD, auth={"user": "writer"}, **QUIET)
            )

            async def listen(sub: RawClient, got: dict[str, float]) -> None:
                while True:
                    frame = await sub.recv(timeout=300)
                    now = time.monotonic()
                    if frame["t"] == "ping":
                        await sub.send({"t": "pong", "n": frame.get("n")})
                    for item in frame.get("q", {}).get("live", []):
                        got.setdefault(item["id"], now)

            stop = asyncio.Event()

            async def write() -> None:
                n = 0
                while not stop.is_set():
                    n += 1
                    rid = f"live-{uuid.uuid4().hex[:8]}"
                    sent[rid] = time.monotonic()
                    ops = [{"op": "insert", "c": "cards", "id": rid, "fields": {"list_id": "l1"}}]
                    await writer.send({"t": "mut", "id": n, "ops": ops})
                    assert (await writer.expect("ack", timeout=60))["mid"] == n
                    await asyncio.sleep(0.01)  # a steady stream, ~50-100 changes a second

            listeners = [
                asyncio.create_task(listen(s, g))
                for s, g in zip(subscribers, received, strict=True)
            ]
            go, leave, out = CTX.Event(), CTX.Event(), CTX.Queue()
            proc = CTX.Process(
                target=storm_clients, args=(server.port, clients, cursors, go, leave, out)
            )
            proc.start()
            try:
                assert await asyncio.to_thread(out.get, True, 60) == "ready"
                writing = asyncio.create_task(write())
                await asyncio.sleep(0.5)  # the stream runs before the storm starts
                go.set()
                start, end, answers, errors, failed = await asyncio.to_thread(out.get, True, 110)
                await asyncio.sleep(0.3)  # and goes on a little after it
                stop.set()
                await asyncio.wait_for(writing, 60)
                # Every subscriber gets every change, within a bounded wait.
                async with asyncio.timeout(30):
                    while any(len(g) < len(sent) for g in received):
                        await asyncio.sleep(0.02)
            finally:
                leave.set()
                for task in listeners:
                    task.cancel()
                proc.join(30)
                if proc.is_alive():
                    proc.kill()
    during = [got[rid] - t for got in received for rid, t in sent.items() if start <= t <= end]
    return {
        "clients": clients,
        "failed": failed,
        "errors": errors,
        "answers": answers,
        "storm_seconds": end - start,
        "changes": len(sent),
        "changes_during": len(during) // live,
        "p50": percentile(during, 50) if during else None,
        "p99": percentile(during, 99) if during else None,
        "max": max(during) if during else None,
        "all_received": all(set(g) == set(sent) for g in received),
    }


async def test_connected_clients_keep_getting_every_change_while_1000_clients_resume(
    tmp_path: Path,
) -> None:
    figures = await storm(tmp_path, clients=1000)
    print(
        f"\nstorm of {figures['clients']} resumes in {figures['storm_seconds']:.2f} s; "
        f"live latency during it p50 {figures['p50']:.3f} s, p99 {figures['p99']:.3f} s, "
        f"max {figures['max']:.3f} s over {figures['changes_during']} changes"
    )
    assert figures["failed"] == 0, figures["errors"]
    assert figures["answers"] == ["changes"] * 1000  # each resumed, none re-snapshotted
    assert figures["all_received"]
    assert figures["changes_during"] > 0


# --- bounded join steps, step by step ------------------------------------------------------

CARDS = {"cards": Query.parse({"c": "cards"}, BOARD)}


async def reader_with_a_live_client(max_joins: int) -> tuple[Engine, LogReader, Cursor, Conn]:
    """A reader on a board with one list, and one connection subscribed to all cards."""
    engine = Engine(BOARD, MemoryStore())
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
        )
    reader = LogReader(engine, max_joins=max_joins)
    head = await engine.head()
    reader.epoch, reader.position = head.epoch, head.seq
    live = Conn()
    task = asyncio.create_task(reader.join(live, CARDS, None))  # type: ignore[arg-type]
    await asyncio.sleep(0)
    await reader.step()
    await task
    await live.frames()
    return engine, reader, head, live


async def test_joins_are_served_in_bounded_steps_and_live_changes_go_out_in_each() -> None:
    engine, reader, head, live = await reader_with_a_live_client(max_joins=100)
    storm = [Conn() for _ in range(250)]
    joins = [asyncio.create_task(reader.join(c, CARDS, head)) for c in storm]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    served = []
    for n in range(3):
        async with engine.transaction("admin") as tx:
            tx.apply(Insert(c="cards", id=f"c{n}", fields={"list_id": "l1"}))
        reader._wake.clear()
        await reader.step()
        served.append(sum(c.cursor is not None for c in storm))
        (frame,) = await live.frames()  # the connected client got this step's change
        assert [i["id"] for i in frame["q"]["cards"]] == [f"c{n}"]
        assert reader._wake.is_set() == (n < 2)  # joins left over: the next step at once
    assert served == [100, 200, 250]
    await asyncio.gather(*joins)
    # Each join is served at its step's head and live changes follow it: whichever step
    # served it, a connection's stream has every change once (its parts coalesced).
    for conn in storm:
        (frame,) = await conn.frames()
        assert frame["from"] == str(head) and frame["to"].endswith(f".{head.seq + 3}")
        assert [i["id"] for i in frame["q"]["cards"]] == ["c0", "c1", "c2"]


async def test_a_failed_step_leaves_connections_where_they_were_and_queued_joins_queued(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    engine, reader, head, live = await reader_with_a_live_client(max_joins=2)
    waiting = [Conn() for _ in range(5)]
    joins = [asyncio.create_task(reader.join(c, CARDS, head)) for c in waiting]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="cards", id="c1", fields={"list_id": "l1"}))
    calls = 0

    async def failing_log(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        raise StoreError("the database went away")

    with monkeypatch.context() as patch:
        patch.setattr(memory_store._Read, "log", failing_log)
        with pytest.raises(StoreError):
            await reader.step()
    assert calls == 1
    assert live.cursor == head.seq and await live.frames() == [] and reader.position == head.seq
    assert all(c.cursor is None for c in waiting)
    for _ in range(3):  # the next steps serve the same range, two joins a step
        await reader.step()
    assert all(c.cursor == head.seq + 1 for c in waiting)
    await asyncio.gather(*joins)
    (frame,) = await live.frames()
    assert [i["id"] for i in frame["q"]["cards"]] == ["c1"]
