"""Undo and redo of a replica's own mutations, by merge policy (pure, no I/O).

Theory of operation: when the replica queues a mutation the user made, :class:`History`
records its *effects* against the view it was made on: for a plain field the value
before and after, for a counter the increment, for a set the elements it really added
and removed, for an insert or a delete the record. One user action (a group) is one
entry. Undo turns the top entry into a new, ordinary mutation built against the state
the replica knows now, field by field:

* ``lww`` and custom fields: the old value comes back only if nobody else changed the
  field since (its confirmed version ``fv`` is one of this client's commits, and its
  value is still the entry's); otherwise the field is *skipped* and named.
* ``manual``: as ``lww``, but a field someone else changed comes back as a
  :class:`~syncline.replica.Draft` (base: the value after my change, mine: the value
  before it, theirs: now) instead of being skipped.
* ``text``: the inverse edit merged onto the current text, ``merge3(after, before,
  now)``, so others' later typing stays.
* ``counter``: the opposite increment.
* ``set``: a remove of the elements the entry added, based on the entry's commit so the
  server keeps any element another client added since; a re-add of the elements it
  removed, skipped (and named) when another client changed the set since.
* insert: a delete; delete: an insert of the last incarnation's data (references are
  checked by the server as for any insert).

Typing coalesces: consecutive entries that each change only the same ``text`` (or
``lww`` string) field of the same record, made outside any explicit group and within
``pause`` seconds of each other, become one entry (the first one's before, the last
one's after), so one undo takes back a burst of keystrokes. Any other entry, an undo or
redo, or a group ends the burst. The caller passes the time (an injected clock).

The undo's own effects become a redo entry, and a redo's an undo entry. Both stacks are
bounded (``DEFAULT_LIMIT``) and JSON-serializable, so a client keeps them with its
pending queue. "This client's commits" are the ``seq`` of every ack of its mutations.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .model import Collection, set_key
from .ops import Delete, Increment, Insert, Op, SetAdd, SetRemove, Update, apply_local
from .record import Record
from .results import FieldConflict

if TYPE_CHECKING:
    from .replica import Replica

__all__ = ["DEFAULT_LIMIT", "DEFAULT_PAUSE", "Effect", "History", "Skipped", "UndoOutcome"]

DEFAULT_LIMIT = 100
"""Entries each stack keeps; the oldest are forgotten first."""

DEFAULT_PAUSE = 1.0
"""Seconds of no typing that end a burst of keystrokes (one undo entry per burst)."""

Effect = dict[str, Any]
"""One recorded effect (JSON): ``{"k": kind, "c", "id", ...}``; kinds ``field``
(``f``, ``before``, ``after``), ``incr`` (``f``, ``by``), ``set`` (``f``, ``added``,
``removed``), ``insert``, ``delete`` (``data``)."""


@dataclass(frozen=True)
class Skipped:
    """A part of an entry the undo left alone, and why."""

    collection: str
    id: str
    field: str | None
    reason: str

    def to_wire(self) -> dict[str, Any]:
        return {"c": self.collection, "id": self.id, "field": self.field, "reason": self.reason}


@dataclass
class UndoOutcome:
    """What an undo (or redo) did: the mutation it queued (None if nothing was left to
    send), the parts it skipped because someone else changed them, the drafts it made."""

    mutation_id: int | None = None
    skipped: list[Skipped] = field(default_factory=list)
    conflicts: list[FieldConflict] = field(default_factory=list)

    @property
    def partial(self) -> bool:
        return bool(self.skipped or self.conflicts)


def record_effects(
    replica: Replica, view: Mapping[tuple[str, str], Record | None], ops: Iterable[Op]
) -> list[Effect]:
    """The effects of ``ops`` applied in turn to ``view`` (the state the user saw)."""
    scratch: dict[tuple[str, str], Record | None] = {}
    effects: list[Effect] = []
    for op in ops:
        coll = replica.schema.collections.get(op.c)
        if coll is None:
            continue
        key = (op.c, op.id)
        before = scratch[key] if key in scratch else view.get(key)
        after = apply_local(coll, before, op)
        scratch[key] = after
        effects += _effects(coll, op, before, after)
    return effects


def typing_key(replica: Replica, effects: list[Effect]) -> tuple[str, str, str] | None:
    """The (collection, id, field) a typing entry changes: one ``field`` effect of a
    ``text`` or ``lww`` field from a string to a string; None for anything else."""
    if len(effects) != 1 or effects[0]["k"] != "field":
        return None
    e = effects[0]
    if not (isinstance(e["before"], str) and isinstance(e["after"], str)):
        return None
    coll = replica.schema.collections.get(e["c"])
    if coll is None:
        return None
    if coll.field(e["f"], e["id"]).kind not in ("text", "lww"):
        return None
    return (e["c"], e["id"], e["f"])


def _live(record: Record | None) -> bool:
    return record is not None and not record.deleted


def _effects(coll: Collection, op: Op, before: Record | None, after: Record | None) -> list[Effect]:
    at = {"c": op.c, "id": op.id}
    if isinstance(op, Insert):
        return [{"k": "insert", **at}] if not _live(before) and _live(after) else []
    if not _live(before) or before is None or after is None:
        return []
    if isinstance(op, Delete):
        return [{"k": "delete", **at, "data": dict(before.data)}]
    if isinstance(op, Update):
        out = []
        for name in op.set:
            old, new = before.data.get(name), after.data.get(name)
            if old != new:
                out.append({"k": "field", **at, "f": name, "before": old, "after": new})
        return out
    if isinstance(op, Increment):
        return [{"k": "incr", **at, "f": op.field, "by": op.by}] if op.by else []
    if isinstance(op, SetAdd | SetRemove):
        had = {set_key(v) for v in before.data.get(op.field) or []}
        has = {set_key(v) for v in after.data.get(op.field) or []}
        added = [v for v in op.values if set_key(v) in has - had] if isinstance(op, SetAdd) else []
        removed = (
            [v for v in op.values if set_key(v) in had - has] if isinstance(op, SetRemove) else []
        )
        if added or removed:
            return [{"k": "set", **at, "f": op.field, "added": added, "removed": removed}]
    return []


@dataclass
class _Entry:
    mids: list[int]
    effects: list[Effect]

    def to_wire(self) -> dict[str, Any]:
        return {"mids": self.mids, "effects": self.effects}


class History:
    """A replica's undo and redo stacks, and the commits that are its own."""

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        if limit < 1:
            raise ValueError("an undo history keeps at least one entry")
        self.limit = limit
        self.undo_stack: list[_Entry] = []
        self.redo_stack: list[_Entry] = []
        self.seqs: dict[int, int | None] = {}  # mutation id -> commit seq (None: not yet)
        self.mine: set[int] = set()  # seqs of this client's commits
        self._group: _Entry | None = None
        self._depth = 0
        # The typing burst the top undo entry holds: (its entry, field key, last time).
        self._burst: tuple[_Entry, tuple[str, str, str], float] | None = None

    @property
    def can_undo(self) -> bool:
        return bool(self.undo_stack)

    @property
    def can_redo(self) -> bool:
        return bool(self.redo_stack)

    # --- recording --------------------------------------------------------------------

    def begin_group(self) -> None:
        self._burst = None
        self._depth += 1
        if self._depth == 1:
            self._group = _Entry([], [])

    def end_group(self) -> None:
        self._depth -= 1
        if self._depth == 0 and self._group is not None:
            group, self._group = self._group, None
            if group.effects:
                self._push(self.undo_stack, group)
                self.redo_stack.clear()

    def record(
        self,
        mutation_id: int,
        effects: list[Effect],
        stack: str = "user",
        typing: tuple[str, str, str] | None = None,
        at: float = 0.0,
        pause: float = 0.0,
    ) -> None:
        """Note a queued mutation's effects: a user action (``user``; clears the redo
        stack), an undo (``redo``: pushed on the redo stack) or a redo (``undo``).
        ``typing`` (see :func:`typing_key`) at time ``at`` joins the burst on top of
        the undo stack when it is the same field and less than ``pause`` later."""
        if not effects:
            return
        self.seqs[mutation_id] = None
        if stack == "user" and self._group is not None:
            self._group.mids.append(mutation_id)
            self._group.effects += effects
            return
        burst, self._burst = self._burst, None
        if (
            stack == "user"
            and typing is not None
            and burst is not None
            and self.undo_stack
            and self.undo_stack[-1] is burst[0]
            and burst[1] == typing
            and 0 <= at - burst[2] < pause
        ):
            top = burst[0]
            top.mids.append(mutation_id)
            top.effects[0] = {**top.effects[0], "after": effects[0]["after"]}
            self._burst = (top, typing, at)
            self.redo_stack.clear()
            return
        entry = _Entry([mutation_id], effects)
        if stack == "user" and typing is not None:
            self._burst = (entry, typing, at)
        if stack == "redo":
            self._push(self.redo_stack, entry)
            return
        self._push(self.undo_stack, entry)
        if stack == "user":
            self.redo_stack.clear()

    def _push(self, stack: list[_Entry], entry: _Entry) -> None:
        stack.append(entry)
        del stack[: max(0, len(stack) - self.limit)]
        self._prune()

    def acked(self, mutation_id: int, seq: int | None, applied: bool) -> None:
        """An ack: remember the commit, or forget a mutation the server did not apply."""
        if seq is not None:
            self.mine.add(seq)
        if mutation_id not in self.seqs:
            return
        if applied and seq is not None:
            self.seqs[mutation_id] = seq
            return
        for stack in (self.undo_stack, self.redo_stack):
            for entry in stack:
                if mutation_id in entry.mids:
                    entry.mids.remove(mutation_id)
                    if not entry.mids:
                        entry.effects.clear()
            stack[:] = [e for e in stack if e.mids]
        self.seqs.pop(mutation_id, None)

    def _prune(self) -> None:
        live = {m for s in (self.undo_stack, self.redo_stack) for e in s for m in e.mids}
        if self._group is not None:
            live |= set(self._group.mids)
        self.seqs = {m: s for m, s in self.seqs.items() if m in live}
        known = [s for s in self.seqs.values() if s is not None]
        if not live:
            self.mine.clear()
        elif known:
            oldest = min(known)
            self.mine = {s for s in self.mine if s >= oldest}

    # --- persistence ------------------------------------------------------------------

    def to_wire(self) -> dict[str, Any]:
        return {
            "limit": self.limit,
            "undo": [e.to_wire() for e in self.undo_stack],
            "redo": [e.to_wire() for e in self.redo_stack],
            "seqs": [[m, s] for m, s in self.seqs.items()],
            "mine": sorted(self.mine),
        }

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> History:
        history = cls(int(obj.get("limit", DEFAULT_LIMIT)))
        history.undo_stack = [_Entry(list(e["mids"]), list(e["effects"])) for e in obj["undo"]]
        history.redo_stack = [_Entry(list(e["mids"]), list(e["effects"])) for e in obj["redo"]]
        history.seqs = {int(m): s for m, s in obj["seqs"]}
        history.mine = set(obj["mine"])
        return history

    # --- undoing ----------------------------------------------------------------------

    def confirmed(self, entry: _Entry, cursor_seq: int) -> int | None:
        """The entry's newest commit seq once the replica has caught up with all of
        them; None while one is still pending (then nobody's change since is known)."""
        seqs = [self.seqs.get(m) for m in entry.mids]
        if not seqs or any(s is None or s > cursor_seq for s in seqs):
            return None
        return max(s for s in seqs if s is not None)


def plan(replica: Replica, entry: _Entry, history: History) -> tuple[list[Op], UndoOutcome]:
    """The ops that invert ``entry`` against what the replica knows now."""
    from .replica import MutationBuilder

    cursor_seq = replica.cursor.seq if replica.cursor is not None else 0
    committed = history.confirmed(entry, cursor_seq)
    outcome = UndoOutcome()
    builder = MutationBuilder(replica)
    inserted: set[tuple[str, str]] = set()  # records this entry inserted (undone whole)
    restored: set[tuple[str, str]] = set()  # records this undo inserts again
    effects = list(entry.effects)
    for e in effects:
        if e["k"] == "insert":
            inserted.add((e["c"], e["id"]))
    for e in reversed(effects):
        key = (e["c"], e["id"])
        if key in inserted and e["k"] != "insert":
            continue
        current = builder._current(*key)
        if e["k"] == "insert":
            if _live(current):
                builder.delete(*key)
            continue
        if e["k"] == "delete":
            if _live(current):
                outcome.skipped.append(Skipped(*key, None, "re-created since"))
            else:
                builder.insert(*key, **e["data"])
                restored.add(key)
            continue
        if not _live(current) or current is None:
            outcome.skipped.append(Skipped(*key, e.get("f"), "deleted since"))
            continue
        fresh = key in restored
        _invert(replica, builder, e, current, committed, history, fresh, outcome)
    return builder.ops, outcome


def _invert(
    replica: Replica,
    builder: Any,
    e: Effect,
    current: Record,
    committed: int | None,
    history: History,
    fresh: bool,
    outcome: UndoOutcome,
) -> None:
    c, rid, name = e["c"], e["id"], e["f"]
    spec = replica.schema.collection(c, rid).field(name, rid)
    conf = replica.server.get((c, rid))
    version = conf.fv.get(name, 0) if conf is not None else 0
    # Not live on the server: only a pending insert of mine (an undone delete) has it.
    fresh = fresh or conf is None or conf.deleted
    # Someone else changed the field since: its confirmed version is not one of mine.
    others = not fresh and committed is not None and version not in history.mine
    now = current.data.get(name)
    if e["k"] == "incr":
        builder.increment(c, rid, name, -e["by"])
        return
    if e["k"] == "set":
        here = {set_key(v) for v in now or []}
        drop = [v for v in e["added"] if set_key(v) in here]
        if drop:
            base = (
                committed
                if committed is not None
                else (replica.cursor.seq if replica.cursor else 0)
            )
            builder._ops_append(SetRemove(c=c, id=rid, field=name, values=drop, base=base))
        back = [v for v in e["removed"] if set_key(v) not in here]
        if back and others:
            outcome.skipped.append(Skipped(c, rid, name, "changed by someone else since"))
        elif back:
            builder.add(c, rid, name, *back)
        return
    if spec.kind == "text" and isinstance(now, str):
        before, after = e["before"], e["after"]
        if isinstance(before, str) and isinstance(after, str):
            from .textmerge import merge3

            value = merge3(after, before, now)
            if value != now:
                builder.update(c, rid, **{name: value})
            return
    moved = not fresh and (others or now != e["after"])
    if not moved:
        if now != e["before"]:
            builder.update(c, rid, **{name: e["before"]})
        return
    if now == e["before"]:
        return  # already back where the entry started
    if spec.kind == "manual":
        outcome.conflicts.append(FieldConflict(c, rid, name, e["after"], e["before"], now, version))
        return
    outcome.skipped.append(Skipped(c, rid, name, "changed by someone else since"))
