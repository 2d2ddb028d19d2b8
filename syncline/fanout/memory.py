"""The backplane of nodes in one process: the default, since one node needs none."""

from __future__ import annotations

import asyncio

from .backplane import Backplane, OnHead

__all__ = ["MemoryBackplane", "MemoryHub"]


class MemoryHub:
    """The backplanes of nodes living in one process (tests, experiments)."""

    def __init__(self) -> None:
        self.members: set[MemoryBackplane] = set()


class MemoryBackplane(Backplane):
    """Within one process: every other started member of ``hub`` hears each head it
    does not know yet.

    With its own hub (the default) it has nobody to tell: a single node needs no
    backplane, its reader hears its own engine's commits directly.
    """

    def __init__(self, hub: MemoryHub | None = None) -> None:
        self.hub = hub or MemoryHub()
        self._on_head: OnHead | None = None
        self._known = 0

    async def start(self, on_head: OnHead) -> None:
        self._on_head = on_head
        self.hub.members.add(self)

    async def publish(self, head: int) -> None:
        self.announce(head)

    def announce(self, head: int) -> None:
        self._known = max(self._known, head)
        for member in list(self.hub.members):
            if member is not self and member._on_head is not None and head > member._known:
                member._known = head
                member._on_head(head)

    def publish_presence(self, message: str) -> None:
        loop = asyncio.get_running_loop()
        for member in list(self.hub.members):
            if member is not self and member.on_presence is not None:
                loop.call_soon(member.on_presence, message)

    async def stop(self) -> None:
        self.hub.members.discard(self)
        self._on_head = None
