"""Group commit and the store lifecycle, once for both SQL dialects.

Theory of operation
-------------------

**Lifecycle.** A store is ``new``, ``open``, ``closing`` or ``closed``; it opens once
(:meth:`GroupCommitStore._connect`, the dialect's: connections and migrations) and
a closed store is never reopened. ``close()`` takes the write lock, ends a group
still open, then lets the dialect disconnect (:meth:`GroupCommitStore._disconnect`);
it runs as a task of its own, so cancelling the caller cannot stop it half way.

**Groups.** ``write()`` blocks run one at a time (an asyncio lock). A block that
finds no open group starts one (:meth:`GroupCommitStore._new_group`); the writers
after it join it, each in a savepoint of the same transaction, so they see each
other's writes and ``seq`` stays dense. When a block exits, its dialect hands the
exit to the database (:meth:`GroupCommitStore._left`) and releases the lock; the
group ends with that exit if nobody is waiting for the lock or
:attr:`GroupCommitStore.max_group` writers have joined (:meth:`_last_of`, the one
group-end rule). Otherwise the next writer takes the lock and the open group with
it. Every successful writer leaves ``write()`` only after its group's COMMIT
resolved ``done`` (:meth:`_resolve`), so each ack follows its commit (invariants 2
and 3); if the group fails, every writer of it gets a :class:`StoreError`.

**Hand-over and cancellation.** ``_waiting`` counts writers waiting for the lock;
a writer that leaves with someone waiting hands them the open group. If those give up
(are cancelled) before they take the lock, nobody would end the group: the last to
give up spawns :meth:`_flush`, which ends it under the lock (:meth:`_acquire`), or,
if the lock was still held, the writer that releases it does (:meth:`_unlock`).
Store bookkeeping runs in tasks (:meth:`_spawn`) that nobody's cancellation
interrupts; ``close()`` waits for them.

What differs -- where statements run (a thread for SQLite, a pool connection for
PostgreSQL), what a writer's exit sends, how COMMIT is checked -- stays in
:mod:`.sqlite` and :mod:`.postgres`.
"""

from __future__ import annotations

import asyncio
import time
from abc import abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Generic, Literal, TypeVar

from ..exceptions import StoreError
from .base import Store, WriteTx

__all__ = ["Group", "GroupCommitStore", "consume", "error_class"]

T = TypeVar("T")


@dataclass(eq=False)
class Group:
    """Writers sharing one transaction; ``done`` resolves after its COMMIT."""

    done: asyncio.Future[None]
    joined: int = 0


G = TypeVar("G", bound=Group)
W = TypeVar("W", bound=WriteTx)


class GroupCommitStore(Store, Generic[G, W]):
    """A store whose writers share transactions (see the module docs). ``commits``
    counts the COMMITs of write groups since ``open()``; ``migrations_applied`` lists
    the schema versions the last ``open()`` applied."""

    max_group = 256
    """At most this many writers share one COMMIT."""
    kind: ClassVar[str] = "store"
    """What the store is called in its messages."""

    def __init__(self) -> None:
        self.commits = 0
        self.migrations_applied: list[int] = []
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._epoch = ""
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._group: G | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.on_group_commit: list[Callable[[int, float], None]] = []
        """Called with (writers, seconds from the first write) after each COMMIT that
        succeeded (metrics); only while a listener is set is the time taken."""
        self._begun: dict[Group, float] = {}

    # --- what a dialect provides --------------------------------------------------------

    @property
    @abstractmethod
    def where(self) -> str:
        """Which database, at the start of an error message."""

    @abstractmethod
    async def _connect(self) -> None:
        """Open connections, migrate, read the epoch; leave nothing open if it raises."""

    @abstractmethod
    async def _disconnect(self) -> None:
        """Close every connection (the write lock is held, no group is open)."""

    @abstractmethod
    def _new_group(self, done: asyncio.Future[None]) -> G: ...

    @abstractmethod
    def _transaction(self, group: G) -> W:
        """The transaction of a writer that joined ``group``."""

    @abstractmethod
    async def _left(self, tx: W, ok: bool) -> Exception | None:
        """``tx``'s block exited (``ok``: normally): mark it ended, hand its exit to the
        database and release the write lock, ending the group if :meth:`_last_of` says
        so. Returns the error that undid an ``ok`` block."""

    @abstractmethod
    def _end(self, group: G) -> asyncio.Future[Any]:
        """End ``group`` (write lock held, ``group`` detached): its COMMIT is on its way
        when this returns, and the future is done once :meth:`_resolve` has run."""

    # --- lifecycle --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    async def open(self) -> None:
        """Connect and migrate syncline's tables (see the dialect's :meth:`_connect`).

        Raises :class:`StoreError` if the database cannot be opened or its tables are
        newer than this code.
        """
        if self._state == "open":
            return
        if self._state != "new":
            raise StoreError(f"this {self.kind} was closed; make a new one")
        await self._connect()
        self._state = "open"

    async def close(self) -> None:
        """Commit a group still open, then close every connection."""
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
            group, self._group = self._group, None
            if group is not None:
                await asyncio.wait([self._end(group)])
            await self._disconnect()
        finally:
            self._state = "closed"
            self._lock.release()

    def _check_open(self) -> None:
        self._opened(True)

    def _opened(self, resource: T | None) -> T:
        """``resource`` (the dialect's connection or pool), or a :class:`StoreError`
        outside ``open()`` ... ``close()``."""
        if self._state == "new":
            raise StoreError(
                f"the {self.kind} was never opened: await its open() first (serving a "
                "SynclineServer: pass lifespan=sync.lifespan to Starlette)"
            )
        if self._state != "open" or resource is None:
            raise StoreError(f"the store is {self._state}; use it between open() and close()")
        return resource

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run store bookkeeping as its own task, so cancelling the caller cannot stop it
        half way (what was sent to the database runs anyway)."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has seen it already

    def _failure(self, exc: BaseException) -> StoreError:
        """``exc`` as the :class:`StoreError` a caller gets, naming the database (and
        the condition behind it: :meth:`_error_class`)."""
        error = self._error_class(exc)(f"{self.where}: {exc}")
        error.__cause__ = exc
        return error

    def _condition(self, exc: BaseException) -> type[StoreError] | None:
        """The dialect's reading of one of its driver's errors (full, read-only,
        unreachable), or None."""
        return None

    def _error_class(self, exc: BaseException | None) -> type[StoreError]:
        """The :class:`StoreError` subclass naming the condition behind ``exc``
        (:func:`error_class`, with the dialect's reading of its driver's errors)."""
        return error_class(exc, self._condition)

    # --- writes and group commit ------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        self._check_open()
        await self._acquire()
        # This writer holds the lock until its _left() hands its exit to the database.
        try:
            self._check_open()  # close() may have begun while this writer waited
        except StoreError:
            self._lock.release()
            raise
        group = self._group
        if group is None:
            group = self._group = self._new_group(asyncio.get_running_loop().create_future())
            if self.on_group_commit:
                self._begun[group] = time.monotonic()
        group.joined += 1
        tx = self._transaction(group)
        try:
            yield tx
        except BaseException:
            await self._left(tx, ok=False)
            raise
        own = await self._left(tx, ok=True)
        if isinstance(own, StoreError):  # converted already: it names the database
            raise own
        if own is not None:
            raise self._failure(own) from own
        await asyncio.shield(group.done)

    def _last_of(self, group: G) -> bool:
        """Should the writer leaving the lock end ``group`` now? (Nobody is waiting to
        join it, or it is full.)"""
        return self._waiting == 0 or group.joined >= self.max_group

    def _unlock(self, group: G, ended: bool) -> None:
        """Release the write lock as a writer leaves ``group`` (``ended``: it ended the
        group). If the group was handed over to writers who all gave up waiting before
        the lock went -- where a writer's exit takes a round trip first -- nobody else
        would end it: :meth:`_flush` does."""
        self._lock.release()
        if not ended and self._group is group and self._waiting == 0:
            self._spawn(self._flush())

    def _detach(self, group: G) -> None:
        """``group`` is ending: the next writer starts a new one."""
        if self._group is group:
            self._group = None

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
        """End a group whose last writer left it to someone who then gave up waiting."""
        await self._acquire()
        try:
            group = self._group
            if group is not None and self._last_of(group):
                self._group = None
                self._end(group)
        finally:
            self._lock.release()

    def _resolve(self, group: G, error: BaseException | None) -> None:
        """Settle ``group``'s writers: ``error`` is None when its COMMIT succeeded."""
        if group.done.done():
            return
        begun = self._begun.pop(group, None)
        if error is None:
            group.done.set_result(None)
            if begun is not None:
                for listener in self.on_group_commit:
                    listener(group.joined, time.monotonic() - begun)
        else:
            failure = self._error_class(error)(
                f"{self.where}: COMMIT failed or the group was rolled back; nothing of "
                f"this group was written and none of its writers is acknowledged: {error}"
            )
            failure.__cause__ = error
            group.done.set_exception(failure)
        group.done.add_done_callback(consume)


def error_class(
    exc: BaseException | None, native: Callable[[BaseException], type[StoreError] | None]
) -> type[StoreError]:
    """The :class:`StoreError` subclass naming the condition behind ``exc`` -- its own,
    or ``native``'s reading of a driver error, there or in what it was raised from -- or
    :class:`StoreError` itself when none is known."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StoreError) and exc.condition is not None:
            return type(exc)
        found = native(exc)
        if found is not None:
            return found
        exc = exc.__cause__ or exc.__context__
    return StoreError


def consume(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as retrieved, even if whoever would await it was cancelled."""
    if not future.cancelled():
        future.exception()
