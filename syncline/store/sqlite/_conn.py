"""SQLite connections, each with the one thread that runs its statements in order.

The writer connection switches the file to WAL; readers are ``query_only``. Every
connection is ``synchronous=FULL`` (a COMMIT returns once the WAL is on disk) and
has ``syncline_pystr``, which the compiled queries use to compare arrays and objects
as :func:`syncline.query.sort_key` does.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sqlite3
from collections.abc import Callable
from typing import Concatenate, ParamSpec, TypeVar

import orjson

from ...exceptions import StoreError
from ._errors import store_error

__all__ = ["Conn"]

P = ParamSpec("P")
T = TypeVar("T")


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


class Conn:
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
    async def open(cls, path: str, timeout: float, *, writer: bool) -> Conn:
        name = "syncline-sqlite-writer" if writer else "syncline-sqlite-reader"
        executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)
        try:
            db = await asyncio.wrap_future(executor.submit(_connect, path, timeout, writer))
        except sqlite3.Error as exc:
            executor.shutdown(wait=False)
            raise store_error(f"{path}: cannot open the database: {exc}", exc) from exc
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
                raise store_error(f"{path}: {exc}", exc) from exc

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
