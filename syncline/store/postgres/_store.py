"""The PostgreSQL store: the pool, reads, and its side of group commit (the core is
:class:`syncline.store._group.GroupCommitStore`; see :mod:`syncline.store.postgres`)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from ...exceptions import StoreError
from ...logs import redact_url
from ...model import Schema
from .._group import GroupCommitStore
from ..base import ReadTx
from ._compile import indexes
from ._errors import condition
from ._lost import connection_lost, terminate
from ._schema import DB_ERRORS, MIGRATIONS, Statements, lock_key, migrate, reset
from ._tx import PostgresGroup, Read, Write

if TYPE_CHECKING:
    from ._schema import Conn, Pool

__all__ = ["PostgresStore"]


class PostgresStore(GroupCommitStore[PostgresGroup, Write]):
    """A store in one schema of a PostgreSQL database, shared by every node (see
    :mod:`syncline.store.postgres` for the seq design, group commit, tables and
    queries). ``commits`` counts the COMMITs of write groups since ``open()``;
    ``migrations_applied`` lists the schema versions the last ``open()`` applied."""

    kind = "PostgresStore"
    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS
    rollback_timeout = 5.0
    """Seconds a failed group's ROLLBACK may take before its connection is closed."""
    cancel_grace = 5.0
    """Seconds a cancelled writer waits for its statement to finish so that it leaves its
    group cleanly (its savepoint rolled back); after that the group is broken."""

    connect_timeout = 10.0
    """Seconds the pool may take to open one connection before a :class:`StoreError`."""

    def __init__(
        self,
        dsn: str,
        *,
        schema: str = "syncline",
        min_size: int = 1,
        max_size: int = 10,
        application_name: str = "syncline",
    ) -> None:
        if max_size < 2:
            raise StoreError("max_size must be at least 2: a committing group and the next")
        super().__init__()
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.application_name = application_name  # pg_stat_activity shows it
        self._sql = Statements(schema)
        self._write_key = lock_key("write", schema)
        self._pool: Pool | None = None

    # --- lifecycle --------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"PostgreSQL schema {self.schema!r}"

    async def _connect(self) -> None:
        """Connect, create the schema if needed and migrate syncline's tables."""
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                server_settings={
                    "synchronous_commit": "on",
                    "application_name": self.application_name,
                },
                reset=reset,
                timeout=self.connect_timeout,
            )
        except DB_ERRORS as exc:
            error = self._error_class(exc)(
                f"cannot connect to PostgreSQL ({redact_url(self.dsn)}): {exc}"
            )
            raise error from exc
        try:
            async with pool.acquire() as conn:
                self.migrations_applied = await migrate(
                    conn, self.migrations, self.schema, self._sql
                )
                self._epoch = str(await conn.fetchval(self._sql.epoch))
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, DB_ERRORS):
                raise self._failure(exc) from exc
            raise
        self._pool = pool

    async def _disconnect(self) -> None:
        if self._pool is not None:
            try:
                await asyncio.wait_for(self._pool.close(), 10)
            except (TimeoutError, *DB_ERRORS):
                self._pool.terminate()
            self._pool = None

    def _condition(self, exc: BaseException) -> type[StoreError] | None:
        return condition(exc)

    def _open_pool(self) -> Pool:
        return self._opened(self._pool)

    async def _acquire_connection(self) -> Conn:
        pool = self._open_pool()
        try:
            return await pool.acquire()
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc

    # --- reads ------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        tx = Read(self, await self._acquire_connection())
        try:
            yield tx
        finally:
            tx._ended = True
            await asyncio.shield(self._spawn(self._end_read(tx._conn, tx._begun)))

    async def _end_read(self, conn: Conn | None, begun: bool) -> None:
        """End the snapshot and give the connection back (asyncpg lets a cancelled
        statement finish before the next one runs); closed if ROLLBACK fails."""
        if conn is None:  # replacing a lost connection failed
            return
        try:
            if begun:
                await conn.execute("ROLLBACK")
        except BaseException:
            terminate(conn)
        await self._release(conn)

    async def _release(self, conn: Conn) -> None:
        """Give ``conn`` back to the pool. Never raises: a connection whose reset fails
        (it was lost) is terminated by the pool, which opens another when needed."""
        if self._pool is not None:
            try:
                await self._pool.release(conn)
            except DB_ERRORS:
                terminate(conn)

    async def _discard(self, conn: Conn) -> None:
        """Close a connection found lost (see :mod:`._lost`) and give its pool slot
        back: the pool opens a new connection for the next caller."""
        terminate(conn)
        await self._release(conn)

    # --- writes and group commit ------------------------------------------------------

    def _new_group(self, done: asyncio.Future[None]) -> PostgresGroup:
        return PostgresGroup(done)

    def _transaction(self, group: PostgresGroup) -> Write:
        return Write(self, group)

    async def _left(self, tx: Write, ok: bool) -> Exception | None:
        tx._ended = True
        # Shielded: cancelling this writer must not cancel its exit or its group's COMMIT.
        return await asyncio.shield(self._spawn(self._leave(tx, ok)))

    async def _leave(self, tx: Write, ok: bool) -> Exception | None:
        """Finish one writer (lock held) and release the lock; if nobody is waiting to
        join (or the group is full), end the group: its COMMIT runs as a task, and the
        next writer starts a new group at once (it waits in the advisory lock)."""
        group = tx._group
        end = self._last_of(group)
        try:
            return await tx._leave(ok, end)
        finally:
            if end:
                self._detach(group)
                self._end(group)
            self._unlock(group, end)

    def _end(self, group: PostgresGroup) -> asyncio.Future[Any]:
        return self._spawn(self._commit(group))

    async def _commit(self, group: PostgresGroup) -> None:
        """COMMIT the group's transaction (ROLLBACK if it is broken) and settle its
        writers; then give the connection back, or close it if it does not answer (a
        statement cancelled half way is cancelled on the server first: asyncpg runs
        the next command only after that, so ROLLBACK also waits for it)."""
        conn, error = group.conn, group.broken
        healthy = not connection_lost(error)  # a lost session rolled back by itself
        try:
            if conn is not None and error is None:
                status = await conn.execute("COMMIT")
                if status != "COMMIT":  # an aborted transaction "commits" as ROLLBACK
                    error = StoreError(f"COMMIT answered {status!r}")
                else:
                    self.commits += 1
            elif conn is not None and healthy:
                await asyncio.wait_for(conn.execute("ROLLBACK"), self.rollback_timeout)
        except asyncpg.PostgresError as exc:  # the server answered: the connection is
            error = error or exc  # fine, unless the answer was that it is closing
            healthy = not connection_lost(exc)
        except BaseException as exc:
            error, healthy = error or exc, False
        finally:
            try:
                if conn is not None:
                    if not healthy:
                        terminate(conn)  # PostgreSQL rolls back what it has not committed
                    await self._release(conn)
            finally:
                self._resolve(group, error)  # whatever happened, its writers are told

    # --- diagnostics and indexes ------------------------------------------------------

    async def setting(self, name: str) -> str:
        """The value of a server setting on a pool connection (``synchronous_commit``
        ...), for diagnostics and tests."""
        async with self._open_pool().acquire() as conn:
            return str(await conn.fetchval("SELECT current_setting($1)", name))

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create (if missing) an expression index per queryable field of ``schema``;
        return the statements run. Queries filtering on those fields then use them.
        Safe from several nodes at once (under the migrations' advisory lock)."""
        statements = indexes(schema, self._sql.records)
        pool = self._open_pool()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"SELECT pg_advisory_xact_lock({lock_key('migrate', self.schema)})"
                )
                for statement in statements:
                    await conn.execute(statement)
        except DB_ERRORS as exc:
            raise self._failure(exc) from exc
        return statements
