"""The client side of the wire protocol, sans I/O (``docs/protocol.md`` is the contract).

Theory of operation. A :class:`ClientProtocol` wraps a :class:`~syncline.replica.Replica`.
The I/O layer tells it when a connection opens (:meth:`~ClientProtocol.connection_made`)
and closes (:meth:`~ClientProtocol.connection_lost`), feeds it every frame the server
sends (:meth:`~ClientProtocol.receive`), and after every call sends what
:meth:`~ClientProtocol.data_to_send` returns. Local edits go straight to the replica
(``protocol.replica.update(...)``); ``data_to_send`` picks them up. Time is passed in,
so tests need no clock. The state machine::

    state       input                          -> state      output
    ----------  -----------------------------  ----------  ------------------------------
    CLOSED      connection_made                HELLO_SENT  hello (acked: answers held)
    HELLO_SENT  welcome                        LIVE        mut for every unacked mutation,
                                                           then sub since the cursor (the
                                                           queries held), sub (the others)
    HELLO_SENT  error reload, unauthorized,    FAILED      event "reload" / "error"
    LIVE          version, client_id_taken
    LIVE        snapshot / changes             LIVE        replica updated; events
    LIVE        ack / reject                   LIVE        replica settles; events; resends
    any         ping                           (same)      pong
    any         connection_lost                CLOSED      (all is sent again next time)
    FAILED      anything                       FAILED      nothing: the app must reload

Mutations (invariant 3). Each unacked mutation is sent once per connection, in id
order, at most ``max_in_flight`` unanswered at a time. The server answers a
connection's frames in order, so a temporary refusal (``reject`` ``retry``/``rate``, or
an ``error`` ``rate`` naming the mutation) of mutation *n* is followed by ``gap``
refusals of those sent after it: the protocol waits until everything in flight is
answered and ``retry_after`` has passed, then sends again from *n*. A ``gap`` that names
an id below every mutation it still holds means the server never saw those ids (a new
database, or an id the server refused without using it up): the unacked mutations are
renumbered from there. Resending is always safe: an id the server already applied is
answered with the original ack (``replay``) and nothing is applied twice.

Subscriptions (invariants 6, 7). ``wanted`` holds every query the application asked
for. On ``welcome``, the queries the replica holds are resumed by one ``sub`` ``since``
its cursor (the first ``sub`` of the connection); any others get a ``sub`` without
``since``, answered by a snapshot. The subs follow the unacked mutations: the server
answers frames in order, so the acks (with their ``seq``) of mutations it had already
applied arrive before the changes that contain them, and the view never shows such a
mutation twice. A snapshot marked ``reset`` replaces the queries'
data; pending mutations stay and are shown on top of it. A welcome from another
database (its epoch differs from the cursor's) makes every pending mutation unacked
again, so each is sent to the new database.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import orjson

from ..exceptions import CursorError, SchemaError, SynclineError
from ..ops import Mutation, Op
from ..query import Query
from ..replica import Draft, Replica
from ..replica import Event as ReplicaEvent
from .server import PROTOCOL_VERSION

__all__ = [
    "FATAL_CODES",
    "ClientEvent",
    "ClientFailed",
    "ClientProtocol",
    "EventKind",
    "State",
    "mut_frame",
    "op_wire",
]

Key = tuple[str, str]

EventKind = Literal[
    "changed",  # records in the view changed (keys)
    "conflict",  # a manual field conflicted: ``draft`` awaits the user
    "overwritten",  # this client's lww edit overwrote another client's (fields)
    "merged",  # a text edit was merged with another client's (fields)
    "rejected",  # the server refused a mutation for good (error)
    "dropped",  # an op of a mutation was dropped (keys, reason)
    "ack",  # the server answered a mutation (frame: the ack as sent, with ``replay``)
    "reset",  # a snapshot replaced the data of some queries (reason)
    "reload",  # the server's schema differs: reload the application (frame)
    "error",  # an error frame, or a frame this client could not use (error)
    "status",  # the connection status changed (status)
]

FATAL_CODES = frozenset({"reload", "unauthorized", "version", "client_id_taken"})
"""``error`` codes after which reconnecting cannot help."""

_TEMPORARY_ERRORS = frozenset({"rate", "retry"})
_CURSOR_ERRORS = frozenset({"cursor", "cursor_ahead", "cursor_too_old", "cursor_reset"})
_SUB_ERRORS = frozenset({"query", "limit", "bad_frame"})


class ClientFailed(SynclineError):
    """The server refused this client for good (``reload``, ``unauthorized``, ...).

    ``frame`` is the ``error`` frame; pending mutations are kept.
    """

    code = "client_failed"

    def __init__(self, frame: Mapping[str, Any]) -> None:
        self.frame = dict(frame)
        self.code = str(frame.get("code", "error"))
        super().__init__(f"{self.code}: {frame.get('message', '')}")


@dataclass(frozen=True)
class ClientEvent:
    """Something the application may want to know; ``kind`` says which fields are set."""

    kind: EventKind
    mutation_id: int | None = None
    keys: tuple[Key, ...] = ()
    fields: tuple[str, ...] = ()
    draft: Draft | None = None
    error: Mapping[str, Any] | None = None
    frame: Mapping[str, Any] | None = None
    reason: str | None = None
    status: str | None = None

    @classmethod
    def from_replica(cls, event: ReplicaEvent) -> ClientEvent:
        return cls(
            event.kind,
            mutation_id=event.mutation_id,
            keys=event.keys,
            fields=event.fields,
            draft=event.draft,
            error=event.error,
            reason=event.reason,
        )


class State(enum.Enum):
    CLOSED = "closed"
    HELLO_SENT = "hello_sent"
    LIVE = "live"
    FAILED = "failed"


def op_wire(op: Op) -> dict[str, Any]:
    """An op as it travels (``docs/protocol.md``, Ops); ``inc`` left out when unknown."""
    return op.model_dump(mode="json", exclude_none=True)


def mut_frame(mutation: Mutation) -> dict[str, Any]:
    return {
        "t": "mut",
        "id": mutation.id,
        "base": mutation.base,
        "mode": mutation.mode,
        "ops": [op_wire(op) for op in mutation.ops],
    }


class ClientProtocol:
    """One client's protocol state across connections (see the module docs)."""

    def __init__(
        self,
        replica: Replica,
        *,
        schema_hash: str | None = None,
        credentials: Mapping[str, Any] | None = None,
        max_in_flight: int = 50,
        stall_backoff: tuple[float, float] = (0.05, 5.0),
        default_retry_after: float = 0.1,
    ) -> None:
        self.replica = replica
        self.schema_hash = schema_hash if schema_hash is not None else replica.schema.hash
        self.credentials = dict(credentials) if credentials is not None else None
        self.max_in_flight = max_in_flight
        self.stall_backoff = stall_backoff
        self.default_retry_after = default_retry_after
        self.state = State.CLOSED
        self.wanted: dict[str, dict[str, Any]] = {}
        self.epoch: str | None = None
        self.server_last: int | None = None
        self.fatal: dict[str, Any] | None = None
        self.close_requested: str | None = None
        self._out: list[dict[str, Any]] = []
        self._subs_after_welcome: list[dict[str, Any]] = []
        self._unanswered: set[str] = set()  # wanted queries that need a snapshot
        self._sub_batches: deque[frozenset[str]] = deque()  # subs sent, not yet answered
        self._resuming = False  # a sub since the cursor is not answered yet
        self._resume_queries: dict[str, dict[str, Any]] = {}
        self._sent_upto = 0
        self._in_flight: set[int] = set()
        self._rewind_to: int | None = None
        self._hold_until: float | None = None
        self._stalls = 0  # resends since the last answer that made progress
        self._stall_waited = False

    # --- what the application asks for ------------------------------------------------

    def hydrate(self, state: Mapping[str, Any]) -> list[ClientEvent]:
        """Build the replica from a page's embedded state (``docs/protocol.md``,
        Embedded state) without fetching; the next connection resumes from its cursor."""
        if self.state is not State.CLOSED:
            raise RuntimeError("hydrate before connecting: the connection has its own cursor")
        version = state.get("v", PROTOCOL_VERSION)
        if version != PROTOCOL_VERSION:
            raise ValueError(f"embedded state of protocol version {version!r} is not supported")
        page_schema = state.get("schema", self.schema_hash)
        if page_schema != self.schema_hash:
            raise SchemaError(
                f"the page was rendered with schema {page_schema!r}, this client has "
                f"{self.schema_hash!r}: reload with matching code"
            )
        snapshot = {
            "cursor": state["cursor"],
            "queries": state["queries"],
            "records": state["records"],
        }
        events = self._load_snapshot(snapshot)
        for qid, query in snapshot["queries"].items():
            self.wanted[qid] = dict(query)
            self._unanswered.discard(qid)
        return events

    def subscribe(self, queries: Mapping[str, Query | Mapping[str, Any]]) -> None:
        """Ask for ``queries``; a live connection sends ``sub`` now, otherwise the next
        one does. Raises :class:`~syncline.exceptions.QueryError` for a bad query."""
        wires: dict[str, dict[str, Any]] = {}
        for qid, q in queries.items():
            if isinstance(q, Query):
                wires[qid] = q.to_wire()
            else:
                Query.parse(q, self.replica.schema)  # refuse a bad query here, not later
                wires[qid] = dict(q)  # sent as written
        if not wires:
            return
        self.wanted.update(wires)
        self._unanswered.update(wires)
        if self.state is State.LIVE:
            self._send_sub(wires)

    def answered(self, query_ids: Iterable[str]) -> bool:
        """Whether each of these queries has its data (or was refused: not wanted)."""
        return all(
            qid not in self.wanted or (qid in self.replica.queries and qid not in self._unanswered)
            for qid in query_ids
        )

    @property
    def synced(self) -> bool:
        """Live, every subscription answered, and no pending mutation (each acked and
        reached by the cursor, invariant 8)."""
        return (
            self.state is State.LIVE
            and not self._resuming
            and not self._sub_batches
            and not self._unanswered
            and not self.replica.pending
        )

    @property
    def acked(self) -> int:
        """The highest mutation id such that this client holds the answer to it and to
        every id below it (``hello.acked``)."""
        unacked = [p.mutation.id for p in self.replica.pending if not p.acked]
        return min(unacked) - 1 if unacked else self.replica.next_mutation_id - 1

    # --- the transport ----------------------------------------------------------------

    def connection_made(self) -> None:
        if self.state is State.FAILED:
            return
        self._reset_connection()
        self.state = State.HELLO_SENT
        hello: dict[str, Any] = {
            "t": "hello",
            "v": PROTOCOL_VERSION,
            "client": self.replica.client_id,
            "schema": self.schema_hash,
            "acked": self.acked,
        }
        if self.credentials is not None:
            hello["auth"] = self.credentials
        self._out.append(hello)

    def connection_lost(self) -> None:
        if self.state is not State.FAILED:
            self.state = State.CLOSED
        self._reset_connection()

    def _reset_connection(self) -> None:
        self._out.clear()
        self._subs_after_welcome.clear()
        self._sub_batches.clear()
        self._resuming = False
        self._resume_queries = {}
        self._sent_upto = 0
        self._in_flight.clear()
        self._rewind_to = None
        self._hold_until = None
        self._stalls = 0
        self._stall_waited = False
        self.close_requested = None

    def data_to_send(self, now: float) -> list[dict[str, Any]]:
        """Frames to send now, in order."""
        out, self._out = self._out, []
        if self.state is not State.LIVE:
            return out
        out += self._mutations_to_send(now)
        out += self._subs_after_welcome
        self._subs_after_welcome = []
        return out

    def _mutations_to_send(self, now: float) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._hold_until is not None:
            if now < self._hold_until:
                return out
            self._hold_until = None
        if self._rewind_to is not None:
            if self._in_flight:
                return out  # wait for every answer to what was sent before
            if self._stalls and not self._stall_waited:
                # The last resend made no progress: wait longer each time, never spin.
                base, most = self.stall_backoff
                self._stall_waited = True
                self._hold_until = now + min(most, base * 2 ** (self._stalls - 1))
                return out
            unacked = [m.id for m in self.replica.unacked()]
            if unacked and self._rewind_to < unacked[0]:
                self._renumber(self._rewind_to)
                unacked = [m.id for m in self.replica.unacked()]
            start = min(self._rewind_to, *unacked) if unacked else self._rewind_to
            self._sent_upto = start - 1
            self._rewind_to = None
            self._stalls += 1
            self._stall_waited = False
        for m in self.replica.unacked():
            if m.id <= self._sent_upto:
                continue
            if len(self._in_flight) >= self.max_in_flight:
                break
            out.append(mut_frame(m))
            self._sent_upto = m.id
            self._in_flight.add(m.id)
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`data_to_send` may have something new without any input: the end
        of a ``retry_after`` wait. None: only input can change what is to send."""
        return self._hold_until if self.state is State.LIVE else None

    def receive_text(self, data: str | bytes, now: float) -> list[ClientEvent]:
        """Decode one frame and :meth:`receive` it."""
        try:
            frame = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            return self._peer_error("bad_json", f"the server sent invalid JSON: {exc}")
        if not isinstance(frame, dict):
            return self._peer_error("bad_frame", "the server sent a frame that is not an object")
        return self.receive(frame, now)

    def receive(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        """Take one decoded server frame; return what happened, for the application."""
        if self.state is State.FAILED:
            return []
        kind = frame.get("t")
        handler = _HANDLERS.get(kind) if isinstance(kind, str) else None
        if handler is None:
            return self._peer_error("unknown_frame", f"unknown frame type {kind!r}")
        try:
            return handler(self, frame, now)
        except CursorError as exc:
            # The stream does not follow this replica (invariant 7): resume afresh.
            return self._peer_error("cursor", str(exc))
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            return self._peer_error("bad_frame", f"malformed {kind} frame: {exc!r}")

    def _peer_error(self, code: str, message: str) -> list[ClientEvent]:
        """The server sent something this client cannot use: reconnect and resume."""
        self.close_requested = f"{code}: {message}"
        return [ClientEvent("error", error={"code": code, "message": message})]

    # --- frames from the server ---------------------------------------------------------

    def _on_welcome(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        if self.state is not State.HELLO_SENT:
            return []
        self.epoch = str(frame["epoch"])
        self.server_last = int(frame.get("last", 0))
        cursor = self.replica.cursor
        if cursor is not None and cursor.epoch != self.epoch:
            # Another database: whatever it acknowledged lives in the old one.
            for p in self.replica.pending:
                p.acked, p.seq = False, None
        # The server never saw ids below our first unacked one: it lost them (another
        # database) or refused them without using them up. Take the ids it expects.
        self._renumber(self.server_last + 1)
        self.state = State.LIVE
        resume = {
            q: w
            for q, w in self.wanted.items()
            if q not in self._unanswered and q in self.replica.queries
        }
        if not resume or cursor is None:
            resume = {}
        fresh = {q: w for q, w in self.wanted.items() if q not in resume}
        # Subs go after the first mutations (data_to_send): answers to mutations the
        # server already applied (a lost ack) then arrive before the changes that hold
        # them, so the view never counts them twice.
        if resume:
            assert cursor is not None
            self._resuming = True
            self._resume_queries = resume
            self._subs_after_welcome.append({"t": "sub", "queries": resume, "since": str(cursor)})
        if fresh:
            self._send_sub(fresh, self._subs_after_welcome)
        return []

    def _send_sub(
        self, queries: dict[str, dict[str, Any]], out: list[dict[str, Any]] | None = None
    ) -> None:
        """A ``sub`` without ``since``: answered by a snapshot at the head."""
        self._unanswered.update(queries)
        self._sub_batches.append(frozenset(queries))
        (self._out if out is None else out).append({"t": "sub", "queries": dict(queries)})

    def _on_snapshot(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        qids = frozenset(frame["queries"])
        events = self._load_snapshot(frame)
        if self._sub_batches and self._sub_batches[0] <= qids:
            self._sub_batches.popleft()
        reset = frame.get("reset")
        if reset is not None and self._resuming and qids >= set(self._resume_queries):
            self._resuming = False
        self._unanswered -= qids
        if reset is not None:
            events.append(ClientEvent("reset", keys=(), reason=str(reset)))
        return events

    def _load_snapshot(self, snapshot: Mapping[str, Any]) -> list[ClientEvent]:
        return [ClientEvent.from_replica(e) for e in self.replica.load_snapshot(snapshot)]

    def _on_changes(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        events = self.replica.apply_changes(frame)
        self._resuming = False
        return [ClientEvent.from_replica(e) for e in events]

    def _on_ack(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        mid = int(frame["mid"])
        self._answered(mid)
        events = [ClientEvent("ack", mutation_id=mid, frame=dict(frame))]
        wire = {k: v for k, v in frame.items() if k != "t"}
        if not self.wanted:
            # Without subscriptions the server sends no changes, so the cursor would
            # never reach the seq: there is no view to flicker, end the mutation now.
            wire["seq"] = None
        events += [ClientEvent.from_replica(e) for e in self.replica.apply_ack(wire)]
        return events

    def _on_reject(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        mid = int(frame["mid"])
        if frame.get("permanent", True):
            self._answered(mid)
            error = {k: v for k, v in frame.items() if k not in ("t", "mid", "permanent", "replay")}
            ack = {"mid": mid, "status": "rejected", "seq": None, "error": error}
            return [ClientEvent.from_replica(e) for e in self.replica.apply_ack(ack)]
        self._in_flight.discard(mid)
        if frame.get("code") == "gap":
            self._rewind(int(frame["expected"]))
        elif mid in {m.id for m in self.replica.unacked()}:
            retry_after = frame.get("retry_after")
            delay = self.default_retry_after if retry_after is None else float(retry_after)
            self._hold(now + delay)
            self._rewind(mid)
        return []

    def _on_error(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        code = str(frame.get("code", "error"))
        ref = frame.get("ref")
        if code in FATAL_CODES:
            self.state = State.FAILED
            self.fatal = dict(frame)
            kind: EventKind = "reload" if code == "reload" else "error"
            return [ClientEvent(kind, error=dict(frame), frame=dict(frame))]
        events = [ClientEvent("error", error=dict(frame), frame=dict(frame))]
        unacked = {m.id for m in self.replica.unacked()}
        if isinstance(ref, int) and ref in unacked:
            if code in _TEMPORARY_ERRORS:
                self._in_flight.discard(ref)
                retry_after = frame.get("retry_after")
                delay = self.default_retry_after if retry_after is None else float(retry_after)
                self._hold(now + delay)
                self._rewind(ref)
                return events
            # Refused without using its id up: drop it; the ids after it will be
            # renumbered when the server asks for this one again (a gap).
            self._answered(ref)
            error = {k: v for k, v in frame.items() if k not in ("t", "ref")}
            ack = {"mid": ref, "status": "rejected", "seq": None, "error": error}
            return events + [ClientEvent.from_replica(e) for e in self.replica.apply_ack(ack)]
        if code in _CURSOR_ERRORS and self._resuming:
            # The server cannot continue from this cursor: take fresh snapshots.
            self._resuming = False
            queries, self._resume_queries = self._resume_queries, {}
            self._send_sub(queries)
        elif code in _SUB_ERRORS and (self._resuming or self._sub_batches):
            # Subs are answered in order, before anything sent after them.
            if self._resuming:
                self._resuming = False
                refused: Iterable[str] = self._resume_queries
            else:
                refused = self._sub_batches.popleft()
            for qid in list(refused):
                self.wanted.pop(qid, None)
                self._unanswered.discard(qid)
        return events

    def _on_ping(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        n = frame.get("n")
        self._out.append({"t": "pong"} if n is None else {"t": "pong", "n": n})
        return []

    def _on_pong(self, frame: Mapping[str, Any], now: float) -> list[ClientEvent]:
        return []

    # --- mutation bookkeeping -----------------------------------------------------------

    def _answered(self, mid: int) -> None:
        self._in_flight.discard(mid)
        self._stalls = 0

    def _hold(self, until: float) -> None:
        self._hold_until = until if self._hold_until is None else max(self._hold_until, until)

    def _rewind(self, mid: int) -> None:
        self._rewind_to = mid if self._rewind_to is None else min(self._rewind_to, mid)

    def _renumber(self, first: int) -> None:
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


_Handler = Callable[[ClientProtocol, Mapping[str, Any], float], list[ClientEvent]]
_HANDLERS: dict[str, _Handler] = {
    "welcome": ClientProtocol._on_welcome,
    "snapshot": ClientProtocol._on_snapshot,
    "changes": ClientProtocol._on_changes,
    "ack": ClientProtocol._on_ack,
    "reject": ClientProtocol._on_reject,
    "error": ClientProtocol._on_error,
    "ping": ClientProtocol._on_ping,
    "pong": ClientProtocol._on_pong,
}
