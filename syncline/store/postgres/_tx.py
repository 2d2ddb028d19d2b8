"""The PostgreSQL store's transactions: :class:`Read` on a pool connection in one
``REPEATABLE READ`` snapshot, :class:`Write` inside savepoint ``w`` on its group's
connection (see :mod:`syncline.store.postgres`)."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import orjson

from ...query import Query
from ...record import Record
from .._group import Group
from .._sql import Transaction, dumps, finish_records, log_entry, record
from ..base import ClientState, LogEntry, WriteTx, following
from ._compile import compile_query
from ._lost import connection_lost
from ._schema import DB_ERRORS

if TYPE_CHECKING:
    from ._schema import Conn
    from ._store import PostgresStore

__all__ = ["PostgresGroup", "Read", "Write"]

T = TypeVar("T")

RETRIES = 2
"""Fresh connections tried when one is found lost before anything of a transaction
can have happened (see :mod:`._lost`)."""


class Read(Transaction):
    """A read on its own pool connection; the first statement begins the snapshot.

    A connection found lost before any result reached the caller (the pool handed out
    one the server had closed) is replaced and the statement run again in a new
    snapshot: nobody saw the old one. After that, a lost connection is a
    :class:`StoreError`."""

    def __init__(self, store: PostgresStore, conn: Conn | None) -> None:
        self._store = store
        self._sql = store._sql
        self._conn = conn
        self._begun = False
        self._answered = False  # a result reached the caller: the snapshot must stay

    async def _connection(self) -> Conn:
        assert self._conn is not None
        if not self._begun:
            self._begun = True
            await self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return self._conn

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        self._check()
        for attempt in range(RETRIES + 1):
            try:
                conn = await self._connection()
                rows = await conn.fetch(sql, *args)
            except DB_ERRORS as exc:
                if attempt == RETRIES or self._answered or not connection_lost(exc):
                    raise self._store._failure(exc) from exc
                await self._reconnect()
                continue
            self._answered = True
            return list(rows)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _reconnect(self) -> None:
        """Drop the lost connection from the pool and take another."""
        lost, self._conn, self._begun = self._conn, None, False
        if lost is not None:
            await self._store._discard(lost)
        self._conn = await self._store._acquire_connection()

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self._fetch(sql, *args)
        return rows[0][0] if rows else None

    async def epoch(self) -> str:
        return self._store._epoch

    async def head(self) -> int:
        return int(await self._fetchval(self._sql.head))

    async def floor(self) -> int:
        return int(await self._fetchval(self._sql.floor))

    async def get(self, collection: str, record_id: str) -> Record | None:
        rows = await self._fetch(self._sql.get, collection, record_id)
        return record(tuple(rows[0])) if rows else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        wanted = list(ids)
        if not wanted:
            return {}
        rows = await self._fetch(self._sql.get_many, collection, wanted)
        return {r.id: r for r in (record(tuple(row)) for row in rows)}

    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        if "\x00" in query.collection:
            return []  # no stored collection name can hold it
        compiled = compile_query(query, apply_limit, self._sql.records)
        rows = await self._fetch(compiled.sql, *compiled.params)
        if compiled.finish is not None:
            return finish_records([record(tuple(r)[:8]) for r in rows], compiled.finish)
        if compiled.guarded and rows and rows[0][8]:
            rows = await self._fetch(compiled.fallback, *compiled.params)
            limit = query.limit if apply_limit else None
            again = [record(tuple(r)[:8]) for r in rows]
            return finish_records(
                again, Query(query.collection, query.conditions, query.order, limit)
            )
        return [record(tuple(r)[:8]) for r in rows]

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        rows = await self._fetch(self._sql.log, after, upto)
        return [log_entry(tuple(r)) for r in rows]

    async def seq_at(self, when: float) -> int:
        value = await self._fetchval(self._sql.seq_at, when)
        return int(value) if value is not None else await self.floor()

    async def client(self, client_id: str) -> ClientState | None:
        rows = await self._fetch(self._sql.client, client_id)
        return ClientState(client_id, rows[0][0], int(rows[0][1])) if rows else None

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        value = await self._fetchval(self._sql.ack, client_id, mutation_id)
        if value is None:
            return None
        ack: dict[str, Any] = orjson.loads(value)
        return ack


async def _settled(step: asyncio.Future[Any], grace: float) -> bool:
    """Wait up to ``grace`` seconds for ``step`` to end, whatever cancels the waiter
    meanwhile; True if it ended with an answer from the server (the connection is in a
    known state)."""
    deadline = asyncio.get_running_loop().time() + grace
    while not step.done():
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            return False
        try:
            await asyncio.wait([step], timeout=remaining)
        except asyncio.CancelledError:
            continue  # cancelled again: the statement is still the thing to wait for
    if step.cancelled():
        return False
    error = step.exception()
    return error is None or isinstance(error, asyncpg.PostgresError)


@dataclass(eq=False)
class PostgresGroup(Group):
    """Writers sharing one PostgreSQL transaction; ``done`` resolves after its COMMIT.

    ``conn`` is taken with the group's first statement. ``head`` is the head as the
    group's finished writers left it (None until first read). ``savepoint``: a clean
    savepoint ``w`` is open for the next writer. ``broken``: the connection's state is
    unknown or a savepoint could not be undone; the group ends in ROLLBACK.
    """

    conn: Conn | None = None
    head: int | None = None
    savepoint: bool = False
    broken: BaseException | None = None


@dataclass(eq=False)
class _Pending:
    """Writes kept, encoded at once as JSON objects, until the next statement or the
    block's exit (last put of a record and last ack of a mutation win; log rows keep
    their order)."""

    records: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    log: list[str] = dataclasses.field(default_factory=list)
    acks: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.records or self.log or self.acks)


class Write(Read, WriteTx):
    """One writer of a group, inside savepoint ``w`` on the group's connection: reads
    see the group's earlier writes and this transaction's own."""

    def __init__(self, store: PostgresStore, group: PostgresGroup) -> None:
        super().__init__(store, None)
        self._group = group
        self._entered = False  # this writer's statements run in the savepoint
        self._head: int | None = None
        self._pending = _Pending()

    async def _connection(self) -> Conn:
        """The group's connection, with its transaction and this writer's savepoint
        open. Anything that interrupts a statement half way breaks the group."""
        g = self._group
        if g.broken is not None:
            failure = self._store._error_class(g.broken)
            raise failure(f"an earlier write of this group failed: {g.broken}") from g.broken
        try:
            if g.conn is None:
                await self._begin_group()
                g.savepoint = True
            elif not g.savepoint:
                await g.conn.execute("SAVEPOINT w")
                g.savepoint = True
        except BaseException as exc:
            g.broken = g.broken or exc
            raise
        self._entered = True
        assert g.conn is not None
        return g.conn

    async def _begin_group(self) -> None:
        """Take a connection and open the group's transaction; one found lost is
        replaced (the server rolled back whatever it had begun)."""
        g = self._group
        key = self._store._write_key
        for attempt in range(RETRIES + 1):
            g.conn = await self._store._acquire_connection()
            try:
                await g.conn.execute(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; "
                    f"SELECT pg_advisory_xact_lock({key}); SAVEPOINT w"
                )
                return
            except DB_ERRORS as exc:
                if attempt == RETRIES or not connection_lost(exc):
                    raise
                lost, g.conn = g.conn, None
                await self._store._discard(lost)

    async def _call(self, statement: Callable[[], Coroutine[Any, Any, T]]) -> T:
        """Run ``statement()`` on the group's connection; any failure is a
        :class:`StoreError`, and one that leaves the connection unusable breaks the group.

        The statement is made here, not by the caller: once the group's session ends
        between two statements, asyncpg gives its connection back to the pool and the
        next call refuses at once (``InterfaceError``, "released back to the pool")
        before any coroutine exists -- that too is a lost connection."""
        try:
            step = asyncio.ensure_future(statement())
            # Shielded: a writer cancelled half way through a statement (its client went
            # away) would leave the group's connection in an unknown state, and so
            # break every other writer of the group. The statement finishes first.
            return await asyncio.shield(step)
        except asyncio.CancelledError:
            if not await _settled(step, self._store.cancel_grace):
                self._group.broken = self._group.broken or asyncio.CancelledError()
            raise  # the block exits, and its savepoint is rolled back: the group goes on
        except asyncpg.PostgresError as exc:
            if connection_lost(exc):  # the session is gone, and the group's work with it
                self._group.broken = self._group.broken or exc
            raise self._store._failure(exc) from exc  # the savepoint undoes it at exit
        except BaseException as exc:  # disconnected: state unknown
            self._group.broken = self._group.broken or exc
            if isinstance(exc, DB_ERRORS):
                raise self._store._failure(exc) from exc
            raise

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        self._check()
        conn = await self._call(self._connection)
        await self._send_pending(conn)
        return list(await self._call(lambda: conn.fetch(sql, *args)))

    async def _send_pending(self, conn: Conn) -> None:
        p = self._pending
        if not p:
            return
        self._pending = _Pending()
        args = [
            "[" + ",".join(rows) + "]"
            for rows in (list(p.records.values()), p.log, list(p.acks.values()))
            if rows
        ]
        sql = self._sql.flush(bool(p.records), bool(p.log), bool(p.acks))
        await self._call(lambda: conn.execute(sql, *args))

    async def head(self) -> int:
        if self._head is None:
            if self._group.head is None:
                self._group.head = int(await self._fetchval(self._sql.head))
            self._head = self._group.head
        return self._head

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        value = await self._fetchval(self._sql.advance, client_id, principal, expected, new)
        return int(value) == 1

    async def put(self, collection: str, record: Record) -> None:
        self._check()
        self._pending.records[(collection, record.id)] = dumps(
            {"collection": collection, **record.to_store()}
        )

    async def append_log(self, entries: list[LogEntry]) -> None:
        head = following(await self.head(), entries)
        start = len(self._pending.log)
        self._pending.log.extend(
            dumps(
                {
                    "i": start + n,
                    "seq": e.seq,
                    "collection": e.collection,
                    "id": e.id,
                    "kind": e.kind,
                    "inc": e.inc,
                    "patch": e.patch,
                    "before": e.before,
                    "after": e.after,
                    "client_id": e.client_id,
                    "mutation_id": e.mutation_id,
                    "time": e.time,
                }
            )
            for n, e in enumerate(entries)
        )
        self._head = head

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        self._check()
        self._pending.acks[(client_id, mutation_id)] = dumps(
            {"client_id": client_id, "mutation_id": mutation_id, "ack": ack}
        )

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        await self._fetch(self._sql.confirm_acks, client_id, upto)

    async def trim(self, upto: int) -> int:
        upto = min(upto, await self.head())
        if upto <= await self.floor():
            return 0
        return int(await self._fetchval(self._sql.trim, upto))

    async def _leave(self, ok: bool, end: bool) -> Exception | None:
        """The block exited (``ok``: normally): send its pending writes and hand a clean
        savepoint to the next writer, or undo it; COMMIT comes after, if ``end``.
        Returns the error that undid an ``ok`` block (its pending writes failed)."""
        own: Exception | None = None
        g = self._group
        if ok and self._pending and g.broken is None:
            try:
                await self._connection()
            except Exception as exc:
                own = exc
        if not self._entered or g.broken is not None:
            return own
        conn = g.conn
        assert conn is not None
        if ok and own is None:
            try:
                await self._send_pending(conn)
            except Exception as exc:
                own = exc
        try:
            if ok and own is None:
                if not end:  # COMMIT would release it anyway
                    await conn.execute("RELEASE SAVEPOINT w; SAVEPOINT w")
                if self._head is not None:
                    g.head = self._head
            else:
                await conn.execute("ROLLBACK TO SAVEPOINT w")  # w stays open, clean
        except BaseException as exc:
            g.broken = g.broken or exc
        return own
