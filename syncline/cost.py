"""What one snapshot or pull may cost, and what one connection may spend over time.

A :class:`ReadBudget` goes with one request (a ``sub``, a ``GET /sync/pull``): the
engine charges it the encoded bytes of every query's answer (each copy that will be
sent, though identical queries are read once) and the rows it scans under callable read
rules, and refuses with :class:`~syncline.exceptions.ReadLimitExceeded` as soon as either
passes its bound, before the frame is built. A :class:`ByteBucket` is what a connection
(or, over HTTP, a principal) may be sent in snapshots over time: a token bucket that
refills its capacity each minute. ``docs/security.md`` lists the defaults.
"""

from __future__ import annotations

from .exceptions import ReadLimitExceeded

__all__ = ["ByteBucket", "ReadBudget"]


class ReadBudget:
    """The bytes and scanned rows one request may still cost."""

    __slots__ = ("allowance", "max_bytes", "max_scan_rows", "scanned", "spent")

    def __init__(
        self, max_bytes: int | None, max_scan_rows: int | None, allowance: int | None = None
    ) -> None:
        self.max_bytes = max_bytes
        """Bytes of records one answer may carry (``Limits.max_snapshot_bytes``)."""
        self.allowance = allowance
        """What the connection may still be sent now (its :class:`ByteBucket`), if less."""
        self.max_scan_rows = max_scan_rows
        self.spent = 0
        self.scanned = 0

    @property
    def scan_left(self) -> int | None:
        """Rows the request may still scan under callable read rules (None: unbounded)."""
        return None if self.max_scan_rows is None else max(0, self.max_scan_rows - self.scanned)

    def scan(self, rows: int) -> None:
        self.scanned += rows

    def refuse_scan(self, collection: str) -> ReadLimitExceeded:
        return ReadLimitExceeded(
            f"{collection}: answering would scan more than {self.max_scan_rows} rows under "
            "its callable read rule (max_scan_rows per request); narrow the query with a "
            "where or limit, or declare the rule as read_filter"
        )

    def spend(self, qid: str, size: int) -> None:
        """Charge one query's encoded answer; refuse once past a bound."""
        self.spent += size
        if self.max_bytes is not None and self.spent > self.max_bytes:
            raise ReadLimitExceeded(
                f"the answer would exceed {self.max_bytes} bytes "
                f"(max_snapshot_bytes per snapshot or pull); query {qid!r} passed it: "
                "subscribe to fewer or narrower queries, or add a limit",
                ref=qid,
            )
        if self.allowance is not None and self.spent > self.allowance:
            raise ReadLimitExceeded(
                f"this connection was sent its share of snapshot bytes for now "
                f"(snapshot_bytes_per_minute); query {qid!r} passed it: subscribe again later",
                ref=qid,
            )


class ByteBucket:
    """``per_minute`` bytes, refilled continuously; spending may take it below zero once
    (the answer that passed was already built), and then nothing is allowed until it
    refills."""

    __slots__ = ("_at", "_tokens", "per_minute")

    def __init__(self, per_minute: int, now: float) -> None:
        self.per_minute = per_minute
        self._tokens = float(per_minute)
        self._at = now

    def available(self, now: float) -> int:
        self._tokens = min(
            float(self.per_minute), self._tokens + (now - self._at) * self.per_minute / 60
        )
        self._at = now
        return max(0, int(self._tokens))

    def spend(self, size: int, now: float) -> None:
        self.available(now)
        self._tokens -= size

    def full(self, now: float) -> bool:
        return self.available(now) >= self.per_minute
