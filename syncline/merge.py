"""Authoritative resolution of one op against the committed record (pure).

This is the conflict model of docs/design.md, field by field:

* A field *moved on* when its version is newer than the base the op names **and** its
  last writer is another client: a client's own earlier mutations are never its
  conflicts (``Record.fw`` remembers the writer).
* ``lww``: mine wins; if the field moved on, the result names it as overwritten.
* ``counter``: only increments, which always apply; a plain update is refused.
* ``text``: three-way merge of prev (the text the edit was made on), mine and theirs.
* ``set``: add-wins; a remove drops an element only if its latest add is at or before
  the remove's base ``seq``, or was made by the same client.
* ``manual`` and custom functions returning :class:`~syncline.model.Conflict`: a
  conflict (base, mine, theirs, theirs' version) for the user.
* An update of a deleted record (or an older incarnation): dropped under
  ``delete-wins``, a conflict under ``manual``. A tombstone keeps the record's
  queryable fields (what read rules see) and nothing else.

The caller (the engine) decides what a conflict does to the whole mutation, validates
the merged record against its model, checks references and rules, and writes.
"""

from __future__ import annotations

import logging
from typing import Any

from .exceptions import InvalidMutation, PolicyViolation, RecordExists, RecordNotFound
from .model import Collection, Conflict, Merge, set_key, sort_set
from .ops import Delete, Increment, Insert, Op, SetAdd, SetRemove, Update
from .record import Record
from .results import FieldConflict, OpResult
from .textmerge import merge3

__all__ = ["resolve"]

log = logging.getLogger("syncline.merge")


def resolve(
    coll: Collection,
    current: Record | None,
    op: Op,
    *,
    seq: int,
    writer: str | None,
    trusted: bool = False,
) -> tuple[Record | None, OpResult]:
    """Resolve ``op`` against ``current``; return the new record (None: unchanged).

    ``trusted`` ops come from the server's own transactions: a field without a base
    is written as a blind update of the latest value.
    """
    if isinstance(op, Insert):
        return _insert(coll, current, op, seq, writer), OpResult()
    where = {"collection": coll.name, "record_id": op.id}
    if current is None:
        raise RecordNotFound("no such record", **where)
    if isinstance(op, Delete):
        if current.deleted:
            return None, OpResult("dropped", reason="already deleted")
        if op.inc is not None and op.inc < current.inc:
            return None, OpResult("dropped", reason="an older incarnation was deleted")
        out = current.copy()
        out.deleted = True
        # The tombstone keeps what read rules see, so an answer about it can depend on
        # whether the principal may read it (invariant 10).
        out.data = {n: current.data[n] for n in coll.queryable if n in current.data}
        out.adds = {}
        out.v = seq
        return out, OpResult()
    inc = getattr(op, "inc", None)
    stale = current.deleted or (inc is not None and inc < current.inc)
    if stale:
        return _against_deleted(coll, current, op)
    out = current.copy()
    if isinstance(op, Update):
        result = _update(coll, current, out, op, seq, writer, trusted)
    elif isinstance(op, Increment):
        result = _increment(coll, out, op, seq, writer)
    elif isinstance(op, SetAdd):
        result = _set_add(coll, out, op, seq, writer)
    else:
        result = _set_remove(coll, out, op, seq, writer)
    if out.fv == current.fv and out.data == current.data:
        return None, result
    out.v = seq
    return out, result


def _insert(
    coll: Collection, current: Record | None, op: Insert, seq: int, writer: str | None
) -> Record:
    if current is not None and not current.deleted:
        raise RecordExists(
            "a live record already has this id", collection=coll.name, record_id=op.id
        )
    data = coll.validate(op.id, op.fields)
    adds = {
        name: {set_key(e): [seq, writer] for e in data[name] or []}
        for name, spec in coll.fields.items()
        if spec.kind == "set"
    }
    return Record(
        id=op.id,
        data=data,
        inc=current.inc + 1 if current is not None else 1,
        v=seq,
        fv=dict.fromkeys(data, seq),
        fw=dict.fromkeys(data, writer),
        adds=adds,
    )


def _against_deleted(coll: Collection, current: Record, op: Op) -> tuple[None, OpResult]:
    if coll.on_update_deleted == "delete-wins":
        return None, OpResult("dropped", reason="the record was deleted")
    mine: Any = op.model_dump(exclude={"c", "id"})
    conflict = FieldConflict(coll.name, op.id, None, None, mine, None, current.v)
    return None, OpResult("conflict", conflicts=[conflict])


def _moved_on(record: Record, name: str, base: int, writer: str | None) -> bool:
    return record.fv.get(name, 0) > base and record.fw.get(name) != writer


def _update(
    coll: Collection,
    current: Record,
    out: Record,
    op: Update,
    seq: int,
    writer: str | None,
    trusted: bool,
) -> OpResult:
    result = OpResult()
    for name, mine in op.set.items():
        spec = coll.field(name, op.id)
        where = {"collection": coll.name, "record_id": op.id, "field": name}
        if spec.kind == "counter":
            raise PolicyViolation("a counter changes only by increments: use incr", **where)
        if spec.kind == "set":
            raise PolicyViolation("a set changes only by add and remove", **where)
        if name in op.base:
            moved = _moved_on(current, name, op.base[name], writer)
        elif trusted:
            moved = False
        else:
            raise InvalidMutation("update needs the field version it was based on (base)", **where)
        theirs = current.data.get(name)
        value = mine
        if spec.kind == "text":
            if name in op.prev:
                prev = op.prev[name]
            elif trusted:
                prev = theirs
            else:
                raise InvalidMutation("a text update needs the text it was made on (prev)", **where)
            if isinstance(prev, str) and isinstance(mine, str) and isinstance(theirs, str):
                value = merge3(prev, mine, theirs)
                if theirs != prev and value != mine:
                    result.merged.append(name)
        elif moved and mine != theirs:
            if spec.kind == "manual":
                _conflict(result, coll, op, name, mine, theirs, current)
                continue
            if isinstance(spec.policy, Merge):
                if name not in op.prev:
                    raise InvalidMutation(
                        "a custom-merged update needs its base value (prev)", **where
                    )
                # The function is the application's: give it values of the field's type,
                # and turn its failure into a refusal that names it, not a crash.
                coll.validate(op.id, {**current.data, name: mine})
                try:
                    value = spec.policy.fn(op.prev[name], mine, theirs)
                except Exception as exc:
                    log.exception("merge function of %s.%s raised", coll.name, name)
                    raise InvalidMutation(
                        f"the field's merge function failed ({type(exc).__name__}); "
                        "the server logged it",
                        **where,
                    ) from None
                if isinstance(value, Conflict):
                    _conflict(result, coll, op, name, mine, theirs, current)
                    continue
            else:
                result.overwritten.append(name)
        if value != theirs or name not in current.data:
            out.data[name] = value
            out.fv[name] = seq
            out.fw[name] = writer
    return result


def _conflict(
    result: OpResult,
    coll: Collection,
    op: Update,
    name: str,
    mine: Any,
    theirs: Any,
    current: Record,
) -> None:
    result.status = "conflict"
    result.conflicts.append(
        FieldConflict(
            coll.name, op.id, name, op.prev.get(name), mine, theirs, current.fv.get(name, 0)
        )
    )


def _policy_field(coll: Collection, op: Increment | SetAdd | SetRemove, kind: str) -> None:
    spec = coll.field(op.field, op.id)
    if spec.kind != kind:
        raise PolicyViolation(
            f"{op.op} needs a {kind} field; this one is {spec.kind}",
            collection=coll.name,
            record_id=op.id,
            field=op.field,
        )


def _increment(
    coll: Collection, out: Record, op: Increment, seq: int, writer: str | None
) -> OpResult:
    _policy_field(coll, op, "counter")
    current = out.data.get(op.field)
    out.data[op.field] = (current if isinstance(current, int) else 0) + op.by
    out.fv[op.field] = seq
    out.fw[op.field] = writer
    return OpResult()


def _set_add(coll: Collection, out: Record, op: SetAdd, seq: int, writer: str | None) -> OpResult:
    _policy_field(coll, op, "set")
    adds = out.adds.setdefault(op.field, {})
    values = list(out.data.get(op.field) or [])
    for value in op.values:
        key = set_key(value)
        if key not in adds:
            values.append(value)
        adds[key] = [seq, writer]  # the latest add wins over removes that did not see it
    out.data[op.field] = sort_set(values)
    out.fv[op.field] = seq
    out.fw[op.field] = writer
    return OpResult()


def _set_remove(
    coll: Collection, out: Record, op: SetRemove, seq: int, writer: str | None
) -> OpResult:
    _policy_field(coll, op, "set")
    adds = out.adds.setdefault(op.field, {})
    kept: list[str] = []
    drop: set[str] = set()
    for value in op.values:
        key = set_key(value)
        meta = adds.get(key)
        if meta is None:
            continue
        added_at, adder = meta
        if added_at <= op.base or adder == writer:
            drop.add(key)
            del adds[key]
        else:
            kept.append(key)
    if drop:
        out.data[op.field] = [e for e in out.data.get(op.field) or [] if set_key(e) not in drop]
        out.fv[op.field] = seq
        out.fw[op.field] = writer
    result = OpResult()
    if kept:
        result.reason = f"kept {len(kept)} element(s) added concurrently"
    return result
