"""SQLite's result codes as the conditions a caller can act on (:class:`StorageFull`,
:class:`StoreReadOnly`, :class:`StoreUnavailable`): a refusal then says why."""

from __future__ import annotations

import sqlite3

from ...exceptions import StorageFull, StoreError, StoreReadOnly, StoreUnavailable
from .._group import error_class

__all__ = ["condition", "store_error"]

_BY_PRIMARY_CODE: dict[int, type[StoreError]] = {
    13: StorageFull,  # SQLITE_FULL: the disk, or PRAGMA max_page_count
    8: StoreReadOnly,  # SQLITE_READONLY (and its extended codes): a read-only file or mount
    5: StoreUnavailable,  # SQLITE_BUSY: another process holds the lock past busy_timeout
    6: StoreUnavailable,  # SQLITE_LOCKED
    10: StoreUnavailable,  # SQLITE_IOERR: the disk failed a read or write
    14: StoreUnavailable,  # SQLITE_CANTOPEN
}


def condition(exc: BaseException) -> type[StoreError] | None:
    """The condition a SQLite error names, or None (a bug, a constraint, ...)."""
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    return _BY_PRIMARY_CODE.get(code & 0xFF) if isinstance(code, int) else None


def store_error(message: str, exc: BaseException | None) -> StoreError:
    """``exc`` as the :class:`StoreError` (subclass) that names its condition."""
    error = error_class(exc, condition)(message)
    error.__cause__ = exc
    return error
