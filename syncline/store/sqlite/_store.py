"""The SQLite store: connections, reads, and its side of group commit (the core is
:class:`syncline.store._group.GroupCommitStore`; see :mod:`syncline.store.sqlite`)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from ...exceptions import StoreError
from ...model import Schema
from .._group import GroupCommitStore, consume
from ..base import ReadTx, reading_the_log
from . import _statements as stmt
from ._commit import Exit, Member, SQLiteGroup, end_group_exit, leave_group
from ._compile import indexes
from ._conn import Conn
from ._errors import condition
from ._schema import MIGRATIONS, migrate
from ._slots import Slots
from ._tx import Read, Write
from .writecache import WriteCache

__all__ = ["SQLiteStore"]


class SQLiteStore(GroupCommitStore[SQLiteGroup, Write]):
    """A store in one SQLite file (see :mod:`syncline.store.sqlite` for threads, tables
    and group commit). ``commits`` counts the SQLite COMMITs of write groups since
    ``open()``; ``migrations_applied`` lists the schema versions the last ``open()``
    applied."""

    kind = "SQLiteStore"
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS
    read_pool = 8
    """Idle reader connections kept open for the next ``read()``."""
    max_readers = 8
    """At most this many reader connections (each with its own thread) are open at
    once; a ``read()`` beyond them waits for one to come back, first come first served
    (the log reader's reads first: see :data:`syncline.store.base.reading_the_log`)."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        busy_timeout: float = 5.0,
        max_readers: int | None = None,
    ) -> None:
        super().__init__()
        if max_readers is not None:
            if isinstance(max_readers, bool) or not isinstance(max_readers, int) or max_readers < 1:
                raise StoreError(f"max_readers must be a whole number from 1, not {max_readers!r}")
            self.max_readers = max_readers
        self.path = os.fspath(path)
        self.busy_timeout = busy_timeout
        self._writer: Conn | None = None
        self._idle: list[Conn] = []
        self._slots = Slots(self.max_readers)
        self.readers_open = 0
        """Reader connections open now (idle, in use or closing): never above
        :attr:`max_readers`."""
        self._cache = WriteCache()

    # --- lifecycle --------------------------------------------------------------------

    @property
    def where(self) -> str:
        return self.path

    async def _connect(self) -> None:
        """Open the file (creating it), switch to WAL, and migrate syncline's tables."""
        writer = await Conn.open(self.path, self.busy_timeout, writer=True)
        try:
            self.migrations_applied = await writer.run(migrate, self.migrations, self.path)
            self._epoch = str(await writer.run(stmt.meta, "epoch"))
        except BaseException:
            await writer.close()
            raise
        self._writer = writer

    async def _disconnect(self) -> None:
        idle, self._idle = self._idle, []
        for conn in idle:
            await self._close_reader(conn, release=False)
        if self._writer is not None:
            await self._writer.close()
            self._writer = None

    def _condition(self, exc: BaseException) -> type[StoreError] | None:
        return condition(exc)

    def _writer_conn(self) -> Conn:
        return self._opened(self._writer)

    # --- reads ------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        self._check_open()
        # A slot per open reader: the pool's cap. The log reader's reads go first:
        # every connection's live changes wait on them.
        await self._slots.acquire(urgent=reading_the_log.get())
        release = True  # else a spawned close gives the slot back once it is done
        try:
            conn = self._idle.pop() if self._idle else None
            if conn is None:
                conn = await Conn.open(self.path, self.busy_timeout, writer=False)
                self.readers_open += 1
            tx = Read(conn, self._epoch)
            try:
                yield tx
            finally:
                tx._ended = True
                try:
                    await conn.run(stmt.end_read)
                except BaseException:
                    release = False
                    self._spawn(self._close_reader(conn))  # its state is unknown: not reused
                    raise
                if self._state == "open" and len(self._idle) < self.read_pool:
                    self._idle.append(conn)
                else:
                    release = False
                    self._spawn(self._close_reader(conn))
        finally:
            if release:
                self._slots.release()

    async def _close_reader(self, conn: Conn, *, release: bool = True) -> None:
        """Close a reader connection; its slot is free only once it is closed."""
        try:
            await conn.close()
        finally:
            self.readers_open -= 1
            if release:
                self._slots.release()

    # --- writes and group commit ------------------------------------------------------

    def _new_group(self, done: asyncio.Future[None]) -> SQLiteGroup:
        return SQLiteGroup(done)

    def _transaction(self, group: SQLiteGroup) -> Write:
        return Write(self._writer_conn(), self._epoch, Member(group), self._cache)

    async def _left(self, tx: Write, ok: bool) -> Exception | None:
        tx._ended = True
        if not ok:
            self._leave(tx, ok=False)  # no await: the writer's exception goes on at once
            return None
        # Before the lock goes: the next writer of the group sees this one's state.
        self._cache.merge(tx.overlay, tx._head)
        # Shielded: cancelling this writer must not cancel its exit or its group's COMMIT.
        out = await asyncio.shield(self._leave(tx, ok=True))
        if out.own is not None:
            self._cache.reset()
        return out.own

    def _leave(self, tx: Write, ok: bool) -> asyncio.Future[Exit]:
        """Hand a finished writer's exit to the thread (pending writes, RELEASE or
        ROLLBACK TO, and COMMIT if it is the group's last) and release the lock at once:
        the thread runs statements in order, so the next writer's come after these.
        No await: nothing can interrupt this half way."""
        member = tx._member
        group = member.group
        end = self._last_of(group)
        deferred, member.deferred = member.deferred, []
        if not member.called and not end:
            # No savepoint to release or roll back: its writes (if it succeeded) go with
            # the group's next trip. A failure there fails the whole group.
            if ok:
                group.carried.extend(deferred)
            self._unlock(group, False)
            done: asyncio.Future[Exit] = asyncio.get_running_loop().create_future()
            done.set_result(Exit())
            return done
        carried, group.carried = group.carried, []
        exit_ = asyncio.wrap_future(
            tx._conn.submit(leave_group, member, carried, deferred, ok, end)
        )
        if end:
            self._detach(group)
            exit_.add_done_callback(lambda f: self._settle(group, f))
        exit_.add_done_callback(consume)
        self._unlock(group, end)
        return exit_

    def _end(self, group: SQLiteGroup) -> asyncio.Future[Any]:
        """COMMIT the group's transaction with the writes still carried (lock held)."""
        carried, group.carried = group.carried, []
        assert self._writer is not None
        ended = asyncio.wrap_future(self._writer.submit(end_group_exit, group, carried))
        ended.add_done_callback(lambda f: self._settle(group, f))
        return ended

    def _settle(self, group: SQLiteGroup, ended: asyncio.Future[Exit]) -> None:
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
        self._resolve(group, error)

    # --- diagnostics and indexes ------------------------------------------------------

    async def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA <name>`` on the writer connection (``synchronous``,
        ``journal_mode``, ``foreign_keys`` ...), for diagnostics and tests."""
        if not name.isidentifier():
            raise StoreError(f"not a pragma name: {name!r}")
        return await self._writer_conn().run(stmt.pragma, name)

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create (if missing) an expression index per queryable field of ``schema``;
        return the statements run. Queries filtering on those fields then use them."""
        statements = indexes(schema)
        async with self.write() as tx:
            assert isinstance(tx, Write)
            await tx._run(stmt.execute_all, statements)
        return statements
