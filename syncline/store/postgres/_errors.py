"""PostgreSQL's errors (SQLSTATE) and asyncpg's as the conditions a caller can act on
(:class:`StorageFull`, :class:`StoreReadOnly`, :class:`StoreUnavailable`)."""

from __future__ import annotations

import asyncpg  # type: ignore[import-untyped,unused-ignore]

from ...exceptions import StorageFull, StoreError, StoreReadOnly, StoreUnavailable

__all__ = ["condition"]

_BY_SQLSTATE: dict[str, type[StoreError]] = {
    "53100": StorageFull,  # disk_full
    "25006": StoreReadOnly,  # read_only_sql_transaction (also a hot standby)
    "53300": StoreUnavailable,  # too_many_connections
    "57P01": StoreUnavailable,  # admin_shutdown
    "57P02": StoreUnavailable,  # crash_shutdown
    "57P03": StoreUnavailable,  # cannot_connect_now (starting up, in recovery)
}

_CONNECTION_LOST = (
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    asyncpg.exceptions.InternalClientError,
    OSError,  # ConnectionError and its kin: refused, reset
    TimeoutError,
)


def condition(exc: BaseException) -> type[StoreError] | None:
    """The condition an asyncpg error names, or None (a bug, a constraint, ...)."""
    if isinstance(exc, asyncpg.PostgresError):
        state = str(getattr(exc, "sqlstate", "") or "")
        if state.startswith("08"):  # connection_exception and its subclasses
            return StoreUnavailable
        return _BY_SQLSTATE.get(state)
    if isinstance(exc, _CONNECTION_LOST):
        return StoreUnavailable
    return None
