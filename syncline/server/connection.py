"""One WebSocket connection's state and write pump, and the watcher of them all.

Theory of operation. A connection runs in one task, the ASGI handler's, which reads
frames (:mod:`syncline.server.websocket`). Nothing waits to write: frames handed to
the outbox are written at the end of the current loop turn (:class:`Flusher`), all of a
reader step's frames in one pass, straight to the socket while it takes them; only
when the socket pushes back does a writer task exist, and it ends when the outbox is
empty. Silence is watched for all connections by one task (:func:`watch_forever`). An
idle connection therefore holds one task, and no event, queue or timer.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import math
import types
from collections.abc import (
    Awaitable,
    Callable,
    Collection,
    Container,
    Coroutine,
    Generator,
    Mapping,
)
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from ..fanout.reader import ChangesPart
from ..model import Principal
from ..protocol.frames import (
    CLOSE_HEARTBEAT,
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_PROTOCOL,
    CLOSE_SLOW,
    Limits,
    ServerFrame,
    SnapshotFrame,
    encode_text,
)
from ..protocol.server import ServerProtocol
from ..query import Query
from .outbox import Outbox

if TYPE_CHECKING:
    from ..metrics import Metrics

__all__ = ["Connection", "Flusher", "watch_forever"]

log = logging.getLogger("syncline.server")


class Connection:
    """One WebSocket client: its principal, subscriptions, cursor and send queue."""

    close_grace = 10.0
    """Seconds a frame being handled when the connection is asked to close may take
    before the handler is cancelled anyway."""

    __slots__ = (
        "_cancelled",
        "_flush_due",
        "_flush_soon",
        "_interrupted",
        "_writer",
        "awaiting_seq",
        "client_id",
        "close_reason",
        "context",
        "cursor",
        "heard",
        "left",
        "metrics",
        "outbox",
        "pinged",
        "principal",
        "principal_key",
        "protocol",
        "queries",
        "read_key",
        "resync",
        "task",
        "ws",
    )

    def __init__(
        self,
        ws: WebSocket,
        limits: Limits,
        max_queue_bytes: int,
        flush_soon: Callable[[Connection], None],
        metrics: Metrics | None = None,
    ) -> None:
        self.ws = ws
        self.metrics = metrics
        self.protocol = ServerProtocol(limits)
        self.outbox = Outbox(
            max_queue_bytes, on_overflow=self._overflowed, on_ready=self._outbox_ready
        )
        self._flush_soon = flush_soon
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
        self._interrupted = False  # close_later asked the reading task to stop
        self._cancelled = False  # ... and cancelled it to that end
        self._flush_due = False
        self._writer: asyncio.Task[None] | None = None
        # Writes run outside the handler's task: in a copy of its context, so what ASGI
        # middleware keeps in context variables around send is this connection's.
        self.context = contextvars.copy_context()

    # Subscriber protocol, called by the log reader.
    def send_changes(self, part: ChangesPart) -> None:
        self.outbox.put_changes(part)

    def send_frame(self, frame: ServerFrame | Mapping[str, Any]) -> None:
        text = encode_text(frame)
        if self.metrics is not None and isinstance(frame, SnapshotFrame):
            self.metrics.snapshot_sent(text)
        self.outbox.put(text)

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

    def took_back_interruption(self) -> bool:
        """After the reading task was cancelled: True if it was :meth:`close_later`'s
        doing (the cancellation is taken back); False if it must go on."""
        task = self.task
        return self._cancelled and task is not None and task.uncancel() == 0

    def _interrupt(self) -> None:
        """Cancel the reading task while it waits for a frame. While it handles one (a
        mutation half way through its write, say), let it finish: it ends after that
        frame, and cancelling it there would cut its write short. One that is still at
        it after :attr:`close_grace` is cancelled all the same."""
        task = self.task
        if task is None:
            return
        if self.handling and self.close_grace > 0:
            loop = asyncio.get_running_loop()
            loop.call_later(self.close_grace, self._interrupt_now, task)
        else:
            self._interrupt_now(task)

    def _interrupt_now(self, task: asyncio.Task[Any]) -> None:
        if self.task is task:  # still reading (or handling) the same connection
            self._cancelled = True
            task.cancel()

    @property
    def handling(self) -> bool:
        """The reading task is handling a frame (the read loop marks that in ``heard``)."""
        return self.heard == math.inf

    def _overflowed(self) -> None:
        self.close_later(
            CLOSE_SLOW,
            f"too slow: more than {self.outbox.max_bytes} bytes waited; resume from your cursor",
        )

    # Writing.
    def _outbox_ready(self) -> None:
        if not self._flush_due and self._writer is None:
            self._flush_due = True
            self._flush_soon(self)

    def flush(self) -> None:
        """Write what waits while the socket takes it without waiting; hand the rest to
        a writer task the first time a write has to wait (the transport pushes back)."""
        self._flush_due = False
        if self._writer is not None or self.left:
            return
        metrics = self.metrics
        while (frame := self.outbox.pop()) is not None:
            if metrics is not None:
                metrics.frame_out(frame)
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

    def flush_failed(self) -> None:
        """:meth:`flush` raised (a bug): close rather than strand the connection."""
        self._flush_due = False
        log.exception("flushing a connection failed; closing it")
        self.close_later(CLOSE_INTERNAL, "internal error")

    async def stop_writing(self) -> None:
        """The connection ended: drop what waits, and end the writer task if any."""
        self.outbox.close()
        writer = self._writer
        if writer is not None:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)

    async def _write_rest(self, first: Awaitable[None]) -> None:
        try:
            await first
            while (frame := self.outbox.pop()) is not None:
                if self.metrics is not None:
                    self.metrics.frame_out(frame)
                await self.ws.send_text(frame)
        except Exception as exc:
            _log_send_error(exc)
            self.close_later(CLOSE_NORMAL, "")
        finally:
            self._writer = None


def _went_away() -> tuple[type[Exception], ...]:
    try:  # the core installs no WebSocket library: the ASGI server brings its own
        from websockets.exceptions import ConnectionClosed
    except ModuleNotFoundError:
        return (WebSocketDisconnect, OSError)
    return (WebSocketDisconnect, OSError, ConnectionClosed)


_CLIENT_WENT_AWAY = _went_away()
"""What a send raises when the client went away: Starlette's, the transport's (uvicorn's
``ClientDisconnected`` is an ``OSError``), and the websockets library's when the server
runs on it."""


def _log_send_error(exc: Exception) -> None:
    """A send that failed because the client went away is normal; anything else is a bug
    (ours, or a middleware's) that an operator should see."""
    if not isinstance(exc, _CLIENT_WENT_AWAY):
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


class Flusher:
    """Writes connections' outboxes at the end of the loop turn, all in one pass: a
    reader step's frames go out together, one write each."""

    def __init__(self) -> None:
        self._to_flush: list[Connection] = []

    def flush_soon(self, conn: Connection) -> None:
        if not self._to_flush:
            asyncio.get_running_loop().call_soon(self._flush)
        self._to_flush.append(conn)

    def _flush(self) -> None:
        conns, self._to_flush = self._to_flush, []
        for conn in conns:
            try:
                conn.flush()
            except (Exception, asyncio.CancelledError):  # must not strand the others
                conn.flush_failed()


async def watch_forever(
    connections: Collection[Connection],
    tick: float,
    hello_timeout: float,
    heartbeat: float,
    present: Container[Connection] = (),
) -> None:
    """Hello timeouts and heartbeats for every connection, in one task: a timer per
    connection would cost more memory than the rest of an idle connection's state.
    Each limit is acted on within ``tick`` (an eighth of the shorter one) of passing.

    A connection ``present`` in a presence room is watched twice as closely (pinged
    after half a heartbeat of silence, closed after one), so that others see it leave
    within a heartbeat of its going silent, not two."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(tick)
        now = loop.time()
        for conn in list(connections):
            silent = now - conn.heard  # negative while a frame is being handled
            beat = heartbeat / 2 if conn in present else heartbeat
            if conn.protocol.client_id is None:
                if silent >= hello_timeout:
                    conn.close_later(CLOSE_PROTOCOL, "no hello received")
            elif silent >= 2 * beat:
                conn.close_later(CLOSE_HEARTBEAT, "no frame within two heartbeats")
            elif silent >= beat and not conn.pinged:
                conn.pinged = True
                conn.send_frame(conn.protocol.ping())
