"""A stored record: its fields plus the versions the conflict model needs.

``v`` is the ``seq`` of the record's last change, ``inc`` its incarnation (a delete
followed by an insert of the same id starts a new one), ``fv`` the ``seq`` at which
each field last changed. Two things stay on the server and never reach a client:
``fw``, the client id that last wrote each field (conflicts are only between different
clients), and ``adds``, for each set field the ``seq`` and client of each element's
latest add (a remove drops only adds it has seen).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = ["LogEntry", "Record", "SetAdds"]

SetAdds = dict[str, dict[str, list[Any]]]
"""set field -> element key -> [seq, client id or None]"""


def _copy_json(data: dict[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data: an orjson round trip is about 3x faster than deepcopy
    (record data holds only what validation let through, and that is JSON)."""
    try:
        copied: dict[str, Any] = orjson.loads(orjson.dumps(data))
    except orjson.JSONEncodeError:  # not JSON after all (an integer beyond 64 bits)
        return copy.deepcopy(data)
    return copied


@dataclass(slots=True)
class Record:
    id: str
    data: dict[str, Any]
    inc: int = 1
    v: int = 0
    fv: dict[str, int] = field(default_factory=dict)
    fw: dict[str, str | None] = field(default_factory=dict)
    adds: SetAdds = field(default_factory=dict)
    deleted: bool = False

    def copy(self) -> Record:
        return Record(
            id=self.id,
            data=_copy_json(self.data),
            inc=self.inc,
            v=self.v,
            fv=dict(self.fv),
            fw=dict(self.fw),
            adds={k: {e: list(m) for e, m in d.items()} for k, d in self.adds.items()},
            deleted=self.deleted,
        )

    def to_wire(self) -> dict[str, Any]:
        """What a client receives: no writer ids, no set bookkeeping."""
        return {"id": self.id, "inc": self.inc, "v": self.v, "fv": self.fv, "data": self.data}

    @classmethod
    def from_wire(cls, obj: dict[str, Any]) -> Record:
        return cls(
            id=obj["id"],
            data=dict(obj["data"]),
            inc=obj["inc"],
            v=obj["v"],
            fv=dict(obj["fv"]),
        )

    def to_store(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "data": self.data,
            "inc": self.inc,
            "v": self.v,
            "fv": self.fv,
            "fw": self.fw,
            "adds": self.adds,
            "deleted": self.deleted,
        }

    @classmethod
    def from_store(cls, obj: dict[str, Any]) -> Record:
        return cls(**obj)


@dataclass(frozen=True, slots=True)
class LogEntry:
    """One record's net change in one committed mutation.

    ``before`` and ``after`` are the record's ``id`` and queryable fields (what filters
    and read rules look at) before and after, ``None`` where the record was absent or
    deleted; ``patch`` holds the changed fields' new values.
    """

    seq: int
    collection: str
    id: str
    kind: Literal["insert", "update", "delete"]
    inc: int
    patch: dict[str, Any]
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    client_id: str | None
    mutation_id: int | None
    time: float
