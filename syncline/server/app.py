"""The ASGI server: WebSocket ``/sync``, HTTP ``/sync/mutate`` and ``/sync/pull``.

This module wires the parts and runs their lifecycle; it moves no bytes itself:
frames are decoded and built by :mod:`syncline.protocol`, data is read and written by
the :class:`~syncline.engine.Engine`, every data frame reaches a connection through the
node's :class:`~syncline.fanout.reader.LogReader`, and the endpoints live in
:mod:`.websocket` (with :mod:`.connection`, a connection's write pump) and :mod:`.http`.

Add its routes to an application (or serve ``sync.app`` on its own)::

    sync = SynclineServer(engine, authenticate=my_auth)
    app = Starlette(routes=[*my_routes, *sync.routes], lifespan=sync.lifespan)
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import math
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute

from ..engine import Engine
from ..exceptions import ClientIdTaken, MutationRefused, SetupError, StoreError
from ..fanout.backplane import Backplane
from ..fanout.memory import MemoryBackplane
from ..logs import redact_url
from ..model import Principal
from ..presence import MergeMode
from ..protocol.frames import (
    CLOSE_RESTART,
    CLOSE_REVOKED,
    STORE_REFUSALS,
    AckFrame,
    Limits,
    RejectFrame,
    encode,
    error_frame,
    refusal_frame,
)
from ..protocol.server import ProtocolError, ServerProtocol
from ..query import Query
from .connection import Connection, Flusher, watch_forever
from .headers import DEFAULT_SECURITY_HEADERS, add_missing
from .health import HealthEndpoints
from .http import HttpEndpoints
from .inspect import InspectGuard, Inspector
from .origins import OriginPolicy
from .presence import MayJoin, PresenceService, PresenceUser
from .ratelog import EpisodeLog
from .refusals import StoreEpisodes
from .websocket import WebSocketEndpoint

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["Authenticate", "SynclineServer"]

log = logging.getLogger("syncline.server")

NOT_STARTED = (
    "the sync server was not started: pass lifespan=sync.lifespan to Starlette "
    "(or enter sync.lifespan() in your own lifespan)"
)
"""What every sync endpoint answers when the application forgot the lifespan."""

Authenticate = Callable[[HTTPConnection, Mapping[str, Any] | None], Any]
"""``(request or websocket, hello credentials or None) -> principal``; return None to
refuse. May be async. Credentials come from cookies, headers or the ``hello`` frame,
never from the URL."""


def _describe(part: object) -> str:
    """A store or backplane for the start-up log: its class and where it connects, with
    any password masked."""
    name = str(getattr(part, "kind", "") or type(part).__name__)
    where = getattr(part, "dsn", None) or getattr(part, "url", None) or getattr(part, "path", None)
    schema = getattr(part, "schema", None)
    parts = [name, redact_url(str(where)) if where else "", f"schema {schema}" if schema else ""]
    return " ".join(p for p in parts if p)


class SynclineServer:
    """The sync endpoints of one node, and their lifecycle.

    ``routes`` are the Starlette routes to add to an application (``/sync`` WebSocket,
    ``POST /sync/mutate``, ``GET /sync/pull``, the browser client's modules at
    ``/sync/<name>.js``; ``path`` moves them); ``app`` is a Starlette app of those
    routes alone; ``lifespan`` opens the store, starts the log reader and stops both.
    ``authenticate`` finds each connection's principal (:data:`Authenticate`; without
    it, every connection is ``"anonymous"``). ``allowed_origins`` and ``allowed_hosts``
    widen or name the Origin and Host checks, ``security_headers`` replaces the
    headers sent on every answer, and ``limits`` and the keyword arguments after it
    bound frames, queues, polls and connections (docs/security.md lists each one).
    ``backplane`` joins several nodes on one database (memory: one node alone).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        authenticate: Authenticate | None = None,
        allowed_origins: list[str] | None = None,
        allowed_hosts: list[str] | None = None,
        security_headers: Mapping[str, str] | None = None,
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
        max_connections_per_principal: int = 64,
        backplane: Backplane | None = None,
        ready_timeout: float = 2.0,
        max_reader_lag: float = 10.0,
        inspect: InspectGuard | None = None,
        may_join: MayJoin | None = None,
        presence_user: PresenceUser | None = None,
        presence_merge: MergeMode = "connection",
        presence_heartbeat: float = 5.0,
        presence_ttl: float = 15.0,
    ) -> None:
        """Presence (docs/protocol.md, Presence): ``may_join(principal, room)`` guards
        rooms (default: a ``<collection>:<id>`` room admits whoever may read the
        record), ``presence_user(principal)`` is what members see of who it is
        (default: nothing, an opaque key), ``presence_merge`` shows each connection
        (``"connection"``) or one entry per principal (``"principal"``); other nodes'
        entries leave within ``presence_ttl`` + 1 s of their node's last beat."""
        from ..fanout.reader import LogReader

        self.engine = engine
        self.authenticate = authenticate
        self.allowed_origins = allowed_origins
        self.origins = OriginPolicy(allowed_origins, allowed_hosts)
        # Sent on every HTTP answer of the sync endpoints; None: the defaults, {}: none.
        self.security_headers = dict(
            DEFAULT_SECURITY_HEADERS if security_headers is None else security_headers
        )
        self.limits = limits or Limits(max_ops=engine.max_ops)
        self.heartbeat = heartbeat
        self.hello_timeout = hello_timeout
        self.max_queue_bytes = max_queue_bytes
        self.pull_timeout = pull_timeout
        self.close_timeout = close_timeout
        self.retention = retention
        self.trim_every = trim_every
        self.max_polls_per_principal = max_polls_per_principal
        self.max_connections_per_principal = max_connections_per_principal
        self.ready_timeout = ready_timeout
        """Seconds the store may take to answer the readiness probe's read."""
        self.max_reader_lag = max_reader_lag
        """Seconds the log reader may be behind the head and the node still be ready."""
        self.metrics: Metrics | None = None  # on once metrics_app() was called
        self.log_floor = 0  # the retention floor as last read (start, each trim)
        self.episodes = EpisodeLog(log)  # repeated refusals: one line per episode
        # A snapshot must fit the send queue, which lets no larger frame out.
        self.max_snapshot_bytes = max(
            1, min(self.limits.max_snapshot_bytes, max_queue_bytes - 1024)
        )
        """What one snapshot or pull may carry here (the records and the queries echoed)."""
        self._trimmer: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self.reader = LogReader(engine)
        # Other nodes' commits reach this node's reader through the backplane (and its
        # once-a-second poll); this node's commits are announced to them.
        self.backplane = backplane or MemoryBackplane()
        engine.on_commit(self.backplane.announce)
        self.connections: set[Connection] = set()
        self.presence = PresenceService(
            engine,
            self.backplane,
            merge=presence_merge,
            may_join=may_join,
            presence_user=presence_user,
            max_rooms=self.limits.max_rooms,
            max_bytes=self.limits.max_presence_bytes,
            per_second=self.limits.presence_per_second,
            heartbeat=presence_heartbeat,
            ttl=presence_ttl,
        )
        self.flusher = Flusher()
        self.store_episodes = StoreEpisodes()
        # Parsed queries by key, shared by every connection that subscribes to the same
        # query (less memory per connection; the reader keys its answers by the object).
        self._queries: weakref.WeakValueDictionary[str, Query] = weakref.WeakValueDictionary()
        self._started = False
        self._start_lock = asyncio.Lock()
        self._lifespan_entered = False  # once: a store closed since is not a forgotten one
        self._said_not_started = False
        self.http = HttpEndpoints(self)
        self.health = HealthEndpoints(self)
        # The server hears of commits once: from its reader, after each step that moved
        # the head (this node's commits and other nodes' alike).
        self.reader.on_advance.append(self.http.advanced)
        path = path.rstrip("/")
        self.path = path
        self.routes = [
            WebSocketRoute(path, WebSocketEndpoint(self).serve),
            Route(f"{path}/mutate", self._guarded(self.http.mutate), methods=["POST"]),
            Route(f"{path}/pull", self._guarded(self.http.pull), methods=["GET"]),
            Route(f"{path}/{{module}}.js", self._guarded(self.http.client_module), methods=["GET"]),
            # Probes carry no Origin and an address as Host: not behind the Host check.
            Route(f"{path}/health", self._headed(self.health.health), methods=["GET", "HEAD"]),
            Route(f"{path}/ready", self._headed(self.health.ready), methods=["GET", "HEAD"]),
        ]
        # Opt-in, behind the application's own guard (docs/operations.md, Inspector).
        self.inspector = Inspector(self, inspect) if inspect is not None else None
        if self.inspector is not None:
            self.routes += self.inspector.routes(path, self._guarded)
        self.app = Starlette(routes=self.routes, lifespan=self.lifespan)

    def _guarded(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` behind the Host check (a rebound name reads nothing, not even by
        a GET that carries no Origin) and with the security headers on its answer."""

        async def guarded(request: Request) -> Response:
            host = request.headers.get("host", "")
            if self.origins.host_allowed(request, host):
                try:
                    response = await endpoint(request)
                except SetupError as exc:
                    frame = encode(error_frame(exc.code, str(exc)))
                    response = Response(frame, status_code=503, media_type="application/json")
            else:
                message = f"host {host!r} not allowed (see allowed_hosts)"
                self.log_refusal(request, "host", message)
                frame = encode(error_frame("origin", message))
                response = Response(frame, status_code=403, media_type="application/json")
            add_missing(response.headers, self.security_headers)
            return response

        return guarded

    def _headed(
        self, endpoint: Callable[[Request], Awaitable[Response]]
    ) -> Callable[[Request], Awaitable[Response]]:
        """``endpoint`` with the security headers on its answer (and no Host check)."""

        async def headed(request: Request) -> Response:
            response = await endpoint(request)
            add_missing(response.headers, self.security_headers)
            return response

        return headed

    def log_refusal(self, conn: HTTPConnection, reason: str, message: str) -> None:
        peer = conn.client.host if conn.client is not None else "?"
        self.episodes.log(
            logging.INFO,
            reason,
            peer,
            "refused a request to the sync endpoints from %s: %s",
            peer,
            message,
            extra={"peer": peer},
        )

    # --- metrics ------------------------------------------------------------------------

    def metrics_app(self) -> Callable[..., Awaitable[None]]:
        """Turn this server's Prometheus metrics on and return an ASGI app serving them:
        ``Mount("/metrics", sync.metrics_app())``. Call it before serving (counts begin
        then). Needs ``prometheus-client`` (``pip install 'syncline[metrics]'``)."""
        if self.metrics is None:
            from ..metrics import Metrics
            from ..store._group import GroupCommitStore

            self.metrics = metrics = Metrics(self)
            store = self.engine.store
            if isinstance(store, GroupCommitStore):
                store.on_group_commit.append(metrics.group_committed)
            self.reader.on_entries = metrics.fanned_out
        return self.metrics.app

    # --- lifecycle ----------------------------------------------------------------------

    def _check_lifespan(self) -> None:
        """A :class:`SetupError` (logged once) if the store was never opened because
        the application did not pass :meth:`lifespan` (nor open the store itself)."""
        if self._lifespan_entered or self.engine.store.is_open:
            return
        if not self._said_not_started:
            self._said_not_started = True
            log.error("%s; every sync request is refused until then", NOT_STARTED)
        raise SetupError(NOT_STARTED)

    async def start(self) -> None:
        if self._started:
            return
        self._check_lifespan()
        async with self._start_lock:
            if not self._started:
                # Queries filter on queryable fields: index them before serving any.
                await self.engine.store.ensure_indexes(self.engine.schema)
                await self.reader.start()
                await self._read_floor()
                await self.backplane.start(self.reader.notify)
                await self.presence.start()
                head = (await self.engine.head()).seq
                self.http.advanced(head)
                if self.retention is not None:
                    self._trimmer = asyncio.create_task(self._trim_forever(self.retention))
                tick = min(self.heartbeat, self.hello_timeout) / 8
                if math.isfinite(tick) and tick > 0:
                    self._watcher = asyncio.create_task(
                        watch_forever(
                            self.connections,
                            tick,
                            self.hello_timeout,
                            self.heartbeat,
                            self.presence.joined,
                        )
                    )
                self._started = True
                self._log_configuration(head)

    @property
    def started(self) -> bool:
        return self._started

    def _log_configuration(self, head: int) -> None:
        """What this node serves with, once at start (no secrets: passwords in URLs are
        masked, credentials never named)."""
        log.info(
            "sync node started: store %s, backplane %s (%s), log head %d; path %s, "
            "retention %s, heartbeat %gs, max_queue_bytes %d, allowed_origins %s, "
            "allowed_hosts %s, metrics %s",
            _describe(self.engine.store),
            _describe(self.backplane),
            self.backplane.state,
            head,
            self.path,
            "off" if self.retention is None else f"{self.retention:g}s",
            self.heartbeat,
            self.max_queue_bytes,
            "same-origin" if self.allowed_origins is None else self.allowed_origins,
            "any" if self.origins.hosts is None else sorted(self.origins.hosts),
            "on" if self.metrics is not None else "off",
        )

    async def _read_floor(self) -> None:
        """Cache the retention floor (for metrics: no store read per scrape)."""
        async with self.engine.store.read() as tx:
            self.log_floor = await tx.floor()

    async def stop(self) -> None:
        for conn in list(self.connections):
            conn.close_later(CLOSE_RESTART, "server shutting down")
        if self._started:
            await self.presence.stop()
            await self.backplane.stop()
        for task in (self._trimmer, self._watcher):
            if task is not None:
                task.cancel()
                await asyncio.wait([task])  # unlike awaiting it, never swallows our own cancel
        self._trimmer = self._watcher = None
        await self.reader.stop()
        self._started = False
        self.episodes.flush()

    async def _trim_forever(self, retention: float) -> None:
        """The trim job: log entries and tombstones older than ``retention`` seconds go;
        clients with older cursors get "cursor too old" and a fresh snapshot."""
        while True:
            try:
                removed = await self.engine.trim(older_than=retention)
                if removed:
                    log.info("trimmed %d log entries older than %.0fs", removed, retention)
                    await self._read_floor()
            except Exception:
                log.exception("trimming the log failed; will retry")
            await asyncio.sleep(self.trim_every)

    @contextlib.asynccontextmanager
    async def lifespan(self, app: Any = None) -> AsyncIterator[None]:
        """Open the engine's store (unless it is open already, and then leave it open
        afterwards), start, serve, stop, close: give it to Starlette as ``lifespan``, or
        enter it inside your own."""
        store = self.engine.store
        self._lifespan_entered = True
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

    # --- sessions and grants --------------------------------------------------------------

    def revoke(self, principal: Principal, reason: str = "session ended") -> int:
        """Close every connection of ``principal`` (its session ended). Returns how many."""
        key = self.engine.principal_key(principal)
        closing = [c for c in self.connections if c.principal_key == key]
        for c in closing:
            c.close_later(CLOSE_REVOKED, reason)
        return len(closing)

    async def recheck(self, principal: Principal) -> int:
        """The principal's grants changed: resend each of its subscriptions as a fresh
        snapshot under the current rules (records it may no longer read leave), and
        take it out of the presence rooms it may no longer join."""
        key = self.engine.principal_key(principal)
        await self.presence.recheck([c for c in self.connections if c.principal_key == key])
        conns = [c for c in self.connections if c.principal_key == key and c.queries]
        for c in conns:  # no live frame reaches them until their snapshot does
            c.resync = True
        await asyncio.gather(
            *(self.reader.join(c, None, None) for c in conns), return_exceptions=True
        )
        return len(conns)

    # --- what both endpoints share ----------------------------------------------------------

    def origin_allowed(self, conn: HTTPConnection) -> bool:
        """Whether a browser page (or anything) may use the sync endpoints: its Origin
        is this server's own (same scheme, host and port) or in ``allowed_origins``, and
        its Host is allowed (DNS rebinding): :mod:`.origins` and docs/security.md."""
        refusal = self.origins.refusal(conn)
        if refusal is not None:
            self.log_refusal(conn, "origin", refusal)
        return refusal is None

    async def authenticate_as(
        self, conn: HTTPConnection, credentials: Mapping[str, Any] | None
    ) -> Any:
        """The principal ``authenticate`` finds, or None (refused)."""
        if self.authenticate is None:
            return "anonymous"
        result = self.authenticate(conn, credentials)
        if inspect.isawaitable(result):
            result = await result
        return result

    def shared_query(self, query: Query) -> Query:
        """The parsed query every connection subscribed to the same query holds."""
        return self._queries.setdefault(query.key, query)

    async def apply(
        self,
        principal: Principal,
        client_id: str,
        mutation: dict[str, Any],
        refusal: MutationRefused | None = None,
    ) -> AckFrame | RejectFrame:
        """Apply a mutation; answer with an ``ack`` or ``reject`` frame."""
        frame = await self._apply(principal, client_id, mutation, refusal)
        if self.inspector is not None:
            self.inspector.observe(principal, client_id, mutation, frame)
        if self.metrics is not None:
            self.metrics.mutation(frame)
        if isinstance(frame, RejectFrame):
            self.log_reject(frame, principal, client_id)
        return frame

    def log_reject(self, frame: RejectFrame, principal: Principal, client_id: str) -> None:
        """A refused mutation: INFO, once per episode per (code, principal)."""
        key = self.engine.principal_key(principal)
        self.episodes.log(
            logging.INFO,
            f"reject {frame.code}",
            key,
            "mutation %s of client %s refused (%s, %s): %s",
            frame.mid,
            client_id,
            frame.code,
            "permanent" if frame.permanent else "retry",
            frame.message,
            extra={
                "principal": key,
                "client_id": client_id,
                "mutation_id": frame.mid,
                "code": frame.code,
            },
        )

    async def _apply(
        self,
        principal: Principal,
        client_id: str,
        mutation: dict[str, Any],
        refusal: MutationRefused | None,
    ) -> AckFrame | RejectFrame:
        mid = mutation.get("id")
        try:
            ack = await self.engine.apply(principal, client_id, mutation, refusal=refusal)
        except ClientIdTaken as exc:
            raise ProtocolError(exc.code, str(exc), fatal=True) from None
        except MutationRefused as exc:
            return refusal_frame(mid, exc.to_wire(), permanent=exc.permanent)
        except StoreError as exc:
            code = self.store_episodes.failed(exc, "applying a mutation")
            return RejectFrame(
                mid=mid,
                permanent=False,
                code=code,
                message=STORE_REFUSALS.get(code, STORE_REFUSALS["retry"]),
                retry_after=1.0,
            )
        if not ack.replay:  # a replay wrote nothing: it says nothing of writes
            self.store_episodes.succeeded()
        return ServerProtocol.ack(ack)

    async def confirm_acks(self, client_id: str, upto: int) -> None:
        """Best effort: the client holds its answers up to ``upto``. If the store
        refuses the write, the answers stay kept a while longer (the client names them
        again at its next ``hello`` or HTTP mutation); nothing is refused for it."""
        try:
            if await self.engine.confirm_acks(client_id, upto):
                self.store_episodes.succeeded()
        except StoreError as exc:
            self.store_episodes.failed(exc, "confirming acks")
