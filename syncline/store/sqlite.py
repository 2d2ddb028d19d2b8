"""The SQLite store: one database file, durable, the embedded default.

Theory of operation
-------------------

**Connections and threads.** One *writer* connection lives in one dedicated thread (a
one-thread executor), so every write statement runs in submission order and none ever
runs on the event loop. ``read()`` transactions each take their own *reader*
connection from a small pool; every reader also owns a one-thread executor, so a
cleanup queued after a cancelled call still runs after it. A read opens with
``BEGIN`` plus a first ``SELECT``, which pins a WAL snapshot: the transaction sees one
committed state for its whole duration, whatever commits meanwhile.

**Durability.** ``journal_mode=WAL`` and ``synchronous=FULL``: a COMMIT returns only
after the WAL is on disk, and ``write()`` exits only after its COMMIT, so every ack
follows its commit (invariants 2 and 3).

**Group commit.** ``write()`` blocks run one at a time (an asyncio lock). The first
writer of a group issues ``BEGIN IMMEDIATE``; each writer's block runs inside
``SAVEPOINT w``. A block that raises gets ``ROLLBACK TO w`` + ``RELEASE w`` (its
effects vanish, the group's other writers keep theirs) and its exception; a block that
succeeds gets ``RELEASE w`` and waits. A writer that leaves the lock with nobody else
waiting for it (or with :attr:`SQLiteStore.max_group` writers in the group) issues
``COMMIT`` -- one transaction, one fsync for the whole group -- and only then does every
successful writer of the group leave ``write()``. If COMMIT fails, every successful
writer of the group gets a :class:`StoreError`; none is acknowledged. Writers of one
group see each other's writes (same connection), so ``seq`` stays dense. A writer
cancelled while it waits for its group's COMMIT may still be committed: cancellation
is not a rollback once the block has exited.

Tables (schema version :data:`SCHEMA_VERSION`)
----------------------------------------------

``meta(key, value)``
    ``epoch`` (random hex made once when the file is created, never changed: a new
    database gives old cursors "reset", invariant 1), ``floor`` (the oldest cursor
    ``seq`` the log continues from) and ``schema_version`` (of the tables below).
``records(collection, id, data, inc, v, fv, fw, adds, deleted)``
    One row per record, tombstones included; ``data``, ``fv``, ``fw``, ``adds`` are
    JSON text. ``PRIMARY KEY (collection, id)``. :meth:`SQLiteStore.ensure_indexes`
    adds an expression index per queryable field.
``log(pos, seq, collection, id, kind, inc, patch, before, after, client_id,
mutation_id, time)``
    The change log. One mutation writes one entry per record at one ``seq``, so
    ``seq`` is indexed rather than the key; ``pos`` (the rowid) keeps insertion order.
    Indexed on ``seq`` and on ``(time, seq)`` for :meth:`ReadTx.seq_at`.
``clients(client_id, principal, last)``
    Each client id's principal and last mutation id (invariants 3, 4).
``acks(client_id, mutation_id, ack)``
    Acks kept until the client confirms it holds them.

Migrations of these tables are :data:`MIGRATIONS`, applied in order inside one
transaction on :meth:`SQLiteStore.open`; a file newer than this code is refused.

Queries
-------

:meth:`ReadTx.query` compiles a :class:`~syncline.query.Query` to SQL over
``json_extract(data, '$.field')`` and ``json_type`` (which tells ``true`` from ``1``),
reproducing :meth:`Query.matches` and :meth:`Query.sort` exactly for JSON scalars:
equality is numeric between integers and reals but never between booleans and
numbers, ``None`` satisfies no range, and the sort orders types ``None`` < booleans <
numbers < strings, then by value (UTF-8 byte order is code point order), ties by id.
An array or object in a queried field is compared through Python's ``str()`` of it,
as the reference does. Where SQL cannot express a query (a field name that is not an
identifier, an integer beyond 64 bits, a non-scalar operand), the store filters in
SQL what it can and finishes filtering and sorting in Python with the reference
functions.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import orjson

from ..exceptions import StoreError
from ..model import Schema
from ..query import Query
from ..record import Record
from .base import ClientState, LogEntry, ReadTx, Store, WriteTx

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

P = ParamSpec("P")
T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial tables.
    (
        """CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value
        )""",
        "INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(8)))), ('floor', 0)",
        """CREATE TABLE records (
            collection TEXT NOT NULL,
            id         TEXT NOT NULL,
            data       TEXT NOT NULL,
            inc        INTEGER NOT NULL,
            v          INTEGER NOT NULL,
            fv         TEXT NOT NULL,
            fw         TEXT NOT NULL,
            adds       TEXT NOT NULL,
            deleted    INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (collection, id)
        )""",
        "CREATE INDEX records_tombstones ON records (v) WHERE deleted = 1",
        """CREATE TABLE log (
            pos         INTEGER PRIMARY KEY,
            seq         INTEGER NOT NULL,
            collection  TEXT NOT NULL,
            id          TEXT NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('insert', 'update', 'delete')),
            inc         INTEGER NOT NULL,
            patch       TEXT NOT NULL,
            "before"    TEXT,
            "after"     TEXT,
            client_id   TEXT,
            mutation_id INTEGER,
            time        REAL NOT NULL
        )""",
        "CREATE INDEX log_seq ON log (seq)",
        "CREATE INDEX log_time ON log (time, seq)",
        """CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            last      INTEGER NOT NULL
        )""",
        """CREATE TABLE acks (
            client_id   TEXT NOT NULL,
            mutation_id INTEGER NOT NULL,
            ack         TEXT NOT NULL,
            PRIMARY KEY (client_id, mutation_id)
        ) WITHOUT ROWID""",
    ),
)
"""Each item is one schema version's SQL statements, applied in order. Append only:
never edit a released step (files in the field already ran it)."""

SCHEMA_VERSION = len(MIGRATIONS)


# --- connections ----------------------------------------------------------------------


def _pystr(json_text: str | None) -> str | None:
    """Python's ``str()`` of a JSON array or object: how :func:`syncline.query.sort_key`
    orders non-scalars, so SQL can order them the same way."""
    return None if json_text is None else str(orjson.loads(json_text))


def _connect(path: str, timeout: float, writer: bool) -> sqlite3.Connection:
    db = sqlite3.connect(path, timeout=timeout, isolation_level=None, cached_statements=256)
    try:
        db.execute("PRAGMA foreign_keys = ON")
        db.execute("PRAGMA synchronous = FULL")
        if writer:
            mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"{path}: cannot switch to WAL journal mode (got {mode!r})")
        else:
            db.execute("PRAGMA query_only = ON")
        db.create_function("syncline_pystr", 1, _pystr, deterministic=True)
    except BaseException:
        db.close()
        raise
    return db


class _Conn:
    """A sqlite3 connection and the one thread that runs its statements, in order."""

    def __init__(
        self, db: sqlite3.Connection, executor: concurrent.futures.ThreadPoolExecutor, path: str
    ) -> None:
        self._db = db
        self._executor = executor
        self._path = path

    @classmethod
    async def open(cls, path: str, timeout: float, *, writer: bool) -> _Conn:
        name = "syncline-sqlite-writer" if writer else "syncline-sqlite-reader"
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            db = await asyncio.wrap_future(executor.submit(_connect, path, timeout, writer))
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise StoreError(f"{path}: cannot open the database: {exc}") from exc
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(db, executor, path)

    def submit(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> concurrent.futures.Future[T]:
        """Queue ``fn(db, ...)`` on this connection's thread; SQLite errors become
        :class:`StoreError`."""
        db, path = self._db, self._path

        def call() -> T:
            try:
                return fn(db, *args, **kwargs)
            except sqlite3.Error as exc:
                raise StoreError(f"{path}: {exc}") from exc

        return self._executor.submit(call)

    async def run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    async def close(self) -> None:
        try:
            await self.run(_close)
        finally:
            self._executor.shutdown(wait=False)


def _close(db: sqlite3.Connection) -> None:
    db.close()


# --- migrations -----------------------------------------------------------------------


def _schema_version(db: sqlite3.Connection) -> int:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else 0


def _migrate(db: sqlite3.Connection, migrations: Sequence[Sequence[str]], path: str) -> list[int]:
    """Bring syncline's tables to the newest version in one transaction; return the
    versions applied (none when the file is up to date)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        version = _schema_version(db)
        known = len(migrations)
        if version > known:
            raise StoreError(
                f"{path}: the database's syncline storage schema is version {version}, "
                f"but this syncline knows versions up to {known}; open it with a newer syncline"
            )
        applied = []
        for number in range(version + 1, known + 1):
            for statement in migrations[number - 1]:
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (number,),
            )
            applied.append(number)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return applied


# --- statements (run on a connection's thread) ----------------------------------------

_RECORD_COLUMNS = "id, data, inc, v, fv, fw, adds, deleted"
_LOG_COLUMNS = (
    'seq, collection, id, kind, inc, patch, "before", "after", client_id, mutation_id, time'
)


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _record(row: tuple[Any, ...]) -> Record:
    rid, data, inc, v, fv, fw, adds, deleted = row
    return Record(
        id=rid,
        data=orjson.loads(data),
        inc=inc,
        v=v,
        fv=orjson.loads(fv),
        fw=orjson.loads(fw),
        adds=orjson.loads(adds),
        deleted=bool(deleted),
    )


def _log_entry(row: tuple[Any, ...]) -> LogEntry:
    seq, collection, rid, kind, inc, patch, before, after, client_id, mutation_id, when = row
    return LogEntry(
        seq=seq,
        collection=collection,
        id=rid,
        kind=kind,
        inc=inc,
        patch=orjson.loads(patch),
        before=None if before is None else orjson.loads(before),
        after=None if after is None else orjson.loads(after),
        client_id=client_id,
        mutation_id=mutation_id,
        time=when,
    )


def _begin_read(db: sqlite3.Connection) -> None:
    db.execute("BEGIN")
    try:
        db.execute("SELECT value FROM meta WHERE key = 'floor'").fetchone()  # pins the snapshot
    except BaseException:
        db.execute("ROLLBACK")
        raise


def _end_read(db: sqlite3.Connection) -> None:
    if db.in_transaction:
        db.execute("ROLLBACK")


def _meta(db: sqlite3.Connection, key: str) -> Any:
    row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise StoreError(f"the meta table has no {key!r}")
    return row[0]


def _floor(db: sqlite3.Connection) -> int:
    return int(_meta(db, "floor"))


def _head(db: sqlite3.Connection) -> int:
    row = db.execute(
        "SELECT coalesce((SELECT max(seq) FROM log), (SELECT value FROM meta WHERE key = 'floor'))"
    ).fetchone()
    return int(row[0])


def _get(db: sqlite3.Connection, collection: str, record_id: str) -> Record | None:
    row = db.execute(
        f"SELECT {_RECORD_COLUMNS} FROM records WHERE collection = ? AND id = ?",
        (collection, record_id),
    ).fetchone()
    return None if row is None else _record(row)


def _get_many(db: sqlite3.Connection, collection: str, ids: list[str]) -> dict[str, Record]:
    rows = db.execute(
        f"SELECT {_RECORD_COLUMNS} FROM records "
        "WHERE collection = ? AND id IN (SELECT value FROM json_each(?))",
        (collection, _dumps(ids)),
    ).fetchall()
    return {r.id: r for r in map(_record, rows)}


def _log(db: sqlite3.Connection, after: int, upto: int) -> list[LogEntry]:
    rows = db.execute(
        f"SELECT {_LOG_COLUMNS} FROM log WHERE seq > ? AND seq <= ? ORDER BY seq, pos",
        (after, upto),
    ).fetchall()
    return [_log_entry(r) for r in rows]


def _seq_at(db: sqlite3.Connection, when: float) -> int:
    row = db.execute("SELECT max(seq) FROM log WHERE time <= ?", (when,)).fetchone()
    return int(row[0]) if row[0] is not None else _floor(db)


def _client(db: sqlite3.Connection, client_id: str) -> ClientState | None:
    row = db.execute(
        "SELECT principal, last FROM clients WHERE client_id = ?", (client_id,)
    ).fetchone()
    return None if row is None else ClientState(client_id, row[0], row[1])


def _ack(db: sqlite3.Connection, client_id: str, mutation_id: int) -> dict[str, Any] | None:
    row = db.execute(
        "SELECT ack FROM acks WHERE client_id = ? AND mutation_id = ?", (client_id, mutation_id)
    ).fetchone()
    if row is None:
        return None
    ack: dict[str, Any] = orjson.loads(row[0])
    return ack


def _query(
    db: sqlite3.Connection, sql: str, params: list[Any], finish: Query | None
) -> list[Record]:
    records = [_record(r) for r in db.execute(sql, params).fetchall()]
    if finish is None:
        return records
    by_id = {r.id: r for r in records}
    views = [{**r.data, "id": r.id} for r in records]
    ordered = Query(finish.collection, (), finish.order, finish.limit)
    return [by_id[str(v["id"])] for v in ordered.sort([v for v in views if finish.matches(v)])]


def _advance_client(
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


def _put(db: sqlite3.Connection, collection: str, record: Record) -> None:
    db.execute(
        "INSERT INTO records (collection, id, data, inc, v, fv, fw, adds, deleted) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET "
        "data = excluded.data, inc = excluded.inc, v = excluded.v, fv = excluded.fv, "
        "fw = excluded.fw, adds = excluded.adds, deleted = excluded.deleted",
        (
            collection,
            record.id,
            _dumps(record.data),
            record.inc,
            record.v,
            _dumps(record.fv),
            _dumps(record.fw),
            _dumps(record.adds),
            int(record.deleted),
        ),
    )


def _append_log(db: sqlite3.Connection, entries: list[LogEntry]) -> None:
    head = _head(db)
    for e in entries:
        if e.seq != head + 1 and e.seq != head:
            raise StoreError(f"log seq {e.seq} does not follow head {head}")
        head = e.seq
    db.executemany(
        f"INSERT INTO log ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (
                e.seq,
                e.collection,
                e.id,
                e.kind,
                e.inc,
                _dumps(e.patch),
                None if e.before is None else _dumps(e.before),
                None if e.after is None else _dumps(e.after),
                e.client_id,
                e.mutation_id,
                e.time,
            )
            for e in entries
        ],
    )


def _put_ack(db: sqlite3.Connection, client_id: str, mutation_id: int, ack: str) -> None:
    db.execute(
        "INSERT INTO acks (client_id, mutation_id, ack) VALUES (?, ?, ?) "
        "ON CONFLICT (client_id, mutation_id) DO UPDATE SET ack = excluded.ack",
        (client_id, mutation_id, ack),
    )


def _confirm_acks(db: sqlite3.Connection, client_id: str, upto: int) -> None:
    db.execute("DELETE FROM acks WHERE client_id = ? AND mutation_id <= ?", (client_id, upto))


def _trim(db: sqlite3.Connection, upto: int) -> int:
    upto = min(upto, _head(db))
    if upto <= _floor(db):
        return 0
    removed = db.execute("DELETE FROM log WHERE seq <= ?", (upto,)).rowcount
    db.execute("DELETE FROM records WHERE deleted = 1 AND v <= ?", (upto,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (upto,))
    return int(removed)


def _execute_all(db: sqlite3.Connection, statements: list[str]) -> None:
    for statement in statements:
        db.execute(statement)


def _begin_immediate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")


def _savepoint(db: sqlite3.Connection) -> None:
    db.execute("SAVEPOINT w")


def _release(db: sqlite3.Connection) -> None:
    db.execute("RELEASE w")


def _undo(db: sqlite3.Connection) -> None:
    db.execute("ROLLBACK TO w")
    db.execute("RELEASE w")


def _finish(db: sqlite3.Connection, commit: bool) -> None:
    """End the group's transaction: COMMIT, or ROLLBACK when the group is broken or the
    COMMIT failed (so the connection is ready for the next group either way)."""
    try:
        if commit:
            db.execute("COMMIT")
            return
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    if db.in_transaction:
        db.execute("ROLLBACK")


# --- query compilation ----------------------------------------------------------------

_NUMERIC = "('integer', 'real')"
_NON_SCALAR = "('array', 'object')"
_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def _sql_text(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def _field_sql(field: str) -> tuple[str, str] | None:
    """``(value, json type)`` expressions for a data field, or None when its name cannot
    go into a JSON path literal (then Python finishes the query)."""
    if not field.isidentifier():
        return None
    path = f"'$.{field}'"
    return f"json_extract(data, {path})", f"json_type(data, {path})"


def _index_name(collection: str, field: str) -> str:
    return '"' + f"records_{collection}_{field}".replace('"', '""') + '"'


class _Compiler:
    """Builds the WHERE and ORDER BY of one query; ``exact`` turns False when some part
    must be finished in Python."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.exact = True

    def bind(self, value: Any) -> str:
        self.params.append(value)
        return "?"

    def bindable(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None or isinstance(value, float | str):
            return True
        return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX

    def condition(self, field: str, op: str, value: Any) -> str | None:
        values = value if op == "in" else (value,)
        if not all(self.bindable(v) for v in values):
            return None
        if field == "id":
            return self.id_condition(op, value)
        exprs = _field_sql(field)
        if exprs is None:
            return None
        v, t = exprs
        if op == "eq":
            return self.eq(v, t, value)
        if op == "ne":
            return f"({self.eq(v, t, value)}) IS NOT 1"
        if op == "in":
            return self.one_of(v, t, value)
        return self.range(v, t, _RANGE_OPS[op], value)

    def eq(self, v: str, t: str, x: Any) -> str:
        if x is None:
            return f"{v} IS NULL"
        if isinstance(x, bool):
            return f"({v} = {int(x)} AND {t} = '{'true' if x else 'false'}')"
        if isinstance(x, int | float):
            return f"({v} = {self.bind(x)} AND {t} IN {_NUMERIC})"
        return f"({v} = {self.bind(x)} AND {t} = 'text')"

    def one_of(self, v: str, t: str, values: Iterable[Any]) -> str:
        parts: list[str] = []
        numbers = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
        texts = [x for x in values if isinstance(x, str)]
        if any(x is None for x in values):
            parts.append(f"{v} IS NULL")
        for b in sorted({x for x in values if isinstance(x, bool)}):
            parts.append(self.eq(v, t, b))
        if numbers:
            marks = ", ".join(self.bind(x) for x in numbers)
            parts.append(f"({v} IN ({marks}) AND {t} IN {_NUMERIC})")
        if texts:
            marks = ", ".join(self.bind(x) for x in texts)
            parts.append(f"({v} IN ({marks}) AND {t} = 'text')")
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def range(self, v: str, t: str, sym: str, x: Any) -> str:
        if x is None:
            return "0"
        if isinstance(x, bool):
            return f"({t} IN ('true', 'false') AND {v} {sym} {int(x)})"
        if isinstance(x, int | float):
            return f"({v} {sym} {self.bind(x)} AND {t} IN {_NUMERIC})"
        return (
            f"(({v} {sym} {self.bind(x)} AND {t} = 'text') OR "
            f"({t} IN {_NON_SCALAR} AND syncline_pystr({v}) {sym} {self.bind(x)}))"
        )

    def id_condition(self, op: str, x: Any) -> str:
        if op == "in":
            texts = [e for e in x if isinstance(e, str)]
            return f"id IN ({', '.join(self.bind(e) for e in texts)})" if texts else "0"
        if op == "ne":
            return f"id <> {self.bind(x)}" if isinstance(x, str) else "1"
        if not isinstance(x, str):
            return "0"
        if op == "eq":
            return f"id = {self.bind(x)}"
        return f"id {_RANGE_OPS[op]} {self.bind(x)}"

    def order(self, order: Iterable[tuple[str, str]]) -> str | None:
        terms: list[str] = []
        for field, direction in order:
            d = "DESC" if direction == "desc" else "ASC"
            if field == "id":
                terms.append(f"id {d}")
                continue
            exprs = _field_sql(field)
            if exprs is None:
                return None
            v, t = exprs
            terms.append(
                f"CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 1 WHEN 'integer' THEN 2 "
                f"WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 3 "
                f"WHEN 'object' THEN 3 ELSE 0 END {d}"
            )
            terms.append(
                f"CASE WHEN {t} IN {_NON_SCALAR} THEN syncline_pystr({v}) ELSE {v} END {d}"
            )
        terms.append("id ASC")
        return ", ".join(terms)


def _compile(query: Query, apply_limit: bool) -> tuple[str, list[Any], Query | None]:
    """SQL and parameters for ``query``, plus the query Python must finish it with (None
    when the SQL is exact)."""
    c = _Compiler()
    collection = (
        _sql_text(query.collection) if "\x00" not in query.collection else c.bind(query.collection)
    )
    where = [f"collection = {collection}", "deleted = 0"]
    for field, op, value in query.conditions:
        sql = c.condition(field, op, value)
        if sql is None:
            c.exact = False
        else:
            where.append(sql)
    limit = query.limit if apply_limit else None
    order = c.order(query.order) if c.exact else None
    text = f"SELECT {_RECORD_COLUMNS} FROM records WHERE {' AND '.join(where)}"
    if order is None:
        return text, c.params, Query(query.collection, query.conditions, query.order, limit)
    text += f" ORDER BY {order}"
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    return text, c.params, None


def index_statements(schema: Schema) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` for every queryable field of ``schema``: an
    expression index matching what :meth:`ReadTx.query` compiles, partial on the
    collection so each collection's index holds only its own records."""
    statements = []
    for cname, coll in schema.collections.items():
        for field in sorted(coll.queryable):
            exprs = _field_sql(field)
            if exprs is None:
                continue
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {_index_name(cname, field)} "
                f"ON records (collection, {exprs[0]}) WHERE collection = {_sql_text(cname)}"
            )
    return statements


# --- transactions ---------------------------------------------------------------------


class _Read(ReadTx):
    def __init__(self, conn: _Conn, epoch: str) -> None:
        self._conn = conn
        self._epoch = epoch
        self._ended = False

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        if self._ended:
            raise StoreError("this transaction has ended; use it only inside its block")
        return await self._conn.run(fn, *args, **kwargs)

    async def epoch(self) -> str:
        return self._epoch

    async def head(self) -> int:
        return await self._run(_head)

    async def floor(self) -> int:
        return await self._run(_floor)

    async def get(self, collection: str, record_id: str) -> Record | None:
        return await self._run(_get, collection, record_id)

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        wanted = list(ids)
        return await self._run(_get_many, collection, wanted) if wanted else {}

    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        sql, params, finish = _compile(query, apply_limit)
        return await self._run(_query, sql, params, finish)

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        return await self._run(_log, after, upto)

    async def seq_at(self, when: float) -> int:
        return await self._run(_seq_at, when)

    async def client(self, client_id: str) -> ClientState | None:
        return await self._run(_client, client_id)

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        return await self._run(_ack, client_id, mutation_id)


class _Write(_Read, WriteTx):
    """Runs on the writer connection inside this writer's savepoint: reads see the
    group's earlier writes and this transaction's own."""

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        return await self._run(_advance_client, client_id, principal, expected, new)

    async def put(self, collection: str, record: Record) -> None:
        await self._run(_put, collection, record.copy())

    async def append_log(self, entries: list[LogEntry]) -> None:
        await self._run(_append_log, list(entries))

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        await self._run(_put_ack, client_id, mutation_id, _dumps(ack))

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        await self._run(_confirm_acks, client_id, upto)

    async def trim(self, upto: int) -> int:
        return await self._run(_trim, upto)


@dataclass(eq=False)
class _Group:
    """Writers sharing one SQLite transaction; ``done`` resolves after its COMMIT."""

    done: asyncio.Future[None]
    joined: int = 0
    broken: BaseException | None = None  # a savepoint could not be undone: roll back all


# --- the store ------------------------------------------------------------------------


class SQLiteStore(Store):
    """A store in one SQLite file (see the module docs for threads, tables and group
    commit). ``commits`` counts the SQLite COMMITs of write groups since ``open()``;
    ``migrations_applied`` lists the schema versions the last ``open()`` applied."""

    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS
    max_group = 256
    """At most this many writers share one COMMIT."""
    read_pool = 4
    """Idle reader connections kept open for the next ``read()``."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.commits = 0
        self.migrations_applied: list[int] = []
        self._state: Literal["new", "open", "closed"] = "new"
        self._epoch = ""
        self._writer: _Conn | None = None
        self._idle: list[_Conn] = []
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._group: _Group | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------

    async def open(self) -> None:
        """Open the file (creating it), switch to WAL, and migrate syncline's tables.

        Raises :class:`StoreError` if the file's tables are newer than this code.
        """
        if self._state == "open":
            return
        if self._state == "closed":
            raise StoreError("this SQLiteStore was closed; make a new one")
        writer = await _Conn.open(self.path, self.busy_timeout, writer=True)
        try:
            self.migrations_applied = await writer.run(_migrate, self.migrations, self.path)
            self._epoch = str(await writer.run(_meta, "epoch"))
        except BaseException:
            await writer.close()
            raise
        self._writer = writer
        self._state = "open"

    async def close(self) -> None:
        """Commit a group still open, then close every connection and thread."""
        if self._state != "open":
            self._state = "closed"
            return
        await self._acquire()
        try:
            if self._group is not None:
                await self._commit()
            self._state = "closed"
            idle, self._idle = self._idle, []
            for conn in idle:
                await conn.close()
            if self._writer is not None:
                await self._writer.close()
                self._writer = None
        finally:
            self._lock.release()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _open_writer(self) -> _Conn:
        if self._state != "open" or self._writer is None:
            raise StoreError(f"the store is {self._state}; call open() first")
        return self._writer

    # --- reads ------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        self._open_writer()
        conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = await _Conn.open(self.path, self.busy_timeout, writer=False)
        tx: _Read | None = None
        reusable = False
        try:
            await conn.run(_begin_read)
            tx = _Read(conn, self._epoch)
            yield tx
        finally:
            if tx is not None:
                tx._ended = True
            try:
                await conn.run(_end_read)
                reusable = True
            finally:
                if reusable and self._state == "open" and len(self._idle) < self.read_pool:
                    self._idle.append(conn)
                else:
                    await conn.close()

    # --- writes and group commit ------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        conn = self._open_writer()
        await self._acquire()
        group: _Group | None = None
        try:
            conn = self._open_writer()  # close() may have run while this writer waited
            if self._group is None:
                await conn.run(_begin_immediate)
                self._group = _Group(asyncio.get_running_loop().create_future())
            group = self._group
            group.joined += 1
            await conn.run(_savepoint)
            tx = _Write(conn, self._epoch)
            try:
                yield tx
            except BaseException:
                tx._ended = True
                try:
                    await conn.run(_undo)
                except BaseException as exc:
                    group.broken = exc
                raise
            tx._ended = True
            try:
                await conn.run(_release)
            except BaseException as exc:
                group.broken = exc
                raise
        finally:
            try:
                if group is not None and self._group is group and self._last_of(group):
                    await self._commit()
            finally:
                self._lock.release()
        assert group is not None
        await asyncio.shield(group.done)  # shielded: one writer's cancellation is not the group's

    def _last_of(self, group: _Group) -> bool:
        """Should the writer leaving the lock commit ``group`` now?"""
        return self._waiting == 0 or group.joined >= self.max_group or group.broken is not None

    async def _acquire(self) -> None:
        """Take the write lock, counted in ``_waiting`` while waiting: a writer that
        leaves the lock with someone waiting hands the open group over to them."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._waiting -= 1
            if self._group is not None and self._waiting == 0 and not self._lock.locked():
                # The group was handed to this writer, which is leaving: commit it anyway.
                task = asyncio.get_running_loop().create_task(self._flush())
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            raise
        self._waiting -= 1

    async def _flush(self) -> None:
        await self._acquire()
        try:
            if self._group is not None and self._last_of(self._group):
                await self._commit()
        finally:
            self._lock.release()

    async def _commit(self) -> None:
        """COMMIT the open group (ROLLBACK if broken) and settle its writers. Never
        raises: the outcome goes to ``group.done``. Called with the lock held."""
        group, self._group = self._group, None
        assert group is not None
        conn = self._open_writer()
        loop = asyncio.get_running_loop()
        finished = conn.submit(_finish, group.broken is None)

        def settle(f: concurrent.futures.Future[None]) -> None:
            exc = f.exception()
            if group.done.done():
                return
            if group.broken is not None:
                err = StoreError("a write of this group could not be undone; all were rolled back")
                err.__cause__ = group.broken
                group.done.set_exception(err)
            elif exc is not None:
                err = StoreError(f"commit failed; nothing of this group was written: {exc}")
                err.__cause__ = exc
                group.done.set_exception(err)
            else:
                self.commits += 1
                group.done.set_result(None)

        # Settled from the thread's completion, so a cancelled committer cannot strand
        # the group's other writers.
        finished.add_done_callback(lambda f: loop.call_soon_threadsafe(settle, f))
        group.done.add_done_callback(_consume)
        await asyncio.wait([group.done])

    # --- indexes ----------------------------------------------------------------------

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create (if missing) an expression index per queryable field of ``schema``;
        return the statements run. Queries filtering on those fields then use them."""
        statements = index_statements(schema)
        async with self.write() as tx:
            assert isinstance(tx, _Write)
            await tx._run(_execute_all, statements)
        return statements


def _consume(future: asyncio.Future[None]) -> None:
    """Mark a group's outcome as retrieved, even if every writer of it was cancelled."""
    if not future.cancelled():
        future.exception()
