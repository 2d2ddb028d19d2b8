"""The WebSocket endpoint: one handler task per connection reads frames, hands each to
the connection's :class:`~syncline.protocol.server.ServerProtocol`, and acts on the
event it answers (authenticate a ``hello``, join the log reader for a ``sub``, apply a
``mut``). Every frame sent is built by the protocol (``docs/protocol.md``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketState

from ..cost import ByteBucket, ReadBudget
from ..cursor import Cursor
from ..exceptions import (
    ClientIdTaken,
    CursorError,
    QueryError,
    ReadLimitExceeded,
    SetupError,
    StoreError,
)
from ..logs import bind, new_connection_id, set_context
from ..protocol.frames import (
    CLOSE_CODES,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_RESTART,
    CLOSE_SLOW,
    FATAL_CLOSE_CODES,
    AckFrame,
    RejectFrame,
    error_frame,
)
from ..protocol.server import (
    Event,
    Hello,
    Join,
    Leave,
    Mutate,
    Ping,
    Pong,
    PresenceUpdate,
    ProtocolError,
    Subscribe,
    Unsubscribe,
)
from ..query import Query
from .connection import Connection

if TYPE_CHECKING:
    from .app import SynclineServer

__all__ = ["WebSocketEndpoint"]

log = logging.getLogger("syncline.server")

_KINDS: dict[type, str] = {
    Hello: "hello",
    Subscribe: "sub",
    Unsubscribe: "unsub",
    Mutate: "mut",
    Ping: "ping",
    Pong: "pong",
}
_QUIET_CLOSES = (CLOSE_NORMAL, CLOSE_RESTART)  # the client left, or this server stops


class WebSocketEndpoint:
    def __init__(self, server: SynclineServer) -> None:
        self.server = server
        self.engine = server.engine
        # Connections past hello, each with the snapshot bytes it may still be sent, and
        # how many each principal holds (max_connections_per_principal).
        self._admitted: dict[Connection, ByteBucket] = {}
        self._per_principal: dict[str, int] = {}

    async def serve(self, ws: WebSocket) -> None:
        """Run one connection: read frames until the client leaves or someone asks it to
        close (overflow, revoke, shutdown, a fatal protocol error, a failed write)."""
        server = self.server
        metrics = server.metrics
        if not server.origin_allowed(ws):
            # Refused before the upgrade: the ASGI server answers HTTP 403.
            if metrics is not None:
                metrics.closed(CLOSE_POLICY)
            await ws.close(code=CLOSE_POLICY, reason="origin not allowed")
            return
        try:
            await server.start()
        except SetupError as exc:  # no lifespan: accepted, so that the close says why
            await ws.accept()
            await ws.close(code=CLOSE_INTERNAL, reason=str(exc)[:123])  # the most a close carries
            return
        await ws.accept()
        set_context(connection=new_connection_id("ws"))  # this task's log lines name it
        conn = Connection(
            ws, server.limits, server.max_queue_bytes, server.flusher.flush_soon, metrics
        )
        if metrics is not None:
            metrics.awaiting.inc()
        server.connections.add(conn)
        conn.task = asyncio.current_task()
        try:
            await self._read_loop(conn)
        except asyncio.CancelledError:
            # close_later's interruption is taken back; any other cancellation goes on.
            if not conn.took_back_interruption():
                raise
        finally:
            conn.task = None
            self._closed(conn)
            self._release(conn)
            server.presence.disconnect(conn)
            conn.flush()  # what the connection said last (an error, say) goes before the close
            server.connections.discard(conn)
            server.reader.leave(conn)
            conn.protocol.close()
            await conn.stop_writing()
            if (
                ws.application_state != WebSocketState.DISCONNECTED
                and ws.client_state != WebSocketState.DISCONNECTED
            ):
                code, reason = conn.close_reason or (CLOSE_NORMAL, "")
                # A consumer that stopped reading may never take the close frame: give up
                # after a while; the transport is closed when this handler returns.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        ws.close(code=code, reason=reason[:120]), server.close_timeout
                    )

    def _closed(self, conn: Connection) -> None:
        """The connection ends: its gauges and close code, and one log line (per
        episode of the same close for the same principal or peer)."""
        code, reason = conn.close_reason or (CLOSE_NORMAL, "")
        live = conn in self._admitted
        metrics = self.server.metrics
        if metrics is not None:
            (metrics.live if live else metrics.awaiting).dec()
            metrics.subscriptions.dec(len(conn.queries))
            metrics.closed(code)
        episodes = self.server.episodes
        episodes.end(conn)
        peer = conn.ws.client.host if conn.ws.client is not None else "?"
        fields = {"code": code, "client_id": conn.client_id, "principal": conn.principal_key}
        if code in _QUIET_CLOSES:
            log.debug("connection closed (%d): %s", code, reason or "normal", extra=fields)
            return
        episodes.log(
            logging.WARNING if code == CLOSE_SLOW else logging.INFO,
            f"close {code}",
            conn.principal_key or peer,
            "closed a connection of %s (client %s) with %d (%s): %s",
            conn.principal_key or f"peer {peer}",
            conn.client_id or "-",
            code,
            CLOSE_CODES.get(code, "?"),
            reason,
            extra=fields,
        )

    async def _read_loop(self, conn: Connection) -> None:
        """Read and handle frames in turn; silence is watched by the server's watcher."""
        ws = conn.ws
        clock = asyncio.get_running_loop().time
        while conn.close_reason is None:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                conn.close_reason = conn.close_reason or (CLOSE_NORMAL, "client left")
                return
            conn.heard, conn.pinged = math.inf, False  # not silent while handling it
            if not await self._receive(conn, message):
                return
            conn.heard = clock()
            del message  # an idle connection keeps no frame it was sent

    async def _receive(self, conn: Connection, message: Mapping[str, Any]) -> bool:
        """Handle one client frame; False when the connection must close."""
        data = message.get("text")
        if data is None:
            data = message.get("bytes") or b""  # a binary frame: the protocol refuses it
        metrics = self.server.metrics
        counted = False
        try:
            event = conn.protocol.receive(data, time.monotonic())
            if metrics is not None:
                metrics.frame_in(_KINDS[type(event)], data)
            counted = True
            await self._handle(conn, event)
        except ProtocolError as exc:
            frame = exc.frame()
            if metrics is not None and not counted:  # refused by the protocol itself
                metrics.frame_in("mut" if isinstance(frame, RejectFrame) else "bad", data)
            if isinstance(frame, RejectFrame):  # refused for the rate: a mutation's answer
                if metrics is not None:
                    metrics.mutation(frame)
                self.server.log_reject(frame, conn.principal, conn.client_id)
            elif not exc.fatal:  # (a fatal one is logged with the close)
                self.server.episodes.log(
                    logging.INFO,
                    f"protocol {exc.code}",
                    conn,
                    "a frame from client %s was refused (%s): %s",
                    conn.client_id or "-",
                    exc.code,
                    exc,
                    extra={"code": exc.code, "client_id": conn.client_id},
                )
            conn.send_frame(frame)
            if exc.fatal:
                conn.close_later(FATAL_CLOSE_CODES.get(exc.code, CLOSE_PROTOCOL), str(exc))
                return False
        except StoreError as exc:
            # The database failed a read of this frame (hello, sub): nothing was sent and
            # nothing half done. Say which condition, close, and let the client reconnect
            # with its backoff; a bug this is not, so no 1011.
            code = exc.condition or "unavailable"
            _log_read_failure(code, exc)
            conn.send_frame(
                error_frame(code, f"the server could not read its database ({code}); reconnect")
            )
            conn.close_later(CLOSE_RESTART, "database unavailable; reconnect")
            return False
        except Exception:
            # A bug of ours or of the application's hooks: say so without details,
            # log them, and close; the client reconnects and resumes.
            log.exception("unexpected error on a connection")
            conn.send_frame(conn.protocol.internal_error())
            conn.close_later(CLOSE_INTERNAL, "internal error")
            return False
        return True

    async def _handle(self, conn: Connection, event: Event) -> None:
        if isinstance(event, Hello):
            await self._hello(conn, event)
            self._admit(conn)
            if (metrics := self.server.metrics) is not None:
                metrics.awaiting.dec()
                metrics.live.inc()
        elif isinstance(event, Subscribe):
            await self._subscribe(conn, event)
        elif isinstance(event, Unsubscribe):
            held = len(conn.queries)
            self.server.reader.unsubscribe(conn, event.query_ids)
            if (metrics := self.server.metrics) is not None:
                metrics.subscriptions.dec(held - len(conn.queries))
        elif isinstance(event, Mutate):
            await self._mutate(conn, event)
        elif isinstance(event, Ping):
            conn.send_frame(conn.protocol.pong(event))
        elif isinstance(event, Pong):
            pass
        elif isinstance(event, Join):
            await self.server.presence.join(conn, event.room, event.state, len(event.encoded))
        elif isinstance(event, PresenceUpdate):
            self.server.presence.update(conn, event.room, event.state)
        elif isinstance(event, Leave):
            self.server.presence.leave(conn, event.room)

    async def _hello(self, conn: Connection, hello: Hello) -> None:
        engine = self.engine
        principal = await self.server.authenticate_as(conn.ws, hello.credentials)
        if principal is None:
            raise ProtocolError("unauthorized", "authentication failed", fatal=True)
        if hello.schema_hash != engine.schema.hash:
            raise ProtocolError(
                "reload",
                f"schema {hello.schema_hash!r} differs from the server's "
                f"{engine.schema.hash!r}: reload the page; pending mutations are kept "
                "and replayed after the reload",
                fatal=True,
            )
        conn.principal = principal
        conn.principal_key = engine.principal_key(principal)
        conn.read_key = engine.read_key(principal)
        conn.client_id = hello.client_id
        set_context(client=hello.client_id, principal=conn.principal_key)
        try:
            try:
                last = await engine.bind_client(principal, hello.client_id)
            except StoreError as exc:  # writes refused: the first mutation binds the id
                self.server.store_episodes.failed(exc, "binding a client id at hello")
                last = await engine.client_last(principal, hello.client_id)
        except ClientIdTaken as exc:
            raise ProtocolError(exc.code, str(exc), fatal=True) from None
        if hello.acked:  # best effort: a database that refuses writes still serves reads
            await self.server.confirm_acks(hello.client_id, min(hello.acked, last))
        head = await engine.head()
        conn.send_frame(conn.protocol.welcome(head.epoch, str(head), last))

    def _admit(self, conn: Connection) -> None:
        """Count the connection against its principal's cap, just after hello; past
        the cap its welcome is withdrawn and it is refused (fatal: close 4009)."""
        key = conn.principal_key
        most = self.server.max_connections_per_principal
        held = self._per_principal.get(key, 0)
        if held >= most:
            conn.outbox.discard()
            raise ProtocolError(
                "too_many_connections",
                f"this user holds {held} connections, the most allowed at once "
                f"(max_connections_per_principal={most}); close some, then reconnect",
                fatal=True,
            )
        self._per_principal[key] = held + 1
        per_minute = self.server.limits.snapshot_bytes_per_minute
        self._admitted[conn] = ByteBucket(per_minute, time.monotonic())

    def _release(self, conn: Connection) -> None:
        if self._admitted.pop(conn, None) is None:
            return
        key = conn.principal_key
        left = self._per_principal.get(key, 1) - 1
        if left > 0:
            self._per_principal[key] = left
        else:
            self._per_principal.pop(key, None)

    async def _subscribe(self, conn: Connection, sub: Subscribe) -> None:
        queries: dict[str, Query] = {}
        for qid, q in sub.queries.items():
            try:
                queries[qid] = self.server.shared_query(Query.parse(q, self.engine.schema))
            except QueryError as exc:  # says which query of the sub failed
                raise ProtocolError(exc.code, str(exc), ref=qid) from None
        try:
            since = Cursor.parse(sub.since) if sub.since is not None else None
        except CursorError as exc:
            raise ProtocolError(exc.code, str(exc)) from None
        conn.protocol.check_subscriptions(len(conn.queries.keys() | queries.keys()))
        limits, bucket = self.server.limits, self._admitted.get(conn)
        allowance = bucket.available(time.monotonic()) if bucket is not None else None
        budget = ReadBudget(self.server.max_snapshot_bytes, limits.max_scan_rows, allowance)
        held = len(conn.queries)
        try:
            await self.server.reader.join(conn, queries, since, budget)
        except CursorError as exc:
            raise ProtocolError(exc.code, str(exc)) from None
        except ReadLimitExceeded as exc:  # the whole sub is refused; nothing was sent
            raise ProtocolError(exc.code, str(exc), ref=exc.ref) from None
        finally:
            if bucket is not None:
                bucket.spend(budget.spent, time.monotonic())
            if (metrics := self.server.metrics) is not None:
                metrics.subscriptions.inc(len(conn.queries) - held)

    async def _mutate(self, conn: Connection, event: Mutate) -> None:
        with bind(mutation=event.mutation.get("id")):
            frame = await self.server.apply(
                conn.principal, conn.client_id, event.mutation, event.refused()
            )
        if isinstance(frame, AckFrame) and frame.seq:
            conn.awaiting_seq = max(conn.awaiting_seq, frame.seq)
            self.server.reader.notify()  # so the stream reaches the ack's seq even if idle
        conn.send_frame(frame)


_read_failures = {"last": -math.inf}


def _log_read_failure(code: str, exc: StoreError) -> None:
    """At most one line per 10 s: while the database is down every reconnect fails."""
    now = time.monotonic()
    if now - _read_failures["last"] >= 10.0:
        _read_failures["last"] = now
        log.warning("a read failed (%s), the connection closes to be retried: %s", code, exc)
