"""The asyncio client: a replica kept in sync over a WebSocket, through reconnects.

Everything the protocol decides is in :class:`~syncline.protocol.client.ClientProtocol`;
this layer only moves frames and time. The connection loop::

    offline --connect()--> connecting --welcome--> live
       ^                       |                    |
       +-- jittered backoff <--+-- socket closed <--+
    (a refusal such as ``reload`` or ``unauthorized`` stops the loop: offline for good)

Each connection runs two tasks: a reader feeding frames to the protocol, and a writer
sending what the protocol has to send (woken by local edits, by frames that call for an
answer, and by the end of a ``retry_after``). Local edits apply to the replica at once
(optimistic), are written to the pending file when there is one (:mod:`.persist`
decides when, :mod:`.pending` is the file), and go out at once when live; otherwise on
the next connection, with every other unacknowledged mutation.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from types import TracebackType
from typing import Any, Literal, overload

import orjson

from .._extras import missing_extra

try:
    from websockets.asyncio.client import ClientConnection, connect
    from websockets.exceptions import InvalidURI
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "websockets", "The Python client", "client") from None

from ..exceptions import InvalidMutation, PresenceRefused, QueryError
from ..model import M, Schema
from ..ops import Mutation
from ..protocol.client import (
    ClientEvent,
    ClientFailed,
    ClientProtocol,
    EventKind,
    State,
    mut_frame,
)
from ..protocol.frames import Limits, ProtocolError, decode_client_frame, encode, encode_text
from ..query import Query
from ..replica import Draft, Entry, MutationBuilder, Replica
from ..undo import DEFAULT_PAUSE, UndoOutcome
from ..waiting import wait_event
from .persist import Persistence
from .room import Room

__all__ = ["Client", "EventStream", "Room", "Status"]

log = logging.getLogger("syncline.client")

Status = Literal["connecting", "live", "offline"]
Callback = Callable[[ClientEvent], Awaitable[None] | None]


class EventStream:
    """Events from the moment :meth:`Client.events` was called, until the client closes.

    ``async for event in client.events(): ...``; ``aclose()`` stops listening.
    """

    def __init__(self, client: Client) -> None:
        self._client = client
        self._queue: asyncio.Queue[ClientEvent | None] = asyncio.Queue()
        if client._closed:
            self._queue.put_nowait(None)
        else:
            client._streams.add(self)

    def _put(self, event: ClientEvent | None) -> None:
        self._queue.put_nowait(event)

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        event = await self._queue.get()
        if event is None:
            self._client._streams.discard(self)
            raise StopAsyncIteration
        return event

    async def aclose(self) -> None:
        self._client._streams.discard(self)


class Client:
    """A replica of some queries, kept in sync with a syncline server.

    ``url`` is the WebSocket endpoint (``ws://host/sync``). ``credentials`` travel in
    the ``hello`` frame, ``headers`` with the WebSocket upgrade (cookies, tokens).
    With ``pending_path``, pending mutations, drafts, the client id and the last
    confirmed data are kept in that SQLite file and survive a restart. ``backoff`` is
    the first and the longest wait between reconnection attempts. Edits of one text
    (or lww string) field less than ``undo_pause`` seconds apart are one undo entry.
    """

    def __init__(
        self,
        url: str,
        schema: Schema,
        *,
        client_id: str | None = None,
        credentials: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        pending_path: str | os.PathLike[str] | None = None,
        backoff: tuple[float, float] = (0.1, 5.0),
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        limits: Limits | None = None,
        save_interval: float = 1.0,
        undo_pause: float = DEFAULT_PAUSE,
    ) -> None:
        self.url = url
        self.schema = schema
        self.headers = dict(headers or {})
        self.backoff = backoff
        self.open_timeout = open_timeout
        self.ping_interval = ping_interval
        self.limits = limits or Limits()
        self._persist = Persistence(pending_path, client_id=client_id, save_interval=save_interval)
        self.replica = Replica(schema, self._persist.client_id, undo_pause=undo_pause)
        self._protocol = ClientProtocol(self.replica, credentials=credentials)
        self._persist.restore(self._protocol)
        self._status: Status = "offline"
        self._callbacks: dict[str, list[Callback]] = {}
        self._streams: set[EventStream] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._task: asyncio.Task[None] | None = None
        self._ws: ClientConnection | None = None
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._changed = asyncio.Event()
        self._closing = False
        self._closed = False
        self.last_error: Mapping[str, Any] | None = None
        self._rooms: dict[str, Room] = {}

    # --- reading ------------------------------------------------------------------------

    @property
    def client_id(self) -> str:
        return self.replica.client_id

    @property
    def status(self) -> Status:
        return self._status

    @property
    def cursor(self) -> str | None:
        return str(self.replica.cursor) if self.replica.cursor is not None else None

    @property
    def pending(self) -> list[int]:
        """Ids of the mutations not yet confirmed (invariant 8)."""
        return [p.mutation.id for p in self.replica.pending]

    @property
    def drafts(self) -> list[Draft]:
        """Edits a ``manual`` conflict stopped: answer each with :meth:`resolve`."""
        return list(self.replica.drafts)

    @property
    def failed(self) -> bool:
        """The server refused this client for good (see :attr:`error`): no reconnect."""
        return self._protocol.state is State.FAILED

    @property
    def error(self) -> Mapping[str, Any] | None:
        """The ``error`` frame that stopped this client, if one did."""
        return self._protocol.fatal

    @property
    def protocol(self) -> ClientProtocol:
        return self._protocol

    @overload
    def get(self, collection: str, record_id: str) -> dict[str, Any] | None: ...
    @overload
    def get(self, collection: type[M], record_id: str) -> M | None: ...
    def get(self, collection: str | type[M], record_id: str) -> dict[str, Any] | M | None:
        """The record as the user sees it (pending edits applied), or None; given a
        model class (``client.get(Note, id)``), as an instance of it."""
        return self.replica.get(collection, record_id)

    @overload
    def query(self, query: Query | Mapping[str, Any]) -> list[dict[str, Any]]: ...
    @overload
    def query(
        self, query: type[M], where: Query | Mapping[str, Any] | None = None
    ) -> list[Entry[M]]: ...
    def query(
        self,
        query: Query | Mapping[str, Any] | type[M],
        where: Query | Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]] | list[Entry[M]]:
        """Run ``query`` on the local view (pending edits applied). Given a model class
        (``client.query(Note, {"where": {...}})``): its collection's records as
        :class:`~syncline.replica.Entry` rows ``(id, record)``."""
        if isinstance(query, type):
            return self.replica.query(query, where)
        q = query if isinstance(query, Query) else Query.parse(query, self.schema)
        return self.replica.query(q)

    # --- hydrate and subscribe ----------------------------------------------------------

    def hydrate(self, state: Mapping[str, Any] | str | bytes) -> None:
        """Build the replica from a server-rendered page's embedded state (the JSON text
        of ``<script id="syncline-state">``, or its parsed object) without fetching; the
        first connection subscribes ``since`` its cursor (invariant 6)."""
        obj = orjson.loads(state) if isinstance(state, str | bytes) else state
        self._after(self._protocol.hydrate(obj), state_changed=True)

    async def subscribe(
        self, queries: Mapping[str, Query | Mapping[str, Any]], *, timeout: float | None = None
    ) -> None:
        """Subscribe to ``{query id: query}``; return once their data is here.

        Offline, this waits for a connection. Raises :class:`QueryError` if the server
        refuses a query, :class:`ClientFailed` if it refuses the client.
        """
        self._protocol.subscribe(queries)
        self._kick()
        qids = list(queries)
        await self.wait_for(lambda: self._protocol.answered(qids), timeout)
        refused = [q for q in qids if q not in self._protocol.wanted]
        if refused:
            message = (self.last_error or {}).get("message", "")
            raise QueryError(f"the server refused queries {refused}: {message}")

    # --- writing ------------------------------------------------------------------------

    def insert(self, collection: str, record_id: str, **fields: Any) -> Mutation:
        return self._local(lambda: self.replica.insert(collection, record_id, **fields))

    def update(self, collection: str, record_id: str, **fields: Any) -> Mutation:
        return self._local(lambda: self.replica.update(collection, record_id, **fields))

    def delete(self, collection: str, record_id: str) -> Mutation:
        return self._local(lambda: self.replica.delete(collection, record_id))

    def increment(self, collection: str, record_id: str, field: str, by: int = 1) -> Mutation:
        return self._local(lambda: self.replica.increment(collection, record_id, field, by))

    def add(self, collection: str, record_id: str, field: str, *values: str | int) -> Mutation:
        return self._local(lambda: self.replica.add(collection, record_id, field, *values))

    def remove(self, collection: str, record_id: str, field: str, *values: str | int) -> Mutation:
        return self._local(lambda: self.replica.remove(collection, record_id, field, *values))

    @contextlib.contextmanager
    def batch(self, mode: Literal["whole", "partial"] = "whole") -> Iterator[MutationBuilder]:
        """Several ops as one mutation (all or nothing, invariant 5), sent when the
        block exits: ``with client.batch() as b: b.insert(...); b.update(...)``."""
        self._check_open()
        with self.replica.batch(mode) as builder:
            yield builder
        if builder.mutation is not None:
            self._queued(builder.mutation)

    def resolve(self, draft: Draft, choices: Mapping[str, Any]) -> Mutation | None:
        """Answer a draft: ``choices`` maps each conflicting field to the value to keep
        (a field left out keeps theirs). Returns the new mutation, if any."""
        self._check_open()
        mutation = self.replica.resolve(draft, choices)
        if mutation is None:
            self._persist.save_queue()
            self._notify()
            return None
        return self._queued(mutation)

    # --- undo and redo (syncline.undo) -----------------------------------------------

    @property
    def can_undo(self) -> bool:
        """Whether :meth:`undo` has an entry to undo (re-read it on ``changed``)."""
        return self.replica.can_undo

    @property
    def can_redo(self) -> bool:
        return self.replica.can_redo

    @contextlib.contextmanager
    def undo_group(self) -> Iterator[None]:
        """Every edit made inside the block is one undo entry."""
        with self.replica.undo_group():
            yield
        self._persist.save_queue()

    def undo(self) -> UndoOutcome | None:
        """Undo this client's newest undo entry with a new mutation, sent like any
        other (queued while offline). Fields someone else changed since are skipped
        (an ``undo-partial`` event names them) or, for ``manual`` ones, come back as a
        draft. None when there is nothing to undo."""
        return self._invert(self.replica.undo)

    def redo(self) -> UndoOutcome | None:
        """Redo the newest undo, by the same rules."""
        return self._invert(self.replica.redo)

    def _invert(self, step: Callable[[], UndoOutcome | None]) -> UndoOutcome | None:
        self._check_open()
        outcome = step()
        if outcome is None:
            return None
        if outcome.mutation_id is not None:
            mutation = next(
                p.mutation for p in self.replica.pending if p.mutation.id == outcome.mutation_id
            )
            self._queued(mutation)
        else:
            self._persist.save_queue()
            self._notify()
        events = [ClientEvent.from_replica(e) for e in self.replica.undo_events(outcome)]
        self._dispatch(events)
        return outcome

    def _local(self, make: Callable[[], Mutation]) -> Mutation:
        self._check_open()
        return self._queued(make())

    def _queued(self, mutation: Mutation) -> Mutation:
        self._check_limits(mutation)
        self._persist.save_queue()  # on disk before it is sent
        keys = tuple(dict.fromkeys((op.c, op.id) for op in mutation.ops))
        self._dispatch([ClientEvent("changed", mutation_id=mutation.id, keys=keys)])
        self._kick()
        self._notify()
        return mutation

    def _check_limits(self, mutation: Mutation) -> None:
        """Refuse here what the server would refuse without using the id up."""
        data = encode(mut_frame(mutation))
        try:
            if len(data) > self.limits.max_frame_bytes:
                raise ProtocolError("too_large", f"the mutation is {len(data)} bytes")
            decode_client_frame(data, self.limits)
        except ProtocolError as exc:
            self.replica.discard(mutation)
            raise InvalidMutation(f"the server would refuse this mutation: {exc}") from None

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("this client is closed")

    # --- presence -----------------------------------------------------------------------

    async def join(
        self, room: str, state: Mapping[str, Any] | None = None, *, timeout: float | None = 10.0
    ) -> Room:
        """Enter a presence room with ``state`` (a small JSON object) and wait for its
        members; raise :class:`~syncline.exceptions.PresenceRefused` if the server
        refuses. The room is joined again after each reconnect until left."""
        self._check_open()
        existing = self._rooms.get(room)
        view = self._protocol.join(room, state or {})
        handle = existing if existing is not None and not existing.left else Room(self, view)
        self._rooms[room] = handle
        self._kick()
        await self.wait_for(lambda: view.answered or handle.left, timeout)
        if handle.error is not None:
            raise PresenceRefused(f"{handle.error.get('code')}: {handle.error.get('message')}")
        return handle

    def _leave(self, room: Room) -> None:
        if self._rooms.get(room.name) is room:
            del self._rooms[room.name]
            self._protocol.leave(room.name)
            self._kick()
            self._notify()

    # --- events -------------------------------------------------------------------------

    def on(self, kind: EventKind | Literal["*"], callback: Callback) -> Callable[[], None]:
        """Call ``callback(event)`` for each event of ``kind`` (``"*"``: all); it may be
        async. Returns a function that removes it."""
        self._callbacks.setdefault(kind, []).append(callback)

        def off() -> None:
            with contextlib.suppress(ValueError):
                self._callbacks[kind].remove(callback)

        return off

    def events(self) -> EventStream:
        """Every event from now on: ``async for event in client.events(): ...``."""
        return EventStream(self)

    def _dispatch(self, events: list[ClientEvent]) -> None:
        for event in events:
            if event.kind == "error" and event.error is not None:
                self.last_error = event.error
            if event.kind == "presence" and (room := self._rooms.get(event.room or "")):
                room._event(event)
                if room.left:
                    self._rooms.pop(room.name, None)
            callbacks = [*self._callbacks.get(event.kind, ()), *self._callbacks.get("*", ())]
            for callback in callbacks:
                try:
                    result = callback(event)
                    if inspect.isawaitable(result):
                        self._spawn(result)
                except Exception:
                    log.exception("a %s callback failed", event.kind)
            for stream in list(self._streams):
                stream._put(event)

    def _spawn(self, work: Awaitable[Any]) -> None:
        async def run() -> None:
            try:
                await work
            except Exception:
                log.exception("an event callback failed")

        task = asyncio.get_running_loop().create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # --- waiting ------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], bool], timeout: float | None = None) -> None:
        """Wait until ``predicate()`` holds, checked after every change of state.

        Raises :class:`TimeoutError`, or :class:`ClientFailed` once the server refused
        the client or the client was closed.
        """
        async with asyncio.timeout(timeout):
            while not predicate():
                if self._protocol.fatal is not None:
                    raise ClientFailed(self._protocol.fatal)
                if self._closed:
                    raise ClientFailed({"code": "closed", "message": "the client was closed"})
                await self._changed.wait()

    async def wait_live(self, timeout: float | None = None) -> None:
        await self.wait_for(lambda: self._status == "live", timeout)

    async def wait_synced(self, timeout: float | None = None) -> None:
        """Wait until live, every subscription answered, and nothing pending: each
        mutation acknowledged and the cursor at or past its ``seq``."""
        await self.wait_for(lambda: self._protocol.synced, timeout)

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # --- connection ---------------------------------------------------------------------

    async def connect(self) -> None:
        """Start connecting (and reconnecting) in the background; returns at once."""
        self._check_open()
        if self._task is None or self._task.done():
            self._closing = False
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="syncline")

    async def close(self) -> None:
        """Close the connection, save what must survive, and end event streams."""
        if self._closed:
            return
        self._closing = True
        self._stop.set()
        ws = self._ws
        if ws is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        elif self._task is not None:
            self._task.cancel()  # opening a connection, or waiting to: nothing to close
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 5)
            except (TimeoutError, asyncio.CancelledError):
                self._task.cancel()
            except Exception:
                log.exception("the connection loop failed")
        self._persist.close()
        self._closed = True
        self._set_status("offline")
        for stream in list(self._streams):
            stream._put(None)
        self._notify()

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def _run(self) -> None:
        first, longest = self.backoff
        delay = first
        while not self._closing and not self.failed:
            self._set_status("connecting")
            went_live = False
            try:
                async with connect(
                    self.url,
                    additional_headers=self.headers or None,
                    open_timeout=self.open_timeout,
                    ping_interval=self.ping_interval,
                    close_timeout=2,
                    max_size=None,
                ) as ws:
                    went_live = await self._session(ws)
            except asyncio.CancelledError:
                raise
            except InvalidURI as exc:
                self._dispatch(self._protocol.fail("bad_url", str(exc)))
                self._notify()
            except Exception as exc:
                log.info("connection to %s failed: %r", self.url, exc)
            if self._closing or self.failed:
                break
            self._set_status("offline")
            if went_live:
                delay = first
            # Equal jitter: half the delay, plus a random part of the other half.
            wait = delay / 2 + random.uniform(0, delay / 2)
            delay = min(longest, delay * 2)
            await wait_event(self._stop, wait)
        self._set_status("offline")

    async def _session(self, ws: ClientConnection) -> bool:
        """One connection, until it closes; True if it got as far as ``welcome``."""
        self._ws = ws
        self._protocol.connection_made()
        went_live = False

        def live() -> bool:
            nonlocal went_live
            went_live = went_live or self._protocol.state is State.LIVE
            return went_live

        reader = asyncio.create_task(self._read_loop(ws, live))
        writer = asyncio.create_task(self._write_loop(ws))
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (reader, writer):
                task.cancel()
            for result in await asyncio.gather(reader, writer, return_exceptions=True):
                if isinstance(result, Exception) and not _is_disconnect(result):
                    log.error("connection task failed", exc_info=result)
            self._ws = None
            self._protocol.connection_lost()
            self._after([])
        return went_live

    async def _read_loop(self, ws: ClientConnection, live: Callable[[], bool]) -> None:
        async for message in ws:
            self._receive(message)
            live()
            if self._protocol.close_requested or self._protocol.state is State.FAILED:
                await ws.close()
                return

    def _receive(self, message: str | bytes) -> None:
        """One frame from the server (a subclass may watch them here)."""
        cursor = self.replica.cursor
        events = self._protocol.receive_text(message, time.monotonic())
        self._after(events, state_changed=self.replica.cursor != cursor)

    async def _write_loop(self, ws: ClientConnection) -> None:
        while True:
            self._wake.clear()
            for frame in self._protocol.data_to_send(time.monotonic()):
                await self._send(ws, frame)
            deadline = self._protocol.next_deadline()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
            await wait_event(self._wake, timeout)

    async def _send(self, ws: ClientConnection, frame: dict[str, Any]) -> None:
        """Send one frame (a subclass may watch them here)."""
        await ws.send(encode_text(frame))

    def _kick(self) -> None:
        self._wake.set()

    def _set_status(self, status: Status) -> None:
        if status != self._status:
            self._status = status
            self._dispatch([ClientEvent("status", status=status)])
            self._notify()

    def _after(self, events: list[ClientEvent], *, state_changed: bool = False) -> None:
        """Bookkeeping after the protocol moved: save, report, wake the writer."""
        self._persist.save_queue()
        if state_changed or any(e.kind in ("changed", "reset") for e in events):
            self._persist.state_changed()
        if self._protocol.state is State.LIVE:
            self._set_status("live")
        elif self._protocol.state is State.FAILED:
            self._set_status("offline")
        self._dispatch(events)
        self._kick()
        self._notify()


def _is_disconnect(exc: BaseException) -> bool:
    from websockets.exceptions import ConnectionClosed

    return isinstance(exc, ConnectionClosed | OSError)
