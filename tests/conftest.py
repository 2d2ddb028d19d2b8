"""Shared fixtures: the stores every conformance test runs against, hypothesis profiles."""

from __future__ import annotations

import os
import secrets
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import closing
from pathlib import Path
from typing import Any, NoReturn

import pytest
from hypothesis import HealthCheck, settings

from syncline.exceptions import StoreError
from syncline.store import MemoryStore, Store

# CI runs more examples; every failure prints the blob that replays it.
settings.register_profile(
    "ci",
    max_examples=200,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "dev",
    max_examples=60,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("ci" if os.environ.get("CI") == "true" else "dev")


def _sqlite(tmp_path: Path) -> Store:
    from syncline.store.sqlite import SQLiteStore

    return SQLiteStore(tmp_path / "conformance.sqlite3")


PG_DSN = os.environ.get("SYNCLINE_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
"""The PostgreSQL the tests use; each test makes its own schema in it and drops it."""


def pg_unavailable(exc: BaseException) -> NoReturn:
    """PostgreSQL cannot be reached: under CI=true the test fails, elsewhere it skips."""
    message = f"PostgreSQL at {PG_DSN} cannot be reached: {exc}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)


def new_pg_schema() -> str:
    return f"syncline_test_{secrets.token_hex(6)}"


async def drop_pg_schema(schema: str) -> None:
    import asyncpg

    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


def _postgres(_: Path) -> Store:
    from syncline.store.postgres import PostgresStore

    class TestPostgresStore(PostgresStore):
        """A store on a schema of its own, dropped when it closes."""

        async def open(self) -> None:
            try:
                await super().open()
            except StoreError as exc:
                if "cannot connect" in str(exc):
                    pg_unavailable(exc)
                raise

        async def close(self) -> None:
            try:
                await super().close()
            finally:
                await drop_pg_schema(self.schema)

    return TestPostgresStore(PG_DSN, schema=new_pg_schema(), max_size=4)


STORE_FACTORIES: dict[str, Callable[[Path], Store]] = {
    "memory": lambda _: MemoryStore(),
    "sqlite": _sqlite,
    "postgres": _postgres,
}


async def _opened(kind: str, tmp_path: Path) -> AsyncIterator[Store]:
    s = STORE_FACTORIES[kind](tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store implementation, opened on an empty database."""
    async for s in _opened(request.param, tmp_path):
        yield s


GROUPED = ("postgres", "sqlite")
"""The stores whose writers share transactions (``syncline.store._group``)."""


@pytest.fixture(params=GROUPED)
async def grouped(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """Every group-commit store (``commits``, ``ensure_indexes``, a failing COMMIT),
    opened on an empty database."""
    async for s in _opened(request.param, tmp_path):
        yield s


class Kit:
    """What a conformance test reaches under a group-commit store: its database seen
    from another connection (an operator, another process), and the same database
    opened again by a store of the same dialect."""

    table_prefix = ""
    """How a migration step names a table (PostgreSQL's say ``{schema}.name``)."""

    def again(self, store: Any, migrations: tuple[tuple[str, ...], ...] | None = None) -> Any:
        """A new store on ``store``'s database, with other ``migrations`` if given."""
        raise NotImplementedError

    async def has_table(self, store: Any, name: str) -> bool:
        raise NotImplementedError

    async def schema_version(self, store: Any) -> int:
        raise NotImplementedError

    async def set_schema_version(self, store: Any, version: int) -> None:
        raise NotImplementedError


def _migrated(cls: type, migrations: tuple[tuple[str, ...], ...] | None) -> type:
    return cls if migrations is None else type("Migrated", (cls,), {"migrations": migrations})


class SQLiteKit(Kit):
    def again(self, store: Any, migrations: tuple[tuple[str, ...], ...] | None = None) -> Any:
        from syncline.store.sqlite import SQLiteStore

        return _migrated(SQLiteStore, migrations)(store.path)

    def _fetch(self, store: Any, sql: str, *args: Any) -> Any:
        with closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            row = db.execute(sql, args).fetchone()
        return None if row is None else row[0]

    async def has_table(self, store: Any, name: str) -> bool:
        return self._fetch(store, "SELECT 1 FROM sqlite_master WHERE name = ?", name) is not None

    async def schema_version(self, store: Any) -> int:
        return int(self._fetch(store, "SELECT value FROM meta WHERE key = 'schema_version'"))

    async def set_schema_version(self, store: Any, version: int) -> None:
        self._fetch(store, "UPDATE meta SET value = ? WHERE key = 'schema_version'", version)


class PostgresKit(Kit):
    table_prefix = "{schema}."

    def again(self, store: Any, migrations: tuple[tuple[str, ...], ...] | None = None) -> Any:
        from syncline.store.postgres import PostgresStore

        return _migrated(PostgresStore, migrations)(PG_DSN, schema=store.schema)

    async def _fetch(self, sql: str, *args: Any) -> Any:
        import asyncpg

        conn = await asyncpg.connect(PG_DSN)
        try:
            return await conn.fetchval(sql, *args)
        finally:
            await conn.close()

    async def has_table(self, store: Any, name: str) -> bool:
        found = await self._fetch("SELECT to_regclass($1)", f'"{store.schema}".{name}')
        return found is not None

    async def schema_version(self, store: Any) -> int:
        sql = f"SELECT value FROM \"{store.schema}\".meta WHERE key = 'schema_version'"
        return int(await self._fetch(sql))

    async def set_schema_version(self, store: Any, version: int) -> None:
        sql = f"UPDATE \"{store.schema}\".meta SET value = $1 WHERE key = 'schema_version'"
        await self._fetch(sql, str(version))


def kit(store: Store) -> Kit:
    """The :class:`Kit` of a store of the ``grouped`` fixture."""
    from syncline.store.sqlite import SQLiteStore

    return SQLiteKit() if isinstance(store, SQLiteStore) else PostgresKit()


async def poison_commits(store: Store) -> None:
    """Make the COMMIT of any group that wrote the record ``poison`` fail, as a
    deferred constraint does: the statements succeed, the COMMIT does not."""
    from syncline.store.postgres import PostgresStore, quote_ident
    from syncline.store.sqlite import SQLiteStore

    if isinstance(store, SQLiteStore):
        with closing(sqlite3.connect(store.path, isolation_level=None)) as db:
            db.execute("CREATE TABLE parent (id TEXT PRIMARY KEY)")
            db.execute(
                "CREATE TABLE child (pid TEXT REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
            )
            db.execute(
                "CREATE TRIGGER poison AFTER INSERT ON records WHEN NEW.id = 'poison' "
                "BEGIN INSERT INTO child VALUES ('missing'); END"
            )
        return
    assert isinstance(store, PostgresStore), store
    import asyncpg

    s = quote_ident(store.schema)
    conn = await asyncpg.connect(PG_DSN)
    try:
        await conn.execute(
            f"CREATE FUNCTION {s}.poison() RETURNS trigger LANGUAGE plpgsql AS "
            "$$ BEGIN RAISE EXCEPTION 'poisoned'; END $$"
        )
        await conn.execute(
            f"CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON {s}.records "
            "DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.id = 'poison') "
            f"EXECUTE FUNCTION {s}.poison()"
        )
    finally:
        await conn.close()
