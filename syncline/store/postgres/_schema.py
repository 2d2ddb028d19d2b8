"""PostgreSQL's tables and statements: :data:`MIGRATIONS` (run under an advisory lock,
so several nodes may start at once), and :class:`Statements`, every statement of one
store with its schema name filled in."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, TypeAlias

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from ...exceptions import StoreError
from .._sql import LOG_COLUMNS, RECORD_COLUMNS, pending_migrations

if TYPE_CHECKING:
    Conn: TypeAlias = "asyncpg.pool.PoolConnectionProxy[asyncpg.Record]"
    RawConn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"
    Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"

__all__ = [
    "DB_ERRORS",
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "Statements",
    "lock_key",
    "migrate",
    "quote_ident",
    "reset",
]

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

DB_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # a connection lost half way through a statement
    OSError,
    TimeoutError,
)


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier."""
    if not name or "\x00" in name:
        raise StoreError(f"{name!r} cannot be a PostgreSQL identifier")
    return '"' + name.replace('"', '""') + '"'


def lock_key(purpose: str, schema: str) -> int:
    """A stable signed 64-bit advisory lock key for ``purpose`` in ``schema``."""
    digest = hashlib.blake2b(f"syncline:{purpose}:{schema}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class Statements:
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
        self.epoch = f"SELECT value FROM {s}.meta WHERE key = 'epoch'"
        self.get = f"SELECT {RECORD_COLUMNS} FROM {s}.records WHERE collection = $1 AND id = $2"
        self.get_many = (
            f"SELECT {RECORD_COLUMNS} FROM {s}.records "
            "WHERE collection = $1 AND id = ANY($2::text[])"
        )
        self.log = (
            f"SELECT {LOG_COLUMNS} FROM {s}.log WHERE seq > $1 AND seq <= $2 ORDER BY seq, pos"
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
                    f"l AS (INSERT INTO {s}.log ({LOG_COLUMNS}) "
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


async def _schema_version(conn: Conn, sql: Statements) -> int:
    exists = await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", f"{sql.schema}.meta")
    if not exists:
        return 0
    value = await conn.fetchval(f"SELECT value FROM {sql.schema}.meta WHERE key = 'schema_version'")
    return int(value) if value is not None else 0


async def migrate(
    conn: Conn, migrations: Sequence[Sequence[str]], schema: str, sql: Statements
) -> list[int]:
    """Bring the schema's tables to the newest version in one transaction, under an
    advisory lock (another node starting at the same time waits, then finds them up to
    date); return the versions applied."""
    applied: list[int] = []
    async with conn.transaction():
        await conn.execute(f"SELECT pg_advisory_xact_lock({lock_key('migrate', schema)})")
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.schema}")
        version = await _schema_version(conn, sql)
        for number, statements in pending_migrations(f"schema {schema!r}", migrations, version):
            for statement in statements:
                await conn.execute(statement.replace("{schema}", sql.schema))
            await conn.execute(
                f"INSERT INTO {sql.schema}.meta (key, value) VALUES ('schema_version', $1) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                str(number),
            )
            applied.append(number)
    return applied


async def reset(conn: RawConn) -> None:
    """What the pool runs on a connection given back: our blocks always end their
    transactions, so this is normally nothing (the default reset costs a round trip)."""
    if conn.is_in_transaction():
        await conn.execute("ROLLBACK")
