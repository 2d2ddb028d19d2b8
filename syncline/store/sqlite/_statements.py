"""The statements of the SQLite store, each a function run on a connection's thread
(:meth:`Conn.run <syncline.store.sqlite._conn.Conn.run>`): reads, the writes a write
transaction sends, trimming."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import orjson

from ...exceptions import StoreError
from ...query import Query
from ...record import Record
from .._sql import (
    LOG_COLUMNS,
    RECORD_COLUMNS,
    dumps,
    finish,
    finish_records,
    log_entry,
    record,
    wire,
)
from ..base import ClientState, LogEntry
from .writecache import ClientRow, RecordRow

T = TypeVar("T")


def in_snapshot(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in the read transaction, opening it first if needed: ``BEGIN`` and the
    first ``SELECT`` pin the WAL snapshot the transaction keeps to its end."""
    if not db.in_transaction:
        db.execute("BEGIN")
    return fn(db)


def end_read(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def meta(db: sqlite3.Connection, key: str) -> Any:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"the meta table has no {key!r}")
    return row[0]


def floor(db: sqlite3.Connection) -> int:
    return int(meta(db, "floor"))


def head(db: sqlite3.Connection) -> int:
    row = db.execute(
        "SELECT coalesce((SELECT max(seq) FROM log), (SELECT value FROM meta WHERE key = 'floor'))"
    ).fetchone()
    return int(row[0])


def get(db: sqlite3.Connection, collection: str, record_id: str) -> Record | None:
    row = get_row(db, collection, record_id)
    return None if row is None else record(row)


def get_row(db: sqlite3.Connection, collection: str, record_id: str) -> RecordRow | None:
    row: RecordRow | None = db.execute(
        f"SELECT {RECORD_COLUMNS} FROM records WHERE collection = ? AND id = ?",
        (collection, record_id),
    ).fetchone()
    return row


def get_rows(db: sqlite3.Connection, collection: str, ids: list[str]) -> list[RecordRow]:
    rows: list[RecordRow] = db.execute(
        f"SELECT {RECORD_COLUMNS} FROM records "
        "WHERE collection = ? AND id IN (SELECT value FROM json_each(?))",
        (collection, dumps(ids)),
    ).fetchall()
    return rows


def get_many(db: sqlite3.Connection, collection: str, ids: list[str]) -> dict[str, Record]:
    return {r.id: r for r in map(record, get_rows(db, collection, ids))}


def log(db: sqlite3.Connection, after: int, upto: int) -> list[LogEntry]:
    rows = db.execute(
        f"SELECT {LOG_COLUMNS} FROM log WHERE seq > ? AND seq <= ? ORDER BY seq, pos",
        (after, upto),
    ).fetchall()
    return [log_entry(r) for r in rows]


def seq_at(db: sqlite3.Connection, when: float) -> int:
    row = db.execute("SELECT max(seq) FROM log WHERE time <= ?", (when,)).fetchone()
    return int(row[0]) if row[0] is not None else floor(db)


def client(db: sqlite3.Connection, client_id: str) -> ClientState | None:
    row = client_row(db, client_id)
    return None if row is None else ClientState(client_id, *row)


def client_row(db: sqlite3.Connection, client_id: str) -> ClientRow | None:
    row = db.execute(
        "SELECT principal, last FROM clients WHERE client_id = ?", (client_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


def ack(db: sqlite3.Connection, client_id: str, mutation_id: int) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT ack FROM acks WHERE client_id = ? AND mutation_id = ?", (client_id, mutation_id)
    ).fetchone()
    if row is None:
        return None
    ack: dict[str, Any] = orjson.loads(row[0])
    return ack


def query(db: sqlite3.Connection, sql: str, params: list[Any], then: Query | None) -> list[Record]:
    records = [record(r) for r in db.execute(sql, params).fetchall()]
    return records if then is None else finish_records(records, then)


def query_wire(
    db: sqlite3.Connection, sql: str, params: list[Any], then: Query | None
) -> list[dict[str, Any]]:
    wires = [wire(r) for r in db.execute(sql, params).fetchall()]
    if then is None:
        return wires
    by_id = {w["id"]: w for w in wires}
    views = [{**w["data"], "id": w["id"]} for w in wires]
    return [by_id[str(v["id"])] for v in finish(then, views)]


def advance_client(
    db: sqlite3.Connection, client_id: str, principal: str, expected: int, new: int
) -> bool:
    cur = db.execute(
        "UPDATE clients SET principal = ?, last = ? WHERE client_id = ? AND last = ?",
        (principal, new, client_id, expected),
    )
    if cur.rowcount == 1:
        return True
    if expected != 0:
        return False
    cur = db.execute(
        "INSERT INTO clients (client_id, principal, last) VALUES (?, ?, ?) "
        "ON CONFLICT (client_id) DO NOTHING",
        (client_id, principal, new),
    )
    return cur.rowcount == 1


def advance_known(
    db: sqlite3.Connection, client_id: str, principal: str, expected: int, new: int
) -> None:
    """:func:`advance_client` whose outcome the write cache already knew to be True."""
    if not advance_client(db, client_id, principal, expected, new):
        raise StoreError(f"client {client_id!r} was not at {expected} as the write cache held")


PUT = (
    "INSERT INTO records (collection, id, data, inc, v, fv, fw, adds, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET "
    "data = excluded.data, inc = excluded.inc, v = excluded.v, fv = excluded.fv, "
    "fw = excluded.fw, adds = excluded.adds, deleted = excluded.deleted"
)
APPEND = f"INSERT INTO log ({LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
PUT_ACK = (
    "INSERT INTO acks (client_id, mutation_id, ack) VALUES (?, ?, ?) "
    "ON CONFLICT (client_id, mutation_id) DO UPDATE SET ack = excluded.ack"
)
CONFIRM_ACKS = "DELETE FROM acks WHERE client_id = ? AND mutation_id <= ?"
# Acks of changes the log no longer holds, and each such client's earlier acks (those
# without a seq too): a client that never confirms its acks keeps them only as long.
_TRIM_ACKS = (
    "DELETE FROM acks WHERE mutation_id <= (SELECT max(a.mutation_id) FROM acks a "
    "WHERE a.client_id = acks.client_id AND json_extract(a.ack, '$.seq') <= ?)"
)


def execute(db: sqlite3.Connection, *, sql: str, params: Sequence[Any]) -> None:
    db.execute(sql, params)


def executemany(db: sqlite3.Connection, *, sql: str, rows: list[tuple[Any, ...]]) -> None:
    db.executemany(sql, rows)


def trim(db: sqlite3.Connection, upto: int) -> int:
    upto = min(upto, head(db))
    if upto <= floor(db):
        return 0
    removed = db.execute("DELETE FROM log WHERE seq <= ?", (upto,)).rowcount
    db.execute("DELETE FROM records WHERE deleted = 1 AND v <= ?", (upto,))
    db.execute(_TRIM_ACKS, (upto,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (upto,))
    return int(removed)


def pragma(db: sqlite3.Connection, name: str) -> Any:
    row = db.execute(f"PRAGMA {name}").fetchone()
    return None if row is None else row[0]


def execute_all(db: sqlite3.Connection, statements: list[str]) -> None:
    for statement in statements:
        db.execute(statement)
