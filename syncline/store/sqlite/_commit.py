"""Group commit, on the writer thread: the statements that begin a group's
transaction, open and release each writer's savepoint, run the writes carried from
writers who left without a trip, and end the group (see :mod:`syncline.store.sqlite`).

``SQLiteGroup.begun`` and ``broken`` belong to the writer thread; everything here runs
there, in submission order.
"""

from __future__ import annotations

import dataclasses
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from .._group import Group
from ._errors import store_error
from ._statements import head

T = TypeVar("T")

Deferred = Callable[[sqlite3.Connection], None]


@dataclass(eq=False)
class SQLiteGroup(Group):
    """Writers sharing one SQLite transaction; ``done`` resolves after its COMMIT.

    ``begun`` and ``broken`` belong to the writer thread: BEGIN runs lazily, with the
    first statement of the group, and a writer whose savepoint could not be undone
    poisons the group (every later statement of it fails, and it ends in ROLLBACK).
    """

    begun: bool = False
    broken: Exception | None = None
    verified: bool = False
    """(Event loop only.) The write cache was checked when this group began: its
    writers may trust it."""
    carried: list[Deferred] = dataclasses.field(default_factory=list)
    """(Event loop only.) Writes of writers that left without ever calling the thread:
    they travel with the group's next trip, ahead of its next writer's savepoint."""


@dataclass(eq=False)
class Member:
    """One writer of a group: whether its savepoint is open (writer thread only) and the
    writes it has not sent to the thread yet."""

    group: SQLiteGroup
    savepoint: bool = False
    deferred: list[Deferred] = dataclasses.field(default_factory=list)
    called: bool = False  # (event loop) it made a trip to the thread: it has a savepoint


@dataclass
class Exit:
    """What :func:`leave_group` did for one writer."""

    own: Exception | None = None  # its pending writes or RELEASE failed: they were undone
    ended: bool = False  # this call ended the group's transaction
    committed: bool = False  # ... with a COMMIT that succeeded
    error: Exception | None = None  # ... or with this failure: nothing of the group stays


def _enter(
    db: sqlite3.Connection, member: Member, carried: list[Deferred]
) -> tuple[int, int] | None:
    """Open the group's transaction, run the writes ``carried`` from writers who left
    before (outside any savepoint: they are done), and open this writer's savepoint,
    where not yet open. When this call began the group: its ``(data_version, head)``
    right after BEGIN, for the write cache."""
    began = _begin_carrying(db, member.group, carried)
    if not member.savepoint:
        db.execute("SAVEPOINT w")
        member.savepoint = True
    return began


def _begin(db: sqlite3.Connection, group: SQLiteGroup) -> tuple[int, int] | None:
    """BEGIN the group's transaction if not yet begun (see :func:`_enter`)."""
    if group.broken is not None:
        raise store_error(f"an earlier write of this group failed: {group.broken}", group.broken)
    if group.begun:
        return None
    if db.in_transaction:  # left over by a failed ROLLBACK: start clean
        db.execute("ROLLBACK")
    db.execute("BEGIN IMMEDIATE")
    group.begun = True
    return int(db.execute("PRAGMA data_version").fetchone()[0]), head(db)


def _begin_carrying(
    db: sqlite3.Connection, group: SQLiteGroup, carried: list[Deferred]
) -> tuple[int, int] | None:
    """:func:`_begin`, then the writes carried from writers who left. If either fails
    while writes are carried, the group is broken: those writers' blocks have exited,
    nobody can undo just their writes, and none of the group may commit."""
    try:
        began = _begin(db, group)
        for write in carried:
            write(db)
    except Exception as exc:
        if carried:
            group.broken = group.broken or exc
        raise
    return began


def in_savepoint(
    db: sqlite3.Connection,
    member: Member,
    carried: list[Deferred],
    deferred: list[Deferred],
    with_head: bool,
    fn: Callable[[sqlite3.Connection], T],
) -> tuple[tuple[int, int] | None, int | None, T]:
    """Run ``fn`` in the writer's savepoint after its pending writes; with the head
    too when asked (the first call of a transaction: it saves a trip for ``head()``),
    and what :func:`_enter` reports when this call began the group."""
    began = _enter(db, member, carried)
    try:
        for write in deferred:
            write(db)
    except Exception as exc:
        # The writer's overlay (and so the write cache) already holds these writes.
        member.group.broken = member.group.broken or exc
        raise
    return began, (head(db) if with_head else None), fn(db)


def _end_group(db: sqlite3.Connection, group: SQLiteGroup) -> bool:
    """COMMIT the group's transaction (ROLLBACK if it is broken); True when a COMMIT
    succeeded. A failed COMMIT is rolled back, so the connection is ready for the next
    group."""
    begun, group.begun = group.begun, False
    if group.broken is not None:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise store_error(
            f"a write of this group failed or could not be undone, so the group was "
            f"rolled back: {group.broken}",
            group.broken,
        )
    if not begun:
        return False
    try:
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise
    return True


def end_group_exit(db: sqlite3.Connection, group: SQLiteGroup, carried: list[Deferred]) -> Exit:
    out = Exit(ended=True)
    try:
        if carried:
            _begin_carrying(db, group, carried)
    except Exception:
        pass  # the group is broken: _end_group rolls it back and says why
    try:
        out.committed = _end_group(db, group)
    except Exception as exc:
        out.error = exc
    return out


def leave_group(
    db: sqlite3.Connection,
    member: Member,
    carried: list[Deferred],
    deferred: list[Deferred],
    ok: bool,
    end: bool,
) -> Exit:
    """A writer's block has exited (``ok``: normally). Send its pending writes and
    RELEASE its savepoint, or roll the savepoint back; then, if ``end`` (nobody else
    was waiting to join), COMMIT the group -- all in one trip to the thread."""
    out = Exit()
    group = member.group
    if carried:
        try:
            _begin_carrying(db, group, carried)
        except Exception as exc:
            out.own = exc
    if ok and out.own is None:
        try:
            if deferred:
                _enter(db, member, [])
                for write in deferred:
                    write(db)
            if member.savepoint:
                db.execute("RELEASE w")
                member.savepoint = False
        except Exception as exc:
            out.own = exc
            # Writers after this one may have read its writes from the write cache:
            # none of the group may commit.
            group.broken = group.broken or exc
    if member.savepoint:
        try:
            db.execute("ROLLBACK TO w")
            db.execute("RELEASE w")
            member.savepoint = False
        except Exception as exc:
            group.broken = group.broken or exc
    if end:
        out.ended = True
        try:
            out.committed = _end_group(db, group)
        except Exception as exc:
            out.error = exc
    return out
