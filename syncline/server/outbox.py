"""A connection's send queue: bounded, and coalescing ``changes`` under load.

Frames wait here while the socket is busy. Adjacent ``changes`` parts merge into one
frame (one write per batch, not per change). When what waits passes ``max_bytes`` the
outbox overflows: the connection is closed with a reason and its client resumes from
its cursor later, so a slow consumer costs bounded memory and delays no one else.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

from ..fanout.reader import ChangesPart

__all__ = ["Outbox", "OutboxOverflow"]


class OutboxOverflow(Exception):
    pass


class Outbox:
    def __init__(
        self, max_bytes: int = 4 << 20, on_overflow: Callable[[], None] | None = None
    ) -> None:
        self.max_bytes = max_bytes
        self.on_overflow = on_overflow
        self._items: deque[str | ChangesPart] = deque()
        self._bytes = 0
        self._ready = asyncio.Event()
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items)

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, frame: str) -> None:
        self._add(frame, len(frame))

    def put_changes(self, part: ChangesPart) -> None:
        last = self._items[-1] if self._items else None
        if isinstance(last, ChangesPart) and last.can_extend(part):
            self._bytes -= last.size
            last.extend(part)
            self._bytes += last.size
            self._check()
            self._ready.set()
            return
        self._add(part, part.size)

    def _add(self, item: str | ChangesPart, size: int) -> None:
        if self.closed:
            return
        alone = not self._items
        self._items.append(item)
        self._bytes += size
        # One frame larger than the limit (a big snapshot) put into an empty queue still
        # goes out to a client that reads; anything that waits behind it counts.
        if not alone:
            self._check()
        self._ready.set()

    def _check(self) -> None:
        if self._bytes > self.max_bytes and not self.overflowed:
            self.overflowed = True
            self._items.clear()  # what the client missed it gets by resuming from its cursor
            self._bytes = 0
            self.closed = True
            self._ready.set()
            if self.on_overflow is not None:
                self.on_overflow()

    async def get(self) -> str:
        """The next frame to write; raises :class:`OutboxOverflow` once overflowed."""
        while not self._items or self.overflowed:
            if self.overflowed:
                raise OutboxOverflow(f"more than {self.max_bytes} bytes waiting to be sent")
            self._ready.clear()
            await self._ready.wait()
        item = self._items.popleft()
        if isinstance(item, ChangesPart):
            self._bytes -= item.size
            return item.encode()
        self._bytes -= len(item)
        return item

    def close(self) -> None:
        self.closed = True
        self._items.clear()
        self._bytes = 0
        self._ready.set()
