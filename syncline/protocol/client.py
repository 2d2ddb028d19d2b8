"""The client side of the wire protocol, sans I/O (``docs/protocol.md`` is the contract).

One module (about 600 lines) because every handler reads and moves the same state
machine; the send window lives apart in :mod:`syncline.protocol.pacing`.

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
order, a bounded window at a time; temporary refusals resend from the refused id after
``retry_after``, and a ``gap`` below every id held renumbers them:
:mod:`syncline.protocol.pacing` holds those rules, this class feeds it the answers.

Subscriptions (invariants 6, 7). ``wanted`` holds every query the application asked
for. On ``welcome``, the queries the replica holds are resumed by one ``sub`` ``since``
its cursor (the first ``sub`` of the connection); any others get a ``sub`` without
``since``, answered by a snapshot. The subs follow the unacked mutations: the server
answers frames in order, so the acks (with their ``seq``) of mutations it had already
applied arrive before the changes that contain them, and the view never shows such a
mutation twice. A snapshot marked ``reset`` replaces the queries' data; pending
mutations stay and are shown on top of it. A welcome from another database (its epoch
differs from the cursor's) makes every pending mutation unacked again.

Frames. :meth:`~ClientProtocol.receive` decodes each server frame once
(:func:`decode_frame`) into its type in :mod:`syncline.protocol.frames`, with the change
items and records inside checked against their shapes in ``docs/protocol.md``. What
does not decode is a :class:`~syncline.protocol.frames.ProtocolError` (``bad_json``,
``bad_frame``, ``unknown_frame``): an ``error`` event, and ``close_requested`` asks the
I/O layer to reconnect. Handlers only ever see valid frames.

State (invariant 8). The replica owns the data, which records each query holds
(:meth:`Replica.members`) and the snapshot a client saves (:meth:`Replica.held_snapshot`);
this class keeps only the queries asked for and the connection's progress.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

import msgspec

from ..exceptions import CursorError, QueryError, SchemaError, SynclineError
from ..ops import Mutation, Op
from ..presence import Member, RoomView
from ..query import Query
from ..replica import Draft, Replica
from ..replica import Event as ReplicaEvent
from ..results import Ack
from .frames import (
    PROTOCOL_VERSION,
    AckFrame,
    ChangesFrame,
    ErrorFrame,
    PresenceDiffFrame,
    ProtocolError,
    RejectFrame,
    RoomFrame,
    ServerFrame,
    ServerPingFrame,
    ServerPongFrame,
    SnapshotFrame,
    WelcomeFrame,
    decode_server_frame,
    encode,
)
from .pacing import Pacer

__all__ = [
    "FATAL_CODES",
    "ClientEvent",
    "ClientFailed",
    "ClientProtocol",
    "EventKind",
    "State",
    "decode_frame",
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
    "undo-partial",  # an undo or redo skipped fields others changed since (keys, fields)
    "ack",  # the server answered a mutation (frame: the ack as sent, with ``replay``)
    "reset",  # a snapshot replaced the data of some queries (reason)
    "reload",  # the server's schema differs: reload the application (frame)
    "error",  # an error frame, or a frame this client could not use (error)
    "status",  # the connection status changed (status)
    "presence",  # a room's members changed (room, frame: the room or presence_diff
    # frame), or its join was refused (room, error)
]

FATAL_CODES = frozenset({"reload", "unauthorized", "version", "client_id_taken"})
"""``error`` codes after which reconnecting cannot help."""

_TEMPORARY_ERRORS = frozenset({"rate", "retry", "storage_full", "read_only", "unavailable"})
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
    """Something the application may want to know; ``kind`` says which fields are set.

    ``frame`` and ``error`` are wire forms (plain JSON objects), as the server sent
    them less the fields it left at their defaults."""

    kind: EventKind
    mutation_id: int | None = None
    keys: tuple[Key, ...] = ()
    fields: tuple[str, ...] = ()
    draft: Draft | None = None
    error: Mapping[str, Any] | None = None
    frame: Mapping[str, Any] | None = None
    reason: str | None = None
    status: str | None = None
    room: str | None = None
    changes: tuple[tuple[str, Member], ...] = ()

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


# --- what the frames hold: change items and records (docs/protocol.md, Change items) ----


class _Record(msgspec.Struct, frozen=True):
    """A record as the server sends it (``Record.to_wire``); unknown fields pass."""

    id: str
    inc: int
    v: int
    fv: dict[str, int]
    data: dict[str, Any]


class _Enter(_Record, frozen=True, tag_field="k", tag="enter"):
    c: str | None = None


class _Patch(_Enter, frozen=True, tag="patch"):
    """The fields of a record that changed: the same shape as an ``enter``."""


class _Remove(msgspec.Struct, frozen=True, kw_only=True, tag_field="k", tag="remove"):
    id: str
    c: str | None = None


class _Reset(msgspec.Struct, frozen=True, kw_only=True, tag_field="k", tag="reset"):
    records: list[_Record]


_RECORDS: Final = dict[str, list[_Record]]
_ITEMS: Final = dict[str, list[_Enter | _Patch | _Remove | _Reset]]


def _check_content(kind: str, value: Any, shape: Any) -> None:
    """Raise ``bad_frame`` unless ``value`` (the records or change items of a decoded
    frame, which :mod:`.frames` leaves as JSON objects) has ``shape``."""
    try:
        msgspec.convert(value, shape)
    except msgspec.ValidationError as exc:
        raise ProtocolError("bad_frame", f"malformed {kind} frame: {exc}") from None


def decode_frame(frame: ServerFrame | Mapping[str, Any] | str | bytes) -> ServerFrame:
    """A server frame, typed and checked through its content; raise
    :class:`~syncline.protocol.frames.ProtocolError` for anything this client cannot
    use. A frame already parsed (a JSON object) goes through the same decoder."""
    if isinstance(frame, Mapping):
        try:
            frame = encode(frame)
        except (TypeError, msgspec.EncodeError) as exc:
            raise ProtocolError("bad_frame", f"the frame is not JSON: {exc}") from None
    decoded = frame if isinstance(frame, msgspec.Struct) else decode_server_frame(frame)
    if isinstance(decoded, SnapshotFrame):
        _check_content("snapshot", decoded.records, _RECORDS)
    elif isinstance(decoded, ChangesFrame):
        _check_content("changes", decoded.q, _ITEMS)
    return decoded


def _wire(frame: msgspec.Struct) -> dict[str, Any]:
    wire: dict[str, Any] = msgspec.to_builtins(frame)
    return wire


def _ack(frame: AckFrame) -> Ack:
    """The ack the replica settles: the typed frame's wire form, read as every ack is."""
    return Ack.from_wire(_wire(frame))


def _refused(mid: int, error: Mapping[str, Any]) -> Ack:
    """A mutation the server refused for good, as the replica settles it."""
    return Ack(mid, "rejected", None, error=dict(error))


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
        self._pacer = Pacer(replica, max_in_flight=max_in_flight, stall_backoff=stall_backoff)
        self.rooms: dict[str, RoomView] = {}  # presence rooms joined, rejoined on welcome

    # --- what the application asks for ------------------------------------------------

    def hydrate(self, state: Mapping[str, Any]) -> list[ClientEvent]:
        """Build the replica from a page's embedded state (``docs/protocol.md``,
        Embedded state) without fetching; the next connection resumes from its cursor.

        ``v`` and ``schema`` may be left out (a held snapshot a client saved); a state
        that is not a snapshot raises :class:`~syncline.protocol.frames.ProtocolError`."""
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
        body = {k: state[k] for k in ("cursor", "queries", "records") if k in state}
        snapshot = decode_frame({"t": "snapshot", **body})
        assert isinstance(snapshot, SnapshotFrame)
        events = self._load_snapshot(snapshot)
        for qid, query in snapshot.queries.items():
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

    # --- presence ---------------------------------------------------------------------

    def join(self, room: str, state: Mapping[str, Any]) -> RoomView:
        """Enter ``room`` (now if live, else on the next welcome); again: an update."""
        view = self.rooms.get(room)
        if view is None:
            view = self.rooms[room] = RoomView(room, dict(state))
        view.state = dict(state)
        if self.state is State.LIVE:
            self._out.append({"t": "join", "room": room, "state": view.state})
        return view

    def presence(self, room: str, state: Mapping[str, Any]) -> None:
        """Replace this client's state in a joined room."""
        view = self.rooms.get(room)
        if view is None:
            raise KeyError(f"room {room!r} is not joined")
        view.state = dict(state)
        if self.state is State.LIVE:
            self._out.append({"t": "presence", "room": room, "state": view.state})

    def leave(self, room: str) -> None:
        if self.rooms.pop(room, None) is not None and self.state is State.LIVE:
            self._out.append({"t": "leave", "room": room})

    def _on_room(self, frame: RoomFrame) -> list[ClientEvent]:
        view = self.rooms.get(frame.room)
        if view is None:  # left meanwhile
            return []
        members = [Member(m.key, m.user, m.state) for m in frame.members]
        changes = view.load(frame.me, members)
        return [
            ClientEvent("presence", room=frame.room, frame=_wire(frame), changes=tuple(changes))
        ]

    def _on_presence_diff(self, frame: PresenceDiffFrame) -> list[ClientEvent]:
        view = self.rooms.get(frame.room)
        if view is None:
            return []
        changes = view.apply(
            [Member(m.key, m.user, m.state) for m in frame.joins],
            [Member(m.key, m.user, m.state) for m in frame.updates],
            frame.leaves,
        )
        return [
            ClientEvent("presence", room=frame.room, frame=_wire(frame), changes=tuple(changes))
        ]

    def _room_refused(self, frame: ErrorFrame) -> list[ClientEvent] | None:
        """An error about a room this client asked for: it is left; None otherwise."""
        ref = frame.ref
        if not isinstance(ref, str) or ref not in self.rooms:
            return None
        if frame.code not in ("room_refused", "not_joined") and (
            frame.code != "limit" or ref in self.wanted
        ):
            return None
        del self.rooms[ref]
        wire = _wire(frame)
        return [ClientEvent("presence", room=ref, error=dict(wire), frame=dict(wire))]

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
        for view in self.rooms.values():  # what it shows is stale until joined again
            view.answered = False

    def fail(self, code: str, message: str) -> list[ClientEvent]:
        """Stop for good on a refusal found outside the protocol (a URL that can never
        connect): the same state and event as a fatal ``error`` frame."""
        return self._on_error(ErrorFrame(code=code, message=message), 0.0, fatal=True)

    def _reset_connection(self) -> None:
        self._out.clear()
        self._subs_after_welcome.clear()
        self._sub_batches.clear()
        self._resuming = False
        self._resume_queries = {}
        self._pacer.reset()
        self.close_requested = None

    def data_to_send(self, now: float) -> list[dict[str, Any]]:
        """Frames to send now, in order."""
        out, self._out = self._out, []
        if self.state is not State.LIVE:
            return out
        out += [mut_frame(m) for m in self._pacer.to_send(now)]
        out += self._subs_after_welcome
        self._subs_after_welcome = []
        return out

    def next_deadline(self) -> float | None:
        """When :meth:`data_to_send` may have something new without any input: the end
        of a ``retry_after`` wait. None: only input can change what is to send."""
        return self._pacer.hold_until if self.state is State.LIVE else None

    def receive_text(self, data: str | bytes, now: float) -> list[ClientEvent]:
        """Decode one frame as the server sent it and :meth:`receive` it."""
        return self.receive(data, now)

    def receive(
        self, frame: ServerFrame | Mapping[str, Any] | str | bytes, now: float
    ) -> list[ClientEvent]:
        """Take one server frame (its text, its parsed JSON object, or decoded); return
        what happened, for the application."""
        if self.state is State.FAILED:
            return []
        try:
            decoded = decode_frame(frame)
        except ProtocolError as exc:
            return self._peer_error(exc.code, str(exc))
        try:
            return self._handle(decoded, now)
        except CursorError as exc:
            # The stream does not follow this replica (invariant 7): resume afresh.
            return self._peer_error("cursor", str(exc))
        except QueryError as exc:
            # A snapshot's query this client's schema cannot read.
            return self._peer_error(
                "bad_frame", f"the server sent a query this client cannot read: {exc}"
            )

    def _handle(self, frame: ServerFrame, now: float) -> list[ClientEvent]:
        match frame:
            case WelcomeFrame():
                return self._on_welcome(frame)
            case SnapshotFrame():
                return self._on_snapshot(frame)
            case ChangesFrame():
                return self._on_changes(frame)
            case AckFrame():
                return self._on_ack(frame)
            case RejectFrame():
                return self._on_reject(frame, now)
            case ErrorFrame():
                return self._on_error(frame, now)
            case ServerPingFrame():
                self._out.append({"t": "pong"} if frame.n is None else {"t": "pong", "n": frame.n})
                return []
            case ServerPongFrame():
                return []
            case RoomFrame():
                return self._on_room(frame)
            case PresenceDiffFrame():
                return self._on_presence_diff(frame)

    def _peer_error(self, code: str, message: str) -> list[ClientEvent]:
        """The server sent something this client cannot use: reconnect and resume."""
        self.close_requested = f"{code}: {message}"
        return [ClientEvent("error", error={"code": code, "message": message})]

    # --- frames from the server ---------------------------------------------------------

    def _on_welcome(self, frame: WelcomeFrame) -> list[ClientEvent]:
        if self.state is not State.HELLO_SENT:
            return []
        self.epoch = frame.epoch
        self.server_last = frame.last
        cursor = self.replica.cursor
        if cursor is not None and cursor.epoch != self.epoch:
            # Another database: whatever it acknowledged lives in the old one.
            for p in self.replica.pending:
                p.acked, p.seq = False, None
        # The server never saw ids below our first unacked one: it lost them (another
        # database) or refused them without using them up. Take the ids it expects.
        self._pacer.renumber(self.server_last + 1)
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
        for view in self.rooms.values():  # rooms are held per connection: join again
            view.answered = False
            self._subs_after_welcome.append({"t": "join", "room": view.name, "state": view.state})
        return []

    def _send_sub(
        self, queries: dict[str, dict[str, Any]], out: list[dict[str, Any]] | None = None
    ) -> None:
        """A ``sub`` without ``since``: answered by a snapshot at the head."""
        self._unanswered.update(queries)
        self._sub_batches.append(frozenset(queries))
        (self._out if out is None else out).append({"t": "sub", "queries": dict(queries)})

    def _on_snapshot(self, frame: SnapshotFrame) -> list[ClientEvent]:
        qids = frozenset(frame.queries)
        events = self._load_snapshot(frame)
        if self._sub_batches and self._sub_batches[0] <= qids:
            self._sub_batches.popleft()
        if frame.reset is not None and self._resuming and qids >= set(self._resume_queries):
            self._resuming = False
        self._unanswered -= qids
        if frame.reset is not None:
            events.append(ClientEvent("reset", keys=(), reason=frame.reset))
        return events

    def _load_snapshot(self, frame: SnapshotFrame) -> list[ClientEvent]:
        snapshot = {"cursor": frame.cursor, "queries": frame.queries, "records": frame.records}
        return [ClientEvent.from_replica(e) for e in self.replica.load_snapshot(snapshot)]

    def _on_changes(self, frame: ChangesFrame) -> list[ClientEvent]:
        changes = {"from": frame.from_, "to": frame.to, "q": frame.q}
        events = self.replica.apply_changes(changes)
        self._resuming = False
        return [ClientEvent.from_replica(e) for e in events]

    def _on_ack(self, frame: AckFrame) -> list[ClientEvent]:
        self._pacer.answered(frame.mid)
        events = [ClientEvent("ack", mutation_id=frame.mid, frame=_wire(frame))]
        ack = _ack(frame)
        if not self.wanted:
            # Without subscriptions the server sends no changes, so the cursor would
            # never reach the seq: there is no view to flicker, end the mutation now.
            ack.seq = None
        events += [ClientEvent.from_replica(e) for e in self.replica.apply_ack(ack)]
        return events

    def _on_reject(self, frame: RejectFrame, now: float) -> list[ClientEvent]:
        mid = frame.mid
        if mid is None:  # this client's frames always carry a readable id
            return self._peer_error("bad_frame", "a reject frame without the mutation id")
        if frame.permanent:
            self._pacer.answered(mid)
            drop = ("t", "mid", "permanent", "replay")
            error = {k: v for k, v in _wire(frame).items() if k not in drop}
            return [
                ClientEvent.from_replica(e) for e in self.replica.apply_ack(_refused(mid, error))
            ]
        self._pacer.unanswered(mid)
        if frame.code == "gap" and frame.expected is not None:
            self._pacer.resend_from(frame.expected)
        elif frame.code == "gap":
            return self._peer_error("bad_frame", "a gap reject frame without expected")
        elif mid in {m.id for m in self.replica.unacked()}:
            self._retry_later(mid, frame.retry_after, now)
        return []

    def _on_error(self, frame: ErrorFrame, now: float, *, fatal: bool = False) -> list[ClientEvent]:
        code, ref, wire = frame.code, frame.ref, _wire(frame)
        if not fatal and (left := self._room_refused(frame)) is not None:
            return left
        if fatal or code in FATAL_CODES:
            self.state = State.FAILED
            self.fatal = wire
            kind: EventKind = "reload" if code == "reload" else "error"
            return [ClientEvent(kind, error=dict(wire), frame=dict(wire))]
        events = [ClientEvent("error", error=dict(wire), frame=dict(wire))]
        unacked = {m.id for m in self.replica.unacked()}
        if isinstance(ref, int) and ref in unacked:
            if code in _TEMPORARY_ERRORS:
                self._pacer.unanswered(ref)
                self._retry_later(ref, frame.retry_after, now)
                return events
            # Refused without using its id up: drop it; the ids after it will be
            # renumbered when the server asks for this one again (a gap).
            self._pacer.answered(ref)
            error = {k: v for k, v in wire.items() if k not in ("t", "ref")}
            refused = self.replica.apply_ack(_refused(ref, error))
            return events + [ClientEvent.from_replica(e) for e in refused]
        if code in _CURSOR_ERRORS and self._resuming:
            # The server cannot continue from this cursor: take fresh snapshots.
            self._resuming = False
            queries, self._resume_queries = self._resume_queries, {}
            self._send_sub(queries)
        elif code in _SUB_ERRORS and (self._resuming or self._sub_batches):
            # Subs are answered in order, before anything sent after them.
            if self._resuming:
                self._resuming = False
                refused_qids: Iterable[str] = self._resume_queries
            else:
                refused_qids = self._sub_batches.popleft()
            for qid in list(refused_qids):
                self.wanted.pop(qid, None)
                self._unanswered.discard(qid)
        return events

    def _retry_later(self, mid: int, retry_after: float | None, now: float) -> None:
        delay = self.default_retry_after if retry_after is None else retry_after
        self._pacer.retry_later(mid, now + delay)
