"""``syncline backup DB DEST`` while the server writes: the copy opens, is one commit's
state, and holds every acknowledged mutation up to its head; refusals name the problem."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import sys
from pathlib import Path

from syncline import Engine, Insert, Query
from syncline.store.sqlite import SQLiteStore

from .schemas import BOARD


async def run_cli(*args: str) -> tuple[int, str, str]:
    """``python -m syncline ARGS``: exit code, stdout, stderr (wide, for rich's tables)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "syncline",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_a_backup_taken_during_writes_holds_every_acked_mutation(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "live.sqlite3")
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(
            Insert(c="boards", id="b1", fields={"name": "B"}),
            Insert(c="lists", id="l1", fields={"board_id": "b1"}),
        )
    # A long reader of the live file (as the server's own reads can be): checkpoints
    # stop at its snapshot, so what follows lives in the WAL, which a copy of the file
    # alone would miss.
    pinned = sqlite3.connect(store.path, isolation_level=None)
    pinned.execute("BEGIN")
    pinned.execute("SELECT count(*) FROM log").fetchone()
    acked: list[tuple[int, str]] = []  # (seq, card id), in ack order
    stop = asyncio.Event()

    async def write(client: str) -> None:
        mid = 0
        while not stop.is_set() and mid < 5000:
            mid += 1
            rid = f"{client}-{mid}"
            op = {"op": "insert", "c": "cards", "id": rid, "fields": {"list_id": "l1"}}
            ack = await engine.apply("admin", client, {"id": mid, "ops": [op]})
            assert ack.status == "applied" and ack.seq is not None
            acked.append((ack.seq, rid))
            await asyncio.sleep(0)

    writers = [asyncio.create_task(write(f"writer-{i:04d}")) for i in range(4)]
    try:
        async with asyncio.timeout(30):
            while len(acked) < 200:
                await asyncio.sleep(0.01)
        before = list(acked)  # acknowledged before the backup began
        code, out, err = await run_cli("backup", str(store.path), str(tmp_path / "copy.sqlite3"))
        during = len(acked) - len(before)
    finally:
        stop.set()
        await asyncio.gather(*writers)
    pinned.close()
    head = (await engine.head()).seq
    await store.close()
    assert code == 0, err
    assert during > 0, "the writers made no progress while the backup ran"
    assert not (tmp_path / "copy.sqlite3.partial").exists()
    assert not (tmp_path / "copy.sqlite3-wal").exists()
    with sqlite3.connect(tmp_path / "copy.sqlite3") as db:  # one self-contained file
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"

    copy = SQLiteStore(tmp_path / "copy.sqlite3")
    await copy.open()
    try:
        snap = await Engine(BOARD, copy).snapshot(
            "admin", {"c": Query.parse({"c": "cards"}, BOARD)}
        )
        async with copy.read() as tx:
            copy_head = await tx.head()
            log = await tx.log(0, copy_head)
    finally:
        await copy.close()
    assert f"head {copy_head}," in out
    assert max(seq for seq, _ in before) <= copy_head <= head
    cards = {r["id"] for r in snap.results["c"]}
    held = {rid for seq, rid in acked if seq <= copy_head}
    assert held == cards  # every ack up to its point, nothing after it: one commit's state
    assert {rid for _, rid in before} <= cards
    assert sorted({e.seq for e in log}) == list(range(1, copy_head + 1))  # no gap


async def test_backup_refusals_name_the_problem(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    await store.close()
    (tmp_path / "taken.sqlite3").write_text("keep me")
    with sqlite3.connect(tmp_path / "other.sqlite3") as db:
        db.execute("CREATE TABLE t (x)")
    (tmp_path / "text.txt").write_text("not a database at all, but long enough to look " * 5)
    cases = {
        ("missing.sqlite3", "out.sqlite3"): "missing.sqlite3: no such database file",
        ("db.sqlite3", "taken.sqlite3"): "taken.sqlite3 exists already; remove it",
        ("other.sqlite3", "out.sqlite3"): "is not a syncline database (it has no meta table)",
        ("text.txt", "out.sqlite3"): "is not a SQLite database",
        ("db.sqlite3", "nodir/out.sqlite3"): "nodir: no such directory",
    }
    for (src, dest), message in cases.items():
        code, _out, err = await run_cli("backup", str(tmp_path / src), str(tmp_path / dest))
        assert code == 1 and message in err, (src, dest, err)
        assert err.count("\n") == 1, err  # one line, no traceback
    assert (tmp_path / "taken.sqlite3").read_text() == "keep me"
    assert not (tmp_path / "out.sqlite3").exists()
    code, _out, err = await run_cli("backup", "postgresql://u@h/db", str(tmp_path / "x"))
    assert code == 1 and "back up PostgreSQL with pg_dump" in err


async def test_an_idle_backup_matches_the_source(tmp_path: Path) -> None:
    name = "copy.sqlite3"
    store = SQLiteStore(tmp_path / "db.sqlite3")
    await store.open()
    engine = Engine(BOARD, store)
    async with engine.transaction("admin") as tx:
        tx.apply(Insert(c="boards", id="b1", fields={"name": "Backed up"}))
    await store.close()
    code, out, err = await run_cli("backup", str(tmp_path / "db.sqlite3"), str(tmp_path / name))
    assert code == 0, err
    with (
        sqlite3.connect(tmp_path / "db.sqlite3") as a,
        sqlite3.connect(tmp_path / name) as b,
    ):
        for table in ("meta", "records", "log", "clients", "acks"):
            rows = f"SELECT * FROM {table} ORDER BY 1, 2"
            assert a.execute(rows).fetchall() == b.execute(rows).fetchall(), table
        (epoch,) = a.execute("SELECT value FROM meta WHERE key = 'epoch'").fetchone()
    assert f"epoch {epoch}" in out and "schema version 1" in out
