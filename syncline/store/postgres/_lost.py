"""Which failures mean "this connection is gone" (the server closed it, restarted, or
the socket broke), as opposed to "the server refused this statement".

A lost connection is never the caller's fault and says nothing about the data: the
store terminates that connection (the pool opens a new one), retries where nothing of
the transaction can have happened yet, and otherwise answers with a
:class:`~syncline.exceptions.StoreError`, which clients see as a temporary refusal.
Mapping the server's other refusals (a full disk, a read-only database) to codes is a
separate concern, kept out of this module.
"""

from __future__ import annotations

import contextlib
from typing import Any

import asyncpg  # type: ignore[import-untyped,unused-ignore]

__all__ = ["LOST_ERRORS", "connection_lost", "terminate"]

LOST_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.InterfaceError,  # "connection is closed", "another operation is in progress"
    asyncpg.InternalClientError,  # "cannot switch to state N": a half-read protocol state
    OSError,  # ConnectionResetError, ConnectionRefusedError, BrokenPipeError ...
    TimeoutError,  # connecting took too long
)
"""Exceptions other than the server's answers that leave a connection unusable."""

LOST_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown: pg_terminate_backend, or a fast/smart shutdown
        "57P02",  # crash_shutdown: another backend crashed, every session ends
        "57P03",  # cannot_connect_now: the server is starting up or recovering
        "57P05",  # idle_session_timeout
        "25P03",  # idle_in_transaction_session_timeout
    }
)
"""SQLSTATEs after which the server closes the session (class 08 counts as well)."""


def connection_lost(exc: BaseException | None) -> bool:
    """Is ``exc`` (or what it was raised from) the loss of the connection?"""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, asyncpg.PostgresError):
            state = str(getattr(exc, "sqlstate", "") or "")
            return state.startswith("08") or state in LOST_SQLSTATES
        if isinstance(exc, LOST_ERRORS) and not isinstance(exc, asyncpg.DataError):
            return True  # (a DataError is an argument the codec refused)
        exc, seen = exc.__cause__, seen + 1
    return False


def terminate(conn: Any) -> None:
    """Close a pool connection at once. One the pool already took back (it does so when
    the socket closes) raises nothing: it is gone already."""
    with contextlib.suppress(asyncpg.InterfaceError):
        conn.terminate()
