"""SQLite's tables: :data:`MIGRATIONS`, applied in order inside one transaction when
the store opens; a file newer than this code is refused."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from .._sql import pending_migrations

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    # 1: the initial tables.
    (
        """CREATE TABLE meta (
            key   TEXT PRIMARY KEY,
            value
        )""",
        "INSERT INTO meta (key, value) VALUES ('epoch', lower(hex(randomblob(8)))), ('floor', 0)",
        """CREATE TABLE records (
            collection TEXT NOT NULL,
            id         TEXT NOT NULL,
            data       TEXT NOT NULL,
            inc        INTEGER NOT NULL,
            v          INTEGER NOT NULL,
            fv         TEXT NOT NULL,
            fw         TEXT NOT NULL,
            adds       TEXT NOT NULL,
            deleted    INTEGER NOT NULL DEFAULT 0,
            PRIMARY KEY (collection, id)
        )""",
        "CREATE INDEX records_tombstones ON records (v) WHERE deleted = 1",
        """CREATE TABLE log (
            pos         INTEGER PRIMARY KEY,
            seq         INTEGER NOT NULL,
            collection  TEXT NOT NULL,
            id          TEXT NOT NULL,
            kind        TEXT NOT NULL CHECK (kind IN ('insert', 'update', 'delete')),
            inc         INTEGER NOT NULL,
            patch       TEXT NOT NULL,
            "before"    TEXT,
            "after"     TEXT,
            client_id   TEXT,
            mutation_id INTEGER,
            time        REAL NOT NULL
        )""",
        "CREATE INDEX log_seq ON log (seq)",
        "CREATE INDEX log_time ON log (time, seq)",
        """CREATE TABLE clients (
            client_id TEXT PRIMARY KEY,
            principal TEXT NOT NULL,
            last      INTEGER NOT NULL
        )""",
        """CREATE TABLE acks (
            client_id   TEXT NOT NULL,
            mutation_id INTEGER NOT NULL,
            ack         TEXT NOT NULL,
            PRIMARY KEY (client_id, mutation_id)
        ) WITHOUT ROWID""",
    ),
)
"""Each item is one schema version's SQL statements, applied in order. Append only:
never edit a released step (files in the field already ran it)."""

SCHEMA_VERSION = len(MIGRATIONS)


def _schema_version(db: sqlite3.Connection) -> int:
    exists = db.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if exists is None:
        return 0
    row = db.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    return int(row[0]) if row is not None else 0


def migrate(db: sqlite3.Connection, migrations: Sequence[Sequence[str]], path: str) -> list[int]:
    """Bring syncline's tables to the newest version in one transaction; return the
    versions applied (none when the file is up to date)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        applied = []
        for number, statements in pending_migrations(path, migrations, _schema_version(db)):
            for statement in statements:
                db.execute(statement)
            db.execute(
                "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (number,),
            )
            applied.append(number)
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return applied
