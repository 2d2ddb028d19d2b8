"""The server's side of the wire protocol, sans I/O: one connection's state machine,
its limits, and the frames it answers with. ``docs/protocol.md`` is the contract.

Theory of operation. A :class:`ServerProtocol` is fed each frame a client sent
(:meth:`ServerProtocol.receive`, with the time, so tests need no clock) and answers
with one event for the I/O layer to act on (:class:`Hello`, :class:`Subscribe`,
:class:`Unsubscribe`, :class:`Mutate`, :class:`Ping`, :class:`Pong`), or raises
:class:`ProtocolError` (the peer misbehaved), whose ``frame()`` is what to send back.
The I/O layer sends what the protocol builds (:meth:`ServerProtocol.welcome`,
:meth:`~ServerProtocol.pong`, :meth:`~ServerProtocol.ack` ...) and never assembles a
frame itself. Calling the API out of order (a ``welcome`` before any ``hello``)
raises :class:`ProtocolMisuse`: a bug of the caller, never the peer's.

The state machine is :data:`TRANSITIONS`, read by the code: for each state, the frame
types it accepts and the state each leads to. A frame a state does not accept is
refused as :data:`REFUSALS` says, and the state stays::

    state         frame                       -> state      event
    AWAIT_HELLO   hello                        READY        Hello (the I/O layer
                                                            authenticates, then sends
                                                            welcome() or a fatal error)
    AWAIT_HELLO   anything else                (same)       bad_state "send hello first"
    READY         sub/unsub/mut/ping/pong      READY        Subscribe ... Pong
    READY         join/presence/leave          READY        Join, PresenceUpdate, Leave
    READY         hello                        (same)       bad_state "already sent"
    CLOSED        anything                     CLOSED       closed

Limits live here too, so every transport enforces the same ones: frame size, ops per
mutation, string length and depth (:class:`~syncline.protocol.frames.Limits`), and a
token bucket of mutations per second. A ``mut`` that breaks a limit or is malformed
while its ``id`` is readable is a permanent refusal of that mutation (its id is used
up, invariant 3): a :class:`Mutate` with ``refusal`` set.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Final

from ..exceptions import InvalidMutation, SynclineError
from ..results import Ack
from .frames import (
    CLIENT_FRAME_TYPES,
    PROTOCOL_VERSION,
    AckFrame,
    ClientFrame,
    ErrorFrame,
    HelloFrame,
    JoinFrame,
    LeaveFrame,
    Limits,
    MutFrame,
    PingFrame,
    PongFrame,
    PresenceFrame,
    ProtocolError,
    RejectFrame,
    ServerPingFrame,
    ServerPongFrame,
    SubFrame,
    UnsubFrame,
    WelcomeFrame,
    ack_frame,
    decode_client_frame,
    decode_mutate_body,
    encode,
    error_frame,
    peek,
)

__all__ = [
    "PROTOCOL_VERSION",
    "REFUSALS",
    "TRANSITIONS",
    "Hello",
    "HttpMutate",
    "Join",
    "Leave",
    "Limits",
    "Mutate",
    "Ping",
    "Pong",
    "PresenceUpdate",
    "ProtocolError",
    "ProtocolMisuse",
    "ServerProtocol",
    "State",
    "Subscribe",
    "Unsubscribe",
    "decode_client_frame",
]


class ProtocolMisuse(SynclineError, RuntimeError):
    """The caller used :class:`ServerProtocol` out of order (a bug in the I/O layer,
    not the peer's doing): for example a ``welcome`` before any ``hello`` arrived."""


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


TRANSITIONS: Final[dict[State, dict[str, State]]] = {
    State.AWAIT_HELLO: {"hello": State.READY},
    State.READY: {t: State.READY for t in CLIENT_FRAME_TYPES if t != "hello"},
    State.CLOSED: {},
}
"""For each state, the frame types it accepts and the state each one leads to."""

REFUSALS: Final[dict[State, tuple[str, str]]] = {
    State.AWAIT_HELLO: ("bad_state", "send hello before {t}"),
    State.READY: ("bad_state", "{t} was already sent on this connection"),
    State.CLOSED: ("closed", "the connection is closed"),
}
"""The ``error`` (code, message) for a frame the state does not accept."""


# --- events for the I/O layer ----------------------------------------------------------


@dataclass(frozen=True)
class Hello:
    client_id: str
    schema_hash: str
    credentials: dict[str, Any] | None
    acked: int


@dataclass(frozen=True)
class Subscribe:
    queries: dict[str, dict[str, Any]]
    since: str | None


@dataclass(frozen=True)
class Unsubscribe:
    query_ids: list[str]


@dataclass(frozen=True)
class Mutate:
    mutation: dict[str, Any]  # decoded by the engine, so a bad op uses up its id
    mutation_id: int
    refusal: ProtocolError | None = None  # refused before decoding; still uses up the id

    def refused(self) -> InvalidMutation | None:
        """The refusal as the engine stores it (``Engine.apply(refusal=...)``), with the
        protocol's reason as its code: ``bad_frame``, ``limit``, ``too_large``."""
        if self.refusal is None:
            return None
        refusal = InvalidMutation(str(self.refusal))
        refusal.code = self.refusal.code
        return refusal


@dataclass(frozen=True)
class HttpMutate:
    """A ``POST /sync/mutate`` decoded: who sends it, which answers it holds (as
    ``hello.acked``), and the mutation, refused or not, as on a WebSocket."""

    client_id: str
    acked: int
    mutate: Mutate


@dataclass(frozen=True)
class Ping:
    n: int | None


@dataclass(frozen=True)
class Pong:
    n: int | None


@dataclass(frozen=True)
class Join:
    """Enter ``room`` with ``state`` (``encoded``: its JSON, already bounded)."""

    room: str
    state: dict[str, Any]
    encoded: bytes


@dataclass(frozen=True)
class PresenceUpdate:
    room: str
    state: dict[str, Any]
    encoded: bytes


@dataclass(frozen=True)
class Leave:
    room: str


Event = Hello | Subscribe | Unsubscribe | Mutate | Ping | Pong | Join | PresenceUpdate | Leave


@dataclass
class ServerProtocol:
    """One connection's protocol state, on the server."""

    limits: Limits = field(default_factory=Limits)
    state: State = State.AWAIT_HELLO
    client_id: str | None = None
    welcomed: bool = False
    _tokens: float = -1.0
    _last_refill: float = 0.0
    _refused: int = 0  # mutations refused for the rate since the last one accepted

    # --- frames in ----------------------------------------------------------------------

    def receive(self, data: str | bytes, now: float) -> Event:
        """Decode one text frame (``str``; ``bytes`` is a binary frame, which the
        protocol does not use) and advance the state; raise :class:`ProtocolError`."""
        if not isinstance(data, str | bytes):
            raise ProtocolMisuse(f"receive() takes a frame's str or bytes, not {type(data)}")
        if not TRANSITIONS[self.state]:
            code, message = REFUSALS[self.state]
            raise ProtocolError(code, message)
        if isinstance(data, bytes):
            raise ProtocolError(
                "bad_frame", "binary frames are not part of the protocol: send UTF-8 JSON text"
            )
        raw = data.encode()
        if len(raw) > self.limits.max_frame_bytes:
            error = ProtocolError(
                "too_large",
                f"frame of {len(raw)} bytes exceeds the limit of {self.limits.max_frame_bytes}",
            )
            kind, mid = peek(raw)
            if kind != "mut":
                raise error
            self._check_accepts("mut", mid)
            return self._refuse_mutation(mid, error)
        try:
            frame = decode_client_frame(raw, self.limits)
        except ProtocolError as exc:
            kind, mid = peek(raw)
            if kind != "mut":
                raise
            self._check_accepts("mut", mid)
            # Every mut frame costs a token, well-formed or not: refusing a malformed
            # one is a durable write too.
            self._spend_token(mid, now)
            return self._refuse_mutation(mid, exc)
        if isinstance(frame, MutFrame):
            self._spend_token(frame.id, now)
        kind = _TYPE_OF[type(frame)]
        next_state = self._check_accepts(kind, getattr(frame, "id", None))
        event: Event = _EVENT_OF[type(frame)](self, frame)
        self.state = next_state
        return event

    def _check_accepts(self, kind: str, ref: Any) -> State:
        """The state a ``kind`` frame leads to; refuse it if this state takes none."""
        next_state = TRANSITIONS[self.state].get(kind)
        if next_state is None:
            code, message = REFUSALS[self.state]
            raise ProtocolError(code, message.format(t=kind), ref=ref)
        return next_state

    def receive_mutate_body(self, body: bytes) -> HttpMutate:
        """Decode a ``POST /sync/mutate`` body (its size bounded by the caller) by the
        rules of a ``mut`` frame; raise :class:`ProtocolError` when it cannot be
        attributed to a mutation. HTTP is stateless: each request is a connection that
        said hello and sends one mutation, without a rate bucket."""
        envelope = decode_mutate_body(body)
        acked = envelope.acked
        self.state, self.client_id = State.READY, envelope.client
        raw = encode({**envelope.mut, "t": "mut"})
        try:
            frame = decode_client_frame(raw, self.limits)
        except ProtocolError as exc:
            mutate = self._refuse_mutation(envelope.mut.get("id"), exc)
        else:
            assert isinstance(frame, MutFrame)
            mutate = self._mut(frame)
        valid = isinstance(acked, int) and not isinstance(acked, bool) and acked > 0
        return HttpMutate(envelope.client, acked if valid else 0, mutate)

    def _hello(self, frame: HelloFrame) -> Event:
        if frame.v != PROTOCOL_VERSION:
            raise ProtocolError(
                "version",
                f"protocol version {frame.v} is not supported; "
                f"this server speaks {PROTOCOL_VERSION}",
                fatal=True,
            )
        self.client_id = frame.client
        return Hello(frame.client, frame.schema_, frame.auth, frame.acked)

    def _sub(self, frame: SubFrame) -> Event:
        self.check_subscriptions(len(frame.queries))
        return Subscribe(dict(frame.queries), frame.since)

    def _unsub(self, frame: UnsubFrame) -> Event:
        return Unsubscribe(list(frame.queries))

    def _mut(self, frame: MutFrame) -> Mutate:
        if len(frame.ops) > self.limits.max_ops:
            error = ProtocolError(
                "limit", f"a mutation may hold at most {self.limits.max_ops} ops", ref=frame.id
            )
            return self._refuse_mutation(frame.id, error)
        return Mutate(frame.mutation(), frame.id)

    def _ping(self, frame: PingFrame) -> Event:
        return Ping(frame.n)

    def _pong(self, frame: PongFrame) -> Event:
        return Pong(frame.n)

    def _presence_state(self, room: str, state: dict[str, Any]) -> bytes:
        """A presence state's JSON, refused past ``max_presence_bytes``."""
        encoded = encode(state)
        if len(encoded) > self.limits.max_presence_bytes:
            raise ProtocolError(
                "limit",
                f"a presence state of {len(encoded)} bytes exceeds the limit of "
                f"{self.limits.max_presence_bytes}",
                ref=room,
            )
        return encoded

    def _join(self, frame: JoinFrame) -> Event:
        return Join(frame.room, frame.state, self._presence_state(frame.room, frame.state))

    def _presence(self, frame: PresenceFrame) -> Event:
        encoded = self._presence_state(frame.room, frame.state)
        return PresenceUpdate(frame.room, frame.state, encoded)

    def _leave(self, frame: LeaveFrame) -> Event:
        return Leave(frame.room)

    def check_subscriptions(self, count: int) -> None:
        """Refuse holding more than ``max_subscriptions`` queries at once."""
        if count > self.limits.max_subscriptions:
            raise ProtocolError(
                "limit", f"at most {self.limits.max_subscriptions} queries per connection"
            )

    def _refuse_mutation(self, mutation_id: Any, error: ProtocolError) -> Mutate:
        """A ``mut`` frame that breaks a limit or is malformed is a permanent refusal of
        that mutation: it uses up its id (invariant 3), so one bad mutation never blocks
        the queue behind it. Without a usable id, or before hello, it stays an error."""
        valid_id = isinstance(mutation_id, int) and not isinstance(mutation_id, bool)
        if self.state is not State.READY or not valid_id or mutation_id < 1:
            error.ref = mutation_id if valid_id else None
            raise error
        return Mutate({"id": mutation_id, "ops": []}, mutation_id, refusal=error)

    def _spend_token(self, mutation_id: Any, now: float) -> None:
        """Spend one mutation token (once hello is done); refuse the mutation for now,
        nothing used up, while the bucket is empty."""
        if self.state is not State.READY:
            return
        retry = self._take_token(now)
        if retry:
            valid_id = isinstance(mutation_id, int) and not isinstance(mutation_id, bool)
            raise ProtocolError(
                "rate",
                f"too many mutations; retry after {retry:.2f}s",
                ref=mutation_id if valid_id else None,
                retry_after=retry,
            )

    def _take_token(self, now: float) -> float:
        """Spend one mutation token; return 0, or the seconds until the bucket holds a
        token for this mutation and for every one refused before it since the last
        accepted: a client that resends its refused mutations after the longest
        ``retry_after`` finds room for all of them, instead of one (and a refusal of
        each of the others) per wait."""
        rate, burst = self.limits.mutations_per_second, self.limits.mutation_burst
        if self._tokens < 0:
            self._tokens, self._last_refill = float(burst), now
        self._tokens = min(float(burst), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            self._refused = 0
            return 0.0
        self._refused = min(self._refused + 1, burst)
        return (self._refused - self._tokens) / rate

    def close(self) -> None:
        self.state = State.CLOSED

    # --- frames out ---------------------------------------------------------------------

    def welcome(self, epoch: str, head: str, last_mutation: int) -> WelcomeFrame:
        """The answer to an accepted ``hello``: once, after it."""
        if self.client_id is None or self.state is not State.READY:
            raise ProtocolMisuse("welcome() answers a hello: none was received")
        if self.welcomed:
            raise ProtocolMisuse("welcome() was already sent on this connection")
        self.welcomed = True
        return WelcomeFrame(
            v=PROTOCOL_VERSION, client=self.client_id, epoch=epoch, head=head, last=last_mutation
        )

    @staticmethod
    def pong(ping: Ping) -> ServerPongFrame:
        """The answer to a ``ping``: the same ``n``, none if it had none."""
        return ServerPongFrame(n=ping.n)

    @staticmethod
    def ping() -> ServerPingFrame:
        return ServerPingFrame()

    @staticmethod
    def ack(ack: Ack) -> AckFrame | RejectFrame:
        return ack_frame(ack)

    @staticmethod
    def internal_error() -> ErrorFrame:
        """What a peer is told of a bug of ours: nothing more than that."""
        return error_frame("internal", "internal error")


_TYPE_OF: Final[dict[type[ClientFrame], str]] = {
    HelloFrame: "hello",
    SubFrame: "sub",
    UnsubFrame: "unsub",
    MutFrame: "mut",
    PingFrame: "ping",
    PongFrame: "pong",
    JoinFrame: "join",
    PresenceFrame: "presence",
    LeaveFrame: "leave",
}
_EVENT_OF: Final[dict[type[Any], Any]] = {
    HelloFrame: ServerProtocol._hello,
    SubFrame: ServerProtocol._sub,
    UnsubFrame: ServerProtocol._unsub,
    MutFrame: ServerProtocol._mut,
    PingFrame: ServerProtocol._ping,
    PongFrame: ServerProtocol._pong,
    JoinFrame: ServerProtocol._join,
    PresenceFrame: ServerProtocol._presence,
    LeaveFrame: ServerProtocol._leave,
}
