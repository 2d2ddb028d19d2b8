"""What a store's writer connection has read and written, kept between write transactions.

An ``Engine.apply`` reads the client's state and each record it changes, inside the
write lock; on SQLite every read is a trip to the writer thread, and those trips,
one writer after another, bound the mutations per second. The writer connection
is the only one that writes, so what it read or wrote stays true until another
connection commits -- which SQLite reports through ``PRAGMA data_version``. The
store checks it when each group's transaction begins (:meth:`WriteCache.verify`)
and forgets everything if it moved.

A transaction never writes into the cache directly: its reads and writes go to its own
:class:`Overlay`, merged when its block exits normally (:meth:`WriteCache.merge`), so
a block that raises leaves nothing behind. A group whose COMMIT fails (or any write
of it fails) empties the cache (:meth:`WriteCache.reset`).

Pure bookkeeping: no I/O, no locking (the store's write lock orders its users).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["ClientRow", "Overlay", "RecordRow", "WriteCache"]

RecordRow = tuple[Any, ...]
"""A ``records`` row as the store selects it (id, data, inc, v, fv, fw, adds, deleted)."""

ClientRow = tuple[str, int]
"""A ``clients`` row: (principal, last)."""


@dataclass
class Overlay:
    """One write transaction's reads and writes, until its block exits. ``None`` means
    known to be absent."""

    records: dict[tuple[str, str], RecordRow | None] = field(default_factory=dict)
    clients: dict[str, ClientRow | None] = field(default_factory=dict)


@dataclass
class WriteCache:
    max_records: int = 50_000
    """Past this many cached records, start over (a bound, not an eviction policy)."""
    version: int | None = None
    head: int | None = None
    records: dict[tuple[str, str], RecordRow | None] = field(default_factory=dict)
    clients: dict[str, ClientRow | None] = field(default_factory=dict)

    def verify(self, version: int, head: int) -> None:
        """A group's transaction began: ``version`` is the connection's data_version and
        ``head`` the log head, read right after BEGIN. Forget everything if another
        connection committed since the last check."""
        if version != self.version:
            self.reset()
            self.version = version
        self.head = head

    def reset(self) -> None:
        self.version = self.head = None
        self.records.clear()
        self.clients.clear()

    def merge(self, overlay: Overlay, head: int | None) -> None:
        """A transaction's block exited normally: what it saw and wrote is now the
        group's state."""
        if self.version is None:
            return  # nothing verified: keep nothing
        if len(self.records) + len(overlay.records) > self.max_records:
            self.records.clear()
        if len(self.clients) + len(overlay.clients) > self.max_records:
            self.clients.clear()
        self.records.update(overlay.records)
        self.clients.update(overlay.clients)
        if head is not None:
            self.head = head
