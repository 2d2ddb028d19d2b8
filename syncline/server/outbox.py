"""A connection's send queue: bounded, and coalescing ``changes`` under load.

Frames wait here while the socket is busy. Adjacent ``changes`` parts merge into one
frame (one write per batch, not per change). When what waits passes ``max_bytes`` the
outbox overflows: the connection is closed with a reason and its client resumes from
its cursor later, so a slow consumer costs bounded memory and delays no one else.
No frame larger than ``max_bytes`` ever leaves, even into an empty queue: it overflows
the same way (the server keeps its snapshots below the limit, ``Limits.max_snapshot_bytes``,
and a client that resumes past a larger catch-up gets a snapshot instead).

The outbox does not write. Whoever owns it is told by ``on_ready`` that something
waits, and takes frames with :meth:`Outbox.pop`. An idle outbox holds no queue, event
or task: with thousands of
idle connections, each one's send side costs a few hundred bytes.

A ``changes`` part may be shared by every connection at the same cursor (the log
reader encodes each answer once); the outbox never changes a part it did not copy.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from ..fanout.reader import ChangesPart

__all__ = ["Outbox"]


class Outbox:
    __slots__ = (
        "_bytes",
        "_items",
        "_own_tail",
        "closed",
        "max_bytes",
        "on_overflow",
        "on_ready",
        "overflowed",
    )

    def __init__(
        self,
        max_bytes: int = 4 << 20,  # SynclineServer(max_queue_bytes=...)
        on_overflow: Callable[[], None] | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> None:
        self.max_bytes = max_bytes
        self.on_overflow = on_overflow
        self.on_ready = on_ready
        """Called (synchronously) whenever a frame was added or merged."""
        self._items: deque[str | ChangesPart] | None = None  # None while empty
        self._own_tail = False  # the last item is a part this outbox copied (may extend)
        self._bytes = 0
        self.overflowed = False
        self.closed = False

    def __len__(self) -> int:
        return len(self._items) if self._items is not None else 0

    @property
    def queued_bytes(self) -> int:
        return self._bytes

    def put(self, frame: str) -> None:
        self._add(frame, len(frame))

    def put_changes(self, part: ChangesPart) -> None:
        items = self._items
        last = items[-1] if items else None
        if isinstance(last, ChangesPart) and last.can_extend(part):
            assert items is not None
            if not self._own_tail:  # shared with other connections: extend a copy
                last = items[-1] = last.copy()
                self._own_tail = True
            self._bytes -= last.size
            last.extend(part)
            self._bytes += last.size
            self._check()
            self._ready()
            return
        self._add(part, part.size)

    def _add(self, item: str | ChangesPart, size: int) -> None:
        if self.closed:
            return
        if self._items is None:
            self._items = deque()
        self._items.append(item)
        self._own_tail = False
        self._bytes += size
        self._check()
        self._ready()

    def _check(self) -> None:
        if self._bytes > self.max_bytes and not self.overflowed:
            self.overflowed = True
            self._items = None  # what the client missed it gets by resuming from its cursor
            self._bytes = 0
            self.closed = True
            if self.on_overflow is not None:
                self.on_overflow()

    def _ready(self) -> None:
        if self.on_ready is not None and not self.closed:
            self.on_ready()

    def pop(self) -> str | None:
        """The next frame to write, or None when nothing waits (or the outbox closed)."""
        items = self._items
        if not items:
            return None
        item = items.popleft()
        if not items:
            self._items = None
            self._own_tail = False
        if isinstance(item, ChangesPart):
            self._bytes -= item.size
            return item.encode()
        self._bytes -= len(item)
        return item

    def discard(self) -> None:
        """Drop what waits, and stay open (an answer queued in error is withdrawn)."""
        self._items = None
        self._own_tail = False
        self._bytes = 0

    def close(self) -> None:
        self.closed = True
        self._items = None
        self._own_tail = False
        self._bytes = 0
