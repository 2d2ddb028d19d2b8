"""The SQLite store's transactions: :class:`Read` on a reader connection, :class:`Write`
on the writer connection inside its savepoint, answered from the write cache where it
can (see :mod:`syncline.store.sqlite`)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable
from functools import partial
from typing import Any, Concatenate, ParamSpec, TypeVar

from ...query import Query
from ...record import Record
from .._sql import WIRE_COLUMNS, Transaction, dumps, log_row, record
from ..base import ClientState, LogEntry, WriteTx, following
from . import _statements as stmt
from ._commit import Deferred, Member, SQLiteGroup, in_savepoint
from ._compile import compile_query
from ._conn import Conn
from .writecache import ClientRow, Overlay, RecordRow, WriteCache

__all__ = ["Read", "Write"]

P = ParamSpec("P")
T = TypeVar("T")
K = TypeVar("K")
V = TypeVar("V")


class Read(Transaction):
    """A read on its own reader connection: the first call pins the WAL snapshot."""

    def __init__(self, conn: Conn, epoch: str) -> None:
        self._conn = conn
        self._epoch = epoch

    async def _run(
        self,
        fn: Callable[Concatenate[sqlite3.Connection, P], T],
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> T:
        self._check()

        def call(db: sqlite3.Connection) -> T:
            return fn(db, *args, **kwargs)

        return await self._conn.run(stmt.in_snapshot, call)

    async def epoch(self) -> str:
        return self._epoch

    async def head(self) -> int:
        return await self._run(stmt.head)

    async def floor(self) -> int:
        return await self._run(stmt.floor)

    async def get(self, collection: str, record_id: str) -> Record | None:
        return await self._run(stmt.get, collection, record_id)

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        wanted = list(ids)
        return await self._run(stmt.get_many, collection, wanted) if wanted else {}

    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        sql, params, finish = compile_query(query, apply_limit)
        return await self._run(stmt.query, sql, params, finish)

    async def query_wire(self, query: Query, *, apply_limit: bool = True) -> list[dict[str, Any]]:
        sql, params, finish = compile_query(query, apply_limit, WIRE_COLUMNS)
        return await self._run(stmt.query_wire, sql, params, finish)

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        return await self._run(stmt.log, after, upto)

    async def seq_at(self, when: float) -> int:
        return await self._run(stmt.seq_at, when)

    async def client(self, client_id: str) -> ClientState | None:
        return await self._run(stmt.client, client_id)

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        return await self._run(stmt.ack, client_id, mutation_id)


class Write(Read, WriteTx):
    """One writer's view, on the writer connection inside its savepoint: reads see the
    group's earlier writes and this transaction's own.

    Writes that return nothing (``put``, ``append_log``, ``put_ack``,
    ``confirm_acks``) are encoded at once and sent to the thread with the next call
    (or when the block exits), which saves a thread round trip each. A SQLite error in
    one of them is raised by that later call, or by the block's exit: let it propagate
    (the writer's savepoint is then rolled back).
    """

    def __init__(self, conn: Conn, epoch: str, member: Member, cache: WriteCache) -> None:
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
            self._conn.submit(in_savepoint, member, carried, deferred, self._head is None, call)
        )
        trip.add_done_callback(partial(self._tripped, member.group))
        # Shielded: the trip carries other writers' writes (they were acked with the
        # group); cancelling this writer must not cancel it before it ran.
        _, head, result = await asyncio.shield(trip)  # began: see _tripped
        if head is not None:
            self._head = head
        return result

    def _tripped(self, group: SQLiteGroup, trip: asyncio.Future[tuple[Any, ...]]) -> None:
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

    def _defer(self, write: Deferred) -> None:
        self._check()
        self._member.deferred.append(write)

    async def head(self) -> int:
        if self._head is None and self._member.group.verified:
            self._head = self._cache.head
        if self._head is None:
            self._head = await self._run(stmt.head)
        return self._head

    async def get(self, collection: str, record_id: str) -> Record | None:
        key = (collection, record_id)
        known, row = self._known_record(key)
        if not known:
            row = self.overlay.records[key] = await self._run(stmt.get_row, collection, record_id)
        return None if row is None else record(row)

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
            fetched = {r[0]: r for r in await self._run(stmt.get_rows, collection, missing)}
            for rid in missing:
                rows[rid] = self.overlay.records[(collection, rid)] = fetched.get(rid)
        return {rid: record(row) for rid, row in rows.items() if row is not None}

    async def client(self, client_id: str) -> ClientState | None:
        known, row = self._known_client(client_id)
        if not known:
            row = self.overlay.clients[client_id] = await self._run(stmt.client_row, client_id)
        return None if row is None else ClientState(client_id, *row)

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        known, row = self._known_client(client_id)
        if not known:
            ok = await self._run(stmt.advance_client, client_id, principal, expected, new)
        else:  # the outcome of advance_client, without asking
            ok = row[1] == expected if row is not None else expected == 0
            if ok:
                self._defer(
                    partial(
                        stmt.advance_known,
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
            dumps(record.data),
            record.inc,
            record.v,
            dumps(record.fv),
            dumps(record.fw),
            dumps(record.adds),
            int(record.deleted),
        )
        self._defer(partial(stmt.execute, sql=stmt.PUT, params=row))
        self.overlay.records[(collection, record.id)] = row[1:]

    async def append_log(self, entries: list[LogEntry]) -> None:
        head = following(await self.head(), entries)
        rows = [log_row(e) for e in entries]
        self._defer(partial(stmt.executemany, sql=stmt.APPEND, rows=rows))
        self._head = head

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        params = (client_id, mutation_id, dumps(ack))
        self._defer(partial(stmt.execute, sql=stmt.PUT_ACK, params=params))

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        self._defer(partial(stmt.execute, sql=stmt.CONFIRM_ACKS, params=(client_id, upto)))

    async def trim(self, upto: int) -> int:
        self._cache.reset()  # trimmed tombstones are gone
        return await self._run(stmt.trim, upto)
