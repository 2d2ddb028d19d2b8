"""The application's data model: collections of Pydantic records, with a merge policy,
query flag and reference target per field, and the rules that guard them.

A schema reads like ordinary Pydantic; syncline's part is a few ``Annotated`` markers::

    class Card(BaseModel):
        list_id: Annotated[str, Ref("lists"), Queryable()]
        title: str = ""                                  # lww, the default
        description: Annotated[str, Text()] = ""         # three-way text merge
        votes: Annotated[int, Counter()] = 0             # increments
        labels: Annotated[frozenset[str], Set()] = frozenset()  # add-wins set
        status: Annotated[str, Manual()] = "todo"        # the user decides

    schema = Schema([Collection("lists", List), Collection("cards", Card)])

Record ids are strings that live beside the model's fields (``id`` is not a model
field); clients may make their own with :func:`new_id`.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from .exceptions import InvalidMutation, QueryError, SchemaError

if TYPE_CHECKING:
    from .query import Query

__all__ = [
    "LWW",
    "Collection",
    "Conflict",
    "Counter",
    "FieldSpec",
    "Manual",
    "Merge",
    "Queryable",
    "ReadFilter",
    "ReadRule",
    "Ref",
    "Schema",
    "Set",
    "Text",
    "WriteRule",
    "new_id",
]

log = logging.getLogger("syncline.model")

M = TypeVar("M", bound=BaseModel)

Principal = Any
"""Whatever the application uses to say who is asking (a user object, a dict, an id)."""

ReadRule = Callable[[Principal, Mapping[str, Any]], bool]
"""``(principal, record) -> bool``; ``record`` holds ``id`` and the queryable fields only,
so the same decision can be made from a change log's before-image. A snapshot under a
callable rule reads every row the query's filter matches and asks the rule about each
one in Python (at most ``Limits.max_scan_rows`` per request): prefer :data:`ReadFilter`."""

ReadFilter = Callable[[Principal], Mapping[str, Any] | None]
"""``principal -> where``: the records the principal may read, as a query's ``where``
on ``id`` and queryable fields (``{"owner": p.id}``), or None for none. The engine ANDs
it into every query of the collection, so the store filters, orders and limits (one
``limit 1`` query reads one row); changes are matched against it in Python."""

WriteRule = Callable[[Principal, Mapping[str, Any] | None, Mapping[str, Any] | None], bool]
"""``(principal, before, after) -> bool``; ``None`` for a record that does not exist
(before an insert, after a delete). Both sides must be allowed (invariant 10)."""


# --- field markers -------------------------------------------------------------------


@dataclass(frozen=True)
class Conflict:
    """Returned by a custom merge function when it cannot decide: the user must."""

    reason: str = "concurrent edits"


@dataclass(frozen=True)
class _Policy:
    name: str = "lww"


@dataclass(frozen=True)
class LWW(_Policy):
    """Last writer wins (the default): the later arrival wins, and the ack says so."""

    name: str = "lww"


@dataclass(frozen=True)
class Counter(_Policy):
    """An integer changed only by increments, which all apply, in any order."""

    name: str = "counter"


@dataclass(frozen=True)
class Text(_Policy):
    """A string merged three ways (base, mine, theirs), offsets in Unicode code points."""

    name: str = "text"


@dataclass(frozen=True)
class Set(_Policy):
    """An add-wins set of strings or integers: a remove drops only adds it has seen."""

    name: str = "set"


@dataclass(frozen=True)
class Manual(_Policy):
    """Concurrent edits come back to the user as base / mine / theirs."""

    name: str = "manual"


@dataclass(frozen=True, init=False)
class Merge(_Policy):
    """A custom merge: ``fn(base, mine, theirs) -> value | Conflict``."""

    fn: Callable[[Any, Any, Any], Any] = field(default=lambda b, m, t: m)

    def __init__(self, fn: Callable[[Any, Any, Any], Any]) -> None:
        object.__setattr__(self, "fn", fn)
        object.__setattr__(self, "name", "custom")


@dataclass(frozen=True)
class Queryable:
    """Clients may filter and order on this field; stores index it."""


@dataclass(frozen=True)
class Ref:
    """The field holds the id of a record in ``collection``; checked on every write."""

    collection: str


# --- collections and schema ----------------------------------------------------------

_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class FieldSpec:
    name: str
    policy: _Policy
    required: bool
    queryable: bool
    ref: str | None
    type_name: str

    @property
    def kind(self) -> str:
        return self.policy.name


@dataclass
class Collection:
    """A named set of records sharing one Pydantic model.

    ``on_update_deleted`` says what an update of a deleted record does: under
    ``"delete-wins"`` it is dropped (the ack says so); under ``"manual"`` it is a
    conflict for the user.
    """

    name: str
    model: type[BaseModel]
    on_update_deleted: Literal["delete-wins", "manual"] = "delete-wins"
    read: ReadRule | None = None
    write: WriteRule | None = None
    read_filter: ReadFilter | None = None
    """The read rule as a filter (:data:`ReadFilter`); give it or ``read``, not both."""
    fields: dict[str, FieldSpec] = field(init=False, repr=False)
    queryable: frozenset[str] = field(init=False, repr=False)
    """Fields a query may filter or order on, and the only ones a read rule sees."""

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("_", "").isalnum():
            raise SchemaError(f"collection name {self.name!r} must be letters, digits and _")
        if self.on_update_deleted not in ("delete-wins", "manual"):
            raise SchemaError(
                f"collection {self.name!r}: on_update_deleted must be 'delete-wins' or 'manual', "
                f"not {self.on_update_deleted!r}"
            )
        if self.read is not None and self.read_filter is not None:
            raise SchemaError(
                f"collection {self.name!r}: declare its read rule as read or read_filter, not both"
            )
        if "id" in self.model.model_fields:
            raise SchemaError(
                f"collection {self.name!r}: the model must not declare 'id'; "
                "syncline keeps record ids beside the fields"
            )
        self.fields = {
            name: _field_spec(self.name, name, info)
            for name, info in self.model.model_fields.items()
        }
        self.queryable = frozenset(n for n, f in self.fields.items() if f.queryable)

    def field(self, name: str, record_id: str | None = None) -> FieldSpec:
        try:
            return self.fields[name]
        except KeyError:
            raise InvalidMutation(
                f"unknown field; {self.name} has {sorted(self.fields)}",
                collection=self.name,
                record_id=record_id,
                field=name,
            ) from None

    def validate(self, record_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """Check ``data`` against the model (strict JSON rules) and return it normalized:
        defaults filled in, sets as sorted lists."""
        for name in data:
            self.field(name, record_id)
        try:
            text = orjson.dumps(dict(data))
            if b"\\u0000" in text:  # cheap test first; the exact one names the field
                _refuse_nul(self.name, record_id, data)
            obj = self.model.model_validate_json(text, strict=True)
        except ValidationError as exc:
            err = exc.errors()[0]
            loc = err.get("loc") or ()
            fname = str(loc[0]) if loc else None
            raise InvalidMutation(
                err.get("msg", "invalid value"),
                collection=self.name,
                record_id=record_id,
                field=fname,
            ) from None
        except orjson.JSONEncodeError as exc:
            raise InvalidMutation(
                f"value is not JSON: {exc}", collection=self.name, record_id=record_id
            ) from None
        out: dict[str, Any] = obj.model_dump(mode="json")
        for name, spec in self.fields.items():
            if spec.kind == "set" and out.get(name) is not None:
                out[name] = sort_set(out[name])
        return out

    def visible(self, record_id: str, data: Mapping[str, Any]) -> dict[str, Any]:
        """What a read rule sees: the id and the queryable fields."""
        get = data.get
        view = {n: get(n) for n in self.queryable}
        view["id"] = record_id
        return view


def _field_spec(collection: str, name: str, info: Any) -> FieldSpec:
    policy: _Policy = LWW()
    queryable = False
    ref: str | None = None
    for meta in info.metadata:
        if isinstance(meta, _Policy):
            policy = meta
        elif isinstance(meta, Queryable):
            queryable = True
        elif isinstance(meta, Ref):
            ref = meta.collection
    where = f"{collection}.{name}"
    if name.startswith("_") or name in ("id", "v", "inc"):
        raise SchemaError(f"{where}: field names may not start with '_' or be id, v, inc")
    annotation = info.annotation
    if ref is not None and policy.name not in ("lww", "manual"):
        raise SchemaError(f"{where}: a reference must use the lww or manual policy")
    if policy.name == "counter" and annotation not in (int, int | None):
        raise SchemaError(f"{where}: a Counter() field must be an int")
    if policy.name == "text" and annotation not in (str, str | None):
        raise SchemaError(f"{where}: a Text() field must be a str")
    if policy.name == "set" and getattr(annotation, "__origin__", None) not in (
        set,
        frozenset,
        list,
    ):
        raise SchemaError(f"{where}: a Set() field must be a set, frozenset or list")
    if queryable and not _is_scalar(annotation):
        raise SchemaError(f"{where}: only str, int, float, bool fields can be Queryable()")
    return FieldSpec(
        name=name,
        policy=policy,
        required=info.is_required(),
        queryable=queryable,
        ref=ref,
        type_name=str(annotation).replace("typing.", ""),
    )


def _is_scalar(annotation: Any) -> bool:
    args = getattr(annotation, "__args__", None)
    if args is not None and getattr(annotation, "__origin__", None) is None:
        return all(a in _SCALARS for a in args)  # a union such as str | None
    return annotation in _SCALARS


def _refuse_nul(collection: str, record_id: str, data: Mapping[str, Any]) -> None:
    """No stored text may hold U+0000: PostgreSQL cannot store it, so no store takes it."""

    def has_nul(value: Any) -> bool:
        if isinstance(value, str):
            return "\x00" in value
        if isinstance(value, dict):
            return any(has_nul(k) or has_nul(v) for k, v in value.items())
        if isinstance(value, list | tuple):
            return any(has_nul(v) for v in value)
        return False

    for name, value in data.items():
        if has_nul(value):
            raise InvalidMutation(
                "text may not contain the NUL character (U+0000)",
                collection=collection,
                record_id=record_id,
                field=name,
            )


def set_key(element: Any) -> str:
    """The canonical key of a set element (sets hold JSON scalars)."""
    return orjson.dumps(element, option=orjson.OPT_SORT_KEYS).decode()


def sort_set(values: Iterable[Any]) -> list[Any]:
    unique = {set_key(v): v for v in values}
    return [unique[k] for k in sorted(unique)]


class Schema:
    """The collections an application syncs.

    ``hash`` is what a client and the server must agree on. It covers every
    collection's required fields (name, type, policy, reference) and the ``revision``
    number, and nothing else, so adding an optional field or a collection keeps old
    clients running (docs/design.md, Storage). A new collection keeps the hash when its
    fields have defaults. Changing or removing an existing optional field is not
    detected by the hash (the server still refuses ops that no longer validate):
    bump ``revision`` when you do that, and old pages will reload.
    """

    def __init__(self, collections: Iterable[Collection], *, revision: int = 0) -> None:
        self.collections: dict[str, Collection] = {}
        for c in collections:
            if c.name in self.collections:
                raise SchemaError(f"collection {c.name!r} is declared twice")
            self.collections[c.name] = c
        for c in self.collections.values():
            for f in c.fields.values():
                if f.ref is not None and f.ref not in self.collections:
                    raise SchemaError(
                        f"{c.name}.{f.name} references unknown collection {f.ref!r}; "
                        f"declared: {sorted(self.collections)}"
                    )
        self.revision = revision
        self.rules_declared = any(
            c.read or c.write or c.read_filter for c in self.collections.values()
        )
        self.hash = self._hash()

    def __getitem__(self, name: str) -> Collection:
        try:
            return self.collections[name]
        except KeyError:
            raise QueryError(
                f"unknown collection {name!r}; declared: {sorted(self.collections)}"
            ) from None

    def collection(self, name: str, record_id: str | None = None) -> Collection:
        """The collection, or an :class:`InvalidMutation` naming it (for ops)."""
        try:
            return self.collections[name]
        except KeyError:
            raise InvalidMutation(
                f"unknown collection; declared: {sorted(self.collections)}",
                collection=name,
                record_id=record_id,
            ) from None

    def collection_for(self, model: type[BaseModel]) -> Collection:
        """The one collection whose records are ``model`` instances (for typed reads),
        or a :class:`SchemaError` saying why there is not exactly one."""
        found = [c.name for c in self.collections.values() if c.model is model]
        if len(found) == 1:
            return self.collections[found[0]]
        if found:
            raise SchemaError(
                f"{model.__name__} is the model of several collections {sorted(found)}: "
                "name the collection"
            )
        models = sorted({c.model.__name__ for c in self.collections.values()})
        raise SchemaError(
            f"no collection of this schema holds {model.__name__} records; models: {models}"
        )

    def _hash(self) -> str:
        collections = {}
        for c in self.collections.values():
            required = sorted(
                [f.name, f.type_name, f.kind, f.ref] for f in c.fields.values() if f.required
            )
            # A collection without required fields adds nothing, so declaring a new
            # collection whose fields all have defaults keeps the hash.
            if required:
                collections[c.name] = required
        core = {"revision": self.revision, "collections": collections}
        digest = hashlib.sha256(orjson.dumps(core, option=orjson.OPT_SORT_KEYS))
        return digest.hexdigest()[:16]

    def describe(self) -> dict[str, dict[str, dict[str, Any]]]:
        """Each field's policy, flags and default, for clients (the browser embeds it so
        its optimistic edits merge as the server's will)."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for c in self.collections.values():
            fields: dict[str, dict[str, Any]] = {}
            for f in c.fields.values():
                spec: dict[str, Any] = {"kind": f.kind, "type": _type_label(f.type_name)}
                if f.queryable:
                    spec["queryable"] = True
                if f.required:
                    spec["required"] = True
                if f.ref is not None:
                    spec["ref"] = f.ref
                default = c.model.model_fields[f.name].get_default(call_default_factory=True)
                if not f.required:
                    with contextlib.suppress(TypeError, orjson.JSONEncodeError):
                        spec["default"] = orjson.loads(orjson.dumps(_jsonable(default)))
                fields[f.name] = spec
            out[c.name] = fields
        return out

    def may_read(self, principal: Principal, coll: Collection, view: Mapping[str, Any]) -> bool:
        """A read rule that raises denies (and is logged): failing closed never leaks."""
        if coll.read_filter is not None:
            conditions = self.read_conditions(principal, coll)
            return conditions is not None and conditions.matches(view)
        if coll.read is None:
            return not self.rules_declared
        try:
            return bool(coll.read(principal, view))
        except Exception:
            log.exception("the read rule of %r raised; denying", coll.name)
            return False

    def read_conditions(self, principal: Principal, coll: Collection) -> Query | None:
        """The collection's :data:`ReadFilter` for ``principal`` as a query's conditions
        (None: nothing readable). A filter that raises or names a field it may not
        denies (and is logged)."""
        from .query import Query

        assert coll.read_filter is not None
        try:
            where = coll.read_filter(principal)
            if where is None:
                return None
            return Query.parse({"c": coll.name, "where": dict(where)}, self)
        except Exception:
            log.exception("the read filter of %r failed; denying", coll.name)
            return None

    def may_write(
        self,
        principal: Principal,
        coll: Collection,
        before: Mapping[str, Any] | None,
        after: Mapping[str, Any] | None,
    ) -> bool:
        """A write rule that raises refuses (and is logged)."""
        if coll.write is None:
            return not self.rules_declared
        try:
            return bool(coll.write(principal, before, after))
        except Exception:
            log.exception("the write rule of %r raised; refusing", coll.name)
            return False


def _type_label(type_name: str) -> str:
    """``<class 'str'>`` reads as ``str``."""
    if type_name.startswith("<class '") and type_name.endswith("'>"):
        return type_name[8:-2]
    return type_name


def _jsonable(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        return sort_set(value)
    return value


def as_model(model: type[M], collection: str, record_id: str, data: Mapping[str, Any]) -> M:
    """A record's fields (JSON form) as a ``model`` instance; a local view that does not
    validate (a pending edit the server will refuse) is an :class:`InvalidMutation`."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err.get("loc") or ()
        raise InvalidMutation(
            f"does not read as {model.__name__}: {err.get('msg', 'invalid value')}",
            collection=collection,
            record_id=record_id,
            field=str(loc[0]) if loc else None,
        ) from None


def new_id() -> str:
    """A UUIDv7 string: unique without coordination and sortable by creation time."""
    ms = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10), "big")
    value = (ms & ((1 << 48) - 1)) << 80
    value |= 0x7 << 76
    value |= ((rand >> 62) & 0xFFF) << 64
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
