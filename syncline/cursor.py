"""Cursors: opaque tokens naming a point in the change log.

Today a cursor is a database epoch plus a ``seq`` (``"<epoch>.<seq>"``); clients must
treat it as opaque so that partitioned logs can change its inside later. The epoch is
made once per database, so a cursor from another database answers "reset", never
"gap" (invariant 1).
"""

from __future__ import annotations

from dataclasses import dataclass

from .exceptions import CursorError

__all__ = ["Cursor"]


@dataclass(frozen=True, order=True)
class Cursor:
    epoch: str
    seq: int

    def __str__(self) -> str:
        return f"{self.epoch}.{self.seq}"

    @classmethod
    def parse(cls, token: object) -> Cursor:
        if isinstance(token, Cursor):
            return token
        if not isinstance(token, str) or len(token) > 128:
            raise CursorError(f"a cursor is a string such as 'e1f2.42', not {token!r:.60}")
        epoch, dot, seq = token.rpartition(".")
        if not dot or not epoch or not seq.isdigit():
            raise CursorError(f"malformed cursor {token!r}: expected '<epoch>.<seq>'")
        return cls(epoch, int(seq))
