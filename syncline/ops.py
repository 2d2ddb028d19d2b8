"""Operations, mutations, and the optimistic (client-side) application of an op.

An op names a collection and a record id. On the wire each op is a JSON object
tagged by ``op``::

    {"op": "insert", "c": "cards", "id": "…", "fields": {"title": "a"}}
    {"op": "update", "c": "cards", "id": "…", "inc": 1,
     "set": {"title": "b"}, "base": {"title": 7}, "prev": {"title": "a"}}
    {"op": "delete", "c": "cards", "id": "…", "inc": 1}
    {"op": "incr", "c": "cards", "id": "…", "field": "votes", "by": 1}
    {"op": "add", "c": "cards", "id": "…", "field": "labels", "values": ["bug"]}
    {"op": "remove", "c": "cards", "id": "…", "field": "labels", "values": ["bug"], "base": 9}

``update.base`` holds, per field, the field version the edit was based on (the
client's confirmed server state); ``update.prev`` holds the value the client saw when
it made the edit (its optimistic value): text fields need it to merge, manual and
custom fields to show and compute the base. ``remove.base`` is the cursor ``seq`` the
client had seen. The authoritative resolution of ops is :mod:`syncline.merge`; this
module's :func:`apply_local` is the optimistic version a replica uses.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from .exceptions import InvalidMutation
from .model import Collection, set_key, sort_set
from .record import Record
from .textcheck import name_problem, printable
from .textmerge import merge3

__all__ = [
    "Delete",
    "Increment",
    "Insert",
    "Mutation",
    "Op",
    "SetAdd",
    "SetRemove",
    "Update",
    "apply_local",
    "parse_mutation",
    "parse_op",
]


def _clean_name(value: str) -> str:
    """Refuse U+0000 and lone surrogates in a name (:mod:`syncline.textcheck`)."""
    problem = name_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


FieldName = Annotated[StrictStr, AfterValidator(_clean_name)]


def _clean_element(value: str | int) -> str | int:
    return _clean_name(value) if isinstance(value, str) else value


SetElement = Annotated[StrictStr | StrictInt, AfterValidator(_clean_element)]
"""Set elements are keys too (of the adds each element remembers)."""
RecordId = Annotated[StrictStr, Field(min_length=1, max_length=128), AfterValidator(_clean_name)]
CollectionName = Annotated[
    StrictStr, Field(min_length=1, max_length=64), AfterValidator(_clean_name)
]


class _Op(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    c: CollectionName
    id: RecordId


class Insert(_Op):
    op: Literal["insert"] = "insert"
    fields: dict[FieldName, Any]


class Update(_Op):
    op: Literal["update"] = "update"
    set: dict[FieldName, Any]
    base: dict[FieldName, StrictInt] = Field(default_factory=dict)
    prev: dict[FieldName, Any] = Field(default_factory=dict)
    inc: StrictInt | None = None


class Delete(_Op):
    op: Literal["delete"] = "delete"
    inc: StrictInt | None = None


class Increment(_Op):
    op: Literal["incr"] = "incr"
    field: FieldName
    by: StrictInt = 1


class SetAdd(_Op):
    op: Literal["add"] = "add"
    field: FieldName
    values: list[SetElement]


class SetRemove(_Op):
    op: Literal["remove"] = "remove"
    field: FieldName
    values: list[SetElement]
    base: StrictInt = 0


Op = Annotated[Insert | Update | Delete | Increment | SetAdd | SetRemove, Field(discriminator="op")]


class Mutation(BaseModel):
    """One client mutation: applied whole or not at all (invariant 5).

    ``id`` counts 1, 2, 3 … per client id (invariant 3). ``mode`` ``"partial"`` lets
    the non-conflicting ops of a mutation commit when a ``manual`` field conflicts.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)
    id: Annotated[StrictInt, Field(ge=1)]
    ops: Annotated[list[Op], Field(min_length=1, max_length=500)]
    base: StrictInt = 0
    mode: Literal["whole", "partial"] = "whole"


_op_adapter: TypeAdapter[Op] = TypeAdapter(Op)


def _refusal(exc: ValidationError, what: str) -> InvalidMutation:
    err = exc.errors()[0]
    # a location may hold a refused name (a dict key): escaped, so the kept ack stores
    loc = printable(".".join(str(p) for p in err.get("loc", ())))
    return InvalidMutation(f"malformed {what}: {loc or 'value'}: {err.get('msg')}")


def parse_op(obj: Any) -> Op:
    """Decode one op from JSON-ready data, or raise :class:`InvalidMutation`."""
    try:
        return _op_adapter.validate_python(obj)
    except ValidationError as exc:
        raise _refusal(exc, "op") from None


def parse_mutation(obj: Any) -> Mutation:
    """Decode a mutation from JSON-ready data, or raise :class:`InvalidMutation`."""
    try:
        return Mutation.model_validate(obj)
    except ValidationError as exc:
        raise _refusal(exc, "mutation") from None


def apply_local(coll: Collection, record: Record | None, op: Op) -> Record | None:
    """Apply ``op`` optimistically to a replica's view of a record.

    Mine wins locally; the server's answer replaces this later. An op that no longer
    makes sense locally (its record has gone) is skipped; the server will say why.
    """
    if isinstance(op, Insert):
        if record is not None and not record.deleted:
            return record
        try:
            data = coll.validate(op.id, op.fields)
        except InvalidMutation:
            data = dict(op.fields)  # shown as typed; the server's refusal will follow
        inc = record.inc + 1 if record is not None else 1
        return Record(id=op.id, data=data, inc=inc)
    if record is None or record.deleted:
        return record
    if isinstance(op, Delete):
        out = record.copy()
        out.deleted = True
        return out
    out = record.copy()
    if isinstance(op, Update):
        if op.inc is not None and op.inc != record.inc:
            return record
        for name, mine in op.set.items():
            spec = coll.fields.get(name)
            if spec is None or spec.kind in ("counter", "set"):
                continue
            current = out.data.get(name)
            if spec.kind == "text" and isinstance(mine, str) and isinstance(current, str):
                prev = op.prev.get(name, current)
                out.data[name] = merge3(prev if isinstance(prev, str) else current, mine, current)
            else:
                out.data[name] = mine
    elif isinstance(op, Increment):
        current = out.data.get(op.field)
        out.data[op.field] = (current if isinstance(current, int) else 0) + op.by
    elif isinstance(op, SetAdd):
        out.data[op.field] = sort_set([*(out.data.get(op.field) or []), *op.values])
    elif isinstance(op, SetRemove):
        drop = {set_key(v) for v in op.values}
        out.data[op.field] = [e for e in out.data.get(op.field) or [] if set_key(e) not in drop]
    return out
