"""Which of a client's unacked mutations go out now: the send and resend rules (pure).

Theory of operation (invariant 3). Each unacked mutation is sent once per connection, in
id order, at most ``max_in_flight`` unanswered at a time. The server answers a
connection's frames in order, so a temporary refusal (``reject`` ``retry``/``rate``, or
an ``error`` ``rate`` naming the mutation) of mutation *n* is followed by ``gap``
refusals of those sent after it: the pacer waits until everything in flight is answered
and ``retry_after`` has passed, then sends again from *n*. A resend that made no
progress (nothing answered for good since the last one) waits longer each time
(``stall_backoff``), so a refusing server is never flooded. A ``gap`` that names an id
below every mutation still held means the server never saw those ids (a new database,
or an id the server refused without using it up): the unacked mutations are renumbered
from there. Resending is always safe: an id the server already applied is answered with
the original ack (``replay``) and nothing is applied twice.

:class:`~syncline.protocol.client.ClientProtocol` owns one :class:`Pacer` and tells it
what the server answered; the mutations themselves stay in the replica.
"""

from __future__ import annotations

from ..ops import Mutation
from ..replica import Replica

__all__ = ["Pacer"]


class Pacer:
    """The in-flight window and the resend schedule of one client's mutations."""

    def __init__(
        self, replica: Replica, *, max_in_flight: int, stall_backoff: tuple[float, float]
    ) -> None:
        self.replica = replica
        self.max_in_flight = max_in_flight
        self.stall_backoff = stall_backoff
        self.reset()

    def reset(self) -> None:
        """A new connection: nothing sent on it yet, everything unacked goes out."""
        self._sent_upto = 0
        self._in_flight: set[int] = set()
        self._rewind_to: int | None = None
        self.hold_until: float | None = None  # nothing is sent before then
        self._stalls = 0  # resends since the last answer that made progress
        self._stall_waited = False

    def to_send(self, now: float) -> list[Mutation]:
        """The mutations to send now, in id order (each counts as in flight)."""
        if self.hold_until is not None:
            if now < self.hold_until:
                return []
            self.hold_until = None
        if self._rewind_to is not None and not self._start_resend(now):
            return []
        out: list[Mutation] = []
        for m in self.replica.unacked():
            if m.id <= self._sent_upto:
                continue
            if len(self._in_flight) >= self.max_in_flight:
                break
            out.append(m)
            self._sent_upto = m.id
            self._in_flight.add(m.id)
        return out

    def _start_resend(self, now: float) -> bool:
        """Rewind to the first refused id once it is time; False: not yet."""
        assert self._rewind_to is not None
        if self._in_flight:
            return False  # wait for every answer to what was sent before
        if self._stalls and not self._stall_waited:
            # The last resend made no progress: wait longer each time, never spin.
            base, most = self.stall_backoff
            self._stall_waited = True
            self.hold_until = now + min(most, base * 2 ** (self._stalls - 1))
            return False
        unacked = [m.id for m in self.replica.unacked()]
        if unacked and self._rewind_to < unacked[0]:
            self.renumber(self._rewind_to)
            unacked = [m.id for m in self.replica.unacked()]
        start = min(self._rewind_to, *unacked) if unacked else self._rewind_to
        self._sent_upto = start - 1
        self._rewind_to = None
        self._stalls += 1
        self._stall_waited = False
        return True

    def answered(self, mid: int) -> None:
        """The server answered ``mid`` for good (an ack, or a permanent refusal)."""
        self._in_flight.discard(mid)
        self._stalls = 0

    def unanswered(self, mid: int) -> None:
        """The server refused ``mid`` for now: it no longer counts as in flight."""
        self._in_flight.discard(mid)

    def retry_later(self, mid: int, until: float) -> None:
        """A temporary refusal of ``mid``: send again from it once ``until`` passed."""
        self.hold_until = until if self.hold_until is None else max(self.hold_until, until)
        self.resend_from(mid)

    def resend_from(self, mid: int) -> None:
        """Send everything from ``mid`` again once all in flight is answered (a gap)."""
        self._rewind_to = mid if self._rewind_to is None else min(self._rewind_to, mid)

    def renumber(self, first: int) -> None:
        """Give the unacked mutations the ids ``first``, ``first + 1``, ... (the server
        never saw the ids they had). Only lowers ids, and never below an answered one."""
        unacked = [p for p in self.replica.pending if not p.acked]
        acked_ids = [p.mutation.id for p in self.replica.pending if p.acked]
        if not unacked or first >= unacked[0].mutation.id:
            return
        if acked_ids and first <= max(acked_ids):
            return
        new_id = first
        for p in unacked:
            p.mutation = p.mutation.model_copy(update={"id": new_id})
            new_id += 1
        self.replica.next_mutation_id = new_id
