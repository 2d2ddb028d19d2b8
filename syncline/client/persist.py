"""When a client writes what it must not forget, and how it takes it back on a restart.

Two things are kept, on two schedules (invariant 3). The queue (client id, next mutation
id, pending mutations with their ack ``seq``, drafts, the undo and redo stacks) is
written whenever it changed, at once: a mutation is on disk before it is first sent. The
confirmed data (the replica's :meth:`~syncline.replica.Replica.held_snapshot`) is a
cache, written at most once per ``save_interval`` and on close: resuming from an older
cursor is always safe. :class:`~syncline.client.pending.PendingStore` is the file; this
decides when. Without a path nothing is written and nothing is restored.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets

import orjson

from ..exceptions import SynclineError
from ..protocol.client import ClientProtocol
from ..replica import Replica
from ..undo import History
from .pending import PendingStore, Saved

__all__ = ["Persistence", "new_client_id"]

log = logging.getLogger("syncline.client")


def new_client_id() -> str:
    """A random client id: one per running client (invariant 4)."""
    return "py-" + secrets.token_hex(12)


class Persistence:
    """One client's pending file, opened at construction; :meth:`close` ends it.

    ``client_id`` is the file's client, else the one asked for, else a new one; a file
    of another client raises :class:`ValueError` (and is closed again)."""

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        client_id: str | None,
        save_interval: float,
    ) -> None:
        self.save_interval = save_interval
        self._store = PendingStore(path) if path is not None else None
        try:
            self._saved = self._store.load() if self._store is not None else Saved()
            if client_id is not None and self._saved.client_id not in (None, client_id):
                raise ValueError(
                    f"{path}: this file belongs to client {self._saved.client_id!r}, "
                    f"not {client_id!r}"
                )
            self.client_id = self._saved.client_id or client_id or new_client_id()
            if not 8 <= len(self.client_id) <= 128:
                raise ValueError("a client id has 8 to 128 characters")
        except BaseException:
            if self._store is not None:
                self._store.close()
            raise
        self._replica: Replica | None = None
        self._queue_sig: object = None
        self._state_dirty = False
        self._save_timer: asyncio.TimerHandle | None = None
        self._closed = False

    def restore(self, protocol: ClientProtocol) -> None:
        """Give the protocol's replica what the last run left, and keep it saved from
        now on. Saved data that no longer loads (another schema) is dropped."""
        replica = self._replica = protocol.replica
        saved = self._saved
        replica.pending = saved.pending
        replica.drafts = saved.drafts
        if saved.history is not None:
            try:
                replica.history = History.from_wire(saved.history)
            except (KeyError, TypeError, ValueError):
                log.warning(
                    "ignoring the saved undo history of %s: it no longer loads", self._store
                )
        last = max((p.mutation.id for p in saved.pending), default=0)
        replica.next_mutation_id = max(saved.next_id, last + 1)
        if saved.state is not None:
            try:
                protocol.hydrate(saved.state)
            except (SynclineError, ValueError):
                log.warning("ignoring the saved data of %s: it no longer loads", self._store)
        self.save_queue()

    def save_queue(self) -> None:
        """Write the queue now if it changed since the last write."""
        replica = self._replica
        if self._store is None or self._closed or replica is None:
            return
        sig = (
            replica.client_id,
            replica.next_mutation_id,
            tuple((p.mutation.id, p.acked, p.seq) for p in replica.pending),
            tuple((d.mutation_id, d.conflicts) for d in replica.drafts),
            orjson.dumps(history := replica.history.to_wire()),
        )
        if sig != self._queue_sig:
            self._store.save_queue(
                replica.client_id,
                replica.next_mutation_id,
                replica.pending,
                replica.drafts,
                history,
            )
            self._queue_sig = sig

    def state_changed(self) -> None:
        """The confirmed data changed: write it within ``save_interval`` (at once
        outside an event loop)."""
        self._state_dirty = True
        if self._store is None or self._save_timer is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save_state()
            return
        self._save_timer = loop.call_later(self.save_interval, self._save_state)

    def _save_state(self) -> None:
        self._save_timer = None
        if self._store is None or self._closed or not self._state_dirty:
            return
        assert self._replica is not None
        self._store.save_state(self._replica.held_snapshot())
        self._state_dirty = False

    def close(self) -> None:
        """Write what is left and close the file; nothing is written after this."""
        if self._closed:
            return
        if self._save_timer is not None:
            self._save_timer.cancel()
        self.save_queue()
        self._save_state()
        self._closed = True
        if self._store is not None:
            self._store.close()
