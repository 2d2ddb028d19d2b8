"""The ASGI server: WebSocket ``/sync``, HTTP ``/sync/mutate`` and ``/sync/pull``.

This layer only moves bytes: frames are decoded by :mod:`syncline.protocol`, data is
read and written by the :class:`~syncline.engine.Engine`, and every data frame reaches
a connection through the node's :class:`~syncline.fanout.reader.LogReader`.

Add its routes to an application (or serve ``sync.app`` on its own)::

    sync = SynclineServer(engine, authenticate=my_auth)
    app = Starlette(routes=[*my_routes, *sync.routes], lifespan=sync.lifespan)
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import math
import re
import time
import types
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Generator, Mapping
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

import orjson
from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from ..cursor import Cursor
from ..engine import Engine
from ..exceptions import (
    ClientIdTaken,
    CursorError,
    InvalidMutation,
    MutationRefused,
    QueryError,
    StoreError,
)
from ..fanout.backplane import Backplane
from ..fanout.memory import MemoryBackplane
from ..fanout.reader import ChangesPart, LogReader
from ..model import Principal
from ..protocol.frames import (
    AckFrame,
    MutFrame,
    RejectFrame,
    ServerFrame,
    changes_frame,
    encode,
    encode_text,
    error_frame,
    refusal_frame,
    snapshot_frame,
)
from ..protocol.server import (
    Hello,
    Limits,
    Mutate,
    Ping,
    Pong,
    ProtocolError,
    ServerProtocol,
    Subscribe,
    Unsubscribe,
    decode_client_frame,
)
from ..query import Query
from .outbox import Outbox

__all__ = ["Authenticate", "SynclineServer"]

log = logging.getLogger("syncline.server")

Authenticate = Callable[[HTTPConnection, Mapping[str, Any] | None], Any]
"""``(request or websocket, hello credentials or None) -> principal``; return None to
refuse. May be async. Credentials come from cookies, headers or the ``hello`` frame,
never from the URL."""

# WebSocket close codes (4000-4999 are the application's).
CLOSE_NORMAL = 1000
CLOSE_POLICY = 1008
CLOSE_HEARTBEAT = 4000
CLOSE_UNAUTHORIZED = 4001
CLOSE_RELOAD = 4002
CLOSE_PROTOCOL = 4003
CLOSE_REVOKED = 4004
CLOSE_SLOW = 4008
CLOSE_INTERNAL = 1011
FATAL_CLOSE_CODES = {"unauthorized": CLOSE_UNAUTHORIZED, "reload": CLOSE_RELOAD}


def _principal_key(engine: Engine, principal: Principal) -> str:
    return engine.principal_key(principal)


class Connection:
    """One WebSocket client: its principal, subscriptions, cursor and send queue.

    A connection runs in one task, the ASGI handler's, which reads frames. Nothing
    waits to write: frames handed to the outbox are written at the end of the current
    loop turn (:meth:`SynclineServer._flush_soon`), all of a reader step's frames in
    one pass, straight to the socket while it takes them; only when the socket pushes
    back does a writer task exist, and it ends when the outbox is empty. Silence is
    watched for all connections by one task (:meth:`SynclineServer._watch_forever`).
    An idle connection therefore holds one task, and no event, queue or timer."""

    __slots__ = (
        "_flush_due",
        "_interrupted",
        "_writer",
        "awaiting_seq",
        "client_id",
        "close_reason",
        "context",
        "cursor",
        "heard",
        "left",
        "outbox",
        "pinged",
        "principal",
        "principal_key",
        "protocol",
        "queries",
        "read_key",
        "resync",
        "server",
        "task",
        "ws",
    )

    def __init__(self, server: SynclineServer, ws: WebSocket) -> None:
        self.server = server
        self.ws = ws
        self.protocol = ServerProtocol(server.limits)
        self.outbox = Outbox(
            server.max_queue_bytes, on_overflow=self._overflowed, on_ready=self._outbox_ready
        )
        self.principal: Principal = None
        self.principal_key = ""
        self.read_key: object = None
        self.left = False
        self.resync = False
        self.client_id = ""
        self.queries: dict[str, Query] = {}
        self.cursor: int | None = None
        self.awaiting_seq = 0
        self.close_reason: tuple[int, str] | None = None
        self.heard = asyncio.get_running_loop().time()  # when the last frame was handled
        self.pinged = False  # a ping went out since then
        self.task: asyncio.Task[Any] | None = None  # the reading task, while it reads
        self._interrupted = False  # close_later cancelled the reading task
        self._flush_due = False
        self._writer: asyncio.Task[None] | None = None
        # Writes run outside the handler's task: in a copy of its context, so what ASGI
        # middleware keeps in context variables around send is this connection's.
        self.context = contextvars.copy_context()

    # Subscriber protocol, called by the log reader.
    def send_changes(self, part: ChangesPart) -> None:
        self.outbox.put_changes(part)

    def send_frame(self, frame: ServerFrame | Mapping[str, Any]) -> None:
        self.outbox.put(encode_text(frame))

    def close_later(self, code: int, reason: str) -> None:
        """Ask the connection to close, from any task; the first reason given wins."""
        if self.close_reason is None:
            self.close_reason = (code, reason)
        task = self.task
        # The reading task checks close_reason between frames; from elsewhere, interrupt
        # whatever it waits for (the handler takes this cancellation back) -- soon, not
        # now: the caller may be half way through handing this connection something.
        if task is not None and not self._interrupted and task is not asyncio.current_task():
            self._interrupted = True
            asyncio.get_running_loop().call_soon(self._interrupt)

    def _interrupt(self) -> None:
        if self.task is not None:
            self.task.cancel()

    def _overflowed(self) -> None:
        self.close_later(
            CLOSE_SLOW,
            f"too slow: more than {self.outbox.max_bytes} bytes waited; resume from your cursor",
        )

    # Writing.
    def _outbox_ready(self) -> None:
        if not self._flush_due and self._writer is None:
            self._flush_due = True
            self.server._flush_soon(self)

    def flush(self) -> None:
        """Write what waits while the socket takes it without waiting; hand the rest to
        a writer task the first time a write has to wait (the transport pushes back)."""
        self._flush_due = False
        if self._writer is not None or self.left:
            return
        while (frame := self.outbox.pop()) is not None:
            write = self.ws.send_text(frame)
            try:
                # One step, in the connection's own context: a write that need not wait
                # ends here.
                pending = self.context.run(write.send, None)
            except StopIteration:
                continue
            except Exception as exc:  # the socket is gone: the connection ends
                _log_send_error(exc)
                self.close_later(CLOSE_NORMAL, "")
                return
            self._writer = asyncio.get_running_loop().create_task(
                self._write_rest(_resumed(write, pending)), context=self.context
            )
            return

    async def _write_rest(self, first: Awaitable[None]) -> None:
        try:
            await first
            while (frame := self.outbox.pop()) is not None:
                await self.ws.send_text(frame)
        except Exception as exc:
            _log_send_error(exc)
            self.close_later(CLOSE_NORMAL, "")
        finally:
            self._writer = None


def _log_send_error(exc: Exception) -> None:
    """A send that failed because the client went away is normal; anything else is a bug
    (ours, or a middleware's) that an operator should see."""
    if not isinstance(exc, WebSocketDisconnect | OSError) and type(exc).__name__ not in (
        "ClientDisconnected",
        "ConnectionClosed",
        "ConnectionClosedError",
        "ConnectionClosedOK",
    ):
        log.error("sending to a WebSocket failed; closing it", exc_info=exc)


@types.coroutine
def _resumed(coro: Coroutine[Any, Any, Any], pending: Any) -> Generator[Any, Any, Any]:
    """Finish, in whichever task awaits this, a coroutine that was stepped by hand and
    is suspended on ``pending`` (what it yielded): ``yield from`` for that case."""
    while True:
        try:
            sent = yield pending
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:
            try:
                pending = coro.throw(exc)
            except StopIteration as stop:
                return stop.value
        else:
            try:
                pending = coro.send(sent)
            except StopIteration as stop:
                return stop.value


class SynclineServer:
    def __init__(
        self,
        engine: Engine,
        *,
        authenticate: Authenticate | None = None,
        allowed_origins: list[str] | None = None,
        limits: Limits | None = None,
        heartbeat: float = 20.0,
        hello_timeout: float = 10.0,
        max_queue_bytes: int = 4 << 20,
        pull_timeout: float = 25.0,
        path: str = "/sync",
        close_timeout: float = 5.0,
        retention: float | None = 7 * 24 * 3600.0,
        trim_every: float = 3600.0,
        max_polls_per_principal: int = 4,
        backplane: Backplane | None = None,
    ) -> None:
        self.engine = engine
        self.authenticate = authenticate
        self.allowed_origins = allowed_origins
        self.limits = limits or Limits(max_ops=engine.max_ops)
        self.heartbeat = heartbeat
        self.hello_timeout = hello_timeout
        self.max_queue_bytes = max_queue_bytes
        self.pull_timeout = pull_timeout
        self.close_timeout = close_timeout
        self.retention = retention
        self.trim_every = trim_every
        self._trimmer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.max_polls_per_principal = max_polls_per_principal
        self._polls: dict[str, int] = {}
        self._head = 0  # the newest commit this process heard of (long polls wait for it)
        self._tasks: set[asyncio.Task[None]] = set()
        self.reader = LogReader(engine)
        # Other nodes' commits reach this node's reader through the backplane (and its
        # once-a-second poll); this node's commits are announced to them.
        self.backplane = backplane or MemoryBackplane()
        engine.on_commit(self.backplane.announce)
        self.connections: set[Connection] = set()
        self._to_flush: list[Connection] = []  # written at the end of this loop turn
        # Parsed queries by key, shared by every connection that subscribes to the same
        # query (less memory per connection; the reader keys its answers by the object).
        self._queries: weakref.WeakValueDictionary[str, Query] = weakref.WeakValueDictionary()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._head_changed = asyncio.Condition()
        engine.on_commit(self._on_commit)
        path = path.rstrip("/")
        self.routes = [
            WebSocketRoute(path, self._websocket),
            Route(f"{path}/mutate", self._mutate, methods=["POST"]),
            Route(f"{path}/pull", self._pull, methods=["GET"]),
            Route(f"{path}/{{module}}.js", self._client_module, methods=["GET"]),
        ]
        self.app = Starlette(routes=self.routes, lifespan=self.lifespan)

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        async with self._start_lock:
            if not self._started:
                # Queries filter on queryable fields: index them before serving any.
                await self.engine.store.ensure_indexes(self.engine.schema)
                await self.reader.start()
                await self.backplane.start(self.reader.notify)
                self._head = max(self._head, (await self.engine.head()).seq)
                self.reader.on_advance.append(self._on_commit)
                if self.retention is not None:
                    self._trimmer = asyncio.create_task(self._trim_forever(self.retention))
                tick = min(self.heartbeat, self.hello_timeout) / 8
                if math.isfinite(tick) and tick > 0:
                    self._watcher = asyncio.create_task(self._watch_forever(tick))
                self._started = True

    async def stop(self) -> None:
        for conn in list(self.connections):
            conn.close_later(CLOSE_NORMAL, "server shutting down")
        if self._started:
            await self.backplane.stop()
        for task in (self._trimmer, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])  # unlike awaiting it, never swallows our own cancel
        self._trimmer = self._watcher = None
        await self.reader.stop()
        self._started = False

    async def _trim_forever(self, retention: float) -> None:
        """The trim job: log entries and tombstones older than ``retention`` seconds go;
        clients with older cursors get "cursor too old" and a fresh snapshot."""
        while True:
            try:
                removed = await self.engine.trim(older_than=retention)
                if removed:
                    log.info("trimmed %d log entries older than %.0fs", removed, retention)
            except Exception:
                log.exception("trimming the log failed; will retry")
            await asyncio.sleep(self.trim_every)

    async def _watch_forever(self, tick: float) -> None:
        """Hello timeouts and heartbeats for every connection, in one task: a timer per
        connection would cost more memory than the rest of an idle connection's state.
        Each limit is acted on within ``tick`` (an eighth of the shorter one) of passing."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = loop.time()
            for conn in list(self.connections):
                silent = now - conn.heard  # negative while a frame is being handled
                if conn.protocol.client_id is None:
                    if silent >= self.hello_timeout:
                        conn.close_later(CLOSE_PROTOCOL, "no hello received")
                elif silent >= 2 * self.heartbeat:
                    conn.close_later(CLOSE_HEARTBEAT, "no frame within two heartbeats")
                elif silent >= self.heartbeat and not conn.pinged:
                    conn.pinged = True
                    conn.send_frame(conn.protocol.ping())

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Open the engine's store (unless it is open already, and then leave it open
        afterwards), start, serve, stop, close: give it to Starlette as ``lifespan``, or
        enter it inside your own."""
        store = self.engine.store
        opened_here = not store.is_open
        await store.open()
        try:
            await self.start()
            try:
                yield
            finally:
                await self.stop()
        finally:
            if opened_here:
                await store.close()

    def _on_commit(self, head: int) -> None:
        self._head = max(self._head, head)
        if not self._polls:  # no long poll waits (each one counts in _polls while it does)
            return
        task = asyncio.get_running_loop().create_task(self._notify_pullers())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _notify_pullers(self) -> None:
        async with self._head_changed:
            self._head_changed.notify_all()

    # --- sessions and grants --------------------------------------------------------------

    def revoke(self, principal: Principal, reason: str = "session ended") -> int:
        """Close every connection of ``principal`` (its session ended). Returns how many."""
        key = _principal_key(self.engine, principal)
        closing = [c for c in self.connections if c.principal_key == key]
        for c in closing:
            c.close_later(CLOSE_REVOKED, reason)
        return len(closing)

    async def recheck(self, principal: Principal) -> int:
        """The principal's grants changed: resend each of its subscriptions as a fresh
        snapshot under the current rules (records it may no longer read leave)."""
        key = _principal_key(self.engine, principal)
        conns = [c for c in self.connections if c.principal_key == key and c.queries]
        for c in conns:  # no live frame reaches them until their snapshot does
            c.resync = True
        await asyncio.gather(
            *(self.reader.join(c, None, None) for c in conns), return_exceptions=True
        )
        return len(conns)

    # --- WebSocket ------------------------------------------------------------------------

    def _origin_allowed(self, conn: HTTPConnection) -> bool:
        origin = conn.headers.get("origin")
        if origin is None:
            return True  # not a browser: nothing cross-site to defend against
        if self.allowed_origins is not None:
            return origin in self.allowed_origins or "*" in self.allowed_origins
        host = conn.headers.get("host", "")
        return urlsplit(origin).netloc == host

    async def _authenticate(
        self, conn: HTTPConnection, credentials: Mapping[str, Any] | None
    ) -> Any:
        if self.authenticate is None:
            return "anonymous"
        result = self.authenticate(conn, credentials)
        if inspect.isawaitable(result):
            result = await result
        return result

    async def _websocket(self, ws: WebSocket) -> None:
        """Run one connection: read frames until the client leaves or someone asks it to
        close (overflow, revoke, shutdown, a fatal protocol error, a failed write)."""
        if not self._origin_allowed(ws):
            await ws.close(code=CLOSE_POLICY, reason="origin not allowed")
            return
        await self.start()
        await ws.accept()
        conn = Connection(self, ws)
        self.connections.add(conn)
        task = conn.task = asyncio.current_task()
        try:
            await self._read_loop(conn)
        except asyncio.CancelledError:
            # close_later's interruption is taken back; any other cancellation goes on.
            if not conn._interrupted or task is None or task.uncancel() > 0:
                raise
        finally:
            conn.task = None
            conn.flush()  # what the connection said last (an error, say) goes before the close
            self.connections.discard(conn)
            self.reader.leave(conn)
            conn.protocol.close()
            conn.outbox.close()
            writer = conn._writer
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            if (
                ws.application_state != WebSocketState.DISCONNECTED
                and ws.client_state != WebSocketState.DISCONNECTED
            ):
                code, reason = conn.close_reason or (CLOSE_NORMAL, "")
                # A consumer that stopped reading may never take the close frame: give up
                # after a while; the transport is closed when this handler returns.
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(
                        ws.close(code=code, reason=reason[:120]), self.close_timeout
                    )

    def _flush_soon(self, conn: Connection) -> None:
        """Write ``conn``'s outbox at the end of this loop turn, with every other
        connection's: a reader step's frames go out in one pass, one write each."""
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._flush)
        self._to_flush.append(conn)

    def _flush(self) -> None:
        conns, self._to_flush = self._to_flush, []
        for conn in conns:
            try:
                conn.flush()
            except (Exception, asyncio.CancelledError):  # must not strand the others
                conn._flush_due = False
                log.exception("flushing a connection failed; closing it")
                conn.close_later(CLOSE_INTERNAL, "internal error")

    async def _read_loop(self, conn: Connection) -> None:
        """Read and handle frames in turn; silence is watched by :meth:`_watch_forever`."""
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
            data = message.get("bytes") or b""
        try:
            event = conn.protocol.receive(data, time.monotonic())
            await self._handle(conn, event)
        except ProtocolError as exc:
            conn.send_frame(exc.frame())
            if exc.fatal:
                conn.close_later(FATAL_CLOSE_CODES.get(exc.code, CLOSE_PROTOCOL), str(exc))
                return False
        except Exception:
            # A bug of ours or of the application's hooks: say so without details,
            # log them, and close; the client reconnects and resumes.
            log.exception("unexpected error on a connection")
            conn.send_frame(conn.protocol.internal_error())
            conn.close_later(CLOSE_INTERNAL, "internal error")
            return False
        return True

    async def _handle(self, conn: Connection, event: Any) -> None:
        if isinstance(event, Hello):
            await self._hello(conn, event)
        elif isinstance(event, Subscribe):
            await self._subscribe(conn, event)
        elif isinstance(event, Unsubscribe):
            for qid in event.query_ids:
                conn.queries.pop(qid, None)
        elif isinstance(event, Mutate):
            await self._mutate_ws(conn, event)
        elif isinstance(event, Ping):
            conn.send_frame(conn.protocol.pong(event))
        elif isinstance(event, Pong):
            pass

    async def _hello(self, conn: Connection, hello: Hello) -> None:
        principal = await self._authenticate(conn.ws, hello.credentials)
        if principal is None:
            raise ProtocolError("unauthorized", "authentication failed", fatal=True)
        if hello.schema_hash != self.engine.schema.hash:
            raise ProtocolError(
                "reload",
                f"schema {hello.schema_hash!r} differs from the server's "
                f"{self.engine.schema.hash!r}: reload the page; pending mutations are kept "
                "and replayed after the reload",
                fatal=True,
            )
        conn.principal = principal
        conn.principal_key = _principal_key(self.engine, principal)
        conn.read_key = self.engine.read_key(principal)
        conn.client_id = hello.client_id
        try:
            last = await self.engine.client_last(principal, hello.client_id)
        except ClientIdTaken as exc:
            raise ProtocolError(exc.code, str(exc), fatal=True) from None
        if hello.acked:
            await self.engine.confirm_acks(hello.client_id, min(hello.acked, last))
        head = await self.engine.head()
        conn.send_frame(conn.protocol.welcome(head.epoch, str(head), last))

    async def _subscribe(self, conn: Connection, sub: Subscribe) -> None:
        try:
            queries = {
                qid: self._shared(Query.parse(q, self.engine.schema))
                for qid, q in sub.queries.items()
            }
            since = Cursor.parse(sub.since) if sub.since is not None else None
        except (QueryError, CursorError) as exc:
            raise ProtocolError(exc.code, str(exc)) from None
        if len(conn.queries.keys() | queries.keys()) > self.limits.max_subscriptions:
            raise ProtocolError(
                "limit", f"at most {self.limits.max_subscriptions} queries per connection"
            )
        try:
            await self.reader.join(conn, queries, since)
        except CursorError as exc:
            raise ProtocolError(exc.code, str(exc)) from None

    def _shared(self, query: Query) -> Query:
        """The parsed query every connection subscribed to the same query holds."""
        return self._queries.setdefault(query.key, query)

    async def _mutate_ws(self, conn: Connection, event: Mutate) -> None:
        refusal = None
        if event.refusal is not None:
            refusal = InvalidMutation(str(event.refusal))
            refusal.code = event.refusal.code  # the protocol's reason: limit, too_large ...
        frame = await self._apply(conn.principal, conn.client_id, event.mutation, refusal)
        if isinstance(frame, AckFrame) and frame.seq:
            conn.awaiting_seq = max(conn.awaiting_seq, frame.seq)
            self.reader.notify()  # so the stream reaches the ack's seq even if idle
        conn.send_frame(frame)

    async def _apply(
        self,
        principal: Principal,
        client_id: str,
        mutation: dict[str, Any],
        refusal: MutationRefused | None = None,
    ) -> AckFrame | RejectFrame:
        """Apply a mutation; answer with an ``ack`` or ``reject`` frame."""
        mid = mutation.get("id")
        try:
            ack = await self.engine.apply(principal, client_id, mutation, refusal=refusal)
        except ClientIdTaken as exc:
            raise ProtocolError(exc.code, str(exc), fatal=True) from None
        except MutationRefused as exc:
            return refusal_frame(mid, exc.to_wire(), permanent=exc.permanent)
        except StoreError:
            log.exception("the store failed while applying a mutation")
            return RejectFrame(
                mid=mid,
                permanent=False,
                code="retry",
                message="the server could not store the mutation; retry",
                retry_after=1.0,
            )
        return ServerProtocol.ack(ack)

    # --- HTTP -------------------------------------------------------------------------------

    async def _http_principal(self, request: Request) -> Any:
        principal = await self._authenticate(request, None)
        if principal is None:
            raise _HTTPError(401, "unauthorized", "authentication failed")
        return principal

    async def _mutate(self, request: Request) -> Response:
        """``POST /sync/mutate``: ``{"client": id, "mut": {id, ops, base, mode}}``."""
        try:
            if not self._origin_allowed(request):
                raise _HTTPError(403, "origin", "origin not allowed")
            if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
                # A cross-site form cannot send this type without a CORS preflight.
                raise _HTTPError(415, "content_type", "send the mutation as application/json")
            principal = await self._http_principal(request)  # before reading any body
            body = await self._read_body(request)
            try:
                obj = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise _HTTPError(400, "bad_json", f"body is not valid JSON: {exc}") from None
            if (
                not isinstance(obj, dict)
                or not isinstance(obj.get("client"), str)
                or "mut" not in obj
            ):
                raise _HTTPError(400, "bad_frame", 'body must be {"client": "<id>", "mut": {...}}')
            if not 8 <= len(obj["client"]) <= 128:
                raise _HTTPError(400, "bad_frame", "client id must have 8 to 128 characters")
            if not isinstance(obj["mut"], dict):
                raise _HTTPError(400, "bad_frame", "mut must be an object")
            try:
                frame = decode_client_frame({**obj["mut"], "t": "mut"}, self.limits)
            except ProtocolError as exc:
                mid = obj["mut"].get("id")
                if not isinstance(mid, int) or isinstance(mid, bool) or mid < 1:
                    raise
                refusal = InvalidMutation(str(exc))
                refusal.code = exc.code  # malformed with a usable id: refused, id used up
                frame_out = await self._apply(principal, obj["client"], {"id": mid}, refusal)
                return _json(frame_out)
            assert isinstance(frame, MutFrame)
            acked = obj.get("acked")
            if isinstance(acked, int) and not isinstance(acked, bool) and acked > 0:
                # HTTP clients say which answers they hold here, as hello.acked does.
                last = await self.engine.client_last(principal, obj["client"])
                await self.engine.confirm_acks(obj["client"], min(acked, last))
            return _json(await self._apply(principal, obj["client"], frame.mutation()))
        except _HTTPError as exc:
            return exc.response()
        except ProtocolError as exc:
            return _json(exc.frame(), status=400 if exc.code != "client_id_taken" else 403)

    async def _read_body(self, request: Request) -> bytes:
        """The request body, refused with 413 as soon as it passes the frame limit."""
        limit = self.limits.max_frame_bytes
        declared = request.headers.get("content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            raise _HTTPError(413, "too_large", f"body exceeds {limit} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise _HTTPError(413, "too_large", f"body exceeds {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _pull(self, request: Request) -> Response:
        """``GET /sync/pull?queries=<json>&since=<cursor>&wait=<s>``: a long poll."""
        try:
            principal = await self._http_principal(request)
            params = request.query_params
            try:
                raw = orjson.loads(params.get("queries", ""))
            except orjson.JSONDecodeError:
                raise _HTTPError(
                    400, "bad_frame", "queries must be a JSON object of {id: query}"
                ) from None
            if not isinstance(raw, dict) or not raw or len(raw) > self.limits.max_subscriptions:
                raise _HTTPError(
                    400, "bad_frame", "queries must be a non-empty JSON object of {id: query}"
                )
            queries = {qid: Query.parse(q, self.engine.schema) for qid, q in raw.items()}
            wait = _wait_seconds(params.get("wait"), self.pull_timeout)
            since_token = params.get("since")
            if since_token is None:
                snap = await self.engine.snapshot(principal, queries)
                return _no_store(snapshot_frame(snap))
            since = Cursor.parse(since_token)
            key = _principal_key(self.engine, principal)
            if self._polls.get(key, 0) >= self.max_polls_per_principal:
                raise _HTTPError(
                    429, "rate", f"at most {self.max_polls_per_principal} pulls at once per user"
                )
            self._polls[key] = self._polls.get(key, 0) + 1
            try:
                return await self._long_poll(principal, since, queries, wait)
            finally:
                self._polls[key] -= 1
                if not self._polls[key]:
                    del self._polls[key]
        except _HTTPError as exc:
            return exc.response()
        except (QueryError, CursorError) as exc:
            return _json(error_frame(exc.code, str(exc)), status=400)

    async def _long_poll(
        self, principal: Principal, since: Cursor, queries: dict[str, Query], wait: float
    ) -> Response:
        deadline = time.monotonic() + wait
        while True:
            if self._head > since.seq or time.monotonic() >= deadline:
                try:
                    changes = await self.engine.changes_since(principal, since, queries)
                except CursorError as exc:
                    if exc.code == "cursor_ahead":
                        raise
                    snap = await self.engine.snapshot(principal, queries)
                    return _no_store(snapshot_frame(snap, reset=exc.code))
                if changes.cursor.seq > since.seq or time.monotonic() >= deadline:
                    return _no_store(changes_frame(changes))
                self._head = max(self._head, changes.cursor.seq)
            async with self._head_changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                        await self._head_changed.wait()

    async def _client_module(self, request: Request) -> Response:
        """``GET /sync/client.js`` and its sibling modules: the browser client."""
        module = request.path_params["module"]
        if not _MODULE_NAME.fullmatch(module):
            return _not_found(f"no browser module named {module!r}")
        try:
            source = resources.files("syncline").joinpath(f"static/{module}.js").read_text()
        except (FileNotFoundError, IsADirectoryError):
            return _not_found(f"no browser module named {module!r}")
        # Revalidated on every load, so a deploy never mixes old and new modules.
        return Response(source, media_type="text/javascript", headers={"Cache-Control": "no-cache"})


_MODULE_NAME = re.compile(r"[a-z][a-z0-9_-]{0,63}")


def _wait_seconds(raw: str | None, limit: float) -> float:
    """The ``wait`` parameter of a pull: finite seconds from 0 to ``limit``."""
    if raw is None:
        return limit
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not math.isfinite(value) or not 0 <= value <= limit:
        raise _HTTPError(400, "bad_frame", f"wait must be a number of seconds from 0 to {limit:g}")
    return value


def _not_found(message: str) -> Response:
    return _json(error_frame("not_found", message), status=404)


def _json(frame: ServerFrame, *, status: int = 200) -> Response:
    return Response(encode(frame), status_code=status, media_type="application/json")


def _no_store(frame: ServerFrame) -> Response:
    return Response(
        encode(frame),
        media_type="application/json",
        headers={"Cache-Control": "private, no-store"},
    )


class _HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code

    def response(self) -> Response:
        return _json(error_frame(self.code, str(self)), status=self.status)
