"""What the SQL stores share below group commit: row codecs, the query compiler's
skeleton, index and migration steps.

Both dialects keep the same tables with the same columns (:data:`RECORD_COLUMNS`,
:data:`LOG_COLUMNS`); SQLite stores JSON as text, PostgreSQL as JSONB, which asyncpg
hands over as text too, so one set of codecs (:func:`record`, :func:`log_entry`)
reads both. :class:`Compiler` walks a :class:`~syncline.query.Query` once -- which
conditions SQL can take, the ``id`` column, the order's shape, when Python must
finish -- and asks its dialect (:mod:`.sqlite._compile`, :mod:`.postgres._compile`)
only for the expressions that differ: how a field is read, how a value is bound and
compared, how a field sorts. Whatever SQL cannot do exactly, :func:`finish` does
with the reference functions (:meth:`Query.matches`, :meth:`Query.sort`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import orjson

from ..exceptions import StoreError
from ..model import Schema
from ..query import Query
from ..record import LogEntry, Record
from .base import ReadTx

__all__ = [
    "LOG_COLUMNS",
    "NON_SCALAR",
    "RANGE_OPS",
    "RECORD_COLUMNS",
    "WIRE_COLUMNS",
    "Compiler",
    "Transaction",
    "dumps",
    "finish",
    "finish_records",
    "index_statements",
    "log_entry",
    "log_row",
    "pending_migrations",
    "record",
    "select",
    "sql_text",
    "wire",
]

RECORD_COLUMNS = "id, data, inc, v, fv, fw, adds, deleted"
WIRE_COLUMNS = "id, data, inc, v, fv"
"""What a snapshot sends (:meth:`Record.to_wire`): no writer ids, no set bookkeeping."""
LOG_COLUMNS = (
    'seq, collection, id, kind, inc, patch, "before", "after", client_id, mutation_id, time'
)
RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
NON_SCALAR = "('array', 'object')"


# --- row codecs -----------------------------------------------------------------------


def dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def record(row: Sequence[Any]) -> Record:
    """A row of :data:`RECORD_COLUMNS` (JSON as text)."""
    rid, data, inc, v, fv, fw, adds, deleted = row
    return Record(
        id=rid,
        data=orjson.loads(data),
        inc=inc,
        v=v,
        fv=orjson.loads(fv),
        fw=orjson.loads(fw),
        adds=orjson.loads(adds),
        deleted=bool(deleted),
    )


def wire(row: Sequence[Any]) -> dict[str, Any]:
    """A row of :data:`WIRE_COLUMNS` as :meth:`Record.to_wire` would give it."""
    rid, data, inc, v, fv = row
    return {"id": rid, "inc": inc, "v": v, "fv": orjson.loads(fv), "data": orjson.loads(data)}


def log_entry(row: Sequence[Any]) -> LogEntry:
    """A row of :data:`LOG_COLUMNS` (JSON as text)."""
    seq, collection, rid, kind, inc, patch, before, after, client_id, mutation_id, when = row
    return LogEntry(
        seq=seq,
        collection=collection,
        id=rid,
        kind=kind,
        inc=inc,
        patch=orjson.loads(patch),
        before=None if before is None else orjson.loads(before),
        after=None if after is None else orjson.loads(after),
        client_id=client_id,
        mutation_id=mutation_id,
        time=when,
    )


def log_row(e: LogEntry) -> tuple[Any, ...]:
    """``e`` as the values of :data:`LOG_COLUMNS`, JSON encoded."""
    return (
        e.seq,
        e.collection,
        e.id,
        e.kind,
        e.inc,
        dumps(e.patch),
        None if e.before is None else dumps(e.before),
        None if e.after is None else dumps(e.after),
        e.client_id,
        e.mutation_id,
        e.time,
    )


# --- transactions ---------------------------------------------------------------------


class Transaction(ReadTx):
    """A dialect's transaction: usable only inside its block (``_ended`` is set when the
    block exits, by the store)."""

    _ended = False

    def _check(self) -> None:
        if self._ended:
            raise StoreError("this transaction has ended; use it only inside its block")


# --- queries --------------------------------------------------------------------------


def sql_text(value: str) -> str:
    """``value`` as an SQL string literal."""
    return "'" + value.replace("'", "''") + "'"


def finish(query: Query, views: list[dict[str, Any]]) -> list[Mapping[str, Any]]:
    """What SQL could not do exactly: filter ``views`` by ``query``, sort and limit."""
    ordered = Query(query.collection, (), query.order, query.limit)
    return ordered.sort([v for v in views if query.matches(v)])


def finish_records(records: list[Record], query: Query) -> list[Record]:
    """:func:`finish` for records."""
    by_id = {r.id: r for r in records}
    views = [{**r.data, "id": r.id} for r in records]
    return [by_id[str(v["id"])] for v in finish(query, views)]


def select(columns: str, table: str, where: list[str], order: str, limit: int | None) -> str:
    """An exact query's SELECT: filtered, ordered and limited in SQL."""
    text = f"SELECT {columns} FROM {table} WHERE {' AND '.join(where)} ORDER BY {order}"
    return text if limit is None else f"{text} LIMIT {int(limit)}"


F = TypeVar("F")
"""A dialect's expression(s) for reading one data field."""


class Compiler(ABC, Generic[F]):
    """Builds the WHERE and ORDER BY of one query; ``exact`` turns False when some part
    must be finished in Python. The walk is here; a dialect says how to read a field
    (:meth:`field`, None where it cannot), how to bind and compare values, and how a
    field sorts (:meth:`order_terms`)."""

    false = "false"
    true = "true"
    not_true = "IS NOT TRUE"
    text = ""
    """The cast a text operand takes when bound (for the ``id`` column)."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.exact = True

    @abstractmethod
    def bind(self, value: Any, cast: str = "") -> str:
        """Add a parameter; its placeholder."""

    @abstractmethod
    def bindable(self, value: Any) -> bool:
        """Whether SQL can compare ``value`` exactly as the reference does."""

    @abstractmethod
    def field(self, name: str) -> F | None: ...

    @abstractmethod
    def eq(self, f: F, x: Any) -> str: ...

    @abstractmethod
    def one_of(self, f: F, values: Sequence[Any]) -> str: ...

    @abstractmethod
    def range(self, f: F, sym: str, x: Any) -> str: ...

    @abstractmethod
    def order_terms(self, f: F, direction: str) -> list[str]:
        """ORDER BY terms sorting one field as :func:`syncline.query.sort_key` does."""

    def where(self, query: Query, collection: str, live: str) -> list[str]:
        """The WHERE terms: the collection, ``live`` (no tombstones), every condition
        SQL can take."""
        terms = [f"collection = {collection}", live]
        for field, op, value in query.conditions:
            sql = self.condition(field, op, value)
            if sql is None:
                self.exact = False
            else:
                terms.append(sql)
        return terms

    def condition(self, field: str, op: str, value: Any) -> str | None:
        values = value if op == "in" else (value,)
        if not all(self.bindable(v) for v in values):
            return None
        if field == "id":
            return self.id_condition(op, value)
        f = self.field(field)
        if f is None:
            return None
        if op == "eq":
            return self.eq(f, value)
        if op == "ne":
            return f"({self.eq(f, value)}) {self.not_true}"
        if op == "in":
            return self.one_of(f, list(value))
        return self.range(f, RANGE_OPS[op], value)

    def id_condition(self, op: str, x: Any) -> str:
        if op == "in":
            texts = [e for e in x if isinstance(e, str)]
            if not texts:
                return self.false
            return f"id IN ({', '.join(self.bind(e, self.text) for e in texts)})"
        if op == "ne":
            return f"id <> {self.bind(x, self.text)}" if isinstance(x, str) else self.true
        if not isinstance(x, str):
            return self.false
        if op == "eq":
            return f"id = {self.bind(x, self.text)}"
        return f"id {RANGE_OPS[op]} {self.bind(x, self.text)}"

    def order(self, order: Iterable[tuple[str, str]], rid: str = "id") -> str | None:
        """The ORDER BY terms, ties by id (``rid``: how to write the id column), or None
        when a field cannot be sorted in SQL."""
        terms: list[str] = []
        for field, direction in order:
            d = "DESC" if direction == "desc" else "ASC"
            if field == "id":
                terms.append(f"{rid} {d}")
                continue
            f = self.field(field)
            if f is None:
                return None
            terms.extend(self.order_terms(f, d))
        terms.append(f"{rid} ASC")
        return ", ".join(terms)


def index_statements(schema: Schema, index: Callable[[str, str], str | None]) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` for every queryable field of ``schema``:
    ``index(collection, field)`` gives the dialect's statement, or None where the field
    cannot be indexed (its queries are finished in Python)."""
    statements = []
    for cname, coll in schema.collections.items():
        for field in sorted(coll.queryable):
            statement = index(cname, field)
            if statement is not None:
                statements.append(statement)
    return statements


# --- migrations -----------------------------------------------------------------------


def pending_migrations(
    where: str, migrations: Sequence[Sequence[str]], version: int
) -> list[tuple[int, Sequence[str]]]:
    """The steps that bring a database at schema ``version`` to the newest, numbered;
    a :class:`StoreError` if the database is newer than this code knows."""
    known = len(migrations)
    if version > known:
        raise StoreError(
            f"{where}: the database's syncline storage schema is version {version}, "
            f"but this syncline knows versions up to {known}; open it with a newer syncline"
        )
    return [(number, migrations[number - 1]) for number in range(version + 1, known + 1)]
