"""One log reader per node: the single path by which data reaches connections.

Theory of operation. Every commit (on this node, or on another node via a backplane,
or noticed by the once-a-second poll) wakes the reader. One step of the reader opens
one read transaction and:

1. reads the new range of the log, ``(position, head]``, and the current records it
   touches, once;
2. for every joined connection, matches the range to each of its queries
   (:func:`syncline.changes.query_items`), computing and encoding each distinct
   (query, principal) answer once and handing the same strings to every connection that
   shares it; connections that receive nothing get an empty advance only when they wait
   for an ack's ``seq`` (so their cursor reaches it, invariant 8) or on the heartbeat;
3. serves joins queued since the last step, in the same transaction, at the same head:
   a first subscription ``since`` a cursor gets the changes ``(since, head]``; any other
   subscription gets a snapshot at ``head``. A cursor older than the log, or from another
   database, gets a snapshot marked ``reset``.

Because joins are served at the same head as the live range, a connection's stream
never overlaps or skips a ``seq`` (invariants 6 and 7), and records are always read
at exactly the head the frame's ``to`` names.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson

from ..changes import query_items
from ..cursor import Cursor
from ..engine import Engine, current_records
from ..exceptions import CursorAhead, CursorError, CursorReset, CursorTooOld
from ..model import Principal
from ..query import Query
from ..record import Record
from ..store.base import LogEntry, ReadTx

__all__ = ["ChangesPart", "LogReader", "Subscriber"]

log = logging.getLogger("syncline.fanout")


@dataclass
class ChangesPart:
    """A ``changes`` frame in pieces: items are JSON strings encoded once, shared."""

    epoch: str
    since: int
    to: int
    items: dict[str, list[str]] = field(default_factory=dict)

    def extend(self, later: ChangesPart) -> None:
        """Coalesce a following part into this one (``later.since == self.to``)."""
        self.to = later.to
        for qid, items in later.items.items():
            self.items.setdefault(qid, []).extend(items)

    def encode(self) -> str:
        body = ",".join(
            f"{orjson.dumps(qid).decode()}:[{','.join(items)}]" for qid, items in self.items.items()
        )
        return (
            f'{{"t":"changes","from":"{self.epoch}.{self.since}",'
            f'"to":"{self.epoch}.{self.to}","q":{{{body}}}}}'
        )

    @property
    def size(self) -> int:
        return sum(len(i) for items in self.items.values() for i in items) + 64


class Subscriber(Protocol):
    """What the reader needs from a connection."""

    principal: Principal
    principal_key: str
    queries: dict[str, Query]
    cursor: int | None  # the seq this connection's stream has reached; None: not joined
    awaiting_seq: int  # the highest ack seq sent that the stream has not reached yet

    def send_changes(self, part: ChangesPart) -> None: ...

    def send_frame(self, frame: dict[str, Any]) -> None: ...


@dataclass
class _Join:
    conn: Subscriber
    queries: dict[str, Query]
    since: Cursor | None
    done: asyncio.Future[None]


class LogReader:
    def __init__(
        self, engine: Engine, *, poll_interval: float = 1.0, advance_every: float = 15.0
    ) -> None:
        self.engine = engine
        self.poll_interval = poll_interval
        self.advance_every = advance_every
        self.position: int | None = None
        self.epoch: str = ""
        self.connections: set[Subscriber] = set()
        self._joins: list[_Join] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._last_advance = time.monotonic()
        self.steps = 0

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        head = await self.engine.head()
        self.epoch, self.position = head.epoch, head.seq
        self.engine.on_commit(self.notify)
        self._task = asyncio.create_task(self._run(), name="syncline-log-reader")

    async def stop(self) -> None:
        if self._task is None:
            return
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
        for j in self._joins:
            if not j.done.done():
                j.done.cancel()
        self._joins.clear()

    def notify(self, head: int) -> None:
        """A commit moved the head (called by the engine, or by a backplane)."""
        self._wake.set()

    # --- connections --------------------------------------------------------------------

    async def join(self, conn: Subscriber, queries: dict[str, Query], since: Cursor | None) -> None:
        """Queue ``queries`` for ``conn``; returns once their first frame was handed over."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joins.append(_Join(conn, queries, since, done))
        self._wake.set()
        await done

    def leave(self, conn: Subscriber) -> None:
        self.connections.discard(conn)

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.poll_interval)
            self._wake.clear()
            try:
                await self.step()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep serving; the next wake or poll retries the range
                log.exception("log reader step failed")
                await asyncio.sleep(0.1)

    async def step(self) -> None:
        joins, self._joins = self._joins, []
        try:
            async with self.engine.store.read() as tx:
                head = await tx.head()
                epoch = await tx.epoch()
                if self.position is None or epoch != self.epoch:
                    self.epoch, self.position = epoch, head
                entries: list[LogEntry] = []
                if head > self.position:
                    entries = await tx.log(self.position, head)
                current = await current_records(tx, entries)
                await self._deliver_live(tx, entries, current, head)
                for j in joins:
                    await self._serve_join(tx, j, head)
                self.position = head
            self.steps += 1
        except BaseException as exc:
            for j in joins:
                if not j.done.done():
                    j.done.set_exception(
                        exc if isinstance(exc, Exception) else asyncio.CancelledError()
                    )
            raise

    async def _deliver_live(
        self,
        tx: ReadTx,
        entries: list[LogEntry],
        current: dict[tuple[str, str], Record | None],
        head: int,
    ) -> None:
        assert self.position is not None
        now = time.monotonic()
        heartbeat = now - self._last_advance >= self.advance_every
        if heartbeat:
            self._last_advance = now
        if head == self.position and not heartbeat:
            return
        cache: dict[tuple[str, str], list[str]] = {}
        schema = self.engine.schema
        for conn in list(self.connections):
            if conn.cursor is None or conn.cursor >= head:
                continue
            part = ChangesPart(self.epoch, conn.cursor, head)
            for qid, query in conn.queries.items():
                key = (query.key, conn.principal_key)
                items = cache.get(key)
                if items is None:
                    raw = query_items(schema, conn.principal, query, entries, current)
                    if raw is None:  # a limited window moved: send it whole
                        window = await self.engine.run_query(tx, conn.principal, query)
                        raw = [{"k": "reset", "records": window}]
                    items = [orjson.dumps(i).decode() for i in raw]
                    cache[key] = items
                if items:
                    part.items[qid] = list(items)
            if part.items or conn.awaiting_seq > conn.cursor or heartbeat:
                conn.send_changes(part)
                conn.cursor = head

    async def _serve_join(self, tx: ReadTx, j: _Join, head: int) -> None:
        conn = j.conn
        try:
            first = conn.cursor is None
            if first and j.since is not None:
                reason = _check_cursor(j.since, self.epoch, head, await tx.floor())
                if reason is None:
                    entries = await tx.log(j.since.seq, head) if j.since.seq < head else []
                    changes = await self.engine.read_changes(tx, conn.principal, entries, j.queries)
                    part = ChangesPart(self.epoch, j.since.seq, head)
                    part.items = {
                        q: [orjson.dumps(i).decode() for i in items] for q, items in changes.items()
                    }
                    conn.queries.update(j.queries)
                    conn.send_changes(part)
                else:
                    conn.queries.update(j.queries)
                    await self._send_snapshot(tx, conn, j.queries, head, reason)
            else:
                if first:
                    conn.cursor = head
                conn.queries.update(j.queries)
                await self._send_snapshot(tx, conn, j.queries, head, None)
            conn.cursor = head
            self.connections.add(conn)
            j.done.set_result(None)
        except CursorError as exc:
            j.done.set_exception(exc)

    async def _send_snapshot(
        self, tx: ReadTx, conn: Subscriber, queries: dict[str, Query], head: int, reset: str | None
    ) -> None:
        records = {
            qid: await self.engine.run_query(tx, conn.principal, q) for qid, q in queries.items()
        }
        frame: dict[str, Any] = {
            "t": "snapshot",
            "cursor": f"{self.epoch}.{head}",
            "queries": {qid: q.to_wire() for qid, q in queries.items()},
            "records": records,
        }
        if reset is not None:
            frame["reset"] = reset
        conn.send_frame(frame)


def _check_cursor(since: Cursor, epoch: str, head: int, floor: int) -> str | None:
    """None if the log can continue from ``since``; else why a fresh snapshot is needed."""
    if since.epoch != epoch:
        return CursorReset.code
    if since.seq > head:
        raise CursorAhead(f"cursor {since} is ahead of the database head {head}")
    if since.seq < floor:
        return CursorTooOld.code
    return None
