"""Shared fixtures: the stores every conformance test runs against, hypothesis profiles."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import NoReturn

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


@pytest.fixture(params=sorted(STORE_FACTORIES))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """Every store implementation, opened on an empty database."""
    s = STORE_FACTORIES[request.param](tmp_path)
    await s.open()
    try:
        yield s
    finally:
        await s.close()
