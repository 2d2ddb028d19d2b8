"""Presence, sans I/O: who is in a room, merged as the application asks, as diffs.

Theory of operation. An :class:`Entry` is one connection's presence in one room: its
state (a small JSON object its client chose), the public view of its principal (which
the server computes, never the client), and who owns it (the node serving that
connection). A :class:`Room` holds the entries of every node and shows them as
*members*: one per connection (``merge="connection"``), or one per principal
(``merge="principal"``: the entry updated last wins, and the member leaves when its
principal's last entry does). Each change of a room returns a :class:`Diff` of its
members (joins, updates, leaves), which the server sends to the connections watching it.

Member keys are opaque: a keyed hash (``key_of``) of the connection or principal, so
neither a connection id nor a principal's identity reaches a client.

:class:`Registry` is every room of a node, with the bookkeeping that keeps other nodes'
entries honest: when each node was last heard (a node silent for the TTL loses its
entries), a digest of each node's entries (a node whose beat carries another digest is
asked to announce them again) and announcement generations (entries an announcement did
not repeat leave). :class:`Coalescer` bounds the updates per second of one source, last
value wins. Nothing here reads a clock: time is passed in.

The messages nodes exchange over the backplane are built and read here too
(:func:`encode_message`, :func:`decode_message`): compact JSON, each well under
PostgreSQL's 8000-byte NOTIFY limit because states and user views are bounded.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

__all__ = [
    "MAX_ROOM_NAME",
    "Coalescer",
    "Diff",
    "Entry",
    "Member",
    "MergeMode",
    "Message",
    "Registry",
    "Room",
    "RoomView",
    "decode_message",
    "encode_message",
    "set_message",
]

MergeMode = Literal["connection", "principal"]

MAX_ROOM_NAME = 256
"""The longest room name, in characters."""


@dataclass(frozen=True)
class Member:
    """What a client sees of one member: an opaque ``key``, the server's view of the
    principal (``user``) and the state its client published."""

    key: str
    user: Any
    state: dict[str, Any]

    def to_wire(self) -> dict[str, Any]:
        return {"key": self.key, "user": self.user, "state": self.state}


@dataclass
class Entry:
    """One connection's presence in one room. ``principal`` is the server's merge key
    (never sent to a client); ``at`` orders updates across a principal's tabs (ms of
    wall time at its node); ``v`` counts its versions (the digest); ``gen`` is the
    announcement of its node that last carried it."""

    conn: str
    node: str
    room: str
    principal: str
    user: Any
    state: dict[str, Any]
    at: int = 0
    v: int = 0
    gen: int = 0


@dataclass
class Diff:
    room: str
    joins: list[Member] = field(default_factory=list)
    updates: list[Member] = field(default_factory=list)
    leaves: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.joins or self.updates or self.leaves)


class Room:
    """The entries of one room, every node's, and the members they make."""

    def __init__(self, name: str, merge: MergeMode, key_of: Callable[[str], str]) -> None:
        self.name = name
        self.merge = merge
        self._key_of = key_of
        self.entries: dict[str, Entry] = {}  # by connection id

    def member_key(self, entry: Entry) -> str:
        return self._key_of(entry.conn if self.merge == "connection" else "p:" + entry.principal)

    def members(self) -> dict[str, Member]:
        out: dict[str, Member] = {}
        for entry in self.entries.values():
            key = self.member_key(entry)
            if key not in out:
                member = self._member(key, entry)
                if member is not None:
                    out[key] = member
        return out

    def _member(self, key: str, hint: Entry) -> Member | None:
        """The member ``key`` shows now: for a principal, its entry updated last."""
        if self.merge == "connection":
            entry = self.entries.get(hint.conn)
        else:
            same = [e for e in self.entries.values() if e.principal == hint.principal]
            entry = max(same, key=lambda e: (e.at, e.conn), default=None)
        return None if entry is None else Member(key, entry.user, entry.state)

    def put(self, entry: Entry) -> Diff:
        """Add or replace the entry of ``entry.conn``; the members' change."""
        key = self.member_key(entry)
        before = self._member(key, entry)
        self.entries[entry.conn] = entry
        after = self._member(key, entry)
        return self._diff(key, before, after)

    def remove(self, conn: str) -> Diff:
        entry = self.entries.pop(conn, None)
        if entry is None:
            return Diff(self.name)
        key = self.member_key(entry)
        self.entries[conn] = entry
        before = self._member(key, entry)
        del self.entries[conn]
        return self._diff(key, before, self._member(key, entry))

    def _diff(self, key: str, before: Member | None, after: Member | None) -> Diff:
        diff = Diff(self.name)
        if before is None and after is not None:
            diff.joins.append(after)
        elif before is not None and after is None:
            diff.leaves.append(key)
        elif before is not None and after is not None and before != after:
            diff.updates.append(after)
        return diff


class Registry:
    """Every room of a node: its own connections' entries and those other nodes
    announced, with when each node was last heard."""

    def __init__(self, node: str, merge: MergeMode, key_of: Callable[[str], str]) -> None:
        self.node = node
        self.merge = merge
        self._key_of = key_of
        self.rooms: dict[str, Room] = {}
        self.heard: dict[str, float] = {}  # other nodes: when each was last heard

    def room(self, name: str) -> Room:
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name, self.merge, self._key_of)
        return room

    def put(self, entry: Entry) -> Diff:
        return self.room(entry.room).put(entry)

    def remove(self, room_name: str, conn: str) -> Diff:
        room = self.rooms.get(room_name)
        if room is None:
            return Diff(room_name)
        diff = room.remove(conn)
        if not room.entries:
            del self.rooms[room_name]
        return diff

    def entries_of(self, node: str) -> list[Entry]:
        return [e for r in self.rooms.values() for e in r.entries.values() if e.node == node]

    def drop(self, node: str, *, below_gen: int | None = None) -> list[Diff]:
        """Remove ``node``'s entries (only those older than announcement ``below_gen``
        when given); the diffs of the rooms that changed."""
        gone = [e for e in self.entries_of(node) if below_gen is None or e.gen < below_gen]
        return [d for e in gone if (d := self.remove(e.room, e.conn))]

    def expire(self, now: float, ttl: float) -> list[Diff]:
        """Drop the entries of every node not heard for ``ttl`` seconds."""
        diffs: list[Diff] = []
        for node, heard in list(self.heard.items()):
            if now - heard >= ttl:
                del self.heard[node]
                diffs += self.drop(node)
        return diffs

    def digest(self, node: str) -> str:
        """A short hash of ``node``'s entries and their versions: equal on two nodes
        when both hold the same ones."""
        items = sorted(f"{e.conn}\x1f{e.room}\x1f{e.v}" for e in self.entries_of(node))
        return hashlib.blake2b("\x1e".join(items).encode(), digest_size=8).hexdigest()


class Coalescer:
    """At most ``rate`` values per second per key, the last value winning: a value
    offered within ``1/rate`` of the last one sent waits for :meth:`due`."""

    def __init__(self, rate: float) -> None:
        if rate <= 0:
            raise ValueError(f"a presence update rate must be positive, not {rate!r}")
        self.interval = 1.0 / rate
        self._sent: dict[Any, float] = {}
        self._held: dict[Any, Any] = {}

    def offer(self, key: Any, value: Any, now: float) -> bool:
        """True: send ``value`` now. False: it is held (replacing any held before)."""
        last = self._sent.get(key)
        if last is None or now - last >= self.interval:
            self._sent[key] = now
            self._held.pop(key, None)
            return True
        self._held[key] = value
        return False

    def next_due(self) -> float | None:
        """When the earliest held value may go, or None if none is held."""
        times = [self._sent[k] + self.interval for k in self._held]
        return min(times) if times else None

    def due(self, now: float) -> list[tuple[Any, Any]]:
        """The held values whose time came, each marked as sent now."""
        ready = [k for k in self._held if now - self._sent[k] >= self.interval - 1e-9]
        out = []
        for k in ready:
            self._sent[k] = now
            out.append((k, self._held.pop(k)))
        return out

    def forget(self, keys: Iterable[Any]) -> None:
        for k in keys:
            self._sent.pop(k, None)
            self._held.pop(k, None)

    def forget_where(self, test: Callable[[Any], bool]) -> None:
        self.forget([k for k in self._sent if test(k)])


# --- the messages between nodes ---------------------------------------------------------


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One presence message on the backplane, from node ``n``. ``p`` says which:

    * ``set``: entry ``c`` of room ``r`` (principal ``k``, user ``u``, state ``s``,
      ``at``, version ``v``, announcement ``g``) is now as given;
    * ``del``: entry ``c`` of room ``r`` left;
    * ``beat``: ``n`` is alive, and its entries' digest is ``h``;
    * ``sync``: ``n`` asks node ``to`` (every node when empty) to announce its entries;
    * ``end``: ``n`` announced all its entries as generation ``g``: older ones left.
    """

    p: Literal["set", "del", "beat", "sync", "end"]
    n: str
    c: str = ""
    r: str = ""
    k: str = ""
    u: Any = None
    s: dict[str, Any] | None = None
    at: int = 0
    v: int = 0
    g: int = 0
    h: str = ""
    to: str = ""

    def entry(self) -> Entry:
        return Entry(self.c, self.n, self.r, self.k, self.u, self.s or {}, self.at, self.v, self.g)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Message)


def encode_message(message: Message) -> str:
    return _encoder.encode(message).decode()


def set_message(entry: Entry) -> Message:
    return Message(
        p="set",
        n=entry.node,
        c=entry.conn,
        r=entry.room,
        k=entry.principal,
        u=entry.user,
        s=entry.state,
        at=entry.at,
        v=entry.v,
        g=entry.gen,
    )


def decode_message(payload: str | bytes) -> Message | None:
    """A message from another node, or None if it is not one (logged by the caller)."""
    try:
        return _decoder.decode(payload)
    except (msgspec.DecodeError, RecursionError):
        return None


# --- a client's view of a room ----------------------------------------------------------


@dataclass
class RoomView:
    """What a client holds of a room it joined: the state it publishes, and the
    members the server showed (``me``: its own key). ``answered``: the server's
    ``room`` frame arrived on this connection."""

    name: str
    state: dict[str, Any]
    members: dict[str, Member] = field(default_factory=dict)
    me: str | None = None
    answered: bool = False

    def load(self, me: str, members: Iterable[Member]) -> list[tuple[str, Member]]:
        """A ``room`` frame: the members now; returns the changes as (kind, member)
        with kind ``join``, ``update`` or ``leave``, against what was shown before."""
        new = {m.key: m for m in members}
        changes: list[tuple[str, Member]] = [
            ("leave", m) for k, m in self.members.items() if k not in new
        ]
        for k, m in new.items():
            old = self.members.get(k)
            if old is None:
                changes.append(("join", m))
            elif old != m:
                changes.append(("update", m))
        self.members, self.me, self.answered = new, me, True
        return changes

    def apply(
        self, joins: Iterable[Member], updates: Iterable[Member], leaves: Iterable[str]
    ) -> list[tuple[str, Member]]:
        """A ``presence_diff``; the changes as :meth:`load` returns them."""
        changes: list[tuple[str, Member]] = []
        for m in joins:
            changes.append(("update" if m.key in self.members else "join", m))
            self.members[m.key] = m
        for m in updates:
            changes.append(("update" if m.key in self.members else "join", m))
            self.members[m.key] = m
        for key in leaves:
            gone = self.members.pop(key, None)
            if gone is not None:
                changes.append(("leave", gone))
        return changes
