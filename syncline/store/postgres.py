"""The PostgreSQL store: one schema of a PostgreSQL database, shared by every node.

Theory of operation
-------------------

**Commit-ordered seq (invariant 1).** PostgreSQL sequences are not commit-ordered: a
transaction may take 11 and commit before the one that took 10, and a reader that saw
11 would skip 10 forever. This store allocates no number from a sequence. Every write
transaction, on every node, takes one transaction-scoped advisory lock
(``pg_advisory_xact_lock``, keyed by the schema) *before it reads the head*, and
PostgreSQL releases that lock only after the commit is durable and visible (the commit
record is flushed, then the transaction leaves the proc array, then its locks are
released). So write transactions run one after another across all nodes; under READ
COMMITTED each statement after the lock sees every earlier commit, so ``head() + 1`` is
unique and dense, and commit order is ``seq`` order: a snapshot that sees ``seq`` N was
taken after N's commit, which followed N - 1's. The engine reads the head early (field
versions carry the ``seq``), which is why the lock is taken first rather than "last,
just before commit": a writer needs its ``seq`` before it writes records. A rolled back
transaction used no number: the next one reads the same head.

**Group commit.** A lock held across a COMMIT would allow one fsync per mutation in the
whole cluster, so, as in :mod:`.sqlite`, the writers of one node share transactions.
``write()`` blocks run one at a time per store (an asyncio lock). The first statement
of a group takes a pool connection and sends, in one round trip,
``BEGIN ISOLATION LEVEL READ COMMITTED; SELECT pg_advisory_xact_lock(k); SAVEPOINT w``.
Each writer's statements run inside savepoint ``w``. When a block exits normally, its
pending writes are sent and, if writers are waiting for the lock, ``RELEASE SAVEPOINT
w; SAVEPOINT w`` opens a clean savepoint for the next one, which joins the group; if
nobody waits (or :attr:`PostgresStore.max_group` writers have joined), the group ends
with ``COMMIT``: one transaction, one WAL flush for the whole group. A block that raises
is undone with ``ROLLBACK TO SAVEPOINT w``; the group's other writers keep theirs. The
asyncio lock is released as soon as COMMIT is sent: the next group starts on another
connection and waits in ``pg_advisory_xact_lock`` until that COMMIT is done. Every
writer leaves ``write()`` only after its group's COMMIT succeeded, so every ack follows
its commit (invariant 2; ``synchronous_commit = on`` is set on every connection). If
COMMIT fails, every writer of the group gets a :class:`StoreError`; a writer cancelled
while a statement is in flight leaves the connection in an unknown state, so its whole
group is rolled back and fails. Writers of one group see each other's writes (one
connection, one transaction), so ``seq`` stays dense; the group reads the head once.

**Exactly-once (invariant 3).** ``advance_client`` is one conditional ``UPDATE ... WHERE
last = expected`` (an ``INSERT ... ON CONFLICT DO NOTHING`` for a new client), so even
without the advisory lock two nodes could never both advance a client from n - 1 to n.

**Reads.** ``read()`` takes a pool connection and, with its first statement, begins
``REPEATABLE READ READ ONLY``: one snapshot for the whole block.

**Round trips.** Writes that return nothing (``put``, ``append_log``, ``put_ack``) are
kept and sent together, as one statement of data-modifying CTEs over
``jsonb_to_recordset``, with the block's exit or before the next statement. An
``Engine.apply`` in a running group makes five: client, advance, get, pending writes,
and release-or-commit.

Tables (in the store's schema, version :data:`SCHEMA_VERSION`)
---------------------------------------------------------------

``meta(key, value)``
    ``epoch`` (random hex made once by the first migration, never changed), ``floor``
    and ``schema_version``, as text.
``records(collection, id, data, inc, v, fv, fw, adds, deleted)``
    ``data``, ``fv``, ``fw``, ``adds`` are JSONB; ``collection`` and ``id`` are
    ``COLLATE "C"`` (code point order, as Python sorts strings).
    :meth:`PostgresStore.ensure_indexes` adds an expression index on
    ``(data -> 'field')`` per queryable field, partial on its collection.
``log(pos, seq, collection, id, kind, inc, patch, before, after, client_id,
mutation_id, time)``
    ``pos`` is an identity column keeping insertion order within a ``seq``.
``clients(client_id, principal, last)`` and ``acks(client_id, mutation_id, ack)``
    As in :mod:`.sqlite`.

:data:`MIGRATIONS` run on :meth:`PostgresStore.open` in one transaction under another
advisory lock, so several nodes may start at once: one migrates, the others wait and
find the tables up to date. A schema newer than this code is refused.

Queries
-------

:meth:`ReadTx.query` compiles a :class:`~syncline.query.Query` to SQL reproducing
:meth:`Query.matches` and :meth:`Query.sort` for JSON scalars. Equality compares JSONB
values (``data -> 'f' = $1::jsonb``: numbers numerically, never a boolean with a number,
strings by bytes), which the expression indexes serve; ranges check the JSON type
first; strings compare ``COLLATE "C"``. The reference compares an array or object in a
queried field through Python's ``str()`` of it, which SQL cannot reproduce: string
ranges let such rows through and a window column tells whether any matched row holds
one in a string-ranged or ordered field; only then the store re-reads the matching rows
without order or limit and finishes in Python with the reference functions, as it also
does where SQL cannot express a query at all (a NUL character, a non-finite float).

Limits of JSONB: numbers are stored as ``numeric``, so a float written without a
fraction by the encoder (``1e16`` and up) reads back as an integer and ``-0.0`` as
``0.0``; strings cannot hold U+0000 (such a write fails with a :class:`StoreError`);
object keys come back in JSONB's order.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import math
from collections.abc import AsyncIterator, Coroutine, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias, TypeVar

import asyncpg  # type: ignore[import-untyped,unused-ignore]
import orjson

from ..exceptions import StoreError
from ..model import Schema
from ..query import Query
from ..record import Record
from .base import ClientState, LogEntry, ReadTx, Store, WriteTx
from .sqlite import _dumps, _log_entry, _record, _sql_text

if TYPE_CHECKING:
    _Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
    _RawConn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
    _Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStore", "quote_ident"]

T = TypeVar("T")

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial tables. "{schema}" stands for the store's quoted schema name.
    (
        """CREATE TABLE {schema}.meta (
            key   text PRIMARY KEY,
            value text NOT NULL
        )""",
        "INSERT INTO {schema}.meta (key, value) VALUES "
        "('epoch', substr(md5(random()::text || clock_timestamp()::text), 1, 16)), "
        "('floor', '0')",
        """CREATE TABLE {schema}.records (
            collection text COLLATE "C" NOT NULL,
            id         text COLLATE "C" NOT NULL,
            data       jsonb NOT NULL,
            inc        bigint NOT NULL,
            v          bigint NOT NULL,
            fv         jsonb NOT NULL,
            fw         jsonb NOT NULL,
            adds       jsonb NOT NULL,
            deleted    boolean NOT NULL DEFAULT false,
            PRIMARY KEY (collection, id)
        )""",
        "CREATE INDEX records_tombstones ON {schema}.records (v) WHERE deleted",
        """CREATE TABLE {schema}.log (
            pos         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            seq         bigint NOT NULL,
            collection  text COLLATE "C" NOT NULL,
            id          text COLLATE "C" NOT NULL,
            kind        text NOT NULL CHECK (kind IN ('insert', 'update', 'delete')),
            inc         bigint NOT NULL,
            patch       jsonb NOT NULL,
            "before"    jsonb,
            "after"     jsonb,
            client_id   text,
            mutation_id bigint,
            time        double precision NOT NULL
        )""",
        "CREATE INDEX log_seq ON {schema}.log (seq)",
        "CREATE INDEX log_time ON {schema}.log (time, seq)",
        """CREATE TABLE {schema}.clients (
            client_id text PRIMARY KEY,
            principal text NOT NULL,
            last      bigint NOT NULL
        )""",
        """CREATE TABLE {schema}.acks (
            client_id   text NOT NULL,
            mutation_id bigint NOT NULL,
            ack         jsonb NOT NULL,
            PRIMARY KEY (client_id, mutation_id)
        )""",
    ),
)
"""Each item is one schema version's SQL statements, applied in order. Append only:
never edit a released step (databases in the field already ran it)."""

SCHEMA_VERSION = len(MIGRATIONS)

_DB_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


# --- names and keys ---------------------------------------------------------------------


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    if not name or "\x00" in name:
        raise StoreError(f"{name!r} cannot be a PostgreSQL identifier")
    return '"' + name.replace('"', '""') + '"'


def _lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for ``purpose`` in ``schema``."""
    digest = hashlib.blake2b(f"syncline:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def _index_name(collection: str, field: str) -> str:
    """The index's quoted name; a hash where the plain one would pass 63 bytes (where
    PostgreSQL would cut it, and two long names could collide)."""
    name = f"records_{collection}_{field}"
    if len(name.encode()) > 63:
        digest = hashlib.blake2b(f"{collection}\x00{field}".encode(), digest_size=10).hexdigest()
        name = f"records_{digest}"
    return quote_ident(name)


class _SQL:
    """The statements of one store, with its schema name filled in."""

    def __init__(self, schema: str) -> None:
        s = quote_ident(schema)
        self.schema = s
        self.records = f"{s}.records"
        self.head = (
            f"SELECT coalesce((SELECT max(seq) FROM {s}.log), "
            f"(SELECT value::bigint FROM {s}.meta WHERE key = 'floor'))"
        )
        self.floor = f"SELECT value::bigint FROM {s}.meta WHERE key = 'floor'"
        self.get = f"SELECT {_RECORD_COLUMNS} FROM {s}.records WHERE collection = $1 AND id = $2"
        self.get_many = (
            f"SELECT {_RECORD_COLUMNS} FROM {s}.records "
            "WHERE collection = $1 AND id = ANY($2::text[])"
        )
        self.log = (
            f"SELECT {_LOG_COLUMNS} FROM {s}.log WHERE seq > $1 AND seq <= $2 ORDER BY seq, pos"
        )
        self.seq_at = f"SELECT max(seq) FROM {s}.log WHERE time <= $1"
        self.client = f"SELECT principal, last FROM {s}.clients WHERE client_id = $1"
        self.ack = f"SELECT ack FROM {s}.acks WHERE client_id = $1 AND mutation_id = $2"
        # One statement, whether the client exists or not (nothing else can interleave:
        # the writer holds the write lock, and the UPDATE is conditional regardless).
        self.advance = (
            f"WITH up AS (UPDATE {s}.clients SET principal = $2, last = $4 "
            "WHERE client_id = $1 AND last = $3 RETURNING 1), "
            f"ins AS (INSERT INTO {s}.clients (client_id, principal, last) "
            "SELECT $1, $2, $4 WHERE $3 = 0 AND NOT EXISTS (SELECT 1 FROM up) "
            "ON CONFLICT (client_id) DO NOTHING RETURNING 1) "
            "SELECT (SELECT count(*) FROM up) + (SELECT count(*) FROM ins)"
        )
        self.confirm_acks = f"DELETE FROM {s}.acks WHERE client_id = $1 AND mutation_id <= $2"
        self.trim = (
            f"WITH l AS (DELETE FROM {s}.log WHERE seq <= $1 RETURNING 1), "
            f"r AS (DELETE FROM {s}.records WHERE deleted AND v <= $1), "
            # acks of trimmed changes, and each such client's earlier ones
            f"a AS (DELETE FROM {s}.acks k WHERE k.mutation_id <= (SELECT max(x.mutation_id) "
            f"FROM {s}.acks x WHERE x.client_id = k.client_id "
            "AND (x.ack->>'seq')::bigint <= $1)), "
            f"m AS (UPDATE {s}.meta SET value = $1::text WHERE key = 'floor') "
            "SELECT count(*) FROM l"
        )
        self._flush: dict[tuple[bool, bool, bool], str] = {}

    def flush(self, records: bool, log: bool, acks: bool) -> str:
        """The statement sending pending writes: one data-modifying CTE per kind."""
        key = (records, log, acks)
        if key not in self._flush:
            s, parts, n = self.schema, [], 0
            if records:
                n += 1
                parts.append(
                    f"r AS (INSERT INTO {s}.records "
                    "(collection, id, data, inc, v, fv, fw, adds, deleted) "
                    "SELECT x.collection, x.id, x.data, x.inc, x.v, x.fv, x.fw, x.adds, x.deleted "
                    f"FROM jsonb_to_recordset(${n}::jsonb) AS x(collection text, id text, "
                    "data jsonb, inc bigint, v bigint, fv jsonb, fw jsonb, adds jsonb, "
                    "deleted boolean) "
                    "ON CONFLICT (collection, id) DO UPDATE SET data = excluded.data, "
                    "inc = excluded.inc, v = excluded.v, fv = excluded.fv, fw = excluded.fw, "
                    "adds = excluded.adds, deleted = excluded.deleted)"
                )
            if log:
                n += 1
                parts.append(
                    f"l AS (INSERT INTO {s}.log ({_LOG_COLUMNS}) "
                    "SELECT x.seq, x.collection, x.id, x.kind, x.inc, x.patch, x.before, "
                    "x.after, x.client_id, x.mutation_id, x.time "
                    f"FROM jsonb_to_recordset(${n}::jsonb) AS x(i int, seq bigint, "
                    "collection text, id text, kind text, inc bigint, patch jsonb, "
                    '"before" jsonb, "after" jsonb, client_id text, mutation_id bigint, '
                    "time double precision) ORDER BY x.i)"
                )
            if acks:
                n += 1
                parts.append(
                    f"a AS (INSERT INTO {s}.acks (client_id, mutation_id, ack) "
                    "SELECT x.client_id, x.mutation_id, x.ack "
                    f"FROM jsonb_to_recordset(${n}::jsonb) AS x(client_id text, "
                    "mutation_id bigint, ack jsonb) "
                    "ON CONFLICT (client_id, mutation_id) DO UPDATE SET ack = excluded.ack)"
                )
            self._flush[key] = "WITH " + ", ".join(parts) + " SELECT 1"
        return self._flush[key]


_RECORD_COLUMNS = "id, data, inc, v, fv, fw, adds, deleted"
_LOG_COLUMNS = (
    'seq, collection, id, kind, inc, patch, "before", "after", client_id, mutation_id, time'
)


# --- migrations -------------------------------------------------------------------------


async def _schema_version(conn: _Conn, sql: _SQL) -> int:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{sql.schema}.meta")
    if not exists:
        return 0
    value = await conn.fetchval(f"SELECT value FROM {sql.schema}.meta WHERE key = 'schema_version'")
    return int(value) if value is not None else 0


async def _migrate(
    conn: _Conn, migrations: Sequence[Sequence[str]], schema: str, sql: _SQL
) -> list[int]:
    """Bring the schema's tables to the newest version in one transaction, under an
    advisory lock (another node starting at the same time waits, then finds them up to
    date); return the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({_lock_key('migrate', schema)})")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.schema}")
        version = await _schema_version(conn, sql)
        known = len(migrations)
        if version > known:
            raise StoreError(
                f"schema {schema!r}: the database's syncline storage schema is version "
                f"{version}, but this syncline knows versions up to {known}; "
                "open it with a newer syncline"
            )
        for number in range(version + 1, known + 1):
            for statement in migrations[number - 1]:
                await conn.execute(statement.replace("{schema}", sql.schema))
            await conn.execute(
                f"INSERT INTO {sql.schema}.meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(number),
            )
            applied.append(number)
    return applied


async def _reset(conn: _RawConn) -> None:
    """What the pool runs on a connection given back: our blocks always end their
    transactions, so this is normally nothing (the default reset costs a round trip)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")


# --- query compilation ------------------------------------------------------------------

_RANGE_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_NON_SCALAR = "('array', 'object')"


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
    return _dumps(value)


def _field_sql(field: str) -> str | None:
    """The JSONB expression of a data field (as the indexes have it), or None."""
    return None if "\x00" in field else f"(data -> {_sql_text(field)})"


class _Compiler:
    """Builds the WHERE and ORDER BY of one query; ``exact`` turns False when some part
    must be finished in Python; ``loose`` collects the field expressions whose array or
    object values SQL cannot compare (string ranges and orderings)."""

    def __init__(self) -> None:
        self.params: list[Any] = []
        self.exact = True
        self.loose: list[str] = []

    def bind(self, value: Any, cast: str = "") -> str:
        self.params.append(value)
        return f"${len(self.params)}{cast}"

    def condition(self, field: str, op: str, value: Any) -> str | None:
        values = value if op == "in" else (value,)
        if not all(_bindable(v) for v in values):
            return None
        if field == "id":
            return self.id_condition(op, value)
        j = _field_sql(field)
        if j is None:
            return None
        if op == "eq":
            return self.eq(j, value)
        if op == "ne":
            return f"({self.eq(j, value)}) IS NOT TRUE"
        if op == "in":
            return self.one_of(j, value)
        return self.range(j, _RANGE_OPS[op], value)

    def eq(self, j: str, x: Any) -> str:
        if x is None:
            return f"coalesce(jsonb_typeof({j}), 'null') = 'null'"
        return f"{j} = {self.bind(_json_operand(x), '::jsonb')}"

    def one_of(self, j: str, values: Iterable[Any]) -> str:
        values = list(values)
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
            f"{self.bind(x, '::text')}) OR jsonb_typeof({j}) IN {_NON_SCALAR})"
        )

    def id_condition(self, op: str, x: Any) -> str:
        if op == "in":
            texts = [e for e in x if isinstance(e, str)]
            return (
                f"id IN ({', '.join(self.bind(e, '::text') for e in texts)})" if texts else "false"
            )
        if op == "ne":
            return f"id <> {self.bind(x, '::text')}" if isinstance(x, str) else "true"
        if not isinstance(x, str):
            return "false"
        if op == "eq":
            return f"id = {self.bind(x, '::text')}"
        return f"id {_RANGE_OPS[op]} {self.bind(x, '::text')}"

    def order(self, order: Iterable[tuple[str, str]]) -> str | None:
        """The ORDER BY terms: per field its type rank (None, booleans, numbers, strings),
        then booleans and numbers as JSONB, then strings in code point order; ties by id."""
        terms: list[str] = []
        for field, direction in order:
            d = "DESC" if direction == "desc" else "ASC"
            if field == "id":
                terms.append(f"id {d}")
                continue
            j = _field_sql(field)
            if j is None:
                return None
            self.loose.append(j)
            t = f"jsonb_typeof({j})"
            terms.append(
                f"CASE {t} WHEN 'boolean' THEN 1 WHEN 'number' THEN 2 WHEN 'string' THEN 3 "
                f"WHEN 'array' THEN 3 WHEN 'object' THEN 3 ELSE 0 END {d}"
            )
            terms.append(f"CASE WHEN {t} IN ('boolean', 'number') THEN {j} END {d}")
            terms.append(f"(CASE WHEN {t} = 'string' THEN {j} #>> '{{}}' END) COLLATE \"C\" {d}")
        terms.append("id ASC")
        return ", ".join(terms)


@dataclass(frozen=True)
class _Compiled:
    """A query's SQL. ``finish``: the query Python must finish the rows with (the SQL
    then has no order or limit). ``guarded``: the SQL's last column says whether Python
    must finish after all (an array or object in a loose field); ``fallback`` is the same
    filter without order or limit, for that case."""

    sql: str
    params: list[Any]
    finish: Query | None
    guarded: bool = False
    fallback: str = ""


def _compile(query: Query, apply_limit: bool, table: str) -> _Compiled:
    c = _Compiler()
    limit = query.limit if apply_limit else None
    finish = Query(query.collection, query.conditions, query.order, limit)
    where = [f"collection = {_sql_text(query.collection)}", "NOT deleted"]
    for field, op, value in query.conditions:
        sql = c.condition(field, op, value)
        if sql is None:
            c.exact = False
        else:
            where.append(sql)
    base = f"FROM {table} WHERE {' AND '.join(where)}"
    plain = f"SELECT {_RECORD_COLUMNS} {base}"
    order = c.order(query.order) if c.exact else None
    if order is None:
        return _Compiled(plain, c.params, finish)
    columns = _RECORD_COLUMNS
    if c.loose:
        odd = " OR ".join(f"jsonb_typeof({j}) IN {_NON_SCALAR}" for j in dict.fromkeys(c.loose))
        columns += f", coalesce(bool_or({odd}) OVER (), false)"
    text = f"SELECT {columns} {base} ORDER BY {order}"
    if limit is not None:
        text += f" LIMIT {int(limit)}"
    return _Compiled(text, c.params, None, guarded=bool(c.loose), fallback=plain)


def _finish(rows: Iterable[Any], query: Query) -> list[Record]:
    """Filter, order and limit ``rows`` with the reference functions."""
    records = [_record(tuple(r)[:8]) for r in rows]
    by_id = {r.id: r for r in records}
    views = [{**r.data, "id": r.id} for r in records]
    ordered = Query(query.collection, (), query.order, query.limit)
    return [by_id[str(v["id"])] for v in ordered.sort([v for v in views if query.matches(v)])]


def _index_statements(schema: Schema, table: str) -> list[str]:
    """``CREATE INDEX IF NOT EXISTS`` for every queryable field of ``schema``: an
    expression index on the JSONB value the compiled queries compare, partial on the
    collection so each collection's index holds only its own records."""
    statements = []
    for cname, coll in schema.collections.items():
        for field in sorted(coll.queryable):
            j = _field_sql(field)
            if j is None or "\x00" in cname:
                continue
            statements.append(
                f"CREATE INDEX IF NOT EXISTS {_index_name(cname, field)} "
                f"ON {table} ({j}) WHERE collection = {_sql_text(cname)}"
            )
    return statements


# --- transactions -----------------------------------------------------------------------


def _error(store: PostgresStore, exc: BaseException) -> StoreError:
    error = StoreError(f"PostgreSQL schema {store.schema!r}: {exc}")
    error.__cause__ = exc
    return error


class _Read(ReadTx):
    """A read on its own pool connection; the first statement begins the snapshot."""

    def __init__(self, store: PostgresStore, conn: _Conn | None) -> None:
        self._store = store
        self._sql = store._sql
        self._conn = conn
        self._begun = False
        self._ended = False

    def _check(self) -> None:
        if self._ended:
            raise StoreError("this transaction has ended; use it only inside its block")

    async def _connection(self) -> _Conn:
        assert self._conn is not None
        if not self._begun:
            self._begun = True
            await self._conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        return self._conn

    async def _call(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return await work
        except _DB_ERRORS as exc:
            raise _error(self._store, exc) from exc

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        self._check()
        conn = await self._call(self._connection())
        return list(await self._call(conn.fetch(sql, *args)))

    async def _fetchval(self, sql: str, *args: Any) -> Any:
        rows = await self._fetch(sql, *args)
        return rows[0][0] if rows else None

    async def epoch(self) -> str:
        return self._store._epoch

    async def head(self) -> int:
        return int(await self._fetchval(self._sql.head))

    async def floor(self) -> int:
        return int(await self._fetchval(self._sql.floor))

    async def get(self, collection: str, record_id: str) -> Record | None:
        rows = await self._fetch(self._sql.get, collection, record_id)
        return _record(tuple(rows[0])) if rows else None

    async def get_many(self, collection: str, ids: Iterable[str]) -> dict[str, Record]:
        wanted = list(ids)
        if not wanted:
            return {}
        rows = await self._fetch(self._sql.get_many, collection, wanted)
        return {r.id: r for r in (_record(tuple(row)) for row in rows)}

    async def query(self, query: Query, *, apply_limit: bool = True) -> list[Record]:
        if "\x00" in query.collection:
            return []  # no stored collection name can hold it
        compiled = _compile(query, apply_limit, self._sql.records)
        rows = await self._fetch(compiled.sql, *compiled.params)
        if compiled.finish is not None:
            return _finish(rows, compiled.finish)
        if compiled.guarded and rows and rows[0][8]:
            rows = await self._fetch(compiled.fallback, *compiled.params)
            limit = query.limit if apply_limit else None
            return _finish(rows, Query(query.collection, query.conditions, query.order, limit))
        return [_record(tuple(r)[:8]) for r in rows]

    async def log(self, after: int, upto: int) -> list[LogEntry]:
        rows = await self._fetch(self._sql.log, after, upto)
        return [_log_entry(tuple(r)) for r in rows]

    async def seq_at(self, when: float) -> int:
        value = await self._fetchval(self._sql.seq_at, when)
        return int(value) if value is not None else await self.floor()

    async def client(self, client_id: str) -> ClientState | None:
        rows = await self._fetch(self._sql.client, client_id)
        return ClientState(client_id, rows[0][0], int(rows[0][1])) if rows else None

    async def ack(self, client_id: str, mutation_id: int) -> dict[str, Any] | None:
        value = await self._fetchval(self._sql.ack, client_id, mutation_id)
        if value is None:
            return None
        ack: dict[str, Any] = orjson.loads(value)
        return ack


@dataclass(eq=False)
class _Group:
    """Writers sharing one PostgreSQL transaction; ``done`` resolves after its COMMIT.

    ``conn`` is taken with the group's first statement. ``head`` is the head as the
    group's finished writers left it (None until first read). ``savepoint``: a clean
    savepoint ``w`` is open for the next writer. ``broken``: the connection's state is
    unknown or a savepoint could not be undone; the group ends in ROLLBACK.
    """

    done: asyncio.Future[None]
    joined: int = 0
    conn: _Conn | None = None
    head: int | None = None
    savepoint: bool = False
    broken: BaseException | None = None


@dataclass(eq=False)
class _Pending:
    """Writes kept, encoded at once as JSON objects, until the next statement or the
    block's exit (last put of a record and last ack of a mutation win; log rows keep
    their order)."""

    records: dict[tuple[str, str], str] = dataclasses.field(default_factory=dict)
    log: list[str] = dataclasses.field(default_factory=list)
    acks: dict[tuple[str, int], str] = dataclasses.field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.records or self.log or self.acks)


class _Write(_Read, WriteTx):
    """One writer of a group, inside savepoint ``w`` on the group's connection: reads
    see the group's earlier writes and this transaction's own."""

    def __init__(self, store: PostgresStore, group: _Group) -> None:
        super().__init__(store, None)
        self._group = group
        self._entered = False  # this writer's statements run in the savepoint
        self._head: int | None = None
        self._pending = _Pending()

    async def _connection(self) -> _Conn:
        """The group's connection, with its transaction and this writer's savepoint
        open. Anything that interrupts a statement half way breaks the group."""
        g = self._group
        if g.broken is not None:
            raise StoreError(f"an earlier write of this group failed: {g.broken}")
        try:
            if g.conn is None:
                g.conn = await self._store._acquire_connection()
                key = self._store._write_key
                await g.conn.execute(
                    "BEGIN ISOLATION LEVEL READ COMMITTED; "
                    f"SELECT pg_advisory_xact_lock({key}); SAVEPOINT w"
                )
                g.savepoint = True
            elif not g.savepoint:
                await g.conn.execute("SAVEPOINT w")
                g.savepoint = True
        except BaseException as exc:
            g.broken = g.broken or exc
            raise
        self._entered = True
        return g.conn

    async def _call(self, work: Coroutine[Any, Any, T]) -> T:
        try:
            return await work
        except asyncpg.PostgresError as exc:
            raise _error(self._store, exc) from exc  # the savepoint undoes it at exit
        except BaseException as exc:  # cancelled or disconnected: state unknown
            self._group.broken = self._group.broken or exc
            if isinstance(exc, _DB_ERRORS):
                raise _error(self._store, exc) from exc
            raise

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        self._check()
        conn = await self._call(self._connection())
        await self._send_pending(conn)
        return list(await self._call(conn.fetch(sql, *args)))

    async def _send_pending(self, conn: _Conn) -> None:
        p = self._pending
        if not p:
            return
        self._pending = _Pending()
        args = [
            "[" + ",".join(rows) + "]"
            for rows in (list(p.records.values()), p.log, list(p.acks.values()))
            if rows
        ]
        sql = self._sql.flush(bool(p.records), bool(p.log), bool(p.acks))
        await self._call(conn.execute(sql, *args))

    async def head(self) -> int:
        if self._head is None:
            if self._group.head is None:
                self._group.head = int(await self._fetchval(self._sql.head))
            self._head = self._group.head
        return self._head

    async def advance_client(self, client_id: str, principal: str, expected: int, new: int) -> bool:
        value = await self._fetchval(self._sql.advance, client_id, principal, expected, new)
        return int(value) == 1

    async def put(self, collection: str, record: Record) -> None:
        self._check()
        self._pending.records[(collection, record.id)] = _dumps(
            {"collection": collection, **record.to_store()}
        )

    async def append_log(self, entries: list[LogEntry]) -> None:
        head = await self.head()
        for e in entries:
            if e.seq != head + 1 and e.seq != head:
                raise StoreError(f"log seq {e.seq} does not follow head {head}")
            head = e.seq
        start = len(self._pending.log)
        self._pending.log.extend(
            _dumps(
                {
                    "i": start + n,
                    "seq": e.seq,
                    "collection": e.collection,
                    "id": e.id,
                    "kind": e.kind,
                    "inc": e.inc,
                    "patch": e.patch,
                    "before": e.before,
                    "after": e.after,
                    "client_id": e.client_id,
                    "mutation_id": e.mutation_id,
                    "time": e.time,
                }
            )
            for n, e in enumerate(entries)
        )
        self._head = head

    async def put_ack(self, client_id: str, mutation_id: int, ack: dict[str, Any]) -> None:
        self._check()
        self._pending.acks[(client_id, mutation_id)] = _dumps(
            {"client_id": client_id, "mutation_id": mutation_id, "ack": ack}
        )

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        await self._fetch(self._sql.confirm_acks, client_id, upto)

    async def trim(self, upto: int) -> int:
        upto = min(upto, await self.head())
        if upto <= await self.floor():
            return 0
        return int(await self._fetchval(self._sql.trim, upto))

    async def _leave(self, ok: bool, end: bool) -> Exception | None:
        """The block exited (``ok``: normally): send its pending writes and hand a clean
        savepoint to the next writer, or undo it; COMMIT comes after, if ``end``.
        Returns the error that undid an ``ok`` block (its pending writes failed)."""
        own: Exception | None = None
        g = self._group
        if ok and self._pending and g.broken is None:
            try:
                await self._connection()
            except Exception as exc:
                own = exc
        if not self._entered or g.broken is not None:
            return own
        conn = g.conn
        assert conn is not None
        if ok and own is None:
            try:
                await self._send_pending(conn)
            except Exception as exc:
                own = exc
        try:
            if ok and own is None:
                if not end:  # COMMIT would release it anyway
                    await conn.execute("RELEASE SAVEPOINT w; SAVEPOINT w")
                if self._head is not None:
                    g.head = self._head
            else:
                await conn.execute("ROLLBACK TO SAVEPOINT w")  # w stays open, clean
        except BaseException as exc:
            g.broken = g.broken or exc
        return own


# --- the store --------------------------------------------------------------------------


class PostgresStore(Store):
    """A store in one schema of a PostgreSQL database, shared by every node (see the
    module docs for the seq design, group commit, tables and queries). ``commits``
    counts the COMMITs of write groups since ``open()``; ``migrations_applied`` lists
    the schema versions the last ``open()`` applied."""

    migrations: tuple[tuple[str, ...], ...] = MIGRATIONS
    max_group = 256
    """At most this many writers share one COMMIT."""
    rollback_timeout = 5.0
    """Seconds a failed group's ROLLBACK may take before its connection is closed."""

    def __init__(
        self, dsn: str, *, schema: str = "syncline", min_size: int = 1, max_size: int = 10
    ) -> None:
        if max_size < 2:
            raise StoreError("max_size must be at least 2: a committing group and the next")
        self.dsn = dsn
        self.schema = schema
        self.min_size = min_size
        self.max_size = max_size
        self.commits = 0
        self.migrations_applied: list[int] = []
        self._sql = _SQL(schema)
        self._write_key = _lock_key("write", schema)
        self._state: Literal["new", "open", "closing", "closed"] = "new"
        self._epoch = ""
        self._pool: _Pool | None = None
        self._lock = asyncio.Lock()
        self._waiting = 0
        self._group: _Group | None = None
        self._tasks: set[asyncio.Task[Any]] = set()

    # --- lifecycle --------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._state == "open"

    async def open(self) -> None:
        """Connect, create the schema if needed and migrate syncline's tables.

        Raises :class:`StoreError` if the database cannot be reached or its tables are
        newer than this code.
        """
        if self._state == "open":
            return
        if self._state != "new":
            raise StoreError("this PostgresStore was closed; make a new one")
        try:
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                server_settings={"synchronous_commit": "on", "application_name": "syncline"},
                reset=_reset,
            )
        except _DB_ERRORS as exc:
            raise StoreError(f"cannot connect to PostgreSQL ({self.dsn}): {exc}") from exc
        try:
            async with pool.acquire() as conn:
                self.migrations_applied = await _migrate(
                    conn, self.migrations, self.schema, self._sql
                )
                self._epoch = str(
                    await conn.fetchval(
                        f"SELECT value FROM {self._sql.schema}.meta WHERE key = 'epoch'"
                    )
                )
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, _DB_ERRORS):
                raise _error(self, exc) from exc
            raise
        self._pool = pool
        self._state = "open"

    async def close(self) -> None:
        """Commit a group still open, then close the pool."""
        if self._state != "open":
            if self._state == "new":
                self._state = "closed"
            return
        self._state = "closing"
        await asyncio.shield(self._spawn(self._shutdown()))
        pending = [t for t in self._tasks if t is not asyncio.current_task()]
        if pending:
            await asyncio.wait(pending)

    async def _shutdown(self) -> None:
        await self._acquire()
        try:
            group, self._group = self._group, None
            if group is not None:
                await self._end(group)
            if self._pool is not None:
                try:
                    await asyncio.wait_for(self._pool.close(), 10)
                except (TimeoutError, *_DB_ERRORS):
                    self._pool.terminate()
                self._pool = None
        finally:
            self._state = "closed"
            self._lock.release()

    def _check_open(self) -> _Pool:
        if self._state != "open" or self._pool is None:
            raise StoreError(f"the store is {self._state}; use it between open() and close()")
        return self._pool

    async def _acquire_connection(self) -> _Conn:
        pool = self._check_open()
        try:
            return await pool.acquire()
        except _DB_ERRORS as exc:
            raise _error(self, exc) from exc

    def _spawn(self, work: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run store bookkeeping as its own task, so cancelling the caller cannot stop it
        half way."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: whoever awaited it has seen it already

    # --- reads ------------------------------------------------------------------------

    @asynccontextmanager
    async def read(self) -> AsyncIterator[ReadTx]:
        conn = await self._acquire_connection()
        tx = _Read(self, conn)
        try:
            yield tx
        finally:
            tx._ended = True
            await asyncio.shield(self._spawn(self._end_read(conn, tx._begun)))

    async def _end_read(self, conn: _Conn, begun: bool) -> None:
        """End the snapshot and give the connection back (asyncpg lets a cancelled
        statement finish before the next one runs); closed if ROLLBACK fails."""
        try:
            if begun:
                await conn.execute("ROLLBACK")
        except BaseException:
            conn.terminate()
        if self._pool is not None:
            await self._pool.release(conn)

    # --- writes and group commit ------------------------------------------------------

    @asynccontextmanager
    async def write(self) -> AsyncIterator[WriteTx]:
        self._check_open()
        await self._acquire()
        # This writer holds the lock until its _leave() task releases it.
        try:
            self._check_open()  # close() may have begun while this writer waited
        except StoreError:
            self._lock.release()
            raise
        group = self._group
        if group is None:
            group = self._group = _Group(asyncio.get_running_loop().create_future())
        group.joined += 1
        tx = _Write(self, group)
        try:
            yield tx
        except BaseException:
            tx._ended = True
            await asyncio.shield(self._spawn(self._leave(tx, ok=False)))
            raise
        tx._ended = True
        # Shielded: cancelling this writer must not cancel its exit or its group's COMMIT.
        own = await asyncio.shield(self._spawn(self._leave(tx, ok=True)))
        if own is not None:
            raise _error(self, own) from own
        await asyncio.shield(group.done)

    async def _leave(self, tx: _Write, ok: bool) -> Exception | None:
        """Finish one writer (lock held) and release the lock; if nobody is waiting to
        join (or the group is full), end the group: its COMMIT runs as a task, and the
        next writer starts a new group at once (it waits in the advisory lock)."""
        group = tx._group
        end = self._waiting == 0 or group.joined >= self.max_group
        try:
            return await tx._leave(ok, end)
        finally:
            if end:
                if self._group is group:
                    self._group = None
                self._spawn(self._end(group))
            self._lock.release()

    async def _acquire(self) -> None:
        """Take the write lock, counted in ``_waiting`` while waiting: a writer that
        leaves the lock with someone waiting hands the open group over to them."""
        self._waiting += 1
        try:
            await self._lock.acquire()
        except BaseException:
            self._waiting -= 1
            if self._group is not None and self._waiting == 0 and not self._lock.locked():
                self._spawn(self._flush())  # the group was handed to this writer, which left
            raise
        self._waiting -= 1

    async def _flush(self) -> None:
        """End a group whose last writer left it to someone who then gave up waiting."""
        await self._acquire()
        try:
            group = self._group
            if group is not None and (self._waiting == 0 or group.joined >= self.max_group):
                self._group = None
                self._spawn(self._end(group))
        finally:
            self._lock.release()

    async def _end(self, group: _Group) -> None:
        """COMMIT the group's transaction (ROLLBACK if it is broken) and settle its
        writers; then give the connection back, or close it if it does not answer (a
        statement cancelled half way is cancelled on the server first: asyncpg runs
        the next command only after that, so ROLLBACK also waits for it)."""
        conn, error = group.conn, group.broken
        healthy = True
        try:
            if conn is not None and error is None:
                status = await conn.execute("COMMIT")
                if status != "COMMIT":  # an aborted transaction "commits" as ROLLBACK
                    error = StoreError(f"COMMIT answered {status!r}")
                else:
                    self.commits += 1
            elif conn is not None:
                await asyncio.wait_for(conn.execute("ROLLBACK"), self.rollback_timeout)
        except asyncpg.PostgresError as exc:  # the server answered: the connection is fine
            error = error or exc
        except BaseException as exc:
            error, healthy = error or exc, False
        finally:
            if conn is not None:
                if not healthy:
                    conn.terminate()  # PostgreSQL rolls back what it has not committed
                if self._pool is not None:
                    await self._pool.release(conn)
        if error is None:
            group.done.set_result(None)
        else:
            failure = StoreError(
                f"PostgreSQL schema {self.schema!r}: the write group failed, none of its "
                f"writers is acknowledged: {error}"
            )
            failure.__cause__ = error
            group.done.set_exception(failure)
        group.done.add_done_callback(_consume)

    # --- diagnostics and indexes ------------------------------------------------------

    async def setting(self, name: str) -> str:
        """The value of a server setting on a pool connection (``synchronous_commit``
        ...), for diagnostics and tests."""
        pool = self._check_open()
        async with pool.acquire() as conn:
            return str(await conn.fetchval("SELECT current_setting($1)", name))

    async def ensure_indexes(self, schema: Schema) -> list[str]:
        """Create (if missing) an expression index per queryable field of ``schema``;
        return the statements run. Queries filtering on those fields then use them.
        Safe from several nodes at once (under the migrations' advisory lock)."""
        statements = _index_statements(schema, self._sql.records)
        pool = self._check_open()
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(
                    f"SELECT pg_advisory_xact_lock({_lock_key('migrate', self.schema)})"
                )
                for statement in statements:
                    await conn.execute(statement)
        except _DB_ERRORS as exc:
            raise _error(self, exc) from exc
        return statements


def _consume(future: asyncio.Future[Any]) -> None:
    """Mark an outcome as retrieved, even if whoever would await it was cancelled."""
    if not future.cancelled():
        future.exception()
