"""Every frame of the wire protocol, one typed definition each, and their one codec.

``docs/protocol.md`` is the contract; this module is its vocabulary. Each frame is a
:class:`msgspec.Struct` tagged by its ``t`` field, grouped in a union per direction
(:data:`ClientFrame`, :data:`ServerFrame`), and decoded once at the boundary:
:func:`decode_client_frame` (the server's side, with the size, depth and string bounds
of :class:`Limits`) and :func:`decode_server_frame` (a client's side). Anything that
passes a decoder is a valid frame; anything that does not raises :class:`ProtocolError`
with the code the document names. :func:`encode` is the one place frames become bytes.

Why msgspec: decoding a typical ``mut`` frame costs 0.9 µs against 2.8 µs for orjson
plus a Pydantic ``TypeAdapter`` (``hello``: 0.3 against 2.3 µs; timeit, best of five
runs of 100,000 frames, December 2026). The bounds stay cheap too: the walk that checks string
lengths and nesting depth runs only on frames that could break a bound (longer than
the string limit, more brackets than the depth limit, or a run of 19 digits), not on
every frame.

The module is longer than most (about 650 lines) because it is the whole vocabulary:
every frame of both directions, their codec and its error wording, in one place that
a reader (or a port to another language) reads top to bottom.

Schema evolution (the msgspec rule): a new field of an existing frame must have a
default, so older peers' frames still decode. Client frames forbid unknown fields (a
typo never passes silently); server frames ignore them, so an older client reads a
newer server's frames. ``None`` and empty defaults are left out when encoding: a
``ping`` without ``n`` is ``{"t":"ping"}``.

Protocol versions:
    1  (2026-11) hello/welcome, sub/unsub/snapshot/changes, mut/ack/reject, error,
       ping/pong. Cursors are opaque strings.
       (2026-12) presence: join/presence/leave, room/presence_diff. A server without
       them answers ``unknown_frame``; nothing else changed, so the version stays.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Final, Literal

import msgspec
import orjson

from ..exceptions import SynclineError
from ..results import Ack, Changes, OpResult, Snapshot
from ..textcheck import BAD_NAME_PATTERN

__all__ = [
    "CLIENT_FRAME_TYPES",
    "CLOSE_CODES",
    "CLOSE_HEARTBEAT",
    "CLOSE_INTERNAL",
    "CLOSE_INVALID_DATA",
    "CLOSE_NORMAL",
    "CLOSE_POLICY",
    "CLOSE_PROTOCOL",
    "CLOSE_RELOAD",
    "CLOSE_RESTART",
    "CLOSE_REVOKED",
    "CLOSE_SLOW",
    "CLOSE_TOO_BIG",
    "CLOSE_TOO_MANY",
    "CLOSE_UNAUTHORIZED",
    "FATAL_CLOSE_CODES",
    "PROTOCOL_VERSION",
    "SERVER_FRAME_TYPES",
    "STORE_REFUSALS",
    "AckFrame",
    "ChangesFrame",
    "ClientFrame",
    "ClientId",
    "ConflictItem",
    "EmbeddedState",
    "ErrorFrame",
    "HelloFrame",
    "JoinFrame",
    "LeaveFrame",
    "Limits",
    "MemberItem",
    "MutFrame",
    "MutateBody",
    "OpResultItem",
    "PingFrame",
    "PongFrame",
    "PresenceDiffFrame",
    "PresenceFrame",
    "ProtocolError",
    "RejectFrame",
    "RoomFrame",
    "ServerFrame",
    "ServerPingFrame",
    "ServerPongFrame",
    "SnapshotFrame",
    "SubFrame",
    "UnsubFrame",
    "WelcomeFrame",
    "ack_frame",
    "changes_frame",
    "changes_text",
    "decode_client_frame",
    "decode_embedded_state",
    "decode_mutate_body",
    "decode_server_frame",
    "encode",
    "encode_item",
    "encode_text",
    "error_frame",
    "peek",
    "refusal_frame",
    "shared_records",
    "snapshot_frame",
]

PROTOCOL_VERSION: Final = 1

# --- close codes (docs/protocol.md, "Close codes"; 4000-4999 are the application's) ----

CLOSE_NORMAL: Final = 1000
CLOSE_INVALID_DATA: Final = 1007  # a text frame that is not UTF-8 (the transport's)
CLOSE_POLICY: Final = 1008
CLOSE_TOO_BIG: Final = 1009  # a frame over the transport's message limit (the transport's)
CLOSE_INTERNAL: Final = 1011
CLOSE_RESTART: Final = 1012  # the server is shutting down: reconnect (to another node)
CLOSE_HEARTBEAT: Final = 4000
CLOSE_UNAUTHORIZED: Final = 4001
CLOSE_RELOAD: Final = 4002
CLOSE_PROTOCOL: Final = 4003
CLOSE_REVOKED: Final = 4004
CLOSE_SLOW: Final = 4008
CLOSE_TOO_MANY: Final = 4009

CLOSE_CODES: Final[Mapping[int, str]] = {
    CLOSE_NORMAL: "normal",
    CLOSE_INVALID_DATA: "invalid UTF-8 in a text frame",
    CLOSE_POLICY: "origin refused (sent before the upgrade: the client sees HTTP 403)",
    CLOSE_TOO_BIG: "a frame over the transport's message limit",
    CLOSE_INTERNAL: "internal error",
    CLOSE_RESTART: "server shutting down",
    CLOSE_HEARTBEAT: "heartbeat timeout",
    CLOSE_UNAUTHORIZED: "unauthorized",
    CLOSE_RELOAD: "reload",
    CLOSE_PROTOCOL: "protocol error",
    CLOSE_REVOKED: "session revoked",
    CLOSE_SLOW: "too slow",
    CLOSE_TOO_MANY: "too many connections for this principal",
}
"""Every close code the server uses, with what it means (the document's list)."""

STORE_REFUSALS: Final[Mapping[str, str]] = {
    "retry": "the server could not store the mutation; retry",
    "storage_full": "the server's storage is full, so the mutation was not stored; retry",
    "read_only": "the server's database refuses writes (read-only), so the mutation was "
    "not stored; retry",
    "unavailable": "the server cannot reach its database, so the mutation was not stored; retry",
}
"""The temporary refusals (``reject`` ``permanent: false``) of a mutation the store could
not write, by code: the condition of the database, when it is known."""

FATAL_CLOSE_CODES: Final[Mapping[str, int]] = {
    "unauthorized": CLOSE_UNAUTHORIZED,
    "reload": CLOSE_RELOAD,
    "too_many_connections": CLOSE_TOO_MANY,
}
"""The close code after a fatal ``error`` of this code; any other fatal one: 4003."""


class ProtocolError(SynclineError):
    """The peer sent something the protocol does not allow; the connection may go on
    unless ``fatal``. ``code`` and the message travel in the ``error`` frame (or, for a
    temporary refusal of a mutation, ``retry_after`` set, in a ``reject``)."""

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

    def frame(self) -> ErrorFrame | RejectFrame:
        if self.retry_after is not None:  # a temporary refusal of a mutation: nothing used up
            mid = self.ref if _is_int(self.ref) else None
            return RejectFrame(
                mid=mid,
                permanent=False,
                code=self.code,
                message=str(self),
                retry_after=round(self.retry_after, 3),
            )
        return error_frame(self.code, str(self), ref=self.ref)


@dataclass(frozen=True)
class Limits:
    """What one connection may send, and what one request may cost the server; every
    transport enforces the same ones (``docs/security.md`` lists them)."""

    max_frame_bytes: int = 1 << 20
    max_ops: int = 500
    max_string: int = 100_000
    max_subscriptions: int = 100
    mutations_per_second: float = 50.0
    mutation_burst: int = 200
    max_depth: int = 32
    max_snapshot_bytes: int = 3 << 20
    """Encoded bytes of records one snapshot (a ``sub``'s answer) or pull may carry,
    every copy of a query sent under several ids counted; past it the request is
    refused with ``error`` ``limit`` (HTTP 413). The queries echoed count too, and the
    server lowers it to fit its send queue (``max_queue_bytes`` less 1 KiB)."""
    snapshot_bytes_per_minute: int = 32 << 20
    """Snapshot bytes one connection (over HTTP, one principal's pulls) may be sent in
    a minute, refilled continuously; past it, ``error`` ``limit`` until it refills."""
    max_scan_rows: int = 20_000
    """Rows one snapshot or pull may read under callable read rules (declared as
    ``read``, asked row by row in Python); ``read_filter`` rules scan nothing extra."""
    max_presence_bytes: int = 2048
    """Encoded bytes of one presence state (``join``, ``presence``)."""
    max_rooms: int = 20
    """Presence rooms one connection may be in at once."""
    presence_per_second: float = 20.0
    """Presence updates of one connection in one room passed on per second; the
    others coalesce (the last value wins, sent when its turn comes)."""

    def __post_init__(self) -> None:
        for name in (
            "max_snapshot_bytes",
            "snapshot_bytes_per_minute",
            "max_scan_rows",
            "max_presence_bytes",
            "max_rooms",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Limits.{name} must be a positive integer, not {value!r}")
        if not self.presence_per_second > 0:
            raise ValueError(
                f"Limits.presence_per_second must be positive, not {self.presence_per_second!r}"
            )


# --- frames from the client ------------------------------------------------------------

_CLEAN_NAME = f"^[^{BAD_NAME_PATTERN[1:-1]}]*$"
"""No U+0000, no lone surrogate (:mod:`syncline.textcheck`): names become store keys."""

ClientId = Annotated[str, msgspec.Meta(min_length=8, max_length=128, pattern=_CLEAN_NAME)]
"""A client id: 8 to 128 characters, one per page instance (tab)."""

QueryId = Annotated[str, msgspec.Meta(pattern=_CLEAN_NAME)]
"""A query id, the client's name for one subscription."""

RoomName = Annotated[str, msgspec.Meta(min_length=1, max_length=256, pattern=_CLEAN_NAME)]
"""A presence room: a name the application chooses (``board:demo``, ``cards:c1``)."""


class _ClientFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", omit_defaults=True):
    pass


class HelloFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="hello"):
    v: int
    client: ClientId
    schema_: Annotated[str, msgspec.Meta(max_length=128)] = msgspec.field(name="schema")
    auth: dict[str, Any] | None = None
    acked: Annotated[int, msgspec.Meta(ge=0)] = 0


class SubFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="sub"):
    queries: Annotated[dict[QueryId, dict[str, Any]], msgspec.Meta(min_length=1)]
    since: str | None = None


class UnsubFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="unsub"):
    queries: list[QueryId]


class MutFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="mut"):
    id: Annotated[int, msgspec.Meta(ge=1)]
    ops: list[Any]  # decoded by the engine, so a bad op uses up the mutation's id
    base: int = 0
    mode: Literal["whole", "partial"] = "whole"

    def mutation(self) -> dict[str, Any]:
        """The mutation as the engine takes it."""
        return {"id": self.id, "ops": self.ops, "base": self.base, "mode": self.mode}


class PingFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="ping"):
    """Sent by either side; the other answers ``pong`` with the same ``n``."""

    n: int | None = None


class PongFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="pong"):
    n: int | None = None


class JoinFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="join"):
    """Enter a presence room with a state (joining again is an update)."""

    room: RoomName
    state: dict[str, Any] = {}


class PresenceFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="presence"):
    """Replace this connection's state in a room it joined."""

    room: RoomName
    state: dict[str, Any]


class LeaveFrame(_ClientFrame, frozen=True, forbid_unknown_fields=True, tag="leave"):
    room: RoomName


class MutateBody(msgspec.Struct, frozen=True, kw_only=True):
    """The body of ``POST /sync/mutate``: a ``mut`` frame (without ``t``) and what a
    WebSocket client says in ``hello``. ``mut`` stays undecoded here so that a malformed
    one with a readable id can be refused for good, as on a WebSocket."""

    client: ClientId
    mut: dict[str, Any]
    acked: Any = None  # an int > 0 is used; anything else is ignored


ClientFrame = (
    HelloFrame
    | SubFrame
    | UnsubFrame
    | MutFrame
    | PingFrame
    | PongFrame
    | JoinFrame
    | PresenceFrame
    | LeaveFrame
)
CLIENT_FRAME_TYPES: Final = (
    "hello",
    "sub",
    "unsub",
    "mut",
    "ping",
    "pong",
    "join",
    "presence",
    "leave",
)


# --- frames from the server ------------------------------------------------------------


class _ServerFrame(msgspec.Struct, frozen=True, kw_only=True, tag_field="t", omit_defaults=True):
    def __getitem__(self, key: str) -> Any:
        """A field by its wire name (``frame["t"]``, ``frame["from"]``), for code
        written against frames as decoded JSON objects."""
        if key == "t":
            return self.__struct_config__.tag
        for f in msgspec.structs.fields(self):
            if f.encode_name == key:
                return getattr(self, f.name)
        raise KeyError(key)


class WelcomeFrame(_ServerFrame, frozen=True, tag="welcome"):
    v: int
    client: str
    epoch: str
    head: str
    last: int


class SnapshotFrame(_ServerFrame, frozen=True, tag="snapshot"):
    cursor: str
    queries: dict[str, dict[str, Any]]  # each query as the server normalized it
    records: dict[str, list[dict[str, Any]]]
    reset: str | None = None  # "cursor_too_old" or "cursor_reset": replace what you hold


class ChangesFrame(_ServerFrame, frozen=True, tag="changes"):
    from_: str = msgspec.field(name="from")
    to: str
    q: dict[str, list[dict[str, Any]]]


class ConflictItem(msgspec.Struct, frozen=True, kw_only=True):
    """A field edited concurrently: ``field`` None is an update of a deleted record."""

    c: str
    id: str
    field: str | None
    base: Any
    mine: Any
    theirs: Any
    theirs_v: int


class OpResultItem(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    status: Literal["applied", "dropped", "conflict"]
    overwritten: list[str] = []
    merged: list[str] = []
    conflicts: list[ConflictItem] = []
    reason: str | None = None


class AckFrame(_ServerFrame, frozen=True, tag="ack"):
    mid: int
    status: Literal["applied", "conflict", "duplicate"]
    seq: int | None  # required: null says the mutation changed nothing
    results: list[OpResultItem] = []
    replay: bool = False


class RejectFrame(_ServerFrame, frozen=True, tag="reject"):
    mid: int | None  # None only for a rate refusal of a frame without a readable id
    permanent: bool
    code: str
    message: str
    collection: str | None = None
    id: str | None = None
    field: str | None = None
    expected: int | None = None  # code "gap": resend from this id
    retry_after: float | None = None  # temporary refusals: resend after this many seconds
    replay: bool = False


class ErrorFrame(_ServerFrame, frozen=True, tag="error"):
    code: str
    message: str
    ref: int | str | None = None  # the mutation id or query id concerned
    retry_after: float | None = None


class ServerPingFrame(_ServerFrame, frozen=True, tag="ping"):
    n: int | None = None


class ServerPongFrame(_ServerFrame, frozen=True, tag="pong"):
    n: int | None = None


class MemberItem(msgspec.Struct, frozen=True, kw_only=True):
    """One member of a room: an opaque key, the server's view of who it is, its state."""

    key: str
    user: Any = None
    state: dict[str, Any] = {}


class RoomFrame(_ServerFrame, frozen=True, tag="room"):
    """The answer to a ``join``: every member of the room now (``me``: this
    connection's own key)."""

    room: str
    me: str
    members: list[MemberItem]


class PresenceDiffFrame(_ServerFrame, frozen=True, tag="presence_diff"):
    """Members of a room that joined, changed state, or left (their keys)."""

    room: str
    joins: list[MemberItem] = []
    updates: list[MemberItem] = []
    leaves: list[str] = []


ServerFrame = (
    WelcomeFrame
    | SnapshotFrame
    | ChangesFrame
    | AckFrame
    | RejectFrame
    | ErrorFrame
    | ServerPingFrame
    | ServerPongFrame
    | RoomFrame
    | PresenceDiffFrame
)
SERVER_FRAME_TYPES: Final = (
    "welcome",
    "snapshot",
    "changes",
    "ack",
    "reject",
    "error",
    "ping",
    "pong",
    "room",
    "presence_diff",
)


# --- the embedded state of a server-rendered page ----------------------------------------


class EmbeddedState(msgspec.Struct, frozen=True, kw_only=True):
    """``<script type="application/json" id="syncline-state">``: a snapshot with the
    schema hash and field policies of the queried collections."""

    v: int
    schema_: str = msgspec.field(name="schema")
    fields: dict[str, dict[str, dict[str, Any]]]
    cursor: str
    queries: dict[str, dict[str, Any]]
    records: dict[str, list[dict[str, Any]]]


# --- building server frames from the engine's answers ------------------------------------


def error_frame(code: str, message: str, *, ref: Any = None) -> ErrorFrame:
    return ErrorFrame(code=code, message=message, ref=ref if isinstance(ref, int | str) else None)


def _op_result(result: OpResult) -> OpResultItem:
    return OpResultItem(
        status=result.status,
        overwritten=result.overwritten,
        merged=result.merged,
        conflicts=[ConflictItem(**c.to_wire()) for c in result.conflicts],
        reason=result.reason or None,
    )


def ack_frame(ack: Ack) -> AckFrame | RejectFrame:
    """``ack`` for applied, conflicted and duplicate mutations; ``reject`` (permanent)
    for refused ones, whose reason the server keeps like any ack."""
    if ack.status == "rejected":
        error = {"code": "invalid", "message": "", **(ack.error or {})}
        return refusal_frame(ack.mutation_id, error, permanent=True, replay=ack.replay)
    return AckFrame(
        mid=ack.mutation_id,
        status=ack.status,
        seq=ack.seq,
        results=[_op_result(r) for r in ack.results],
        replay=ack.replay,
    )


def refusal_frame(
    mid: int | None, refusal: Mapping[str, Any], *, permanent: bool, replay: bool = False
) -> RejectFrame:
    """``reject`` for a refused mutation: ``refusal`` is a
    :meth:`~syncline.exceptions.MutationRefused.to_wire` form (as the engine keeps it)."""
    return RejectFrame(
        mid=mid,
        permanent=permanent,
        code=str(refusal["code"]),
        message=str(refusal["message"]),
        collection=refusal.get("collection"),
        id=refusal.get("id"),
        field=refusal.get("field"),
        expected=refusal.get("expected"),
        retry_after=refusal.get("retry_after"),
        replay=replay,
    )


def snapshot_frame(snapshot: Snapshot, *, reset: str | None = None) -> SnapshotFrame:
    wire = snapshot.to_wire()
    return SnapshotFrame(
        cursor=wire["cursor"],
        queries=wire["queries"],
        records=shared_records(wire["records"]),
        reset=reset,
    )


def shared_records(records: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """A snapshot's records, each distinct list encoded once: queries the engine read
    once (one query under several ids) share one list, so their copies in the frame are
    one encoded fragment repeated (:class:`msgspec.Raw`), not encoded per id."""
    encoded: dict[int, msgspec.Raw] = {}
    out: dict[str, Any] = {}
    for qid, recs in records.items():
        raw = encoded.get(id(recs))
        if raw is None:
            raw = encoded[id(recs)] = msgspec.Raw(_encoder.encode(recs))
        out[qid] = raw
    return out


def changes_frame(changes: Changes) -> ChangesFrame:
    return ChangesFrame(from_=str(changes.since), to=str(changes.cursor), q=changes.queries)


# --- the codec -------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_client_decoder = msgspec.json.Decoder(ClientFrame)
_server_decoder = msgspec.json.Decoder(ServerFrame)
_state_decoder = msgspec.json.Decoder(EmbeddedState)
_body_decoder = msgspec.json.Decoder(MutateBody)
_LONG_NUMBER = re.compile(rb"[0-9]{19}")
_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # a pair matches too
_INT64 = range(-(1 << 63), 1 << 64)  # what orjson (and most JSON peers) can carry


def encode(frame: msgspec.Struct | Mapping[str, Any]) -> bytes:
    """A frame (or any JSON value) as UTF-8 JSON bytes."""
    return _encoder.encode(frame)


def encode_text(frame: msgspec.Struct | Mapping[str, Any]) -> str:
    """A frame as the text of a WebSocket text frame."""
    return _encoder.encode(frame).decode()


def encode_item(item: Any) -> str:
    """One change item (or query id) as JSON text, for :func:`changes_text`.

    orjson, not msgspec, on this one path: items are plain dicts, encoded once per
    distinct answer of every commit, and orjson takes 255 ns for a typical ``patch``
    item where msgspec takes 315 (the fan-out cost per commit must not grow)."""
    return orjson.dumps(item).decode()


def changes_text(epoch: str, since: int, to: int, items: Mapping[str, list[str]]) -> str:
    """A ``changes`` frame (:class:`ChangesFrame`) from items already encoded with
    :func:`encode_item`: the log reader encodes each answer once and shares it between
    every connection at the same cursor, so the frame is assembled, not re-encoded."""
    body = ",".join(f"{encode_item(qid)}:[{','.join(q)}]" for qid, q in items.items())
    return f'{{"t":"changes","from":"{epoch}.{since}","to":"{epoch}.{to}","q":{{{body}}}}}'


def decode_client_frame(data: str | bytes | Mapping[str, Any], limits: Limits) -> ClientFrame:
    """One client frame, checked against ``limits``; raise :class:`ProtocolError`.

    The caller bounds the frame's size first (it knows the transport); this bounds
    nesting depth, string length and integer range. A mapping is encoded first (a
    client checking what it is about to send)."""
    if isinstance(data, Mapping):
        raw = encode(data)
    else:
        raw = data.encode() if isinstance(data, str) else data
    try:
        frame = _client_decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise _invalid(raw, exc, limits) from None
    except msgspec.DecodeError as exc:
        if _LONE_SURROGATE.search(raw):
            raise ProtocolError(
                "bad_json",
                "frame is not valid JSON: a string holds a lone surrogate escape "
                "(\\ud800 to \\udfff without its pair); text must be valid Unicode",
            ) from None
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    except RecursionError:
        raise _too_deep(limits.max_depth, None) from None
    if (
        len(raw) > limits.max_string
        or raw.count(b"[") + raw.count(b"{") > limits.max_depth
        or _LONG_NUMBER.search(raw)
    ):
        _check_values(msgspec.structs.asdict(frame), limits, getattr(frame, "id", None))
    return frame


def decode_mutate_body(body: bytes) -> MutateBody:
    """The body of ``POST /sync/mutate``; raise :class:`ProtocolError` (a 400)."""
    try:
        return _body_decoder.decode(body)
    except msgspec.ValidationError as exc:
        if "`$.client`" in str(exc) and "length" in str(exc):
            raise ProtocolError("bad_frame", "client id must have 8 to 128 characters") from None
        if "`$.client`" in str(exc) and "regex" in str(exc):
            raise ProtocolError("bad_frame", f"client: {_NAME_REFUSED}") from None
        if "`$.mut`" in str(exc):
            raise ProtocolError("bad_frame", "mut must be an object") from None
        raise ProtocolError("bad_frame", 'body must be {"client": "<id>", "mut": {...}}') from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_json", f"body is not valid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("bad_frame", "body is nested too deep") from None


class _Peek(msgspec.Struct):
    """The two fields that say what a frame is; msgspec skips the rest unread."""

    t: Any = None
    id: Any = None


_peek_decoder = msgspec.json.Decoder(_Peek)


def peek(data: bytes) -> tuple[Any, Any]:
    """``(t, id)`` of a frame that did not decode (or is too large to), or ``(None,
    None)``: so a refused ``mut`` can still name the mutation it refuses. It costs a
    scan of the frame, without building any of its values."""
    try:
        found = _peek_decoder.decode(data)
    except (msgspec.DecodeError, RecursionError):
        # msgspec refuses lone surrogate escapes that JSON's grammar allows (and that
        # JSON.stringify writes): read such a frame's id anyway, so that its mutation
        # is refused for good instead of blocking the client's queue.
        if not _LONE_SURROGATE.search(data):
            return None, None
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return None, None
        if not isinstance(obj, dict):
            return None, None
        return obj.get("t"), obj.get("id")
    return found.t, found.id


def decode_server_frame(data: str | bytes, *, max_bytes: int | None = None) -> ServerFrame:
    """One server frame, for a client; raise :class:`ProtocolError` (the server sent
    something this client cannot use: reconnect and resume)."""
    if max_bytes is not None and len(data) > max_bytes:
        raise ProtocolError("too_large", f"frame of {len(data)} bytes exceeds {max_bytes}")
    try:
        return _server_decoder.decode(data)
    except msgspec.ValidationError as exc:
        kind = _frame_type(data)
        if kind is not None and kind not in SERVER_FRAME_TYPES:
            raise ProtocolError("unknown_frame", f"unknown frame type {kind!r}") from None
        raise ProtocolError("bad_frame", f"malformed {kind or 'server'} frame: {exc}") from None
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_json", f"the server sent invalid JSON: {exc}") from None
    except RecursionError:
        raise ProtocolError("bad_frame", "the server sent a frame nested too deep") from None


def decode_embedded_state(text: str | bytes) -> EmbeddedState:
    """The ``syncline-state`` element's text (its escapes are JSON string escapes)."""
    try:
        return _state_decoder.decode(text)
    except msgspec.DecodeError as exc:
        raise ProtocolError("bad_frame", f"the embedded state is malformed: {exc}") from None


# --- decoding errors, in the document's codes and the established wording ---------------

_TYPE_NAMES = {
    "int": "a valid integer",
    "str": "a valid string",
    "bool": "a valid boolean",
    "object": "a valid dictionary",
    "array": "a valid list",
    "float": "a valid number",
}
_EXPECTED = re.compile(r"Expected `([a-z]+)(?: \| null)?`, got `[a-z]+`")
_UNKNOWN = re.compile(r"Object contains unknown field `([^`]*)`")
_MISSING = re.compile(r"Object missing required field `([^`]*)`")
_PATH = re.compile(r" - at (?:`key` in )?`\$(.*)`$")  # "`key` in": a dict key
_NAME_REFUSED = "may not contain the NUL character (U+0000) or a lone surrogate"


def _invalid(raw: bytes, exc: msgspec.ValidationError, limits: Limits) -> ProtocolError:
    """``bad_frame``/``unknown_frame`` for a frame that is JSON but not a client frame."""
    try:
        obj = msgspec.json.decode(raw)
    except RecursionError:
        return _too_deep(limits.max_depth, None)
    except msgspec.DecodeError as decode_error:  # "0:": typed decoding failed on the 0 first
        return ProtocolError("bad_json", f"frame is not valid JSON: {decode_error}")
    if not isinstance(obj, dict):
        return ProtocolError("bad_frame", f"a frame is a JSON object, not {_json_type(obj)}")
    kind = obj.get("t")
    if kind not in CLIENT_FRAME_TYPES:
        expected = ", ".join(CLIENT_FRAME_TYPES)
        return ProtocolError(
            "unknown_frame", f"unknown frame type {kind!r}; expected one of {expected}"
        )
    mid = obj.get("id") if kind == "mut" else None
    return ProtocolError("bad_frame", f"{kind} frame: {_explain(str(exc))}", ref=mid)


def _explain(message: str) -> str:
    """msgspec's message as ``location: problem``, in the wording clients already see."""
    at = _PATH.search(message)
    path = [p for p in re.split(r"[.\[\]]+", at.group(1)) if p] if at else []
    problem = message[: at.start()] if at else message
    if m := _UNKNOWN.fullmatch(problem) or _MISSING.fullmatch(problem):
        what = "Extra inputs are not permitted" if m.re is _UNKNOWN else "Field required"
        return f"{'.'.join([*path, m.group(1)])}: {what}"
    loc = ".".join(path) or "frame"
    if "matching regex" in problem:  # the one pattern: a name's characters
        return f"{loc}: {_NAME_REFUSED}"
    if m := _EXPECTED.match(problem):
        return f"{loc}: Input should be {_TYPE_NAMES.get(m.group(1), m.group(1))}"
    return f"{loc}: {problem}"


def _json_type(obj: Any) -> str:
    return type(obj).__name__ if obj is not None else "null"


def _too_deep(depth: int, ref: Any) -> ProtocolError:
    return ProtocolError("bad_frame", f"frame is nested more than {depth} levels deep", ref=ref)


def _check_values(obj: Any, limits: Limits, ref: Any, depth: int = 0) -> None:
    """Depth, string length and integer range of a decoded frame's values."""
    if depth > limits.max_depth:
        raise _too_deep(limits.max_depth, ref)
    if isinstance(obj, str):
        if len(obj) > limits.max_string:
            raise ProtocolError(
                "limit",
                f"a string of {len(obj)} characters exceeds the limit of {limits.max_string}",
                ref=ref,
            )
    elif isinstance(obj, bool):
        pass
    elif isinstance(obj, int):
        if obj not in _INT64:
            raise ProtocolError("bad_json", "frame is not valid JSON: Integer exceeds 64-bit range")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_values(k, limits, ref, depth + 1)
            _check_values(v, limits, ref, depth + 1)
    elif isinstance(obj, list):
        for v in obj:
            _check_values(v, limits, ref, depth + 1)


def _frame_type(data: str | bytes) -> str | None:
    try:
        obj = msgspec.json.decode(data)
    except (msgspec.DecodeError, RecursionError):
        return None
    kind = obj.get("t") if isinstance(obj, dict) else None
    return kind if isinstance(kind, str) else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
