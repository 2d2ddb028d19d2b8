"""PostgreSQL's side of the query compiler (:class:`syncline.store._sql.Compiler`):
fields as JSONB (``data -> 'field'``), compared as JSONB, strings ``COLLATE "C"``.

Equality compares JSONB values (numbers numerically, never a boolean with a number,
strings by bytes), which the expression indexes serve; ranges check the JSON type
first. The reference compares an array or object through Python's ``str()`` of it,
which SQL cannot reproduce: string ranges let such rows through and a window column
tells whether any matched row holds one in a string-ranged or ordered field
(:attr:`Compiled.guarded`); only then the store re-reads the rows without order or
limit and finishes in Python, as it does where SQL cannot express a query at all (a
NUL character, a non-finite float).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ...model import Schema
from ...query import Query
from .._sql import NON_SCALAR, RECORD_COLUMNS, Compiler, dumps, index_statements, select, sql_text
from ._schema import quote_ident

__all__ = ["Compiled", "compile_query", "indexes"]


def _index_name(collection: str, field: str) -> str:
    """The index's quoted name; a hash where the plain one would pass 63 bytes (where
    PostgreSQL would cut it, and two long names could collide)."""
    name = f"records_{collection}_{field}"
    if len(name.encode()) > 63:
        digest = hashlib.blake2b(f"{collection}\x00{field}".encode(), digest_size=10).hexdigest()
        name = f"records_{digest}"
    return quote_ident(name)


def _bindable(value: Any) -> bool:
    if value is None or isinstance(value, bool | int):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str) and "\x00" not in value


def _json_operand(value: Any) -> str:
    """JSON text of a scalar operand (integers of any size, floats by ``repr``)."""
    if value is None or isinstance(value, bool):
        return {None: "null", True: "true", False: "false"}[value]
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    return dumps(value)


def _field_sql(field: str) -> str | None:
    """The JSONB expression of a data field (as the indexes have it), or None."""
    return None if "\x00" in field else f"(data -> {sql_text(field)})"


class _PostgresCompiler(Compiler[str]):
    """``loose`` collects the field expressions whose array or object values SQL cannot
    compare (string ranges and orderings)."""

    text = "::text"

    def __init__(self) -> None:
        super().__init__()
        self.loose: list[str] = []

    def bind(self, value: Any, cast: str = "") -> str:
        self.params.append(value)
        return f"${len(self.params)}{cast}"

    def bindable(self, value: Any) -> bool:
        return _bindable(value)

    def field(self, name: str) -> str | None:
        return _field_sql(name)

    def eq(self, j: str, x: Any) -> str:
        if x is None:
            return f"coalesce(jsonb_typeof({j}), 'null') = 'null'"
        return f"{j} = {self.bind(_json_operand(x), '::jsonb')}"

    def one_of(self, j: str, values: Sequence[Any]) -> str:
        parts: list[str] = []
        if any(x is None for x in values):
            parts.append(self.eq(j, None))
        others = [x for x in values if x is not None]
        if others:
            marks = ", ".join(self.bind(_json_operand(x), "::jsonb") for x in others)
            parts.append(f"{j} IN ({marks})")
        return "(" + " OR ".join(parts) + ")" if parts else "false"

    def range(self, j: str, sym: str, x: Any) -> str:
        if x is None:
            return "false"
        if isinstance(x, bool):
            operand = self.bind("true" if x else "false", "::jsonb")
            return f"(jsonb_typeof({j}) = 'boolean' AND {j} {sym} {operand})"
        if isinstance(x, int | float):
            operand = self.bind(_json_operand(x), "::jsonb")
            return f"(jsonb_typeof({j}) = 'number' AND {j} {sym} {operand})"
        self.loose.append(j)
        return (
            f"((jsonb_typeof({j}) = 'string' AND ({j} #>> '{{}}') COLLATE \"C\" {sym} "
            f"{self.bind(x, '::text')}) OR jsonb_typeof({j}) IN {NON_SCALAR})"
        )

    def order_terms(self, f: str, direction: str) -> list[str]:
        """Per field its type rank (None, booleans, numbers, strings), then booleans and
        numbers as JSONB, then strings in code point order."""
        self.loose.append(f)
        t, d = f"jsonb_typeof({f})", direction
        return [
            f"CASE {t} WHEN 'boolean' THEN 1 WHEN 'number' THEN 2 WHEN 'string' THEN 3 "
            f"WHEN 'array' THEN 3 WHEN 'object' THEN 3 ELSE 0 END {d}",
            f"CASE WHEN {t} IN ('boolean', 'number') THEN {f} END {d}",
            f"(CASE WHEN {t} = 'string' THEN {f} #>> '{{}}' END) COLLATE \"C\" {d}",
        ]


@dataclass(frozen=True)
class Compiled:
    """A query's SQL. ``finish``: the query Python must finish the rows with (the SQL
    then has no order or limit). ``guarded``: the SQL's last column says whether Python
    must finish after all (an array or object in a loose field); ``fallback`` is the same
    filter without order or limit, for that case."""

    sql: str
    params: list[Any]
    finish: Query | None
    guarded: bool = False
    fallback: str = ""


def compile_query(query: Query, apply_limit: bool, table: str) -> Compiled:
    c = _PostgresCompiler()
    limit = query.limit if apply_limit else None
    finish = Query(query.collection, query.conditions, query.order, limit)
    where = c.where(query, sql_text(query.collection), "NOT deleted")
    plain = f"SELECT {RECORD_COLUMNS} FROM {table} WHERE {' AND '.join(where)}"
    order = c.order(query.order) if c.exact else None
    if order is None:
        return Compiled(plain, c.params, finish)
    columns = RECORD_COLUMNS
    if c.loose:
        odd = " OR ".join(f"jsonb_typeof({j}) IN {NON_SCALAR}" for j in dict.fromkeys(c.loose))
        columns += f", coalesce(bool_or({odd}) OVER (), false)"
    text = select(columns, table, where, order, limit)
    return Compiled(text, c.params, None, guarded=bool(c.loose), fallback=plain)


def indexes(schema: Schema, table: str) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` for every queryable field of ``schema``: an
    expression index on the JSONB value the compiled queries compare, partial on the
    collection so each collection's index holds only its own records."""

    def index(collection: str, field: str) -> str | None:
        j = _field_sql(field)
        if j is None or "\x00" in collection:
            return None
        return (
            f"CREATE INDEX IF NOT EXISTS {_index_name(collection, field)} "
            f"ON {table} ({j}) WHERE collection = {sql_text(collection)}"
        )

    return index_statements(schema, index)
