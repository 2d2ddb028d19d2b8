"""``syncline backup DB DEST``: a consistent copy of a live SQLite database.

SQLite's online backup API (:meth:`sqlite3.Connection.backup`) copies the database in
one step inside one read transaction, so the copy is the database as of one commit
(every mutation acknowledged before the backup began is in it, none half) while the
server goes on writing (WAL: readers do not block the writer). The copy is written
beside ``DEST``, checked (``PRAGMA integrity_check``), made a single self-contained file
(``journal_mode=DELETE``), flushed to disk and only then renamed to ``DEST``: a backup
that failed half way never looks like a backup. PostgreSQL is backed up with
``pg_dump`` (docs/operations.md).
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from .exceptions import StoreError

__all__ = ["BackupError", "BackupResult", "backup_sqlite"]


class BackupError(StoreError):
    """The backup could not be made; the message says why. Nothing was left at DEST."""


@dataclass(frozen=True)
class BackupResult:
    head: int  # the last commit the copy holds
    epoch: str
    schema_version: int
    size: int  # bytes


def backup_sqlite(source: str | Path, dest: str | Path, *, timeout: float = 30.0) -> BackupResult:
    """Copy the syncline SQLite database ``source`` to ``dest`` (which must not exist)."""
    src_path, dest_path = Path(source), Path(dest)
    if str(source).startswith(("postgres://", "postgresql://")):
        raise BackupError(
            "syncline backup copies SQLite files; back up PostgreSQL with pg_dump "
            "(docs/operations.md, Backups)"
        )
    if not src_path.is_file():
        raise BackupError(f"{src_path}: no such database file")
    if dest_path.exists():
        raise BackupError(f"{dest_path} exists already; remove it or name another file")
    if not dest_path.parent.is_dir():
        raise BackupError(f"{dest_path.parent}: no such directory")
    partial = dest_path.with_name(dest_path.name + ".partial")
    uri = f"file:{urllib.parse.quote(str(src_path.resolve()))}?mode=ro"
    try:
        src = sqlite3.connect(uri, uri=True, timeout=timeout)
    except sqlite3.Error as exc:
        raise BackupError(f"{src_path}: cannot open: {exc}") from None
    try:
        _check_syncline(src, src_path)
        partial.unlink(missing_ok=True)
        dst = sqlite3.connect(partial)
        try:
            src.backup(dst)  # pages=-1: one step, one read transaction, one commit's state
            check = dst.execute("PRAGMA integrity_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy of {src_path} fails its integrity check: {check}")
            dst.execute("PRAGMA journal_mode=DELETE")
            result = _describe(dst)
        finally:
            dst.close()
        with open(partial, "rb") as f:
            os.fsync(f.fileno())
        os.replace(partial, dest_path)
        _fsync_dir(dest_path.parent)
    except sqlite3.Error as exc:
        raise BackupError(f"backing up {src_path} failed: {exc}") from None
    finally:
        src.close()
        partial.unlink(missing_ok=True)
    return BackupResult(result.head, result.epoch, result.schema_version, dest_path.stat().st_size)


def _check_syncline(db: sqlite3.Connection, path: Path) -> None:
    try:
        found = db.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
        ).fetchone()
    except sqlite3.DatabaseError as exc:
        raise BackupError(f"{path} is not a SQLite database: {exc}") from None
    if found is None:
        raise BackupError(f"{path} is not a syncline database (it has no meta table)")


def _describe(db: sqlite3.Connection) -> BackupResult:
    meta = dict(db.execute("SELECT key, value FROM meta").fetchall())
    (head,) = db.execute("SELECT max(seq) FROM log").fetchone()
    floor = int(meta.get("floor", 0))
    return BackupResult(
        head=int(head) if head is not None else floor,
        epoch=str(meta.get("epoch", "")),
        schema_version=int(meta.get("schema_version", 0)),
        size=0,
    )


def _fsync_dir(path: Path) -> None:
    """Make the rename durable (a crash right after it keeps the new name)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
