"""Backplanes: how the nodes sharing one database tell each other "the head is now N".

Theory of operation. The database log is the truth; a backplane only shortens the time
until another node's log reader looks at it (docs/design.md, Scale-out). After a commit a
node publishes its new head; every other node's backplane calls ``on_head(head)``,
which wakes its :class:`~syncline.fanout.reader.LogReader`, which reads the new range
from the log. Nothing else travels: the payload is one integer. So a lost, late,
duplicated or reordered message is harmless: each reader also polls the head every
second, and reads whatever range it has not read yet.

Backends (one file each; :func:`syncline.fanout.select.backplane_from_url` picks one,
and no backend imports the chooser):

* :class:`~syncline.fanout.memory.MemoryBackplane` -- one process (the default: a
  single node needs nothing more; nodes in one process can share a ``MemoryHub``).
* :class:`~syncline.fanout.redis.RedisBackplane` -- Redis pub/sub.
* :class:`~syncline.fanout.postgres.PostgresBackplane` -- PostgreSQL LISTEN/NOTIFY,
  for deployments with no Redis.

The remote ones share :class:`RemoteBackplane`: publishing never waits and never
raises (heads are coalesced: while one is being sent, newer ones replace each other,
and a send that fails is dropped and logged); a node ignores heads it already knows
(its own, echoed back, and older ones); a lost connection is retried with backoff
forever, and once back the node's reader is woken, since messages sent meanwhile were
lost. A node whose backplane server is down when it starts (a node that crashed during
an outage, restarting) starts all the same, *degraded*: it serves, and hears of other
nodes' commits only through its poll, until the reconnection loop joins the backplane.
:attr:`Backplane.state` and :attr:`Backplane.reconnects` say which (for health checks
and metrics); each change of state is logged once. A malformed URL is still refused at
once, by :func:`syncline.fanout.select.backplane_from_url`.

Presence (:mod:`syncline.server.presence`) rides the same channel: its messages are
JSON objects (a head is digits, so the two never mix), published with
:meth:`Backplane.publish_presence` and handed to :attr:`Backplane.on_presence`. Unlike
heads, they are not in the log: a lost one is healed by the presence heartbeat (each
node's beat carries a digest of its entries, and a node that disagrees asks for them
again). They are sent in order, one at a time, from a bounded queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import ClassVar, Literal

from ..exceptions import BackplaneError

__all__ = [
    "MAX_PRESENCE_PAYLOAD",
    "Backplane",
    "BackplaneError",
    "BackplaneState",
    "OnHead",
    "OnPresence",
    "RemoteBackplane",
]

log = logging.getLogger("syncline.fanout")

OnHead = Callable[[int], None]
"""Called with a head another node announced (usually ``LogReader.notify``)."""

OnPresence = Callable[[str | bytes], None]
"""Called with a presence message from a node (this node's own ones may come back)."""

MAX_PRESENCE_PAYLOAD = 7900
"""The largest presence message sent, in bytes (PostgreSQL NOTIFY takes < 8000)."""

BackplaneState = Literal["connected", "degraded"]
"""``connected``: heads from other nodes arrive as they commit. ``degraded``: the
backplane's server cannot be reached; other nodes' commits arrive through the poll of
the log (about a second late) while the backplane reconnects."""


class Backplane(ABC):
    """Carries "the head is now N" between the nodes of one database."""

    reconnects = 0
    """How many times the connection came back after it was lost or could not be made
    at start (a remote backplane's; always 0 for one in memory)."""

    on_presence: OnPresence | None = None
    """Where presence messages from the nodes go (set by the presence service)."""

    def publish_presence(self, message: str) -> None:
        """Send a presence message to every node; never waits, never raises (a message
        that cannot go is dropped: the presence heartbeat heals it). Without other
        nodes (this default), nothing to do."""
        return

    @property
    def state(self) -> BackplaneState:
        """``connected`` or ``degraded`` (see :data:`BackplaneState`)."""
        return "connected"

    @abstractmethod
    async def start(self, on_head: OnHead) -> None:
        """Begin listening: ``on_head(head)`` runs, on the event loop, for heads that
        other nodes announce. A remote backplane whose server cannot be reached starts
        degraded and keeps trying (see the module docs); it does not raise."""

    @abstractmethod
    async def publish(self, head: int) -> None:
        """Announce this node's new head (after its commit). Never raises for a
        transport failure: the other nodes' polls find the change anyway."""

    @abstractmethod
    async def stop(self) -> None:
        """Stop listening and close connections; ``on_head`` is not called afterwards."""

    def announce(self, head: int) -> None:
        """:meth:`publish` from synchronous code, such as an engine commit listener:
        ``engine.on_commit(backplane.announce)``."""
        task = asyncio.get_running_loop().create_task(self.publish(head))
        _pending.add(task)
        task.add_done_callback(_pending.discard)


_pending: set[asyncio.Task[None]] = set()  # announcements in flight (kept from the GC)


# --- over the network -------------------------------------------------------------------


class RemoteBackplane(Backplane):
    """What the Redis and PostgreSQL backplanes share (see the module docs): coalesced
    publishing, echo suppression, and a connection kept up with backoff.

    A backend implements :meth:`_connect` (subscribe, or raise), :meth:`_listen` (return
    or raise when the connection is lost; call :meth:`_heard` with each payload),
    :meth:`_send` (raise if not connected) and :meth:`_disconnect`. ``connected`` is set
    while subscribed.
    """

    backoff: tuple[float, float] = (0.05, 2.0)
    """The first and the longest wait between reconnection attempts, in seconds."""

    presence_queue: ClassVar[int] = 2000
    """Presence messages waiting to be sent at most; past it the oldest are dropped."""

    presence_drain: ClassVar[float] = 1.0
    """Seconds :meth:`stop` waits for the presence messages queued to go out."""

    def __init__(self, channel: str) -> None:
        if not channel:
            raise BackplaneError("a backplane needs a channel name")
        self.channel = channel
        self.connected = asyncio.Event()
        self.heard = 0  # heads delivered to on_head (diagnostics and tests)
        self.reconnects = 0
        self._on_head: OnHead | None = None
        self._known = 0  # the highest head this node announced or heard
        self._outgoing = 0  # the highest head to send
        self._sent = 0
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._presence_out: deque[str] = deque(maxlen=self.presence_queue)
        self._presence_wake = asyncio.Event()
        self._presence_sending = False

    # --- what a backend provides --------------------------------------------------------

    @abstractmethod
    async def _connect(self) -> None: ...

    @abstractmethod
    async def _listen(self) -> None: ...

    @abstractmethod
    async def _send(self, head: int) -> None: ...

    @abstractmethod
    async def _disconnect(self) -> None: ...

    async def _send_payload(self, payload: str) -> None:
        """Send one message's text (raise if not connected); presence messages."""
        raise NotImplementedError

    # --- the interface ------------------------------------------------------------------

    @property
    def state(self) -> BackplaneState:
        return "connected" if self.connected.is_set() else "degraded"

    async def start(self, on_head: OnHead) -> None:
        if self._tasks or self._stopping:
            raise BackplaneError("this backplane is already started (or stopped)")
        self._on_head = on_head
        try:
            await self._connect()
        except Exception as exc:
            with contextlib.suppress(Exception):
                await self._disconnect()
            log.warning(
                "%s: cannot connect (%r): serving degraded, other nodes' commits arrive "
                "through the poll of the log until the backplane is back",
                self,
                exc,
            )
        else:
            self.connected.set()
        self._tasks = [
            asyncio.create_task(
                self._keep_listening(self.connected.is_set()), name=f"{self}-listen"
            ),
            asyncio.create_task(self._keep_sending(), name=f"{self}-send"),
            asyncio.create_task(self._keep_sending_presence(), name=f"{self}-presence"),
        ]

    async def publish(self, head: int) -> None:
        self.announce(head)

    def announce(self, head: int) -> None:
        self._known = max(self._known, head)
        if head > self._outgoing:
            self._outgoing = head
            self._wake.set()

    def publish_presence(self, message: str) -> None:
        if len(message.encode()) > MAX_PRESENCE_PAYLOAD:
            log.error("%s: a presence message of %d bytes is too large", self, len(message))
            return
        self._presence_out.append(message)
        self._presence_wake.set()

    async def stop(self) -> None:
        self._on_head = None
        self.on_presence = None
        if self.connected.is_set():  # what presence said last (its goodbye) goes first
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.presence_drain):
                    while self._presence_out or self._presence_sending:
                        await asyncio.sleep(0.01)
        self._stopping = True
        self._wake.set()
        self._presence_wake.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:  # (a client library may swallow a cancellation: the loops check too)
            await asyncio.wait(tasks, timeout=5)
        self.connected.clear()
        with contextlib.suppress(Exception):
            await self._disconnect()

    # --- machinery ----------------------------------------------------------------------

    def _heard(self, payload: str | bytes) -> None:
        """A message arrived: pass on a head this node does not know yet, and a
        presence message to :attr:`on_presence`."""
        if payload[:1] in ("{", b"{"):
            if self.on_presence is not None:
                self.on_presence(payload)
            return
        try:
            head = int(payload)
        except ValueError:
            log.warning("%s: ignored a message that is not a head: %r", self, payload[:80])
            return
        if head <= self._known or self._on_head is None:
            return
        self._known = head
        self.heard += 1
        self._on_head(head)

    async def _keep_listening(self, connected: bool) -> None:
        """Listen while connected; when the connection is lost (or was never made),
        reconnect with backoff, forever."""
        delay = self.backoff[0]
        while not self._stopping:
            if connected:
                try:
                    await self._listen()
                    log.warning("%s: the connection closed; degraded until it is back", self)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    log.warning("%s: the connection failed (%r); degraded until back", self, exc)
                self.connected.clear()
                with contextlib.suppress(Exception):
                    await self._disconnect()
            connected = False
            while not self._stopping:
                await asyncio.sleep(delay)
                try:
                    await self._connect()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:
                    delay = min(delay * 2, self.backoff[1])
                    log.debug("%s: reconnecting failed: %s", self, exc)
                    with contextlib.suppress(Exception):
                        await self._disconnect()
                    continue
                delay = self.backoff[0]
                self.connected.set()
                self.reconnects += 1
                connected = True
                log.warning("%s: connected again", self)  # the end of a logged outage
                if self._on_head is not None:
                    self._on_head(self._known)  # heads sent meanwhile were lost: look now
                break

    async def _keep_sending(self) -> None:
        failing = False  # warn once per outage, not once per commit
        while not self._stopping:
            await self._wake.wait()
            self._wake.clear()
            head = self._outgoing
            if head <= self._sent or self._stopping:
                continue
            try:
                await self._send(head)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the others' polls will find it: do not pile up
                if not failing:
                    log.warning("%s: could not announce head %d: %r", self, head, exc)
                failing = True
            else:
                if failing:
                    log.info("%s: announcing again", self)
                failing = False
            self._sent = head

    async def _keep_sending_presence(self) -> None:
        failing = False
        while not self._stopping:
            await self._presence_wake.wait()
            self._presence_wake.clear()
            while self._presence_out and not self._stopping:
                payload = self._presence_out.popleft()
                self._presence_sending = True
                try:
                    await self._send_payload(payload)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # the heartbeat's digest heals a lost message
                    if not failing:
                        log.warning("%s: could not send presence: %r", self, exc)
                    failing = True
                else:
                    failing = False
                finally:
                    self._presence_sending = False

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.channel!r})"
