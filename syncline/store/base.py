"""The Store interface: what the engine needs from a database, and its guarantees.

Guarantees every store must give (the conformance suite in
``tests/test_store_conformance.py`` checks them, and runs against every store):

* ``write()`` transactions are serializable and run one at a time per database; what
  they write becomes visible all at once when the block exits normally, and not at all
  when it raises. When ``write()``'s block has exited, the commit is durable.
* ``read()`` transactions see one committed state for their whole duration (snapshot
  isolation), whatever commits meanwhile.
* ``seq`` is dense and commit-ordered: ``append_log`` takes entries whose ``seq`` is
  ``head() + 1`` and makes it the new head, so a reader that has seen ``seq`` N has
  seen every change up to N (invariant 1). An entry that does not follow the head is
  refused with :class:`LogOrderError` (:func:`following` checks it for every store).
* ``advance_client`` is a conditional update (``last = expected`` → ``new``) and the
  first write of a mutation's transaction (invariant 3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterable
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..exceptions import StoreError
from ..query import Query
from ..record import LogEntry, Record

if TYPE_CHECKING:
    from ..model import Schema

__all__ = [
    "ClientState",
    "LogEntry",
    "LogOrderError",
    "ReadTx",
    "Store",
    "WriteTx",
    "following",
    "reading_the_log",
]

reading_the_log: ContextVar[bool] = ContextVar("syncline_reading_the_log", default=False)
"""True in the log reader's task: a store whose reads may queue (SQLite's capped reader
pool) serves these first, since every connection's live changes wait on them."""


class LogOrderError(StoreError):
    """``append_log`` was given an entry whose ``seq`` is neither the head (another
    entry of the head's mutation) nor ``head + 1``: the caller numbered its change
    wrongly (read ``head()`` inside the same write transaction and add one)."""


def following(head: int, entries: Iterable[LogEntry]) -> int:
    """The head after appending ``entries`` to a log at ``head``; raises
    :class:`LogOrderError` if one does not follow (invariant 1: ``seq`` stays dense)."""
    for e in entries:
        if e.seq != head + 1 and e.seq != head:
            raise LogOrderError(f"log seq {e.seq} does not follow head {head}")
        head = e.seq
    return head


@dataclass(frozen=True, slots=True)
class ClientState:
    client_id: str
    principal: str
    last: int


class ReadTx(ABC):
    @abstractmethod
    async def epoch(self) -> str: ...

    @abstractmethod
    async def head(self) -> int:
        """The ``seq`` of the newest committed change (0 when there is none)."""

    @abstractmethod
    async def floor(self) -> int:
        """The oldest cursor ``seq`` the log can continue from (raised by trimming)."""

    @abstractmethod
    async def get(self, collection: str, record_id: str) -> Record | None:
        """The record, tombstones included, or None if the id never existed (or was trimmed)."""

    @abstractmethod
    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]: ...

    @abstractmethod
    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        """Live records matching ``query``'s filter, in its order (ties by id)."""

    async def query_wire(self, query: Query, *, apply_limit: bool = True) -> list[dict[str, Any]]:
        """:meth:`query`'s records as a client receives them (:meth:`Record.to_wire`),
        for snapshots: a store may skip reading and decoding the server-only columns."""
        return [r.to_wire() for r in await self.query(query, apply_limit=apply_limit)]

    @abstractmethod
    async def log(self, after: int, upto: int) -> list[LogEntry]:
        """Entries with ``after < seq <= upto``, in ``seq`` order."""

    @abstractmethod
    async def seq_at(self, when: float) -> int:
        """The newest ``seq`` committed at or before ``when`` (a Unix time), or the floor."""

    @abstractmethod
    async def client(self, client_id: str) -> ClientState | None: ...

    @abstractmethod
    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        """A kept ack (until the client confirms it), or None."""


class WriteTx(ReadTx):
    @abstractmethod
    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        """Set the client's last mutation id from ``expected`` to ``new``; False if it was
        not ``expected`` (another node got there first). Creates the client at 0."""

    @abstractmethod
    async def put(self, collection: str, record: Record) -> None: ...

    @abstractmethod
    async def append_log(self, entries: list[LogEntry]) -> None: ...

    @abstractmethod
    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None: ...

    @abstractmethod
    async def confirm_acks(self, client_id: str, upto: int) -> None:
        """Forget kept acks up to ``upto``: the client holds them."""

    @abstractmethod
    async def trim(self, upto: int) -> int:
        """Remove log entries and tombstones with ``seq <= upto``; return entries removed."""


class Store(ABC):
    """A database holding records, the change log and clients."""

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    def read(self) -> AbstractAsyncContextManager[ReadTx]: ...

    @abstractmethod
    def write(self) -> AbstractAsyncContextManager[WriteTx]: ...

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create what makes ``schema``'s queries fast (an index per queryable field),
        if missing; return the statements run. A store with nothing to create returns []."""
        return []

    @property
    def is_open(self) -> bool:
        """Between a successful ``open()`` and ``close()``."""
        return True

    async def __aenter__(self) -> Store:
        await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
