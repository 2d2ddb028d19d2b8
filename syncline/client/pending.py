"""A client's queue on disk: pending mutations that survive a process restart.

One SQLite file holds what a client must not forget (invariant 3): its client id, its
next mutation id, its pending mutations (with the ack ``seq`` of those already
answered), its open drafts and its undo and redo stacks, written before a mutation is
first sent. Beside them it keeps a snapshot of the replica's confirmed data with its
cursor, a cache written now and then: after a restart the client resumes from that
cursor, or from an older one, which is always safe (changes since an older cursor bring
the data forward).

A file belongs to one client at a time: a second process opening it gets a
:class:`~syncline.exceptions.StoreError` (the lock is an advisory ``flock`` beside it).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

import orjson

from ..exceptions import StoreError
from ..ops import parse_mutation, parse_op
from ..protocol.client import op_wire
from ..replica import Draft, Pending
from ..results import FieldConflict

__all__ = ["PendingStore", "Saved"]

_TABLES = (
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS pending ("
    " pos INTEGER PRIMARY KEY, mutation TEXT NOT NULL, acked INTEGER NOT NULL, seq INTEGER)",
    "CREATE TABLE IF NOT EXISTS drafts (pos INTEGER PRIMARY KEY, draft TEXT NOT NULL)",
)


@dataclass
class Saved:
    """What a previous run left behind (empty for a new file)."""

    client_id: str | None = None
    next_id: int = 1
    pending: list[Pending] = field(default_factory=list)
    drafts: list[Draft] = field(default_factory=list)
    state: dict[str, Any] | None = None
    history: dict[str, Any] | None = None  # the undo and redo stacks (syncline.undo)


class PendingStore:
    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        self._lock = _lock(self.path + ".lock")
        try:
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            for sql in _TABLES:
                self._db.execute(sql)
        except sqlite3.Error as exc:
            self._lock.close()
            raise StoreError(f"{self.path}: cannot open the pending file: {exc}") from exc

    def load(self) -> Saved:
        meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
        pending = [
            Pending(parse_mutation(orjson.loads(m)), seq=seq, acked=bool(acked))
            for m, acked, seq in self._db.execute(
                "SELECT mutation, acked, seq FROM pending ORDER BY pos"
            )
        ]
        drafts = [
            _draft_from_json(orjson.loads(d))
            for (d,) in self._db.execute("SELECT draft FROM drafts ORDER BY pos")
        ]
        state = orjson.loads(meta["state"]) if "state" in meta else None
        return Saved(
            client_id=meta.get("client_id"),
            next_id=int(meta.get("next_id", 1)),
            pending=pending,
            drafts=drafts,
            state=state,
            history=orjson.loads(meta["history"]) if "history" in meta else None,
        )

    def save_queue(
        self,
        client_id: str,
        next_id: int,
        pending: Sequence[Pending],
        drafts: Sequence[Draft],
        history: dict[str, Any] | None = None,
    ) -> None:
        """Replace the stored queue with this one, in one transaction."""
        rows = [
            (i, orjson.dumps(p.mutation.model_dump(mode="json")).decode(), int(p.acked), p.seq)
            for i, p in enumerate(pending)
        ]
        draft_rows = [(i, orjson.dumps(_draft_to_json(d)).decode()) for i, d in enumerate(drafts)]
        with self._transaction() as db:
            db.execute("DELETE FROM pending")
            db.executemany("INSERT INTO pending VALUES (?, ?, ?, ?)", rows)
            db.execute("DELETE FROM drafts")
            db.executemany("INSERT INTO drafts VALUES (?, ?)", draft_rows)
            db.executemany(
                "INSERT OR REPLACE INTO meta VALUES (?, ?)",
                [("client_id", client_id), ("next_id", str(next_id))],
            )
            if history is not None:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('history', ?)",
                    (orjson.dumps(history).decode(),),
                )

    def save_state(self, snapshot: dict[str, Any] | None) -> None:
        """Keep the replica's confirmed data and its cursor (a snapshot)."""
        with self._transaction() as db:
            if snapshot is None:
                db.execute("DELETE FROM meta WHERE key = 'state'")
            else:
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('state', ?)",
                    (orjson.dumps(snapshot).decode(),),
                )

    def close(self) -> None:
        self._db.close()
        self._lock.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _lock(path: str) -> IO[bytes]:
    handle = open(path, "a+b")  # noqa: SIM115 -- held open as long as the store
    try:
        import fcntl
    except ImportError:  # pragma: no cover -- not POSIX: no advisory lock
        return handle
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise StoreError(
            f"{path}: another client process holds this pending file; "
            "give each running client its own file"
        ) from None
    return handle


def _draft_to_json(draft: Draft) -> dict[str, Any]:
    return {
        "mutation_id": draft.mutation_id,
        "conflicts": [c.to_wire() for c in draft.conflicts],
        "ops": [op_wire(op) for op in draft.ops],
    }


def _draft_from_json(obj: dict[str, Any]) -> Draft:
    return Draft(
        mutation_id=obj["mutation_id"],
        conflicts=tuple(
            FieldConflict(
                c["c"], c["id"], c["field"], c["base"], c["mine"], c["theirs"], c["theirs_v"]
            )
            for c in obj["conflicts"]
        ),
        ops=tuple(parse_op(op) for op in obj["ops"]),
    )
