"""PostgreSQL faults on a cluster each test owns (tests/pg_cluster.py): sessions
terminated under the pool, the server restarted, and the postmaster SIGKILLed while
syncline acknowledges writes.

What must hold: every mutation a client sent is eventually acknowledged exactly once;
nothing acknowledged is lost by a crash; a lost connection is never an ``internal``
error; the node recovers by itself once PostgreSQL is back. Each test prints its
figures (kill points, acks, lost, duplicated, seconds from PostgreSQL's restart to the
first ack after it); run ``.venv/bin/pytest -q -s tests/test_pg_faults.py`` to see
them. Timeouts only guard against hangs; nothing asserts speed.
"""

from __future__ import annotations

import asyncio
import random
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import asyncpg
import pytest

from syncline import Engine
from syncline.exceptions import StoreError
from syncline.store.postgres import PostgresStore
from syncline.store.postgres._lost import connection_lost

from .pg_cluster import PgCluster, pg_cluster
from .servers import Recorder, ServerProcess
from .sqlite_crash_worker import PRINCIPAL, SCHEMA, TALLY, ensure_tally, mutation
from .test_multinode import Board, client, field, seed

__all__ = ["pg_cluster"]  # the fixture, imported to be found

T = 30.0  # a guard against hangs, not a speed requirement
R = TypeVar("R")


async def terminate(dsn: str, application_name: str) -> int:
    """End every session of ``application_name`` from the server side."""
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            application_name,
        )
    finally:
        await conn.close()
    return len(rows)


def internal_errors(clients: list[Recorder]) -> list[dict[str, Any]]:
    return [
        f
        for c in clients
        for f in c.received
        if f.get("t") == "error" and f.get("code") == "internal"
    ]


def unexpected_errors(log: str) -> set[str]:
    """The exception ending each "unexpected error on a connection" traceback (a
    traceback ends where the next log record, a plain lowercase line, begins)."""
    found = set()
    for chunk in log.split("unexpected error on a connection\n")[1:]:
        block = re.split(r"\n(?=[a-z][a-z ,]*\n)", chunk, maxsplit=1)[0]
        names = re.findall(r"^([A-Za-z_][\w.]*):", block, re.MULTILINE)
        found.add(names[-1] if names else "?")
    return found


class Node:
    """One ``tests.multinode_app`` node on the owned cluster, in its own schema."""

    def __init__(self, cluster: PgCluster, folder: Path) -> None:
        self.app_name = f"syncline-pgfaults-{secrets.token_hex(4)}"
        self.process = ServerProcess(
            folder / "node",
            app="tests.multinode_app:app",
            env={
                "SYNCLINE_TEST_PG_DSN": cluster.dsn,
                "SYNCLINE_TEST_PG_SCHEMA": "pgfaults",
                "SYNCLINE_TEST_BACKPLANE": "memory",
                "SYNCLINE_TEST_PG_APP": self.app_name,
            },
        )

    def log(self) -> str:
        path = Path(self.process.log_path)
        return path.read_text(errors="replace") if path.exists() else ""


async def write_stream(
    url: str,
    board: Board,
    during: Callable[[list[Recorder]], Awaitable[R]],
) -> tuple[list[Recorder], dict[str, int], R]:
    """Writers each increment their own card, a few at a time, until ``during(writers)``
    has finished; returns the writers (still open), how many increments each card was
    sent, and what ``during`` returned."""
    writers = [client(url) for _ in board.cards]
    for w in writers:
        await w.connect()
        await w.subscribe(board.query, timeout=T)
    sent = dict.fromkeys(board.cards, 0)
    task = asyncio.create_task(during(writers))

    async def write(w: Recorder, card: str) -> None:
        while not task.done():
            w.increment("cards", card, "votes")
            sent[card] += 1
            if sent[card] % 4 == 0:
                await asyncio.sleep(0.02)

    await asyncio.gather(*(write(w, card) for w, card in zip(writers, board.cards, strict=True)))
    result = await task
    for w in writers:
        await w.wait_synced(60)
    return writers, sent, result


async def check_applied_once(
    cluster: PgCluster, url: str, board: Board, sent: dict[str, int]
) -> None:
    """Every card has as many votes as increments were sent to it, and no mutation is
    in the log twice."""
    async with client(url) as fresh:
        await fresh.subscribe(board.query, timeout=T)
        votes = {card: field(fresh, card, "votes") for card in board.cards}
    assert votes == sent
    conn = await asyncpg.connect(cluster.dsn)
    try:
        twice = await conn.fetch(
            "SELECT client_id, mutation_id, count(*) FROM pgfaults.log "
            "WHERE kind = 'update' GROUP BY 1, 2 HAVING count(*) > 1"  # one op each
        )
    finally:
        await conn.close()
    assert twice == []


async def test_sessions_terminated_under_the_pool_are_retried_never_an_internal_error(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    node = Node(pg_cluster, tmp_path)
    await asyncio.to_thread(node.process.start)
    try:
        board = await seed(node.process.ws_url, cards=4)
        readers: list[Recorder] = []
        stop = asyncio.Event()

        async def read_meanwhile() -> None:  # hello + sub again and again
            while not stop.is_set():
                r = client(node.process.ws_url)
                readers.append(r)
                async with r:
                    await r.subscribe(board.query, timeout=T)

        async def cut(_: list[Recorder]) -> int:
            reading = asyncio.create_task(read_meanwhile())
            cuts = 0
            for _ in range(12):
                await asyncio.sleep(random.uniform(0.05, 0.25))
                cuts += min(1, await terminate(pg_cluster.dsn, node.app_name))
            stop.set()
            await reading
            return cuts

        writers, sent, cuts = await write_stream(node.process.ws_url, board, cut)
        try:
            await check_applied_once(pg_cluster, node.process.ws_url, board, sent)
            failed_reads = internal_errors(readers)
            print(
                f"\nsessions terminated in {cuts} of 12 rounds; {len(readers)} hello+sub rounds, "
                f"{len(failed_reads)} answered `internal` (a StoreError mid-snapshot)"
            )
            assert cuts >= 6  # (the pool may hold no session at that moment)
            # every refusal was a `reject retry`; if not, say what the node raised
            assert internal_errors(writers) == [], unexpected_errors(node.log())
            # What reaches the server is a StoreError, never asyncpg's own exceptions.
            assert unexpected_errors(node.log()) <= {"syncline.exceptions.StoreError"}
        finally:
            for w in writers:
                await w.close()
    finally:
        await asyncio.to_thread(node.process.kill)


async def first_ack_after(writers: list[Recorder], since: float) -> float:
    """Seconds from ``since`` to the first ack any writer receives after it."""
    counts = [sum(f.get("t") == "ack" for f in w.received) for w in writers]
    async with asyncio.timeout(60):
        while True:
            for w, n in zip(writers, counts, strict=True):
                if sum(f.get("t") == "ack" for f in w.received) > n:
                    return time.monotonic() - since
            await asyncio.sleep(0.01)


@pytest.mark.parametrize("how", ["restart", "crash"])
async def test_the_node_recovers_by_itself_when_postgresql_restarts(
    pg_cluster: PgCluster, tmp_path: Path, how: str
) -> None:
    node = Node(pg_cluster, tmp_path)
    await asyncio.to_thread(node.process.start)
    try:
        board = await seed(node.process.ws_url, cards=3)
        recoveries: list[float] = []

        async def restart_twice(writers: list[Recorder]) -> None:
            for _ in range(2):
                await asyncio.sleep(0.3)
                await asyncio.to_thread(pg_cluster.stop if how == "restart" else pg_cluster.crash)
                await asyncio.sleep(0.5)  # writes meanwhile are refused: retry
                await asyncio.to_thread(pg_cluster.start)
                recoveries.append(await first_ack_after(writers, time.monotonic()))

        done, sent, _ = await write_stream(node.process.ws_url, board, restart_twice)
        try:
            await check_applied_once(pg_cluster, node.process.ws_url, board, sent)
            print(
                f"\n{how} x2 under {sum(sent.values())} increments: seconds from PostgreSQL "
                f"up to the first ack after it: {[round(r, 2) for r in recoveries]}"
            )
            assert len(recoveries) == 2
        finally:
            for w in done:
                await w.close()
    finally:
        await asyncio.to_thread(node.process.kill)


# --- durability of acknowledged writes --------------------------------------------------


async def test_every_acked_mutation_survives_sigkill_of_the_postmaster(
    pg_cluster: PgCluster,
) -> None:
    """Writers apply mutations through the engine (group commit in play); the postmaster
    and its backends are SIGKILLed at several points; after crash recovery every
    acknowledged mutation is there, once, with the ``seq`` its ack named."""
    store = PostgresStore(pg_cluster.dsn, schema="durable", max_size=6)
    await store.open()
    engine = Engine(SCHEMA, store)
    await ensure_tally(engine)
    acked: dict[tuple[str, int], int] = {}  # (client, mutation id) -> seq of its ack
    refused = 0
    stopping = asyncio.Event()
    progress = asyncio.Event()

    async def writer(client_id: str) -> None:
        nonlocal refused
        n = 0
        while not stopping.is_set():
            n += 1
            while True:  # as a client does: resend the same mutation until acknowledged
                try:
                    ack = await engine.apply(PRINCIPAL, client_id, mutation(client_id, n))
                    break
                except StoreError as exc:
                    assert connection_lost(exc), exc
                    refused += 1
                    await asyncio.sleep(0.05)
            assert ack.status == "applied" and ack.seq is not None, ack.to_wire()
            acked[(client_id, n)] = ack.seq
            progress.set()

    async def acks_grow_by(count: int) -> None:
        target = len(acked) + count
        try:
            async with asyncio.timeout(T):
                while len(acked) < target:
                    progress.clear()
                    await progress.wait()
        except TimeoutError:
            for t in tasks:
                t.print_stack()
            for t in list(store._tasks):
                t.print_stack()
            raise

    kill_points: list[int] = []
    recoveries: list[float] = []
    tasks = [asyncio.create_task(writer(f"w{i}")) for i in range(8)]
    try:
        for _ in range(5):
            await acks_grow_by(random.randint(20, 120))
            kill_points.append(len(acked))
            await asyncio.to_thread(pg_cluster.crash)
            await asyncio.sleep(0.2)
            await asyncio.to_thread(pg_cluster.start)
            up = time.monotonic()
            await acks_grow_by(1)
            recoveries.append(time.monotonic() - up)
        await acks_grow_by(20)
    finally:
        stopping.set()
        async with asyncio.timeout(T):
            await asyncio.gather(*tasks)
        await store.close()

    conn = await asyncpg.connect(pg_cluster.dsn)
    try:
        rows = await conn.fetch(
            "SELECT client_id, mutation_id, count(*), min(seq), max(seq) FROM durable.log "
            "WHERE client_id IS NOT NULL GROUP BY 1, 2"
        )
        tally = await conn.fetchval(
            "SELECT (data->>'count')::bigint FROM durable.records "
            "WHERE collection = 'tallies' AND id = $1",
            TALLY,
        )
        cards = await conn.fetchval(
            "SELECT count(*) FROM durable.records WHERE collection = 'cards'"
        )
    finally:
        await conn.close()
    logged = {(r[0], r[1]): (r[2], r[3], r[4]) for r in rows}
    lost = [m for m in acked if m not in logged]
    duplicated = [m for m, (entries, _, _) in logged.items() if entries != 2]  # insert + incr
    wrong_seq = [m for m, seq in acked.items() if m in logged and logged[m][1:] != (seq, seq)]
    print(
        f"\nkill points (acks before each SIGKILL): {kill_points}; acked {len(acked)}; "
        f"refused (retried) {refused}; lost {len(lost)}; duplicated {len(duplicated)}; "
        f"seconds from restart to the first ack: {[round(r, 2) for r in recoveries]}"
    )
    assert lost == [] and duplicated == [] and wrong_seq == []
    assert tally == cards == len(logged)  # nothing half-applied
    assert len(kill_points) == 5
