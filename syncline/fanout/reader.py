"""One log reader per node: the single path by which data reaches connections.

Theory of operation. Every commit (on this node, or on another node via a backplane,
or noticed by the once-a-second poll) wakes the reader. One step of the reader opens
one read transaction and:

1. reads the new range of the log, ``(position, head]``, and the current records it
   touches, once; when every commit of the range was made on this node, no join waits
   and no later commit was announced, it takes them from those commits instead
   (``Engine.on_local_commit``: the entries and records each wrote, handed over once
   durable) and reads nothing, with ``head`` the last of them: the range is contiguous
   and committed, so the stream neither skips nor overlaps a ``seq``, and the records
   are those at that head (the last commit of the range to write each one wrote it).
   A range that needs a read (a commit of another node or a server transaction in it,
   a limited window that moved) is read from the log as above; the log stays the
   truth for resumes and for other nodes;
2. finds the subscriptions the range may concern through the subscription index
   (:mod:`syncline.fanout.index`: by collection and equality values, a scan bucket
   for the rest) and matches the range to those only
   (:func:`syncline.changes.query_items`; every other answer is empty), computing and
   encoding each distinct (query, read key) answer once, and handing one
   :class:`ChangesPart` (so one encoded frame) to every connection at the same cursor
   with the same answered queries and read key (the read key says what a principal
   may read, see ``Engine.read_key``); connections that receive nothing get an empty
   advance only when they wait for an ack's ``seq`` (so their cursor reaches it,
   invariant 8) or on the heartbeat;
3. serves joins queued since the last step, in the same transaction, at the same head,
   in the order they came, at most ``max_joins`` of them and none started after
   ``join_budget`` seconds (the rest wait for the next step, which follows at once, so
   a storm of resumes never holds up live delivery for long): a first subscription
   ``since`` a cursor gets the changes ``(since, head]``; any other subscription gets a
   snapshot at ``head``. A cursor older than the log, or from another database, gets a
   snapshot marked ``reset``. Joins of one step share what they read: each resumed
   range with its records and each (query, read key) answer (windows and snapshots
   are read for each join: each is charged to its own budget).

Because joins are served at the same head as the live range, a connection's stream
never overlaps or skips a ``seq`` (invariants 6 and 7), and records are always read
at exactly the head the frame's ``to`` names. Every frame of a step is computed before
any is handed over, so a failed step (a store error) leaves every connection where it
was and the next step retries the same range; joins it had not started stay queued.
The reader's own reads go first where reads queue (``reading_the_log``, SQLite's
capped reader pool).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ..changes import query_items
from ..cost import ReadBudget
from ..cursor import Cursor
from ..engine import Engine, current_records
from ..exceptions import CursorAhead, CursorError, CursorReset, CursorTooOld, ReadLimitExceeded
from ..model import Principal
from ..protocol.frames import SnapshotFrame, changes_text, encode_item, shared_records
from ..query import Query
from ..record import LogEntry, Record
from ..store.base import ReadTx, reading_the_log
from ..waiting import wait_event
from .index import SubscriptionIndex

__all__ = ["ChangesPart", "LogReader", "Subscriber"]

log = logging.getLogger("syncline.fanout")


@dataclass
class ChangesPart:
    """A ``changes`` frame in pieces: items are JSON strings encoded once, shared.

    One part may be handed to many connections (all those at the same cursor with the
    same queries and read key), so it is encoded once for all of them; whoever wants
    to :meth:`extend` a part it was handed extends a :meth:`copy`."""

    epoch: str
    since: int
    to: int
    items: dict[str, list[str]] = field(default_factory=dict)
    _encoded: str | None = field(default=None, init=False, repr=False, compare=False)
    _size: int = field(default=-1, init=False, repr=False, compare=False)

    def can_extend(self, later: ChangesPart) -> bool:
        """Whether ``later`` may be coalesced into this part without reordering.

        Items of different queries of one frame apply query by query, so a record that
        moved between two queries across the two parts would be applied out of order.
        Merging is therefore limited to parts that touch at most one and the same query
        (the common case under load), or where one side is an empty advance."""
        if later.since != self.to or later.epoch != self.epoch:
            return False
        qids = self.items.keys() | later.items.keys()
        return len(qids) <= 1

    def extend(self, later: ChangesPart) -> None:
        """Coalesce a following part into this one (see :meth:`can_extend`)."""
        size = self._size + later.size - 64 if self._size >= 0 else -1  # one header
        self.to = later.to
        for qid, items in later.items.items():
            self.items.setdefault(qid, []).extend(items)
        self._encoded = None
        self._size = size

    def copy(self) -> ChangesPart:
        """A part equal to this one whose item lists are its own (safe to extend)."""
        part = ChangesPart(self.epoch, self.since, self.to)
        part.items = {qid: list(items) for qid, items in self.items.items()}
        part._size = self._size
        return part

    def encode(self) -> str:
        if self._encoded is None:
            self._encoded = changes_text(self.epoch, self.since, self.to, self.items)
        return self._encoded

    @property
    def size(self) -> int:
        if self._size < 0:
            self._size = sum(len(i) for items in self.items.values() for i in items) + 64
        return self._size


class Subscriber(Protocol):
    """What the reader needs from a connection."""

    principal: Principal
    read_key: object  # connections with equal read keys may share encoded answers
    queries: dict[str, Query]  # added to by the reader only (it indexes them); remove
    # through LogReader.unsubscribe (one removed directly is dropped from the index lazily)
    cursor: int | None  # the seq this connection's stream has reached; None: not joined
    awaiting_seq: int  # the highest ack seq sent that the stream has not reached yet
    left: bool  # the connection is gone: serve it nothing more
    resync: bool  # a fresh snapshot of everything it holds is on its way

    def send_changes(self, part: ChangesPart) -> None: ...

    def send_frame(self, frame: SnapshotFrame) -> None: ...


@dataclass
class _Join:
    conn: Subscriber
    queries: dict[str, Query] | None  # None: a fresh snapshot of what the connection holds
    since: Cursor | None
    done: asyncio.Future[None]
    budget: ReadBudget | None = None  # what its answer may cost (None: unbounded)


@dataclass
class _Served:
    """What a join will hand over, computed inside the step's read transaction."""

    join: _Join
    queries: dict[str, Query]
    changes: ChangesPart | None = None
    snapshot: SnapshotFrame | None = None


@dataclass
class _Shared:
    """What one step's joins share: all are served at the same head in one transaction."""

    floor: int | None = None
    ranges: dict[int, tuple[list[LogEntry], dict[tuple[str, str], Record | None]]] = field(
        default_factory=dict
    )
    answers: dict[tuple[int, str, object], list[str]] = field(default_factory=dict)


class _NeedsRead(Exception):
    """A step taken from this node's commits needs the store (a limited window moved)."""


MAX_HANDED = 10_000
"""Commits kept for the next step at most (beyond, the step reads the log)."""


class LogReader:
    def __init__(
        self,
        engine: Engine,
        *,
        poll_interval: float = 1.0,
        advance_every: float = 15.0,
        max_joins: int = 200,
        join_budget: float = 0.1,
    ) -> None:
        """A step serves at most ``max_joins`` joins, and starts no further join once
        ``join_budget`` seconds went to joins (it always serves one); the rest wait
        for the next step, which follows at once (see :meth:`step`)."""
        if max_joins < 1 or join_budget <= 0:
            raise ValueError("max_joins must be at least 1 and join_budget positive")
        self.engine = engine
        self.poll_interval = poll_interval
        self.advance_every = advance_every
        self.max_joins = max_joins
        self.join_budget = join_budget
        self.position: int | None = None
        self.epoch: str = ""
        self.connections: set[Subscriber] = set()
        self._joins: deque[_Join] = deque()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listening = False
        self._last_advance = time.monotonic()
        self.steps = 0
        self.step_seconds = 0.0
        """Seconds the loop's steps took, matching and encoding included (diagnostics)."""
        self.index = SubscriptionIndex()
        self.evaluated = 0
        """How many (query, read key) answers steps have computed (the index skips the
        rest): for tests and diagnostics."""
        self.on_advance: list[Callable[[int], None]] = []
        """Called with the new position after each step that moved it (other nodes'
        commits included)."""
        self.on_entries: Callable[[list[LogEntry], float], None] | None = None  # metrics
        self._handed: dict[int, tuple[list[LogEntry], dict[tuple[str, str], Record]]] = {}
        self._notified = 0  # the highest head announced to :meth:`notify`
        self.handed_steps = 0
        """Steps that took their range from this node's commits (read nothing)."""
        self.log_reads = 0
        """Steps that read their range from the log."""
        engine.on_local_commit(self.take_commit)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        head = await self.engine.head()
        self.epoch, self.position = head.epoch, head.seq
        if not self._listening:
            self.engine.on_commit(self.notify)
            self._listening = True
        # A fresh event: one waited on in an earlier event loop cannot be waited on in
        # this one (a server started again by a second TestClient block, say).
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run(), name="syncline-log-reader")

    async def stop(self) -> None:
        if self._task is None:
            return
        task, self._task = self._task, None
        task.cancel()
        await asyncio.wait([task])  # unlike awaiting it, never swallows our own cancellation
        for j in self._joins:
            if not j.done.done():
                j.done.cancel()
        self._joins.clear()
        self._handed.clear()

    def notify(self, head: int | None = None) -> None:
        """The head moved, or a connection waits for it (engine, backplane, server)."""
        if head is not None and head > self._notified:
            self._notified = head
        self._wake.set()

    def take_commit(
        self, seq: int, entries: list[LogEntry], records: dict[tuple[str, str], Record]
    ) -> None:
        """A durable commit of this node (``Engine.on_local_commit``): keep what it
        wrote for the step that delivers it."""
        if self.position is not None and seq > self.position and len(self._handed) < MAX_HANDED:
            self._handed[seq] = (entries, records)

    # --- connections --------------------------------------------------------------------

    async def join(
        self,
        conn: Subscriber,
        queries: dict[str, Query] | None,
        since: Cursor | None,
        budget: ReadBudget | None = None,
    ) -> None:
        """Queue ``queries`` for ``conn`` (None: resend everything it holds as a fresh
        snapshot); returns once their first frame was handed over. Raises
        :class:`ReadLimitExceeded` when the answer would pass ``budget``."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._joins.append(_Join(conn, queries, since, done, budget))
        self._wake.set()
        await done

    def leave(self, conn: Subscriber) -> None:
        conn.left = True
        self.connections.discard(conn)
        self.index.drop(conn)

    def unsubscribe(self, conn: Subscriber, qids: Iterable[str]) -> None:
        """The connection no longer wants these queries (``unsub``)."""
        for qid in qids:
            conn.queries.pop(qid, None)
            self.index.remove(conn, qid)

    # --- the loop -----------------------------------------------------------------------

    async def _run(self) -> None:
        reading_the_log.set(True)  # this task's reads go first where reads queue
        while True:
            await wait_event(self._wake, self.poll_interval)
            self._wake.clear()
            started = time.monotonic()
            try:
                await self.step()
                self.step_seconds += time.monotonic() - started
            except asyncio.CancelledError:
                raise
            except Exception:  # nothing was handed over: the next wake retries the range
                log.exception("log reader step failed")
                await asyncio.sleep(0.1)

    async def step(self) -> None:
        """One read transaction; every frame is computed first and handed over only when
        all are ready, so a failure leaves every connection where it was.

        Joins are served in bounded steps: after the live range, joins in the order
        they came until ``max_joins`` or ``join_budget``; the rest stay queued and the
        next step follows at once, so during a storm of resumes connected clients still
        get a step (and their changes) every ``join_budget`` or so."""
        if self._handed and not self._joins and await self._step_handed():
            return
        joins: list[_Join] = []
        try:
            async with self.engine.store.read() as tx:
                head = await tx.head()
                epoch = await tx.epoch()
                if self.position is None or epoch != self.epoch:
                    self.epoch, self.position = epoch, head
                entries: list[LogEntry] = []
                if head > self.position:
                    entries = await tx.log(self.position, head)
                    self.log_reads += 1
                current = await current_records(tx, entries)
                live = await self._live_parts(tx, entries, current, head)
                served = []
                shared = _Shared()
                started = time.monotonic()
                while self._joins and len(joins) < self.max_joins:
                    if joins and time.monotonic() - started >= self.join_budget:
                        break
                    joins.append(self._joins.popleft())
                    served.append(await self._serve(tx, joins[-1], head, shared))
        except BaseException as exc:
            for j in joins:
                if not j.done.done():
                    j.done.set_exception(
                        exc if isinstance(exc, Exception) else asyncio.CancelledError()
                    )
            raise
        if self._joins:
            self._wake.set()  # the joins left over get the next step, at once
        self._finish(live, served, head, entries)

    async def _step_handed(self) -> bool:
        """A step over this node's commits only, reading nothing (see the module's
        docs); False when the next range is not all of them, or needs a read."""
        assert self.position is not None
        seq = self.position + 1
        entries: list[LogEntry] = []
        current: dict[tuple[str, str], Record | None] = {}
        while (handed := self._handed.get(seq)) is not None:
            entries.extend(handed[0])
            current.update(handed[1])
            seq += 1
        head = seq - 1
        if head == self.position or head < self._notified:  # more was committed since
            return False
        try:
            live = await self._live_parts(None, entries, current, head)
        except _NeedsRead:
            return False
        self.handed_steps += 1
        self._finish(live, [], head, entries)
        return True

    def _finish(
        self,
        live: list[tuple[Subscriber, ChangesPart]],
        served: list[_Served | None],
        head: int,
        entries: list[LogEntry],
    ) -> None:
        """Hand over a step's frames: nothing here awaits or fails."""
        for conn, part in live:
            if not conn.left:
                conn.send_changes(part)
                conn.cursor = head
        for result in served:
            if result is not None:
                self._hand_over(result, head)
        if entries and self.on_entries is not None:  # (entries, the time they were handed)
            self.on_entries(entries, time.time())
        moved = head != self.position
        self.position = head
        for seq in [s for s in self._handed if s <= head]:
            del self._handed[seq]
        self.steps += 1
        if moved:
            for listener in self.on_advance:
                listener(head)

    async def _live_parts(
        self,
        tx: ReadTx | None,
        entries: list[LogEntry],
        current: dict[tuple[str, str], Record | None],
        head: int,
    ) -> list[tuple[Subscriber, ChangesPart]]:
        assert self.position is not None
        now = time.monotonic()
        heartbeat = now - self._last_advance >= self.advance_every
        if heartbeat:
            self._last_advance = now
        waiting = any(c.cursor is not None and c.awaiting_seq > c.cursor for c in self.connections)
        if head == self.position and not heartbeat and not waiting:
            return []
        # Only subscriptions the index finds may answer something (every other answer
        # is empty). Each distinct answer is computed and encoded once per (query, read
        # key), and each distinct part once per (cursor, read key, answered queries):
        # connections at the same cursor share one part, and so one encoded frame.
        candidates = self.index.candidates(self.engine.schema, entries, current) if entries else {}
        answers: dict[tuple[str, object], list[str]] = {}
        parts: dict[tuple[object, ...], ChangesPart] = {}
        schema = self.engine.schema
        out: list[tuple[Subscriber, ChangesPart]] = []
        for conn in list(self.connections):
            if conn.left or conn.resync or conn.cursor is None or conn.cursor >= head:
                continue
            cursor, read_key = conn.cursor, conn.read_key
            mine = candidates.get(conn)
            if not mine and conn.awaiting_seq <= cursor and not heartbeat:
                continue
            found: dict[str, list[str]] = {}
            signature: list[object] = [cursor, read_key]
            if mine:
                if len(mine) > 1:  # in the connection's order, as a full scan would give
                    order = {qid: n for n, qid in enumerate(conn.queries)}
                    mine.sort(key=lambda m: order.get(m[0], -1))
                for qid, reg in mine:
                    if qid not in conn.queries:  # unsubscribed while the step awaited
                        continue
                    key = (reg.key, read_key)
                    items = answers.get(key)
                    if items is None:
                        self.evaluated += 1
                        query = reg.query
                        raw = query_items(schema, conn.principal, query, entries, current)
                        if raw is None:  # a limited window moved: send it whole
                            if tx is None:  # at exactly this head: the step reads
                                raise _NeedsRead
                            window = await self.engine.run_query(tx, conn.principal, query)
                            raw = [{"k": "reset", "records": window}]
                        items = [encode_item(i) for i in raw]
                        answers[key] = items
                    if items:
                        found[qid] = items
                        signature += (qid, reg.key)
            if not found and conn.awaiting_seq <= cursor and not heartbeat:
                continue
            shared = tuple(signature)
            part = parts.get(shared)
            if part is None:
                part = parts[shared] = ChangesPart(self.epoch, cursor, head, found)
            out.append((conn, part))
        return out

    async def _serve(self, tx: ReadTx, j: _Join, head: int, shared: _Shared) -> _Served | None:
        conn = j.conn
        if j.done.done() or conn.left:  # the subscriber gave up or went away meanwhile
            if not j.done.done():
                j.done.cancel()
            return None
        queries = dict(conn.queries) if j.queries is None else j.queries
        try:
            if conn.cursor is None and j.since is not None:
                if shared.floor is None:
                    shared.floor = await tx.floor()
                reason = _check_cursor(j.since, self.epoch, head, shared.floor)
                if reason is None:
                    part = ChangesPart(self.epoch, j.since.seq, head)
                    part.items = await self._resume_items(tx, j, queries, j.since.seq, head, shared)
                    most = j.budget.max_bytes if j.budget is not None else None
                    if most is None or part.size <= most:
                        return _Served(j, queries, changes=part)
                    reason = "changes_too_large"  # a fresh snapshot is smaller, or refused
                return _Served(
                    j, queries, snapshot=await self._snapshot(tx, j, queries, head, reason)
                )
            return _Served(j, queries, snapshot=await self._snapshot(tx, j, queries, head, None))
        except (CursorError, ReadLimitExceeded) as exc:
            j.done.set_exception(exc)
        except Exception as exc:  # one failing join must not fail the others
            log.exception("serving a subscription failed")
            j.done.set_exception(exc)
        return None

    async def _resume_items(
        self,
        tx: ReadTx,
        j: _Join,
        queries: dict[str, Query],
        since: int,
        head: int,
        shared: _Shared,
    ) -> dict[str, list[str]]:
        """Each query's encoded net effect of ``(since, head]``. The range and its records
        are read once per step for every join resuming from ``since``, and each (query,
        read key) answer computed once (a storm of resumes mostly shares a few cursors);
        a moved window is read for each join, charged to its budget."""
        ranged = shared.ranges.get(since)
        if ranged is None:
            entries = await tx.log(since, head) if since < head else []
            ranged = shared.ranges[since] = (entries, await current_records(tx, entries))
        entries, current = ranged
        conn = j.conn
        out: dict[str, list[str]] = {}
        for qid, query in queries.items():
            key = (since, query.key, conn.read_key)
            items = shared.answers.get(key)
            if items is None:
                raw = query_items(self.engine.schema, conn.principal, query, entries, current)
                if raw is None:
                    window = await self.engine.run_query(tx, conn.principal, query, j.budget)
                    out[qid] = [encode_item({"k": "reset", "records": window})]
                    continue
                items = shared.answers[key] = [encode_item(i) for i in raw]
            out[qid] = items
        return out

    def _hand_over(self, served: _Served, head: int) -> None:
        j, conn = served.join, served.join.conn
        if conn.left or j.done.done():
            return
        conn.queries.update(served.queries)
        for qid, query in served.queries.items():
            self.index.add(conn, qid, query)
        if served.changes is not None:
            conn.send_changes(served.changes)
        elif served.snapshot is not None:
            conn.send_frame(served.snapshot)
        if j.queries is None:
            conn.resync = False
        conn.cursor = head
        self.connections.add(conn)
        if not j.done.done():  # sending may have closed the connection (an overflow)
            j.done.set_result(None)

    async def _snapshot(
        self,
        tx: ReadTx,
        j: _Join,
        queries: dict[str, Query],
        head: int,
        reset: str | None,
    ) -> SnapshotFrame:
        records = await self.engine.run_queries(tx, j.conn.principal, queries, j.budget)
        return SnapshotFrame(
            cursor=f"{self.epoch}.{head}",
            queries={qid: q.to_wire() for qid, q in queries.items()},
            records=shared_records(records),
            reset=reset,
        )


def _check_cursor(since: Cursor, epoch: str, head: int, floor: int) -> str | None:
    """None if the log can continue from ``since``; else why a fresh snapshot is needed."""
    if since.epoch != epoch:
        return CursorReset.code
    if since.seq > head:
        raise CursorAhead(f"cursor {since} is ahead of the database head {head}")
    if since.seq < floor:
        return CursorTooOld.code
    return None
