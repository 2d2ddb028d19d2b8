"""An in-memory store: the reference implementation of the Store interface.

Nothing survives the process; use it for tests and for single-process experiments.
Writes buffer in their transaction and apply in one step at commit, after every open
read transaction has finished, so readers see one state throughout (snapshot isolation
by exclusion: a commit waits for readers, readers wait for a commit in progress).
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from ..query import Query
from ..record import Record
from .base import ClientState, LogEntry, ReadTx, Store, WriteTx, following

__all__ = ["MemoryStore"]


@dataclass
class _Data:
    epoch: str
    records: dict[tuple[str, str], Record] = field(default_factory=dict)
    log: list[LogEntry] = field(default_factory=list)
    floor: int = 0
    clients: dict[str, ClientState] = field(default_factory=dict)
    acks: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict)

    @property
    def head(self) -> int:
        return self.log[-1].seq if self.log else self.floor


class _Read(ReadTx):
    def __init__(self, data: _Data) -> None:
        self._d = data

    async def epoch(self) -> str:
        return self._d.epoch

    async def head(self) -> int:
        return self._d.head

    async def floor(self) -> int:
        return self._d.floor

    async def get(self, collection: str, record_id: str) -> Record | None:
        r = self._d.records.get((collection, record_id))
        return r.copy() if r is not None else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        out = {}
        for i in ids:
            r = self._d.records.get((collection, i))
            if r is not None:
                out[i] = r.copy()
        return out

    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        rows = {
            rid: r
            for (c, rid), r in self._d.records.items()
            if c == query.collection and not r.deleted and query.matches({**r.data, "id": rid})
        }
        ordered = Query(query.collection, (), query.order, query.limit if apply_limit else None)
        views = ordered.sort([{**r.data, "id": rid} for rid, r in rows.items()])
        return [rows[str(v["id"])].copy() for v in views]

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        return [e for e in self._d.log if after < e.seq <= upto]

    async def seq_at(self, when: float) -> int:
        older = [e.seq for e in self._d.log if e.time <= when]
        return max(older) if older else self._d.floor

    async def client(self, client_id: str) -> ClientState | None:
        return self._d.clients.get(client_id)

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        return self._d.acks.get((client_id, mutation_id))


class _Write(_Read, WriteTx):
    """Reads see the committed state plus this transaction's own writes."""

    def __init__(self, data: _Data) -> None:
        super().__init__(data)
        self._records: dict[tuple[str, str], Record] = {}
        self._log: list[LogEntry] = []
        self._clients: dict[str, ClientState] = {}
        self._acks: dict[tuple[str, int], dict[str, Any]] = {}
        self._confirm: list[tuple[str, int]] = []
        self._trim: int | None = None

    async def head(self) -> int:
        return self._log[-1].seq if self._log else self._d.head

    async def get(self, collection: str, record_id: str) -> Record | None:
        r = self._records.get((collection, record_id))
        if r is not None:
            return r.copy()
        return await super().get(collection, record_id)

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        out = {}
        for i in ids:
            r = await self.get(collection, i)
            if r is not None:
                out[i] = r
        return out

    async def client(self, client_id: str) -> ClientState | None:
        return self._clients.get(client_id) or self._d.clients.get(client_id)

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        key = (client_id, mutation_id)
        return self._acks.get(key) or self._d.acks.get(key)

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        state = await self.client(client_id)
        if (state.last if state else 0) != expected:
            return False
        self._clients[client_id] = ClientState(client_id, principal, new)
        return True

    async def put(self, collection: str, record: Record) -> None:
        self._records[(collection, record.id)] = record.copy()

    async def append_log(self, entries: list[LogEntry]) -> None:
        following(await self.head(), entries)
        self._log.extend(entries)

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        self._acks[(client_id, mutation_id)] = ack

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        self._confirm.append((client_id, upto))

    async def trim(self, upto: int) -> int:
        self._trim = max(self._trim or 0, upto)
        return sum(1 for e in self._d.log if e.seq <= upto)

    def commit(self) -> None:
        """Apply everything in one synchronous step (no await: nothing interleaves)."""
        d = self._d
        d.records.update(self._records)
        d.log.extend(self._log)
        d.clients.update(self._clients)
        d.acks.update(self._acks)
        for client_id, upto in self._confirm:
            for key in [k for k in d.acks if k[0] == client_id and k[1] <= upto]:
                del d.acks[key]
        if self._trim is not None and self._trim > d.floor:
            upto = min(self._trim, d.head)
            d.log = [e for e in d.log if e.seq > upto]
            d.records = {k: r for k, r in d.records.items() if not (r.deleted and r.v <= upto)}
            # acks of trimmed changes, and each such client's earlier ones
            newest: dict[str, int] = {}
            for (client_id, mid), ack in d.acks.items():
                seq = ack.get("seq")
                if isinstance(seq, int) and seq <= upto:
                    newest[client_id] = max(newest.get(client_id, 0), mid)
            d.acks = {k: a for k, a in d.acks.items() if k[1] > newest.get(k[0], 0)}
            d.floor = upto


class MemoryStore(Store):
    def __init__(self) -> None:
        self._data = _Data(epoch=secrets.token_hex(4))
        self._write_lock = asyncio.Lock()
        self._readers = 0
        self._committing = False
        self._cond: asyncio.Condition | None = None

    def _condition(self) -> asyncio.Condition:
        if self._cond is None:
            self._cond = asyncio.Condition()
        return self._cond

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        cond = self._condition()
        async with cond:
            await cond.wait_for(lambda: not self._committing)
            self._readers += 1
        try:
            yield _Read(self._data)
        finally:
            async with cond:
                self._readers -= 1
                cond.notify_all()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        async with self._write_lock:
            tx = _Write(self._data)
            yield tx
            cond = self._condition()
            async with cond:
                self._committing = True
                await cond.wait_for(lambda: self._readers == 0)
                tx.commit()
                self._committing = False
                cond.notify_all()
