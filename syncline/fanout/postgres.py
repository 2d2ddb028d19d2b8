"""The PostgreSQL backplane: heads travel as NOTIFY payloads on one channel.

For deployments with a PostgreSQL and no Redis: every node keeps one connection that
``LISTEN``s on the channel and also sends ``pg_notify(channel, head)``. The payload is
the head alone, a few bytes (NOTIFY payloads must stay under 8000 bytes, and the
notification queue is shared by the whole cluster); presence messages are bounded
JSON, under :data:`~.backplane.MAX_PRESENCE_PAYLOAD`. A connection that dies is noticed
at once when the socket closes, and within :attr:`PostgresBackplane.ping_every` seconds
otherwise; then :class:`~.backplane.RemoteBackplane` reconnects.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, TypeAlias

from .._extras import missing_extra

try:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "asyncpg", "The PostgreSQL backplane", "postgres") from None

from ..waiting import wait_event
from .backplane import RemoteBackplane

if TYPE_CHECKING:
    _Conn: TypeAlias = "asyncpg.Connection[asyncpg.Record]"

__all__ = ["PostgresBackplane"]


class PostgresBackplane(RemoteBackplane):
    """LISTEN/NOTIFY on ``channel`` (an identifier of at most 63 bytes) in ``dsn``."""

    ping_every = 5.0
    """Seconds between checks that a quiet connection is still alive."""

    def __init__(self, dsn: str, channel: str = "syncline") -> None:
        super().__init__(channel)
        self.dsn = dsn
        self._conn: _Conn | None = None
        self._lost = asyncio.Event()
        self._busy = asyncio.Lock()  # one statement at a time on the connection

    async def _connect(self) -> None:
        self._lost = asyncio.Event()
        conn = await asyncpg.connect(
            self.dsn,
            timeout=5,
            server_settings={"application_name": f"syncline-backplane:{self.channel}"[:63]},
        )
        self._conn = conn
        lost = self._lost
        conn.add_termination_listener(lambda _: lost.set())
        await conn.add_listener(self.channel, self._notified)

    def _notified(self, conn: Any, pid: int, channel: str, payload: object) -> None:
        self._heard(str(payload))

    async def _listen(self) -> None:
        while not await wait_event(self._lost, self.ping_every):  # set: the connection closed
            conn = self._conn
            if conn is None:
                return
            async with self._busy:
                await conn.execute("SELECT 1", timeout=self.ping_every)

    async def _send(self, head: int) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise ConnectionError("not connected")
        async with self._busy:
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, str(head), timeout=5)

    async def _send_payload(self, payload: str) -> None:
        conn = self._conn
        if conn is None or conn.is_closed():
            raise ConnectionError("not connected")
        async with self._busy:
            await conn.execute("SELECT pg_notify($1, $2)", self.channel, payload, timeout=5)

    async def _disconnect(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), 5)
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                conn.terminate()
