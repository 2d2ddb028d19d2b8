"""The authoritative engine: a mutation in, committed changes out, through a Store.

Theory of operation for :meth:`Engine.apply` (one write transaction per mutation):

1. The client id must belong to the principal (invariant 4).
2. Mutation ids go 1, 2, 3 … per client. An id at or below the client's last is a
   replay: the kept ack is returned and nothing is applied again. An id above last + 1
   is a gap: refused, nothing used up (invariant 3).
3. The client's last id advances by a conditional update, the transaction's first write.
4. Every op is resolved against the record as earlier ops of the same mutation left it
   (:func:`syncline.merge.resolve`); then every touched record is validated against its
   model, references are checked, and write rules see before and after (invariants 5,
   10). A permanent refusal is stored as the mutation's ack: it uses up the id.
   Before any of that, a record the principal may not read is, to this mutation, a
   record that does not exist (invariant 10): an op on it answers ``not_found``, an
   insert over a live one goes on as a fresh insert and is refused (``forbidden``)
   where it would have been written, and a reference to it is a missing reference.
   An op that changes nothing still needs the write rule's consent.
5. Under ``whole`` mode a conflict on a ``manual`` field applies nothing; the ack
   carries the conflict. Otherwise changed records are written, one log entry per
   record at one new ``seq``, and the ack is kept until the client confirms it.
6. The ack is returned only after the transaction committed (invariant 2); then the
   commit listeners learn that the head moved.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Hashable, Mapping
from contextlib import asynccontextmanager
from dataclasses import replace
from typing import Any, Literal, overload

import orjson

from .changes import query_items, touched_keys
from .cost import ReadBudget
from .cursor import Cursor
from .exceptions import (
    ClientIdTaken,
    CursorAhead,
    CursorReset,
    CursorTooOld,
    Forbidden,
    InvalidMutation,
    MissingReference,
    MutationGap,
    MutationRefused,
    RetryLater,
)
from .merge import resolve
from .model import Collection, M, Principal, Schema, as_model
from .ops import Insert, Mutation, Op, parse_mutation
from .query import Query
from .record import LogEntry, Record
from .results import WHOLE_CONFLICT, Ack, Changes, OpResult, Snapshot
from .store.base import ReadTx, Store, WriteTx
from .textcheck import name_problem

__all__ = ["Ack", "Changes", "Engine", "ServerTransaction", "Snapshot"]

CommitListener = Callable[[int], None]
Handoff = list[tuple[list[LogEntry], dict[tuple[str, str], Record]]]
LocalCommitListener = Callable[[int, list[LogEntry], dict[tuple[str, str], Record]], None]
"""Called with a durable commit's ``seq``, its log entries and the records it wrote."""

FORBIDDEN = "the write rule refused this change"
"""The one message of every ``forbidden`` refusal: it says nothing of the record's state."""


class Engine:
    """Applies mutations and answers reads for one schema over one store."""

    def __init__(
        self,
        schema: Schema,
        store: Store,
        *,
        principal_key: Callable[[Principal], str] = str,
        read_key: Callable[[Principal], Hashable] | None = None,
        max_ops: int = 500,
    ) -> None:
        """``principal_key`` is a principal's identity: client ids belong to it.
        ``read_key`` says what a principal may read: connections whose principals have
        equal read keys share one computed answer in fan-out. By default the principal
        itself when it is hashable (give principals value equality that covers
        everything the read rules look at), else each principal object on its own."""
        self.schema = schema
        self.store = store
        self.principal_key = principal_key
        self.read_key = read_key or _default_read_key
        self.max_ops = max_ops
        self._listeners: list[CommitListener] = []
        self._local_listeners: list[LocalCommitListener] = []

    def on_commit(self, listener: CommitListener) -> None:
        """Call ``listener(head)`` after every commit that moved the head."""
        self._listeners.append(listener)

    def on_local_commit(self, listener: LocalCommitListener) -> None:
        """Call ``listener(seq, entries, records)`` after a client mutation committed on
        this engine, before :meth:`on_commit`'s listeners: the log reader takes the
        range from here instead of reading it back (the log stays the truth)."""
        self._local_listeners.append(listener)

    def _committed(self, head: int) -> None:
        for listener in self._listeners:
            listener(head)

    # --- writes -----------------------------------------------------------------------

    async def apply(
        self,
        principal: Principal,
        client_id: str,
        mutation: Mutation | Mapping[str, Any],
        *,
        refusal: MutationRefused | None = None,
    ) -> Ack:
        """Apply one client mutation; return its ack once committed (see module docs).

        Raises :class:`MutationGap`, :class:`ClientIdTaken` or :class:`RetryLater`,
        which use nothing up; every other refusal comes back as a ``rejected`` ack.
        ``refusal`` refuses the mutation permanently without looking at its ops (a
        transport found it malformed or over a limit): it uses up the id all the same.
        """
        if not isinstance(client_id, str) or not 1 <= len(client_id) <= 128:
            raise InvalidMutation("client id must be a string of 1 to 128 characters")
        if (problem := name_problem(client_id)) is not None:
            raise InvalidMutation(f"client id {problem}")
        pkey = self.principal_key(principal)
        parse_error: InvalidMutation | None = None
        if isinstance(mutation, Mutation):
            parsed: Mutation | None = mutation
            mutation_id = mutation.id
        else:
            maybe_id = _mutation_id(mutation)
            if maybe_id is None:
                raise InvalidMutation("a mutation needs an integer id of 1 or more in 'id'")
            mutation_id = maybe_id
            try:
                parsed = None if refusal is not None else parse_mutation(mutation)
            except InvalidMutation as exc:  # refused below, using up its id
                parsed, parse_error = None, exc
        async with self.store.write() as tx:
            state = await tx.client(client_id)
            if state is not None and state.principal != pkey:
                raise ClientIdTaken(client_id)
            last = state.last if state is not None else 0
            if mutation_id <= last:
                kept = await tx.ack(client_id, mutation_id)
                if kept is None:
                    return Ack(mutation_id, "duplicate", replay=True)
                ack = Ack.from_wire(kept)
                ack.replay = True
                return ack
            if mutation_id != last + 1:
                raise MutationGap(client_id, mutation_id, last + 1)
            if not await tx.advance_client(client_id, pkey, last, last + 1):
                raise RetryLater("another node is applying this client's mutation", 0.05)
            handoff: Handoff = []
            try:
                if parsed is None:
                    raise refusal or parse_error or InvalidMutation("malformed mutation")
                if len(parsed.ops) > self.max_ops:
                    raise InvalidMutation(f"a mutation may hold at most {self.max_ops} ops")
                ack = await self._apply_ops(
                    tx, principal, parsed.ops, parsed.id, parsed.mode, client_id, handoff=handoff
                )
            except MutationRefused as exc:
                if not exc.permanent:
                    raise
                ack = Ack(mutation_id, "rejected", error=exc.to_wire())
            await tx.put_ack(client_id, ack.mutation_id, ack.to_wire())
        if ack.seq is not None:
            if handoff:  # committed: what it wrote, for this node's log reader
                for local in self._local_listeners:
                    local(ack.seq, *handoff[-1])
            self._committed(ack.seq)
        return ack

    async def _apply_ops(
        self,
        tx: WriteTx,
        principal: Principal,
        ops: list[Op],
        mutation_id: int | None,
        mode: Literal["whole", "partial"],
        client_id: str | None,
        *,
        trusted: bool = False,
        seq: int | None = None,
        handoff: Handoff | None = None,
    ) -> Ack:
        seq = seq if seq is not None else await tx.head() + 1
        before: dict[tuple[str, str], Record | None] = {}
        working: dict[tuple[str, str], Record | None] = {}
        results: list[OpResult] = []
        phantoms: list[tuple[str, str]] = []  # inserts over live records hidden from principal
        for op in ops:
            coll = self.schema.collection(op.c, op.id)
            key = (op.c, op.id)
            if key not in working:
                current = await tx.get(op.c, op.id)
                if (
                    not trusted
                    and current is not None
                    and not self._readable(principal, coll, current)
                ):
                    # To this principal the record does not exist (invariant 10): every
                    # answer about it is the answer for an id never used. A live one's id
                    # is still taken: an insert over it goes on as a fresh insert and is
                    # refused where that insert would have been written.
                    if isinstance(op, Insert) and not current.deleted:
                        phantoms.append(key)
                    if not (isinstance(op, Insert) and current.deleted):
                        current = None
                before[key] = current
                working[key] = current
            new, result = resolve(
                coll, working[key], op, seq=seq, writer=client_id, trusted=trusted
            )
            if new is not None:
                working[key] = new
            results.append(result)
        has_conflict = any(r.status == "conflict" for r in results)
        if has_conflict:
            # A conflict shows "theirs": only to a principal who may read the record and
            # would be allowed to change it (invariant 10), whatever the mode.
            self._check_conflicts_visible(principal, results, before)
        if has_conflict and mode == "whole":
            for r in results:  # nothing was applied, so nothing was overwritten or merged
                r.overwritten, r.merged = [], []
                if r.status == "applied":  # and no op says so (docs/protocol.md, Conflict)
                    r.status, r.reason = "dropped", WHOLE_CONFLICT
            return Ack(mutation_id or 0, "conflict", results=results)
        changed: dict[tuple[str, str], Record] = {}
        for (cname, rid), record in working.items():
            coll = self.schema.collections[cname]
            old = before[(cname, rid)]
            old_view = None if old is None or old.deleted else {**old.data, "id": rid}
            if record is None or record is old:
                # Nothing to write; still only for a principal who may write the record
                # as it is (a no-op answers as the change would). A deleted one the
                # principal may read stays dropped.
                if not trusted and old_view is not None:
                    self._check_write(principal, coll, rid, old_view, old_view)
                continue
            changed[(cname, rid)] = record
            if not record.deleted:
                record.data = coll.validate(rid, record.data)
            await self._check_refs(tx, principal, cname, record, working, trusted=trusted)
            new_view = None if record.deleted else {**record.data, "id": rid}
            self._check_write(principal, coll, rid, old_view, new_view)
        if phantoms:  # where a fresh insert would have been written: refused, the same way
            cname, rid = phantoms[0]
            raise Forbidden(FORBIDDEN, collection=cname, record_id=rid)
        if not changed:
            return Ack(mutation_id or 0, "applied", results=results)
        now = time.time()
        entries = []
        for (cname, rid), record in changed.items():
            await tx.put(cname, record)
            entries.append(
                self._log_entry(
                    seq, cname, before[(cname, rid)], record, client_id, mutation_id, now
                )
            )
        await tx.append_log(entries)
        if handoff is not None:
            handoff.append((entries, changed))
        return Ack(mutation_id or 0, "applied", seq=seq, results=results)

    def _check_conflicts_visible(
        self,
        principal: Principal,
        results: list[OpResult],
        before: Mapping[tuple[str, str], Record | None],
    ) -> None:
        for result in results:
            for c in result.conflicts:
                coll = self.schema.collections[c.collection]
                old = before.get((c.collection, c.id))
                view = None if old is None or old.deleted else {**old.data, "id": c.id}
                readable = view is None or self.schema.may_read(
                    principal, coll, coll.visible(c.id, view)
                )
                if not readable or not self.schema.may_write(principal, coll, view, view):
                    raise Forbidden(FORBIDDEN, collection=c.collection, record_id=c.id)

    def _readable(self, principal: Principal, coll: Collection, record: Record) -> bool:
        """May ``principal`` read ``record`` as stored? A tombstone keeps the fields
        read rules see (:func:`syncline.merge.resolve`), so whoever could read the
        record can still read that it was deleted."""
        if not self.schema.rules_declared:
            return True
        return self.schema.may_read(principal, coll, coll.visible(record.id, record.data))

    def _check_write(
        self,
        principal: Principal,
        coll: Collection,
        rid: str,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> None:
        if not self.schema.may_write(principal, coll, before, after):
            raise Forbidden(FORBIDDEN, collection=coll.name, record_id=rid)

    async def _check_refs(
        self,
        tx: WriteTx,
        principal: Principal,
        cname: str,
        record: Record,
        working: Mapping[tuple[str, str], Record | None],
        *,
        trusted: bool,
    ) -> None:
        """Every reference names a live record; for a client, one it may read (a
        reference to a record it may not read answers as one to a missing record)."""
        if record.deleted:
            return
        for spec in self.schema.collections[cname].fields.values():
            if spec.ref is None:
                continue
            target_id = record.data.get(spec.name)
            if target_id is None:
                continue
            key = (spec.ref, target_id)
            target = working[key] if key in working else await tx.get(*key)
            target_coll = self.schema.collections[spec.ref]
            if (
                target is None
                or target.deleted
                or (not trusted and not self._readable(principal, target_coll, target))
            ):
                raise MissingReference(
                    f"refers to {spec.ref}/{target_id!r}, which does not exist",
                    collection=cname,
                    record_id=record.id,
                    field=spec.name,
                )

    def _log_entry(
        self,
        seq: int,
        cname: str,
        old: Record | None,
        new: Record,
        client_id: str | None,
        mutation_id: int | None,
        now: float,
    ) -> LogEntry:
        coll = self.schema.collections[cname]
        was_live = old is not None and not old.deleted and old.inc == new.inc
        if new.deleted:
            kind: Literal["insert", "update", "delete"] = "delete"
            patch: dict[str, Any] = {}
        elif not was_live:
            kind, patch = "insert", dict(new.data)
        else:
            kind = "update"
            patch = {f: new.data.get(f) for f, v in new.fv.items() if v == seq}
        return LogEntry(
            seq=seq,
            collection=cname,
            id=new.id,
            kind=kind,
            inc=new.inc,
            patch=patch,
            before=coll.visible(new.id, old.data) if old is not None and not old.deleted else None,
            after=None if new.deleted else coll.visible(new.id, new.data),
            client_id=client_id,
            mutation_id=mutation_id,
            time=now,
        )

    async def trim(self, older_than: float) -> int:
        """Remove log entries and tombstones committed more than ``older_than`` seconds
        ago; cursors from before then get "cursor too old". Returns entries removed."""
        async with self.store.write() as tx:
            upto = await tx.seq_at(time.time() - older_than)
            return await tx.trim(upto) if upto > await tx.floor() else 0

    async def client_last(self, principal: Principal, client_id: str) -> int:
        """The client's last mutation id (0 if new); :class:`ClientIdTaken` if the id
        belongs to another principal (invariant 4)."""
        async with self.store.read() as tx:
            state = await tx.client(client_id)
        if state is None:
            return 0
        if state.principal != self.principal_key(principal):
            raise ClientIdTaken(client_id)
        return state.last

    async def bind_client(self, principal: Principal, client_id: str) -> int:
        """At ``hello``: the client's last mutation id, binding a new client id to
        ``principal`` (invariant 4); :class:`ClientIdTaken` if it is another's. Binding
        is a write, made only for an id not bound yet: if the store refuses it
        (:class:`StoreError`), the first mutation binds the id instead."""
        pkey = self.principal_key(principal)
        async with self.store.read() as tx:
            state = await tx.client(client_id)
        if state is None:
            async with self.store.write() as wtx:
                state = await wtx.client(client_id)
                if state is None and await wtx.advance_client(client_id, pkey, 0, 0):
                    return 0
                state = state or await wtx.client(client_id)
        if state is None:  # nothing bound it and it could not be bound: no store does that
            return 0
        if state.principal != pkey:
            raise ClientIdTaken(client_id)
        return state.last

    async def confirm_acks(self, client_id: str, upto: int) -> bool:
        """The client holds every ack up to ``upto``: stop keeping them. Acks go in
        order (a confirmation or a trim removes all up to some id), so when the ack of
        ``upto`` is gone, none before it is kept either, and nothing is written: a
        returning client does not need a database that takes writes. True if acks were
        removed."""
        if upto < 1:
            return False
        async with self.store.read() as tx:
            if await tx.ack(client_id, upto) is None:
                return False
        async with self.store.write() as wtx:
            await wtx.confirm_acks(client_id, upto)
        return True

    @asynccontextmanager
    async def transaction(self, principal: Principal) -> AsyncIterator[ServerTransaction]:
        """The server-side write API: ops with the same validation, rules, merge and log
        as a client's mutation, committed together when the block exits normally.

        Raise inside the block (an application check) and nothing is written.
        """
        async with self.store.write() as wtx:
            stx = ServerTransaction(self, wtx, principal)
            yield stx
            await stx._flush()
        if stx.ack is not None and stx.ack.seq is not None:
            self._committed(stx.ack.seq)

    # --- reads ------------------------------------------------------------------------

    async def snapshot(
        self,
        principal: Principal,
        queries: Mapping[str, Query],
        *,
        budget: ReadBudget | None = None,
    ) -> Snapshot:
        """Read several queries and their cursor in one transaction (invariant 6);
        identical queries are read once. ``budget`` bounds what the answer may cost
        (:class:`ReadLimitExceeded` past it)."""
        async with self.store.read() as tx:
            cursor = Cursor(await tx.epoch(), await tx.head())
            results = await self.run_queries(tx, principal, queries, budget)
        return Snapshot(cursor, results, dict(queries))

    async def run_queries(
        self,
        tx: ReadTx,
        principal: Principal,
        queries: Mapping[str, Query],
        budget: ReadBudget | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Each query's records. Queries with the same key are read once and share one
        list; every copy is charged to ``budget`` (each is sent), by its encoded size,
        before the next query is read: an answer too large is refused, not built."""
        read: dict[str, tuple[list[dict[str, Any]], int]] = {}
        out: dict[str, list[dict[str, Any]]] = {}
        for qid, query in queries.items():
            key = query.key
            found = read.get(key)
            if found is None:
                records = await self.run_query(tx, principal, query, budget)
                size = len(orjson.dumps(records)) if budget is not None else 0
                found = read[key] = (records, size)
            if budget is not None:
                budget.spend(qid, found[1] + 2 * len(qid) + len(key) + 8)  # with its echo
            out[qid] = found[0]
        return out

    async def run_query(
        self,
        tx: ReadTx,
        principal: Principal,
        query: Query,
        budget: ReadBudget | None = None,
    ) -> list[dict[str, Any]]:
        """One query's records as the principal may read them. A ``read_filter`` is
        ANDed into the store's query (the store filters, orders and limits); a callable
        ``read`` rule is asked about every row the query matches, at most
        ``budget.scan_left`` rows (:class:`ReadLimitExceeded` beyond)."""
        coll = self.schema[query.collection]
        if coll.read_filter is not None:
            allowed = self.schema.read_conditions(principal, coll)
            if allowed is None:
                return []
            narrowed = replace(query, conditions=query.conditions + allowed.conditions)
            return await tx.query_wire(narrowed)
        if not self.schema.rules_declared:
            return await tx.query_wire(query)
        if coll.read is None:  # rules elsewhere, none here: nothing is readable
            return []
        may_read, visible = self.schema.may_read, coll.visible
        cap = budget.scan_left if budget is not None else None
        if cap is None:
            rows = await tx.query_wire(query, apply_limit=False)
            records = [r for r in rows if may_read(principal, coll, visible(r["id"], r["data"]))]
            return records[: query.limit] if query.limit is not None else records
        assert budget is not None
        # A limited query first reads a few rows more than its limit, and only if the
        # rule refused too many of them up to the cap; one row more than the cap says
        # whether the cap was reached. The rows of the last read are what it scanned.
        reads = [cap + 1]
        if query.limit is not None and query.limit * 4 + 16 <= cap:
            reads.insert(0, query.limit * 4 + 16)
        for n in reads:
            rows = await tx.query_wire(replace(query, limit=n))
            records = [r for r in rows if may_read(principal, coll, visible(r["id"], r["data"]))]
            if query.limit is not None and len(records) >= query.limit:
                budget.scan(len(rows))
                return records[: query.limit]
            if len(rows) < n:  # every matching row was read
                budget.scan(len(rows))
                return records
        raise budget.refuse_scan(coll.name)

    async def head(self) -> Cursor:
        async with self.store.read() as tx:
            return Cursor(await tx.epoch(), await tx.head())

    async def changes_since(
        self,
        principal: Principal,
        since: Cursor | str,
        queries: Mapping[str, Query],
        *,
        budget: ReadBudget | None = None,
    ) -> Changes:
        """The net effect on ``queries`` of everything committed after ``since``.

        Raises :class:`CursorReset` (another database), :class:`CursorAhead`, or
        :class:`CursorTooOld` (trimmed: take a fresh snapshot).
        """
        since = Cursor.parse(since)
        async with self.store.read() as tx:
            epoch, head, floor = await tx.epoch(), await tx.head(), await tx.floor()
            if since.epoch != epoch:
                raise CursorReset(f"cursor {since} is from another database; reload")
            if since.seq > head:
                raise CursorAhead(f"cursor {since} is ahead of the head {head}")
            if since.seq < floor:
                raise CursorTooOld(f"cursor {since} is older than the retained log (from {floor})")
            entries = await tx.log(since.seq, head) if since.seq < head else []
            out = await self.read_changes(tx, principal, entries, queries, budget)
        return Changes(since, Cursor(epoch, head), out)

    async def read_changes(
        self,
        tx: ReadTx,
        principal: Principal,
        entries: list[LogEntry],
        queries: Mapping[str, Query],
        budget: ReadBudget | None = None,
    ) -> dict[str, list[dict[str, Any]]]:
        """Each query's net effect of ``entries`` (read in ``tx``, up to its head)."""
        current = await current_records(tx, entries)
        out: dict[str, list[dict[str, Any]]] = {}
        for qid, query in queries.items():
            items = query_items(self.schema, principal, query, entries, current)
            if items is None:
                window = await self.run_query(tx, principal, query, budget)
                items = [{"k": "reset", "records": window}]
            out[qid] = items
        return out


class ServerTransaction:
    """Ops written by the application itself, inside one store transaction.

    Reads see the transaction's own earlier ops. Conflicts cannot arise (the server
    writes on top of the latest state), but validation, references and write rules
    apply exactly as for a client.
    """

    def __init__(self, engine: Engine, tx: WriteTx, principal: Principal) -> None:
        self._engine = engine
        self._tx = tx
        self._principal = principal
        self._ops: list[Op] = []
        self.ack: Ack | None = None

    @overload
    async def get(self, collection: str, record_id: str) -> dict[str, Any] | None: ...
    @overload
    async def get(self, collection: type[M], record_id: str) -> M | None: ...
    async def get(self, collection: str | type[M], record_id: str) -> dict[str, Any] | M | None:
        """A live record's fields (with pending ops of this transaction applied), with
        its ``id``; given a model class (``await tx.get(Card, id)``), as an instance."""
        await self._flush()
        if isinstance(collection, str):
            r = await self._tx.get(collection, record_id)
            return None if r is None or r.deleted else {**r.data, "id": r.id}
        name = self._engine.schema.collection_for(collection).name
        r = await self._tx.get(name, record_id)
        return None if r is None or r.deleted else as_model(collection, name, r.id, r.data)

    def apply(self, *ops: Op) -> None:
        self._ops.extend(ops)

    async def _flush(self) -> None:
        if not self._ops:
            return
        ops, self._ops = self._ops, []
        seq = self.ack.seq if self.ack is not None else None
        ack = await self._engine._apply_ops(
            self._tx, self._principal, ops, None, "whole", None, trusted=True, seq=seq
        )
        if ack.seq is not None:  # later flushes reuse the first one's seq: one commit, one seq
            self.ack = ack


def _default_read_key(principal: Principal) -> Hashable:
    try:
        hash(principal)
    except TypeError:
        return ("object", id(principal))
    return ("value", type(principal), principal)


def _mutation_id(obj: Mapping[str, Any]) -> int | None:
    value = obj.get("id") if isinstance(obj, Mapping) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else None


async def current_records(
    tx: ReadTx, entries: list[LogEntry]
) -> dict[tuple[str, str], Record | None]:
    """The records ``entries`` touched, as ``tx`` sees them now (None: gone or trimmed)."""
    current: dict[tuple[str, str], Record | None] = {}
    for cname, ids in touched_keys(entries).items():
        found = await tx.get_many(cname, ids)
        current.update({(cname, i): found.get(i) for i in ids})
    return current
