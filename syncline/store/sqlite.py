"""The SQLite store: one database file, durable, the embedded default.

Theory of operation
-------------------

**Connections and threads.** One *writer* connection lives in one dedicated thread (a
one-thread executor), so every write statement runs in submission order and none ever
runs on the event loop. ``read()`` transactions each take their own *reader*
connection from a small pool; every reader also owns a one-thread executor, so a
cleanup queued after a cancelled call still runs after it. A read's first call opens
it with ``BEGIN`` plus its first ``SELECT``, which pins a WAL snapshot: from then on
the transaction sees one committed state, whatever commits meanwhile, until its block
exits (``ROLLBACK`` releases the snapshot before the connection goes back to the pool).

**Durability.** ``journal_mode=WAL`` and ``synchronous=FULL``: a COMMIT returns only
after the WAL is on disk, and ``write()`` exits only after its COMMIT, so every ack
follows its commit (invariants 2 and 3).

**Group commit.** ``write()`` blocks run one at a time (an asyncio lock), and every
statement runs on the writer thread in order. The first statement of a group issues
``BEGIN IMMEDIATE``; each writer's statements run inside ``SAVEPOINT w``. When a
block exits, one trip to the thread sends its pending writes and ``RELEASE w`` (or,
if the block raised, ``ROLLBACK TO w`` + ``RELEASE w``: its effects vanish, the
group's other writers keep theirs, and its exception goes to it alone); if nobody is
waiting for the lock (or :attr:`SQLiteStore.max_group` writers have joined), the same
trip ends with ``COMMIT`` -- one transaction, one fsync for the whole group. The lock
is released as soon as that trip is queued: the next writer's statements run after it.
A writer that never called the thread (the write cache answered all its reads) makes
no trip of its own: its writes are *carried* with the group's next trip, ahead of the
next writer's savepoint (a block that raised had sent nothing: it just drops them).
Every successful writer leaves ``write()`` only after its group's COMMIT, so each ack
follows its commit. If COMMIT fails, every writer of the group gets a
:class:`StoreError` and none is acknowledged; so does the whole group if a savepoint
cannot be rolled back. Writers of one group see each other's writes (same
connection), so ``seq`` stays dense. Group bookkeeping never waits on the cancelled:
a writer cancelled while its group commits may still be committed.

**Round trips.** Each thread hand-off costs tens of microseconds (more on a busy
machine), more than most statements, and writers make them one after another inside
the write lock, so they bound the mutations per second. A write transaction makes
few: its first call also fetches the head, and writes that return nothing (``put``,
``append_log``, ``put_ack``, ``confirm_acks``) travel with the next call or with the
block's exit. Reads of records and clients, and ``advance_client``, are answered from
the write cache (:mod:`syncline.store.writecache`) once the group's first trip has
checked ``PRAGMA data_version``: the writer connection is the only one that writes,
so what it read or wrote stays true until another connection commits. A write that
fails on the thread therefore fails its whole group (later writers may have read it
from the cache). An ``Engine.apply`` takes one trip (its exit) when its client and
record are cached, and one more to begin a group.

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
functions. Filters use the indexes of :meth:`SQLiteStore.ensure_indexes`; the
type-aware ORDER BY sorts the filtered rows rather than walking an index.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import sqlite3
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any, Concatenate, Literal, ParamSpec, TypeVar

import orjson

from ..exceptions import StoreError
from ..model import Schema
from ..query import Query
from ..record import Record
from .base import ClientState, LogEntry, ReadTx, Store, WriteTx
from .writecache import ClientRow, Overlay, RecordRow, WriteCache

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStore"]

P = ParamSpec("P")
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")

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
        self,
        db: sqlite3.Connection,
        executor: concurrent.futures.ThreadPoolExecutor,
        path: str,
        writer: bool,
    ) -> None:
        self.writer = writer
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
        return cls(db, executor, path, writer)

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
            await self.run(_optimize_and_close if self.writer else _close)
        finally:
            self._executor.shutdown(wait=False)


def _close(db: sqlite3.Connection) -> None:
    db.close()


def _optimize_and_close(db: sqlite3.Connection) -> None:
    try:
        db.execute("PRAGMA optimize")  # gathers planner statistics where they would help
    finally:
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
_WIRE_COLUMNS = "id, data, inc, v, fv"
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


def _wire(row: tuple[Any, ...]) -> dict[str, Any]:
    """A row of :data:`_WIRE_COLUMNS` as :meth:`Record.to_wire` would give it."""
    rid, data, inc, v, fv = row
    return {"id": rid, "inc": inc, "v": v, "fv": orjson.loads(fv), "data": orjson.loads(data)}


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


def _in_snapshot(db: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``fn`` in the read transaction, opening it first if needed: ``BEGIN`` and the
    first ``SELECT`` pin the WAL snapshot the transaction keeps to its end."""
    if not db.in_transaction:
        db.execute("BEGIN")
    return fn(db)


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
    row = _get_row(db, collection, record_id)
    return None if row is None else _record(row)


def _get_row(db: sqlite3.Connection, collection: str, record_id: str) -> RecordRow | None:
    row: RecordRow | None = db.execute(
        f"SELECT {_RECORD_COLUMNS} FROM records WHERE collection = ? AND id = ?",
        (collection, record_id),
    ).fetchone()
    return row


def _get_rows(db: sqlite3.Connection, collection: str, ids: list[str]) -> list[RecordRow]:
    rows: list[RecordRow] = db.execute(
        f"SELECT {_RECORD_COLUMNS} FROM records "
        "WHERE collection = ? AND id IN (SELECT value FROM json_each(?))",
        (collection, _dumps(ids)),
    ).fetchall()
    return rows


def _get_many(db: sqlite3.Connection, collection: str, ids: list[str]) -> dict[str, Record]:
    return {r.id: r for r in map(_record, _get_rows(db, collection, ids))}


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
    row = _client_row(db, client_id)
    return None if row is None else ClientState(client_id, *row)


def _client_row(db: sqlite3.Connection, client_id: str) -> ClientRow | None:
    row = db.execute(
        "SELECT principal, last FROM clients WHERE client_id = ?", (client_id,)
    ).fetchone()
    return None if row is None else (row[0], row[1])


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
    return [by_id[str(v["id"])] for v in _finished(finish, views)]


def _query_wire(
    db: sqlite3.Connection, sql: str, params: list[Any], finish: Query | None
) -> list[dict[str, Any]]:
    wires = [_wire(r) for r in db.execute(sql, params).fetchall()]
    if finish is None:
        return wires
    by_id = {w["id"]: w for w in wires}
    views = [{**w["data"], "id": w["id"]} for w in wires]
    return [by_id[str(v["id"])] for v in _finished(finish, views)]


def _finished(finish: Query, views: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    """What SQL could not do exactly: filter ``views`` by ``finish``, sort and limit."""
    ordered = Query(finish.collection, (), finish.order, finish.limit)
    return ordered.sort([v for v in views if finish.matches(v)])


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


def _advance_known(
    db: sqlite3.Connection, client_id: str, principal: str, expected: int, new: int
) -> None:
    """:func:`_advance_client` whose outcome the write cache already knew to be True."""
    if not _advance_client(db, client_id, principal, expected, new):
        raise StoreError(f"client {client_id!r} was not at {expected} as the write cache held")


_PUT = (
    "INSERT INTO records (collection, id, data, inc, v, fv, fw, adds, deleted) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (collection, id) DO UPDATE SET "
    "data = excluded.data, inc = excluded.inc, v = excluded.v, fv = excluded.fv, "
    "fw = excluded.fw, adds = excluded.adds, deleted = excluded.deleted"
)
_APPEND = f"INSERT INTO log ({_LOG_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
_PUT_ACK = (
    "INSERT INTO acks (client_id, mutation_id, ack) VALUES (?, ?, ?) "
    "ON CONFLICT (client_id, mutation_id) DO UPDATE SET ack = excluded.ack"
)
_CONFIRM_ACKS = "DELETE FROM acks WHERE client_id = ? AND mutation_id <= ?"
# Acks of changes the log no longer holds, and each such client's earlier acks (those
# without a seq too): a client that never confirms its acks keeps them only as long.
_TRIM_ACKS = (
    "DELETE FROM acks WHERE mutation_id <= (SELECT max(a.mutation_id) FROM acks a "
    "WHERE a.client_id = acks.client_id AND json_extract(a.ack, '$.seq') <= ?)"
)


def _execute(db: sqlite3.Connection, *, sql: str, params: Sequence[Any]) -> None:
    db.execute(sql, params)


def _executemany(db: sqlite3.Connection, *, sql: str, rows: list[tuple[Any, ...]]) -> None:
    db.executemany(sql, rows)


def _trim(db: sqlite3.Connection, upto: int) -> int:
    upto = min(upto, _head(db))
    if upto <= _floor(db):
        return 0
    removed = db.execute("DELETE FROM log WHERE seq <= ?", (upto,)).rowcount
    db.execute("DELETE FROM records WHERE deleted = 1 AND v <= ?", (upto,))
    db.execute(_TRIM_ACKS, (upto,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'floor'", (upto,))
    return int(removed)


def _pragma(db: sqlite3.Connection, name: str) -> Any:
    row = db.execute(f"PRAGMA {name}").fetchone()
    return None if row is None else row[0]


def _execute_all(db: sqlite3.Connection, statements: list[str]) -> None:
    for statement in statements:
        db.execute(statement)


# --- group commit, thread side ----------------------------------------------------------

_Deferred = Callable[[sqlite3.Connection], None]


@dataclass(eq=False)
class _Group:
    """Writers sharing one SQLite transaction; ``done`` resolves after its COMMIT.

    ``begun`` and ``broken`` belong to the writer thread: BEGIN runs lazily, with the
    first statement of the group, and a writer whose savepoint could not be undone
    poisons the group (every later statement of it fails, and it ends in ROLLBACK).
    """

    done: asyncio.Future[None]
    joined: int = 0
    begun: bool = False
    broken: Exception | None = None
    verified: bool = False
    """(Event loop only.) The write cache was checked when this group began: its
    writers may trust it."""
    carried: list[_Deferred] = dataclasses.field(default_factory=list)
    """(Event loop only.) Writes of writers that left without ever calling the thread:
    they travel with the group's next trip, ahead of its next writer's savepoint."""


@dataclass(eq=False)
class _Member:
    """One writer of a group: whether its savepoint is open (writer thread only) and the
    writes it has not sent to the thread yet."""

    group: _Group
    savepoint: bool = False
    deferred: list[_Deferred] = dataclasses.field(default_factory=list)
    called: bool = False  # (event loop) it made a trip to the thread: it has a savepoint


@dataclass
class _Exit:
    """What :func:`_leave_group` did for one writer."""

    own: Exception | None = None  # its pending writes or RELEASE failed: they were undone
    ended: bool = False  # this call ended the group's transaction
    committed: bool = False  # ... with a COMMIT that succeeded
    error: Exception | None = None  # ... or with this failure: nothing of the group stays


def _enter(
    db: sqlite3.Connection, member: _Member, carried: list[_Deferred]
) -> tuple[int, int] | None:
    """Open the group's transaction, run the writes ``carried`` from writers who left
    before (outside any savepoint: they are done), and open this writer's savepoint,
    where not yet open. When this call began the group: its ``(data_version, head)``
    right after BEGIN, for the write cache."""
    began = _begin_carrying(db, member.group, carried)
    if not member.savepoint:
        db.execute("SAVEPOINT w")
        member.savepoint = True
    return began


def _begin(db: sqlite3.Connection, group: _Group) -> tuple[int, int] | None:
    """BEGIN the group's transaction if not yet begun (see :func:`_enter`)."""
    if group.broken is not None:
        raise StoreError(f"an earlier write of this group failed: {group.broken}")
    if group.begun:
        return None
    if db.in_transaction:  # left over by a failed ROLLBACK: start clean
        db.execute("ROLLBACK")
    db.execute("BEGIN IMMEDIATE")
    group.begun = True
    return int(db.execute("PRAGMA data_version").fetchone()[0]), _head(db)


def _begin_carrying(
    db: sqlite3.Connection, group: _Group, carried: list[_Deferred]
) -> tuple[int, int] | None:
    """:func:`_begin`, then the writes carried from writers who left. If either fails
    while writes are carried, the group is broken: those writers' blocks have exited,
    nobody can undo just their writes, and none of the group may commit."""
    try:
        began = _begin(db, group)
        for write in carried:
            write(db)
    except Exception as exc:
        if carried:
            group.broken = group.broken or exc
        raise
    return began


def _in_savepoint(
    db: sqlite3.Connection,
    member: _Member,
    carried: list[_Deferred],
    deferred: list[_Deferred],
    with_head: bool,
    fn: Callable[[sqlite3.Connection], T],
) -> tuple[tuple[int, int] | None, int | None, T]:
    """Run ``fn`` in the writer's savepoint after its pending writes; with the head
    too when asked (the first call of a transaction: it saves a trip for ``head()``),
    and what :func:`_enter` reports when this call began the group."""
    began = _enter(db, member, carried)
    try:
        for write in deferred:
            write(db)
    except Exception as exc:
        # The writer's overlay (and so the write cache) already holds these writes.
        member.group.broken = member.group.broken or exc
        raise
    return began, (_head(db) if with_head else None), fn(db)


def _end_group(db: sqlite3.Connection, group: _Group) -> bool:
    """COMMIT the group's transaction (ROLLBACK if it is broken); True when a COMMIT
    succeeded. A failed COMMIT is rolled back, so the connection is ready for the next
    group."""
    begun, group.begun = group.begun, False
    if group.broken is not None:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise StoreError(
            f"a write of this group failed or could not be undone, so the group was "
            f"rolled back: {group.broken}"
        )
    if not begun:
        return False
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return True


def _end_group_exit(db: sqlite3.Connection, group: _Group, carried: list[_Deferred]) -> _Exit:
    out = _Exit(ended=True)
    try:
        if carried:
            _begin_carrying(db, group, carried)
    except Exception:
        pass  # the group is broken: _end_group rolls it back and says why
    try:
        out.committed = _end_group(db, group)
    except Exception as exc:
        out.error = exc
    return out


def _leave_group(
    db: sqlite3.Connection,
    member: _Member,
    carried: list[_Deferred],
    deferred: list[_Deferred],
    ok: bool,
    end: bool,
) -> _Exit:
    """A writer's block has exited (``ok``: normally). Send its pending writes and
    RELEASE its savepoint, or roll the savepoint back; then, if ``end`` (nobody else
    was waiting to join), COMMIT the group -- all in one trip to the thread."""
    out = _Exit()
    group = member.group
    if carried:
        try:
            _begin_carrying(db, group, carried)
        except Exception as exc:
            out.own = exc
    if ok and out.own is None:
        try:
            if deferred:
                _enter(db, member, [])
                for write in deferred:
                    write(db)
            if member.savepoint:
                db.execute("RELEASE w")
                member.savepoint = False
        except Exception as exc:
            out.own = exc
            # Writers after this one may have read its writes from the write cache:
            # none of the group may commit.
            group.broken = group.broken or exc
    if member.savepoint:
        try:
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            member.savepoint = False
        except Exception as exc:
            group.broken = group.broken or exc
    if end:
        out.ended = True
        try:
            out.committed = _end_group(db, group)
        except Exception as exc:
            out.error = exc
    return out


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
        if not x.startswith(("[", "{")):
            # Only a JSON string extracts to text that equals it (an array or object
            # extracts to its JSON text, which starts with [ or {): no type check needed,
            # and a type check costs a second parse of the record per row.
            return f"{v} = {self.bind(x)}"
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

    def order(self, order: Iterable[tuple[str, str]], by_filter: bool) -> str | None:
        """The ORDER BY terms. ``by_filter``: write ``+id``, so the primary key does not
        tempt the planner away from a field index that narrows the rows down."""
        rid = "+id" if by_filter else "id"
        terms: list[str] = []
        for field, direction in order:
            d = "DESC" if direction == "desc" else "ASC"
            if field == "id":
                terms.append(f"{rid} {d}")
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
        terms.append(f"{rid} ASC")
        return ", ".join(terms)


def _compile(
    query: Query, apply_limit: bool, columns: str = _RECORD_COLUMNS
) -> tuple[str, list[Any], Query | None]:
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
    by_filter = any(field != "id" for field, _, _ in query.conditions)
    order = c.order(query.order, by_filter) if c.exact else None
    text = f"SELECT {columns} FROM records WHERE {' AND '.join(where)}"
    if order is None:
        return text, c.params, Query(query.collection, query.conditions, query.order, limit)
    text += f" ORDER BY {order}"
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    return text, c.params, None


def _index_statements(schema: Schema) -> list[str]:
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

    def _check(self) -> None:
        if self._ended:
            raise StoreError("this transaction has ended; use it only inside its block")

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()

        def call(db: sqlite3.Connection) -> T:
            return fn(db, *args, **kwargs)

        return await self._conn.run(_in_snapshot, call)

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

    async def query_wire(self, query: Query, *, apply_limit: bool = True) -> list[dict[str, Any]]:
        sql, params, finish = _compile(query, apply_limit, _WIRE_COLUMNS)
        return await self._run(_query_wire, sql, params, finish)

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        return await self._run(_log, after, upto)

    async def seq_at(self, when: float) -> int:
        return await self._run(_seq_at, when)

    async def client(self, client_id: str) -> ClientState | None:
        return await self._run(_client, client_id)

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        return await self._run(_ack, client_id, mutation_id)


class _Write(_Read, WriteTx):
    """One writer's view, on the writer connection inside its savepoint: reads see the
    group's earlier writes and this transaction's own.

    Writes that return nothing (``put``, ``append_log``, ``put_ack``,
    ``confirm_acks``) are encoded at once and sent to the thread with the next call
    (or when the block exits), which saves a thread round trip each. A SQLite error in
    one of them is raised by that later call, or by the block's exit: let it propagate
    (the writer's savepoint is then rolled back).
    """

    def __init__(self, conn: _Conn, epoch: str, member: _Member, cache: WriteCache) -> None:
        super().__init__(conn, epoch)
        self._member = member
        self._head: int | None = None  # only this transaction moves the head meanwhile
        self._cache = cache
        self.overlay = Overlay()

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()
        member = self._member
        deferred, member.deferred = member.deferred, []
        carried, member.group.carried = member.group.carried, []
        member.called = True

        def call(db: sqlite3.Connection) -> T:
            return fn(db, *args, **kwargs)

        trip = asyncio.wrap_future(
            self._conn.submit(_in_savepoint, member, carried, deferred, self._head is None, call)
        )
        trip.add_done_callback(partial(self._tripped, member.group))
        # Shielded: the trip carries other writers' writes (they were acked with the
        # group); cancelling this writer must not cancel it before it ran.
        _, head, result = await asyncio.shield(trip)  # began: see _tripped
        if head is not None:
            self._head = head
        return result

    def _tripped(self, group: _Group, trip: asyncio.Future[tuple[Any, ...]]) -> None:
        """A trip ended: if it began the group, check the write cache (in a callback, so
        even for a writer cancelled meanwhile, and in order after the previous group's
        :meth:`SQLiteStore._settle`)."""
        if trip.cancelled() or trip.exception() is not None:
            return
        began = trip.result()[0]
        if began is not None:
            self._cache.verify(*began)
            group.verified = True

    def _known(self, mine: dict[K, V], cached: dict[K, V], key: K) -> tuple[bool, V | None]:
        """(known, value): this transaction's own view first, then the write cache once
        this group has checked it."""
        if key in mine:
            return True, mine[key]
        if self._member.group.verified and key in cached:
            return True, cached[key]
        return False, None

    def _known_record(self, key: tuple[str, str]) -> tuple[bool, RecordRow | None]:
        return self._known(self.overlay.records, self._cache.records, key)

    def _known_client(self, client_id: str) -> tuple[bool, ClientRow | None]:
        return self._known(self.overlay.clients, self._cache.clients, client_id)

    def _defer(self, write: _Deferred) -> None:
        self._check()
        self._member.deferred.append(write)

    async def head(self) -> int:
        if self._head is None and self._member.group.verified:
            self._head = self._cache.head
        if self._head is None:
            self._head = await self._run(_head)
        return self._head

    async def get(self, collection: str, record_id: str) -> Record | None:
        key = (collection, record_id)
        known, row = self._known_record(key)
        if not known:
            row = self.overlay.records[key] = await self._run(_get_row, collection, record_id)
        return None if row is None else _record(row)

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        rows: dict[str, RecordRow | None] = {}
        missing: list[str] = []
        for rid in ids:
            known, row = self._known_record((collection, rid))
            if known:
                rows[rid] = row
            else:
                missing.append(rid)
        if missing:
            fetched = {r[0]: r for r in await self._run(_get_rows, collection, missing)}
            for rid in missing:
                rows[rid] = self.overlay.records[(collection, rid)] = fetched.get(rid)
        return {rid: _record(row) for rid, row in rows.items() if row is not None}

    async def client(self, client_id: str) -> ClientState | None:
        known, row = self._known_client(client_id)
        if not known:
            row = self.overlay.clients[client_id] = await self._run(_client_row, client_id)
        return None if row is None else ClientState(client_id, *row)

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        known, row = self._known_client(client_id)
        if not known:
            ok = await self._run(_advance_client, client_id, principal, expected, new)
        else:  # the outcome of _advance_client, without asking
            ok = row[1] == expected if row is not None else expected == 0
            if ok:
                self._defer(
                    partial(
                        _advance_known,
                        client_id=client_id,
                        principal=principal,
                        expected=expected,
                        new=new,
                    )
                )
        if ok:
            self.overlay.clients[client_id] = (principal, new)
        return ok

    async def put(self, collection: str, record: Record) -> None:
        row = (
            collection,
            record.id,
            _dumps(record.data),
            record.inc,
            record.v,
            _dumps(record.fv),
            _dumps(record.fw),
            _dumps(record.adds),
            int(record.deleted),
        )
        self._defer(partial(_execute, sql=_PUT, params=row))
        self.overlay.records[(collection, record.id)] = row[1:]

    async def append_log(self, entries: list[LogEntry]) -> None:
        head = await self.head()
        for e in entries:
            if e.seq != head + 1 and e.seq != head:
                raise StoreError(f"log seq {e.seq} does not follow head {head}")
            head = e.seq
        rows = [
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
        ]
        self._defer(partial(_executemany, sql=_APPEND, rows=rows))
        self._head = head

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        self._defer(partial(_execute, sql=_PUT_ACK, params=(client_id, mutation_id, _dumps(ack))))

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        self._defer(partial(_execute, sql=_CONFIRM_ACKS, params=(client_id, upto)))

    async def trim(self, upto: int) -> int:
        self._cache.reset()  # trimmed tombstones are gone
        return await self._run(_trim, upto)


# --- the store ------------------------------------------------------------------------


class SQLiteStore(Store):
    """A store in one SQLite file (see the module docs for threads, tables and group
    commit). ``commits`` counts the SQLite COMMITs of write groups since ``open()``;
    ``migrations_applied`` lists the schema versions the last ``open()`` applied."""

    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS
    max_group = 256
    """At most this many writers share one COMMIT."""
    read_pool = 8
    """Idle reader connections kept open for the next ``read()``."""

    def __init__(self, path: str | os.PathLike[str], *, busy_timeout: float = 5.0) -> None:
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self.commits = 0
        self.migrations_applied: list[int] = []
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._epoch = ""
        self._writer: _Conn | None = None
        self._idle: list[_Conn] = []
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._group: _Group | None = None
        self._cache = WriteCache()
        self._tasks: set[asyncio.Task[None]] = set()

    # --- lifecycle --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    async def open(self) -> None:
        """Open the file (creating it), switch to WAL, and migrate syncline's tables.

        Raises :class:`StoreError` if the file's tables are newer than this code.
        """
        if self._state == "open":
            return
        if self._state != "new":
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
            if self._state == "new":
                self._state = "closed"
            return
        self._state = "closing"
        await asyncio.shield(self._spawn(self._shutdown()))
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending)

    async def _shutdown(self) -> None:
        await self._acquire()
        try:
            if self._group is not None:
                await self._commit()
            idle, self._idle = self._idle, []
            for conn in idle:
                await conn.close()
            if self._writer is not None:
                await self._writer.close()
                self._writer = None
        finally:
            self._state = "closed"
            self._lock.release()

    def _check_open(self) -> _Conn:
        if self._state != "open" or self._writer is None:
            raise StoreError(f"the store is {self._state}; use it between open() and close()")
        return self._writer

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run store bookkeeping as its own task, so cancelling the caller cannot stop it
        half way (the thread runs what it was given anyway)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has seen it already

    # --- reads ------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        self._check_open()
        conn = self._idle.pop() if self._idle else None
        if conn is None:
            conn = await _Conn.open(self.path, self.busy_timeout, writer=False)
        tx = _Read(conn, self._epoch)
        try:
            yield tx
        finally:
            tx._ended = True
            try:
                await conn.run(_end_read)
            except BaseException:
                self._spawn(conn.close())  # its state is unknown: do not reuse it
                raise
            if self._state == "open" and len(self._idle) < self.read_pool:
                self._idle.append(conn)
            else:
                self._spawn(conn.close())

    # --- writes and group commit ------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        self._check_open()
        await self._acquire()
        # This writer holds the lock until _leave() hands its exit to the thread.
        try:
            conn = self._check_open()  # close() may have begun while this writer waited
        except StoreError:
            self._lock.release()
            raise
        group = self._group
        if group is None:
            group = self._group = _Group(asyncio.get_running_loop().create_future())
        group.joined += 1
        member = _Member(group)
        tx = _Write(conn, self._epoch, member, self._cache)
        try:
            yield tx
        except BaseException:
            tx._ended = True
            self._leave(conn, member, ok=False)
            raise
        tx._ended = True
        # Before the lock goes: the next writer of the group sees this one's state.
        self._cache.merge(tx.overlay, tx._head)
        # Shielded: cancelling this writer must not cancel its exit or its group's COMMIT.
        out = await asyncio.shield(self._leave(conn, member, ok=True))
        if out.own is not None:
            self._cache.reset()
            raise StoreError(f"{self.path}: {out.own}") from out.own
        await asyncio.shield(group.done)

    def _leave(self, conn: _Conn, member: _Member, ok: bool) -> asyncio.Future[_Exit]:
        """Hand a finished writer's exit to the thread (pending writes, RELEASE or
        ROLLBACK TO, and COMMIT if it is the group's last) and release the lock at once:
        the thread runs statements in order, so the next writer's come after these.
        No await: nothing can interrupt this half way."""
        group = member.group
        end = self._last_of(group)
        deferred, member.deferred = member.deferred, []
        if not member.called and not end:
            # No savepoint to release or roll back: its writes (if it succeeded) go with
            # the group's next trip. A failure there fails the whole group.
            if ok:
                group.carried.extend(deferred)
            self._lock.release()
            done: asyncio.Future[_Exit] = asyncio.get_running_loop().create_future()
            done.set_result(_Exit())
            return done
        carried, group.carried = group.carried, []
        exit_ = asyncio.wrap_future(conn.submit(_leave_group, member, carried, deferred, ok, end))
        if end:
            if self._group is group:
                self._group = None
            exit_.add_done_callback(lambda f: self._settle(group, f))
        exit_.add_done_callback(_consume)
        self._lock.release()
        return exit_

    def _last_of(self, group: _Group) -> bool:
        """Should the writer leaving the lock end ``group`` now?"""
        return self._waiting == 0 or group.joined >= self.max_group

    async def _acquire(self) -> None:
        """Take the write lock, counted in ``_waiting`` while waiting: a writer that
        leaves the lock with someone waiting hands the open group over to them."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._waiting -= 1
            if self._group is not None and self._waiting == 0 and not self._lock.locked():
                self._spawn(self._flush())  # the group was handed to this writer, which left
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
        """End the open group's transaction and settle its writers (lock held)."""
        group, self._group = self._group, None
        if group is not None and self._writer is not None:
            carried, group.carried = group.carried, []
            ended = asyncio.wrap_future(self._writer.submit(_end_group_exit, group, carried))
            ended.add_done_callback(lambda f: self._settle(group, f))
            await asyncio.wait([ended])

    def _settle(self, group: _Group, ended: asyncio.Future[_Exit]) -> None:
        """Resolve ``group.done`` from the call that ended its transaction."""
        if ended.cancelled():
            error: BaseException | None = StoreError("the group's COMMIT was cancelled")
        elif ended.exception() is not None:
            error = ended.exception()
        else:
            out = ended.result()
            error = out.error
            if out.committed:
                self.commits += 1
        if error is not None:
            self._cache.reset()  # it may hold what the group wrote
        if group.done.done():
            return
        if error is None:
            group.done.set_result(None)
        else:
            failure = StoreError(
                f"{self.path}: COMMIT failed; nothing of this group was written: {error}"
            )
            failure.__cause__ = error
            group.done.set_exception(failure)
        group.done.add_done_callback(_consume)

    # --- diagnostics and indexes ------------------------------------------------------

    async def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA <name>`` on the writer connection (``synchronous``,
        ``journal_mode``, ``foreign_keys`` ...), for diagnostics and tests."""
        if not name.isidentifier():
            raise StoreError(f"not a pragma name: {name!r}")
        return await self._check_open().run(_pragma, name)

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create (if missing) an expression index per queryable field of ``schema``;
        return the statements run. Queries filtering on those fields then use them."""
        statements = _index_statements(schema)
        async with self.write() as tx:
            assert isinstance(tx, _Write)
            await tx._run(_execute_all, statements)
        return statements


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as retrieved, even if whoever would await it was cancelled."""
    if not future.cancelled():
        future.exception()
