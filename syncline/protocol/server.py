"""The wire protocol, sans I/O: frames decoded once at the boundary, a connection's
state machine, and the frames the server sends. ``docs/protocol.md`` is the contract.

Theory of operation (server side). A :class:`ServerProtocol` is fed each text frame
a client sent (:meth:`ServerProtocol.receive`) and answers with one event to act on
(:class:`Hello`, :class:`Subscribe`, :class:`Unsubscribe`, :class:`Mutate`,
:class:`Ping`, :class:`Pong`) or raises :class:`ProtocolError`, whose ``frame()`` is the
``error`` frame to send back. The state machine is a table::

    state       frame            -> state      event
    ---------   --------------   ---------   -----------------------
    AWAIT_HELLO hello            READY       Hello (the I/O layer authenticates,
                                              then calls welcome() or refuse())
    AWAIT_HELLO anything else    (same)      ProtocolError "send hello first"
    READY       sub/unsub/mut    READY       Subscribe / Unsubscribe / Mutate
    READY       ping/pong        READY       Ping / Pong
    READY       hello            (same)      ProtocolError "hello was already sent"
    CLOSED      anything         CLOSED      ProtocolError "connection is closed"

Limits live here too, so every transport enforces the same ones: frame size, ops per
mutation, string length, and a token bucket of mutations per second (time is passed
in, so tests need no clock).

Protocol versions:
    1  (2026-11) hello/welcome, sub/unsub/snapshot/changes, mut/ack/reject, error,
       ping/pong. Cursors are opaque strings.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
)

from ..exceptions import SynclineError

__all__ = [
    "PROTOCOL_VERSION",
    "Hello",
    "Limits",
    "Mutate",
    "Ping",
    "Pong",
    "ProtocolError",
    "ServerProtocol",
    "State",
    "Subscribe",
    "Unsubscribe",
    "encode",
]

PROTOCOL_VERSION = 1


class ProtocolError(SynclineError):
    """The peer sent something the protocol does not allow; the connection may go on
    unless ``fatal``. ``code`` and the message travel in the ``error`` frame."""

    code = "protocol"

    def __init__(
        self,
        code: str,
        message: str,
        *,
        fatal: bool = False,
        ref: Any = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.fatal = fatal
        self.ref = ref
        self.retry_after = retry_after

    def frame(self) -> dict[str, Any]:
        if self.retry_after is not None:  # a temporary refusal of a mutation: nothing used up
            return {
                "t": "reject",
                "mid": self.ref,
                "permanent": False,
                "code": self.code,
                "message": str(self),
                "retry_after": round(self.retry_after, 3),
            }
        out: dict[str, Any] = {"t": "error", "code": self.code, "message": str(self)}
        if self.ref is not None:
            out["ref"] = self.ref
        return out


@dataclass(frozen=True)
class Limits:
    max_frame_bytes: int = 1 << 20
    max_ops: int = 500
    max_string: int = 100_000
    max_subscriptions: int = 100
    mutations_per_second: float = 50.0
    mutation_burst: int = 200


# --- client frames ---------------------------------------------------------------------


class _Frame(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class HelloFrame(_Frame):
    t: Literal["hello"]
    v: StrictInt
    client: Annotated[StrictStr, Field(min_length=8, max_length=128)]
    schema_: Annotated[StrictStr, Field(alias="schema", max_length=128)]
    auth: dict[str, Any] | None = None
    acked: Annotated[StrictInt, Field(ge=0)] = 0


class SubFrame(_Frame):
    t: Literal["sub"]
    queries: Annotated[dict[StrictStr, dict[str, Any]], Field(min_length=1)]
    since: StrictStr | None = None


class UnsubFrame(_Frame):
    t: Literal["unsub"]
    queries: list[StrictStr]


class MutFrame(_Frame):
    t: Literal["mut"]
    id: Annotated[StrictInt, Field(ge=1)]
    ops: list[Any]
    base: StrictInt = 0
    mode: Literal["whole", "partial"] = "whole"


class PingFrame(_Frame):
    t: Literal["ping"]
    n: StrictInt | None = None


class PongFrame(_Frame):
    t: Literal["pong"]
    n: StrictInt | None = None


ClientFrame = Annotated[
    HelloFrame | SubFrame | UnsubFrame | MutFrame | PingFrame | PongFrame, Field(discriminator="t")
]
_client_frame: TypeAdapter[ClientFrame] = TypeAdapter(ClientFrame)
CLIENT_FRAME_TYPES = ("hello", "sub", "unsub", "mut", "ping", "pong")


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


@dataclass(frozen=True)
class Ping:
    n: int | None


@dataclass(frozen=True)
class Pong:
    n: int | None


Event = Hello | Subscribe | Unsubscribe | Mutate | Ping | Pong


class State(enum.Enum):
    AWAIT_HELLO = "await_hello"
    READY = "ready"
    CLOSED = "closed"


@dataclass
class ServerProtocol:
    """One connection's protocol state, on the server."""

    limits: Limits = field(default_factory=Limits)
    state: State = State.AWAIT_HELLO
    client_id: str | None = None
    _tokens: float = -1.0
    _last_refill: float = 0.0

    def receive(self, data: str | bytes, now: float) -> Event:
        """Decode one frame and advance the state; raise :class:`ProtocolError`."""
        if self.state is State.CLOSED:
            raise ProtocolError("closed", "the connection is closed")
        size = len(data.encode() if isinstance(data, str) else data)
        if size > self.limits.max_frame_bytes:
            error = ProtocolError(
                "too_large",
                f"frame of {size} bytes exceeds the limit of {self.limits.max_frame_bytes}",
            )
            return self._refuse_mutation(_peek_mutation_id(data, size, self.limits), error)
        try:
            obj = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
        if isinstance(obj, dict) and obj.get("t") == "mut" and self.state is State.READY:
            # Every mut frame costs a token, well-formed or not: refusing a malformed one
            # is a durable write too.
            retry = self._take_token(now)
            if retry:
                mid = obj.get("id")
                raise ProtocolError(
                    "rate",
                    f"too many mutations; retry after {retry:.2f}s",
                    ref=mid if isinstance(mid, int) and not isinstance(mid, bool) else None,
                    retry_after=retry,
                )
        try:
            frame = decode_client_frame(obj, self.limits)
        except ProtocolError as exc:
            if isinstance(obj, dict) and obj.get("t") == "mut":
                return self._refuse_mutation(obj.get("id"), exc)
            raise
        if isinstance(frame, HelloFrame):
            if self.state is not State.AWAIT_HELLO:
                raise ProtocolError("bad_state", "hello was already sent on this connection")
            if frame.v != PROTOCOL_VERSION:
                raise ProtocolError(
                    "version",
                    f"protocol version {frame.v} is not supported; "
                    f"this server speaks {PROTOCOL_VERSION}",
                    fatal=True,
                )
            self.state = State.READY
            self.client_id = frame.client
            return Hello(frame.client, frame.schema_, frame.auth, frame.acked)
        if self.state is not State.READY:
            raise ProtocolError(
                "bad_state", f"send hello before {frame.t}", ref=getattr(frame, "id", None)
            )
        if isinstance(frame, SubFrame):
            if len(frame.queries) > self.limits.max_subscriptions:
                raise ProtocolError(
                    "limit", f"at most {self.limits.max_subscriptions} queries per connection"
                )
            return Subscribe(dict(frame.queries), frame.since)
        if isinstance(frame, UnsubFrame):
            return Unsubscribe(list(frame.queries))
        if isinstance(frame, MutFrame):
            if len(frame.ops) > self.limits.max_ops:
                error = ProtocolError(
                    "limit", f"a mutation may hold at most {self.limits.max_ops} ops", ref=frame.id
                )
                return self._refuse_mutation(frame.id, error)
            mutation = {"id": frame.id, "ops": frame.ops, "base": frame.base, "mode": frame.mode}
            return Mutate(mutation, frame.id)
        if isinstance(frame, PingFrame):
            return Ping(frame.n)
        return Pong(frame.n)

    def _refuse_mutation(self, mutation_id: Any, error: ProtocolError) -> Mutate:
        """A ``mut`` frame that breaks a limit or is malformed is a permanent refusal of
        that mutation: it uses up its id (invariant 3), so one bad mutation never blocks
        the queue behind it. Without a usable id, or before hello, it stays an error."""
        valid_id = isinstance(mutation_id, int) and not isinstance(mutation_id, bool)
        if self.state is not State.READY or not valid_id or mutation_id < 1:
            error.ref = mutation_id if valid_id else None
            raise error
        return Mutate({"id": mutation_id, "ops": []}, mutation_id, refusal=error)

    def _take_token(self, now: float) -> float:
        """Spend one mutation token; return 0, or the seconds until one is available."""
        rate, burst = self.limits.mutations_per_second, self.limits.mutation_burst
        if self._tokens < 0:
            self._tokens, self._last_refill = float(burst), now
        self._tokens = min(float(burst), self._tokens + (now - self._last_refill) * rate)
        self._last_refill = now
        if self._tokens >= 1:
            self._tokens -= 1
            return 0.0
        return (1 - self._tokens) / rate

    def close(self) -> None:
        self.state = State.CLOSED


def _peek_mutation_id(data: str | bytes, size: int, limits: Limits) -> Any:
    """The id of an oversize ``mut`` frame, when it is cheap enough to look."""
    if size > 4 * limits.max_frame_bytes:
        return None
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return None
    return obj.get("id") if isinstance(obj, dict) and obj.get("t") == "mut" else None


def decode_client_frame(obj: Any, limits: Limits) -> ClientFrame:
    if not isinstance(obj, dict):
        raise ProtocolError("bad_frame", f"a frame is a JSON object, not {type(obj).__name__}")
    kind = obj.get("t")
    if kind not in CLIENT_FRAME_TYPES:
        raise ProtocolError(
            "unknown_frame",
            f"unknown frame type {kind!r}; expected one of {', '.join(CLIENT_FRAME_TYPES)}",
        )
    _check_strings(obj, limits.max_string)
    try:
        return _client_frame.validate_python(obj)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = ".".join(str(p) for p in err.get("loc", ())[1:]) or "frame"
        raise ProtocolError(
            "bad_frame", f"{kind} frame: {loc}: {err.get('msg')}", ref=obj.get("id")
        ) from None


def _check_strings(obj: Any, limit: int, depth: int = 0) -> None:
    if depth > 32:
        raise ProtocolError("bad_frame", "frame is nested more than 32 levels deep")
    if isinstance(obj, str):
        if len(obj) > limit:
            raise ProtocolError(
                "limit", f"a string of {len(obj)} characters exceeds the limit of {limit}"
            )
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_strings(k, limit, depth + 1)
            _check_strings(v, limit, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_strings(v, limit, depth + 1)


# --- server frames ---------------------------------------------------------------------


def encode(frame: dict[str, Any]) -> bytes:
    return orjson.dumps(frame)


def welcome(client_id: str, epoch: str, head: str, last_mutation: int) -> dict[str, Any]:
    return {
        "t": "welcome",
        "v": PROTOCOL_VERSION,
        "client": client_id,
        "epoch": epoch,
        "head": head,
        "last": last_mutation,
    }
