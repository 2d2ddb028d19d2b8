"""What the engine answers: acks with their per-op results, snapshots and changes.

Plain data, shared by the engine (which builds them), the sans-I/O protocols (which
put them on the wire) and the replicas (which read them back); no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from .cursor import Cursor
from .query import Query

__all__ = ["WHOLE_CONFLICT", "Ack", "AckStatus", "Changes", "FieldConflict", "OpResult", "Snapshot"]

WHOLE_CONFLICT = "not applied: another op of this whole-mode mutation conflicts"
"""The ``reason`` of an op that would have applied, in a whole-mode ``conflict`` ack:
nothing of the mutation was applied, so the op says ``dropped``, not ``applied``."""


@dataclass(frozen=True)
class FieldConflict:
    """Concurrent edits the user must decide. ``field`` is None for update-vs-delete."""

    collection: str
    id: str
    field: str | None
    base: Any
    mine: Any
    theirs: Any
    theirs_v: int

    def to_wire(self) -> dict[str, Any]:
        return {
            "c": self.collection,
            "id": self.id,
            "field": self.field,
            "base": self.base,
            "mine": self.mine,
            "theirs": self.theirs,
            "theirs_v": self.theirs_v,
        }


@dataclass
class OpResult:
    status: Literal["applied", "dropped", "conflict"] = "applied"
    overwritten: list[str] = field(default_factory=list)
    merged: list[str] = field(default_factory=list)
    conflicts: list[FieldConflict] = field(default_factory=list)
    reason: str | None = None

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.overwritten:
            out["overwritten"] = self.overwritten
        if self.merged:
            out["merged"] = self.merged
        if self.conflicts:
            out["conflicts"] = [c.to_wire() for c in self.conflicts]
        if self.reason:
            out["reason"] = self.reason
        return out


AckStatus = Literal["applied", "conflict", "rejected", "duplicate"]


@dataclass
class Ack:
    """The server's answer to one mutation.

    ``seq`` is the commit that holds the mutation's effect, or None when it changed
    nothing (rejected, conflicted, or every op dropped): the client may then forget the
    mutation at once. ``replay`` marks an answer to a mutation sent again.
    """

    mutation_id: int
    status: AckStatus
    seq: int | None = None
    results: list[OpResult] = field(default_factory=list)
    error: dict[str, Any] | None = None
    replay: bool = False

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mid": self.mutation_id, "status": self.status, "seq": self.seq}
        if self.results:
            out["results"] = [r.to_wire() for r in self.results]
        if self.error is not None:
            out["error"] = self.error
        if self.replay:
            out["replay"] = True
        return out

    @classmethod
    def from_wire(cls, obj: Mapping[str, Any]) -> Ack:
        results = []
        for r in obj.get("results", []):
            results.append(
                OpResult(
                    status=r["status"],
                    overwritten=list(r.get("overwritten", [])),
                    merged=list(r.get("merged", [])),
                    conflicts=[
                        FieldConflict(
                            c["c"],
                            c["id"],
                            c["field"],
                            c["base"],
                            c["mine"],
                            c["theirs"],
                            c["theirs_v"],
                        )
                        for c in r.get("conflicts", [])
                    ],
                    reason=r.get("reason"),
                )
            )
        return cls(
            mutation_id=obj["mid"],
            status=obj["status"],
            seq=obj.get("seq"),
            results=results,
            error=obj.get("error"),
            replay=bool(obj.get("replay", False)),
        )


@dataclass
class Snapshot:
    """Records of several queries read in one transaction, with the cursor they were read at."""

    cursor: Cursor
    results: dict[str, list[dict[str, Any]]]
    queries: dict[str, Query]

    def to_wire(self) -> dict[str, Any]:
        return {
            "cursor": str(self.cursor),
            "queries": {qid: q.to_wire() for qid, q in self.queries.items()},
            "records": self.results,
        }


@dataclass
class Changes:
    """The net effect between two cursors on some queries (invariant 7).

    Each query's list holds ``enter`` (whole record), ``patch`` (changed fields),
    ``remove`` (left the view; not necessarily deleted) and ``reset`` (a limited query
    whose window moved: its whole new content).
    """

    since: Cursor
    cursor: Cursor
    queries: dict[str, list[dict[str, Any]]]

    def to_wire(self) -> dict[str, Any]:
        return {"from": str(self.since), "to": str(self.cursor), "q": self.queries}
