"""The client-side replica (pure): server state at a cursor, plus pending mutations.

Theory of operation (invariant 8):

* ``server`` holds records exactly as the server sent them, at ``cursor``.
* ``pending`` holds this client's mutations, in id order, not yet reflected in
  ``server``. The replica's view is ``server`` with every pending op applied again on
  top (:func:`syncline.ops.apply_local`), so local edits show at once.
* An ack gives a pending mutation its commit ``seq``; the mutation stays pending until
  ``cursor`` reaches that ``seq`` (the change itself has then arrived), so nothing
  flickers. An ack without ``seq`` (rejected, conflicted, nothing changed) drops it at
  once. A ``manual`` conflict becomes a :class:`Draft` for the user.
* Text edits are kept as (prev, mine) and merged again onto whatever is below them on
  every rebase.

Ops get their bases here: each updated field's base version comes from ``server``
(what the server confirmed), each ``prev`` from the view (what the user saw).
The replica does no I/O: a transport feeds it frames and sends what it returns.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Generic, Literal, NamedTuple, overload

from pydantic import BaseModel

from .cursor import Cursor
from .exceptions import CursorError, InvalidMutation, PolicyViolation, QueryError, SetupError
from .merge import _policy_field
from .model import Collection, M, Schema, as_model
from .ops import Delete, Increment, Insert, Mutation, Op, SetAdd, SetRemove, Update, apply_local
from .query import Query
from .record import Record
from .results import Ack, FieldConflict
from .undo import DEFAULT_PAUSE, History, UndoOutcome, plan, record_effects, typing_key

__all__ = ["Draft", "Entry", "Event", "MutationBuilder", "Pending", "Replica", "typed_query"]

Key = tuple[str, str]


class Entry(NamedTuple, Generic[M]):
    """One row of a typed query: the record's id (which lives beside the model's
    fields) and its fields as a model instance. Unpacks as ``for id, item in ...``."""

    id: str
    record: M


def typed_query(
    schema: Schema, model: type[BaseModel], query: Query | Mapping[str, Any] | None
) -> Query:
    """The query of a typed read: ``model``'s collection, with the ``where``, ``order``
    and ``limit`` of ``query`` (whose ``c``, if given, must be that collection)."""
    name = schema.collection_for(model).name
    if isinstance(query, Query):
        parsed = query
    else:
        wire = dict(query or {})
        wire.setdefault("c", name)
        parsed = Query.parse(wire, schema)
    if parsed.collection != name:
        raise QueryError(
            f"the query reads {parsed.collection!r} but {model.__name__} is the model of {name!r}"
        )
    return parsed


@dataclass
class Pending:
    mutation: Mutation
    seq: int | None = None  # the commit seq from its ack
    acked: bool = False


@dataclass(frozen=True)
class Draft:
    """Edits the server would not apply because a ``manual`` field conflicted.

    ``ops`` is the whole mutation when nothing of it was applied (``whole`` mode), and
    empty when the rest committed (``partial``); :meth:`Replica.resolve` sends them again
    with the user's choices, so no edit of the mutation is lost.
    """

    mutation_id: int
    conflicts: tuple[FieldConflict, ...]
    ops: tuple[Op, ...] = ()


@dataclass(frozen=True)
class Event:
    kind: Literal[
        "changed", "conflict", "overwritten", "merged", "rejected", "dropped", "undo-partial"
    ]
    mutation_id: int | None = None
    keys: tuple[Key, ...] = ()
    fields: tuple[str, ...] = ()
    draft: Draft | None = None
    error: Mapping[str, Any] | None = None
    reason: str | None = None


class Replica:
    def __init__(
        self,
        schema: Schema,
        client_id: str,
        *,
        undo_pause: float = DEFAULT_PAUSE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if undo_pause < 0:
            raise SetupError(f"undo_pause must be >= 0 seconds, got {undo_pause!r}")
        self.schema = schema
        self.client_id = client_id
        self.cursor: Cursor | None = None
        self.server: dict[Key, Record] = {}
        self.pending: list[Pending] = []
        self.drafts: list[Draft] = []
        self.queries: dict[str, Query] = {}
        self._members: dict[str, set[Key]] = {}
        self._next_id = 1
        self._view: dict[Key, Record | None] | None = None
        self.history = History()  # undo and redo of this replica's own edits (syncline.undo)
        self._recording = "user"
        self.undo_pause = undo_pause  # seconds of no typing that end one undo entry
        self.clock = clock

    # --- state from the server --------------------------------------------------------

    def load_snapshot(self, snapshot: Mapping[str, Any]) -> list[Event]:
        """Hydrate from a snapshot (as embedded in a page, or sent after ``sub``)."""
        cursor = Cursor.parse(snapshot["cursor"])
        if self.cursor is not None and cursor.epoch != self.cursor.epoch:
            self.server.clear()
            self._members.clear()
        self.cursor = cursor
        keys: list[Key] = []
        for qid, qwire in snapshot["queries"].items():
            query = Query.parse(qwire, self.schema)
            keys += self._reset_query(qid, query, snapshot["records"].get(qid, []))
        return self._settle(keys)

    def _reset_query(self, qid: str, query: Query, records: list[Mapping[str, Any]]) -> list[Key]:
        old = self._members.pop(qid, set())
        self.queries[qid] = query
        members: set[Key] = set()
        for obj in records:
            key = (query.collection, obj["id"])
            self.server[key] = Record.from_wire(dict(obj))
            members.add(key)
        self._members[qid] = members
        for key in old - members:
            self._drop_if_orphan(key)
        return [*members, *(old - members)]

    def _drop_if_orphan(self, key: Key) -> None:
        if not any(key in m for m in self._members.values()):
            self.server.pop(key, None)

    def apply_changes(self, changes: Mapping[str, Any]) -> list[Event]:
        """Apply a ``changes`` frame: from the replica's cursor to a newer one.

        All or nothing: a frame that does not fit what the replica holds (a patch for a
        record it never received) raises :class:`CursorError` and changes nothing."""
        since, to = Cursor.parse(changes["from"]), Cursor.parse(changes["to"])
        if self.cursor is None or since != self.cursor:
            raise CursorError(
                f"changes from {since} do not follow the replica's cursor {self.cursor}"
            )
        self._check_patches(changes["q"])
        keys: list[Key] = []
        for qid, items in changes["q"].items():
            query = self.queries.get(qid)
            if query is None:
                continue  # an unsubscribed query's late changes
            for item in items:
                keys += self._apply_item(qid, query, item)
        self.cursor = to
        return self._settle(keys)

    def _check_patches(self, queries: Mapping[str, Any]) -> None:
        held = set(self.server)
        for qid, items in queries.items():
            query = self.queries.get(qid)
            if query is None:
                continue
            for item in items:
                if item["k"] == "reset":
                    held |= {(query.collection, r["id"]) for r in item["records"]}
                    continue
                key = (item.get("c", query.collection), item["id"])
                if item["k"] == "enter":
                    held.add(key)
                elif item["k"] == "patch" and key not in held:
                    raise CursorError(f"patch for {key} which this replica does not hold")

    def _apply_item(self, qid: str, query: Query, item: Mapping[str, Any]) -> list[Key]:
        kind = item["k"]
        if kind == "reset":
            return self._reset_query(qid, query, item["records"])
        key = (item.get("c", query.collection), item["id"])
        members = self._members.setdefault(qid, set())
        if kind == "enter":
            self.server[key] = Record.from_wire(dict(item))
            members.add(key)
        elif kind == "patch":
            record = self.server.get(key)
            if record is None:
                raise CursorError(f"patch for {key} which this replica does not hold")
            record.data.update(item["data"])
            record.fv.update(item["fv"])
            record.v, record.inc = item["v"], item["inc"]
        elif kind == "remove":
            members.discard(key)
            self._drop_if_orphan(key)
        return [key]

    def apply_ack(self, ack: Ack | Mapping[str, Any]) -> list[Event]:
        """Settle the mutation ``ack`` answers (an :class:`Ack`, or its wire form)."""
        if not isinstance(ack, Ack):
            ack = Ack.from_wire(ack)
        entry = next((p for p in self.pending if p.mutation.id == ack.mutation_id), None)
        if entry is None:
            return []  # an ack for a mutation already settled (a replay)
        events: list[Event] = []
        entry.acked, entry.seq = True, ack.seq
        self.history.acked(ack.mutation_id, ack.seq, ack.status in ("applied", "duplicate"))
        sent_ops = entry.mutation.ops
        for i, result in enumerate(ack.results):
            if result.status == "dropped" and i < len(sent_ops):
                key = (sent_ops[i].c, sent_ops[i].id)
                events.append(Event("dropped", ack.mutation_id, keys=(key,), reason=result.reason))
            if result.overwritten:
                events.append(
                    Event("overwritten", ack.mutation_id, fields=tuple(result.overwritten))
                )
            if result.merged:
                events.append(Event("merged", ack.mutation_id, fields=tuple(result.merged)))
        if ack.status == "conflict" or any(r.conflicts for r in ack.results):
            conflicts = tuple(c for r in ack.results for c in r.conflicts)
            ops = tuple(entry.mutation.ops) if ack.status == "conflict" else ()
            draft = Draft(ack.mutation_id, conflicts, ops)
            self.drafts.append(draft)
            events.append(Event("conflict", ack.mutation_id, draft=draft))
        if ack.status == "rejected":
            events.append(Event("rejected", ack.mutation_id, error=ack.error))
        keys = [(op.c, op.id) for op in entry.mutation.ops]
        return events + self._settle(keys)

    # --- local writes -----------------------------------------------------------------

    @contextmanager
    def batch(self, mode: Literal["whole", "partial"] = "whole") -> Iterator[MutationBuilder]:
        """Build one mutation from several ops; it is queued when the block exits."""
        builder = MutationBuilder(self)
        yield builder
        if builder.ops:
            builder.mutation = self._queue(builder.ops, mode)

    def _queue(self, ops: list[Op], mode: Literal["whole", "partial"]) -> Mutation:
        base = self.cursor.seq if self.cursor is not None else 0
        mutation = Mutation(id=self._next_id, ops=ops, base=base, mode=mode)
        self._next_id += 1
        effects = record_effects(self, self.view(), ops)
        typing = typing_key(self, effects)
        self.history.record(
            mutation.id, effects, self._recording, typing, self.clock(), self.undo_pause
        )
        self.pending.append(Pending(mutation))
        self._view = None
        return mutation

    def insert(self, collection: str, record_id: str, **fields: Any) -> Mutation:
        return self._one(lambda b: b.insert(collection, record_id, **fields))

    def update(self, collection: str, record_id: str, **fields: Any) -> Mutation:
        return self._one(lambda b: b.update(collection, record_id, **fields))

    def delete(self, collection: str, record_id: str) -> Mutation:
        return self._one(lambda b: b.delete(collection, record_id))

    def increment(self, collection: str, record_id: str, field: str, by: int = 1) -> Mutation:
        return self._one(lambda b: b.increment(collection, record_id, field, by))

    def add(self, collection: str, record_id: str, field: str, *values: str | int) -> Mutation:
        return self._one(lambda b: b.add(collection, record_id, field, *values))

    def remove(self, collection: str, record_id: str, field: str, *values: str | int) -> Mutation:
        return self._one(lambda b: b.remove(collection, record_id, field, *values))

    def resolve(self, draft: Draft, choices: Mapping[str, Any]) -> Mutation | None:
        """Answer a draft: ``choices`` maps each conflicting field to the value to keep
        (a field left out keeps theirs). The answer is a new mutation, based on theirs for
        the chosen fields, carrying the draft's other edits again. None if nothing to send.
        """
        self.drafts = [d for d in self.drafts if d is not draft]
        conflicted = {(c.collection, c.id, c.field): c for c in draft.conflicts if c.field}
        ops: list[Op] = list(draft.ops) or [
            Update(c=c.collection, id=c.id, set={c.field: c.mine})
            for c in conflicted.values()
            if c.field is not None
        ]
        with self.batch() as b:
            for op in ops:
                if not isinstance(op, Update):
                    b._ops_append(op)
                    continue
                fields, base, prev = {}, {}, {}
                for name, mine in op.set.items():
                    c = conflicted.get((op.c, op.id, name))
                    if c is None:
                        fields[name], base[name] = mine, op.base.get(name, 0)
                        if name in op.prev:
                            prev[name] = op.prev[name]
                    elif name in choices:
                        fields[name], base[name], prev[name] = choices[name], c.theirs_v, c.theirs
                if fields:
                    b._ops_append(
                        Update(c=op.c, id=op.id, set=fields, base=base, prev=prev, inc=op.inc)
                    )
        return b.mutation

    # --- undo and redo (syncline.undo) ------------------------------------------------

    @contextmanager
    def undo_group(self) -> Iterator[None]:
        """Every mutation queued inside the block is one undo entry."""
        self.history.begin_group()
        try:
            yield
        finally:
            self.history.end_group()

    @property
    def can_undo(self) -> bool:
        return self.history.can_undo

    @property
    def can_redo(self) -> bool:
        return self.history.can_redo

    def undo(self) -> UndoOutcome | None:
        """Queue the inverse of the newest undo entry (None: nothing to undo)."""
        return self._invert(self.history.undo_stack, "redo")

    def redo(self) -> UndoOutcome | None:
        """Queue the inverse of the newest undo (None: nothing to redo)."""
        return self._invert(self.history.redo_stack, "undo")

    def _invert(self, stack: list[Any], push_to: str) -> UndoOutcome | None:
        if not stack:
            return None
        entry = stack.pop()
        ops, outcome = plan(self, entry, self.history)
        if ops:
            self._recording = push_to
            try:
                outcome.mutation_id = self._queue(ops, "whole").id
            finally:
                self._recording = "user"
        if outcome.conflicts:
            self.drafts.append(Draft(outcome.mutation_id or 0, tuple(outcome.conflicts)))
        return outcome

    def undo_events(self, outcome: UndoOutcome | None) -> list[Event]:
        """The events an undo's outcome raises: ``undo-partial`` naming what it skipped,
        ``conflict`` for each draft it made."""
        if outcome is None:
            return []
        events: list[Event] = []
        if outcome.skipped:
            keys = tuple(dict.fromkeys((s.collection, s.id) for s in outcome.skipped))
            fields = tuple(dict.fromkeys(s.field for s in outcome.skipped if s.field))
            events.append(Event("undo-partial", outcome.mutation_id, keys=keys, fields=fields))
        if outcome.conflicts:
            events.append(Event("conflict", outcome.mutation_id, draft=self.drafts[-1]))
        return events

    def _one(self, build: Any) -> Mutation:
        with self.batch() as b:
            build(b)
        assert b.mutation is not None
        return b.mutation

    @property
    def next_mutation_id(self) -> int:
        """The id the next local mutation gets (persisted clients restore it)."""
        return self._next_id

    @next_mutation_id.setter
    def next_mutation_id(self, value: int) -> None:
        if value < 1:
            raise ValueError("mutation ids start at 1")
        self._next_id = value

    def discard(self, mutation: Mutation) -> None:
        """Take back a queued mutation that was never sent; the last one's id is reused."""
        self.pending = [p for p in self.pending if p.mutation is not mutation]
        self.history.acked(mutation.id, None, applied=False)  # forget its undo entry
        if self._next_id == mutation.id + 1:
            self._next_id = mutation.id
        self._view = None

    def members(self, query_id: str) -> frozenset[Key]:
        """The records the server says a query holds."""
        return frozenset(self._members.get(query_id, ()))

    def held_snapshot(self) -> dict[str, Any] | None:
        """The confirmed data as a snapshot (for :meth:`load_snapshot`); None before the
        replica has a cursor. A client persists this to resume after a restart."""
        if self.cursor is None:
            return None
        records = {
            qid: [
                self.server[k].to_wire()
                for k in sorted(self._members.get(qid, ()))
                if k in self.server
            ]
            for qid in self.queries
        }
        queries = {qid: q.to_wire() for qid, q in self.queries.items()}
        return {"cursor": str(self.cursor), "queries": queries, "records": records}

    def unacked(self) -> list[Mutation]:
        """Mutations to (re)send, in order, after (re)connecting."""
        return [p.mutation for p in self.pending if not p.acked]

    # --- reads ------------------------------------------------------------------------

    def view(self) -> dict[Key, Record | None]:
        if self._view is None:
            view: dict[Key, Record | None] = dict(self.server)
            for p in self.pending:
                for op in p.mutation.ops:
                    coll = self.schema.collections.get(op.c)
                    if coll is not None:
                        view[(op.c, op.id)] = apply_local(coll, view.get((op.c, op.id)), op)
            self._view = view
        return self._view

    @overload
    def get(self, collection: str, record_id: str) -> dict[str, Any] | None: ...
    @overload
    def get(self, collection: type[M], record_id: str) -> M | None: ...
    def get(self, collection: str | type[M], record_id: str) -> dict[str, Any] | M | None:
        """The record as the user sees it (pending edits applied), or None. Given a
        model class instead of a collection name: the record as that model."""
        if isinstance(collection, str):
            r = self.view().get((collection, record_id))
            return None if r is None or r.deleted else {**r.data, "id": r.id}
        name = self.schema.collection_for(collection).name
        r = self.view().get((name, record_id))
        return None if r is None or r.deleted else as_model(collection, name, r.id, r.data)

    @overload
    def query(self, query: Query) -> list[dict[str, Any]]: ...
    @overload
    def query(
        self, query: type[M], where: Query | Mapping[str, Any] | None = None
    ) -> list[Entry[M]]: ...
    def query(
        self, query: Query | type[M], where: Query | Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]] | list[Entry[M]]:
        """The records a query matches, in its order. Given a model class: that model's
        collection, filtered by ``where`` (a query without ``c``), as :class:`Entry` rows."""
        if isinstance(query, Query):
            return self._rows(query)
        q = typed_query(self.schema, query, where)
        entries: list[Entry[M]] = []
        for row in self._rows(q):
            rid = row.pop("id")
            entries.append(Entry(rid, as_model(query, q.collection, rid, row)))
        return entries

    def _rows(self, query: Query) -> list[dict[str, Any]]:
        rows = [
            {**r.data, "id": r.id}
            for (c, _), r in self.view().items()
            if c == query.collection and r is not None and not r.deleted
        ]
        return [dict(r) for r in query.sort([r for r in rows if query.matches(r)])]

    def server_data(self) -> dict[Key, dict[str, Any]]:
        """The confirmed state only: what convergence compares with the server."""
        return {k: dict(r.data) for k, r in self.server.items()}

    # --- internals --------------------------------------------------------------------

    def _settle(self, keys: list[Key]) -> list[Event]:
        """Drop pending mutations the cursor has reached; refresh the view."""
        events: list[Event] = []
        keep: list[Pending] = []
        for p in self.pending:
            reached = p.acked and (
                p.seq is None or (self.cursor is not None and p.seq <= self.cursor.seq)
            )
            if reached:
                keys += [(op.c, op.id) for op in p.mutation.ops]
            else:
                keep.append(p)
        self.pending = keep
        self._view = None
        if keys:
            events.append(Event("changed", keys=tuple(dict.fromkeys(keys))))
        return events


class MutationBuilder:
    """Collects ops for one mutation, filling in bases from the replica."""

    def __init__(self, replica: Replica) -> None:
        self._replica = replica
        self.ops: list[Op] = []
        self.mutation: Mutation | None = None
        self._scratch: dict[Key, Record | None] = {}

    def _current(self, collection: str, record_id: str) -> Record | None:
        key = (collection, record_id)
        if key in self._scratch:
            return self._scratch[key]
        return self._replica.view().get(key)

    def _ops_append(self, op: Op) -> None:
        coll = self._replica.schema.collection(op.c, op.id)
        _refuse_early(coll, op)
        key = (op.c, op.id)
        self._scratch[key] = apply_local(coll, self._current(op.c, op.id), op)
        self.ops.append(op)

    def insert(self, collection: str, record_id: str, **fields: Any) -> None:
        self._ops_append(Insert(c=collection, id=record_id, fields=fields))

    def update(self, collection: str, record_id: str, **fields: Any) -> None:
        self._replica.schema.collection(collection, record_id)  # before "no such record"
        current = self._current(collection, record_id)
        if current is None or current.deleted:
            raise InvalidMutation("no such record here", collection=collection, record_id=record_id)
        confirmed = self._confirmed(collection, record_id)
        base = {f: confirmed.fv.get(f, 0) if confirmed else 0 for f in fields}
        prev = {f: current.data.get(f) for f in fields}
        inc = confirmed.inc if confirmed else None
        self._ops_append(
            Update(c=collection, id=record_id, set=fields, base=base, prev=prev, inc=inc)
        )

    def _confirmed(self, collection: str, record_id: str) -> Record | None:
        """The server's version, unless a pending insert made a new incarnation here
        (whose number only the server knows)."""
        for p in self._replica.pending:
            if any(
                isinstance(o, Insert) and (o.c, o.id) == (collection, record_id)
                for o in p.mutation.ops
            ):
                return None
        if any(isinstance(o, Insert) and (o.c, o.id) == (collection, record_id) for o in self.ops):
            return None
        return self._replica.server.get((collection, record_id))

    def delete(self, collection: str, record_id: str) -> None:
        confirmed = self._confirmed(collection, record_id)
        self._ops_append(
            Delete(c=collection, id=record_id, inc=confirmed.inc if confirmed else None)
        )

    def increment(self, collection: str, record_id: str, field: str, by: int = 1) -> None:
        self._ops_append(Increment(c=collection, id=record_id, field=field, by=by))

    def add(self, collection: str, record_id: str, field: str, *values: str | int) -> None:
        self._ops_append(SetAdd(c=collection, id=record_id, field=field, values=list(values)))

    def remove(self, collection: str, record_id: str, field: str, *values: str | int) -> None:
        base = self._replica.cursor.seq if self._replica.cursor is not None else 0
        self._ops_append(
            SetRemove(c=collection, id=record_id, field=field, values=list(values), base=base)
        )


def _refuse_early(coll: Collection, op: Op) -> None:
    """Refuse here, with the server's own error, what the server would refuse whatever
    the record holds: an unknown field, an op the field's policy forbids. The
    conformance kit's local_refusals.json pins the messages for every client."""
    if isinstance(op, Insert):
        for name in op.fields:
            coll.field(name, op.id)
    elif isinstance(op, Update):
        for name in op.set:
            kind = coll.field(name, op.id).kind
            where = {"collection": coll.name, "record_id": op.id, "field": name}
            if kind == "counter":  # merge.py's words (_update)
                raise PolicyViolation("a counter changes only by increments: use incr", **where)
            if kind == "set":
                raise PolicyViolation("a set changes only by add and remove", **where)
    elif isinstance(op, Increment):
        _policy_field(coll, op, "counter")
    elif isinstance(op, SetAdd | SetRemove):
        _policy_field(coll, op, "set")
