"""The Redis backplane: heads travel as pub/sub messages on one channel.

Pub/sub delivers only to nodes connected at that moment, which is all a backplane
needs (see :mod:`.backplane`: the log is the truth and every node polls it). Publishing
uses the client's connection pool; listening uses one dedicated connection, named
``syncline:<channel>`` (``CLIENT LIST`` shows it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from .._extras import missing_extra

try:
    import redis.asyncio as aioredis
except ModuleNotFoundError as exc:
    raise missing_extra(exc, "redis", "The Redis backplane", "redis") from None

from .backplane import RemoteBackplane

__all__ = ["RedisBackplane"]


class RedisBackplane(RemoteBackplane):
    """Redis pub/sub on ``channel`` (give each database its own channel)."""

    def __init__(self, url: str = "redis://127.0.0.1:6379/0", channel: str = "syncline") -> None:
        super().__init__(channel)
        self.url = url
        self._client: aioredis.Redis | None = None
        self._pubsub: aioredis.client.PubSub | None = None

    async def _connect(self) -> None:
        client = aioredis.Redis.from_url(
            self.url,
            client_name=f"syncline:{self.channel}",
            socket_connect_timeout=5,
            health_check_interval=10,
        )
        self._client = client
        self._pubsub = client.pubsub(ignore_subscribe_messages=True)
        await self._pubsub.subscribe(self.channel)

    async def _listen(self) -> None:
        assert self._pubsub is not None
        async for message in self._pubsub.listen():
            if message.get("type") == "message":
                self._heard(message["data"])

    async def _send(self, head: int) -> None:
        if self._client is None:
            raise ConnectionError("not connected")
        await self._client.publish(self.channel, str(head))

    async def _send_payload(self, payload: str) -> None:
        if self._client is None:
            raise ConnectionError("not connected")
        await self._client.publish(self.channel, payload)

    async def _disconnect(self) -> None:
        pubsub, self._pubsub = self._pubsub, None
        client, self._client = self._client, None
        try:
            if pubsub is not None:
                close: Callable[[], Awaitable[None]] = pubsub.aclose  # untyped in redis-py
                await close()
        finally:
            if client is not None:
                await client.aclose()
