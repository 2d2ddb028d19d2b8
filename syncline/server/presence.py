"""Presence on a node: rooms its connections join, guarded, shared with the other nodes.

The rules are in :mod:`syncline.presence` (rooms, merging, diffs, coalescing); this
module is their I/O. A connection's ``join`` is checked by ``may_join`` (by default a
room named ``<collection>:<id>`` admits only principals who may read that record), its
entry gets the principal's public view from ``presence_user``, and every change of a
room goes to the connections of this node watching it, as a ``presence_diff`` encoded
once. Nothing is written to the store or the log.

Across nodes (over the backplane) each node owns its own connections' entries: it
sends each change, and every ``heartbeat`` seconds a beat with a digest of its
entries. A node not heard for ``ttl`` seconds loses its entries on every other node
(checked each second, so they leave within ``ttl`` + 1 s); a node whose digest differs
from what another holds is asked to announce its entries again, as is every node when
one starts (so a new node knows each room at once).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..model import Principal
from ..presence import (
    Coalescer,
    Diff,
    Entry,
    MergeMode,
    Message,
    Registry,
    decode_message,
    encode_message,
    set_message,
)
from ..protocol.frames import (
    MemberItem,
    PresenceDiffFrame,
    ProtocolError,
    RoomFrame,
    encode,
    encode_text,
)

if TYPE_CHECKING:
    from ..engine import Engine
    from ..fanout.backplane import Backplane
    from .connection import Connection

__all__ = ["MayJoin", "PresenceService", "PresenceUser", "default_may_join"]

log = logging.getLogger("syncline.presence")

MayJoin = Callable[[Principal, str], Any]
"""``(principal, room) -> bool`` (may be async): may this principal join the room and
see its members?"""

PresenceUser = Callable[[Principal], Any]
"""``principal -> JSON``: what the members of a room see of who this is."""

REFUSED = "room {room!r}: no such room, or not allowed"
"""The one answer to a refused join: the same whether a record exists or not."""


async def default_may_join(engine: Engine, principal: Principal, room: str) -> bool:
    """A room ``<collection>:<id>`` of a declared collection admits whoever may read
    that live record; any other name admits everyone."""
    collection, sep, record_id = room.partition(":")
    coll = engine.schema.collections.get(collection) if sep else None
    if coll is None:
        return True
    async with engine.store.read() as tx:
        record = await tx.get(collection, record_id)
    if record is None or record.deleted:
        return False
    if not engine.schema.rules_declared:
        return True
    return engine.schema.may_read(principal, coll, coll.visible(record.id, record.data))


class PresenceService:
    """The rooms of one node (see the module docs)."""

    def __init__(
        self,
        engine: Engine,
        backplane: Backplane,
        *,
        merge: MergeMode = "connection",
        may_join: MayJoin | None = None,
        presence_user: PresenceUser | None = None,
        max_rooms: int = 20,
        max_bytes: int = 2048,
        per_second: float = 20.0,
        heartbeat: float = 5.0,
        ttl: float = 15.0,
    ) -> None:
        if merge not in ("connection", "principal"):
            raise ValueError(f"presence_merge must be 'connection' or 'principal', not {merge!r}")
        if not 0 < heartbeat < ttl:
            raise ValueError(f"presence heartbeat {heartbeat!r} must be below its ttl {ttl!r}")
        self.engine = engine
        self.backplane = backplane
        self.may_join = may_join
        self.presence_user = presence_user
        self.max_rooms = max_rooms
        self.max_bytes = max_bytes
        self.heartbeat = heartbeat
        self.ttl = ttl
        self.node = secrets.token_hex(8)
        self._secret = secrets.token_bytes(16)
        self.registry = Registry(self.node, merge, self._key)
        self.watchers: dict[str, set[Connection]] = {}
        self.joined: dict[Connection, dict[str, str]] = {}  # room -> entry id, per connection
        self._coalescer = Coalescer(per_second)
        self._flush_timer: asyncio.TimerHandle | None = None
        self._announce_timer: asyncio.TimerHandle | None = None
        self._asked: dict[str, float] = {}  # when a sync was last asked of each node
        self._counter = 0
        self._gen = 0
        self._task: asyncio.Task[None] | None = None
        self.sent = 0  # presence_diff frames handed to connections (diagnostics, benchmark)

    def _key(self, raw: str) -> str:
        digest = hashlib.blake2b(raw.encode(), key=self._secret, digest_size=9).digest()
        return base64.urlsafe_b64encode(digest).decode()

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        self.backplane.on_presence = self._heard
        self._publish(Message(p="sync", n=self.node))
        self._task = asyncio.create_task(self._beat_forever(), name="syncline-presence")

    async def stop(self) -> None:
        """Stop; the other nodes drop this node's entries at once (not after the TTL)."""
        self._publish(Message(p="end", n=self.node, g=self._gen + 1))
        self.backplane.on_presence = None
        for timer in (self._flush_timer, self._announce_timer):
            if timer is not None:
                timer.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task])
            self._task = None

    # --- this node's connections --------------------------------------------------------

    async def join(self, conn: Connection, room: str, state: dict[str, Any], size: int) -> None:
        rooms = self.joined.setdefault(conn, {})
        if room in rooms:  # joining again: an update, and the room's state afresh
            self._update_now(rooms[room], room, state)
            self._send_room(conn, room, rooms[room])
            return
        if len(rooms) >= self.max_rooms:
            raise ProtocolError(
                "limit", f"a connection may be in at most {self.max_rooms} rooms", ref=room
            )
        if not await self._allowed(conn.principal, room):
            raise ProtocolError("room_refused", REFUSED.format(room=room), ref=room)
        user = await self._user(conn.principal)
        self._counter += 1
        cid = f"{self.node}.{self._counter}"
        entry = Entry(
            cid, self.node, room, conn.principal_key, user, state, _now_ms(), 1, self._gen
        )
        rooms[room] = cid
        diff = self.registry.put(entry)
        self._send_room(conn, room, cid)
        self._broadcast(diff, skip=conn)
        self.watchers.setdefault(room, set()).add(conn)
        self._publish(set_message(entry))

    def update(self, conn: Connection, room: str, state: dict[str, Any]) -> None:
        cid = self.joined.get(conn, {}).get(room)
        if cid is None:
            raise ProtocolError(
                "not_joined", f"room {room!r}: join it before sending presence", ref=room
            )
        if self._coalescer.offer((cid, room), state, time.monotonic()):
            self._update_now(cid, room, state)
        else:
            self._schedule_flush()

    def leave(self, conn: Connection, room: str) -> None:
        rooms = self.joined.get(conn)
        cid = rooms.pop(room, None) if rooms is not None else None
        if rooms is not None and not rooms:
            del self.joined[conn]
        if cid is None:
            return
        self._coalescer.forget([(cid, room)])
        watching = self.watchers.get(room)
        if watching is not None:
            watching.discard(conn)
            if not watching:
                del self.watchers[room]
        self._broadcast(self.registry.remove(room, cid))
        self._publish(Message(p="del", n=self.node, c=cid, r=room))

    async def recheck(self, conns: list[Connection]) -> None:
        """Their principal's grants changed: each room it may no longer join is left,
        with the same refusal a join would get."""
        for conn in conns:
            for room in list(self.joined.get(conn, {})):
                if not await self._allowed(conn.principal, room):
                    self.leave(conn, room)
                    refusal = ProtocolError("room_refused", REFUSED.format(room=room), ref=room)
                    conn.send_frame(refusal.frame())

    def disconnect(self, conn: Connection) -> None:
        """The connection ended: it leaves every room it was in."""
        for room in list(self.joined.get(conn, {})):
            self.leave(conn, room)

    async def _allowed(self, principal: Principal, room: str) -> bool:
        try:
            if self.may_join is None:
                return await default_may_join(self.engine, principal, room)
            result = self.may_join(principal, room)
            if inspect.isawaitable(result):
                result = await result
            return bool(result)
        except Exception:  # fail closed, like a read rule
            log.exception("may_join raised for room %r; refusing", room)
            return False

    async def _user(self, principal: Principal) -> Any:
        if self.presence_user is None:
            return None
        user = self.presence_user(principal)
        if inspect.isawaitable(user):
            user = await user
        size = len(encode(user))
        if size > self.max_bytes:
            raise ValueError(
                f"presence_user returned {size} bytes of JSON, more than {self.max_bytes}"
            )
        return user

    def _update_now(self, cid: str, room: str, state: dict[str, Any]) -> None:
        entry = self.registry.rooms[room].entries[cid]
        entry = replace(entry, state=state, at=_now_ms(), v=entry.v + 1, gen=self._gen)
        self._broadcast(self.registry.put(entry))
        self._publish(set_message(entry))

    def _schedule_flush(self) -> None:
        due = self._coalescer.next_due()
        if due is None or self._flush_timer is not None:
            return
        loop = asyncio.get_running_loop()
        delay = max(0.0, due - time.monotonic())
        self._flush_timer = loop.call_later(delay, self._flush)

    def _flush(self) -> None:
        self._flush_timer = None
        for (cid, room), state in self._coalescer.due(time.monotonic()):
            room_now = self.registry.rooms.get(room)
            if room_now is not None and cid in room_now.entries:
                self._update_now(cid, room, state)
        self._schedule_flush()

    # --- frames to connections ----------------------------------------------------------

    def _send_room(self, conn: Connection, room: str, cid: str) -> None:
        r = self.registry.rooms[room]
        members = [MemberItem(**m.to_wire()) for m in r.members().values()]
        frame = RoomFrame(room=room, me=r.member_key(r.entries[cid]), members=members)
        conn.send_frame(frame)

    def _broadcast(self, diff: Diff, skip: Connection | None = None) -> None:
        watching = self.watchers.get(diff.room)
        if not diff or not watching:
            return
        text = encode_text(
            PresenceDiffFrame(
                room=diff.room,
                joins=[MemberItem(**m.to_wire()) for m in diff.joins],
                updates=[MemberItem(**m.to_wire()) for m in diff.updates],
                leaves=diff.leaves,
            )
        )
        for conn in watching:  # (one that is closing needs no more of it)
            if conn is not skip and conn.close_reason is None:
                conn.outbox.put(text)
                self.sent += 1

    # --- other nodes --------------------------------------------------------------------

    def _publish(self, message: Message) -> None:
        self.backplane.publish_presence(encode_message(message))

    def _heard(self, payload: str | bytes) -> None:
        msg = decode_message(payload)
        if msg is None:
            log.warning("ignored a presence message that does not decode: %r", payload[:80])
            return
        if msg.n == self.node:
            return
        self.registry.heard[msg.n] = asyncio.get_running_loop().time()
        if msg.p == "set":
            self._broadcast(self.registry.put(msg.entry()))
        elif msg.p == "del":
            self._broadcast(self.registry.remove(msg.r, msg.c))
        elif msg.p == "end":
            for diff in self.registry.drop(msg.n, below_gen=msg.g):
                self._broadcast(diff)
        elif msg.p == "sync":
            if not msg.to or msg.to == self.node:
                self._announce_soon()
        elif msg.p == "beat" and self.registry.digest(msg.n) != msg.h:
            now = time.monotonic()
            if now - self._asked.get(msg.n, -1e9) >= self.heartbeat:
                self._asked[msg.n] = now
                self._publish(Message(p="sync", n=self.node, to=msg.n))

    def _announce_soon(self) -> None:
        """Announce every entry of this node again (soon: requests close together
        get one announcement)."""
        if self._announce_timer is None:
            loop = asyncio.get_running_loop()
            self._announce_timer = loop.call_later(0.05, self._announce)

    def _announce(self) -> None:
        self._announce_timer = None
        self._gen += 1
        for entry in self.registry.entries_of(self.node):
            entry.gen = self._gen
            self._publish(set_message(entry))
        self._publish(Message(p="end", n=self.node, g=self._gen))

    async def _beat_forever(self) -> None:
        loop = asyncio.get_running_loop()
        tick = min(1.0, self.heartbeat)
        next_beat = loop.time()
        while True:
            now = loop.time()
            if now >= next_beat:
                self._publish(Message(p="beat", n=self.node, h=self.registry.digest(self.node)))
                next_beat = now + self.heartbeat
            for diff in self.registry.expire(now, self.ttl):
                self._broadcast(diff)
            await asyncio.sleep(tick)


def _now_ms() -> int:
    return int(time.time() * 1000)
