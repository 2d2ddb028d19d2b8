"""SQLite's side of the query compiler (:class:`syncline.store._sql.Compiler`): fields
through ``json_extract`` and ``json_type``, the indexes that serve them.

``json_type`` tells ``true`` from ``1``, so equality is numeric between integers and
reals but never between booleans and numbers; ``None`` satisfies no range; the sort
orders types ``None`` < booleans < numbers < strings, then by value (UTF-8 byte order
is code point order), ties by id. An array or object is compared through Python's
``str()`` of it (``syncline_pystr``, registered on every connection), as the
reference does. A field name that is not an identifier, an integer beyond 64 bits or a
non-scalar operand is left to Python (:func:`syncline.store._sql.finish`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ...model import Schema
from ...query import Query
from .._sql import NON_SCALAR, RECORD_COLUMNS, Compiler, index_statements, select, sql_text

__all__ = ["compile_query", "indexes"]

_NUMERIC = "('integer', 'real')"
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1

_Field = tuple[str, str]
"""``(value, json type)`` expressions of a data field."""


def _field_sql(field: str) -> _Field | None:
    """None when the name cannot go into a JSON path literal (Python finishes then)."""
    if not field.isidentifier():
        return None
    path = f"'$.{field}'"
    return f"json_extract(data, {path})", f"json_type(data, {path})"


class _SQLiteCompiler(Compiler[_Field]):
    false = "0"
    true = "1"
    not_true = "IS NOT 1"

    def __init__(self, ranges_use_indexes: bool = True) -> None:
        super().__init__()
        self.ranges_use_indexes = ranges_use_indexes

    def bind(self, value: Any, cast: str = "") -> str:
        self.params.append(value)
        return "?"

    def bindable(self, value: Any) -> bool:
        if isinstance(value, bool) or value is None or isinstance(value, float | str):
            return True
        return isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX

    def field(self, name: str) -> _Field | None:
        return _field_sql(name)

    def eq(self, f: _Field, x: Any) -> str:
        v, t = f
        if x is None:
            return f"{v} IS NULL"
        if isinstance(x, bool):
            return f"({v} = {int(x)} AND {t} = '{'true' if x else 'false'}')"
        if isinstance(x, int | float):
            return f"({v} = {self.bind(x)} AND {t} IN {_NUMERIC})"
        if not x.startswith(("[", "{")):
            # Only a JSON string extracts to text that equals it (an array or object
            # extracts to its JSON text, which starts with [ or {): no type check needed,
            # and a type check costs a second parse of the record per row.
            return f"{v} = {self.bind(x)}"
        return f"({v} = {self.bind(x)} AND {t} = 'text')"

    def one_of(self, f: _Field, values: Sequence[Any]) -> str:
        v, t = f
        parts: list[str] = []
        numbers = [x for x in values if isinstance(x, int | float) and not isinstance(x, bool)]
        texts = [x for x in values if isinstance(x, str)]
        if any(x is None for x in values):
            parts.append(f"{v} IS NULL")
        for b in sorted({x for x in values if isinstance(x, bool)}):
            parts.append(self.eq(f, b))
        if numbers:
            marks = ", ".join(self.bind(x) for x in numbers)
            parts.append(f"({v} IN ({marks}) AND {t} IN {_NUMERIC})")
        if texts:
            marks = ", ".join(self.bind(x) for x in texts)
            parts.append(f"({v} IN ({marks}) AND {t} = 'text')")
        return "(" + " OR ".join(parts) + ")" if parts else "0"

    def range(self, f: _Field, sym: str, x: Any) -> str:
        v, t = f
        if not self.ranges_use_indexes:
            v = f"+{v}"  # unary plus: the same value, but no index serves the term
        if x is None:
            return "0"
        if isinstance(x, bool):
            return f"({t} IN ('true', 'false') AND {v} {sym} {int(x)})"
        if isinstance(x, int | float):
            return f"({v} {sym} {self.bind(x)} AND {t} IN {_NUMERIC})"
        return (
            f"(({v} {sym} {self.bind(x)} AND {t} = 'text') OR "
            f"({t} IN {NON_SCALAR} AND syncline_pystr({v}) {sym} {self.bind(x)}))"
        )

    def order_terms(self, f: _Field, direction: str) -> list[str]:
        v, t = f
        return [
            f"CASE {t} WHEN 'true' THEN 1 WHEN 'false' THEN 1 WHEN 'integer' THEN 2 "
            f"WHEN 'real' THEN 2 WHEN 'text' THEN 3 WHEN 'array' THEN 3 "
            f"WHEN 'object' THEN 3 ELSE 0 END {direction}",
            f"CASE WHEN {t} IN {NON_SCALAR} THEN syncline_pystr({v}) ELSE {v} END {direction}",
        ]


def compile_query(
    query: Query, apply_limit: bool, columns: str = RECORD_COLUMNS
) -> tuple[str, list[Any], Query | None]:
    """SQL and parameters for ``query``, plus the query Python must finish it with (None
    when the SQL is exact)."""
    # Without statistics, SQLite takes a range on (collection, field) for narrower than
    # an equality on another such index (both start with the collection): a read
    # filter's owner = ? would lose to order >= ? and scan the whole collection. Where a
    # field has an equality, ranges are therefore kept off the indexes.
    equality = any(op == "eq" and field != "id" for field, op, _ in query.conditions)
    c = _SQLiteCompiler(ranges_use_indexes=not equality)
    collection = (
        sql_text(query.collection) if "\x00" not in query.collection else c.bind(query.collection)
    )
    where = c.where(query, collection, "deleted = 0")
    limit = query.limit if apply_limit else None
    # Ties by +id where a field filters: the primary key must not tempt the planner
    # away from a field index that narrows the rows down.
    by_filter = any(field != "id" for field, _, _ in query.conditions)
    order = c.order(query.order, "+id" if by_filter else "id") if c.exact else None
    if order is None:
        text = f"SELECT {columns} FROM records WHERE {' AND '.join(where)}"
        return text, c.params, Query(query.collection, query.conditions, query.order, limit)
    return select(columns, "records", where, order, limit), c.params, None


def _index(collection: str, field: str) -> str | None:
    exprs = _field_sql(field)
    if exprs is None:
        return None
    name = '"' + f"records_{collection}_{field}".replace('"', '""') + '"'
    return (
        f"CREATE INDEX IF NOT EXISTS {name} "
        f"ON records (collection, {exprs[0]}) WHERE collection = {sql_text(collection)}"
    )


def indexes(schema: Schema) -> list[str]:
    """An expression index per queryable field of ``schema``, matching what
    :func:`compile_query` compiles, partial on the collection so each collection's
    index holds only its own records."""
    return index_statements(schema, _index)
