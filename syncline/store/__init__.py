"""Stores: where records, the change log and clients live. See :mod:`.base`.

The layout::

    base.py      the Store interface and its guarantees (the conformance suite checks them)
    memory.py    the reference store, in memory
    _group.py    group commit and the lifecycle, once for both SQL stores
    _sql.py      row codecs, the query compiler's walk, index and migration steps
    sqlite/      the SQLite dialect: threads, write cache, statements, tables
    postgres/    the PostgreSQL dialect: pool, advisory locks, statements, tables

Each dialect holds only what differs; neither imports the other.

:func:`store_from_url` picks one from a URL, as ``syncline serve --db`` does:
``memory:``, a SQLite path (``app.sqlite3``), as in SQLAlchemy
``sqlite:///relative.sqlite3`` and ``sqlite:////absolute/path.sqlite3``, or
``postgresql://user@host:5432/db?schema=name`` (the schema defaults to ``syncline``).
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from ..exceptions import StoreError
from .base import ClientState, LogEntry, LogOrderError, ReadTx, Store, WriteTx
from .memory import MemoryStore

__all__ = [
    "DB_ENV",
    "ClientState",
    "LogEntry",
    "LogOrderError",
    "MemoryStore",
    "ReadTx",
    "Store",
    "WriteTx",
    "split_schema",
    "store_from_env",
    "store_from_url",
]

DB_ENV = "SYNCLINE_DB"
"""The environment variable ``syncline serve --db`` sets for the application."""


def store_from_url(url: str) -> Store:
    """A store for ``url``, or a :class:`StoreError` that says which forms are accepted."""
    if not isinstance(url, str) or not url.strip():
        raise StoreError("the database URL is empty; give a SQLite path or 'memory:'")
    url = url.strip()
    if url in ("memory:", ":memory:"):
        return MemoryStore()
    scheme, sep, rest = url.partition("://")
    if sep and scheme in ("postgres", "postgresql"):
        from .postgres import PostgresStore

        dsn, schema = split_schema(url)
        return PostgresStore(dsn, schema=schema)
    if sep and scheme != "sqlite":
        raise StoreError(
            f"unsupported database URL {url!r}; use a SQLite path (app.sqlite3), "
            "sqlite:////absolute/path.sqlite3, postgresql://user@host/db?schema=name "
            "or memory:"
        )
    # As in SQLAlchemy: sqlite:///relative.sqlite3, sqlite:////absolute/path.sqlite3
    path = Path(rest[1:] if rest.startswith("/") else rest) if sep else Path(url)
    if path.is_dir():
        raise StoreError(f"database path {str(path)!r} is a directory; give a file path")
    if not path.parent.exists():
        raise StoreError(f"the folder of database path {str(path)!r} does not exist")
    from .sqlite import SQLiteStore

    return SQLiteStore(path)


def split_schema(url: str) -> tuple[str, str]:
    """A PostgreSQL URL without its ``schema`` parameter, and that schema (default
    ``syncline``): asyncpg would pass an unknown parameter on as a server setting."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schema = next((v for k, v in query if k == "schema"), "syncline")
    rest = urlencode([(k, v) for k, v in query if k != "schema"])
    return urlunsplit(parts._replace(query=rest)), schema


def store_from_env(default: str = "memory:") -> Store:
    """The store named by ``$SYNCLINE_DB`` (set by ``syncline serve --db``), or ``default``."""
    return store_from_url(os.environ.get(DB_ENV) or default)
