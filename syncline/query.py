"""Queries: a collection, a filter on queryable fields, an order and a limit.

The wire form::

    {"c": "cards", "where": {"list_id": "l1", "votes": {"gte": 3},
                             "status": {"in": ["todo", "doing"]}},
     "order": [["votes", "desc"]], "limit": 50}

A field's condition is a value (equality) or an object of ``eq``, ``ne``, ``in``,
``gt``, ``gte``, ``lt``, ``lte``. Only fields declared ``Queryable()`` may appear, so
every store can index what clients filter on. ``matches`` and ``sort_key`` are the
reference semantics every store must reproduce (the conformance suite checks it):
``None`` never satisfies a range, and sorts before every value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from .exceptions import QueryError
from .model import Schema

__all__ = ["MAX_LIMIT", "Query", "equality_constraints", "equality_key"]

MAX_LIMIT = 10_000
_OPS = frozenset({"eq", "ne", "in", "gt", "gte", "lt", "lte"})
_SCALAR = (str, int, float, bool, type(None))

Condition = tuple[str, str, Any]  # (field, op, value)


@dataclass(frozen=True)
class Query:
    collection: str
    conditions: tuple[Condition, ...] = ()
    order: tuple[tuple[str, Literal["asc", "desc"]], ...] = ()
    limit: int | None = None

    @classmethod
    def parse(cls, obj: Any, schema: Schema) -> Query:
        """Decode and check a wire query, or raise :class:`QueryError` naming the problem."""
        if not isinstance(obj, Mapping):
            raise QueryError(f"a query must be an object, not {type(obj).__name__}")
        unknown = set(obj) - {"c", "where", "order", "limit"}
        if unknown:
            raise QueryError(
                f"unknown query keys {sorted(unknown)}; allowed: c, where, order, limit"
            )
        name = obj.get("c")
        if not isinstance(name, str):
            raise QueryError("a query needs a collection name in 'c'")
        coll = schema[name]
        queryable = coll.queryable
        conditions: list[Condition] = []
        where = obj.get("where")
        if where is None:
            where = {}
        if not isinstance(where, Mapping):
            raise QueryError(f"{name}: 'where' must be an object")
        for field, cond in where.items():
            if field != "id" and field not in queryable:
                raise QueryError(
                    f"{name}.{field} is not queryable; queryable fields: {sorted(queryable)}"
                )
            if isinstance(cond, Mapping):
                for op, value in cond.items():
                    if op not in _OPS:
                        raise QueryError(
                            f"{name}.{field}: unknown operator {op!r}; use {sorted(_OPS)}"
                        )
                    conditions.append((field, op, _check_value(name, field, op, value)))
            else:
                conditions.append((field, "eq", _check_value(name, field, "eq", cond)))
        order: list[tuple[str, Literal["asc", "desc"]]] = []
        order_items = obj.get("order")
        if order_items is None:
            order_items = []
        if not isinstance(order_items, list | tuple):
            raise QueryError(f"{name}: 'order' must be a list")
        for item in order_items:
            if (
                not isinstance(item, list | tuple)
                or len(item) != 2
                or item[1] not in ("asc", "desc")
            ):
                raise QueryError(
                    f"{name}: each order item is [field, 'asc' | 'desc'], not {item!r}"
                )
            if item[0] != "id" and item[0] not in queryable:
                raise QueryError(f"{name}: cannot order by {item[0]!r}; it is not queryable")
            order.append((item[0], item[1]))
        limit = obj.get("limit")
        if limit is not None and (
            not isinstance(limit, int) or isinstance(limit, bool) or not 1 <= limit <= MAX_LIMIT
        ):
            raise QueryError(f"{name}: limit must be an integer from 1 to {MAX_LIMIT}")
        return cls(name, tuple(conditions), tuple(order), limit)

    def to_wire(self) -> dict[str, Any]:
        where: dict[str, dict[str, Any]] = {}
        for field, op, value in self.conditions:
            where.setdefault(field, {})[op] = list(value) if op == "in" else value
        out: dict[str, Any] = {"c": self.collection, "where": where}
        if self.order:
            out["order"] = [list(o) for o in self.order]
        if self.limit is not None:
            out["limit"] = self.limit
        return out

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Does a record (``id`` plus fields) satisfy the filter?"""
        return all(_test(record.get(f), op, v) for f, op, v in self.conditions)

    def sort(self, records: list[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Order records by ``order`` then by id, and apply the limit."""
        out = sorted(records, key=lambda r: str(r["id"]))
        for field, direction in reversed(self.order):
            out.sort(key=lambda r, f=field: sort_key(r.get(f)), reverse=direction == "desc")  # type: ignore[misc]
        return out[: self.limit] if self.limit is not None else out

    @property
    def key(self) -> str:
        return orjson.dumps(self.to_wire(), option=orjson.OPT_SORT_KEYS).decode()


def _check_value(coll: str, field: str, op: str, value: Any) -> Any:
    if op == "in":
        if not isinstance(value, list) or not all(isinstance(v, _SCALAR) for v in value):
            raise QueryError(f"{coll}.{field}: 'in' takes a list of scalars")
        if len(value) > 1000:
            raise QueryError(f"{coll}.{field}: 'in' takes at most 1000 values")
        return tuple(value)
    if not isinstance(value, _SCALAR):
        raise QueryError(f"{coll}.{field}: {op} takes a string, number, boolean or null")
    return value


def equality_constraints(query: Query) -> list[tuple[str, tuple[Any, ...]]]:
    """The query's necessary equalities: for each ``(field, values)``, a record the
    filter matches has in ``field`` a value ``eq`` to one of ``values`` (one entry per
    ``eq`` or ``in`` condition; an empty ``in`` matches nothing). Used to index
    subscriptions (see :mod:`syncline.fanout.index`)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    for field, op, value in query.conditions:
        if op == "eq":
            out.append((field, (value,)))
        elif op == "in":
            out.append((field, tuple(value)))
    return out


def equality_key(value: Any) -> Any:
    """A hashable key such that two values are ``eq`` (as :meth:`Query.matches` tests
    it) exactly when their keys are equal; None for a value that has no key: it is
    unhashable (an array or object) or equals nothing (NaN)."""
    if isinstance(value, bool):
        return (bool, value)
    if isinstance(value, int | float):
        if value != value:  # NaN
            return None
        return ("n", int(value) if isinstance(value, int) else float(value))
    try:
        hash(value)
    except TypeError:
        return None
    return (type(value), value)


def sort_key(value: Any) -> tuple[int, Any]:
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (1, int(value))
    if isinstance(value, int | float):
        return (2, value)
    return (3, str(value))


def _test(actual: Any, op: str, expected: Any) -> bool:
    if op == "eq":
        return bool(actual == expected and type(actual) is type(expected)) or (
            isinstance(actual, int | float)
            and isinstance(expected, int | float)
            and not isinstance(actual, bool)
            and not isinstance(expected, bool)
            and actual == expected
        )
    if op == "ne":
        return not _test(actual, "eq", expected)
    if op == "in":
        return any(_test(actual, "eq", e) for e in expected)
    if actual is None or expected is None:
        return False
    a, b = sort_key(actual), sort_key(expected)
    if a[0] != b[0]:
        return False
    if op == "gt":
        return a > b
    if op == "gte":
        return a >= b
    if op == "lt":
        return a < b
    return a <= b
